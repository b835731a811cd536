//! The engine's share of distributed GC: a presence guest code let go is
//! collected by QuickJS and its host reference forgotten; one still held
//! keeps its identity; an export the host let go is forgotten; a pending
//! host promise is kept until it settles.

#![allow(clippy::expect_used, clippy::unwrap_used, reason = "a test fails by panicking")]

mod support;

use capstan_js::{Collected, GuestRuntime};
use capstan_protocol::{Reference, Value};
use support::{eval, fulfilled, guest};

const HOLDER: &str = "const held = []; \
    Far('Holder', { \
      take(x) { return typeof x; }, \
      keep(x) { held.push(x); }, \
      release() { held.length = 0; }, \
      isKept(x) { return held.includes(x); }, \
      make() { return Far('Made', {}); }, \
    })";

fn holder(guest: &mut GuestRuntime) -> Reference {
    match eval(guest, HOLDER) {
        Value::Remotable(reference) => reference,
        other => panic!("expected a remotable, got {other:?}"),
    }
}

fn thing() -> Reference {
    Reference::new("Alleged: Thing", ())
}

#[test]
fn presences_guest_code_let_go_are_forgotten() {
    let (_host, mut guest) = guest();
    let holder = holder(&mut guest);
    let things: Vec<Reference> = (0..1_000).map(|_| thing()).collect();
    for thing in &things {
        fulfilled(guest.deliver(&holder, Some("take"), &[Value::Remotable(thing.clone())]));
    }
    assert!(things.iter().all(|thing| thing.holders() > 1), "the engine holds each");
    let collected = guest.collect_garbage().unwrap();
    assert_eq!(collected.imports, 1_000);
    assert!(things.iter().all(|thing| thing.holders() == 1), "and then lets go");
    assert_eq!(guest.table_sizes().0, 0);
    assert_eq!(guest.collect_garbage().unwrap(), Collected::default());
}

#[test]
fn a_presence_still_held_keeps_its_identity_until_let_go() {
    let (_host, mut guest) = guest();
    let holder = holder(&mut guest);
    let kept = thing();
    fulfilled(guest.deliver(&holder, Some("keep"), &[Value::Remotable(kept.clone())]));
    for _ in 0..100 {
        fulfilled(guest.deliver(&holder, Some("take"), &[Value::Remotable(thing())]));
    }
    let collected = guest.collect_garbage().unwrap();
    assert_eq!(collected.imports, 100);
    assert!(kept.holders() > 1);
    let same = fulfilled(guest.deliver(&holder, Some("isKept"), &[Value::Remotable(kept.clone())]));
    assert!(
        matches!(same, Value::Boolean(true)),
        "one object per host reference while alive"
    );

    fulfilled(guest.deliver(&holder, Some("release"), &[]));
    assert_eq!(guest.collect_garbage().unwrap().imports, 1);
    assert_eq!(kept.holders(), 1);
    // Seen again: a new object, which works as before.
    fulfilled(guest.deliver(&holder, Some("keep"), &[Value::Remotable(kept.clone())]));
    let same = fulfilled(guest.deliver(&holder, Some("isKept"), &[Value::Remotable(kept.clone())]));
    assert!(matches!(same, Value::Boolean(true)));
}

#[test]
fn exports_the_host_let_go_are_forgotten() {
    let (_host, mut guest) = guest();
    let holder = holder(&mut guest);
    let (_, exports_before) = guest.table_sizes();
    let made: Vec<Value> = (0..50)
        .map(|_| fulfilled(guest.deliver(&holder, Some("make"), &[])))
        .collect();
    assert_eq!(guest.table_sizes().1, exports_before + 50);
    assert_eq!(guest.collect_garbage().unwrap().exports, 0, "the host holds them");
    let kept = made[7].clone();
    drop(made);
    assert_eq!(guest.collect_garbage().unwrap().exports, 49);
    assert_eq!(guest.table_sizes().1, exports_before + 1);
    // The one still held still works.
    let Value::Remotable(kept) = kept else { panic!() };
    fulfilled(guest.deliver(&kept, Some("__getMethodNames__"), &[]));
}

#[test]
fn a_pending_host_promise_is_kept_until_it_settles_and_let_go_then() {
    let (_host, mut guest) = guest();
    let holder = holder(&mut guest);
    let promise = Reference::new("Promise", ());
    fulfilled(guest.deliver(&holder, Some("take"), &[Value::Promise(promise.clone())]));
    assert_eq!(guest.collect_garbage().unwrap().imports, 0, "its resolvers hold it");
    assert!(promise.holders() > 1);
    let imports = guest.table_sizes().0;
    guest.settle(&promise, Ok(Value::from(1))).unwrap();
    // The guest still holds its promise (settled); the host reference goes
    // at once, with nothing left for a collection to find.
    assert_eq!(promise.holders(), 1);
    assert_eq!(guest.table_sizes().0, imports - 1);
    assert_eq!(guest.collect_garbage().unwrap().imports, 0);
}
