//! The node's life and its control socket. [`run`] opens the daemon, makes
//! the pinned values, listens on a Unix socket (mode 0600, in the 0700
//! runtime directory) where every client gets a CapTP session whose
//! bootstrap is the host agent, and stops cleanly on request or signal:
//! workers ended, socket and pid file removed, store closed.

use std::os::unix::fs::PermissionsExt;
use std::rc::Rc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use capstan_protocol::captp::Limits;
use capstan_protocol::guards::DefaultGuards;
use capstan_protocol::patterns::M;
use capstan_protocol::{ErrorValue, Value, record};
use tokio::net::UnixListener;

use super::names::{Hub, hub_of_agent};
use super::{Daemon, DaemonError, NodeOptions, gateway, paths, peers};
use crate::runtime::{ExoClass, MethodResult, SessionKind, SessionOptions, Vat, connect_with, when};

/// How many times a stopping node lets its other tasks run before it
/// closes the store (sessions and workers it ended drop their handles).
const STOP_YIELDS: usize = 16;

/// Runs a node until it is asked to stop. Blocks the calling thread.
pub fn run(options: NodeOptions) -> Result<(), DaemonError> {
    let vat = Vat::new();
    vat.run_until(serve(options, vat.clone()))
}

/// Tells a service manager the node is ready (its control socket answers)
/// when one asked by setting `NOTIFY_SOCKET`, as systemd does for a
/// `Type=notify` unit: one datagram `READY=1` to that socket, an abstract
/// one when its name starts with `@`. A failure is logged, never fatal.
fn notify_service_manager_ready() {
    let Some(target) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let sent = std::os::unix::net::UnixDatagram::unbound().and_then(|socket| {
        use std::os::unix::ffi::OsStrExt;
        let name = target.as_bytes();
        #[cfg(target_os = "linux")]
        if let Some(abstract_name) = name.strip_prefix(b"@") {
            use std::os::linux::net::SocketAddrExt;
            let address = std::os::unix::net::SocketAddr::from_abstract_name(abstract_name)?;
            return socket.send_to_addr(b"READY=1", &address);
        }
        socket.send_to(b"READY=1", std::path::Path::new(std::ffi::OsStr::from_bytes(name)))
    });
    if let Err(error) = sent {
        tracing::warn!(%error, "cannot tell the service manager that the node is ready (NOTIFY_SOCKET)");
    }
}

async fn serve(options: NodeOptions, vat: Vat) -> Result<(), DaemonError> {
    let started = Instant::now();
    let daemon = Daemon::open(options, vat.clone()).await?;
    let paths = daemon.options.paths.clone();
    let socket_path = paths.socket();
    // We hold the store's lock, so a socket file left here is stale.
    let _ = std::fs::remove_file(&socket_path);
    let socket_error = |source| DaemonError::Socket {
        path: socket_path.display().to_string(),
        source,
    };
    let listener = UnixListener::bind(&socket_path).map_err(socket_error)?;
    std::fs::set_permissions(&socket_path, std::fs::Permissions::from_mode(0o600)).map_err(socket_error)?;
    let _endo_socket = super::endo_socket::listen(&daemon, &vat)?;
    super::web::serve(&daemon, &vat);
    std::fs::write(paths.pid_file(), format!("{}\n", std::process::id())).map_err(|source| {
        DaemonError::StateDirectory(paths::StateDirError::Io {
            path: paths.pid_file().display().to_string(),
            source,
        })
    })?;
    STARTED_AT.with(|cell| cell.set(Some(started)));
    tracing::info!(node = %daemon.node_id, socket = %socket_path.display(), "node ready");
    notify_service_manager_ready();
    make_pins(&daemon);
    let kernel = Rc::clone(&daemon.kernel);
    vat.spawn(async move {
        if let Err(error) = kernel.start().await {
            tracing::error!(%error, "the kernel did not start fully");
        }
    });
    peers::greet_peers(&daemon);
    peers::greet_peers_when_addresses_change(&daemon);
    super::holds::send_releases(&daemon);

    let mut terminate =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).map_err(|source| {
            DaemonError::Signal {
                signal: "SIGTERM",
                source,
            }
        })?;
    let mut inbound = daemon.inbound.borrow_mut().take().ok_or(DaemonError::AlreadyServing)?;
    tracing::info!(
        addresses = ?daemon.network.listen_addresses().iter().map(ToString::to_string).collect::<Vec<_>>(),
        "listening for peers"
    );
    let mut interrupt =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()).map_err(|source| {
            DaemonError::Signal {
                signal: "SIGINT",
                source,
            }
        })?;
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    // The bootstrap must be the host itself, not a promise.
                    let (daemon, vat) = (Rc::clone(&daemon), vat.clone());
                    vat.clone().spawn(async move {
                        let host = match daemon.provide_settled(daemon.roots.host).await {
                            Ok(host) => host,
                            Err(error) => {
                                tracing::error!(error = %error.message, "the host agent cannot be made");
                                return;
                            }
                        };
                        let (reader, writer) = stream.into_split();
                        let options = SessionOptions::new(Limits::default()).with_kind(SessionKind::Client);
                        let connection = connect_with(&vat, reader, writer, Some(host), options);
                        tracing::debug!(session = connection.id().0, "control client connected");
                    });
                }
                Err(error) => tracing::warn!(%error, "accepting a control connection failed"),
            },
            stream = inbound.next() => match stream {
                Some(stream) => gateway::serve_inbound(&daemon, stream),
                None => {
                    tracing::warn!("the network stopped");
                    break;
                }
            },
            _ = daemon.stopped() => break,
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
        }
    }
    tracing::info!("node stopping");
    // Control sessions stay open until the process ends, and the awaits
    // below let their writers send what is queued (the answer to `stop`);
    // `capstan stop` also takes the node's exit, not the answer, as done.
    daemon.workers.stop_all();
    daemon.kernel.stop();
    daemon.network.shutdown().await;
    drop(inbound);
    drop(listener);
    let _ = std::fs::remove_file(&socket_path);
    let _ = std::fs::remove_file(paths.pid_file());
    // Let the tasks woken by the closes above run and drop what they hold.
    for _ in 0..STOP_YIELDS {
        tokio::task::yield_now().await;
    }
    match Rc::try_unwrap(daemon) {
        Ok(daemon) => daemon.store.close()?,
        Err(daemon) => {
            // Tasks that did not end still hold the store, and the process
            // exits with them: end its writes here, so that the write-ahead
            // log is emptied and deleted rather than replayed at next start.
            tracing::debug!("objects still hold the store; its writer stops now");
            daemon.store.stop_writing();
        }
    }
    tracing::info!("node stopped");
    Ok(())
}

