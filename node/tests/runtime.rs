//! The eventual-send runtime: exos, guards, `E`, promises, turn order, and
//! two vats joined by CapTP over an in-memory stream: pipelining, an answer
//! that is a promise of the callee's, answer drops from an idle caller, and
//! a long turn's output reaching the transport before the turn ends.

#![allow(clippy::expect_used, clippy::unwrap_used, reason = "a test fails by panicking")]

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use capstan_node::runtime::{
    ConnectionHandle, E, Exo, ExoClass, ExoClassKit, GC_INTERVAL, Methods, Vat, connect, when,
};
use capstan_protocol::captp::Limits;
use capstan_protocol::guards::DefaultGuards;
use capstan_protocol::patterns::M;
use capstan_protocol::{ErrorValue, Value, list, record};

fn counter_class() -> ExoClass<f64> {
    ExoClass::builder("Counter", |args: Vec<Value>| {
        Ok(args.first().and_then(Value::as_number).unwrap_or(0.0))
    })
    .interface(M::interface(
        "Counter",
        [
            ("incr", M::call([]).optional([M::number()]).returns(M::number())),
            ("fail", M::call([]).returns(M::any())),
            ("link", M::call([]).returns(M::remotable())),
        ],
        DefaultGuards::None,
    ))
    .method("incr", |cx, args| {
        let step = args.first().and_then(Value::as_number).unwrap_or(1.0);
        *cx.state_mut() += step;
        Ok(Value::Number(*cx.state()))
    })
    .method("fail", |_cx, _args| Err(ErrorValue::new("RangeError", "counter broke")))
    .method("link", |_cx, _args| Ok(chain_link(0.0)))
    .build()
    .expect("valid class")
}

fn message_of(outcome: Result<Value, Value>) -> String {
    match outcome {
        Err(Value::Error(error)) => error.message.to_string(),
        other => panic!("expected an error, got {other:?}"),
    }
}

#[test]
fn calls_results_errors_and_guards_locally() {
    let vat = Vat::new();
    vat.run_until(async {
        let counter = counter_class().make(vec![Value::from(10)]).expect("made");
        assert_eq!(when(&E(&counter).call("incr", list![])).await.unwrap().as_number(), Some(11.0));
        assert_eq!(when(&E(&counter).call("incr", list![5])).await.unwrap().as_number(), Some(16.0));
        let failed = when(&E(&counter).call("fail", list![])).await;
        assert!(matches!(&failed, Err(Value::Error(e)) if &*e.name == "RangeError"));
        assert_eq!(message_of(failed), "counter broke");
        assert_eq!(
            message_of(when(&E(&counter).call("incr", list!["foo"])).await),
            "In \"incr\" method of (Counter): arg 0?: string \"foo\" - Must be a number"
        );
        assert_eq!(
            message_of(when(&E(&counter).call("decr", list![])).await),
            "target has no method \"decr\", has [\"__getInterfaceGuard__\",\"__getMethodNames__\",\"fail\",\"incr\",\"link\"]"
        );
        let names = when(&E(&counter).call("__getMethodNames__", list![])).await.unwrap();
        assert!(names.same_as(&list!["__getInterfaceGuard__", "__getMethodNames__", "fail", "incr", "link"]));
    });
}

#[test]
fn unguarded_methods_fail_at_definition() {
    let vat = Vat::new();
    vat.run_until(async {
        let error = Exo::new("greeter")
            .interface(M::interface(
                "greeter",
                Vec::<(&str, Value)>::new(),
                DefaultGuards::None,
            ))
            .method("sayHello", |_, _| Ok(Value::from("hi")))
            .make()
            .expect_err("definition fails");
        assert_eq!(&*error.message, "methods [\"sayHello\"] not guarded by \"greeter\"");
    });
}

#[test]
fn results_are_checked() {
    let vat = Vat::new();
    vat.run_until(async {
        let point = Exo::new("ExoPoint")
            .interface(M::interface(
                "ExoPoint",
                [("getX", M::call([]).returns(M::gte(Value::from(0))))],
                DefaultGuards::None,
            ))
            .method("getX", |_, _| Ok(Value::from(-3)))
            .make()
            .expect("made");
        assert_eq!(
            message_of(when(&E(&point).call("getX", list![])).await),
            "In \"getX\" method of (ExoPoint): result: -3 - Must be >= 0"
        );
    });
}

