//! Peers, end to end: two real nodes on loopback, invitations, mail and
//! remote references between them, restarts and a peer that dies.

#![allow(clippy::expect_used, clippy::unwrap_used, reason = "a test fails by panicking")]

use std::time::{Duration, Instant};

use capstan_tests::{LOOPBACK, Node, introduce, kill, names_an_identifier, use_binary, wait_until};

const COUNTER: &str = "let n = 0; const counter = makeExo('Counter', M.interface('Counter', { incr: M.call().returns(M.number()), twin: M.call().returns(M.remotable()), never: M.call().returns(M.any()), later: M.call().returns(M.promise()) }), { incr() { n += 1; return n; }, twin() { return counter; }, never() { return new Promise(() => {}); }, later() { return E(counter).incr().then(() => counter); } }); counter";

fn started() -> Node {
    use_binary(env!("CARGO_BIN_EXE_capstan"));
    Node::started_on_loopback("")
}

fn node_id(node: &Node) -> String {
    node.status()["nodeId"].as_str().expect("node id").to_string()
}

fn listen_addresses(node: &Node) -> Vec<String> {
    node.status()["listenAddresses"]
        .as_array()
        .expect("listen addresses")
        .iter()
        .map(|address| address.as_str().expect("address").to_string())
        .collect()
}

/// Two nodes, `alice` having invited `bob`: alice's host names bob's
/// handle `bob`, bob's names alice's `alice`.
fn introduced() -> (Node, Node) {
    let (alice, bob) = (started(), started());
    introduce(&alice, "bob", &bob, "alice");
    (alice, bob)
}

/// alice sends bob a counter, which bob adopts as `c`.
fn counter_for_bob(alice: &Node, bob: &Node) {
    alice.run(&["eval", COUNTER, "-n", "counter"]).ok();
    alice.run(&["send", "bob", "a counter for you @counter"]).ok();
    let inbox = bob.run(&["inbox"]).ok().to_string();
    assert!(
        inbox.contains("0. \"alice\" sent \"a counter for you @counter\""),
        "{inbox}"
    );
    bob.run(&["adopt", "0", "counter", "-n", "c"]).ok();
}

#[test]
fn an_invitation_is_accepted_once_and_each_side_names_the_other() {
    let (alice, bob) = (started(), started());
    let status = alice.status();
    assert_eq!(status["nodeId"].as_str().map(str::len), Some(64));
    let addresses = listen_addresses(&alice);
    assert!(addresses[0].starts_with("/ip4/127.0.0.1/tcp/"), "{addresses:?}");
    assert_ne!(addresses[0], "/ip4/127.0.0.1/tcp/0");

    let locator = alice.run(&["invite", "bob"]).ok().trim().to_string();
    assert!(
        locator.starts_with(&format!("capstan://{}/?id=", node_id(&alice))),
        "{locator}"
    );
    assert!(locator.contains("&type=invitation&from="), "{locator}");
    assert!(locator.contains("&at=%2Fip4%2F127.0.0.1%2Ftcp%2F"), "{locator}");
    // The locator from standard input.
    bob.run_with_input(&["accept", "alice"], locator.as_bytes()).ok();

    let names = |node: &Node| node.run(&["list"]).ok().lines().map(str::to_string).collect::<Vec<_>>();
    assert!(names(&alice).contains(&"bob".to_string()));
    assert!(names(&bob).contains(&"alice".to_string()));
    let peers = bob.run(&["peers"]).ok().to_string();
    assert!(
        peers.starts_with(&format!("{} /ip4/127.0.0.1/tcp/", node_id(&alice))),
        "{peers}"
    );
    let peers = alice.run(&["peers"]).ok().to_string();
    assert!(peers.contains(&node_id(&bob)), "{peers}");
    let connected = bob.status()["connectedPeers"].clone();
    assert_eq!(connected, serde_json::json!([node_id(&alice)]));
    let shown = bob.run(&["status"]).ok().to_string();
    assert!(shown.contains(&format!("connected   {}", node_id(&alice))), "{shown}");

    let located = bob.run(&["locate", "alice"]).ok().to_string();
    assert!(
        located.starts_with(&format!("capstan://{}/?id=", node_id(&alice))),
        "{located}"
    );
    let again = bob.run(&["accept", "alice-again", &locator]);
    assert!(
        again.err().contains("This invitation was already used"),
        "{}",
        again.err()
    );
    let carol = started();
    let third = carol.run(&["accept", "alice", &locator]);
    assert!(
        third.err().contains("This invitation was already used"),
        "{}",
        third.err()
    );
}

