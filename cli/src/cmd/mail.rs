//! Agents and mail: mkhost, mkguest, inbox, send, adopt, dismiss,
//! request, resolve, reject.

use std::io::Write;

use anyhow::bail;
use capstan_protocol::{Value, list, record};

use super::path;
use crate::client::{call, with_client};
use crate::inspect::inspect_top;
use crate::state::StateDir;

pub fn make_agent(
    state: &StateDir,
    as_agent: Option<&str>,
    method: &str,
    name: &str,
    introduce: &[String],
) -> anyhow::Result<()> {
    let mut introduced = Vec::new();
    for pair in introduce {
        let Some((yours, theirs)) = pair.split_once(':') else {
            bail!("--introduce takes yours:theirs, not {pair:?}");
        };
        introduced.push((yours.to_string(), Value::from(theirs)));
    }
    let options = record! { "introducedNames" => Value::record(introduced) };
    with_client(state, as_agent, |client| async move {
        call(&client.agent, method, list![path(name), options])
            .await
            .map(|_| ())
    })
}

/// Parses `text with @edge:petname` into strings, edge names and pet
/// names: reference `i` sits between strings `i` and `i + 1`.
pub fn parse_message(text: &str) -> (Vec<String>, Vec<String>, Vec<String>) {
    let (mut strings, mut edges, mut pets) = (Vec::new(), Vec::new(), Vec::new());
    let mut current = String::new();
    let mut rest = text;
    while let Some(at) = rest.find('@') {
        current.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let end = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == ':' || c == '.'))
            .unwrap_or(after.len());
        let token = after[..end].trim_end_matches(['.', ':']);
        if token.is_empty() {
            current.push('@');
            rest = after;
            continue;
        }
        let (edge, pet) = token.split_once(':').unwrap_or((token, token));
        strings.push(std::mem::take(&mut current));
        edges.push(edge.to_string());
        pets.push(pet.to_string());
        rest = &after[token.len()..];
    }
    current.push_str(rest);
    strings.push(current);
    (strings, edges, pets)
}

/// One line for a message: `3. "alice" sent "a counter for you @counter"`.
fn describe(message: &Value) -> String {
    let Some(record) = message.as_record() else {
        return inspect_top(message);
    };
    let text = |name: &str| record.get(name).and_then(Value::as_str).unwrap_or_default().to_string();
    let number = record.get("number").map(inspect_top).unwrap_or_default();
    let from = record
        .get("fromNames")
        .and_then(Value::as_array)
        .and_then(|names| names.first())
        .and_then(Value::as_str)
        .unwrap_or("unknown")
        .to_string();
    match text("type").as_str() {
        "package" => {
            let strings: Vec<String> = record
                .get("strings")
                .and_then(Value::as_array)
                .unwrap_or_default()
                .iter()
                .map(inspect_top)
                .collect();
            let names: Vec<String> = record
                .get("names")
                .and_then(Value::as_array)
                .unwrap_or_default()
                .iter()
                .map(inspect_top)
                .collect();
            let mut body = String::new();
            for (index, piece) in strings.iter().enumerate() {
                body.push_str(piece);
                if let Some(name) = names.get(index) {
                    body.push('@');
                    body.push_str(name);
                }
            }
            format!("{number}. {from:?} sent {body:?}")
        }
        "request" => {
            let settled = text("settled");
            let suffix = if settled.is_empty() || settled == "pending" {
                String::new()
            } else {
                format!(" ({settled})")
            };
            format!("{number}. {from:?} requested {:?}{suffix}", text("description"))
        }
        other => format!("{number}. {from:?} sent a {other}"),
    }
}

