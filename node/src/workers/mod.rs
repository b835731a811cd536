//! Worker processes: separate processes (the `capstan` binary's hidden
//! worker entry point) each running one JavaScript engine and speaking
//! CapTP over their standard streams. Formula workers (the daemon's) and
//! vats (the kernel's) both start this way; this module knows nothing of
//! either.
//!
//! - [`spawner`]: starting a worker process with its limits and log (and
//!   an empty environment), and reaping it when its session ends;
//! - [`fence`]: the resource limits and descriptors a worker process sets
//!   for itself at startup, behind the engine's own limits;
//! - [`protocol`]: what the node and a worker agree on: the hidden
//!   subcommand, the session's limits, and readiness;
//! - `process` (with the `js` feature, the default): the worker process's
//!   own side, which embeds the JavaScript engine. The node's side needs
//!   no engine, so a program that embeds the kernel without it starts its
//!   vats with a `capstan` binary built with it.

pub mod fence;
#[cfg(feature = "js")]
pub mod process;
pub mod protocol;
pub mod spawner;

pub use protocol::{WORKER_SUBCOMMAND, ready, worker_session_limits};
pub use spawner::{DEFAULT_MEMORY_BYTES, DEFAULT_TIME_BUDGET_MS, WorkerProcess, WorkerSpawner, reap};
