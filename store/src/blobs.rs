//! Blobs: byte strings stored once under their blake3 hash, written and
//! read as streams of chunk rows so that a blob of any size never has to be
//! in memory whole.
//!
//! A write gets a storage number, sends each full chunk to the writer as it
//! fills (one in flight at a time), and finishes with one durable commit
//! that names the chunks by the blob's hash. If a blob with that hash is
//! already stored, the finishing commit deletes the new chunks instead, so
//! the bytes are kept once. Chunk commits need no fsync: until the finishing
//! commit nothing refers to them, and the unfinished writes a crash leaves
//! behind are swept when the store opens.
//!
//! Each chunk row holds the chunk's own blake3 hash before its bytes, so a
//! reader rejects a damaged chunk before handing it out; at the end it also
//! checks the whole blob's hash.

use std::io;
use std::sync::atomic::Ordering;

use redb::{ReadOnlyTable, ReadableTable};

use crate::error::{Result, StoreError};
use crate::ids::BlobHash;
use crate::schema::{BLOB_CHUNKS, BLOBS, COUNTER_NEXT_BLOB_STORAGE, HashKey, read_counter};
use crate::tx::{Snapshot, Tables, Tx};
use crate::{Commit, Store};

/// Blob bytes per chunk row. A row (hash, bytes, and redb's own overhead)
/// then fits one 1 MiB page; a full 1 MiB of bytes would take a 2 MiB page.
pub const BLOB_CHUNK_LEN: usize = 1024 * 1024 - 4096;

const CHUNK_HASH_LEN: usize = 32;

/// Where and how a blob's chunks are stored.
#[derive(Clone, Copy)]
struct BlobLocation {
    len: u64,
    storage: u64,
    chunk_len: u64,
}

impl BlobLocation {
    fn chunk_count(&self) -> u64 {
        self.len.div_ceil(self.chunk_len)
    }
}

fn locate(blobs: &impl ReadableTable<HashKey, (u64, u64, u32)>, hash: BlobHash) -> Result<Option<BlobLocation>> {
    let Some(value) = blobs.get(*hash.as_bytes())? else {
        return Ok(None);
    };
    let (len, storage, chunk_len) = value.value();
    if chunk_len == 0 {
        return Err(StoreError::CorruptRecord {
            table: "blobs",
            detail: format!("blob {}… has chunk length 0", hash.short()),
        });
    }
    Ok(Some(BlobLocation {
        len,
        storage,
        chunk_len: u64::from(chunk_len),
    }))
}

/// Chunk indexes stored under `storage`.
fn chunk_indexes(chunks: &impl ReadableTable<(u64, u64), &'static [u8]>, storage: u64) -> Result<Vec<u64>> {
    let mut indexes = Vec::new();
    for entry in chunks.range((storage, 0u64)..)? {
        let (key, _) = entry?;
        let (entry_storage, index) = key.value();
        if entry_storage != storage {
            break;
        }
        indexes.push(index);
    }
    Ok(indexes)
}

fn delete_chunks(tables: &mut Tables<'_>, storage: u64) -> Result<()> {
    for index in chunk_indexes(tables.blob_chunks.open()?, storage)? {
        tables.blob_chunks.open()?.remove((storage, index))?;
    }
    Ok(())
}

/// Records that chunks under `storage` exist, so that a crash before the
/// blob is finished leaves nothing behind for good.
fn register_storage(tables: &mut Tables<'_>, storage: u64) -> Result<()> {
    tables.blob_uploads.open()?.insert(storage, ())?;
    let next = read_counter(tables.counters.open()?, COUNTER_NEXT_BLOB_STORAGE)?;
    if next <= storage {
        tables
            .counters
            .open()?
            .insert(COUNTER_NEXT_BLOB_STORAGE, storage.saturating_add(1))?;
    }
    Ok(())
}

/// Deletes every unfinished blob write's chunks (run on open).
pub(crate) fn sweep_unfinished(tables: &mut Tables<'_>) -> Result<()> {
    let mut unfinished = Vec::new();
    for entry in tables.blob_uploads.open()?.iter()? {
        unfinished.push(entry?.0.value());
    }
    for storage in unfinished {
        delete_chunks(tables, storage)?;
        tables.blob_uploads.open()?.remove(storage)?;
    }
    Ok(())
}

/// Writes one blob as a stream. Made by [`Store::blob_writer`]; finish it
/// with [`BlobWriter::finish`] (or `finish_blocking`) to get its hash.
/// Dropped unfinished, it deletes what it wrote.
pub struct BlobWriter {
    store: Store,
    storage: u64,
    hasher: blake3::Hasher,
    /// The chunk being filled, behind room for its hash.
    buffer: Vec<u8>,
    next_index: u64,
    len: u64,
    /// The last chunk sent: wait for it before sending the next.
    in_flight: Option<Commit<()>>,
    finished: bool,
}

