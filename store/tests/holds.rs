//! Holds across nodes through the public API: holds given and taken,
//! releases queued, applied once and acknowledged, `forget`, and all of
//! it across a reopen.

#![allow(clippy::expect_used, clippy::unwrap_used, reason = "a test fails by panicking")]

use std::collections::HashSet;
use std::path::Path;

use capstan_store::{FormulaId, NodeId, RELEASE_BATCH_MAX, ReleaseBatch, Store};
use tempfile::TempDir;

fn node(byte: u8) -> NodeId {
    NodeId::from_bytes([byte; 32])
}

fn fid(n: u8, owner: NodeId) -> FormulaId {
    FormulaId::new([n; 32], owner)
}

fn open(dir: &Path) -> Store {
    Store::open(dir).unwrap()
}

fn commit_seq(store: &Store) -> u64 {
    store.read().unwrap().commit_seq().unwrap()
}

#[test]
fn holds_given_are_counted_released_and_kept_across_a_reopen() {
    let temp = TempDir::new().unwrap();
    let store = open(temp.path());
    let me = store.node_id();
    let (bob, carol) = (node(2), node(3));
    let (x, y) = (fid(1, me), fid(2, me));
    let forwarded = fid(9, node(4));
    store
        .transact(move |tx| tx.give_holds(bob, &[x, y, x, forwarded]))
        .wait()
        .unwrap();
    store.transact(move |tx| tx.give_holds(carol, &[y])).wait().unwrap();

    let snapshot = store.read().unwrap();
    assert_eq!(snapshot.holds_of(bob).unwrap(), {
        let mut expected = vec![(x, 2), (y, 1), (forwarded, 1)];
        expected.sort();
        expected
    });
    assert_eq!(snapshot.holds_by_peer().unwrap(), vec![(bob, 3), (carol, 1)]);
    let mut roots = vec![x, y, forwarded];
    roots.sort();
    assert_eq!(snapshot.formulas_held_by_peers().unwrap(), roots);
    drop(snapshot);

    // A refused send takes its giving back.
    store
        .transact(move |tx| tx.ungive_holds(bob, &[forwarded]))
        .wait()
        .unwrap();
    assert!(
        !store
            .read()
            .unwrap()
            .formulas_held_by_peers()
            .unwrap()
            .contains(&forwarded)
    );

    // Releasing one of two givings of x keeps the hold.
    assert!(
        store
            .transact(move |tx| tx.apply_hold_releases(bob, 1, &[(x, 1)]))
            .wait()
            .unwrap()
    );
    assert_eq!(store.read().unwrap().holds_of(bob).unwrap().len(), 2);
    store.close().unwrap();

    let store = open(temp.path());
    let snapshot = store.read().unwrap();
    let mut expected = vec![(x, 1), (y, 1)];
    expected.sort();
    assert_eq!(snapshot.holds_of(bob).unwrap(), expected);
    assert_eq!(snapshot.hold_releases_applied(bob).unwrap(), 1);
    drop(snapshot);

    // The same batch again (its answer was lost) changes nothing.
    assert!(
        !store
            .transact(move |tx| tx.apply_hold_releases(bob, 1, &[(x, 1)]))
            .wait()
            .unwrap()
    );
    assert_eq!(store.read().unwrap().holds_of(bob).unwrap().len(), 2);
    // The next one releases x and y; carol's hold on y stays.
    assert!(
        store
            .transact(move |tx| tx.apply_hold_releases(bob, 2, &[(x, 1), (y, 5)]))
            .wait()
            .unwrap()
    );
    let snapshot = store.read().unwrap();
    assert!(snapshot.holds_of(bob).unwrap().is_empty());
    assert_eq!(snapshot.formulas_held_by_peers().unwrap(), vec![y]);
}

#[test]
fn a_peer_releases_only_its_own_holds_and_a_stranger_leaves_no_trace() {
    let temp = TempDir::new().unwrap();
    let store = open(temp.path());
    let me = store.node_id();
    let (bob, mallory) = (node(2), node(6));
    let x = fid(1, me);
    store.transact(move |tx| tx.give_holds(bob, &[x])).wait().unwrap();
    let applied = store
        .transact(move |tx| tx.apply_hold_releases(mallory, 7, &[(x, 1)]))
        .wait()
        .unwrap();
    assert!(!applied);
    let snapshot = store.read().unwrap();
    assert_eq!(snapshot.holds_of(bob).unwrap(), vec![(x, 1)]);
    assert_eq!(snapshot.hold_releases_applied(mallory).unwrap(), 0);
    assert!(snapshot.holds_any(bob).unwrap());
    assert!(!snapshot.holds_any(mallory).unwrap());
}

#[test]
fn forget_drops_every_hold_of_one_peer() {
    let temp = TempDir::new().unwrap();
    let store = open(temp.path());
    let me = store.node_id();
    let (bob, carol) = (node(2), node(3));
    let ids: Vec<FormulaId> = (1..=5).map(|n| fid(n, me)).collect();
    let given = ids.clone();
    store
        .transact(move |tx| {
            tx.give_holds(bob, &given)?;
            tx.give_holds(bob, &given[..2])?;
            tx.give_holds(carol, &given[..1])
        })
        .wait()
        .unwrap();
    let forgotten = store.transact(move |tx| tx.forget_holds_of(bob)).wait().unwrap();
    assert_eq!(forgotten, 5);
    let again = store.transact(move |tx| tx.forget_holds_of(bob)).wait().unwrap();
    assert_eq!(again, 0);
    store.close().unwrap();
    let store = open(temp.path());
    let snapshot = store.read().unwrap();
    assert!(snapshot.holds_of(bob).unwrap().is_empty());
    assert_eq!(snapshot.holds_of(carol).unwrap(), vec![(ids[0], 1)]);
    assert_eq!(snapshot.formulas_held_by_peers().unwrap(), vec![ids[0]]);
}

