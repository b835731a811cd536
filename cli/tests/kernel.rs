//! The kernel, end to end: subclusters of vats launched from cluster
//! configs on disk into a real node, driven through `capstan kernel ...`:
//! launch, baggage across restarts, service access, system subclusters
//! from the node's config file, revocation (from a vat, the CLI and a peer
//! node), termination and a vat that crashes at launch.

#![allow(clippy::expect_used, clippy::unwrap_used, reason = "a test fails by panicking")]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use capstan_tests::{LOOPBACK, Node, Run, use_binary, wait_until, write_cluster};
use serde_json::Value as Json;

/// How long a condition may take to hold (process exits).
const PATIENCE: Duration = Duration::from_secs(20);

fn started() -> Node {
    use_binary(env!("CARGO_BIN_EXE_capstan"));
    Node::started(&[])
}

/// The two-vat example shipped in the repository (`examples/kernel`).
fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/kernel/cluster.json")
}

/// A cluster config in a directory `name` beside the node's state (so it
/// goes with the node): `vats` are (name, source) pairs, written as
/// `NAME.js`; the first is the bootstrap vat.
fn cluster(node: &Node, name: &str, services: &[&str], vats: &[(&str, &str)]) -> PathBuf {
    write_cluster(&node.state_dir().join("clusters").join(name), services, vats)
}

/// `kernel launch`: the subcluster id and the root kref.
fn launch(node: &Node, config: &Path) -> (String, String) {
    let run = node.run(&["kernel", "launch", config.to_str().expect("UTF-8 path")]);
    let lines: Vec<&str> = run.ok().lines().collect();
    assert_eq!(lines.len(), 2, "{run:?}");
    assert!(lines[0].starts_with('s'), "{run:?}");
    assert!(lines[1].starts_with("ko"), "{run:?}");
    (lines[0].to_string(), lines[1].to_string())
}

fn queue(node: &Node, kref: &str, method: &str, args: &[&str]) -> Run {
    let mut command = vec!["kernel", "queue", kref, method];
    command.extend_from_slice(args);
    node.run(&command)
}

fn subclusters(node: &Node) -> Vec<Json> {
    let run = node.run(&["kernel", "subclusters", "--json"]);
    let json: Json = serde_json::from_str(run.ok()).expect("subclusters JSON");
    json.as_array().expect("an array").clone()
}

fn kernel_status(node: &Node) -> Json {
    let run = node.run(&["kernel", "status", "--json"]);
    serde_json::from_str(run.ok()).expect("kernel status JSON")
}

/// The pids of the running vats of a subcluster.
fn vat_pids(node: &Node, subcluster: &str) -> Vec<i32> {
    let status = kernel_status(node);
    status["vats"]
        .as_array()
        .expect("vats")
        .iter()
        .filter(|vat| vat["subclusterId"] == subcluster)
        .map(|vat| vat["pid"].as_i64().unwrap_or_else(|| panic!("no pid: {vat}")) as i32)
        .collect()
}

fn exists(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// The processes whose parent is `parent` (the node's workers).
fn children(parent: i32) -> BTreeSet<i32> {
    let mut found = BTreeSet::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|name| name.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // "pid (command) state ppid ...": the command may hold spaces.
        let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
        let ppid = after
            .split_whitespace()
            .nth(1)
            .and_then(|ppid| ppid.parse::<i32>().ok());
        if ppid == Some(parent) {
            found.insert(pid);
        }
    }
    found
}

/// [`Node::run_patiently`] with this suite's [`PATIENCE`].
fn run_patiently(node: &Node, args: &[&str]) -> Run {
    node.run_patiently(args, PATIENCE)
}

/// The bootstrap vat of the revocation tests: it is given another vat's
/// object and calls it.
const CALLER: &str = r#"
export function buildRootObject(vatPowers, parameters, baggage) {
  return makeDefaultExo('Caller', {
    bootstrap() {},
    setTarget(target) {
      if (baggage.has('target')) { baggage.set('target', target); } else { baggage.init('target', target); }
    },
    async callTarget() { return E(baggage.get('target')).hello('from a vat'); },
    forward() { return E(baggage.get('target')).hello('forwarded'); },
    ping() { return 'pong'; },
  });
}
"#;

