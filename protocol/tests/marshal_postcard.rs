//! The body encoding is postcard: serde-derived mirrors of the documented
//! wire types read what the marshaller writes, and the marshaller reads
//! what postcard writes for them.

use capstan_protocol::marshal::{self, Descriptor, MarshalLimits, RefStyle, SlotOut};
use capstan_protocol::{ErrorValue, Reference, Value};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Body {
    slots: Vec<Slot>,
    value: Wire,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Slot {
    descriptor: Descriptor,
    interface: Option<String>,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
enum Wire {
    Undefined,
    Null,
    Boolean(bool),
    Number(f64),
    BigInt { negative: bool, magnitude: Vec<u8> },
    String(String),
    ByteArray(Vec<u8>),
    Symbol(String),
    Array(Vec<Wire>),
    Record(Vec<(String, Wire)>),
    Tagged(String, Box<Wire>),
    Remotable(u32),
    Promise(u32),
    Error(WireError),
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct WireError {
    name: String,
    message: String,
    cause: Option<Box<WireError>>,
    errors: Vec<WireError>,
}

#[test]
fn marshalled_bodies_are_postcard() {
    let thing = Reference::detached("Alleged: Thing");
    let value = Value::record([
        (
            "b",
            Value::array([Value::Undefined, Value::Null, Value::Boolean(true), Value::Number(1.5)]),
        ),
        ("a", Value::bigint(-258)),
        ("s", Value::string("hi")),
        ("y", Value::bytes(vec![9u8])),
        ("z", Value::symbol("@@iterator").unwrap()),
        ("t", Value::tagged("copySet", Value::Remotable(thing.clone()))),
        ("r", Value::Remotable(thing.clone())),
        ("p", Value::Promise(Reference::detached("Promise"))),
        (
            "e",
            Value::error(ErrorValue::type_error("bad").with_cause(ErrorValue::plain("why"))),
        ),
    ]);
    let mut positions = 10u64;
    let mut slots = |_: &Reference, style: RefStyle| {
        positions += 1;
        Ok(SlotOut {
            descriptor: match style {
                RefStyle::Remotable => Descriptor::ImportObject(positions),
                RefStyle::Promise => Descriptor::Answer(positions),
            },
            send_interface: true,
        })
    };
    let bytes = marshal::encode(&value, &mut slots, &MarshalLimits::default()).unwrap();
    let mirror: Body = postcard::from_bytes(&bytes).expect("postcard reads the body");
    let expected = Body {
        slots: vec![
            // "p" sorts before "r": the promise appears first.
            Slot {
                descriptor: Descriptor::Answer(11),
                interface: None,
            },
            Slot {
                descriptor: Descriptor::ImportObject(12),
                interface: Some("Alleged: Thing".into()),
            },
        ],
        value: Wire::Record(vec![
            (
                "a".into(),
                Wire::BigInt {
                    negative: true,
                    magnitude: vec![2, 1],
                },
            ),
            (
                "b".into(),
                Wire::Array(vec![
                    Wire::Undefined,
                    Wire::Null,
                    Wire::Boolean(true),
                    Wire::Number(1.5),
                ]),
            ),
            (
                "e".into(),
                Wire::Error(WireError {
                    name: "TypeError".into(),
                    message: "bad".into(),
                    cause: Some(Box::new(WireError {
                        name: "Error".into(),
                        message: "why".into(),
                        cause: None,
                        errors: vec![],
                    })),
                    errors: vec![],
                }),
            ),
            ("p".into(), Wire::Promise(0)),
            ("r".into(), Wire::Remotable(1)),
            ("s".into(), Wire::String("hi".into())),
            ("t".into(), Wire::Tagged("copySet".into(), Box::new(Wire::Remotable(1)))),
            ("y".into(), Wire::ByteArray(vec![9])),
            ("z".into(), Wire::Symbol("@@iterator".into())),
        ]),
    };
    assert_eq!(mirror, expected);
    // And back: postcard's bytes for the mirror are the marshaller's bytes.
    assert_eq!(postcard::to_allocvec(&expected).unwrap(), bytes);
}
