//! What other nodes may ask of this one: the gateway, the bootstrap object
//! of every CapTP session between nodes, and serving the sessions peers
//! open to us.
//!
//! `provide(id)` returns the value of a formula of *this* node. Formula
//! ids are unguessable, so holding one is the authority to use its value;
//! ids of other nodes and unknown ids are refused with the same vague
//! error, so the gateway reveals nothing; blob formulas have random ids like
//! every other, so knowing a blob's bytes (and so its content hash) gives
//! no id to ask with. The rest is for introduced peers: `redeem` (an
//! invitation), `hello` (new addresses; from a node that is not a known
//! peer it is ignored), `deliver` (a package, with address hints for the
//! third nodes its references belong to, kept only from known peers) and
//! `request` (answered once resolved), and `release` (ids we gave the
//! peer that it let go of; see [`super::holds`]). Each session has its own gateway,
//! which knows the peer at the other end. How we reach peers, and which
//! addresses are kept, is [`super::peers`]'s. Any node may also redeem
//! one of our kernel's OCAP URLs (`redeemOcapUrl`, by its unguessable
//! token), and the kernel redeems other nodes' through their gateways
//! ([`kernel_url_comms`]).

use std::rc::{Rc, Weak};
use std::time::Duration;

use capstan_protocol::guards::DefaultGuards;
use capstan_protocol::patterns::M;
use capstan_protocol::{ErrorValue, Value, list, record};
use capstan_store::{FormulaId, NodeId, PEER_ADDRESS_MAX_LEN, PEER_ADDRESSES_MAX, RELEASE_BATCH_MAX};

use super::Daemon;
use super::agents::mail::Mailbox;
use super::formula::{Formula, Id};
use super::holds;
use super::message::{Content, StoredMessage, now_rfc3339};
use super::names::{hub_of_agent, parse_pet_name};
use super::peers::{self, AddressSource, MAX_HINTED_ADDRESSES, MAX_HINTED_NODES, log_refusal, remember_addresses};
use crate::kernel::KernelError;
use crate::kernel::ocap_url::{self, LocalFuture, OcapUrl, OcapUrlComms};
use crate::net::InboundStream;
use crate::runtime::args::{FromArgs, decode};
use crate::runtime::{E, reason_to_error, when};
use crate::runtime::{ExoClass, MethodResult};

/// The one error the gateway gives for any id it will not provide.
const CANNOT_PROVIDE: &str = "Cannot provide that";

/// The one error the gateway gives for a release it will not apply.
const CANNOT_RELEASE: &str = "Cannot release that";

/// The error every failed redemption gives: the invitation is gone once
/// used, and an unknown one looks the same.
const ALREADY_USED: &str = "This invitation was already used (or is not valid)";

/// A gateway's state: the daemon, and the peer at the other end of the
/// session.
#[derive(Clone)]
struct Gateway {
    daemon: Rc<Daemon>,
    remote: NodeId,
}

fn define_gateway() -> Result<ExoClass<Gateway>, ErrorValue> {
    ExoClass::<Gateway>::builder_without_init("EndoGateway")
        .interface(M::interface(
            "EndoGateway",
            [
                ("provide", M::call([M::string()]).returns(M::any())),
                ("hello", M::call([peer_addresses()]).returns_undefined()),
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
                    M::call([M::string(), M::string(), peer_addresses()]).returns_undefined(),
                ),
                (
                    "release",
                    M::call([M::string(), released_list(), released_list()]).returns_undefined(),
                ),
                (
                    "redeemOcapUrl",
                    M::call([M::string_limited(Some(record! { "stringLengthLimit" => 64.0 }))]).returns(M::any()),
                ),
            ],
            DefaultGuards::None,
        ))
        .method("provide", |cx, args| cx.state().provide(decode(args)?))
        .async_state_method("hello", |gateway, args| async move { gateway.hello(args).await })
        .async_state_method("deliver", |gateway, args| async move { gateway.deliver(args).await })
        .async_state_method("request", |gateway, args| async move { gateway.request(args).await })
        .async_state_method("redeem", |gateway, args| async move { gateway.redeem(args).await })
        .async_state_method("release", |gateway, args| async move { gateway.release(args).await })
        .method("redeemOcapUrl", |cx, args| cx.state().redeem_ocap_url(decode(args)?))
        .build()
}

/// The pattern of the addresses a peer reports: at most as many as are
/// kept, each no longer than a stored one.
fn peer_addresses() -> Value {
    M::array_of(
        M::string_limited(Some(record! { "stringLengthLimit" => PEER_ADDRESS_MAX_LEN as f64 })),
        Some(record! { "arrayLengthLimit" => PEER_ADDRESSES_MAX as f64 }),
    )
}

