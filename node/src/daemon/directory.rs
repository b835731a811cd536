//! Directories: name hubs over pet stores. The same directory methods
//! serve plain directories and the agents (which add their special
//! names); a confined hub (a guest's) has none of the methods that take or
//! reveal an identifier. Every change is one store commit. Name-change
//! streams are here too.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

use capstan_protocol::guards::DefaultGuards;
use capstan_protocol::patterns::M;
use capstan_protocol::{ErrorValue, Value, record};
use capstan_store::{FormulaId, NameChangeKind, NameFollower, StoreError};

use super::Daemon;
use super::formula::Formula;
use super::locator::Locator;
use super::names::{Hub, Path, parse_pet_name, unknown_name};
use crate::runtime::args::{Rest, decode};
use crate::runtime::{ExoClass, ExoClassBuilder, MethodResult, iterator};

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

/// A name hub bound to the daemon: the state of a directory object, and
/// what the directory methods of an agent work on.
#[derive(Clone)]
pub struct Directory {
    pub daemon: Rc<Daemon>,
    pub hub: Rc<Hub>,
}

/// Adds the directory methods to a class whose state holds a
/// [`Directory`]; a confined one gets none that takes or reveals an
/// identifier.
pub fn with_directory_methods<S: AsRef<Directory> + 'static>(
    class: ExoClassBuilder<S>,
    confined: bool,
) -> ExoClassBuilder<S> {
    let class = class
        .method("has", |cx, args| cx.state().as_ref().has(decode(args)?))
        .method("list", |cx, args| cx.state().as_ref().list(decode(args)?))
        .method("lookup", |cx, args| cx.state().as_ref().lookup(decode(args)?))
        .method("reverseLookup", |cx, args| {
            cx.state().as_ref().reverse_lookup(decode(args)?)
        })
        .method("followNameChanges", |cx, _| cx.state().as_ref().follow_name_changes())
        .async_method("remove", |cx, args| {
            let directory = cx.state().as_ref().clone();
            async move { directory.remove(decode(args)?).await }
        })
        .async_method("move", |cx, args| {
            let directory = cx.state().as_ref().clone();
            async move { directory.move_name(decode(args)?).await }
        })
        .async_method("copy", |cx, args| {
            let directory = cx.state().as_ref().clone();
            async move { directory.copy(decode(args)?).await }
        })
        .async_method("makeDirectory", move |cx, args| {
            let directory = cx.state().as_ref().clone();
            async move { directory.make_directory_at(decode(args)?, confined).await }
        });
    if confined {
        return class;
    }
    class
        .method("listIdentifiers", |cx, args| {
            cx.state().as_ref().list_identifiers(decode(args)?)
        })
        .method("identify", |cx, args| cx.state().as_ref().identify(decode(args)?))
        .method("locate", |cx, args| cx.state().as_ref().locate(decode(args)?))
        .async_method("write", |cx, args| {
            let directory = cx.state().as_ref().clone();
            async move { directory.write(decode(args)?).await }
        })
}

impl AsRef<Directory> for Directory {
    fn as_ref(&self) -> &Directory {
        self
    }
}

impl Directory {
    /// `has(...path)`.
    fn has(&self, Rest(path): Rest<String>) -> MethodResult {
        Ok(Value::Boolean(
            !path.is_empty() && self.hub.resolve(&self.daemon, &path).is_ok(),
        ))
    }

    /// `list(...path)`.
    fn list(&self, Rest(path): Rest<String>) -> MethodResult {
        let names = listed(&self.daemon, &self.hub, &path)?;
        Ok(Value::array(names.into_iter().map(|(name, _)| Value::from(name))))
    }

    /// `lookup(path)`.
    fn lookup(&self, (Path(path),): (Path,)) -> MethodResult {
        Ok(self.daemon.provide(self.hub.resolve(&self.daemon, &path)?))
    }

