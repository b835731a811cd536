//! Endo's CapTP: the JSON wire of `@endo/captp` 4.5, as a second encoding
//! of the one CapTP engine ([`Session`](crate::captp::Session)), so that
//! unmodified JavaScript programs can talk to Capstan objects.
//!
//! - [`message`]: the message set (`CTP_BOOTSTRAP`, `CTP_CALL`,
//!   `CTP_RETURN`, `CTP_RESOLVE`, `CTP_DROP`, `CTP_DISCONNECT`) and its
//!   slots; the one file to read for what crosses the wire;
//! - [`capdata`]: bodies, legacy capdata (`@qclass`) out and capdata or
//!   smallcaps in;
//! - [`json`]: the bounded JSON parser and the `JSON.stringify`-exact writer
//!   under both;
//! - [`netstring`]: framing, as the Endo daemon frames its sockets;
//! - [`bridge`]: the translation layer between this wire and the engine's
//!   messages, and where the two semantics differ.
//!
//! # Driving a session
//!
//! The engine runs unchanged; an [`EndoBridge`] sits between its bytes and
//! the peer's. Bytes from the peer go to [`EndoBridge::handle_peer_bytes`],
//! and what [`EndoBridge::poll_to_engine`] gives goes to
//! [`Session::handle_bytes`](crate::captp::Session::handle_bytes); what
//! [`Session::poll_transmit`](crate::captp::Session::poll_transmit) gives
//! goes to [`EndoBridge::handle_engine_bytes`], and
//! [`EndoBridge::poll_to_peer`] gives the netstrings to write. Both
//! directions can produce output for both sides (a malformed message ends
//! both; the engine's disembargo is answered by the bridge), so poll both
//! after each input.
//!
//! ```
//! use capstan_protocol::captp::endo::EndoBridge;
//! use capstan_protocol::captp::{Event, Limits, Session, SessionId};
//! use capstan_protocol::{Reference, Value};
//!
//! let greeter = Reference::new("Alleged: Greeter", ());
//! let mut session = Session::new(SessionId(1), Some(greeter), Limits::default());
//! let mut bridge = EndoBridge::new(Limits::default());
//!
//! // A JavaScript peer asks for the bootstrap object and pipelines a call.
//! let call = r#"{"type":"CTP_CALL","epoch":0,"questionID":"q-2","target":"q-1","method":{"body":"[\"hello\",[\"Ada\"]]","slots":[]}}"#;
//! let mut wire = Vec::new();
//! for text in [r#"{"type":"CTP_BOOTSTRAP","epoch":0,"questionID":"q-1"}"#, call] {
//!     wire.extend_from_slice(format!("{}:{text},", text.len()).as_bytes());
//! }
//! bridge.handle_peer_bytes(&wire);
//! let mut frames = Vec::new();
//! bridge.poll_to_engine(&mut frames);
//! session.handle_bytes(&frames);
//!
//! while let Some(event) = session.poll_event() {
//!     if let Event::Deliver { method, args, answer: Some(answer), .. } = event {
//!         let greeting = format!("{method}, {}!", args[0].as_str().unwrap());
//!         session.answer(answer, Ok(Value::from(greeting))).unwrap();
//!     }
//! }
//! let mut frames = Vec::new();
//! session.poll_transmit(&mut frames);
//! bridge.handle_engine_bytes(&frames);
//! let mut out = Vec::new();
//! bridge.poll_to_peer(&mut out);
//! let out = String::from_utf8(out).unwrap();
//! assert!(out.contains(r#""answerID":"q-1","result":{"body":"{\"@qclass\":\"slot\",\"iface\":\"Alleged: Greeter\",\"index\":0}","slots":["o+0"]}"#));
//! assert!(out.contains(r#""answerID":"q-2","result":{"body":"\"hello, Ada!\"","slots":[]}"#));
//! ```

pub mod bridge;
pub mod capdata;
pub mod json;
pub mod message;
pub mod netstring;

pub use bridge::EndoBridge;
pub use capdata::{CapData, CapDataError};
pub use message::{EndoMessage, EndoMessageError, EndoOutcome, EndoSlot, SlotLetter};
pub use netstring::{NetstringDecoder, NetstringError, write_netstring};
