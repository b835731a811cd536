//! Bodies in Endo's CapTP: legacy capdata (JSON with `@qclass` markers),
//! which `@endo/captp` 4.5 writes, and smallcaps (`#` + JSON), which its
//! decoder also reads. A body travels with a slot list; here slots are
//! only indices, and the caller says what each stands for.
//!
//! Decoding is bounded as marshalled bodies are ([`MarshalLimits`]):
//! depth while parsing, then sizes and the number of values. Encoding
//! writes what `JSON.stringify` would for the same passable in
//! `@endo/marshal` 1.10 (properties in JavaScript's order, `@qclass: hilbert`
//! for records that have a `@qclass` property, errors without `errorId`),
//! and refuses byte arrays, which capdata has no form for.

use std::str::FromStr;
use std::sync::Arc;

use num_bigint::BigInt;

use super::json::{self, Json, JsonError};
use crate::marshal::{MarshalLimits, RefStyle};
use crate::smallcaps::{self, SlotKind, SmallcapsError};
use crate::value::{ErrorValue, Record, Reference, Value};

/// A slot used in an encoded body: the reference and the slot text the
/// caller gave it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotText {
    pub slot: String,
    /// Sent with the slot's first occurrence in the body, for remotables.
    pub iface: Option<String>,
}

/// An encoded body and its slots, as `@endo/marshal`'s `serialize` returns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CapData {
    pub body: String,
    pub slots: Vec<String>,
}

