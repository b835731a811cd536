//! `E`: sends to local objects run in later turns and in order; sends to
//! host references go to the host at once (pipelining) and settle when the
//! host settles them, and are the guest's own promises from then on;
//! objects keep their identity across the boundary.

mod support;

use capstan_js::{GuestError, Outcome};
use capstan_protocol::{Reference, Value};
use support::{eval, fulfilled, guest, rejected};

#[test]
fn a_counter_from_one_evaluation_works_in_another_through_the_host() {
    let (_host, mut guest) = guest();
    let counter = eval(
        &mut guest,
        "const Up = M.interface('UpCounter', { incr: M.call().optional(M.number()).returns(M.number()) }); \
         let count = 0; makeExo('UpCounter', Up, { incr(n = 1) { count += n; return count; } })",
    );
    let Value::Remotable(reference) = &counter else {
        panic!("{counter:?}")
    };
    assert_eq!(reference.interface(), "Alleged: UpCounter");
    let outcome = guest.evaluate("E(counter).incr(5)", &[("counter", counter.clone())]);
    assert_eq!(fulfilled(outcome).as_number(), Some(5.0));
    let outcome = guest.evaluate("E(counter).incr('foo')", &[("counter", counter.clone())]);
    assert_eq!(
        rejected(outcome),
        "In \"incr\" method of (UpCounter): arg 0?: string \"foo\" - Must be a number"
    );
    // The same reference comes back out for the same object.
    let outcome = guest.evaluate("counter", &[("counter", counter.clone())]);
    assert!(fulfilled(outcome).same_as(&counter));
}

#[test]
fn sends_never_run_in_the_senders_turn_and_keep_their_order() {
    let (_host, mut guest) = guest();
    let source = "
        const log = [];
        let flag = false;
        const target = Far('Target', { note(x) { log.push([x, flag]); return x; } });
        const p1 = E(target).note(1);
        const p2 = E(target).note(2);
        const p3 = E(Promise.resolve(target)).note(3);
        let later;
        const pending = new Promise(resolve => { later = resolve; });
        const p4 = E(pending).note(4);
        const p5 = E(target).note(5);
        flag = true;
        later(target);
        Promise.all([p1, p2, p3, p4, p5]).then(() => harden(log));
    ";
    let log = fulfilled(guest.evaluate(source, &[]));
    let rendered = capstan_protocol::quote::quote(&log);
    assert_eq!(rendered, "[[1,true],[2,true],[5,true],[3,true],[4,true]]");
}

#[test]
fn local_delivery_errors_are_endos() {
    let (_host, mut guest) = guest();
    assert_eq!(
        rejected(guest.evaluate("E(Far('Counter', { incr() {} })).nope()", &[])),
        "target has no method \"nope\", has [\"__getMethodNames__\",\"incr\"]"
    );
    assert_eq!(
        rejected(guest.evaluate("E(undefined).a()", &[])),
        "Cannot deliver \"a\" to target; typeof target is \"undefined\""
    );
    assert_eq!(
        fulfilled(guest.evaluate("E.get(harden({a: 1})).a", &[])).as_number(),
        Some(1.0)
    );
    assert_eq!(
        fulfilled(guest.evaluate("E.when(2, x => x * 3)", &[])).as_number(),
        Some(6.0)
    );
}

