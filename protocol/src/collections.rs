//! Copy collections (copySet, copyBag, copyMap) and the key predicate.
//!
//! Collections are tagged values with canonical payloads. The makers sort
//! and deduplicate; the checks reject a payload that arrives non-canonical,
//! with Endo's messages.

use std::cmp::Ordering;

use num_bigint::BigInt;
use num_traits::Signed;

use crate::order::{compare_full, compare_rank, compare_rank_short_circuit};
use crate::quote::{json_string, quote};
use crate::rejection::Rejection;
use crate::value::Value;

pub const COPY_SET: &str = "copySet";
pub const COPY_BAG: &str = "copyBag";
pub const COPY_MAP: &str = "copyMap";

/// A borrowed view of a well-formed copy collection.
#[derive(Clone, Copy)]
pub enum CopyCollection<'a> {
    /// Elements in reverse rank order.
    Set(&'a [Value]),
    /// `[key, count]` pairs in reverse rank order of keys.
    Bag(BagEntries<'a>),
    /// Keys in reverse rank order, values in parallel.
    Map { keys: &'a [Value], values: &'a [Value] },
}

/// The entries of a well-formed copyBag.
#[derive(Clone, Copy)]
pub struct BagEntries<'a> {
    entries: &'a [Value],
}

impl<'a> BagEntries<'a> {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The `(key, count)` pairs. Entries were checked to be pairs with a
    /// bigint count when this view was made.
    pub fn iter(&self) -> impl Iterator<Item = (&'a Value, &'a BigInt)> + 'a {
        // Entries were checked to be `[key, bigint]` pairs when this view
        // was made, so the filter drops nothing.
        self.entries.iter().filter_map(|entry| match entry.as_array() {
            Some([key, Value::BigInt(count)]) => Some((key, count.as_ref())),
            _ => None,
        })
    }

    pub fn keys(&self) -> impl Iterator<Item = &'a Value> + 'a {
        self.iter().map(|(key, _)| key)
    }

    /// The count of `key`, zero when absent.
    pub fn count_of(&self, key: &Value) -> BigInt {
        let start = self.entries.partition_point(|entry| match entry.as_array() {
            Some([probe, _]) => compare_rank(probe, key) == Ordering::Greater,
            _ => false,
        });
        self.iter()
            .skip(start)
            .take_while(|(probe, _)| compare_rank(probe, key) == Ordering::Equal)
            .find(|(probe, _)| compare_full(probe, key) == Ordering::Equal)
            .map_or_else(|| BigInt::from(0), |(_, count)| count.clone())
    }
}

/// The collection a value is, if it is a well-formed copySet, copyBag or
/// copyMap.
pub fn collection_of(value: &Value) -> Option<CopyCollection<'_>> {
    check_collection(value).ok().flatten()
}

/// Checks a tagged value with a collection tag the way Endo's
/// `confirmCopySet`/`confirmCopyBag`/`confirmCopyMap` do: canonical
/// payload, and keys that are keys. Other values give `None`.
pub fn check_collection(value: &Value) -> Result<Option<CopyCollection<'_>>, Rejection> {
    let Some(tagged) = value.as_tagged() else {
        return Ok(None);
    };
    Ok(Some(match &*tagged.tag {
        COPY_SET => {
            let elements = check_elements(&tagged.payload)?;
            check_key(&tagged.payload)?;
            CopyCollection::Set(elements)
        }
        COPY_BAG => {
            let entries = check_bag_entries(&tagged.payload)?;
            check_key(&tagged.payload)?;
            CopyCollection::Bag(BagEntries { entries })
        }
        COPY_MAP => {
            let (keys, values) = check_map_payload(value, &tagged.payload)?;
            keys.iter().try_for_each(check_key)?;
            CopyCollection::Map { keys, values }
        }
        _ => return Ok(None),
    }))
}

