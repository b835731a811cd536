//! The vat: one single-threaded event loop that owns its objects and
//! promises outright, runs deliveries one turn at a time in the order they
//! were sent, and carries the CapTP sessions its objects talk through.
//!
//! Objects and promises are named by [`Reference`]s whose targets
//! ([`LocalObject`], [`LocalPromise`]) hold only the vat's id and a number;
//! the state itself stays in the vat's tables, so references stay `Send`
//! while object state needs no locks. When the last handle to a reference
//! is dropped (on any thread) its number goes to the vat's release queue
//! and the vat frees the entry.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Wake, Waker};

use capstan_protocol::captp::{AnswerId, RemoteTarget, Session, SessionId};
use capstan_protocol::{ErrorValue, Reference, Value};
use futures::task::AtomicWaker;
use rustc_hash::FxHashMap;
use tokio::sync::Notify;

use super::connection::{Connection, SessionCounts};

pub use capstan_protocol::Settlement;

/// A future run on the vat's thread.
pub type LocalFuture<T> = Pin<Box<dyn Future<Output = T>>>;

/// Names a vat in this process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct VatId(u64);

static NEXT_VAT: AtomicU64 = AtomicU64::new(1);

/// What a local object does when called. Exos implement it; so can any
/// Rust type that wants full control.
pub trait Behavior {
    /// The interface name shown for the object (`Alleged: Counter`).
    fn interface(&self) -> &str;

    /// Runs `method`. `this` is the reference the call was made on.
    fn invoke(&self, this: &Value, method: &str, args: Vec<Value>) -> Invocation;

    /// Reads a property (`E.get`). Objects have none by default.
    fn get(&self, _this: &Value, field: &str) -> Settlement {
        Err(type_error(format!("{} has no property {field:?}", self.interface())))
    }
}

/// Objects and promises that live outside the vat's tables but on its
/// thread, such as a JavaScript engine's: the vat hands it deliveries to
/// and waits on its promises.
pub trait Foreign {
    /// Whether `reference` is one of this handler's objects or promises.
    fn owns(&self, reference: &Reference) -> bool;
    /// Delivers `message` to one of its objects (or promises).
    fn deliver(&self, vat: &Vat, target: Value, message: Message, resolver: Resolver);
    /// Calls `waiter` once one of its promises settles.
    fn when_settled(&self, vat: &Vat, promise: &Reference, waiter: Waiter);
}

/// The outcome of invoking a method: settled now, or later.
pub enum Invocation {
    Ready(Settlement),
    Later(LocalFuture<Settlement>),
}

/// A rejection reason carrying a `TypeError`.
pub fn type_error(message: impl Into<String>) -> Value {
    Value::error(ErrorValue::type_error(message.into()))
}

type ReleaseQueue = Arc<Mutex<Vec<Release>>>;

enum Release {
    Object(u64),
    Promise(u64),
}

/// The target of a reference to one of a vat's objects.
pub struct LocalObject {
    vat: VatId,
    id: u64,
    releases: ReleaseQueue,
}

impl LocalObject {
    pub fn of(reference: &Reference) -> Option<&LocalObject> {
        reference.target::<LocalObject>()
    }

    pub fn vat(&self) -> VatId {
        self.vat
    }
}

impl Drop for LocalObject {
    fn drop(&mut self) {
        if let Ok(mut releases) = self.releases.lock() {
            releases.push(Release::Object(self.id));
        }
    }
}

/// The target of a reference to one of a vat's promises.
pub struct LocalPromise {
    vat: VatId,
    id: u64,
    releases: ReleaseQueue,
}

impl LocalPromise {
    pub fn of(reference: &Reference) -> Option<&LocalPromise> {
        reference.target::<LocalPromise>()
    }
}

impl Drop for LocalPromise {
    fn drop(&mut self) {
        if let Ok(mut releases) = self.releases.lock() {
            releases.push(Release::Promise(self.id));
        }
    }
}

/// A message to deliver to a target.
#[derive(Clone, Debug)]
pub enum Message {
    Call { method: String, args: Vec<Value> },
    Get { field: String },
}

impl Message {
    fn describe(&self) -> String {
        self.parts().describe()
    }

    fn parts(&self) -> MessageParts<'_> {
        match self {
            Message::Call { method, args } => MessageParts::Call { method, args },
            Message::Get { field } => MessageParts::Get { field },
        }
    }
}

/// A [`Message`] whose parts are borrowed: what a session takes, so that
/// a send to a remote target builds no `Message` of its own.
#[derive(Clone, Copy)]
enum MessageParts<'m> {
    Call { method: &'m str, args: &'m [Value] },
    Get { field: &'m str },
}

