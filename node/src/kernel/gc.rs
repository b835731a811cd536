//! Collecting garbage across the kernel. What no one holds is retired:
//! a kref of an ordinary vat object that no baggage value and no OCAP URL
//! names, and a kernel promise that has settled, is unbound (so the node
//! lets go of the object) and kept as gone, saying it was collected. Then
//! the node's sessions with the vats drop the imports nobody holds, and
//! each running vat is asked to release what it no longer holds (its
//! engine collects, and its session drops the imports it let go of).
//! Vat roots, kernel services, revoked krefs and references handed to
//! the kernel from elsewhere (a redeemed OCAP URL) are never retired.

use std::collections::HashSet;

use capstan_protocol::{Value, list, record};
use capstan_store::{Kref, KrefKind, VatId};

use super::config::{self, KrefInfo};
use super::{Kernel, KernelError, refs};
use crate::runtime::{E, when};

/// How long a collection waits for each vat to collect its own garbage.
const VAT_PATIENCE: std::time::Duration = std::time::Duration::from_secs(10);

/// Why a retired kref is gone.
const COLLECTED: &str = "it was collected: nothing held it any more";

/// What a collection did.
#[derive(Clone, Debug, Default)]
pub struct Collected {
    /// The krefs retired.
    pub retired: Vec<Kref>,
    /// The vats asked to release what they no longer hold.
    pub vats: usize,
    /// Imports dropped: the node's, of vats' objects, and the vats', of
    /// objects elsewhere.
    pub imports_dropped: usize,
}

impl Collected {
    pub fn to_value(&self) -> Value {
        record! {
            "retired" => Value::array(self.retired.iter().map(|kref| Value::from(kref.to_string()))),
            "vats" => self.vats as f64,
            "importsDropped" => self.imports_dropped as f64,
        }
    }
}

impl Kernel {
    /// Collects garbage across the kernel (see the module doc).
    pub async fn collect_garbage(&self) -> Result<Collected, KernelError> {
        let retired = self.retire_unheld().await?;
        let mut collected = Collected {
            retired,
            ..Collected::default()
        };
        let running: Vec<(VatId, Option<Value>, crate::runtime::ConnectionHandle)> = self
            .vats
            .borrow()
            .values()
            .filter_map(|vat| {
                let process = vat.process.as_ref()?;
                Some((vat.id.clone(), process.worker.clone(), process.connection.clone()))
            })
            .collect();
        for (_, _, connection) in &running {
            collected.imports_dropped += connection.collect_garbage();
        }
        for (vat, worker, _) in running {
            let Some(worker) = worker else { continue };
            collected.vats += 1;
            // A vat busy with a long delivery is not waited for.
            let asked = when(&E(&worker).call("collectGarbage", list![]));
            match tokio::time::timeout(VAT_PATIENCE, asked).await {
                Ok(Ok(Value::Number(dropped))) => collected.imports_dropped += dropped as usize,
                Ok(Ok(_)) => {}
                Ok(Err(reason)) => {
                    tracing::info!(vat = %vat, reason = %capstan_protocol::quote::quote(&reason), "a vat could not collect garbage");
                }
                Err(_) => tracing::info!(vat = %vat, "a vat did not collect garbage in time"),
            }
        }
        tracing::info!(
            retired = collected.retired.len(),
            vats = collected.vats,
            imports_dropped = collected.imports_dropped,
            "kernel garbage collected"
        );
        Ok(collected)
    }

    /// Retires the krefs nothing holds; answers them.
    async fn retire_unheld(&self) -> Result<Vec<Kref>, KernelError> {
        let snapshot = self.store.read()?;
        let mut held: HashSet<Kref> = snapshot.ocap_url_krefs()?.into_iter().collect();
        held.extend(self.revoked.borrow().iter().copied());
        let vat_ids: Vec<VatId> = self.vats.borrow().keys().cloned().collect();
        for vat in &vat_ids {
            for (key, bytes) in snapshot.list_baggage(vat)? {
                let slots = refs::baggage_slots(&bytes)
                    .map_err(|error| KernelError::Corrupt(format!("baggage {key} of vat {vat}: {error}")))?;
                held.extend(slots);
            }
        }
        let mut retired = Vec::new();
        for (kref, bytes) in snapshot.list_krefs()? {
            if held.contains(&kref) {
                continue;
            }
            let info: KrefInfo = config::decode_record(&bytes, &format!("kref {kref}"))?;
            let unheld = match (kref.kind, info) {
                (KrefKind::Object, KrefInfo::VatObject { .. }) => true,
                // A promise of an earlier run is settled or lost; one of
                // this run goes once it has settled.
                (KrefKind::Promise, KrefInfo::Other) => self.promise_settled(kref).unwrap_or(true),
                _ => false,
            };
            if unheld {
                retired.push(kref);
            }
        }
        drop(snapshot);
        if retired.is_empty() {
            return Ok(retired);
        }
        let gone = config::encode_record(&KrefInfo::Gone {
            reason: COLLECTED.to_string(),
        })?;
        let retiring = retired.clone();
        self.store
            .transact(move |tx| {
                for kref in &retiring {
                    tx.put_kref(*kref, &gone)?;
                }
                Ok(())
            })
            .await?;
        for kref in &retired {
            self.unbind(*kref);
            self.forget_promise(*kref);
        }
        Ok(retired)
    }
}
