//! `fetch` for vats: the node makes each HTTP request on the vat's
//! behalf, after checking the vat's network allow-list
//! ([`NetworkConfig`], ocap-kernel's `VatConfig.network`).
//!
//! Why the node and not the worker: a vat's worker is a confined process
//! (see [`crate::workers::fence`]) whose only channel is its CapTP session
//! with the node; the fence does not stop it from opening sockets, so
//! letting its engine connect would make the allow-list a check inside
//! the very process it confines, one engine bug away from any host. Here
//! the worker holds only a `fetch` power (an object of this node) made for
//! that vat with its list; the engine's `fetch` global sends each request
//! to it (`capstan_js::VatGlobals`), and the node refuses a host not on the
//! list before it resolves or connects anything. The cost is one CapTP
//! round trip per request (`node/examples/fetch_bench.rs` measures it).
//!
//! Rules, all checked here:
//!
//! - only `http:` and `https:` URLs; `https:` is checked against the
//!   system's trusted roots (`SSL_CERT_FILE` and `SSL_CERT_DIR` of the
//!   node's environment override them), and a redirect from `https:` to
//!   `http:` is refused;
//! - the URL's host, written as a URL's `host` is (`name` or `name:port`,
//!   the default port left out), must be on the list; no list means no
//!   host;
//! - redirects (`redirect: "follow"`, the default) are followed up to
//!   [`MAX_REDIRECTS`] times, each new URL checked against the list
//!   first; `"manual"` answers the redirect itself, `"error"` refuses it;
//! - the request body is at most [`MAX_REQUEST_BODY_BYTES`], the response
//!   body at most [`MAX_RESPONSE_BODY_BYTES`] (a longer one fails the
//!   fetch), and the whole exchange at most [`FETCH_TIMEOUT`];
//! - `Host`, `Content-Length`, `Transfer-Encoding`, `Connection` and
//!   `Upgrade` are the node's to set; a vat's values for them are refused.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use capstan_protocol::guards::DefaultGuards;
use capstan_protocol::patterns::M;
use capstan_protocol::{ErrorValue, Value};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;

use super::config::{NetworkConfig, VatRecord};
use crate::runtime::args::decode;
use crate::runtime::{Exo, MethodResult};

/// The most redirects one fetch follows.
pub const MAX_REDIRECTS: usize = 20;

/// The largest request body a vat may send, bytes.
pub const MAX_REQUEST_BODY_BYTES: usize = 4 << 20;

/// The largest response body a fetch reads, bytes: well under the 16 MiB
/// CapTP frame the response must fit in on its way to the vat.
pub const MAX_RESPONSE_BODY_BYTES: usize = 8 << 20;

/// The most request headers a vat may set.
pub const MAX_REQUEST_HEADERS: usize = 100;

/// How long one fetch (connections, redirects, bodies) may take.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(60);

/// How long connecting to one host may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest URL a vat may fetch, bytes.
const MAX_URL_BYTES: usize = 16 * 1024;

/// Headers only the node sets.
const NODE_HEADERS: &[&str] = &["host", "content-length", "transfer-encoding", "connection", "upgrade"];

/// Why a fetch failed. The message is what the vat's `fetch` rejects with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    #[error("fetch refused: {0}")]
    Refused(String),
    #[error("fetch failed: {0}")]
    Failed(String),
}

/// How a fetch treats redirects (the Fetch standard's `redirect`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Redirect {
    Follow,
    Manual,
    Error,
}

/// One request, as a vat asked for it.
#[derive(Clone, Debug)]
pub struct FetchRequest {
    pub url: String,
    pub method: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
    pub redirect: Redirect,
}

impl FetchRequest {
    /// A GET of `url`.
    pub fn get(url: &str) -> FetchRequest {
        FetchRequest {
            url: url.to_string(),
            method: "GET".into(),
            headers: Vec::new(),
            body: None,
            redirect: Redirect::Follow,
        }
    }

