//! The JSON under Endo's CapTP: a bounded parser into a small tree, and a
//! writer whose output matches JavaScript's `JSON.stringify` byte for byte
//! (string escapes, number forms, property order), so that what we encode
//! can be compared with what `@endo/captp` sends.
//!
//! Our own parser rather than serde_json's: nesting is bounded while
//! parsing (before anything deeper is allocated), numbers are read with
//! correct rounding from their text (as `JSON.parse` does), and lone
//! UTF-16 surrogates, which JavaScript strings can hold and ours cannot,
//! are refused by name.

use std::fmt::Write;

use crate::quote::js_number;

/// A parsed JSON document. Objects keep their properties in text order;
/// a repeated name keeps its last value, as `JSON.parse` does.
#[derive(Clone, Debug, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    Number(f64),
    String(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

/// Why a JSON text was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JsonError {
    #[error("invalid JSON at byte {at}: {problem}")]
    Syntax { at: usize, problem: &'static str },
    #[error("JSON nests deeper than {limit}")]
    TooDeep { limit: usize },
    #[error("JSON string holds a lone UTF-16 surrogate, which Capstan strings cannot hold")]
    LoneSurrogate,
}

impl Json {
    /// The value of property `name`, if this is an object that has it.
    pub fn get(&self, name: &str) -> Option<&Json> {
        match self {
            Json::Object(properties) => properties
                .iter()
                .rev()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Json::String(text) => Some(text),
            _ => None,
        }
    }
}

/// Parses one JSON document that fills `text` (surrounding whitespace
/// allowed); arrays and objects may nest `max_depth` deep.
pub fn parse(text: &str, max_depth: usize) -> Result<Json, JsonError> {
    let mut parser = Parser {
        bytes: text.as_bytes(),
        at: 0,
        max_depth,
    };
    parser.skip_whitespace();
    let value = parser.value(0)?;
    parser.skip_whitespace();
    if parser.at != parser.bytes.len() {
        return Err(parser.error("text after the value"));
    }
    Ok(value)
}

struct Parser<'t> {
    bytes: &'t [u8],
    at: usize,
    max_depth: usize,
}

impl Parser<'_> {
    fn error(&self, problem: &'static str) -> JsonError {
        JsonError::Syntax { at: self.at, problem }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn skip_whitespace(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    fn expect_word(&mut self, word: &'static [u8], value: Json) -> Result<Json, JsonError> {
        if self.bytes.get(self.at..self.at + word.len()) == Some(word) {
            self.at += word.len();
            Ok(value)
        } else {
            Err(self.error("unknown literal"))
        }
    }

    fn value(&mut self, depth: usize) -> Result<Json, JsonError> {
        match self.peek() {
            None => Err(self.error("unexpected end")),
            Some(b'n') => self.expect_word(b"null", Json::Null),
            Some(b't') => self.expect_word(b"true", Json::Bool(true)),
            Some(b'f') => self.expect_word(b"false", Json::Bool(false)),
            Some(b'"') => self.string().map(Json::String),
            Some(b'[') => {
                if depth >= self.max_depth {
                    return Err(JsonError::TooDeep { limit: self.max_depth });
                }
                self.at += 1;
                let mut items = Vec::new();
                self.skip_whitespace();
                if self.peek() == Some(b']') {
                    self.at += 1;
                    return Ok(Json::Array(items));
                }
                loop {
                    self.skip_whitespace();
                    items.push(self.value(depth + 1)?);
                    self.skip_whitespace();
                    match self.peek() {
                        Some(b',') => self.at += 1,
                        Some(b']') => {
                            self.at += 1;
                            return Ok(Json::Array(items));
                        }
                        _ => return Err(self.error("expected , or ]")),
                    }
                }
            }
            Some(b'{') => {
                if depth >= self.max_depth {
                    return Err(JsonError::TooDeep { limit: self.max_depth });
                }
                self.at += 1;
                let mut properties: Vec<(String, Json)> = Vec::new();
                self.skip_whitespace();
                if self.peek() == Some(b'}') {
                    self.at += 1;
                    return Ok(Json::Object(properties));
                }
                loop {
                    self.skip_whitespace();
                    if self.peek() != Some(b'"') {
                        return Err(self.error("expected a property name"));
                    }
                    let name = self.string()?;
                    self.skip_whitespace();
                    if self.peek() != Some(b':') {
                        return Err(self.error("expected :"));
                    }
                    self.at += 1;
                    self.skip_whitespace();
                    let value = self.value(depth + 1)?;
                    // JSON.parse keeps the last of repeated names, in the
                    // place of the first.
                    match properties.iter_mut().find(|(known, _)| *known == name) {
                        Some(slot) => slot.1 = value,
                        None => properties.push((name, value)),
                    }
                    self.skip_whitespace();
                    match self.peek() {
                        Some(b',') => self.at += 1,
                        Some(b'}') => {
                            self.at += 1;
                            return Ok(Json::Object(properties));
                        }
                        _ => return Err(self.error("expected , or }")),
                    }
                }
            }
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(_) => Err(self.error("unexpected character")),
        }
    }

    fn number(&mut self) -> Result<Json, JsonError> {
        let start = self.at;
        if self.peek() == Some(b'-') {
            self.at += 1;
        }
        match self.peek() {
            Some(b'0') => self.at += 1,
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(self.error("expected a digit")),
        }
        if self.peek() == Some(b'.') {
            self.at += 1;
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(self.error("expected a digit after ."));
            }
            self.digits();
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.at += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.at += 1;
            }
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(self.error("expected an exponent"));
            }
            self.digits();
        }
        let text = std::str::from_utf8(self.bytes.get(start..self.at).unwrap_or_default())
            .map_err(|_| self.error("invalid number"))?;
        // Rust's parse rounds correctly and overflows to infinity, as
        // JSON.parse does.
        text.parse::<f64>()
            .map(Json::Number)
            .map_err(|_| self.error("invalid number"))
    }

    fn digits(&mut self) {
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.at += 1;
        }
    }

    fn string(&mut self) -> Result<String, JsonError> {
        self.at += 1;
        let mut out = String::new();
        loop {
            let run_start = self.at;
            while let Some(byte) = self.peek() {
                if byte == b'"' || byte == b'\\' || byte < 0x20 {
                    break;
                }
                self.at += 1;
            }
            let run = self.bytes.get(run_start..self.at).unwrap_or_default();
            // The input is a &str and runs stop only at ASCII bytes, so
            // every run is whole UTF-8.
            out.push_str(std::str::from_utf8(run).map_err(|_| self.error("invalid UTF-8"))?);
            match self.peek() {
                None => return Err(self.error("unterminated string")),
                Some(b'"') => {
                    self.at += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    self.at += 1;
                    let escape = self.peek().ok_or_else(|| self.error("unterminated escape"))?;
                    self.at += 1;
                    match escape {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'/' => out.push('/'),
                        b'b' => out.push('\u{8}'),
                        b'f' => out.push('\u{c}'),
                        b'n' => out.push('\n'),
                        b'r' => out.push('\r'),
                        b't' => out.push('\t'),
                        b'u' => {
                            let unit = self.hex4()?;
                            let code = if (0xd800..0xdc00).contains(&unit) {
                                if self.bytes.get(self.at..self.at + 2) != Some(b"\\u") {
                                    return Err(JsonError::LoneSurrogate);
                                }
                                self.at += 2;
                                let low = self.hex4()?;
                                if !(0xdc00..0xe000).contains(&low) {
                                    return Err(JsonError::LoneSurrogate);
                                }
                                0x10000 + ((unit - 0xd800) << 10) + (low - 0xdc00)
                            } else if (0xdc00..0xe000).contains(&unit) {
                                return Err(JsonError::LoneSurrogate);
                            } else {
                                unit
                            };
                            out.push(char::from_u32(code).ok_or_else(|| self.error("invalid escape"))?);
                        }
                        _ => return Err(self.error("invalid escape")),
                    }
                }
                Some(_) => return Err(self.error("control character in string")),
            }
        }
    }

    fn hex4(&mut self) -> Result<u32, JsonError> {
        let digits = self
            .bytes
            .get(self.at..self.at + 4)
            .ok_or_else(|| self.error("short \\u escape"))?;
        let text = std::str::from_utf8(digits).map_err(|_| self.error("invalid \\u escape"))?;
        let unit = u32::from_str_radix(text, 16).map_err(|_| self.error("invalid \\u escape"))?;
        self.at += 4;
        Ok(unit)
    }
}

