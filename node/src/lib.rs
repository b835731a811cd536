//! `capstan-node`: the Capstan daemon as a library.
//!
//! - [`runtime`]: the eventual-send runtime for Rust objects: vats, exos
//!   with guards, `E`, promises and CapTP connections;
//! - [`net`]: libp2p: authenticated streams carrying CapTP between nodes;
//! - [`workers`]: worker processes: starting and reaping them, the worker
//!   protocol both sides speak, and (with the `js` feature, the default)
//!   the worker process's own side, a JavaScript engine serving the node
//!   over CapTP on its standard streams;
//! - [`kernel`]: subclusters of vats (in worker processes), kernel
//!   services, krefs, baggage and revocation; embeddable on its own;
//! - [`daemon`]: the node: formulas and their incarnation, the host agent,
//!   names, blobs, formula workers and the control socket;

pub mod daemon;
pub mod kernel;
pub mod net;
pub mod runtime;
pub mod workers;
