//! Session streams that can move to another connection without losing,
//! repeating or reordering a byte: how a CapTP session started over a
//! relay continues over the direct connection a hole punch made, with its
//! calls in flight and its references intact.
//!
//! ## Wire
//!
//! The opener of a `/capstan/captp/2.0.0` stream first writes a random
//! 16-byte [`SessionToken`]. After it, each direction is a sequence of
//! chunks: an unsigned-varint length, then that many bytes of the
//! session's own byte stream. A chunk of length zero is the move marker:
//! "the rest of my bytes follow on the stream that carries this token".
//!
//! To move, the opener opens a `/capstan/captp-move/1.0.0` stream (on the
//! new connection) and writes the token on it. Each side, once it holds
//! the new stream, writes the marker on the old one and from then on
//! writes only on the new; each side reads the old stream up to the
//! other's marker, then reads the new. The acceptor finds the session by
//! the token and the authenticated peer together, so only the node that
//! opened a session can move it.
//!
//! ## Who writes the marker
//!
//! The session's writer task polls [`StreamWriter`] only when it has
//! bytes to send, and an idle session may have none for a long time, so
//! the network thread writes the marker itself
//! ([`finish_move`]): both poll the writer's state under one lock, and
//! each wakes the other's task after its turn, so neither loses a wake-up.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll, Waker, ready};
use std::time::Duration;

use capstan_protocol::marshal::wire::{PartialVarint, put_varint, read_varint_prefix};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Either half of some stream a session's bytes travel on: a libp2p
/// stream's, or in tests an in-memory pipe's.
type Reading = Box<dyn AsyncRead + Send + Unpin>;
type Writing = Box<dyn AsyncWrite + Send + Unpin>;

/// Bytes of a [`SessionToken`].
pub const SESSION_TOKEN_BYTES: usize = 16;

/// What names a session stream to its peer when the stream moves.
pub type SessionToken = [u8; SESSION_TOKEN_BYTES];

/// The largest chunk a writer makes and a reader accepts.
const MAX_CHUNK: usize = 1 << 20;

/// Bytes a reader takes from its stream at a time.
const READ_BUFFER: usize = 16 * 1024;

/// How often [`finish_move`] looks again when the stream gave it no
/// wake-up of its own (the session's writer may have taken it).
const MOVE_RETRY: Duration = Duration::from_millis(50);

/// A random token for a new session stream.
pub(crate) fn new_token() -> io::Result<SessionToken> {
    let mut token = [0u8; SESSION_TOKEN_BYTES];
    getrandom::getrandom(&mut token).map_err(|error| io::Error::other(error.to_string()))?;
    Ok(token)
}

/// Makes the halves of a session stream from a raw stream whose token has
/// been written or read already.
pub(crate) fn movable(
    reader: impl AsyncRead + Send + Unpin + 'static,
    writer: impl AsyncWrite + Send + Unpin + 'static,
    token: SessionToken,
) -> (StreamReader, StreamWriter, Mover) {
    let (reader, writer): (Reading, Writing) = (Box::new(reader), Box::new(writer));
    let reader_core = Arc::new(Mutex::new(ReaderCore {
        offered: None,
        waker: None,
    }));
    let writer_core = Arc::new(Mutex::new(WriterCore {
        current: writer,
        pending: Vec::new(),
        written: 0,
        moving_to: None,
        offered: None,
        writer_waker: None,
    }));
    let mover = Mover {
        reader: Arc::clone(&reader_core),
        writer: Arc::clone(&writer_core),
        token,
    };
    let reader = StreamReader {
        current: reader,
        core: reader_core,
        input: vec![0; READ_BUFFER].into_boxed_slice(),
        start: 0,
        end: 0,
        state: ReadState::Header,
    };
    (reader, StreamWriter { core: writer_core }, mover)
}

/// Why a stream could not be offered to a session.
#[derive(Debug, thiserror::Error)]
pub(crate) enum MoveError {
    #[error("the session is already moving")]
    Busy,
    #[error("the session has ended")]
    Gone,
}

/// The handle that moves a session stream: the network thread keeps it
/// (weakly) to offer the session a new stream.
#[derive(Clone)]
pub(crate) struct Mover {
    reader: Arc<Mutex<ReaderCore>>,
    writer: Arc<Mutex<WriterCore>>,
    token: SessionToken,
}

impl Mover {
    pub(crate) fn downgrade(&self) -> WeakMover {
        WeakMover {
            reader: Arc::downgrade(&self.reader),
            writer: Arc::downgrade(&self.writer),
            token: self.token,
        }
    }

