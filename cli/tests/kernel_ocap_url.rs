//! OCAP URLs between two real nodes on loopback that were never
//! introduced: an object's URL issued on one node is redeemed on the
//! other (from the CLI, named for the host, and by a vat through the
//! kernel services), called across the network, refused once the object
//! is revoked, and malformed or forged URLs fail with a clear error. A
//! redeemed URL keeps working when the issuing node restarts: its kref,
//! and what vats hold of it, redeem the URL again.

#![allow(clippy::expect_used, clippy::unwrap_used, reason = "tests")]

use std::path::{Path, PathBuf};

use capstan_tests::{Node, Run, use_binary, write_cluster};
use serde_json::Value as Json;

/// A vat that hands out a greeter of its own through the issuer service.
const ISSUER: &str = r#"
export function buildRootObject(vatPowers, parameters, baggage) {
  return makeDefaultExo('Issuer', {
    bootstrap(vats, services) { baggage.init('issuer', services.ocapURLIssuerService); },
    share(greeting) {
      const greeter = makeDefaultExo('greeter', { greet(name) { return `${greeting}, ${name}`; } });
      return E(baggage.get('issuer')).issue(greeter);
    },
  });
}
"#;

/// A vat that redeems URLs through the redemption service and calls.
const REDEEMER: &str = r#"
export function buildRootObject(vatPowers, parameters, baggage) {
  let held;
  return makeDefaultExo('Redeemer', {
    bootstrap(vats, services) { baggage.init('redeemer', services.ocapURLRedemptionService); },
    async greetVia(url, name) {
      const greeter = await E(baggage.get('redeemer')).redeem(url);
      return E(greeter).greet(name);
    },
    async keep(url) {
      baggage.init('kept', await E(baggage.get('redeemer')).redeem(url));
      return 'kept';
    },
    greetKept(name) { return E(baggage.get('kept')).greet(name); },
    async hold(url) { held = await E(baggage.get('redeemer')).redeem(url); return 'held'; },
    callHeld(method) { return E(held)[method](); },
    callKept(method) { return E(baggage.get('kept'))[method](); },
  });
}
"#;

fn local_node() -> Node {
    use_binary(env!("CARGO_BIN_EXE_capstan"));
    let node = Node::new(&[]);
    node.run(&["start", "--local"]).ok();
    node
}

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/kernel/cluster.json")
}

fn launch(node: &Node, config: &Path) -> String {
    let run = node.run(&["kernel", "launch", config.to_str().expect("UTF-8 path")]);
    run.ok().lines().nth(1).expect("a root kref").to_string()
}

fn queue(node: &Node, kref: &str, method: &str, args: &[&str]) -> Run {
    let mut command = vec!["kernel", "queue", kref, method];
    command.extend_from_slice(args);
    node.run(&command)
}

fn node_id(node: &Node) -> String {
    let status: Json = serde_json::from_str(node.run(&["kernel", "status", "--json"]).ok()).expect("JSON");
    status["remoteComms"]["nodeId"].as_str().expect("a node id").to_string()
}

fn issue(node: &Node, kref: &str) -> String {
    node.run(&["kernel", "issue-url", kref]).ok().trim().to_string()
}

