//! Why the write-ahead log writes zeros ahead of its records: the cost of a
//! small record and an fdatasync when the write grows the file (the file
//! size must be journaled too) beside one that overwrites zeros written and
//! synced before (only the data block is flushed), on the same disk.
//!
//! Run: `cargo run --release -p capstan-store --example log_fdatasync`.
//! `BENCH_RECORDS` [3000] sets the count, `BENCH_DIR` where the files go
//! (a temporary directory under /tmp by default).

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "a benchmark stops at its first failure"
)]

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::time::Instant;

/// About the size of one logged pet-name write.
const RECORD: [u8; 296] = [0x5a; 296];

fn run(file: &File, count: u64) -> f64 {
    let started = Instant::now();
    for index in 0..count {
        file.write_all_at(&RECORD, index * RECORD.len() as u64).unwrap();
        file.sync_data().unwrap();
    }
    count as f64 / started.elapsed().as_secs_f64()
}

fn main() {
    let count: u64 = std::env::var("BENCH_RECORDS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(3000);
    let temp = match std::env::var("BENCH_DIR") {
        Ok(dir) => tempfile::TempDir::new_in(dir),
        Err(_) => tempfile::TempDir::new(),
    }
    .unwrap();
    println!("log appends with fdatasync (files under {})", temp.path().display());
    for round in 0..2 {
        let growing = File::create(temp.path().join(format!("growing-{round}"))).unwrap();
        let growing_rate = run(&growing, count);

        let zeroed = File::create(temp.path().join(format!("zeroed-{round}"))).unwrap();
        zeroed
            .write_all_at(&vec![0u8; (count * RECORD.len() as u64) as usize + 4096], 0)
            .unwrap();
        zeroed.sync_all().unwrap();
        let zeroed_rate = run(&zeroed, count);
        println!(
            "  round {round}: {count} records of {} bytes: growing the file {growing_rate:.0}/s, \
             over zeros written ahead {zeroed_rate:.0}/s ({:.2}×)",
            RECORD.len(),
            zeroed_rate / growing_rate
        );
    }
}
