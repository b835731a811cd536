//! Vat programs: `GuestRuntime::build_vat`, the baggage a vat sees and
//! the writes it sends to its store, `makeDefaultExo`, and the synthetic
//! modules vat code imports.

mod support;

use capstan_js::{GuestRuntime, Outcome};
use capstan_protocol::{Reference, Value};
use support::{fulfilled, guest, rejected};

/// Asserts two passables are the same (`Value::same_as`).
macro_rules! assert_same {
    ($actual:expr, $expected:expr) => {{
        let (actual, expected): (Value, Value) = ($actual, $expected);
        assert!(actual.same_as(&expected), "{actual:?} is not {expected:?}");
    }};
}

/// Asserts the store received exactly `expected` writes, in order.
fn assert_writes(actual: &[(String, Vec<Value>)], expected: &[(&str, Vec<Value>)]) {
    assert_eq!(actual.len(), expected.len(), "{actual:?}");
    for ((method, args), (expected_method, expected_args)) in actual.iter().zip(expected) {
        assert_eq!(method, expected_method);
        assert_same!(Value::array(args.clone()), Value::array(expected_args.clone()));
    }
}

fn store() -> (Reference, Value) {
    let reference = Reference::new("Alleged: baggageStore", ());
    (reference.clone(), Value::Remotable(reference))
}

fn powers() -> Value {
    Value::record([("name", Value::from("powers"))])
}

fn build(guest: &mut GuestRuntime, source: &str, entries: &[(String, Value)], store: &Value) -> Reference {
    match fulfilled(guest.build_vat(source, &Value::Null, entries, store, &powers())) {
        Value::Remotable(root) => root,
        other => panic!("expected a remotable root, got {other:?}"),
    }
}

fn build_rejected(guest: &mut GuestRuntime, source: &str) -> String {
    let (_, store) = store();
    rejected(guest.build_vat(source, &Value::Null, &[], &store, &powers()))
}

fn call(guest: &mut GuestRuntime, target: &Reference, method: &str, args: &[Value]) -> Value {
    fulfilled(guest.deliver(target, Some(method), args))
}

const COUNTER: &str = r#"
    export function buildRootObject(vatPowers, parameters, baggage) {
      if (!baggage.has('count')) {
        baggage.init('count', 0);
      }
      return makeDefaultExo('root', {
        increment() {
          const count = baggage.get('count') + 1;
          baggage.set('count', count);
          return count;
        },
        forget(key) {
          baggage.delete(key);
        },
        keys() {
          return baggage.keys();
        },
      });
    }
"#;

/// The sends to the store so far, as `(method, args)`; each is checked
/// to be send-only and addressed to `store`.
fn store_writes(host: &support::MockHost, store: &Reference) -> Vec<(String, Vec<Value>)> {
    host.sends
        .borrow()
        .iter()
        .map(|sent| {
            let Value::Remotable(target) = &sent.target else {
                panic!("a send to {:?}", sent.target)
            };
            assert!(target.same(store), "a send to another target");
            assert!(sent.result.is_none(), "baggage writes are send-only");
            (sent.method.clone().unwrap_or_default(), sent.args.clone())
        })
        .collect()
}

#[test]
fn a_counter_vat_keeps_its_count_in_baggage_and_tells_the_store() {
    let (host, mut guest) = guest();
    let (store_ref, store) = store();
    let root = build(&mut guest, COUNTER, &[], &store);
    assert_eq!(call(&mut guest, &root, "increment", &[]).as_number(), Some(1.0));
    assert_eq!(call(&mut guest, &root, "increment", &[]).as_number(), Some(2.0));
    assert_writes(
        &store_writes(&host, &store_ref),
        &[
            ("init", vec![Value::from("count"), Value::from(0)]),
            ("set", vec![Value::from("count"), Value::from(1)]),
            ("set", vec![Value::from("count"), Value::from(2)]),
        ],
    );
    call(&mut guest, &root, "forget", &[Value::from("count")]);
    let writes = store_writes(&host, &store_ref);
    assert_writes(&writes[3..], &[("delete", vec![Value::from("count")])]);
    assert_same!(call(&mut guest, &root, "keys", &[]), Value::array([]));

    // Resuscitated with what the store kept: no init, the count goes on.
    host.sends.borrow_mut().clear();
    let root = build(&mut guest, COUNTER, &[("count".to_string(), Value::from(2))], &store);
    assert!(store_writes(&host, &store_ref).is_empty());
    assert_eq!(call(&mut guest, &root, "increment", &[]).as_number(), Some(3.0));
    assert_writes(
        &store_writes(&host, &store_ref),
        &[("set", vec![Value::from("count"), Value::from(3)])],
    );
}

