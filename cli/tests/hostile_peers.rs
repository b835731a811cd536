//! Hostile peers, end to end: a stranger's `hello` and forged redemption
//! leave no known peer and nothing the node dials, a known peer's
//! addresses are bounded and checked, and knowing a blob's bytes does not
//! get it from the gateway. After each, the node is alive, an honest peer
//! is still served, and the log says what was refused.

#![allow(clippy::expect_used, clippy::unwrap_used, reason = "a test fails by panicking")]

use std::net::TcpListener;
use std::time::Duration;

use capstan_protocol::Value;
use capstan_protocol::captp::Limits;
use capstan_tests::hostile::{Attacker, Target};
use capstan_tests::{LOOPBACK, Node, introduce, use_binary, wait_until};

const COUNTER: &str = "let n = 0; makeExo('Counter', M.interface('Counter', { incr: M.call().returns(M.number()) }), { incr() { n += 1; return n; } })";

fn started() -> Node {
    use_binary(env!("CARGO_BIN_EXE_capstan"));
    Node::started_on_loopback("")
}

/// alice, and bob who was introduced to her and holds her counter as `c`.
fn honest_pair() -> (Node, Node) {
    let (alice, bob) = (started(), started());
    introduce(&alice, "bob", &bob, "alice");
    alice.run(&["eval", COUNTER, "-n", "counter"]).ok();
    alice.run(&["send", "bob", "a counter @counter"]).ok();
    bob.run(&["adopt", "0", "counter", "-n", "c"]).ok();
    assert_eq!(bob.eval("E(c).incr()", &["c:c"]), "1");
    (alice, bob)
}

/// alice answers and still serves bob.
fn still_serves(alice: &Node, bob: &Node) {
    assert_eq!(alice.run(&["ping"]).ok().trim(), "pong");
    let count = bob.eval("E(c).incr()", &["c:c"]);
    assert!(count.trim().parse::<u32>().is_ok(), "bob's call failed: {count}");
}

fn log_of(node: &Node) -> String {
    std::fs::read_to_string(node.state_dir().join("node.log")).expect("the node's log")
}

/// The known peers as `peers --json` lists them.
fn known_peers(node: &Node) -> Vec<serde_json::Value> {
    let listed = node.run(&["peers", "--json"]).ok().to_string();
    serde_json::from_str::<serde_json::Value>(listed.trim())
        .expect("peers JSON")
        .as_array()
        .expect("a list of peers")
        .clone()
}

fn addresses_of(node: &Node, peer: &str) -> Option<Vec<String>> {
    known_peers(node)
        .into_iter()
        .find(|record| record["nodeId"] == peer)
        .map(|record| {
            record["addresses"]
                .as_array()
                .expect("addresses")
                .iter()
                .map(|address| address.as_str().expect("an address").to_string())
                .collect()
        })
}

/// Calls `method` on the node's gateway from the attacker, on a session of
/// its own.
fn call(attacker: &Attacker, target: &Target, method: &str, args: Vec<Value>) -> Result<Value, String> {
    attacker.run(async {
        let (connection, gateway) = attacker.session(target, Limits::default()).await;
        let result = Attacker::call(&gateway, method, args).await;
        connection.close("done");
        result
    })
}

fn strings(items: &[&str]) -> Value {
    Value::array(items.iter().map(|item| Value::from(*item)))
}

/// The invitation id in an invitation locator.
fn invitation_id(locator: &str, node: &str) -> String {
    let number = locator
        .split("id=")
        .nth(1)
        .and_then(|rest| rest.split('&').next())
        .expect("an id in the locator");
    format!("{number}:{node}")
}

#[test]
fn a_strangers_hello_and_forged_redemption_make_no_peer_and_nothing_is_dialed() {
    let (alice, bob) = honest_pair();
    // A port the node must never connect to.
    let bait = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
    bait.set_nonblocking(true).expect("non-blocking");
    let bait_address = format!("/ip4/127.0.0.1/tcp/{}", bait.local_addr().expect("its address").port());

    let attacker = Attacker::new();
    let stranger = attacker.node_id();
    let target = Target::of(&alice);
    // hello is answered as usual, and ignored.
    attacker
        .hello(&target, &[&bait_address, "/ip4/10.9.9.9/tcp/1"])
        .expect("hello is answered");
    // A redemption of an invitation alice never made, with the bait.
    let forged = call(
        &attacker,
        &target,
        "redeem",
        vec![
            Value::from(format!("{}:{}", "ab".repeat(32), target.node)),
            Value::from(format!("{}:{stranger}", "cd".repeat(32))),
            strings(&[&bait_address]),
        ],
    );
    assert_eq!(
        forged.unwrap_err(),
        "This invitation was already used (or is not valid)"
    );

    let peers = known_peers(&alice);
    assert_eq!(peers.len(), 1, "only bob is known: {peers:?}");
    assert!(addresses_of(&alice, &stranger).is_none());
    let log = log_of(&alice);
    assert!(
        log.lines()
            .any(|line| line.contains("hello from a node that is not a known peer") && line.contains(&stranger)),
        "{log}"
    );

    // After a restart the node greets its known peers, and only them.
    alice.run(&["restart", "--listen", LOOPBACK]).ok();
    assert!(
        wait_until(Duration::from_secs(15), || log_of(&alice)
            .matches("told a peer where we listen")
            .count()
            >= 1),
        "alice did not greet bob after her restart"
    );
    std::thread::sleep(Duration::from_secs(1));
    let dialed = bait.accept();
    assert!(
        matches!(&dialed, Err(error) if error.kind() == std::io::ErrorKind::WouldBlock),
        "the node dialed an address a stranger gave: {dialed:?}"
    );
    assert!(addresses_of(&alice, &stranger).is_none());
    still_serves(&alice, &bob);
}

