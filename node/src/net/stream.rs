//! Application streams (`/capstan/captp/2.0.0`) as tokio byte streams, and
//! the hand-off of inbound ones with the per-peer cap on how many may be
//! open at once: each inbound stream's session token is read (bounded in
//! time) before it is handed on, and inbound move streams
//! (`/capstan/captp-move/1.0.0`) are given to the session whose token they
//! carry (see [`super::movable`]).
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
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf, ReadHalf, WriteHalf};
use tokio::sync::mpsc;
use tokio_util::compat::{Compat, FuturesAsyncReadCompatExt};

use super::identity::node_id_of;
use super::movable::{
    MoveError, Mover, SESSION_TOKEN_BYTES, SessionToken, StreamReader, StreamWriter, WeakMover, finish_move, movable,
    new_token,
};

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

/// The reading half of a libp2p stream. Reads return end-of-file when the
/// peer closes its side, and end or fail when the connection drops.
pub(crate) struct RawReader {
    half: ReadHalf<Compat<PeerStream>>,
}

/// The writing half of a libp2p stream; shutting it down closes our side
/// of the stream (the peer reads end-of-file).
pub(crate) struct RawWriter {
    half: WriteHalf<Compat<PeerStream>>,
}

impl AsyncRead for RawReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.half).poll_read(context, buffer)
    }
}

impl AsyncWrite for RawWriter {
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

/// Splits a stream into its halves.
pub(crate) fn split(stream: Stream, slot: Option<InboundSlot>) -> (RawReader, RawWriter) {
    let (read, write) = tokio::io::split(PeerStream { stream, _slot: slot }.compat());
    (RawReader { half: read }, RawWriter { half: write })
}

/// Opens a session stream on a fresh libp2p stream we opened: writes a
/// new token, and keeps the mover for a later move.
pub(crate) async fn open_session_stream(
    stream: Stream,
) -> io::Result<(StreamReader, StreamWriter, Mover, SessionToken)> {
    let (reader, mut writer) = split(stream, None);
    let token = new_token()?;
    writer.write_all(&token).await?;
    let (reader, writer, mover) = movable(reader, writer, token);
    Ok((reader, writer, mover, token))
}

/// The sessions peers opened to us, by peer and token, for their moves.
pub(crate) type MoveRegistry = Arc<Mutex<HashMap<(PeerId, SessionToken), WeakMover>>>;

/// How long a peer has to send a stream's token.
const TOKEN_WAIT: Duration = Duration::from_secs(10);

async fn read_token(reader: &mut RawReader) -> Result<SessionToken, String> {
    let mut token = [0u8; SESSION_TOKEN_BYTES];
    match tokio::time::timeout(TOKEN_WAIT, reader.read_exact(&mut token)).await {
        Ok(Ok(_)) => Ok(token),
        Ok(Err(error)) => Err(format!("the stream ended before its token: {error}")),
        Err(_) => Err(format!("no token within {} s", TOKEN_WAIT.as_secs())),
    }
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
pub(crate) struct OpenCounts(Arc<Mutex<HashMap<PeerId, usize>>>);

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
    movers: MoveRegistry,
    counts: OpenCounts,
) {
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
        let (mut reader, writer) = split(stream, Some(slot));
        let deliver = deliver.clone();
        let movers = Arc::clone(&movers);
        // The token is read beside this loop, which must keep accepting.
        tokio::spawn(async move {
            let token = match read_token(&mut reader).await {
                Ok(token) => token,
                Err(why) => {
                    tracing::info!(peer = %remote, %why, "dropping an inbound stream");
                    return;
                }
            };
            let (reader, writer, mover) = movable(reader, writer, token);
            {
                let mut movers = movers.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                movers.retain(|_, mover| !mover.is_gone());
                movers.insert((peer, token), mover.downgrade());
            }
            if deliver.send(InboundStream { remote, reader, writer }).is_err() {
                tracing::debug!(peer = %remote, "nobody takes inbound streams any more; resetting it");
            }
        });
    }
}

/// Gives each inbound move stream to the session it names (by its token
/// and its authenticated peer); one naming no session is dropped.
pub(crate) async fn accept_moves(
    mut incoming: libp2p_stream::IncomingStreams,
    cap: usize,
    movers: MoveRegistry,
    counts: OpenCounts,
) {
    while let Some((peer, stream)) = incoming.next().await {
        let Some(slot) = counts.take(peer, cap) else {
            tracing::warn!(%peer, cap, "resetting a move stream: the peer has the most inbound streams allowed");
            continue;
        };
        let (mut reader, writer) = split(stream, Some(slot));
        let movers = Arc::clone(&movers);
        tokio::spawn(async move {
            let token = match read_token(&mut reader).await {
                Ok(token) => token,
                Err(why) => {
                    tracing::info!(%peer, %why, "dropping a move stream");
                    return;
                }
            };
            let found = movers
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .get(&(peer, token))
                .cloned();
            let offered = found
                .ok_or(MoveError::Gone)
                .and_then(|mover| mover.upgrade())
                .and_then(|mover| mover.offer(reader, writer).map(|()| mover));
            match offered {
                Ok(mover) => {
                    tracing::info!(%peer, "a peer moved a session stream to another connection");
                    finish_move(mover.writer_state()).await;
                }
                Err(error) => tracing::info!(%peer, %error, "dropping a move stream"),
            }
        });
    }
}