#[test]
fn build_root_object_gets_its_powers_parameters_and_initial_entries() {
    let (host, mut guest) = guest();
    let (_, store) = store();
    let service = Reference::new("Alleged: service", ());
    let source = r#"
        import { E } from '@endo/eventual-send';
        import { makeDefaultExo } from '@metamask/kernel-utils/exo';
        import { Far } from '@endo/far';
        import { M } from '@endo/patterns';
        import { makeExo } from '@endo/exo';

        export function buildRootObject(vatPowers, parameters, baggage) {
          const seen = harden({
            powers: vatPowers.name,
            name: parameters.name,
            keys: baggage.keys(),
            greeting: baggage.get('greeting'),
            kinds: [typeof Far, typeof M.any, typeof makeExo],
          });
          return makeDefaultExo('root', {
            seen() {
              return seen;
            },
            callService() {
              return E(baggage.get('service')).hello('world');
            },
          });
        }
    "#;
    let entries = [
        ("service".to_string(), Value::Remotable(service.clone())),
        ("greeting".to_string(), Value::from("hi")),
        ("a".to_string(), Value::from(1)),
    ];
    let parameters = Value::record([("name", Value::from("x"))]);
    let root = match fulfilled(guest.build_vat(source, &parameters, &entries, &store, &powers())) {
        Value::Remotable(root) => root,
        other => panic!("{other:?}"),
    };
    let seen = call(&mut guest, &root, "seen", &[]);
    let expected = Value::record([
        ("powers", Value::from("powers")),
        ("name", Value::from("x")),
        (
            "keys",
            Value::array([Value::from("a"), Value::from("greeting"), Value::from("service")]),
        ),
        ("greeting", Value::from("hi")),
        (
            "kinds",
            Value::array([
                Value::from("function"),
                Value::from("function"),
                Value::from("function"),
            ]),
        ),
    ]);
    assert_same!(seen, expected);
    // A reference from the initial entries is the host's own reference.
    let outcome = guest.deliver(&root, Some("callService"), &[]).expect("delivers");
    assert!(matches!(outcome, Outcome::Pending(_)), "{outcome:?}");
    let sends = host.sends.borrow();
    let sent = sends.last().expect("a send to the service");
    assert!(matches!(&sent.target, Value::Remotable(target) if target.same(&service)));
    assert_eq!(sent.method.as_deref(), Some("hello"));
    assert_same!(Value::array(sent.args.clone()), Value::array([Value::from("world")]));
}

