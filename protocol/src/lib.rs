//! `capstan-protocol`: the sans-IO core of Capstan.
//!
//! It owns the passable value type ([`value`]), rank and key order
//! ([`order`]), copy collections ([`collections`]), patterns and guards
//! ([`patterns`], [`guards`]), and their text renderings ([`quote`]);
//! also the names of the globals a kernel vat may be granted
//! ([`vat_globals`]), shared by the node and the engine.
//! Nothing here does I/O, spawns, or reads a clock.
//!
//! ```
//! use capstan_protocol::patterns::{M, must_match};
//! use capstan_protocol::{Value, list, record};
//!
//! let user = record! { "name" => "Ada", "tags" => list!["math", "poetry"] };
//! let shape = record! { "name" => M::string(), "tags" => M::array_of(M::string(), None) };
//! assert!(must_match(&user, &shape, None).is_ok());
//!
//! let error = must_match(&Value::from(3), &M::string(), None).unwrap_err();
//! assert_eq!(error.message, "number 3 - Must be a string");
//! ```

pub mod captp;
pub mod collections;
pub mod guards;
pub mod json;
pub mod marshal;
pub mod order;
pub mod patterns;
pub mod quote;
pub mod rejection;
pub mod smallcaps;
pub mod strings;
pub mod value;
pub mod vat_globals;

pub use rejection::Rejection;
pub use value::{ErrorValue, PassStyle, Record, Reference, Settlement, Tagged, Value, ValueError, far};
