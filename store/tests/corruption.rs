//! A damaged store file must fail to open with a clear error: never a
//! panic, and never a store that opens empty or with wrong contents.
//!
//! One test runs every pattern (truncations, a damaged header, damaged
//! commit slots, damaged pages where the data lives, bit flips and random
//! damage) so that the panic hook it installs to count panics sees only its
//! own work.

#![allow(clippy::expect_used, clippy::unwrap_used, reason = "a test fails by panicking")]

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use capstan_store::{
    BLOB_CHUNK_LEN, BaggageKey, BlobHash, FormulaId, FormulaRecord, NodeId, PetName, STORE_FILE_NAME, Store,
    StoreError, VatId,
};
use tempfile::TempDir;

const NAMES: u32 = 300;
const MESSAGES: u32 = 60;
const NAME_MARKER: &str = "marker-name-qqqqqqqqqqqqqqqqqqqqqqqqqqqqqq";
const MESSAGE_MARKER: &[u8] = b"MESSAGE-MARKER-WWWWWWWWWWWWWWWWWWWWWWWWWWWWWWWWWWWWWWWWWWWWWWWW";

fn node() -> NodeId {
    "33".repeat(32).parse().unwrap()
}

fn pet_store() -> FormulaId {
    FormulaId::new([1; 32], node())
}

fn agent() -> FormulaId {
    FormulaId::new([2; 32], node())
}

fn id(index: u32) -> FormulaId {
    let mut number = [7u8; 32];
    number[..4].copy_from_slice(&index.to_be_bytes());
    FormulaId::new(number, node())
}

fn blob() -> Vec<u8> {
    (0..BLOB_CHUNK_LEN * 2 + 1000)
        .map(|index| (index as u32).wrapping_mul(2_654_435_761).to_be_bytes()[0])
        .collect()
}

/// Makes a store with some of everything and returns its file's bytes.
fn build_store(dir: &Path) -> (Vec<u8>, BlobHash, NodeId) {
    let store = Store::open(dir).unwrap();
    let node_id = store.node_id();
    store
        .transact(|tx| {
            for index in 0..NAMES {
                tx.write_name(pet_store(), &PetName::new(format!("name-{index}"))?, id(index))?;
                tx.put_formula(
                    id(index),
                    &FormulaRecord {
                        formula_type: "eval".into(),
                        body: format!("formula {index} ✓").into_bytes(),
                    },
                )?;
            }
            tx.write_name(pet_store(), &PetName::new(NAME_MARKER)?, id(9999))?;
            let vat = VatId::new("v1")?;
            tx.put_baggage(&vat, &BaggageKey::new("key")?, b"value")?;
            Ok(())
        })
        .wait()
        .unwrap();
    for index in 0..MESSAGES {
        store
            .append_message(agent(), format!("message {index}").into_bytes())
            .wait()
            .unwrap();
    }
    store.append_message(agent(), MESSAGE_MARKER.to_vec()).wait().unwrap();
    let hash = store.store_blob(&blob()).wait().unwrap();
    let path = store.path().to_owned();
    store.close().unwrap();
    (std::fs::read(path).unwrap(), hash, node_id)
}

/// Checks that an opened store holds everything `build_store` put in it.
fn check_intact(store: &Store, hash: BlobHash, node_id: NodeId) -> Result<(), String> {
    let fail = |what: &str| Err(what.to_owned());
    if store.node_id() != node_id {
        return fail("node id changed");
    }
    let snapshot = store.read().map_err(|error| error.to_string())?;
    let names = snapshot.list_names(pet_store()).map_err(|error| error.to_string())?;
    if names.len() != NAMES as usize + 1 {
        return fail(&format!("{} names instead of {}", names.len(), NAMES + 1));
    }
    for index in 0..NAMES {
        let name = PetName::new(format!("name-{index}")).unwrap();
        if snapshot.lookup_name(pet_store(), &name).ok().flatten() != Some(id(index)) {
            return fail(&format!("name {name} wrong"));
        }
        let formula = snapshot.get_formula(id(index)).map_err(|error| error.to_string())?;
        if formula.map(|record| record.body) != Some(format!("formula {index} ✓").into_bytes()) {
            return fail(&format!("formula {index} wrong"));
        }
    }
    let messages = snapshot.list_messages(agent()).map_err(|error| error.to_string())?;
    if messages.len() != MESSAGES as usize + 1 {
        return fail("messages missing");
    }
    let reader = snapshot
        .open_blob(hash)
        .map_err(|error| error.to_string())?
        .ok_or("blob missing")?;
    if reader.read_to_vec().map_err(|error| error.to_string())? != blob() {
        return fail("blob wrong");
    }
    Ok(())
}

fn find_all(haystack: &[u8], needle: &[u8]) -> Vec<usize> {
    haystack
        .windows(needle.len())
        .enumerate()
        .filter(|(_, window)| *window == needle)
        .map(|(offset, _)| offset)
        .collect()
}

fn garble(bytes: &mut [u8], offset: usize, len: usize, seed: u64) {
    let mut state = seed | 1;
    let end = (offset + len).min(bytes.len());
    for byte in &mut bytes[offset..end] {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        *byte ^= (state as u8) | 1;
    }
}