/// An object to revoke; also shows how `kernel queue` prints results.
const TARGET: &str = r#"
export function buildRootObject() {
  return makeDefaultExo('Target', {
    bootstrap() {},
    hello(who) { return `hello ${who}`; },
    shape() { return harden({ a: 1, list: [1, 'x'], nothing: null }); },
  });
}
"#;

#[test]
fn a_two_vat_subcluster_is_launched_wired_and_counts() {
    let node = started();
    assert!(subclusters(&node).is_empty());

    let run = node.run(&["kernel", "launch", example().to_str().expect("UTF-8"), "--json"]);
    let launched: Json = serde_json::from_str(run.ok()).expect("launch JSON");
    let id = launched["subclusterId"].as_str().expect("subcluster id").to_string();
    let root = launched["rootKref"].as_str().expect("root kref").to_string();
    assert!(root.starts_with("ko"), "{launched}");
    // bootstrap called the timer and the logger before answering.
    assert_eq!(launched["bootstrapResult"], "tally is ready", "{launched}");
    let log = node.run(&["log"]).ok().to_string();
    assert!(
        log.contains("tally bootstrapped at"),
        "the logger service wrote to the node's log"
    );

    assert_eq!(queue(&node, &root, "incr", &[]).ok(), "1");
    assert_eq!(queue(&node, &root, "incr", &[]).ok(), "2");
    assert_eq!(queue(&node, &root, "bootstrapCount", &[]).ok(), "1");

    let listed = subclusters(&node);
    assert_eq!(listed.len(), 1, "{listed:?}");
    let subcluster = &listed[0];
    assert_eq!(subcluster["id"], id.as_str());
    assert_eq!(subcluster["rootKref"], root.as_str());
    assert_eq!(subcluster["bootstrap"], "main");
    assert_eq!(subcluster["system"], false);
    let vats = subcluster["vats"].as_object().expect("vats");
    assert_eq!(vats.keys().collect::<Vec<_>>(), ["counter", "main"], "{subcluster}");
    let shown = node.run(&["kernel", "subclusters"]).ok().to_string();
    assert!(shown.contains(&id) && shown.contains(&root), "{shown}");

    let status = kernel_status(&node);
    let vats_of: Vec<&Json> = status["vats"]
        .as_array()
        .expect("vats")
        .iter()
        .filter(|vat| vat["subclusterId"] == id.as_str())
        .collect();
    assert_eq!(vats_of.len(), 2, "{status}");
    for vat in &vats_of {
        assert_eq!(vat["state"], "running", "{vat}");
        let pid = vat["pid"].as_i64().expect("a running vat has a pid") as i32;
        assert!(exists(pid), "{vat}");
    }
    assert_eq!(status["subclusters"].as_array().map(Vec::len), Some(1), "{status}");
    assert_eq!(status["remoteComms"]["nodeId"], node.status()["nodeId"], "{status}");
    let text = node.run(&["kernel", "status"]).ok().to_string();
    assert!(text.contains(&id) && text.contains(&root), "{text}");

    let vat_id = vats["counter"].as_str().expect("vat id");
    assert_eq!(node.run(&["kernel", "ping-vat", vat_id]).ok(), "pong");

    // Without --json: the id and the root kref, one a line.
    let (second, second_root) = launch(&node, &example());
    assert_ne!(second, id);
    assert_eq!(queue(&node, &second_root, "incr", &[]).ok(), "1", "its own counter");
    assert_eq!(subclusters(&node).len(), 2);
}

