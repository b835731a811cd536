//! Marshal round trips: every pass style, nested, with references keeping
//! their identity and slots numbered by first appearance.

#![allow(clippy::expect_used, clippy::unwrap_used, reason = "a test fails by panicking")]

use std::sync::Arc;

use capstan_protocol::marshal::{
    self, DecodeSlots, Descriptor, EncodeSlots, MarshalError, MarshalLimits, RefStyle, SlotOut,
};
use capstan_protocol::{ErrorValue, PassStyle, Reference, Value};
use num_bigint::BigInt;
use proptest::prelude::*;

/// A slot table for tests: references by index, interfaces always sent.
#[derive(Default)]
struct Table {
    refs: Vec<Reference>,
    seen: Vec<(Descriptor, RefStyle, Option<String>)>,
}

impl EncodeSlots for Table {
    fn slot(&mut self, reference: &Reference, style: RefStyle) -> Result<SlotOut, MarshalError> {
        let index = match self.refs.iter().position(|known| known.same(reference)) {
            Some(index) => index,
            None => {
                self.refs.push(reference.clone());
                self.refs.len() - 1
            }
        };
        let descriptor = match style {
            RefStyle::Remotable => Descriptor::ImportObject(index as u64),
            RefStyle::Promise => Descriptor::ImportPromise(index as u64),
        };
        Ok(SlotOut {
            descriptor,
            send_interface: true,
        })
    }
}

impl DecodeSlots for Table {
    fn reference(
        &mut self,
        descriptor: Descriptor,
        style: RefStyle,
        interface: Option<&str>,
    ) -> Result<Reference, MarshalError> {
        self.seen.push((descriptor, style, interface.map(str::to_owned)));
        self.refs
            .get(descriptor.position() as usize)
            .cloned()
            .ok_or_else(|| MarshalError::Slot(format!("no reference {descriptor:?}")))
    }
}

fn round_trip(value: &Value) -> Value {
    let mut table = Table::default();
    let bytes = marshal::encode(value, &mut table, &MarshalLimits::default()).expect("encodes");
    marshal::decode(&bytes, &mut table, &MarshalLimits::default()).expect("decodes")
}

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Undefined),
        Just(Value::Null),
        any::<bool>().prop_map(Value::Boolean),
        any::<f64>().prop_map(Value::Number),
        prop_oneof![Just(f64::NAN), Just(-0.0), Just(f64::INFINITY), Just(f64::NEG_INFINITY)].prop_map(Value::Number),
        any::<i128>().prop_map(|n| Value::bigint(BigInt::from(n) * BigInt::from(n) * if n < 0 { -1 } else { 1 })),
        ".{0,12}".prop_map(|text: String| Value::string(text)),
        proptest::collection::vec(any::<u8>(), 0..16).prop_map(Value::bytes),
        prop_oneof![
            "[a-z@]{0,8}".prop_map(|name: String| Value::registered_symbol(&name)),
            Just(Value::symbol("@@iterator").unwrap())
        ],
    ]
}

fn error_value() -> impl Strategy<Value = ErrorValue> {
    let leaf =
        ("[A-Za-z]{1,10}", ".{0,20}").prop_map(|(name, message): (String, String)| ErrorValue::new(name, message));
    leaf.prop_recursive(3, 8, 3, |inner| {
        (
            inner.clone(),
            proptest::option::of(inner.clone()),
            proptest::collection::vec(inner, 0..3),
        )
            .prop_map(|(mut error, cause, errors)| {
                error.cause = cause.map(Arc::new);
                error.errors = errors.into_iter().map(Arc::new).collect();
                error
            })
    })
}

/// Values of all 14 pass styles, with references drawn from a small pool
/// so that repeats happen.
fn value(remotables: Vec<Reference>, promises: Vec<Reference>) -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        4 => scalar(),
        1 => proptest::sample::select(remotables).prop_map(Value::Remotable),
        1 => proptest::sample::select(promises).prop_map(Value::Promise),
        1 => error_value().prop_map(Value::error),
    ];
    leaf.prop_recursive(5, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::array),
            proptest::collection::vec(("[a-z]{0,4}", inner.clone()), 0..6)
                .prop_map(|entries: Vec<(String, Value)>| Value::record(entries)),
            ("[a-zA-Z]{1,8}", inner).prop_map(|(tag, payload): (String, Value)| Value::tagged(tag, payload)),
        ]
    })
}

