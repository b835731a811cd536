//! The host agent: the user's full-authority agent. It names values (the
//! directory methods over its pet store plus its special names), evaluates
//! code in workers, makes programs, stores blobs and values, and cancels.
//! Every call that makes a formula and names it is one store commit.

use std::rc::Rc;

use capstan_protocol::guards::DefaultGuards;
use capstan_protocol::patterns::M;
use capstan_protocol::{ErrorValue, Value};
use capstan_store::FormulaId;

use super::Daemon;
use super::directory::directory_method_guards;
use super::formula::Formula;
use super::mail::{agent_exo, mail_method_guards};
use super::names::{Hub, parse_path, parse_pet_name, store_error};
use crate::runtime::Exo;

fn host_guards() -> Vec<(&'static str, Value)> {
    let path = || M::or([M::string(), M::array_of(M::string(), None)]);
    let mut guards = directory_method_guards(false);
    guards.extend(mail_method_guards());
    guards.extend([
        ("invite", M::call([M::string()]).returns(M::string())),
        ("accept", M::call([M::string(), path()]).returns_undefined()),
        (
            "evaluate",
            M::call([
                M::opt(M::string()),
                M::string(),
                M::array_of(M::string(), None),
                M::array_of(path(), None),
            ])
            .optional([M::opt(path())])
            .returns(M::any()),
        ),
        ("provideWorker", M::call([path()]).returns(M::remotable())),
        (
            "makeUnconfined",
            M::call([M::opt(M::string()), M::string(), M::opt(M::string())])
                .optional([M::opt(path())])
                .returns(M::any()),
        ),
        (
            "makeBundle",
            M::call([M::opt(M::string()), path(), M::opt(M::string())])
                .optional([M::opt(path())])
                .returns(M::any()),
        ),
        (
            "storeBlob",
            M::call_when([M::remotable()])
                .optional([M::opt(path())])
                .returns(M::remotable()),
        ),
        (
            "storeValue",
            M::call_when([M::await_(M::any()), path()]).returns_undefined(),
        ),
        ("cancel", M::call([path()]).optional([M::any()]).returns(M::number())),
        (
            "provideGuest",
            M::call_when([path()])
                .optional([M::opt(M::record())])
                .returns(M::remotable()),
        ),
        (
            "provideHost",
            M::call_when([path()])
                .optional([M::opt(M::record())])
                .returns(M::remotable()),
        ),
    ]);
    guards
}