#[test]
fn a_url_issued_on_one_node_is_redeemed_and_called_on_another_until_revoked() {
    let (alice, bob) = (local_node(), local_node());
    let tally = launch(&alice, &example());
    let url = issue(&alice, &tally);
    let alice_id = node_id(&alice);
    assert!(url.starts_with("ocap:"), "{url}");
    assert!(url.contains(&format!("@{alice_id},/ip4/127.0.0.1/")), "{url}");
    assert!(!url.contains(&tally), "the URL does not name the kref: {url}");
    assert_ne!(issue(&alice, &tally), url, "each URL is new");

    let kref = bob
        .run(&["kernel", "redeem-url", &url, "-n", "tally"])
        .ok()
        .trim()
        .to_string();
    assert!(kref.starts_with("ko"), "{kref}");
    assert_eq!(queue(&bob, &kref, "incr", &[]).ok(), "1");
    assert_eq!(queue(&bob, &kref, "incr", &[]).ok(), "2");
    // The same object: alice's own count goes on.
    assert_eq!(queue(&alice, &tally, "incr", &[]).ok(), "3");
    // Named for bob's host, also across a restart of bob's node.
    assert_eq!(bob.eval("E(t).incr()", &["t:tally"]), "4");
    bob.run(&["restart", "--local"]).ok();
    assert_eq!(bob.eval("E(t).incr()", &["t:tally"]), "5");
    // The kref lasts too: its first use redeems the URL again.
    assert_eq!(queue(&bob, &kref, "incr", &[]).ok(), "6");
    assert_eq!(
        bob.run(&["kernel", "redeem-url", &url]).ok().trim(),
        kref,
        "one URL, one kref"
    );
    // Redeemed on its own node, a URL gives the object's own kref.
    assert_eq!(alice.run(&["kernel", "redeem-url", &url]).ok().trim(), tally);

    alice.run(&["kernel", "revoke", &tally]).ok();
    let refused = queue(&bob, &kref, "incr", &[]);
    assert!(refused.err().contains("was revoked"), "{refused:?}");
    let redeemed = bob.run(&["kernel", "redeem-url", &url]);
    assert!(redeemed.err().contains("this OCAP URL was revoked"), "{redeemed:?}");
    let issued = alice.run(&["kernel", "issue-url", &tally]);
    assert!(issued.err().contains("was revoked"), "{issued:?}");
}

#[test]
fn vats_issue_and_redeem_urls_through_kernel_services_and_urls_outlive_restarts() {
    let (alice, bob) = (local_node(), local_node());
    let issuer = launch(
        &alice,
        &write_cluster(
            &alice.state_dir().join("clusters").join("issuer"),
            &["ocapURLIssuerService"],
            &[("issuer", ISSUER)],
        ),
    );
    let redeemer = launch(
        &bob,
        &write_cluster(
            &bob.state_dir().join("clusters").join("redeemer"),
            &["ocapURLRedemptionService"],
            &[("redeemer", REDEEMER)],
        ),
    );
    let url = queue(&alice, &issuer, "share", &["[\"hello\"]"])
        .ok()
        .trim()
        .to_string();
    assert!(url.starts_with("ocap:"), "{url}");
    let args = serde_json::json!([url, "bob"]).to_string();
    assert_eq!(queue(&bob, &redeemer, "greetVia", &[&args]).ok(), "hello, bob");

    // A collection keeps what a URL names.
    alice.run(&["kernel", "collect-garbage"]).ok();
    assert_eq!(queue(&bob, &redeemer, "greetVia", &[&args]).ok(), "hello, bob");

    // A redeemed object kept in baggage works after the redeeming node
    // restarts: its kref redeems the URL again.
    let keep_args = serde_json::json!([url]).to_string();
    assert_eq!(queue(&bob, &redeemer, "keep", &[&keep_args]).ok(), "kept");
    bob.run(&["restart", "--local"]).ok();
    assert_eq!(
        queue(&bob, &redeemer, "greetKept", &["[\"carol\"]"]).ok(),
        "hello, carol"
    );

    // The token is durable: a vat root's URL works after the issuing
    // node restarts (an ordinary object's dies with its vat's process).
    let url = issue(&alice, &issuer);
    alice.run(&["restart", "--local"]).ok();
    let kref = bob.run(&["kernel", "redeem-url", &url]).ok().trim().to_string();
    let answer = queue(&bob, &kref, "share", &["[\"hi\"]"]);
    assert!(answer.ok().starts_with("ocap:"), "{answer:?}");
}

