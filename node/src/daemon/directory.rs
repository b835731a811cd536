//! Directories: name hubs over pet stores. The same directory methods
//! serve plain directories and the host agent (which adds its special
//! names). Every change is one store commit.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

use capstan_protocol::guards::DefaultGuards;
use capstan_protocol::patterns::M;
use capstan_protocol::{ErrorValue, Value, record};
use capstan_store::{FormulaId, NameChangeKind, NameFollower};

use super::Daemon;
use super::formula::Formula;
use super::names::{Hub, parse_path, parse_pet_name, store_error};
use crate::runtime::{Exo, MethodResult};

/// Methods that take or reveal formula identifiers: never on a guest's
/// directories.
const IDENTIFIER_METHODS: [&str; 4] = ["listIdentifiers", "identify", "locate", "write"];

/// The method guards of a name hub (without the identifier methods when
/// confined).
pub fn directory_method_guards(confined: bool) -> Vec<(&'static str, Value)> {
    let mut guards = all_directory_method_guards();
    if confined {
        guards.retain(|(name, _)| !IDENTIFIER_METHODS.contains(name));
    }
    guards
}

fn all_directory_method_guards() -> Vec<(&'static str, Value)> {
    let path = || M::or([M::string(), M::array_of(M::string(), None)]);
    vec![
        (
            "has",
            M::call([]).rest(M::array_of(M::string(), None)).returns(M::boolean()),
        ),
        (
            "list",
            M::call([])
                .rest(M::array_of(M::string(), None))
                .returns(M::array_of(M::string(), None)),
        ),
        (
            "listIdentifiers",
            M::call([])
                .rest(M::array_of(M::string(), None))
                .returns(M::array_of(M::string(), None)),
        ),
        ("lookup", M::call([path()]).returns(M::any())),
        (
            "reverseLookup",
            M::call([M::any()]).returns(M::array_of(M::string(), None)),
        ),
        (
            "identify",
            M::call([])
                .rest(M::array_of(M::string(), None))
                .returns(M::opt(M::string())),
        ),
        (
            "locate",
            M::call([])
                .rest(M::array_of(M::string(), None))
                .returns(M::opt(M::string())),
        ),
        ("write", M::call([path(), M::string()]).returns_undefined()),
        (
            "remove",
            M::call([]).rest(M::array_of(M::string(), None)).returns_undefined(),
        ),
        ("move", M::call([path(), path()]).returns_undefined()),
        ("copy", M::call([path(), path()]).returns_undefined()),
        ("makeDirectory", M::call([path()]).returns(M::remotable())),
        ("followNameChanges", M::call([]).returns(M::remotable())),
    ]
}

/// Adds the directory methods over `hub` to an exo; a confined hub has
/// no method that takes or reveals an identifier.
pub fn with_directory_methods(exo: Exo, daemon: &Rc<Daemon>, hub: Hub, confined: bool) -> Exo {
    let hub = Rc::new(hub);
    let method = |exo: Exo, name: &str, body: fn(&Rc<Daemon>, &Hub, Vec<Value>) -> MethodResult| {
        let (daemon, hub) = (Rc::clone(daemon), Rc::clone(&hub));
        exo.method(name, move |_, args| body(&daemon, &hub, args))
    };
    let exo = method(exo, "has", |daemon, hub, args| {
        let path = strings(&args)?;
        Ok(Value::Boolean(!path.is_empty() && hub.resolve(daemon, &path).is_ok()))
    });
    let exo = method(exo, "list", |daemon, hub, args| {
        let names = listed(daemon, hub, &strings(&args)?)?;
        Ok(Value::array(names.into_iter().map(|(name, _)| Value::from(name))))
    });
    let exo = method(exo, "lookup", |daemon, hub, args| {
        let path = parse_path(&args[0])?;
        Ok(daemon.provide(hub.resolve(daemon, &path)?))
    });
    let exo = method(exo, "reverseLookup", |daemon, hub, args| {
        let Some(id) = daemon.identify(&args[0]) else {
            return Ok(Value::array([]));
        };
        let names = daemon
            .store
            .read()
            .and_then(|snapshot| snapshot.reverse_lookup_in(hub.pet_store, id))
            .map_err(store_error)?;
        let mut names: Vec<Value> = names.into_iter().map(|name| Value::from(name.as_str())).collect();
        names.extend(
            hub.specials
                .iter()
                .filter(|(_, special)| *special == id)
                .map(|(name, _)| Value::from(*name)),
        );
        Ok(Value::array(names))
    });
    let exo = if confined {
        exo
    } else {
        with_identifier_methods(exo, daemon, &hub)
    };
    let exo = async_method(exo, daemon, &hub, "remove", |daemon, hub, args| async move {
        let path = strings(&args)?;
        let (parent, name) = hub.resolve_parent(&daemon, &path)?;
        let pet = parse_pet_name(&name)?;
        let removed = daemon
            .store
            .remove_name(parent.pet_store, pet)
            .await
            .map_err(store_error)?;
        match removed {
            Some(_) => Ok(Value::Undefined),
            None => Err(super::names::unknown_name(&path.join("."))),
        }
    });
    let exo = async_method(exo, daemon, &hub, "move", |daemon, hub, args| async move {
        let (from, to) = (parse_path(&args[0])?, parse_path(&args[1])?);
        let (from_hub, from_name) = hub.resolve_parent(&daemon, &from)?;
        let (to_hub, to_name) = hub.resolve_parent(&daemon, &to)?;
        let (from_name, to_name) = (parse_pet_name(&from_name)?, parse_pet_name(&to_name)?);
        daemon
            .store
            .move_name(from_hub.pet_store, from_name, to_hub.pet_store, to_name)
            .await
            .map_err(|error| name_error(error, &from))?;
        Ok(Value::Undefined)
    });
    let exo = async_method(exo, daemon, &hub, "copy", |daemon, hub, args| async move {
        let (from, to) = (parse_path(&args[0])?, parse_path(&args[1])?);
        // Special names can be copied out (their id is known).
        let id = hub.resolve(&daemon, &from)?;
        let (to_hub, to_name) = hub.resolve_parent(&daemon, &to)?;
        let to_name = parse_pet_name(&to_name)?;
        daemon
            .store
            .write_name(to_hub.pet_store, to_name, id)
            .await
            .map_err(store_error)?;
        Ok(Value::Undefined)
    });
    let (made_by, made_in) = (Rc::clone(daemon), Rc::clone(&hub));
    let exo = exo.async_method("makeDirectory", move |_, args| {
        let (daemon, hub) = (Rc::clone(&made_by), Rc::clone(&made_in));
        make_directory_at(daemon, hub, args, confined)
    });
    let (follow_daemon, follow_hub) = (Rc::clone(daemon), Rc::clone(&hub));
    exo.method("followNameChanges", move |_, _| {
        let follower = follow_daemon
            .store
            .follow_names(follow_hub.pet_store)
            .map_err(store_error)?;
        make_name_change_stream(&follow_hub, follower)
    })
}

