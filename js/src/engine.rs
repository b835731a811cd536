//! The state one guest runtime shares between its Rust entry points and the
//! native functions guest code calls: the reference tables (exports and
//! imports), the exo classes, the guest library, and the host.
//!
//! Identity rules: each JavaScript object the engine exports (a remotable
//! or a promise handed to the host) has one [`Reference`] until the host
//! releases it, and each host reference has one JavaScript object (a
//! presence or a promise) until released. Conversions done only to run a
//! check (patterns, guards, `passStyleOf`) use short-lived references that
//! never leave that check, so they do not fill the tables.
//!
//! GC: presences are held weakly (the guest library keeps a `WeakRef` of
//! each, and a `FinalizationRegistry` reports the ones QuickJS collected),
//! so the host reference of a presence guest code let go is forgotten at
//! the next [`crate::GuestRuntime::collect_garbage`] and a reference seen
//! again after that gets a new object. A host promise is held by the
//! tables (its resolvers, and its address for recognizing it) while it is
//! pending, and forgotten when it settles: from then
//! on it is an ordinary settled promise of the guest's (sends to it go to
//! what it settled to, and passing it exports it as a local promise), as
//! the session forgets an imported promise once it is resolved. Exports are
//! held strongly until the host lets go of their reference (only the
//! table still holds it); exported promises are kept, since the host
//! knows them by identity.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::collections::hash_map::Entry;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};

use capstan_protocol::Reference;
use capstan_protocol::guards::MethodGuard;
use rquickjs::{Ctx, Function, Object, Persistent, Value as JsValue};
use rustc_hash::FxHashMap;

use crate::host::Host;
use crate::limits::ConversionLimits;

/// The target inside every [`Reference`] this engine exports.
#[derive(Debug)]
pub(crate) struct GuestExport {
    pub engine: u64,
    pub id: u64,
}

/// What the reference tables remember about an export.
pub(crate) struct Export {
    pub object: Persistent<JsValue<'static>>,
    pub reference: Reference,
    /// Exported promises are never forgotten: the host may wait on them,
    /// and remember how they settled, by reference identity (an address
    /// that must not be reused for another promise).
    pub is_promise: bool,
}

/// What the reference tables remember about an import. The object of a
/// presence is held weakly by the guest library (`lookupImport`); that of
/// a host promise here, by its resolvers, until it settles.
pub(crate) struct Import {
    pub id: u64,
    pub is_promise: bool,
    pub pending: Option<PendingPromise>,
}

/// A host promise that has not settled: the record of its promise and
/// resolvers that `Promise.withResolvers` made, and the promise's address
/// (its identity while the record holds it).
pub(crate) struct PendingPromise {
    pub resolvers: Persistent<Object<'static>>,
    pub address: usize,
}

#[derive(Default)]
pub(crate) struct Tables {
    next_id: u64,
    pub exports: FxHashMap<u64, Export>,
    pub export_by_address: FxHashMap<usize, u64>,
    pub imports: FxHashMap<Reference, Import>,
    pub import_by_id: FxHashMap<u64, Reference>,
    /// Pending host promises by address: kept here rather than stamped on
    /// each promise, which cost a class construction and a shape change
    /// per send.
    pub host_promise_by_address: FxHashMap<usize, u64>,
}

impl Tables {
    pub fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Forgets import `id` (its object was collected); a newer import of
    /// the same reference is kept. Returns whether it was known.
    pub fn forget_import(&mut self, id: u64) -> bool {
        self.take_import(id).is_some()
    }

    /// Forgets import `id` as [`Tables::forget_import`] does, and gives
    /// back the resolvers of its host promise if it was still pending
    /// (`None` if the import was unknown).
    pub fn take_import(&mut self, id: u64) -> Option<Option<PendingPromise>> {
        let reference = self.import_by_id.remove(&id)?;
        let pending = match self.imports.entry(reference) {
            Entry::Occupied(entry) if entry.get().id == id => entry.remove().pending,
            _ => None,
        };
        if let Some(pending) = &pending {
            self.host_promise_by_address.remove(&pending.address);
        }
        Some(pending)
    }

    /// The import id of the pending host promise at `address`.
    pub fn host_promise_at(&self, address: usize) -> Option<u64> {
        self.host_promise_by_address.get(&address).copied()
    }

