//! CapTP sessions joined in memory: calls, results and thrown errors both
//! ways; pipelining in one round trip; E-order through a disembargo; GC
//! with wire deltas; abort, and a peer's abort reason kept from callers.

mod captp_support;

use capstan_protocol::captp::pair::Direction;
use capstan_protocol::captp::{SendError, Session};
use capstan_protocol::{Reference, Value};
use captp_support::*;

fn number(outcome: Option<&Result<Value, Value>>) -> Option<f64> {
    outcome
        .and_then(|outcome| outcome.as_ref().ok())
        .and_then(Value::as_number)
}

#[test]
fn calls_results_and_errors_cross_both_ways() {
    let left_object = echo();
    let mut pair = pair_with(Some(left_object.clone()), Some(counter()));

    // Left calls right.
    let right_root = pair.left.session.bootstrap().unwrap();
    let sum = pair.left.session.send(&right_root, "incr", &[Value::from(5)]).unwrap();
    let sum2 = pair.left.session.send(&right_root, "incr", &[Value::from(2)]).unwrap();
    let missing = pair.left.session.send(&right_root, "nope", &[]).unwrap();
    // Right calls left.
    let left_root = pair.right.session.bootstrap().unwrap();
    let echoed = pair
        .right
        .session
        .send(&left_root, "echo", &[Value::from("hi")])
        .unwrap();
    let thrown = pair
        .right
        .session
        .send(&left_root, "fail", &[Value::from("no way")])
        .unwrap();
    pair.run(10);

    assert_eq!(number(pair.left.runtime.outcome_of(&sum)), Some(5.0));
    assert_eq!(number(pair.left.runtime.outcome_of(&sum2)), Some(7.0));
    let Some(Err(error)) = pair.left.runtime.outcome_of(&missing) else {
        panic!("a missing method rejects");
    };
    assert_eq!(error_message(error), "no method nope");
    assert_eq!(
        pair.right
            .runtime
            .outcome_of(&echoed)
            .and_then(|o| o.as_ref().ok())
            .and_then(Value::as_str),
        Some("hi")
    );
    let Some(Err(Value::Error(error))) = pair.right.runtime.outcome_of(&thrown) else {
        panic!("a throw rejects with an error value");
    };
    assert_eq!((&*error.name, &*error.message), ("TypeError", "no way"));
}

#[test]
fn references_keep_their_identity_across_a_round_trip() {
    let mut pair = pair_with(None, Some(echo()));
    let root = pair.left.session.bootstrap().unwrap();
    let mine = Reference::new("Alleged: Mine", ());
    let back = pair
        .left
        .session
        .send(&root, "echo", &[Value::Remotable(mine.clone())])
        .unwrap();
    let made = pair.left.session.send(&root, "make", &[]).unwrap();
    pair.run(10);
    let Some(Ok(Value::Remotable(returned))) = pair.left.runtime.outcome_of(&back) else {
        panic!("echo returns a remotable");
    };
    assert!(returned.same(&mine), "our own object comes back as itself");
    let Some(Ok(Value::Remotable(presence))) = pair.left.runtime.outcome_of(&made).cloned() else {
        panic!("make returns a presence");
    };
    assert_eq!(presence.interface(), "Alleged: Echo");
    // The presence works, and a second call returns the same presence.
    let again = pair
        .left
        .session
        .send(&Value::Remotable(presence.clone()), "me", &[])
        .unwrap();
    pair.run(10);
    let Some(Ok(Value::Remotable(same))) = pair.left.runtime.outcome_of(&again) else {
        panic!("me returns the presence");
    };
    assert!(same.same(&presence));
}

