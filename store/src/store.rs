//! [`Store`]: opening (or creating) a node's store file in its state
//! directory, checking that it is a sound Capstan store, and handing out
//! snapshots for reading and the writer for writing.

use std::fs;
use std::io::Read;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::thread::{JoinHandle, ThreadId};

use redb::{Database, DatabaseError, ReadableDatabase, ReadableTableMetadata, StorageError};
use tokio::sync::oneshot;

use crate::error::{Result, StoreError};
use crate::events::Notifier;
use crate::identity::{self, NodeSecret};
use crate::ids::NodeId;
use crate::schema::{self, BLOB_UPLOADS};
use crate::tx::{Snapshot, Tx};
use crate::wal::WriteAheadLog;
use crate::writer::{ClosureJob, Commit, Job, RepeatableJob, Writer, panic_message};

/// The store's file name inside the state directory.
pub const STORE_FILE_NAME: &str = "capstan.redb";

/// The first bytes of every redb file (redb's `docs/design.md`).
const REDB_MAGIC: [u8; 9] = [b'r', b'e', b'd', b'b', 0x1A, 0x0A, 0xA9, 0x0D, 0x0A];

/// redb's super-header: header and two commit slots.
const REDB_SUPER_HEADER_LEN: u64 = 512;

/// How to open a store.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// Verify the checksum of every page on open, so that a damaged file
    /// fails to open instead of being read. Costs a read of the whole file
    /// (about 0.4 s for a store of a million names). On by default.
    pub verify_on_open: bool,
    /// Memory redb may use to cache pages.
    pub cache_bytes: usize,
    /// When the write-ahead log holds this many bytes of records, the
    /// writer makes a checkpoint (a durable redb commit) and empties it.
    /// 64 MiB by default.
    pub log_checkpoint_bytes: u64,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            verify_on_open: true,
            cache_bytes: 64 * 1024 * 1024,
            log_checkpoint_bytes: 64 * 1024 * 1024,
        }
    }
}

/// A node's durable store. Cheap to clone; all clones share one database
/// and one writer thread. The writer stops (after the writes already
/// queued) when the last clone is dropped, and the file closes once the
/// last [`Snapshot`] and blob reader are gone too.
#[derive(Clone)]
pub struct Store {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) db: Arc<Database>,
    jobs: Mutex<Option<mpsc::Sender<Box<dyn Job>>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    writer_thread: ThreadId,
    pub(crate) notifier: Arc<Notifier>,
    state_dir: PathBuf,
    path: PathBuf,
    node_id: NodeId,
    /// Storage numbers for blob writes; see `blobs.rs`.
    pub(crate) next_blob_storage: AtomicU64,
}

impl Store {
    /// Opens the store in `state_dir`, creating the directory (mode 0700)
    /// and a new store with a new node identity if there is none.
    pub fn open(state_dir: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(state_dir, &StoreOptions::default())
    }

