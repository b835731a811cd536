//! `capstan kernel ...`: the kernel's subclusters, vats and objects, each
//! command a call on the host's special name `KERNEL` (the kernel facet).
//!
//! `launch` reads and checks the cluster config here, so a bad file is
//! named before the node is asked anything, and rewrites it for the node:
//! `sourceSpec` paths and IO channel paths become absolute (they are
//! relative to the config file), and a `bundleSpec` that is not a blob
//! hash is taken as a pet name of a blob and replaced by its hash.

use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow, bail};
use capstan_protocol::{Value, list};
use serde_json::{Map, Value as Json};

use super::{from_json, path, to_json};
use crate::client::{Client, call, with_client};
use crate::commands::KernelCommand;
use crate::inspect::{inspect, inspect_top};
use crate::state::StateDir;

/// The host's special name for the kernel facet.
const KERNEL: &str = "KERNEL";

pub fn run(state: &StateDir, as_agent: Option<&str>, command: &KernelCommand) -> anyhow::Result<()> {
    match command {
        KernelCommand::Status { json } => status(state, as_agent, *json),
        KernelCommand::Launch { config, json } => launch(state, as_agent, config, *json),
        KernelCommand::Terminate { id } => {
            kernel_call(state, as_agent, "terminateSubcluster", list![id.as_str()])
                .with_context(|| format!("cannot terminate subcluster {id}"))?;
            Ok(())
        }
        KernelCommand::Subclusters { json } => subclusters(state, as_agent, *json),
        KernelCommand::Queue {
            kref,
            method,
            args,
            no_wait,
        } => queue(state, as_agent, kref, method, args.as_deref(), *no_wait),
        KernelCommand::RestartVat { vat } => {
            kernel_call(state, as_agent, "restartVat", list![vat.as_str()])
                .with_context(|| format!("cannot restart vat {vat}"))?;
            Ok(())
        }
        KernelCommand::TerminateVat { vat } => {
            kernel_call(state, as_agent, "terminateVat", list![vat.as_str()])
                .with_context(|| format!("cannot terminate vat {vat}"))?;
            Ok(())
        }
        KernelCommand::CollectGarbage { json } => collect_garbage(state, as_agent, *json),
        KernelCommand::IssueUrl { kref } => {
            let url = kernel_call(state, as_agent, "issueOcapURL", list![kref.as_str()])?;
            println!("{}", text(Some(&url)));
            Ok(())
        }
        KernelCommand::RedeemUrl { url, name } => redeem_url(state, as_agent, url, name.as_deref()),
        KernelCommand::Revoke { kref } => {
            let newly = kernel_call(state, as_agent, "revoke", list![kref.as_str()])?;
            if matches!(newly, Value::Boolean(false)) {
                eprintln!("{kref} was already revoked");
            }
            Ok(())
        }
        KernelCommand::Revoked { kref } => {
            let revoked = kernel_call(state, as_agent, "isRevoked", list![kref.as_str()])?;
            match revoked {
                Value::Boolean(revoked) => println!("{revoked}"),
                other => bail!("the kernel answered {} to isRevoked", inspect(&other)),
            }
            Ok(())
        }
        KernelCommand::PingVat { vat } => {
            let answer = kernel_call(state, as_agent, "pingVat", list![vat.as_str()])?;
            println!("{}", inspect_top(&answer));
            Ok(())
        }
        KernelCommand::Reset { yes } => {
            if !yes {
                bail!("kernel reset stops every vat and forgets every subcluster and its state; pass --yes to do it");
            }
            kernel_call(state, as_agent, "reset", list![])?;
            Ok(())
        }
    }
}

/// The kernel facet, from the agent's special name.
async fn kernel(client: &Client) -> anyhow::Result<Value> {
    call(&client.agent, "lookup", list![path(KERNEL)])
        .await
        .context("this agent has no KERNEL")
}

/// One call on the kernel facet.
fn kernel_call(state: &StateDir, as_agent: Option<&str>, method: &str, args: Value) -> anyhow::Result<Value> {
    with_client(state, as_agent, |client| async move {
        let kernel = kernel(&client).await?;
        call(&kernel, method, args).await
    })
}

