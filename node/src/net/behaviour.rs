//! The node's libp2p behaviour: connection limits, identify, ping,
//! AutoNAT, relay client and (optionally) server, DCUtR, `libp2p-stream`
//! for the application streams (placed by [`DirectFirst`]), and a gate
//! that keeps the address book and admits only peers whose `PeerId` is an
//! ed25519 node id.

use std::convert::Infallible;
use std::num::NonZeroUsize;
use std::task::{Context, Poll};

use libp2p::core::Endpoint;
use libp2p::core::transport::PortUse;
use libp2p::swarm::behaviour::PeerAddresses;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::{
    ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler, THandlerInEvent, THandlerOutEvent, ToSwarm,
    dummy,
};
use libp2p::{Multiaddr, PeerId, autonat, connection_limits, dcutr, identify, ping, relay};

use super::identity::node_id_of;
use super::placement::DirectFirst;

/// How many peers the address book remembers (least recently used go first).
const ADDRESS_BOOK_PEERS: usize = 1024;

#[derive(NetworkBehaviour)]
pub(crate) struct NodeBehaviour {
    pub(crate) limits: connection_limits::Behaviour,
    pub(crate) gate: PeerGate,
    pub(crate) identify: identify::Behaviour,
    pub(crate) ping: ping::Behaviour,
    pub(crate) autonat: autonat::Behaviour,
    pub(crate) relay_client: relay::client::Behaviour,
    pub(crate) relay_service: Toggle<relay::Behaviour>,
    pub(crate) dcutr: dcutr::Behaviour,
    pub(crate) streams: DirectFirst,
}

/// Refuses connections with peers that are not Capstan nodes, and answers
/// dials by peer id (ours and `libp2p-stream`'s) from the known addresses.
pub(crate) struct PeerGate {
    addresses: PeerAddresses,
}

impl PeerGate {
    pub(crate) fn new() -> PeerGate {
        let peers = NonZeroUsize::new(ADDRESS_BOOK_PEERS).unwrap_or(NonZeroUsize::MIN);
        PeerGate {
            addresses: PeerAddresses::new(peers),
        }
    }

    fn admit(peer: PeerId) -> Result<dummy::ConnectionHandler, ConnectionDenied> {
        match node_id_of(&peer) {
            Ok(_) => Ok(dummy::ConnectionHandler),
            Err(error) => {
                tracing::warn!(%peer, %error, "refusing a connection from a peer that is not a node");
                Err(ConnectionDenied::new(error))
            }
        }
    }
}

impl NetworkBehaviour for PeerGate {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Infallible;

    fn handle_established_inbound_connection(
        &mut self,
        _connection: ConnectionId,
        peer: PeerId,
        _local: &Multiaddr,
        _remote: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Self::admit(peer)
    }

    fn handle_pending_outbound_connection(
        &mut self,
        _connection: ConnectionId,
        peer: Option<PeerId>,
        _addresses: &[Multiaddr],
        _role: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        Ok(peer.map(|peer| self.addresses.get(&peer).collect()).unwrap_or_default())
    }

    fn handle_established_outbound_connection(
        &mut self,
        _connection: ConnectionId,
        peer: PeerId,
        _address: &Multiaddr,
        _role: Endpoint,
        _port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Self::admit(peer)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        // Learns addresses given with `Swarm::add_peer_address`, and forgets
        // those a dial failed on.
        self.addresses.on_swarm_event(&event);
    }

    fn on_connection_handler_event(&mut self, _peer: PeerId, _connection: ConnectionId, event: THandlerOutEvent<Self>) {
        match event {}
    }

    fn poll(&mut self, _context: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        Poll::Pending
    }
}
