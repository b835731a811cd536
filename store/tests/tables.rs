//! Every table through the public API: identity, formulas, pet stores,
//! mailboxes, blobs, peers and the kernel's tables, with their edge cases,
//! plus atomicity, followers, the async API, locking and reopening.

#![allow(clippy::expect_used, clippy::unwrap_used, reason = "a test fails by panicking")]

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use capstan_store::{
    BLOB_CHUNK_LEN, BaggageKey, BlobHash, FormulaId, FormulaRecord, Kref, KrefKind, MessageEventKind, NameChangeKind,
    NodeId, PeerRecord, PetName, Store, StoreError, SubclusterId, VatId, Vref,
};
use tempfile::TempDir;

fn node() -> NodeId {
    "11".repeat(32).parse().unwrap()
}

fn fid(n: u8) -> FormulaId {
    FormulaId::new([n; 32], node())
}

fn name(text: &str) -> PetName {
    PetName::new(text).unwrap()
}

fn state_dir(temp: &TempDir) -> PathBuf {
    temp.path().join("state")
}

fn open(dir: &Path) -> Store {
    Store::open(dir).unwrap()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().build().unwrap()
}

#[test]
fn identity_is_made_once_and_kept() {
    let temp = TempDir::new().unwrap();
    let dir = state_dir(&temp);
    let store = open(&dir);
    let node_id = store.node_id();
    let hex = node_id.to_string();
    assert_eq!(hex.len(), 64);
    assert!(hex.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)));
    let secret = store.node_secret().unwrap();
    assert_eq!(secret.node_id(), node_id);
    assert_eq!(secret.signing_key().verifying_key().to_bytes(), *node_id.as_bytes());
    assert!(!format!("{secret:?}").contains(&format!("{:?}", secret.seed())));
    let seed = *secret.seed();
    store.close().unwrap();

    let store = open(&dir);
    assert_eq!(store.node_id(), node_id);
    assert_eq!(*store.node_secret().unwrap().seed(), seed);

    let other = TempDir::new().unwrap();
    assert_ne!(open(&state_dir(&other)).node_id(), node_id);
}

#[test]
fn state_directory_is_private() {
    let temp = TempDir::new().unwrap();
    let dir = temp.path().join("a").join("state");
    let store = open(&dir);
    let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(store.path()), 0o600);
    assert_eq!(store.state_dir(), dir);
}

#[test]
fn formulas_are_stored_replaced_and_removed() {
    let temp = TempDir::new().unwrap();
    let store = open(&state_dir(&temp));
    let record = FormulaRecord {
        formula_type: "eval".into(),
        body: "const π = '🦀';".as_bytes().to_vec(),
    };
    store.put_formula(fid(1), record.clone()).wait().unwrap();
    assert_eq!(store.read().unwrap().get_formula(fid(1)).unwrap(), Some(record));

    let unicode = FormulaRecord {
        formula_type: "tÿpe-ünïcode".into(),
        body: vec![0, 255, 1],
    };
    store.put_formula(fid(1), unicode.clone()).wait().unwrap();
    store
        .put_formula(
            fid(2),
            FormulaRecord {
                formula_type: "pet-store".into(),
                body: Vec::new(),
            },
        )
        .wait()
        .unwrap();
    let snapshot = store.read().unwrap();
    assert_eq!(snapshot.get_formula(fid(1)).unwrap(), Some(unicode));
    assert_eq!(snapshot.get_formula(fid(9)).unwrap(), None);
    assert!(!snapshot.has_formula(fid(9)).unwrap());
    assert_eq!(snapshot.formula_ids().unwrap(), vec![fid(1), fid(2)]);

    assert!(store.transact(|tx| tx.remove_formula(fid(1))).wait().unwrap());
    assert!(!store.transact(|tx| tx.remove_formula(fid(1))).wait().unwrap());
    assert_eq!(store.read().unwrap().formula_ids().unwrap(), vec![fid(2)]);
}

#[test]
fn pet_names_write_lookup_list_in_order() {
    let temp = TempDir::new().unwrap();
    let store = open(&state_dir(&temp));
    let longest = "z".repeat(128);
    for (text, id) in [("b", 2), ("a", 1), (longest.as_str(), 3), ("0-x", 4)] {
        store.write_name(fid(100), name(text), fid(id)).wait().unwrap();
    }
    let snapshot = store.read().unwrap();
    let listed: Vec<_> = snapshot
        .list_names(fid(100))
        .unwrap()
        .into_iter()
        .map(|(name, id)| (name.to_string(), id))
        .collect();
    assert_eq!(
        listed,
        vec![
            ("0-x".to_string(), fid(4)),
            ("a".to_string(), fid(1)),
            ("b".to_string(), fid(2)),
            (longest.clone(), fid(3)),
        ]
    );
    assert_eq!(snapshot.lookup_name(fid(100), &name(&longest)).unwrap(), Some(fid(3)));
    assert_eq!(snapshot.lookup_name(fid(100), &name("missing")).unwrap(), None);
    assert_eq!(snapshot.lookup_name(fid(101), &name("a")).unwrap(), None);
    assert!(snapshot.list_names(fid(101)).unwrap().is_empty());
    assert!(snapshot.reverse_lookup(fid(77)).unwrap().is_empty());
    assert!(PetName::new("z".repeat(129)).is_err());
}

