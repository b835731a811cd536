//! The Endo CapTP socket, `run/captp0.sock`: where unmodified JavaScript
//! programs using `@endo/captp` reach the node. It sits beside the control
//! socket and grants the same: mode 0600 in the 0700 runtime directory, so
//! only the node's owner can connect, and whoever connects gets the host
//! agent.
//!
//! Each connection is one CapTP session of the node's own engine, driven
//! by the vat like any other: an in-memory pipe carries the engine's
//! frames, and an [`EndoBridge`] translates them to and from the
//! netstring-framed JSON `@endo/captp` speaks (see
//! `capstan_protocol::captp::endo`). The session's bootstrap object offers
//! `ping()` (answering `"pong"`) and `host()` (the host agent).

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::rc::Rc;

use capstan_protocol::captp::Limits;
use capstan_protocol::captp::endo::EndoBridge;
use capstan_protocol::guards::DefaultGuards;
use capstan_protocol::patterns::M;
use capstan_protocol::{ErrorValue, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio::net::{UnixListener, UnixStream};

use super::accept::{ConnectionSlots, pause_after_accept_error};
use super::{Daemon, DaemonError};
use crate::runtime::{Exo, SessionKind, SessionOptions, Vat, connect_with};

/// How many connections the socket keeps open at once.
pub const MAX_CONNECTIONS: usize = 256;

/// Bytes the in-memory pipe between the bridge and the engine buffers
/// each way.
const PIPE_BYTES: usize = 256 * 1024;

/// Size of each read from the socket and from the pipe.
const READ_CHUNK: usize = 64 * 1024;

/// The listening socket; its file is removed when this is dropped (when
/// the node stops).
pub struct EndoSocket {
    path: PathBuf,
}

impl Drop for EndoSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Listens on `run/captp0.sock` (mode 0600) and serves each connection
/// until the node stops.
pub fn listen(daemon: &Rc<Daemon>, vat: &Vat) -> Result<EndoSocket, DaemonError> {
    let path = daemon.options.paths.captp_socket();
    // The node holds the store's lock, so a socket file left here is stale.
    let _ = std::fs::remove_file(&path);
    let socket_error = |source| DaemonError::Socket {
        path: path.display().to_string(),
        source,
    };
    let listener = UnixListener::bind(&path).map_err(socket_error)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(socket_error)?;
    tracing::info!(socket = %path.display(), "serving Endo's CapTP");
    let weak = Rc::downgrade(daemon);
    let accepting = vat.clone();
    vat.spawn(async move {
        let slots = ConnectionSlots::new(MAX_CONNECTIONS);
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(error) => {
                    pause_after_accept_error("Endo CapTP", &error).await;
                    continue;
                }
            };
            let Some(daemon) = weak.upgrade() else { return };
            // Over the bound, the connection is closed unanswered.
            let Some(slot) = slots.try_take() else {
                tracing::debug!("an Endo CapTP connection over the bound was closed");
                continue;
            };
            let vat = accepting.clone();
            accepting.spawn(async move {
                let _slot = slot;
                serve_connection(daemon, vat, stream).await
            });
        }
    });
    Ok(EndoSocket { path })
}

/// The bootstrap object of an Endo CapTP session.
fn make_bootstrap(host: Value) -> Result<Value, ErrorValue> {
    Exo::new("CapstanBootstrap")
        .interface(M::interface(
            "CapstanBootstrap",
            [
                ("ping", M::call([]).returns(M::string())),
                ("host", M::call([]).returns(M::remotable())),
            ],
            DefaultGuards::None,
        ))
        .method("ping", |_, _| Ok(Value::from("pong")))
        .method("host", move |_, _| Ok(host.clone()))
        .make()
}

async fn serve_connection(daemon: Rc<Daemon>, vat: Vat, stream: UnixStream) {
    // The bootstrap's host must be the host itself, not a promise.
    let host = match daemon.provide_settled(daemon.roots.host).await {
        Ok(host) => host,
        Err(error) => {
            tracing::error!(error = %error.message, "the host agent cannot be made");
            return;
        }
    };
    drop(daemon);
    let bootstrap = match make_bootstrap(host) {
        Ok(bootstrap) => bootstrap,
        Err(error) => {
            tracing::error!(error = %error.message, "the Endo CapTP bootstrap object cannot be made");
            return;
        }
    };
    let limits = Limits::default();
    let (engine_end, bridge_end) = tokio::io::duplex(PIPE_BYTES);
    let (engine_reader, engine_writer) = tokio::io::split(engine_end);
    let options = SessionOptions::new(limits.clone()).with_kind(SessionKind::Client);
    let connection = connect_with(&vat, engine_reader, engine_writer, Some(bootstrap), options);
    tracing::debug!(session = connection.id().0, "Endo CapTP client connected");
    let (socket_reader, socket_writer) = stream.into_split();
    let reason = pump(EndoBridge::new(limits), socket_reader, socket_writer, bridge_end).await;
    tracing::debug!(session = connection.id().0, %reason, "Endo CapTP client gone");
}

/// Carries bytes between the socket and the engine through the bridge
/// until either side ends; returns why it ended.
async fn pump<R, W>(mut bridge: EndoBridge, mut socket_reader: R, mut socket_writer: W, pipe: DuplexStream) -> String
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let (mut pipe_reader, mut pipe_writer) = tokio::io::split(pipe);
    let mut from_socket = vec![0u8; READ_CHUNK];
    let mut from_engine = vec![0u8; READ_CHUNK];
    let mut out = Vec::new();
    let reason = loop {
        tokio::select! {
            read = socket_reader.read(&mut from_socket) => match read {
                Ok(0) => break "the client closed the connection".to_string(),
                Ok(count) => bridge.handle_peer_bytes(&from_socket[..count]),
                Err(error) => break format!("reading from the client failed: {error}"),
            },
            read = pipe_reader.read(&mut from_engine) => match read {
                Ok(0) => break "the session ended".to_string(),
                Ok(count) => bridge.handle_engine_bytes(&from_engine[..count]),
                Err(error) => break format!("reading from the session failed: {error}"),
            },
        }
        out.clear();
        bridge.poll_to_engine(&mut out);
        if !out.is_empty() && pipe_writer.write_all(&out).await.is_err() {
            break "the session ended".to_string();
        }
        out.clear();
        bridge.poll_to_peer(&mut out);
        if !out.is_empty() && socket_writer.write_all(&out).await.is_err() {
            break "writing to the client failed".to_string();
        }
        if let Some(reason) = bridge.close_reason() {
            break reason.to_string();
        }
    };
    // Whatever is left (a last CTP_DISCONNECT) goes out before both ends
    // close; the engine sees its pipe close and ends the session.
    out.clear();
    bridge.poll_to_peer(&mut out);
    let _ = socket_writer.write_all(&out).await;
    let _ = socket_writer.shutdown().await;
    out.clear();
    bridge.poll_to_engine(&mut out);
    let _ = pipe_writer.write_all(&out).await;
    let _ = pipe_writer.shutdown().await;
    reason
}
