//! The CapTP message set: every message two sessions exchange, and its
//! postcard encoding. This is the one file to read for what crosses the
//! wire; `docs/spec/captp.md` says what each message means.
//!
//! Positions are `u64`. Export and import positions are allocated by the
//! exporter (0 is its bootstrap object); question positions are allocated
//! by the caller and name the callee's answer. Bodies (`args`, outcomes)
//! are marshalled values ([`crate::marshal`]) carried as byte strings;
//! their descriptors speak from the receiver's point of view.
//!
//! Messages borrow their strings and bodies from the frame they were
//! decoded from, so decoding copies nothing but position lists.

use std::borrow::Cow;
use std::fmt;

use serde::de::{SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::marshal::Descriptor;
use crate::marshal::wire::{Reader, put_bytes, put_varint, varint_len};

/// Most positions one `DropExports` or `DropAnswers` may carry; the
/// session splits larger batches.
pub const MAX_POSITIONS_PER_MESSAGE: usize = 1 << 16;

/// What a `Deliver` or `Get` is addressed to, from the receiver's view.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Target {
    /// The receiver's export at this position.
    Export(u64),
    /// The receiver's answer at this position: promise pipelining.
    Answer(u64),
}

/// How a promise or a call settled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome<'a> {
    #[serde(borrow)]
    Fulfilled(Body<'a>),
    #[serde(borrow)]
    Rejected(Body<'a>),
}

/// A marshalled value.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Body<'a>(pub &'a [u8]);

/// A list of positions (or counts), bounded on decode by
/// [`MAX_POSITIONS_PER_MESSAGE`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Positions<'a>(pub Cow<'a, [u64]>);

/// One CapTP message.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Message<'a> {
    /// Ask for the receiver's bootstrap object, as the answer at `answer`.
    Bootstrap { answer: u64 },
    /// Call `method` on `target` with marshalled `args` (a copyArray).
    /// `answer` is the caller's new question position, absent for
    /// send-only; `resolver` is an optional reference to notify.
    Deliver {
        target: Target,
        method: &'a str,
        #[serde(borrow)]
        args: Body<'a>,
        answer: Option<u64>,
        resolver: Option<Descriptor>,
    },
    /// Eventual property get: `E.get(target)[field]`.
    Get {
        target: Target,
        field: &'a str,
        answer: u64,
    },
    /// The sender's exported promise at `promise` settled.
    Resolve {
        promise: u64,
        #[serde(borrow)]
        outcome: Outcome<'a>,
    },
    /// The call the receiver asked as question `answer` settled.
    Return {
        answer: u64,
        #[serde(borrow)]
        outcome: Outcome<'a>,
    },
    /// The sender let go of these imports; `deltas` are how many times it
    /// had received each since its last drop of it.
    DropExports {
        #[serde(borrow)]
        positions: Positions<'a>,
        #[serde(borrow)]
        deltas: Positions<'a>,
    },
    /// The sender no longer needs these answers.
    DropAnswers {
        #[serde(borrow)]
        positions: Positions<'a>,
    },
    /// The session is over.
    Abort { reason: &'a str },
    /// Round-trip marker: the sender's question `target` settled to one of
    /// the sender's own objects while it had calls pipelined on it. The
    /// receiver answers with `DisembargoReply` after everything it
    /// forwarded from that answer, so that the sender's later direct calls
    /// keep E-order behind the forwarded ones.
    Disembargo { target: Target, embargo: u64 },
    /// Reply to `Disembargo`.
    DisembargoReply { embargo: u64 },
}

/// A message that is not valid postcard for [`Message`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    #[error("malformed message: {0}")]
    Postcard(#[from] postcard::Error),
    #[error("malformed message: {0} bytes left over")]
    TrailingBytes(usize),
}

impl<'a> Message<'a> {
    /// Decodes one message that fills `bytes` exactly.
    pub fn decode(bytes: &'a [u8]) -> Result<Message<'a>, MessageError> {
        match decode_plain_deliver(bytes) {
            Some(message) => Ok(message),
            None => Message::decode_with_serde(bytes),
        }
    }

    /// The derived postcard decoding, which [`Message::decode`] uses for
    /// everything but a plain `Deliver`.
    fn decode_with_serde(bytes: &'a [u8]) -> Result<Message<'a>, MessageError> {
        let (message, rest) = postcard::take_from_bytes::<Message<'a>>(bytes)?;
        if rest.is_empty() {
            Ok(message)
        } else {
            Err(MessageError::TrailingBytes(rest.len()))
        }
    }

    /// Appends the message's postcard encoding to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), MessageError> {
        match self {
            Message::Deliver {
                target,
                method,
                args,
                answer,
                resolver,
            } => {
                put_deliver(out, *target, method, *args, *answer, *resolver);
                Ok(())
            }
            _ => self.encode_with_serde(out),
        }
    }

    fn encode_with_serde(&self, out: &mut Vec<u8>) -> Result<(), MessageError> {
        postcard::serialize_with_flavor(self, VecFlavor { out }).map_err(MessageError::from)
    }

    /// The number of bytes `encode_into` writes.
    pub fn encoded_len(&self) -> Result<usize, MessageError> {
        match self {
            Message::Deliver {
                target,
                method,
                args,
                answer,
                resolver,
            } => Ok(deliver_len(*target, method, *args, *answer, *resolver)),
            _ => postcard::experimental::serialized_size(self).map_err(MessageError::from),
        }
    }

    /// The message's name, for logs and reasons.
    pub fn name(&self) -> &'static str {
        match self {
            Message::Bootstrap { .. } => "Bootstrap",
            Message::Deliver { .. } => "Deliver",
            Message::Get { .. } => "Get",
            Message::Resolve { .. } => "Resolve",
            Message::Return { .. } => "Return",
            Message::DropExports { .. } => "DropExports",
            Message::DropAnswers { .. } => "DropAnswers",
            Message::Abort { .. } => "Abort",
            Message::Disembargo { .. } => "Disembargo",
            Message::DisembargoReply { .. } => "DisembargoReply",
        }
    }
}

// `Deliver` is most of the traffic, so it is written and read by hand
// instead of through serde (which walks a message twice to write it: once
// for its size, once for its bytes). The bytes are postcard's, as derived
// for `Message`; the tests below hold the two to each other.

/// Postcard's variant index of `Message::Deliver`.
const DELIVER_VARIANT: u8 = 1;

fn target_parts(target: Target) -> (u64, u64) {
    match target {
        Target::Export(position) => (0, position),
        Target::Answer(position) => (1, position),
    }
}

fn descriptor_parts(descriptor: Descriptor) -> (u64, u64) {
    let tag = match descriptor {
        Descriptor::ImportObject(_) => 0,
        Descriptor::ImportPromise(_) => 1,
        Descriptor::Export(_) => 2,
        Descriptor::Answer(_) => 3,
    };
    (tag, descriptor.position())
}

fn option_len(value: Option<(u64, usize)>) -> usize {
    1 + value.map_or(0, |(_, len)| len)
}

fn deliver_len(
    target: Target,
    method: &str,
    args: Body<'_>,
    answer: Option<u64>,
    resolver: Option<Descriptor>,
) -> usize {
    let (target_tag, target_position) = target_parts(target);
    1 + varint_len(target_tag)
        + varint_len(target_position)
        + varint_len(method.len() as u64)
        + method.len()
        + varint_len(args.0.len() as u64)
        + args.0.len()
        + option_len(answer.map(|answer| (answer, varint_len(answer))))
        + option_len(resolver.map(|resolver| {
            let (tag, position) = descriptor_parts(resolver);
            (tag, varint_len(tag) + varint_len(position))
        }))
}

fn put_deliver(
    out: &mut Vec<u8>,
    target: Target,
    method: &str,
    args: Body<'_>,
    answer: Option<u64>,
    resolver: Option<Descriptor>,
) {
    let (target_tag, target_position) = target_parts(target);
    out.push(DELIVER_VARIANT);
    put_varint(out, target_tag);
    put_varint(out, target_position);
    put_bytes(out, method.as_bytes());
    put_bytes(out, args.0);
    match answer {
        Some(answer) => {
            out.push(1);
            put_varint(out, answer);
        }
        None => out.push(0),
    }
    match resolver {
        Some(resolver) => {
            let (tag, position) = descriptor_parts(resolver);
            out.push(1);
            put_varint(out, tag);
            put_varint(out, position);
        }
        None => out.push(0),
    }
}

/// Reads a `Deliver` without a resolver whose every varint is in its
/// shortest form and which fills `bytes` exactly. Anything else, valid or
/// not, gives `None` and is left to serde, so what is accepted and how it
/// reads stay postcard's.
fn decode_plain_deliver(bytes: &[u8]) -> Option<Message<'_>> {
    let mut reader = Reader::new(bytes);
    if reader.byte().ok()? != DELIVER_VARIANT {
        return None;
    }
    let target = match reader.byte().ok()? {
        0 => Target::Export(reader.varint().ok()?),
        1 => Target::Answer(reader.varint().ok()?),
        _ => return None,
    };
    let method_len = usize::try_from(reader.varint().ok()?).ok()?;
    let method = std::str::from_utf8(reader.take(method_len).ok()?).ok()?;
    let args_len = usize::try_from(reader.varint().ok()?).ok()?;
    let args = Body(reader.take(args_len).ok()?);
    let answer = match reader.byte().ok()? {
        0 => None,
        1 => Some(reader.varint().ok()?),
        _ => return None,
    };
    if reader.byte().ok()? != 0 || reader.remaining() != 0 {
        return None;
    }
    Some(Message::Deliver {
        target,
        method,
        args,
        answer,
        resolver: None,
    })
}