#[test]
fn an_eventual_proxy_takes_no_properties_and_still_sends_once_frozen() {
    let (_host, mut guest) = guest();
    // Methods named like a function's own properties, called through a
    // proxy that guest code froze.
    let source = "
        const o = Far('O', { name() { return 'n'; }, length() { return 3; } });
        const proxy = harden(E(o));
        const refused = [];
        try { E(o).x = 1; } catch (error) { refused.push('set'); }
        try { Object.defineProperty(E(o), 'x', { value: 1 }); } catch (error) { refused.push('define'); }
        Promise.all([proxy.name(), proxy.length(), E(o).name(), typeof E(o).then, Object.isFrozen(proxy), refused])
          .then(results => harden(results));
    ";
    let rendered = capstan_protocol::quote::quote(&fulfilled(guest.evaluate(source, &[])));
    assert_eq!(rendered, r#"["n",3,"n","undefined",true,["set","define"]]"#);
}

#[test]
fn sends_to_host_references_go_out_at_once_and_pipeline() {
    let (host, mut guest) = guest();
    let remote = Value::Remotable(Reference::new("Alleged: Remote", ()));
    let outcome = guest
        .evaluate(
            "const p = E(remote).first(1, harden({x: 2n})); E(p).second(); E.sendOnly(remote).third(); \
             E.get(remote).size; E(p).second()",
            &[("remote", remote.clone())],
        )
        .unwrap();
    let Outcome::Pending(pending) = outcome else {
        panic!("{outcome:?}")
    };
    let sends = host.sends.borrow();
    assert_eq!(sends.len(), 4);
    assert!(sends[0].target.same_as(&remote));
    assert_eq!(sends[0].method.as_deref(), Some("first"));
    assert_eq!(
        capstan_protocol::quote::quote(&Value::array(sends[0].args.clone())),
        "[1,{\"x\":\"[2n]\"}]"
    );
    // The second send targets the promise for the first: pipelined.
    let first_result = sends[0].result.clone().unwrap();
    assert!(sends[1].target.same_as(&Value::Promise(first_result.clone())));
    assert_eq!(sends[2].method.as_deref(), Some("third"));
    assert!(sends[2].result.is_none());
    assert_eq!(host.gets.borrow()[0].1, "size");
    let last = sends[3].result.clone().unwrap();
    drop(sends);

    // The completion is the host's own promise for the last send: the
    // outcome forwards to it rather than wrapping it.
    assert!(pending.same(&last));
    guest.settle(&first_result, Ok(Value::from(10))).unwrap();

    // A guest promise that waits on a host promise is exported, and the
    // engine tells the host when it settles.
    let outcome = guest
        .evaluate("E(remote).size().then(n => n + 1)", &[("remote", remote.clone())])
        .unwrap();
    let Outcome::Pending(pending) = outcome else {
        panic!("{outcome:?}")
    };
    assert!(guest.owns(&pending));
    let question = host.sends.borrow()[4].result.clone().unwrap();
    guest.settle(&question, Ok(Value::from(41))).unwrap();
    let settlement = host.settlement_of(&pending).expect("settled");
    assert_eq!(settlement.unwrap().as_number(), Some(42.0));
    // A rejection from the host arrives as the error it is.
    let outcome = guest
        .evaluate("E(remote).fail().catch(e => e.message)", &[("remote", remote.clone())])
        .unwrap();
    let Outcome::Pending(pending) = outcome else {
        panic!("{outcome:?}")
    };
    let question = host.sends.borrow()[5].result.clone().unwrap();
    let reason = Value::error(capstan_protocol::ErrorValue::type_error("nope"));
    guest.settle(&question, Err(reason)).unwrap();
    assert_eq!(host.settlement_of(&pending).unwrap().unwrap().as_str(), Some("nope"));
}

#[test]
fn an_evaluations_sends_answer_promises_of_its_own_realm() {
    // `await` and `Promise.all` take a promise of the evaluation's own
    // realm as it is; another realm's they would wrap, a promise and a job
    // each. Each evaluation runs in a fresh realm: the latest one's sends
    // get its promises, and an older one's promises still settle.
    let (host, mut guest) = guest();
    let remote = Value::Remotable(Reference::new("Alleged: Remote", ()));
    let first = guest
        .evaluate(
            "const p = E(remote).first(); harden([p instanceof Promise, Promise.resolve(p) === p, p, p.then(n => n + 1)])",
            &[("remote", remote.clone())],
        )
        .unwrap();
    let first = match first {
        Outcome::Settled(Ok(value)) => value,
        other => panic!("{other:?}"),
    };
    let items = first.as_array().expect("an array");
    assert_eq!(
        capstan_protocol::quote::quote(&Value::array(items[..2].to_vec())),
        "[true,true]"
    );
    let answer = host.sends.borrow()[0].result.clone().expect("a promise for the send");
    assert!(
        items[2].same_as(&Value::Promise(answer.clone())),
        "it passes as the host's own promise"
    );
    let Value::Promise(plus_one) = items[3].clone() else {
        panic!("{:?}", items[3])
    };

    let second = fulfilled(guest.evaluate(
        "const q = E(remote).second(); harden([q instanceof Promise, Promise.resolve(q) === q])",
        &[("remote", remote.clone())],
    ));
    assert_eq!(capstan_protocol::quote::quote(&second), "[true,true]");

    guest.settle(&answer, Ok(Value::from(1))).unwrap();
    let settled = host
        .settlement_of(&plus_one)
        .expect("the older evaluation's promise settles");
    assert_eq!(settled.unwrap().as_number(), Some(2.0));
}

#[test]
fn host_promises_and_presences_keep_their_identity() {
    let (_host, mut guest) = guest();
    let remote = Value::Remotable(Reference::new("Alleged: Remote", ()));
    let promise = Value::Promise(Reference::new("Promise", ()));
    let outcome = guest.evaluate(
        "[a === b, p === q, passStyleOf(a), passStyleOf(p), String(a), a, p]",
        &[
            ("a", remote.clone()),
            ("b", remote.clone()),
            ("p", promise.clone()),
            ("q", promise.clone()),
        ],
    );
    let value = fulfilled(outcome);
    let items = value.as_array().unwrap();
    assert_eq!(
        capstan_protocol::quote::quote(&Value::array(items[..5].to_vec())),
        "[true,true,\"remotable\",\"promise\",\"[[object Alleged: Remote]]\"]"
    );
    assert!(items[5].same_as(&remote));
    assert!(items[6].same_as(&promise));
}

#[test]
fn a_host_promise_once_settled_is_the_guests_own() {
    let (host, mut guest) = guest();
    let keeper = fulfilled(guest.evaluate(
        "const kept = []; harden(Far('Keeper', { \
           keep(p) { kept.push(p); }, \
           sendToIt() { E.sendOnly(kept[0]).ping(); }, \
           passIt(remote) { E.sendOnly(remote).take(kept[0]); } }))",
        &[],
    ));
    let Value::Remotable(keeper) = keeper else {
        panic!("{keeper:?}")
    };
    let promise = Reference::new("Promise", ());
    fulfilled(guest.deliver(&keeper, Some("keep"), &[Value::Promise(promise.clone())]));
    let presence = Value::Remotable(Reference::new("Alleged: Remote", ()));
    guest.settle(&promise, Ok(presence.clone())).unwrap();
    assert_eq!(promise.holders(), 1, "the host reference went with the settlement");

    // A send to it goes to what it settled to.
    fulfilled(guest.deliver(&keeper, Some("sendToIt"), &[]));
    let sends = host.sends.borrow();
    let sent = sends.last().expect("a send");
    assert!(sent.target.same_as(&presence), "{:?}", sent.target);
    assert_eq!(sent.method.as_deref(), Some("ping"));
    drop(sends);
    // Passed to the host, it is exported as a promise of the guest's.
    let remote = Value::Remotable(Reference::new("Alleged: Other", ()));
    fulfilled(guest.deliver(&keeper, Some("passIt"), &[remote]));
    let sends = host.sends.borrow();
    let Some(Value::Promise(passed)) = sends.last().and_then(|sent| sent.args.first()).cloned() else {
        panic!("a promise was passed")
    };
    assert!(guest.owns(&passed));
    assert!(!passed.same(&promise));
}

/// Settles the results of the two sends `AWAIT_ORDER` makes, one after the
/// other, and checks the order its log shows; `outcome` is what started it.
#[allow(clippy::unwrap_used, clippy::expect_used, reason = "a test helper fails its test")]
fn settle_both_and_check_the_order(
    host: &support::MockHost,
    guest: &mut capstan_js::GuestRuntime,
    outcome: Result<Outcome, GuestError>,
) {
    let Ok(Outcome::Pending(done)) = outcome else {
        panic!("{outcome:?}")
    };
    for _ in 0..2 {
        let result = host.sends.borrow().last().and_then(|sent| sent.result.clone());
        guest
            .settle(&result.expect("a send with a result"), Ok(Value::Undefined))
            .unwrap();
    }
    let log = host.settlement_of(&done).expect("it settled").unwrap();
    assert_eq!(capstan_protocol::quote::quote(&log), r#"["then","resumed","then+1"]"#);
}

// Reactions to a host promise run as jobs of the realm that made it, so
// an `await` that a settlement resumed takes the next host promise as it
// is: it resumes in the same job as a `then` on that promise, not two
// jobs later, as it would behind a promise of another realm wrapping it.
const AWAIT_ORDER: &str = "
    (async () => {
      await E(remote).first();
      const second = E(remote).second();
      second.then(() => { log.push('then'); Promise.resolve().then(() => log.push('then+1')); });
      await second;
      log.push('resumed');
    })()";

#[test]
fn an_await_resumed_by_a_settlement_takes_the_next_host_promise_unwrapped() {
    let (host, mut guest) = guest();
    let remote = Value::Remotable(Reference::new("Alleged: Remote", ()));
    let source = format!("const log = []; ({AWAIT_ORDER}).then(() => harden(log))");
    let outcome = guest.evaluate(&source, &[("remote", remote)]);
    settle_both_and_check_the_order(&host, &mut guest, outcome);
}

#[test]
fn in_a_vat_an_await_resumed_by_a_settlement_takes_the_next_host_promise_unwrapped() {
    let (host, mut guest) = guest();
    let source = format!(
        "export function buildRootObject() {{
           return makeDefaultExo('Root', {{ run(remote) {{ const log = []; return ({AWAIT_ORDER}).then(() => harden(log)); }} }});
         }}"
    );
    let store = Value::Remotable(Reference::new("Alleged: baggageStore", ()));
    let root = fulfilled(guest.build_vat(&source, &Value::Null, &[], &store, &Value::record::<&str>([])));
    let Value::Remotable(root) = root else {
        panic!("{root:?}")
    };
    let remote = Value::Remotable(Reference::new("Alleged: Remote", ()));
    let outcome = guest.deliver(&root, Some("run"), &[remote]);
    settle_both_and_check_the_order(&host, &mut guest, outcome);
}