#[test]
fn sends_never_run_in_the_senders_turn_and_keep_order() {
    let vat = Vat::new();
    vat.run_until(async {
        let sent = Rc::new(Cell::new(false));
        let seen = Rc::new(RefCell::new(Vec::new()));
        let (flag, log) = (sent.clone(), seen.clone());
        let recorder = Exo::new("Recorder")
            .method("record", move |_, args| {
                assert!(flag.get(), "the method ran in the sender's turn");
                log.borrow_mut().push(args[0].as_number().unwrap_or(-1.0));
                Ok(Value::Undefined)
            })
            .make()
            .expect("made");
        let mut last = Value::Undefined;
        for index in 0..100 {
            last = E(&recorder).call("record", list![index]);
        }
        sent.set(true);
        when(&last).await.expect("recorded");
        assert_eq!(*seen.borrow(), (0..100).map(f64::from).collect::<Vec<_>>());
    });
}

#[test]
fn sends_to_an_unsettled_promise_queue_in_order() {
    let vat = Vat::new();
    vat.run_until(async {
        let class = counter_class();
        let maker = Exo::new("Maker")
            .method("make", move |_, _| class.make(vec![Value::from(0)]))
            .make()
            .expect("made");
        // Pipelined: the counter does not exist yet when these are sent.
        let counter = E(&maker).call("make", list![]);
        let results: Vec<Value> = (0..5).map(|_| E(&counter).call("incr", list![])).collect();
        for (index, result) in results.iter().enumerate() {
            assert_eq!(when(result).await.unwrap().as_number(), Some(index as f64 + 1.0));
        }
    });
}

#[test]
fn async_methods_can_await_other_sends() {
    let vat = Vat::new();
    vat.run_until(async {
        let counter = counter_class().make(vec![Value::from(1)]).expect("made");
        let target = counter.clone();
        let adder = Exo::new("Adder")
            .interface(M::interface(
                "Adder",
                [("addTo", M::call_when([M::await_(M::number())]).returns(M::number()))],
                DefaultGuards::None,
            ))
            .async_method("addTo", move |_, args| {
                let target = target.clone();
                async move {
                    let current = when(&E(&target).call("incr", list![0]))
                        .await
                        .map_err(|_| ErrorValue::plain("no"))?;
                    Ok(Value::Number(
                        current.as_number().unwrap_or(0.0) + args[0].as_number().unwrap_or(0.0),
                    ))
                }
            })
            .make()
            .expect("made");
        // The argument is a promise: callWhen awaits it before checking.
        let three = E(&counter).call("incr", list![2]);
        assert_eq!(
            when(&E(&adder).call("addTo", list![three])).await.unwrap().as_number(),
            Some(6.0)
        );
        let bad = E(&adder).call("addTo", list!["x"]);
        assert_eq!(
            message_of(when(&bad).await),
            "In \"addTo\" method of (Adder): arg 0: string \"x\" - Must be a number"
        );
    });
}

#[test]
fn kit_facets_share_state() {
    let vat = Vat::new();
    vat.run_until(async {
        let kit = ExoClassKit::builder("Counter", |_| Ok(0.0f64))
            .interfaces(record! {
                "up" => M::interface("Up", [("incr", M::call([]).returns(M::number()))], DefaultGuards::None),
                "down" => M::interface("Down", [("decr", M::call([]).returns(M::number()))], DefaultGuards::None),
            })
            .facet(
                "up",
                Methods::default().method("incr", |cx, _| {
                    *cx.state_mut() += 1.0;
                    Ok(Value::Number(*cx.state()))
                }),
            )
            .facet(
                "down",
                Methods::default().method("decr", |cx, _| {
                    *cx.state_mut() -= 1.0;
                    Ok(Value::Number(*cx.state()))
                }),
            )
            .build()
            .expect("valid kit");
        let facets = kit.make(vec![]).expect("made");
        let (up, down) = (&facets["up"], &facets["down"]);
        when(&E(up).call("incr", list![])).await.unwrap();
        when(&E(up).call("incr", list![])).await.unwrap();
        assert_eq!(
            when(&E(down).call("decr", list![])).await.unwrap().as_number(),
            Some(1.0)
        );
        assert_eq!(
            message_of(when(&E(up).call("incr", list![1])).await),
            "\"In \\\"incr\\\" method of (Counter up)\" accepts at most 0 arguments, not 1: [1]"
        );
    });
}

/// Two vats on one thread, joined by CapTP over an in-memory stream.
struct Pair {
    alice: Vat,
    bob: Vat,
    to_bob: ConnectionHandle,
    to_alice: ConnectionHandle,
}

