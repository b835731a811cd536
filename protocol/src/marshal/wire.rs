//! Postcard's wire primitives (LEB128 varints, length-prefixed bytes,
//! one-byte booleans and options, little-endian floats), written by hand so
//! that a decoder can check every length against its limit and against the
//! bytes that remain before it allocates anything.

use super::MarshalError;

/// The most bytes a `u64` varint takes.
pub const MAX_VARINT_BYTES: usize = 10;

/// Appends `value` as a postcard varint.
#[inline]
pub fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// The number of bytes `put_varint` writes for `value`.
#[inline]
pub fn varint_len(value: u64) -> usize {
    let bits = 64 - (value | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

/// Appends a length-prefixed byte string.
#[inline]
pub fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// Outcome of reading a varint from a buffer that may hold only part of it.
#[derive(Debug, PartialEq, Eq)]
pub enum PartialVarint {
    /// The value and how many bytes it took.
    Complete(u64, usize),
    /// More bytes are needed.
    Incomplete,
}

/// Reads a varint from the front of `bytes`, which may end early. Rejects
/// varints longer than ten bytes, overflowing `u64`, or with a redundant
/// trailing zero byte (postcard always writes the shortest form).
#[inline]
pub fn read_varint_prefix(bytes: &[u8]) -> Result<PartialVarint, MarshalError> {
    // Most varints (tags, small lengths and positions) are one byte.
    if let Some(&byte) = bytes.first()
        && byte < 0x80
    {
        return Ok(PartialVarint::Complete(u64::from(byte), 1));
    }
    read_long_varint_prefix(bytes)
}

fn read_long_varint_prefix(bytes: &[u8]) -> Result<PartialVarint, MarshalError> {
    let mut value: u64 = 0;
    for (index, &byte) in bytes.iter().enumerate().take(MAX_VARINT_BYTES) {
        let payload = u64::from(byte & 0x7f);
        if index == MAX_VARINT_BYTES - 1 && byte > 0x01 {
            return Err(MarshalError::BadVarint);
        }
        value |= payload << (7 * index);
        if byte & 0x80 == 0 {
            if byte == 0 && index > 0 {
                return Err(MarshalError::BadVarint);
            }
            return Ok(PartialVarint::Complete(value, index + 1));
        }
    }
    if bytes.len() >= MAX_VARINT_BYTES {
        Err(MarshalError::BadVarint)
    } else {
        Ok(PartialVarint::Incomplete)
    }
}

/// A cursor over a complete body.
pub struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes }
    }

    pub fn remaining(&self) -> usize {
        self.bytes.len()
    }

    pub fn byte(&mut self) -> Result<u8, MarshalError> {
        let (&first, rest) = self.bytes.split_first().ok_or(MarshalError::UnexpectedEnd)?;
        self.bytes = rest;
        Ok(first)
    }

    #[inline]
    pub fn varint(&mut self) -> Result<u64, MarshalError> {
        match read_varint_prefix(self.bytes)? {
            PartialVarint::Complete(value, used) => {
                self.bytes = self.bytes.get(used..).unwrap_or_default();
                Ok(value)
            }
            PartialVarint::Incomplete => Err(MarshalError::UnexpectedEnd),
        }
    }

    /// Reads a length and checks it against `limit` and against the bytes
    /// left (each element takes at least `min_element_bytes`), so that a
    /// huge claim fails before anything is allocated for it.
    pub fn length(
        &mut self,
        what: &'static str,
        limit: usize,
        min_element_bytes: usize,
    ) -> Result<usize, MarshalError> {
        let claimed = self.varint()?;
        if claimed > limit as u64 {
            return Err(MarshalError::TooLarge {
                what,
                claimed,
                limit: limit as u64,
            });
        }
        let claimed = claimed as usize;
        if claimed.saturating_mul(min_element_bytes) > self.bytes.len() {
            return Err(MarshalError::UnexpectedEnd);
        }
        Ok(claimed)
    }

    pub fn take(&mut self, count: usize) -> Result<&'a [u8], MarshalError> {
        if count > self.bytes.len() {
            return Err(MarshalError::UnexpectedEnd);
        }
        let (taken, rest) = self.bytes.split_at(count);
        self.bytes = rest;
        Ok(taken)
    }

    pub fn bytes(&mut self, what: &'static str, limit: usize) -> Result<&'a [u8], MarshalError> {
        let len = self.length(what, limit, 1)?;
        self.take(len)
    }

    pub fn str(&mut self, what: &'static str, limit: usize) -> Result<&'a str, MarshalError> {
        let bytes = self.bytes(what, limit)?;
        std::str::from_utf8(bytes).map_err(|_| MarshalError::BadUtf8 { what })
    }

    pub fn bool(&mut self) -> Result<bool, MarshalError> {
        match self.byte()? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(MarshalError::BadBool(other)),
        }
    }

    /// Postcard's `Option` tag.
    pub fn option(&mut self) -> Result<bool, MarshalError> {
        match self.byte()? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(MarshalError::BadOption(other)),
        }
    }

    pub fn f64(&mut self) -> Result<f64, MarshalError> {
        let bytes = self.take(8)?;
        let mut array = [0u8; 8];
        array.copy_from_slice(bytes);
        Ok(f64::from_le_bytes(array))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip_and_reject_bad_forms() {
        for value in [0, 1, 127, 128, 300, u32::MAX as u64, u64::MAX] {
            let mut out = Vec::new();
            put_varint(&mut out, value);
            assert_eq!(out.len(), varint_len(value));
            assert_eq!(read_varint_prefix(&out), Ok(PartialVarint::Complete(value, out.len())));
            assert_eq!(read_varint_prefix(&out[..out.len() - 1]), Ok(PartialVarint::Incomplete));
        }
        assert_eq!(read_varint_prefix(&[0x80, 0x00]), Err(MarshalError::BadVarint));
        assert_eq!(read_varint_prefix(&[0xff; 10]), Err(MarshalError::BadVarint));
        assert_eq!(
            read_varint_prefix(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02]),
            Err(MarshalError::BadVarint)
        );
    }
}
