//! The `M` namespace: builders for matchers, named and shaped as in Endo's
//! `M` (a trailing limits record is dropped when absent, as Endo does).

use num_bigint::BigInt;

use crate::value::Value;
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