    /// Reads the request record the engine's `fetch` sends:
    /// `{url, method, headers: [[name, value]], body: string | bytes |
    /// null, redirect}`.
    pub fn from_value(value: &Value) -> Result<FetchRequest, FetchError> {
        let bad = |why: &str| FetchError::Refused(format!("the request {why}"));
        let Value::Record(record) = value else {
            return Err(bad("is not a record"));
        };
        let url = record
            .get("url")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("has no URL"))?;
        if url.len() > MAX_URL_BYTES {
            return Err(bad(&format!("URL is longer than {MAX_URL_BYTES} bytes")));
        }
        let method = record.get("method").and_then(Value::as_str).unwrap_or("GET");
        let mut headers = Vec::new();
        if let Some(Value::Array(pairs)) = record.get("headers") {
            if pairs.len() > MAX_REQUEST_HEADERS {
                return Err(bad(&format!("has more than {MAX_REQUEST_HEADERS} headers")));
            }
            for pair in pairs.iter() {
                match pair.as_array() {
                    Some([Value::String(name), Value::String(value)]) => {
                        headers.push((name.to_string(), value.to_string()))
                    }
                    _ => return Err(bad("has a header that is not a [name, value] pair of strings")),
                }
            }
        }
        let body = match record.get("body") {
            None | Some(Value::Null) | Some(Value::Undefined) => None,
            Some(Value::String(text)) => Some(text.as_bytes().to_vec()),
            Some(Value::ByteArray(bytes)) => Some(bytes.to_vec()),
            Some(_) => return Err(bad("body is neither text nor bytes")),
        };
        if body.as_ref().is_some_and(|body| body.len() > MAX_REQUEST_BODY_BYTES) {
            return Err(bad(&format!("body is larger than {MAX_REQUEST_BODY_BYTES} bytes")));
        }
        let redirect = match record.get("redirect").and_then(Value::as_str) {
            None | Some("follow") => Redirect::Follow,
            Some("manual") => Redirect::Manual,
            Some("error") => Redirect::Error,
            Some(_) => return Err(bad("redirect must be \"follow\", \"manual\" or \"error\"")),
        };
        Ok(FetchRequest {
            url: url.to_string(),
            method: method.to_string(),
            headers,
            body,
            redirect,
        })
    }
}

/// What a fetch answered.
#[derive(Clone, Debug)]
pub struct FetchResponse {
    pub status: u16,
    pub status_text: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The URL of the last request (after redirects).
    pub url: String,
    pub redirected: bool,
}

impl FetchResponse {
    /// The record the engine's `fetch` makes its `Response` from.
    pub fn to_value(&self) -> Value {
        Value::record([
            ("status", Value::from(f64::from(self.status))),
            ("statusText", Value::from(self.status_text.as_str())),
            (
                "headers",
                Value::array(
                    self.headers
                        .iter()
                        .map(|(name, value)| Value::array([Value::from(name.as_str()), Value::from(value.as_str())])),
                ),
            ),
            ("body", Value::ByteArray(self.body.clone().into())),
            ("url", Value::from(self.url.as_str())),
            ("redirected", Value::Boolean(self.redirected)),
        ])
    }
}

/// The `fetch` power of one vat: `fetch(request)` within `network`.
pub fn make_fetch_power(vat: &str, network: Option<NetworkConfig>) -> MethodResult {
    let allowed = network.map(|network| network.allowed_hosts).unwrap_or_default();
    let vat = vat.to_string();
    Exo::new("Fetch")
        .interface(M::interface(
            "Fetch",
            [("fetch", M::call_when([M::record()]).returns(M::record()))],
            DefaultGuards::None,
        ))
        .async_method("fetch", move |_, args| {
            let allowed = allowed.clone();
            let vat = vat.clone();
            async move {
                let (request,): (Value,) = decode(args)?;
                let request =
                    FetchRequest::from_value(&request).map_err(|error| ErrorValue::type_error(error.to_string()))?;
                match fetch(&allowed, request).await {
                    Ok(response) => Ok(response.to_value()),
                    Err(error) => {
                        tracing::debug!(%vat, %error, "a vat's fetch failed");
                        let name = if matches!(error, FetchError::Refused(_)) {
                            "TypeError"
                        } else {
                            "Error"
                        };
                        Err(ErrorValue::new(name, error.to_string()))
                    }
                }
            }
        })
        .make()
}

