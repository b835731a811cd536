//! Nodes on different networks, built from network namespaces on this
//! machine: a node started with no flags at all is invited from another
//! routed LAN; a node behind a home-router NAT reaches a node on the
//! public side directly, both ways over the connection it opened; two
//! nodes behind two NATs meet through a relay and punch a hole to a
//! direct connection that outlives the relay; behind NATs that defeat
//! hole punching they keep talking through the relay; and a relay keeps
//! to its reservation limit.
//!
//! Needs root, `ip` and `iptables` (`.ci/run` installs them); without
//! them the suite fails in CI and skips, saying so, elsewhere.

#![allow(clippy::expect_used, clippy::unwrap_used, reason = "a test fails by panicking")]

use std::time::{Duration, Instant};

use capstan_tests::netns::{RELAY_IP, Topology, TwoHomes, two_homes};
use capstan_tests::{LOOPBACK, Node, introduce, use_binary};

const COUNTER: &str = "let n = 0; makeExo('Counter', M.interface('Counter', { incr: M.call().returns(M.number()) }), { incr() { n += 1; return n; } })";

/// Alice gives the peer she calls `to` a counter in mail, and `from`
/// (named `sender` there) adopts it and calls it.
fn counter_travels(alice: &Node, to: &str, from: &Node, sender: &str) {
    alice.run(&["eval", COUNTER, "-n", "counter"]).ok();
    alice.run(&["send", to, "a counter @counter"]).ok();
    let inbox = from.run(&["inbox"]).ok().to_string();
    assert!(
        inbox.contains(&format!("\"{sender}\" sent \"a counter @counter\"")),
        "{inbox}"
    );
    let number = inbox
        .lines()
        .last()
        .unwrap()
        .split('.')
        .next()
        .unwrap()
        .trim()
        .to_string();
    from.run(&["adopt", &number, "counter", "-n", "c"]).ok();
    assert_eq!(from.run(&["eval", "E(c).incr()", "c:c"]).ok(), "1");
    assert_eq!(from.run(&["eval", "E(c).incr()", "c:c"]).ok(), "2");
}

#[test]
fn an_invitation_made_with_the_defaults_is_accepted_from_another_routed_lan() {
    use_binary(env!("CARGO_BIN_EXE_capstan"));
    let Some(mut topology) = Topology::new() else { return };
    let router = topology.namespace("router");
    let lan_a = topology.namespace("a");
    let lan_b = topology.namespace("b");
    topology.cable(&router, "10.1.0.1/24", &lan_a, "10.1.0.2/24");
    topology.cable(&router, "10.2.0.1/24", &lan_b, "10.2.0.2/24");
    topology.router(&router);
    topology.default_route(&lan_a, "10.1.0.1");
    topology.default_route(&lan_b, "10.2.0.1");

    let alice = Node::new(&[]);
    let bob = Node::new(&[]);
    alice.start_in(&lan_a, &[]).ok();
    bob.start_in(&lan_b, &[]).ok();
    let locator = introduce(&alice, "bob", &bob, "alice");
    // The invitation lists the LAN address, not loopback.
    assert!(locator.contains("10.1.0.2"), "{locator}");
    assert!(!locator.contains("127.0.0.1"), "{locator}");
    counter_travels(&alice, "bob", &bob, "alice");
    // And back: bob's node is reached at the address it gave alice.
    counter_travels(&bob, "alice", &alice, "bob");
    // Bob sees alice connected directly, with a measured round trip.
    let alice_id = alice.status()["nodeId"].as_str().unwrap().to_string();
    let peers: serde_json::Value = serde_json::from_str(bob.run(&["peers", "--json"]).ok()).unwrap();
    let record = peers
        .as_array()
        .unwrap()
        .iter()
        .find(|peer| peer["node"] == alice_id.as_str())
        .unwrap_or_else(|| panic!("alice is not among bob's peers: {peers}"))
        .clone();
    assert_eq!(record["connected"], true, "{record}");
    assert_eq!(record["connection"], "direct", "{record}");
    assert!(
        record["rttMicros"].as_f64().is_some_and(|micros| micros > 0.0),
        "{record}"
    );
    assert!(
        record["addresses"]
            .as_array()
            .unwrap()
            .iter()
            .any(|address| address.as_str().unwrap().contains("10.1.0.2")),
        "{record}"
    );
}

