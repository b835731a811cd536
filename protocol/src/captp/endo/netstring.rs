//! Netstring framing, as the Endo daemon frames CapTP on its sockets:
//! `<length in decimal>:<that many bytes>,`. The length is checked against
//! the frame bound as soon as its digits are read, before the buffer grows.

/// Why a netstring stream could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetstringError {
    #[error("netstring of {claimed} bytes exceeds max_frame_bytes ({limit})")]
    TooLarge { claimed: u64, limit: usize },
    #[error("malformed netstring: {0}")]
    Malformed(&'static str),
}

/// Appends `payload` as one netstring to `out`.
pub fn write_netstring(payload: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(payload.len().to_string().as_bytes());
    out.push(b':');
    out.extend_from_slice(payload);
    out.push(b',');
}

/// Digits allowed in a length: more than any bound we could set.
const MAX_LENGTH_DIGITS: usize = 12;

/// A pure incremental netstring decoder: feed it bytes, take whole
/// payloads out. After an error it stays failed.
#[derive(Debug)]
pub struct NetstringDecoder {
    buffer: Vec<u8>,
    consumed: usize,
    max_frame_bytes: usize,
    failed: Option<NetstringError>,
}

impl NetstringDecoder {
    pub fn new(max_frame_bytes: usize) -> NetstringDecoder {
        NetstringDecoder {
            buffer: Vec::new(),
            consumed: 0,
            max_frame_bytes,
            failed: None,
        }
    }

    pub fn feed(&mut self, bytes: &[u8]) {
        if self.failed.is_some() {
            return;
        }
        if self.consumed > 0 && self.consumed >= self.buffer.len() / 2 {
            self.buffer.drain(..self.consumed);
            self.consumed = 0;
        }
        self.buffer.extend_from_slice(bytes);
    }

    /// The next whole payload, `None` if more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<&[u8]>, NetstringError> {
        if let Some(error) = &self.failed {
            return Err(error.clone());
        }
        let pending = self.buffer.get(self.consumed..).unwrap_or_default();
        let Some(colon) = pending.iter().take(MAX_LENGTH_DIGITS + 1).position(|&b| b == b':') else {
            if pending.len() > MAX_LENGTH_DIGITS {
                return Err(self.fail(NetstringError::Malformed("the length is too long")));
            }
            if !pending.iter().all(u8::is_ascii_digit) {
                return Err(self.fail(NetstringError::Malformed("the length is not decimal digits")));
            }
            return Ok(None);
        };
        let digits = pending.get(..colon).unwrap_or_default();
        if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
            return Err(self.fail(NetstringError::Malformed("the length is not decimal digits")));
        }
        let claimed = digits.iter().fold(0u64, |n, &d| n * 10 + u64::from(d - b'0'));
        if claimed > self.max_frame_bytes as u64 {
            return Err(self.fail(NetstringError::TooLarge {
                claimed,
                limit: self.max_frame_bytes,
            }));
        }
        // Bounded by max_frame_bytes, so this fits in usize.
        let length = claimed as usize;
        let end = colon + 1 + length;
        match pending.get(end) {
            None => return Ok(None),
            Some(b',') => {}
            Some(_) => return Err(self.fail(NetstringError::Malformed("the payload does not end with a comma"))),
        }
        let start = self.consumed + colon + 1;
        self.consumed += end + 1;
        Ok(self.buffer.get(start..start + length))
    }

    fn fail(&mut self, error: NetstringError) -> NetstringError {
        self.failed = Some(error.clone());
        self.buffer = Vec::new();
        self.consumed = 0;
        error
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_split_anywhere_come_out_whole() {
        let mut wire = Vec::new();
        write_netstring(b"hello", &mut wire);
        write_netstring(b"", &mut wire);
        write_netstring(b"{\"a\":1}", &mut wire);
        assert_eq!(wire, b"5:hello,0:,7:{\"a\":1},");
        for split in 0..wire.len() {
            let mut decoder = NetstringDecoder::new(100);
            let mut frames = Vec::new();
            for part in [&wire[..split], &wire[split..]] {
                decoder.feed(part);
                while let Some(frame) = decoder.next_frame().unwrap() {
                    frames.push(frame.to_vec());
                }
            }
            assert_eq!(frames, vec![b"hello".to_vec(), Vec::new(), b"{\"a\":1}".to_vec()]);
        }
    }

    #[test]
    fn oversized_and_malformed_frames_fail_for_good() {
        let mut decoder = NetstringDecoder::new(10);
        decoder.feed(b"11:");
        assert_eq!(
            decoder.next_frame(),
            Err(NetstringError::TooLarge { claimed: 11, limit: 10 })
        );
        decoder.feed(b"1:a,");
        assert!(decoder.next_frame().is_err());
        for bad in [&b"x:"[..], b"3:abc;", b":a,", b"1234567890123"] {
            let mut decoder = NetstringDecoder::new(10);
            decoder.feed(bad);
            assert!(decoder.next_frame().is_err(), "{bad:?}");
        }
    }
}