/// What a vat's worker is told to grant it (`buildVat`'s last argument):
/// `{names: [...], fetch?: power}`, the `fetch` power made for its list.
pub fn vat_globals(vat: &str, record: &VatRecord) -> MethodResult {
    let names = Value::array(record.globals.iter().map(|name| Value::from(name.as_str())));
    if record.globals.iter().any(|name| name == "fetch") {
        let power = make_fetch_power(vat, record.network.clone())?;
        Ok(Value::record([("names", names), ("fetch", power)]))
    } else {
        Ok(Value::record([("names", names)]))
    }
}

/// Makes `request`, following redirects, to hosts on `allowed` only.
pub async fn fetch(allowed: &[String], request: FetchRequest) -> Result<FetchResponse, FetchError> {
    tokio::time::timeout(FETCH_TIMEOUT, fetch_following(allowed, request))
        .await
        .unwrap_or_else(|_| {
            Err(FetchError::Failed(format!(
                "no answer within {} s",
                FETCH_TIMEOUT.as_secs()
            )))
        })
}

async fn fetch_following(allowed: &[String], request: FetchRequest) -> Result<FetchResponse, FetchError> {
    let mut url = url::Url::parse(&request.url).map_err(|error| {
        let shown: String = request.url.chars().take(200).collect();
        FetchError::Refused(format!("{shown:?} is not a URL: {error}"))
    })?;
    let mut method = Method::from_bytes(request.method.as_bytes())
        .map_err(|_| FetchError::Refused(format!("{:?} is not an HTTP method", request.method)))?;
    if method == Method::CONNECT || method == Method::TRACE {
        return Err(FetchError::Refused(format!("the method {method} is not allowed")));
    }
    let headers = request_headers(&request.headers)?;
    let mut body = request.body;
    let mut redirected = false;
    for _ in 0..=MAX_REDIRECTS {
        let host = check_allowed(&url, allowed)?;
        let response = exchange(&url, &host, &method, &headers, body.clone()).await?;
        let location = response
            .headers
            .iter()
            .find(|(name, _)| name == "location")
            .map(|(_, value)| value.clone());
        let is_redirect = matches!(response.status, 301 | 302 | 303 | 307 | 308);
        let (true, Some(location)) = (is_redirect, location) else {
            return Ok(FetchResponse { redirected, ..response });
        };
        match request.redirect {
            Redirect::Manual => return Ok(FetchResponse { redirected, ..response }),
            Redirect::Error => {
                return Err(FetchError::Refused(format!(
                    "{url} redirects, and the request said redirect: \"error\""
                )));
            }
            Redirect::Follow => {}
        }
        let next = url
            .join(&location)
            .map_err(|error| FetchError::Failed(format!("{url} redirects to a bad URL {location:?}: {error}")))?;
        if url.scheme() == "https" && next.scheme() == "http" {
            return Err(FetchError::Refused(format!("{url} redirects from https: to http:")));
        }
        url = next;
        if response.status == 303 || (matches!(response.status, 301 | 302) && method == Method::POST) {
            if method != Method::HEAD {
                method = Method::GET;
            }
            body = None;
        }
        redirected = true;
    }
    Err(FetchError::Failed(format!("more than {MAX_REDIRECTS} redirects")))
}

