//! Conversion between JavaScript and passable values: every pass style
//! round-trips (references by identity), and depth and size are bounded.

#![allow(clippy::expect_used, clippy::unwrap_used, reason = "a test fails by panicking")]

mod support;

use capstan_js::{ConversionLimits, GuestLimits};
use capstan_protocol::collections::{make_copy_bag, make_copy_map, make_copy_set};
use capstan_protocol::{ErrorValue, Reference, Value, list, record};
use num_bigint::BigInt;
use support::{eval, fulfilled, guest, guest_with, rejected};

fn all_pass_styles(remotable: &Value, promise: &Value) -> Vec<Value> {
    let huge: BigInt = "-123456789012345678901234567890123456789".parse().unwrap();
    vec![
        Value::Undefined,
        Value::Null,
        Value::from(true),
        Value::Number(-0.0),
        Value::Number(f64::NAN),
        Value::Number(f64::NEG_INFINITY),
        Value::Number(1.5),
        Value::bigint(huge),
        Value::bigint(7),
        Value::from("héllo 😀"),
        Value::bytes(vec![0u8, 1, 255]),
        Value::symbol("@@iterator").unwrap(),
        Value::symbol("@@@@foo").unwrap(),
        Value::registered_symbol("bar"),
        list![1, "two", Value::Null],
        record! { "b" => 1, "a" => list![Value::record(Vec::<(&str, Value)>::new())] },
        Value::tagged("myTag", record! { "x" => 1 }),
        make_copy_set([Value::from("a"), Value::from(1), remotable.clone()]).unwrap(),
        make_copy_bag([(Value::from("x"), BigInt::from(2))]).unwrap(),
        make_copy_map([(Value::from("k"), record! { "v" => 1 })]).unwrap(),
        remotable.clone(),
        promise.clone(),
        Value::error(ErrorValue::type_error("outer").with_cause(ErrorValue::new("RangeError", "inner"))),
        Value::error(ErrorValue {
            errors: vec![std::sync::Arc::new(ErrorValue::plain("one"))],
            ..ErrorValue::new("AggregateError", "many")
        }),
    ]
}

#[test]
fn every_pass_style_round_trips() {
    let (_host, mut guest) = guest();
    let remotable = Value::Remotable(Reference::new("Alleged: Thing", ()));
    let promise = Value::Promise(Reference::new("Promise", ()));
    let values = all_pass_styles(&remotable, &promise);
    let mut styles: Vec<&str> = values.iter().map(|value| value.pass_style().name()).collect();
    styles.sort_unstable();
    styles.dedup();
    assert_eq!(styles.len(), 14);
    for value in values {
        // In an array: a promise as the completion value would be awaited.
        let back = fulfilled(guest.evaluate("harden([value])", &[("value", value.clone())]));
        let back = back.as_array().unwrap()[0].clone();
        assert!(back.same_as(&value), "{value:?} came back as {back:?}");
        // And the guest sees the pass style Endo would.
        let style = fulfilled(guest.evaluate("passStyleOf(value)", &[("value", value.clone())]));
        assert_eq!(style.as_str(), Some(value.pass_style().name()));
    }
}

#[test]
fn guest_made_values_convert_with_their_identity() {
    let (_host, mut guest) = guest();
    let value = eval(
        &mut guest,
        "const far = Far('Thing', { ping() { return 'pong'; } }); \
         const p = harden(new Promise(() => {})); \
         harden([far, far, p, p, makeCopySet([far, far]), Symbol.asyncIterator, -0, 10n ** 30n])",
    );
    let items = value.as_array().unwrap();
    assert!(items[0].same_as(&items[1]));
    assert!(items[2].same_as(&items[3]));
    assert_eq!(items[2].pass_style().name(), "promise");
    assert_eq!(capstan_protocol::quote::quote(&items[4]), "\"[copySet]\"");
    assert!(items[5].same_as(&Value::symbol("@@asyncIterator").unwrap()));
    assert!(items[6].same_as(&Value::Number(-0.0)));
    assert_eq!(
        items[7].as_bigint().unwrap().to_string(),
        format!("1{}", "0".repeat(30))
    );
    // A remotable handed back is the same object, usable at once.
    let outcome = guest.evaluate(
        "thing === thing2 && thing.ping()",
        &[("thing", items[0].clone()), ("thing2", items[1].clone())],
    );
    assert_eq!(fulfilled(outcome).as_str(), Some("pong"));
}

