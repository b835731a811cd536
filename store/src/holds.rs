//! Holds across nodes: which of the ids this node gave away other nodes
//! still hold, and which ids of other nodes this node holds, with the
//! releases it owes for those it let go of.
//!
//! Both sides count. The giving node counts, per (peer, id), the times it
//! gave the id to that peer ([`Tx::give_holds`]); the receiving node
//! counts, per (giver, id), the times it received it ([`Tx::take_holds`]).
//! When the receiver no longer reaches an id ([`Tx::queue_hold_releases`],
//! after a collection) it moves its count into a numbered release batch
//! for the giver, an outbox sent until acknowledged; the giver subtracts
//! the count ([`Tx::apply_hold_releases`]) and forgets the hold at zero.
//! Counting, rather than a yes/no, keeps a hold given again while a
//! release is on its way; batch numbers, applied once each, make a batch
//! sent twice harmless. The node decides which ids are recorded; the
//! store keeps the counts.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use redb::{ReadableTable, TableDefinition};

use crate::error::Result;
use crate::ids::{FormulaId, NodeId};
use crate::schema::{
    HOLD_RELEASE_NEXT, HOLD_RELEASES, HOLD_RELEASES_APPLIED, HOLDS_GIVEN, HOLDS_TAKEN, HashKey, IdKey,
};
use crate::tx::{Snapshot, Tx};

/// The most ids one release batch holds (and so one `release` call
/// carries).
pub const RELEASE_BATCH_MAX: usize = 256;

/// Releases queued for one giving node, to be sent in `number` order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReleaseBatch {
    pub giver: NodeId,
    pub number: u64,
    /// Each id released, with the count of receipts it releases.
    pub released: Vec<(FormulaId, u64)>,
}

/// The first and last keys of one node's rows in a (node, id) table.
fn node_range(node: NodeId) -> std::ops::RangeInclusive<([u8; 32], [u8; 64])> {
    (*node.as_bytes(), [0u8; 64])..=(*node.as_bytes(), [0xffu8; 64])
}