#[test]
fn a_known_peers_addresses_are_bounded_and_checked() {
    let (alice, bob) = honest_pair();
    let attacker = Attacker::new();
    let mallory = attacker.node_id();
    let target = Target::of(&alice);
    // alice invites mallory, who redeems with one good address among bad ones.
    let locator = alice.run(&["invite", "mallory"]).ok().trim().to_string();
    let first = "/ip4/127.0.0.1/tcp/9";
    // An address of alice's naming another node (bob) as the one there.
    let bob_node: capstan_store::NodeId = Target::of(&bob).node;
    let bobs_peer_id = capstan_node::net::peer_id_of(&bob_node).expect("a peer id");
    let foreign = format!("/ip4/127.0.0.1/tcp/11/p2p/{bobs_peer_id}");
    call(
        &attacker,
        &target,
        "redeem",
        vec![
            Value::from(invitation_id(&locator, &target.node.to_string())),
            Value::from(format!("{}:{mallory}", "cd".repeat(32))),
            strings(&["garbage", first, "/unix/tmp/socket", "/ip4/1.2.3.4/tcp/1/ws", &foreign]),
        ],
    )
    .expect("the redemption");
    assert_eq!(addresses_of(&alice, &mallory), Some(vec![first.to_string()]));

    // Too many addresses, or too long a one: refused whole.
    let many: Vec<String> = (1..=1000).map(|port| format!("/ip4/10.0.0.1/tcp/{port}")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    assert!(attacker.hello(&target, &many).is_err());
    let huge = format!("/dns4/{}/tcp/1", "a".repeat(1 << 20));
    assert!(attacker.hello(&target, &[&huge]).is_err());
    assert_eq!(addresses_of(&alice, &mallory), Some(vec![first.to_string()]));

    // Garbage beside a good address: the good one is kept, newest first.
    let second = "/ip4/127.0.0.1/tcp/10";
    attacker
        .hello(&target, &["/ip4/1.2.3.4", second, "\u{0}", "/ip4/1.2.3.4/udp/1"])
        .expect("hello");
    assert_eq!(
        addresses_of(&alice, &mallory),
        Some(vec![second.to_string(), first.to_string()])
    );

    // The most allowed at once: the oldest fall off, 16 stay.
    let sixteen: Vec<String> = (100..116).map(|port| format!("/ip4/127.0.0.1/tcp/{port}")).collect();
    let sixteen_refs: Vec<&str> = sixteen.iter().map(String::as_str).collect();
    attacker.hello(&target, &sixteen_refs).expect("hello");
    assert_eq!(addresses_of(&alice, &mallory), Some(sixteen.clone()));

    let log = log_of(&alice);
    assert!(
        log.lines()
            .any(|line| line.contains("some offered addresses were refused") && line.contains(&mallory)),
        "{log}"
    );
    still_serves(&alice, &bob);
}

#[test]
fn knowing_a_blobs_bytes_does_not_get_it_from_the_gateway() {
    let (alice, bob) = honest_pair();
    let bytes = b"the plans for the new mill, draft 7\n";
    let file = alice.state_dir().join("plans.txt");
    std::fs::write(&file, bytes).expect("write the file");
    alice
        .run(&["store", "-n", "plans", "--path", file.to_str().expect("a path")])
        .ok();

    let attacker = Attacker::new();
    let target = Target::of(&alice);
    let node = target.node.to_string();
    // What someone who knows the bytes can compute: the content hash, and
    // ids made from it as a content-addressed scheme would.
    let hash = blake3::hash(bytes).to_hex().to_string();
    let rehashed = blake3::hash(hash.as_bytes()).to_hex().to_string();
    let with_node = blake3::hash(&[node.as_bytes(), bytes.as_slice()].concat())
        .to_hex()
        .to_string();
    for guess in [
        hash.clone(),
        format!("{hash}:{node}"),
        format!("{rehashed}:{node}"),
        format!("{with_node}:{node}"),
        format!("{node}:{hash}"),
    ] {
        let answer = call(&attacker, &target, "provide", vec![Value::from(guess.as_str())]);
        assert_eq!(answer.unwrap_err(), "Cannot provide that", "for {guess}");
    }
    // The real id, which only holders get, is provided: the guesses fail
    // because they are guesses.
    let located = alice.run(&["locate", "plans"]).ok().to_string();
    let real = invitation_id(&located, &node);
    let provided = call(&attacker, &target, "provide", vec![Value::from(real.as_str())]);
    assert!(matches!(provided, Ok(Value::Remotable(_))), "{provided:?}");
    let log = log_of(&alice);
    assert!(log.contains("refused to provide an id"), "{log}");

    // An honest peer that was sent the blob reads it.
    alice.run(&["send", "bob", "the plans @plans"]).ok();
    bob.run(&["adopt", "1", "plans", "-n", "plans"]).ok();
    let read = bob.run(&["cat", "plans"]);
    assert_eq!(read.stdout.as_bytes(), bytes);
    still_serves(&alice, &bob);
}