#[test]
fn a_node_behind_a_nat_reaches_a_public_node_directly_and_is_called_back() {
    use_binary(env!("CARGO_BIN_EXE_capstan"));
    let Some(mut topology) = Topology::new() else { return };
    let server = topology.namespace("server");
    let home_router = topology.namespace("nat");
    let home = topology.namespace("home");
    let (public, _) = topology.cable(&home_router, "203.0.113.1/24", &server, "203.0.113.2/24");
    topology.cable(&home_router, "192.168.1.1/24", &home, "192.168.1.2/24");
    topology.nat(&home_router, &public);
    topology.default_route(&home, "192.168.1.1");

    let public_node = Node::new(&[]);
    let home_node = Node::new(&[]);
    public_node.start_in(&server, &[]).ok();
    home_node.start_in(&home, &[]).ok();
    let locator = introduce(&public_node, "home", &home_node, "server");
    assert!(locator.contains("203.0.113.2"), "{locator}");
    // The server calls an object at home over the connection home opened.
    counter_travels(&home_node, "server", &public_node, "home");
    counter_travels(&public_node, "home", &home_node, "server");
}

/// What `of` knows of `peer` in `peers --json`.
fn peer_record(of: &Node, peer: &Node) -> serde_json::Value {
    let id = peer.status()["nodeId"].as_str().unwrap().to_string();
    let peers: serde_json::Value = serde_json::from_str(of.run(&["peers", "--json"]).ok()).unwrap();
    peers
        .as_array()
        .unwrap()
        .iter()
        .find(|record| record["node"] == id.as_str())
        .unwrap_or_else(|| panic!("{id} is not among the peers: {peers}"))
        .clone()
}

