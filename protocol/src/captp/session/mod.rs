//! The CapTP session state machine: tables (exports, imports, questions,
//! answers), promise pipelining, settlement, GC with wire deltas,
//! disembargo, limits and abort. See the [module docs](super) for how a
//! runtime drives it.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, OnceLock};

use crate::captp::codec::{self, FrameDecoder, FrameError};
use crate::captp::limits::Limits;
use crate::captp::message::{Body, MAX_POSITIONS_PER_MESSAGE, Message, Outcome, Positions, Target};
use crate::marshal::{
    self, DecodeSlots, Descriptor, EncodeSlots, MarshalError, Marshaller, NoSlots, RefStyle, SlotOut,
};
pub use crate::value::Settlement;
use crate::value::{ErrorValue, Reference, Value};

/// Names a session among the runtime's sessions; chosen by the runtime and
/// stamped on every reference the session makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(pub u64);

/// What a reference made by a session stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RemoteKind {
    /// An object the peer exports (a presence).
    Presence,
    /// A promise the peer exports.
    Promise,
    /// The result of one of our calls, pending at the peer.
    Question,
    /// The result of one of the peer's calls to us, which the peer passed
    /// back to us as an argument.
    Answer,
}

/// The target inside every [`Reference`] a session makes. A runtime
/// recognises session references with [`RemoteTarget::of`] and sends to
/// them through the session named by [`RemoteTarget::session`].
#[derive(Debug)]
pub struct RemoteTarget {
    session: SessionId,
    position: u64,
    kind: RemoteKind,
    resolution: OnceLock<Settlement>,
}

impl RemoteTarget {
    fn new(session: SessionId, position: u64, kind: RemoteKind) -> RemoteTarget {
        RemoteTarget {
            session,
            position,
            kind,
            resolution: OnceLock::new(),
        }
    }

    /// The session target of `reference`, if a session made it.
    pub fn of(reference: &Reference) -> Option<&RemoteTarget> {
        reference.target::<RemoteTarget>()
    }

    pub fn session(&self) -> SessionId {
        self.session
    }

    pub fn position(&self) -> u64 {
        self.position
    }

    pub fn kind(&self) -> RemoteKind {
        self.kind
    }

    /// For promises and questions: how it settled, once the session has
    /// reported it with [`Event::Settled`].
    pub fn resolution(&self) -> Option<&Settlement> {
        self.resolution.get()
    }
}

/// The handle of a call the peer made to us; give it back to
/// [`Session::answer`] when the call settles.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AnswerId {
    position: u64,
    /// Distinguishes successive answers at a position the peer reused
    /// after dropping it.
    generation: u64,
}

impl AnswerId {
    pub fn position(&self) -> u64 {
        self.position
    }
}

/// What the session asks of the runtime, in the order it must be done.
#[derive(Debug)]
pub enum Event {
    /// Call `method` on `target` (one of our exports, or whatever an
    /// answer settled to: a local reference or plain data). Report the
    /// result with [`Session::answer`] if `answer` is set. `resolver`, if
    /// the peer sent one, is a reference the caller asked to be told.
    Deliver {
        target: Value,
        method: String,
        args: Arc<[Value]>,
        answer: Option<AnswerId>,
        resolver: Option<Reference>,
    },
    /// Read property `field` of `target`; report with [`Session::answer`].
    Get {
        target: Value,
        field: String,
        answer: AnswerId,
    },
    /// A promise this session made (a question, an imported promise, an
    /// answer the peer passed us) settled.
    Settled { promise: Reference, outcome: Settlement },
    /// A local promise was exported; call [`Session::resolve_export`] when
    /// it settles.
    WatchPromise { promise: Reference },
    /// The session ended; nothing more will happen on it.
    Aborted { reason: String, by_peer: bool },
}

/// Why the runtime's call into the session did not send anything.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SendError {
    #[error("the CapTP session is closed: {reason}")]
    Closed { reason: String },
    /// The target is not (or no longer) remote on this session: deliver
    /// to `target` locally (it is what the reference settled to).
    #[error("the target is not remote on this session")]
    NotRemote { target: Value },
    /// The target is a promise that was rejected with `reason`.
    #[error("the target promise was rejected")]
    Rejected { reason: Value },
    #[error("the reference was dropped from this session")]
    Released,
    #[error("could not marshal: {0}")]
    Marshal(#[from] MarshalError),
    #[error("could not frame: {0}")]
    Frame(#[from] FrameError),
}

/// Why a settlement reported by the runtime was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettleError {
    #[error("answer {0} was already settled")]
    AnswerAlreadySettled(u64),
    #[error("exported promise {0} was already resolved")]
    PromiseAlreadyResolved(u64),
}

/// A fast hasher for keys this side chooses (its own question and export
/// positions, reference identities): the peer cannot pick colliding keys
/// for these tables, so they need no keyed hash. Tables keyed by the
/// peer's choices (answers, imports) keep the standard keyed hasher.
#[derive(Default, Clone, Copy)]
struct OwnKeyHasher(u64);

impl Hasher for OwnKeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.write_u64(u64::from(byte));
        }
    }

    fn write_u64(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x517c_c1b7_2722_0a95);
    }

    fn write_usize(&mut self, word: usize) {
        self.write_u64(word as u64);
    }
}

type OwnKeyMap<K, V> = HashMap<K, V, BuildHasherDefault<OwnKeyHasher>>;

/// Redirections followed when a promise settled to another promise.
const MAX_REDIRECTS: usize = 32;

/// The interface a presence gets if the exporter sent its interface
/// before and this side has forgotten it.
const FORGOTTEN_INTERFACE: &str = "Alleged: remote object";

struct Export {
    reference: Reference,
    style: RefStyle,
    /// Times sent and not yet acknowledged by a `DropExports` delta.
    sent: u64,
    interface_sent: bool,
    /// For promises: the settlement, once known, re-sent after every
    /// later message that carries the promise.
    resolved: Option<Settlement>,
    /// The bootstrap object is never freed.
    pinned: bool,
    /// Set when this export is the promise for one of our answers.
    answer: Option<u64>,
}

struct Import {
    reference: Reference,
    /// Times received since the last drop.
    received: u64,
}

struct Question {
    /// `None` when the runtime dropped it or the session forwards the
    /// result to an answer.
    promise: Option<Reference>,
    forward: Option<AnswerId>,
    /// Sends targeted at the answer position: they need a disembargo if
    /// the answer settles to one of our own objects.
    pipelined: u64,
    /// Set while a disembargo is in flight.
    returned: Option<Settlement>,
    /// `pipelined` when the disembargo in flight was sent: sends made
    /// after it need another one.
    pipelined_at_embargo: u64,
}

