//! What other nodes may ask of this one, and the sessions with them.
//!
//! - The **gateway** is the bootstrap object of every CapTP session
//!   between nodes. `provide(id)` returns the value of a formula of *this*
//!   node. Formula ids are unguessable, so holding one is the authority to
//!   use its value; ids of other nodes and unknown ids are refused with the
//!   same vague error, so the gateway reveals nothing. The rest is for
//!   introduced peers: `redeem` (an invitation), `hello` (new addresses),
//!   `deliver` (a package, with address hints for the third nodes its
//!   references belong to) and `request` (answered once resolved).
//! - [`PeerSessions`]: one outbound session per peer, opened on first use
//!   (addresses from the known-peers store) and dropped when it closes, so
//!   the next use reconnects. [`provide_remote`] is how
//!   [`Daemon::provide`] gets the value of another node's formula;
//!   [`deliver_remote`] and [`request_remote`] carry mail to a peer's
//!   agents.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use capstan_protocol::captp::Limits;
use capstan_protocol::guards::DefaultGuards;
use capstan_protocol::patterns::M;
use capstan_protocol::{ErrorValue, Value, list};
use capstan_store::{FormulaId, NodeId, PeerRecord};

use super::formula::{Formula, Id};
use super::mail::{Content, StoredMessage, now_rfc3339};
use super::names::{Hub, hub_of_agent, parse_path, parse_pet_name, store_error};
use super::{Daemon, reason_to_error};
use std::pin::Pin;
use std::task::Poll;

use tokio::io::{AsyncRead, ReadBuf};

use crate::net::{InboundStream, Multiaddr, StreamReader};
use crate::runtime::{E, Exo, PromiseKit, connect, when};

/// The one error the gateway gives for any id it will not provide.
const CANNOT_PROVIDE: &str = "Cannot provide that";

/// How long a call for a remote formula's value may take before it fails
/// naming the peer.
const REMOTE_PROVIDE_TIMEOUT: Duration = Duration::from_secs(20);

/// The live sessions with other nodes and this node's gateway.
#[derive(Default)]
pub struct PeerSessions {
    /// Each peer's gateway (a promise while the session is being opened).
    gateways: RefCell<HashMap<NodeId, Value>>,
}

/// A gateway for a session with `remote`: it provides this node's
/// formulas by id, and redeems invitations for that node only.
pub fn make_gateway(daemon: &Rc<Daemon>, remote: NodeId) -> Value {
    let (d1, d2, d3, d4, d5) = (
        Rc::clone(daemon),
        Rc::clone(daemon),
        Rc::clone(daemon),
        Rc::clone(daemon),
        Rc::clone(daemon),
    );
    let made = Exo::new("EndoGateway")
        .interface(M::interface(
            "EndoGateway",
            [
                ("provide", M::call([M::string()]).returns(M::any())),
                ("hello", M::call([M::array_of(M::string(), None)]).returns_undefined()),
                (
                    "deliver",
                    M::call([
                        M::string(),
                        M::string(),
                        M::array_of(M::string(), None),
                        M::array_of(M::string(), None),
                        M::array_of(M::string(), None),
                    ])
                    .optional([M::array_of(M::array_of(M::string(), None), None)])
                    .returns_undefined(),
                ),
                (
                    "request",
                    M::call([M::string(), M::string(), M::string()]).returns(M::string()),
                ),
                (
                    "redeem",
                    M::call([M::string(), M::string(), M::array_of(M::string(), None)]).returns_undefined(),
                ),
            ],
            DefaultGuards::None,
        ))
        .method("provide", move |_, args| {
            let text = args.first().and_then(Value::as_str).unwrap_or_default();
            let id: FormulaId = text.parse().map_err(|_| ErrorValue::plain(CANNOT_PROVIDE))?;
            if id.node() != d1.node_id || d1.formula(id).is_err() {
                return Err(ErrorValue::plain(CANNOT_PROVIDE));
            }
            if matches!(d1.formula(id), Ok(Formula::Invitation { .. })) {
                return Err(ErrorValue::plain(CANNOT_PROVIDE));
            }
            Ok(d1.provide(id))
        })
        .async_method("hello", move |_, args| {
            let daemon = Rc::clone(&d4);
            async move {
                remember_addresses(&daemon, remote, strings_of(args.first())).await?;
                Ok(Value::Undefined)
            }
        })
        .async_method("deliver", move |_, args| {
            let daemon = Rc::clone(&d3);
            async move { deliver(&daemon, remote, &args).await }
        })
        .async_method("request", move |_, args| {
            let daemon = Rc::clone(&d5);
            async move { request(&daemon, remote, &args).await }
        })
        .async_method("redeem", move |_, args| {
            let daemon = Rc::clone(&d2);
            async move { redeem(&daemon, remote, &args).await }
        })
        .make();
    match made {
        Ok(value) => value,
        Err(error) => Value::error(error),
    }
}

