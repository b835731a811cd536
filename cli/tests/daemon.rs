//! The node daemon, the `capstan` CLI and JavaScript workers, end to end:
//! real node processes on temporary state directories.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use capstan_tests::{Node, kill, process_alive, use_binary, wait_until};

/// Nodes run the `capstan` binary cargo built for this suite.
fn started(env: &[(&str, &str)]) -> Node {
    use_binary(env!("CARGO_BIN_EXE_capstan"));
    Node::started(env)
}

const COUNTER: &str = "let n = 0; makeExo('Counter', M.interface('Counter', { incr: M.call().optional(M.number()).returns(M.number()) }), { incr(k = 1) { n += k; return n; } })";

#[test]
fn eval_prints_results_as_endo_does() {
    let node = started(&[]);
    assert_eq!(node.eval("10 * 10", &[]), "100");
    assert_eq!(node.eval("'hello'", &[]), "hello");
    assert_eq!(node.eval("harden([1, 2])", &[]), "[1, 2]");
    assert_eq!(node.eval(COUNTER, &[]), "Object [Alleged: Counter] {}");
    let thrown = node.run(&["eval", "throw new RangeError('no way')"]);
    assert_eq!(thrown.err(), "capstan: no way");
}

#[test]
fn an_exo_made_in_one_evaluation_is_called_from_another_and_survives_restart() {
    let node = started(&[]);
    node.run(&["eval", COUNTER, "-n", "counter"]).ok();
    assert_eq!(node.eval("E(c).incr()", &["c:counter"]), "1");
    assert_eq!(node.eval("E(c).incr(5)", &["c:counter"]), "6");
    // Results chain across names.
    node.run(&["eval", "E(c).incr(10)", "c:counter", "-n", "sixteen"]).ok();
    assert_eq!(node.eval("x + 1", &["x:sixteen"]), "17");
    // The guard's message is the one docs/spec/values-and-patterns.md gives, exactly.
    let bad = node.run(&["eval", "E(c).incr('foo')", "c:counter"]);
    assert_eq!(
        bad.err(),
        "capstan: In \"incr\" method of (Counter): arg 0?: string \"foo\" - Must be a number"
    );

    node.run(&["restart"]).ok();
    let names = node.run(&["list"]).ok().to_string();
    assert!(names.lines().any(|name| name == "counter"), "{names}");
    // The counter is remade from its formula: its closure state starts fresh.
    assert_eq!(node.eval("E(c).incr()", &["c:counter"]), "1");
    // `sixteen` is remade lazily by its recipe, `E(c).incr(10)`, sent to
    // the remade counter: 1 + 10.
    assert_eq!(node.eval("x", &["x:sixteen"]), "11");
}

#[test]
fn a_promise_passed_from_one_worker_to_an_exo_in_another_settles_there() {
    let node = started(&[]);
    let echo = "makeExo('Echo', M.interface('Echo', { \
          echo: M.call(M.any()).returns(M.any()), \
          wait: M.call(M.any()).returns(M.any()) }), \
        { echo(x) { return x; }, async wait(x) { return harden([await x]); } })";
    node.run(&["eval", echo, "-n", "echo", "-w", "elsewhere"]).ok();
    node.run(&["eval", COUNTER, "-n", "counter"]).ok();
    // The worker's own promise, awaited by the exo in the other worker;
    // then handed straight back.
    assert_eq!(node.eval("E(e).wait(Promise.resolve(1))", &["e:echo"]), "[1]");
    assert_eq!(node.eval("E(e).echo(Promise.resolve(2))", &["e:echo"]), "2");
    // A promise for a call still on its way to a third object.
    assert_eq!(node.eval("E(e).wait(E(c).incr(3))", &["e:echo", "c:counter"]), "[3]");
}

#[test]
fn starting_twice_says_so_and_stop_is_clean() {
    let node = started(&[]);
    let pid = node.pid().expect("running");
    let again = node.run(&["start"]);
    assert!(
        again.err().contains("a node is already running with state directory"),
        "{again:?}"
    );
    assert_eq!(node.pid(), Some(pid), "the running node was not disturbed");
    assert_eq!(node.run(&["ping"]).ok(), "pong");

    // Private files.
    let mode = |path: &std::path::Path| std::fs::metadata(path).expect("exists").permissions().mode() & 0o777;
    assert_eq!(mode(&node.state_dir().join("run")), 0o700);
    assert_eq!(mode(&node.socket()), 0o600);

    node.eval("1", &[]);
    let worker = node.status()["workerPids"][0].as_i64().expect("a worker") as i32;
    node.run(&["stop"]).ok();
    assert!(!process_alive(pid), "the node exited");
    assert!(
        wait_until(Duration::from_secs(5), || !process_alive(worker)),
        "the worker was ended"
    );
    assert!(!node.socket().exists(), "the socket was removed");
    assert!(
        !node.state_dir().join("capstan.wal").exists(),
        "the store's writes ended with a checkpoint, which deletes the log"
    );
    assert_eq!(node.run(&["status"]).status, 3);
}

