//! The node's life: start (in the background or attached), stop, restart,
//! status, ping, log, where, purge.

use std::fs::OpenOptions;
use std::io::{BufRead, IsTerminal, Read, Seek, SeekFrom, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use capstan_node::daemon::{DaemonError, NodeOptions};
use capstan_node::workers;
use capstan_protocol::{Value, list};

use crate::client::{call, with_client};
use crate::commands::{Start, WhereWhat};
use crate::inspect::inspect;
use crate::state::StateDir;

/// How long `start` waits for a background node to answer.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `stop` waits for the node's process to exit.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// How long `stop` waits for the node's exit when its request got no answer.
const STOP_UNANSWERED_PATIENCE: Duration = Duration::from_secs(1);

/// How long a node whose process is alive may take to answer `status`
/// before it is taken for not running.
const STATUS_PATIENCE: Duration = Duration::from_secs(5);

/// The node's status if one answers on the socket.
fn running_status(state: &StateDir) -> Option<Value> {
    if !state.paths.socket().exists() {
        return None;
    }
    let deadline = Instant::now() + STATUS_PATIENCE;
    loop {
        let status = with_client(state, None, |client| async move {
            let endo = call(&client.host, "lookup", list!["ENDO"]).await?;
            call(&endo, "status", list![]).await
        });
        if let Ok(status) = status {
            return Some(status);
        }
        // A node whose pid file names a live process runs, busy or still
        // starting: `stop` must not take it for gone.
        if !pid_file_names_a_live_process(state) || Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn pid_file_names_a_live_process(state: &StateDir) -> bool {
    std::fs::read_to_string(state.paths.pid_file())
        .ok()
        .and_then(|text| text.trim().parse::<i32>().ok())
        .is_some_and(|pid| pid > 0 && capstan_node::daemon::control::process_running(pid))
}

fn field(status: &Value, name: &str) -> String {
    match status.as_record().and_then(|record| record.get(name)) {
        Some(Value::String(text)) => text.to_string(),
        Some(other) => inspect(other),
        None => String::new(),
    }
}

pub fn start(state: &StateDir, args: &Start) -> anyhow::Result<()> {
    if let Some(status) = running_status(state) {
        bail!(
            "a node is already running with state directory {} (pid {})",
            state.paths.root.display(),
            field(&status, "pid")
        );
    }
    // The node's files (its store holds its secret key) are the user's
    // alone, whatever the mode of a state directory it was given.
    // SAFETY: umask only sets this process's file-mode mask; it cannot fail.
    unsafe {
        libc::umask(0o077);
    }
    if args.foreground {
        return run_foreground(state, args);
    }
    state.paths.create()?;
    let log_path = state.paths.log();
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("cannot open the log {}", log_path.display()))?;
    let log_start = log.metadata().map(|metadata| metadata.len()).unwrap_or(0);
    let program = std::env::current_exe().context("cannot find the capstan program")?;
    let mut command = Command::new(program);
    command
        .arg("start")
        .arg("--foreground")
        .arg("--state")
        .arg(&state.paths.root)
        .stdin(Stdio::null())
        .stdout(log.try_clone().context("cannot share the log file")?)
        .stderr(log);
    for address in &args.listen {
        command.arg("--listen").arg(address);
    }
    if args.local {
        command.arg("--local");
    }
    for relay in &args.relay {
        command.arg("--relay").arg(relay);
    }
    if args.relay_service {
        command.arg("--relay-service");
    }
    // SAFETY: setsid is async-signal-safe; the child leaves the terminal's
    // session so closing the terminal does not stop the node.
    unsafe {
        command.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let ready = ReadySignal::bind(state);
    if let Some(ready) = &ready {
        command.env("NOTIFY_SOCKET", &ready.path);
    }
    let mut child = command.spawn().context("cannot start the node process")?;
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().context("cannot watch the node process")? {
            bail!(
                "the node exited during start ({status}):\n{}",
                log_since(&log_path, log_start)
            );
        }
        let answered = match &ready {
            Some(ready) => ready.wait(READY_POLL).then(|| child.id().to_string()),
            None => running_status(state).map(|status| field(&status, "pid")),
        };
        if let Some(pid) = answered {
            println!(
                "Started a Capstan node (pid {pid}) with state directory {}",
                state.paths.root.display()
            );
            return Ok(());
        }
        if started.elapsed() > READY_TIMEOUT {
            bail!(
                "the node did not answer within {} s; see {}",
                READY_TIMEOUT.as_secs(),
                log_path.display()
            );
        }
        if ready.is_none() {
            std::thread::sleep(READY_POLL);
        }
    }
}

/// How often `start` checks that the node it started still runs while it
/// waits for it to be ready.
const READY_POLL: Duration = Duration::from_millis(20);

/// Where a node started in the background says it is ready: a datagram
/// socket in the state's run directory, named to the node by
/// `NOTIFY_SOCKET`, to which it sends `READY=1` once its control socket
/// answers (as it does for systemd). `start` then needs no polling of the
/// control socket. Removed when dropped.
struct ReadySignal {
    socket: std::os::unix::net::UnixDatagram,
    path: std::path::PathBuf,
}

impl ReadySignal {
    /// `None` when the socket cannot be made (a path too long for a Unix
    /// socket, say): `start` then polls the control socket.
    fn bind(state: &StateDir) -> Option<ReadySignal> {
        let path = state.paths.run_dir().join(format!("start-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let socket = std::os::unix::net::UnixDatagram::bind(&path).ok()?;
        Some(ReadySignal { socket, path })
    }

    /// Whether `READY=1` arrives within `patience`.
    fn wait(&self, patience: Duration) -> bool {
        if self.socket.set_read_timeout(Some(patience)).is_err() {
            return false;
        }
        let mut message = [0u8; 64];
        match self.socket.recv(&mut message) {
            Ok(length) => message[..length]
                .split(|byte| *byte == b'\n')
                .any(|line| line == b"READY=1"),
            Err(_) => false,
        }
    }
}

impl Drop for ReadySignal {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn log_since(path: &Path, offset: u64) -> String {
    let mut text = String::new();
    if let Ok(mut file) = std::fs::File::open(path) {
        let _ = file.seek(SeekFrom::Start(offset));
        let _ = file.read_to_string(&mut text);
    }
    text.trim_end().to_string()
}

/// The program workers run: `capstan-worker` beside this program (it maps
/// far less memory per worker), else this program's `__worker` command.
fn worker_program() -> anyhow::Result<std::path::PathBuf> {
    let program = std::env::current_exe().context("cannot find the capstan program")?;
    let worker = program.with_file_name("capstan-worker");
    Ok(if worker.is_file() { worker } else { program })
}

fn run_foreground(state: &StateDir, args: &Start) -> anyhow::Result<()> {
    state.paths.create()?;
    init_logging(&state.paths.log())?;
    let options = NodeOptions {
        paths: state.paths.clone(),
        worker_memory_bytes: env_number("CAPSTAN_WORKER_MEMORY_BYTES", workers::DEFAULT_MEMORY_BYTES),
        worker_time_budget_ms: env_number("CAPSTAN_WORKER_TIME_BUDGET_MS", workers::DEFAULT_TIME_BUDGET_MS),
        worker_program: worker_program()?,
        listen_addresses: args.listen.clone(),
        local: args.local,
        relays: args.relay.clone(),
        relay_service: args.relay_service,
    };
    capstan_node::daemon::control::run(options).map_err(|error| match error {
        DaemonError::Store(capstan_node_store_error) => anyhow!("{capstan_node_store_error}"),
        other => anyhow!("{other}"),
    })
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(default)
}

/// The node logs to its log file, and also to standard error when that is
/// a terminal or `CAPSTAN_LOG_STDERR=1` asks for it (systemd), or to
/// standard output when `CAPSTAN_LOG_STDOUT=1` does (containers).
fn init_logging(log_path: &Path) -> anyhow::Result<()> {
    use tracing_subscriber::fmt::writer::BoxMakeWriter;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path)
        .with_context(|| format!("cannot open the log {}", log_path.display()))?;
    let filter = tracing_subscriber::EnvFilter::try_from_env("CAPSTAN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let to_file = tracing_subscriber::fmt::layer()
        .with_ansi(false)
        .with_writer(std::sync::Mutex::new(file));
    let asked = |variable: &str| std::env::var(variable).is_ok_and(|value| value == "1");
    let console = if asked("CAPSTAN_LOG_STDOUT") {
        Some((BoxMakeWriter::new(std::io::stdout), std::io::stdout().is_terminal()))
    } else if asked("CAPSTAN_LOG_STDERR") || std::io::stderr().is_terminal() {
        Some((BoxMakeWriter::new(std::io::stderr), std::io::stderr().is_terminal()))
    } else {
        None
    };
    let to_console =
        console.map(|(writer, terminal)| tracing_subscriber::fmt::layer().with_ansi(terminal).with_writer(writer));
    tracing_subscriber::registry()
        .with(filter)
        .with(to_file)
        .with(to_console)
        .try_init()
        .map_err(|error| anyhow!("cannot start logging: {error}"))
}

pub fn stop(state: &StateDir) -> anyhow::Result<()> {
    let Some(status) = running_status(state) else {
        println!("No node is running with state directory {}", state.paths.root.display());
        return Ok(());
    };
    let pid: i32 = field(&status, "pid").parse().unwrap_or(0);
    // The node may end before its answer is read; its exit is what counts.
    let asked = with_client(state, None, |client| async move {
        let endo = call(&client.host, "lookup", list!["ENDO"]).await?;
        call(&endo, "stop", list![]).await
    });
    // A node that did not take the request and runs on is not stopping.
    let patience = if asked.is_ok() {
        STOP_TIMEOUT
    } else {
        STOP_UNANSWERED_PATIENCE
    };
    let started = Instant::now();
    while pid > 0 && capstan_node::daemon::control::process_running(pid) {
        if started.elapsed() > patience {
            asked?;
            bail!("the node (pid {pid}) did not stop within {} s", STOP_TIMEOUT.as_secs());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    if pid <= 0 {
        asked?;
    }
    println!("Stopped the node (pid {pid})");
    Ok(())
}

pub fn restart(state: &StateDir, args: &Start) -> anyhow::Result<()> {
    stop(state)?;
    start(state, args)
}

pub fn status(state: &StateDir, json: bool) -> anyhow::Result<()> {
    let Some(status) = running_status(state) else {
        if json {
            println!(
                "{}",
                serde_json::json!({ "running": false, "state": state.paths.root.display().to_string() })
            );
        } else {
            println!("not running (state directory {})", state.paths.root.display());
        }
        std::process::exit(3);
    };
    if json {
        let mut object = super::to_json(&status);
        if let Some(map) = object.as_object_mut() {
            map.insert("running".into(), serde_json::Value::Bool(true));
        }
        println!("{object}");
        return Ok(());
    }
    println!("running");
    for (label, name) in [
        ("node id", "nodeId"),
        ("pid", "pid"),
        ("state", "state"),
        ("socket", "socket"),
        ("uptime (s)", "uptimeSeconds"),
        ("workers", "workers"),
        ("names", "names"),
        ("formulas", "formulas"),
        ("values", "incarnations"),
    ] {
        println!("{label:<11} {}", field(&status, name));
    }
    for (label, name) in [("listening", "listenAddresses"), ("connected", "connectedPeers")] {
        let items = list_field(&status, name);
        if items.is_empty() {
            println!("{label:<11} (none)");
        }
        for item in items {
            println!("{label:<11} {item}");
        }
    }
    println!("{:<11} {}", "reachable", field(&status, "reachability"));
    if let Some(Value::Array(relays)) = status.as_record().and_then(|record| record.get("relays")) {
        for relay in relays.iter() {
            let state = if field(relay, "reserved") == "true" {
                "reserved".to_string()
            } else {
                format!("no reservation: {}", field(relay, "lastError"))
            };
            println!("{:<11} {} ({state})", "relay", field(relay, "address"));
        }
    }
    for address in list_field(&status, "relayAddresses") {
        println!("{:<11} {address}", "relaying");
    }
    let sessions = match status.as_record().and_then(|record| record.get("sessions")) {
        Some(Value::Array(sessions)) => sessions.to_vec(),
        _ => Vec::new(),
    };
    for session in &sessions {
        let kind = field(session, "kind");
        let peer = field(session, "peer");
        let with = if peer.is_empty() {
            kind
        } else {
            format!("{kind} {peer}")
        };
        println!(
            "{:<11} {with}: {} imports, {} exports, {} questions, {} answers",
            "session",
            field(session, "imports"),
            field(session, "exports"),
            field(session, "questions"),
            field(session, "answers")
        );
    }
    Ok(())
}

fn list_field(status: &Value, name: &str) -> Vec<String> {
    match status.as_record().and_then(|record| record.get(name)) {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|item| item.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    }
}

/// `capstan peers`: the known peers, one a line: node id, then addresses.
pub fn peers(state: &StateDir, json: bool) -> anyhow::Result<()> {
    let peers = with_client(state, None, |client| async move {
        let endo = call(&client.host, "lookup", list!["ENDO"]).await?;
        call(&endo, "peers", list![]).await
    })?;
    if json {
        println!("{}", super::to_json(&peers));
        return Ok(());
    }
    for peer in peers.as_array().unwrap_or_default() {
        let mut line = field(peer, "nodeId");
        for address in list_field(peer, "addresses") {
            line.push(' ');
            line.push_str(&address);
        }
        println!("{line}");
    }
    Ok(())
}

pub fn ping(state: &StateDir) -> anyhow::Result<()> {
    let answer = with_client(state, None, |client| async move {
        let endo = call(&client.host, "lookup", list!["ENDO"]).await?;
        call(&endo, "ping", list![]).await
    })?;
    println!("{}", crate::inspect::inspect_top(&answer));
    Ok(())
}

pub fn log(state: &StateDir, follow: bool) -> anyhow::Result<()> {
    let path = state.paths.log();
    let mut file = std::fs::File::open(&path).with_context(|| format!("no log at {}", path.display()))?;
    let mut stdout = std::io::stdout().lock();
    std::io::copy(&mut file, &mut stdout)?;
    if !follow {
        return Ok(());
    }
    let mut reader = std::io::BufReader::new(file);
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            stdout.flush()?;
            std::thread::sleep(Duration::from_millis(200));
            continue;
        }
        stdout.write_all(line.as_bytes())?;
    }
}

pub fn where_is(state: &StateDir, what: WhereWhat) -> anyhow::Result<()> {
    let path = match what {
        WhereWhat::State => state.paths.root.clone(),
        WhereWhat::Sock => state.paths.socket(),
        WhereWhat::Log => state.paths.log(),
    };
    println!("{}", path.display());
    Ok(())
}

pub fn purge(state: &StateDir, force: bool) -> anyhow::Result<()> {
    let root = &state.paths.root;
    if !root.exists() {
        println!("Nothing to purge at {}", root.display());
        return Ok(());
    }
    if !state.paths.is_capstans() {
        bail!(
            "{} is not a Capstan state directory (it has no {}); nothing deleted",
            root.display(),
            capstan_node::daemon::paths::MARKER_FILE
        );
    }
    if !force {
        if !std::io::stdin().is_terminal() {
            bail!(
                "refusing to delete {} without -f when not on a terminal",
                root.display()
            );
        }
        eprint!("Delete the node and all its state in {}? [y/N] ", root.display());
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            println!("Nothing deleted");
            return Ok(());
        }
    }
    if running_status(state).is_some() {
        stop(state)?;
    }
    let purged = state.paths.purge()?;
    if purged.removed_directory {
        println!("Deleted {}", root.display());
    } else {
        println!(
            "Deleted the node's files in {}; kept what Capstan did not make: {}",
            root.display(),
            purged.kept.join(", ")
        );
    }
    Ok(())
}
