//! IO channels end to end, in a real node: a subcluster's `io` section
//! (a Unix socket line channel and file channels) reached by its vats
//! through the `io` service; the channels come back after `capstan
//! restart` (and a vat that kept the service in its baggage still reaches
//! them); another subcluster cannot use them; relative channel paths are
//! taken against the config file's folder; odd channel configs fail the
//! launch and leave nothing behind.

#![allow(clippy::expect_used, clippy::unwrap_used, reason = "tests")]

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use capstan_tests::{Node, Run, use_binary, wait_until};
use serde_json::Value as Json;

const PATIENCE: Duration = Duration::from_secs(20);

fn started() -> Node {
    use_binary(env!("CARGO_BIN_EXE_capstan"));
    Node::started(&[])
}

/// Keeps the IO service in its baggage at bootstrap, so it is found again
/// after a restart (bootstrap runs once).
const RELAY: &str = r#"
export function buildRootObject(vatPowers, parameters, baggage) {
  const io = () => baggage.get('io');
  return makeDefaultExo('Relay', {
    bootstrap(vats, services) { baggage.init('io', services.io); },
    names() { return E(io()).names(); },
    async relay() {
      const line = await E(io()).read('repl');
      await E(io()).write('repl', `echo: ${line}`);
      await E(io()).write('log', `relayed ${line}`);
      return line;
    },
    readInbox() { return E(io()).read('inbox'); },
    async attempt(method, ...args) {
      try { return `ok ${await E(io())[method](...args)}`; } catch (error) { return error.message; }
    },
  });
}
"#;

/// A subcluster that declares its own channel and tries another's.
const OTHER: &str = r#"
export function buildRootObject(vatPowers, parameters, baggage) {
  return makeDefaultExo('Other', {
    bootstrap(vats, services) { baggage.init('io', services.io); },
    async attempt(name) {
      try { return `ok ${await E(baggage.get('io')).read(name)}`; } catch (error) { return error.message; }
    },
  });
}
"#;

fn cluster(node: &Node, name: &str, source: &str, io: Json) -> PathBuf {
    let dir = node.state_dir().join("clusters").join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("main.js"), source).unwrap();
    let config = serde_json::json!({
        "bootstrap": "main",
        "io": io,
        "vats": { "main": { "sourceSpec": "./main.js" } },
    });
    let path = dir.join("cluster.json");
    std::fs::write(&path, serde_json::to_string_pretty(&config).unwrap()).unwrap();
    path
}

fn launch(node: &Node, config: &Path) -> String {
    let run = node.run(&["kernel", "launch", config.to_str().unwrap()]);
    let lines: Vec<&str> = run.ok().lines().collect();
    assert_eq!(lines.len(), 2, "{run:?}");
    lines[1].to_string()
}

fn queue(node: &Node, kref: &str, method: &str, args: Json) -> Run {
    node.run(&["kernel", "queue", kref, method, &args.to_string()])
}

/// Connects to the channel's socket, waiting for the node to listen.
fn connect(path: &Path) -> UnixStream {
    let mut stream = None;
    assert!(
        wait_until(PATIENCE, || {
            stream = UnixStream::connect(path).ok();
            stream.is_some()
        }),
        "nothing listens at {}",
        path.display()
    );
    let stream = stream.unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream
}

/// Sends `line` from the peer, has the vat relay it, and reads the echo.
fn relay_through(node: &Node, root: &str, peer: &mut UnixStream, line: &str) {
    writeln!(peer, "{line}").unwrap();
    assert_eq!(queue(node, root, "relay", serde_json::json!([])).ok(), line);
    let mut echo = String::new();
    BufReader::new(peer.try_clone().unwrap()).read_line(&mut echo).unwrap();
    assert_eq!(echo, format!("echo: {line}\n"));
}

