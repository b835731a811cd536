//! Eventual sends through CapTP on a libp2p stream, beside the honest
//! limits of issue 19: a bare libp2p program between two processes (TCP,
//! Noise, yamux, 64-byte frames, each stream read on the thread that owns
//! it; see `capstan_tests::bare`). The CapTP figures run two nodes in one
//! process, each a vat thread with its swarm on the vat's runtime, as the
//! daemon runs it, joined by one TCP connection (Noise + yamux) on
//! loopback; one stream carries raw frames through the same threads (a
//! contrast that shows the cost of the protocol alone), another a CapTP
//! session.
//!
//! Then the memory an idle peer costs the node serving it: a server in a
//! child process of its own (so nothing else grows its heap), 100 client
//! networks here, each one peer with one connection; the server's RSS
//! growth per peer with an idle CapTP session, beside the growth per peer
//! with a bare connection and an open stream but no session.
//!
//! `cargo run --release -p capstan-tests --example net_bench`

use std::cell::Cell;
use std::rc::Rc;
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use capstan_node::net::{Multiaddr, NetConfig, Network, StreamReader, StreamWriter};
use capstan_node::runtime::{ConnectionHandle, E, Exo, Vat, connect, when};
use capstan_protocol::captp::Limits;
use capstan_protocol::{Value, list};
use capstan_store::NodeId;
use capstan_tests::bare::BareP2p;
use capstan_tests::bench::{Better, Figure, micros, millis, per_second, task_cpu_time};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};

const ROUND_TRIPS: usize = 2_000;
const WARM_UP: usize = 200;
const BURST: usize = 100_000;
const CHAIN: usize = 10;
const CHAINS: usize = 300;

/// Raw frames: a length byte, then the payload; the payload's first byte
/// says what the echo side does with it.
const FRAME_PAYLOAD: usize = 31;
const ECHO: u8 = b'P';
const SWALLOW: u8 = b'B';

/// The first byte a client writes on a stream says what it is for.
const RAW_STREAM: u8 = b'R';
const CAPTP_STREAM: u8 = b'C';

/// How many peers the memory figure connects.
const IDLE_PEERS: usize = 100;

/// The argument that makes this program the server of the memory figure.
const SERVE_IDLE: &str = "--serve-idle";

/// The argument that leaves out the memory figure (the runner of every
/// benchmark, `bench`, passes it).
const CALLS_ONLY: &str = "--calls-only";

type BenchResult<T> = Result<T, Box<dyn std::error::Error>>;

fn main() -> BenchResult<()> {
    capstan_tests::bare::serve_if_asked();
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(SERVE_IDLE) {
        let with_session = args.get(2).map(String::as_str) == Some("session");
        return serve_idle(with_session);
    }
    bench_calls()?;
    if args.get(1).map(String::as_str) == Some(CALLS_ONLY) {
        return Ok(());
    }
    println!();
    bench_idle_memory()
}

/// The honest limits, between two processes: a ping-pong's mean and a
/// burst's time.
struct BareLimits {
    round_trip: Duration,
    burst: Duration,
}

fn bare_limits() -> BenchResult<BareLimits> {
    let mut bare = BareP2p::start()?;
    let mut times = bare.ping_pong(ROUND_TRIPS)?;
    let round_trip = Summary::of(&mut times).mean;
    bare.burst(BURST)?;
    let burst = bare.burst(BURST)?;
    Ok(BareLimits { round_trip, burst })
}

fn bench_calls() -> BenchResult<()> {
    let limits = bare_limits()?;
    let (ready_sender, ready) = std_mpsc::channel();
    let server = std::thread::Builder::new()
        .name("bob-vat".to_string())
        .spawn(move || run_bob(ready_sender))?;
    let (bob, bob_addresses) = ready.recv()??;
    let alice = Vat::new();
    let outcome = alice.run_until(run_alice(bob, bob_addresses, limits));
    // Bob's thread ends when its network sees alice go; no need to wait.
    drop(server);
    outcome
}

// ------------------------------------------------------------------- bob