#[test]
fn pet_name_replace_keeps_the_reverse_index_right() {
    let temp = TempDir::new().unwrap();
    let store = open(&state_dir(&temp));
    store.write_name(fid(100), name("x"), fid(1)).wait().unwrap();
    store.write_name(fid(100), name("x"), fid(2)).wait().unwrap();
    let snapshot = store.read().unwrap();
    assert!(snapshot.reverse_lookup(fid(1)).unwrap().is_empty());
    assert_eq!(snapshot.reverse_lookup(fid(2)).unwrap(), vec![(fid(100), name("x"))]);
}

#[test]
fn removing_a_name_leaves_other_stores_names_for_the_same_id() {
    let temp = TempDir::new().unwrap();
    let store = open(&state_dir(&temp));
    store.write_name(fid(100), name("shared"), fid(7)).wait().unwrap();
    store.write_name(fid(101), name("also"), fid(7)).wait().unwrap();
    store.write_name(fid(101), name("again"), fid(7)).wait().unwrap();
    assert_eq!(store.read().unwrap().reverse_lookup(fid(7)).unwrap().len(), 3);

    let removed = store.remove_name(fid(100), name("shared")).wait().unwrap();
    assert_eq!(removed, Some(fid(7)));
    let snapshot = store.read().unwrap();
    assert_eq!(
        snapshot.reverse_lookup(fid(7)).unwrap(),
        vec![(fid(101), name("again")), (fid(101), name("also"))]
    );
    assert!(snapshot.reverse_lookup_in(fid(100), fid(7)).unwrap().is_empty());
    assert_eq!(
        snapshot.reverse_lookup_in(fid(101), fid(7)).unwrap(),
        vec![name("again"), name("also")]
    );
    // Removing a name that is not there is not an error.
    assert_eq!(store.remove_name(fid(100), name("shared")).wait().unwrap(), None);
    assert_eq!(store.remove_name(fid(255), name("nowhere")).wait().unwrap(), None);
}

#[test]
fn move_and_copy_between_pet_stores() {
    let temp = TempDir::new().unwrap();
    let store = open(&state_dir(&temp));
    store.write_name(fid(100), name("a"), fid(1)).wait().unwrap();
    store.write_name(fid(101), name("b"), fid(2)).wait().unwrap();

    // Rename within a store.
    store
        .move_name(fid(100), name("a"), fid(100), name("a2"))
        .wait()
        .unwrap();
    // Move between stores, replacing the target.
    let moved = store
        .move_name(fid(100), name("a2"), fid(101), name("b"))
        .wait()
        .unwrap();
    assert_eq!(moved, fid(1));
    let snapshot = store.read().unwrap();
    assert!(snapshot.list_names(fid(100)).unwrap().is_empty());
    assert_eq!(snapshot.list_names(fid(101)).unwrap(), vec![(name("b"), fid(1))]);
    assert!(snapshot.reverse_lookup(fid(2)).unwrap().is_empty());
    assert_eq!(snapshot.reverse_lookup(fid(1)).unwrap(), vec![(fid(101), name("b"))]);

    // Moving a name onto itself changes nothing.
    store
        .move_name(fid(101), name("b"), fid(101), name("b"))
        .wait()
        .unwrap();
    assert_eq!(
        store.read().unwrap().lookup_name(fid(101), &name("b")).unwrap(),
        Some(fid(1))
    );

    let copied = store
        .copy_name(fid(101), name("b"), fid(102), name("c"))
        .wait()
        .unwrap();
    assert_eq!(copied, fid(1));
    let snapshot = store.read().unwrap();
    assert_eq!(snapshot.lookup_name(fid(101), &name("b")).unwrap(), Some(fid(1)));
    assert_eq!(snapshot.lookup_name(fid(102), &name("c")).unwrap(), Some(fid(1)));

    for error in [
        store
            .move_name(fid(100), name("gone"), fid(101), name("x"))
            .wait()
            .unwrap_err(),
        store
            .copy_name(fid(100), name("gone"), fid(101), name("x"))
            .wait()
            .unwrap_err(),
    ] {
        assert!(matches!(error, StoreError::NameNotFound { .. }), "{error}");
        assert_eq!(error.to_string(), "there is no pet name \"gone\" in that pet store");
    }
}

