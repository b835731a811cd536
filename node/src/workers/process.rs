//! The worker process, from its own side: one vat, one JavaScript engine,
//! and one CapTP session to the node over standard input and output. Its
//! bootstrap object evaluates code, runs modules and builds vats (a vat
//! program's root, with a baggage whose writes go to the node's store);
//! the engine's objects and promises are first-class targets of the vat (see
//! [`Foreign`](crate::runtime::Foreign)), so they travel to the node and
//! back like any reference. Guest output goes to standard error, which the
//! node keeps in the worker's log.
//!
//! Before anything else the process fences itself ([`super::fence`]).
//! When the engine asks to be replaced after a runaway turn
//! ([`GuestRuntime::replacement_reason`]), the worker answers the call at
//! hand (its error says `the worker was restarted`), then ends its session
//! with that reason, which every call still pending gets as its rejection,
//! and exits: the node starts a new worker on next use, as after a crash.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd};
use std::rc::{Rc, Weak};
use std::time::Duration;

use capstan_js::{GuestError, GuestLimits, GuestRuntime, Host, LogLevel, Outcome, VatGlobals};
use capstan_protocol::guards::DefaultGuards;
use capstan_protocol::patterns::M;
use capstan_protocol::{ErrorValue, Reference, Value};
use tokio::net::unix::pipe;
use tokio_util::either::Either;

use crate::runtime::args::decode;
use crate::runtime::{
    ConnectionHandle, ExoClass, Foreign, GC_INTERVAL, Message, MethodResult, Resolver, SessionOptions, Settlement, Vat,
    Waiter, connect_with, type_error,
};

/// What the error of a call adds when the call made the worker retire.
const RESTARTED: &str = "the worker was restarted";

/// How long a retiring worker lets its last answers reach the node (which
/// ends the process as soon as it reads them).
const RETIRE_GRACE: Duration = Duration::from_secs(2);

/// Runs a worker until the node closes its session (or the worker retires).
/// Blocks.
pub fn run(memory_bytes: u64, time_budget_ms: u64) -> Result<(), String> {
    super::fence::fence(memory_bytes).map_err(|error| format!("cannot fence the worker process: {error}"))?;
    let vat = Vat::new();
    let limits = GuestLimits {
        memory_bytes: usize::try_from(memory_bytes).unwrap_or(usize::MAX),
        time_budget: Duration::from_millis(time_budget_ms),
        ..GuestLimits::default()
    };
    vat.run_until(serve(vat.clone(), limits))
}

async fn serve(vat: Vat, limits: GuestLimits) -> Result<(), String> {
    let host = Rc::new(HostSide {
        vat: vat.clone(),
        bridge: RefCell::new(Weak::new()),
    });
    let guest = GuestRuntime::new(host.clone(), limits).map_err(|error| error.to_string())?;
    let bridge = Rc::new(Bridge {
        guest: RefCell::new(guest),
        reported: RefCell::new(VecDeque::new()),
        waiters: RefCell::new(HashMap::new()),
        settled: RefCell::new(HashMap::new()),
        connection: RefCell::new(None),
        retiring: RefCell::new(None),
    });
    *host.bridge.borrow_mut() = Rc::downgrade(&bridge);
    vat.set_foreign(bridge.clone());
    let worker = vat
        .enter(|| make_worker_object(&bridge))
        .map_err(|error| error.message.to_string())?;
    // The node reads what its worker writes; a burst of large answers
    // must not make the worker cut its own node off.
    let (from_node, to_node) = pipes_to_node()?;
    let connection = connect_with(
        &vat,
        from_node,
        to_node,
        Some(worker),
        SessionOptions::toward_own_node(super::protocol::worker_session_limits()),
    );
    *bridge.connection.borrow_mut() = Some(connection.clone());
    vat.spawn(collect_guest_garbage(Rc::clone(&bridge)));
    let reason = connection.closed().await;
    note(&format!("worker: the session with the node ended: {reason}"));
    if bridge.retiring.borrow().is_some() {
        // The answers and the Abort are queued for the writer: let them go
        // out (the node reads them, then ends this process).
        tokio::time::sleep(RETIRE_GRACE).await;
    }
    Ok(())
}

