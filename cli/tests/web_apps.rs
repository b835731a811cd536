#![allow(clippy::expect_used, clippy::unwrap_used, reason = "tests")]
//! Web apps, end to end: a real node serves an installed app over
//! loopback HTTP, and a real browser (Debian's `chromium`, headless,
//! driven over the DevTools protocol from this file) loads its page, which
//! connects back over a WebSocket with `/capstan/client.js` and calls an
//! exo its guest was introduced to. Tokens reach their own app only,
//! other origins are refused, apps survive restarts and go with their
//! name, and hostile WebSocket input ends only that connection (driven
//! from Rust with tokio-tungstenite, no browser needed).
//!
//! The browser: `$CAPSTAN_CHROMIUM`, else `chromium` on the `PATH`. When
//! it is missing these tests fail if `CI` is set and are skipped loudly
//! otherwise; `.ci/run` installs it.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use capstan_tests::browser::{Browser, browser_or_skip};
use capstan_tests::{Node, use_binary};
use futures::{SinkExt, StreamExt};
use serde_json::{Value as Json, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const COUNTER: &str = "let n = 0; makeExo('Counter', M.interface('Counter', { incr: M.call().returns(M.number()) }), { incr() { n += 1; return n; } })";

fn started() -> Node {
    use_binary(env!("CARGO_BIN_EXE_capstan"));
    Node::started(&[])
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The app's URL, as `capstan open --print` gives it.
fn app_url(node: &Node, name: &str) -> String {
    node.run(&["open", name, "--print"]).ok().trim().to_string()
}

/// The app's origin (`http://<label>.localhost:PORT`) and token, from its URL.
fn split_url(url: &str) -> (String, String) {
    let (origin, rest) = url.split_once("/app/").unwrap();
    (origin.to_string(), rest.trim_end_matches('/').to_string())
}

/// Where to connect for `origin`: browsers resolve `*.localhost` to
/// loopback themselves, and the server listens on 127.0.0.1.
fn dial_address(origin: &str) -> String {
    format!("127.0.0.1:{}", origin.rsplit(':').next().unwrap())
}

/// The node's own origin (`http://127.0.0.1:PORT`), beside `app_origin`.
fn node_origin(app_origin: &str) -> String {
    format!("http://{}", dial_address(app_origin))
}

/// A plain HTTP/1.1 GET; the status and the body.
fn http_get(origin: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let (status, _, body) = http_get_full(origin, path, headers);
    (status, body)
}

/// A plain HTTP/1.1 GET; the status, the head and the body.
fn http_get_full(origin: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String, String) {
    let host = origin.trim_start_matches("http://");
    let mut stream = TcpStream::connect(dial_address(origin)).unwrap();
    let mut request = format!("GET {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers.iter().any(|(name, _)| name.eq_ignore_ascii_case("host")) {
        request.push_str(&format!("Host: {host}\r\n"));
    }
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response.split(' ').nth(1).unwrap().parse().unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    (status, head.to_string(), body.to_string())
}

/// Installs the app in `dir` as `name`, its new guest introduced to
/// `introduce` (`yours:theirs`); the app's URL.
fn install_introduced(node: &Node, dir: &Path, name: &str, introduce: &str) -> String {
    node.run(&["install", dir.to_str().unwrap(), "-n", name, "--introduce", introduce])
        .ok();
    app_url(node, name)
}

/// A small app from files given here.
fn write_app(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (path, text) in files {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    dir
}

/// What the counter page shows: count, status and names.
const COUNTER_PAGE_STATE: &str = "JSON.stringify({ count: document.getElementById('count')?.textContent, status: document.getElementById('status')?.textContent, names: document.getElementById('names')?.textContent })";

fn counter_page(browser: &mut Browser, url: &str) -> Json {
    let state = browser.wait_for(url, COUNTER_PAGE_STATE, Duration::from_secs(30), |value| {
        let state: Json = serde_json::from_str(value.as_str().unwrap_or("{}")).unwrap_or_default();
        state["status"]
            .as_str()
            .is_some_and(|status| !status.starts_with("connecting"))
    });
    serde_json::from_str(state.as_str().unwrap()).unwrap()
}

fn install_counter(node: &Node) {
    node.run(&["eval", COUNTER, "-n", "counter"]).ok();
    let example = repo_root().join("examples/web-counter");
    let out = node.run(&[
        "install",
        example.to_str().unwrap(),
        "-n",
        "counter-app",
        "--introduce",
        "counter:counter",
    ]);
    assert!(out.ok().contains("counter-app-agent"), "{}", out.ok());
}

#[test]
fn the_example_page_calls_the_exo_its_guest_was_introduced_to_and_works_after_a_restart() {
    let node = started();
    install_counter(&node);
    let names = node.run(&["list"]).ok().to_string();
    assert!(names.lines().any(|line| line == "counter-app"), "{names}");
    assert!(names.lines().any(|line| line == "counter-app-agent"), "{names}");
    let url = app_url(&node, "counter-app");
    assert!(url.starts_with("http://") && url.contains(".localhost:"), "{url}");
    let Some(mut browser) = browser_or_skip("example page") else {
        return;
    };

    let page = counter_page(&mut browser, &url);
    assert_eq!(page["status"], "connected", "{page}");
    assert_eq!(page["count"], "1", "{page}");
    assert!(page["names"].as_str().unwrap().contains("counter"), "{page}");
    // The guest's powers only: the host's names are not its names.
    assert!(!page["names"].as_str().unwrap().contains("counter-app"), "{page}");
    let again = counter_page(&mut browser, &url);
    assert_eq!(again["count"], "2", "the same exo, called again: {again}");

    node.run(&["restart"]).ok();
    assert_eq!(
        app_url(&node, "counter-app"),
        url,
        "the URL (port and token) survives a restart"
    );
    let after = counter_page(&mut browser, &url);
    assert_eq!(after["status"], "connected", "{after}");
    assert_eq!(
        after["count"], "1",
        "the counter was made again after the restart: {after}"
    );

    // A URL on the node's own origin leads to the app's.
    let (origin, token) = split_url(&url);
    let old_style = format!("{}/app/{token}/", node_origin(&origin));
    let (status, head, _) = http_get_full(&node_origin(&origin), &format!("/app/{token}/"), &[]);
    assert_eq!(status, 308, "{head}");
    assert!(
        head.to_ascii_lowercase().contains(&format!("location: {url}")),
        "{head}"
    );
    let redirected = counter_page(&mut browser, &old_style);
    assert_eq!(redirected["count"], "2", "{redirected}");

    node.run(&["remove", "counter-app"]).ok();
    assert_eq!(http_get(&origin, &format!("/app/{token}/"), &[]).0, 404);
    assert_eq!(http_get(&node_origin(&origin), &format!("/app/{token}/"), &[]).0, 404);
}

/// A page that connects with a WebSocket URL given in its query, and
/// reports what happened.
const PROBE_PAGE: &str = r#"<!doctype html><meta charset="utf-8"><p id="out">waiting</p>
<script type="module">
import { connect, E } from '/capstan/client.js';
const url = new URLSearchParams(location.search).get('ws');
const out = document.getElementById('out');
connect(url ? { url } : {})
  .then(async (powers) => { out.textContent = 'names: ' + (await E(powers).list()).join(','); })
  .catch((error) => { out.textContent = 'refused: ' + error.message; });
</script>"#;

#[test]
fn a_token_reaches_its_own_app_only_and_a_wrong_one_gets_no_connection() {
    let node = started();
    node.run(&["eval", "'a note'", "-n", "note"]).ok();
    let app = write_app(&[("index.html", PROBE_PAGE)]);
    let dir = app.path().to_str().unwrap();
    node.run(&["install", dir, "-n", "first", "--introduce", "note:for-first"])
        .ok();
    node.run(&["install", dir, "-n", "second", "--introduce", "note:for-second"])
        .ok();
    let (first, second) = (app_url(&node, "first"), app_url(&node, "second"));
    let (origin, first_token) = split_url(&first);
    let (second_origin, second_token) = split_url(&second);
    assert_ne!(first_token, second_token);
    assert_ne!(origin, second_origin, "each app has its own origin");
    assert_eq!(first_token.len(), 64);

    // Without a browser: each token's session bootstraps its own agent.
    let runtime = runtime();
    let first_names = runtime.block_on(list_names(&origin, &first_token, &origin)).unwrap();
    let second_names = runtime
        .block_on(list_names(&second_origin, &second_token, &second_origin))
        .unwrap();
    assert!(
        first_names.contains("for-first") && !first_names.contains("for-second"),
        "{first_names}"
    );
    assert!(
        second_names.contains("for-second") && !second_names.contains("for-first"),
        "{second_names}"
    );
    let wrong = "0".repeat(64);
    let refused = runtime.block_on(list_names(&origin, &wrong, &origin)).unwrap_err();
    assert!(refused.contains("404"), "{refused}");
    assert_eq!(http_get(&origin, &format!("/app/{wrong}/"), &[]).0, 404);
    assert_eq!(http_get(&origin, "/app/short/", &[]).0, 404);
    // One app's token on another app's host, or asked from another app's
    // origin, reaches nothing; the node's own host opens no session.
    assert_eq!(http_get(&origin, &format!("/app/{second_token}/"), &[]).0, 404);
    let on_first_host = runtime
        .block_on(list_names(&origin, &second_token, &origin))
        .unwrap_err();
    assert!(on_first_host.contains("404"), "{on_first_host}");
    let from_first_origin = runtime
        .block_on(list_names(&second_origin, &second_token, &origin))
        .unwrap_err();
    assert!(from_first_origin.contains("403"), "{from_first_origin}");
    let node_host = node_origin(&origin);
    let on_node_host = runtime
        .block_on(list_names(&node_host, &first_token, &node_host))
        .unwrap_err();
    assert!(on_node_host.contains("403"), "{on_node_host}");

    let Some(mut browser) = browser_or_skip("tokens") else {
        return;
    };
    let read_out = "document.getElementById('out').textContent";
    let settled = |value: &Json| value.as_str().is_some_and(|text| text != "waiting");
    let shown = browser.wait_for(&first, read_out, Duration::from_secs(30), settled);
    assert!(shown.as_str().unwrap().contains("for-first"), "{shown}");
    let ws_origin = origin.replace("http://", "ws://");
    let wrong_ws = format!("{first}?ws={ws_origin}/capstan/ws/{wrong}");
    let shown = browser.wait_for(&wrong_ws, read_out, Duration::from_secs(30), settled);
    assert!(shown.as_str().unwrap().starts_with("refused"), "{shown}");
    // The first app's page, knowing the second's URL, cannot open its session.
    let second_ws = format!(
        "{first}?ws={}/capstan/ws/{second_token}",
        second_origin.replace("http://", "ws://")
    );
    let shown = browser.wait_for(&second_ws, read_out, Duration::from_secs(30), settled);
    assert!(shown.as_str().unwrap().starts_with("refused"), "{shown}");
}

/// Makes a fresh counter on each `make()`.
const MAKER: &str = "makeExo('Maker', M.interface('Maker', { make: M.call().returns(M.remotable()) }), { make() { let n = 0; return makeExo('Counter', M.interface('Counter', { incr: M.call().returns(M.number()) }), { incr() { n += 1; return n; } }); } })";

/// A page that makes 300 counters and holds them until told to let go,
/// and keeps one more.
const MAKER_PAGE: &str = r#"<!doctype html><meta charset="utf-8"><p id="out">waiting</p>
<script type="module">
import { connect, E } from '/capstan/client.js';
const powers = await connect();
const maker = await E(powers).lookup('maker');
const kept = await E(maker).make();
let made = [];
for (let i = 0; i < 300; i += 1) made.push(await E(maker).make());
await Promise.all(made.map((counter) => E(counter).incr()));
window.release = () => { made = []; return 'released'; };
window.again = async () => String(await E(kept).incr());
document.getElementById('out').textContent = 'made ' + await E(kept).incr();
</script>"#;

/// The node's sessions with pages and clients: (exports, answers) each.
fn client_sessions(node: &Node) -> Vec<(u64, u64)> {
    let status: Json = serde_json::from_str(node.run(&["status", "--json"]).ok()).unwrap();
    status["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|session| session["kind"] == "client")
        .map(|session| {
            (
                session["exports"].as_u64().unwrap(),
                session["answers"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn a_long_lived_page_lets_go_of_answers_at_once_and_of_references_it_no_longer_holds() {
    let node = started();
    node.run(&["eval", MAKER, "-n", "maker"]).ok();
    let app = write_app(&[("index.html", MAKER_PAGE)]);
    let url = install_introduced(&node, app.path(), "makes", "maker:maker");
    let Some(mut browser) = browser_or_skip("drops") else {
        return;
    };
    let (_target, tab) = browser.open(&url);
    let made = capstan_tests::wait_until(Duration::from_secs(30), || {
        browser.evaluate(&tab, "document.getElementById('out').textContent") == "made 1"
    });
    assert!(made, "the page did not finish making counters");
    // The page's session: its answers are dropped as they come back, and
    // its settled promises; the counters it holds stay.
    let (exports, answers) = client_sessions(&node).into_iter().max().unwrap();
    assert!(answers < 10, "answers kept: {answers}");
    assert!((300..320).contains(&exports), "exports: {exports}");
    // Once it lets go of them and the browser collects them, the node
    // hears so.
    assert_eq!(browser.evaluate(&tab, "window.release()"), "released");
    let dropped = capstan_tests::wait_until(Duration::from_secs(30), || {
        browser.command(Some(&tab), "HeapProfiler.collectGarbage", json!({}));
        client_sessions(&node).iter().all(|&(exports, _)| exports < 10)
    });
    assert!(dropped, "exports not dropped: {:?}", client_sessions(&node));
    // What the page still holds works.
    assert_eq!(browser.evaluate(&tab, "window.again()"), "2");
}

/// A page that shows what an earlier visit of its origin left in
/// localStorage, and leaves its own mark.
const STORAGE_PAGE: &str = r#"<!doctype html><meta charset="utf-8"><p id="out">waiting</p>
<script>
const before = localStorage.getItem('mark');
localStorage.setItem('mark', location.host);
document.getElementById('out').textContent = 'before: ' + before;
</script>"#;

#[test]
fn each_app_has_its_own_origin_and_so_its_own_storage() {
    let node = started();
    let app = write_app(&[("index.html", STORAGE_PAGE)]);
    let dir = app.path().to_str().unwrap();
    node.run(&["install", dir, "-n", "first"]).ok();
    node.run(&["install", dir, "-n", "second"]).ok();
    let (first, second) = (app_url(&node, "first"), app_url(&node, "second"));
    let Some(mut browser) = browser_or_skip("origins") else {
        return;
    };
    let read_out = "document.getElementById('out').textContent";
    let settled = |value: &Json| value.as_str().is_some_and(|text| text != "waiting");
    let first_host = split_url(&first).0.trim_start_matches("http://").to_string();
    let visits = [
        (&first, "before: null"),
        (&first, &*format!("before: {first_host}")),
        // The same files under another app: nothing of the first's is seen.
        (&second, "before: null"),
    ];
    for (url, expected) in visits {
        let shown = browser.wait_for(url, read_out, Duration::from_secs(30), settled);
        assert_eq!(shown.as_str().unwrap(), expected, "{url}");
    }
}

/// Serves `page` as `/` on a new loopback port (another origin) for as
/// long as the test runs.
fn serve_other_origin(page: String) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request);
            let response = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{page}",
                page.len()
            );
            let _ = stream.write_all(response.as_bytes());
        }
    });
    origin
}

#[test]
fn a_page_from_another_origin_cannot_connect() {
    let node = started();
    let app = write_app(&[("index.html", PROBE_PAGE)]);
    node.run(&["install", app.path().to_str().unwrap(), "-n", "probe"]).ok();
    let (origin, token) = split_url(&app_url(&node, "probe"));
    let ws = format!("{}/capstan/ws/{token}", origin.replace("http://", "ws://"));

    let other = serve_other_origin(format!(
        r#"<!doctype html><p id="out">waiting</p><script>
const out = document.getElementById('out');
const socket = new WebSocket('{ws}');
socket.onopen = () => {{ out.textContent = 'opened'; }};
socket.onclose = (event) => {{ if (out.textContent === 'waiting') out.textContent = 'refused ' + event.code; }};
</script>"#
    ));
    // The same socket, asked with our own origin, is served: the refusal
    // below is the origin's doing.
    let runtime = runtime();
    assert!(runtime.block_on(list_names(&origin, &token, &origin)).is_ok());
    let refused = runtime.block_on(list_names(&origin, &token, &other)).unwrap_err();
    assert!(refused.contains("403"), "{refused}");
    let no_origin = runtime.block_on(list_names(&origin, &token, "")).unwrap_err();
    assert!(no_origin.contains("403"), "{no_origin}");
    // A Host other than ours (DNS rebinding) is refused too.
    let (status, _) = http_get(&origin, &format!("/app/{token}/"), &[("Host", "evil.example:80")]);
    assert_ne!(status, 200);

    let Some(mut browser) = browser_or_skip("other origin") else {
        return;
    };
    let shown = browser.wait_for(
        &format!("{other}/"),
        "document.getElementById('out').textContent",
        Duration::from_secs(30),
        |value| value.as_str().is_some_and(|text| text != "waiting"),
    );
    assert!(shown.as_str().unwrap().starts_with("refused"), "{shown}");
}

// ---- The WebSocket from Rust ----

type Socket = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// Opens app `token`'s session on host `server` with `Origin: origin`
/// (none if empty).
async fn open_session(server: &str, token: &str, origin: &str) -> Result<Socket, String> {
    let url = format!("{}/capstan/ws/{token}", server.replace("http://", "ws://"));
    let mut request = url.into_client_request().unwrap();
    if !origin.is_empty() {
        request.headers_mut().insert("Origin", origin.parse().unwrap());
    }
    let stream = tokio::net::TcpStream::connect(dial_address(server)).await.unwrap();
    tokio_tungstenite::client_async(request, stream)
        .await
        .map(|(socket, _)| socket)
        .map_err(|error| error.to_string())
}

async fn next_text(socket: &mut Socket) -> Option<String> {
    loop {
        match tokio::time::timeout(Duration::from_secs(30), socket.next())
            .await
            .ok()??
        {
            Ok(Message::Text(text)) => return Some(text.to_string()),
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => continue,
        }
    }
}

/// Bootstraps app `token`'s agent and asks it `list()`; the names.
async fn list_names(server: &str, token: &str, origin: &str) -> Result<String, String> {
    let mut socket = open_session(server, token, origin).await?;
    for message in [
        json!({ "type": "CTP_BOOTSTRAP", "epoch": 0, "questionID": "q-1" }),
        json!({ "type": "CTP_CALL", "epoch": 0, "questionID": "q-2", "target": "q-1",
                "method": { "body": "[\"list\",[]]", "slots": [] } }),
    ] {
        socket.send(Message::text(message.to_string())).await.unwrap();
    }
    while let Some(text) = next_text(&mut socket).await {
        let message: Json = serde_json::from_str(&text).unwrap();
        if message["answerID"] == "q-2" {
            return Ok(message["result"]["body"].as_str().unwrap().to_string());
        }
    }
    Err("the session ended without an answer".to_string())
}

/// Sends `message` on a fresh session and returns the close reason.
async fn close_reason_after(server: &str, token: &str, message: Message) -> String {
    let mut socket = open_session(server, token, server).await.unwrap();
    socket
        .send(Message::text(
            json!({ "type": "CTP_BOOTSTRAP", "epoch": 0, "questionID": "q-1" }).to_string(),
        ))
        .await
        .unwrap();
    let _ = socket.send(message).await;
    let mut seen = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(30), socket.next()).await {
            Ok(Some(Ok(Message::Close(Some(frame))))) => return format!("{} {}", frame.code, frame.reason),
            Ok(Some(Ok(Message::Text(text)))) => seen.push(text.to_string()),
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(error))) => return format!("error {error}; saw {seen:?}"),
            Ok(None) => return format!("ended without a close frame; saw {seen:?}"),
            Err(_) => panic!("the connection stayed open; saw {seen:?}"),
        }
    }
}