#[test]
fn removing_a_pet_store_removes_its_names_only() {
    let temp = TempDir::new().unwrap();
    let store = open(&state_dir(&temp));
    store.write_name(fid(100), name("a"), fid(1)).wait().unwrap();
    store.write_name(fid(100), name("b"), fid(2)).wait().unwrap();
    store.write_name(fid(101), name("a"), fid(1)).wait().unwrap();
    let removed = store.transact(|tx| tx.remove_pet_store(fid(100))).wait().unwrap();
    assert_eq!(removed, 2);
    let snapshot = store.read().unwrap();
    assert!(snapshot.list_names(fid(100)).unwrap().is_empty());
    assert_eq!(snapshot.reverse_lookup(fid(1)).unwrap(), vec![(fid(101), name("a"))]);
    assert!(snapshot.reverse_lookup(fid(2)).unwrap().is_empty());
}

#[test]
fn a_failed_transaction_keeps_nothing() {
    let temp = TempDir::new().unwrap();
    let store = open(&state_dir(&temp));
    let error = store
        .transact(|tx| {
            tx.write_name(fid(100), &name("first"), fid(1))?;
            tx.put_formula(
                fid(1),
                &FormulaRecord {
                    formula_type: "x".into(),
                    body: vec![],
                },
            )?;
            // Fails, so the two writes above must roll back.
            tx.move_name(fid(100), &name("absent"), fid(100), &name("y"))
        })
        .wait()
        .unwrap_err();
    assert!(matches!(error, StoreError::NameNotFound { .. }));
    let snapshot = store.read().unwrap();
    assert_eq!(snapshot.lookup_name(fid(100), &name("first")).unwrap(), None);
    assert_eq!(snapshot.get_formula(fid(1)).unwrap(), None);

    let panicked = store
        .transact(|tx| -> Result<(), StoreError> {
            tx.write_name(fid(100), &name("first"), fid(1))?;
            panic!("deliberate panic inside a transaction");
        })
        .wait()
        .unwrap_err();
    assert!(panicked.to_string().contains("deliberate panic"), "{panicked}");
    assert_eq!(
        store.read().unwrap().lookup_name(fid(100), &name("first")).unwrap(),
        None
    );
    // The writer still works.
    store.write_name(fid(100), name("after"), fid(2)).wait().unwrap();
    assert_eq!(
        store.read().unwrap().lookup_name(fid(100), &name("after")).unwrap(),
        Some(fid(2))
    );
}

#[test]
fn a_transaction_groups_many_operations_into_one_commit() {
    let temp = TempDir::new().unwrap();
    let store = open(&state_dir(&temp));
    let before = store.read().unwrap().commit_seq().unwrap();
    let (count, number) = store
        .transact(|tx| {
            for index in 0..500 {
                tx.write_name(fid(100), &name(&format!("n{index}")), fid(1))?;
            }
            tx.put_formula(
                fid(1),
                &FormulaRecord {
                    formula_type: "eval".into(),
                    body: vec![1],
                },
            )?;
            let number = tx.append_message(fid(50), b"hello")?;
            // A transaction reads its own writes.
            Ok((tx.list_names(fid(100))?.len(), number))
        })
        .wait()
        .unwrap();
    assert_eq!((count, number), (500, 0));
    let snapshot = store.read().unwrap();
    assert_eq!(snapshot.commit_seq().unwrap(), before + 1);
    assert_eq!(snapshot.reverse_lookup(fid(1)).unwrap().len(), 500);
}

