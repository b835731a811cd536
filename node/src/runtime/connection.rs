//! A CapTP session carried on a byte stream (a socket, a pipe, a libp2p
//! stream), driven by a vat: a reader task feeds bytes to the session, the
//! vat runs what the session asks for, and what the session produced goes
//! to the transport after each batch of turns (or sooner, when a turn
//! produces a lot: [`super::outbound`]).
//!
//! Beyond the CapTP limits, a connection bounds what its peer can make us
//! hold or do ([`SessionOptions`]): bytes queued for a peer that does not
//! read them (past the bound the session ends), and the peer's calls per
//! second (past the rate its stream is read more slowly).
//!
//! Distributed GC: the runtime holds imports as plain [`Reference`]
//! clones, so a connection finds the ones nobody holds any more by asking
//! its session ([`Session::drop_unheld`]): at the end of a batch of turns
//! when the import table has grown enough ([`Session::is_gc_due`]), and
//! every [`GC_INTERVAL`] while the session has imports or questions, so an
//! idle session drops what it let go within that bound. The same tick
//! sends the answer drops the session held back for other output.

use std::cell::RefCell;
use std::num::NonZeroU32;
use std::rc::Rc;
use std::time::Duration;

use capstan_protocol::captp::{Event, Limits, Session, SessionId};
use capstan_protocol::{Reference, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::sync::watch;
use tokio::time::Instant;

use super::outbound::{Finished, Outbound};
use super::vat::{Message, Resolver, Settlement, Vat};

/// Size of each read from the transport.
/// Reads start this small, so an idle session costs little memory, and
/// grow (doubling) to [`READ_CHUNK`] while reads keep filling the buffer.
const FIRST_READ_CHUNK: usize = 4 * 1024;
const READ_CHUNK: usize = 64 * 1024;

/// What [`connect`] bounds a session's output by unless told otherwise.
pub const DEFAULT_OUTBOUND_QUEUE_BYTES: usize = 64 << 20;

/// How often a connection with imports looks for ones the runtime let
/// go: an import nobody holds is dropped on the wire within this (plus
/// the time its last turn takes).
pub const GC_INTERVAL: Duration = Duration::from_millis(250);

/// Who is at the other end of a session, as its creator says: shown with
/// its table sizes ([`SessionCounts`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionKind {
    /// Another node; `node` is its id.
    Peer { node: String },
    /// One of this node's workers.
    Worker,
    /// A control client (the CLI).
    Client,
}

impl SessionKind {
    /// `peer`, `worker` or `client`.
    pub fn label(&self) -> &'static str {
        match self {
            SessionKind::Peer { .. } => "peer",
            SessionKind::Worker => "worker",
            SessionKind::Client => "client",
        }
    }
}

/// The sizes of one live session's tables, counted by the session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionCounts {
    pub session: SessionId,
    pub kind: Option<SessionKind>,
    pub exports: usize,
    pub imports: usize,
    pub questions: usize,
    pub answers: usize,
}

/// How a session on a byte stream is bounded: its CapTP [`Limits`], and
/// what the transport side bounds.
#[derive(Clone, Debug)]
pub struct SessionOptions {
    pub limits: Limits,
    /// Bytes written for the peer that the transport has not taken yet; a
    /// peer that lets more pile up (it stopped reading) is cut off.
    pub outbound_queue_bytes: usize,
    /// Calls (`Deliver`, `Get`, `Bootstrap`) per second the peer may make,
    /// in bursts of up to this many; beyond it its stream is read more
    /// slowly. `None` reads as fast as the peer sends.
    pub calls_per_second: Option<NonZeroU32>,
    /// Who is at the other end, for status; `None` if the creator did not
    /// say.
    pub kind: Option<SessionKind>,
    /// What pending calls are rejected with when the peer aborts, in place
    /// of the peer's own reason (which goes to the log); `None` passes the
    /// peer's reason on.
    pub peer_abort_text: Option<&'static str>,
}