#[test]
fn a_chain_of_ten_dependent_calls_costs_one_round_trip() {
    let mut pair = pair_with(None, Some(echo()));
    let mut target = pair.left.session.bootstrap().unwrap();
    for _ in 0..9 {
        target = pair.left.session.send(&target, "me", &[]).unwrap();
    }
    let last = pair.left.session.send(&target, "echo", &[Value::from(42)]).unwrap();
    let flights = pair
        .run_until(100, |pair| pair.left.runtime.outcome_of(&last).is_some())
        .expect("the chain settles");
    assert_eq!(flights, 2, "one flight out and one back");
    let round_trips = flights / 2;
    assert_eq!(round_trips, 1);
    assert_eq!(number(pair.left.runtime.outcome_of(&last)), Some(42.0));

    // The same chain awaited call by call costs ten round trips.
    let mut sequential = pair_with(None, Some(echo()));
    let mut target = sequential.left.session.bootstrap().unwrap();
    sequential.run(10);
    let Some(Ok(root)) = sequential.left.runtime.outcome_of(&target).cloned() else {
        panic!("bootstrap settles");
    };
    target = root;
    sequential.reset_stats();
    for _ in 0..9 {
        let promise = sequential.left.session.send(&target, "me", &[]).unwrap();
        sequential
            .run_until(100, |pair| pair.left.runtime.outcome_of(&promise).is_some())
            .unwrap();
        target = sequential.left.runtime.outcome_of(&promise).unwrap().clone().unwrap();
    }
    let last = sequential
        .left
        .session
        .send(&target, "echo", &[Value::from(42)])
        .unwrap();
    sequential
        .run_until(100, |pair| pair.left.runtime.outcome_of(&last).is_some())
        .unwrap();
    assert!(sequential.stats().flights >= 20, "awaited calls cost a round trip each");
}

#[test]
fn e_order_holds_when_an_answer_settles_to_our_own_object() {
    let mut pair = pair_with(None, Some(echo()));
    let alice = logger();
    let bob = pair.left.session.bootstrap().unwrap();
    // bob.echo(alice) settles, at bob's side, to our own alice.
    let answer = pair
        .left
        .session
        .send(&bob, "echo", &[Value::Remotable(alice.clone())])
        .unwrap();
    let Value::Promise(answer_ref) = &answer else { panic!() };
    // Pipelined on the answer before it settles: goes through bob.
    pair.left
        .session
        .send_only(&answer, "log", &[Value::from("m1")])
        .unwrap();
    // When the answer is reported settled, the runtime calls alice
    // directly: that call must come after m1 and m1b.
    pair.left.runtime.direct_after_settle = Some((answer_ref.clone(), "m2".to_owned()));

    pair.flight(Direction::LeftToRight);
    pair.flight(Direction::RightToLeft);
    // The Return arrived together with m1 (forwarded back to us by bob);
    // the settlement is held until the disembargo round trip ends, and a
    // send made now still goes through bob, in order.
    assert_eq!(pair.left.runtime.log, vec!["m1"]);
    assert!(
        pair.left.runtime.outcome_of(&answer).is_none(),
        "settlement held by the embargo"
    );
    pair.left
        .session
        .send_only(&answer, "log", &[Value::from("m1b")])
        .unwrap();
    pair.run(10);
    assert_eq!(pair.left.runtime.log, vec!["m1", "m1b", "m2"]);
    let Some(Ok(Value::Remotable(settled))) = pair.left.runtime.outcome_of(&answer) else {
        panic!("the answer settles to alice");
    };
    assert!(settled.same(&alice));
    // Afterwards the promise is known to be local.
    assert!(matches!(
        pair.left.session.send(&answer, "log", &[]),
        Err(SendError::NotRemote { target: Value::Remotable(local) }) if local.same(&alice)
    ));
    assert_eq!(pair.left.session.question_count(), 0);
    pair.left.session.flush_deferred_drops();
    pair.run(10);
    assert_eq!(pair.right.session.answer_count(), 0, "answers dropped after use");
}

fn exported_position_count(session: &Session) -> usize {
    session.export_count()
}

