//! The host agent: the user's full-authority agent. It names values (the
//! directory methods over its pet store plus its special names), evaluates
//! code in workers, makes programs, stores blobs and values, cancels,
//! invites and accepts peers, and lists and forgets peers' holds. Every
//! call that makes a formula and names it is one store commit.

use std::rc::Rc;

use capstan_protocol::guards::DefaultGuards;
use capstan_protocol::patterns::M;
use capstan_protocol::{ErrorValue, Value, record};
use capstan_store::FormulaId;

use super::mail::mail_method_guards;
use super::{Agent, agent_class};
use crate::daemon::Daemon;
use crate::daemon::directory::directory_method_guards;
use crate::daemon::formula::Formula;
use crate::daemon::locator::{Locator, parse_invitation};
use crate::daemon::names::{Hub, Path, parse_path, parse_pet_name};
use crate::daemon::{blob, holds, peers};
use crate::runtime::args::decode;
use crate::runtime::{ExoClass, MethodResult};

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
        ("forget", M::call([path()]).returns(M::number())),
        ("listHolds", M::call([]).returns(M::record())),
        ("collectGarbage", M::call([]).returns(M::record())),
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

fn define_host() -> Result<ExoClass<Agent>, ErrorValue> {
    agent_class("EndoHost", host_guards(), false)
        .async_state_method("invite", invite)
        .async_state_method("accept", accept)
        .async_state_method("provideGuest", |host, args| async move {
            provide_agent(host, args, AgentKind::Guest).await
        })
        .async_state_method("provideHost", |host, args| async move {
            provide_agent(host, args, AgentKind::Host).await
        })
        .async_state_method("evaluate", evaluate)
        .async_state_method("provideWorker", provide_worker)
        .async_state_method("makeUnconfined", make_unconfined)
        .async_state_method("makeBundle", make_bundle)
        .async_state_method("storeBlob", store_blob)
        .async_state_method("storeValue", store_value)
        .method("cancel", |cx, args| cancel(&cx.state(), decode(args)?))
        .async_state_method("forget", forget)
        .method("listHolds", |cx, _| list_holds(&cx.state()))
        .async_state_method("collectGarbage", collect_garbage)
        .build()
}

thread_local! {
    static HOST: Result<ExoClass<Agent>, ErrorValue> = define_host();
}

/// Makes the host agent of formula `id`.
pub fn make_host(daemon: &Rc<Daemon>, id: FormulaId) -> Result<Value, ErrorValue> {
    ExoClass::make_local(&HOST, Agent::new(daemon, id, "EndoHost", false)?)
}

/// `invite(guestName)`: makes an invitation and returns its locator, which
/// names this host's handle and where this node listens.
async fn invite(host: Agent, (guest_name,): (String,)) -> MethodResult {
    let daemon = host.daemon();
    let pet = parse_pet_name(&guest_name)?;
    if host.directory.hub.lookup_name(daemon, pet.as_str())?.is_some() {
        return Err(ErrorValue::plain(format!("the name {guest_name} is already taken")));
    }
    let id = daemon
        .make_formula(&Formula::Invitation {
            host: host.id.into(),
            guest_name,
        })
        .await?;
    let locator = Locator {
        id,
        kind: "invitation",
        from: Some(host.handle),
        at: &peers::own_addresses(daemon),
    };
    Ok(Value::from(locator.to_string()))
}

/// `accept(locator, name)`: redeems an invitation on the inviter's node
/// and names the inviter's handle `name`.
async fn accept(host: Agent, (locator, name): (String, Value)) -> MethodResult {
    let daemon = host.daemon();
    let invitation = parse_invitation(&locator)?;
    if invitation.node == daemon.node_id {
        return Err(ErrorValue::plain("this invitation is from this node"));
    }
    let (parent, name) = host.directory.hub.resolve_parent(daemon, &parse_path(&name)?)?;
    let name = parse_pet_name(&name)?;
    if parent.lookup_name(daemon, name.as_str())?.is_some() {
        return Err(ErrorValue::plain(format!(
            "the name {} is already taken",
            name.as_str()
        )));
    }
    // The inviter becomes a known peer (stored, greeted at every start)
    // only once the redemption succeeds; until then libp2p alone knows
    // where to dial it.
    let addresses = peers::checked_addresses(invitation.node, &invitation.addresses);
    peers::offer_addresses(daemon, invitation.node, addresses);
    peers::redeem_remote(daemon, invitation.invitation, host.handle).await?;
    peers::remember_addresses(
        daemon,
        invitation.node,
        invitation.addresses,
        peers::AddressSource::Introduction,
    )
    .await?;
    daemon
        .store
        .write_name(parent.pet_store, name, invitation.inviter_handle)
        .await?;
    Ok(Value::Undefined)
}

