//! The client side of talking to other nodes: one outbound CapTP session
//! per peer, opened on first use (addresses from the known-peers store)
//! and dropped when it closes, so the next use reconnects.
//!
//! [`provide_remote`] is how the daemon gets the value of another node's
//! formula; [`deliver_remote`] and [`request_remote`] carry mail to a
//! peer's agents; [`redeem_remote`] uses up an invitation on the
//! inviter's node; [`greet_peers`] tells known peers where we listen. The
//! known-peers table (addresses, when last seen) is kept here too. What
//! peers may ask of us is the gateway module's; the gateway is the
//! bootstrap object of every session, given to [`PeerSessions::new`] (so
//! this module does not depend on it).

use std::cell::RefCell;
use std::collections::HashMap;
use std::pin::Pin;
use std::rc::Rc;
use std::task::Poll;
use std::time::Duration;

use capstan_protocol::captp::Limits;
use capstan_protocol::{ErrorValue, Value, list};
use capstan_store::{FormulaId, NodeId, PeerRecord};
use tokio::io::{AsyncRead, ReadBuf};

use super::Daemon;
use super::formula::Id;
use super::message::{Content, StoredMessage};
use crate::net::{Multiaddr, StreamReader, StreamWriter};
use crate::runtime::reason_to_error;
use crate::runtime::{ConnectionHandle, E, PromiseKit, SessionOptions, connect_with, when};

/// How long a call for a remote formula's value may take before it fails
/// naming the peer.
const REMOTE_PROVIDE_TIMEOUT: Duration = Duration::from_secs(20);

/// Makes the object a peer's session bootstraps to: our gateway for
/// that peer.
pub type LocalGateway = fn(&Rc<Daemon>, NodeId) -> Value;

/// The live sessions with other nodes.
pub struct PeerSessions {
    /// Each peer's gateway (a promise while the session is being opened).
    gateways: RefCell<HashMap<NodeId, Value>>,
    local_gateway: LocalGateway,
}

impl PeerSessions {
    /// No sessions yet; every session will offer `local_gateway`'s object.
    pub fn new(local_gateway: LocalGateway) -> PeerSessions {
        PeerSessions {
            gateways: RefCell::new(HashMap::new()),
            local_gateway,
        }
    }
}

/// Starts a CapTP session with `node` on a stream (ours or theirs): its
/// bootstrap is our gateway for `node`, and its end names the peer.
pub fn start_session(
    daemon: &Rc<Daemon>,
    node: NodeId,
    reader: StreamReader,
    writer: StreamWriter,
) -> ConnectionHandle {
    let gateway = (daemon.peers.local_gateway)(daemon, node);
    let peer_limits = &daemon.peer_limits;
    let options = SessionOptions {
        limits: Limits {
            max_outstanding_answers: peer_limits.answers_in_flight as usize,
            max_questions_in_flight: peer_limits.questions_in_flight as usize,
            max_table_entries: peer_limits.table_entries as usize,
            ..Limits::default()
        },
        outbound_queue_bytes: usize::try_from(peer_limits.outbound_queue_bytes).unwrap_or(usize::MAX),
        calls_per_second: std::num::NonZeroU32::new(peer_limits.calls_per_second),
    };
    let connection = connect_with(
        &daemon.vat,
        PeerReader::new(reader, node),
        writer,
        Some(gateway),
        options,
    );
    note_seen(daemon, node);
    connection
}

/// Records when a known peer was last seen. Nodes we have not been
/// introduced to (any node may open a stream to us) are not recorded, so
/// strangers cannot grow the known-peers table.
pub(super) fn note_seen(daemon: &Rc<Daemon>, node: NodeId) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64);
    let commit = daemon.store.transact(move |tx| {
        if tx.get_peer(node)?.is_some() {
            tx.record_peer_seen(node, now)?;
        }
        Ok(())
    });
    daemon.vat.spawn(async move {
        if let Err(error) = commit.await {
            tracing::warn!(%error, "cannot record a peer as seen");
        }
    });
}

/// A short form of a node id for messages.
pub fn short_node(node: &NodeId) -> String {
    let text = node.to_string();
    text[..text.len().min(12)].to_string()
}

/// The gateway of `node`, opening a session with it if there is none.
pub fn gateway_of(daemon: &Rc<Daemon>, node: NodeId) -> Value {
    if let Some(gateway) = daemon.peers.gateways.borrow().get(&node) {
        return gateway.clone();
    }
    let mut kit = PromiseKit::new();
    let promise = kit.promise.clone();
    daemon.peers.gateways.borrow_mut().insert(node, promise.clone());
    let daemon = Rc::clone(daemon);
    daemon.vat.clone().spawn(async move {
        match open_session(&daemon, node).await {
            Ok(connection) => {
                kit.resolve(connection.bootstrap());
                let daemon = Rc::clone(&daemon);
                daemon.vat.clone().spawn(async move {
                    let reason = connection.closed().await;
                    tracing::info!(peer = %node, %reason, "peer session closed");
                    forget_peer(&daemon, node);
                });
            }
            Err(message) => {
                daemon.peers.gateways.borrow_mut().remove(&node);
                kit.reject(Value::error(ErrorValue::plain(message)));
            }
        }
    });
    promise
}

