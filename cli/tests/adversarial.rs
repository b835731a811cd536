//! A hostile peer, end to end: two real nodes (alice and bob) that call
//! each other, and a hand-written libp2p client in this process, with a
//! key of its own, that opens `/capstan/captp/1.0.0` streams to alice and
//! sends garbage, a huge length prefix, frames naming positions that do
//! not exist, and a flood of streams. After each, alice must still serve
//! bob, and her log must say why the hostile session ended.

#![allow(clippy::expect_used, clippy::unwrap_used, reason = "a test fails by panicking")]

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use capstan_node::net::{Multiaddr, NetConfig, Network, StreamReader, StreamWriter};
use capstan_protocol::captp::{FrameDecoder, Message, Positions, Target};
use capstan_tests::{Node, process_alive, use_binary, wait_until};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const LISTEN: &str = "/ip4/127.0.0.1/tcp/0";

/// What the node allows one peer (`NetConfig::default()`).
const INBOUND_CAP: usize = 64;

/// How long the node may take to end a hostile session.
const ENDS_WITHIN: Duration = Duration::from_secs(10);

const COUNTER: &str = "let n = 0; makeExo('Counter', M.interface('Counter', { incr: M.call().returns(M.number()) }), { incr() { n += 1; return n; } })";

fn started() -> Node {
    use_binary(env!("CARGO_BIN_EXE_capstan"));
    let node = Node::new(&[]);
    node.run(&["start", "--listen", LISTEN]).ok();
    node
}

/// alice and bob, introduced; bob holds alice's counter as `c`.
fn alice_serving_bob() -> (Node, Node) {
    let (alice, bob) = (started(), started());
    let locator = alice.run(&["invite", "bob"]).ok().trim().to_string();
    bob.run(&["accept", "alice", &locator]).ok();
    alice.run(&["eval", COUNTER, "-n", "counter"]).ok();
    alice.run(&["send", "bob", "a counter @counter"]).ok();
    bob.run(&["adopt", "0", "counter", "-n", "c"]).ok();
    (alice, bob)
}

fn node_id(node: &Node) -> String {
    node.status()["nodeId"].as_str().expect("node id").to_string()
}

fn listen_addresses(node: &Node) -> Vec<Multiaddr> {
    node.status()["listenAddresses"]
        .as_array()
        .expect("listen addresses")
        .iter()
        .map(|address| address.as_str().expect("address").parse().expect("multiaddr"))
        .collect()
}

/// 32 bytes no earlier run used: a fresh key for the hostile client.
fn fresh_seed() -> [u8; 32] {
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

/// Bytes from a small xorshift generator: garbage that is the same on
/// every run.
fn garbage(length: usize) -> Vec<u8> {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..length)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

fn varint(mut value: u64) -> Vec<u8> {
    let mut bytes = Vec::new();
    loop {
        let low = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            bytes.push(low);
            return bytes;
        }
        bytes.push(low | 0x80);
    }
}

fn frame(message: &Message<'_>) -> Vec<u8> {
    let mut bytes = Vec::new();
    capstan_protocol::captp::codec::write_frame(message, 1 << 20, &mut bytes).expect("encode a frame");
    bytes
}

/// What became of a stream after the client wrote to it.
#[derive(Debug)]
enum Ending {
    /// The node sent `Abort` with this reason, then ended the stream.
    Aborted(String),
    /// The stream ended (reset or closed) without an `Abort`.
    Ended,
    /// Still open after the time given.
    Open,
}

/// Reads until the stream ends or `within` passes, decoding the frames.
async fn ending(reader: &mut StreamReader, within: Duration) -> Ending {
    let mut decoder = FrameDecoder::new(16 << 20);
    let mut aborted = None;
    let mut buffer = vec![0u8; 64 * 1024];
    let read_all = async {
        loop {
            match reader.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(count) => {
                    decoder.feed(&buffer[..count]);
                    while let Ok(Some(payload)) = decoder.next_frame() {
                        if let Ok(Message::Abort { reason }) = Message::decode(payload) {
                            aborted = Some(reason.to_string());
                        }
                    }
                }
            }
        }
    };
    let ended = tokio::time::timeout(within, read_all).await.is_ok();
    match (ended, aborted) {
        (true, Some(reason)) => Ending::Aborted(reason),
        (true, None) => Ending::Ended,
        (false, _) => Ending::Open,
    }
}

/// The hostile client: a network of its own, with a fresh key.
struct Attacker {
    runtime: tokio::runtime::Runtime,
    network: Network,
    node: String,
}

impl Attacker {
    fn new() -> Attacker {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let (network, _inbound) = runtime
            .block_on(Network::start(&fresh_seed(), NetConfig::default()))
            .expect("the attacker's network");
        let node = network.node_id().to_string();
        Attacker { runtime, network, node }
    }

    /// Opens a CapTP stream to `target`.
    async fn open(&self, target: &str, addresses: &[Multiaddr]) -> (StreamReader, StreamWriter) {
        let Ok(node) = target.parse() else {
            panic!("{target} is not a node id");
        };
        self.network
            .open_stream(&node, addresses)
            .await
            .expect("open a stream to the node")
    }

    /// Opens a stream, writes `bytes`, and waits for the node to end it.
    fn send(&self, target: &str, addresses: &[Multiaddr], bytes: &[u8]) -> Ending {
        self.runtime.block_on(async {
            let (mut reader, mut writer) = self.open(target, addresses).await;
            // The node may end the stream before all is written.
            let _ = writer.write_all(bytes).await;
            let _ = writer.flush().await;
            let ending = ending(&mut reader, ENDS_WITHIN).await;
            drop(writer);
            ending
        })
    }
}

impl Drop for Attacker {
    fn drop(&mut self) {
        self.runtime.block_on(self.network.shutdown());
    }
}

