//! The network thread: builds the swarm, binds the listeners, then runs one
//! loop that takes commands from [`super::Network`] handles and events from
//! the swarm. It owns the swarm outright; handles talk to it only through
//! the command channel and read what it publishes in a watch channel.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use capstan_store::NodeId;
use futures::StreamExt;
use libp2p::core::muxing::StreamMuxerBox;
use libp2p::core::transport::{Boxed, ListenerId};
use libp2p::core::{Transport, upgrade};
use libp2p::multiaddr::Protocol;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{ConnectionId, DialError, ListenError, SwarmEvent};
use libp2p::{
    Multiaddr, PeerId, Swarm, autonat, connection_limits, dcutr, identify, identity::Keypair, noise, ping, quic, relay,
    tcp, yamux,
};
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, oneshot, watch};

use super::behaviour::{NodeBehaviour, NodeBehaviourEvent, PeerGate};
use super::config::{NetConfig, RelayLimits};
use super::error::NetError;
use super::identity::{describe_peer, node_id_of};
use super::movable::{StreamReader, StreamWriter, WeakMover, finish_move};
use super::muxer::EndingMuxer;
use super::placement::DirectFirst;
use super::ports;
use super::stream::{InboundStream, MoveRegistry, OpenCounts, accept_loop, accept_moves, open_session_stream, split};
use super::{CAPTP_MOVE_PROTOCOL, CAPTP_PROTOCOL, IDENTIFY_PROTOCOL};

/// How much longer than the dial timeout a handshake may take: the
/// caller's timer fires first (so the error says the dial timed out), and
/// the transport's own bound still frees an abandoned attempt.
const HANDSHAKE_MARGIN: Duration = Duration::from_secs(1);

/// How often connections are checked for unanswered pings.
const LIVENESS_CHECK: Duration = Duration::from_secs(1);

/// The first wait before asking a relay again for a reservation it
/// refused or lost; it doubles up to [`RELAY_RETRY_MAX`].
const RELAY_RETRY_FIRST: Duration = Duration::from_secs(1);
const RELAY_RETRY_MAX: Duration = Duration::from_secs(60);

/// The longest wait between two hole punch attempts with one peer.
const HOLE_PUNCH_RETRY_MAX: Duration = Duration::from_secs(5 * 60);

/// How long shutting down waits for connections to close cleanly (so peers
/// learn at once, rather than by a timeout).
const GRACEFUL_CLOSE: Duration = Duration::from_secs(1);

/// What a [`super::Network`] handle asks of the network thread.
pub(crate) enum Command {
    /// Dial if needed, then open a stream, all within the dial timeout.
    OpenStream {
        node: NodeId,
        peer: PeerId,
        addresses: Vec<Multiaddr>,
        reply: oneshot::Sender<Result<(StreamReader, StreamWriter), NetError>>,
    },
    /// A session stream we opened: moved to a direct connection to the
    /// peer when one comes, if it may be on a relayed one now.
    Opened {
        peer: PeerId,
        mover: WeakMover,
    },
    AddAddresses {
        peer: PeerId,
        addresses: Vec<Multiaddr>,
    },
    Disconnect {
        peer: PeerId,
    },
    /// Stop: close connections, then end the thread; `done` is told once
    /// everything the thread ran has been dropped.
    Shutdown {
        done: Option<oneshot::Sender<()>>,
    },
}

/// What the network thread publishes for handles to read.
#[derive(Clone, Debug, Default)]
pub(crate) struct NetState {
    pub(crate) listen_addresses: Vec<Multiaddr>,
    pub(crate) connected: Vec<NodeId>,
    /// For each connected peer, how it is reached.
    pub(crate) links: HashMap<NodeId, Link>,
    pub(crate) reachability: Reachability,
    /// The relays this node keeps a reservation on, as configured.
    pub(crate) relays: Vec<RelayState>,
    /// Whether this node serves as a relay for others.
    pub(crate) relay_service: bool,
    /// The addresses of ours that others confirmed they can dial (AutoNAT)
    /// or that a relay serves on.
    pub(crate) external_addresses: Vec<Multiaddr>,
}

/// Whether other nodes can dial this node, as AutoNAT finds by asking the
/// nodes it is connected to to dial it back.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Reachability {
    /// Not known yet (no peer has been asked, or none answered).
    #[default]
    Unknown,
    /// Peers could dial us at one of our addresses.
    Public,
    /// Peers could not: we sit behind a NAT or a firewall, and others
    /// reach us only through a relay or a hole punch.
    Private,
}

impl Reachability {
    /// `unknown`, `public` or `private`.
    pub fn label(self) -> &'static str {
        match self {
            Reachability::Unknown => "unknown",
            Reachability::Public => "public",
            Reachability::Private => "private",
        }
    }
}

/// A relay this node keeps (or is trying to keep) a reservation on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelayState {
    /// The relay's address, as configured (with its `/p2p/` id).
    pub address: Multiaddr,
    /// The relay holds a reservation for us: nodes can reach us through it.
    pub reserved: bool,
    /// Why the last reservation attempt failed or ended, if it did.
    pub last_error: Option<String>,
}

/// The network thread's side of one configured relay.
struct RelayEntry {
    state: RelayState,
    listener: Option<ListenerId>,
    /// When to ask again after a refusal or a loss.
    retry_at: Option<Instant>,
    backoff: Duration,
}

/// How this node is connected to a peer now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Link {
    /// Every connection to the peer goes through a relay.
    pub relayed: bool,
    /// The last ping round trip on a direct connection (or a relayed one
    /// when there is none), once measured.
    pub round_trip: Option<Duration>,
}

/// What the network thread knows of one open connection.
struct ConnectionInfo {
    peer: PeerId,
    /// When it last answered a ping (or opened).
    heard: Instant,
    relayed: bool,
    round_trip: Option<Duration>,
    /// Closed for silence when it stays unanswered: false once it is
    /// closing, or for a peer without ping.
    watched: bool,
}

/// What a started network thread hands back.
pub(crate) struct Started {
    pub(crate) commands: mpsc::UnboundedSender<Command>,
    pub(crate) state: watch::Receiver<NetState>,
}