thread_local! {
    static STARTED_AT: std::cell::Cell<Option<Instant>> = const { std::cell::Cell::new(None) };
}

/// Makes every pinned value at start.
fn make_pins(daemon: &Rc<Daemon>) {
    let hub = Hub {
        pet_store: daemon.roots.pins,
        specials: Vec::new(),
    };
    match hub.list(daemon) {
        Ok(names) => {
            for (name, id) in names {
                let value = daemon.provide(id);
                daemon.vat.spawn(async move {
                    if let Err(reason) = when(&value).await {
                        tracing::warn!(pin = %name, reason = %capstan_protocol::quote::quote(&reason), "a pinned value failed");
                    }
                });
            }
        }
        Err(error) => tracing::warn!(error = %error.message, "cannot list the pins"),
    }
}

fn define_endo() -> Result<ExoClass<Rc<Daemon>>, ErrorValue> {
    ExoClass::<Rc<Daemon>>::builder_without_init("Endo")
        .interface(M::interface(
            "Endo",
            [
                ("ping", M::call([]).returns(M::string())),
                ("status", M::call([]).returns(M::record())),
                ("stop", M::call([]).returns_undefined()),
                ("host", M::call([]).returns(M::any())),
                ("peers", M::call([]).returns(M::array())),
            ],
            DefaultGuards::None,
        ))
        .method("ping", |_, _| Ok(Value::from("pong")))
        .method("status", |cx, _| Ok(status(&cx.state())))
        .method("stop", |cx, _| {
            cx.state().request_stop();
            Ok(Value::Undefined)
        })
        .method("host", |cx, _| {
            let daemon = cx.state();
            Ok(daemon.provide(daemon.roots.host))
        })
        .method("peers", |cx, _| known_peers(&cx.state()))
        .build()
}

thread_local! {
    static ENDO: Result<ExoClass<Rc<Daemon>>, ErrorValue> = define_endo();
}

/// The node's root object (`ENDO`): its life and status.
/// Whether process `pid` still runs. One that has exited but waits to be
/// reaped (a zombie: a node started in the background outlives its
/// parent, and some init processes reap slowly) has stopped: it holds no
/// lock, socket or file any more.
pub fn process_running(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    let exists = unsafe { libc::kill(pid, 0) == 0 };
    exists && !is_zombie(pid)
}

/// Whether `/proc` says `pid` has exited and waits to be reaped (state
/// `Z`, the field after the parenthesised command name in `stat`), with
/// no thread left. While a process exits, its main thread shows `Z`
/// before the others are gone, and the files they share (the store's
/// lock) close only with the last of them.
fn is_zombie(pid: i32) -> bool {
    let leader_exited = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let (_, after_name) = stat.rsplit_once(')')?;
            after_name.split_whitespace().next().map(|state| state == "Z")
        })
        .unwrap_or(false);
    leader_exited && std::fs::read_dir(format!("/proc/{pid}/task")).map_or(true, |threads| threads.count() <= 1)
}