#[test]
fn gc_frees_an_export_once_the_importer_drops_it() {
    let mut pair = pair_with(None, Some(echo()));
    let bob = pair.left.session.bootstrap().unwrap();
    let gift = echo();
    pair.left
        .session
        .send_only(&bob, "hold", &[Value::Remotable(gift.clone())])
        .unwrap();
    pair.left
        .session
        .send_only(&bob, "hold", &[Value::Remotable(gift.clone())])
        .unwrap();
    pair.run(10);
    assert!(pair.left.session.is_exported(&gift));
    assert_eq!(pair.right.session.import_count(), 1);
    let Some(Value::Remotable(presence)) = pair.right.runtime.held.first().cloned() else {
        panic!("bob holds the gift");
    };
    pair.right.runtime.held.clear();
    pair.right.session.drop_reference(&presence);
    pair.run(10);
    assert!(!pair.left.session.is_exported(&gift), "freed after a drop with delta 2");
    assert_eq!(exported_position_count(&pair.left.session), 0);
    assert_eq!(pair.right.session.import_count(), 0);
    assert!(pair.left.session.close_reason().is_none());
}

#[test]
fn gc_keeps_an_export_resent_while_a_drop_was_in_flight() {
    let mut pair = pair_with(None, Some(echo()));
    let bob = pair.left.session.bootstrap().unwrap();
    let gift = echo();
    pair.left
        .session
        .send_only(&bob, "hold", &[Value::Remotable(gift.clone())])
        .unwrap();
    pair.run(10);
    let Some(Value::Remotable(presence)) = pair.right.runtime.held.pop() else {
        panic!("bob holds the gift");
    };

    // Bob drops the gift while Alice sends it again: the two cross.
    pair.right.session.drop_reference(&presence);
    drop(presence);
    pair.left
        .session
        .send_only(&bob, "hold", &[Value::Remotable(gift.clone())])
        .unwrap();
    pair.cross();
    assert!(
        pair.left.session.is_exported(&gift),
        "the re-send keeps the export alive"
    );
    let Some(Value::Remotable(presence)) = pair.right.runtime.held.pop() else {
        panic!("bob holds the gift again");
    };
    assert_eq!(
        presence.interface(),
        "Alleged: Echo",
        "interface remembered across the drop"
    );

    // The revived presence still works.
    let echoed = pair
        .right
        .session
        .send(&Value::Remotable(presence.clone()), "echo", &[Value::from(7)])
        .unwrap();
    pair.run(10);
    assert_eq!(number(pair.right.runtime.outcome_of(&echoed)), Some(7.0));

    pair.right.session.drop_reference(&presence);
    pair.run(10);
    assert!(
        !pair.left.session.is_exported(&gift),
        "freed once every send was acknowledged"
    );
    assert!(pair.left.session.close_reason().is_none());
    assert!(pair.right.session.close_reason().is_none());
}

#[test]
fn abort_rejects_every_pending_call_on_both_sides() {
    let mut pair = pair_with(Some(echo()), Some(echo()));
    let right_root = pair.left.session.bootstrap().unwrap();
    let left_root = pair.right.session.bootstrap().unwrap();
    pair.run(10);
    let right_root = pair.left.runtime.outcome_of(&right_root).unwrap().clone().unwrap();
    let left_root = pair.right.runtime.outcome_of(&left_root).unwrap().clone().unwrap();
    let left_pending: Vec<Value> = (0..3)
        .map(|_| pair.left.session.send(&right_root, "hang", &[]).unwrap())
        .collect();
    let right_pending: Vec<Value> = (0..2)
        .map(|_| pair.right.session.send(&left_root, "hang", &[]).unwrap())
        .collect();
    pair.run(10);
    assert_eq!(pair.left.runtime.hanging.len(), 2);
    assert_eq!(pair.right.runtime.hanging.len(), 3);

    let reason = "node shutting down";
    pair.left.session.close(reason);
    // A call made after close fails at once.
    assert!(matches!(
        pair.left.session.send(&right_root, "echo", &[]),
        Err(SendError::Closed { .. })
    ));
    pair.run(10);
    for promise in &left_pending {
        let Some(Err(error)) = pair.left.runtime.outcome_of(promise) else {
            panic!("left's pending calls reject");
        };
        assert_eq!(error_message(error), reason);
    }
    for promise in &right_pending {
        let Some(Err(error)) = pair.right.runtime.outcome_of(promise) else {
            panic!("right's pending calls reject");
        };
        assert_eq!(error_message(error), reason);
    }
    assert_eq!(pair.left.runtime.aborted, Some((reason.to_owned(), false)));
    assert_eq!(pair.right.runtime.aborted, Some((reason.to_owned(), true)));
    // Late answers from the runtime are ignored.
    let late = pair.left.runtime.hanging[0];
    assert!(pair.left.session.answer(late, Ok(Value::Null)).is_ok());
}