/// Evaluates `source` with a presence `remote` endowed; it must wait on
/// what it sent. Its promise, and the results of its sends in order.
#[allow(clippy::unwrap_used, reason = "a test helper fails its test")]
fn pending_with_sends(
    host: &support::MockHost,
    guest: &mut capstan_js::GuestRuntime,
    source: &str,
) -> (Reference, Vec<Reference>) {
    let remote = Value::Remotable(Reference::new("Alleged: Remote", ()));
    let outcome = guest.evaluate(source, &[("remote", remote)]).unwrap();
    let Outcome::Pending(promise) = outcome else {
        panic!("{outcome:?}")
    };
    let results = host
        .sends
        .borrow_mut()
        .drain(..)
        .map(|sent| sent.result.unwrap())
        .collect();
    (promise, results)
}

#[test]
fn settlements_given_together_settle_in_order_and_run_every_reaction() {
    let (host, mut guest) = guest();
    let (all, results) = pending_with_sends(
        &host,
        &mut guest,
        "const seen = []; \
         const watch = (p, name) => p.then(v => { seen.push(`${name}=${v}`); }, e => { seen.push(`${name}!${e.message}`); }); \
         Promise.all([watch(E(remote).a(), 'a'), watch(E(remote).b(), 'b'), watch(E(remote).c(), 'c')]) \
           .then(() => seen.join(' '))",
    );
    assert_eq!(results.len(), 3);
    let stranger = Reference::new("Promise", ());
    guest
        .settle_all([
            (&results[1], Ok(Value::from(2))),
            // A promise the guest never saw is passed over.
            (&stranger, Ok(Value::from(0))),
            (&results[0], Ok(Value::from(1))),
            (
                &results[2],
                Err(Value::error(capstan_protocol::ErrorValue::type_error("no c"))),
            ),
        ])
        .unwrap();
    // One entry ran every reaction, in the order the promises settled.
    let settlement = host.settlement_of(&all).expect("settled in the same entry");
    assert_eq!(settlement.unwrap().as_str(), Some("b=2 a=1 c!no c"));
    for result in &results {
        assert_eq!(result.holders(), 1, "the host reference went with its settlement");
    }
}

