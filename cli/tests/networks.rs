//! Nodes on different networks, built from network namespaces on this
//! machine: a node started with no flags at all is invited from another
//! routed LAN, and a node behind a home-router NAT reaches a node on the
//! public side directly, both ways over the connection it opened.
//!
//! Needs root, `ip` and `iptables` (`.ci/run` installs them); without
//! them the suite fails in CI and skips, saying so, elsewhere.

#![allow(clippy::expect_used, clippy::unwrap_used, reason = "a test fails by panicking")]

use capstan_tests::netns::Topology;
use capstan_tests::{Node, introduce, use_binary};

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
