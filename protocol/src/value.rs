//! Passable values: the one data type every part of Capstan carries.
//!
//! A [`Value`] covers the 14 pass styles. Values are immutable once built and
//! cheap to clone (containers share their contents through `Arc`), so
//! `harden` is the identity. Remotables and promises are opaque
//! [`Reference`]s whose identity is the allocation; the runtime puts its own
//! target inside.

use std::any::Any;
use std::fmt;
use std::sync::{Arc, OnceLock};

use num_bigint::BigInt;

use crate::strings::compare_utf16;

/// The 14 pass styles.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PassStyle {
    Undefined,
    Null,
    Boolean,
    Number,
    BigInt,
    String,
    ByteArray,
    Symbol,
    CopyArray,
    CopyRecord,
    Tagged,
    Remotable,
    Promise,
    Error,
}

impl PassStyle {
    /// The name `passStyleOf` returns in JavaScript.
    pub fn name(self) -> &'static str {
        match self {
            PassStyle::Undefined => "undefined",
            PassStyle::Null => "null",
            PassStyle::Boolean => "boolean",
            PassStyle::Number => "number",
            PassStyle::BigInt => "bigint",
            PassStyle::String => "string",
            PassStyle::ByteArray => "byteArray",
            PassStyle::Symbol => "symbol",
            PassStyle::CopyArray => "copyArray",
            PassStyle::CopyRecord => "copyRecord",
            PassStyle::Tagged => "tagged",
            PassStyle::Remotable => "remotable",
            PassStyle::Promise => "promise",
            PassStyle::Error => "error",
        }
    }

    /// Parses a pass style name as `passStyleOf` spells it.
    pub fn from_name(name: &str) -> Option<PassStyle> {
        PassStyle::ALL.iter().copied().find(|style| style.name() == name)
    }

    pub const ALL: [PassStyle; 14] = [
        PassStyle::Undefined,
        PassStyle::Null,
        PassStyle::Boolean,
        PassStyle::Number,
        PassStyle::BigInt,
        PassStyle::String,
        PassStyle::ByteArray,
        PassStyle::Symbol,
        PassStyle::CopyArray,
        PassStyle::CopyRecord,
        PassStyle::Tagged,
        PassStyle::Remotable,
        PassStyle::Promise,
        PassStyle::Error,
    ];
}

/// A passable value.
#[derive(Clone)]
pub enum Value {
    Undefined,
    Null,
    Boolean(bool),
    Number(f64),
    BigInt(Arc<BigInt>),
    String(Arc<str>),
    ByteArray(Arc<[u8]>),
    /// A symbol, carried by its passable name (see [`Value::symbol`]).
    Symbol(Arc<str>),
    Array(Arc<[Value]>),
    Record(Arc<Record>),
    Tagged(Arc<Tagged>),
    Remotable(Reference),
    Promise(Reference),
    Error(Arc<ErrorValue>),
}

/// Errors from building a value that breaks a pass-style rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    #[error("Only registered symbols or well-known symbols are passable: {0:?}")]
    BadSymbolName(String),
    #[error("Record has duplicate property name {0:?}")]
    DuplicateProperty(String),
}

/// The well-known symbols, named without their `@@` prefix.
pub const WELL_KNOWN_SYMBOLS: [&str; 13] = [
    "asyncIterator",
    "hasInstance",
    "isConcatSpreadable",
    "iterator",
    "match",
    "matchAll",
    "replace",
    "search",
    "species",
    "split",
    "toPrimitive",
    "toStringTag",
    "unscopables",
];

impl Value {
    pub fn pass_style(&self) -> PassStyle {
        match self {
            Value::Undefined => PassStyle::Undefined,
            Value::Null => PassStyle::Null,
            Value::Boolean(_) => PassStyle::Boolean,
            Value::Number(_) => PassStyle::Number,
            Value::BigInt(_) => PassStyle::BigInt,
            Value::String(_) => PassStyle::String,
            Value::ByteArray(_) => PassStyle::ByteArray,
            Value::Symbol(_) => PassStyle::Symbol,
            Value::Array(_) => PassStyle::CopyArray,
            Value::Record(_) => PassStyle::CopyRecord,
            Value::Tagged(_) => PassStyle::Tagged,
            Value::Remotable(_) => PassStyle::Remotable,
            Value::Promise(_) => PassStyle::Promise,
            Value::Error(_) => PassStyle::Error,
        }
    }

    pub fn string(text: impl Into<Arc<str>>) -> Value {
        Value::String(text.into())
    }

    pub fn bigint(n: impl Into<BigInt>) -> Value {
        Value::BigInt(Arc::new(n.into()))
    }

