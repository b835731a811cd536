//! Hostile input: malformed frames and well-formed but hostile message
//! sequences end the session with `Abort` naming the problem, never a
//! panic, and leave other sessions alone.

#![allow(clippy::expect_used, clippy::unwrap_used, reason = "a test fails by panicking")]

mod captp_support;

use capstan_protocol::captp::codec::{self, FrameDecoder, write_raw_frame};
use capstan_protocol::captp::{Body, Event, Limits, Message, Outcome, Positions, Session, SessionId, Target};
use capstan_protocol::marshal::wire::put_varint;
use capstan_protocol::marshal::{self, Descriptor, MarshalLimits, NoSlots, SlotOut};
use capstan_protocol::{Reference, Value};
use captp_support::*;
use proptest::prelude::*;

fn victim_with(limits: Limits) -> Session {
    Session::new(SessionId(66), Some(echo()), limits)
}

fn victim() -> Session {
    victim_with(Limits::default())
}

fn frames(messages: &[Message<'_>]) -> Vec<u8> {
    let mut bytes = Vec::new();
    for message in messages {
        codec::write_frame(message, usize::MAX, &mut bytes).unwrap();
    }
    bytes
}

/// The reason in the last frame the session sent, if it was an `Abort`.
fn sent_abort(session: &mut Session) -> Option<String> {
    let mut bytes = Vec::new();
    session.poll_transmit(&mut bytes);
    let mut decoder = FrameDecoder::new(usize::MAX);
    decoder.feed(&bytes);
    let mut last = None;
    while let Ok(Some(frame)) = decoder.next_frame() {
        last = match Message::decode(frame) {
            Ok(Message::Abort { reason }) => Some(reason.to_owned()),
            _ => None,
        };
    }
    last
}

fn assert_aborts(mut session: Session, bytes: &[u8], expected: &str) {
    session.handle_bytes(bytes);
    let reason = session
        .close_reason()
        .unwrap_or_else(|| panic!("session should abort with {expected:?}"))
        .to_owned();
    assert!(reason.contains(expected), "reason {reason:?} should name {expected:?}");
    let sent = sent_abort(&mut session).expect("Abort sent to the peer");
    assert!(
        !sent.is_empty() && reason.starts_with(&sent),
        "sent {sent:?} for {reason:?}"
    );
    let mut last = None;
    while let Some(event) = session.poll_event() {
        last = Some(event);
    }
    assert!(matches!(last, Some(Event::Aborted { by_peer: false, .. })));
}

fn args_body(value: &Value) -> Vec<u8> {
    marshal::encode(value, &mut NoSlots, &MarshalLimits::default()).unwrap()
}

fn args_with(descriptor: Descriptor) -> Vec<u8> {
    let reference = Reference::detached("Alleged: X");
    let mut slots = |_: &Reference, _| {
        Ok(SlotOut {
            descriptor,
            send_interface: true,
        })
    };
    let value = match descriptor {
        Descriptor::ImportPromise(_) | Descriptor::Answer(_) => Value::array([Value::Promise(reference)]),
        _ => Value::array([Value::Remotable(reference)]),
    };
    marshal::encode(&value, &mut slots, &MarshalLimits::default()).unwrap()
}

fn deliver<'a>(target: Target, args: &'a [u8], answer: Option<u64>) -> Message<'a> {
    Message::Deliver {
        target,
        method: "echo",
        args: Body(args),
        answer,
        resolver: None,
    }
}

fn deep_args(depth: usize) -> Vec<u8> {
    let mut bytes = vec![0, 8, 1];
    for _ in 1..depth {
        bytes.extend_from_slice(&[8, 1]);
    }
    bytes.push(1);
    bytes
}

