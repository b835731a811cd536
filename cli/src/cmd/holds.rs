//! Holds across nodes: which of this node's ids peers hold, which ids it
//! holds from them, and forgetting a peer's holds.

use capstan_protocol::{Value, list};

use crate::client::{call, with_client};
use crate::state::StateDir;

/// `capstan forget PEER`: drops every hold the node of the peer `PEER`
/// names (its handle, as `send` takes) has here; prints how many ids it
/// held.
pub fn forget(state: &StateDir, as_agent: Option<&str>, peer: &str) -> anyhow::Result<()> {
    let forgotten = with_client(state, as_agent, |client| async move {
        call(&client.agent, "forget", list![super::path(peer)]).await
    })?;
    println!("{}", crate::inspect::inspect_top(&forgotten));
    Ok(())
}

/// `capstan holds [--json]`: one line per node and kind, `held by NODE: N`
/// (N of our ids that node holds), `holding from NODE: N` (ids we hold
/// that it gave us) and `releasing to NODE: N` (releases not yet sent).
pub fn holds(state: &StateDir, as_agent: Option<&str>, json: bool) -> anyhow::Result<()> {
    let holds = with_client(state, as_agent, |client| async move {
        call(&client.agent, "listHolds", list![]).await
    })?;
    if json {
        println!("{}", super::to_json(&holds));
        return Ok(());
    }
    for (field, label) in [
        ("heldByPeers", "held by"),
        ("heldFromPeers", "holding from"),
        ("releasesPending", "releasing to"),
    ] {
        let entries = holds
            .as_record()
            .and_then(|record| record.get(field))
            .and_then(Value::as_array)
            .unwrap_or_default();
        for entry in entries {
            let get = |name: &str| entry.as_record().and_then(|record| record.get(name)).cloned();
            let node = get("nodeId")
                .map(|node| crate::inspect::inspect_top(&node))
                .unwrap_or_default();
            let formulas = get("formulas")
                .map(|count| crate::inspect::inspect_top(&count))
                .unwrap_or_default();
            println!("{label} {node}: {formulas}");
        }
    }
    Ok(())
}