/// Starts the swarm (as a task on the calling runtime, or on a thread of
/// its own; see [`NetConfig::on_callers_runtime`]) and waits until every
/// listener is bound.
pub(crate) async fn start(
    keypair: Keypair,
    config: NetConfig,
    inbound: mpsc::UnboundedSender<InboundStream>,
) -> Result<Started, NetError> {
    let (ready_sender, ready) = oneshot::channel();
    if config.on_callers_runtime {
        tokio::task::spawn_local(async move {
            if let Some(done) = run_driver(keypair, config, inbound, ready_sender).await {
                let _ = done.send(());
            }
        });
        return ready.await.map_err(|_| NetError::Start {
            reason: "the network stopped while starting".to_string(),
        })?;
    }
    std::thread::Builder::new()
        .name("capstan-net".to_string())
        .spawn(move || run_thread(keypair, config, inbound, ready_sender))
        .map_err(|error| NetError::Start {
            reason: format!("cannot spawn the network thread: {error}"),
        })?;
    ready.await.map_err(|_| NetError::Start {
        reason: "the network thread stopped while starting".to_string(),
    })?
}

fn run_thread(
    keypair: Keypair,
    config: NetConfig,
    inbound: mpsc::UnboundedSender<InboundStream>,
    ready: oneshot::Sender<Result<Started, NetError>>,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            let _ = ready.send(Err(NetError::Start {
                reason: format!("cannot build the network runtime: {error}"),
            }));
            return;
        }
    };
    let done = runtime.block_on(run_driver(keypair, config, inbound, ready));
    // Dropping the runtime drops every connection task and the accept loop,
    // so streams still held elsewhere end.
    drop(runtime);
    if let Some(done) = done {
        let _ = done.send(());
    }
    tracing::debug!("network thread stopped");
}

/// Makes the driver, says whether it started, and runs it until it stops.
async fn run_driver(
    keypair: Keypair,
    config: NetConfig,
    inbound: mpsc::UnboundedSender<InboundStream>,
    ready: oneshot::Sender<Result<Started, NetError>>,
) -> Option<oneshot::Sender<()>> {
    let driver = match Driver::new(keypair, config, inbound).await {
        Ok((driver, started)) => {
            if ready.send(Ok(started)).is_err() {
                return None;
            }
            driver
        }
        Err(error) => {
            let _ = ready.send(Err(error));
            return None;
        }
    };
    driver.run().await
}

/// Someone waiting for a dial to a peer to end.
struct DialWaiter {
    node: NodeId,
    reply: oneshot::Sender<Result<(), NetError>>,
}

struct Driver {
    swarm: Swarm<NodeBehaviour>,
    config: NetConfig,
    control: libp2p_stream::Control,
    commands: mpsc::UnboundedReceiver<Command>,
    state: watch::Sender<NetState>,
    /// Callers waiting for a dial to each peer to succeed or fail.
    dials: HashMap<PeerId, Vec<DialWaiter>>,
    /// The relayed addresses of each peer being dialed. A circuit tried
    /// while its relay is still being dialed for another reason (our
    /// reservation, at start) fails at once, since libp2p's relay client
    /// does not dial a relay twice; so when a connection to that relay is
    /// made, these are dialed again.
    dial_circuits: HashMap<PeerId, Vec<Multiaddr>>,
    /// Those second dials: their failure does not end the first.
    circuit_redials: HashSet<ConnectionId>,
    /// Callers connected to a peer through a relay only, waiting (until
    /// the deadline) for a hole punch to give a direct connection.
    punching: HashMap<PeerId, (Instant, Vec<DialWaiter>)>,
    /// Every open connection.
    connections: HashMap<ConnectionId, ConnectionInfo>,
    relays: Vec<RelayEntry>,
    /// Session streams we opened that may be on a relayed connection, by
    /// peer, with their tokens.
    movable_streams: HashMap<PeerId, Vec<WeakMover>>,
    /// For tasks to tell this loop what they did.
    own_commands: mpsc::UnboundedSender<Command>,
    /// Peers we reach only through a circuit we dialed: when to try a
    /// hole punch again, through which relayed address.
    punch_retries: HashMap<PeerId, PunchRetry>,
}

/// The next hole punch attempt with a peer reached through a relay.
struct PunchRetry {
    address: Multiaddr,
    at: Instant,
    backoff: Duration,
}

