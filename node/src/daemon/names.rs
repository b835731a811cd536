//! Pet names, special names and paths, and resolving a path of names to a
//! formula id through nested name hubs (directories and agents, with the
//! agents' special names).

use capstan_protocol::{ErrorValue, Value};
use capstan_store::{FormulaId, PetName};

use super::Daemon;
use super::formula::{Formula, Id};
use crate::runtime::args::{ArgError, FromArg};

/// A name an agent resolves: one of its pet names, or a special name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Name {
    Pet(PetName),
    Special(String),
}

/// Whether `text` is spelled like a special name (upper case).
pub fn is_special(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b == b'-' || b.is_ascii_digit())
}

pub fn parse_name(text: &str) -> Result<Name, ErrorValue> {
    if is_special(text) {
        return Ok(Name::Special(text.to_string()));
    }
    PetName::new(text).map(Name::Pet).map_err(|_| {
        ErrorValue::type_error(format!(
            "Invalid pet name {}: a pet name is 1 to 128 lower-case letters, digits and dashes, starting with a letter or digit",
            capstan_protocol::quote::json_string(&redact_identifiers(text))
        ))
    })
}

/// Text with every run of 64 or more hex digits (a key or an id number)
/// replaced by `…`, so that errors never carry an identifier back.
pub fn redact_identifiers(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut run = String::new();
    let flush = |run: &mut String, out: &mut String| {
        if run.len() >= 64 {
            out.push('…');
        } else {
            out.push_str(run);
        }
        run.clear();
    };
    for c in text.chars() {
        if c.is_ascii_hexdigit() {
            run.push(c);
        } else {
            flush(&mut run, &mut out);
            out.push(c);
        }
    }
    flush(&mut run, &mut out);
    out
}

pub fn parse_pet_name(text: &str) -> Result<PetName, ErrorValue> {
    match parse_name(text)? {
        Name::Pet(name) => Ok(name),
        Name::Special(name) => Err(ErrorValue::type_error(format!(
            "{name} is a special name and cannot be changed"
        ))),
    }
}

/// A path given as a name, a dot-path string, or an array of names.
pub fn parse_path(value: &Value) -> Result<Vec<String>, ErrorValue> {
    let names: Vec<String> = match value {
        Value::String(text) => text.split('.').map(str::to_string).collect(),
        Value::Array(items) => items
            .iter()
            .map(|item| {
                item.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| ErrorValue::type_error("a path must be an array of names"))
            })
            .collect::<Result<_, _>>()?,
        _ => return Err(ErrorValue::type_error("a path must be a name or an array of names")),
    };
    if names.is_empty() || names.iter().any(String::is_empty) {
        return Err(ErrorValue::type_error("a path must not be empty"));
    }
    Ok(names)
}

/// A path argument: a name, a dot-path string, or an array of names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Path(pub Vec<String>);

impl FromArg for Path {
    fn from_arg(value: Value) -> Result<Self, ArgError> {
        Ok(Path(parse_path(&value)?))
    }
}

/// A name hub: a pet store plus, for agents, the special names.
#[derive(Clone, Debug)]
pub struct Hub {
    pub pet_store: FormulaId,
    /// Special name → formula, for agents.
    pub specials: Vec<(&'static str, FormulaId)>,
}

impl Hub {
    /// The hub a formula is, if it is one: a pet store, a directory, or
    /// an agent (with its special names).
    pub fn of_formula(daemon: &Daemon, id: FormulaId) -> Result<Option<Hub>, ErrorValue> {
        let formula = daemon.formula(id)?;
        let get = |id: &Id| id.get().map_err(ErrorValue::from);
        Ok(match &formula {
            Formula::PetStore => Some(Hub {
                pet_store: id,
                specials: Vec::new(),
            }),
            Formula::Directory { pet_store } | Formula::ConfinedDirectory { pet_store } => Some(Hub {
                pet_store: get(pet_store)?,
                specials: Vec::new(),
            }),
            Formula::Host { .. } | Formula::Guest { .. } => Some(agent_hub(daemon, id, &formula)?),
            _ => None,
        })
    }

