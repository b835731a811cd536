//! Runs the exo and guard cases of the value layer's Endo conformance
//! suite (`protocol/tests/conformance/80-guards.json`) as guest
//! JavaScript: the same sources, the same expected messages.

#![allow(clippy::expect_used, clippy::unwrap_used, reason = "a test fails by panicking")]

mod support;

use capstan_protocol::Value;
use serde_json::Value as Json;
use support::{eval, guest};

fn cases() -> Vec<Json> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../protocol/tests/conformance/80-guards.json"
    );
    let text = std::fs::read_to_string(path).expect("conformance file");
    let suite: Json = serde_json::from_str(&text).expect("conformance JSON");
    suite["cases"].as_array().cloned().unwrap_or_default()
}

/// Kit cases abbreviate their methods as `{"facet":["method"]} /* each
/// returns X */`; expand that into real methods.
fn expand_kit_source(case: &Json) -> String {
    let source = case["source"].as_str().unwrap_or_default().to_string();
    let Some(comment_start) = source.find("/* each returns ") else {
        return source;
    };
    let comment_end = source[comment_start..]
        .find("*/")
        .map_or(source.len(), |end| comment_start + end + 2);
    let returned = source[comment_start + "/* each returns ".len()..comment_end - 3]
        .trim()
        .to_string();
    let methods = case["methods"].as_object().cloned().unwrap_or_default();
    let facets: Vec<String> = methods
        .iter()
        .map(|(facet, names)| {
            let bodies: Vec<String> = names
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Json::as_str)
                .map(|name| format!("{name}() {{ return {returned}; }}"))
                .collect();
            format!("{facet}: {{ {} }}", bodies.join(", "))
        })
        .collect();
    let Some(object_start) = source[..comment_start].rfind(", {\"").map(|index| index + 2) else {
        return source;
    };
    format!(
        "{}{{ {} }}{}",
        &source[..object_start],
        facets.join(", "),
        &source[comment_end..]
    )
}

#[test]
fn exo_and_guard_cases_give_endos_outcomes_and_messages() {
    let (_host, mut guest) = guest();
    let mut checked = 0;
    let mut mismatches = Vec::new();
    for case in cases() {
        let source = match case["kind"].as_str() {
            Some("exoKit") => expand_kit_source(&case),
            _ => case["source"].as_str().unwrap_or_default().to_string(),
        };
        let wrapped = format!(
            "const p1 = harden(Promise.resolve(1)); \
             const resolved = value => harden(Promise.resolve(value)); \
             const rejected = reason => harden(Promise.reject(reason)); \
             const alice = Far('alice', {{}}); \
             (async () => {{ try {{ const result = await ({source}); passStyleOf(harden(result)); return harden(['ok']); }} \
               catch (error) {{ return harden(['error', String(error.message), error.name]); }} }})()"
        );
        let outcome = eval(&mut guest, &wrapped);
        let parts = outcome.as_array().map(<[Value]>::to_vec).unwrap_or_default();
        let status = parts.first().and_then(Value::as_str).unwrap_or("?");
        let expected_ok = case["ok"].as_bool().unwrap_or(false);
        let id = case["id"].as_str().unwrap_or("?");
        checked += 1;
        if expected_ok {
            if status != "ok" {
                mismatches.push(format!("{id}: expected success, got {outcome:?}"));
            }
            continue;
        }
        let expected = case["message"].as_str().unwrap_or_default();
        let actual = parts.get(1).and_then(Value::as_str).unwrap_or_default();
        if status != "error" || actual != expected {
            mismatches.push(format!("{id}:\n    expected: {expected}\n    actual:   {actual}"));
        }
    }
    assert!(checked > 100, "only {checked} cases");
    assert!(
        mismatches.is_empty(),
        "{} of {checked} cases differ:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
}
