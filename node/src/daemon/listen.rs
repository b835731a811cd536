//! Where a node listens for peers: the user's addresses (`--listen`, else
//! the config file's `listen`), loopback only (`--local` or
//! `local = true`), or by default every interface, IPv4 and IPv6, TCP and
//! QUIC, all on one port chosen at the first start and kept in
//! `<state>/listen-port`, so that an invitation made today still reaches
//! the node after a restart and one port is all a router must forward.

use std::net::{Ipv4Addr, TcpListener, UdpSocket};
use std::path::Path;

use super::NodeOptions;
use super::config::NodeConfig;

/// Where a node listens with `--local` (or `local = true`): loopback, a
/// port kept across restarts.
pub const LOCAL_LISTEN_ADDRESS: &str = "/ip4/127.0.0.1/tcp/0";

/// Tries at finding a port free for both TCP and UDP.
const PORT_PICKS: usize = 16;

/// The addresses to listen on, and whether they are the defaults (bound
/// on a best-effort basis: see `NetConfig::listen_best_effort`).
pub(super) fn listen_plan(options: &NodeOptions, config: &NodeConfig) -> (Vec<String>, bool) {
    if !options.listen_addresses.is_empty() {
        return (options.listen_addresses.clone(), false);
    }
    if options.local {
        return (vec![LOCAL_LISTEN_ADDRESS.to_string()], false);
    }
    if !config.listen.is_empty() {
        return (config.listen.clone(), false);
    }
    if config.local {
        return (vec![LOCAL_LISTEN_ADDRESS.to_string()], false);
    }
    let port = kept_port(&options.paths.root.join("listen-port"));
    (default_addresses(port), true)
}

/// Every interface, IPv4 and IPv6, TCP and QUIC, on `port`.
fn default_addresses(port: u16) -> Vec<String> {
    vec![
        format!("/ip4/0.0.0.0/tcp/{port}"),
        format!("/ip6/::/tcp/{port}"),
        format!("/ip4/0.0.0.0/udp/{port}/quic-v1"),
        format!("/ip6/::/udp/{port}/quic-v1"),
    ]
}

/// The port kept in `path`, or a new one free for TCP and UDP, kept there.
/// Port 0 (any) if none can be found or kept.
fn kept_port(path: &Path) -> u16 {
    if let Some(port) = std::fs::read_to_string(path)
        .ok()
        .and_then(|text| text.trim().parse::<u16>().ok())
        .filter(|port| *port != 0)
    {
        return port;
    }
    let Some(port) = free_port() else {
        tracing::warn!("found no port free for both TCP and UDP; listening on new ports");
        return 0;
    };
    if let Err(error) = std::fs::write(path, format!("{port}\n")) {
        tracing::warn!(path = %path.display(), %error, "cannot keep the listen port");
    }
    port
}

fn free_port() -> Option<u16> {
    (0..PORT_PICKS).find_map(|_| {
        let tcp = TcpListener::bind((Ipv4Addr::UNSPECIFIED, 0)).ok()?;
        let port = tcp.local_addr().ok()?.port();
        UdpSocket::bind((Ipv4Addr::UNSPECIFIED, port)).ok().map(|_| port)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_port_is_picked_once_and_kept() {
        let directory = std::env::temp_dir().join(format!("capstan-listen-{}", std::process::id()));
        std::fs::create_dir_all(&directory).unwrap();
        let path = directory.join("listen-port");
        let first = kept_port(&path);
        assert_ne!(first, 0);
        assert_eq!(kept_port(&path), first);
        assert!(
            default_addresses(first)
                .iter()
                .all(|address| address.contains(&first.to_string()))
        );
        std::fs::remove_dir_all(&directory).unwrap();
    }
}