impl MessageParts<'_> {
    fn describe(self) -> String {
        match self {
            MessageParts::Call { method, .. } => format!("call {method:?}"),
            MessageParts::Get { field } => format!("get {field:?}"),
        }
    }

    fn to_message(self) -> Message {
        match self {
            MessageParts::Call { method, args } => Message::Call {
                method: method.to_owned(),
                args: args.to_vec(),
            },
            MessageParts::Get { field } => Message::Get {
                field: field.to_owned(),
            },
        }
    }
}

/// Rust code told how something settled.
pub type Callback = Box<dyn FnOnce(&Vat, Settlement)>;

/// Who learns how a delivery settled.
pub enum Resolver {
    /// Nobody (a send-only message).
    Nothing,
    /// A local promise.
    Promise(u64),
    /// A call a peer made through a session.
    Answer(SessionId, AnswerId),
    /// Rust code.
    Callback(Callback),
}

struct PendingSend {
    message: Message,
    resolver: Resolver,
}

/// Rust code waiting for something to settle.
pub type Waiter = Box<dyn FnOnce(&Vat, &Settlement)>;

enum PromiseState {
    Pending {
        sends: Vec<PendingSend>,
        waiters: Vec<Waiter>,
    },
    /// Settled to something that is not a promise, or rejected.
    Settled(Settlement),
    /// Resolved to another promise: sends and waiters follow it.
    Forwarded(Value),
}

/// One turn's work. A delivery, the common turn, is kept as it is
/// rather than boxed in a closure.
enum Turn {
    Deliver {
        target: Value,
        message: Message,
        resolver: Resolver,
    },
    /// A call from a session, its method name shared with the session.
    Call {
        target: Value,
        method: Arc<str>,
        args: Vec<Value>,
        resolver: Resolver,
    },
    Run(Box<dyn FnOnce(&Vat)>),
}

struct VatCore {
    id: VatId,
    turns: RefCell<VecDeque<Turn>>,
    objects: RefCell<FxHashMap<u64, Rc<dyn Behavior>>>,
    promises: RefCell<FxHashMap<u64, PromiseState>>,
    next_number: Cell<u64>,
    releases: ReleaseQueue,
    wake: Rc<Notify>,
    /// Set when `wake` was notified and the driver has not run since: a
    /// burst of sends notifies once, not once per send.
    woken: Cell<bool>,
    /// By the ids this vat gave them.
    connections: RefCell<FxHashMap<SessionId, Rc<Connection>>>,
    next_session: Cell<u64>,
    /// Waiters on promises that sessions made, by reference identity.
    remote_waiters: RefCell<FxHashMap<usize, (Reference, Vec<Waiter>)>>,
    foreign: RefCell<Option<Rc<dyn Foreign>>>,
    gate: RefCell<Option<DeliveryGate>>,
}

/// Decides whether a delivery to an object may go ahead: `Some(reason)`
/// refuses it (the kernel uses this for revoked objects).
pub type DeliveryGate = Rc<dyn Fn(&Reference) -> Option<Value>>;

/// A handle to a vat. Cheap to clone; usable only on the vat's thread.
#[derive(Clone)]
pub struct Vat(Rc<VatCore>);

thread_local! {
    static CURRENT: RefCell<Option<Vat>> = const { RefCell::new(None) };
}

impl Default for Vat {
    fn default() -> Vat {
        Vat::new()
    }
}

impl Vat {
    pub fn new() -> Vat {
        Vat(Rc::new(VatCore {
            id: VatId(NEXT_VAT.fetch_add(1, Ordering::Relaxed)),
            turns: RefCell::new(VecDeque::new()),
            objects: RefCell::new(FxHashMap::default()),
            promises: RefCell::new(FxHashMap::default()),
            next_number: Cell::new(1),
            releases: Arc::new(Mutex::new(Vec::new())),
            wake: Rc::new(Notify::new()),
            woken: Cell::new(false),
            connections: RefCell::new(FxHashMap::default()),
            next_session: Cell::new(1),
            remote_waiters: RefCell::new(FxHashMap::default()),
            foreign: RefCell::new(None),
            gate: RefCell::new(None),
        }))
    }

    pub fn id(&self) -> VatId {
        self.0.id
    }

    /// Lets `foreign` handle its own references in this vat.
    pub fn set_foreign(&self, foreign: Rc<dyn Foreign>) {
        *self.0.foreign.borrow_mut() = Some(foreign);
    }

