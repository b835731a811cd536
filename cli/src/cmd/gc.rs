//! `capstan gc`: collects the formulas nothing reaches any more and prints
//! what went.

use capstan_protocol::{Value, list};

use crate::client::{call, with_client};
use crate::state::StateDir;

fn number(record: &Value, name: &str) -> u64 {
    match record.as_record().and_then(|record| record.get(name)) {
        Some(Value::Number(number)) if *number >= 0.0 => *number as u64,
        _ => 0,
    }
}

/// `capstan gc [--json]`: one line such as `collected 3 formulas (2 eval,
/// 1 readable-blob) and 1 blob, 1234 bytes freed; 12 formulas left`.
pub fn gc(state: &StateDir, as_agent: Option<&str>, json: bool) -> anyhow::Result<()> {
    let collected = with_client(state, as_agent, |client| async move {
        call(&client.agent, "collectGarbage", list![]).await
    })?;
    if json {
        println!("{}", super::to_json(&collected));
        return Ok(());
    }
    let formulas = number(&collected, "formulas");
    let types = match collected.as_record().and_then(|record| record.get("byType")) {
        Some(Value::Record(types)) => types
            .iter()
            .map(|(name, count)| format!("{} {name}", crate::inspect::inspect(count)))
            .collect::<Vec<_>>(),
        _ => Vec::new(),
    };
    let blobs = number(&collected, "blobs");
    let plural = |count: u64, word: &str| format!("{count} {word}{}", if count == 1 { "" } else { "s" });
    let mut line = format!("collected {}", plural(formulas, "formula"));
    if !types.is_empty() {
        line.push_str(&format!(" ({})", types.join(", ")));
    }
    line.push_str(&format!(
        " and {}, {} bytes freed; {} left",
        plural(blobs, "blob"),
        number(&collected, "bytesFreed"),
        plural(number(&collected, "formulasLeft"), "formula"),
    ));
    println!("{line}");
    Ok(())
}
