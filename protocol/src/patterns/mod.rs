//! Patterns: the `M` namespace, `kind_of`, `is_pattern`, `matches` and
//! `must_match`, with Endo's limits and failure messages.
//!
//! A pattern is a passable. Keys match values equal to them; arrays,
//! records and copyMaps holding matchers are patterns; matchers are tagged
//! values (`match:<name>`). Matching follows `@endo/patterns` step by step
//! (which checks run, in which order, with which message), because the
//! messages are part of the contract with people and with Endo peers.

use std::sync::{Arc, OnceLock};

use num_bigint::BigInt;
use num_traits::{Signed, ToPrimitive, Zero};

use crate::collections::{CopyCollection, check_collection, check_key, check_scalar_key, collection_of, is_key};
use crate::order::{KeyOrder, compare_full, compare_keys};
use crate::quote::{bare, json_string, quote, quote_pattern};
use crate::rejection::Rejection;
use crate::strings::utf16_len;
use crate::value::{PassStyle, Record, Value};
use crate::{list, record};

/// Builders for patterns, named as in Endo's `M`.
pub struct M;

fn matcher(tag: &str, payload: Value) -> Value {
    Value::tagged(tag, payload)
}

/// Drops a trailing absent limits record, as Endo's builders do.
fn with_limits(tag: &str, mut payload: Vec<Value>, limits: Option<Value>) -> Value {
    if let Some(limits) = limits {
        payload.push(limits);
    }
    matcher(tag, Value::from(payload))
}

impl M {
    pub fn any() -> Value {
        matcher("match:any", Value::Undefined)
    }
    pub fn and(patterns: impl IntoIterator<Item = Value>) -> Value {
        matcher("match:and", Value::array(patterns))
    }
    pub fn or(patterns: impl IntoIterator<Item = Value>) -> Value {
        matcher("match:or", Value::array(patterns))
    }
    pub fn not(pattern: Value) -> Value {
        matcher("match:not", pattern)
    }
    pub fn scalar() -> Value {
        matcher("match:scalar", Value::Undefined)
    }
    pub fn key() -> Value {
        matcher("match:key", Value::Undefined)
    }
    pub fn pattern() -> Value {
        matcher("match:pattern", Value::Undefined)
    }
    pub fn kind(kind: &str) -> Value {
        matcher("match:kind", Value::from(kind))
    }
    pub fn boolean() -> Value {
        M::kind("boolean")
    }
    pub fn number() -> Value {
        M::kind("number")
    }
    pub fn error() -> Value {
        M::kind("error")
    }
    pub fn undefined() -> Value {
        M::kind("undefined")
    }
    pub fn null() -> Value {
        Value::Null
    }
    /// Any remotable; see [`M::remotable_labeled`] for a labelled one.
    pub fn remotable() -> Value {
        M::kind("remotable")
    }
    pub fn remotable_labeled(label: &str) -> Value {
        matcher("match:remotable", record! { "label" => label })
    }
    pub fn promise() -> Value {
        M::kind("promise")
    }
    pub fn promise_labeled(label: &str) -> Value {
        matcher("match:promise", record! { "label" => label })
    }
    pub fn bigint() -> Value {
        M::bigint_limited(None)
    }
    pub fn bigint_limited(limits: Option<Value>) -> Value {
        with_limits("match:bigint", vec![], limits)
    }
    pub fn nat() -> Value {
        M::nat_limited(None)
    }
    pub fn nat_limited(limits: Option<Value>) -> Value {
        with_limits("match:nat", vec![], limits)
    }
    pub fn string() -> Value {
        M::string_limited(None)
    }
    pub fn string_limited(limits: Option<Value>) -> Value {
        with_limits("match:string", vec![], limits)
    }
    pub fn symbol() -> Value {
        M::symbol_limited(None)
    }
    pub fn symbol_limited(limits: Option<Value>) -> Value {
        with_limits("match:symbol", vec![], limits)
    }
    pub fn byte_array() -> Value {
        M::byte_array_limited(None)
    }
    pub fn byte_array_limited(limits: Option<Value>) -> Value {
        with_limits("match:byteArray", vec![], limits)
    }
    pub fn record() -> Value {
        M::record_of(M::any(), M::any(), None)
    }
    pub fn array() -> Value {
        M::array_of(M::any(), None)
    }
    pub fn set() -> Value {
        M::set_of(M::any(), None)
    }
    pub fn bag() -> Value {
        M::bag_of(M::any(), M::any(), None)
    }
    pub fn map() -> Value {
        M::map_of(M::any(), M::any(), None)
    }
    pub fn record_of(key: Value, value: Value, limits: Option<Value>) -> Value {
        with_limits("match:recordOf", vec![key, value], limits)
    }
    pub fn array_of(element: Value, limits: Option<Value>) -> Value {
        with_limits("match:arrayOf", vec![element], limits)
    }
    pub fn set_of(element: Value, limits: Option<Value>) -> Value {
        with_limits("match:setOf", vec![element], limits)
    }
    pub fn bag_of(key: Value, count: Value, limits: Option<Value>) -> Value {
        with_limits("match:bagOf", vec![key, count], limits)
    }
    pub fn map_of(key: Value, value: Value, limits: Option<Value>) -> Value {
        with_limits("match:mapOf", vec![key, value], limits)
    }
    /// At least `bound` elements of an array, set or bag match `element`.
    pub fn container_has(element: Value, bound: BigInt, limits: Option<Value>) -> Value {
        with_limits("match:containerHas", vec![element, Value::from(bound)], limits)
    }
    pub fn lt(key: Value) -> Value {
        matcher("match:lt", key)
    }
    pub fn lte(key: Value) -> Value {
        matcher("match:lte", key)
    }
    pub fn gte(key: Value) -> Value {
        matcher("match:gte", key)
    }
    pub fn gt(key: Value) -> Value {
        matcher("match:gt", key)
    }
    /// A key as a pattern matches what equals it.
    pub fn eq(key: Value) -> Value {
        if key.is_undefined() { M::undefined() } else { key }
    }
    pub fn neq(key: Value) -> Value {
        M::not(M::eq(key))
    }
    pub fn tagged(tag: Value, payload: Value) -> Value {
        matcher("match:tagged", list![tag, payload])
    }
    /// Required elements, then optional ones (each may be `undefined`),
    /// then a pattern for the array of the rest.
    pub fn split_array(required: Vec<Value>, optional: Option<Vec<Value>>, rest: Option<Value>) -> Value {
        let payload = match (optional, rest) {
            (optional, Some(rest)) => list![required, optional.unwrap_or_default(), rest],
            (Some(optional), None) => list![required, optional],
            (None, None) => list![required],
        };
        matcher("match:splitArray", payload)
    }
    /// Required properties, optional ones, then a pattern for the record
    /// of the rest.
    pub fn split_record(required: Value, optional: Option<Value>, rest: Option<Value>) -> Value {
        let payload = match (optional, rest) {
            (optional, Some(rest)) => list![
                required,
                optional.unwrap_or_else(|| Value::record(Vec::<(&str, Value)>::new())),
                rest
            ],
            (Some(optional), None) => list![required, optional],
            (None, None) => list![required],
        };
        matcher("match:splitRecord", payload)
    }
    pub fn opt(pattern: Value) -> Value {
        M::or([M::undefined(), pattern])
    }
    pub fn eref(pattern: Value) -> Value {
        M::or([pattern, M::promise()])
    }
}

