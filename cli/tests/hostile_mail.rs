//! Mail that strangers, hostile peers and floods cannot turn into harm,
//! end to end: real node processes, a real introduced peer flooding
//! through its own node, a stranger with a key of its own calling the
//! gateway, the `[mail]` quotas of `config.toml`, and an inbox of 100 000
//! messages.

#![allow(clippy::expect_used, clippy::unwrap_used, reason = "a test fails by panicking")]

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use capstan_protocol::Value;
use capstan_protocol::captp::Limits;
use capstan_store::{FormulaId, STORE_FILE_NAME, Store};
use capstan_tests::hostile::{Attacker, Target};
use capstan_tests::{LOOPBACK, Node, introduce, process_alive, use_binary, wait_until};

/// A started node whose `config.toml` is `config`.
fn started_with(config: &str) -> Node {
    use_binary(env!("CARGO_BIN_EXE_capstan"));
    Node::started_on_loopback(config)
}

/// `alice` (configured with `config`) has invited `bob`, who accepted:
/// alice's host names bob's handle `bob`, bob's names alice's `alice`.
fn introduced(config: &str) -> (Node, Node) {
    let (alice, bob) = (started_with(config), started_with(""));
    introduce(&alice, "bob", &bob, "alice");
    (alice, bob)
}

fn store_bytes(node: &Node) -> u64 {
    std::fs::metadata(node.state_dir().join(STORE_FILE_NAME))
        .expect("the store file")
        .len()
}

fn inbox(node: &Node) -> Vec<String> {
    node.run(&["inbox"]).ok().lines().map(str::to_string).collect()
}

/// Dismisses every message in the host's inbox.
fn dismiss_all(node: &Node) {
    for line in inbox(node) {
        let number = line.split('.').next().expect("a numbered line");
        node.run(&["dismiss", number]).ok();
    }
}

/// bob's host sends `count` messages of `size` characters to `alice` as
/// fast as it can, from one program on bob's node; "SENT DISTINCT-ERRORS".
fn flood(bob: &Node, count: usize, size: usize) -> (usize, Vec<String>) {
    let source = format!(
        "(async () => {{
           let sent = 0; const errors = [];
           for (let i = 0; i < {count}; i += 1) {{
             try {{ await E(host).send('alice', ['x'.repeat({size})], [], []); sent += 1; }}
             catch (error) {{ if (!errors.includes(error.message)) errors.push(error.message); }}
           }}
           return [String(sent), ...errors].join('\\n');
         }})()"
    );
    let output = bob.eval(&source, &["host:AGENT"]);
    let mut lines = output.lines();
    let sent = lines.next().expect("a count").parse().expect("a number");
    (sent, lines.map(str::to_string).collect())
}

/// One message from bob to alice: `Ok` or the error.
fn send_one(bob: &Node, text: &str) -> Result<(), String> {
    let run = bob.run(&["send", "alice", text]);
    if run.status == 0 { Ok(()) } else { Err(run.stderr) }
}

const SMALL_QUOTAS: &str = "[mail]
held_messages = 4
message_bytes = 4000
held_bytes = 6000
messages_per_second = 3
";

#[test]
fn an_introduced_peer_flooding_mail_is_held_to_every_quota() {
    let (alice, bob) = introduced(SMALL_QUOTAS);
    let before = store_bytes(&alice);

    // 300 messages of about 2 KB as fast as bob's node sends them: the
    // first two fill the bytes quota, the third is refused for its bytes,
    // and the rest mostly for their rate.
    let started = Instant::now();
    let (sent, errors) = flood(&bob, 300, 1900);
    let took = started.elapsed();
    assert_eq!(sent, 2, "{errors:?}");
    assert!(
        errors
            .iter()
            .any(|e| e.contains("you are sending mail too fast (the most is 3 messages a second)")),
        "{errors:?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.contains("bytes of messages from you; this one (")
                && e.contains("would pass the most it keeps (6000)")),
        "{errors:?}"
    );
    assert!(process_alive(alice.pid().expect("alice runs")));
    let held = inbox(&alice);
    assert_eq!(held.len(), 2, "{held:?}");
    assert!(held.iter().all(|line| line.contains("\"bob\" sent \"xxxx")), "{held:?}");
    let grown = store_bytes(&alice).saturating_sub(before);
    eprintln!("flood of 300 took {took:?}; alice's store grew {grown} bytes");
    assert!(grown < 1 << 20, "the store grew {grown} bytes");

    // Larger than one message may be: refused whatever is held.
    std::thread::sleep(Duration::from_millis(1100));
    let refused = send_one(&bob, &"y".repeat(5000)).unwrap_err();
    assert!(
        refused.contains("more than the 4000 the recipient takes in one message"),
        "{refused}"
    );

    // The count: four small messages are held, the fifth is refused.
    dismiss_all(&alice);
    let mut outcomes = Vec::new();
    for i in 0..5 {
        std::thread::sleep(Duration::from_millis(400));
        outcomes.push(send_one(&bob, &format!("note {i}")));
    }
    assert!(outcomes[..4].iter().all(Result::is_ok), "{outcomes:?}");
    let refused = outcomes[4].clone().unwrap_err();
    assert!(
        refused.contains("the recipient holds 4 messages from you already (the most it keeps)"),
        "{refused}"
    );
    // The count is the store's: it holds after a restart, and a dismissal
    // makes room for one more.
    alice.run(&["restart", "--listen", LOOPBACK]).ok();
    std::thread::sleep(Duration::from_millis(400));
    let refused = send_one(&bob, "after the restart").unwrap_err();
    assert!(refused.contains("holds 4 messages from you already"), "{refused}");
    let first = inbox(&alice)[0].split('.').next().unwrap().to_string();
    alice.run(&["dismiss", &first]).ok();
    std::thread::sleep(Duration::from_millis(400));
    send_one(&bob, "room again").unwrap();
    let held = inbox(&alice);
    assert_eq!(held.len(), 4, "{held:?}");
    assert!(held[3].ends_with("\"bob\" sent \"room again\""), "{held:?}");
    // Mail the other way is not the flooder's quota.
    alice.run(&["send", "bob", "still talking"]).ok();
    assert!(inbox(&bob)[0].ends_with("\"alice\" sent \"still talking\""));
}

