//! The ports a node picked for its port-0 listen addresses, kept in a small
//! text file so the next start can ask for the same ones: a node on a
//! laptop listening on `/ip4/127.0.0.1/tcp/0` keeps its address across
//! restarts, and so its peers' stored addresses for it stay good.
//!
//! One line per configured address: `{configured multiaddr} {port}`. A
//! missing, unreadable or damaged file only means new ports are picked.

use std::collections::HashMap;
use std::path::Path;

use libp2p::Multiaddr;
use libp2p::multiaddr::Protocol;

/// Most lines read from the file (it holds one per listen address).
const MAX_LINES: usize = 64;

/// The port-0 addresses' remembered ports, by configured address.
pub(crate) fn read(path: &Path) -> HashMap<Multiaddr, u16> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return HashMap::new();
    };
    text.lines()
        .take(MAX_LINES)
        .filter_map(|line| {
            let (address, port) = line.trim().rsplit_once(' ')?;
            let address: Multiaddr = address.parse().ok()?;
            let port: u16 = port.parse().ok()?;
            (port != 0 && port_of(&address) == Some(0)).then_some((address, port))
        })
        .collect()
}

/// Keeps the ports bound for port-0 addresses (replacing the file whole,
/// so a crash leaves the old file or the new one).
pub(crate) fn write(path: &Path, ports: &[(Multiaddr, u16)]) -> std::io::Result<()> {
    let mut text = String::new();
    for (address, port) in ports {
        text.push_str(&format!("{address} {port}\n"));
    }
    let temporary = path.with_extension("tmp");
    std::fs::write(&temporary, text)?;
    std::fs::rename(&temporary, path)
}

/// The TCP or UDP port of an address.
pub(crate) fn port_of(address: &Multiaddr) -> Option<u16> {
    address.iter().find_map(|protocol| match protocol {
        Protocol::Tcp(port) | Protocol::Udp(port) => Some(port),
        _ => None,
    })
}

/// `address` with its TCP or UDP port replaced by `port`.
pub(crate) fn with_port(address: &Multiaddr, port: u16) -> Multiaddr {
    address
        .iter()
        .map(|protocol| match protocol {
            Protocol::Tcp(_) => Protocol::Tcp(port),
            Protocol::Udp(_) => Protocol::Udp(port),
            other => other,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn address(text: &str) -> Multiaddr {
        text.parse().expect("multiaddr")
    }

    #[test]
    fn ports_are_replaced_in_tcp_and_quic_addresses() {
        let tcp = address("/ip4/127.0.0.1/tcp/0");
        assert_eq!(with_port(&tcp, 4001), address("/ip4/127.0.0.1/tcp/4001"));
        let quic = address("/ip4/0.0.0.0/udp/0/quic-v1");
        assert_eq!(with_port(&quic, 4002), address("/ip4/0.0.0.0/udp/4002/quic-v1"));
        assert_eq!(port_of(&quic), Some(0));
    }

    #[test]
    fn the_file_keeps_only_port_zero_addresses_and_ignores_damage() {
        let path = std::env::temp_dir().join(format!("capstan-ports-test-{}", std::process::id()));
        let tcp = address("/ip4/127.0.0.1/tcp/0");
        write(&path, &[(tcp.clone(), 4001)]).expect("write");
        let mut text = std::fs::read_to_string(&path).expect("read back");
        text.push_str("garbage\n/ip4/127.0.0.1/tcp/7 8\n/ip4/127.0.0.1/udp/0/quic-v1 99999\n");
        std::fs::write(&path, text).expect("damage");
        let ports = read(&path);
        let _ = std::fs::remove_file(&path);
        assert_eq!(ports, HashMap::from([(tcp, 4001)]));
        assert!(read(&path).is_empty());
    }
}
