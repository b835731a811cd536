//! The write-ahead log, `capstan.wal` beside `capstan.redb`: what makes a
//! write durable between checkpoints, and how it is read back on open.
//!
//! The writer commits every redb transaction without an fsync and then
//! appends one *record* per group of transactions to this file and
//! fdatasyncs it; a *checkpoint* (a durable redb commit) makes the log's
//! records unnecessary and empties it. So an acknowledged write is in redb's
//! last durable commit or in a whole record of the log.
//!
//! File layout: a 48-byte header (magic `capstWAL`, format version u32 LE,
//! 4 zero bytes, the store's 32-byte node id), then records, each starting
//! at a multiple of 8 bytes, then zeros. Zeros are written ahead of the
//! records ([`ZERO_AHEAD`] at a time), so most records overwrite bytes the
//! file already has and their fdatasync has no file size to update.
//!
//! A record (little-endian):
//!
//! | bytes | field |
//! |---|---|
//! | 4 | magic `0x5741_4C31` (never zero, so zeros end the log) |
//! | 4 | body length, at most [`RECORD_BODY_MAX`] |
//! | 8 | first commit sequence number in the record |
//! | 8 | last commit sequence number |
//! | 16 | the first 16 bytes of blake3 over the 24 bytes above and the body |
//! | … | body: per transaction, its sequence number (u64), the length of its changes (u32), its changes (`redo.rs`) |
//! | 0–7 | zeros, to the next multiple of 8 |
//!
//! Reading on open: records are read in order while each is whole (magic,
//! bounds, checksum) and continues the sequence numbers of the one before.
//! The first place that holds no such record ends the log. Every record is
//! fdatasync'd before the next is written, so only the last one can be torn
//! by a crash: if the rest of the file holds zeros or pieces of that
//! record, it was never acknowledged and is dropped. If a whole, later
//! record is found past the end, the bytes in between were damaged after
//! they were written: the open fails with [`StoreError::LogCorrupted`]
//! rather than drop acknowledged writes silently. Transactions numbered
//! above the store's `commit_seq` are applied in one durable commit, and the
//! log is emptied.

use std::fs::{self, File};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use redb::Database;

use crate::error::{Result, StoreError};
use crate::ids::NodeId;
use crate::redo::parse_changes;
use crate::schema::COUNTER_COMMIT_SEQ;
use crate::tx::Tables;

/// The log's file name inside the state directory.
pub const LOG_FILE_NAME: &str = "capstan.wal";

const FILE_MAGIC: [u8; 8] = *b"capstWAL";
const FORMAT_VERSION: u32 = 1;
const FILE_HEADER_LEN: u64 = 48;

const RECORD_MAGIC: u32 = 0x5741_4C31;
const RECORD_HEADER_LEN: usize = 40;
const CHECKSUM_LEN: usize = 16;
/// The largest record body. A group whose changes are larger (a blob's
/// chunks) is not logged: a checkpoint makes it durable instead.
pub(crate) const RECORD_BODY_MAX: usize = 4 << 20;
/// Sequence number and length before each transaction's changes.
const TRANSACTION_HEADER_LEN: usize = 12;
/// How many zero bytes are written past the last record at a time.
const ZERO_AHEAD: u64 = 1 << 20;
/// How much of the file the search for whole records past a damaged one
/// reads at a time.
const SCAN_WINDOW: u64 = 1 << 20;

/// The open log, owned by the writer thread.
pub(crate) struct WriteAheadLog {
    file: File,
    path: PathBuf,
    /// Where the next record goes.
    end: u64,
    /// The file's length; the bytes from `end` to here are zeros.
    zeroed_to: u64,
    /// The record being gathered: room for its header, then the staged
    /// transactions.
    staged: Vec<u8>,
    /// The first and last sequence numbers staged.
    staged_seqs: Option<(u64, u64)>,
}

