//! IO channels: a subcluster's `io` section (ocap-kernel's `IOConfig`,
//! read in [`super::config`]) opened by the kernel, and the `io` kernel
//! service through which its vats use them.
//!
//! Each subcluster that declares channels gets its own IO service object,
//! handed to its bootstrap vat as `services.io` (the bootstrap vat passes
//! it on as it likes). It knows that subcluster's channels and no others:
//!
//! - `names()`: the channel names;
//! - `read(name)`: the next line, or `null` when the peer hung up (a
//!   socket) or the file has no more lines;
//! - `write(name, text)`: writes `text` as one line.
//!
//! A channel's `direction` refuses reads (`"out"`) or writes (`"in"`).
//! Channels:
//!
//! - `socket`: the kernel listens on a Unix socket at `path` (a stale
//!   socket there, one nothing listens on, is replaced; a socket another
//!   channel or program listens on, and any other file, are refused; a
//!   launch that fails closes what it opened). Lines from
//!   every connected peer queue up for `read`, in arrival order; `write`
//!   goes to the peer that connected last.
//! - `file`: `read` takes the file's lines in turn from its start (the
//!   position is kept this run only); `write` appends a line, creating the
//!   file.
//!
//! Lines are at most [`MAX_LINE_BYTES`]; a longer one from a socket peer
//! ends that peer's connection, and a vat's longer one is refused.
//!
//! The service is registered as the kernel service `io:<subcluster>`, so
//! its kref lasts across restarts like any service's: at each start the
//! kernel opens the channels of the subclusters it restores again
//! ([`Kernel::restore_io`]) before their vats come back, and baggage that
//! held the service gets the new one. A subcluster's channels close (and
//! its socket files go) when it is terminated. The paths are opened with
//! the node's own authority: whoever may launch a subcluster may name them.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::Path;
use std::rc::Rc;

use capstan_protocol::guards::DefaultGuards;
use capstan_protocol::patterns::M;
use capstan_protocol::{ErrorValue, Value};
use capstan_store::SubclusterId;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncSeekExt, AsyncWriteExt, BufReader};
use tokio::net::unix::OwnedWriteHalf;
use tokio::sync::{Mutex, mpsc};
use tokio::task::JoinHandle;

use super::config::{IO_SERVICE_PREFIX, IoChannelConfig, IoKind};
use super::{Kernel, KernelError, ServiceOptions};
use crate::runtime::args::decode;
use crate::runtime::{ExoClass, MethodResult};

/// The longest line a channel carries, bytes.
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// How many lines from socket peers may wait for `read`; past it the
/// peers wait (their sockets fill up).
const QUEUED_LINES: usize = 1024;

/// The open channels of one subcluster.
pub(super) struct IoSet {
    subcluster: String,
    channels: BTreeMap<String, Channel>,
    service_name: String,
}

struct Channel {
    config: IoChannelConfig,
    open: Open,
}

enum Open {
    Socket(SocketChannel),
    File(FileChannel),
}

struct SocketChannel {
    /// Lines from peers; `None` marks a peer that hung up.
    lines: Mutex<mpsc::Receiver<Option<String>>>,
    /// The peer that connected last.
    writer: Rc<Mutex<Option<OwnedWriteHalf>>>,
    /// The accept loop and each peer's reader.
    tasks: Rc<RefCell<Vec<JoinHandle<()>>>>,
}

struct FileChannel {
    /// Where the next read starts.
    offset: Mutex<u64>,
}

impl IoSet {
    /// Stops the sockets' tasks and removes their files. Not in `Drop`:
    /// the service object may outlive its closing, and by then a new set
    /// may listen at the same path.
    fn shut(&self) {
        for channel in self.channels.values() {
            if let Open::Socket(socket) = &channel.open {
                for task in socket.tasks.borrow_mut().drain(..) {
                    task.abort();
                }
                let _ = std::fs::remove_file(&channel.config.path);
            }
        }
    }
}

fn io_error(name: &str, message: impl std::fmt::Display) -> ErrorValue {
    ErrorValue::plain(format!("IO channel {name:?}: {message}"))
}

