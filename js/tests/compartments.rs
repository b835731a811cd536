//! Evaluation in compartments: completion values, endowments, the exact
//! set of globals, frozen intrinsics, and no way out to another realm.

mod support;

use capstan_protocol::{Value, list};
use support::{eval, eval_str, fulfilled, guest, rejected};

#[test]
fn evaluates_expressions_and_programs() {
    let (_host, mut guest) = guest();
    assert_eq!(eval(&mut guest, "10 * 10").as_number(), Some(100.0));
    assert_eq!(eval(&mut guest, "const x = 20; x + 1").as_number(), Some(21.0));
    assert!(eval(&mut guest, "[1, 'two']").same_as(&list![1, "two"]));
}

#[test]
fn endowments_are_visible_and_nothing_leaks_between_evaluations() {
    let (_host, mut guest) = guest();
    let outcome = guest.evaluate("a + b.length", &[("a", Value::from(1)), ("b", list![1, 2, 3])]);
    assert_eq!(fulfilled(outcome).as_number(), Some(4.0));
    eval(&mut guest, "globalThis.leak = 1; var declared = 2; 0");
    assert_eq!(
        eval_str(&mut guest, "typeof leak + ' ' + typeof declared + ' ' + typeof a"),
        "undefined undefined undefined"
    );
}

#[test]
fn a_compartment_made_ahead_is_as_fresh_and_as_frozen_as_one_made_on_demand() {
    let (_host, mut guest) = guest();
    assert!(guest.prepare_compartment().unwrap(), "the first spare is made");
    assert!(!guest.prepare_compartment().unwrap(), "one spare at a time");
    eval(&mut guest, "globalThis.leak = 1; var declared = 2; 0");
    assert!(guest.prepare_compartment().unwrap(), "the spare was used");
    let outcome = guest.evaluate(
        "typeof leak + ' ' + typeof declared + ' ' + a + ' ' + Object.isFrozen(Array.prototype)",
        &[("a", Value::from(7))],
    );
    assert_eq!(fulfilled(outcome).as_str(), Some("undefined undefined 7 true"));
}

#[test]
fn globals_are_the_standard_ones_the_guest_globals_and_the_endowments() {
    let (_host, mut guest) = guest();
    let source = "Object.getOwnPropertyNames(globalThis).filter(name => !standard.includes(name)).sort().join(' ')";
    let standard = Value::array(
        [
            "Object",
            "Function",
            "Error",
            "EvalError",
            "RangeError",
            "ReferenceError",
            "SyntaxError",
            "TypeError",
            "URIError",
            "AggregateError",
            "SuppressedError",
            "Iterator",
            "Array",
            "parseInt",
            "parseFloat",
            "isNaN",
            "isFinite",
            "decodeURI",
            "decodeURIComponent",
            "encodeURI",
            "encodeURIComponent",
            "escape",
            "unescape",
            "Infinity",
            "NaN",
            "undefined",
            "eval",
            "Number",
            "Boolean",
            "String",
            "Math",
            "Reflect",
            "Symbol",
            "DisposableStack",
            "AsyncDisposableStack",
            "globalThis",
            "BigInt",
            "Date",
            "RegExp",
            "JSON",
            "Proxy",
            "Map",
            "Set",
            "WeakMap",
            "WeakSet",
            "ArrayBuffer",
            "Uint8ClampedArray",
            "Int8Array",
            "Uint8Array",
            "Int16Array",
            "Uint16Array",
            "Int32Array",
            "Uint32Array",
            "BigInt64Array",
            "BigUint64Array",
            "Float16Array",
            "Float32Array",
            "Float64Array",
            "DataView",
            "Promise",
        ]
        .map(Value::from),
    );
    let extra = fulfilled(guest.evaluate(source, &[("standard", standard), ("powers", Value::Null)]));
    assert_eq!(
        extra.as_str(),
        Some(
            "E Far M assert console defineExoClass defineExoClassKit harden makeCopyBag makeCopyMap makeCopySet makeDefaultExo \
             makeExo makeTagged matches mustMatch passStyleOf powers standard"
        )
    );
    // QuickJS extras and ambient timers or shared memory are gone.
    assert_eq!(
        eval_str(
            &mut guest,
            "[typeof SharedArrayBuffer, typeof Atomics, typeof WeakRef, typeof FinalizationRegistry, \
              typeof performance, typeof queueMicrotask, typeof std, typeof os, typeof print].join()"
        ),
        "undefined,undefined,undefined,undefined,undefined,undefined,undefined,undefined,undefined"
    );
    assert_eq!(
        eval_str(&mut guest, "typeof Date.now() + typeof Math.random()"),
        "numbernumber"
    );
}

#[test]
fn intrinsics_are_frozen_in_strict_and_sloppy_looking_code() {
    let (_host, mut guest) = guest();
    let strict = rejected(guest.evaluate("'use strict'; Array.prototype.x = 1", &[]));
    assert!(
        strict.contains("read-only") || strict.contains("not extensible"),
        "{strict}"
    );
    // Without a directive the code is still strict (as in a SES compartment).
    let sloppy = rejected(guest.evaluate("Array.prototype.x = 1", &[]));
    assert!(
        sloppy.contains("read-only") || sloppy.contains("not extensible"),
        "{sloppy}"
    );
    assert_eq!(
        eval_str(
            &mut guest,
            "try { Object.prototype.polluted = 1 } catch {} \
             try { Function.prototype.call = null } catch {} \
             try { Math.PI = 3 } catch {} \
             try { JSON.parse = null } catch {} \
             [typeof {}.polluted, typeof (() => 1).call, Math.PI, typeof JSON.parse, \
              Object.isFrozen(Object.prototype), Object.isFrozen(Object.getPrototypeOf(function* () {})), \
              Object.isFrozen(Object.getPrototypeOf([][Symbol.iterator]()))].join()"
        ),
        "undefined,function,3.141592653589793,function,true,true,true"
    );
    // What one evaluation tried is invisible to the next.
    assert_eq!(eval_str(&mut guest, "typeof [].x"), "undefined");
}

