//! What the caller decides about the node's networking: where it listens,
//! how long a dial may take, how many inbound streams and connections a
//! peer (and all peers together) may hold; which relays it keeps a
//! reservation on, and whether it serves as one.

use std::path::PathBuf;
use std::time::Duration;

use libp2p::Multiaddr;

#[derive(Clone, Debug)]
pub struct NetConfig {
    /// Where to listen, e.g. `/ip4/127.0.0.1/tcp/0` or
    /// `/ip4/0.0.0.0/udp/0/quic-v1`. Port 0 picks a free port; the bound
    /// addresses are in [`super::Network::listen_addresses`].
    pub listen_addresses: Vec<Multiaddr>,
    /// How many streams one peer may have open to us at once (counted until
    /// both halves are dropped); streams beyond it are reset, with a log line.
    pub max_inbound_streams_per_peer: usize,
    /// Connections one peer may have with us at once (both directions);
    /// more are refused, with a log line.
    pub max_connections_per_peer: u32,
    /// Connections with all peers at once.
    pub max_connections_total: u32,
    /// Incoming connections still in their handshake at once.
    pub max_pending_connections: u32,
    /// Bounds [`super::Network::open_stream`] as a whole (dial, handshake,
    /// stream negotiation), and each connection's handshake.
    pub dial_timeout: Duration,
    /// How long a connection with no open stream stays up.
    pub idle_connection_timeout: Duration,
    /// How often each connection is pinged.
    pub ping_interval: Duration,
    /// A ping unanswered this long fails; a connection that has answered
    /// no ping for `ping_interval + ping_timeout` is closed.
    pub ping_timeout: Duration,
    /// A QUIC connection that hears nothing for this long is closed (QUIC
    /// sends keep-alives at half of it).
    pub quic_max_idle_timeout: Duration,
    /// A file where the ports picked for port-0 listen addresses are kept,
    /// so that the next start listens on the same ports when they are
    /// free (and peers' stored addresses stay good); a taken port falls
    /// back to a new one. `None` picks new ports on every start.
    pub port_memory: Option<PathBuf>,
    /// The addresses are defaults, not the user's: one whose port is taken
    /// is bound on a new port, one that cannot be bound at all (no IPv6,
    /// say) is skipped with a warning; starting fails only if none binds.
    pub listen_best_effort: bool,
    /// Relays to keep a reservation on (each address ends with the
    /// relay's `/p2p/` id), so that nodes that cannot dial us directly
    /// reach us through them; the relayed addresses join our listen
    /// addresses.
    pub relays: Vec<Multiaddr>,
    /// Serve as a relay for other nodes, within these limits.
    pub relay_service: Option<RelayLimits>,
    /// How long a stream to a peer reached only through a relay waits for
    /// a hole punch, so that sessions start on the direct connection when
    /// one can be made quickly (a TCP punch takes tens of milliseconds);
    /// streams opened before a slower punch move to it later. It is paid in
    /// full when the punch fails.
    pub hole_punch_wait: Duration,
    /// After a failed hole punch, when to try again (a new circuit through
    /// the relay starts a new punch); the wait doubles each time, up to
    /// five minutes.
    pub hole_punch_retry: Duration,
    /// Runs the swarm and its connections as tasks on the `LocalSet` that
    /// calls [`super::Network::start`] (the daemon's vat), so that a
    /// session's reads and writes wake no other thread; the caller must be
    /// inside a `LocalSet`, which must keep running while the network is
    /// in use. `false` gives the swarm a thread of its own (for a caller
    /// that drives its runtime only now and then, like a test's attacker).
    pub on_callers_runtime: bool,
}

/// What a node serving as a relay allows. A circuit carries only
/// end-to-end encrypted, authenticated streams between its two nodes; the
/// limits bound what strangers can make the relay hold and forward.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelayLimits {
    /// Reservations held at once, from all nodes.
    pub reservations: usize,
    /// Reservations one node may hold at once.
    pub reservations_per_peer: usize,
    /// How long a reservation lasts before it must be renewed.
    pub reservation_duration: Duration,
    /// Circuits open at once.
    pub circuits: usize,
    /// Circuits one node may have open at once (as either end).
    pub circuits_per_peer: usize,
    /// How long one circuit may stay open.
    pub circuit_duration: Duration,
    /// Bytes one circuit may carry (both directions together).
    pub circuit_bytes: u64,
}

impl Default for RelayLimits {
    fn default() -> RelayLimits {
        // Generous for people's own nodes (a session stays relayed when
        // their NATs defeat hole punching), yet bounded.
        RelayLimits {
            reservations: 128,
            reservations_per_peer: 4,
            reservation_duration: Duration::from_secs(60 * 60),
            circuits: 64,
            circuits_per_peer: 8,
            circuit_duration: Duration::from_secs(30 * 60),
            circuit_bytes: 64 << 20,
        }
    }
}

impl Default for NetConfig {
    fn default() -> NetConfig {
        NetConfig {
            listen_addresses: Vec::new(),
            max_inbound_streams_per_peer: 64,
            max_connections_per_peer: 8,
            max_connections_total: 1024,
            max_pending_connections: 128,
            dial_timeout: Duration::from_secs(10),
            idle_connection_timeout: Duration::from_secs(60),
            ping_interval: Duration::from_secs(5),
            ping_timeout: Duration::from_secs(10),
            quic_max_idle_timeout: Duration::from_secs(30),
            port_memory: None,
            listen_best_effort: false,
            relays: Vec::new(),
            relay_service: None,
            hole_punch_wait: Duration::from_millis(500),
            hole_punch_retry: Duration::from_secs(10),
            on_callers_runtime: false,
        }
    }
}

impl NetConfig {
    /// The defaults, listening on `addresses`.
    pub fn listening_on(addresses: impl IntoIterator<Item = Multiaddr>) -> NetConfig {
        NetConfig {
            listen_addresses: addresses.into_iter().collect(),
            ..NetConfig::default()
        }
    }
}