impl IoSet {
    fn channel(&self, name: &str) -> Result<&Channel, ErrorValue> {
        self.channels.get(name).ok_or_else(|| {
            let shown: String = name.chars().take(64).collect();
            ErrorValue::plain(format!(
                "no IO channel named {shown:?} in subcluster {}; its channels are: {}",
                self.subcluster,
                self.channels.keys().cloned().collect::<Vec<_>>().join(", ")
            ))
        })
    }

    async fn read(&self, name: &str) -> Result<Option<String>, ErrorValue> {
        let channel = self.channel(name)?;
        if !channel.config.direction.reads() {
            return Err(io_error(name, "is write-only"));
        }
        match &channel.open {
            Open::Socket(socket) => match socket.lines.lock().await.recv().await {
                Some(line) => Ok(line),
                None => Err(io_error(name, "is closed")),
            },
            Open::File(file) => {
                let mut offset = file.offset.lock().await;
                let mut opened = tokio::fs::File::open(&channel.config.path).await.map_err(|error| {
                    io_error(name, format!("cannot open {}: {error}", channel.config.path.display()))
                })?;
                opened
                    .seek(std::io::SeekFrom::Start(*offset))
                    .await
                    .map_err(|error| io_error(name, error))?;
                let mut reader = BufReader::new(opened);
                match read_line(&mut reader).await.map_err(|error| io_error(name, error))? {
                    Some((line, consumed)) => {
                        *offset += consumed as u64;
                        Ok(Some(line))
                    }
                    None => Ok(None),
                }
            }
        }
    }

    async fn write(&self, name: &str, text: &str) -> Result<(), ErrorValue> {
        let channel = self.channel(name)?;
        if !channel.config.direction.writes() {
            return Err(io_error(name, "is read-only"));
        }
        if text.len() > MAX_LINE_BYTES {
            return Err(io_error(name, format!("a line is at most {MAX_LINE_BYTES} bytes")));
        }
        if text.contains('\n') {
            return Err(io_error(
                name,
                "a line may not hold a line break; write each line on its own",
            ));
        }
        let mut line = Vec::with_capacity(text.len() + 1);
        line.extend_from_slice(text.as_bytes());
        line.push(b'\n');
        match &channel.open {
            Open::Socket(socket) => {
                let mut writer = socket.writer.lock().await;
                let Some(peer) = writer.as_mut() else {
                    return Err(io_error(name, "no peer is connected"));
                };
                if let Err(error) = peer.write_all(&line).await {
                    *writer = None;
                    return Err(io_error(name, format!("the peer is gone: {error}")));
                }
                Ok(())
            }
            Open::File(_) => {
                let mut file = tokio::fs::OpenOptions::new()
                    .append(true)
                    .create(true)
                    .open(&channel.config.path)
                    .await
                    .map_err(|error| {
                        io_error(name, format!("cannot open {}: {error}", channel.config.path.display()))
                    })?;
                file.write_all(&line).await.map_err(|error| io_error(name, error))?;
                file.flush().await.map_err(|error| io_error(name, error))
            }
        }
    }
}

/// Reads one line (without its `\n` or `\r\n`) and how many bytes it
/// took; `None` at the end. A last line without `\n` counts as a line.
async fn read_line<R: AsyncBufRead + Unpin>(reader: &mut R) -> std::io::Result<Option<(String, usize)>> {
    let mut line = Vec::new();
    let mut consumed = 0;
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            if line.is_empty() {
                return Ok(None);
            }
            break;
        }
        if let Some(at) = available.iter().position(|byte| *byte == b'\n') {
            line.extend_from_slice(&available[..at]);
            reader.consume(at + 1);
            consumed += at + 1;
            break;
        }
        let taken = available.len();
        line.extend_from_slice(available);
        reader.consume(taken);
        consumed += taken;
        if line.len() > MAX_LINE_BYTES {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("a line longer than {MAX_LINE_BYTES} bytes"),
            ));
        }
    }
    if line.len() > MAX_LINE_BYTES {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("a line longer than {MAX_LINE_BYTES} bytes"),
        ));
    }
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    Ok(Some((String::from_utf8_lossy(&line).into_owned(), consumed)))
}

/// Binds a Unix socket at `path`, replacing a stale socket (one nothing
/// listens on) but no other kind of file.
fn bind_socket(path: &Path) -> std::io::Result<tokio::net::UnixListener> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::symlink_metadata(path) {
        Ok(metadata) if metadata.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::AddrInUse,
                    "something listens on that socket already",
                ));
            }
            std::fs::remove_file(path)?
        }
        Ok(_) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "a file that is not a socket is there",
            ));
        }
        Err(_) => {}
    }
    tokio::net::UnixListener::bind(path)
}