fn check_tagged_as<'a>(value: &'a Value, tag: &str, what: &str) -> Result<CopyCollection<'a>, Rejection> {
    match value.as_tagged() {
        Some(tagged) if &*tagged.tag == tag => {}
        _ => return Err(Rejection::new(format!("Not a {what}: {}", quote(value)))),
    }
    check_collection(value)?.ok_or_else(|| Rejection::new(format!("Not a {what}: {}", quote(value))))
}

/// Checks that a value is a well-formed copySet (Endo's `assertCopySet`).
pub fn assert_copy_set(value: &Value) -> Result<&[Value], Rejection> {
    match check_tagged_as(value, COPY_SET, "copySet")? {
        CopyCollection::Set(elements) => Ok(elements),
        _ => Err(Rejection::new(format!("Not a copySet: {}", quote(value)))),
    }
}

/// Checks that a value is a well-formed copyBag (Endo's `assertCopyBag`).
pub fn assert_copy_bag(value: &Value) -> Result<BagEntries<'_>, Rejection> {
    match check_tagged_as(value, COPY_BAG, "copyBag")? {
        CopyCollection::Bag(entries) => Ok(entries),
        _ => Err(Rejection::new(format!("Not a copyBag: {}", quote(value)))),
    }
}

/// Checks that a value is a well-formed copyMap (Endo's `assertCopyMap`),
/// returning its keys and values.
pub fn assert_copy_map(value: &Value) -> Result<(&[Value], &[Value]), Rejection> {
    match check_tagged_as(value, COPY_MAP, "copyMap")? {
        CopyCollection::Map { keys, values } => Ok((keys, values)),
        _ => Err(Rejection::new(format!("Not a copyMap: {}", quote(value)))),
    }
}

/// Set elements or map keys: a copyArray in reverse rank order, no
/// duplicates.
fn check_elements(payload: &Value) -> Result<&[Value], Rejection> {
    let Some(elements) = payload.as_array() else {
        return Err(Rejection::new(format!(
            "The keys of a copySet or copyMap must be a copyArray: {}",
            quote(payload)
        )));
    };
    if !is_reverse_rank_sorted(elements) {
        return Err(Rejection::new(format!(
            "The keys of a copySet or copyMap must be sorted in reverse rank order: {}",
            quote(payload)
        )));
    }
    check_no_duplicates(elements, |element| element)?;
    Ok(elements)
}

/// Sorted as Endo checks it: no neighbours definitely in ascending order.
fn is_reverse_rank_sorted(values: &[Value]) -> bool {
    values
        .windows(2)
        .all(|pair| compare_rank_short_circuit(&pair[0], &pair[1]) != Some(Ordering::Less))
}

/// Rejects two equal keys among `items`, as Endo does: sort a copy by
/// full order (rank order refined by reference identity) and compare
/// neighbours.
fn check_no_duplicates<'a>(items: &'a [Value], key_of: impl Fn(&'a Value) -> &'a Value) -> Result<(), Rejection> {
    let mut keys: Vec<&Value> = items.iter().map(key_of).collect();
    keys.sort_by(|a, b| compare_full(b, a));
    match keys
        .windows(2)
        .find(|pair| compare_full(pair[0], pair[1]) == Ordering::Equal)
    {
        Some(pair) => Err(Rejection::new(format!("value has duplicate keys: {}", quote(pair[0])))),
        None => Ok(()),
    }
}

fn check_bag_entries(payload: &Value) -> Result<&[Value], Rejection> {
    let Some(entries) = payload.as_array() else {
        return Err(Rejection::new(format!(
            "The entries of a copyBag must be a copyArray: {}",
            quote(payload)
        )));
    };
    if !is_reverse_rank_sorted(entries) {
        return Err(Rejection::new(format!(
            "The entries of a copyBag must be sorted in reverse rank order: {}",
            quote(payload)
        )));
    }
    for entry in entries {
        match entry.as_array() {
            Some([_, Value::BigInt(count)]) => {
                if !count.is_positive() {
                    return Err(Rejection::new(format!(
                        "Each entry of a copyBag must have a positive count: {}",
                        quote(entry)
                    )));
                }
            }
            _ => {
                return Err(Rejection::new(format!(
                    "Each entry of a copyBag must be pair of a key and a bigint representing a count: {}",
                    quote(entry)
                )));
            }
        }
    }
    check_no_duplicates(entries, |entry| match entry.as_array() {
        Some([key, _]) => key,
        _ => entry,
    })?;
    Ok(entries)
}