/// Gives a stream a peer opened to us a CapTP session whose bootstrap is
/// our gateway.
pub fn serve_inbound(daemon: &Rc<Daemon>, stream: InboundStream) {
    let InboundStream { remote, reader, writer } = stream;
    let connection = connect(
        &daemon.vat,
        PeerReader::new(reader, remote),
        writer,
        Some(make_gateway(daemon, remote)),
        Limits::default(),
    );
    tracing::debug!(peer = %remote, session = connection.id().0, "peer session opened to us");
    note_seen(daemon, remote);
    daemon.vat.spawn(async move {
        let reason = connection.closed().await;
        tracing::info!(peer = %remote, session = connection.id().0, %reason, "peer session to us ended");
    });
}

/// Records when a known peer was last seen. Nodes we have not been
/// introduced to (any node may open a stream to us) are not recorded, so
/// strangers cannot grow the known-peers table.
fn note_seen(daemon: &Rc<Daemon>, node: NodeId) {
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

async fn open_session(daemon: &Rc<Daemon>, node: NodeId) -> Result<crate::runtime::ConnectionHandle, String> {
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
    let connection = connect(
        &daemon.vat,
        PeerReader::new(reader, node),
        writer,
        Some(make_gateway(daemon, node)),
        Limits::default(),
    );
    tracing::info!(peer = %node, session = connection.id().0, "peer session opened");
    note_seen(daemon, node);
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

/// The error every failed redemption gives: the invitation is gone once
/// used, and an unknown one looks the same.
const ALREADY_USED: &str = "This invitation was already used (or is not valid)";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Percent-encodes a query value (everything but unreserved characters).
fn url_encode(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            encoded.push(byte as char);
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

fn url_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        match bytes[index] {
            b'%' => {
                let pair = text.get(index + 1..index + 3)?;
                decoded.push(u8::from_str_radix(pair, 16).ok()?);
                index += 3;
            }
            b'+' => {
                decoded.push(b' ');
                index += 1;
            }
            other => {
                decoded.push(other);
                index += 1;
            }
        }
    }
    String::from_utf8(decoded).ok()
}

/// This node's addresses as strings.
fn own_addresses(daemon: &Daemon) -> Vec<String> {
    daemon
        .network
        .listen_addresses()
        .iter()
        .map(ToString::to_string)
        .collect()
}

/// `host.invite(guestName)`: makes an invitation and returns its locator,
/// `capstan://{node}/?id={number}&type=invitation&from={handle}&at={addr}...`.
pub async fn invite(
    daemon: &Rc<Daemon>,
    hub: &Hub,
    host: FormulaId,
    handle: FormulaId,
    args: &[Value],
) -> Result<Value, ErrorValue> {
    let guest_name = args.first().and_then(Value::as_str).unwrap_or_default().to_string();
    let pet = parse_pet_name(&guest_name)?;
    if hub.lookup_name(daemon, pet.as_str())?.is_some() {
        return Err(ErrorValue::plain(format!("the name {guest_name} is already taken")));
    }
    let id = daemon
        .make_formula(&Formula::Invitation {
            host: host.into(),
            guest_name,
        })
        .await
        .map_err(|error| ErrorValue::plain(error.to_string()))?;
    let mut locator = format!(
        "capstan://{}/?id={}&type=invitation&from={}",
        daemon.node_id,
        hex(id.number()),
        hex(handle.number())
    );
    for address in own_addresses(daemon) {
        locator.push_str("&at=");
        locator.push_str(&url_encode(&address));
    }
    Ok(Value::from(locator))
}

/// A parsed invitation locator.
struct Invitation {
    node: NodeId,
    invitation: FormulaId,
    inviter_handle: FormulaId,
    addresses: Vec<String>,
}

fn parse_locator(text: &str) -> Result<Invitation, ErrorValue> {
    let bad = |why: &str| ErrorValue::plain(format!("not an invitation locator: {why}"));
    let rest = text
        .trim()
        .strip_prefix("capstan://")
        .ok_or_else(|| bad("it must start with capstan://"))?;
    let (node_text, query) = rest.split_once("/?").ok_or_else(|| bad("no query"))?;
    let node: NodeId = node_text.parse().map_err(|_| bad("bad node id"))?;
    let (mut number, mut from, mut kind, mut addresses) = (None, None, None, Vec::new());
    for pair in query.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = url_decode(value).ok_or_else(|| bad("bad percent-encoding"))?;
        match key {
            "id" => number = Some(value),
            "from" => from = Some(value),
            "type" => kind = Some(value),
            "at" => addresses.push(value),
            _ => {}
        }
    }
    if kind.as_deref() != Some("invitation") {
        return Err(bad("its type is not invitation"));
    }
    let id_of = |number: Option<String>, what: &str| -> Result<FormulaId, ErrorValue> {
        let number = number.ok_or_else(|| bad(&format!("no {what}")))?;
        format!("{number}:{node}")
            .parse()
            .map_err(|_| bad(&format!("bad {what}")))
    };
    Ok(Invitation {
        node,
        invitation: id_of(number, "id")?,
        inviter_handle: id_of(from, "from")?,
        addresses,
    })
}