fn run_bob(ready: std_mpsc::Sender<Result<(NodeId, Vec<Multiaddr>), String>>) {
    let vat = Vat::new();
    vat.run_until(async {
        let listen: Multiaddr = match "/ip4/127.0.0.1/tcp/0".parse() {
            Ok(listen) => listen,
            Err(error) => {
                let _ = ready.send(Err(format!("bad listen address: {error}")));
                return;
            }
        };
        let (network, mut inbound) =
            match Network::start(&[2; 32], as_the_node_runs_it(NetConfig::listening_on([listen]))).await {
                Ok(started) => started,
                Err(error) => {
                    let _ = ready.send(Err(error.to_string()));
                    return;
                }
            };
        let _ = ready.send(Ok((network.node_id(), network.listen_addresses())));
        let bootstrap = bench_object();
        while let Some(stream) = inbound.next().await {
            let (server, bootstrap) = (vat.clone(), bootstrap.clone());
            vat.spawn(async move {
                let mut reader = stream.reader;
                let mut kind = [0u8; 1];
                if reader.read_exact(&mut kind).await.is_err() {
                    return;
                }
                match kind[0] {
                    RAW_STREAM => echo(reader, stream.writer).await,
                    CAPTP_STREAM => {
                        let session = connect(&server, reader, stream.writer, Some(bootstrap), Limits::default());
                        session.closed().await;
                    }
                    _ => {}
                }
            });
        }
        drop(network);
    });
}

/// Echoes frames marked [`ECHO`]; swallows the rest.
async fn echo(reader: StreamReader, mut writer: StreamWriter) {
    let mut reader = BufReader::with_capacity(64 * 1024, reader);
    let mut frame = [0u8; 1 + FRAME_PAYLOAD];
    loop {
        if reader.read_exact(&mut frame[..1]).await.is_err() {
            return;
        }
        let length = usize::from(frame[0]).min(FRAME_PAYLOAD);
        if reader.read_exact(&mut frame[1..1 + length]).await.is_err() {
            return;
        }
        let echoed = frame.get(1) == Some(&ECHO);
        if echoed && (writer.write_all(&frame[..1 + length]).await.is_err() || writer.flush().await.is_err()) {
            return;
        }
    }
}

fn bench_object() -> Value {
    let ticks = Rc::new(Cell::new(0u64));
    let counted = ticks.clone();
    let first_link = chain_links(CHAIN);
    let made = Exo::new("Bench")
        .method("ping", |_, _| Ok(Value::Undefined))
        .method("tick", move |_, _| {
            ticks.set(ticks.get() + 1);
            Ok(Value::Undefined)
        })
        .method("ticks", move |_, _| Ok(Value::Number(counted.get() as f64)))
        .method("link", move |_, _| Ok(first_link.clone()))
        .make();
    made.unwrap_or(Value::Undefined)
}

/// Links 0..=`last`, each one's `next()` giving the one after, made once:
/// making an exo costs more than a call, and the chain should measure calls.
fn chain_links(last: usize) -> Value {
    let mut next: Option<Value> = None;
    for depth in (0..=last).rev() {
        let following = next.take();
        let link = Exo::new("Link")
            .method("next", move |_, _| Ok(following.clone().unwrap_or(Value::Undefined)))
            .method("depth", move |_, _| Ok(Value::Number(depth as f64)))
            .make()
            .unwrap_or(Value::Undefined);
        next = Some(link);
    }
    next.unwrap_or(Value::Undefined)
}

// ----------------------------------------------------------------- alice

/// `config` with the swarm on the vat's own runtime, as the daemon runs it.
fn as_the_node_runs_it(config: NetConfig) -> NetConfig {
    NetConfig {
        on_callers_runtime: true,
        ..config
    }
}

