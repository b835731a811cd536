//! The client side of talking to other nodes: one outbound CapTP session
//! per peer, opened on first use (addresses from the known-peers store)
//! and dropped when it closes, so the next use reconnects.
//!
//! [`provide_remote`] is how the daemon gets the value of another node's
//! formula; [`deliver_remote`] and [`request_remote`] carry mail to a
//! peer's agents; [`release_remote`] tells a peer which of the ids it
//! gave us we let go of; [`redeem_remote`] uses up an invitation on the
//! inviter's node; [`greet_peers`] tells known peers where we listen. The
//! known-peers table (addresses, when last seen) is kept here too: a
//! record is made only by an introduction ([`AddressSource::Introduction`]),
//! and every address taken from anyone is checked ([`checked_addresses`])
//! before it is stored or handed to libp2p. What peers may ask of us is the
//! gateway module's; the gateway is the bootstrap object of every session,
//! given to [`PeerSessions::new`] (so this module does not depend on it).
//!
//! Confinement covers errors: what fails when talking to a peer reaches
//! guests as one of a few fixed texts ([`PEER_UNREACHABLE`],
//! [`PEER_WENT_AWAY`], a timeout) that name no node, peer id or address;
//! the detail goes to the node's log, with the peer. That holds for a
//! peer's own `Abort` too: its reason is logged, and what was pending on
//! the session fails with [`PEER_WENT_AWAY`].

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::pin::Pin;
use std::rc::Rc;
use std::task::Poll;
use std::time::{Duration, Instant};

use capstan_protocol::captp::Limits;
use capstan_protocol::{ErrorValue, Value, list};
use capstan_store::{FormulaId, NodeId, PEER_ADDRESS_MAX_LEN, PEER_ADDRESSES_MAX, PeerRecord};
use libp2p::multiaddr::Protocol;
use tokio::io::{AsyncRead, ReadBuf};

use super::Daemon;
use super::formula::Id;
use super::message::{Content, StoredMessage};
use crate::net::{Multiaddr, PeerId, StreamReader, StreamWriter, peer_id_of};
use crate::runtime::reason_to_error;
use crate::runtime::{ConnectionHandle, E, PromiseKit, SessionKind, SessionOptions, connect_with, when};

/// Refusals of peers' calls logged per second at most, all peers
/// together: a peer repeating a refused call must not fill the node's disk
/// with log lines. The rest are counted, and the next line logged says how
/// many were left out.
const REFUSALS_LOGGED_PER_SECOND: u32 = 20;

/// The refusals logged in the current second, and those left out.
struct RefusalLog {
    second_began: Instant,
    logged: u32,
    left_out: u64,
}

thread_local! {
    static REFUSALS: RefCell<RefusalLog> = RefCell::new(RefusalLog {
        second_began: Instant::now(),
        logged: 0,
        left_out: 0,
    });
}

/// Logs that a call of `peer`'s was refused (`what`, and `why`), within
/// [`REFUSALS_LOGGED_PER_SECOND`].
pub(super) fn log_refusal(peer: NodeId, what: &str, why: &str) {
    REFUSALS.with(|refusals| {
        let mut refusals = refusals.borrow_mut();
        if refusals.second_began.elapsed() >= Duration::from_secs(1) {
            refusals.second_began = Instant::now();
            refusals.logged = 0;
        }
        if refusals.logged >= REFUSALS_LOGGED_PER_SECOND {
            refusals.left_out += 1;
            return;
        }
        refusals.logged += 1;
        let left_out = std::mem::take(&mut refusals.left_out);
        if left_out > 0 {
            tracing::info!(peer = %peer, why, refusals_not_logged = left_out, "{what}");
        } else {
            tracing::info!(peer = %peer, why, "{what}");
        }
    });
}

/// How long a call to a peer's gateway may take before it fails.
const REMOTE_PROVIDE_TIMEOUT: Duration = Duration::from_secs(20);

/// What a caller (a guest, a worker, the CLI) is told when no session with
/// the peer can be opened.
pub const PEER_UNREACHABLE: &str = "the peer that holds this object cannot be reached";

