//! CapTP over the in-memory transport: throughput, round trips,
//! pipelining and bytes per message, each beside its limit measured in
//! the same run (bare frames through the same codec).
//!
//! Run: `cargo run --release -p capstan-protocol --example captp_bench`

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "a benchmark stops at its first failure"
)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use capstan_protocol::captp::codec::{FrameDecoder, write_raw_frame};
use capstan_protocol::captp::pair::{Direction, Pair, Runtime};
use capstan_protocol::captp::{Event, Limits, Session, SessionId};
use capstan_protocol::{Reference, Value};

/// Answers every call at once with its first argument; counts what it saw.
#[derive(Default)]
struct Echo {
    delivered: u64,
    settled: u64,
}

impl Runtime for Echo {
    fn handle(&mut self, session: &mut Session, event: Event) {
        match event {
            Event::Deliver { args, answer, .. } => {
                self.delivered += 1;
                if let Some(answer) = answer {
                    let result = args.first().cloned().unwrap_or(Value::Undefined);
                    let _ = session.answer(answer, Ok(result));
                }
            }
            Event::Get { answer, .. } => {
                let _ = session.answer(answer, Ok(Value::Undefined));
            }
            Event::Settled { .. } => self.settled += 1,
            _ => {}
        }
    }
}

fn new_pair() -> (Pair<Echo, Echo>, Value) {
    let root = Reference::new("Alleged: Echo", ());
    let mut pair = Pair::new(
        Session::new(SessionId(1), None, Limits::default()),
        Echo::default(),
        Session::new(SessionId(2), Some(root), Limits::default()),
        Echo::default(),
    );
    let promise = pair.left.session.bootstrap().expect("open");
    pair.run(10);
    let Value::Promise(promise_ref) = &promise else {
        unreachable!()
    };
    let presence = match capstan_protocol::captp::RemoteTarget::of(promise_ref).and_then(|t| t.resolution()) {
        Some(Ok(presence)) => presence.clone(),
        _ => panic!("bootstrap did not settle"),
    };
    (pair, presence)
}

fn per_second(count: u64, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64()
}