impl Driver {
    async fn new(
        keypair: Keypair,
        config: NetConfig,
        inbound: mpsc::UnboundedSender<InboundStream>,
    ) -> Result<(Driver, Started), NetError> {
        let mut swarm = build_swarm(&keypair, &config)?;
        let mut control = swarm.behaviour().streams.new_control();
        let mut relays = Vec::with_capacity(config.relays.len());
        for address in &config.relays {
            if relay_peer(address).is_none() {
                return Err(NetError::Listen {
                    address: address.clone(),
                    reason: "a relay's address must end with /p2p/ and the relay's id".to_string(),
                });
            }
            relays.push(RelayEntry {
                state: RelayState {
                    address: address.clone(),
                    reserved: false,
                    last_error: None,
                },
                listener: None,
                retry_at: Some(Instant::now()),
                backoff: RELAY_RETRY_FIRST,
            });
        }
        let incoming = control.accept(CAPTP_PROTOCOL).map_err(|error| NetError::Start {
            reason: format!("cannot accept {CAPTP_PROTOCOL} streams: {error}"),
        })?;
        let moves = control.accept(CAPTP_MOVE_PROTOCOL).map_err(|error| NetError::Start {
            reason: format!("cannot accept {CAPTP_MOVE_PROTOCOL} streams: {error}"),
        })?;
        let movers = MoveRegistry::default();
        let counts = OpenCounts::default();
        let cap = config.max_inbound_streams_per_peer;
        tokio::spawn(accept_loop(
            incoming,
            cap,
            inbound,
            std::sync::Arc::clone(&movers),
            counts.clone(),
        ));
        tokio::spawn(accept_moves(moves, cap, movers, counts));

        let remembered = config.port_memory.as_deref().map(ports::read).unwrap_or_default();
        let mut pending: HashMap<ListenerId, Listening> = HashMap::new();
        let best_effort = config.listen_best_effort;
        for address in &config.listen_addresses {
            if let Some((listener, listening)) =
                start_listening(&mut swarm, address, remembered.get(address).copied(), best_effort)?
            {
                pending.insert(listener, listening);
            }
        }
        let (state, state_receiver) = watch::channel(NetState::default());
        let (command_sender, commands) = mpsc::unbounded_channel();
        let mut driver = Driver {
            swarm,
            config,
            control,
            commands,
            state,
            dials: HashMap::new(),
            dial_circuits: HashMap::new(),
            circuit_redials: HashSet::new(),
            punching: HashMap::new(),
            connections: HashMap::new(),
            relays,
            movable_streams: HashMap::new(),
            own_commands: command_sender.clone(),
            punch_retries: HashMap::new(),
        };
        // Port 0 is only resolved once the listener reports its address.
        let mut bound_ports: Vec<(Multiaddr, u16)> = Vec::new();
        while !pending.is_empty() {
            let event = driver.swarm.select_next_some().await;
            let failed = match &event {
                SwarmEvent::NewListenAddr {
                    listener_id, address, ..
                } => {
                    if let Some(listening) = pending.remove(listener_id)
                        && ports::port_of(&listening.configured) == Some(0)
                        && let Some(port) = ports::port_of(address)
                    {
                        bound_ports.push((listening.configured, port));
                    }
                    None
                }
                SwarmEvent::ListenerClosed {
                    listener_id, reason, ..
                } => pending.remove(listener_id).map(|listening| {
                    let reason = match reason {
                        Ok(()) => "the listener closed".to_string(),
                        Err(error) => error.to_string(),
                    };
                    (*listener_id, listening, reason)
                }),
                SwarmEvent::ListenerError { listener_id, error } => pending
                    .remove(listener_id)
                    .map(|listening| (*listener_id, listening, error.to_string())),
                _ => None,
            };
            driver.handle_event(event);
            if let Some((listener, listening, reason)) = failed {
                driver.swarm.remove_listener(listener);
                let retry = if listening.on_remembered_port {
                    tracing::info!(address = %listening.configured, %reason, "the port used last time failed; picking a new one");
                    listening.configured
                } else if best_effort && ports::port_of(&listening.configured) != Some(0) {
                    tracing::warn!(address = %listening.configured, %reason, "cannot listen on this port; picking a new one");
                    ports::with_port(&listening.configured, 0)
                } else if best_effort {
                    tracing::warn!(address = %listening.configured, %reason, "cannot listen here; going on without it");
                    continue;
                } else {
                    let address = listening.configured;
                    return Err(NetError::Listen { address, reason });
                };
                if let Some((listener, listening)) = start_listening(&mut driver.swarm, &retry, None, best_effort)? {
                    pending.insert(listener, listening);
                }
            }
        }
        if driver.state.borrow().listen_addresses.is_empty()
            && let Some(address) = driver.config.listen_addresses.first()
        {
            return Err(NetError::Listen {
                address: address.clone(),
                reason: "no listen address could be bound".to_string(),
            });
        }
        if driver.config.relay_service.is_some() {
            driver.announce_relay_addresses();
        }
        driver.publish_relays();
        driver.reserve_on_relays();
        if let Some(path) = &driver.config.port_memory
            && let Err(error) = ports::write(path, &bound_ports)
        {
            tracing::warn!(path = %path.display(), %error, "cannot keep the ports listened on");
        }
        tracing::info!(
            node = %node_id_of(driver.swarm.local_peer_id()).map(|node| node.to_string()).unwrap_or_default(),
            addresses = ?driver.state.borrow().listen_addresses,
            "network listening"
        );
        let started = Started {
            commands: command_sender,
            state: state_receiver,
        };
        Ok((driver, started))
    }

    /// Runs until a shutdown command or every handle is gone.
    async fn run(mut self) -> Option<oneshot::Sender<()>> {
        let mut liveness = tokio::time::interval(LIVENESS_CHECK);
        liveness.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let done = loop {
            tokio::select! {
                command = self.commands.recv() => match command {
                    Some(Command::Shutdown { done }) => break done,
                    Some(command) => self.handle_command(command),
                    None => break None,
                },
                event = self.swarm.select_next_some() => self.handle_event(event),
                _ = liveness.tick() => {
                    self.close_silent_connections();
                    self.reserve_on_relays();
                    self.stop_waiting_for_punches();
                    self.retry_hole_punches();
                }
            }
        };
        self.close_connections().await;
        done
    }

    fn handle_command(&mut self, command: Command) {
        match command {
            Command::OpenStream {
                node,
                peer,
                addresses,
                reply,
            } => {
                let connected = self.connect(node, peer, addresses);
                let mut control = self.control.clone();
                let timeout = self.config.dial_timeout;
                let own_commands = self.own_commands.clone();
                tokio::spawn(async move {
                    let open =
                        async {
                            connected.await.map_err(|_| NetError::Stopped)??;
                            let stream = control.open_stream(peer, CAPTP_PROTOCOL).await.map_err(|error| {
                                NetError::OpenStream {
                                    node,
                                    reason: error.to_string(),
                                }
                            })?;
                            let (reader, writer, mover, _) =
                                open_session_stream(stream)
                                    .await
                                    .map_err(|error| NetError::OpenStream {
                                        node,
                                        reason: error.to_string(),
                                    })?;
                            let _ = own_commands.send(Command::Opened {
                                peer,
                                mover: mover.downgrade(),
                            });
                            Ok((reader, writer))
                        };
                    let outcome = match tokio::time::timeout(timeout, open).await {
                        Ok(outcome) => outcome,
                        Err(_) => Err(NetError::DialTimeout { node, after: timeout }),
                    };
                    if let Err(error) = &outcome {
                        tracing::info!(%node, %error, "opening a stream failed");
                    }
                    let _ = reply.send(outcome);
                });
            }
            Command::AddAddresses { peer, addresses } => {
                for address in addresses {
                    self.swarm.add_peer_address(peer, address);
                }
            }
            Command::Disconnect { peer } => {
                let _ = self.swarm.disconnect_peer_id(peer);
            }
            Command::Opened { peer, mover } => {
                let relayed = self.connections.values().any(|info| info.peer == peer && info.relayed);
                if !relayed {
                    return;
                }
                if self.has_direct_connection(peer) {
                    // It may have gone on the relayed one just before.
                    self.move_stream(peer, mover);
                } else {
                    let streams = self.movable_streams.entry(peer).or_default();
                    streams.retain(|stream| !stream.is_gone());
                    streams.push(mover);
                }
            }
            Command::Shutdown { .. } => {}
        }
    }