/// The pattern of a release's ids or counts: at most a batch of strings,
/// each no longer than an id.
fn released_list() -> Value {
    M::array_of(
        M::string_limited(Some(record! { "stringLengthLimit" => FORMULA_ID_LEN as f64 })),
        Some(record! { "arrayLengthLimit" => RELEASE_BATCH_MAX as f64 }),
    )
}

/// The length of a formula id's text: two halves of 64 hex digits and a
/// colon.
const FORMULA_ID_LEN: usize = 129;

thread_local! {
    static GATEWAY: Result<ExoClass<Gateway>, ErrorValue> = define_gateway();
}

/// A gateway for a session with `remote`: it provides this node's
/// formulas by id, and redeems invitations for that node only.
pub fn make_gateway(daemon: &Rc<Daemon>, remote: NodeId) -> Value {
    let gateway = Gateway {
        daemon: Rc::clone(daemon),
        remote,
    };
    match ExoClass::make_local(&GATEWAY, gateway) {
        Ok(value) => value,
        Err(error) => Value::error(error),
    }
}

/// How the kernel's OCAP URLs reach other nodes: by dialing the node a
/// URL names (at the addresses it carries) and asking its gateway.
struct KernelUrlComms {
    daemon: Weak<Daemon>,
}

/// How long the node an OCAP URL names has to answer a redemption.
const REDEEM_TIMEOUT: Duration = Duration::from_secs(20);

impl OcapUrlComms for KernelUrlComms {
    fn node_id(&self) -> NodeId {
        self.daemon
            .upgrade()
            .map_or(NodeId::from_bytes([0; 32]), |daemon| daemon.node_id)
    }

    fn addresses(&self) -> Vec<String> {
        self.daemon
            .upgrade()
            .map(|daemon| peers::own_addresses(&daemon))
            .unwrap_or_default()
    }

    fn redeem_remote(&self, url: &OcapUrl) -> LocalFuture<Result<Value, ErrorValue>> {
        let daemon = self.daemon.upgrade();
        let (node, token, addresses) = (url.node, ocap_url::token_hex(&url.token), url.addresses.clone());
        Box::pin(async move {
            let daemon = daemon.ok_or_else(|| ErrorValue::plain("the node is stopping"))?;
            // The URL says where its node listens; libp2p may dial there
            // (nothing is stored: the node does not become a known peer).
            peers::offer_addresses(&daemon, node, peers::checked_addresses(node, &addresses));
            let gateway = peers::gateway_of(&daemon, node);
            let redeemed = E(&gateway).call("redeemOcapUrl", list![token]);
            match tokio::time::timeout(REDEEM_TIMEOUT, when(&redeemed)).await {
                Ok(Ok(value)) => Ok(value),
                Ok(Err(reason)) => Err(reason_to_error(reason)),
                Err(_) => Err(ErrorValue::plain(format!(
                    "the node that issued it did not answer within {} s",
                    REDEEM_TIMEOUT.as_secs()
                ))),
            }
        })
    }
}

/// The kernel's way to other nodes for OCAP URLs, through `daemon`.
pub fn kernel_url_comms(daemon: &Rc<Daemon>) -> Rc<dyn OcapUrlComms> {
    Rc::new(KernelUrlComms {
        daemon: Rc::downgrade(daemon),
    })
}

/// Gives a stream a peer opened to us a CapTP session whose bootstrap is
/// our gateway.
pub fn serve_inbound(daemon: &Rc<Daemon>, stream: InboundStream) {
    let InboundStream { remote, reader, writer } = stream;
    let connection = peers::start_session(daemon, remote, reader, writer);
    tracing::debug!(peer = %remote, session = connection.id().0, "peer session opened to us");
    // The peer is back: releases we owe it need not wait for the retry.
    if holds::releases_wait_for(daemon, remote) {
        holds::send_releases(daemon);
    }
    daemon.vat.spawn(async move {
        let reason = connection.closed().await;
        tracing::info!(peer = %remote, session = connection.id().0, %reason, "peer session to us ended");
    });
}

/// `deliver`'s arguments: the recipient's and sender's handles, the
/// package (strings, names, ids) and the address hints, if given.
struct DeliverArgs {
    to: String,
    from: String,
    strings: Vec<String>,
    names: Vec<String>,
    ids: Vec<String>,
    hints: Option<Vec<Vec<String>>>,
}

impl FromArgs for DeliverArgs {
    fn from_args(args: Vec<Value>) -> Result<Self, ErrorValue> {
        let (to, from, strings, names, ids, hints) = decode(args)?;
        Ok(DeliverArgs {
            to,
            from,
            strings,
            names,
            ids,
            hints,
        })
    }
}

