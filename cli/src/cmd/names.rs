//! Names: list, show, follow, remove, move, copy, mkdir, locate, spawn,
//! cancel. Each is one call on the agent.

use capstan_protocol::{Value, list};

use super::path;
use crate::client::{call, with_client};
use crate::inspect::{inspect, inspect_top};
use crate::state::StateDir;

pub fn list(
    state: &StateDir,
    as_agent: Option<&str>,
    at: Option<&str>,
    json: bool,
    follow: bool,
) -> anyhow::Result<()> {
    with_client(state, as_agent, |client| async move {
        let target = match at {
            Some(at) => call(&client.agent, "lookup", list![path(at)]).await?,
            None => client.agent.clone(),
        };
        if follow {
            let stream = call(&target, "followNameChanges", list![]).await?;
            loop {
                let step = call(&stream, "next", list![]).await?;
                let Some(record) = step.as_record() else { break };
                if matches!(record.get("done"), Some(Value::Boolean(true))) {
                    break;
                }
                let change = record.get("value").and_then(Value::as_record);
                match (
                    change.and_then(|c| c.get("add")).and_then(Value::as_str),
                    change.and_then(|c| c.get("remove")).and_then(Value::as_str),
                ) {
                    (Some(added), _) => println!("{added}"),
                    (_, Some(removed)) => println!("-{removed}"),
                    _ => {}
                }
            }
            return Ok(());
        }
        let names = call(&target, "list", list![]).await?;
        if json {
            println!("{}", super::to_json(&names));
        } else {
            for name in names.as_array().unwrap_or_default() {
                println!("{}", inspect_top(name));
            }
        }
        Ok(())
    })
}

pub fn show(state: &StateDir, as_agent: Option<&str>, name: &str) -> anyhow::Result<()> {
    let value = with_client(state, as_agent, |client| async move {
        call(&client.agent, "lookup", list![path(name)]).await
    })?;
    println!("{}", inspect_top(&value));
    Ok(())
}

pub fn follow(state: &StateDir, as_agent: Option<&str>, name: &str) -> anyhow::Result<()> {
    with_client(state, as_agent, |client| async move {
        let stream = call(&client.agent, "lookup", list![path(name)]).await?;
        loop {
            let step = call(&stream, "next", list![]).await?;
            let Some(record) = step.as_record() else {
                anyhow::bail!("{name} is not a stream: next() gave {}", inspect(&step));
            };
            if matches!(record.get("done"), Some(Value::Boolean(true))) {
                return Ok(());
            }
            println!("{}", inspect_top(record.get("value").unwrap_or(&Value::Undefined)));
        }
    })
}

pub fn remove(state: &StateDir, as_agent: Option<&str>, names: &[String]) -> anyhow::Result<()> {
    with_client(state, as_agent, |client| async move {
        for name in names {
            let parts: Vec<Value> = name.split('.').map(Value::from).collect();
            call(&client.agent, "remove", Value::array(parts)).await?;
        }
        Ok(())
    })
}

pub fn move_name(state: &StateDir, as_agent: Option<&str>, from: &str, to: &str) -> anyhow::Result<()> {
    with_client(state, as_agent, |client| async move {
        call(&client.agent, "move", list![path(from), path(to)])
            .await
            .map(|_| ())
    })
}

pub fn copy(state: &StateDir, as_agent: Option<&str>, from: &str, to: &str) -> anyhow::Result<()> {
    with_client(state, as_agent, |client| async move {
        call(&client.agent, "copy", list![path(from), path(to)])
            .await
            .map(|_| ())
    })
}

pub fn mkdir(state: &StateDir, as_agent: Option<&str>, at: &str) -> anyhow::Result<()> {
    with_client(state, as_agent, |client| async move {
        call(&client.agent, "makeDirectory", list![path(at)]).await.map(|_| ())
    })
}

pub fn locate(state: &StateDir, as_agent: Option<&str>, name: &str) -> anyhow::Result<()> {
    let locator = with_client(state, as_agent, |client| async move {
        let parts: Vec<Value> = name.split('.').map(Value::from).collect();
        call(&client.agent, "locate", Value::array(parts)).await
    })?;
    match locator {
        Value::String(text) => {
            println!("{text}");
            Ok(())
        }
        _ => anyhow::bail!("Unknown pet name: {name:?}"),
    }
}

pub fn spawn(state: &StateDir, as_agent: Option<&str>, name: &str) -> anyhow::Result<()> {
    with_client(state, as_agent, |client| async move {
        call(&client.agent, "provideWorker", list![path(name)])
            .await
            .map(|_| ())
    })
}

pub fn cancel(state: &StateDir, as_agent: Option<&str>, name: &str) -> anyhow::Result<()> {
    with_client(state, as_agent, |client| async move {
        call(&client.agent, "cancel", list![path(name)]).await.map(|_| ())
    })
}