/// How a damaged file is expected to open.
#[derive(Clone, Copy, PartialEq)]
enum Expect {
    /// It must fail to open.
    Error,
    /// It must fail to open, or open with every record intact (damage to
    /// free pages, or to a flag redb can recover from, harms nothing).
    ErrorOrIntact,
}

struct Case {
    name: String,
    bytes: Vec<u8>,
    expect: Expect,
}

#[test]
fn damaged_files_fail_to_open_with_a_clear_error() {
    let panics = Arc::new(AtomicUsize::new(0));
    let default_hook = std::panic::take_hook();
    let counter = panics.clone();
    std::panic::set_hook(Box::new(move |info| {
        counter.fetch_add(1, Ordering::SeqCst);
        default_hook(info);
    }));

    let temp = TempDir::new().unwrap();
    let original_dir = temp.path().join("original");
    let (original, hash, node_id) = build_store(&original_dir);
    let len = original.len();
    println!("store file: {len} bytes");

    let mut cases = Vec::new();
    let mut case = |name: String, bytes: Vec<u8>, expect: Expect| {
        cases.push(Case { name, bytes, expect });
    };
    for cut in [0, 9, 100, 511, 512, 4096, 8192, len / 4, len / 2, len - 4096, len - 1] {
        case(
            format!("truncated to {cut} bytes"),
            original[..cut].to_vec(),
            Expect::Error,
        );
    }
    case("all zeros".into(), vec![0; len], Expect::Error);
    let mut random = original.clone();
    garble(&mut random, 0, len, 99);
    case("all random bytes".into(), random, Expect::Error);
    for (name, offset, span) in [
        ("magic number", 0, 9),
        ("page size and region layout", 12, 24),
        ("commit slot 0", 64, 128),
        ("commit slot 1", 192, 128),
        ("both commit slots", 64, 256),
    ] {
        let mut bytes = original.clone();
        garble(&mut bytes, offset, span, offset as u64 + 7);
        case(format!("garbled {name}"), bytes, Expect::Error);
    }
    let mut bytes = original.clone();
    bytes[9] ^= 0b10; // the god byte's recovery flag
    case("recovery flag set".into(), bytes, Expect::ErrorOrIntact);
    // Damage every copy of a record's bytes, so the live copy is surely hit.
    let blob_sample = &blob()[BLOB_CHUNK_LEN + 500..BLOB_CHUNK_LEN + 564];
    for (name, needle) in [
        ("a pet name's page", NAME_MARKER.as_bytes()),
        ("a message's page", MESSAGE_MARKER),
        ("a blob chunk's page", blob_sample),
    ] {
        let offsets = find_all(&original, needle);
        assert!(!offsets.is_empty(), "{name}: marker not found in the file");
        let mut bytes = original.clone();
        for &offset in &offsets {
            garble(&mut bytes, offset, needle.len(), offset as u64);
        }
        case(
            format!("garbled {name} ({} copies)", offsets.len()),
            bytes,
            Expect::Error,
        );
    }
    for index in 1..16 {
        let offset = len * index / 16 + 37;
        let mut bytes = original.clone();
        bytes[offset] ^= 0x04;
        case(format!("bit flip at {offset}"), bytes, Expect::ErrorOrIntact);
    }
    for index in 0..8u64 {
        let page = 1 + (index * 7919) as usize % (len / 4096 - 1);
        let mut bytes = original.clone();
        garble(&mut bytes, page * 4096, 4096, index + 1);
        case(format!("random page {page} garbled"), bytes, Expect::ErrorOrIntact);
    }

    let mut errors = 0;
    for (number, case) in cases.iter().enumerate() {
        let dir = temp.path().join(format!("case-{number}"));
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join(STORE_FILE_NAME), &case.bytes).unwrap();
        let before = panics.load(Ordering::SeqCst);
        let outcome = Store::open(&dir);
        assert_eq!(panics.load(Ordering::SeqCst), before, "{}: opening panicked", case.name);
        match outcome {
            Err(error) => {
                errors += 1;
                let message = error.to_string();
                println!("{:44} -> {message}", case.name);
                assert!(
                    matches!(
                        error,
                        StoreError::Corrupted { .. } | StoreError::NotACapstanStore { .. }
                    ),
                    "{}: unexpected kind of error: {message}",
                    case.name
                );
                assert!(
                    message.contains(dir.to_str().unwrap()),
                    "{}: the message does not name the file: {message}",
                    case.name
                );
            }
            Ok(store) => {
                let intact = check_intact(&store, hash, node_id);
                println!("{:44} -> opened, contents intact: {intact:?}", case.name);
                assert_eq!(panics.load(Ordering::SeqCst), before, "{}: reading panicked", case.name);
                assert!(
                    case.expect == Expect::ErrorOrIntact,
                    "{}: a damaged file opened",
                    case.name
                );
                assert_eq!(intact, Ok(()), "{}: opened with wrong contents", case.name);
            }
        }
    }
    println!("{} cases, {errors} refused to open", cases.len());
    // 21 cases must be refused (each is checked above); damage at the
    // other offsets may have hit only free pages.
    assert!(errors >= 21, "only {errors} cases were refused");

    // The undamaged file still opens, with everything in it.
    let store = Store::open(&original_dir).unwrap();
    assert_eq!(check_intact(&store, hash, node_id), Ok(()));
}
