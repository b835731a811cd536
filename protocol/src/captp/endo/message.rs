//! The message set of Endo's CapTP (`@endo/captp` 4.5): every message a
//! JavaScript CapTP peer sends or understands, read from and written as
//! the JSON objects `makeCapTP` hands its `rawSend`. `docs/spec/captp.md`
//! ("Endo's encoding") says what each message means; this file is the one
//! to read for what crosses the wire.
//!
//! Every slot in a message is written in its **sender's** namespace:
//! `o+N`/`p+N` are objects and promises the sender exports, `o-N`/`p-N`
//! are the receiver's exports named back, and `q-N` is a question the
//! sender asked (the first is its bootstrap request). The receiver turns
//! `+` into `-` and back ("reverses the slot") to find its own name for
//! it, except for question ids, which both sides use as written.
//!
//! Properties are written in the order `@endo/captp` writes them, so that
//! our messages are byte-identical to its own.

use std::fmt;

use super::capdata::{CapData, MAX_SAFE_INTEGER};
use super::json::{self, Json};

/// What a slot letter names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SlotLetter {
    /// `o`: an object.
    Object,
    /// `p`: a promise.
    Promise,
    /// `q`: a question (the promise for a call's result).
    Question,
    /// `t`: an object served to `Trap` (synchronous) callers.
    Trap,
}

/// A slot, such as `o+3` or `q-1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EndoSlot {
    pub letter: SlotLetter,
    /// `+`: allocated by the side that writes it.
    pub plus: bool,
    pub number: u64,
}

impl EndoSlot {
    pub fn new(letter: SlotLetter, plus: bool, number: u64) -> EndoSlot {
        EndoSlot { letter, plus, number }
    }

    /// Parses `o+3`: a letter, a sign, and a number without leading zeros
    /// no larger than 2^53 - 1.
    pub fn parse(text: &str) -> Result<EndoSlot, EndoMessageError> {
        let bad = || EndoMessageError::BadSlot(text.chars().take(40).collect());
        let mut chars = text.chars();
        let letter = match chars.next() {
            Some('o') => SlotLetter::Object,
            Some('p') => SlotLetter::Promise,
            Some('q') => SlotLetter::Question,
            Some('t') => SlotLetter::Trap,
            _ => return Err(bad()),
        };
        let plus = match chars.next() {
            Some('+') => true,
            Some('-') => false,
            _ => return Err(bad()),
        };
        let digits = chars.as_str();
        if digits.is_empty() || digits.len() > 16 || (digits.len() > 1 && digits.starts_with('0')) {
            return Err(bad());
        }
        if !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let number: u64 = digits.parse().map_err(|_| bad())?;
        if number as f64 > MAX_SAFE_INTEGER {
            return Err(bad());
        }
        Ok(EndoSlot { letter, plus, number })
    }

    /// The same slot in the other side's namespace.
    pub fn reversed(self) -> EndoSlot {
        EndoSlot {
            plus: !self.plus,
            ..self
        }
    }
}

impl fmt::Display for EndoSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let letter = match self.letter {
            SlotLetter::Object => 'o',
            SlotLetter::Promise => 'p',
            SlotLetter::Question => 'q',
            SlotLetter::Trap => 't',
        };
        write!(f, "{letter}{}{}", if self.plus { '+' } else { '-' }, self.number)
    }
}

/// How a call or promise settled, as `CTP_RETURN` (`result`/`exception`)
/// and `CTP_RESOLVE` (`res`/`rej`) say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EndoOutcome {
    Fulfilled(CapData),
    Rejected(CapData),
}

/// One Endo CapTP message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EndoMessage {
    /// `CTP_BOOTSTRAP`: send your bootstrap object as the answer to my
    /// question `question`.
    Bootstrap { epoch: u64, question: EndoSlot },
    /// `CTP_CALL`: call `target` (one of your exports, or the answer to one
    /// of my questions) and answer my question `question`. `method` is
    /// capdata of `[name, args]`, `[null, args]` (a function call) or
    /// `[name]` (a property get). `trap` asks for a synchronous `Trap`
    /// reply.
    Call {
        epoch: u64,
        question: EndoSlot,
        target: EndoSlot,
        method: CapData,
        trap: bool,
    },
    /// `CTP_RETURN`: your question `answer` settled.
    Return {
        epoch: u64,
        answer: EndoSlot,
        outcome: EndoOutcome,
    },
    /// `CTP_RESOLVE`: a promise I exported settled; `promise` is your
    /// name for it (`p-N`).
    Resolve { promise: EndoSlot, outcome: EndoOutcome },
    /// `CTP_DROP`: I let go of `slot` (my import of your export), which I
    /// received `dec_refs` times since my last drop of it.
    Drop { slot: EndoSlot, dec_refs: u64, epoch: u64 },
    /// `CTP_DISCONNECT`: the connection is over.
    Disconnect { epoch: u64, reason: String },
}

