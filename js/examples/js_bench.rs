//! Prints the costs the runtime pays per guest operation: a fresh
//! compartment, `evaluate("1+1")`, and 100 000 exo method deliveries from
//! Rust beside 100 000 calls of a plain JavaScript function (the floor);
//! and a burst of 100 000 eventual sends to a host presence, all in flight
//! at once (time per send and per settlement, heap held per send).
//!
//! Run with `cargo run --release -p capstan-js --example js_bench`.

use std::rc::Rc;
use std::time::{Duration, Instant};

use capstan_js::{GuestLimits, GuestRuntime, Host, LogLevel, Outcome, Settlement};
use capstan_protocol::{Reference, Value};

struct QuietHost;

/// A host whose every send answers a fresh promise, kept to be settled.
#[derive(Default)]
struct PromisingHost {
    results: std::cell::RefCell<Vec<Reference>>,
}

impl Host for PromisingHost {
    fn send(&self, _: &Value, _: Option<&str>, _: &[Value], _: bool) -> Result<Option<Reference>, Value> {
        let result = Reference::new("Promise", ());
        self.results.borrow_mut().push(result.clone());
        Ok(Some(result))
    }
    fn get(&self, _: &Value, _: &str) -> Result<Reference, Value> {
        Err(Value::from("no gets in the benchmark"))
    }
    fn promise_settled(&self, _: &Reference, _: &Settlement) {}
    fn log(&self, _: LogLevel, _: &str) {}
}

impl Host for QuietHost {
    fn send(&self, _: &Value, _: Option<&str>, _: &[Value], _: bool) -> Result<Option<Reference>, Value> {
        Err(Value::from("no host objects in the benchmark"))
    }
    fn get(&self, _: &Value, _: &str) -> Result<Reference, Value> {
        Err(Value::from("no host objects in the benchmark"))
    }
    fn promise_settled(&self, _: &Reference, _: &Settlement) {}
    fn log(&self, _: LogLevel, _: &str) {}
}

fn per_op(total: Duration, count: u32) -> String {
    let nanos = total.as_nanos() / u128::from(count);
    if nanos >= 10_000 {
        format!("{:.3} ms", nanos as f64 / 1e6)
    } else {
        format!("{:.2} µs", nanos as f64 / 1e3)
    }
}