    fn foreign_for(&self, reference: &Reference) -> Option<Rc<dyn Foreign>> {
        let foreign = self.0.foreign.borrow().clone()?;
        foreign.owns(reference).then_some(foreign)
    }

    /// The vat running on this thread, set by [`Vat::run_until`] and
    /// [`Vat::enter`].
    pub fn current() -> Option<Vat> {
        CURRENT.with(|current| current.borrow().clone())
    }

    /// Runs `body` with this vat as the current one.
    pub fn enter<R>(&self, body: impl FnOnce() -> R) -> R {
        let previous = CURRENT.with(|current| current.replace(Some(self.clone())));
        let result = body();
        CURRENT.with(|current| *current.borrow_mut() = previous);
        result
    }

    /// Runs `future` to completion on a single-threaded runtime, with this
    /// vat's turns running alongside it. The usual entry point for
    /// programs and tests.
    pub fn run_until<F: Future>(&self, future: F) -> F::Output {
        let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(runtime) => runtime,
            Err(error) => panic!("cannot start the vat's runtime: {error}"),
        };
        let local = tokio::task::LocalSet::new();
        self.enter(|| {
            local.block_on(
                &runtime,
                PolledWhenWoken::new(async {
                    let driver = self.spawn(self.clone().drive());
                    let output = future.await;
                    driver.abort();
                    output
                }),
            )
        })
    }

    /// Processes turns forever; spawn it on a `LocalSet` next to the
    /// program's own tasks (what [`Vat::run_until`] does).
    pub async fn drive(self) {
        loop {
            // Cleared before the turns run, so that a wake during them
            // notifies again.
            self.0.woken.set(false);
            self.enter(|| self.run_turns());
            self.0.wake.notified().await;
        }
    }

    /// Spawns `future` on the current `LocalSet`, polled with this vat as
    /// the current one (so several vats can share a thread).
    pub fn spawn<F: Future + 'static>(&self, future: F) -> tokio::task::JoinHandle<F::Output> {
        tokio::task::spawn_local(InVat {
            vat: self.clone(),
            future: Box::pin(future),
        })
    }

    /// Runs every queued turn, frees released entries, and hands each
    /// connection's output to its writer.
    pub fn run_turns(&self) {
        loop {
            let turn = self.0.turns.borrow_mut().pop_front();
            match turn {
                Some(Turn::Deliver {
                    target,
                    message,
                    resolver,
                }) => self.deliver(target, message, resolver),
                Some(Turn::Call {
                    target,
                    method,
                    args,
                    resolver,
                }) => self.deliver_call(target, &method, args, resolver),
                Some(Turn::Run(turn)) => turn(self),
                None => break,
            }
        }
        self.collect_releases();
        self.flush_connections();
    }

    /// Queues `turn` to run after everything already queued.
    pub fn queue_turn(&self, turn: impl FnOnce(&Vat) + 'static) {
        self.push_turn(Turn::Run(Box::new(turn)));
    }

    /// Queues a turn that delivers `message` to `target`.
    pub(crate) fn queue_delivery(&self, target: Value, message: Message, resolver: Resolver) {
        self.push_turn(Turn::Deliver {
            target,
            message,
            resolver,
        });
    }

    /// Queues a turn that calls `method` on `target`, for a session.
    pub(crate) fn queue_call(&self, target: Value, method: Arc<str>, args: Vec<Value>, resolver: Resolver) {
        self.push_turn(Turn::Call {
            target,
            method,
            args,
            resolver,
        });
    }

    fn push_turn(&self, turn: Turn) {
        self.0.turns.borrow_mut().push_back(turn);
        self.wake();
    }

    /// Asks the driver to run (after a session wrote output outside a turn).
    pub fn wake(&self) {
        if !self.0.woken.replace(true) {
            self.0.wake.notify_one();
        }
    }

    fn next_number(&self) -> u64 {
        let number = self.0.next_number.get();
        self.0.next_number.set(number + 1);
        number
    }

    fn collect_releases(&self) {
        let released: Vec<Release> = match self.0.releases.lock() {
            Ok(mut releases) => std::mem::take(&mut *releases),
            Err(_) => return,
        };
        for release in released {
            match release {
                Release::Object(id) => {
                    self.0.objects.borrow_mut().remove(&id);
                }
                Release::Promise(id) => {
                    self.0.promises.borrow_mut().remove(&id);
                }
            }
        }
    }

    // ------------------------------------------------------------- objects

    /// Makes a local object with the given behaviour.
    pub fn make_object(&self, behavior: Rc<dyn Behavior>) -> Value {
        let id = self.next_number();
        let interface = behavior.interface().to_string();
        self.0.objects.borrow_mut().insert(id, behavior);
        Value::Remotable(Reference::new(
            interface,
            LocalObject {
                vat: self.0.id,
                id,
                releases: self.0.releases.clone(),
            },
        ))
    }

    fn behavior_of(&self, reference: &Reference) -> Option<Rc<dyn Behavior>> {
        let local = LocalObject::of(reference).filter(|local| local.vat == self.0.id)?;
        self.0.objects.borrow().get(&local.id).cloned()
    }

    // ------------------------------------------------------------ promises

    /// Makes a pending local promise, and the resolver that settles it.
    pub fn make_promise(&self) -> (Value, Resolver) {
        let id = self.next_number();
        self.0.promises.borrow_mut().insert(
            id,
            PromiseState::Pending {
                sends: Vec::new(),
                waiters: Vec::new(),
            },
        );
        let reference = Reference::new(
            "Promise",
            LocalPromise {
                vat: self.0.id,
                id,
                releases: self.0.releases.clone(),
            },
        );
        (Value::Promise(reference), Resolver::Promise(id))
    }

    fn local_promise_id(&self, value: &Value) -> Option<u64> {
        match value {
            Value::Promise(reference) => LocalPromise::of(reference)
                .filter(|local| local.vat == self.0.id)
                .map(|local| local.id),
            _ => None,
        }
    }

    /// Settles whoever waits on `resolver`.
    pub fn settle(&self, resolver: Resolver, outcome: Settlement) {
        match resolver {
            Resolver::Nothing => {}
            Resolver::Promise(id) => self.settle_promise(id, outcome),
            Resolver::Answer(session, answer) => {
                if let Ok(promise @ Value::Promise(_)) = &outcome
                    && self.settles_later_here(promise, session)
                {
                    self.forward_answer(session, answer, promise.clone());
                    return;
                }
                if let Some(connection) = self.connection(session) {
                    let result = connection.session.borrow_mut().answer(answer, outcome);
                    if let Err(error) = result {
                        tracing::warn!(%error, "answer settled twice");
                    }
                    self.process_session_events(&connection);
                }
            }
            Resolver::Callback(callback) => callback(self, outcome),
        }
    }

    /// Whether `promise` is one this vat can wait on for a session's
    /// answer: its own, or another open session's. A promise that came
    /// from `session` itself goes back to the peer that made it.
    fn settles_later_here(&self, promise: &Value, session: SessionId) -> bool {
        if self.local_promise_id(promise).is_some() {
            return true;
        }
        let Value::Promise(reference) = promise else {
            return false;
        };
        RemoteTarget::of(reference)
            .is_some_and(|remote| remote.session() != session && self.connection(remote.session()).is_some())
    }

    /// Answers a session's call with what `promise` settles to, once it
    /// does; calls pipelined on the answer go to `promise` meanwhile.
    fn forward_answer(&self, session: SessionId, answer: AnswerId, promise: Value) {
        let Some(connection) = self.connection(session) else {
            return;
        };
        let result = connection.session.borrow_mut().forward_answer(answer, promise.clone());
        self.process_session_events(&connection);
        if let Err(error) = result {
            tracing::warn!(%error, "answer settled twice");
            return;
        }
        self.when_settled(
            &promise,
            Box::new(move |vat, outcome| vat.settle(Resolver::Answer(session, answer), outcome.clone())),
        );
    }

    fn settle_promise(&self, id: u64, outcome: Settlement) {
        // Resolving to a promise forwards to it, unless it is this one.
        let outcome = match outcome {
            Ok(Value::Promise(next)) if self.local_promise_id(&Value::Promise(next.clone())) == Some(id) => {
                Err(type_error("Cannot resolve a promise with itself"))
            }
            other => other,
        };
        let previous = {
            let mut promises = self.0.promises.borrow_mut();
            let Some(state) = promises.get_mut(&id) else {
                return;
            };
            if !matches!(state, PromiseState::Pending { .. }) {
                return;
            }
            let next = match &outcome {
                Ok(value @ Value::Promise(_)) => PromiseState::Forwarded(value.clone()),
                other => PromiseState::Settled(other.clone()),
            };
            std::mem::replace(state, next)
        };
        let PromiseState::Pending { sends, waiters } = previous else {
            return;
        };
        match &outcome {
            Ok(Value::Promise(_)) | Ok(_) => {
                let target = outcome.clone().unwrap_or(Value::Undefined);
                for send in sends {
                    self.queue_delivery(target.clone(), send.message, send.resolver);
                }
            }
            Err(reason) => {
                for send in sends {
                    self.settle(send.resolver, Err(reason.clone()));
                }
            }
        }
        match &outcome {
            Ok(forward @ Value::Promise(_)) => {
                for waiter in waiters {
                    self.when_settled(forward, waiter);
                }
            }
            settled => {
                for waiter in waiters {
                    waiter(self, settled);
                }
            }
        }
    }

    /// Calls `waiter` once `value` settles (at once for a non-promise or a
    /// settled promise).
    pub fn when_settled(&self, value: &Value, waiter: Waiter) {
        let Value::Promise(reference) = value else {
            waiter(self, &Ok(value.clone()));
            return;
        };
        if let Some(id) = self.local_promise_id(value) {
            let forward = {
                let mut promises = self.0.promises.borrow_mut();
                match promises.get_mut(&id) {
                    Some(PromiseState::Pending { waiters, .. }) => {
                        waiters.push(waiter);
                        return;
                    }
                    Some(PromiseState::Settled(outcome)) => Err(outcome.clone()),
                    Some(PromiseState::Forwarded(next)) => Ok(next.clone()),
                    None => Err(Err(type_error("the promise was released"))),
                }
            };
            match forward {
                Ok(next) => self.when_settled(&next, waiter),
                Err(outcome) => waiter(self, &outcome),
            }
            return;
        }
        if let Some(remote) = RemoteTarget::of(reference) {
            if let Some(outcome) = remote.resolution() {
                let outcome = outcome.clone();
                return match &outcome {
                    Ok(next @ Value::Promise(_)) => self.when_settled(next, waiter),
                    _ => waiter(self, &outcome),
                };
            }
            if self.connection(remote.session()).is_none() {
                waiter(
                    self,
                    &Err(type_error("the connection that made this promise is closed")),
                );
                return;
            }
            let mut waiting = self.0.remote_waiters.borrow_mut();
            let entry = waiting
                .entry(reference.identity())
                .or_insert_with(|| (reference.clone(), Vec::new()));
            entry.1.push(waiter);
            return;
        }
        if let Some(foreign) = self.foreign_for(reference) {
            foreign.when_settled(self, reference, waiter);
            return;
        }
        waiter(
            self,
            &Err(type_error("a promise from another vat cannot be awaited here")),
        );
    }

    /// A future for how `value` settles.
    pub fn when(&self, value: &Value) -> impl Future<Output = Settlement> + use<> {
        let (sender, receiver) = tokio::sync::oneshot::channel();
        self.when_settled(
            value,
            Box::new(move |_, outcome| {
                let _ = sender.send(outcome.clone());
            }),
        );
        async move {
            receiver
                .await
                .unwrap_or_else(|_| Err(type_error("the vat stopped before the promise settled")))
        }
    }

    /// Called with a settled remote promise's outcome.
    pub(crate) fn remote_settled(&self, promise: &Reference, outcome: &Settlement) {
        let waiting = self.0.remote_waiters.borrow_mut().remove(&promise.identity());
        if let Some((_, waiters)) = waiting {
            for waiter in waiters {
                match outcome {
                    Ok(next @ Value::Promise(_)) => self.when_settled(next, waiter),
                    _ => waiter(self, outcome),
                }
            }
        }
    }

    // ------------------------------------------------------------ delivery

    /// Sends `message` to `target` and returns the result promise at once.
    /// The target never runs in the caller's turn.
    pub fn send(&self, target: &Value, message: Message) -> Value {
        // A remote target goes straight to its session, which keeps
        // E-order and pipelines.
        if let Some(result) = self.send_remote(target, message.parts(), true) {
            return result.unwrap_or(Value::Undefined);
        }
        self.send_local(target, message)
    }

    /// Sends `message` to `target` with no result.
    pub fn send_only(&self, target: &Value, message: Message) {
        if self.send_remote(target, message.parts(), false).is_some() {
            return;
        }
        self.queue_delivery(target.clone(), message, Resolver::Nothing);
    }

    /// [`Vat::send`] of `method(...args)`, borrowed: a remote target's
    /// session encodes them as they are.
    pub(crate) fn send_call(&self, target: &Value, method: &str, args: &[Value]) -> Value {
        let parts = MessageParts::Call { method, args };
        if let Some(result) = self.send_remote(target, parts, true) {
            return result.unwrap_or(Value::Undefined);
        }
        self.send_local(target, parts.to_message())
    }

    /// [`Vat::send_only`] of `method(...args)`, borrowed.
    pub(crate) fn send_only_call(&self, target: &Value, method: &str, args: &[Value]) {
        let parts = MessageParts::Call { method, args };
        if self.send_remote(target, parts, false).is_some() {
            return;
        }
        self.queue_delivery(target.clone(), parts.to_message(), Resolver::Nothing);
    }

    /// A send to a target that is not remote: delivered in a later turn.
    fn send_local(&self, target: &Value, message: Message) -> Value {
        let (promise, resolver) = self.make_promise();
        self.queue_delivery(target.clone(), message, resolver);
        promise
    }

    /// Sends to a session's reference: `None` if `target` is not remote;
    /// otherwise the result (a rejected promise if the session refused).
    fn send_remote(&self, target: &Value, message: MessageParts<'_>, wants_result: bool) -> Option<Option<Value>> {
        let reference = match target {
            Value::Remotable(reference) | Value::Promise(reference) => reference,
            _ => return None,
        };
        let remote = RemoteTarget::of(reference)?;
        if matches!(target, Value::Remotable(_))
            && let Some(reason) = self.refused_by_gate(reference)
        {
            return Some(wants_result.then(|| self.rejected(reason)));
        }
        let Some(connection) = self.connection(remote.session()) else {
            let reason = type_error(format!(
                "Cannot {}: the connection to its peer is closed",
                message.describe()
            ));
            return Some(wants_result.then(|| self.rejected(reason)));
        };
        let result = {
            let mut session = connection.session.borrow_mut();
            match message {
                MessageParts::Call { method, args } if wants_result => session.send(target, method, args).map(Some),
                MessageParts::Call { method, args } => session.send_only(target, method, args).map(|()| None),
                MessageParts::Get { field } => session.get(target, field).map(Some),
            }
        };
        connection.hand_over_early();
        self.wake();
        Some(match result {
            Ok(result) => result,
            Err(error) => wants_result.then(|| self.rejected(type_error(error.to_string()))),
        })
    }

    /// A promise already rejected with `reason`.
    pub fn rejected(&self, reason: Value) -> Value {
        let (promise, resolver) = self.make_promise();
        self.settle(resolver, Err(reason));
        promise
    }

    /// A promise already fulfilled with `value`.
    pub fn resolved(&self, value: Value) -> Value {
        let (promise, resolver) = self.make_promise();
        self.settle(resolver, Ok(value));
        promise
    }

    /// Installs the check every delivery to an object passes first,
    /// whoever sent it (a session, or this vat's own code).
    pub fn set_delivery_gate(&self, gate: DeliveryGate) {
        *self.0.gate.borrow_mut() = Some(gate);
    }

    fn refused_by_gate(&self, reference: &Reference) -> Option<Value> {
        let gate = self.0.gate.borrow().clone()?;
        gate(reference)
    }

    /// Delivers `message` to `target` now (we are in a turn).
    pub(crate) fn deliver(&self, target: Value, message: Message, resolver: Resolver) {
        if let Value::Remotable(reference) = &target
            && let Some(reason) = self.refused_by_gate(reference)
        {
            return self.settle(resolver, Err(reason));
        }
        self.deliver_past_gate(target, message, resolver);
    }

    /// [`Vat::deliver`] of a call whose method name is borrowed: an
    /// object of this vat runs it as it is; anything else gets a
    /// [`Message`] of its own.
    fn deliver_call(&self, target: Value, method: &str, args: Vec<Value>, resolver: Resolver) {
        if let Value::Remotable(reference) = &target {
            if let Some(reason) = self.refused_by_gate(reference) {
                return self.settle(resolver, Err(reason));
            }
            if let Some(behavior) = self.behavior_of(reference) {
                let invocation = behavior.invoke(&target, method, args);
                return self.finish(invocation, resolver);
            }
        }
        let message = Message::Call {
            method: method.to_owned(),
            args,
        };
        self.deliver_past_gate(target, message, resolver);
    }

    /// [`Vat::deliver`] once the delivery gate let the target through
    /// (it only stops remotables).
    fn deliver_past_gate(&self, target: Value, message: Message, resolver: Resolver) {
        match &target {
            Value::Remotable(reference) => {
                if let Some(behavior) = self.behavior_of(reference) {
                    let invocation = match message {
                        Message::Call { method, args } => behavior.invoke(&target, &method, args),
                        Message::Get { field } => Invocation::Ready(behavior.get(&target, &field)),
                    };
                    self.finish(invocation, resolver);
                } else if RemoteTarget::of(reference).is_some() {
                    self.deliver_remote(&target, message, resolver);
                } else if let Some(foreign) = self.foreign_for(reference) {
                    foreign.deliver(self, target.clone(), message, resolver);
                } else {
                    let reason = type_error(format!(
                        "Cannot {} on {}: it is not an object of this vat",
                        message.describe(),
                        reference.interface()
                    ));
                    self.settle(resolver, Err(reason));
                }
            }
            Value::Promise(reference) => {
                if let Some(id) = self.local_promise_id(&target) {
                    let next = {
                        let mut promises = self.0.promises.borrow_mut();
                        match promises.get_mut(&id) {
                            Some(PromiseState::Pending { sends, .. }) => {
                                sends.push(PendingSend { message, resolver });
                                return;
                            }
                            Some(PromiseState::Settled(outcome)) => outcome.clone(),
                            Some(PromiseState::Forwarded(next)) => Ok(next.clone()),
                            None => Err(type_error("the promise was released")),
                        }
                    };
                    match next {
                        Ok(next) => self.deliver(next, message, resolver),
                        Err(reason) => self.settle(resolver, Err(reason)),
                    }
                } else if RemoteTarget::of(reference).is_some() {
                    self.deliver_remote(&target, message, resolver);
                } else if let Some(foreign) = self.foreign_for(reference) {
                    foreign.deliver(self, target.clone(), message, resolver);
                } else {
                    self.settle(
                        resolver,
                        Err(type_error("a promise from another vat cannot be sent to here")),
                    );
                }
            }
            Value::Record(record) => match message {
                // `E.get` works on plain data too.
                Message::Get { field } => {
                    let value = record.get(&field).cloned().unwrap_or(Value::Undefined);
                    self.settle(resolver, Ok(value));
                }
                Message::Call { method, .. } => self.settle(
                    resolver,
                    Err(type_error(format!("Cannot call {method:?} on a copyRecord"))),
                ),
            },
            other => {
                let reason = type_error(format!(
                    "Cannot {} on {} {}",
                    message.describe(),
                    other.pass_style().name(),
                    capstan_protocol::quote::quote(other)
                ));
                self.settle(resolver, Err(reason));
            }
        }
    }

    fn deliver_remote(&self, target: &Value, message: Message, resolver: Resolver) {
        let wants_result = !matches!(resolver, Resolver::Nothing);
        match self.send_remote(target, message.parts(), wants_result) {
            Some(Some(result)) => self.settle(resolver, Ok(result)),
            Some(None) => {}
            None => self.settle(resolver, Err(type_error("not a remote reference"))),
        }
    }

    fn finish(&self, invocation: Invocation, resolver: Resolver) {
        match invocation {
            Invocation::Ready(outcome) => self.settle(resolver, outcome),
            Invocation::Later(future) => {
                let vat = self.clone();
                self.spawn(async move {
                    let outcome = future.await;
                    vat.queue_turn(move |vat| vat.settle(resolver, outcome));
                });
            }
        }
    }

    // --------------------------------------------------------- connections

    pub(crate) fn allocate_session_id(&self) -> SessionId {
        let number = self.0.next_session.get();
        self.0.next_session.set(number + 1);
        SessionId(number)
    }

    pub(crate) fn add_connection(&self, connection: Rc<Connection>) {
        self.0.connections.borrow_mut().insert(connection.id(), connection);
    }

    pub(crate) fn connection(&self, id: SessionId) -> Option<Rc<Connection>> {
        self.0.connections.borrow().get(&id).cloned()
    }

    pub(crate) fn remove_connection(&self, id: SessionId) -> Option<Rc<Connection>> {
        let removed = self.0.connections.borrow_mut().remove(&id);
        // Promises of a closed session can no longer settle.
        let orphans: Vec<(Reference, Vec<Waiter>)> = {
            let mut waiting = self.0.remote_waiters.borrow_mut();
            let keys: Vec<usize> = waiting
                .iter()
                .filter(|(_, (reference, _))| RemoteTarget::of(reference).is_some_and(|remote| remote.session() == id))
                .map(|(key, _)| *key)
                .collect();
            keys.into_iter().filter_map(|key| waiting.remove(&key)).collect()
        };
        for (reference, waiters) in orphans {
            let outcome = RemoteTarget::of(&reference)
                .and_then(|remote| remote.resolution().cloned())
                .unwrap_or_else(|| Err(type_error("the connection closed before the promise settled")));
            for waiter in waiters {
                waiter(self, &outcome);
            }
        }
        removed
    }

    /// Runs the events a session produced, then flushes its output.
    pub(crate) fn process_session_events(&self, connection: &Rc<Connection>) {
        connection.process_events(self);
        self.wake();
    }

    /// Runs what each session queued during the turns (a promise exported
    /// to it asks to be watched), drops what each session's runtime let go
    /// when a scan is due (see [`super::connection`]), then hands each
    /// connection's output to its writer.
    fn flush_connections(&self) {
        let connections: Vec<Rc<Connection>> = self.0.connections.borrow().values().cloned().collect();
        for connection in connections {
            // A send to another session that passes a promise makes that
            // session watch it; left queued until the peer next writes, a
            // peer that waits on the promise would wait forever.
            connection.process_events(self);
            connection.collect_garbage(false);
            connection.flush(self);
        }
    }

    /// The table sizes of every live session, by session id.
    pub fn session_counts(&self) -> Vec<SessionCounts> {
        let mut counts: Vec<SessionCounts> = self
            .0
            .connections
            .borrow()
            .values()
            .map(|connection| connection.counts())
            .collect();
        counts.sort_unstable_by_key(|counts| counts.session);
        counts
    }

    /// Makes a CapTP session bound to this vat (its transport is attached
    /// by [`super::connection`]).
    pub(crate) fn new_session(&self, bootstrap: Option<Value>, limits: capstan_protocol::captp::Limits) -> Session {
        let bootstrap = match bootstrap {
            Some(Value::Remotable(reference)) | Some(Value::Promise(reference)) => Some(reference),
            _ => None,
        };
        Session::new(self.allocate_session_id(), bootstrap, limits)
    }

    /// Whether some open session has `reference` in its export table: a
    /// worker, a peer or a CLI holds it (the daemon's collector keeps
    /// such values).
    pub(crate) fn exported_on_any_session(&self, reference: &Reference) -> bool {
        self.0
            .connections
            .borrow()
            .values()
            .any(|connection| connection.session.borrow().is_exported(reference))
    }
}