impl Gateway {
    /// `redeemOcapUrl(token)`: the kernel object one of our OCAP URLs
    /// names. Any node may ask (the token is the authority); a token we
    /// did not issue gets one vague answer, a revoked one says so.
    fn redeem_ocap_url(&self, (token,): (String,)) -> MethodResult {
        let refuse = |why: &str, answer: &str| {
            log_refusal(self.remote, "refused to redeem an OCAP URL", why);
            ErrorValue::plain(answer)
        };
        let token = ocap_url::parse_token(&token).ok_or_else(|| refuse("malformed", ocap_url::NOT_VALID))?;
        match self.daemon.kernel.redeem_local_token(&token) {
            Ok((_, value)) => Ok(value),
            Err(KernelError::NotFound(_)) => Err(refuse("unknown", ocap_url::NOT_VALID)),
            Err(error) => Err(refuse("revoked or unreadable", &error.to_string())),
        }
    }

    /// `provide(id)`.
    fn provide(&self, (id,): (String,)) -> MethodResult {
        let daemon = &self.daemon;
        let refuse = |why: &str| {
            log_refusal(self.remote, "refused to provide an id", why);
            ErrorValue::plain(CANNOT_PROVIDE)
        };
        let id: FormulaId = id.parse().map_err(|_| refuse("malformed"))?;
        if id.node() != daemon.node_id {
            return Err(refuse("of another node"));
        }
        match daemon.formula(id) {
            Err(_) => Err(refuse("unknown")),
            Ok(Formula::Invitation { .. }) => Err(refuse("an invitation")),
            Ok(_) => Ok(daemon.provide(id)),
        }
    }

    /// `hello(addresses)`: where the peer listens now. Kept only for a
    /// known peer; a stranger's hello is ignored (and logged), so it can
    /// neither become a known peer nor make us dial addresses it chose.
    async fn hello(self, (addresses,): (Vec<String>,)) -> MethodResult {
        let kept = remember_addresses(&self.daemon, self.remote, addresses, AddressSource::Peer).await?;
        if !kept {
            log_refusal(
                self.remote,
                "hello from a node that is not a known peer; ignored",
                "a stranger",
            );
        }
        Ok(Value::Undefined)
    }

    /// `redeem(invitation, acceptorHandle, acceptorAddresses)`: uses up
    /// the invitation and names the acceptor's handle as the invitation
    /// says.
    async fn redeem(self, (invitation, acceptor_handle, addresses): (String, String, Vec<String>)) -> MethodResult {
        let (daemon, remote) = (&self.daemon, self.remote);
        let used = || ErrorValue::plain(ALREADY_USED);
        let invitation: FormulaId = invitation.parse().map_err(|_| used())?;
        let acceptor_handle: FormulaId = acceptor_handle
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
        let pet_store = hub_of_agent(daemon, host.get()?)?.pet_store;
        let guest_name = parse_pet_name(&guest_name)?;
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
            .await?;
        if !redeemed {
            return Err(used());
        }
        // The invitation the user made introduces the acceptor.
        remember_addresses(daemon, remote, addresses, AddressSource::Introduction).await?;
        tracing::info!(peer = %remote, "an invitation was redeemed");
        Ok(Value::Undefined)
    }

    /// `deliver(to, from, strings, names, ids, hints?)`: a package for one
    /// of this node's handles, from one of the peer's; `hints` say where
    /// the other nodes its references belong to can be reached.
    async fn deliver(
        self,
        DeliverArgs {
            to,
            from,
            strings,
            names,
            ids,
            hints,
        }: DeliverArgs,
    ) -> MethodResult {
        let daemon = &self.daemon;
        let (to, from) = self.mail_handles(&to, &from, ("sender", "sending"))?;
        let mut parsed_ids = Vec::with_capacity(ids.len());
        for id in ids {
            let id: FormulaId = id
                .parse()
                .map_err(|_| ErrorValue::plain("a reference's id is not valid"))?;
            parsed_ids.push(id.into());
        }
        let ids = parsed_ids;
        if strings.len() != names.len() + 1 || ids.len() != names.len() {
            return Err(ErrorValue::type_error(
                "a package needs one more string than names, and an id per name",
            ));
        }
        for name in &names {
            parse_pet_name(name)?;
        }
        let message = StoredMessage {
            date: now_rfc3339(),
            from: from.into(),
            to: to.into(),
            content: Content::Package {
                strings,
                names,
                ids: ids.clone(),
            },
        };
        // Nothing of a package is kept, its hints neither, unless the
        // sender was introduced and within its quotas.
        let admitted =
            Mailbox::admit_from_peer(daemon, self.remote, message).map_err(|error| self.refused_mail(error))?;
        self.remember_hints(hints.unwrap_or_default(), &ids).await;
        Mailbox::deliver_from_peer(daemon, self.remote, admitted)
            .await
            .map_err(|error| self.refused_mail(error))
    }