/// Endo's default limits, overridable per pattern by a limits record.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub decimal_digits: f64,
    pub string_length: f64,
    pub symbol_name_length: f64,
    pub num_properties: f64,
    pub property_name_length: f64,
    pub array_length: f64,
    pub byte_length: f64,
    pub num_set_elements: f64,
    pub num_unique_bag_elements: f64,
    pub num_map_entries: f64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            decimal_digits: 100.0,
            string_length: 100_000.0,
            symbol_name_length: 100.0,
            num_properties: 80.0,
            property_name_length: 100.0,
            array_length: 10_000.0,
            byte_length: 100_000.0,
            num_set_elements: 10_000.0,
            num_unique_bag_elements: 10_000.0,
            num_map_entries: 5_000.0,
        }
    }
}

impl Limits {
    /// The defaults overridden by the numbers in a limits record. Names
    /// that are not limits are ignored, as in Endo.
    fn from_record(limits: Option<&Value>) -> Limits {
        let mut result = Limits::default();
        let Some(record) = limits.and_then(Value::as_record) else {
            return result;
        };
        for (name, value) in record.iter() {
            let Value::Number(n) = value else { continue };
            let slot = match &**name {
                "decimalDigitsLimit" => &mut result.decimal_digits,
                "stringLengthLimit" => &mut result.string_length,
                "symbolNameLengthLimit" => &mut result.symbol_name_length,
                "numPropertiesLimit" => &mut result.num_properties,
                "propertyNameLengthLimit" => &mut result.property_name_length,
                "arrayLengthLimit" => &mut result.array_length,
                "byteLengthLimit" => &mut result.byte_length,
                "numSetElementsLimit" => &mut result.num_set_elements,
                "numUniqueBagElementsLimit" => &mut result.num_unique_bag_elements,
                "numMapEntriesLimit" => &mut result.num_map_entries,
                _ => continue,
            };
            *slot = *n;
        }
        result
    }
}

/// How deep a pattern or specimen may nest before matching refuses it.
pub const DEFAULT_MAX_NESTING: usize = 64;

/// Why a check did not pass.
#[derive(Debug)]
enum Failure {
    /// The specimen does not match; the message is built only when asked.
    Mismatch(Option<String>),
    /// Something is wrong whether or not a message was asked for (a
    /// malformed pattern, comparing what cannot be compared). Endo throws.
    Thrown(String),
}

impl Failure {
    fn labeled(self, label: &str) -> Failure {
        match self {
            Failure::Mismatch(Some(message)) => Failure::Mismatch(Some(format!("{label}: {message}"))),
            Failure::Mismatch(None) => Failure::Mismatch(None),
            Failure::Thrown(message) => Failure::Thrown(format!("{label}: {message}")),
        }
    }

    fn into_rejection(self) -> Rejection {
        match self {
            Failure::Mismatch(message) => Rejection::new(message.unwrap_or_else(|| "match failed".to_string())),
            Failure::Thrown(message) => Rejection::new(message),
        }
    }
}

impl Failure {
    /// Endo checks a pattern's own shape with a throwing rejector, so any
    /// failure there is thrown even when the caller only asked yes or no.
    fn thrown(self) -> Failure {
        match self {
            Failure::Mismatch(Some(message)) => Failure::Thrown(message),
            Failure::Mismatch(None) => Failure::Thrown("pattern expected".to_string()),
            thrown => thrown,
        }
    }
}

impl From<Rejection> for Failure {
    fn from(rejection: Rejection) -> Failure {
        Failure::Thrown(rejection.message)
    }
}

type Outcome = Result<(), Failure>;

/// Whether a failure should carry a message (Endo's `Fail` rejector) or
/// just say no (Endo's `false` rejector).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Reject {
    Quiet,
    Explain,
}

impl Reject {
    fn fail(self, message: impl FnOnce() -> String) -> Outcome {
        Err(Failure::Mismatch(match self {
            Reject::Quiet => None,
            Reject::Explain => Some(message()),
        }))
    }

    /// Endo's rejectors throw when explaining, so an explained mismatch
    /// in a position that throws becomes a thrown error.
    fn fail_thrown(self, message: impl FnOnce() -> String) -> Outcome {
        match self {
            Reject::Quiet => Err(Failure::Mismatch(None)),
            Reject::Explain => Err(Failure::Thrown(message())),
        }
    }
}