fn pair(bob_bootstrap: impl FnOnce() -> Value, alice_bootstrap: impl FnOnce() -> Option<Value>) -> Pair {
    let (alice, bob) = (Vat::new(), Vat::new());
    let (alice_end, bob_end) = tokio::io::duplex(64 * 1024);
    let (alice_read, alice_write) = tokio::io::split(alice_end);
    let (bob_read, bob_write) = tokio::io::split(bob_end);
    let bootstrap = bob.enter(bob_bootstrap);
    let to_alice = bob.enter(|| connect(&bob, bob_read, bob_write, Some(bootstrap), Limits::default()));
    let alice_offer = alice.enter(alice_bootstrap);
    let to_bob = alice.enter(|| connect(&alice, alice_read, alice_write, alice_offer, Limits::default()));
    bob.spawn(bob.clone().drive());
    Pair {
        alice,
        bob,
        to_bob,
        to_alice,
    }
}

fn run_pair<F: std::future::Future + 'static>(body: impl FnOnce(Pair) -> F) -> F::Output {
    run_pair_with(|| counter_class().make(vec![Value::from(0)]).expect("counter"), body)
}

/// `run_pair` with a bootstrap object of the test's for bob.
fn run_pair_with<F: std::future::Future + 'static>(
    bob_bootstrap: impl FnOnce() -> Value + 'static,
    body: impl FnOnce(Pair) -> F,
) -> F::Output {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async move {
        let made = pair(bob_bootstrap, || None);
        let alice = made.alice.clone();
        alice.spawn(alice.clone().drive());
        // The body runs with alice as the current vat.
        alice.spawn(body(made)).await.expect("test body")
    })
}

#[test]
fn calls_results_and_errors_cross_a_connection() {
    run_pair(|pair| async move {
        let counter = pair.to_bob.bootstrap();
        assert_eq!(
            when(&E(&counter).call("incr", list![])).await.unwrap().as_number(),
            Some(1.0)
        );
        assert_eq!(
            when(&E(&counter).call("incr", list![2])).await.unwrap().as_number(),
            Some(3.0)
        );
        assert_eq!(
            message_of(when(&E(&counter).call("fail", list![])).await),
            "counter broke"
        );
        assert_eq!(
            message_of(when(&E(&counter).call("incr", list!["foo"])).await),
            "In \"incr\" method of (Counter): arg 0?: string \"foo\" - Must be a number"
        );
        // Sends to a resolved presence keep order too.
        let results: Vec<Value> = (0..20).map(|_| E(&counter).call("incr", list![])).collect();
        for (index, result) in results.iter().enumerate() {
            assert_eq!(when(result).await.unwrap().as_number(), Some(4.0 + index as f64));
        }
        let _ = (pair.alice, pair.bob, pair.to_alice);
    });
}

#[test]
fn a_chain_of_ten_pipelines_across_a_connection() {
    run_pair(|pair| async move {
        let bootstrap = pair.to_bob.bootstrap();
        // Every call depends on the one before: each link makes the next.
        let mut current = E(&bootstrap).call("link", list![]);
        for _ in 0..10 {
            current = E(&current).call("next", list![]);
        }
        let depth = when(&E(&current).call("depth", list![])).await.unwrap();
        assert_eq!(depth.as_number(), Some(10.0));
    });
}

fn chain_link(depth: f64) -> Value {
    Exo::new("Link")
        .method("next", move |_, _| Ok(chain_link(depth + 1.0)))
        .method("depth", move |_, _| Ok(Value::Number(depth)))
        .make()
        .expect("link")
}

#[test]
fn closing_a_connection_rejects_pending_calls() {
    run_pair(|pair| async move {
        let counter = pair.to_bob.bootstrap();
        when(&E(&counter).call("incr", list![])).await.unwrap();
        // A call that will never be answered: the chain waits on bob.
        let pending = E(&counter).call("incr", list![]);
        pair.to_bob.close("test over");
        let outcome = when(&pending).await;
        assert!(outcome.is_err(), "{outcome:?}");
        let after = when(&E(&counter).call("incr", list![])).await;
        assert!(message_of(after).contains("closed"));
        assert_eq!(pair.to_alice.closed().await, "test over");
    });
}

