//! The write-ahead log, with real processes where a crash is involved: writes
//! acknowledged after the last checkpoint are replayed after a SIGKILL; a
//! record cut short at the log's tail is dropped and the store opens; damage
//! followed by whole records is refused with an error naming the log; a
//! checkpoint empties the log (a clean close deletes it), and a log its
//! checkpoint has already covered is not replayed again.
//!
//! The children are this test executable itself, run again with an
//! environment variable that selects the child's role and `--exact` naming
//! the test. The log's layout is in `store/src/wal.rs`; the few fields read
//! here are read by hand.

#![allow(clippy::expect_used, clippy::unwrap_used, reason = "a test fails by panicking")]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use capstan_store::{FormulaId, LOG_FILE_NAME, NodeId, PetName, Store, StoreError, StoreOptions};
use tempfile::TempDir;

const CHILD_ROLE: &str = "CAPSTAN_STORE_WAL_TEST_CHILD_ROLE";
const CHILD_DIR: &str = "CAPSTAN_STORE_WAL_TEST_CHILD_DIR";
const CHILD_CHECKPOINT_BYTES: &str = "CAPSTAN_STORE_WAL_TEST_CHECKPOINT_BYTES";
/// Set: the child stores a blob too large to log after its names, then
/// writes one more name.
const CHILD_LARGE_BLOB: &str = "CAPSTAN_STORE_WAL_TEST_LARGE_BLOB";
/// Larger than a log record may hold (4 MiB).
const LARGE_BLOB_LEN: usize = 5 << 20;
const CHILD_WRITES: u32 = 60;

const FILE_HEADER_LEN: usize = 48;
const RECORD_HEADER_LEN: usize = 40;
const RECORD_MAGIC: u32 = 0x5741_4C31;

fn pet_store() -> FormulaId {
    FormulaId::new([1; 32], NodeId::from_bytes([0x33; 32]))
}

fn id_for(index: u32) -> FormulaId {
    let mut number = [0u8; 32];
    number[..4].copy_from_slice(&index.to_be_bytes());
    FormulaId::new(number, NodeId::from_bytes([0x33; 32]))
}

fn name(index: u32) -> PetName {
    PetName::new(format!("written-{index}")).unwrap()
}

/// A change made to a copy of a log file.
type Damage<'a> = Box<dyn Fn(&mut Vec<u8>) + 'a>;

fn log_path(dir: &Path) -> PathBuf {
    dir.join(LOG_FILE_NAME)
}

/// A record's place and sequence numbers, read by hand.
#[derive(Debug)]
struct RecordSpan {
    offset: usize,
    len: usize,
    first_seq: u64,
    last_seq: u64,
}

/// The records of a log file, up to the first place that holds none.
fn records(log: &[u8]) -> Vec<RecordSpan> {
    let word = |at: usize| u32::from_le_bytes(log[at..at + 4].try_into().unwrap());
    let long = |at: usize| u64::from_le_bytes(log[at..at + 8].try_into().unwrap());
    let mut spans = Vec::new();
    let mut offset = FILE_HEADER_LEN;
    while offset + RECORD_HEADER_LEN <= log.len() && word(offset) == RECORD_MAGIC {
        let len = (RECORD_HEADER_LEN + word(offset + 4) as usize).div_ceil(8) * 8;
        spans.push(RecordSpan {
            offset,
            len,
            first_seq: long(offset + 8),
            last_seq: long(offset + 16),
        });
        offset += len;
    }
    spans
}

