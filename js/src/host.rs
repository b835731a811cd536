//! The host interface: what the engine asks of the runtime that drives it
//! (sends to host references, reads of their properties, settlements of
//! promises the engine exported, console output), and the types the engine
//! answers the runtime with.

pub use capstan_protocol::Settlement;
use capstan_protocol::{Reference, Value};

/// What an entry into the guest (an evaluation, a delivery) came to.
#[derive(Debug)]
pub enum Outcome {
    /// Done: the completion value or result, or the thrown reason.
    Settled(Settlement),
    /// The result is a promise still waiting on the host. The engine
    /// reports its settlement later through [`Host::promise_settled`] with
    /// this same reference.
    Pending(Reference),
}

impl Outcome {
    /// The settlement, if there is one yet.
    pub fn settled(self) -> Option<Settlement> {
        match self {
            Outcome::Settled(settlement) => Some(settlement),
            Outcome::Pending(_) => None,
        }
    }
}

/// The level of a `console` call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogLevel {
    Debug,
    Log,
    Info,
    Warn,
    Error,
}

impl LogLevel {
    pub(crate) fn from_name(name: &str) -> LogLevel {
        match name {
            "debug" => LogLevel::Debug,
            "info" => LogLevel::Info,
            "warn" => LogLevel::Warn,
            "error" => LogLevel::Error,
            _ => LogLevel::Log,
        }
    }
}

/// What the engine needs from the runtime. The engine calls these while
/// guest code runs, so an implementation must not call back into the
/// [`GuestRuntime`](crate::GuestRuntime): it records or forwards, and the
/// runtime acts after the entry returns.
pub trait Host {
    /// An eventual send to a reference the host gave the engine (a presence
    /// or a host promise, as `Value::Remotable` / `Value::Promise`).
    /// `method` is `None` to call the target as a function. With
    /// `wants_result`, return a promise reference for the result (a CapTP
    /// question); the host settles it later with
    /// [`GuestRuntime::settle`](crate::GuestRuntime::settle). An `Err`
    /// rejects the guest's promise at once with that reason.
    fn send(
        &self,
        target: &Value,
        method: Option<&str>,
        args: &[Value],
        wants_result: bool,
    ) -> Result<Option<Reference>, Value>;

    /// An eventual get (`E.get(target).property`): return a promise
    /// reference for the property's value.
    fn get(&self, target: &Value, property: &str) -> Result<Reference, Value>;

    /// A promise the engine exported (in a result, an argument, or as a
    /// [`Outcome::Pending`]) settled.
    fn promise_settled(&self, promise: &Reference, settlement: &Settlement);

    /// The engine now stands for host promise `promise` with a promise of
    /// its own (a send's or get's result, or a promise that arrived in an
    /// argument, an endowment or a settlement): the host calls
    /// [`GuestRuntime::settle`](crate::GuestRuntime::settle) once it
    /// settles, in a later turn. A host that settles its promises by other
    /// means (a test) may ignore this.
    fn promise_imported(&self, _promise: &Reference) {}

    /// A `console` call, its arguments formatted as one line.
    fn log(&self, level: LogLevel, text: &str);
}
