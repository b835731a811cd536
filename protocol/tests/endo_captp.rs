#![allow(clippy::expect_used, clippy::unwrap_used, reason = "tests")]
//! Our Endo CapTP codec against the real `@endo/captp` 4.5 and
//! `@endo/marshal` 1.10: the bodies and messages in `tests/endo_captp/`
//! were written by them (`tools/endo-captp-oracle`), and we must read each
//! as they do and write back the very same bytes.

use capstan_protocol::captp::endo::capdata::{self, SlotText};
use capstan_protocol::captp::endo::{EndoMessage, EndoSlot};
use capstan_protocol::marshal::{MarshalLimits, RefStyle};
use capstan_protocol::{Reference, Value};
use serde_json::Value as Json;

fn load(name: &str) -> Json {
    let path = format!("{}/tests/endo_captp/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).expect(&path)).expect(&path)
}

/// What a slot read from a body stands for in these tests: its text and
/// the iface it came with.
struct TestSlot {
    slot: String,
    iface: Option<String>,
}

fn valid_iface(iface: &str) -> bool {
    iface == "Remotable" || iface.starts_with("Alleged: ") || iface.starts_with("DebugName: ")
}

/// Decodes a body with slots `slots`, each a presence or promise by its
/// letter; an absent iface makes "Remotable", as the oracle's decoder does.
fn decode(body: &str, slots: &[String]) -> Result<Value, String> {
    let mut resolve = |index: usize, iface: Option<&str>| -> Result<Value, String> {
        let slot = slots.get(index).ok_or("no slot at that index")?;
        EndoSlot::parse(slot).map_err(|error| error.to_string())?;
        if let Some(iface) = iface
            && !valid_iface(iface)
        {
            return Err(format!("bad iface {iface:?}"));
        }
        let target = TestSlot {
            slot: slot.clone(),
            iface: Some(iface.unwrap_or("Remotable").to_owned()),
        };
        let reference = Reference::new(iface.unwrap_or("Remotable"), target);
        Ok(if slot.starts_with('p') {
            Value::Promise(reference)
        } else {
            Value::Remotable(reference)
        })
    };
    capdata::decode(body, slots.len(), &MarshalLimits::default(), &mut resolve).map_err(|error| error.to_string())
}

/// Encodes as capdata, each slot keeping the text it was read with, and
/// numbered afresh by first appearance as `@endo/marshal` does.
fn encode(value: &Value) -> (String, Vec<String>) {
    let mut slot_for = |reference: &Reference, _: RefStyle| -> Result<SlotText, String> {
        let slot = reference.target::<TestSlot>().ok_or("foreign reference")?;
        Ok(SlotText {
            slot: slot.slot.clone(),
            iface: slot.iface.clone(),
        })
    };
    let encoded = capdata::encode(value, &mut slot_for).expect("encodes");
    (encoded.body, encoded.slots)
}

fn strings(json: &Json) -> Vec<String> {
    json.as_array()
        .unwrap()
        .iter()
        .map(|slot| slot.as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn every_value_endo_writes_reads_back_and_is_written_byte_for_byte_as_endo_does() {
    let bodies = load("bodies.json");
    let values = bodies["values"].as_array().unwrap();
    assert!(values.len() > 50);
    let mut failures = Vec::new();
    for case in values {
        let id = case["id"].as_str().unwrap();
        let source = case["source"].as_str().unwrap();
        let body = case["capdata"]["body"].as_str().unwrap();
        let slots = strings(&case["capdata"]["slots"]);
        for (form, case_body, case_slots) in [
            ("capdata", body, strings(&case["capdata"]["slots"])),
            (
                "smallcaps",
                case["smallcaps"]["body"].as_str().unwrap(),
                strings(&case["smallcaps"]["slots"]),
            ),
        ] {
            match decode(case_body, &case_slots) {
                Ok(value) => {
                    let (ours, our_slots) = encode(&value);
                    if ours != body || our_slots != slots {
                        failures.push(format!(
                            "{id} {source} from {form}: we write {ours} {our_slots:?}, Endo {body} {slots:?}"
                        ));
                    }
                }
                Err(error) => failures.push(format!("{id} {source}: {form} {case_body} refused: {error}")),
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Where we knowingly part from Endo: JavaScript strings may hold a lone
/// surrogate, ours cannot, so such a body is refused rather than misread.
const KNOWN_DIFFERENCES: &[(&str, &str)] = &[(r#""\ud800""#, "lone surrogate")];

#[test]
fn raw_bodies_are_accepted_and_refused_as_endo_does() {
    let bodies = load("bodies.json");
    let mut failures = Vec::new();
    for case in bodies["decodes"].as_array().unwrap() {
        let id = case["id"].as_str().unwrap();
        let body = case["body"].as_str().unwrap();
        let slots = strings(&case["slots"]);
        let accepted = case["accepted"].as_bool().unwrap();
        let ours = decode(body, &slots);
        if let Some((_, why)) = KNOWN_DIFFERENCES.iter().find(|(known, _)| *known == body) {
            assert!(
                accepted && ours.is_err(),
                "{id}: known difference ({why}) no longer holds"
            );
            continue;
        }
        match (accepted, ours) {
            (true, Ok(value)) => {
                let (written, _) = encode(&value);
                let expected = case["capdata"]["body"].as_str().unwrap();
                if written != expected {
                    failures.push(format!("{id} {body}: we read it as {written}, Endo as {expected}"));
                }
            }
            (false, Err(_)) => {}
            (true, Err(error)) => failures.push(format!("{id} {body}: Endo accepts it, we refuse: {error}")),
            (false, Ok(value)) => failures.push(format!(
                "{id} {body}: Endo refuses it ({}), we read {value:?}",
                case["message"]
            )),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_message_of_a_real_conversation_reads_and_writes_back_identically() {
    let transcript = load("transcript.json");
    let messages = transcript["messages"].as_array().unwrap();
    let mut kinds = std::collections::BTreeSet::new();
    for message in messages {
        let text = message["json"].as_str().unwrap();
        let decoded = EndoMessage::decode(text, 1 << 16).unwrap_or_else(|error| panic!("{text}: {error}"));
        kinds.insert(decoded.name());
        if let EndoMessage::Disconnect { reason, .. } = &decoded {
            // Endo wrote an Error there, which JSON turns into `{}`; we
            // write reasons as strings.
            assert_eq!(reason, "the peer disconnected");
            continue;
        }
        assert_eq!(decoded.encode(), text, "re-encoding {text}");
        // Every body in it reads, and those without Endo's errorId write
        // back the same.
        let parsed: Json = serde_json::from_str(text).unwrap();
        for field in ["method", "result", "exception", "res", "rej"] {
            let Some(capdata) = parsed.get(field) else { continue };
            let body = capdata["body"].as_str().unwrap();
            let slots = strings(&capdata["slots"]);
            let value = decode(body, &slots).unwrap_or_else(|error| panic!("{body}: {error}"));
            if !body.contains("errorId") {
                assert_eq!(encode(&value), (body.to_owned(), slots), "{text}");
            }
        }
    }
    for kind in [
        "CTP_BOOTSTRAP",
        "CTP_CALL",
        "CTP_RETURN",
        "CTP_RESOLVE",
        "CTP_DROP",
        "CTP_DISCONNECT",
    ] {
        assert!(kinds.contains(kind), "the transcript has no {kind}");
    }
}

#[test]
fn slots_parse_as_endo_writes_them_and_nothing_else() {
    for good in ["o+1", "p-2", "q-1", "t+3", "o+0", "o+9007199254740991"] {
        assert_eq!(EndoSlot::parse(good).unwrap().to_string(), good);
    }
    for bad in [
        "",
        "o",
        "o+",
        "x+1",
        "o*1",
        "o+01",
        "o+-1",
        "o+1.5",
        "o+9007199254740992",
        "o+1 ",
    ] {
        assert!(EndoSlot::parse(bad).is_err(), "{bad:?}");
    }
}