/// `evaluate(worker, source, names, paths, resultName?)`.
async fn evaluate(
    host: Agent,
    (worker, source, names, paths, result_name): (Option<String>, String, Vec<String>, Vec<Value>, Option<Value>),
) -> MethodResult {
    let (daemon, hub) = (host.daemon(), &host.directory.hub);
    let worker = worker_for(daemon, hub, worker).await?;
    let mut values = Vec::new();
    for path in &paths {
        values.push(hub.resolve(daemon, &parse_path(path)?)?.into());
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
    let id = make_named(daemon, hub, &formula, result_name.as_ref()).await?;
    Ok(daemon.provide(id))
}

/// `provideWorker(name)`: the worker under `name`, made if there is none.
async fn provide_worker(host: Agent, (name,): (Value,)) -> MethodResult {
    let (daemon, hub) = (host.daemon(), &host.directory.hub);
    let path = parse_path(&name)?;
    let id = match hub.resolve(daemon, &path) {
        Ok(id) => id,
        Err(_) => make_named(daemon, hub, &Formula::Worker, Some(&name)).await?,
    };
    daemon.provide_settled(id).await
}

/// `makeUnconfined(worker, specifier, powers, resultName?)`.
async fn make_unconfined(
    host: Agent,
    (worker, specifier, powers, result_name): (Option<String>, String, Option<String>, Option<Value>),
) -> MethodResult {
    let (daemon, hub) = (host.daemon(), &host.directory.hub);
    let worker = worker_for(daemon, hub, worker).await?;
    let powers = powers_for(daemon, hub, powers)?;
    let formula = Formula::MakeUnconfined {
        worker: worker.into(),
        powers: powers.into(),
        specifier,
    };
    let id = make_named(daemon, hub, &formula, result_name.as_ref()).await?;
    Ok(daemon.provide(id))
}

/// `makeBundle(worker, bundleName, powers, resultName?)`.
async fn make_bundle(
    host: Agent,
    (worker, bundle, powers, result_name): (Option<String>, Value, Option<String>, Option<Value>),
) -> MethodResult {
    let (daemon, hub) = (host.daemon(), &host.directory.hub);
    let worker = worker_for(daemon, hub, worker).await?;
    let bundle = hub.resolve(daemon, &parse_path(&bundle)?)?;
    let powers = powers_for(daemon, hub, powers)?;
    let formula = Formula::MakeBundle {
        worker: worker.into(),
        powers: powers.into(),
        bundle: bundle.into(),
    };
    let id = make_named(daemon, hub, &formula, result_name.as_ref()).await?;
    Ok(daemon.provide(id))
}

/// `storeBlob(reader, name?)`.
async fn store_blob(host: Agent, (reader, name): (Value, Option<Value>)) -> MethodResult {
    let (daemon, hub) = (host.daemon(), &host.directory.hub);
    daemon.blob_upload_started();
    let stored = blob::store_from_reader(daemon, &reader).await;
    daemon.blob_upload_ended(stored.as_ref().ok().copied());
    let hash = stored?;
    let formula = Formula::ReadableBlob { hash: hash.to_hex() };
    let id = make_named(daemon, hub, &formula, name.as_ref()).await?;
    Ok(daemon.provide(id))
}

/// `storeValue(value, name)`.
async fn store_value(host: Agent, (value, name): (Value, Value)) -> MethodResult {
    let (daemon, hub) = (host.daemon(), &host.directory.hub);
    let id = match daemon.identify(&value) {
        Some(id) => id,
        None => {
            let formula = marshal_formula(daemon, &value)?;
            daemon.make_formula(&formula).await?
        }
    };
    let (parent, name) = hub.resolve_parent(daemon, &parse_path(&name)?)?;
    let name = parse_pet_name(&name)?;
    daemon.store.write_name(parent.pet_store, name, id).await?;
    Ok(Value::Undefined)
}

/// `cancel(name)`: how many values were cancelled.
fn cancel(host: &Agent, (Path(path),): (Path,)) -> MethodResult {
    let daemon = host.daemon();
    let id = host.directory.hub.resolve(daemon, &path)?;
    let cancelled = daemon.cancel(id);
    daemon.schedule_collection();
    Ok(Value::from(cancelled as u32))
}

/// `collectGarbage()`: collects every formula nothing reaches now, and
/// answers `{formulas, byType: {type: count}, blobs, bytesFreed,
/// formulasLeft}`.
async fn collect_garbage(host: Agent, (): ()) -> MethodResult {
    let collected = host.daemon().collect_garbage().await?;
    let by_type = collected
        .by_type
        .iter()
        .map(|(name, count)| (name.clone(), Value::from(*count as f64)))
        .collect::<Vec<_>>();
    Ok(capstan_protocol::record! {
        "formulas" => collected.formulas.len() as f64,
        "byType" => Value::record(by_type),
        "blobs" => collected.blobs as f64,
        "bytesFreed" => collected.bytes_freed as f64,
        "formulasLeft" => collected.formulas_left as f64,
    })
}

/// `forget(path)`: drops every hold the node of the peer whose handle (or
/// any of whose values) `path` names has on this node; how many ids it
/// held.
async fn forget(host: Agent, (Path(path),): (Path,)) -> MethodResult {
    let daemon = host.daemon();
    let id = host.directory.hub.resolve(daemon, &path)?;
    let peer = id.node();
    if peer == daemon.node_id {
        return Err(ErrorValue::type_error(format!(
            "{} names a value of this node, not a peer's",
            path.join(".")
        )));
    }
    let forgotten = holds::forget(daemon, peer).await?;
    // What only that peer held may now be unreachable.
    daemon.schedule_collection();
    Ok(Value::from(forgotten as f64))
}

/// `listHolds()`: `{heldByPeers, heldFromPeers, releasesPending}`, each a
/// list of `{nodeId, formulas}`: how many of our ids each peer holds, how
/// many ids we hold from each node that gave them, and how many releases
/// wait to be sent to each.
fn list_holds(host: &Agent) -> MethodResult {
    let snapshot = host.daemon().store.read()?;
    let counts = |counts: Vec<(capstan_store::NodeId, u64)>| {
        Value::array(counts.into_iter().map(|(node, formulas)| {
            record! { "nodeId" => node.to_string(), "formulas" => formulas as f64 }
        }))
    };
    let mut pending: Vec<(capstan_store::NodeId, u64)> = Vec::new();
    for batch in snapshot.pending_release_batches()? {
        match pending.last_mut() {
            Some((giver, formulas)) if *giver == batch.giver => *formulas += batch.released.len() as u64,
            _ => pending.push((batch.giver, batch.released.len() as u64)),
        }
    }
    Ok(record! {
        "heldByPeers" => counts(snapshot.holds_by_peer()?),
        "heldFromPeers" => counts(snapshot.holds_taken_by_giver()?),
        "releasesPending" => counts(pending),
    })
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
async fn provide_agent(host: Agent, (Path(path), options): (Path, Option<Value>), kind: AgentKind) -> MethodResult {
    let (daemon, hub, host_handle) = (host.daemon(), &host.directory.hub, host.handle);
    if let Ok(existing) = hub.resolve(daemon, &path) {
        let formula = daemon.formula(existing)?;
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
    let introductions = options
        .as_ref()
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
    let fresh = || FormulaId::random(daemon.node_id).map_err(ErrorValue::from);
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
async fn worker_for(daemon: &Rc<Daemon>, hub: &Hub, name: Option<String>) -> Result<FormulaId, ErrorValue> {
    match name.as_deref() {
        None | Some("MAIN") => Ok(daemon.roots.main_worker),
        Some("NEW") => Ok(daemon.make_formula(&Formula::Worker).await?),
        Some(text) => {
            let name = Value::from(text);
            let path = parse_path(&name)?;
            match hub.resolve(daemon, &path) {
                Ok(id) => Ok(id),
                Err(_) => make_named(daemon, hub, &Formula::Worker, Some(&name)).await,
            }
        }
    }
}

/// The powers a program gets: `NONE` (or none) is the powerless agent.
fn powers_for(daemon: &Daemon, hub: &Hub, name: Option<String>) -> Result<FormulaId, ErrorValue> {
    match name.as_deref() {
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
    let id = FormulaId::random(daemon.node_id)?;
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

/// A class of objects with no methods: only their identity matters.
fn define_methodless(tag: &str) -> Result<ExoClass<()>, ErrorValue> {
    ExoClass::<()>::builder_without_init(tag)
        .interface(M::interface(tag, Vec::<(&str, Value)>::new(), DefaultGuards::None))
        .build()
}

thread_local! {
    static HANDLE: Result<ExoClass<()>, ErrorValue> = define_methodless("EndoHandle");
    static LEAST_AUTHORITY: Result<ExoClass<()>, ErrorValue> = define_methodless("EndoLeastAuthority");
}

/// An agent's handle: what others hold to send it mail.
pub fn make_handle(_daemon: &Rc<Daemon>, _agent: FormulaId) -> Result<Value, ErrorValue> {
    ExoClass::make_local(&HANDLE, ())
}

/// The powerless agent, `NONE`: it has no methods.
pub fn make_least_authority(_daemon: &Rc<Daemon>) -> Value {
    match ExoClass::make_local(&LEAST_AUTHORITY, ()) {
        Ok(value) => value,
        Err(error) => Value::error(error),
    }
}
