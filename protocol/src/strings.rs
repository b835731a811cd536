//! String order by UTF-16 code units, the order JavaScript sorts strings in.
//!
//! Rust strings compare by UTF-8 bytes, which is code-point order. The two
//! differ only between characters above U+FFFF (surrogate pairs, first unit
//! 0xD800..0xDBFF) and characters U+E000..U+FFFF.

use std::cmp::Ordering;

/// Compares two strings as JavaScript does: by UTF-16 code units.
pub fn compare_utf16(a: &str, b: &str) -> Ordering {
    let (a_bytes, b_bytes) = (a.as_bytes(), b.as_bytes());
    let common = a_bytes.iter().zip(b_bytes).take_while(|(x, y)| x == y).count();
    if common == a_bytes.len() || common == b_bytes.len() {
        return a_bytes.len().cmp(&b_bytes.len());
    }
    // Back up to the start of the character that differs.
    let mut start = common;
    while !a.is_char_boundary(start) {
        start -= 1;
    }
    match (a[start..].chars().next(), b[start..].chars().next()) {
        (Some(x), Some(y)) => utf16_rank(x).cmp(&utf16_rank(y)),
        _ => a_bytes.len().cmp(&b_bytes.len()),
    }
}

/// A number that orders characters as their first UTF-16 unit would, and
/// pairs by code point (which matches unit order among them).
fn utf16_rank(c: char) -> u32 {
    let code = c as u32;
    match code {
        0..=0xD7FF => code,
        0x1_0000.. => 0xD800 + (code - 0x1_0000),
        _ => code + 0x10_0000,
    }
}

/// The length in UTF-16 code units, as JavaScript's `length`.
pub fn utf16_len(text: &str) -> usize {
    if text.is_ascii() {
        text.len()
    } else {
        text.chars().map(char::len_utf16).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf16_order_differs_from_utf8_above_bmp() {
        let astral = "\u{1F600}";
        let private_use = "\u{E000}";
        assert_eq!(astral.cmp(private_use), Ordering::Greater);
        assert_eq!(compare_utf16(astral, private_use), Ordering::Less);
        assert_eq!(compare_utf16("ab", "abc"), Ordering::Less);
        assert_eq!(compare_utf16("b", "abc"), Ordering::Greater);
        assert_eq!(compare_utf16("é", "é"), Ordering::Equal);
        assert_eq!(compare_utf16("\u{E9}", "\u{1F600}"), Ordering::Less);
    }

    #[test]
    fn length_counts_code_units() {
        assert_eq!(utf16_len("abc"), 3);
        assert_eq!(utf16_len("\u{1F600}"), 2);
        assert_eq!(utf16_len("é"), 1);
    }
}