/// What pending calls are told when the session with the peer ends.
pub const PEER_WENT_AWAY: &str = "the peer that holds this object went away";

/// What a caller is told when the peer's answer could not be passed on:
/// it was not what was asked for, or it carried an identifier.
pub const PEER_REFUSED: &str = "the peer that holds this object refused the call";

/// The error for a gateway call that took longer than
/// [`REMOTE_PROVIDE_TIMEOUT`].
fn timed_out(node: NodeId, method: &str) -> ErrorValue {
    tracing::info!(peer = %node, method, "a peer did not answer in time");
    ErrorValue::plain(format!(
        "the peer that holds this object did not answer within {} s",
        REMOTE_PROVIDE_TIMEOUT.as_secs()
    ))
}

/// The error a caller gets for a rejection that came from talking to a
/// peer. Our own texts are kept; the peer's text is passed on only if it
/// names no identifier (a hostile peer must not be able to put node ids
/// or addresses in our guests' errors through us). The original goes to
/// the log.
fn from_peer(node: NodeId, method: &str, reason: Value) -> ErrorValue {
    let error = reason_to_error(reason);
    let message: &str = &error.message;
    tracing::info!(peer = %node, method, reason = message, "a call to a peer failed");
    for ours in [PEER_UNREACHABLE, PEER_WENT_AWAY] {
        if message.contains(ours) {
            return ErrorValue::plain(ours);
        }
    }
    if carries_identifier(message) {
        return ErrorValue::plain(PEER_REFUSED);
    }
    ErrorValue::plain(message)
}

/// Whether `text` looks like it holds an identifier: a run of 12 or more
/// hex digits (node ids, formula ids, blob hashes), a libp2p peer id, a
/// multiaddr or a locator.
pub fn carries_identifier(text: &str) -> bool {
    let mut run = 0usize;
    let long_hex = text.chars().any(|c| {
        run = if c.is_ascii_hexdigit() { run + 1 } else { 0 };
        run >= 12
    });
    long_hex
        || ["12D3KooW", "/ip4/", "/ip6/", "/dns", "/p2p/", "capstan://"]
            .iter()
            .any(|marker| text.contains(marker))
}

/// Makes the object a peer's session bootstraps to: our gateway for
/// that peer.
pub type LocalGateway = fn(&Rc<Daemon>, NodeId) -> Value;

/// The live sessions with other nodes.
pub struct PeerSessions {
    /// Each peer's gateway (a promise while the session is being opened).
    gateways: RefCell<HashMap<NodeId, Value>>,
    local_gateway: LocalGateway,
    /// Rounds of greetings begun ([`greet_peers`]): a retry of an older
    /// round gives way to a newer one.
    greetings: Cell<u64>,
}

