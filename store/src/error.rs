//! The store's one error type.
//!
//! Messages say what went wrong and with which value, but never print a
//! whole formula id or blob hash: those are capabilities, and an error may be
//! shown to someone who must not learn them. A [`StoreError`] becomes the
//! passable error a method rejects with through `From`.

use std::path::PathBuf;

use crate::ids::PetName;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{path} is not a Capstan store: {reason}")]
    NotACapstanStore { path: PathBuf, reason: String },

    #[error(
        "{path} has store schema version {found}, newer than the version {supported} this program \
         understands; use a newer Capstan"
    )]
    SchemaTooNew { path: PathBuf, found: u32, supported: u32 },

    #[error("the Capstan store {path} is damaged: {detail}")]
    Corrupted { path: PathBuf, detail: String },

    #[error("the store's write-ahead log {path} is damaged: {detail}")]
    LogCorrupted { path: PathBuf, detail: String },

    #[error(
        "the state directory {state_dir} is in use by another process (its store is locked); \
         stop that node first or use another --state directory"
    )]
    Locked { state_dir: PathBuf },

    #[error("a record in the {table} table is damaged: {detail}")]
    CorruptRecord { table: &'static str, detail: String },

    #[error("invalid {kind} {value:?}: {reason}")]
    InvalidInput {
        kind: &'static str,
        value: String,
        reason: String,
    },

    #[error("there is no pet name \"{name}\" in that pet store")]
    NameNotFound { name: PetName },

    #[error("baggage of vat {vat:?} already has key {key:?}")]
    BaggageKeyExists { vat: String, key: String },

    #[error("baggage of vat {vat:?} has no key {key:?}")]
    BaggageKeyMissing { vat: String, key: String },

    #[error("blob {hash_prefix}… failed verification: {detail}")]
    BlobVerification { hash_prefix: String, detail: String },

    #[error("cannot encode {what}: {detail}")]
    Encode { what: &'static str, detail: String },

    #[error("a follower fell {missed} changes behind and missed them; follow again for a fresh snapshot")]
    FollowerLagged { missed: u64 },

    #[error("the store is still in use by other handles, snapshots or blob readers")]
    StillInUse,

    #[error("the store's writer has stopped (the store was closed)")]
    WriterStopped,

    #[error("the store's writer failed and accepts no more writes: {detail}")]
    WriterFailed { detail: String },

    #[error("a transaction panicked and was rolled back: {message}")]
    TransactionPanicked { message: String },

    #[error("cannot read random bytes from the operating system: {detail}")]
    Randomness { detail: String },

    #[error("database error: {0}")]
    Database(#[from] redb::Error),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// What a caller is told when the store itself fails: the detail names
/// files of the node's machine, so it goes to the node's log instead.
pub const STORE_FAILED: &str = "the node's store failed; its log has the detail";

/// A store error as the error a method call rejects with. Errors about
/// the caller's input keep their own message (it names no identifier);
/// failures of the store itself, whose messages name paths on the node's
/// machine, become [`STORE_FAILED`] and are logged.
impl From<StoreError> for capstan_protocol::ErrorValue {
    fn from(error: StoreError) -> Self {
        let about_the_input = matches!(
            error,
            StoreError::InvalidInput { .. }
                | StoreError::NameNotFound { .. }
                | StoreError::BaggageKeyExists { .. }
                | StoreError::BaggageKeyMissing { .. }
                | StoreError::BlobVerification { .. }
                | StoreError::Encode { .. }
                | StoreError::FollowerLagged { .. }
        );
        if about_the_input {
            return capstan_protocol::ErrorValue::plain(error.to_string());
        }
        tracing::error!(%error, "a store operation failed");
        capstan_protocol::ErrorValue::plain(STORE_FAILED)
    }
}

macro_rules! from_redb_error {
    ($($error:ty),*) => {
        $(
            impl From<$error> for StoreError {
                fn from(error: $error) -> Self {
                    Self::Database(error.into())
                }
            }
        )*
    };
}

from_redb_error!(
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::DatabaseError,
    redb::SetDurabilityError
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_error_about_the_input_keeps_its_message() {
        let missing = StoreError::BaggageKeyMissing {
            vat: "v1".into(),
            key: "k".into(),
        };
        let text = missing.to_string();
        let error = capstan_protocol::ErrorValue::from(missing);
        assert_eq!(&*error.name, "Error");
        assert_eq!(&*error.message, text);
    }

    #[test]
    fn a_failure_of_the_store_names_no_path() {
        let locked = StoreError::Locked {
            state_dir: PathBuf::from("/home/someone/.local/state/capstan"),
        };
        let error = capstan_protocol::ErrorValue::from(locked);
        assert_eq!(&*error.message, STORE_FAILED);
        let error = capstan_protocol::ErrorValue::from(StoreError::WriterStopped);
        assert_eq!(&*error.message, STORE_FAILED);
    }
}
