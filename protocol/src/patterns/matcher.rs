//! The matching engine. [`Matcher`] runs one check, remembering which
//! tagged values it already found well formed; it matches by the kind of
//! the pattern: keys by equality, copyArray, copyRecord and copyMap
//! patterns element by element, matchers through their helpers.

use crate::collections::{CopyCollection, collection_of, is_key};
use crate::order::compare_full;
use crate::quote::quote;
use crate::rejection::Rejection;
use crate::value::{PassStyle, Value};

use super::failure::{Failure, Label, Outcome, Reject, nested, qp, s};
use super::kinds::{Kind, is_match_tag};
use super::limits::{DEFAULT_MAX_NESTING, nesting_exceeds};

/// The matching engine for one check. Like Endo's memo of checked tagged
/// values, it remembers which tagged values (matchers, collections) it has
/// already found well formed, so a matcher applied to every element of a
/// large array is checked once. It keeps each remembered value alive, so
/// an address can never be reused for another value during the check.
pub(super) struct Matcher {
    max_nesting: usize,
    pub(super) well_formed: std::cell::RefCell<std::collections::HashMap<usize, Value, AddressHashing>>,
}

/// Addresses are already well spread; hashing them again is wasted work
/// on the per-element path.
#[derive(Default)]
pub(super) struct AddressHasher(u64);

