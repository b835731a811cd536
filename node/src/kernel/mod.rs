//! The kernel: subclusters of vats, kernel services, krefs, baggage and
//! revocation (`docs/spec/kernel.md`). It lives in the node's vat, beside the
//! daemon, and keeps everything durable in the store's kernel tables.
//!
//! - A vat is a worker process running a vat program: its module's
//!   `buildRootObject(vatPowers, parameters, baggage)` makes the root.
//! - Other vats, the CLI and peers reach a vat's root through a *root
//!   proxy*: one node object per root kref that forwards to the root of
//!   the vat's current incarnation. So a reference to a root kept in
//!   baggage works again after a restart (or a crashed vat's restart),
//!   whatever order the vats come back in.
//! - Ordinary objects cross between vats directly (the node's runtime
//!   forwards them). They get a kref only when the kernel needs one (in
//!   baggage, or when revoked), and do not survive a restart.
//! - Revocation is a delivery gate on the node's vat: every delivery to a
//!   revoked object, from a vat, the CLI or a peer, is refused.
//!
//! The [`Kernel`] type, its options and errors are here; its work is
//! split by what it owns:
//!
//! - [`config`]: cluster configs and the stored records;
//! - `startup`: reading the records, restoring subclusters, readiness;
//! - `service_registry`: kernel services by name;
//! - `launch`: launching and booting a subcluster;
//! - `vats`: live vats, their incarnations and exits, and their baggage;
//! - `krefs`: kref bindings, and reaching objects by kref;
//! - `revocation`: revoked krefs and the delivery gate;
//! - `status`: listing subclusters and vats;
//! - `termination`: terminating subclusters and single vats, reset, and
//!   stopping;
//! - `promises`: kernel promises (`kp` krefs) and sends that do not wait;
//! - `gc`: collecting garbage across the kernel;
//! - [`ocap_url`]: OCAP URLs, which make a kernel object reachable from
//!   another node;
//! - [`refs`]: root proxies, broken references and the baggage codec;
//! - [`services`]: the kernel facet, the timer, the logger, baggage stores.
//!
//! ```no_run
//! use capstan_node::kernel::{Kernel, KernelOptions, ServiceOptions};
//! use capstan_node::workers::WorkerSpawner;
//! use capstan_node::runtime::{Exo, Vat};
//! use capstan_protocol::{Value, list};
//!
//! let vat = Vat::new();
//! vat.clone().run_until(async move {
//!     let store = capstan_store::Store::open("/tmp/my-kernel").unwrap();
//!     // Vats run in `capstan __worker` processes, logging into /tmp/my-kernel.
//!     let spawner = WorkerSpawner::new("/usr/local/bin/capstan", "/tmp/my-kernel");
//!     let weather = Exo::new("weather").method("temperature", |_, _| Ok(Value::from(21))).make().unwrap();
//!     let mut options = KernelOptions::new(spawner);
//!     options.services.push(("weather".into(), weather, ServiceOptions::default()));
//!     let kernel = Kernel::make(store, vat, options).await.unwrap();
//!     let status = kernel.get_status();
//!     # let _ = (status, list![]);
//! });
//! ```
//! `node/examples/kernel_embed.rs` is a complete, compiled program.

pub mod config;
pub mod fetch;
mod gc;
pub mod io;
mod krefs;
mod launch;
pub mod ocap_url;
mod promises;
pub mod refs;
mod revocation;
mod service_registry;
pub mod services;
mod startup;
mod status;
mod termination;
mod vats;

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::rc::{Rc, Weak};

use capstan_protocol::captp::SessionId;
use capstan_protocol::{ErrorValue, Reference, Value, record};
use capstan_store::{Kref, Store, StoreError, SubclusterId, VatId};