#[test]
fn a_settlement_the_engine_cannot_take_fails_alone_in_its_batch() {
    // Room for QuickJS to reach its own stack bound converting the deep
    // value below (a test thread's 2 MiB would overflow first in debug).
    std::thread::Builder::new()
        .stack_size(64 << 20)
        .spawn(one_settlement_of_a_batch_fails)
        .unwrap()
        .join()
        .unwrap();
}

#[allow(clippy::unwrap_used, clippy::expect_used, reason = "a test fails by panicking")]
fn one_settlement_of_a_batch_fails() {
    let (host, mut guest) = guest();
    let (both, results) = pending_with_sends(
        &host,
        &mut guest,
        "E(remote).deep(); Promise.all([E(remote).a(), E(remote).b()]).then(values => values.join(' '))",
    );
    let mut deep = Value::from(0);
    for _ in 0..1_000 {
        deep = Value::array(vec![deep]);
    }
    let failed = guest
        .settle_all([
            (&results[1], Ok(Value::from("a"))),
            (&results[0], Ok(deep)),
            (&results[2], Ok(Value::from("b"))),
        ])
        .unwrap_err();
    assert!(matches!(failed, GuestError::Engine(_)), "{failed}");
    // The others settled, and their reactions ran.
    let settlement = host
        .settlement_of(&both)
        .expect("settled despite the failure beside it");
    assert_eq!(settlement.unwrap().as_str(), Some("a b"));
    // The failed one is still pending, and settles later.
    guest.settle(&results[0], Ok(Value::from(1))).unwrap();
    assert_eq!(results[0].holders(), 1, "the host reference went with its settlement");
    // The engine goes on.
    assert_eq!(fulfilled(guest.evaluate("1 + 1", &[])).as_number(), Some(2.0));
}

