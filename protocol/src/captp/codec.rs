//! Framing: an unsigned-varint length prefix, then one postcard-encoded
//! [`Message`]. The frame size cap is checked on the prefix, before any
//! buffer grows for the frame.

use crate::captp::message::{Message, MessageError};
use crate::marshal::MarshalError;
use crate::marshal::wire::{PartialVarint, put_varint, read_varint_prefix};

/// Why a frame could not be read or written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {claimed} bytes exceeds max_frame_bytes ({limit})")]
    TooLarge { claimed: u64, limit: usize },
    #[error("malformed frame length prefix")]
    BadPrefix,
    #[error(transparent)]
    Message(#[from] MessageError),
}

/// Appends one frame holding `message` to `out`; fails, writing nothing,
/// if the message is larger than `max_frame_bytes`.
pub fn write_frame(message: &Message<'_>, max_frame_bytes: usize, out: &mut Vec<u8>) -> Result<usize, FrameError> {
    let size = message.encoded_len()?;
    if size > max_frame_bytes {
        return Err(FrameError::TooLarge {
            claimed: size as u64,
            limit: max_frame_bytes,
        });
    }
    let start = out.len();
    put_varint(out, size as u64);
    if let Err(error) = message.encode_into(out) {
        out.truncate(start);
        return Err(error.into());
    }
    Ok(out.len() - start)
}

/// Appends one frame holding `payload` as is (for measuring the framing
/// alone, and for tests that send hostile bytes).
pub fn write_raw_frame(payload: &[u8], out: &mut Vec<u8>) {
    put_varint(out, payload.len() as u64);
    out.extend_from_slice(payload);
}

/// A pure incremental frame decoder: feed it bytes as they arrive, take
/// complete frames out. After an error it stays failed.
#[derive(Debug)]
pub struct FrameDecoder {
    buffer: Vec<u8>,
    /// Bytes of `buffer` already handed out as frames.
    consumed: usize,
    max_frame_bytes: usize,
    failed: Option<FrameError>,
}

impl Default for FrameDecoder {
    fn default() -> FrameDecoder {
        FrameDecoder::new(16 << 20)
    }
}

impl FrameDecoder {
    pub fn new(max_frame_bytes: usize) -> FrameDecoder {
        FrameDecoder {
            buffer: Vec::new(),
            consumed: 0,
            max_frame_bytes,
            failed: None,
        }
    }

    /// Adds bytes read from the transport.
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.failed.is_some() {
            return;
        }
        if self.consumed > 0 && (self.consumed == self.buffer.len() || self.consumed >= self.buffer.len() / 2) {
            self.buffer.drain(..self.consumed);
            self.consumed = 0;
        }
        self.buffer.extend_from_slice(bytes);
    }

    /// Bytes fed but not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.buffer.len() - self.consumed
    }

    /// The next complete frame's payload, `None` if more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<&[u8]>, FrameError> {
        if let Some(error) = &self.failed {
            return Err(error.clone());
        }
        let pending = self.buffer.get(self.consumed..).unwrap_or_default();
        let (claimed, prefix_len) = match read_varint_prefix(pending) {
            Ok(PartialVarint::Complete(claimed, prefix_len)) => (claimed, prefix_len),
            Ok(PartialVarint::Incomplete) => return Ok(None),
            Err(MarshalError::BadVarint) | Err(_) => return Err(self.fail(FrameError::BadPrefix)),
        };
        if claimed > self.max_frame_bytes as u64 {
            return Err(self.fail(FrameError::TooLarge {
                claimed,
                limit: self.max_frame_bytes,
            }));
        }
        let Some(end) = usize::try_from(claimed)
            .ok()
            .and_then(|claimed| claimed.checked_add(prefix_len))
        else {
            return Err(self.fail(FrameError::TooLarge {
                claimed,
                limit: self.max_frame_bytes,
            }));
        };
        if pending.len() < end {
            return Ok(None);
        }
        let start = self.consumed + prefix_len;
        self.consumed += end;
        Ok(self.buffer.get(start..self.consumed))
    }

    fn fail(&mut self, error: FrameError) -> FrameError {
        self.failed = Some(error.clone());
        self.buffer = Vec::new();
        self.consumed = 0;
        error
    }
}