    /// The id behind one name of this hub.
    pub fn lookup_name(&self, daemon: &Daemon, name: &str) -> Result<Option<FormulaId>, ErrorValue> {
        match parse_name(name)? {
            Name::Special(special) => Ok(self
                .specials
                .iter()
                .find(|(known, _)| *known == special)
                .map(|(_, id)| *id)),
            Name::Pet(pet) => daemon
                .store
                .read()
                .and_then(|snapshot| snapshot.lookup_name(self.pet_store, &pet))
                .map_err(ErrorValue::from),
        }
    }

    /// The id at `path`, following nested hubs.
    pub fn resolve(&self, daemon: &Daemon, path: &[String]) -> Result<FormulaId, ErrorValue> {
        let Some((first, rest)) = path.split_first() else {
            return Err(ErrorValue::type_error("a path must not be empty"));
        };
        let mut id = self.lookup_name(daemon, first)?.ok_or_else(|| unknown_name(first))?;
        let mut walked = vec![first.as_str()];
        for name in rest {
            let hub = Hub::of_formula(daemon, id)?
                .ok_or_else(|| ErrorValue::type_error(format!("{} is not a directory", walked.join("."))))?;
            id = hub
                .lookup_name(daemon, name)?
                .ok_or_else(|| unknown_name(&format!("{}.{name}", walked.join("."))))?;
            walked.push(name);
        }
        Ok(id)
    }

    /// The hub holding the last name of `path`, and that name.
    pub fn resolve_parent(&self, daemon: &Daemon, path: &[String]) -> Result<(Hub, String), ErrorValue> {
        let Some((last, parents)) = path.split_last() else {
            return Err(ErrorValue::type_error("a path must not be empty"));
        };
        if parents.is_empty() {
            return Ok((self.clone(), last.clone()));
        }
        let id = self.resolve(daemon, parents)?;
        let hub = Hub::of_formula(daemon, id)?
            .ok_or_else(|| ErrorValue::type_error(format!("{} is not a directory", parents.join("."))))?;
        Ok((hub, last.clone()))
    }

    /// Names in this hub, in name order (special names first).
    pub fn list(&self, daemon: &Daemon) -> Result<Vec<(String, FormulaId)>, ErrorValue> {
        let mut names: Vec<(String, FormulaId)> = self
            .specials
            .iter()
            .map(|(name, id)| ((*name).to_string(), *id))
            .collect();
        names.sort();
        let pets = daemon
            .store
            .read()
            .and_then(|snapshot| snapshot.list_names(self.pet_store))?;
        names.extend(pets.into_iter().map(|(name, id)| (name.as_str().to_string(), id)));
        Ok(names)
    }
}

/// An agent's hub: its pet store and its special names. A host has
/// `AGENT`, `SELF`, `MAIN`, `ENDO`, `KERNEL`, `NONE` (and the node's own host
/// `PINS`); a guest has `AGENT`, `SELF` and `HOST` (its host's handle,
/// never the host).
pub fn agent_hub(daemon: &Daemon, id: FormulaId, formula: &Formula) -> Result<Hub, ErrorValue> {
    let get = |id: &Id| id.get().map_err(ErrorValue::from);
    match formula {
        Formula::Host {
            handle,
            pet_store,
            main_worker,
            endo,
            least_authority,
        } => {
            let mut specials = vec![
                ("AGENT", id),
                ("ENDO", get(endo)?),
                ("KERNEL", daemon.roots.kernel),
                ("MAIN", get(main_worker)?),
                ("NONE", get(least_authority)?),
            ];
            if id == daemon.roots.host {
                specials.push(("PINS", daemon.roots.pins));
            }
            specials.push(("SELF", get(handle)?));
            Ok(Hub {
                pet_store: get(pet_store)?,
                specials,
            })
        }
        Formula::Guest {
            handle,
            host_handle,
            pet_store,
        } => Ok(Hub {
            pet_store: get(pet_store)?,
            specials: vec![("AGENT", id), ("HOST", get(host_handle)?), ("SELF", get(handle)?)],
        }),
        _ => Err(ErrorValue::type_error("not an agent")),
    }
}

/// The hub of agent `id`.
pub fn hub_of_agent(daemon: &Daemon, id: FormulaId) -> Result<Hub, ErrorValue> {
    let formula = daemon.formula(id)?;
    agent_hub(daemon, id, &formula)
}

pub fn unknown_name(path: &str) -> ErrorValue {
    ErrorValue::type_error(format!(
        "Unknown pet name: {}",
        capstan_protocol::quote::json_string(path)
    ))
}