#[test]
fn depth_and_size_are_bounded() {
    let limits = GuestLimits {
        conversion: ConversionLimits {
            max_depth: 64,
            max_values: 10_000,
            max_bytes: 1024 * 1024,
        },
        time_budget: support::UNTIMED_BUDGET,
        ..GuestLimits::default()
    };
    let (_host, mut guest) = guest_with(limits);
    assert_eq!(
        rejected(guest.evaluate("let v = []; for (let i = 0; i < 1000; i++) v = [v]; harden(v)", &[])),
        "Passable data nests deeper than 64 levels"
    );
    assert_eq!(
        rejected(guest.evaluate("harden(new Array(20000).fill(1))", &[])),
        "Passable data has more than 10000 values"
    );
    assert_eq!(
        rejected(guest.evaluate("'x'.repeat(2 * 1024 * 1024)", &[])),
        "Passable data has more than 1048576 bytes"
    );
    // Deep values still work inside the guest; only crossing is bounded.
    assert!(
        eval(
            &mut guest,
            "let w = []; for (let i = 0; i < 1000; i++) w = [w]; Object.isFrozen(harden(w))"
        )
        .same_as(&Value::from(true))
    );
    assert!(eval(&mut guest, "'fine'").same_as(&Value::from("fine")));
}

#[test]
fn collections_and_patterns_are_the_rust_value_layer() {
    let (_host, mut guest) = guest();
    let checks = [
        ("mustMatch(3, M.string())", "number 3 - Must be a string"),
        ("mustMatch(-1n, M.nat())", "\"[-1n]\" - Must be non-negative"),
        (
            "mustMatch(harden({bar: 4}), {foo: M.number(), bar: M.number()})",
            "{\"bar\":4} - Must have missing properties [\"foo\"]",
        ),
        (
            "mustMatch(3, M.or(M.string(), M.boolean()))",
            "3 - Must match one of \"`[\\n  makeTagged(\\\"match:string\\\", []),\\n  makeTagged(\\\"match:kind\\\", \\\"boolean\\\"),\\n]`\"",
        ),
        (
            "mustMatch(makeCopySet(['a', 1]), M.setOf(M.string()))",
            "set elements[1]: number 1 - Must be a string",
        ),
        (
            "mustMatch(makeCopyBag([['a', 2n]]), M.bagOf(M.string(), M.lte(1n)))",
            "bag counts[0]: \"[2n]\" - Must be <= \"[1n]\"",
        ),
        (
            "mustMatch(makeCopyMap([['a', 'x']]), M.mapOf(M.string(), M.number()))",
            "map values[0]: string \"x\" - Must be a number",
        ),
        (
            "mustMatch('abcdefghijk', M.string({stringLengthLimit: 10}))",
            "string \"abcdefghijk\" must not be bigger than 10",
        ),
        ("mustMatch(3, M.string(), 'arg')", "arg: number 3 - Must be a string"),
    ];
    for (source, message) in checks {
        assert_eq!(rejected(guest.evaluate(source, &[])), message, "{source}");
    }
    assert_eq!(
        eval(
            &mut guest,
            "[matches(3, M.number()), matches('3', M.number()), matches(makeCopySet([1]), M.set())].join()"
        )
        .as_str(),
        Some("true,false,true")
    );
    assert_eq!(
        capstan_protocol::quote::quote(&eval(&mut guest, "makeCopySet([1, 'a', 1]).payload")),
        "[\"a\",1]"
    );
}