    /// The token the session's stream was opened with.
    pub(crate) fn token(&self) -> SessionToken {
        self.token
    }

    /// Gives the session the halves of the stream it continues on.
    pub(crate) fn offer(
        &self,
        reader: impl AsyncRead + Send + Unpin + 'static,
        writer: impl AsyncWrite + Send + Unpin + 'static,
    ) -> Result<(), MoveError> {
        let mut reader_core = lock(&self.reader);
        let mut writer_core = lock(&self.writer);
        if reader_core.offered.is_some() || writer_core.offered.is_some() || writer_core.moving_to.is_some() {
            return Err(MoveError::Busy);
        }
        reader_core.offered = Some(Box::new(reader));
        writer_core.offered = Some(Box::new(writer));
        if let Some(waker) = reader_core.waker.take() {
            waker.wake();
        }
        if let Some(waker) = writer_core.writer_waker.take() {
            waker.wake();
        }
        Ok(())
    }
}

/// A [`Mover`] that does not keep the session's stream alive.
#[derive(Clone)]
pub(crate) struct WeakMover {
    reader: Weak<Mutex<ReaderCore>>,
    writer: Weak<Mutex<WriterCore>>,
    token: SessionToken,
}

impl WeakMover {
    /// The mover, if the session still has its stream.
    pub(crate) fn upgrade(&self) -> Result<Mover, MoveError> {
        match (self.reader.upgrade(), self.writer.upgrade()) {
            (Some(reader), Some(writer)) => Ok(Mover {
                reader,
                writer,
                token: self.token,
            }),
            _ => Err(MoveError::Gone),
        }
    }

    pub(crate) fn is_gone(&self) -> bool {
        self.reader.strong_count() == 0 || self.writer.strong_count() == 0
    }
}

/// Writes the marker and switches the writer to the offered stream, on
/// the network thread, in case the session's writer has nothing to send.
pub(crate) async fn finish_move(writer: Weak<Mutex<WriterCore>>) {
    loop {
        let Some(core) = writer.upgrade() else { return };
        let step = std::future::poll_fn(|context| {
            let mut core = lock(&core);
            let progress = core.poll_progress(context);
            if let Some(waker) = core.writer_waker.take() {
                waker.wake();
            }
            Poll::Ready(progress.map(|result| result.map(|()| core.is_settled())))
        })
        .await;
        drop(core);
        match step {
            Poll::Ready(Ok(true)) => return,
            Poll::Ready(Err(error)) => {
                tracing::info!(%error, "moving a session stream failed");
                return;
            }
            Poll::Ready(Ok(false)) | Poll::Pending => tokio::time::sleep(MOVE_RETRY).await,
        }
    }
}

impl Mover {
    /// The writer's state, for [`finish_move`].
    pub(crate) fn writer_state(&self) -> Weak<Mutex<WriterCore>> {
        Arc::downgrade(&self.writer)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The reading half of a session stream (see the module docs): the
/// session's bytes, whichever stream they arrive on.
pub struct StreamReader {
    current: Reading,
    core: Arc<Mutex<ReaderCore>>,
    input: Box<[u8]>,
    /// `input[start..end]` is read from the stream and not yet parsed.
    start: usize,
    end: usize,
    state: ReadState,
}

struct ReaderCore {
    /// The stream to read once the peer's marker has come.
    offered: Option<Reading>,
    waker: Option<Waker>,
}

enum ReadState {
    /// At a chunk's length (`input[start..end]` may hold part of it).
    Header,
    /// Inside a chunk, with this many bytes of it left.
    Body { remaining: usize },
    /// After the peer's marker: waiting for the stream it moved to.
    Moved,
}

impl StreamReader {
    fn chunk_error(why: &str) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, format!("bad session stream: {why}"))
    }
}

