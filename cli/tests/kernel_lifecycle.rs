//! The kernel's vat lifecycle and kernel promises, end to end on a real
//! node through `capstan kernel ...`: restarting one vat (a new process,
//! its baggage kept, its memory not), terminating one vat (every later
//! send to its objects fails saying so, also after a node restart),
//! collecting garbage (what no baggage holds is retired), and kernel
//! promises (`kp` krefs from `queue --no-wait` and for the promises in a
//! result, pipelined sends to them, passed back as arguments, counted by
//! `kernel status`, and a clear error for a send to one that was
//! fulfilled with data).

#![allow(clippy::expect_used, clippy::unwrap_used, reason = "tests")]

use std::path::{Path, PathBuf};

use capstan_tests::{Node, Run, use_binary, write_cluster};
use serde_json::Value as Json;

/// The bootstrap vat: keeps the counter's root in baggage, makes things
/// (kept in baggage or not), and counts in memory too.
const MAIN: &str = r#"
export function buildRootObject(vatPowers, parameters, baggage) {
  let calls = 0;
  return makeDefaultExo('Main', {
    bootstrap(vats, services) {
      baggage.init('timer', services.timer);
      baggage.init('counter', vats.counter);
      baggage.init('boots', 1);
    },
    incr() { calls += 1; return E(baggage.get('counter')).incr(); },
    calls() { return calls; },
    boots() { return baggage.get('boots'); },
    keep(key) {
      baggage.init(key, makeDefaultExo('thing', { hello() { return `hello from ${key}`; } }));
      return 'kept';
    },
    drop(key) { baggage.delete(key); return 'dropped'; },
    useKept(key) { return E(baggage.get(key)).hello(); },
    makeThing() { return makeDefaultExo('thing', { hello() { return 'hello from a new thing'; } }); },
    async slowly(ms) { await E(baggage.get('timer')).delay(ms); return 'late'; },
    offer() {
      const wait = (ms) => E(baggage.get('timer')).delay(ms);
      return {
        thing: makeDefaultExo('thing', { hello() { return 'hello from an offered thing'; } }),
        later: wait(1500).then(() => makeDefaultExo('thing', { hello() { return 'hello from a later thing'; } })),
        data: wait(3000).then(() => 42),
        both: [wait(1).then(() => 'first'), wait(1).then(() => 'second')],
      };
    },
    big() { return 'x'.repeat(10000); },
    kindOf(value) { return typeof value?.then === 'function' ? 'promise' : typeof value; },
    keysOf(value) { return Object.keys(value).join(','); },
    async helloVia(promise) { return E(await promise).hello(); },
  });
}
"#;

const COUNTER: &str = r#"
export function buildRootObject(vatPowers, parameters, baggage) {
  if (!baggage.has('count')) baggage.init('count', 0);
  return makeDefaultExo('Counter', {
    incr() { const count = baggage.get('count') + 1; baggage.set('count', count); return count; },
  });
}
"#;

fn started() -> Node {
    use_binary(env!("CARGO_BIN_EXE_capstan"));
    Node::started(&[])
}

fn cluster(node: &Node) -> PathBuf {
    write_cluster(
        &node.state_dir().join("clusters").join("life"),
        &["timer"],
        &[("main", MAIN), ("counter", COUNTER)],
    )
}

/// `kernel launch`: (subcluster id, root kref).
fn launch(node: &Node, config: &Path) -> (String, String) {
    let run = node.run(&["kernel", "launch", config.to_str().expect("UTF-8 path")]);
    let lines: Vec<&str> = run.ok().lines().collect();
    assert_eq!(lines.len(), 2, "{run:?}");
    (lines[0].to_string(), lines[1].to_string())
}

fn queue(node: &Node, kref: &str, method: &str, args: &[&str]) -> Run {
    let mut command = vec!["kernel", "queue", kref, method];
    command.extend_from_slice(args);
    node.run(&command)
}

fn status(node: &Node) -> Json {
    serde_json::from_str(node.run(&["kernel", "status", "--json"]).ok()).expect("status JSON")
}

fn vat(status: &Json, id: &str) -> Option<Json> {
    status["vats"]
        .as_array()
        .expect("vats")
        .iter()
        .find(|vat| vat["id"] == id)
        .cloned()
}

// Vats get ids by name: counter is v1 (root ko1), main is v2 (root ko2).