/// Makes the host agent of formula `id`.
pub fn make_host(daemon: &Rc<Daemon>, id: FormulaId) -> Result<Value, ErrorValue> {
    let (exo, hub, handle) = agent_exo(daemon, id, "EndoHost", host_guards(), false)?;
    let hub = Rc::new(hub);

    let (d, h) = (Rc::clone(daemon), Rc::clone(&hub));
    let exo = exo.async_method("invite", move |_, args| {
        let (daemon, hub) = (Rc::clone(&d), Rc::clone(&h));
        async move { super::gateway::invite(&daemon, &hub, id, handle, &args).await }
    });
    let (d, h) = (Rc::clone(daemon), Rc::clone(&hub));
    let exo = exo.async_method("accept", move |_, args| {
        let (daemon, hub) = (Rc::clone(&d), Rc::clone(&h));
        async move { super::gateway::accept(&daemon, &hub, handle, &args).await }
    });

    let (d, h) = (Rc::clone(daemon), Rc::clone(&hub));
    let exo = exo.async_method("provideGuest", move |_, args| {
        let (daemon, hub) = (Rc::clone(&d), Rc::clone(&h));
        async move { provide_agent(&daemon, &hub, handle, &args, AgentKind::Guest).await }
    });
    let (d, h) = (Rc::clone(daemon), Rc::clone(&hub));
    let exo = exo.async_method("provideHost", move |_, args| {
        let (daemon, hub) = (Rc::clone(&d), Rc::clone(&h));
        async move { provide_agent(&daemon, &hub, handle, &args, AgentKind::Host).await }
    });

    let (d, h) = (Rc::clone(daemon), Rc::clone(&hub));
    let exo = exo.async_method("evaluate", move |_, args| {
        let (daemon, hub) = (Rc::clone(&d), Rc::clone(&h));
        async move {
            let worker = worker_for(&daemon, &hub, &args[0]).await?;
            let source = args[1].as_str().unwrap_or_default().to_string();
            let names: Vec<String> = args[2]
                .as_array()
                .unwrap_or_default()
                .iter()
                .filter_map(|name| name.as_str().map(str::to_string))
                .collect();
            let mut values = Vec::new();
            for path in args[3].as_array().unwrap_or_default() {
                values.push(hub.resolve(&daemon, &parse_path(path)?)?.into());
            }
            if names.len() != values.len() {
                return Err(ErrorValue::type_error("evaluate needs as many names as values"));
            }
            for name in &names {
                if !is_js_identifier(name) {
                    return Err(ErrorValue::type_error(format!(
                        "Invalid endowment name {}: it must be a JavaScript identifier",
                        capstan_protocol::quote::json_string(name)
                    )));
                }
            }
            let formula = Formula::Eval {
                worker: worker.into(),
                source,
                names,
                values,
            };
            let id = make_named(&daemon, &hub, &formula, args.get(4)).await?;
            Ok(daemon.provide(id))
        }
    });

    let (d, h) = (Rc::clone(daemon), Rc::clone(&hub));
    let exo = exo.async_method("provideWorker", move |_, args| {
        let (daemon, hub) = (Rc::clone(&d), Rc::clone(&h));
        async move {
            let path = parse_path(&args[0])?;
            let id = match hub.resolve(&daemon, &path) {
                Ok(id) => id,
                Err(_) => make_named(&daemon, &hub, &Formula::Worker, Some(&args[0])).await?,
            };
            daemon.provide_settled(id).await
        }
    });

    let (d, h) = (Rc::clone(daemon), Rc::clone(&hub));
    let exo = exo.async_method("makeUnconfined", move |_, args| {
        let (daemon, hub) = (Rc::clone(&d), Rc::clone(&h));
        async move {
            let worker = worker_for(&daemon, &hub, &args[0]).await?;
            let specifier = args[1].as_str().unwrap_or_default().to_string();
            let powers = powers_for(&daemon, &hub, &args[2])?;
            let formula = Formula::MakeUnconfined {
                worker: worker.into(),
                powers: powers.into(),
                specifier,
            };
            let id = make_named(&daemon, &hub, &formula, args.get(3)).await?;
            Ok(daemon.provide(id))
        }
    });

    let (d, h) = (Rc::clone(daemon), Rc::clone(&hub));
    let exo = exo.async_method("makeBundle", move |_, args| {
        let (daemon, hub) = (Rc::clone(&d), Rc::clone(&h));
        async move {
            let worker = worker_for(&daemon, &hub, &args[0]).await?;
            let bundle = hub.resolve(&daemon, &parse_path(&args[1])?)?;
            let powers = powers_for(&daemon, &hub, &args[2])?;
            let formula = Formula::MakeBundle {
                worker: worker.into(),
                powers: powers.into(),
                bundle: bundle.into(),
            };
            let id = make_named(&daemon, &hub, &formula, args.get(3)).await?;
            Ok(daemon.provide(id))
        }
    });

    let (d, h) = (Rc::clone(daemon), Rc::clone(&hub));
    let exo = exo.async_method("storeBlob", move |_, args| {
        let (daemon, hub) = (Rc::clone(&d), Rc::clone(&h));
        async move {
            let hash = super::blob::store_from_reader(&daemon, &args[0]).await?;
            let formula = Formula::ReadableBlob { hash: hash.to_hex() };
            let id = make_named(&daemon, &hub, &formula, args.get(1)).await?;
            Ok(daemon.provide(id))
        }
    });

    let (d, h) = (Rc::clone(daemon), Rc::clone(&hub));
    let exo = exo.async_method("storeValue", move |_, args| {
        let (daemon, hub) = (Rc::clone(&d), Rc::clone(&h));
        async move {
            let id = match daemon.identify(&args[0]) {
                Some(id) => id,
                None => {
                    let formula = marshal_formula(&daemon, &args[0])?;
                    daemon
                        .make_formula(&formula)
                        .await
                        .map_err(|error| ErrorValue::plain(error.to_string()))?
                }
            };
            let (parent, name) = hub.resolve_parent(&daemon, &parse_path(&args[1])?)?;
            let name = parse_pet_name(&name)?;
            daemon
                .store
                .write_name(parent.pet_store, name, id)
                .await
                .map_err(store_error)?;
            Ok(Value::Undefined)
        }
    });

    let (d, h) = (Rc::clone(daemon), Rc::clone(&hub));
    let exo = exo.method("cancel", move |_, args| {
        let id = h.resolve(&d, &parse_path(&args[0])?)?;
        Ok(Value::from(d.cancel(id) as u32))
    });
    exo.make()
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum AgentKind {
    Guest,
    Host,
}

/// `provideGuest(name, {introducedNames})` / `provideHost(name, ...)`: the
/// agent under `name`, made (with its handle and pet store, and for a host
/// a main worker) if there is none; introduced names are copied from this
/// host into the new agent. One commit.
async fn provide_agent(
    daemon: &Rc<Daemon>,
    hub: &Hub,
    host_handle: FormulaId,
    args: &[Value],
    kind: AgentKind,
) -> Result<Value, ErrorValue> {
    let path = parse_path(&args[0])?;
    if let Ok(existing) = hub.resolve(daemon, &path) {
        let formula = daemon.formula(existing).map_err(|e| ErrorValue::plain(e.to_string()))?;
        let matches_kind = matches!(
            (&formula, kind),
            (Formula::Guest { .. }, AgentKind::Guest) | (Formula::Host { .. }, AgentKind::Host)
        );
        if !matches_kind {
            return Err(ErrorValue::type_error(format!(
                "{} is already the name of a {}",
                path.join("."),
                formula.type_name()
            )));
        }
        return daemon.provide_settled(existing).await;
    }
    let (parent, name) = hub.resolve_parent(daemon, &path)?;
    let name = parse_pet_name(&name)?;
    let mut introduced = Vec::new();
    let introductions = args
        .get(1)
        .and_then(Value::as_record)
        .and_then(|options| options.get("introducedNames"))
        .and_then(Value::as_record);
    if let Some(introductions) = introductions {
        for (from, to) in introductions.iter() {
            let id = hub.resolve(daemon, &parse_path(&Value::from(&**from))?)?;
            let to = to
                .as_str()
                .ok_or_else(|| ErrorValue::type_error("introduced names must map names to names"))?;
            introduced.push((parse_pet_name(to)?, id));
        }
    }
    let fresh = || FormulaId::random(daemon.node_id).map_err(store_error);
    let (agent, agent_handle, pet_store) = (fresh()?, fresh()?, fresh()?);
    let mut formulas = vec![
        (agent_handle, Formula::Handle { agent: agent.into() }),
        (pet_store, Formula::PetStore),
    ];
    match kind {
        AgentKind::Guest => formulas.push((
            agent,
            Formula::Guest {
                handle: agent_handle.into(),
                host_handle: host_handle.into(),
                pet_store: pet_store.into(),
            },
        )),
        AgentKind::Host => {
            let worker = fresh()?;
            formulas.push((worker, Formula::Worker));
            formulas.push((
                agent,
                Formula::Host {
                    handle: agent_handle.into(),
                    pet_store: pet_store.into(),
                    main_worker: worker.into(),
                    endo: daemon.roots.endo.into(),
                    least_authority: daemon.roots.least_authority.into(),
                },
            ));
        }
    }
    let mut names: Vec<_> = introduced.into_iter().map(|(name, id)| (pet_store, name, id)).collect();
    names.push((parent.pet_store, name, agent));
    daemon.commit_formulas(&formulas, names).await?;
    daemon.provide_settled(agent).await
}

/// A stored form of a value that has no formula: its references must each
/// have one.
pub fn marshal_formula(daemon: &Daemon, value: &Value) -> Result<Formula, ErrorValue> {
    let mut slots: Vec<(capstan_protocol::Reference, FormulaId)> = Vec::new();
    let mut unknown = false;
    let body = capstan_protocol::smallcaps::encode(value, |reference, _| {
        if let Some(index) = slots.iter().position(|(known, _)| known.same(reference)) {
            return index;
        }
        match daemon.identify(&Value::Remotable(reference.clone())) {
            Some(id) => {
                slots.push((reference.clone(), id));
                slots.len() - 1
            }
            None => {
                unknown = true;
                0
            }
        }
    });
    if unknown {
        return Err(ErrorValue::type_error(
            "Cannot store a value holding a reference that has no formula",
        ));
    }
    Ok(Formula::Marshal {
        body,
        slots: slots.into_iter().map(|(_, id)| id.into()).collect(),
    })
}

/// The worker a name refers to: `MAIN` (or none) is the main worker,
/// `NEW` a fresh one; an unknown name makes a worker under that name.
async fn worker_for(daemon: &Rc<Daemon>, hub: &Hub, name: &Value) -> Result<FormulaId, ErrorValue> {
    match name.as_str() {
        None | Some("MAIN") => Ok(daemon.roots.main_worker),
        Some("NEW") => daemon
            .make_formula(&Formula::Worker)
            .await
            .map_err(|error| ErrorValue::plain(error.to_string())),
        Some(text) => {
            let path = parse_path(&Value::from(text))?;
            match hub.resolve(daemon, &path) {
                Ok(id) => Ok(id),
                Err(_) => make_named(daemon, hub, &Formula::Worker, Some(name)).await,
            }
        }
    }
}

/// The powers a program gets: `NONE` (or none) is the powerless agent.
fn powers_for(daemon: &Daemon, hub: &Hub, name: &Value) -> Result<FormulaId, ErrorValue> {
    match name.as_str() {
        None | Some("NONE") => Ok(daemon.roots.least_authority),
        Some(text) => hub.resolve(daemon, &parse_path(&Value::from(text))?),
    }
}

/// Stores `formula` and, when `name` is given, names it, in one commit.
async fn make_named(
    daemon: &Daemon,
    hub: &Hub,
    formula: &Formula,
    name: Option<&Value>,
) -> Result<FormulaId, ErrorValue> {
    let id = FormulaId::random(daemon.node_id).map_err(store_error)?;
    let names = match name {
        Some(Value::Undefined) | None => Vec::new(),
        Some(path) => {
            let (parent, last) = hub.resolve_parent(daemon, &parse_path(path)?)?;
            vec![(parent.pet_store, parse_pet_name(&last)?, id)]
        }
    };
    daemon.commit_formulas(&[(id, formula.clone())], names).await?;
    Ok(id)
}

fn is_js_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_alphabetic() || c == '_' || c == '$')
        && chars.all(|c| c.is_alphanumeric() || c == '_' || c == '$')
}

/// An agent's handle: what others hold to send it mail.
pub fn make_handle(_daemon: &Rc<Daemon>, _agent: FormulaId) -> Result<Value, ErrorValue> {
    Exo::new("EndoHandle")
        .interface(M::interface(
            "EndoHandle",
            Vec::<(&str, Value)>::new(),
            DefaultGuards::None,
        ))
        .make()
}

/// The powerless agent, `NONE`: it has no methods.
pub fn make_least_authority(_daemon: &Rc<Daemon>) -> Value {
    match Exo::new("EndoLeastAuthority")
        .interface(M::interface(
            "EndoLeastAuthority",
            Vec::<(&str, Value)>::new(),
            DefaultGuards::None,
        ))
        .make()
    {
        Ok(value) => value,
        Err(error) => Value::error(error),
    }
}
