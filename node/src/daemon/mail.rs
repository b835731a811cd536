//! Mail between agents: packages of text interleaved with references, and
//! requests for a value that the recipient resolves or rejects. Messages
//! are numbered per mailbox and kept in the store, so they and their
//! numbering survive a restart, and a request still pending after a
//! restart can be answered. A host sees identifiers in its messages; a
//! guest sees only live handles and its own names for the sender.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;

use capstan_protocol::guards::DefaultGuards;
use capstan_protocol::patterns::M;
use capstan_protocol::{ErrorValue, Value, record};
use capstan_store::{FormulaId, MessageEventKind, MessageFollower};
use serde::{Deserialize, Serialize};

use super::Daemon;
use super::formula::{Formula, Id};
use super::names::{Hub, parse_path, parse_pet_name, store_error};
use crate::runtime::{Exo, MethodResult, PromiseKit};

const MESSAGE_VERSION: u8 = 1;

/// A message as stored in a mailbox.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StoredMessage {
    /// When it was sent, RFC 3339, UTC.
    pub date: String,
    /// The sender's handle.
    pub from: Id,
    /// The recipient's handle.
    pub to: Id,
    pub content: Content,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Content {
    /// Text interleaved with references: `strings` has one more element
    /// than `names`, and reference `i` sits between strings `i` and `i+1`.
    Package {
        strings: Vec<String>,
        names: Vec<String>,
        ids: Vec<Id>,
    },
    /// A request for a value, from `requester` (an agent).
    Request {
        description: String,
        requester: Id,
        response_name: Option<String>,
        settled: Option<Settled>,
    },
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Settled {
    Resolved(Id),
    Rejected(String),
}

impl StoredMessage {
    pub fn encode(&self) -> Result<Vec<u8>, ErrorValue> {
        postcard::to_allocvec(&(MESSAGE_VERSION, self)).map_err(|error| ErrorValue::plain(error.to_string()))
    }

    fn decode(bytes: &[u8]) -> Result<StoredMessage, ErrorValue> {
        match postcard::from_bytes::<(u8, StoredMessage)>(bytes) {
            Ok((MESSAGE_VERSION, message)) => Ok(message),
            Ok((version, _)) => Err(ErrorValue::plain(format!("a message has unknown version {version}"))),
            Err(error) => Err(ErrorValue::plain(format!("a stored message is damaged: {error}"))),
        }
    }

    fn type_name(&self) -> &'static str {
        match self.content {
            Content::Package { .. } => "package",
            Content::Request { .. } => "request",
        }
    }
}

pub fn now_rfc3339() -> String {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let seconds = since.as_secs() as i64;
    let (days, rest) = (seconds.div_euclid(86_400), seconds.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rest / 3600,
        rest / 60 % 60,
        rest % 60,
        since.subsec_millis()
    )
}

/// One agent's view of mail: its mailbox, its names, and whether it may
/// see identifiers.
#[derive(Clone)]
pub struct Mailbox {
    pub agent: FormulaId,
    pub handle: FormulaId,
    pub hub: Hub,
    pub confined: bool,
}

/// Callers waiting on requests, by (recipient agent, message number).
#[derive(Default)]
pub struct RequestWaiters {
    waiting: RefCell<HashMap<(FormulaId, u64), Vec<PromiseKit>>>,
}

impl Mailbox {
    /// The agent a name refers to, when it names an agent or a handle.
    fn recipient(&self, daemon: &Daemon, name: &Value) -> Result<(FormulaId, FormulaId), ErrorValue> {
        let path = parse_path(name)?;
        let id = self.hub.resolve(daemon, &path)?;
        if id.node() != daemon.node_id {
            // A peer's handle: its mail goes through the peer's gateway.
            return Ok((id, id));
        }
        agent_and_handle(daemon, id)
            .ok_or_else(|| ErrorValue::type_error(format!("{} is not an agent or a handle", path.join("."))))
    }

    async fn append(&self, daemon: &Daemon, recipient: FormulaId, message: &StoredMessage) -> Result<u64, ErrorValue> {
        let bytes = message.encode()?;
        daemon.store.append_message(recipient, bytes).await.map_err(store_error)
    }

