//! JavaScript's iterator protocol as passable values: the `{done, value}`
//! records an async iterator's `next()` answers with, made and read in one
//! place, and the class of a Rust async iterator served to callers
//! ([`AsyncIterator`], [`async_iterator_class`]).
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

use std::future::Future;
use std::rc::Rc;

use capstan_protocol::guards::DefaultGuards;
use capstan_protocol::patterns::M;
use capstan_protocol::{ErrorValue, Value, record};

use super::exo::{ExoClass, MethodResult};

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

/// A Rust async iterator that callers drive with `next()` and end early
/// with `return()`.
pub trait AsyncIterator: 'static {
    /// The next `{done, value}` record.
    fn next(&self) -> impl Future<Output = MethodResult>;
    /// Stops the iteration; answers [`done`].
    fn close(&self) -> impl Future<Output = MethodResult>;
}

/// The class of an [`AsyncIterator`] named `tag`: `next()` and `return()`,
/// both answered when the iterator gets to it. Define it once per thread
/// (see [`ExoClass::make_local`]).
pub fn async_iterator_class<I: AsyncIterator>(tag: &str) -> Result<ExoClass<Rc<I>>, ErrorValue> {
    ExoClass::<Rc<I>>::builder_without_init(tag)
        .interface(M::interface(
            tag,
            [
                ("next", M::call_when([]).returns(M::record())),
                ("return", M::call_when([]).rest(M::any()).returns(M::record())),
            ],
            DefaultGuards::None,
        ))
        .async_method("next", |cx, _| {
            let iterator = Rc::clone(&cx.state());
            async move { iterator.next().await }
        })
        .async_method("return", |cx, _| {
            let iterator = Rc::clone(&cx.state());
            async move { iterator.close().await }
        })
        .build()
}