/// `makeDirectory(path)`: a new directory, named, in one commit.
async fn make_directory_at(daemon: Rc<Daemon>, hub: Rc<Hub>, args: Vec<Value>, confined: bool) -> MethodResult {
    {
        let path = parse_path(&args[0])?;
        let (parent, name) = hub.resolve_parent(&daemon, &path)?;
        let name = parse_pet_name(&name)?;
        let pet_store = FormulaId::random(daemon.node_id).map_err(store_error)?;
        let directory = FormulaId::random(daemon.node_id).map_err(store_error)?;
        let directory_formula = if confined {
            Formula::ConfinedDirectory {
                pet_store: pet_store.into(),
            }
        } else {
            Formula::Directory {
                pet_store: pet_store.into(),
            }
        };
        daemon
            .commit_formulas(
                &[(pet_store, Formula::PetStore), (directory, directory_formula)],
                vec![(parent.pet_store, name, directory)],
            )
            .await?;
        daemon.provide_settled(directory).await
    }
}

/// The methods that take or reveal identifiers (hosts only).
fn with_identifier_methods(exo: Exo, daemon: &Rc<Daemon>, hub: &Rc<Hub>) -> Exo {
    let method = |exo: Exo, name: &str, body: fn(&Rc<Daemon>, &Hub, Vec<Value>) -> MethodResult| {
        let (daemon, hub) = (Rc::clone(daemon), Rc::clone(hub));
        exo.method(name, move |_, args| body(&daemon, &hub, args))
    };
    let exo = method(exo, "listIdentifiers", |daemon, hub, args| {
        let names = listed(daemon, hub, &strings(&args)?)?;
        Ok(Value::array(
            names.into_iter().map(|(_, id)| Value::from(id.to_string())),
        ))
    });
    let exo = method(exo, "identify", |daemon, hub, args| {
        let path = strings(&args)?;
        Ok(hub
            .resolve(daemon, &path)
            .ok()
            .map_or(Value::Undefined, |id| Value::from(id.to_string())))
    });
    let exo = method(exo, "locate", |daemon, hub, args| {
        let path = strings(&args)?;
        match hub.resolve(daemon, &path) {
            Ok(id) => Ok(Value::from(locator(daemon, id)?)),
            Err(_) => Ok(Value::Undefined),
        }
    });
    async_method(exo, daemon, hub, "write", |daemon, hub, args| async move {
        let path = parse_path(&args[0])?;
        let id: FormulaId = args[1]
            .as_str()
            .and_then(|text| text.parse().ok())
            .ok_or_else(|| ErrorValue::type_error("write needs a formula identifier"))?;
        let (parent, name) = hub.resolve_parent(&daemon, &path)?;
        let name = parse_pet_name(&name)?;
        daemon
            .store
            .write_name(parent.pet_store, name, id)
            .await
            .map_err(store_error)?;
        Ok(Value::Undefined)
    })
}

