//! The file's schema: every table's name, key and value types, the schema
//! version, and the first transaction that makes a new store.
//!
//! `store/DESIGN.md` explains each table. Changing a key or value type, or
//! the meaning of a value, means raising [`SCHEMA_VERSION`] and adding a
//! migration in [`check_schema`].

use redb::{ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};

use crate::error::{Result, StoreError};

/// The schema this program writes and reads.
pub const SCHEMA_VERSION: u32 = 1;

/// What `meta["format"]` holds in every Capstan store.
pub(crate) const FORMAT_MARKER: &[u8] = b"capstan-store";

// Meta keys.
pub(crate) const META_FORMAT: &str = "format";
pub(crate) const META_SCHEMA_VERSION: &str = "schema_version";
pub(crate) const META_NODE_SECRET: &str = "node_secret_seed";

// Counter keys.
pub(crate) const COUNTER_COMMIT_SEQ: &str = "commit_seq";
pub(crate) const COUNTER_NEXT_PET_STORE: &str = "next_pet_store";
pub(crate) const COUNTER_NEXT_BLOB_STORAGE: &str = "next_blob_storage";
pub(crate) const COUNTER_NEXT_KO: &str = "next_ko";
pub(crate) const COUNTER_NEXT_KP: &str = "next_kp";
pub(crate) const COUNTER_NEXT_VAT: &str = "next_vat";
pub(crate) const COUNTER_NEXT_SUBCLUSTER: &str = "next_subcluster";

/// A fixed-size byte string, compared as bytes. (redb's own `[u8; N]`
/// compares element by element, several times slower on every lookup.)
#[derive(Debug)]
pub(crate) struct FixedBytes<const N: usize>;

impl<const N: usize> redb::Value for FixedBytes<N> {
    type SelfType<'a> = [u8; N];
    type AsBytes<'a> = [u8; N];

    fn fixed_width() -> Option<usize> {
        Some(N)
    }

    fn from_bytes<'a>(data: &'a [u8]) -> [u8; N]
    where
        Self: 'a,
    {
        // redb hands a fixed-width type exactly N bytes.
        let mut bytes = [0u8; N];
        for (target, source) in bytes.iter_mut().zip(data) {
            *target = *source;
        }
        bytes
    }

    fn as_bytes<'a, 'b: 'a>(value: &'a [u8; N]) -> [u8; N]
    where
        Self: 'b,
    {
        *value
    }

    fn type_name() -> redb::TypeName {
        redb::TypeName::new(&format!("capstan::FixedBytes<{N}>"))
    }
}

impl<const N: usize> redb::Key for FixedBytes<N> {
    fn compare(data1: &[u8], data2: &[u8]) -> std::cmp::Ordering {
        data1.cmp(data2)
    }
}