impl BlobWriter {
    fn new(store: Store) -> Self {
        let storage = store.inner.next_blob_storage.fetch_add(1, Ordering::Relaxed);
        Self {
            store,
            storage,
            hasher: blake3::Hasher::new(),
            buffer: empty_chunk(),
            next_index: 0,
            len: 0,
            in_flight: None,
            finished: false,
        }
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Copies as much of `data` as fits into the current chunk and returns
    /// the rest.
    fn fill<'d>(&mut self, data: &'d [u8]) -> &'d [u8] {
        let room = CHUNK_HASH_LEN + BLOB_CHUNK_LEN - self.buffer.len();
        let (taken, rest) = data.split_at(room.min(data.len()));
        self.buffer.extend_from_slice(taken);
        self.hasher.update(taken);
        self.len += taken.len() as u64;
        rest
    }

    fn chunk_is_full(&self) -> bool {
        self.buffer.len() == CHUNK_HASH_LEN + BLOB_CHUNK_LEN
    }

    /// Hands the current chunk to the writer.
    fn send_chunk(&mut self) -> Commit<()> {
        let row = std::mem::replace(&mut self.buffer, empty_chunk());
        let storage = self.storage;
        let index = self.next_index;
        self.next_index += 1;
        self.store.submit(
            move |tx| {
                // Hashed on the writer thread, while the caller fills the
                // next chunk and hashes the whole blob.
                let row = seal_chunk(row);
                if index == 0 {
                    register_storage(&mut tx.tables, storage)?;
                }
                tx.tables.blob_chunks.open()?.insert((storage, index), row.as_slice())?;
                Ok(())
            },
            false,
        )
    }

    /// Hands the last chunk and the blob's record to the writer.
    fn send_finish(&mut self) -> Commit<BlobHash> {
        self.finished = true;
        let hash = BlobHash::from_bytes(*self.hasher.finalize().as_bytes());
        let last_row = (self.buffer.len() > CHUNK_HASH_LEN)
            .then(|| seal_chunk(std::mem::replace(&mut self.buffer, empty_chunk())));
        let location = BlobLocation {
            len: self.len,
            storage: self.storage,
            chunk_len: BLOB_CHUNK_LEN as u64,
        };
        let last_index = self.next_index;
        self.store
            .submit(move |tx| finish_blob(tx, hash, location, last_index, last_row), true)
    }

    /// Writes bytes, waiting (without blocking the thread) while the
    /// previous chunk commits.
    pub async fn write(&mut self, mut data: &[u8]) -> Result<()> {
        while !data.is_empty() {
            data = self.fill(data);
            if self.chunk_is_full() {
                if let Some(previous) = self.in_flight.take() {
                    previous.await?;
                }
                self.in_flight = Some(self.send_chunk());
            }
        }
        Ok(())
    }

    /// Writes bytes, blocking while the previous chunk commits.
    pub fn write_blocking(&mut self, mut data: &[u8]) -> Result<()> {
        while !data.is_empty() {
            data = self.fill(data);
            if self.chunk_is_full() {
                if let Some(previous) = self.in_flight.take() {
                    previous.wait()?;
                }
                self.in_flight = Some(self.send_chunk());
            }
        }
        Ok(())
    }

    /// Stores the blob; resolves once it is durable, to its hash.
    pub async fn finish(mut self) -> Result<BlobHash> {
        if let Some(previous) = self.in_flight.take() {
            previous.await?;
        }
        self.send_finish().await
    }

    pub fn finish_blocking(mut self) -> Result<BlobHash> {
        if let Some(previous) = self.in_flight.take() {
            previous.wait()?;
        }
        self.send_finish().wait()
    }
}

impl io::Write for BlobWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.write_blocking(data).map_err(io::Error::other)?;
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        if self.finished || self.next_index == 0 {
            return;
        }
        let storage = self.storage;
        // Queued after this writer's chunks, so it runs after them. If it is
        // lost, the sweep on the next open does the same.
        drop(self.store.submit(
            move |tx| {
                delete_chunks(&mut tx.tables, storage)?;
                tx.tables.blob_uploads.open()?.remove(storage)?;
                Ok(())
            },
            false,
        ));
    }
}

fn empty_chunk() -> Vec<u8> {
    let mut buffer = Vec::with_capacity(CHUNK_HASH_LEN + BLOB_CHUNK_LEN);
    buffer.resize(CHUNK_HASH_LEN, 0);
    buffer
}

