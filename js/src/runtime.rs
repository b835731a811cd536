//! [`GuestRuntime`]: one QuickJS runtime per worker, its limits, and the
//! entry points a runtime drives it with (evaluate, call a module export,
//! deliver, get, settle, run jobs, release).
//!
//! Every entry into JavaScript runs under a deadline enforced by the
//! interrupt handler, and drains the promise jobs it causes before it
//! returns (a delivery and its microtasks are one turn of the vat). Once
//! the deadline passes, the handler keeps interrupting until the entry
//! returns, so a guest that catches the interruption cannot run on.
//!
//! The memory cap works the same way: the runtime's allocator refuses what
//! would pass the cap and trips (see `memory.rs`); from then on the
//! handler interrupts too, and the entry ends with the memory error even
//! if the guest caught the out-of-memory error and finished.
//!
//! After an entry that ran out of time or memory, the runtime collects its
//! garbage and says whether it should be replaced
//! ([`GuestRuntime::replacement_reason`]): when its heap stays high, when
//! the runaway turn left jobs that could not be stopped, or when the turn
//! shared the runtime's long-lived objects (a delivery, a settlement),
//! whose pending promise reactions the stop may have cut off.

use std::borrow::Borrow;
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

use capstan_protocol::guards::CallKind;
use capstan_protocol::{Reference, Value};
use rquickjs::function::This;
use rquickjs::promise::PromiseState;
use rquickjs::{Array, Context, Ctx, Function, Module, Object, Runtime, Value as JsValue};

use crate::convert::{Converter, Mode, error_name_and_message, reason_to_value};
use crate::engine::Engine;
use crate::error::GuestError;
use crate::globals::VatGlobals;
use crate::host::{Host, Outcome, Settlement};
use crate::limits::GuestLimits;
use crate::memory::{CappedAllocator, Gauge};
use crate::modules::SyntheticModules;
use crate::{natives, realm};

const LIBRARY_SOURCE: &str = include_str!("library.js");
const OUT_OF_MEMORY: &str = "out of memory";
const MODULE_WAITING: &str = "Module evaluation is waiting on a promise the host has not settled";
/// How long the jobs left by a runaway turn are given to fail before the
/// runtime counts itself poisoned (at most the time budget).
const PURGE_TIME: Duration = Duration::from_secs(2);
/// A cycle collection that took at least this long (a large heap) is not
/// run again by [`GuestRuntime::collect_garbage`] until
/// [`COLLECTOR_SPACING`] times as long has passed, so a worker holding
/// many objects (a burst of sends in flight) spends at most about a
/// seventeenth of its time collecting on the timer (QuickJS's own
/// collections, as its heap grows, go on). Shorter ones run every time.
const SLOW_COLLECTION: Duration = Duration::from_millis(4);
const COLLECTOR_SPACING: u32 = 16;

/// How the evaluation of a guest module came out.
enum ModuleEvaluation<'js> {
    Done(Module<'js, rquickjs::module::Evaluated>),
    Threw(JsValue<'js>),
    /// Its top-level await waits on the host.
    Waiting,
}

/// The time budget of the current entry, shared with the interrupt
/// handler. It counts the worker thread's CPU time, not wall-clock time: a
/// guest is stopped for what it ran, not for how long a loaded machine
/// kept its thread waiting. Reading the thread's CPU clock is a system
/// call, so an entry does it only once it has run long enough to be
/// polled, and again only after a wall-clock budget has passed (a thread
/// cannot use more CPU time than wall-clock time).
#[derive(Default)]
struct Budget {
    budget: Cell<Duration>,
    started: Cell<Option<Instant>>,
    /// The thread's CPU time at the entry's first poll.
    cpu_origin: Cell<Option<Duration>>,
    tripped: Cell<bool>,
}

impl Budget {
    fn start(&self, budget: Duration) {
        self.tripped.set(false);
        self.budget.set(budget);
        self.started.set(Some(Instant::now()));
        self.cpu_origin.set(None);
    }

    /// Ends the entry; says whether the budget ran out during it.
    fn finish(&self) -> bool {
        self.started.set(None);
        self.tripped.replace(false)
    }

    fn should_interrupt(&self) -> bool {
        if self.tripped.get() {
            return true;
        }
        let Some(started) = self.started.get() else {
            return false;
        };
        let cpu_origin = match self.cpu_origin.get() {
            Some(origin) => origin,
            None => {
                let origin = thread_cpu_time();
                self.cpu_origin.set(Some(origin));
                origin
            }
        };
        let budget = self.budget.get();
        if started.elapsed() < budget {
            return false;
        }
        if thread_cpu_time().saturating_sub(cpu_origin) >= budget {
            self.tripped.set(true);
            return true;
        }
        false
    }
}

/// The CPU time the calling thread has used.
fn thread_cpu_time() -> Duration {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `now` is a valid, writable timespec for the duration of the
    // call, and CLOCK_THREAD_CPUTIME_ID is a clock every Linux has.
    let status = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    if status != 0 {
        return Duration::ZERO;
    }
    Duration::new(
        u64::try_from(now.tv_sec).unwrap_or(0),
        u32::try_from(now.tv_nsec).unwrap_or(0),
    )
}

/// Whether an entry ran in a compartment of its own (an evaluation, a
/// module, a vat program) or among the runtime's long-lived objects (a
/// delivery, a get, a settlement, jobs).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Scope {
    Fresh,
    Shared,
}

