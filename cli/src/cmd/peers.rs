//! Peers: invitations between nodes.

use std::io::Read;

use anyhow::{Context, bail};
use capstan_protocol::{Value, list};

use crate::client::{call, with_client};
use crate::state::StateDir;

/// `capstan invite GUEST`: prints the invitation's locator alone on a line.
pub fn invite(state: &StateDir, as_agent: Option<&str>, guest: &str) -> anyhow::Result<()> {
    let locator = with_client(state, as_agent, |client| async move {
        call(&client.agent, "invite", list![guest]).await
    })?;
    match locator {
        Value::String(text) => println!("{text}"),
        other => bail!("the node answered {}", crate::inspect::inspect(&other)),
    }
    Ok(())
}

/// `capstan accept NAME [LOCATOR]`: the locator from standard input when
/// not given.
pub fn accept(state: &StateDir, as_agent: Option<&str>, name: &str, locator: Option<&str>) -> anyhow::Result<()> {
    let locator = match locator {
        Some(text) => text.trim().to_string(),
        None => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("cannot read the locator from standard input")?;
            text.trim().to_string()
        }
    };
    if locator.is_empty() {
        bail!("no locator given (pass it, or pipe it on standard input)");
    }
    with_client(state, as_agent, |client| async move {
        call(&client.agent, "accept", list![locator, super::path(name)]).await
    })?;
    Ok(())
}
