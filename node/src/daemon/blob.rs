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
use crate::runtime::iterator::{self, Step};
use crate::runtime::reason_to_error;
use crate::runtime::{E, ExoClass, MethodResult, when};

/// The most `bytes()`/`text()` return at once; larger blobs are read with
/// `reader()` chunk by chunk.
pub const WHOLE_READ_LIMIT: u64 = 8 * 1024 * 1024;

/// How many chunks to ask a remote reader for ahead of writing them.
const PREFETCH: usize = 4;

/// The largest chunk accepted from a remote reader.
const MAX_CHUNK: usize = 4 * 1024 * 1024;

/// A blob reference's state: the blob and the daemon whose store has it.
struct Readable {
    daemon: Rc<Daemon>,
    hash: BlobHash,
    len: u64,
}

impl Readable {
    fn read_whole(&self) -> Result<Vec<u8>, ErrorValue> {
        if self.len > WHOLE_READ_LIMIT {
            return Err(ErrorValue::range_error(format!(
                "The blob has {} bytes, more than {WHOLE_READ_LIMIT} can be read at once; read it with reader()",
                self.len
            )));
        }
        Ok(open(&self.daemon, self.hash)?.read_to_vec()?)
    }

    fn text(&self) -> MethodResult {
        String::from_utf8(self.read_whole()?)
            .map(Value::from)
            .map_err(|_| ErrorValue::type_error("the blob is not UTF-8 text"))
    }

    fn reader(&self) -> MethodResult {
        let reader = open(&self.daemon, self.hash)?;
        ExoClass::make_local(&CHUNK_READER, RefCell::new(Some(reader)))
    }
}

fn define_readable() -> Result<ExoClass<Readable>, ErrorValue> {
    ExoClass::<Readable>::builder_without_init("EndoReadable")
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
        .method("size", |cx, _| Ok(Value::Number(cx.state().len as f64)))
        .method("bytes", |cx, _| Ok(Value::bytes(cx.state().read_whole()?)))
        .method("text", |cx, _| cx.state().text())
        .method("reader", |cx, _| cx.state().reader())
        .build()
}

/// A chunk reader's state: the open blob, until its end.
type ChunkReader = RefCell<Option<BlobReader>>;

fn define_chunk_reader() -> Result<ExoClass<ChunkReader>, ErrorValue> {
    ExoClass::<ChunkReader>::builder_without_init("EndoBlobReader")
        .interface(M::interface(
            "EndoBlobReader",
            [("next", M::call([]).returns(M::record()))],
            DefaultGuards::None,
        ))
        .method("next", |cx, _| next_chunk(&cx.state()))
        .build()
}

thread_local! {
    static READABLE: Result<ExoClass<Readable>, ErrorValue> = define_readable();
    /// A reader whose `next()` gives `{done, value}` with the next chunk.
    static CHUNK_READER: Result<ExoClass<ChunkReader>, ErrorValue> = define_chunk_reader();
}

/// Makes the blob reference for content hash `hash` (hex).
pub fn make_readable_blob(daemon: &Rc<Daemon>, hash: &str) -> Result<Value, ErrorValue> {
    let hash: BlobHash = hash
        .parse()
        .map_err(|_| ErrorValue::plain("a blob formula names a malformed hash"))?;
    let len = daemon
        .store
        .read()
        .and_then(|snapshot| snapshot.blob_len(hash))?
        .ok_or_else(|| ErrorValue::plain("the blob's bytes are missing from the store"))?;
    let readable = Readable {
        daemon: Rc::clone(daemon),
        hash,
        len,
    };
    ExoClass::make_local(&READABLE, readable)
}

fn open(daemon: &Daemon, hash: BlobHash) -> Result<BlobReader, ErrorValue> {
    daemon
        .store
        .read()
        .and_then(|snapshot| snapshot.open_blob(hash))?
        .ok_or_else(|| ErrorValue::plain("the blob's bytes are missing from the store"))
}

/// The next chunk, as the iterator protocol gives it.
fn next_chunk(reader: &ChunkReader) -> MethodResult {
    let mut slot = reader.borrow_mut();
    let Some(open) = slot.as_mut() else {
        return Ok(iterator::done());
    };
    match open.next_chunk()? {
        Some(chunk) => Ok(iterator::yielded(Value::bytes(chunk))),
        None => {
            *slot = None;
            Ok(iterator::done())
        }
    }
}

/// Stores the bytes a remote reader gives (`next()` → `{done, value}` with
/// byte arrays), asking a few chunks ahead, and returns their hash.
pub async fn store_from_reader(daemon: &Daemon, reader: &Value) -> Result<BlobHash, ErrorValue> {
    let mut writer = daemon.store.blob_writer();
    let mut pending: VecDeque<Value> = (0..PREFETCH).map(|_| E(reader).call("next", list![])).collect();
    loop {
        let Some(next) = pending.pop_front() else { break };
        let step = when(&next).await.map_err(reason_to_error)?;
        let step = iterator::read_step(&step)
            .ok_or_else(|| ErrorValue::type_error("a reader's next() must give {done, value}"))?;
        match step {
            Step::Done => break,
            Step::Yielded(Value::ByteArray(bytes)) if bytes.len() <= MAX_CHUNK => {
                pending.push_back(E(reader).call("next", list![]));
                writer.write(&bytes).await?;
            }
            Step::Yielded(Value::ByteArray(_)) => {
                return Err(ErrorValue::range_error(format!(
                    "a chunk is larger than {MAX_CHUNK} bytes"
                )));
            }
            Step::Yielded(_) => return Err(ErrorValue::type_error("a reader's chunks must be byte arrays")),
        }
    }
    Ok(writer.finish().await?)
}