/// What one [`GuestRuntime::collect_garbage`] let go.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Collected {
    /// Imports whose objects QuickJS collected.
    pub imports: usize,
    /// Exports the host no longer held.
    pub exports: usize,
}

/// The confined JavaScript engine of one worker.
///
/// Not `Send`: it belongs to the single thread of its vat loop.
pub struct GuestRuntime {
    engine: Rc<Engine>,
    root: Context,
    budget: Rc<Budget>,
    gauge: Rc<Gauge>,
    limits: GuestLimits,
    poisoned: Cell<bool>,
    replacement: RefCell<Option<String>>,
    /// A locked-down compartment made ahead of need, between entries
    /// ([`GuestRuntime::prepare_compartment`]), for the next evaluation.
    spare: RefCell<Option<Context>>,
    /// When the last cycle collection of `collect_garbage` ended and how
    /// long it took.
    last_collection: Cell<Option<(Instant, Duration)>>,
    runtime: Runtime,
}

/// What a guest call returned or threw.
type Called<'js> = Result<JsValue<'js>, JsValue<'js>>;

impl GuestRuntime {
    /// A runtime with the given limits that calls out to `host`.
    pub fn new(host: Rc<dyn Host>, limits: GuestLimits) -> Result<GuestRuntime, GuestError> {
        let gauge = Rc::new(Gauge::new(limits.memory_bytes));
        let runtime = Runtime::new_with_alloc(CappedAllocator::new(Rc::clone(&gauge)))?;
        runtime.set_max_stack_size(limits.stack_bytes);
        let budget = Rc::new(Budget::default());
        let handler_budget = Rc::clone(&budget);
        let handler_gauge = Rc::clone(&gauge);
        runtime.set_interrupt_handler(Some(Box::new(move || {
            handler_gauge.tripped() || handler_budget.should_interrupt()
        })));
        let stopped = {
            let (gauge, budget) = (Rc::clone(&gauge), Rc::clone(&budget));
            let (limit_bytes, budget_ms) = (limits.memory_bytes, limits.time_budget.as_millis());
            Box::new(move || {
                if gauge.tripped() {
                    Some(GuestError::MemoryLimitExceeded { limit_bytes })
                } else if budget.tripped.get() {
                    Some(GuestError::TimeBudgetExceeded { budget_ms })
                } else {
                    None
                }
            })
        };
        let engine = Rc::new(Engine::new(host, limits.conversion, stopped));
        runtime.set_loader(SyntheticModules, SyntheticModules);
        let root = Context::full(&runtime)?;
        let guest_runtime = GuestRuntime {
            engine,
            root,
            budget,
            gauge,
            limits,
            poisoned: Cell::new(false),
            replacement: RefCell::new(None),
            spare: RefCell::new(None),
            last_collection: Cell::new(None),
            runtime,
        };
        let root = guest_runtime.root.clone();
        guest_runtime.enter(&root, |ctx| {
            let natives = js(natives::install(ctx, &guest_runtime.engine))?;
            let init: Function = js(ctx.eval(LIBRARY_SOURCE))?;
            let api: Object = js(init.call((natives,)))?;
            guest_runtime
                .engine
                .set_library(rquickjs::Persistent::save(ctx, api.clone()));
            js(realm::lockdown(ctx, &guest_runtime.engine, realm::Taming::default()))?;
            let freeze: Function = js(api.get("freeze"))?;
            js(freeze.call::<_, JsValue>((ctx.globals(),)))?;
            Ok(())
        })?;
        Ok(guest_runtime)
    }

    pub fn limits(&self) -> &GuestLimits {
        &self.limits
    }

    /// Bytes the JavaScript heap holds now.
    pub fn memory_usage(&self) -> usize {
        self.gauge.used()
    }