fn remotable(outcome: Outcome) -> Reference {
    match outcome {
        Outcome::Settled(Ok(Value::Remotable(reference))) => reference,
        other => panic!("expected a remotable, got {other:?}"),
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut guest = GuestRuntime::new(Rc::new(QuietHost), GuestLimits::default())?;

    let started = Instant::now();
    let runtimes = 20;
    for _ in 0..runtimes {
        GuestRuntime::new(Rc::new(QuietHost), GuestLimits::default())?;
    }
    println!(
        "new GuestRuntime (library + root lockdown): {}",
        per_op(started.elapsed(), runtimes)
    );

    // A compartment is made per evaluation, so evaluate("0") is its cost
    // plus a trivial evaluation; report both with a bare one for contrast.
    let rounds = 200;
    let started = Instant::now();
    for _ in 0..rounds {
        guest.evaluate("1+1", &[])?;
    }
    let evaluate = started.elapsed();
    println!(
        "evaluate(\"1+1\") (fresh compartment each): {}",
        per_op(evaluate, rounds)
    );
    let memory_before = guest.memory_usage();
    guest.evaluate("1+1", &[])?;
    println!("heap after {} evaluations: {} KiB", rounds + 1, memory_before / 1024);

    let calls = 100_000;
    let source = "
        const Counter = M.interface('Counter', { incr: M.call(M.number()).returns(M.number()) });
        let count = 0;
        harden([
          makeExo('Counter', Counter, { incr(n) { count += n; return count; } }),
          Far('Plain', { incr(n) { count += n; return count; } }),
        ])";
    let Outcome::Settled(Ok(pair)) = guest.evaluate(source, &[])? else {
        panic!("benchmark setup failed")
    };
    let items = pair.as_array().ok_or("pair expected")?;
    let exo = remotable(Outcome::Settled(Ok(items[0].clone())));
    let far = remotable(Outcome::Settled(Ok(items[1].clone())));

    let one = [Value::from(1)];
    let started = Instant::now();
    for _ in 0..calls {
        guest.deliver(&exo, Some("incr"), &one)?;
    }
    let exo_time = started.elapsed();
    let started = Instant::now();
    for _ in 0..calls {
        guest.deliver(&far, Some("incr"), &one)?;
    }
    let far_time = started.elapsed();

    // The floor: the same loop as one JavaScript evaluation calling a
    // plain function, so no Rust boundary per call.
    let started = Instant::now();
    guest.evaluate(
        &format!("let c = 0; const incr = n => {{ c += n; return c; }}; for (let i = 0; i < {calls}; i++) incr(1); c"),
        &[],
    )?;
    let floor = started.elapsed();

    // The floor from Rust: a bare rquickjs runtime calling a plain
    // JavaScript function with one argument, no conversion, no guard.
    let bare_runtime = rquickjs::Runtime::new()?;
    let bare_context = rquickjs::Context::full(&bare_runtime)?;
    let bare = bare_context.with(|ctx| -> rquickjs::Result<Duration> {
        let incr: rquickjs::Function = ctx.eval("let c = 0; (n) => { c += n; return c; }")?;
        let started = Instant::now();
        for _ in 0..calls {
            incr.call::<_, rquickjs::Value>((1,))?;
        }
        Ok(started.elapsed())
    })?;

    println!(
        "deliver exo incr(1) x {calls}: {} per call (guards checked in Rust)",
        per_op(exo_time, calls)
    );
    println!(
        "deliver Far incr(1) x {calls}: {} per call (no guard)",
        per_op(far_time, calls)
    );
    println!(
        "plain JS function called from Rust x {calls} (floor): {} per call",
        per_op(bare, calls)
    );
    println!(
        "plain JS function called from JS x {calls}: {} per call",
        per_op(floor, calls)
    );
    host_sends()
}

/// Settlements per entry into the engine in the batched figure.
const SETTLE_BATCH: usize = 256;

/// A burst of eventual sends to a host presence, all awaited at once: the
/// time per send and per settlement, and the heap each send holds while
/// it waits (what bounds how many a worker can have in flight).
fn host_sends() -> Result<(), Box<dyn std::error::Error>> {
    let sends: u32 = 100_000;
    let host = Rc::new(PromisingHost::default());
    let limits = GuestLimits {
        memory_bytes: 1 << 30,
        time_budget: Duration::from_secs(600),
        ..GuestLimits::default()
    };
    let mut guest = GuestRuntime::new(Rc::clone(&host) as Rc<dyn Host>, limits)?;
    // In a vat, as a kernel vat sends.
    let source = "
        export function buildRootObject() {
          return makeDefaultExo('Bench', {
            burst(target, count) {
              const sends = [];
              for (let i = 0; i < count; i += 1) sends.push(E(target).noop());
              return Promise.all(sends);
            },
          });
        }";
    let store = Value::Remotable(Reference::new("Alleged: baggageStore", ()));
    let root = remotable(guest.build_vat(source, &Value::Null, &[], &store, &Value::record::<&str>([]))?);
    host.results.borrow_mut().clear();
    let target = Value::Remotable(Reference::new("Target", ()));
    // Settled one at a time, then in batches as a worker settles what one
    // read of its pipe brings.
    for batch in [1, SETTLE_BATCH] {
        let heap_before = guest.memory_usage();
        let started = Instant::now();
        let outcome = guest.deliver(&root, Some("burst"), &[target.clone(), Value::from(sends)])?;
        let send_time = started.elapsed();
        let held = guest.memory_usage().saturating_sub(heap_before);
        let Outcome::Pending(all) = outcome else {
            panic!("expected the burst to wait")
        };
        let results = std::mem::take(&mut *host.results.borrow_mut());
        let started = Instant::now();
        for chunk in results.chunks(batch) {
            guest.settle_all(chunk.iter().map(|result| (result, Ok(Value::Undefined))))?;
        }
        let settle_time = started.elapsed();
        drop(all);
        println!(
            "host sends x {sends}, all in flight: {} per send, {} per settlement (in batches of {batch}), {} heap bytes held per send",
            per_op(send_time, sends),
            per_op(settle_time, sends),
            held / sends as usize
        );
    }
    Ok(())
}