impl SessionOptions {
    /// `limits`, the default output bound, and no pacing.
    pub fn new(limits: Limits) -> SessionOptions {
        SessionOptions {
            limits,
            outbound_queue_bytes: DEFAULT_OUTBOUND_QUEUE_BYTES,
            calls_per_second: None,
            kind: None,
            peer_abort_text: None,
        }
    }

    /// `limits` with no output bound and no pacing: for the end of a
    /// session whose other end is its own node (a worker's, the CLI's),
    /// which it trusts to read, and must not cut off for being slow
    /// under honest load.
    pub fn toward_own_node(limits: Limits) -> SessionOptions {
        SessionOptions {
            limits,
            outbound_queue_bytes: usize::MAX,
            calls_per_second: None,
            kind: None,
            peer_abort_text: None,
        }
    }

    /// These options, naming who is at the other end.
    pub fn with_kind(mut self, kind: SessionKind) -> SessionOptions {
        self.kind = Some(kind);
        self
    }
}

/// Output a turn hands to the transport before the turn ends, once the
/// session has this much of it (see [`Connection::hand_over_early`]).
/// A quarter of a pipe's 64 KiB buffer, so the peer drains one hand-over
/// while the next piles up: at 64 KiB each one filled a worker's pipe and
/// the rest waited for the end of the turn (kernel vat-to-vat sends
/// 99-104 k/s, against 120-128 k/s at 8 to 32 KiB).
pub(crate) const EARLY_OUTPUT_BYTES: usize = 16 * 1024;

/// One session and the write side of its transport.
pub struct Connection {
    id: SessionId,
    kind: Option<SessionKind>,
    pub(crate) session: RefCell<Session>,
    /// Shared with the writer task.
    outbound: Rc<RefCell<Outbound>>,
    outbound_queue_bytes: usize,
    closed: watch::Sender<Option<String>>,
}

impl Connection {
    pub fn id(&self) -> SessionId {
        self.id
    }

    /// The session's table sizes.
    pub(crate) fn counts(&self) -> SessionCounts {
        let session = self.session.borrow();
        SessionCounts {
            session: self.id,
            kind: self.kind.clone(),
            exports: session.export_count(),
            imports: session.import_count(),
            questions: session.question_count(),
            answers: session.answer_count(),
        }
    }

    /// Drops the imports nobody holds any more if the table has grown
    /// enough since the last look, or always when `now`; returns how many.
    pub(crate) fn collect_garbage(&self, now: bool) -> usize {
        let mut session = self.session.borrow_mut();
        if now || session.is_gc_due() {
            session.drop_unheld()
        } else {
            0
        }
    }

    /// Runs every event the session has queued.
    pub(crate) fn process_events(self: &Rc<Connection>, vat: &Vat) {
        loop {
            let event = self.session.borrow_mut().poll_event();
            let Some(event) = event else { break };
            match event {
                Event::Deliver {
                    target,
                    method,
                    args,
                    answer,
                    ..
                } => {
                    let resolver = answer.map_or(Resolver::Nothing, |answer| Resolver::Answer(self.id, answer));
                    vat.queue_call(target, method, args.to_vec(), resolver);
                }
                Event::Get { target, field, answer } => {
                    let resolver = Resolver::Answer(self.id, answer);
                    vat.queue_delivery(target, Message::Get { field }, resolver);
                }
                Event::Settled { promise, outcome } => vat.remote_settled(&promise, &outcome),
                Event::WatchPromise { promise } => {
                    let connection = Rc::clone(self);
                    let exported = promise.clone();
                    vat.when_settled(
                        &Value::Promise(promise),
                        Box::new(move |vat: &Vat, outcome: &Settlement| {
                            let result = connection
                                .session
                                .borrow_mut()
                                .resolve_export(&exported, outcome.clone());
                            if let Err(error) = result {
                                tracing::warn!(%error, "exported promise settled twice");
                            }
                            connection.process_events(vat);
                            vat.wake();
                        }),
                    );
                }
                Event::Aborted { reason, by_peer } => {
                    tracing::info!(session = self.id.0, %reason, by_peer, "CapTP session ended");
                    self.flush(vat);
                    self.outbound.borrow_mut().close();
                    vat.remove_connection(self.id);
                    let _ = self.closed.send(Some(reason));
                }
            }
        }
    }

