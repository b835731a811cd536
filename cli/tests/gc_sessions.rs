//! Distributed GC end to end, with real processes: a worker (`taker`)
//! receives thousands of references made by another worker (MAIN) through
//! the node, then lets them go; the node's sessions with both workers
//! (counted by the sessions, as `capstan status --json` lists them) come
//! back down to where they were. The same between two nodes: bob's worker
//! takes thousands of references made on alice, and both nodes' peer
//! sessions come back down.

#![allow(clippy::expect_used, clippy::unwrap_used, reason = "a test fails by panicking")]

use std::time::Duration;

use capstan_tests::{Node, introduce, use_binary, wait_until};

/// How many references cross.
const REFERENCES: usize = 3_000;

/// How long the drops may take to come back through both sessions
/// (each hop is bounded by the runtime's 250 ms tick; debug builds on a
/// loaded machine are slow).
const PATIENCE: Duration = Duration::from_secs(30);

/// In MAIN: `make()` returns a fresh object each time.
const FACTORY: &str = "Far('Factory', { make() { return Far('Made', {}); } })";

/// In `taker`: keeps what `fill` gets from a factory until `clear`.
const KEEPER: &str = "const kept = []; Far('Keeper', { \
    async fill(factory, count) { \
      while (kept.length < count) { \
        const batch = Array.from({ length: Math.min(500, count - kept.length) }, () => E(factory).make()); \
        kept.push(...(await Promise.all(batch))); \
      } \
      return kept.length; \
    }, \
    clear() { kept.length = 0; return kept.length; }, \
  })";

/// The node's sessions with its workers, by session id: (imports, exports).
fn worker_sessions(node: &Node) -> Vec<(u64, u64)> {
    sessions_of(node, "worker")
}

/// The node's sessions of `kind`, by session id: (imports, exports).
fn sessions_of(node: &Node, kind: &str) -> Vec<(u64, u64)> {
    let status = node.status();
    let sessions = status["sessions"].as_array().expect("status lists sessions");
    sessions
        .iter()
        .filter(|session| session["kind"] == kind)
        .map(|session| {
            (
                session["imports"].as_u64().expect("imports"),
                session["exports"].as_u64().expect("exports"),
            )
        })
        .collect()
}

#[test]
fn references_a_worker_lets_go_are_dropped_through_the_node() {
    use_binary(env!("CARGO_BIN_EXE_capstan"));
    let node = Node::started(&[]);
    node.run(&["eval", FACTORY, "-n", "factory"]).ok();
    node.run(&["spawn", "taker"]).ok();
    node.run(&["eval", KEEPER, "-w", "taker", "-n", "keeper"]).ok();
    // Warm up (every endowment crosses once), then take the baseline.
    let filled = node.eval("E(k).fill(f, 10)", &["k:keeper", "f:factory"]);
    assert_eq!(filled.trim(), "10");
    node.eval("E(k).clear()", &["k:keeper"]);
    let settled = wait_until(PATIENCE, || worker_sessions(&node).iter().all(|&(i, e)| i + e < 10));
    assert!(settled, "warm-up references dropped: {:?}", worker_sessions(&node));
    let baseline = worker_sessions(&node);
    assert_eq!(baseline.len(), 2, "MAIN and taker: {baseline:?}");

    let filled = node.eval(&format!("E(k).fill(f, {REFERENCES})"), &["k:keeper", "f:factory"]);
    assert_eq!(filled.trim(), REFERENCES.to_string());
    let full = worker_sessions(&node);
    let n = REFERENCES as u64;
    assert!(
        full.iter().any(|&(imports, _)| imports >= n) && full.iter().any(|&(_, exports)| exports >= n),
        "the node imports them from MAIN and exports them to taker: {full:?}"
    );

    node.eval("E(k).clear()", &["k:keeper"]);
    let cleared = std::time::Instant::now();
    let back = wait_until(PATIENCE, || {
        let now = worker_sessions(&node);
        now.len() == baseline.len()
            && now
                .iter()
                .zip(&baseline)
                .all(|(&(imports, exports), &(base_imports, base_exports))| {
                    imports <= base_imports + 2 && exports <= base_exports + 2
                })
    });
    assert!(
        back,
        "the node's worker sessions back to {baseline:?}, not {:?}",
        worker_sessions(&node)
    );
    eprintln!(
        "worker sessions (imports, exports): baseline {baseline:?}, full {full:?}, back to {:?} within {:?} of the clear",
        worker_sessions(&node),
        cleared.elapsed()
    );
}

