//! `capstan-protocol`: the sans-IO core of Capstan.
//!
//! It owns the passable value type ([`value`]), rank and key order
//! ([`order`]), copy collections ([`collections`]), patterns and guards
//! ([`patterns`], [`guards`]), and their text renderings ([`quote`]).
//! Nothing here does I/O, spawns, or reads a clock.

pub mod collections;
pub mod guards;
pub mod order;
pub mod patterns;
pub mod quote;
pub mod rejection;
pub mod smallcaps;
pub mod strings;
pub mod value;

pub use rejection::Rejection;
pub use value::{ErrorValue, PassStyle, Record, Reference, Tagged, Value, ValueError, far};