    /// `reverseLookup(value)`.
    fn reverse_lookup(&self, (value,): (Value,)) -> MethodResult {
        let Some(id) = self.daemon.identify(&value) else {
            return Ok(Value::array([]));
        };
        let names = self
            .daemon
            .store
            .read()
            .and_then(|snapshot| snapshot.reverse_lookup_in(self.hub.pet_store, id))?;
        let mut names: Vec<Value> = names.into_iter().map(|name| Value::from(name.as_str())).collect();
        names.extend(
            self.hub
                .specials
                .iter()
                .filter(|(_, special)| *special == id)
                .map(|(name, _)| Value::from(*name)),
        );
        Ok(Value::array(names))
    }

    /// `remove(...path)`.
    async fn remove(self, Rest(path): Rest<String>) -> MethodResult {
        let (parent, name) = self.hub.resolve_parent(&self.daemon, &path)?;
        let pet = parse_pet_name(&name)?;
        match self.daemon.store.remove_name(parent.pet_store, pet).await? {
            Some(_) => {
                // The name may have been the last thing holding a value.
                self.daemon.schedule_collection();
                Ok(Value::Undefined)
            }
            None => Err(unknown_name(&path.join("."))),
        }
    }

    /// `move(fromPath, toPath)`.
    async fn move_name(self, (Path(from), Path(to)): (Path, Path)) -> MethodResult {
        let (from_hub, from_name) = self.hub.resolve_parent(&self.daemon, &from)?;
        let (to_hub, to_name) = self.hub.resolve_parent(&self.daemon, &to)?;
        let (from_name, to_name) = (parse_pet_name(&from_name)?, parse_pet_name(&to_name)?);
        self.daemon
            .store
            .move_name(from_hub.pet_store, from_name, to_hub.pet_store, to_name)
            .await
            .map_err(|error| name_error(error, &from))?;
        Ok(Value::Undefined)
    }

    /// `copy(fromPath, toPath)`.
    async fn copy(self, (Path(from), Path(to)): (Path, Path)) -> MethodResult {
        // Special names can be copied out (their id is known).
        let id = self.hub.resolve(&self.daemon, &from)?;
        let (to_hub, to_name) = self.hub.resolve_parent(&self.daemon, &to)?;
        let to_name = parse_pet_name(&to_name)?;
        self.daemon.store.write_name(to_hub.pet_store, to_name, id).await?;
        Ok(Value::Undefined)
    }