    /// Hands whatever the session produced to the transport; cuts the
    /// peer off if too much is waiting for it.
    pub(crate) fn flush(self: &Rc<Connection>, vat: &Vat) {
        self.hand_over();
        let queued = self.outbound.borrow().queued();
        if queued > self.outbound_queue_bytes && !self.session.borrow().is_closed() {
            let reason = format!(
                "the peer stopped reading: {} queued",
                describe_bytes(self.outbound_queue_bytes)
            );
            tracing::warn!(session = self.id.0, queued, %reason, "cutting off a peer");
            self.outbound.borrow_mut().cut_off();
            self.session.borrow_mut().close(&reason);
            self.process_events(vat);
        }
    }

    /// In the middle of a turn: hands the session's output to the
    /// transport if there is at least [`EARLY_OUTPUT_BYTES`] of it, so the
    /// peer starts on it while the turn goes on. The bound on what waits
    /// is checked when the turn's batch ends ([`Connection::flush`]).
    pub(crate) fn hand_over_early(&self) {
        if self.session.borrow().transmit_len() >= EARLY_OUTPUT_BYTES {
            self.hand_over();
        }
    }

    fn hand_over(&self) {
        let bytes = {
            let mut session = self.session.borrow_mut();
            if !session.has_transmit() {
                return;
            }
            let mut bytes = Vec::new();
            session.poll_transmit(&mut bytes);
            bytes
        };
        self.outbound.borrow_mut().push(bytes);
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        // The writer task writes what waits, then shuts the stream down.
        if let Ok(mut outbound) = self.outbound.try_borrow_mut() {
            outbound.close();
        }
    }
}

/// `bytes` for a log line: whole MiB as such.
fn describe_bytes(bytes: usize) -> String {
    const MIB: usize = 1 << 20;
    if bytes >= MIB && bytes.is_multiple_of(MIB) {
        format!("over {} MiB", bytes / MIB)
    } else {
        format!("over {bytes} bytes")
    }
}

/// The runtime's handle on a connection.
#[derive(Clone)]
pub struct ConnectionHandle {
    vat: Vat,
    id: SessionId,
    closed: watch::Receiver<Option<String>>,
}

impl ConnectionHandle {
    pub fn id(&self) -> SessionId {
        self.id
    }

    /// A promise for the peer's bootstrap object (pipelinable).
    pub fn bootstrap(&self) -> Value {
        let Some(connection) = self.vat.connection(self.id) else {
            return self.vat.rejected(super::vat::type_error("the connection is closed"));
        };
        let result = connection.session.borrow_mut().bootstrap();
        self.vat.wake();
        match result {
            Ok(promise) => promise,
            Err(error) => self.vat.rejected(super::vat::type_error(error.to_string())),
        }
    }

    /// Ends the session with `reason`: the peer gets `Abort`, and pending
    /// calls on both sides reject.
    pub fn close(&self, reason: &str) {
        if let Some(connection) = self.vat.connection(self.id) {
            connection.session.borrow_mut().close(reason);
            connection.process_events(&self.vat);
            self.vat.wake();
        }
    }

    pub fn is_closed(&self) -> bool {
        self.closed.borrow().is_some()
    }

    /// Waits until the session ends and returns why.
    pub async fn closed(&self) -> String {
        let mut closed = self.closed.clone();
        loop {
            if let Some(reason) = closed.borrow().clone() {
                return reason;
            }
            if closed.changed().await.is_err() {
                return "the connection was dropped".to_string();
            }
        }
    }

