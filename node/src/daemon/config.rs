//! The node's config file, `config.toml` in its state directory: where
//! to listen, the system subclusters to launch and keep, and the quotas
//! and limits that keep peers in check. A missing file (or section, or
//! key) means the defaults; a malformed one stops the node with a message
//! naming the file.
//!
//! ```toml
//! listen = ["/ip4/0.0.0.0/tcp/4001"]
//!
//! [[system_subclusters]]
//! name = "clock"
//! config = "clock/cluster.json"   # relative to this file
//!
//! [mail]                  # per sending peer, per agent
//! held_messages = 1000
//!
//! [peers]                 # per peer unless named "total"
//! calls_per_second = 100000
//!
//! [gc]                    # the formula collector
//! grace_seconds = 10
//!
//! relays = ["/ip4/203.0.113.7/tcp/4001/p2p/12D3KooW..."]  # keep reservations
//!
//! [relay]                 # serve as a relay for other nodes
//! service = true
//! circuit_bytes = 67108864
//!
//! [web]                   # web apps, on 127.0.0.1 (default: a port
//! port = 41233            # picked once, kept in <state>/web-port)
//! ```

use std::path::{Path, PathBuf};

use std::time::Duration;

use serde::Deserialize;

use super::DaemonError;
use crate::kernel::{ClusterConfig, SystemSubclusterConfig};
use crate::net::RelayLimits;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    #[serde(default)]
    listen: Vec<String>,
    #[serde(default)]
    local: bool,
    #[serde(default)]
    system_subclusters: Vec<SystemEntry>,
    #[serde(default)]
    mail: MailQuotas,
    #[serde(default)]
    peers: PeerLimits,
    #[serde(default)]
    gc: GcOptions,
    #[serde(default)]
    relays: Vec<String>,
    #[serde(default)]
    relay: RelayOptions,
    #[serde(default)]
    web: WebOptions,
}

/// `[web]`: the loopback HTTP port web apps are served on (see
/// `daemon::web`). Without it the node picks a free port on first start
/// and keeps it in `<state>/web-port`, so app URLs stay the same across
/// restarts.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct WebOptions {
    pub port: Option<u16>,
}

/// `[relay]`: whether this node serves as a relay for others (as
/// `--relay-service` does), and within what limits.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct RelayOptions {
    pub service: bool,
    /// Reservations held at once, from all nodes.
    pub reservations: usize,
    /// Reservations one node may hold at once.
    pub reservations_per_peer: usize,
    /// How long a reservation lasts before the node must renew it.
    pub reservation_seconds: u64,
    /// Circuits open at once.
    pub circuits: usize,
    /// Circuits one node may have open at once.
    pub circuits_per_peer: usize,
    /// How long one circuit may stay open.
    pub circuit_seconds: u64,
    /// Bytes one circuit may carry.
    pub circuit_bytes: u64,
}

impl Default for RelayOptions {
    fn default() -> RelayOptions {
        let limits = RelayLimits::default();
        RelayOptions {
            service: false,
            reservations: limits.reservations,
            reservations_per_peer: limits.reservations_per_peer,
            reservation_seconds: limits.reservation_duration.as_secs(),
            circuits: limits.circuits,
            circuits_per_peer: limits.circuits_per_peer,
            circuit_seconds: limits.circuit_duration.as_secs(),
            circuit_bytes: limits.circuit_bytes,
        }
    }
}

impl RelayOptions {
    /// The limits the network layer takes.
    pub fn limits(&self) -> RelayLimits {
        RelayLimits {
            reservations: self.reservations,
            reservations_per_peer: self.reservations_per_peer,
            reservation_duration: Duration::from_secs(self.reservation_seconds),
            circuits: self.circuits,
            circuits_per_peer: self.circuits_per_peer,
            circuit_duration: Duration::from_secs(self.circuit_seconds),
            circuit_bytes: self.circuit_bytes,
        }
    }
}

/// `[gc]`: when the formula collector runs and what it spares.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct GcOptions {
    /// A formula made (or a value made from one) this recently is never
    /// collected: it may be between its making and its naming or export.
    pub grace_seconds: u64,
    /// A collection runs this long after the last change that can free
    /// something (a name removed, a message dismissed, a value cancelled).
    pub delay_ms: u64,
}

impl Default for GcOptions {
    fn default() -> GcOptions {
        GcOptions {
            grace_seconds: 10,
            delay_ms: 1000,
        }
    }
}