pub fn inbox(state: &StateDir, as_agent: Option<&str>, follow: bool) -> anyhow::Result<()> {
    with_client(state, as_agent, |client| async move {
        // The messages held, a page at a time, each after the last number
        // printed, until one comes back empty.
        let mut first = 0.0;
        loop {
            let page = call(&client.agent, "listMessages", list![first]).await?;
            let messages = page.as_array().unwrap_or_default();
            let Some(last) = messages.last() else { break };
            let mut out = std::io::stdout().lock();
            for message in messages {
                writeln!(out, "{}", describe(message))?;
            }
            let number = last
                .as_record()
                .and_then(|record| record.get("number"))
                .and_then(Value::as_number);
            match number {
                Some(number) if number + 1.0 > first => first = number + 1.0,
                _ => bail!("the node listed messages out of order"),
            }
        }
        if !follow {
            return Ok(());
        }
        // Then the ones after those, as they come.
        let stream = call(&client.agent, "followMessages", list![first]).await?;
        loop {
            let step = call(&stream, "next", list![]).await?;
            let Some(record) = step.as_record() else { break };
            if matches!(record.get("done"), Some(Value::Boolean(true))) {
                break;
            }
            let mut out = std::io::stdout().lock();
            writeln!(out, "{}", describe(record.get("value").unwrap_or(&Value::Undefined)))?;
            out.flush()?;
        }
        Ok(())
    })
}

pub fn send(state: &StateDir, as_agent: Option<&str>, agent: &str, text: &str) -> anyhow::Result<()> {
    let (strings, edges, pets) = parse_message(text);
    let strings = Value::array(strings.into_iter().map(Value::from));
    let edges = Value::array(edges.into_iter().map(Value::from));
    let pets = Value::array(pets.iter().map(|pet| path(pet)));
    with_client(state, as_agent, |client| async move {
        call(&client.agent, "send", list![path(agent), strings, edges, pets])
            .await
            .map(|_| ())
    })
}

pub fn adopt(
    state: &StateDir,
    as_agent: Option<&str>,
    number: u64,
    edge: &str,
    name: Option<&str>,
) -> anyhow::Result<()> {
    let name = name.map_or(Value::Undefined, path);
    with_client(state, as_agent, |client| async move {
        call(&client.agent, "adopt", list![number as f64, edge, name])
            .await
            .map(|_| ())
    })
}

pub fn dismiss(state: &StateDir, as_agent: Option<&str>, number: u64) -> anyhow::Result<()> {
    with_client(state, as_agent, |client| async move {
        call(&client.agent, "dismiss", list![number as f64]).await.map(|_| ())
    })
}

pub fn request(
    state: &StateDir,
    as_agent: Option<&str>,
    description: &str,
    to: Option<&str>,
    name: Option<&str>,
) -> anyhow::Result<()> {
    let to = path(to.unwrap_or("HOST"));
    let name = Value::from(name.map(str::to_string));
    let value = with_client(state, as_agent, |client| async move {
        call(&client.agent, "request", list![to, description, name]).await
    })?;
    println!("{}", inspect_top(&value));
    Ok(())
}

pub fn resolve(state: &StateDir, as_agent: Option<&str>, number: u64, name: &str) -> anyhow::Result<()> {
    with_client(state, as_agent, |client| async move {
        call(&client.agent, "resolve", list![number as f64, path(name)])
            .await
            .map(|_| ())
    })
}

pub fn reject(state: &StateDir, as_agent: Option<&str>, number: u64, message: Option<&str>) -> anyhow::Result<()> {
    let message = Value::from(message.map(str::to_string));
    with_client(state, as_agent, |client| async move {
        call(&client.agent, "reject", list![number as f64, message])
            .await
            .map(|_| ())
    })
}

#[cfg(test)]
mod tests {
    use super::parse_message;

    #[test]
    fn parses_references_in_text() {
        let (strings, edges, pets) = parse_message("a counter for you @counter:my-counter, enjoy @thing");
        assert_eq!(strings, ["a counter for you ", ", enjoy ", ""]);
        assert_eq!(edges, ["counter", "thing"]);
        assert_eq!(pets, ["my-counter", "thing"]);
        let (strings, edges, _) = parse_message("mail me at me@ home");
        assert_eq!((strings.len(), edges.len()), (1, 0));
    }
}