/// A stored formula id: 32-byte number, then 32-byte node id.
pub(crate) type IdKey = FixedBytes<64>;
/// A blob hash or a node id.
pub(crate) type HashKey = FixedBytes<32>;
/// A stored kref: kind tag (0 object, 1 promise), then number.
pub(crate) type KrefKey = (u8, u64);
/// (vat id, vref) or (vat id, baggage key), as UTF-8 bytes.
pub(crate) type VatTextKey = (&'static [u8], &'static [u8]);
/// (vat id, kref kind tag, kref number).
pub(crate) type VatKrefKey = (&'static [u8], u8, u64);

pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
pub(crate) const COUNTERS: TableDefinition<&str, u64> = TableDefinition::new("counters");

/// formula id → versioned postcard [`crate::FormulaRecord`].
pub(crate) const FORMULAS: TableDefinition<IdKey, &[u8]> = TableDefinition::new("formulas");

/// pet store id → the small number its names are keyed by, and back.
pub(crate) const PET_STORE_NUMBERS: TableDefinition<IdKey, u64> = TableDefinition::new("pet_store_numbers");
pub(crate) const PET_STORE_IDS: TableDefinition<u64, IdKey> = TableDefinition::new("pet_store_ids");
/// (pet store number, name) → formula id.
pub(crate) const PET_NAMES: TableDefinition<(u64, &[u8]), IdKey> = TableDefinition::new("pet_names");
/// (formula id, pet store number, name) → (): the reverse index.
pub(crate) const PET_NAMES_BY_ID: TableDefinition<(IdKey, u64, &[u8]), ()> = TableDefinition::new("pet_names_by_id");

/// agent id → the next message number that mailbox will hand out.
pub(crate) const MAILBOX_NEXT_NUMBER: TableDefinition<IdKey, u64> = TableDefinition::new("mailbox_next_number");
/// (agent id, message number) → message bytes.
pub(crate) const MESSAGES: TableDefinition<(IdKey, u64), &[u8]> = TableDefinition::new("messages");
/// (agent id, message number) → the node that delivered it, for messages
/// from peers only.
pub(crate) const MESSAGE_SENDERS: TableDefinition<(IdKey, u64), HashKey> = TableDefinition::new("message_senders");
/// (agent id, sending node) → (messages, bytes) from that node the mailbox
/// holds: what the mail quotas are checked against.
pub(crate) const MAIL_HELD: TableDefinition<(IdKey, HashKey), (u64, u64)> = TableDefinition::new("mail_held");

/// blob hash → (length, storage number, chunk size).
pub(crate) const BLOBS: TableDefinition<HashKey, (u64, u64, u32)> = TableDefinition::new("blobs");
/// (storage number, chunk index) → blake3 of the chunk (32 bytes), then the chunk.
pub(crate) const BLOB_CHUNKS: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("blob_chunks");
/// storage numbers of blob writes not yet finished; swept on open.
pub(crate) const BLOB_UPLOADS: TableDefinition<u64, ()> = TableDefinition::new("blob_uploads");

/// node id → versioned postcard [`crate::PeerRecord`].
pub(crate) const PEERS: TableDefinition<HashKey, &[u8]> = TableDefinition::new("peers");

/// (kref kind, kref number) → owner/info bytes.
pub(crate) const KREFS: TableDefinition<KrefKey, &[u8]> = TableDefinition::new("kernel_krefs");
/// (vat id, kref kind, kref number) → vref.
pub(crate) const CLIST_BY_KREF: TableDefinition<VatKrefKey, &[u8]> = TableDefinition::new("kernel_clist_by_kref");
/// (vat id, vref) → (kref kind, kref number).
pub(crate) const CLIST_BY_VREF: TableDefinition<VatTextKey, KrefKey> = TableDefinition::new("kernel_clist_by_vref");
/// subcluster id → config bytes.
pub(crate) const SUBCLUSTERS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("kernel_subclusters");
/// vat id → config bytes.
pub(crate) const VAT_CONFIGS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("kernel_vat_configs");
/// (vat id, key) → encoded passable bytes.
pub(crate) const BAGGAGE: TableDefinition<VatTextKey, &[u8]> = TableDefinition::new("kernel_baggage");
/// (kref kind, kref number) → (): revoked objects.
pub(crate) const REVOKED: TableDefinition<KrefKey, ()> = TableDefinition::new("kernel_revoked");
/// 32-byte random token → (kref kind, kref number): OCAP URLs issued.
pub(crate) const OCAP_URLS: TableDefinition<HashKey, KrefKey> = TableDefinition::new("kernel_ocap_urls");
/// (kref kind, kref number) → URL bytes: OCAP URLs of other nodes
/// redeemed here, by the kref they got.
pub(crate) const REDEEMED_URLS: TableDefinition<KrefKey, &[u8]> = TableDefinition::new("kernel_redeemed_urls");

/// Makes every table and the meta records of a new store, with its node
/// secret, in the store's first transaction.
pub(crate) fn initialize(txn: &WriteTransaction, node_secret: &[u8; 32]) -> Result<()> {
    {
        let mut meta = txn.open_table(META)?;
        meta.insert(META_FORMAT, FORMAT_MARKER)?;
        meta.insert(META_SCHEMA_VERSION, SCHEMA_VERSION.to_le_bytes().as_slice())?;
        meta.insert(META_NODE_SECRET, node_secret.as_slice())?;
    }
    {
        let mut counters = txn.open_table(COUNTERS)?;
        counters.insert(COUNTER_COMMIT_SEQ, 0)?;
        counters.insert(COUNTER_NEXT_PET_STORE, 0)?;
        counters.insert(COUNTER_NEXT_BLOB_STORAGE, 0)?;
        // krefs count from 1, as the ocap kernel's do.
        counters.insert(COUNTER_NEXT_KO, 1)?;
        counters.insert(COUNTER_NEXT_KP, 1)?;
    }
    crate::tx::create_tables(txn)
}

/// What an open store's meta table says about it.
pub(crate) struct StoreMeta {
    pub node_secret: zeroize::Zeroizing<[u8; 32]>,
    pub commit_seq: u64,
    pub next_blob_storage: u64,
}

/// Checks that the database is a Capstan store of a schema this program
/// reads, and returns its meta records.
pub(crate) fn check_schema(db: &redb::Database, path: &std::path::Path) -> Result<StoreMeta> {
    let not_capstan = |reason: &str| StoreError::NotACapstanStore {
        path: path.to_owned(),
        reason: reason.to_owned(),
    };
    let corrupted = |detail: String| StoreError::Corrupted {
        path: path.to_owned(),
        detail,
    };
    let txn = db.begin_read()?;
    let meta = match txn.open_table(META) {
        Ok(meta) => meta,
        Err(redb::TableError::TableDoesNotExist(_)) => {
            return Err(not_capstan("it is a redb database without Capstan's meta table"));
        }
        Err(error) => return Err(error.into()),
    };
    match meta.get(META_FORMAT)? {
        Some(marker) if marker.value() == FORMAT_MARKER => {}
        _ => {
            return Err(not_capstan("it is a redb database without the Capstan format marker"));
        }
    }
    let version_bytes: [u8; 4] = meta
        .get(META_SCHEMA_VERSION)?
        .and_then(|value| value.value().try_into().ok())
        .ok_or_else(|| corrupted("the schema version record is missing or malformed".into()))?;
    let version = u32::from_le_bytes(version_bytes);
    if version > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            path: path.to_owned(),
            found: version,
            supported: SCHEMA_VERSION,
        });
    }
    if version < SCHEMA_VERSION {
        // No older schema has been released yet; a migration goes here.
        return Err(corrupted(format!(
            "schema version {version} predates every released version"
        )));
    }
    let node_secret: [u8; 32] = meta
        .get(META_NODE_SECRET)?
        .and_then(|value| value.value().try_into().ok())
        .ok_or_else(|| corrupted("the node secret record is missing or malformed".into()))?;
    let counters = txn.open_table(COUNTERS)?;
    let counter = |key: &str| -> Result<u64> {
        counters
            .get(key)?
            .map(|value| value.value())
            .ok_or_else(|| corrupted(format!("the counter {key:?} is missing")))
    };
    Ok(StoreMeta {
        node_secret: zeroize::Zeroizing::new(node_secret),
        commit_seq: counter(COUNTER_COMMIT_SEQ)?,
        next_blob_storage: counter(COUNTER_NEXT_BLOB_STORAGE)?,
    })
}