    /// Makes sure there is a connection to `peer`: at once if there is one,
    /// otherwise once a dial (ours or one already in flight) ends.
    fn connect(
        &mut self,
        node: NodeId,
        peer: PeerId,
        addresses: Vec<Multiaddr>,
    ) -> oneshot::Receiver<Result<(), NetError>> {
        let (reply, connected) = oneshot::channel();
        let circuits: Vec<Multiaddr> = addresses
            .iter()
            .filter(|address| circuit_relay(address).is_some())
            .cloned()
            .collect();
        for address in addresses {
            self.swarm.add_peer_address(peer, address);
        }
        if let Some((_, waiters)) = self.punching.get_mut(&peer) {
            waiters.push(DialWaiter { node, reply });
            return connected;
        }
        if self.swarm.is_connected(&peer) {
            let _ = reply.send(Ok(()));
            return connected;
        }
        let waiters = self.dials.entry(peer).or_default();
        waiters.retain(|waiter| !waiter.reply.is_closed());
        waiters.push(DialWaiter { node, reply });
        // Addresses come from the address book, where they were just added.
        let dial = DialOpts::peer_id(peer)
            .condition(PeerCondition::DisconnectedAndNotDialing)
            .build();
        match self.swarm.dial(dial) {
            Ok(()) => tracing::debug!(%node, "dialing"),
            // A dial is in flight; its outcome answers this caller too.
            Err(DialError::DialPeerConditionFalse(_)) => {}
            Err(error) => {
                self.dial_ended(peer, Err(error));
                return connected;
            }
        }
        if !circuits.is_empty() {
            let known = self.dial_circuits.entry(peer).or_default();
            for circuit in circuits {
                if !known.contains(&circuit) {
                    known.push(circuit);
                }
            }
        }
        connected
    }

    /// Dials again, through `relay` (just connected directly), each peer
    /// still being dialed that has an address through it.
    fn redial_through(&mut self, relay: PeerId) {
        let mut redials = Vec::new();
        for (peer, circuits) in &self.dial_circuits {
            let through: Vec<Multiaddr> = circuits
                .iter()
                .filter(|address| circuit_relay(address) == Some(relay))
                .cloned()
                .collect();
            if !through.is_empty() && self.dials.contains_key(peer) {
                redials.push((*peer, through));
            }
        }
        for (peer, through) in redials {
            let dial = DialOpts::peer_id(peer)
                .addresses(through)
                .condition(PeerCondition::Always)
                .build();
            let id = dial.connection_id();
            match self.swarm.dial(dial) {
                Ok(()) => {
                    tracing::debug!(peer = %describe_peer(&peer), "dialing again through a relay just connected");
                    self.circuit_redials.insert(id);
                }
                Err(error) => tracing::debug!(peer = %describe_peer(&peer), %error, "cannot dial through a relay"),
            }
        }
    }

    fn dial_ended(&mut self, peer: PeerId, outcome: Result<(), DialError>) {
        self.dial_circuits.remove(&peer);
        let Some(waiters) = self.dials.remove(&peer) else {
            return;
        };
        for waiter in waiters {
            let result = match &outcome {
                Ok(()) => Ok(()),
                Err(error) => Err(dial_error(waiter.node, error)),
            };
            let _ = waiter.reply.send(result);
        }
    }