/// Bob's object whose `later()` answers with a promise of bob's own, which
/// `finish()` settles to a counter.
fn promiser(resolver: Rc<RefCell<Option<capstan_node::runtime::Resolver>>>) -> Value {
    let settle = Rc::clone(&resolver);
    Exo::new("Promiser")
        .method("later", move |_, _| {
            let vat = Vat::current().expect("in a vat");
            let (promise, settles) = vat.make_promise();
            *resolver.borrow_mut() = Some(settles);
            Ok(promise)
        })
        .method("finish", move |_, _| {
            let vat = Vat::current().expect("in a vat");
            let counter = counter_class().make(vec![Value::from(0)]).expect("counter");
            if let Some(settles) = settle.borrow_mut().take() {
                vat.settle(settles, Ok(counter));
            }
            Ok(Value::Undefined)
        })
        .method("sync", |_, _| Ok(Value::Undefined))
        .make()
        .expect("promiser")
}

#[test]
fn an_answer_that_is_a_promise_of_the_callees_is_returned_once_it_settles() {
    let resolver = Rc::new(RefCell::new(None));
    run_pair_with(
        move || promiser(resolver),
        |pair| async move {
            let root = pair.to_bob.bootstrap();
            let later = E(&root).call("later", list![]);
            let piped = E(&later).call("incr", list![5]);
            when(&E(&root).call("sync", list![])).await.unwrap();
            // Bob did not export his promise to alice: she is told nothing
            // until it settles.
            let bob_side = pair.bob.session_counts();
            assert_eq!(bob_side.len(), 1);
            assert_eq!(bob_side[0].exports, 1, "only bob's bootstrap object is exported");
            assert_eq!(pair.alice.session_counts()[0].questions, 2, "later and piped wait");

            when(&E(&root).call("finish", list![])).await.unwrap();
            let Ok(Value::Remotable(counter)) = when(&later).await else {
                panic!("later settles to bob's counter");
            };
            assert_eq!(counter.interface(), "Alleged: Counter");
            assert_eq!(when(&piped).await.unwrap().as_number(), Some(5.0));
            let _ = pair.to_alice;
        },
    );
}

#[test]
fn an_idle_caller_sends_its_answer_drops_on_the_gc_tick() {
    run_pair(|pair| async move {
        let counter = pair.to_bob.bootstrap();
        when(&E(&counter).call("incr", list![])).await.unwrap();
        // Alice sends nothing more: her drops of the bootstrap's and the
        // call's answers go on her connection's GC tick.
        let deadline = tokio::time::Instant::now() + GC_INTERVAL * 8;
        loop {
            let answers = pair.bob.session_counts()[0].answers;
            if answers == 0 {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "bob still holds {answers} answers"
            );
            tokio::time::sleep(GC_INTERVAL / 5).await;
        }
        let _ = (pair.alice, pair.to_alice);
    });
}

/// Bytes the reading end of `stream` holds now.
fn readable_now(stream: &mut tokio::io::DuplexStream) -> usize {
    use std::task::{Context, Poll, Waker};
    use tokio::io::{AsyncRead, ReadBuf};
    let mut cx = Context::from_waker(Waker::noop());
    let mut total = 0;
    loop {
        let mut buffer = [0u8; 4096];
        let mut read = ReadBuf::new(&mut buffer);
        match std::pin::Pin::new(&mut *stream).poll_read(&mut cx, &mut read) {
            Poll::Ready(Ok(())) if !read.filled().is_empty() => total += read.filled().len(),
            _ => return total,
        }
    }
}

#[test]
fn a_turn_that_sends_much_hands_its_output_over_before_it_ends() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async {
        let vat = Vat::new();
        let (ours, mut peer) = tokio::io::duplex(16 << 20);
        let (read, write) = tokio::io::split(ours);
        let handle = vat.enter(|| connect(&vat, read, write, None, Limits::default()));
        vat.spawn(vat.clone().drive());
        // The connection's tasks start.
        for _ in 0..4 {
            tokio::task::yield_now().await;
        }
        let (small, large) = vat.enter(|| {
            let target = handle.bootstrap();
            // A few sends stay in the session until the turn's batch ends.
            for index in 0..10 {
                drop(E(&target).call("note", list![index]));
            }
            let small = readable_now(&mut peer);
            // Thousands are handed over as they pile up.
            for index in 0..5_000 {
                drop(E(&target).call("note", list![index]));
            }
            (small, readable_now(&mut peer))
        });
        assert_eq!(small, 0, "a few sends wait for the end of the turn");
        assert!(large >= 64 * 1024, "only {large} bytes left during the turn");
    });
}
