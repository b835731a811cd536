//! Rank order (a total preorder over all passables, used to sort) and key
//! order (a partial order over keys, used to compare).

use std::cmp::Ordering;

use crate::collections::{BagEntries, CopyCollection, check_key, collection_of};
use crate::quote::quote;
use crate::rejection::Rejection;
use crate::strings::compare_utf16;
use crate::value::{PassStyle, Record, Value};

/// Position of each pass style in rank order, lowest first.
fn style_rank(style: PassStyle) -> u8 {
    match style {
        PassStyle::Error => 0,
        PassStyle::CopyRecord => 1,
        PassStyle::Tagged => 2,
        PassStyle::Promise => 3,
        PassStyle::CopyArray => 4,
        PassStyle::ByteArray => 5,
        PassStyle::Boolean => 6,
        PassStyle::Number => 7,
        PassStyle::BigInt => 8,
        PassStyle::Remotable => 9,
        PassStyle::String => 10,
        PassStyle::Null => 11,
        PassStyle::Symbol => 12,
        PassStyle::Undefined => 13,
    }
}

/// Compares numbers in rank order: -0 equals 0, NaN after every other
/// number and equal to itself.
pub fn compare_numbers(a: f64, b: f64) -> Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        // Neither is NaN, so partial_cmp is total here; -0 == 0 already.
        (false, false) => a.partial_cmp(&b).unwrap_or(Ordering::Equal),
    }
}

/// Rank order: total over all passables, with ties (errors, promises,
/// remotables each tie among themselves).
pub fn compare_rank(a: &Value, b: &Value) -> Ordering {
    let (style_a, style_b) = (a.pass_style(), b.pass_style());
    if style_a != style_b {
        return style_rank(style_a).cmp(&style_rank(style_b));
    }
    match (a, b) {
        (Value::Boolean(x), Value::Boolean(y)) => x.cmp(y),
        (Value::Number(x), Value::Number(y)) => compare_numbers(*x, *y),
        (Value::BigInt(x), Value::BigInt(y)) => x.cmp(y),
        (Value::String(x), Value::String(y)) | (Value::Symbol(x), Value::Symbol(y)) => compare_utf16(x, y),
        (Value::ByteArray(x), Value::ByteArray(y)) => x.len().cmp(&y.len()).then_with(|| x.cmp(y)),
        (Value::Array(x), Value::Array(y)) => compare_rank_sequences(x, y),
        (Value::Record(x), Value::Record(y)) => compare_records_rank(x, y),
        (Value::Tagged(x), Value::Tagged(y)) => {
            compare_utf16(&x.tag, &y.tag).then_with(|| compare_rank(&x.payload, &y.payload))
        }
        // Errors, promises, remotables, undefined, null: all tie.
        _ => Ordering::Equal,
    }
}

fn compare_rank_sequences(a: &[Value], b: &[Value]) -> Ordering {
    for (x, y) in a.iter().zip(b) {
        let order = compare_rank(x, y);
        if order != Ordering::Equal {
            return order;
        }
    }
    a.len().cmp(&b.len())
}

/// Records rank first by their names sorted in reverse, as arrays of
/// strings, then by their values in that same order.
fn compare_records_rank(a: &Record, b: &Record) -> Ordering {
    let by_names = compare_records_rank_names(a, b);
    if by_names != Ordering::Equal {
        return by_names;
    }
    for (x, y) in a.values().rev().zip(b.values().rev()) {
        let order = compare_rank(x, y);
        if order != Ordering::Equal {
            return order;
        }
    }
    Ordering::Equal
}

