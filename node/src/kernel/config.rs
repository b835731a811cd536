//! Cluster configs: what a subcluster is launched from (`docs/spec/kernel.md`),
//! read from a passable record or a JSON file, checked
//! before anything starts, and the records the kernel keeps for each
//! subcluster and vat.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use capstan_protocol::Value;
use serde::{Deserialize, Serialize};

use super::KernelError;

/// The largest vat program accepted, bytes.
pub const MAX_VAT_SOURCE_BYTES: u64 = 16 * 1024 * 1024;

/// The most vats one subcluster may have.
pub const MAX_VATS_PER_SUBCLUSTER: usize = 1000;

/// The most entries a vat's `globals` may have.
pub const MAX_VAT_GLOBALS: usize = 64;

/// The most hosts a vat's network allow-list may have.
pub const MAX_ALLOWED_HOSTS: usize = 256;

/// The most IO channels one subcluster may declare.
pub const MAX_IO_CHANNELS: usize = 32;

/// The longest IO channel path, bytes (a Unix socket's is shorter still:
/// [`MAX_SOCKET_PATH_BYTES`]).
pub const MAX_IO_PATH_BYTES: usize = 4096;

/// The longest Unix socket path the kernel can bind (`sun_path` less its
/// terminating NUL).
pub const MAX_SOCKET_PATH_BYTES: usize = 107;

pub use capstan_protocol::vat_globals::VAT_GLOBAL_NAMES;

/// A subcluster's config: its vats, which one bootstraps, the kernel
/// services it asks for, and its IO channels.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    pub bootstrap: String,
    pub force_reset: bool,
    pub services: Vec<String>,
    pub vats: BTreeMap<String, VatConfig>,
    /// Channel name → channel (ocap-kernel's `io`).
    pub io: BTreeMap<String, IoChannelConfig>,
}

/// One vat of a cluster config.
#[derive(Clone, Debug)]
pub struct VatConfig {
    pub source: VatSource,
    /// Handed to `buildRootObject` as its `parameters`.
    pub parameters: Value,
    /// Globals granted beyond the standard confined set, each one of
    /// [`VAT_GLOBAL_NAMES`].
    pub globals: Vec<String>,
    /// Where its `fetch` may go; none means nowhere.
    pub network: Option<NetworkConfig>,
}

/// A vat's network allow-list, shaped as ocap-kernel's `VatNetworkConfig`:
/// `{"allowedHosts": ["example.com", "127.0.0.1:8080"]}`. A host is
/// matched as a URL's `host` is written: the hostname, and `:port` unless
/// the port is the scheme's default. Hosts are kept lowercase.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkConfig {
    #[serde(rename = "allowedHosts")]
    pub allowed_hosts: Vec<String>,
}

/// One IO channel of a subcluster, shaped as ocap-kernel's `IOConfig`:
/// `{"type": "socket" | "file", "path": ..., "direction"?: "in" | "out" |
/// "inout", "unit"?: "line"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IoChannelConfig {
    pub kind: IoKind,
    pub path: PathBuf,
    pub direction: IoDirection,
}

/// What an IO channel is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum IoKind {
    /// A Unix socket the kernel listens on; lines from and to the peer
    /// connected last.
    Socket,
    /// A file: reads take its lines in turn, writes append lines.
    File,
}

/// Which way data may go through an IO channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum IoDirection {
    In,
    Out,
    InOut,
}

impl IoDirection {
    pub fn reads(self) -> bool {
        matches!(self, IoDirection::In | IoDirection::InOut)
    }

    pub fn writes(self) -> bool {
        matches!(self, IoDirection::Out | IoDirection::InOut)
    }
}

/// Where a vat's program comes from.
#[derive(Clone, Debug)]
pub enum VatSource {
    /// A file (`sourceSpec`), read when the vat is launched.
    File(PathBuf),
    /// A stored blob by content hash (`bundleSpec`), 64 hex digits.
    Blob(String),
    /// A readable blob reference (`bundleSpec` given as the blob itself,
    /// as the CLI does for a pet name).
    BlobReference(Value),
}

/// A system subcluster: launched once under a name, restored on every
/// start, and allowed system-only services.
#[derive(Clone, Debug)]
pub struct SystemSubclusterConfig {
    pub name: String,
    pub config: ClusterConfig,
}

