//! Bringing the kernel up: reading its records from the store, then
//! restoring the persisted subclusters (removing any a crash left half
//! launched) and launching the configured system subclusters.

use capstan_store::{SubclusterId, VatId};

use super::config::{self, SubclusterRecord, VatRecord};
use super::{Kernel, KernelError};

impl Kernel {
    /// Reads the subclusters, vats and revoked krefs from the store.
    pub(super) fn load(&self) -> Result<(), KernelError> {
        let snapshot = self.store.read()?;
        for (id, bytes) in snapshot.list_subclusters()? {
            let record: SubclusterRecord = config::decode_record(&bytes, &format!("subcluster {id}"))?;
            self.subclusters.borrow_mut().insert(id, record);
        }
        for (id, bytes) in snapshot.list_vat_configs()? {
            let record: VatRecord = config::decode_record(&bytes, &format!("vat {id}"))?;
            self.add_live_vat(id, record)?;
        }
        for (kref, _) in snapshot.list_krefs()? {
            if snapshot.is_revoked(kref)? {
                self.revoked.borrow_mut().insert(kref);
            }
        }
        Ok(())
    }

    /// Restores the persisted subclusters (removing any a crash left half
    /// launched) and launches configured system subclusters not yet
    /// there. Vats start in parallel; it returns once all are up.
    pub async fn start(&self) -> Result<(), KernelError> {
        let unfinished: Vec<SubclusterId> = self
            .subclusters
            .borrow()
            .iter()
            .filter(|(_, record)| !record.bootstrapped)
            .map(|(id, _)| id.clone())
            .collect();
        for id in unfinished {
            tracing::warn!(subcluster = %id, "removing a subcluster whose launch was interrupted");
            self.remove_subcluster(&id, "its launch was interrupted").await?;
        }
        // Before the vats: their baggage may hold an IO service.
        self.restore_io();
        let vat_ids: Vec<VatId> = self.vats.borrow().keys().cloned().collect();
        let mut starting = Vec::with_capacity(vat_ids.len());
        for id in vat_ids {
            starting.push((id.clone(), self.vat.spawn(self.rc().incarnate(id))));
        }
        for (id, task) in starting {
            match task.await {
                Ok(Ok(_)) => {}
                Ok(Err(error)) => tracing::warn!(vat = %id, error = %error.message, "a vat could not be resuscitated"),
                Err(error) => tracing::warn!(vat = %id, %error, "a vat's start was cancelled"),
            }
        }
        let configs = self.system_configs.borrow().clone();
        for system in configs {
            let existing = self.system_subcluster_id(&system.name);
            if let Some(id) = &existing
                && system.config.force_reset
            {
                self.terminate_subcluster(id.as_str()).await?;
            } else if existing.is_some() {
                continue;
            }
            match self.launch(system.config.clone(), Some(system.name.clone())).await {
                Ok(result) => {
                    tracing::info!(name = %system.name, subcluster = %result.subcluster_id, "system subcluster launched")
                }
                Err(error) => {
                    tracing::error!(name = %system.name, %error, "a system subcluster failed to launch");
                    self.ready.send_replace(true);
                    return Err(error);
                }
            }
        }
        self.ready.send_replace(true);
        Ok(())
    }

    /// Waits until [`Kernel::start`] is done.
    pub async fn ready(&self) {
        let mut ready = self.ready.subscribe();
        while !*ready.borrow_and_update() {
            if ready.changed().await.is_err() {
                return;
            }
        }
    }

    pub(super) fn system_subcluster_id(&self, name: &str) -> Option<SubclusterId> {
        self.subclusters
            .borrow()
            .iter()
            .find(|(_, record)| record.name.as_deref() == Some(name))
            .map(|(id, _)| id.clone())
    }
}
