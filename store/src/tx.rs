//! [`Tx`], one write transaction as the writer thread hands it to a job,
//! and [`Snapshot`], one consistent read-only view.
//!
//! Their methods for each kind of record live beside that record's types:
//! `formulas.rs`, `pet_names.rs`, `mailboxes.rs`, `blobs.rs`, `peers.rs`,
//! `kernel.rs`, `holds.rs`. A `Tx` reads its own uncommitted writes.

use std::sync::Arc;

use redb::{Table, WriteTransaction};

use crate::error::Result;
use crate::events::Event;
use crate::schema::{self, HashKey, IdKey, KrefKey, VatKrefKey, VatTextKey};

/// Every table, open for writing in one transaction.
pub(crate) struct Tables<'t> {
    pub counters: Table<'t, &'static str, u64>,
    pub formulas: Table<'t, IdKey, &'static [u8]>,
    pub pet_store_numbers: Table<'t, IdKey, u64>,
    pub pet_store_ids: Table<'t, u64, IdKey>,
    pub pet_names: Table<'t, (u64, &'static [u8]), IdKey>,
    pub pet_names_by_id: Table<'t, (IdKey, u64, &'static [u8]), ()>,
    pub mailbox_next_number: Table<'t, IdKey, u64>,
    pub messages: Table<'t, (IdKey, u64), &'static [u8]>,
    pub message_senders: Table<'t, (IdKey, u64), HashKey>,
    pub mail_held: Table<'t, (IdKey, HashKey), (u64, u64)>,
    pub blobs: Table<'t, HashKey, (u64, u64, u32)>,
    pub blob_chunks: Table<'t, (u64, u64), &'static [u8]>,
    pub blob_uploads: Table<'t, u64, ()>,
    pub peers: Table<'t, HashKey, &'static [u8]>,
    pub krefs: Table<'t, KrefKey, &'static [u8]>,
    pub clist_by_kref: Table<'t, VatKrefKey, &'static [u8]>,
    pub clist_by_vref: Table<'t, VatTextKey, KrefKey>,
    pub subclusters: Table<'t, &'static [u8], &'static [u8]>,
    pub vat_configs: Table<'t, &'static [u8], &'static [u8]>,
    pub baggage: Table<'t, VatTextKey, &'static [u8]>,
    pub revoked: Table<'t, KrefKey, ()>,
    pub ocap_urls: Table<'t, HashKey, KrefKey>,
    pub redeemed_urls: Table<'t, KrefKey, &'static [u8]>,
    pub holds_given: Table<'t, (HashKey, IdKey), u64>,
    pub holds_taken: Table<'t, (HashKey, IdKey), (u64, u64)>,
    pub hold_releases: Table<'t, (HashKey, u64, IdKey), u64>,
    pub hold_release_next: Table<'t, HashKey, u64>,
    pub hold_releases_applied: Table<'t, HashKey, u64>,
}

impl<'t> Tables<'t> {
    // Opening every table up front costs a few microseconds per
    // transaction, small beside a commit, and lets an operation hold
    // several tables at once.
    pub(crate) fn open(txn: &'t WriteTransaction) -> Result<Self> {
        Ok(Self {
            counters: txn.open_table(schema::COUNTERS)?,
            formulas: txn.open_table(schema::FORMULAS)?,
            pet_store_numbers: txn.open_table(schema::PET_STORE_NUMBERS)?,
            pet_store_ids: txn.open_table(schema::PET_STORE_IDS)?,
            pet_names: txn.open_table(schema::PET_NAMES)?,
            pet_names_by_id: txn.open_table(schema::PET_NAMES_BY_ID)?,
            mailbox_next_number: txn.open_table(schema::MAILBOX_NEXT_NUMBER)?,
            messages: txn.open_table(schema::MESSAGES)?,
            // Opened for writing, these two are made in a store older
            // than them too.
            message_senders: txn.open_table(schema::MESSAGE_SENDERS)?,
            mail_held: txn.open_table(schema::MAIL_HELD)?,
            blobs: txn.open_table(schema::BLOBS)?,
            blob_chunks: txn.open_table(schema::BLOB_CHUNKS)?,
            blob_uploads: txn.open_table(schema::BLOB_UPLOADS)?,
            peers: txn.open_table(schema::PEERS)?,
            krefs: txn.open_table(schema::KREFS)?,
            clist_by_kref: txn.open_table(schema::CLIST_BY_KREF)?,
            clist_by_vref: txn.open_table(schema::CLIST_BY_VREF)?,
            subclusters: txn.open_table(schema::SUBCLUSTERS)?,
            vat_configs: txn.open_table(schema::VAT_CONFIGS)?,
            baggage: txn.open_table(schema::BAGGAGE)?,
            revoked: txn.open_table(schema::REVOKED)?,
            // Made here in older stores too.
            ocap_urls: txn.open_table(schema::OCAP_URLS)?,
            redeemed_urls: txn.open_table(schema::REDEEMED_URLS)?,
            // The hold tables are made here in older stores too.
            holds_given: txn.open_table(schema::HOLDS_GIVEN)?,
            holds_taken: txn.open_table(schema::HOLDS_TAKEN)?,
            hold_releases: txn.open_table(schema::HOLD_RELEASES)?,
            hold_release_next: txn.open_table(schema::HOLD_RELEASE_NEXT)?,
            hold_releases_applied: txn.open_table(schema::HOLD_RELEASES_APPLIED)?,
        })
    }
}

/// One write transaction. Everything done through a `Tx` commits together
/// or not at all; see [`crate::Store::transact`].
pub struct Tx<'t> {
    pub(crate) tables: Tables<'t>,
    /// This transaction's sequence number, carried by its change events.
    pub(crate) seq: u64,
    events: Vec<Event>,
}

impl<'t> Tx<'t> {
    pub(crate) fn new(tables: Tables<'t>, seq: u64) -> Self {
        Self {
            tables,
            seq,
            events: Vec::new(),
        }
    }

    /// Records an event to publish once this transaction is durable.
    pub(crate) fn emit(&mut self, event: Event) {
        self.events.push(event);
    }

    pub(crate) fn into_events(self) -> Vec<Event> {
        self.events
    }
}

/// A consistent, read-only view of the store as of one commit. Reads are
/// short and run on the caller's thread; a snapshot kept open holds back
/// the reuse of pages that later commits free, so do not keep one for long.
/// It also keeps the file open (and locked) after the last [`crate::Store`]
/// handle is dropped, until the snapshot is dropped too.
pub struct Snapshot {
    pub(crate) txn: redb::ReadTransaction,
    /// Keeps the database open while the snapshot lives (declared after
    /// `txn`, so dropped after it).
    pub(crate) db: Arc<redb::Database>,
}

impl Snapshot {
    /// The sequence number of the last transaction this snapshot shows.
    pub fn commit_seq(&self) -> Result<u64> {
        let counters = self.txn.open_table(schema::COUNTERS)?;
        schema::read_counter(&counters, schema::COUNTER_COMMIT_SEQ)
    }
}
