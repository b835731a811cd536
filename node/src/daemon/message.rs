//! Mail as it is stored: the message records every mailbox keeps (and
//! peers exchange), their encoding, the callers waiting on requests (with
//! how many wait for each peer), and how fast each peer may send. Both the
//! agents' mail and the peer sessions depend on these, so they sit below
//! both.

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::Instant;

use capstan_protocol::{ErrorValue, Value};
use capstan_store::{FormulaId, NodeId};
use serde::{Deserialize, Serialize};

use super::formula::Id;
use crate::runtime::PromiseKit;

const MESSAGE_VERSION: u8 = 1;

/// A message as stored in a mailbox.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StoredMessage {
    /// When it was sent, RFC 3339, UTC.
    pub date: String,
    /// The sender's handle.
    pub from: Id,
    /// The recipient's handle.
    pub to: Id,
    pub content: Content,
}

impl StoredMessage {
    pub fn encode(&self) -> Result<Vec<u8>, ErrorValue> {
        postcard::to_allocvec(&(MESSAGE_VERSION, self)).map_err(|error| ErrorValue::plain(error.to_string()))
    }

    pub fn decode(bytes: &[u8]) -> Result<StoredMessage, ErrorValue> {
        match postcard::from_bytes::<(u8, StoredMessage)>(bytes) {
            Ok((MESSAGE_VERSION, message)) => Ok(message),
            Ok((version, _)) => Err(ErrorValue::plain(format!("a message has unknown version {version}"))),
            Err(error) => Err(ErrorValue::plain(format!("a stored message is damaged: {error}"))),
        }
    }

    pub fn type_name(&self) -> &'static str {
        match self.content {
            Content::Package { .. } => "package",
            Content::Request { .. } => "request",
        }
    }
}

/// What a message carries.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Content {
    /// Text interleaved with references: `strings` has one more element
    /// than `names`, and reference `i` sits between strings `i` and `i+1`.
    Package {
        strings: Vec<String>,
        names: Vec<String>,
        ids: Vec<Id>,
    },
    /// A request for a value, from `requester` (an agent).
    Request {
        description: String,
        requester: Id,
        response_name: Option<String>,
        settled: Option<Settled>,
    },
}

/// How a request was answered.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Settled {
    Resolved(Id),
    Rejected(String),
}

/// The time now as RFC 3339, UTC, to the millisecond.
pub fn now_rfc3339() -> String {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let seconds = since.as_secs() as i64;
    let (days, rest) = (seconds.div_euclid(86_400), seconds.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rest / 3600,
        rest / 60 % 60,
        rest % 60,
        since.subsec_millis()
    )
}

/// Callers waiting on requests, by (recipient agent, message number), and
/// how many of them wait for each peer's requests.
#[derive(Default)]
pub struct RequestWaiters {
    waiting: RefCell<HashMap<(FormulaId, u64), Vec<Waiter>>>,
    pending_by_peer: RefCell<HashMap<NodeId, u32>>,
}

/// A caller waiting on a request, and the peer it waits for (if any).
struct Waiter {
    kit: PromiseKit,
    peer: Option<NodeId>,
}

/// A peer already has as many requests waiting as it may.
#[derive(Debug)]
pub struct TooManyPending(pub u32);

impl RequestWaiters {
    /// A promise settled when request `number` of `agent`'s mailbox is.
    pub fn wait(&self, agent: FormulaId, number: u64) -> Value {
        self.add(agent, number, None)
    }

    fn add(&self, agent: FormulaId, number: u64, peer: Option<NodeId>) -> Value {
        let kit = PromiseKit::new();
        let promise = kit.promise.clone();
        let waiter = Waiter { kit, peer };
        self.waiting
            .borrow_mut()
            .entry((agent, number))
            .or_default()
            .push(waiter);
        promise
    }

    /// Holds one of `peer`'s at most `most` waiting requests, before the
    /// request is stored; [`PendingSlot::wait`] then waits in it.
    pub fn reserve(&self, peer: NodeId, most: u32) -> Result<PendingSlot<'_>, TooManyPending> {
        let mut pending = self.pending_by_peer.borrow_mut();
        let count = pending.entry(peer).or_default();
        if *count >= most {
            return Err(TooManyPending(most));
        }
        *count += 1;
        Ok(PendingSlot {
            waiters: self,
            peer,
            used: false,
        })
    }

    fn release(&self, peer: NodeId) {
        let mut pending = self.pending_by_peer.borrow_mut();
        if let Some(count) = pending.get_mut(&peer) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                pending.remove(&peer);
            }
        }
    }

    /// The callers waiting on request `number` of `agent`'s mailbox.
    pub fn take(&self, agent: FormulaId, number: u64) -> Vec<PromiseKit> {
        let taken = self.waiting.borrow_mut().remove(&(agent, number)).unwrap_or_default();
        taken
            .into_iter()
            .map(|waiter| {
                if let Some(peer) = waiter.peer {
                    self.release(peer);
                }
                waiter.kit
            })
            .collect()
    }
}

