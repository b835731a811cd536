//! Running under a service manager: `capstan start --foreground` tells the
//! socket named by `NOTIFY_SOCKET` `READY=1` once its control socket
//! answers (systemd's `Type=notify`, used by deploy/capstan.service), and
//! ends cleanly on SIGTERM.

#![allow(clippy::expect_used, clippy::unwrap_used, reason = "a test fails by panicking")]

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use capstan_tests::{kill, wait_until};

#[test]
fn a_foreground_node_reports_readiness_to_notify_socket_and_ends_on_sigterm() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let notify_path = dir.path().join("notify");
    let listener = UnixDatagram::bind(&notify_path).expect("bind the notify socket");
    listener
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let state = dir.path().join("state");
    let capstan = env!("CARGO_BIN_EXE_capstan");
    let mut node = Command::new(capstan)
        .env("CAPSTAN_STATE", &state)
        .env("NOTIFY_SOCKET", &notify_path)
        .args(["start", "--foreground", "--listen", "/ip4/127.0.0.1/tcp/0"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the node");

    let mut message = [0_u8; 64];
    let received = listener.recv(&mut message);
    let ping = Command::new(capstan)
        .env("CAPSTAN_STATE", &state)
        .arg("ping")
        .output()
        .expect("ping");
    let pid = i32::try_from(node.id()).expect("pid");
    kill(pid, libc::SIGTERM);
    let ended = Instant::now();
    assert!(
        wait_until(Duration::from_secs(10), || node.try_wait().ok().flatten().is_some()),
        "the node did not end on SIGTERM"
    );
    let length = received.expect("no readiness message within 30 s");
    assert_eq!(&message[..length], b"READY=1");
    assert!(ping.status.success(), "not answering once ready: {ping:?}");
    assert!(node.wait().expect("status").success(), "the node did not end cleanly");
    assert!(ended.elapsed() < Duration::from_secs(5));
}
