//! The node's config file, `config.toml` in its state directory: where
//! to listen, and the system subclusters to launch and keep. A missing
//! file means the defaults; a malformed one stops the node with a message
//! naming the file.
//!
//! ```toml
//! listen = ["/ip4/0.0.0.0/tcp/4001"]
//!
//! [[system_subclusters]]
//! name = "clock"
//! config = "clock/cluster.json"   # relative to this file
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::DaemonError;
use crate::kernel::{ClusterConfig, SystemSubclusterConfig};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    #[serde(default)]
    listen: Vec<String>,
    #[serde(default)]
    system_subclusters: Vec<SystemEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SystemEntry {
    name: String,
    config: PathBuf,
}

/// What the config file says.
#[derive(Debug, Default)]
pub struct NodeConfig {
    /// libp2p addresses to listen on when `start` is given none.
    pub listen: Vec<String>,
    pub system_subclusters: Vec<SystemSubclusterConfig>,
}

impl NodeConfig {
    /// Reads `path`; a missing file is the default config.
    pub fn read(path: &Path) -> Result<NodeConfig, DaemonError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(NodeConfig::default()),
            Err(error) => {
                return Err(DaemonError::ConfigUnreadable {
                    path: path.display().to_string(),
                    source: error,
                });
            }
        };
        let file: ConfigFile = toml::from_str(&text).map_err(|error| DaemonError::ConfigInvalid {
            path: path.display().to_string(),
            detail: error.to_string(),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let mut system_subclusters = Vec::with_capacity(file.system_subclusters.len());
        for entry in file.system_subclusters {
            if system_subclusters
                .iter()
                .any(|known: &SystemSubclusterConfig| known.name == entry.name)
            {
                return Err(DaemonError::SubclusterDeclaredTwice {
                    path: path.display().to_string(),
                    name: entry.name,
                });
            }
            let config_path = base.join(&entry.config);
            let config =
                ClusterConfig::from_json_file(&config_path).map_err(|error| DaemonError::SubclusterConfig {
                    path: path.display().to_string(),
                    name: entry.name.clone(),
                    detail: error.to_string(),
                })?;
            system_subclusters.push(SystemSubclusterConfig {
                name: entry.name,
                config,
            });
        }
        Ok(NodeConfig {
            listen: file.listen,
            system_subclusters,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_file_is_the_default_and_bad_files_are_named() {
        let dir = std::env::temp_dir().join(format!("capstan-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("config.toml");
        let config = NodeConfig::read(&path).unwrap();
        assert!(config.listen.is_empty() && config.system_subclusters.is_empty());

        std::fs::write(&path, "listen = 3").unwrap();
        let error = NodeConfig::read(&path).unwrap_err().to_string();
        assert!(error.contains("config.toml"), "{error}");

        std::fs::write(
            dir.join("c.json"),
            r#"{"bootstrap":"a","vats":{"a":{"sourceSpec":"a.js"}}}"#,
        )
        .unwrap();
        std::fs::write(
            &path,
            "listen = [\"/ip4/127.0.0.1/tcp/0\"]\n[[system_subclusters]]\nname = \"x\"\nconfig = \"c.json\"\n",
        )
        .unwrap();
        let config = NodeConfig::read(&path).unwrap();
        assert_eq!(config.listen, vec!["/ip4/127.0.0.1/tcp/0".to_string()]);
        assert_eq!(config.system_subclusters[0].name, "x");
        let crate::kernel::VatSource::File(source) = &config.system_subclusters[0].config.vats["a"].source else {
            panic!("not a file source");
        };
        assert_eq!(source, &dir.join("./a.js").canonicalize().unwrap_or(dir.join("a.js")));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
