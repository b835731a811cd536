//! Errors of the engine itself (as opposed to guest exceptions, which are
//! values in an [`Outcome`](crate::Outcome)).

use capstan_protocol::{ErrorValue, Value};

/// Why an entry into the guest failed as a whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GuestError {
    #[error("Evaluation exceeded the time budget of {budget_ms} ms")]
    TimeBudgetExceeded { budget_ms: u128 },
    #[error("Evaluation exceeded the memory limit of {}", describe_bytes(*.limit_bytes))]
    MemoryLimitExceeded { limit_bytes: usize },
    #[error("no guest object for reference {0}")]
    UnknownTarget(String),
    #[error("JavaScript engine failure: {0}")]
    Engine(String),
    /// A vat asked for a global that is not on the allowed list
    /// ([`VAT_GLOBAL_NAMES`](crate::VAT_GLOBAL_NAMES)).
    #[error("unknown vat global {0:?}; the allowed globals are {allowed}", allowed = crate::globals::VAT_GLOBAL_NAMES.join(", "))]
    UnknownGlobal(String),
}

impl GuestError {
    /// The error a remote caller should see for this failure.
    pub fn to_error_value(&self) -> ErrorValue {
        ErrorValue::new("Error", self.to_string())
    }

    /// [`GuestError::to_error_value`] as a passable, for a rejection.
    pub fn passable(&self) -> Value {
        Value::error(self.to_error_value())
    }
}

pub(crate) fn describe_bytes(bytes: usize) -> String {
    const MIB: usize = 1024 * 1024;
    const KIB: usize = 1024;
    if bytes >= MIB && bytes.is_multiple_of(MIB) {
        format!("{} MiB", bytes / MIB)
    } else if bytes >= KIB && bytes.is_multiple_of(KIB) {
        format!("{} KiB", bytes / KIB)
    } else {
        format!("{bytes} bytes")
    }
}

/// A size for people, to a tenth of a MiB (or KiB).
pub(crate) fn describe_size(bytes: usize) -> String {
    const MIB: f64 = 1024.0 * 1024.0;
    let bytes_f = bytes as f64;
    if bytes_f >= MIB {
        format!("{:.1} MiB", bytes_f / MIB)
    } else {
        format!("{:.1} KiB", bytes_f / 1024.0)
    }
}

impl From<rquickjs::Error> for GuestError {
    fn from(error: rquickjs::Error) -> GuestError {
        GuestError::Engine(error.to_string())
    }
}