fn bad(message: impl Into<String>) -> KernelError {
    KernelError::BadConfig(message.into())
}

fn text_field<'a>(
    record: &'a capstan_protocol::value::Record,
    field: &str,
    what: &str,
) -> Result<Option<&'a str>, KernelError> {
    match record.get(field) {
        None | Some(Value::Undefined) | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text)),
        Some(_) => Err(bad(format!("{what}: {field:?} must be a string"))),
    }
}

impl ClusterConfig {
    /// Reads a config from a passable record. Relative `sourceSpec` paths
    /// are taken relative to `base` (the config file's directory), or
    /// refused when there is none.
    pub fn from_value(value: &Value, base: Option<&Path>) -> Result<ClusterConfig, KernelError> {
        let Value::Record(record) = value else {
            return Err(bad("a cluster config must be a record"));
        };
        let bootstrap = text_field(record, "bootstrap", "the cluster config")?
            .ok_or_else(|| bad("the cluster config has no \"bootstrap\" vat name"))?
            .to_string();
        let force_reset = match record.get("forceReset") {
            None | Some(Value::Undefined) | Some(Value::Null) => false,
            Some(Value::Boolean(flag)) => *flag,
            Some(_) => return Err(bad("\"forceReset\" must be a boolean")),
        };
        let services = match record.get("services") {
            None | Some(Value::Undefined) | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .map(|item| {
                    item.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| bad("\"services\" must be an array of service names"))
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(bad("\"services\" must be an array of service names")),
        };
        let bundles = match record.get("bundles") {
            None | Some(Value::Undefined) | Some(Value::Null) => None,
            Some(Value::Record(bundles)) => Some(&**bundles),
            Some(_) => return Err(bad("\"bundles\" must be a record of vat configs")),
        };
        let Some(Value::Record(vat_records)) = record.get("vats") else {
            return Err(bad("the cluster config has no \"vats\" record"));
        };
        if vat_records.is_empty() {
            return Err(bad("the cluster config's \"vats\" record is empty"));
        }
        if vat_records.len() > MAX_VATS_PER_SUBCLUSTER {
            return Err(bad(format!(
                "the cluster config has {} vats; the limit is {MAX_VATS_PER_SUBCLUSTER}",
                vat_records.len()
            )));
        }
        let mut vats = BTreeMap::new();
        for (name, vat) in vat_records.iter() {
            let what = format!("vat {name:?}");
            let Value::Record(vat) = vat else {
                return Err(bad(format!("{what} must be a record")));
            };
            let source = vat_source(vat, &what, base, bundles)?;
            let parameters = match vat.get("parameters") {
                None | Some(Value::Undefined) | Some(Value::Null) => Value::record(Vec::<(&str, Value)>::new()),
                Some(parameters) => parameters.clone(),
            };
            let globals = vat_globals(vat.get("globals"), &what)?;
            let network = network_config(vat.get("network"), &what)?;
            vats.insert(
                name.to_string(),
                VatConfig {
                    source,
                    parameters,
                    globals,
                    network,
                },
            );
        }
        if !vats.contains_key(&bootstrap) {
            return Err(bad(format!(
                "the bootstrap vat {bootstrap:?} is not one of the config's vats"
            )));
        }
        if let Some(reserved) = services.iter().find(|name| name.starts_with(IO_SERVICE_PREFIX)) {
            return Err(bad(format!(
                "\"services\" names {reserved:?}; names starting with {IO_SERVICE_PREFIX:?} are the subclusters' own IO services"
            )));
        }
        let io = io_configs(record.get("io"), base)?;
        Ok(ClusterConfig {
            bootstrap,
            force_reset,
            services,
            vats,
            io,
        })
    }

    /// Reads a config from a JSON file; `sourceSpec` paths are relative to
    /// the file's directory.
    pub fn from_json_file(path: &Path) -> Result<ClusterConfig, KernelError> {
        let text = std::fs::read_to_string(path)
            .map_err(|error| bad(format!("cannot read the cluster config {}: {error}", path.display())))?;
        let json: serde_json::Value = serde_json::from_str(&text)
            .map_err(|error| bad(format!("the cluster config {} is not JSON: {error}", path.display())))?;
        let base = path.parent().unwrap_or(Path::new("."));
        ClusterConfig::from_value(&capstan_protocol::json::from_json(&json), Some(base))
            .map_err(|error| bad(format!("{}: {error}", path.display())))
    }
}

/// The prefix of the kernel service names the kernel gives subclusters'
/// IO services (`io:s3`); a config may not ask for them by name.
pub const IO_SERVICE_PREFIX: &str = "io:";

fn vat_globals(value: Option<&Value>, what: &str) -> Result<Vec<String>, KernelError> {
    let items = match value {
        None | Some(Value::Undefined) | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(items)) => items,
        Some(_) => return Err(bad(format!("{what}: \"globals\" must be an array of global names"))),
    };
    if items.len() > MAX_VAT_GLOBALS {
        return Err(bad(format!(
            "{what}: \"globals\" has {} entries; the limit is {MAX_VAT_GLOBALS}",
            items.len()
        )));
    }
    let mut globals: Vec<String> = Vec::with_capacity(items.len());
    for item in items.iter() {
        let Some(name) = item.as_str() else {
            return Err(bad(format!("{what}: \"globals\" must be an array of global names")));
        };
        if !VAT_GLOBAL_NAMES.contains(&name) {
            let shown: String = name.chars().take(64).collect();
            return Err(bad(format!(
                "{what} asks for the global {shown:?}, which vats cannot have; the allowed globals are {}",
                VAT_GLOBAL_NAMES.join(", ")
            )));
        }
        if !globals.iter().any(|known| known == name) {
            globals.push(name.to_string());
        }
    }
    Ok(globals)
}