#[test]
fn a_counter_sent_in_mail_is_called_from_the_other_node_and_survives_restarts() {
    let (alice, bob) = introduced();
    counter_for_bob(&alice, &bob);
    assert_eq!(bob.eval("E(c).incr()", &["c:c"]), "1");
    assert_eq!(bob.eval("E(c).incr()", &["c:c"]), "2");
    // A pipelined chain: calls on the result of a call not yet answered.
    assert_eq!(bob.eval("E(E(E(c).twin()).twin()).incr()", &["c:c"]), "3");
    // A call answered with a promise that settles in a later turn, with a
    // call pipelined on it: each daemon waits for the final outcome and
    // routes the pipelined call meanwhile.
    let later = "(async () => { const p = E(c).later(); const q = E(p).incr(); \
                 const r = await p; return [await q, r === await E(c).twin()]; })()";
    assert_eq!(bob.eval(later, &["c:c"]), "[5, true]");
    // alice's own view of the same counter.
    assert_eq!(alice.eval("E(c).incr()", &["c:counter"]), "6");

    // bob restarts: the name still works (same counter, same count).
    bob.run(&["restart", "--listen", LOOPBACK]).ok();
    assert_eq!(bob.eval("E(c).incr()", &["c:c"]), "7");

    // alice restarts (on the same port, which is free): bob sees her
    // address, and his name gets the counter made again on her node.
    alice.run(&["restart", "--listen", LOOPBACK]).ok();
    let address = listen_addresses(&alice).remove(0);
    assert!(
        wait_until(Duration::from_secs(10), || bob
            .run(&["peers"])
            .stdout
            .contains(&address)),
        "bob did not learn alice's new address"
    );
    assert_eq!(bob.eval("E(c).incr()", &["c:c"]), "1");
    // Mail still flows both ways.
    bob.run(&["eval", "'thanks'", "-n", "note"]).ok();
    bob.run(&["send", "alice", "thanks @note"]).ok();
    let inbox = alice.run(&["inbox"]).ok().to_string();
    assert!(inbox.contains("\"bob\" sent \"thanks @note\""), "{inbox}");
}

#[test]
fn a_worker_sent_in_mail_evaluates_on_the_granting_node() {
    let (alice, bob) = introduced();
    alice.run(&["spawn", "helper"]).ok();
    alice.run(&["send", "bob", "use my worker @helper"]).ok();
    bob.run(&["adopt", "0", "helper", "-n", "alices-worker"]).ok();
    assert_eq!(bob.run(&["eval", "6*7", "-w", "alices-worker"]).ok().trim(), "42");
    let alice_workers = alice.status()["workers"].as_u64();
    let bob_workers = bob.status()["workers"].as_u64();
    assert_eq!(alice_workers, Some(1), "the eval ran in alice's worker");
    assert_eq!(bob_workers, Some(0), "bob started no worker");
}

