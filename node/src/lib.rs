//! `capstan-node`: the Capstan daemon as a library.
//!
//! So far it holds the eventual-send [`runtime`] for Rust objects: vats,
//! exos with guards, `E`, promises and CapTP connections.

pub mod runtime;