fn network_config(value: Option<&Value>, what: &str) -> Result<Option<NetworkConfig>, KernelError> {
    let record = match value {
        None | Some(Value::Undefined) | Some(Value::Null) => return Ok(None),
        Some(Value::Record(record)) => record,
        Some(_) => {
            return Err(bad(format!(
                "{what}: \"network\" must be a record like {{\"allowedHosts\": [\"example.com\"]}}"
            )));
        }
    };
    if let Some(other) = record.names().find(|key| &***key != "allowedHosts") {
        return Err(bad(format!("{what}: \"network\" has an unknown field {other:?}")));
    }
    let hosts = match record.get("allowedHosts") {
        None | Some(Value::Undefined) | Some(Value::Null) => return Ok(Some(NetworkConfig::default())),
        Some(Value::Array(hosts)) => hosts,
        Some(_) => return Err(bad(format!("{what}: \"allowedHosts\" must be an array of hosts"))),
    };
    if hosts.len() > MAX_ALLOWED_HOSTS {
        return Err(bad(format!(
            "{what}: \"allowedHosts\" has {} hosts; the limit is {MAX_ALLOWED_HOSTS}",
            hosts.len()
        )));
    }
    let mut allowed_hosts = Vec::with_capacity(hosts.len());
    for host in hosts.iter() {
        let Some(host) = host.as_str() else {
            return Err(bad(format!("{what}: \"allowedHosts\" must be an array of hosts")));
        };
        allowed_hosts.push(allowed_host(host).map_err(|problem| bad(format!("{what}: {problem}")))?);
    }
    Ok(Some(NetworkConfig { allowed_hosts }))
}

/// Checks one `allowedHosts` entry: a hostname or IP address with an
/// optional port, nothing else, written as a URL's `host` would be.
pub fn allowed_host(host: &str) -> Result<String, String> {
    let shown: String = host.chars().take(80).collect();
    let refuse = |why: &str| Err(format!("the allowed host {shown:?} {why}"));
    if host.is_empty() || host.len() > 261 {
        return refuse("must be 1 to 261 bytes");
    }
    if host
        .bytes()
        .any(|byte| byte.is_ascii_whitespace() || byte.is_ascii_control() || b"/?#@\\*".contains(&byte))
    {
        return refuse(
            "must be a host name or address with an optional port, with no scheme, path, user, spaces or wildcards",
        );
    }
    let Ok(url) = url::Url::parse(&format!("http://{host}/")) else {
        return refuse("is not a host name or address with an optional port");
    };
    let Some(name) = url.host_str() else {
        return refuse("has no host");
    };
    if url.port() == Some(0) {
        return refuse("has port 0");
    }
    let canonical = match url.port() {
        Some(port) => format!("{name}:{port}"),
        None => name.to_string(),
    };
    if canonical != host.to_ascii_lowercase() {
        return refuse(&format!("is not written as a URL's host; write it as {canonical:?}"));
    }
    Ok(canonical)
}

