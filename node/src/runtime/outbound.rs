//! The write side of a connection: the bytes its session produced, on
//! their way to the transport.
//!
//! Bytes are written from the turn that hands them over, while the
//! transport takes them, instead of by a task the vat polls later: output
//! leaves one task wake-up sooner, and a long turn (a burst of thousands of
//! sends) can hand its output over while it still runs, so the peer starts
//! on it meanwhile. What the transport does not take at once waits here,
//! and the writer task ([`Outbound::poll_drive`]) writes it when the
//! transport wakes that task.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use tokio::io::AsyncWrite;

/// How the writer task ended.
pub(crate) enum Finished {
    /// Everything was written and the transport shut down.
    Closed,
    /// The peer was cut off: what waited was dropped.
    CutOff,
    /// The transport failed.
    Failed(io::Error),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Open,
    /// Write what waits, then shut the transport down.
    Closing,
    /// Drop what waits and the transport.
    CutOff,
    /// The writer task finished: nothing more is written.
    Done,
}

pub(crate) struct Outbound {
    /// `None` once the writer task finished.
    writer: Option<Pin<Box<dyn AsyncWrite>>>,
    chunks: VecDeque<Vec<u8>>,
    /// Bytes of the front chunk already written.
    front_written: usize,
    /// Bytes waiting, over all chunks.
    queued: usize,
    unflushed: bool,
    /// The writer task's waker: the transport wakes that task when it
    /// takes more after refusing some.
    waker: Option<Waker>,
    failure: Option<io::Error>,
    state: State,
}

impl Outbound {
    pub fn new(writer: impl AsyncWrite + 'static) -> Outbound {
        Outbound {
            writer: Some(Box::pin(writer)),
            chunks: VecDeque::new(),
            front_written: 0,
            queued: 0,
            unflushed: false,
            waker: None,
            failure: None,
            state: State::Open,
        }
    }

    /// Bytes handed over and not yet written.
    pub fn queued(&self) -> usize {
        self.queued
    }

    /// Queues `bytes` and writes what the transport takes now. Ignored
    /// once the connection is closing.
    pub fn push(&mut self, bytes: Vec<u8>) {
        if self.state != State::Open || bytes.is_empty() {
            return;
        }
        self.queued += bytes.len();
        self.chunks.push_back(bytes);
        // Before the writer task first ran there is no waker to give the
        // transport; that first run writes what waits.
        let Some(waker) = self.waker.clone() else {
            return;
        };
        if let Poll::Ready(Err(error)) = self.poll_write_queued(&mut Context::from_waker(&waker)) {
            self.failure = Some(error);
            waker.wake();
        }
    }

    /// Writes what waits, then shuts the transport down.
    pub fn close(&mut self) {
        if self.state == State::Open {
            self.state = State::Closing;
            self.wake_writer();
        }
    }

    /// Drops what waits and the transport: the peer does not read.
    pub fn cut_off(&mut self) {
        if self.state == State::Done {
            return;
        }
        self.state = State::CutOff;
        self.chunks.clear();
        self.queued = 0;
        self.wake_writer();
    }

    fn wake_writer(&self) {
        if let Some(waker) = &self.waker {
            waker.wake_by_ref();
        }
    }