async fn run_alice(bob: NodeId, bob_addresses: Vec<Multiaddr>, limits: BareLimits) -> BenchResult<()> {
    let (network, _inbound) = Network::start(&[1; 32], as_the_node_runs_it(NetConfig::default())).await?;
    let (raw_reader, mut raw_writer) = network.open_stream(&bob, &bob_addresses).await?;
    raw_writer.write_all(&[RAW_STREAM]).await?;
    let (captp_reader, mut captp_writer) = network.open_stream(&bob, &[]).await?;
    captp_writer.write_all(&[CAPTP_STREAM]).await?;
    let vat = Vat::current().ok_or("no vat")?;
    let session = connect(&vat, captp_reader, captp_writer, None, Limits::default());
    let bench = session.bootstrap();
    let mut raw = RawClient {
        reader: BufReader::with_capacity(64 * 1024, raw_reader),
        writer: raw_writer,
    };

    println!("net_bench: two nodes in one process, one TCP connection on loopback (Noise + yamux);");
    println!("each node is one vat thread, its swarm on the vat's runtime (as the daemon runs it).");
    println!("connected peers of alice: {}", network.connected_peers().len());
    println!();

    // Round trips.
    for _ in 0..WARM_UP {
        raw.ping().await?;
        when(&E(&bench).call("ping", list![]))
            .await
            .map_err(|_| "ping failed")?;
    }
    let mut raw_times = Vec::with_capacity(ROUND_TRIPS);
    let sleeps_before = thread_sleeps();
    for _ in 0..ROUND_TRIPS {
        let began = Instant::now();
        raw.ping().await?;
        raw_times.push(began.elapsed());
    }
    let raw_sleeps = sleeps_per_round_trip(sleeps_before, thread_sleeps());
    let mut captp_times = Vec::with_capacity(ROUND_TRIPS);
    let sleeps_before = thread_sleeps();
    for _ in 0..ROUND_TRIPS {
        let began = Instant::now();
        when(&E(&bench).call("ping", list![]))
            .await
            .map_err(|_| "ping failed")?;
        captp_times.push(began.elapsed());
    }
    let captp_sleeps = sleeps_per_round_trip(sleeps_before, thread_sleeps());
    let raw_round_trip = Summary::of(&mut raw_times);
    let captp_round_trip = Summary::of(&mut captp_times);
    println!("round trip, mean / median over {ROUND_TRIPS}:");
    println!(
        "  bare libp2p ping-pong between two processes (the limit) {:>8.1} µs",
        micros(limits.round_trip)
    );
    println!(
        "  raw {}-byte frame through the nodes' threads (contrast) {:>8.1} µs / {:>8.1} µs",
        1 + FRAME_PAYLOAD,
        micros(raw_round_trip.mean),
        micros(raw_round_trip.median)
    );
    println!(
        "  E(bench).ping() through CapTP                  {:>8.1} µs / {:>8.1} µs   {:.2}× the limit",
        micros(captp_round_trip.mean),
        micros(captp_round_trip.median),
        ratio(captp_round_trip.mean, limits.round_trip)
    );
    if let (Some(raw_sleeps), Some(captp_sleeps)) = (raw_sleeps, captp_sleeps) {
        println!("times a thread of this process slept, per round trip (the bare program's two processes: 2):");
        println!("  raw frame {raw_sleeps:.2}, E() {captp_sleeps:.2}");
    }
    Figure::new(
        "1. E() round trip, node to node (Rust)",
        micros(captp_round_trip.mean),
        "µs",
        Better::Lower,
    )
    .limit(micros(limits.round_trip))
    .target("≤ 1.25× bare libp2p ping-pong")
    .report();
    println!();

    // Bursts.
    let began = Instant::now();
    raw.burst(BURST).await?;
    let raw_burst = began.elapsed();
    let before = ticks(&bench).await?;
    let cpu_before = vat_threads_cpu();
    let began = Instant::now();
    for _ in 0..BURST {
        E(&bench).send_only("tick", list![]);
    }
    let sending_turn = began.elapsed();
    let after = ticks(&bench).await?;
    let captp_burst = began.elapsed();
    let cpu_after = vat_threads_cpu();
    if after - before != BURST as f64 {
        return Err(format!("bob counted {} ticks, not {BURST}", after - before).into());
    }
    println!("burst of {BURST}, until the peer has taken the last:");
    println!(
        "  bare 64-byte frames between two processes (the limit) {:>8.1} ms   {:>6.2} M/s",
        millis(limits.burst),
        per_second(BURST, limits.burst) / 1e6
    );
    println!(
        "  raw {}-byte frames through the nodes' threads (contrast) {:>8.1} ms   {:>6.2} M/s",
        1 + FRAME_PAYLOAD,
        millis(raw_burst),
        per_second(BURST, raw_burst) / 1e6
    );
    println!(
        "  E.sendOnly(bench).tick(), unawaited            {:>8.1} ms   {:>6.2} M/s   {:.2}× the limit's time",
        millis(captp_burst),
        per_second(BURST, captp_burst) / 1e6,
        ratio(captp_burst, limits.burst)
    );
    if let (Some((sender_before, receiver_before)), Some((sender_after, receiver_after))) = (cpu_before, cpu_after) {
        let sends = u32::try_from(BURST).unwrap_or(u32::MAX);
        println!(
            "  CPU time per send: alice's vat thread {:.0} ns, bob's {:.0} ns; the sending turn took {:.1} ms",
            nanos((sender_after.saturating_sub(sender_before)) / sends),
            nanos((receiver_after.saturating_sub(receiver_before)) / sends),
            millis(sending_turn)
        );
        println!("  (alice's swarm runs on her vat thread: the turn's frames reach TCP once it ends)");
    }
    Figure::new(
        "1. burst of unawaited sends, node to node (Rust)",
        per_second(BURST, captp_burst) / 1e6,
        "M/s",
        Better::Higher,
    )
    .limit(per_second(BURST, limits.burst) / 1e6)
    .target("≥ 1.5 M/s and ≥ 0.40× bare frames")
    .report();
    println!();

    // Chains.
    let mut pipelined = Vec::with_capacity(CHAINS);
    let mut awaited = Vec::with_capacity(CHAINS);
    for _ in 0..CHAINS {
        let began = Instant::now();
        let mut current = E(&bench).call("link", list![]);
        for _ in 0..CHAIN {
            current = E(&current).call("next", list![]);
        }
        let depth = when(&E(&current).call("depth", list![]))
            .await
            .map_err(|_| "chain failed")?;
        pipelined.push(began.elapsed());
        if depth.as_number() != Some(CHAIN as f64) {
            return Err(format!("the chain reached depth {depth:?}").into());
        }
        let began = Instant::now();
        let mut current = when(&E(&bench).call("link", list![]))
            .await
            .map_err(|_| "link failed")?;
        for _ in 0..CHAIN {
            current = when(&E(&current).call("next", list![]))
                .await
                .map_err(|_| "next failed")?;
        }
        when(&E(&current).call("depth", list![]))
            .await
            .map_err(|_| "depth failed")?;
        awaited.push(began.elapsed());
    }
    let pipelined = Summary::of(&mut pipelined);
    let awaited = Summary::of(&mut awaited);
    println!("a chain of {CHAIN} dependent calls (plus link() and depth()), mean / median over {CHAINS}:");
    println!(
        "  one E() round trip (the limit)                 {:>8.1} µs / {:>8.1} µs",
        micros(captp_round_trip.mean),
        micros(captp_round_trip.median)
    );
    println!(
        "  pipelined, one await at the end                {:>8.1} µs / {:>8.1} µs   {:.2}× the limit",
        micros(pipelined.mean),
        micros(pipelined.median),
        ratio(pipelined.mean, captp_round_trip.mean)
    );
    Figure::new(
        "3. pipelined chain of 10 across nodes",
        micros(pipelined.mean),
        "µs",
        Better::Lower,
    )
    .limit(micros(captp_round_trip.mean))
    .target("≤ 1.3× one E() round trip")
    .report();
    println!(
        "  each call awaited before the next (contrast)   {:>8.1} µs / {:>8.1} µs   {:.2}× the limit",
        micros(awaited.mean),
        micros(awaited.median),
        ratio(awaited.mean, captp_round_trip.mean)
    );

    session.close("benchmark over");
    network.shutdown().await;
    Ok(())
}