/// Polls its future only after the future's own waker fired.
/// `LocalSet::run_until` polls the future it runs whenever any of the
/// set's tasks is woken by the runtime (every socket and pipe wake-up of a
/// daemon or worker), and a program's main future (the daemon's accept
/// loop, a `select!` of several branches) need not run then.
struct PolledWhenWoken<F> {
    future: Pin<Box<F>>,
    flag: Arc<WakeFlag>,
    waker: Waker,
}

/// Whether the inner future was woken, and who polls the outer one.
struct WakeFlag {
    woken: AtomicBool,
    outer: AtomicWaker,
}

impl Wake for WakeFlag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.outer.wake();
    }
}

impl<F: Future> PolledWhenWoken<F> {
    fn new(future: F) -> PolledWhenWoken<F> {
        let flag = Arc::new(WakeFlag {
            // The first poll runs it.
            woken: AtomicBool::new(true),
            outer: AtomicWaker::new(),
        });
        PolledWhenWoken {
            future: Box::pin(future),
            waker: Waker::from(Arc::clone(&flag)),
            flag,
        }
    }
}

impl<F: Future> Future for PolledWhenWoken<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, context: &mut std::task::Context<'_>) -> std::task::Poll<F::Output> {
        let this = self.get_mut();
        this.flag.outer.register(context.waker());
        if !this.flag.woken.swap(false, Ordering::AcqRel) {
            return std::task::Poll::Pending;
        }
        this.future
            .as_mut()
            .poll(&mut std::task::Context::from_waker(&this.waker))
    }
}

/// A future polled with a given vat as the current one.
struct InVat<F: Future> {
    vat: Vat,
    future: Pin<Box<F>>,
}

impl<F: Future> Future for InVat<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, context: &mut std::task::Context<'_>) -> std::task::Poll<F::Output> {
        let this = &mut *self;
        let vat = this.vat.clone();
        vat.enter(|| this.future.as_mut().poll(context))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_main_future_is_polled_only_when_its_own_waker_fires() {
        let vat = Vat::new();
        let polls = Rc::new(Cell::new(0u32));
        let counted = Rc::clone(&polls);
        let ran = vat.run_until(async move {
            // Another task wakes itself 200 times; each wake passes through
            // the runtime's driver, which polls the `LocalSet`'s future.
            let busy = tokio::task::spawn_local(async {
                for _ in 0..200 {
                    tokio::task::yield_now().await;
                }
            });
            let mut busy = std::pin::pin!(busy);
            std::future::poll_fn(|context| {
                counted.set(counted.get() + 1);
                busy.as_mut().poll(context).map(|joined| joined.is_ok())
            })
            .await
        });
        assert!(ran);
        // Once to start, once per wake of the joined task (it ends once).
        assert!(polls.get() <= 3, "polled {} times", polls.get());
    }
}
