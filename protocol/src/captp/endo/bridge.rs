//! The translation between Endo's CapTP and the engine's vocabulary: an
//! [`EndoBridge`] stands between a [`Session`](crate::captp::Session) and
//! a JavaScript peer, turning each netstring-framed Endo message into the
//! engine [`Message`] that means the same, and each engine message into
//! Endo's. The session does all the CapTP work (tables, pipelining,
//! settlement, GC, limits); the bridge keeps only what the two encodings
//! name differently.
//!
//! # How names map
//!
//! | Endo slot (as the peer writes it) | engine |
//! |---|---|
//! | `o+N`, `p+N`: the peer's export | import position `2N`, `2N+1` |
//! | `o-N`, `p-N`: our export named back | export position `N` |
//! | `q-N` in `questionID`, `target`, a body | answer position `N` |
//! | `q-N` in `answerID`: our question | question position `N` (`N ≥ 1`) |
//!
//! Our exports go out as `o+N`/`p+N` with `N` the engine's position (0 is
//! the bootstrap object); the peer's exports, numbered separately for
//! objects and promises, share the engine's one import space by parity.
//! Send-only calls, which Endo's CapTP lacks, go out as calls whose
//! question is `q-0` (a position the engine never uses); their returns are
//! dropped here.
//!
//! # Where the semantics differ
//!
//! - Endo has no disembargo: the bridge answers the engine's `Disembargo`
//!   itself, at once, so a call to one of our objects that came back from
//!   a pipelined question may overtake calls still pipelined on it (as it
//!   may between two `@endo/captp` peers).
//! - A function call (`[null, args]`) is delivered as a call of the method
//!   named by the empty string, which no Capstan object has: it rejects.
//!   A method named by a symbol is called by the symbol's passable name
//!   (`@@asyncIterator`).
//! - `CTP_DROP`'s `decRefs` is clamped to the sends the peer could have
//!   seen: `@endo/captp` also counts a call's `target` against its own
//!   imports, so its counts can exceed ours.
//! - What Endo's capdata cannot carry (byte arrays; a promise for one of
//!   our unanswered questions, which its decoder cannot name) is not sent:
//!   the call settles rejected with the reason, and a return or resolution
//!   is sent as a rejection instead.
//! - `Trap` (synchronous) calls are refused: the session ends.
//!
//! Anything malformed from the peer ends the session with a reason: the
//! engine gets `Abort` and the peer `CTP_DISCONNECT`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::capdata::{self, CapData, CapDataError, SlotText};
use super::message::{EndoMessage, EndoOutcome, EndoSlot, SlotLetter};
use super::netstring::{NetstringDecoder, NetstringError, write_netstring};
use crate::captp::codec::{self, FrameDecoder};
use crate::captp::limits::Limits;
use crate::captp::message::{Body, Message, Outcome, Positions, Target};
use crate::marshal::{self, DecodeSlots, Descriptor, EncodeSlots, MarshalError, Marshaller, RefStyle, SlotOut};
use crate::value::{ErrorValue, Reference, Value};

/// The question id of send-only calls.
const SEND_ONLY_QUESTION: u64 = 0;

/// Interface names a remotable may carry, as `@endo/pass-style` checks.
fn valid_iface(iface: &str) -> bool {
    iface == "Remotable" || iface.starts_with("Alleged: ") || iface.starts_with("DebugName: ")
}

/// A slot of a body while it is translated: what the engine calls it, and
/// the interface sent with it.
#[derive(Debug)]
struct BridgeSlot {
    descriptor: Descriptor,
    iface: Option<Arc<str>>,
}

fn slot_reference(descriptor: Descriptor, iface: Option<&str>) -> Reference {
    let iface = iface.map(Arc::from);
    let name = iface.clone().unwrap_or_else(|| Arc::from("Remotable"));
    Reference::new(name, BridgeSlot { descriptor, iface })
}

