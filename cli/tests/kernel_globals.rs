//! Vat globals end to end, in a real node: a vat granted `fetch` reaches a
//! local HTTP server on its network allow-list and is refused another
//! port on the same machine (and a redirect to it) before any connection
//! is made; over https it trusts what the node's roots trust
//! (`SSL_CERT_FILE`) and refuses other certificates and downgrades to
//! http; a vat granted `setTimeout` gets its callbacks; a vat without
//! grants has neither; an unknown global fails the launch and leaves no
//! subcluster, vat or worker behind.

#![allow(clippy::expect_used, clippy::unwrap_used, reason = "tests")]

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use capstan_tests::{Node, Run, use_binary, wait_until};
use serde_json::Value as Json;

const PATIENCE: Duration = Duration::from_secs(20);

fn started() -> Node {
    use_binary(env!("CARGO_BIN_EXE_capstan"));
    Node::started(&[])
}

/// A plain HTTP/1.1 server on a free loopback port: answers each request
/// with `respond(path)` (status line and headers, body) and counts the
/// connections it accepted.
struct HttpServer {
    port: u16,
    connections: Arc<AtomicUsize>,
}

impl HttpServer {
    fn start(respond: fn(&str, u16) -> (String, Vec<u8>)) -> HttpServer {
        Self::start_with(respond, None)
    }

    /// The same server speaking https with `tls`.
    fn start_with(respond: fn(&str, u16) -> (String, Vec<u8>), tls: Option<Arc<rustls::ServerConfig>>) -> HttpServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&connections);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                counted.fetch_add(1, Ordering::SeqCst);
                let mut stream: Box<dyn ReadWrite> = match &tls {
                    None => Box::new(stream),
                    Some(config) => {
                        let Ok(connection) = rustls::ServerConnection::new(Arc::clone(config)) else {
                            continue;
                        };
                        Box::new(rustls::StreamOwned::new(connection, stream))
                    }
                };
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && head.len() < 64 * 1024 {
                    match stream.read(&mut byte) {
                        Ok(1) => head.push(byte[0]),
                        _ => break,
                    }
                }
                let head = String::from_utf8_lossy(&head).to_string();
                let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
                let (status_and_headers, body) = respond(&path, port);
                let _ = stream.write_all(status_and_headers.as_bytes());
                let _ = stream.write_all(b"\r\n");
                let _ = stream.write_all(&body);
                let _ = stream.flush();
            }
        });
        HttpServer { port, connections }
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

trait ReadWrite: Read + Write + Send {}
impl<T: Read + Write + Send> ReadWrite for T {}

/// A CA (its certificate in PEM) and https settings for a server on
/// 127.0.0.1 with a certificate that CA signed.
fn tls_for_loopback() -> (String, Arc<rustls::ServerConfig>) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let server = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![server.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
    (ca.pem(), Arc::new(config))
}

fn answer(path: &str, _port: u16) -> (String, Vec<u8>) {
    match path {
        "/huge" => (
            "HTTP/1.1 200 OK\r\nContent-Length: 100000000\r\nConnection: close\r\n".into(),
            Vec::new(),
        ),
        // No length given: the body runs to the end of the connection.
        "/endless" => ("HTTP/1.1 200 OK\r\nConnection: close\r\n".into(), vec![b'x'; 9 << 20]),
        path if path.starts_with("/redirect-to/") => {
            let target = &path["/redirect-to/".len()..];
            (
                format!(
                    "HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:{target}/\r\nContent-Length: 0\r\nConnection: close\r\n"
                ),
                Vec::new(),
            )
        }
        path => {
            let body = format!("hello from {path}").into_bytes();
            (
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n",
                    body.len()
                ),
                body,
            )
        }
    }
}

/// Writes a one-vat cluster: `main.js` with `source`, granted `vat`'s
/// extra fields (`globals`, `network`).
fn cluster(node: &Node, name: &str, source: &str, vat: Json) -> PathBuf {
    let dir = node.state_dir().join("clusters").join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("main.js"), source).unwrap();
    let mut main = serde_json::json!({ "sourceSpec": "./main.js" });
    for (key, value) in vat.as_object().unwrap() {
        main[key] = value.clone();
    }
    let config = serde_json::json!({ "bootstrap": "main", "vats": { "main": main } });
    let path = dir.join("cluster.json");
    std::fs::write(&path, serde_json::to_string_pretty(&config).unwrap()).unwrap();
    path
}

fn launch(node: &Node, config: &Path) -> String {
    let run = node.run(&["kernel", "launch", config.to_str().unwrap()]);
    let lines: Vec<&str> = run.ok().lines().collect();
    assert_eq!(lines.len(), 2, "{run:?}");
    lines[1].to_string()
}

