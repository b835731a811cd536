//! The time budget (of CPU time) and the memory cap: each stops only the
//! entry that broke it, with a clear error, and the runtime goes on
//! working.

mod support;

use std::time::{Duration, Instant};

use capstan_js::{GuestError, GuestLimits};
use capstan_protocol::Value;
use support::{eval, guest_with};

fn limits() -> GuestLimits {
    GuestLimits {
        time_budget: Duration::from_millis(200),
        memory_bytes: 32 * 1024 * 1024,
        ..GuestLimits::default()
    }
}

/// For tests of the memory cap: time enough to fill it in a debug build.
fn memory_limits() -> GuestLimits {
    GuestLimits {
        time_budget: Duration::from_secs(20),
        ..limits()
    }
}

#[test]
fn an_endless_loop_stops_at_the_budget_and_the_next_evaluation_works() {
    let (_host, mut guest) = guest_with(limits());
    let started = Instant::now();
    let error = guest.evaluate("for (;;) {}", &[]).unwrap_err();
    assert_eq!(error, GuestError::TimeBudgetExceeded { budget_ms: 200 });
    assert_eq!(error.to_string(), "Evaluation exceeded the time budget of 200 ms");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(eval(&mut guest, "1 + 1").as_number(), Some(2.0));
}

#[test]
fn the_budget_counts_the_guests_cpu_time_not_time_spent_waiting() {
    let (host, mut guest) = guest_with(limits());
    host.pause_on_log.set(Duration::from_millis(100));
    let started = Instant::now();
    // Four waits of 100 ms, then enough work for QuickJS to ask the
    // interrupt handler many times: past a 200 ms wall-clock deadline,
    // well within 200 ms of CPU.
    let source = "for (let i = 0; i < 4; i += 1) { console.log(i); } \
                  let sum = 0; for (let i = 0; i < 200000; i += 1) { sum += i; } sum";
    let value = eval(&mut guest, source);
    assert!(started.elapsed() >= Duration::from_millis(400));
    assert_eq!(value.as_number(), Some(19_999_900_000.0));
    assert_eq!(host.logs.borrow().len(), 4);
}

#[test]
fn catching_the_interruption_does_not_let_the_guest_run_on() {
    let (_host, mut guest) = guest_with(limits());
    let source = "for (;;) { try { for (;;) {} } catch (e) {} finally { for (;;) {} } }";
    let started = Instant::now();
    assert!(matches!(
        guest.evaluate(source, &[]),
        Err(GuestError::TimeBudgetExceeded { .. })
    ));
    assert!(started.elapsed() < Duration::from_secs(2));
    // Async code that catches and loops again in a later job.
    let source = "(async () => { for (;;) {} })().catch(() => { for (;;) {} }); 1";
    assert!(matches!(
        guest.evaluate(source, &[]),
        Err(GuestError::TimeBudgetExceeded { .. })
    ));
    assert!(started.elapsed() < Duration::from_secs(4));
    assert_eq!(eval(&mut guest, "'still here'").as_str(), Some("still here"));
    assert!(!guest.is_poisoned());
}

#[test]
fn an_endless_chain_of_jobs_is_stopped_each_time_and_marks_the_runtime_poisoned() {
    // The chain's garbage grows until a collection: the cap is set high
    // enough that the time budget, under test here, comes first.
    let (_host, mut guest) = guest_with(GuestLimits {
        memory_bytes: 512 * 1024 * 1024,
        ..limits()
    });
    let started = Instant::now();
    let source = "const loop = () => Promise.resolve().then(loop); loop(); 1";
    assert!(matches!(
        guest.evaluate(source, &[]),
        Err(GuestError::TimeBudgetExceeded { .. })
    ));
    assert!(started.elapsed() < Duration::from_secs(2));
    // QuickJS cannot drop queued jobs, so the chain lives on: the runtime
    // says so, and the worker should be replaced.
    assert!(guest.is_poisoned());
    assert_eq!(
        guest.replacement_reason().as_deref(),
        Some("it ran out of time (budget 200 ms) and left promise jobs that could not be stopped")
    );
}