/// A path label, formatted only when a failure needs it.
#[derive(Clone, Copy)]
enum Label<'a> {
    Text(&'a str),
    /// `[3]`
    Index(usize),
    /// `set elements[3]`
    Element(&'a str, usize),
    /// `arg 3`
    Arg(usize),
    /// `arg 3?`
    OptionalArg(usize),
    /// `name?`
    OptionalName(&'a str),
}

impl std::fmt::Display for Label<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Label::Text(text) => f.write_str(text),
            Label::Index(index) => write!(f, "[{index}]"),
            Label::Element(prefix, index) => write!(f, "{prefix}[{index}]"),
            Label::Arg(index) => write!(f, "arg {index}"),
            Label::OptionalArg(index) => write!(f, "arg {index}?"),
            Label::OptionalName(name) => write!(f, "{name}?"),
        }
    }
}

/// Runs `check`, prefixing any failure with a path label.
fn nested(label: Label<'_>, check: impl FnOnce() -> Outcome) -> Outcome {
    check().map_err(|failure| failure.labeled(&label.to_string()))
}

fn s(text: &str) -> String {
    json_string(text)
}

fn qp(pattern: &Value) -> String {
    json_string(&quote_pattern(pattern))
}

/// The kind of a value: its pass style, or for a recognised and
/// well-formed tagged value its tag (`copySet`, `match:string`, ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind<'a> {
    Style(PassStyle),
    Tag(&'a str),
}

impl<'a> Kind<'a> {
    pub fn name(&self) -> &'a str {
        match self {
            Kind::Style(style) => style.name(),
            Kind::Tag(tag) => tag,
        }
    }
}

/// The kind of a value, or `None` for a tagged value that is not a
/// recognised, well-formed kind.
pub fn kind_of(value: &Value) -> Option<Kind<'_>> {
    Matcher::new().confirm_kind_of(value, Reject::Quiet).ok().flatten()
}

/// Whether a value is a pattern.
pub fn is_pattern(value: &Value) -> bool {
    Matcher::new().confirm_pattern(value, Reject::Quiet).is_ok()
}

/// Checks that a value is a pattern, saying what is wrong.
pub fn assert_pattern(value: &Value) -> Result<(), Rejection> {
    let matcher = Matcher::new();
    matcher.check_depth(value, "pattern")?;
    matcher
        .confirm_pattern(value, Reject::Explain)
        .map_err(Failure::into_rejection)
}

/// Whether `specimen` matches `pattern`. A malformed pattern is an error,
/// not a mismatch.
pub fn matches(specimen: &Value, pattern: &Value) -> Result<bool, Rejection> {
    let matcher = Matcher::new();
    matcher.check_depth(pattern, "pattern")?;
    matcher.check_depth(specimen, "specimen")?;
    match matcher.confirm_matches(specimen, pattern, Reject::Quiet) {
        Ok(()) => Ok(true),
        Err(Failure::Mismatch(_)) => Ok(false),
        Err(Failure::Thrown(message)) => Err(Rejection::new(message)),
    }
}

/// Checks that `specimen` matches `pattern`; on failure the message is
/// Endo's, prefixed by `label` when one is given (Endo writes a numeric
/// label as `[n]`; pass it formatted so).
pub fn must_match(specimen: &Value, pattern: &Value, label: Option<&str>) -> Result<(), Rejection> {
    let matcher = Matcher::new();
    matcher.check_depth(pattern, "pattern")?;
    matcher.check_depth(specimen, "specimen")?;
    let outcome = matcher.confirm_matches(specimen, pattern, Reject::Explain);
    let outcome = match label {
        Some(label) => outcome.map_err(|failure| failure.labeled(label)),
        None => outcome,
    };
    outcome.map_err(Failure::into_rejection)
}

/// Guard payload shapes, so that guards have kinds as Endo gives them.
pub(crate) fn guard_payload_shape(tag: &str) -> Option<&'static Value> {
    static SHAPES: OnceLock<Vec<(&'static str, Value)>> = OnceLock::new();
    let shapes = SHAPES.get_or_init(|| {
        let sync_value_guard = M::or([M::kind("guard:rawGuard"), M::pattern()]);
        let sync_value_guard_list = M::array_of(sync_value_guard.clone(), None);
        let arg_guard_list = M::array_of(
            M::or([M::kind("guard:rawGuard"), M::kind("guard:awaitArgGuard"), M::pattern()]),
            None,
        );
        let method_payload = |call_kind: &str, arg_guards: Value| {
            record! {
                "callKind" => call_kind,
                "argGuards" => arg_guards.clone(),
                "optionalArgGuards" => M::opt(arg_guards),
                "restArgGuard" => M::opt(sync_value_guard.clone()),
                "returnGuard" => sync_value_guard.clone(),
            }
        };
        vec![
            ("guard:awaitArgGuard", record! { "argGuard" => M::pattern() }),
            ("guard:rawGuard", M::record()),
            (
                "guard:methodGuard",
                M::or([
                    method_payload("sync", sync_value_guard_list.clone()),
                    method_payload("async", arg_guard_list),
                ]),
            ),
            (
                "guard:interfaceGuard",
                M::split_record(
                    record! {
                        "interfaceName" => M::string(),
                        "methodGuards" => M::record_of(M::string(), M::kind("guard:methodGuard"), None),
                    },
                    Some(record! {
                        "defaultGuards" => M::or([M::undefined(), Value::from("passable"), Value::from("raw")]),
                        "sloppy" => M::boolean(),
                        "symbolMethodGuards" => M::map_of(M::symbol(), M::kind("guard:methodGuard"), None),
                    }),
                    None,
                ),
            ),
        ]
    });
    shapes.iter().find(|(name, _)| *name == tag).map(|(_, shape)| shape)
}

