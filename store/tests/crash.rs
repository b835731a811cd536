//! Crash safety, with real processes: a child process makes acknowledged
//! writes (it prints each one only after its commit returned) and is killed
//! with SIGKILL at random moments; after every kill the store must reopen
//! cleanly and hold every acknowledged write.
//!
//! Acknowledged writes are durable in the write-ahead log first and in redb
//! at checkpoints: every other round the child makes a checkpoint every
//! 16 KiB of log, and now and then stores a blob too large to log (which
//! takes a checkpoint), so kills land before, during and after checkpoints,
//! and the reopen replays what the log holds past the last one.
//!
//! The child is this test executable itself, run again with an environment
//! variable that selects the child's role and `--exact` naming the test.

#![allow(clippy::expect_used, clippy::unwrap_used, reason = "a test fails by panicking")]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use capstan_store::{
    BlobHash, FormulaId, FormulaRecord, LOG_FILE_NAME, NodeId, PetName, Store, StoreError, StoreOptions,
};
use tempfile::TempDir;

const CHILD_ROLE: &str = "CAPSTAN_STORE_TEST_CHILD_ROLE";
const CHILD_DIR: &str = "CAPSTAN_STORE_TEST_CHILD_DIR";
const CHILD_ROUND: &str = "CAPSTAN_STORE_TEST_CHILD_ROUND";
/// Log bytes between checkpoints in rounds that make them often.
const SMALL_CHECKPOINT_BYTES: u64 = 16 * 1024;
/// Larger than a log record may be (4 MiB), so stored with a checkpoint.
const LARGE_BLOB_LEN: usize = 5 << 20;
const KILLS: u32 = 24;

fn node() -> NodeId {
    "22".repeat(32).parse().unwrap()
}

fn pet_store() -> FormulaId {
    FormulaId::new([1; 32], node())
}

fn agent() -> FormulaId {
    FormulaId::new([2; 32], node())
}

/// A formula id that encodes which write made it.
fn id_for(round: u32, index: u32) -> FormulaId {
    let mut number = [0u8; 32];
    number[..4].copy_from_slice(&round.to_be_bytes());
    number[4..8].copy_from_slice(&index.to_be_bytes());
    FormulaId::new(number, node())
}

/// Every eighth blob is too large to log.
fn blob_len(index: u32) -> usize {
    if index % 32 == 16 { LARGE_BLOB_LEN } else { 40_000 }
}

fn blob_bytes(round: u32, index: u32) -> Vec<u8> {
    let seed = round.wrapping_mul(7919) ^ index;
    (0..blob_len(index) as u32)
        .map(|position| (position.wrapping_mul(seed | 1) >> 3) as u8)
        .collect()
}

fn spawn_child(test_name: &str, role: &str, dir: &Path, round: u32) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test_name, "--nocapture", "--test-threads=1"])
        .env(CHILD_ROLE, role)
        .env(CHILD_DIR, dir)
        .env(CHILD_ROUND, round.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

fn ack_line_start() {
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout);
    let _ = stdout.flush();
}

/// Prints one acknowledgement as a whole line.
fn ack(line: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "ACK {line}");
    let _ = stdout.flush();
}