    fn handle_event(&mut self, event: SwarmEvent<NodeBehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr { listener_id, address } => {
                tracing::debug!(%address, "listening");
                if let Some(relay) = self.relays.iter_mut().find(|relay| relay.listener == Some(listener_id)) {
                    tracing::info!(relay = %relay.state.address, %address, "reachable through a relay");
                    relay.state.reserved = true;
                    relay.state.last_error = None;
                    relay.backoff = RELAY_RETRY_FIRST;
                    self.publish_relays();
                }
                self.state.send_modify(|state| state.listen_addresses.push(address));
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                self.state
                    .send_modify(|state| state.listen_addresses.retain(|listening| *listening != address));
            }
            SwarmEvent::ListenerClosed {
                listener_id,
                addresses,
                reason,
            } => {
                if self.relays.iter().any(|relay| relay.listener == Some(listener_id)) {
                    let why = match &reason {
                        Ok(()) => "the relay closed the reservation".to_string(),
                        Err(error) => error_chain(error),
                    };
                    self.relay_lost(listener_id, why);
                } else if let Err(error) = reason {
                    tracing::warn!(?addresses, %error, "a listener closed");
                }
                self.state.send_modify(|state| {
                    state
                        .listen_addresses
                        .retain(|listening| !addresses.contains(listening))
                });
            }
            SwarmEvent::ListenerError { error, .. } => tracing::warn!(%error, "listener error"),
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                num_established,
                ..
            } => {
                tracing::info!(
                    peer = %describe_peer(&peer_id),
                    address = %endpoint.get_remote_address(),
                    dialer = endpoint.is_dialer(),
                    connections = num_established.get(),
                    "connection established"
                );
                // On the listening side the remote address of a relayed
                // connection is only the peer's id; the local one says.
                let relayed = endpoint.is_relayed();
                self.circuit_redials.remove(&connection_id);
                if !relayed && !self.dial_circuits.is_empty() {
                    self.redial_through(peer_id);
                }
                self.connections.insert(
                    connection_id,
                    ConnectionInfo {
                        peer: peer_id,
                        heard: Instant::now(),
                        relayed,
                        round_trip: None,
                        watched: true,
                    },
                );
                if relayed && !self.has_direct_connection(peer_id) {
                    // Hold the callers until a hole punch or its deadline.
                    let waiters = self.dials.remove(&peer_id).unwrap_or_default();
                    self.dial_circuits.remove(&peer_id);
                    let wait = self.config.hole_punch_wait;
                    let (_, punching) = self
                        .punching
                        .entry(peer_id)
                        .or_insert_with(|| (Instant::now() + wait, Vec::new()));
                    punching.extend(waiters);
                    if endpoint.is_dialer() {
                        let first = self.config.hole_punch_retry;
                        self.punch_retries.entry(peer_id).or_insert_with(|| PunchRetry {
                            address: endpoint.get_remote_address().clone(),
                            at: Instant::now() + first,
                            backoff: first,
                        });
                    }
                } else {
                    self.punch_retries.remove(&peer_id);
                    self.dial_ended(peer_id, Ok(()));
                    self.punch_ended(peer_id);
                    for stream in self.movable_streams.remove(&peer_id).unwrap_or_default() {
                        self.move_stream(peer_id, stream);
                    }
                }
                self.publish_connected();
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                num_established,
                cause,
                ..
            } => {
                self.connections.remove(&connection_id);
                if num_established == 0 {
                    self.punch_ended(peer_id);
                    self.punch_retries.remove(&peer_id);
                    self.movable_streams.remove(&peer_id);
                }
                tracing::info!(
                    peer = %describe_peer(&peer_id),
                    connections = num_established,
                    cause = cause.map(|cause| cause.to_string()).unwrap_or_else(|| "closed".to_string()),
                    "connection closed"
                );
                self.publish_connected();
            }
            SwarmEvent::OutgoingConnectionError {
                peer_id: Some(peer),
                connection_id,
                error,
            } if self.circuit_redials.remove(&connection_id) => {
                tracing::debug!(peer = %describe_peer(&peer), %error, "dialing again through a relay failed");
            }
            SwarmEvent::OutgoingConnectionError {
                peer_id: Some(peer),
                error,
                ..
            } => {
                tracing::info!(peer = %describe_peer(&peer), %error, "dial failed");
                self.dial_ended(peer, Err(error));
            }
            SwarmEvent::IncomingConnectionError {
                send_back_addr,
                error: ListenError::Denied { cause },
                ..
            } => {
                // The denial's own text says only "connection denied"; its
                // source says which limit (or gate) refused.
                let cause = std::error::Error::source(&cause).map_or_else(|| cause.to_string(), ToString::to_string);
                tracing::warn!(address = %send_back_addr, %cause, "refused an incoming connection");
            }
            SwarmEvent::IncomingConnectionError {
                send_back_addr, error, ..
            } => {
                tracing::debug!(address = %send_back_addr, %error, "incoming connection failed");
            }
            SwarmEvent::Behaviour(NodeBehaviourEvent::Ping(ping::Event {
                connection,
                result: Ok(round_trip),
                ..
            })) => {
                if let Some(info) = self.connections.get_mut(&connection) {
                    info.heard = Instant::now();
                    info.round_trip = Some(round_trip);
                }
                self.publish_connected();
            }
            SwarmEvent::Behaviour(NodeBehaviourEvent::Ping(ping::Event {
                peer,
                connection,
                result: Err(failure),
            })) => self.ping_failed(peer, connection, failure),
            SwarmEvent::ExternalAddrConfirmed { address } => {
                tracing::info!(%address, "external address confirmed");
                self.publish_external_addresses();
            }
            SwarmEvent::ExternalAddrExpired { address } => {
                tracing::info!(%address, "external address expired");
                self.publish_external_addresses();
            }
            SwarmEvent::Behaviour(NodeBehaviourEvent::Autonat(autonat::Event::StatusChanged { new, .. })) => {
                let reachability = match new {
                    autonat::NatStatus::Public(_) => Reachability::Public,
                    autonat::NatStatus::Private => Reachability::Private,
                    autonat::NatStatus::Unknown => Reachability::Unknown,
                };
                tracing::info!(reachability = reachability.label(), "reachability found");
                self.state.send_modify(|state| state.reachability = reachability);
            }
            SwarmEvent::Behaviour(NodeBehaviourEvent::RelayClient(event)) => {
                tracing::debug!(?event, "relay client");
            }
            SwarmEvent::Behaviour(NodeBehaviourEvent::RelayService(event)) => log_relay_service(&event),
            SwarmEvent::Behaviour(NodeBehaviourEvent::Dcutr(dcutr::Event { remote_peer_id, result })) => {
                match result {
                    Ok(_) => tracing::info!(peer = %describe_peer(&remote_peer_id), "hole punched: direct connection"),
                    Err(error) => tracing::info!(
                        peer = %describe_peer(&remote_peer_id),
                        error = %error_chain(&error),
                        "hole punching failed; staying relayed"
                    ),
                }
                self.punch_ended(remote_peer_id);
            }
            SwarmEvent::Behaviour(NodeBehaviourEvent::Identify(identify::Event::Received {
                peer_id, info, ..
            })) => {
                tracing::debug!(
                    peer = %describe_peer(&peer_id),
                    agent = %info.agent_version,
                    addresses = ?info.listen_addrs,
                    "identified"
                );
            }
            _ => {}
        }
    }

    /// Dials peers reached only through a relay again through it, when
    /// due: DCUtR tries a hole punch on every new relayed connection, and
    /// NATs (or the first attempt's timing) may allow it now.
    fn retry_hole_punches(&mut self) {
        let now = Instant::now();
        let due: Vec<PeerId> = self
            .punch_retries
            .iter()
            .filter(|(_, retry)| retry.at <= now)
            .map(|(peer, _)| *peer)
            .collect();
        for peer in due {
            if self.has_direct_connection(peer) || !self.swarm.is_connected(&peer) {
                self.punch_retries.remove(&peer);
                continue;
            }
            let Some(retry) = self.punch_retries.get_mut(&peer) else {
                continue;
            };
            tracing::debug!(peer = %describe_peer(&peer), "trying a hole punch again");
            let dial = DialOpts::peer_id(peer)
                .addresses(vec![retry.address.clone()])
                .condition(PeerCondition::Always)
                .build();
            retry.backoff = (retry.backoff * 2).min(HOLE_PUNCH_RETRY_MAX);
            retry.at = now + retry.backoff;
            if let Err(error) = self.swarm.dial(dial) {
                tracing::debug!(peer = %describe_peer(&peer), %error, "cannot dial through the relay again");
            }
        }
    }

    /// Moves a session stream we opened to a new stream, which goes on a
    /// direct connection (see `placement`).
    fn move_stream(&mut self, peer: PeerId, stream: WeakMover) {
        let mut control = self.control.clone();
        let timeout = self.config.dial_timeout;
        tokio::spawn(async move {
            let moved = async {
                let mover = stream.upgrade().map_err(|error| error.to_string())?;
                let (reader, mut writer) = split(
                    control
                        .open_stream(peer, CAPTP_MOVE_PROTOCOL)
                        .await
                        .map_err(|error| error.to_string())?,
                    None,
                );
                writer
                    .write_all(&mover.token())
                    .await
                    .map_err(|error| error.to_string())?;
                mover.offer(reader, writer).map_err(|error| error.to_string())?;
                Ok::<_, String>(mover)
            };
            match tokio::time::timeout(timeout, moved).await {
                Ok(Ok(mover)) => {
                    tracing::info!(peer = %describe_peer(&peer), "moving a session stream to a direct connection");
                    finish_move(mover.writer_state()).await;
                }
                Ok(Err(why)) => tracing::info!(peer = %describe_peer(&peer), %why, "cannot move a session stream"),
                Err(_) => tracing::info!(peer = %describe_peer(&peer), "moving a session stream timed out"),
            }
        });
    }

    fn has_direct_connection(&self, peer: PeerId) -> bool {
        self.connections.values().any(|info| info.peer == peer && !info.relayed)
    }

    /// The hole punch with `peer` succeeded, failed, or no longer matters:
    /// its waiting callers go on (on whatever connection there is).
    fn punch_ended(&mut self, peer: PeerId) {
        if let Some((_, waiters)) = self.punching.remove(&peer) {
            for waiter in waiters {
                let _ = waiter.reply.send(Ok(()));
            }
        }
    }

    /// Lets go of callers whose punch deadline passed, so a punch that
    /// never ends does not hold them.
    fn stop_waiting_for_punches(&mut self) {
        let now = Instant::now();
        let due: Vec<PeerId> = self
            .punching
            .iter()
            .filter(|(_, (deadline, _))| *deadline <= now)
            .map(|(peer, _)| *peer)
            .collect();
        for peer in due {
            tracing::debug!(peer = %describe_peer(&peer), "no hole punch in time; going on relayed");
            self.punch_ended(peer);
        }
    }

    /// libp2p's ping only reports; a peer that stops answering is cut here
    /// so its streams end rather than hang.
    fn ping_failed(&mut self, peer: PeerId, connection: ConnectionId, failure: ping::Failure) {
        if matches!(failure, ping::Failure::Unsupported) {
            // Nothing to measure it by: it is closed only when idle.
            if let Some(info) = self.connections.get_mut(&connection) {
                info.watched = false;
            }
            return;
        }
        tracing::warn!(peer = %describe_peer(&peer), %failure, "ping failed; closing the connection");
        self.swarm.close_connection(connection);
    }

    /// Closes connections that have answered no ping for an interval plus
    /// the timeout. libp2p's ping reports only a second failure in a row
    /// (the first is "free"), after another interval and a stream
    /// negotiation, which left a silent partition unnoticed for about
    /// 30 s; this bounds it by `ping_interval + ping_timeout`.
    fn close_silent_connections(&mut self) {
        let bound = self.config.ping_interval + self.config.ping_timeout;
        let now = Instant::now();
        let silent: Vec<(ConnectionId, PeerId, Duration)> = self
            .connections
            .iter()
            .filter_map(|(connection, info)| {
                let silence = now.saturating_duration_since(info.heard);
                (info.watched && silence > bound).then_some((*connection, info.peer, silence))
            })
            .collect();
        for (connection, peer, silence) in silent {
            tracing::warn!(
                peer = %describe_peer(&peer),
                silent_ms = silence.as_millis(),
                "no ping answered; closing the connection"
            );
            // Closed once: its entry goes when the close completes.
            if let Some(info) = self.connections.get_mut(&connection) {
                info.watched = false;
            }
            self.swarm.close_connection(connection);
        }
    }

    /// Asks each configured relay that holds no reservation for us (and is
    /// due) for one, by listening on a circuit through it.
    fn reserve_on_relays(&mut self) {
        let now = Instant::now();
        for index in 0..self.relays.len() {
            let relay = &mut self.relays[index];
            if relay.listener.is_some() || relay.retry_at.is_none_or(|at| at > now) {
                continue;
            }
            relay.retry_at = None;
            let circuit = relay.state.address.clone().with(Protocol::P2pCircuit);
            match self.swarm.listen_on(circuit) {
                Ok(listener) => {
                    tracing::debug!(relay = %self.relays[index].state.address, "asking a relay for a reservation");
                    self.relays[index].listener = Some(listener);
                }
                Err(error) => {
                    let why = error_chain(&error);
                    self.relay_failed(index, why);
                }
            }
        }
    }

    /// A relay's reservation ended or was refused: try again later.
    fn relay_lost(&mut self, listener: ListenerId, why: String) {
        if let Some(index) = self.relays.iter().position(|relay| relay.listener == Some(listener)) {
            self.relays[index].listener = None;
            self.relay_failed(index, why);
        }
    }

    fn relay_failed(&mut self, index: usize, why: String) {
        let relay = &mut self.relays[index];
        tracing::warn!(
            relay = %relay.state.address,
            reason = %why,
            retry_in_ms = relay.backoff.as_millis(),
            "no reservation on a relay"
        );
        relay.state.reserved = false;
        relay.state.last_error = Some(why);
        relay.retry_at = Some(Instant::now() + relay.backoff);
        relay.backoff = (relay.backoff * 2).min(RELAY_RETRY_MAX);
        self.publish_relays();
    }

    fn publish_relays(&mut self) {
        let relays: Vec<RelayState> = self.relays.iter().map(|relay| relay.state.clone()).collect();
        let relay_service = self.config.relay_service.is_some();
        self.state.send_modify(|state| {
            state.relays = relays;
            state.relay_service = relay_service;
        });
    }

    fn publish_external_addresses(&mut self) {
        let addresses: Vec<Multiaddr> = self.swarm.external_addresses().cloned().collect();
        self.state.send_modify(|state| state.external_addresses = addresses);
    }

    /// A relay must tell the nodes it serves where it can be reached: its
    /// listen addresses others can dial (all of them on a loopback-only
    /// node), taken as confirmed external addresses.
    fn announce_relay_addresses(&mut self) {
        let listening = self.state.borrow().listen_addresses.clone();
        let reachable: Vec<Multiaddr> = listening
            .iter()
            .filter(|address| !is_host_only(address))
            .cloned()
            .collect();
        let announced = if reachable.is_empty() { listening } else { reachable };
        for address in announced {
            self.swarm.add_external_address(address);
        }
        self.publish_external_addresses();
    }

    fn publish_connected(&mut self) {
        let connected: HashSet<NodeId> = self
            .swarm
            .connected_peers()
            .filter_map(|peer| node_id_of(peer).ok())
            .collect();
        let mut links: HashMap<NodeId, Link> = HashMap::new();
        for info in self.connections.values() {
            let Ok(node) = node_id_of(&info.peer) else { continue };
            let link = links.entry(node).or_insert(Link {
                relayed: true,
                round_trip: None,
            });
            // A direct connection wins, and so does its round trip.
            if !info.relayed && link.relayed {
                *link = Link {
                    relayed: false,
                    round_trip: info.round_trip,
                };
            } else if info.relayed == link.relayed && info.round_trip.is_some() {
                link.round_trip = info.round_trip;
            }
        }
        let mut connected: Vec<NodeId> = connected.into_iter().collect();
        connected.sort();
        self.state.send_modify(|state| {
            state.connected = connected;
            state.links = links;
        });
    }

    /// Closes every connection and waits (briefly) for them to go, so
    /// peers see a clean close instead of waiting for a timeout.
    async fn close_connections(&mut self) {
        let peers: Vec<PeerId> = self.swarm.connected_peers().copied().collect();
        for peer in peers {
            let _ = self.swarm.disconnect_peer_id(peer);
        }
        let punching = std::mem::take(&mut self.punching)
            .into_values()
            .map(|(_, waiters)| waiters);
        for waiters in std::mem::take(&mut self.dials).into_values().chain(punching) {
            for waiter in waiters {
                let _ = waiter.reply.send(Err(NetError::Stopped));
            }
        }
        let drained = tokio::time::timeout(GRACEFUL_CLOSE, async {
            while self.swarm.connected_peers().next().is_some() {
                let event = self.swarm.select_next_some().await;
                self.handle_event(event);
            }
        });
        if drained.await.is_err() {
            tracing::debug!("some connections did not close in time; dropping them");
        }
    }
}

