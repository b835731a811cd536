//! [`LoggedTable`]: a redb table that records every change made through it
//! as key and value bytes (its *redo list*), so that the writer can put a
//! transaction's changes in the write-ahead log (`wal.rs`); and the encoding
//! of those changes, checked again when the log is read back.
//!
//! Reads are forwarded untouched. The bytes are redb's own encoding of each
//! key and value (`Key::as_bytes`), so no table needs code of its own, and
//! replaying a change is one `insert` or `remove` of the decoded value.
//!
//! One change, in a redo list and in the log:
//!
//! | bytes | field |
//! |---|---|
//! | 1 | table number (`tx.rs` fixes them) |
//! | 1 | 1 = insert, 2 = remove |
//! | 4 | key length, u32 LE |
//! | … | key |
//! | 4 | value length, u32 LE (insert only) |
//! | … | value (insert only) |

use std::borrow::Borrow;
use std::ops::RangeBounds;
use std::panic::{AssertUnwindSafe, catch_unwind};

use redb::{AccessGuard, Key, Range, ReadableTable, ReadableTableMetadata, StorageError, Table, TableStats, Value};

const INSERT: u8 = 1;
const REMOVE: u8 = 2;

/// A table of a write transaction that remembers what was changed in it.
pub(crate) struct LoggedTable<'t, K: Key + 'static, V: Value + 'static> {
    table: Table<'t, K, V>,
    number: u8,
    /// Changes made through this table, in order, encoded as above.
    redo: Vec<u8>,
}

impl<'t, K: Key + 'static, V: Value + 'static> LoggedTable<'t, K, V> {
    pub(crate) fn new(table: Table<'t, K, V>, number: u8) -> Self {
        Self {
            table,
            number,
            redo: Vec::new(),
        }
    }

    /// As redb's `Table::insert`, and records the change.
    pub(crate) fn insert<'k, 'v>(
        &mut self,
        key: impl Borrow<K::SelfType<'k>>,
        value: impl Borrow<V::SelfType<'v>>,
    ) -> Result<Option<AccessGuard<'_, V>>, StorageError> {
        let (key, value) = (key.borrow(), value.borrow());
        let old = self.table.insert(key, value)?;
        let (key, value) = (K::as_bytes(key), V::as_bytes(value));
        push_change(&mut self.redo, self.number, INSERT, key.as_ref(), Some(value.as_ref()));
        Ok(old)
    }

    /// As redb's `Table::remove`, and records the change if there was one.
    pub(crate) fn remove<'k>(
        &mut self,
        key: impl Borrow<K::SelfType<'k>>,
    ) -> Result<Option<AccessGuard<'_, V>>, StorageError> {
        let key = key.borrow();
        let old = self.table.remove(key)?;
        if old.is_some() {
            push_change(&mut self.redo, self.number, REMOVE, K::as_bytes(key).as_ref(), None);
        }
        Ok(old)
    }

    /// Moves the changes recorded so far onto `redo`.
    pub(crate) fn take_redo(&mut self, redo: &mut Vec<u8>) {
        redo.append(&mut self.redo);
    }

    /// Makes a change read back from the log, without recording it. The
    /// bytes must decode to this table's types and encode back to the
    /// same bytes; redb's decoders trust their input (some panic on bad
    /// bytes), so they run under `catch_unwind`.
    pub(crate) fn apply(&mut self, change: &Change<'_>) -> Result<(), String> {
        let key = decode::<K>(change.key).ok_or("a key does not fit its table")?;
        match change.value {
            Some(bytes) => {
                let value = decode::<V>(bytes).ok_or("a value does not fit its table")?;
                self.table.insert(key, value).map_err(|error| error.to_string())?;
            }
            None => {
                self.table.remove(key).map_err(|error| error.to_string())?;
            }
        }
        Ok(())
    }
}

fn push_change(redo: &mut Vec<u8>, table: u8, kind: u8, key: &[u8], value: Option<&[u8]>) {
    redo.push(table);
    redo.push(kind);
    push_bytes(redo, key);
    if let Some(value) = value {
        push_bytes(redo, value);
    }
}

fn push_bytes(redo: &mut Vec<u8>, bytes: &[u8]) {
    // redb refuses keys and values of 3 GiB or more, so the length fits.
    redo.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    redo.extend_from_slice(bytes);
}

