//! The node's libp2p layer: the swarm that carries CapTP sessions between
//! nodes, one session per `/capstan/captp/1.0.0` stream.
//!
//! - [`Network`]: start the swarm from the node's seed, see where it
//!   listens and whom it is connected to, add addresses, open streams;
//! - [`InboundStreams`]: streams peers open to us, each with the
//!   authenticated remote [`NodeId`](capstan_store::NodeId);
//! - [`StreamReader`]/[`StreamWriter`]: the two halves of a stream as tokio
//!   byte streams, ready for [`crate::runtime::connect`];
//! - [`identity`]: the node id ↔ `PeerId` conversions;
//! - `ports`: the ports picked for port-0 listen addresses, kept (when
//!   [`NetConfig::port_memory`] names a file) so a restart reuses them.
//!
//! Transports: TCP + Noise + yamux, QUIC, and circuits through relays
//! (Circuit Relay v2, each circuit again Noise + yamux end to end);
//! identify, ping, AutoNAT (is this node reachable from outside?) and
//! DCUtR (hole punching from a relayed connection to a direct one); a
//! node may also serve as a relay. The
//! libp2p `PeerId` is the node's ed25519 key, so every connection
//! authenticates the node id, and a dial where another node answers fails.
//!
//! ## Where the swarm runs
//!
//! The daemon runs the swarm as tasks on the vat's own runtime
//! ([`NetConfig::on_callers_runtime`]): the swarm's task and one task per
//! connection on the vat's `LocalSet`, and the accept loop. A session's
//! bytes then go from the socket through Noise and yamux to its CapTP
//! session and back on one thread, and no read or write wakes another
//! thread. On this machine's virtual CPUs a wake-up of a parked thread is
//! what a hop costs, and a call between two nodes made five or six of them
//! where a single-threaded program makes two (issue 19's figures).
//!
//! What that costs: the crypto runs between the vat's turns, and a long
//! turn delays every connection. The daemon's turns are short (guest code
//! runs in worker processes; the daemon's objects are Rust, and its
//! longest wait is a kernel baggage write's fdatasync), and a connection
//! fails only after seconds without pings. One risk is sharper on a
//! shared thread: `libp2p-stream` keeps at most one inbound stream
//! waiting for the accept loop and drops the next that arrives before the
//! loop takes it, which streams negotiated in the same pass after a turn
//! (several peers opening sessions at once) can meet. The peer then sees
//! that session end and opens another on its next use.
//!
//! A program that drives its runtime only now and then (a test's
//! attacker) gives the swarm a thread of its own instead, the default: its
//! own current-thread runtime, with commands over channels, and each read
//! and write then wakes the other thread.
//!
//! This works because a libp2p stream holds no I/O of its own: its
//! connection's task moves the bytes, and the stream only exchanges
//! buffers and wakers with it, so a vat on another runtime can read and
//! write it (the `net_*` tests run exactly that way).
//! When a connection ends, its streams' reads end (end of file or an
//! error), so CapTP sessions on them close; for yamux closing from our own
//! side that takes the wrapper in `muxer.rs`, since yamux leaves its own
//! streams asleep there.

mod behaviour;
mod config;
mod driver;
mod error;
pub mod identity;
mod movable;
mod muxer;
mod network;
mod placement;
mod ports;
mod stream;

use libp2p::StreamProtocol;

pub use config::{NetConfig, RelayLimits};
pub use driver::{Link, Reachability, RelayState};
pub use error::NetError;
pub use identity::{keypair_from_seed, node_id_of, peer_id_of};
pub use libp2p::multiaddr::Protocol;
pub use libp2p::{Multiaddr, PeerId};
pub use movable::{StreamReader, StreamWriter};
pub use network::Network;
pub use stream::{InboundStream, InboundStreams};

/// The protocol name of CapTP streams between nodes (a session token,
/// then chunks: see `movable`).
pub const CAPTP_PROTOCOL_NAME: &str = "/capstan/captp/2.0.0";

/// [`CAPTP_PROTOCOL_NAME`] as a libp2p protocol.
pub const CAPTP_PROTOCOL: StreamProtocol = StreamProtocol::new(CAPTP_PROTOCOL_NAME);

/// Streams that continue a session stream on another connection.
const CAPTP_MOVE_PROTOCOL: StreamProtocol = StreamProtocol::new("/capstan/captp-move/1.0.0");

/// The protocol version nodes announce through identify.
const IDENTIFY_PROTOCOL: &str = "/capstan/1.0.0";
