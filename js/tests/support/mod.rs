//! An in-process host for tests: records what the engine sends and
//! settles, and lets a test answer sends like a remote vat would.

#![allow(clippy::expect_used, clippy::unwrap_used, reason = "a test fails by panicking")]
#![allow(dead_code)]

use std::cell::RefCell;
use std::rc::Rc;

use capstan_js::{GuestError, GuestLimits, GuestRuntime, Host, LogLevel, Outcome, Settlement};
use capstan_protocol::{Reference, Value};

/// One send the guest made to a host reference.
pub struct Sent {
    pub target: Value,
    pub method: Option<String>,
    pub args: Vec<Value>,
    pub result: Option<Reference>,
}

#[derive(Default)]
pub struct MockHost {
    pub sends: RefCell<Vec<Sent>>,
    pub gets: RefCell<Vec<(Value, String, Reference)>>,
    pub settled: RefCell<Vec<(Reference, Settlement)>>,
    pub logs: RefCell<Vec<(LogLevel, String)>>,
    /// How long each log keeps the guest's thread waiting (a host call
    /// that blocks).
    pub pause_on_log: std::cell::Cell<std::time::Duration>,
}

impl Host for MockHost {
    fn send(
        &self,
        target: &Value,
        method: Option<&str>,
        args: &[Value],
        wants_result: bool,
    ) -> Result<Option<Reference>, Value> {
        let result = wants_result.then(|| Reference::new("Promise", ()));
        self.sends.borrow_mut().push(Sent {
            target: target.clone(),
            method: method.map(str::to_string),
            args: args.to_vec(),
            result: result.clone(),
        });
        Ok(result)
    }

    fn get(&self, target: &Value, property: &str) -> Result<Reference, Value> {
        let result = Reference::new("Promise", ());
        self.gets
            .borrow_mut()
            .push((target.clone(), property.to_string(), result.clone()));
        Ok(result)
    }

    fn promise_settled(&self, promise: &Reference, settlement: &Settlement) {
        self.settled.borrow_mut().push((promise.clone(), settlement.clone()));
    }

    fn log(&self, level: LogLevel, text: &str) {
        std::thread::sleep(self.pause_on_log.get());
        self.logs.borrow_mut().push((level, text.to_string()));
    }
}

impl MockHost {
    pub fn settlement_of(&self, promise: &Reference) -> Option<Settlement> {
        self.settled
            .borrow()
            .iter()
            .find(|(settled, _)| settled.same(promise))
            .map(|(_, settlement)| settlement.clone())
    }
}

/// Tests that are not about time get a generous budget: debug builds on a
/// loaded machine are slow, and only `limits.rs` tests the budget itself.
pub const UNTIMED_BUDGET: std::time::Duration = std::time::Duration::from_secs(60);

pub fn guest() -> (Rc<MockHost>, GuestRuntime) {
    guest_with(GuestLimits {
        time_budget: UNTIMED_BUDGET,
        ..GuestLimits::default()
    })
}

pub fn guest_with(limits: GuestLimits) -> (Rc<MockHost>, GuestRuntime) {
    let host = Rc::new(MockHost::default());
    let runtime = GuestRuntime::new(host.clone(), limits).expect("guest runtime starts");
    (host, runtime)
}

/// The settled value of an outcome; panics on anything else.
pub fn fulfilled(outcome: Result<Outcome, GuestError>) -> Value {
    match outcome {
        Ok(Outcome::Settled(Ok(value))) => value,
        other => panic!("expected a fulfilled outcome, got {other:?}"),
    }
}

/// The rejection message of an outcome; panics on anything else.
pub fn rejected(outcome: Result<Outcome, GuestError>) -> String {
    match outcome {
        Ok(Outcome::Settled(Err(Value::Error(error)))) => error.message.to_string(),
        other => panic!("expected a rejected outcome, got {other:?}"),
    }
}

pub fn eval(guest: &mut GuestRuntime, source: &str) -> Value {
    fulfilled(guest.evaluate(source, &[]))
}

pub fn eval_str(guest: &mut GuestRuntime, source: &str) -> String {
    match eval(guest, source) {
        Value::String(text) => text.to_string(),
        other => panic!("expected a string, got {other:?}"),
    }
}