/// Refuses a URL whose scheme is not `http:` or whose host is not on the
/// list; answers the host as matched (`name` or `name:port`).
pub fn check_allowed(url: &url::Url, allowed: &[String]) -> Result<String, FetchError> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err(FetchError::Refused(format!(
            "{}: only http: and https: URLs can be fetched",
            url.scheme()
        )));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(FetchError::Refused(format!(
            "{}: URLs with credentials are not fetched",
            url.origin().ascii_serialization()
        )));
    }
    let name = url
        .host_str()
        .ok_or_else(|| FetchError::Refused(format!("{url} has no host")))?;
    let host = match url.port() {
        Some(port) => format!("{name}:{port}"),
        None => name.to_string(),
    };
    if !allowed.contains(&host) {
        return Err(FetchError::Refused(format!(
            "the host {host} is not on this vat's network allow-list (network.allowedHosts)"
        )));
    }
    Ok(host)
}

fn request_headers(headers: &[(String, String)]) -> Result<Vec<(HeaderName, HeaderValue)>, FetchError> {
    headers
        .iter()
        .map(|(name, value)| {
            let header = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| FetchError::Refused(format!("{name:?} is not a header name")))?;
            if NODE_HEADERS.contains(&header.as_str()) {
                return Err(FetchError::Refused(format!("the header {header} is the node's to set")));
            }
            let value = HeaderValue::from_str(value)
                .map_err(|_| FetchError::Refused(format!("the value of the header {header} is not allowed")))?;
            Ok((header, value))
        })
        .collect()
}

/// One request and its response, on a new connection.
async fn exchange(
    url: &url::Url,
    host: &str,
    method: &Method,
    headers: &[(HeaderName, HeaderValue)],
    body: Option<Vec<u8>>,
) -> Result<FetchResponse, FetchError> {
    let port = url.port_or_known_default().unwrap_or(80);
    let connecting = async {
        match url.host() {
            Some(url::Host::Domain(name)) => tokio::net::TcpStream::connect((name, port)).await,
            Some(url::Host::Ipv4(address)) => tokio::net::TcpStream::connect((address, port)).await,
            Some(url::Host::Ipv6(address)) => tokio::net::TcpStream::connect((address, port)).await,
            None => Err(std::io::Error::other("the URL has no host")),
        }
    };
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
        .await
        .map_err(|_| FetchError::Failed(format!("connecting to {host} took too long")))?
        .map_err(|error| FetchError::Failed(format!("cannot connect to {host}: {error}")))?;
    if url.scheme() == "https" {
        let server_name = tls_server_name(url)?;
        let connector = tokio_rustls::TlsConnector::from(tls_config()?);
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(server_name, stream))
            .await
            .map_err(|_| FetchError::Failed(format!("the TLS handshake with {host} took too long")))?
            .map_err(|error| FetchError::Failed(format!("TLS with {host} failed: {error}")))?;
        return exchange_over(stream, url, host, method, headers, body).await;
    }
    exchange_over(stream, url, host, method, headers, body).await
}

/// The TLS client settings, made once: the trusted roots of the system
/// (or of `SSL_CERT_FILE`/`SSL_CERT_DIR`), HTTP/1.1 only.
fn tls_config() -> Result<Arc<rustls::ClientConfig>, FetchError> {
    static CONFIG: OnceLock<Result<Arc<rustls::ClientConfig>, String>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            let mut roots = rustls::RootCertStore::empty();
            roots.add_parsable_certificates(found.certs);
            if roots.is_empty() {
                return Err("this node found no trusted root certificates (set SSL_CERT_FILE)".to_string());
            }
            let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
            let mut config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|error| error.to_string())?
                .with_root_certificates(roots)
                .with_no_client_auth();
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            Ok(Arc::new(config))
        })
        .clone()
        .map_err(FetchError::Failed)
}

/// The name a server's certificate must carry: the URL's host.
fn tls_server_name(url: &url::Url) -> Result<rustls::pki_types::ServerName<'static>, FetchError> {
    let name = match url.host() {
        Some(url::Host::Domain(name)) => rustls::pki_types::ServerName::try_from(name.to_string())
            .map_err(|error| FetchError::Refused(format!("{name} is not a TLS server name: {error}")))?,
        Some(url::Host::Ipv4(address)) => rustls::pki_types::ServerName::from(std::net::IpAddr::V4(address)),
        Some(url::Host::Ipv6(address)) => rustls::pki_types::ServerName::from(std::net::IpAddr::V6(address)),
        None => return Err(FetchError::Refused(format!("{url} has no host"))),
    };
    Ok(name)
}

