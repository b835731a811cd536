//! Honest limits for the benchmarks: bare programs between separate
//! processes on the transports Capstan uses, with none of its layers.
//!
//! Every bare peer is a single-threaded program: its libp2p swarm (TCP,
//! Noise, yamux, as the node's) and its streams and pipes are driven by one
//! current-thread runtime, so each stream is read on the thread that owns
//! it. Frames are [`FRAME`] bytes; the first says whether the far end
//! echoes the frame ([`ECHO`]) or swallows it.
//!
//! - [`BareP2p`]: this process dials a `p2p-echo` peer process; a
//!   ping-pong of one frame, and a burst of frames the peer swallows
//!   (until it echoes the last).
//! - [`BareRelay`]: a frame through four processes and three links, as a
//!   call from a worker on one node to a worker on another goes: this
//!   process → pipe → `relay-client` → libp2p → `relay-server` → pipe →
//!   `pipe-echo`, and back.
//!
//! A benchmark program serves the helper roles by calling [`serve_if_asked`]
//! first thing in `main`: the helpers are that same program re-executed
//! with [`ROLE_ARG`].

use std::io::{BufRead, BufReader as StdBufReader, Read, Write};
use std::os::fd::AsFd;
use std::process::Stdio;
use std::time::{Duration, Instant};

use futures::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use futures::{AsyncRead, AsyncWrite, StreamExt};
use libp2p::swarm::SwarmEvent;
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::{Multiaddr, PeerId, StreamProtocol, Swarm, noise, tcp, yamux};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::bench::{Helper, spawn_self};

/// The size of every bare frame (a CapTP call of a small method is about
/// this size on the wire).
pub const FRAME: usize = 64;
/// A frame's first byte: the far end echoes it.
pub const ECHO: u8 = b'P';
/// A frame's first byte: the far end swallows it.
pub const SWALLOW: u8 = b'B';

/// The argument that makes a benchmark program a bare helper; the role
/// follows it.
pub const ROLE_ARG: &str = "--bare-peer";

const PROTOCOL: StreamProtocol = StreamProtocol::new("/capstan-bench/bare/1");

type BareResult<T> = Result<T, Box<dyn std::error::Error>>;

/// If this process was started as a bare helper, serves that role and
/// exits; otherwise returns.
pub fn serve_if_asked() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) != Some(ROLE_ARG) {
        return;
    }
    let outcome = match (args.get(2).map(String::as_str), args.get(3), args.get(4)) {
        (Some("p2p-echo"), _, _) => on_one_thread(p2p_echo()),
        (Some("pipe-echo"), _, _) => pipe_echo(),
        (Some("relay-server"), _, _) => on_one_thread(relay_server()),
        (Some("relay-client"), Some(peer), Some(address)) => on_one_thread(relay_client(peer, address)),
        _ => Err(format!("unknown bare role: {:?}", &args[2..]).into()),
    };
    if let Err(error) = outcome {
        eprintln!("bare peer: {error}");
        std::process::exit(1);
    }
    std::process::exit(0);
}

fn runtime() -> BareResult<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread().enable_all().build()?)
}

fn on_one_thread(work: impl Future<Output = BareResult<()>>) -> BareResult<()> {
    runtime()?.block_on(work)
}

/// A swarm with only streams, on TCP with Noise and yamux (as the node's).
fn swarm() -> BareResult<Swarm<libp2p_stream::Behaviour>> {
    Ok(libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )?
        .with_behaviour(|_| libp2p_stream::Behaviour::new())?
        .with_swarm_config(|config| config.with_idle_connection_timeout(Duration::from_secs(3600)))
        .build())
}

/// Listens on loopback, prints `PEER ADDRESS` on standard output, then
/// drives the swarm on this thread; returns the inbound streams.
async fn listen() -> BareResult<libp2p_stream::IncomingStreams> {
    let mut swarm = swarm()?;
    swarm.listen_on("/ip4/127.0.0.1/tcp/0".parse()?)?;
    let incoming = swarm.behaviour().new_control().accept(PROTOCOL)?;
    let address = loop {
        if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
            break address;
        }
    };
    let mut out = std::io::stdout().lock();
    writeln!(out, "{} {address}", swarm.local_peer_id())?;
    out.flush()?;
    tokio::spawn(drive(swarm));
    Ok(incoming)
}

async fn drive(mut swarm: Swarm<libp2p_stream::Behaviour>) {
    loop {
        swarm.select_next_some().await;
    }
}

/// Dials `peer` at `address` and opens one stream to it; the swarm is
/// then driven by a task of the current runtime.
async fn dial(peer: PeerId, address: Multiaddr) -> BareResult<libp2p::Stream> {
    let mut swarm = swarm()?;
    swarm.dial(DialOpts::peer_id(peer).addresses(vec![address]).build())?;
    loop {
        match swarm.select_next_some().await {
            SwarmEvent::ConnectionEstablished { .. } => break,
            SwarmEvent::OutgoingConnectionError { error, .. } => return Err(error.into()),
            _ => {}
        }
    }
    let mut control = swarm.behaviour().new_control();
    tokio::spawn(drive(swarm));
    Ok(control.open_stream(peer, PROTOCOL).await?)
}

