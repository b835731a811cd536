//! Distributed GC between two vats over a real byte stream: thousands of
//! transient references cross the connection and are let go; both
//! sessions' tables (counted by the sessions) come back to their baseline
//! within the runtime's bound, and a presence still held keeps working.

#![allow(clippy::expect_used, clippy::unwrap_used, reason = "a test fails by panicking")]

use std::time::Duration;

use capstan_node::runtime::{
    ConnectionHandle, E, Exo, ExoClass, GC_INTERVAL, SessionCounts, SessionKind, SessionOptions, Vat, connect_with,
    when,
};
use capstan_protocol::captp::Limits;
use capstan_protocol::guards::DefaultGuards;
use capstan_protocol::patterns::M;
use capstan_protocol::{Value, list};

const TRANSIENT: usize = 10_000;

fn counter_class() -> ExoClass<f64> {
    ExoClass::builder("Counter", |_| Ok(0.0f64))
        .interface(M::interface(
            "Counter",
            [("incr", M::call([]).returns(M::number()))],
            DefaultGuards::None,
        ))
        .method("incr", |cx, _| {
            *cx.state_mut() += 1.0;
            Ok(Value::Number(*cx.state()))
        })
        .build()
        .expect("valid class")
}

/// Bob's bootstrap: `make()` returns a fresh counter; `take(x)` ignores
/// `x` (so Bob holds nothing it was given).
fn factory() -> Value {
    let counters = counter_class();
    Exo::new("Factory")
        .interface(M::interface(
            "Factory",
            [
                ("make", M::call([]).returns(M::remotable())),
                ("take", M::call([M::any()]).returns(M::any())),
            ],
            DefaultGuards::None,
        ))
        .method("make", move |_, _| counters.make(Vec::new()))
        .method("take", |_, _| Ok(Value::Undefined))
        .make()
        .expect("factory")
}

/// A local object of Alice's to pass to Bob.
fn token() -> Value {
    Exo::new("Token")
        .interface(M::interface("Token", Vec::<(&str, Value)>::new(), DefaultGuards::None))
        .make()
        .expect("token")
}

struct Pair {
    alice: Vat,
    bob: Vat,
    to_bob: ConnectionHandle,
}

fn only_session(vat: &Vat) -> SessionCounts {
    let mut counts = vat.session_counts();
    assert_eq!(counts.len(), 1, "one connection per vat");
    counts.remove(0)
}

/// Waits until `done` holds, checking every 20 ms for at most `bound`;
/// returns how long it took, or `None`.
async fn within(bound: Duration, mut done: impl FnMut() -> bool) -> Option<Duration> {
    let start = tokio::time::Instant::now();
    loop {
        if done() {
            return Some(start.elapsed());
        }
        if start.elapsed() > bound {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn run_pair<F: std::future::Future + 'static>(body: impl FnOnce(Pair) -> F) -> F::Output {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async move {
        let (alice, bob) = (Vat::new(), Vat::new());
        let (alice_end, bob_end) = tokio::io::duplex(64 * 1024);
        let (alice_read, alice_write) = tokio::io::split(alice_end);
        let (bob_read, bob_write) = tokio::io::split(bob_end);
        let bootstrap = bob.enter(factory);
        let toward_alice = SessionOptions::new(Limits::default()).with_kind(SessionKind::Peer { node: "alice".into() });
        bob.enter(|| connect_with(&bob, bob_read, bob_write, Some(bootstrap), toward_alice));
        let toward_bob = SessionOptions::new(Limits::default()).with_kind(SessionKind::Peer { node: "bob".into() });
        let to_bob = alice.enter(|| connect_with(&alice, alice_read, alice_write, None, toward_bob));
        bob.spawn(bob.clone().drive());
        alice.spawn(alice.clone().drive());
        let pair = Pair {
            alice: alice.clone(),
            bob,
            to_bob,
        };
        alice.spawn(body(pair)).await.expect("test body")
    })
}

#[test]
fn presences_let_go_are_dropped_and_freed_by_the_exporter() {
    run_pair(|pair| async move {
        let factory = when(&pair.to_bob.bootstrap()).await.unwrap();
        let kept = when(&E(&factory).call("make", list![])).await.unwrap();
        assert_eq!(
            when(&E(&kept).call("incr", list![])).await.unwrap().as_number(),
            Some(1.0)
        );
        let alice_baseline = only_session(&pair.alice);
        let bob_baseline = only_session(&pair.bob);
        assert_eq!(alice_baseline.kind, Some(SessionKind::Peer { node: "bob".into() }));
        assert_eq!(
            (alice_baseline.imports, bob_baseline.exports),
            (2, 2),
            "factory and kept"
        );

        let mut most_imports = 0;
        for _ in 0..TRANSIENT / 1_000 {
            let made: Vec<Value> = (0..1_000).map(|_| E(&factory).call("make", list![])).collect();
            for (index, result) in made.iter().enumerate() {
                let counter = when(result).await.unwrap();
                if index % 100 == 0 {
                    assert_eq!(
                        when(&E(&counter).call("incr", list![])).await.unwrap().as_number(),
                        Some(1.0)
                    );
                }
            }
            most_imports = most_imports.max(only_session(&pair.alice).imports);
        }
        assert!(
            most_imports > 100,
            "the presences were imported ({most_imports} at most)"
        );

        let bound = GC_INTERVAL * 8;
        let took = within(bound, || {
            let (alice, bob) = (only_session(&pair.alice), only_session(&pair.bob));
            alice.imports == alice_baseline.imports && bob.exports == bob_baseline.exports
        })
        .await;
        assert!(
            took.is_some(),
            "tables back to baseline within {bound:?}: alice {:?}, bob {:?}",
            only_session(&pair.alice),
            only_session(&pair.bob)
        );
        assert_eq!(only_session(&pair.alice).questions, 0);
        assert_eq!(only_session(&pair.bob).answers, 0);

        // The presence still held survived every scan and still works.
        assert_eq!(
            when(&E(&kept).call("incr", list![])).await.unwrap().as_number(),
            Some(2.0)
        );
    });
}

#[test]
fn references_passed_to_an_idle_peer_that_ignores_them_are_dropped() {
    run_pair(|pair| async move {
        let factory = when(&pair.to_bob.bootstrap()).await.unwrap();
        let held_token = token();
        when(&E(&factory).call("take", list![held_token.clone()]))
            .await
            .unwrap();
        let alice_baseline = only_session(&pair.alice);
        let bob_baseline = only_session(&pair.bob);

        let taken: Vec<Value> = (0..TRANSIENT)
            .map(|_| E(&factory).call("take", list![token()]))
            .collect();
        for result in &taken {
            when(result).await.unwrap();
        }
        drop(taken);
        // Bob is idle now: only the timer can find what it let go.
        let bound = GC_INTERVAL * 8;
        let took = within(bound, || {
            let (alice, bob) = (only_session(&pair.alice), only_session(&pair.bob));
            bob.imports <= bob_baseline.imports && alice.exports <= alice_baseline.exports
        })
        .await;
        assert!(
            took.is_some(),
            "tables back to baseline within {bound:?}: alice {:?}, bob {:?}",
            only_session(&pair.alice),
            only_session(&pair.bob)
        );
        assert_eq!(only_session(&pair.bob).imports, 0, "bob held nothing");
        // Passing a token again makes a fresh import that works as before.
        when(&E(&factory).call("take", list![held_token])).await.unwrap();
    });
}
