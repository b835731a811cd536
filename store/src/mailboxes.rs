//! Mailboxes: agent id → (message number → message bytes). Each mailbox
//! hands out numbers from a counter of its own that only ever grows, so a
//! number is never reused, not after a dismissal and not after a restart.
//! The node encodes the messages.

use std::sync::Arc;

use redb::ReadableTable;

use crate::error::Result;
use crate::events::{Event, Follower, MessageEvent, MessageEventKind};
use crate::ids::FormulaId;
use crate::schema::{IdKey, MAILBOX_NEXT_NUMBER, MESSAGES};
use crate::tx::{Snapshot, Tx};
use crate::{Commit, Store};

/// A mailbox's messages in number order, then the changes to it.
pub type MessageFollower = Follower<Vec<(u64, Vec<u8>)>, MessageEvent>;

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
        let number = next_number(&self.tables.mailbox_next_number, agent)?;
        self.tables
            .mailbox_next_number
            .insert(agent.to_key(), number.saturating_add(1))?;
        self.tables.messages.insert((agent.to_key(), number), body)?;
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

    /// Removes a message; `false` if there was none with that number.
    pub fn dismiss_message(&mut self, agent: FormulaId, number: u64) -> Result<bool> {
        let removed = self.tables.messages.remove((agent.to_key(), number))?.is_some();
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
        if get(&self.tables.messages, agent, number)?.is_none() {
            return Ok(false);
        }
        self.tables.messages.insert((agent.to_key(), number), body)?;
        Ok(true)
    }

    pub fn get_message(&self, agent: FormulaId, number: u64) -> Result<Option<Vec<u8>>> {
        get(&self.tables.messages, agent, number)
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

    /// The number the next message to `agent` will get.
    pub fn next_message_number(&self, agent: FormulaId) -> Result<u64> {
        next_number(&self.txn.open_table(MAILBOX_NEXT_NUMBER)?, agent)
    }
}

impl Store {
    /// Adds a message in a commit of its own; resolves to its number.
    pub fn append_message(&self, agent: FormulaId, body: Vec<u8>) -> Commit<u64> {
        self.transact(move |tx| tx.append_message(agent, &body))
    }

    /// Dismisses a message in a commit of its own.
    pub fn dismiss_message(&self, agent: FormulaId, number: u64) -> Commit<bool> {
        self.transact(move |tx| tx.dismiss_message(agent, number))
    }

    /// `agent`'s messages now, then every message added or dismissed.
    pub fn follow_messages(&self, agent: FormulaId) -> Result<MessageFollower> {
        let receiver = self.inner.notifier.subscribe_messages(agent);
        let snapshot = self.read()?;
        let seq = snapshot.commit_seq()?;
        let messages = snapshot.list_messages(agent)?;
        Ok(Follower::new(messages, seq, receiver))
    }
}
