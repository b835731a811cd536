//! Why a check did not pass, and how its message is built: Endo's quiet
//! and explaining rejectors, path labels formatted only when needed, and
//! the quoting Endo's messages use.

use crate::quote::{json_string, quote, quote_pattern};
use crate::rejection::Rejection;
use crate::value::Value;

/// Why a check did not pass.
#[derive(Debug)]
pub(super) enum Failure {
    /// The specimen does not match; the message is built only when asked.
    Mismatch(Option<String>),
    /// Something is wrong whether or not a message was asked for (a
    /// malformed pattern, comparing what cannot be compared). Endo throws.
    Thrown(String),
}

impl Failure {
    pub(super) fn labeled(self, label: &str) -> Failure {
        match self {
            Failure::Mismatch(Some(message)) => Failure::Mismatch(Some(format!("{label}: {message}"))),
            Failure::Mismatch(None) => Failure::Mismatch(None),
            Failure::Thrown(message) => Failure::Thrown(format!("{label}: {message}")),
        }
    }

    pub(super) fn into_rejection(self) -> Rejection {
        match self {
            Failure::Mismatch(message) => Rejection::new(message.unwrap_or_else(|| "match failed".to_string())),
            Failure::Thrown(message) => Rejection::new(message),
        }
    }
}

impl Failure {
    /// Endo checks a pattern's own shape with a throwing rejector, so any
    /// failure there is thrown even when the caller only asked yes or no.
    pub(super) fn thrown(self) -> Failure {
        match self {
            Failure::Mismatch(Some(message)) => Failure::Thrown(message),
            Failure::Mismatch(None) => Failure::Thrown("pattern expected".to_string()),
            thrown => thrown,
        }
    }
}

impl From<Rejection> for Failure {
    fn from(rejection: Rejection) -> Failure {
        Failure::Thrown(rejection.message)
    }
}

pub(super) type Outcome = Result<(), Failure>;

/// Whether a failure should carry a message (Endo's `Fail` rejector) or
/// just say no (Endo's `false` rejector).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Reject {
    Quiet,
    Explain,
}

impl Reject {
    pub(super) fn fail(self, message: impl FnOnce() -> String) -> Outcome {
        Err(Failure::Mismatch(match self {
            Reject::Quiet => None,
            Reject::Explain => Some(message()),
        }))
    }

    /// Endo's rejectors throw when explaining, so an explained mismatch
    /// in a position that throws becomes a thrown error.
    pub(super) fn fail_thrown(self, message: impl FnOnce() -> String) -> Outcome {
        match self {
            Reject::Quiet => Err(Failure::Mismatch(None)),
            Reject::Explain => Err(Failure::Thrown(message())),
        }
    }
}

/// A path label, formatted only when a failure needs it.
#[derive(Clone, Copy)]
pub(super) enum Label<'a> {
    Text(&'a str),
    /// `[3]`
    Index(usize),
    /// `set elements[3]`
    Element(&'a str, usize),
    /// `arg 3`
    Arg(usize),
    /// `arg 3?`
    OptionalArg(usize),
    /// `name?`
    OptionalName(&'a str),
}

impl std::fmt::Display for Label<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Label::Text(text) => f.write_str(text),
            Label::Index(index) => write!(f, "[{index}]"),
            Label::Element(prefix, index) => write!(f, "{prefix}[{index}]"),
            Label::Arg(index) => write!(f, "arg {index}"),
            Label::OptionalArg(index) => write!(f, "arg {index}?"),
            Label::OptionalName(name) => write!(f, "{name}?"),
        }
    }
}

/// Runs `check`, prefixing any failure with a path label.
pub(super) fn nested(label: Label<'_>, check: impl FnOnce() -> Outcome) -> Outcome {
    check().map_err(|failure| failure.labeled(&label.to_string()))
}

/// A string as Endo's messages quote it.
pub(super) fn s(text: &str) -> String {
    json_string(text)
}

/// A pattern as Endo's messages quote it.
pub(super) fn qp(pattern: &Value) -> String {
    json_string(&quote_pattern(pattern))
}

/// A limit as Endo's messages print a number.
pub(super) fn number(n: f64) -> String {
    quote(&Value::Number(n))
}
