//! Starting worker processes (the program, its limits, its log file and a
//! CapTP session on its standard streams) and reaping them once their
//! session ends.

use std::cell::RefCell;
use std::path::PathBuf;
use std::process::Stdio;
use std::rc::Rc;

use capstan_protocol::{ErrorValue, Value};
use tokio::process::{Child, Command};

use super::protocol::{WORKER_SUBCOMMAND, worker_session_limits};
use crate::runtime::{ConnectionHandle, SessionKind, SessionOptions, Vat, connect_with};

/// A worker's memory cap unless told otherwise, bytes.
pub const DEFAULT_MEMORY_BYTES: u64 = 256 << 20;

/// A worker's time budget per delivery unless told otherwise, milliseconds.
pub const DEFAULT_TIME_BUDGET_MS: u64 = 10_000;

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
    /// Starts workers with `program` (run with [`WORKER_SUBCOMMAND`]),
    /// logging into the directory `logs`, with the default limits.
    pub fn new(program: impl Into<PathBuf>, logs: impl Into<PathBuf>) -> WorkerSpawner {
        WorkerSpawner {
            program: program.into(),
            memory_bytes: DEFAULT_MEMORY_BYTES,
            time_budget_ms: DEFAULT_TIME_BUDGET_MS,
            logs: logs.into(),
        }
    }

    /// Starts a worker process whose standard error goes to
    /// `<logs>/<log_name>.log`, with a CapTP session to it on `vat`.
    pub fn spawn(&self, vat: &Vat, log_name: &str) -> Result<WorkerProcess, ErrorValue> {
        let log_path = self.logs.join(format!("{log_name}.log"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|error| ErrorValue::plain(format!("cannot open the worker log: {error}")))?;
        // Nothing of the node's environment: a worker needs none of it
        // (its limits come as arguments, see `fence` for the rest).
        let mut child = Command::new(&self.program)
            .env_clear()
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
        let options = SessionOptions::new(worker_session_limits()).with_kind(SessionKind::Worker);
        let connection = connect_with(vat, stdout, stdin, None, options);
        let bootstrap = connection.bootstrap();
        Ok(WorkerProcess {
            child: Rc::new(RefCell::new(Some(child))),
            connection,
            bootstrap,
            pid,
        })
    }
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