/// Writes the chunk's hash into the room left for it.
fn seal_chunk(mut row: Vec<u8>) -> Vec<u8> {
    let (hash_slot, data) = row.split_at_mut(CHUNK_HASH_LEN);
    hash_slot.copy_from_slice(blake3::hash(data).as_bytes());
    row
}

fn finish_blob(
    tx: &mut Tx<'_>,
    hash: BlobHash,
    location: BlobLocation,
    last_index: u64,
    last_row: Option<Vec<u8>>,
) -> Result<BlobHash> {
    let storage = location.storage;
    if let Some(row) = last_row {
        if last_index == 0 {
            register_storage(&mut tx.tables, storage)?;
        }
        tx.tables
            .blob_chunks
            .open()?
            .insert((storage, last_index), row.as_slice())?;
    }
    if locate(tx.tables.blobs.open()?, hash)?.is_some() {
        // Stored before: keep the old copy only.
        delete_chunks(&mut tx.tables, storage)?;
    } else {
        // A chunk commit that failed would leave a gap; never record one.
        let stored = chunk_indexes(tx.tables.blob_chunks.open()?, storage)?.len() as u64;
        if stored != location.chunk_count() {
            return Err(StoreError::BlobVerification {
                hash_prefix: hash.short(),
                detail: format!("{stored} of its {} chunks reached the store", location.chunk_count()),
            });
        }
        let chunk_len = u32::try_from(location.chunk_len).unwrap_or(u32::MAX);
        tx.tables
            .blobs
            .open()?
            .insert(*hash.as_bytes(), (location.len, storage, chunk_len))?;
    }
    tx.tables.blob_uploads.open()?.remove(storage)?;
    Ok(hash)
}

/// Reads one blob as a stream of verified chunks. Made by
/// [`Snapshot::open_blob`]. Reading is blocking I/O: from async code, run
/// it on a blocking thread (`spawn_blocking`).
pub struct BlobReader {
    chunks: ReadOnlyTable<(u64, u64), &'static [u8]>,
    /// Keeps the database open while the reader lives.
    _db: std::sync::Arc<redb::Database>,
    hash: BlobHash,
    location: BlobLocation,
    next_index: u64,
    hasher: blake3::Hasher,
    /// The chunk being handed out through `io::Read`, and how far.
    current: Vec<u8>,
    current_offset: usize,
    failed: bool,
}

impl BlobReader {
    pub fn hash(&self) -> BlobHash {
        self.hash
    }

    /// The blob's length in bytes.
    pub fn len(&self) -> u64 {
        self.location.len
    }

    pub fn is_empty(&self) -> bool {
        self.location.len == 0
    }

    fn verification_error(&mut self, detail: String) -> StoreError {
        self.failed = true;
        StoreError::BlobVerification {
            hash_prefix: self.hash.short(),
            detail,
        }
    }

    /// The next chunk (up to [`BLOB_CHUNK_LEN`] bytes), or `None` after the
    /// last one. A chunk or a blob whose bytes do not match their hash is
    /// an error, and so is every call after one.
    pub fn next_chunk(&mut self) -> Result<Option<Vec<u8>>> {
        if self.failed {
            return Err(self.verification_error("an earlier chunk failed".into()));
        }
        let count = self.location.chunk_count();
        if self.next_index >= count {
            return Ok(None);
        }
        let index = self.next_index;
        let expected_len = if index + 1 == count {
            // Saturating: the numbers come from the file.
            self.location
                .len
                .saturating_sub(self.location.chunk_len.saturating_mul(index))
        } else {
            self.location.chunk_len
        };
        let checked: std::result::Result<Vec<u8>, String> = match self.chunks.get((self.location.storage, index))? {
            None => Err(format!("chunk {index} of {count} is missing")),
            Some(guard) => match guard.value().split_at_checked(CHUNK_HASH_LEN) {
                Some((stored_hash, data)) if data.len() as u64 == expected_len => {
                    if blake3::hash(data).as_bytes().as_slice() == stored_hash {
                        Ok(data.to_vec())
                    } else {
                        Err(format!("chunk {index} does not match its hash"))
                    }
                }
                other => Err(format!(
                    "chunk {index} holds {} bytes, not {expected_len}",
                    other.map_or(0, |(_, data)| data.len())
                )),
            },
        };
        let data = checked.map_err(|detail| self.verification_error(detail))?;
        self.hasher.update(&data);
        self.next_index += 1;
        if self.next_index == count && self.hasher.finalize().as_bytes() != self.hash.as_bytes() {
            return Err(self.verification_error("the bytes do not match the blob's hash".into()));
        }
        Ok(Some(data))
    }