use crate::runtime::Vat;
use crate::workers::WorkerSpawner;
pub use config::{ClusterConfig, KrefInfo, SubclusterRecord, SystemSubclusterConfig, VatConfig, VatRecord, VatSource};
pub use gc::Collected;
pub use krefs::{KREF_KEY, kref_record, parse_kref};
pub use ocap_url::{OcapUrl, OcapUrlComms};
pub use revocation::revoked_error;
use service_registry::Service;
use vats::LiveVat;

/// What can go wrong in the kernel.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("bad cluster config: {0}")]
    BadConfig(String),
    #[error("cannot launch the subcluster: {0}")]
    Launch(String),
    #[error("the kernel's records are damaged: {0}")]
    Corrupt(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Failed(String),
}

/// The error as a rejection for callers over CapTP.
impl From<KernelError> for ErrorValue {
    fn from(error: KernelError) -> Self {
        ErrorValue::plain(error.to_string())
    }
}

/// How a kernel service may be used.
#[derive(Clone, Copy, Debug, Default)]
pub struct ServiceOptions {
    /// Only system subclusters may ask for it.
    pub system_only: bool,
}

/// Reports the node's remote communications for `get_status`.
pub type CommsStatus = Rc<dyn Fn() -> Value>;

/// What a kernel starts with (`Kernel.make`'s options).
pub struct KernelOptions {
    pub spawner: WorkerSpawner,
    /// Launched on first start under their names, restored after.
    pub system_subclusters: Vec<SystemSubclusterConfig>,
    /// Services registered before anything launches.
    pub services: Vec<(String, Value, ServiceOptions)>,
}

impl KernelOptions {
    pub fn new(spawner: WorkerSpawner) -> KernelOptions {
        KernelOptions {
            spawner,
            system_subclusters: Vec::new(),
            services: Vec::new(),
        }
    }
}

/// What `launch_subcluster` answers.
#[derive(Clone, Debug)]
pub struct LaunchResult {
    pub subcluster_id: String,
    pub root_kref: String,
    pub bootstrap_result: Value,
}

impl LaunchResult {
    pub fn to_value(&self) -> Value {
        record! {
            "subclusterId" => self.subcluster_id.as_str(),
            "rootKref" => self.root_kref.as_str(),
            "bootstrapResult" => self.bootstrap_result.clone(),
        }
    }
}

/// The kernel. Lives on the node's vat thread.
pub struct Kernel {
    vat: Vat,
    store: Store,
    spawner: WorkerSpawner,
    comms: RefCell<Option<CommsStatus>>,
    system_configs: RefCell<Vec<SystemSubclusterConfig>>,
    services: RefCell<BTreeMap<String, Service>>,
    subclusters: RefCell<BTreeMap<SubclusterId, SubclusterRecord>>,
    vats: RefCell<BTreeMap<VatId, LiveVat>>,
    /// Which vat each vat session belongs to.
    sessions: RefCell<HashMap<SessionId, VatId>>,
    /// The live value of each kref known this run.
    bindings: RefCell<HashMap<Kref, Value>>,
    /// The kref of each bound reference, by identity.
    by_identity: RefCell<HashMap<usize, Kref>>,
    revoked: RefCell<HashSet<Kref>>,
    /// The open IO channels of each subcluster that declared some.
    io: RefCell<BTreeMap<SubclusterId, Rc<io::IoSet>>>,
    /// Each kernel promise made this run, and whether it has settled.
    promises: RefCell<HashMap<Kref, promises::PromiseState>>,
    /// Why each vat removed this run is gone (for sends to its root).
    removed_vats: RefCell<HashMap<VatId, String>>,
    /// The link each OCAP URL redeemed here is bound to this run.
    redeemed: RefCell<HashMap<Kref, (Rc<ocap_url::Redeemed>, Value)>>,
    /// How OCAP URLs reach other nodes (none in a kernel without them).
    url_comms: RefCell<Option<Rc<dyn OcapUrlComms>>>,
    ready: tokio::sync::watch::Sender<bool>,
    stopped: Cell<bool>,
    this: Weak<Kernel>,
}

