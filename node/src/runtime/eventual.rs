//! `E`: eventual send from Rust. `E(target).call(method, args)` returns a
//! promise at once; the target runs in a later turn (or on the peer, for a
//! remote target). Sending to a promise before it settles queues the
//! message on it, or pipelines it through the session for a remote one.
//! [`when`] turns anything into a future for its settlement, and
//! [`reason_to_error`] reads a rejection reason as an error.

use std::future::{Future, IntoFuture};
use std::pin::Pin;

use capstan_protocol::{ErrorValue, Value};

use super::vat::{Message, Settlement, Vat, type_error};

/// The eventual-send proxy for a target.
pub struct EProxy {
    target: Value,
}

/// `E(target)`: the eventual-send proxy for `target`.
#[allow(non_snake_case)]
pub fn E(target: &Value) -> EProxy {
    EProxy { target: target.clone() }
}

fn vat() -> Vat {
    match Vat::current() {
        Some(vat) => vat,
        None => panic!("E() and when() need a running vat (see Vat::run_until)"),
    }
}

impl EProxy {
    /// `E(target).method(...args)`: a promise for the result.
    pub fn call(&self, method: &str, args: Value) -> Value {
        vat().send_call(&self.target, method, args_of(&args))
    }

    /// `E.get(target).field`: a promise for the property.
    pub fn get(&self, field: &str) -> Value {
        vat().send(
            &self.target,
            Message::Get {
                field: field.to_string(),
            },
        )
    }

    /// `E.sendOnly(target).method(...args)`: no result, no answer traffic.
    pub fn send_only(&self, method: &str, args: Value) {
        vat().send_only_call(&self.target, method, args_of(&args));
    }
}

/// Arguments are given as a copyArray (`list![...]`); anything else is a
/// single argument.
fn args_of(args: &Value) -> &[Value] {
    match args {
        Value::Array(items) => items,
        Value::Undefined => &[],
        single => std::slice::from_ref(single),
    }
}

/// A future for how `value` settles: at once for a non-promise.
pub fn when(value: &Value) -> When {
    When {
        inner: Box::pin(vat().when(value)),
    }
}

/// A rejection reason as an error value whose message says something: an
/// error as it is, unless its message is empty (then the message says
/// so); anything else (`null`, `undefined`, a string, a record: guests
/// may reject with any passable) described as such.
pub fn reason_to_error(reason: Value) -> ErrorValue {
    match reason {
        Value::Error(error) if !error.message.trim().is_empty() => (*error).clone(),
        Value::Error(error) => ErrorValue {
            message: format!("{} with no message", error.name).into(),
            ..(*error).clone()
        },
        other => ErrorValue::plain(format!("rejected with {}, not an Error", describe_value(&other))),
    }
}

/// A passable in a sentence: `undefined`, `null`, or quoted as Endo does.
pub fn describe_value(value: &Value) -> String {
    match value {
        Value::Undefined => "undefined".to_string(),
        other => capstan_protocol::quote::quote(other),
    }
}

/// The future [`when`] returns.
pub struct When {
    inner: Pin<Box<dyn Future<Output = Settlement>>>,
}

impl Future for When {
    type Output = Settlement;

    fn poll(mut self: Pin<&mut Self>, context: &mut std::task::Context<'_>) -> std::task::Poll<Settlement> {
        self.inner.as_mut().poll(context)
    }
}

/// Awaiting a promise value directly: `E(x).call(..).settled().await`.
pub trait Settle {
    fn settled(&self) -> When;
}

impl Settle for Value {
    fn settled(&self) -> When {
        when(self)
    }
}

/// A promise made by Rust code, with its resolver.
pub struct PromiseKit {
    pub promise: Value,
    resolver: Option<super::vat::Resolver>,
}

impl PromiseKit {
    pub fn new() -> PromiseKit {
        let (promise, resolver) = vat().make_promise();
        PromiseKit {
            promise,
            resolver: Some(resolver),
        }
    }

    pub fn resolve(&mut self, value: Value) {
        self.settle(Ok(value));
    }

    pub fn reject(&mut self, reason: Value) {
        self.settle(Err(reason));
    }

    fn settle(&mut self, outcome: Settlement) {
        if let Some(resolver) = self.resolver.take() {
            vat().settle(resolver, outcome);
        }
    }
}

impl Default for PromiseKit {
    fn default() -> Self {
        PromiseKit::new()
    }
}

impl Drop for PromiseKit {
    fn drop(&mut self) {
        if let Some(resolver) = self.resolver.take()
            && let Some(vat) = Vat::current()
        {
            vat.settle(resolver, Err(type_error("the promise's resolver was dropped")));
        }
    }
}

impl IntoFuture for PromiseKit {
    type Output = Settlement;
    type IntoFuture = When;

    fn into_future(self) -> When {
        when(&self.promise.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rejection_reason_reads_as_an_error_with_a_message() {
        let error = ErrorValue::new("TypeError", "not a function");
        assert_eq!(reason_to_error(Value::error(error.clone())), error);
        for (reason, message) in [
            (Value::Null, "rejected with null, not an Error"),
            (Value::Undefined, "rejected with undefined, not an Error"),
            (Value::from(""), "rejected with \"\", not an Error"),
            (Value::from("nope"), "rejected with \"nope\", not an Error"),
            (
                Value::error(ErrorValue::new("RangeError", "")),
                "RangeError with no message",
            ),
            (Value::error(ErrorValue::plain("  ")), "Error with no message"),
        ] {
            assert_eq!(&*reason_to_error(reason.clone()).message, message, "{reason:?}");
        }
    }
}