fn check_map_payload<'a>(map: &Value, payload: &'a Value) -> Result<(&'a [Value], &'a [Value]), Rejection> {
    let Some(record) = payload.as_record() else {
        return Err(Rejection::new(format!(
            "A copyMap's payload must be a record: {}",
            quote(map)
        )));
    };
    if record.names().any(|name| &**name != "keys" && &**name != "values") {
        return Err(Rejection::new(format!(
            "A copyMap's payload must only have .keys and .values: {}",
            quote(map)
        )));
    }
    let keys = check_elements(record.get("keys").unwrap_or(&Value::Undefined))?;
    let Some(values) = record.get("values").and_then(Value::as_array) else {
        return Err(Rejection::new(format!(
            "A copyMap's .values must be a copyArray: {}",
            quote(map)
        )));
    };
    if keys.len() != values.len() {
        return Err(Rejection::new(format!(
            "A copyMap must have the same number of keys and values: {}",
            quote(map)
        )));
    }
    Ok((keys, values))
}

/// Whether a value is a key: no promises, errors, or tagged values other
/// than copy collections of keys, anywhere inside. Unlike [`check_key`] it
/// builds no message, so it is cheap to call on patterns that are not keys.
pub fn is_key(value: &Value) -> bool {
    match value {
        Value::Array(items) => items.iter().all(is_key),
        Value::Record(record) => record.values().all(is_key),
        Value::Tagged(tagged) => match &*tagged.tag {
            COPY_SET | COPY_BAG | COPY_MAP => check_key(value).is_ok(),
            _ => false,
        },
        Value::Promise(_) | Value::Error(_) => false,
        _ => true,
    }
}

/// Checks that a value is a key, with Endo's message for what is not.
pub fn check_key(value: &Value) -> Result<(), Rejection> {
    match value {
        Value::Array(items) => items.iter().try_for_each(check_key),
        Value::Record(record) => record.values().try_for_each(check_key),
        Value::Tagged(tagged) => match &*tagged.tag {
            COPY_SET | COPY_BAG => check_collection(value).map(|_| ()),
            COPY_MAP => match check_collection(value)? {
                Some(CopyCollection::Map { values, .. }) => values.iter().try_for_each(check_key),
                _ => Ok(()),
            },
            tag => Err(Rejection::new(format!(
                "A passable tagged {} is not a key: {}",
                json_string(tag),
                quote(value)
            ))),
        },
        Value::Promise(_) | Value::Error(_) => Err(Rejection::new(format!(
            "A {} cannot be a key",
            json_string(value.pass_style().name())
        ))),
        _ => Ok(()),
    }
}

/// Whether a value is a scalar key: an atom or a remotable.
pub fn check_scalar_key(value: &Value) -> Result<(), Rejection> {
    match value {
        Value::Array(_) | Value::Record(_) | Value::Tagged(_) | Value::Promise(_) | Value::Error(_) => {
            Err(Rejection::new(format!(
                "A {} cannot be a scalar key: {}",
                json_string(value.pass_style().name()),
                quote(value)
            )))
        }
        _ => Ok(()),
    }
}

/// Makes a copySet: sorts in reverse rank order and drops duplicates.
pub fn make_copy_set(elements: impl IntoIterator<Item = Value>) -> Result<Value, Rejection> {
    let mut elements: Vec<Value> = elements.into_iter().collect();
    elements.iter().try_for_each(check_key)?;
    sort_reverse_rank(&mut elements);
    dedup_keys(&mut elements, |element| element);
    Ok(Value::tagged(COPY_SET, Value::Array(elements.into())))
}