#[test]
fn a_restarted_vat_runs_again_with_its_baggage_in_a_new_process() {
    let node = started();
    let (_, main) = launch(&node, &cluster(&node));
    assert_eq!(main, "ko2");
    assert_eq!(queue(&node, &main, "incr", &[]).ok(), "1");
    assert_eq!(queue(&node, &main, "incr", &[]).ok(), "2");
    assert_eq!(queue(&node, &main, "calls", &[]).ok(), "2");
    let before = vat(&status(&node), "v2").expect("v2");

    node.run(&["kernel", "restart-vat", "v2"]).ok();
    let after = vat(&status(&node), "v2").expect("v2");
    assert_eq!(after["state"], "running", "{after}");
    assert_ne!(after["pid"], before["pid"], "a new process");
    // Memory is gone, baggage is not, and bootstrap did not run again.
    assert_eq!(queue(&node, &main, "calls", &[]).ok(), "0");
    assert_eq!(queue(&node, &main, "incr", &[]).ok(), "3");
    assert_eq!(queue(&node, &main, "boots", &[]).ok(), "1");

    // The counter vat restarts too, its count kept.
    node.run(&["kernel", "restart-vat", "v1"]).ok();
    assert_eq!(queue(&node, "ko1", "incr", &[]).ok(), "4");

    // A call the old process was still answering fails.
    let slow = node
        .command(&["kernel", "queue", &main, "slowly", "[5000]"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    std::thread::sleep(std::time::Duration::from_millis(700));
    node.run(&["kernel", "restart-vat", "v2"]).ok();
    let slow = slow.wait_with_output().expect("wait");
    assert!(!slow.status.success(), "the pending call should fail: {slow:?}");
    assert!(
        String::from_utf8_lossy(&slow.stderr).contains("vat v2 was restarted"),
        "{slow:?}"
    );

    let run = node.run(&["kernel", "restart-vat", "v9"]);
    assert!(run.err().contains("there is no vat v9"), "{run:?}");
}

#[test]
fn a_terminated_vat_refuses_every_later_send_saying_so() {
    let node = started();
    let (subcluster, main) = launch(&node, &cluster(&node));
    assert_eq!(queue(&node, &main, "incr", &[]).ok(), "1");
    let counter_pid = vat(&status(&node), "v1").expect("v1")["pid"].as_i64().expect("pid") as i32;

    node.run(&["kernel", "terminate-vat", "v1"]).ok();
    assert!(vat(&status(&node), "v1").is_none());
    assert!(vat(&status(&node), "v2").is_some(), "the other vat runs on");
    assert!(
        capstan_tests::wait_until(std::time::Duration::from_secs(20), || !Path::new(&format!(
            "/proc/{counter_pid}"
        ))
        .exists()),
        "the vat's process ended"
    );
    // From the CLI, and from the vat that kept the root in baggage.
    let direct = queue(&node, "ko1", "incr", &[]);
    assert!(direct.err().contains("vat v1 was terminated"), "{direct:?}");
    let through = queue(&node, &main, "incr", &[]);
    assert!(through.err().contains("vat v1 was terminated"), "{through:?}");
    let subclusters = node.run(&["kernel", "subclusters"]);
    assert!(
        subclusters
            .ok()
            .contains(&format!("{subcluster} root ko2 bootstrap main vats main=v2")),
        "{subclusters:?}"
    );

    let again = node.run(&["kernel", "terminate-vat", "v1"]);
    assert!(again.err().contains("vat v1 was terminated"), "{again:?}");

    // Durable: after a node restart the kref still says why it is gone.
    node.run(&["restart"]).ok();
    let direct = queue(&node, "ko1", "incr", &[]);
    assert!(
        direct.err().contains("ko1 no longer exists: vat v1 was terminated"),
        "{direct:?}"
    );
    let through = queue(&node, &main, "incr", &[]);
    assert!(through.err().contains("vat v1 was terminated"), "{through:?}");
    assert_eq!(queue(&node, &main, "boots", &[]).ok(), "1");

    // Terminating the last vat removes the subcluster.
    node.run(&["kernel", "terminate-vat", "v2"]).ok();
    assert_eq!(node.run(&["kernel", "subclusters"]).ok().trim(), "");
}

#[test]
fn collecting_garbage_retires_what_no_baggage_holds() {
    let node = started();
    let (_, main) = launch(&node, &cluster(&node));
    // Each thing kept in baggage gets the next kref (the timer got ko3): ko4, ko5.
    assert_eq!(queue(&node, &main, "keep", &["[\"a\"]"]).ok(), "kept");
    assert_eq!(queue(&node, &main, "keep", &["[\"b\"]"]).ok(), "kept");
    assert_eq!(queue(&node, "ko4", "hello", &[]).ok(), "hello from a");
    assert_eq!(queue(&node, &main, "drop", &["[\"a\"]"]).ok(), "dropped");

    let run = node.run(&["kernel", "collect-garbage"]);
    assert!(run.ok().contains("retired 1 kref(s): ko4"), "{run:?}");
    assert!(run.ok().contains("asked 2 vat(s)"), "{run:?}");
    let gone = queue(&node, "ko4", "hello", &[]);
    assert!(
        gone.err().contains("ko4 no longer exists: it was collected"),
        "{gone:?}"
    );
    // What baggage holds stays, and so do the roots and services.
    assert_eq!(queue(&node, "ko5", "hello", &[]).ok(), "hello from b");
    assert_eq!(queue(&node, &main, "slowly", &["[1]"]).ok(), "late");
    assert_eq!(queue(&node, &main, "useKept", &["[\"b\"]"]).ok(), "hello from b");
    assert_eq!(queue(&node, &main, "incr", &[]).ok(), "1");

    let again: Json = serde_json::from_str(node.run(&["kernel", "collect-garbage", "--json"]).ok()).expect("JSON");
    assert_eq!(again["retired"], serde_json::json!([]), "{again}");
}

#[test]
fn kernel_promises_get_kp_krefs_take_pipelined_sends_and_are_counted() {
    let node = started();
    let (_, main) = launch(&node, &cluster(&node));
    assert_eq!(status(&node)["kernelPromises"]["count"], 0.0);

    let promise = node.run(&["kernel", "queue", &main, "makeThing", "--no-wait"]);
    assert_eq!(promise.ok().trim(), "kp1", "{promise:?}");
    // A send to the promise reaches what it resolves to.
    assert_eq!(queue(&node, "kp1", "hello", &[]).ok(), "hello from a new thing");

    // One still pending: a send to it waits for it.
    let slow = node.run(&["kernel", "queue", &main, "slowly", "[3000]", "--no-wait"]);
    assert_eq!(slow.ok().trim(), "kp2");
    let promises = status(&node)["kernelPromises"].clone();
    assert_eq!(promises["count"], 2.0, "{promises}");
    assert_eq!(promises["pending"], 1.0, "{promises}");
    assert_eq!(promises["fulfilled"], 1.0, "{promises}");
    let text = node.run(&["kernel", "status"]);
    assert!(
        text.ok()
            .contains("kernel promises 2 (1 pending, 1 fulfilled, 0 rejected)"),
        "{text:?}"
    );

    // A settled promise is retired by a collection; a pending one is not.
    let run = node.run(&["kernel", "collect-garbage"]);
    assert!(run.ok().contains("retired 1 kref(s): kp1"), "{run:?}");
    let gone = queue(&node, "kp1", "hello", &[]);
    assert!(gone.err().contains("kp1 no longer exists"), "{gone:?}");
    assert_eq!(status(&node)["kernelPromises"]["count"], 1.0);

    // Promises do not survive a restart, and say so.
    node.run(&["restart"]).ok();
    let lost = queue(&node, "kp2", "hello", &[]);
    assert!(
        lost.err().contains("kp2 was a kernel promise of an earlier run"),
        "{lost:?}"
    );
    let missing = queue(&node, "kp99", "hello", &[]);
    assert!(missing.err().contains("there is no kernel object kp99"), "{missing:?}");
}

#[test]
fn promises_in_results_get_kp_krefs_that_take_sends_and_pass_as_arguments() {
    let node = started();
    let (_, main) = launch(&node, &cluster(&node));
    // Objects and promises in a result are shown by their krefs (the
    // record's keys in order: both, data, later, thing).
    let offered = queue(&node, &main, "offer", &[]);
    assert_eq!(
        offered.ok(),
        "{ both: [{ \"@kref\": \"kp1\" }, { \"@kref\": \"kp2\" }], data: { \"@kref\": \"kp3\" }, \
         later: { \"@kref\": \"kp4\" }, thing: { \"@kref\": \"ko4\" } }",
        "{offered:?}"
    );
    let promises = status(&node)["kernelPromises"].clone();
    assert_eq!(promises["count"], 4.0, "{promises}");
    assert!(promises["pending"].as_f64().unwrap() >= 2.0, "{promises}");

    // A send to a pending promise is pipelined to what it resolves to.
    assert_eq!(queue(&node, "kp4", "hello", &[]).ok(), "hello from a later thing");
    assert_eq!(queue(&node, "ko4", "hello", &[]).ok(), "hello from an offered thing");
    // One fulfilled with data says so, whether it was pending when sent
    // to or settled already.
    for _ in 0..2 {
        let refused = queue(&node, "kp3", "hello", &[]);
        assert!(
            refused
                .err()
                .contains("kp3 resolved to a number (42), not to an object; only objects accept sends"),
            "{refused:?}"
        );
    }
    let big = node.run(&["kernel", "queue", &main, "big", "--no-wait"]);
    assert_eq!(big.ok().trim(), "kp5");
    let refused = queue(&node, "kp5", "length", &[]);
    assert!(
        refused
            .err()
            .contains("kp5 resolved to a string of 10000 characters, not to an object"),
        "{refused:?}"
    );
    assert!(!refused.err().contains("xxxxxxxx"), "{refused:?}");
    // A kp kref in the arguments passes the promise itself (a settled
    // one passes as what it settled to, as any settled promise does).
    let pending = node.run(&["kernel", "queue", &main, "slowly", "[60000]", "--no-wait"]);
    assert_eq!(pending.ok().trim(), "kp6");
    assert_eq!(
        queue(&node, &main, "kindOf", &[r#"[{"@kref": "kp6"}]"#]).ok(),
        "promise"
    );
    assert_eq!(
        queue(&node, &main, "helloVia", &[r#"[{"@kref": "kp4"}]"#]).ok(),
        "hello from a later thing"
    );
    assert_eq!(queue(&node, &main, "kindOf", &[r#"[{"@kref": "ko4"}]"#]).ok(), "object");
    // --no-wait takes krefs in its arguments too.
    let via = node.run(&[
        "kernel",
        "queue",
        &main,
        "helloVia",
        r#"[{"@kref": "kp4"}]"#,
        "--no-wait",
    ]);
    assert_eq!(via.ok().trim(), "kp7");
    let refused = queue(&node, "kp7", "hello", &[]);
    assert!(refused.err().contains("kp7 resolved to a string"), "{refused:?}");
    let counted = status(&node)["kernelPromises"].clone();
    assert_eq!(counted["count"], 7.0, "{counted}");

    // Hostile krefs in the arguments.
    for (args, expected) in [
        (r#"[{"@kref": "zz"}]"#, "\"zz\" is not a kref"),
        (r#"[{"@kref": "kp"}]"#, "is not a kref"),
        (r#"[{"@kref": "kp-1"}]"#, "is not a kref"),
        (r#"[{"@kref": "kp99999999999999999999999"}]"#, "is not a kref"),
        (r#"[{"@kref": 5}]"#, "must name a kref as a string"),
        (r#"[{"@kref": null}]"#, "must name a kref as a string"),
        (r#"[{"@kref": "kp999"}]"#, "there is no kernel object kp999"),
        (r#"[[{"a": {"@kref": "ko999"}}]]"#, "there is no kernel object ko999"),
    ] {
        let run = queue(&node, &main, "kindOf", &[args]);
        assert!(run.err().contains(expected), "{args}: {run:?}");
    }
    // A record with more than the one key is data.
    assert_eq!(
        queue(&node, &main, "keysOf", &[r#"[{"@kref": "kp4", "x": 1}]"#]).ok(),
        "@kref,x"
    );
    // The kref form is asked for with a boolean option, nothing else.
    let odd = node.run(&[
        "eval",
        "E(k).queueMessage('ko2', 'calls', [], { krefs: 'yes' })",
        "k:KERNEL",
    ]);
    assert!(!odd.err().is_empty(), "{odd:?}");

    // Collected, or from an earlier run: refused with the reason.
    let run = node.run(&["kernel", "collect-garbage"]);
    assert!(run.ok().contains("kp3"), "{run:?}");
    let gone = queue(&node, &main, "kindOf", &[r#"[{"@kref": "kp3"}]"#]);
    assert!(
        gone.err().contains("kp3 no longer exists: it was collected"),
        "{gone:?}"
    );
    node.run(&["restart"]).ok();
    let earlier = queue(&node, &main, "kindOf", &[r#"[{"@kref": "kp6"}]"#]);
    assert!(
        earlier.err().contains("kp6 was a kernel promise of an earlier run"),
        "{earlier:?}"
    );
    let sent = queue(&node, "kp6", "hello", &[]);
    assert!(
        sent.err().contains("kp6 was a kernel promise of an earlier run"),
        "{sent:?}"
    );
}
