//! Distributed GC over one long CapTP session, between two processes (an
//! importer here, an exporter in a child process of its own) joined by a
//! TCP connection on loopback, each a vat driving its end of the session:
//!
//! (a) 1 000 000 transient references made by the exporter, passed to the
//!     importer and dropped, in one session: both processes' RSS and the
//!     session's table sizes at the start, midway and at the end, beside
//!     the baseline read before the first of them;
//! (c) how long after its last use a dropped reference's export is freed
//!     at the exporter (median and 99th percentile), beside the round trip
//!     of a call on the same session.
//!
//! `cargo run --release -p capstan-node --example gc_bench`

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use capstan_node::runtime::{
    Behavior, E, GC_INTERVAL, Invocation, SessionCounts, SessionKind, SessionOptions, Vat, connect_with, type_error,
    when,
};
use capstan_protocol::captp::Limits;
use capstan_protocol::{Value, list, record};

const TRANSIENT: usize = 1_000_000;
const BATCH: usize = 1_000;
const LATENCY_SAMPLES: usize = 1_000;
const ROUND_TRIPS: usize = 1_000;

/// The argument that makes this program the exporter.
const SERVE: &str = "--serve";

type BenchResult<T> = Result<T, Box<dyn std::error::Error>>;

fn main() -> BenchResult<()> {
    if std::env::args().nth(1).as_deref() == Some(SERVE) {
        return serve();
    }
    let mut child = Command::new(std::env::current_exe()?)
        .arg(SERVE)
        .stdout(Stdio::piped())
        .spawn()?;
    let mut output = BufReader::new(child.stdout.take().ok_or("no stdout")?);
    let mut line = String::new();
    output.read_line(&mut line)?;
    let port: u16 = line.trim().parse()?;
    let vat = Vat::new();
    let outcome = vat.run_until(run_importer(vat.clone(), port));
    let _ = child.wait();
    outcome
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
            line.split_whitespace().nth(1)?.parse().ok()
        })
        .unwrap_or(0)
}

fn unix_micros() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |since| since.as_secs_f64() * 1e6)
}

// --------------------------------------------------------------- exporter

/// What the exporter freed, by object number: when (Unix µs).
type FreedAt = Rc<RefCell<HashMap<u64, f64>>>;

/// A transient object: `id()` returns its number; when the vat frees it
/// (its export was dropped by the importer) the time is noted if tracked.
struct Made {
    id: u64,
    freed: Option<FreedAt>,
}

impl Behavior for Made {
    fn interface(&self) -> &str {
        "Alleged: Made"
    }

    fn invoke(&self, _this: &Value, method: &str, _args: Vec<Value>) -> Invocation {
        match method {
            "id" => Invocation::Ready(Ok(Value::from(self.id as f64))),
            _ => Invocation::Ready(Err(type_error(format!("Made has no method {method:?}")))),
        }
    }
}

impl Drop for Made {
    fn drop(&mut self) {
        if let Some(freed) = &self.freed {
            freed.borrow_mut().insert(self.id, unix_micros());
        }
    }
}

/// The exporter's bootstrap: `make(tracked)`, `status()` (its RSS and
/// session tables), `freedAt(ids)` (Unix µs, or -1 if not freed yet).
struct Factory {
    next: RefCell<u64>,
    freed: FreedAt,
}

impl Behavior for Factory {
    fn interface(&self) -> &str {
        "Alleged: Factory"
    }