impl PeerSessions {
    /// No sessions yet; every session will offer `local_gateway`'s object.
    pub fn new(local_gateway: LocalGateway) -> PeerSessions {
        PeerSessions {
            gateways: RefCell::new(HashMap::new()),
            local_gateway,
            greetings: Cell::new(0),
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
        kind: Some(SessionKind::Peer { node: node.to_string() }),
        peer_abort_text: Some(PEER_WENT_AWAY),
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
    let commit = daemon
        .store
        .transact(move |tx| tx.record_peer_seen(node, now).map(|_| ()));
    daemon.vat.spawn(async move {
        if let Err(error) = commit.await {
            tracing::warn!(%error, "cannot record a peer as seen");
        }
    });
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
            Err(detail) => {
                tracing::info!(peer = %node, %detail, "cannot reach a peer");
                daemon.peers.gateways.borrow_mut().remove(&node);
                kit.reject(Value::error(ErrorValue::plain(PEER_UNREACHABLE)));
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
    let gateway = gateway_of(daemon, node);
    let value = E(&gateway).call("provide", list![id.to_string()]);
    match tokio::time::timeout(REMOTE_PROVIDE_TIMEOUT, when(&value)).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(reason)) => Err(from_peer(node, "provide", reason)),
        Err(_) => Err(timed_out(node, "provide")),
    }
}

/// This node's addresses as strings.
pub fn own_addresses(daemon: &Daemon) -> Vec<String> {
    let mut addresses = daemon.network.listen_addresses();
    // Addresses peers confirmed they can dial (a router's forwarded port,
    // say) are ours too, though no socket is bound to them.
    for external in daemon.network.external_addresses() {
        if !addresses.contains(&external) {
            addresses.push(external);
        }
    }
    // Those another machine (or container) can reach first, then those
    // through relays: a peer tries them in parallel, and in order when
    // there are many. Loopback and link-local addresses reach only this
    // host or link, and a peer on this host reaches the others too, so
    // they are given only when there is nothing else (a `--local` node).
    addresses.sort_by_key(reach_rank);
    if addresses.iter().any(|address| reach_rank(address) < LINK_ONLY) {
        addresses.retain(|address| reach_rank(address) < LINK_ONLY);
    }
    addresses.iter().map(ToString::to_string).collect()
}

/// The [`reach_rank`] of link-local addresses; loopback is above it.
const LINK_ONLY: u8 = 3;

/// How widely an address of ours can be reached: 0 from anywhere (a
/// global IP or a DNS name), 1 through a relay, 2 from a private
/// network, 3 on the link only, 4 on this host only.
fn reach_rank(address: &Multiaddr) -> u8 {
    if address.iter().any(|protocol| matches!(protocol, Protocol::P2pCircuit)) {
        return 1;
    }
    match address.iter().next() {
        Some(Protocol::Ip4(ip)) if ip.is_loopback() || ip.is_unspecified() => 4,
        Some(Protocol::Ip4(ip)) if ip.is_link_local() => 3,
        Some(Protocol::Ip4(ip)) if ip.is_private() => 2,
        Some(Protocol::Ip6(ip)) if ip.is_loopback() || ip.is_unspecified() => 4,
        Some(Protocol::Ip6(ip)) if ip.is_unicast_link_local() => 3,
        Some(Protocol::Ip6(ip)) if ip.is_unique_local() => 2,
        _ => 0,
    }
}

/// Who gave the addresses [`remember_addresses`] is asked to keep.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddressSource {
    /// The node itself, in `hello`: kept only if it is a known peer.
    Peer,
    /// An introduction the user made or accepted (an invitation accepted
    /// or redeemed), or a known peer's hint for a node its package
    /// references: makes the peer known if it was not.
    Introduction,
}

/// The addresses among `offered` that may be dialed to reach `node`, at
/// most [`PEER_ADDRESSES_MAX`], in the order given, without duplicates and
/// without their `/p2p/` part. The rest are dropped (and logged).
pub fn checked_addresses(node: NodeId, offered: &[String]) -> Vec<Multiaddr> {
    let Ok(peer) = peer_id_of(&node) else {
        tracing::info!(peer = %node, "addresses offered for a node id that is not a key; ignored");
        return Vec::new();
    };
    let mut kept: Vec<Multiaddr> = Vec::new();
    let mut refused = 0usize;
    for text in offered {
        match checked_address(&peer, text) {
            Ok(address) if kept.len() < PEER_ADDRESSES_MAX => {
                if !kept.contains(&address) {
                    kept.push(address);
                }
            }
            Ok(_) => refused += 1,
            Err(why) => {
                refused += 1;
                tracing::debug!(peer = %node, why, "an offered address was refused");
            }
        }
    }
    if refused > 0 {
        tracing::info!(peer = %node, refused, kept = kept.len(), "some offered addresses were refused");
    }
    kept
}

