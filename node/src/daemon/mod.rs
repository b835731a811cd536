//! The node daemon: it opens the store, makes values from formulas when
//! they are first needed (their dependencies first), remembers which live
//! value came from which formula, cancels values and everything made from
//! them, and serves the host agent on the control socket.
//!
//! Modules, bottom-up (each uses only those above it, and this one's
//! [`Daemon`]):
//!
//! - [`formula`]: the formula types; [`paths`]: the state directory's
//!   files; [`config`]: the node's config file; [`worker`]: the
//!   running workers of worker formulas;
//! - [`names`]: pet names, special names, paths and name hubs;
//! - [`directory`]: directory objects over pet stores; [`blob`]: blob
//!   references and streaming; [`message`]: mail as stored;
//!   [`locator`]: the `capstan://` locator format;
//! - [`peers`]: the sessions we open to other nodes, and what we ask of
//!   them; [`holds`]: which ids peers hold here and which we hold from
//!   them, and the releases we owe;
//! - [`agents`]: hosts, guests and their mail;
//! - [`gateway`]: what other nodes may ask of this one;
//! - [`incarnate`]: making a formula's value, by type; [`endo_socket`]:
//!   the socket for JavaScript programs speaking Endo's CapTP; [`web`]:
//!   web apps and their pages' WebSocket sessions, on loopback HTTP;
//!   [`control`]: the control socket, the node's root object and its life;
//! - [`gc`]: the formula collector (what is reachable, and the sweep).
//!
//! This module wires the layers together: the daemon's state names the
//! state types of [`worker`], [`message`] and [`peers`], gives
//! [`peers::PeerSessions`] the gateway to offer, and calls
//! [`incarnate::incarnate`] to make values.

mod accept;
pub mod agents;
pub mod blob;
pub mod config;
pub mod control;
pub mod directory;
pub mod endo_socket;
pub mod formula;
pub mod gateway;
pub mod gc;
pub mod holds;
mod incarnate;
mod listen;
pub mod locator;
pub mod message;
pub mod names;
pub mod paths;
pub mod peers;
pub mod web;
pub mod worker;

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet, VecDeque};
use std::rc::{Rc, Weak};
use std::time::Instant;

use capstan_protocol::{ErrorValue, Value};
use capstan_store::{BlobHash, FormulaId, NodeId, Store, StoreError};

use crate::net::{InboundStreams, Multiaddr, NetConfig, Network};
use crate::runtime::{PromiseKit, Vat, reason_to_error, when};
use formula::Formula;
use paths::StatePaths;

/// What can go wrong running the daemon.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    StateDirectory(#[from] paths::StateDirError),
    #[error("the stored formulas are damaged: {0}")]
    Corrupt(String),
    #[error("the control socket {path}: {source}")]
    Socket { path: String, source: std::io::Error },
    #[error("cannot read {path}: {source}")]
    ConfigUnreadable { path: String, source: std::io::Error },
    /// The config file is not valid TOML or not a node config.
    #[error("{path}: {detail}")]
    ConfigInvalid { path: String, detail: String },
    #[error("{path}: the system subcluster {name:?} is declared twice")]
    SubclusterDeclaredTwice { path: String, name: String },
    #[error("{path}: system subcluster {name:?}: {detail}")]
    SubclusterConfig { path: String, name: String, detail: String },
    #[error("bad listen address {text:?}: {detail}")]
    ListenAddress { text: String, detail: String },
    #[error("bad relay address {text:?}: {detail}")]
    RelayAddress { text: String, detail: String },
    #[error("cannot start networking: {source}")]
    Networking { source: crate::net::NetError },
    #[error("cannot start the kernel: {source}")]
    Kernel { source: crate::kernel::KernelError },
    #[error("cannot watch for {signal}: {source}")]
    Signal {
        signal: &'static str,
        source: std::io::Error,
    },
    #[error("the node is already serving")]
    AlreadyServing,
    /// Names no id, not even shortened: ids are secrets, and guests see
    /// this error (a name for a missing or another node's formula).
    #[error("there is no such formula on this node")]
    NoSuchFormula,
    /// A formula the collector removed (nothing reached it), asked for by
    /// someone who kept its id. Names no id either.
    #[error("this value was collected: nothing named it any more")]
    Collected,
}