fn main() {
    const BURST: u64 = 100_000;
    const ROUND_TRIPS: u64 = 20_000;
    const CHAINS: u64 = 5_000;
    println!("CapTP over the in-memory transport (one thread, both sessions)\n");

    // --- bytes per Deliver of a small call ---
    let (mut pair, presence) = new_pair();
    let mut wire = Vec::new();
    pair.left
        .session
        .send_only(&presence, "incr", &[Value::from(1)])
        .unwrap();
    pair.left.session.poll_transmit(&mut wire);
    let send_only_bytes = wire.len();
    wire.clear();
    let _result = pair.left.session.send(&presence, "incr", &[Value::from(1)]).unwrap();
    pair.left.session.poll_transmit(&mut wire);
    let with_answer_bytes = wire.len();
    pair.right.session.handle_bytes(&wire);
    pair.right.run_events();
    wire.clear();
    pair.right.session.poll_transmit(&mut wire);
    let return_bytes = wire.len();
    println!("bytes on the wire");
    println!(
        "  Deliver incr(1), send-only          {send_only_bytes:>6} B  (body 12 B: 1 slot count + array of one f64)"
    );
    println!("  Deliver incr(1), with answer        {with_answer_bytes:>6} B");
    println!("  Return 1                            {return_bytes:>6} B");

    // --- burst of unawaited sends vs a burst of bare frames ---
    let (mut pair, presence) = new_pair();
    let args = [Value::from(1)];
    let start = Instant::now();
    for _ in 0..BURST {
        pair.left.session.send_only(&presence, "incr", &args).unwrap();
    }
    let mut wire = Vec::new();
    pair.left.session.poll_transmit(&mut wire);
    let encoded = start.elapsed();
    pair.right.session.handle_bytes(&wire);
    pair.right.run_events();
    let burst = start.elapsed();
    assert_eq!(pair.right.runtime.delivered, BURST);
    let frame_size = wire.len() / BURST as usize;

    let payload = vec![7u8; frame_size - 1];
    let start = Instant::now();
    let mut frames = Vec::new();
    for _ in 0..BURST {
        write_raw_frame(black_box(&payload), &mut frames);
    }
    let mut decoder = FrameDecoder::new(1 << 24);
    decoder.feed(&frames);
    let mut seen = 0u64;
    while let Ok(Some(frame)) = decoder.next_frame() {
        black_box(frame);
        seen += 1;
    }
    let bare = start.elapsed();
    assert_eq!(seen, BURST);
    println!("\nburst of {BURST} unawaited sends (send-only incr(1))");
    println!(
        "  CapTP send → frame → decode → deliver {:>12.0} calls/s  ({:.1} ms; encoding alone {:.1} ms)",
        per_second(BURST, burst),
        burst.as_secs_f64() * 1e3,
        encoded.as_secs_f64() * 1e3
    );
    println!(
        "  limit: bare {frame_size}-byte frames, same codec  {:>12.0} frames/s ({:.1} ms)",
        per_second(BURST, bare),
        bare.as_secs_f64() * 1e3
    );

    // --- burst of calls with results, in batches under the answer limit ---
    let (mut pair, presence) = new_pair();
    let start = Instant::now();
    for _ in 0..10 {
        for _ in 0..BURST / 10 {
            black_box(pair.left.session.send(&presence, "incr", &args).unwrap());
        }
        pair.run(10);
    }
    let with_results = start.elapsed();
    assert_eq!(pair.left.runtime.settled, BURST + 1);
    println!(
        "  CapTP calls with results (10 batches) {:>12.0} calls/s  ({:.1} ms)",
        per_second(BURST, with_results),
        with_results.as_secs_f64() * 1e3
    );

    // --- sequential round trips vs bare ping-pong ---
    let (mut pair, presence) = new_pair();
    let start = Instant::now();
    for _ in 0..ROUND_TRIPS {
        let before = pair.left.runtime.settled;
        black_box(pair.left.session.send(&presence, "incr", &args).unwrap());
        pair.flight(Direction::LeftToRight);
        pair.flight(Direction::RightToLeft);
        assert_eq!(pair.left.runtime.settled, before + 1);
    }
    let sequential = start.elapsed();

    let ping = vec![1u8; send_only_bytes.saturating_sub(1).max(1)];
    let pong = vec![2u8; return_bytes.saturating_sub(1).max(1)];
    let mut left = FrameDecoder::new(1 << 20);
    let mut right = FrameDecoder::new(1 << 20);
    let mut buffer = Vec::new();
    let start = Instant::now();
    for _ in 0..ROUND_TRIPS {
        buffer.clear();
        write_raw_frame(black_box(&ping), &mut buffer);
        right.feed(&buffer);
        black_box(right.next_frame().ok().flatten());
        buffer.clear();
        write_raw_frame(black_box(&pong), &mut buffer);
        left.feed(&buffer);
        black_box(left.next_frame().ok().flatten());
    }
    let ping_pong = start.elapsed();
    println!("\nsequential round trips ({ROUND_TRIPS}, each awaited)");
    println!(
        "  CapTP call + Return                  {:>12.0} round trips/s  ({:.2} µs each)",
        per_second(ROUND_TRIPS, sequential),
        sequential.as_secs_f64() * 1e6 / ROUND_TRIPS as f64
    );
    println!(
        "  limit: bare frame ping-pong, same codec {:>10.0} round trips/s  ({:.2} µs each)",
        per_second(ROUND_TRIPS, ping_pong),
        ping_pong.as_secs_f64() * 1e6 / ROUND_TRIPS as f64
    );

    // --- a pipelined chain of 10 vs one round trip ---
    let (mut pair, presence) = new_pair();
    let mut chain_flights = 0;
    let start = Instant::now();
    for _ in 0..CHAINS {
        let mut target = presence.clone();
        for _ in 0..10 {
            target = pair
                .left
                .session
                .send(&target, "me", std::slice::from_ref(&presence))
                .unwrap();
        }
        let before = pair.left.runtime.settled;
        chain_flights = pair
            .run_until(100, |pair| pair.left.runtime.settled == before + 10)
            .expect("chain settles");
        pair.run(10);
    }
    let chains = start.elapsed();
    let start = Instant::now();
    let mut single_flights = 0;
    for _ in 0..CHAINS {
        let before = pair.left.runtime.settled;
        black_box(
            pair.left
                .session
                .send(&presence, "me", std::slice::from_ref(&presence))
                .unwrap(),
        );
        single_flights = pair
            .run_until(100, |pair| pair.left.runtime.settled == before + 1)
            .expect("settles");
        pair.run(10);
    }
    let singles = start.elapsed();
    println!("\npipelined chain of 10 dependent calls vs one call ({CHAINS} each)");
    println!(
        "  chain of 10                          {:>8.2} µs   {} flights = {} round trip(s)",
        chains.as_secs_f64() * 1e6 / CHAINS as f64,
        chain_flights,
        chain_flights / 2
    );
    println!(
        "  limit: one call, one round trip      {:>8.2} µs   {} flights = {} round trip(s)",
        singles.as_secs_f64() * 1e6 / CHAINS as f64,
        single_flights,
        single_flights / 2
    );
}