#[test]
fn each_protocol_violation_aborts_naming_it() {
    let empty = args_body(&Value::array([]));
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            frames(&[deliver(Target::Export(7), &empty, Some(1))]),
            "Deliver to unknown export 7",
        ),
        (
            frames(&[deliver(Target::Answer(3), &empty, None)]),
            "Deliver to unknown answer 3",
        ),
        (
            frames(&[Message::Bootstrap { answer: 1 }, Message::Bootstrap { answer: 1 }]),
            "answer position 1 reused",
        ),
        (
            frames(&[deliver(Target::Answer(5), &empty, Some(5))]),
            "Deliver answer 5 targets itself",
        ),
        (
            frames(&[Message::DropExports {
                positions: vec![42].into(),
                deltas: vec![1].into(),
            }]),
            "DropExports of unknown export 42",
        ),
        (
            frames(&[
                Message::Bootstrap { answer: 1 },
                Message::DropExports {
                    positions: vec![0].into(),
                    deltas: vec![5].into(),
                },
            ]),
            "DropExports delta 5 for export 0, which was sent 1 times",
        ),
        (
            frames(&[
                Message::Bootstrap { answer: 1 },
                Message::DropExports {
                    positions: vec![0].into(),
                    deltas: vec![0].into(),
                },
            ]),
            "DropExports delta 0",
        ),
        (
            frames(&[Message::DropExports {
                positions: vec![0, 1].into(),
                deltas: vec![1].into(),
            }]),
            "2 positions but 1 deltas",
        ),
        (
            frames(&[Message::DropAnswers {
                positions: vec![9].into(),
            }]),
            "DropAnswers of unknown answer 9",
        ),
        (
            frames(&[Message::Return {
                answer: 4,
                outcome: Outcome::Fulfilled(Body(&empty)),
            }]),
            "Return for unknown question 4",
        ),
        (frames(&[Message::DisembargoReply { embargo: 3 }]), "unknown embargo 3"),
        (
            frames(&[Message::Disembargo {
                target: Target::Answer(8),
                embargo: 0,
            }]),
            "Disembargo on unknown answer 8",
        ),
        (
            frames(&[deliver(Target::Export(0), &args_body(&Value::Null), None)]),
            "must be a copyArray",
        ),
        (
            frames(&[deliver(Target::Export(0), &args_with(Descriptor::Export(77)), None)]),
            "unknown export 77",
        ),
        (
            frames(&[deliver(Target::Export(0), &args_with(Descriptor::Answer(77)), None)]),
            "unknown answer 77",
        ),
        (
            frames(&[deliver(Target::Export(0), &deep_args(65), None)]),
            "max_depth (64)",
        ),
        (
            {
                let mut body = vec![0, 8];
                put_varint(&mut body, 1 << 60);
                frames(&[deliver(Target::Export(0), &body, None)])
            },
            "array length of 1152921504606846976",
        ),
        (
            {
                let mut bytes = Vec::new();
                write_raw_frame(&[200, 1, 2, 3], &mut bytes);
                bytes
            },
            "malformed message",
        ),
        (
            {
                // A DropExports claiming 2^60 positions.
                let mut payload = vec![5];
                put_varint(&mut payload, 1 << 60);
                let mut bytes = Vec::new();
                write_raw_frame(&payload, &mut bytes);
                bytes
            },
            "malformed message",
        ),
        (
            {
                let mut bytes = Vec::new();
                put_varint(&mut bytes, 1 << 40);
                bytes
            },
            "max_frame_bytes (16777216)",
        ),
        (vec![0xff; 11], "malformed frame length prefix"),
    ];
    for (bytes, expected) in cases {
        assert_aborts(victim(), &bytes, expected);
    }
    // Depth 64 is fine.
    let mut session = victim();
    session.handle_bytes(&frames(&[deliver(Target::Export(0), &deep_args(64), None)]));
    assert!(session.close_reason().is_none(), "{:?}", session.close_reason());
}

#[test]
fn session_limits_abort_naming_the_limit() {
    let limits = Limits {
        max_outstanding_answers: 4,
        max_queued_per_answer: 3,
        ..Limits::default()
    };
    let bootstraps: Vec<Message> = (1..=5).map(|answer| Message::Bootstrap { answer }).collect();
    assert_aborts(
        victim_with(limits.clone()),
        &frames(&bootstraps),
        "max_outstanding_answers (4)",
    );

    // Answer 1 stays pending (nobody runs the call); pipelined calls queue
    // on it up to the limit.
    let empty = args_body(&Value::array([]));
    let mut messages = vec![deliver(Target::Export(0), &empty, Some(1))];
    messages.extend((0..4).map(|_| deliver(Target::Answer(1), &empty, None)));
    assert_aborts(
        victim_with(limits.clone()),
        &frames(&messages),
        "max_queued_per_answer (3)",
    );

    let small = Limits {
        max_frame_bytes: 64,
        ..Limits::default()
    };
    let big = args_body(&Value::array([Value::string("x".repeat(100))]));
    assert_aborts(
        victim_with(small),
        &frames(&[deliver(Target::Export(0), &big, None)]),
        "max_frame_bytes (64)",
    );
}

