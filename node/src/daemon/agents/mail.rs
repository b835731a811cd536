//! Mail between agents: packages of text interleaved with references, and
//! requests for a value that the recipient resolves or rejects. Messages
//! are numbered per mailbox and kept in the store, so they and their
//! numbering survive a restart, and a request still pending after a
//! restart can be answered. A host sees identifiers in its messages; a
//! guest sees only live handles and its own names for the sender.
//!
//! Mail from other nodes is admitted here too, and bounded: only a node
//! the recipient was introduced to may write to it, and then within the
//! `[mail]` quotas (held messages and bytes counted per sending node by
//! the store, a rate, a message size, requests waiting). Listing and
//! following read the mailbox a page at a time, so no reply outgrows a
//! CapTP frame however much mail is held.
//!
//! Other nodes' ids a peer's package carries, and a peer's answer to our
//! request, are recorded as held from that peer in the commit that keeps
//! them ([`crate::daemon::holds`]).

use std::collections::{HashMap, VecDeque};
use std::rc::Rc;

use capstan_protocol::patterns::M;
use capstan_protocol::{ErrorValue, Value};
use capstan_store::{FormulaId, MessageEventKind, MessageFollower, NodeId, PageLimit, StoreError};

use super::{Agent, agent_and_handle, agent_pet_store, handle_agent};
use crate::daemon::message::{Content, PendingSlot, Settled, StoredMessage, TooManyPending, now_rfc3339};
use crate::daemon::names::{Hub, parse_path, parse_pet_name, redact_identifiers};
use crate::daemon::{Daemon, DaemonError, holds, peers};
use crate::runtime::args::{ArgError, FromArg, decode};
use crate::runtime::reason_to_error;
use crate::runtime::{ExoClass, ExoClassBuilder, MethodResult, iterator, when};

