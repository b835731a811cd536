//! Property tests of the value layer: rank order is a stable total
//! preorder, key order agrees with it, canonical collections do not depend
//! on input order, and every value matches `M.any()` and itself.

use std::cmp::Ordering;
use std::sync::OnceLock;

use capstan_protocol::collections::{is_key, make_copy_bag_from_elements, make_copy_set};
use capstan_protocol::order::{KeyOrder, compare_keys, compare_rank};
use capstan_protocol::patterns::{M, matches};
use capstan_protocol::{ErrorValue, Reference, Value};
use proptest::prelude::*;

/// A few references so that identities repeat across generated values.
fn references() -> &'static [Reference] {
    static POOL: OnceLock<Vec<Reference>> = OnceLock::new();
    POOL.get_or_init(|| {
        ["Alleged: A", "Alleged: B", "Alleged: C"]
            .into_iter()
            .map(Reference::detached)
            .collect()
    })
}

fn atom() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Undefined),
        Just(Value::Null),
        any::<bool>().prop_map(Value::Boolean),
        prop_oneof![
            Just(f64::NAN),
            Just(-0.0),
            Just(0.0),
            Just(f64::INFINITY),
            Just(f64::NEG_INFINITY),
            (-1000i32..1000).prop_map(f64::from),
            any::<f64>(),
        ]
        .prop_map(Value::Number),
        (-10_000i64..10_000).prop_map(Value::bigint),
        prop_oneof!["[a-c]{0,3}", "[\u{e000}\u{fffd}\u{1f600}a]{0,3}", ".{0,4}",].prop_map(Value::from),
        proptest::collection::vec(any::<u8>(), 0..4).prop_map(Value::bytes),
        "[a-b]{1,2}".prop_map(|name| Value::registered_symbol(&name)),
        (0..3usize).prop_map(|index| Value::Remotable(references()[index].clone())),
    ]
}

/// Keys: atoms and containers of keys, including sets and bags.
fn key() -> impl Strategy<Value = Value> {
    atom().prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::array),
            proptest::collection::vec(("[a-c]", inner.clone()), 0..4).prop_map(Value::record),
            proptest::collection::vec(inner.clone(), 0..4)
                .prop_filter_map("set of keys", |elements| make_copy_set(elements).ok()),
            proptest::collection::vec(inner, 0..4)
                .prop_filter_map("bag of keys", |elements| make_copy_bag_from_elements(elements).ok()),
        ]
    })
}

/// Any passable: keys plus promises, errors and arbitrary tagged values.
fn passable() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        4 => atom(),
        1 => (0..3usize).prop_map(|index| Value::Promise(references()[index].clone())),
        1 => "[a-z]{0,5}".prop_map(|message| Value::error(ErrorValue::type_error(message))),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::array),
            proptest::collection::vec(("[a-c]", inner.clone()), 0..4).prop_map(Value::record),
            ("[a-z]{1,4}", inner).prop_map(|(tag, payload)| Value::tagged(tag, payload)),
        ]
    })
}

fn contains_map(value: &Value) -> bool {
    match value {
        Value::Array(items) => items.iter().any(contains_map),
        Value::Record(record) => record.values().any(contains_map),
        Value::Tagged(tagged) => &*tagged.tag == "copyMap" || contains_map(&tagged.payload),
        _ => false,
    }
}

fn contains_reference(value: &Value) -> bool {
    match value {
        Value::Remotable(_) | Value::Promise(_) => true,
        Value::Array(items) => items.iter().any(contains_reference),
        Value::Record(record) => record.values().any(contains_reference),
        Value::Tagged(tagged) => contains_reference(&tagged.payload),
        _ => false,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn rank_order_is_a_total_preorder(a in passable(), b in passable(), c in passable()) {
        // Antisymmetric as a preorder: swapping reverses.
        prop_assert_eq!(compare_rank(&a, &b), compare_rank(&b, &a).reverse());
        prop_assert_eq!(compare_rank(&a, &a), Ordering::Equal);
        // Transitive.
        if compare_rank(&a, &b) != Ordering::Greater && compare_rank(&b, &c) != Ordering::Greater {
            prop_assert_ne!(compare_rank(&a, &c), Ordering::Greater);
        }
    }

    #[test]
    fn rank_sort_is_stable(values in proptest::collection::vec(passable(), 0..12)) {
        let mut tagged: Vec<(usize, Value)> = values.into_iter().enumerate().collect();
        tagged.sort_by(|(_, a), (_, b)| compare_rank(a, b));
        for pair in tagged.windows(2) {
            let order = compare_rank(&pair[0].1, &pair[1].1);
            prop_assert_ne!(order, Ordering::Greater);
            if order == Ordering::Equal {
                prop_assert!(pair[0].0 < pair[1].0, "ties keep their input order");
            }
        }
    }

    #[test]
    fn key_order_agrees_with_rank_order(a in key(), b in key()) {
        prop_assume!(!contains_map(&a) && !contains_map(&b));
        let key_order = compare_keys(&a, &b).expect("keys compare");
        let rank_order = compare_rank(&a, &b);
        match key_order {
            KeyOrder::Equal => prop_assert_eq!(rank_order, Ordering::Equal),
            KeyOrder::Less if !contains_reference(&a) && !contains_reference(&b) => {
                prop_assert_eq!(rank_order, Ordering::Less)
            }
            KeyOrder::Greater if !contains_reference(&a) && !contains_reference(&b) => {
                prop_assert_eq!(rank_order, Ordering::Greater)
            }
            KeyOrder::Less => prop_assert_ne!(rank_order, Ordering::Greater),
            KeyOrder::Greater => prop_assert_ne!(rank_order, Ordering::Less),
            KeyOrder::Incomparable => {}
        }
    }

    #[test]
    fn canonical_sets_ignore_input_order(elements in proptest::collection::vec(key(), 0..8), seed in any::<u64>()) {
        let set = make_copy_set(elements.clone()).expect("keys make a set");
        let mut shuffled = elements;
        // A deterministic shuffle from the seed.
        let mut state = seed | 1;
        for index in (1..shuffled.len()).rev() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            shuffled.swap(index, (state % (index as u64 + 1)) as usize);
        }
        let again = make_copy_set(shuffled).expect("keys make a set");
        prop_assert!(set.same_as(&again), "{:?} vs {:?}", set, again);
        // Idempotent: remaking from the canonical payload changes nothing.
        let payload = set.as_tagged().expect("tagged").payload.as_array().expect("array").to_vec();
        let remade = make_copy_set(payload).expect("remakes");
        prop_assert!(set.same_as(&remade));
    }

    #[test]
    fn everything_matches_any_and_keys_match_themselves(value in passable(), k in key()) {
        prop_assert_eq!(matches(&value, &M::any()), Ok(true));
        prop_assume!(!contains_map(&k));
        prop_assert!(is_key(&k));
        prop_assert_eq!(matches(&k, &k), Ok(true));
        prop_assert_eq!(matches(&k, &M::eq(k.clone())), Ok(true));
        prop_assert_eq!(matches(&k, &M::not(M::neq(k.clone()))), Ok(true));
    }
}