fn text(value: Option<&Value>) -> String {
    match value {
        Some(Value::String(text)) => text.to_string(),
        Some(Value::Null | Value::Undefined) | None => "-".to_string(),
        Some(other) => inspect(other),
    }
}

fn field<'a>(value: &'a Value, name: &str) -> Option<&'a Value> {
    value.as_record().and_then(|record| record.get(name))
}

/// `kernel status`: the subclusters with their vats, then remote comms.
fn status(state: &StateDir, as_agent: Option<&str>, json: bool) -> anyhow::Result<()> {
    let status = kernel_call(state, as_agent, "getStatus", list![])?;
    if json {
        println!("{}", to_json(&status));
        return Ok(());
    }
    let vats = field(&status, "vats").and_then(Value::as_array).unwrap_or_default();
    let subclusters = field(&status, "subclusters")
        .and_then(Value::as_array)
        .unwrap_or_default();
    if subclusters.is_empty() {
        println!("no subclusters");
    }
    for subcluster in subclusters {
        println!("{}", subcluster_line(subcluster));
        let id = field(subcluster, "id");
        for vat in vats.iter().filter(|vat| text(field(vat, "subclusterId")) == text(id)) {
            println!(
                "  {:<6} {:<16} root {:<7} pid {:<8} {}",
                text(field(vat, "id")),
                text(field(vat, "name")),
                text(field(vat, "rootKref")),
                text(field(vat, "pid")),
                text(field(vat, "state"))
            );
        }
    }
    let comms = field(&status, "remoteComms");
    println!(
        "remote comms {} (peer {})",
        text(comms.and_then(|comms| field(comms, "state"))),
        text(comms.and_then(|comms| field(comms, "peerId")))
    );
    let promises = field(&status, "kernelPromises");
    let count = |name: &str| text(promises.and_then(|promises| field(promises, name)));
    println!(
        "kernel promises {} ({} pending, {} fulfilled, {} rejected)",
        count("count"),
        count("pending"),
        count("fulfilled"),
        count("rejected")
    );
    for (label, name) in [("listening", "listenAddresses"), ("connected", "connectedPeers")] {
        let items = comms
            .and_then(|comms| field(comms, name))
            .and_then(Value::as_array)
            .unwrap_or_default();
        if items.is_empty() {
            println!("{label:<12} (none)");
        }
        for item in items {
            println!("{label:<12} {}", text(Some(item)));
        }
    }
    Ok(())
}

/// One subcluster on a line: id, root kref, bootstrap vat, vats, and the
/// name of a system subcluster.
fn subcluster_line(subcluster: &Value) -> String {
    let mut line = format!(
        "{} root {} bootstrap {} vats",
        text(field(subcluster, "id")),
        text(field(subcluster, "rootKref")),
        text(field(subcluster, "bootstrap"))
    );
    if let Some(vats) = field(subcluster, "vats").and_then(Value::as_record) {
        for (name, id) in vats.iter() {
            line.push_str(&format!(" {name}={}", text(Some(id))));
        }
    }
    if matches!(field(subcluster, "system"), Some(Value::Boolean(true))) {
        line.push_str(&format!(" system {}", text(field(subcluster, "name"))));
    }
    line
}

/// `kernel subclusters`: one line each (`--json`: the records).
fn subclusters(state: &StateDir, as_agent: Option<&str>, json: bool) -> anyhow::Result<()> {
    let subclusters = kernel_call(state, as_agent, "getSubclusters", list![])?;
    if json {
        println!("{}", to_json(&subclusters));
        return Ok(());
    }
    for subcluster in subclusters.as_array().unwrap_or_default() {
        println!("{}", subcluster_line(subcluster));
    }
    Ok(())
}

