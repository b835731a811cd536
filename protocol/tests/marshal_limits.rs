//! Marshal limits: every bound fails with a typed error, before
//! allocating, never with a panic.

use capstan_protocol::marshal::wire::put_varint;
use capstan_protocol::marshal::{self, MarshalError, MarshalLimits, NoSlots};
use capstan_protocol::{Value, ValueError};

fn nested_arrays(depth: usize) -> Value {
    let mut value = Value::Null;
    for _ in 0..depth {
        value = Value::array([value]);
    }
    value
}

fn decode(bytes: &[u8]) -> Result<Value, MarshalError> {
    marshal::decode(bytes, &mut NoSlots, &MarshalLimits::default())
}

/// A body with no slots whose value is `tail`.
fn body(tail: &[u8]) -> Vec<u8> {
    let mut bytes = vec![0];
    bytes.extend_from_slice(tail);
    bytes
}

#[test]
fn depth_64_passes_and_65_fails_at_the_default() {
    let limits = MarshalLimits::default();
    assert_eq!(limits.max_depth, 64);
    let ok = marshal::encode(&nested_arrays(64), &mut NoSlots, &limits).unwrap();
    assert!(decode(&ok).unwrap().same_as(&nested_arrays(64)));
    assert_eq!(
        marshal::encode(&nested_arrays(65), &mut NoSlots, &limits).unwrap_err(),
        MarshalError::TooDeep { limit: 64 }
    );
    // A hand-made body 65 deep is refused by the decoder too.
    let mut deep = vec![0u8];
    for _ in 0..65 {
        deep.extend_from_slice(&[8, 1]);
    }
    deep.push(1);
    assert_eq!(decode(&deep).unwrap_err(), MarshalError::TooDeep { limit: 64 });
    // Errors nest too.
    let mut error = capstan_protocol::ErrorValue::plain("leaf");
    for _ in 0..64 {
        error = capstan_protocol::ErrorValue::plain("outer").with_cause(error);
    }
    assert_eq!(
        marshal::encode(&Value::error(error), &mut NoSlots, &limits).unwrap_err(),
        MarshalError::TooDeep { limit: 64 }
    );
}

#[test]
fn a_million_deep_body_fails_without_overflowing_the_stack() {
    let mut deep = vec![0u8];
    for _ in 0..1_000_000 {
        deep.extend_from_slice(&[8, 1]);
    }
    assert_eq!(decode(&deep).unwrap_err(), MarshalError::TooDeep { limit: 64 });
}

#[test]
fn an_oversized_length_prefix_fails_before_allocating() {
    for tag in [5u8, 6, 7, 8, 9] {
        let mut tail = vec![tag];
        put_varint(&mut tail, 1 << 60);
        let error = decode(&body(&tail)).unwrap_err();
        assert!(
            matches!(error, MarshalError::TooLarge { claimed, .. } if claimed == 1 << 60),
            "tag {tag}: {error}"
        );
    }
    // Even with no limits, a claim larger than the bytes left fails at once.
    let unlimited = MarshalLimits {
        max_array_len: usize::MAX,
        max_values: usize::MAX,
        max_string_bytes: usize::MAX,
        ..MarshalLimits::default()
    };
    let mut tail = vec![8];
    put_varint(&mut tail, 1 << 60);
    assert_eq!(
        marshal::decode(&body(&tail), &mut NoSlots, &unlimited).unwrap_err(),
        MarshalError::UnexpectedEnd
    );
    let mut slots = Vec::new();
    put_varint(&mut slots, u64::MAX);
    assert!(matches!(
        decode(&slots).unwrap_err(),
        MarshalError::TooLarge { what: "slots", .. }
    ));
}

#[test]
fn every_size_limit_is_configurable_and_named() {
    let limits = MarshalLimits {
        max_array_len: 2,
        max_record_properties: 1,
        max_string_bytes: 3,
        max_byte_array_len: 2,
        max_bigint_bytes: 1,
        max_values: 5,
        ..MarshalLimits::default()
    };
    let cases = [
        (Value::array([Value::Null, Value::Null, Value::Null]), "array length"),
        (
            Value::record([("a", Value::Null), ("b", Value::Null)]),
            "record properties",
        ),
        (Value::string("four"), "string bytes"),
        (Value::bytes(vec![1u8, 2, 3]), "byteArray length"),
        (Value::bigint(300), "bigint bytes"),
        (
            Value::array([
                Value::array([Value::Null, Value::Null]),
                Value::array([Value::Null, Value::Null]),
            ]),
            "values in body",
        ),
    ];
    for (value, what) in cases {
        let error = marshal::encode(&value, &mut NoSlots, &limits).unwrap_err();
        assert!(
            matches!(error, MarshalError::TooLarge { what: named, .. } if named == what),
            "{error}"
        );
        let bytes = marshal::encode(&value, &mut NoSlots, &MarshalLimits::default()).unwrap();
        let error = marshal::decode(&bytes, &mut NoSlots, &limits).unwrap_err();
        assert!(
            matches!(error, MarshalError::TooLarge { .. }),
            "decoding {what}: {error}"
        );
    }
}

#[test]
fn malformed_bodies_fail_with_typed_errors() {
    let cases: Vec<(Vec<u8>, MarshalError)> = vec![
        (vec![], MarshalError::UnexpectedEnd),
        (body(&[]), MarshalError::UnexpectedEnd),
        (body(&[99]), MarshalError::UnknownTag { what: "value", tag: 99 }),
        (body(&[2, 7]), MarshalError::BadBool(7)),
        (body(&[1, 0]), MarshalError::TrailingBytes(1)),
        (body(&[5, 2, 0xff, 0xfe]), MarshalError::BadUtf8 { what: "string" }),
        (body(&[4, 0, 1, 0]), MarshalError::NonCanonicalBigInt),
        (body(&[4, 1, 0]), MarshalError::NonCanonicalBigInt),
        (body(&[0x80, 0x00]), MarshalError::BadVarint),
        (
            body(&[7, 6, b'@', b'@', b'n', b'o', b'p', b'e']),
            MarshalError::Value(ValueError::BadSymbolName("@@nope".into())),
        ),
        (
            body(&[9, 2, 1, b'a', 0, 1, b'a', 1]),
            MarshalError::Value(ValueError::DuplicateProperty("a".into())),
        ),
        (body(&[11, 0]), MarshalError::SlotOutOfOrder { index: 0, expected: 0 }),
        (vec![1, 0, 0, 0, 1], MarshalError::UnusedSlots { unused: 1 }),
        (body(&[13, 1, b'E', 0, 2]), MarshalError::BadOption(2)),
    ];
    for (bytes, expected) in cases {
        assert_eq!(decode(&bytes).unwrap_err(), expected, "{bytes:?}");
    }
}
