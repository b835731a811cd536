//! Framing: frames survive any split of the byte stream, the size cap is
//! checked on the prefix, and every message round-trips through postcard.

use capstan_protocol::captp::codec::{self, FrameDecoder, FrameError, write_raw_frame};
use capstan_protocol::captp::message::MessageError;
use capstan_protocol::captp::{Body, Message, Outcome, Positions, Target};
use capstan_protocol::marshal::Descriptor;
use capstan_protocol::marshal::wire::put_varint;

fn every_message() -> Vec<Message<'static>> {
    vec![
        Message::Bootstrap { answer: 1 },
        Message::Deliver {
            target: Target::Answer(3),
            method: "incr",
            args: Body(&[0, 8, 0]),
            answer: Some(4),
            resolver: Some(Descriptor::ImportObject(9)),
        },
        Message::Deliver {
            target: Target::Export(0),
            method: "",
            args: Body(&[]),
            answer: None,
            resolver: None,
        },
        Message::Get {
            target: Target::Export(2),
            field: "name",
            answer: u64::MAX,
        },
        Message::Resolve {
            promise: 5,
            outcome: Outcome::Fulfilled(Body(&[0, 1])),
        },
        Message::Return {
            answer: 6,
            outcome: Outcome::Rejected(Body(&[0, 0])),
        },
        Message::DropExports {
            positions: vec![1, 2].into(),
            deltas: vec![3, 4].into(),
        },
        Message::DropAnswers {
            positions: Positions::borrowed(&[7, 8, 9]),
        },
        Message::Abort { reason: "done" },
        Message::Disembargo {
            target: Target::Answer(1),
            embargo: 2,
        },
        Message::DisembargoReply { embargo: 2 },
    ]
}

#[test]
fn every_message_round_trips_through_a_frame() {
    let mut bytes = Vec::new();
    for message in every_message() {
        codec::write_frame(&message, 1 << 20, &mut bytes).unwrap();
    }
    let mut decoder = FrameDecoder::new(1 << 20);
    decoder.feed(&bytes);
    let mut decoded = Vec::new();
    while let Some(frame) = decoder.next_frame().unwrap() {
        decoded.push(Message::decode(frame).unwrap().name().to_owned());
        assert_eq!(Message::decode(frame).unwrap(), every_message()[decoded.len() - 1]);
    }
    assert_eq!(decoded.len(), every_message().len());
    assert_eq!(decoder.buffered(), 0);
}

#[test]
fn frames_survive_any_split_of_the_stream() {
    let mut bytes = Vec::new();
    for message in every_message() {
        codec::write_frame(&message, 1 << 20, &mut bytes).unwrap();
    }
    for piece in 1..8 {
        let mut decoder = FrameDecoder::new(1 << 20);
        let mut count = 0;
        for chunk in bytes.chunks(piece) {
            decoder.feed(chunk);
            while let Some(frame) = decoder.next_frame().unwrap() {
                Message::decode(frame).unwrap();
                count += 1;
            }
        }
        assert_eq!(count, every_message().len(), "pieces of {piece}");
    }
}

#[test]
fn the_frame_cap_is_checked_on_the_prefix() {
    let mut decoder = FrameDecoder::new(100);
    let mut prefix = Vec::new();
    put_varint(&mut prefix, 1 << 60);
    decoder.feed(&prefix);
    assert_eq!(
        decoder.next_frame().unwrap_err(),
        FrameError::TooLarge {
            claimed: 1 << 60,
            limit: 100
        }
    );
    // It stays failed and stops buffering.
    decoder.feed(&[0; 1000]);
    assert_eq!(decoder.buffered(), 0);
    assert!(decoder.next_frame().is_err());

    // A frame of exactly the cap passes; one more byte fails.
    let mut decoder = FrameDecoder::new(100);
    let mut bytes = Vec::new();
    write_raw_frame(&[0; 100], &mut bytes);
    write_raw_frame(&[0; 101], &mut bytes);
    decoder.feed(&bytes);
    assert_eq!(decoder.next_frame().unwrap().map(<[u8]>::len), Some(100));
    assert!(matches!(
        decoder.next_frame(),
        Err(FrameError::TooLarge { claimed: 101, .. })
    ));

    // Writing refuses a message over the cap.
    let big = vec![0u8; 200];
    let message = Message::Deliver {
        target: Target::Export(0),
        method: "m",
        args: Body(&big),
        answer: None,
        resolver: None,
    };
    let mut out = Vec::new();
    assert!(matches!(
        codec::write_frame(&message, 100, &mut out),
        Err(FrameError::TooLarge { .. })
    ));
    assert!(out.is_empty());
}

#[test]
fn bad_prefixes_and_payloads_are_typed_errors() {
    let mut decoder = FrameDecoder::new(1 << 20);
    decoder.feed(&[0xff; 10]);
    assert_eq!(decoder.next_frame().unwrap_err(), FrameError::BadPrefix);
    assert!(matches!(Message::decode(&[]), Err(MessageError::Postcard(_))));
    assert!(matches!(
        Message::decode(&[0, 1, 99]),
        Err(MessageError::TrailingBytes(1))
    ));
    assert!(matches!(Message::decode(&[42]), Err(MessageError::Postcard(_))));
}

#[test]
fn an_unlimited_decoder_still_refuses_impossible_lengths() {
    let mut decoder = FrameDecoder::new(usize::MAX);
    let mut prefix = Vec::new();
    put_varint(&mut prefix, u64::MAX);
    decoder.feed(&prefix);
    assert!(matches!(
        decoder.next_frame(),
        Err(FrameError::TooLarge { .. }) | Ok(None)
    ));
}
