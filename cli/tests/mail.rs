//! Agents, mail and confined guests, end to end: real node processes, the
//! CLI, and JavaScript programs run with a guest's powers.

#![allow(clippy::expect_used, clippy::unwrap_used, reason = "a test fails by panicking")]

use std::process::Stdio;
use std::time::Duration;

use capstan_tests::{Node, use_binary, wait_until};

/// Nodes run the `capstan` binary cargo built for this suite.
fn started(env: &[(&str, &str)]) -> Node {
    use_binary(env!("CARGO_BIN_EXE_capstan"));
    Node::started(env)
}

const COUNTER: &str = "let n = 0; makeExo('Counter', M.interface('Counter', { incr: M.call().returns(M.number()) }), { incr() { n += 1; return n; } })";

fn write_program(node: &Node, name: &str, source: &str) -> String {
    let path = node.state_dir().join(name);
    std::fs::write(&path, source).expect("write the program");
    path.to_str().expect("utf-8 path").to_string()
}

#[test]
fn a_guest_program_requests_a_counter_and_the_host_resolves_it() {
    let node = started(&[]);
    node.run(&["eval", COUNTER, "-n", "counter"]).ok();
    node.run(&["mkguest", "alice"]).ok();
    let program = write_program(
        &node,
        "wants-counter.js",
        "export const make = async (powers) => {
           const counter = await E(powers).request('HOST', 'a counter please', 'granted');
           await E(counter).incr();
           const second = await E(counter).incr();
           await E(powers).send('HOST', ['counted to ', ''], ['counter'], ['granted']);
           return second;
         };",
    );
    let made = node
        .command(&["make", &program, "-p", "alice", "-n", "app"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("make");
    assert!(wait_until(Duration::from_secs(20), || node
        .run(&["inbox"])
        .stdout
        .contains("0. \"alice\" requested \"a counter please\"")));
    node.run(&["resolve", "0", "counter"]).ok();
    let output = made.wait_with_output().expect("make ends");
    assert!(output.status.success());
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "2");
    let inbox = node.run(&["inbox"]).ok().to_string();
    assert!(
        inbox.contains("0. \"alice\" requested \"a counter please\" (resolved)"),
        "{inbox}"
    );
    assert!(inbox.contains("1. \"alice\" sent \"counted to @counter\""), "{inbox}");
    // The answer is kept under the guest's response name: asking again
    // returns it without a new message.
    assert_eq!(
        node.run(&["--as", "alice", "request", "a counter please", "-n", "granted"])
            .ok(),
        "Object [Alleged: Counter] {}"
    );
    assert_eq!(node.run(&["inbox"]).ok().lines().count(), 2);
    assert_eq!(node.eval("E(c).incr()", &["c:counter"]), "3");
}

#[test]
fn a_package_of_two_references_is_adopted_under_new_names() {
    let node = started(&[]);
    node.run(&["eval", COUNTER, "-n", "counter"]).ok();
    node.run(&["store", "-n", "doc", "--text", "the doc"]).ok();
    node.run(&["mkguest", "bob"]).ok();
    node.run(&["send", "bob", "here are @tally:counter and @readme:doc"])
        .ok();
    assert_eq!(
        node.run(&["--as", "bob", "inbox"]).ok(),
        "0. \"HOST\" sent \"here are @tally and @readme\""
    );
    node.run(&["--as", "bob", "adopt", "0", "tally", "-n", "my-counter"])
        .ok();
    node.run(&["--as", "bob", "adopt", "0", "readme", "-n", "notes"]).ok();
    let names = node.run(&["--as", "bob", "list"]).ok().to_string();
    assert!(names.contains("my-counter") && names.contains("notes"), "{names}");
    assert_eq!(node.run(&["--as", "bob", "show", "notes"]).ok(), "the doc");
    // The guest's counter is the host's counter.
    let counted = node.run(&[
        "make",
        &write_program(
            &node,
            "count.js",
            "export const make = async (powers) => E(await E(powers).lookup('my-counter')).incr();",
        ),
        "-p",
        "bob",
    ]);
    // Guests cannot run code themselves: only hosts can.
    assert!(
        node.run(&["--as", "bob", "eval", "1"])
            .err()
            .contains("target has no method \"evaluate\"")
    );
    assert_eq!(counted.ok(), "1");
    assert_eq!(node.eval("E(c).incr()", &["c:counter"]), "2");
}