/// One address, if it is of a shape this node dials: an IP or DNS host,
/// then TCP, or UDP with QUIC, then either at most a `/p2p/` naming
/// `peer`, or a relay's `/p2p/` id and `/p2p-circuit` (then at most a
/// `/p2p/` naming `peer`).
fn checked_address(peer: &PeerId, text: &str) -> Result<Multiaddr, &'static str> {
    if text.len() > PEER_ADDRESS_MAX_LEN {
        return Err("too long");
    }
    let address: Multiaddr = text.parse().map_err(|_| "not a multiaddr")?;
    let mut parts = address.iter();
    let mut dialable = Multiaddr::empty();
    match parts.next() {
        Some(
            host @ (Protocol::Ip4(_) | Protocol::Ip6(_) | Protocol::Dns(_) | Protocol::Dns4(_) | Protocol::Dns6(_)),
        ) => dialable.push(host),
        _ => return Err("does not start with an IP address or a DNS name"),
    }
    match parts.next() {
        Some(tcp @ Protocol::Tcp(_)) => dialable.push(tcp),
        Some(udp @ Protocol::Udp(_)) => {
            dialable.push(udp);
            match parts.next() {
                Some(Protocol::QuicV1) => dialable.push(Protocol::QuicV1),
                _ => return Err("UDP without QUIC"),
            }
        }
        _ => return Err("neither TCP nor UDP"),
    }
    let mut last = parts.next();
    if let Some(Protocol::P2p(relay)) = last
        && relay != *peer
    {
        match parts.next() {
            Some(Protocol::P2pCircuit) => {}
            _ => return Err("names another node"),
        }
        dialable.push(Protocol::P2p(relay));
        dialable.push(Protocol::P2pCircuit);
        last = parts.next();
    }
    match last {
        None => {}
        Some(Protocol::P2p(named)) if named == *peer => {}
        Some(Protocol::P2p(_)) => return Err("names another node"),
        Some(_) => return Err("has protocols this node does not dial"),
    }
    if parts.next().is_some() {
        return Err("has protocols this node does not dial");
    }
    Ok(dialable)
}

/// Keeps the addresses of `offered` that pass [`checked_addresses`] for
/// `node`, newest first, at most [`PEER_ADDRESSES_MAX`], and tells libp2p
/// about them. From the peer itself they are kept only if it is a known
/// peer: a node that was never introduced creates no record and is never
/// dialed at an address it chose. `true` if they were kept.
pub async fn remember_addresses(
    daemon: &Daemon,
    node: NodeId,
    offered: Vec<String>,
    source: AddressSource,
) -> Result<bool, ErrorValue> {
    let addresses = checked_addresses(node, &offered);
    let texts: Vec<String> = addresses.iter().map(ToString::to_string).collect();
    let kept = daemon
        .store
        .transact(move |tx| {
            let mut record = match (tx.get_peer(node)?, source) {
                (Some(record), _) => record,
                (None, AddressSource::Introduction) => PeerRecord::default(),
                (None, AddressSource::Peer) => return Ok(false),
            };
            // The newest addresses first: a restarted peer may listen
            // elsewhere. Old ones stored before the checks are dropped
            // unless they pass them.
            let mut merged = texts;
            let old = checked_addresses(node, &record.addresses);
            for old in old.iter().map(ToString::to_string) {
                if !merged.contains(&old) {
                    merged.push(old);
                }
            }
            merged.truncate(PEER_ADDRESSES_MAX);
            record.addresses = merged;
            tx.put_peer(node, &record)?;
            Ok(true)
        })
        .await
        .map_err(ErrorValue::from)?;
    if kept && !addresses.is_empty() {
        offer_addresses(daemon, node, addresses);
    }
    Ok(kept)
}

/// Tells libp2p where `node` may be dialed, without storing it: for an
/// invitation being accepted, whose inviter becomes a known peer only
/// once the redemption succeeds.
pub fn offer_addresses(daemon: &Daemon, node: NodeId, addresses: Vec<Multiaddr>) {
    if let Err(error) = daemon.network.add_addresses(&node, addresses) {
        tracing::info!(peer = %node, %error, "cannot give libp2p a peer's addresses");
    }
}