/// Echoes the [`ECHO`] frames of each inbound stream.
async fn p2p_echo() -> BareResult<()> {
    let mut incoming = listen().await?;
    while let Some((_, stream)) = incoming.next().await {
        tokio::spawn(async move {
            let (reader, mut writer) = stream.split();
            let mut reader = BufReader::with_capacity(64 * 1024, reader);
            let mut frame = [0u8; FRAME];
            while reader.read_exact(&mut frame).await.is_ok() {
                if frame[0] == ECHO && (writer.write_all(&frame).await.is_err() || writer.flush().await.is_err()) {
                    return;
                }
            }
        });
    }
    Ok(())
}

/// Echoes the [`ECHO`] frames of standard input on standard output, with
/// blocking reads on this one thread (as a worker's pipe is the one thing
/// it waits on). Ends at the end of input.
fn pipe_echo() -> BareResult<()> {
    let mut input = StdBufReader::with_capacity(64 * 1024, std::io::stdin().lock());
    let mut output = std::io::stdout().lock();
    let mut frame = [0u8; FRAME];
    while input.read_exact(&mut frame).is_ok() {
        if frame[0] == ECHO {
            output.write_all(&frame)?;
            output.flush()?;
        }
    }
    Ok(())
}

/// Takes one stream and relays it both ways through a `pipe-echo` child.
async fn relay_server() -> BareResult<()> {
    let mut incoming = listen().await?;
    let mut child = tokio::process::Command::new(std::env::current_exe()?)
        .args([ROLE_ARG, "pipe-echo"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let to_child = child.stdin.take().ok_or("no pipe to the echo")?;
    let from_child = child.stdout.take().ok_or("no pipe from the echo")?;
    let Some((_, stream)) = incoming.next().await else {
        return Ok(());
    };
    let (reader, writer) = stream.split();
    let inward = tokio::spawn(stream_to_pipe(reader, to_child));
    pipe_to_stream(from_child, writer).await;
    inward.abort();
    Ok(())
}

/// Dials the relay server and relays standard input to it and its answers
/// to standard output, both pipes read on this thread.
async fn relay_client(peer: &str, address: &str) -> BareResult<()> {
    let stream = dial(peer.parse()?, address.parse()?).await?;
    let stdin = tokio::net::unix::pipe::Receiver::from_owned_fd(std::io::stdin().as_fd().try_clone_to_owned()?)?;
    let stdout = tokio::net::unix::pipe::Sender::from_owned_fd(std::io::stdout().as_fd().try_clone_to_owned()?)?;
    let (reader, writer) = stream.split();
    let outward = tokio::spawn(pipe_to_stream(stdin, writer));
    stream_to_pipe(reader, stdout).await;
    outward.abort();
    Ok(())
}

/// Copies what arrives on a stream into a pipe, as it comes.
async fn stream_to_pipe(mut reader: impl AsyncRead + Unpin, mut pipe: impl tokio::io::AsyncWrite + Unpin) {
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        match reader.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(read) => {
                if pipe.write_all(&buffer[..read]).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Copies what arrives on a pipe onto a stream, as it comes.
async fn pipe_to_stream(mut pipe: impl tokio::io::AsyncRead + Unpin, mut writer: impl AsyncWrite + Unpin) {
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        match pipe.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(read) => {
                if writer.write_all(&buffer[..read]).await.is_err() || writer.flush().await.is_err() {
                    return;
                }
            }
        }
    }
}

fn frame(kind: u8) -> [u8; FRAME] {
    let mut frame = [0u8; FRAME];
    frame[0] = kind;
    frame
}

/// Reads the `PEER ADDRESS` line a listening helper prints.
fn listening(helper: &mut Helper) -> BareResult<(PeerId, Multiaddr, String)> {
    let stdout = helper.child.stdout.as_mut().ok_or("no pipe from the helper")?;
    let mut line = String::new();
    StdBufReader::new(stdout).read_line(&mut line)?;
    let (peer, address) = line.trim().split_once(' ').ok_or("the helper printed no address")?;
    Ok((peer.parse()?, address.parse()?, line.trim().to_string()))
}

/// This process as a libp2p client of a bare `p2p-echo` peer process.
pub struct BareP2p {
    runtime: tokio::runtime::Runtime,
    stream: libp2p::Stream,
    _peer: Helper,
}

impl BareP2p {
    pub fn start() -> BareResult<BareP2p> {
        let mut peer = spawn_self(&[ROLE_ARG, "p2p-echo"])?;
        let (id, address, _) = listening(&mut peer)?;
        let runtime = runtime()?;
        let stream = runtime.block_on(dial(id, address))?;
        Ok(BareP2p {
            runtime,
            stream,
            _peer: peer,
        })
    }

    /// Times `rounds` ping-pongs of one frame, after as many to warm up.
    pub fn ping_pong(&mut self, rounds: usize) -> BareResult<Vec<Duration>> {
        let stream = &mut self.stream;
        self.runtime.block_on(async {
            let ping = frame(ECHO);
            let mut echoed = [0u8; FRAME];
            let mut times = Vec::with_capacity(rounds);
            for round in 0..2 * rounds {
                let began = Instant::now();
                stream.write_all(&ping).await?;
                stream.flush().await?;
                stream.read_exact(&mut echoed).await?;
                if round >= rounds {
                    times.push(began.elapsed());
                }
            }
            Ok(times)
        })
    }

    /// The time for `count` frames the peer swallows, written as one batch
    /// (as a session writes a turn's output), until the peer echoes one
    /// more after them.
    pub fn burst(&mut self, count: usize) -> BareResult<Duration> {
        let stream = &mut self.stream;
        self.runtime.block_on(async {
            let mut batch = Vec::with_capacity((count + 1) * FRAME);
            for _ in 0..count {
                batch.extend_from_slice(&frame(SWALLOW));
            }
            batch.extend_from_slice(&frame(ECHO));
            let mut echoed = [0u8; FRAME];
            let began = Instant::now();
            stream.write_all(&batch).await?;
            stream.flush().await?;
            stream.read_exact(&mut echoed).await?;
            Ok(began.elapsed())
        })
    }
}

/// A frame relayed through four processes and three links: this process,
/// a pipe, a `relay-client`, libp2p, a `relay-server`, a pipe, a
/// `pipe-echo`.
pub struct BareRelay {
    client: Helper,
    server: Helper,
}

impl BareRelay {
    pub fn start() -> BareResult<BareRelay> {
        let mut server = spawn_self(&[ROLE_ARG, "relay-server"])?;
        let (peer, address, _) = listening(&mut server)?;
        let client = spawn_self(&[ROLE_ARG, "relay-client", &peer.to_string(), &address.to_string()])?;
        Ok(BareRelay { client, server })
    }

    /// Times `rounds` round trips of one frame, after as many to warm up.
    pub fn round_trip(&mut self, rounds: usize) -> BareResult<Vec<Duration>> {
        let ping = frame(ECHO);
        let mut echoed = [0u8; FRAME];
        let mut times = Vec::with_capacity(rounds);
        let (input, output) = self.pipes()?;
        for round in 0..2 * rounds {
            let began = Instant::now();
            input.write_all(&ping)?;
            input.flush()?;
            output.read_exact(&mut echoed)?;
            if round >= rounds {
                times.push(began.elapsed());
            }
        }
        Ok(times)
    }

    /// `count` frames relayed to the far end, which swallows them, then
    /// one it echoes: the time until the echo is back.
    pub fn burst(&mut self, count: usize) -> BareResult<Duration> {
        let mut batch = Vec::with_capacity((count + 1) * FRAME);
        for _ in 0..count {
            batch.extend_from_slice(&frame(SWALLOW));
        }
        batch.extend_from_slice(&frame(ECHO));
        let mut echoed = [0u8; FRAME];
        let (input, output) = self.pipes()?;
        let began = Instant::now();
        input.write_all(&batch)?;
        input.flush()?;
        output.read_exact(&mut echoed)?;
        Ok(began.elapsed())
    }

    /// The relay's processes with what each does: the client, the
    /// server and its pipe echo (the server starts the echo, so it is
    /// found once the server is listening).
    pub fn processes(&self) -> Vec<(String, u32)> {
        let server = self.server.child.id();
        let mut processes = vec![
            ("relay client".to_string(), self.client.child.id()),
            ("relay server".to_string(), server),
        ];
        processes.extend(
            crate::bench::children_of(server)
                .into_iter()
                .map(|echo| ("pipe echo".to_string(), echo)),
        );
        processes
    }

    fn pipes(&mut self) -> BareResult<(&mut std::process::ChildStdin, &mut std::process::ChildStdout)> {
        let child = &mut self.client.child;
        Ok((
            child.stdin.as_mut().ok_or("no pipe to the relay")?,
            child.stdout.as_mut().ok_or("no pipe from the relay")?,
        ))
    }
}

/// Appends a small record to a plain file and fdatasyncs it, `count`
/// times, in `dir` (so on the disk the store uses): the time for each.
pub fn append_and_fdatasync(dir: &std::path::Path, count: usize) -> std::io::Result<Vec<Duration>> {
    std::fs::create_dir_all(dir)?;
    let mut file = std::fs::File::create(dir.join("bare-append"))?;
    let mut times = Vec::with_capacity(count);
    for index in 0..count {
        let began = Instant::now();
        file.write_all(format!("record {index}\n").as_bytes())?;
        file.sync_data()?;
        times.push(began.elapsed());
    }
    Ok(times)
}
