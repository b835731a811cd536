//! Which connection a new outbound stream goes on: one connection per
//! peer, a direct one when the peer has one (a relayed one only when it
//! has nothing else), the oldest of its kind.
//!
//! `libp2p-stream` opens an outbound stream on a connection it picks at
//! random among those it knows for the peer. After a hole punch a peer has
//! two: the relayed one it started on (slow, and cut by the relay's
//! limits) and the direct one. [`DirectFirst`] wraps the stream behaviour
//! and shows it only the connections streams should go on, by passing on
//! (or holding back, or taking back) the swarm's establishment and close
//! events. It shows one connection per peer, the oldest of the best kind,
//! because newer ones may be short-lived: an AutoNAT dial-back closes
//! once it has proved the address, and a stream opened on it would die
//! with it. Every connection still gets a stream handler, so streams a
//! peer opens to us are accepted on any of them.

use std::collections::HashMap;
use std::task::{Context, Poll};

use libp2p::core::transport::PortUse;
use libp2p::core::{ConnectedPoint, Endpoint};
use libp2p::swarm::behaviour::{ConnectionClosed, ConnectionEstablished};
use libp2p::swarm::{
    ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler, THandlerInEvent, THandlerOutEvent, ToSwarm,
};
use libp2p::{Multiaddr, PeerId};

/// `libp2p_stream::Behaviour`, shown direct connections in preference to
/// relayed ones.
pub(crate) struct DirectFirst {
    streams: libp2p_stream::Behaviour,
    connections: HashMap<ConnectionId, Placed>,
    /// Counts connections as they open, to tell the oldest.
    opened: u64,
}

/// One open connection, as far as stream placement cares.
struct Placed {
    peer: PeerId,
    endpoint: ConnectedPoint,
    relayed: bool,
    order: u64,
    /// The stream behaviour knows of it (streams may be opened on it).
    shown: bool,
}

impl DirectFirst {
    pub(crate) fn new() -> DirectFirst {
        DirectFirst {
            streams: libp2p_stream::Behaviour::new(),
            connections: HashMap::new(),
            opened: 0,
        }
    }

    pub(crate) fn new_control(&self) -> libp2p_stream::Control {
        self.streams.new_control()
    }

    fn connection_opened(&mut self, opened: ConnectionEstablished<'_>) {
        self.opened += 1;
        self.connections.insert(
            opened.connection_id,
            Placed {
                peer: opened.peer_id,
                endpoint: opened.endpoint.clone(),
                relayed: opened.endpoint.is_relayed(),
                order: self.opened,
                shown: false,
            },
        );
        self.place(opened.peer_id);
    }

    fn connection_closed(&mut self, closed: ConnectionClosed<'_>) {
        let Some(placed) = self.connections.remove(&closed.connection_id) else {
            return;
        };
        if placed.shown {
            self.streams.on_swarm_event(FromSwarm::ConnectionClosed(closed));
        }
        self.place(placed.peer);
    }

    /// Shows the stream behaviour `peer`'s best connection (direct before
    /// relayed, then the oldest) and no other, by telling it connections
    /// opened or closed.
    fn place(&mut self, peer: PeerId) {
        let best = self
            .connections
            .iter()
            .filter(|(_, placed)| placed.peer == peer)
            .min_by_key(|(_, placed)| (placed.relayed, placed.order))
            .map(|(connection, _)| *connection);
        // Take the old one back before showing the new one.
        for take_back in [true, false] {
            for (connection, placed) in &mut self.connections {
                let show = Some(*connection) == best;
                if placed.peer != peer || placed.shown == show || show == take_back {
                    continue;
                }
                placed.shown = show;
                let event = if show {
                    FromSwarm::ConnectionEstablished(ConnectionEstablished {
                        peer_id: peer,
                        connection_id: *connection,
                        endpoint: &placed.endpoint,
                        failed_addresses: &[],
                        other_established: 0,
                    })
                } else {
                    FromSwarm::ConnectionClosed(ConnectionClosed {
                        peer_id: peer,
                        connection_id: *connection,
                        endpoint: &placed.endpoint,
                        cause: None,
                        remaining_established: 0,
                    })
                };
                self.streams.on_swarm_event(event);
            }
        }
    }
}