struct Answer {
    generation: u64,
    state: AnswerState,
    promise: Option<Reference>,
    exported_as: Option<u64>,
}

enum AnswerState {
    Pending(Vec<Pending>),
    Settled(Settlement),
}

/// A delivery waiting for (or being routed to) its target.
enum Pending {
    Deliver {
        method: String,
        args: Arc<[Value]>,
        answer: Option<AnswerId>,
        resolver: Option<Reference>,
    },
    Get {
        field: String,
        answer: AnswerId,
    },
}

impl Pending {
    fn answer(&self) -> Option<AnswerId> {
        match self {
            Pending::Deliver { answer, .. } => *answer,
            Pending::Get { answer, .. } => Some(*answer),
        }
    }

    fn into_event(self, target: Value) -> Event {
        match self {
            Pending::Deliver {
                method,
                args,
                answer,
                resolver,
            } => Event::Deliver {
                target,
                method,
                args,
                answer,
                resolver,
            },
            Pending::Get { field, answer } => Event::Get { target, field, answer },
        }
    }
}

/// Work done after the message or call that caused it, in order, so that
/// long pipelined chains need no recursion.
enum Work {
    Settle { answer: AnswerId, outcome: Settlement },
    Route { target: Settlement, pending: Pending },
}

/// The tables, kept apart from the output buffers so that the marshaller
/// can borrow them while a body is written.
struct Tables {
    id: SessionId,
    promise_interface: Arc<str>,
    exports: OwnKeyMap<u64, Export>,
    export_positions: OwnKeyMap<Reference, u64>,
    next_export: u64,
    imports: HashMap<u64, Import>,
    forgotten_interfaces: VecDeque<(u64, Arc<str>)>,
    remembered_interfaces: usize,
    questions: OwnKeyMap<u64, Question>,
    answers: HashMap<u64, Answer>,
    events: VecDeque<Event>,
    /// Exported promises already settled that the last message carried.
    resolve_after: Vec<u64>,
}

enum State {
    Open,
    Closed { reason: String },
}

/// One CapTP session, sans-IO. See the [module docs](super).
pub struct Session {
    tables: Tables,
    limits: Limits,
    state: State,
    bootstrap: Option<Reference>,
    decoder: FrameDecoder,
    outbound: Vec<u8>,
    marshaller: Marshaller,
    body: Vec<u8>,
    work: VecDeque<Work>,
    next_question: u64,
    next_answer_generation: u64,
    next_embargo: u64,
    embargoes: OwnKeyMap<u64, u64>,
    export_drops: Vec<(u64, u64)>,
    answer_drops: Vec<u64>,
    scratch_positions: Vec<u64>,
    scratch_deltas: Vec<u64>,
}

fn protocol_error(problem: impl std::fmt::Display) -> String {
    format!("CapTP protocol error: {problem}")
}

fn limit_exceeded(name: &str, limit: usize) -> String {
    format!("CapTP limit exceeded: {name} ({limit})")
}

fn body_error(context: &str, error: &MarshalError) -> String {
    match error {
        MarshalError::TooDeep { limit } => limit_exceeded("max_depth", *limit),
        MarshalError::TooLarge { what, claimed, limit } => {
            format!("CapTP limit exceeded: {what} of {claimed} in {context} exceeds {limit}")
        }
        other => protocol_error(format!("bad body in {context}: {other}")),
    }
}

fn import_descriptor(style: RefStyle, position: u64) -> Descriptor {
    match style {
        RefStyle::Remotable => Descriptor::ImportObject(position),
        RefStyle::Promise => Descriptor::ImportPromise(position),
    }
}

fn error_value(message: impl Into<Arc<str>>) -> Value {
    Value::error(ErrorValue::plain(message))
}

fn reference_of(value: &Value) -> Option<&Reference> {
    match value {
        Value::Remotable(reference) | Value::Promise(reference) => Some(reference),
        _ => None,
    }
}

impl Tables {
    fn ours<'r>(&self, reference: &'r Reference) -> Option<&'r RemoteTarget> {
        RemoteTarget::of(reference).filter(|target| target.session == self.id)
    }

    fn export_local(&mut self, reference: &Reference, style: RefStyle) -> SlotOut {
        let known = self.export_positions.get(reference).copied();
        if let Some((position, entry)) =
            known.and_then(|position| self.exports.get_mut(&position).map(|entry| (position, entry)))
        {
            entry.sent = entry.sent.saturating_add(1);
            let send_interface = !entry.interface_sent;
            entry.interface_sent = true;
            if entry.resolved.is_some() {
                self.resolve_after.push(position);
            }
            return SlotOut {
                descriptor: import_descriptor(entry.style, position),
                send_interface,
            };
        }
        let position = self.next_export;
        self.next_export += 1;
        let mut entry = Export {
            reference: reference.clone(),
            style,
            sent: 1,
            interface_sent: true,
            resolved: None,
            pinned: false,
            answer: None,
        };
        if style == RefStyle::Promise {
            match self.ours(reference) {
                Some(target) if target.kind == RemoteKind::Answer => {
                    if let Some(answer) = self.answers.get_mut(&target.position) {
                        answer.exported_as = Some(position);
                        entry.answer = Some(target.position);
                        if let AnswerState::Settled(outcome) = &answer.state {
                            entry.resolved = Some(outcome.clone());
                        }
                    } else {
                        entry.resolved = target.resolution.get().cloned();
                    }
                }
                Some(target) => entry.resolved = target.resolution.get().cloned(),
                None => self.events.push_back(Event::WatchPromise {
                    promise: reference.clone(),
                }),
            }
            if entry.resolved.is_some() {
                self.resolve_after.push(position);
            }
        }
        self.exports.insert(position, entry);
        self.export_positions.insert(reference.clone(), position);
        SlotOut {
            descriptor: import_descriptor(style, position),
            send_interface: true,
        }
    }

    fn import(&mut self, position: u64, kind: RemoteKind, interface: Option<&str>) -> Result<Reference, MarshalError> {
        if let Some(entry) = self.imports.get_mut(&position) {
            if RemoteTarget::of(&entry.reference).map(RemoteTarget::kind) != Some(kind) {
                return Err(MarshalError::Slot(format!(
                    "import {position} arrived as a different kind"
                )));
            }
            entry.received = entry.received.saturating_add(1);
            return Ok(entry.reference.clone());
        }
        let interface = match kind {
            RemoteKind::Presence => match interface {
                Some(interface) => Arc::from(interface),
                None => self.recall_interface(position),
            },
            _ => self.promise_interface.clone(),
        };
        let reference = Reference::new(interface, RemoteTarget::new(self.id, position, kind));
        self.imports.insert(
            position,
            Import {
                reference: reference.clone(),
                received: 1,
            },
        );
        Ok(reference)
    }

    fn recall_interface(&mut self, position: u64) -> Arc<str> {
        match self
            .forgotten_interfaces
            .iter()
            .rposition(|(known, _)| *known == position)
        {
            Some(index) => match self.forgotten_interfaces.remove(index) {
                Some((_, interface)) => interface,
                None => Arc::from(FORGOTTEN_INTERFACE),
            },
            None => Arc::from(FORGOTTEN_INTERFACE),
        }
    }

    fn remember_interface(&mut self, position: u64, interface: &str) {
        if self.remembered_interfaces == 0 {
            return;
        }
        if self.forgotten_interfaces.len() >= self.remembered_interfaces {
            self.forgotten_interfaces.pop_front();
        }
        self.forgotten_interfaces.push_back((position, Arc::from(interface)));
    }
}