/// Why a body could not be read or written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CapDataError {
    #[error("capdata body: {0}")]
    Json(#[from] JsonError),
    #[error("capdata body nests deeper than {limit}")]
    TooDeep { limit: usize },
    #[error("capdata body: {what} of {claimed} exceeds the limit of {limit}")]
    TooLarge {
        what: &'static str,
        claimed: usize,
        limit: usize,
    },
    #[error("capdata body: {0}")]
    Invalid(String),
    #[error(transparent)]
    Smallcaps(#[from] SmallcapsError),
    #[error("capdata cannot carry {0}")]
    Unencodable(&'static str),
    #[error("capdata slot {index}: {reason}")]
    Slot { index: usize, reason: String },
}

fn invalid(problem: impl Into<String>) -> CapDataError {
    CapDataError::Invalid(problem.into())
}

/// What a decoder asks of its caller for each slot index the body uses
/// (once per index): the reference, as a `Value::Remotable` or
/// `Value::Promise`. `iface` is the interface name sent with it, if any.
pub type ResolveSlot<'r> = dyn FnMut(usize, Option<&str>) -> Result<Value, String> + 'r;

/// Decodes `body` (capdata, or smallcaps when it starts with `#`), whose
/// slot list has `slot_count` entries.
pub fn decode(
    body: &str,
    slot_count: usize,
    limits: &MarshalLimits,
    resolve: &mut ResolveSlot<'_>,
) -> Result<Value, CapDataError> {
    if slot_count > limits.max_slots {
        return Err(CapDataError::TooLarge {
            what: "slots",
            claimed: slot_count,
            limit: limits.max_slots,
        });
    }
    let mut slots = Slots {
        resolved: vec![None; slot_count],
        resolve,
    };
    if body.starts_with('#') {
        let mut failure = None;
        let value = smallcaps::decode(body, limits.max_depth, |slot| {
            let style = match slot.kind {
                SlotKind::Remotable => RefStyle::Remotable,
                SlotKind::Promise => RefStyle::Promise,
            };
            match slots.get(slot.index, slot.interface, Some(style)) {
                Ok(Value::Remotable(reference) | Value::Promise(reference)) => Ok(reference),
                Ok(_) => Err("not a reference".to_string()),
                Err(error) => {
                    let reason = error.to_string();
                    failure = Some(error);
                    Err(reason)
                }
            }
        });
        if let Some(error) = failure {
            return Err(error);
        }
        let value = value?;
        // Smallcaps bodies are counted after the fact: the frame bounds
        // what the parse could allocate.
        let mut values = 0;
        check_decoded(&value, limits, &mut values)?;
        return Ok(value);
    }
    // One JSON level more than values may nest: a slot or constant is an
    // object in the JSON but a leaf in the value.
    let tree = json::parse(body, limits.max_depth.saturating_add(1)).map_err(|error| match error {
        JsonError::TooDeep { .. } => CapDataError::TooDeep {
            limit: limits.max_depth,
        },
        other => CapDataError::Json(other),
    })?;
    let mut decoder = Decoder {
        limits,
        slots,
        values_left: limits.max_values,
    };
    decoder.value(&tree, 0)
}

struct Slots<'s, 'r> {
    resolved: Vec<Option<Value>>,
    resolve: &'s mut ResolveSlot<'r>,
}

impl Slots<'_, '_> {
    fn get(&mut self, index: usize, iface: Option<&str>, style: Option<RefStyle>) -> Result<Value, CapDataError> {
        let Some(known) = self.resolved.get(index) else {
            return Err(CapDataError::Slot {
                index,
                reason: format!("beyond the {} slots sent", self.resolved.len()),
            });
        };
        let value = match known {
            Some(value) => value.clone(),
            None => {
                let value = (self.resolve)(index, iface).map_err(|reason| CapDataError::Slot { index, reason })?;
                if let Some(entry) = self.resolved.get_mut(index) {
                    *entry = Some(value.clone());
                }
                value
            }
        };
        let actual = match value {
            Value::Remotable(_) => RefStyle::Remotable,
            _ => RefStyle::Promise,
        };
        if style.is_some_and(|style| style != actual) {
            return Err(CapDataError::Slot {
                index,
                reason: format!("used as a {style:?} but the slot names a {actual:?}"),
            });
        }
        Ok(value)
    }
}

struct Decoder<'l, 's, 'r> {
    limits: &'l MarshalLimits,
    slots: Slots<'s, 'r>,
    values_left: usize,
}

impl Decoder<'_, '_, '_> {
    fn count(&mut self, count: usize) -> Result<(), CapDataError> {
        if count > self.values_left {
            return Err(CapDataError::TooLarge {
                what: "values in body",
                claimed: count,
                limit: self.limits.max_values,
            });
        }
        self.values_left -= count;
        Ok(())
    }

    fn enter(&self, depth: usize) -> Result<usize, CapDataError> {
        if depth + 1 > self.limits.max_depth {
            return Err(CapDataError::TooDeep {
                limit: self.limits.max_depth,
            });
        }
        Ok(depth + 1)
    }

    fn string(&self, text: &str) -> Result<Arc<str>, CapDataError> {
        check_size("string bytes", text.len(), self.limits.max_string_bytes)?;
        Ok(Arc::from(text))
    }

    fn value(&mut self, tree: &Json, depth: usize) -> Result<Value, CapDataError> {
        self.count(1)?;
        Ok(match tree {
            Json::Null => Value::Null,
            Json::Bool(b) => Value::Boolean(*b),
            Json::Number(n) => Value::Number(*n),
            Json::String(text) => Value::String(self.string(text)?),
            Json::Array(items) => {
                let depth = self.enter(depth)?;
                check_size("array length", items.len(), self.limits.max_array_len)?;
                let mut values = Vec::with_capacity(items.len());
                for item in items {
                    values.push(self.value(item, depth)?);
                }
                Value::Array(values.into())
            }
            Json::Object(properties) => match tree.get(QCLASS) {
                Some(Json::String(qclass)) => self.special(qclass, tree, depth)?,
                Some(_) => return Err(invalid("@qclass must be a string")),
                None => self.record(properties, depth)?,
            },
        })
    }

    fn record(&mut self, properties: &[(String, Json)], depth: usize) -> Result<Value, CapDataError> {
        let depth = self.enter(depth)?;
        check_size("record properties", properties.len(), self.limits.max_record_properties)?;
        let mut entries = Vec::with_capacity(properties.len());
        for (name, item) in properties {
            entries.push((self.string(name)?, self.value(item, depth)?));
        }
        Record::from_entries(entries)
            .map(Value::from)
            .map_err(|error| invalid(error.to_string()))
    }

    fn special(&mut self, qclass: &str, tree: &Json, depth: usize) -> Result<Value, CapDataError> {
        let field = |name: &'static str| tree.get(name);
        let text_field = |name: &'static str| -> Result<&str, CapDataError> {
            field(name)
                .and_then(Json::as_str)
                .ok_or_else(|| invalid(format!("@qclass {qclass:?} needs a string {name}")))
        };
        Ok(match qclass {
            "undefined" => Value::Undefined,
            "NaN" => Value::Number(f64::NAN),
            "Infinity" => Value::Number(f64::INFINITY),
            "-Infinity" => Value::Number(f64::NEG_INFINITY),
            "bigint" => decode_bigint(text_field("digits")?, self.limits)?,
            "@@asyncIterator" => Value::Symbol(Arc::from("@@asyncIterator")),
            "symbol" => Value::symbol(self.string(text_field("name")?)?).map_err(|error| invalid(error.to_string()))?,
            "tagged" => {
                let depth = self.enter(depth)?;
                let tag = self.string(text_field("tag")?)?;
                let payload = field("payload").ok_or_else(|| invalid("a tagged value needs a payload"))?;
                Value::tagged(tag, self.value(payload, depth)?)
            }
            "slot" => {
                let Json::Object(properties) = tree else {
                    return Err(invalid("a slot must be an object"));
                };
                if let Some((name, _)) = properties
                    .iter()
                    .find(|(name, _)| !matches!(name.as_str(), QCLASS | "index" | "iface"))
                {
                    return Err(invalid(format!("unexpected encoded slot property {name:?}")));
                }
                let index = match field("index") {
                    Some(Json::Number(n)) if *n >= 0.0 && n.fract() == 0.0 && *n <= MAX_SAFE_INTEGER => *n as usize,
                    _ => return Err(invalid("a slot index must be a natural number")),
                };
                let iface = match field("iface") {
                    None => None,
                    Some(Json::String(iface)) => Some(iface.as_str()),
                    Some(_) => return Err(invalid("a slot's iface must be a string")),
                };
                self.slots.get(index, iface, None)?
            }
            "error" => Value::Error(Arc::new(self.error(tree, depth)?)),
            "hilbert" => {
                let depth = self.enter(depth)?;
                let original = field("original").ok_or_else(|| invalid("Invalid Hilbert Hotel encoding"))?;
                let mut entries = vec![(Arc::from(QCLASS), self.value(original, depth)?)];
                if let Some(rest) = field("rest") {
                    let Json::Object(properties) = rest else {
                        return Err(invalid("Rest encoding must be a non-empty object"));
                    };
                    if properties.is_empty() {
                        return Err(invalid("Rest encoding must be a non-empty object"));
                    }
                    // The rest is decoded as a value of its own, one level down.
                    let Value::Record(rest) = self.value(rest, depth - 1)? else {
                        return Err(invalid("Rest encoding must be a record"));
                    };
                    if rest.contains(QCLASS) {
                        return Err(invalid("Rest must not contain its own definition of \"@qclass\""));
                    }
                    entries.extend(rest.iter().map(|(name, value)| (name.clone(), value.clone())));
                }
                Record::from_entries(entries)
                    .map(Value::from)
                    .map_err(|error| invalid(error.to_string()))?
            }
            "ibid" => return Err(invalid("The capData protocol no longer supports \"@qclass\" \"ibid\"")),
            other => return Err(invalid(format!("unrecognized \"@qclass\" {other:?}"))),
        })
    }

    fn error(&mut self, tree: &Json, depth: usize) -> Result<ErrorValue, CapDataError> {
        let depth = self.enter(depth)?;
        let text = |name: &'static str| -> Result<&str, CapDataError> {
            tree.get(name)
                .and_then(Json::as_str)
                .ok_or_else(|| invalid(format!("invalid error {name}: must be a string")))
        };
        let mut error = ErrorValue::new(self.string(text("name")?)?, self.string(text("message")?)?);
        if let Some(id) = tree.get("errorId")
            && !matches!(id, Json::String(_))
        {
            return Err(invalid("invalid error errorId: must be a string"));
        }
        if let Some(cause) = tree.get("cause") {
            match self.value(cause, depth)? {
                Value::Error(cause) => error.cause = Some(cause),
                _ => return Err(invalid("an error's cause must be an error")),
            }
        }
        if let Some(errors) = tree.get("errors") {
            match self.value(errors, depth)? {
                Value::Array(items) => {
                    for item in items.iter() {
                        match item {
                            Value::Error(inner) => error.errors.push(inner.clone()),
                            _ => return Err(invalid("an error's errors must all be errors")),
                        }
                    }
                }
                _ => return Err(invalid("an error's errors must be an array")),
            }
        }
        // Other properties are decoded (so that they are bounded and
        // well formed, as Endo does) and then dropped: Capstan errors
        // carry only name, message, cause and errors.
        if let Json::Object(properties) = tree {
            for (name, value) in properties {
                if !matches!(
                    name.as_str(),
                    QCLASS | "name" | "message" | "errorId" | "cause" | "errors"
                ) {
                    self.value(value, depth)?;
                }
            }
        }
        Ok(error)
    }
}

