#![allow(clippy::expect_used, clippy::unwrap_used, reason = "tests")]
//! The Endo bridge: two engine sessions talking Endo's CapTP to each other
//! through a bridge each (so every byte between them is Endo's JSON), and
//! a bridge fed hostile Endo messages directly. What the engine promises
//! on its own wire (pipelining, settlement, GC, E-order where Endo allows
//! it, bounds) must hold on this one.

mod captp_support;

use capstan_protocol::captp::endo::{EndoBridge, EndoMessage, NetstringDecoder};
use capstan_protocol::captp::pair::Side;
use capstan_protocol::captp::{Event, FrameDecoder, Limits, Message, Session, SessionId};
use capstan_protocol::marshal::MarshalLimits;
use capstan_protocol::{ErrorValue, Reference, Value};
use captp_support::{TestRuntime, counter, echo, error_message};

/// Two sessions joined by Endo's wire.
struct EndoPair {
    left: Side<TestRuntime>,
    left_bridge: EndoBridge,
    right: Side<TestRuntime>,
    right_bridge: EndoBridge,
    /// Every Endo message that crossed, as (from the left?, JSON text).
    wire: Vec<(bool, String)>,
    /// The names of the engine messages the left session wrote.
    left_engine: Vec<&'static str>,
}

fn side(id: u64, bootstrap: Option<Reference>, limits: &Limits) -> Side<TestRuntime> {
    Side {
        session: Session::new(SessionId(id), bootstrap, limits.clone()),
        runtime: TestRuntime::default(),
    }
}

impl EndoPair {
    fn new(right_bootstrap: Reference) -> EndoPair {
        EndoPair::with_limits(right_bootstrap, Limits::default())
    }

    fn with_limits(right_bootstrap: Reference, limits: Limits) -> EndoPair {
        EndoPair {
            left: side(1, None, &limits),
            left_bridge: EndoBridge::new(limits.clone()),
            right: side(2, Some(right_bootstrap), &limits),
            right_bridge: EndoBridge::new(limits),
            wire: Vec::new(),
            left_engine: Vec::new(),
        }
    }

    /// Moves bytes and runs events until nothing moves.
    fn run(&mut self) {
        for _ in 0..1000 {
            let mut moved = self.left.run_events() + self.right.run_events();
            moved += engine_to_bridge_logged(&mut self.left.session, &mut self.left_bridge, &mut self.left_engine);
            moved += engine_to_bridge(&mut self.right.session, &mut self.right_bridge);
            moved += bridge_to_bridge(&mut self.left_bridge, &mut self.right_bridge, true, &mut self.wire);
            moved += bridge_to_bridge(&mut self.right_bridge, &mut self.left_bridge, false, &mut self.wire);
            moved += bridge_to_engine(&mut self.left_bridge, &mut self.left.session);
            moved += bridge_to_engine(&mut self.right_bridge, &mut self.right.session);
            if moved == 0 {
                return;
            }
        }
        panic!("the pair never went quiet");
    }

    fn sent_by_left(&self, kind: &str) -> Vec<&str> {
        self.wire
            .iter()
            .filter(|(left, text)| *left && text.contains(&format!("\"type\":\"{kind}\"")))
            .map(|(_, text)| text.as_str())
            .collect()
    }
}

fn engine_to_bridge(session: &mut Session, bridge: &mut EndoBridge) -> usize {
    let mut bytes = Vec::new();
    session.poll_transmit(&mut bytes);
    bridge.handle_engine_bytes(&bytes);
    bytes.len()
}

fn engine_to_bridge_logged(session: &mut Session, bridge: &mut EndoBridge, log: &mut Vec<&'static str>) -> usize {
    let mut bytes = Vec::new();
    session.poll_transmit(&mut bytes);
    let mut frames = FrameDecoder::new(usize::MAX);
    frames.feed(&bytes);
    while let Some(frame) = frames.next_frame().unwrap() {
        log.push(Message::decode(frame).unwrap().name());
    }
    bridge.handle_engine_bytes(&bytes);
    bytes.len()
}

fn bridge_to_engine(bridge: &mut EndoBridge, session: &mut Session) -> usize {
    let mut bytes = Vec::new();
    bridge.poll_to_engine(&mut bytes);
    session.handle_bytes(&bytes);
    bytes.len()
}

