//! Limits on one guest runtime: memory, time per entry, and the size of
//! values converted between JavaScript and Rust.

use std::time::Duration;

/// Limits for a [`GuestRuntime`](crate::GuestRuntime).
#[derive(Clone, Debug)]
pub struct GuestLimits {
    /// The most memory the JavaScript heap may use: the runtime's
    /// allocator refuses more, and the entry that asked for it fails with
    /// [`GuestError::MemoryLimitExceeded`](crate::GuestError) whatever the
    /// guest does with the out-of-memory error.
    pub memory_bytes: usize,
    /// How long one entry (an evaluation, a delivery, a settlement, with
    /// the promise jobs it causes) may run before it is interrupted,
    /// counted in its thread's CPU time.
    pub time_budget: Duration,
    /// The most native stack an entry may use (QuickJS counts the Rust
    /// frames of conversions too); keep it well under the thread's stack.
    pub stack_bytes: usize,
    pub conversion: ConversionLimits,
}

impl Default for GuestLimits {
    fn default() -> GuestLimits {
        GuestLimits {
            memory_bytes: 64 * 1024 * 1024,
            time_budget: Duration::from_millis(1000),
            stack_bytes: 1024 * 1024,
            conversion: ConversionLimits::default(),
        }
    }
}

/// Bounds on one conversion of a JavaScript value to a Rust value, so a
/// guest cannot overflow the Rust stack or make the host allocate without
/// bound (the same defaults as the wire: depth 64, 16 MiB).
#[derive(Clone, Copy, Debug)]
pub struct ConversionLimits {
    /// Nesting depth of containers (arrays, records, tagged, errors).
    pub max_depth: usize,
    /// Values in one conversion, counting every nested value.
    pub max_values: usize,
    /// Bytes of strings, byte arrays and bigint digits in one conversion.
    pub max_bytes: usize,
}

impl Default for ConversionLimits {
    fn default() -> ConversionLimits {
        ConversionLimits {
            max_depth: 64,
            max_values: 1_000_000,
            max_bytes: 16 * 1024 * 1024,
        }
    }
}