#[test]
fn mailbox_numbers_are_never_reused() {
    let temp = TempDir::new().unwrap();
    let dir = state_dir(&temp);
    let store = open(&dir);
    let agent = fid(50);
    let numbers: Vec<u64> = ["one", "twö", "🦀"]
        .iter()
        .map(|body| store.append_message(agent, body.as_bytes().to_vec()).wait().unwrap())
        .collect();
    assert_eq!(numbers, vec![0, 1, 2]);
    assert!(store.dismiss_message(agent, 2).wait().unwrap());
    assert!(!store.dismiss_message(agent, 2).wait().unwrap());
    assert!(!store.dismiss_message(agent, 99).wait().unwrap());
    assert_eq!(store.append_message(agent, b"four".to_vec()).wait().unwrap(), 3);
    // A settled request is rewritten in place; a missing one is not made.
    assert!(
        store
            .transact(move |tx| tx.replace_message(agent, 0, b"one, answered"))
            .wait()
            .unwrap()
    );
    assert!(
        !store
            .transact(move |tx| tx.replace_message(agent, 2, b"gone"))
            .wait()
            .unwrap()
    );
    // Another mailbox counts on its own.
    assert_eq!(store.append_message(fid(51), b"x".to_vec()).wait().unwrap(), 0);
    store.close().unwrap();

    let store = open(&dir);
    let snapshot = store.read().unwrap();
    assert_eq!(
        snapshot.list_messages(agent).unwrap(),
        vec![
            (0, b"one, answered".to_vec()),
            (1, "twö".as_bytes().to_vec()),
            (3, b"four".to_vec())
        ]
    );
    assert_eq!(snapshot.get_message(agent, 2).unwrap(), None);
    assert_eq!(snapshot.get_message(fid(99), 0).unwrap(), None);
    assert_eq!(snapshot.next_message_number(agent).unwrap(), 4);
    assert!(store.dismiss_message(agent, 3).wait().unwrap());
    drop(snapshot);
    store.close().unwrap();
    let store = open(&dir);
    assert_eq!(store.append_message(agent, b"five".to_vec()).wait().unwrap(), 4);
}

#[test]
fn blobs_round_trip_in_chunks_and_are_kept_once() {
    let temp = TempDir::new().unwrap();
    let dir = state_dir(&temp);
    let store = open(&dir);

    let small = "ünïcode blob ✓".as_bytes();
    let small_hash = store.store_blob(small).wait().unwrap();
    assert_eq!(small_hash, BlobHash::of(small));
    let empty_hash = store.store_blob(&[]).wait().unwrap();
    assert_eq!(empty_hash, BlobHash::of(&[]));

    // Two and a half chunks, written in odd-sized pieces.
    let large: Vec<u8> = (0..BLOB_CHUNK_LEN * 5 / 2).map(|index| (index % 251) as u8).collect();
    let mut writer = store.blob_writer();
    for piece in large.chunks(300_007) {
        writer.write_all(piece).unwrap();
    }
    assert_eq!(writer.len(), large.len() as u64);
    let large_hash = writer.finish_blocking().unwrap();
    assert_eq!(large_hash, BlobHash::of(&large));
    // Stored again: same hash.
    assert_eq!(store.store_blob(&large).wait().unwrap(), large_hash);
    store.close().unwrap();

    let store = open(&dir);
    let snapshot = store.read().unwrap();
    assert_eq!(snapshot.blob_len(large_hash).unwrap(), Some(large.len() as u64));
    assert_eq!(snapshot.blob_len(BlobHash::from_bytes([9; 32])).unwrap(), None);
    assert!(snapshot.open_blob(BlobHash::from_bytes([9; 32])).unwrap().is_none());
    let reader = snapshot.open_blob(small_hash).unwrap().unwrap();
    assert_eq!(reader.read_to_vec().unwrap(), small);
    let reader = snapshot.open_blob(empty_hash).unwrap().unwrap();
    assert!(reader.is_empty());
    assert_eq!(reader.read_to_vec().unwrap(), Vec::<u8>::new());

    let mut reader = snapshot.open_blob(large_hash).unwrap().unwrap();
    let mut chunk_lens = Vec::new();
    let mut read_back = Vec::new();
    while let Some(chunk) = reader.next_chunk().unwrap() {
        chunk_lens.push(chunk.len());
        read_back.extend_from_slice(&chunk);
    }
    assert_eq!(chunk_lens, vec![BLOB_CHUNK_LEN, BLOB_CHUNK_LEN, BLOB_CHUNK_LEN / 2]);
    assert!(read_back == large);
    let mut through_read = Vec::new();
    snapshot
        .open_blob(large_hash)
        .unwrap()
        .unwrap()
        .read_to_end(&mut through_read)
        .unwrap();
    assert!(through_read == large);

    assert!(store.transact(move |tx| tx.remove_blob(large_hash)).wait().unwrap());
    assert!(!store.read().unwrap().has_blob(large_hash).unwrap());
    // A reader opened before the removal still sees its snapshot.
    assert!(snapshot.open_blob(large_hash).unwrap().unwrap().read_to_vec().unwrap() == large);
}

#[test]
fn blobs_write_from_async_code() {
    let temp = TempDir::new().unwrap();
    let store = open(&state_dir(&temp));
    let bytes: Vec<u8> = (0..BLOB_CHUNK_LEN + 10).map(|index| (index % 7) as u8).collect();
    let hash = runtime().block_on(async {
        let mut writer = store.blob_writer();
        writer.write(&bytes[..100]).await.unwrap();
        writer.write(&bytes[100..]).await.unwrap();
        writer.finish().await.unwrap()
    });
    assert_eq!(hash, BlobHash::of(&bytes));
    let read = store
        .read()
        .unwrap()
        .open_blob(hash)
        .unwrap()
        .unwrap()
        .read_to_vec()
        .unwrap();
    assert!(read == bytes);
}

