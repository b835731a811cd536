//! The eventual-send runtime for Rust objects: vats, exos, `E`, promises,
//! and CapTP connections carrying them to other vats.
//!
//! - [`vat`]: the single-threaded event loop that owns objects and
//!   promises and runs deliveries turn by turn, in send order;
//! - [`exo`]: objects with guards, classes and kits;
//! - [`args`]: decoding a method's arguments into typed values;
//! - [`iterator`]: the `{done, value}` records of the iterator protocol;
//! - [`eventual`]: `E(target).call(..)`, `E.get`, send-only, `when`;
//! - [`connection`]: a CapTP session on a byte stream, driven by a vat;
//! - `outbound`: the write side of a connection.
//!
//! Local and remote targets are used the same way: a remote target is a
//! presence bound to a session, and sending to it goes through the session
//! (pipelined when it is a promise).

pub mod args;
pub mod connection;
pub mod eventual;
pub mod exo;
pub mod iterator;
mod outbound;
pub mod vat;

pub use connection::{
    ConnectionHandle, GC_INTERVAL, SessionCounts, SessionKind, SessionOptions, connect, connect_with,
};
pub use eventual::{E, EProxy, PromiseKit, Settle, When, reason_to_error, when};
pub use exo::{Context, Exo, ExoClass, ExoClassBuilder, ExoClassKit, LocalClass, MethodResult, Methods};
pub use vat::{Behavior, DeliveryGate, Foreign, Invocation, Message, Resolver, Settlement, Vat, Waiter, type_error};