impl Kernel {
    /// Opens the channels of subcluster `id` and registers its IO service;
    /// nothing when it declares none.
    pub(super) fn open_io(
        &self,
        id: &SubclusterId,
        configs: &BTreeMap<String, IoChannelConfig>,
    ) -> Result<(), KernelError> {
        if configs.is_empty() {
            return Ok(());
        }
        self.close_io(id);
        let service_name = format!("{IO_SERVICE_PREFIX}{id}");
        let mut set = IoSet {
            subcluster: id.to_string(),
            channels: BTreeMap::new(),
            service_name: service_name.clone(),
        };
        for (name, config) in configs {
            match self.open_channel(name, config, &set) {
                Ok(open) => {
                    set.channels.insert(
                        name.clone(),
                        Channel {
                            config: config.clone(),
                            open,
                        },
                    );
                }
                Err(error) => {
                    // What opened before this one closes again.
                    set.shut();
                    return Err(KernelError::Failed(format!(
                        "IO channel {name:?} ({}): {error}",
                        config.path.display()
                    )));
                }
            }
        }
        let set = Rc::new(set);
        let object = make_io_service(&set).map_err(|error| KernelError::Failed(error.message.to_string()))?;
        self.register_kernel_service_object(&service_name, object, ServiceOptions { system_only: true })?;
        self.io.borrow_mut().insert(id.clone(), set);
        Ok(())
    }

    /// Opens one channel; `opening` holds the subcluster's channels opened
    /// so far. Two open socket channels never share a path.
    fn open_channel(&self, name: &str, config: &IoChannelConfig, opening: &IoSet) -> std::io::Result<Open> {
        match config.kind {
            IoKind::Socket => {
                let open_sets = self.io.borrow();
                let taken = open_sets
                    .values()
                    .map(|set| &**set)
                    .chain([opening])
                    .flat_map(|set| set.channels.values())
                    .any(|channel| matches!(channel.open, Open::Socket(_)) && channel.config.path == config.path);
                if taken {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::AddrInUse,
                        "another IO channel listens there",
                    ));
                }
                drop(open_sets);
                Ok(Open::Socket(self.open_socket(name, &config.path)?))
            }
            IoKind::File => {
                if config.direction.writes() {
                    std::fs::OpenOptions::new()
                        .append(true)
                        .create(true)
                        .open(&config.path)?;
                } else {
                    std::fs::File::open(&config.path)?;
                }
                Ok(Open::File(FileChannel { offset: Mutex::new(0) }))
            }
        }
    }

    fn open_socket(&self, name: &str, path: &Path) -> std::io::Result<SocketChannel> {
        let listener = bind_socket(path)?;
        let (sender, receiver) = mpsc::channel(QUEUED_LINES);
        let writer: Rc<Mutex<Option<OwnedWriteHalf>>> = Rc::new(Mutex::new(None));
        let tasks: Rc<RefCell<Vec<JoinHandle<()>>>> = Rc::new(RefCell::new(Vec::new()));
        let accept = {
            let (writer, tasks, vat) = (Rc::clone(&writer), Rc::clone(&tasks), self.vat.clone());
            let name = name.to_string();
            async move {
                loop {
                    let stream = match listener.accept().await {
                        Ok((stream, _)) => stream,
                        Err(error) => {
                            tracing::warn!(channel = %name, %error, "an IO socket stopped accepting");
                            return;
                        }
                    };
                    let (read_half, write_half) = stream.into_split();
                    *writer.lock().await = Some(write_half);
                    let sender = sender.clone();
                    let name = name.clone();
                    let reader = vat.spawn(async move {
                        let mut reader = BufReader::new(read_half);
                        loop {
                            match read_line(&mut reader).await {
                                Ok(Some((line, _))) => {
                                    if sender.send(Some(line)).await.is_err() {
                                        return;
                                    }
                                }
                                Ok(None) => break,
                                Err(error) => {
                                    tracing::warn!(channel = %name, %error, "an IO socket peer was cut off");
                                    break;
                                }
                            }
                        }
                        let _ = sender.send(None).await;
                    });
                    let mut tasks = tasks.borrow_mut();
                    tasks.retain(|task| !task.is_finished());
                    tasks.push(reader);
                }
            }
        };
        let accepting = self.vat.spawn(accept);
        tasks.borrow_mut().push(accepting);
        Ok(SocketChannel {
            lines: Mutex::new(receiver),
            writer,
            tasks,
        })
    }

    /// Closes the channels of subcluster `id` (its sockets stop listening
    /// and their files go) and forgets its IO service.
    pub(super) fn close_io(&self, id: &SubclusterId) {
        let removed = self.io.borrow_mut().remove(id);
        if let Some(set) = removed {
            set.shut();
            self.services.borrow_mut().remove(&set.service_name);
        }
    }

    /// Opens again the channels of every subcluster restored at start; a
    /// channel that cannot be opened is logged, and its subcluster's IO
    /// service is missing this run.
    pub(super) fn restore_io(&self) {
        let declared: Vec<(SubclusterId, BTreeMap<String, IoChannelConfig>)> = self
            .subclusters
            .borrow()
            .iter()
            .filter(|(_, record)| record.bootstrapped && !record.io.is_empty())
            .map(|(id, record)| (id.clone(), record.io.clone()))
            .collect();
        for (id, configs) in declared {
            if let Err(error) = self.open_io(&id, &configs) {
                tracing::warn!(subcluster = %id, %error, "a subcluster's IO channels could not be opened again");
            }
        }
    }

    /// The IO service of subcluster `id`, if it declared channels.
    pub(super) fn io_service(&self, id: &SubclusterId) -> Option<Value> {
        let name = self.io.borrow().get(id).map(|set| set.service_name.clone())?;
        self.services.borrow().get(&name).map(|service| service.object.clone())
    }
}