/// A healthy pair in the same process keeps working.
fn bystander_still_works() {
    let mut pair = pair_with(None, Some(echo()));
    let root = pair.left.session.bootstrap().unwrap();
    let echoed = pair.left.session.send(&root, "echo", &[Value::from(1)]).unwrap();
    pair.run(10);
    assert!(matches!(pair.left.runtime.outcome_of(&echoed), Some(Ok(Value::Number(n))) if *n == 1.0));
}

fn check_ended_well(session: &mut Session) -> Result<(), TestCaseError> {
    if let Some(reason) = session.close_reason().map(str::to_owned) {
        let mut aborted = None;
        while let Some(event) = session.poll_event() {
            if let Event::Aborted { reason, by_peer } = event {
                aborted = Some((reason, by_peer));
            }
        }
        let (event_reason, by_peer) = aborted.expect("an Aborted event");
        prop_assert_eq!(&event_reason, &reason);
        if !by_peer {
            prop_assert!(reason.starts_with("CapTP "), "reason names the problem: {}", reason);
            prop_assert_eq!(sent_abort(session), Some(reason));
        }
    }
    Ok(())
}

/// One hostile message, owned so that proptest can build it.
#[derive(Clone, Debug)]
enum Hostile {
    Bootstrap(u64),
    Deliver(Target, BodyKind, Option<u64>),
    Get(Target, u64),
    Resolve(u64, BodyKind),
    Return(u64, BodyKind),
    DropExports(Vec<u64>, Vec<u64>),
    DropAnswers(Vec<u64>),
    Disembargo(Target, u64),
    DisembargoReply(u64),
    Abort,
    /// The local runtime runs every pending call.
    RunEvents,
    Garbage(Vec<u8>),
}

#[derive(Clone, Debug)]
enum BodyKind {
    Empty,
    Import(Descriptor),
    Deep(usize),
    HugeClaim,
    Raw(Vec<u8>),
}

impl BodyKind {
    fn bytes(&self) -> Vec<u8> {
        match self {
            BodyKind::Empty => args_body(&Value::array([])),
            BodyKind::Import(descriptor) => args_with(*descriptor),
            BodyKind::Deep(depth) => deep_args(*depth),
            BodyKind::HugeClaim => {
                let mut body = vec![0, 9];
                put_varint(&mut body, u64::MAX);
                body
            }
            BodyKind::Raw(bytes) => bytes.clone(),
        }
    }
}

fn position() -> impl Strategy<Value = u64> {
    prop_oneof![8 => 0u64..4, 1 => Just(u64::MAX), 1 => Just(1u64 << 60)]
}

fn target() -> impl Strategy<Value = Target> {
    prop_oneof![position().prop_map(Target::Export), position().prop_map(Target::Answer)]
}

fn body_kind() -> impl Strategy<Value = BodyKind> {
    prop_oneof![
        4 => Just(BodyKind::Empty),
        2 => prop_oneof![
            position().prop_map(Descriptor::ImportObject),
            position().prop_map(Descriptor::ImportPromise),
            position().prop_map(Descriptor::Export),
            position().prop_map(Descriptor::Answer),
        ].prop_map(BodyKind::Import),
        1 => (60usize..70).prop_map(BodyKind::Deep),
        1 => Just(BodyKind::HugeClaim),
        1 => proptest::collection::vec(any::<u8>(), 0..12).prop_map(BodyKind::Raw),
    ]
}

