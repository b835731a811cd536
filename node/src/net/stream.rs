//! Application streams (`/capstan/captp/1.0.0`) as tokio byte streams, and
//! the hand-off of inbound ones with the per-peer cap on how many may be
//! open at once.
//!
//! A libp2p stream is driven by its connection's task on the network
//! thread; reading or writing it only touches shared buffers and wakers, so
//! the halves work from any runtime (the vat's current-thread one included).

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use capstan_store::NodeId;
use futures::StreamExt;
use libp2p::{PeerId, Stream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf, ReadHalf, WriteHalf};
use tokio::sync::mpsc;
use tokio_util::compat::{Compat, FuturesAsyncReadCompatExt};

use super::identity::node_id_of;

/// A libp2p stream, plus the inbound slot it holds (if it is inbound).
struct PeerStream {
    stream: Stream,
    _slot: Option<InboundSlot>,
}

impl futures::AsyncRead for PeerStream {
    fn poll_read(mut self: Pin<&mut Self>, context: &mut Context<'_>, buffer: &mut [u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_read(context, buffer)
    }
}

impl futures::AsyncWrite for PeerStream {
    fn poll_write(mut self: Pin<&mut Self>, context: &mut Context<'_>, buffer: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(context, buffer)
    }

    fn poll_flush(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(context)
    }

    fn poll_close(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_close(context)
    }
}

/// The reading half of a stream to a peer. Reads return end-of-file when
/// the peer closes its side, and end or fail when the connection drops.
pub struct StreamReader {
    half: ReadHalf<Compat<PeerStream>>,
}

/// The writing half of a stream to a peer; shutting it down closes our
/// side of the stream (the peer reads end-of-file).
pub struct StreamWriter {
    half: WriteHalf<Compat<PeerStream>>,
}

impl AsyncRead for StreamReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.half).poll_read(context, buffer)
    }
}

impl AsyncWrite for StreamWriter {
    fn poll_write(mut self: Pin<&mut Self>, context: &mut Context<'_>, buffer: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.half).poll_write(context, buffer)
    }

    fn poll_flush(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.half).poll_flush(context)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.half).poll_shutdown(context)
    }
}

/// Splits a stream into the halves `runtime::connect` takes.
pub(crate) fn split(stream: Stream, slot: Option<InboundSlot>) -> (StreamReader, StreamWriter) {
    let (read, write) = tokio::io::split(PeerStream { stream, _slot: slot }.compat());
    (StreamReader { half: read }, StreamWriter { half: write })
}

/// A stream a peer opened to us; `remote` is authenticated by the
/// connection's handshake (Noise or QUIC's TLS).
pub struct InboundStream {
    pub remote: NodeId,
    pub reader: StreamReader,
    pub writer: StreamWriter,
}

/// The inbound streams peers open to this node, in arrival order. Ends when
/// the network stops.
pub struct InboundStreams {
    receiver: mpsc::UnboundedReceiver<InboundStream>,
}

impl InboundStreams {
    /// The next inbound stream, or `None` once the network has stopped.
    pub async fn next(&mut self) -> Option<InboundStream> {
        self.receiver.recv().await
    }

    /// Polls for the next inbound stream.
    pub fn poll_next(&mut self, context: &mut Context<'_>) -> Poll<Option<InboundStream>> {
        self.receiver.poll_recv(context)
    }
}

/// How many inbound streams each peer has open.
#[derive(Clone, Default)]
struct OpenCounts(Arc<Mutex<HashMap<PeerId, usize>>>);

impl OpenCounts {
    /// Takes a slot for `peer` unless it already holds `cap` of them.
    fn take(&self, peer: PeerId, cap: usize) -> Option<InboundSlot> {
        let mut counts = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let count = counts.entry(peer).or_insert(0);
        if *count >= cap {
            return None;
        }
        *count += 1;
        Some(InboundSlot {
            counts: self.clone(),
            peer,
        })
    }
}

/// One of a peer's inbound stream slots, given back when the stream (both
/// halves) is dropped.
pub(crate) struct InboundSlot {
    counts: OpenCounts,
    peer: PeerId,
}

impl Drop for InboundSlot {
    fn drop(&mut self) {
        let mut counts = self.counts.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(count) = counts.get_mut(&self.peer) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.remove(&self.peer);
            }
        }
    }
}

/// The receiving end for [`accept_loop`] to fill.
pub(crate) fn inbound_channel() -> (mpsc::UnboundedSender<InboundStream>, InboundStreams) {
    let (sender, receiver) = mpsc::unbounded_channel();
    (sender, InboundStreams { receiver })
}

/// Hands inbound streams off, and nothing else: `libp2p-stream` drops a
/// stream that arrives while this loop is not waiting for one. Streams over
/// the per-peer cap are dropped here: yamux resets a stream dropped open;
/// QUIC finishes it and stops the peer's sending. Either way the opener's
/// reads end at once and its writes fail.
pub(crate) async fn accept_loop(
    mut incoming: libp2p_stream::IncomingStreams,
    cap: usize,
    deliver: mpsc::UnboundedSender<InboundStream>,
) {
    let counts = OpenCounts::default();
    while let Some((peer, stream)) = incoming.next().await {
        let remote = match node_id_of(&peer) {
            Ok(remote) => remote,
            Err(error) => {
                // The gate refuses such connections; this is a second lock.
                tracing::warn!(%peer, %error, "resetting an inbound stream from a peer that is not a node");
                continue;
            }
        };
        let Some(slot) = counts.take(peer, cap) else {
            tracing::warn!(
                peer = %remote,
                cap,
                "resetting an inbound stream: the peer already has the most concurrent inbound streams allowed"
            );
            continue;
        };
        let (reader, writer) = split(stream, Some(slot));
        if deliver.send(InboundStream { remote, reader, writer }).is_err() {
            tracing::debug!(peer = %remote, "nobody takes inbound streams any more; resetting it");
        }
    }
}
