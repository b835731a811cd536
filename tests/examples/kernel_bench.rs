//! Prints the kernel's figures, each beside a reference measured in the
//! same run: the time to launch a subcluster of 1, 10 and 50 vats (beside
//! as many plain worker spawns); a burst of 100 000 eventual sends from one
//! vat to another of the same subcluster (beside the same burst to an
//! object in the sending vat itself, which crosses no process); and the
//! time to restart a node hosting 50 vats until every vat answers again
//! (beside restarting a node with no vats).
//!
//! Run: `cargo build --release -p capstan && CAPSTAN_BIN=target/release/capstan
//! cargo run --release -p capstan-tests --example kernel_bench`

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "a benchmark stops at its first failure"
)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use capstan_tests::bench::{Better, Figure, median};
use capstan_tests::{Node, capstan_binary};

/// Sends in a burst.
const BURST: u32 = 100_000;
/// The most sends of a burst awaiting their answers at once, for the
/// windowed figure (a worker's session takes up to 262 144).
const WINDOW: u32 = 50_000;

/// The bootstrap vat: it keeps the other vats' roots and the timer in
/// baggage, and times bursts of sends with the timer service.
const HUB: &str = r#"
export function buildRootObject(vatPowers, parameters, baggage) {
  const local = makeDefaultExo('Local', { noop() {} });
  // `count` sends, at most `window` of them awaiting their answers at a time.
  const burst = async (target, count, window) => {
    const timer = baggage.get('timer');
    const start = await E(timer).now();
    for (let sent = 0; sent < count; sent += window) {
      const sends = [];
      for (let i = sent; i < Math.min(count, sent + window); i += 1) {
        sends.push(E(target).noop());
      }
      await Promise.all(sends);
    }
    return (await E(timer).now()) - start;
  };
  return makeDefaultExo('Hub', {
    bootstrap(vats, services) {
      baggage.init('timer', services.timer);
      baggage.init('others', harden(Object.keys(vats).filter((name) => name !== 'hub').map((name) => vats[name])));
    },
    burst(count, window) { return burst(baggage.get('others')[0], count, window); },
    localBurst(count, window) { return burst(local, count, window); },
    async pingAll() {
      const others = baggage.get('others');
      await Promise.all(others.map((other) => E(other).ping()));
      return others.length;
    },
  });
}
"#;

const LEAF: &str = r#"
export function buildRootObject() {
  return makeDefaultExo('Leaf', { noop() {}, ping() { return 'pong'; } });
}
"#;

/// A subcluster config of `vats` vats (the hub and `vats - 1` leaves) in
/// the node's state directory.
fn cluster(node: &Node, vats: usize) -> PathBuf {
    let dir = node.state_dir().join(format!("bench-{vats}"));
    std::fs::create_dir_all(&dir).expect("cluster directory");
    std::fs::write(dir.join("hub.js"), HUB).expect("write hub");
    std::fs::write(dir.join("leaf.js"), LEAF).expect("write leaf");
    let mut configs = serde_json::Map::new();
    configs.insert("hub".into(), serde_json::json!({ "sourceSpec": "./hub.js" }));
    for index in 1..vats {
        configs.insert(format!("leaf{index}"), serde_json::json!({ "sourceSpec": "./leaf.js" }));
    }
    let config = serde_json::json!({ "bootstrap": "hub", "services": ["timer"], "vats": configs });
    let path = dir.join("cluster.json");
    std::fs::write(&path, config.to_string()).expect("write config");
    path
}

/// Launches and returns the root kref and the time `kernel launch` took.
fn launch(node: &Node, config: &Path) -> (String, Duration) {
    let begin = Instant::now();
    let run = node.run(&["kernel", "launch", config.to_str().expect("UTF-8 path")]);
    let took = begin.elapsed();
    let root = run.ok().lines().nth(1).expect("a root kref").to_string();
    (root, took)
}

