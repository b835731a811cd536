//! A harness for end-to-end tests: each [`Node`] is a real `capstan`
//! process on a temporary state directory, driven through the `capstan`
//! command as a person would. Nodes are stopped (or killed) and their
//! directories removed when dropped.
//!
//! The suites themselves are integration tests of the `capstan` package
//! (`cli/tests/`), so that cargo builds the binary before running them
//! and hands them its path; they pass it to [`use_binary`].

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "a test harness fails its test by panicking"
)]

pub mod bare;
pub mod bench;
pub mod browser;
pub mod hostile;
pub mod netns;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

static BINARY: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// Tells the harness which `capstan` binary to run (a suite passes
/// `env!("CARGO_BIN_EXE_capstan")`).
pub fn use_binary(path: &str) {
    let _ = BINARY.set(PathBuf::from(path));
}

/// The `capstan` binary: the one given to [`use_binary`], else
/// `CAPSTAN_BIN`, else the one beside the running executable.
pub fn capstan_binary() -> PathBuf {
    if let Some(path) = BINARY.get() {
        return path.clone();
    }
    if let Some(path) = std::env::var_os("CAPSTAN_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("test executable path");
    let mut dir = exe.parent().expect("deps directory").to_path_buf();
    if dir.ends_with("deps") || dir.ends_with("examples") {
        dir.pop();
    }
    let candidate = dir.join("capstan");
    assert!(
        candidate.exists(),
        "no capstan binary at {}; build it (`cargo build -p capstan`) or set CAPSTAN_BIN",
        candidate.display()
    );
    candidate
}

/// What a command printed and how it ended.
#[derive(Debug)]
pub struct Run {
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn from(output: Output) -> Run {
        Run {
            status: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Standard output without the final newline; panics if the command failed.
    pub fn ok(&self) -> &str {
        assert_eq!(self.status, 0, "command failed: {self:?}");
        self.stdout.trim_end_matches('\n')
    }

    /// Standard error without the final newline; panics if the command succeeded.
    pub fn err(&self) -> &str {
        assert_ne!(self.status, 0, "command succeeded: {self:?}");
        self.stderr.trim_end_matches('\n')
    }
}

/// Where end-to-end nodes listen for peers: loopback, a free port.
pub const LOOPBACK: &str = "/ip4/127.0.0.1/tcp/0";

/// Introduces two nodes as two people would: `inviter` invites
/// `invitee_name`, and `invitee` accepts the locator, naming the inviter
/// `inviter_name`. Returns the locator.
pub fn introduce(inviter: &Node, invitee_name: &str, invitee: &Node, inviter_name: &str) -> String {
    let locator = inviter.run(&["invite", invitee_name]).ok().trim().to_string();
    assert!(locator.starts_with("capstan://"), "{locator}");
    invitee.run(&["accept", inviter_name, &locator]).ok();
    locator
}

/// A node on a temporary state directory.
pub struct Node {
    state: tempfile::TempDir,
    env: Vec<(String, String)>,
}

impl Node {
    /// A node that is not started yet; `env` is passed to every command
    /// (worker limits, for instance).
    pub fn new(env: &[(&str, &str)]) -> Node {
        let state = tempfile::Builder::new()
            .prefix("capstan-e2e-")
            .tempdir()
            .expect("temporary directory");
        Node {
            state,
            env: env.iter().map(|(k, v)| ((*k).to_string(), (*v).to_string())).collect(),
        }
    }

    /// A started node.
    pub fn started(env: &[(&str, &str)]) -> Node {
        let node = Node::new(env);
        node.run(&["start"]).ok();
        node
    }

    /// A node started listening for peers on a free loopback port
    /// ([`LOOPBACK`]), with `config` as its `config.toml` unless empty.
    pub fn started_on_loopback(config: &str) -> Node {
        let node = Node::new(&[]);
        if !config.is_empty() {
            std::fs::write(node.state_dir().join("config.toml"), config).expect("write config.toml");
        }
        node.run(&["start", "--listen", LOOPBACK]).ok();
        node
    }

    pub fn state_dir(&self) -> &Path {
        self.state.path()
    }

    pub fn command(&self, args: &[&str]) -> Command {
        self.command_with(Command::new(capstan_binary()), args)
    }

    /// `command`, with `capstan --state DIR args…` appended to its
    /// arguments and the node's environment.
    fn command_with(&self, mut command: Command, args: &[&str]) -> Command {
        command.arg("--state").arg(self.state.path()).args(args);
        command.env_remove("CAPSTAN_STATE");
        for (key, value) in &self.env {
            command.env(key, value);
        }
        command.stdin(Stdio::null());
        command
    }

    /// Runs a command that a node bug could leave waiting for ever: fails
    /// (killing it) if it does not end within `patience`.
    pub fn run_patiently(&self, args: &[&str], patience: Duration) -> Run {
        let mut child = self
            .command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn capstan");
        let ended = wait_until(patience, || matches!(child.try_wait(), Ok(Some(_))));
        if !ended {
            let _ = child.kill();
        }
        let output = child.wait_with_output().expect("wait for capstan");
        assert!(ended, "capstan {args:?} never answered");
        Run::from(output)
    }

    /// Runs `capstan --state DIR start args…` inside network namespace
    /// `namespace` (see [`netns`]): the node and its workers live there;
    /// other commands reach it through its control socket as usual.
    pub fn start_in(&self, namespace: &str, args: &[&str]) -> Run {
        let mut prefix = Command::new("ip");
        prefix.args(["netns", "exec", namespace]).arg(capstan_binary());
        let mut all = vec!["start"];
        all.extend_from_slice(args);
        Run::from(
            self.command_with(prefix, &all)
                .output()
                .expect("run capstan in a namespace"),
        )
    }

    /// Runs `capstan --state DIR args...`.
    pub fn run(&self, args: &[&str]) -> Run {
        Run::from(self.command(args).output().expect("run capstan"))
    }

    /// Runs with `input` on standard input.
    pub fn run_with_input(&self, args: &[&str], input: &[u8]) -> Run {
        use std::io::Write;
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn capstan");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input)
            .expect("write input");
        Run::from(child.wait_with_output().expect("wait for capstan"))
    }

    /// `capstan eval SOURCE endowments...`, expecting success.
    pub fn eval(&self, source: &str, endowments: &[&str]) -> String {
        let mut args = vec!["eval", source];
        args.extend_from_slice(endowments);
        self.run(&args).ok().to_string()
    }

    /// The node's status record (`status --json`).
    pub fn status(&self) -> serde_json::Value {
        let run = self.run(&["status", "--json"]);
        serde_json::from_str(run.stdout.trim()).expect("status JSON")
    }

    pub fn pid(&self) -> Option<i32> {
        let status = self.status();
        status["pid"].as_i64().map(|pid| pid as i32)
    }

    pub fn socket(&self) -> PathBuf {
        self.state.path().join("run").join("capstan.sock")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let pid = self.pid();
        let _ = self.run(&["stop"]);
        if let Some(pid) = pid {
            let deadline = Instant::now() + Duration::from_secs(5);
            while process_alive(pid) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if process_alive(pid) {
                kill(pid, libc::SIGKILL);
            }
        }
    }
}

/// Whether `pid` runs (an exited process not yet reaped does not).
pub fn process_alive(pid: i32) -> bool {
    capstan_node::daemon::control::process_running(pid)
}

pub fn kill(pid: i32, signal: i32) {
    // SAFETY: sending a signal to a process the test started.
    unsafe {
        libc::kill(pid, signal);
    }
}

/// Waits until `condition` holds or `timeout` passes.
pub fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    condition()
}

/// Whether `text` names something a guest must never learn: a run of 12
/// or more hex digits (node and formula ids), a libp2p peer id, a
/// multiaddr or a locator.
pub fn names_an_identifier(text: &str) -> bool {
    let mut run = 0;
    let long_hex = text.chars().any(|c| {
        run = if c.is_ascii_hexdigit() { run + 1 } else { 0 };
        run >= 12
    });
    long_hex
        || ["12D3KooW", "/ip4/", "/ip6/", "/dns", "capstan://"]
            .iter()
            .any(|marker| text.contains(marker))
}

/// Writes a subcluster config `cluster.json` into `dir`: `vats` are
/// (name, source) pairs, written as `NAME.js`, the first the bootstrap
/// vat; `services` are the kernel services it asks for.
pub fn write_cluster(dir: &Path, services: &[&str], vats: &[(&str, &str)]) -> PathBuf {
    std::fs::create_dir_all(dir).expect("cluster directory");
    let mut configs = serde_json::Map::new();
    for (name, source) in vats {
        std::fs::write(dir.join(format!("{name}.js")), source).expect("write vat program");
        configs.insert(
            (*name).to_string(),
            serde_json::json!({ "sourceSpec": format!("./{name}.js") }),
        );
    }
    let config = serde_json::json!({
        "bootstrap": vats[0].0,
        "services": services,
        "vats": configs,
    });
    let path = dir.join("cluster.json");
    std::fs::write(&path, serde_json::to_string_pretty(&config).expect("JSON")).expect("write config");
    path
}
