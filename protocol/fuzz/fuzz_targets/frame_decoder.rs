//! Fuzzes the CapTP input path: arbitrary bytes through the frame decoder,
//! the message decoder and a live session. Nothing may panic; a session
//! that stops must have stopped with a reason naming the problem.

#![no_main]

use capstan_protocol::captp::codec::FrameDecoder;
use capstan_protocol::captp::{Event, Limits, Message, Session, SessionId};
use capstan_protocol::{Reference, Value};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The codec alone, fed in two pieces.
    let split = data.first().map_or(0, |&b| b as usize % (data.len() + 1));
    let mut decoder = FrameDecoder::new(1 << 16);
    decoder.feed(&data[..split]);
    decoder.feed(&data[split..]);
    while let Ok(Some(frame)) = decoder.next_frame() {
        let _ = Message::decode(frame);
    }

    // A session with a bootstrap object and a question of its own.
    let limits = Limits {
        max_frame_bytes: 1 << 16,
        max_outstanding_answers: 16,
        max_queued_per_answer: 4,
        ..Limits::default()
    };
    let mut session = Session::new(SessionId(1), Some(Reference::new("Alleged: Root", ())), limits);
    if let Ok(root) = session.bootstrap() {
        let _ = session.send(&root, "m", &[Value::Null]);
    }
    for piece in data.chunks(64) {
        session.handle_bytes(piece);
        // Answer whatever the peer asked, as a runtime would.
        while let Some(event) = session.poll_event() {
            match event {
                Event::Deliver {
                    answer: Some(answer),
                    args,
                    ..
                } => {
                    let _ = session.answer(answer, Ok(Value::Array(args)));
                }
                Event::Get { answer, .. } => {
                    let _ = session.answer(answer, Ok(Value::Undefined));
                }
                _ => {}
            }
        }
        let mut out = Vec::new();
        session.poll_transmit(&mut out);
        if session.is_closed() {
            break;
        }
    }
    if let Some(reason) = session.close_reason() {
        assert!(!reason.is_empty());
    }
});