/// What the worker reads the node's messages from.
type FromNode = Either<pipe::Receiver, tokio::io::Stdin>;
/// What the worker writes its messages to the node on.
type ToNode = Either<pipe::Sender, tokio::io::Stdout>;

/// The pipes to the node (standard input and output), read and written on
/// the worker's own thread through its event loop: tokio's `stdin` and
/// `stdout` would hand every read and write to a thread of their own (a
/// hop per message, and a second thread). Those are the fallback when
/// the standard streams are not pipes.
fn pipes_to_node() -> Result<(FromNode, ToNode), String> {
    if !(is_pipe(std::io::stdin().as_fd()) && is_pipe(std::io::stdout().as_fd())) {
        return Ok((Either::Right(tokio::io::stdin()), Either::Right(tokio::io::stdout())));
    }
    // SAFETY: descriptors 0 and 1 are open (`is_pipe` read their status),
    // and from here on the session alone uses them: nothing else in the
    // worker reads standard input or writes standard output (guest output
    // and notes go to standard error).
    let (input, output) = unsafe { (OwnedFd::from_raw_fd(0), OwnedFd::from_raw_fd(1)) };
    let reader =
        pipe::Receiver::from_owned_fd(input).map_err(|error| format!("cannot read the node's pipe: {error}"))?;
    let writer =
        pipe::Sender::from_owned_fd(output).map_err(|error| format!("cannot write the node's pipe: {error}"))?;
    Ok((Either::Left(reader), Either::Left(writer)))
}

/// Whether `fd` is a pipe (looked at through a copy, closed at once).
fn is_pipe(fd: BorrowedFd<'_>) -> bool {
    use std::os::unix::fs::FileTypeExt;
    fd.try_clone_to_owned()
        .and_then(|copy| std::fs::File::from(copy).metadata())
        .is_ok_and(|metadata| metadata.file_type().is_fifo())
}

/// Every [`GC_INTERVAL`]: the engine forgets the presences QuickJS
/// collected and the exports the node let go, and the session drops the
/// imports that leaves unheld at once, so a presence guest code let go is
/// dropped on the wire within about one interval.
async fn collect_guest_garbage(bridge: Rc<Bridge>) {
    let mut ticks = tokio::time::interval(GC_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if bridge.retiring.borrow().is_some() {
            return;
        }
        let Ok(mut guest) = bridge.guest.try_borrow_mut() else {
            continue;
        };
        let collected = guest.collect_garbage();
        drop(guest);
        match collected {
            Ok(collected) if collected.imports > 0 => {
                if let Some(connection) = bridge.connection.borrow().clone() {
                    connection.collect_garbage();
                }
            }
            Ok(_) => {}
            Err(error) => note(&format!("worker: collecting garbage failed: {error}")),
        }
        if let Some(vat) = Vat::current() {
            bridge.retire_if_asked(&vat);
        }
    }
}

/// After an evaluation: makes the next one's compartment once the answer
/// is on its way, so that the next evaluation does not wait for it.
fn prepare_next_compartment(bridge: &Rc<Bridge>) {
    let Some(vat) = Vat::current() else {
        return;
    };
    let bridge = Rc::clone(bridge);
    vat.spawn(async move {
        tokio::time::sleep(PREPARE_AFTER).await;
        if bridge.retiring.borrow().is_some() {
            return;
        }
        let Ok(guest) = bridge.guest.try_borrow() else {
            return;
        };
        if let Err(error) = guest.prepare_compartment() {
            note(&format!("worker: preparing a compartment failed: {error}"));
        }
    });
}

/// How long after an evaluation the next compartment is made: time for
/// the answer to go out first.
const PREPARE_AFTER: Duration = Duration::from_millis(1);