#[test]
fn baggage_survives_restart_and_bootstrap_runs_once() {
    let node = started();
    let (id, root) = launch(&node, &example());
    assert_eq!(queue(&node, &root, "incr", &[]).ok(), "1");
    assert_eq!(queue(&node, &root, "incr", &[]).ok(), "2");
    let before = subclusters(&node);

    node.run(&["restart"]).ok();
    assert_eq!(queue(&node, &root, "incr", &[]).ok(), "3");
    // A second bootstrap would have counted 2 (and failed on baggage.init).
    assert_eq!(queue(&node, &root, "bootstrapCount", &[]).ok(), "1");
    assert_eq!(subclusters(&node), before, "same subcluster, same krefs");

    node.run(&["restart"]).ok();
    assert_eq!(queue(&node, &root, "incr", &[]).ok(), "4");
    assert_eq!(queue(&node, &root, "bootstrapCount", &[]).ok(), "1");
    assert_eq!(vat_pids(&node, &id).len(), 2);
}

#[test]
fn a_regular_subcluster_cannot_have_a_system_only_service() {
    let node = started();
    let (_, root) = launch(&node, &example());
    let node_pid = node.pid().expect("running");
    let before_subclusters = subclusters(&node);
    let before_vats = kernel_status(&node)["vats"].clone();
    let before_workers = children(node_pid);

    let config = cluster(&node, "facet", &["kernelFacet"], &[("main", TARGET)]);
    let run = node.run(&["kernel", "launch", config.to_str().expect("UTF-8")]);
    assert!(run.err().contains("system-only"), "{run:?}");
    assert!(run.err().contains(config.to_str().expect("UTF-8")), "{run:?}");

    let unknown = cluster(&node, "unknown", &["noSuchService"], &[("main", TARGET)]);
    let run = node.run(&["kernel", "launch", unknown.to_str().expect("UTF-8")]);
    assert!(run.err().contains("no kernel service named"), "{run:?}");

    assert_eq!(subclusters(&node), before_subclusters);
    assert_eq!(kernel_status(&node)["vats"], before_vats);
    assert!(
        wait_until(PATIENCE, || children(node_pid) == before_workers),
        "worker processes left: before {before_workers:?}, now {:?}",
        children(node_pid)
    );
    assert_eq!(
        queue(&node, &root, "incr", &[]).ok(),
        "1",
        "the other subcluster is untouched"
    );
}

/// A system vat: it keeps the kernel facet in baggage and uses it.
const CONTROLLER: &str = r#"
export function buildRootObject(vatPowers, parameters, baggage) {
  if (!baggage.has('bootstrapCount')) { baggage.init('bootstrapCount', 0); }
  return makeDefaultExo('Controller', {
    bootstrap(vats, services) {
      baggage.set('bootstrapCount', baggage.get('bootstrapCount') + 1);
      baggage.init('kernelFacet', services.kernelFacet);
    },
    kernelPing() { return E(baggage.get('kernelFacet')).ping(); },
    async subclusterCount() {
      const status = await E(baggage.get('kernelFacet')).getStatus();
      return status.subclusters.length;
    },
    bootstrapCount() { return baggage.get('bootstrapCount'); },
  });
}
"#;

#[test]
fn a_system_subcluster_from_the_config_file_is_there_after_restarts() {
    use_binary(env!("CARGO_BIN_EXE_capstan"));
    let node = Node::new(&[]);
    write_cluster(
        &node.state_dir().join("ops"),
        &["kernelFacet", "timer"],
        &[("controller", CONTROLLER)],
    );
    std::fs::write(
        node.state_dir().join("config.toml"),
        "[[system_subclusters]]\nname = \"ops\"\nconfig = \"ops/cluster.json\"\n",
    )
    .expect("write config.toml");
    node.run(&["start"]).ok();

    let root_of = |node: &Node| node.eval("E(k).getSystemSubclusterRoot('ops')", &["k:KERNEL"]);
    let root = root_of(&node);
    assert!(root.starts_with("ko"), "{root}");
    let check = |node: &Node| {
        let listed = subclusters(node);
        assert_eq!(listed.len(), 1, "{listed:?}");
        assert_eq!(listed[0]["system"], true, "{listed:?}");
        assert_eq!(listed[0]["name"], "ops", "{listed:?}");
        assert_eq!(listed[0]["rootKref"], root.as_str(), "{listed:?}");
        assert_eq!(queue(node, &root, "kernelPing", &[]).ok(), "pong");
        assert_eq!(queue(node, &root, "subclusterCount", &[]).ok(), "1");
        assert_eq!(queue(node, &root, "bootstrapCount", &[]).ok(), "1");
    };
    check(&node);
    let shown = node.run(&["kernel", "subclusters"]).ok().to_string();
    assert!(shown.contains("system ops"), "{shown}");

    for _ in 0..2 {
        node.run(&["restart"]).ok();
        assert_eq!(root_of(&node), root);
        check(&node);
    }
}

