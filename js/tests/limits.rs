//! The time budget and the memory cap: each stops only the entry that
//! broke it, with a clear error, and the runtime goes on working.

mod support;

use std::time::{Duration, Instant};

use capstan_js::{GuestError, GuestLimits};
use support::{eval, guest_with};

fn limits() -> GuestLimits {
    GuestLimits {
        time_budget: Duration::from_millis(200),
        memory_bytes: 32 * 1024 * 1024,
        ..GuestLimits::default()
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
    let (_host, mut guest) = guest_with(limits());
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
    // A guest that catches the out-of-memory error and keeps allocating is
    // stopped by the time budget. (QuickJS polls the interrupt handler
    // every 10 000 ticks, so large builtin work per tick delays the stop:
    // small allocations keep this test fast.)
    let source =
        "const keep = []; for (;;) { try { keep.push(new Array(1e4).fill(0)); } catch (e) { keep.length = 0; } }";
    assert!(matches!(
        guest.evaluate(source, &[]),
        Err(GuestError::TimeBudgetExceeded { .. })
    ));
    assert_eq!(eval(&mut guest, "'ok'").as_str(), Some("ok"));
}

#[test]
fn deep_recursion_is_a_guest_error() {
    let (_host, mut guest) = guest_with(limits());
    let message = support::rejected(guest.evaluate("const f = n => f(n + 1) + 1; f(0)", &[]));
    assert!(message.contains("stack"), "{message}");
}