/// Drops the session with `node` and the values obtained through it, so
/// the next use reconnects and asks again.
fn forget_peer(daemon: &Rc<Daemon>, node: NodeId) {
    daemon.peers.gateways.borrow_mut().remove(&node);
    daemon.forget_remote(node);
}

async fn open_session(daemon: &Rc<Daemon>, node: NodeId) -> Result<ConnectionHandle, String> {
    let record = daemon
        .store
        .read()
        .and_then(|snapshot| snapshot.get_peer(node))
        .map_err(|error| format!("cannot read the known peers: {error}"))?;
    let addresses: Vec<Multiaddr> = record
        .map(|record| record.addresses.iter().filter_map(|text| text.parse().ok()).collect())
        .unwrap_or_default();
    let (reader, writer) = daemon
        .network
        .open_stream(&node, &addresses)
        .await
        .map_err(|error| error.to_string())?;
    let connection = start_session(daemon, node, reader, writer);
    tracing::info!(peer = %node, session = connection.id().0, "peer session opened");
    Ok(connection)
}

/// The value of another node's formula `id`, from that node's gateway.
pub async fn provide_remote(daemon: &Rc<Daemon>, id: FormulaId) -> Result<Value, ErrorValue> {
    let node = id.node();
    let peer = short_node(&node);
    let gateway = gateway_of(daemon, node);
    let value = E(&gateway).call("provide", list![id.to_string()]);
    match tokio::time::timeout(REMOTE_PROVIDE_TIMEOUT, when(&value)).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(reason)) => {
            let error = reason_to_error(reason);
            Err(ErrorValue::plain(format!("peer {peer}: {}", error.message)))
        }
        Err(_) => Err(ErrorValue::plain(format!(
            "peer {peer} did not answer within {} s",
            REMOTE_PROVIDE_TIMEOUT.as_secs()
        ))),
    }
}

/// This node's addresses as strings.
pub fn own_addresses(daemon: &Daemon) -> Vec<String> {
    daemon
        .network
        .listen_addresses()
        .iter()
        .map(ToString::to_string)
        .collect()
}

/// Adds addresses to what is known about `node`.
pub async fn remember_addresses(daemon: &Daemon, node: NodeId, addresses: Vec<String>) -> Result<(), ErrorValue> {
    let addresses: Vec<String> = addresses
        .into_iter()
        .filter(|address| address.parse::<Multiaddr>().is_ok())
        .collect();
    if let Ok(parsed) = addresses
        .iter()
        .map(|a| a.parse::<Multiaddr>())
        .collect::<Result<Vec<_>, _>>()
    {
        let _ = daemon.network.add_addresses(&node, parsed);
    }
    daemon
        .store
        .transact(move |tx| {
            let mut record = tx.get_peer(node)?.unwrap_or_else(PeerRecord::default);
            // The newest addresses first: a restarted peer may listen elsewhere.
            let mut merged = addresses;
            for old in record.addresses {
                if !merged.contains(&old) {
                    merged.push(old);
                }
            }
            merged.truncate(16);
            record.addresses = merged;
            tx.put_peer(node, &record)
        })
        .await
        .map_err(ErrorValue::from)
}

/// Sends a package to a peer's handle, through the peer's gateway.
pub async fn deliver_remote(daemon: &Rc<Daemon>, message: &StoredMessage) -> Result<Value, ErrorValue> {
    let Content::Package { strings, names, ids } = &message.content else {
        return Err(ErrorValue::plain("only packages can be sent to a peer"));
    };
    let to = message.to.get().map_err(ErrorValue::from)?;
    let peer = short_node(&to.node());
    let gateway = gateway_of(daemon, to.node());
    let strs = |items: &[String]| Value::array(items.iter().map(|s| Value::from(s.as_str())));
    let delivered = E(&gateway).call(
        "deliver",
        list![
            message.to.as_str(),
            message.from.as_str(),
            strs(strings),
            strs(names),
            Value::array(ids.iter().map(|id| Value::from(id.as_str()))),
            address_hints(daemon, to.node(), ids)
        ],
    );
    match tokio::time::timeout(REMOTE_PROVIDE_TIMEOUT, when(&delivered)).await {
        Ok(Ok(_)) => Ok(Value::Undefined),
        Ok(Err(reason)) => Err(ErrorValue::plain(format!(
            "peer {peer}: {}",
            reason_to_error(reason).message
        ))),
        Err(_) => Err(ErrorValue::plain(format!(
            "peer {peer} did not answer within {} s",
            REMOTE_PROVIDE_TIMEOUT.as_secs()
        ))),
    }
}

/// Most nodes one package may carry address hints for, and most addresses
/// taken for each.
pub(super) const MAX_HINTED_NODES: usize = 64;

pub(super) const MAX_HINTED_ADDRESSES: usize = 16;

