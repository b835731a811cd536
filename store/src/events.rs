//! Change notification: per pet store name changes and per mailbox message
//! changes, published by the writer after their commit is durable.
//!
//! Each event carries the sequence number of its transaction. A follower
//! subscribes first and then reads a snapshot, which records the last
//! sequence number it includes; events at or below it are already in the
//! snapshot and are skipped, so a follower sees every change exactly once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::broadcast;

use crate::error::{Result, StoreError};
use crate::ids::{FormulaId, PetName};

/// Events a subscriber may fall behind by before it must resynchronise.
const CHANNEL_CAPACITY: usize = 1024;

/// A pet name added (or replaced) or removed in one pet store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NameChange {
    /// The transaction that made the change.
    pub seq: u64,
    pub pet_store: FormulaId,
    pub kind: NameChangeKind,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NameChangeKind {
    /// The name now refers to `id` (it may have referred to another id).
    Added {
        name: PetName,
        id: FormulaId,
    },
    Removed {
        name: PetName,
    },
}

/// A message added to or dismissed from one mailbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MessageEvent {
    /// The transaction that made the change.
    pub seq: u64,
    pub agent: FormulaId,
    pub kind: MessageEventKind,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MessageEventKind {
    Added { number: u64, body: Arc<[u8]> },
    Dismissed { number: u64 },
}

pub(crate) enum Event {
    Name(NameChange),
    Message(MessageEvent),
}

/// The broadcast channels of the pet stores and mailboxes someone follows.
#[derive(Default)]
pub(crate) struct Notifier {
    names: Mutex<HashMap<FormulaId, broadcast::Sender<NameChange>>>,
    messages: Mutex<HashMap<FormulaId, broadcast::Sender<MessageEvent>>>,
}

fn subscribe<E: Clone>(
    channels: &Mutex<HashMap<FormulaId, broadcast::Sender<E>>>,
    key: FormulaId,
) -> broadcast::Receiver<E> {
    // A panic elsewhere cannot leave the map half-updated, so a poisoned
    // lock is still safe to use.
    let mut channels = channels.lock().unwrap_or_else(PoisonError::into_inner);
    channels
        .entry(key)
        .or_insert_with(|| broadcast::channel(CHANNEL_CAPACITY).0)
        .subscribe()
}

fn publish<E: Clone>(channels: &Mutex<HashMap<FormulaId, broadcast::Sender<E>>>, key: FormulaId, event: &E) {
    let mut channels = channels.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(sender) = channels.get(&key) {
        if sender.receiver_count() == 0 {
            channels.remove(&key);
        } else {
            // Fails only when every receiver is gone, which is fine.
            let _ = sender.send(event.clone());
        }
    }
}

impl Notifier {
    pub(crate) fn subscribe_names(&self, pet_store: FormulaId) -> broadcast::Receiver<NameChange> {
        subscribe(&self.names, pet_store)
    }

    pub(crate) fn subscribe_messages(&self, agent: FormulaId) -> broadcast::Receiver<MessageEvent> {
        subscribe(&self.messages, agent)
    }

    pub(crate) fn publish(&self, event: &Event) {
        match event {
            Event::Name(change) => publish(&self.names, change.pet_store, change),
            Event::Message(message) => publish(&self.messages, message.agent, message),
        }
    }
}

/// Something with a transaction sequence number.
pub trait Sequenced {
    fn seq(&self) -> u64;
}

impl Sequenced for NameChange {
    fn seq(&self) -> u64 {
        self.seq
    }
}

impl Sequenced for MessageEvent {
    fn seq(&self) -> u64 {
        self.seq
    }
}

/// The current contents of a pet store or mailbox, then every later change
/// to it. Made by [`crate::Store::follow_names`] and
/// [`crate::Store::follow_messages`].
///
/// If the follower falls more than 1024 changes behind, `next` returns
/// [`StoreError::FollowerLagged`]; follow again to get a fresh snapshot.
pub struct Follower<S, E> {
    /// The contents as of `snapshot_seq`.
    pub snapshot: S,
    /// The sequence number of the last transaction the snapshot includes.
    pub snapshot_seq: u64,
    receiver: broadcast::Receiver<E>,
}

impl<S, E: Clone + Sequenced> Follower<S, E> {
    pub(crate) fn new(snapshot: S, snapshot_seq: u64, receiver: broadcast::Receiver<E>) -> Self {
        Self {
            snapshot,
            snapshot_seq,
            receiver,
        }
    }

    fn accept(&self, received: Result<E, broadcast::error::RecvError>) -> Option<Result<E>> {
        match received {
            Ok(event) if event.seq() <= self.snapshot_seq => None,
            Ok(event) => Some(Ok(event)),
            Err(broadcast::error::RecvError::Lagged(missed)) => Some(Err(StoreError::FollowerLagged { missed })),
            Err(broadcast::error::RecvError::Closed) => Some(Err(StoreError::WriterStopped)),
        }
    }

    /// The next change after the snapshot. Cancel-safe.
    pub async fn next(&mut self) -> Result<E> {
        loop {
            let received = self.receiver.recv().await;
            if let Some(outcome) = self.accept(received) {
                return outcome;
            }
        }
    }

    /// The next change after the snapshot, blocking the calling thread
    /// (not for async code).
    pub fn next_blocking(&mut self) -> Result<E> {
        loop {
            let received = self.receiver.blocking_recv();
            if let Some(outcome) = self.accept(received) {
                return outcome;
            }
        }
    }
}
