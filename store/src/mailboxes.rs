//! Mailboxes: agent id → (message number → message bytes). Each mailbox
//! hands out numbers from a counter of its own that only ever grows, so a
//! number is never reused, not after a dismissal and not after a restart.
//! The node encodes the messages.
//!
//! A message a peer delivered is appended with the node it came from
//! ([`Tx::append_message_from`]); the mailbox then counts, per sending
//! node, the messages and bytes it holds from it, in the same transaction
//! as every append, dismissal and rewrite, so the count the mail quotas
//! are checked against is right after a restart too.

use std::sync::Arc;

use redb::ReadableTable;

use crate::error::Result;
use crate::events::{Event, Follower, MessageEvent, MessageEventKind};
use crate::ids::{FormulaId, NodeId};
use crate::schema::{IdKey, MAILBOX_NEXT_NUMBER, MESSAGES};
use crate::tx::{Snapshot, Tx};
use crate::{Commit, Store};

/// A mailbox's messages in number order, then the changes to it.
pub type MessageFollower = Follower<Vec<(u64, Vec<u8>)>, MessageEvent>;

/// How much mail a mailbox holds from one sending node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HeldMail {
    pub messages: u64,
    pub bytes: u64,
}

/// The most one page of a mailbox may hold: at most `messages` messages,
/// and no more bytes than `bytes` (but always at least one message, so a
/// page always moves on).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageLimit {
    pub messages: usize,
    pub bytes: usize,
}

fn next_number(next: &impl ReadableTable<IdKey, u64>, agent: FormulaId) -> Result<u64> {
    Ok(next.get(agent.to_key())?.map_or(0, |value| value.value()))
}

fn list(messages: &impl ReadableTable<(IdKey, u64), &'static [u8]>, agent: FormulaId) -> Result<Vec<(u64, Vec<u8>)>> {
    let key = agent.to_key();
    let mut listed = Vec::new();
    for entry in messages.range((key, 0u64)..)? {
        let (entry_key, value) = entry?;
        let (entry_agent, number) = entry_key.value();
        if entry_agent != key {
            break;
        }
        listed.push((number, value.value().to_vec()));
    }
    Ok(listed)
}

fn page(
    messages: &impl ReadableTable<(IdKey, u64), &'static [u8]>,
    agent: FormulaId,
    first: u64,
    limit: PageLimit,
) -> Result<Vec<(u64, Vec<u8>)>> {
    let key = agent.to_key();
    let (mut listed, mut bytes) = (Vec::new(), 0usize);
    for entry in messages.range((key, first)..)? {
        let (entry_key, value) = entry?;
        let (entry_agent, number) = entry_key.value();
        if entry_agent != key || listed.len() >= limit.messages {
            break;
        }
        let body = value.value();
        bytes = bytes.saturating_add(body.len());
        if bytes > limit.bytes && !listed.is_empty() {
            break;
        }
        listed.push((number, body.to_vec()));
    }
    Ok(listed)
}

fn get(
    messages: &impl ReadableTable<(IdKey, u64), &'static [u8]>,
    agent: FormulaId,
    number: u64,
) -> Result<Option<Vec<u8>>> {
    Ok(messages
        .get((agent.to_key(), number))?
        .map(|value| value.value().to_vec()))
}