#[test]
fn deliver_runs_exo_methods_with_guards_and_async_results() {
    let (host, mut guest) = guest();
    let kit = eval(
        &mut guest,
        "const makeCounter = defineExoClass('Counter', \
           M.interface('Counter', { incr: M.call(M.number()).returns(M.number()), \
                                    later: M.callWhen(M.await(M.number())).returns(M.number()) }), \
           start => ({ count: start }), \
           { incr(n) { this.state.count += n; return this.state.count; }, \
             later(n) { return this.state.count + n; } }); \
         harden([makeCounter(10), makeCounter(100)])",
    );
    let items = kit.as_array().unwrap();
    let (Value::Remotable(first), Value::Remotable(second)) = (&items[0], &items[1]) else {
        panic!()
    };
    assert_eq!(
        fulfilled(guest.deliver(first, Some("incr"), &[Value::from(1)])).as_number(),
        Some(11.0)
    );
    assert_eq!(
        fulfilled(guest.deliver(second, Some("incr"), &[Value::from(1)])).as_number(),
        Some(101.0)
    );
    assert_eq!(
        rejected(guest.deliver(first, Some("incr"), &[])),
        "In \"incr\" method of (Counter): Expected at least 1 arguments: []"
    );
    // callWhen awaits its argument: a host promise keeps it pending.
    let argument = Reference::new("Promise", ());
    let outcome = guest
        .deliver(first, Some("later"), &[Value::Promise(argument.clone())])
        .unwrap();
    let Outcome::Pending(result) = outcome else {
        panic!("{outcome:?}")
    };
    guest.settle(&argument, Ok(Value::from(5))).unwrap();
    assert_eq!(host.settlement_of(&result).unwrap().unwrap().as_number(), Some(16.0));
    let names = fulfilled(guest.deliver(first, Some("__getMethodNames__"), &[]));
    assert_eq!(
        capstan_protocol::quote::quote(&names),
        "[\"__getInterfaceGuard__\",\"__getMethodNames__\",\"incr\",\"later\"]"
    );
    let guard = fulfilled(guest.deliver(first, Some("__getInterfaceGuard__"), &[]));
    assert_eq!(
        guard.as_tagged().map(|tagged| tagged.tag.to_string()).as_deref(),
        Some("guard:interfaceGuard")
    );
}

#[test]
fn kits_share_state_across_facets() {
    let (_host, mut guest) = guest();
    let value = eval(
        &mut guest,
        "const makeKit = defineExoClassKit('Counter', \
           { up: M.interface('Up', { incr: M.call().returns(M.number()) }), \
             reader: M.interface('Reader', { get: M.call().returns(M.number()) }) }, \
           () => ({ count: 0 }), \
           { up: { incr() { this.state.count += 1; return this.facets.reader.get(); } }, \
             reader: { get() { return this.state.count; } } }); \
         const { up, reader } = makeKit(); up.incr(); up.incr(); \
         harden([reader.get(), passStyleOf(up), String(up)])",
    );
    assert_eq!(
        capstan_protocol::quote::quote(&value),
        "[2,\"remotable\",\"[[object Alleged: Counter up]]\"]"
    );
}

#[test]
fn modules_export_make_and_named_entry_points() {
    let (_host, mut guest) = guest();
    let source = "export const make = powers => Far('Thing', { name() { return powers.name; } }); \
                  export const buildRootObject = (vatPowers, parameters) => parameters.greeting;";
    let thing = fulfilled(guest.make_module(source, capstan_protocol::record! { "name" => "ada" }));
    let Value::Remotable(thing) = thing else { panic!() };
    assert_eq!(
        fulfilled(guest.deliver(&thing, Some("name"), &[])).as_str(),
        Some("ada")
    );
    let outcome = guest.call_module_export(
        source,
        "buildRootObject",
        &[Value::Null, capstan_protocol::record! { "greeting" => "hi" }],
    );
    assert_eq!(fulfilled(outcome).as_str(), Some("hi"));
    let outcome = guest.make_module(
        "export const make = async () => { await null; return 7; };",
        Value::Null,
    );
    assert_eq!(fulfilled(outcome).as_number(), Some(7.0));
}
