//! Web apps: the node's loopback HTTP server, where each installed app's
//! page is served and connects back over a WebSocket for the powers its
//! user granted it.
//!
//! - [`bundle`]: an app's files as one blob, and the rules on them;
//! - [`apps`]: the app records in the host's names, found by token;
//! - [`socket`]: a page's CapTP session over a WebSocket (the Endo wire,
//!   through the same `EndoBridge` as `run/captp0.sock`);
//! - this module: the listener and the HTTP surface.
//!
//! # The HTTP surface
//!
//! The server listens on `127.0.0.1` only, on `[web] port` of
//! `config.toml`, else on a port picked at first start and kept in
//! `<state>/web-port`. Each app is served from its own origin,
//! `http://<label>.localhost:<port>` (browsers resolve `*.localhost` to
//! loopback themselves; the label is [`apps::origin_label`]), so apps
//! share no storage, cookies or windows with each other.
//!
//! On an app's own host:
//! - `GET /app/<token>/<path>`: a file of the app whose token it is
//!   (`index.html` for an empty path);
//! - `GET /capstan/client.js`: the page-side CapTP client (public code);
//! - `GET /capstan/ws/<token>` with a WebSocket upgrade whose `Origin` is
//!   that same app's: the app's session, whose bootstrap is its agent.
//!
//! On `127.0.0.1:<port>` or `localhost:<port>`, `/app/<token>/...`
//! redirects to the app's own origin, and `/capstan/client.js` is served;
//! no session is opened there.
//!
//! Refused: any other `Host` (DNS rebinding), and an app host whose label
//! is not the token's; any method but `GET` and `HEAD`; a WebSocket
//! upgrade whose `Origin` is not its app's own; an unknown token (404, the
//! same as a missing file). Every response says `Referrer-Policy:
//! no-referrer`, so a page's links never carry its token away. At most
//! [`MAX_CONNECTIONS`] connections are open at once (more are closed
//! unanswered), and one that sends no request headers for
//! [`HEADER_READ_TIMEOUT`] is closed.

pub mod apps;
pub mod bundle;
pub mod socket;

use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::rc::{Rc, Weak};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use super::accept::{ConnectionSlots, pause_after_accept_error};
use super::paths::StatePaths;
use super::{Daemon, DaemonError, config};
use crate::runtime::Vat;
use apps::Apps;

/// The page-side client module, served at `/capstan/client.js`.
const CLIENT_JS: &str = include_str!("client.js");

/// How many connections (page loads and WebSockets together) the server
/// keeps open at once; any page can connect to loopback, so this is bounded.
pub const MAX_CONNECTIONS: usize = 256;

/// How long a connection may take to send a request's headers; an idle
/// one is closed then, so idle connections cannot keep the bound full.
pub const HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// What the request handlers share.
struct WebState {
    daemon: Weak<Daemon>,
    vat: Vat,
    port: u16,
    apps: Apps,
}

/// The port web apps are served on: `[web] port` of `config.toml`, else
/// the one kept in `<state>/web-port`; `None` before the first start.
pub fn port_setting(paths: &StatePaths) -> Result<Option<u16>, DaemonError> {
    if let Some(port) = config::NodeConfig::read(&paths.config())?.web.port {
        return Ok(Some(port));
    }
    Ok(std::fs::read_to_string(paths.web_port())
        .ok()
        .and_then(|text| text.trim().parse::<u16>().ok())
        .filter(|port| *port != 0))
}

