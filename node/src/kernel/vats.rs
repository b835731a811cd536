//! Live vats: each vat's state this run, its incarnations (a worker
//! process running the vat program with its baggage), what happens when
//! its process exits, and where sends to its root go meanwhile.

use std::cell::RefCell;
use std::rc::Rc;

use capstan_protocol::{ErrorValue, Value, list, record};
use capstan_store::VatId;

use super::config::VatRecord;
use super::krefs::parse_kref;
use super::{Kernel, KernelError, failed, refs, services};
use crate::runtime::{ConnectionHandle, E, Resolver, reason_to_error, when};
use crate::workers::{ready, reap};

/// A running vat process.
pub(super) struct VatProcess {
    pub(super) connection: ConnectionHandle,
    pub(super) child: Rc<RefCell<Option<tokio::process::Child>>>,
    pub(super) pid: Option<u32>,
    pub(super) worker: Option<Value>,
}

/// Whether a vat's current incarnation runs.
pub(super) enum Run {
    /// Not running: started on next use.
    Stopped,
    Starting,
    Running {
        root: Value,
    },
}

/// A vat as the kernel knows it this run.
pub(super) struct LiveVat {
    pub(super) id: VatId,
    pub(super) record: VatRecord,
    /// A promise for the root of the current incarnation: sends made
    /// while the vat starts wait on it.
    pub(super) root_promise: Value,
    pub(super) root_resolver: Option<Resolver>,
    pub(super) run: Run,
    pub(super) process: Option<VatProcess>,
    pub(super) incarnation: u64,
}

impl Kernel {
    pub(super) fn add_live_vat(&self, id: VatId, record: VatRecord) -> Result<(), KernelError> {
        let root_kref = parse_kref(&record.root).map_err(|_| KernelError::Corrupt(format!("vat {id}'s root kref")))?;
        let proxy = refs::make_root_proxy(self, root_kref, id.clone());
        self.bind(root_kref, proxy);
        let (root_promise, resolver) = self.vat.make_promise();
        self.vats.borrow_mut().insert(
            id.clone(),
            LiveVat {
                id,
                record,
                root_promise,
                root_resolver: Some(resolver),
                run: Run::Stopped,
                process: None,
                incarnation: 0,
            },
        );
        Ok(())
    }

    /// Starts (or restarts) a vat: a worker process running its program
    /// with its baggage. Answers the root.
    pub(super) async fn incarnate(self: Rc<Self>, vat_id: VatId) -> Result<Value, ErrorValue> {
        let (record, incarnation) = {
            let mut vats = self.vats.borrow_mut();
            let Some(vat) = vats.get_mut(&vat_id) else {
                return Err(ErrorValue::plain(format!("there is no vat {vat_id}")));
            };
            if let Run::Running { root } = &vat.run {
                return Ok(root.clone());
            }
            vat.run = Run::Starting;
            vat.incarnation += 1;
            (vat.record.clone(), vat.incarnation)
        };
        let outcome = self.run_vat_program(&vat_id, &record, incarnation).await;
        let mut vats = self.vats.borrow_mut();
        let Some(vat) = vats.get_mut(&vat_id) else {
            return Err(ErrorValue::plain(format!(
                "vat {vat_id} was terminated while it started"
            )));
        };
        if vat.incarnation != incarnation {
            return Err(ErrorValue::plain(format!(
                "vat {vat_id} was restarted while it started"
            )));
        }
        match outcome {
            Ok(root) => {
                vat.run = Run::Running { root: root.clone() };
                if let Some(resolver) = vat.root_resolver.take() {
                    self.vat.settle(resolver, Ok(root.clone()));
                }
                Ok(root)
            }
            Err(error) => {
                vat.run = Run::Stopped;
                if let Some(process) = vat.process.take() {
                    process.connection.close(&format!("vat {vat_id} failed to start"));
                }
                // Sends waiting for this start fail; a later one retries.
                let (promise, resolver) = self.vat.make_promise();
                vat.root_promise = promise;
                if let Some(waiting) = vat.root_resolver.replace(resolver) {
                    self.vat.settle(waiting, Err(Value::error(error.clone())));
                }
                Err(error)
            }
        }
    }