    fn invoke(&self, _this: &Value, method: &str, args: Vec<Value>) -> Invocation {
        let Some(vat) = Vat::current() else {
            return Invocation::Ready(Err(type_error("no vat")));
        };
        let outcome = match method {
            "make" => {
                let tracked = matches!(args.first(), Some(Value::Boolean(true)));
                let id = {
                    let mut next = self.next.borrow_mut();
                    *next += 1;
                    *next
                };
                let freed = tracked.then(|| Rc::clone(&self.freed));
                Ok(vat.make_object(Rc::new(Made { id, freed })))
            }
            "status" => {
                let counts = vat.session_counts();
                let session = counts.first();
                Ok(record! {
                    "rssKib" => rss_kib() as f64,
                    "imports" => session.map_or(0.0, |s| s.imports as f64),
                    "exports" => session.map_or(0.0, |s| s.exports as f64),
                    "questions" => session.map_or(0.0, |s| s.questions as f64),
                    "answers" => session.map_or(0.0, |s| s.answers as f64),
                })
            }
            "freedAt" => {
                let freed = self.freed.borrow();
                let ids: Vec<Value> = args
                    .first()
                    .and_then(Value::as_array)
                    .map(<[Value]>::to_vec)
                    .unwrap_or_default();
                Ok(Value::array(ids.iter().map(|id| {
                    let id = id.as_number().unwrap_or(-1.0) as u64;
                    Value::from(freed.get(&id).copied().unwrap_or(-1.0))
                })))
            }
            _ => Err(type_error(format!("Factory has no method {method:?}"))),
        };
        Invocation::Ready(outcome)
    }
}

fn serve() -> BenchResult<()> {
    let vat = Vat::new();
    vat.run_until(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        println!("{}", listener.local_addr()?.port());
        std::io::stdout().flush()?;
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        let (reader, writer) = stream.into_split();
        let factory = vat.make_object(Rc::new(Factory {
            next: RefCell::new(0),
            freed: Rc::default(),
        }));
        let options = SessionOptions::new(Limits::default()).with_kind(SessionKind::Peer {
            node: "importer".into(),
        });
        let connection = connect_with(&vat, reader, writer, Some(factory), options);
        connection.closed().await;
        BenchResult::Ok(())
    })
}

// --------------------------------------------------------------- importer

/// One reading of both sides.
struct Reading {
    importer_rss_kib: u64,
    importer: SessionCounts,
    exporter_rss_kib: f64,
    exporter_exports: f64,
    exporter_imports: f64,
}

fn settled(outcome: Result<Value, Value>) -> BenchResult<Value> {
    outcome.map_err(|reason| format!("rejected: {reason:?}").into())
}

async fn read_both(vat: &Vat, factory: &Value) -> BenchResult<Reading> {
    let status = settled(when(&E(factory).call("status", list![])).await)?;
    let field = |name: &str| {
        status
            .as_record()
            .and_then(|record| record.get(name))
            .and_then(Value::as_number)
            .unwrap_or(-1.0)
    };
    let importer = vat.session_counts().into_iter().next().ok_or("no session")?;
    Ok(Reading {
        importer_rss_kib: rss_kib(),
        importer,
        exporter_rss_kib: field("rssKib"),
        exporter_exports: field("exports"),
        exporter_imports: field("imports"),
    })
}

fn print_reading(label: &str, reading: &Reading) {
    println!(
        "  {label:<34} importer RSS {:>7} KiB, imports {:>6}, questions {:>5} | exporter RSS {:>7} KiB, exports {:>6}, imports {:>3}",
        reading.importer_rss_kib,
        reading.importer.imports,
        reading.importer.questions,
        reading.exporter_rss_kib,
        reading.exporter_exports,
        reading.exporter_imports,
    );
}