/// A line in the worker's log. The log may be full (see `fence`): then the
/// line is lost, and the worker runs on.
fn note(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// The engine's view of the vat: guest sends become vat sends, and
/// settlements come back through the bridge.
struct HostSide {
    vat: Vat,
    bridge: RefCell<Weak<Bridge>>,
}

impl HostSide {
    /// Tells the engine when a promise it holds settles (later, in a turn,
    /// never while guest code runs).
    fn report_to_guest(&self, promise: Value) {
        let bridge = self.bridge.borrow().clone();
        let Value::Promise(reference) = promise.clone() else {
            return;
        };
        self.vat.when_settled(
            &promise,
            Box::new(move |vat: &Vat, outcome: &Settlement| {
                let Some(bridge) = bridge.upgrade() else {
                    return;
                };
                let first = {
                    let mut reported = bridge.reported.borrow_mut();
                    reported.push_back((reference, outcome.clone()));
                    reported.len() == 1
                };
                // One turn settles what gathers until it runs.
                if first {
                    vat.queue_turn(move |vat| settle_reported(&bridge, vat));
                }
            }),
        );
    }
}

/// Settlements given to the engine per entry: a burst's answers then cost
/// an entry per batch, and the entry's time budget, which covers the
/// guest's reactions to the whole batch, is not spread too thin.
const SETTLE_BATCH: usize = 256;

/// Gives the engine the settlements reported so far, at most
/// [`SETTLE_BATCH`] of them; a later turn takes the rest.
fn settle_reported(bridge: &Rc<Bridge>, vat: &Vat) {
    let batch: Vec<(Reference, Settlement)> = {
        let mut reported = bridge.reported.borrow_mut();
        let count = reported.len().min(SETTLE_BATCH);
        let batch = reported.drain(..count).collect();
        if !reported.is_empty() {
            let bridge = Rc::clone(bridge);
            vat.queue_turn(move |vat| settle_reported(&bridge, vat));
        }
        batch
    };
    if bridge.retiring.borrow().is_some() {
        return;
    }
    let result = bridge.guest.borrow_mut().settle_all(batch);
    let restarted = bridge.retire_if_asked(vat);
    if let Err(error) = result {
        note(&format!(
            "worker: settling guest promises failed: {}",
            failure_text(&error, restarted)
        ));
    }
}

impl Host for HostSide {
    fn send(
        &self,
        target: &Value,
        method: Option<&str>,
        args: &[Value],
        wants_result: bool,
    ) -> Result<Option<Reference>, Value> {
        let Some(method) = method else {
            return Err(type_error("Calling a remote reference as a function is not supported"));
        };
        let message = Message::Call {
            method: method.to_string(),
            args: args.to_vec(),
        };
        if !wants_result {
            self.vat.send_only(target, message);
            return Ok(None);
        }
        // The engine reports the result promise as imported
        // (`promise_imported`), as it does every host promise it is given.
        let result = self.vat.send(target, message);
        let Value::Promise(reference) = result else {
            return Err(type_error("the send made no promise"));
        };
        Ok(Some(reference))
    }

    fn get(&self, target: &Value, property: &str) -> Result<Reference, Value> {
        let result = self.vat.send(
            target,
            Message::Get {
                field: property.to_string(),
            },
        );
        let Value::Promise(reference) = result else {
            return Err(type_error("the get made no promise"));
        };
        Ok(reference)
    }

    fn promise_imported(&self, promise: &Reference) {
        self.report_to_guest(Value::Promise(promise.clone()));
    }

    fn promise_settled(&self, promise: &Reference, settlement: &Settlement) {
        if let Some(bridge) = self.bridge.borrow().upgrade() {
            bridge
                .settled
                .borrow_mut()
                .insert(promise.identity(), settlement.clone());
            let waiters = bridge.waiters.borrow_mut().remove(&promise.identity());
            for waiter in waiters.into_iter().flatten() {
                let settlement = settlement.clone();
                // Waiters may enter the engine again: not while it runs.
                self.vat.queue_turn(move |vat| waiter(vat, &settlement));
            }
        }
    }

    fn log(&self, level: LogLevel, text: &str) {
        note(&format!("{level:?}: {text}"));
    }
}

/// The engine as the vat sees it.
struct Bridge {
    guest: RefCell<GuestRuntime>,
    /// Host promises the engine holds that settled, in order, for the
    /// next [`settle_reported`] turn.
    reported: RefCell<VecDeque<(Reference, Settlement)>>,
    waiters: RefCell<HashMap<usize, Vec<Waiter>>>,
    /// How the engine's exported promises settled, for late waiters.
    settled: RefCell<HashMap<usize, Settlement>>,
    /// The session with the node, once it is up.
    connection: RefCell<Option<ConnectionHandle>>,
    /// Why the worker retires, once the engine asked to be replaced: the
    /// session ends after the turn that learned it, and the engine is not
    /// entered again meanwhile.
    retiring: RefCell<Option<String>>,
}

impl Bridge {
    /// After each entry into the engine: if the engine asks to be replaced,
    /// ends the session in a later turn (after the answer to the call at
    /// hand is out) with the reason, which every pending call on either
    /// side gets as its rejection. Says whether the worker is retiring.
    fn retire_if_asked(&self, vat: &Vat) -> bool {
        if self.retiring.borrow().is_some() {
            return true;
        }
        let Some(reason) = self.guest.borrow().replacement_reason() else {
            return false;
        };
        let message = format!("{RESTARTED} because {reason}");
        *self.retiring.borrow_mut() = Some(message.clone());
        note(&format!("worker: {message}"));
        let connection = self.connection.borrow().clone();
        vat.queue_turn(move |_| {
            if let Some(connection) = connection {
                connection.close(&message);
            }
        });
        true
    }

    /// The error for a call that arrives while the worker retires.
    fn refusal(&self) -> Option<ErrorValue> {
        self.retiring
            .borrow()
            .as_ref()
            .map(|message| ErrorValue::plain(message.clone()))
    }

    /// Turns an engine outcome into a settlement, waiting for a pending one.
    fn finish(&self, vat: &Vat, outcome: Result<Outcome, GuestError>, resolver: Resolver, restarted: bool) {
        match outcome {
            Ok(Outcome::Settled(settlement)) => vat.settle(resolver, settlement),
            // A host promise handed straight back (`return E(x).m()`):
            // the vat, not the engine, learns how it settles.
            Ok(Outcome::Pending(promise)) if !self.guest.borrow().owns(&promise) => vat.when_settled(
                &Value::Promise(promise),
                Box::new(move |vat: &Vat, settlement: &Settlement| vat.settle(resolver, settlement.clone())),
            ),
            Ok(Outcome::Pending(promise)) => self.when_settled(
                vat,
                &promise,
                Box::new(move |vat: &Vat, settlement: &Settlement| vat.settle(resolver, settlement.clone())),
            ),
            Err(error) => vat.settle(
                resolver,
                Err(Value::error(ErrorValue::plain(failure_text(&error, restarted)))),
            ),
        }
    }
}

/// The text of an entry that failed as a whole (out of time or memory, an
/// engine failure), and whether the worker is being replaced for it.
fn failure_text(error: &GuestError, restarted: bool) -> String {
    let text = error.to_string();
    let text = if text.trim().is_empty() {
        "the JavaScript engine failed without saying why".to_string()
    } else {
        text
    };
    if restarted {
        format!("{text}; {RESTARTED}")
    } else {
        text
    }
}

impl Foreign for Bridge {
    fn owns(&self, reference: &Reference) -> bool {
        self.guest.try_borrow().is_ok_and(|guest| guest.owns(reference))
    }

    fn deliver(&self, vat: &Vat, target: Value, message: Message, resolver: Resolver) {
        let (Value::Remotable(reference) | Value::Promise(reference)) = &target else {
            vat.settle(resolver, Err(type_error("not a guest object")));
            return;
        };
        if let Some(refusal) = self.refusal() {
            vat.settle(resolver, Err(Value::error(refusal)));
            return;
        }
        let outcome = {
            let mut guest = self.guest.borrow_mut();
            match &message {
                Message::Call { method, args } => guest.deliver(reference, Some(method), args),
                Message::Get { field } => guest.get(reference, field),
            }
        };
        let restarted = self.retire_if_asked(vat);
        self.finish(vat, outcome, resolver, restarted);
    }

    fn when_settled(&self, vat: &Vat, promise: &Reference, waiter: Waiter) {
        let known = self.settled.borrow().get(&promise.identity()).cloned();
        match known {
            Some(settlement) => waiter(vat, &settlement),
            None => self
                .waiters
                .borrow_mut()
                .entry(promise.identity())
                .or_default()
                .push(waiter),
        }
    }
}

/// The engine's answer to an evaluation (a module, a vat program) as a
/// method result: a value, or a guest promise the node can wait on.
/// Checks first whether the engine asks to be replaced.
fn outcome_value(bridge: &Bridge, outcome: Result<Outcome, GuestError>) -> MethodResult {
    let restarted = Vat::current().is_some_and(|vat| bridge.retire_if_asked(&vat));
    match outcome {
        Ok(Outcome::Settled(Ok(value))) => Ok(value),
        Ok(Outcome::Settled(Err(Value::Error(error)))) if !error.message.trim().is_empty() => Err((*error).clone()),
        Ok(Outcome::Settled(Err(Value::Error(error)))) => Err(ErrorValue::new(
            error.name.clone(),
            format!("the guest threw {} with no message", error.name),
        )),
        Ok(Outcome::Settled(Err(other))) => Err(ErrorValue::plain(format!(
            "the guest threw {}, not an Error",
            crate::runtime::eventual::describe_value(&other)
        ))),
        Ok(Outcome::Pending(promise)) => Ok(Value::Promise(promise)),
        Err(error) => Err(ErrorValue::plain(failure_text(&error, restarted))),
    }
}

/// The `[key, value]` pairs a vat's baggage starts with.
fn baggage_entries(entries: &Value) -> Result<Vec<(String, Value)>, ErrorValue> {
    entries
        .as_array()
        .unwrap_or_default()
        .iter()
        .map(|entry| match entry.as_array() {
            Some([Value::String(key), value]) => Ok((key.to_string(), value.clone())),
            _ => Err(ErrorValue::type_error(format!(
                "A baggage entry must be a [key string, value] pair, not {}",
                capstan_protocol::quote::quote(entry)
            ))),
        })
        .collect()
}

/// The globals a vat is granted (`buildVat`'s last argument, `{names,
/// fetch?}`), with their powers: a timer of this worker (so timers die
/// with it) and the node's `fetch` power for the vat.
fn vat_globals(globals: Option<&Value>) -> Result<VatGlobals, ErrorValue> {
    let Some(Value::Record(globals)) = globals else {
        return Ok(VatGlobals::default());
    };
    let names: Vec<&str> = match globals.get("names") {
        None => Vec::new(),
        Some(Value::Array(names)) => names
            .iter()
            .map(|name| {
                name.as_str()
                    .ok_or_else(|| ErrorValue::type_error("the vat's globals must be names"))
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(ErrorValue::type_error("the vat's globals must be an array of names")),
    };
    let mut granted = VatGlobals::new(names).map_err(|error| ErrorValue::type_error(error.to_string()))?;
    if granted.wants_timer() {
        granted = granted.with_power("timer", crate::kernel::services::make_timer()?);
    }
    if let Some(fetch @ Value::Remotable(_)) = globals.get("fetch") {
        granted = granted.with_power("fetch", fetch.clone());
    }
    Ok(granted)
}

fn make_worker_object(bridge: &Rc<Bridge>) -> MethodResult {
    ExoClass::<Rc<Bridge>>::builder_without_init("EndoWorker")
        .interface(M::interface(
            "EndoWorker",
            [
                (
                    "evaluate",
                    M::call([M::string(), M::array_of(M::string(), None), M::array()]).returns(M::any()),
                ),
                ("makeUnconfined", M::call([M::string(), M::any()]).returns(M::any())),
                ("makeBundle", M::call([M::string(), M::any()]).returns(M::any())),
                (
                    "buildVat",
                    M::call([M::string(), M::any(), M::array(), M::remotable(), M::record()])
                        .optional([M::record()])
                        .returns(M::any()),
                ),
                ("ping", M::call([]).returns(M::string())),
                ("collectGarbage", M::call([]).returns(M::number())),
                ("terminate", M::call([]).returns_undefined()),
            ],
            DefaultGuards::None,
        ))
        .method("evaluate", |cx, args| {
            let (source, names, values): (String, Vec<String>, Vec<Value>) = decode(args)?;
            if let Some(refusal) = cx.state().refusal() {
                return Err(refusal);
            }
            let endowments: Vec<(&str, Value)> = names.iter().map(String::as_str).zip(values).collect();
            let outcome = cx.state().guest.borrow_mut().evaluate(&source, &endowments);
            prepare_next_compartment(&cx.state());
            outcome_value(&cx.state(), outcome)
        })
        .method("makeUnconfined", |cx, args| {
            let (specifier, powers): (String, Value) = decode(args)?;
            if let Some(refusal) = cx.state().refusal() {
                return Err(refusal);
            }
            let source = std::fs::read_to_string(&specifier)
                .map_err(|error| ErrorValue::plain(format!("cannot read the module {specifier}: {error}")))?;
            let outcome = cx.state().guest.borrow_mut().make_module(&source, powers);
            outcome_value(&cx.state(), outcome)
        })
        .method("makeBundle", |cx, args| {
            let (source, powers): (String, Value) = decode(args)?;
            if let Some(refusal) = cx.state().refusal() {
                return Err(refusal);
            }
            let outcome = cx.state().guest.borrow_mut().make_module(&source, powers);
            outcome_value(&cx.state(), outcome)
        })
        .method("buildVat", |cx, args| {
            let (source, parameters, entries, baggage_store, vat_powers, globals): (
                String,
                Value,
                Value,
                Value,
                Value,
                Option<Value>,
            ) = decode(args)?;
            if let Some(refusal) = cx.state().refusal() {
                return Err(refusal);
            }
            let entries = baggage_entries(&entries)?;
            let globals = vat_globals(globals.as_ref())?;
            let outcome = cx.state().guest.borrow_mut().build_vat_with_globals(
                &source,
                &parameters,
                &entries,
                &baggage_store,
                &vat_powers,
                &globals,
            );
            outcome_value(&cx.state(), outcome)
        })
        .method("ping", |_, _| Ok(Value::from("pong")))
        .method("collectGarbage", |cx, _| {
            // As on the timer, at once: the engine lets go of what guest
            // code no longer reaches, and the session drops those imports
            // (after this turn, outside the session's own handling).
            let collected = cx
                .state()
                .guest
                .borrow_mut()
                .collect_garbage()
                .map_err(|error| ErrorValue::plain(format!("collecting garbage failed: {error}")))?;
            if let Some(connection) = cx.state().connection.borrow().clone()
                && let Some(vat) = Vat::current()
            {
                vat.queue_turn(move |_| {
                    connection.collect_garbage();
                });
            }
            Ok(Value::from(collected.imports as f64))
        })
        .method("terminate", |_, _| {
            // Answer first; the node sees the session end.
            std::thread::spawn(|| {
                std::thread::sleep(Duration::from_millis(50));
                std::process::exit(0);
            });
            Ok(Value::Undefined)
        })
        .build()?
        .make_with(Rc::clone(bridge))
}