/// A message that is not a valid Endo CapTP message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndoMessageError {
    #[error("Endo CapTP message: {0}")]
    Json(#[from] json::JsonError),
    #[error("Endo CapTP message is not a JSON object")]
    NotAnObject,
    #[error("unknown Endo CapTP message type {0:?}")]
    UnknownType(String),
    #[error("Endo CapTP {message}: {problem}")]
    Field { message: &'static str, problem: String },
    #[error("invalid Endo CapTP slot {0:?}")]
    BadSlot(String),
    #[error("Endo CapTP capdata has {claimed} slots, over the limit of {limit}")]
    TooManySlots { claimed: usize, limit: usize },
}

/// Nesting of a message's own JSON: the message object and its capdata
/// objects. Bodies are strings inside it, parsed on their own.
const MESSAGE_DEPTH: usize = 3;

impl EndoMessage {
    /// The message's `type`.
    pub fn name(&self) -> &'static str {
        match self {
            EndoMessage::Bootstrap { .. } => "CTP_BOOTSTRAP",
            EndoMessage::Call { .. } => "CTP_CALL",
            EndoMessage::Return { .. } => "CTP_RETURN",
            EndoMessage::Resolve { .. } => "CTP_RESOLVE",
            EndoMessage::Drop { .. } => "CTP_DROP",
            EndoMessage::Disconnect { .. } => "CTP_DISCONNECT",
        }
    }

    /// Reads one message from its JSON text; a capdata's slot list may
    /// hold at most `max_slots` slots.
    pub fn decode(text: &str, max_slots: usize) -> Result<EndoMessage, EndoMessageError> {
        let tree = json::parse(text, MESSAGE_DEPTH)?;
        let Json::Object(_) = tree else {
            return Err(EndoMessageError::NotAnObject);
        };
        let kind = tree.get("type").and_then(Json::as_str).unwrap_or_default();
        let fields = Fields {
            tree: &tree,
            message: match kind {
                "CTP_BOOTSTRAP" => "CTP_BOOTSTRAP",
                "CTP_CALL" => "CTP_CALL",
                "CTP_RETURN" => "CTP_RETURN",
                "CTP_RESOLVE" => "CTP_RESOLVE",
                "CTP_DROP" => "CTP_DROP",
                "CTP_DISCONNECT" => "CTP_DISCONNECT",
                other => return Err(EndoMessageError::UnknownType(other.chars().take(40).collect())),
            },
            max_slots,
        };
        Ok(match fields.message {
            "CTP_BOOTSTRAP" => EndoMessage::Bootstrap {
                epoch: fields.epoch()?,
                question: fields.slot("questionID")?,
            },
            "CTP_CALL" => EndoMessage::Call {
                epoch: fields.epoch()?,
                question: fields.slot("questionID")?,
                target: fields.slot("target")?,
                method: fields.capdata("method")?,
                trap: match tree.get("trap") {
                    None | Some(Json::Bool(false)) | Some(Json::Null) => false,
                    Some(_) => true,
                },
            },
            "CTP_RETURN" => EndoMessage::Return {
                epoch: fields.epoch()?,
                answer: fields.slot("answerID")?,
                outcome: fields.outcome("result", "exception")?,
            },
            "CTP_RESOLVE" => EndoMessage::Resolve {
                promise: fields.slot("promiseID")?,
                outcome: fields.outcome("res", "rej")?,
            },
            "CTP_DROP" => EndoMessage::Drop {
                slot: fields.slot("slotID")?,
                dec_refs: match tree.get("decRefs") {
                    None => 0,
                    Some(value) => fields.natural("decRefs", value)?,
                },
                epoch: fields.epoch()?,
            },
            _ => EndoMessage::Disconnect {
                epoch: fields.epoch()?,
                reason: disconnect_reason(tree.get("reason")),
            },
        })
    }

    /// The message as the JSON text `@endo/captp` would send.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(64);
        out.push_str("{\"type\":\"");
        out.push_str(self.name());
        out.push('"');
        let slot = |out: &mut String, name: &str, slot: &EndoSlot| {
            out.push_str(&format!(",\"{name}\":\"{slot}\""));
        };
        let epoch = |out: &mut String, epoch: u64| out.push_str(&format!(",\"epoch\":{epoch}"));
        match self {
            EndoMessage::Bootstrap { epoch: e, question } => {
                epoch(&mut out, *e);
                slot(&mut out, "questionID", question);
            }
            EndoMessage::Call {
                epoch: e,
                question,
                target,
                method,
                trap,
            } => {
                epoch(&mut out, *e);
                if *trap {
                    out.push_str(",\"trap\":true");
                }
                slot(&mut out, "questionID", question);
                slot(&mut out, "target", target);
                write_capdata(&mut out, "method", method);
            }
            EndoMessage::Return {
                epoch: e,
                answer,
                outcome,
            } => {
                epoch(&mut out, *e);
                slot(&mut out, "answerID", answer);
                write_outcome(&mut out, outcome, "result", "exception");
            }
            EndoMessage::Resolve { promise, outcome } => {
                slot(&mut out, "promiseID", promise);
                write_outcome(&mut out, outcome, "res", "rej");
            }
            EndoMessage::Drop {
                slot: dropped,
                dec_refs,
                epoch: e,
            } => {
                slot(&mut out, "slotID", dropped);
                out.push_str(&format!(",\"decRefs\":{dec_refs}"));
                epoch(&mut out, *e);
            }
            EndoMessage::Disconnect { epoch: e, reason } => {
                epoch(&mut out, *e);
                out.push_str(",\"reason\":");
                json::write_string(&mut out, reason);
            }
        }
        out.push('}');
        out
    }
}

