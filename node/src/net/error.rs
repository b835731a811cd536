//! The errors of the libp2p layer. Each names the node (or address) it is
//! about, so a failed dial or stream says which peer it was for.

use std::time::Duration;

use capstan_store::NodeId;
use libp2p::{Multiaddr, PeerId};

use super::CAPTP_PROTOCOL_NAME;

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("the node's secret seed is not an ed25519 secret key: {reason}")]
    InvalidSeed { reason: String },

    #[error("node id {node} is not an ed25519 public key: {reason}")]
    InvalidNodeId { node: NodeId, reason: String },

    #[error("peer {peer} is not a Capstan node: {reason}")]
    NotANode { peer: PeerId, reason: String },

    #[error("cannot start the network: {reason}")]
    Start { reason: String },

    #[error("cannot listen on {address}: {reason}")]
    Listen { address: Multiaddr, reason: String },

    #[error("node {node} is this node; it cannot open a stream to itself")]
    DialSelf { node: NodeId },

    #[error("no known address for node {node}")]
    NoAddresses { node: NodeId },

    #[error("dialed node {expected} at {address}, but {answered} answered there")]
    WrongPeer {
        expected: NodeId,
        /// The node id (or, for a non-node, the peer id) that answered.
        answered: String,
        address: Multiaddr,
    },

    #[error("cannot reach node {node}: {reason}")]
    Unreachable { node: NodeId, reason: String },

    #[error("reaching node {node} timed out after {after:?}")]
    DialTimeout { node: NodeId, after: Duration },

    #[error("cannot open a {protocol} stream to node {node}: {reason}", protocol = CAPTP_PROTOCOL_NAME)]
    OpenStream { node: NodeId, reason: String },

    #[error("the network has stopped")]
    Stopped,
}
