//! The CapTP session state machine: tables (exports, imports, questions,
//! answers), promise pipelining, settlement, GC with wire deltas,
//! disembargo, limits and abort. See the [module docs](super) for how a
//! runtime drives it.
//!
//! This module is the public face: [`Session`] and the calls a runtime makes
//! on it, the references it hands out ([`RemoteTarget`]), its [`Event`]s and
//! errors, and abort. The machinery behind it is split by what it owns:
//!
//! - `tables`: exports, imports, questions and answers, and the slot
//!   mapping between references and wire positions;
//! - `inbound`: what each message from the peer does;
//! - `routing`: where deliveries go (pipelining, promise redirection,
//!   forwarding), settling answers, and disembargo for E-order;
//! - `outbound`: writing calls, `Return` and `Resolve`;
//! - `gc`: `DropExports` with wire deltas and `DropAnswers`, both ways.

mod gc;
mod inbound;
mod outbound;
mod routing;
mod tables;

use std::collections::VecDeque;
use std::sync::{Arc, OnceLock};

use crate::captp::codec::{self, FrameDecoder, FrameError};
use crate::captp::limits::Limits;
use crate::captp::message::Message;
use crate::marshal::{MarshalError, Marshaller};
pub use crate::value::Settlement;
use crate::value::{ErrorValue, Reference, Value};

use self::outbound::SettlementMessage;
use self::routing::Work;
use self::tables::{Answer, AnswerState, Import, OwnKeyMap, Question, Tables};

/// Answer drops that go out on their own, without waiting for other
/// output: bounds how many settled answers an idle asker leaves the peer
/// holding.
pub const DEFERRED_ANSWER_DROPS: usize = 64;

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
    /// A method name the peer calls often is shared between its calls.
    Deliver {
        target: Value,
        method: Arc<str>,
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
    /// The peer has not answered `limit` of our calls yet.
    #[error("too many calls in flight on this CapTP session: the peer has not answered {limit} of them yet")]
    TooManyQuestions { limit: usize },
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
    calls_received: u64,
    next_embargo: u64,
    embargoes: OwnKeyMap<u64, u64>,
    export_drops: Vec<(u64, u64)>,
    /// Answers we no longer need. They ride with the next output, or go
    /// on their own once [`DEFERRED_ANSWER_DROPS`] gather or the runtime
    /// asks ([`Session::flush_deferred_drops`]): a `DropAnswers` of its
    /// own after every `Return` would double an awaited call's writes
    /// and wake the peer for nothing.
    answer_drops: Vec<u64>,
    /// Imports left after the last scan for unheld ones (see
    /// [`Session::is_gc_due`]).
    imports_after_scan: usize,
    scratch_positions: Vec<u64>,
    scratch_deltas: Vec<u64>,
    /// Method names of the peer's recent calls (see `Session::method_name`).
    method_names: Vec<Arc<str>>,
    /// What callers are told when the peer aborts, if not the peer's own
    /// reason (see [`Session::replace_peer_abort_reasons`]).
    peer_abort_text: Option<Arc<str>>,
}

fn protocol_error(problem: impl std::fmt::Display) -> String {
    format!("CapTP protocol error: {problem}")
}

