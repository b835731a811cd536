//! Text renderings of values used inside messages: the JSON-like quoting
//! Endo's debug mode applies to substituted values, JavaScript's number
//! formatting, JSON string escaping, and Justin (values as JS source).

use std::collections::HashSet;
use std::fmt::Write as _;

use crate::value::{Record, Value};

/// Renders a value as Endo's debug-mode error messages show it: JSON, with
/// `undefined`, bigints, non-finite numbers, symbols and objects that carry
/// a string tag shown as bracketed strings (`"[undefined]"`, `"[3n]"`,
/// `"[copySet]"`, `"[Alleged: Foo]"`), and record names sorted.
pub fn quote(value: &Value) -> String {
    let mut out = String::new();
    write_quoted(&mut out, value, &mut HashSet::new());
    out
}

/// The identity of an object-like value, for Endo's `"[Seen]"` marker: an
/// object printed once prints as `"[Seen]"` wherever it appears again.
fn object_identity(value: &Value) -> Option<usize> {
    match value {
        Value::Array(items) => Some(items.as_ptr() as usize),
        Value::Record(record) => Some(std::sync::Arc::as_ptr(record) as *const () as usize),
        Value::Tagged(tagged) => Some(std::sync::Arc::as_ptr(tagged) as *const () as usize),
        Value::Error(error) => Some(std::sync::Arc::as_ptr(error) as *const () as usize),
        Value::Remotable(reference) | Value::Promise(reference) => Some(reference.identity()),
        _ => None,
    }
}

fn write_quoted(out: &mut String, value: &Value, seen: &mut HashSet<usize>) {
    if let Some(identity) = object_identity(value) {
        // Empty arrays share one dangling pointer; they are never "seen".
        let empty_array = matches!(value, Value::Array(items) if items.is_empty());
        if !empty_array && !seen.insert(identity) {
            out.push_str("\"[Seen]\"");
            return;
        }
    }
    match value {
        Value::Undefined => out.push_str("\"[undefined]\""),
        Value::Null => out.push_str("null"),
        Value::Boolean(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) if n.is_finite() => out.push_str(&js_number(*n)),
        Value::Number(n) => write_json_string(out, &format!("[{}]", js_number(*n))),
        Value::BigInt(n) => write_json_string(out, &format!("[{n}n]")),
        Value::String(text) if text.starts_with('[') => write_json_string(out, &format!("[{text}]")),
        Value::String(text) => write_json_string(out, text),
        Value::Symbol(name) => write_json_string(out, &format!("[{}]", symbol_description(name))),
        Value::ByteArray(_) => write_json_string(out, "[ImmutableArrayBuffer]"),
        Value::Array(items) => {
            out.push('[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                write_quoted(out, item, seen);
            }
            out.push(']');
        }
        Value::Record(record) => write_quoted_record(out, record, seen),
        Value::Tagged(tagged) => write_json_string(out, &format!("[{}]", tagged.tag)),
        Value::Remotable(reference) => write_json_string(out, &format!("[{}]", reference.interface())),
        Value::Promise(_) => write_json_string(out, "[Promise]"),
        Value::Error(error) => write_json_string(out, &format!("[{}: {}]", error.name, error.message)),
    }
}

/// JavaScript lists integer-like property names first, in numeric order,
/// then the others (sorted here, as Endo sorts them before printing).
fn write_quoted_record(out: &mut String, record: &Record, seen: &mut HashSet<usize>) {
    out.push('{');
    for (position, (name, value)) in js_property_order(record).into_iter().enumerate() {
        if position > 0 {
            out.push(',');
        }
        write_json_string(out, name);
        out.push(':');
        write_quoted(out, value, seen);
    }
    out.push('}');
}

/// Record properties in the order JavaScript enumerates them once sorted:
/// integer-like names first, numerically, then the rest in sorted order.
pub fn js_property_order(record: &Record) -> Vec<(&str, &Value)> {
    let mut names: Vec<(&str, &Value)> = record.iter().map(|(k, v)| (&**k, v)).collect();
    names.sort_by_key(|(name, _)| array_index(name).map_or((1, 0), |index| (0, index)));
    names
}

/// A canonical array index (`"0"`, `"17"`, not `"01"`) below 2^32 - 1.
fn array_index(name: &str) -> Option<u64> {
    if name.is_empty() || (name.len() > 1 && name.starts_with('0')) || !name.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    name.parse::<u64>().ok().filter(|index| *index < u64::from(u32::MAX))
}