/// A daemon error as the error a method call rejects with.
impl From<DaemonError> for ErrorValue {
    fn from(error: DaemonError) -> Self {
        match error {
            DaemonError::Store(error) => ErrorValue::from(error),
            other => ErrorValue::plain(other.to_string()),
        }
    }
}

/// Settings a node runs with.
#[derive(Clone, Debug)]
pub struct NodeOptions {
    pub paths: StatePaths,
    /// Memory cap of each worker, bytes.
    pub worker_memory_bytes: u64,
    /// Time budget of each delivery into a worker, milliseconds.
    pub worker_time_budget_ms: u64,
    /// The program to run workers with (this binary, normally).
    pub worker_program: std::path::PathBuf,
    /// libp2p addresses to listen on; none means the config file's, or
    /// else the defaults (see `daemon::listen`).
    pub listen_addresses: Vec<String>,
    /// Listen on loopback only (`--local`) when no addresses are given.
    pub local: bool,
    /// Relays to keep a reservation on (`--relay`), beside the config
    /// file's `relays`.
    pub relays: Vec<String>,
    /// Serve as a relay for other nodes (`--relay-service`), whatever the
    /// config file's `[relay] service` says.
    pub relay_service: bool,
}

pub use listen::LOCAL_LISTEN_ADDRESS;

/// The formulas every node has, made on first start.
#[derive(Clone, Copy, Debug)]
pub struct RootIds {
    pub endo: FormulaId,
    pub host: FormulaId,
    pub host_handle: FormulaId,
    pub host_pet_store: FormulaId,
    pub main_worker: FormulaId,
    pub least_authority: FormulaId,
    pub pins: FormulaId,
    pub kernel: FormulaId,
}

/// The daemon's state, shared by the objects it makes. Lives on the vat's
/// thread.
pub struct Daemon {
    pub store: Store,
    pub node_id: NodeId,
    pub options: NodeOptions,
    pub roots: RootIds,
    pub vat: Vat,
    /// The value (or a promise for it) of every formula made so far.
    live: RefCell<HashMap<FormulaId, Value>>,
    /// Which formula a live reference came from, by reference identity.
    identities: RefCell<HashMap<usize, FormulaId>>,
    /// Formulas made from each formula, for cancellation.
    dependents: RefCell<HashMap<FormulaId, HashSet<FormulaId>>>,
    pub workers: worker::Workers,
    /// Callers waiting for answers to their requests.
    pub requests: message::RequestWaiters,
    /// How fast each peer may send mail (`[mail]` in `config.toml`).
    pub mail_rates: message::PeerMailRates,
    /// The node's libp2p swarm.
    pub network: Network,
    /// Streams peers open to us, until the serve loop takes them.
    pub inbound: RefCell<Option<InboundStreams>>,
    /// The sessions with other nodes, by node id.
    pub peers: peers::PeerSessions,
    /// Subclusters of vats, kernel services, krefs (`KERNEL`).
    pub kernel: Rc<crate::kernel::Kernel>,
    /// What one peer may put in our mailboxes (`[mail]` in `config.toml`).
    pub mail_quotas: config::MailQuotas,
    /// What one peer may make us hold (`[peers]` in `config.toml`).
    pub peer_limits: config::PeerLimits,
    /// When the collector runs and what it spares (`[gc]`).
    pub gc_options: config::GcOptions,
    /// The collector's in-memory state.
    gc: GcState,
    stop: tokio::sync::watch::Sender<bool>,
    this: Weak<Daemon>,
}

/// What the collector keeps between runs, on the vat thread.
#[derive(Default)]
struct GcState {
    /// Formulas made or incarnated lately, oldest first: spared for the
    /// grace period.
    recent: RefCell<VecDeque<(Instant, FormulaId)>>,
    /// Blob hashes stored lately (their formula may not be written yet).
    recent_blobs: RefCell<VecDeque<(Instant, BlobHash)>>,
    /// Blob uploads in progress: while any runs no blob bytes are deleted.
    uploads: Cell<u32>,
    /// Ids collected in this run of the node, to say so when one is used.
    collected: RefCell<HashSet<FormulaId>>,
    /// One collection at a time.
    running: tokio::sync::Mutex<()>,
    /// When the next automatic collection is due, if one is.
    due: Cell<Option<Instant>>,
    /// Whether the task that waits for `due` is running.
    timer: Cell<bool>,
}