/// A blob's content hash: 64 lowercase hex digits.
fn is_blob_hash(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A cluster config read and checked, with `sourceSpec`s made absolute;
/// the entries whose `bundleSpec` is a pet name, still to be resolved:
/// (`"vats"` or `"bundles"`, entry name, pet name).
struct ClusterConfig {
    json: Map<String, Json>,
    named_bundles: Vec<(&'static str, String, String)>,
}

fn read_config(file: &Path) -> anyhow::Result<ClusterConfig> {
    let shown = file.display();
    let text = std::fs::read_to_string(file).with_context(|| format!("cannot read the cluster config {shown}"))?;
    let json: Json =
        serde_json::from_str(&text).with_context(|| format!("the cluster config {shown} is not valid JSON"))?;
    let Json::Object(mut config) = json else {
        bail!("the cluster config {shown} is not a JSON object");
    };
    let bootstrap = match config.get("bootstrap") {
        Some(Json::String(name)) => name.clone(),
        Some(_) => bail!("in the cluster config {shown}: \"bootstrap\" must be a vat name (a string)"),
        None => bail!("the cluster config {shown} has no \"bootstrap\" (the name of the bootstrap vat)"),
    };
    let base = file
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut named_bundles = Vec::new();
    let Some(Json::Object(vats)) = config.get_mut("vats") else {
        bail!("the cluster config {shown} has no \"vats\" object");
    };
    if vats.is_empty() {
        bail!("the cluster config {shown} has no vats");
    }
    if !vats.contains_key(&bootstrap) {
        let names: Vec<&str> = vats.keys().map(String::as_str).collect();
        bail!(
            "in the cluster config {shown}: the bootstrap vat {bootstrap:?} is not among the vats ({})",
            names.join(", ")
        );
    }
    for (name, vat) in vats.iter_mut() {
        let what = format!("vat {name:?}");
        let Json::Object(vat) = vat else {
            bail!("in the cluster config {shown}: {what} is not a JSON object");
        };
        if let Some(bundle) = rewrite_code(vat, &what, base, file)? {
            named_bundles.push(("vats", name.clone(), bundle));
        }
    }
    if let Some(Json::Object(bundles)) = config.get_mut("bundles") {
        for (name, bundle) in bundles.iter_mut() {
            let what = format!("bundle {name:?}");
            let Json::Object(bundle) = bundle else {
                bail!("in the cluster config {shown}: {what} is not a JSON object");
            };
            if let Some(pet_name) = rewrite_code(bundle, &what, base, file)? {
                named_bundles.push(("bundles", name.clone(), pet_name));
            }
        }
    }
    if let Some(Json::Object(channels)) = config.get_mut("io") {
        rewrite_io_paths(channels, base, file)?;
    }
    Ok(ClusterConfig {
        json: config,
        named_bundles,
    })
}

/// Makes each IO channel's relative `path` absolute, against the config
/// file's folder (as `sourceSpec`s are); the node checks the rest. The
/// path itself need not exist yet (a socket is made at launch).
fn rewrite_io_paths(channels: &mut Map<String, Json>, base: &Path, file: &Path) -> anyhow::Result<()> {
    let shown = file.display();
    for (name, channel) in channels.iter_mut() {
        let Json::Object(channel) = channel else { continue };
        let Some(Json::String(path)) = channel.get("path") else {
            continue;
        };
        if path.is_empty() || Path::new(path).is_absolute() {
            continue;
        }
        let folder = std::fs::canonicalize(base).with_context(|| {
            format!(
                "in the cluster config {shown}: IO channel {name:?} has the relative path {path:?}, but the config's folder {} cannot be resolved",
                base.display()
            )
        })?;
        let joined = folder.join(path);
        let joined = joined
            .to_str()
            .ok_or_else(|| anyhow!("the path {} is not UTF-8", joined.display()))?
            .to_string();
        channel.insert("path".into(), Json::String(joined));
    }
    Ok(())
}

/// Checks that `entry` (a vat or a bundle) names its code by exactly one
/// of `sourceSpec`, `bundleSpec`, `bundleName`; makes a `sourceSpec`
/// absolute; returns a `bundleSpec` that is a pet name, to resolve.
fn rewrite_code(entry: &mut Map<String, Json>, what: &str, base: &Path, file: &Path) -> anyhow::Result<Option<String>> {
    let shown = file.display();
    let given: Vec<&str> = ["sourceSpec", "bundleSpec", "bundleName"]
        .into_iter()
        .filter(|key| entry.contains_key(*key))
        .collect();
    if given.len() != 1 {
        bail!("in the cluster config {shown}: {what} needs exactly one of sourceSpec, bundleSpec or bundleName");
    }
    let Some(Json::String(spec)) = entry.get(given[0]) else {
        bail!(
            "in the cluster config {shown}: {what} has a {} that is not a string",
            given[0]
        );
    };
    match given[0] {
        "sourceSpec" => {
            let joined: PathBuf = base.join(spec);
            let absolute = std::fs::canonicalize(&joined).with_context(|| {
                format!(
                    "in the cluster config {shown}: {what} has sourceSpec {spec:?}, but {} cannot be read",
                    joined.display()
                )
            })?;
            let absolute = absolute
                .to_str()
                .ok_or_else(|| anyhow!("the path {} is not UTF-8", absolute.display()))?
                .to_string();
            entry.insert("sourceSpec".into(), Json::String(absolute));
            Ok(None)
        }
        "bundleSpec" if !is_blob_hash(spec) => Ok(Some(spec.clone())),
        _ => Ok(None),
    }
}

/// The cluster config as a passable, each pet-named `bundleSpec` replaced
/// by the blob it names (the node reads the program from it).
async fn config_value(client: &Client, file: &Path, config: ClusterConfig) -> anyhow::Result<Value> {
    let mut value = from_json(&Json::Object(config.json));
    for (section, entry_name, name) in config.named_bundles {
        let parts: Vec<Value> = name.split('.').map(Value::from).collect();
        let blob = call(&client.agent, "lookup", Value::array(parts)).await.map_err(|_| {
            anyhow!(
                "in the cluster config {}: {entry_name:?} has bundleSpec {name:?}, which is neither a blob hash nor a name you have",
                file.display()
            )
        })?;
        value = with_path(&value, &[section, &entry_name, "bundleSpec"], blob);
    }
    Ok(value)
}

/// `record` with the field at `path` (records all the way) set to `field`.
fn with_path(record: &Value, path: &[&str], field: Value) -> Value {
    let Some((first, rest)) = path.split_first() else {
        return field;
    };
    let entries = record
        .as_record()
        .map(|record| record.iter().collect::<Vec<_>>())
        .unwrap_or_default();
    let inner = entries
        .iter()
        .find(|(key, _)| key.as_ref() == *first)
        .map_or(Value::Undefined, |(_, value)| (*value).clone());
    let replaced = with_path(&inner, rest, field);
    let mut updated: Vec<(String, Value)> = entries
        .into_iter()
        .filter(|(key, _)| key.as_ref() != *first)
        .map(|(key, value)| (key.to_string(), value.clone()))
        .collect();
    updated.push((first.to_string(), replaced));
    Value::record(updated)
}

/// `kernel launch CONFIG`: prints the subcluster id and the root kref.
fn launch(state: &StateDir, as_agent: Option<&str>, file: &Path, json: bool) -> anyhow::Result<()> {
    let config = read_config(file)?;
    let result = with_client(state, as_agent, |client| async move {
        let config = config_value(&client, file, config).await?;
        let kernel = kernel(&client).await?;
        call(&kernel, "launchSubcluster", list![config]).await
    })
    .with_context(|| format!("launching {}", file.display()))?;
    if json {
        let mut out = Map::new();
        for name in ["subclusterId", "rootKref", "bootstrapResult"] {
            out.insert(name.into(), field(&result, name).map_or(Json::Null, to_json));
        }
        println!("{}", Json::Object(out));
    } else {
        println!("{}", text(field(&result, "subclusterId")));
        println!("{}", text(field(&result, "rootKref")));
    }
    Ok(())
}

/// `kernel collect-garbage`: what was retired, and how many vats were
/// asked to release what they no longer hold.
fn collect_garbage(state: &StateDir, as_agent: Option<&str>, json: bool) -> anyhow::Result<()> {
    let collected = kernel_call(state, as_agent, "collectGarbage", list![])?;
    if json {
        println!("{}", to_json(&collected));
        return Ok(());
    }
    let retired: Vec<String> = field(&collected, "retired")
        .and_then(Value::as_array)
        .unwrap_or_default()
        .iter()
        .map(|kref| text(Some(kref)))
        .collect();
    println!(
        "retired {} kref(s){}{}",
        retired.len(),
        if retired.is_empty() { "" } else { ": " },
        retired.join(" ")
    );
    println!(
        "asked {} vat(s) to release what they no longer hold; {} import(s) dropped",
        text(field(&collected, "vats")),
        text(field(&collected, "importsDropped"))
    );
    Ok(())
}

/// `kernel redeem-url URL [-n NAME]`: prints the kref of the object here,
/// and names it for the agent if asked.
fn redeem_url(state: &StateDir, as_agent: Option<&str>, url: &str, name: Option<&str>) -> anyhow::Result<()> {
    let kref = with_client(state, as_agent, |client| async move {
        let kernel = kernel(&client).await?;
        let kref = call(&kernel, "redeemOcapURL", list![url]).await?;
        if let Some(name) = name {
            // The name is an eval formula that redeems the URL: after a
            // restart of this node it redeems it again.
            let source = format!(
                "E(k).redeemOcapURL({}).then(kref => E(k).getPresence(kref))",
                Json::String(url.to_string())
            );
            call(
                &client.agent,
                "evaluate",
                list![
                    Value::Undefined,
                    source,
                    Value::array([Value::from("k")]),
                    Value::array([path(KERNEL)]),
                    path(name)
                ],
            )
            .await
            .with_context(|| format!("cannot name it {name}"))?;
        }
        Ok(kref)
    })?;
    println!("{}", text(Some(&kref)));
    Ok(())
}

/// `kernel queue KREF METHOD [ARGS-JSON] [--no-wait]`: prints the result
/// as `eval` does, or with `--no-wait` the kernel promise for it. Both
/// directions are in kref form: `{"@kref": "ko4"}` in the arguments
/// stands for that object (a `kp` kref for that promise), and each object
/// and promise in the result is shown as its kref.
fn queue(
    state: &StateDir,
    as_agent: Option<&str>,
    kref: &str,
    method: &str,
    args: Option<&str>,
    no_wait: bool,
) -> anyhow::Result<()> {
    let args: Json = match args {
        Some(text) => serde_json::from_str(text).context("ARGS-JSON is not valid JSON")?,
        None => Json::Array(Vec::new()),
    };
    if !args.is_array() {
        bail!("ARGS-JSON must be a JSON array of the arguments, e.g. '[1, \"two\"]'");
    }
    let result = with_client(state, as_agent, |client| async move {
        let kernel = kernel(&client).await?;
        let operation = if no_wait { "enqueueMessage" } else { "queueMessage" };
        let options = Value::record([("krefs", Value::Boolean(true))]);
        call(&kernel, operation, list![kref, method, from_json(&args), options]).await
    })?;
    println!("{}", inspect_top(&result));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_config(text: &str) -> (tempdir::Dir, PathBuf) {
        let dir = tempdir::Dir::new();
        let file = dir.0.join("cluster.json");
        std::fs::write(&file, text).expect("write config");
        (dir, file)
    }

    /// A temporary directory without a dev-dependency.
    mod tempdir {
        pub struct Dir(pub std::path::PathBuf);
        impl Dir {
            pub fn new() -> Dir {
                use std::sync::atomic::{AtomicU32, Ordering};
                static NEXT: AtomicU32 = AtomicU32::new(0);
                let path = std::env::temp_dir().join(format!(
                    "capstan-kernel-cli-{}-{}",
                    std::process::id(),
                    NEXT.fetch_add(1, Ordering::Relaxed)
                ));
                std::fs::create_dir_all(&path).expect("temporary directory");
                Dir(path)
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    #[test]
    fn source_specs_become_absolute_and_bad_configs_name_the_file() {
        let (dir, file) = temp_config(r#"{"bootstrap": "main", "vats": {"main": {"sourceSpec": "./main.js"}}}"#);
        std::fs::write(dir.0.join("main.js"), "export const buildRootObject = () => 1;").expect("write vat");
        let config = read_config(&file).expect("a good config");
        let source = config.json["vats"]["main"]["sourceSpec"].as_str().expect("a path");
        assert!(Path::new(source).is_absolute(), "{source}");
        assert!(source.ends_with("/main.js"), "{source}");

        for (text, expected) in [
            ("{", "is not valid JSON"),
            (r#"{"bootstrap": "main"}"#, "has no \"vats\" object"),
            (
                r#"{"vats": {"main": {"sourceSpec": "./main.js"}}}"#,
                "has no \"bootstrap\"",
            ),
            (
                r#"{"bootstrap": "x", "vats": {"main": {"sourceSpec": "./main.js"}}}"#,
                "the bootstrap vat \"x\" is not among the vats (main)",
            ),
            (
                r#"{"bootstrap": "main", "vats": {"main": {"sourceSpec": "./gone.js"}}}"#,
                "vat \"main\" has sourceSpec \"./gone.js\"",
            ),
            (
                r#"{"bootstrap": "main", "vats": {"main": {}}}"#,
                "needs exactly one of sourceSpec",
            ),
            (
                r#"{"bootstrap": "main", "vats": {"main": {"sourceSpec": "./main.js", "bundleName": "b"}}}"#,
                "needs exactly one of sourceSpec",
            ),
        ] {
            std::fs::write(&file, text).expect("write config");
            let error = format!("{:#}", read_config(&file).err().expect("a bad config"));
            assert!(error.contains(&file.display().to_string()), "{error}");
            assert!(error.contains(expected), "{text}: {error}");
        }
        let missing = dir.0.join("missing.json");
        let error = format!("{:#}", read_config(&missing).err().expect("no file"));
        assert!(error.contains("cannot read the cluster config"), "{error}");
        assert!(error.contains("missing.json"), "{error}");
    }

    #[test]
    fn relative_io_paths_become_absolute_against_the_config_folder() {
        let (dir, file) = temp_config(
            r#"{"bootstrap": "main", "vats": {"main": {"sourceSpec": "./main.js"}},
                "io": {"log": {"type": "file", "path": "logs/out.log"},
                       "repl": {"type": "socket", "path": "/run/x.sock"},
                       "odd": {"type": "file", "path": 7}}}"#,
        );
        std::fs::write(dir.0.join("main.js"), "export const buildRootObject = () => 1;").expect("write vat");
        let config = read_config(&file).expect("a good config");
        let folder = std::fs::canonicalize(&dir.0).expect("folder");
        let log = config.json["io"]["log"]["path"].as_str().expect("a path");
        assert_eq!(Path::new(log), folder.join("logs/out.log"));
        assert_eq!(config.json["io"]["repl"]["path"], "/run/x.sock");
        // Left for the node to refuse, with its reason.
        assert_eq!(config.json["io"]["odd"]["path"], 7);
    }

    #[test]
    fn bundle_hashes_pass_through_and_names_are_kept_for_lookup() {
        let hash = "ab".repeat(32);
        let (_dir, file) = temp_config(&format!(
            r#"{{"bootstrap": "a", "vats": {{"a": {{"bundleSpec": "{hash}"}}, "b": {{"bundleSpec": "code.main"}},
                "c": {{"bundleName": "shared"}}}}, "bundles": {{"shared": {{"bundleSpec": "code.shared"}}}}}}"#
        ));
        let config = read_config(&file).expect("a good config");
        assert_eq!(config.json["vats"]["a"]["bundleSpec"], Json::String(hash));
        assert_eq!(
            config.named_bundles,
            vec![
                ("vats", "b".to_string(), "code.main".to_string()),
                ("bundles", "shared".to_string(), "code.shared".to_string())
            ]
        );
    }
}
