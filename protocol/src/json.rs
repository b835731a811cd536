//! Plain JSON data as passables: what configuration files and command
//! lines hand the node. Objects become copyRecords, arrays copyArrays,
//! numbers float64s; nothing in JSON can be a reference.

use crate::value::Value;

/// A JSON document as a passable.
pub fn from_json(json: &serde_json::Value) -> Value {
    from_json_with(json, &|_| None)
}

/// A JSON document as a passable, where `special` may give the value of
/// an object itself (the CLI turns `{"@kref": ..}` into a presence).
pub fn from_json_with(
    json: &serde_json::Value,
    special: &dyn Fn(&serde_json::Map<String, serde_json::Value>) -> Option<Value>,
) -> Value {
    use serde_json::Value as Json;
    if let Json::Object(map) = json
        && let Some(value) = special(map)
    {
        return value;
    }
    match json {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Boolean(*b),
        Json::Number(n) => Value::Number(n.as_f64().unwrap_or(f64::NAN)),
        Json::String(text) => Value::from(text.as_str()),
        Json::Array(items) => Value::array(items.iter().map(|item| from_json_with(item, special))),
        Json::Object(map) => Value::record(map.iter().map(|(k, v)| (k.as_str(), from_json_with(v, special)))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_documents_become_records_and_arrays() {
        let json = serde_json::json!({"b": [1, "two", null], "a": true});
        let value = from_json(&json);
        let Value::Record(record) = &value else {
            panic!("not a record: {value:?}")
        };
        assert!(matches!(record.get("a"), Some(Value::Boolean(true))));
        let items = record.get("b").and_then(Value::as_array).unwrap();
        assert_eq!(items.len(), 3);
        assert_eq!(items[0].as_number(), Some(1.0));
        assert_eq!(items[1].as_str(), Some("two"));
        assert!(matches!(items[2], Value::Null));
    }
}