pub fn make_endo_object(daemon: &Rc<Daemon>) -> Value {
    match ExoClass::make_local(&ENDO, Rc::clone(daemon)) {
        Ok(value) => value,
        Err(error) => Value::error(error),
    }
}

fn status(daemon: &Daemon) -> Value {
    let uptime = STARTED_AT
        .with(|cell| cell.get())
        .map_or(0.0, |started| started.elapsed().as_secs_f64());
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |since| since.as_secs_f64());
    let names = hub_of_agent(daemon, daemon.roots.host)
        .and_then(|hub| hub.list(daemon))
        .map_or(0, |names| names.len());
    record! {
        "nodeId" => daemon.node_id.to_string(),
        "pid" => std::process::id(),
        "state" => daemon.options.paths.root.display().to_string(),
        "socket" => daemon.options.paths.socket().display().to_string(),
        "uptimeSeconds" => (uptime * 1000.0).round() / 1000.0,
        "now" => now,
        "workers" => daemon.workers.count() as u32,
        "workerPids" => Value::array(daemon.workers.pids().into_iter().map(Value::from)),
        "names" => names as u32,
        "formulas" => daemon.store.read().and_then(|snapshot| snapshot.formula_count()).map_or(0.0, |count| count as f64),
        "incarnations" => daemon.incarnation_count() as f64,
        "listenAddresses" => Value::array(daemon.network.listen_addresses().iter().map(|a| Value::from(a.to_string()))),
        "connectedPeers" => Value::array(daemon.network.connected_peers().iter().map(|n| Value::from(n.to_string()))),
        "sessions" => Value::array(daemon.vat.session_counts().iter().map(session_status)),
        "reachability" => daemon.network.reachability().label(),
        "externalAddresses" => Value::array(daemon.network.external_addresses().iter().map(|a| Value::from(a.to_string()))),
        "relays" => Value::array(daemon.network.relays().iter().map(relay_status)),
        "relayService" => daemon.network.is_relay_service(),
        "relayAddresses" => Value::array(relay_addresses(daemon).into_iter().map(Value::from)),
    }
}

/// One configured relay in the status answer.
fn relay_status(relay: &crate::net::RelayState) -> Value {
    let mut fields = vec![
        ("address", Value::from(relay.address.to_string())),
        ("reserved", Value::from(relay.reserved)),
    ];
    if let Some(error) = &relay.last_error {
        fields.push(("lastError", Value::from(error.as_str())));
    }
    Value::record(fields)
}

/// What other nodes give `--relay` to use this node as their relay: its
/// announced addresses with its libp2p id. Empty unless it serves as one.
fn relay_addresses(daemon: &Daemon) -> Vec<String> {
    if !daemon.network.is_relay_service() {
        return Vec::new();
    }
    let peer = daemon.network.peer_id();
    daemon
        .network
        .external_addresses()
        .into_iter()
        .map(|address| address.with(crate::net::Protocol::P2p(peer)).to_string())
        .collect()
}

/// One live CapTP session in the status answer: who is at the other end
/// and its table sizes.
fn session_status(counts: &crate::runtime::SessionCounts) -> Value {
    let mut fields = vec![(
        "kind",
        counts
            .kind
            .as_ref()
            .map_or(Value::Null, |kind| Value::from(kind.label())),
    )];
    if let Some(SessionKind::Peer { node }) = &counts.kind {
        fields.push(("peer", Value::from(node.as_str())));
    }
    for (name, count) in [
        ("imports", counts.imports),
        ("exports", counts.exports),
        ("questions", counts.questions),
        ("answers", counts.answers),
    ] {
        fields.push((name, Value::from(count as f64)));
    }
    Value::record(fields)
}

/// Every known peer: node id, addresses, when last seen.
fn known_peers(daemon: &Daemon) -> MethodResult {
    let peers = daemon.store.read().and_then(|snapshot| snapshot.list_peers())?;
    let links = daemon.network.links();
    Ok(Value::array(peers.into_iter().map(|(node, record)| {
        let link = links.get(&node);
        let mut fields = vec![
            ("node", Value::from(node.to_string())),
            ("nodeId", Value::from(node.to_string())),
            (
                "addresses",
                Value::array(record.addresses.iter().map(|a| Value::from(a.as_str()))),
            ),
            ("lastSeenUnixMs", Value::from(record.last_seen_unix_ms as f64)),
            ("connected", Value::from(link.is_some())),
        ];
        if let Some(link) = link {
            let connection = if link.relayed { "relayed" } else { "direct" };
            fields.push(("connection", Value::from(connection)));
            if let Some(round_trip) = link.round_trip {
                fields.push(("rttMicros", Value::from(round_trip.as_micros() as f64)));
            }
        }
        Value::record(fields)
    })))
}