const QCLASS: &str = "@qclass";

/// 2^53 - 1: the largest integer a JavaScript number holds exactly.
pub const MAX_SAFE_INTEGER: f64 = 9_007_199_254_740_991.0;

fn check_size(what: &'static str, claimed: usize, limit: usize) -> Result<(), CapDataError> {
    if claimed > limit {
        Err(CapDataError::TooLarge { what, claimed, limit })
    } else {
        Ok(())
    }
}

fn decode_bigint(digits: &str, limits: &MarshalLimits) -> Result<Value, CapDataError> {
    let unsigned = digits.strip_prefix('-').unwrap_or(digits);
    if unsigned.is_empty() || !unsigned.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid(format!("invalid bigint digits {digits:?}")));
    }
    // A byte holds under 2.5 decimal digits: refuse longer text before
    // parsing it.
    check_size(
        "bigint digits",
        unsigned.len(),
        limits.max_bigint_bytes.saturating_mul(5) / 2,
    )?;
    let n = BigInt::from_str(digits).map_err(|_| invalid(format!("invalid bigint digits {digits:?}")))?;
    let bytes = n.bits().div_ceil(8) as usize;
    check_size("bigint bytes", bytes, limits.max_bigint_bytes)?;
    Ok(Value::bigint(n))
}