    /// `makeDirectory(path)`: a new directory, named, in one commit.
    async fn make_directory_at(self, (Path(path),): (Path,), confined: bool) -> MethodResult {
        let daemon = &self.daemon;
        let (parent, name) = self.hub.resolve_parent(daemon, &path)?;
        let name = parse_pet_name(&name)?;
        let pet_store = FormulaId::random(daemon.node_id)?;
        let directory = FormulaId::random(daemon.node_id)?;
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

    /// `followNameChanges()`.
    fn follow_name_changes(&self) -> MethodResult {
        let follower = self.daemon.store.follow_names(self.hub.pet_store)?;
        make_name_change_stream(&self.hub, follower)
    }

    /// `listIdentifiers(...path)`.
    fn list_identifiers(&self, Rest(path): Rest<String>) -> MethodResult {
        let names = listed(&self.daemon, &self.hub, &path)?;
        Ok(Value::array(
            names.into_iter().map(|(_, id)| Value::from(id.to_string())),
        ))
    }

    /// `identify(...path)`.
    fn identify(&self, Rest(path): Rest<String>) -> MethodResult {
        Ok(self
            .hub
            .resolve(&self.daemon, &path)
            .ok()
            .map_or(Value::Undefined, |id| Value::from(id.to_string())))
    }

    /// `locate(...path)`.
    fn locate(&self, Rest(path): Rest<String>) -> MethodResult {
        match self.hub.resolve(&self.daemon, &path) {
            Ok(id) => Ok(Value::from(locator(&self.daemon, id)?)),
            Err(_) => Ok(Value::Undefined),
        }
    }

    /// `write(path, id)`.
    async fn write(self, (Path(path), id): (Path, String)) -> MethodResult {
        let id: FormulaId = id
            .parse()
            .map_err(|_| ErrorValue::type_error("write needs a formula identifier"))?;
        let (parent, name) = self.hub.resolve_parent(&self.daemon, &path)?;
        let name = parse_pet_name(&name)?;
        self.daemon.store.write_name(parent.pet_store, name, id).await?;
        Ok(Value::Undefined)
    }
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

fn name_error(error: StoreError, path: &[String]) -> ErrorValue {
    match error {
        StoreError::NameNotFound { .. } => unknown_name(&path.join(".")),
        other => ErrorValue::from(other),
    }
}

/// A locator for formula `id`: its node, number and type. Another node's
/// formula has type `remote`: its type is known only there.
pub fn locator(daemon: &Daemon, id: FormulaId) -> Result<String, ErrorValue> {
    let kind = if id.node() != daemon.node_id {
        "remote"
    } else {
        daemon.formula(id)?.type_name()
    };
    Ok(Locator {
        id,
        kind,
        from: None,
        at: &[],
    }
    .to_string())
}

fn define_directory(confined: bool) -> Result<ExoClass<Directory>, ErrorValue> {
    let class = ExoClass::<Directory>::builder_without_init("EndoDirectory").interface(M::interface(
        "EndoDirectory",
        directory_method_guards(confined),
        DefaultGuards::None,
    ));
    with_directory_methods(class, confined).build()
}

thread_local! {
    static DIRECTORY: Result<ExoClass<Directory>, ErrorValue> = define_directory(false);
    static CONFINED_DIRECTORY: Result<ExoClass<Directory>, ErrorValue> = define_directory(true);
}

/// Makes a directory object over a pet store.
pub fn make_directory(daemon: &Rc<Daemon>, pet_store: FormulaId, confined: bool) -> Result<Value, ErrorValue> {
    let directory = Directory {
        daemon: Rc::clone(daemon),
        hub: Rc::new(Hub {
            pet_store,
            specials: Vec::new(),
        }),
    };
    ExoClass::make_local(if confined { &CONFINED_DIRECTORY } else { &DIRECTORY }, directory)
}

/// What a name-change stream holds: the changes not yet given, then the
/// store's follower (gone once the stream is closed).
struct NameChanges {
    backlog: RefCell<VecDeque<Value>>,
    follower: tokio::sync::Mutex<Option<NameFollower>>,
}

impl iterator::AsyncIterator for NameChanges {
    async fn next(&self) -> MethodResult {
        // One `next` at a time takes the follower, so concurrent calls get
        // successive changes.
        let mut follower = self.follower.lock().await;
        if let Some(change) = self.backlog.borrow_mut().pop_front() {
            return Ok(iterator::yielded(change));
        }
        let Some(follower) = follower.as_mut() else {
            return Ok(iterator::done());
        };
        let change = follower.next().await?;
        let value = match change.kind {
            NameChangeKind::Added { name, .. } => record! { "add" => name.as_str() },
            NameChangeKind::Removed { name } => record! { "remove" => name.as_str() },
        };
        Ok(iterator::yielded(value))
    }

    async fn close(&self) -> MethodResult {
        *self.follower.lock().await = None;
        Ok(iterator::done())
    }
}

thread_local! {
    static NAME_CHANGE_STREAM: Result<ExoClass<Rc<NameChanges>>, ErrorValue> = iterator::async_iterator_class("NameChangeStream");
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
    let changes = NameChanges {
        backlog: RefCell::new(backlog),
        follower: tokio::sync::Mutex::new(Some(follower)),
    };
    ExoClass::make_local(&NAME_CHANGE_STREAM, Rc::new(changes))
}
