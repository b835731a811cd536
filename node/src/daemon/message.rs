//! Mail as it is stored: the message records every mailbox keeps (and
//! peers exchange), their encoding, and the callers waiting on requests.
//! Both the agents' mail and the peer sessions depend on these, so they
//! sit below both.

use std::cell::RefCell;
use std::collections::HashMap;

use capstan_protocol::{ErrorValue, Value};
use capstan_store::FormulaId;
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

/// Callers waiting on requests, by (recipient agent, message number).
#[derive(Default)]
pub struct RequestWaiters {
    waiting: RefCell<HashMap<(FormulaId, u64), Vec<PromiseKit>>>,
}

impl RequestWaiters {
    /// A promise settled when request `number` of `agent`'s mailbox is.
    pub fn wait(&self, agent: FormulaId, number: u64) -> Value {
        let kit = PromiseKit::new();
        let promise = kit.promise.clone();
        self.waiting.borrow_mut().entry((agent, number)).or_default().push(kit);
        promise
    }

    /// The callers waiting on request `number` of `agent`'s mailbox.
    pub fn take(&self, agent: FormulaId, number: u64) -> Vec<PromiseKit> {
        self.waiting.borrow_mut().remove(&(agent, number)).unwrap_or_default()
    }
}
