//! The formula types: durable recipes for values, stored by id. A formula
//! names other formulas by id, never by pet name, so renaming never breaks
//! a recipe. This is the one file that lists them.

use capstan_store::{FormulaId, FormulaRecord};
use serde::{Deserialize, Serialize};

use super::DaemonError;

/// A formula id as stored inside another formula's body.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Id(String);

impl Id {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn get(&self) -> Result<FormulaId, DaemonError> {
        self.0
            .parse()
            .map_err(|_| DaemonError::Corrupt(format!("bad formula id in a formula: {}", self.0)))
    }
}

impl From<FormulaId> for Id {
    fn from(id: FormulaId) -> Id {
        Id(id.to_string())
    }
}

/// Every kind of formula the node makes values from.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Formula {
    /// The node's root: its host and the powerless agent.
    Endo { host: Id, least_authority: Id },
    /// A host agent: full authority over its names, its mail and its main
    /// worker.
    Host {
        handle: Id,
        pet_store: Id,
        main_worker: Id,
        endo: Id,
        least_authority: Id,
    },
    /// A guest agent: names and mail, with its host's handle.
    Guest { handle: Id, host_handle: Id, pet_store: Id },
    /// An agent's public mail identity.
    Handle { agent: Id },
    /// A worker process (made = spawned).
    Worker,
    /// The completion value of source evaluated in a worker, endowed with
    /// the values of other formulas under the given names.
    Eval {
        worker: Id,
        source: String,
        names: Vec<String>,
        values: Vec<Id>,
    },
    /// The value at a path of names from a name hub (a directory or agent).
    Lookup { hub: Id, path: Vec<String> },
    /// A module's `make(powers)`, run in a worker.
    MakeUnconfined { worker: Id, powers: Id, specifier: String },
    /// A stored bundle's `make(powers)`, run in a worker.
    MakeBundle { worker: Id, powers: Id, bundle: Id },
    /// A blob reference, by content hash (hex).
    ReadableBlob { hash: String },
    /// A stored passable: a smallcaps body whose slots are formula ids.
    Marshal { body: String, slots: Vec<Id> },
    /// A name → id map.
    PetStore,
    /// A name hub you can nest: a pet store with directory methods.
    Directory { pet_store: Id },
    /// A directory made by a guest: the same, without the methods that
    /// reveal or take identifiers.
    ConfinedDirectory { pet_store: Id },
    /// The powerless agent (special name `NONE`).
    LeastAuthority,
    /// The kernel facet (special name `KERNEL` of hosts).
    Kernel,
    /// An invitation a host made for a peer, redeemed (and removed) once
    /// through the gateway: the acceptor's handle is then named
    /// `guest_name` in the host's names.
    Invitation { host: Id, guest_name: String },
}

impl Formula {
    /// The type name, as the spec and `locate` spell it.
    pub fn type_name(&self) -> &'static str {
        match self {
            Formula::Endo { .. } => "endo",
            Formula::Host { .. } => "host",
            Formula::Guest { .. } => "guest",
            Formula::Handle { .. } => "handle",
            Formula::Worker => "worker",
            Formula::Eval { .. } => "eval",
            Formula::Lookup { .. } => "lookup",
            Formula::MakeUnconfined { .. } => "make-unconfined",
            Formula::MakeBundle { .. } => "make-bundle",
            Formula::ReadableBlob { .. } => "readable-blob",
            Formula::Marshal { .. } => "marshal",
            Formula::PetStore => "pet-store",
            Formula::Directory { .. } | Formula::ConfinedDirectory { .. } => "directory",
            Formula::LeastAuthority => "least-authority",
            Formula::Kernel => "kernel",
            Formula::Invitation { .. } => "invitation",
        }
    }

    /// The formulas whose values this one's value is made from: made
    /// first, and cancelling one of them cancels this one. Agents and
    /// handles only refer to their parts by id, so they are not remade
    /// when a part (say, the main worker) is.
    pub fn made_from(&self) -> Vec<&Id> {
        match self {
            Formula::Endo { .. }
            | Formula::Host { .. }
            | Formula::Guest { .. }
            | Formula::Handle { .. }
            | Formula::Invitation { .. }
            | Formula::Directory { .. }
            | Formula::ConfinedDirectory { .. } => Vec::new(),
            other => other.dependencies(),
        }
    }

    /// Every formula this one refers to (what keeps them reachable).
    pub fn dependencies(&self) -> Vec<&Id> {
        match self {
            Formula::Endo { host, least_authority } => vec![host, least_authority],
            Formula::Host {
                handle,
                pet_store,
                main_worker,
                endo,
                least_authority,
            } => vec![handle, pet_store, main_worker, endo, least_authority],
            Formula::Guest {
                handle,
                host_handle,
                pet_store,
            } => vec![handle, host_handle, pet_store],
            Formula::Handle { agent } => vec![agent],
            Formula::Invitation { host, .. } => vec![host],
            Formula::Eval { worker, values, .. } => std::iter::once(worker).chain(values.iter()).collect(),
            Formula::Lookup { hub, .. } => vec![hub],
            Formula::MakeUnconfined { worker, powers, .. } => vec![worker, powers],
            Formula::MakeBundle { worker, powers, bundle } => vec![worker, powers, bundle],
            Formula::Marshal { slots, .. } => slots.iter().collect(),
            Formula::Directory { pet_store } | Formula::ConfinedDirectory { pet_store } => vec![pet_store],
            Formula::Worker
            | Formula::ReadableBlob { .. }
            | Formula::PetStore
            | Formula::LeastAuthority
            | Formula::Kernel => Vec::new(),
        }
    }

    pub fn to_record(&self) -> Result<FormulaRecord, DaemonError> {
        let body = postcard::to_allocvec(self).map_err(|error| DaemonError::Corrupt(error.to_string()))?;
        Ok(FormulaRecord {
            formula_type: self.type_name().to_string(),
            body,
        })
    }

    pub fn from_record(record: &FormulaRecord) -> Result<Formula, DaemonError> {
        postcard::from_bytes(&record.body)
            .map_err(|error| DaemonError::Corrupt(format!("formula of type {}: {error}", record.formula_type)))
    }
}