    fn read(&self, daemon: &Daemon, number: u64) -> Result<StoredMessage, ErrorValue> {
        let bytes = daemon
            .store
            .read()
            .and_then(|snapshot| snapshot.get_message(self.agent, number))
            .map_err(store_error)?
            .ok_or_else(|| no_message(number))?;
        StoredMessage::decode(&bytes)
    }

    /// `send(to, strings, edgeNames, petNames)`.
    pub async fn send(&self, daemon: &Daemon, args: &[Value]) -> MethodResult {
        let (recipient, recipient_handle) = self.recipient(daemon, &args[0])?;
        let strings = string_list(&args[1], "strings")?;
        let names = string_list(&args[2], "edge names")?;
        let pet_paths = args[3].as_array().unwrap_or_default();
        if strings.len() != names.len() + 1 {
            return Err(ErrorValue::type_error(format!(
                "A message needs one more string than names, not {} strings and {} names",
                strings.len(),
                names.len()
            )));
        }
        if pet_paths.len() != names.len() {
            return Err(ErrorValue::type_error("A message needs a pet name for each edge name"));
        }
        for name in &names {
            parse_pet_name(name)?;
        }
        let mut ids = Vec::with_capacity(pet_paths.len());
        for path in pet_paths {
            ids.push(self.hub.resolve(daemon, &parse_path(path)?)?.into());
        }
        let message = StoredMessage {
            date: now_rfc3339(),
            from: self.handle.into(),
            to: recipient_handle.into(),
            content: Content::Package { strings, names, ids },
        };
        if recipient_handle.node() != daemon.node_id {
            return super::gateway::deliver_remote(&daemon.rc(), &message).await;
        }
        self.append(daemon, recipient, &message).await?;
        Ok(Value::Undefined)
    }

    /// Appends a package another node delivered (through the gateway).
    pub async fn deliver_from_peer(daemon: &Daemon, message: StoredMessage) -> MethodResult {
        let to = message.to.get().map_err(internal)?;
        let agent = handle_agent(daemon, to).ok_or_else(|| ErrorValue::plain("Cannot deliver to that"))?;
        let bytes = message.encode()?;
        daemon.store.append_message(agent, bytes).await.map_err(store_error)?;
        Ok(Value::Undefined)
    }

    /// `request(to, description, responseName?)`: a promise for the value.
    pub async fn request(&self, daemon: &Rc<Daemon>, args: &[Value]) -> MethodResult {
        let response_name = match args.get(2) {
            Some(Value::String(name)) => Some(parse_pet_name(name)?.as_str().to_string()),
            _ => None,
        };
        if let Some(name) = &response_name {
            // A repeated request with the same response name gets the kept
            // value without asking again.
            if let Ok(Some(id)) = self.hub.lookup_name(daemon, name) {
                return daemon.provide_settled(id).await;
            }
        }
        let (recipient, recipient_handle) = self.recipient(daemon, &args[0])?;
        let description = args[1].as_str().unwrap_or_default().to_string();
        if recipient_handle.node() != daemon.node_id {
            // A peer's agent: it answers with the id of a formula of its
            // node, which the name (if any) keeps, as a package's would.
            let id = super::gateway::request_remote(daemon, recipient_handle, self.handle, &description).await?;
            if let Some(name) = &response_name {
                daemon
                    .store
                    .write_name(self.hub.pet_store, parse_pet_name(name)?, id)
                    .await
                    .map_err(store_error)?;
            }
            return daemon.provide_settled(id).await;
        }
        let message = StoredMessage {
            date: now_rfc3339(),
            from: self.handle.into(),
            to: recipient_handle.into(),
            content: Content::Request {
                description,
                requester: self.agent.into(),
                response_name,
                settled: None,
            },
        };
        let kit = PromiseKit::new();
        let promise = kit.promise.clone();
        let number = self.append(daemon, recipient, &message).await?;
        daemon
            .requests
            .waiting
            .borrow_mut()
            .entry((recipient, number))
            .or_default()
            .push(kit);
        crate::runtime::when(&promise).await.map_err(super::reason_to_error)
    }

