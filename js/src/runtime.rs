//! [`GuestRuntime`]: one QuickJS runtime per worker, its limits, and the
//! entry points a runtime drives it with (evaluate, call a module export,
//! deliver, get, settle, run jobs, release).
//!
//! Every entry into JavaScript runs under a deadline enforced by the
//! interrupt handler, and drains the promise jobs it causes before it
//! returns (a delivery and its microtasks are one turn of the vat). Once
//! the deadline passes, the handler keeps interrupting until the entry
//! returns, so a guest that catches the interruption cannot run on.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use capstan_protocol::guards::CallKind;
use capstan_protocol::{Reference, Value};
use rquickjs::promise::PromiseState;
use rquickjs::{Array, Context, Ctx, Function, Module, Object, Runtime, Value as JsValue};

use crate::convert::{Converter, Mode, error_name_and_message, reason_to_value};
use crate::engine::Engine;
use crate::error::GuestError;
use crate::host::{Host, Outcome, Settlement};
use crate::limits::GuestLimits;
use crate::modules::SyntheticModules;
use crate::{natives, realm};

const LIBRARY_SOURCE: &str = include_str!("library.js");
const OUT_OF_MEMORY: &str = "out of memory";
const MODULE_WAITING: &str = "Module evaluation is waiting on a promise the host has not settled";

