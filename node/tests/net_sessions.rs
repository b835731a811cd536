//! The libp2p layer carrying CapTP between two nodes in one process, over
//! TCP and over QUIC on loopback: sessions, authenticated remotes, wrong
//! and unreachable peers, the inbound stream cap, and a network going away.
//!
//! Each network runs on its own thread; the vats (and so every stream read
//! and write) run on the test's current-thread runtime, as in the daemon.

#![allow(clippy::expect_used, clippy::unwrap_used, reason = "a test fails by panicking")]

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::rc::Rc;
use std::time::{Duration, Instant};

use capstan_node::net::{
    InboundStreams, Multiaddr, NetConfig, NetError, Network, StreamReader, StreamWriter, keypair_from_seed, node_id_of,
};
use capstan_node::runtime::{ConnectionHandle, E, Exo, Vat, connect, when};
use capstan_protocol::captp::Limits;
use capstan_protocol::{Value, list};
use capstan_store::NodeId;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Bounds every wait, so a broken network fails the test instead of hanging it.
const PATIENCE: Duration = Duration::from_secs(10);

fn seed(byte: u8) -> [u8; 32] {
    [byte; 32]
}

/// The node id of the node whose seed is all `byte`s.
fn node_id(byte: u8) -> NodeId {
    let keypair = keypair_from_seed(&seed(byte)).expect("keypair");
    node_id_of(&keypair.public().to_peer_id()).expect("a node id")
}

fn address(text: &str) -> Multiaddr {
    text.parse().expect("a multiaddr")
}

fn tcp() -> Multiaddr {
    address("/ip4/127.0.0.1/tcp/0")
}

fn quic() -> Multiaddr {
    address("/ip4/127.0.0.1/udp/0/quic-v1")
}

async fn start(byte: u8, config: NetConfig) -> (Network, InboundStreams) {
    Network::start(&seed(byte), config).await.expect("network starts")
}

async fn within<F: Future>(what: &str, future: F) -> F::Output {
    match tokio::time::timeout(PATIENCE, future).await {
        Ok(output) => output,
        Err(_) => panic!("{what} took longer than {PATIENCE:?}"),
    }
}

/// Runs `body` with two vats, alice (current) and bob, on one
/// current-thread runtime.
fn with_vats<F: Future + 'static>(body: impl FnOnce(Vat, Vat) -> F) -> F::Output {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async move {
        let (alice, bob) = (Vat::new(), Vat::new());
        alice.spawn(alice.clone().drive());
        bob.spawn(bob.clone().drive());
        alice.spawn(body(alice.clone(), bob.clone())).await.expect("test body")
    })
}

fn counter(vat: &Vat) -> Value {
    vat.enter(|| {
        let count = Rc::new(Cell::new(0.0));
        Exo::new("Counter")
            .method("incr", move |_, _| {
                count.set(count.get() + 1.0);
                Ok(Value::Number(count.get()))
            })
            .make()
            .expect("counter")
    })
}

type Sessions = Rc<RefCell<Vec<(NodeId, ConnectionHandle)>>>;

/// Serves `bootstrap` on every inbound stream, in `vat`; records who came.
fn serve(vat: &Vat, mut inbound: InboundStreams, bootstrap: Value) -> Sessions {
    let sessions: Sessions = Rc::default();
    let record = sessions.clone();
    let server = vat.clone();
    vat.spawn(async move {
        while let Some(stream) = inbound.next().await {
            let handle = connect(
                &server,
                stream.reader,
                stream.writer,
                Some(bootstrap.clone()),
                Limits::default(),
            );
            record.borrow_mut().push((stream.remote, handle));
        }
    });
    sessions
}

fn client(vat: &Vat, (reader, writer): (StreamReader, StreamWriter)) -> ConnectionHandle {
    connect(vat, reader, writer, None, Limits::default())
}

async fn incr(session: &ConnectionHandle) -> f64 {
    let counter = session.bootstrap();
    let result = within("a call across the network", when(&E(&counter).call("incr", list![]))).await;
    result.expect("incr answers").as_number().expect("a number")
}