/// A listener being started: the address it was configured with, and
/// whether it is trying the port used last time.
struct Listening {
    configured: Multiaddr,
    on_remembered_port: bool,
}

/// Listens on `configured`, or first on it with `remembered` as its port
/// (the one picked last time for a port-0 address) if that port is free.
/// With `best_effort` (the default addresses), a taken port falls back to
/// a new one and an address that cannot be bound at all (no IPv6 here,
/// say) is skipped with a warning: `None`.
fn start_listening(
    swarm: &mut Swarm<NodeBehaviour>,
    configured: &Multiaddr,
    remembered: Option<u16>,
    best_effort: bool,
) -> Result<Option<(ListenerId, Listening)>, NetError> {
    if let Some(port) = remembered {
        let previous = ports::with_port(configured, port);
        match swarm.listen_on(previous.clone()) {
            Ok(listener) => {
                let listening = Listening {
                    configured: configured.clone(),
                    on_remembered_port: true,
                };
                return Ok(Some((listener, listening)));
            }
            Err(error) => {
                tracing::info!(address = %previous, %error, "the port used last time is taken; picking a new one");
            }
        }
    }
    let listener = match swarm.listen_on(configured.clone()) {
        Ok(listener) => listener,
        Err(error) if best_effort && ports::port_of(configured).is_some_and(|port| port != 0) => {
            tracing::warn!(address = %configured, %error, "cannot listen on this port; picking a new one");
            return start_listening(swarm, &ports::with_port(configured, 0), None, best_effort);
        }
        Err(error) if best_effort => {
            tracing::warn!(address = %configured, %error, "cannot listen here; going on without it");
            return Ok(None);
        }
        Err(error) => {
            return Err(NetError::Listen {
                address: configured.clone(),
                reason: error.to_string(),
            });
        }
    };
    let listening = Listening {
        configured: configured.clone(),
        on_remembered_port: false,
    };
    Ok(Some((listener, listening)))
}

