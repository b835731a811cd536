//! Validated identifier types the store keys its tables by: node ids, formula
//! ids, pet names, blob hashes, krefs and the kernel's vat-side names.
//!
//! Each type checks its shape once, at the edge (parsing user or peer input,
//! or decoding a key read from the file), so the rest of the crate can trust
//! it. Formula ids are secrets (see `docs/design.md`): their
//! `Debug` output is shortened so that they do not end up whole in logs.

use std::fmt;
use std::str::FromStr;

use crate::error::StoreError;

/// Hex digits of one 32-byte half of an identifier.
const HEX_LEN: usize = 64;

fn encode_hex(bytes: &[u8; 32]) -> String {
    let digit = |nibble: u8| char::from_digit(u32::from(nibble), 16).unwrap_or('0');
    let mut text = String::with_capacity(HEX_LEN);
    for byte in bytes {
        text.push(digit(byte >> 4));
        text.push(digit(byte & 0x0f));
    }
    text
}

/// Decodes exactly 64 lowercase hex digits; `None` for anything else.
fn decode_hex(text: &str) -> Option<[u8; 32]> {
    fn digit(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        }
    }
    let bytes = text.as_bytes();
    if bytes.len() != HEX_LEN {
        return None;
    }
    let mut out = [0u8; 32];
    for (slot, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        let (high, low) = match pair {
            [high, low] => (*high, *low),
            _ => return None,
        };
        *slot = (digit(high)? << 4) | digit(low)?;
    }
    Some(out)
}

pub(crate) fn random_bytes() -> Result<[u8; 32], StoreError> {
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes).map_err(|error| StoreError::Randomness {
        detail: error.to_string(),
    })?;
    Ok(bytes)
}

fn invalid(kind: &'static str, value: &str, reason: impl Into<String>) -> StoreError {
    StoreError::InvalidInput {
        kind,
        value: value.chars().take(200).collect(),
        reason: reason.into(),
    }
}

/// A node's id: its ed25519 public key, shown as 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId([u8; 32]);

impl NodeId {
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub fn to_hex(&self) -> String {
        encode_hex(&self.0)
    }
}

impl FromStr for NodeId {
    type Err = StoreError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        decode_hex(text)
            .map(Self)
            .ok_or_else(|| invalid("node id", text, "must be 64 lowercase hex digits"))
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({})", self.to_hex())
    }
}

/// A formula id, `{number}:{node}`: a 256-bit number (random, or a content
/// hash for blobs) and the id of the node that made the formula.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FormulaId {
    number: [u8; 32],
    node: NodeId,
}

impl FormulaId {
    pub const fn new(number: [u8; 32], node: NodeId) -> Self {
        Self { number, node }
    }

    /// A fresh id with a random number, for a formula made by `node`.
    pub fn random(node: NodeId) -> Result<Self, StoreError> {
        Ok(Self::new(random_bytes()?, node))
    }

    pub const fn number(&self) -> &[u8; 32] {
        &self.number
    }

    pub const fn node(&self) -> NodeId {
        self.node
    }

    /// The 64-byte key this id is stored under: number, then node.
    pub(crate) fn to_key(self) -> [u8; 64] {
        let mut key = [0u8; 64];
        let (number, node) = key.split_at_mut(32);
        number.copy_from_slice(&self.number);
        node.copy_from_slice(self.node.as_bytes());
        key
    }

    pub(crate) fn from_key(key: [u8; 64]) -> Self {
        let mut number = [0u8; 32];
        let mut node = [0u8; 32];
        let (number_half, node_half) = key.split_at(32);
        number.copy_from_slice(number_half);
        node.copy_from_slice(node_half);
        Self::new(number, NodeId(node))
    }
}

impl FromStr for FormulaId {
    type Err = StoreError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        const SHAPE: &str = "must be {number}:{node}, each 64 lowercase hex digits";
        let (number, node) = text.split_once(':').ok_or_else(|| invalid("formula id", text, SHAPE))?;
        match (decode_hex(number), decode_hex(node)) {
            (Some(number), Some(node)) => Ok(Self::new(number, NodeId(node))),
            _ => Err(invalid("formula id", text, SHAPE)),
        }
    }
}

impl fmt::Display for FormulaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", encode_hex(&self.number), self.node)
    }
}

impl fmt::Debug for FormulaId {
    // Ids are authority: keep debug output recognisable but not usable.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let number = encode_hex(&self.number);
        let node = self.node.to_hex();
        write!(
            f,
            "FormulaId({}…:{}…)",
            number.get(..8).unwrap_or(""),
            node.get(..8).unwrap_or("")
        )
    }
}

/// The longest pet name, in bytes (all pet names are ASCII).
pub const PET_NAME_MAX_LEN: usize = 128;