const MATCH_TAGS: [&str; 28] = [
    "match:any",
    "match:and",
    "match:or",
    "match:not",
    "match:scalar",
    "match:key",
    "match:pattern",
    "match:kind",
    "match:tagged",
    "match:bigint",
    "match:nat",
    "match:string",
    "match:symbol",
    "match:remotable",
    "match:promise",
    "match:lt",
    "match:lte",
    "match:gte",
    "match:gt",
    "match:arrayOf",
    "match:byteArray",
    "match:recordOf",
    "match:setOf",
    "match:bagOf",
    "match:containerHas",
    "match:mapOf",
    "match:splitArray",
    "match:splitRecord",
];

fn is_match_tag(tag: &str) -> bool {
    tag.starts_with("match:") && MATCH_TAGS.contains(&tag)
}

/// The matching engine for one check. Like Endo's memo of checked tagged
/// values, it remembers which tagged values (matchers, collections) it has
/// already found well formed, so a matcher applied to every element of a
/// large array is checked once. It keeps each remembered value alive, so
/// an address can never be reused for another value during the check.
struct Matcher {
    max_nesting: usize,
    well_formed: std::cell::RefCell<std::collections::HashMap<usize, Value, AddressHashing>>,
}

/// Addresses are already well spread; hashing them again is wasted work
/// on the per-element path.
#[derive(Default)]
struct AddressHasher(u64);

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

type AddressHashing = std::hash::BuildHasherDefault<AddressHasher>;

impl Matcher {
    fn new() -> Matcher {
        Matcher {
            max_nesting: DEFAULT_MAX_NESTING,
            well_formed: std::cell::RefCell::new(std::collections::HashMap::default()),
        }
    }

    fn check_depth(&self, value: &Value, what: &str) -> Result<(), Rejection> {
        if nesting_exceeds(value, self.max_nesting) {
            return Err(Rejection::new(format!(
                "{what} nesting must not be deeper than {}",
                self.max_nesting
            )));
        }
        Ok(())
    }

    // ---------------------------------------------------------------- kinds