/// A place among a peer's waiting requests, given back when dropped
/// unless a caller waits in it.
pub struct PendingSlot<'a> {
    waiters: &'a RequestWaiters,
    peer: NodeId,
    used: bool,
}

impl PendingSlot<'_> {
    /// A promise settled when request `number` of `agent`'s mailbox is;
    /// the slot is given back once it is settled.
    pub fn wait(mut self, agent: FormulaId, number: u64) -> Value {
        self.used = true;
        self.waiters.add(agent, number, Some(self.peer))
    }
}

impl Drop for PendingSlot<'_> {
    fn drop(&mut self) {
        if !self.used {
            self.waiters.release(self.peer);
        }
    }
}

/// How fast each peer may send mail: a token bucket per sending node,
/// filled at `rate` a second up to a burst of `rate`.
#[derive(Default)]
pub struct PeerMailRates {
    buckets: RefCell<HashMap<NodeId, Bucket>>,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Buckets kept before the full ones are forgotten (a full bucket is the
/// same as none).
const BUCKETS_KEPT: usize = 4096;

impl PeerMailRates {
    /// Takes a token for one message from `peer`; `false` if it has none
    /// left at `rate` a second.
    pub fn take(&self, peer: NodeId, rate: u32) -> bool {
        self.take_at(peer, rate, Instant::now())
    }

    fn take_at(&self, peer: NodeId, rate: u32, now: Instant) -> bool {
        let burst = f64::from(rate);
        let mut buckets = self.buckets.borrow_mut();
        if buckets.len() >= BUCKETS_KEPT && !buckets.contains_key(&peer) {
            buckets.retain(|_, bucket| bucket.refilled(burst, now) < burst);
        }
        let bucket = buckets.entry(peer).or_insert(Bucket { tokens: burst, at: now });
        bucket.tokens = bucket.refilled(burst, now);
        bucket.at = now;
        if bucket.tokens < 1.0 {
            return false;
        }
        bucket.tokens -= 1.0;
        true
    }
}

impl Bucket {
    fn refilled(&self, burst: f64, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        (self.tokens + elapsed * burst).min(burst)
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use capstan_store::{FormulaId, NodeId};

    use super::{PeerMailRates, RequestWaiters};

    #[test]
    fn a_peer_sends_a_burst_then_at_its_rate() {
        let rates = PeerMailRates::default();
        let (peer, other) = (NodeId::from_bytes([1; 32]), NodeId::from_bytes([2; 32]));
        let start = Instant::now();
        assert!((0..5).all(|_| rates.take_at(peer, 5, start)));
        assert!(!rates.take_at(peer, 5, start));
        assert!(rates.take_at(other, 5, start));
        assert!(rates.take_at(peer, 5, start + Duration::from_millis(200)));
        assert!(!rates.take_at(peer, 5, start + Duration::from_millis(200)));
        assert!(!PeerMailRates::default().take_at(peer, 0, start));
    }

    #[test]
    fn a_peer_has_at_most_so_many_requests_waiting() {
        crate::runtime::Vat::new().enter(peer_requests_are_bounded);
    }

    fn peer_requests_are_bounded() {
        let waiters = RequestWaiters::default();
        let (peer, agent) = (
            NodeId::from_bytes([1; 32]),
            FormulaId::new([3; 32], NodeId::from_bytes([4; 32])),
        );
        let first = waiters.reserve(peer, 2).unwrap();
        let second = waiters.reserve(peer, 2).unwrap();
        assert!(waiters.reserve(peer, 2).is_err());
        // A slot not waited in is given back.
        drop(second);
        let _promise = first.wait(agent, 0);
        let _second = waiters.reserve(peer, 2).unwrap().wait(agent, 1);
        assert!(waiters.reserve(peer, 2).is_err());
        assert_eq!(waiters.take(agent, 0).len(), 1);
        assert!(waiters.reserve(peer, 2).is_ok());
    }
}