/// How the evaluation of a guest module came out.
enum ModuleEvaluation<'js> {
    Done(Module<'js, rquickjs::module::Evaluated>),
    Threw(JsValue<'js>),
    /// Its top-level await waits on the host.
    Waiting,
}

/// The deadline of the current entry, shared with the interrupt handler.
#[derive(Default)]
struct Budget {
    deadline: Cell<Option<Instant>>,
    tripped: Cell<bool>,
}

impl Budget {
    fn start(&self, budget: Duration) {
        self.tripped.set(false);
        self.deadline.set(Some(Instant::now() + budget));
    }

    /// Ends the entry; says whether the deadline was hit during it.
    fn finish(&self) -> bool {
        self.deadline.set(None);
        self.tripped.replace(false)
    }

    fn should_interrupt(&self) -> bool {
        if self.tripped.get() {
            return true;
        }
        match self.deadline.get() {
            Some(deadline) if Instant::now() >= deadline => {
                self.tripped.set(true);
                true
            }
            _ => false,
        }
    }
}

/// The confined JavaScript engine of one worker.
///
/// Not `Send`: it belongs to the single thread of its vat loop.
pub struct GuestRuntime {
    engine: Rc<Engine>,
    root: Context,
    budget: Rc<Budget>,
    limits: GuestLimits,
    poisoned: Cell<bool>,
    runtime: Runtime,
}

/// What a guest call returned or threw.
type Called<'js> = Result<JsValue<'js>, JsValue<'js>>;

impl GuestRuntime {
    /// A runtime with the given limits that calls out to `host`.
    pub fn new(host: Rc<dyn Host>, limits: GuestLimits) -> Result<GuestRuntime, GuestError> {
        let runtime = Runtime::new()?;
        runtime.set_memory_limit(limits.memory_bytes);
        runtime.set_max_stack_size(limits.stack_bytes);
        let budget = Rc::new(Budget::default());
        let handler_budget = Rc::clone(&budget);
        runtime.set_interrupt_handler(Some(Box::new(move || handler_budget.should_interrupt())));
        let engine = Rc::new(Engine::new(host, limits.conversion));
        runtime.set_loader(SyntheticModules, SyntheticModules);
        let root = Context::full(&runtime)?;
        let guest_runtime = GuestRuntime {
            engine,
            root,
            budget,
            limits,
            poisoned: Cell::new(false),
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
            js(realm::lockdown(ctx, &guest_runtime.engine))?;
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
        usize::try_from(self.runtime.memory_usage().malloc_size).unwrap_or(usize::MAX)
    }

    /// Whether a turn that ran out of time left promise jobs that could
    /// not be dropped (an endless chain of short jobs): they will eat into
    /// every later entry's budget, so the worker should be replaced.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned.get()
    }

    /// Whether `reference` is one this runtime exported (a guest object).
    pub fn owns(&self, reference: &Reference) -> bool {
        self.engine.export_id(reference).is_some()
    }

    /// Evaluates `source` (an expression or a program, strict mode) in a
    /// new compartment whose globals are the guest globals plus
    /// `endowments`; the outcome is its completion value.
    pub fn evaluate(&mut self, source: &str, endowments: &[(&str, Value)]) -> Result<Outcome, GuestError> {
        let compartment = self.compartment()?;
        self.enter(&compartment, |ctx| {
            let globals = ctx.globals();
            let mut converter = js(Converter::new(&self.engine, ctx, Mode::Export))?;
            for (name, value) in endowments {
                let value = js(converter.js_value(value))?;
                js(globals.set(*name, value))?;
            }
            let called = self.call_guest(ctx, realm::eval_strict(ctx, source))?;
            self.turn(ctx, called)
        })
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
        let compartment = self.compartment()?;
        self.enter(&compartment, |ctx| {
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
        })
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
        let compartment = self.compartment()?;
        let entries = Value::array(
            entries
                .iter()
                .map(|(key, value)| Value::array([Value::from(key.as_str()), value.clone()])),
        );
        self.enter(&compartment, |ctx| {
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
        })
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
        self.enter(&root, |ctx| {
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
        })
    }

    /// Reads `property` of a guest object this runtime exported (a CapTP
    /// get); for an exported promise, of what it settles to.
    pub fn get(&mut self, target: &Reference, property: &str) -> Result<Outcome, GuestError> {
        let root = self.root.clone();
        self.enter(&root, |ctx| {
            let object = self.export_object(ctx, target)?;
            let library = js(self.engine.library(ctx))?;
            let deliver_get = js(library.function("deliverGet"))?;
            let called = self.call_guest(
                ctx,
                deliver_get.call::<_, JsValue>((object.clone(), property, object.is_promise())),
            )?;
            self.turn(ctx, called)
        })
    }

    /// Settles a promise the host gave the engine (the result of a
    /// [`Host::send`] or [`Host::get`], or a promise passed in), then runs
    /// the guest's reactions to it.
    pub fn settle(&mut self, promise: &Reference, settlement: Settlement) -> Result<(), GuestError> {
        let import_id = {
            let tables = self.engine.tables.borrow();
            tables
                .imports
                .get(promise)
                .filter(|import| import.is_promise)
                .map(|import| import.id)
        };
        let Some(import_id) = import_id else {
            // The guest never saw this promise: nothing waits on it.
            return Ok(());
        };
        let root = self.root.clone();
        self.enter(&root, |ctx| {
            let mut converter = js(Converter::new(&self.engine, ctx, Mode::Export))?;
            let (fulfilled, value) = match &settlement {
                Ok(value) => (true, value),
                Err(reason) => (false, reason),
            };
            let value = js(converter.js_value(value))?;
            let settle = js(converter.library().function("settleHostPromise"))?;
            let settled = settle.call::<_, bool>((import_id, fulfilled, value));
            self.call_guest(ctx, settled)?.ok();
            self.drain(ctx)?;
            Ok(())
        })
    }

    /// Runs pending promise jobs until none are left; returns how many ran.
    pub fn run_jobs(&mut self) -> Result<usize, GuestError> {
        let root = self.root.clone();
        self.enter(&root, |ctx| self.drain(ctx))
    }

    /// Forgets a reference: an export the host no longer holds, or an
    /// import the host withdrew. Returns whether it was known. A reference
    /// seen again after this gets a new object.
    pub fn release(&mut self, reference: &Reference) -> bool {
        let forgotten_promise = {
            let mut tables = self.engine.tables.borrow_mut();
            if let Some(id) = self.engine.export_id(reference) {
                let export = tables.exports.remove(&id);
                tables.export_by_address.retain(|_, export_id| *export_id != id);
                return export.is_some();
            }
            match tables.imports.remove(reference) {
                Some(import) => {
                    tables.import_by_id.remove(&import.id);
                    import.is_promise.then_some(import.id)
                }
                None => return false,
            }
        };
        if let Some(id) = forgotten_promise {
            let root = self.root.clone();
            let _ = self.enter(&root, |ctx| {
                let library = js(self.engine.library(ctx))?;
                let forget = js(library.function("forgetHostPromise"))?;
                js(forget.call::<_, JsValue>((id,)))?;
                Ok(())
            });
        }
        true
    }

    // ---- entries ---------------------------------------------------------

    /// A fresh, locked-down compartment.
    fn compartment(&self) -> Result<Context, GuestError> {
        let context = Context::full(&self.runtime).map_err(|error| self.engine_failure(error))?;
        self.enter(&context, |ctx| js(realm::lockdown(ctx, &self.engine)))?;
        Ok(context)
    }

    /// Runs `body` in `context` under the time budget.
    fn enter<R>(
        &self,
        context: &Context,
        body: impl FnOnce(&Ctx<'_>) -> Result<R, GuestError>,
    ) -> Result<R, GuestError> {
        self.budget.start(self.limits.time_budget);
        self.engine.entered.set(true);
        let result = context.with(|ctx| {
            let result = body(&ctx);
            if self.budget.tripped.get() {
                // The interrupt handler still says stop, so jobs left by the
                // runaway turn fail when QuickJS next polls it. A chain of
                // short jobs can outlive this (QuickJS polls every 10 000
                // ticks): then the runtime reports itself poisoned.
                let purge_until = Instant::now() + self.limits.time_budget;
                let mut emptied = false;
                while Instant::now() < purge_until {
                    if !ctx.execute_pending_job() {
                        emptied = true;
                        break;
                    }
                }
                self.poisoned.set(self.poisoned.get() || !emptied);
            }
            if let Err(GuestError::Engine(message)) = &result {
                if message == OUT_OF_MEMORY {
                    return Err(self.memory_exceeded());
                }
                if ctx.has_exception() {
                    let thrown = ctx.catch();
                    if is_out_of_memory(&thrown) {
                        return Err(self.memory_exceeded());
                    }
                    let stack: String = thrown
                        .as_object()
                        .and_then(|object| object.get::<_, String>("stack").ok())
                        .unwrap_or_default();
                    return Err(GuestError::Engine(format!(
                        "{message}: {} {stack}",
                        crate::convert::describe_thrown(&ctx, &thrown)
                    )));
                }
            }
            result
        });
        self.engine.entered.set(false);
        let tripped = self.budget.finish();
        if tripped {
            return Err(GuestError::TimeBudgetExceeded {
                budget_ms: self.limits.time_budget.as_millis(),
            });
        }
        if let Err(GuestError::MemoryLimitExceeded { .. }) = &result {
            self.runtime.run_gc();
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
        if is_out_of_memory(thrown) {
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
