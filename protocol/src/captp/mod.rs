//! CapTP: eventual send between two parties over one session, sans-IO.
//!
//! - [`message`]: the message set and its postcard encoding (the one file
//!   to read for what crosses the wire);
//! - [`codec`]: framing (varint length prefix + one message) and a pure
//!   incremental [`FrameDecoder`];
//! - [`session`]: the [`Session`] state machine;
//! - [`limits`]: what a session accepts from its peer;
//! - [`pair`]: an in-memory transport joining two sessions, for tests and
//!   benchmarks;
//! - [`endo`]: Endo's JSON CapTP (`@endo/captp`) as a second encoding of
//!   the same engine, for JavaScript peers.
//!
//! # Driving a session
//!
//! A session is shaped like quinn-proto's `Connection`: the runtime feeds
//! it bytes ([`Session::handle_bytes`]) or decoded messages, calls into it
//! to send, and takes out frames ([`Session::poll_transmit`]) and
//! [`Event`]s ([`Session::poll_event`]). It never blocks, spawns or reads a
//! clock.
//!
//! - **Imports** surface as [`Reference`](crate::Reference)s whose target
//!   is a [`RemoteTarget`] (downcast with [`RemoteTarget::of`]): a
//!   presence, an imported promise, or the promise for one of our calls (a
//!   question). Send to them with [`Session::send`], [`Session::send_only`]
//!   and [`Session::get`]; each returns at once, and the returned promise
//!   can be sent to before it settles (pipelining: a chain of N dependent
//!   calls costs one round trip). A send to something that is not remote on
//!   this session returns [`SendError::NotRemote`] with the local value to
//!   deliver to.
//! - **Exports** are any other references found in arguments or results;
//!   the session assigns them positions and counts sends for GC. When a
//!   local promise is exported the runtime gets [`Event::WatchPromise`] and
//!   reports its settlement with [`Session::resolve_export`].
//! - **Calls from the peer** arrive as [`Event::Deliver`] / [`Event::Get`]
//!   in the order they must run; the runtime runs each in its own turn and
//!   reports the result with [`Session::answer`].
//! - **Settlements** of questions and imported promises arrive as
//!   [`Event::Settled`], after any disembargo needed for E-order.
//! - **GC**: when the runtime no longer holds an import it calls
//!   [`Session::drop_reference`], or lets the session find every import
//!   only its table still holds with [`Session::drop_unheld`] (when
//!   [`Session::is_gc_due`], and on a timer); the session sends
//!   `DropExports` with wire deltas, and the exporter frees an export only
//!   when every send of it was acknowledged.
//! - **Abort**: any malformed or hostile input, or a limit exceeded, ends
//!   the session with `Abort { reason }`; every pending question on both
//!   sides settles rejected with the reason, and [`Event::Aborted`] is
//!   the last event. A runtime that must not pass a peer's reason on sets
//!   the text its callers get instead
//!   ([`Session::replace_peer_abort_reasons`]).
//!
//! ```
//! use capstan_protocol::captp::{Event, Limits, Session, SessionId};
//! use capstan_protocol::{Reference, Value};
//!
//! let counter = Reference::new("Alleged: Counter", ());
//! let mut alice = Session::new(SessionId(1), None, Limits::default());
//! let mut bob = Session::new(SessionId(2), Some(counter), Limits::default());
//!
//! // Alice pipelines a call on Bob's bootstrap object before it arrives.
//! let bootstrap = alice.bootstrap().unwrap();
//! let result = alice.send(&bootstrap, "incr", &[Value::from(1)]).unwrap();
//!
//! // One round trip over an in-memory wire.
//! let mut wire = Vec::new();
//! alice.poll_transmit(&mut wire);
//! bob.handle_bytes(&wire);
//! while let Some(event) = bob.poll_event() {
//!     if let Event::Deliver { method, args, answer: Some(answer), .. } = event {
//!         assert_eq!(&*method, "incr");
//!         bob.answer(answer, Ok(args[0].clone())).unwrap();
//!     }
//! }
//! wire.clear();
//! bob.poll_transmit(&mut wire);
//! alice.handle_bytes(&wire);
//!
//! let mut settled = Vec::new();
//! while let Some(event) = alice.poll_event() {
//!     if let Event::Settled { promise, outcome } = event {
//!         settled.push((Value::Promise(promise), outcome));
//!     }
//! }
//! let (promise, outcome) = &settled[1];
//! assert!(promise.same_as(&result));
//! assert_eq!(outcome.as_ref().unwrap().as_number(), Some(1.0));
//! ```

pub mod codec;
pub mod endo;
pub mod limits;
pub mod message;
pub mod pair;
pub mod session;

pub use codec::{FrameDecoder, FrameError};
pub use limits::Limits;
pub use message::{Body, Message, Outcome, Positions, Target};
pub use session::{
    AnswerId, DEFERRED_ANSWER_DROPS, Event, RemoteKind, RemoteTarget, SendError, Session, SessionId, SettleError,
    Settlement,
};