impl AsyncRead for StreamReader {
    fn poll_read(self: Pin<&mut Self>, context: &mut Context<'_>, buffer: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            match this.state {
                ReadState::Body { remaining } if this.start < this.end => {
                    let count = remaining.min(this.end - this.start).min(buffer.remaining());
                    buffer.put_slice(&this.input[this.start..this.start + count]);
                    this.start += count;
                    this.state = if remaining == count {
                        ReadState::Header
                    } else {
                        ReadState::Body {
                            remaining: remaining - count,
                        }
                    };
                    return Poll::Ready(Ok(()));
                }
                ReadState::Header if this.start < this.end => {
                    match read_varint_prefix(&this.input[this.start..this.end]) {
                        Ok(PartialVarint::Complete(0, used)) => {
                            this.start += used;
                            if this.start < this.end {
                                return Poll::Ready(Err(Self::chunk_error("bytes after the move marker")));
                            }
                            this.state = ReadState::Moved;
                        }
                        Ok(PartialVarint::Complete(length, used)) => {
                            let length = usize::try_from(length).unwrap_or(usize::MAX);
                            if length > MAX_CHUNK {
                                return Poll::Ready(Err(Self::chunk_error("chunk too large")));
                            }
                            this.start += used;
                            this.state = ReadState::Body { remaining: length };
                        }
                        Ok(PartialVarint::Incomplete) => {
                            // Keep the partial length and read more after it.
                            this.input.copy_within(this.start..this.end, 0);
                            this.end -= this.start;
                            this.start = 0;
                            let end = this.end;
                            let mut more = ReadBuf::new(&mut this.input[end..]);
                            ready!(Pin::new(&mut this.current).poll_read(context, &mut more))?;
                            let count = more.filled().len();
                            if count == 0 {
                                return Poll::Ready(Err(Self::chunk_error("the stream ended inside a chunk length")));
                            }
                            this.end += count;
                        }
                        Err(_) => return Poll::Ready(Err(Self::chunk_error("malformed chunk length"))),
                    }
                }
                ReadState::Moved => {
                    let mut core = lock(&this.core);
                    match core.offered.take() {
                        Some(next) => {
                            this.current = next;
                            this.state = ReadState::Header;
                            this.start = 0;
                            this.end = 0;
                        }
                        None => {
                            core.waker = Some(context.waker().clone());
                            return Poll::Pending;
                        }
                    }
                }
                ReadState::Header | ReadState::Body { .. } => {
                    this.start = 0;
                    this.end = 0;
                    let mut more = ReadBuf::new(&mut this.input);
                    ready!(Pin::new(&mut this.current).poll_read(context, &mut more))?;
                    let count = more.filled().len();
                    if count == 0 {
                        return match this.state {
                            // The end of the session's stream.
                            ReadState::Header => Poll::Ready(Ok(())),
                            _ => Poll::Ready(Err(Self::chunk_error("the stream ended inside a chunk"))),
                        };
                    }
                    this.end = count;
                }
            }
        }
    }
}

/// The writing half of a session stream (see the module docs).
pub struct StreamWriter {
    core: Arc<Mutex<WriterCore>>,
}

pub(crate) struct WriterCore {
    current: Writing,
    /// Chunks not yet taken by `current`, from `written` on.
    pending: Vec<u8>,
    written: usize,
    /// Where to go once `pending` (ending with the marker) is written.
    moving_to: Option<Writing>,
    /// A stream offered by the mover and not yet switched to.
    offered: Option<Writing>,
    /// The session's writer task, woken when another task polled the
    /// stream in its place.
    writer_waker: Option<Waker>,
}

impl WriterCore {
    /// Writes what is pending and carries out an offered move.
    fn poll_progress(&mut self, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            while self.written < self.pending.len() {
                let count = ready!(Pin::new(&mut self.current).poll_write(context, &self.pending[self.written..]))?;
                if count == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                self.written += count;
            }
            self.pending.clear();
            self.written = 0;
            if let Some(next) = self.moving_to.take() {
                if Pin::new(&mut self.current).poll_flush(context)?.is_pending() {
                    self.moving_to = Some(next);
                    return Poll::Pending;
                }
                // The old stream ends once its reading half goes too.
                self.current = next;
                continue;
            }
            if let Some(next) = self.offered.take() {
                put_varint(&mut self.pending, 0);
                self.moving_to = Some(next);
                continue;
            }
            return Poll::Ready(Ok(()));
        }
    }

    /// No move waiting or under way.
    fn is_settled(&self) -> bool {
        self.offered.is_none() && self.moving_to.is_none() && self.pending.is_empty()
    }
}

impl StreamWriter {
    fn poll_with<T>(
        &self,
        context: &mut Context<'_>,
        then: impl FnOnce(&mut WriterCore, &mut Context<'_>) -> Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        let mut core = lock(&self.core);
        let outcome = match core.poll_progress(context) {
            Poll::Ready(Ok(())) => then(&mut core, context),
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            Poll::Pending => Poll::Pending,
        };
        if outcome.is_pending() {
            core.writer_waker = Some(context.waker().clone());
        }
        outcome
    }
}

impl AsyncWrite for StreamWriter {
    fn poll_write(self: Pin<&mut Self>, context: &mut Context<'_>, buffer: &[u8]) -> Poll<io::Result<usize>> {
        self.poll_with(context, |core, context| {
            let count = buffer.len().min(MAX_CHUNK);
            if count > 0 {
                put_varint(&mut core.pending, count as u64);
                core.pending.extend_from_slice(&buffer[..count]);
                // Sent now if the stream takes it, as a raw stream's
                // write would be; the rest goes at the next write or flush
                // (and an error shows there too).
                let _ = core.poll_progress(context);
            }
            Poll::Ready(Ok(count))
        })
    }