/// Sends a package to a peer's handle, through the peer's gateway. The
/// peer's holds on the package's ids are recorded before they leave, and
/// taken back if the peer refuses the package.
pub async fn deliver_remote(daemon: &Rc<Daemon>, message: &StoredMessage) -> Result<Value, ErrorValue> {
    let Content::Package { strings, names, ids } = &message.content else {
        return Err(ErrorValue::plain("only packages can be sent to a peer"));
    };
    let to = message.to.get().map_err(ErrorValue::from)?;
    let node = to.node();
    let mut formula_ids = Vec::with_capacity(ids.len());
    for id in ids {
        formula_ids.push(id.get().map_err(ErrorValue::from)?);
    }
    let given = super::holds::give(daemon, node, &formula_ids).await?;
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
        Ok(Err(reason)) => {
            let error = from_peer(node, "deliver", reason);
            // Refused, or never reached the peer: it holds nothing. A
            // session that ended mid-call may have delivered; the hold is
            // kept (a hold too many only keeps a formula longer).
            if &*error.message != PEER_WENT_AWAY {
                super::holds::ungive(daemon, node, given).await;
            }
            Err(error)
        }
        Err(_) => Err(timed_out(node, "deliver")),
    }
}

/// Most nodes one package may carry address hints for, and most addresses
/// taken for each.
pub(super) const MAX_HINTED_NODES: usize = 64;

pub(super) const MAX_HINTED_ADDRESSES: usize = PEER_ADDRESSES_MAX;

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
    let node = to.node();
    let gateway = gateway_of(daemon, node);
    let answer = E(&gateway).call("request", list![to.to_string(), from.to_string(), description]);
    let answer = when(&answer)
        .await
        .map_err(|reason| from_peer(node, "request", reason))?;
    answer
        .as_str()
        .and_then(|text| text.parse::<FormulaId>().ok())
        .ok_or_else(|| {
            tracing::info!(peer = %node, "a peer answered a request with no formula id");
            ErrorValue::plain(PEER_REFUSED)
        })
}

/// Sends release batch `batch` to `giver`, the node that gave us the
/// ids: each id with the count of receipts released.
pub async fn release_remote(
    daemon: &Rc<Daemon>,
    giver: NodeId,
    batch: u64,
    released: &[(FormulaId, u64)],
) -> Result<(), ErrorValue> {
    let gateway = gateway_of(daemon, giver);
    let ids = Value::array(released.iter().map(|(id, _)| Value::from(id.to_string())));
    let counts = Value::array(released.iter().map(|(_, count)| Value::from(count.to_string())));
    let sent = E(&gateway).call("release", list![batch.to_string(), ids, counts]);
    match tokio::time::timeout(REMOTE_PROVIDE_TIMEOUT, when(&sent)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(reason)) => Err(from_peer(giver, "release", reason)),
        Err(_) => Err(timed_out(giver, "release")),
    }
}

/// Uses up `invitation` on its node, for our agent whose handle is
/// `acceptor_handle`, telling the inviter where we listen.
pub async fn redeem_remote(
    daemon: &Rc<Daemon>,
    invitation: FormulaId,
    acceptor_handle: FormulaId,
) -> Result<(), ErrorValue> {
    let node = invitation.node();
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
        Ok(Err(reason)) => Err(from_peer(node, "redeem", reason)),
        Err(_) => Err(timed_out(node, "redeem")),
    }
}

/// How long the node lets its addresses settle before telling its known
/// peers (a relay reservation brings a TCP and a QUIC address, say).
const ADDRESSES_SETTLE: Duration = Duration::from_secs(1);

/// Greets the known peers again whenever this node's addresses change
/// after start (a relay reservation won or lost), so they can still dial
/// it; runs until the network stops.
pub fn greet_peers_when_addresses_change(daemon: &Rc<Daemon>) {
    let daemon = Rc::clone(daemon);
    daemon.vat.clone().spawn(async move {
        let mut greeted = sorted(own_addresses(&daemon));
        while daemon.network.listen_addresses_changed().await {
            tokio::time::sleep(ADDRESSES_SETTLE).await;
            let now = sorted(own_addresses(&daemon));
            if now != greeted {
                tracing::info!(addresses = ?now, "our addresses changed; telling known peers");
                greet_peers(&daemon);
                greeted = now;
            }
        }
    });
}

fn sorted(mut addresses: Vec<String>) -> Vec<String> {
    addresses.sort();
    addresses
}

/// The first wait before greeting again a peer that could not be reached;
/// it doubles after each try, up to [`GREETING_RETRY_MOST`].
const GREETING_RETRY_FIRST: Duration = Duration::from_secs(5);
const GREETING_RETRY_MOST: Duration = Duration::from_secs(600);