impl NetworkBehaviour for DirectFirst {
    type ConnectionHandler = THandler<libp2p_stream::Behaviour>;
    type ToSwarm = <libp2p_stream::Behaviour as NetworkBehaviour>::ToSwarm;

    fn handle_established_inbound_connection(
        &mut self,
        connection: ConnectionId,
        peer: PeerId,
        local: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.streams
            .handle_established_inbound_connection(connection, peer, local, remote)
    }

    fn handle_established_outbound_connection(
        &mut self,
        connection: ConnectionId,
        peer: PeerId,
        address: &Multiaddr,
        role: Endpoint,
        port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.streams
            .handle_established_outbound_connection(connection, peer, address, role, port_use)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match event {
            FromSwarm::ConnectionEstablished(opened) => self.connection_opened(opened),
            FromSwarm::ConnectionClosed(closed) => self.connection_closed(closed),
            other => self.streams.on_swarm_event(other),
        }
    }

    fn on_connection_handler_event(&mut self, peer: PeerId, connection: ConnectionId, event: THandlerOutEvent<Self>) {
        self.streams.on_connection_handler_event(peer, connection, event);
    }

    fn poll(&mut self, context: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        self.streams.poll(context)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dialer(address: &str) -> ConnectedPoint {
        ConnectedPoint::Dialer {
            address: address.parse().unwrap(),
            role_override: Endpoint::Dialer,
            port_use: PortUse::Reuse,
        }
    }

    fn open(placement: &mut DirectFirst, peer: PeerId, connection: ConnectionId, endpoint: &ConnectedPoint) {
        placement.on_swarm_event(FromSwarm::ConnectionEstablished(ConnectionEstablished {
            peer_id: peer,
            connection_id: connection,
            endpoint,
            failed_addresses: &[],
            other_established: 0,
        }));
    }

    fn close(placement: &mut DirectFirst, peer: PeerId, connection: ConnectionId, endpoint: &ConnectedPoint) {
        placement.on_swarm_event(FromSwarm::ConnectionClosed(ConnectionClosed {
            peer_id: peer,
            connection_id: connection,
            endpoint,
            cause: None,
            remaining_established: 0,
        }));
    }

    fn shown(placement: &DirectFirst, connection: ConnectionId) -> bool {
        placement
            .connections
            .get(&connection)
            .is_some_and(|placed| placed.shown)
    }

    #[test]
    fn a_direct_connection_takes_streams_from_the_relayed_one_and_gives_them_back_when_it_closes() {
        let mut placement = DirectFirst::new();
        let peer = PeerId::random();
        let relay = PeerId::random();
        let relayed_address = format!("/ip4/10.0.0.1/tcp/4001/p2p/{relay}/p2p-circuit/p2p/{peer}");
        let relayed = dialer(&relayed_address);
        let direct = dialer("/ip4/10.0.0.2/tcp/4001");
        let (relayed_id, direct_id) = (ConnectionId::new_unchecked(1), ConnectionId::new_unchecked(2));

        open(&mut placement, peer, relayed_id, &relayed);
        assert!(
            shown(&placement, relayed_id),
            "alone, the relayed connection carries streams"
        );
        open(&mut placement, peer, direct_id, &direct);
        assert!(shown(&placement, direct_id));
        assert!(!shown(&placement, relayed_id), "beside a direct one it does not");
        close(&mut placement, peer, direct_id, &direct);
        assert!(shown(&placement, relayed_id), "once the direct one goes, it does again");

        // A relayed connection made while a direct one is up is held back,
        // and so is a newer direct one (an AutoNAT dial-back, say).
        open(&mut placement, peer, direct_id, &direct);
        let later = ConnectionId::new_unchecked(3);
        open(&mut placement, peer, later, &relayed);
        assert!(!shown(&placement, later));
        close(&mut placement, peer, later, &relayed);
        assert!(!placement.connections.contains_key(&later));
        let newer = ConnectionId::new_unchecked(4);
        open(&mut placement, peer, newer, &direct);
        assert!(shown(&placement, direct_id) && !shown(&placement, newer));
        close(&mut placement, peer, direct_id, &direct);
        assert!(shown(&placement, newer) && !shown(&placement, relayed_id));
    }
}