#[test]
fn requests_from_a_peer_beyond_pending_requests_are_refused() {
    let (alice, bob) = introduced("[mail]\npending_requests = 2\n");
    // Three requests at once: two wait, the third is refused at once.
    let race = |descriptions: &[&str]| {
        let asks: Vec<String> = descriptions
            .iter()
            .map(|text| format!("E(host).request('alice', '{text}')"))
            .collect();
        bob.eval(
            &format!(
                "Promise.race([{}].map((ask) => ask.then(() => 'answered', (error) => error.message)))",
                asks.join(", ")
            ),
            &["host:AGENT"],
        )
    };
    let first = race(&["want 0", "want 1", "want 2"]);
    // The peer's own refusal reaches the requester (it names no identifier).
    assert_eq!(
        first, "2 of your requests already wait for an answer here (the most allowed)",
        "{first}"
    );
    // The two that wait may still be on their way to the store.
    assert!(wait_until(Duration::from_secs(10), || inbox(&alice).len() == 2));
    let held = inbox(&alice);
    assert!(
        held.iter().all(|line| line.contains("\"bob\" requested \"want ")),
        "{held:?}"
    );

    // An answer frees a place, a dismissal too; the bound still holds.
    let number = |line: &str| line.split('.').next().unwrap().to_string();
    alice.run(&["reject", &number(&held[0]), "no"]).ok();
    let next = race(&["want 3", "want 4"]);
    assert!(next.contains("already wait for an answer"), "{next}");
    let pending = || -> Vec<String> {
        inbox(&alice)
            .into_iter()
            .filter(|line| !line.ends_with("(rejected)"))
            .collect()
    };
    assert!(wait_until(Duration::from_secs(10), || pending().len() == 2));
    let pending = pending();
    alice.run(&["dismiss", &number(&pending[0])]).ok();
    let next = race(&["want 5", "want 6"]);
    assert!(next.contains("already wait for an answer"), "{next}");
    assert!(wait_until(Duration::from_secs(10), || inbox(&alice).iter().any(
        |line| line.contains("requested \"want 5\"") || line.contains("requested \"want 6\"")
    )));
}

#[test]
fn a_stranger_who_knows_a_handle_id_cannot_deliver_or_request() {
    let alice = started_with("");
    let locator = alice.run(&["invite", "bob"]).ok().trim().to_string();
    let from = locator
        .split(['?', '&'])
        .find_map(|field| field.strip_prefix("from="))
        .expect("from= in the locator");
    let node = Target::of(&alice).node;
    let host_handle = format!("{from}:{node}");
    host_handle.parse::<FormulaId>().expect("a handle id");
    let before = store_bytes(&alice);

    let attacker = Attacker::new();
    let own_handle = format!("{}:{}", "ab".repeat(32), attacker.node_id());
    let text = |s: &str| Value::from(s);
    // About 90 KB: under the gateway's guard on a string (100 000 bytes).
    let big = "z".repeat(90 << 10);
    let (delivered, requested) = attacker.run(async {
        let (connection, gateway) = attacker.session(&Target::of(&alice), Limits::default()).await;
        let mut delivered = Vec::new();
        for _ in 0..50 {
            let args = vec![
                text(&host_handle),
                text(&own_handle),
                Value::array([text(&big)]),
                Value::array([]),
                Value::array([]),
            ];
            let refused = Attacker::call(&gateway, "deliver", args).await.err();
            delivered.push(refused.map(|message| message.chars().take(200).collect::<String>()));
        }
        let requested = Attacker::call(
            &gateway,
            "request",
            vec![text(&host_handle), text(&own_handle), text("let me in")],
        )
        .await
        .err();
        connection.close("done");
        (delivered, requested)
    });
    for outcome in &delivered {
        assert_eq!(outcome.as_deref(), Some("you were not introduced to that agent"));
    }
    assert_eq!(requested.as_deref(), Some("you were not introduced to that agent"));
    assert!(inbox(&alice).is_empty());
    assert_eq!(store_bytes(&alice), before);
    assert!(process_alive(alice.pid().expect("alice runs")));
    // The log says who was refused and why, and a flood of refusals does
    // not flood it: at most 20 lines a second, the rest counted.
    let log = std::fs::read_to_string(alice.state_dir().join("node.log")).expect("alice's log");
    let refusals: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("refused mail from a peer") || line.contains("refused a request from a peer"))
        .collect();
    assert!(!refusals.is_empty(), "{log}");
    assert!(
        refusals
            .iter()
            .all(|line| line.contains(&attacker.node_id()) && line.contains("you were not introduced to that agent")),
        "{refusals:?}"
    );
    let attacker_node = attacker.node_id();
    // A new second, so the refusals above do not use up this one's lines.
    std::thread::sleep(Duration::from_millis(1100));
    let flood = attacker.run(async {
        let (connection, gateway) = attacker.session(&Target::of(&alice), Limits::default()).await;
        let started = std::time::Instant::now();
        let calls: Vec<_> = (0..500)
            .map(|_| Attacker::call(&gateway, "provide", vec![text("not an id")]))
            .collect();
        for call in calls {
            assert!(call.await.is_err());
        }
        connection.close("done");
        started.elapsed()
    });
    let log = std::fs::read_to_string(alice.state_dir().join("node.log")).expect("alice's log");
    let logged = log
        .lines()
        .filter(|line| line.contains("refused to provide an id") && line.contains(&attacker_node))
        .count();
    let most = 20 * (flood.as_secs() as usize + 2);
    assert!((1..=most).contains(&logged), "{logged} refusals logged in {flood:?}");
}