/// The child: writes names one at a time (each its own group, so its own
/// record), acknowledging each, then tries a write that fails, says it is
/// done and waits to be killed.
fn run_writer_child() {
    let dir = std::env::var(CHILD_DIR).unwrap();
    let mut options = StoreOptions::default();
    if let Ok(bytes) = std::env::var(CHILD_CHECKPOINT_BYTES) {
        options.log_checkpoint_bytes = bytes.parse().unwrap();
    }
    let store = Store::open_with(&dir, &options).unwrap();
    let mut stdout = std::io::stdout().lock();
    // The test harness has printed "test NAME ... " without a newline.
    writeln!(stdout).unwrap();
    for index in 0..CHILD_WRITES {
        store
            .write_name(pet_store(), name(index), id_for(index))
            .wait()
            .unwrap();
        writeln!(stdout, "ACK {index}").unwrap();
        stdout.flush().unwrap();
    }
    // A job that fails is left out whole: its name must not come back
    // from the log.
    let failed = store
        .transact(|tx| {
            tx.write_name(pet_store(), &PetName::new("failed").unwrap(), id_for(9999))?;
            Err::<(), _>(StoreError::InvalidInput {
                kind: "test",
                value: String::new(),
                reason: "fails on purpose".into(),
            })
        })
        .wait();
    assert!(failed.is_err());
    if std::env::var(CHILD_LARGE_BLOB).is_ok() {
        let hash = store.store_blob(&large_blob()).wait().unwrap();
        writeln!(stdout, "BLOB {}", hash.to_hex()).unwrap();
        store
            .write_name(pet_store(), name(CHILD_WRITES), id_for(CHILD_WRITES))
            .wait()
            .unwrap();
        writeln!(stdout, "ACK {CHILD_WRITES}").unwrap();
    }
    writeln!(stdout, "DONE").unwrap();
    stdout.flush().unwrap();
    std::thread::sleep(std::time::Duration::from_secs(60));
}

/// Runs the writer child in `dir` until it is done, kills it with SIGKILL
/// (well before the writer's idle checkpoint), and returns how many
/// writes it acknowledged.
fn write_and_kill(test_name: &str, dir: &Path, checkpoint_bytes: Option<u64>) -> u32 {
    write_and_kill_with(test_name, dir, checkpoint_bytes, false).0
}