/// A pet name: `^[a-z0-9][a-z0-9-]{0,127}$`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PetName(String);

impl PetName {
    pub fn new(name: impl Into<String>) -> Result<Self, StoreError> {
        let name = name.into();
        let bytes = name.as_bytes();
        let first_ok = bytes
            .first()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        let rest_ok = bytes
            .iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-');
        if !first_ok || !rest_ok || bytes.len() > PET_NAME_MAX_LEN {
            return Err(invalid("pet name", &name, "must match ^[a-z0-9][a-z0-9-]{0,127}$"));
        }
        Ok(Self(name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub(crate) fn from_stored(bytes: &[u8]) -> Result<Self, StoreError> {
        let text = std::str::from_utf8(bytes).map_err(|_| StoreError::CorruptRecord {
            table: "pet names",
            detail: "a stored pet name is not UTF-8".into(),
        })?;
        Self::new(text).map_err(|_| StoreError::CorruptRecord {
            table: "pet names",
            detail: format!("stored pet name {text:?} is not a valid pet name"),
        })
    }
}

impl FromStr for PetName {
    type Err = StoreError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::new(text)
    }
}

impl fmt::Display for PetName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for PetName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PetName({:?})", self.0)
    }
}

/// The blake3 hash of a blob's bytes: the key blobs are stored under.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BlobHash([u8; 32]);

impl BlobHash {
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The hash of `bytes`, as the store computes it.
    pub fn of(bytes: &[u8]) -> Self {
        Self(*blake3::hash(bytes).as_bytes())
    }

    pub fn to_hex(&self) -> String {
        encode_hex(&self.0)
    }

    /// The first 8 hex digits: enough to tell blobs apart in an error
    /// message without handing out the content address.
    pub(crate) fn short(&self) -> String {
        self.to_hex().get(..8).unwrap_or("").to_owned()
    }
}

impl FromStr for BlobHash {
    type Err = StoreError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        decode_hex(text)
            .map(Self)
            .ok_or_else(|| invalid("blob hash", text, "must be 64 lowercase hex digits"))
    }
}

impl fmt::Display for BlobHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for BlobHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BlobHash({}…)", self.short())
    }
}

/// Whether a kref names a kernel object (`ko`) or a kernel promise (`kp`).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum KrefKind {
    Object,
    Promise,
}

impl KrefKind {
    pub(crate) const fn tag(self) -> u8 {
        match self {
            Self::Object => 0,
            Self::Promise => 1,
        }
    }

    const fn prefix(self) -> &'static str {
        match self {
            Self::Object => "ko",
            Self::Promise => "kp",
        }
    }
}

/// A kernel reference: `ko<N>` or `kp<N>`, stable across restarts.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Kref {
    pub kind: KrefKind,
    pub number: u64,
}

impl Kref {
    pub const fn object(number: u64) -> Self {
        Self {
            kind: KrefKind::Object,
            number,
        }
    }

    pub const fn promise(number: u64) -> Self {
        Self {
            kind: KrefKind::Promise,
            number,
        }
    }

    pub(crate) const fn to_key(self) -> (u8, u64) {
        (self.kind.tag(), self.number)
    }

    pub(crate) fn from_key((tag, number): (u8, u64)) -> Result<Self, StoreError> {
        let kind = match tag {
            0 => KrefKind::Object,
            1 => KrefKind::Promise,
            other => {
                return Err(StoreError::CorruptRecord {
                    table: "kernel krefs",
                    detail: format!("kref kind tag {other} is neither object (0) nor promise (1)"),
                });
            }
        };
        Ok(Self { kind, number })
    }
}

impl FromStr for Kref {
    type Err = StoreError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        const SHAPE: &str = "must be ko<N> or kp<N> with N a decimal number";
        let (kind, digits) = if let Some(digits) = text.strip_prefix("ko") {
            (KrefKind::Object, digits)
        } else if let Some(digits) = text.strip_prefix("kp") {
            (KrefKind::Promise, digits)
        } else {
            return Err(invalid("kref", text, SHAPE));
        };
        // `u64::from_str` would also take a leading `+`.
        if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
            return Err(invalid("kref", text, SHAPE));
        }
        let number = digits
            .parse()
            .map_err(|_| invalid("kref", text, "the number does not fit in 64 bits"))?;
        Ok(Self { kind, number })
    }
}

impl fmt::Display for Kref {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.kind.prefix(), self.number)
    }
}

