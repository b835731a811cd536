//! Marshal: the wire encoding of passable values, with a slot table.
//!
//! A body is the postcard encoding of
//!
//! ```text
//! Body  = { slots: Vec<Slot>, value: Wire }
//! Slot  = { descriptor: Descriptor, interface: Option<String> }
//! Wire  = Undefined | Null | Boolean(bool) | Number(f64)
//!       | BigInt { negative: bool, magnitude: bytes (little-endian, no trailing zero) }
//!       | String(String) | ByteArray(bytes) | Symbol(String)
//!       | Array(Vec<Wire>) | Record(Vec<(String, Wire)>) | Tagged(String, Wire)
//!       | Remotable(u32 slot) | Promise(u32 slot) | Error(WireError)
//! WireError = { name: String, message: String, cause: Option<WireError>, errors: Vec<WireError> }
//! ```
//!
//! (variants numbered in that order; `protocol/tests/marshal_postcard.rs`
//! checks that serde-derived mirrors of these types read the same bytes).
//!
//! Each distinct [`Reference`] gets the next slot in order of first
//! appearance; the caller's [`EncodeSlots`] decides the [`Descriptor`] for it
//! and whether its interface name travels, and the decoder hands each
//! descriptor to a [`DecodeSlots`] to get a reference back. Errors cross as
//! data and come back as [`Value::Error`].
//!
//! Decoding is bounded before allocation by [`MarshalLimits`]: nesting
//! depth, collection sizes, string and byte lengths, bigint size, slot count
//! and total values. Every length is also checked against the bytes that
//! remain, so a prefix claiming 2^60 elements fails at once. Only structural
//! passability is guaranteed here; copy collections are checked by the
//! pattern layer.

pub mod wire;

use std::collections::HashMap;
use std::sync::Arc;

use num_bigint::{BigInt, Sign};
use serde::{Deserialize, Serialize};

use crate::value::{ErrorValue, Record, Reference, Tagged, Value, ValueError};
use wire::{Reader, put_bytes, put_varint};

/// What a slot names, from the point of view of the party that receives
/// the body.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Descriptor {
    /// An object the sender exports at this position.
    ImportObject(u64),
    /// A promise the sender exports at this position.
    ImportPromise(u64),
    /// The receiver's own export at this position, sent back.
    Export(u64),
    /// The receiver's answer at this position (the sender's question).
    Answer(u64),
}

impl Descriptor {
    fn tag(self) -> u64 {
        match self {
            Descriptor::ImportObject(_) => 0,
            Descriptor::ImportPromise(_) => 1,
            Descriptor::Export(_) => 2,
            Descriptor::Answer(_) => 3,
        }
    }

    pub fn position(self) -> u64 {
        match self {
            Descriptor::ImportObject(position)
            | Descriptor::ImportPromise(position)
            | Descriptor::Export(position)
            | Descriptor::Answer(position) => position,
        }
    }

    fn from_tag(tag: u64, position: u64) -> Result<Descriptor, MarshalError> {
        Ok(match tag {
            0 => Descriptor::ImportObject(position),
            1 => Descriptor::ImportPromise(position),
            2 => Descriptor::Export(position),
            3 => Descriptor::Answer(position),
            _ => {
                return Err(MarshalError::UnknownTag {
                    what: "descriptor",
                    tag,
                });
            }
        })
    }
}

/// Whether a slot stands for a remotable or a promise.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RefStyle {
    Remotable,
    Promise,
}

/// What the encoder's caller says about one reference.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotOut {
    pub descriptor: Descriptor,
    /// Send the remotable's interface name with this slot (ignored for
    /// promises).
    pub send_interface: bool,
}

/// Turns each distinct reference of a value into a slot descriptor. Called
/// once per distinct reference, in slot order.
pub trait EncodeSlots {
    fn slot(&mut self, reference: &Reference, style: RefStyle) -> Result<SlotOut, MarshalError>;
}

