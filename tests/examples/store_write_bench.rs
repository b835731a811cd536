//! Acknowledged store writes beside their honest limit, a bare append and
//! fdatasync of a small record on the same disk, measured in the same run
//! (`capstan_tests::bare::append_and_fdatasync`): pet-name writes one at a
//! time (each acknowledged only once durable), from many concurrent
//! clients (the writer groups them into shared commits), and batched in
//! one transaction.
//!
//! Run: `cargo run --release -p capstan-tests --example store_write_bench`.
//! `BENCH_SINGLE_WRITES` [2000] sets the count, `BENCH_DIR` where the
//! stores go (a temporary directory under /tmp by default).

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "a benchmark stops at its first failure"
)]

use std::time::{Duration, Instant};

use capstan_store::{FormulaId, NodeId, PetName, Store};
use capstan_tests::bare::append_and_fdatasync;
use capstan_tests::bench::{Better, Figure, per_second};

/// Concurrent clients of the grouped figure.
const CLIENTS: u64 = 64;

fn id(index: u64) -> FormulaId {
    let mut number = [0u8; 32];
    number[..8].copy_from_slice(&index.to_be_bytes());
    FormulaId::new(number, NodeId::from_bytes([0x44; 32]))
}

fn name(index: u64) -> PetName {
    PetName::new(format!("name-{index}")).expect("a valid pet name")
}

fn main() {
    let count: u64 = std::env::var("BENCH_SINGLE_WRITES")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(2000);
    let temp = match std::env::var("BENCH_DIR") {
        Ok(dir) => tempfile::TempDir::new_in(dir),
        Err(_) => tempfile::TempDir::new(),
    }
    .unwrap();
    println!("store writes (state under {})", temp.path().display());

    let bare: Duration = append_and_fdatasync(&temp.path().join("bare"), count as usize)
        .unwrap()
        .iter()
        .sum();
    let bare_rate = per_second(count as usize, bare);

    let store = Store::open(temp.path().join("writes")).unwrap();
    let pet_store = id(u64::MAX);
    let started = Instant::now();
    for index in 0..count {
        store.write_name(pet_store, name(index), id(index)).wait().unwrap();
    }
    let single = started.elapsed();
    Figure::new(
        "6. acknowledged single writes, one at a time",
        per_second(count as usize, single),
        "writes/s",
        Better::Higher,
    )
    .limit(bare_rate)
    .target("≥ 0.80× bare append + fdatasync")
    .report();

    // Each client writes as many names as the single figure, so the
    // grouped run lasts long enough to measure.
    let per_client = (count * 4).div_ceil(CLIENTS);
    let commits_before = store.read().unwrap().commit_seq().unwrap();
    let started = Instant::now();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let store = store.clone();
            std::thread::spawn(move || {
                for index in 0..per_client {
                    let number = 1_000_000 + client * per_client + index;
                    store.write_name(pet_store, name(number), id(number)).wait().unwrap();
                }
            })
        })
        .collect();
    for client in clients {
        client.join().unwrap();
    }
    let grouped = started.elapsed();
    Figure::new(
        "6. acknowledged writes from 64 concurrent clients",
        per_second((per_client * CLIENTS) as usize, grouped),
        "writes/s",
        Better::Higher,
    )
    .limit(bare_rate)
    .target("≥ 50 000/s (grouped commits)")
    .report();
    let commits = store.read().unwrap().commit_seq().unwrap() - commits_before;
    println!(
        "  {} writes in {commits} commits: {:.1} writes per commit",
        per_client * CLIENTS,
        (per_client * CLIENTS) as f64 / commits.max(1) as f64
    );

    let batch = 1000;
    let batches = (count * 10).div_ceil(batch);
    let started = Instant::now();
    for batch_index in 0..batches {
        store
            .transact(move |tx| {
                for index in 0..batch {
                    let number = 10_000_000 + batch_index * batch + index;
                    tx.write_name(pet_store, &name(number), id(number))?;
                }
                Ok(())
            })
            .wait()
            .unwrap();
    }
    let elapsed = started.elapsed();
    println!(
        "pet-name writes batched {batch} per transaction: {} in {elapsed:.2?} = {:.0}/s",
        batches * batch,
        per_second((batches * batch) as usize, elapsed)
    );
}