fn bridge_slot(reference: &Reference) -> Result<&BridgeSlot, MarshalError> {
    reference
        .target::<BridgeSlot>()
        .ok_or_else(|| MarshalError::Slot("a reference that did not come from a body".into()))
}

/// Engine bodies are decoded into values whose references say their
/// descriptor.
struct EngineSlots;

impl DecodeSlots for EngineSlots {
    fn reference(
        &mut self,
        descriptor: Descriptor,
        _: RefStyle,
        iface: Option<&str>,
    ) -> Result<Reference, MarshalError> {
        Ok(slot_reference(descriptor, iface))
    }
}

/// Values decoded from Endo bodies are encoded for the engine with the
/// descriptors their references carry.
struct PeerSlots;

impl EncodeSlots for PeerSlots {
    fn slot(&mut self, reference: &Reference, _: RefStyle) -> Result<SlotOut, MarshalError> {
        let slot = bridge_slot(reference)?;
        Ok(SlotOut {
            descriptor: slot.descriptor,
            send_interface: slot.iface.is_some() && matches!(slot.descriptor, Descriptor::ImportObject(_)),
        })
    }
}

/// Why a peer's message was refused.
#[derive(Debug, thiserror::Error)]
enum PeerError {
    #[error(transparent)]
    Message(#[from] super::message::EndoMessageError),
    #[error("{0}")]
    Body(#[from] CapDataError),
    #[error("{0}")]
    Marshal(#[from] MarshalError),
    #[error("{0}")]
    Protocol(String),
}

fn protocol(problem: impl Into<String>) -> PeerError {
    PeerError::Protocol(problem.into())
}

/// Stands between an engine session and an Endo CapTP peer. Feed it the
/// peer's bytes and the session's output; take out bytes for each.
pub struct EndoBridge {
    limits: Limits,
    peer_frames: NetstringDecoder,
    engine_frames: FrameDecoder,
    to_peer: Vec<u8>,
    to_engine: Vec<u8>,
    marshaller: Marshaller,
    /// For each of our exports: bodies that carried it to the peer and
    /// that no `CTP_DROP` has acknowledged yet (the engine's count).
    export_sends: HashMap<u64, u64>,
    /// Our questions the bridge settled itself (their call could not be
    /// written): the peer never heard of them, so their drops stay here.
    refused_questions: HashSet<u64>,
    epoch: u64,
    closed: Option<String>,
}

impl EndoBridge {
    /// A bridge bounding the peer's frames and bodies by `limits` (those
    /// of the session it serves).
    pub fn new(limits: Limits) -> EndoBridge {
        EndoBridge {
            peer_frames: NetstringDecoder::new(limits.max_frame_bytes),
            engine_frames: FrameDecoder::new(limits.max_frame_bytes),
            limits,
            to_peer: Vec::new(),
            to_engine: Vec::new(),
            marshaller: Marshaller::new(),
            export_sends: HashMap::new(),
            refused_questions: HashSet::new(),
            epoch: 0,
            closed: None,
        }
    }

    /// Why the bridge stopped translating, once it has.
    pub fn close_reason(&self) -> Option<&str> {
        self.closed.as_deref()
    }

    /// Bytes read from the Endo peer.
    pub fn handle_peer_bytes(&mut self, bytes: &[u8]) {
        if self.closed.is_some() {
            return;
        }
        self.peer_frames.feed(bytes);
        loop {
            let mut frames = std::mem::replace(&mut self.peer_frames, NetstringDecoder::new(0));
            let outcome = match frames.next_frame() {
                Ok(Some(frame)) => match std::str::from_utf8(frame) {
                    Ok(text) => self
                        .on_peer_message(text)
                        .map(|()| true)
                        .map_err(|error| format!("Endo CapTP protocol error: {error}")),
                    Err(_) => Err("Endo CapTP protocol error: a message is not UTF-8".to_string()),
                },
                Ok(None) => Ok(false),
                Err(error @ NetstringError::TooLarge { .. }) => Err(format!("CapTP limit exceeded: {error}")),
                Err(error) => Err(format!("Endo CapTP protocol error: {error}")),
            };
            self.peer_frames = frames;
            match outcome {
                Ok(true) if self.closed.is_none() => continue,
                Ok(_) => break,
                Err(reason) => {
                    self.abort(reason);
                    break;
                }
            }
        }
    }

    /// Bytes the engine session wrote (from `Session::poll_transmit`).
    pub fn handle_engine_bytes(&mut self, bytes: &[u8]) {
        if self.closed.is_some() {
            return;
        }
        self.engine_frames.feed(bytes);
        loop {
            let mut frames = std::mem::take(&mut self.engine_frames);
            let next = match frames.next_frame() {
                Ok(Some(frame)) => match Message::decode(frame) {
                    Ok(message) => {
                        self.on_engine_message(&message);
                        true
                    }
                    Err(error) => {
                        self.abort(format!("the session wrote a malformed message: {error}"));
                        false
                    }
                },
                Ok(None) => false,
                Err(error) => {
                    self.abort(format!("the session wrote a malformed frame: {error}"));
                    false
                }
            };
            self.engine_frames = frames;
            if !next || self.closed.is_some() {
                break;
            }
        }
    }

    /// Takes the netstrings waiting for the peer.
    pub fn poll_to_peer(&mut self, out: &mut Vec<u8>) {
        take_into(&mut self.to_peer, out);
    }

    /// Takes the engine frames waiting for the session
    /// (`Session::handle_bytes`).
    pub fn poll_to_engine(&mut self, out: &mut Vec<u8>) {
        take_into(&mut self.to_engine, out);
    }

    /// Ends both sides with `reason`.
    fn abort(&mut self, reason: String) {
        if self.closed.is_some() {
            return;
        }
        self.engine(&Message::Abort { reason: &reason });
        self.peer(&EndoMessage::Disconnect {
            epoch: self.epoch,
            reason: reason.clone(),
        });
        self.closed = Some(reason);
    }

    fn engine(&mut self, message: &Message<'_>) {
        if let Err(error) = codec::write_frame(message, self.limits.max_frame_bytes, &mut self.to_engine) {
            // Only a body over the frame bound can fail here; the session
            // is told why instead.
            let reason = format!("a message from the Endo peer does not fit in a frame: {error}");
            let _ = codec::write_frame(&Message::Abort { reason: &reason }, usize::MAX, &mut self.to_engine);
            self.closed = Some(reason);
        }
    }

    fn peer(&mut self, message: &EndoMessage) {
        write_netstring(message.encode().as_bytes(), &mut self.to_peer);
    }

    // ----- from the peer -----

    fn on_peer_message(&mut self, text: &str) -> Result<(), PeerError> {
        let message = EndoMessage::decode(text, self.limits.marshal.max_slots)?;
        match message {
            EndoMessage::Bootstrap { question, .. } => {
                let answer = peer_question(question)?;
                self.engine(&Message::Bootstrap { answer });
            }
            EndoMessage::Call {
                question,
                target,
                method,
                trap,
                ..
            } => {
                if trap {
                    return Err(protocol("Trap (synchronous) calls are not served"));
                }
                let answer = peer_question(question)?;
                let target = peer_target(target)?;
                self.on_peer_call(answer, target, &method)?;
            }
            EndoMessage::Return { answer, outcome, .. } => {
                if answer.letter != SlotLetter::Question || answer.plus {
                    return Err(protocol(format!("answerID {answer} is not one of our questions")));
                }
                // The body is decoded even for a send-only call: it is
                // checked like any other.
                let (fulfilled, body) = self.peer_outcome(&outcome)?;
                if answer.number != SEND_ONLY_QUESTION {
                    let outcome = engine_outcome(fulfilled, &body);
                    self.engine(&Message::Return {
                        answer: answer.number,
                        outcome,
                    });
                }
            }
            EndoMessage::Resolve { promise, outcome } => {
                if promise.letter != SlotLetter::Promise || promise.plus {
                    return Err(protocol(format!("promiseID {promise} is not a promise we import")));
                }
                let (fulfilled, body) = self.peer_outcome(&outcome)?;
                self.engine(&Message::Resolve {
                    promise: import_position(promise.reversed())?,
                    outcome: engine_outcome(fulfilled, &body),
                });
            }
            EndoMessage::Drop { slot, dec_refs, .. } => self.on_peer_drop(slot, dec_refs)?,
            EndoMessage::Disconnect { reason, .. } => {
                let reason = format!("the Endo peer disconnected: {reason}");
                self.engine(&Message::Abort { reason: &reason });
                self.closed = Some(reason);
            }
        }
        Ok(())
    }

    fn on_peer_call(&mut self, answer: u64, target: Target, method: &CapData) -> Result<(), PeerError> {
        let call = self.decode_peer_body(method)?;
        let parts = call
            .as_array()
            .ok_or_else(|| protocol("a call's method must be an array"))?;
        let name = match parts.first() {
            Some(Value::String(name)) => name.to_string(),
            Some(Value::Symbol(name)) => name.to_string(),
            Some(Value::Null) if parts.len() == 2 => String::new(),
            _ => return Err(protocol("a call's method must start with its name")),
        };
        match parts.get(1) {
            None => self.engine(&Message::Get {
                target,
                field: &name,
                answer,
            }),
            Some(Value::Array(args)) if parts.len() == 2 => {
                let mut body = Vec::new();
                self.marshaller
                    .encode_list(args, &mut PeerSlots, &self.limits.marshal, &mut body)?;
                self.engine(&Message::Deliver {
                    target,
                    method: &name,
                    args: Body(&body),
                    answer: Some(answer),
                    resolver: None,
                });
            }
            _ => return Err(protocol("a call's arguments must be an array")),
        }
        Ok(())
    }

    fn on_peer_drop(&mut self, slot: EndoSlot, dec_refs: u64) -> Result<(), PeerError> {
        if slot.plus {
            return Err(protocol(format!("Cannot drop non-exported {slot}")));
        }
        match slot.letter {
            SlotLetter::Object | SlotLetter::Promise => {
                let position = slot.number;
                let sent = self.export_sends.get(&position).copied().unwrap_or(0);
                let delta = dec_refs.min(sent);
                if delta == 0 {
                    return Ok(());
                }
                if delta == sent {
                    self.export_sends.remove(&position);
                } else {
                    self.export_sends.insert(position, sent - delta);
                }
                self.engine(&Message::DropExports {
                    positions: Positions::from(vec![position]),
                    deltas: Positions::from(vec![delta]),
                });
            }
            SlotLetter::Question => self.engine(&Message::DropAnswers {
                positions: Positions::from(vec![slot.number]),
            }),
            SlotLetter::Trap => return Err(protocol(format!("Cannot drop {slot}"))),
        }
        Ok(())
    }

    /// Decodes a peer body and re-encodes it for the engine.
    fn peer_outcome(&mut self, outcome: &EndoOutcome) -> Result<(bool, Vec<u8>), PeerError> {
        let (fulfilled, capdata) = match outcome {
            EndoOutcome::Fulfilled(capdata) => (true, capdata),
            EndoOutcome::Rejected(capdata) => (false, capdata),
        };
        let value = self.decode_peer_body(capdata)?;
        let mut body = Vec::new();
        self.marshaller
            .encode(&value, &mut PeerSlots, &self.limits.marshal, &mut body)?;
        Ok((fulfilled, body))
    }

    fn decode_peer_body(&self, capdata: &CapData) -> Result<Value, PeerError> {
        let slots = &capdata.slots;
        let mut resolve = |index: usize, iface: Option<&str>| -> Result<Value, String> {
            let text = slots.get(index).ok_or("no such slot")?;
            let slot = EndoSlot::parse(text).map_err(|error| error.to_string())?;
            let (descriptor, style) = peer_descriptor(slot)?;
            if let Some(iface) = iface
                && !valid_iface(iface)
            {
                return Err(format!(
                    "iface {iface:?} must be \"Remotable\" or begin with \"Alleged: \" or \"DebugName: \""
                ));
            }
            let reference = slot_reference(descriptor, iface);
            Ok(match style {
                RefStyle::Remotable => Value::Remotable(reference),
                RefStyle::Promise => Value::Promise(reference),
            })
        };
        Ok(capdata::decode(
            &capdata.body,
            slots.len(),
            &self.limits.marshal,
            &mut resolve,
        )?)
    }

    // ----- from the engine -----

    fn on_engine_message(&mut self, message: &Message<'_>) {
        let epoch = self.epoch;
        match message {
            Message::Bootstrap { answer } => self.peer(&EndoMessage::Bootstrap {
                epoch,
                question: our_question(Some(*answer)),
            }),
            Message::Deliver {
                target,
                method,
                args,
                answer,
                ..
            } => {
                let call = marshal::decode(args.0, &mut EngineSlots, &self.limits.marshal)
                    .map(|args| Value::array([Value::from(*method), args]));
                self.engine_call(*target, call, *answer);
            }
            Message::Get { target, field, answer } => {
                self.engine_call(*target, Ok(Value::array([Value::from(*field)])), Some(*answer));
            }
            Message::Return { answer, outcome } => {
                let outcome = self.endo_outcome(outcome);
                self.peer(&EndoMessage::Return {
                    epoch,
                    answer: EndoSlot::new(SlotLetter::Question, false, *answer),
                    outcome,
                });
            }
            Message::Resolve { promise, outcome } => {
                let outcome = self.endo_outcome(outcome);
                self.peer(&EndoMessage::Resolve {
                    promise: EndoSlot::new(SlotLetter::Promise, false, *promise),
                    outcome,
                });
            }
            Message::DropExports { positions, deltas } => {
                for (&position, &delta) in positions.as_slice().iter().zip(deltas.as_slice()) {
                    self.peer(&EndoMessage::Drop {
                        slot: import_slot(position),
                        dec_refs: delta,
                        epoch,
                    });
                }
            }
            Message::DropAnswers { positions } => {
                for &position in positions.as_slice() {
                    if self.refused_questions.remove(&position) {
                        continue;
                    }
                    self.peer(&EndoMessage::Drop {
                        slot: EndoSlot::new(SlotLetter::Question, false, position),
                        dec_refs: 0,
                        epoch,
                    });
                }
            }
            Message::Abort { reason } => {
                self.peer(&EndoMessage::Disconnect {
                    epoch,
                    reason: (*reason).to_owned(),
                });
                self.closed = Some((*reason).to_owned());
            }
            // Endo has no disembargo: reply at once (see the module docs).
            Message::Disembargo { embargo, .. } => self.engine(&Message::DisembargoReply { embargo: *embargo }),
            Message::DisembargoReply { .. } => {}
        }
    }

    /// Sends a call (`[method, args]` or `[field]`), or if it cannot be
    /// written in capdata, settles its question rejected.
    fn engine_call(&mut self, target: Target, call: Result<Value, MarshalError>, answer: Option<u64>) {
        let refused_target = matches!(target, Target::Answer(position) if self.refused_questions.contains(&position));
        let target = match target {
            Target::Export(position) => import_slot(position),
            Target::Answer(position) => EndoSlot::new(SlotLetter::Question, false, position),
        };
        let method = if refused_target {
            Err("the call it was pipelined on could not be sent".to_string())
        } else {
            call.map_err(|error| error.to_string())
                .and_then(|call| self.encode_for_peer(&call))
        };
        match method {
            Ok(method) => self.peer(&EndoMessage::Call {
                epoch: self.epoch,
                question: our_question(answer),
                target,
                method,
                trap: false,
            }),
            Err(reason) => {
                if let Some(answer) = answer {
                    self.refused_questions.insert(answer);
                    let body = self.error_body(&reason);
                    self.engine(&Message::Return {
                        answer,
                        outcome: Outcome::Rejected(Body(&body)),
                    });
                }
            }
        }
    }

    fn endo_outcome(&mut self, outcome: &Outcome<'_>) -> EndoOutcome {
        let (fulfilled, body) = match outcome {
            Outcome::Fulfilled(body) => (true, body),
            Outcome::Rejected(body) => (false, body),
        };
        let encoded = marshal::decode(body.0, &mut EngineSlots, &self.limits.marshal)
            .map_err(|error| error.to_string())
            .and_then(|value| self.encode_for_peer(&value));
        match (encoded, fulfilled) {
            (Ok(capdata), true) => EndoOutcome::Fulfilled(capdata),
            (Ok(capdata), false) => EndoOutcome::Rejected(capdata),
            (Err(reason), _) => EndoOutcome::Rejected(plain_error_capdata(&reason)),
        }
    }

    /// Encodes an engine value for the peer, counting the sends of our
    /// exports; if it cannot be written, the engine's counts for the
    /// exports it carried are given back.
    fn encode_for_peer(&mut self, value: &Value) -> Result<CapData, String> {
        let mut carried: Vec<u64> = Vec::new();
        let mut slot_for = |reference: &Reference, _: RefStyle| -> Result<SlotText, String> {
            let slot = bridge_slot(reference).map_err(|error| error.to_string())?;
            let iface = slot.iface.as_deref().map(|iface| {
                if valid_iface(iface) {
                    iface.to_owned()
                } else {
                    format!("Alleged: {iface}")
                }
            });
            let slot_text = match slot.descriptor {
                Descriptor::ImportObject(position) => {
                    carried.push(position);
                    EndoSlot::new(SlotLetter::Object, true, position)
                }
                Descriptor::ImportPromise(position) => {
                    carried.push(position);
                    EndoSlot::new(SlotLetter::Promise, true, position)
                }
                Descriptor::Export(position) => import_slot(position),
                Descriptor::Answer(_) => {
                    return Err("Endo's CapTP cannot carry a promise for one of our unanswered questions".to_string());
                }
            };
            Ok(SlotText {
                slot: slot_text.to_string(),
                iface,
            })
        };
        let encoded = capdata::encode(value, &mut slot_for).map_err(|error| error.to_string());
        match encoded {
            Ok(capdata) => {
                for position in carried {
                    *self.export_sends.entry(position).or_insert(0) += 1;
                }
                Ok(capdata)
            }
            Err(reason) => {
                // The engine counted a send for every export in the body
                // (including those after the failure); give them back.
                let mut all = Vec::new();
                collect_exports(value, &mut all);
                if !all.is_empty() {
                    let deltas = vec![1; all.len()];
                    self.engine(&Message::DropExports {
                        positions: Positions::from(all),
                        deltas: Positions::from(deltas),
                    });
                }
                Err(reason)
            }
        }
    }

    fn error_body(&mut self, reason: &str) -> Vec<u8> {
        let mut body = Vec::new();
        let error = Value::error(ErrorValue::plain(reason));
        let _ = self
            .marshaller
            .encode(&error, &mut marshal::NoSlots, &self.limits.marshal, &mut body);
        body
    }
}

fn take_into(buffer: &mut Vec<u8>, out: &mut Vec<u8>) {
    if out.is_empty() {
        std::mem::swap(out, buffer);
    } else {
        out.append(buffer);
    }
}

/// The distinct exports of ours a decoded engine body carries.
fn collect_exports(value: &Value, out: &mut Vec<u64>) {
    match value {
        Value::Remotable(reference) | Value::Promise(reference) => {
            if let Some(BridgeSlot {
                descriptor: Descriptor::ImportObject(position) | Descriptor::ImportPromise(position),
                ..
            }) = reference.target::<BridgeSlot>()
                && !out.contains(position)
            {
                out.push(*position);
            }
        }
        Value::Array(items) => items.iter().for_each(|item| collect_exports(item, out)),
        Value::Record(record) => record.values().for_each(|item| collect_exports(item, out)),
        Value::Tagged(tagged) => collect_exports(&tagged.payload, out),
        _ => {}
    }
}

fn engine_outcome(fulfilled: bool, body: &[u8]) -> Outcome<'_> {
    if fulfilled {
        Outcome::Fulfilled(Body(body))
    } else {
        Outcome::Rejected(Body(body))
    }
}

fn plain_error_capdata(reason: &str) -> CapData {
    let error = Value::error(ErrorValue::plain(reason));
    capdata::encode(&error, &mut |_: &Reference, _: RefStyle| Err(String::new())).unwrap_or(CapData {
        body: String::from("{\"@qclass\":\"error\",\"message\":\"\",\"name\":\"Error\"}"),
        slots: Vec::new(),
    })
}

/// A question the peer asked, as an answer position.
fn peer_question(question: EndoSlot) -> Result<u64, PeerError> {
    if question.letter != SlotLetter::Question || question.plus {
        return Err(protocol(format!("questionID {question} is not a question")));
    }
    Ok(question.number)
}

/// Our question id for an engine question position (send-only: `q-0`).
fn our_question(answer: Option<u64>) -> EndoSlot {
    EndoSlot::new(SlotLetter::Question, false, answer.unwrap_or(SEND_ONLY_QUESTION))
}

/// The target of a peer's call.
fn peer_target(target: EndoSlot) -> Result<Target, PeerError> {
    match (target.letter, target.plus) {
        (SlotLetter::Object | SlotLetter::Promise, false) => Ok(Target::Export(target.number)),
        (SlotLetter::Question, false) => Ok(Target::Answer(target.number)),
        _ => Err(protocol(format!(
            "cannot call {target}: not one of our exports or answers"
        ))),
    }
}

/// The engine's import position for one of the peer's exports, in our
/// namespace (`o-N`, `p-N`).
fn import_position(ours: EndoSlot) -> Result<u64, PeerError> {
    match ours.letter {
        SlotLetter::Object => Ok(ours.number * 2),
        SlotLetter::Promise => Ok(ours.number * 2 + 1),
        _ => Err(protocol(format!("{ours} is not an import"))),
    }
}

/// Our name for the peer's export at an engine import position.
fn import_slot(position: u64) -> EndoSlot {
    let letter = if position.is_multiple_of(2) {
        SlotLetter::Object
    } else {
        SlotLetter::Promise
    };
    EndoSlot::new(letter, false, position / 2)
}

/// What a slot in one of the peer's bodies stands for, for the engine.
fn peer_descriptor(slot: EndoSlot) -> Result<(Descriptor, RefStyle), String> {
    Ok(match (slot.letter, slot.plus) {
        (SlotLetter::Object, true) => (Descriptor::ImportObject(slot.number * 2), RefStyle::Remotable),
        (SlotLetter::Promise, true) => (Descriptor::ImportPromise(slot.number * 2 + 1), RefStyle::Promise),
        (SlotLetter::Object, false) => (Descriptor::Export(slot.number), RefStyle::Remotable),
        (SlotLetter::Promise, false) => (Descriptor::Export(slot.number), RefStyle::Promise),
        (SlotLetter::Question, false) => (Descriptor::Answer(slot.number), RefStyle::Promise),
        _ => return Err(format!("slot {slot} cannot be received")),
    })
}
