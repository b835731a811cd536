//! Ending things: terminating a subcluster or a single vat (its vats stop,
//! their waiting sends fail, their state and krefs are forgotten with a
//! reason), resetting the kernel, and stopping every vat when the node
//! stops.

use std::collections::HashSet;

use capstan_protocol::{ErrorValue, Value};
use capstan_store::{Kref, StoreError, SubclusterId, Tx, VatId};

use super::config::{self, KrefInfo};
use super::krefs::parse_kref;
use super::vats::Run;
use super::{Kernel, KernelError};

/// What the store should forget about stopped vats: their state, and
/// their krefs (each kept as gone, with the reason).
struct GoneVats {
    vat_ids: Vec<VatId>,
    krefs: Vec<Kref>,
    gone: Vec<u8>,
}

impl GoneVats {
    fn forget(&self, tx: &mut Tx<'_>) -> Result<(), StoreError> {
        for vat in &self.vat_ids {
            tx.forget_vat(vat)?;
        }
        for kref in &self.krefs {
            tx.put_kref(*kref, &self.gone)?;
        }
        Ok(())
    }
}

impl Kernel {
    /// Stops a subcluster's vats, fails what they were deciding, and
    /// forgets their state.
    pub async fn terminate_subcluster(&self, id: &str) -> Result<(), KernelError> {
        let id: SubclusterId = id
            .parse()
            .map_err(|_| KernelError::NotFound(format!("{id:?} is not a subcluster id")))?;
        if !self.subclusters.borrow().contains_key(&id) {
            return Err(KernelError::NotFound(format!("there is no subcluster {id}")));
        }
        self.remove_subcluster(&id, &format!("subcluster {id} was terminated"))
            .await
    }

    pub(super) async fn remove_subcluster(&self, id: &SubclusterId, reason: &str) -> Result<(), KernelError> {
        let record = self.subclusters.borrow_mut().remove(id);
        self.close_io(id);
        let vat_ids: Vec<VatId> = match &record {
            Some(record) => record.vats.values().filter_map(|vat| vat.parse().ok()).collect(),
            None => Vec::new(),
        };
        let gone = self.stop_vats(&vat_ids, reason, &|vat_id| {
            format!("vat {vat_id} no longer exists: {reason}")
        })?;
        let subcluster = id.clone();
        self.store
            .transact(move |tx| {
                tx.remove_subcluster(&subcluster)?;
                gone.forget(tx)
            })
            .await?;
        tracing::info!(subcluster = %id, %reason, "subcluster removed");
        Ok(())
    }

    /// Terminates one vat: its process is killed, calls waiting on it
    /// fail, its baggage and record are deleted, every kref of its objects
    /// is marked gone, and it leaves its subcluster (a subcluster left
    /// with no vats is removed too). Every later send to its objects fails
    /// saying it was terminated.
    pub async fn terminate_vat(&self, vat_id: &str) -> Result<(), KernelError> {
        let id = self.known_vat(vat_id)?;
        let subcluster_id = self
            .vats
            .borrow()
            .get(&id)
            .map(|vat| vat.record.subcluster.clone())
            .unwrap_or_default();
        let reason = format!("vat {id} was terminated");
        let gone = self.stop_vats(std::slice::from_ref(&id), &reason, &|_| reason.clone())?;
        // The subcluster's record no longer lists the vat.
        let subcluster: Option<(SubclusterId, Option<Vec<u8>>)> = match subcluster_id.parse::<SubclusterId>() {
            Ok(subcluster_id) => {
                let mut subclusters = self.subclusters.borrow_mut();
                match subclusters.get_mut(&subcluster_id) {
                    Some(record) => {
                        record.vats.retain(|_, vat| vat.as_str() != id.as_str());
                        if record.vats.is_empty() {
                            subclusters.remove(&subcluster_id);
                            Some((subcluster_id, None))
                        } else {
                            Some((subcluster_id, Some(config::encode_record(&*record)?)))
                        }
                    }
                    None => None,
                }
            }
            Err(_) => None,
        };
        self.store
            .transact(move |tx| {
                match &subcluster {
                    Some((subcluster_id, Some(record))) => tx.put_subcluster(subcluster_id, record)?,
                    Some((subcluster_id, None)) => {
                        tx.remove_subcluster(subcluster_id)?;
                    }
                    None => {}
                }
                gone.forget(tx)
            })
            .await?;
        tracing::info!(vat = %id, "vat terminated");
        Ok(())
    }

    /// Stops `vat_ids` this run: their processes are killed, sends waiting
    /// for their roots fail with `reason`, and the krefs of their objects
    /// are unbound. Answers what to forget in the store. `why_gone` is
    /// what a later send to a vat's root hears.
    fn stop_vats(
        &self,
        vat_ids: &[VatId],
        reason: &str,
        why_gone: &dyn Fn(&VatId) -> String,
    ) -> Result<GoneVats, KernelError> {
        let mut gone_krefs = Vec::new();
        for vat_id in vat_ids {
            let removed = self.vats.borrow_mut().remove(vat_id);
            self.removed_vats.borrow_mut().insert(vat_id.clone(), why_gone(vat_id));
            if let Some(mut vat) = removed {
                let error = Value::error(ErrorValue::plain(format!("vat {vat_id}: {reason}")));
                if let Some(resolver) = vat.root_resolver.take() {
                    self.vat.settle(resolver, Err(error));
                }
                if let Some(process) = vat.process.take() {
                    process.connection.close(&format!("vat {vat_id}: {reason}"));
                    if let Some(child) = process.child.borrow_mut().as_mut() {
                        let _ = child.start_kill();
                    }
                }
                if let Ok(kref) = parse_kref(&vat.record.root) {
                    gone_krefs.push(kref);
                }
            }
        }
        // Every kref of these vats' objects now says why it is gone.
        let snapshot = self.store.read()?;
        let vat_names: HashSet<String> = vat_ids.iter().map(ToString::to_string).collect();
        for (kref, bytes) in snapshot.list_krefs()? {
            if let Ok(KrefInfo::VatObject { vat } | KrefInfo::VatRoot { vat }) = config::decode_record(&bytes, "kref")
                && vat_names.contains(&vat)
                && !gone_krefs.contains(&kref)
            {
                gone_krefs.push(kref);
            }
        }
        drop(snapshot);
        for kref in &gone_krefs {
            self.unbind(*kref);
        }
        Ok(GoneVats {
            vat_ids: vat_ids.to_vec(),
            krefs: gone_krefs,
            gone: config::encode_record(&KrefInfo::Gone {
                reason: reason.to_string(),
            })?,
        })
    }

    /// Terminates every subcluster, then launches the system subclusters
    /// afresh (debugging only).
    pub async fn reset(&self) -> Result<(), KernelError> {
        let ids: Vec<SubclusterId> = self.subclusters.borrow().keys().cloned().collect();
        for id in ids {
            self.remove_subcluster(&id, "the kernel was reset").await?;
        }
        let configs = self.system_configs.borrow().clone();
        for system in configs {
            self.launch(system.config, Some(system.name)).await?;
        }
        Ok(())
    }

    /// Stops every vat process (the node is stopping). Their state stays.
    pub fn stop(&self) {
        self.stopped.set(true);
        for vat in self.vats.borrow_mut().values_mut() {
            vat.run = Run::Stopped;
            if let Some(process) = vat.process.take() {
                process.connection.close("the node is stopping");
                if let Some(child) = process.child.borrow_mut().as_mut() {
                    let _ = child.start_kill();
                }
            }
        }
    }
}
