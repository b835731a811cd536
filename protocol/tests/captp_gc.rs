//! Distributed GC driven by the runtime: a runtime that simply lets go of
//! its references has the session find them ([`Session::drop_unheld`]),
//! drop them in batched `DropExports` with wire deltas, and both sides'
//! tables return to their baseline, counted by the sessions themselves.

#![allow(clippy::expect_used, clippy::unwrap_used, reason = "a test fails by panicking")]

mod captp_support;

use capstan_protocol::captp::{FrameDecoder, Message, Session};
use capstan_protocol::{Reference, Value};
use captp_support::*;

/// The four table sizes of a session.
fn counts(session: &Session) -> [usize; 4] {
    [
        session.export_count(),
        session.import_count(),
        session.question_count(),
        session.answer_count(),
    ]
}

/// A pair where the left side holds the right side's bootstrap object,
/// settled, with nothing else in flight.
fn bootstrapped() -> (TestPair, Value) {
    let mut pair = pair_with(None, Some(echo()));
    let bob = pair.left.session.bootstrap().unwrap();
    pair.run(10);
    let bob = pair.left.runtime.outcome_of(&bob).unwrap().clone().unwrap();
    pair.left.session.flush_deferred_drops();
    pair.run(10);
    pair.left.runtime.settled.clear();
    (pair, bob)
}

/// The left side sends `count` fresh objects of its own for the right
/// side's runtime to hold.
fn send_gifts(pair: &mut TestPair, bob: &Value, count: usize) -> Vec<Reference> {
    let gifts: Vec<Reference> = (0..count).map(|_| echo()).collect();
    for gift in &gifts {
        pair.left
            .session
            .send_only(bob, "hold", &[Value::Remotable(gift.clone())])
            .unwrap();
    }
    pair.run(10);
    gifts
}

/// The messages in `bytes`, as (name, positions) for drops.
fn drop_frames(bytes: &[u8]) -> Vec<(&'static str, usize)> {
    let mut decoder = FrameDecoder::new(usize::MAX);
    decoder.feed(bytes);
    let mut frames = Vec::new();
    while let Some(frame) = decoder.next_frame().unwrap() {
        match Message::decode(frame).unwrap() {
            Message::DropExports { positions, deltas } => {
                assert_eq!(positions.as_slice().len(), deltas.as_slice().len());
                frames.push(("DropExports", positions.as_slice().len()));
            }
            Message::DropAnswers { positions } => frames.push(("DropAnswers", positions.as_slice().len())),
            _ => frames.push(("other", 0)),
        }
    }
    frames
}

#[test]
fn tables_return_to_baseline_after_the_runtime_lets_go_of_everything() {
    let (mut pair, bob) = bootstrapped();
    let left_baseline = counts(&pair.left.session);
    let right_baseline = counts(&pair.right.session);
    assert_eq!(left_baseline, [0, 1, 0, 0], "left imports bob only");
    assert_eq!(right_baseline, [1, 0, 0, 0], "right exports bob only");

    let gifts = send_gifts(&mut pair, &bob, 2_000);
    assert_eq!(pair.right.session.import_count(), 2_000);
    assert_eq!(pair.left.session.export_count(), 2_000);
    assert_eq!(pair.right.session.drop_unheld(), 0, "the runtime holds every gift");

    pair.right.runtime.held.clear();
    assert_eq!(pair.right.session.drop_unheld(), 2_000);
    pair.run(10);
    assert_eq!(counts(&pair.left.session), left_baseline);
    assert_eq!(counts(&pair.right.session), right_baseline);
    assert!(gifts.iter().all(|gift| !pair.left.session.is_exported(gift)));
    assert!(gifts.iter().all(|gift| gift.holders() == 1), "the exporter let go too");
    assert!(pair.left.session.close_reason().is_none());
    assert!(pair.right.session.close_reason().is_none());
}

#[test]
fn drops_are_batched_in_one_frame() {
    let (mut pair, bob) = bootstrapped();
    send_gifts(&mut pair, &bob, 1_000);
    pair.right.runtime.held.clear();
    assert_eq!(pair.right.session.drop_unheld(), 1_000);

    let mut wire = Vec::new();
    pair.right.session.poll_transmit(&mut wire);
    assert_eq!(drop_frames(&wire), vec![("DropExports", 1_000)]);
    pair.left.session.handle_bytes(&wire);
    assert_eq!(pair.left.session.export_count(), 0);
    assert!(pair.left.session.close_reason().is_none());
}

#[test]
fn answer_drops_ride_with_the_next_output_or_go_when_asked_or_enough_gather() {
    let (mut pair, bob) = bootstrapped();
    let first = pair.left.session.send(&bob, "echo", &[Value::from(1)]).unwrap();
    pair.run(10);
    assert!(pair.left.runtime.outcome_of(&first).is_some());
    assert_eq!(pair.right.session.answer_count(), 1, "the drop waits");
    assert!(!pair.left.session.has_transmit(), "a drop alone does not make output");
    assert!(pair.left.session.has_deferred_drops());

    // The next call carries it.
    let second = pair.left.session.send(&bob, "echo", &[Value::from(2)]).unwrap();
    let mut wire = Vec::new();
    pair.left.session.poll_transmit(&mut wire);
    assert_eq!(drop_frames(&wire), vec![("other", 0), ("DropAnswers", 1)]);
    pair.right.session.handle_bytes(&wire);
    pair.run(10);
    assert!(pair.left.runtime.outcome_of(&second).is_some());
    assert_eq!(pair.right.session.answer_count(), 1, "the second answer's drop waits");

    // An idle runtime asks for it.
    pair.left.session.flush_deferred_drops();
    assert!(pair.left.session.has_transmit());
    pair.run(10);
    assert_eq!(pair.right.session.answer_count(), 0);
    assert!(!pair.left.session.has_deferred_drops());

    // Enough of them go on their own.
    let count = capstan_protocol::captp::DEFERRED_ANSWER_DROPS;
    let calls: Vec<Value> = (0..count)
        .map(|n| pair.left.session.send(&bob, "echo", &[Value::from(n as f64)]).unwrap())
        .collect();
    pair.run(10);
    assert!(calls.iter().all(|call| pair.left.runtime.outcome_of(call).is_some()));
    assert_eq!(
        pair.right.session.answer_count(),
        0,
        "{count} drops went without other output"
    );
}