/// Bounds a smallcaps-decoded value as [`MarshalLimits`] bound capdata.
fn check_decoded(value: &Value, limits: &MarshalLimits, values: &mut usize) -> Result<(), CapDataError> {
    *values += 1;
    check_size("values in body", *values, limits.max_values)?;
    match value {
        Value::String(text) | Value::Symbol(text) => check_size("string bytes", text.len(), limits.max_string_bytes),
        Value::BigInt(n) => check_size("bigint bytes", n.bits().div_ceil(8) as usize, limits.max_bigint_bytes),
        Value::ByteArray(bytes) => check_size("byteArray length", bytes.len(), limits.max_byte_array_len),
        Value::Array(items) => {
            check_size("array length", items.len(), limits.max_array_len)?;
            items.iter().try_for_each(|item| check_decoded(item, limits, values))
        }
        Value::Record(record) => {
            check_size("record properties", record.len(), limits.max_record_properties)?;
            record.values().try_for_each(|item| check_decoded(item, limits, values))
        }
        Value::Tagged(tagged) => check_decoded(&tagged.payload, limits, values),
        _ => Ok(()),
    }
}

/// What an encoder asks of its caller for each distinct reference, in
/// order of first appearance.
pub type SlotFor<'r> = dyn FnMut(&Reference, RefStyle) -> Result<SlotText, String> + 'r;

/// Encodes `value` as a capdata body, as `@endo/marshal`'s `serialize`
/// with `serializeBodyFormat: 'capdata'` and `errorTagging: 'off'` would.
pub fn encode(value: &Value, slot_for: &mut SlotFor<'_>) -> Result<CapData, CapDataError> {
    let mut encoder = Encoder {
        out: String::new(),
        slots: Vec::new(),
        references: Vec::new(),
        slot_for,
    };
    encoder.value(value)?;
    Ok(CapData {
        body: encoder.out,
        slots: encoder.slots,
    })
}