    pub fn bytes(bytes: impl Into<Arc<[u8]>>) -> Value {
        Value::ByteArray(bytes.into())
    }

    /// A copyArray of `items`; an empty one shares [`empty_items`]
    /// instead of allocating.
    pub fn list(items: Vec<Value>) -> Value {
        if items.is_empty() {
            Value::Array(empty_items())
        } else {
            Value::Array(Arc::from(items))
        }
    }

    pub fn array(items: impl IntoIterator<Item = Value>) -> Value {
        Value::Array(items.into_iter().collect())
    }

    /// A record from `(name, value)` pairs. As in a JavaScript object
    /// literal, a repeated name keeps its last value.
    pub fn record<K: Into<Arc<str>>>(entries: impl IntoIterator<Item = (K, Value)>) -> Value {
        Value::Record(Arc::new(Record::from_entries_last_wins(entries)))
    }

    pub fn tagged(tag: impl Into<Arc<str>>, payload: Value) -> Value {
        Value::Tagged(Arc::new(Tagged {
            tag: tag.into(),
            payload,
        }))
    }

    pub fn error(error: ErrorValue) -> Value {
        Value::Error(Arc::new(error))
    }

    /// A symbol from its passable name: `@@iterator` for a well-known
    /// symbol, `foo` for `Symbol.for("foo")`, `@@@@foo` for
    /// `Symbol.for("@@foo")`.
    pub fn symbol(passable_name: impl Into<Arc<str>>) -> Result<Value, ValueError> {
        let name = passable_name.into();
        check_symbol_name(&name)?;
        Ok(Value::Symbol(name))
    }

    /// The symbol `Symbol.for(registered_name)`.
    pub fn registered_symbol(registered_name: &str) -> Value {
        if registered_name.starts_with("@@") {
            Value::Symbol(format!("@@{registered_name}").into())
        } else {
            Value::Symbol(registered_name.into())
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(text) => Some(text),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(items) => Some(items),
            _ => None,
        }
    }

    pub fn as_record(&self) -> Option<&Record> {
        match self {
            Value::Record(record) => Some(record),
            _ => None,
        }
    }

    pub fn as_tagged(&self) -> Option<&Tagged> {
        match self {
            Value::Tagged(tagged) => Some(tagged),
            _ => None,
        }
    }

    pub fn as_bigint(&self) -> Option<&BigInt> {
        match self {
            Value::BigInt(n) => Some(n),
            _ => None,
        }
    }

    pub fn as_number(&self) -> Option<f64> {
        match self {
            Value::Number(n) => Some(*n),
            _ => None,
        }
    }

    pub fn is_undefined(&self) -> bool {
        matches!(self, Value::Undefined)
    }

    /// Structural identity as `Object.is` would see the passable: `NaN` is
    /// itself, `-0` differs from `0`, references compare by identity.
    /// Used by tests and caches; matching uses key order instead.
    pub fn same_as(&self, other: &Value) -> bool {
        match (self, other) {
            (Value::Undefined, Value::Undefined) | (Value::Null, Value::Null) => true,
            (Value::Boolean(a), Value::Boolean(b)) => a == b,
            (Value::Number(a), Value::Number(b)) => a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()),
            (Value::BigInt(a), Value::BigInt(b)) => a == b,
            (Value::String(a), Value::String(b)) => a == b,
            (Value::ByteArray(a), Value::ByteArray(b)) => a == b,
            (Value::Symbol(a), Value::Symbol(b)) => a == b,
            (Value::Array(a), Value::Array(b)) => {
                a.len() == b.len() && a.iter().zip(b.iter()).all(|(x, y)| x.same_as(y))
            }
            (Value::Record(a), Value::Record(b)) => {
                a.len() == b.len()
                    && a.iter()
                        .zip(b.iter())
                        .all(|((ka, va), (kb, vb))| ka == kb && va.same_as(vb))
            }
            (Value::Tagged(a), Value::Tagged(b)) => a.tag == b.tag && a.payload.same_as(&b.payload),
            (Value::Remotable(a), Value::Remotable(b)) | (Value::Promise(a), Value::Promise(b)) => a.same(b),
            (Value::Error(a), Value::Error(b)) => a == b,
            _ => false,
        }
    }
}

/// Checks a symbol's passable name: well-known names must be real
/// well-known symbols, and `@@@@` marks a registered name that starts `@@`.
pub fn check_symbol_name(name: &str) -> Result<(), ValueError> {
    match name.strip_prefix("@@") {
        None => Ok(()),
        Some(rest) if rest.starts_with("@@") => Ok(()),
        Some(rest) if WELL_KNOWN_SYMBOLS.contains(&rest) => Ok(()),
        Some(_) => Err(ValueError::BadSymbolName(name.to_string())),
    }
}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&crate::quote::quote(self))
    }
}