#[test]
fn when_a_peer_dies_calls_fail_with_a_fixed_text_and_the_next_use_reconnects() {
    let (alice, bob) = introduced();
    counter_for_bob(&alice, &bob);
    assert_eq!(bob.eval("E(c).incr()", &["c:c"]), "1");
    let alice_id = node_id(&alice);

    // A call pending when alice dies fails within a bound, saying the
    // peer went away and naming no node or address.
    let mut pending = bob
        .command(&["eval", "E(c).never()", "c:c"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn eval");
    std::thread::sleep(Duration::from_millis(300));
    let pid = alice.pid().expect("alice's pid");
    let killed = Instant::now();
    kill(pid, libc::SIGKILL);
    assert!(
        wait_until(Duration::from_secs(15), || pending.try_wait().ok().flatten().is_some()),
        "the pending call did not fail"
    );
    let output = pending.wait_with_output().expect("eval output");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("the peer that holds this object went away"), "{stderr}");
    assert!(!names_an_identifier(&stderr), "{stderr}");
    assert!(killed.elapsed() < Duration::from_secs(15));

    // The next call fails at once: the peer cannot be reached. The node's
    // log says which peer, and why.
    let started_at = Instant::now();
    let failed = bob.run(&["eval", "E(c).incr()", "c:c"]);
    assert!(
        failed
            .err()
            .contains("the peer that holds this object cannot be reached"),
        "{}",
        failed.err()
    );
    assert!(!names_an_identifier(failed.err()), "{}", failed.err());
    assert!(started_at.elapsed() < Duration::from_secs(15));
    let log = std::fs::read_to_string(bob.state_dir().join("node.log")).expect("bob's log");
    assert!(
        log.lines()
            .any(|line| line.contains("cannot reach a peer") && line.contains(&alice_id)),
        "{log}"
    );

    // alice comes back (on a new port, which she tells bob): bob reconnects.
    alice.run(&["start", "--listen", LOOPBACK]).ok();
    let address = listen_addresses(&alice).remove(0);
    assert!(wait_until(Duration::from_secs(10), || bob
        .run(&["peers"])
        .stdout
        .contains(&address)));
    assert_eq!(bob.eval("E(c).incr()", &["c:c"]), "1");
}

#[test]
fn a_reference_to_a_third_nodes_counter_is_passed_on_and_called() {
    // alice knows bob and carol; bob and carol do not know each other.
    let (alice, bob) = introduced();
    let carol = started();
    let locator = carol.run(&["invite", "alice"]).ok().trim().to_string();
    alice.run(&["accept", "carol", &locator]).ok();

    carol.run(&["eval", COUNTER, "-n", "counter"]).ok();
    carol.run(&["send", "alice", "a counter @counter"]).ok();
    alice.run(&["adopt", "0", "counter", "-n", "carols-counter"]).ok();
    assert_eq!(alice.eval("E(c).incr()", &["c:carols-counter"]), "1");

    alice
        .run(&["send", "bob", "carol's counter @counter:carols-counter"])
        .ok();
    let inbox = bob.run(&["inbox"]).ok().to_string();
    assert!(inbox.contains("\"alice\" sent \"carol's counter @counter\""), "{inbox}");
    bob.run(&["adopt", "0", "counter", "-n", "c"]).ok();
    assert_eq!(bob.eval("E(c).incr()", &["c:c"]), "2");
    assert_eq!(bob.eval("E(E(c).twin()).incr()", &["c:c"]), "3");

    // carol sees the calls bob made.
    assert_eq!(carol.eval("E(c).incr()", &["c:counter"]), "4");
    // bob reached carol's node itself, not through alice.
    let connected = bob.status()["connectedPeers"].clone();
    let connected: Vec<&str> = connected
        .as_array()
        .expect("connected peers")
        .iter()
        .filter_map(|n| n.as_str())
        .collect();
    assert!(connected.contains(&node_id(&carol).as_str()), "{connected:?}");

    // After bob restarts the name still reaches carol's counter.
    bob.run(&["restart", "--listen", LOOPBACK]).ok();
    assert_eq!(bob.eval("E(c).incr()", &["c:c"]), "5");
}

/// Starts `capstan request` on `node`; it waits for the answer.
fn start_request(node: &Node, args: &[&str]) -> std::process::Child {
    let mut full = vec!["request"];
    full.extend_from_slice(args);
    node.command(&full)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn request")
}

/// Waits for a command started with [`start_request`] to end.
fn finished(mut child: std::process::Child) -> std::process::Output {
    assert!(
        wait_until(Duration::from_secs(20), || child.try_wait().ok().flatten().is_some()),
        "the request did not end"
    );
    child.wait_with_output().expect("request output")
}

#[test]
fn a_request_to_a_peer_is_answered_from_its_inbox() {
    let (alice, bob) = introduced();
    alice.run(&["eval", COUNTER, "-n", "counter"]).ok();

    // bob asks alice; the request waits for her answer.
    let asking = start_request(&bob, &["a counter please", "-t", "alice", "-n", "granted"]);
    assert!(
        wait_until(Duration::from_secs(10), || alice
            .run(&["inbox"])
            .stdout
            .contains("0. \"bob\" requested \"a counter please\"")),
        "alice did not get the request: {}",
        alice.run(&["inbox"]).stdout
    );
    alice.run(&["resolve", "0", "counter"]).ok();
    let answered = finished(asking);
    let stdout = String::from_utf8_lossy(&answered.stdout);
    assert!(
        answered.status.success(),
        "{}",
        String::from_utf8_lossy(&answered.stderr)
    );
    assert!(stdout.contains("Counter"), "{stdout}");
    let inbox = alice.run(&["inbox"]).ok().to_string();
    assert!(inbox.contains("requested \"a counter please\" (resolved)"), "{inbox}");

    // The answer is kept under bob's name and calls alice's counter.
    assert_eq!(bob.eval("E(c).incr()", &["c:granted"]), "1");
    assert_eq!(alice.eval("E(c).incr()", &["c:counter"]), "2");
    // Asking again with the same name returns it at once, asking nothing.
    let again = bob
        .run(&["request", "another", "-t", "alice", "-n", "granted"])
        .ok()
        .to_string();
    assert!(again.contains("Counter"), "{again}");
    assert!(!alice.run(&["inbox"]).ok().contains("another"));
    // The name survives bob's restart.
    bob.run(&["restart", "--listen", LOOPBACK]).ok();
    assert_eq!(bob.eval("E(c).incr()", &["c:granted"]), "3");

    // A refusal reaches bob with alice's reason.
    let asking = start_request(&bob, &["more please", "-t", "alice"]);
    assert!(wait_until(Duration::from_secs(10), || alice
        .run(&["inbox"])
        .stdout
        .contains("1. \"bob\" requested \"more please\"")));
    alice.run(&["reject", "1", "not today"]).ok();
    let refused = finished(asking);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("not today"), "{stderr}");
}