fn io_configs(value: Option<&Value>, base: Option<&Path>) -> Result<BTreeMap<String, IoChannelConfig>, KernelError> {
    let record = match value {
        None | Some(Value::Undefined) | Some(Value::Null) => return Ok(BTreeMap::new()),
        Some(Value::Record(record)) => record,
        Some(_) => return Err(bad("\"io\" must be a record of IO channels by name")),
    };
    if record.len() > MAX_IO_CHANNELS {
        return Err(bad(format!(
            "\"io\" declares {} channels; the limit is {MAX_IO_CHANNELS}",
            record.len()
        )));
    }
    let mut channels = BTreeMap::new();
    for (name, channel) in record.iter() {
        let shown: String = name.chars().take(64).collect();
        if name.is_empty()
            || name.len() > 64
            || !name
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || b"-_.".contains(&byte))
        {
            return Err(bad(format!(
                "the IO channel name {shown:?} must be 1 to 64 letters, digits, '-', '_' or '.'"
            )));
        }
        let what = format!("IO channel {name:?}");
        channels.insert(name.to_string(), io_config(channel, &what, base)?);
    }
    Ok(channels)
}

fn io_config(value: &Value, what: &str, base: Option<&Path>) -> Result<IoChannelConfig, KernelError> {
    let Value::Record(record) = value else {
        return Err(bad(format!(
            "{what} must be a record like {{\"type\": \"socket\", \"path\": \"/tmp/x.sock\"}}"
        )));
    };
    if let Some(other) = record
        .names()
        .find(|key| !["type", "path", "direction", "unit"].contains(&&***key))
    {
        return Err(bad(format!("{what} has an unknown field {other:?}")));
    }
    let kind = match text_field(record, "type", what)? {
        Some("socket") => IoKind::Socket,
        Some("file") => IoKind::File,
        Some(kind @ ("console" | "listen" | "network")) => {
            return Err(bad(format!(
                "{what} has type {kind:?}, which this kernel does not offer; it offers \"socket\" and \"file\""
            )));
        }
        Some(other) => {
            let shown: String = other.chars().take(32).collect();
            return Err(bad(format!(
                "{what} has an unknown type {shown:?}; the types are \"socket\" and \"file\""
            )));
        }
        None => return Err(bad(format!("{what} has no \"type\""))),
    };
    let direction = match text_field(record, "direction", what)? {
        None | Some("inout") => IoDirection::InOut,
        Some("in") => IoDirection::In,
        Some("out") => IoDirection::Out,
        Some(_) => {
            return Err(bad(format!(
                "{what}: \"direction\" must be \"in\", \"out\" or \"inout\""
            )));
        }
    };
    match text_field(record, "unit", what)? {
        None | Some("line") => {}
        Some(_) => {
            return Err(bad(format!(
                "{what}: \"unit\" must be \"line\" (the only unit this kernel offers)"
            )));
        }
    }
    let Some(path) = text_field(record, "path", what)? else {
        return Err(bad(format!("{what} has no \"path\"")));
    };
    if path.is_empty() || path.len() > MAX_IO_PATH_BYTES || path.contains('\0') {
        return Err(bad(format!(
            "{what}: \"path\" must be 1 to {MAX_IO_PATH_BYTES} bytes with no NUL"
        )));
    }
    let path = PathBuf::from(path);
    let path = if path.is_absolute() {
        path
    } else if let Some(base) = base {
        base.join(path)
    } else {
        return Err(bad(format!(
            "{what}: \"path\" {} must be an absolute path here",
            path.display()
        )));
    };
    if path.file_name().is_none() {
        return Err(bad(format!("{what}: \"path\" {} names no file", path.display())));
    }
    if kind == IoKind::Socket && path.as_os_str().len() > MAX_SOCKET_PATH_BYTES {
        return Err(bad(format!(
            "{what}: a Unix socket path may be at most {MAX_SOCKET_PATH_BYTES} bytes, and {} is {}",
            path.display(),
            path.as_os_str().len()
        )));
    }
    Ok(IoChannelConfig { kind, path, direction })
}

