//! [`Network`]: the handle the daemon holds on the node's libp2p swarm.

use std::sync::Arc;

use capstan_store::NodeId;
use libp2p::{Multiaddr, PeerId};
use tokio::sync::{mpsc, oneshot, watch};

use super::config::NetConfig;
use super::driver::{self, Command, NetState};
use super::error::NetError;
use super::identity::{keypair_from_seed, node_id_of_keypair, peer_id_of};
use super::movable::{StreamReader, StreamWriter};
use super::stream::{InboundStreams, inbound_channel};

/// The node's libp2p swarm, running on its own thread. Cheap to clone; the
/// network stops when [`Network::shutdown`] is called or the last clone is
/// dropped.
#[derive(Clone)]
pub struct Network {
    shared: Arc<Shared>,
}

struct Shared {
    node: NodeId,
    peer: PeerId,
    commands: mpsc::UnboundedSender<Command>,
    state: watch::Receiver<NetState>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        let _ = self.commands.send(Command::Shutdown { done: None });
    }
}

impl Network {
    /// Starts the swarm for the node whose secret is `seed`
    /// (`NodeSecret::seed()`), listening on the configured addresses, and
    /// returns once every listener is bound. Streams peers open to us
    /// arrive on the returned [`InboundStreams`].
    pub async fn start(seed: &[u8; 32], config: NetConfig) -> Result<(Network, InboundStreams), NetError> {
        let keypair = keypair_from_seed(seed)?;
        let node = node_id_of_keypair(&keypair)?;
        let peer = keypair.public().to_peer_id();
        let (deliver, inbound) = inbound_channel();
        let started = driver::start(keypair, config, deliver).await?;
        let shared = Shared {
            node,
            peer,
            commands: started.commands,
            state: started.state,
        };
        Ok((
            Network {
                shared: Arc::new(shared),
            },
            inbound,
        ))
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.shared.node
    }

    /// This node's libp2p peer id (the same key).
    pub fn peer_id(&self) -> PeerId {
        self.shared.peer
    }

    /// The addresses the listeners are bound to (ports resolved).
    pub fn listen_addresses(&self) -> Vec<Multiaddr> {
        self.shared.state.borrow().listen_addresses.clone()
    }

    /// The nodes we have at least one connection with.
    pub fn connected_peers(&self) -> Vec<NodeId> {
        self.shared.state.borrow().connected.clone()
    }

    /// How this node reaches each peer it is connected to now.
    pub fn links(&self) -> std::collections::HashMap<NodeId, super::Link> {
        self.shared.state.borrow().links.clone()
    }

    /// Whether other nodes can dial this one, as far as AutoNAT found.
    pub fn reachability(&self) -> super::Reachability {
        self.shared.state.borrow().reachability
    }

    /// The configured relays and whether each holds a reservation for us.
    pub fn relays(&self) -> Vec<super::RelayState> {
        self.shared.state.borrow().relays.clone()
    }

    /// Whether this node serves as a relay for others.
    pub fn is_relay_service(&self) -> bool {
        self.shared.state.borrow().relay_service
    }

    /// Addresses of ours that peers confirmed they can dial, or that this
    /// node announces as a relay.
    pub fn external_addresses(&self) -> Vec<Multiaddr> {
        self.shared.state.borrow().external_addresses.clone()
    }

    /// Waits until the listen addresses change (a relay reservation won
    /// or lost, a listener gone); `false` once the network has stopped.
    pub async fn listen_addresses_changed(&self) -> bool {
        let mut state = self.shared.state.clone();
        let before = state.borrow_and_update().listen_addresses.clone();
        state.wait_for(|now| now.listen_addresses != before).await.is_ok()
    }

    pub fn is_connected(&self, node: &NodeId) -> bool {
        self.shared.state.borrow().connected.contains(node)
    }

    /// Remembers addresses where `node` can be dialed.
    pub fn add_addresses(&self, node: &NodeId, addresses: impl IntoIterator<Item = Multiaddr>) -> Result<(), NetError> {
        let peer = peer_id_of(node)?;
        let addresses = addresses.into_iter().collect();
        self.send(Command::AddAddresses { peer, addresses })
    }

    /// Opens a `/capstan/captp/1.0.0` stream to `node`, dialing it first
    /// (at `addresses` and the addresses already known) if we have no
    /// connection. The connection is authenticated: if a different node
    /// answers at the addresses, this fails naming both. Bounded by
    /// [`NetConfig::dial_timeout`].
    pub async fn open_stream(
        &self,
        node: &NodeId,
        addresses: &[Multiaddr],
    ) -> Result<(StreamReader, StreamWriter), NetError> {
        if *node == self.shared.node {
            return Err(NetError::DialSelf { node: *node });
        }
        let peer = peer_id_of(node)?;
        let (reply, opened) = oneshot::channel();
        self.send(Command::OpenStream {
            node: *node,
            peer,
            addresses: addresses.to_vec(),
            reply,
        })?;
        opened.await.map_err(|_| NetError::Stopped)?
    }

    /// Closes every connection with `node` (its streams end).
    pub fn disconnect(&self, node: &NodeId) -> Result<(), NetError> {
        let peer = peer_id_of(node)?;
        self.send(Command::Disconnect { peer })
    }

    /// Stops the network: connections are closed (peers see it at once),
    /// streams end, and [`InboundStreams`] ends. Returns once the network
    /// thread has let go of everything.
    pub async fn shutdown(&self) {
        let (done, stopped) = oneshot::channel();
        if self.send(Command::Shutdown { done: Some(done) }).is_ok() {
            let _ = stopped.await;
        }
    }

    fn send(&self, command: Command) -> Result<(), NetError> {
        self.shared.commands.send(command).map_err(|_| NetError::Stopped)
    }
}