fn queue(node: &Node, kref: &str, method: &str, args: &str) -> String {
    node.run(&["kernel", "queue", kref, method, args]).ok().to_string()
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

/// A node whose vats may take long over one delivery (a burst).
fn fresh_node() -> Node {
    Node::started(&[("CAPSTAN_WORKER_TIME_BUDGET_MS", "600000")])
}

/// Restarts `node` and waits until `answers` holds; the time it took.
fn restart_until(node: &Node, mut answers: impl FnMut() -> bool) -> Duration {
    let begin = Instant::now();
    node.run(&["restart"]).ok();
    let deadline = begin + Duration::from_secs(300);
    while !answers() {
        assert!(Instant::now() < deadline, "no answer within 300 s of the restart");
        std::thread::sleep(Duration::from_millis(5));
    }
    begin.elapsed()
}

/// The argument that leaves out the launch and restart figures (the
/// runner of every benchmark, `bench`, passes it).
const SENDS_ONLY: &str = "--sends-only";

fn main() {
    println!("capstan binary: {}", capstan_binary().display());
    let sends_only = std::env::args().nth(1).as_deref() == Some(SENDS_ONLY);
    let node = fresh_node();
    if !sends_only {
        launches(&node);
    }
    sends(&node);
    drop(node);
    if !sends_only {
        restarts();
    }
}

fn launches(node: &Node) {
    // Launch times, beside as many plain worker spawns (`capstan spawn`,
    // whose CLI round trip, measured by `capstan ping`, is taken off).
    let mut spawns = Vec::new();
    let mut pings = Vec::new();
    for index in 0..5 {
        let begin = Instant::now();
        node.run(&["spawn", &format!("w{index}")]).ok();
        spawns.push(begin.elapsed());
        let begin = Instant::now();
        node.run(&["ping"]).ok();
        pings.push(begin.elapsed());
    }
    let spawn = median(spawns).saturating_sub(median(pings));
    for vats in [1, 10, 50] {
        let config = cluster(node, vats);
        let (_, took) = launch(node, &config);
        println!(
            "launch a subcluster of {vats:>2} vats  {:>9.1} ms   reference: {vats:>2} worker spawns {:>9.1} ms",
            ms(took),
            ms(spawn) * vats as f64
        );
    }
}

fn sends(node: &Node) {
    // A burst of sends between two vats, beside the same burst inside one.
    let config = cluster(node, 2);
    let (root, _) = launch(node, &config);
    let args = format!("[{BURST}, {WINDOW}]");
    queue(node, &root, "burst", "[1000, 1000]");
    queue(node, &root, "localBurst", "[1000, 1000]");
    let between: f64 = queue(node, &root, "burst", &args).parse().expect("milliseconds");
    let within: f64 = queue(node, &root, "localBurst", &args).parse().expect("milliseconds");
    let rate = |millis: f64| f64::from(BURST) / (millis.max(0.001) / 1e3);
    println!(
        "{BURST} sends vat to vat ({WINDOW} at a time) {between:>9.1} ms ({:>9.0}/s)   limit: within one vat {within:>9.1} ms ({:>9.0}/s)",
        rate(between),
        rate(within)
    );
    Figure::new("7. kernel: vat-to-vat sends", rate(between), "sends/s", Better::Higher)
        .limit(rate(within))
        .target("≥ 100 000/s (limit: within one vat)")
        .report();
    // The whole burst in flight at once, in a subcluster of its own.
    let (root, _) = launch(node, &cluster(node, 2));
    let all_at_once = node.run(&["kernel", "queue", &root, "burst", &format!("[{BURST}, {BURST}]")]);
    let all_at_once_rate = match all_at_once.stdout.trim().parse::<f64>() {
        Ok(millis) if all_at_once.status == 0 => rate(millis),
        _ => {
            println!(
                "{BURST} sends vat to vat (all at once)   refused: {}",
                all_at_once.stderr.trim()
            );
            0.0
        }
    };
    Figure::new(
        "7. kernel: 100 000 sends at once (0: refused)",
        all_at_once_rate,
        "sends/s",
        Better::Higher,
    )
    .target("succeed")
    .report();
}

fn restarts() {
    // Restart with 50 vats until each answers, beside an empty node's restart.
    let empty = fresh_node();
    let empty_restart = restart_until(&empty, || empty.run(&["kernel", "subclusters"]).status == 0);
    drop(empty);
    let node = fresh_node();
    let config = cluster(&node, 50);
    let (root, _) = launch(&node, &config);
    assert_eq!(queue(&node, &root, "pingAll", "[]"), "49");
    let restart = restart_until(&node, || {
        let run = node.run(&["kernel", "queue", &root, "pingAll", "[]"]);
        run.status == 0 && run.stdout.trim() == "49"
    });
    println!(
        "restart with 50 vats until all answer {:>9.1} ms   reference: restart with no vats {:>9.1} ms",
        ms(restart),
        ms(empty_restart)
    );
}