#[test]
fn a_peers_abort_reason_can_be_replaced_for_callers_and_kept_for_the_log() {
    let mut pair = pair_with(Some(echo()), Some(echo()));
    pair.left.session.replace_peer_abort_reasons("the peer went away");
    let right_root = pair.left.session.bootstrap().unwrap();
    pair.run(10);
    let right_root = pair.left.runtime.outcome_of(&right_root).unwrap().clone().unwrap();
    let pending = pair.left.session.send(&right_root, "hang", &[]).unwrap();
    pair.run(10);

    let reason = "dial /ip4/10.0.0.1/tcp/1 to reach node 0123456789abcdef";
    pair.right.session.close(reason);
    pair.run(10);
    let Some(Err(error)) = pair.left.runtime.outcome_of(&pending) else {
        panic!("the pending call rejects");
    };
    assert_eq!(error_message(error), "the peer went away");
    let Err(SendError::Closed { reason: later }) = pair.left.session.send(&right_root, "echo", &[]) else {
        panic!("a call made after the abort fails");
    };
    assert_eq!(later, "the peer went away");
    assert_eq!(pair.left.session.close_reason(), Some("the peer went away"));
    assert_eq!(pair.left.runtime.aborted, Some((reason.to_owned(), true)));

    // The session's own reasons are not replaced.
    let mut pair = pair_with(Some(echo()), Some(echo()));
    pair.left.session.replace_peer_abort_reasons("the peer went away");
    pair.left.session.close("node shutting down");
    assert_eq!(pair.left.session.close_reason(), Some("node shutting down"));
}

#[test]
fn get_reads_a_field_of_a_pipelined_record() {
    let mut pair = pair_with(None, Some(echo()));
    let bob = pair.left.session.bootstrap().unwrap();
    let record = capstan_protocol::record! { "name" => "Ada", "age" => 36 };
    let echoed = pair.left.session.send(&bob, "echo", &[record]).unwrap();
    let name = pair.left.session.get(&echoed, "name").unwrap();
    let flights = pair
        .run_until(10, |pair| pair.left.runtime.outcome_of(&name).is_some())
        .unwrap();
    assert_eq!(flights, 2);
    assert_eq!(
        pair.left
            .runtime
            .outcome_of(&name)
            .and_then(|o| o.as_ref().ok())
            .and_then(Value::as_str),
        Some("Ada")
    );
}

#[test]
fn exported_promises_resolve_across_the_session() {
    let mut pair = pair_with(None, Some(echo()));
    let bob = pair.left.session.bootstrap().unwrap();
    let local_promise = Reference::new("Promise", ());
    let back = pair
        .left
        .session
        .send(&bob, "echo", &[Value::Promise(local_promise.clone())])
        .unwrap();
    pair.left
        .session
        .send_only(&bob, "hold", &[Value::Promise(local_promise.clone())])
        .unwrap();
    pair.run(10);
    assert_eq!(pair.left.runtime.watched.len(), 1, "the runtime is asked to watch it");
    let Some(Ok(Value::Promise(came_back))) = pair.left.runtime.outcome_of(&back) else {
        panic!("echo returns the promise");
    };
    assert!(came_back.same(&local_promise));
    let Some(Value::Promise(imported)) = pair.right.runtime.held.first().cloned() else {
        panic!("bob holds an imported promise");
    };
    pair.left
        .session
        .resolve_export(&local_promise, Ok(Value::from("done")))
        .unwrap();
    pair.run(10);
    let settled = pair.right.runtime.outcome_of(&Value::Promise(imported.clone()));
    assert_eq!(
        settled.and_then(|o| o.as_ref().ok()).and_then(Value::as_str),
        Some("done")
    );
    // The importer let go of the settled promise; the exporter freed it.
    assert!(!pair.left.session.is_exported(&local_promise));
    assert!(matches!(
        pair.right.session.send(&Value::Promise(imported), "x", &[]),
        Err(SendError::NotRemote {
            target: Value::String(_)
        })
    ));
}