fn build_swarm(keypair: &Keypair, config: &NetConfig) -> Result<Swarm<NodeBehaviour>, NetError> {
    let peer = keypair.public().to_peer_id();
    let (relay_transport, relay_client) = relay::client::new(peer);
    let transport = build_transport(keypair, config, relay_transport)?;
    let limits = connection_limits::ConnectionLimits::default()
        .with_max_established_per_peer(Some(config.max_connections_per_peer))
        .with_max_established(Some(config.max_connections_total))
        .with_max_pending_incoming(Some(config.max_pending_connections));
    let behaviour = NodeBehaviour {
        limits: connection_limits::Behaviour::new(limits),
        gate: PeerGate::new(),
        identify: identify::Behaviour::new(
            identify::Config::new(IDENTIFY_PROTOCOL.to_string(), keypair.public())
                .with_agent_version(format!("capstan/{}", env!("CARGO_PKG_VERSION"))),
        ),
        ping: ping::Behaviour::new(
            ping::Config::new()
                .with_interval(config.ping_interval)
                .with_timeout(config.ping_timeout),
        ),
        autonat: autonat::Behaviour::new(peer, autonat_config(config.relay_service.is_some())),
        relay_client,
        relay_service: Toggle::from(
            config
                .relay_service
                .as_ref()
                .map(|limits| relay::Behaviour::new(peer, relay_config(limits))),
        ),
        dcutr: dcutr::Behaviour::new(peer),
        streams: DirectFirst::new(),
    };
    let swarm_config = if config.on_callers_runtime {
        libp2p::swarm::Config::with_executor(OnCallersLocalSet)
    } else {
        libp2p::swarm::Config::with_tokio_executor()
    }
    .with_idle_connection_timeout(config.idle_connection_timeout);
    Ok(Swarm::new(
        transport,
        behaviour,
        keypair.public().to_peer_id(),
        swarm_config,
    ))
}

/// Runs the swarm's connection tasks on the `LocalSet` its own task runs
/// on (the vat's), beside the sessions reading their streams: a stream's
/// data then wakes its reader within the set, which costs the runtime no
/// extra pass over its I/O driver.
struct OnCallersLocalSet;

impl libp2p::swarm::Executor for OnCallersLocalSet {
    fn exec(&self, future: std::pin::Pin<Box<dyn Future<Output = ()> + Send>>) {
        tokio::task::spawn_local(future);
    }
}

/// AutoNAT asks peers soon after start, and again now and then, whether
/// they can dial us back. Addresses in private ranges count: a node on a
/// LAN is reachable from that LAN. Only relays dial back when asked
/// (`serving`): each dial-back is a connection, and a node with tight
/// connection limits must not spend them on strangers' probes.
fn autonat_config(serving: bool) -> autonat::Config {
    let defaults = autonat::Config::default();
    autonat::Config {
        throttle_clients_global_max: if serving {
            defaults.throttle_clients_global_max
        } else {
            0
        },
        boot_delay: Duration::from_secs(2),
        retry_interval: Duration::from_secs(20),
        refresh_interval: Duration::from_secs(5 * 60),
        timeout: Duration::from_secs(10),
        only_global_ips: false,
        ..defaults
    }
}

fn relay_config(limits: &RelayLimits) -> relay::Config {
    relay::Config {
        max_reservations: limits.reservations,
        max_reservations_per_peer: limits.reservations_per_peer,
        reservation_duration: limits.reservation_duration,
        max_circuits: limits.circuits,
        max_circuits_per_peer: limits.circuits_per_peer,
        max_circuit_duration: limits.circuit_duration,
        max_circuit_bytes: limits.circuit_bytes,
        ..relay::Config::default()
    }
}