/// Collected ids remembered for their clear error, at most; past this the
/// set starts again (an old id then gets the plain unknown-formula error).
const COLLECTED_IDS_KEPT: usize = 1 << 18;

/// Derives a well-known formula id from the node's secret, so the root
/// formulas are found again on every start without being looked up.
fn well_known_id(secret: &[u8; 32], node: NodeId, name: &str) -> FormulaId {
    let number = blake3::keyed_hash(secret, format!("capstan well-known formula {name}").as_bytes());
    FormulaId::new(*number.as_bytes(), node)
}

impl Daemon {
    /// Opens the node's store and makes the root formulas on first start.
    pub async fn open(options: NodeOptions, vat: Vat) -> Result<Rc<Daemon>, DaemonError> {
        options.paths.create()?;
        let store = Store::open(&options.paths.root)?;
        let node_id = store.node_id();
        let secret = store.node_secret()?;
        let id = |name: &str| well_known_id(secret.seed(), node_id, name);
        let roots = RootIds {
            endo: id("endo"),
            host: id("host"),
            host_handle: id("host-handle"),
            host_pet_store: id("host-pet-store"),
            main_worker: id("main-worker"),
            least_authority: id("least-authority"),
            pins: id("pins"),
            kernel: id("kernel"),
        };
        let root_formulas = [
            (
                roots.endo,
                Formula::Endo {
                    host: roots.host.into(),
                    least_authority: roots.least_authority.into(),
                },
            ),
            (
                roots.host,
                Formula::Host {
                    handle: roots.host_handle.into(),
                    pet_store: roots.host_pet_store.into(),
                    main_worker: roots.main_worker.into(),
                    endo: roots.endo.into(),
                    least_authority: roots.least_authority.into(),
                },
            ),
            (
                roots.host_handle,
                Formula::Handle {
                    agent: roots.host.into(),
                },
            ),
            (roots.host_pet_store, Formula::PetStore),
            (roots.main_worker, Formula::Worker),
            (roots.least_authority, Formula::LeastAuthority),
            (roots.kernel, Formula::Kernel),
            (
                roots.pins,
                Formula::Directory {
                    pet_store: roots.pins.into(),
                },
            ),
        ];
        let mut records = Vec::new();
        for (id, formula) in &root_formulas {
            records.push((*id, formula.to_record()?));
        }
        store
            .transact(move |tx| {
                for (id, record) in &records {
                    if tx.get_formula(*id)?.is_none() {
                        tx.put_formula(*id, record)?;
                    }
                }
                Ok(())
            })
            .await?;
        let config = config::NodeConfig::read(&options.paths.config())?;
        let (listen, listen_best_effort) = listen::listen_plan(&options, &config);
        let mut addresses = Vec::with_capacity(listen.len());
        for text in &listen {
            let address: Multiaddr = text.parse().map_err(|error| DaemonError::ListenAddress {
                text: text.clone(),
                detail: format!("{error}"),
            })?;
            addresses.push(address);
        }
        let mut relays: Vec<Multiaddr> = Vec::new();
        for text in options.relays.iter().chain(&config.relays) {
            let address: Multiaddr = text.parse().map_err(|error| DaemonError::RelayAddress {
                text: text.clone(),
                detail: format!("{error}"),
            })?;
            if !relays.contains(&address) {
                relays.push(address);
            }
        }
        let relay_service = (options.relay_service || config.relay.service).then(|| config.relay.limits());
        // A node listening on port 0 gets the same port again after a
        // restart when it is free, so peers that stored it find it.
        let net_config = NetConfig {
            port_memory: Some(options.paths.root.join("listen-ports")),
            max_inbound_streams_per_peer: config.peers.inbound_streams as usize,
            max_connections_per_peer: config.peers.connections,
            max_connections_total: config.peers.connections_total,
            max_pending_connections: config.peers.pending_connections,
            listen_best_effort,
            relays,
            relay_service,
            hole_punch_wait: std::time::Duration::from_millis(config.peers.hole_punch_wait_ms),
            hole_punch_retry: std::time::Duration::from_millis(config.peers.hole_punch_retry_ms.max(100)),
            // The vat thread moves the sessions' bytes itself: no wake-up
            // of another thread per read and per write.
            on_callers_runtime: true,
            ..NetConfig::listening_on(addresses)
        };
        let (network, inbound) = Network::start(secret.seed(), net_config)
            .await
            .map_err(|source| DaemonError::Networking { source })?;
        let (stop, _) = tokio::sync::watch::channel(false);
        let workers = worker::Workers::new(&options);
        let mut kernel_options = crate::kernel::KernelOptions::new(options.worker_spawner());
        kernel_options.system_subclusters = config.system_subclusters;
        let (mail_quotas, peer_limits, gc_options) = (config.mail, config.peers, config.gc);
        let kernel = crate::kernel::Kernel::new(store.clone(), vat.clone(), kernel_options)
            .map_err(|source| DaemonError::Kernel { source })?;
        let comms_network = network.clone();
        kernel.set_comms_status(Rc::new(move || {
            let addresses = comms_network.listen_addresses();
            let peers = comms_network.connected_peers();
            capstan_protocol::record! {
                "state" => if addresses.is_empty() { "identity-only" } else { "connected" },
                "peerId" => comms_network.peer_id().to_string(),
                "nodeId" => comms_network.node_id().to_string(),
                "listenAddresses" => Value::array(addresses.iter().map(|address| Value::from(address.to_string()))),
                "connectedPeers" => Value::array(peers.iter().map(|peer| Value::from(peer.to_string()))),
            }
        }));
        let daemon = Rc::new_cyclic(|this| Daemon {
            store,
            node_id,
            options,
            roots,
            vat,
            live: RefCell::new(HashMap::new()),
            identities: RefCell::new(HashMap::new()),
            dependents: RefCell::new(HashMap::new()),
            workers,
            requests: message::RequestWaiters::default(),
            mail_rates: message::PeerMailRates::default(),
            network,
            inbound: RefCell::new(Some(inbound)),
            peers: peers::PeerSessions::new(gateway::make_gateway),
            kernel,
            mail_quotas,
            peer_limits,
            gc_options,
            gc: GcState::default(),
            stop,
            this: this.clone(),
        });
        daemon.kernel.set_ocap_url_comms(gateway::kernel_url_comms(&daemon));
        Ok(daemon)
    }