/// Tells every known peer where this node listens now (at start, where a
/// node on port 0 may have a new port, and when the addresses change). A
/// peer that cannot be reached is greeted again later, with backoff, until
/// it is told, stops being a known peer, or a newer greeting takes over:
/// it may be down now and unable to find us when it comes back.
pub fn greet_peers(daemon: &Rc<Daemon>) {
    let peers = match daemon.store.read().and_then(|snapshot| snapshot.list_peers()) {
        Ok(peers) => peers,
        Err(error) => {
            tracing::warn!(%error, "cannot list the known peers");
            return;
        }
    };
    let round = daemon.peers.greetings.get().wrapping_add(1);
    daemon.peers.greetings.set(round);
    for (node, _) in peers {
        let daemon = Rc::clone(daemon);
        daemon.vat.clone().spawn(async move {
            let mut wait = GREETING_RETRY_FIRST;
            while !greet(&daemon, node).await {
                tracing::info!(peer = %node, retry_in_s = wait.as_secs(), "will greet the peer again");
                tokio::time::sleep(wait).await;
                let still_known = daemon
                    .store
                    .read()
                    .and_then(|snapshot| snapshot.get_peer(node))
                    .is_ok_and(|record| record.is_some());
                if daemon.peers.greetings.get() != round || !still_known {
                    return;
                }
                wait = (wait * 2).min(GREETING_RETRY_MOST);
            }
        });
    }
}

/// Calls `hello` with our addresses on `node`'s gateway; whether the
/// greeting is done (told, or refused: trying again would not help).
async fn greet(daemon: &Rc<Daemon>, node: NodeId) -> bool {
    let gateway = gateway_of(daemon, node);
    let addresses = Value::array(own_addresses(daemon).into_iter().map(Value::from));
    let greeted = E(&gateway).call("hello", list![addresses]);
    match tokio::time::timeout(REMOTE_PROVIDE_TIMEOUT, when(&greeted)).await {
        Ok(Ok(_)) => {
            tracing::info!(peer = %node, "told a peer where we listen");
            true
        }
        Ok(Err(reason)) => {
            let message = reason_to_error(reason).message;
            tracing::info!(peer = %node, reason = %message, "a peer could not be told where we listen");
            !(message.contains(PEER_UNREACHABLE) || message.contains(PEER_WENT_AWAY))
        }
        Err(_) => {
            tracing::info!(peer = %node, "a peer did not answer our greeting");
            false
        }
    }
}

/// A stream's reading half whose end is an error, so the calls pending on
/// a session that ends fail with [`PEER_WENT_AWAY`] (saying whether the
/// peer closed it); which peer, and a failure's cause, go to the log.
struct PeerReader {
    inner: StreamReader,
    node: NodeId,
}

impl PeerReader {
    fn new(inner: StreamReader, node: NodeId) -> PeerReader {
        PeerReader { inner, node }
    }
}