impl WriteAheadLog {
    /// Opens the log in `state_dir` (making it if there is none), applies
    /// what it holds past `commit_seq` to `db` in one durable commit (which
    /// moves the store's `commit_seq` on), and empties it.
    pub(crate) fn open(state_dir: &Path, node_id: &NodeId, db: &Database, commit_seq: u64) -> Result<Self> {
        let path = state_dir.join(LOG_FILE_NAME);
        let file = match fs::OpenOptions::new().read(true).write(true).open(&path) {
            Ok(file) => file,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                let file = create(state_dir, &path, node_id)?;
                return Ok(Self::new(file, path, FILE_HEADER_LEN.saturating_add(ZERO_AHEAD)));
            }
            Err(source) => return Err(io_error("open", &path)(source)),
        };
        let file_len = file.metadata().map_err(io_error("inspect", &path))?.len();
        let mut log = Self::new(file, path, file_len);
        let same_store = log.check_header(node_id)?;
        if log.recover(db, commit_seq, same_store)? {
            if !same_store {
                log.write_header(node_id)?;
            }
            log.reset()?;
        }
        Ok(log)
    }

    fn new(file: File, path: PathBuf, file_len: u64) -> Self {
        Self {
            file,
            path,
            end: FILE_HEADER_LEN,
            zeroed_to: file_len,
            staged: Vec::new(),
            staged_seqs: None,
        }
    }

    fn corrupted(&self, detail: impl Into<String>) -> StoreError {
        StoreError::LogCorrupted {
            path: self.path.clone(),
            detail: detail.into(),
        }
    }

    /// Checks the file header; returns whether the log is this store's.
    fn check_header(&self, node_id: &NodeId) -> Result<bool> {
        if self.zeroed_to < FILE_HEADER_LEN {
            return Err(self.corrupted(format!("it is {} bytes long, shorter than its header", self.zeroed_to)));
        }
        let mut header = [0u8; FILE_HEADER_LEN as usize];
        self.file
            .read_exact_at(&mut header, 0)
            .map_err(io_error("read", &self.path))?;
        if header[..8] != FILE_MAGIC {
            return Err(self.corrupted("it does not begin with the log's header"));
        }
        let version = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
        if version != FORMAT_VERSION {
            return Err(self.corrupted(format!(
                "it is in log format {version}; this program reads format {FORMAT_VERSION}"
            )));
        }
        Ok(header[16..] == node_id.as_bytes()[..])
    }

    fn write_header(&mut self, node_id: &NodeId) -> Result<()> {
        self.file
            .write_all_at(&file_header(node_id), 0)
            .map_err(io_error("write", &self.path))
    }

    /// Reads the records, applies the transactions past `commit_seq` in one
    /// durable commit, and says whether the file needs emptying (it holds
    /// more than its header and zeros).
    fn recover(&mut self, db: &Database, commit_seq: u64, same_store: bool) -> Result<bool> {
        let file_len = self.zeroed_to;
        let txn = db.begin_write()?;
        let mut tables = Tables::new(&txn);
        let mut offset = FILE_HEADER_LEN;
        let mut applied = commit_seq;
        let mut last_read: Option<u64> = None;
        let end = loop {
            let record = match read_record(&self.file, offset, file_len).map_err(io_error("read", &self.path))? {
                ReadRecord::Whole(record) => record,
                ReadRecord::End => break None,
                ReadRecord::Invalid(reason) => break Some(reason),
            };
            if !same_store {
                return Err(self.corrupted(
                    "it belongs to another store (its header names another node); move it away to open this \
                     store",
                ));
            }
            if let Some(previous) = last_read
                && record.first_seq != previous.saturating_add(1)
            {
                break Some(format!(
                    "a record starts at transaction {} after one that ended at {previous}",
                    record.first_seq
                ));
            }
            for transaction in parse_transactions(&record).map_err(|detail| {
                self.corrupted(format!("the record at byte {offset} is whole but malformed: {detail}"))
            })? {
                if transaction.seq <= applied {
                    continue;
                }
                if transaction.seq != applied.saturating_add(1) {
                    return Err(self.corrupted(format!(
                        "it continues from transaction {}, but the store's last is {applied}: the log is not this \
                         store's",
                        transaction.seq
                    )));
                }
                for change in parse_changes(transaction.changes).map_err(|detail| {
                    self.corrupted(format!("the record at byte {offset} is whole but malformed: {detail}"))
                })? {
                    tables.apply(&change).map_err(|detail| {
                        self.corrupted(format!(
                            "a change in the record at byte {offset} cannot be applied: {detail}"
                        ))
                    })?;
                }
                applied = transaction.seq;
            }
            last_read = Some(record.last_seq);
            offset = record.next;
        };
        // Nothing but the tail of a cut record may follow the last whole
        // one; a whole record further on means damage in between.
        let later = find_later_record(&self.file, offset, file_len, last_read).map_err(io_error("read", &self.path))?;
        if let Some(later) = later {
            let reason = end.unwrap_or_else(|| "zeros".into());
            return Err(self.corrupted(format!(
                "the log stops at byte {offset} ({reason}), but a whole record follows at byte {later}; \
                 the log was damaged after it was written (moving it away opens the store as of its last \
                 checkpoint, without the writes logged since)"
            )));
        }
        if applied > commit_seq {
            tables.counters.open()?.insert(COUNTER_COMMIT_SEQ, applied)?;
            drop(tables);
            txn.commit()?;
            tracing::info!(
                transactions = applied - commit_seq,
                "replayed the store's write-ahead log"
            );
        } else {
            drop(tables);
            txn.abort()?;
        }
        Ok(offset > FILE_HEADER_LEN || end.is_some() || !same_store)
    }

    /// Adds one committed transaction's changes to the record being
    /// gathered.
    pub(crate) fn stage(&mut self, seq: u64, changes: &[u8]) {
        if self.staged.is_empty() {
            self.staged.resize(RECORD_HEADER_LEN, 0);
        }
        self.staged.extend_from_slice(&seq.to_le_bytes());
        self.staged.extend_from_slice(&(changes.len() as u32).to_le_bytes());
        self.staged.extend_from_slice(changes);
        let first = self.staged_seqs.map_or(seq, |(first, _)| first);
        self.staged_seqs = Some((first, seq));
    }

    /// The body size a record of what is staged, plus `more` bytes of
    /// changes, would have.
    pub(crate) fn staged_body_len_with(&self, more: usize) -> usize {
        self.staged
            .len()
            .saturating_sub(RECORD_HEADER_LEN)
            .saturating_add(TRANSACTION_HEADER_LEN)
            .saturating_add(more)
    }

    pub(crate) fn discard_staged(&mut self) {
        self.staged.clear();
        self.staged_seqs = None;
    }

    /// Writes what is staged as one record, without an fsync.
    pub(crate) fn write_staged(&mut self) -> std::io::Result<()> {
        let Some((first_seq, last_seq)) = self.staged_seqs.take() else {
            return Ok(());
        };
        let body_len = self.staged.len().saturating_sub(RECORD_HEADER_LEN);
        let mut header = [0u8; RECORD_HEADER_LEN];
        header[..4].copy_from_slice(&RECORD_MAGIC.to_le_bytes());
        header[4..8].copy_from_slice(&(body_len as u32).to_le_bytes());
        header[8..16].copy_from_slice(&first_seq.to_le_bytes());
        header[16..24].copy_from_slice(&last_seq.to_le_bytes());
        let checksum = checksum(&header[..24], &self.staged[RECORD_HEADER_LEN..]);
        header[24..].copy_from_slice(&checksum);
        self.staged[..RECORD_HEADER_LEN].copy_from_slice(&header);
        self.staged.resize(align8(self.staged.len()), 0);
        let record_end = self.end.saturating_add(self.staged.len() as u64);
        self.file.write_all_at(&self.staged, self.end)?;
        if record_end > self.zeroed_to {
            let zeroed_to = record_end.saturating_add(ZERO_AHEAD);
            write_zeros(&self.file, record_end.max(self.zeroed_to), zeroed_to)?;
            self.zeroed_to = zeroed_to;
        }
        self.end = record_end;
        self.staged.clear();
        Ok(())
    }

    /// fdatasync: makes every record written so far durable.
    pub(crate) fn sync(&self) -> std::io::Result<()> {
        self.file.sync_data()
    }

    /// Bytes of records in the log.
    pub(crate) fn records_len(&self) -> u64 {
        self.end.saturating_sub(FILE_HEADER_LEN)
    }

    /// Deletes the log file, once a checkpoint on a clean close has emptied
    /// it, so that a store closed cleanly is its redb file alone. (Should
    /// the deletion not survive a crash, the empty log it brings back does
    /// no harm.)
    pub(crate) fn remove(self) {
        if let Err(error) = fs::remove_file(&self.path) {
            tracing::warn!(path = %self.path.display(), %error, "cannot delete the emptied write-ahead log");
        }
    }

    /// Empties the log once a checkpoint has made its records unneeded:
    /// cuts the file to its header, writes zeros ahead again and syncs.
    pub(crate) fn reset(&mut self) -> Result<()> {
        self.discard_staged();
        let zeroed_to = FILE_HEADER_LEN.saturating_add(ZERO_AHEAD);
        self.file
            .set_len(FILE_HEADER_LEN)
            .and_then(|()| write_zeros(&self.file, FILE_HEADER_LEN, zeroed_to))
            .and_then(|()| self.file.sync_all())
            .map_err(io_error("empty", &self.path))?;
        self.end = FILE_HEADER_LEN;
        self.zeroed_to = zeroed_to;
        Ok(())
    }
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StoreError {
    let path = path.to_owned();
    move |source| StoreError::Io { action, path, source }
}

