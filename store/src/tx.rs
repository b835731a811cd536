//! [`Tx`], one write transaction as the writer thread hands it to a job,
//! and [`Snapshot`], one consistent read-only view.
//!
//! Their methods for each kind of record live beside that record's types:
//! `formulas.rs`, `pet_names.rs`, `mailboxes.rs`, `blobs.rs`, `peers.rs`,
//! `kernel.rs`, `holds.rs`. A `Tx` reads its own uncommitted writes.

use std::sync::Arc;

use redb::{Key, TableDefinition, Value, WriteTransaction};

use crate::error::Result;
use crate::events::Event;
use crate::redo::{Change, LoggedTable};
use crate::schema::{self, HashKey, IdKey, KrefKey, VatKrefKey, VatTextKey};

/// Declares [`Tables`] from a list of (number, field, definition, key
/// type, value type). The number names the table in the write-ahead log:
/// it is fixed forever, and a table added later takes a new one.
macro_rules! logged_tables {
    ($($number:literal $field:ident: $definition:ident, $key:ty, $value:ty;)*) => {
        /// Every table of one write transaction, each opened on first use
        /// and recording the changes made through it (see [`LoggedTable`]).
        pub(crate) struct Tables<'t> {
            $(pub $field: LazyTable<'t, $key, $value>,)*
        }

        impl<'t> Tables<'t> {
            // Opening a table costs a few microseconds, and every table
            // opened for writing is written back at commit: a transaction
            // that opened all of them took 100 µs where one pet name
            // needs three. So each opens when first used.
            pub(crate) fn new(txn: &'t WriteTransaction) -> Self {
                Self {
                    $($field: LazyTable::new(txn, schema::$definition, $number),)*
                }
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
                    $($number => self.$field.open().map_err(|error| error.to_string())?.apply(change),)*
                    other => Err(format!("unknown table number {other}")),
                }
            }
        }

        /// Makes every table `txn` lacks: all of them in a new store, and
        /// in an older one those added since (message senders, mail held,
        /// OCAP URLs, holds), so that snapshots find every table.
        pub(crate) fn create_tables(txn: &WriteTransaction) -> Result<()> {
            $(txn.open_table(schema::$definition)?;)*
            Ok(())
        }

        /// Whether the store has every table.
        pub(crate) fn has_every_table(txn: &redb::ReadTransaction) -> Result<bool> {
            $(
                match txn.open_table(schema::$definition) {
                    Ok(_) => {}
                    Err(redb::TableError::TableDoesNotExist(_)) => return Ok(false),
                    Err(error) => return Err(error.into()),
                }
            )*
            Ok(true)
        }
    };
}

/// One table of a write transaction, opened when first used.
pub(crate) struct LazyTable<'t, K: Key + 'static, V: Value + 'static> {
    txn: &'t WriteTransaction,
    definition: TableDefinition<'static, K, V>,
    number: u8,
    table: Option<LoggedTable<'t, K, V>>,
}

impl<'t, K: Key + 'static, V: Value + 'static> LazyTable<'t, K, V> {
    fn new(txn: &'t WriteTransaction, definition: TableDefinition<'static, K, V>, number: u8) -> Self {
        Self {
            txn,
            definition,
            number,
            table: None,
        }
    }

    /// The table, opened now if this transaction has not used it yet.
    pub(crate) fn open(&mut self) -> Result<&mut LoggedTable<'t, K, V>> {
        let table = match self.table.take() {
            Some(table) => table,
            None => LoggedTable::new(self.txn.open_table(self.definition)?, self.number),
        };
        Ok(self.table.insert(table))
    }

    fn take_redo(&mut self, redo: &mut Vec<u8>) {
        if let Some(table) = &mut self.table {
            table.take_redo(redo);
        }
    }
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