    /// Drops at once the imports nobody holds any more (instead of at the
    /// next [`GC_INTERVAL`] tick), and sends the drops; returns how many.
    pub fn collect_garbage(&self) -> usize {
        let Some(connection) = self.vat.connection(self.id) else {
            return 0;
        };
        let dropped = connection.collect_garbage(true);
        if dropped > 0 {
            connection.flush(&self.vat);
        }
        dropped
    }

    /// Tells the session the runtime no longer needs `reference` (an
    /// import or question it made).
    pub fn release(&self, reference: &Reference) {
        if let Some(connection) = self.vat.connection(self.id) {
            connection.session.borrow_mut().drop_reference(reference);
            self.vat.wake();
        }
    }
}

/// Starts a CapTP session on a byte stream. `bootstrap` is what the peer
/// gets when it asks for our bootstrap object. Output is bounded by
/// [`DEFAULT_OUTBOUND_QUEUE_BYTES`] and reads are not paced; see
/// [`connect_with`].
pub fn connect<R, W>(vat: &Vat, reader: R, writer: W, bootstrap: Option<Value>, limits: Limits) -> ConnectionHandle
where
    R: AsyncRead + Unpin + 'static,
    W: AsyncWrite + Unpin + 'static,
{
    connect_with(vat, reader, writer, bootstrap, SessionOptions::new(limits))
}

/// [`connect`] with the transport-side bounds given in `options`.
pub fn connect_with<R, W>(
    vat: &Vat,
    reader: R,
    writer: W,
    bootstrap: Option<Value>,
    options: SessionOptions,
) -> ConnectionHandle
where
    R: AsyncRead + Unpin + 'static,
    W: AsyncWrite + Unpin + 'static,
{
    let mut session = vat.new_session(bootstrap, options.limits);
    if let Some(text) = options.peer_abort_text {
        session.replace_peer_abort_reasons(text);
    }
    let id = session.id();
    let (closed_sender, closed_receiver) = watch::channel(None);
    let outbound = Rc::new(RefCell::new(Outbound::new(writer)));
    let connection = Rc::new(Connection {
        id,
        kind: options.kind,
        session: RefCell::new(session),
        outbound: Rc::clone(&outbound),
        outbound_queue_bytes: options.outbound_queue_bytes,
        closed: closed_sender,
    });
    vat.add_connection(Rc::clone(&connection));
    vat.spawn(write_loop(vat.clone(), id, outbound, closed_receiver.clone()));
    let pacer = options.calls_per_second.map(CallPacer::new);
    vat.spawn(read_loop(
        vat.clone(),
        Rc::clone(&connection),
        reader,
        pacer,
        closed_receiver.clone(),
    ));
    vat.spawn(gc_loop(vat.clone(), Rc::clone(&connection), closed_receiver.clone()));
    ConnectionHandle {
        vat: vat.clone(),
        id,
        closed: closed_receiver,
    }
}

/// Every [`GC_INTERVAL`], drops the imports the runtime let go (see the
/// module docs), until the session ends.
async fn gc_loop(vat: Vat, connection: Rc<Connection>, mut closed: watch::Receiver<Option<String>>) {
    let mut ticks = tokio::time::interval(GC_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = closed.wait_for(Option::is_some) => return,
        }
        let (worth_a_look, drops_waiting) = {
            let session = connection.session.borrow();
            let open = !session.is_closed();
            (
                open && (session.import_count() > 0 || session.question_count() > 0),
                session.has_deferred_drops(),
            )
        };
        let dropped = if worth_a_look {
            connection.collect_garbage(true)
        } else {
            0
        };
        if drops_waiting {
            connection.session.borrow_mut().flush_deferred_drops();
        }
        if dropped > 0 || drops_waiting {
            vat.enter(|| connection.flush(&vat));
        }
    }
}

/// A token bucket over the peer's calls: `rate` per second, bursts of
/// `rate`. Reading waits while the bucket is in debt.
struct CallPacer {
    rate: f64,
    tokens: f64,
    refilled: Instant,
    counted: u64,
    warned: bool,
}

