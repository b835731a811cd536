//! Formula collection end to end, with real node processes: a value whose
//! last name is removed is collected by `capstan gc` and stays gone after a
//! restart, a worker whose only values were collected is stopped, a blob's
//! bytes leave the store with its last name, and what is still named, or
//! still held by a running worker, survives.

#![allow(clippy::expect_used, clippy::unwrap_used, reason = "a test fails by panicking")]

use std::time::Duration;

use capstan_store::{FormulaId, Store};
use capstan_tests::{Node, names_an_identifier, process_alive, use_binary, wait_until};

/// A node that collects nothing by itself for an hour (so each test sees
/// what `capstan gc` does) and gives new formulas no grace.
fn started() -> Node {
    use_binary(env!("CARGO_BIN_EXE_capstan"));
    let node = Node::new(&[]);
    std::fs::write(
        node.state_dir().join("config.toml"),
        "[gc]\ngrace_seconds = 0\ndelay_ms = 3600000\n",
    )
    .expect("write config.toml");
    node.run(&["start"]).ok();
    node
}

/// The formula id behind a name, from its locator.
fn formula_id(node: &Node, name: &str) -> String {
    let locator = node.run(&["locate", name]).ok().to_string();
    let rest = locator.strip_prefix("capstan://").expect("a locator");
    let (node_id, query) = rest.split_once("/?").expect("a query");
    let number = query
        .split('&')
        .find_map(|pair| pair.strip_prefix("id="))
        .expect("an id");
    format!("{number}:{node_id}")
}

fn gc_json(node: &Node) -> serde_json::Value {
    serde_json::from_str(node.run(&["gc", "--json"]).ok()).expect("gc JSON")
}

/// Opens the stopped node's store to look at it directly.
fn with_store<T>(node: &Node, look: impl FnOnce(&Store) -> T) -> T {
    node.run(&["stop"]).ok();
    // The stopped process lets go of the file's lock as it exits.
    let mut opened = None;
    wait_until(Duration::from_secs(10), || {
        opened = Store::open(node.state_dir()).ok();
        opened.is_some()
    });
    let store = opened.expect("open the store");
    let seen = look(&store);
    store.close().expect("close the store");
    node.run(&["start"]).ok();
    seen
}

#[test]
fn a_value_whose_last_name_is_removed_is_collected_and_stays_gone() {
    let node = started();
    node.run(&["eval", "harden({ answer: 42 })", "-n", "kept"]).ok();
    node.run(&["eval", "'going'", "-n", "going"]).ok();
    node.run(&["copy", "going", "second-name"]).ok();
    let going = formula_id(&node, "going");
    let before = node.status()["formulas"].as_u64().expect("a formula count");

    // One of two names removed: nothing goes.
    node.run(&["remove", "going"]).ok();
    assert_eq!(gc_json(&node)["formulas"], 0);
    assert_eq!(node.run(&["show", "second-name"]).ok(), "going");

    // The last one removed: the value goes, and `gc` says what went.
    node.run(&["remove", "second-name"]).ok();
    let collected = gc_json(&node);
    assert_eq!(collected["formulas"], 1, "{collected}");
    assert_eq!(collected["byType"]["eval"], 1, "{collected}");
    assert_eq!(collected["formulasLeft"].as_u64(), Some(before - 1));
    assert!(collected["bytesFreed"].as_u64().unwrap() > 0);
    let words = node.run(&["gc"]).ok().to_string();
    assert!(words.starts_with("collected 0 formulas"), "{words}");
    assert_eq!(node.status()["formulas"].as_u64(), Some(before - 1));

    // Someone who kept its id is told it was collected, without the id.
    let write = format!("E(agent).write('back', '{going}')");
    node.run(&["eval", &write, "agent:AGENT"]).ok();
    let shown = node.run(&["show", "back"]);
    assert_eq!(
        shown.err(),
        "capstan: this value was collected: nothing named it any more"
    );
    assert!(!names_an_identifier(shown.err()));

    // Still named values are untouched; after a restart the collected one
    // is still gone.
    node.run(&["restart"]).ok();
    assert_eq!(node.eval("x.answer", &["x:kept"]), "42");
    let shown = node.run(&["show", "back"]);
    assert_eq!(shown.err(), "capstan: there is no such formula on this node");
    let id: FormulaId = going.parse().unwrap();
    let stored = with_store(&node, |store| store.read().unwrap().has_formula(id).unwrap());
    assert!(!stored, "the collected formula came back");
}