/// One node's rows of a (node, id) table, in id order.
fn rows_of<V>(
    table: &impl ReadableTable<(HashKey, IdKey), V>,
    node: NodeId,
    mut value: impl FnMut(V::SelfType<'_>) -> u64,
) -> Result<Vec<(FormulaId, u64)>>
where
    V: redb::Value + 'static,
{
    let mut rows = Vec::new();
    for entry in table.range(node_range(node))? {
        let (key, stored) = entry?;
        let (_, id) = key.value();
        rows.push((FormulaId::from_key(id), value(stored.value())));
    }
    Ok(rows)
}

/// How many ids each node has rows for, in node order.
fn count_by_node<V>(table: &impl ReadableTable<(HashKey, IdKey), V>) -> Result<Vec<(NodeId, u64)>>
where
    V: redb::Value + 'static,
{
    let mut counts: BTreeMap<NodeId, u64> = BTreeMap::new();
    for entry in table.iter()? {
        let (key, _) = entry?;
        let (node, _) = key.value();
        *counts.entry(NodeId::from_bytes(node)).or_default() += 1;
    }
    Ok(counts.into_iter().collect())
}

/// Every id some peer holds, each once, in id order.
fn held_ids(given: &impl ReadableTable<(HashKey, IdKey), u64>) -> Result<Vec<FormulaId>> {
    let mut ids = BTreeSet::new();
    for entry in given.iter()? {
        let (key, _) = entry?;
        let (_, id) = key.value();
        ids.insert(FormulaId::from_key(id));
    }
    Ok(ids.into_iter().collect())
}

/// Every queued release batch, by giver then number.
fn batches(releases: &impl ReadableTable<(HashKey, u64, IdKey), u64>) -> Result<Vec<ReleaseBatch>> {
    let mut batches: Vec<ReleaseBatch> = Vec::new();
    for entry in releases.iter()? {
        let (key, count) = entry?;
        let (giver, number, id) = key.value();
        let giver = NodeId::from_bytes(giver);
        let released = (FormulaId::from_key(id), count.value());
        match batches.last_mut() {
            Some(batch) if batch.giver == giver && batch.number == number => batch.released.push(released),
            _ => batches.push(ReleaseBatch {
                giver,
                number,
                released: vec![released],
            }),
        }
    }
    Ok(batches)
}

impl Tx<'_> {
    /// Records that each of `ids` was given to `peer` once more (an id
    /// listed twice, twice): the peer holds it until it releases as many.
    pub fn give_holds(&mut self, peer: NodeId, ids: &[FormulaId]) -> Result<()> {
        for id in ids {
            let key = (*peer.as_bytes(), id.to_key());
            let count = self
                .tables
                .holds_given
                .open()?
                .get(key)?
                .map_or(0, |value| value.value());
            self.tables.holds_given.open()?.insert(key, count.saturating_add(1))?;
        }
        Ok(())
    }

    /// Takes back one giving of each of `ids` to `peer`: the send they
    /// were recorded for was refused.
    pub fn ungive_holds(&mut self, peer: NodeId, ids: &[FormulaId]) -> Result<()> {
        for id in ids {
            self.release_given(peer, *id, 1)?;
        }
        Ok(())
    }

    fn release_given(&mut self, peer: NodeId, id: FormulaId, count: u64) -> Result<()> {
        let key = (*peer.as_bytes(), id.to_key());
        let Some(held) = self.tables.holds_given.open()?.get(key)?.map(|value| value.value()) else {
            return Ok(());
        };
        match held.saturating_sub(count) {
            0 => self.tables.holds_given.open()?.remove(key)?,
            left => self.tables.holds_given.open()?.insert(key, left)?,
        };
        Ok(())
    }

    /// Records that this node received each of `ids` from `giver` once
    /// more, in this transaction (whose sequence number marks the receipt).
    pub fn take_holds(&mut self, giver: NodeId, ids: &[FormulaId]) -> Result<()> {
        for id in ids {
            let key = (*giver.as_bytes(), id.to_key());
            let count = self
                .tables
                .holds_taken
                .open()?
                .get(key)?
                .map_or(0, |value| value.value().0);
            self.tables
                .holds_taken
                .open()?
                .insert(key, (count.saturating_add(1), self.seq))?;
        }
        Ok(())
    }

    /// Applies `peer`'s release batch `batch`: each id's count is taken
    /// from the peer's hold, which goes at zero. Only the peer's own holds
    /// change. A batch numbered no higher than the last applied is not
    /// applied again; nor is anything recorded for a peer that holds
    /// nothing here (so a stranger's releases leave no trace). `true` if
    /// it was applied.
    pub fn apply_hold_releases(&mut self, peer: NodeId, batch: u64, released: &[(FormulaId, u64)]) -> Result<bool> {
        let applied = self
            .tables
            .hold_releases_applied
            .open()?
            .get(*peer.as_bytes())?
            .map_or(0, |value| value.value());
        if batch <= applied {
            return Ok(false);
        }
        if self
            .tables
            .holds_given
            .open()?
            .range(node_range(peer))?
            .next()
            .is_none()
        {
            return Ok(false);
        }
        for (id, count) in released {
            self.release_given(peer, *id, *count)?;
        }
        self.tables
            .hold_releases_applied
            .open()?
            .insert(*peer.as_bytes(), batch)?;
        Ok(true)
    }

    /// Drops every hold `peer` has here; how many ids it held.
    pub fn forget_holds_of(&mut self, peer: NodeId) -> Result<u64> {
        let keys: Vec<([u8; 32], [u8; 64])> = rows_of(self.tables.holds_given.open()?, peer, |count| count)?
            .into_iter()
            .map(|(id, _)| (*peer.as_bytes(), id.to_key()))
            .collect();
        for key in &keys {
            self.tables.holds_given.open()?.remove(*key)?;
        }
        Ok(keys.len() as u64)
    }

    /// After a collection: every id this node holds from another node
    /// that is not in `still_held` (the other nodes' ids the collection
    /// found reachable) and was last received no later than commit
    /// `marked_at_seq` (what the collection looked at; a receipt after it
    /// was not seen, so it is kept) is let go of: its count moves into a
    /// new release batch for its giver (at most [`RELEASE_BATCH_MAX`] ids
    /// a batch). How many ids were let go of.
    pub fn queue_hold_releases(&mut self, still_held: &HashSet<FormulaId>, marked_at_seq: u64) -> Result<u64> {
        let mut let_go: BTreeMap<NodeId, Vec<(FormulaId, u64)>> = BTreeMap::new();
        for entry in self.tables.holds_taken.open()?.iter()? {
            let (key, value) = entry?;
            let (giver, id) = key.value();
            let (id, (count, received_at)) = (FormulaId::from_key(id), value.value());
            if received_at <= marked_at_seq && !still_held.contains(&id) {
                let_go.entry(NodeId::from_bytes(giver)).or_default().push((id, count));
            }
        }
        let mut queued = 0u64;
        for (giver, released) in let_go {
            for chunk in released.chunks(RELEASE_BATCH_MAX) {
                let number = self
                    .tables
                    .hold_release_next
                    .open()?
                    .get(*giver.as_bytes())?
                    .map_or(1, |value| value.value());
                self.tables
                    .hold_release_next
                    .open()?
                    .insert(*giver.as_bytes(), number.saturating_add(1))?;
                for (id, count) in chunk {
                    self.tables
                        .hold_releases
                        .open()?
                        .insert((*giver.as_bytes(), number, id.to_key()), *count)?;
                    self.tables
                        .holds_taken
                        .open()?
                        .remove((*giver.as_bytes(), id.to_key()))?;
                    queued += 1;
                }
            }
        }
        Ok(queued)
    }

    /// Removes a release batch the giver acknowledged; `false` if it was
    /// not queued.
    pub fn remove_release_batch(&mut self, giver: NodeId, batch: u64) -> Result<bool> {
        let range = (*giver.as_bytes(), batch, [0u8; 64])..=(*giver.as_bytes(), batch, [0xffu8; 64]);
        let mut keys = Vec::new();
        for entry in self.tables.hold_releases.open()?.range(range)? {
            let (key, _) = entry?;
            keys.push(key.value());
        }
        for key in &keys {
            self.tables.hold_releases.open()?.remove(*key)?;
        }
        Ok(!keys.is_empty())
    }

    /// Every id (of this node or, passed on, of another) some peer holds:
    /// roots of a collection.
    pub fn formulas_held_by_peers(&mut self) -> Result<Vec<FormulaId>> {
        held_ids(self.tables.holds_given.open()?)
    }
}