fn file_header(node_id: &NodeId) -> [u8; FILE_HEADER_LEN as usize] {
    let mut header = [0u8; FILE_HEADER_LEN as usize];
    header[..8].copy_from_slice(&FILE_MAGIC);
    header[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    header[16..].copy_from_slice(node_id.as_bytes());
    header
}

/// Makes an empty log under a temporary name and renames it into place, so
/// that the log file always has its whole header.
fn create(state_dir: &Path, path: &Path, node_id: &NodeId) -> Result<File> {
    let temporary = state_dir.join(format!(".{LOG_FILE_NAME}.new-{}", std::process::id()));
    let _ = fs::remove_file(&temporary);
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temporary)
        .map_err(io_error("create", &temporary))?;
    file.write_all_at(&file_header(node_id), 0)
        .and_then(|()| write_zeros(&file, FILE_HEADER_LEN, FILE_HEADER_LEN.saturating_add(ZERO_AHEAD)))
        .and_then(|()| file.sync_all())
        .map_err(io_error("write", &temporary))?;
    fs::rename(&temporary, path).map_err(io_error("create", path))?;
    File::open(state_dir)
        .and_then(|dir| dir.sync_all())
        .map_err(io_error("sync", state_dir))?;
    Ok(file)
}

fn write_zeros(file: &File, from: u64, to: u64) -> std::io::Result<()> {
    static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];
    let mut at = from;
    while at < to {
        let length = (to - at).min(ZEROS.len() as u64) as usize;
        file.write_all_at(&ZEROS[..length], at)?;
        at = at.saturating_add(length as u64);
    }
    Ok(())
}