fn remotables() -> Vec<Reference> {
    vec![Reference::detached("Alleged: A"), Reference::detached("Alleged: B")]
}

fn promises() -> Vec<Reference> {
    vec![Reference::detached("Promise"), Reference::detached("Promise")]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn every_value_round_trips(value in value(remotables(), promises())) {
        let back = round_trip(&value);
        prop_assert!(back.same_as(&value), "{value:?} came back as {back:?}");
    }
}

#[test]
fn each_of_the_fourteen_pass_styles_round_trips() {
    let remotable = Reference::detached("Alleged: Thing");
    let promise = Reference::detached("Promise");
    let samples = vec![
        Value::Undefined,
        Value::Null,
        Value::Boolean(true),
        Value::Number(-0.0),
        Value::bigint(BigInt::from(-12345678901234567890i128)),
        Value::string("héllo 😀"),
        Value::bytes(vec![0u8, 1, 255]),
        Value::symbol("@@asyncIterator").unwrap(),
        Value::array([Value::from(1), Value::from("two")]),
        Value::record([("b", Value::from(1)), ("a", Value::Null)]),
        Value::tagged("copySet", Value::array([])),
        Value::Remotable(remotable),
        Value::Promise(promise),
        Value::error(ErrorValue::type_error("bad").with_cause(ErrorValue::plain("root cause"))),
    ];
    let styles: Vec<PassStyle> = samples.iter().map(Value::pass_style).collect();
    assert_eq!(styles, PassStyle::ALL.to_vec());
    for sample in &samples {
        let back = round_trip(sample);
        assert!(back.same_as(sample), "{sample:?} came back as {back:?}");
        assert_eq!(back.pass_style(), sample.pass_style());
    }
    // NaN is NaN, and -0 stays -0.
    assert!(round_trip(&Value::Number(f64::NAN)).as_number().unwrap().is_nan());
    assert!(round_trip(&Value::Number(-0.0)).as_number().unwrap().is_sign_negative());
}

#[test]
fn references_are_numbered_by_first_appearance_and_sent_once() {
    let a = Reference::detached("Alleged: A");
    let b = Reference::detached("Promise");
    let value = Value::array([
        Value::Remotable(a.clone()),
        Value::Promise(b.clone()),
        Value::record([("again", Value::Remotable(a.clone()))]),
    ]);
    let mut table = Table::default();
    let bytes = marshal::encode(&value, &mut table, &MarshalLimits::default()).unwrap();
    let back = marshal::decode(&bytes, &mut table, &MarshalLimits::default()).unwrap();
    assert!(back.same_as(&value));
    assert_eq!(
        table.seen,
        vec![
            (
                Descriptor::ImportObject(0),
                RefStyle::Remotable,
                Some("Alleged: A".to_owned())
            ),
            (Descriptor::ImportPromise(1), RefStyle::Promise, None),
        ],
        "two slots, the interface with the remotable only"
    );
}

#[test]
fn one_reference_cannot_be_both_a_remotable_and_a_promise() {
    let both = Reference::detached("Alleged: Both");
    let value = Value::array([Value::Remotable(both.clone()), Value::Promise(both)]);
    let error = marshal::encode(&value, &mut Table::default(), &MarshalLimits::default()).unwrap_err();
    assert_eq!(error, MarshalError::SlotStyleMismatch { index: 0 });
}

#[test]
fn errors_cross_as_data() {
    let mut error = ErrorValue::new("RangeError", "out of range");
    error.errors = vec![
        Arc::new(ErrorValue::plain("first")),
        Arc::new(ErrorValue::type_error("second")),
    ];
    let error = error.with_cause(ErrorValue::plain("because"));
    let mut no_refs = marshal::NoSlots;
    let bytes = marshal::encode(&Value::error(error.clone()), &mut no_refs, &MarshalLimits::default()).unwrap();
    let back = marshal::decode(&bytes, &mut no_refs, &MarshalLimits::default()).unwrap();
    let Value::Error(back) = back else {
        panic!("an error comes back as an error")
    };
    assert_eq!(*back, error);
}
