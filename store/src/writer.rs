//! The single writer: one thread that owns every write transaction, and the
//! [`Commit`] future a caller waits on for its write to be durable.
//!
//! Callers hand the writer a job (a closure over a [`Tx`]). The writer takes
//! every job that is waiting, runs each in a transaction of its own, and
//! commits all but the last without an fsync; the last commit of the group
//! is durable (`Durability::Immediate`) and so makes the whole group durable
//! with one fsync. Only then are change events published and callers
//! answered. A job that fails rolls back alone; the others still commit.
//!
//! If a commit itself fails (an I/O error), the writer stops taking writes:
//! after a failed fsync nothing about the file can be trusted any more.

use std::any::Any;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::mpsc;
use std::task::{Context, Poll};

use redb::{Database, Durability};
use tokio::sync::oneshot;

use crate::error::{Result, StoreError};
use crate::events::{Event, Notifier};
use crate::schema::COUNTER_COMMIT_SEQ;
use crate::tx::{Tables, Tx};

/// Jobs run per group at most, so one long queue still answers its first
/// callers early.
const MAX_GROUP_JOBS: usize = 256;

/// What the writer does once a job's transaction has committed.
pub(crate) type Completion = Box<dyn FnOnce(Result<()>) + Send>;

/// A unit of work for the writer: it runs in one transaction.
pub(crate) trait Job: Send {
    /// Whether the caller must be answered only after an fsync. Staging a
    /// blob's chunks needs none: the blob exists only once its durable
    /// finishing commit names them.
    fn durable(&self) -> bool {
        true
    }