#[test]
fn known_peers() {
    let temp = TempDir::new().unwrap();
    let store = open(&state_dir(&temp));
    let peer: NodeId = "ab".repeat(32).parse().unwrap();
    let record = PeerRecord {
        addresses: vec![
            "/ip4/127.0.0.1/tcp/4001".into(),
            "/dns4/exämple.org/udp/4001/quic-v1".into(),
        ],
        last_seen_unix_ms: 1_700_000_000_000,
    };
    store.put_peer(peer, record.clone()).wait().unwrap();
    assert_eq!(store.read().unwrap().get_peer(peer).unwrap(), Some(record.clone()));

    store
        .transact(move |tx| tx.record_peer_seen(peer, 1_800_000_000_000))
        .wait()
        .unwrap();
    let seen = store.read().unwrap().get_peer(peer).unwrap().unwrap();
    assert_eq!(seen.addresses, record.addresses);
    assert_eq!(seen.last_seen_unix_ms, 1_800_000_000_000);

    // Seeing a node that is not known does not make it known.
    let other: NodeId = "cd".repeat(32).parse().unwrap();
    let known = store.transact(move |tx| tx.record_peer_seen(other, 5)).wait().unwrap();
    assert!(!known);
    let listed = store.read().unwrap().list_peers().unwrap();
    assert_eq!(listed.len(), 1);

    let too_many = PeerRecord {
        addresses: (0..17).map(|port| format!("/ip4/127.0.0.1/tcp/{port}")).collect(),
        last_seen_unix_ms: 0,
    };
    let error = store.put_peer(peer, too_many).wait().unwrap_err();
    assert!(error.to_string().contains("at most 16"), "{error}");

    let bad = PeerRecord {
        addresses: vec!["ip4/1.2.3.4".into()],
        last_seen_unix_ms: 0,
    };
    let error = store.put_peer(peer, bad).wait().unwrap_err();
    assert!(
        error.to_string().contains("invalid peer address \"ip4/1.2.3.4\""),
        "{error}"
    );
    assert!(store.transact(move |tx| tx.remove_peer(peer)).wait().unwrap());
    assert_eq!(store.read().unwrap().get_peer(peer).unwrap(), None);
    assert!("AB".repeat(32).parse::<NodeId>().is_err());
}

