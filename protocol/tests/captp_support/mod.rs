//! Test-only local objects and a runtime that serves them, for the CapTP
//! tests: an echo object, a counter, a logger, and a runtime that records
//! what the session tells it.

#![allow(clippy::expect_used, clippy::unwrap_used, reason = "a test fails by panicking")]
#![allow(dead_code)]

use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};

use capstan_protocol::captp::pair::{Pair, Runtime};
use capstan_protocol::captp::{AnswerId, Event, Limits, Session, SessionId, Settlement};
use capstan_protocol::{ErrorValue, Reference, Value};

/// What a test object is.
pub enum TestObject {
    /// `echo(x)` returns `x`; `fail(msg)` throws a TypeError; `me()`
    /// returns itself; `hold(x)` keeps `x` in the runtime; `hang()` never
    /// returns; `make()` returns a new echo object.
    Echo,
    /// `incr(n)` adds `n` and returns the total.
    Counter(AtomicI64),
    /// `log(entry)` appends to the runtime's log.
    Logger,
    /// Answers every method with its own name in a log (for ordering).
    Recorder(Mutex<Vec<String>>),
}

pub fn echo() -> Reference {
    Reference::new("Alleged: Echo", TestObject::Echo)
}

pub fn counter() -> Reference {
    Reference::new("Alleged: Counter", TestObject::Counter(AtomicI64::new(0)))
}

pub fn logger() -> Reference {
    Reference::new("Alleged: Logger", TestObject::Logger)
}

/// A runtime that runs calls at once and records everything.
#[derive(Default)]
pub struct TestRuntime {
    pub settled: Vec<(Reference, Settlement)>,
    pub log: Vec<String>,
    pub held: Vec<Value>,
    pub hanging: Vec<AnswerId>,
    pub watched: Vec<Reference>,
    pub aborted: Option<(String, bool)>,
    pub delivered: usize,
    /// When this promise settles to a local object, log this entry as a
    /// runtime would for a direct call made right after settlement.
    pub direct_after_settle: Option<(Reference, String)>,
}

impl TestRuntime {
    pub fn outcome_of(&self, promise: &Value) -> Option<&Settlement> {
        let Value::Promise(promise) = promise else {
            return None;
        };
        self.settled
            .iter()
            .find(|(settled, _)| settled.same(promise))
            .map(|(_, outcome)| outcome)
    }

    fn call(&mut self, target: &Value, method: &str, args: &[Value]) -> Option<Settlement> {
        let first = args.first().cloned().unwrap_or(Value::Undefined);
        let Value::Remotable(reference) = target else {
            return Some(Err(Value::error(ErrorValue::type_error(format!(
                "cannot call {method} on data"
            )))));
        };
        match (reference.target::<TestObject>(), method) {
            (Some(TestObject::Echo), "echo") => Some(Ok(first)),
            (Some(TestObject::Echo), "fail") => {
                let message = first.as_str().unwrap_or("boom").to_owned();
                Some(Err(Value::error(ErrorValue::type_error(message))))
            }
            (Some(TestObject::Echo), "me") => Some(Ok(target.clone())),
            (Some(TestObject::Echo), "make") => Some(Ok(Value::Remotable(echo()))),
            (Some(TestObject::Echo), "hold") => {
                self.held.push(first);
                Some(Ok(Value::Undefined))
            }
            (Some(TestObject::Echo), "hang") => None,
            (Some(TestObject::Counter(total)), "incr") => {
                let step = first.as_number().unwrap_or(1.0) as i64;
                Some(Ok(Value::from((total.fetch_add(step, Ordering::SeqCst) + step) as f64)))
            }
            (Some(TestObject::Logger), "log") => {
                self.log.push(first.as_str().unwrap_or("?").to_owned());
                Some(Ok(Value::Undefined))
            }
            (Some(TestObject::Recorder(entries)), _) => {
                if let Ok(mut entries) = entries.lock() {
                    entries.push(method.to_owned());
                }
                Some(Ok(Value::Undefined))
            }
            _ => Some(Err(Value::error(ErrorValue::type_error(format!("no method {method}"))))),
        }
    }
}

impl Runtime for TestRuntime {
    fn handle(&mut self, session: &mut Session, event: Event) {
        match event {
            Event::Deliver {
                target,
                method,
                args,
                answer,
                ..
            } => {
                self.delivered += 1;
                let result = self.call(&target, &method, &args);
                match (answer, result) {
                    (Some(answer), Some(result)) => session.answer(answer, result).expect("answer settles once"),
                    (Some(answer), None) => self.hanging.push(answer),
                    (None, _) => {}
                }
            }
            Event::Get { target, field, answer } => {
                let result = match target.as_record().and_then(|record| record.get(&field)) {
                    Some(value) => Ok(value.clone()),
                    None => Ok(Value::Undefined),
                };
                session.answer(answer, result).expect("answer settles once");
            }
            Event::Settled { promise, outcome } => {
                if let Some((watched, entry)) = &self.direct_after_settle
                    && watched.same(&promise)
                    && matches!(&outcome, Ok(Value::Remotable(_)))
                {
                    self.log.push(entry.clone());
                }
                self.settled.push((promise, outcome));
            }
            Event::WatchPromise { promise } => self.watched.push(promise),
            Event::Aborted { reason, by_peer } => self.aborted = Some((reason, by_peer)),
        }
    }
}

pub type TestPair = Pair<TestRuntime, TestRuntime>;

/// Two sessions, each offering `bootstrap` objects of their own.
pub fn pair_with(left_bootstrap: Option<Reference>, right_bootstrap: Option<Reference>) -> TestPair {
    Pair::new(
        Session::new(SessionId(1), left_bootstrap, Limits::default()),
        TestRuntime::default(),
        Session::new(SessionId(2), right_bootstrap, Limits::default()),
        TestRuntime::default(),
    )
}

pub fn error_message(value: &Value) -> String {
    match value {
        Value::Error(error) => error.message.to_string(),
        other => format!("not an error: {other:?}"),
    }
}