    /// A request another node's agent `from` made of our handle `to`
    /// (through the gateway): kept in the recipient's mailbox like any
    /// other, and answered once it is resolved, with the id of the value.
    /// The requester's name for the answer is kept on its own node.
    pub async fn request_from_peer(
        daemon: &Daemon,
        to: FormulaId,
        from: FormulaId,
        description: String,
    ) -> Result<FormulaId, ErrorValue> {
        let agent = handle_agent(daemon, to).ok_or_else(|| ErrorValue::plain("Cannot deliver to that"))?;
        let message = StoredMessage {
            date: now_rfc3339(),
            from: from.into(),
            to: to.into(),
            content: Content::Request {
                description,
                requester: from.into(),
                response_name: None,
                settled: None,
            },
        };
        let number = daemon
            .store
            .append_message(agent, message.encode()?)
            .await
            .map_err(store_error)?;
        let kit = PromiseKit::new();
        let promise = kit.promise.clone();
        daemon
            .requests
            .waiting
            .borrow_mut()
            .entry((agent, number))
            .or_default()
            .push(kit);
        // Settled either way; the stored message says how.
        let _ = crate::runtime::when(&promise).await;
        let bytes = daemon
            .store
            .read()
            .and_then(|snapshot| snapshot.get_message(agent, number))
            .map_err(store_error)?
            .ok_or_else(|| no_message(number))?;
        match StoredMessage::decode(&bytes)?.content {
            Content::Request {
                settled: Some(Settled::Resolved(id)),
                ..
            } => id.get().map_err(internal),
            Content::Request {
                settled: Some(Settled::Rejected(reason)),
                ..
            } => Err(ErrorValue::plain(reason)),
            _ => Err(ErrorValue::plain(format!("request {number} was not answered"))),
        }
    }

    /// Settles request `number` in this mailbox: the requester's name (if
    /// it gave one) and the request's record change in one commit.
    async fn settle_request(&self, daemon: &Rc<Daemon>, number: u64, settled: Settled) -> MethodResult {
        let mut message = self.read(daemon, number)?;
        let Content::Request {
            requester,
            response_name,
            settled: previous,
            ..
        } = &mut message.content
        else {
            return Err(ErrorValue::type_error(format!("Message {number} is not a request")));
        };
        if previous.is_some() {
            return Err(ErrorValue::type_error(format!("Request {number} was already answered")));
        }
        *previous = Some(settled.clone());
        let name_write = match (&settled, response_name.as_deref()) {
            (Settled::Resolved(id), Some(name)) => {
                let requester_store = agent_pet_store(daemon, requester.get().map_err(internal)?)?;
                Some((requester_store, parse_pet_name(name)?, id.get().map_err(internal)?))
            }
            _ => None,
        };
        let (agent, bytes) = (self.agent, message.encode()?);
        daemon
            .store
            .transact(move |tx| {
                tx.replace_message(agent, number, &bytes)?;
                if let Some((store, name, id)) = &name_write {
                    tx.write_name(*store, name, *id)?;
                }
                Ok(())
            })
            .await
            .map_err(store_error)?;
        let waiting = daemon.requests.waiting.borrow_mut().remove(&(self.agent, number));
        for mut kit in waiting.into_iter().flatten() {
            match &settled {
                Settled::Resolved(id) => kit.resolve(daemon.provide(id.get().map_err(internal)?)),
                Settled::Rejected(reason) => kit.reject(Value::error(ErrorValue::plain(reason.as_str()))),
            }
        }
        Ok(Value::Undefined)
    }

    /// `resolve(number, petName)`.
    pub async fn resolve(&self, daemon: &Rc<Daemon>, args: &[Value]) -> MethodResult {
        let number = message_number(&args[0])?;
        // Check the message before the name, so a bad number says so.
        match self.read(daemon, number)?.content {
            Content::Request { settled: None, .. } => {}
            Content::Request { .. } => {
                return Err(ErrorValue::type_error(format!("Request {number} was already answered")));
            }
            Content::Package { .. } => {
                return Err(ErrorValue::type_error(format!("Message {number} is not a request")));
            }
        }
        let id = self.hub.resolve(daemon, &parse_path(&args[1])?)?;
        self.settle_request(daemon, number, Settled::Resolved(id.into())).await
    }

    /// `reject(number, reason?)`.
    pub async fn reject(&self, daemon: &Rc<Daemon>, args: &[Value]) -> MethodResult {
        let number = message_number(&args[0])?;
        let reason = args
            .get(1)
            .and_then(Value::as_str)
            .unwrap_or("No reason given")
            .to_string();
        self.settle_request(daemon, number, Settled::Rejected(reason)).await
    }