struct Encoder<'s, 'r> {
    out: String,
    slots: Vec<String>,
    references: Vec<Reference>,
    slot_for: &'s mut SlotFor<'r>,
}

impl Encoder<'_, '_> {
    fn qclass(&mut self, qclass: &str) {
        self.out.push_str("{\"@qclass\":");
        json::write_string(&mut self.out, qclass);
    }

    fn value(&mut self, value: &Value) -> Result<(), CapDataError> {
        match value {
            Value::Undefined => self.out.push_str(r#"{"@qclass":"undefined"}"#),
            Value::Null => self.out.push_str("null"),
            Value::Boolean(b) => self.out.push_str(if *b { "true" } else { "false" }),
            Value::Number(n) if n.is_nan() => self.out.push_str(r#"{"@qclass":"NaN"}"#),
            Value::Number(n) if n.is_infinite() => self.out.push_str(if *n > 0.0 {
                r#"{"@qclass":"Infinity"}"#
            } else {
                r#"{"@qclass":"-Infinity"}"#
            }),
            Value::Number(n) => json::write_number(&mut self.out, *n),
            Value::BigInt(n) => {
                self.qclass("bigint");
                self.out.push_str(",\"digits\":");
                json::write_string(&mut self.out, &n.to_string());
                self.out.push('}');
            }
            Value::String(text) => json::write_string(&mut self.out, text),
            Value::Symbol(name) => {
                self.qclass("symbol");
                self.out.push_str(",\"name\":");
                json::write_string(&mut self.out, name);
                self.out.push('}');
            }
            Value::ByteArray(_) => return Err(CapDataError::Unencodable("a byte array")),
            Value::Array(items) => {
                self.out.push('[');
                for (index, item) in items.iter().enumerate() {
                    if index > 0 {
                        self.out.push(',');
                    }
                    self.value(item)?;
                }
                self.out.push(']');
            }
            Value::Record(record) => self.record(record)?,
            Value::Tagged(tagged) => {
                self.qclass("tagged");
                self.out.push_str(",\"tag\":");
                json::write_string(&mut self.out, &tagged.tag);
                self.out.push_str(",\"payload\":");
                self.value(&tagged.payload)?;
                self.out.push('}');
            }
            Value::Remotable(reference) => self.slot(reference, RefStyle::Remotable)?,
            Value::Promise(reference) => self.slot(reference, RefStyle::Promise)?,
            Value::Error(error) => self.error(error),
        }
        Ok(())
    }

    /// Properties in the order `JSON.stringify` lists them: array-index
    /// names first, numerically, then the rest in sorted (UTF-16) order,
    /// which is the record's own order.
    fn record(&mut self, record: &Record) -> Result<(), CapDataError> {
        if let Some(original) = record.get(QCLASS) {
            self.qclass("hilbert");
            self.out.push_str(",\"original\":");
            self.value(original)?;
            if record.len() > 1 {
                self.out.push_str(",\"rest\":");
                let rest = Record::from_entries(
                    record
                        .iter()
                        .filter(|(name, _)| name.as_ref() != QCLASS)
                        .map(|(name, value)| (name.clone(), value.clone())),
                )
                .map_err(|error| invalid(error.to_string()))?;
                self.record(&rest)?;
            }
            self.out.push('}');
            return Ok(());
        }
        let mut indices: Vec<(u32, &Arc<str>, &Value)> = record
            .iter()
            .filter_map(|(name, value)| json::is_array_index(name).map(|index| (index, name, value)))
            .collect();
        indices.sort_by_key(|(index, _, _)| *index);
        let ordered = indices
            .iter()
            .map(|(_, name, value)| (*name, *value))
            .chain(record.iter().filter(|(name, _)| json::is_array_index(name).is_none()));
        self.out.push('{');
        for (position, (name, value)) in ordered.enumerate() {
            if position > 0 {
                self.out.push(',');
            }
            json::write_string(&mut self.out, name);
            self.out.push(':');
            self.value(value)?;
        }
        self.out.push('}');
        Ok(())
    }

    fn slot(&mut self, reference: &Reference, style: RefStyle) -> Result<(), CapDataError> {
        if let Some(index) = self.references.iter().position(|known| known.same(reference)) {
            self.qclass("slot");
            self.out.push_str(&format!(",\"index\":{index}}}"));
            return Ok(());
        }
        let index = self.references.len();
        let SlotText { slot, iface } =
            (self.slot_for)(reference, style).map_err(|reason| CapDataError::Slot { index, reason })?;
        self.references.push(reference.clone());
        self.slots.push(slot);
        self.qclass("slot");
        if let (Some(iface), RefStyle::Remotable) = (iface, style) {
            self.out.push_str(",\"iface\":");
            json::write_string(&mut self.out, &iface);
        }
        self.out.push_str(&format!(",\"index\":{index}}}"));
        Ok(())
    }

    fn error(&mut self, error: &ErrorValue) {
        self.qclass("error");
        self.out.push_str(",\"message\":");
        json::write_string(&mut self.out, &error.message);
        self.out.push_str(",\"name\":");
        json::write_string(&mut self.out, &error.name);
        if let Some(cause) = &error.cause {
            self.out.push_str(",\"cause\":");
            self.error(cause);
        }
        if !error.errors.is_empty() {
            self.out.push_str(",\"errors\":[");
            for (index, inner) in error.errors.iter().enumerate() {
                if index > 0 {
                    self.out.push(',');
                }
                self.error(inner);
            }
            self.out.push(']');
        }
        self.out.push('}');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_slots(_: usize, _: Option<&str>) -> Result<Value, String> {
        Err("no slots here".into())
    }

    fn decode_with(body: &str, limits: &MarshalLimits) -> Result<Value, CapDataError> {
        decode(body, 0, limits, &mut no_slots)
    }

    #[test]
    fn bodies_beyond_the_marshal_limits_are_refused() {
        let small = MarshalLimits {
            max_depth: 2,
            max_array_len: 3,
            max_record_properties: 2,
            max_string_bytes: 4,
            max_bigint_bytes: 2,
            max_slots: 1,
            max_values: 5,
            ..MarshalLimits::default()
        };
        assert!(decode_with("[[1]]", &small).is_ok());
        assert!(matches!(
            decode_with("[[[1]]]", &small),
            Err(CapDataError::TooDeep { limit: 2 })
        ));
        assert!(matches!(
            decode_with(r#"[{"@qclass":"tagged","tag":"t","payload":[1]}]"#, &small),
            Err(CapDataError::TooDeep { limit: 2 })
        ));
        // A slot or constant object is a leaf, however deep its JSON.
        assert!(decode_with(r#"[[{"@qclass":"undefined"}]]"#, &small).is_ok());
        for (body, what) in [
            ("[1,2,3,4]", "array length"),
            (r#"{"a":1,"b":2,"c":3}"#, "record properties"),
            (r#""hello""#, "string bytes"),
            (r#"{"@qclass":"bigint","digits":"123456"}"#, "bigint digits"),
            (r#"{"@qclass":"bigint","digits":"99999"}"#, "bigint bytes"),
            ("[[1,1],[1,1]]", "values in body"),
            (r##"#["a","b","c","d"]"##, "array length"),
        ] {
            match decode_with(body, &small) {
                Err(CapDataError::TooLarge { what: found, .. }) => assert_eq!(found, what, "{body}"),
                other => panic!("{body}: {other:?}"),
            }
        }
        assert!(matches!(
            decode("1", 2, &small, &mut no_slots),
            Err(CapDataError::TooLarge { what: "slots", .. })
        ));
    }

    #[test]
    fn byte_arrays_have_no_capdata_form() {
        let value = Value::array([Value::bytes(vec![1u8])]);
        let refused = encode(&value, &mut |_: &Reference, _: RefStyle| Err(String::new()));
        assert_eq!(refused, Err(CapDataError::Unencodable("a byte array")));
    }
}
