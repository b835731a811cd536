//! The memory cap of a guest runtime, enforced by QuickJS's allocator.
//!
//! QuickJS's own limit refuses an allocation and throws an out-of-memory
//! error that the guest may catch, or that QuickJS itself may fail to
//! build (it then throws `null`). The runtime must know when the cap was
//! hit however the guest reacts, so the runtime's allocator is this one:
//! libc's `malloc`, counting the bytes it hands out and refusing any that
//! would pass the cap. The first refusal *trips* the gauge: the entry that
//! hit the cap ends with a memory error whatever the guest does next. Once
//! tripped, a small reserve (counted in bytes handed out, whatever is
//! freed meanwhile) lets QuickJS build its error and unwind; past it every
//! allocation fails, so a guest that catches the error and frees what it
//! held cannot go on allocating until the interrupt handler stops it.

use std::cell::Cell;
use std::rc::Rc;

use rquickjs::allocator::Allocator;

/// What may be allocated once the cap tripped, in all, so the engine can
/// build the out-of-memory error and unwind rather than fail again.
const RESERVE_BYTES: usize = 1024 * 1024;

/// How much the JavaScript heap holds, its cap, and whether the cap was
/// hit since [`Gauge::rearm`].
#[derive(Debug)]
pub(crate) struct Gauge {
    used: Cell<usize>,
    limit: usize,
    tripped: Cell<bool>,
    /// Bytes handed out since the gauge tripped.
    since_tripped: Cell<usize>,
}

impl Gauge {
    pub fn new(limit: usize) -> Gauge {
        Gauge {
            used: Cell::new(0),
            limit,
            tripped: Cell::new(false),
            since_tripped: Cell::new(0),
        }
    }

    /// Bytes held now (as `malloc` counts them).
    pub fn used(&self) -> usize {
        self.used.get()
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Whether an allocation was refused since the last [`Gauge::rearm`].
    pub fn tripped(&self) -> bool {
        self.tripped.get()
    }

    /// Starts a new entry: the cap has not been hit in it yet.
    pub fn rearm(&self) {
        self.tripped.set(false);
        self.since_tripped.set(0);
    }

    fn trip(&self) {
        self.tripped.set(true);
    }

    /// Whether `extra` more bytes fit; refusing trips the gauge.
    fn admit(&self, extra: usize) -> bool {
        if self.tripped.get() {
            let spent = self.since_tripped.get().saturating_add(extra);
            if spent > RESERVE_BYTES || self.used.get().saturating_add(extra) > self.limit.saturating_add(RESERVE_BYTES)
            {
                return false;
            }
            self.since_tripped.set(spent);
            return true;
        }
        if self.used.get().saturating_add(extra) > self.limit {
            self.trip();
            return false;
        }
        true
    }

    fn add(&self, bytes: usize) {
        self.used.set(self.used.get().saturating_add(bytes));
    }

    fn remove(&self, bytes: usize) {
        self.used.set(self.used.get().saturating_sub(bytes));
    }
}

/// QuickJS's allocator: libc's, under a [`Gauge`].
pub(crate) struct CappedAllocator {
    gauge: Rc<Gauge>,
}

impl CappedAllocator {
    pub fn new(gauge: Rc<Gauge>) -> CappedAllocator {
        CappedAllocator { gauge }
    }
}

fn usable(ptr: *mut u8) -> usize {
    // SAFETY: callers pass a live pointer from this allocator's malloc,
    // calloc or realloc (or null, for which glibc and musl answer 0).
    unsafe { libc::malloc_usable_size(ptr.cast()) }
}

// SAFETY: every pointer returned comes from libc's malloc, calloc or
// realloc, which align to at least 16 bytes (more than `usize`) and give
// at least the size asked; `usable_size` is libc's for those pointers.
unsafe impl Allocator for CappedAllocator {
    fn alloc(&mut self, size: usize) -> *mut u8 {
        if size == 0 || !self.gauge.admit(size) {
            return std::ptr::null_mut();
        }
        // SAFETY: malloc may be called with any non-zero size.
        let ptr = unsafe { libc::malloc(size) }.cast::<u8>();
        if ptr.is_null() {
            // The process is out of memory (or address space): as good as
            // the cap for the guest.
            self.gauge.trip();
            return ptr;
        }
        self.gauge.add(usable(ptr));
        ptr
    }

    fn calloc(&mut self, count: usize, size: usize) -> *mut u8 {
        let Some(total) = count.checked_mul(size) else {
            return std::ptr::null_mut();
        };
        if total == 0 || !self.gauge.admit(total) {
            return std::ptr::null_mut();
        }
        // SAFETY: calloc may be called with any count and size.
        let ptr = unsafe { libc::calloc(count, size) }.cast::<u8>();
        if ptr.is_null() {
            self.gauge.trip();
            return ptr;
        }
        self.gauge.add(usable(ptr));
        ptr
    }

    unsafe fn dealloc(&mut self, ptr: *mut u8) {
        if ptr.is_null() {
            return;
        }
        self.gauge.remove(usable(ptr));
        // SAFETY: the caller gives a live pointer from this allocator.
        unsafe { libc::free(ptr.cast()) };
    }

    unsafe fn realloc(&mut self, ptr: *mut u8, new_size: usize) -> *mut u8 {
        if ptr.is_null() {
            return self.alloc(new_size);
        }
        if new_size == 0 {
            // SAFETY: as for `dealloc`.
            unsafe { self.dealloc(ptr) };
            return std::ptr::null_mut();
        }
        let old = usable(ptr);
        if new_size > old && !self.gauge.admit(new_size - old) {
            return std::ptr::null_mut();
        }
        // SAFETY: the caller gives a live pointer from this allocator; on
        // failure realloc leaves it as it was.
        let moved = unsafe { libc::realloc(ptr.cast(), new_size) }.cast::<u8>();
        if moved.is_null() {
            self.gauge.trip();
            return moved;
        }
        self.gauge.remove(old);
        self.gauge.add(usable(moved));
        moved
    }

    unsafe fn usable_size(ptr: *mut u8) -> usize {
        usable(ptr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gauge_counts_refuses_and_trips() {
        let gauge = Rc::new(Gauge::new(64 * 1024));
        let mut allocator = CappedAllocator::new(Rc::clone(&gauge));
        let small = allocator.alloc(1000);
        assert!(!small.is_null());
        assert!(gauge.used() >= 1000);
        assert!(!gauge.tripped());
        assert!(allocator.alloc(128 * 1024).is_null());
        assert!(gauge.tripped());
        // Past the cap, the reserve is open until the next entry, for
        // 1 MiB in all however much is freed meanwhile.
        for _ in 0..8 {
            let reserve = allocator.alloc(128 * 1024);
            assert!(!reserve.is_null());
            // SAFETY: the pointer comes from this allocator.
            unsafe { allocator.dealloc(reserve) };
        }
        assert!(allocator.alloc(128 * 1024).is_null());
        // SAFETY: the pointer comes from this allocator.
        unsafe {
            assert!(allocator.realloc(small, 4000).is_null());
            allocator.dealloc(small);
        }
        assert_eq!(gauge.used(), 0);
        gauge.rearm();
        assert!(!gauge.tripped());
        let again = allocator.alloc(32 * 1024);
        assert!(!again.is_null());
        // SAFETY: the pointer comes from this allocator.
        unsafe { allocator.dealloc(again) };
        assert!(allocator.calloc(usize::MAX, 2).is_null());
    }
}