/// The child: writes until it is killed, from three threads at once (so
/// group commits happen too), acknowledging each durable write.
fn run_writer_child() {
    let dir = std::env::var(CHILD_DIR).unwrap();
    let round: u32 = std::env::var(CHILD_ROUND).unwrap().parse().unwrap();
    // The test harness has printed "test NAME ... " without a newline.
    ack_line_start();
    let opening = Instant::now();
    let mut options = StoreOptions::default();
    if round % 2 == 1 {
        options.log_checkpoint_bytes = SMALL_CHECKPOINT_BYTES;
    }
    let store = match Store::open_with(&dir, &options) {
        Ok(store) => store,
        Err(error) => {
            println!("OPEN-FAILED {error}");
            std::process::exit(3);
        }
    };
    eprintln!("child {round}: opened in {:?}", opening.elapsed());
    let names = {
        let store = store.clone();
        std::thread::spawn(move || {
            for index in 0.. {
                let name = format!("r{round}-a{index}");
                store
                    .write_name(pet_store(), PetName::new(&*name).unwrap(), id_for(round, index))
                    .wait()
                    .unwrap();
                ack(&format!("name {round} {index}"));
            }
        })
    };
    let messages = {
        let store = store.clone();
        std::thread::spawn(move || {
            for index in 0.. {
                let body = format!("r{round}-m{index} ✉");
                let number = store.append_message(agent(), body.clone().into_bytes()).wait().unwrap();
                ack(&format!("message {number} {round} {index}"));
            }
        })
    };
    for index in 0u32.. {
        // Ten names and a formula in one commit.
        store
            .transact(move |tx| {
                for part in 0..10 {
                    let name = PetName::new(format!("r{round}-g{index}-{part}"))?;
                    tx.write_name(pet_store(), &name, id_for(round, index))?;
                }
                tx.put_formula(
                    id_for(round, index),
                    &FormulaRecord {
                        formula_type: "eval".into(),
                        body: format!("round {round} group {index}").into_bytes(),
                    },
                )
            })
            .wait()
            .unwrap();
        ack(&format!("group {round} {index}"));
        if index % 4 == 0 {
            let hash = store.store_blob(&blob_bytes(round, index)).wait().unwrap();
            ack(&format!("blob {round} {index} {}", hash.to_hex()));
        }
    }
    let _ = (names.join(), messages.join());
}

/// What the children acknowledged, to check after each kill.
#[derive(Default)]
struct Acknowledged {
    names: Vec<(u32, u32)>,
    messages: BTreeMap<u64, (u32, u32)>,
    groups: Vec<(u32, u32)>,
    blobs: Vec<(u32, u32, BlobHash)>,
}

impl Acknowledged {
    fn count(&self) -> usize {
        self.names.len() + self.messages.len() + self.groups.len() + self.blobs.len()
    }

    fn record(&mut self, line: &str) {
        let fields: Vec<&str> = line.split(' ').collect();
        let number = |index: usize| -> u64 { fields[index].parse().unwrap() };
        match fields.as_slice() {
            ["name", _, _] => self.names.push((number(1) as u32, number(2) as u32)),
            ["message", _, _, _] => {
                let previous = self.messages.insert(number(1), (number(2) as u32, number(3) as u32));
                assert!(previous.is_none(), "message number {} acknowledged twice", number(1));
            }
            ["group", _, _] => self.groups.push((number(1) as u32, number(2) as u32)),
            ["blob", _, _, hash] => self
                .blobs
                .push((number(1) as u32, number(2) as u32, hash.parse().unwrap())),
            _ => panic!("unexpected acknowledgement {line:?}"),
        }
    }

    fn check(&self, store: &Store) {
        let snapshot = store.read().unwrap();
        for &(round, index) in &self.names {
            let name = PetName::new(format!("r{round}-a{index}")).unwrap();
            assert_eq!(
                snapshot.lookup_name(pet_store(), &name).unwrap(),
                Some(id_for(round, index)),
                "acknowledged name {name} is missing"
            );
        }
        for (&number, &(round, index)) in &self.messages {
            let body = snapshot.get_message(agent(), number).unwrap();
            assert_eq!(
                body,
                Some(format!("r{round}-m{index} ✉").into_bytes()),
                "acknowledged message {number} is missing or wrong"
            );
        }
        for &(round, index) in &self.groups {
            for part in 0..10 {
                let name = PetName::new(format!("r{round}-g{index}-{part}")).unwrap();
                assert_eq!(
                    snapshot.lookup_name(pet_store(), &name).unwrap(),
                    Some(id_for(round, index)),
                    "acknowledged group name {name} is missing"
                );
            }
            assert!(snapshot.has_formula(id_for(round, index)).unwrap());
        }
        for &(round, index, hash) in &self.blobs {
            let reader = snapshot
                .open_blob(hash)
                .unwrap()
                .unwrap_or_else(|| panic!("acknowledged blob of round {round} index {index} is missing"));
            assert!(reader.read_to_vec().unwrap() == blob_bytes(round, index));
        }
        // Numbers are never reused: the next one is past every one handed out.
        if let Some((&highest, _)) = self.messages.last_key_value() {
            assert!(snapshot.next_message_number(agent()).unwrap() > highest);
        }
    }
}