#[test]
fn two_nodes_on_port_zero_find_each_other_after_both_restart_while_apart() {
    let (alice, bob) = introduced();
    counter_for_bob(&alice, &bob);
    assert_eq!(bob.eval("E(c).incr()", &["c:c"]), "1");
    let (alice_before, bob_before) = (listen_addresses(&alice), listen_addresses(&bob));
    // Both stop; neither is running while the other starts again.
    alice.run(&["stop"]).ok();
    bob.run(&["stop"]).ok();
    alice.run(&["start", "--listen", LOOPBACK]).ok();
    bob.run(&["start", "--listen", LOOPBACK]).ok();
    assert_eq!(listen_addresses(&alice), alice_before, "alice kept her port");
    assert_eq!(listen_addresses(&bob), bob_before, "bob kept his port");
    // The counter is made again on alice's node, and mail flows both ways.
    assert_eq!(bob.eval("E(c).incr()", &["c:c"]), "1");
    alice.run(&["eval", "'hello again'", "-n", "note"]).ok();
    alice.run(&["send", "bob", "back @note"]).ok();
    let inbox = bob.run(&["inbox"]).ok().to_string();
    assert!(inbox.contains("\"alice\" sent \"back @note\""), "{inbox}");
}

#[test]
fn a_peer_that_was_down_when_we_moved_is_told_our_new_address_when_it_is_back() {
    let (alice, bob) = introduced();
    counter_for_bob(&alice, &bob);
    assert_eq!(bob.eval("E(c).incr()", &["c:c"]), "1");
    bob.run(&["stop"]).ok();
    alice.run(&["stop"]).ok();
    // alice comes back on another port while bob is down: her greeting
    // cannot reach him, and he cannot find her at the port he knows.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port();
    alice
        .run(&["start", "--listen", &format!("/ip4/127.0.0.1/tcp/{port}")])
        .ok();
    let log = alice.state_dir().join("node.log");
    assert!(
        wait_until(Duration::from_secs(15), || std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter(|line| line.contains("node ready"))
            .count()
            == 2
            && std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("will greet the peer again")),
        "alice did not plan to greet bob again"
    );
    bob.run(&["start", "--listen", LOOPBACK]).ok();
    let address = listen_addresses(&alice).remove(0);
    assert!(address.contains(&format!("/tcp/{port}")), "{address}");
    assert!(
        wait_until(Duration::from_secs(30), || bob
            .run(&["peers"])
            .stdout
            .contains(&address)),
        "bob was not told alice's new address: {}",
        bob.run(&["peers"]).stdout
    );
    assert_eq!(bob.eval("E(c).incr()", &["c:c"]), "1");
}