    async fn run_vat_program(&self, vat_id: &VatId, record: &VatRecord, incarnation: u64) -> Result<Value, ErrorValue> {
        let log_name = format!("vat-{vat_id}");
        let process = self.spawner.spawn(&self.vat, &log_name)?;
        self.sessions
            .borrow_mut()
            .insert(process.connection.id(), vat_id.clone());
        let connection = process.connection.clone();
        let child = Rc::clone(&process.child);
        if let Some(vat) = self.vats.borrow_mut().get_mut(vat_id) {
            vat.process = Some(VatProcess {
                connection: process.connection.clone(),
                child: Rc::clone(&process.child),
                pid: process.pid,
                worker: None,
            });
        }
        tracing::info!(vat = %vat_id, pid = process.pid, "vat process started");
        let watcher = self.rc();
        let watched = vat_id.clone();
        // The vat is stopped as soon as its session ends (a crash, or its
        // worker retiring after a runaway delivery), so the next send
        // restarts it rather than reaching the closed session; then the
        // process is reaped.
        self.vat.spawn(async move {
            let reason = connection.closed().await;
            watcher.sessions.borrow_mut().remove(&connection.id());
            watcher.vat_exited(&watched, incarnation, &reason);
            reap(&child, &format!("vat-{watched}"), &reason).await;
        });
        let worker = ready(&process.bootstrap).await?;
        if let Some(vat) = self.vats.borrow_mut().get_mut(vat_id)
            && let Some(process) = vat.process.as_mut()
        {
            process.worker = Some(worker.clone());
        }
        let parameters = refs::decode_plain(&record.parameters)
            .map_err(|error| ErrorValue::plain(format!("the vat's stored parameters are damaged: {error}")))?;
        let entries = self.baggage_entries(vat_id)?;
        let baggage_store = services::make_baggage_store(&self.rc(), vat_id.clone())?;
        let logger = services::make_logger(&format!("vat {vat_id} ({})", record.name))?;
        let powers = record! { "logger" => logger };
        let globals = super::fetch::vat_globals(vat_id.as_str(), record)?;
        let root = E(&worker).call(
            "buildVat",
            list![
                record.source.as_str(),
                parameters,
                entries,
                baggage_store,
                powers,
                globals
            ],
        );
        let root = when(&root).await.map_err(reason_to_error)?;
        if !matches!(root, Value::Remotable(_)) {
            return Err(ErrorValue::plain(format!(
                "buildRootObject of vat {vat_id} gave {}, not a remotable root object",
                capstan_protocol::quote::quote(&root)
            )));
        }
        tracing::info!(vat = %vat_id, "vat ready");
        Ok(root)
    }

    fn vat_exited(&self, vat_id: &VatId, incarnation: u64, reason: &str) {
        let mut vats = self.vats.borrow_mut();
        let Some(vat) = vats.get_mut(vat_id) else {
            return;
        };
        if vat.incarnation != incarnation {
            return;
        }
        vat.process = None;
        if matches!(vat.run, Run::Running { .. }) {
            tracing::warn!(vat = %vat_id, %reason, "vat process ended; it restarts on next use");
            vat.run = Run::Stopped;
            let (promise, resolver) = self.vat.make_promise();
            vat.root_promise = promise;
            vat.root_resolver = Some(resolver);
        }
    }