    /// What the writer task polls: writes what waits whenever the
    /// transport takes it, until the connection closes.
    pub fn poll_drive(&mut self, cx: &mut Context<'_>) -> Poll<Finished> {
        if !self.waker.as_ref().is_some_and(|waker| waker.will_wake(cx.waker())) {
            self.waker = Some(cx.waker().clone());
        }
        let finished = if self.state == State::CutOff {
            Finished::CutOff
        } else if let Some(error) = self.failure.take() {
            Finished::Failed(error)
        } else {
            match self.poll_write_queued(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(error)) => Finished::Failed(error),
                Poll::Ready(Ok(())) if self.state == State::Open => return Poll::Pending,
                Poll::Ready(Ok(())) => match self.writer.as_mut().map(|writer| writer.as_mut().poll_shutdown(cx)) {
                    Some(Poll::Pending) => return Poll::Pending,
                    _ => Finished::Closed,
                },
            }
        };
        self.state = State::Done;
        self.writer = None;
        self.chunks.clear();
        self.queued = 0;
        Poll::Ready(finished)
    }

    /// Writes the queued chunks and flushes the transport: ready when
    /// nothing waits, pending (with `cx` registered) when it is full.
    fn poll_write_queued(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some(writer) = self.writer.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        while let Some(front) = self.chunks.front() {
            match writer.as_mut().poll_write(cx, &front[self.front_written..]) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(written)) => {
                    self.front_written += written;
                    self.queued = self.queued.saturating_sub(written);
                    self.unflushed = true;
                    if self.front_written == front.len() {
                        self.chunks.pop_front();
                        self.front_written = 0;
                    }
                }
            }
        }
        if self.unflushed {
            match writer.as_mut().poll_flush(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(result) => result?,
            }
            self.unflushed = false;
        }
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail on the first surprise"
)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    use tokio::io::{AsyncRead, DuplexStream, ReadBuf};

    use super::*;

    /// The writer task's waker, counting its wake-ups.
    #[derive(Default)]
    struct WriterTask(AtomicUsize);

    impl Wake for WriterTask {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// What the reading end holds now, and whether it saw the end.
    fn read_now(reader: &mut DuplexStream) -> (Vec<u8>, bool) {
        let waker = Waker::from(Arc::new(WriterTask::default()));
        let mut cx = Context::from_waker(&waker);
        let mut bytes = Vec::new();
        loop {
            let mut buffer = [0u8; 64];
            let mut read = ReadBuf::new(&mut buffer);
            match Pin::new(&mut *reader).poll_read(&mut cx, &mut read) {
                Poll::Ready(Ok(())) if read.filled().is_empty() => return (bytes, true),
                Poll::Ready(Ok(())) => bytes.extend_from_slice(read.filled()),
                Poll::Ready(Err(error)) => panic!("read failed: {error}"),
                Poll::Pending => return (bytes, false),
            }
        }
    }

    #[test]
    fn bytes_are_written_when_handed_over_and_the_rest_when_the_transport_wakes_the_writer() {
        let (transport, mut peer) = tokio::io::duplex(8);
        let mut outbound = Outbound::new(transport);
        let task = Arc::new(WriterTask::default());
        let waker = Waker::from(Arc::clone(&task));
        let mut cx = Context::from_waker(&waker);

        // Before the writer task first ran, bytes wait for it.
        outbound.push(b"hi".to_vec());
        assert_eq!(read_now(&mut peer), (Vec::new(), false));
        assert!(outbound.poll_drive(&mut cx).is_pending());
        assert_eq!(read_now(&mut peer), (b"hi".to_vec(), false));

        // From then on, at once, with no run of the writer task between.
        outbound.push(b"hello".to_vec());
        assert_eq!(read_now(&mut peer), (b"hello".to_vec(), false));
        assert_eq!(outbound.queued(), 0);

        // What the transport refuses waits until it wakes the writer.
        outbound.push(b"0123456789abcdef".to_vec());
        assert_eq!(outbound.queued(), 8);
        let wakes_before = task.0.load(Ordering::SeqCst);
        assert_eq!(read_now(&mut peer), (b"01234567".to_vec(), false));
        assert!(
            task.0.load(Ordering::SeqCst) > wakes_before,
            "reading made room: the writer is woken"
        );
        assert!(outbound.poll_drive(&mut cx).is_pending());
        assert_eq!(outbound.queued(), 0);
        assert_eq!(read_now(&mut peer), (b"89abcdef".to_vec(), false));

        // Closing writes what waits, then shuts the transport down.
        outbound.push(b"bye".to_vec());
        outbound.close();
        outbound.push(b"ignored".to_vec());
        assert!(matches!(outbound.poll_drive(&mut cx), Poll::Ready(Finished::Closed)));
        assert_eq!(read_now(&mut peer), (b"bye".to_vec(), true));
    }

    #[test]
    fn cutting_off_drops_what_waits_and_the_transport() {
        let (transport, mut peer) = tokio::io::duplex(4);
        let mut outbound = Outbound::new(transport);
        let waker = Waker::from(Arc::new(WriterTask::default()));
        let mut cx = Context::from_waker(&waker);
        assert!(outbound.poll_drive(&mut cx).is_pending());
        outbound.push(b"abcdefgh".to_vec());
        assert_eq!(outbound.queued(), 4);
        outbound.cut_off();
        assert_eq!(outbound.queued(), 0);
        assert!(matches!(outbound.poll_drive(&mut cx), Poll::Ready(Finished::CutOff)));
        assert_eq!(read_now(&mut peer), (b"abcd".to_vec(), true));
    }

    #[test]
    fn a_failed_write_wakes_the_writer_to_report_it() {
        let (transport, peer) = tokio::io::duplex(16);
        let mut outbound = Outbound::new(transport);
        let task = Arc::new(WriterTask::default());
        let waker = Waker::from(Arc::clone(&task));
        let mut cx = Context::from_waker(&waker);
        assert!(outbound.poll_drive(&mut cx).is_pending());
        drop(peer);
        outbound.push(b"lost".to_vec());
        assert_eq!(task.0.load(Ordering::SeqCst), 1);
        assert!(matches!(outbound.poll_drive(&mut cx), Poll::Ready(Finished::Failed(_))));
    }
}
