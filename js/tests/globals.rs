//! Vat globals: what `build_vat_with_globals` grants beyond the standard
//! confined set, that vats without a grant get a tamed clock and no
//! `Math.random`, that unknown names are refused, that timers run their
//! callbacks when the host's timer settles (and not after a clear), and
//! that `fetch` goes to the host's `fetch` power.

#![allow(clippy::expect_used, clippy::unwrap_used, reason = "tests")]

mod support;

use capstan_js::{GuestError, GuestRuntime, Outcome, VatGlobals};
use capstan_protocol::{Reference, Value};
use support::{MockHost, fulfilled, guest};

fn store() -> Value {
    Value::Remotable(Reference::new("Alleged: baggageStore", ()))
}

/// Builds a vat whose root has `run(source)`-like methods: `probe()`
/// evaluates `expression` inside the vat and answers it.
fn vat_answering(guest: &mut GuestRuntime, expression: &str, globals: &VatGlobals) -> Outcome {
    let source = format!(
        "export function buildRootObject() {{ return makeDefaultExo('root', {{ probe() {{ return {expression}; }} }}); }}"
    );
    let root =
        match fulfilled(guest.build_vat_with_globals(&source, &Value::Null, &[], &store(), &Value::Null, globals)) {
            Value::Remotable(root) => root,
            other => panic!("expected a root, got {other:?}"),
        };
    guest.deliver(&root, Some("probe"), &[]).unwrap()
}

fn probe(guest: &mut GuestRuntime, expression: &str, names: &[&str]) -> Value {
    let globals = VatGlobals::new(names).unwrap();
    match vat_answering(guest, expression, &globals) {
        Outcome::Settled(Ok(value)) => value,
        other => panic!("{expression}: expected a value, got {other:?}"),
    }
}

fn probe_str(guest: &mut GuestRuntime, expression: &str, names: &[&str]) -> String {
    match probe(guest, expression, names) {
        Value::String(text) => text.to_string(),
        other => panic!("{expression}: expected a string, got {other:?}"),
    }
}

#[test]
fn a_vat_without_grants_has_no_clock_no_randomness_and_no_host_apis() {
    let (_host, mut guest) = guest();
    assert_eq!(
        probe_str(
            &mut guest,
            "[String(Date.now()), String(new Date().getTime()), Date(), new Date(0).toISOString(), \
              (() => { try { Math.random(); return 'random'; } catch (e) { return e.message; } })(), \
              typeof setTimeout, typeof fetch, typeof TextEncoder, typeof URL, typeof crypto, typeof atob].join('|')",
            &[]
        ),
        "NaN|NaN|Invalid Date|1970-01-01T00:00:00.000Z|Math.random is not available in this vat: ask for the \"Math\" global|\
         undefined|undefined|undefined|undefined|undefined|undefined"
    );
    // The real clock is not reachable through the prototype either.
    assert_eq!(
        probe_str(&mut guest, "String(new Date(0).constructor.now())", &[]),
        "NaN"
    );
}

#[test]
fn date_and_math_grants_give_the_real_ones() {
    let (_host, mut guest) = guest();
    let answer = probe_str(
        &mut guest,
        "[Date.now() > 1.6e12, new Date().getFullYear() >= 2024, Math.random() !== Math.random()].join()",
        &["Date", "Math"],
    );
    assert_eq!(answer, "true,true,true");
}

#[test]
fn unknown_globals_are_refused_with_the_allowed_list() {
    for names in [&["process"][..], &["setTimeout", "require"], &["SubtleCrypto"], &[""]] {
        let error = VatGlobals::new(names).unwrap_err();
        assert!(matches!(error, GuestError::UnknownGlobal(_)), "{error}");
        let text = error.to_string();
        assert!(
            text.contains("unknown vat global") && text.contains("setTimeout, clearTimeout"),
            "{text}"
        );
    }
}