#[test]
fn malformed_and_forged_urls_fail_with_a_clear_error() {
    let (alice, bob) = (local_node(), local_node());
    let tally = launch(&alice, &example());
    let url = issue(&alice, &tally);
    let (token, location) = url.trim_start_matches("ocap:").split_once('@').expect("an @");

    // A forged token: one digit changed, or made up, at the right node.
    let flipped = if token.starts_with('0') { "1" } else { "0" };
    let forged = format!("ocap:{flipped}{}@{location}", &token[1..]);
    let made_up = format!("ocap:{}@{location}", "5".repeat(64));
    for url in [&forged, &made_up] {
        let run = bob.run(&["kernel", "redeem-url", url]);
        assert!(run.err().contains("this OCAP URL is not valid"), "{run:?}");
        assert!(!run.err().contains(&tally), "{run:?}");
    }
    // On the issuing node itself too.
    let run = alice.run(&["kernel", "redeem-url", &forged]);
    assert!(run.err().contains("this OCAP URL is not valid"), "{run:?}");

    for (url, expected) in [
        ("https://example.com/", "does not start with ocap:"),
        (&format!("ocap:{token}"), "has no @"),
        (&format!("ocap:xyz@{location}"), "token is not 64"),
        (&format!("ocap:{token}@nobody"), "node id is not 64"),
        (&format!("{url},not-an-address"), "not a multiaddr"),
        (
            &format!("ocap:{token}@{location}{}", ",/ip4/1.2.3.4/tcp/1".repeat(64)),
            "addresses",
        ),
    ] {
        let run = bob.run(&["kernel", "redeem-url", url]);
        assert!(run.err().contains("not an OCAP URL"), "{url}: {run:?}");
        assert!(run.err().contains(expected), "{url}: {run:?}");
    }

    // A well-formed URL of a node that cannot be reached fails, not hangs.
    let nowhere = format!("ocap:{token}@{}", "ab".repeat(32));
    let run = bob.run(&["kernel", "redeem-url", &nowhere]);
    assert!(run.err().contains("cannot redeem the OCAP URL"), "{run:?}");
}

#[test]
fn a_redeemed_url_keeps_working_after_the_issuing_node_restarts() {
    let (alice, bob) = (local_node(), local_node());
    let tally = launch(&alice, &example());
    let url = issue(&alice, &tally);
    let redeemer = launch(
        &bob,
        &write_cluster(
            &bob.state_dir().join("clusters").join("redeemer"),
            &["ocapURLRedemptionService"],
            &[("redeemer", REDEEMER)],
        ),
    );
    let kref = bob.run(&["kernel", "redeem-url", &url]).ok().trim().to_string();
    assert_eq!(queue(&bob, &kref, "incr", &[]).ok(), "1");
    // A vat holds the object in memory, and in baggage.
    let url_args = serde_json::json!([url]).to_string();
    assert_eq!(queue(&bob, &redeemer, "hold", &[&url_args]).ok(), "held");
    assert_eq!(queue(&bob, &redeemer, "keep", &[&url_args]).ok(), "kept");
    assert_eq!(queue(&bob, &redeemer, "callHeld", &["[\"incr\"]"]).ok(), "2");

    // Alice restarts; bob does not, and is not told.
    alice.run(&["restart", "--local"]).ok();
    assert_eq!(queue(&bob, &kref, "incr", &[]).ok(), "3");
    assert_eq!(queue(&bob, &redeemer, "callHeld", &["[\"incr\"]"]).ok(), "4");
    assert_eq!(queue(&bob, &redeemer, "callKept", &["[\"incr\"]"]).ok(), "5");
    assert_eq!(
        bob.run(&["kernel", "redeem-url", &url]).ok().trim(),
        kref,
        "one URL, one kref"
    );
    // And again: each new session is redialed.
    alice.run(&["restart", "--local"]).ok();
    assert_eq!(queue(&bob, &redeemer, "callHeld", &["[\"incr\"]"]).ok(), "6");
    assert_eq!(queue(&bob, &kref, "incr", &[]).ok(), "7");

    // Revoked while bob's link is stale: the redemption is refused.
    alice.run(&["kernel", "revoke", &tally]).ok();
    alice.run(&["restart", "--local"]).ok();
    let refused = queue(&bob, &kref, "incr", &[]);
    assert!(refused.err().contains("this OCAP URL was revoked"), "{refused:?}");
    // Stopped: the redemption fails clearly, and is tried again later.
    alice.run(&["stop"]).ok();
    let unreachable = queue(&bob, &redeemer, "callHeld", &["[\"incr\"]"]);
    assert!(
        unreachable.err().contains("cannot redeem the OCAP URL"),
        "{unreachable:?}"
    );
}
