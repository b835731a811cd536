//! Store benchmark: prints name lookups per second, the time to open a
//! store of many names, and the time and peak memory to write and read
//! back a large blob. Acknowledged writes, beside a bare append and
//! fdatasync, are in `tests/examples/store_write_bench.rs` (run by the
//! `bench` runner with every other figure).
//!
//! Run: `cargo run --release -p capstan-store --example store_bench`.
//! Sizes (environment variables, defaults in brackets):
//! `BENCH_NAMES` [1000000],
//! `BENCH_LOOKUPS` [1000000], `BENCH_BLOB_MIB` [1024], and `BENCH_DIR` for
//! where the stores go (a temporary directory under /tmp by default).

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "a benchmark stops at its first failure"
)]

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use capstan_store::{FormulaId, NodeId, PetName, Store, StoreOptions};

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

fn status_field(field: &str) -> String {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|line| line.starts_with(field))
        .map(|line| line.trim_start_matches(field).trim().to_owned())
        .unwrap_or_else(|| "unknown".into())
}

/// Resets VmHWM to the current RSS (Linux `clear_refs` 5), so that each
/// phase reports its own peak.
fn reset_peak_memory() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

fn per_second(count: u64, elapsed: Duration) -> String {
    format!("{:.0}/s", count as f64 / elapsed.as_secs_f64())
}

fn node() -> NodeId {
    NodeId::from_bytes([0x44; 32])
}

fn id(index: u64) -> FormulaId {
    let mut number = [0u8; 32];
    number[..8].copy_from_slice(&index.to_be_bytes());
    FormulaId::new(number, node())
}

fn name(index: u64) -> PetName {
    PetName::new(format!("name-{index}")).expect("a valid pet name")
}

/// Pseudo-random bytes, made a buffer at a time.
struct Bytes(u64);