impl Tx<'_> {
    /// Adds a message to `agent`'s mailbox and returns its number.
    pub fn append_message(&mut self, agent: FormulaId, body: &[u8]) -> Result<u64> {
        let number = next_number(self.tables.mailbox_next_number.open()?, agent)?;
        self.tables
            .mailbox_next_number
            .open()?
            .insert(agent.to_key(), number.saturating_add(1))?;
        self.tables.messages.open()?.insert((agent.to_key(), number), body)?;
        let seq = self.seq;
        self.emit(Event::Message(MessageEvent {
            seq,
            agent,
            kind: MessageEventKind::Added {
                number,
                body: Arc::from(body),
            },
        }));
        Ok(number)
    }

    /// Adds a message `sender` (another node) delivered to `agent`'s
    /// mailbox, counting it in what the mailbox holds from that node.
    pub fn append_message_from(&mut self, agent: FormulaId, sender: NodeId, body: &[u8]) -> Result<u64> {
        let number = self.append_message(agent, body)?;
        self.tables
            .message_senders
            .open()?
            .insert((agent.to_key(), number), *sender.as_bytes())?;
        let held = self.held_mail(agent, sender)?;
        self.set_held_mail(
            agent,
            sender,
            HeldMail {
                messages: held.messages.saturating_add(1),
                bytes: held.bytes.saturating_add(body.len() as u64),
            },
        )?;
        Ok(number)
    }

    /// The messages and bytes `agent`'s mailbox holds from `sender`.
    pub fn held_mail(&mut self, agent: FormulaId, sender: NodeId) -> Result<HeldMail> {
        Ok(self
            .tables
            .mail_held
            .open()?
            .get((agent.to_key(), *sender.as_bytes()))?
            .map_or(HeldMail::default(), |value| {
                let (messages, bytes) = value.value();
                HeldMail { messages, bytes }
            }))
    }

    fn set_held_mail(&mut self, agent: FormulaId, sender: NodeId, held: HeldMail) -> Result<()> {
        let key = (agent.to_key(), *sender.as_bytes());
        if held == HeldMail::default() {
            self.tables.mail_held.open()?.remove(key)?;
        } else {
            self.tables.mail_held.open()?.insert(key, (held.messages, held.bytes))?;
        }
        Ok(())
    }

    /// The node that delivered message `number`, if a peer did.
    fn message_sender(&mut self, agent: FormulaId, number: u64) -> Result<Option<NodeId>> {
        Ok(self
            .tables
            .message_senders
            .open()?
            .get((agent.to_key(), number))?
            .map(|value| NodeId::from_bytes(value.value())))
    }

    /// Removes a message; `false` if there was none with that number.
    pub fn dismiss_message(&mut self, agent: FormulaId, number: u64) -> Result<bool> {
        let removed_len = self
            .tables
            .messages
            .open()?
            .remove((agent.to_key(), number))?
            .map(|value| value.value().len() as u64);
        let removed = removed_len.is_some();
        if let (Some(len), Some(sender)) = (removed_len, self.message_sender(agent, number)?) {
            self.tables.message_senders.open()?.remove((agent.to_key(), number))?;
            let held = self.held_mail(agent, sender)?;
            self.set_held_mail(
                agent,
                sender,
                HeldMail {
                    messages: held.messages.saturating_sub(1),
                    bytes: held.bytes.saturating_sub(len),
                },
            )?;
        }
        if removed {
            let seq = self.seq;
            self.emit(Event::Message(MessageEvent {
                seq,
                agent,
                kind: MessageEventKind::Dismissed { number },
            }));
        }
        Ok(removed)
    }

    /// Rewrites an existing message in place (a request that was
    /// answered); `false` if there was none with that number. Followers
    /// are not told: the message is the same one, settled.
    pub fn replace_message(&mut self, agent: FormulaId, number: u64, body: &[u8]) -> Result<bool> {
        let Some(old) = get(self.tables.messages.open()?, agent, number)? else {
            return Ok(false);
        };
        self.tables.messages.open()?.insert((agent.to_key(), number), body)?;
        if let Some(sender) = self.message_sender(agent, number)? {
            let held = self.held_mail(agent, sender)?;
            let bytes = held.bytes.saturating_sub(old.len() as u64);
            self.set_held_mail(
                agent,
                sender,
                HeldMail {
                    messages: held.messages,
                    bytes: bytes.saturating_add(body.len() as u64),
                },
            )?;
        }
        Ok(true)
    }

    pub fn get_message(&mut self, agent: FormulaId, number: u64) -> Result<Option<Vec<u8>>> {
        get(self.tables.messages.open()?, agent, number)
    }
}

impl Snapshot {
    pub fn get_message(&self, agent: FormulaId, number: u64) -> Result<Option<Vec<u8>>> {
        get(&self.txn.open_table(MESSAGES)?, agent, number)
    }

    /// `agent`'s messages in number order.
    pub fn list_messages(&self, agent: FormulaId) -> Result<Vec<(u64, Vec<u8>)>> {
        list(&self.txn.open_table(MESSAGES)?, agent)
    }

    /// `agent`'s messages numbered `first` or later, in number order, as
    /// many as `limit` allows.
    pub fn list_messages_page(&self, agent: FormulaId, first: u64, limit: PageLimit) -> Result<Vec<(u64, Vec<u8>)>> {
        page(&self.txn.open_table(MESSAGES)?, agent, first, limit)
    }

    /// The number the next message to `agent` will get.
    pub fn next_message_number(&self, agent: FormulaId) -> Result<u64> {
        next_number(&self.txn.open_table(MAILBOX_NEXT_NUMBER)?, agent)
    }
}