async fn run_importer(vat: Vat, port: u16) -> BenchResult<()> {
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    stream.set_nodelay(true)?;
    let (reader, writer) = stream.into_split();
    let options = SessionOptions::new(Limits::default()).with_kind(SessionKind::Peer {
        node: "exporter".into(),
    });
    let connection = connect_with(&vat, reader, writer, None, options);
    let factory = settled(when(&connection.bootstrap()).await)?;

    // Warm up both sides, let the warm-up's references go, then read.
    pass_and_drop(&factory, 10 * BATCH).await?;
    tokio::time::sleep(GC_INTERVAL * 4).await;
    let baseline = read_both(&vat, &factory).await?;

    println!(
        "(a) {TRANSIENT} transient references made by the exporter, passed to the importer and dropped, in batches of {BATCH}, one session:"
    );
    print_reading("baseline (before the run)", &baseline);
    let started = Instant::now();
    print_reading("start", &read_both(&vat, &factory).await?);
    pass_and_drop(&factory, TRANSIENT / 2).await?;
    print_reading(
        &format!("midway ({} passed)", TRANSIENT / 2),
        &read_both(&vat, &factory).await?,
    );
    pass_and_drop(&factory, TRANSIENT - TRANSIENT / 2).await?;
    let elapsed = started.elapsed();
    print_reading(&format!("end ({TRANSIENT} passed)"), &read_both(&vat, &factory).await?);
    tokio::time::sleep(GC_INTERVAL * 4).await;
    print_reading(
        &format!("end + {} ms (idle)", (GC_INTERVAL * 4).as_millis()),
        &read_both(&vat, &factory).await?,
    );
    println!(
        "  {TRANSIENT} references in {:.2} s ({:.0} per second)",
        elapsed.as_secs_f64(),
        TRANSIENT as f64 / elapsed.as_secs_f64()
    );
    println!();

    // Baseline for (c): a call's round trip on the same session.
    let mut round_trips = Vec::with_capacity(ROUND_TRIPS);
    for _ in 0..ROUND_TRIPS {
        let start = Instant::now();
        settled(when(&E(&factory).call("status", list![])).await)?;
        round_trips.push(start.elapsed().as_secs_f64() * 1e3);
    }
    let (rt_median, rt_p99) = median_and_p99(&mut round_trips);

    let latencies = free_latencies(&factory).await?;
    let mut latencies = latencies;
    let (median, p99) = median_and_p99(&mut latencies);
    println!(
        "(c) time from a reference's last use at the importer to its export being freed at the exporter, {} samples:",
        latencies.len()
    );
    println!("  baseline: a call's round trip on the session     median {rt_median:>7.3} ms, p99 {rt_p99:>7.3} ms");
    println!("  dropped reference freed after its last use       median {median:>7.3} ms, p99 {p99:>7.3} ms");
    println!(
        "  (the importer looks for unheld references every {} ms while it has imports)",
        GC_INTERVAL.as_millis()
    );
    connection.close("the benchmark is over");
    Ok(())
}

/// Asks for `count` fresh objects in batches, waits for each batch, and
/// lets it go.
async fn pass_and_drop(factory: &Value, count: usize) -> BenchResult<()> {
    let mut left = count;
    while left > 0 {
        let size = left.min(BATCH);
        let made: Vec<Value> = (0..size).map(|_| E(factory).call("make", list![false])).collect();
        for result in &made {
            settled(when(result).await)?;
        }
        left -= size;
    }
    Ok(())
}

/// Takes tracked objects one at a time, uses each once, notes when, and
/// lets it go; then asks the exporter when it freed each.
async fn free_latencies(factory: &Value) -> BenchResult<Vec<f64>> {
    let mut last_use: Vec<(f64, f64)> = Vec::with_capacity(LATENCY_SAMPLES);
    for index in 0..LATENCY_SAMPLES {
        let made = settled(when(&E(factory).call("make", list![true])).await)?;
        let id = settled(when(&E(&made).call("id", list![])).await)?;
        last_use.push((id.as_number().unwrap_or(-1.0), unix_micros()));
        drop(made);
        // Spread the drops over the GC interval.
        if index % 10 == 0 {
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
    }
    tokio::time::sleep(GC_INTERVAL * 4).await;
    let ids = Value::array(last_use.iter().map(|(id, _)| Value::from(*id)));
    let freed = settled(when(&E(factory).call("freedAt", list![ids])).await)?;
    let freed = freed.as_array().ok_or("freedAt returns an array")?;
    let mut latencies = Vec::with_capacity(last_use.len());
    let mut missing = 0;
    for ((_, used), freed) in last_use.iter().zip(freed.iter()) {
        match freed.as_number() {
            Some(freed) if freed >= 0.0 => latencies.push((freed - used) / 1e3),
            _ => missing += 1,
        }
    }
    if missing > 0 {
        println!(
            "  ({missing} references were not freed within {} ms)",
            (GC_INTERVAL * 4).as_millis()
        );
    }
    Ok(latencies)
}

fn median_and_p99(samples: &mut [f64]) -> (f64, f64) {
    if samples.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    samples.sort_by(f64::total_cmp);
    let at = |fraction: f64| samples[((samples.len() - 1) as f64 * fraction).round() as usize];
    (at(0.5), at(0.99))
}