    fn rc(&self) -> Rc<Daemon> {
        match self.this.upgrade() {
            Some(daemon) => daemon,
            None => panic!("the daemon is used after it was dropped"),
        }
    }

    /// Asks the node to stop.
    pub fn request_stop(&self) {
        let _ = self.stop.send(true);
    }

    /// Waits until a stop is requested.
    pub async fn stopped(&self) {
        let mut stop = self.stop.subscribe();
        while !*stop.borrow() {
            if stop.changed().await.is_err() {
                return;
            }
        }
    }

    /// Reads a formula.
    pub fn formula(&self, id: FormulaId) -> Result<Formula, DaemonError> {
        let Some(record) = self.store.read()?.get_formula(id)? else {
            return Err(if self.gc.collected.borrow().contains(&id) {
                DaemonError::Collected
            } else {
                DaemonError::NoSuchFormula
            });
        };
        Formula::from_record(&record)
    }

    /// Stores a new formula under a fresh id.
    pub async fn make_formula(&self, formula: &Formula) -> Result<FormulaId, DaemonError> {
        let id = FormulaId::random(self.node_id)?;
        self.note_recent(id);
        self.store.put_formula(id, formula.to_record()?).await?;
        Ok(id)
    }

    /// Stores new formulas and the names given to them (or to others) in
    /// one commit: a value and its name appear together or not at all.
    pub async fn commit_formulas(
        &self,
        formulas: &[(FormulaId, Formula)],
        names: Vec<(FormulaId, capstan_store::PetName, FormulaId)>,
    ) -> Result<(), ErrorValue> {
        let mut records = Vec::with_capacity(formulas.len());
        for (id, formula) in formulas {
            self.note_recent(*id);
            records.push((*id, formula.to_record()?));
        }
        self.store
            .transact(move |tx| {
                for (id, record) in &records {
                    tx.put_formula(*id, record)?;
                }
                for (pet_store, name, id) in &names {
                    tx.write_name(*pet_store, name, *id)?;
                }
                Ok(())
            })
            .await
            .map_err(ErrorValue::from)
    }

