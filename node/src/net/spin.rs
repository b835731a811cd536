//! The network thread's short wait for a vat's answer: after the thread
//! wakes a vat to read a session stream, it expects the vat to write back
//! soon (a call's answer is a few tens of µs of work away), so before it
//! parks it spins for a bounded time, yielding its CPU on every round, and
//! watches its runtime's queue of tasks woken from other threads. A vat's
//! write wakes the stream's connection task from the vat's thread, which
//! lands on that queue: seen while spinning, it costs no wake-up of a
//! parked thread. On an idle virtual machine that wake-up is what costs
//! (tens of µs for the host to resume a halted CPU), and it happens twice
//! per call between nodes beyond what a single-threaded program pays.
//!
//! The spin is bounded ([`SPIN_BUDGET`]) and only follows a wake of a vat
//! reader, so an idle thread never spins; each spin that waits in vain
//! (sends that need no answer, a slow object) doubles how many of the
//! next chances are skipped (up to [`MAX_SKIP`]), and one that is answered
//! starts over. Yielding each round means a busy machine's other threads,
//! the vat's included, get the CPU whenever they want it; and a round that
//! lost the CPU to one of them for long ([`CONTENDED_ROUND`]) ends the
//! spin, since on a busy machine a parked thread, woken, is served sooner
//! than one that keeps yielding. `CAPSTAN_NET_SPIN_US` overrides the
//! budget (`0` turns the spin off), for measuring.
//!
//! The other half of each hop, the network thread waking the vat to read,
//! is not hidden: the vat waits a whole round trip for an answer, too long
//! to spin through.
//!
//! How it learns of the wake: the vat's [`super::StreamReader`] registers
//! a [`ReaderWaker`] with its stream; waking it (on the network thread,
//! which moves the stream's bytes) arms that thread's spin.

use std::cell::Cell;
use std::sync::{Arc, OnceLock};
use std::task::{Wake, Waker};
use std::time::{Duration, Instant};

/// The longest the network thread waits for a vat's answer before it
/// parks: room for the vat to wake and answer a small call.
const SPIN_BUDGET: Duration = Duration::from_micros(100);

/// The environment variable that overrides [`SPIN_BUDGET`].
const BUDGET_VARIABLE: &str = "CAPSTAN_NET_SPIN_US";

/// A round of the spin (one yield) longer than this means another
/// thread took the CPU: the spin stops, as one waited in vain.
const CONTENDED_ROUND: Duration = Duration::from_micros(20);

/// The most chances skipped after spins that waited in vain.
const MAX_SKIP: u32 = 255;

thread_local! {
    static SPIN: SpinState = const { SpinState::new() };
}

/// One thread's spin: whether it is armed, and its backoff.
struct SpinState {
    armed: Cell<bool>,
    /// Armed parks left to let pass without spinning.
    skip: Cell<u32>,
    /// Spins in a row that waited in vain.
    misses: Cell<u32>,
}

impl SpinState {
    const fn new() -> SpinState {
        SpinState {
            armed: Cell::new(false),
            skip: Cell::new(0),
            misses: Cell::new(0),
        }
    }

    /// Whether to spin now (it disarms).
    fn take_chance(&self) -> bool {
        if !self.armed.replace(false) {
            return false;
        }
        match self.skip.get() {
            0 => true,
            left => {
                self.skip.set(left - 1);
                false
            }
        }
    }

    fn record(&self, answered: bool) {
        if answered {
            self.misses.set(0);
            self.skip.set(0);
        } else {
            let misses = self.misses.get().saturating_add(1).min(8);
            self.misses.set(misses);
            self.skip.set(((1u32 << misses) - 1).min(MAX_SKIP));
        }
    }
}

/// A current-thread runtime builder for the network thread: it spins
/// before it parks when it has just woken a vat reader.
pub(crate) fn runtime_builder() -> tokio::runtime::Builder {
    let mut builder = tokio::runtime::Builder::new_current_thread();
    builder.enable_all().on_thread_park(before_park);
    builder
}

fn before_park() {
    let budget = spin_budget();
    if budget.is_zero() || !SPIN.with(SpinState::take_chance) {
        return;
    }
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let metrics = runtime.metrics();
    let began = Instant::now();
    let mut last_round = began;
    let answered = loop {
        if metrics.global_queue_depth() > 0 {
            break true;
        }
        let now = Instant::now();
        // A yield that took long gave the CPU to another thread that
        // wanted it: the machine is busy, and a parked thread, woken, is
        // served sooner than one that keeps yielding.
        if now - began >= budget || now - last_round >= CONTENDED_ROUND {
            break false;
        }
        last_round = now;
        std::thread::yield_now();
    };
    SPIN.with(|spin| spin.record(answered));
}

/// [`SPIN_BUDGET`], or `CAPSTAN_NET_SPIN_US` (µs; `0` never spins) when
/// set, read once: for measuring the spin against none on one build.
fn spin_budget() -> Duration {
    static BUDGET: OnceLock<Duration> = OnceLock::new();
    *BUDGET.get_or_init(|| {
        std::env::var(BUDGET_VARIABLE)
            .ok()
            .and_then(|micros| micros.trim().parse().ok())
            .map_or(SPIN_BUDGET, Duration::from_micros)
    })
}

/// Wraps the waker a vat's stream reader registers, so that waking it
/// arms the waking thread's spin.
pub(crate) struct ReaderWaker {
    inner: Waker,
}

impl ReaderWaker {
    /// A waker that wakes `inner` and arms the waking thread.
    pub(crate) fn wrap(inner: &Waker) -> Waker {
        Waker::from(Arc::new(ReaderWaker { inner: inner.clone() }))
    }
}

impl Wake for ReaderWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        SPIN.with(|spin| spin.armed.set(true));
        self.inner.wake_by_ref();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_armed_thread_spins_and_misses_back_off() {
        let spin = SpinState::new();
        assert!(!spin.take_chance(), "never armed");
        spin.armed.set(true);
        assert!(spin.take_chance());
        assert!(!spin.take_chance(), "a chance disarms");
        spin.record(false);
        spin.record(false);
        // Two misses in a row: the next three chances pass.
        for _ in 0..3 {
            spin.armed.set(true);
            assert!(!spin.take_chance());
        }
        spin.armed.set(true);
        assert!(spin.take_chance());
        spin.record(true);
        spin.armed.set(true);
        assert!(spin.take_chance(), "an answered spin starts over");
        for _ in 0..20 {
            spin.record(false);
        }
        assert!(spin.skip.get() <= MAX_SKIP);
    }

    struct CountingWaker(std::sync::atomic::AtomicUsize);

    impl Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[test]
    fn waking_a_reader_wakes_its_task_and_arms_the_waking_thread_only() {
        let counter = Arc::new(CountingWaker(std::sync::atomic::AtomicUsize::new(0)));
        let wrapped = ReaderWaker::wrap(&Waker::from(Arc::clone(&counter)));
        let armed_there = std::thread::spawn(move || {
            wrapped.wake_by_ref();
            wrapped.wake();
            SPIN.with(|spin| spin.armed.get())
        })
        .join()
        .unwrap();
        assert!(armed_there);
        assert_eq!(counter.0.load(std::sync::atomic::Ordering::SeqCst), 2);
        assert!(!SPIN.with(|spin| spin.armed.get()), "this thread woke nothing");
    }
}
