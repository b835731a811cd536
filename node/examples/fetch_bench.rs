//! The cost of `fetch` from a vat: the same small HTTP GET to a local
//! server, made (1) bare from Rust with the node's HTTP client
//! (`kernel::fetch::fetch`, the allow-list check included), and (2) by a
//! vat's `fetch` global, which sends each request over CapTP to the
//! node's `fetch` power and gets the response back (see
//! `kernel/fetch.rs` for why the node makes the request).
//!
//! ```text
//! cargo build --release -p capstan
//! cargo run --release -p capstan-node --example fetch_bench [REQUESTS]
//! ```
//! Vats run in worker processes from the `capstan` binary (`CAPSTAN_BIN`,
//! else the one built beside this example).

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::time::Instant;

use capstan_node::kernel::fetch::{FetchRequest, fetch};
use capstan_node::kernel::{ClusterConfig, Kernel, KernelOptions};
use capstan_node::runtime::Vat;
use capstan_node::workers::WorkerSpawner;
use capstan_protocol::Value;

const FETCH_VAT: &str = r#"
export function buildRootObject() {
  return makeDefaultExo('root', {
    async fetchMany(url, count) {
      let bytes = 0;
      for (let i = 0; i < count; i += 1) {
        const response = await fetch(url);
        bytes += (await response.text()).length;
      }
      return bytes;
    },
  });
}
"#;

const BODY: &[u8] = b"hello from the bench server";

/// Answers every request with [`BODY`] and closes the connection.
fn serve(listener: TcpListener) {
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && head.len() < 16 * 1024 {
            match stream.read(&mut byte) {
                Ok(1) => head.push(byte[0]),
                _ => break,
            }
        }
        let answer = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            BODY.len()
        );
        let _ = stream.write_all(answer.as_bytes());
        let _ = stream.write_all(BODY);
    }
}

fn capstan_binary() -> Result<PathBuf, Box<dyn std::error::Error>> {
    if let Some(path) = std::env::var_os("CAPSTAN_BIN") {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe()?;
    let beside = exe
        .parent()
        .and_then(|examples| examples.parent())
        .map(|profile| profile.join(format!("capstan{}", std::env::consts::EXE_SUFFIX)));
    match beside {
        Some(path) if path.exists() => Ok(path),
        _ => {
            Err("no capstan binary beside this example; build it (`cargo build -p capstan`) or set CAPSTAN_BIN".into())
        }
    }
}

fn per_request(total: std::time::Duration, count: usize) -> String {
    format!("{:.1} µs", total.as_secs_f64() * 1e6 / count as f64)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let requests: usize = std::env::args().nth(1).map(|n| n.parse()).transpose()?.unwrap_or(500);
    let program = capstan_binary()?;
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    std::thread::spawn(move || serve(listener));
    let host = format!("127.0.0.1:{port}");
    let url = format!("http://{host}/");

    let state = std::env::temp_dir().join(format!("capstan-fetch-bench-{}", std::process::id()));
    std::fs::create_dir_all(&state)?;
    let source = state.join("fetch-vat.js");
    std::fs::write(&source, FETCH_VAT)?;
    let config = serde_json::json!({
        "bootstrap": "fetcher",
        "vats": {"fetcher": {
            "sourceSpec": source,
            "globals": ["fetch"],
            "network": {"allowedHosts": [host]},
        }}
    });
    let config = ClusterConfig::from_value(&capstan_protocol::json::from_json(&config), None)?;

    let vat = Vat::new();
    let run_state = state.clone();
    let outcome: Result<(), Box<dyn std::error::Error>> = vat.clone().run_until(async move {
        let allowed = vec![host.clone()];
        // Warm up both paths once.
        fetch(&allowed, FetchRequest::get(&url)).await?;
        let started = Instant::now();
        for _ in 0..requests {
            let response = fetch(&allowed, FetchRequest::get(&url)).await?;
            assert_eq!(response.body, BODY);
        }
        let bare = started.elapsed();

        let store = capstan_store::Store::open(&run_state)?;
        let options = KernelOptions::new(WorkerSpawner::new(program, run_state.clone()));
        let kernel = Kernel::make(store, vat, options).await?;
        let launched = kernel.launch_subcluster(config).await?;
        let root = launched.root_kref;
        kernel
            .queue_message(&root, "fetchMany", vec![Value::from(url.as_str()), Value::from(1.0)])
            .await?;
        let started = Instant::now();
        let bytes = kernel
            .queue_message(
                &root,
                "fetchMany",
                vec![Value::from(url.as_str()), Value::from(requests as f64)],
            )
            .await?;
        let from_vat = started.elapsed();
        assert_eq!(bytes.as_number(), Some((BODY.len() * requests) as f64));
        kernel.stop();

        println!(
            "fetch of a {}-byte body from a local server, {requests} requests in sequence:",
            BODY.len()
        );
        println!(
            "  bare from Rust (node's HTTP client): {} per request",
            per_request(bare, requests)
        );
        println!(
            "  from a vat (fetch global -> node):   {} per request",
            per_request(from_vat, requests)
        );
        println!(
            "  the vat's overhead:                  {:.2}x",
            from_vat.as_secs_f64() / bare.as_secs_f64()
        );
        Ok(())
    });
    let _ = std::fs::remove_dir_all(&state);
    outcome
}