    /// Does the work. `Some` means commit and then call the completion;
    /// `None` means the job has answered its caller with an error and its
    /// transaction must roll back.
    fn run(self: Box<Self>, tx: &mut Tx<'_>) -> Option<Completion>;

    /// Answers the caller with an error without running.
    fn fail(self: Box<Self>, error: StoreError);
}

/// A caller's closure and where to send its result.
pub(crate) struct ClosureJob<F, T> {
    pub work: F,
    pub reply: oneshot::Sender<Result<T>>,
    pub durable: bool,
}

impl<F, T> Job for ClosureJob<F, T>
where
    F: FnOnce(&mut Tx<'_>) -> Result<T> + Send + 'static,
    T: Send + 'static,
{
    fn durable(&self) -> bool {
        self.durable
    }

    fn run(self: Box<Self>, tx: &mut Tx<'_>) -> Option<Completion> {
        let ClosureJob { work, reply, .. } = *self;
        let outcome = catch_unwind(AssertUnwindSafe(|| work(tx))).unwrap_or_else(|panic| {
            Err(StoreError::TransactionPanicked {
                message: panic_message(panic.as_ref()),
            })
        });
        match outcome {
            Ok(value) => Some(Box::new(move |committed: Result<()>| {
                // The caller may have stopped waiting; the write stands anyway.
                let _ = reply.send(committed.map(|()| value));
            })),
            Err(error) => {
                let _ = reply.send(Err(error));
                None
            }
        }
    }

    fn fail(self: Box<Self>, error: StoreError) {
        let _ = self.reply.send(Err(error));
    }
}

pub(crate) fn panic_message(panic: &(dyn Any + Send)) -> String {
    if let Some(text) = panic.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = panic.downcast_ref::<String>() {
        text.clone()
    } else {
        "a panic without a message".to_owned()
    }
}

/// A write that has been handed to the writer. Await it (async callers) or
/// call [`Commit::wait`] (blocking callers); it resolves once the write's
/// commit is durable, or with the error that rolled it back.
///
/// The write is queued when the `Commit` is made, not when it is first
/// polled, so writes from one caller commit in the order they were made.
/// Dropping a `Commit` does not cancel its write.
#[must_use = "a write is acknowledged only when its Commit resolves"]
pub struct Commit<T> {
    state: CommitState<T>,
}

enum CommitState<T> {
    Waiting(oneshot::Receiver<Result<T>>),
    Failed(Option<StoreError>),
}

impl<T> Commit<T> {
    pub(crate) fn waiting(receiver: oneshot::Receiver<Result<T>>) -> Self {
        Self {
            state: CommitState::Waiting(receiver),
        }
    }

    pub(crate) fn failed(error: StoreError) -> Self {
        Self {
            state: CommitState::Failed(Some(error)),
        }
    }

    /// Blocks the calling thread until the write is durable. Not for async
    /// code: it would stall the executor (and tokio panics if its runtime
    /// is running on this thread).
    pub fn wait(self) -> Result<T> {
        match self.state {
            CommitState::Waiting(receiver) => receiver.blocking_recv().unwrap_or(Err(StoreError::WriterStopped)),
            CommitState::Failed(error) => Err(error.unwrap_or(StoreError::WriterStopped)),
        }
    }
}

impl<T> Future for Commit<T> {
    type Output = Result<T>;

    fn poll(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        match &mut this.state {
            CommitState::Waiting(receiver) => Pin::new(receiver)
                .poll(context)
                .map(|received| received.unwrap_or(Err(StoreError::WriterStopped))),
            CommitState::Failed(error) => Poll::Ready(Err(error.take().unwrap_or(StoreError::WriterStopped))),
        }
    }
}

/// The writer thread's state.
pub(crate) struct Writer {
    db: Arc<Database>,
    notifier: Arc<Notifier>,
    jobs: mpsc::Receiver<Box<dyn Job>>,
    /// The sequence number the next transaction gets.
    next_seq: u64,
    /// Why the writer stopped taking writes, once it has.
    failure: Option<String>,
}

/// How one job's transaction ended.
enum JobEnd {
    Committed {
        completion: Completion,
        events: Vec<Event>,
    },
    RolledBack,
    /// The transaction could not begin or commit: the writer must stop.
    StorageFailed(String),
}

impl Writer {
    pub(crate) fn new(
        db: Arc<Database>,
        notifier: Arc<Notifier>,
        jobs: mpsc::Receiver<Box<dyn Job>>,
        last_seq: u64,
    ) -> Self {
        Self {
            db,
            notifier,
            jobs,
            next_seq: last_seq.saturating_add(1),
            failure: None,
        }
    }

    /// Runs until every sender is gone.
    pub(crate) fn run(mut self) {
        while let Ok(first) = self.jobs.recv() {
            let mut group = vec![first];
            while group.len() < MAX_GROUP_JOBS {
                match self.jobs.try_recv() {
                    Ok(job) => group.push(job),
                    Err(_) => break,
                }
            }
            self.run_group(group);
        }
    }

    fn run_group(&mut self, group: Vec<Box<dyn Job>>) {
        if let Some(reason) = &self.failure {
            for job in group {
                job.fail(StoreError::WriterFailed { detail: reason.clone() });
            }
            return;
        }
        let mut committed: Vec<(Completion, Vec<Event>)> = Vec::with_capacity(group.len());
        // Whether a job that needs durability committed without an fsync.
        let mut unsynced = false;
        let count = group.len();
        for (index, job) in group.into_iter().enumerate() {
            if let Some(reason) = &self.failure {
                job.fail(StoreError::WriterFailed { detail: reason.clone() });
                continue;
            }
            let needs_durability = job.durable();
            let sync_now = index + 1 == count && (needs_durability || unsynced);
            match self.run_job(job, sync_now) {
                JobEnd::Committed { completion, events } => {
                    if sync_now {
                        unsynced = false;
                    } else if needs_durability {
                        unsynced = true;
                    }
                    committed.push((completion, events));
                }
                JobEnd::RolledBack => {}
                JobEnd::StorageFailed(reason) => self.failure = Some(reason),
            }
        }
        if unsynced
            && self.failure.is_none()
            && let Err(error) = self.sync()
        {
            self.failure = Some(error.to_string());
        }
        if let Some(reason) = &self.failure {
            for (completion, _) in committed {
                completion(Err(StoreError::WriterFailed { detail: reason.clone() }));
            }
            return;
        }
        for (_, events) in &committed {
            for event in events {
                self.notifier.publish(event);
            }
        }
        for (completion, _) in committed {
            completion(Ok(()));
        }
    }

    fn run_job(&mut self, job: Box<dyn Job>, sync_now: bool) -> JobEnd {
        let seq = self.next_seq;
        let txn = match self.begin(sync_now) {
            Ok(txn) => txn,
            Err(error) => {
                let reason = error.to_string();
                job.fail(error);
                return JobEnd::StorageFailed(reason);
            }
        };
        let tables = match Tables::open(&txn) {
            Ok(tables) => tables,
            Err(error) => {
                let reason = error.to_string();
                job.fail(error);
                return JobEnd::StorageFailed(reason);
            }
        };
        let mut tx = Tx::new(tables, seq);
        // Callers' closures run under catch_unwind in `ClosureJob::run`; this
        // guards the store's own jobs. Either way the transaction rolls back.
        let completion = match catch_unwind(AssertUnwindSafe(|| job.run(&mut tx))) {
            Ok(Some(completion)) => completion,
            Ok(None) | Err(_) => return JobEnd::RolledBack,
        };
        if let Err(error) = tx.tables.counters.insert(COUNTER_COMMIT_SEQ, seq) {
            let error = StoreError::from(error);
            let reason = error.to_string();
            completion(Err(error));
            return JobEnd::StorageFailed(reason);
        }
        let events = tx.into_events();
        match txn.commit() {
            Ok(()) => {
                self.next_seq = seq.saturating_add(1);
                JobEnd::Committed { completion, events }
            }
            Err(error) => {
                let error = StoreError::from(error);
                let reason = error.to_string();
                completion(Err(error));
                JobEnd::StorageFailed(reason)
            }
        }
    }

    fn begin(&self, sync_now: bool) -> Result<redb::WriteTransaction> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(if sync_now {
            Durability::Immediate
        } else {
            Durability::None
        })?;
        Ok(txn)
    }

    /// One durable commit that makes the group's earlier commits durable.
    fn sync(&mut self) -> Result<()> {
        let seq = self.next_seq;
        let txn = self.db.begin_write()?;
        {
            let mut counters = txn.open_table(crate::schema::COUNTERS)?;
            counters.insert(COUNTER_COMMIT_SEQ, seq)?;
        }
        txn.commit()?;
        self.next_seq = seq.saturating_add(1);
        Ok(())
    }
}