fn vat_source(
    vat: &capstan_protocol::value::Record,
    what: &str,
    base: Option<&Path>,
    bundles: Option<&capstan_protocol::value::Record>,
) -> Result<VatSource, KernelError> {
    if let Some(blob @ Value::Remotable(_)) = vat.get("bundleSpec") {
        if vat.get("sourceSpec").is_some() || vat.get("bundleName").is_some() {
            return Err(bad(format!(
                "{what} must name its code by exactly one of \"sourceSpec\", \"bundleSpec\" or \"bundleName\""
            )));
        }
        return Ok(VatSource::BlobReference(blob.clone()));
    }
    let source_spec = text_field(vat, "sourceSpec", what)?;
    let bundle_spec = text_field(vat, "bundleSpec", what)?;
    let bundle_name = text_field(vat, "bundleName", what)?;
    match (source_spec, bundle_spec, bundle_name) {
        (Some(path), None, None) => {
            let path = PathBuf::from(path);
            if path.is_absolute() {
                Ok(VatSource::File(path))
            } else if let Some(base) = base {
                Ok(VatSource::File(base.join(path)))
            } else {
                Err(bad(format!(
                    "{what}: \"sourceSpec\" {} must be an absolute path here",
                    path.display()
                )))
            }
        }
        (None, Some(hash), None) => {
            if hash.len() == 64 && hash.bytes().all(|c| c.is_ascii_hexdigit()) {
                Ok(VatSource::Blob(hash.to_ascii_lowercase()))
            } else {
                Err(bad(format!(
                    "{what}: \"bundleSpec\" must name a stored blob by its 64-hex content hash, not {hash:?}"
                )))
            }
        }
        (None, None, Some(name)) => {
            let Some(Value::Record(bundle)) = bundles.and_then(|bundles| bundles.get(name)) else {
                return Err(bad(format!(
                    "{what}: no bundle named {name:?} in the config's \"bundles\""
                )));
            };
            if bundle.get("bundleName").is_some() {
                return Err(bad(format!(
                    "bundle {name:?} must name its code by sourceSpec or bundleSpec"
                )));
            }
            vat_source(bundle, &format!("bundle {name:?}"), base, None)
        }
        _ => Err(bad(format!(
            "{what} must name its code by exactly one of \"sourceSpec\", \"bundleSpec\" or \"bundleName\""
        ))),
    }
}

/// What the kernel keeps about a subcluster.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SubclusterRecord {
    /// The system subcluster's name; `None` for a regular one.
    pub name: Option<String>,
    pub bootstrap: String,
    pub services: Vec<String>,
    /// Vat name → vat id.
    pub vats: BTreeMap<String, String>,
    /// The kref of the bootstrap vat's root.
    pub root: String,
    /// Whether `bootstrap` has run; a subcluster left unbootstrapped by a
    /// crash mid-launch is removed at the next start.
    pub bootstrapped: bool,
    /// Its IO channels, opened again at each start.
    #[serde(default)]
    pub io: BTreeMap<String, IoChannelConfig>,
}

/// What the kernel keeps about a vat.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct VatRecord {
    pub subcluster: String,
    pub name: String,
    /// The program, as read at launch: a restart runs the same code even
    /// if the file changed or went away.
    pub source: String,
    /// `parameters` as smallcaps (plain data only).
    pub parameters: String,
    /// The kref of its root object.
    pub root: String,
    /// Globals granted beyond the standard confined set.
    #[serde(default)]
    pub globals: Vec<String>,
    /// Where its `fetch` may go.
    #[serde(default)]
    pub network: Option<NetworkConfig>,
}

/// What a kref stands for, kept with it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum KrefInfo {
    /// A vat's root object: durable, found again after a restart.
    VatRoot { vat: String },
    /// An ordinary object a vat exported: gone after a restart.
    VatObject { vat: String },
    /// A kernel service: durable, bound again by name.
    Service { name: String },
    /// Any other reference the kernel was handed: gone after a restart.
    Other,
    /// A kref whose object no longer exists, and why.
    Gone { reason: String },
}

/// How a kernel record is stored.
pub fn encode_record<T: Serialize>(record: &T) -> Result<Vec<u8>, KernelError> {
    serde_json::to_vec(record).map_err(|error| KernelError::Corrupt(error.to_string()))
}

