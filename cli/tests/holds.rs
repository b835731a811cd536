//! Holds across nodes, end to end: real nodes on loopback. A value sent
//! in mail, or given as a request's answer, is held by the receiving node
//! on the giver's, across restarts of both; `forget` drops a peer's holds;
//! a holder's queued releases are sent (at start, and again once the
//! giver is back) and applied once; the gateway's `release` refuses what
//! is malformed and touches only the caller's own holds.
//!
//! With the collector: a value only a peer holds outlives collections and
//! restarts until the peer lets go (its collection releases it) or is
//! forgotten. One test queues releases directly in a stopped holder's
//! store, to check they wait for a giver that is down.

#![allow(clippy::expect_used, clippy::unwrap_used, reason = "a test fails by panicking")]

use std::cell::RefCell;
use std::collections::HashSet;
use std::process::Stdio;
use std::rc::Rc;
use std::time::Duration;

use capstan_node::runtime::Exo;
use capstan_protocol::Value;
use capstan_protocol::captp::Limits;
use capstan_tests::hostile::{Attacker, Target};
use capstan_tests::{LOOPBACK, Node, introduce, names_an_identifier, use_binary, wait_until};

const COUNTER: &str = "let n = 0; makeExo('Counter', M.interface('Counter', { incr: M.call().returns(M.number()) }), { incr() { n += 1; return n; } })";

fn started() -> Node {
    use_binary(env!("CARGO_BIN_EXE_capstan"));
    Node::started_on_loopback("")
}

fn node_id(node: &Node) -> String {
    node.status()["nodeId"].as_str().expect("node id").to_string()
}

/// `capstan holds --json`'s list `field` as (node id, formulas) pairs.
fn holds(node: &Node, field: &str) -> Vec<(String, u64)> {
    let listed: serde_json::Value = serde_json::from_str(node.run(&["holds", "--json"]).ok()).expect("json");
    listed[field]
        .as_array()
        .unwrap_or_else(|| panic!("no {field} in {listed}"))
        .iter()
        .map(|entry| {
            (
                entry["nodeId"].as_str().expect("a node id").to_string(),
                entry["formulas"].as_u64().expect("a count"),
            )
        })
        .collect()
}

/// Two introduced nodes; alice has a counter.
fn alice_and_bob() -> (Node, Node) {
    let (alice, bob) = (started(), started());
    introduce(&alice, "bob", &bob, "alice");
    alice.run(&["eval", COUNTER, "-n", "counter"]).ok();
    (alice, bob)
}

#[test]
fn a_peers_hold_survives_restarts_of_both_nodes_and_forget_drops_it() {
    let (alice, bob) = alice_and_bob();
    let (alice_id, bob_id) = (node_id(&alice), node_id(&bob));
    assert!(holds(&alice, "heldByPeers").is_empty());
    alice.run(&["send", "bob", "for you @counter"]).ok();
    assert_eq!(holds(&alice, "heldByPeers"), [(bob_id.clone(), 1)]);
    assert_eq!(holds(&bob, "heldFromPeers"), [(alice_id.clone(), 1)]);
    // Nothing was given back the other way.
    assert!(holds(&bob, "heldByPeers").is_empty());
    assert!(holds(&alice, "heldFromPeers").is_empty());

    alice.run(&["restart", "--listen", LOOPBACK]).ok();
    bob.run(&["restart", "--listen", LOOPBACK]).ok();
    assert_eq!(holds(&alice, "heldByPeers"), [(bob_id.clone(), 1)]);
    assert_eq!(holds(&bob, "heldFromPeers"), [(alice_id.clone(), 1)]);
    let shown = alice.run(&["holds"]).ok().to_string();
    assert_eq!(shown, format!("held by {bob_id}: 1"));
    bob.run(&["adopt", "0", "counter", "-n", "c"]).ok();
    assert_eq!(bob.eval("E(c).incr()", &["c:c"]), "1");

    // A second value, and the first again: still two ids.
    alice.run(&["eval", COUNTER, "-n", "other"]).ok();
    alice.run(&["send", "bob", "@other and @counter"]).ok();
    assert_eq!(holds(&alice, "heldByPeers"), [(bob_id.clone(), 2)]);

    // forget names the peer as send does; it counts the ids dropped.
    assert_eq!(alice.run(&["forget", "bob"]).ok(), "2");
    assert!(holds(&alice, "heldByPeers").is_empty());
    assert_eq!(alice.run(&["forget", "bob"]).ok(), "0");
    alice.run(&["restart", "--listen", LOOPBACK]).ok();
    assert!(holds(&alice, "heldByPeers").is_empty());
    let own = alice.run(&["forget", "counter"]);
    assert!(
        own.err().contains("names a value of this node, not a peer's"),
        "{}",
        own.err()
    );
    let unknown = alice.run(&["forget", "nobody"]);
    assert!(unknown.err().contains("Unknown pet name"), "{}", unknown.err());
}