impl EncodeSlots for Tables {
    fn slot(&mut self, reference: &Reference, style: RefStyle) -> Result<SlotOut, MarshalError> {
        if let Some(target) = self.ours(reference) {
            let position = target.position;
            let back_to_peer = |descriptor| SlotOut {
                descriptor,
                send_interface: false,
            };
            match target.kind {
                RemoteKind::Presence => {
                    return if self.imports.contains_key(&position) {
                        Ok(back_to_peer(Descriptor::Export(position)))
                    } else {
                        Err(MarshalError::Slot(format!(
                            "presence {position} was dropped from this session"
                        )))
                    };
                }
                RemoteKind::Promise => {
                    if target.resolution.get().is_none() && self.imports.contains_key(&position) {
                        return Ok(back_to_peer(Descriptor::Export(position)));
                    }
                }
                RemoteKind::Question => {
                    if self.questions.contains_key(&position) {
                        return Ok(back_to_peer(Descriptor::Answer(position)));
                    }
                }
                RemoteKind::Answer => {}
            }
        }
        Ok(self.export_local(reference, style))
    }
}

impl DecodeSlots for Tables {
    fn reference(
        &mut self,
        descriptor: Descriptor,
        style: RefStyle,
        interface: Option<&str>,
    ) -> Result<Reference, MarshalError> {
        match (descriptor, style) {
            (Descriptor::ImportObject(position), RefStyle::Remotable) => {
                self.import(position, RemoteKind::Presence, interface)
            }
            (Descriptor::ImportPromise(position), RefStyle::Promise) => {
                self.import(position, RemoteKind::Promise, None)
            }
            (Descriptor::Export(position), _) => match self.exports.get(&position) {
                Some(entry) if entry.style == style => Ok(entry.reference.clone()),
                Some(_) => Err(MarshalError::Slot(format!(
                    "export {position} sent back as a {style:?}"
                ))),
                None => Err(MarshalError::Slot(format!("unknown export {position}"))),
            },
            (Descriptor::Answer(position), RefStyle::Promise) => {
                let (id, promise_interface) = (self.id, self.promise_interface.clone());
                let answer = self
                    .answers
                    .get_mut(&position)
                    .ok_or_else(|| MarshalError::Slot(format!("unknown answer {position}")))?;
                if let Some(promise) = &answer.promise {
                    return Ok(promise.clone());
                }
                let target = RemoteTarget::new(id, position, RemoteKind::Answer);
                if let AnswerState::Settled(outcome) = &answer.state {
                    let _ = target.resolution.set(outcome.clone());
                }
                let promise = Reference::new(promise_interface, target);
                answer.promise = Some(promise.clone());
                Ok(promise)
            }
            (descriptor, style) => Err(MarshalError::Slot(format!(
                "{descriptor:?} cannot stand for a {style:?}"
            ))),
        }
    }
}

/// Where a delivery goes next.
enum Route {
    Wire(Target),
    QueueOn(u64),
    Follow(Value),
    Reject(Value),
    Local,
}

/// Which settlement message to write.
#[derive(Clone, Copy)]
enum SettlementMessage {
    Return,
    Resolve,
}

impl Session {
    /// A new open session. `bootstrap` is the object the peer gets from
    /// `Bootstrap` (export position 0).
    pub fn new(id: SessionId, bootstrap: Option<Reference>, limits: Limits) -> Session {
        let mut tables = Tables {
            id,
            promise_interface: Arc::from("Promise"),
            exports: OwnKeyMap::default(),
            export_positions: OwnKeyMap::default(),
            next_export: 1,
            imports: HashMap::new(),
            forgotten_interfaces: VecDeque::new(),
            remembered_interfaces: limits.remembered_interfaces,
            questions: OwnKeyMap::default(),
            answers: HashMap::new(),
            events: VecDeque::new(),
            resolve_after: Vec::new(),
        };
        if let Some(reference) = &bootstrap {
            tables.exports.insert(
                0,
                Export {
                    reference: reference.clone(),
                    style: RefStyle::Remotable,
                    sent: 0,
                    interface_sent: false,
                    resolved: None,
                    pinned: true,
                    answer: None,
                },
            );
            tables.export_positions.insert(reference.clone(), 0);
        }
        Session {
            tables,
            decoder: FrameDecoder::new(limits.max_frame_bytes),
            limits,
            state: State::Open,
            bootstrap,
            outbound: Vec::new(),
            marshaller: Marshaller::new(),
            body: Vec::new(),
            work: VecDeque::new(),
            next_question: 1,
            next_answer_generation: 0,
            next_embargo: 0,
            embargoes: OwnKeyMap::default(),
            export_drops: Vec::new(),
            answer_drops: Vec::new(),
            scratch_positions: Vec::new(),
            scratch_deltas: Vec::new(),
        }
    }

