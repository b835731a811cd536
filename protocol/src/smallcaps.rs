//! Endo's smallcaps body encoding (`#` + JSON), so that Capstan can read
//! and write what JavaScript Endo peers and tools produce.
//!
//! Strings starting with one of `!"#$%&'()*+,-` are escaped with `!`;
//! `#undefined`, `#NaN`, `#Infinity`, `#-Infinity` are constants; `+N`/`-N`
//! are bigints; `%name` symbols; `$i.iface` remotables and `&i` promises
//! refer to slots; `{"#tag", "payload"}` is a tagged value and
//! `{"#error", "name", ...}` an error. Endo has no form for byte arrays
//! yet; Capstan writes them as `*` followed by lowercase hex, which Endo's
//! decoder refuses rather than misreads.

use std::str::FromStr;
use std::sync::Arc;

use num_bigint::BigInt;
use serde_json::{Map, Number, Value as Json};

use crate::quote::js_number;
use crate::value::{ErrorValue, Record, Reference, Value};

/// What a slot reference in a body stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotKind {
    Remotable,
    Promise,
}

/// A slot reference read from a body.
#[derive(Clone, Copy, Debug)]
pub struct Slot<'a> {
    pub kind: SlotKind,
    pub index: usize,
    /// The interface name, sent with a remotable's first occurrence.
    pub interface: Option<&'a str>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SmallcapsError {
    #[error("smallcaps body must start with \"#\"")]
    MissingPrefix,
    #[error("smallcaps body is not JSON: {0}")]
    Json(String),
    #[error("smallcaps body nests deeper than {0}")]
    TooDeep(usize),
    #[error("unknown constant {0:?}")]
    UnknownConstant(String),
    #[error("Special char {0:?} reserved for future use: {1:?}")]
    ReservedSpecial(char, String),
    #[error("invalid bigint {0:?}")]
    BadBigInt(String),
    #[error("invalid byte array {0:?}")]
    BadBytes(String),
    #[error("invalid slot reference {0:?}")]
    BadSlot(String),
    #[error("invalid symbol: {0}")]
    BadSymbol(String),
    #[error("Unrecognized record type {0:?}")]
    UnrecognizedRecordType(String),
    #[error("invalid tagged encoding: {0}")]
    BadTagged(String),
    #[error("invalid error encoding: {0}")]
    BadError(String),
    #[error("non-finite or unrepresentable number {0}")]
    BadNumber(String),
    #[error("duplicate property name {0:?}")]
    DuplicateProperty(String),
    #[error("cannot resolve slot {0}: {1}")]
    Slot(usize, String),
}

/// Nesting allowed in a decoded body unless the caller says otherwise.
pub const DEFAULT_MAX_DEPTH: usize = 64;