fn make_io_service(set: &Rc<IoSet>) -> MethodResult {
    ExoClass::<Rc<IoSet>>::builder_without_init("IoService")
        .interface(M::interface(
            "IoService",
            [
                ("names", M::call([]).returns(M::array())),
                ("read", M::call_when([M::string()]).returns(M::any())),
                ("write", M::call_when([M::string(), M::string()]).returns_undefined()),
            ],
            DefaultGuards::None,
        ))
        .method("names", |cx, _| {
            Ok(Value::array(
                cx.state().channels.keys().map(|name| Value::from(name.as_str())),
            ))
        })
        .async_method("read", |cx, args| async move {
            let (name,): (String,) = decode(args)?;
            // A clone, so no borrow of the state is held while waiting.
            let set = Rc::clone(&cx.state());
            Ok(match set.read(&name).await? {
                Some(line) => Value::from(line.as_str()),
                None => Value::Null,
            })
        })
        .async_method("write", |cx, args| async move {
            let (name, text): (String, String) = decode(args)?;
            let set = Rc::clone(&cx.state());
            set.write(&name, &text).await?;
            Ok(Value::Undefined)
        })
        .build()?
        .make_with(Rc::clone(set))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lines_are_read_bounded_and_without_their_endings() {
        let mut input: &[u8] = b"one\r\ntwo\nlast";
        let mut reader = BufReader::new(&mut input);
        assert_eq!(read_line(&mut reader).await.unwrap(), Some(("one".into(), 5)));
        assert_eq!(read_line(&mut reader).await.unwrap(), Some(("two".into(), 4)));
        assert_eq!(read_line(&mut reader).await.unwrap(), Some(("last".into(), 4)));
        assert_eq!(read_line(&mut reader).await.unwrap(), None);
        let long = vec![b'x'; MAX_LINE_BYTES + 10];
        let mut input: &[u8] = &long;
        let mut reader = BufReader::new(&mut input);
        assert!(read_line(&mut reader).await.is_err());
    }

    #[test]
    fn only_a_stale_socket_is_replaced() {
        let dir = std::env::temp_dir().join(format!("capstan-io-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("plain");
        std::fs::write(&file, "keep me").unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            assert!(bind_socket(&file).is_err());
            assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me");
            let socket = dir.join("s");
            drop(bind_socket(&socket).unwrap());
            // The listener is gone, its file stays: bound again.
            assert!(bind_socket(&socket).is_ok());
        });
        let _ = std::fs::remove_dir_all(&dir);
    }
}