/// As [`write_and_kill`], optionally with a large blob; also returns the
/// blob's hash as the child printed it.
fn write_and_kill_with(
    test_name: &str,
    dir: &Path,
    checkpoint_bytes: Option<u64>,
    large_blob: bool,
) -> (u32, Option<String>) {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args(["--exact", test_name, "--nocapture", "--test-threads=1"])
        .env(CHILD_ROLE, "writer")
        .env(CHILD_DIR, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if let Some(bytes) = checkpoint_bytes {
        command.env(CHILD_CHECKPOINT_BYTES, bytes.to_string());
    }
    if large_blob {
        command.env(CHILD_LARGE_BLOB, "1");
    }
    let mut child = command.spawn().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut acknowledged = 0;
    let mut blob = None;
    let mut line = String::new();
    loop {
        line.clear();
        assert!(
            stdout.read_line(&mut line).unwrap() > 0,
            "the writer child exited early"
        );
        match line.trim_end() {
            "DONE" => break,
            text if text.starts_with("ACK ") => acknowledged += 1,
            text if text.starts_with("BLOB ") => blob = Some(text["BLOB ".len()..].to_owned()),
            _ => {}
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    (acknowledged, blob)
}

fn large_blob() -> Vec<u8> {
    (0..LARGE_BLOB_LEN as u32)
        .map(|index| (index.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect()
}

fn is_child() -> bool {
    std::env::var(CHILD_ROLE).as_deref() == Ok("writer")
}

fn assert_names(store: &Store, present: impl IntoIterator<Item = u32>) {
    let snapshot = store.read().unwrap();
    for index in present {
        assert_eq!(
            snapshot.lookup_name(pet_store(), &name(index)).unwrap(),
            Some(id_for(index)),
            "acknowledged name {index} is missing"
        );
    }
    assert_eq!(
        snapshot
            .lookup_name(pet_store(), &PetName::new("failed").unwrap())
            .unwrap(),
        None,
        "the failed job's write came back"
    );
}

#[test]
fn writes_acknowledged_since_the_last_checkpoint_are_replayed_after_sigkill() {
    if is_child() {
        run_writer_child();
        return;
    }
    let temp = TempDir::new().unwrap();
    let dir = temp.path().join("state");
    let (_, spans) = killed_writers_log(
        "writes_acknowledged_since_the_last_checkpoint_are_replayed_after_sigkill",
        &dir,
        None,
    );
    // No checkpoint since the store was made: the log holds every write,
    // one record per acknowledged write (the failed job made none).
    assert_eq!(spans.len(), CHILD_WRITES as usize, "{spans:?}");
    for pair in spans.windows(2) {
        assert_eq!(pair[1].first_seq, pair[0].last_seq + 1);
    }
    let last_seq = spans.last().unwrap().last_seq;

    let store = Store::open(&dir).unwrap();
    assert_names(&store, 0..CHILD_WRITES);
    assert_eq!(store.read().unwrap().commit_seq().unwrap(), last_seq);
    // Replayed into a durable commit, the log is empty again.
    assert!(records(&std::fs::read(log_path(&dir)).unwrap()).is_empty());
    // And writing on works, after the replayed sequence numbers.
    store.write_name(pet_store(), name(1000), id_for(1000)).wait().unwrap();
    assert_eq!(store.read().unwrap().commit_seq().unwrap(), last_seq + 1);
    store.close().unwrap();

    let store = Store::open(&dir).unwrap();
    assert_names(&store, (0..CHILD_WRITES).chain([1000]));
    assert_eq!(store.read().unwrap().commit_seq().unwrap(), last_seq + 1);
}

#[test]
fn checkpoints_empty_the_log_and_writes_after_the_last_one_are_replayed() {
    if is_child() {
        run_writer_child();
        return;
    }
    let temp = TempDir::new().unwrap();
    let dir = temp.path().join("state");
    // A checkpoint every ~2 KiB of records: every ten writes or so.
    let (_, spans) = killed_writers_log(
        "checkpoints_empty_the_log_and_writes_after_the_last_one_are_replayed",
        &dir,
        Some(2048),
    );
    assert!(
        !spans.is_empty() && spans.len() < CHILD_WRITES as usize / 2,
        "checkpoints should have emptied the log, which holds {} records",
        spans.len()
    );
    // What the log holds begins after the last checkpoint, not at the
    // store's first write.
    assert!(spans[0].first_seq > 10, "{spans:?}");
    let store = Store::open(&dir).unwrap();
    assert_names(&store, 0..CHILD_WRITES);
    assert_eq!(
        store.read().unwrap().commit_seq().unwrap(),
        spans.last().unwrap().last_seq
    );
}

#[test]
fn a_blob_too_large_to_log_is_made_durable_by_a_checkpoint() {
    if is_child() {
        run_writer_child();
        return;
    }
    let temp = TempDir::new().unwrap();
    let dir = temp.path().join("state");
    let (acknowledged, blob) = write_and_kill_with(
        "a_blob_too_large_to_log_is_made_durable_by_a_checkpoint",
        &dir,
        None,
        true,
    );
    assert_eq!(acknowledged, CHILD_WRITES + 1);
    // The blob's checkpoint emptied the log; the name written after it is
    // the one record there.
    let spans = records(&std::fs::read(log_path(&dir)).unwrap());
    assert_eq!(spans.len(), 1, "{spans:?}");
    let store = Store::open(&dir).unwrap();
    assert_names(&store, 0..=CHILD_WRITES);
    let reader = store
        .read()
        .unwrap()
        .open_blob(blob.unwrap().parse().unwrap())
        .unwrap()
        .expect("the acknowledged blob is missing");
    assert!(reader.read_to_vec().unwrap() == large_blob());
}

#[test]
fn an_idle_writer_makes_a_checkpoint() {
    let temp = TempDir::new().unwrap();
    let dir = temp.path().join("state");
    let store = Store::open(&dir).unwrap();
    store.write_name(pet_store(), name(1), id_for(1)).wait().unwrap();
    assert_eq!(records(&std::fs::read(log_path(&dir)).unwrap()).len(), 1);
    // The writer waits 5 s with nothing to do before it makes one.
    let started = std::time::Instant::now();
    while !records(&std::fs::read(log_path(&dir)).unwrap()).is_empty() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "no checkpoint after 30 s idle"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert!(started.elapsed() >= std::time::Duration::from_secs(4));
    // What the checkpoint made durable is still there, and writes go on.
    store.write_name(pet_store(), name(2), id_for(2)).wait().unwrap();
    drop(store);
    let store = Store::open(&dir).unwrap();
    assert_names(&store, [1, 2]);
}

/// The log a writer child left in `dir` when killed once every write was
/// acknowledged, and where each record of it lies.
fn killed_writers_log(test_name: &str, dir: &Path, checkpoint_bytes: Option<u64>) -> (Vec<u8>, Vec<RecordSpan>) {
    let acknowledged = write_and_kill(test_name, dir, checkpoint_bytes);
    assert_eq!(acknowledged, CHILD_WRITES);
    let log = std::fs::read(log_path(dir)).unwrap();
    let spans = records(&log);
    (log, spans)
}

/// A copy of the `original` store, in a directory named for `what`, whose
/// log is `log` with `damage` done to it; the damaged log too.
fn damaged_copy(temp: &TempDir, original: &Path, log: &[u8], what: &str, damage: &Damage) -> (PathBuf, Vec<u8>) {
    let dir = temp.path().join(what.replace(' ', "-"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(original.join("capstan.redb"), dir.join("capstan.redb")).unwrap();
    let mut damaged = log.to_vec();
    damage(&mut damaged);
    std::fs::write(log_path(&dir), &damaged).unwrap();
    (dir, damaged)
}

#[test]
fn a_record_cut_short_at_the_tail_is_dropped_and_the_store_opens() {
    if is_child() {
        run_writer_child();
        return;
    }
    let temp = TempDir::new().unwrap();
    let original = temp.path().join("original");
    let (log, spans) = killed_writers_log(
        "a_record_cut_short_at_the_tail_is_dropped_and_the_store_opens",
        &original,
        None,
    );
    assert_eq!(spans.len(), CHILD_WRITES as usize);
    let last = spans.last().unwrap();
    // The last record as a crash may leave it: cut inside its header,
    // cut inside its body, never written past its first bytes, written
    // but wrong (a torn sector), or with the file ending inside it.
    let damages: Vec<(&str, Damage)> = vec![
        (
            "header cut",
            Box::new(|log: &mut Vec<u8>| log[last.offset + 12..last.offset + last.len].fill(0)),
        ),
        (
            "body cut",
            Box::new(|log: &mut Vec<u8>| log[last.offset + last.len - 12..last.offset + last.len].fill(0)),
        ),
        (
            "body wrong",
            Box::new(|log: &mut Vec<u8>| log[last.offset + RECORD_HEADER_LEN + 3] ^= 0x40),
        ),
        (
            "file ends inside",
            Box::new(|log: &mut Vec<u8>| log.truncate(last.offset + RECORD_HEADER_LEN + 5)),
        ),
        (
            "file ends inside the header",
            Box::new(|log: &mut Vec<u8>| log.truncate(last.offset + 7)),
        ),
    ];
    for (what, damage) in damages {
        let (dir, _) = damaged_copy(&temp, &original, &log, what, &damage);
        let store = Store::open(&dir).unwrap_or_else(|error| panic!("{what}: {error}"));
        // Every write but the one in the cut record is back.
        assert_names(&store, 0..CHILD_WRITES - 1);
        let snapshot = store.read().unwrap();
        assert_eq!(
            snapshot.lookup_name(pet_store(), &name(CHILD_WRITES - 1)).unwrap(),
            None,
            "{what}"
        );
        assert_eq!(snapshot.commit_seq().unwrap(), last.first_seq - 1, "{what}");
        drop(snapshot);
        // The next write takes the dropped write's sequence number.
        store.write_name(pet_store(), name(2000), id_for(2000)).wait().unwrap();
        assert_eq!(store.read().unwrap().commit_seq().unwrap(), last.first_seq, "{what}");
    }
}

#[test]
fn damage_before_whole_records_is_refused_with_an_error_naming_the_log() {
    if is_child() {
        run_writer_child();
        return;
    }
    let temp = TempDir::new().unwrap();
    let original = temp.path().join("original");
    let (log, spans) = killed_writers_log(
        "damage_before_whole_records_is_refused_with_an_error_naming_the_log",
        &original,
        None,
    );
    let middle = &spans[spans.len() / 2];
    let damages: Vec<(&str, Damage)> = vec![
        (
            "a flipped bit in a body",
            Box::new(|log: &mut Vec<u8>| log[middle.offset + RECORD_HEADER_LEN + 1] ^= 1),
        ),
        (
            "a flipped bit in a checksum",
            Box::new(|log: &mut Vec<u8>| log[middle.offset + 30] ^= 0x80),
        ),
        (
            "a zeroed record",
            Box::new(|log: &mut Vec<u8>| log[middle.offset..middle.offset + middle.len].fill(0)),
        ),
        (
            "garbage",
            Box::new(|log: &mut Vec<u8>| {
                for (index, byte) in log[middle.offset..middle.offset + middle.len].iter_mut().enumerate() {
                    *byte = (index * 37 + 11) as u8;
                }
            }),
        ),
        (
            "a huge length",
            Box::new(|log: &mut Vec<u8>| log[middle.offset + 4..middle.offset + 8].copy_from_slice(&[0xff; 4])),
        ),
        (
            "a record missing",
            Box::new(|log: &mut Vec<u8>| {
                // The records after it move up: whole, but not in sequence.
                log.drain(middle.offset..middle.offset + middle.len);
            }),
        ),
    ];
    for (what, damage) in damages {
        let (dir, damaged) = damaged_copy(&temp, &original, &log, what, &damage);
        let error = Store::open(&dir)
            .err()
            .unwrap_or_else(|| panic!("{what}: the store opened"));
        assert!(matches!(error, StoreError::LogCorrupted { .. }), "{what}: {error}");
        let message = error.to_string();
        assert!(message.contains(log_path(&dir).to_str().unwrap()), "{what}: {message}");
        assert!(message.contains("but a whole record follows"), "{what}: {message}");
        // The damaged log is left as it was, for someone to look at.
        assert_eq!(std::fs::read(log_path(&dir)).unwrap(), damaged, "{what}");
        // Moved away, the store opens as of its last checkpoint.
        std::fs::rename(log_path(&dir), dir.join("capstan.wal.damaged")).unwrap();
        Store::open(&dir).unwrap_or_else(|error| panic!("{what}: {error}"));
    }
}

#[test]
fn a_log_its_checkpoint_covered_is_not_replayed_again() {
    let temp = TempDir::new().unwrap();
    let dir = temp.path().join("state");
    let store = Store::open(&dir).unwrap();
    store.write_name(pet_store(), name(1), id_for(1)).wait().unwrap();
    store.write_name(pet_store(), name(2), id_for(2)).wait().unwrap();
    // The log as it is now: both writes, before any checkpoint.
    let stale = std::fs::read(log_path(&dir)).unwrap();
    assert_eq!(records(&stale).len(), 2);
    store.remove_name(pet_store(), name(1)).wait().unwrap();
    // A clean close makes a checkpoint and deletes the emptied log.
    store.close().unwrap();
    assert!(!log_path(&dir).exists());

    // As if a crash came between a checkpoint and emptying the log: its
    // records are all at or below the store's commit_seq and are skipped,
    // so the removed name stays removed.
    std::fs::write(log_path(&dir), &stale).unwrap();
    let store = Store::open(&dir).unwrap();
    let snapshot = store.read().unwrap();
    assert_eq!(snapshot.lookup_name(pet_store(), &name(1)).unwrap(), None);
    assert_eq!(snapshot.lookup_name(pet_store(), &name(2)).unwrap(), Some(id_for(2)));
    drop(snapshot);
    assert!(records(&std::fs::read(log_path(&dir)).unwrap()).is_empty());
}

#[test]
fn a_log_of_another_store_is_refused_unless_it_is_empty() {
    let temp = TempDir::new().unwrap();
    let first = temp.path().join("first");
    let second = temp.path().join("second");
    let store = Store::open(&first).unwrap();
    let empty = std::fs::read(log_path(&first)).unwrap();
    store.write_name(pet_store(), name(1), id_for(1)).wait().unwrap();
    let with_records = std::fs::read(log_path(&first)).unwrap();
    store.close().unwrap();
    Store::open(&second).unwrap().close().unwrap();

    std::fs::write(log_path(&second), &with_records).unwrap();
    let error = Store::open(&second).err().unwrap();
    assert!(error.to_string().contains("belongs to another store"), "{error}");
    // A store made anew beside an old, emptied log takes the log over.
    std::fs::write(log_path(&second), &empty).unwrap();
    let store = Store::open(&second).unwrap();
    store.write_name(pet_store(), name(2), id_for(2)).wait().unwrap();
    store.close().unwrap();
    Store::open(&second).unwrap();
}

#[test]
fn a_log_that_is_not_a_log_is_refused() {
    let temp = TempDir::new().unwrap();
    let dir = temp.path().join("state");
    Store::open(&dir).unwrap().close().unwrap();
    for (contents, expected) in [
        (&b""[..], "shorter than its header"),
        (&[7u8; 100][..], "does not begin with the log's header"),
    ] {
        std::fs::write(log_path(&dir), contents).unwrap();
        let error = Store::open(&dir).err().unwrap();
        assert!(matches!(error, StoreError::LogCorrupted { .. }), "{error}");
        assert!(error.to_string().contains(expected), "{error}");
    }
}

#[cfg(unix)]
#[test]
fn the_log_is_private_to_its_owner() {
    use std::os::unix::fs::PermissionsExt;
    let temp = TempDir::new().unwrap();
    let dir = temp.path().join("state");
    let _store = Store::open(&dir).unwrap();
    let mode = std::fs::metadata(log_path(&dir)).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
}
