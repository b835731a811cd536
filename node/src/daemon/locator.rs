//! The `capstan://` locator format, written and read here only:
//! `capstan://{node}/?id={number}&type={type}`, and for an invitation
//! `&from={inviter's handle number}` and one `&at={address}` per address
//! the inviter listens on (percent-encoded). Numbers are 64 hex digits;
//! the node is the formula id's node.

use std::fmt;

use capstan_protocol::ErrorValue;
use capstan_store::{FormulaId, NodeId};

/// A locator to write: formula `id` of type `kind`, and for an
/// invitation the inviter's handle and addresses.
pub struct Locator<'a> {
    pub id: FormulaId,
    pub kind: &'a str,
    pub from: Option<FormulaId>,
    pub at: &'a [String],
}

impl fmt::Display for Locator<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "capstan://{}/?id={}&type={}",
            self.id.node(),
            hex(self.id.number()),
            self.kind
        )?;
        if let Some(from) = self.from {
            write!(f, "&from={}", hex(from.number()))?;
        }
        for address in self.at {
            write!(f, "&at={}", url_encode(address))?;
        }
        Ok(())
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Percent-encodes a query value (everything but unreserved characters).
fn url_encode(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            encoded.push(byte as char);
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

fn url_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        match bytes[index] {
            b'%' => {
                let pair = text.get(index + 1..index + 3)?;
                decoded.push(u8::from_str_radix(pair, 16).ok()?);
                index += 3;
            }
            b'+' => {
                decoded.push(b' ');
                index += 1;
            }
            other => {
                decoded.push(other);
                index += 1;
            }
        }
    }
    String::from_utf8(decoded).ok()
}

/// A parsed invitation locator.
pub struct Invitation {
    pub node: NodeId,
    pub invitation: FormulaId,
    pub inviter_handle: FormulaId,
    pub addresses: Vec<String>,
}

/// Reads an invitation's locator; any other locator is refused.
pub fn parse_invitation(text: &str) -> Result<Invitation, ErrorValue> {
    let bad = |why: &str| ErrorValue::plain(format!("not an invitation locator: {why}"));
    let rest = text
        .trim()
        .strip_prefix("capstan://")
        .ok_or_else(|| bad("it must start with capstan://"))?;
    let (node_text, query) = rest.split_once("/?").ok_or_else(|| bad("no query"))?;
    let node: NodeId = node_text.parse().map_err(|_| bad("bad node id"))?;
    let (mut number, mut from, mut kind, mut addresses) = (None, None, None, Vec::new());
    for pair in query.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = url_decode(value).ok_or_else(|| bad("bad percent-encoding"))?;
        match key {
            "id" => number = Some(value),
            "from" => from = Some(value),
            "type" => kind = Some(value),
            "at" => addresses.push(value),
            _ => {}
        }
    }
    if kind.as_deref() != Some("invitation") {
        return Err(bad("its type is not invitation"));
    }
    let id_of = |number: Option<String>, what: &str| -> Result<FormulaId, ErrorValue> {
        let number = number.ok_or_else(|| bad(&format!("no {what}")))?;
        format!("{number}:{node}")
            .parse()
            .map_err(|_| bad(&format!("bad {what}")))
    };
    Ok(Invitation {
        node,
        invitation: id_of(number, "id")?,
        inviter_handle: id_of(from, "from")?,
        addresses,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_invitation_locator_reads_back_as_written() {
        let node: NodeId = "ab".repeat(32).parse().unwrap();
        let id: FormulaId = format!("{}:{node}", "01".repeat(32)).parse().unwrap();
        let from: FormulaId = format!("{}:{node}", "02".repeat(32)).parse().unwrap();
        let at = vec!["/ip4/127.0.0.1/tcp/4001".to_string(), "a b&c".to_string()];
        let text = Locator {
            id,
            kind: "invitation",
            from: Some(from),
            at: &at,
        }
        .to_string();
        assert!(text.starts_with(&format!(
            "capstan://{node}/?id={}&type=invitation&from=",
            "01".repeat(32)
        )));
        assert!(text.ends_with("&at=%2Fip4%2F127.0.0.1%2Ftcp%2F4001&at=a%20b%26c"));
        let invitation = parse_invitation(&text).unwrap();
        assert_eq!(invitation.node, node);
        assert_eq!(invitation.invitation, id);
        assert_eq!(invitation.inviter_handle, from);
        assert_eq!(invitation.addresses, at);
    }

    #[test]
    fn a_locator_of_another_type_is_not_an_invitation() {
        let node: NodeId = "ab".repeat(32).parse().unwrap();
        let id: FormulaId = format!("{}:{node}", "01".repeat(32)).parse().unwrap();
        let text = Locator {
            id,
            kind: "remote",
            from: None,
            at: &[],
        }
        .to_string();
        assert_eq!(text, format!("capstan://{node}/?id={}&type=remote", "01".repeat(32)));
        let error = parse_invitation(&text).err().unwrap();
        assert_eq!(&*error.message, "not an invitation locator: its type is not invitation");
    }
}