    pub fn open_with(state_dir: impl AsRef<Path>, options: &StoreOptions) -> Result<Self> {
        let state_dir = state_dir.as_ref().to_owned();
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&state_dir)
            .map_err(|source| StoreError::Io {
                action: "create the state directory",
                path: state_dir.clone(),
                source,
            })?;
        let path = state_dir.join(STORE_FILE_NAME);
        if !path.exists() {
            create_store_file(&state_dir, &path)?;
        }
        check_file_header(&path)?;
        let (db, meta, log) = guard_against_panics(&path, || {
            let db = open_database(&state_dir, &path, options)?;
            let meta = schema::check_schema(&db, &path)?;
            let node_id = identity::node_id_of(&meta.node_secret);
            // Before anything else writes: the log holds acknowledged
            // writes redb's last durable commit may lack.
            let log = WriteAheadLog::open(&state_dir, &node_id, &db, meta.commit_seq)?;
            // Read again: the replay moves commit_seq and may move counters.
            let meta = schema::check_schema(&db, &path)?;
            create_missing_tables(&db)?;
            sweep_unfinished_blob_writes(&db)?;
            Ok((db, meta, log))
        })?;
        let node_id = identity::node_id_of(&meta.node_secret);
        let db = Arc::new(db);
        let notifier = Arc::new(Notifier::default());
        let (sender, receiver) = mpsc::channel();
        let writer = Writer::new(
            db.clone(),
            notifier.clone(),
            receiver,
            log,
            meta.commit_seq,
            options.log_checkpoint_bytes,
        );
        let handle = std::thread::Builder::new()
            .name("capstan-store-writer".into())
            .spawn(move || writer.run())
            .map_err(|source| StoreError::Io {
                action: "start the writer thread for",
                path: path.clone(),
                source,
            })?;
        Ok(Self {
            inner: Arc::new(Inner {
                db,
                jobs: Mutex::new(Some(sender)),
                writer_thread: handle.thread().id(),
                writer: Mutex::new(Some(handle)),
                notifier,
                state_dir,
                path,
                node_id,
                next_blob_storage: AtomicU64::new(meta.next_blob_storage),
            }),
        })
    }

    /// The node id: the public half of the node's key.
    pub fn node_id(&self) -> NodeId {
        self.inner.node_id
    }

    /// The node's secret key, read from the store.
    pub fn node_secret(&self) -> Result<NodeSecret> {
        let txn = self.inner.db.begin_read()?;
        let meta = txn.open_table(schema::META)?;
        let seed: [u8; 32] = meta
            .get(schema::META_NODE_SECRET)?
            .and_then(|value| value.value().try_into().ok())
            .ok_or_else(|| StoreError::CorruptRecord {
                table: "meta",
                detail: "the node secret record is missing or malformed".into(),
            })?;
        Ok(NodeSecret::new(zeroize::Zeroizing::new(seed)))
    }

    pub fn state_dir(&self) -> &Path {
        &self.inner.state_dir
    }

    /// The store file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// A consistent read-only view of the latest commit.
    pub fn read(&self) -> Result<Snapshot> {
        Ok(Snapshot {
            txn: self.inner.db.begin_read()?,
            db: self.inner.db.clone(),
        })
    }

    /// Runs `work` in one write transaction on the writer thread, and
    /// commits it durably if it returns `Ok`; on `Err` (or a panic) nothing
    /// it did is kept. Use this to make several changes in one commit,
    /// whether they belong together (a formula and its name) or are merely
    /// many (a bulk import).
    ///
    /// `work` holds up every other write while it runs, so it must not
    /// block on anything but the store.
    pub fn transact<T, F>(&self, work: F) -> Commit<T>
    where
        F: FnOnce(&mut Tx<'_>) -> Result<T> + Send + 'static,
        T: Send + 'static,
    {
        self.submit(work, true)
    }

    /// As [`Store::transact`], for `work` that may run more than once: it
    /// must depend only on the transaction and what it captured, and do
    /// nothing outside the store. The writer then runs it in one
    /// transaction with the other such writes waiting beside it, so many
    /// concurrent writers share one commit. Should another write in that
    /// transaction fail, the transaction is abandoned and `work` runs
    /// again without it; its caller never sees the first run.
    pub fn transact_repeatable<T, F>(&self, work: F) -> Commit<T>
    where
        F: Fn(&mut Tx<'_>) -> Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let (reply, receiver) = oneshot::channel();
        self.send(Box::new(RepeatableJob::new(work, reply)), receiver)
    }

    /// As [`Store::transact`], for work that needs no fsync of its own.
    pub(crate) fn submit<T, F>(&self, work: F, durable: bool) -> Commit<T>
    where
        F: FnOnce(&mut Tx<'_>) -> Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let (reply, receiver) = oneshot::channel();
        self.send(Box::new(ClosureJob::new(work, reply, durable)), receiver)
    }

    fn send<T>(&self, job: Box<dyn Job>, receiver: oneshot::Receiver<Result<T>>) -> Commit<T> {
        let jobs = self.inner.jobs.lock().unwrap_or_else(PoisonError::into_inner);
        match jobs.as_ref().map(|jobs| jobs.send(job)) {
            Some(Ok(())) => Commit::waiting(receiver),
            _ => Commit::failed(StoreError::WriterStopped),
        }
    }

    /// Stops taking writes, as closing does, without waiting for every
    /// handle to go: waits for the writes already queued, makes a
    /// checkpoint and deletes the emptied log. Writes made after it fail
    /// with [`StoreError::WriterStopped`]; reads go on. For a process about
    /// to exit while objects it will not drop still hold the store.
    pub fn stop_writing(&self) {
        self.inner.stop_writer();
    }

    /// Waits for queued writes, stops the writer and closes the file.
    /// Fails if other clones, snapshots or blob readers still use it; the
    /// store then closes when the last of them is dropped.
    pub fn close(self) -> Result<()> {
        let inner = Arc::try_unwrap(self.inner).map_err(|_| StoreError::StillInUse)?;
        inner.stop_writer();
        let path = inner.path.clone();
        let db = inner.take_database();
        match Arc::try_unwrap(db) {
            Ok(db) => db.close().map_err(|error| StoreError::Corrupted {
                path,
                detail: format!("closing failed: {error}"),
            }),
            Err(_) => Err(StoreError::StillInUse),
        }
    }
}