/// Starts serving web apps, on the port of [`port_setting`] or (on first
/// start) a free one, then kept in `<state>/web-port`. A port that cannot
/// be had is logged and the node runs without web apps.
pub fn serve(daemon: &Rc<Daemon>, vat: &Vat) {
    let weak = Rc::downgrade(daemon);
    let paths = daemon.options.paths.clone();
    let accepting = vat.clone();
    vat.spawn(async move {
        let configured = match port_setting(&paths) {
            Ok(port) => port,
            Err(error) => {
                tracing::error!(%error, "web apps are not served");
                return;
            }
        };
        let address = SocketAddr::from((Ipv4Addr::LOCALHOST, configured.unwrap_or(0)));
        let listener = match TcpListener::bind(address).await {
            Ok(listener) => listener,
            Err(error) => {
                tracing::error!(%error, %address, "web apps are not served: the port cannot be had");
                return;
            }
        };
        let port = match listener.local_addr() {
            Ok(address) => address.port(),
            Err(error) => {
                tracing::error!(%error, "web apps are not served");
                return;
            }
        };
        if configured.is_none()
            && let Err(error) = std::fs::write(paths.web_port(), format!("{port}\n"))
        {
            tracing::warn!(%error, "the web port is not kept; app URLs change at the next start");
        }
        tracing::info!(url = %format!("http://127.0.0.1:{port}/"), "serving web apps, each from http://<label>.localhost:{port}");
        let state = Rc::new(WebState {
            daemon: weak,
            vat: accepting.clone(),
            port,
            apps: Apps::default(),
        });
        let slots = ConnectionSlots::new(MAX_CONNECTIONS);
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(error) => {
                    pause_after_accept_error("web apps", &error).await;
                    continue;
                }
            };
            if state.daemon.strong_count() == 0 {
                return;
            }
            // Over the bound, the connection is closed unanswered.
            let Some(slot) = slots.try_take() else {
                tracing::debug!("a web connection over the bound was closed");
                continue;
            };
            // Each CapTP message is a small write awaiting an answer:
            // without this, Nagle's algorithm holds it for the peer's
            // delayed ACK (about 40 ms a round trip).
            let _ = stream.set_nodelay(true);
            let state = Rc::clone(&state);
            accepting.spawn(async move {
                let _slot = slot;
                let service = hyper::service::service_fn(move |request| {
                    let state = Rc::clone(&state);
                    async move { Ok::<_, Infallible>(handle(&state, request).await) }
                });
                let served = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_READ_TIMEOUT)
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades()
                    .await;
                if let Err(error) = served {
                    tracing::debug!(%error, "a web connection failed");
                }
            });
        }
    });
}

type Reply = Response<Full<Bytes>>;

