//! The kernel: subclusters of vats, kernel services, krefs, baggage and
//! revocation (spec `kernel.md`). It lives in the node's vat, beside the
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
//! - [`config`]: cluster configs and the stored records;
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
pub mod refs;
pub mod services;

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::rc::{Rc, Weak};

use capstan_protocol::captp::{RemoteTarget, SessionId};
use capstan_protocol::{ErrorValue, Reference, Value, list, record};
use capstan_store::{BlobHash, Kref, KrefKind, Store, StoreError, SubclusterId, VatId};

use crate::runtime::{ConnectionHandle, E, Message, Resolver, Vat, when};
use crate::workers::{WorkerSpawner, ready, reap};
pub use config::{ClusterConfig, KrefInfo, SubclusterRecord, SystemSubclusterConfig, VatConfig, VatRecord, VatSource};

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

impl KernelError {
    /// The error as a rejection for callers over CapTP.
    pub fn to_error_value(&self) -> ErrorValue {
        ErrorValue::plain(self.to_string())
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

struct Service {
    object: Value,
    system_only: bool,
}

/// A running vat process.
struct VatProcess {
    connection: ConnectionHandle,
    child: Rc<RefCell<Option<tokio::process::Child>>>,
    pid: Option<u32>,
    worker: Option<Value>,
}

enum Run {
    /// Not running: started on next use.
    Stopped,
    Starting,
    Running {
        root: Value,
    },
}

struct LiveVat {
    id: VatId,
    record: VatRecord,
    /// A promise for the root of the current incarnation: sends made
    /// while the vat starts wait on it.
    root_promise: Value,
    root_resolver: Option<Resolver>,
    run: Run,
    process: Option<VatProcess>,
    incarnation: u64,
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
    ready: tokio::sync::watch::Sender<bool>,
    stopped: Cell<bool>,
    this: Weak<Kernel>,
}

/// Parses a kref given by a caller.
pub fn parse_kref(text: &str) -> Result<Kref, KernelError> {
    text.parse()
        .map_err(|_| KernelError::NotFound(format!("{text:?} is not a kref (krefs look like ko12 or kp3)")))
}

fn failed(error: ErrorValue) -> KernelError {
    KernelError::Failed(error.message.to_string())
}

/// The rejection every send to a revoked object gets.
pub fn revoked_error(kref: Kref) -> Value {
    Value::error(ErrorValue::plain(format!(
        "{kref} was revoked: no message can reach it any more"
    )))
}

/// Orders ids like `s2` before `s10`.
fn ordinal(text: &str) -> (u64, String) {
    let digits: String = text.chars().filter(char::is_ascii_digit).collect();
    (digits.parse().unwrap_or(u64::MAX), text.to_string())
}

impl Kernel {
    /// Makes a kernel on `vat` over `store` and reads its records; nothing
    /// runs until [`Kernel::start`]. Registers the built-in services
    /// (`kernelFacet`, system-only; `timer`; `logger`) and `options`'.
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

    // ------------------------------------------------------------ records

    fn load(&self) -> Result<(), KernelError> {
        let snapshot = self.store.read()?;
        for (id, bytes) in snapshot.list_subclusters()? {
            let record: SubclusterRecord = config::decode_record(&bytes, &format!("subcluster {id}"))?;
            self.subclusters.borrow_mut().insert(id, record);
        }
        for (id, bytes) in snapshot.list_vat_configs()? {
            let record: VatRecord = config::decode_record(&bytes, &format!("vat {id}"))?;
            self.add_live_vat(id, record)?;
        }
        for (kref, _) in snapshot.list_krefs()? {
            if snapshot.is_revoked(kref)? {
                self.revoked.borrow_mut().insert(kref);
            }
        }
        Ok(())
    }

    fn add_live_vat(&self, id: VatId, record: VatRecord) -> Result<(), KernelError> {
        let root_kref = parse_kref(&record.root).map_err(|_| KernelError::Corrupt(format!("vat {id}'s root kref")))?;
        let proxy = refs::make_root_proxy(self, root_kref, id.clone());
        self.bind(root_kref, proxy);
        let (root_promise, resolver) = self.vat.make_promise();
        self.vats.borrow_mut().insert(
            id.clone(),
            LiveVat {
                id,
                record,
                root_promise,
                root_resolver: Some(resolver),
                run: Run::Stopped,
                process: None,
                incarnation: 0,
            },
        );
        Ok(())
    }

    fn bind(&self, kref: Kref, value: Value) {
        if let Value::Remotable(reference) | Value::Promise(reference) = &value {
            self.by_identity.borrow_mut().insert(reference.identity(), kref);
        }
        self.bindings.borrow_mut().insert(kref, value);
    }

    fn unbind(&self, kref: Kref) {
        if let Some(Value::Remotable(reference) | Value::Promise(reference)) = self.bindings.borrow_mut().remove(&kref)
        {
            self.by_identity.borrow_mut().remove(&reference.identity());
        }
    }

    // ------------------------------------------------------------- start

    /// Restores the persisted subclusters (removing any a crash left half
    /// launched) and launches configured system subclusters not yet
    /// there. Vats start in parallel; it returns once all are up.
    pub async fn start(&self) -> Result<(), KernelError> {
        let unfinished: Vec<SubclusterId> = self
            .subclusters
            .borrow()
            .iter()
            .filter(|(_, record)| !record.bootstrapped)
            .map(|(id, _)| id.clone())
            .collect();
        for id in unfinished {
            tracing::warn!(subcluster = %id, "removing a subcluster whose launch was interrupted");
            self.remove_subcluster(&id, "its launch was interrupted").await?;
        }
        let vat_ids: Vec<VatId> = self.vats.borrow().keys().cloned().collect();
        let mut starting = Vec::with_capacity(vat_ids.len());
        for id in vat_ids {
            starting.push((id.clone(), self.vat.spawn(self.rc().incarnate(id))));
        }
        for (id, task) in starting {
            match task.await {
                Ok(Ok(_)) => {}
                Ok(Err(error)) => tracing::warn!(vat = %id, error = %error.message, "a vat could not be resuscitated"),
                Err(error) => tracing::warn!(vat = %id, %error, "a vat's start was cancelled"),
            }
        }
        let configs = self.system_configs.borrow().clone();
        for system in configs {
            let existing = self.system_subcluster_id(&system.name);
            if let Some(id) = &existing
                && system.config.force_reset
            {
                self.terminate_subcluster(id.as_str()).await?;
            } else if existing.is_some() {
                continue;
            }
            match self.launch(system.config.clone(), Some(system.name.clone())).await {
                Ok(result) => {
                    tracing::info!(name = %system.name, subcluster = %result.subcluster_id, "system subcluster launched")
                }
                Err(error) => {
                    tracing::error!(name = %system.name, %error, "a system subcluster failed to launch");
                    self.ready.send_replace(true);
                    return Err(error);
                }
            }
        }
        self.ready.send_replace(true);
        Ok(())
    }

    /// Waits until [`Kernel::start`] is done.
    pub async fn ready(&self) {
        let mut ready = self.ready.subscribe();
        while !*ready.borrow_and_update() {
            if ready.changed().await.is_err() {
                return;
            }
        }
    }

    fn system_subcluster_id(&self, name: &str) -> Option<SubclusterId> {
        self.subclusters
            .borrow()
            .iter()
            .find(|(_, record)| record.name.as_deref() == Some(name))
            .map(|(id, _)| id.clone())
    }

    // ---------------------------------------------------------- services

    /// Makes `object` callable from vats that ask for `name`. Replaces a
    /// service of that name; baggage that held the old one gets the new.
    pub fn register_kernel_service_object(
        &self,
        name: &str,
        object: Value,
        options: ServiceOptions,
    ) -> Result<(), KernelError> {
        if !matches!(object, Value::Remotable(_)) {
            return Err(KernelError::Failed(format!(
                "the kernel service {name:?} must be a remotable object"
            )));
        }
        if name.is_empty() || name.len() > 256 {
            return Err(KernelError::Failed(
                "a kernel service name must be 1 to 256 bytes".into(),
            ));
        }
        // A durable kref for the service is found again by name.
        let snapshot = self.store.read()?;
        let wanted = KrefInfo::Service { name: name.to_string() };
        for (kref, bytes) in snapshot.list_krefs()? {
            if kref.kind == KrefKind::Object
                && config::decode_record::<KrefInfo>(&bytes, "kref").ok().as_ref() == Some(&wanted)
            {
                self.unbind(kref);
                self.bind(kref, object.clone());
            }
        }
        self.services.borrow_mut().insert(
            name.to_string(),
            Service {
                object,
                system_only: options.system_only,
            },
        );
        Ok(())
    }

    fn service_name_of(&self, reference: &Reference) -> Option<String> {
        self.services
            .borrow()
            .iter()
            .find(|(_, service)| matches!(&service.object, Value::Remotable(r) if r.identity() == reference.identity()))
            .map(|(name, _)| name.clone())
    }

    // ------------------------------------------------------------ launch

    /// Launches a regular subcluster.
    pub async fn launch_subcluster(&self, config: ClusterConfig) -> Result<LaunchResult, KernelError> {
        self.launch(config, None).await
    }

    async fn launch(&self, config: ClusterConfig, system_name: Option<String>) -> Result<LaunchResult, KernelError> {
        if self.stopped.get() {
            return Err(KernelError::Launch("the kernel is stopped".into()));
        }
        // Everything is checked before anything starts.
        {
            let services = self.services.borrow();
            for name in &config.services {
                match services.get(name) {
                    None => {
                        return Err(KernelError::Launch(format!("no kernel service named {name:?}")));
                    }
                    Some(service) if service.system_only && system_name.is_none() => {
                        return Err(KernelError::Launch(format!(
                            "the kernel service {name:?} is system-only; only system subclusters may use it"
                        )));
                    }
                    Some(_) => {}
                }
            }
        }
        if let Some(name) = &system_name
            && self.system_subcluster_id(name).is_some()
        {
            return Err(KernelError::Launch(format!(
                "a system subcluster named {name:?} exists already"
            )));
        }
        let mut programs = Vec::with_capacity(config.vats.len());
        for (name, vat) in &config.vats {
            let source = self
                .load_source(&vat.source)
                .await
                .map_err(|error| KernelError::Launch(format!("vat {name:?}: {error}")))?;
            let parameters = refs::encode_plain(&vat.parameters)
                .map_err(|error| KernelError::Launch(format!("vat {name:?}: parameters {error}")))?;
            programs.push((name.clone(), source, parameters));
        }

        // Ids and records first, marked unbootstrapped: a crash from here
        // on is cleaned up at the next start.
        let record_base = SubclusterRecord {
            name: system_name.clone(),
            bootstrap: config.bootstrap.clone(),
            services: config.services.clone(),
            vats: BTreeMap::new(),
            root: String::new(),
            bootstrapped: false,
        };
        let bootstrap_name = config.bootstrap.clone();
        let (subcluster_id, record, vat_records) = self
            .store
            .transact(move |tx| {
                let subcluster_id = tx.allocate_subcluster_id()?;
                let mut record = record_base;
                let mut vat_records = Vec::new();
                for (name, source, parameters) in programs {
                    let vat_id = tx.allocate_vat_id()?;
                    let root = tx.allocate_kref(KrefKind::Object)?;
                    let info = KrefInfo::VatRoot {
                        vat: vat_id.to_string(),
                    };
                    tx.put_kref(root, &serde_json::to_vec(&info).unwrap_or_default())?;
                    let vat_record = VatRecord {
                        subcluster: subcluster_id.to_string(),
                        name: name.clone(),
                        source,
                        parameters,
                        root: root.to_string(),
                    };
                    tx.put_vat_config(&vat_id, &serde_json::to_vec(&vat_record).unwrap_or_default())?;
                    if name == bootstrap_name {
                        record.root = root.to_string();
                    }
                    record.vats.insert(name, vat_id.to_string());
                    vat_records.push((vat_id, vat_record));
                }
                tx.put_subcluster(&subcluster_id, &serde_json::to_vec(&record).unwrap_or_default())?;
                Ok((subcluster_id, record, vat_records))
            })
            .await?;
        self.subclusters
            .borrow_mut()
            .insert(subcluster_id.clone(), record.clone());
        for (vat_id, vat_record) in vat_records {
            self.add_live_vat(vat_id, vat_record)?;
        }

        match self.boot(&subcluster_id, &record).await {
            Ok(bootstrap_result) => {
                let mut record = record;
                record.bootstrapped = true;
                let bytes = config::encode_record(&record)?;
                let id = subcluster_id.clone();
                self.store.transact(move |tx| tx.put_subcluster(&id, &bytes)).await?;
                self.subclusters
                    .borrow_mut()
                    .insert(subcluster_id.clone(), record.clone());
                tracing::info!(subcluster = %subcluster_id, vats = record.vats.len(), "subcluster launched");
                Ok(LaunchResult {
                    subcluster_id: subcluster_id.to_string(),
                    root_kref: record.root,
                    bootstrap_result,
                })
            }
            Err(error) => {
                let reason = format!("its launch failed: {}", error.message);
                if let Err(cleanup) = self.remove_subcluster(&subcluster_id, &reason).await {
                    tracing::error!(subcluster = %subcluster_id, error = %cleanup, "cleaning up a failed launch failed");
                }
                Err(KernelError::Launch(error.message.to_string()))
            }
        }
    }

    /// Starts a new subcluster's vats and calls `bootstrap`.
    async fn boot(&self, subcluster_id: &SubclusterId, record: &SubclusterRecord) -> Result<Value, ErrorValue> {
        let mut starting = Vec::with_capacity(record.vats.len());
        for (name, vat_id) in &record.vats {
            let vat_id: VatId = vat_id
                .parse()
                .map_err(|error: StoreError| ErrorValue::plain(error.to_string()))?;
            starting.push((name.clone(), self.vat.spawn(self.rc().incarnate(vat_id))));
        }
        let mut failure = None;
        for (name, task) in starting {
            let outcome = task
                .await
                .unwrap_or_else(|error| Err(ErrorValue::plain(format!("the start was cancelled: {error}"))));
            if let Err(error) = outcome
                && failure.is_none()
            {
                failure = Some(ErrorValue::plain(format!("vat {name:?}: {}", error.message)));
            }
        }
        if let Some(error) = failure {
            return Err(error);
        }
        let mut vats = Vec::with_capacity(record.vats.len());
        let mut bootstrap_root = None;
        for (name, vat_id) in &record.vats {
            let vat_id: VatId = vat_id
                .parse()
                .map_err(|error: StoreError| ErrorValue::plain(error.to_string()))?;
            let live = self.vats.borrow();
            let Some(vat) = live.get(&vat_id) else {
                return Err(ErrorValue::plain(format!("vat {vat_id} went away during the launch")));
            };
            let root_kref = parse_kref(&vat.record.root).map_err(|error| error.to_error_value())?;
            let proxy = self
                .bindings
                .borrow()
                .get(&root_kref)
                .cloned()
                .unwrap_or(Value::Undefined);
            if *name == record.bootstrap
                && let Run::Running { root } = &vat.run
            {
                bootstrap_root = Some(root.clone());
            }
            vats.push((name.as_str(), proxy));
        }
        let services = {
            let registered = self.services.borrow();
            record
                .services
                .iter()
                .filter_map(|name| {
                    registered
                        .get(name)
                        .map(|service| (name.as_str(), service.object.clone()))
                })
                .collect::<Vec<_>>()
        };
        let Some(root) = bootstrap_root else {
            return Err(ErrorValue::plain(format!(
                "the bootstrap vat {:?} of {subcluster_id} is not running",
                record.bootstrap
            )));
        };
        // A bootstrap vat whose root has no `bootstrap` method needs none.
        if let Ok(Value::Array(names)) = when(&E(&root).call("__getMethodNames__", list![])).await
            && !names.iter().any(|name| name.as_str() == Some("bootstrap"))
        {
            return Ok(Value::Undefined);
        }
        let result = E(&root).call("bootstrap", list![Value::record(vats), Value::record(services)]);
        when(&result).await.map_err(|reason| {
            ErrorValue::plain(format!(
                "bootstrap() of vat {:?} failed: {}",
                record.bootstrap,
                crate::runtime::reason_to_error(reason).message
            ))
        })
    }

    async fn load_source(&self, source: &VatSource) -> Result<String, String> {
        match source {
            VatSource::BlobReference(blob) => {
                let size = when(&E(blob).call("size", list![])).await.map_err(|reason| {
                    format!(
                        "cannot read the bundle: {}",
                        crate::runtime::reason_to_error(reason).message
                    )
                })?;
                if size
                    .as_number()
                    .is_none_or(|size| size > config::MAX_VAT_SOURCE_BYTES as f64)
                {
                    return Err(format!(
                        "the bundle is larger than {} bytes",
                        config::MAX_VAT_SOURCE_BYTES
                    ));
                }
                let text = when(&E(blob).call("text", list![])).await.map_err(|reason| {
                    format!(
                        "cannot read the bundle: {}",
                        crate::runtime::reason_to_error(reason).message
                    )
                })?;
                text.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| "the bundle's text is not a string".to_string())
            }
            VatSource::File(path) => {
                let metadata = std::fs::metadata(path)
                    .map_err(|error| format!("cannot read the vat program {}: {error}", path.display()))?;
                if metadata.len() > config::MAX_VAT_SOURCE_BYTES {
                    return Err(format!(
                        "the vat program {} is {} bytes; the limit is {}",
                        path.display(),
                        metadata.len(),
                        config::MAX_VAT_SOURCE_BYTES
                    ));
                }
                std::fs::read_to_string(path)
                    .map_err(|error| format!("cannot read the vat program {}: {error}", path.display()))
            }
            VatSource::Blob(hash) => {
                let hash: BlobHash = hash.parse().map_err(|_| format!("{hash:?} is not a blob hash"))?;
                let snapshot = self.store.read().map_err(|error| error.to_string())?;
                match snapshot.blob_len(hash).map_err(|error| error.to_string())? {
                    None => return Err(format!("no stored blob {}", hash.to_hex())),
                    Some(len) if len > config::MAX_VAT_SOURCE_BYTES => {
                        return Err(format!(
                            "the stored blob is {len} bytes; the limit is {}",
                            config::MAX_VAT_SOURCE_BYTES
                        ));
                    }
                    Some(_) => {}
                }
                let reader = snapshot
                    .open_blob(hash)
                    .map_err(|error| error.to_string())?
                    .ok_or_else(|| format!("no stored blob {}", hash.to_hex()))?;
                let bytes = reader.read_to_vec().map_err(|error| error.to_string())?;
                String::from_utf8(bytes).map_err(|_| "the stored vat program is not UTF-8 text".to_string())
            }
        }
    }

    // -------------------------------------------------------------- vats

    /// Starts (or restarts) a vat: a worker process running its program
    /// with its baggage. Answers the root.
    async fn incarnate(self: Rc<Self>, vat_id: VatId) -> Result<Value, ErrorValue> {
        let (record, incarnation) = {
            let mut vats = self.vats.borrow_mut();
            let Some(vat) = vats.get_mut(&vat_id) else {
                return Err(ErrorValue::plain(format!("there is no vat {vat_id}")));
            };
            if let Run::Running { root } = &vat.run {
                return Ok(root.clone());
            }
            vat.run = Run::Starting;
            vat.incarnation += 1;
            (vat.record.clone(), vat.incarnation)
        };
        let outcome = self.run_vat_program(&vat_id, &record, incarnation).await;
        let mut vats = self.vats.borrow_mut();
        let Some(vat) = vats.get_mut(&vat_id) else {
            return Err(ErrorValue::plain(format!(
                "vat {vat_id} was terminated while it started"
            )));
        };
        if vat.incarnation != incarnation {
            return Err(ErrorValue::plain(format!(
                "vat {vat_id} was restarted while it started"
            )));
        }
        match outcome {
            Ok(root) => {
                vat.run = Run::Running { root: root.clone() };
                if let Some(resolver) = vat.root_resolver.take() {
                    self.vat.settle(resolver, Ok(root.clone()));
                }
                Ok(root)
            }
            Err(error) => {
                vat.run = Run::Stopped;
                if let Some(process) = vat.process.take() {
                    process.connection.close(&format!("vat {vat_id} failed to start"));
                }
                // Sends waiting for this start fail; a later one retries.
                let (promise, resolver) = self.vat.make_promise();
                vat.root_promise = promise;
                if let Some(waiting) = vat.root_resolver.replace(resolver) {
                    self.vat.settle(waiting, Err(Value::error(error.clone())));
                }
                Err(error)
            }
        }
    }

    async fn run_vat_program(&self, vat_id: &VatId, record: &VatRecord, incarnation: u64) -> Result<Value, ErrorValue> {
        let log_name = format!("vat-{vat_id}");
        let process = self.spawner.spawn(&self.vat, &log_name)?;
        self.sessions
            .borrow_mut()
            .insert(process.connection.id(), vat_id.clone());
        let connection = process.connection.clone();
        let child = Rc::clone(&process.child);
        if let Some(vat) = self.vats.borrow_mut().get_mut(vat_id) {
            vat.process = Some(VatProcess {
                connection: process.connection.clone(),
                child: Rc::clone(&process.child),
                pid: process.pid,
                worker: None,
            });
        }
        tracing::info!(vat = %vat_id, pid = process.pid, "vat process started");
        let watcher = self.rc();
        let watched = vat_id.clone();
        self.vat.spawn(async move {
            let reason = connection.closed().await;
            reap(&child, &format!("vat-{watched}"), &reason).await;
            watcher.sessions.borrow_mut().remove(&connection.id());
            watcher.vat_exited(&watched, incarnation, &reason);
        });
        let worker = ready(&process.bootstrap).await?;
        if let Some(vat) = self.vats.borrow_mut().get_mut(vat_id)
            && let Some(process) = vat.process.as_mut()
        {
            process.worker = Some(worker.clone());
        }
        let parameters = refs::decode_plain(&record.parameters)
            .map_err(|error| ErrorValue::plain(format!("the vat's stored parameters are damaged: {error}")))?;
        let entries = self.baggage_entries(vat_id).map_err(|error| error.to_error_value())?;
        let baggage_store = services::make_baggage_store(&self.rc(), vat_id.clone())?;
        let logger = services::make_logger(&format!("vat {vat_id} ({})", record.name))?;
        let powers = record! { "logger" => logger };
        let root = E(&worker).call(
            "buildVat",
            list![record.source.as_str(), parameters, entries, baggage_store, powers],
        );
        let root = when(&root).await.map_err(crate::runtime::reason_to_error)?;
        if !matches!(root, Value::Remotable(_)) {
            return Err(ErrorValue::plain(format!(
                "buildRootObject of vat {vat_id} gave {}, not a remotable root object",
                capstan_protocol::quote::quote(&root)
            )));
        }
        tracing::info!(vat = %vat_id, "vat ready");
        Ok(root)
    }

    fn vat_exited(&self, vat_id: &VatId, incarnation: u64, reason: &str) {
        let mut vats = self.vats.borrow_mut();
        let Some(vat) = vats.get_mut(vat_id) else {
            return;
        };
        if vat.incarnation != incarnation {
            return;
        }
        vat.process = None;
        if matches!(vat.run, Run::Running { .. }) {
            tracing::warn!(vat = %vat_id, %reason, "vat process ended; it restarts on next use");
            vat.run = Run::Stopped;
            let (promise, resolver) = self.vat.make_promise();
            vat.root_promise = promise;
            vat.root_resolver = Some(resolver);
        }
    }

    /// Where a send to the root of `vat_id` should go now: the running
    /// root, or a promise for it (starting the vat if it is stopped).
    pub(crate) fn root_target(&self, vat_id: &VatId) -> Result<Value, Value> {
        let (target, start) = {
            let vats = self.vats.borrow();
            let Some(vat) = vats.get(vat_id) else {
                return Err(Value::error(ErrorValue::plain(format!(
                    "vat {vat_id} no longer exists: its subcluster was terminated"
                ))));
            };
            match &vat.run {
                Run::Running { root } => (root.clone(), false),
                Run::Starting => (vat.root_promise.clone(), false),
                Run::Stopped => (vat.root_promise.clone(), !self.stopped.get()),
            }
        };
        if start {
            let kernel = self.rc();
            let id = vat_id.clone();
            self.vat.spawn(async move {
                if let Err(error) = kernel.incarnate(id.clone()).await {
                    tracing::warn!(vat = %id, error = %error.message, "restarting a vat failed");
                }
            });
        }
        Ok(target)
    }

    fn baggage_entries(&self, vat_id: &VatId) -> Result<Value, KernelError> {
        let stored = self.store.read()?.list_baggage(vat_id)?;
        let mut entries = Vec::with_capacity(stored.len());
        for (key, bytes) in stored {
            let value = refs::decode_baggage(self, &bytes)
                .map_err(|error| KernelError::Corrupt(format!("baggage {key} of vat {vat_id}: {error}")))?;
            entries.push(Value::array([Value::from(key.as_str()), value]));
        }
        Ok(Value::array(entries))
    }

    /// The live value of `kref`: its binding this run, or what is left of
    /// it after a restart.
    pub(crate) fn value_of_kref(&self, kref: Kref) -> Result<Value, KernelError> {
        if let Some(value) = self.bindings.borrow().get(&kref) {
            return Ok(value.clone());
        }
        let Some(bytes) = self.store.read()?.get_kref(kref)? else {
            return Err(KernelError::NotFound(format!("there is no kernel object {kref}")));
        };
        let info: KrefInfo = config::decode_record(&bytes, &format!("kref {kref}"))?;
        let reason = match info {
            KrefInfo::Service { name } => {
                return Err(KernelError::NotFound(format!(
                    "{kref} is the kernel service {name:?}, which is not registered"
                )));
            }
            KrefInfo::VatRoot { vat } => format!("{kref} was the root of vat {vat}, which no longer exists"),
            KrefInfo::VatObject { vat } => format!(
                "{kref} was an ordinary (non-durable) object of vat {vat}; it did not survive the restart \
                 (only vat roots and kernel services do)"
            ),
            KrefInfo::Other => {
                format!("{kref} was an ordinary (non-durable) reference; it did not survive the restart")
            }
            KrefInfo::Gone { reason } => format!("{kref} no longer exists: {reason}"),
        };
        let broken = refs::make_broken(&self.vat, kref, &reason);
        self.bind(kref, broken.clone());
        Ok(broken)
    }

    /// The kref a reference has, or what one made for it would stand for.
    pub(crate) fn kref_plan(&self, reference: &Reference) -> Result<Kref, KrefInfo> {
        if let Some(kref) = self.by_identity.borrow().get(&reference.identity()) {
            return Ok(*kref);
        }
        if let Some(name) = self.service_name_of(reference) {
            return Err(KrefInfo::Service { name });
        }
        if let Some(remote) = RemoteTarget::of(reference)
            && let Some(vat) = self.sessions.borrow().get(&remote.session())
        {
            return Err(KrefInfo::VatObject { vat: vat.to_string() });
        }
        Err(KrefInfo::Other)
    }

    /// The kref of a remotable, made (and stored) if it has none yet.
    pub async fn kref_of(&self, value: &Value) -> Result<Kref, KernelError> {
        let Value::Remotable(reference) = value else {
            return Err(KernelError::Failed(format!(
                "only remotable objects have krefs, not {}",
                capstan_protocol::quote::quote(value)
            )));
        };
        match self.kref_plan(reference) {
            Ok(kref) => Ok(kref),
            Err(info) => {
                let bytes = config::encode_record(&info)?;
                let kref = self
                    .store
                    .transact(move |tx| {
                        let kref = tx.allocate_kref(KrefKind::Object)?;
                        tx.put_kref(kref, &bytes)?;
                        Ok(kref)
                    })
                    .await?;
                self.bind(kref, value.clone());
                Ok(kref)
            }
        }
    }

    pub(crate) fn bind_new(&self, krefs: Vec<(Kref, Value)>) {
        for (kref, value) in krefs {
            self.bind(kref, value);
        }
    }

    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    // --------------------------------------------------------- revocation

    fn revocation_of(&self, reference: &Reference) -> Option<Value> {
        let revoked = self.revoked.borrow();
        if revoked.is_empty() {
            return None;
        }
        let kref = *self.by_identity.borrow().get(&reference.identity())?;
        revoked.contains(&kref).then(|| revoked_error(kref))
    }

    /// Revokes `kref` for good: every later send to it fails. `false` if
    /// it was revoked already.
    pub async fn revoke(&self, kref: &str) -> Result<bool, KernelError> {
        let kref = parse_kref(kref)?;
        if self.store.read()?.get_kref(kref)?.is_none() {
            return Err(KernelError::NotFound(format!("there is no kernel object {kref}")));
        }
        let newly = self.store.transact(move |tx| tx.revoke(kref)).await?;
        self.revoked.borrow_mut().insert(kref);
        if newly {
            tracing::info!(%kref, "revoked");
        }
        Ok(newly)
    }

    pub fn is_revoked(&self, kref: &str) -> Result<bool, KernelError> {
        let kref = parse_kref(kref)?;
        Ok(self.revoked.borrow().contains(&kref))
    }

    // ------------------------------------------------------------ access

    /// A reference to `kref` usable in messages.
    pub fn get_presence(&self, kref: &str) -> Result<Value, KernelError> {
        self.value_of_kref(parse_kref(kref)?)
    }

    /// Sends `method(args)` to `kref` and waits for the result.
    pub async fn queue_message(&self, kref: &str, method: &str, args: Vec<Value>) -> Result<Value, KernelError> {
        let target = self.get_presence(kref)?;
        let result = self.vat.send(
            &target,
            Message::Call {
                method: method.to_string(),
                args,
            },
        );
        when(&result)
            .await
            .map_err(|reason| failed(crate::runtime::reason_to_error(reason)))
    }

    /// The root kref of the system subcluster `name`.
    pub fn get_system_subcluster_root(&self, name: &str) -> Result<String, KernelError> {
        let id = self
            .system_subcluster_id(name)
            .ok_or_else(|| KernelError::NotFound(format!("there is no system subcluster named {name:?}")))?;
        Ok(self
            .subclusters
            .borrow()
            .get(&id)
            .map(|record| record.root.clone())
            .unwrap_or_default())
    }

    /// Asks vat `vat_id`'s worker whether it answers.
    pub async fn ping_vat(&self, vat_id: &str) -> Result<Value, KernelError> {
        let id: VatId = vat_id
            .parse()
            .map_err(|_| KernelError::NotFound(format!("{vat_id:?} is not a vat id")))?;
        let worker = {
            let vats = self.vats.borrow();
            let vat = vats
                .get(&id)
                .ok_or_else(|| KernelError::NotFound(format!("there is no vat {vat_id}")))?;
            vat.process.as_ref().and_then(|process| process.worker.clone())
        };
        let Some(worker) = worker else {
            return Err(KernelError::Failed(format!("vat {vat_id} is not running")));
        };
        when(&E(&worker).call("ping", list![]))
            .await
            .map_err(|reason| failed(crate::runtime::reason_to_error(reason)))
    }

    fn subcluster_value(&self, id: &SubclusterId, record: &SubclusterRecord) -> Value {
        let vats = Value::record(
            record
                .vats
                .iter()
                .map(|(name, vat)| (name.as_str(), Value::from(vat.as_str()))),
        );
        record! {
            "id" => id.as_str(),
            "name" => record.name.as_deref().map_or(Value::Null, Value::from),
            "system" => record.name.is_some(),
            "bootstrap" => record.bootstrap.as_str(),
            "services" => Value::array(record.services.iter().map(|name| Value::from(name.as_str()))),
            "vats" => vats,
            "rootKref" => record.root.as_str(),
        }
    }

    /// Every subcluster, in id order.
    pub fn get_subclusters(&self) -> Value {
        let subclusters = self.subclusters.borrow();
        let mut ids: Vec<&SubclusterId> = subclusters.keys().collect();
        ids.sort_by_key(|id| ordinal(id.as_str()));
        Value::array(ids.into_iter().map(|id| self.subcluster_value(id, &subclusters[id])))
    }

    pub fn get_subcluster(&self, id: &str) -> Result<Value, KernelError> {
        let subclusters = self.subclusters.borrow();
        subclusters
            .iter()
            .find(|(known, _)| known.as_str() == id)
            .map(|(known, record)| self.subcluster_value(known, record))
            .ok_or_else(|| KernelError::NotFound(format!("there is no subcluster {id:?}")))
    }

    /// Vats, subclusters and the node's networking.
    pub fn get_status(&self) -> Value {
        let vats = self.vats.borrow();
        let mut ids: Vec<&VatId> = vats.keys().collect();
        ids.sort_by_key(|id| ordinal(id.as_str()));
        let vats = Value::array(ids.into_iter().map(|id| {
            let vat = &vats[id];
            let state = match vat.run {
                Run::Running { .. } => "running",
                Run::Starting => "starting",
                Run::Stopped => "stopped",
            };
            record! {
                "id" => vat.id.as_str(),
                "name" => vat.record.name.as_str(),
                "subclusterId" => vat.record.subcluster.as_str(),
                "rootKref" => vat.record.root.as_str(),
                "pid" => vat.process.as_ref().and_then(|process| process.pid).map_or(Value::Null, |pid| Value::from(f64::from(pid))),
                "state" => state,
            }
        }));
        let comms = self
            .comms
            .borrow()
            .as_ref()
            .map_or_else(|| record! { "state" => "disconnected" }, |comms| comms());
        record! {
            "vats" => vats,
            "subclusters" => self.get_subclusters(),
            "remoteComms" => comms,
        }
    }

    // ------------------------------------------------------- termination

    /// Stops a subcluster's vats, fails what they were deciding, and
    /// forgets their state.
    pub async fn terminate_subcluster(&self, id: &str) -> Result<(), KernelError> {
        let id: SubclusterId = id
            .parse()
            .map_err(|_| KernelError::NotFound(format!("{id:?} is not a subcluster id")))?;
        if !self.subclusters.borrow().contains_key(&id) {
            return Err(KernelError::NotFound(format!("there is no subcluster {id}")));
        }
        self.remove_subcluster(&id, &format!("subcluster {id} was terminated"))
            .await
    }

    async fn remove_subcluster(&self, id: &SubclusterId, reason: &str) -> Result<(), KernelError> {
        let record = self.subclusters.borrow_mut().remove(id);
        let vat_ids: Vec<VatId> = match &record {
            Some(record) => record.vats.values().filter_map(|vat| vat.parse().ok()).collect(),
            None => Vec::new(),
        };
        let mut gone_krefs = Vec::new();
        for vat_id in &vat_ids {
            let removed = self.vats.borrow_mut().remove(vat_id);
            if let Some(mut vat) = removed {
                let error = Value::error(ErrorValue::plain(format!("vat {vat_id}: {reason}")));
                if let Some(resolver) = vat.root_resolver.take() {
                    self.vat.settle(resolver, Err(error));
                }
                if let Some(process) = vat.process.take() {
                    process.connection.close(&format!("vat {vat_id}: {reason}"));
                    if let Some(child) = process.child.borrow_mut().as_mut() {
                        let _ = child.start_kill();
                    }
                }
                if let Ok(kref) = parse_kref(&vat.record.root) {
                    gone_krefs.push(kref);
                }
            }
        }
        // Every kref of these vats' objects now says why it is gone.
        let snapshot = self.store.read()?;
        let vat_names: HashSet<String> = vat_ids.iter().map(ToString::to_string).collect();
        for (kref, bytes) in snapshot.list_krefs()? {
            if let Ok(KrefInfo::VatObject { vat } | KrefInfo::VatRoot { vat }) = config::decode_record(&bytes, "kref")
                && vat_names.contains(&vat)
                && !gone_krefs.contains(&kref)
            {
                gone_krefs.push(kref);
            }
        }
        drop(snapshot);
        for kref in &gone_krefs {
            self.unbind(*kref);
        }
        let gone = config::encode_record(&KrefInfo::Gone {
            reason: reason.to_string(),
        })?;
        let subcluster = id.clone();
        self.store
            .transact(move |tx| {
                tx.remove_subcluster(&subcluster)?;
                for vat in &vat_ids {
                    tx.forget_vat(vat)?;
                }
                for kref in &gone_krefs {
                    tx.put_kref(*kref, &gone)?;
                }
                Ok(())
            })
            .await?;
        tracing::info!(subcluster = %id, %reason, "subcluster removed");
        Ok(())
    }

    /// Terminates every subcluster, then launches the system subclusters
    /// afresh (debugging only).
    pub async fn reset(&self) -> Result<(), KernelError> {
        let ids: Vec<SubclusterId> = self.subclusters.borrow().keys().cloned().collect();
        for id in ids {
            self.remove_subcluster(&id, "the kernel was reset").await?;
        }
        let configs = self.system_configs.borrow().clone();
        for system in configs {
            self.launch(system.config, Some(system.name)).await?;
        }
        Ok(())
    }

    /// Stops every vat process (the node is stopping). Their state stays.
    pub fn stop(&self) {
        self.stopped.set(true);
        for vat in self.vats.borrow_mut().values_mut() {
            vat.run = Run::Stopped;
            if let Some(process) = vat.process.take() {
                process.connection.close("the node is stopping");
                if let Some(child) = process.child.borrow_mut().as_mut() {
                    let _ = child.start_kill();
                }
            }
        }
    }
}