#[test]
fn dismissed_messages_go_and_numbering_continues_after_restart() {
    let node = started(&[]);
    node.run(&["mkguest", "carol"]).ok();
    for text in ["one", "two", "three"] {
        node.run(&["send", "carol", text]).ok();
    }
    node.run(&["--as", "carol", "dismiss", "1"]).ok();
    assert_eq!(
        node.run(&["--as", "carol", "inbox"]).ok(),
        "0. \"HOST\" sent \"one\"\n2. \"HOST\" sent \"three\""
    );
    node.run(&["restart"]).ok();
    node.run(&["send", "carol", "four"]).ok();
    assert_eq!(
        node.run(&["--as", "carol", "inbox"]).ok(),
        "0. \"HOST\" sent \"one\"\n2. \"HOST\" sent \"three\"\n3. \"HOST\" sent \"four\""
    );
}

#[test]
fn a_request_pending_across_a_restart_can_be_resolved() {
    let node = started(&[]);
    node.run(&["eval", COUNTER, "-n", "counter"]).ok();
    node.run(&["mkguest", "dave"]).ok();
    let mut asking = node
        .command(&["--as", "dave", "request", "something", "-n", "answer"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("request");
    assert!(wait_until(Duration::from_secs(10), || node
        .run(&["inbox"])
        .stdout
        .contains("requested")));
    node.run(&["restart"]).ok();
    let _ = asking.wait();
    node.run(&["resolve", "0", "counter"]).ok();
    // The answer was kept under the guest's response name.
    assert_eq!(
        node.run(&["--as", "dave", "show", "answer"]).ok(),
        "Object [Alleged: Counter] {}"
    );
    assert_eq!(
        node.run(&["resolve", "0", "counter"]).err(),
        "capstan: Request 0 was already answered"
    );
}

#[test]
fn bad_input_gives_clear_errors_and_changes_nothing() {
    let node = started(&[]);
    node.run(&["mkguest", "erin"]).ok();
    node.run(&["store", "-n", "doc", "--text", "x"]).ok();
    node.run(&["send", "erin", "take @doc"]).ok();
    let before = node.run(&["--as", "erin", "list"]).ok().to_string();
    assert!(
        node.run(&["mkguest", "Not-OK"])
            .err()
            .contains("Invalid pet name \"Not-OK\"")
    );
    assert_eq!(
        node.run(&["--as", "erin", "dismiss", "9"]).err(),
        "capstan: No message number 9"
    );
    assert_eq!(
        node.run(&["--as", "erin", "adopt", "0", "nothing"]).err(),
        "capstan: Message 0 has no reference named \"nothing\""
    );
    assert!(
        node.run(&["--as", "erin", "adopt", "0", "doc", "-n", "Bad Name"])
            .err()
            .contains("Invalid pet name")
    );
    assert_eq!(
        node.run(&["--as", "erin", "resolve", "0", "doc"]).err(),
        "capstan: Message 0 is not a request"
    );
    assert_eq!(
        node.run(&["send", "nobody", "hi"]).err(),
        "capstan: Unknown pet name: \"nobody\""
    );
    assert_eq!(node.run(&["--as", "erin", "list"]).ok(), before, "nothing changed");
}

#[test]
fn equals_and_store_value_for_guests() {
    let node = started(&[]);
    node.run(&["eval", COUNTER, "-n", "counter"]).ok();
    node.run(&["mkguest", "fay", "--introduce", "counter:counter"]).ok();
    let program = write_program(
        &node,
        "equals.js",
        "export const make = async (powers) => {
           const counter = E(powers).lookup('counter');
           const same = await E(powers).equals(counter, E(powers).lookup('counter'));
           const self = await E(powers).equals(counter, E(powers).lookup('SELF'));
           const stranger = await E(powers).equals(counter, Far('Stranger', {}));
           await E(powers).storeValue(counter, 'also-counter');
           const again = await E(powers).equals(E(powers).lookup('also-counter'), counter);
           await E(powers).storeValue(harden({ plain: [1, 2] }), 'data');
           let vague;
           try { await E(powers).storeValue(Far('Unknown', {}), 'nope'); } catch (error) { vague = error.message; }
           return harden([same, self, stranger, again, vague]);
         };",
    );
    assert_eq!(
        node.run(&["make", &program, "-p", "fay"]).ok(),
        "[true, false, false, true, \"Cannot store this value\"]"
    );
    assert_eq!(node.run(&["--as", "fay", "show", "data"]).ok(), "{ plain: [1, 2] }");
}

/// Every method of a guest, called with hostile arguments including real
/// identifiers and locators; every result, field and error is checked for
/// identifiers. The method list is pinned, so a new method fails here
/// until it is audited.
#[test]
fn confinement_audit_of_the_guest_interface() {
    let node = started(&[]);
    node.run(&["eval", COUNTER, "-n", "counter"]).ok();
    let locator = node.run(&["locate", "counter"]).ok().to_string();
    let id = locator
        .split("id=")
        .nth(1)
        .and_then(|rest| rest.split('&').next())
        .expect("an id in the locator")
        .to_string();
    let node_id = locator
        .trim_start_matches("capstan://")
        .split('/')
        .next()
        .expect("node id")
        .to_string();
    let formula_id = format!("{id}:{node_id}");
    node.run(&["mkguest", "auditor", "--introduce", "counter:counter"]).ok();
    node.run(&["mkguest", "peer", "--introduce", "auditor:auditor"]).ok();
    // The auditor receives a package and a request.
    node.run(&["send", "auditor", "have @counter"]).ok();
    let mut waiting = node
        .command(&["--as", "peer", "request", "give me something", "-t", "auditor"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("request");
    assert!(wait_until(Duration::from_secs(10), || node
        .run(&["--as", "auditor", "inbox"])
        .stdout
        .lines()
        .count()
        == 2));
    let secrets = [formula_id.as_str(), locator.as_str(), id.as_str()];
    let program = write_program(
        &node,
        "audit.js",
        &format!(
            "const SECRETS = {secrets};
             const expected = {expected};
             const show = (value, depth = 0) => {{
               if (depth > 6) return '…';
               if (typeof value === 'object' && value !== null) {{
                 if (Array.isArray(value)) return '[' + value.map(v => show(v, depth + 1)).join(',') + ']';
                 return '{{' + Object.keys(value).map(k => k + ':' + show(value[k], depth + 1)).join(',') + '}}';
               }}
               return String(value);
             }};
             // Errors may quote the guest's own arguments back; that is not
             // the node revealing anything, so those are masked. Results are
             // never masked.
             const mask = text => SECRETS.reduce((t, secret) => t.split(secret).join('<input>'), String(text));
             export const make = async (powers) => {{
               const names = await E(powers).__getMethodNames__();
               // The object the secret identifier designates.
               const designated = await E(powers).lookup('counter');
               const seen = [];
               // Every field of every message received, before the calls
               // below dismiss or answer them.
               const messages = await E(powers).listMessages();
               for (const message of messages) seen.push('message ' + show(message) + ' keys ' + Object.keys(message).join(','));
               const stream = await E(powers).followMessages();
               seen.push('followed ' + show(await E(stream).next()));
               const argumentSets = [[], ...SECRETS.map(s => [s]), ...SECRETS.map(s => [s, s]), [0, SECRETS[0]],
                 [SECRETS[0], ['x'], [], []], ['counter'], ['HOST', 'please', SECRETS[0]], [0], [1, 'counter']];
               for (const name of names) {{
                 if (name === 'request') continue; // would wait for an answer
                 for (const args of argumentSets) {{
                   try {{
                     const result = await E(powers)[name](...args);
                     // An identifier is accepted if it yields what it designates.
                     if (args.some(arg => SECRETS.includes(arg)) && passStyleOf(result) === 'remotable'
                         && await E(powers).equals(result, designated)) {{
                       seen.push('ACCEPTED ' + name);
                     }}
                     seen.push(name + ' => ' + show(result));
                   }} catch (error) {{
                     seen.push(name + ' !! ' + mask(error && error.message));
                   }}
                 }}
               }}
               return harden({{ names, seen, expected }});
             }};",
            secrets = serde_json::to_string(&secrets).expect("json"),
            expected = serde_json::to_string(&[
                "__getInterfaceGuard__", "__getMethodNames__", "adopt", "copy", "dismiss", "equals",
                "followMessages", "followNameChanges", "handle", "has", "help", "list", "listMessages", "lookup",
                "makeDirectory", "move", "reject", "remove", "request", "resolve", "reverseLookup", "send",
                "storeValue",
            ])
            .expect("json"),
        ),
    );
    let report = node
        .run(&["make", &program, "-p", "auditor", "-n", "audit"])
        .ok()
        .to_string();
    // The guest's methods are exactly the audited ones.
    let methods = node.eval("harden(r.names)", &["r:audit"]);
    let expected = node.eval("harden(r.expected)", &["r:audit"]);
    assert_eq!(methods, expected, "the guest interface changed: audit the new methods");
    // Nothing that crossed to the guest holds an identifier.
    let hex64 = |text: &str| {
        let mut run = 0;
        text.chars().any(|c| {
            run = if c.is_ascii_hexdigit() { run + 1 } else { 0 };
            run >= 64
        })
    };
    assert!(report.len() > 1000, "the audit ran: {report}");
    assert!(
        !report.contains("ACCEPTED"),
        "a method accepted an identifier: {report}"
    );
    for secret in secrets {
        assert!(!report.contains(secret), "a secret reached the guest: {report}");
    }
    // A locator carrying a node id (the guest's own input comes back with
    // its identifiers redacted).
    let locator_with_id = report
        .match_indices("capstan://")
        .any(|(at, _)| report[at + "capstan://".len()..].starts_with(|c: char| c.is_ascii_hexdigit()));
    assert!(!locator_with_id, "a locator reached the guest: {report}");
    assert!(!hex64(&report), "a 64-hex string reached the guest: {report}");
    for field in ["from:", "to:", "ids:", "messageId", "promiseId", "resolverId"] {
        assert!(!report.contains(field), "a message carried {field}: {report}");
    }
    assert!(
        report.contains("fromHandle:") && report.contains("fromNames:"),
        "{report}"
    );
    assert!(
        report.contains("type:package") && report.contains("type:request"),
        "{report}"
    );
    // The audit's reject() answered the peer's request.
    let _ = waiting.wait();
}

#[test]
fn name_changes_stream_to_followers_for_hosts_and_guests() {
    use std::io::{BufRead, BufReader};
    let node = started(&[]);
    node.run(&["mkguest", "gil"]).ok();
    node.run(&["store", "-n", "first", "--text", "1"]).ok();
    let mut following = node
        .command(&["--as", "gil", "list", "-f"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("follow");
    let mut lines = BufReader::new(following.stdout.take().expect("stdout")).lines();
    let mut next = || lines.next().and_then(Result::ok).unwrap_or_default();
    // The names there now, then each change as it happens.
    assert_eq!([next(), next(), next()], ["AGENT", "HOST", "SELF"]);
    node.run(&["send", "gil", "have @first"]).ok();
    node.run(&["--as", "gil", "adopt", "0", "first", "-n", "kept"]).ok();
    assert_eq!(next(), "kept");
    node.run(&["--as", "gil", "remove", "kept"]).ok();
    assert_eq!(next(), "-kept");
    let _ = following.kill();
    let _ = following.wait();
}