    /// Reads the whole blob into memory, verified.
    pub fn read_to_vec(mut self) -> Result<Vec<u8>> {
        // The length comes from the file: reserve no more than is sane
        // up front, and let a longer (verified) blob grow the vector.
        let reserve = self.location.len.min(1 << 30);
        let mut bytes = Vec::with_capacity(usize::try_from(reserve).unwrap_or(0));
        while let Some(chunk) = self.next_chunk()? {
            bytes.extend_from_slice(&chunk);
        }
        Ok(bytes)
    }
}

impl io::Read for BlobReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.current_offset == self.current.len() {
            match self.next_chunk().map_err(io::Error::other)? {
                Some(chunk) => {
                    self.current = chunk;
                    self.current_offset = 0;
                }
                None => return Ok(0),
            }
        }
        let available = self.current.get(self.current_offset..).unwrap_or(&[]);
        let count = available.len().min(out.len());
        if let (Some(target), Some(source)) = (out.get_mut(..count), available.get(..count)) {
            target.copy_from_slice(source);
        }
        self.current_offset += count;
        Ok(count)
    }
}

impl Tx<'_> {
    /// Deletes a blob and its chunks; `false` if it was not stored.
    pub fn remove_blob(&mut self, hash: BlobHash) -> Result<bool> {
        let Some(location) = locate(self.tables.blobs.open()?, hash)? else {
            return Ok(false);
        };
        delete_chunks(&mut self.tables, location.storage)?;
        self.tables.blobs.open()?.remove(*hash.as_bytes())?;
        Ok(true)
    }

    pub fn has_blob(&mut self, hash: BlobHash) -> Result<bool> {
        Ok(locate(self.tables.blobs.open()?, hash)?.is_some())
    }
}

impl Snapshot {
    pub fn has_blob(&self, hash: BlobHash) -> Result<bool> {
        Ok(locate(&self.txn.open_table(BLOBS)?, hash)?.is_some())
    }

    /// The blob's length, if it is stored.
    pub fn blob_len(&self, hash: BlobHash) -> Result<Option<u64>> {
        Ok(locate(&self.txn.open_table(BLOBS)?, hash)?.map(|location| location.len))
    }

    /// A reader over the blob as of this snapshot, if it is stored. The
    /// reader keeps the snapshot's view alive until it is dropped.
    pub fn open_blob(&self, hash: BlobHash) -> Result<Option<BlobReader>> {
        let Some(location) = locate(&self.txn.open_table(BLOBS)?, hash)? else {
            return Ok(None);
        };
        Ok(Some(BlobReader {
            chunks: self.txn.open_table(BLOB_CHUNKS)?,
            _db: self.db.clone(),
            hash,
            location,
            next_index: 0,
            hasher: blake3::Hasher::new(),
            current: Vec::new(),
            current_offset: 0,
            failed: false,
        }))
    }
}

impl Store {
    /// A writer for one new blob.
    pub fn blob_writer(&self) -> BlobWriter {
        BlobWriter::new(self.clone())
    }