/// Reads a counter inside a write transaction.
pub(crate) fn read_counter(counters: &impl ReadableTable<&'static str, u64>, key: &str) -> Result<u64> {
    counters
        .get(key)?
        .map(|value| value.value())
        .ok_or_else(|| StoreError::CorruptRecord {
            table: "counters",
            detail: format!("the counter {key:?} is missing"),
        })
}

// Holds across nodes (`holds.rs`). Made by `Tables::open` in a store
// older than them too, so adding them needs no schema version.

/// (peer node, formula id) → how many times the id was given to that peer
/// and not released yet: the peer's hold on it.
pub(crate) const HOLDS_GIVEN: TableDefinition<(HashKey, IdKey), u64> = TableDefinition::new("holds_given");
/// (giving node, formula id) → (times received and not released yet, the
/// commit sequence number of the last receipt): ids of other nodes this
/// node holds, by the node that gave them.
pub(crate) const HOLDS_TAKEN: TableDefinition<(HashKey, IdKey), (u64, u64)> = TableDefinition::new("holds_taken");
/// (giving node, batch number, formula id) → count: releases queued for
/// the giver, sent a batch at a time in batch order.
pub(crate) const HOLD_RELEASES: TableDefinition<(HashKey, u64, IdKey), u64> = TableDefinition::new("hold_releases");
/// giving node → the next release batch number for it (from 1).
pub(crate) const HOLD_RELEASE_NEXT: TableDefinition<HashKey, u64> = TableDefinition::new("hold_release_next");
/// peer node → the last of its release batches applied here, so that a
/// batch sent again (its answer was lost) is not applied twice.
pub(crate) const HOLD_RELEASES_APPLIED: TableDefinition<HashKey, u64> = TableDefinition::new("hold_releases_applied");