#[test]
fn kernel_tables() {
    let temp = TempDir::new().unwrap();
    let dir = state_dir(&temp);
    let store = open(&dir);
    let vat = VatId::new("v1").unwrap();
    let other_vat = VatId::new("v2").unwrap();

    let krefs = store
        .transact(|tx| {
            Ok(vec![
                tx.allocate_kref(KrefKind::Object)?,
                tx.allocate_kref(KrefKind::Object)?,
                tx.allocate_kref(KrefKind::Promise)?,
            ])
        })
        .wait()
        .unwrap();
    assert_eq!(
        krefs.iter().map(Kref::to_string).collect::<Vec<_>>(),
        ["ko1", "ko2", "kp1"]
    );

    let (vat_a, vat_b) = (vat.clone(), other_vat.clone());
    store
        .transact(move |tx| {
            tx.put_kref(Kref::object(1), "owner: v1 ✓".as_bytes())?;
            tx.put_kref(Kref::promise(1), b"decider")?;
            tx.add_clist_entry(&vat_a, Kref::object(1), &Vref::new("o+0")?)?;
            tx.add_clist_entry(&vat_a, Kref::promise(1), &Vref::new("p-1")?)?;
            tx.add_clist_entry(&vat_b, Kref::object(1), &Vref::new("o-5")?)?;
            tx.put_subcluster(&SubclusterId::new("s1")?, br#"{"bootstrap":"main"}"#)?;
            tx.put_vat_config(&vat_a, br#"{"sourceSpec":"./main.js"}"#)?;
            tx.put_vat_config(&vat_b, b"{}")?;
            tx.init_baggage(&vat_a, &BaggageKey::new("counter")?, &[1])?;
            tx.init_baggage(&vat_a, &BaggageKey::new("名前")?, "värde".as_bytes())?;
            tx.init_baggage(&vat_b, &BaggageKey::new("counter")?, &[9])?;
            tx.revoke(Kref::object(2))?;
            Ok(())
        })
        .wait()
        .unwrap();
    store.close().unwrap();

    let store = open(&dir);
    let snapshot = store.read().unwrap();
    assert_eq!(snapshot.next_kref_numbers().unwrap(), (3, 2));
    assert_eq!(
        snapshot.get_kref(Kref::object(1)).unwrap(),
        Some("owner: v1 ✓".as_bytes().to_vec())
    );
    assert_eq!(snapshot.get_kref(Kref::object(42)).unwrap(), None);
    assert_eq!(snapshot.list_krefs().unwrap().len(), 2);
    assert_eq!(
        snapshot.clist_vref(&vat, Kref::object(1)).unwrap(),
        Some(Vref::new("o+0").unwrap())
    );
    assert_eq!(
        snapshot.clist_kref(&other_vat, &Vref::new("o-5").unwrap()).unwrap(),
        Some(Kref::object(1))
    );
    assert_eq!(snapshot.clist_kref(&vat, &Vref::new("o-5").unwrap()).unwrap(), None);
    assert_eq!(
        snapshot.list_clist(&vat).unwrap(),
        vec![
            (Kref::object(1), Vref::new("o+0").unwrap()),
            (Kref::promise(1), Vref::new("p-1").unwrap())
        ]
    );
    assert_eq!(snapshot.list_subclusters().unwrap().len(), 1);
    assert_eq!(
        snapshot.get_subcluster(&SubclusterId::new("s9").unwrap()).unwrap(),
        None
    );
    assert_eq!(snapshot.list_vat_configs().unwrap().len(), 2);
    let baggage = snapshot.list_baggage(&vat).unwrap();
    assert_eq!(baggage.len(), 2);
    assert_eq!(baggage[1].0.as_str(), "名前");
    assert_eq!(baggage[1].1, "värde".as_bytes());
    assert!(snapshot.is_revoked(Kref::object(2)).unwrap());
    assert!(!snapshot.is_revoked(Kref::object(1)).unwrap());

    // Baggage init fails on an existing key, set on a missing one.
    let (vat_a, vat_b) = (vat.clone(), other_vat.clone());
    let error = store
        .transact(move |tx| tx.init_baggage(&vat_a, &BaggageKey::new("counter")?, &[2]))
        .wait()
        .unwrap_err();
    assert!(matches!(error, StoreError::BaggageKeyExists { .. }), "{error}");
    let vat_a = vat.clone();
    let error = store
        .transact(move |tx| tx.set_baggage(&vat_a, &BaggageKey::new("nope")?, &[2]))
        .wait()
        .unwrap_err();
    assert!(error.to_string().contains("has no key \"nope\""), "{error}");

    // Remapping a kref keeps both directions in agreement.
    let vat_a = vat.clone();
    store
        .transact(move |tx| {
            tx.add_clist_entry(&vat_a, Kref::object(1), &Vref::new("o+7")?)?;
            tx.set_baggage(&vat_a, &BaggageKey::new("counter")?, &[2])?;
            assert!(tx.revoke(Kref::object(3))?);
            assert!(!tx.revoke(Kref::object(3))?);
            Ok(())
        })
        .wait()
        .unwrap();
    let snapshot = store.read().unwrap();
    assert_eq!(snapshot.clist_kref(&vat, &Vref::new("o+0").unwrap()).unwrap(), None);
    assert_eq!(
        snapshot.clist_kref(&vat, &Vref::new("o+7").unwrap()).unwrap(),
        Some(Kref::object(1))
    );
    assert_eq!(
        snapshot
            .get_baggage(&vat, &BaggageKey::new("counter").unwrap())
            .unwrap(),
        Some(vec![2])
    );

    // Forgetting a vat drops its state and leaves the other vat's.
    let vat_a = vat.clone();
    store
        .transact(move |tx| {
            tx.forget_vat(&vat_a)?;
            assert_eq!(tx.remove_clist_entry(&vat_b, Kref::object(1))?, Some(Vref::new("o-5")?));
            Ok(())
        })
        .wait()
        .unwrap();
    let snapshot = store.read().unwrap();
    assert!(snapshot.list_baggage(&vat).unwrap().is_empty());
    assert!(snapshot.list_clist(&vat).unwrap().is_empty());
    assert!(snapshot.list_clist(&other_vat).unwrap().is_empty());
    assert_eq!(snapshot.get_vat_config(&vat).unwrap(), None);
    assert_eq!(snapshot.list_baggage(&other_vat).unwrap().len(), 1);
}

#[test]
fn followers_see_the_snapshot_then_each_change_once() {
    let temp = TempDir::new().unwrap();
    let store = open(&state_dir(&temp));
    store.write_name(fid(100), name("before"), fid(1)).wait().unwrap();
    store.append_message(fid(50), b"old".to_vec()).wait().unwrap();

    let mut names = store.follow_names(fid(100)).unwrap();
    let mut other_names = store.follow_names(fid(101)).unwrap();
    let mut messages = store.follow_messages(fid(50)).unwrap();
    assert_eq!(names.snapshot, vec![(name("before"), fid(1))]);
    assert_eq!(messages.snapshot, vec![(0, b"old".to_vec())]);

    store.write_name(fid(100), name("new"), fid(2)).wait().unwrap();
    store
        .move_name(fid(100), name("before"), fid(101), name("moved"))
        .wait()
        .unwrap();
    store.append_message(fid(50), b"fresh".to_vec()).wait().unwrap();
    store.dismiss_message(fid(50), 0).wait().unwrap();

    let first = names.next_blocking().unwrap();
    assert_eq!(
        first.kind,
        NameChangeKind::Added {
            name: name("new"),
            id: fid(2)
        }
    );
    let second = names.next_blocking().unwrap();
    assert_eq!(second.kind, NameChangeKind::Removed { name: name("before") });
    assert!(second.seq > first.seq);
    let arrived = other_names.next_blocking().unwrap();
    assert_eq!(
        arrived.kind,
        NameChangeKind::Added {
            name: name("moved"),
            id: fid(1)
        }
    );
    // The move was one commit.
    assert_eq!(arrived.seq, second.seq);

    runtime().block_on(async {
        let added = messages.next().await.unwrap();
        assert_eq!(
            added.kind,
            MessageEventKind::Added {
                number: 1,
                body: b"fresh".to_vec().into()
            }
        );
        let dismissed = messages.next().await.unwrap();
        assert_eq!(dismissed.kind, MessageEventKind::Dismissed { number: 0 });
    });
}

#[test]
fn many_writers_at_once_are_all_acknowledged() {
    let temp = TempDir::new().unwrap();
    let store = open(&state_dir(&temp));
    let threads: Vec<_> = (0..8u8)
        .map(|thread| {
            let store = store.clone();
            std::thread::spawn(move || {
                for index in 0..25 {
                    let text = format!("t{thread}-{index}");
                    store.write_name(fid(100), name(&text), fid(thread)).wait().unwrap();
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    // And from async code, without waiting on each write before the next.
    let commits: Vec<_> = (0..50)
        .map(|index| store.write_name(fid(101), name(&format!("a{index}")), fid(1)))
        .collect();
    runtime().block_on(async {
        for commit in commits {
            commit.await.unwrap();
        }
    });
    let snapshot = store.read().unwrap();
    assert_eq!(snapshot.list_names(fid(100)).unwrap().len(), 200);
    assert_eq!(snapshot.list_names(fid(101)).unwrap().len(), 50);
}

#[test]
fn a_follower_sees_every_change_of_many_writers_in_commit_order() {
    let temp = TempDir::new().unwrap();
    let store = open(&state_dir(&temp));
    let mut names = store.follow_names(fid(100)).unwrap();
    // Enough writers that groups queue up behind one another.
    let threads: Vec<_> = (0..16u8)
        .map(|thread| {
            let store = store.clone();
            std::thread::spawn(move || {
                for index in 0..50 {
                    let text = format!("t{thread}-{index}");
                    store.write_name(fid(100), name(&text), fid(thread)).wait().unwrap();
                }
            })
        })
        .collect();
    let mut seen = std::collections::BTreeSet::new();
    let mut last_seq = 0;
    while seen.len() < 16 * 50 {
        let change = names.next_blocking().unwrap();
        assert!(
            change.seq >= last_seq,
            "event of commit {} after one of commit {last_seq}",
            change.seq
        );
        last_seq = change.seq;
        let NameChangeKind::Added { name, .. } = change.kind else {
            panic!("only additions were made: {:?}", change.kind);
        };
        assert!(seen.insert(name.to_string()), "{name} seen twice");
    }
    for thread in threads {
        thread.join().unwrap();
    }
}

#[test]
fn a_second_open_fails_naming_the_state_directory() {
    let temp = TempDir::new().unwrap();
    let dir = state_dir(&temp);
    let store = open(&dir);
    let error = Store::open(&dir).err().unwrap();
    assert!(matches!(error, StoreError::Locked { .. }), "{error}");
    assert!(error.to_string().contains(dir.to_str().unwrap()), "{error}");

    // close() refuses while another handle is alive, then the store closes
    // when the last one goes.
    let clone = store.clone();
    assert!(matches!(store.close(), Err(StoreError::StillInUse)));
    drop(clone);
    open(&dir).close().unwrap();
}

#[test]
fn writes_queued_before_the_last_handle_drops_still_commit() {
    let temp = TempDir::new().unwrap();
    let dir = state_dir(&temp);
    let store = open(&dir);
    let commits: Vec<_> = (0..20)
        .map(|index| store.write_name(fid(100), name(&format!("n{index}")), fid(1)))
        .collect();
    drop(store);
    for commit in commits {
        commit.wait().unwrap();
    }
    assert_eq!(open(&dir).read().unwrap().list_names(fid(100)).unwrap().len(), 20);
}

#[test]
fn a_snapshot_keeps_the_file_open_after_the_last_handle() {
    let temp = TempDir::new().unwrap();
    let dir = state_dir(&temp);
    let store = open(&dir);
    store.write_name(fid(100), name("kept"), fid(1)).wait().unwrap();
    let snapshot = store.read().unwrap();
    drop(store);
    assert_eq!(snapshot.lookup_name(fid(100), &name("kept")).unwrap(), Some(fid(1)));
    assert!(matches!(Store::open(&dir), Err(StoreError::Locked { .. })));
    drop(snapshot);
    assert_eq!(
        open(&dir).read().unwrap().lookup_name(fid(100), &name("kept")).unwrap(),
        Some(fid(1))
    );
}

#[test]
fn ocap_url_tokens_are_random_durable_and_removed_with_their_kref() {
    let temp = TempDir::new().unwrap();
    let dir = state_dir(&temp);
    let store = open(&dir);
    let (first, second, other) = store
        .transact(|tx| {
            Ok((
                tx.issue_ocap_token(Kref::object(3))?,
                tx.issue_ocap_token(Kref::object(3))?,
                tx.issue_ocap_token(Kref::object(4))?,
            ))
        })
        .wait()
        .unwrap();
    assert_ne!(first, second, "each URL gets a token of its own");
    store.close().unwrap();

    let store = open(&dir);
    let snapshot = store.read().unwrap();
    assert_eq!(snapshot.ocap_token_kref(&first).unwrap(), Some(Kref::object(3)));
    assert_eq!(snapshot.ocap_token_kref(&other).unwrap(), Some(Kref::object(4)));
    assert_eq!(snapshot.ocap_token_kref(&[7; 32]).unwrap(), None);
    // Tokens are random, so the krefs come in no particular order.
    let mut named = snapshot.ocap_url_krefs().unwrap();
    named.sort();
    assert_eq!(named, vec![Kref::object(3), Kref::object(4)]);
    drop(snapshot);
    let removed = store
        .transact(|tx| tx.remove_ocap_tokens(Kref::object(3)))
        .wait()
        .unwrap();
    assert_eq!(removed, 2);
    let snapshot = store.read().unwrap();
    assert_eq!(snapshot.ocap_token_kref(&second).unwrap(), None);
    assert_eq!(snapshot.ocap_token_kref(&other).unwrap(), Some(Kref::object(4)));
    assert_eq!(snapshot.redeemed_url(Kref::object(9)).unwrap(), None);
    drop(snapshot);
    store
        .transact(|tx| tx.put_redeemed_url(Kref::object(9), "ocap:x@y"))
        .wait()
        .unwrap();
    let snapshot = store.read().unwrap();
    assert_eq!(
        snapshot.redeemed_url(Kref::object(9)).unwrap().as_deref(),
        Some("ocap:x@y")
    );
    assert_eq!(snapshot.redeemed_url_kref("ocap:x@y").unwrap(), Some(Kref::object(9)));
    assert_eq!(snapshot.redeemed_url_kref("ocap:x@z").unwrap(), None);
}

#[test]
fn a_store_stopped_from_writing_keeps_its_queued_writes_and_refuses_later_ones() {
    let temp = TempDir::new().unwrap();
    let dir = state_dir(&temp);
    let store = open(&dir);
    let held = store.clone();
    let commits: Vec<_> = (0..20)
        .map(|index| store.write_name(fid(100), name(&format!("n{index}")), fid(1)))
        .collect();
    store.stop_writing();
    for commit in commits {
        commit.wait().unwrap();
    }
    // The writer made a checkpoint and deleted the log, with a handle left.
    assert!(!dir.join(capstan_store::LOG_FILE_NAME).exists());
    let refused = held.write_name(fid(100), name("late"), fid(1)).wait();
    assert!(matches!(refused, Err(StoreError::WriterStopped)), "{refused:?}");
    assert_eq!(held.read().unwrap().list_names(fid(100)).unwrap().len(), 20);
    drop((store, held));
    assert_eq!(open(&dir).read().unwrap().list_names(fid(100)).unwrap().len(), 20);
}