#[test]
fn pipelined_calls_to_a_rejected_answer_reject_with_its_reason() {
    let mut pair = pair_with(None, Some(echo()));
    let bob = pair.left.session.bootstrap().unwrap();
    let failed = pair
        .left
        .session
        .send(&bob, "fail", &[Value::from("first failed")])
        .unwrap();
    let mut chained = failed.clone();
    for _ in 0..5 {
        chained = pair.left.session.send(&chained, "me", &[]).unwrap();
    }
    pair.run(10);
    let Some(Err(error)) = pair.left.runtime.outcome_of(&chained) else {
        panic!("the chain rejects");
    };
    assert_eq!(error_message(error), "first failed");
}

#[test]
fn a_pending_result_passed_back_as_an_argument_resolves_on_the_far_side() {
    let mut pair = pair_with(None, Some(echo()));
    let bob = pair.left.session.bootstrap().unwrap();
    // `made` is still pending at bob when it is passed back to him.
    let made = pair.left.session.send(&bob, "make", &[]).unwrap();
    let echoed = pair
        .left
        .session
        .send(&bob, "echo", std::slice::from_ref(&made))
        .unwrap();
    pair.run(20);
    let Some(Ok(Value::Remotable(presence))) = pair.left.runtime.outcome_of(&made).cloned() else {
        panic!("make settles to a presence");
    };
    // Bob saw our question as his own answer, and echoed a promise for it;
    // that promise settles, on our side, to the same presence.
    let Some(Ok(Value::Promise(echoed_promise))) = pair.left.runtime.outcome_of(&echoed).cloned() else {
        panic!("echo returns a promise");
    };
    let Some(Ok(Value::Remotable(resolved))) = pair.left.runtime.outcome_of(&Value::Promise(echoed_promise)) else {
        panic!("the echoed promise settles");
    };
    assert!(resolved.same(&presence));
    assert!(pair.left.session.close_reason().is_none());
    assert!(pair.right.session.close_reason().is_none());
    assert_eq!(pair.right.session.answer_count(), 0);
}

#[test]
fn an_answer_forwarded_to_a_promise_returns_once_with_the_final_outcome() {
    let mut pair = pair_with(None, Some(echo()));
    let bob = pair.left.session.bootstrap().unwrap();
    let waiting = pair.left.session.send(&bob, "hang", &[]).unwrap();
    let early = pair.left.session.send(&waiting, "echo", &[Value::from(1)]).unwrap();
    pair.run(10);
    let answer = pair.right.runtime.hanging.pop().expect("bob holds the hanging call");
    assert_eq!(pair.right.runtime.delivered, 1, "hang; echo waits on the answer");

    // Bob's runtime answers with a promise of its own that it will settle
    // later: the call queued on the answer goes to that promise, and the
    // asker is told nothing yet.
    let later = Value::Promise(Reference::new("Promise", ()));
    pair.right.session.forward_answer(answer, later.clone()).unwrap();
    pair.right.run_events();
    assert_eq!(pair.right.runtime.delivered, 2, "the queued call reached the promise");
    // A call pipelined after the forwarding follows it too.
    let _late = pair.left.session.send(&waiting, "echo", &[Value::from(2)]).unwrap();
    pair.run(10);
    assert_eq!(pair.right.runtime.delivered, 3);
    assert!(
        pair.left.runtime.outcome_of(&waiting).is_none(),
        "the asker is told nothing of the forwarding"
    );
    assert!(
        pair.left.runtime.outcome_of(&early).is_some(),
        "the routed call was answered"
    );

    // Settling it later sends one Return with the final value.
    pair.reset_stats();
    pair.right.session.answer(answer, Ok(Value::from(42))).unwrap();
    pair.run(10);
    assert_eq!(number(pair.left.runtime.outcome_of(&waiting)), Some(42.0));
    assert!(
        pair.left
            .runtime
            .settled
            .iter()
            .all(|(_, outcome)| !matches!(outcome, Ok(Value::Promise(_)))),
        "the asker never sees the intermediate promise"
    );
}