    /// `adopt(number, edgeName, petName?)`.
    pub async fn adopt(&self, daemon: &Daemon, args: &[Value]) -> MethodResult {
        let number = message_number(&args[0])?;
        let message = self.read(daemon, number)?;
        let Content::Package { names, ids, .. } = &message.content else {
            return Err(ErrorValue::type_error(format!("Message {number} is not a package")));
        };
        let edge = args[1].as_str().unwrap_or_default();
        let index = names.iter().position(|name| name == edge).ok_or_else(|| {
            ErrorValue::type_error(format!(
                "Message {number} has no reference named {}",
                capstan_protocol::quote::json_string(&super::names::redact_identifiers(edge))
            ))
        })?;
        let id = ids
            .get(index)
            .ok_or_else(|| internal(super::DaemonError::Corrupt("message".into())))?;
        let target = match args.get(2) {
            Some(Value::Undefined) | None => Value::from(edge),
            Some(path) => path.clone(),
        };
        let (parent, name) = self.hub.resolve_parent(daemon, &parse_path(&target)?)?;
        let name = parse_pet_name(&name)?;
        daemon
            .store
            .write_name(parent.pet_store, name, id.get().map_err(internal)?)
            .await
            .map_err(store_error)?;
        Ok(Value::Undefined)
    }

    /// `dismiss(number)`.
    pub async fn dismiss(&self, daemon: &Daemon, args: &[Value]) -> MethodResult {
        let number = message_number(&args[0])?;
        let removed = daemon
            .store
            .dismiss_message(self.agent, number)
            .await
            .map_err(store_error)?;
        if removed {
            Ok(Value::Undefined)
        } else {
            Err(no_message(number))
        }
    }

    /// `listMessages()`: this agent's view of its messages.
    pub fn list(&self, daemon: &Daemon) -> MethodResult {
        let messages = daemon
            .store
            .read()
            .and_then(|snapshot| snapshot.list_messages(self.agent))
            .map_err(store_error)?;
        let views: Result<Vec<Value>, ErrorValue> = messages
            .iter()
            .map(|(number, bytes)| self.view(daemon, *number, bytes))
            .collect();
        Ok(Value::array(views?))
    }

    /// A message as this agent may see it.
    pub fn view(&self, daemon: &Daemon, number: u64, bytes: &[u8]) -> MethodResult {
        let message = StoredMessage::decode(bytes)?;
        let from = message.from.get().map_err(internal)?;
        let from_names = self.names_for(daemon, from)?;
        let mut fields: Vec<(&str, Value)> = vec![
            ("number", Value::Number(number as f64)),
            ("date", Value::from(message.date.as_str())),
            ("type", Value::from(message.type_name())),
            ("fromNames", Value::array(from_names.into_iter().map(Value::from))),
            ("dismissed", Value::Boolean(false)),
        ];
        if self.confined {
            fields.push(("fromHandle", daemon.provide(from)));
        } else {
            fields.push(("from", Value::from(message.from.as_str())));
            fields.push(("to", Value::from(message.to.as_str())));
        }
        match &message.content {
            Content::Package { strings, names, ids } => {
                fields.push(("strings", Value::array(strings.iter().map(|s| Value::from(s.as_str())))));
                fields.push(("names", Value::array(names.iter().map(|s| Value::from(s.as_str())))));
                if !self.confined {
                    fields.push(("ids", Value::array(ids.iter().map(|id| Value::from(id.as_str())))));
                }
            }
            Content::Request {
                description, settled, ..
            } => {
                fields.push(("description", Value::from(description.as_str())));
                let state = match settled {
                    None => "pending",
                    Some(Settled::Resolved(_)) => "resolved",
                    Some(Settled::Rejected(_)) => "rejected",
                };
                fields.push(("settled", Value::from(state)));
            }
        }
        Ok(Value::record(fields))
    }

    /// This agent's names for a handle (special names included).
    fn names_for(&self, daemon: &Daemon, handle: FormulaId) -> Result<Vec<String>, ErrorValue> {
        let mut names: Vec<String> = self
            .hub
            .specials
            .iter()
            .filter(|(_, id)| *id == handle)
            .map(|(name, _)| (*name).to_string())
            .collect();
        let pets = daemon
            .store
            .read()
            .and_then(|snapshot| snapshot.reverse_lookup_in(self.hub.pet_store, handle))
            .map_err(store_error)?;
        names.extend(pets.into_iter().map(|name| name.as_str().to_string()));
        // A sender known by its agent's name is shown by that name too.
        if let Some(agent) = handle_agent(daemon, handle) {
            let more = daemon
                .store
                .read()
                .and_then(|snapshot| snapshot.reverse_lookup_in(self.hub.pet_store, agent))
                .map_err(store_error)?;
            names.extend(more.into_iter().map(|name| name.as_str().to_string()));
        }
        Ok(names)
    }

