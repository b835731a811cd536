//! What the node and its worker processes agree on: the hidden subcommand
//! a worker runs, the limits of the CapTP session between them, and how
//! the node knows a worker is ready.

use capstan_protocol::captp::Limits;
use capstan_protocol::{ErrorValue, Value};

use crate::runtime::{reason_to_error, when};

/// The hidden subcommand a worker process runs, followed by
/// `--memory-bytes N --time-budget-ms M`.
pub const WORKER_SUBCOMMAND: &str = "__worker";

/// The CapTP limits of a session between the node and one of its workers.
/// A worker is a confined process the node started, so it may keep more
/// answers waiting than a network peer: a vat may fire a burst of 100 000
/// sends at another vat before awaiting any, and the node may queue as
/// many deliveries to it.
pub fn worker_session_limits() -> Limits {
    Limits {
        max_outstanding_answers: 1 << 18,
        // Deliveries queued to the worker and not yet answered.
        max_questions_in_flight: 1 << 18,
        ..Limits::default()
    }
}

/// Waits for a worker's bootstrap object: the worker answers once ready.
pub async fn ready(bootstrap: &Value) -> Result<Value, ErrorValue> {
    when(bootstrap)
        .await
        .map_err(|reason| ErrorValue::plain(format!("the worker did not start: {}", reason_to_error(reason).message)))
}
