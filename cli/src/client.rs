//! The CLI's side of the control socket: a vat of its own, one CapTP
//! session to the node, and the agent the command acts as.

use std::future::Future;

use anyhow::{Context, anyhow};
use capstan_node::runtime::{E, SessionOptions, Vat, connect_with, when};
use capstan_protocol::captp::Limits;
use capstan_protocol::{Value, list};
use tokio::net::UnixStream;

use crate::state::StateDir;

/// A connected client, inside its vat.
pub struct Client {
    /// The host agent (the socket's bootstrap object).
    pub host: Value,
    /// The agent the command acts as (`--as`), or the host.
    pub agent: Value,
}

/// Runs `body` with a connection to the node; fails if none runs.
pub fn with_client<F, T>(state: &StateDir, as_agent: Option<&str>, body: impl FnOnce(Client) -> F) -> anyhow::Result<T>
where
    F: Future<Output = anyhow::Result<T>>,
{
    let vat = Vat::new();
    let socket = state.paths.socket();
    vat.run_until(async {
        let stream = UnixStream::connect(&socket).await.map_err(|error| {
            anyhow!(
                "no node is running with state directory {} ({error}); start one with `capstan start`",
                state.paths.root.display()
            )
        })?;
        let client = open(&vat, stream, as_agent).await?;
        body(client).await
    })
}

async fn open(vat: &Vat, stream: UnixStream, as_agent: Option<&str>) -> anyhow::Result<Client> {
    let (reader, writer) = stream.into_split();
    // The node is ours: a large reply read slowly must not end the session.
    let connection = connect_with(
        vat,
        reader,
        writer,
        None,
        SessionOptions::toward_own_node(Limits::default()),
    );
    let host = connection.bootstrap();
    let agent = match as_agent {
        None => host.clone(),
        Some(path) => {
            let names = Value::array(path.split('.').map(Value::from));
            let agent = E(&host).call("lookup", list![names]);
            settle(&agent).await.with_context(|| format!("cannot act as {path}"))?
        }
    };
    let host = settle(&host).await.context("the node did not answer")?;
    Ok(Client { host, agent })
}

/// Awaits a promise, turning a rejection into an error with its message
/// (never an empty one, nor a bare `null`).
pub async fn settle(value: &Value) -> anyhow::Result<Value> {
    when(value)
        .await
        .map_err(|reason| anyhow!("{}", crate::inspect::describe_reason(&reason)))
}

/// Sends `method` to `target` and awaits the result.
pub async fn call(target: &Value, method: &str, args: Value) -> anyhow::Result<Value> {
    settle(&E(target).call(method, args)).await
}