#[test]
fn baggage_errors_are_worded_as_endo_map_stores() {
    let (host, mut guest) = guest();
    let (store_ref, store) = store();
    let source = r#"
        const attempt = thunk => {
          try {
            thunk();
            return 'ok';
          } catch (error) {
            return `${error.name}: ${error.message}`;
          }
        };
        export function buildRootObject(vatPowers, parameters, baggage) {
          const results = harden([
            attempt(() => baggage.init('k', 1)),
            attempt(() => baggage.init('k', 2)),
            attempt(() => baggage.get('missing')),
            attempt(() => baggage.set('missing', 1)),
            attempt(() => baggage.delete('missing')),
            attempt(() => baggage.init(1, 1)),
            attempt(() => baggage.get(Symbol.iterator)),
            attempt(() => baggage.has(null)),
            attempt(() => baggage.init('f', () => {})),
            attempt(() => baggage.set('k', new Map())),
            String(baggage.has('f')),
            String(baggage.get('k')),
            attempt(() => { baggage.k = 1; }),
            attempt(() => { baggage.get = () => 1; }),
            attempt(() => baggage.init('p', Promise.resolve(1))),
            attempt(() => baggage.init('q', harden({ inner: [Promise.resolve(1)] }))),
          ]);
          return makeDefaultExo('root', { results: () => results });
        }
    "#;
    let root = build(&mut guest, source, &[], &store);
    let results = call(&mut guest, &root, "results", &[]);
    let results: Vec<String> = results
        .as_array()
        .expect("an array")
        .iter()
        .map(|result| result.as_str().expect("a string").to_string())
        .collect();
    assert_eq!(results[0], "ok");
    assert_eq!(
        results[1],
        "Error: key \"k\" already registered in collection \"baggage\""
    );
    assert_eq!(results[2], "Error: key \"missing\" not found in collection \"baggage\"");
    assert_eq!(results[3], "Error: key \"missing\" not found in collection \"baggage\"");
    assert_eq!(results[4], "Error: key \"missing\" not found in collection \"baggage\"");
    assert_eq!(
        results[5],
        "TypeError: keys of collection \"baggage\" must be strings, not 1"
    );
    assert!(results[6].starts_with("TypeError: keys of collection \"baggage\" must be strings"));
    assert!(results[7].starts_with("TypeError: keys of collection \"baggage\" must be strings"));
    assert!(
        results[8].starts_with("Error: Remotables must be explicitly declared"),
        "{}",
        results[8]
    );
    assert!(
        results[9].starts_with("Error: \"[Symbol(passStyle)]\" property expected"),
        "{}",
        results[9]
    );
    assert_eq!(results[10], "false");
    assert_eq!(results[11], "1");
    assert!(results[12].starts_with("TypeError"), "{}", results[12]);
    assert!(results[13].starts_with("TypeError"), "{}", results[13]);
    let no_promise = "TypeError: a value in collection \"baggage\" must not hold a promise";
    assert_eq!(results[14], no_promise);
    assert_eq!(results[15], no_promise);
    // Only the one successful write reached the store.
    assert_writes(
        &store_writes(&host, &store_ref),
        &[("init", vec![Value::from("k"), Value::from(1)])],
    );
}

#[test]
fn baggage_values_are_hardened_and_references_go_to_the_store() {
    let (host, mut guest) = guest();
    let (store_ref, store) = store();
    let source = r#"
        export function buildRootObject(vatPowers, parameters, baggage) {
          const thing = makeDefaultExo('thing', { ping: () => 'pong' });
          const record = { thing, list: [1, 2] };
          baggage.init('record', record);
          const frozen = Object.isFrozen(record) && Object.isFrozen(record.list);
          return makeDefaultExo('root', {
            frozen: () => frozen,
            thing: () => thing,
          });
        }
    "#;
    let root = build(&mut guest, source, &[], &store);
    assert_same!(call(&mut guest, &root, "frozen", &[]), Value::from(true));
    let Value::Remotable(thing) = call(&mut guest, &root, "thing", &[]) else {
        panic!("the thing is a remotable")
    };
    let writes = store_writes(&host, &store_ref);
    assert_eq!(writes.len(), 1);
    let (method, args) = &writes[0];
    assert_eq!(method, "init");
    let record = args[1].as_record().expect("a record");
    assert!(matches!(record.get("thing"), Some(Value::Remotable(sent)) if sent.same(&thing)));
}

