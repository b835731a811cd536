//! [`Tx`], one write transaction as the writer thread hands it to a job,
//! and [`Snapshot`], one consistent read-only view.
//!
//! Their methods for each kind of record live beside that record's types:
//! `formulas.rs`, `pet_names.rs`, `mailboxes.rs`, `blobs.rs`, `peers.rs`,
//! `kernel.rs`, `holds.rs`. A `Tx` reads its own uncommitted writes.

use std::sync::Arc;

use redb::WriteTransaction;

use crate::error::Result;
use crate::events::Event;
use crate::redo::{Change, LoggedTable};
use crate::schema::{self, HashKey, IdKey, KrefKey, VatKrefKey, VatTextKey};

/// Declares [`Tables`] from a list of (number, field, definition, key
/// type, value type). The number names the table in the write-ahead log:
/// it is fixed forever, and a table added later takes a new one.
macro_rules! logged_tables {
    ($($number:literal $field:ident: $definition:ident, $key:ty, $value:ty;)*) => {
        /// Every table, open for writing in one transaction, each recording
        /// the changes made through it (see [`LoggedTable`]).
        pub(crate) struct Tables<'t> {
            $(pub $field: LoggedTable<'t, $key, $value>,)*
        }

        impl<'t> Tables<'t> {
            // Opening every table up front costs a few microseconds per
            // transaction, small beside a commit, and lets an operation
            // hold several tables at once. Opened for writing, tables
            // added after the first release (message senders, mail held,
            // OCAP URLs, holds) are made in an older store too.
            pub(crate) fn open(txn: &'t WriteTransaction) -> Result<Self> {
                Ok(Self {
                    $($field: LoggedTable::new(txn.open_table(schema::$definition)?, $number),)*
                })
            }

            /// Moves the changes every table recorded onto `redo`, table by
            /// table. Changes to different tables are independent, so
            /// replaying them table by table ends in the same state.
            pub(crate) fn take_redo(&mut self, redo: &mut Vec<u8>) {
                $(self.$field.take_redo(redo);)*
            }

            /// Makes one change read back from the log.
            pub(crate) fn apply(&mut self, change: &Change<'_>) -> std::result::Result<(), String> {
                match change.table {
                    $($number => self.$field.apply(change),)*
                    other => Err(format!("unknown table number {other}")),
                }
            }
        }
    };
}

logged_tables! {
    1 counters: COUNTERS, &'static str, u64;
    2 formulas: FORMULAS, IdKey, &'static [u8];
    3 pet_store_numbers: PET_STORE_NUMBERS, IdKey, u64;
    4 pet_store_ids: PET_STORE_IDS, u64, IdKey;
    5 pet_names: PET_NAMES, (u64, &'static [u8]), IdKey;
    6 pet_names_by_id: PET_NAMES_BY_ID, (IdKey, u64, &'static [u8]), ();
    7 mailbox_next_number: MAILBOX_NEXT_NUMBER, IdKey, u64;
    8 messages: MESSAGES, (IdKey, u64), &'static [u8];
    9 message_senders: MESSAGE_SENDERS, (IdKey, u64), HashKey;
    10 mail_held: MAIL_HELD, (IdKey, HashKey), (u64, u64);
    11 blobs: BLOBS, HashKey, (u64, u64, u32);
    12 blob_chunks: BLOB_CHUNKS, (u64, u64), &'static [u8];
    13 blob_uploads: BLOB_UPLOADS, u64, ();
    14 peers: PEERS, HashKey, &'static [u8];
    15 krefs: KREFS, KrefKey, &'static [u8];
    16 clist_by_kref: CLIST_BY_KREF, VatKrefKey, &'static [u8];
    17 clist_by_vref: CLIST_BY_VREF, VatTextKey, KrefKey;
    18 subclusters: SUBCLUSTERS, &'static [u8], &'static [u8];
    19 vat_configs: VAT_CONFIGS, &'static [u8], &'static [u8];
    20 baggage: BAGGAGE, VatTextKey, &'static [u8];
    21 revoked: REVOKED, KrefKey, ();
    22 ocap_urls: OCAP_URLS, HashKey, KrefKey;
    23 redeemed_urls: REDEEMED_URLS, KrefKey, &'static [u8];
    24 holds_given: HOLDS_GIVEN, (HashKey, IdKey), u64;
    25 holds_taken: HOLDS_TAKEN, (HashKey, IdKey), (u64, u64);
    26 hold_releases: HOLD_RELEASES, (HashKey, u64, IdKey), u64;
    27 hold_release_next: HOLD_RELEASE_NEXT, HashKey, u64;
    28 hold_releases_applied: HOLD_RELEASES_APPLIED, HashKey, u64;
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

    /// Moves the changes made so far onto `redo` (see [`Tables::take_redo`]).
    pub(crate) fn take_redo(&mut self, redo: &mut Vec<u8>) {
        self.tables.take_redo(redo);
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