/// The address other nodes give `--relay` to use `relay`, on TCP at `ip`.
fn relay_address(relay: &Node, ip: &str) -> String {
    let status = relay.status();
    assert_eq!(status["relayService"], true, "{status}");
    status["relayAddresses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|address| address.as_str().unwrap().to_string())
        .find(|address| address.contains(ip) && address.contains("/tcp/"))
        .unwrap_or_else(|| panic!("no TCP relay address at {ip}: {status}"))
}

/// Waits until `node`'s relays all hold a reservation for it; its status.
fn wait_until_reserved(node: &Node) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = node.status();
        let relays = status["relays"].as_array().unwrap();
        if !relays.is_empty() && relays.iter().all(|relay| relay["reserved"] == true) {
            return status;
        }
        assert!(Instant::now() < deadline, "no reservation in time: {status}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Makes a counter on `owner` named `counter`, mails it to `to`, and
/// `holder` adopts it as `c` and calls it once; how long from the mail
/// to the first answer.
fn give_counter(owner: &Node, to: &str, holder: &Node) -> Duration {
    owner.run(&["eval", COUNTER, "-n", "counter"]).ok();
    let started = Instant::now();
    owner.run(&["send", to, "a counter @counter"]).ok();
    let inbox = holder.run(&["inbox"]).ok().to_string();
    let number = inbox
        .lines()
        .last()
        .unwrap()
        .split('.')
        .next()
        .unwrap()
        .trim()
        .to_string();
    holder.run(&["adopt", &number, "counter", "-n", "c"]).ok();
    assert_eq!(holder.run(&["eval", "E(c).incr()", "c:c"]).ok(), "1");
    started.elapsed()
}

/// `count` calls to `c` on `holder` in one eval, awaited one after the
/// other; the last answer.
fn call_counter(holder: &Node, count: u32) -> String {
    let source = format!(
        "(async () => {{ let last; for (let i = 0; i < {count}; i += 1) {{ last = await E(c).incr(); }} return last; }})()"
    );
    holder.run(&["eval", &source, "c:c"]).ok().to_string()
}

/// A relay and two nodes using it (with `config` as their `config.toml`
/// unless empty), started in `homes`.
fn start_relay_and_homes(homes: &TwoHomes, config: &str) -> (Node, Node, Node) {
    let relay = Node::new(&[]);
    relay.start_in(&homes.relay, &["--relay-service"]).ok();
    let address = relay_address(&relay, RELAY_IP);
    let alice = Node::new(&[]);
    let bob = Node::new(&[]);
    if !config.is_empty() {
        for node in [&alice, &bob] {
            std::fs::write(node.state_dir().join("config.toml"), config).unwrap();
        }
    }
    alice.start_in(&homes.alice, &["--relay", &address]).ok();
    bob.start_in(&homes.bob, &["--relay", &address]).ok();
    let status = wait_until_reserved(&alice);
    assert_eq!(status["relays"][0]["address"], address.as_str(), "{status}");
    wait_until_reserved(&bob);
    (relay, alice, bob)
}

#[test]
fn two_nodes_behind_nats_meet_through_a_relay_and_punch_a_hole_to_a_direct_connection() {
    use_binary(env!("CARGO_BIN_EXE_capstan"));
    let Some(homes) = two_homes(false) else { return };
    let (relay, alice, bob) = start_relay_and_homes(&homes, "");

    let locator = introduce(&alice, "bob", &bob, "alice");
    assert!(
        locator.contains("p2p-circuit"),
        "the invitation carries the relayed address: {locator}"
    );
    let first_answer = give_counter(&alice, "bob", &bob);
    // The first connection went through the relay...
    let relay_log = std::fs::read_to_string(relay.state_dir().join("node.log")).unwrap();
    assert!(relay_log.contains("relay: circuit opened"), "{relay_log}");
    // ...and is direct now.
    let record = peer_record(&bob, &alice);
    assert_eq!(record["connected"], true, "{record}");
    assert_eq!(record["connection"], "direct", "{record}");
    assert_eq!(peer_record(&alice, &bob)["connection"], "direct");
    eprintln!("mail to first answer, hole punched: {first_answer:?}");
    let started = Instant::now();
    assert_eq!(call_counter(&bob, 100), "101");
    eprintln!("100 calls direct: {:?}", started.elapsed());
    // Alice reaches bob the same way.
    give_counter(&bob, "alice", &alice);

    // The relay goes away; the direct connection stays, and calls work.
    relay.run(&["stop"]).ok();
    assert_eq!(call_counter(&bob, 10), "111");
    let record = peer_record(&bob, &alice);
    assert_eq!(record["connection"], "direct", "{record}");
    let status = alice.status();
    assert_eq!(status["relays"][0]["reserved"], false, "{status}");
    drop(homes.topology);
}

#[test]
fn behind_nats_that_defeat_hole_punching_nodes_talk_through_the_relay() {
    use_binary(env!("CARGO_BIN_EXE_capstan"));
    let Some(homes) = two_homes(true) else { return };
    let (_relay, alice, bob) = start_relay_and_homes(&homes, "");

    introduce(&alice, "bob", &bob, "alice");
    let first_answer = give_counter(&alice, "bob", &bob);
    let record = peer_record(&bob, &alice);
    assert_eq!(record["connected"], true, "{record}");
    assert_eq!(record["connection"], "relayed", "{record}");
    let started = Instant::now();
    assert_eq!(call_counter(&bob, 100), "101");
    eprintln!(
        "mail to first answer, relayed: {first_answer:?}; 100 calls relayed: {:?}",
        started.elapsed()
    );
    give_counter(&bob, "alice", &alice);
    assert_eq!(peer_record(&alice, &bob)["connection"], "relayed");
    drop(homes.topology);
}

/// Each home router refuses (at once) what comes from the other's public
/// address, or lets it be again: hole punching fails, or can work.
fn refuse_each_other(homes: &TwoHomes, refuse: bool) {
    let action = if refuse { "-I" } else { "-D" };
    for (router, other) in [(&homes.nat_a, "100.64.2.2"), (&homes.nat_b, "100.64.1.2")] {
        for chain in ["FORWARD", "INPUT"] {
            for (protocol, reject) in [("tcp", "tcp-reset"), ("udp", "icmp-port-unreachable")] {
                let rule = [
                    "iptables",
                    action,
                    chain,
                    "-s",
                    other,
                    "-p",
                    protocol,
                    "-j",
                    "REJECT",
                    "--reject-with",
                    reject,
                ];
                let output = homes.topology.exec(router, &rule);
                assert!(
                    output.status.success(),
                    "{rule:?}: {}",
                    String::from_utf8_lossy(&output.stderr)
                );
            }
        }
    }
}

/// How many times `node`'s log says a session with a peer ended.
fn peer_sessions_ended(node: &Node) -> usize {
    let log = std::fs::read_to_string(node.state_dir().join("node.log")).unwrap();
    log.lines()
        .filter(|line| line.contains("peer session closed") || line.contains("peer session to us ended"))
        .count()
}

#[test]
fn calls_in_flight_when_a_relayed_session_goes_direct_are_neither_lost_nor_repeated() {
    use_binary(env!("CARGO_BIN_EXE_capstan"));
    let Some(homes) = two_homes(false) else { return };
    // The first hole punch fails; later ones are tried every 0.5 s, 1 s, 2 s...
    refuse_each_other(&homes, true);
    let (relay, alice, bob) = start_relay_and_homes(&homes, "[peers]\nhole_punch_retry_ms = 500\n");
    introduce(&alice, "bob", &bob, "alice");
    give_counter(&alice, "bob", &bob);
    let record = peer_record(&bob, &alice);
    assert_eq!(record["connection"], "relayed", "{record}");
    let ended = (peer_sessions_ended(&alice), peer_sessions_ended(&bob));

    // Bob calls the counter in runs of 50 awaited calls while the routers
    // let the punch through, until a while after the switch.
    let stop = std::sync::atomic::AtomicBool::new(false);
    let lasts = std::thread::scope(|scope| {
        let caller = scope.spawn(|| {
            let mut lasts = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                lasts.push(call_counter(&bob, 50).parse::<u64>().unwrap());
            }
            lasts
        });
        std::thread::sleep(Duration::from_millis(300));
        refuse_each_other(&homes, false);
        let deadline = Instant::now() + Duration::from_secs(30);
        while peer_record(&bob, &alice)["connection"] != "direct" {
            assert!(
                Instant::now() < deadline,
                "no direct connection: {}",
                peer_record(&bob, &alice)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        std::thread::sleep(Duration::from_secs(1));
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        caller.join().unwrap()
    });
    // Every run's 50 calls were answered once each, in order.
    let expected: Vec<u64> = (1..=lasts.len() as u64).map(|run| 1 + 50 * run).collect();
    assert_eq!(lasts, expected);
    let bob_log = std::fs::read_to_string(bob.state_dir().join("node.log")).unwrap();
    assert!(
        bob_log.contains("moving a session stream to a direct connection"),
        "{bob_log}"
    );
    assert_eq!(peer_record(&alice, &bob)["connection"], "direct");
    // The sessions left the relay: they outlive it, and none ended, so no
    // reference was broken.
    relay.run(&["stop"]).ok();
    let started = Instant::now();
    assert_eq!(call_counter(&bob, 100), (1 + 50 * lasts.len() as u64 + 100).to_string());
    eprintln!(
        "runs across the switch: {}; 100 calls after it: {:?}",
        lasts.len(),
        started.elapsed()
    );
    assert_eq!((peer_sessions_ended(&alice), peer_sessions_ended(&bob)), ended);
    drop(homes.topology);
}

#[test]
fn a_node_that_gains_a_relayed_address_after_start_tells_its_known_peers() {
    use_binary(env!("CARGO_BIN_EXE_capstan"));
    let Some(homes) = two_homes(false) else { return };
    let (relay, alice, bob) = start_relay_and_homes(&homes, "");
    introduce(&alice, "bob", &bob, "alice");
    give_counter(&alice, "bob", &bob);

    // Alice restarts with a second relay too; her reservations come after
    // her greeting at start, and she tells bob again.
    let second = Node::new(&[]);
    second.start_in(&homes.relay, &["--relay-service"]).ok();
    let second_address = relay_address(&second, RELAY_IP);
    let second_id = second_address.rsplit('/').next().unwrap().to_string();
    alice.run(&["stop"]).ok();
    alice
        .start_in(
            &homes.alice,
            &["--relay", &relay_address(&relay, RELAY_IP), "--relay", &second_address],
        )
        .ok();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let record = peer_record(&bob, &alice);
        let addresses = record["addresses"].as_array().unwrap();
        if addresses
            .iter()
            .any(|address| address.as_str().unwrap().contains(&second_id))
        {
            break;
        }
        if Instant::now() >= deadline {
            let alice_log = std::fs::read_to_string(alice.state_dir().join("node.log")).unwrap();
            panic!("bob was not told: {record}\nalice's log:\n{alice_log}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let alice_log = std::fs::read_to_string(alice.state_dir().join("node.log")).unwrap();
    assert!(
        alice_log.contains("our addresses changed; telling known peers"),
        "{alice_log}"
    );
    // The counter was made again at alice's restart, and bob reaches it.
    assert_eq!(bob.run(&["eval", "E(c).incr()", "c:c"]).ok(), "1");
    drop(homes.topology);
}

#[test]
fn a_relay_refuses_reservations_over_its_limit() {
    use_binary(env!("CARGO_BIN_EXE_capstan"));
    let relay = Node::new(&[]);
    std::fs::write(
        relay.state_dir().join("config.toml"),
        "[relay]\nservice = true\nreservations = 1\n",
    )
    .unwrap();
    relay.run(&["start", "--listen", LOOPBACK]).ok();
    let address = relay_address(&relay, "127.0.0.1");
    let first = Node::new(&[]);
    first.run(&["start", "--local", "--relay", &address]).ok();
    let status = wait_until_reserved(&first);
    assert!(
        status["listenAddresses"]
            .as_array()
            .unwrap()
            .iter()
            .any(|listening| listening.as_str().unwrap().contains("p2p-circuit")),
        "{status}"
    );
    let second = Node::new(&[]);
    second.run(&["start", "--local", "--relay", &address]).ok();
    let deadline = Instant::now() + Duration::from_secs(10);
    let refused = loop {
        let status = second.status();
        if status["relays"][0]["lastError"].is_string() {
            break status;
        }
        assert!(Instant::now() < deadline, "no refusal seen: {status}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(refused["relays"][0]["reserved"], false, "{refused}");
    let words = second.run(&["status"]).ok().to_string();
    assert!(words.contains("no reservation"), "{words}");
    // The first keeps its reservation.
    assert_eq!(first.status()["relays"][0]["reserved"], true);
}