/// One agent's view of mail: its mailbox, its names, and whether it may
/// see identifiers. The stored message types are [`crate::daemon::message`]'s.
#[derive(Clone)]
pub struct Mailbox {
    pub agent: FormulaId,
    pub handle: FormulaId,
    pub hub: Rc<Hub>,
    pub confined: bool,
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
        Ok(daemon.store.append_message(recipient, bytes).await?)
    }

    fn read(&self, daemon: &Daemon, number: u64) -> Result<StoredMessage, ErrorValue> {
        let bytes = daemon
            .store
            .read()
            .and_then(|snapshot| snapshot.get_message(self.agent, number))?
            .ok_or_else(|| no_message(number))?;
        StoredMessage::decode(&bytes)
    }

    /// `send(to, strings, edgeNames, petNames)`.
    pub async fn send(
        &self,
        daemon: &Rc<Daemon>,
        (to, strings, names, pet_paths): (Value, Vec<String>, Vec<String>, Vec<Value>),
    ) -> MethodResult {
        let (recipient, recipient_handle) = self.recipient(daemon, &to)?;
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
        for path in &pet_paths {
            ids.push(self.hub.resolve(daemon, &parse_path(path)?)?.into());
        }
        let message = StoredMessage {
            date: now_rfc3339(),
            from: self.handle.into(),
            to: recipient_handle.into(),
            content: Content::Package { strings, names, ids },
        };
        if recipient_handle.node() != daemon.node_id {
            return peers::deliver_remote(daemon, &message).await;
        }
        self.append(daemon, recipient, &message).await?;
        Ok(Value::Undefined)
    }

    /// Checks a package another node, `remote`, delivers (through the
    /// gateway) against the introduction and all quotas but the stored
    /// ones, which [`Mailbox::deliver_from_peer`] checks as it appends it.
    pub fn admit_from_peer(daemon: &Daemon, remote: NodeId, message: StoredMessage) -> Result<Admitted, ErrorValue> {
        admit_from_peer(daemon, remote, message)
    }

    /// Appends an admitted package, if the held quotas let it.
    pub async fn deliver_from_peer(daemon: &Daemon, remote: NodeId, admitted: Admitted) -> MethodResult {
        store_from_peer(daemon, remote, admitted).await?;
        Ok(Value::Undefined)
    }

    /// `request(to, description, responseName?)`: a promise for the value.
    pub async fn request(
        &self,
        daemon: &Rc<Daemon>,
        (to, description, response_name): (Value, String, Option<String>),
    ) -> MethodResult {
        let response_name = match response_name {
            Some(name) => Some(parse_pet_name(&name)?.as_str().to_string()),
            None => None,
        };
        if let Some(name) = &response_name {
            // A repeated request with the same response name gets the kept
            // value without asking again.
            if let Ok(Some(id)) = self.hub.lookup_name(daemon, name) {
                return daemon.provide_settled(id).await;
            }
        }
        let (recipient, recipient_handle) = self.recipient(daemon, &to)?;
        if recipient_handle.node() != daemon.node_id {
            // A peer's agent: it answers with the id of a formula of its
            // node, which the name (if any) keeps, as a package's would.
            // We hold the answer from that node, recorded with its name.
            let id = peers::request_remote(daemon, recipient_handle, self.handle, &description).await?;
            let name = match &response_name {
                Some(name) => Some(parse_pet_name(name)?),
                None => None,
            };
            let (pet_store, giver, taken) = (self.hub.pet_store, recipient_handle.node(), holds::taken(daemon, [id]));
            daemon
                .store
                .transact(move |tx| {
                    if let Some(name) = &name {
                        tx.write_name(pet_store, name, id)?;
                    }
                    tx.take_holds(giver, &taken)
                })
                .await?;
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
        let number = self.append(daemon, recipient, &message).await?;
        let promise = daemon.requests.wait(recipient, number);
        when(&promise).await.map_err(reason_to_error)
    }

    /// A request another node's agent `from` made of our handle `to`
    /// (through the gateway): kept in the recipient's mailbox like any
    /// other, and answered once it is resolved, with the id of the value.
    /// The requester's name for the answer is kept on its own node.
    pub async fn request_from_peer(
        daemon: &Daemon,
        remote: NodeId,
        to: FormulaId,
        from: FormulaId,
        description: String,
    ) -> Result<FormulaId, ErrorValue> {
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
        let refused = |error: ErrorValue| {
            peers::log_refusal(remote, "refused a request from a peer", &error.message);
            error
        };
        let admitted = admit_from_peer(daemon, remote, message).map_err(refused)?;
        let agent = admitted.agent;
        let slot: PendingSlot<'_> = daemon
            .requests
            .reserve(remote, daemon.mail_quotas.pending_requests)
            .map_err(|TooManyPending(most)| {
                refused(ErrorValue::plain(format!(
                    "{most} of your requests already wait for an answer here (the most allowed)"
                )))
            })?;
        let number = store_from_peer(daemon, remote, admitted).await.map_err(refused)?;
        let promise = slot.wait(agent, number);
        // Settled either way; the stored message says how.
        let _ = when(&promise).await;
        let bytes = daemon
            .store
            .read()
            .and_then(|snapshot| snapshot.get_message(agent, number))?
            .ok_or_else(|| no_message(number))?;
        match StoredMessage::decode(&bytes)?.content {
            Content::Request {
                settled: Some(Settled::Resolved(id)),
                ..
            } => Ok(id.get()?),
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
                let requester_store = agent_pet_store(daemon, requester.get()?)?;
                Some((requester_store, parse_pet_name(name)?, id.get()?))
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
            .await?;
        for mut kit in daemon.requests.take(self.agent, number) {
            match &settled {
                Settled::Resolved(id) => kit.resolve(daemon.provide(id.get()?)),
                Settled::Rejected(reason) => kit.reject(Value::error(ErrorValue::plain(reason.as_str()))),
            }
        }
        Ok(Value::Undefined)
    }

    /// `resolve(number, petName)`.
    pub async fn resolve(
        &self,
        daemon: &Rc<Daemon>,
        (MessageNumber(number), path): (MessageNumber, Value),
    ) -> MethodResult {
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
        let id = self.hub.resolve(daemon, &parse_path(&path)?)?;
        self.settle_request(daemon, number, Settled::Resolved(id.into())).await
    }

    /// `reject(number, reason?)`.
    pub async fn reject(
        &self,
        daemon: &Rc<Daemon>,
        (MessageNumber(number), reason): (MessageNumber, Option<String>),
    ) -> MethodResult {
        let reason = reason.unwrap_or_else(|| "No reason given".to_string());
        self.settle_request(daemon, number, Settled::Rejected(reason)).await
    }

    /// `adopt(number, edgeName, petName?)`.
    pub async fn adopt(
        &self,
        daemon: &Daemon,
        (MessageNumber(number), edge, target): (MessageNumber, String, Option<Value>),
    ) -> MethodResult {
        let message = self.read(daemon, number)?;
        let Content::Package { names, ids, .. } = &message.content else {
            return Err(ErrorValue::type_error(format!("Message {number} is not a package")));
        };
        let index = names.iter().position(|name| *name == edge).ok_or_else(|| {
            ErrorValue::type_error(format!(
                "Message {number} has no reference named {}",
                capstan_protocol::quote::json_string(&redact_identifiers(&edge))
            ))
        })?;
        let id = ids
            .get(index)
            .ok_or_else(|| ErrorValue::from(DaemonError::Corrupt("message".into())))?;
        let target = target.unwrap_or_else(|| Value::from(edge.as_str()));
        let (parent, name) = self.hub.resolve_parent(daemon, &parse_path(&target)?)?;
        let name = parse_pet_name(&name)?;
        daemon.store.write_name(parent.pet_store, name, id.get()?).await?;
        Ok(Value::Undefined)
    }

    /// `dismiss(number)`.
    pub async fn dismiss(&self, daemon: &Daemon, (MessageNumber(number),): (MessageNumber,)) -> MethodResult {
        let removed = daemon.store.dismiss_message(self.agent, number).await?;
        if removed {
            // The message may have been the last thing holding a value.
            daemon.schedule_collection();
            // A request dismissed unanswered is never answered.
            for mut kit in daemon.requests.take(self.agent, number) {
                kit.reject(Value::error(ErrorValue::plain("the request was dismissed")));
            }
            Ok(Value::Undefined)
        } else {
            Err(no_message(number))
        }
    }

    /// `listMessages(first?, count?)`: this agent's view of its messages
    /// numbered `first` (default 0) or later, at most `count` (default and
    /// most [`LIST_PAGE.messages`](LIST_PAGE)) and about
    /// [`LIST_PAGE.bytes`](LIST_PAGE) of them. An empty list means there
    /// are no more; the next page starts after the last number given.
    pub fn list(&self, daemon: &Daemon, (first, count): (Option<MessageNumber>, Option<u64>)) -> MethodResult {
        let first = first.map_or(0, |MessageNumber(number)| number);
        let messages = count.map_or(LIST_PAGE.messages, |count| {
            usize::try_from(count)
                .unwrap_or(usize::MAX)
                .clamp(1, LIST_PAGE.messages)
        });
        let limit = PageLimit { messages, ..LIST_PAGE };
        let page = daemon
            .store
            .read()
            .and_then(|snapshot| snapshot.list_messages_page(self.agent, first, limit))?;
        // A page's messages mostly come from a few senders: name each once.
        let mut names: HashMap<FormulaId, Vec<String>> = HashMap::new();
        let mut views = Vec::with_capacity(page.len());
        for (number, bytes) in &page {
            let message = StoredMessage::decode(bytes)?;
            let from = message.from.get()?;
            let from_names = match names.get(&from) {
                Some(known) => known.clone(),
                None => names.entry(from).or_insert(self.names_for(daemon, from)?).clone(),
            };
            views.push(self.view_named(daemon, *number, &message, from_names)?);
        }
        Ok(Value::array(views))
    }

    /// A message as this agent may see it.
    pub fn view(&self, daemon: &Daemon, number: u64, bytes: &[u8]) -> MethodResult {
        let message = StoredMessage::decode(bytes)?;
        let from_names = self.names_for(daemon, message.from.get()?)?;
        self.view_named(daemon, number, &message, from_names)
    }

    /// A message as this agent may see it, with its names for the sender.
    fn view_named(
        &self,
        daemon: &Daemon,
        number: u64,
        message: &StoredMessage,
        from_names: Vec<String>,
    ) -> MethodResult {
        let from = message.from.get()?;
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
            .and_then(|snapshot| snapshot.reverse_lookup_in(self.hub.pet_store, handle))?;
        names.extend(pets.into_iter().map(|name| name.as_str().to_string()));
        // A sender known by its agent's name is shown by that name too.
        if let Some(agent) = handle_agent(daemon, handle) {
            let more = daemon
                .store
                .read()
                .and_then(|snapshot| snapshot.reverse_lookup_in(self.hub.pet_store, agent))?;
            names.extend(more.into_iter().map(|name| name.as_str().to_string()));
        }
        Ok(names)
    }

    /// `followMessages(first?)`: the messages now (numbered `first` or
    /// later), then each new one.
    pub fn follow(agent: &Agent, (first,): (Option<MessageNumber>,)) -> MethodResult {
        let first = first.map_or(0, |MessageNumber(number)| number);
        let follower = agent
            .daemon()
            .store
            .follow_messages_from(agent.mailbox.agent, first, FOLLOW_PAGE)?;
        let stream = MessageStream {
            agent: agent.clone(),
            state: tokio::sync::Mutex::new(Some(Following::new(follower, first))),
        };
        ExoClass::make_local(&MESSAGE_STREAM, Rc::new(stream))
    }
}

/// The most one page of `listMessages` holds: well inside a CapTP frame
/// (16 MiB) with what each message's view adds to its stored bytes.
pub const LIST_PAGE: PageLimit = PageLimit {
    messages: 1000,
    bytes: 4 << 20,
};

/// The most a message stream reads from the store at once.
const FOLLOW_PAGE: PageLimit = PageLimit {
    messages: 256,
    bytes: 4 << 20,
};

/// A peer's message that may be stored if the held quotas let it: the
/// recipient agent, the encoded message, and the other nodes' ids it
/// carries (held from the sender once it is stored).
pub struct Admitted {
    agent: FormulaId,
    body: Vec<u8>,
    holds: Vec<FormulaId>,
}

/// Checks a message `remote` wants to put in one of our mailboxes against
/// all but the held quotas (which [`store_from_peer`] checks in its
/// commit). The sender must have been introduced: its handle is named in
/// the recipient's pet store (by an invitation it accepted or redeemed, or
/// by the agent's own choice). Nothing is written.
fn admit_from_peer(daemon: &Daemon, remote: NodeId, message: StoredMessage) -> Result<Admitted, ErrorValue> {
    let (to, from) = (message.to.get()?, message.from.get()?);
    let not_introduced = || ErrorValue::plain("you were not introduced to that agent");
    let agent = handle_agent(daemon, to).ok_or_else(not_introduced)?;
    let pet_store = agent_pet_store(daemon, agent).map_err(|_| not_introduced())?;
    let names = daemon
        .store
        .read()
        .and_then(|snapshot| snapshot.reverse_lookup_in(pet_store, from))?;
    if names.is_empty() {
        return Err(not_introduced());
    }
    let quotas = &daemon.mail_quotas;
    if !daemon.mail_rates.take(remote, quotas.messages_per_second) {
        return Err(ErrorValue::plain(format!(
            "you are sending mail too fast (the most is {} messages a second)",
            quotas.messages_per_second
        )));
    }
    let body = message.encode()?;
    let len = body.len() as u64;
    if len > quotas.message_bytes {
        return Err(ErrorValue::plain(format!(
            "the message is {len} bytes, more than the {} the recipient takes in one message",
            quotas.message_bytes
        )));
    }
    let holds = match &message.content {
        Content::Package { ids, .. } => holds::taken(daemon, ids.iter().filter_map(|id| id.get().ok())),
        Content::Request { .. } => Vec::new(),
    };
    Ok(Admitted { agent, body, holds })
}

/// Why the store refused a peer's message.
enum OverQuota {
    Messages(u64),
    Bytes { held: u64, most: u64 },
}

/// Appends `remote`'s admitted message to its recipient's mailbox if it
/// fits the held quotas, counted in the same commit; its number.
async fn store_from_peer(
    daemon: &Daemon,
    remote: NodeId,
    Admitted { agent, body, holds }: Admitted,
) -> Result<u64, ErrorValue> {
    let quotas = daemon.mail_quotas.clone();
    let len = body.len() as u64;
    let stored = daemon
        .store
        .transact(move |tx| {
            let held = tx.held_mail(agent, remote)?;
            if held.messages >= quotas.held_messages {
                return Ok(Err(OverQuota::Messages(quotas.held_messages)));
            }
            if held.bytes.saturating_add(len) > quotas.held_bytes {
                return Ok(Err(OverQuota::Bytes {
                    held: held.bytes,
                    most: quotas.held_bytes,
                }));
            }
            let number = tx.append_message_from(agent, remote, &body)?;
            // The package's ids are held from the sender from this commit.
            tx.take_holds(remote, &holds)?;
            Ok::<_, StoreError>(Ok(number))
        })
        .await?;
    stored.map_err(|over| match over {
        OverQuota::Messages(most) => ErrorValue::plain(format!(
            "the recipient holds {most} messages from you already (the most it keeps)"
        )),
        OverQuota::Bytes { held, most } => ErrorValue::plain(format!(
            "the recipient holds {held} bytes of messages from you; this one ({len} bytes) would pass the most it keeps ({most})"
        )),
    })
}

/// What a message stream holds: its agent, and where it is (gone once the
/// stream is closed).
struct MessageStream {
    agent: Agent,
    state: tokio::sync::Mutex<Option<Following>>,
}

/// A stream's place: messages read but not yet given, the number after
/// the last one given, whether it has read up to the newest, and the
/// store's follower for what comes next.
struct Following {
    read: VecDeque<(u64, Vec<u8>)>,
    next: u64,
    caught_up: bool,
    follower: MessageFollower,
}

impl Following {
    fn new(mut follower: MessageFollower, first: u64) -> Following {
        let read = std::mem::take(&mut follower.snapshot).into();
        Following {
            read,
            next: first,
            caught_up: false,
            follower,
        }
    }

    /// The next message not given yet: from the pages read, then the next
    /// page, then as it is added. Numbers only grow, so one already given
    /// (read in a page, then seen again as an event) is skipped.
    async fn next(&mut self, daemon: &Daemon, agent: FormulaId) -> Result<(u64, Vec<u8>), ErrorValue> {
        loop {
            if let Some((number, body)) = self.read.pop_front() {
                if number >= self.next {
                    self.next = number.saturating_add(1);
                    return Ok((number, body));
                }
                continue;
            }
            if !self.caught_up {
                let page = daemon
                    .store
                    .read()
                    .and_then(|snapshot| snapshot.list_messages_page(agent, self.next, FOLLOW_PAGE))?;
                self.caught_up = page.is_empty();
                self.read = page.into();
                continue;
            }
            match self.follower.next().await {
                Ok(event) => {
                    if let MessageEventKind::Added { number, body } = event.kind {
                        self.read.push_back((number, body.to_vec()));
                    }
                }
                // Behind the events: read the store again from here.
                Err(StoreError::FollowerLagged { .. }) => {
                    self.follower = daemon.store.follow_messages_from(agent, self.next, FOLLOW_PAGE)?;
                    self.read = std::mem::take(&mut self.follower.snapshot).into();
                    self.caught_up = false;
                }
                Err(error) => return Err(error.into()),
            }
        }
    }
}

impl iterator::AsyncIterator for MessageStream {
    async fn next(&self) -> MethodResult {
        let mut state = self.state.lock().await;
        let Some(following) = state.as_mut() else {
            return Ok(iterator::done());
        };
        let (daemon, mailbox) = (self.agent.daemon(), &self.agent.mailbox);
        let (number, body) = following.next(daemon, mailbox.agent).await?;
        Ok(iterator::yielded(mailbox.view(daemon, number, &body)?))
    }

    async fn close(&self) -> MethodResult {
        *self.state.lock().await = None;
        Ok(iterator::done())
    }
}

thread_local! {
    static MESSAGE_STREAM: Result<ExoClass<Rc<MessageStream>>, ErrorValue> = iterator::async_iterator_class("MessageStream");
}

fn no_message(number: u64) -> ErrorValue {
    ErrorValue::type_error(format!("No message number {number}"))
}

/// A message number argument: a number, a bigint or a decimal string.
pub struct MessageNumber(pub u64);

impl FromArg for MessageNumber {
    fn from_arg(value: Value) -> Result<Self, ArgError> {
        Ok(MessageNumber(message_number(&value)?))
    }
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
                capstan_protocol::quote::json_string(&redact_identifiers(text))
            ))
        }),
        other => Err(ErrorValue::type_error(format!(
            "Invalid message number {}",
            capstan_protocol::quote::quote(other)
        ))),
    }
}