#[test]
fn a_killed_worker_is_respawned_and_limits_fail_only_that_evaluation() {
    let node = started(&[
        ("CAPSTAN_WORKER_TIME_BUDGET_MS", "500"),
        ("CAPSTAN_WORKER_MEMORY_BYTES", "33554432"),
    ]);
    assert_eq!(node.eval("1 + 1", &[]), "2");
    let worker = node.status()["workerPids"][0].as_i64().expect("a worker") as i32;
    kill(worker, libc::SIGKILL);
    assert!(wait_until(Duration::from_secs(5), || node.status()["workers"] == 0));
    assert_eq!(node.eval("2 + 2", &[]), "4");

    let started = Instant::now();
    let looping = node.run(&["eval", "for(;;){}"]);
    assert_eq!(looping.err(), "capstan: Evaluation exceeded the time budget of 500 ms");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(node.run(&["ping"]).ok(), "pong");

    let bomb = node.run(&["eval", "const a = []; for(;;) a.push(new Array(1e5).fill(1))"]);
    assert_eq!(bomb.err(), "capstan: Evaluation exceeded the memory limit of 32 MiB");
    assert_eq!(node.eval("3 + 3", &[]), "6");

    // A named worker is a separate process.
    node.run(&["spawn", "sandbox"]).ok();
    assert_eq!(node.run(&["eval", "6 * 7", "-w", "sandbox"]).ok(), "42");
    assert_eq!(node.status()["workers"], 2);
}