#[test]
fn a_revoked_object_fails_from_a_vat_and_from_the_cli_also_after_restart() {
    let node = started();
    let target_config = cluster(&node, "target", &[], &[("target", TARGET)]);
    let (_, target) = launch(&node, &target_config);
    let caller_config = cluster(&node, "caller", &[], &[("caller", CALLER)]);
    let (_, caller) = launch(&node, &caller_config);

    // Plain JSON arguments, and results printed as eval prints them.
    assert_eq!(queue(&node, &target, "hello", &[r#"["bob"]"#]).ok(), "hello bob");
    assert_eq!(
        queue(&node, &target, "shape", &[]).ok(),
        node.eval("harden({ a: 1, list: [1, 'x'], nothing: null })", &[])
    );
    // {"@kref": ..} is the object itself.
    let arg = format!(r#"[{{"@kref": "{target}"}}]"#);
    queue(&node, &caller, "setTarget", &[&arg]).ok();
    assert_eq!(queue(&node, &caller, "callTarget", &[]).ok(), "hello from a vat");

    assert_eq!(node.run(&["kernel", "revoked", &target]).ok(), "false");
    node.run(&["kernel", "revoke", &target]).ok();
    assert_eq!(node.run(&["kernel", "revoked", &target]).ok(), "true");
    node.run(&["kernel", "revoke", &target]).ok();
    assert_eq!(node.run(&["kernel", "revoked", &caller]).ok(), "false");

    let check = |node: &Node| {
        let from_vat = queue(node, &caller, "callTarget", &[]);
        assert!(from_vat.err().contains("revoked"), "{from_vat:?}");
        let from_cli = queue(node, &target, "hello", &[r#"["bob"]"#]);
        assert!(from_cli.err().contains("revoked"), "{from_cli:?}");
        assert_eq!(node.run(&["kernel", "revoked", &target]).ok(), "true");
        assert_eq!(queue(node, &caller, "ping", &[]).ok(), "pong", "the caller still works");
    };
    check(&node);
    node.run(&["restart"]).ok();
    check(&node);
}

#[test]
fn a_method_may_answer_with_another_vats_promise() {
    let node = started();
    let target_config = cluster(&node, "target", &[], &[("target", TARGET)]);
    let (_, target) = launch(&node, &target_config);
    let caller_config = cluster(&node, "caller", &[], &[("caller", CALLER)]);
    let (_, caller) = launch(&node, &caller_config);
    let arg = format!(r#"[{{"@kref": "{target}"}}]"#);
    queue(&node, &caller, "setTarget", &[&arg]).ok();
    let run = run_patiently(&node, &["kernel", "queue", &caller, "forward"]);
    assert_eq!(run.ok(), "hello forwarded");
}

#[test]
fn a_revoked_object_fails_for_a_peer_that_got_it_in_mail() {
    use_binary(env!("CARGO_BIN_EXE_capstan"));
    let (alice, bob) = (Node::new(&[]), Node::new(&[]));
    alice.run(&["start", "--listen", LOOPBACK]).ok();
    bob.run(&["start", "--listen", LOOPBACK]).ok();
    let locator = alice.run(&["invite", "bob"]).ok().trim().to_string();
    bob.run(&["accept", "alice", &locator]).ok();

    let config = cluster(&alice, "target", &[], &[("target", TARGET)]);
    let (_, target) = launch(&alice, &config);
    let source = format!("E(k).getPresence('{target}')");
    alice.run(&["eval", &source, "k:KERNEL", "-n", "obj"]).ok();
    alice.run(&["send", "bob", "an object @obj"]).ok();
    bob.run(&["adopt", "0", "obj", "-n", "t"]).ok();
    assert_eq!(bob.eval("E(t).hello('bob')", &["t:t"]), "hello bob");

    alice.run(&["kernel", "revoke", &target]).ok();
    let run = bob.run(&["eval", "E(t).hello('bob')", "t:t"]);
    assert!(run.err().contains("revoked"), "{run:?}");

    // Still revoked once alice's node has restarted (on a new port).
    alice.run(&["restart", "--listen", LOOPBACK]).ok();
    let run = bob.run(&["eval", "E(t).hello('bob')", "t:t"]);
    assert!(run.err().contains("revoked"), "{run:?}");
}

#[test]
fn terminate_ends_the_vats_worker_processes() {
    let node = started();
    let (id, root) = launch(&node, &example());
    assert_eq!(queue(&node, &root, "incr", &[]).ok(), "1");
    let pids = vat_pids(&node, &id);
    assert_eq!(pids.len(), 2);
    assert!(pids.iter().all(|pid| exists(*pid)), "{pids:?}");

    node.run(&["kernel", "terminate", &id]).ok();
    assert!(
        wait_until(PATIENCE, || pids.iter().all(|pid| !exists(*pid))),
        "vat processes still there: {:?}",
        pids.iter().filter(|pid| exists(**pid)).collect::<Vec<_>>()
    );
    assert!(subclusters(&node).is_empty());
    assert!(vat_pids(&node, &id).is_empty());
    let run = queue(&node, &root, "incr", &[]);
    assert!(!run.err().is_empty(), "{run:?}");

    // Terminating does not disturb a later launch.
    let (_, again) = launch(&node, &example());
    assert_eq!(queue(&node, &again, "incr", &[]).ok(), "1");
}

#[test]
fn a_vat_that_throws_in_build_root_object_fails_the_launch_cleanly() {
    let node = started();
    let node_pid = node.pid().expect("running");
    let before_workers = children(node_pid);
    let broken = "export function buildRootObject() { throw Error('no root for you'); }";
    let config = cluster(&node, "broken", &[], &[("main", TARGET), ("broken", broken)]);

    let run = node.run(&["kernel", "launch", config.to_str().expect("UTF-8")]);
    assert!(run.err().contains("buildRootObject"), "{run:?}");
    assert!(subclusters(&node).is_empty());
    assert_eq!(kernel_status(&node)["vats"], serde_json::json!([]));
    assert!(
        wait_until(PATIENCE, || children(node_pid) == before_workers),
        "worker processes left: before {before_workers:?}, now {:?}",
        children(node_pid)
    );

    let (_, root) = launch(&node, &example());
    assert_eq!(queue(&node, &root, "incr", &[]).ok(), "1");
}

#[test]
fn vat_programs_can_come_from_stored_blobs() {
    let node = started();
    let dir = node.state_dir().join("clusters").join("blobs");
    std::fs::create_dir_all(&dir).expect("cluster directory");
    let code = dir.join("target.js");
    std::fs::write(&code, TARGET).expect("write vat program");
    node.run(&["store", "--path", code.to_str().expect("UTF-8"), "-n", "target-code"])
        .ok();
    // The blob's content hash names it too.
    let hash = blake3::hash(TARGET.as_bytes()).to_hex().to_string();
    for (name, spec) in [("by-name", "target-code"), ("by-hash", hash.as_str())] {
        let config = dir.join(format!("{name}.json"));
        let json = serde_json::json!({ "bootstrap": "main", "vats": { "main": { "bundleSpec": spec } } });
        std::fs::write(&config, json.to_string()).expect("write config");
        let (_, root) = launch(&node, &config);
        assert_eq!(
            queue(&node, &root, "hello", &[r#"["blob"]"#]).ok(),
            "hello blob",
            "{name}"
        );
    }

    let config = dir.join("unknown.json");
    let json = serde_json::json!({ "bootstrap": "main", "vats": { "main": { "bundleSpec": "no-such-blob" } } });
    std::fs::write(&config, json.to_string()).expect("write config");
    let run = node.run(&["kernel", "launch", config.to_str().expect("UTF-8")]);
    assert!(run.err().contains("\"no-such-blob\""), "{run:?}");
    assert_eq!(subclusters(&node).len(), 2);
}

#[test]
fn bad_config_files_and_arguments_are_named_in_clear_errors() {
    use_binary(env!("CARGO_BIN_EXE_capstan"));
    let node = Node::new(&[]);
    let dir = node.state_dir().join("clusters");
    std::fs::create_dir_all(&dir).expect("cluster directory");
    let file = dir.join("cluster.json");
    let shown = file.to_str().expect("UTF-8").to_string();

    let run = node.run(&["kernel", "launch", &shown]);
    assert!(
        run.err().contains(&format!("cannot read the cluster config {shown}")),
        "{run:?}"
    );
    for (text, expected) in [
        ("{ not json", "is not valid JSON"),
        (r#"{"bootstrap": "main"}"#, "has no \"vats\" object"),
        (
            r#"{"vats": {"main": {"sourceSpec": "./main.js"}}}"#,
            "has no \"bootstrap\"",
        ),
        (
            r#"{"bootstrap": "main", "vats": {"main": {"sourceSpec": "./absent.js"}}}"#,
            "vat \"main\" has sourceSpec \"./absent.js\"",
        ),
    ] {
        std::fs::write(&file, text).expect("write config");
        let run = node.run(&["kernel", "launch", &shown]);
        assert!(run.err().contains(&shown), "{run:?}");
        assert!(run.err().contains(expected), "{text}: {run:?}");
    }

    let run = node.run(&["kernel", "queue", "ko1", "hello", "[1,"]);
    assert!(run.err().contains("ARGS-JSON is not valid JSON"), "{run:?}");
    let run = node.run(&["kernel", "queue", "ko1", "hello", r#"{"a": 1}"#]);
    assert!(run.err().contains("ARGS-JSON must be a JSON array"), "{run:?}");
}

#[test]
fn reset_needs_yes_and_then_forgets_every_subcluster() {
    let node = started();
    let (id, root) = launch(&node, &example());
    let pids = vat_pids(&node, &id);

    let refused = node.run(&["kernel", "reset"]);
    assert!(refused.err().contains("--yes"), "{refused:?}");
    assert_eq!(subclusters(&node).len(), 1);
    assert_eq!(queue(&node, &root, "incr", &[]).ok(), "1");

    node.run(&["kernel", "reset", "--yes"]).ok();
    assert!(subclusters(&node).is_empty());
    assert!(
        wait_until(PATIENCE, || pids.iter().all(|pid| !exists(*pid))),
        "vat processes still there"
    );
    let (_, again) = launch(&node, &example());
    assert_eq!(queue(&node, &again, "incr", &[]).ok(), "1", "a fresh counter");
}

#[test]
fn a_killed_vat_is_resuscitated_on_next_use_with_its_baggage() {
    let node = started();
    let (id, root) = launch(&node, &example());
    assert_eq!(queue(&node, &root, "incr", &[]).ok(), "1");
    assert_eq!(queue(&node, &root, "incr", &[]).ok(), "2");
    let before = vat_pids(&node, &id);
    assert_eq!(before.len(), 2);
    for pid in &before {
        // SAFETY: plain kill(2) of a vat process this test's node started.
        unsafe { libc::kill(*pid, libc::SIGKILL) };
    }
    assert!(wait_until(PATIENCE, || before.iter().all(|pid| !exists(*pid))));
    // The next message starts both vats again; the count was in baggage.
    let run = run_patiently(&node, &["kernel", "queue", &root, "incr"]);
    assert_eq!(run.ok(), "3");
    assert_eq!(queue(&node, &root, "bootstrapCount", &[]).ok(), "1");
    let after = vat_pids(&node, &id);
    assert_eq!(after.len(), 2);
    assert!(after.iter().all(|pid| !before.contains(pid)), "{before:?} {after:?}");
}