fn bridge_to_bridge(
    from: &mut EndoBridge,
    to: &mut EndoBridge,
    from_left: bool,
    wire: &mut Vec<(bool, String)>,
) -> usize {
    let mut bytes = Vec::new();
    from.poll_to_peer(&mut bytes);
    let mut frames = NetstringDecoder::new(usize::MAX);
    frames.feed(&bytes);
    while let Some(frame) = frames.next_frame().unwrap() {
        let text = String::from_utf8(frame.to_vec()).unwrap();
        // Everything on the wire is a valid Endo message.
        EndoMessage::decode(&text, 1 << 16).unwrap_or_else(|error| panic!("{text}: {error}"));
        wire.push((from_left, text));
    }
    to.handle_peer_bytes(&bytes);
    bytes.len()
}

#[test]
fn a_pipelined_chain_settles_in_one_flight_each_way_over_endo_json() {
    let mut pair = EndoPair::new(echo());
    let root = pair.left.session.bootstrap().unwrap();
    let made = pair.left.session.send(&root, "make", &[]).unwrap();
    let echoed = pair.left.session.send(&made, "echo", &[Value::from("hi")]).unwrap();
    pair.run();
    let outcome = pair.left.runtime.outcome_of(&echoed).expect("settled");
    assert_eq!(outcome.as_ref().unwrap().as_str(), Some("hi"));
    let calls = pair.sent_by_left("CTP_CALL");
    assert_eq!(calls.len(), 2);
    assert!(calls[0].contains(r#""target":"q-1""#), "{}", calls[0]);
    assert!(calls[1].contains(r#""target":"q-2""#), "{}", calls[1]);
    assert!(pair.right.runtime.aborted.is_none() && pair.left.runtime.aborted.is_none());
}

#[test]
fn errors_and_passables_cross_and_byte_arrays_are_refused_without_ending_the_session() {
    let mut pair = EndoPair::new(echo());
    let root = pair.left.session.bootstrap().unwrap();
    let failed = pair.left.session.send(&root, "fail", &[Value::from("nope")]).unwrap();
    let odd = Value::array([
        Value::Undefined,
        Value::bigint(-7),
        Value::Number(f64::NAN),
        Value::tagged("t", Value::Null),
    ]);
    let echoed = pair
        .left
        .session
        .send(&root, "echo", std::slice::from_ref(&odd))
        .unwrap();
    let bytes = pair
        .left
        .session
        .send(&root, "echo", &[Value::bytes(vec![1u8, 2])])
        .unwrap();
    pair.run();
    let runtime = &pair.left.runtime;
    let Err(error) = runtime.outcome_of(&failed).unwrap() else {
        panic!("fail fulfilled")
    };
    assert_eq!(error_message(error), "nope");
    assert!(runtime.outcome_of(&echoed).unwrap().as_ref().unwrap().same_as(&odd));
    let Err(refused) = runtime.outcome_of(&bytes).unwrap() else {
        panic!("bytes crossed")
    };
    assert_eq!(error_message(refused), "capdata cannot carry a byte array");
    // The refused call never reached the wire, and nothing ended.
    assert_eq!(pair.sent_by_left("CTP_CALL").len(), 2);
    assert!(
        pair.left.runtime.aborted.is_none() && pair.right.runtime.aborted.is_none(),
        "{:?} {:?}",
        pair.left.runtime.aborted,
        pair.right.runtime.aborted
    );
    assert_eq!(pair.left.session.export_count(), 0);
}

#[test]
fn references_go_both_ways_and_drops_free_them() {
    let mut pair = EndoPair::new(echo());
    let root = pair.left.session.bootstrap().unwrap();
    let mine = Value::Remotable(counter());
    let back = pair
        .left
        .session
        .send(&root, "echo", std::slice::from_ref(&mine))
        .unwrap();
    let made = pair.left.session.send(&root, "make", &[]).unwrap();
    pair.run();
    // Our own object comes back as itself.
    let returned = pair.left.runtime.outcome_of(&back).unwrap().clone().unwrap();
    assert!(returned.same_as(&mine));
    let Ok(Value::Remotable(presence)) = pair.left.runtime.outcome_of(&made).unwrap().clone() else {
        panic!("make gave no presence")
    };
    let exported = pair.right.session.export_count();
    pair.left.session.drop_reference(&presence);
    pair.run();
    let drops = pair.sent_by_left("CTP_DROP");
    assert!(drops.iter().any(|drop| drop.contains(r#""slotID":"o-"#)), "{drops:?}");
    assert_eq!(pair.right.session.export_count(), exported - 1);
    assert!(pair.right.runtime.aborted.is_none());
}

#[test]
fn send_only_calls_go_out_as_question_zero_and_their_returns_are_dropped() {
    let mut pair = EndoPair::new(counter());
    let root = pair.left.session.bootstrap().unwrap();
    pair.left.session.send_only(&root, "incr", &[Value::from(2)]).unwrap();
    let total = pair.left.session.send(&root, "incr", &[Value::from(3)]).unwrap();
    pair.run();
    assert!(pair.sent_by_left("CTP_CALL")[0].contains(r#""questionID":"q-0""#));
    assert_eq!(
        pair.left
            .runtime
            .outcome_of(&total)
            .unwrap()
            .as_ref()
            .unwrap()
            .as_number(),
        Some(5.0)
    );
    assert!(pair.left.runtime.aborted.is_none());
}

#[test]
fn a_question_that_comes_home_is_disembargoed_by_the_bridge_and_calls_still_arrive() {
    // Right's echo returns what it is given: left's own counter, reached
    // through a pipelined question.
    let mut pair = EndoPair::new(echo());
    let root = pair.left.session.bootstrap().unwrap();
    let mine = Value::Remotable(counter());
    let home = pair
        .left
        .session
        .send(&root, "echo", std::slice::from_ref(&mine))
        .unwrap();
    let first = pair.left.session.send(&home, "incr", &[Value::from(1)]).unwrap();
    pair.run();
    assert_eq!(
        pair.left
            .runtime
            .outcome_of(&first)
            .unwrap()
            .as_ref()
            .unwrap()
            .as_number(),
        Some(1.0)
    );
    // The engine asked for a disembargo; Endo has none, so the bridge
    // answered it and the session goes on.
    assert!(pair.left_engine.contains(&"Disembargo"), "{:?}", pair.left_engine);
    assert!(!pair.wire.iter().any(|(_, text)| text.contains("mbargo")));
    let second = pair.left.session.send(&home, "incr", &[Value::from(1)]);
    assert!(second.is_err(), "home is local now: the engine delivers to it directly");
    assert!(pair.left.runtime.aborted.is_none() && pair.right.runtime.aborted.is_none());
}

/// Feeds `messages` (as netstrings) to a fresh bridge in front of a
/// session offering an echo object; returns why the session ended, and
/// the reason the peer was sent.
fn hostile(messages: &[&str]) -> (String, String) {
    let limits = Limits {
        marshal: MarshalLimits {
            max_slots: 4,
            ..MarshalLimits::default()
        },
        max_frame_bytes: 4096,
        ..Limits::default()
    };
    let mut session = Session::new(SessionId(9), Some(echo()), limits.clone());
    let mut bridge = EndoBridge::new(limits);
    let mut bytes = Vec::new();
    for message in messages {
        bytes.extend_from_slice(format!("{}:{message},", message.len()).as_bytes());
    }
    bridge.handle_peer_bytes(&bytes);
    bridge_to_engine(&mut bridge, &mut session);
    let mut aborted = None;
    while let Some(event) = session.poll_event() {
        match event {
            Event::Aborted { reason, .. } => aborted = Some(reason),
            Event::Deliver {
                answer: Some(answer), ..
            } => {
                session
                    .answer(answer, Err(Value::error(ErrorValue::plain("unexpected"))))
                    .unwrap();
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    bridge.poll_to_peer(&mut out);
    let mut frames = NetstringDecoder::new(usize::MAX);
    frames.feed(&out);
    let mut told = String::new();
    while let Some(frame) = frames.next_frame().unwrap() {
        if let Ok(EndoMessage::Disconnect { reason, .. }) = EndoMessage::decode(std::str::from_utf8(frame).unwrap(), 16)
        {
            told = reason;
        }
    }
    (aborted.unwrap_or_default(), told)
}

#[test]
fn hostile_endo_messages_end_the_session_with_a_reason_naming_the_fault() {
    let bootstrap = r#"{"type":"CTP_BOOTSTRAP","epoch":0,"questionID":"q-1"}"#;
    let call = |target: &str, body: &str, slots: &str| {
        format!(
            r#"{{"type":"CTP_CALL","epoch":0,"questionID":"q-2","target":"{target}","method":{{"body":{},"slots":{slots}}}}}"#,
            serde_json::to_string(body).unwrap()
        )
    };
    let deep = format!("[\"echo\",[{}{}]]", "[".repeat(80), "]".repeat(80));
    let cases: Vec<(String, &str)> = vec![
        ("not json".into(), "invalid JSON"),
        (r#"{"type":"CTP_NOPE"}"#.into(), "unknown Endo CapTP message type"),
        (r#"{"type":"CTP_BOOTSTRAP","epoch":0,"questionID":"x-1"}"#.into(), "invalid Endo CapTP slot"),
        (r#"{"type":"CTP_BOOTSTRAP","epoch":-1,"questionID":"q-1"}"#.into(), "epoch must be a natural number"),
        (call("o+0", r#"["echo",[]]"#, "[]"), "cannot call o+0"),
        (call("q-1", &deep, "[]"), "nests deeper than 64"),
        (call("q-1", r#"["echo",[]]"#, r#"["o+1","o+2","o+3","o+4","o+5"]"#), "5 slots, over the limit of 4"),
        (
            call("q-1", r#"["echo",[{"@qclass":"slot","iface":"Evil","index":0}]]"#, r#"["o+1"]"#),
            "must be \"Remotable\" or begin with \"Alleged: \"",
        ),
        (call("q-1", r#"["echo",[{"@qclass":"slot","index":0}]]"#, r#"["o-7"]"#), "unknown export 7"),
        (call("t-1", r#"["echo",[]]"#, "[]"), "cannot call t-1"),
        (
            r#"{"type":"CTP_CALL","epoch":0,"trap":true,"questionID":"q-2","target":"q-1","method":{"body":"[\"echo\",[]]","slots":[]}}"#.into(),
            "Trap (synchronous) calls are not served",
        ),
        (format!(r#"{{"type":"CTP_BOOTSTRAP","pad":"{}"}}"#, "x".repeat(5000)), "max_frame_bytes (4096)"),
        (r#"{"type":"CTP_RETURN","epoch":0,"answerID":"q-9","result":{"body":"1","slots":[]}}"#.into(), "CapTP protocol error"),
        (r#"{"type":"CTP_DROP","slotID":"o+1","decRefs":1}"#.into(), "Cannot drop non-exported o+1"),
    ];
    for (message, expected) in cases {
        let (reason, told) = hostile(&[bootstrap, &message]);
        assert!(
            reason.contains(expected),
            "{message}: the session ended with {reason:?}, not {expected:?}"
        );
        if !reason.contains("CapTP protocol error: ") || reason.contains("Endo") {
            assert_eq!(told, reason, "{message}: the peer was told otherwise");
        }
    }
}

#[test]
fn an_endo_drop_beyond_what_was_sent_is_clamped_and_frees_the_export_once() {
    let (reason, _) = hostile(&[
        r#"{"type":"CTP_BOOTSTRAP","epoch":0,"questionID":"q-1"}"#,
        r#"{"type":"CTP_CALL","epoch":0,"questionID":"q-2","target":"o-0","method":{"body":"[\"make\",[]]","slots":[]}}"#,
        r#"{"type":"CTP_DROP","slotID":"o-0","decRefs":100,"epoch":0}"#,
        r#"{"type":"CTP_DROP","slotID":"o-0","decRefs":100,"epoch":0}"#,
        r#"{"type":"CTP_DROP","slotID":"q-2","decRefs":1,"epoch":0}"#,
        r#"{"type":"CTP_DISCONNECT","epoch":0,"reason":{}}"#,
    ]);
    // Nothing above is a fault: the session ends only on the disconnect.
    assert_eq!(reason, "the Endo peer disconnected: the peer disconnected");
}
