//! Prints the daemon's figures, each beside a floor measured in the same
//! run: node start to ready (beside starting the bare `capstan` program),
//! `capstan stop` of a node with a warm worker (beside `capstan ping`, the
//! same process and socket round trip), `capstan eval '1+1'` end to end
//! with a warm worker, CLI process included (beside `capstan ping`), worker
//! spawn time, and the idle memory (RSS) of the node and of one worker.
//!
//! Run: `cargo run --release -p capstan-tests --example daemon_bench`
//! (set CAPSTAN_BIN to a release `capstan` for release figures).

use std::time::{Duration, Instant};

use capstan_tests::bench::{Better, Figure, median, millis};
use capstan_tests::hostile::rss_kib;
use capstan_tests::{Node, capstan_binary};

fn main() {
    let rounds = 15;
    println!("capstan binary: {}", capstan_binary().display());

    let mut starts = Vec::new();
    let mut bare = Vec::new();
    let mut stops = Vec::new();
    let mut pings = Vec::new();
    for _ in 0..5 {
        let node = Node::new(&[]);
        let begin = Instant::now();
        node.run(&["start"]).ok();
        starts.push(begin.elapsed());
        let begin = Instant::now();
        let _ = std::process::Command::new(capstan_binary()).arg("--version").output();
        bare.push(begin.elapsed());
        node.eval("1+1", &[]);
        let begin = Instant::now();
        node.run(&["ping"]).ok();
        pings.push(begin.elapsed());
        let begin = Instant::now();
        node.run(&["stop"]).ok();
        stops.push(begin.elapsed());
    }
    Figure::new("4. node start to ready", millis(median(starts)), "ms", Better::Lower)
        .limit(millis(median(bare)))
        .target("≤ 25 ms (limit: `capstan --version`)")
        .report();
    Figure::new(
        "4. capstan stop, with a worker",
        millis(median(stops)),
        "ms",
        Better::Lower,
    )
    .limit(millis(median(pings)))
    .target("≤ 100 ms (limit: `capstan ping`)")
    .report();

    let node = Node::started(&[]);
    let begin = Instant::now();
    node.eval("1+1", &[]);
    let first = begin.elapsed();
    let mut evals = Vec::new();
    let mut pings = Vec::new();
    for _ in 0..rounds {
        let begin = Instant::now();
        assert_eq!(node.eval("1+1", &[]), "2");
        evals.push(begin.elapsed());
        let begin = Instant::now();
        node.run(&["ping"]).ok();
        pings.push(begin.elapsed());
    }
    Figure::new("4. eval '1+1' end to end", millis(median(evals)), "ms", Better::Lower)
        .limit(millis(median(pings)))
        .target("≤ 2× `capstan ping`")
        .report();

    let mut spawns = Vec::new();
    for index in 0..5 {
        let name = format!("w{index}");
        let begin = Instant::now();
        node.run(&["spawn", &name]).ok();
        spawns.push(begin.elapsed());
    }
    println!(
        "worker spawn (CLI included){:>8.1} ms   first eval (spawns MAIN)        {:>6.1} ms",
        millis(median(spawns)),
        millis(first)
    );

    let idle = Node::started(&[]);
    idle.eval("1", &[]);
    std::thread::sleep(Duration::from_millis(300));
    let status = idle.status();
    let pid = |value: &serde_json::Value| value.as_i64().and_then(|pid| i32::try_from(pid).ok()).unwrap_or(0);
    let node_kib = rss_kib(pid(&status["pid"])).unwrap_or(0);
    let worker_kib = rss_kib(pid(&status["workerPids"][0])).unwrap_or(0);
    println!("idle RSS: node {node_kib:>6} KiB");
    let worker_pid = pid(&status["workerPids"][0]);
    println!(
        "idle worker: anonymous {} KiB, file-backed {} KiB (mostly the `capstan` binary's pages, shared with the node), PSS {} KiB",
        status_kib(worker_pid, "RssAnon:"),
        status_kib(worker_pid, "RssFile:"),
        pss_kib(worker_pid)
    );
    Figure::new("5. idle worker RSS", worker_kib as f64 / 1024.0, "MiB", Better::Lower)
        .target("≤ 5 MiB")
        .report();
}

/// A `/proc/PID/status` field in KiB (0 if unreadable).
fn status_kib(pid: i32, field: &str) -> u64 {
    kib_field(&format!("/proc/{pid}/status"), field)
}

/// The proportional set size: shared pages divided among their sharers.
fn pss_kib(pid: i32) -> u64 {
    kib_field(&format!("/proc/{pid}/smaps_rollup"), "Pss:")
}

fn kib_field(path: &str, field: &str) -> u64 {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .find(|line| line.starts_with(field))
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|kib| kib.parse().ok())
        .unwrap_or(0)
}