/// Adds addresses to what is known about `node`.
async fn remember_addresses(daemon: &Daemon, node: NodeId, addresses: Vec<String>) -> Result<(), ErrorValue> {
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
        .map_err(store_error)
}

/// `host.accept(locator, name)`: redeems an invitation on the inviter's
/// node and names the inviter's handle `name`.
pub async fn accept(daemon: &Rc<Daemon>, hub: &Hub, handle: FormulaId, args: &[Value]) -> Result<Value, ErrorValue> {
    let invitation = parse_locator(args.first().and_then(Value::as_str).unwrap_or_default())?;
    if invitation.node == daemon.node_id {
        return Err(ErrorValue::plain("this invitation is from this node"));
    }
    let (parent, name) = hub.resolve_parent(daemon, &parse_path(&args[1])?)?;
    let name = parse_pet_name(&name)?;
    if parent.lookup_name(daemon, name.as_str())?.is_some() {
        return Err(ErrorValue::plain(format!(
            "the name {} is already taken",
            name.as_str()
        )));
    }
    remember_addresses(daemon, invitation.node, invitation.addresses).await?;
    let peer = short_node(&invitation.node);
    let gateway = gateway_of(daemon, invitation.node);
    let redeemed = E(&gateway).call(
        "redeem",
        list![
            invitation.invitation.to_string(),
            handle.to_string(),
            Value::array(own_addresses(daemon).into_iter().map(Value::from))
        ],
    );
    match tokio::time::timeout(REMOTE_PROVIDE_TIMEOUT, when(&redeemed)).await {
        Ok(Ok(_)) => {}
        Ok(Err(reason)) => return Err(reason_to_error(reason)),
        Err(_) => {
            return Err(ErrorValue::plain(format!(
                "peer {peer} did not answer within {} s",
                REMOTE_PROVIDE_TIMEOUT.as_secs()
            )));
        }
    }
    daemon
        .store
        .write_name(parent.pet_store, name, invitation.inviter_handle)
        .await
        .map_err(store_error)?;
    Ok(Value::Undefined)
}

/// `gateway.redeem(invitation, acceptorHandle, acceptorAddresses)`, from
/// the session with `remote`: uses up the invitation and names the
/// acceptor's handle as the invitation says.
async fn redeem(daemon: &Rc<Daemon>, remote: NodeId, args: &[Value]) -> Result<Value, ErrorValue> {
    let used = || ErrorValue::plain(ALREADY_USED);
    let text = |index: usize| args.get(index).and_then(Value::as_str).unwrap_or_default().to_string();
    let invitation: FormulaId = text(0).parse().map_err(|_| used())?;
    let acceptor_handle: FormulaId = text(1)
        .parse()
        .map_err(|_| ErrorValue::plain("the acceptor's handle id is not valid"))?;
    if acceptor_handle.node() != remote {
        return Err(ErrorValue::plain("the acceptor's handle must be of the accepting node"));
    }
    if invitation.node() != daemon.node_id {
        return Err(used());
    }
    let Ok(Formula::Invitation { host, guest_name }) = daemon.formula(invitation) else {
        return Err(used());
    };
    let host = host.get().map_err(|error| ErrorValue::plain(error.to_string()))?;
    let pet_store = hub_of_agent(daemon, host)?.pet_store;
    let guest_name = parse_pet_name(&guest_name)?;
    let addresses: Vec<String> = args
        .get(2)
        .and_then(Value::as_array)
        .unwrap_or_default()
        .iter()
        .filter_map(|address| address.as_str().map(str::to_string))
        .collect();
    let redeemed = daemon
        .store
        .transact(move |tx| {
            // Removing the invitation is what makes it single-use.
            if !tx.remove_formula(invitation)? {
                return Ok(false);
            }
            tx.write_name(pet_store, &guest_name, acceptor_handle)?;
            Ok(true)
        })
        .await
        .map_err(store_error)?;
    if !redeemed {
        return Err(used());
    }
    remember_addresses(daemon, remote, addresses).await?;
    tracing::info!(peer = %remote, "an invitation was redeemed");
    Ok(Value::Undefined)
}

fn strings_of(value: Option<&Value>) -> Vec<String> {
    value
        .and_then(Value::as_array)
        .unwrap_or_default()
        .iter()
        .filter_map(|item| item.as_str().map(str::to_string))
        .collect()
}