#[test]
fn ids_let_go_of_are_queued_per_giver_and_removed_once_acknowledged() {
    let temp = TempDir::new().unwrap();
    let store = open(temp.path());
    let (alice, carol) = (node(1), node(3));
    let (a1, a2, c1) = (fid(1, alice), fid(2, alice), fid(3, carol));
    store
        .transact(move |tx| {
            tx.take_holds(alice, &[a1, a2, a1])?;
            tx.take_holds(carol, &[c1])
        })
        .wait()
        .unwrap();
    let snapshot = store.read().unwrap();
    assert_eq!(snapshot.holds_taken_by_giver().unwrap(), vec![(alice, 2), (carol, 1)]);
    let mut expected = vec![(a1, 2), (a2, 1)];
    expected.sort();
    assert_eq!(snapshot.holds_taken_from(alice).unwrap(), expected);
    drop(snapshot);

    // The collection reached a2 only: a1 and c1 are let go of.
    let marked = commit_seq(&store);
    let still_held: HashSet<FormulaId> = [a2].into();
    let queued = store
        .transact(move |tx| tx.queue_hold_releases(&still_held, marked))
        .wait()
        .unwrap();
    assert_eq!(queued, 2);
    store.close().unwrap();

    let store = open(temp.path());
    let snapshot = store.read().unwrap();
    assert_eq!(snapshot.holds_taken_from(alice).unwrap(), vec![(a2, 1)]);
    assert!(snapshot.holds_taken_from(carol).unwrap().is_empty());
    let mut batches = snapshot.pending_release_batches().unwrap();
    batches.sort_by_key(|batch| batch.giver);
    assert_eq!(
        batches,
        vec![
            ReleaseBatch {
                giver: alice,
                number: 1,
                released: vec![(a1, 2)]
            },
            ReleaseBatch {
                giver: carol,
                number: 1,
                released: vec![(c1, 1)]
            },
        ]
    );
    assert_eq!(snapshot.next_release_batch(alice).unwrap(), 2);
    assert!(snapshot.releases_wait_for(alice).unwrap());
    assert!(!snapshot.releases_wait_for(node(7)).unwrap());
    drop(snapshot);

    assert!(
        store
            .transact(move |tx| tx.remove_release_batch(alice, 1))
            .wait()
            .unwrap()
    );
    assert!(
        !store
            .transact(move |tx| tx.remove_release_batch(alice, 1))
            .wait()
            .unwrap()
    );
    let batches = store.read().unwrap().pending_release_batches().unwrap();
    assert_eq!(batches.len(), 1);
    assert_eq!(batches[0].giver, carol);
    assert!(!store.read().unwrap().releases_wait_for(alice).unwrap());
}

#[test]
fn an_id_received_after_the_collection_looked_is_kept() {
    let temp = TempDir::new().unwrap();
    let store = open(temp.path());
    let alice = node(1);
    let (a1, a2) = (fid(1, alice), fid(2, alice));
    store.transact(move |tx| tx.take_holds(alice, &[a1])).wait().unwrap();
    let marked = commit_seq(&store);
    // a2 arrives, and a1 again, after the collection's snapshot.
    store
        .transact(move |tx| tx.take_holds(alice, &[a2, a1]))
        .wait()
        .unwrap();
    let queued = store
        .transact(move |tx| tx.queue_hold_releases(&HashSet::new(), marked))
        .wait()
        .unwrap();
    assert_eq!(queued, 0);
    let mut expected = vec![(a1, 2), (a2, 1)];
    expected.sort();
    assert_eq!(store.read().unwrap().holds_taken_from(alice).unwrap(), expected);
}

#[test]
fn a_long_release_is_split_into_bounded_batches_in_order() {
    let temp = TempDir::new().unwrap();
    let store = open(temp.path());
    let alice = node(1);
    let ids: Vec<FormulaId> = (0..RELEASE_BATCH_MAX + 10)
        .map(|n| {
            let mut number = [0u8; 32];
            number[..8].copy_from_slice(&(n as u64).to_be_bytes());
            FormulaId::new(number, alice)
        })
        .collect();
    let taken = ids.clone();
    store.transact(move |tx| tx.take_holds(alice, &taken)).wait().unwrap();
    let marked = commit_seq(&store);
    let queued = store
        .transact(move |tx| tx.queue_hold_releases(&HashSet::new(), marked))
        .wait()
        .unwrap();
    assert_eq!(queued, ids.len() as u64);
    let batches = store.read().unwrap().pending_release_batches().unwrap();
    let sizes: Vec<(u64, usize)> = batches
        .iter()
        .map(|batch| (batch.number, batch.released.len()))
        .collect();
    assert_eq!(sizes, vec![(1, RELEASE_BATCH_MAX), (2, 10)]);
}