/// A postcard flavor appending to a borrowed `Vec`, so that encoding into
/// a reused buffer allocates nothing.
struct VecFlavor<'v> {
    out: &'v mut Vec<u8>,
}

impl postcard::ser_flavors::Flavor for VecFlavor<'_> {
    type Output = ();

    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.out.push(data);
        Ok(())
    }

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.out.extend_from_slice(data);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

impl fmt::Debug for Body<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Body({} bytes)", self.0.len())
    }
}

impl Serialize for Body<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(self.0)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Body<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Body<'a>, D::Error> {
        struct BodyVisitor;
        impl<'de> Visitor<'de> for BodyVisitor {
            type Value = Body<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a marshalled body")
            }
            fn visit_borrowed_bytes<E: serde::de::Error>(self, bytes: &'de [u8]) -> Result<Body<'de>, E> {
                Ok(Body(bytes))
            }
        }
        deserializer.deserialize_bytes(BodyVisitor)
    }
}

impl<'a> Positions<'a> {
    pub fn borrowed(positions: &'a [u64]) -> Positions<'a> {
        Positions(Cow::Borrowed(positions))
    }

    pub fn as_slice(&self) -> &[u64] {
        &self.0
    }
}

impl From<Vec<u64>> for Positions<'static> {
    fn from(positions: Vec<u64>) -> Positions<'static> {
        Positions(Cow::Owned(positions))
    }
}