/// One request and its answer over a connected stream (plain or TLS).
async fn exchange_over<Stream>(
    stream: Stream,
    url: &url::Url,
    host: &str,
    method: &Method,
    headers: &[(HeaderName, HeaderValue)],
    body: Option<Vec<u8>>,
) -> Result<FetchResponse, FetchError>
where
    Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|error| FetchError::Failed(format!("{host}: {error}")))?;
    // The connection is driven on its own; it ends when the exchange is
    // over and `sender` is dropped.
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "a fetch connection ended with an error");
        }
    });
    let target = match url.query() {
        Some(query) => format!("{}?{query}", url.path()),
        None => url.path().to_string(),
    };
    let mut builder = Request::builder()
        .method(method.clone())
        .uri(target)
        .header(hyper::header::HOST, host);
    for (name, value) in headers {
        builder = builder.header(name, value);
    }
    let request = builder
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .map_err(|error| FetchError::Refused(format!("the request is not valid HTTP: {error}")))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|error| FetchError::Failed(format!("{host}: {error}")))?;
    let status: StatusCode = response.status();
    let headers: Vec<(String, String)> = response
        .headers()
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_string(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect();
    let declared = response
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|length| length > MAX_RESPONSE_BODY_BYTES as u64) {
        return Err(FetchError::Failed(format!(
            "{host} answered a body larger than {MAX_RESPONSE_BODY_BYTES} bytes"
        )));
    }
    let body = Limited::new(response.into_body(), MAX_RESPONSE_BODY_BYTES)
        .collect()
        .await
        .map_err(|error| {
            if error.is::<http_body_util::LengthLimitError>() {
                FetchError::Failed(format!(
                    "{host} answered a body larger than {MAX_RESPONSE_BODY_BYTES} bytes"
                ))
            } else {
                FetchError::Failed(format!("{host}: reading the body failed: {error}"))
            }
        })?
        .to_bytes();
    Ok(FetchResponse {
        status: status.as_u16(),
        status_text: status.canonical_reason().unwrap_or_default().to_string(),
        headers,
        body: body.to_vec(),
        url: url.to_string(),
        redirected: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_listed_hosts_pass_over_http_and_https() {
        let allowed = vec!["127.0.0.1:8080".to_string(), "example.com".to_string()];
        let pass = |url: &str| check_allowed(&url::Url::parse(url).unwrap(), &allowed);
        assert_eq!(pass("http://127.0.0.1:8080/x").unwrap(), "127.0.0.1:8080");
        assert_eq!(pass("http://EXAMPLE.com:80/").unwrap(), "example.com");
        assert_eq!(pass("https://example.com/").unwrap(), "example.com");
        for refused in [
            "http://127.0.0.1:8081/",
            "http://127.0.0.1/",
            "http://example.com:8080/",
            "https://example.com:8443/",
            "file:///etc/passwd",
            "http://user:pw@example.com/",
            "http://sub.example.com/",
        ] {
            let error = pass(refused).unwrap_err().to_string();
            assert!(error.starts_with("fetch refused:"), "{refused}: {error}");
        }
        assert!(check_allowed(&url::Url::parse("http://example.com/").unwrap(), &[]).is_err());
    }

    #[test]
    fn node_headers_and_odd_requests_are_refused() {
        for header in ["Host", "content-length", "Transfer-Encoding", "connection"] {
            let error = request_headers(&[(header.to_string(), "x".into())]).unwrap_err();
            assert!(error.to_string().contains("the node's to set"), "{error}");
        }
        assert!(request_headers(&[("bad name".into(), "x".into())]).is_err());
        assert!(request_headers(&[("x-ok".into(), "a\nb".into())]).is_err());
        let not_record = FetchRequest::from_value(&Value::from("http://x/")).unwrap_err();
        assert!(not_record.to_string().contains("not a record"));
    }
}
