//! Deployment, end to end across real containers: the image from
//! `deploy/build-image`, the three-node network from
//! `deploy/docker-compose.yml`, introductions by `deploy/introduce`, then
//! mail, calls, a worker and a third party's reference between containers,
//! a node killed and started again, acknowledged names surviving SIGKILL, a
//! rolling restart of the three nodes, and a partition that heals.
//!
//! Needs Docker Engine and `docker-compose`. Without them the suite fails
//! when `CI` is set (CI installs them) and skips, saying so, elsewhere.

#![allow(clippy::expect_used, clippy::unwrap_used, reason = "a test fails by panicking")]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const COUNTER: &str = "let n = 0; const counter = makeExo('Counter', M.interface('Counter', { incr: M.call().returns(M.number()), twin: M.call().returns(M.remotable()), never: M.call().returns(M.any()) }), { incr() { n += 1; return n; }, twin() { return counter; }, never() { return new Promise(() => {}); } }); counter";

/// The longest a call may take to fail once the node holding its object
/// is killed or cut off. A kill closes the connection at once; a silent
/// partition is noticed by keep-alives within ping interval plus timeout
/// (5 s + 10 s) and a 1 s check, so 16 s; a new call during it fails after
/// the 10 s dial timeout.
const FAILURE_BOUND: Duration = Duration::from_secs(20);

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repository")
        .to_path_buf()
}

fn succeeds(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// Whether docker and docker-compose can be used; without them the test
/// fails in CI and is skipped, loudly, elsewhere.
fn docker_ready() -> bool {
    if succeeds("docker", &["info"]) && succeeds("docker-compose", &["version"]) {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI is set but docker or docker-compose is not available (.ci/run installs and starts them)"
    );
    eprintln!("SKIPPED deploy suite: docker or docker-compose is not available (it runs in CI)");
    false
}

fn text(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).trim_end().to_string(),
        String::from_utf8_lossy(&output.stderr).trim_end().to_string(),
    )
}

/// A compose project built from a fresh image; dropping it removes its
/// containers, network, volumes and image, also when the test failed.
struct Network {
    project: String,
    image: String,
    compose_file: PathBuf,
    /// Container ids by service (a container keeps its id across `start`).
    containers: std::cell::RefCell<std::collections::HashMap<String, String>>,
}

impl Network {
    fn new() -> Network {
        let unique = format!(
            "capstantest{}x{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("clock")
                .subsec_nanos()
        );
        Network {
            image: format!("capstan-test:{unique}"),
            project: unique,
            compose_file: repo().join("deploy/docker-compose.yml"),
            containers: std::cell::RefCell::default(),
        }
    }

    fn compose(&self) -> Command {
        let mut command = Command::new("docker-compose");
        command
            .env("CAPSTAN_IMAGE", &self.image)
            .arg("-p")
            .arg(&self.project)
            .arg("-f")
            .arg(&self.compose_file);
        command
    }

    fn compose_ok(&self, args: &[&str]) -> String {
        let output = self.compose().args(args).output().expect("docker-compose");
        let (stdout, stderr) = text(&output);
        assert!(
            output.status.success(),
            "docker-compose {args:?} failed: {stdout}\n{stderr}"
        );
        stdout
    }

    /// The container running `service`.
    fn container(&self, service: &str) -> String {
        if let Some(id) = self.containers.borrow().get(service) {
            return id.clone();
        }
        let id = self.compose_ok(&["ps", "-q", service]);
        assert!(!id.is_empty(), "no container for {service}");
        self.containers.borrow_mut().insert(service.to_string(), id.clone());
        id
    }

    /// `capstan ARGS` in `service`'s container.
    fn command(&self, service: &str, args: &[&str]) -> Command {
        let mut command = Command::new("docker");
        command
            .args(["exec", "-i", &self.container(service), "capstan"])
            .args(args);
        command
    }

    fn run(&self, service: &str, args: &[&str]) -> Output {
        self.command(service, args).output().expect("docker exec")
    }

    /// Standard output of `capstan ARGS` in `service`; panics if it failed.
    fn ok(&self, service: &str, args: &[&str]) -> String {
        let output = self.run(service, args);
        let (stdout, stderr) = text(&output);
        assert!(
            output.status.success(),
            "{service}: capstan {args:?} failed: {stdout}\n{stderr}"
        );
        stdout
    }

    fn answers(&self, service: &str) -> bool {
        self.run(service, &["ping"]).status.success()
    }