impl CallPacer {
    fn new(rate: NonZeroU32) -> CallPacer {
        let rate = f64::from(rate.get());
        CallPacer {
            rate,
            tokens: rate,
            refilled: Instant::now(),
            counted: 0,
            warned: false,
        }
    }

    /// Takes the calls received since the last look; how long to wait
    /// before reading more, if the peer is over its rate.
    fn pause_after(&mut self, calls_received: u64) -> Option<Duration> {
        let now = Instant::now();
        let elapsed = now.duration_since(self.refilled).as_secs_f64();
        self.refilled = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate);
        let new_calls = calls_received.saturating_sub(self.counted);
        self.counted = calls_received;
        self.tokens -= new_calls as f64;
        (self.tokens < 0.0).then(|| Duration::from_secs_f64(-self.tokens / self.rate))
    }
}

async fn read_loop<R: AsyncRead + Unpin>(
    vat: Vat,
    connection: Rc<Connection>,
    mut reader: R,
    mut pacer: Option<CallPacer>,
    mut closed: watch::Receiver<Option<String>>,
) {
    let mut buffer = vec![0u8; FIRST_READ_CHUNK];
    loop {
        let read = tokio::select! {
            read = reader.read(&mut buffer) => read,
            _ = closed.wait_for(Option::is_some) => return,
        };
        let reason = match read {
            Ok(0) => "the peer closed the connection".to_string(),
            Ok(count) => {
                connection.session.borrow_mut().handle_bytes(&buffer[..count]);
                if count == buffer.len() && buffer.len() < READ_CHUNK {
                    buffer.resize(buffer.len() * 2, 0);
                }
                vat.enter(|| {
                    connection.process_events(&vat);
                    vat.run_turns();
                });
                if connection.session.borrow().is_closed() {
                    return;
                }
                let calls = connection.session.borrow().calls_received();
                if let Some(pause) = pacer.as_mut().and_then(|pacer| {
                    let pause = pacer.pause_after(calls)?;
                    if !pacer.warned {
                        pacer.warned = true;
                        tracing::info!(
                            session = connection.id.0,
                            calls_per_second = pacer.rate,
                            "the peer calls faster than its rate; reading it more slowly"
                        );
                    }
                    Some(pause)
                }) {
                    tokio::select! {
                        () = tokio::time::sleep(pause) => {}
                        _ = closed.wait_for(Option::is_some) => return,
                    }
                }
                continue;
            }
            Err(error) => format!("reading from the connection failed: {error}"),
        };
        vat.enter(|| {
            connection.session.borrow_mut().close(&reason);
            connection.process_events(&vat);
        });
        return;
    }
}

/// How long a session whose stream refused a write stays open for its
/// reader, which may still find why the peer went away (an answer or an
/// `Abort` it sent before closing its end).
const WRITE_FAILURE_GRACE: Duration = Duration::from_secs(1);

/// Writes what the transport did not take when it was handed over,
/// until the connection closes; a failed write ends the session (after
/// [`WRITE_FAILURE_GRACE`], unless the reader ended it first).
async fn write_loop(
    vat: Vat,
    id: SessionId,
    outbound: Rc<RefCell<Outbound>>,
    mut closed: watch::Receiver<Option<String>>,
) {
    let finished = std::future::poll_fn(|cx| outbound.borrow_mut().poll_drive(cx)).await;
    if let Finished::Failed(error) = finished {
        tokio::select! {
            _ = closed.wait_for(Option::is_some) => return,
            () = tokio::time::sleep(WRITE_FAILURE_GRACE) => {}
        }
        let reason = format!("writing to the connection failed: {error}");
        vat.enter(|| {
            if let Some(connection) = vat.connection(id) {
                connection.session.borrow_mut().close(&reason);
                connection.process_events(&vat);
            }
        });
    }
}