fn hostile() -> impl Strategy<Value = Hostile> {
    prop_oneof![
        2 => position().prop_map(Hostile::Bootstrap),
        4 => (target(), body_kind(), proptest::option::of(position())).prop_map(|(t, b, a)| Hostile::Deliver(t, b, a)),
        1 => (target(), position()).prop_map(|(t, a)| Hostile::Get(t, a)),
        1 => (position(), body_kind()).prop_map(|(p, b)| Hostile::Resolve(p, b)),
        1 => (position(), body_kind()).prop_map(|(p, b)| Hostile::Return(p, b)),
        1 => (proptest::collection::vec(position(), 0..3), proptest::collection::vec(prop_oneof![0u64..3, Just(u64::MAX)], 0..3))
            .prop_map(|(p, d)| Hostile::DropExports(p, d)),
        1 => proptest::collection::vec(position(), 0..3).prop_map(Hostile::DropAnswers),
        1 => (target(), position()).prop_map(|(t, e)| Hostile::Disembargo(t, e)),
        1 => position().prop_map(Hostile::DisembargoReply),
        1 => Just(Hostile::Abort),
        3 => Just(Hostile::RunEvents),
        1 => proptest::collection::vec(any::<u8>(), 0..16).prop_map(Hostile::Garbage),
    ]
}

fn play(session: &mut Session, runtime: &mut TestRuntime, step: &Hostile) {
    use capstan_protocol::captp::pair::Runtime;
    let body_bytes;
    let message = match step {
        Hostile::Bootstrap(answer) => Message::Bootstrap { answer: *answer },
        Hostile::Deliver(target, body, answer) => {
            body_bytes = body.bytes();
            deliver(*target, &body_bytes, *answer)
        }
        Hostile::Get(target, answer) => Message::Get {
            target: *target,
            field: "x",
            answer: *answer,
        },
        Hostile::Resolve(promise, body) => {
            body_bytes = body.bytes();
            Message::Resolve {
                promise: *promise,
                outcome: Outcome::Fulfilled(Body(&body_bytes)),
            }
        }
        Hostile::Return(answer, body) => {
            body_bytes = body.bytes();
            Message::Return {
                answer: *answer,
                outcome: Outcome::Rejected(Body(&body_bytes)),
            }
        }
        Hostile::DropExports(positions, deltas) => Message::DropExports {
            positions: Positions::borrowed(positions),
            deltas: Positions::borrowed(deltas),
        },
        Hostile::DropAnswers(positions) => Message::DropAnswers {
            positions: Positions::borrowed(positions),
        },
        Hostile::Disembargo(target, embargo) => Message::Disembargo {
            target: *target,
            embargo: *embargo,
        },
        Hostile::DisembargoReply(embargo) => Message::DisembargoReply { embargo: *embargo },
        Hostile::Abort => Message::Abort { reason: "bye" },
        Hostile::RunEvents => {
            while let Some(event) = session.poll_event() {
                if matches!(event, Event::Aborted { .. }) {
                    // Keep it for the final check.
                    return;
                }
                runtime.handle(session, event);
            }
            return;
        }
        Hostile::Garbage(bytes) => {
            session.handle_bytes(bytes);
            return;
        }
    };
    session.handle_bytes(&frames(&[message]));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let mut session = victim();
        // In pieces, as a transport would deliver them.
        for piece in bytes.chunks(7) {
            session.handle_bytes(piece);
        }
        check_ended_well(&mut session)?;
    }

    #[test]
    fn hostile_message_sequences_never_panic(steps in proptest::collection::vec(hostile(), 1..16)) {
        let mut session = victim_with(Limits { max_outstanding_answers: 3, max_queued_per_answer: 2, ..Limits::default() });
        let mut runtime = TestRuntime::default();
        // The victim also has questions of its own outstanding.
        let root = session.bootstrap().unwrap();
        let _ = session.send(&root, "echo", &[Value::from(1)]);
        for step in &steps {
            play(&mut session, &mut runtime, step);
            if session.is_closed() {
                break;
            }
        }
        check_ended_well(&mut session)?;
    }
}

#[test]
fn other_sessions_are_unaffected_by_an_aborted_one() {
    let mut session = victim();
    session.handle_bytes(&frames(&[deliver(
        Target::Export(99),
        &args_body(&Value::array([])),
        None,
    )]));
    assert!(session.is_closed());
    bystander_still_works();
}
