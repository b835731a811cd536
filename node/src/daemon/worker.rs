//! Worker processes, from the node's side. A worker is a separate process
//! (the `capstan` binary's hidden worker entry point) running one
//! JavaScript engine; it speaks CapTP to the node over its stdin and
//! stdout, and its stderr goes to a log file in the state directory. A
//! worker that exits or is killed is forgotten, so the next use of its
//! formula starts a new one; the node never goes down with it.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::rc::Rc;

use capstan_protocol::captp::Limits;
use capstan_protocol::{ErrorValue, Value};
use capstan_store::FormulaId;
use tokio::process::{Child, Command};

use super::{Daemon, NodeOptions};
use crate::runtime::{ConnectionHandle, connect, when};

/// The hidden subcommand a worker process runs.
pub const WORKER_SUBCOMMAND: &str = "__worker";

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
            spawner: WorkerSpawner::new(options),
            running: RefCell::new(HashMap::new()),
        }
    }

    /// How many worker processes are running.
    pub fn count(&self) -> usize {
        self.running.borrow().len()
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
        // When the session ends (the process died or was stopped), forget
        // the worker so its formula is made again on next use.
        let watcher = Rc::clone(daemon);
        daemon.vat.spawn(async move {
            let reason = connection.closed().await;
            reap(&child, &log_name(id), &reason).await;
            watcher.workers.running.borrow_mut().remove(&id);
            watcher.cancel(id);
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

/// How to start worker processes: the program, its limits and where
/// their logs go. Formula workers and kernel vats both start this way.
#[derive(Clone, Debug)]
pub struct WorkerSpawner {
    pub program: PathBuf,
    pub memory_bytes: u64,
    pub time_budget_ms: u64,
    pub logs: PathBuf,
}

/// A started worker process and its session.
pub struct WorkerProcess {
    /// The process, until it is reaped.
    pub child: Rc<RefCell<Option<Child>>>,
    pub connection: ConnectionHandle,
    /// The worker object (it answers once the worker is ready).
    pub bootstrap: Value,
    pub pid: Option<u32>,
}

impl WorkerSpawner {
    pub fn new(options: &NodeOptions) -> WorkerSpawner {
        WorkerSpawner {
            program: options.worker_program.clone(),
            memory_bytes: options.worker_memory_bytes,
            time_budget_ms: options.worker_time_budget_ms,
            logs: options.paths.worker_logs(),
        }
    }

    /// Starts a worker process whose standard error goes to
    /// `<logs>/<log_name>.log`, with a CapTP session to it on `vat`.
    pub fn spawn(&self, vat: &crate::runtime::Vat, log_name: &str) -> Result<WorkerProcess, ErrorValue> {
        let log_path = self.logs.join(format!("{log_name}.log"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|error| ErrorValue::plain(format!("cannot open the worker log: {error}")))?;
        let mut child = Command::new(&self.program)
            .arg(WORKER_SUBCOMMAND)
            .arg("--memory-bytes")
            .arg(self.memory_bytes.to_string())
            .arg("--time-budget-ms")
            .arg(self.time_budget_ms.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .map_err(|error| ErrorValue::plain(format!("cannot start a worker process: {error}")))?;
        let pid = child.id();
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(ErrorValue::plain("the worker process has no pipes"));
        };
        let connection = connect(vat, stdout, stdin, None, worker_session_limits());
        let bootstrap = connection.bootstrap();
        Ok(WorkerProcess {
            child: Rc::new(RefCell::new(Some(child))),
            connection,
            bootstrap,
            pid,
        })
    }
}

/// Waits for a worker's bootstrap object: the worker answers once ready.
pub async fn ready(bootstrap: &Value) -> Result<Value, ErrorValue> {
    when(bootstrap).await.map_err(|reason| {
        ErrorValue::plain(format!(
            "the worker did not start: {}",
            super::reason_to_error(reason).message
        ))
    })
}

/// Ends a worker process whose session closed, and logs how it ended.
pub async fn reap(child: &Rc<RefCell<Option<Child>>>, log_name: &str, reason: &str) {
    let taken = child.borrow_mut().take();
    if let Some(mut process) = taken {
        let _ = process.start_kill();
        let status = process.wait().await;
        tracing::info!(worker = %log_name, ?status, %reason, "worker ended");
    }
}

/// The CapTP limits of a session between the node and one of its workers.
/// A worker is a confined process the node started, so it may keep more
/// answers waiting than a network peer: a vat may fire a burst of 100 000
/// sends at another vat before awaiting any.
pub fn worker_session_limits() -> Limits {
    Limits {
        max_outstanding_answers: 1 << 18,
        ..Limits::default()
    }
}

/// A log file name for a worker that does not reveal its id.
fn log_name(id: FormulaId) -> String {
    let digest = blake3::hash(id.to_string().as_bytes());
    digest.to_hex()[..16].to_string()
}
