//! What the node's local servers (the web-app server and the Endo CapTP
//! socket) share when they accept connections: a bound on how many are
//! open at once, and a pause after a failed accept. The web server is
//! reachable by every page in the user's browser, so without a bound one
//! page could hold every descriptor the node has; and an accept that fails
//! because descriptors ran out fails again at once, so retrying without a
//! pause would spin a core.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

/// How long an accept loop waits after a failed accept.
pub const PAUSE_AFTER_ACCEPT_ERROR: Duration = Duration::from_millis(100);

/// Counts the open connections of one server, up to a maximum.
#[derive(Clone, Debug)]
pub struct ConnectionSlots {
    open: Rc<Cell<usize>>,
    max: usize,
}

/// One open connection's place; it is given back when dropped.
#[derive(Debug)]
pub struct ConnectionSlot {
    open: Rc<Cell<usize>>,
}

impl ConnectionSlots {
    /// Room for `max` connections at once.
    pub fn new(max: usize) -> Self {
        Self {
            open: Rc::new(Cell::new(0)),
            max,
        }
    }

    /// A place for one more connection, or `None` when all are taken.
    pub fn try_take(&self) -> Option<ConnectionSlot> {
        let open = self.open.get();
        if open >= self.max {
            return None;
        }
        self.open.set(open + 1);
        Some(ConnectionSlot {
            open: Rc::clone(&self.open),
        })
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.open.set(self.open.get().saturating_sub(1));
    }
}

/// Logs a failed accept of `server` and waits before the next one.
pub async fn pause_after_accept_error(server: &str, error: &std::io::Error) {
    tracing::warn!(%error, server, "accepting a connection failed");
    tokio::time::sleep(PAUSE_AFTER_ACCEPT_ERROR).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_run_out_at_the_maximum_and_come_back_when_dropped() {
        let slots = ConnectionSlots::new(2);
        let first = slots.try_take().unwrap();
        let second = slots.try_take().unwrap();
        assert!(slots.try_take().is_none());
        drop(first);
        let third = slots.try_take().unwrap();
        assert!(slots.try_take().is_none());
        drop((second, third));
        let again: Vec<_> = (0..2).map(|_| slots.try_take()).collect();
        assert!(again.iter().all(Option::is_some));
    }
}