    /// Forgets the exports whose reference only this table still holds
    /// (the host let go), except promises; returns how many.
    pub fn forget_unheld_exports(&mut self) -> usize {
        let unheld: Vec<u64> = self
            .exports
            .iter()
            .filter(|(_, export)| !export.is_promise && export.reference.is_only_holder())
            .map(|(&id, _)| id)
            .collect();
        for id in &unheld {
            self.exports.remove(id);
        }
        if !unheld.is_empty() {
            let exports = &self.exports;
            self.export_by_address.retain(|_, id| exports.contains_key(id));
        }
        unheld.len()
    }
}

/// One exo class, or one facet of an exo class kit.
pub(crate) struct ExoClass {
    pub guards: BTreeMap<String, ExoMethod>,
}

pub(crate) struct ExoMethod {
    pub guard: MethodGuard,
    /// `In "name" method of (tag)`.
    pub label: String,
    /// Argument positions guarded by `M.raw()` (not converted or checked).
    pub raw_args: Vec<usize>,
    /// Whether arguments past the declared ones are raw.
    pub raw_rest: bool,
    pub declared: usize,
}

/// Whether the current entry was stopped (out of time or memory), and why.
pub(crate) type StopCheck = Box<dyn Fn() -> Option<crate::error::GuestError>>;

pub(crate) struct Engine {
    pub id: u64,
    pub host: Rc<dyn Host>,
    pub conversion: ConversionLimits,
    pub tables: RefCell<Tables>,
    pub classes: RefCell<Vec<Rc<ExoClass>>>,
    library: RefCell<Option<Persistent<Object<'static>>>>,
    /// Set while guest code may run: a native called with none is a bug.
    pub entered: Cell<bool>,
    /// Whether the current entry hit its time budget or the memory cap:
    /// what the guest does from then on does not count.
    pub stopped: StopCheck,
}

static NEXT_ENGINE: AtomicU64 = AtomicU64::new(1);

impl Engine {
    pub fn new(host: Rc<dyn Host>, conversion: ConversionLimits, stopped: StopCheck) -> Engine {
        Engine {
            id: NEXT_ENGINE.fetch_add(1, Ordering::Relaxed),
            host,
            conversion,
            tables: RefCell::default(),
            classes: RefCell::default(),
            library: RefCell::new(None),
            entered: Cell::new(false),
            stopped,
        }
    }

    pub fn set_library(&self, library: Persistent<Object<'static>>) {
        *self.library.borrow_mut() = Some(library);
    }

    /// The guest library's API object, in this context.
    pub fn library<'js>(&self, ctx: &Ctx<'js>) -> rquickjs::Result<Library<'js>> {
        let persistent = self.library.borrow().clone().ok_or_else(|| {
            rquickjs::Error::new_from_js_message("library", "object", "the guest library is not installed")
        })?;
        Ok(Library {
            api: persistent.restore(ctx)?,
        })
    }

    /// Whether `reference` is one this engine exported.
    pub fn export_id(&self, reference: &Reference) -> Option<u64> {
        reference
            .target::<GuestExport>()
            .filter(|export| export.engine == self.id)
            .map(|export| export.id)
    }

    pub fn class(&self, id: usize) -> Option<Rc<ExoClass>> {
        self.classes.borrow().get(id).cloned()
    }

    /// Drops every JavaScript value held from Rust; needed before the
    /// QuickJS runtime is freed.
    pub fn clear(&self) {
        let tables = std::mem::take(&mut *self.tables.borrow_mut());
        drop(tables);
        self.library.borrow_mut().take();
    }
}

/// The guest library's API object (see `library.js`).
pub(crate) struct Library<'js> {
    pub api: Object<'js>,
}

impl<'js> Library<'js> {
    pub fn function(&self, name: &str) -> rquickjs::Result<Function<'js>> {
        self.api.get(name)
    }
}

/// The address of a JavaScript object, its identity while it is alive.
pub(crate) fn address_of(value: &JsValue<'_>) -> usize {
    // SAFETY: reads the pointer bits of an object value we hold a
    // reference to; nothing is dereferenced.
    unsafe { rquickjs::qjs::JS_VALUE_GET_PTR(value.as_raw()) as usize }
}