/// Decodes a smallcaps body. `resolve_slot` turns each slot reference into
/// a reference; it is called for every occurrence, and should return the
/// same reference for the same index.
pub fn decode(
    body: &str,
    max_depth: usize,
    mut resolve_slot: impl FnMut(Slot<'_>) -> Result<Reference, String>,
) -> Result<Value, SmallcapsError> {
    let json = body.strip_prefix('#').ok_or(SmallcapsError::MissingPrefix)?;
    let tree: Json = serde_json::from_str(json).map_err(|error| SmallcapsError::Json(error.to_string()))?;
    decode_tree(&tree, 0, max_depth, &mut resolve_slot)
}

fn decode_tree(
    tree: &Json,
    depth: usize,
    max_depth: usize,
    resolve_slot: &mut dyn FnMut(Slot<'_>) -> Result<Reference, String>,
) -> Result<Value, SmallcapsError> {
    if depth > max_depth {
        return Err(SmallcapsError::TooDeep(max_depth));
    }
    Ok(match tree {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Boolean(*b),
        Json::Number(n) => Value::Number(n.as_f64().ok_or_else(|| SmallcapsError::BadNumber(n.to_string()))?),
        Json::String(text) => decode_string(text, resolve_slot)?,
        Json::Array(items) => Value::array(
            items
                .iter()
                .map(|item| decode_tree(item, depth + 1, max_depth, resolve_slot))
                .collect::<Result<Vec<_>, _>>()?,
        ),
        Json::Object(map) => decode_object(map, depth, max_depth, resolve_slot)?,
    })
}

fn decode_string(
    text: &str,
    resolve_slot: &mut dyn FnMut(Slot<'_>) -> Result<Reference, String>,
) -> Result<Value, SmallcapsError> {
    let Some(first) = text.chars().next() else {
        return Ok(Value::from(""));
    };
    let rest = &text[first.len_utf8()..];
    Ok(match first {
        '!' => Value::from(rest),
        '%' => Value::symbol(rest).map_err(|error| SmallcapsError::BadSymbol(error.to_string()))?,
        '#' => match text {
            "#undefined" => Value::Undefined,
            "#NaN" => Value::Number(f64::NAN),
            "#Infinity" => Value::Number(f64::INFINITY),
            "#-Infinity" => Value::Number(f64::NEG_INFINITY),
            _ => return Err(SmallcapsError::UnknownConstant(text.to_string())),
        },
        '+' | '-' => {
            let digits = if first == '+' { rest } else { text };
            let valid = !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit());
            if !valid {
                return Err(SmallcapsError::BadBigInt(text.to_string()));
            }
            Value::bigint(BigInt::from_str(digits).map_err(|_| SmallcapsError::BadBigInt(text.to_string()))?)
        }
        '$' | '&' => {
            let (index_text, interface) = match rest.split_once('.') {
                Some((index, interface)) if first == '$' => (index, Some(interface)),
                _ => (rest, None),
            };
            let index: usize = index_text
                .parse()
                .map_err(|_| SmallcapsError::BadSlot(text.to_string()))?;
            let kind = if first == '$' {
                SlotKind::Remotable
            } else {
                SlotKind::Promise
            };
            let reference =
                resolve_slot(Slot { kind, index, interface }).map_err(|why| SmallcapsError::Slot(index, why))?;
            match kind {
                SlotKind::Remotable => Value::Remotable(reference),
                SlotKind::Promise => Value::Promise(reference),
            }
        }
        '*' => Value::bytes(decode_hex(rest).ok_or_else(|| SmallcapsError::BadBytes(text.to_string()))?),
        c if is_special(c) => return Err(SmallcapsError::ReservedSpecial(c, text.to_string())),
        _ => Value::from(text),
    })
}

fn decode_object(
    map: &Map<String, Json>,
    depth: usize,
    max_depth: usize,
    resolve_slot: &mut dyn FnMut(Slot<'_>) -> Result<Reference, String>,
) -> Result<Value, SmallcapsError> {
    if let Some(tag) = map.get("#tag") {
        let Json::String(tag) = tag else {
            return Err(SmallcapsError::BadTagged("the tag must be a string".into()));
        };
        if map.len() != 2 || !map.contains_key("payload") {
            return Err(SmallcapsError::BadTagged("expected exactly #tag and payload".into()));
        }
        let tag = match decode_string(tag, resolve_slot)? {
            Value::String(tag) => tag,
            _ => return Err(SmallcapsError::BadTagged("the tag must be a string".into())),
        };
        let payload = decode_tree(&map["payload"], depth + 1, max_depth, resolve_slot)?;
        return Ok(Value::tagged(tag, payload));
    }
    if map.contains_key("#error") {
        return decode_error(map, depth, max_depth, resolve_slot).map(Value::error);
    }
    let mut entries: Vec<(Arc<str>, Value)> = Vec::with_capacity(map.len());
    for (encoded_name, value) in map {
        if encoded_name.starts_with('#') {
            return Err(SmallcapsError::UnrecognizedRecordType(encoded_name.clone()));
        }
        let name = match decode_string(encoded_name, resolve_slot)? {
            Value::String(name) => name,
            _ => return Err(SmallcapsError::UnrecognizedRecordType(encoded_name.clone())),
        };
        entries.push((name, decode_tree(value, depth + 1, max_depth, resolve_slot)?));
    }
    Record::from_entries(entries)
        .map(Value::from)
        .map_err(|error| SmallcapsError::DuplicateProperty(error.to_string()))
}

fn decode_error(
    map: &Map<String, Json>,
    depth: usize,
    max_depth: usize,
    resolve_slot: &mut dyn FnMut(Slot<'_>) -> Result<Reference, String>,
) -> Result<ErrorValue, SmallcapsError> {
    let text_field = |field: &str| -> Result<Option<String>, SmallcapsError> {
        match map.get(field) {
            None => Ok(None),
            Some(Json::String(text)) => match text.strip_prefix('!') {
                Some(unescaped) => Ok(Some(unescaped.to_string())),
                None => Ok(Some(text.clone())),
            },
            Some(_) => Err(SmallcapsError::BadError(format!("{field} must be a string"))),
        }
    };
    let message = text_field("#error")?.unwrap_or_default();
    let name = text_field("name")?.unwrap_or_else(|| "Error".to_string());
    let mut error = ErrorValue::new(name, message);
    if let Some(cause) = map.get("cause") {
        match decode_tree(cause, depth + 1, max_depth, resolve_slot)? {
            Value::Error(cause) => error.cause = Some(cause),
            _ => return Err(SmallcapsError::BadError("cause must be an error".into())),
        }
    }
    if let Some(errors) = map.get("errors") {
        match decode_tree(errors, depth + 1, max_depth, resolve_slot)? {
            Value::Array(items) => {
                for item in items.iter() {
                    match item {
                        Value::Error(inner) => error.errors.push(inner.clone()),
                        _ => return Err(SmallcapsError::BadError("errors must hold errors".into())),
                    }
                }
            }
            _ => return Err(SmallcapsError::BadError("errors must be an array".into())),
        }
    }
    Ok(error)
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|at| hex.get(at..at + 2).and_then(|pair| u8::from_str_radix(pair, 16).ok()))
        .collect()
}

fn is_special(c: char) -> bool {
    ('!'..='-').contains(&c)
}

/// Encodes a value as a smallcaps body. `slot_for` gives each reference its
/// slot index (the caller numbers them, usually by first appearance); the
/// interface name is written with the first occurrence of each slot.
pub fn encode(value: &Value, mut slot_for: impl FnMut(&Reference, SlotKind) -> usize) -> String {
    let mut written: Vec<usize> = Vec::new();
    let tree = encode_tree(value, &mut slot_for, &mut written);
    format!("#{tree}")
}

fn escape(text: &str) -> String {
    match text.chars().next() {
        Some(c) if is_special(c) => format!("!{text}"),
        _ => text.to_string(),
    }
}

fn encode_tree(
    value: &Value,
    slot_for: &mut dyn FnMut(&Reference, SlotKind) -> usize,
    written: &mut Vec<usize>,
) -> Json {
    match value {
        Value::Undefined => Json::from("#undefined"),
        Value::Null => Json::Null,
        Value::Boolean(b) => Json::Bool(*b),
        Value::Number(n) if n.is_nan() => Json::from("#NaN"),
        Value::Number(n) if n.is_infinite() => Json::from(if *n > 0.0 { "#Infinity" } else { "#-Infinity" }),
        Value::Number(n) => {
            let n = if *n == 0.0 { 0.0 } else { *n };
            if n.fract() == 0.0 && n.abs() < 9_007_199_254_740_992.0 {
                Json::from(n as i64)
            } else {
                Number::from_f64(n).map_or_else(|| Json::from(js_number(n)), Json::Number)
            }
        }
        Value::BigInt(n) if n.sign() == num_bigint::Sign::Minus => Json::from(n.to_string()),
        Value::BigInt(n) => Json::from(format!("+{n}")),
        Value::String(text) => Json::from(escape(text)),
        Value::Symbol(name) => Json::from(format!("%{name}")),
        Value::ByteArray(bytes) => {
            let mut hex = String::with_capacity(1 + bytes.len() * 2);
            hex.push('*');
            for byte in bytes.iter() {
                hex.push_str(&format!("{byte:02x}"));
            }
            Json::from(hex)
        }
        Value::Array(items) => Json::Array(items.iter().map(|item| encode_tree(item, slot_for, written)).collect()),
        Value::Record(record) => {
            let mut map = Map::new();
            for (name, item) in record.iter() {
                map.insert(escape(name), encode_tree(item, slot_for, written));
            }
            Json::Object(map)
        }
        Value::Tagged(tagged) => {
            let mut map = Map::new();
            map.insert("#tag".into(), Json::from(escape(&tagged.tag)));
            map.insert("payload".into(), encode_tree(&tagged.payload, slot_for, written));
            Json::Object(map)
        }
        Value::Remotable(reference) => {
            let index = slot_for(reference, SlotKind::Remotable);
            if written.contains(&index) {
                Json::from(format!("${index}"))
            } else {
                written.push(index);
                Json::from(format!("${index}.{}", reference.interface()))
            }
        }
        Value::Promise(reference) => Json::from(format!("&{}", slot_for(reference, SlotKind::Promise))),
        Value::Error(error) => Json::Object(encode_error(error)),
    }
}

/// Errors carry no references, only text and nested errors.
fn encode_error(error: &ErrorValue) -> Map<String, Json> {
    let mut map = Map::new();
    map.insert("#error".into(), Json::from(escape(&error.message)));
    map.insert("name".into(), Json::from(escape(&error.name)));
    if let Some(cause) = &error.cause {
        map.insert("cause".into(), Json::Object(encode_error(cause)));
    }
    if !error.errors.is_empty() {
        let errors = error
            .errors
            .iter()
            .map(|inner| Json::Object(encode_error(inner)))
            .collect();
        map.insert("errors".into(), Json::Array(errors));
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{list, record};

    fn no_slots(_: Slot<'_>) -> Result<Reference, String> {
        Err("no slots here".into())
    }

    #[test]
    fn round_trips_special_strings_and_constants() {
        let value = list![
            "!bang",
            "-dash",
            ".dot",
            Value::Undefined,
            Value::Number(f64::NAN),
            Value::bigint(-5),
            Value::bigint(7),
            Value::registered_symbol("foo"),
            record! { "#x" => 1, "a" => Value::Null },
            Value::tagged("copySet", list![]),
            Value::bytes(vec![0u8, 1, 255]),
        ];
        let body = encode(&value, |_, _| 0);
        assert_eq!(
            body,
            r##"#["!!bang","!-dash",".dot","#undefined","#NaN","-5","+7","%foo",{"!#x":1,"a":null},{"#tag":"copySet","payload":[]},"*0001ff"]"##
        );
        let decoded = decode(&body, DEFAULT_MAX_DEPTH, no_slots).expect("decodes");
        assert!(decoded.same_as(&value));
    }

    #[test]
    fn rejects_reserved_and_deep_bodies() {
        assert!(matches!(
            decode("#\"(x\"", 64, no_slots),
            Err(SmallcapsError::ReservedSpecial('(', _))
        ));
        assert!(matches!(
            decode("#\"*0\"", 64, no_slots),
            Err(SmallcapsError::BadBytes(_))
        ));
        assert!(matches!(
            decode("[1]", 64, no_slots),
            Err(SmallcapsError::MissingPrefix)
        ));
        let deep = format!("#{}{}", "[".repeat(70), "]".repeat(70));
        assert!(matches!(decode(&deep, 64, no_slots), Err(SmallcapsError::TooDeep(64))));
    }
}