#[test]
fn text_url_base64_and_crypto_globals_work_in_the_vat_realm() {
    let (_host, mut guest) = guest();
    let names = [
        "TextEncoder",
        "TextDecoder",
        "URL",
        "URLSearchParams",
        "atob",
        "btoa",
        "crypto",
    ];
    assert_eq!(
        probe_str(
            &mut guest,
            "(() => { const bytes = new TextEncoder().encode('héllo ✓'); \
               return [bytes instanceof Uint8Array, bytes.length, new TextDecoder().decode(bytes)].join(); })()",
            &names
        ),
        "true,10,héllo ✓"
    );
    assert_eq!(
        probe_str(
            &mut guest,
            "(() => { const url = new URL('../b?x=1&y=a+b#frag', 'http://Example.com:8080/a/c'); \
               return [url.href, url.host, url.hostname, url.port, url.pathname, url.search, url.hash, url.origin, \
                       url.searchParams.get('y'), URL.canParse('nope'), new URLSearchParams({a: '1 2', b: 'é'}).toString()].join('|'); })()",
            &names
        ),
        "http://example.com:8080/b?x=1&y=a+b#frag|example.com:8080|example.com|8080|/b|?x=1&y=a+b|#frag|http://example.com:8080|a b|false|a=1+2&b=%C3%A9"
    );
    assert_eq!(
        probe_str(
            &mut guest,
            "[btoa('hello!?'), atob('aGVsbG8hPw=='), atob(btoa('\\u00ff\\u0000x'))].join()",
            &names
        ),
        "aGVsbG8hPw==,hello!?,\u{ff}\u{0}x"
    );
    let error = probe_str(
        &mut guest,
        "(() => { try { new URL('not a url'); return 'parsed'; } catch (e) { return e.name + ': ' + e.message; } })()",
        &names,
    );
    assert!(error.starts_with("TypeError: Invalid URL"), "{error}");
    assert_eq!(
        probe_str(
            &mut guest,
            "(() => { const a = crypto.getRandomValues(new Uint8Array(32)); const b = crypto.getRandomValues(new Uint8Array(32)); \
               return [a.some(x => x !== 0), a.join() !== b.join(), /^[0-9a-f-]{36}$/.test(crypto.randomUUID())].join(); })()",
            &names
        ),
        "true,true,true"
    );
    // The globals are hardened.
    assert_eq!(
        probe_str(
            &mut guest,
            "(() => { try { URL.prototype.evil = 1; return 'changed'; } catch (e) { return 'frozen'; } })()",
            &names
        ),
        "frozen"
    );
}

/// The sends to the timer power, in order: (delay, result promise).
fn timer_sends(host: &MockHost) -> Vec<(f64, Reference)> {
    host.sends
        .borrow()
        .iter()
        .filter(|sent| sent.method.as_deref() == Some("delay"))
        .map(|sent| (sent.args[0].as_number().unwrap(), sent.result.clone().unwrap()))
        .collect()
}

#[test]
fn timers_fire_when_the_host_timer_settles_and_not_after_a_clear() {
    let (host, mut guest) = guest();
    let timer = Value::Remotable(Reference::new("Alleged: timer", ()));
    let globals = VatGlobals::new(["setTimeout", "clearTimeout", "setInterval", "clearInterval"])
        .unwrap()
        .with_power("timer", timer);
    let source = r#"
        export function buildRootObject() {
          const fired = [];
          let kept = 0;
          let interval = 0;
          return makeDefaultExo('root', {
            start() {
              setTimeout((label) => fired.push(label), 25, 'kept');
              const cleared = setTimeout(() => fired.push('cleared'), 50);
              clearTimeout(cleared);
              interval = setInterval(() => { fired.push('tick'); if (fired.filter(x => x === 'tick').length === 2) clearInterval(interval); }, 0);
              return 'started';
            },
            fired() { return fired.join(); },
          });
        }
    "#;
    let Value::Remotable(root) =
        fulfilled(guest.build_vat_with_globals(source, &Value::Null, &[], &store(), &Value::Null, &globals))
    else {
        panic!("no root");
    };
    assert_eq!(
        fulfilled(guest.deliver(&root, Some("start"), &[])).as_str(),
        Some("started")
    );
    let sends = timer_sends(&host);
    assert_eq!(
        sends.iter().map(|(ms, _)| *ms).collect::<Vec<_>>(),
        vec![25.0, 50.0, 1.0]
    );
    // The cleared timer's delay settles: nothing runs.
    guest.settle(&sends[1].1, Ok(Value::Undefined)).unwrap();
    assert_eq!(fulfilled(guest.deliver(&root, Some("fired"), &[])).as_str(), Some(""));
    guest.settle(&sends[0].1, Ok(Value::Undefined)).unwrap();
    guest.settle(&sends[2].1, Ok(Value::Undefined)).unwrap();
    assert_eq!(
        fulfilled(guest.deliver(&root, Some("fired"), &[])).as_str(),
        Some("kept,tick")
    );
    // The interval asked for its next tick; after the second it stops.
    let sends = timer_sends(&host);
    assert_eq!(sends.len(), 4);
    guest.settle(&sends[3].1, Ok(Value::Undefined)).unwrap();
    assert_eq!(timer_sends(&host).len(), 4, "a cleared interval asks for no more ticks");
    assert_eq!(
        fulfilled(guest.deliver(&root, Some("fired"), &[])).as_str(),
        Some("kept,tick,tick")
    );
}