#[test]
fn an_allocation_bomb_hits_the_memory_cap_and_the_next_evaluation_works() {
    let (_host, mut guest) = guest_with(limits());
    let error = guest
        .evaluate("const a = []; for (;;) a.push(new Array(1e6).fill(0))", &[])
        .unwrap_err();
    assert_eq!(
        error,
        GuestError::MemoryLimitExceeded {
            limit_bytes: 32 * 1024 * 1024
        }
    );
    assert_eq!(error.to_string(), "Evaluation exceeded the memory limit of 32 MiB");
    assert_eq!(eval(&mut guest, "[1, 2, 3].length").as_number(), Some(3.0));
    // A guest that catches the out-of-memory error, frees what it held and
    // keeps allocating is stopped soon (well before its 20 s budget): the
    // cap tripped, so the evaluation fails.
    let (_host, mut guest) = guest_with(memory_limits());
    let source =
        "const keep = []; for (;;) { try { keep.push(new Array(1e4).fill(0)); } catch (e) { keep.length = 0; } }";
    let started = Instant::now();
    assert!(matches!(
        guest.evaluate(source, &[]),
        Err(GuestError::MemoryLimitExceeded { .. })
    ));
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    assert_eq!(eval(&mut guest, "'ok'").as_str(), Some("ok"));
    assert_eq!(guest.replacement_reason(), None);
}

/// A program that fills the heap through a top-level binding of its
/// compartment, `grow` being how.
fn heap_filler(binding: &str) -> String {
    format!("{binding}; for (;;) big.push('x'.repeat(1000))")
}

#[test]
fn running_out_of_memory_in_a_global_binding_leaves_the_runtime_usable() {
    for binding in [
        "var big = []",
        "let big = []",
        "globalThis.big = []; const big = globalThis.big",
    ] {
        let (_host, mut guest) = guest_with(memory_limits());
        let baseline = guest.memory_usage();
        let error = guest.evaluate(&heap_filler(binding), &[]).unwrap_err();
        assert_eq!(
            error.to_string(),
            "Evaluation exceeded the memory limit of 32 MiB",
            "{binding}"
        );
        // The compartment and its globals are collected with it.
        assert!(
            guest.memory_usage() < baseline + 4 * 1024 * 1024,
            "{binding}: {} bytes still held",
            guest.memory_usage()
        );
        for _ in 0..3 {
            assert_eq!(eval(&mut guest, "1 + 1").as_number(), Some(2.0), "{binding}");
        }
        assert_eq!(guest.replacement_reason(), None, "{binding}");
    }
}

#[test]
fn catching_the_out_of_memory_error_does_not_change_the_outcome() {
    let (_host, mut guest) = guest_with(memory_limits());
    for source in [
        "const grow = () => { const a = []; for (;;) a.push('x'.repeat(1000)); }; try { grow() } catch (e) { 'caught' }",
        // QuickJS may fail to build the error itself and throw null.
        "let seen; try { const a = []; for (;;) a.push([1, 2, 3]); } catch (e) { seen = e; } `caught ${seen}`",
        "(async () => { const a = []; for (;;) a.push('x'.repeat(1000)); })().catch(() => 'caught')",
        "try { const a = []; for (;;) a.push('x'.repeat(1000)); } finally { 'cleaned up' }",
        "try { const a = []; for (;;) a.push('x'.repeat(1000)); } catch { for (;;) {} }",
    ] {
        let started = Instant::now();
        assert_eq!(
            guest.evaluate(source, &[]).unwrap_err(),
            GuestError::MemoryLimitExceeded {
                limit_bytes: 32 * 1024 * 1024
            },
            "{source}"
        );
        assert!(started.elapsed() < Duration::from_secs(10), "{source}");
        assert_eq!(eval(&mut guest, "'next'").as_str(), Some("next"));
    }
}

#[test]
fn catching_the_interruption_does_not_return_a_value() {
    let (_host, mut guest) = guest_with(limits());
    for source in [
        "try { for (;;) {} } catch (e) { 'caught' }",
        "try { for (;;) {} } finally { 'finally' }",
        "(async () => { for (;;) {} })().catch(() => 'caught')",
    ] {
        assert_eq!(
            guest.evaluate(source, &[]).unwrap_err(),
            GuestError::TimeBudgetExceeded { budget_ms: 200 },
            "{source}"
        );
    }
    assert_eq!(eval(&mut guest, "'next'").as_str(), Some("next"));
}