#[test]
fn a_worker_whose_only_values_were_collected_is_stopped() {
    let node = started();
    let pids = |node: &Node| -> Vec<i64> {
        node.status()["workerPids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|pid| pid.as_i64().unwrap())
            .collect()
    };
    let before = pids(&node);
    // A new unnamed worker, for one named value.
    node.run(&["eval", "'in a new worker'", "-w", "NEW", "-n", "made"]).ok();
    // A named worker, for another.
    node.run(&["eval", "'in w1'", "-w", "w1", "-n", "also"]).ok();
    let started_pids: Vec<i64> = pids(&node).into_iter().filter(|pid| !before.contains(pid)).collect();
    assert_eq!(started_pids.len(), 2, "two workers were started");

    node.run(&["remove", "made"]).ok();
    let collected = gc_json(&node);
    assert_eq!(collected["byType"]["worker"], 1, "{collected}");
    assert_eq!(collected["byType"]["eval"], 1, "{collected}");
    let gone: Vec<i64> = started_pids
        .iter()
        .copied()
        .filter(|pid| !pids(&node).contains(pid))
        .collect();
    assert_eq!(gone.len(), 1, "exactly the unnamed worker stopped");
    assert!(
        wait_until(Duration::from_secs(10), || !process_alive(gone[0] as i32)),
        "the worker process still runs"
    );

    // The named worker is still needed by its name.
    node.run(&["remove", "also"]).ok();
    let collected = gc_json(&node);
    assert_eq!(collected["byType"].get("worker"), None, "{collected}");
    let w1 = *started_pids.iter().find(|pid| **pid != gone[0]).unwrap();
    assert!(process_alive(w1 as i32));
    node.run(&["remove", "w1"]).ok();
    assert_eq!(gc_json(&node)["byType"]["worker"], 1);
    assert!(
        wait_until(Duration::from_secs(10), || !process_alive(w1 as i32)),
        "the named worker's process still runs after its name went"
    );
    assert!(!pids(&node).contains(&w1));
}

#[test]
fn a_blob_whose_last_name_was_removed_leaves_the_store() {
    let node = started();
    let bytes: Vec<u8> = (0..300_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    node.run_with_input(&["store", "--stdin", "-n", "big"], &bytes).ok();
    node.run_with_input(&["store", "--stdin", "-n", "big-again"], &bytes)
        .ok();
    let hash = capstan_store::BlobHash::from_bytes(*blake3::hash(&bytes).as_bytes());
    let totals = |node: &Node| with_store(node, |store| store.read().unwrap().blob_totals().unwrap());
    assert_eq!(totals(&node), (1, 300_000), "the bytes are kept once");

    // Another formula still has the same bytes: they stay.
    node.run(&["remove", "big"]).ok();
    let collected = gc_json(&node);
    assert_eq!(collected["byType"]["readable-blob"], 1, "{collected}");
    assert_eq!(collected["blobs"], 0);
    assert_eq!(node.run(&["cat", "big-again"]).stdout.len(), 300_000);

    node.run(&["remove", "big-again"]).ok();
    let collected = gc_json(&node);
    assert_eq!(collected["blobs"], 1, "{collected}");
    assert!(collected["bytesFreed"].as_u64().unwrap() >= 300_000);
    let has = with_store(&node, |store| store.read().unwrap().has_blob(hash).unwrap());
    assert!(!has, "the blob's bytes are still stored");
    assert_eq!(totals(&node), (0, 0));
}

/// An exo that keeps what it is given.
const BOX: &str = "let held; makeExo('Box', M.interface('Box', { set: M.call(M.any()).returns(M.number()), get: M.call().returns(M.any()) }), { set(x) { held = x; return 1; }, get() { return held; } })";

#[test]
fn a_value_a_running_worker_holds_survives_without_a_name() {
    let node = started();
    node.run_with_input(&["store", "--stdin", "-n", "note"], b"still here")
        .ok();
    node.run(&["spawn", "holder"]).ok();
    node.run(&["eval", BOX, "-w", "holder", "-n", "box"]).ok();
    // Everything runs in the holder, so only its session sees the blob.
    node.run(&["eval", "E(b).set(n)", "b:box", "n:note", "-w", "holder"])
        .ok();
    node.run(&["remove", "note"]).ok();
    let collected = gc_json(&node);
    // The unnamed eval went; the blob it handed the worker did not.
    assert_eq!(collected["byType"]["eval"], 1, "{collected}");
    assert_eq!(collected["byType"].get("readable-blob"), None, "{collected}");
    assert_eq!(collected["blobs"], 0, "{collected}");
    assert_eq!(
        node.eval("E(E(b).get()).text()", &["b:box", "-w", "holder"]),
        "still here"
    );
    node.run(&["remove", "box"]).ok();

    // Once the worker is gone, so is the blob: the worker goes first,
    // and its session, which held the blob, ends as it stops.
    node.run(&["remove", "holder"]).ok();
    let collected = gc_json(&node);
    assert_eq!(collected["byType"]["worker"], 1, "{collected}");
    let mut blobs = collected["blobs"].as_u64().unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || {
            blobs += gc_json(&node)["blobs"].as_u64().unwrap();
            blobs == 1
        }),
        "the blob the stopped worker held was not collected"
    );
}

#[test]
fn collection_runs_by_itself_after_a_name_is_removed() {
    use_binary(env!("CARGO_BIN_EXE_capstan"));
    let node = Node::new(&[]);
    std::fs::write(
        node.state_dir().join("config.toml"),
        "[gc]\ngrace_seconds = 0\ndelay_ms = 200\n",
    )
    .expect("write config.toml");
    node.run(&["start"]).ok();
    node.run(&["eval", "'soon gone'", "-n", "soon"]).ok();
    let with_it = node.status()["formulas"].as_u64().unwrap();
    node.run(&["remove", "soon"]).ok();
    assert!(
        wait_until(Duration::from_secs(10), || node.status()["formulas"].as_u64()
            == Some(with_it - 1)),
        "no collection ran by itself"
    );
    assert!(node.status()["incarnations"].as_u64().is_some());
}
