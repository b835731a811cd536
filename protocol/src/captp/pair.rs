//! An in-memory transport joining two sessions, for tests and benchmarks.
//!
//! A [`Pair`] holds two [`Side`]s, each a [`Session`] plus a [`Runtime`]
//! that handles its events synchronously (standing for the vat that will
//! run on top). Bytes move in *flights*: one flight takes everything one
//! side has due (as `Session::has_transmit` tells a runtime), feeds it to the other side and lets that side's
//! runtime handle the resulting events. Two flights make a round trip, so
//! tests can count round trips exactly.

use crate::captp::session::{Event, Session};

/// Handles a session's events (the local objects of a test or benchmark).
pub trait Runtime {
    fn handle(&mut self, session: &mut Session, event: Event);
}

impl<F: FnMut(&mut Session, Event)> Runtime for F {
    fn handle(&mut self, session: &mut Session, event: Event) {
        self(session, event)
    }
}

/// A session and the runtime that handles its events.
pub struct Side<R> {
    pub session: Session,
    pub runtime: R,
}

impl<R: Runtime> Side<R> {
    /// Hands every pending event to the runtime (which may cause more).
    pub fn run_events(&mut self) -> usize {
        let mut handled = 0;
        while let Some(event) = self.session.poll_event() {
            self.runtime.handle(&mut self.session, event);
            handled += 1;
        }
        handled
    }
}

/// Which way a flight goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    LeftToRight,
    RightToLeft,
}

/// What crossed the in-memory wire.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TransportStats {
    /// Flights that carried at least one byte.
    pub flights: u64,
    pub bytes_left_to_right: u64,
    pub bytes_right_to_left: u64,
}

/// Two sessions joined back to back.
pub struct Pair<L, R> {
    pub left: Side<L>,
    pub right: Side<R>,
    stats: TransportStats,
    wire: Vec<u8>,
}

impl<L: Runtime, R: Runtime> Pair<L, R> {
    pub fn new(left: Session, left_runtime: L, right: Session, right_runtime: R) -> Pair<L, R> {
        Pair {
            left: Side {
                session: left,
                runtime: left_runtime,
            },
            right: Side {
                session: right,
                runtime: right_runtime,
            },
            stats: TransportStats::default(),
            wire: Vec::new(),
        }
    }

    pub fn stats(&self) -> TransportStats {
        self.stats
    }

    pub fn reset_stats(&mut self) {
        self.stats = TransportStats::default();
    }

    /// Whether either side has bytes to send or events to handle.
    pub fn is_busy(&self) -> bool {
        self.left.session.has_transmit() || self.right.session.has_transmit()
    }

    /// One flight in `direction`; returns the bytes moved (0: nothing was
    /// waiting, and no flight is counted).
    pub fn flight(&mut self, direction: Direction) -> usize {
        self.left.run_events();
        self.right.run_events();
        self.wire.clear();
        let moved = match direction {
            Direction::LeftToRight => {
                if self.left.session.has_transmit() {
                    self.left.session.poll_transmit(&mut self.wire);
                }
                self.right.session.handle_bytes(&self.wire);
                self.right.run_events();
                self.stats.bytes_left_to_right += self.wire.len() as u64;
                self.wire.len()
            }
            Direction::RightToLeft => {
                if self.right.session.has_transmit() {
                    self.right.session.poll_transmit(&mut self.wire);
                }
                self.left.session.handle_bytes(&self.wire);
                self.left.run_events();
                self.stats.bytes_right_to_left += self.wire.len() as u64;
                self.wire.len()
            }
        };
        if moved > 0 {
            self.stats.flights += 1;
        }
        moved
    }

    /// Both sides' queued bytes cross at the same time (each side sends
    /// before it sees what the other sent).
    pub fn cross(&mut self) {
        self.left.run_events();
        self.right.run_events();
        let mut from_left = Vec::new();
        let mut from_right = Vec::new();
        if self.left.session.has_transmit() {
            self.left.session.poll_transmit(&mut from_left);
        }
        if self.right.session.has_transmit() {
            self.right.session.poll_transmit(&mut from_right);
        }
        self.right.session.handle_bytes(&from_left);
        self.left.session.handle_bytes(&from_right);
        self.left.run_events();
        self.right.run_events();
        self.stats.bytes_left_to_right += from_left.len() as u64;
        self.stats.bytes_right_to_left += from_right.len() as u64;
        self.stats.flights += u64::from(!from_left.is_empty()) + u64::from(!from_right.is_empty());
    }

    /// Alternates flights, left first, until neither side has anything to
    /// send; returns the flights made (bounded by `max_flights`).
    pub fn run(&mut self, max_flights: usize) -> usize {
        let mut flights = 0;
        let mut idle_in_a_row = 0;
        let mut direction = Direction::LeftToRight;
        while flights < max_flights && idle_in_a_row < 2 {
            if self.flight(direction) > 0 {
                flights += 1;
                idle_in_a_row = 0;
            } else {
                idle_in_a_row += 1;
            }
            direction = match direction {
                Direction::LeftToRight => Direction::RightToLeft,
                Direction::RightToLeft => Direction::LeftToRight,
            };
        }
        flights
    }

    /// Alternates flights, left first, until `done` holds; returns the
    /// flights made, or `None` if the wire went quiet first or
    /// `max_flights` passed.
    pub fn run_until(&mut self, max_flights: usize, mut done: impl FnMut(&Pair<L, R>) -> bool) -> Option<usize> {
        let mut flights = 0;
        let mut idle_in_a_row = 0;
        let mut direction = Direction::LeftToRight;
        while !done(self) {
            if flights >= max_flights || idle_in_a_row >= 2 {
                return None;
            }
            if self.flight(direction) > 0 {
                flights += 1;
                idle_in_a_row = 0;
            } else {
                idle_in_a_row += 1;
            }
            direction = match direction {
                Direction::LeftToRight => Direction::RightToLeft,
                Direction::RightToLeft => Direction::LeftToRight,
            };
        }
        Some(flights)
    }
}
