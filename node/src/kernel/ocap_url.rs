//! OCAP URLs: a URL that makes one kernel object reachable from another
//! node, in ocap-kernel's shape:
//!
//! ```text
//! ocap:{token}@{node id},{address},{address}...
//! ```
//!
//! - `token` is 64 hex digits: 32 random bytes the issuing node keeps in
//!   its store beside the kref they name. Holding the URL is the
//!   authority to reach the object; it cannot be guessed, and it says
//!   nothing of the kref.
//! - `node id` is the issuing node's id (64 hex digits), and the
//!   addresses are where it listens (libp2p multiaddrs), so a node that
//!   never met it can dial it.
//!
//! Redeeming dials the issuing node and asks its gateway for the object
//! by token (`redeemOcapUrl`); the redeeming kernel gives the presence a
//! kref of its own. A URL of this node is redeemed without the network.
//! Revoking the object revokes every URL for it: redemption is refused
//! and the delivery gate refuses every message, whoever holds the
//! presence. Vats get the same through the `ocapURLIssuerService` and
//! `ocapURLRedemptionService` kernel services.
//!
//! How the kernel reaches other nodes is the node's business: it hands
//! the kernel an [`OcapUrlComms`].

use std::cell::RefCell;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::rc::{Rc, Weak};

use capstan_protocol::guards::DefaultGuards;
use capstan_protocol::patterns::M;
use capstan_protocol::{ErrorValue, Value};
use capstan_store::{Kref, KrefKind, NodeId, PEER_ADDRESS_MAX_LEN, PEER_ADDRESSES_MAX};

use super::config::{self, KrefInfo};
use super::krefs::parse_kref;
use super::{Kernel, KernelError};
use crate::runtime::args::decode;
use crate::runtime::{Behavior, Exo, Invocation, Message, MethodResult, Settlement};

/// The kernel service vats issue OCAP URLs with.
pub const ISSUER_SERVICE: &str = "ocapURLIssuerService";
/// The kernel service vats redeem OCAP URLs with.
pub const REDEMPTION_SERVICE: &str = "ocapURLRedemptionService";

/// The longest URL read: a token, a node id and the most addresses kept.
pub const MAX_URL_LEN: usize = 5 + 64 + 1 + 64 + PEER_ADDRESSES_MAX * (PEER_ADDRESS_MAX_LEN + 1);

/// The one answer to a token this node did not issue (or a malformed
/// one): it reveals nothing about the tokens that exist.
pub const NOT_VALID: &str = "this OCAP URL is not valid: it was not issued by the node it names, or it was forged";

/// The answer to a token whose object was revoked.
pub const REVOKED: &str = "this OCAP URL was revoked: its object was revoked on the node that issued it";

const SHAPE: &str = "an OCAP URL looks like ocap:TOKEN@NODE,ADDRESS,... (TOKEN and NODE 64 hex digits each)";

/// An OCAP URL, read or to write.
#[derive(Clone, PartialEq, Eq)]
pub struct OcapUrl {
    pub token: [u8; 32],
    pub node: NodeId,
    pub addresses: Vec<String>,
}

/// The token is the authority: it is never shown in debug output.
impl fmt::Debug for OcapUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OcapUrl")
            .field("node", &self.node.to_string())
            .field("addresses", &self.addresses)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for OcapUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ocap:{}@{}", token_hex(&self.token), self.node)?;
        for address in &self.addresses {
            write!(f, ",{address}")?;
        }
        Ok(())
    }
}

