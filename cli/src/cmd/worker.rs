//! The hidden `__worker` entry point: the process the node starts for each
//! worker. It runs one JavaScript engine and speaks CapTP to the node over
//! standard input and output.

pub fn run(memory_bytes: u64, time_budget_ms: u64) -> anyhow::Result<()> {
    capstan_node::workers::process::run(memory_bytes, time_budget_ms).map_err(|error| anyhow::anyhow!("{error}"))
}
