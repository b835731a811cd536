//! Printing values the way Endo's CLI does: a string as it is, a number
//! plainly, other values in JavaScript-like notation (`[1, 2]`,
//! `Object [Alleged: Counter] {}`).

use capstan_protocol::Value;
use capstan_protocol::quote::{js_number, json_string, symbol_description};

/// A value for standard output.
pub fn inspect_top(value: &Value) -> String {
    match value {
        Value::String(text) => text.to_string(),
        other => inspect(other),
    }
}

/// A rejection reason for a person: its message, which is never empty
/// (`null`, `undefined` and other non-errors are described as such; see
/// `reason_to_error`).
pub fn describe_reason(reason: &Value) -> String {
    capstan_node::runtime::reason_to_error(reason.clone())
        .message
        .to_string()
}

/// A value in JavaScript-like notation.
pub fn inspect(value: &Value) -> String {
    let mut out = String::new();
    write(&mut out, value);
    out
}

fn write(out: &mut String, value: &Value) {
    match value {
        Value::Undefined => out.push_str("undefined"),
        Value::Null => out.push_str("null"),
        Value::Boolean(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&js_number(*n)),
        Value::BigInt(n) => out.push_str(&format!("{n}n")),
        Value::String(text) => out.push_str(&json_string(text)),
        Value::Symbol(name) => out.push_str(&symbol_description(name)),
        Value::ByteArray(bytes) => out.push_str(&format!("ArrayBuffer {{ byteLength: {} }}", bytes.len())),
        Value::Array(items) => {
            out.push('[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push_str(", ");
                }
                write(out, item);
            }
            out.push(']');
        }
        Value::Record(record) => {
            if record.is_empty() {
                out.push_str("{}");
                return;
            }
            out.push_str("{ ");
            for (index, (name, item)) in record.iter().enumerate() {
                if index > 0 {
                    out.push_str(", ");
                }
                if is_identifier(name) {
                    out.push_str(name);
                } else {
                    out.push_str(&json_string(name));
                }
                out.push_str(": ");
                write(out, item);
            }
            out.push_str(" }");
        }
        Value::Tagged(tagged) => {
            out.push_str(&format!("Object [{}] ", tagged.tag));
            write(out, &tagged.payload);
        }
        Value::Remotable(reference) => out.push_str(&format!("Object [{}] {{}}", reference.interface())),
        Value::Promise(_) => out.push_str("Promise { <pending> }"),
        Value::Error(error) if error.message.is_empty() => out.push_str(&error.name),
        Value::Error(error) => out.push_str(&format!("{}: {}", error.name, error.message)),
    }
}

fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_alphabetic() || c == '_' || c == '$')
        && chars.all(|c| c.is_alphanumeric() || c == '_' || c == '$')
}

#[cfg(test)]
mod tests {
    use super::*;
    use capstan_protocol::{far, list, record};

    #[test]
    fn prints_like_endo() {
        assert_eq!(inspect_top(&Value::from(100)), "100");
        assert_eq!(inspect_top(&Value::from("hi")), "hi");
        assert_eq!(inspect(&list![1, 2]), "[1, 2]");
        assert_eq!(inspect(&far("Counter")), "Object [Alleged: Counter] {}");
        assert_eq!(inspect(&record! { "a" => 1, "b c" => "x" }), "{ a: 1, \"b c\": \"x\" }");
    }

    #[test]
    fn every_rejection_reason_has_a_text() {
        use capstan_protocol::ErrorValue;
        assert_eq!(describe_reason(&Value::error(ErrorValue::plain("boom"))), "boom");
        assert_eq!(describe_reason(&Value::Null), "rejected with null, not an Error");
        assert_eq!(
            describe_reason(&Value::Undefined),
            "rejected with undefined, not an Error"
        );
        assert_eq!(describe_reason(&Value::from("")), "rejected with \"\", not an Error");
        assert_eq!(
            describe_reason(&Value::error(ErrorValue::new("TypeError", ""))),
            "TypeError with no message"
        );
        assert_eq!(inspect(&Value::error(ErrorValue::new("TypeError", ""))), "TypeError");
    }
}