/// A copyRecord: string-named properties kept sorted by name in UTF-16
/// code-unit order, names unique.
#[derive(Clone, Default)]
pub struct Record {
    entries: Vec<(Arc<str>, Value)>,
}

impl Record {
    /// Builds a record, failing on a repeated name (for untrusted input).
    pub fn from_entries<K: Into<Arc<str>>>(
        entries: impl IntoIterator<Item = (K, Value)>,
    ) -> Result<Record, ValueError> {
        let mut entries: Vec<(Arc<str>, Value)> = entries.into_iter().map(|(k, v)| (k.into(), v)).collect();
        entries.sort_by(|(a, _), (b, _)| compare_utf16(a, b));
        if let Some(pair) = entries.windows(2).find(|pair| pair[0].0 == pair[1].0) {
            return Err(ValueError::DuplicateProperty(pair[0].0.to_string()));
        }
        Ok(Record { entries })
    }

    fn from_entries_last_wins<K: Into<Arc<str>>>(entries: impl IntoIterator<Item = (K, Value)>) -> Record {
        let mut entries: Vec<(Arc<str>, Value)> = entries.into_iter().map(|(k, v)| (k.into(), v)).collect();
        // A stable sort keeps later duplicates after earlier ones.
        entries.sort_by(|(a, _), (b, _)| compare_utf16(a, b));
        let mut deduped: Vec<(Arc<str>, Value)> = Vec::with_capacity(entries.len());
        for entry in entries {
            match deduped.last_mut() {
                Some(last) if last.0 == entry.0 => *last = entry,
                _ => deduped.push(entry),
            }
        }
        Record { entries: deduped }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn get(&self, name: &str) -> Option<&Value> {
        self.entries
            .binary_search_by(|(k, _)| compare_utf16(k, name))
            .ok()
            .map(|index| &self.entries[index].1)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Properties in name order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&Arc<str>, &Value)> + DoubleEndedIterator {
        self.entries.iter().map(|(k, v)| (k, v))
    }

    pub fn names(&self) -> impl ExactSizeIterator<Item = &Arc<str>> + DoubleEndedIterator {
        self.entries.iter().map(|(k, _)| k)
    }

    pub fn values(&self) -> impl ExactSizeIterator<Item = &Value> + DoubleEndedIterator {
        self.entries.iter().map(|(_, v)| v)
    }
}

/// A tagged value: a tag string and a passable payload.
#[derive(Clone)]
pub struct Tagged {
    pub tag: Arc<str>,
    pub payload: Value,
}

/// A passable error: name, message, optional cause, and nested errors.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErrorValue {
    pub name: Arc<str>,
    pub message: Arc<str>,
    pub cause: Option<Arc<ErrorValue>>,
    pub errors: Vec<Arc<ErrorValue>>,
}

impl ErrorValue {
    pub fn new(name: impl Into<Arc<str>>, message: impl Into<Arc<str>>) -> ErrorValue {
        ErrorValue {
            name: name.into(),
            message: message.into(),
            cause: None,
            errors: Vec::new(),
        }
    }

    /// A plain `Error` with this message.
    pub fn plain(message: impl Into<Arc<str>>) -> ErrorValue {
        ErrorValue::new("Error", message)
    }

    /// A `TypeError`, as pattern and guard failures are.
    pub fn type_error(message: impl Into<Arc<str>>) -> ErrorValue {
        ErrorValue::new("TypeError", message)
    }

    /// A `RangeError`, for limits exceeded.
    pub fn range_error(message: impl Into<Arc<str>>) -> ErrorValue {
        ErrorValue::new("RangeError", message)
    }

    pub fn with_cause(mut self, cause: ErrorValue) -> ErrorValue {
        self.cause = Some(Arc::new(cause));
        self
    }
}

impl fmt::Display for ErrorValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.name, self.message)
    }
}

impl std::error::Error for ErrorValue {}

/// An opaque reference: the value of a remotable or a promise. Two
/// references are the same object only if they share an allocation. The
/// runtime stores its own target inside and gets it back by downcasting.
#[derive(Clone)]
pub struct Reference {
    inner: Arc<ReferenceInner>,
}

struct ReferenceInner {
    interface: Arc<str>,
    target: Box<dyn Any + Send + Sync>,
}