/// Turns each slot descriptor of a body back into a reference. Called once
/// per slot, in slot order. `interface` is the name sent with the slot, if
/// any.
pub trait DecodeSlots {
    fn reference(
        &mut self,
        descriptor: Descriptor,
        style: RefStyle,
        interface: Option<&str>,
    ) -> Result<Reference, MarshalError>;
}

impl<F> EncodeSlots for F
where
    F: FnMut(&Reference, RefStyle) -> Result<SlotOut, MarshalError>,
{
    fn slot(&mut self, reference: &Reference, style: RefStyle) -> Result<SlotOut, MarshalError> {
        self(reference, style)
    }
}

/// A [`DecodeSlots`] for bodies that must hold no references.
pub struct NoSlots;

impl DecodeSlots for NoSlots {
    fn reference(&mut self, descriptor: Descriptor, _: RefStyle, _: Option<&str>) -> Result<Reference, MarshalError> {
        Err(MarshalError::Slot(format!(
            "no references expected, got {descriptor:?}"
        )))
    }
}

impl EncodeSlots for NoSlots {
    fn slot(&mut self, reference: &Reference, _: RefStyle) -> Result<SlotOut, MarshalError> {
        Err(MarshalError::Slot(format!("no references allowed, got {reference:?}")))
    }
}

/// Bounds on what a body may hold. Every one is checked while encoding and
/// before allocating while decoding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MarshalLimits {
    /// Containers (arrays, records, tagged values, errors) nested inside
    /// each other; a scalar at top level has depth 0, `[]` has depth 1.
    pub max_depth: usize,
    pub max_array_len: usize,
    pub max_record_properties: usize,
    /// Bytes of UTF-8 in one string, symbol name, property name, tag,
    /// interface or error text.
    pub max_string_bytes: usize,
    pub max_byte_array_len: usize,
    /// Bytes of a bigint's magnitude (8 bits per byte).
    pub max_bigint_bytes: usize,
    pub max_slots: usize,
    /// Values of any kind in one body, to bound allocation per frame.
    pub max_values: usize,
}

impl Default for MarshalLimits {
    fn default() -> MarshalLimits {
        MarshalLimits {
            max_depth: 64,
            max_array_len: 1 << 20,
            max_record_properties: 1 << 16,
            max_string_bytes: 16 << 20,
            max_byte_array_len: 16 << 20,
            max_bigint_bytes: 1 << 14,
            max_slots: 1 << 16,
            max_values: 1 << 20,
        }
    }
}