    /// Stores bytes already in memory as a blob; resolves to its hash once
    /// it is durable. All the chunks are queued at once, so use
    /// [`Store::blob_writer`] for anything large.
    pub fn store_blob(&self, bytes: &[u8]) -> Commit<BlobHash> {
        let mut writer = self.blob_writer();
        let mut rest = bytes;
        while !rest.is_empty() {
            rest = writer.fill(rest);
            if writer.chunk_is_full() {
                // Not awaited: the finishing commit checks that every chunk
                // arrived.
                drop(writer.send_chunk());
            }
        }
        writer.send_finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::BLOB_UPLOADS;

    fn chunk_rows(store: &Store) -> usize {
        let snapshot = store.read().unwrap();
        let chunks = snapshot.txn.open_table(BLOB_CHUNKS).unwrap();
        chunks.iter().unwrap().count()
    }

    fn bytes(len: usize, seed: u8) -> Vec<u8> {
        (0..len).map(|index| (index as u8).wrapping_mul(31) ^ seed).collect()
    }

    #[test]
    fn the_same_bytes_are_kept_once() {
        let temp = tempfile::TempDir::new().unwrap();
        let store = Store::open(temp.path()).unwrap();
        let data = bytes(BLOB_CHUNK_LEN + 5, 1);
        let first = store.store_blob(&data).wait().unwrap();
        assert_eq!(chunk_rows(&store), 2);
        let mut writer = store.blob_writer();
        writer.write_blocking(&data).unwrap();
        assert_eq!(writer.finish_blocking().unwrap(), first);
        assert_eq!(chunk_rows(&store), 2);
        store.store_blob(&bytes(10, 2)).wait().unwrap();
        assert_eq!(chunk_rows(&store), 3);
    }

    #[test]
    fn a_damaged_chunk_is_an_error_when_read() {
        let temp = tempfile::TempDir::new().unwrap();
        let store = Store::open(temp.path()).unwrap();
        let data = bytes(BLOB_CHUNK_LEN * 2, 3);
        let hash = store.store_blob(&data).wait().unwrap();
        let storage = {
            let snapshot = store.read().unwrap();
            let blobs = snapshot.txn.open_table(BLOBS).unwrap();
            locate(&blobs, hash).unwrap().unwrap().storage
        };
        // Flip one byte of the second chunk, keeping its stored hash.
        store
            .transact(move |tx| {
                let mut row = tx
                    .tables
                    .blob_chunks
                    .open()?
                    .get((storage, 1))?
                    .map(|value| value.value().to_vec())
                    .unwrap_or_default();
                if let Some(byte) = row.last_mut() {
                    *byte ^= 1;
                }
                tx.tables.blob_chunks.open()?.insert((storage, 1), row.as_slice())?;
                Ok(())
            })
            .wait()
            .unwrap();
        let mut reader = store.read().unwrap().open_blob(hash).unwrap().unwrap();
        assert!(reader.next_chunk().unwrap().is_some());
        let error = reader.next_chunk().unwrap_err().to_string();
        assert!(error.contains("chunk 1 does not match its hash"), "{error}");
        assert!(!error.contains(&hash.to_hex()), "the full hash must not leak: {error}");
        assert!(reader.next_chunk().is_err());

        // A missing chunk is an error too.
        store
            .transact(move |tx| {
                tx.tables.blob_chunks.open()?.remove((storage, 1))?;
                Ok(())
            })
            .wait()
            .unwrap();
        let reader = store.read().unwrap().open_blob(hash).unwrap().unwrap();
        let error = reader.read_to_vec().unwrap_err().to_string();
        assert!(error.contains("chunk 1 of 2 is missing"), "{error}");
    }

    #[test]
    fn a_chunk_whose_hash_was_rewritten_still_fails_the_blob_hash() {
        let temp = tempfile::TempDir::new().unwrap();
        let store = Store::open(temp.path()).unwrap();
        let hash = store.store_blob(b"original").wait().unwrap();
        store
            .transact(move |tx| {
                let storage = locate(tx.tables.blobs.open()?, hash)?.map_or(0, |found| found.storage);
                let forged = seal_chunk([[0u8; CHUNK_HASH_LEN].as_slice(), b"0riginal"].concat());
                tx.tables.blob_chunks.open()?.insert((storage, 0), forged.as_slice())?;
                Ok(())
            })
            .wait()
            .unwrap();
        let error = store.read().unwrap().open_blob(hash).unwrap().unwrap().read_to_vec();
        assert!(error.unwrap_err().to_string().contains("do not match the blob's hash"),);
    }

    #[test]
    fn an_abandoned_write_leaves_nothing() {
        let temp = tempfile::TempDir::new().unwrap();
        let store = Store::open(temp.path()).unwrap();
        let mut writer = store.blob_writer();
        writer.write_blocking(&bytes(BLOB_CHUNK_LEN * 2 + 1, 4)).unwrap();
        drop(writer);
        // The clean-up is queued behind the chunks; a write after it waits
        // for both.
        store.store_blob(b"x").wait().unwrap();
        assert_eq!(chunk_rows(&store), 1);
        let snapshot = store.read().unwrap();
        assert!(
            snapshot
                .txn
                .open_table(BLOB_UPLOADS)
                .unwrap()
                .iter()
                .unwrap()
                .next()
                .is_none()
        );
    }

    #[test]
    fn a_write_cut_short_by_a_crash_is_swept_on_open() {
        let temp = tempfile::TempDir::new().unwrap();
        let store = Store::open(temp.path()).unwrap();
        store.store_blob(b"kept").wait().unwrap();
        // What a crash between chunk commits leaves behind.
        store
            .transact(|tx| {
                register_storage(&mut tx.tables, 40)?;
                tx.tables.blob_chunks.open()?.insert((40, 0), b"orphan".as_slice())?;
                Ok(())
            })
            .wait()
            .unwrap();
        assert_eq!(chunk_rows(&store), 2);
        store.close().unwrap();
        let store = Store::open(temp.path()).unwrap();
        assert_eq!(chunk_rows(&store), 1);
        // And new writes do not reuse the swept storage number.
        assert!(store.blob_writer().storage > 40);
    }
}