impl Reference {
    /// A reference whose interface name is `interface` (for remotables
    /// conventionally `Alleged: Name`).
    pub fn new(interface: impl Into<Arc<str>>, target: impl Any + Send + Sync) -> Reference {
        Reference {
            inner: Arc::new(ReferenceInner {
                interface: interface.into(),
                target: Box::new(target),
            }),
        }
    }

    /// A reference with no runtime target: useful for tests and for values
    /// decoded without a session.
    pub fn detached(interface: impl Into<Arc<str>>) -> Reference {
        Reference::new(interface, ())
    }

    pub fn interface(&self) -> &str {
        &self.inner.interface
    }

    pub fn target<T: Any>(&self) -> Option<&T> {
        self.inner.target.downcast_ref::<T>()
    }

    pub fn same(&self, other: &Reference) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// How many handles to this reference exist. A table that holds one
    /// can tell when it is the last holder (to release an import).
    pub fn holders(&self) -> usize {
        Arc::strong_count(&self.inner)
    }

    /// Whether this handle is the only one left: a table holding it can
    /// let the reference go, since nobody else can use it any more.
    pub fn is_only_holder(&self) -> bool {
        Arc::strong_count(&self.inner) == 1
    }

    /// A number unique to this reference while it is alive.
    pub fn identity(&self) -> usize {
        Arc::as_ptr(&self.inner) as *const () as usize
    }
}

impl fmt::Debug for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Reference({} @{:x})", self.interface(), self.identity())
    }
}

impl PartialEq for Reference {
    fn eq(&self, other: &Reference) -> bool {
        self.same(other)
    }
}

impl Eq for Reference {}

impl std::hash::Hash for Reference {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.identity().hash(state);
    }
}

/// How a promise or call settled: `Ok` fulfilled with a value, `Err`
/// rejected with a reason (any passable, usually a [`Value::Error`]). The
/// CapTP session, the vat runtime and the JS host all speak this one type.
pub type Settlement = Result<Value, Value>;

/// A remotable built from a far object name: interface `Alleged: name`.
pub fn far(name: &str) -> Value {
    Value::Remotable(Reference::detached(format!("Alleged: {name}")))
}

macro_rules! from_number {
    ($($t:ty),*) => {$(
        impl From<$t> for Value {
            fn from(n: $t) -> Value { Value::Number(n as f64) }
        }
    )*};
}
from_number!(i8, i16, i32, u8, u16, u32, f32, f64);

impl From<i64> for Value {
    /// An `i64` becomes a number; use [`Value::bigint`] for a bigint.
    fn from(n: i64) -> Value {
        Value::Number(n as f64)
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Value {
        Value::Boolean(b)
    }
}

impl From<&str> for Value {
    fn from(text: &str) -> Value {
        Value::String(text.into())
    }
}

impl From<String> for Value {
    fn from(text: String) -> Value {
        Value::String(text.into())
    }
}

impl From<Arc<str>> for Value {
    fn from(text: Arc<str>) -> Value {
        Value::String(text)
    }
}

impl From<BigInt> for Value {
    fn from(n: BigInt) -> Value {
        Value::BigInt(Arc::new(n))
    }
}

impl From<Vec<Value>> for Value {
    fn from(items: Vec<Value>) -> Value {
        Value::Array(items.into())
    }
}

impl From<()> for Value {
    fn from(_: ()) -> Value {
        Value::Undefined
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    /// `None` is `undefined`.
    fn from(option: Option<T>) -> Value {
        option.map_or(Value::Undefined, Into::into)
    }
}

impl From<ErrorValue> for Value {
    fn from(error: ErrorValue) -> Value {
        Value::error(error)
    }
}

impl From<Record> for Value {
    fn from(record: Record) -> Value {
        Value::Record(Arc::new(record))
    }
}

/// The items of an empty copyArray, one allocation shared by all: most
/// calls have no arguments, and an `Arc<[Value]>` allocates even when
/// empty.
pub fn empty_items() -> Arc<[Value]> {
    static EMPTY: OnceLock<Arc<[Value]>> = OnceLock::new();
    Arc::clone(EMPTY.get_or_init(|| Arc::from(Vec::new())))
}

/// Builds a copyArray: `list![1, "two", true]`.
#[macro_export]
macro_rules! list {
    ($($item:expr),* $(,)?) => {
        $crate::Value::list(vec![$($crate::Value::from($item)),*])
    };
}

/// Builds a copyRecord: `record! { "x" => 1, "name" => "Ada" }`.
#[macro_export]
macro_rules! record {
    ($($name:expr => $value:expr),* $(,)?) => {
        $crate::Value::record(vec![$((::std::sync::Arc::<str>::from($name), $crate::Value::from($value))),*])
    };
}
