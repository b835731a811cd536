//! A peer node in another process is killed (SIGKILL, no goodbye): the
//! CapTP session to it must end within a bounded time, over TCP (the
//! kernel closes the socket) and over QUIC (nothing is sent; the idle
//! timeout and pings notice).
//!
//! The peer is this test binary run again with `CAPSTAN_NET_PEER` set, so
//! that only `peer_process_entry_point` runs in it.

#![allow(clippy::expect_used, clippy::unwrap_used, reason = "a test fails by panicking")]

use std::cell::Cell;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::rc::Rc;
use std::time::{Duration, Instant};

use capstan_node::net::{Multiaddr, NetConfig, Network};
use capstan_node::runtime::{E, Exo, Vat, connect, when};
use capstan_protocol::captp::Limits;
use capstan_protocol::{Value, list};
use capstan_store::NodeId;

const PEER_ENV: &str = "CAPSTAN_NET_PEER";

/// The peer gives up by itself after this long, in case nobody kills it.
const PEER_LIFETIME: Duration = Duration::from_secs(60);

/// Not a test of its own: the body of the peer process (does nothing
/// unless `CAPSTAN_NET_PEER` names the address to listen on).
#[test]
fn peer_process_entry_point() {
    let Ok(listen) = std::env::var(PEER_ENV) else {
        return;
    };
    // The parent closing our stdin (it died) ends us too.
    std::thread::spawn(|| {
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        std::process::exit(0);
    });
    let vat = Vat::new();
    vat.run_until(async {
        let listen: Multiaddr = listen.parse().expect("listen address");
        let (net, mut inbound) = Network::start(&[72; 32], NetConfig::listening_on([listen]))
            .await
            .expect("peer network starts");
        let count = Rc::new(Cell::new(0.0));
        let counter = Exo::new("Counter")
            .method("incr", move |_, _| {
                count.set(count.get() + 1.0);
                Ok(Value::Number(count.get()))
            })
            .make()
            .expect("counter");
        let server = Vat::current().expect("the vat");
        server.clone().spawn(async move {
            while let Some(stream) = inbound.next().await {
                let _ = connect(
                    &server,
                    stream.reader,
                    stream.writer,
                    Some(counter.clone()),
                    Limits::default(),
                );
            }
        });
        let address = net.listen_addresses().first().cloned().expect("an address");
        let mut stdout = std::io::stdout();
        // libtest has written "test ... " without a newline; start afresh.
        let _ = writeln!(stdout, "\nREADY {} {}", net.node_id(), address);
        let _ = stdout.flush();
        tokio::time::sleep(PEER_LIFETIME).await;
    });
}

/// The peer process; killed when dropped, whatever happens in the test.
struct Peer {
    child: ChildGuard,
    node: NodeId,
    address: Multiaddr,
}

impl Peer {
    fn spawn(listen: &str) -> Peer {
        let program = std::env::current_exe().expect("the test binary");
        let child = Command::new(program)
            .args(["--exact", "peer_process_entry_point", "--nocapture", "--test-threads=1"])
            .env(PEER_ENV, listen)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("the peer process starts");
        // Owned by a guard at once, so any failure below still kills it.
        let mut guard = ChildGuard(child);
        let stdout = guard.0.stdout.take().expect("its stdout");
        for line in BufReader::new(stdout).lines() {
            let line = line.expect("a line from the peer");
            let mut words = line.split_whitespace();
            if words.next() == Some("READY") {
                let node = words
                    .next()
                    .and_then(|word| word.parse().ok())
                    .expect("the peer's node id");
                let address = words
                    .next()
                    .and_then(|word| word.parse().ok())
                    .expect("the peer's address");
                return Peer {
                    child: guard,
                    node,
                    address,
                };
            }
        }
        panic!("the peer process ended before it was ready");
    }

    fn kill(&mut self) {
        self.child.0.kill().expect("kill the peer");
        let _ = self.child.0.wait();
    }
}

/// Kills and reaps the child when dropped.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn killing_the_peer_ends_the_session(listen: &str, bound: Duration) {
    let mut peer = Peer::spawn(listen);
    let vat = Vat::new();
    vat.run_until(async move {
        let config = NetConfig {
            ping_interval: Duration::from_millis(500),
            ping_timeout: Duration::from_secs(1),
            quic_max_idle_timeout: Duration::from_secs(1),
            ..NetConfig::default()
        };
        let (net, _inbound) = Network::start(&[71; 32], config).await.expect("network starts");
        let stream = net.open_stream(&peer.node, std::slice::from_ref(&peer.address)).await;
        let (reader, writer) = stream.expect("stream to the peer process");
        let session = connect(&Vat::current().expect("vat"), reader, writer, None, Limits::default());
        let counter = session.bootstrap();
        let first = when(&E(&counter).call("incr", list![]))
            .await
            .expect("the peer answers");
        assert_eq!(first.as_number(), Some(1.0));

        let pending = E(&counter).call("never", list![]);
        let began = Instant::now();
        peer.kill();
        let reason = tokio::time::timeout(bound * 2, session.closed())
            .await
            .expect("the session ends after the peer is killed");
        let took = began.elapsed();
        assert!(took < bound, "the session took {took:?} to end ({reason})");
        assert!(when(&pending).await.is_err());
        drop(peer);
    });
}

#[test]
fn killing_the_peer_process_ends_the_session_over_tcp() {
    killing_the_peer_ends_the_session("/ip4/127.0.0.1/tcp/0", Duration::from_secs(3));
}

#[test]
fn killing_the_peer_process_ends_the_session_over_quic() {
    killing_the_peer_ends_the_session("/ip4/127.0.0.1/udp/0/quic-v1", Duration::from_secs(5));
}
