//! Confinement covers errors, end to end: guest code running in a worker
//! with a guest's powers meets every failure it can provoke — a peer that
//! cannot be reached, one that goes away mid-call, one that never answers,
//! one that rejects with a text full of identifiers, one that aborts its
//! session with such a text under a pending call, a cancelled object,
//! a name for a formula that is not there, bad and unknown names — and
//! what it catches names no node, formula, peer id, address or locator.

#![allow(clippy::expect_used, clippy::unwrap_used, reason = "a test fails by panicking")]

use std::cell::Cell;
use std::process::{Child, Stdio};
use std::rc::Rc;
use std::time::{Duration, Instant};

use capstan_node::runtime::{Exo, MethodResult};
use capstan_protocol::{ErrorValue, Value};
use capstan_tests::hostile::{Attacker, Target};
use capstan_tests::{Node, introduce, kill, names_an_identifier, use_binary, wait_until};

const COUNTER: &str = "let n = 0; makeExo('Counter', M.interface('Counter', { incr: M.call().returns(M.number()), never: M.call().returns(M.any()) }), { incr() { n += 1; return n; }, never() { return new Promise(() => {}); } })";

/// Guest code: each method does something with the guest's powers and
/// returns what it saw, `ok …` or `caught …` with the error's message.
const PROBE: &str = "let held;
const describe = async (thunk) => {
  try { return 'ok ' + String(await thunk()); } catch (error) { return 'caught ' + (error && error.message); }
};
export const make = (powers) => Far('Probe', {
  attempt(name, method) { return describe(() => E(E(powers).lookup(name))[method]()); },
  hold(name) { return describe(async () => { held = await E(powers).lookup(name); return 'held'; }); },
  callHeld(method) { return describe(() => E(held)[method]()); },
  naming(method, ...args) { return describe(() => E(powers)[method](...args)); },
});";

fn started() -> Node {
    use_binary(env!("CARGO_BIN_EXE_capstan"));
    Node::started_on_loopback("")
}