/// A rejection (from a vat, a worker or the store) as a kernel error.
fn failed(error: ErrorValue) -> KernelError {
    KernelError::Failed(error.message.to_string())
}

impl Kernel {
    /// Makes a kernel on `vat` over `store` and reads its records; nothing
    /// runs until [`Kernel::start`]. Registers the built-in services
    /// (`kernelFacet`, system-only; `timer`; `logger`;
    /// `ocapURLIssuerService`; `ocapURLRedemptionService`) and `options`'.
    pub fn new(store: Store, vat: Vat, options: KernelOptions) -> Result<Rc<Kernel>, KernelError> {
        let (ready, _) = tokio::sync::watch::channel(false);
        let kernel = Rc::new_cyclic(|this| Kernel {
            vat: vat.clone(),
            store,
            spawner: options.spawner,
            comms: RefCell::new(None),
            system_configs: RefCell::new(options.system_subclusters),
            services: RefCell::new(BTreeMap::new()),
            subclusters: RefCell::new(BTreeMap::new()),
            vats: RefCell::new(BTreeMap::new()),
            sessions: RefCell::new(HashMap::new()),
            bindings: RefCell::new(HashMap::new()),
            by_identity: RefCell::new(HashMap::new()),
            revoked: RefCell::new(HashSet::new()),
            io: RefCell::new(BTreeMap::new()),
            promises: RefCell::new(HashMap::new()),
            removed_vats: RefCell::new(HashMap::new()),
            redeemed: RefCell::new(HashMap::new()),
            url_comms: RefCell::new(None),
            ready,
            stopped: Cell::new(false),
            this: this.clone(),
        });
        kernel.load()?;
        let facet = services::make_kernel_facet(&kernel).map_err(failed)?;
        let system_only = ServiceOptions { system_only: true };
        kernel.register_kernel_service_object("kernelFacet", facet, system_only)?;
        let timer = services::make_timer().map_err(failed)?;
        kernel.register_kernel_service_object("timer", timer, ServiceOptions::default())?;
        let logger = services::make_logger("logger").map_err(failed)?;
        kernel.register_kernel_service_object("logger", logger, ServiceOptions::default())?;
        let issuer = ocap_url::make_issuer_service(&kernel).map_err(failed)?;
        kernel.register_kernel_service_object(ocap_url::ISSUER_SERVICE, issuer, ServiceOptions::default())?;
        let redemption = ocap_url::make_redemption_service(&kernel).map_err(failed)?;
        kernel.register_kernel_service_object(ocap_url::REDEMPTION_SERVICE, redemption, ServiceOptions::default())?;
        for (name, object, options) in options.services {
            kernel.register_kernel_service_object(&name, object, options)?;
        }
        let gate_kernel = Rc::downgrade(&kernel);
        vat.set_delivery_gate(Rc::new(move |reference: &Reference| {
            gate_kernel.upgrade()?.revocation_of(reference)
        }));
        Ok(kernel)
    }

    /// `Kernel.make`: a kernel with its persisted subclusters restored and
    /// its new system subclusters launched.
    pub async fn make(store: Store, vat: Vat, options: KernelOptions) -> Result<Rc<Kernel>, KernelError> {
        let kernel = Kernel::new(store, vat, options)?;
        kernel.start().await?;
        Ok(kernel)
    }

    fn rc(&self) -> Rc<Kernel> {
        match self.this.upgrade() {
            Some(kernel) => kernel,
            None => panic!("the kernel is used after it was dropped"),
        }
    }

    /// Tells `get_status` how to describe the node's networking.
    pub fn set_comms_status(&self, comms: CommsStatus) {
        *self.comms.borrow_mut() = Some(comms);
    }

    /// The kernel facet (the `kernelFacet` service; `KERNEL` for hosts).
    pub fn facet(&self) -> Value {
        self.services
            .borrow()
            .get("kernelFacet")
            .map(|service| service.object.clone())
            .unwrap_or(Value::Undefined)
    }

    pub(crate) fn store(&self) -> &Store {
        &self.store
    }
}
