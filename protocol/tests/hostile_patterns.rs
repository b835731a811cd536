//! Patterns and specimens built from untrusted data: random matcher tags
//! with random payloads, and nesting beyond the limit, must give an answer
//! or a clear error, never a panic or unbounded recursion.

use capstan_protocol::guards::{InterfaceGuard, MethodGuard};
use capstan_protocol::patterns::{DEFAULT_MAX_NESTING, M, assert_pattern, is_pattern, kind_of, matches, must_match};
use capstan_protocol::{Reference, Value};
use proptest::prelude::*;

const TAGS: [&str; 34] = [
    "match:any",
    "match:and",
    "match:or",
    "match:not",
    "match:scalar",
    "match:key",
    "match:pattern",
    "match:kind",
    "match:tagged",
    "match:bigint",
    "match:nat",
    "match:string",
    "match:symbol",
    "match:remotable",
    "match:promise",
    "match:lt",
    "match:lte",
    "match:gte",
    "match:gt",
    "match:arrayOf",
    "match:byteArray",
    "match:recordOf",
    "match:setOf",
    "match:bagOf",
    "match:containerHas",
    "match:mapOf",
    "match:splitArray",
    "match:splitRecord",
    "copySet",
    "copyBag",
    "copyMap",
    "guard:methodGuard",
    "guard:interfaceGuard",
    "match:nonsense",
];

fn hostile() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Undefined),
        Just(Value::Null),
        any::<bool>().prop_map(Value::Boolean),
        prop_oneof![Just(f64::NAN), Just(-0.0), Just(1e300), (-5i32..5).prop_map(f64::from)].prop_map(Value::Number),
        (-3i64..3).prop_map(Value::bigint),
        "[a-z:]{0,6}".prop_map(Value::from),
        Just(Value::Remotable(Reference::detached("Alleged: X"))),
        Just(Value::Promise(Reference::detached("Promise"))),
        Just(M::string()),
        Just(M::any()),
    ];
    leaf.prop_recursive(4, 40, 5, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::array),
            proptest::collection::vec(("[a-z]{1,3}", inner.clone()), 0..4).prop_map(Value::record),
            (proptest::sample::select(TAGS.to_vec()), inner).prop_map(|(tag, payload)| Value::tagged(tag, payload)),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn hostile_patterns_never_panic(specimen in hostile(), pattern in hostile()) {
        let _ = kind_of(&pattern);
        let _ = is_pattern(&pattern);
        let checked = assert_pattern(&pattern);
        let matched = matches(&specimen, &pattern);
        let explained = must_match(&specimen, &pattern, Some("label"));
        // mustMatch agrees with matches: it fails exactly when matches
        // says no or throws.
        prop_assert_eq!(explained.is_ok(), matches!(matched, Ok(true)));
        if let Err(rejection) = explained {
            prop_assert!(rejection.message.starts_with("label: "), "{}", rejection.message);
        }
        let _ = checked;
        let _ = MethodGuard::from_value(&pattern);
        let _ = InterfaceGuard::from_value(&pattern);
    }
}

fn nested(depth: usize) -> Value {
    (0..depth).fold(Value::from(1), |inner, _| Value::array([inner]))
}

#[test]
fn nesting_beyond_the_limit_is_an_error() {
    let at_limit = nested(DEFAULT_MAX_NESTING);
    assert_eq!(matches(&at_limit, &M::any()), Ok(true));
    let too_deep = nested(DEFAULT_MAX_NESTING + 1);
    for outcome in [
        matches(&too_deep, &M::any()).map(|_| ()),
        matches(&Value::from(1), &too_deep).map(|_| ()),
        must_match(&too_deep, &too_deep, None),
        assert_pattern(&too_deep),
    ] {
        let message = outcome.expect_err("too deep").message;
        assert!(message.contains("nesting must not be deeper than 64"), "{message}");
    }
    // Far deeper than the limit is refused just as quickly.
    let very_deep = nested(5_000);
    assert!(matches(&very_deep, &M::any()).is_err());
}

#[test]
fn malformed_matchers_are_reported_not_mismatched() {
    let bad = Value::tagged("match:string", Value::from("nope"));
    let message = matches(&Value::from("x"), &bad).expect_err("malformed").message;
    assert_eq!(message, "\"match:string payload\" payload must be an array: \"nope\"");
    let unknown = Value::tagged("match:frobnicate", Value::Undefined);
    assert!(matches(&Value::from(1), &unknown).is_err());
    assert!(!is_pattern(&unknown));
}