    /// Remembers the address hints of a package, for the nodes its
    /// references point at (and no others): `[[node, address...]...]`.
    /// Only a known peer's hints are kept: its package introduces those
    /// nodes, which become known peers.
    async fn remember_hints(&self, hints: Vec<Vec<String>>, ids: &[Id]) {
        let (daemon, remote) = (&self.daemon, self.remote);
        if hints.is_empty() {
            return;
        }
        let sender_is_known = daemon
            .store
            .read()
            .and_then(|snapshot| snapshot.get_peer(remote))
            .is_ok_and(|record| record.is_some());
        if !sender_is_known {
            log_refusal(
                remote,
                "address hints from a node that is not a known peer; ignored",
                "a stranger",
            );
            return;
        }
        let referenced: Vec<NodeId> = ids.iter().filter_map(|id| id.get().ok()).map(|id| id.node()).collect();
        for entry in hints.into_iter().take(MAX_HINTED_NODES) {
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
            if let Err(error) = remember_addresses(daemon, node, addresses, AddressSource::Introduction).await {
                tracing::info!(peer = %node, from = %remote, error = %error.message, "cannot keep addresses a peer gave");
            }
        }
    }

    /// `request(to, from, description)`: a request from one of the peer's
    /// handles to one of ours, answered with the id of the value it is
    /// resolved with.
    async fn request(self, (to, from, description): (String, String, String)) -> MethodResult {
        let (to, from) = self.mail_handles(&to, &from, ("requester", "requesting"))?;
        let id = Mailbox::request_from_peer(&self.daemon, self.remote, to, from, description).await?;
        // The answer's id leaves: the requester holds it from now.
        holds::give(&self.daemon, self.remote, &[id]).await?;
        Ok(Value::from(id.to_string()))
    }

    /// `release(batch, ids, counts)`: the peer lets go of ids we gave it,
    /// each `counts[i]` times (decimal strings). A batch is applied once:
    /// one numbered no higher than the last applied is acknowledged and
    /// ignored. Only the peer's own holds change; anything malformed gets
    /// one vague refusal.
    async fn release(self, (batch, ids, counts): (String, Vec<String>, Vec<String>)) -> MethodResult {
        let remote = self.remote;
        let refuse = |why: &str| {
            log_refusal(remote, "refused a release", why);
            ErrorValue::plain(CANNOT_RELEASE)
        };
        let batch: u64 = batch
            .parse()
            .ok()
            .filter(|number| *number > 0)
            .ok_or_else(|| refuse("a malformed batch number"))?;
        if ids.len() != counts.len() || ids.len() > RELEASE_BATCH_MAX {
            return Err(refuse("ids and counts do not match"));
        }
        let mut released = Vec::with_capacity(ids.len());
        for (id, count) in ids.iter().zip(&counts) {
            let id: FormulaId = id.parse().map_err(|_| refuse("a malformed id"))?;
            let count: u64 = count
                .parse()
                .ok()
                .filter(|count| *count > 0)
                .ok_or_else(|| refuse("a malformed count"))?;
            released.push((id, count));
        }
        // Nothing to apply (a stranger, a batch sent again): answered
        // without a commit, so repeating it costs no write.
        let snapshot = self.daemon.store.read()?;
        if batch <= snapshot.hold_releases_applied(remote)? || !snapshot.holds_any(remote)? {
            return Ok(Value::Undefined);
        }
        drop(snapshot);
        let applied = self
            .daemon
            .store
            .transact(move |tx| tx.apply_hold_releases(remote, batch, &released))
            .await?;
        tracing::debug!(peer = %remote, batch, applied, "a peer released ids");
        // Released formulas may now be unreachable.
        if applied {
            self.daemon.schedule_collection();
        }
        Ok(Value::Undefined)
    }

    /// Logs why mail from the peer was refused, and passes the error on.
    fn refused_mail(&self, error: ErrorValue) -> ErrorValue {
        log_refusal(self.remote, "refused mail from a peer", &error.message);
        error
    }

    /// The handles of a message from the peer: `from` must be one of the
    /// peer's, `to` one of ours. `role` names the sender in the errors
    /// (`("sender", "sending")`); a bad `to` gets the one vague refusal.
    fn mail_handles(&self, to: &str, from: &str, role: (&str, &str)) -> Result<(FormulaId, FormulaId), ErrorValue> {
        let (who, doing) = role;
        let refuse = || ErrorValue::plain("Cannot deliver to that");
        let to: FormulaId = to.parse().map_err(|_| refuse())?;
        let from: FormulaId = from
            .parse()
            .map_err(|_| ErrorValue::plain(format!("the {who}'s handle id is not valid")))?;
        if from.node() != self.remote {
            return Err(ErrorValue::plain(format!(
                "the {who}'s handle must be of the {doing} node"
            )));
        }
        if to.node() != self.daemon.node_id || !matches!(self.daemon.formula(to), Ok(Formula::Handle { .. })) {
            return Err(refuse());
        }
        Ok((to, from))
    }
}