impl std::hash::Hasher for AddressHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*byte);
        }
    }
    fn write_usize(&mut self, address: usize) {
        self.0 = (address as u64 >> 3).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

pub(super) type AddressHashing = std::hash::BuildHasherDefault<AddressHasher>;

impl Matcher {
    pub(super) fn new() -> Matcher {
        Matcher {
            max_nesting: DEFAULT_MAX_NESTING,
            well_formed: std::cell::RefCell::new(std::collections::HashMap::default()),
        }
    }

    pub(super) fn check_depth(&self, value: &Value, what: &str) -> Result<(), Rejection> {
        check_nesting(value, self.max_nesting, what)
    }

    pub(super) fn confirm_pattern(&self, pattern: &Value, reject: Reject) -> Outcome {
        if is_key(pattern) {
            return Ok(());
        }
        let kind = match self.confirm_kind_of(pattern, reject)? {
            Some(kind) => kind,
            None => return reject.fail(String::new),
        };
        match (kind, pattern) {
            (Kind::Style(PassStyle::CopyRecord), Value::Record(record)) => record
                .values()
                .try_for_each(|child| self.confirm_pattern(child, reject)),
            (Kind::Style(PassStyle::CopyArray), Value::Array(items)) => {
                items.iter().try_for_each(|child| self.confirm_pattern(child, reject))
            }
            (Kind::Tag("copyMap"), _) => match collection_of(pattern) {
                Some(CopyCollection::Map { values, .. }) => {
                    self.confirm_pattern(&Value::array(values.iter().cloned()), reject)
                }
                _ => reject.fail(String::new),
            },
            (Kind::Style(style @ (PassStyle::Error | PassStyle::Promise)), _) => {
                reject.fail(|| format!("A {} cannot be a pattern", s(style.name())))
            }
            (Kind::Tag(tag), _) if is_match_tag(tag) => Ok(()),
            (kind, _) => reject.fail(|| {
                format!(
                    "A passable of kind {} is not a pattern: {}",
                    s(kind.name()),
                    quote(pattern)
                )
            }),
        }
    }

    pub(super) fn is_pattern(&self, pattern: &Value) -> Result<bool, Failure> {
        match self.confirm_pattern(pattern, Reject::Quiet) {
            Ok(()) => Ok(true),
            Err(Failure::Mismatch(_)) => Ok(false),
            Err(failure) => Err(failure),
        }
    }

    pub(super) fn matches(&self, specimen: &Value, pattern: &Value) -> Result<bool, Failure> {
        match self.confirm_matches(specimen, pattern, Reject::Quiet) {
            Ok(()) => Ok(true),
            Err(Failure::Mismatch(_)) => Ok(false),
            Err(failure) => Err(failure),
        }
    }

    pub(super) fn confirm_nested(
        &self,
        specimen: &Value,
        pattern: &Value,
        label: Label<'_>,
        reject: Reject,
    ) -> Outcome {
        nested(label, || self.confirm_matches(specimen, pattern, reject))
    }

    pub(super) fn confirm_matches(&self, specimen: &Value, pattern: &Value, reject: Reject) -> Outcome {
        // A malformed pattern is reported even when only asked yes or no.
        let pattern_kind = match self
            .confirm_kind_of(pattern, Reject::Explain)
            .map_err(Failure::thrown)?
        {
            Some(kind) => kind,
            None => return reject.fail(|| format!("pattern expected: {}", quote(pattern))),
        };
        match pattern_kind {
            Kind::Style(PassStyle::Promise) => {
                reject.fail(|| format!("promises cannot be patterns: {}", quote(pattern)))
            }
            Kind::Style(PassStyle::Error) => reject.fail(|| format!("errors cannot be patterns: {}", quote(pattern))),
            Kind::Style(PassStyle::CopyArray) => self.match_array_pattern(specimen, pattern, reject),
            Kind::Style(PassStyle::CopyRecord) => self.match_record_pattern(specimen, pattern, reject),
            Kind::Tag("copyMap") => self.match_map_pattern(specimen, pattern, reject),
            Kind::Style(_) | Kind::Tag("copySet") | Kind::Tag("copyBag") => {
                self.confirm_as_key_pattern(specimen, pattern, reject)
            }
            Kind::Tag(tag) => match pattern.as_tagged() {
                Some(tagged) if is_match_tag(tag) => self.confirm_helper(tag, specimen, &tagged.payload, reject),
                _ => Err(Failure::Thrown(format!("internal: should have recognized {} ", s(tag)))),
            },
        }
    }

    fn match_array_pattern(&self, specimen: &Value, pattern: &Value, reject: Reject) -> Outcome {
        if is_key(pattern) {
            return self.confirm_as_key_pattern(specimen, pattern, reject);
        }
        let patterns = pattern.as_array().unwrap_or_default();
        let Some(items) = specimen.as_array() else {
            return reject.fail(|| {
                format!(
                    "{} - Must be a copyArray to match a copyArray pattern: {}",
                    quote(specimen),
                    qp(pattern)
                )
            });
        };
        if items.len() != patterns.len() {
            return reject.fail(|| {
                format!(
                    "Array {} - Must be as long as copyArray pattern: {}",
                    quote(specimen),
                    qp(pattern)
                )
            });
        }
        for (index, (item, item_pattern)) in items.iter().zip(patterns).enumerate() {
            self.confirm_nested(item, item_pattern, Label::Index(index), reject)?;
        }
        Ok(())
    }

    fn match_record_pattern(&self, specimen: &Value, pattern: &Value, reject: Reject) -> Outcome {
        if is_key(pattern) {
            return self.confirm_as_key_pattern(specimen, pattern, reject);
        }
        let Some(patterns) = pattern.as_record() else {
            return reject.fail(String::new);
        };
        let Some(record) = specimen.as_record() else {
            return reject.fail(|| {
                format!(
                    "{} - Must be a copyRecord to match a copyRecord pattern: {}",
                    quote(specimen),
                    qp(pattern)
                )
            });
        };
        // Endo visits names sorted in reverse.
        let missing: Vec<Value> = patterns
            .names()
            .rev()
            .filter(|name| !record.contains(name))
            .map(|name| Value::String(name.clone()))
            .collect();
        if !missing.is_empty() {
            return reject.fail(|| {
                format!(
                    "{} - Must have missing properties {}",
                    quote(specimen),
                    quote(&Value::array(missing))
                )
            });
        }
        let unexpected: Vec<Value> = record
            .names()
            .rev()
            .filter(|name| !patterns.contains(name))
            .map(|name| Value::String(name.clone()))
            .collect();
        if !unexpected.is_empty() {
            return reject.fail(|| {
                format!(
                    "{} - Must not have unexpected properties: {}",
                    quote(specimen),
                    quote(&Value::array(unexpected))
                )
            });
        }
        for (name, property_pattern) in patterns.iter().rev() {
            let property = record.get(name).unwrap_or(&Value::Undefined);
            self.confirm_nested(property, property_pattern, Label::Text(name), reject)?;
        }
        Ok(())
    }

    fn match_map_pattern(&self, specimen: &Value, pattern: &Value, reject: Reject) -> Outcome {
        if is_key(pattern) {
            return self.confirm_as_key_pattern(specimen, pattern, reject);
        }
        let (
            Some(CopyCollection::Map {
                keys: pattern_keys,
                values: pattern_values,
            }),
            Some(CopyCollection::Map { keys, values }),
        ) = (collection_of(pattern), collection_of(specimen))
        else {
            return reject.fail(|| {
                format!(
                    "{} - Must be a copyMap to match a copyMap pattern: {}",
                    quote(specimen),
                    qp(pattern)
                )
            });
        };
        let key_set = |keys: &[Value]| Value::tagged("copySet", Value::array(keys.iter().cloned()));
        self.confirm_matches(&key_set(keys), &key_set(pattern_keys), reject)?;
        // The key sets are equal, so every pattern key has a specimen value.
        let mut specimen_in_order = Vec::with_capacity(pattern_keys.len());
        for key in pattern_keys {
            let index = keys
                .iter()
                .position(|candidate| compare_full(candidate, key) == std::cmp::Ordering::Equal)
                .unwrap_or(0);
            specimen_in_order.push(values.get(index).cloned().unwrap_or(Value::Undefined));
        }
        self.confirm_matches(
            &Value::array(specimen_in_order),
            &Value::array(pattern_values.iter().cloned()),
            reject,
        )
    }
}

/// Refuses `value` (called `what` in the rejection) if it nests deeper
/// than `max_nesting`.
pub(super) fn check_nesting(value: &Value, max_nesting: usize, what: &str) -> Result<(), Rejection> {
    if nesting_exceeds(value, max_nesting) {
        return Err(Rejection::new(format!(
            "{what} nesting must not be deeper than {max_nesting}"
        )));
    }
    Ok(())
}