    /// The value of formula `id`: made on first use (dependencies first),
    /// then the same value every time until cancelled. Returns a promise
    /// while it is being made.
    pub fn provide(&self, id: FormulaId) -> Value {
        if let Some(value) = self.live.borrow().get(&id) {
            return value.clone();
        }
        let mut kit = PromiseKit::new();
        let promise = kit.promise.clone();
        self.live.borrow_mut().insert(id, promise.clone());
        let daemon = self.rc();
        self.vat.spawn(async move {
            match incarnate::incarnate(&daemon, id).await {
                Ok(value) => {
                    daemon.remember(id, &value);
                    kit.resolve(value);
                }
                Err(error) => {
                    daemon.live.borrow_mut().remove(&id);
                    kit.reject(Value::error(error));
                }
            }
        });
        promise
    }

    /// The settled value of formula `id`.
    pub async fn provide_settled(&self, id: FormulaId) -> Result<Value, ErrorValue> {
        when(&self.provide(id)).await.map_err(reason_to_error)
    }

    fn remember(&self, id: FormulaId, value: &Value) {
        self.note_recent(id);
        // Keep the promise only if the value is still the current one.
        let mut live = self.live.borrow_mut();
        if !live.contains_key(&id) {
            return;
        }
        live.insert(id, value.clone());
        // Only while `live` holds the reference: an identity is an
        // address, which a freed reference's successor may reuse.
        if let Value::Remotable(reference) | Value::Promise(reference) = value {
            self.identities.borrow_mut().insert(reference.identity(), id);
        }
    }

    /// The formula a live value came from, if it has one.
    pub fn identify(&self, value: &Value) -> Option<FormulaId> {
        match value {
            Value::Remotable(reference) | Value::Promise(reference) => {
                self.identities.borrow().get(&reference.identity()).copied()
            }
            _ => None,
        }
    }

    /// Forgets the value of `id` and of everything made from it; they are
    /// made again on next use. Workers among them are stopped.
    pub fn cancel(&self, id: FormulaId) -> usize {
        let mut to_cancel = vec![id];
        let mut cancelled = HashSet::new();
        while let Some(next) = to_cancel.pop() {
            if !cancelled.insert(next) {
                continue;
            }
            if let Some(dependents) = self.dependents.borrow_mut().remove(&next) {
                to_cancel.extend(dependents);
            }
        }
        for id in &cancelled {
            let removed = self.live.borrow_mut().remove(id);
            if let Some(Value::Remotable(reference) | Value::Promise(reference)) = &removed {
                self.identities.borrow_mut().remove(&reference.identity());
            }
            self.workers.stop(*id, "the worker was cancelled");
        }
        cancelled.len()
    }

    /// Forgets every value obtained from `node`, so they are asked for
    /// again (over a new session) on next use.
    pub fn forget_remote(&self, node: NodeId) {
        let remote: Vec<FormulaId> = self
            .live
            .borrow()
            .keys()
            .filter(|id| id.node() == node)
            .copied()
            .collect();
        for id in remote {
            self.cancel(id);
        }
    }

    fn note_dependency(&self, dependency: FormulaId, dependent: FormulaId) {
        self.dependents
            .borrow_mut()
            .entry(dependency)
            .or_default()
            .insert(dependent);
    }
}

/// An id shortened for messages: ids are secrets and must not be printed
/// whole.
pub fn short_id(id: FormulaId) -> String {
    let text = id.to_string();
    format!("{}…", &text[..text.len().min(8)])
}