/// Rank order as Endo's `compareRank` computes it: it stops, unordered, at
/// the first pair of distinct remotables it meets. Endo checks canonical
/// (sorted) order with it, so two entries that differ only after distinct
/// remotables may appear in either order.
pub fn compare_rank_short_circuit(a: &Value, b: &Value) -> Option<Ordering> {
    let (style_a, style_b) = (a.pass_style(), b.pass_style());
    if style_a != style_b {
        return Some(style_rank(style_a).cmp(&style_rank(style_b)));
    }
    match (a, b) {
        (Value::Remotable(x), Value::Remotable(y)) => x.same(y).then_some(Ordering::Equal),
        (Value::Array(x), Value::Array(y)) => {
            for (p, q) in x.iter().zip(y.iter()) {
                let order = compare_rank_short_circuit(p, q)?;
                if order != Ordering::Equal {
                    return Some(order);
                }
            }
            Some(x.len().cmp(&y.len()))
        }
        (Value::Record(x), Value::Record(y)) => {
            let by_names = compare_records_rank_names(x, y);
            if by_names != Ordering::Equal {
                return Some(by_names);
            }
            for (p, q) in x.values().rev().zip(y.values().rev()) {
                let order = compare_rank_short_circuit(p, q)?;
                if order != Ordering::Equal {
                    return Some(order);
                }
            }
            Some(Ordering::Equal)
        }
        (Value::Tagged(x), Value::Tagged(y)) => match compare_utf16(&x.tag, &y.tag) {
            Ordering::Equal => compare_rank_short_circuit(&x.payload, &y.payload),
            order => Some(order),
        },
        _ => Some(compare_rank(a, b)),
    }
}

/// Full order: rank order with remotables and promises further ordered by
/// identity, so only equal keys compare equal. Used to find duplicates.
pub fn compare_full(a: &Value, b: &Value) -> Ordering {
    let (style_a, style_b) = (a.pass_style(), b.pass_style());
    if style_a != style_b {
        return style_rank(style_a).cmp(&style_rank(style_b));
    }
    match (a, b) {
        (Value::Remotable(x), Value::Remotable(y)) | (Value::Promise(x), Value::Promise(y)) => {
            x.identity().cmp(&y.identity())
        }
        (Value::Array(x), Value::Array(y)) => {
            for (p, q) in x.iter().zip(y.iter()) {
                let order = compare_full(p, q);
                if order != Ordering::Equal {
                    return order;
                }
            }
            x.len().cmp(&y.len())
        }
        (Value::Record(x), Value::Record(y)) => {
            let by_names = compare_records_rank_names(x, y);
            if by_names != Ordering::Equal {
                return by_names;
            }
            for (p, q) in x.values().rev().zip(y.values().rev()) {
                let order = compare_full(p, q);
                if order != Ordering::Equal {
                    return order;
                }
            }
            Ordering::Equal
        }
        (Value::Tagged(x), Value::Tagged(y)) => {
            compare_utf16(&x.tag, &y.tag).then_with(|| compare_full(&x.payload, &y.payload))
        }
        _ => compare_rank(a, b),
    }
}

/// Compares the reverse-sorted name lists of two records, as arrays.
fn compare_records_rank_names(a: &Record, b: &Record) -> Ordering {
    for (x, y) in a.names().rev().zip(b.names().rev()) {
        let order = compare_utf16(x, y);
        if order != Ordering::Equal {
            return order;
        }
    }
    a.len().cmp(&b.len())
}

/// Sorts values in rank order, stably.
pub fn sort_by_rank(values: &mut [Value]) {
    values.sort_by(compare_rank);
}

/// The outcome of comparing two keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyOrder {
    Less,
    Equal,
    Greater,
    Incomparable,
}

impl KeyOrder {
    fn from_ordering(order: Ordering) -> KeyOrder {
        match order {
            Ordering::Less => KeyOrder::Less,
            Ordering::Equal => KeyOrder::Equal,
            Ordering::Greater => KeyOrder::Greater,
        }
    }

    pub fn reverse(self) -> KeyOrder {
        match self {
            KeyOrder::Less => KeyOrder::Greater,
            KeyOrder::Greater => KeyOrder::Less,
            other => other,
        }
    }
}

/// Key order, as Endo's `compareKeys`: both values must be keys, and
/// copyMaps cannot be compared yet; either is an error with Endo's message.
pub fn compare_keys(a: &Value, b: &Value) -> Result<KeyOrder, Rejection> {
    check_key(a)?;
    check_key(b)?;
    compare_checked_keys(a, b)
}

/// True when two values are keys and equal in key order.
pub fn key_eq(a: &Value, b: &Value) -> bool {
    matches!(compare_keys(a, b), Ok(KeyOrder::Equal))
}