    /// `followMessages()`: the messages now, then each new one.
    pub fn follow(self: &Rc<Self>, daemon: &Rc<Daemon>) -> MethodResult {
        let follower = daemon.store.follow_messages(self.agent).map_err(store_error)?;
        let backlog: Result<VecDeque<Value>, ErrorValue> = follower
            .snapshot
            .iter()
            .map(|(number, bytes)| self.view(daemon, *number, bytes))
            .collect();
        let state = Rc::new(MessageStream {
            backlog: RefCell::new(backlog?),
            follower: tokio::sync::Mutex::new(Some(follower)),
        });
        let (mailbox, daemon, next_state) = (Rc::clone(self), Rc::clone(daemon), Rc::clone(&state));
        Exo::new("MessageStream")
            .interface(M::interface(
                "MessageStream",
                [
                    ("next", M::call_when([]).returns(M::record())),
                    ("return", M::call_when([]).rest(M::any()).returns(M::record())),
                ],
                DefaultGuards::None,
            ))
            .async_method("next", move |_, _| {
                let (state, mailbox, daemon) = (Rc::clone(&next_state), Rc::clone(&mailbox), Rc::clone(&daemon));
                async move {
                    let mut follower = state.follower.lock().await;
                    if let Some(message) = state.backlog.borrow_mut().pop_front() {
                        return Ok(record! { "done" => false, "value" => message });
                    }
                    loop {
                        let Some(open) = follower.as_mut() else {
                            return Ok(record! { "done" => true, "value" => Value::Undefined });
                        };
                        let event = open.next().await.map_err(store_error)?;
                        if let MessageEventKind::Added { number, body } = event.kind {
                            let view = mailbox.view(&daemon, number, &body)?;
                            return Ok(record! { "done" => false, "value" => view });
                        }
                    }
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
}

struct MessageStream {
    backlog: RefCell<VecDeque<Value>>,
    follower: tokio::sync::Mutex<Option<MessageFollower>>,
}

fn internal(error: super::DaemonError) -> ErrorValue {
    ErrorValue::plain(error.to_string())
}

fn no_message(number: u64) -> ErrorValue {
    ErrorValue::type_error(format!("No message number {number}"))
}

fn message_number(value: &Value) -> Result<u64, ErrorValue> {
    match value {
        Value::Number(n) if *n >= 0.0 && n.fract() == 0.0 && *n < 9_007_199_254_740_992.0 => Ok(*n as u64),
        Value::BigInt(n) => n
            .to_string()
            .parse()
            .map_err(|_| ErrorValue::type_error("a message number is too large")),
        Value::String(text) => text.parse().map_err(|_| {
            ErrorValue::type_error(format!(
                "Invalid message number {}",
                capstan_protocol::quote::json_string(&super::names::redact_identifiers(text))
            ))
        }),
        other => Err(ErrorValue::type_error(format!(
            "Invalid message number {}",
            capstan_protocol::quote::quote(other)
        ))),
    }
}

fn string_list(value: &Value, what: &str) -> Result<Vec<String>, ErrorValue> {
    value
        .as_array()
        .ok_or_else(|| ErrorValue::type_error(format!("{what} must be an array of strings")))?
        .iter()
        .map(|item| {
            item.as_str()
                .map(str::to_string)
                .ok_or_else(|| ErrorValue::type_error(format!("{what} must be an array of strings")))
        })
        .collect()
}

/// For an agent or handle formula: the agent and its handle.
pub fn agent_and_handle(daemon: &Daemon, id: FormulaId) -> Option<(FormulaId, FormulaId)> {
    match daemon.formula(id).ok()? {
        Formula::Handle { agent } => Some((agent.get().ok()?, id)),
        Formula::Host { handle, .. } | Formula::Guest { handle, .. } => Some((id, handle.get().ok()?)),
        _ => None,
    }
}

fn handle_agent(daemon: &Daemon, handle: FormulaId) -> Option<FormulaId> {
    match daemon.formula(handle).ok()? {
        Formula::Handle { agent } => agent.get().ok(),
        _ => None,
    }
}

/// An agent's pet store.
pub fn agent_pet_store(daemon: &Daemon, agent: FormulaId) -> Result<FormulaId, ErrorValue> {
    match daemon.formula(agent).map_err(internal)? {
        Formula::Host { pet_store, .. } | Formula::Guest { pet_store, .. } => pet_store.get().map_err(internal),
        _ => Err(ErrorValue::type_error("the requester is not an agent")),
    }
}

/// The part every agent shares: an exo with `tag` and `guards`, the
/// directory methods over the agent's names and the mail methods over its
/// mailbox (both confined for a guest). Returns it with the agent's hub
/// and handle.
pub fn agent_exo(
    daemon: &Rc<Daemon>,
    id: FormulaId,
    tag: &str,
    guards: Vec<(&'static str, Value)>,
    confined: bool,
) -> Result<(Exo, Hub, FormulaId), ErrorValue> {
    let hub = super::names::hub_of_agent(daemon, id)?;
    let (agent, handle) = agent_and_handle(daemon, id)
        .ok_or_else(|| ErrorValue::plain(format!("{tag} is made from an agent formula")))?;
    let exo = Exo::new(tag).interface(M::interface(tag, guards, DefaultGuards::None));
    let exo = super::directory::with_directory_methods(exo, daemon, hub.clone(), confined);
    let mailbox = Mailbox {
        agent,
        handle,
        hub: hub.clone(),
        confined,
    };
    Ok((with_mail_methods(exo, daemon, mailbox), hub, handle))
}

/// The guards of the mail methods every agent has.
pub fn mail_method_guards() -> Vec<(&'static str, Value)> {
    let path = || M::or([M::string(), M::array_of(M::string(), None)]);
    let number = || M::or([M::number(), M::bigint(), M::string()]);
    vec![
        ("handle", M::call([]).returns(M::remotable())),
        ("listMessages", M::call([]).returns(M::array_of(M::record(), None))),
        ("followMessages", M::call([]).returns(M::remotable())),
        (
            "send",
            M::call([
                path(),
                M::array_of(M::string(), None),
                M::array_of(M::string(), None),
                M::array_of(path(), None),
            ])
            .returns_undefined(),
        ),
        (
            "request",
            M::call_when([path(), M::string()])
                .optional([M::opt(M::string())])
                .returns(M::any()),
        ),
        ("resolve", M::call_when([number(), path()]).returns_undefined()),
        (
            "reject",
            M::call_when([number()])
                .optional([M::opt(M::string())])
                .returns_undefined(),
        ),
        (
            "adopt",
            M::call_when([number(), M::string()])
                .optional([M::opt(path())])
                .returns_undefined(),
        ),
        ("dismiss", M::call_when([number()]).returns_undefined()),
    ]
}

/// Adds the mail methods of `mailbox`'s agent to an exo.
pub fn with_mail_methods(exo: Exo, daemon: &Rc<Daemon>, mailbox: Mailbox) -> Exo {
    let mailbox = Rc::new(mailbox);
    let (d, m) = (Rc::clone(daemon), Rc::clone(&mailbox));
    let exo = exo.method("handle", move |_, _| Ok(d.provide(m.handle)));
    let (d, m) = (Rc::clone(daemon), Rc::clone(&mailbox));
    let exo = exo.method("listMessages", move |_, _| m.list(&d));
    let (d, m) = (Rc::clone(daemon), Rc::clone(&mailbox));
    let exo = exo.method("followMessages", move |_, _| m.follow(&d));
    macro_rules! async_mail {
        ($exo:expr, $name:literal, $operation:ident) => {{
            let (d, m) = (Rc::clone(daemon), Rc::clone(&mailbox));
            $exo.async_method($name, move |_, args| {
                let (daemon, mailbox) = (Rc::clone(&d), Rc::clone(&m));
                async move { mailbox.$operation(&daemon, &args).await }
            })
        }};
    }
    let exo = async_mail!(exo, "send", send);
    let exo = async_mail!(exo, "request", request);
    let exo = async_mail!(exo, "resolve", resolve);
    let exo = async_mail!(exo, "reject", reject);
    let exo = async_mail!(exo, "adopt", adopt);
    async_mail!(exo, "dismiss", dismiss)
}