fn queue(node: &Node, kref: &str, method: &str, args: Json) -> Run {
    node.run(&["kernel", "queue", kref, method, &args.to_string()])
}

const FETCHER: &str = r#"
export function buildRootObject() {
  return makeDefaultExo('Fetcher', {
    async get(url) {
      const response = await fetch(url);
      return `${response.status} ${response.headers.get('content-type')} ${await response.text()}`;
    },
    async tryGet(url) {
      try {
        const response = await fetch(url);
        return `fetched ${response.status}`;
      } catch (error) {
        return `${error.name}: ${error.message}`;
      }
    },
    kinds() { return [typeof fetch, typeof Response, typeof setTimeout, String(Date.now())].join(); },
  });
}
"#;

#[test]
fn fetch_reaches_a_listed_host_and_is_refused_another_port_before_connecting() {
    let node = started();
    let listed = HttpServer::start(answer);
    let unlisted = HttpServer::start(answer);
    let config = cluster(
        &node,
        "fetcher",
        FETCHER,
        serde_json::json!({
            "globals": ["fetch", "Response"],
            "network": { "allowedHosts": [format!("127.0.0.1:{}", listed.port)] },
        }),
    );
    let root = launch(&node, &config);

    let url = |server: &HttpServer, path: &str| format!("http://127.0.0.1:{}{path}", server.port);
    assert_eq!(
        queue(&node, &root, "get", serde_json::json!([url(&listed, "/a")])).ok(),
        "200 text/plain hello from /a"
    );
    assert_eq!(listed.connections(), 1);

    let refused = queue(&node, &root, "tryGet", serde_json::json!([url(&unlisted, "/b")]));
    assert_eq!(
        refused.ok(),
        format!(
            "TypeError: fetch refused: the host 127.0.0.1:{} is not on this vat's network allow-list (network.allowedHosts)",
            unlisted.port
        )
    );
    // A redirect from the listed host to the unlisted one is refused too.
    let redirected = queue(
        &node,
        &root,
        "tryGet",
        serde_json::json!([url(&listed, &format!("/redirect-to/{}", unlisted.port))]),
    );
    assert!(
        redirected
            .ok()
            .contains(&format!("the host 127.0.0.1:{} is not on", unlisted.port)),
        "{redirected:?}"
    );
    assert_eq!(unlisted.connections(), 0, "no connection was made to the unlisted port");
    assert_eq!(listed.connections(), 2);

    // Other schemes, and a body past the bound.
    let other = queue(&node, &root, "tryGet", serde_json::json!(["ftp://127.0.0.1/"]));
    assert!(other.ok().contains("only http: and https: URLs"), "{other:?}");
    let huge = queue(&node, &root, "tryGet", serde_json::json!([url(&listed, "/huge")]));
    assert!(huge.ok().contains("larger than 8388608 bytes"), "{huge:?}");
    let endless = queue(&node, &root, "tryGet", serde_json::json!([url(&listed, "/endless")]));
    assert!(endless.ok().contains("larger than 8388608 bytes"), "{endless:?}");

    // Only the granted globals are there; the clock stays tamed.
    assert_eq!(
        queue(&node, &root, "kinds", serde_json::json!([])).ok(),
        "function,function,undefined,NaN"
    );
}

#[test]
fn fetch_without_an_allow_list_reaches_no_host() {
    let node = started();
    let server = HttpServer::start(answer);
    let config = cluster(&node, "closed", FETCHER, serde_json::json!({ "globals": ["fetch"] }));
    let root = launch(&node, &config);
    let refused = queue(
        &node,
        &root,
        "tryGet",
        serde_json::json!([format!("http://127.0.0.1:{}/", server.port)]),
    );
    assert!(
        refused.ok().contains("is not on this vat's network allow-list"),
        "{refused:?}"
    );
    assert_eq!(server.connections(), 0);
}

const SLEEPER: &str = r#"
export function buildRootObject() {
  return makeDefaultExo('Sleeper', {
    race() {
      const order = [];
      return new Promise(resolve => {
        setTimeout(() => { order.push('long'); resolve(order.join()); }, 300);
        setTimeout(() => order.push('short'), 20);
        const cancelled = setTimeout(() => order.push('cancelled'), 10);
        clearTimeout(cancelled);
      });
    },
    ticks() {
      let count = 0;
      return new Promise(resolve => {
        const id = setInterval(() => { count += 1; if (count === 3) { clearInterval(id); resolve(count); } }, 5);
      });
    },
  });
}
"#;