#[test]
fn a_reference_still_held_is_not_dropped_and_keeps_working() {
    let (mut pair, bob) = bootstrapped();
    let gifts = send_gifts(&mut pair, &bob, 10);
    let kept = pair.right.runtime.held.remove(3);
    pair.right.runtime.held.clear();
    assert_eq!(pair.right.session.drop_unheld(), 9);
    pair.run(10);
    assert_eq!(pair.right.session.import_count(), 1);
    assert_eq!(pair.left.session.export_count(), 1);
    assert!(pair.left.session.is_exported(&gifts[3]));

    let echoed = pair.right.session.send(&kept, "echo", &[Value::from(42)]).unwrap();
    pair.run(10);
    let outcome = pair.right.runtime.outcome_of(&echoed).unwrap().clone();
    assert_eq!(outcome.unwrap().as_number(), Some(42.0));

    // Once the runtime lets go of the last one, it goes too.
    drop(kept);
    assert_eq!(pair.right.session.drop_unheld(), 1);
    pair.run(10);
    assert_eq!(pair.left.session.export_count(), 0);
}

#[test]
fn a_reference_resent_while_its_drop_is_in_flight_survives_and_works() {
    let (mut pair, bob) = bootstrapped();
    let gifts = send_gifts(&mut pair, &bob, 1);
    let gift = &gifts[0];
    pair.right.runtime.held.clear();

    // The drop and a re-send of the same object cross on the wire.
    assert_eq!(pair.right.session.drop_unheld(), 1);
    pair.left
        .session
        .send_only(&bob, "hold", &[Value::Remotable(gift.clone())])
        .unwrap();
    pair.cross();
    pair.run(10);
    assert!(pair.left.session.is_exported(gift), "the re-send keeps the export");
    assert_eq!(pair.right.session.import_count(), 1);
    let Some(presence) = pair.right.runtime.held.pop() else {
        panic!("bob holds the gift again");
    };
    let echoed = pair.right.session.send(&presence, "echo", &[Value::from(7)]).unwrap();
    pair.run(10);
    let outcome = pair.right.runtime.outcome_of(&echoed).unwrap().clone();
    assert_eq!(outcome.unwrap().as_number(), Some(7.0));

    pair.right.runtime.settled.clear();
    drop((presence, echoed));
    assert_eq!(pair.right.session.drop_unheld(), 1);
    pair.run(10);
    assert!(
        !pair.left.session.is_exported(gift),
        "freed once every send was acknowledged"
    );
    assert!(pair.left.session.close_reason().is_none());
    assert!(pair.right.session.close_reason().is_none());
}

#[test]
fn an_unheld_imported_promise_is_dropped_and_its_late_resolve_is_harmless() {
    let (mut pair, bob) = bootstrapped();
    let local_promise = Reference::new("Promise", ());
    pair.left
        .session
        .send_only(&bob, "hold", &[Value::Promise(local_promise.clone())])
        .unwrap();
    pair.run(10);
    assert_eq!(pair.left.runtime.watched.len(), 1, "the exporter watches its promise");
    let exports_with_promise = pair.left.session.export_count();
    pair.right.runtime.held.clear();
    assert_eq!(pair.right.session.drop_unheld(), 1);
    pair.run(10);
    assert_eq!(pair.left.session.export_count(), exports_with_promise - 1);
    assert!(!pair.left.session.is_exported(&local_promise));
    // The exporter settles it after all: ignored, the session stays up.
    pair.left
        .session
        .resolve_export(&local_promise, Ok(Value::from(1)))
        .unwrap();
    pair.run(10);
    assert!(pair.left.session.close_reason().is_none());
    assert!(pair.right.session.close_reason().is_none());
}

#[test]
fn a_scan_is_due_once_the_table_has_grown_enough() {
    let (mut pair, bob) = bootstrapped();
    assert!(!pair.right.session.is_gc_due());
    send_gifts(&mut pair, &bob, 100);
    assert!(!pair.right.session.is_gc_due(), "a small table is not worth a scan");
    send_gifts(&mut pair, &bob, 200);
    assert!(pair.right.session.is_gc_due());
    // Everything is still held: after the scan, the next one waits for
    // the table to double.
    assert_eq!(pair.right.session.drop_unheld(), 0);
    assert!(!pair.right.session.is_gc_due());
    send_gifts(&mut pair, &bob, 300);
    assert!(!pair.right.session.is_gc_due());
    send_gifts(&mut pair, &bob, 300);
    assert!(pair.right.session.is_gc_due());
}