fn async_method<F>(
    exo: Exo,
    daemon: &Rc<Daemon>,
    hub: &Rc<Hub>,
    name: &str,
    body: fn(Rc<Daemon>, Rc<Hub>, Vec<Value>) -> F,
) -> Exo
where
    F: std::future::Future<Output = MethodResult> + 'static,
{
    let (daemon, hub) = (Rc::clone(daemon), Rc::clone(hub));
    exo.async_method(name, move |_, args| body(Rc::clone(&daemon), Rc::clone(&hub), args))
}

fn strings(args: &[Value]) -> Result<Vec<String>, ErrorValue> {
    args.iter()
        .map(|arg| {
            arg.as_str()
                .map(str::to_string)
                .ok_or_else(|| ErrorValue::type_error("names must be strings"))
        })
        .collect()
}

fn listed(daemon: &Daemon, hub: &Hub, path: &[String]) -> Result<Vec<(String, FormulaId)>, ErrorValue> {
    if path.is_empty() {
        return hub.list(daemon);
    }
    let id = hub.resolve(daemon, path)?;
    let inner = Hub::of_formula(daemon, id)?
        .ok_or_else(|| ErrorValue::type_error(format!("{} is not a directory", path.join("."))))?;
    inner.list(daemon)
}

fn name_error(error: capstan_store::StoreError, path: &[String]) -> ErrorValue {
    match error {
        capstan_store::StoreError::NameNotFound { .. } => super::names::unknown_name(&path.join(".")),
        other => store_error(other),
    }
}

/// A locator for formula `id`: `capstan://{node}/?id={number}&type={type}`.
pub fn locator(daemon: &Daemon, id: FormulaId) -> Result<String, ErrorValue> {
    if id.node() != daemon.node_id {
        // Another node's formula: its type is known only there.
        let number: String = id.number().iter().map(|byte| format!("{byte:02x}")).collect();
        return Ok(format!("capstan://{}/?id={number}&type=remote", id.node()));
    }
    let formula = daemon
        .formula(id)
        .map_err(|error| ErrorValue::plain(error.to_string()))?;
    let number: String = id.number().iter().map(|byte| format!("{byte:02x}")).collect();
    Ok(format!(
        "capstan://{}/?id={number}&type={}",
        id.node(),
        formula.type_name()
    ))
}

/// Makes a directory object over a pet store.
pub fn make_directory(daemon: &Rc<Daemon>, pet_store: FormulaId, confined: bool) -> Result<Value, ErrorValue> {
    let hub = Hub {
        pet_store,
        specials: Vec::new(),
    };
    let exo = Exo::new("EndoDirectory").interface(M::interface(
        "EndoDirectory",
        directory_method_guards(confined),
        DefaultGuards::None,
    ));
    with_directory_methods(exo, daemon, hub, confined).make()
}

/// A stream of name changes: the names there now (as additions), then
/// each later change, as `{add: name}` or `{remove: name}` from `next()`.
fn make_name_change_stream(hub: &Hub, follower: NameFollower) -> MethodResult {
    let mut backlog: VecDeque<Value> = hub
        .specials
        .iter()
        .map(|(name, _)| record! { "add" => *name })
        .collect();
    backlog.extend(
        follower
            .snapshot
            .iter()
            .map(|(name, _)| record! { "add" => name.as_str() }),
    );
    let state = Rc::new(StreamState {
        backlog: RefCell::new(backlog),
        follower: tokio::sync::Mutex::new(Some(follower)),
    });
    let next_state = Rc::clone(&state);
    Exo::new("NameChangeStream")
        .interface(M::interface(
            "NameChangeStream",
            [
                ("next", M::call_when([]).returns(M::record())),
                ("return", M::call_when([]).rest(M::any()).returns(M::record())),
            ],
            DefaultGuards::None,
        ))
        .async_method("next", move |_, _| {
            let state = Rc::clone(&next_state);
            async move {
                // One `next` at a time takes the follower, so concurrent
                // calls get successive changes.
                let mut follower = state.follower.lock().await;
                if let Some(change) = state.backlog.borrow_mut().pop_front() {
                    return Ok(record! { "done" => false, "value" => change });
                }
                let Some(follower) = follower.as_mut() else {
                    return Ok(record! { "done" => true, "value" => Value::Undefined });
                };
                let change = follower.next().await.map_err(store_error)?;
                let value = match change.kind {
                    NameChangeKind::Added { name, .. } => record! { "add" => name.as_str() },
                    NameChangeKind::Removed { name } => record! { "remove" => name.as_str() },
                };
                Ok(record! { "done" => false, "value" => value })
            }
        })
        .async_method("return", move |_, _| {
            let state = Rc::clone(&state);
            async move {
                *state.follower.lock().await = None;
                Ok(record! { "done" => true, "value" => Value::Undefined })
            }
        })
        .make()
}

struct StreamState {
    backlog: RefCell<VecDeque<Value>>,
    follower: tokio::sync::Mutex<Option<NameFollower>>,
}