/// (imports, exports) of the node's sessions with `peer`, summed: each
/// node may have opened one.
fn peer_session(node: &Node, peer: &str) -> (u64, u64) {
    let status = node.status();
    let sessions = status["sessions"].as_array().expect("status lists sessions");
    let peers: Vec<&serde_json::Value> = sessions
        .iter()
        .filter(|session| session["kind"] == "peer" && session["peer"] == peer)
        .collect();
    assert!(!peers.is_empty(), "a session with {peer}: {sessions:?}");
    let sum = |field: &str| peers.iter().map(|session| session[field].as_u64().expect(field)).sum();
    (sum("imports"), sum("exports"))
}

#[test]
fn references_a_peer_lets_go_are_dropped_on_both_nodes() {
    use_binary(env!("CARGO_BIN_EXE_capstan"));
    let (alice, bob) = (Node::started_on_loopback(""), Node::started_on_loopback(""));
    introduce(&alice, "bob", &bob, "alice");
    alice.run(&["eval", FACTORY, "-n", "factory"]).ok();
    alice.run(&["send", "bob", "a factory @factory"]).ok();
    bob.run(&["adopt", "0", "factory", "-n", "f"]).ok();
    bob.run(&["eval", KEEPER, "-n", "keeper"]).ok();
    let (alice_id, bob_id) = (
        alice.status()["nodeId"].as_str().expect("node id").to_string(),
        bob.status()["nodeId"].as_str().expect("node id").to_string(),
    );
    let filled = bob.eval("E(k).fill(f, 10)", &["k:keeper", "f:f"]);
    assert_eq!(filled.trim(), "10");
    bob.eval("E(k).clear()", &["k:keeper"]);
    let quiet = wait_until(PATIENCE, || {
        let ((bob_imports, _), (_, alice_exports)) = (peer_session(&bob, &alice_id), peer_session(&alice, &bob_id));
        bob_imports < 10 && alice_exports < 10
    });
    assert!(quiet, "warm-up references dropped");
    let baseline = (peer_session(&bob, &alice_id), peer_session(&alice, &bob_id));

    let filled = bob.eval(&format!("E(k).fill(f, {REFERENCES})"), &["k:keeper", "f:f"]);
    assert_eq!(filled.trim(), REFERENCES.to_string());
    let full = (peer_session(&bob, &alice_id), peer_session(&alice, &bob_id));
    let n = REFERENCES as u64;
    assert!(full.0.0 >= n && full.1.1 >= n, "bob imports them from alice: {full:?}");

    bob.eval("E(k).clear()", &["k:keeper"]);
    let cleared = std::time::Instant::now();
    let back = wait_until(PATIENCE, || {
        let ((bob_imports, _), (_, alice_exports)) = (peer_session(&bob, &alice_id), peer_session(&alice, &bob_id));
        bob_imports <= baseline.0.0 + 2 && alice_exports <= baseline.1.1 + 2
    });
    let now = (peer_session(&bob, &alice_id), peer_session(&alice, &bob_id));
    assert!(back, "peer sessions (bob, alice) back to {baseline:?}, not {now:?}");
    eprintln!(
        "peer sessions ((bob imports, exports), (alice imports, exports)): baseline {baseline:?}, full {full:?}, back to {now:?} within {:?} of the clear",
        cleared.elapsed()
    );
}
