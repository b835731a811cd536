//! The product path of issue 19: JavaScript in a worker on one node
//! calling an exo in a worker on another node (worker pipe, libp2p, worker
//! pipe), beside its honest limit measured in the same run: a bare
//! 64-byte frame relayed through four processes and three links of the
//! same kinds (`capstan_tests::bare::BareRelay`).
//!
//! Figures: an awaited call's time (the difference between evaluating a
//! loop of N awaited calls and the same loop with none, over N), and a
//! burst of N calls all in flight at once (calls per second).
//!
//! Beside them, where an awaited call's time goes: the CPU time each of
//! the four processes spends per call, for the bare relay and for the
//! product path (two workers, two daemons).
//!
//! Run: `cargo build --release -p capstan && CAPSTAN_BIN=target/release/capstan
//! cargo run --release -p capstan-tests --example product_bench`

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "a benchmark stops at its first failure"
)]

use std::time::{Duration, Instant};

use capstan_tests::bare::BareRelay;
use capstan_tests::bench::{Better, CpuMeter, Figure, children_of, cpu_line, median, micros, per_second};
use capstan_tests::{Node, capstan_binary, introduce};

/// Awaited calls timed in one evaluation.
const AWAITED: usize = 2_000;
/// Calls of a burst.
const BURST: usize = 20_000;
/// Evaluations timed of each kind.
const ROUNDS: usize = 3;

const TARGET: &str =
    "makeExo('Target', M.interface('Target', { ping: M.call().returns(M.undefined()) }), { ping() {} })";

fn awaited_loop(count: usize) -> String {
    format!("(async () => {{ for (let i = 0; i < {count}; i += 1) {{ await E(c).ping(); }} return {count}; }})()")
}

fn burst(count: usize) -> String {
    format!("Promise.all(Array.from({{ length: {count} }}, () => E(c).ping())).then(() => {count})")
}

/// The median time of evaluating `source` on `node` with `c` endowed.
fn time_eval(node: &Node, source: &str, expected: usize) -> Duration {
    let mut times = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let began = Instant::now();
        assert_eq!(node.eval(source, &["c:c"]), expected.to_string());
        times.push(began.elapsed());
    }
    median(times)
}

fn main() {
    capstan_tests::bare::serve_if_asked();
    println!("capstan binary: {}", capstan_binary().display());

    let mut relay = BareRelay::start().expect("the bare relay");
    let relay_round_trip = median(relay.round_trip(AWAITED).expect("relayed round trips"));
    let mut relay_processes = vec![("this program".to_string(), std::process::id())];
    relay_processes.extend(relay.processes());
    let meter = CpuMeter::start(relay_processes);
    relay.round_trip(AWAITED).expect("relayed round trips");
    // `round_trip` runs as many rounds to warm up as it times.
    let relay_cpu = meter.per(2 * AWAITED);
    relay.burst(BURST).expect("a relayed burst");
    let relay_burst = relay.burst(BURST).expect("a relayed burst");
    drop(relay);

    let alice = Node::started_on_loopback("");
    let bob = Node::started_on_loopback("");
    introduce(&alice, "bob", &bob, "alice");
    alice.run(&["eval", TARGET, "-n", "target"]).ok();
    alice.run(&["send", "bob", "a target @target"]).ok();
    bob.run(&["adopt", "0", "target", "-n", "c"]).ok();
    // Warm both workers and the session.
    time_eval(&bob, &awaited_loop(100), 100);

    let processes = product_processes(&alice, &bob);
    let meter = CpuMeter::start(processes.clone());
    let empty = time_eval(&bob, &awaited_loop(0), 0);
    let empty_cpu = meter.per(ROUNDS);
    let meter = CpuMeter::start(processes);
    let awaited = time_eval(&bob, &awaited_loop(AWAITED), AWAITED);
    let loop_cpu = meter.per(ROUNDS * AWAITED);
    let per_call = awaited.saturating_sub(empty) / u32::try_from(AWAITED).unwrap();
    let product_cpu = cpu_per_call(loop_cpu, empty_cpu);
    println!("CPU time per awaited call, by process (µs):");
    println!("  bare relay:   {}", cpu_line(&relay_cpu));
    println!("  product path: {}", cpu_line(&product_cpu));
    Figure::new(
        "2. product path: awaited call, worker to worker",
        micros(per_call),
        "µs",
        Better::Lower,
    )
    .limit(micros(relay_round_trip))
    .target("≤ 1.3× bare relay (pipe, libp2p, pipe)")
    .report();

    let burst_time = time_eval(&bob, &burst(BURST), BURST).saturating_sub(empty);
    Figure::new(
        "2. product path: burst of calls, worker to worker",
        per_second(BURST, burst_time),
        "calls/s",
        Better::Higher,
    )
    .limit(per_second(BURST, relay_burst))
    .target("≥ 100 000/s")
    .report();
}

/// The processes of the product path, named by their part in a call from
/// bob's worker to alice's.
fn product_processes(alice: &Node, bob: &Node) -> Vec<(String, u32)> {
    let pid = |node: &Node| node.pid().and_then(|pid| u32::try_from(pid).ok());
    let (Some(alice_pid), Some(bob_pid)) = (pid(alice), pid(bob)) else {
        return Vec::new();
    };
    let mut processes = Vec::new();
    for worker in children_of(bob_pid) {
        processes.push(("calling worker".to_string(), worker));
    }
    processes.push(("its daemon".to_string(), bob_pid));
    processes.push(("callee's daemon".to_string(), alice_pid));
    for worker in children_of(alice_pid) {
        processes.push(("callee worker".to_string(), worker));
    }
    processes
}

/// Each process's CPU time per awaited call: a loop's (per call) less an
/// empty loop's (the evaluation's own cost, per evaluation) spread over
/// the loop's calls.
fn cpu_per_call(
    loop_cpu: Vec<(String, Option<Duration>)>,
    empty_cpu: Vec<(String, Option<Duration>)>,
) -> Vec<(String, Option<Duration>)> {
    let calls = u32::try_from(AWAITED).unwrap();
    loop_cpu
        .into_iter()
        .zip(empty_cpu)
        .map(|((name, full), (_, empty))| {
            let per_call = full.zip(empty).map(|(full, empty)| full.saturating_sub(empty / calls));
            (name, per_call)
        })
        .collect()
}
