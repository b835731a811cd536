//! Kernel promises: a promise that crosses the kernel to a caller (the
//! result of a send the kernel makes without waiting, or a promise inside
//! a result given in kref form) gets a `kp<N>` kref, so callers can send
//! to it before it settles (pipelining) and the kernel can count and
//! collect them. A kernel promise lasts for this run only: promises
//! cannot be kept in baggage, so none survives a restart.

use capstan_protocol::{PassStyle, Value, record};
use capstan_store::{Kref, KrefKind};

use super::{Kernel, KernelError, failed, parse_kref};
use crate::runtime::{Message, reason_to_error, when};

/// Where a kernel promise stands. A settled one keeps its outcome (as
/// the promise itself would) until it is collected: it is what the kref
/// passes as afterwards.
#[derive(Clone, Debug)]
pub(super) enum PromiseState {
    Pending,
    Fulfilled(Value),
    Rejected(Value),
}

/// The longest quoted data shown in an error about a promise's value.
const SHOWN_DATA_MAX: usize = 60;

/// What a promise was fulfilled with, for an error: its kind, and its
/// contents when they are short; `None` for an object.
fn describe_data(value: &Value) -> Option<String> {
    let kind = match value.pass_style() {
        PassStyle::Remotable | PassStyle::Promise => return None,
        PassStyle::Undefined => return Some("undefined".to_string()),
        PassStyle::Null => return Some("null".to_string()),
        PassStyle::Boolean => "a boolean",
        PassStyle::Number => "a number",
        PassStyle::BigInt => "a bigint",
        PassStyle::String => "a string",
        PassStyle::ByteArray => "a byte array",
        PassStyle::Symbol => "a symbol",
        PassStyle::CopyArray => "an array",
        PassStyle::CopyRecord => "a record",
        PassStyle::Tagged => "a tagged value",
        PassStyle::Error => "an error",
    };
    let quoted = capstan_protocol::quote::quote(value);
    if quoted.chars().count() <= SHOWN_DATA_MAX {
        return Some(format!("{kind} ({quoted})"));
    }
    let size = match value {
        Value::String(text) => format!(" of {} characters", text.chars().count()),
        Value::ByteArray(bytes) => format!(" of {} bytes", bytes.len()),
        Value::Array(items) => format!(" of {} items", items.len()),
        Value::Record(fields) => format!(" of {} properties", fields.len()),
        _ => String::new(),
    };
    Some(format!("{kind}{size}"))
}

impl Kernel {
    /// Sends `method(args)` to `kref` without waiting, and answers the
    /// `kp` kref of its result: later sends may target it at once.
    pub async fn enqueue_message(&self, kref: &str, method: &str, args: Vec<Value>) -> Result<String, KernelError> {
        let result = self.send_call(kref, method, args)?;
        Ok(self.promise_kref(result).await?.to_string())
    }

    /// Sends `method(args)` to `kref` and waits for the result.
    pub async fn queue_message(&self, kref: &str, method: &str, args: Vec<Value>) -> Result<Value, KernelError> {
        let result = self.send_call(kref, method, args)?;
        match when(&result).await {
            Ok(value) => Ok(value),
            // A promise that was pending when the send was made, and
            // was then fulfilled with data, says so.
            Err(reason) => Err(self
                .refuse_data_target(kref)
                .unwrap_or_else(|| failed(reason_to_error(reason)))),
        }
    }

    /// Sends `method(args)` to `kref`; answers the promise for its result.
    fn send_call(&self, kref: &str, method: &str, args: Vec<Value>) -> Result<Value, KernelError> {
        let target = self.send_target(kref)?;
        Ok(self.vat.send(
            &target,
            Message::Call {
                method: method.to_string(),
                args,
            },
        ))
    }

    /// What a send to `kref` goes to; a kernel promise already fulfilled
    /// with data is refused at once, saying what it holds.
    fn send_target(&self, kref: &str) -> Result<Value, KernelError> {
        let target = self.get_presence(kref)?;
        match self.refuse_data_target(kref) {
            Some(refused) => Err(refused),
            None => Ok(target),
        }
    }