impl AsyncRead for PeerReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        context: &mut std::task::Context<'_>,
        buffer: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buffer.filled().len();
        let node = self.node;
        match Pin::new(&mut self.inner).poll_read(context, buffer) {
            Poll::Ready(Ok(())) if buffer.filled().len() == before && buffer.remaining() > 0 => Poll::Ready(Err(
                std::io::Error::other(format!("{PEER_WENT_AWAY} (it closed the session)")),
            )),
            Poll::Ready(Err(error)) => {
                tracing::info!(peer = %node, %error, "reading from a peer failed");
                Poll::Ready(Err(std::io::Error::other(PEER_WENT_AWAY)))
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node() -> NodeId {
        let keypair = crate::net::keypair_from_seed(&[7; 32]).unwrap();
        crate::net::identity::node_id_of_keypair(&keypair).unwrap()
    }

    #[test]
    fn addresses_others_can_reach_come_first() {
        let mut addresses: Vec<Multiaddr> = [
            "/ip4/127.0.0.1/tcp/1",
            "/ip6/::1/tcp/2",
            "/ip4/169.254.3.4/tcp/3",
            "/ip4/172.18.0.3/tcp/4",
            "/ip4/203.0.113.9/tcp/5",
            "/ip6/fd00::7/tcp/6",
            "/dns4/node.example/tcp/7",
            "/ip4/203.0.113.1/tcp/8/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN/p2p-circuit",
        ]
        .iter()
        .map(|text| text.parse().unwrap())
        .collect();
        addresses.sort_by_key(reach_rank);
        let ports: Vec<String> = addresses
            .iter()
            .map(|address| {
                address
                    .iter()
                    .nth(1)
                    .unwrap()
                    .to_string()
                    .rsplit('/')
                    .next()
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert_eq!(ports, ["5", "7", "8", "4", "6", "3", "1", "2"]);
    }

    #[test]
    fn dialable_addresses_are_kept_without_their_p2p_part() {
        let node = node();
        let peer = peer_id_of(&node).unwrap();
        let relay = crate::net::keypair_from_seed(&[9; 32]).unwrap().public().to_peer_id();
        let offered = vec![
            "/ip4/127.0.0.1/tcp/4001".to_string(),
            format!("/ip4/127.0.0.1/tcp/4002/p2p/{peer}"),
            "/ip6/::1/udp/4003/quic-v1".to_string(),
            "/dns4/example.org/tcp/4004".to_string(),
            "/ip4/127.0.0.1/tcp/4001".to_string(),
            format!("/ip4/10.0.0.1/tcp/4005/p2p/{relay}/p2p-circuit/p2p/{peer}"),
            format!("/ip4/10.0.0.1/udp/4006/quic-v1/p2p/{relay}/p2p-circuit"),
        ];
        let kept: Vec<String> = checked_addresses(node, &offered)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            kept,
            [
                "/ip4/127.0.0.1/tcp/4001",
                "/ip4/127.0.0.1/tcp/4002",
                "/ip6/::1/udp/4003/quic-v1",
                "/dns4/example.org/tcp/4004",
                &format!("/ip4/10.0.0.1/tcp/4005/p2p/{relay}/p2p-circuit"),
                &format!("/ip4/10.0.0.1/udp/4006/quic-v1/p2p/{relay}/p2p-circuit"),
            ]
        );
    }

    #[test]
    fn odd_foreign_long_and_surplus_addresses_are_refused() {
        let node = node();
        let other = crate::net::keypair_from_seed(&[8; 32]).unwrap().public().to_peer_id();
        let refused = [
            "garbage".to_string(),
            "/ip4/127.0.0.1".to_string(),
            "/ip4/127.0.0.1/udp/1".to_string(),
            "/ip4/127.0.0.1/tcp/1/ws".to_string(),
            "/unix/tmp/socket".to_string(),
            format!("/ip4/127.0.0.1/tcp/1/p2p/{other}"),
            format!("/dns4/{}/tcp/1", "a".repeat(300)),
            format!("/ip4/127.0.0.1/tcp/1/p2p/{other}/p2p/{other}"),
            format!("/ip4/127.0.0.1/tcp/1/p2p/{other}/p2p-circuit/p2p/{other}"),
            format!("/ip4/127.0.0.1/tcp/1/p2p/{other}/p2p-circuit/ws"),
        ];
        assert!(checked_addresses(node, &refused).is_empty());
        let many: Vec<String> = (1..=1000).map(|port| format!("/ip4/10.0.0.1/tcp/{port}")).collect();
        assert_eq!(checked_addresses(node, &many).len(), PEER_ADDRESSES_MAX);
    }

    #[test]
    fn identifiers_are_recognised_in_texts() {
        assert!(carries_identifier("cannot reach node 02e00e553b66aa"));
        assert!(carries_identifier("at /ip4/127.0.0.1/tcp/1"));
        assert!(carries_identifier("12D3KooWabc"));
        assert!(carries_identifier("see capstan://x"));
        assert!(!carries_identifier(PEER_UNREACHABLE));
        assert!(!carries_identifier("Cannot provide that"));
        assert!(!carries_identifier("deadbeef"));
    }
}