impl Snapshot {
    /// Opens a table this snapshot may predate (a store made before it,
    /// not written since): `None` if it does not exist yet.
    fn hold_table<K, V>(&self, table: TableDefinition<K, V>) -> Result<Option<redb::ReadOnlyTable<K, V>>>
    where
        K: redb::Key + 'static,
        V: redb::Value + 'static,
    {
        match self.txn.open_table(table) {
            Ok(table) => Ok(Some(table)),
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
            Err(error) => Err(error.into()),
        }
    }

    /// Every id (of this node or, passed on, of another) some peer holds:
    /// roots of a collection.
    pub fn formulas_held_by_peers(&self) -> Result<Vec<FormulaId>> {
        match self.hold_table(HOLDS_GIVEN)? {
            Some(given) => held_ids(&given),
            None => Ok(Vec::new()),
        }
    }

    /// The ids `peer` holds here, with how many times each was given.
    pub fn holds_of(&self, peer: NodeId) -> Result<Vec<(FormulaId, u64)>> {
        match self.hold_table(HOLDS_GIVEN)? {
            Some(given) => rows_of(&given, peer, |count| count),
            None => Ok(Vec::new()),
        }
    }

    /// Whether `peer` holds anything here.
    pub fn holds_any(&self, peer: NodeId) -> Result<bool> {
        match self.hold_table(HOLDS_GIVEN)? {
            Some(given) => Ok(given.range(node_range(peer))?.next().is_some()),
            None => Ok(false),
        }
    }

    /// How many ids each peer holds here, in node order.
    pub fn holds_by_peer(&self) -> Result<Vec<(NodeId, u64)>> {
        match self.hold_table(HOLDS_GIVEN)? {
            Some(given) => count_by_node(&given),
            None => Ok(Vec::new()),
        }
    }

    /// The ids this node holds from `giver`, with how many times each was
    /// received.
    pub fn holds_taken_from(&self, giver: NodeId) -> Result<Vec<(FormulaId, u64)>> {
        match self.hold_table(HOLDS_TAKEN)? {
            Some(taken) => rows_of(&taken, giver, |(count, _)| count),
            None => Ok(Vec::new()),
        }
    }

    /// How many ids this node holds from each giving node, in node order.
    pub fn holds_taken_by_giver(&self) -> Result<Vec<(NodeId, u64)>> {
        match self.hold_table(HOLDS_TAKEN)? {
            Some(taken) => count_by_node(&taken),
            None => Ok(Vec::new()),
        }
    }

    /// Every release batch waiting to be sent, by giver then number.
    pub fn pending_release_batches(&self) -> Result<Vec<ReleaseBatch>> {
        match self.hold_table(HOLD_RELEASES)? {
            Some(releases) => batches(&releases),
            None => Ok(Vec::new()),
        }
    }

    /// Whether release batches wait to be sent to `giver`.
    pub fn releases_wait_for(&self, giver: NodeId) -> Result<bool> {
        let Some(releases) = self.hold_table(HOLD_RELEASES)? else {
            return Ok(false);
        };
        let range = (*giver.as_bytes(), 0u64, [0u8; 64])..=(*giver.as_bytes(), u64::MAX, [0xffu8; 64]);
        Ok(releases.range(range)?.next().is_some())
    }

    /// The last release batch of `peer` applied here (0 if none).
    pub fn hold_releases_applied(&self, peer: NodeId) -> Result<u64> {
        Ok(match self.hold_table(HOLD_RELEASES_APPLIED)? {
            Some(applied) => applied.get(*peer.as_bytes())?.map_or(0, |value| value.value()),
            None => 0,
        })
    }

    /// The number the next release batch for `giver` will have.
    pub fn next_release_batch(&self, giver: NodeId) -> Result<u64> {
        Ok(match self.hold_table(HOLD_RELEASE_NEXT)? {
            Some(next) => next.get(*giver.as_bytes())?.map_or(1, |value| value.value()),
            None => 1,
        })
    }
}