#[test]
fn a_vat_granted_timers_gets_its_callbacks_in_order() {
    let node = started();
    let config = cluster(
        &node,
        "sleeper",
        SLEEPER,
        serde_json::json!({ "globals": ["setTimeout", "clearTimeout", "setInterval", "clearInterval"] }),
    );
    let root = launch(&node, &config);
    assert_eq!(queue(&node, &root, "race", serde_json::json!([])).ok(), "short,long");
    assert_eq!(queue(&node, &root, "ticks", serde_json::json!([])).ok(), "3");
}

/// The processes whose parent is `parent` (the node's workers).
fn children(parent: i32) -> BTreeSet<i32> {
    let mut found = BTreeSet::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|name| name.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
        if after
            .split_whitespace()
            .nth(1)
            .and_then(|ppid| ppid.parse::<i32>().ok())
            == Some(parent)
        {
            found.insert(pid);
        }
    }
    found
}

fn json_of(run: &Run) -> Json {
    serde_json::from_str(run.ok()).unwrap()
}

#[test]
fn an_unknown_global_fails_the_launch_and_leaves_nothing_behind() {
    let node = started();
    let node_pid = node.pid().unwrap();
    let working = cluster(
        &node,
        "working",
        SLEEPER,
        serde_json::json!({ "globals": ["setTimeout"] }),
    );
    launch(&node, &working);
    let subclusters_before = json_of(&node.run(&["kernel", "subclusters", "--json"]));
    let vats_before = json_of(&node.run(&["kernel", "status", "--json"]))["vats"].clone();
    let workers_before = children(node_pid);

    for (name, vat) in [
        ("unknown", serde_json::json!({ "globals": ["setTimeout", "process"] })),
        ("not-a-list", serde_json::json!({ "globals": "fetch" })),
        (
            "odd-host",
            serde_json::json!({ "globals": ["fetch"], "network": { "allowedHosts": ["http://127.0.0.1:80/"] } }),
        ),
    ] {
        let config = cluster(&node, name, SLEEPER, vat);
        let run = node.run(&["kernel", "launch", config.to_str().unwrap()]);
        let error = run.err();
        match name {
            "unknown" => assert!(
                error.contains(
                    "asks for the global \"process\", which vats cannot have; the allowed globals are setTimeout"
                ),
                "{run:?}"
            ),
            "not-a-list" => assert!(error.contains("\"globals\" must be an array"), "{run:?}"),
            _ => assert!(error.contains("no scheme, path"), "{run:?}"),
        }
    }

    assert_eq!(
        json_of(&node.run(&["kernel", "subclusters", "--json"])),
        subclusters_before
    );
    assert_eq!(json_of(&node.run(&["kernel", "status", "--json"]))["vats"], vats_before);
    assert!(
        wait_until(PATIENCE, || children(node_pid) == workers_before),
        "worker processes left: before {workers_before:?}, now {:?}",
        children(node_pid)
    );
}

#[test]
fn fetch_over_https_trusts_the_nodes_roots_and_refuses_other_certificates_and_downgrades() {
    use_binary(env!("CARGO_BIN_EXE_capstan"));
    let (ca, tls) = tls_for_loopback();
    let (_, untrusted_tls) = tls_for_loopback();
    let roots = tempfile::tempdir().unwrap();
    let ca_file = roots.path().join("ca.pem");
    std::fs::write(&ca_file, ca).unwrap();
    let node = Node::started(&[("SSL_CERT_FILE", ca_file.to_str().unwrap())]);
    let trusted = HttpServer::start_with(answer, Some(tls));
    let untrusted = HttpServer::start_with(answer, Some(untrusted_tls));
    let plain = HttpServer::start(answer);
    let listed: Vec<String> = [&trusted, &untrusted, &plain]
        .iter()
        .map(|server| format!("127.0.0.1:{}", server.port))
        .collect();
    let config = cluster(
        &node,
        "secure",
        FETCHER,
        serde_json::json!({ "globals": ["fetch"], "network": { "allowedHosts": listed } }),
    );
    let root = launch(&node, &config);
    let url = |server: &HttpServer, path: &str| format!("https://127.0.0.1:{}{path}", server.port);

    assert_eq!(
        queue(&node, &root, "get", serde_json::json!([url(&trusted, "/a")])).ok(),
        "200 text/plain hello from /a"
    );
    let refused = queue(&node, &root, "tryGet", serde_json::json!([url(&untrusted, "/a")]));
    assert!(refused.ok().contains("TLS with 127.0.0.1:"), "{refused:?}");
    // A redirect from https to http is refused, even to a listed host.
    let downgraded = queue(
        &node,
        &root,
        "tryGet",
        serde_json::json!([url(&trusted, &format!("/redirect-to/{}", plain.port))]),
    );
    assert!(
        downgraded.ok().contains("redirects from https: to http:"),
        "{downgraded:?}"
    );
    assert_eq!(plain.connections(), 0);
}
