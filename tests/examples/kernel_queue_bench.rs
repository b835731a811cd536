//! Prints the kernel's `queue_message` round trip (a call to a vat's root
//! and its answer, one at a time) from the Rust API (a kernel embedded in
//! this process, its vat a worker process) and from the CLI (`capstan
//! kernel queue`, a process per call, beside `capstan ping`, the CLI's own
//! round trip with the node), each beside ocap-kernel's queue round trip
//! measured separately on the same machine (2.7 ms, issue 18).
//!
//! Run: `cargo build --release -p capstan && CAPSTAN_BIN=target/release/capstan
//! cargo run --release -p capstan-tests --example kernel_queue_bench`

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "a benchmark stops at its first failure"
)]

use std::path::Path;
use std::time::{Duration, Instant};

use capstan_node::kernel::{ClusterConfig, Kernel, KernelOptions};
use capstan_node::runtime::Vat;
use capstan_node::workers::WorkerSpawner;
use capstan_tests::bench::{Better, Figure, median};
use capstan_tests::{Node, capstan_binary, write_cluster};

/// ocap-kernel's `queueMessage` round trip, measured on this machine
/// (a separate run, with ocap-kernel's own tooling).
const OCAP_KERNEL_QUEUE_MS: f64 = 2.7;

/// Round trips timed from the Rust API, after as many to warm up.
const API_CALLS: usize = 2_000;
/// Round trips timed from the CLI (each a process).
const CLI_CALLS: usize = 30;

const TARGET: &str = r#"
export function buildRootObject() {
  return makeDefaultExo('Target', { noop() {}, echo(value) { return value; } });
}
"#;

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

fn line(what: &str, median: Duration, mean: Duration) {
    println!(
        "{what:<44} median {:>7.3} ms  mean {:>7.3} ms   reference: ocap-kernel queue round trip {OCAP_KERNEL_QUEUE_MS} ms",
        ms(median),
        ms(mean)
    );
}

fn from_rust(dir: &Path) {
    let config = write_cluster(&dir.join("cluster"), &[], &[("target", TARGET)]);
    let vat = Vat::new();
    let dir = dir.to_path_buf();
    vat.clone().run_until(async move {
        let store = capstan_store::Store::open(dir.join("state")).unwrap();
        let mut spawner = WorkerSpawner::new(capstan_binary(), &dir);
        spawner.time_budget_ms = 60_000;
        let kernel = Kernel::make(store, vat.clone(), KernelOptions::new(spawner))
            .await
            .unwrap();
        let root = kernel
            .launch_subcluster(ClusterConfig::from_json_file(&config).unwrap())
            .await
            .unwrap()
            .root_kref;
        for (method, args) in [("noop", Vec::new()), ("echo", vec!["a string of some length".into()])] {
            for _ in 0..API_CALLS {
                kernel.queue_message(&root, method, args.clone()).await.unwrap();
            }
            let mut samples = Vec::with_capacity(API_CALLS);
            let begin = Instant::now();
            for _ in 0..API_CALLS {
                let one = Instant::now();
                kernel.queue_message(&root, method, args.clone()).await.unwrap();
                samples.push(one.elapsed());
            }
            let mean = begin.elapsed() / API_CALLS as u32;
            let median = median(samples);
            line(&format!("Rust API queue_message {method}()"), median, mean);
            if method == "noop" {
                Figure::new(
                    "7. kernel: queue_message from the Rust API",
                    ms(median) * 1e3,
                    "µs",
                    Better::Lower,
                )
                .target("≤ 150 µs")
                .report();
            }
        }
        kernel.stop();
    });
}

fn from_cli() {
    let node = Node::started(&[]);
    let config = write_cluster(
        &node.state_dir().join("clusters").join("target"),
        &[],
        &[("target", TARGET)],
    );
    let launched = node.run(&["kernel", "launch", config.to_str().unwrap()]);
    let root = launched.ok().lines().nth(1).unwrap().to_string();
    let time = |args: &[&str]| {
        node.run(args).ok();
        let mut samples = Vec::with_capacity(CLI_CALLS);
        let begin = Instant::now();
        for _ in 0..CLI_CALLS {
            let one = Instant::now();
            node.run(args).ok();
            samples.push(one.elapsed());
        }
        (median(samples), begin.elapsed() / CLI_CALLS as u32)
    };
    let (queue_median, queue_mean) = time(&["kernel", "queue", &root, "noop"]);
    let (ping_median, ping_mean) = time(&["ping"]);
    line("CLI capstan kernel queue (a process each)", queue_median, queue_mean);
    println!(
        "{:<44} median {:>7.3} ms  mean {:>7.3} ms   (the CLI's own cost: process start, connect, one call)",
        "CLI capstan ping (a process each)",
        ms(ping_median),
        ms(ping_mean)
    );
}

/// The argument that leaves out the CLI figures (the runner of every
/// benchmark, `bench`, passes it).
const API_ONLY: &str = "--api-only";

fn main() {
    println!("capstan binary: {}", capstan_binary().display());
    let dir = tempfile::Builder::new()
        .prefix("capstan-queue-bench-")
        .tempdir()
        .unwrap();
    from_rust(dir.path());
    if std::env::args().nth(1).as_deref() != Some(API_ONLY) {
        from_cli();
    }
}