fn write_capdata(out: &mut String, name: &str, capdata: &CapData) {
    out.push_str(&format!(",\"{name}\":{{\"body\":"));
    json::write_string(out, &capdata.body);
    out.push_str(",\"slots\":[");
    for (index, slot) in capdata.slots.iter().enumerate() {
        if index > 0 {
            out.push(',');
        }
        json::write_string(out, slot);
    }
    out.push_str("]}");
}

fn write_outcome(out: &mut String, outcome: &EndoOutcome, fulfilled: &str, rejected: &str) {
    match outcome {
        EndoOutcome::Fulfilled(capdata) => write_capdata(out, fulfilled, capdata),
        EndoOutcome::Rejected(capdata) => write_capdata(out, rejected, capdata),
    }
}

/// The reason of a `CTP_DISCONNECT` in words. `@endo/captp` puts whatever
/// it was given there (often an `Error`, which JSON writes as `{}`).
fn disconnect_reason(reason: Option<&Json>) -> String {
    match reason {
        Some(Json::String(text)) => text.chars().take(1000).collect(),
        Some(tree @ Json::Object(_)) => match tree.get("message").and_then(Json::as_str) {
            Some(message) => message.chars().take(1000).collect(),
            None => "the peer disconnected".to_string(),
        },
        _ => "the peer disconnected".to_string(),
    }
}

struct Fields<'t> {
    tree: &'t Json,
    message: &'static str,
    max_slots: usize,
}

impl Fields<'_> {
    fn problem(&self, problem: String) -> EndoMessageError {
        EndoMessageError::Field {
            message: self.message,
            problem,
        }
    }

    fn natural(&self, name: &str, value: &Json) -> Result<u64, EndoMessageError> {
        match value {
            Json::Number(n) if *n >= 0.0 && n.fract() == 0.0 && *n <= MAX_SAFE_INTEGER => Ok(*n as u64),
            _ => Err(self.problem(format!("{name} must be a natural number"))),
        }
    }

    /// `epoch` is optional (`CTP_RESOLVE` has none) and only checked.
    fn epoch(&self) -> Result<u64, EndoMessageError> {
        match self.tree.get("epoch") {
            None => Ok(0),
            Some(value) => self.natural("epoch", value),
        }
    }

    fn slot(&self, name: &str) -> Result<EndoSlot, EndoMessageError> {
        match self.tree.get(name) {
            Some(Json::String(text)) => EndoSlot::parse(text),
            _ => Err(self.problem(format!("{name} must be a slot string"))),
        }
    }

    fn capdata(&self, name: &str) -> Result<CapData, EndoMessageError> {
        let Some(tree) = self.tree.get(name) else {
            return Err(self.problem(format!("{name} is missing")));
        };
        let Some(body) = tree.get("body").and_then(Json::as_str) else {
            return Err(self.problem(format!("{name}.body must be a string")));
        };
        let Some(Json::Array(slots)) = tree.get("slots") else {
            return Err(self.problem(format!("{name}.slots must be an array")));
        };
        if slots.len() > self.max_slots {
            return Err(EndoMessageError::TooManySlots {
                claimed: slots.len(),
                limit: self.max_slots,
            });
        }
        let slots = slots
            .iter()
            .map(|slot| {
                slot.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| self.problem(format!("{name}.slots must hold strings")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(CapData {
            body: body.to_owned(),
            slots,
        })
    }

    fn outcome(&self, fulfilled: &str, rejected: &str) -> Result<EndoOutcome, EndoMessageError> {
        // Endo checks for the rejection first (`'exception' in obj`).
        if self.tree.get(rejected).is_some() {
            self.capdata(rejected).map(EndoOutcome::Rejected)
        } else {
            self.capdata(fulfilled).map(EndoOutcome::Fulfilled)
        }
    }
}