#[test]
fn fetch_sends_the_request_to_the_fetch_power_and_reads_the_answer() {
    let (host, mut guest) = guest();
    let network = Value::Remotable(Reference::new("Alleged: network", ()));
    let globals = VatGlobals::new(["fetch", "Headers", "Response"])
        .unwrap()
        .with_power("fetch", network);
    let source = r#"
        export function buildRootObject() {
          return makeDefaultExo('root', {
            putBytes(url) {
              fetch(url, { method: 'PUT', body: new Uint8Array([1, 2, 3]) });
              return 'sent';
            },
            async get(url) {
              const response = await fetch(url, { method: 'POST', body: 'ping', headers: { 'X-Test': 'yes' } });
              return [response.status, response.ok, response.headers.get('content-type'), await response.text(), response.url].join('|');
            },
          });
        }
    "#;
    let Value::Remotable(root) =
        fulfilled(guest.build_vat_with_globals(source, &Value::Null, &[], &store(), &Value::Null, &globals))
    else {
        panic!("no root");
    };
    let outcome = guest
        .deliver(&root, Some("get"), &[Value::from("http://127.0.0.1:9/x")])
        .unwrap();
    let Outcome::Pending(answer) = outcome else {
        panic!("the fetch should wait on the host: {outcome:?}");
    };
    let request = {
        let sends = host.sends.borrow();
        let sent = sends
            .iter()
            .find(|sent| sent.method.as_deref() == Some("fetch"))
            .unwrap();
        (sent.args[0].clone(), sent.result.clone().unwrap())
    };
    let Value::Record(fields) = &request.0 else {
        panic!("the request is a record");
    };
    assert_eq!(fields.get("url").and_then(Value::as_str), Some("http://127.0.0.1:9/x"));
    assert_eq!(fields.get("method").and_then(Value::as_str), Some("POST"));
    assert_eq!(fields.get("body").and_then(Value::as_str), Some("ping"));
    let response = Value::record([
        ("status", Value::from(201)),
        ("statusText", Value::from("Created")),
        (
            "headers",
            Value::array([Value::array([Value::from("content-type"), Value::from("text/plain")])]),
        ),
        ("body", Value::ByteArray(b"pong".to_vec().into())),
        ("url", Value::from("http://127.0.0.1:9/x")),
        ("redirected", Value::Boolean(false)),
    ]);
    guest.settle(&request.1, Ok(response)).unwrap();
    let settled = host
        .settlement_of(&answer)
        .expect("the answer settled")
        .expect("fulfilled");
    assert_eq!(settled.as_str(), Some("201|true|text/plain|pong|http://127.0.0.1:9/x"));

    // A byte body goes to the host as bytes.
    assert_eq!(
        fulfilled(guest.deliver(&root, Some("putBytes"), &[Value::from("http://127.0.0.1:9/y")])).as_str(),
        Some("sent")
    );
    let sends = host.sends.borrow();
    let put = sends
        .iter()
        .filter(|sent| sent.method.as_deref() == Some("fetch"))
        .nth(1)
        .unwrap();
    let Value::Record(fields) = &put.args[0] else {
        panic!("the request is a record");
    };
    assert_eq!(fields.get("method").and_then(Value::as_str), Some("PUT"));
    match fields.get("body") {
        Some(Value::ByteArray(bytes)) => assert_eq!(&bytes[..], &[1, 2, 3]),
        other => panic!("expected bytes, got {other:?}"),
    }
}

#[test]
fn a_runaway_timer_callback_is_stopped_by_the_time_budget() {
    let (host, mut guest) = support::guest_with(capstan_js::GuestLimits {
        time_budget: std::time::Duration::from_millis(200),
        ..capstan_js::GuestLimits::default()
    });
    let timer = Value::Remotable(Reference::new("Alleged: timer", ()));
    let globals = VatGlobals::new(["setTimeout"]).unwrap().with_power("timer", timer);
    let source = r#"
        export function buildRootObject() {
          return makeDefaultExo('root', { spin() { setTimeout(() => { for (;;) {} }, 1); return 'armed'; } });
        }
    "#;
    let Value::Remotable(root) =
        fulfilled(guest.build_vat_with_globals(source, &Value::Null, &[], &store(), &Value::Null, &globals))
    else {
        panic!("no root");
    };
    assert_eq!(
        fulfilled(guest.deliver(&root, Some("spin"), &[])).as_str(),
        Some("armed")
    );
    let (_, fired) = timer_sends(&host).pop().unwrap();
    let started = std::time::Instant::now();
    let error = guest.settle(&fired, Ok(Value::Undefined)).unwrap_err();
    assert!(
        matches!(error, GuestError::TimeBudgetExceeded { budget_ms: 200 }),
        "{error}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
}