/// alice's log lines that mention `text`.
fn log_lines(node: &Node, text: &str) -> Vec<String> {
    std::fs::read_to_string(node.state_dir().join("node.log"))
        .unwrap_or_default()
        .lines()
        .filter(|line| line.contains(text))
        .map(str::to_string)
        .collect()
}

/// Waits for a log line of alice's naming the attacker's ended session
/// with `reason`.
fn assert_logged(alice: &Node, attacker: &str, reason: &str) {
    let found = wait_until(ENDS_WITHIN, || {
        log_lines(alice, "peer session to us ended")
            .iter()
            .any(|line| line.contains(attacker) && line.contains(reason))
    });
    assert!(
        found,
        "alice's log does not say the session from {attacker} ended with {reason:?}:\n{}",
        log_lines(alice, attacker).join("\n")
    );
}

fn assert_still_serving(alice: &Node, bob: &Node, count: &mut u32) {
    let pid = alice.pid().expect("alice's pid");
    assert!(process_alive(pid), "alice's node is gone");
    *count += 1;
    assert_eq!(bob.eval("E(c).incr()", &["c:c"]), count.to_string());
}

#[test]
fn a_hostile_peer_ends_only_its_own_sessions() {
    let (alice, bob) = alice_serving_bob();
    let mut count = 0;
    assert_still_serving(&alice, &bob, &mut count);
    let (target, addresses) = (node_id(&alice), listen_addresses(&alice));
    let attacker = Attacker::new();
    let me = attacker.node.clone();

    // Garbage: a frame whose payload is no CapTP message.
    let mut bytes = varint(4096);
    bytes.extend(garbage(4096));
    let ended = attacker.send(&target, &addresses, &bytes);
    assert!(
        matches!(&ended, Ending::Aborted(reason) if reason.contains("malformed message")),
        "{ended:?}"
    );
    assert_logged(&alice, &me, "malformed message");
    assert_still_serving(&alice, &bob, &mut count);

    // Garbage that is not even a length prefix (eleven continuation bytes).
    let ended = attacker.send(&target, &addresses, &[0xff; 11]);
    assert!(matches!(ended, Ending::Aborted(_) | Ending::Ended), "{ended:?}");
    assert_logged(&alice, &me, "length prefix");
    assert_still_serving(&alice, &bob, &mut count);

    // A length prefix claiming a frame of 2^40 bytes, then a few bytes.
    let mut bytes = varint(1 << 40);
    bytes.extend_from_slice(&[0; 64]);
    let ended = attacker.send(&target, &addresses, &bytes);
    assert!(
        matches!(&ended, Ending::Aborted(reason) if reason.contains("max_frame_bytes")),
        "{ended:?}"
    );
    assert_logged(&alice, &me, "a frame claimed 1099511627776 bytes");
    assert_still_serving(&alice, &bob, &mut count);

    // Well-formed frames naming positions that do not exist.
    let get = frame(&Message::Get {
        target: Target::Answer(77),
        field: "x",
        answer: 1,
    });
    let ended = attacker.send(&target, &addresses, &get);
    assert!(
        matches!(&ended, Ending::Aborted(reason) if reason.contains("unknown answer 77")),
        "{ended:?}"
    );
    assert_logged(&alice, &me, "unknown answer 77");
    let drop_exports = frame(&Message::DropExports {
        positions: Positions(vec![999].into()),
        deltas: Positions(vec![1].into()),
    });
    let ended = attacker.send(&target, &addresses, &drop_exports);
    assert!(
        matches!(&ended, Ending::Aborted(reason) if reason.contains("unknown export 999")),
        "{ended:?}"
    );
    assert_logged(&alice, &me, "unknown export 999");
    assert_still_serving(&alice, &bob, &mut count);

    // A flood: far more concurrent streams than one peer may hold. Each
    // asks for the bootstrap object; those over the cap are reset, the
    // others answered, and all stay open while bob calls.
    let flood = INBOUND_CAP * 3;
    let bootstrap = frame(&Message::Bootstrap { answer: 0 });
    let mut streams = Vec::with_capacity(flood);
    let (mut answered, mut refused) = (0, 0);
    attacker.runtime.block_on(async {
        for _ in 0..flood {
            let (reader, mut writer) = attacker.open(&target, &addresses).await;
            let _ = writer.write_all(&bootstrap).await;
            let _ = writer.flush().await;
            streams.push((reader, writer));
        }
        let mut buffer = [0u8; 1024];
        for (reader, _) in &mut streams {
            match tokio::time::timeout(ENDS_WITHIN, reader.read(&mut buffer)).await {
                Ok(Ok(0) | Err(_)) => refused += 1,
                Ok(Ok(_)) => answered += 1,
                Err(_) => {}
            }
        }
    });
    eprintln!("flood of {flood} streams: {answered} answered, {refused} refused");
    assert!(answered <= INBOUND_CAP, "{answered} streams were served");
    assert!(answered > 0, "no stream of the flood was served");
    assert!(refused >= flood - INBOUND_CAP, "only {refused} streams were refused");
    assert!(
        !log_lines(&alice, "the most concurrent inbound streams allowed")
            .iter()
            .all(|line| !line.contains(&me)),
        "alice's log does not name the flooding peer"
    );
    assert_still_serving(&alice, &bob, &mut count);
    // When the flood lets go, its sessions end, logged as such.
    drop(streams);
    assert_logged(&alice, &me, "closed the session");
    assert_still_serving(&alice, &bob, &mut count);

    // The stranger was not added to alice's known peers.
    let peers = alice.run(&["peers"]).ok().to_string();
    assert!(!peers.contains(&me), "{peers}");
    drop(attacker);
    assert_still_serving(&alice, &bob, &mut count);
}
