//! Carries out each command; one module per group of commands.

pub mod eval;
pub mod gc;
pub mod holds;
pub mod kernel;
pub mod life;
pub mod mail;
pub mod names;
pub mod peers;
pub mod store;
pub mod web;
pub mod worker;

use capstan_protocol::Value;

use crate::commands::Command;
use crate::state::StateDir;

pub fn run(command: &Command, state: &StateDir, as_agent: Option<&str>) -> anyhow::Result<()> {
    match command {
        Command::Start(args) => life::start(state, args),
        Command::Stop => life::stop(state),
        Command::Restart(args) => life::restart(state, args),
        Command::Status { json } => life::status(state, *json),
        Command::Ping => life::ping(state),
        Command::Peers { json } => life::peers(state, *json),
        Command::Invite { guest } => peers::invite(state, as_agent, guest),
        Command::Accept { name, locator } => peers::accept(state, as_agent, name, locator.as_deref()),
        Command::Log { follow } => life::log(state, *follow),
        Command::Where { what } => life::where_is(state, *what),
        Command::Purge { force } => life::purge(state, *force),
        Command::Eval {
            source,
            endowments,
            worker,
            name,
        } => eval::eval(state, as_agent, source, endowments, worker.as_deref(), name.as_deref()),
        Command::Spawn { name } => names::spawn(state, as_agent, name),
        Command::Make {
            file,
            bundle,
            worker,
            powers,
            name,
        } => eval::make(
            state,
            as_agent,
            file.as_deref(),
            bundle.as_deref(),
            worker.as_deref(),
            powers.as_deref(),
            name.as_deref(),
        ),
        Command::List { path, json, follow } => names::list(state, as_agent, path.as_deref(), *json, *follow),
        Command::Show { name } => names::show(state, as_agent, name),
        Command::Follow { name } => names::follow(state, as_agent, name),
        Command::Cat { name } => store::cat(state, as_agent, name),
        Command::Remove { names } => names::remove(state, as_agent, names),
        Command::Move { from, to } => names::move_name(state, as_agent, from, to),
        Command::Copy { from, to } => names::copy(state, as_agent, from, to),
        Command::Mkdir { path } => names::mkdir(state, as_agent, path),
        Command::Locate { name } => names::locate(state, as_agent, name),
        Command::Store(args) => store::store(state, as_agent, args),
        Command::Cancel { name } => names::cancel(state, as_agent, name),
        Command::Gc { json } => gc::gc(state, as_agent, *json),
        Command::Mkhost { name } => mail::make_agent(state, as_agent, "provideHost", name, &[]),
        Command::Mkguest { name, introduce } => mail::make_agent(state, as_agent, "provideGuest", name, introduce),
        Command::Inbox { follow } => mail::inbox(state, as_agent, *follow),
        Command::Send { agent, text } => mail::send(state, as_agent, agent, text),
        Command::Adopt { number, edge, name } => mail::adopt(state, as_agent, *number, edge, name.as_deref()),
        Command::Dismiss { number } => mail::dismiss(state, as_agent, *number),
        Command::Request { description, to, name } => {
            mail::request(state, as_agent, description, to.as_deref(), name.as_deref())
        }
        Command::Resolve { number, name } => mail::resolve(state, as_agent, *number, name),
        Command::Reject { number, message } => mail::reject(state, as_agent, *number, message.as_deref()),
        Command::Forget { peer } => holds::forget(state, as_agent, peer),
        Command::Holds { json } => holds::holds(state, as_agent, *json),
        Command::Kernel(command) => kernel::run(state, as_agent, command),
        Command::Install {
            dir,
            name,
            powers,
            introduce,
        } => web::install(state, as_agent, dir, name, powers.as_deref(), introduce),
        Command::Open { name, print } => web::open(state, as_agent, name, *print),
        Command::Worker { .. } => Ok(()),
    }
}

/// A dot-path as the array of names the host takes.
pub fn path(text: &str) -> Value {
    Value::array(text.split('.').map(Value::from))
}

/// A passable as JSON, for `--json` output.
pub fn to_json(value: &Value) -> serde_json::Value {
    use serde_json::Value as Json;
    match value {
        Value::Undefined | Value::Null => Json::Null,
        Value::Boolean(b) => Json::Bool(*b),
        Value::Number(n) if n.fract() == 0.0 && n.abs() < 9_007_199_254_740_992.0 => Json::from(*n as i64),
        Value::Number(n) => serde_json::Number::from_f64(*n).map_or(Json::Null, Json::Number),
        Value::BigInt(n) => Json::String(n.to_string()),
        Value::String(text) => Json::String(text.to_string()),
        Value::Array(items) => Json::Array(items.iter().map(to_json).collect()),
        Value::Record(record) => Json::Object(record.iter().map(|(k, v)| (k.to_string(), to_json(v))).collect()),
        other => Json::String(crate::inspect::inspect(other)),
    }
}

pub use capstan_protocol::json::from_json;