    fn poll_flush(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_with(context, |core, context| Pin::new(&mut core.current).poll_flush(context))
    }

    fn poll_shutdown(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_with(context, |core, context| {
            Pin::new(&mut core.current).poll_shutdown(context)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};

    /// Two ends of a session stream over in-memory pipes, with the movers.
    fn pair() -> ((StreamReader, StreamWriter, Mover), (StreamReader, StreamWriter, Mover)) {
        // Room for all the test writes before the move, read later.
        let (a_to_b_write, a_to_b_read) = duplex(1 << 16);
        let (b_to_a_write, b_to_a_read) = duplex(1 << 16);
        (
            movable(b_to_a_read, a_to_b_write, [1; SESSION_TOKEN_BYTES]),
            movable(a_to_b_read, b_to_a_write, [1; SESSION_TOKEN_BYTES]),
        )
    }

    async fn read_exactly(reader: &mut StreamReader, count: usize) -> Vec<u8> {
        let mut bytes = vec![0; count];
        reader.read_exact(&mut bytes).await.unwrap();
        bytes
    }

    #[tokio::test]
    async fn bytes_written_before_during_and_after_a_move_arrive_once_in_order() {
        let ((mut a_reader, mut a_writer, a_mover), (mut b_reader, mut b_writer, b_mover)) = pair();
        let message: Vec<u8> = (0..=255u8).cycle().take(10_000).collect();
        let writing = tokio::spawn(async move {
            a_writer.write_all(&message[..5_000]).await.unwrap();
            a_writer.flush().await.unwrap();
            (a_writer, message)
        });
        assert_eq!(read_exactly(&mut b_reader, 100).await, (0..100u8).collect::<Vec<_>>());
        let (mut a_writer, message) = writing.await.unwrap();

        // The new stream: both sides get its halves; the rest goes on it.
        let (a_to_b_write, a_to_b_read) = duplex(64);
        let (b_to_a_write, b_to_a_read) = duplex(64);
        a_mover.offer(b_to_a_read, a_to_b_write).unwrap();
        b_mover.offer(a_to_b_read, b_to_a_write).unwrap();
        assert!(matches!(a_mover.offer(duplex(1).0, duplex(1).0), Err(MoveError::Busy)));
        let tail = message[5_000..].to_vec();
        let writing = tokio::spawn(async move {
            a_writer.write_all(&tail).await.unwrap();
            a_writer.flush().await.unwrap();
            a_writer
        });
        assert_eq!(read_exactly(&mut b_reader, 9_900).await, message[100..]);
        drop(writing.await.unwrap());

        // And back, from the side that only ever moves on the network
        // thread's turn: its marker goes out without a write of its own.
        finish_move(b_mover.writer_state()).await;
        b_writer.write_all(b"pong").await.unwrap();
        b_writer.flush().await.unwrap();
        assert_eq!(read_exactly(&mut a_reader, 4).await, b"pong");
    }

    async fn read_raw(bytes: &[u8]) -> std::io::Result<Vec<u8>> {
        let (mut feed, pipe) = duplex(1 << 16);
        feed.write_all(bytes).await.unwrap();
        drop(feed);
        let (mut reader, _writer, _mover) = movable(pipe, tokio::io::sink(), [0; SESSION_TOKEN_BYTES]);
        let mut out = Vec::new();
        reader.read_to_end(&mut out).await.map(|_| out)
    }

    #[tokio::test]
    async fn hostile_chunks_end_the_stream_with_a_reason() {
        assert_eq!(read_raw(&[3, b'a', b'b', b'c']).await.unwrap(), b"abc");
        let mut too_large = Vec::new();
        put_varint(&mut too_large, (MAX_CHUNK + 1) as u64);
        for (bytes, why) in [
            (too_large.as_slice(), "chunk too large"),
            (
                &[0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01][..],
                "malformed",
            ),
            (&[0, 1, b'x'][..], "after the move marker"),
            (&[5, b'a'][..], "inside a chunk"),
            (&[0x80][..], "inside a chunk length"),
        ] {
            let error = read_raw(bytes).await.unwrap_err();
            assert_eq!(error.kind(), std::io::ErrorKind::InvalidData, "{bytes:?}");
            assert!(error.to_string().contains(why), "{bytes:?}: {error}");
        }
    }
}