fn align8(length: usize) -> usize {
    length.div_ceil(8).saturating_mul(8)
}

fn checksum(header: &[u8], body: &[u8]) -> [u8; CHECKSUM_LEN] {
    let mut hasher = blake3::Hasher::new();
    hasher.update(header);
    hasher.update(body);
    let mut checksum = [0u8; CHECKSUM_LEN];
    checksum.copy_from_slice(&hasher.finalize().as_bytes()[..CHECKSUM_LEN]);
    checksum
}

/// One whole record read from the file.
struct Record {
    first_seq: u64,
    last_seq: u64,
    body: Vec<u8>,
    /// Where the next record would start.
    next: u64,
}

enum ReadRecord {
    Whole(Record),
    /// Zeros, or the end of the file.
    End,
    /// Not a whole record, and why.
    Invalid(String),
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0u8; 4];
    if let Some(source) = bytes.get(at..at.saturating_add(4)) {
        word.copy_from_slice(source);
    }
    u32::from_le_bytes(word)
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    if let Some(source) = bytes.get(at..at.saturating_add(8)) {
        word.copy_from_slice(source);
    }
    u64::from_le_bytes(word)
}

/// Reads the record at `offset`, checking everything about it but its
/// place in the sequence. Every byte is untrusted: lengths are bounded
/// before anything is allocated.
fn read_record(file: &File, offset: u64, file_len: u64) -> std::io::Result<ReadRecord> {
    let available = file_len.saturating_sub(offset).min(RECORD_HEADER_LEN as u64) as usize;
    if available == 0 {
        return Ok(ReadRecord::End);
    }
    let mut header = [0u8; RECORD_HEADER_LEN];
    file.read_exact_at(&mut header[..available], offset)?;
    if header.iter().all(|&byte| byte == 0) {
        return Ok(ReadRecord::End);
    }
    if available < RECORD_HEADER_LEN {
        return Ok(ReadRecord::Invalid(
            "a record header is cut short by the end of the file".into(),
        ));
    }
    if u32_at(&header, 0) != RECORD_MAGIC {
        return Ok(ReadRecord::Invalid("no record begins there".into()));
    }
    let body_len = u32_at(&header, 4) as usize;
    if body_len > RECORD_BODY_MAX {
        return Ok(ReadRecord::Invalid(format!(
            "a record claims {body_len} bytes, more than any record holds"
        )));
    }
    let body_start = offset.saturating_add(RECORD_HEADER_LEN as u64);
    if body_start.saturating_add(body_len as u64) > file_len {
        return Ok(ReadRecord::Invalid("a record runs past the end of the file".into()));
    }
    let mut body = vec![0u8; body_len];
    file.read_exact_at(&mut body, body_start)?;
    if checksum(&header[..24], &body)[..] != header[24..] {
        return Ok(ReadRecord::Invalid("a record does not match its checksum".into()));
    }
    let (first_seq, last_seq) = (u64_at(&header, 8), u64_at(&header, 16));
    if first_seq > last_seq {
        return Ok(ReadRecord::Invalid("a record's sequence numbers are reversed".into()));
    }
    let next = offset.saturating_add(align8(RECORD_HEADER_LEN.saturating_add(body_len)) as u64);
    Ok(ReadRecord::Whole(Record {
        first_seq,
        last_seq,
        body,
        next,
    }))
}