#[test]
fn directories_move_and_copy_names_between_them() {
    let node = started(&[]);
    node.run(&["store", "-n", "greeting", "--text", "hello"]).ok();
    node.run(&["mkdir", "inbox"]).ok();
    node.run(&["mkdir", "inbox.archive"]).ok();
    node.run(&["move", "greeting", "inbox.archive.old"]).ok();
    assert!(!node.run(&["list"]).ok().lines().any(|name| name == "greeting"));
    assert_eq!(node.run(&["list", "inbox.archive"]).ok(), "old");
    node.run(&["copy", "inbox.archive.old", "again"]).ok();
    assert_eq!(node.run(&["show", "again"]).ok(), "hello");
    assert_eq!(node.run(&["show", "inbox.archive.old"]).ok(), "hello");
    node.run(&["remove", "again"]).ok();
    assert_eq!(
        node.run(&["show", "again"]).err(),
        "capstan: Unknown pet name: \"again\""
    );
    let locator = node.run(&["locate", "inbox.archive.old"]).ok().to_string();
    assert!(
        locator.starts_with("capstan://") && locator.ends_with("&type=marshal"),
        "{locator}"
    );
    // Bad names are refused clearly.
    let bad = node.run(&["store", "-n", "Bad_Name", "--text", "x"]);
    assert!(bad.err().contains("Invalid pet name \"Bad_Name\""), "{bad:?}");
    node.run(&["store", "-n", "conf", "--json", r#"{"a":[1,2],"b":"x"}"#])
        .ok();
    assert_eq!(node.run(&["show", "conf"]).ok(), "{ a: [1, 2], b: \"x\" }");
}

/// A deterministic 200 MB byte stream.
fn big_bytes(len: usize) -> Vec<u8> {
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

#[test]
fn a_200_mb_blob_round_trips_through_store_and_cat() {
    let node = started(&[]);
    let bytes = big_bytes(200 * 1000 * 1000);
    let file = node.state_dir().join("big.bin");
    std::fs::write(&file, &bytes).expect("write the file");
    node.run(&["store", "-n", "big", "--path", file.to_str().expect("utf-8 path")])
        .ok();
    let mut cat = node
        .command(&["cat", "big"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("cat");
    let mut read = Vec::with_capacity(bytes.len());
    cat.stdout
        .take()
        .expect("stdout")
        .read_to_end(&mut read)
        .expect("read cat");
    assert!(cat.wait().expect("cat ends").success());
    assert_eq!(read.len(), bytes.len());
    assert!(read == bytes, "the blob came back changed");
    assert_eq!(node.eval("E(b).size()", &["b:big"]), "200000000");

    let piped = node.run_with_input(&["store", "-n", "small", "--stdin"], b"from stdin");
    piped.ok();
    assert_eq!(node.eval("E(b).text()", &["b:small"]), "from stdin");
}

#[test]
fn a_malformed_frame_ends_only_that_clients_session() {
    let node = started(&[]);
    let mut bad = UnixStream::connect(node.socket()).expect("connect");
    bad.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    // A length prefix claiming far more than the frame cap.
    bad.write_all(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f])
        .expect("write");
    let mut reply = Vec::new();
    let _ = bad.read_to_end(&mut reply);
    // The node answered with an Abort and closed this session...
    assert!(!reply.is_empty(), "the node said why it closed the session");
    // ...and serves everyone else.
    assert_eq!(node.eval("6 * 7", &[]), "42");
    assert_eq!(node.run(&["ping"]).ok(), "pong");
}

#[test]
fn the_state_directory_is_capstans_alone() {
    use_binary(env!("CARGO_BIN_EXE_capstan"));
    let mode = |path: &std::path::Path| std::fs::metadata(path).expect("exists").permissions().mode() & 0o777;
    let scratch = tempfile::tempdir().expect("a scratch directory");

    // A directory of someone else's files: refused, untouched, and not purged.
    let theirs = scratch.path().join("documents");
    std::fs::create_dir(&theirs).expect("mkdir");
    std::fs::set_permissions(&theirs, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::write(theirs.join("thesis.tex"), "years of work").expect("write");
    let capstan = |dir: &std::path::Path, args: &[&str]| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_capstan"));
        command.arg("--state").arg(dir).args(args).env_remove("CAPSTAN_STATE");
        command.output().expect("run capstan")
    };
    let refused = capstan(&theirs, &["start"]);
    assert!(!refused.status.success());
    let text = String::from_utf8_lossy(&refused.stderr);
    assert!(text.contains("is not a Capstan state directory"), "{text}");
    let refused = capstan(&theirs, &["purge", "-f"]);
    assert!(!refused.status.success());
    assert_eq!(mode(&theirs), 0o755);
    let entries: Vec<_> = std::fs::read_dir(&theirs)
        .expect("list")
        .map(|entry| entry.expect("entry").file_name())
        .collect();
    assert_eq!(entries, vec![std::ffi::OsString::from("thesis.tex")]);

    // An empty directory someone made: taken, its mode kept, the node's own
    // files private.
    let given = scratch.path().join("given");
    std::fs::create_dir(&given).expect("mkdir");
    std::fs::set_permissions(&given, std::fs::Permissions::from_mode(0o750)).expect("chmod");
    let started = capstan(&given, &["start"]);
    assert!(started.status.success(), "{started:?}");
    assert_eq!(mode(&given), 0o750);
    assert_eq!(mode(&given.join("capstan.redb")) & 0o077, 0, "the store is private");
    assert_eq!(mode(&given.join("node.log")) & 0o077, 0, "the log is private");

    // Purge stops the node and deletes what Capstan made, keeping the rest.
    std::fs::write(given.join("config.toml"), "listen = []\n").expect("write");
    std::fs::write(given.join("notes.txt"), "mine").expect("write");
    let purged = capstan(&given, &["purge", "-f"]);
    assert!(purged.status.success(), "{purged:?}");
    let mut left: Vec<_> = std::fs::read_dir(&given)
        .expect("list")
        .map(|entry| entry.expect("entry").file_name())
        .collect();
    left.sort();
    assert_eq!(
        left,
        vec![
            std::ffi::OsString::from("config.toml"),
            std::ffi::OsString::from("notes.txt")
        ]
    );
    assert!(String::from_utf8_lossy(&purged.stdout).contains("kept what Capstan did not make: config.toml, notes.txt"));

    // A new directory is made private; purging it all removes it.
    let fresh = scratch.path().join("fresh");
    assert!(capstan(&fresh, &["start"]).status.success());
    assert_eq!(mode(&fresh), 0o700);
    assert!(capstan(&fresh, &["purge", "-f"]).status.success());
    assert!(!fresh.exists());
}

#[test]
fn a_client_whose_reader_went_away_ends_by_sigpipe_not_a_panic() {
    use std::os::unix::process::ExitStatusExt;
    let node = started(&[]);
    let (reader, writer) = std::io::pipe().expect("a pipe");
    // `capstan status | head -0`: nobody reads what it prints.
    drop(reader);
    let output = node
        .command(&["status"])
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .expect("run status");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.signal(),
        Some(libc::SIGPIPE),
        "{:?}: {stderr}",
        output.status
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    // The node is not touched by it.
    assert_eq!(node.run(&["ping"]).ok().trim(), "pong");
}