impl Bytes {
    fn fill(&mut self, buffer: &mut [u8]) {
        for chunk in buffer.chunks_mut(8) {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            let word = self.0.to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
    }
}

type Outcome = Result<(), Box<dyn std::error::Error>>;

fn main() -> Outcome {
    let names = env_number("BENCH_NAMES", 1_000_000);
    let lookups = env_number("BENCH_LOOKUPS", 1_000_000);
    let blob_mib = env_number("BENCH_BLOB_MIB", 1024);
    let temp = match std::env::var("BENCH_DIR") {
        Ok(dir) => tempfile::TempDir::new_in(dir)?,
        Err(_) => tempfile::TempDir::new()?,
    };
    println!("capstan-store benchmark (state under {})", temp.path().display());

    // The blob first, while the process is small, so that its peak memory
    // is its own.
    blob(&temp.path().join("blob"), blob_mib)?;
    many_names(&temp.path().join("names"), names, lookups)?;
    Ok(())
}

fn many_names(dir: &std::path::Path, count: u64, lookups: u64) -> Outcome {
    let pet_store = id(u64::MAX);
    let store = Store::open(dir)?;
    let started = Instant::now();
    let batch = 20_000;
    let mut next = 0;
    while next < count {
        let end = (next + batch).min(count);
        store
            .transact(move |tx| {
                for index in next..end {
                    tx.write_name(pet_store, &name(index), id(index))?;
                }
                Ok(())
            })
            .wait()?;
        next = end;
    }
    println!(
        "made a store of {count} names in {:.2?} (file {} MiB)",
        started.elapsed(),
        std::fs::metadata(store.path())?.len() >> 20
    );
    store.close()?;

    for verify_on_open in [true, false] {
        let options = StoreOptions {
            verify_on_open,
            ..StoreOptions::default()
        };
        let mut times = Vec::new();
        for _ in 0..3 {
            let started = Instant::now();
            let store = Store::open_with(dir, &options)?;
            times.push(started.elapsed());
            store.close()?;
        }
        println!(
            "open a store of {count} names, verify_on_open={verify_on_open}: {}",
            times
                .iter()
                .map(|time| format!("{time:.2?}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }

    let store = Store::open(dir)?;
    let mut state = 0x9E37_79B9_7F4A_7C15_u64;
    let mut next_index = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % count.max(1)
    };
    let started = Instant::now();
    for _ in 0..lookups {
        let index = next_index();
        let found = store.read()?.lookup_name(pet_store, &name(index))?;
        if found != Some(id(index)) {
            return Err(format!("lookup of name-{index} failed").into());
        }
    }
    let elapsed = started.elapsed();
    println!(
        "random name lookups, a fresh snapshot each: {lookups} in {elapsed:.2?} = {}",
        per_second(lookups, elapsed)
    );
    let snapshot = store.read()?;
    let started = Instant::now();
    for _ in 0..lookups {
        let index = next_index();
        if snapshot.lookup_name(pet_store, &name(index))? != Some(id(index)) {
            return Err(format!("lookup of name-{index} failed").into());
        }
    }
    let elapsed = started.elapsed();
    println!(
        "random name lookups in one snapshot: {lookups} in {elapsed:.2?} = {}",
        per_second(lookups, elapsed)
    );
    Ok(())
}

/// The limit for blobs: the same bytes written to a plain file (then
/// fsync) and read back, on the same disk.
fn blob_baseline(dir: &std::path::Path, mib: u64) -> Outcome {
    std::fs::create_dir_all(dir)?;
    let path = dir.join("blob-baseline");
    let total = mib * 1024 * 1024;
    let mut source = Bytes(0x2545_F491_4F6C_DD1D);
    let mut buffer = vec![0u8; 64 * 1024];
    let started = Instant::now();
    let mut file = std::fs::File::create(&path)?;
    let mut written = 0u64;
    while written < total {
        let len = (total - written).min(buffer.len() as u64) as usize;
        source.fill(&mut buffer[..len]);
        file.write_all(&buffer[..len])?;
        written += len as u64;
    }
    file.sync_all()?;
    let elapsed = started.elapsed();
    println!(
        "baseline: {mib} MiB to a plain file + fsync: {elapsed:.2?} ({:.0} MiB/s)",
        mib as f64 / elapsed.as_secs_f64()
    );
    let started = Instant::now();
    let mut file = std::fs::File::open(&path)?;
    let mut hasher = blake3::Hasher::new();
    loop {
        let read = file.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
    }
    let elapsed = started.elapsed();
    println!(
        "baseline: read it back and blake3 it: {elapsed:.2?} ({:.0} MiB/s)",
        mib as f64 / elapsed.as_secs_f64()
    );
    std::fs::remove_file(path)?;
    Ok(())
}

fn blob(dir: &std::path::Path, mib: u64) -> Outcome {
    blob_baseline(&dir.with_extension("baseline"), mib)?;
    let store = Store::open(dir)?;
    let total = mib * 1024 * 1024;
    let reset = reset_peak_memory();
    println!(
        "blob of {mib} MiB: RSS before {} (peak reset: {reset})",
        status_field("VmRSS:")
    );
    let mut source = Bytes(0x2545_F491_4F6C_DD1D);
    let mut buffer = vec![0u8; 64 * 1024];
    let started = Instant::now();
    let mut writer = store.blob_writer();
    let mut written = 0u64;
    while written < total {
        let len = (total - written).min(buffer.len() as u64) as usize;
        let piece = &mut buffer[..len];
        source.fill(piece);
        writer.write_blocking(piece)?;
        written += len as u64;
    }
    let hash = writer.finish_blocking()?;
    let elapsed = started.elapsed();
    println!(
        "  store: {elapsed:.2?} ({:.0} MiB/s), peak memory (VmHWM) {}",
        mib as f64 / elapsed.as_secs_f64(),
        status_field("VmHWM:")
    );
    println!(
        "  file size after: {} MiB",
        std::fs::metadata(store.path())?.len() >> 20
    );

    reset_peak_memory();
    let started = Instant::now();
    let mut reader = store
        .read()?
        .open_blob(hash)?
        .ok_or("the blob just stored is missing")?;
    let mut read = 0u64;
    while let Some(chunk) = reader.next_chunk()? {
        read += chunk.len() as u64;
    }
    let elapsed = started.elapsed();
    if read != total {
        return Err(format!("read {read} bytes of {total}").into());
    }
    println!(
        "  read back, verified: {elapsed:.2?} ({:.0} MiB/s), peak memory (VmHWM) {}",
        mib as f64 / elapsed.as_secs_f64(),
        status_field("VmHWM:")
    );
    drop(reader);
    store.close()?;
    let started = Instant::now();
    let store = Store::open(dir)?;
    println!(
        "  open the store holding it (verify_on_open=true): {:.2?}",
        started.elapsed()
    );
    store.close()?;
    let started = Instant::now();
    let store = Store::open_with(
        dir,
        &StoreOptions {
            verify_on_open: false,
            ..StoreOptions::default()
        },
    )?;
    println!(
        "  open the store holding it (verify_on_open=false): {:.2?}",
        started.elapsed()
    );
    store.close()?;
    Ok(())
}