#[test]
fn a_heap_still_full_after_the_failure_asks_for_a_new_runtime() {
    let (_host, mut guest) = guest_with(memory_limits());
    // An object that outlives its evaluation holds the data.
    let hog = support::fulfilled(guest.evaluate(
        "const kept = []; makeDefaultExo('Hog', { grow() { for (;;) kept.push('x'.repeat(1000)); } })",
        &[],
    ));
    let Value::Remotable(hog) = hog else { panic!("{hog:?}") };
    let error = guest.deliver(&hog, Some("grow"), &[]).unwrap_err();
    assert_eq!(error.to_string(), "Evaluation exceeded the memory limit of 32 MiB");
    let reason = guest.replacement_reason().expect("a reason to replace the runtime");
    assert!(
        reason.starts_with("it ran out of memory (cap 32 MiB) and its heap still holds "),
        "{reason}"
    );
}

#[test]
fn a_delivery_that_runs_out_of_time_asks_for_a_new_runtime() {
    let (_host, mut guest) = guest_with(limits());
    let looper = support::fulfilled(guest.evaluate("makeDefaultExo('Loop', { spin() { for (;;) {} } })", &[]));
    let Value::Remotable(looper) = looper else {
        panic!("{looper:?}")
    };
    assert_eq!(guest.replacement_reason(), None);
    let error = guest.deliver(&looper, Some("spin"), &[]).unwrap_err();
    assert_eq!(error, GuestError::TimeBudgetExceeded { budget_ms: 200 });
    let reason = guest.replacement_reason().expect("a reason to replace the runtime");
    assert_eq!(
        reason,
        "it ran out of time (budget 200 ms) during a delivery or settlement, which may have left its promises pending forever"
    );
}

#[test]
fn deep_recursion_is_a_guest_error() {
    let (_host, mut guest) = guest_with(limits());
    let message = support::rejected(guest.evaluate("const f = n => f(n + 1) + 1; f(0)", &[]));
    assert!(message.contains("stack"), "{message}");
}

#[test]
fn after_the_cap_trips_nothing_the_guest_does_leaves_the_engine() {
    let (host, mut guest) = guest_with(memory_limits());
    let target = Value::Remotable(capstan_protocol::Reference::new("Alleged: Target", ()));
    let grow = "const grow = () => { const a = []; for (;;) a.push('x'.repeat(1000)); };";

    // A send made after catching the error does not go out.
    let source = format!("{grow} try {{ grow() }} catch (e) {{ E(target).leak(); E.get(target).secret; }}");
    assert!(matches!(
        guest.evaluate(&source, &[("target", target.clone())]),
        Err(GuestError::MemoryLimitExceeded { .. })
    ));
    assert!(host.sends.borrow().is_empty());
    assert!(host.gets.borrow().is_empty());

    // A promise the host waits on, settled by the turn that tripped the
    // cap, settles with the memory error whatever the guest gave it.
    let source = format!("{grow} E(target).go().then(() => {{ try {{ grow() }} catch (e) {{ return 'caught'; }} }})");
    let Ok(capstan_js::Outcome::Pending(waited)) = guest.evaluate(&source, &[("target", target)]) else {
        panic!("a pending outcome");
    };
    let go = host.sends.borrow()[0].result.clone().expect("a result promise");
    assert_eq!(
        guest.settle(&go, Ok(Value::Undefined)).unwrap_err(),
        GuestError::MemoryLimitExceeded {
            limit_bytes: 32 * 1024 * 1024
        }
    );
    let Some(Err(Value::Error(error))) = host.settlement_of(&waited) else {
        panic!("{:?}", host.settlement_of(&waited));
    };
    assert_eq!(&*error.message, "Evaluation exceeded the memory limit of 32 MiB");
    // It happened among long-lived objects: the runtime should go.
    assert!(guest.replacement_reason().is_some());
}
