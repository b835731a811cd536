//! A hostile peer for end-to-end tests and benchmarks: a libp2p network
//! of its own in this process, with a fresh key (so the node under test
//! has never heard of it), that can open raw `/capstan/captp/1.0.0`
//! streams to a node or a real CapTP session whose bootstrap is the
//! node's gateway, and call the gateway with whatever arguments it likes.
//! A listening attacker ([`Attacker::listening`]) also takes the sessions a
//! node opens to it, offering whatever bootstrap it likes (one that never
//! answers, one that rejects with a crafted text).
//!
//! For streams it writes by hand: [`frame`] and [`args_body`] make CapTP
//! frames, and [`rss_kib`] reads how much memory the node holds.

use std::cell::RefCell;
use std::collections::hash_map::RandomState;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};

use capstan_node::net::{InboundStreams, Multiaddr, NetConfig, Network, StreamReader, StreamWriter};
use capstan_node::runtime::{ConnectionHandle, E, Vat, connect, when};
use capstan_protocol::captp::{Body, Limits, Message, Target as Position, codec};
use capstan_protocol::marshal::{self, MarshalLimits, NoSlots};
use capstan_protocol::{Reference, Value};
use capstan_store::NodeId;

use crate::Node;

/// 32 bytes no earlier run used: a fresh key.
pub fn fresh_seed() -> [u8; 32] {
    let mut seed = [0u8; 32];
    for chunk in seed.chunks_mut(8) {
        let mut hasher = RandomState::new().build_hasher();
        hasher.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |since| since.as_nanos()),
        );
        chunk.copy_from_slice(&hasher.finish().to_le_bytes());
    }
    seed
}

/// `message` as a frame, ready to write to a raw stream.
pub fn frame(message: &Message<'_>) -> Vec<u8> {
    let mut bytes = Vec::new();
    codec::write_frame(message, 16 << 20, &mut bytes).expect("encode a frame");
    bytes
}

/// The body of a `Deliver` carrying `args` (plain data only).
pub fn args_body(args: Vec<Value>) -> Vec<u8> {
    marshal::encode(&Value::array(args), &mut NoSlots, &MarshalLimits::default()).expect("marshal the arguments")
}

/// The body of a `Deliver` whose one argument is the sender's export at
/// `position` (a fresh import for the receiver).
pub fn export_args_body(position: u64) -> Vec<u8> {
    let gift = Value::Remotable(Reference::detached("Alleged: gift"));
    let mut slots = |_: &Reference, _| {
        Ok(marshal::SlotOut {
            descriptor: marshal::Descriptor::ImportObject(position),
            send_interface: true,
        })
    };
    marshal::encode(&Value::array([gift]), &mut slots, &MarshalLimits::default()).expect("marshal the gift")
}

/// An exo whose `big()` answers about a MiB (11 strings of 95 000
/// bytes): what a peer that never reads makes a node queue.
pub const BIG_ANSWERS: &str = "makeExo('Big', M.interface('Big', { big: M.call().returns(M.any()) }), { big() { return Array.from({ length: 11 }, () => 'x'.repeat(95000)); } })";

/// Frames for a raw stream: the bootstrap, `provide(id)` on it, then
/// `calls` calls of `method` (no arguments) pipelined on what `provide`
/// answers.
pub fn pipelined_after_provide(id: &str, method: &str, calls: u64) -> Vec<u8> {
    let mut bytes = frame(&Message::Bootstrap { answer: 1 });
    let provide_args = args_body(vec![Value::from(id)]);
    bytes.extend(frame(&Message::Deliver {
        target: Position::Answer(1),
        method: "provide",
        args: Body(&provide_args),
        answer: Some(2),
        resolver: None,
    }));
    let no_args = args_body(vec![]);
    for index in 0..calls {
        bytes.extend(frame(&Message::Deliver {
            target: Position::Answer(2),
            method,
            args: Body(&no_args),
            answer: Some(3 + index),
            resolver: None,
        }));
    }
    bytes
}

