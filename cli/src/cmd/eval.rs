//! Running code: `eval` in a worker with named endowments, and `make` for
//! a module's `make(powers)`.

use anyhow::Context;
use capstan_protocol::{Value, list};

use super::path;
use crate::client::{call, with_client};
use crate::inspect::inspect_top;
use crate::state::StateDir;

pub fn eval(
    state: &StateDir,
    as_agent: Option<&str>,
    source: &str,
    endowments: &[String],
    worker: Option<&str>,
    name: Option<&str>,
) -> anyhow::Result<()> {
    let mut code_names = Vec::new();
    let mut paths = Vec::new();
    for endowment in endowments {
        let (code_name, pet_path) = endowment.split_once(':').unwrap_or((endowment, endowment));
        code_names.push(Value::from(code_name));
        paths.push(path(pet_path));
    }
    let result = with_client(state, as_agent, |client| async move {
        call(
            &client.agent,
            "evaluate",
            list![
                Value::from(worker.map(str::to_string)),
                source,
                Value::array(code_names),
                Value::array(paths),
                name.map_or(Value::Undefined, path)
            ],
        )
        .await
    })?;
    println!("{}", inspect_top(&result));
    Ok(())
}

pub fn make(
    state: &StateDir,
    as_agent: Option<&str>,
    file: Option<&std::path::Path>,
    bundle: Option<&str>,
    worker: Option<&str>,
    powers: Option<&str>,
    name: Option<&str>,
) -> anyhow::Result<()> {
    let worker = Value::from(worker.map(str::to_string));
    let powers = Value::from(powers.map(str::to_string));
    let name = name.map_or(Value::Undefined, path);
    let result = match (file, bundle) {
        (Some(file), _) => {
            let specifier = std::fs::canonicalize(file).with_context(|| format!("cannot find {}", file.display()))?;
            let specifier = specifier.display().to_string();
            with_client(state, as_agent, |client| async move {
                call(&client.agent, "makeUnconfined", list![worker, specifier, powers, name]).await
            })?
        }
        (None, Some(bundle)) => with_client(state, as_agent, |client| async move {
            call(&client.agent, "makeBundle", list![worker, path(bundle), powers, name]).await
        })?,
        (None, None) => anyhow::bail!("make needs a FILE or --bundle BLOBNAME"),
    };
    println!("{}", inspect_top(&result));
    Ok(())
}