fn decode<T: Value + 'static>(bytes: &[u8]) -> Option<T::SelfType<'_>> {
    if T::fixed_width().is_some_and(|width| width != bytes.len()) {
        return None;
    }
    let decoded = catch_unwind(AssertUnwindSafe(|| T::from_bytes(bytes))).ok()?;
    let round_trips = T::as_bytes(&decoded).as_ref() == bytes;
    round_trips.then_some(decoded)
}

/// One change read back from a redo list.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Change<'a> {
    pub table: u8,
    pub key: &'a [u8],
    /// The new value; `None` for a removal.
    pub value: Option<&'a [u8]>,
}

/// Splits a redo list into its changes, checking every length against the
/// bytes there are. Whether the table numbers name tables is for the
/// caller (`tx.rs` knows the tables).
pub(crate) fn parse_changes(mut bytes: &[u8]) -> Result<Vec<Change<'_>>, String> {
    let mut changes = Vec::new();
    while let [table, kind, rest @ ..] = bytes {
        let (key, rest) = take_bytes(rest).ok_or("a key is cut short")?;
        let (value, rest) = match *kind {
            INSERT => {
                let (value, rest) = take_bytes(rest).ok_or("a value is cut short")?;
                (Some(value), rest)
            }
            REMOVE => (None, rest),
            other => return Err(format!("unknown change kind {other}")),
        };
        changes.push(Change {
            table: *table,
            key,
            value,
        });
        bytes = rest;
    }
    if !bytes.is_empty() {
        return Err("a change is cut short".into());
    }
    Ok(changes)
}

fn take_bytes(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let (length, rest) = bytes.split_first_chunk::<4>()?;
    let length = usize::try_from(u32::from_le_bytes(*length)).ok()?;
    (length <= rest.len()).then(|| rest.split_at(length))
}

impl<K: Key + 'static, V: Value + 'static> ReadableTableMetadata for LoggedTable<'_, K, V> {
    fn stats(&self) -> redb::Result<TableStats> {
        self.table.stats()
    }

    fn len(&self) -> redb::Result<u64> {
        self.table.len()
    }
}

impl<K: Key + 'static, V: Value + 'static> ReadableTable<K, V> for LoggedTable<'_, K, V> {
    fn get<'a>(&self, key: impl Borrow<K::SelfType<'a>>) -> redb::Result<Option<AccessGuard<'_, V>>> {
        self.table.get(key)
    }

    fn range<'a, KR>(&self, range: impl RangeBounds<KR> + 'a) -> redb::Result<Range<'_, K, V>>
    where
        KR: Borrow<K::SelfType<'a>> + 'a,
    {
        self.table.range(range)
    }

    fn first(&self) -> redb::Result<Option<(AccessGuard<'_, K>, AccessGuard<'_, V>)>> {
        self.table.first()
    }

    fn last(&self) -> redb::Result<Option<(AccessGuard<'_, K>, AccessGuard<'_, V>)>> {
        self.table.last()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_read_back_as_written() {
        let mut redo = Vec::new();
        push_change(&mut redo, 3, INSERT, b"key", Some(b"value"));
        push_change(&mut redo, 4, REMOVE, b"gone", None);
        push_change(&mut redo, 5, INSERT, b"", Some(b""));
        assert_eq!(
            parse_changes(&redo).unwrap(),
            vec![
                Change {
                    table: 3,
                    key: b"key",
                    value: Some(b"value"),
                },
                Change {
                    table: 4,
                    key: b"gone",
                    value: None,
                },
                Change {
                    table: 5,
                    key: b"",
                    value: Some(b""),
                },
            ]
        );
    }

    #[test]
    fn a_cut_or_malformed_list_is_refused() {
        let mut redo = Vec::new();
        push_change(&mut redo, 3, INSERT, b"key", Some(b"value"));
        for cut in 1..redo.len() {
            assert!(parse_changes(&redo[..cut]).is_err(), "cut at {cut}");
        }
        let mut wrong_kind = redo.clone();
        wrong_kind[1] = 9;
        assert!(
            parse_changes(&wrong_kind)
                .unwrap_err()
                .contains("unknown change kind 9")
        );
        let mut too_long = redo.clone();
        too_long[2..6].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(parse_changes(&too_long).is_err());
    }

    #[test]
    fn bytes_that_do_not_fit_a_type_do_not_decode() {
        assert_eq!(decode::<u64>(&7u64.to_le_bytes()), Some(7));
        assert_eq!(decode::<u64>(&[1, 2, 3]), None);
        assert_eq!(decode::<&str>(b"text"), Some("text"));
        // redb's &str decoder panics on bad UTF-8; that is caught.
        assert_eq!(decode::<&str>(&[0xff, 0xfe]), None);
    }
}