/// Looks from `from` on for a whole record later than `after_seq`; returns
/// where it starts. (The record at `from` itself counts: it may be whole
/// but out of sequence.)
fn find_later_record(file: &File, from: u64, file_len: u64, after_seq: Option<u64>) -> std::io::Result<Option<u64>> {
    let magic = RECORD_MAGIC.to_le_bytes();
    let mut window_start = from;
    let mut window = Vec::new();
    while window_start.saturating_add(RECORD_HEADER_LEN as u64) <= file_len {
        let length = file_len
            .saturating_sub(window_start)
            .min(SCAN_WINDOW.saturating_add(RECORD_HEADER_LEN as u64)) as usize;
        window.resize(length, 0);
        file.read_exact_at(&mut window, window_start)?;
        let mut position = 0;
        while position < SCAN_WINDOW as usize && position.saturating_add(RECORD_HEADER_LEN) <= length {
            if window[position..position + 4] == magic {
                let offset = window_start.saturating_add(position as u64);
                if let ReadRecord::Whole(record) = read_record(file, offset, file_len)?
                    && after_seq.is_none_or(|after| record.first_seq > after)
                {
                    return Ok(Some(offset));
                }
            }
            position += 8;
        }
        window_start = window_start.saturating_add(SCAN_WINDOW);
    }
    Ok(None)
}

/// One transaction of a record.
struct Transaction<'a> {
    seq: u64,
    changes: &'a [u8],
}

/// Splits a whole record's body into its transactions, which must number
/// from its first sequence number to its last, one by one.
fn parse_transactions(record: &Record) -> std::result::Result<Vec<Transaction<'_>>, String> {
    let mut transactions = Vec::new();
    let mut rest = record.body.as_slice();
    let mut expected = record.first_seq;
    while !rest.is_empty() {
        if rest.len() < TRANSACTION_HEADER_LEN {
            return Err("a transaction header is cut short".into());
        }
        let seq = u64_at(rest, 0);
        let length = u32_at(rest, 8) as usize;
        if seq != expected {
            return Err(format!("transaction {seq} where {expected} was due"));
        }
        let changes = rest
            .get(TRANSACTION_HEADER_LEN..TRANSACTION_HEADER_LEN.saturating_add(length))
            .ok_or("a transaction is cut short")?;
        transactions.push(Transaction { seq, changes });
        rest = &rest[TRANSACTION_HEADER_LEN.saturating_add(length)..];
        expected = expected.saturating_add(1);
    }
    if transactions.last().map(|last| last.seq) != Some(record.last_seq) {
        return Err("its transactions do not end at its last sequence number".into());
    }
    Ok(transactions)
}
