//! Known peers: node id → the peer's addresses (multiaddr strings) and when
//! it was last seen (unix milliseconds).

use redb::ReadableTable;
use serde::{Deserialize, Serialize};

use crate::error::{Result, StoreError};
use crate::ids::NodeId;
use crate::schema::{HashKey, PEERS};
use crate::tx::{Snapshot, Tx};
use crate::{Commit, Store};

/// The version of the stored peer record's layout.
const PEER_RECORD_VERSION: u32 = 1;

/// The longest address kept, in bytes.
pub const PEER_ADDRESS_MAX_LEN: usize = 256;

/// The most addresses kept for one peer.
pub const PEER_ADDRESSES_MAX: usize = 16;

/// What the node knows about a peer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerRecord {
    /// Multiaddrs, such as `/ip4/127.0.0.1/tcp/4001`.
    pub addresses: Vec<String>,
    /// Unix time in milliseconds; 0 if never seen.
    pub last_seen_unix_ms: u64,
}

fn check_addresses(record: &PeerRecord) -> Result<()> {
    if record.addresses.len() > PEER_ADDRESSES_MAX {
        return Err(StoreError::InvalidInput {
            kind: "peer address list",
            value: format!("{} addresses", record.addresses.len()),
            reason: format!("at most {PEER_ADDRESSES_MAX} are kept"),
        });
    }
    for address in &record.addresses {
        let reason = if !address.starts_with('/') {
            "a multiaddr starts with '/'"
        } else if address.len() > PEER_ADDRESS_MAX_LEN {
            "is longer than 256 bytes"
        } else if address.chars().any(|c| c.is_whitespace() || c.is_control()) {
            "must not contain spaces or control characters"
        } else {
            continue;
        };
        return Err(StoreError::InvalidInput {
            kind: "peer address",
            value: address.chars().take(200).collect(),
            reason: reason.into(),
        });
    }
    Ok(())
}

fn encode(record: &PeerRecord) -> Result<Vec<u8>> {
    postcard::to_allocvec(&(PEER_RECORD_VERSION, record)).map_err(|error| StoreError::Encode {
        what: "peer record",
        detail: error.to_string(),
    })
}

fn decode(bytes: &[u8]) -> Result<PeerRecord> {
    let corrupt = |detail: String| StoreError::CorruptRecord { table: "peers", detail };
    let (version, rest): (u32, &[u8]) = postcard::take_from_bytes(bytes).map_err(|error| corrupt(error.to_string()))?;
    if version != PEER_RECORD_VERSION {
        return Err(corrupt(format!(
            "peer record version {version} is not {PEER_RECORD_VERSION}"
        )));
    }
    postcard::from_bytes(rest).map_err(|error| corrupt(error.to_string()))
}

fn get(peers: &impl ReadableTable<HashKey, &'static [u8]>, node: NodeId) -> Result<Option<PeerRecord>> {
    peers
        .get(*node.as_bytes())?
        .map(|value| decode(value.value()))
        .transpose()
}

impl Tx<'_> {
    /// Stores what is known about `node`, replacing the old record.
    pub fn put_peer(&mut self, node: NodeId, record: &PeerRecord) -> Result<()> {
        check_addresses(record)?;
        let encoded = encode(record)?;
        self.tables.peers.open()?.insert(*node.as_bytes(), encoded.as_slice())?;
        Ok(())
    }

    /// Records that a known peer was seen at `unix_ms`, keeping its
    /// addresses. A node that is not known stays unknown: `false`.
    pub fn record_peer_seen(&mut self, node: NodeId, unix_ms: u64) -> Result<bool> {
        let Some(mut record) = get(self.tables.peers.open()?, node)? else {
            return Ok(false);
        };
        record.last_seen_unix_ms = record.last_seen_unix_ms.max(unix_ms);
        self.put_peer(node, &record)?;
        Ok(true)
    }

    /// Forgets a peer; `false` if it was not known.
    pub fn remove_peer(&mut self, node: NodeId) -> Result<bool> {
        Ok(self.tables.peers.open()?.remove(*node.as_bytes())?.is_some())
    }

    pub fn get_peer(&mut self, node: NodeId) -> Result<Option<PeerRecord>> {
        get(self.tables.peers.open()?, node)
    }
}

impl Snapshot {
    pub fn get_peer(&self, node: NodeId) -> Result<Option<PeerRecord>> {
        get(&self.txn.open_table(PEERS)?, node)
    }

    /// Every known peer, in node id order.
    pub fn list_peers(&self) -> Result<Vec<(NodeId, PeerRecord)>> {
        let peers = self.txn.open_table(PEERS)?;
        let mut listed = Vec::new();
        for entry in peers.iter()? {
            let (key, value) = entry?;
            listed.push((NodeId::from_bytes(key.value()), decode(value.value())?));
        }
        Ok(listed)
    }
}

impl Store {
    /// Stores a peer record in one atomic write (which may share its commit with other writes waiting beside it).
    pub fn put_peer(&self, node: NodeId, record: PeerRecord) -> Commit<()> {
        self.transact_repeatable(move |tx| tx.put_peer(node, &record))
    }
}