/// Text substituted bare (Endo's `b()`): as it is when it is made of word
/// characters, `:` and `-` with single spaces between, quoted otherwise.
pub fn bare(text: &str) -> String {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':' || c == '-';
    let mut previous_space = true;
    let mut can_be_bare = !text.is_empty();
    for c in text.chars() {
        if c == ' ' {
            if previous_space {
                can_be_bare = false;
                break;
            }
            previous_space = true;
        } else if word(c) {
            previous_space = false;
        } else {
            can_be_bare = false;
            break;
        }
    }
    if can_be_bare && !previous_space {
        text.to_string()
    } else {
        quote(&Value::from(text))
    }
}

/// What `String(symbol)` prints for a symbol with this passable name.
pub fn symbol_description(passable_name: &str) -> String {
    match passable_name.strip_prefix("@@") {
        Some(rest) if rest.starts_with("@@") => format!("Symbol({rest})"),
        Some(rest) => format!("Symbol(Symbol.{rest})"),
        None => format!("Symbol({passable_name})"),
    }
}

/// A string as `JSON.stringify` writes it.
pub fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    write_json_string(&mut out, text);
    out
}

pub fn write_json_string(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A number as JavaScript's `String(n)` writes it: shortest round-trip
/// digits, exponent form outside 1e-7..1e21, `-0` as `0`.
pub fn js_number(n: f64) -> String {
    if n.is_nan() {
        return "NaN".into();
    }
    if n.is_infinite() {
        return if n > 0.0 { "Infinity".into() } else { "-Infinity".into() };
    }
    if n == 0.0 {
        return "0".into();
    }
    // `{:e}` gives the shortest digits that round-trip: "d.ddde-7".
    let scientific = format!("{:e}", n.abs());
    let (mantissa, exponent) = scientific.split_once('e').unwrap_or((&scientific, "0"));
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let exponent: i64 = exponent.parse().unwrap_or(0);
    let count = digits.len() as i64;
    // JavaScript's rule, with n = exponent + 1 the decimal point position.
    let point = exponent + 1;
    let mut out = String::new();
    if n < 0.0 {
        out.push('-');
    }
    if count <= point && point <= 21 {
        out.push_str(&digits);
        out.extend(std::iter::repeat_n('0', (point - count) as usize));
    } else if 0 < point && point <= 21 {
        out.push_str(&digits[..point as usize]);
        out.push('.');
        out.push_str(&digits[point as usize..]);
    } else if -6 < point && point <= 0 {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', (-point) as usize));
        out.push_str(&digits);
    } else {
        out.push_str(&digits[..1]);
        if count > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let _ = write!(out, "e{}{}", if point - 1 < 0 { '-' } else { '+' }, (point - 1).abs());
    }
    out
}

/// A pattern as Endo's messages print it: Justin source, indented, in
/// backquotes (`qp` in Endo). Substituted into a message it is then quoted
/// as a string, so callers usually want `json_string(&quote_pattern(p))`.
pub fn quote_pattern(value: &Value) -> String {
    format!("`{}`", justin(value, true))
}

/// Renders a passable as Justin (JavaScript expression) source. With
/// `indent`, containers put one element per line with a trailing comma.
pub fn justin(value: &Value, indent: bool) -> String {
    let mut writer = JustinWriter {
        indent,
        out: String::new(),
        level: 0,
        need_space: false,
        slots: Vec::new(),
    };
    writer.value(value);
    writer.out
}

struct JustinWriter {
    indent: bool,
    out: String,
    level: usize,
    need_space: bool,
    /// Identities of references already given slot numbers.
    slots: Vec<usize>,
}

impl JustinWriter {
    fn open(&mut self, bracket: char) {
        if self.indent {
            self.level += 1;
            if self.need_space {
                self.out.push(' ');
            }
            self.need_space = false;
        }
        self.out.push(bracket);
    }

    fn line(&mut self) {
        if self.indent {
            self.need_space = false;
            self.out.push('\n');
            for _ in 0..self.level {
                self.out.push_str("  ");
            }
        }
    }

    fn next(&mut self, token: &str) {
        if self.indent {
            if self.need_space && token != "," && token != ")" {
                self.out.push(' ');
            }
            self.need_space = true;
        } else if let (Some(last), Some(first)) = (self.out.chars().last(), token.chars().next()) {
            // Without indentation, only separate tokens that would fuse.
            let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
            let pair: String = [last, first].iter().collect();
            if (word(last) && word(first)) || ["<<", ">>", "++", "--", "<!", "->"].contains(&pair.as_str()) {
                self.out.push(' ');
            }
        }
        self.out.push_str(token);
    }

    fn close(&mut self, bracket: char) {
        if self.indent {
            self.level = self.level.saturating_sub(1);
            self.line();
        } else if self.out.ends_with(',') {
            self.out.pop();
        }
        self.out.push(bracket);
    }

    fn slot(&mut self, identity: usize, interface: Option<&str>) {
        let (index, first) = match self.slots.iter().position(|seen| *seen == identity) {
            Some(index) => (index, false),
            None => {
                self.slots.push(identity);
                (self.slots.len() - 1, true)
            }
        };
        let slot_name = json_string(&format!("s{index}"));
        match interface {
            Some(interface) if first => self.next(&format!("slotToVal({slot_name},{})", json_string(interface))),
            _ => self.next(&format!("slotToVal({slot_name})")),
        }
    }

    fn value(&mut self, value: &Value) {
        match value {
            Value::Undefined => self.next("undefined"),
            Value::Null => self.next("null"),
            Value::Boolean(b) => self.next(if *b { "true" } else { "false" }),
            Value::Number(n) => self.next(&js_number(*n)),
            Value::BigInt(n) => self.next(&format!("{n}n")),
            Value::String(text) => self.next(&json_string(text)),
            Value::Symbol(name) => self.next(&format!("passableSymbolForName({})", json_string(name))),
            // Endo cannot render byte arrays as Justin yet; say what it is.
            Value::ByteArray(_) => self.next("\"[ImmutableArrayBuffer]\""),
            Value::Array(items) if items.is_empty() => self.next("[]"),
            Value::Array(items) => {
                self.open('[');
                for item in items.iter() {
                    self.line();
                    self.value(item);
                    self.next(",");
                }
                self.close(']');
            }
            Value::Record(record) if record.is_empty() => self.next("{}"),
            Value::Record(record) => {
                self.open('{');
                // Endo's capData escapes a record with an "@qclass" property
                // (the "Hilbert hotel"), which puts that property first.
                let mut properties = js_property_order(record);
                if let Some(position) = properties.iter().position(|(name, _)| *name == "@qclass") {
                    let qclass = properties.remove(position);
                    properties.insert(0, qclass);
                }
                for (name, item) in properties {
                    self.line();
                    if name == "__proto__" {
                        self.next("[\"__proto__\"]:");
                    } else if is_identifier(name) {
                        self.next(&format!("{name}:"));
                    } else {
                        self.next(&format!("{}:", json_string(name)));
                    }
                    self.value(item);
                    self.next(",");
                }
                self.close('}');
            }
            Value::Tagged(tagged) => {
                self.next(&format!("makeTagged({}", json_string(&tagged.tag)));
                self.next(",");
                self.value(&tagged.payload);
                self.next(")");
            }
            Value::Remotable(reference) => self.slot(reference.identity(), Some(reference.interface())),
            Value::Promise(reference) => self.slot(reference.identity(), None),
            Value::Error(error) => self.next(&format!("{}({})", error.name, json_string(&error.message))),
        }
    }
}

/// Justin writes a property name bare when it is a simple identifier.
fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic()) && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{far, list, record};

    #[test]
    fn numbers_print_as_javascript_does() {
        for (n, text) in [
            (100.0, "100"),
            (0.1, "0.1"),
            (-1.5, "-1.5"),
            (1e21, "1e+21"),
            (1e20, "100000000000000000000"),
            (1.5e-7, "1.5e-7"),
            (0.000001, "0.000001"),
            (123456789.125, "123456789.125"),
            (-0.0, "0"),
            (5e-324, "5e-324"),
            (1.7976931348623157e308, "1.7976931348623157e+308"),
        ] {
            assert_eq!(js_number(n), text, "{n}");
        }
    }

    #[test]
    fn quoting_matches_debug_mode() {
        assert_eq!(quote(&Value::Undefined), "\"[undefined]\"");
        assert_eq!(quote(&Value::bigint(3)), "\"[3n]\"");
        assert_eq!(quote(&Value::Number(f64::NAN)), "\"[NaN]\"");
        assert_eq!(quote(&record! {"foo" => 3, "bar" => 4}), "{\"bar\":4,\"foo\":3}");
        assert_eq!(quote(&list!["a", Value::bigint(0)]), "[\"a\",\"[0n]\"]");
        assert_eq!(quote(&far("Foo")), "\"[Alleged: Foo]\"");
        assert_eq!(quote(&Value::from("[x")), "\"[[x]\"");
    }
}