    fn confirm_kind_of<'v>(&self, value: &'v Value, reject: Reject) -> Result<Option<Kind<'v>>, Failure> {
        let Value::Tagged(tagged) = value else {
            return Ok(Some(Kind::Style(value.pass_style())));
        };
        let address = Arc::as_ptr(tagged) as *const () as usize;
        if self.well_formed.borrow().contains_key(&address) {
            return Ok(Some(Kind::Tag(&tagged.tag)));
        }
        match self.confirm_tagged(value, &tagged.tag, &tagged.payload, reject) {
            Ok(()) => {
                self.well_formed.borrow_mut().insert(address, value.clone());
                Ok(Some(Kind::Tag(&tagged.tag)))
            }
            Err(Failure::Mismatch(None)) => Ok(None),
            Err(failure) => Err(failure),
        }
    }

    fn confirm_tagged(&self, tagged: &Value, tag: &str, payload: &Value, reject: Reject) -> Outcome {
        if is_match_tag(tag) {
            return self.confirm_well_formed(tag, payload, reject);
        }
        if let Some(shape) = guard_payload_shape(tag) {
            return nested(Label::Text(tag), || self.confirm_matches(payload, shape, reject));
        }
        match tag {
            "copySet" | "copyBag" | "copyMap" => match check_collection(tagged) {
                Ok(_) => Ok(()),
                Err(rejection) => reject.fail_thrown(|| rejection.message),
            },
            _ => reject.fail_thrown(|| format!("cannot check unrecognized tag {}: {}", s(tag), quote(tagged))),
        }
    }

    fn is_kind(&self, value: &Value, kind: &str) -> Result<bool, Failure> {
        match self.confirm_kind(value, kind, Reject::Quiet) {
            Ok(()) => Ok(true),
            Err(Failure::Mismatch(_)) => Ok(false),
            Err(failure) => Err(failure),
        }
    }

    fn confirm_kind(&self, specimen: &Value, kind: &str, reject: Reject) -> Outcome {
        match kind {
            "null" => return self.confirm_as_key_pattern(specimen, &Value::Null, reject),
            "undefined" => return self.confirm_as_key_pattern(specimen, &Value::Undefined, reject),
            _ => {}
        }
        let real_kind = self.confirm_kind_of(specimen, reject)?;
        if real_kind.is_some_and(|real| real.name() == kind) {
            return Ok(());
        }
        reject.fail(|| {
            format!(
                "{} {} - Must be a {}",
                bare(real_kind.map_or("unknown", |real| real.name())),
                quote(specimen),
                bare(kind)
            )
        })
    }

    fn is_undefined_pattern(&self, pattern: &Value) -> Result<bool, Failure> {
        Ok(pattern.is_undefined()
            || (self.is_kind(pattern, "match:kind")?
                && pattern.as_tagged().and_then(|t| t.payload.as_str()) == Some("undefined")))
    }

    fn confirm_as_key_pattern(&self, specimen: &Value, key: &Value, reject: Reject) -> Outcome {
        if is_key(specimen)
            && let KeyOrder::Equal = compare_keys(specimen, key)?
        {
            return Ok(());
        }
        reject.fail(|| format!("{} - Must be: {}", quote(specimen), quote(key)))
    }

    // ------------------------------------------------------------- patterns

    fn confirm_pattern(&self, pattern: &Value, reject: Reject) -> Outcome {
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

    fn is_pattern(&self, pattern: &Value) -> Result<bool, Failure> {
        match self.confirm_pattern(pattern, Reject::Quiet) {
            Ok(()) => Ok(true),
            Err(Failure::Mismatch(_)) => Ok(false),
            Err(failure) => Err(failure),
        }
    }

    fn matches(&self, specimen: &Value, pattern: &Value) -> Result<bool, Failure> {
        match self.confirm_matches(specimen, pattern, Reject::Quiet) {
            Ok(()) => Ok(true),
            Err(Failure::Mismatch(_)) => Ok(false),
            Err(failure) => Err(failure),
        }
    }

    fn confirm_nested(&self, specimen: &Value, pattern: &Value, label: Label<'_>, reject: Reject) -> Outcome {
        nested(label, || self.confirm_matches(specimen, pattern, reject))
    }

    fn confirm_matches(&self, specimen: &Value, pattern: &Value, reject: Reject) -> Outcome {
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

    // ------------------------------------------------------- matcher payloads

    fn confirm_well_formed(&self, tag: &str, payload: &Value, reject: Reject) -> Outcome {
        let patterns2 = || list![M::pattern(), M::pattern()];
        match tag {
            "match:any" | "match:scalar" | "match:key" | "match:pattern" => {
                if payload.is_undefined() {
                    Ok(())
                } else {
                    reject.fail_thrown(|| format!("match:any payload: {} - Must be undefined", quote(payload)))
                }
            }
            "match:and" | "match:or" => {
                let Some(patterns) = payload.as_array() else {
                    return reject.fail_thrown(|| format!("Needs array of sub-patterns: {}", qp(payload)));
                };
                patterns
                    .iter()
                    .try_for_each(|pattern| self.confirm_pattern(pattern, reject))
            }
            "match:not" => self.confirm_pattern(payload, reject),
            "match:kind" => {
                if payload.as_str().is_some() {
                    Ok(())
                } else {
                    reject.fail_thrown(|| {
                        format!("match:kind: payload: {} - A kind name must be a string", quote(payload))
                    })
                }
            }
            "match:tagged" => self.confirm_nested(payload, &patterns2(), Label::Text("match:tagged payload"), reject),
            "match:bigint" | "match:nat" | "match:string" | "match:symbol" | "match:byteArray" => {
                self.confirm_well_formed_with_limit(payload, &list![], &format!("{tag} payload"), reject)
            }
            "match:remotable" | "match:promise" => self.confirm_nested(
                payload,
                &record! { "label" => M::string() },
                Label::Text(&format!("{tag} payload")),
                reject,
            ),
            "match:lt" | "match:lte" | "match:gte" | "match:gt" => match check_key(payload) {
                Ok(()) => Ok(()),
                Err(rejection) => reject.fail_thrown(|| rejection.message),
            },
            "match:recordOf" | "match:bagOf" | "match:mapOf" => {
                self.confirm_well_formed_with_limit(payload, &patterns2(), &format!("{tag} payload"), reject)
            }
            "match:arrayOf" | "match:setOf" => {
                self.confirm_well_formed_with_limit(payload, &list![M::pattern()], &format!("{tag} payload"), reject)
            }
            "match:containerHas" => self.confirm_well_formed_with_limit(
                payload,
                &list![M::pattern(), M::gte(Value::bigint(1))],
                "M.containerHas payload",
                reject,
            ),
            "match:splitArray" => self.confirm_split_well_formed(payload, PassStyle::CopyArray, "array", reject),
            "match:splitRecord" => self.confirm_split_well_formed(payload, PassStyle::CopyRecord, "record", reject),
            _ => reject.fail_thrown(|| format!("cannot check unrecognized tag {}", s(tag))),
        }
    }

    fn confirm_well_formed_with_limit(
        &self,
        payload: &Value,
        main_shape: &Value,
        prefix: &str,
        reject: Reject,
    ) -> Outcome {
        let Some(items) = payload.as_array() else {
            return reject.fail_thrown(|| format!("{} payload must be an array: {}", s(prefix), quote(payload)));
        };
        let main_length = main_shape.as_array().map_or(0, <[Value]>::len);
        if items.len() != main_length && items.len() != main_length + 1 {
            return reject.fail_thrown(|| format!("{} payload unexpected size: {}", s(prefix), quote(payload)));
        }
        let main = Value::array(items.iter().take(main_length).cloned());
        self.confirm_nested(&main, main_shape, Label::Text(prefix), reject)?;
        let limits = match items.get(main_length) {
            None | Some(Value::Undefined) => return Ok(()),
            Some(limits) => limits,
        };
        let Some(record) = limits.as_record() else {
            return reject.fail_thrown(|| format!("Limits must be a record: {}", quote(limits)));
        };
        for (name, value) in record.iter() {
            if !matches!(value, Value::Number(_)) {
                return reject.fail_thrown(|| format!("Value of limit {} but be a number: {}", s(name), quote(value)));
            }
        }
        Ok(())
    }

    fn confirm_split_well_formed(
        &self,
        payload: &Value,
        part_style: PassStyle,
        part_name: &str,
        reject: Reject,
    ) -> Outcome {
        let complaint = || {
            format!(
                "Must be an array of a requiredPatt {part_name}, an optional optionalPatt {part_name}, and an optional restPatt: {}",
                quote(payload)
            )
        };
        let Some(parts) = payload.as_array().filter(|parts| (1..=3).contains(&parts.len())) else {
            return reject.fail_thrown(complaint);
        };
        let part_ok =
            |part: &Value| -> Result<bool, Failure> { Ok(self.is_pattern(part)? && part.pass_style() == part_style) };
        let well_formed = part_ok(&parts[0])?
            && match parts.get(1) {
                None | Some(Value::Undefined) => true,
                Some(optional) => part_ok(optional)?,
            }
            && match parts.get(2) {
                None | Some(Value::Undefined) => true,
                Some(rest) => self.is_pattern(rest)?,
            };
        if well_formed {
            Ok(())
        } else {
            reject.fail_thrown(complaint)
        }
    }

    // -------------------------------------------------------------- helpers

    fn confirm_helper(&self, tag: &str, specimen: &Value, payload: &Value, reject: Reject) -> Outcome {
        let items = payload.as_array().unwrap_or_default();
        let limits_at = |index: usize| Limits::from_record(items.get(index));
        match tag {
            "match:any" => Ok(()),
            "match:and" => items
                .iter()
                .try_for_each(|pattern| self.confirm_matches(specimen, pattern, reject)),
            "match:or" => self.match_or(specimen, payload, items, reject),
            "match:not" => {
                if self.matches(specimen, payload)? {
                    reject.fail(|| format!("{} - Must fail negated pattern: {}", quote(specimen), qp(payload)))
                } else {
                    Ok(())
                }
            }
            "match:scalar" => match check_scalar_key(specimen) {
                Ok(()) => Ok(()),
                Err(rejection) => reject.fail(|| rejection.message),
            },
            "match:key" => match check_key(specimen) {
                Ok(()) => Ok(()),
                Err(rejection) => reject.fail(|| rejection.message),
            },
            "match:pattern" => self.confirm_pattern(specimen, reject),
            "match:kind" => self.confirm_kind(specimen, payload.as_str().unwrap_or_default(), reject),
            "match:tagged" => {
                let Some(tagged) = specimen.as_tagged() else {
                    return reject.fail(|| {
                        format!(
                            "Expected tagged object, not {}: {}",
                            s(specimen.pass_style().name()),
                            quote(specimen)
                        )
                    });
                };
                let (tag_pattern, payload_pattern) = (items.first(), items.get(1));
                self.confirm_nested(
                    &Value::String(tagged.tag.clone()),
                    tag_pattern.unwrap_or(&Value::Undefined),
                    Label::Text("tag"),
                    reject,
                )?;
                self.confirm_nested(
                    &tagged.payload,
                    payload_pattern.unwrap_or(&Value::Undefined),
                    Label::Text("payload"),
                    reject,
                )
            }
            "match:bigint" => {
                self.confirm_kind(specimen, "bigint", reject)?;
                self.confirm_decimal_digits(specimen, limits_at(0).decimal_digits, reject)
            }
            "match:nat" => {
                self.confirm_kind(specimen, "bigint", reject)?;
                if specimen.as_bigint().is_some_and(Signed::is_negative) {
                    return reject.fail(|| format!("{} - Must be non-negative", quote(specimen)));
                }
                self.confirm_decimal_digits(specimen, limits_at(0).decimal_digits, reject)
            }
            "match:string" => {
                self.confirm_kind(specimen, "string", reject)?;
                let limit = limits_at(0).string_length;
                if utf16_len(specimen.as_str().unwrap_or_default()) as f64 <= limit {
                    Ok(())
                } else {
                    reject.fail(|| format!("string {} must not be bigger than {}", quote(specimen), number(limit)))
                }
            }
            "match:symbol" => {
                self.confirm_kind(specimen, "symbol", reject)?;
                let limit = limits_at(0).symbol_name_length;
                let Value::Symbol(name) = specimen else {
                    return reject.fail(String::new);
                };
                if utf16_len(name) as f64 <= limit {
                    Ok(())
                } else {
                    reject.fail(|| format!("Symbol name {} must not be bigger than {}", s(name), number(limit)))
                }
            }
            "match:byteArray" => {
                self.confirm_kind(specimen, "byteArray", reject)?;
                let limit = limits_at(0).byte_length;
                let Value::ByteArray(bytes) = specimen else {
                    return reject.fail(String::new);
                };
                if bytes.len() as f64 <= limit {
                    Ok(())
                } else {
                    reject.fail(|| {
                        format!(
                            "byteArray {} must not be bigger than {}",
                            quote(specimen),
                            number(limit)
                        )
                    })
                }
            }
            "match:remotable" | "match:promise" => {
                let wanted = if tag == "match:remotable" {
                    "remotable"
                } else {
                    "promise"
                };
                if self.is_kind(specimen, wanted)? {
                    return Ok(());
                }
                let label = payload
                    .as_record()
                    .and_then(|record| record.get("label"))
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                reject.fail(|| {
                    let kind_details = match specimen.as_tagged() {
                        Some(tagged) => s(&tagged.tag),
                        None => bare(specimen.pass_style().name()),
                    };
                    format!(
                        "{} - Must be a {wanted} {}, not {kind_details}",
                        quote(specimen),
                        bare(&label)
                    )
                })
            }
            "match:lt" | "match:lte" | "match:gte" | "match:gt" => {
                let order = compare_keys(specimen, payload)?;
                let (ok, operator) = match tag {
                    "match:lt" => (order == KeyOrder::Less, "<"),
                    "match:lte" => (matches!(order, KeyOrder::Less | KeyOrder::Equal), "<="),
                    "match:gte" => (matches!(order, KeyOrder::Greater | KeyOrder::Equal), ">="),
                    _ => (order == KeyOrder::Greater, ">"),
                };
                if ok {
                    Ok(())
                } else {
                    reject.fail(|| format!("{} - Must be {operator} {}", quote(specimen), quote(payload)))
                }
            }
            "match:recordOf" => self.match_record_of(specimen, items, limits_at(2), reject),
            "match:arrayOf" => {
                self.confirm_kind(specimen, "copyArray", reject)?;
                let elements = specimen.as_array().unwrap_or_default();
                let limit = limits_at(1).array_length;
                if elements.len() as f64 > limit {
                    return reject
                        .fail(|| format!("Array length {} must be <= limit {}", elements.len(), number(limit)));
                }
                self.confirm_every_element(elements, items.first(), "", reject)
            }
            "match:setOf" => {
                let limit = limits_at(1).num_set_elements;
                let elements = match collection_of(specimen) {
                    Some(CopyCollection::Set(elements)) => elements,
                    _ => &[],
                };
                // Endo requires strictly fewer elements than the limit.
                if self.confirm_kind(specimen, "copySet", reject).is_err() || elements.len() as f64 >= limit {
                    self.confirm_kind(specimen, "copySet", reject)?;
                    return reject.fail(|| {
                        format!(
                            "Set must not have more than {} elements: {}",
                            number(limit),
                            elements.len()
                        )
                    });
                }
                self.confirm_every_element(elements, items.first(), "set elements", reject)
            }
            "match:bagOf" => self.match_bag_of(specimen, items, limits_at(2), reject),
            "match:mapOf" => {
                self.confirm_kind(specimen, "copyMap", reject)?;
                let Some(CopyCollection::Map { keys, values }) = collection_of(specimen) else {
                    return reject.fail(String::new);
                };
                let limit = limits_at(2).num_map_entries;
                if keys.len() as f64 > limit {
                    return reject.fail(|| {
                        format!(
                            "CopyMap must have no more than {} entries: {}",
                            number(limit),
                            quote(specimen)
                        )
                    });
                }
                self.confirm_every_element(keys, items.first(), "map keys", reject)?;
                self.confirm_every_element(values, items.get(1), "map values", reject)
            }
            "match:containerHas" => self.match_container_has(specimen, items, limits_at(2), reject),
            "match:splitArray" => self.match_split_array(specimen, items, reject),
            "match:splitRecord" => self.match_split_record(specimen, items, reject),
            _ => Err(Failure::Thrown(format!("internal: should have recognized {} ", s(tag)))),
        }
    }

    fn match_or(&self, specimen: &Value, payload: &Value, patterns: &[Value], reject: Reject) -> Outcome {
        if patterns.is_empty() {
            return reject.fail(|| format!("{} - no pattern disjuncts to match: {}", quote(specimen), qp(payload)));
        }
        if patterns.len() == 2 {
            // `M.opt(p)`: report the inner pattern's message.
            for (index, other) in [(0, 1), (1, 0)] {
                if self.is_undefined_pattern(&patterns[index])? {
                    return if specimen.is_undefined() {
                        Ok(())
                    } else {
                        self.confirm_matches(specimen, &patterns[other], reject)
                    };
                }
            }
        }
        for pattern in patterns {
            if self.matches(specimen, pattern)? {
                return Ok(());
            }
        }
        reject.fail(|| format!("{} - Must match one of {}", quote(specimen), qp(payload)))
    }

    fn confirm_decimal_digits(&self, specimen: &Value, limit: f64, reject: Reject) -> Outcome {
        let Some(n) = specimen.as_bigint() else {
            return reject.fail(String::new);
        };
        if decimal_digits_as_endo_counts(n) <= limit {
            Ok(())
        } else {
            reject.fail(|| {
                format!(
                    "bigint {} must not have more than {} digits",
                    quote(specimen),
                    number(limit)
                )
            })
        }
    }

    fn confirm_every_element(
        &self,
        elements: &[Value],
        pattern: Option<&Value>,
        label_prefix: &str,
        reject: Reject,
    ) -> Outcome {
        let pattern = pattern.unwrap_or(&Value::Undefined);
        if self.is_kind(pattern, "match:any")? {
            return Ok(());
        }
        for (index, element) in elements.iter().enumerate() {
            let label = if label_prefix.is_empty() {
                Label::Index(index)
            } else {
                Label::Element(label_prefix, index)
            };
            self.confirm_nested(element, pattern, label, reject)?;
        }
        Ok(())
    }

    fn match_record_of(&self, specimen: &Value, items: &[Value], limits: Limits, reject: Reject) -> Outcome {
        self.confirm_kind(specimen, "copyRecord", reject)?;
        let Some(record) = specimen.as_record() else {
            return reject.fail(String::new);
        };
        if record.len() as f64 > limits.num_properties {
            return reject.fail(|| {
                format!(
                    "Must not have more than {} properties: {}",
                    number(limits.num_properties),
                    quote(specimen)
                )
            });
        }
        let entry_pattern = list![
            items.first().cloned().unwrap_or(Value::Undefined),
            items.get(1).cloned().unwrap_or(Value::Undefined)
        ];
        for (name, value) in crate::quote::js_property_order(record) {
            if utf16_len(name) as f64 > limits.property_name_length {
                return nested(Label::Text(name), || {
                    reject.fail_thrown(|| {
                        format!(
                            "Property name must not be longer than {}",
                            number(limits.property_name_length)
                        )
                    })
                });
            }
            let entry = list![name, value.clone()];
            self.confirm_nested(&entry, &entry_pattern, Label::Text(name), reject)?;
        }
        Ok(())
    }

    fn match_bag_of(&self, specimen: &Value, items: &[Value], limits: Limits, reject: Reject) -> Outcome {
        let entries = match collection_of(specimen) {
            Some(CopyCollection::Bag(entries)) => Some(entries),
            _ => None,
        };
        let within_limit = entries.is_some_and(|entries| entries.len() as f64 <= limits.num_unique_bag_elements);
        if !within_limit {
            self.confirm_kind(specimen, "copyBag", reject)?;
            return reject.fail(|| {
                format!(
                    "Bag must not have more than {} unique elements: {}",
                    number(limits.num_unique_bag_elements),
                    quote(specimen)
                )
            });
        }
        let (key_pattern, count_pattern) = (
            items.first().unwrap_or(&Value::Undefined),
            items.get(1).unwrap_or(&Value::Undefined),
        );
        for (index, (key, count)) in entries.iter().flat_map(|entries| entries.iter()).enumerate() {
            self.confirm_nested(key, key_pattern, Label::Element("bag keys", index), reject)?;
            let count = Value::bigint(count.clone());
            nested(Label::Element("bag counts", index), || {
                self.confirm_decimal_digits(&count, limits.decimal_digits, reject)?;
                self.confirm_matches(&count, count_pattern, reject)
            })?;
        }
        Ok(())
    }

    fn match_container_has(&self, specimen: &Value, items: &[Value], limits: Limits, reject: Reject) -> Outcome {
        self.confirm_kind_of(specimen, reject)?;
        let bound_value = items.get(1).cloned().unwrap_or(Value::Undefined);
        self.confirm_decimal_digits(&bound_value, limits.decimal_digits, reject)?;
        let bound = bound_value.as_bigint().cloned().unwrap_or_else(BigInt::zero);
        let element_pattern = items.first().unwrap_or(&Value::Undefined);
        let mut found = BigInt::zero();
        match (kind_of(specimen), collection_of(specimen)) {
            (Some(Kind::Style(PassStyle::CopyArray)), _) => {
                for element in specimen.as_array().unwrap_or_default() {
                    if found >= bound {
                        break;
                    }
                    if self.matches(element, element_pattern)? {
                        found += 1;
                    }
                }
            }
            (_, Some(CopyCollection::Set(elements))) => {
                for element in elements.iter().rev() {
                    if found >= bound {
                        break;
                    }
                    if self.matches(element, element_pattern)? {
                        found += 1;
                    }
                }
            }
            (_, Some(CopyCollection::Bag(entries))) => {
                let pairs: Vec<_> = entries.iter().collect();
                for (element, count) in pairs.into_iter().rev() {
                    let still_needed = &bound - &found;
                    if !still_needed.is_positive() {
                        break;
                    }
                    if self.matches(element, element_pattern)? {
                        found += count.min(&still_needed).clone();
                    }
                }
            }
            (kind, _) => {
                let kind_name = kind.map(|kind| kind.name());
                return reject.fail(|| format!("unexpected {}", kind_name.map_or("\"[undefined]\"".to_string(), s)));
            }
        }
        if found >= bound {
            Ok(())
        } else {
            reject.fail(|| {
                format!(
                    "Has only {} matches, but needs {}",
                    quote(&Value::bigint(found.clone())),
                    quote(&bound_value)
                )
            })
        }
    }

    fn match_split_array(&self, specimen: &Value, items: &[Value], reject: Reject) -> Outcome {
        self.confirm_kind(specimen, "copyArray", reject)?;
        let elements = specimen.as_array().unwrap_or_default();
        let required = items.first().and_then(Value::as_array).unwrap_or_default();
        let optional = items.get(1).and_then(Value::as_array).unwrap_or_default();
        let any = M::any();
        let rest = match items.get(2) {
            None | Some(Value::Undefined) => &any,
            Some(rest) => rest,
        };
        if elements.len() < required.len() {
            return reject.fail(|| format!("Expected at least {} arguments: {}", required.len(), quote(specimen)));
        }
        let mut argument = 0;
        for (element, pattern) in elements.iter().zip(required) {
            self.confirm_nested(element, pattern, Label::Arg(argument), reject)?;
            argument += 1;
        }
        let optional_given = &elements[required.len()..elements.len().min(required.len() + optional.len())];
        for (element, pattern) in optional_given.iter().zip(optional) {
            self.confirm_nested(element, &M::opt(pattern.clone()), Label::OptionalArg(argument), reject)?;
            argument += 1;
        }
        let rest_elements = Value::array(elements.iter().skip(required.len() + optional.len()).cloned());
        self.confirm_nested(&rest_elements, rest, Label::Text("...rest"), reject)
    }

    fn match_split_record(&self, specimen: &Value, items: &[Value], reject: Reject) -> Outcome {
        self.confirm_kind(specimen, "copyRecord", reject)?;
        let record = specimen.as_record().cloned().unwrap_or_default();
        let empty = Record::default();
        let required = items.first().and_then(Value::as_record).unwrap_or(&empty);
        let optional = match items.get(1) {
            Some(Value::Record(optional)) => optional.as_ref(),
            _ => &empty,
        };
        let any = M::any();
        let rest = match items.get(2) {
            None | Some(Value::Undefined) => &any,
            Some(rest) => rest,
        };
        let mut required_part: Vec<(Arc<str>, Value)> = Vec::new();
        let mut optional_part: Vec<(&str, &Value)> = Vec::new();
        let mut rest_part: Vec<(Arc<str>, Value)> = Vec::new();
        for (name, value) in crate::quote::js_property_order(&record) {
            if required.contains(name) {
                required_part.push((name.into(), value.clone()));
            } else if optional.contains(name) {
                optional_part.push((name, value));
            } else {
                rest_part.push((name.into(), value.clone()));
            }
        }
        self.confirm_matches(
            &Value::record(required_part),
            items.first().unwrap_or(&Value::Undefined),
            reject,
        )?;
        for (name, value) in optional_part {
            let pattern = M::opt(optional.get(name).cloned().unwrap_or(Value::Undefined));
            self.confirm_nested(value, &pattern, Label::OptionalName(name), reject)?;
        }
        self.confirm_nested(&Value::record(rest_part), rest, Label::Text("...rest"), reject)
    }
}

/// The digit count Endo computes: `floor(log10(|Number(n)|)) + 1`, in
/// floating point (so huge values count as infinitely many digits).
fn decimal_digits_as_endo_counts(n: &BigInt) -> f64 {
    let approximate = n.abs().to_f64().unwrap_or(f64::INFINITY);
    approximate.log10().floor() + 1.0
}

/// A limit as Endo's messages print a number.
fn number(n: f64) -> String {
    quote(&Value::Number(n))
}

/// Whether a value nests deeper than `max` containers, checked without
/// recursion so that hostile depth cannot overflow the stack.
pub fn nesting_exceeds(value: &Value, max: usize) -> bool {
    fn is_container(value: &Value) -> bool {
        matches!(value, Value::Array(_) | Value::Record(_) | Value::Tagged(_))
    }
    let mut stack: Vec<(&Value, usize)> = vec![(value, 0)];
    while let Some((value, depth)) = stack.pop() {
        let children: &mut dyn Iterator<Item = &Value> = match value {
            Value::Array(items) => &mut items.iter(),
            Value::Record(record) => &mut record.values(),
            Value::Tagged(tagged) => &mut std::iter::once(&tagged.payload),
            _ => continue,
        };
        for child in children {
            if depth + 1 > max {
                return true;
            }
            if is_container(child) {
                stack.push((child, depth + 1));
            }
        }
    }
    false
}