impl Serialize for Positions<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter())
    }
}

impl<'de, 'a> Deserialize<'de> for Positions<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Positions<'a>, D::Error> {
        struct PositionsVisitor;
        impl<'de> Visitor<'de> for PositionsVisitor {
            type Value = Positions<'static>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "at most {MAX_POSITIONS_PER_MESSAGE} positions")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Positions<'static>, A::Error> {
                let claimed = seq.size_hint().unwrap_or(0);
                if claimed > MAX_POSITIONS_PER_MESSAGE {
                    return Err(serde::de::Error::invalid_length(claimed, &self));
                }
                let mut positions = Vec::with_capacity(claimed);
                while let Some(position) = seq.next_element::<u64>()? {
                    if positions.len() == MAX_POSITIONS_PER_MESSAGE {
                        return Err(serde::de::Error::invalid_length(positions.len() + 1, &self));
                    }
                    positions.push(position);
                }
                Ok(Positions(Cow::Owned(positions)))
            }
        }
        deserializer.deserialize_seq(PositionsVisitor)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn target() -> impl Strategy<Value = Target> {
        prop_oneof![
            any::<u64>().prop_map(Target::Export),
            any::<u64>().prop_map(Target::Answer)
        ]
    }

    fn descriptor() -> impl Strategy<Value = Descriptor> {
        prop_oneof![
            any::<u64>().prop_map(Descriptor::ImportObject),
            any::<u64>().prop_map(Descriptor::ImportPromise),
            any::<u64>().prop_map(Descriptor::Export),
            any::<u64>().prop_map(Descriptor::Answer),
        ]
    }

    fn serde_bytes(message: &Message<'_>) -> Vec<u8> {
        let mut out = Vec::new();
        message.encode_with_serde(&mut out).unwrap();
        out
    }

    proptest! {
        #[test]
        fn deliver_is_written_as_postcard_writes_it(
            target in target(),
            method in ".{0,40}",
            args in proptest::collection::vec(any::<u8>(), 0..300),
            answer in proptest::option::of(any::<u64>()),
            resolver in proptest::option::of(descriptor()),
        ) {
            let message = Message::Deliver { target, method: &method, args: Body(&args), answer, resolver };
            let expected = serde_bytes(&message);
            let mut written = Vec::new();
            message.encode_into(&mut written).unwrap();
            prop_assert_eq!(&written, &expected);
            prop_assert_eq!(message.encoded_len().unwrap(), expected.len());
            prop_assert_eq!(Message::decode(&written).unwrap(), message);
        }

        #[test]
        fn any_bytes_read_as_postcard_reads_them(
            target in target(),
            method in ".{0,8}",
            args in proptest::collection::vec(any::<u8>(), 0..8),
            answer in proptest::option::of(any::<u64>()),
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..3),
            cut in proptest::option::of(any::<prop::sample::Index>()),
            extra in proptest::collection::vec(any::<u8>(), 0..2),
        ) {
            let message = Message::Deliver { target, method: &method, args: Body(&args), answer, resolver: None };
            let mut bytes = serde_bytes(&message);
            for (index, byte) in edits {
                let at = index.index(bytes.len());
                bytes[at] = byte;
            }
            if let Some(cut) = cut {
                bytes.truncate(cut.index(bytes.len() + 1));
            }
            bytes.extend_from_slice(&extra);
            prop_assert_eq!(Message::decode(&bytes), Message::decode_with_serde(&bytes));
        }
    }

    #[test]
    fn a_redundant_varint_is_left_to_serde() {
        // Postcard reads 0x80 0x00 as 0; so must `decode`.
        let bytes = [DELIVER_VARIANT, 0, 0x80, 0x00, 0, 0, 0, 0];
        assert!(decode_plain_deliver(&bytes).is_none());
        assert_eq!(
            Message::decode(&bytes).unwrap(),
            Message::Deliver {
                target: Target::Export(0),
                method: "",
                args: Body(&[]),
                answer: None,
                resolver: None
            }
        );
    }
}
