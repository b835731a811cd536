//! Agents: the objects a person or a program acts through. Every agent
//! names values (the directory methods over its pet store, with its special
//! names) and has a mailbox; a host ([`host`]) has full authority, a guest
//! ([`guest`]) is confined. [`mail`] is the mail every agent has.
//!
//! An agent is an instance of its kind's class with an [`Agent`] as
//! state; the classes are defined once per thread.

pub mod guest;
pub mod host;
pub mod mail;

use std::rc::Rc;

use capstan_protocol::guards::DefaultGuards;
use capstan_protocol::patterns::M;
use capstan_protocol::{ErrorValue, Value};
use capstan_store::FormulaId;

use super::Daemon;
use super::directory::{Directory, with_directory_methods};
use super::formula::Formula;
use super::names::hub_of_agent;
use crate::runtime::{ExoClass, ExoClassBuilder};
use mail::{Mailbox, with_mail_methods};

/// An agent's state: its names, its mailbox, and its formula and handle.
#[derive(Clone)]
pub struct Agent {
    pub directory: Directory,
    pub mailbox: Rc<Mailbox>,
    pub id: FormulaId,
    pub handle: FormulaId,
}

impl AsRef<Directory> for Agent {
    fn as_ref(&self) -> &Directory {
        &self.directory
    }
}

impl Agent {
    /// The state of agent `id` (a host or guest formula); `tag` names the
    /// kind in the error when it is not an agent.
    pub fn new(daemon: &Rc<Daemon>, id: FormulaId, tag: &str, confined: bool) -> Result<Agent, ErrorValue> {
        let hub = Rc::new(hub_of_agent(daemon, id)?);
        let (agent, handle) = agent_and_handle(daemon, id)
            .ok_or_else(|| ErrorValue::plain(format!("{tag} is made from an agent formula")))?;
        let mailbox = Mailbox {
            agent,
            handle,
            hub: Rc::clone(&hub),
            confined,
        };
        Ok(Agent {
            directory: Directory {
                daemon: Rc::clone(daemon),
                hub,
            },
            mailbox: Rc::new(mailbox),
            id,
            handle,
        })
    }

    pub fn daemon(&self) -> &Rc<Daemon> {
        &self.directory.daemon
    }
}

/// The class every agent kind starts from: `tag` and `guards`, the
/// directory methods and the mail methods (confined for a guest).
pub fn agent_class(tag: &str, guards: Vec<(&'static str, Value)>, confined: bool) -> ExoClassBuilder<Agent> {
    let class = ExoClass::builder_without_init(tag).interface(M::interface(tag, guards, DefaultGuards::None));
    with_mail_methods(with_directory_methods(class, confined))
}

/// For an agent or handle formula: the agent and its handle.
pub fn agent_and_handle(daemon: &Daemon, id: FormulaId) -> Option<(FormulaId, FormulaId)> {
    match daemon.formula(id).ok()? {
        Formula::Handle { agent } => Some((agent.get().ok()?, id)),
        Formula::Host { handle, .. } | Formula::Guest { handle, .. } => Some((id, handle.get().ok()?)),
        _ => None,
    }
}

/// For a handle formula: its agent.
pub fn handle_agent(daemon: &Daemon, handle: FormulaId) -> Option<FormulaId> {
    match daemon.formula(handle).ok()? {
        Formula::Handle { agent } => agent.get().ok(),
        _ => None,
    }
}

/// An agent's pet store.
pub fn agent_pet_store(daemon: &Daemon, agent: FormulaId) -> Result<FormulaId, ErrorValue> {
    match daemon.formula(agent)? {
        Formula::Host { pet_store, .. } | Formula::Guest { pet_store, .. } => Ok(pet_store.get()?),
        _ => Err(ErrorValue::type_error("the requester is not an agent")),
    }
}
