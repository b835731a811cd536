//! The error every check in this crate raises: a message, built the way
//! Endo builds it, so that people and code can move between the two.

use std::sync::Arc;

use crate::value::ErrorValue;

/// A value, pattern or call that failed a check, with Endo's message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Rejection {
    pub message: String,
}

impl Rejection {
    pub fn new(message: impl Into<String>) -> Rejection {
        Rejection {
            message: message.into(),
        }
    }

    /// Prefixes the message with a path label (`foo: `, `[0]: `, ...).
    pub fn within(self, label: &str) -> Rejection {
        Rejection {
            message: format!("{label}: {}", self.message),
        }
    }

    /// The passable error a caller sees: Endo raises these as TypeErrors.
    pub fn to_error_value(&self) -> ErrorValue {
        ErrorValue::new("TypeError", Arc::<str>::from(self.message.as_str()))
    }
}