fn limit_exceeded(name: &str, limit: usize) -> String {
    format!("CapTP limit exceeded: {name} ({limit})")
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

impl Session {
    /// A new open session. `bootstrap` is the object the peer gets from
    /// `Bootstrap` (export position 0).
    pub fn new(id: SessionId, bootstrap: Option<Reference>, limits: Limits) -> Session {
        let tables = Tables::new(
            id,
            limits.remembered_interfaces,
            limits.max_table_entries,
            bootstrap.as_ref(),
        );
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
            calls_received: 0,
            next_embargo: 0,
            embargoes: OwnKeyMap::default(),
            export_drops: Vec::new(),
            answer_drops: Vec::new(),
            imports_after_scan: 0,
            scratch_positions: Vec::new(),
            scratch_deltas: Vec::new(),
            method_names: Vec::new(),
            peer_abort_text: None,
        }
    }

    /// When the peer aborts, rejects what is pending (and fails later
    /// sends) with `text` instead of the peer's reason. A peer's reason is
    /// its own text, which a hostile peer may aim at whoever catches the
    /// rejection; [`Event::Aborted`] still carries it, for the log.
    pub fn replace_peer_abort_reasons(&mut self, text: impl Into<Arc<str>>) {
        self.peer_abort_text = Some(text.into());
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

    /// Why the session ended, once it has, as callers are told.
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
        let (answer, promise) = self.new_question()?;
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
        let (answer, promise) = self.new_question()?;
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

    /// Reports that a call the session delivered returned `promise`, which
    /// the runtime will settle the answer to (with `answer`) once it
    /// settles. Meanwhile calls the peer pipelines on the answer go to
    /// `promise`, and the peer is told nothing: one `Return` with the
    /// final outcome instead of a `Return` with a promise and a `Resolve`.
    pub fn forward_answer(&mut self, answer: AnswerId, promise: Value) -> Result<(), SettleError> {
        if self.is_closed() {
            return Ok(());
        }
        let result = self.forward_pending_answer(answer, promise);
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
    /// the peer with the next transmit. A runtime that cannot tell when it
    /// lets go calls [`Session::drop_unheld`] instead.
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
                self.drop_import(position);
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

    /// Whether `poll_transmit` has bytes to give. Answer drops wait for
    /// other output (see [`Session::has_deferred_drops`]) until enough
    /// gather.
    pub fn has_transmit(&self) -> bool {
        !self.outbound.is_empty()
            || (!self.is_closed()
                && (!self.export_drops.is_empty() || self.answer_drops.len() >= DEFERRED_ANSWER_DROPS))
    }

    /// Bytes of output waiting for [`Session::poll_transmit`] (drops held
    /// back for other output not counted).
    pub fn transmit_len(&self) -> usize {
        self.outbound.len()
    }

    /// Whether answer drops wait for other output; a runtime sends them
    /// with [`Session::flush_deferred_drops`] when the session is idle,
    /// so the peer frees those answers within a bounded time.
    pub fn has_deferred_drops(&self) -> bool {
        !self.is_closed() && !self.answer_drops.is_empty()
    }

    /// Writes the deferred drops, so that `has_transmit` is true.
    pub fn flush_deferred_drops(&mut self) {
        self.flush_drops();
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
        // Taken out while its frames are handled, since they borrow it.
        let mut decoder = std::mem::take(&mut self.decoder);
        loop {
            let stop = match decoder.next_frame() {
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
            if stop {
                break;
            }
        }
        // A closed session keeps the empty decoder it was given.
        if !self.is_closed() {
            self.decoder = decoder;
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

    // ----- abort -----

    /// Ends the session (writing `Abort` unless the peer sent it) and
    /// settles everything still pending with the reason.
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
        let for_callers = match (&self.peer_abort_text, by_peer) {
            (Some(text), true) => text.to_string(),
            _ => reason.clone(),
        };
        let rejection = error_value(for_callers.as_str());
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
            if let (Some(promise), AnswerState::Pending(_) | AnswerState::Forwarded(_)) =
                (answer.promise, &answer.state)
            {
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
        self.tables.events.push_back(Event::Aborted { reason, by_peer });
        self.state = State::Closed { reason: for_callers };
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

    /// Calls (`Deliver`, `Get`, `Bootstrap`) the peer has sent since the
    /// session began; a runtime may pace its reads by it.
    pub fn calls_received(&self) -> u64 {
        self.calls_received
    }
}

/// Two sessions for the unit tests: Alice, with no bootstrap object, and
/// Bob, who offers one.
#[cfg(test)]
fn alice_and_bob() -> (Session, Session) {
    let alice = Session::new(SessionId(1), None, Limits::default());
    let bob = Session::new(
        SessionId(2),
        Some(Reference::detached("Alleged: Bob")),
        Limits::default(),
    );
    (alice, bob)
}
