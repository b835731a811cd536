//! The node's identity: an ed25519 secret seed made once, in the store's
//! first transaction, and the node id (the public key) derived from it.
//!
//! The seed stays in the store; [`NodeSecret`] is the only way out, and it
//! is wiped from memory when dropped. The 32-byte seed is what libp2p's
//! `Keypair::ed25519_from_bytes` takes, so the node's libp2p identity is the
//! same key.

use std::fmt;

use ed25519_dalek::SigningKey;
use zeroize::Zeroizing;

use crate::error::{Result, StoreError};
use crate::ids::NodeId;

/// A fresh random seed for a new node.
pub(crate) fn generate_seed() -> Result<Zeroizing<[u8; 32]>> {
    let mut seed = Zeroizing::new([0u8; 32]);
    getrandom::getrandom(seed.as_mut()).map_err(|error| StoreError::Randomness {
        detail: error.to_string(),
    })?;
    Ok(seed)
}

pub(crate) fn node_id_of(seed: &[u8; 32]) -> NodeId {
    NodeId::from_bytes(SigningKey::from_bytes(seed).verifying_key().to_bytes())
}

/// The node's secret key. Handle with care: whoever holds it is the node.
pub struct NodeSecret {
    seed: Zeroizing<[u8; 32]>,
}

impl NodeSecret {
    pub(crate) fn new(seed: Zeroizing<[u8; 32]>) -> Self {
        Self { seed }
    }

    /// The 32-byte ed25519 seed (RFC 8032 secret key).
    pub fn seed(&self) -> &[u8; 32] {
        &self.seed
    }

    pub fn signing_key(&self) -> SigningKey {
        SigningKey::from_bytes(&self.seed)
    }

    pub fn node_id(&self) -> NodeId {
        node_id_of(&self.seed)
    }
}

impl fmt::Debug for NodeSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeSecret(for node {})", self.node_id())
    }
}