/// The resident memory of process `pid`, in KiB (`VmRSS`), if it runs.
pub fn rss_kib(pid: i32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Where a node under test is: its node id and listen addresses, from
/// `capstan status`.
pub struct Target {
    pub node: NodeId,
    pub addresses: Vec<Multiaddr>,
}

impl Target {
    pub fn of(node: &Node) -> Target {
        let status = node.status();
        let id = status["nodeId"].as_str().expect("a node id in the status");
        let addresses = status["listenAddresses"]
            .as_array()
            .expect("listen addresses in the status")
            .iter()
            .map(|address| address.as_str().expect("an address").parse().expect("a multiaddr"))
            .collect();
        Target {
            node: id.parse().expect("a node id"),
            addresses,
        }
    }
}

/// The hostile client: its own network, runtime and vat. Everything it
/// does runs inside [`Attacker::run`].
pub struct Attacker {
    runtime: tokio::runtime::Runtime,
    local: tokio::task::LocalSet,
    pub vat: Vat,
    pub network: Network,
    /// Streams nodes open to the attacker (none unless it listens).
    inbound: RefCell<Option<InboundStreams>>,
}

impl Default for Attacker {
    fn default() -> Attacker {
        Attacker::new()
    }
}

impl Attacker {
    pub fn new() -> Attacker {
        Attacker::with_config(NetConfig::default())
    }

    /// An attacker that listens on a loopback port, so that a node that
    /// knows its addresses can dial it.
    pub fn listening() -> Attacker {
        let loopback = "/ip4/127.0.0.1/tcp/0".parse().expect("a multiaddr");
        Attacker::with_config(NetConfig::listening_on([loopback]))
    }

    fn with_config(config: NetConfig) -> Attacker {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let (network, inbound) = runtime
            .block_on(Network::start(&fresh_seed(), config))
            .expect("the attacker's network");
        Attacker {
            runtime,
            local: tokio::task::LocalSet::new(),
            vat: Vat::new(),
            network,
            inbound: RefCell::new(Some(inbound)),
        }
    }

    /// Where the attacker listens, as strings.
    pub fn listen_addresses(&self) -> Vec<String> {
        self.network
            .listen_addresses()
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    /// Waits for the next stream a node opens to the attacker and serves a
    /// CapTP session on it offering `bootstrap`. Call inside [`Attacker::run`].
    pub async fn accept(&self, bootstrap: Value) -> ConnectionHandle {
        let mut inbound = self
            .inbound
            .borrow_mut()
            .take()
            .expect("the attacker's inbound streams");
        let stream = inbound.next().await.expect("a stream from the node");
        self.inbound.borrow_mut().replace(inbound);
        connect(
            &self.vat,
            stream.reader,
            stream.writer,
            Some(bootstrap),
            Limits::default(),
        )
    }

    /// The attacker's node id, as a node under test would log it.
    pub fn node_id(&self) -> String {
        self.network.node_id().to_string()
    }

    /// Runs `future` with the attacker's vat turning beside it. Sessions
    /// opened in one call live on into the next.
    pub fn run<F: Future>(&self, future: F) -> F::Output {
        self.vat.enter(|| {
            self.local.block_on(&self.runtime, async {
                let driver = self.vat.spawn(self.vat.clone().drive());
                let output = future.await;
                driver.abort();
                output
            })
        })
    }

    /// Opens a raw CapTP stream to `target`.
    pub async fn open(&self, target: &Target) -> (StreamReader, StreamWriter) {
        self.try_open(target).await.expect("open a stream to the node")
    }

    /// Opens a raw CapTP stream to `target`, or says why the node (or the
    /// network) would not have it.
    pub async fn try_open(&self, target: &Target) -> Result<(StreamReader, StreamWriter), String> {
        self.network
            .open_stream(&target.node, &target.addresses)
            .await
            .map_err(|error| error.to_string())
    }

    /// Opens a CapTP session to `target` (offering nothing) and returns
    /// it with a promise for the node's gateway. Call inside [`Attacker::run`].
    pub async fn session(&self, target: &Target, limits: Limits) -> (ConnectionHandle, Value) {
        let (reader, writer) = self.open(target).await;
        let connection = connect(&self.vat, reader, writer, None, limits);
        let gateway = connection.bootstrap();
        (connection, gateway)
    }

    /// Calls `method` on `gateway` and waits for the outcome: the result,
    /// or the rejection's message.
    pub async fn call(gateway: &Value, method: &str, args: Vec<Value>) -> Result<Value, String> {
        when(&E(gateway).call(method, Value::array(args)))
            .await
            .map_err(|reason| match reason {
                Value::Error(error) => error.message.to_string(),
                other => format!("{other:?}"),
            })
    }

    /// `hello(addresses)` to the node's gateway, on a session of its own.
    pub fn hello(&self, target: &Target, addresses: &[&str]) -> Result<Value, String> {
        self.run(async {
            let (connection, gateway) = self.session(target, Limits::default()).await;
            let addresses = Value::array(addresses.iter().map(|address| Value::from(*address)));
            let result = Attacker::call(&gateway, "hello", vec![addresses]).await;
            connection.close("done");
            result
        })
    }
}

impl Drop for Attacker {
    fn drop(&mut self) {
        self.runtime.block_on(self.network.shutdown());
    }
}
