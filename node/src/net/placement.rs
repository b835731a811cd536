//! Which connection a new outbound stream goes on: a direct one when the
//! peer has one, a relayed one only when it has nothing else.
//!
//! `libp2p-stream` opens an outbound stream on a connection it picks at
//! random among those it knows for the peer. After a hole punch a peer has
//! two: the relayed one it started on (slow, and cut by the relay's
//! limits) and the direct one. [`DirectFirst`] wraps the stream behaviour
//! and shows it only the connections streams should go on, by passing on
//! (or holding back, or taking back) the swarm's establishment and close
//! events. Every connection still gets a stream handler, so streams a peer
//! opens to us are accepted on any of them.

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
}

/// One open connection, as far as stream placement cares.
struct Placed {
    peer: PeerId,
    endpoint: ConnectedPoint,
    relayed: bool,
    /// The stream behaviour knows of it (streams may be opened on it).
    shown: bool,
}

impl DirectFirst {
    pub(crate) fn new() -> DirectFirst {
        DirectFirst {
            streams: libp2p_stream::Behaviour::new(),
            connections: HashMap::new(),
        }
    }

    pub(crate) fn new_control(&self) -> libp2p_stream::Control {
        self.streams.new_control()
    }

    fn has_direct(&self, peer: PeerId) -> bool {
        self.connections
            .values()
            .any(|placed| placed.peer == peer && !placed.relayed)
    }

    fn connection_opened(&mut self, opened: ConnectionEstablished<'_>) {
        let relayed = opened.endpoint.is_relayed();
        let shown = !relayed || !self.has_direct(opened.peer_id);
        self.connections.insert(
            opened.connection_id,
            Placed {
                peer: opened.peer_id,
                endpoint: opened.endpoint.clone(),
                relayed,
                shown,
            },
        );
        if shown {
            self.streams.on_swarm_event(FromSwarm::ConnectionEstablished(opened));
        }
        if !relayed {
            self.set_relayed_shown(opened.peer_id, false);
        }
    }

    fn connection_closed(&mut self, closed: ConnectionClosed<'_>) {
        let Some(placed) = self.connections.remove(&closed.connection_id) else {
            return;
        };
        if placed.shown {
            self.streams.on_swarm_event(FromSwarm::ConnectionClosed(closed));
        }
        if !placed.relayed && !self.has_direct(placed.peer) {
            self.set_relayed_shown(placed.peer, true);
        }
    }

    /// Shows the stream behaviour `peer`'s relayed connections, or takes
    /// them back, by telling it they opened or closed.
    fn set_relayed_shown(&mut self, peer: PeerId, shown: bool) {
        for (connection, placed) in &mut self.connections {
            if placed.peer != peer || !placed.relayed || placed.shown == shown {
                continue;
            }
            placed.shown = shown;
            let event = if shown {
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

        // A relayed connection made while a direct one is up is held back.
        open(&mut placement, peer, direct_id, &direct);
        let later = ConnectionId::new_unchecked(3);
        open(&mut placement, peer, later, &relayed);
        assert!(!shown(&placement, later));
        close(&mut placement, peer, later, &relayed);
        assert!(!placement.connections.contains_key(&later));
    }
}