#[test]
fn no_function_reaches_a_global_object() {
    let (_host, mut guest) = guest();
    // The constructors behind functions are inert...
    for source in [
        "(() => 1).constructor('return globalThis')",
        "(async () => 1).constructor('return 1')",
        "(function* () {}).constructor('yield 1')",
        "E.constructor('return globalThis')",
    ] {
        let message = rejected(guest.evaluate(source, &[]));
        assert!(
            message.contains("Function constructors are not available"),
            "{source}: {message}"
        );
    }
    // ...and `Function` and `eval` make strict code only, so `this` is
    // never the global.
    assert_eq!(eval_str(&mut guest, "typeof Function('return this')()"), "undefined");
    assert_eq!(
        eval_str(&mut guest, "typeof (0, eval)('(function () { return this; })')()"),
        "undefined"
    );
    assert_eq!(
        eval(&mut guest, "new Function('a', 'b', 'return a + b')(1, 2)").as_number(),
        Some(3.0)
    );
    assert_eq!(eval(&mut guest, "eval('1 + 1')").as_number(), Some(2.0));
    // Module imports are refused: there is no loader.
    let outcome = guest.make_module("import x from 'fs'; export const make = () => x;", Value::Null);
    assert!(
        matches!(outcome, Ok(capstan_js::Outcome::Settled(Err(_)))),
        "{outcome:?}"
    );
}

#[test]
fn harden_and_pass_style_of() {
    let (_host, mut guest) = guest();
    assert_eq!(
        rejected(guest.evaluate("passStyleOf({})", &[])),
        "Cannot pass non-frozen objects like {}. Use harden()"
    );
    assert_eq!(
        rejected(guest.evaluate("passStyleOf({a: 1})", &[])),
        "Cannot pass non-frozen objects like {\"a\":1}. Use harden()"
    );
    assert_eq!(
        rejected(guest.evaluate("passStyleOf(Symbol('x'))", &[])),
        "Only registered symbols or well-known symbols are passable: \"[Symbol(x)]\""
    );
    assert_eq!(
        rejected(guest.evaluate("passStyleOf(harden({get x() { return 1; }}))", &[])),
        "\"x\" must not be an accessor property: {\"x\":1}"
    );
    assert_eq!(
        rejected(guest.evaluate("passStyleOf(harden(() => 1))", &[])),
        "Remotables must be explicitly declared: \"[Function <anon>]\""
    );
    assert_eq!(
        rejected(guest.evaluate("passStyleOf(harden({foo() {}}))", &[])),
        "Remotables must be explicitly declared: {\"foo\":\"[Function foo]\"}"
    );
    assert_eq!(
        rejected(guest.evaluate("passStyleOf(Error('x'))", &[])),
        "Cannot pass non-frozen objects like \"[Error: x]\". Use harden()"
    );
    assert_eq!(
        rejected(guest.evaluate("passStyleOf(harden(Error('x', {cause: 3})))", &[])),
        "Error expected: 3"
    );
    assert_eq!(
        rejected(guest.evaluate(
            "const o = {}; Object.defineProperty(o, 'x', {value: 1}); passStyleOf(harden(o))",
            &[]
        )),
        "\"x\" must be an enumerable property: {}"
    );
    assert_eq!(
        rejected(guest.evaluate("const a = []; a.push(a); passStyleOf(harden(a))", &[])),
        "Pass-by-copy data cannot be cyclic [\"[Seen]\"]"
    );
    assert_eq!(
        rejected(guest.evaluate("passStyleOf(harden(new Map()))", &[])),
        "\"[Symbol(passStyle)]\" property expected: \"[Map]\""
    );
    assert_eq!(
        eval_str(
            &mut guest,
            "const o = harden({a: [1, {b: 2}]}); \
             [Object.isFrozen(o), Object.isFrozen(o.a), Object.isFrozen(o.a[1]), passStyleOf(o), passStyleOf(o.a), \
              passStyleOf(1n), passStyleOf(Symbol.iterator), passStyleOf(Symbol.for('x')), passStyleOf(harden(Error('e'))), \
              passStyleOf(harden(Promise.resolve())), passStyleOf(Far('X', {})), passStyleOf(makeTagged('t', 1)), \
              passStyleOf(harden(new ArrayBuffer(2))), passStyleOf(undefined), passStyleOf(null)].join()"
        ),
        "true,true,true,copyRecord,copyArray,bigint,symbol,symbol,error,promise,remotable,tagged,byteArray,undefined,null"
    );
}

#[test]
fn console_goes_to_the_host() {
    let (host, mut guest) = guest();
    eval(
        &mut guest,
        "console.log('hello', 1, {a: [2n]}); console.error(Error('bad'))",
    );
    let logs = host.logs.borrow();
    assert_eq!(
        logs[0],
        (capstan_js::LogLevel::Log, "hello 1 {\"a\":[\"[2n]\"]}".to_string())
    );
    assert_eq!(logs[1], (capstan_js::LogLevel::Error, "Error: bad".to_string()));
}