    /// Where a send to the root of `vat_id` should go now: the running
    /// root, or a promise for it (starting the vat if it is stopped).
    pub(crate) fn root_target(&self, vat_id: &VatId) -> Result<Value, Value> {
        let (target, start) = {
            let vats = self.vats.borrow();
            let Some(vat) = vats.get(vat_id) else {
                let reason = self.removed_vats.borrow().get(vat_id).cloned();
                return Err(Value::error(ErrorValue::plain(reason.unwrap_or_else(|| {
                    format!("vat {vat_id} no longer exists: its subcluster was terminated")
                }))));
            };
            match &vat.run {
                Run::Running { root } => (root.clone(), false),
                Run::Starting => (vat.root_promise.clone(), false),
                Run::Stopped => (vat.root_promise.clone(), !self.stopped.get()),
            }
        };
        if start {
            let kernel = self.rc();
            let id = vat_id.clone();
            self.vat.spawn(async move {
                if let Err(error) = kernel.incarnate(id.clone()).await {
                    tracing::warn!(vat = %id, error = %error.message, "restarting a vat failed");
                }
            });
        }
        Ok(target)
    }

    fn baggage_entries(&self, vat_id: &VatId) -> Result<Value, KernelError> {
        let stored = self.store.read()?.list_baggage(vat_id)?;
        let mut entries = Vec::with_capacity(stored.len());
        for (key, bytes) in stored {
            let value = refs::decode_baggage(self, &bytes)
                .map_err(|error| KernelError::Corrupt(format!("baggage {key} of vat {vat_id}: {error}")))?;
            entries.push(Value::array([Value::from(key.as_str()), value]));
        }
        Ok(Value::array(entries))
    }

    /// The live vat `vat_id` names, or why there is none.
    pub(super) fn known_vat(&self, vat_id: &str) -> Result<VatId, KernelError> {
        let id: VatId = vat_id
            .parse()
            .map_err(|_| KernelError::NotFound(format!("{vat_id:?} is not a vat id (vat ids look like v3)")))?;
        if self.vats.borrow().contains_key(&id) {
            return Ok(id);
        }
        Err(match self.removed_vats.borrow().get(&id) {
            Some(reason) => KernelError::NotFound(reason.clone()),
            None => KernelError::NotFound(format!("there is no vat {vat_id}")),
        })
    }

    /// Restarts vat `vat_id`: its process ends (calls it was answering
    /// fail) and its program runs again with its baggage as stored, as
    /// after a node restart; `bootstrap` is not called again. Answers once
    /// the new incarnation's root is built.
    pub async fn restart_vat(&self, vat_id: &str) -> Result<(), KernelError> {
        if self.stopped.get() {
            return Err(KernelError::Failed("the kernel is stopped".into()));
        }
        let id = self.known_vat(vat_id)?;
        let process = {
            let mut vats = self.vats.borrow_mut();
            let Some(vat) = vats.get_mut(&id) else {
                return Err(KernelError::NotFound(format!("there is no vat {vat_id}")));
            };
            vat.run = Run::Stopped;
            // Sends made while it restarts wait for the new root.
            if vat.root_resolver.is_none() {
                let (promise, resolver) = self.vat.make_promise();
                vat.root_promise = promise;
                vat.root_resolver = Some(resolver);
            }
            vat.process.take()
        };
        if let Some(process) = process {
            process.connection.close(&format!("vat {id} was restarted"));
            if let Some(child) = process.child.borrow_mut().as_mut() {
                let _ = child.start_kill();
            }
        }
        tracing::info!(vat = %id, "restarting a vat");
        // `incarnate` marks the vat starting before it first waits, so a
        // send arriving meanwhile waits for this start instead of making
        // another.
        self.rc().incarnate(id).await.map_err(failed)?;
        Ok(())
    }

    /// Asks vat `vat_id`'s worker whether it answers.
    pub async fn ping_vat(&self, vat_id: &str) -> Result<Value, KernelError> {
        let id = self.known_vat(vat_id)?;
        let worker = {
            let vats = self.vats.borrow();
            let vat = vats
                .get(&id)
                .ok_or_else(|| KernelError::NotFound(format!("there is no vat {vat_id}")))?;
            vat.process.as_ref().and_then(|process| process.worker.clone())
        };
        let Some(worker) = worker else {
            return Err(KernelError::Failed(format!("vat {vat_id} is not running")));
        };
        when(&E(&worker).call("ping", list![]))
            .await
            .map_err(|reason| failed(reason_to_error(reason)))
    }
}