    fn wait_ready(&self, services: &[&str], timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if services.iter().all(|service| self.answers(service)) {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        if std::thread::panicking()
            && let Ok(output) = self.compose().args(["logs", "--no-color", "--tail", "15"]).output()
        {
            eprintln!("{}", String::from_utf8_lossy(&output.stdout));
        }
        let _ = self
            .compose()
            .args(["down", "--volumes", "--remove-orphans", "--timeout", "5"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = Command::new("docker")
            .args(["image", "rm", "--force", &self.image])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Waits for a spawned command, at most `timeout`; its output if it ended.
fn ended_within(mut child: Child, timeout: Duration) -> Option<Output> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if child.try_wait().ok().flatten().is_some() {
            return Some(child.wait_with_output().expect("output"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// A call pending on bob's side ends, failed with a clear error, within
/// [`FAILURE_BOUND`] of `event` (which has just happened).
fn pending_call_fails(pending: Child, event: &str) {
    let since = Instant::now();
    let output = ended_within(pending, FAILURE_BOUND).expect("the pending call did not fail within the bound");
    assert!(!output.status.success());
    let stderr = text(&output).1;
    assert!(
        stderr.contains("the peer that holds this object went away")
            || stderr.contains("the peer that holds this object cannot be reached"),
        "{stderr}"
    );
    eprintln!("pending call failed {} ms after {event}", since.elapsed().as_millis());
}

/// A new call from bob to alice's counter fails clearly within the bound.
fn new_call_fails(network: &Network, when: &str) {
    let started = Instant::now();
    let failed = network.run("bob", &["eval", "E(c).incr()", "c:c"]);
    assert!(!failed.status.success());
    let stderr = text(&failed).1;
    assert!(
        stderr.contains("the peer that holds this object cannot be reached"),
        "{stderr}"
    );
    assert!(
        started.elapsed() < FAILURE_BOUND,
        "the new call took {:?}",
        started.elapsed()
    );
    eprintln!("new call failed in {} ms {when}", started.elapsed().as_millis());
}

fn time_calls(network: &Network, service: &str, args: &[&str], count: u32) -> Duration {
    let started = Instant::now();
    for _ in 0..count {
        network.ok(service, args);
    }
    started.elapsed() / count
}

#[test]
fn three_nodes_in_containers_mail_call_and_survive_a_killed_peer() {
    if !docker_ready() {
        return;
    }
    let network = Network::new();
    let built = Command::new(repo().join("deploy/build-image"))
        .env("CAPSTAN_BIN", env!("CARGO_BIN_EXE_capstan"))
        .env("CAPSTAN_IMAGE", &network.image)
        .output()
        .expect("deploy/build-image");
    let (stdout, stderr) = text(&built);
    assert!(built.status.success(), "build-image failed: {stdout}\n{stderr}");
    eprintln!("{stdout}");

    let up = Instant::now();
    network.compose_ok(&["up", "-d"]);
    assert!(
        network.wait_ready(&["alice", "bob", "carol"], Duration::from_secs(60)),
        "the three nodes did not answer within 60 s"
    );
    eprintln!("three nodes ready {} ms after `up`", up.elapsed().as_millis());
    // The image runs as its own user, logs to standard output and keeps state in /data.
    let user = Command::new("docker")
        .args(["inspect", "--format", "{{.Config.User}}", &network.container("alice")])
        .output()
        .expect("docker inspect");
    assert_eq!(text(&user).0, "capstan");
    let logs = Command::new("docker")
        .args(["logs", &network.container("alice")])
        .output()
        .expect("docker logs");
    let (stdout, stderr) = text(&logs);
    assert!(
        stdout.contains("INFO") && stdout.contains("network listening"),
        "no log on standard output: {stdout}\n{stderr}"
    );

    let introduced = Command::new(repo().join("deploy/introduce"))
        .env("CAPSTAN_IMAGE", &network.image)
        .args(["-p", &network.project, "-f"])
        .arg(&network.compose_file)
        .output()
        .expect("deploy/introduce");
    let (stdout, stderr) = text(&introduced);
    assert!(introduced.status.success(), "introduce failed: {stdout}\n{stderr}");
    for (service, others) in [
        ("alice", ["bob", "carol"]),
        ("bob", ["alice", "carol"]),
        ("carol", ["alice", "bob"]),
    ] {
        let names = network.ok(service, &["list"]);
        for other in others {
            assert!(
                names.lines().any(|name| name == other),
                "{service} does not name {other}: {names}"
            );
        }
    }

    // A counter in mail from alice to bob, called from bob's container.
    network.ok("alice", &["eval", COUNTER, "-n", "counter"]);
    network.ok("alice", &["send", "bob", "a counter @counter"]);
    let inbox = network.ok("bob", &["inbox"]);
    assert!(inbox.contains("0. \"alice\" sent \"a counter @counter\""), "{inbox}");
    network.ok("bob", &["adopt", "0", "counter", "-n", "c"]);
    assert_eq!(network.ok("bob", &["eval", "E(c).incr()", "c:c"]), "1");
    assert_eq!(network.ok("bob", &["eval", "E(c).incr()", "c:c"]), "2");
    assert_eq!(
        network.ok("bob", &["eval", "E(E(E(c).twin()).twin()).incr()", "c:c"]),
        "3"
    );
    assert_eq!(network.ok("alice", &["eval", "E(c).incr()", "c:counter"]), "4");
    // Mail the other way.
    network.ok("bob", &["eval", "'thanks'", "-n", "note"]);
    network.ok("bob", &["send", "alice", "thanks @note"]);
    let inbox = network.ok("alice", &["inbox"]);
    assert!(inbox.contains("\"bob\" sent \"thanks @note\""), "{inbox}");

    // Remote eval in a worker alice granted: it runs on alice's node.
    let workers = |service: &str| -> u64 {
        let status = network.ok(service, &["status", "--json"]);
        serde_json::from_str::<serde_json::Value>(&status).expect("status")["workers"]
            .as_u64()
            .expect("workers")
    };
    let (alice_before, bob_before) = (workers("alice"), workers("bob"));
    network.ok("alice", &["spawn", "helper"]);
    network.ok("alice", &["send", "bob", "my worker @helper"]);
    network.ok("bob", &["adopt", "1", "helper", "-n", "alices-worker"]);
    assert_eq!(network.ok("bob", &["eval", "6*7", "-w", "alices-worker"]), "42");
    assert_eq!(workers("alice"), alice_before + 1, "the eval ran in alice's new worker");
    assert_eq!(workers("bob"), bob_before, "bob started no worker");

    // carol's counter, passed by alice to bob, called from bob.
    network.ok("carol", &["eval", COUNTER, "-n", "counter"]);
    network.ok("carol", &["send", "alice", "carol's counter @counter"]);
    network.ok("alice", &["adopt", "1", "counter", "-n", "carols"]);
    network.ok("alice", &["send", "bob", "from carol @carols"]);
    let inbox = network.ok("bob", &["inbox"]);
    assert!(inbox.contains("2. \"alice\" sent \"from carol @carols\""), "{inbox}");
    network.ok("bob", &["adopt", "2", "carols", "-n", "cc"]);
    assert_eq!(network.ok("bob", &["eval", "E(cc).incr()", "cc:cc"]), "1");
    assert_eq!(network.ok("carol", &["eval", "E(c).incr()", "c:counter"]), "2");

    // Round trips, for the record: each is a `docker exec` of the CLI.
    let ping = time_calls(&network, "bob", &["ping"], 20);
    let local = time_calls(&network, "bob", &["eval", "1"], 20);
    let remote = time_calls(&network, "bob", &["eval", "E(c).incr()", "c:c"], 20);
    assert_eq!(network.ok("bob", &["eval", "E(c).incr()", "c:c"]), "25");
    eprintln!(
        "per command from bob (20 each): ping {} ms, local eval {} ms, E(c).incr() on alice {} ms",
        ping.as_millis(),
        local.as_millis(),
        remote.as_millis()
    );

    // alice is killed: bob's pending and new calls on her counter fail
    // within the bound, with a clear error.
    let mut pending = network
        .command("bob", &["eval", "E(c).never()", "c:c"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("pending eval");
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        pending.try_wait().expect("pending eval").is_none(),
        "the call ended before alice was killed"
    );
    let alice = network.container("alice");
    assert!(succeeds("docker", &["kill", &alice]), "docker kill failed");
    pending_call_fails(pending, "the kill");
    new_call_fails(&network, "after the kill");

    // alice starts again: bob's names work again without a new introduction.
    network.compose_ok(&["start", "alice"]);
    assert!(
        network.wait_ready(&["alice"], Duration::from_secs(30)),
        "alice did not come back"
    );
    let deadline = Instant::now() + FAILURE_BOUND;
    let again = loop {
        let output = network.run("bob", &["eval", "E(c).incr()", "c:c"]);
        if output.status.success() || Instant::now() > deadline {
            break text(&output);
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    // Her node made the counter again from its formula: the count restarts.
    assert_eq!(again.0, "1", "{}", again.1);
    network.ok("bob", &["send", "alice", "back? @note"]);
    let inbox = network.ok("alice", &["inbox"]);
    assert!(inbox.contains("\"bob\" sent \"back? @note\""), "{inbox}");

    // Acknowledged writes survive SIGKILL: every name the CLI acknowledged
    // on carol is there, with its value, after `docker kill` and `start`.
    for i in 0..10 {
        network.ok("carol", &["eval", &format!("{i} * 7"), "-n", &format!("w{i}")]);
    }
    assert!(
        succeeds("docker", &["kill", &network.container("carol")]),
        "docker kill failed"
    );
    network.compose_ok(&["start", "carol"]);
    assert!(
        network.wait_ready(&["carol"], Duration::from_secs(30)),
        "carol did not come back"
    );
    for i in 0..10 {
        let value = network.ok("carol", &["eval", "w", &format!("w:w{i}")]);
        assert_eq!(value, (i * 7).to_string(), "w{i} after the kill");
    }

    // A kernel subcluster on alice whose counter vat keeps its count in baggage.
    let copied = Command::new("docker")
        .arg("cp")
        .arg(repo().join("examples/kernel"))
        .arg(format!("{}:/data/kernel", network.container("alice")))
        .output()
        .expect("docker cp");
    assert!(copied.status.success(), "docker cp failed: {:?}", text(&copied));
    let launched = network.ok("alice", &["kernel", "launch", "/data/kernel/cluster.json"]);
    let root = launched.lines().nth(1).expect("root kref").to_string();
    assert!(root.starts_with("ko"), "{launched}");
    assert_eq!(network.ok("alice", &["kernel", "queue", &root, "incr"]), "1");
    assert_eq!(network.ok("alice", &["kernel", "queue", &root, "incr"]), "2");

    // A rolling restart of the three nodes loses no name, no message and no baggage.
    let services = ["alice", "bob", "carol"];
    let before: Vec<(String, String)> = services
        .iter()
        .map(|service| (network.ok(service, &["list"]), network.ok(service, &["inbox"])))
        .collect();
    let rolling = Instant::now();
    for service in services {
        network.compose_ok(&["restart", "--timeout", "10", service]);
        assert!(
            network.wait_ready(&[service], Duration::from_secs(30)),
            "{service} did not come back"
        );
    }
    eprintln!("rolling restart took {} ms", rolling.elapsed().as_millis());
    for (service, (names, inbox)) in services.iter().zip(&before) {
        assert_eq!(&network.ok(service, &["list"]), names, "{service}'s names");
        assert_eq!(&network.ok(service, &["inbox"]), inbox, "{service}'s inbox");
    }
    assert_eq!(
        network.ok("alice", &["kernel", "queue", &root, "incr"]),
        "3",
        "baggage kept"
    );
    // bob's adopted counter from alice works (a new incarnation) and mail
    // works both ways.
    let deadline = Instant::now() + FAILURE_BOUND;
    let again = loop {
        let output = network.run("bob", &["eval", "E(c).incr()", "c:c"]);
        if output.status.success() || Instant::now() > deadline {
            break text(&output);
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(again.0.parse::<u64>().is_ok(), "{} {}", again.0, again.1);
    network.ok("bob", &["send", "alice", "after the restart @note"]);
    let inbox = network.ok("alice", &["inbox"]);
    assert!(inbox.contains("\"bob\" sent \"after the restart @note\""), "{inbox}");
    network.ok("alice", &["send", "bob", "and back @counter"]);
    let inbox = network.ok("bob", &["inbox"]);
    assert!(inbox.contains("\"alice\" sent \"and back @counter\""), "{inbox}");

    // A partition: bob is cut off the network while a call to alice's
    // counter is pending. The pending and a new call fail within the
    // bound; after bob is connected again his calls work, with no new
    // introduction.
    let mut pending = network
        .command("bob", &["eval", "E(c).never()", "c:c"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("pending eval");
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        pending.try_wait().expect("pending eval").is_none(),
        "the call ended before the partition"
    );
    let compose_network = format!("{}_default", network.project);
    let bob = network.container("bob");
    assert!(
        succeeds("docker", &["network", "disconnect", &compose_network, &bob]),
        "docker network disconnect failed"
    );
    pending_call_fails(pending, "the partition");
    new_call_fails(&network, "during the partition");
    assert!(
        succeeds(
            "docker",
            &["network", "connect", "--alias", "bob", &compose_network, &bob]
        ),
        "docker network connect failed"
    );
    let healed = Instant::now();
    let deadline = Instant::now() + FAILURE_BOUND;
    let again = loop {
        let output = network.run("bob", &["eval", "E(c).incr()", "c:c"]);
        if output.status.success() || Instant::now() > deadline {
            break text(&output);
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(again.0.parse::<u64>().is_ok(), "{} {}", again.0, again.1);
    eprintln!("bob's calls work {} ms after `connect`", healed.elapsed().as_millis());
    network.ok("bob", &["send", "alice", "healed @note"]);
    let inbox = network.ok("alice", &["inbox"]);
    assert!(inbox.contains("\"bob\" sent \"healed @note\""), "{inbox}");
}