/// Where the nodes of a package's references (other than ours and the
/// recipient's) can be reached, as we know it: `[[node, address...]...]`.
/// A reference to a third node's value is only usable by the recipient if
/// it can dial that node, and it may never have heard of it.
fn address_hints(daemon: &Daemon, recipient: NodeId, ids: &[Id]) -> Value {
    let mut nodes: Vec<NodeId> = Vec::new();
    for id in ids {
        let Ok(id) = id.get() else { continue };
        let node = id.node();
        if node != daemon.node_id && node != recipient && !nodes.contains(&node) {
            nodes.push(node);
        }
    }
    nodes.truncate(MAX_HINTED_NODES);
    let Ok(snapshot) = daemon.store.read() else {
        return Value::array([]);
    };
    let hints = nodes.into_iter().filter_map(|node| {
        let record = snapshot.get_peer(node).ok().flatten()?;
        let addresses = record.addresses.into_iter().take(MAX_HINTED_ADDRESSES);
        let entry: Vec<Value> = std::iter::once(node.to_string())
            .chain(addresses)
            .map(Value::from)
            .collect();
        Some(Value::array(entry))
    });
    Value::array(hints.collect::<Vec<_>>())
}

/// Asks a peer's agent (by its handle `to`) for a value, as our agent
/// with handle `from`: the id of the formula it answers with. Waits as
/// long as the peer takes to answer; fails if the session with it ends.
pub async fn request_remote(
    daemon: &Rc<Daemon>,
    to: FormulaId,
    from: FormulaId,
    description: &str,
) -> Result<FormulaId, ErrorValue> {
    let peer = short_node(&to.node());
    let gateway = gateway_of(daemon, to.node());
    let answer = E(&gateway).call("request", list![to.to_string(), from.to_string(), description]);
    let answer = when(&answer)
        .await
        .map_err(|reason| ErrorValue::plain(format!("peer {peer}: {}", reason_to_error(reason).message)))?;
    answer
        .as_str()
        .and_then(|text| text.parse::<FormulaId>().ok())
        .ok_or_else(|| ErrorValue::plain(format!("peer {peer} answered a request with no formula id")))
}

/// Uses up `invitation` on its node, for our agent whose handle is
/// `acceptor_handle`, telling the inviter where we listen.
pub async fn redeem_remote(
    daemon: &Rc<Daemon>,
    invitation: FormulaId,
    acceptor_handle: FormulaId,
) -> Result<(), ErrorValue> {
    let node = invitation.node();
    let peer = short_node(&node);
    let gateway = gateway_of(daemon, node);
    let redeemed = E(&gateway).call(
        "redeem",
        list![
            invitation.to_string(),
            acceptor_handle.to_string(),
            Value::array(own_addresses(daemon).into_iter().map(Value::from))
        ],
    );
    match tokio::time::timeout(REMOTE_PROVIDE_TIMEOUT, when(&redeemed)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(reason)) => Err(reason_to_error(reason)),
        Err(_) => Err(ErrorValue::plain(format!(
            "peer {peer} did not answer within {} s",
            REMOTE_PROVIDE_TIMEOUT.as_secs()
        ))),
    }
}

/// At start: tells every known peer where this node listens now (a node
/// listening on port 0 gets a new port on every start).
pub fn greet_peers(daemon: &Rc<Daemon>) {
    let peers = match daemon.store.read().and_then(|snapshot| snapshot.list_peers()) {
        Ok(peers) => peers,
        Err(error) => {
            tracing::warn!(%error, "cannot list the known peers");
            return;
        }
    };
    for (node, _) in peers {
        let daemon = Rc::clone(daemon);
        daemon.vat.clone().spawn(async move {
            let gateway = gateway_of(&daemon, node);
            let addresses = Value::array(own_addresses(&daemon).into_iter().map(Value::from));
            let greeted = E(&gateway).call("hello", list![addresses]);
            match tokio::time::timeout(REMOTE_PROVIDE_TIMEOUT, when(&greeted)).await {
                Ok(Ok(_)) => tracing::info!(peer = %node, "told a peer where we listen"),
                Ok(Err(reason)) => tracing::info!(
                    peer = %node,
                    reason = %reason_to_error(reason).message,
                    "a peer could not be told where we listen"
                ),
                Err(_) => tracing::info!(peer = %node, "a peer did not answer our greeting"),
            }
        });
    }
}

/// A stream's reading half whose end is an error naming the peer, so the
/// calls pending on a session that ends fail with a reason that says who
/// went away.
struct PeerReader {
    inner: StreamReader,
    peer: String,
}

impl PeerReader {
    fn new(inner: StreamReader, node: NodeId) -> PeerReader {
        PeerReader {
            inner,
            peer: short_node(&node),
        }
    }
}

impl AsyncRead for PeerReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        context: &mut std::task::Context<'_>,
        buffer: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buffer.filled().len();
        let peer = self.peer.clone();
        match Pin::new(&mut self.inner).poll_read(context, buffer) {
            Poll::Ready(Ok(())) if buffer.filled().len() == before && buffer.remaining() > 0 => {
                Poll::Ready(Err(std::io::Error::other(format!("peer {peer} closed the session"))))
            }
            Poll::Ready(Err(error)) => {
                Poll::Ready(Err(std::io::Error::other(format!("peer {peer} went away: {error}"))))
            }
            other => other,
        }
    }
}