/// Sends a package to a peer's handle, through the peer's gateway.
pub async fn deliver_remote(daemon: &Rc<Daemon>, message: &StoredMessage) -> Result<Value, ErrorValue> {
    let Content::Package { strings, names, ids } = &message.content else {
        return Err(ErrorValue::plain("only packages can be sent to a peer"));
    };
    let to = message.to.get().map_err(|error| ErrorValue::plain(error.to_string()))?;
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
const MAX_HINTED_NODES: usize = 64;
const MAX_HINTED_ADDRESSES: usize = 16;

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

/// Remembers the address hints of a package from `remote`, for the nodes
/// its references point at (and no others): `[[node, address...]...]`.
async fn remember_hints(daemon: &Daemon, remote: NodeId, hints: Option<&Value>, ids: &[Id]) {
    let referenced: Vec<NodeId> = ids.iter().filter_map(|id| id.get().ok()).map(|id| id.node()).collect();
    let entries = hints.and_then(Value::as_array).unwrap_or_default();
    for entry in entries.iter().take(MAX_HINTED_NODES) {
        let entry = strings_of(Some(entry));
        let Some((node, addresses)) = entry.split_first() else {
            continue;
        };
        let Ok(node) = node.parse::<NodeId>() else { continue };
        if node == daemon.node_id || node == remote || !referenced.contains(&node) {
            continue;
        }
        let addresses: Vec<String> = addresses.iter().take(MAX_HINTED_ADDRESSES).cloned().collect();
        if addresses.is_empty() {
            continue;
        }
        if let Err(error) = remember_addresses(daemon, node, addresses).await {
            tracing::info!(peer = %node, from = %remote, error = %error.message, "cannot keep addresses a peer gave");
        }
    }
}

/// `gateway.deliver(to, from, strings, names, ids, hints?)` from the
/// session with `remote`: a package for one of this node's handles, from
/// one of the remote node's; `hints` say where the other nodes its
/// references belong to can be reached.
async fn deliver(daemon: &Rc<Daemon>, remote: NodeId, args: &[Value]) -> Result<Value, ErrorValue> {
    let text = |index: usize| args.get(index).and_then(Value::as_str).unwrap_or_default().to_string();
    let refuse = || ErrorValue::plain("Cannot deliver to that");
    let to: FormulaId = text(0).parse().map_err(|_| refuse())?;
    let from: FormulaId = text(1)
        .parse()
        .map_err(|_| ErrorValue::plain("the sender's handle id is not valid"))?;
    if from.node() != remote {
        return Err(ErrorValue::plain("the sender's handle must be of the sending node"));
    }
    if to.node() != daemon.node_id || !matches!(daemon.formula(to), Ok(Formula::Handle { .. })) {
        return Err(refuse());
    }
    let (strings, names) = (strings_of(args.get(2)), strings_of(args.get(3)));
    let mut ids = Vec::new();
    for id in strings_of(args.get(4)) {
        let id: FormulaId = id
            .parse()
            .map_err(|_| ErrorValue::plain("a reference's id is not valid"))?;
        ids.push(id.into());
    }
    if strings.len() != names.len() + 1 || ids.len() != names.len() {
        return Err(ErrorValue::type_error(
            "a package needs one more string than names, and an id per name",
        ));
    }
    for name in &names {
        parse_pet_name(name)?;
    }
    remember_hints(daemon, remote, args.get(5), &ids).await;
    let message = StoredMessage {
        date: now_rfc3339(),
        from: from.into(),
        to: to.into(),
        content: Content::Package { strings, names, ids },
    };
    super::mail::Mailbox::deliver_from_peer(daemon, message).await
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

/// `gateway.request(to, from, description)` from the session with
/// `remote`: a request from one of the remote node's handles to one of
/// ours, answered with the id of the value it is resolved with.
async fn request(daemon: &Rc<Daemon>, remote: NodeId, args: &[Value]) -> Result<Value, ErrorValue> {
    let text = |index: usize| args.get(index).and_then(Value::as_str).unwrap_or_default().to_string();
    let refuse = || ErrorValue::plain("Cannot deliver to that");
    let to: FormulaId = text(0).parse().map_err(|_| refuse())?;
    let from: FormulaId = text(1)
        .parse()
        .map_err(|_| ErrorValue::plain("the requester's handle id is not valid"))?;
    if from.node() != remote {
        return Err(ErrorValue::plain(
            "the requester's handle must be of the requesting node",
        ));
    }
    if to.node() != daemon.node_id || !matches!(daemon.formula(to), Ok(Formula::Handle { .. })) {
        return Err(refuse());
    }
    let id = super::mail::Mailbox::request_from_peer(daemon, to, from, text(2)).await?;
    Ok(Value::from(id.to_string()))
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
