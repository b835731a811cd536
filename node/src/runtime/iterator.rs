//! JavaScript's iterator protocol as passable values: the `{done, value}`
//! records an async iterator's `next()` answers with, made and read in one
//! place.
//!
//! ```
//! use capstan_node::runtime::iterator::{self, Step};
//! use capstan_protocol::Value;
//!
//! let next = iterator::yielded(Value::from(1.0));
//! assert!(matches!(iterator::read_step(&next), Some(Step::Yielded(Value::Number(n))) if n == 1.0));
//! assert!(matches!(iterator::read_step(&iterator::done()), Some(Step::Done)));
//! assert!(iterator::read_step(&Value::from("not a record")).is_none());
//! ```

use capstan_protocol::{Value, record};

/// `{done: false, value}`: the iterator gives `value`.
pub fn yielded(value: Value) -> Value {
    record! { "done" => false, "value" => value }
}

/// `{done: true, value: undefined}`: the iterator has nothing more.
pub fn done() -> Value {
    record! { "done" => true, "value" => Value::Undefined }
}

/// One answer of an iterator's `next()`, read.
#[derive(Clone, Debug)]
pub enum Step {
    /// `done` is `true`.
    Done,
    /// Anything else: the `value` (`undefined` when absent).
    Yielded(Value),
}

/// Reads an answer of `next()`; `None` when it is not a record.
pub fn read_step(result: &Value) -> Option<Step> {
    let record = result.as_record()?;
    if matches!(record.get("done"), Some(Value::Boolean(true))) {
        return Some(Step::Done);
    }
    Some(Step::Yielded(record.get("value").cloned().unwrap_or(Value::Undefined)))
}