    /// The error for a send to kernel promise `kref` if it was fulfilled
    /// with data (not an object).
    fn refuse_data_target(&self, kref: &str) -> Option<KernelError> {
        let kref = parse_kref(kref).ok()?;
        if kref.kind != KrefKind::Promise {
            return None;
        }
        let PromiseState::Fulfilled(value) = self.promises.borrow().get(&kref)?.clone() else {
            return None;
        };
        let data = describe_data(&value)?;
        Some(KernelError::Failed(format!(
            "{kref} resolved to {data}, not to an object; only objects accept sends"
        )))
    }

    /// The `kp` kref of a promise, made (and its number stored, so it is
    /// never reused) if it has none yet.
    pub(crate) async fn promise_kref(&self, promise: Value) -> Result<Kref, KernelError> {
        if !matches!(promise, Value::Promise(_)) {
            return Err(KernelError::Failed(format!(
                "only promises get kp krefs, not {}",
                capstan_protocol::quote::quote(&promise)
            )));
        }
        let krefs = self.krefs_for(std::slice::from_ref(&promise)).await?;
        krefs
            .first()
            .copied()
            .ok_or_else(|| KernelError::Failed("no kref was made for the promise".to_string()))
    }

    /// Counts `promise`, just given `kref`, as pending, and notes how it
    /// settles.
    pub(super) fn watch_promise(&self, kref: Kref, promise: &Value) {
        self.promises.borrow_mut().insert(kref, PromiseState::Pending);
        let settled = self.vat.when(promise);
        let kernel = self.this.clone();
        self.vat.spawn(async move {
            let state = match settled.await {
                Ok(value) => PromiseState::Fulfilled(value),
                Err(reason) => PromiseState::Rejected(reason),
            };
            if let Some(kernel) = kernel.upgrade()
                && let Some(known) = kernel.promises.borrow_mut().get_mut(&kref)
            {
                *known = state;
            }
        });
    }

    /// What kernel promise `kref` passes as in a message: the promise
    /// while it is pending, then what it settled to (a settled promise
    /// passes as its outcome, so the receiver need not ask its sender);
    /// `None` if it is not a promise of this run.
    pub(super) fn promise_to_pass(&self, kref: Kref) -> Option<Value> {
        match self.promises.borrow().get(&kref)? {
            PromiseState::Pending => self.bindings.borrow().get(&kref).cloned(),
            PromiseState::Fulfilled(value) => Some(value.clone()),
            PromiseState::Rejected(reason) => Some(self.vat.rejected(reason.clone())),
        }
    }

    /// Whether kernel promise `kref` has settled; `None` if it is not a
    /// promise of this run.
    pub(super) fn promise_settled(&self, kref: Kref) -> Option<bool> {
        self.promises
            .borrow()
            .get(&kref)
            .map(|state| !matches!(state, PromiseState::Pending))
    }

    pub(super) fn forget_promise(&self, kref: Kref) {
        self.promises.borrow_mut().remove(&kref);
    }

    /// `{count, pending, fulfilled, rejected}` of this run's kernel
    /// promises (those not collected yet).
    pub(super) fn promise_counts(&self) -> Value {
        let promises = self.promises.borrow();
        let count = |wanted: fn(&PromiseState) -> bool| promises.values().filter(|state| wanted(state)).count() as f64;
        record! {
            "count" => promises.len() as f64,
            "pending" => count(|state| matches!(state, PromiseState::Pending)),
            "fulfilled" => count(|state| matches!(state, PromiseState::Fulfilled(_))),
            "rejected" => count(|state| matches!(state, PromiseState::Rejected(_))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_is_described_by_kind_and_short_contents_only() {
        assert_eq!(describe_data(&Value::Number(42.0)).unwrap(), "a number (42)");
        assert_eq!(describe_data(&Value::Undefined).unwrap(), "undefined");
        assert_eq!(describe_data(&Value::from("hi")).unwrap(), "a string (\"hi\")");
        let long = "x".repeat(10_000);
        let described = describe_data(&Value::from(long.as_str())).unwrap();
        assert_eq!(described, "a string of 10000 characters");
        let items = Value::array((0..1000).map(|n| Value::Number(n as f64)));
        assert_eq!(describe_data(&items).unwrap(), "an array of 1000 items");
        assert!(describe_data(&capstan_protocol::far("Thing")).is_none());
    }
}
