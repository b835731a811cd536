//! `capstan-js`: the confined guest JavaScript environment of a Capstan
//! worker, on QuickJS-NG through `rquickjs`.
//!
//! A [`GuestRuntime`] is one QuickJS runtime with a memory cap and a time
//! budget per entry. Each evaluation gets its own compartment (a fresh,
//! tamed and frozen realm) whose globals are the standard ECMAScript ones,
//! the endowments, and the guest globals `E`, `Far`, `makeExo`,
//! `defineExoClass`, `defineExoClassKit`, `M`, `matches`, `mustMatch`,
//! `harden`, `passStyleOf`, `makeTagged`, `makeCopySet`, `makeCopyBag`,
//! `makeCopyMap`, `makeDefaultExo`, `assert` and `console`.
//! `makeDefaultExo(name, methods, interfaceGuard?)` is MetaMask's
//! kernel-utils helper: `makeExo` with an interface whose methods take and
//! return any passables. Guest modules may import only a few synthetic
//! modules that re-export these globals under the names of the Endo and
//! MetaMask packages (`@endo/eventual-send`, `@endo/far`, `@endo/patterns`,
//! `@endo/exo`, `@metamask/kernel-utils/exo`).
//!
//! A vat ([`GuestRuntime::build_vat_with_globals`]) may be granted more
//! globals ([`VatGlobals`], ocap-kernel's names: timers, `Date`, `Math`,
//! `crypto`, `TextEncoder`, `URL`, `atob`, `fetch`, …); without a grant its
//! `Date` has no clock and its `Math.random` throws, as under SES.
//!
//! Pass styles, patterns, guards and copy collections are the Rust value
//! layer of `capstan-protocol`, so their messages are the same on both
//! sides (and Endo's).
//!
//! # Driving it
//!
//! The runtime implements [`Host`] and drives the engine from its vat loop:
//!
//! - [`GuestRuntime::evaluate`], [`GuestRuntime::make_module`] and
//!   [`GuestRuntime::call_module_export`] run guest code;
//!   [`GuestRuntime::deliver`] and [`GuestRuntime::get`] deliver messages
//!   to guest objects the engine exported; [`GuestRuntime::build_vat`]
//!   runs a vat program (`buildRootObject(vatPowers, parameters,
//!   baggage)`) with a baggage whose writes go to a host store. Each is
//!   one turn: it runs the promise jobs it causes and answers an
//!   [`Outcome`]: settled, or pending on a promise the engine reports
//!   later through [`Host::promise_settled`].
//! - Guest sends to host references call [`Host::send`] / [`Host::get`],
//!   which answer at once with a promise reference (pipelining works: a
//!   send to that promise goes to the host at once too); the runtime
//!   later calls [`GuestRuntime::settle`].
//! - [`GuestRuntime::release`] forgets a reference the host dropped.
//!
//! Guest objects cross as [`Reference`](capstan_protocol::Reference)s: each
//! guest remotable or promise keeps one reference, and each host reference
//! one guest object, so identity survives round trips.
//!
//! ```
//! use std::cell::RefCell;
//! use std::rc::Rc;
//!
//! use capstan_js::{GuestLimits, GuestRuntime, Host, LogLevel, Outcome, Settlement};
//! use capstan_protocol::{Reference, Value};
//!
//! #[derive(Default)]
//! struct Logger(RefCell<Vec<String>>);
//!
//! impl Host for Logger {
//!     fn send(&self, _: &Value, _: Option<&str>, _: &[Value], _: bool) -> Result<Option<Reference>, Value> {
//!         Err(Value::from("no host objects here"))
//!     }
//!     fn get(&self, _: &Value, _: &str) -> Result<Reference, Value> {
//!         Err(Value::from("no host objects here"))
//!     }
//!     fn promise_settled(&self, _: &Reference, _: &Settlement) {}
//!     fn log(&self, _: LogLevel, text: &str) {
//!         self.0.borrow_mut().push(text.to_string());
//!     }
//! }
//!
//! let host = Rc::new(Logger::default());
//! let mut guest = GuestRuntime::new(host.clone(), GuestLimits::default()).unwrap();
//!
//! // One evaluation makes a counter; the host holds it as a reference.
//! let source = r#"
//!     const Counter = M.interface('Counter', { incr: M.call(M.number()).returns(M.number()) });
//!     let count = 0;
//!     makeExo('Counter', Counter, { incr(n) { count += n; console.log('count', count); return count; } });
//! "#;
//! let Outcome::Settled(Ok(Value::Remotable(counter))) = guest.evaluate(source, &[]).unwrap() else { panic!() };
//!
//! // The runtime delivers to it (guards checked in Rust)...
//! let outcome = guest.deliver(&counter, Some("incr"), &[Value::from(2)]).unwrap();
//! assert_eq!(outcome.settled().unwrap().unwrap().as_number(), Some(2.0));
//! let outcome = guest.deliver(&counter, Some("incr"), &[Value::from("x")]).unwrap();
//! let Some(Err(Value::Error(error))) = outcome.settled() else { panic!() };
//! assert_eq!(&*error.message, "In \"incr\" method of (Counter): arg 0: string \"x\" - Must be a number");
//!
//! // ...and another evaluation gets it as an endowment.
//! let outcome = guest.evaluate("E(counter).incr(40)", &[("counter", Value::Remotable(counter))]).unwrap();
//! assert_eq!(outcome.settled().unwrap().unwrap().as_number(), Some(42.0));
//! assert_eq!(host.0.borrow().last().unwrap(), "count 42");
//! ```

mod convert;
mod engine;
mod error;
mod globals;
mod host;
mod limits;
mod memory;
mod modules;
mod natives;
mod realm;
mod runtime;

pub use error::GuestError;
pub use globals::{VAT_GLOBAL_NAMES, VatGlobals};
pub use host::{Host, LogLevel, Outcome, Settlement};
pub use limits::{ConversionLimits, GuestLimits};
pub use runtime::{Collected, GuestRuntime};
