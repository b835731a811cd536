//! Prints the daemon's figures, each beside a floor measured in the same
//! run: node start to ready (beside starting the bare `capstan` program),
//! `capstan eval '1+1'` end to end with a warm worker, CLI process
//! included (beside `capstan ping`, the same process and socket round trip
//! without a worker), worker spawn time, and the idle memory (RSS) of the
//! node and of one worker.
//!
//! Run: `cargo run --release -p capstan-tests --example daemon_bench`
//! (set CAPSTAN_BIN to a release `capstan` for release figures).

use std::time::{Duration, Instant};

use capstan_tests::{Node, capstan_binary};

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn rss_kib(pid: i64) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|line| line.starts_with("VmRSS:"))
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|kib| kib.parse().ok())
        .unwrap_or(0)
}

fn main() {
    let rounds = 15;
    println!("capstan binary: {}", capstan_binary().display());

    let mut starts = Vec::new();
    let mut bare = Vec::new();
    for _ in 0..5 {
        let node = Node::new(&[]);
        let begin = Instant::now();
        node.run(&["start"]).ok();
        starts.push(begin.elapsed());
        let begin = Instant::now();
        let _ = std::process::Command::new(capstan_binary()).arg("--version").output();
        bare.push(begin.elapsed());
    }
    println!(
        "node start to ready        {:>8.1} ms   floor (run `capstan --version`) {:>6.1} ms",
        median(starts).as_secs_f64() * 1e3,
        median(bare).as_secs_f64() * 1e3
    );

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
    println!(
        "eval '1+1' end to end      {:>8.1} ms   floor (capstan ping)            {:>6.1} ms",
        median(evals).as_secs_f64() * 1e3,
        median(pings).as_secs_f64() * 1e3
    );

    let mut spawns = Vec::new();
    for index in 0..5 {
        let name = format!("w{index}");
        let begin = Instant::now();
        node.run(&["spawn", &name]).ok();
        spawns.push(begin.elapsed());
    }
    println!(
        "worker spawn (CLI included){:>8.1} ms   first eval (spawns MAIN)        {:>6.1} ms",
        median(spawns).as_secs_f64() * 1e3,
        first.as_secs_f64() * 1e3
    );

    let idle = Node::started(&[]);
    idle.eval("1", &[]);
    std::thread::sleep(Duration::from_millis(300));
    let status = idle.status();
    let node_pid = status["pid"].as_i64().unwrap_or(0);
    let worker_pid = status["workerPids"][0].as_i64().unwrap_or(0);
    println!(
        "idle RSS: node {:>6} KiB, one worker {:>6} KiB",
        rss_kib(node_pid),
        rss_kib(worker_pid)
    );
}