impl Store {
    /// Adds a message in one atomic write (which may share its commit with other writes waiting beside it); resolves to its number.
    pub fn append_message(&self, agent: FormulaId, body: Vec<u8>) -> Commit<u64> {
        self.transact_repeatable(move |tx| tx.append_message(agent, &body))
    }

    /// Dismisses a message in one atomic write (which may share its commit with other writes waiting beside it).
    pub fn dismiss_message(&self, agent: FormulaId, number: u64) -> Commit<bool> {
        self.transact_repeatable(move |tx| tx.dismiss_message(agent, number))
    }

    /// `agent`'s messages now, then every message added or dismissed.
    pub fn follow_messages(&self, agent: FormulaId) -> Result<MessageFollower> {
        let receiver = self.inner.notifier.subscribe_messages(agent);
        let snapshot = self.read()?;
        let seq = snapshot.commit_seq()?;
        let messages = snapshot.list_messages(agent)?;
        Ok(Follower::new(messages, seq, receiver))
    }

    /// Like [`Store::follow_messages`], but the snapshot is only the first
    /// page of messages numbered `first` or later; the follower reads the
    /// rest with [`Snapshot::list_messages_page`], and skips the events of
    /// messages it has already read (numbers only grow).
    pub fn follow_messages_from(&self, agent: FormulaId, first: u64, limit: PageLimit) -> Result<MessageFollower> {
        let receiver = self.inner.notifier.subscribe_messages(agent);
        let snapshot = self.read()?;
        let seq = snapshot.commit_seq()?;
        let messages = snapshot.list_messages_page(agent, first, limit)?;
        Ok(Follower::new(messages, seq, receiver))
    }
}

#[cfg(test)]
mod tests {
    use super::{HeldMail, PageLimit};
    use crate::{FormulaId, NodeId, Store};

    fn agent() -> FormulaId {
        FormulaId::new([7; 32], NodeId::from_bytes([1; 32]))
    }

    #[test]
    fn mail_from_a_peer_is_counted_through_dismissal_rewrite_and_reopening() {
        let temp = tempfile::TempDir::new().unwrap();
        let (peer, other) = (NodeId::from_bytes([2; 32]), NodeId::from_bytes([3; 32]));
        let store = Store::open(temp.path()).unwrap();
        let held = |store: &Store, node| store.transact(move |tx| tx.held_mail(agent(), node)).wait().unwrap();
        store.append_message(agent(), b"local".to_vec()).wait().unwrap();
        for body in [&b"abc"[..], b"defgh"] {
            store
                .transact(move |tx| tx.append_message_from(agent(), peer, body))
                .wait()
                .unwrap();
        }
        assert_eq!(held(&store, peer), HeldMail { messages: 2, bytes: 8 });
        assert_eq!(held(&store, other), HeldMail::default());
        store
            .transact(|tx| tx.replace_message(agent(), 1, b"abcdefg"))
            .wait()
            .unwrap();
        assert_eq!(held(&store, peer), HeldMail { messages: 2, bytes: 12 });
        // A local message dismissed changes nothing counted.
        assert!(store.dismiss_message(agent(), 0).wait().unwrap());
        assert!(store.dismiss_message(agent(), 2).wait().unwrap());
        assert_eq!(held(&store, peer), HeldMail { messages: 1, bytes: 7 });
        store.close().unwrap();
        let store = Store::open(temp.path()).unwrap();
        assert_eq!(held(&store, peer), HeldMail { messages: 1, bytes: 7 });
        assert!(store.dismiss_message(agent(), 1).wait().unwrap());
        assert_eq!(held(&store, peer), HeldMail::default());
    }

    #[test]
    fn pages_are_bounded_by_count_and_bytes_but_never_empty_while_messages_remain() {
        let temp = tempfile::TempDir::new().unwrap();
        let store = Store::open(temp.path()).unwrap();
        for size in [10usize, 10, 100, 10, 10] {
            store.append_message(agent(), vec![0; size]).wait().unwrap();
        }
        let numbers = |first, messages, bytes| -> Vec<u64> {
            let snapshot = store.read().unwrap();
            let page = snapshot
                .list_messages_page(agent(), first, PageLimit { messages, bytes })
                .unwrap();
            page.into_iter().map(|(number, _)| number).collect()
        };
        assert_eq!(numbers(0, 2, 1000), [0, 1]);
        assert_eq!(numbers(0, 10, 50), [0, 1]);
        assert_eq!(numbers(2, 10, 50), [2]);
        assert_eq!(numbers(3, 10, 1000), [3, 4]);
        assert!(numbers(5, 10, 1000).is_empty());
    }
}
