//! The bounds a CapTP session enforces on what its peer sends. Exceeding
//! one aborts the session with a reason naming the limit.

use crate::marshal::MarshalLimits;

/// Per-session limits. `Default` gives the documented defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest frame (postcard message bytes, after the length prefix).
    pub max_frame_bytes: usize,
    /// Bounds on every marshalled body (nesting depth 64 by default).
    pub marshal: MarshalLimits,
    /// Answers the peer may hold open with us at once (calls it made that
    /// it has not dropped).
    pub max_outstanding_answers: usize,
    /// Pipelined deliveries queued on one unsettled answer.
    pub max_queued_per_answer: usize,
    /// Interface names of dropped imports kept in case the exporter re-sends
    /// one while the drop is in flight (it sends each interface only once).
    pub remembered_interfaces: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_frame_bytes: 16 << 20,
            marshal: MarshalLimits::default(),
            max_outstanding_answers: 1 << 16,
            max_queued_per_answer: 1 << 12,
            remembered_interfaces: 1 << 12,
        }
    }
}