#[test]
fn the_inbox_lists_and_follows_100_000_held_messages() {
    const HELD: u64 = 100_000;
    let alice = started_with("");
    alice.run(&["mkguest", "g"]).ok();
    alice.run(&["--as", "g", "send", "HOST", "one of many"]).ok();
    let agent: FormulaId = alice
        .eval("E(host).identify('AGENT')", &["host:AGENT"])
        .parse()
        .expect("the host agent's id");
    // The rest are copies of that one, put in through the store's own API
    // while the node is stopped.
    alice.run(&["stop"]).ok();
    {
        let store = Store::open(alice.state_dir()).expect("the store");
        let body = store.read().unwrap().get_message(agent, 0).unwrap().expect("message 0");
        // 9 commits of 11 111 copies: message 0 and 99 999 more.
        for _ in 0..9 {
            let body = body.clone();
            store
                .transact(move |tx| {
                    for _ in 0..11_111 {
                        tx.append_message(agent, &body)?;
                    }
                    Ok(())
                })
                .wait()
                .unwrap();
        }
        assert_eq!(store.read().unwrap().next_message_number(agent).unwrap(), HELD);
        store.close().unwrap();
    }
    alice.run(&["start", "--listen", LOOPBACK]).ok();

    let started = Instant::now();
    let listed = alice.run(&["inbox"]);
    let took = started.elapsed();
    let lines: Vec<&str> = listed.ok().lines().collect();
    eprintln!("capstan inbox of {HELD} messages took {took:?}");
    assert_eq!(lines.len() as u64, HELD);
    assert_eq!(lines[0], "0. \"g\" sent \"one of many\"");
    assert_eq!(
        lines[HELD as usize - 1],
        format!("{}. \"g\" sent \"one of many\"", HELD - 1)
    );
    assert_eq!(
        alice.eval(
            "E(host).listMessages(99990, 5).then((page) => page.map((m) => m.number).join(','))",
            &["host:AGENT"]
        ),
        "99990,99991,99992,99993,99994"
    );
    assert_eq!(
        alice.eval("E(host).listMessages().then((page) => page.length)", &["host:AGENT"]),
        "1000"
    );

    // A stream reads the store a page at a time (256): 600 in order.
    assert_eq!(
        alice.eval(
            "(async () => {
               const stream = await E(host).followMessages();
               const numbers = [];
               for (let i = 0; i < 600; i += 1) numbers.push((await E(stream).next()).value.number);
               return numbers.every((n, i) => n === i) ? 'in order' : numbers.join(',');
             })()",
            &["host:AGENT"]
        ),
        "in order"
    );

    // Following gives the whole backlog, then what comes next.
    let started = Instant::now();
    let mut follower = alice
        .command(&["inbox", "-f"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("inbox -f");
    let mut lines = BufReader::new(follower.stdout.take().unwrap()).lines();
    let mut count = 0u64;
    for line in lines.by_ref() {
        let line = line.unwrap();
        count += 1;
        if line.starts_with(&format!("{}. ", HELD - 1)) {
            break;
        }
    }
    eprintln!("capstan inbox -f gave {count} messages in {:?}", started.elapsed());
    assert_eq!(count, HELD);
    alice.run(&["--as", "g", "send", "HOST", "the newest"]).ok();
    let newest = lines.next().unwrap().unwrap();
    assert_eq!(newest, format!("{HELD}. \"g\" sent \"the newest\""));
    follower.kill().unwrap();
    follower.wait().unwrap();
}