/// A small deterministic generator, seeded from the clock (and printed).
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    if std::env::var(CHILD_ROLE).as_deref() == Ok("writer") {
        run_writer_child();
        return;
    }
    let temp = TempDir::new().unwrap();
    let dir = temp.path().join("state");
    let seed = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64 | 1;
    println!("crash test seed {seed}");
    let mut random = XorShift(seed);
    let mut acknowledged = Acknowledged::default();
    let started = Instant::now();
    // At least KILLS kills; more (up to a bound) if a slow disk left too
    // few acknowledged writes for the test to mean much.
    let mut round = 0;
    let mut rounds_with_log_records = 0;
    while round < KILLS || (round < 3 * KILLS && (acknowledged.count() < 100 || acknowledged.blobs.is_empty())) {
        let mut child = spawn_child("acknowledged_writes_survive_sigkill", "writer", &dir, round);
        let stdout = child.stdout.take().unwrap();
        let (lines_sender, lines) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap_or(0) > 0 {
                // A line cut short by the kill was never acknowledged.
                if line.ends_with('\n') {
                    let _ = lines_sender.send(line.trim_end().to_owned());
                }
                line.clear();
            }
        });
        // Sometimes during the open (and its repair), mostly while writing.
        let delay = Duration::from_millis(5 + random.next() % 300);
        std::thread::sleep(delay);
        child.kill().unwrap();
        let status = child.wait().unwrap();
        reader.join().unwrap();
        let mut round_acks = 0;
        for line in lines.try_iter() {
            assert!(!line.starts_with("OPEN-FAILED"), "round {round}: {line}");
            if let Some(acked) = line.strip_prefix("ACK ") {
                acknowledged.record(acked);
                round_acks += 1;
            }
        }
        let logged = log_has_records(&dir);
        rounds_with_log_records += u32::from(logged);
        println!(
            "round {round}: killed after {delay:?} ({status}), {round_acks} acknowledged writes, log {}",
            if logged { "holds records" } else { "empty" }
        );
        let store =
            Store::open(&dir).unwrap_or_else(|error| panic!("round {round}: the store did not reopen: {error}"));
        acknowledged.check(&store);
        store.close().unwrap();
        round += 1;
    }
    println!(
        "{round} kills, {} acknowledged writes checked, in {:?}",
        acknowledged.count(),
        started.elapsed()
    );
    assert!(
        acknowledged.count() >= 100,
        "too few acknowledged writes ({}) for the test to mean much",
        acknowledged.count()
    );
    assert!(!acknowledged.groups.is_empty() && !acknowledged.blobs.is_empty());
    // The reopens replayed the log, not only redb's checkpoints.
    assert!(rounds_with_log_records > 0, "no kill left records in the log");
}

/// Whether the log holds a record: the record magic where the first one
/// goes (`store/src/wal.rs` has the layout). Emptied, it holds zeros there.
fn log_has_records(dir: &Path) -> bool {
    let log = std::fs::read(dir.join(LOG_FILE_NAME)).unwrap_or_default();
    log.get(48..52) == Some(&0x5741_4C31u32.to_le_bytes()[..])
}

#[test]
fn a_store_open_in_another_process_is_locked() {
    if std::env::var(CHILD_ROLE).as_deref() == Ok("holder") {
        let _store = Store::open(std::env::var(CHILD_DIR).unwrap()).unwrap();
        ack_line_start();
        ack("ready");
        std::thread::sleep(Duration::from_secs(60));
        return;
    }
    let temp = TempDir::new().unwrap();
    let dir = temp.path().join("state");
    let mut child = spawn_child("a_store_open_in_another_process_is_locked", "holder", &dir, 0);
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while line.trim_end() != "ACK ready" {
        line.clear();
        assert!(stdout.read_line(&mut line).unwrap() > 0, "the holder exited early");
    }
    let error = Store::open(&dir).err().unwrap();
    assert!(matches!(error, StoreError::Locked { .. }), "{error}");
    let message = error.to_string();
    assert!(message.contains(dir.to_str().unwrap()), "{message}");
    assert!(message.contains("in use by another process"), "{message}");
    // A killed holder leaves no stale lock behind.
    child.kill().unwrap();
    child.wait().unwrap();
    Store::open(&dir).unwrap();
}