async fn ticks(bench: &Value) -> BenchResult<f64> {
    let count = when(&E(bench).call("ticks", list![]))
        .await
        .map_err(|_| "ticks failed")?;
    count.as_number().ok_or_else(|| "ticks is not a number".into())
}

struct RawClient {
    reader: BufReader<StreamReader>,
    writer: StreamWriter,
}

impl RawClient {
    fn frame(kind: u8) -> [u8; 1 + FRAME_PAYLOAD] {
        let mut frame = [0u8; 1 + FRAME_PAYLOAD];
        frame[0] = FRAME_PAYLOAD as u8;
        frame[1] = kind;
        frame
    }

    async fn ping(&mut self) -> BenchResult<()> {
        let frame = Self::frame(ECHO);
        self.writer.write_all(&frame).await?;
        self.writer.flush().await?;
        let mut echoed = [0u8; 1 + FRAME_PAYLOAD];
        self.reader.read_exact(&mut echoed).await?;
        if echoed != frame {
            return Err("the echo differs".into());
        }
        Ok(())
    }

    /// `count` frames the peer swallows, then one it echoes: written as a
    /// batch, the way a CapTP session writes a turn's output.
    async fn burst(&mut self, count: usize) -> BenchResult<()> {
        let swallowed = Self::frame(SWALLOW);
        let mut batch = Vec::with_capacity((count + 1) * swallowed.len());
        for _ in 0..count {
            batch.extend_from_slice(&swallowed);
        }
        let last = Self::frame(ECHO);
        batch.extend_from_slice(&last);
        self.writer.write_all(&batch).await?;
        self.writer.flush().await?;
        let mut echoed = [0u8; 1 + FRAME_PAYLOAD];
        self.reader.read_exact(&mut echoed).await?;
        Ok(())
    }
}

