//! Prints what two people behind NATs see, in network namespaces on this
//! machine (needs root): time from `capstan accept` to the first answer,
//! and the `E()` round trip from a worker-free eval on bob's node to a
//! counter on alice's, both when a hole punch made the connection direct
//! and when symmetric NATs keep it relayed; beside each round trip, a bare
//! TCP ping-pong of 64 bytes between the same two namespaces over the same
//! hops (through both NATs with a port forward for the direct path;
//! through a plain byte relay in the relay's namespace for the relayed
//! one), in Python, as `deploy/bench` does.
//!
//! Run: `cargo build --release -p capstan && CAPSTAN_BIN=target/release/capstan
//! cargo run --release -p capstan-tests --example nat_bench`

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "a benchmark stops at its first failure"
)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use capstan_tests::Node;
use capstan_tests::netns::{RELAY_IP, TwoHomes, two_homes};

/// Awaited calls timed in one eval.
const CALLS: u32 = 2_000;
/// Bare ping-pongs timed.
const PINGS: u32 = 2_000;

const COUNTER: &str = "let n = 0; makeExo('Counter', M.interface('Counter', { incr: M.call().returns(M.number()) }), { incr() { n += 1; return n; } })";

const ECHO_SERVER: &str = r#"
import socket, sys
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("0.0.0.0", int(sys.argv[1])))
server.listen(1)
connection, _ = server.accept()
connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
while True:
    data = connection.recv(64)
    if not data:
        break
    connection.sendall(data)
"#;

/// Dials out to the relay and echoes what comes back through it.
const ECHO_DIALER: &str = r#"
import socket, sys, time
for _ in range(100):
    try:
        connection = socket.create_connection((sys.argv[1], int(sys.argv[2])))
        break
    except OSError:
        time.sleep(0.05)
connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
while True:
    data = connection.recv(64)
    if not data:
        break
    connection.sendall(data)
"#;

/// Takes one connection on each of two ports and copies bytes between them.
const BYTE_RELAY: &str = r#"
import socket, sys, threading
def accept(port):
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("0.0.0.0", port))
    server.listen(1)
    connection, _ = server.accept()
    connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return connection
a = accept(int(sys.argv[1]))
b = accept(int(sys.argv[2]))
def copy(source, sink):
    while True:
        data = source.recv(65536)
        if not data:
            sink.close()
            return
        sink.sendall(data)
threading.Thread(target=copy, args=(a, b), daemon=True).start()
copy(b, a)
"#;

const PING_CLIENT: &str = r#"
import socket, statistics, sys, time
for _ in range(100):
    try:
        client = socket.create_connection((sys.argv[1], int(sys.argv[2])))
        break
    except OSError:
        time.sleep(0.05)
client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
frame = bytes(64)
samples = []
for _ in range(int(sys.argv[3]) + 100):
    begin = time.perf_counter_ns()
    client.sendall(frame)
    received = 0
    while received < 64:
        received += len(client.recv(64 - received))
    samples.append(time.perf_counter_ns() - begin)
print(statistics.median(samples[100:]) / 1000)
"#;

fn python_in(namespace: &str, script: &str, args: &[&str]) -> Command {
    let mut command = Command::new("ip");
    command
        .args(["netns", "exec", namespace, "python3", "-c", script])
        .args(args)
        .stdout(Stdio::piped());
    command
}

/// Median bare ping-pong from bob to `address:port`, µs.
fn bare_ping(homes: &TwoHomes, address: &str, port: &str) -> f64 {
    let output = python_in(&homes.bob, PING_CLIENT, &[address, port, &PINGS.to_string()])
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout).trim().parse().unwrap()
}

fn started_relay_and_homes(homes: &TwoHomes) -> (Node, Node, Node) {
    let relay = Node::new(&[]);
    relay.start_in(&homes.relay, &["--relay-service"]).ok();
    let status = relay.status();
    let address = status["relayAddresses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|address| address.as_str().unwrap().to_string())
        .find(|address| address.contains(RELAY_IP) && address.contains("/tcp/"))
        .unwrap();
    let alice = Node::new(&[]);
    let bob = Node::new(&[]);
    alice.start_in(&homes.alice, &["--relay", &address]).ok();
    bob.start_in(&homes.bob, &["--relay", &address]).ok();
    for node in [&alice, &bob] {
        let deadline = Instant::now() + Duration::from_secs(20);
        while node.status()["relays"][0]["reserved"] != true {
            assert!(Instant::now() < deadline, "no reservation");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    (relay, alice, bob)
}

/// Runs one topology: prints accept-to-first-answer and the round trips.
fn measure(symmetric: bool) {
    let homes = two_homes(symmetric).expect("root, ip and iptables are needed");
    let (_relay, alice, bob) = started_relay_and_homes(&homes);
    let locator = alice.run(&["invite", "bob"]).ok().trim().to_string();
    let started = Instant::now();
    bob.run(&["accept", "alice", &locator]).ok();
    let accepted = started.elapsed();
    alice.run(&["eval", COUNTER, "-n", "counter"]).ok();
    alice.run(&["send", "bob", "a counter @counter"]).ok();
    bob.run(&["adopt", "0", "counter", "-n", "c"]).ok();
    let peers: serde_json::Value = serde_json::from_str(bob.run(&["peers", "--json"]).ok()).unwrap();
    let connection = peers[0]["connection"].as_str().unwrap_or("?").to_string();
    let source = format!("(async () => {{ for (let i = 0; i < {CALLS}; i += 1) {{ await E(c).incr(); }} }})()");
    bob.run(&["eval", &source, "c:c"]).ok();
    let begin = Instant::now();
    bob.run(&["eval", &source, "c:c"]).ok();
    let round_trip = begin.elapsed().as_secs_f64() * 1e6 / f64::from(CALLS);

    let bare = if symmetric {
        let mut relay = python_in(&homes.relay, BYTE_RELAY, &["5001", "5002"]).spawn().unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let mut echo = python_in(&homes.alice, ECHO_DIALER, &[RELAY_IP, "5001"])
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let bare = bare_ping(&homes, RELAY_IP, "5002");
        for child in [&mut relay, &mut echo] {
            let _ = child.kill();
            let _ = child.wait();
        }
        bare
    } else {
        // A port forward on alice's router: the same hops as the punched path.
        let forward = [
            "iptables",
            "-t",
            "nat",
            "-A",
            "PREROUTING",
            "-p",
            "tcp",
            "--dport",
            "5003",
            "-j",
            "DNAT",
            "--to-destination",
            "192.168.1.2:5003",
        ];
        homes.topology.exec(&homes.nat_a, &forward);
        let accept = [
            "iptables", "-I", "FORWARD", "-p", "tcp", "--dport", "5003", "-j", "ACCEPT",
        ];
        homes.topology.exec(&homes.nat_a, &accept);
        let mut echo = python_in(&homes.alice, ECHO_SERVER, &["5003"]).spawn().unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let bare = bare_ping(&homes, "100.64.1.2", "5003");
        let _ = echo.kill();
        let _ = echo.wait();
        bare
    };
    let kind = if symmetric {
        "symmetric NATs"
    } else {
        "hole-punching NATs"
    };
    println!("{kind}: connection {connection}");
    println!(
        "  accept to first answer       {:>9.1} ms",
        accepted.as_secs_f64() * 1e3
    );
    println!(
        "  E() round trip               {round_trip:>9.1} µs   bare TCP over the same hops {bare:>7.1} µs   ratio {:.2}",
        round_trip / bare
    );
}

fn main() {
    measure(false);
    measure(true);
}