/// TCP + Noise + yamux (with a bound on the whole handshake, which the
/// stock builder does not set, and streams that end with their connection:
/// see [`super::muxer`]), QUIC, or a relay circuit with Noise + yamux
/// inside it (so the relay sees only ciphertext).
fn build_transport(
    keypair: &Keypair,
    config: &NetConfig,
    relay_transport: relay::client::Transport,
) -> Result<Boxed<(PeerId, StreamMuxerBox)>, NetError> {
    let noise = || {
        noise::Config::new(keypair).map_err(|error| NetError::Start {
            reason: format!("cannot set up Noise: {error}"),
        })
    };
    let handshake_bound = config.dial_timeout + HANDSHAKE_MARGIN;
    let tcp = tcp::tokio::Transport::new(tcp::Config::default().nodelay(true))
        .upgrade(upgrade::Version::V1Lazy)
        .authenticate(noise()?)
        .multiplex(yamux::Config::default())
        .timeout(handshake_bound);
    let relayed = relay_transport
        .upgrade(upgrade::Version::V1Lazy)
        .authenticate(noise()?)
        .multiplex(yamux::Config::default())
        .timeout(handshake_bound);
    let mut quic_config = quic::Config::new(keypair);
    quic_config.handshake_timeout = config.dial_timeout + HANDSHAKE_MARGIN;
    quic_config.max_idle_timeout = u32::try_from(config.quic_max_idle_timeout.as_millis()).unwrap_or(u32::MAX);
    quic_config.keep_alive_interval = config.quic_max_idle_timeout / 2;
    let quic = quic::tokio::Transport::new(quic_config);
    Ok(tcp
        .map(|(peer, muxer), _| (peer, StreamMuxerBox::new(EndingMuxer::new(muxer))))
        .or_transport(quic.map(|(peer, connection), _| (peer, StreamMuxerBox::new(connection))))
        .map(|either, _| either.into_inner())
        .or_transport(relayed.map(|(peer, muxer), _| (peer, StreamMuxerBox::new(EndingMuxer::new(muxer)))))
        .map(|either, _| either.into_inner())
        .boxed())
}

/// The relay's peer id: the last `/p2p/` of its address.
/// The relay a circuit address goes through: the peer id just before
/// `/p2p-circuit`; `None` if `address` is not a circuit.
fn circuit_relay(address: &Multiaddr) -> Option<PeerId> {
    let mut last_peer = None;
    for protocol in address.iter() {
        match protocol {
            Protocol::P2p(peer) => last_peer = Some(peer),
            Protocol::P2pCircuit => return last_peer,
            _ => {}
        }
    }
    None
}

fn relay_peer(address: &Multiaddr) -> Option<PeerId> {
    address.iter().fold(None, |found, protocol| match protocol {
        Protocol::P2p(peer) => Some(peer),
        _ => found,
    })
}

/// Loopback, unspecified and link-local addresses reach only this host
/// (or link): never announced when there is anything else.
fn is_host_only(address: &Multiaddr) -> bool {
    match address.iter().next() {
        Some(Protocol::Ip4(ip)) => ip.is_loopback() || ip.is_unspecified() || ip.is_link_local(),
        Some(Protocol::Ip6(ip)) => ip.is_loopback() || ip.is_unspecified() || ip.is_unicast_link_local(),
        _ => false,
    }
}

fn log_relay_service(event: &relay::Event) {
    match event {
        relay::Event::ReservationReqAccepted { src_peer_id, renewed } => {
            tracing::info!(peer = %describe_peer(src_peer_id), renewed, "relay: reservation accepted");
        }
        relay::Event::ReservationReqDenied { src_peer_id, status } => {
            tracing::warn!(peer = %describe_peer(src_peer_id), ?status, "relay: reservation refused");
        }
        relay::Event::CircuitReqAccepted {
            src_peer_id,
            dst_peer_id,
        } => tracing::info!(
            from = %describe_peer(src_peer_id),
            to = %describe_peer(dst_peer_id),
            "relay: circuit opened"
        ),
        relay::Event::CircuitReqDenied {
            src_peer_id,
            dst_peer_id,
            status,
        } => tracing::warn!(
            from = %describe_peer(src_peer_id),
            to = %describe_peer(dst_peer_id),
            ?status,
            "relay: circuit refused"
        ),
        relay::Event::CircuitClosed {
            src_peer_id,
            dst_peer_id,
            error,
        } => tracing::info!(
            from = %describe_peer(src_peer_id),
            to = %describe_peer(dst_peer_id),
            error = error.as_ref().map(|error| error.to_string()).unwrap_or_default(),
            "relay: circuit closed"
        ),
        other => tracing::debug!(?other, "relay"),
    }
}

/// A dial's failure, named for the node it was for.
fn dial_error(node: NodeId, error: &DialError) -> NetError {
    match error {
        DialError::WrongPeerId { obtained, address } => NetError::WrongPeer {
            expected: node,
            answered: describe_peer(obtained),
            address: address.clone(),
        },
        DialError::NoAddresses => NetError::NoAddresses { node },
        DialError::LocalPeerId { .. } => NetError::DialSelf { node },
        DialError::Transport(attempts) => NetError::Unreachable {
            node,
            reason: attempts
                .iter()
                .map(|(address, error)| format!("{address}: {}", transport_error_text(error)))
                .collect::<Vec<_>>()
                .join("; "),
        },
        other => NetError::Unreachable {
            node,
            reason: other.to_string(),
        },
    }
}

/// A transport error with its causes, which libp2p keeps in `source()`.
fn transport_error_text(error: &libp2p::TransportError<std::io::Error>) -> String {
    error_chain(error)
}

/// An error and its causes, joined.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![error.to_string()];
    let mut source = error.source();
    while let Some(cause) = source {
        parts.push(cause.to_string());
        source = cause.source();
    }
    parts.retain(|part| !part.is_empty());
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_circuits_relay_is_the_peer_before_p2p_circuit() {
        let relay = PeerId::random();
        let target = PeerId::random();
        let circuit: Multiaddr = format!("/ip4/198.51.100.2/tcp/4001/p2p/{relay}/p2p-circuit/p2p/{target}")
            .parse()
            .unwrap();
        assert_eq!(circuit_relay(&circuit), Some(relay));
        let direct: Multiaddr = format!("/ip4/198.51.100.2/tcp/4001/p2p/{target}").parse().unwrap();
        assert_eq!(circuit_relay(&direct), None);
        let no_relay_id: Multiaddr = "/ip4/198.51.100.2/tcp/4001/p2p-circuit".parse().unwrap();
        assert_eq!(circuit_relay(&no_relay_id), None);
    }
}
