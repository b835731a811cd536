//! Makes a yamux connection's streams end when the connection ends from our
//! side. yamux's graceful close (used for a disconnect, a failed ping, or
//! shutting down) leaves its own streams' state open and does not wake
//! them, so a read parked on one would wait forever and the CapTP session
//! on it would never learn. This wrapper marks the streams ended once the
//! muxer has closed, failed, or been dropped, and wakes their readers;
//! their reads then fail (after any data already received).

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, ready};

use futures::task::AtomicWaker;
use futures::{AsyncRead, AsyncWrite};
use libp2p::core::muxing::{StreamMuxer, StreamMuxerEvent};

/// A muxer whose streams end with it.
pub(crate) struct EndingMuxer<M> {
    inner: M,
    end: Arc<ConnectionEnd>,
}

impl<M> EndingMuxer<M> {
    pub(crate) fn new(inner: M) -> EndingMuxer<M> {
        EndingMuxer {
            inner,
            end: Arc::default(),
        }
    }

    fn wrap<S>(&self, stream: S) -> EndingStream<S> {
        EndingStream {
            inner: stream,
            waker: self.end.register(),
            end: self.end.clone(),
        }
    }
}

impl<M> Drop for EndingMuxer<M> {
    fn drop(&mut self) {
        self.end.end();
    }
}

impl<M> StreamMuxer for EndingMuxer<M>
where
    M: StreamMuxer + Unpin,
    M::Substream: Unpin,
{
    type Substream = EndingStream<M::Substream>;
    type Error = M::Error;

    fn poll_inbound(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Result<Self::Substream, Self::Error>> {
        let this = self.get_mut();
        let stream = ready!(Pin::new(&mut this.inner).poll_inbound(context))?;
        Poll::Ready(Ok(this.wrap(stream)))
    }

    fn poll_outbound(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Result<Self::Substream, Self::Error>> {
        let this = self.get_mut();
        let stream = ready!(Pin::new(&mut this.inner).poll_outbound(context))?;
        Poll::Ready(Ok(this.wrap(stream)))
    }

    fn poll_close(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        let this = self.get_mut();
        // A close from our side ends the streams at once: a graceful close
        // over a dead link can take many seconds, and no caller should
        // wait for it to learn the peer is gone.
        this.end.end();
        Pin::new(&mut this.inner).poll_close(context)
    }

    fn poll(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Result<StreamMuxerEvent, Self::Error>> {
        let this = self.get_mut();
        let event = Pin::new(&mut this.inner).poll(context);
        if let Poll::Ready(Err(_)) = &event {
            this.end.end();
        }
        event
    }
}

/// Whether a connection has ended, and the readers to wake when it does.
#[derive(Default)]
struct ConnectionEnd {
    ended: AtomicBool,
    wakers: Mutex<Wakers>,
}

#[derive(Default)]
struct Wakers {
    streams: Vec<Weak<AtomicWaker>>,
    /// Dropped streams' entries are pruned when the list reaches this.
    prune_at: usize,
}

impl ConnectionEnd {
    fn register(&self) -> Arc<AtomicWaker> {
        let waker = Arc::new(AtomicWaker::new());
        let mut wakers = self.wakers.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if wakers.streams.len() >= wakers.prune_at {
            wakers.streams.retain(|stream| stream.strong_count() > 0);
            wakers.prune_at = (wakers.streams.len() * 2).max(16);
        }
        wakers.streams.push(Arc::downgrade(&waker));
        waker
    }

    fn end(&self) {
        if self.ended.swap(true, Ordering::SeqCst) {
            return;
        }
        let streams = {
            let mut wakers = self.wakers.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            std::mem::take(&mut wakers.streams)
        };
        for stream in streams {
            if let Some(waker) = stream.upgrade() {
                waker.wake();
            }
        }
    }

    fn is_ended(&self) -> bool {
        self.ended.load(Ordering::SeqCst)
    }
}

/// A stream of an [`EndingMuxer`].
pub(crate) struct EndingStream<S> {
    inner: S,
    waker: Arc<AtomicWaker>,
    end: Arc<ConnectionEnd>,
}

impl<S> EndingStream<S> {
    /// Called when the inner stream is pending: fails if the connection
    /// has ended (nothing more can arrive), else waits for either.
    fn pending_or_ended<T>(&self, context: &mut Context<'_>) -> Poll<io::Result<T>> {
        self.waker.register(context.waker());
        if self.end.is_ended() {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "the connection to the peer was closed",
            )));
        }
        Poll::Pending
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for EndingStream<S> {
    fn poll_read(mut self: Pin<&mut Self>, context: &mut Context<'_>, buffer: &mut [u8]) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_read(context, buffer) {
            Poll::Pending => self.pending_or_ended(context),
            ready => ready,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for EndingStream<S> {
    fn poll_write(mut self: Pin<&mut Self>, context: &mut Context<'_>, buffer: &[u8]) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write(context, buffer) {
            Poll::Pending => self.pending_or_ended(context),
            ready => ready,
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.inner).poll_flush(context) {
            Poll::Pending => self.pending_or_ended(context),
            ready => ready,
        }
    }

    fn poll_close(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.inner).poll_close(context) {
            Poll::Pending => self.pending_or_ended(context),
            ready => ready,
        }
    }
}