#[derive(Clone, Copy)]
struct Summary {
    mean: Duration,
    median: Duration,
}

impl Summary {
    fn of(times: &mut [Duration]) -> Summary {
        times.sort();
        let total: Duration = times.iter().sum();
        let count = u32::try_from(times.len().max(1)).unwrap_or(u32::MAX);
        Summary {
            mean: total / count,
            median: times.get(times.len() / 2).copied().unwrap_or_default(),
        }
    }
}

/// How many times the threads of this process have blocked (gave up the
/// CPU to wait), from `/proc`; `None` where that cannot be read. Each such
/// wait ends with a wake-up, which is what a hop between threads costs.
fn thread_sleeps() -> Option<u64> {
    let mut total = 0;
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let status = std::fs::read_to_string(task.ok()?.path().join("status")).ok()?;
        let line = status
            .lines()
            .find(|line| line.starts_with("voluntary_ctxt_switches:"))?;
        total += line.split_whitespace().nth(1)?.parse::<u64>().ok()?;
    }
    Some(total)
}

/// The CPU time alice's vat thread (this process's main thread) and
/// bob's have spent so far, from `/proc/self/task/*/schedstat`.
fn vat_threads_cpu() -> Option<(Duration, Duration)> {
    let main = std::process::id().to_string();
    let (mut alice, mut bob) = (None, None);
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let path = task.ok()?.path();
        let spent = task_cpu_time(&path)?;
        if path.file_name().and_then(|name| name.to_str()) == Some(main.as_str()) {
            alice = Some(spent);
        } else if std::fs::read_to_string(path.join("comm")).is_ok_and(|name| name.trim() == "bob-vat") {
            bob = Some(spent);
        }
    }
    alice.zip(bob)
}

fn nanos(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e9
}

fn sleeps_per_round_trip(before: Option<u64>, after: Option<u64>) -> Option<f64> {
    Some(after?.checked_sub(before?)? as f64 / ROUND_TRIPS as f64)
}

fn ratio(value: Duration, limit: Duration) -> f64 {
    value.as_secs_f64() / limit.as_secs_f64().max(f64::MIN_POSITIVE)
}

// ---------------------------------------------------------- idle memory

/// The server of the memory figure, in a child process: prints its node
/// id and address, takes streams (giving each a CapTP session, or only
/// holding it), and answers each `rss` line on standard input with its
/// resident set size in KiB. Ends when standard input closes.
fn serve_idle(with_session: bool) -> BenchResult<()> {
    let vat = Vat::new();
    vat.run_until(async {
        let listen: Multiaddr = "/ip4/127.0.0.1/tcp/0".parse()?;
        let (network, mut inbound) =
            Network::start(&[3; 32], as_the_node_runs_it(NetConfig::listening_on([listen]))).await?;
        let address = network.listen_addresses().first().cloned().ok_or("no listen address")?;
        println!("{} {address}", network.node_id());
        std::thread::spawn(answer_rss_requests);
        let server = Vat::current().ok_or("no vat")?;
        while let Some(stream) = inbound.next().await {
            if with_session {
                connect(
                    &server,
                    stream.reader,
                    stream.writer,
                    Some(idle_object()),
                    Limits::default(),
                );
            } else {
                server.spawn(hold(stream.reader, stream.writer));
            }
        }
        drop(network);
        Ok(())
    })
}

/// What each session's bootstrap is: one small exo per session, as the
/// node makes a gateway per session.
fn idle_object() -> Value {
    Exo::new("Idle")
        .method("ping", |_, _| Ok(Value::Undefined))
        .make()
        .unwrap_or(Value::Undefined)
}

/// A bare stream: echoes one byte (so the client knows it was taken), then
/// waits for the end.
async fn hold(mut reader: StreamReader, mut writer: StreamWriter) {
    let mut byte = [0u8; 1];
    if reader.read_exact(&mut byte).await.is_err() {
        return;
    }
    if writer.write_all(&byte).await.is_err() || writer.flush().await.is_err() {
        return;
    }
    let _ = reader.read(&mut byte).await;
}

fn answer_rss_requests() {
    use std::io::{BufRead, Write};
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        if line.trim() == "rss" {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{}", rss_kib().unwrap_or(0));
            let _ = out.flush();
        }
    }
    std::process::exit(0);
}

