//! A node listening on port 0 gets the port it had last time back when it
//! is free (so its peers' stored addresses for it stay good), and a new
//! one when it is taken.

#![allow(clippy::expect_used, clippy::unwrap_used, reason = "a test fails by panicking")]

use std::path::PathBuf;
use std::time::Duration;

use capstan_node::net::{Multiaddr, NetConfig, Network};

/// Bounds every wait, so a broken network fails the test instead of hanging it.
const PATIENCE: Duration = Duration::from_secs(10);

/// A state directory of the test's own, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let path = std::env::temp_dir().join(format!("capstan-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("scratch directory");
        Scratch(path)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn config(listen: &str, memory: &std::path::Path) -> NetConfig {
    let address: Multiaddr = listen.parse().expect("a multiaddr");
    NetConfig {
        port_memory: Some(memory.to_path_buf()),
        ..NetConfig::listening_on([address])
    }
}

async fn started(config: NetConfig) -> Network {
    let (network, _inbound) = tokio::time::timeout(PATIENCE, Network::start(&[9; 32], config))
        .await
        .expect("the network starts in time")
        .expect("the network starts");
    network
}

fn only_address(network: &Network) -> Multiaddr {
    let addresses = network.listen_addresses();
    assert_eq!(addresses.len(), 1, "{addresses:?}");
    addresses[0].clone()
}

fn tcp_port(address: &Multiaddr) -> u16 {
    let text = address.to_string();
    let port = text.rsplit('/').next().expect("a port");
    port.parse().expect("a port number")
}

fn run<F: std::future::Future>(body: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(body)
}

#[test]
fn a_port_zero_listener_gets_its_last_port_back_unless_it_is_taken() {
    let scratch = Scratch::new("net-ports");
    let memory = scratch.0.join("listen-ports");
    run(async {
        let first = started(config("/ip4/127.0.0.1/tcp/0", &memory)).await;
        let address = only_address(&first);
        let port = tcp_port(&address);
        assert_ne!(port, 0);
        first.shutdown().await;

        // Restarted: the same address.
        let second = started(config("/ip4/127.0.0.1/tcp/0", &memory)).await;
        assert_eq!(only_address(&second), address);
        second.shutdown().await;

        // Someone else holds the port: a new one, and no failure.
        let squatter = std::net::TcpListener::bind(("127.0.0.1", port)).expect("take the port");
        let third = started(config("/ip4/127.0.0.1/tcp/0", &memory)).await;
        let moved = only_address(&third);
        assert_ne!(tcp_port(&moved), port);
        third.shutdown().await;
        drop(squatter);

        // The new port is the one kept now, and peers reach the node there.
        let fourth = started(config("/ip4/127.0.0.1/tcp/0", &memory)).await;
        assert_eq!(only_address(&fourth), moved);
        let (client, _inbound) = Network::start(&[10; 32], NetConfig::default())
            .await
            .expect("the client starts");
        let opened = tokio::time::timeout(PATIENCE, client.open_stream(&fourth.node_id(), &[moved])).await;
        assert!(
            matches!(opened, Ok(Ok(_))),
            "the restarted node cannot be reached at its kept address"
        );
        client.shutdown().await;
        fourth.shutdown().await;
    });
}

#[test]
fn a_fixed_port_and_a_damaged_memory_file_are_left_alone() {
    let scratch = Scratch::new("net-ports-fixed");
    let memory = scratch.0.join("listen-ports");
    std::fs::write(&memory, "not a multiaddr at all\n/ip4/127.0.0.1/tcp/0 notaport\n").expect("damage");
    run(async {
        // A damaged file only means a new port.
        let first = started(config("/ip4/127.0.0.1/tcp/0", &memory)).await;
        let port = tcp_port(&only_address(&first));
        first.shutdown().await;
        // An address with a port of its own is not remembered or changed.
        let fixed = format!("/ip4/127.0.0.1/tcp/{port}");
        let second = started(config(&fixed, &memory)).await;
        assert_eq!(only_address(&second).to_string(), fixed);
        second.shutdown().await;
        let kept = std::fs::read_to_string(&memory).expect("the memory file");
        assert_eq!(kept, "", "only port-0 addresses are kept");
    });
}
