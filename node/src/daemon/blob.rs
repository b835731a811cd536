//! Blobs: readable blob references over the store's content-addressed
//! blobs, readers that hand out their bytes in chunks, and storing a blob
//! streamed from a remote reader without holding it in memory.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

use capstan_protocol::guards::DefaultGuards;
use capstan_protocol::patterns::M;
use capstan_protocol::{ErrorValue, Value, list, record};
use capstan_store::{BlobHash, BlobReader};

use super::Daemon;
use super::names::store_error;
use crate::runtime::{E, Exo, when};

/// The most `bytes()`/`text()` return at once; larger blobs are read with
/// `reader()` chunk by chunk.
pub const WHOLE_READ_LIMIT: u64 = 8 * 1024 * 1024;

/// How many chunks to ask a remote reader for ahead of writing them.
const PREFETCH: usize = 4;

/// The largest chunk accepted from a remote reader.
const MAX_CHUNK: usize = 4 * 1024 * 1024;

/// Makes the blob reference for content hash `hash` (hex).
pub fn make_readable_blob(daemon: &Rc<Daemon>, hash: &str) -> Result<Value, ErrorValue> {
    let hash: BlobHash = hash
        .parse()
        .map_err(|_| ErrorValue::plain("a blob formula names a malformed hash"))?;
    let len = daemon
        .store
        .read()
        .and_then(|snapshot| snapshot.blob_len(hash))
        .map_err(store_error)?
        .ok_or_else(|| ErrorValue::plain("the blob's bytes are missing from the store"))?;
    let (d1, d2, d3) = (Rc::clone(daemon), Rc::clone(daemon), Rc::clone(daemon));
    Exo::new("EndoReadable")
        .interface(M::interface(
            "EndoReadable",
            [
                ("size", M::call([]).returns(M::number())),
                (
                    "bytes",
                    M::call([]).returns(M::byte_array_limited(Some(
                        record! { "byteLengthLimit" => WHOLE_READ_LIMIT as f64 },
                    ))),
                ),
                (
                    "text",
                    M::call([]).returns(M::string_limited(Some(
                        record! { "stringLengthLimit" => WHOLE_READ_LIMIT as f64 },
                    ))),
                ),
                ("reader", M::call([]).returns(M::remotable())),
            ],
            DefaultGuards::None,
        ))
        .method("size", move |_, _| Ok(Value::Number(len as f64)))
        .method("bytes", move |_, _| Ok(Value::bytes(read_whole(&d1, hash, len)?)))
        .method("text", move |_, _| {
            let bytes = read_whole(&d2, hash, len)?;
            String::from_utf8(bytes)
                .map(Value::from)
                .map_err(|_| ErrorValue::type_error("the blob is not UTF-8 text"))
        })
        .method("reader", move |_, _| {
            let reader = open(&d3, hash)?;
            make_chunk_reader(reader)
        })
        .make()
}

fn open(daemon: &Daemon, hash: BlobHash) -> Result<BlobReader, ErrorValue> {
    daemon
        .store
        .read()
        .and_then(|snapshot| snapshot.open_blob(hash))
        .map_err(store_error)?
        .ok_or_else(|| ErrorValue::plain("the blob's bytes are missing from the store"))
}

fn read_whole(daemon: &Daemon, hash: BlobHash, len: u64) -> Result<Vec<u8>, ErrorValue> {
    if len > WHOLE_READ_LIMIT {
        return Err(ErrorValue::range_error(format!(
            "The blob has {len} bytes, more than {WHOLE_READ_LIMIT} can be read at once; read it with reader()"
        )));
    }
    open(daemon, hash)?.read_to_vec().map_err(store_error)
}

/// A reader whose `next()` gives `{done, value}` with the next chunk.
fn make_chunk_reader(reader: BlobReader) -> Result<Value, ErrorValue> {
    let reader = Rc::new(RefCell::new(Some(reader)));
    Exo::new("EndoBlobReader")
        .interface(M::interface(
            "EndoBlobReader",
            [("next", M::call([]).returns(M::record()))],
            DefaultGuards::None,
        ))
        .method("next", move |_, _| {
            let mut slot = reader.borrow_mut();
            let Some(open) = slot.as_mut() else {
                return Ok(record! { "done" => true, "value" => Value::Undefined });
            };
            match open.next_chunk().map_err(store_error)? {
                Some(chunk) => Ok(record! { "done" => false, "value" => Value::bytes(chunk) }),
                None => {
                    *slot = None;
                    Ok(record! { "done" => true, "value" => Value::Undefined })
                }
            }
        })
        .make()
}

/// Stores the bytes a remote reader gives (`next()` → `{done, value}` with
/// byte arrays), asking a few chunks ahead, and returns their hash.
pub async fn store_from_reader(daemon: &Daemon, reader: &Value) -> Result<BlobHash, ErrorValue> {
    let mut writer = daemon.store.blob_writer();
    let mut pending: VecDeque<Value> = (0..PREFETCH).map(|_| E(reader).call("next", list![])).collect();
    loop {
        let Some(next) = pending.pop_front() else { break };
        let step = when(&next).await.map_err(super::reason_to_error)?;
        let record = step
            .as_record()
            .ok_or_else(|| ErrorValue::type_error("a reader's next() must give {done, value}"))?;
        if matches!(record.get("done"), Some(Value::Boolean(true))) {
            break;
        }
        match record.get("value") {
            Some(Value::ByteArray(bytes)) if bytes.len() <= MAX_CHUNK => {
                pending.push_back(E(reader).call("next", list![]));
                writer.write(bytes).await.map_err(store_error)?;
            }
            Some(Value::ByteArray(_)) => {
                return Err(ErrorValue::range_error(format!(
                    "a chunk is larger than {MAX_CHUNK} bytes"
                )));
            }
            _ => return Err(ErrorValue::type_error("a reader's chunks must be byte arrays")),
        }
    }
    writer.finish().await.map_err(store_error)
}