fn reply(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Reply {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert("cross-origin-resource-policy", HeaderValue::from_static("same-origin"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("frame-ancestors 'self'"),
    );
    response
}

fn refuse(status: StatusCode, why: &'static str) -> Reply {
    reply(status, "text/plain; charset=utf-8", format!("{why}\n"))
}

fn header_text(request: &Request<Incoming>, name: header::HeaderName) -> Option<&str> {
    request.headers().get(name).and_then(|value| value.to_str().ok())
}

/// Which of the server's hosts a request names.
#[derive(Clone, Debug, PartialEq, Eq)]
enum RequestHost {
    /// `127.0.0.1:<port>` or `localhost:<port>`.
    Node,
    /// `<label>.localhost:<port>`: one app's own origin.
    App(String),
}

impl WebState {
    /// The host a `Host` header names, if it is one of this server's.
    fn request_host(&self, host: Option<&str>) -> Option<RequestHost> {
        let (name, port) = host?.rsplit_once(':')?;
        if port.parse::<u16>().ok() != Some(self.port) {
            return None;
        }
        if name == "127.0.0.1" || name == "localhost" {
            return Some(RequestHost::Node);
        }
        let label = name.strip_suffix(".localhost")?;
        apps::label_shaped(label).then(|| RequestHost::App(label.to_string()))
    }

    /// The origin of an app's pages.
    fn app_origin(&self, label: &str) -> String {
        format!("http://{label}.localhost:{}", self.port)
    }
}

async fn handle(state: &Rc<WebState>, request: Request<Incoming>) -> Reply {
    let Some(host) = state.request_host(header_text(&request, header::HOST)) else {
        return refuse(
            StatusCode::MISDIRECTED_REQUEST,
            "this server answers to 127.0.0.1, localhost and its apps' own hosts only",
        );
    };
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return refuse(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD are served");
    }
    let path = request.uri().path().to_string();
    if path == "/capstan/client.js" {
        return reply(StatusCode::OK, "text/javascript; charset=utf-8", CLIENT_JS);
    }
    if let Some(token) = path.strip_prefix("/capstan/ws/") {
        let token = token.to_string();
        return match host {
            RequestHost::App(label) => upgrade(state, request, &label, &token).await,
            RequestHost::Node => refuse(
                StatusCode::FORBIDDEN,
                "an app's session is opened from the app's own origin",
            ),
        };
    }
    let Some(rest) = path.strip_prefix("/app/") else {
        return refuse(StatusCode::NOT_FOUND, "not found");
    };
    let (token, file) = rest.split_once('/').unwrap_or((rest, ""));
    let label = apps::origin_label(token);
    if matches!(&host, RequestHost::App(own) if *own != label) {
        return refuse(StatusCode::NOT_FOUND, "not found");
    }
    let Some(daemon) = state.daemon.upgrade() else {
        return refuse(StatusCode::SERVICE_UNAVAILABLE, "the node is stopping");
    };
    let Some(app) = state.apps.find(&daemon, token) else {
        return refuse(StatusCode::NOT_FOUND, "not found");
    };
    if host == RequestHost::Node || !rest.contains('/') {
        // To the app's own origin, and to its folder.
        let mut target = format!("{}/app/{token}/{file}", state.app_origin(&label));
        if let Some(query) = request.uri().query() {
            target.push('?');
            target.push_str(query);
        }
        let mut response = refuse(StatusCode::PERMANENT_REDIRECT, "moved");
        if let Ok(location) = HeaderValue::from_str(&target) {
            response.headers_mut().insert(header::LOCATION, location);
        }
        return response;
    }
    let file = if file.is_empty() { "index.html" } else { file };
    let files = match state.apps.files(&daemon, &app) {
        Ok(files) => files,
        Err(error) => {
            tracing::warn!(%error, "an app's files cannot be read");
            return refuse(StatusCode::INTERNAL_SERVER_ERROR, "the app's files cannot be read");
        }
    };
    match files.files.get(file) {
        Some(bytes) => reply(StatusCode::OK, bundle::content_type(file), bytes.clone()),
        None => refuse(StatusCode::NOT_FOUND, "not found"),
    }
}

/// Answers a WebSocket upgrade on the host of app `label` for the app
/// whose token is `token`, and serves its session once the connection is
/// upgraded.
async fn upgrade(state: &Rc<WebState>, mut request: Request<Incoming>, label: &str, token: &str) -> Reply {
    if header_text(&request, header::ORIGIN) != Some(state.app_origin(label).as_str()) {
        return refuse(StatusCode::FORBIDDEN, "requests from other origins are refused");
    }
    if apps::origin_label(token) != label {
        return refuse(StatusCode::NOT_FOUND, "not found");
    }
    let is_upgrade = header_text(&request, header::UPGRADE)
        .is_some_and(|value| value.eq_ignore_ascii_case("websocket"))
        && header_text(&request, header::CONNECTION)
            .is_some_and(|value| value.split(',').any(|part| part.trim().eq_ignore_ascii_case("upgrade")))
        && header_text(&request, header::SEC_WEBSOCKET_VERSION) == Some("13");
    let Some(key) = request.headers().get(header::SEC_WEBSOCKET_KEY).cloned() else {
        return refuse(StatusCode::BAD_REQUEST, "a WebSocket upgrade is expected here");
    };
    if !is_upgrade {
        return refuse(StatusCode::BAD_REQUEST, "a WebSocket upgrade is expected here");
    }
    let Some(daemon) = state.daemon.upgrade() else {
        return refuse(StatusCode::SERVICE_UNAVAILABLE, "the node is stopping");
    };
    let Some(app) = state.apps.find(&daemon, token) else {
        return refuse(StatusCode::NOT_FOUND, "not found");
    };
    let powers = match daemon.provide_settled(app.powers).await {
        Ok(powers) => powers,
        Err(error) => {
            tracing::warn!(error = %error.message, "an app's powers cannot be made");
            return refuse(StatusCode::INTERNAL_SERVER_ERROR, "the app's powers cannot be made");
        }
    };
    drop(daemon);
    let on_upgrade = hyper::upgrade::on(&mut request);
    let vat = state.vat.clone();
    state.vat.spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                socket::serve(vat, upgraded, powers).await;
            }
            Err(error) => tracing::debug!(%error, "a WebSocket upgrade failed"),
        }
    });
    let mut response = reply(StatusCode::SWITCHING_PROTOCOLS, "text/plain", Bytes::new());
    let headers = response.headers_mut();
    headers.remove(header::CONTENT_TYPE);
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(accept) = HeaderValue::from_str(&derive_accept_key(key.as_bytes())) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    response
}
