//! Ending things: terminating a subcluster (its vats stop, their waiting
//! sends fail, their state and krefs are forgotten with a reason),
//! resetting the kernel, and stopping every vat when the node stops.

use std::collections::HashSet;

use capstan_protocol::{ErrorValue, Value};
use capstan_store::{SubclusterId, VatId};

use super::config::{self, KrefInfo};
use super::krefs::parse_kref;
use super::vats::Run;
use super::{Kernel, KernelError};

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
        let mut gone_krefs = Vec::new();
        for vat_id in &vat_ids {
            let removed = self.vats.borrow_mut().remove(vat_id);
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
        let gone = config::encode_record(&KrefInfo::Gone {
            reason: reason.to_string(),
        })?;
        let subcluster = id.clone();
        self.store
            .transact(move |tx| {
                tx.remove_subcluster(&subcluster)?;
                for vat in &vat_ids {
                    tx.forget_vat(vat)?;
                }
                for kref in &gone_krefs {
                    tx.put_kref(*kref, &gone)?;
                }
                Ok(())
            })
            .await?;
        tracing::info!(subcluster = %id, %reason, "subcluster removed");
        Ok(())
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
