//! The single writer: one thread that owns every write transaction, and the
//! [`Commit`] future a caller waits on for its write to be durable.
//!
//! Callers hand the writer a job (a closure over a [`Tx`]). The writer takes
//! every job that is waiting as a group: each row of repeatable jobs runs in
//! one shared transaction, every other job in a transaction of its own; all
//! but the last commit go without an fsync, and the last is durable
//! (`Durability::Immediate`), so the whole group is durable with one fsync.
//! Only then are change events published and callers answered. A job that
//! fails is left out whole: its transaction is abandoned and the jobs before
//! it run again without it; the others still commit.
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

/// A unit of work for the writer.
pub(crate) trait Job: Send {
    /// Whether the caller must be answered only after an fsync. Staging a
    /// blob's chunks needs none: the blob exists only once its durable
    /// finishing commit names them.
    fn durable(&self) -> bool {
        true
    }

    /// Whether [`Job::attempt`] may run again after the transaction it ran
    /// in was abandoned. The writer runs a row of such jobs in one shared
    /// transaction; any other job gets a transaction of its own.
    fn repeatable(&self) -> bool {
        false
    }

    /// Does the work in `tx` and keeps its result for [`Job::answer`]. On
    /// `Err` the writer abandons the transaction: nothing the job wrote is
    /// kept.
    fn attempt(&mut self, tx: &mut Tx<'_>) -> Result<()>;

    /// Answers the caller: with the kept result if `outcome` is `Ok` (the
    /// commit is durable), else with `outcome`'s error.
    fn answer(self: Box<Self>, outcome: Result<()>);
}

/// A caller's closure, run once, and where to send its result.
pub(crate) struct ClosureJob<F, T> {
    work: Option<F>,
    value: Option<T>,
    reply: oneshot::Sender<Result<T>>,
    durable: bool,
}

impl<F, T> ClosureJob<F, T> {
    pub(crate) fn new(work: F, reply: oneshot::Sender<Result<T>>, durable: bool) -> Self {
        Self {
            work: Some(work),
            value: None,
            reply,
            durable,
        }
    }
}

impl<F, T> Job for ClosureJob<F, T>
where
    F: FnOnce(&mut Tx<'_>) -> Result<T> + Send + 'static,
    T: Send + 'static,
{
    fn durable(&self) -> bool {
        self.durable
    }

    fn attempt(&mut self, tx: &mut Tx<'_>) -> Result<()> {
        // The writer never runs a job that is not repeatable twice.
        let work = self.work.take().ok_or(StoreError::WriterFailed {
            detail: "a write ran twice".into(),
        })?;
        self.value = Some(catch_panic(|| work(tx))?);
        Ok(())
    }

    fn answer(self: Box<Self>, outcome: Result<()>) {
        let Self { value, reply, .. } = *self;
        // The caller may have stopped waiting; the write stands anyway.
        let _ = reply.send(outcome.and_then(|()| value.ok_or(StoreError::WriterStopped)));
    }
}

/// A caller's closure that may run more than once (it depends only on the
/// transaction and what it captured), and where to send its result.
pub(crate) struct RepeatableJob<F, T> {
    work: F,
    value: Option<T>,
    reply: oneshot::Sender<Result<T>>,
}

impl<F, T> RepeatableJob<F, T> {
    pub(crate) fn new(work: F, reply: oneshot::Sender<Result<T>>) -> Self {
        Self {
            work,
            value: None,
            reply,
        }
    }
}

impl<F, T> Job for RepeatableJob<F, T>
where
    F: Fn(&mut Tx<'_>) -> Result<T> + Send + 'static,
    T: Send + 'static,
{
    fn repeatable(&self) -> bool {
        true
    }

    fn attempt(&mut self, tx: &mut Tx<'_>) -> Result<()> {
        let work = &self.work;
        self.value = Some(catch_panic(|| work(tx))?);
        Ok(())
    }

    fn answer(self: Box<Self>, outcome: Result<()>) {
        let Self { value, reply, .. } = *self;
        let _ = reply.send(outcome.and_then(|()| value.ok_or(StoreError::WriterStopped)));
    }
}

/// Runs a caller's closure, turning a panic into an error.
fn catch_panic<T>(work: impl FnOnce() -> Result<T>) -> Result<T> {
    catch_unwind(AssertUnwindSafe(work)).unwrap_or_else(|panic| {
        Err(StoreError::TransactionPanicked {
            message: panic_message(panic.as_ref()),
        })
    })
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

/// How one attempt at a batch of jobs ended.
enum Attempt {
    Committed(Vec<Event>),
    /// The job at this index failed; the transaction was abandoned.
    Failed {
        index: usize,
        error: StoreError,
    },
    /// The transaction could not begin or commit: the writer must stop.
    StorageFailed(String),
}

/// What one group has done so far.
#[derive(Default)]
struct GroupState {
    /// Jobs whose commit is done, in commit order, to be answered once the
    /// group is durable.
    committed: Vec<Box<dyn Job>>,
    events: Vec<Event>,
    /// Whether a job that needs durability committed without an fsync.
    unsynced: bool,
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

    /// Commits the group as a few batches: each row of repeatable jobs in
    /// one transaction, every other job in one of its own, all but the last
    /// without an fsync. Then publishes the events and answers the callers.
    fn run_group(&mut self, group: Vec<Box<dyn Job>>) {
        let mut state = GroupState::default();
        let mut rest = group.into_iter().peekable();
        while let Some(first) = rest.next() {
            let mut batch = vec![first];
            if batch[0].repeatable() {
                while let Some(job) = rest.next_if(|job| job.repeatable()) {
                    batch.push(job);
                }
            }
            let sync_now = rest.peek().is_none() && (state.unsynced || batch.iter().any(|job| job.durable()));
            self.run_batch(batch, sync_now, &mut state);
        }
        if state.unsynced
            && self.failure.is_none()
            && let Err(error) = self.sync()
        {
            self.failure = Some(error.to_string());
        }
        if let Some(reason) = &self.failure {
            for job in state.committed {
                job.answer(Err(StoreError::WriterFailed { detail: reason.clone() }));
            }
            return;
        }
        for event in &state.events {
            self.notifier.publish(event);
        }
        for job in state.committed {
            job.answer(Ok(()));
        }
    }

    /// Runs `batch` in one transaction and commits it, durably if
    /// `sync_now`. A job that fails is answered with its error at once and
    /// left out: the jobs before it (repeatable, since only a batch of
    /// those holds more than one job) run again and commit without it, and
    /// the jobs after it make a batch of their own. So each job runs at most
    /// twice, and what commits is what running the jobs one by one would
    /// have kept.
    fn run_batch(&mut self, mut batch: Vec<Box<dyn Job>>, sync_now: bool, state: &mut GroupState) {
        while !batch.is_empty() {
            if let Some(reason) = &self.failure {
                for job in batch {
                    job.answer(Err(StoreError::WriterFailed { detail: reason.clone() }));
                }
                return;
            }
            match self.attempt(&mut batch, sync_now) {
                Attempt::Committed(events) => {
                    let durable = batch.iter().any(|job| job.durable());
                    state.unsynced = if sync_now { false } else { state.unsynced || durable };
                    state.events.extend(events);
                    state.committed.append(&mut batch);
                    return;
                }
                Attempt::Failed { index, error } => {
                    let after = batch.split_off(index.saturating_add(1));
                    if let Some(failed) = batch.pop() {
                        failed.answer(Err(error));
                    }
                    if !batch.is_empty() {
                        self.run_batch(std::mem::take(&mut batch), false, state);
                    }
                    batch = after;
                }
                Attempt::StorageFailed(reason) => self.failure = Some(reason),
            }
        }
    }

    fn attempt(&mut self, batch: &mut [Box<dyn Job>], sync_now: bool) -> Attempt {
        let seq = self.next_seq;
        let txn = match self.begin(sync_now) {
            Ok(txn) => txn,
            Err(error) => return Attempt::StorageFailed(error.to_string()),
        };
        let tables = match Tables::open(&txn) {
            Ok(tables) => tables,
            Err(error) => return Attempt::StorageFailed(error.to_string()),
        };
        let mut tx = Tx::new(tables, seq);
        for (index, job) in batch.iter_mut().enumerate() {
            // Callers' closures run under catch_unwind in the jobs; this
            // guards the store's own work. Returning drops the transaction
            // uncommitted, which rolls it back.
            let outcome = catch_panic(|| job.attempt(&mut tx));
            if let Err(error) = outcome {
                return Attempt::Failed { index, error };
            }
        }
        if let Err(error) = tx.tables.counters.insert(COUNTER_COMMIT_SEQ, seq) {
            return Attempt::StorageFailed(StoreError::from(error).to_string());
        }
        let events = tx.into_events();
        match txn.commit() {
            Ok(()) => {
                self.next_seq = seq.saturating_add(1);
                Attempt::Committed(events)
            }
            Err(error) => Attempt::StorageFailed(StoreError::from(error).to_string()),
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
