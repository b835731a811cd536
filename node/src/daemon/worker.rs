//! The daemon's running workers, one per worker formula, started with
//! [`crate::workers`]. A worker's stderr goes to a log file in the state
//! directory. A worker that exits or is killed is forgotten, so the next
//! use of its formula starts a new one; the node never goes down with it.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use capstan_protocol::{ErrorValue, Value};
use capstan_store::FormulaId;
use tokio::process::Child;

use super::{Daemon, NodeOptions};
use crate::runtime::ConnectionHandle;
use crate::workers::{WorkerProcess, WorkerSpawner, ready, reap};

struct Running {
    child: Rc<RefCell<Option<Child>>>,
    connection: ConnectionHandle,
    pid: Option<u32>,
}

/// The node's running workers, by formula id.
pub struct Workers {
    spawner: WorkerSpawner,
    running: RefCell<HashMap<FormulaId, Running>>,
}

impl Workers {
    pub fn new(options: &NodeOptions) -> Workers {
        Workers {
            spawner: options.worker_spawner(),
            running: RefCell::new(HashMap::new()),
        }
    }

    /// How many worker processes are running.
    pub fn count(&self) -> usize {
        self.running.borrow().len()
    }

    /// Whether the worker of formula `id` runs.
    pub fn is_running(&self, id: FormulaId) -> bool {
        self.running.borrow().contains_key(&id)
    }

    /// The process ids of the running workers.
    pub fn pids(&self) -> Vec<u32> {
        self.running
            .borrow()
            .values()
            .filter_map(|running| running.pid)
            .collect()
    }

    /// Spawns the worker for formula `id` and returns its bootstrap object.
    pub async fn start(&self, daemon: &Rc<Daemon>, id: FormulaId) -> Result<Value, ErrorValue> {
        let process = self.spawner.spawn(&daemon.vat, &log_name(id))?;
        let WorkerProcess {
            child,
            connection,
            bootstrap,
            pid,
        } = process;
        self.running.borrow_mut().insert(
            id,
            Running {
                child: Rc::clone(&child),
                connection: connection.clone(),
                pid,
            },
        );
        tracing::info!(worker = %log_name(id), pid, "worker started");
        // When the session ends (the process died, was stopped, or retired
        // itself after a runaway evaluation), forget the worker at once so
        // its formula (and what was made in it) is made again on next use,
        // then reap the process. A worker started since for the same
        // formula is not this one's to forget.
        let watcher = Rc::clone(daemon);
        daemon.vat.spawn(async move {
            let reason = connection.closed().await;
            let current = watcher
                .workers
                .running
                .borrow()
                .get(&id)
                .is_some_and(|running| running.connection.id() == connection.id());
            if current {
                tracing::info!(worker = %log_name(id), %reason, "worker session ended; it is made again on next use");
                watcher.workers.running.borrow_mut().remove(&id);
                watcher.cancel(id);
            }
            reap(&child, &log_name(id), &reason).await;
        });
        ready(&bootstrap).await
    }

    /// Stops worker `id` if it runs.
    pub fn stop(&self, id: FormulaId, reason: &str) {
        let running = self.running.borrow_mut().remove(&id);
        if let Some(running) = running {
            running.connection.close(reason);
            if let Some(child) = running.child.borrow_mut().as_mut() {
                let _ = child.start_kill();
            }
        }
    }

    /// Stops every worker (the node is stopping).
    pub fn stop_all(&self) {
        let ids: Vec<FormulaId> = self.running.borrow().keys().copied().collect();
        for id in ids {
            self.stop(id, "the node is stopping");
        }
    }
}

impl NodeOptions {
    /// How this node starts its worker processes (formula workers and
    /// kernel vats alike).
    pub fn worker_spawner(&self) -> WorkerSpawner {
        WorkerSpawner {
            memory_bytes: self.worker_memory_bytes,
            time_budget_ms: self.worker_time_budget_ms,
            ..WorkerSpawner::new(self.worker_program.clone(), self.paths.worker_logs())
        }
    }
}

/// A log file name for a worker that does not reveal its id.
fn log_name(id: FormulaId) -> String {
    let digest = blake3::hash(id.to_string().as_bytes());
    digest.to_hex()[..16].to_string()
}