/// Key order for values already known to be keys.
fn compare_checked_keys(a: &Value, b: &Value) -> Result<KeyOrder, Rejection> {
    if a.pass_style() != b.pass_style() {
        return Ok(KeyOrder::Incomparable);
    }
    Ok(match (a, b) {
        (Value::Remotable(x), Value::Remotable(y)) => {
            if x.same(y) {
                KeyOrder::Equal
            } else {
                KeyOrder::Incomparable
            }
        }
        (Value::Number(x), Value::Number(y)) => match compare_numbers(*x, *y) {
            Ordering::Equal => KeyOrder::Equal,
            _ if x.is_nan() || y.is_nan() => KeyOrder::Incomparable,
            order => KeyOrder::from_ordering(order),
        },
        (Value::Array(x), Value::Array(y)) => {
            for (p, q) in x.iter().zip(y.iter()) {
                let order = compare_checked_keys(p, q)?;
                if order != KeyOrder::Equal {
                    return Ok(order);
                }
            }
            KeyOrder::from_ordering(x.len().cmp(&y.len()))
        }
        (Value::Record(x), Value::Record(y)) => compare_records_as_keys(x, y)?,
        (Value::Tagged(x), Value::Tagged(y)) => {
            if x.tag != y.tag {
                return Ok(KeyOrder::Incomparable);
            }
            match (collection_of(a), collection_of(b)) {
                (Some(CopyCollection::Set(x)), Some(CopyCollection::Set(y))) => compare_sets(x, y),
                (Some(CopyCollection::Bag(x)), Some(CopyCollection::Bag(y))) => compare_bags(x, y),
                _ => {
                    return Err(Rejection::new(format!(
                        "Map comparison not yet implemented: {} vs {}",
                        quote(a),
                        quote(b)
                    )));
                }
            }
        }
        _ => KeyOrder::from_ordering(compare_rank(a, b)),
    })
}

/// Records compare only when they have the same names, then pointwise:
/// all ≤ gives ≤, all ≥ gives ≥, a mix is incomparable.
fn compare_records_as_keys(a: &Record, b: &Record) -> Result<KeyOrder, Rejection> {
    if a.len() != b.len() || a.names().zip(b.names()).any(|(x, y)| x != y) {
        return Ok(KeyOrder::Incomparable);
    }
    let mut result = KeyOrder::Equal;
    // Endo visits names in reverse order; the outcome does not depend on it.
    for (x, y) in a.values().zip(b.values()) {
        match compare_checked_keys(x, y)? {
            KeyOrder::Incomparable => return Ok(KeyOrder::Incomparable),
            KeyOrder::Equal => {}
            order if result == KeyOrder::Equal => result = order,
            order if order != result => return Ok(KeyOrder::Incomparable),
            _ => {}
        }
    }
    Ok(result)
}

/// Whether `element` is in a set of keys sorted in reverse rank order.
pub fn sorted_contains(sorted_descending: &[Value], element: &Value) -> bool {
    find_in_sorted(sorted_descending, element).is_some()
}

/// The index of `element` in keys sorted in reverse rank order. Elements
/// that tie in rank (remotables) are told apart by full order, as Endo's
/// collection merges do.
pub fn find_in_sorted(sorted_descending: &[Value], element: &Value) -> Option<usize> {
    let start = sorted_descending.partition_point(|probe| compare_rank(probe, element) == Ordering::Greater);
    sorted_descending[start..]
        .iter()
        .take_while(|probe| compare_rank(probe, element) == Ordering::Equal)
        .position(|probe| compare_full(probe, element) == Ordering::Equal)
        .map(|offset| start + offset)
}

/// Sets compare by inclusion.
fn compare_sets(a: &[Value], b: &[Value]) -> KeyOrder {
    let a_in_b = a.iter().all(|x| sorted_contains(b, x));
    let b_in_a = b.iter().all(|y| sorted_contains(a, y));
    match (a_in_b, b_in_a) {
        (true, true) => KeyOrder::Equal,
        (true, false) => KeyOrder::Less,
        (false, true) => KeyOrder::Greater,
        (false, false) => KeyOrder::Incomparable,
    }
}

/// Bags compare by the count of every element.
fn compare_bags(a: BagEntries<'_>, b: BagEntries<'_>) -> KeyOrder {
    let mut result = KeyOrder::Equal;
    let pairs = a
        .iter()
        .map(|(key, count)| count.cmp(&b.count_of(key)))
        .chain(b.iter().map(|(key, count)| a.count_of(key).cmp(count)));
    for order in pairs {
        match KeyOrder::from_ordering(order) {
            KeyOrder::Equal => {}
            order if result == KeyOrder::Equal => result = order,
            order if order != result => return KeyOrder::Incomparable,
            _ => {}
        }
    }
    result
}