/// This process's resident set size, KiB.
fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn bench_idle_memory() -> BenchResult<()> {
    let bare = idle_growth(false)?;
    let session = idle_growth(true)?;
    println!("memory per idle peer on the serving node, {IDLE_PEERS} peers, each one connection (TCP, Noise, yamux),");
    println!(
        "the server in a process of its own; its RSS growth from 1 peer to {} peers, divided by {IDLE_PEERS}:",
        IDLE_PEERS + 1
    );
    println!(
        "  a connection and an open stream, no session (the limit)  {:>7.1} KiB   (RSS {} → {} KiB)",
        bare.per_peer_kib(),
        bare.before_kib,
        bare.after_kib
    );
    println!(
        "  an idle CapTP session on it                               {:>7.1} KiB   (RSS {} → {} KiB)   {:+.1} KiB over the limit",
        session.per_peer_kib(),
        session.before_kib,
        session.after_kib,
        session.per_peer_kib() - bare.per_peer_kib()
    );
    Ok(())
}

struct Growth {
    before_kib: u64,
    after_kib: u64,
}

impl Growth {
    fn per_peer_kib(&self) -> f64 {
        (self.after_kib as f64 - self.before_kib as f64) / IDLE_PEERS as f64
    }
}

/// Starts a server process, connects one peer (so one-time costs are
/// paid), reads its RSS, connects [`IDLE_PEERS`] more and reads it again.
fn idle_growth(with_session: bool) -> BenchResult<Growth> {
    use std::io::{BufRead, BufReader, Write};
    use std::process::{Command, Stdio};

    let mut child = Command::new(std::env::current_exe()?)
        .arg(SERVE_IDLE)
        .arg(if with_session { "session" } else { "bare" })
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut input = child.stdin.take().ok_or("no stdin")?;
    let mut output = BufReader::new(child.stdout.take().ok_or("no stdout")?);
    let mut line = String::new();
    output.read_line(&mut line)?;
    let (node, address) = line.trim().split_once(' ').ok_or("the server printed no address")?;
    let server: NodeId = node.parse()?;
    let address: Multiaddr = address.parse()?;
    let mut rss = move || -> BenchResult<u64> {
        // Let the server's tasks settle before reading.
        std::thread::sleep(Duration::from_millis(300));
        input.write_all(b"rss\n")?;
        input.flush()?;
        let mut line = String::new();
        output.read_line(&mut line)?;
        Ok(line.trim().parse()?)
    };

    let clients = Vat::new();
    let growth = clients.run_until(async {
        let mut peers = Vec::with_capacity(IDLE_PEERS + 1);
        peers.push(IdlePeer::connect(0, server, &address, with_session).await?);
        let before_kib = rss()?;
        for index in 1..=IDLE_PEERS {
            peers.push(IdlePeer::connect(index, server, &address, with_session).await?);
        }
        let after_kib = rss()?;
        for peer in &peers {
            peer.close().await;
        }
        BenchResult::Ok(Growth { before_kib, after_kib })
    });
    // Closing its standard input (held by `rss`) ends the server.
    drop(rss);
    let _ = child.wait();
    growth
}

/// One client peer of the memory figure: a network of its own (its own
/// key, so its own connection), one stream, and maybe a session on it.
struct IdlePeer {
    network: Network,
    session: Option<ConnectionHandle>,
    _stream: Option<(StreamReader, StreamWriter)>,
}

impl IdlePeer {
    async fn connect(index: usize, server: NodeId, address: &Multiaddr, with_session: bool) -> BenchResult<IdlePeer> {
        let mut seed = [7u8; 32];
        seed[..8].copy_from_slice(&(index as u64).to_le_bytes());
        let (network, _inbound) = Network::start(&seed, NetConfig::default()).await?;
        let (mut reader, mut writer) = network.open_stream(&server, std::slice::from_ref(address)).await?;
        if with_session {
            let vat = Vat::current().ok_or("no vat")?;
            let session = connect(&vat, reader, writer, None, Limits::default());
            // One round trip, so the server's side of the session is set up.
            when(&E(&session.bootstrap()).call("ping", list![]))
                .await
                .map_err(|_| "the idle session's ping failed")?;
            return Ok(IdlePeer {
                network,
                session: Some(session),
                _stream: None,
            });
        }
        writer.write_all(b"h").await?;
        writer.flush().await?;
        let mut byte = [0u8; 1];
        reader.read_exact(&mut byte).await?;
        Ok(IdlePeer {
            network,
            session: None,
            _stream: Some((reader, writer)),
        })
    }

    async fn close(&self) {
        if let Some(session) = &self.session {
            session.close("benchmark over");
        }
        self.network.shutdown().await;
    }
}
