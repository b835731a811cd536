//! Prints the `E()` round trip a web app's page sees, beside a bare
//! WebSocket echo in the same browser, and the one a Node.js program sees
//! over `run/captp0.sock`, beside Endo's own `@endo/captp` between two
//! Node.js processes over a Unix socket.
//!
//! - page: `examples/web-bench/app`, installed as an app, times sequential
//!   `await E(echo).echo(i)` (an exo in a worker: page → node → worker and
//!   back) and `E(powers).has(name)` (answered by the node) through
//!   `/capstan/client.js` over the node's WebSocket, then sequential round trips to a bare tokio-tungstenite
//!   echo server (this program, re-run as another process) from the same
//!   page, in headless Chromium;
//! - Node.js: `examples/web-bench/capstan-socket.mjs` times the same echo
//!   and the bootstrap's `ping()` with `@endo/captp` over `run/captp0.sock`; `endo-pair.mjs` times them
//!   between two `@endo/captp` processes (a `Far` echo), netstrings over a
//!   Unix socket both.
//!
//! Run: `cargo run --release -p capstan-tests --example web_bench`
//! (set CAPSTAN_BIN to a release `capstan`; needs chromium, Node.js and
//! `npm ci` in `examples/web-bench`). ROUNDS sets the calls timed.
#![allow(clippy::expect_used, clippy::unwrap_used, reason = "a benchmark program")]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use capstan_tests::browser::Browser;
use capstan_tests::{Node, capstan_binary};
use futures::{SinkExt, StreamExt};

const ECHO: &str =
    "makeExo('Echo', M.interface('Echo', { echo: M.call(M.any()).returns(M.any()) }), { echo(x) { return x; } })";

fn bench_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/web-bench")
}

/// The bare limit: a WebSocket server that sends back each text message.
fn echo_server() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        println!("{}", listener.local_addr().unwrap().port());
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            stream.set_nodelay(true).unwrap();
            tokio::spawn(async move {
                let Ok(mut socket) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                while let Some(Ok(message)) = socket.next().await {
                    if message.is_text() && socket.send(message).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
}

/// The microseconds per call a Node.js script prints, one figure each.
fn node_micros(args: &[&str]) -> Vec<f64> {
    let out = Command::new("node")
        .current_dir(bench_dir())
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "node {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(|figure| figure.parse().unwrap())
        .collect()
}

fn main() {
    if std::env::args().nth(1).as_deref() == Some("--echo-server") {
        echo_server();
        return;
    }
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(2000);
    assert!(
        bench_dir().join("node_modules/@endo/captp").exists(),
        "run `npm ci` in examples/web-bench first"
    );
    println!(
        "capstan binary: {}; {rounds} sequential calls each",
        capstan_binary().display()
    );
    let node = Node::started(&[]);
    node.run(&["eval", ECHO, "-n", "echo"]).ok();
    let app = bench_dir().join("app");
    node.run(&[
        "install",
        app.to_str().unwrap(),
        "-n",
        "bench",
        "--introduce",
        "echo:echo",
    ])
    .ok();
    let url = node.run(&["open", "bench", "--print"]).ok().trim().to_string();

    let mut echo = Command::new(std::env::current_exe().unwrap())
        .arg("--echo-server")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut port = String::new();
    BufReader::new(echo.stdout.take().unwrap())
        .read_line(&mut port)
        .unwrap();
    let chromium = capstan_tests::browser::chromium().expect("chromium is needed");
    let mut browser = Browser::launch(&chromium);
    let page = browser.wait_for(
        &format!("{url}?echo={}&rounds={rounds}", port.trim()),
        "document.getElementById('out').textContent",
        Duration::from_secs(300),
        |value| value.as_str().is_some_and(|text| text != "running"),
    );
    let _ = echo.kill();
    let _ = echo.wait();
    let page: serde_json::Value = serde_json::from_str(page.as_str().unwrap()).unwrap_or_else(|_| panic!("{page}"));

    let socket = node.state_dir().join("run/captp0.sock");
    let capstan_socket = node_micros(&["capstan-socket.mjs", socket.to_str().unwrap(), &rounds.to_string()]);
    let pair_dir = tempfile::tempdir().unwrap();
    let pair_socket = pair_dir.path().join("endo.sock");
    let pair_socket = pair_socket.to_str().unwrap();
    let mut server = Command::new("node")
        .current_dir(bench_dir())
        .args(["endo-pair.mjs", "server", pair_socket])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut listening = String::new();
    BufReader::new(server.stdout.take().unwrap())
        .read_line(&mut listening)
        .unwrap();
    let endo_pair = node_micros(&["endo-pair.mjs", "client", pair_socket, &rounds.to_string()])[0];
    let _ = server.kill();
    let _ = server.wait();

    let figure = |name: &str| page[name].as_f64().unwrap();
    println!(
        "limits: a bare WebSocket echo in the same browser (separate process) {:.1} µs; @endo/captp between two Node.js processes over a Unix socket {endo_pair:.1} µs",
        figure("bare")
    );
    println!(
        "page, WebSocket:   E(powers).has() (the node answers) {:8.1} µs/call   E(echo).echo(i) (exo in a worker) {:8.1} µs/call   bare echo {:8.1} µs",
        figure("node"),
        figure("capstan"),
        figure("bare")
    );
    println!(
        "Node.js, captp0:   E(bootstrap).ping() (the node answers) {:8.1} µs/call   E(echo).echo(i) (exo in a worker) {:8.1} µs/call   @endo/captp pair {endo_pair:8.1} µs",
        capstan_socket[1], capstan_socket[0]
    );
}