async fn eventually(what: &str, condition: impl Fn() -> bool) {
    within(what, async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

fn session_over(listen: fn() -> Multiaddr) {
    with_vats(|alice, bob| async move {
        let (alice_net, _alice_inbound) = start(1, NetConfig::listening_on([listen()])).await;
        let (bob_net, bob_inbound) = start(2, NetConfig::listening_on([listen()])).await;
        let bob_addresses = bob_net.listen_addresses();
        assert!(!bob_addresses.is_empty());
        assert!(
            bob_addresses
                .iter()
                .all(|address| !address.to_string().contains("/0/") && !address.to_string().ends_with("/0")),
            "ports are resolved: {bob_addresses:?}"
        );
        let sessions = serve(&bob, bob_inbound, counter(&bob));

        let stream = within(
            "opening a stream",
            alice_net.open_stream(&bob_net.node_id(), &bob_addresses),
        )
        .await;
        let to_bob = client(&alice, stream.expect("stream opens"));
        assert_eq!(incr(&to_bob).await, 1.0);
        assert_eq!(incr(&to_bob).await, 2.0);

        // The inbound side learned who dialed, authenticated.
        assert_eq!(sessions.borrow().len(), 1);
        assert_eq!(sessions.borrow()[0].0, alice_net.node_id());
        assert_eq!(alice_net.connected_peers(), vec![bob_net.node_id()]);
        eventually("bob seeing alice connected", || {
            bob_net.connected_peers() == vec![alice_net.node_id()]
        })
        .await;

        // A second session rides a second stream of the same connection,
        // found by node id alone.
        let stream = within(
            "opening a second stream",
            alice_net.open_stream(&bob_net.node_id(), &[]),
        )
        .await;
        let again = client(&alice, stream.expect("second stream opens"));
        assert_eq!(incr(&again).await, 3.0);
        assert_eq!(sessions.borrow().len(), 2);
        assert_eq!(incr(&to_bob).await, 4.0);
    });
}

#[test]
fn a_captp_session_runs_over_tcp() {
    session_over(tcp);
}

#[test]
fn a_captp_session_runs_over_quic() {
    session_over(quic);
}

fn wrong_node_over(listen: fn() -> Multiaddr) {
    with_vats(|_alice, _bob| async move {
        let (alice_net, _alice_inbound) = start(11, NetConfig::listening_on([])).await;
        let (bob_net, _bob_inbound) = start(12, NetConfig::listening_on([listen()])).await;
        let (carol_net, _carol_inbound) = start(13, NetConfig::listening_on([listen()])).await;
        // Alice asks for bob at carol's address.
        let outcome = within(
            "dialing the wrong node",
            alice_net.open_stream(&bob_net.node_id(), &carol_net.listen_addresses()),
        )
        .await;
        let error = outcome.err().expect("the dial must fail");
        let message = error.to_string();
        assert!(
            matches!(error, NetError::WrongPeer { expected, .. } if expected == bob_net.node_id()),
            "{message}"
        );
        assert!(message.contains(&bob_net.node_id().to_string()), "{message}");
        assert!(message.contains(&carol_net.node_id().to_string()), "{message}");
        assert!(alice_net.connected_peers().is_empty());
    });
}

#[test]
fn dialing_a_node_where_another_listens_fails_naming_both_over_tcp() {
    wrong_node_over(tcp);
}

#[test]
fn dialing_a_node_where_another_listens_fails_naming_both_over_quic() {
    wrong_node_over(quic);
}

#[test]
fn an_unreachable_node_fails_within_the_dial_timeout() {
    with_vats(|_alice, _bob| async move {
        let config = NetConfig {
            dial_timeout: Duration::from_millis(500),
            ..NetConfig::listening_on([])
        };
        let (alice_net, _alice_inbound) = start(21, config).await;
        let bob = node_id(22);
        let named = |error: &NetError| error.to_string().contains(&bob.to_string());

        // Something accepts TCP there but never speaks.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("silent listener");
        let silent_port = silent.local_addr().expect("port").port();
        let began = Instant::now();
        let outcome = within(
            "dialing a silent address",
            alice_net.open_stream(&bob, &[address(&format!("/ip4/127.0.0.1/tcp/{silent_port}"))]),
        )
        .await;
        let error = outcome.err().expect("a silent peer cannot be reached");
        assert!(
            matches!(error, NetError::DialTimeout { node, .. } if node == bob),
            "{error}"
        );
        assert!(named(&error), "{error}");
        assert!(began.elapsed() < Duration::from_secs(3), "took {:?}", began.elapsed());

        // QUIC to a UDP socket that never answers.
        let silent_udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("silent socket");
        let udp_port = silent_udp.local_addr().expect("port").port();
        let began = Instant::now();
        let outcome = within(
            "dialing a silent QUIC address",
            alice_net.open_stream(&bob, &[address(&format!("/ip4/127.0.0.1/udp/{udp_port}/quic-v1"))]),
        )
        .await;
        let error = outcome.err().expect("a silent QUIC peer cannot be reached");
        assert!(named(&error), "{error}");
        assert!(began.elapsed() < Duration::from_secs(3), "took {:?}", began.elapsed());

        // Nothing listens there: refused at once.
        let closed_port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listener");
            listener.local_addr().expect("port").port()
        };
        let outcome = within(
            "dialing a closed port",
            alice_net.open_stream(&bob, &[address(&format!("/ip4/127.0.0.1/tcp/{closed_port}"))]),
        )
        .await;
        let error = outcome.err().expect("a closed port cannot be reached");
        assert!(named(&error), "{error}");

        // No address at all.
        let stranger = node_id(23);
        let error = alice_net.open_stream(&stranger, &[]).await.err().expect("no address");
        assert!(
            matches!(error, NetError::NoAddresses { node } if node == stranger),
            "{error}"
        );
        drop(silent);
    });
}

/// Reads until the stream ends: `true` if it ended (end of file or reset).
async fn ends(reader: &mut StreamReader) -> bool {
    let mut buffer = [0u8; 64];
    let read = tokio::time::timeout(PATIENCE, reader.read(&mut buffer)).await;
    matches!(read, Ok(Ok(0)) | Ok(Err(_)))
}

fn stream_cap_over(listen: fn() -> Multiaddr) {
    with_vats(|alice, bob| async move {
        let config = NetConfig {
            max_inbound_streams_per_peer: 2,
            ..NetConfig::listening_on([listen()])
        };
        let (alice_net, _alice_inbound) = start(31, NetConfig::listening_on([])).await;
        let (bob_net, bob_inbound) = start(32, config).await;
        let sessions = serve(&bob, bob_inbound, counter(&bob));
        let (bob_id, bob_addresses) = (bob_net.node_id(), bob_net.listen_addresses());

        let first = client(
            &alice,
            alice_net.open_stream(&bob_id, &bob_addresses).await.expect("first"),
        );
        let second = client(&alice, alice_net.open_stream(&bob_id, &[]).await.expect("second"));
        assert_eq!(incr(&first).await, 1.0);
        assert_eq!(incr(&second).await, 2.0);

        // Over the cap: the stream opens, then is reset at once (opening
        // fails if the reset comes before its token is written).
        for _ in 0..2 {
            if let Ok((mut reader, mut writer)) = alice_net.open_stream(&bob_id, &[]).await {
                assert!(ends(&mut reader).await, "a stream over the cap must be reset");
                let _ = writer.shutdown().await;
            }
        }
        assert_eq!(sessions.borrow().len(), 2);

        // The streams under the cap are untouched.
        assert_eq!(incr(&first).await, 3.0);
        assert_eq!(incr(&second).await, 4.0);

        // Closing one gives its slot back.
        first.close("done with it");
        within("the first session to close", first.closed()).await;
        let bob_side = sessions.borrow()[0].1.clone();
        within("bob's side of it to close", bob_side.closed()).await;
        let mut third = None;
        for _ in 0..50 {
            let stream = client(&alice, alice_net.open_stream(&bob_id, &[]).await.expect("third"));
            let counter = stream.bootstrap();
            let reply = tokio::time::timeout(PATIENCE, when(&E(&counter).call("incr", list![]))).await;
            if let Ok(Ok(value)) = reply {
                third = value.as_number();
                break;
            }
            // Bob had not let go of the closed stream yet.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(third, Some(5.0));
        assert_eq!(incr(&second).await, 6.0);
    });
}

#[test]
fn inbound_streams_beyond_the_cap_are_reset_over_tcp() {
    stream_cap_over(tcp);
}

#[test]
fn inbound_streams_beyond_the_cap_are_reset_over_quic() {
    stream_cap_over(quic);
}

fn network_going_away_over(listen: fn() -> Multiaddr) {
    with_vats(|alice, bob| async move {
        let (alice_net, _alice_inbound) = start(41, NetConfig::listening_on([])).await;
        let (bob_net, bob_inbound) = start(42, NetConfig::listening_on([listen()])).await;
        let sessions = serve(&bob, bob_inbound, counter(&bob));
        let stream = alice_net
            .open_stream(&bob_net.node_id(), &bob_net.listen_addresses())
            .await;
        let to_bob = client(&alice, stream.expect("stream opens"));
        assert_eq!(incr(&to_bob).await, 1.0);
        let to_alice = sessions.borrow()[0].1.clone();

        let began = Instant::now();
        drop(bob_net);
        let reason = within("alice's session to end", to_bob.closed()).await;
        assert!(began.elapsed() < Duration::from_secs(5), "took {:?}", began.elapsed());
        assert!(!reason.is_empty());
        within("bob's own session to end", to_alice.closed()).await;
        let after = when(&E(&to_bob.bootstrap()).call("incr", list![])).await;
        assert!(after.is_err(), "{after:?}");
        eventually("alice to see bob gone", || alice_net.connected_peers().is_empty()).await;
    });
}

#[test]
fn dropping_a_network_ends_the_peers_sessions_over_tcp() {
    network_going_away_over(tcp);
}

#[test]
fn dropping_a_network_ends_the_peers_sessions_over_quic() {
    network_going_away_over(quic);
}

#[test]
fn shutting_down_ends_inbound_streams_and_refuses_more_work() {
    with_vats(|_alice, _bob| async move {
        let (net, mut inbound) = start(51, NetConfig::listening_on([tcp()])).await;
        let other = net.clone();
        net.shutdown().await;
        assert!(within("inbound streams to end", inbound.next()).await.is_none());
        let stranger = node_id(52);
        let error = other.open_stream(&stranger, &[]).await.err().expect("stopped");
        assert!(matches!(error, NetError::Stopped), "{error}");
        let self_dial = other.open_stream(&other.node_id(), &[]).await.err().expect("self");
        assert!(matches!(self_dial, NetError::DialSelf { .. }), "{self_dial}");
    });
}

fn disconnect_over(listen: fn() -> Multiaddr) {
    with_vats(|alice, bob| async move {
        let (alice_net, _alice_inbound) = start(61, NetConfig::listening_on([])).await;
        let (bob_net, bob_inbound) = start(62, NetConfig::listening_on([listen()])).await;
        let sessions = serve(&bob, bob_inbound, counter(&bob));
        let stream = alice_net
            .open_stream(&bob_net.node_id(), &bob_net.listen_addresses())
            .await;
        let to_bob = client(&alice, stream.expect("stream opens"));
        assert_eq!(incr(&to_bob).await, 1.0);
        let to_alice = sessions.borrow()[0].1.clone();

        // Closing the connection from our side ends our own sessions too,
        // not only the peer's.
        alice_net.disconnect(&bob_net.node_id()).expect("disconnect");
        within("alice's session to end", to_bob.closed()).await;
        within("bob's session to end", to_alice.closed()).await;
        eventually("alice to see bob gone", || alice_net.connected_peers().is_empty()).await;

        // The next stream dials again.
        let stream = alice_net.open_stream(&bob_net.node_id(), &[]).await;
        let again = client(&alice, stream.expect("a new connection"));
        assert_eq!(incr(&again).await, 2.0);
    });
}

#[test]
fn disconnecting_ends_the_sessions_on_both_sides_over_tcp() {
    disconnect_over(tcp);
}

#[test]
fn disconnecting_ends_the_sessions_on_both_sides_over_quic() {
    disconnect_over(quic);
}