#[test]
fn hostile_websocket_input_ends_that_connection_with_a_reason_and_the_node_stays_up() {
    let node = started();
    let app = write_app(&[("index.html", PROBE_PAGE)]);
    node.run(&["install", app.path().to_str().unwrap(), "-n", "probe"]).ok();
    let (origin, token) = split_url(&app_url(&node, "probe"));
    let runtime = runtime();
    let call = |target: &str, body: &str| {
        json!({ "type": "CTP_CALL", "epoch": 0, "questionID": "q-2", "target": target,
                "method": { "body": body, "slots": [] } })
        .to_string()
    };
    let cases: Vec<(&str, Message, &str)> = vec![
        ("garbage", Message::text("}{ not json"), "protocol error"),
        ("binary", Message::binary(vec![1u8, 2, 3]), "text"),
        (
            "unknown type",
            Message::text(r#"{"type":"CTP_HELLO","epoch":0}"#),
            "protocol error",
        ),
        (
            "bad slot",
            Message::text(call("x+1", "[\"list\",[]]")),
            "protocol error",
        ),
        (
            "unknown export",
            Message::text(call("o-99", "[\"list\",[]]")),
            "unknown export",
        ),
        ("bad body", Message::text(call("q-1", "[\"list\",")), "protocol error"),
        ("oversized", Message::text("x".repeat((16 << 20) + 1)), "WebSocket"),
    ];
    for (what, message, expected) in cases {
        let reason = runtime.block_on(close_reason_after(&origin, &token, message));
        assert!(
            !reason.starts_with("ended without") && reason.contains(expected),
            "{what}: {reason}"
        );
        eprintln!("{what}: {reason}");
        // The node, and a well-behaved session, carry on.
        assert_eq!(node.run(&["ping"]).ok().trim(), "pong", "after {what}");
        assert!(
            runtime.block_on(list_names(&origin, &token, &origin)).is_ok(),
            "after {what}"
        );
    }
}

#[test]
fn connections_over_the_bound_are_closed_and_idle_ones_do_not_keep_the_server_full() {
    let node = started();
    let app = write_app(&[("index.html", PROBE_PAGE)]);
    node.run(&["install", app.path().to_str().unwrap(), "-n", "probe"]).ok();
    let (origin, token) = split_url(&app_url(&node, "probe"));
    let host = origin.trim_start_matches("http://").to_string();
    let address = dial_address(&origin);
    // 256 connections that never send a request fill the server's bound.
    let idle: Vec<TcpStream> = (0..256).map(|_| TcpStream::connect(&address).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(300));
    let mut over = TcpStream::connect(&address).unwrap();
    over.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    over.write_all(format!("GET /app/{token}/ HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes())
        .ok();
    let mut answer = Vec::new();
    match over.read_to_end(&mut answer) {
        Ok(_) => assert!(answer.is_empty(), "a connection over the bound was answered"),
        Err(error) => assert!(
            !matches!(
                error.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "a connection over the bound was left open: {error}"
        ),
    }
    // The idle ones are closed after the header timeout (10 s), so the
    // server answers again while this test still holds them.
    std::thread::sleep(Duration::from_secs(12));
    let (status, _) = http_get(&origin, &format!("/app/{token}/"), &[]);
    assert_eq!(status, 200);
    drop(idle);
}

#[test]
fn install_refuses_symlinks_odd_names_and_a_missing_index() {
    let node = started();
    let no_index = write_app(&[("main.html", "x")]);
    let out = node.run(&["install", no_index.path().to_str().unwrap(), "-n", "a"]);
    assert!(out.err().contains("index.html"), "{}", out.err());
    let linked = write_app(&[("index.html", "x")]);
    std::os::unix::fs::symlink("/etc/passwd", linked.path().join("passwd")).unwrap();
    let out = node.run(&["install", linked.path().to_str().unwrap(), "-n", "b"]);
    assert!(out.err().contains("symbolic link"), "{}", out.err());
    let hidden = write_app(&[("index.html", "x"), (".env", "secret")]);
    let out = node.run(&["install", hidden.path().to_str().unwrap(), "-n", "c"]);
    assert!(out.err().contains(".env"), "{}", out.err());
    let names = node.run(&["list"]).ok().to_string();
    assert!(
        !names.contains("a-agent") && !names.lines().any(|line| line == "b"),
        "{names}"
    );
    let fine = write_app(&[("index.html", "<p>ok</p>"), ("js/app.js", "1")]);
    node.run(&["install", fine.path().to_str().unwrap(), "-n", "fine"]).ok();
    let out = node.run(&["install", fine.path().to_str().unwrap(), "-n", "fine"]);
    assert!(out.err().contains("already names"), "{}", out.err());
    let (origin, token) = split_url(&app_url(&node, "fine"));
    assert_eq!(
        http_get(&origin, &format!("/app/{token}/js/app.js"), &[]),
        (200, "1".to_string())
    );
    assert_eq!(http_get(&origin, &format!("/app/{token}/js/../index.html"), &[]).0, 404);
    let (status, client) = http_get(&origin, "/capstan/client.js", &[]);
    assert_eq!(status, 200);
    assert!(client.contains("export function connect"));
}

/// `examples/web-endo-captp`, its page bundled with esbuild from npm into
/// a fresh directory; `None` (after saying so) when its packages are not
/// installed outside CI.
fn bundled_endo_app() -> Option<tempfile::TempDir> {
    let example = repo_root().join("examples/web-endo-captp");
    let esbuild = example.join("node_modules/.bin/esbuild");
    if !esbuild.exists() {
        if std::env::var_os("CI").is_some() {
            panic!("run `npm ci` in {} (.ci/run does)", example.display());
        }
        eprintln!("SKIPPED bundled @endo/captp: run `npm ci` in {}", example.display());
        return None;
    }
    let app = tempfile::tempdir().unwrap();
    std::fs::copy(example.join("app/index.html"), app.path().join("index.html")).unwrap();
    let built = Command::new(esbuild)
        .current_dir(&example)
        .args([
            "src/main.js",
            "--bundle",
            "--format=esm",
            "--target=es2022",
            "--log-level=warning",
        ])
        .arg(format!("--outfile={}", app.path().join("bundle.js").display()))
        .status()
        .unwrap();
    assert!(built.success(), "esbuild failed");
    Some(app)
}

#[test]
fn a_page_may_bring_its_own_bundled_endo_captp() {
    let node = started();
    node.run(&["eval", COUNTER, "-n", "counter"]).ok();
    let Some(app) = bundled_endo_app() else { return };
    let url = install_introduced(&node, app.path(), "bundled", "counter:counter");
    let Some(mut browser) = browser_or_skip("bundled @endo/captp") else {
        return;
    };
    let shown = browser.wait_for(
        &url,
        "document.getElementById('out').textContent",
        Duration::from_secs(30),
        |value| value.as_str().is_some_and(|text| !text.starts_with("connecting")),
    );
    let shown = shown.as_str().unwrap();
    assert!(shown.starts_with("count 1; names "), "{shown}");
    assert!(shown.contains("counter"), "{shown}");
}

#[test]
fn powers_names_an_existing_agent_and_open_starts_the_browser_with_the_url() {
    let node = started();
    node.run(&["eval", "'a note'", "-n", "note"]).ok();
    node.run(&["mkguest", "helper", "--introduce", "note:the-note"]).ok();
    let app = write_app(&[("index.html", PROBE_PAGE)]);
    let out = node.run(&[
        "install",
        app.path().to_str().unwrap(),
        "-n",
        "tool",
        "--powers",
        "helper",
    ]);
    assert!(!out.ok().contains("guest"), "{}", out.ok());
    let names = node.run(&["list"]).ok().to_string();
    assert!(!names.contains("tool-agent"), "no guest is made with --powers: {names}");
    let url = app_url(&node, "tool");
    let (origin, token) = split_url(&url);
    let names = runtime().block_on(list_names(&origin, &token, &origin)).unwrap();
    assert!(names.contains("the-note"), "the page holds helper's powers: {names}");

    // `open` runs $BROWSER with the URL (here a script noting it).
    let noted = tempfile::tempdir().unwrap();
    let browser = noted.path().join("browser");
    let opened = noted.path().join("opened");
    std::fs::write(&browser, format!("#!/bin/sh\necho \"$1\" > {}\n", opened.display())).unwrap();
    std::fs::set_permissions(&browser, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let status = node
        .command(&["open", "tool"])
        .env("BROWSER", &browser)
        .output()
        .unwrap();
    assert!(status.status.success());
    assert_eq!(String::from_utf8_lossy(&status.stdout).trim(), url);
    assert!(
        capstan_tests::wait_until(Duration::from_secs(10), || std::fs::read_to_string(&opened)
            .is_ok_and(|text| text.trim() == url)),
        "the browser was not started with the URL"
    );
    let out = node.run(&["open", "note"]);
    assert!(out.err().contains("not a web app"), "{}", out.err());
}

#[test]
fn the_port_is_the_configured_one_when_config_toml_sets_it() {
    use_binary(env!("CARGO_BIN_EXE_capstan"));
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let node = Node::new(&[]);
    std::fs::write(node.state_dir().join("config.toml"), format!("[web]\nport = {port}\n")).unwrap();
    node.run(&["start"]).ok();
    let app = write_app(&[("index.html", "<p>configured</p>")]);
    node.run(&["install", app.path().to_str().unwrap(), "-n", "page"]).ok();
    let url = app_url(&node, "page");
    assert!(url.contains(&format!(".localhost:{port}/app/")), "{url}");
    let (origin, token) = split_url(&url);
    assert_eq!(
        http_get(&origin, &format!("/app/{token}/"), &[]),
        (200, "<p>configured</p>".to_string())
    );
    assert!(
        !node.state_dir().join("web-port").exists(),
        "a configured port is not kept elsewhere"
    );
}
