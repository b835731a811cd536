//! Worker processes: separate processes (the `capstan` binary's hidden
//! worker entry point) each running one JavaScript engine and speaking
//! CapTP over their standard streams. Formula workers (the daemon's) and
//! vats (the kernel's) both start this way; this module knows nothing of
//! either.
//!
//! - [`spawner`]: starting a worker process with its limits and log, and
//!   reaping it when its session ends;
//! - [`protocol`]: what the node and a worker agree on: the hidden
//!   subcommand, the session's limits, and readiness;
//! - `process` (with the `js` feature): the worker process's own side.

pub mod protocol;
pub mod spawner;

pub use protocol::{WORKER_SUBCOMMAND, ready, worker_session_limits};
pub use spawner::{DEFAULT_MEMORY_BYTES, DEFAULT_TIME_BUDGET_MS, WorkerProcess, WorkerSpawner, reap};