/// Starts `capstan eval` calling the probe on `node`; it may wait long.
fn start_probe(node: &Node, call: &str) -> Child {
    node.command(&["eval", &format!("E(p).{call}"), "p:probe"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn eval")
}

/// What a probe started with [`start_probe`] returned.
fn probe_outcome(child: Child) -> String {
    let output = child.wait_with_output().expect("eval output");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

fn probe(node: &Node, call: &str) -> String {
    probe_outcome(start_probe(node, call))
}

/// Waits, letting the attacker's vat turn, until `child` ends.
async fn ended(child: &mut Child, limit: Duration) {
    let deadline = Instant::now() + limit;
    while child.try_wait().expect("wait").is_none() {
        assert!(Instant::now() < deadline, "the probe did not end");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn what_a_guest_catches_names_no_identifier() {
    let (alice, bob) = (started(), started());
    introduce(&alice, "bob", &bob, "alice");
    alice.run(&["eval", COUNTER, "-n", "counter"]).ok();
    alice.run(&["send", "bob", "a counter @counter"]).ok();
    bob.run(&["adopt", "0", "counter", "-n", "c"]).ok();

    // A hostile peer bob was introduced to, and names for its formulas.
    let attacker = Attacker::listening();
    let mallory = attacker.node_id();
    let invitation = bob.run(&["invite", "mallory"]).ok().trim().to_string();
    let number = invitation
        .split("id=")
        .nth(1)
        .and_then(|rest| rest.split('&').next())
        .expect("an invitation id");
    let target = Target::of(&bob);
    let addresses = Value::array(attacker.listen_addresses().into_iter().map(Value::from));
    attacker
        .run(async {
            let (connection, gateway) = attacker.session(&target, Default::default()).await;
            let redeemed = Attacker::call(
                &gateway,
                "redeem",
                vec![
                    Value::from(format!("{number}:{}", target.node)),
                    Value::from(format!("{}:{mallory}", "cd".repeat(32))),
                    addresses,
                ],
            )
            .await;
            connection.close("done");
            redeemed
        })
        .expect("mallory redeems bob's invitation");
    let bob_id = target.node.to_string();
    for (name, id) in [
        ("silent", format!("{}:{mallory}", "a1".repeat(32))),
        ("leaver", format!("{}:{mallory}", "a2".repeat(32))),
        ("liar", format!("{}:{mallory}", "a3".repeat(32))),
        ("aborter", format!("{}:{mallory}", "a5".repeat(32))),
        // A name for a formula this node does not have.
        ("ghost", format!("{}:{bob_id}", "a4".repeat(32))),
    ] {
        bob.run(&["eval", &format!("E(h).write('{name}', '{id}')"), "h:AGENT"])
            .ok();
    }
    bob.run(&["eval", COUNTER, "-w", "counting", "-n", "local"]).ok();
    bob.run(&[
        "mkguest",
        "g",
        "--introduce",
        "c:c",
        "--introduce",
        "silent:silent",
        "--introduce",
        "leaver:leaver",
        "--introduce",
        "liar:liar",
        "--introduce",
        "aborter:aborter",
        "--introduce",
        "ghost:ghost",
        "--introduce",
        "local:local",
    ])
    .ok();
    let program = bob.state_dir().join("probe.js");
    std::fs::write(&program, PROBE).expect("write the probe");
    bob.run(&[
        "make",
        program.to_str().expect("a path"),
        "-p",
        "g",
        "-w",
        "probing",
        "-n",
        "probe",
    ])
    .ok();

    let mut seen: Vec<(&str, String)> = Vec::new();
    assert_eq!(probe(&bob, "attempt('c', 'incr')"), "ok 1");

    // alice goes away while the guest waits on her counter, then cannot
    // be reached.
    let pending = start_probe(&bob, "attempt('c', 'never')");
    std::thread::sleep(Duration::from_millis(500));
    kill(alice.pid().expect("alice's pid"), libc::SIGKILL);
    seen.push(("gone mid-call", probe_outcome(pending)));
    seen.push(("unreachable", probe(&bob, "attempt('c', 'incr')")));

    // Names: bad, unknown, for a missing formula, and what the guest
    // may not do with them.
    seen.push(("ghost", probe(&bob, "attempt('ghost', 'incr')")));
    for call in [
        "naming('lookup', 'Foo!')",
        "naming('lookup', 'nope')",
        "naming('lookup', 'c.x')",
        "naming('lookup', '')",
        "naming('remove', 'nope')",
        "naming('move', 'nope', 'other')",
        "naming('copy', 'ghost', 'AGENT')",
        "naming('makeDirectory', 'local.sub')",
        "naming('storeValue', 'x', 'Bad Name')",
        "naming('send', 'ghost', ['hi'], [], [])",
        "naming('adopt', 99, 'x')",
        "naming('resolve', 99, 'c')",
    ] {
        seen.push(("names", probe(&bob, call)));
    }

    // A cancelled object: the guest holds it while its worker is stopped.
    assert_eq!(probe(&bob, "hold('local')"), "ok held");
    bob.run(&["cancel", "counting"]).ok();
    seen.push(("cancelled", probe(&bob, "callHeld('incr')")));

    // mallory: never answers, then drops the connection under a pending
    // call, then rejects with a text full of identifiers, then aborts the
    // session with such a text under a call pending on its object.
    let bob_node = target.node;
    attacker.run(async {
        let silent_gateway = Exo::new("EndoGateway")
            .async_method("provide", |_, _| std::future::pending::<MethodResult>())
            .make()
            .expect("a gateway that never answers");
        let mut silent = start_probe(&bob, "attempt('silent', 'incr')");
        let _silent_session = attacker.accept(silent_gateway).await;
        ended(&mut silent, Duration::from_secs(40)).await;
        seen.push(("silent", probe_outcome(silent)));

        let mut leaver = start_probe(&bob, "attempt('leaver', 'incr')");
        tokio::time::sleep(Duration::from_millis(800)).await;
        attacker.network.disconnect(&bob_node).expect("disconnect");
        ended(&mut leaver, Duration::from_secs(20)).await;
        seen.push(("went away", probe_outcome(leaver)));

        let crafted =
            format!("node {bob_id} asks you to dial /ip4/10.0.0.1/tcp/1/p2p/12D3KooWxyz or capstan://{bob_id}/?id=1");
        let called = Rc::new(Cell::new(false));
        let noted = Rc::clone(&called);
        let hanging = Exo::new("Hanging")
            .async_method("never", move |_, _| {
                noted.set(true);
                std::future::pending::<MethodResult>()
            })
            .make()
            .expect("an object that never answers");
        let lie = crafted.clone();
        let lying_gateway = Exo::new("EndoGateway")
            .method("provide", move |_, args| {
                let asked = args.first().and_then(Value::as_str).unwrap_or_default();
                if asked.contains(&"a5".repeat(32)) {
                    Ok(hanging.clone())
                } else {
                    Err(ErrorValue::plain(lie.as_str()))
                }
            })
            .make()
            .expect("a gateway that lies");
        let mut liar = start_probe(&bob, "attempt('liar', 'incr')");
        let lying_session = attacker.accept(lying_gateway).await;
        ended(&mut liar, Duration::from_secs(20)).await;
        seen.push(("liar", probe_outcome(liar)));

        let mut aborted = start_probe(&bob, "attempt('aborter', 'never')");
        let deadline = Instant::now() + Duration::from_secs(20);
        while !called.get() {
            assert!(Instant::now() < deadline, "the guest's call did not reach mallory");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        lying_session.close(&crafted);
        ended(&mut aborted, Duration::from_secs(20)).await;
        seen.push(("aborted", probe_outcome(aborted)));
    });

    let report = format!("{seen:#?}");
    let outcome = |label: &str| {
        seen.iter()
            .find(|(seen_label, _)| *seen_label == label)
            .map(|(_, text)| text.clone())
            .expect("an outcome")
    };
    // A presence's pending call fails with the session's end, which the
    // runtime words as a failed read of the peer's stream.
    for (label, expected) in [
        ("gone mid-call", "the peer that holds this object went away"),
        ("unreachable", "the peer that holds this object cannot be reached"),
        ("silent", "the peer that holds this object did not answer within 20 s"),
        ("went away", "the peer that holds this object went away"),
        ("liar", "the peer that holds this object refused the call"),
        ("aborted", "the peer that holds this object went away"),
    ] {
        assert!(outcome(label).contains(expected), "{label}: {report}");
    }
    for (label, text) in &seen {
        assert!(
            text.starts_with("caught "),
            "{label}: the guest was not refused: {report}"
        );
        assert!(
            !names_an_identifier(text),
            "{label}: an identifier reached the guest: {report}"
        );
    }
    // The node's log has the detail the guest did not get.
    let log = std::fs::read_to_string(bob.state_dir().join("node.log")).expect("bob's log");
    assert!(
        log.lines()
            .any(|line| line.contains("a call to a peer failed") && line.contains(&mallory)),
        "{log}"
    );
    assert!(wait_until(Duration::from_secs(1), || bob
        .run(&["ping"])
        .stdout
        .contains("pong")));
}
