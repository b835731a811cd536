//! Soak figure (b) of the formula collector: makes 100 000 values (half
//! named, half not) on a fresh node, then runs `capstan gc`, and prints the
//! formula count, live values and store file size at each step beside the
//! fresh node's baseline, with how long the making and the collection took.
//! The file does not shrink: redb keeps the pages a commit frees for later
//! writes (and the sweep's one large commit copies the pages it changes).
//!
//! The values are made in batches inside evaluations: one `capstan eval`
//! per batch calls the host's `evaluate` for each value, concurrently, so
//! the store groups their commits.
//!
//! Run: `cargo run --release -p capstan-tests --example gc_soak` (set
//! CAPSTAN_BIN to a release `capstan` for release figures; GC_SOAK_VALUES
//! for another count).

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "a benchmark program stops at the first failure"
)]

use std::time::{Duration, Instant};

use capstan_tests::{Node, capstan_binary};

const BATCH: usize = 1000;

fn store_bytes(node: &Node) -> u64 {
    std::fs::metadata(node.state_dir().join(capstan_store::STORE_FILE_NAME))
        .map(|meta| meta.len())
        .unwrap_or(0)
}

fn line(label: &str, node: &Node) {
    let status = node.status();
    println!(
        "{label:<28} formulas {:>7}   live values {:>7}   names {:>6}   store file {:>8.1} MiB",
        status["formulas"].as_u64().unwrap_or(0),
        status["incarnations"].as_u64().unwrap_or(0),
        status["names"].as_u64().unwrap_or(0),
        store_bytes(node) as f64 / (1024.0 * 1024.0)
    );
}

fn main() {
    let values: usize = std::env::var("GC_SOAK_VALUES")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(100_000);
    println!("capstan binary: {}", capstan_binary().display());
    let node = Node::new(&[]);
    // The default grace (10 s) would only delay the collection; the
    // automatic runs would never start here (nothing is removed).
    std::fs::write(node.state_dir().join("config.toml"), "[gc]\ngrace_seconds = 0\n").unwrap();
    node.run(&["start"]).ok();
    line("fresh node (baseline)", &node);

    let begin = Instant::now();
    let mut made = 0;
    while made < values {
        let count = BATCH.min(values - made);
        // Even numbers are named `v{n}`, odd ones are not.
        let source = format!(
            "Promise.all(Array.from({{ length: {count} }}, (_, i) => {{ const n = {made} + i; \
             return E(host).evaluate(undefined, String(n), [], [], n % 2 === 0 ? `v${{n}}` : undefined); }})).then(all => all.length)"
        );
        let answer = node.run(&["eval", &source, "host:AGENT"]);
        assert_eq!(answer.ok(), count.to_string(), "a batch failed");
        made += count;
    }
    let making = begin.elapsed();
    println!(
        "made {values} values in {:.1} s ({:.0} values/s), half of them named",
        making.as_secs_f64(),
        values as f64 / making.as_secs_f64()
    );
    line("after making", &node);

    let begin = Instant::now();
    let collected = node.run_patiently(&["gc"], Duration::from_secs(600));
    let collecting = begin.elapsed();
    println!("capstan gc took {:.2} s: {}", collecting.as_secs_f64(), collected.ok());
    line("after capstan gc", &node);
    let again = node.run(&["gc"]);
    println!("a second capstan gc: {}", again.ok());

    node.run(&["stop"]).ok();
    // `stop` can return a moment before the process lets go of the
    // store's lock; start again once it has.
    let restarted = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        node.run(&["start"]).status == 0
    });
    assert!(restarted, "the node did not start again");
    line("after a restart", &node);
}