#[test]
fn socket_and_file_channels_work_and_come_back_after_a_restart() {
    let node = started();
    let dir = node.state_dir().join("io");
    std::fs::create_dir_all(&dir).unwrap();
    let socket = dir.join("repl.sock");
    let log = dir.join("relay.log");
    let inbox = dir.join("inbox.txt");
    std::fs::write(&inbox, "first\nsecond\n").unwrap();
    let config = cluster(
        &node,
        "relay",
        RELAY,
        serde_json::json!({
            "repl": { "type": "socket", "path": socket },
            "log": { "type": "file", "path": log, "direction": "out" },
            "inbox": { "type": "file", "path": inbox, "direction": "in", "unit": "line" },
        }),
    );
    let root = launch(&node, &config);
    assert_eq!(
        queue(&node, &root, "names", serde_json::json!([])).ok(),
        "[\"inbox\", \"log\", \"repl\"]"
    );

    let mut peer = connect(&socket);
    relay_through(&node, &root, &mut peer, "hello");
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "relayed hello\n");
    assert_eq!(queue(&node, &root, "readInbox", serde_json::json!([])).ok(), "first");
    assert_eq!(queue(&node, &root, "readInbox", serde_json::json!([])).ok(), "second");
    assert_eq!(queue(&node, &root, "readInbox", serde_json::json!([])).ok(), "null");

    // Directions, unknown channels and lines with breaks are refused.
    let attempt = |args: Json| queue(&node, &root, "attempt", args).ok().to_string();
    assert_eq!(
        attempt(serde_json::json!(["read", "log"])),
        "IO channel \"log\": is write-only"
    );
    assert_eq!(
        attempt(serde_json::json!(["write", "inbox", "x"])),
        "IO channel \"inbox\": is read-only"
    );
    assert!(
        attempt(serde_json::json!(["read", "elsewhere"])).starts_with("no IO channel named \"elsewhere\""),
        "an undeclared channel"
    );
    assert!(attempt(serde_json::json!(["write", "repl", "a\nb"])).contains("line break"));

    // The peer hangs up: the vat reads null.
    drop(peer);
    assert_eq!(attempt(serde_json::json!(["read", "repl"])), "ok null");

    node.run(&["restart"]).ok();
    let mut peer = connect(&socket);
    relay_through(&node, &root, &mut peer, "again");
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "relayed hello\nrelayed again\n");

    // Another subcluster's io service knows its own channels only.
    let other_file = dir.join("other.txt");
    std::fs::write(&other_file, "mine\n").unwrap();
    let other = cluster(
        &node,
        "other",
        OTHER,
        serde_json::json!({ "own": { "type": "file", "path": other_file, "direction": "in" } }),
    );
    let other_root = launch(&node, &other);
    assert_eq!(
        queue(&node, &other_root, "attempt", serde_json::json!(["own"])).ok(),
        "ok mine"
    );
    let refused = queue(&node, &other_root, "attempt", serde_json::json!(["repl"]));
    assert!(refused.ok().starts_with("no IO channel named \"repl\""), "{refused:?}");

    // Terminating the subcluster closes its socket.
    let subclusters: Json = serde_json::from_str(node.run(&["kernel", "subclusters", "--json"]).ok()).unwrap();
    let relay_id = subclusters
        .as_array()
        .unwrap()
        .iter()
        .find(|subcluster| {
            subcluster["vats"]
                .as_object()
                .is_some_and(|vats| vats.contains_key("main"))
        })
        .map(|subcluster| subcluster["id"].as_str().unwrap().to_string())
        .unwrap();
    node.run(&["kernel", "terminate", &relay_id]).ok();
    assert!(wait_until(PATIENCE, || !socket.exists()), "the socket file is gone");
}

