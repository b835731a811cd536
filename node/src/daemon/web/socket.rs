//! A page's CapTP session: one WebSocket, one session of the node's own
//! engine, translated by an [`EndoBridge`] exactly as `run/captp0.sock`
//! is (`daemon::endo_socket`), with one JSON message per WebSocket text
//! message instead of netstrings. The session's bootstrap object is the
//! app's agent, so the page holds that agent's powers and nothing else.
//!
//! Bounds: a WebSocket message or frame is at most the session's
//! `max_frame_bytes`; binary messages, oversized messages and anything
//! the bridge refuses end the connection with a close frame saying why.

use capstan_protocol::Value;
use capstan_protocol::captp::Limits;
use capstan_protocol::captp::endo::{EndoBridge, NetstringDecoder, write_netstring};
use futures::{SinkExt, StreamExt};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

use crate::runtime::{SessionKind, SessionOptions, Vat, connect_with};

/// Bytes the in-memory pipe between the bridge and the engine buffers
/// each way.
const PIPE_BYTES: usize = 256 * 1024;

/// Size of each read from the pipe.
const READ_CHUNK: usize = 64 * 1024;

/// The longest close reason a WebSocket close frame carries, bytes.
const MAX_CLOSE_REASON: usize = 123;

/// The WebSocket settings for sessions bounded by `limits`.
pub fn websocket_config(limits: &Limits) -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(limits.max_frame_bytes))
        .max_frame_size(Some(limits.max_frame_bytes))
}

/// Serves one page's session over an upgraded connection until either
/// side ends it; returns why it ended.
pub async fn serve(vat: Vat, upgraded: Upgraded, powers: Value) -> String {
    let limits = Limits::default();
    let websocket =
        WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(websocket_config(&limits))).await;
    let (engine_end, bridge_end) = tokio::io::duplex(PIPE_BYTES);
    let (engine_reader, engine_writer) = tokio::io::split(engine_end);
    let options = SessionOptions::new(limits.clone()).with_kind(SessionKind::Client);
    let connection = connect_with(&vat, engine_reader, engine_writer, Some(powers), options);
    tracing::debug!(session = connection.id().0, "web app page connected");
    let reason = pump(EndoBridge::new(limits.clone()), limits, websocket, bridge_end).await;
    tracing::debug!(session = connection.id().0, %reason, "web app page gone");
    reason
}

/// A close reason cut to what a close frame carries, on a character
/// boundary.
fn close_reason(reason: &str) -> String {
    let mut end = reason.len().min(MAX_CLOSE_REASON);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason[..end].to_string()
}

async fn pump(
    mut bridge: EndoBridge,
    limits: Limits,
    mut websocket: WebSocketStream<TokioIo<Upgraded>>,
    pipe: tokio::io::DuplexStream,
) -> String {
    let (mut pipe_reader, mut pipe_writer) = tokio::io::split(pipe);
    let mut from_engine = vec![0u8; READ_CHUNK];
    // The bridge speaks netstrings: the page's messages are framed as
    // such on the way in, and its output split back into messages.
    let mut to_page = NetstringDecoder::new(limits.max_frame_bytes);
    let mut framed = Vec::new();
    let mut out = Vec::new();
    let (reason, code) = 'session: loop {
        tokio::select! {
            message = websocket.next() => match message {
                None => break ("the page closed the connection".to_string(), None),
                Some(Ok(Message::Text(text))) => {
                    framed.clear();
                    write_netstring(text.as_bytes(), &mut framed);
                    bridge.handle_peer_bytes(&framed);
                }
                Some(Ok(Message::Binary(_))) => {
                    break ("Endo CapTP protocol error: messages must be text".to_string(), Some(CloseCode::Unsupported));
                }
                Some(Ok(Message::Close(_))) => break ("the page closed the connection".to_string(), None),
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                Some(Err(error)) => break (format!("the WebSocket failed: {error}"), Some(CloseCode::Policy)),
            },
            read = pipe_reader.read(&mut from_engine) => match read {
                Ok(0) => break ("the session ended".to_string(), Some(CloseCode::Normal)),
                Ok(count) => bridge.handle_engine_bytes(&from_engine[..count]),
                Err(error) => break (format!("reading from the session failed: {error}"), Some(CloseCode::Error)),
            },
        }
        out.clear();
        bridge.poll_to_engine(&mut out);
        if !out.is_empty() && pipe_writer.write_all(&out).await.is_err() {
            break ("the session ended".to_string(), Some(CloseCode::Normal));
        }
        out.clear();
        bridge.poll_to_peer(&mut out);
        if let Err(reason) = send_messages(&mut websocket, &mut to_page, &out).await {
            break 'session (reason, None);
        }
        if let Some(reason) = bridge.close_reason() {
            break (reason.to_string(), Some(CloseCode::Policy));
        }
    };
    // A last CTP_DISCONNECT goes out before the close frame; the engine
    // sees its pipe close and ends the session.
    out.clear();
    bridge.poll_to_peer(&mut out);
    let _ = send_messages(&mut websocket, &mut to_page, &out).await;
    if let Some(code) = code {
        let frame = CloseFrame {
            code,
            reason: close_reason(&reason).into(),
        };
        let _ = websocket.close(Some(frame)).await;
    }
    out.clear();
    bridge.poll_to_engine(&mut out);
    let _ = pipe_writer.write_all(&out).await;
    let _ = pipe_writer.shutdown().await;
    reason
}

/// Sends each whole netstring of `bytes` as one text message.
async fn send_messages(
    websocket: &mut WebSocketStream<TokioIo<Upgraded>>,
    frames: &mut NetstringDecoder,
    bytes: &[u8],
) -> Result<(), String> {
    if bytes.is_empty() {
        return Ok(());
    }
    frames.feed(bytes);
    loop {
        let text = match frames.next_frame() {
            Ok(Some(frame)) => String::from_utf8(frame.to_vec()).map_err(|_| "the session wrote non-UTF-8")?,
            Ok(None) => break,
            Err(error) => return Err(format!("the session's output is malformed: {error}")),
        };
        websocket
            .feed(Message::text(text))
            .await
            .map_err(|error| format!("writing to the page failed: {error}"))?;
    }
    websocket
        .flush()
        .await
        .map_err(|error| format!("writing to the page failed: {error}"))
}