/// A token as 64 lowercase hex digits.
pub fn token_hex(token: &[u8; 32]) -> String {
    token.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// A token from 64 lowercase hex digits.
pub fn parse_token(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 {
        return None;
    }
    let mut token = [0u8; 32];
    for (slot, pair) in token.iter_mut().zip(text.as_bytes().chunks(2)) {
        let digit = |byte: u8| match byte {
            b'0'..=b'9' => Some(byte - b'0'),
            b'a'..=b'f' => Some(byte - b'a' + 10),
            _ => None,
        };
        *slot = (digit(pair[0])? << 4) | digit(pair[1])?;
    }
    Some(token)
}

impl std::str::FromStr for OcapUrl {
    type Err = KernelError;

    /// Reads a URL from anyone: bounded, and every part checked. The
    /// errors never repeat the token.
    fn from_str(text: &str) -> Result<OcapUrl, KernelError> {
        let bad = |why: &str| KernelError::Failed(format!("not an OCAP URL: {why}; {SHAPE}"));
        if text.len() > MAX_URL_LEN {
            return Err(bad(&format!("it is longer than {MAX_URL_LEN} bytes")));
        }
        let rest = text
            .strip_prefix("ocap:")
            .ok_or_else(|| bad("it does not start with ocap:"))?;
        let (token, location) = rest.split_once('@').ok_or_else(|| bad("it has no @"))?;
        let token = parse_token(token).ok_or_else(|| bad("its token is not 64 lowercase hex digits"))?;
        let mut parts = location.split(',');
        let node: NodeId = parts
            .next()
            .unwrap_or_default()
            .parse()
            .map_err(|_| bad("its node id is not 64 lowercase hex digits"))?;
        let addresses: Vec<String> = parts.map(str::to_string).collect();
        if addresses.len() > PEER_ADDRESSES_MAX {
            return Err(bad(&format!("it has more than {PEER_ADDRESSES_MAX} addresses")));
        }
        for address in &addresses {
            if address.is_empty() || address.len() > PEER_ADDRESS_MAX_LEN || !address.starts_with('/') {
                return Err(bad("an address is not a multiaddr (like /ip4/192.0.2.1/tcp/4001)"));
            }
            if address.chars().any(|c| c.is_control() || c.is_whitespace()) {
                return Err(bad("an address holds spaces or control characters"));
            }
        }
        Ok(OcapUrl { token, node, addresses })
    }
}

/// A future that lives on the node's thread.
pub type LocalFuture<T> = Pin<Box<dyn Future<Output = T>>>;

/// How a kernel in a node reaches other nodes for OCAP URLs.
pub trait OcapUrlComms {
    /// This node's id, put in the URLs it issues.
    fn node_id(&self) -> NodeId;
    /// Where this node listens, put in the URLs it issues.
    fn addresses(&self) -> Vec<String>;
    /// Dials `url`'s node and asks it for the object its token names.
    fn redeem_remote(&self, url: &OcapUrl) -> LocalFuture<Result<Value, ErrorValue>>;
}

impl Kernel {
    /// Lets the kernel issue and redeem OCAP URLs through the node.
    pub fn set_ocap_url_comms(&self, comms: Rc<dyn OcapUrlComms>) {
        *self.url_comms.borrow_mut() = Some(comms);
    }

    fn url_comms(&self) -> Result<Rc<dyn OcapUrlComms>, KernelError> {
        self.url_comms
            .borrow()
            .clone()
            .ok_or_else(|| KernelError::Failed("this kernel has no networking, so it has no OCAP URLs".to_string()))
    }

    /// An OCAP URL for the object `kref` names; each call makes a new one.
    pub async fn issue_ocap_url(&self, kref: &str) -> Result<String, KernelError> {
        let comms = self.url_comms()?;
        let kref = parse_kref(kref)?;
        if kref.kind == KrefKind::Promise {
            return Err(KernelError::Failed(format!(
                "{kref} is a kernel promise; OCAP URLs are for objects"
            )));
        }
        let Some(bytes) = self.store.read()?.get_kref(kref)? else {
            return Err(KernelError::NotFound(format!("there is no kernel object {kref}")));
        };
        if let KrefInfo::Gone { reason } = config::decode_record(&bytes, &format!("kref {kref}"))? {
            return Err(KernelError::Failed(format!("{kref} no longer exists: {reason}")));
        }
        if self.revoked.borrow().contains(&kref) {
            return Err(KernelError::Failed(format!(
                "{kref} was revoked: it cannot be given out any more"
            )));
        }
        let token = self.store.transact(move |tx| tx.issue_ocap_token(kref)).await?;
        tracing::info!(%kref, "OCAP URL issued");
        Ok(OcapUrl {
            token,
            node: comms.node_id(),
            addresses: comms.addresses(),
        }
        .to_string())
    }

    /// The object one of this node's OCAP URL tokens names (for the
    /// gateway, and for URLs of this node).
    pub fn redeem_local_token(&self, token: &[u8; 32]) -> Result<(Kref, Value), KernelError> {
        let Some(kref) = self.store.read()?.ocap_token_kref(token)? else {
            return Err(KernelError::NotFound(NOT_VALID.to_string()));
        };
        if self.revoked.borrow().contains(&kref) {
            return Err(KernelError::Failed(REVOKED.to_string()));
        }
        Ok((kref, self.value_of_kref(kref)?))
    }

    /// The object `url` names, from its node.
    pub async fn redeem_ocap_url_value(&self, url: &str) -> Result<Value, KernelError> {
        let url: OcapUrl = url.parse()?;
        let comms = self.url_comms()?;
        if url.node == comms.node_id() {
            return Ok(self.redeem_local_token(&url.token)?.1);
        }
        comms
            .redeem_remote(&url)
            .await
            .map_err(|error| KernelError::Failed(format!("cannot redeem the OCAP URL: {}", error.message)))
    }

    /// Redeems `url` and answers a kref for its object in this kernel
    /// (the object's own kref for a URL of this node). Another node's URL
    /// keeps its kref, bound to a [`Redeemed`] link that redeems the URL
    /// again whenever the session it was reached through has ended (its
    /// node restarted, say), and after a restart of this node.
    pub async fn redeem_ocap_url(&self, url: &str) -> Result<String, KernelError> {
        let parsed: OcapUrl = url.parse()?;
        let comms = self.url_comms()?;
        if parsed.node == comms.node_id() {
            return Ok(self.redeem_local_token(&parsed.token)?.0.to_string());
        }
        // Stored by its own text, so one URL is one kref.
        let url = parsed.to_string();
        let value = self.redeem_ocap_url_value(&url).await?;
        let known = self.store.read()?.redeemed_url_kref(&url)?;
        let kref = match known {
            Some(kref) => kref,
            None => {
                let info = config::encode_record(&KrefInfo::Other)?;
                let stored = url.clone();
                self.store
                    .transact(move |tx| {
                        let kref = tx.allocate_kref(KrefKind::Object)?;
                        tx.put_kref(kref, &info)?;
                        tx.put_redeemed_url(kref, &stored)?;
                        Ok(kref)
                    })
                    .await?
            }
        };
        let link = self.redeemed_link(kref, url);
        *link.target.borrow_mut() = Some(value);
        tracing::info!(%kref, node = %parsed.node, "OCAP URL redeemed");
        Ok(kref.to_string())
    }

    /// `kref`'s link to the object of the OCAP URL it was redeemed from,
    /// made and bound if it has none this run.
    fn redeemed_link(&self, kref: Kref, url: String) -> Rc<Redeemed> {
        let known = self.redeemed.borrow().get(&kref).cloned();
        let (link, object) = match known {
            Some(known) => known,
            None => {
                let link = Rc::new(Redeemed {
                    kernel: self.this.clone(),
                    interface: format!("Alleged: object of an OCAP URL ({kref})"),
                    url,
                    target: Rc::new(RefCell::new(None)),
                });
                let object = self.vat.make_object(link.clone());
                self.redeemed
                    .borrow_mut()
                    .insert(kref, (Rc::clone(&link), object.clone()));
                (link, object)
            }
        };
        if !self.bindings.borrow().contains_key(&kref) {
            self.bind(kref, object);
        }
        link
    }

    /// Binds `kref`, redeemed from `url` in an earlier run, to a link that
    /// redeems the URL again at its first use.
    pub(super) fn rebind_redeemed(&self, kref: Kref, url: String) -> Value {
        self.redeemed_link(kref, url);
        self.bindings.borrow().get(&kref).cloned().unwrap_or(Value::Undefined)
    }

    /// An OCAP URL for `object` (a vat's, through the issuer service),
    /// giving it a kref first if it has none.
    pub async fn issue_ocap_url_for(&self, object: &Value) -> Result<String, KernelError> {
        let kref = self.kref_of(object).await?;
        self.issue_ocap_url(&kref.to_string()).await
    }
}

fn kernel_of(kernel: &Weak<Kernel>) -> Result<Rc<Kernel>, ErrorValue> {
    kernel
        .upgrade()
        .ok_or_else(|| ErrorValue::plain("the kernel has stopped"))
}

/// What a redeemed OCAP URL's kref is bound to: a node object that
/// forwards each message to the object the URL's node answered. When the
/// session that object came through has ended (its node restarted or the
/// connection dropped), or there is none yet (after a restart of this
/// node), the next message redeems the URL again (dialing the node at
/// the URL's addresses) and waits for the object; a failed redemption
/// fails the messages that waited, and the one after tries again.
pub(super) struct Redeemed {
    kernel: Weak<Kernel>,
    interface: String,
    url: String,
    /// The object, a promise for it while it is redeemed, or nothing.
    target: Rc<RefCell<Option<Value>>>,
}

impl Redeemed {
    /// Where a message goes now, redeeming the URL again if need be.
    fn target(&self, kernel: &Rc<Kernel>) -> Value {
        if let Some(target) = self.target.borrow().as_ref()
            && !session_ended(kernel, target)
        {
            return target.clone();
        }
        let (promise, resolver) = kernel.vat.make_promise();
        *self.target.borrow_mut() = Some(promise.clone());
        let (url, target, waiting) = (self.url.clone(), Rc::clone(&self.target), promise.clone());
        let weak = Rc::downgrade(kernel);
        kernel.vat.spawn(async move {
            let Some(kernel) = weak.upgrade() else { return };
            let outcome = kernel.redeem_ocap_url_value(&url).await;
            {
                let mut target = target.borrow_mut();
                // Unless a newer redemption took its place meanwhile.
                if target.as_ref().is_some_and(|now| now.same_as(&waiting)) {
                    *target = outcome.as_ref().ok().cloned();
                }
            }
            if let Err(error) = &outcome {
                tracing::info!(%error, "an OCAP URL could not be redeemed again");
            }
            let settlement = outcome.map_err(|error| Value::error(ErrorValue::plain(error.to_string())));
            kernel.vat.settle(resolver, settlement);
        });
        promise
    }
}

/// Whether `target` came through a session that has ended.
fn session_ended(kernel: &Kernel, target: &Value) -> bool {
    match target {
        Value::Remotable(reference) | Value::Promise(reference) => capstan_protocol::captp::RemoteTarget::of(reference)
            .is_some_and(|remote| kernel.vat.connection(remote.session()).is_none()),
        _ => false,
    }
}

impl Behavior for Redeemed {
    fn interface(&self) -> &str {
        &self.interface
    }

    fn invoke(&self, _this: &Value, method: &str, args: Vec<Value>) -> Invocation {
        let Some(kernel) = self.kernel.upgrade() else {
            return Invocation::Ready(Err(Value::error(ErrorValue::plain("the kernel has stopped"))));
        };
        let target = self.target(&kernel);
        Invocation::Ready(Ok(kernel.vat.send(
            &target,
            Message::Call {
                method: method.to_string(),
                args,
            },
        )))
    }

    fn get(&self, _this: &Value, field: &str) -> Settlement {
        let Some(kernel) = self.kernel.upgrade() else {
            return Err(Value::error(ErrorValue::plain("the kernel has stopped")));
        };
        let target = self.target(&kernel);
        Ok(kernel.vat.send(
            &target,
            Message::Get {
                field: field.to_string(),
            },
        ))
    }
}

/// `ocapURLIssuerService`: `issue(object)` answers an OCAP URL for it.
pub fn make_issuer_service(kernel: &Rc<Kernel>) -> MethodResult {
    let kernel = Rc::downgrade(kernel);
    Exo::new("OcapURLIssuerService")
        .interface(M::interface(
            "OcapURLIssuerService",
            [("issue", M::call_when([M::remotable()]).returns(M::string()))],
            DefaultGuards::None,
        ))
        .async_method("issue", move |_, args| {
            let kernel = kernel.clone();
            async move {
                let (object,): (Value,) = decode(args)?;
                let url = kernel_of(&kernel)?.issue_ocap_url_for(&object).await?;
                Ok(Value::from(url))
            }
        })
        .make()
}

/// `ocapURLRedemptionService`: `redeem(url)` answers the object (which
/// baggage may keep: its kref redeems the URL again after a restart).
pub fn make_redemption_service(kernel: &Rc<Kernel>) -> MethodResult {
    let kernel = Rc::downgrade(kernel);
    let limit = capstan_protocol::record! { "stringLengthLimit" => MAX_URL_LEN as f64 };
    Exo::new("OcapURLRedemptionService")
        .interface(M::interface(
            "OcapURLRedemptionService",
            [(
                "redeem",
                M::call_when([M::string_limited(Some(limit))]).returns(M::any()),
            )],
            DefaultGuards::None,
        ))
        .async_method("redeem", move |_, args| {
            let kernel = kernel.clone();
            async move {
                let (url,): (String,) = decode(args)?;
                // Through a kref, so the object may be kept in baggage:
                // after a restart its kref redeems the URL again.
                let kernel = kernel_of(&kernel)?;
                let kref = kernel.redeem_ocap_url(&url).await?;
                Ok(kernel.get_presence(&kref)?)
            }
        })
        .make()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url() -> OcapUrl {
        OcapUrl {
            token: [0xab; 32],
            node: NodeId::from_bytes([7; 32]),
            addresses: vec![
                "/ip4/127.0.0.1/tcp/4001".into(),
                "/ip4/127.0.0.1/udp/4001/quic-v1".into(),
            ],
        }
    }

    #[test]
    fn a_url_reads_back_as_written() {
        let text = url().to_string();
        assert!(
            text.starts_with(&format!("ocap:{}@{}", "ab".repeat(32), "07".repeat(32))),
            "{text}"
        );
        assert!(
            text.ends_with(",/ip4/127.0.0.1/tcp/4001,/ip4/127.0.0.1/udp/4001/quic-v1"),
            "{text}"
        );
        assert_eq!(text.parse::<OcapUrl>().unwrap(), url());
        let bare = OcapUrl {
            addresses: Vec::new(),
            ..url()
        };
        assert_eq!(bare.to_string().parse::<OcapUrl>().unwrap(), bare);
    }

    #[test]
    fn malformed_urls_are_refused_without_repeating_the_token() {
        let token = "ab".repeat(32);
        let node = "07".repeat(32);
        let long = format!("ocap:{token}@{node},/{}", "a".repeat(MAX_URL_LEN));
        for (text, expected) in [
            ("", "does not start with ocap:"),
            ("http://example.com", "does not start with ocap:"),
            (&format!("ocap:{token}"), "has no @"),
            (&format!("ocap:{}@{node}", "ab".repeat(31)), "token is not 64"),
            (&format!("ocap:{}@{node}", "AB".repeat(32)), "token is not 64"),
            (&format!("ocap:{}@{node}", "zz".repeat(32)), "token is not 64"),
            (&format!("ocap:{token}@nobody"), "node id is not 64"),
            (&format!("ocap:{token}@{node},"), "not a multiaddr"),
            (&format!("ocap:{token}@{node},tcp:1"), "not a multiaddr"),
            (
                &format!("ocap:{token}@{node},/ip4/1.2.3.4/tcp/1 x"),
                "spaces or control",
            ),
            (&long, "longer than"),
        ] {
            let error = text.parse::<OcapUrl>().unwrap_err().to_string();
            assert!(error.contains(expected), "{text:?}: {error}");
            assert!(error.contains("ocap:TOKEN@NODE"), "{error}");
            assert!(!error.contains(&token), "{error}");
        }
        let many = format!(
            "ocap:{token}@{node}{}",
            ",/ip4/1.2.3.4/tcp/1".repeat(PEER_ADDRESSES_MAX + 1)
        );
        let error = many.parse::<OcapUrl>().unwrap_err().to_string();
        assert!(error.contains("more than"), "{error}");
    }

    #[test]
    fn debug_output_hides_the_token() {
        assert!(!format!("{:?}", url()).contains(&"ab".repeat(32)));
    }
}
