//! The node's libp2p identity: the ed25519 keypair made from the node's
//! seed, and the conversions between a [`NodeId`] (the 32-byte public key)
//! and a libp2p [`PeerId`] (the same key, protobuf-encoded inside an
//! identity multihash).

use capstan_store::NodeId;
use libp2p::PeerId;
use libp2p::identity::{Keypair, PublicKey, ed25519};

use super::error::NetError;

/// The multihash code libp2p uses for peer ids that carry the key inline.
const IDENTITY_MULTIHASH_CODE: u64 = 0x00;

/// The libp2p keypair for the node whose secret is `seed`
/// (`NodeSecret::seed()`); its `PeerId` is the node id.
pub fn keypair_from_seed(seed: &[u8; 32]) -> Result<Keypair, NetError> {
    // libp2p zeroes the buffer it is given, so hand it a copy.
    let mut copy = *seed;
    Keypair::ed25519_from_bytes(&mut copy).map_err(|error| NetError::InvalidSeed {
        reason: error.to_string(),
    })
}

/// The node id of a keypair made by [`keypair_from_seed`].
pub fn node_id_of_keypair(keypair: &Keypair) -> Result<NodeId, NetError> {
    node_id_of(&keypair.public().to_peer_id())
}

/// The libp2p peer id of `node`. Fails if the id is not an ed25519 public
/// key (not every 32-byte string is a point on the curve).
pub fn peer_id_of(node: &NodeId) -> Result<PeerId, NetError> {
    let key = ed25519::PublicKey::try_from_bytes(node.as_bytes()).map_err(|error| NetError::InvalidNodeId {
        node: *node,
        reason: error.to_string(),
    })?;
    Ok(PublicKey::from(key).to_peer_id())
}

/// The node id behind `peer`: only ed25519 keys carried inline (identity
/// multihash) are Capstan nodes; any other peer id is refused.
pub fn node_id_of(peer: &PeerId) -> Result<NodeId, NetError> {
    let multihash = peer.as_ref();
    if multihash.code() != IDENTITY_MULTIHASH_CODE {
        return Err(NetError::NotANode {
            peer: *peer,
            reason: "its peer id is a hash, not an inline public key".to_string(),
        });
    }
    let key = PublicKey::try_decode_protobuf(multihash.digest()).map_err(|error| NetError::NotANode {
        peer: *peer,
        reason: error.to_string(),
    })?;
    let key = key.try_into_ed25519().map_err(|_| NetError::NotANode {
        peer: *peer,
        reason: "its key is not ed25519".to_string(),
    })?;
    Ok(NodeId::from_bytes(key.to_bytes()))
}

/// How to name a peer in messages: its node id when it has one.
pub(crate) fn describe_peer(peer: &PeerId) -> String {
    match node_id_of(peer) {
        Ok(node) => format!("node {node}"),
        Err(_) => format!("peer {peer} (not a Capstan node)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_and_peer_ids_convert_both_ways() {
        for byte in [0u8, 1, 7, 255] {
            let keypair = keypair_from_seed(&[byte; 32]).expect("keypair");
            let peer = keypair.public().to_peer_id();
            let node = node_id_of(&peer).expect("an ed25519 peer is a node");
            assert_eq!(peer_id_of(&node).expect("node id is a key"), peer);
            assert_eq!(node_id_of_keypair(&keypair).expect("node id"), node);
            let public = keypair.public().try_into_ed25519().expect("ed25519");
            assert_eq!(node.as_bytes(), &public.to_bytes());
        }
    }

    #[test]
    fn the_seed_is_the_rfc8032_secret_key() {
        // RFC 8032 test vector 1.
        let seed: [u8; 32] = hex_bytes("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60");
        let public: [u8; 32] = hex_bytes("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a");
        let keypair = keypair_from_seed(&seed).expect("keypair");
        assert_eq!(node_id_of_keypair(&keypair).expect("node id").as_bytes(), &public);
    }

    #[test]
    fn peers_that_are_not_ed25519_nodes_are_refused() {
        let hashed =
            PeerId::from_multihash(libp2p::multihash::Multihash::wrap(0x12, &[7u8; 32]).expect("sha2-256 multihash"))
                .expect("a hashed peer id");
        assert!(matches!(node_id_of(&hashed), Err(NetError::NotANode { .. })));
    }

    #[test]
    fn a_node_id_off_the_curve_is_refused() {
        // y = 2 has no x on edwards25519, so these bytes are no public key.
        let mut bytes = [0u8; 32];
        bytes[0] = 2;
        let error = peer_id_of(&NodeId::from_bytes(bytes)).expect_err("not a point");
        assert!(
            error.to_string().contains(&NodeId::from_bytes(bytes).to_string()),
            "{error}"
        );
    }

    fn hex_bytes(text: &str) -> [u8; 32] {
        let mut bytes = [0u8; 32];
        for (index, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[index * 2..index * 2 + 2], 16).expect("hex");
        }
        bytes
    }
}