impl fmt::Debug for Kref {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The longest kernel-side name (vat id, subcluster id, vref), in bytes.
pub const KERNEL_NAME_MAX_LEN: usize = 256;

/// The longest baggage key, in bytes.
pub const BAGGAGE_KEY_MAX_LEN: usize = 4096;

fn check_kernel_text(kind: &'static str, text: &str, max_len: usize) -> Result<(), StoreError> {
    if text.is_empty() {
        return Err(invalid(kind, text, "must not be empty"));
    }
    if text.len() > max_len {
        return Err(invalid(
            kind,
            text,
            format!("is {} bytes long; the limit is {max_len}", text.len()),
        ));
    }
    if text.chars().any(char::is_control) {
        return Err(invalid(kind, text, "must not contain control characters"));
    }
    Ok(())
}

macro_rules! kernel_text_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $max:expr) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            pub fn new(text: impl Into<String>) -> Result<Self, StoreError> {
                let text = text.into();
                check_kernel_text($kind, &text, $max)?;
                Ok(Self(text))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub(crate) fn from_stored(bytes: &[u8]) -> Result<Self, StoreError> {
                let text = std::str::from_utf8(bytes).map_err(|_| StoreError::CorruptRecord {
                    table: "kernel",
                    detail: format!("a stored {} is not UTF-8", $kind),
                })?;
                Self::new(text).map_err(|error| StoreError::CorruptRecord {
                    table: "kernel",
                    detail: error.to_string(),
                })
            }
        }

        impl FromStr for $name {
            type Err = StoreError;

            fn from_str(text: &str) -> Result<Self, Self::Err> {
                Self::new(text)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({:?})"), self.0)
            }
        }
    };
}

kernel_text_type!(
    /// A vat's id in the kernel (such as `v1`).
    VatId,
    "vat id",
    KERNEL_NAME_MAX_LEN
);
kernel_text_type!(
    /// A subcluster's id in the kernel (such as `s1`).
    SubclusterId,
    "subcluster id",
    KERNEL_NAME_MAX_LEN
);
kernel_text_type!(
    /// A vat-side reference in a c-list (such as `o+1` or `p-3`).
    Vref,
    "vref",
    KERNEL_NAME_MAX_LEN
);
kernel_text_type!(
    /// A key in a vat's baggage.
    BaggageKey,
    "baggage key",
    BAGGAGE_KEY_MAX_LEN
);

#[cfg(test)]
mod tests {
    use super::*;

    const NODE: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

    #[test]
    fn formula_id_round_trips_through_text_and_key() {
        let number = "f".repeat(64);
        let text = format!("{number}:{NODE}");
        let id: FormulaId = text.parse().unwrap();
        assert_eq!(id.to_string(), text);
        assert_eq!(FormulaId::from_key(id.to_key()), id);
        assert_eq!(id.node().to_string(), NODE);
    }

    #[test]
    fn formula_id_rejects_wrong_shapes() {
        let good = "a".repeat(64);
        for bad in [
            String::new(),
            good.clone(),
            format!("{good}:"),
            format!("{good}:{}", "A".repeat(64)),
            format!("{}:{good}", "a".repeat(63)),
            format!("{good}:{good}:"),
            format!("{good}::{good}"),
            format!("{}:{good}", "g".repeat(64)),
            format!("{}é:{good}", "a".repeat(62)),
        ] {
            let error = bad.parse::<FormulaId>().unwrap_err();
            assert!(error.to_string().contains("invalid formula id"), "{bad:?}: {error}");
        }
    }

    #[test]
    fn formula_id_debug_does_not_show_the_whole_id() {
        let id: FormulaId = format!("{}:{NODE}", "b".repeat(64)).parse().unwrap();
        let debug = format!("{id:?}");
        assert!(!debug.contains(&"b".repeat(64)), "{debug}");
    }

    #[test]
    fn pet_names_follow_the_pattern() {
        for good in ["a", "0", "a-b", "x9-", &"a".repeat(128)] {
            assert!(PetName::new(good).is_ok(), "{good:?}");
        }
        for bad in ["", "-a", "A", "a_b", "a.b", "é", "a b", &"a".repeat(129)] {
            let error = PetName::new(bad).unwrap_err().to_string();
            assert!(error.contains("invalid pet name"), "{bad:?}: {error}");
        }
    }

    #[test]
    fn krefs_parse_and_print() {
        assert_eq!("ko12".parse::<Kref>().unwrap(), Kref::object(12));
        assert_eq!(Kref::promise(3).to_string(), "kp3");
        for bad in ["k12", "ko", "ko+1", "kx1", "ko1a", "ko99999999999999999999"] {
            assert!(bad.parse::<Kref>().is_err(), "{bad:?}");
        }
        assert!(Kref::from_key((7, 1)).is_err());
    }

    #[test]
    fn kernel_names_are_bounded() {
        assert!(VatId::new("v1").is_ok());
        assert!(VatId::new("").is_err());
        assert!(Vref::new("o+\n").is_err());
        assert!(BaggageKey::new("k".repeat(4096)).is_ok());
        assert!(BaggageKey::new("k".repeat(4097)).is_err());
    }
}