#[test]
fn odd_channel_configs_fail_the_launch_and_leave_nothing_behind() {
    let node = started();
    let dir = node.state_dir().join("io");
    std::fs::create_dir_all(&dir).unwrap();
    let not_a_socket = dir.join("plain.txt");
    std::fs::write(&not_a_socket, "keep me").unwrap();
    // A live channel, and a socket another program listens on.
    let live = dir.join("live.sock");
    let relay = cluster(
        &node,
        "live",
        RELAY,
        serde_json::json!({
            "repl": { "type": "socket", "path": live },
            "log": { "type": "file", "path": dir.join("live.log"), "direction": "out" },
        }),
    );
    let relay_root = launch(&node, &relay);
    let foreign = dir.join("foreign.sock");
    let _foreign_listener = std::os::unix::net::UnixListener::bind(&foreign).unwrap();
    let before = node.run(&["kernel", "subclusters", "--json"]).ok().to_string();
    let long_socket = format!("/tmp/{}.sock", "x".repeat(120));
    let cases = [
        (serde_json::json!({ "a": { "type": "console" } }), "does not offer"),
        (serde_json::json!({ "a": { "type": "socket" } }), "no \"path\""),
        (
            serde_json::json!({ "a": { "type": "socket", "path": long_socket } }),
            "at most 107",
        ),
        (
            serde_json::json!({ "a": { "type": "file", "path": "/x", "unit": "bytes" } }),
            "\"unit\"",
        ),
        (
            serde_json::json!({ "../a": { "type": "file", "path": "/x" } }),
            "channel name",
        ),
        (
            serde_json::json!([{ "type": "file", "path": "/x" }]),
            "record of IO channels",
        ),
        (
            serde_json::json!({ "a": { "type": "socket", "path": not_a_socket } }),
            "not a socket",
        ),
        (
            serde_json::json!({ "a": { "type": "file", "path": dir.join("missing.txt"), "direction": "in" } }),
            "No such file",
        ),
        (
            serde_json::json!({ "a": { "type": "socket", "path": live } }),
            "another IO channel listens there",
        ),
        (
            serde_json::json!({
                "a": { "type": "socket", "path": dir.join("twice.sock") },
                "b": { "type": "socket", "path": dir.join("twice.sock") },
            }),
            "another IO channel listens there",
        ),
        (
            serde_json::json!({ "a": { "type": "socket", "path": foreign } }),
            "something listens on that socket already",
        ),
    ];
    for (index, (io, expected)) in cases.into_iter().enumerate() {
        let config = cluster(&node, &format!("odd{index}"), RELAY, io.clone());
        let run = node.run(&["kernel", "launch", config.to_str().unwrap()]);
        assert!(run.err().contains(expected), "{io}: {run:?}");
        assert_eq!(node.run(&["kernel", "subclusters", "--json"]).ok(), before, "{io}");
    }
    assert_eq!(std::fs::read_to_string(&not_a_socket).unwrap(), "keep me");
    assert!(
        !dir.join("twice.sock").exists(),
        "a failed launch closes what it opened"
    );
    // The live channel was not taken over.
    let mut peer = connect(&live);
    relay_through(&node, &relay_root, &mut peer, "still mine");
}

#[test]
fn relative_channel_paths_are_taken_against_the_config_files_folder() {
    let node = started();
    let config = cluster(
        &node,
        "relative",
        RELAY,
        serde_json::json!({
            "repl": { "type": "socket", "path": "repl.sock" },
            "log": { "type": "file", "path": "logs/../relay.log", "direction": "out" },
            "inbox": { "type": "file", "path": "./inbox.txt", "direction": "in" },
        }),
    );
    let folder = config.parent().unwrap().to_path_buf();
    std::fs::create_dir_all(folder.join("logs")).unwrap();
    std::fs::write(folder.join("inbox.txt"), "from the folder\n").unwrap();
    // Launched from another working directory, by a relative config path.
    let mut command = node.command(&["kernel", "launch", "relative/cluster.json"]);
    let launched = command.current_dir(folder.parent().unwrap()).output().unwrap();
    let stdout = String::from_utf8_lossy(&launched.stdout).to_string();
    assert!(
        launched.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&launched.stderr)
    );
    let root = stdout.lines().nth(1).expect("a root kref").to_string();

    assert_eq!(
        queue(&node, &root, "readInbox", serde_json::json!([])).ok(),
        "from the folder"
    );
    let mut peer = connect(&folder.join("repl.sock"));
    relay_through(&node, &root, &mut peer, "relative");
    assert_eq!(
        std::fs::read_to_string(folder.join("relay.log")).unwrap(),
        "relayed relative\n"
    );
    // Nothing was made in the node's or the command's working directory.
    assert!(!folder.parent().unwrap().join("repl.sock").exists());
    assert!(!node.state_dir().join("repl.sock").exists());

    // A relative path that leads to a socket path too long is refused by
    // the node, naming the path it was resolved to.
    let deep = cluster(
        &node,
        "deep",
        RELAY,
        serde_json::json!({ "a": { "type": "socket", "path": format!("{}.sock", "d".repeat(100)) } }),
    );
    let run = node.run(&["kernel", "launch", deep.to_str().unwrap()]);
    assert!(run.err().contains("at most 107"), "{run:?}");
    assert!(run.err().contains(deep.parent().unwrap().to_str().unwrap()), "{run:?}");
}