/// Reads a stored kernel record.
pub fn decode_record<T: for<'de> Deserialize<'de>>(bytes: &[u8], what: &str) -> Result<T, KernelError> {
    serde_json::from_slice(bytes).map_err(|error| KernelError::Corrupt(format!("{what}: {error}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(json: serde_json::Value) -> Result<ClusterConfig, KernelError> {
        ClusterConfig::from_value(&capstan_protocol::json::from_json(&json), Some(Path::new("/base")))
    }

    #[test]
    fn relative_source_paths_resolve_against_the_config_directory() {
        let parsed = config(serde_json::json!({
            "bootstrap": "main",
            "services": ["timer"],
            "vats": {"main": {"sourceSpec": "./main.js", "parameters": {"name": "x"}}}
        }))
        .unwrap();
        assert_eq!(parsed.services, vec!["timer".to_string()]);
        assert!(matches!(&parsed.vats["main"].source, VatSource::File(path) if path == Path::new("/base/./main.js")));
    }

    #[test]
    fn bad_configs_say_what_is_wrong() {
        let cases = [
            (
                serde_json::json!({"vats": {"a": {"sourceSpec": "a.js"}}}),
                "no \"bootstrap\"",
            ),
            (serde_json::json!({"bootstrap": "a"}), "no \"vats\""),
            (
                serde_json::json!({"bootstrap": "b", "vats": {"a": {"sourceSpec": "a.js"}}}),
                "not one of",
            ),
            (
                serde_json::json!({"bootstrap": "a", "vats": {"a": {"sourceSpec": "a.js", "bundleSpec": "00"}}}),
                "exactly one of",
            ),
            (
                serde_json::json!({"bootstrap": "a", "vats": {"a": {"bundleSpec": "zz"}}}),
                "64-hex",
            ),
            (
                serde_json::json!({"bootstrap": "a", "vats": {"a": {"bundleName": "x"}}}),
                "no bundle named",
            ),
        ];
        for (json, expected) in cases {
            let error = config(json.clone()).unwrap_err().to_string();
            assert!(error.contains(expected), "{json}: {error}");
        }
    }

    #[test]
    fn bundle_names_resolve_through_the_bundles_record() {
        let parsed = config(serde_json::json!({
            "bootstrap": "a",
            "bundles": {"shared": {"sourceSpec": "/code/shared.js"}},
            "vats": {"a": {"bundleName": "shared"}}
        }))
        .unwrap();
        assert!(matches!(&parsed.vats["a"].source, VatSource::File(path) if path == Path::new("/code/shared.js")));
    }

    #[test]
    fn globals_network_and_io_are_read_in_ocap_kernel_shapes() {
        let parsed = config(serde_json::json!({
            "bootstrap": "a",
            "io": {
                "repl": {"type": "socket", "path": "/run/x.sock"},
                "log": {"type": "file", "path": "log.txt", "direction": "out", "unit": "line"}
            },
            "vats": {"a": {
                "sourceSpec": "/a.js",
                "globals": ["fetch", "setTimeout", "fetch"],
                "network": {"allowedHosts": ["Example.com", "127.0.0.1:8080", "[::1]:9"]}
            }}
        }))
        .unwrap();
        let vat = &parsed.vats["a"];
        assert_eq!(vat.globals, vec!["fetch".to_string(), "setTimeout".to_string()]);
        assert_eq!(
            vat.network.as_ref().unwrap().allowed_hosts,
            vec![
                "example.com".to_string(),
                "127.0.0.1:8080".to_string(),
                "[::1]:9".to_string()
            ]
        );
        assert_eq!(parsed.io["repl"].kind, IoKind::Socket);
        assert_eq!(parsed.io["repl"].direction, IoDirection::InOut);
        assert_eq!(parsed.io["log"].path, Path::new("/base/log.txt"));
        assert_eq!(parsed.io["log"].direction, IoDirection::Out);
    }

    #[test]
    fn odd_globals_hosts_and_channels_are_refused_with_a_reason() {
        let vat = |extra: serde_json::Value| {
            let mut vat = serde_json::json!({"sourceSpec": "/a.js"});
            for (key, value) in extra.as_object().unwrap() {
                vat[key] = value.clone();
            }
            serde_json::json!({"bootstrap": "a", "vats": {"a": vat}})
        };
        let io = |io: serde_json::Value| serde_json::json!({"bootstrap": "a", "io": io, "vats": {"a": {"sourceSpec": "/a.js"}}});
        let long_socket = format!("/{}", "s".repeat(120));
        let cases = [
            (vat(serde_json::json!({"globals": ["process"]})), "cannot have"),
            (vat(serde_json::json!({"globals": ["SubtleCrypto"]})), "cannot have"),
            (vat(serde_json::json!({"globals": "fetch"})), "array of global names"),
            (vat(serde_json::json!({"globals": [1]})), "array of global names"),
            (vat(serde_json::json!({"globals": vec!["Date"; 65]})), "the limit is 64"),
            (
                vat(serde_json::json!({"network": {"allowedHosts": vec!["example.com"; 257]}})),
                "the limit is 256",
            ),
            (vat(serde_json::json!({"network": ["example.com"]})), "must be a record"),
            (vat(serde_json::json!({"network": {"hosts": []}})), "unknown field"),
            (
                vat(serde_json::json!({"network": {"allowedHosts": "x"}})),
                "array of hosts",
            ),
            (
                vat(serde_json::json!({"network": {"allowedHosts": ["http://example.com"]}})),
                "no scheme",
            ),
            (
                vat(serde_json::json!({"network": {"allowedHosts": ["example.com/path"]}})),
                "no scheme",
            ),
            (
                vat(serde_json::json!({"network": {"allowedHosts": ["user@example.com"]}})),
                "no scheme",
            ),
            (
                vat(serde_json::json!({"network": {"allowedHosts": ["*.example.com"]}})),
                "wildcards",
            ),
            (
                vat(serde_json::json!({"network": {"allowedHosts": [" example.com"]}})),
                "spaces",
            ),
            (vat(serde_json::json!({"network": {"allowedHosts": [""]}})), "1 to 261"),
            (
                vat(serde_json::json!({"network": {"allowedHosts": ["example.com:99999"]}})),
                "not a host",
            ),
            (
                vat(serde_json::json!({"network": {"allowedHosts": ["example.com:0"]}})),
                "port 0",
            ),
            (
                vat(serde_json::json!({"network": {"allowedHosts": ["example.com:80"]}})),
                "write it as \"example.com\"",
            ),
            (
                vat(serde_json::json!({"network": {"allowedHosts": ["[::1"]}})),
                "not a host",
            ),
            (io(serde_json::json!(["x"])), "record of IO channels"),
            (
                io(serde_json::json!({"x": {"type": "pipe", "path": "/x"}})),
                "unknown type",
            ),
            (io(serde_json::json!({"x": {"type": "console"}})), "does not offer"),
            (io(serde_json::json!({"x": {"type": "file"}})), "no \"path\""),
            (
                io(serde_json::json!({"x": {"type": "file", "path": "/x", "direction": "up"}})),
                "direction",
            ),
            (
                io(serde_json::json!({"x": {"type": "file", "path": "/x", "unit": "bytes"}})),
                "unit",
            ),
            (
                io(serde_json::json!({"x": {"type": "file", "path": "/x", "mode": 7}})),
                "unknown field",
            ),
            (
                io(serde_json::json!({"x": {"type": "file", "path": "/x\u{0}y"}})),
                "NUL",
            ),
            (
                io(serde_json::json!({"x": {"type": "socket", "path": long_socket}})),
                "at most 107",
            ),
            (
                io(serde_json::json!({"../x": {"type": "file", "path": "/x"}})),
                "channel name",
            ),
            (
                io(serde_json::json!({"": {"type": "file", "path": "/x"}})),
                "channel name",
            ),
            (
                serde_json::json!({"bootstrap": "a", "services": ["io:s1"], "vats": {"a": {"sourceSpec": "/a.js"}}}),
                "IO services",
            ),
        ];
        for (json, expected) in cases {
            let error = config(json.clone()).unwrap_err().to_string();
            assert!(error.contains(expected), "{json}: {error}");
        }
        // Without a base directory, relative IO paths are refused.
        let relative = serde_json::json!({"bootstrap": "a", "io": {"x": {"type": "file", "path": "x.txt"}}, "vats": {"a": {"sourceSpec": "/a.js"}}});
        let error = ClusterConfig::from_value(&capstan_protocol::json::from_json(&relative), None)
            .unwrap_err()
            .to_string();
        assert!(error.contains("absolute path"), "{error}");
    }
}