impl Inner {
    fn stop_writer(&self) {
        drop(self.jobs.lock().unwrap_or_else(PoisonError::into_inner).take());
        // The last handle may be dropped by a job on the writer thread
        // itself, which must not wait for itself.
        if std::thread::current().id() != self.writer_thread {
            let handle = self.writer.lock().unwrap_or_else(PoisonError::into_inner).take();
            if let Some(handle) = handle {
                // A panic on the writer thread has already been reported to
                // its callers as WriterStopped.
                let _ = handle.join();
            }
        }
    }

    fn take_database(mut self) -> Arc<Database> {
        // `Inner` implements Drop, so move the field out by swapping.
        let placeholder = self.db.clone();
        std::mem::replace(&mut self.db, placeholder)
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop_writer();
    }
}

/// Makes a new store beside its final name and links it into place, so
/// that a crash never leaves a half-made store under the real name.
fn create_store_file(state_dir: &Path, path: &Path) -> Result<()> {
    let io_error = |action: &'static str, path: &Path| {
        let path = path.to_owned();
        move |source| StoreError::Io { action, path, source }
    };
    let temporary = state_dir.join(format!(".{STORE_FILE_NAME}.new-{}", std::process::id()));
    let _ = fs::remove_file(&temporary);
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temporary)
        .map_err(io_error("create", &temporary))?;
    let made = (|| -> Result<()> {
        let db = Database::create(&temporary)?;
        let seed = identity::generate_seed()?;
        let txn = db.begin_write()?;
        schema::initialize(&txn, &seed)?;
        txn.commit()?;
        db.close()?;
        Ok(())
    })();
    let linked = made.and_then(|()| match fs::hard_link(&temporary, path) {
        // Another process made the store first; use theirs.
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        other => other.map_err(io_error("create", path)),
    });
    let _ = fs::remove_file(&temporary);
    linked?;
    fs::File::open(state_dir)
        .and_then(|dir| dir.sync_all())
        .map_err(io_error("sync", state_dir))
}