/// Appends `text` as a JSON string, escaped as `JSON.stringify` does.
pub fn write_string(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Appends a finite number as `JSON.stringify` writes it (`-0` as `0`);
/// the caller encodes non-finite numbers, which JSON cannot hold.
pub fn write_number(out: &mut String, n: f64) {
    out.push_str(&js_number(n));
}

/// Whether `name` is an array index (`0`, or digits not starting with 0,
/// below 2^32 - 1): JavaScript objects list such keys first, in numeric
/// order, whatever order they were added in.
pub fn is_array_index(name: &str) -> Option<u32> {
    if name.is_empty() || (name.len() > 1 && name.starts_with('0')) || !name.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    name.parse::<u32>().ok().filter(|&index| index != u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_json_parse_accepts() {
        let parsed = parse(
            r#" {"a": [1, -2.5e3, true, null], "b": "x\u00e9\ud83d\ude00\n", "a": 7} "#,
            8,
        )
        .unwrap();
        assert_eq!(
            parsed,
            Json::Object(vec![
                ("a".into(), Json::Number(7.0)),
                ("b".into(), Json::String("xé😀\n".into())),
            ])
        );
        assert_eq!(parse("1e400", 1).unwrap(), Json::Number(f64::INFINITY));
        assert_eq!(parse("0.1", 1).unwrap(), Json::Number(0.1));
    }

    #[test]
    fn refuses_bad_deep_and_unrepresentable_text() {
        assert!(matches!(parse("[[1]]", 1), Err(JsonError::TooDeep { limit: 1 })));
        assert!(parse("[[1]]", 2).is_ok());
        assert_eq!(parse(r#""\ud800""#, 1), Err(JsonError::LoneSurrogate));
        assert_eq!(parse(r#""\udc00x""#, 1), Err(JsonError::LoneSurrogate));
        for bad in ["", "01", "[1,]", "{\"a\"}", "\"\u{1}\"", "tru", "1 2", "-", "1.", "[1"] {
            assert!(parse(bad, 8).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn writes_strings_and_numbers_as_javascript_does() {
        let mut out = String::new();
        write_string(&mut out, "a\"\\\u{1}\u{1f}é/\t");
        assert_eq!(out, r#""a\"\\\u0001\u001fé/\t""#);
        let mut out = String::new();
        for n in [1.0, -0.0, 1e21, 1.5e-7, 123.456] {
            write_number(&mut out, n);
            out.push(' ');
        }
        assert_eq!(out, "1 0 1e+21 1.5e-7 123.456 ");
        assert_eq!(is_array_index("10"), Some(10));
        assert_eq!(is_array_index("01"), None);
        assert_eq!(is_array_index("4294967295"), None);
    }
}
