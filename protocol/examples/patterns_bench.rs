//! Prints `mustMatch` throughput for a typical record pattern and for a
//! 10 000-element `arrayOf`, each beside a floor measured in the same run:
//! a plain structural walk (`same_as`) over the same specimen.
//!
//! Run: `cargo run --release -p capstan-protocol --example patterns_bench`

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "a benchmark stops at its first failure"
)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use capstan_protocol::patterns::{M, must_match};
use capstan_protocol::{Value, record};

/// Runs `work` repeatedly for about `budget` and returns calls per second.
fn rate(budget: Duration, mut work: impl FnMut()) -> f64 {
    let start = Instant::now();
    let mut calls = 0u64;
    while start.elapsed() < budget {
        for _ in 0..64 {
            work();
        }
        calls += 64;
    }
    calls as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let budget = Duration::from_millis(
        std::env::var("BENCH_MILLIS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1500),
    );

    let specimen = record! {
        "name" => "Ada Lovelace",
        "age" => Value::bigint(36),
        "email" => "ada@example.org",
        "admin" => false,
        "tags" => Value::array(["math", "poetry", "engines"].map(Value::from)),
    };
    let pattern = M::split_record(
        record! {
            "name" => M::string(),
            "age" => M::nat(),
            "email" => M::string(),
            "tags" => M::array_of(M::string(), None),
        },
        Some(record! { "admin" => M::boolean() }),
        None,
    );
    let copy = specimen.clone();
    let matched = rate(budget, || {
        must_match(black_box(&specimen), black_box(&pattern), None).expect("matches");
    });
    let walked = rate(budget, || {
        assert!(black_box(&specimen).same_as(black_box(&copy)));
    });
    println!(
        "record pattern      mustMatch {:>12.0} /s   floor (structural walk) {:>12.0} /s",
        matched, walked
    );

    let numbers = Value::array((0..10_000).map(Value::from));
    let numbers_copy = Value::array((0..10_000).map(Value::from));
    let array_pattern = M::array_of(M::number(), None);
    let matched = rate(budget, || {
        must_match(black_box(&numbers), black_box(&array_pattern), None).expect("matches");
    });
    let walked = rate(budget, || {
        assert!(black_box(&numbers).same_as(black_box(&numbers_copy)));
    });
    println!(
        "arrayOf 10 000      mustMatch {:>12.0} /s   floor (structural walk) {:>12.0} /s   ({:.1} M elements/s)",
        matched,
        walked,
        matched * 10_000.0 / 1e6
    );
}