/// Tells a file that is not a redb database at all, or has lost its header,
/// from one redb can open; redb's own messages for these are terse.
fn check_file_header(path: &Path) -> Result<()> {
    let mut file = fs::File::open(path).map_err(|source| StoreError::Io {
        action: "open",
        path: path.to_owned(),
        source,
    })?;
    let length = file
        .metadata()
        .map_err(|source| StoreError::Io {
            action: "inspect",
            path: path.to_owned(),
            source,
        })?
        .len();
    if length == 0 {
        return Err(StoreError::NotACapstanStore {
            path: path.to_owned(),
            reason: "the file is empty".into(),
        });
    }
    let mut magic = [0u8; REDB_MAGIC.len()];
    let read = file.read_exact(&mut magic);
    if read.is_err() || magic != REDB_MAGIC {
        return Err(StoreError::NotACapstanStore {
            path: path.to_owned(),
            reason: format!(
                "it does not begin with the redb file header ({length} bytes; another kind of \
                 file, or a store whose header is damaged)"
            ),
        });
    }
    if length < REDB_SUPER_HEADER_LEN {
        return Err(StoreError::Corrupted {
            path: path.to_owned(),
            detail: format!("the file is truncated to {length} bytes"),
        });
    }
    Ok(())
}

fn open_database(state_dir: &Path, path: &Path, options: &StoreOptions) -> Result<Database> {
    let mut builder = redb::Builder::new();
    builder
        .set_cache_size(options.cache_bytes)
        .set_check_integrity_on_open(options.verify_on_open);
    builder.open(path).map_err(|error| match error {
        DatabaseError::DatabaseAlreadyOpen | DatabaseError::LockProtocolMismatch => StoreError::Locked {
            state_dir: state_dir.to_owned(),
        },
        DatabaseError::UpgradeRequired(version) => StoreError::NotACapstanStore {
            path: path.to_owned(),
            reason: format!("it is in redb file format {version}, older than any Capstan store"),
        },
        DatabaseError::RepairAborted => StoreError::Corrupted {
            path: path.to_owned(),
            detail: "it needs a repair, and the repair was abandoned".into(),
        },
        DatabaseError::Storage(StorageError::Corrupted(detail)) => StoreError::Corrupted {
            path: path.to_owned(),
            // What redb says when the verification on open finds a page
            // whose checksum is wrong.
            detail: if detail.contains("Primary is corrupted") {
                format!("a page does not match its checksum ({detail})")
            } else {
                detail
            },
        },
        DatabaseError::Storage(StorageError::Io(source)) if source.kind() == std::io::ErrorKind::UnexpectedEof => {
            StoreError::Corrupted {
                path: path.to_owned(),
                detail: format!("the file is shorter than its header says ({source})"),
            }
        }
        DatabaseError::Storage(StorageError::Io(source)) if source.kind() == std::io::ErrorKind::InvalidData => {
            StoreError::Corrupted {
                path: path.to_owned(),
                detail: source.to_string(),
            }
        }
        DatabaseError::Storage(StorageError::Io(source)) => StoreError::Io {
            action: "open",
            path: path.to_owned(),
            source,
        },
        other => StoreError::Corrupted {
            path: path.to_owned(),
            detail: other.to_string(),
        },
    })
}

/// redb may panic on a damaged file where it expects none (its debug
/// assertions, mostly); report that as damage, not as a crash.
fn guard_against_panics<T>(path: &Path, open: impl FnOnce() -> Result<T>) -> Result<T> {
    catch_unwind(AssertUnwindSafe(open)).unwrap_or_else(|panic| {
        Err(StoreError::Corrupted {
            path: path.to_owned(),
            detail: format!("reading it failed unexpectedly: {}", panic_message(panic.as_ref())),
        })
    })
}

/// Makes the tables added since an older store was made: a write
/// transaction opens only the tables it uses, and snapshots expect all.
fn create_missing_tables(db: &Database) -> Result<()> {
    if crate::tx::has_every_table(&db.begin_read()?)? {
        return Ok(());
    }
    let txn = db.begin_write()?;
    crate::tx::create_tables(&txn)?;
    txn.commit()?;
    Ok(())
}