/// Why a body could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MarshalError {
    #[error("body ended before the value was complete")]
    UnexpectedEnd,
    #[error("malformed varint")]
    BadVarint,
    #[error("{0} bytes left over after the value")]
    TrailingBytes(usize),
    #[error("unknown {what} tag {tag}")]
    UnknownTag { what: &'static str, tag: u64 },
    #[error("invalid boolean byte {0}")]
    BadBool(u8),
    #[error("invalid option byte {0}")]
    BadOption(u8),
    #[error("{what} is not valid UTF-8")]
    BadUtf8 { what: &'static str },
    #[error("bigint is not in canonical form")]
    NonCanonicalBigInt,
    #[error("nesting depth exceeds the limit of {limit}")]
    TooDeep { limit: usize },
    #[error("{what} of {claimed} exceeds the limit of {limit}")]
    TooLarge {
        what: &'static str,
        claimed: u64,
        limit: u64,
    },
    #[error("slot {index} is referenced before slot {expected} (slots must be numbered by first appearance)")]
    SlotOutOfOrder { index: u64, expected: usize },
    #[error("slot {index} is used both as a remotable and as a promise")]
    SlotStyleMismatch { index: u64 },
    #[error("slot table has {unused} entries the value never uses")]
    UnusedSlots { unused: usize },
    #[error(transparent)]
    Value(#[from] ValueError),
    #[error("{0}")]
    Slot(String),
}

const TAG_UNDEFINED: u64 = 0;
const TAG_NULL: u64 = 1;
const TAG_BOOLEAN: u64 = 2;
const TAG_NUMBER: u64 = 3;
const TAG_BIGINT: u64 = 4;
const TAG_STRING: u64 = 5;
const TAG_BYTE_ARRAY: u64 = 6;
const TAG_SYMBOL: u64 = 7;
const TAG_ARRAY: u64 = 8;
const TAG_RECORD: u64 = 9;
const TAG_TAGGED: u64 = 10;
const TAG_REMOTABLE: u64 = 11;
const TAG_PROMISE: u64 = 12;
const TAG_ERROR: u64 = 13;

/// Above this many references, slot lookup switches from a scan to a map.
const LINEAR_SLOT_LOOKUP: usize = 8;

/// A reusable encoder: keeps its scratch tables between bodies so that
/// encoding allocates nothing in the steady state.
#[derive(Default)]
pub struct Marshaller {
    refs: Vec<(Reference, RefStyle)>,
    index: HashMap<Reference, u32>,
}

impl Marshaller {
    pub fn new() -> Marshaller {
        Marshaller::default()
    }

    /// Appends the body for `value` to `out`. On error `out` is left as it
    /// was.
    pub fn encode(
        &mut self,
        value: &Value,
        slots: &mut dyn EncodeSlots,
        limits: &MarshalLimits,
        out: &mut Vec<u8>,
    ) -> Result<(), MarshalError> {
        self.encode_root(Root::Value(value), slots, limits, out)
    }

    /// Appends the body for a copyArray of `items`, without building it.
    pub fn encode_list(
        &mut self,
        items: &[Value],
        slots: &mut dyn EncodeSlots,
        limits: &MarshalLimits,
        out: &mut Vec<u8>,
    ) -> Result<(), MarshalError> {
        self.encode_root(Root::List(items), slots, limits, out)
    }

    fn encode_root(
        &mut self,
        root: Root<'_>,
        slots: &mut dyn EncodeSlots,
        limits: &MarshalLimits,
        out: &mut Vec<u8>,
    ) -> Result<(), MarshalError> {
        let start = out.len();
        let result = self.encode_inner(root, slots, limits, out);
        if result.is_err() {
            out.truncate(start);
        }
        // Do not keep references alive between bodies (and start each
        // body empty).
        self.refs.clear();
        if !self.index.is_empty() {
            self.index.clear();
        }
        result
    }

    fn encode_inner(
        &mut self,
        root: Root<'_>,
        slots: &mut dyn EncodeSlots,
        limits: &MarshalLimits,
        out: &mut Vec<u8>,
    ) -> Result<(), MarshalError> {
        let mut values = 0usize;
        match root {
            Root::Value(value) => self.collect(value, 0, limits, &mut values)?,
            Root::List(items) => {
                check_size("array length", items.len(), limits.max_array_len)?;
                check_depth(1, limits)?;
                values += 1;
                for item in items {
                    self.collect(item, 1, limits, &mut values)?;
                }
            }
        }
        check_size("slots", self.refs.len(), limits.max_slots)?;
        put_varint(out, self.refs.len() as u64);
        for (reference, style) in &self.refs {
            let SlotOut {
                descriptor,
                send_interface,
            } = slots.slot(reference, *style)?;
            put_varint(out, descriptor.tag());
            put_varint(out, descriptor.position());
            if send_interface && *style == RefStyle::Remotable {
                out.push(1);
                put_bytes(out, reference.interface().as_bytes());
            } else {
                out.push(0);
            }
        }
        match root {
            Root::Value(value) => self.write(value, out),
            Root::List(items) => {
                put_varint(out, TAG_ARRAY);
                put_varint(out, items.len() as u64);
                for item in items {
                    self.write(item, out);
                }
            }
        }
        Ok(())
    }

    /// First pass: checks limits and numbers references by first
    /// appearance.
    fn collect(
        &mut self,
        value: &Value,
        depth: usize,
        limits: &MarshalLimits,
        values: &mut usize,
    ) -> Result<(), MarshalError> {
        *values += 1;
        if *values > limits.max_values {
            return Err(too_large("values in body", *values, limits.max_values));
        }
        match value {
            Value::Undefined | Value::Null | Value::Boolean(_) | Value::Number(_) => {}
            Value::BigInt(n) => {
                let bytes = n.bits().div_ceil(8);
                if bytes > limits.max_bigint_bytes as u64 {
                    return Err(MarshalError::TooLarge {
                        what: "bigint bytes",
                        claimed: bytes,
                        limit: limits.max_bigint_bytes as u64,
                    });
                }
            }
            Value::String(text) | Value::Symbol(text) => {
                check_size("string bytes", text.len(), limits.max_string_bytes)?
            }
            Value::ByteArray(bytes) => check_size("byteArray length", bytes.len(), limits.max_byte_array_len)?,
            Value::Array(items) => {
                check_depth(depth + 1, limits)?;
                check_size("array length", items.len(), limits.max_array_len)?;
                for item in items.iter() {
                    self.collect(item, depth + 1, limits, values)?;
                }
            }
            Value::Record(record) => {
                check_depth(depth + 1, limits)?;
                check_size("record properties", record.len(), limits.max_record_properties)?;
                for (name, item) in record.iter() {
                    check_size("string bytes", name.len(), limits.max_string_bytes)?;
                    self.collect(item, depth + 1, limits, values)?;
                }
            }
            Value::Tagged(tagged) => {
                check_depth(depth + 1, limits)?;
                check_size("string bytes", tagged.tag.len(), limits.max_string_bytes)?;
                self.collect(&tagged.payload, depth + 1, limits, values)?;
            }
            Value::Remotable(reference) => self.note_reference(reference, RefStyle::Remotable)?,
            Value::Promise(reference) => self.note_reference(reference, RefStyle::Promise)?,
            Value::Error(error) => collect_error(error, depth + 1, limits, values)?,
        }
        Ok(())
    }

    fn note_reference(&mut self, reference: &Reference, style: RefStyle) -> Result<(), MarshalError> {
        if let Some(index) = self.slot_of(reference) {
            return match self.refs.get(index as usize) {
                Some((_, known)) if *known != style => Err(MarshalError::SlotStyleMismatch {
                    index: u64::from(index),
                }),
                _ => Ok(()),
            };
        }
        let index = self.refs.len() as u32;
        self.refs.push((reference.clone(), style));
        if self.refs.len() > LINEAR_SLOT_LOOKUP {
            if self.index.is_empty() {
                for (position, (known, _)) in self.refs.iter().enumerate() {
                    self.index.insert(known.clone(), position as u32);
                }
            } else {
                self.index.insert(reference.clone(), index);
            }
        }
        Ok(())
    }

    fn slot_of(&self, reference: &Reference) -> Option<u32> {
        if self.index.is_empty() {
            self.refs
                .iter()
                .position(|(known, _)| known.same(reference))
                .map(|index| index as u32)
        } else {
            self.index.get(reference).copied()
        }
    }

    /// Second pass: writes the value; every reference was numbered by
    /// `collect`.
    fn write(&self, value: &Value, out: &mut Vec<u8>) {
        match value {
            Value::Undefined => put_varint(out, TAG_UNDEFINED),
            Value::Null => put_varint(out, TAG_NULL),
            Value::Boolean(b) => {
                put_varint(out, TAG_BOOLEAN);
                out.push(u8::from(*b));
            }
            Value::Number(n) => {
                put_varint(out, TAG_NUMBER);
                // JavaScript has one NaN.
                let n = if n.is_nan() { f64::NAN } else { *n };
                out.extend_from_slice(&n.to_le_bytes());
            }
            Value::BigInt(n) => {
                put_varint(out, TAG_BIGINT);
                let (sign, magnitude) = n.to_bytes_le();
                let is_zero = sign == Sign::NoSign;
                out.push(u8::from(sign == Sign::Minus));
                put_bytes(out, if is_zero { &[] } else { &magnitude });
            }
            Value::String(text) => {
                put_varint(out, TAG_STRING);
                put_bytes(out, text.as_bytes());
            }
            Value::ByteArray(bytes) => {
                put_varint(out, TAG_BYTE_ARRAY);
                put_bytes(out, bytes);
            }
            Value::Symbol(name) => {
                put_varint(out, TAG_SYMBOL);
                put_bytes(out, name.as_bytes());
            }
            Value::Array(items) => {
                put_varint(out, TAG_ARRAY);
                put_varint(out, items.len() as u64);
                for item in items.iter() {
                    self.write(item, out);
                }
            }
            Value::Record(record) => {
                put_varint(out, TAG_RECORD);
                put_varint(out, record.len() as u64);
                for (name, item) in record.iter() {
                    put_bytes(out, name.as_bytes());
                    self.write(item, out);
                }
            }
            Value::Tagged(tagged) => {
                put_varint(out, TAG_TAGGED);
                put_bytes(out, tagged.tag.as_bytes());
                self.write(&tagged.payload, out);
            }
            Value::Remotable(reference) => {
                put_varint(out, TAG_REMOTABLE);
                put_varint(out, u64::from(self.slot_of(reference).unwrap_or(0)));
            }
            Value::Promise(reference) => {
                put_varint(out, TAG_PROMISE);
                put_varint(out, u64::from(self.slot_of(reference).unwrap_or(0)));
            }
            Value::Error(error) => {
                put_varint(out, TAG_ERROR);
                write_error(error, out);
            }
        }
    }
}

#[derive(Clone, Copy)]
enum Root<'v> {
    Value(&'v Value),
    List(&'v [Value]),
}

fn collect_error(
    error: &ErrorValue,
    depth: usize,
    limits: &MarshalLimits,
    values: &mut usize,
) -> Result<(), MarshalError> {
    check_depth(depth, limits)?;
    check_size("string bytes", error.name.len(), limits.max_string_bytes)?;
    check_size("string bytes", error.message.len(), limits.max_string_bytes)?;
    check_size("error list length", error.errors.len(), limits.max_array_len)?;
    if let Some(cause) = &error.cause {
        *values += 1;
        collect_error(cause, depth + 1, limits, values)?;
    }
    for nested in &error.errors {
        *values += 1;
        collect_error(nested, depth + 1, limits, values)?;
    }
    if *values > limits.max_values {
        return Err(too_large("values in body", *values, limits.max_values));
    }
    Ok(())
}

fn write_error(error: &ErrorValue, out: &mut Vec<u8>) {
    put_bytes(out, error.name.as_bytes());
    put_bytes(out, error.message.as_bytes());
    match &error.cause {
        Some(cause) => {
            out.push(1);
            write_error(cause, out);
        }
        None => out.push(0),
    }
    put_varint(out, error.errors.len() as u64);
    for nested in &error.errors {
        write_error(nested, out);
    }
}

fn check_depth(depth: usize, limits: &MarshalLimits) -> Result<(), MarshalError> {
    if depth > limits.max_depth {
        Err(MarshalError::TooDeep {
            limit: limits.max_depth,
        })
    } else {
        Ok(())
    }
}

fn check_size(what: &'static str, size: usize, limit: usize) -> Result<(), MarshalError> {
    if size > limit {
        Err(too_large(what, size, limit))
    } else {
        Ok(())
    }
}

fn too_large(what: &'static str, claimed: usize, limit: usize) -> MarshalError {
    MarshalError::TooLarge {
        what,
        claimed: claimed as u64,
        limit: limit as u64,
    }
}

/// Encodes `value` into a fresh buffer (a convenience; the session reuses
/// a [`Marshaller`]).
pub fn encode(value: &Value, slots: &mut dyn EncodeSlots, limits: &MarshalLimits) -> Result<Vec<u8>, MarshalError> {
    let mut out = Vec::new();
    Marshaller::new().encode(value, slots, limits, &mut out)?;
    Ok(out)
}

/// The body of an empty copyArray (no slots): the arguments of most calls.
const EMPTY_ARRAY_BODY: [u8; 3] = [0, TAG_ARRAY as u8, 0];

/// Decodes one complete body.
pub fn decode(bytes: &[u8], slots: &mut dyn DecodeSlots, limits: &MarshalLimits) -> Result<Value, MarshalError> {
    // What the general path below gives for these bytes, within the same
    // limits, without its set-up.
    if bytes == EMPTY_ARRAY_BODY && limits.max_depth >= 1 && limits.max_values >= 1 {
        return Ok(Value::Array(crate::value::empty_items()));
    }
    let mut reader = Reader::new(bytes);
    let slot_count = reader.length("slots", limits.max_slots, 3)?;
    let mut table = Vec::with_capacity(slot_count);
    for _ in 0..slot_count {
        let tag = reader.varint()?;
        let position = reader.varint()?;
        let descriptor = Descriptor::from_tag(tag, position)?;
        let interface = if reader.option()? {
            Some(reader.str("interface", limits.max_string_bytes)?)
        } else {
            None
        };
        table.push((descriptor, interface));
    }
    let mut decoder = Decoder {
        reader,
        limits,
        slots,
        table,
        resolved: Vec::with_capacity(slot_count),
        values_left: limits.max_values,
    };
    let value = decoder.value(0)?;
    if decoder.reader.remaining() > 0 {
        return Err(MarshalError::TrailingBytes(decoder.reader.remaining()));
    }
    let unused = decoder.table.len() - decoder.resolved.len();
    if unused > 0 {
        return Err(MarshalError::UnusedSlots { unused });
    }
    Ok(value)
}

struct Decoder<'a, 's> {
    reader: Reader<'a>,
    limits: &'s MarshalLimits,
    slots: &'s mut dyn DecodeSlots,
    table: Vec<(Descriptor, Option<&'a str>)>,
    resolved: Vec<(Reference, RefStyle)>,
    values_left: usize,
}

impl Decoder<'_, '_> {
    fn count_values(&mut self, count: usize) -> Result<(), MarshalError> {
        if count > self.values_left {
            return Err(too_large("values in body", count, self.values_left));
        }
        self.values_left -= count;
        Ok(())
    }

    fn string(&mut self, what: &'static str) -> Result<Arc<str>, MarshalError> {
        Ok(Arc::from(self.reader.str(what, self.limits.max_string_bytes)?))
    }

    fn value(&mut self, depth: usize) -> Result<Value, MarshalError> {
        self.count_values(1)?;
        let tag = self.reader.varint()?;
        Ok(match tag {
            TAG_UNDEFINED => Value::Undefined,
            TAG_NULL => Value::Null,
            TAG_BOOLEAN => Value::Boolean(self.reader.bool()?),
            TAG_NUMBER => Value::Number(self.reader.f64()?),
            TAG_BIGINT => {
                let negative = self.reader.bool()?;
                let magnitude = self.reader.bytes("bigint bytes", self.limits.max_bigint_bytes)?;
                if magnitude.last() == Some(&0) || (negative && magnitude.is_empty()) {
                    return Err(MarshalError::NonCanonicalBigInt);
                }
                let sign = if negative { Sign::Minus } else { Sign::Plus };
                Value::BigInt(Arc::new(BigInt::from_bytes_le(sign, magnitude)))
            }
            TAG_STRING => Value::String(self.string("string")?),
            TAG_BYTE_ARRAY => Value::ByteArray(Arc::from(
                self.reader.bytes("byteArray length", self.limits.max_byte_array_len)?,
            )),
            TAG_SYMBOL => Value::symbol(self.string("symbol name")?)?,
            TAG_ARRAY => {
                check_depth(depth + 1, self.limits)?;
                let len = self.reader.length("array length", self.limits.max_array_len, 1)?;
                if len > self.values_left {
                    return Err(too_large("values in body", len, self.values_left));
                }
                let mut items = Vec::with_capacity(len);
                for _ in 0..len {
                    items.push(self.value(depth + 1)?);
                }
                Value::list(items)
            }
            TAG_RECORD => {
                check_depth(depth + 1, self.limits)?;
                let len = self
                    .reader
                    .length("record properties", self.limits.max_record_properties, 2)?;
                if len > self.values_left {
                    return Err(too_large("values in body", len, self.values_left));
                }
                let mut entries = Vec::with_capacity(len);
                for _ in 0..len {
                    let name = self.string("property name")?;
                    entries.push((name, self.value(depth + 1)?));
                }
                Value::Record(Arc::new(Record::from_entries(entries)?))
            }
            TAG_TAGGED => {
                check_depth(depth + 1, self.limits)?;
                let tag = self.string("tag")?;
                let payload = self.value(depth + 1)?;
                Value::Tagged(Arc::new(Tagged { tag, payload }))
            }
            TAG_REMOTABLE => Value::Remotable(self.slot(RefStyle::Remotable)?),
            TAG_PROMISE => Value::Promise(self.slot(RefStyle::Promise)?),
            TAG_ERROR => Value::Error(Arc::new(self.error(depth + 1)?)),
            _ => return Err(MarshalError::UnknownTag { what: "value", tag }),
        })
    }

    fn error(&mut self, depth: usize) -> Result<ErrorValue, MarshalError> {
        check_depth(depth, self.limits)?;
        let name = self.string("error name")?;
        let message = self.string("error message")?;
        let cause = if self.reader.option()? {
            self.count_values(1)?;
            Some(Arc::new(self.error(depth + 1)?))
        } else {
            None
        };
        // Each nested error takes at least four bytes.
        let len = self.reader.length("error list length", self.limits.max_array_len, 4)?;
        self.count_values(len)?;
        let mut errors = Vec::with_capacity(len);
        for _ in 0..len {
            errors.push(Arc::new(self.error(depth + 1)?));
        }
        Ok(ErrorValue {
            name,
            message,
            cause,
            errors,
        })
    }

    fn slot(&mut self, style: RefStyle) -> Result<Reference, MarshalError> {
        let index = self.reader.varint()?;
        let expected = self.resolved.len();
        if let Some((reference, known_style)) = self.resolved.get(index as usize) {
            if *known_style != style {
                return Err(MarshalError::SlotStyleMismatch { index });
            }
            return Ok(reference.clone());
        }
        if index > expected as u64 {
            return Err(MarshalError::SlotOutOfOrder { index, expected });
        }
        let Some(&(descriptor, interface)) = self.table.get(expected) else {
            return Err(MarshalError::SlotOutOfOrder { index, expected });
        };
        let reference = self.slots.reference(descriptor, style, interface)?;
        self.resolved.push((reference.clone(), style));
        Ok(reference)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_array_body_reads_as_the_general_path_reads_it() {
        let limits = MarshalLimits::default();
        let body = encode(&Value::list(Vec::new()), &mut NoSlots, &limits).unwrap();
        assert_eq!(body, EMPTY_ARRAY_BODY);
        let decoded = decode(&body, &mut NoSlots, &limits).unwrap();
        assert!(decoded.same_as(&Value::array([])));
        let too_shallow = MarshalLimits {
            max_depth: 0,
            ..MarshalLimits::default()
        };
        assert_eq!(
            decode(&body, &mut NoSlots, &too_shallow).unwrap_err(),
            MarshalError::TooDeep { limit: 0 }
        );
        let no_values = MarshalLimits {
            max_values: 0,
            ..MarshalLimits::default()
        };
        assert!(matches!(
            decode(&body, &mut NoSlots, &no_values),
            Err(MarshalError::TooLarge { .. })
        ));
    }
}
