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

/// A subcluster's config: its vats, which one bootstraps, and the kernel
/// services it asks for.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    pub bootstrap: String,
    pub force_reset: bool,
    pub services: Vec<String>,
    pub vats: BTreeMap<String, VatConfig>,
}

/// One vat of a cluster config.
#[derive(Clone, Debug)]
pub struct VatConfig {
    pub source: VatSource,
    /// Handed to `buildRootObject` as its `parameters`.
    pub parameters: Value,
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
            if let Some(Value::Array(globals)) = vat.get("globals")
                && !globals.is_empty()
            {
                return Err(bad(format!(
                    "{what} asks for extra globals; vats get the standard confined globals only"
                )));
            }
            let parameters = match vat.get("parameters") {
                None | Some(Value::Undefined) | Some(Value::Null) => Value::record(Vec::<(&str, Value)>::new()),
                Some(parameters) => parameters.clone(),
            };
            vats.insert(name.to_string(), VatConfig { source, parameters });
        }
        if !vats.contains_key(&bootstrap) {
            return Err(bad(format!(
                "the bootstrap vat {bootstrap:?} is not one of the config's vats"
            )));
        }
        Ok(ClusterConfig {
            bootstrap,
            force_reset,
            services,
            vats,
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
}
