//! The writer's shared commits: repeatable writes waiting together commit
//! in one transaction, and one that fails (or panics) is left out whole
//! without costing the others their writes or their order.

#![allow(clippy::expect_used, clippy::unwrap_used, reason = "a test fails by panicking")]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;

use capstan_store::{Commit, FormulaId, NodeId, PetName, Store, StoreError};
use tempfile::TempDir;

fn fid(n: u8) -> FormulaId {
    FormulaId::new([n; 32], NodeId::from_bytes([0x11; 32]))
}

fn name(text: &str) -> PetName {
    PetName::new(text).unwrap()
}

fn commit_seq(store: &Store) -> u64 {
    store.read().unwrap().commit_seq().unwrap()
}

/// Holds the writer busy until the returned sender is used, so that the
/// writes queued meanwhile make one group.
fn hold_writer(store: &Store) -> (mpsc::Sender<()>, Commit<()>) {
    let (release, released) = mpsc::channel::<()>();
    let (started, writer_busy) = mpsc::channel::<()>();
    let held = store.transact(move |_tx| {
        started.send(()).unwrap();
        released.recv().unwrap();
        Ok(())
    });
    writer_busy.recv().unwrap();
    (release, held)
}

#[test]
fn waiting_repeatable_writes_share_one_commit() {
    let temp = TempDir::new().unwrap();
    let store = Store::open(temp.path()).unwrap();
    let pet_store = fid(1);
    let before = commit_seq(&store);
    let (release, held) = hold_writer(&store);
    let commits: Vec<_> = (0..100u8)
        .map(|n| store.write_name(pet_store, name(&format!("name-{n}")), fid(n)))
        .collect();
    release.send(()).unwrap();
    held.wait().unwrap();
    for commit in commits {
        commit.wait().unwrap();
    }
    // One commit for the job that held the writer, one for the hundred.
    assert_eq!(commit_seq(&store), before + 2);
    let snapshot = store.read().unwrap();
    for n in 0..100u8 {
        assert_eq!(
            snapshot.lookup_name(pet_store, &name(&format!("name-{n}"))).unwrap(),
            Some(fid(n))
        );
    }
}

#[test]
fn a_failing_write_in_a_shared_commit_is_left_out_whole() {
    let temp = TempDir::new().unwrap();
    let store = Store::open(temp.path()).unwrap();
    let pet_store = fid(1);
    let runs = Arc::new(AtomicUsize::new(0));
    let (release, held) = hold_writer(&store);

    let first = store.write_name(pet_store, name("first"), fid(1));
    let counted = {
        let runs = runs.clone();
        store.transact_repeatable(move |tx| {
            runs.fetch_add(1, Ordering::SeqCst);
            tx.write_name(pet_store, &name("counted"), fid(2))
        })
    };
    // Writes a name, then fails: the name must not be kept.
    let failing = store.transact_repeatable(move |tx| {
        tx.write_name(pet_store, &name("partial"), fid(3))?;
        Err::<(), _>(StoreError::NameNotFound { name: name("missing") })
    });
    // Depends on the failed write: run one by one, it finds nothing to move.
    let dependent = store.move_name(pet_store, name("partial"), pet_store, name("moved"));
    let panicking = store.transact_repeatable(move |tx| -> Result<(), StoreError> {
        tx.write_name(pet_store, &name("panicked"), fid(4))?;
        panic!("a write that panics");
    });
    let last = store.write_name(pet_store, name("last"), fid(5));
    // Sees the writes before it in the same commit.
    let moved_first = store.move_name(pet_store, name("first"), pet_store, name("renamed"));

    release.send(()).unwrap();
    held.wait().unwrap();
    first.wait().unwrap();
    counted.wait().unwrap();
    assert!(matches!(failing.wait(), Err(StoreError::NameNotFound { .. })));
    assert!(matches!(dependent.wait(), Err(StoreError::NameNotFound { .. })));
    assert!(matches!(panicking.wait(), Err(StoreError::TransactionPanicked { .. })));
    last.wait().unwrap();
    assert_eq!(moved_first.wait().unwrap(), fid(1));
    // Ran again after the failure abandoned its transaction, and no more.
    assert_eq!(runs.load(Ordering::SeqCst), 2);

    let snapshot = store.read().unwrap();
    for gone in ["first", "partial", "moved", "panicked"] {
        assert_eq!(snapshot.lookup_name(pet_store, &name(gone)).unwrap(), None, "{gone}");
    }
    assert_eq!(snapshot.lookup_name(pet_store, &name("counted")).unwrap(), Some(fid(2)));
    assert_eq!(snapshot.lookup_name(pet_store, &name("last")).unwrap(), Some(fid(5)));
    assert_eq!(snapshot.lookup_name(pet_store, &name("renamed")).unwrap(), Some(fid(1)));
    drop(snapshot);

    // All of it durable: it survives a reopen.
    store.close().unwrap();
    let store = Store::open(temp.path()).unwrap();
    let snapshot = store.read().unwrap();
    assert_eq!(snapshot.lookup_name(pet_store, &name("counted")).unwrap(), Some(fid(2)));
    assert_eq!(snapshot.lookup_name(pet_store, &name("partial")).unwrap(), None);
}