/// Makes a copyBag from `(key, count)` pairs. As in Endo, a repeated key
/// is an error; use [`make_copy_bag_from_elements`] to count occurrences.
pub fn make_copy_bag(entries: impl IntoIterator<Item = (Value, BigInt)>) -> Result<Value, Rejection> {
    let mut pairs: Vec<Value> = Vec::new();
    for (key, count) in entries {
        check_key(&key)?;
        pairs.push(crate::list![key, Value::from(count)]);
    }
    sort_reverse_rank(&mut pairs);
    let payload = Value::Array(pairs.into());
    check_bag_entries(&payload)?;
    Ok(Value::tagged(COPY_BAG, payload))
}

/// Makes a copyBag from entries given as passables (`[key, count]` arrays),
/// checking each entry's shape with Endo's message.
pub fn make_copy_bag_from_entry_values(entries: impl IntoIterator<Item = Value>) -> Result<Value, Rejection> {
    let mut pairs = Vec::new();
    for entry in entries {
        match entry.as_array() {
            Some([key, Value::BigInt(count)]) => pairs.push((key.clone(), count.as_ref().clone())),
            _ => {
                return Err(Rejection::new(format!(
                    "Each entry of a copyBag must be pair of a key and a bigint representing a count: {}",
                    quote(&entry)
                )));
            }
        }
    }
    make_copy_bag(pairs)
}

/// Makes a copyBag counting each occurrence of each element.
pub fn make_copy_bag_from_elements(elements: impl IntoIterator<Item = Value>) -> Result<Value, Rejection> {
    let mut elements: Vec<Value> = elements.into_iter().collect();
    elements.iter().try_for_each(check_key)?;
    sort_reverse_rank(&mut elements);
    let mut counted: Vec<(Value, BigInt)> = Vec::with_capacity(elements.len());
    for element in elements {
        let existing = counted
            .iter_mut()
            .rev()
            .take_while(|(seen, _)| compare_rank(seen, &element) == Ordering::Equal)
            .find(|(seen, _)| compare_full(seen, &element) == Ordering::Equal);
        match existing {
            Some((_, count)) => *count += 1,
            None => counted.push((element, BigInt::from(1))),
        }
    }
    make_copy_bag(counted)
}

/// Makes a copyMap from `(key, value)` pairs; a repeated key is an error.
/// Values may be any passable (the map is then not itself a key).
pub fn make_copy_map(entries: impl IntoIterator<Item = (Value, Value)>) -> Result<Value, Rejection> {
    let mut pairs: Vec<(Value, Value)> = entries.into_iter().collect();
    for (key, _) in &pairs {
        check_key(key)?;
    }
    pairs.sort_by(|(a, _), (b, _)| compare_full(b, a));
    let keys: Vec<Value> = pairs.iter().map(|(key, _)| key.clone()).collect();
    check_no_duplicates(&keys, |key| key)?;
    let values: Vec<Value> = pairs.into_iter().map(|(_, value)| value).collect();
    Ok(Value::tagged(
        COPY_MAP,
        crate::record! { "keys" => Value::Array(keys.into()), "values" => Value::Array(values.into()) },
    ))
}

/// Sorts in reverse full order: reverse rank order, with rank ties among
/// references broken by identity, so the result does not depend on the
/// input order.
fn sort_reverse_rank(values: &mut [Value]) {
    values.sort_by(|a, b| compare_full(b, a));
}

/// Removes later duplicates from values already in reverse rank order.
fn dedup_keys<T>(items: &mut Vec<T>, key_of: impl Fn(&T) -> &Value) {
    let mut kept: Vec<T> = Vec::with_capacity(items.len());
    for item in items.drain(..) {
        let duplicate = kept
            .iter()
            .rev()
            .take_while(|seen| compare_rank(key_of(seen), key_of(&item)) == Ordering::Equal)
            .any(|seen| compare_full(key_of(seen), key_of(&item)) == Ordering::Equal);
        if !duplicate {
            kept.push(item);
        }
    }
    *items = kept;
}