/// `[mail]`: what one peer may put in this node's mailboxes. Over any of
/// them the sender gets a clear error and the store is untouched.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct MailQuotas {
    /// Messages from one peer held (not yet dismissed) in one agent's inbox.
    pub held_messages: u64,
    /// Largest message a peer may deliver (its strings, names and ids).
    pub message_bytes: u64,
    /// Bytes of messages from one peer held in one agent's inbox.
    pub held_bytes: u64,
    /// Messages and requests one peer may deliver per second (a burst of
    /// this many is allowed).
    pub messages_per_second: u32,
    /// Requests from one peer waiting for an answer at once.
    pub pending_requests: u32,
}

impl Default for MailQuotas {
    fn default() -> MailQuotas {
        MailQuotas {
            held_messages: 1000,
            message_bytes: 256 << 10,
            held_bytes: 16 << 20,
            messages_per_second: 20,
            pending_requests: 64,
        }
    }
}

/// `[peers]`: bounds on what one peer (or all of them) may make this node
/// hold. Generous for honest use; a peer over one is cut off, with the
/// reason in the log.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct PeerLimits {
    /// Bytes queued for a peer that is not reading them; past this the
    /// session is ended.
    pub outbound_queue_bytes: u64,
    /// Calls from a peer that we have not answered yet (per session).
    pub answers_in_flight: u32,
    /// Our calls to a peer that it has not answered yet (per session).
    pub questions_in_flight: u32,
    /// Entries in a session's import and export tables, each.
    pub table_entries: u32,
    /// Calls a peer may make per second (a burst of this many is allowed);
    /// beyond it its session is read more slowly.
    pub calls_per_second: u32,
    /// Streams one peer may have open to us at once.
    pub inbound_streams: u32,
    /// Connections one peer may have with us at once.
    pub connections: u32,
    /// Connections with all peers at once.
    pub connections_total: u32,
    /// Connections being set up (handshakes) at once.
    pub pending_connections: u32,
    /// How long a new session with a peer reached only through a relay
    /// waits for a hole punch to give a direct connection.
    pub hole_punch_wait_ms: u64,
    /// After a failed hole punch, when to try again (doubling each time).
    pub hole_punch_retry_ms: u64,
}

impl Default for PeerLimits {
    fn default() -> PeerLimits {
        PeerLimits {
            outbound_queue_bytes: 64 << 20,
            answers_in_flight: 1 << 16,
            questions_in_flight: 1 << 16,
            table_entries: 1 << 20,
            calls_per_second: 100_000,
            inbound_streams: 64,
            connections: 8,
            connections_total: 1024,
            pending_connections: 128,
            hole_punch_wait_ms: 500,
            hole_punch_retry_ms: 10_000,
        }
    }
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
    /// Listen on loopback only when no addresses are given.
    pub local: bool,
    pub system_subclusters: Vec<SystemSubclusterConfig>,
    pub mail: MailQuotas,
    pub peers: PeerLimits,
    pub gc: GcOptions,
    /// Relays to keep a reservation on, beside those given to `start`.
    pub relays: Vec<String>,
    pub relay: RelayOptions,
    pub web: WebOptions,
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
            local: file.local,
            system_subclusters,
            mail: file.mail,
            peers: file.peers,
            gc: file.gc,
            relays: file.relays,
            relay: file.relay,
            web: file.web,
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
        assert_eq!(config.mail, MailQuotas::default());
        let crate::kernel::VatSource::File(source) = &config.system_subclusters[0].config.vats["a"].source else {
            panic!("not a file source");
        };
        assert_eq!(source, &dir.join("./a.js").canonicalize().unwrap_or(dir.join("a.js")));

        std::fs::write(&path, "[mail]\nheld_messages = 5\n[peers]\nconnections = 2\n").unwrap();
        let config = NodeConfig::read(&path).unwrap();
        assert_eq!(config.mail.held_messages, 5);
        assert_eq!(config.mail.message_bytes, MailQuotas::default().message_bytes);
        assert_eq!(config.peers.connections, 2);
        assert_eq!(config.gc, GcOptions::default());
        std::fs::write(&path, "[gc]\ngrace_seconds = 0\n").unwrap();
        assert_eq!(NodeConfig::read(&path).unwrap().gc.grace_seconds, 0);
        assert_eq!(config.relay, RelayOptions::default());
        std::fs::write(
            &path,
            "relays = [\"/ip4/10.0.0.1/tcp/1/p2p/x\"]\n[relay]\nservice = true\nreservations = 2\n",
        )
        .unwrap();
        let config = NodeConfig::read(&path).unwrap();
        assert!(config.relay.service);
        assert_eq!(config.relay.limits().reservations, 2);
        assert_eq!(config.relays.len(), 1);
        std::fs::write(&path, "[mail]\nheld_mesages = 5\n").unwrap();
        let error = NodeConfig::read(&path).unwrap_err().to_string();
        assert!(error.contains("held_mesages"), "{error}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
