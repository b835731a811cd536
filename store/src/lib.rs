//! `capstan-store`: everything a Capstan node keeps durably, in one redb
//! file in its state directory.
//!
//! - [`Store`] opens (or creates) the file, checks it, and owns the single
//!   writer thread. Reads go through a [`Snapshot`]; writes go through
//!   [`Store::transact`] (or a one-operation shortcut) and return a
//!   [`Commit`] that resolves once the write is durable. Await it from async
//!   code, or call [`Commit::wait`] from a plain thread.
//! - What is kept: the node identity ([`NodeSecret`], [`NodeId`]), formulas
//!   ([`FormulaRecord`]), pet stores (pet name → formula id, with a reverse
//!   index), mailboxes, blobs ([`BlobWriter`], [`BlobReader`]), known peers
//!   ([`PeerRecord`]), holds across nodes (ids peers hold here, ids held
//!   from peers, releases owed: [`ReleaseBatch`]) and the kernel's tables (krefs, c-lists, subclusters,
//!   vat configs, baggage, revocations).
//! - Followers ([`NameFollower`], [`MessageFollower`]) stream a pet store's
//!   or a mailbox's changes after a consistent snapshot of it.
//!
//! `store/DESIGN.md` describes the tables and how each operation commits.

mod blobs;
mod collect;
mod error;
mod events;
mod formulas;
mod holds;
mod identity;
mod ids;
mod kernel;
mod mailboxes;
mod peers;
mod pet_names;
mod redo;
mod schema;
mod store;
mod tx;
mod wal;
mod writer;

pub use blobs::{BLOB_CHUNK_LEN, BlobReader, BlobWriter};
pub use error::{Result, StoreError};
pub use events::{Follower, MessageEvent, MessageEventKind, NameChange, NameChangeKind, Sequenced};
pub use formulas::FormulaRecord;
pub use holds::{RELEASE_BATCH_MAX, ReleaseBatch};
pub use identity::NodeSecret;
pub use ids::{
    BAGGAGE_KEY_MAX_LEN, BaggageKey, BlobHash, FormulaId, KERNEL_NAME_MAX_LEN, Kref, KrefKind, NodeId,
    PET_NAME_MAX_LEN, PetName, SubclusterId, VatId, Vref,
};
pub use mailboxes::{HeldMail, MessageFollower, PageLimit};
pub use peers::{PEER_ADDRESS_MAX_LEN, PEER_ADDRESSES_MAX, PeerRecord};
pub use pet_names::NameFollower;
pub use schema::SCHEMA_VERSION;
pub use store::{STORE_FILE_NAME, Store, StoreOptions};
pub use tx::{Snapshot, Tx};
pub use wal::LOG_FILE_NAME;
pub use writer::Commit;
