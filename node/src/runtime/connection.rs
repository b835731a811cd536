//! A CapTP session carried on a byte stream (a socket, a pipe, a libp2p
//! stream), driven by a vat: a reader task feeds bytes to the session, the
//! vat runs what the session asks for, and a writer task sends what the
//! session produced, batched per turn.

use std::cell::RefCell;
use std::rc::Rc;

use capstan_protocol::captp::{Event, Limits, Session, SessionId};
use capstan_protocol::{Reference, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch};

use super::vat::{Message, Resolver, Settlement, Vat};

/// Size of each read from the transport.
/// Reads start this small, so an idle session costs little memory, and
/// grow (doubling) to [`READ_CHUNK`] while reads keep filling the buffer.
const FIRST_READ_CHUNK: usize = 4 * 1024;
const READ_CHUNK: usize = 64 * 1024;

/// One session and the channel to its writer.
pub struct Connection {
    id: SessionId,
    pub(crate) session: RefCell<Session>,
    outbound: RefCell<Option<mpsc::UnboundedSender<Vec<u8>>>>,
    closed: watch::Sender<Option<String>>,
}

impl Connection {
    pub fn id(&self) -> SessionId {
        self.id
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
                    let message = Message::Call {
                        method,
                        args: args.to_vec(),
                    };
                    vat.queue_turn(move |vat| vat.deliver(target, message, resolver));
                }
                Event::Get { target, field, answer } => {
                    let resolver = Resolver::Answer(self.id, answer);
                    vat.queue_turn(move |vat| vat.deliver(target, Message::Get { field }, resolver));
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
                    self.outbound.borrow_mut().take();
                    vat.remove_connection(self.id);
                    let _ = self.closed.send(Some(reason));
                }
            }
        }
    }

    /// Hands whatever the session produced to the writer.
    pub(crate) fn flush(&self, _vat: &Vat) {
        let mut session = self.session.borrow_mut();
        if !session.has_transmit() {
            return;
        }
        let mut bytes = Vec::new();
        session.poll_transmit(&mut bytes);
        if bytes.is_empty() {
            return;
        }
        if let Some(outbound) = self.outbound.borrow().as_ref() {
            let _ = outbound.send(bytes);
        }
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
/// gets when it asks for our bootstrap object.
pub fn connect<R, W>(vat: &Vat, reader: R, writer: W, bootstrap: Option<Value>, limits: Limits) -> ConnectionHandle
where
    R: AsyncRead + Unpin + 'static,
    W: AsyncWrite + Unpin + 'static,
{
    let session = vat.new_session(bootstrap, limits);
    let id = session.id();
    let (sender, receiver) = mpsc::unbounded_channel::<Vec<u8>>();
    let (closed_sender, closed_receiver) = watch::channel(None);
    let connection = Rc::new(Connection {
        id,
        session: RefCell::new(session),
        outbound: RefCell::new(Some(sender)),
        closed: closed_sender,
    });
    vat.add_connection(Rc::clone(&connection));
    vat.spawn(write_loop(vat.clone(), id, writer, receiver));
    vat.spawn(read_loop(vat.clone(), Rc::clone(&connection), reader));
    ConnectionHandle {
        vat: vat.clone(),
        id,
        closed: closed_receiver,
    }
}

async fn read_loop<R: AsyncRead + Unpin>(vat: Vat, connection: Rc<Connection>, mut reader: R) {
    let mut buffer = vec![0u8; FIRST_READ_CHUNK];
    loop {
        let reason = match reader.read(&mut buffer).await {
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

async fn write_loop<W: AsyncWrite + Unpin>(
    vat: Vat,
    id: SessionId,
    mut writer: W,
    mut receiver: mpsc::UnboundedReceiver<Vec<u8>>,
) {
    while let Some(bytes) = receiver.recv().await {
        if let Err(error) = writer.write_all(&bytes).await {
            let reason = format!("writing to the connection failed: {error}");
            vat.enter(|| {
                if let Some(connection) = vat.connection(id) {
                    connection.session.borrow_mut().close(&reason);
                    connection.process_events(&vat);
                }
            });
            return;
        }
        let _ = writer.flush().await;
    }
    let _ = writer.shutdown().await;
}