/// The guards of the mail methods every agent has.
pub fn mail_method_guards() -> Vec<(&'static str, Value)> {
    let path = || M::or([M::string(), M::array_of(M::string(), None)]);
    let number = || M::or([M::number(), M::bigint(), M::string()]);
    vec![
        ("handle", M::call([]).returns(M::remotable())),
        (
            "listMessages",
            M::call([])
                .optional([M::opt(number()), M::opt(M::number())])
                .returns(M::array_of(M::record(), None)),
        ),
        (
            "followMessages",
            M::call([]).optional([M::opt(number())]).returns(M::remotable()),
        ),
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

/// Adds the mail methods to an agent's class.
pub fn with_mail_methods(class: ExoClassBuilder<Agent>) -> ExoClassBuilder<Agent> {
    class
        .method("handle", |cx, _| {
            let agent = cx.state();
            Ok(agent.daemon().provide(agent.mailbox.handle))
        })
        .method("listMessages", |cx, args| {
            let agent = cx.state();
            agent.mailbox.list(agent.daemon(), decode(args)?)
        })
        .method("followMessages", |cx, args| Mailbox::follow(&cx.state(), decode(args)?))
        .async_state_method("send", |agent, args| async move {
            agent.mailbox.send(agent.daemon(), args).await
        })
        .async_state_method("request", |agent, args| async move {
            agent.mailbox.request(agent.daemon(), args).await
        })
        .async_state_method("resolve", |agent, args| async move {
            agent.mailbox.resolve(agent.daemon(), args).await
        })
        .async_state_method("reject", |agent, args| async move {
            agent.mailbox.reject(agent.daemon(), args).await
        })
        .async_state_method("adopt", |agent, args| async move {
            agent.mailbox.adopt(agent.daemon(), args).await
        })
        .async_state_method("dismiss", |agent, args| async move {
            agent.mailbox.dismiss(agent.daemon(), args).await
        })
}