    pub fn id(&self) -> SessionId {
        self.tables.id
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed { .. })
    }

    /// Why the session ended, once it has.
    pub fn close_reason(&self) -> Option<&str> {
        match &self.state {
            State::Open => None,
            State::Closed { reason } => Some(reason),
        }
    }

    fn check_open(&self) -> Result<(), SendError> {
        match &self.state {
            State::Open => Ok(()),
            State::Closed { reason } => Err(SendError::Closed { reason: reason.clone() }),
        }
    }

    // ----- the runtime's calls -----

    /// Asks for the peer's bootstrap object; returns a promise for it at
    /// once (pipelinable).
    pub fn bootstrap(&mut self) -> Result<Value, SendError> {
        self.check_open()?;
        let (answer, promise) = self.new_question();
        let message = Message::Bootstrap { answer };
        if let Err(error) = codec::write_frame(&message, self.limits.max_frame_bytes, &mut self.outbound) {
            self.tables.questions.remove(&answer);
            return Err(error.into());
        }
        Ok(Value::Promise(promise))
    }

    /// `E(target).method(...args)`: returns the result promise at once.
    /// Sending to the result before it settles pipelines.
    pub fn send(&mut self, target: &Value, method: &str, args: &[Value]) -> Result<Value, SendError> {
        let promise = self.send_call(target, method, args, true)?;
        promise.map(Value::Promise).ok_or(SendError::Released)
    }

    /// `E.sendOnly(target).method(...args)`: no result.
    pub fn send_only(&mut self, target: &Value, method: &str, args: &[Value]) -> Result<(), SendError> {
        self.send_call(target, method, args, false).map(|_| ())
    }

    /// `E.get(target)[field]`: returns the result promise at once.
    pub fn get(&mut self, target: &Value, field: &str) -> Result<Value, SendError> {
        self.check_open()?;
        let wire_target = self.outbound_target(target)?;
        let (answer, promise) = self.new_question();
        let message = Message::Get {
            target: wire_target,
            field,
            answer,
        };
        if let Err(error) = codec::write_frame(&message, self.limits.max_frame_bytes, &mut self.outbound) {
            self.tables.questions.remove(&answer);
            return Err(error.into());
        }
        Ok(Value::Promise(promise))
    }

    fn send_call(
        &mut self,
        target: &Value,
        method: &str,
        args: &[Value],
        want_answer: bool,
    ) -> Result<Option<Reference>, SendError> {
        self.check_open()?;
        let wire_target = self.outbound_target(target)?;
        self.body.clear();
        self.marshaller
            .encode_list(args, &mut self.tables, &self.limits.marshal, &mut self.body)?;
        let question = want_answer.then(|| self.new_question());
        let message = Message::Deliver {
            target: wire_target,
            method,
            args: Body(&self.body),
            answer: question.as_ref().map(|(position, _)| *position),
            resolver: None,
        };
        if let Err(error) = codec::write_frame(&message, self.limits.max_frame_bytes, &mut self.outbound) {
            if let Some((position, _)) = &question {
                self.tables.questions.remove(position);
            }
            return Err(error.into());
        }
        self.flush_resolves();
        Ok(question.map(|(_, promise)| promise))
    }

    /// Reports that a call the session delivered (`Event::Deliver` or
    /// `Event::Get` with an answer) settled. Answers the peer dropped
    /// meanwhile are ignored.
    pub fn answer(&mut self, answer: AnswerId, outcome: Settlement) -> Result<(), SettleError> {
        if self.is_closed() {
            return Ok(());
        }
        let result = self.settle_answer(answer, outcome);
        self.drain_work();
        result
    }

    /// Reports that a local promise the session exported (see
    /// `Event::WatchPromise`) settled. Ignored if the peer dropped it.
    pub fn resolve_export(&mut self, promise: &Reference, outcome: Settlement) -> Result<(), SettleError> {
        if self.is_closed() {
            return Ok(());
        }
        let Some(&position) = self.tables.export_positions.get(promise) else {
            return Ok(());
        };
        let Some(entry) = self.tables.exports.get_mut(&position) else {
            return Ok(());
        };
        if entry.resolved.is_some() {
            return Err(SettleError::PromiseAlreadyResolved(position));
        }
        entry.resolved = Some(outcome.clone());
        self.write_settlement(SettlementMessage::Resolve, position, &outcome);
        Ok(())
    }

    /// Tells the session the runtime no longer holds `reference` (a
    /// presence, imported promise or question it made). The drop reaches
    /// the peer with the next transmit.
    pub fn drop_reference(&mut self, reference: &Reference) {
        let Some(target) = self.tables.ours(reference) else {
            return;
        };
        let (position, kind) = (target.position, target.kind);
        match kind {
            RemoteKind::Presence | RemoteKind::Promise => {
                let Some(entry) = self.tables.imports.get(&position) else {
                    return;
                };
                if !entry.reference.same(reference) {
                    return;
                }
                if let Some(entry) = self.tables.imports.remove(&position) {
                    if kind == RemoteKind::Presence {
                        self.tables.remember_interface(position, entry.reference.interface());
                    }
                    self.export_drops.push((position, entry.received));
                }
            }
            RemoteKind::Question => {
                if let Some(question) = self.tables.questions.get_mut(&position) {
                    question.promise = None;
                }
            }
            RemoteKind::Answer => {}
        }
    }

    /// Ends the session: sends `Abort` with `reason` and rejects every
    /// pending question with it.
    pub fn close(&mut self, reason: &str) {
        self.close_with(reason.to_owned(), false);
    }

    /// The next thing the runtime must do.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.tables.events.pop_front()
    }

    /// Whether `poll_transmit` has bytes to give.
    pub fn has_transmit(&self) -> bool {
        !self.outbound.is_empty()
            || (!self.is_closed() && (!self.export_drops.is_empty() || !self.answer_drops.is_empty()))
    }

    /// Appends every frame waiting to be sent to `out`. Pass an empty,
    /// reused buffer to have the session's buffer swapped in (no copy).
    pub fn poll_transmit(&mut self, out: &mut Vec<u8>) {
        self.flush_drops();
        if out.is_empty() {
            std::mem::swap(out, &mut self.outbound);
        } else {
            out.extend_from_slice(&self.outbound);
            self.outbound.clear();
        }
    }

    // ----- input -----

    /// Feeds bytes read from the transport; complete frames are handled at
    /// once.
    pub fn handle_bytes(&mut self, bytes: &[u8]) {
        if self.is_closed() {
            return;
        }
        self.decoder.feed(bytes);
        loop {
            let mut decoder = std::mem::take(&mut self.decoder);
            let next = decoder.next_frame();
            let stop = match next {
                Ok(Some(frame)) => {
                    self.handle_frame(frame);
                    self.is_closed()
                }
                Ok(None) => true,
                Err(FrameError::TooLarge { claimed, limit }) => {
                    self.close_with(
                        format!("CapTP limit exceeded: max_frame_bytes ({limit}); a frame claimed {claimed} bytes"),
                        false,
                    );
                    true
                }
                Err(error) => {
                    self.close_with(protocol_error(error), false);
                    true
                }
            };
            self.decoder = decoder;
            if stop {
                break;
            }
        }
    }

    /// Handles one frame's payload (a postcard message).
    pub fn handle_frame(&mut self, frame: &[u8]) {
        if self.is_closed() {
            return;
        }
        if frame.len() > self.limits.max_frame_bytes {
            let reason = limit_exceeded("max_frame_bytes", self.limits.max_frame_bytes);
            self.close_with(reason, false);
            return;
        }
        match Message::decode(frame) {
            Ok(message) => self.handle_message(&message),
            Err(error) => self.close_with(protocol_error(error), false),
        }
    }

    /// Handles one decoded message.
    pub fn handle_message(&mut self, message: &Message<'_>) {
        if self.is_closed() {
            return;
        }
        if let Err(reason) = self.on_message(message) {
            self.close_with(reason, false);
        }
        self.drain_work();
    }

    fn on_message(&mut self, message: &Message<'_>) -> Result<(), String> {
        match message {
            Message::Bootstrap { answer } => {
                let answer = self.open_answer(*answer)?;
                let outcome = match &self.bootstrap {
                    Some(reference) => Ok(Value::Remotable(reference.clone())),
                    None => Err(error_value("this session offers no bootstrap object")),
                };
                self.work.push_back(Work::Settle { answer, outcome });
            }
            Message::Deliver {
                target,
                method,
                args,
                answer,
                resolver,
            } => {
                let answer = match answer {
                    Some(position) => {
                        if *target == Target::Answer(*position) {
                            return Err(protocol_error(format!("Deliver answer {position} targets itself")));
                        }
                        Some(self.open_answer(*position)?)
                    }
                    None => None,
                };
                let args = self.decode_args(args.0)?;
                let resolver = match resolver {
                    Some(descriptor) => Some(
                        self.tables
                            .reference(*descriptor, RefStyle::Remotable, None)
                            .map_err(|error| protocol_error(format!("bad resolver in Deliver: {error}")))?,
                    ),
                    None => None,
                };
                let pending = Pending::Deliver {
                    method: (*method).to_owned(),
                    args,
                    answer,
                    resolver,
                };
                self.dispatch("Deliver", *target, pending)?;
            }
            Message::Get { target, field, answer } => {
                if *target == Target::Answer(*answer) {
                    return Err(protocol_error(format!("Get answer {answer} targets itself")));
                }
                let answer = self.open_answer(*answer)?;
                let pending = Pending::Get {
                    field: (*field).to_owned(),
                    answer,
                };
                self.dispatch("Get", *target, pending)?;
            }
            Message::Resolve { promise, outcome } => self.on_resolve(*promise, *outcome)?,
            Message::Return { answer, outcome } => self.on_return(*answer, *outcome)?,
            Message::DropExports { positions, deltas } => {
                self.on_drop_exports(positions.as_slice(), deltas.as_slice())?
            }
            Message::DropAnswers { positions } => self.on_drop_answers(positions.as_slice())?,
            Message::Abort { reason } => {
                let reason = if reason.is_empty() {
                    "CapTP session aborted by the peer, which gave no reason"
                } else {
                    reason
                };
                self.close_with(reason.to_owned(), true)
            }
            Message::Disembargo { target, embargo } => {
                let Target::Answer(position) = *target else {
                    return Err(protocol_error("Disembargo must target an answer"));
                };
                match self.tables.answers.get(&position) {
                    Some(Answer {
                        state: AnswerState::Settled(_),
                        ..
                    }) => {
                        let reply = Message::DisembargoReply { embargo: *embargo };
                        self.write_own(&reply);
                    }
                    Some(_) => {
                        return Err(protocol_error(format!("Disembargo on unsettled answer {position}")));
                    }
                    None => {
                        return Err(protocol_error(format!("Disembargo on unknown answer {position}")));
                    }
                }
            }
            Message::DisembargoReply { embargo } => {
                let Some(question) = self.embargoes.remove(embargo) else {
                    return Err(protocol_error(format!("DisembargoReply for unknown embargo {embargo}")));
                };
                let Some(entry) = self.tables.questions.get_mut(&question) else {
                    return Ok(());
                };
                if entry.pipelined > entry.pipelined_at_embargo {
                    // Sent through the peer after the last marker: wait
                    // for those too.
                    self.send_disembargo(question);
                } else if let Some(outcome) = entry.returned.take() {
                    self.release_question(question, outcome);
                }
            }
        }
        Ok(())
    }

    fn open_answer(&mut self, position: u64) -> Result<AnswerId, String> {
        if self.tables.answers.contains_key(&position) {
            return Err(protocol_error(format!(
                "answer position {position} reused while still in use"
            )));
        }
        if self.tables.answers.len() >= self.limits.max_outstanding_answers {
            return Err(limit_exceeded(
                "max_outstanding_answers",
                self.limits.max_outstanding_answers,
            ));
        }
        let generation = self.next_answer_generation;
        self.next_answer_generation += 1;
        self.tables.answers.insert(
            position,
            Answer {
                generation,
                state: AnswerState::Pending(Vec::new()),
                promise: None,
                exported_as: None,
            },
        );
        Ok(AnswerId { position, generation })
    }

    fn decode_args(&mut self, body: &[u8]) -> Result<Arc<[Value]>, String> {
        match marshal::decode(body, &mut self.tables, &self.limits.marshal) {
            Ok(Value::Array(items)) => Ok(items),
            Ok(other) => Err(protocol_error(format!(
                "Deliver args must be a copyArray, not a {}",
                other.pass_style().name()
            ))),
            Err(error) => Err(body_error("Deliver args", &error)),
        }
    }

    fn decode_outcome(&mut self, outcome: Outcome<'_>, context: &str) -> Result<Settlement, String> {
        let (body, fulfilled) = match outcome {
            Outcome::Fulfilled(body) => (body, true),
            Outcome::Rejected(body) => (body, false),
        };
        let value = marshal::decode(body.0, &mut self.tables, &self.limits.marshal)
            .map_err(|error| body_error(context, &error))?;
        Ok(if fulfilled { Ok(value) } else { Err(value) })
    }

    fn dispatch(&mut self, context: &str, target: Target, pending: Pending) -> Result<(), String> {
        match target {
            Target::Export(position) => {
                let Some(entry) = self.tables.exports.get(&position) else {
                    return Err(protocol_error(format!("{context} to unknown export {position}")));
                };
                let value = match entry.style {
                    RefStyle::Remotable => Value::Remotable(entry.reference.clone()),
                    RefStyle::Promise => Value::Promise(entry.reference.clone()),
                };
                self.work.push_back(Work::Route {
                    target: Ok(value),
                    pending,
                });
            }
            Target::Answer(position) => {
                let Some(answer) = self.tables.answers.get_mut(&position) else {
                    return Err(protocol_error(format!("{context} to unknown answer {position}")));
                };
                match &mut answer.state {
                    AnswerState::Pending(queue) => {
                        if queue.len() >= self.limits.max_queued_per_answer {
                            return Err(limit_exceeded(
                                "max_queued_per_answer",
                                self.limits.max_queued_per_answer,
                            ));
                        }
                        queue.push(pending);
                    }
                    AnswerState::Settled(outcome) => {
                        let target = outcome.clone();
                        self.work.push_back(Work::Route { target, pending });
                    }
                }
            }
        }
        Ok(())
    }

    fn on_resolve(&mut self, promise: u64, outcome: Outcome<'_>) -> Result<(), String> {
        let Some(entry) = self.tables.imports.get(&promise) else {
            // We dropped it and the drop is in flight: nothing waits on it.
            return Ok(());
        };
        if RemoteTarget::of(&entry.reference).map(RemoteTarget::kind) != Some(RemoteKind::Promise) {
            return Err(protocol_error(format!(
                "Resolve of import {promise}, which is not a promise"
            )));
        }
        let outcome = self.decode_outcome(outcome, "Resolve")?;
        if let Some(entry) = self.tables.imports.remove(&promise) {
            if let Some(target) = RemoteTarget::of(&entry.reference) {
                let _ = target.resolution.set(outcome.clone());
            }
            self.export_drops.push((promise, entry.received));
            self.tables.events.push_back(Event::Settled {
                promise: entry.reference,
                outcome,
            });
        }
        Ok(())
    }

    fn on_return(&mut self, position: u64, outcome: Outcome<'_>) -> Result<(), String> {
        match self.tables.questions.get(&position) {
            None => {
                return Err(protocol_error(format!("Return for unknown question {position}")));
            }
            Some(question) if question.returned.is_some() => {
                return Err(protocol_error(format!("second Return for question {position}")));
            }
            Some(_) => {}
        }
        let outcome = self.decode_outcome(outcome, "Return")?;
        let settled_here = match &outcome {
            Ok(value) => reference_of(value).is_some_and(|reference| self.tables.ours(reference).is_none()),
            Err(_) => false,
        };
        let Some(question) = self.tables.questions.get_mut(&position) else {
            return Ok(());
        };
        if let Some(answer) = question.forward {
            self.tables.questions.remove(&position);
            self.answer_drops.push(position);
            self.work.push_back(Work::Settle { answer, outcome });
            return Ok(());
        }
        if settled_here && question.pipelined > 0 {
            // Calls we pipelined on this answer come back to our own
            // object through the peer; hold the settlement until they have.
            question.returned = Some(outcome);
            self.send_disembargo(position);
        } else {
            self.release_question(position, outcome);
        }
        Ok(())
    }

    fn send_disembargo(&mut self, question: u64) {
        if let Some(entry) = self.tables.questions.get_mut(&question) {
            entry.pipelined_at_embargo = entry.pipelined;
        }
        let embargo = self.next_embargo;
        self.next_embargo += 1;
        self.embargoes.insert(embargo, question);
        self.write_own(&Message::Disembargo {
            target: Target::Answer(question),
            embargo,
        });
    }

    fn release_question(&mut self, position: u64, outcome: Settlement) {
        let Some(question) = self.tables.questions.remove(&position) else {
            return;
        };
        self.answer_drops.push(position);
        if let Some(promise) = question.promise {
            if let Some(target) = RemoteTarget::of(&promise) {
                let _ = target.resolution.set(outcome.clone());
            }
            self.tables.events.push_back(Event::Settled { promise, outcome });
        }
    }

    fn on_drop_exports(&mut self, positions: &[u64], deltas: &[u64]) -> Result<(), String> {
        if positions.len() != deltas.len() {
            return Err(protocol_error(format!(
                "DropExports has {} positions but {} deltas",
                positions.len(),
                deltas.len()
            )));
        }
        for (&position, &delta) in positions.iter().zip(deltas) {
            let Some(entry) = self.tables.exports.get_mut(&position) else {
                return Err(protocol_error(format!("DropExports of unknown export {position}")));
            };
            if delta == 0 || delta > entry.sent {
                return Err(protocol_error(format!(
                    "DropExports delta {delta} for export {position}, which was sent {} times",
                    entry.sent
                )));
            }
            entry.sent -= delta;
            if entry.sent > 0 {
                continue;
            }
            if entry.pinned {
                entry.interface_sent = false;
                continue;
            }
            if let Some(entry) = self.tables.exports.remove(&position) {
                self.tables.export_positions.remove(&entry.reference);
                if let Some(answer) = entry.answer.and_then(|answer| self.tables.answers.get_mut(&answer)) {
                    answer.exported_as = None;
                }
            }
        }
        Ok(())
    }

    fn on_drop_answers(&mut self, positions: &[u64]) -> Result<(), String> {
        for &position in positions {
            let Some(answer) = self.tables.answers.remove(&position) else {
                return Err(protocol_error(format!("DropAnswers of unknown answer {position}")));
            };
            if let AnswerState::Pending(queue) = answer.state {
                let reason = error_value(format!("answer {position} was dropped before it settled"));
                // Whoever holds a promise for it learns it will never settle.
                if let Some(promise) = answer.promise {
                    self.settle_made_promise(promise, Err(reason.clone()));
                }
                if let Some(export) = answer.exported_as
                    && let Some(entry) = self.tables.exports.get_mut(&export)
                {
                    entry.resolved = Some(Err(reason.clone()));
                    let outcome = Err(reason.clone());
                    self.write_settlement(SettlementMessage::Resolve, export, &outcome);
                }
                for pending in queue {
                    if let Some(answer) = pending.answer() {
                        self.work.push_back(Work::Settle {
                            answer,
                            outcome: Err(reason.clone()),
                        });
                    }
                }
            }
        }
        Ok(())
    }

    // ----- routing and settlement -----

    fn new_question(&mut self) -> (u64, Reference) {
        let position = self.next_question;
        self.next_question += 1;
        let promise = Reference::new(
            self.tables.promise_interface.clone(),
            RemoteTarget::new(self.tables.id, position, RemoteKind::Question),
        );
        self.tables.questions.insert(
            position,
            Question {
                promise: Some(promise.clone()),
                forward: None,
                pipelined: 0,
                returned: None,
                pipelined_at_embargo: 0,
            },
        );
        (position, promise)
    }

    /// Where a send from the runtime to `target` goes on the wire.
    fn outbound_target(&mut self, target: &Value) -> Result<Target, SendError> {
        let mut current = target.clone();
        for _ in 0..MAX_REDIRECTS {
            match self.next_hop(&current) {
                Route::Wire(target) => return Ok(target),
                Route::Follow(value) => current = value,
                Route::Reject(reason) => return Err(SendError::Rejected { reason }),
                Route::QueueOn(_) | Route::Local => {
                    return Err(SendError::NotRemote { target: current });
                }
            }
        }
        Err(SendError::NotRemote { target: current })
    }

    fn next_hop(&mut self, value: &Value) -> Route {
        let Some(target) = reference_of(value).and_then(|reference| self.tables.ours(reference)) else {
            return Route::Local;
        };
        let position = target.position;
        match target.kind {
            RemoteKind::Presence => {
                if self.tables.imports.contains_key(&position) {
                    return Route::Wire(Target::Export(position));
                }
                return Route::Reject(error_value(format!(
                    "presence {position} was dropped from this session"
                )));
            }
            RemoteKind::Promise => {
                if target.resolution.get().is_none() && self.tables.imports.contains_key(&position) {
                    return Route::Wire(Target::Export(position));
                }
            }
            RemoteKind::Question => {
                if let Some(question) = self.tables.questions.get_mut(&position) {
                    question.pipelined += 1;
                    return Route::Wire(Target::Answer(position));
                }
            }
            RemoteKind::Answer => match self.tables.answers.get(&position).map(|answer| &answer.state) {
                Some(AnswerState::Pending(_)) => return Route::QueueOn(position),
                Some(AnswerState::Settled(Ok(value))) => return Route::Follow(value.clone()),
                Some(AnswerState::Settled(Err(reason))) => return Route::Reject(reason.clone()),
                None => {}
            },
        }
        match target.resolution.get() {
            Some(Ok(value)) => Route::Follow(value.clone()),
            Some(Err(reason)) => Route::Reject(reason.clone()),
            None => Route::Reject(error_value(format!(
                "{:?} {position} is no longer reachable",
                target.kind
            ))),
        }
    }

    fn drain_work(&mut self) {
        while let Some(work) = self.work.pop_front() {
            if self.is_closed() {
                self.work.clear();
                return;
            }
            match work {
                Work::Settle { answer, outcome } => {
                    let _ = self.settle_answer(answer, outcome);
                }
                Work::Route { target, pending } => self.route(target, pending),
            }
        }
    }

    fn settle_answer(&mut self, id: AnswerId, outcome: Settlement) -> Result<(), SettleError> {
        let Some(answer) = self
            .tables
            .answers
            .get_mut(&id.position)
            .filter(|answer| answer.generation == id.generation)
        else {
            return Ok(());
        };
        if matches!(answer.state, AnswerState::Settled(_)) {
            return Err(SettleError::AnswerAlreadySettled(id.position));
        }
        let queue = match std::mem::replace(&mut answer.state, AnswerState::Settled(outcome.clone())) {
            AnswerState::Pending(queue) => queue,
            AnswerState::Settled(_) => Vec::new(),
        };
        let promise = answer.promise.clone();
        let exported_as = answer.exported_as;
        self.write_settlement(SettlementMessage::Return, id.position, &outcome);
        if let Some(promise) = promise {
            if let Some(target) = RemoteTarget::of(&promise) {
                let _ = target.resolution.set(outcome.clone());
            }
            self.tables.events.push_back(Event::Settled {
                promise,
                outcome: outcome.clone(),
            });
        }
        if let Some(position) = exported_as
            && let Some(entry) = self.tables.exports.get_mut(&position)
            && entry.resolved.is_none()
        {
            entry.resolved = Some(outcome.clone());
            self.write_settlement(SettlementMessage::Resolve, position, &outcome);
        }
        for pending in queue {
            self.work.push_back(Work::Route {
                target: outcome.clone(),
                pending,
            });
        }
        Ok(())
    }

    fn route(&mut self, target: Settlement, pending: Pending) {
        let mut current = match target {
            Ok(value) => value,
            Err(reason) => return self.reject_pending(pending, reason),
        };
        for _ in 0..MAX_REDIRECTS {
            match self.next_hop(&current) {
                Route::Wire(target) => return self.forward(target, pending),
                Route::Follow(value) => current = value,
                Route::Reject(reason) => return self.reject_pending(pending, reason),
                Route::QueueOn(position) => {
                    if let Some(Answer {
                        state: AnswerState::Pending(queue),
                        ..
                    }) = self.tables.answers.get_mut(&position)
                    {
                        if queue.len() >= self.limits.max_queued_per_answer {
                            let reason = limit_exceeded("max_queued_per_answer", self.limits.max_queued_per_answer);
                            return self.close_with(reason, false);
                        }
                        queue.push(pending);
                    }
                    return;
                }
                Route::Local => {
                    self.tables.events.push_back(pending.into_event(current));
                    return;
                }
            }
        }
        self.reject_pending(pending, error_value("too many promise redirections"));
    }

    fn reject_pending(&mut self, pending: Pending, reason: Value) {
        if let Some(answer) = pending.answer() {
            self.work.push_back(Work::Settle {
                answer,
                outcome: Err(reason),
            });
        }
    }

    /// Sends a delivery queued on one of our answers on to the peer, with
    /// a question of our own whose result settles that answer.
    fn forward(&mut self, target: Target, pending: Pending) {
        let answer = pending.answer();
        let question = answer.map(|answer| {
            let position = self.next_question;
            self.next_question += 1;
            self.tables.questions.insert(
                position,
                Question {
                    promise: None,
                    forward: Some(answer),
                    pipelined: 0,
                    returned: None,
                    pipelined_at_embargo: 0,
                },
            );
            position
        });
        let written = match &pending {
            Pending::Deliver { method, args, .. } => {
                self.body.clear();
                match self
                    .marshaller
                    .encode_list(args, &mut self.tables, &self.limits.marshal, &mut self.body)
                {
                    Ok(()) => {
                        let message = Message::Deliver {
                            target,
                            method,
                            args: Body(&self.body),
                            answer: question,
                            resolver: None,
                        };
                        codec::write_frame(&message, self.limits.max_frame_bytes, &mut self.outbound)
                            .map_err(|error| error.to_string())
                    }
                    Err(error) => Err(error.to_string()),
                }
            }
            Pending::Get { field, .. } => {
                let message = Message::Get {
                    target,
                    field,
                    answer: question.unwrap_or(0),
                };
                codec::write_frame(&message, self.limits.max_frame_bytes, &mut self.outbound)
                    .map_err(|error| error.to_string())
            }
        };
        match written {
            Ok(_) => self.flush_resolves(),
            Err(problem) => {
                if let Some(position) = question {
                    self.tables.questions.remove(&position);
                }
                self.reject_pending(pending, error_value(format!("could not forward the call: {problem}")));
            }
        }
    }

    // ----- output -----

    /// Writes a message of our own making (no body); it always fits.
    fn write_own(&mut self, message: &Message<'_>) {
        let _ = codec::write_frame(message, self.limits.max_frame_bytes, &mut self.outbound);
    }

    /// Writes a `Return` or `Resolve`; a settlement that cannot be
    /// marshalled or framed is sent as a rejection saying why.
    fn write_settlement(&mut self, kind: SettlementMessage, position: u64, outcome: &Settlement) {
        let (value, fulfilled) = match outcome {
            Ok(value) => (value, true),
            Err(reason) => (reason, false),
        };
        self.body.clear();
        let problem = match self
            .marshaller
            .encode(value, &mut self.tables, &self.limits.marshal, &mut self.body)
        {
            Ok(()) => match self.write_settlement_body(kind, position, fulfilled) {
                Ok(()) => None,
                Err(error) => Some(error.to_string()),
            },
            Err(error) => Some(error.to_string()),
        };
        if let Some(problem) = problem {
            self.body.clear();
            let what = if fulfilled { "result" } else { "rejection" };
            let error = error_value(format!("could not send the {what}: {problem}"));
            if self
                .marshaller
                .encode(&error, &mut NoSlots, &self.limits.marshal, &mut self.body)
                .is_ok()
            {
                let _ = self.write_settlement_body(kind, position, false);
            }
        }
        self.flush_resolves();
    }

    fn write_settlement_body(
        &mut self,
        kind: SettlementMessage,
        position: u64,
        fulfilled: bool,
    ) -> Result<(), FrameError> {
        let body = Body(&self.body);
        let outcome = if fulfilled {
            Outcome::Fulfilled(body)
        } else {
            Outcome::Rejected(body)
        };
        let message = match kind {
            SettlementMessage::Return => Message::Return {
                answer: position,
                outcome,
            },
            SettlementMessage::Resolve => Message::Resolve {
                promise: position,
                outcome,
            },
        };
        codec::write_frame(&message, self.limits.max_frame_bytes, &mut self.outbound).map(|_| ())
    }

    /// Sends `Resolve` for settled exported promises that the last message
    /// carried, so that an importer who had dropped them learns again.
    fn flush_resolves(&mut self) {
        if self.tables.resolve_after.is_empty() {
            return;
        }
        let mut done: Vec<u64> = Vec::new();
        while let Some(position) = self.tables.resolve_after.pop() {
            if done.contains(&position) {
                continue;
            }
            done.push(position);
            let Some(outcome) = self
                .tables
                .exports
                .get(&position)
                .and_then(|entry| entry.resolved.clone())
            else {
                continue;
            };
            let (value, fulfilled) = match &outcome {
                Ok(value) => (value, true),
                Err(reason) => (reason, false),
            };
            self.body.clear();
            if self
                .marshaller
                .encode(value, &mut self.tables, &self.limits.marshal, &mut self.body)
                .is_ok()
            {
                let _ = self.write_settlement_body(SettlementMessage::Resolve, position, fulfilled);
            }
        }
    }

    fn flush_drops(&mut self) {
        if self.is_closed() {
            self.export_drops.clear();
            self.answer_drops.clear();
            return;
        }
        let export_drops = std::mem::take(&mut self.export_drops);
        for chunk in export_drops.chunks(MAX_POSITIONS_PER_MESSAGE) {
            self.scratch_positions.clear();
            self.scratch_deltas.clear();
            for &(position, delta) in chunk {
                self.scratch_positions.push(position);
                self.scratch_deltas.push(delta);
            }
            let message = Message::DropExports {
                positions: Positions::borrowed(&self.scratch_positions),
                deltas: Positions::borrowed(&self.scratch_deltas),
            };
            let _ = codec::write_frame(&message, self.limits.max_frame_bytes, &mut self.outbound);
        }
        self.export_drops = export_drops;
        self.export_drops.clear();
        let answer_drops = std::mem::take(&mut self.answer_drops);
        for chunk in answer_drops.chunks(MAX_POSITIONS_PER_MESSAGE) {
            let message = Message::DropAnswers {
                positions: Positions::borrowed(chunk),
            };
            let _ = codec::write_frame(&message, self.limits.max_frame_bytes, &mut self.outbound);
        }
        self.answer_drops = answer_drops;
        self.answer_drops.clear();
    }

    fn close_with(&mut self, reason: String, by_peer: bool) {
        if self.is_closed() {
            return;
        }
        if !by_peer {
            self.export_drops.clear();
            self.answer_drops.clear();
            // Cut the reason so that the Abort fits in a frame.
            let mut cut = reason.len().min(self.limits.max_frame_bytes.saturating_sub(16));
            while !reason.is_char_boundary(cut) {
                cut -= 1;
            }
            let message = Message::Abort {
                reason: reason.get(..cut).unwrap_or_default(),
            };
            self.write_own(&message);
        }
        let rejection = error_value(reason.as_str());
        let mut questions: Vec<(u64, Question)> = self.tables.questions.drain().collect();
        questions.sort_unstable_by_key(|(position, _)| *position);
        for (_, question) in questions {
            if let Some(promise) = question.promise {
                let outcome = question.returned.unwrap_or_else(|| Err(rejection.clone()));
                self.settle_made_promise(promise, outcome);
            }
        }
        let mut imports: Vec<(u64, Import)> = self.tables.imports.drain().collect();
        imports.sort_unstable_by_key(|(position, _)| *position);
        for (_, import) in imports {
            if RemoteTarget::of(&import.reference).map(RemoteTarget::kind) == Some(RemoteKind::Promise) {
                self.settle_made_promise(import.reference, Err(rejection.clone()));
            }
        }
        let mut answers: Vec<(u64, Answer)> = self.tables.answers.drain().collect();
        answers.sort_unstable_by_key(|(position, _)| *position);
        for (_, answer) in answers {
            if let (Some(promise), AnswerState::Pending(_)) = (answer.promise, &answer.state) {
                self.settle_made_promise(promise, Err(rejection.clone()));
            }
        }
        self.tables.exports.clear();
        self.tables.export_positions.clear();
        self.tables.forgotten_interfaces.clear();
        self.tables.resolve_after.clear();
        self.work.clear();
        self.embargoes.clear();
        self.decoder = FrameDecoder::new(0);
        self.bootstrap = None;
        self.tables.events.push_back(Event::Aborted {
            reason: reason.clone(),
            by_peer,
        });
        self.state = State::Closed { reason };
    }

    fn settle_made_promise(&mut self, promise: Reference, outcome: Settlement) {
        if let Some(target) = RemoteTarget::of(&promise) {
            let _ = target.resolution.set(outcome.clone());
        }
        self.tables.events.push_back(Event::Settled { promise, outcome });
    }

    // ----- inspection, for runtimes and tests -----

    /// Exports held for the peer (including the bootstrap object).
    pub fn export_count(&self) -> usize {
        self.tables.exports.len()
    }

    /// Whether `reference` is currently exported to the peer.
    pub fn is_exported(&self, reference: &Reference) -> bool {
        self.tables.export_positions.contains_key(reference)
    }

    pub fn import_count(&self) -> usize {
        self.tables.imports.len()
    }

    /// Our calls whose answers the peer holds and has not yet returned
    /// (or whose disembargo is in flight).
    pub fn question_count(&self) -> usize {
        self.tables.questions.len()
    }

    /// The peer's calls we hold answers for.
    pub fn answer_count(&self) -> usize {
        self.tables.answers.len()
    }
}