#[test]
fn a_requests_answer_is_held_by_the_requester() {
    let (alice, bob) = alice_and_bob();
    let (alice_id, bob_id) = (node_id(&alice), node_id(&bob));
    let asking = bob
        .command(&["request", "a counter please", "-t", "alice", "-n", "c"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("request");
    assert!(wait_until(Duration::from_secs(20), || alice
        .run(&["inbox"])
        .stdout
        .contains("requested \"a counter please\"")));
    alice.run(&["resolve", "0", "counter"]).ok();
    let answered = asking.wait_with_output().expect("the request ends");
    assert!(answered.status.success(), "{answered:?}");
    assert_eq!(holds(&alice, "heldByPeers"), [(bob_id, 1)]);
    assert_eq!(holds(&bob, "heldFromPeers"), [(alice_id, 1)]);
    assert_eq!(bob.eval("E(c).incr()", &["c:c"]), "1");
}

/// Queues, in the stopped `holder`'s store, the releases a collection
/// that reached none of the other nodes' ids would; how many ids.
fn queue_releases_reaching_nothing(holder: &Node) -> u64 {
    // `stop` can return while the store is still locked, for a moment
    // (seen now and then: `StoreError::Locked`).
    let mut opened = Err(capstan_store::StoreError::WriterStopped);
    wait_until(Duration::from_secs(10), || {
        opened = capstan_store::Store::open(holder.state_dir());
        opened.is_ok()
    });
    let store = opened.expect("the holder's store");
    let marked = store.read().unwrap().commit_seq().unwrap();
    let queued = store
        .transact(move |tx| tx.queue_hold_releases(&HashSet::new(), marked))
        .wait()
        .unwrap();
    store.close().unwrap();
    queued
}

#[test]
fn a_holders_releases_reach_the_giver_once_it_is_back_and_end_its_hold() {
    let (alice, bob) = alice_and_bob();
    let (alice_id, bob_id) = (node_id(&alice), node_id(&bob));
    alice.run(&["send", "bob", "for you @counter"]).ok();
    assert_eq!(holds(&alice, "heldByPeers"), [(bob_id.clone(), 1)]);
    // bob never names it and dismisses the message: he reaches nothing
    // of alice's any more.
    bob.run(&["dismiss", "0"]).ok();
    alice.run(&["stop"]).ok();
    bob.run(&["stop"]).ok();
    assert_eq!(queue_releases_reaching_nothing(&bob), 1);

    // alice is away: the release waits, across bob's start.
    bob.run(&["start", "--listen", LOOPBACK]).ok();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(holds(&bob, "releasesPending"), [(alice_id.clone(), 1)]);
    assert!(holds(&bob, "heldFromPeers").is_empty());

    // alice is back (her hold kept meanwhile); bob sends the release
    // once she greets him, or at his next retry.
    alice.run(&["start", "--listen", LOOPBACK]).ok();
    assert!(
        wait_until(Duration::from_secs(40), || holds(&alice, "heldByPeers").is_empty()),
        "alice still holds for bob: {:?}, bob's queue {:?}",
        holds(&alice, "heldByPeers"),
        holds(&bob, "releasesPending")
    );
    assert!(wait_until(Duration::from_secs(10), || holds(&bob, "releasesPending").is_empty()));
}

/// `capstan://{node}/?id={number}&type=invitation&...` → `{number}:{node}`.
fn invitation_id(locator: &str) -> String {
    let rest = locator.strip_prefix("capstan://").expect("a locator");
    let (node, query) = rest.split_once("/?").expect("a query");
    let number = query
        .split('&')
        .find_map(|pair| pair.strip_prefix("id="))
        .expect("an id");
    format!("{number}:{node}")
}

#[test]
fn release_touches_only_the_callers_holds_once_per_batch_and_refuses_the_malformed() {
    use_binary(env!("CARGO_BIN_EXE_capstan"));
    let alice = Node::started_on_loopback("");
    alice.run(&["eval", COUNTER, "-n", "counter"]).ok();
    let mallory = Attacker::listening();
    let target = Target::of(&alice);
    let mallory_id = mallory.node_id();

    // mallory redeems an invitation with a handle of her node, so alice
    // names it and can send her mail.
    let locator = alice.run(&["invite", "mallory"]).ok().to_string();
    let handle = format!("{}:{mallory_id}", "ab".repeat(32));
    let addresses = Value::array(mallory.listen_addresses().into_iter().map(Value::from));
    let gateway = mallory.run(async {
        let (_connection, gateway) = mallory.session(&target, Limits::default()).await;
        let redeemed = Attacker::call(
            &gateway,
            "redeem",
            vec![
                Value::from(invitation_id(&locator)),
                Value::from(handle.as_str()),
                addresses,
            ],
        )
        .await;
        assert!(redeemed.is_ok(), "{redeemed:?}");
        gateway
    });

    // alice sends her the counter; mallory's gateway takes the package.
    let delivered: Rc<RefCell<Vec<Vec<Value>>>> = Rc::default();
    let kept = Rc::clone(&delivered);
    let sending = alice
        .command(&["send", "mallory", "for you @counter"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("send");
    mallory.run(async {
        let her_gateway = Exo::new("EndoGateway")
            .method("deliver", move |_, args| {
                kept.borrow_mut().push(args);
                Ok(Value::Undefined)
            })
            .make()
            .expect("mallory's gateway");
        let _session = mallory.accept(her_gateway).await;
        for _ in 0..200 {
            if !delivered.borrow().is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let sent = sending.wait_with_output().expect("send ends");
    assert!(sent.status.success(), "{sent:?}");
    let counter_id = {
        let packages = delivered.borrow();
        let ids = packages[0][4].as_array().expect("ids").to_vec();
        ids[0].as_str().expect("an id").to_string()
    };
    assert_eq!(holds(&alice, "heldByPeers"), [(mallory_id.clone(), 1)]);

    let release = |batch: &str, ids: &[&str], counts: &[&str]| {
        let strings = |items: &[&str]| Value::array(items.iter().map(|item| Value::from(*item)));
        mallory.run(Attacker::call(
            &gateway,
            "release",
            vec![Value::from(batch), strings(ids), strings(counts)],
        ))
    };
    let refused = |outcome: Result<Value, String>| match outcome {
        Err(message) => message,
        Ok(value) => panic!("a release was taken: {value:?}"),
    };
    let id = counter_id.as_str();
    for (batch, ids, counts) in [
        ("x", vec![id], vec!["1"]),
        ("0", vec![id], vec!["1"]),
        ("1", vec![id], vec!["0"]),
        ("1", vec![id], vec!["-1"]),
        ("1", vec![id], vec![]),
        ("1", vec!["not an id"], vec!["1"]),
    ] {
        assert_eq!(refused(release(batch, &ids, &counts)), "Cannot release that");
    }
    let too_many: Vec<&str> = vec![id; capstan_store::RELEASE_BATCH_MAX + 1];
    let ones: Vec<&str> = vec!["1"; capstan_store::RELEASE_BATCH_MAX + 1];
    refused(release("1", &too_many, &ones));
    assert_eq!(holds(&alice, "heldByPeers"), [(mallory_id.clone(), 1)]);

    // An id alice never gave her changes nothing.
    let other = format!("{}:{}", "cd".repeat(32), node_id(&alice));
    release("1", &[&other], &["1"]).expect("taken");
    assert_eq!(holds(&alice, "heldByPeers"), [(mallory_id.clone(), 1)]);
    // Batch 1 is used: her real release goes in batch 2.
    release("2", &[id], &["1"]).expect("taken");
    assert!(holds(&alice, "heldByPeers").is_empty());

    // Given again; batch 2 sent again (its answer lost) is not applied
    // twice, so the new hold stays until batch 3.
    let again = alice
        .command(&["send", "mallory", "again @counter"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("send");
    mallory.run(async {
        for _ in 0..200 {
            if delivered.borrow().len() >= 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    assert!(again.wait_with_output().expect("send ends").status.success());
    assert_eq!(holds(&alice, "heldByPeers"), [(mallory_id.clone(), 1)]);
    release("2", &[id], &["1"]).expect("taken");
    assert_eq!(holds(&alice, "heldByPeers"), [(mallory_id.clone(), 1)]);
    release("3", &[id], &["1"]).expect("taken");
    assert!(holds(&alice, "heldByPeers").is_empty());
}

#[test]
fn a_third_nodes_id_passed_on_is_held_along_the_way_it_came_and_an_id_sent_home_is_not() {
    let (alice, bob) = alice_and_bob();
    let carol = started();
    introduce(&carol, "alice", &alice, "carol");
    let (alice_id, bob_id, carol_id) = (node_id(&alice), node_id(&bob), node_id(&carol));
    carol.run(&["eval", COUNTER, "-n", "counter"]).ok();
    carol.run(&["send", "alice", "@counter"]).ok();
    alice.run(&["adopt", "0", "counter", "-n", "carols"]).ok();
    alice.run(&["send", "bob", "from carol @carols"]).ok();

    // carol's id went carol → alice → bob: each hold is on the node that
    // gave it, so alice keeps holding it from carol while bob holds it
    // from her.
    assert_eq!(holds(&carol, "heldByPeers"), [(alice_id.clone(), 1)]);
    assert_eq!(holds(&alice, "heldFromPeers"), [(carol_id.clone(), 1)]);
    assert_eq!(holds(&alice, "heldByPeers"), [(bob_id.clone(), 1)]);
    assert_eq!(holds(&bob, "heldFromPeers"), [(alice_id.clone(), 1)]);
    bob.run(&["adopt", "0", "carols", "-n", "c"]).ok();
    assert_eq!(bob.eval("E(c).incr()", &["c:c"]), "1");

    // alice's own counter sent to bob and back: bob holds it from her,
    // she holds nothing of her own from him.
    alice.run(&["send", "bob", "mine @counter"]).ok();
    assert_eq!(holds(&alice, "heldByPeers"), [(bob_id, 2)]);
    bob.run(&["adopt", "1", "counter", "-n", "alices"]).ok();
    bob.run(&["send", "alice", "yours @alices"]).ok();
    assert!(holds(&bob, "heldByPeers").is_empty());
    assert_eq!(holds(&alice, "heldFromPeers"), [(carol_id, 1)]);
    assert_eq!(holds(&bob, "heldFromPeers"), [(alice_id, 2)]);
}

/// Two introduced nodes that collect only when asked and give new
/// formulas no grace; alice has a counter she has given bob, named `c`
/// there, and no longer names herself.
fn counter_only_bob_holds() -> (Node, Node) {
    use_binary(env!("CARGO_BIN_EXE_capstan"));
    let config = "[gc]\ngrace_seconds = 0\ndelay_ms = 3600000\n";
    let (alice, bob) = (Node::started_on_loopback(config), Node::started_on_loopback(config));
    introduce(&alice, "bob", &bob, "alice");
    alice.run(&["eval", COUNTER, "-n", "counter"]).ok();
    alice.run(&["send", "bob", "for you @counter"]).ok();
    bob.run(&["adopt", "0", "counter", "-n", "c"]).ok();
    alice.run(&["remove", "counter"]).ok();
    (alice, bob)
}

fn evals_collected(node: &Node) -> u64 {
    let collected: serde_json::Value = serde_json::from_str(node.run(&["gc", "--json"]).ok()).expect("gc JSON");
    collected["byType"]["eval"].as_u64().unwrap_or(0)
}

#[test]
fn a_value_a_peer_holds_outlives_collections_and_restarts_until_the_peer_lets_go() {
    let (alice, bob) = counter_only_bob_holds();
    assert_eq!(evals_collected(&alice), 0, "alice collected what bob holds");
    assert_eq!(bob.eval("E(c).incr()", &["c:c"]), "1");

    alice.run(&["restart", "--listen", LOOPBACK]).ok();
    bob.run(&["restart", "--listen", LOOPBACK]).ok();
    assert_eq!(
        evals_collected(&alice),
        0,
        "alice collected what bob holds after restarts"
    );
    // Made again from its formula after the restart, so it counts from 1.
    assert_eq!(bob.eval("E(c).incr()", &["c:c"]), "1");

    // Bob lets go: his collection releases the id to alice, whose next
    // collection takes the counter.
    bob.run(&["remove", "c"]).ok();
    bob.run(&["dismiss", "0"]).ok();
    let released = wait_until(Duration::from_secs(15), || {
        bob.run(&["gc"]).ok();
        holds(&alice, "heldByPeers").is_empty()
    });
    assert!(
        released,
        "bob's release never reached alice: {:?}",
        holds(&alice, "heldByPeers")
    );
    assert!(holds(&bob, "heldFromPeers").is_empty());
    // Bob's node also let go of the live presence; once its session has
    // told alice's, the counter is alice's to collect.
    let mut collected = 0;
    wait_until(Duration::from_secs(10), || {
        collected += evals_collected(&alice);
        collected > 0
    });
    assert_eq!(collected, 1, "the counter nobody holds stayed");
}

#[test]
fn after_forget_a_collection_takes_what_only_that_peer_held() {
    let (alice, bob) = counter_only_bob_holds();
    assert_eq!(evals_collected(&alice), 0);
    alice.run(&["forget", "bob"]).ok();
    assert_eq!(evals_collected(&alice), 1, "forget did not release bob's hold");
    // Bob's name now leads to a value its owner no longer has.
    let refused = bob.run(&["eval", "E(c).incr()", "c:c"]).err().to_string();
    assert!(!names_an_identifier(&refused), "{refused}");
}