#[test]
fn a_failing_build_root_object_says_so() {
    let (_host, mut guest) = guest();
    assert_eq!(
        build_rejected(
            &mut guest,
            "export function buildRootObject() { throw TypeError('no can do'); }"
        ),
        "buildRootObject failed: no can do"
    );
    assert_eq!(
        build_rejected(
            &mut guest,
            "export async function buildRootObject() { await null; throw Error('later'); }"
        ),
        "buildRootObject failed: later"
    );
    assert_eq!(
        build_rejected(&mut guest, "export function buildRootObject() { throw 'a string'; }"),
        "buildRootObject failed: \"a string\""
    );
    assert_eq!(
        build_rejected(&mut guest, "export const somethingElse = 1;"),
        "buildRootObject failed: the vat program does not export buildRootObject"
    );
    assert_eq!(
        build_rejected(&mut guest, "throw Error('at load');"),
        "buildRootObject failed: at load"
    );
    let syntax = build_rejected(&mut guest, "export function buildRootObject( {");
    assert!(syntax.starts_with("buildRootObject failed: "), "{syntax}");
    let import = build_rejected(
        &mut guest,
        "import fs from 'fs'; export const buildRootObject = () => makeDefaultExo('r', {});",
    );
    assert!(
        import.starts_with(
            "buildRootObject failed: Cannot import \"fs\": a guest module may import only @endo/eventual-send"
        ),
        "{import}"
    );
}

#[test]
fn a_root_must_be_a_remotable() {
    let (_host, mut guest) = guest();
    assert_eq!(
        build_rejected(&mut guest, "export const buildRootObject = () => ({ a: 1 });"),
        "buildRootObject must return a remotable root object, not {\"a\":1}"
    );
    assert_eq!(
        build_rejected(&mut guest, "export const buildRootObject = async () => 'root';"),
        "buildRootObject must return a remotable root object, not \"root\""
    );
    assert_eq!(
        build_rejected(&mut guest, "export const buildRootObject = () => undefined;"),
        "buildRootObject must return a remotable root object, not \"[undefined]\""
    );
    // Far objects and exos both do.
    let (_, store) = store();
    build(
        &mut guest,
        "export const buildRootObject = async () => Far('root', { ping: () => 'pong' });",
        &[],
        &store,
    );
}

#[test]
fn a_root_built_after_a_host_answer_is_reported_when_it_settles() {
    let (host, mut guest) = guest();
    let (_, store) = store();
    let logger = Reference::new("Alleged: logger", ());
    let source = r#"
        export async function buildRootObject(vatPowers) {
          const name = await E(vatPowers.logger).name();
          return makeDefaultExo(name, { name: () => name });
        }
    "#;
    let powers = Value::record([("logger", Value::Remotable(logger))]);
    let outcome = guest
        .build_vat(source, &Value::Null, &[], &store, &powers)
        .expect("runs");
    let Outcome::Pending(pending) = outcome else {
        panic!("expected a pending root, got {outcome:?}")
    };
    let asked = host.sends.borrow().last().map(|sent| {
        assert_eq!(sent.method.as_deref(), Some("name"));
        sent.result.clone()
    });
    let asked = asked.flatten();
    let asked = asked.expect("the vat asked the logger");
    guest.settle(&asked, Ok(Value::from("vatty"))).expect("settles");
    let Some(Ok(Value::Remotable(root))) = host.settlement_of(&pending) else {
        panic!("the root was reported")
    };
    assert_eq!(root.interface(), "Alleged: vatty");
}