/// Deletes the chunks of blob writes a crash interrupted.
fn sweep_unfinished_blob_writes(db: &Database) -> Result<()> {
    {
        let txn = db.begin_read()?;
        if txn.open_table(BLOB_UPLOADS)?.is_empty()? {
            return Ok(());
        }
    }
    let txn = db.begin_write()?;
    {
        let mut tables = crate::tx::Tables::new(&txn);
        crate::blobs::sweep_unfinished(&mut tables)?;
    }
    txn.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use redb::TableDefinition;

    use super::*;

    fn raw_database(path: &Path) -> Database {
        Database::create(path).unwrap()
    }

    #[test]
    fn a_newer_schema_is_refused_with_both_versions() {
        let temp = tempfile::TempDir::new().unwrap();
        Store::open(temp.path()).unwrap().close().unwrap();
        let path = temp.path().join(STORE_FILE_NAME);
        let db = raw_database(&path);
        let txn = db.begin_write().unwrap();
        txn.open_table(schema::META)
            .unwrap()
            .insert(
                schema::META_SCHEMA_VERSION,
                (schema::SCHEMA_VERSION + 1).to_le_bytes().as_slice(),
            )
            .unwrap();
        txn.commit().unwrap();
        drop(db);
        let error = Store::open(temp.path()).err().unwrap();
        assert!(matches!(
            error,
            StoreError::SchemaTooNew {
                found: 2,
                supported: 1,
                ..
            }
        ));
        assert!(
            error.to_string().ends_with(
                "has store schema version 2, newer than the version 1 this program understands; use a newer Capstan"
            ),
            "{error}"
        );
    }

    #[test]
    fn tables_an_older_store_lacks_are_made_when_it_opens() {
        let temp = tempfile::TempDir::new().unwrap();
        Store::open(temp.path()).unwrap().close().unwrap();
        let path = temp.path().join(STORE_FILE_NAME);
        // A store from before the holds tables: a write transaction now
        // opens only what it uses, so opening must make them.
        let db = raw_database(&path);
        let txn = db.begin_write().unwrap();
        assert!(txn.delete_table(schema::HOLDS_GIVEN).unwrap());
        assert!(txn.delete_table(schema::HOLD_RELEASES).unwrap());
        txn.commit().unwrap();
        assert!(!crate::tx::has_every_table(&db.begin_read().unwrap()).unwrap());
        drop(db);

        Store::open(temp.path()).unwrap().close().unwrap();
        let db = raw_database(&path);
        assert!(crate::tx::has_every_table(&db.begin_read().unwrap()).unwrap());
    }

    #[test]
    fn another_redb_database_is_not_a_capstan_store() {
        let temp = tempfile::TempDir::new().unwrap();
        let path = temp.path().join(STORE_FILE_NAME);
        let db = raw_database(&path);
        let txn = db.begin_write().unwrap();
        txn.open_table(TableDefinition::<&str, u64>::new("something-else"))
            .unwrap()
            .insert("x", 1)
            .unwrap();
        txn.commit().unwrap();
        drop(db);
        let error = Store::open(temp.path()).err().unwrap();
        assert!(
            error
                .to_string()
                .contains("is not a Capstan store: it is a redb database without Capstan's meta table"),
            "{error}"
        );

        // A meta table without the marker is not one either.
        let db = raw_database(&path);
        let txn = db.begin_write().unwrap();
        txn.open_table(schema::META)
            .unwrap()
            .insert(schema::META_FORMAT, b"other".as_slice())
            .unwrap();
        txn.commit().unwrap();
        drop(db);
        let error = Store::open(temp.path()).err().unwrap();
        assert!(
            error.to_string().contains("without the Capstan format marker"),
            "{error}"
        );
    }

    #[test]
    fn other_files_are_not_capstan_stores() {
        let temp = tempfile::TempDir::new().unwrap();
        let path = temp.path().join(STORE_FILE_NAME);
        for (contents, expected) in [
            (&b""[..], "is not a Capstan store: the file is empty"),
            (
                &b"hello, world"[..],
                "is not a Capstan store: it does not begin with the redb file header",
            ),
            (&REDB_MAGIC[..], "is damaged: the file is truncated to 9 bytes"),
        ] {
            fs::write(&path, contents).unwrap();
            let error = Store::open(temp.path()).err().unwrap();
            assert!(error.to_string().contains(expected), "{error}");
        }
    }
}
