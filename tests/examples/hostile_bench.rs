//! Prints an honest peer's `E()` round trip to an exo on a node (median
//! and 99th percentile) and the node's memory (RSS), with no attacker and
//! then beside each of: a peer flooding calls, a peer that never reads,
//! and a stranger flooding the gateway's `deliver` with mail. The honest
//! peer is a Rust client with a network of its own; each attacker runs on
//! a thread of its own. The no-attacker figure comes from the same run.
//!
//! Run: `cargo build --release -p capstan -p capstan-tests --examples --bins`
//! then `CAPSTAN_BIN=target/release/capstan target/release/examples/hostile_bench`.

#![allow(clippy::expect_used, clippy::unwrap_used, reason = "a benchmark fails by panicking")]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use capstan_node::runtime::{E, when};
use capstan_protocol::Value;
use capstan_protocol::captp::Limits;
use capstan_tests::hostile::{Attacker, BIG_ANSWERS, Target, pipelined_after_provide, rss_kib};
use capstan_tests::{Node, capstan_binary};
use tokio::io::AsyncWriteExt;

const ROUND_TRIPS: usize = 300;

const COUNTER: &str = "let n = 0; makeExo('Counter', M.interface('Counter', { incr: M.call().returns(M.number()) }), { incr() { n += 1; return n; } })";

fn formula_id(node: &Node, name: &str) -> String {
    let locator = node.run(&["locate", name]).ok().trim().to_string();
    let (_, query) = locator.split_once("id=").expect("an id in the locator");
    let number = query.split('&').next().expect("the id");
    format!("{number}:{}", Target::of(node).node)
}

/// Round trips of `E(counter).incr()` from an honest client, in order.
fn round_trips(target: &Target, counter_id: &str) -> Vec<Duration> {
    let honest = Attacker::new();
    honest.run(async {
        let (connection, gateway) = honest.session(target, Limits::default()).await;
        let counter = E(&gateway).call("provide", Value::array([Value::from(counter_id)]));
        when(&E(&counter).call("incr", Value::array([])))
            .await
            .expect("a first incr");
        let mut samples = Vec::with_capacity(ROUND_TRIPS);
        for _ in 0..ROUND_TRIPS {
            let begin = Instant::now();
            when(&E(&counter).call("incr", Value::array([]))).await.expect("incr");
            samples.push(begin.elapsed());
        }
        connection.close("done");
        samples
    })
}

fn percentile(samples: &[Duration], fraction: f64) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    let index = ((sorted.len() as f64 - 1.0) * fraction).round() as usize;
    sorted[index]
}

/// Runs `attack` on a thread of its own until the returned flag is set.
fn attack(
    target: Arc<Target>,
    body: impl FnOnce(Attacker, Arc<Target>, Arc<AtomicBool>) + Send + 'static,
) -> (Arc<AtomicBool>, std::thread::JoinHandle<()>) {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    let thread = std::thread::spawn(move || body(Attacker::new(), target, flag));
    (stop, thread)
}

fn call_flood(attacker: Attacker, target: Arc<Target>, stop: Arc<AtomicBool>) {
    attacker.run(async {
        let (_connection, gateway) = attacker.session(&target, Limits::default()).await;
        while !stop.load(Ordering::Relaxed) {
            let calls: Vec<_> = (0..500)
                .map(|_| Attacker::call(&gateway, "provide", vec![Value::from("nothing")]))
                .collect();
            for call in calls {
                let _ = call.await;
            }
        }
    });
}

fn never_reads(attacker: Attacker, target: Arc<Target>, stop: Arc<AtomicBool>, big_id: String) {
    let bytes = pipelined_after_provide(&big_id, "big", 128);
    attacker.run(async {
        let (_reader, mut writer) = attacker.open(&target).await;
        let _ = writer.write_all(&bytes).await;
        let _ = writer.flush().await;
        while !stop.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
}

/// A stranger that saw one invitation delivers mail to the inviter's
/// handle (its id is the invitation's `from=`), as from a handle of its own.
fn mail_flood(attacker: Attacker, target: Arc<Target>, stop: Arc<AtomicBool>, handle: String) {
    let from = format!("{}:{}", "ab".repeat(32), attacker.node_id());
    attacker.run(async {
        let (_connection, gateway) = attacker.session(&target, Limits::default()).await;
        while !stop.load(Ordering::Relaxed) {
            let calls: Vec<_> = (0..100)
                .map(|_| {
                    let strings = Value::array([Value::from("buy now")]);
                    let empty = Value::array([]);
                    Attacker::call(
                        &gateway,
                        "deliver",
                        vec![
                            Value::from(handle.as_str()),
                            Value::from(from.as_str()),
                            strings,
                            empty.clone(),
                            empty,
                        ],
                    )
                })
                .collect();
            for call in calls {
                let _ = call.await;
            }
        }
    });
}

fn report(label: &str, samples: &[Duration], rss: u64, baseline: Option<(&[Duration], u64)>) {
    let ms = |duration: Duration| duration.as_secs_f64() * 1e3;
    print!(
        "{label:<22} round trip median {:>7.3} ms  p99 {:>7.3} ms  node RSS {:>7} KiB",
        ms(percentile(samples, 0.5)),
        ms(percentile(samples, 0.99)),
        rss
    );
    if let Some((base, base_rss)) = baseline {
        print!(
            "   (no attacker: {:.3} / {:.3} ms, {} KiB)",
            ms(percentile(base, 0.5)),
            ms(percentile(base, 0.99)),
            base_rss
        );
    }
    println!();
}

fn main() {
    println!("capstan binary: {}", capstan_binary().display());
    let node = Node::new(&[]);
    node.run(&["start", "--listen", "/ip4/127.0.0.1/tcp/0"]).ok();
    node.run(&["eval", COUNTER, "-n", "counter"]).ok();
    node.run(&["eval", BIG_ANSWERS, "-n", "big"]).ok();
    let pid = node.pid().expect("the node's pid");
    let target = Arc::new(Target::of(&node));
    let (counter, big) = (formula_id(&node, "counter"), formula_id(&node, "big"));
    let invitation = node.run(&["invite", "someone"]).ok().trim().to_string();
    let (_, after) = invitation.split_once("from=").expect("from= in an invitation");
    let handle = format!("{}:{}", after.split('&').next().expect("the handle"), target.node);

    let base = round_trips(&target, &counter);
    let base_rss = rss_kib(pid).unwrap_or(0);
    report("no attacker", &base, base_rss, None);

    type Body = Box<dyn FnOnce(Attacker, Arc<Target>, Arc<AtomicBool>) + Send>;
    let scenarios: Vec<(&str, Body)> = vec![
        ("call flood", Box::new(call_flood)),
        (
            "peer never reads",
            Box::new(move |attacker, target, stop| never_reads(attacker, target, stop, big)),
        ),
        (
            "mail flood",
            Box::new(move |attacker, target, stop| mail_flood(attacker, target, stop, handle)),
        ),
    ];
    for (label, body) in scenarios {
        let (stop, thread) = attack(Arc::clone(&target), body);
        std::thread::sleep(Duration::from_secs(1));
        let samples = round_trips(&target, &counter);
        let rss = rss_kib(pid).unwrap_or(0);
        stop.store(true, Ordering::Relaxed);
        let _ = thread.join();
        report(label, &samples, rss, Some((&base, base_rss)));
    }
    node.run(&["stop"]);
}