#[test]
fn make_default_exo_accepts_any_passable_arguments() {
    let (_host, mut guest) = guest();
    let source = r#"
        makeDefaultExo('echo', {
          echo(...args) { return harden(args); },
          async later(value) { await null; return [value]; },
        })
    "#;
    let Value::Remotable(echo) = fulfilled(guest.evaluate(source, &[])) else {
        panic!("an exo")
    };
    let presence = Reference::new("Alleged: other", ());
    let args = vec![
        Value::from(1),
        Value::from("two"),
        Value::Undefined,
        Value::Null,
        Value::array([Value::from(true)]),
        Value::record([("x", Value::from(3))]),
        Value::Remotable(presence),
    ];
    assert_same!(call(&mut guest, &echo, "echo", &args), Value::array(args.clone()));
    assert_same!(call(&mut guest, &echo, "echo", &[]), Value::array([]));
    assert_same!(
        call(&mut guest, &echo, "later", &[Value::from("v")]),
        Value::array([Value::from("v")])
    );
    // From guest code too, and its interface is a passable-default one.
    let outcome = guest.evaluate(
        r#"
        const thing = makeDefaultExo('thing', { take: (...args) => args.length });
        const guard = thing.__getInterfaceGuard__();
        [thing.take(1, 'a', harden({ b: [2n] }), thing), passStyleOf(thing), guard.payload.defaultGuards]
        "#,
        &[],
    );
    assert_same!(
        fulfilled(outcome),
        Value::array([Value::from(4), Value::from("remotable"), Value::from("passable")])
    );
    // Non-passable arguments are refused by the guard.
    let refused = rejected(guest.evaluate("makeDefaultExo('thing', { take: x => x }).take(() => 1)", &[]));
    assert!(refused.contains("Remotables must be explicitly declared"), "{refused}");
}

#[test]
fn evaluations_and_modules_can_import_only_the_synthetic_modules() {
    let (_host, mut guest) = guest();
    let source = r#"
        import { E as E1 } from '@endo/eventual-send';
        import { E as E2, Far, passStyleOf as psf } from '@endo/far';
        import { M as M1, matches as m, mustMatch, makeCopySet, makeCopyBag, makeCopyMap } from '@endo/patterns';
        import { makeExo as mx, defineExoClass as dec, defineExoClassKit as deck } from '@endo/exo';
        import { makeDefaultExo as mde } from '@metamask/kernel-utils/exo';
        export const make = () =>
          E1 === E && E2 === E && Far === globalThis.Far && psf === passStyleOf && M1 === M &&
          m === matches && mustMatch === globalThis.mustMatch && makeCopySet === globalThis.makeCopySet &&
          mx === makeExo && dec === defineExoClass && deck === defineExoClassKit && mde === makeDefaultExo;
    "#;
    assert_same!(fulfilled(guest.make_module(source, Value::Null)), Value::from(true));
    let refused = rejected(guest.make_module(
        "import { x } from '@endo/marshal'; export const make = () => x;",
        Value::Null,
    ));
    assert!(refused.starts_with("Cannot import \"@endo/marshal\""), "{refused}");
    let missing = rejected(guest.make_module(
        "import { nothing } from '@endo/far'; export const make = () => nothing;",
        Value::Null,
    ));
    assert!(missing.contains("nothing"), "{missing}");
}

#[test]
fn a_vats_sends_answer_promises_of_its_own_realm_that_still_pipeline_and_pass() {
    // `await` and `Promise.all` take a promise of the vat's own realm as
    // it is; another realm's they would wrap, a promise and a job each.
    let (host, mut guest) = guest();
    let (_, store) = store();
    let source = r#"
        export function buildRootObject() {
          return makeDefaultExo('Root', {
            send(target) {
              const answer = E(target).first();
              E(answer).second();
              return harden([answer instanceof Promise, Promise.resolve(answer) === answer, answer]);
            },
          });
        }
    "#;
    let root = build(&mut guest, source, &[], &store);
    let target = Value::Remotable(Reference::new("Alleged: target", ()));
    let result = call(&mut guest, &root, "send", &[target]);
    let items = result.as_array().expect("an array");
    assert_same!(items[0].clone(), Value::from(true));
    assert_same!(items[1].clone(), Value::from(true));
    let sends = host.sends.borrow();
    assert_eq!(sends.len(), 2, "the second send pipelines on the first's answer");
    let answer = sends[0].result.clone().expect("a promise for the first send");
    let Value::Promise(passed) = &items[2] else {
        panic!("the answer passes as a promise, not {:?}", items[2]);
    };
    assert!(passed.same(&answer), "the answer passes as the host's own promise");
    assert!(
        matches!(&sends[1].target, Value::Promise(target) if target.same(&answer)),
        "the second send goes to the first's answer: {:?}",
        sends[1].target
    );
}