    /// Whether a turn that ran out of time or memory left promise jobs
    /// that could not be dropped (an endless chain of short jobs): they
    /// will eat into every later entry's budget, so the worker should be
    /// replaced.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned.get()
    }

    /// Why this runtime should be replaced by a new one, if it should: set
    /// after an entry that ran out of time or memory when
    ///
    /// - the heap still holds more than half the cap after a garbage
    ///   collection (the next entries would fail the same way);
    /// - the runaway turn left promise jobs that could not be stopped
    ///   ([`GuestRuntime::is_poisoned`]);
    /// - the entry was a delivery, a get, a settlement or a run of jobs:
    ///   it ran among long-lived objects, and stopping it may have left
    ///   promises other callers wait on pending forever (QuickJS drops the
    ///   reactions it cannot run or allocate).
    ///
    /// The runtime goes on answering, but its owner should retire it.
    pub fn replacement_reason(&self) -> Option<String> {
        self.replacement.borrow().clone()
    }

    /// Whether `reference` is one this runtime exported (a guest object).
    pub fn owns(&self, reference: &Reference) -> bool {
        self.engine.export_id(reference).is_some()
    }

    /// Evaluates `source` (an expression or a program, strict mode) in a
    /// new compartment whose globals are the guest globals plus
    /// `endowments`; the outcome is its completion value.
    pub fn evaluate(&mut self, source: &str, endowments: &[(&str, Value)]) -> Result<Outcome, GuestError> {
        let result = self.in_compartment(|ctx| {
            let globals = ctx.globals();
            let mut converter = js(Converter::new(&self.engine, ctx, Mode::Export))?;
            for (name, value) in endowments {
                let value = js(converter.js_value(value))?;
                js(globals.set(*name, value))?;
            }
            let called = self.call_guest(ctx, realm::eval_strict(ctx, source))?;
            self.turn(ctx, called)
        });
        self.finish(Scope::Fresh, result)
    }

    /// Evaluates `source` as an ES module in a new compartment (it may
    /// import only the synthetic modules named in the crate docs) and
    /// calls its export `make(powers)`.
    pub fn make_module(&mut self, source: &str, powers: Value) -> Result<Outcome, GuestError> {
        self.call_module_export(source, "make", &[powers])
    }

    /// Evaluates `source` as an ES module in a new compartment and calls
    /// its export `export` with `args`.
    pub fn call_module_export(&mut self, source: &str, export: &str, args: &[Value]) -> Result<Outcome, GuestError> {
        let result = self.in_compartment(|ctx| {
            let module = match self.evaluate_module(ctx, source)? {
                ModuleEvaluation::Done(module) => module,
                ModuleEvaluation::Threw(thrown) => return self.settled_error(ctx, &thrown),
                ModuleEvaluation::Waiting => {
                    return Ok(Outcome::Settled(Err(Value::error(
                        capstan_protocol::ErrorValue::plain(MODULE_WAITING),
                    ))));
                }
            };
            let function: JsValue = js(module.get(export))?;
            let Some(function) = function.as_function().cloned() else {
                return Ok(Outcome::Settled(Err(Value::error(
                    capstan_protocol::ErrorValue::type_error(format!("The module has no exported function {export:?}")),
                ))));
            };
            let mut converter = js(Converter::new(&self.engine, ctx, Mode::Export))?;
            let js_args = js(args
                .iter()
                .map(|arg| converter.js_value(arg))
                .collect::<rquickjs::Result<Vec<_>>>())?;
            let mut call = rquickjs::function::Args::new(ctx.clone(), js_args.len());
            js(call.push_args(js_args))?;
            let called = self.call_guest(ctx, call.apply::<JsValue>(&function))?;
            self.turn(ctx, called)
        });
        self.finish(Scope::Fresh, result)
    }

    /// Runs a vat program: evaluates `source` (an ES module exporting
    /// `buildRootObject(vatPowers, parameters, baggage)`) in a new
    /// compartment and builds its root object; the outcome is the root
    /// (waiting for it if `buildRootObject` returns a promise).
    ///
    /// The vat's `baggage` starts with `entries` (string keys, passable
    /// values). Each successful `init(key, value)`, `set(key, value)` and
    /// `delete(key)` of the vat is also sent, send-only and in order, to
    /// `store` (a host reference, usually).
    ///
    /// Failures: a module that does not evaluate, a missing export, or a
    /// `buildRootObject` that throws or rejects reject with
    /// `buildRootObject failed: {message}`; a root that is not a
    /// remotable rejects with `buildRootObject must return a remotable
    /// root object, not {value}`.
    pub fn build_vat(
        &mut self,
        source: &str,
        parameters: &Value,
        entries: &[(String, Value)],
        store: &Value,
        powers: &Value,
    ) -> Result<Outcome, GuestError> {
        self.build_vat_with_globals(source, parameters, entries, store, powers, &VatGlobals::default())
    }

    /// [`GuestRuntime::build_vat`] with `globals` granted beyond the
    /// standard confined set (see [`VatGlobals`]). A vat compartment's
    /// `Date` has no clock and its `Math.random` throws unless `globals`
    /// grants `"Date"` or `"Math"`.
    pub fn build_vat_with_globals(
        &mut self,
        source: &str,
        parameters: &Value,
        entries: &[(String, Value)],
        store: &Value,
        powers: &Value,
        globals: &VatGlobals,
    ) -> Result<Outcome, GuestError> {
        let entries = Value::array(
            entries
                .iter()
                .map(|(key, value)| Value::array([Value::from(key.as_str()), value.clone()])),
        );
        let taming = realm::Taming {
            date: !globals.grants("Date"),
            random: !globals.grants("Math"),
        };
        let result = self.in_tamed_compartment(taming, |ctx| {
            js(crate::globals::install(ctx, &self.engine, globals))?;
            // Before any guest code runs, while `Promise` is the realm's own.
            let vat_promise: JsValue = js(ctx.globals().get("Promise"))?;
            let adopt = js(js(self.engine.library(ctx))?.function("adoptHostPromiseRealm"))?;
            js(adopt.call::<_, JsValue>((vat_promise,)))?;
            let undefined = JsValue::new_undefined(ctx.clone());
            let (namespace, threw, thrown) = match self.evaluate_module(ctx, source)? {
                ModuleEvaluation::Done(module) => (js(module.namespace())?.into_value(), false, undefined),
                ModuleEvaluation::Threw(thrown) => (undefined.clone(), true, thrown),
                ModuleEvaluation::Waiting => (
                    undefined,
                    true,
                    js(rquickjs::Exception::from_message(ctx.clone(), MODULE_WAITING))?.into_value(),
                ),
            };
            let mut converter = js(Converter::new(&self.engine, ctx, Mode::Export))?;
            let mut call = rquickjs::function::Args::new(ctx.clone(), 7);
            js(call.push_args([namespace, JsValue::new_bool(ctx.clone(), threw), thrown]))?;
            for value in [parameters, &entries, store, powers] {
                js(call.push_arg(js(converter.js_value(value))?))?;
            }
            let build_vat = js(converter.library().function("buildVat"))?;
            let called = self.call_guest(ctx, call.apply::<JsValue>(&build_vat))?;
            self.turn(ctx, called)
        });
        self.finish(Scope::Fresh, result)
    }

    /// Declares and evaluates `source` as the module of the compartment
    /// `ctx`, running the jobs its evaluation causes.
    fn evaluate_module<'js>(&self, ctx: &Ctx<'js>, source: &str) -> Result<ModuleEvaluation<'js>, GuestError> {
        let evaluated = Module::declare(ctx.clone(), "guest-module", source).and_then(|module| module.eval());
        let (module, evaluation) = match self.call_guest(ctx, evaluated)? {
            Ok(evaluated) => evaluated,
            Err(thrown) => return Ok(ModuleEvaluation::Threw(thrown)),
        };
        self.drain(ctx)?;
        match evaluation.state() {
            PromiseState::Resolved => Ok(ModuleEvaluation::Done(module)),
            PromiseState::Rejected => {
                let thrown = js(evaluation
                    .result::<JsValue>()
                    .map_or(Ok(()), |result| result.map(|_| ())))
                .err()
                .map(|_| ctx.catch());
                Ok(ModuleEvaluation::Threw(
                    thrown.unwrap_or_else(|| JsValue::new_undefined(ctx.clone())),
                ))
            }
            PromiseState::Pending => Ok(ModuleEvaluation::Waiting),
        }
    }

    /// Delivers a message from the host to a guest object this runtime
    /// exported: `method` on it, or a call of it (`None`). Exo calls are
    /// checked by the method's guard here in Rust, before and after.
    pub fn deliver(&mut self, target: &Reference, method: Option<&str>, args: &[Value]) -> Result<Outcome, GuestError> {
        let root = self.root.clone();
        let result = self.enter(&root, |ctx| {
            let object = self.export_object(ctx, target)?;
            if let Some(method) = method
                && let Some(outcome) = self.deliver_to_exo(ctx, &object, method, args)?
            {
                return Ok(outcome);
            }
            let mut converter = js(Converter::new(&self.engine, ctx, Mode::Export))?;
            let js_args = js(Array::new(ctx.clone()))?;
            for (index, arg) in args.iter().enumerate() {
                js(js_args.set(index, js(converter.js_value(arg))?))?;
            }
            let deliver_local = js(converter.library().function("deliverLocal"))?;
            let called = self.call_guest(
                ctx,
                deliver_local.call::<_, JsValue>((object.clone(), method, js_args, object.is_promise())),
            )?;
            self.turn(ctx, called)
        });
        self.finish(Scope::Shared, result)
    }

    /// Reads `property` of a guest object this runtime exported (a CapTP
    /// get); for an exported promise, of what it settles to.
    pub fn get(&mut self, target: &Reference, property: &str) -> Result<Outcome, GuestError> {
        let root = self.root.clone();
        let result = self.enter(&root, |ctx| {
            let object = self.export_object(ctx, target)?;
            let library = js(self.engine.library(ctx))?;
            let deliver_get = js(library.function("deliverGet"))?;
            let called = self.call_guest(
                ctx,
                deliver_get.call::<_, JsValue>((object.clone(), property, object.is_promise())),
            )?;
            self.turn(ctx, called)
        });
        self.finish(Scope::Shared, result)
    }

    /// Settles a promise the host gave the engine (the result of a
    /// [`Host::send`] or [`Host::get`], or a promise passed in), then runs
    /// the guest's reactions to it.
    pub fn settle(&mut self, promise: &Reference, settlement: Settlement) -> Result<(), GuestError> {
        self.settle_all([(promise, settlement)])
    }

    /// Settles several host promises in one entry into the engine, in
    /// order, then runs the guest's reactions to them all. A reaction may
    /// then run after a later promise of the batch settled, as it may when
    /// settlements arrive in one read of a stream (CapTP orders sends, not
    /// settlements of different promises). The entry's time budget covers
    /// the whole batch, so the caller bounds its size. A settlement whose
    /// value the engine cannot take leaves its promise pending and fails
    /// the call (with the first such error) after the others settled.
    pub fn settle_all<R: Borrow<Reference>>(
        &mut self,
        settlements: impl IntoIterator<Item = (R, Settlement)>,
    ) -> Result<(), GuestError> {
        let found: Vec<(u64, Settlement)> = {
            let tables = self.engine.tables.borrow();
            settlements
                .into_iter()
                .filter_map(|(promise, settlement)| {
                    let import = tables
                        .imports
                        .get(promise.borrow())
                        .filter(|import| import.is_promise)?;
                    Some((import.id, settlement))
                })
                .collect()
        };
        if found.is_empty() {
            // The guest never saw these promises: nothing waits on them.
            return Ok(());
        }
        let root = self.root.clone();
        let result = self.enter(&root, |ctx| {
            let mut converter = js(Converter::new(&self.engine, ctx, Mode::Export))?;
            // See `hostRealmCall` in `library.js`.
            let realm_call = js(js(converter.library().function("hostRealmCall"))?.call::<_, JsValue>(()))?;
            let realm_call = realm_call.into_function();
            let mut failure = None;
            for (import_id, settlement) in &found {
                let (fulfilled, value) = match settlement {
                    Ok(value) => (true, value),
                    Err(reason) => (false, reason),
                };
                let value = match js(converter.js_value(value)) {
                    Ok(value) => value,
                    // A value the engine cannot take fails its own
                    // settlement; the rest of the batch still settles.
                    Err(GuestError::Engine(message)) => match self.describe_failure(ctx, message) {
                        failed @ GuestError::Engine(_) => {
                            failure.get_or_insert(failed);
                            continue;
                        }
                        fatal => return Err(fatal),
                    },
                    Err(fatal) => return Err(fatal),
                };
                // Settled, the promise is the guest's own (see the engine's
                // GC notes): the host reference goes now, not when QuickJS
                // collects the promise.
                let pending = self.engine.tables.borrow_mut().take_import(*import_id).flatten();
                let Some(pending) = pending else {
                    continue;
                };
                let settled = pending.resolvers.restore(ctx).and_then(|resolvers| {
                    let settle: rquickjs::Function = resolvers.get(if fulfilled { "resolve" } else { "reject" })?;
                    match &realm_call {
                        Some(call) => call.call::<_, ()>((This(settle), JsValue::new_undefined(ctx.clone()), value)),
                        None => settle.call::<_, ()>((value,)),
                    }
                });
                self.call_guest(ctx, settled)?.ok();
            }
            self.drain(ctx)?;
            failure.map_or(Ok(()), Err)
        });
        self.finish(Scope::Shared, result)
    }

    /// Runs pending promise jobs until none are left; returns how many ran.
    pub fn run_jobs(&mut self) -> Result<usize, GuestError> {
        let root = self.root.clone();
        let result = self.enter(&root, |ctx| self.drain(ctx));
        self.finish(Scope::Shared, result)
    }

    /// Lets go of what nobody uses any more: runs QuickJS's cycle
    /// collector and the finalizers it queued, forgets the imports whose
    /// objects were collected (dropping their host references, which the
    /// host's session then drops on the wire), and forgets the exports
    /// whose reference only the engine still holds (so their objects can
    /// be collected). A worker calls it on a timer.
    ///
    /// Objects freed by reference counting are reported at every call; the
    /// cycle collector, which walks the whole heap, is skipped while the
    /// last one was slow and recent (see [`SLOW_COLLECTION`]).
    pub fn collect_garbage(&mut self) -> Result<Collected, GuestError> {
        let collector_due = match self.last_collection.get() {
            Some((ended, took)) if took >= SLOW_COLLECTION => ended.elapsed() >= took * COLLECTOR_SPACING,
            _ => true,
        };
        if collector_due {
            let started = Instant::now();
            self.runtime.run_gc();
            let ended = Instant::now();
            self.last_collection.set(Some((ended, ended - started)));
        }
        let root = self.root.clone();
        let result = self.enter(&root, |ctx| {
            self.drain(ctx)?;
            let library = js(self.engine.library(ctx))?;
            let take = js(library.function("takeCollectedImports"))?;
            let ids: Vec<f64> = js(take.call(()))?;
            Ok(ids)
        });
        let ids = self.finish(Scope::Shared, result)?;
        let mut tables = self.engine.tables.borrow_mut();
        let imports = ids
            .into_iter()
            .filter(|&id| id >= 0.0 && tables.forget_import(id as u64))
            .count();
        let exports = tables.forget_unheld_exports();
        Ok(Collected { imports, exports })
    }

    /// How many imports and exports the engine's tables hold.
    pub fn table_sizes(&self) -> (usize, usize) {
        let tables = self.engine.tables.borrow();
        (tables.imports.len(), tables.exports.len())
    }

    /// Forgets a reference: an export the host no longer holds, or an
    /// import the host withdrew. Returns whether it was known. A reference
    /// seen again after this gets a new object.
    pub fn release(&mut self, reference: &Reference) -> bool {
        let mut tables = self.engine.tables.borrow_mut();
        if let Some(id) = self.engine.export_id(reference) {
            let export = tables.exports.remove(&id);
            tables.export_by_address.retain(|_, export_id| *export_id != id);
            return export.is_some();
        }
        let Some(id) = tables.imports.get(reference).map(|import| import.id) else {
            return false;
        };
        // A host promise's resolvers go with it: it stays pending.
        tables.forget_import(id)
    }

    // ---- entries ---------------------------------------------------------

    /// Runs `body` in a fresh, locked-down compartment, dropped before
    /// this returns (its garbage is the next collection's).
    /// Runs `body` in a fresh compartment whose `Promise` makes the host
    /// promises from now on (see `adoptEvaluationRealm` in `library.js`),
    /// so that guest code awaiting what it sends takes those promises as
    /// its own.
    fn in_compartment<R>(&self, body: impl FnOnce(&Ctx<'_>) -> Result<R, GuestError>) -> Result<R, GuestError> {
        self.in_tamed_compartment(realm::Taming::default(), |ctx| {
            // Before any guest code runs, while `Promise` is the realm's own.
            let realm_promise: JsValue = js(ctx.globals().get("Promise"))?;
            let adopt = js(js(self.engine.library(ctx))?.function("adoptEvaluationRealm"))?;
            js(adopt.call::<_, JsValue>((realm_promise,)))?;
            body(ctx)
        })
    }

    fn in_tamed_compartment<R>(
        &self,
        taming: realm::Taming,
        body: impl FnOnce(&Ctx<'_>) -> Result<R, GuestError>,
    ) -> Result<R, GuestError> {
        let compartment = self.compartment(taming)?;
        self.enter(&compartment, body)
    }

    /// Makes the compartment the next evaluation (or module) will use, if
    /// it is not made yet; true if this made one. Locking a realm down is
    /// most of an evaluation's cost (hardening every intrinsic), so a
    /// worker calls this when it is idle, after answering, and the next
    /// evaluation starts at once. No guest code has run in it, so it is as
    /// fresh as one made on demand.
    pub fn prepare_compartment(&self) -> Result<bool, GuestError> {
        if self.spare.borrow().is_some() {
            return Ok(false);
        }
        let context = self.fresh_compartment(realm::Taming::default())?;
        *self.spare.borrow_mut() = Some(context);
        Ok(true)
    }

    /// A fresh, locked-down compartment: the spare one if it was made.
    fn compartment(&self, taming: realm::Taming) -> Result<Context, GuestError> {
        if taming == realm::Taming::default()
            && let Some(spare) = self.spare.borrow_mut().take()
        {
            return Ok(spare);
        }
        self.fresh_compartment(taming)
    }

    fn fresh_compartment(&self, taming: realm::Taming) -> Result<Context, GuestError> {
        let context = Context::full(&self.runtime).map_err(|error| self.engine_failure(error))?;
        self.enter(&context, |ctx| js(realm::lockdown(ctx, &self.engine, taming)))?;
        Ok(context)
    }

    /// Runs `body` in `context` under the time budget and the memory cap.
    /// Once either trips, the interrupt handler stops the guest at every
    /// poll until this returns, and the entry fails with that limit's
    /// error whatever the guest did after (caught it, returned a value).
    fn enter<R>(
        &self,
        context: &Context,
        body: impl FnOnce(&Ctx<'_>) -> Result<R, GuestError>,
    ) -> Result<R, GuestError> {
        self.gauge.rearm();
        self.budget.start(self.limits.time_budget);
        self.engine.entered.set(true);
        let result = context.with(|ctx| {
            let result = body(&ctx);
            if self.stopped() {
                // The interrupt handler still says stop, so jobs left by the
                // runaway turn fail when QuickJS next polls it. A chain of
                // short jobs can outlive this (QuickJS polls every 10 000
                // ticks): then the runtime reports itself poisoned.
                let purge_until = Instant::now() + self.limits.time_budget.min(PURGE_TIME);
                let mut emptied = false;
                while Instant::now() < purge_until {
                    if !ctx.execute_pending_job() {
                        emptied = true;
                        break;
                    }
                }
                self.poisoned.set(self.poisoned.get() || !emptied);
            }
            let result = match result {
                Err(GuestError::Engine(message)) if !self.stopped() => Err(self.describe_failure(&ctx, message)),
                other => other,
            };
            // An exception left pending would keep its realm (and all the
            // realm's globals) alive.
            if ctx.has_exception() {
                drop(ctx.catch());
            }
            self.cap_gc_threshold(&ctx);
            result
        });
        self.engine.entered.set(false);
        let out_of_time = self.budget.finish();
        let out_of_memory = self.gauge.tripped();
        self.gauge.rearm();
        if out_of_memory {
            return Err(self.memory_exceeded());
        }
        if out_of_time {
            return Err(GuestError::TimeBudgetExceeded {
                budget_ms: self.limits.time_budget.as_millis(),
            });
        }
        result
    }

    /// Whether the current entry hit the time budget or the memory cap.
    fn stopped(&self) -> bool {
        self.gauge.tripped() || self.budget.tripped.get()
    }

    /// A host-side step failed: says how, with what the engine threw.
    fn describe_failure(&self, ctx: &Ctx<'_>, message: String) -> GuestError {
        if message == OUT_OF_MEMORY {
            return self.memory_exceeded();
        }
        if !ctx.has_exception() {
            return GuestError::Engine(message);
        }
        let thrown = ctx.catch();
        if is_out_of_memory(&thrown) {
            return self.memory_exceeded();
        }
        let stack: String = thrown
            .as_object()
            .and_then(|object| object.get::<_, String>("stack").ok())
            .unwrap_or_default();
        let described = if thrown.is_object() {
            crate::convert::describe_thrown(ctx, &thrown)
        } else if let Some(text) = thrown.as_string().and_then(|text| text.to_string().ok()) {
            format!("the guest threw {text:?}")
        } else {
            format!("the guest threw {}", crate::convert::describe_thrown(ctx, &thrown))
        };
        GuestError::Engine(format!("{message}: {described} {stack}").trim_end().to_string())
    }

    /// QuickJS collects cycles when its heap grows past a threshold it
    /// sets to 1.5 times what a collection left. Near the cap that is past
    /// the cap, and cycles would then never be collected: keep the
    /// threshold at most halfway between what is used and the cap.
    fn cap_gc_threshold(&self, ctx: &Ctx<'_>) {
        let used = self.gauge.used();
        let limit = self.gauge.limit();
        let highest = used.saturating_add(limit.saturating_sub(used) / 2);
        // SAFETY: `ctx` is a live context of this runtime, entered on this
        // thread (the runtime is locked by `Context::with`, so rquickjs's
        // own setter cannot be used here); the threshold is a plain field.
        unsafe {
            let runtime = rquickjs::qjs::JS_GetRuntime(ctx.as_raw().as_ptr());
            let threshold = usize::try_from(rquickjs::qjs::JS_GetGCThreshold(runtime)).unwrap_or(usize::MAX);
            if threshold > highest {
                rquickjs::qjs::JS_SetGCThreshold(runtime, highest.try_into().unwrap_or(rquickjs::qjs::size_t::MAX));
            }
        }
    }

    /// After an entry: when it ran out of time or memory, collects the
    /// garbage (its compartment is gone by now) and decides whether the
    /// runtime should be replaced (see [`GuestRuntime::replacement_reason`]).
    fn finish<R>(&self, scope: Scope, result: Result<R, GuestError>) -> Result<R, GuestError> {
        let what = match &result {
            Err(GuestError::MemoryLimitExceeded { limit_bytes }) => {
                format!(
                    "it ran out of memory (cap {})",
                    crate::error::describe_bytes(*limit_bytes)
                )
            }
            Err(GuestError::TimeBudgetExceeded { budget_ms }) => format!("it ran out of time (budget {budget_ms} ms)"),
            _ => return result,
        };
        self.runtime.run_gc();
        let used = self.gauge.used();
        // As QuickJS does after its own collections (`cap_gc_threshold`
        // keeps it under the cap at the end of each entry).
        self.runtime
            .set_gc_threshold(used.saturating_add(used / 2).max(256 * 1024));
        let reason = if self.poisoned.get() {
            Some(format!("{what} and left promise jobs that could not be stopped"))
        } else if used > self.gauge.limit() / 2 {
            Some(format!(
                "{what} and its heap still holds {} after a collection",
                crate::error::describe_size(used)
            ))
        } else if scope == Scope::Shared {
            Some(format!(
                "{what} during a delivery or settlement, which may have left its promises pending forever"
            ))
        } else {
            None
        };
        if let Some(reason) = reason {
            self.replacement.borrow_mut().get_or_insert(reason);
        }
        result
    }

    fn memory_exceeded(&self) -> GuestError {
        GuestError::MemoryLimitExceeded {
            limit_bytes: self.limits.memory_bytes,
        }
    }

    fn engine_failure(&self, error: rquickjs::Error) -> GuestError {
        match error {
            rquickjs::Error::Allocation => self.memory_exceeded(),
            other => GuestError::Engine(other.to_string()),
        }
    }

    /// Sorts the result of running guest code: what it returned or threw,
    /// or a failure of the entry (time, memory).
    fn call_guest<'js, T>(
        &self,
        ctx: &Ctx<'js>,
        result: rquickjs::Result<T>,
    ) -> Result<Result<T, JsValue<'js>>, GuestError> {
        match result {
            Ok(value) => Ok(Ok(value)),
            Err(rquickjs::Error::Exception) => {
                let thrown = ctx.catch();
                if self.gauge.tripped() {
                    return Err(self.memory_exceeded());
                }
                if self.budget.tripped.get() {
                    return Err(GuestError::TimeBudgetExceeded {
                        budget_ms: self.limits.time_budget.as_millis(),
                    });
                }
                if is_out_of_memory(&thrown) {
                    return Err(self.memory_exceeded());
                }
                Ok(Err(thrown))
            }
            Err(other) => Err(self.engine_failure(other)),
        }
    }

    /// Runs promise jobs until none are left, within the entry's budget.
    fn drain(&self, ctx: &Ctx<'_>) -> Result<usize, GuestError> {
        let mut ran = 0;
        loop {
            if self.gauge.tripped() {
                return Err(self.memory_exceeded());
            }
            if self.budget.tripped.get() {
                return Err(GuestError::TimeBudgetExceeded {
                    budget_ms: self.limits.time_budget.as_millis(),
                });
            }
            if !ctx.execute_pending_job() {
                return Ok(ran);
            }
            ran += 1;
        }
    }

    /// Finishes a turn: hardens what the guest returned, runs the jobs it
    /// caused, and makes the outcome (a promise still pending is exported).
    fn turn<'js>(&self, ctx: &Ctx<'js>, called: Called<'js>) -> Result<Outcome, GuestError> {
        if let Ok(value) = &called {
            let converter = js(Converter::new(&self.engine, ctx, Mode::Export))?;
            if let Err(rquickjs::Error::Exception) = converter.harden(value) {
                let thrown = ctx.catch();
                self.drain(ctx)?;
                return self.settled_error(ctx, &thrown);
            }
        }
        self.drain(ctx)?;
        self.outcome(ctx, called)
    }

    fn outcome<'js>(&self, ctx: &Ctx<'js>, called: Called<'js>) -> Result<Outcome, GuestError> {
        let value = match called {
            Ok(value) => value,
            Err(thrown) => return self.settled_error(ctx, &thrown),
        };
        if let Some(promise) = value.as_promise().cloned() {
            match promise.state() {
                PromiseState::Resolved => {
                    let fulfilled: JsValue = js(promise
                        .result::<JsValue>()
                        .unwrap_or_else(|| Ok(JsValue::new_undefined(ctx.clone()))))?;
                    return self.settled_value(ctx, &fulfilled);
                }
                PromiseState::Rejected => {
                    let _ = promise.result::<JsValue>();
                    let reason = ctx.catch();
                    return self.settled_error(ctx, &reason);
                }
                PromiseState::Pending => {
                    let mut converter = js(Converter::new(&self.engine, ctx, Mode::Export))?;
                    return match js(converter.passable(promise.as_value()))? {
                        Value::Promise(reference) => Ok(Outcome::Pending(reference)),
                        other => Ok(Outcome::Settled(Ok(other))),
                    };
                }
            }
        }
        self.settled_value(ctx, &value)
    }

    fn settled_value<'js>(&self, ctx: &Ctx<'js>, value: &JsValue<'js>) -> Result<Outcome, GuestError> {
        let mut converter = js(Converter::new(&self.engine, ctx, Mode::Export))?;
        let converted = converter.harden(value).and_then(|()| converter.passable(value));
        match self.call_guest(ctx, converted)? {
            Ok(value) => Ok(Outcome::Settled(Ok(value))),
            Err(thrown) => self.settled_error(ctx, &thrown),
        }
    }

    fn settled_error<'js>(&self, ctx: &Ctx<'js>, thrown: &JsValue<'js>) -> Result<Outcome, GuestError> {
        if self.gauge.tripped() || is_out_of_memory(thrown) {
            return Err(self.memory_exceeded());
        }
        Ok(Outcome::Settled(Err(reason_to_value(&self.engine, ctx, thrown))))
    }

    fn export_object<'js>(&self, ctx: &Ctx<'js>, target: &Reference) -> Result<JsValue<'js>, GuestError> {
        let id = self
            .engine
            .export_id(target)
            .ok_or_else(|| GuestError::UnknownTarget(format!("{target:?}")))?;
        let tables = self.engine.tables.borrow();
        let export = tables
            .exports
            .get(&id)
            .ok_or_else(|| GuestError::UnknownTarget(format!("{target:?} (released)")))?;
        js(export.object.clone().restore(ctx))
    }

    /// The fast path for a synchronous exo method: the guard checks the
    /// host's values directly, and only the behavior runs in JavaScript.
    /// `None` when the target or method is not for this path.
    fn deliver_to_exo<'js>(
        &self,
        ctx: &Ctx<'js>,
        object: &JsValue<'js>,
        method_name: &str,
        args: &[Value],
    ) -> Result<Option<Outcome>, GuestError> {
        let library = js(self.engine.library(ctx))?;
        let exo_info = js(library.function("exoInfo"))?;
        let info: JsValue = js(exo_info.call((object.clone(),)))?;
        let Some(info) = info.as_array() else {
            return Ok(None);
        };
        let class_id: usize = js(info.get(0))?;
        let Some(class) = self.engine.class(class_id) else {
            return Ok(None);
        };
        let Some(method) = class.guards.get(method_name) else {
            return Ok(None);
        };
        if method.guard.call_kind() != CallKind::Sync {
            return Ok(None);
        }
        if let Err(rejection) = method.guard.check_args(&method.label, args) {
            return Ok(Some(Outcome::Settled(Err(Value::error(rejection.to_error_value())))));
        }
        let behaviors: Object = js(info.get(1))?;
        let context: JsValue = js(info.get(2))?;
        let behavior: Function = js(behaviors.get(method_name))?;
        let mut converter = js(Converter::new(&self.engine, ctx, Mode::Export))?;
        let mut call = rquickjs::function::Args::new(ctx.clone(), args.len());
        js(call.this(context))?;
        for arg in args {
            js(call.push_arg(js(converter.js_value(arg))?))?;
        }
        let called = self.call_guest(ctx, call.apply::<JsValue>(&behavior))?;
        let result = match called {
            Ok(result) => result,
            Err(thrown) => {
                self.drain(ctx)?;
                return self.settled_error(ctx, &thrown).map(Some);
            }
        };
        if method.guard.checks_result() {
            let mut checker = js(Converter::new(&self.engine, ctx, Mode::Check))?;
            let checked = checker.harden(&result).and_then(|()| checker.passable(&result));
            let value = match self.call_guest(ctx, checked)? {
                Ok(value) => value,
                Err(thrown) => {
                    self.drain(ctx)?;
                    return self.settled_error(ctx, &thrown).map(Some);
                }
            };
            if let Err(rejection) = method.guard.check_result(&method.label, &value) {
                self.drain(ctx)?;
                return Ok(Some(Outcome::Settled(Err(Value::error(rejection.to_error_value())))));
            }
        }
        self.turn(ctx, Ok(result)).map(Some)
    }
}

impl Drop for GuestRuntime {
    fn drop(&mut self) {
        // Values held from Rust must go before the QuickJS runtime is freed.
        self.engine.clear();
    }
}

/// Maps an unexpected failure of a host-side step to an engine error
/// (guest exceptions are handled by `call_guest`).
fn js<T>(result: rquickjs::Result<T>) -> Result<T, GuestError> {
    result.map_err(|error| match error {
        rquickjs::Error::Allocation => GuestError::Engine(OUT_OF_MEMORY.to_string()),
        other => GuestError::Engine(other.to_string()),
    })
}

fn is_out_of_memory(thrown: &JsValue<'_>) -> bool {
    matches!(error_name_and_message(thrown), Some((name, message)) if name == "InternalError" && message == "out of memory")
}
