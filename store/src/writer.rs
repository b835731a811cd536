//! The single writer: one thread that owns every write transaction, and the
//! [`Commit`] future a caller waits on for its write to be durable.
//!
//! Callers hand the writer a job (a closure over a [`Tx`]). The writer takes
//! every job that is waiting as a group: each row of repeatable jobs runs in
//! one shared transaction, every other job in a transaction of its own, and
//! every transaction commits without an fsync. The changes of the group's
//! transactions then go to the write-ahead log (`wal.rs`) as one record,
//! and one fdatasync of the log makes the group durable. Only then are
//! change events published and callers answered. A job that fails is left
//! out whole: its transaction is abandoned, with the changes it recorded,
//! and the jobs before it run again without it; the others still commit.
//!
//! Checkpoints (a durable redb commit, then an emptied log) come when the
//! log is large, when the writer is idle, and when the store closes.
//!
//! If a commit, a log write or an fsync fails, the writer stops taking
//! writes: after a failed fsync nothing about the files can be trusted.

use std::any::Any;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::mpsc;
use std::task::{Context, Poll};
use std::time::Duration;

use redb::{Database, Durability};
use tokio::sync::oneshot;

use crate::error::{Result, StoreError};
use crate::events::{Event, Notifier};
use crate::schema::COUNTER_COMMIT_SEQ;
use crate::tx::{Tables, Tx};
use crate::wal::{RECORD_BODY_MAX, WriteAheadLog};

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

/// How long the writer waits with no job before it makes a checkpoint of
/// the commits the log holds.
const IDLE_CHECKPOINT: Duration = Duration::from_secs(5);

/// The writer thread's state.
pub(crate) struct Writer {
    db: Arc<Database>,
    notifier: Arc<Notifier>,
    jobs: mpsc::Receiver<Box<dyn Job>>,
    log: WriteAheadLog,
    /// The sequence number the next transaction gets.
    next_seq: u64,
    /// The last transaction made durable in redb itself (the last
    /// checkpoint); the log holds the ones after it.
    checkpointed_seq: u64,
    /// Whether commits since the last checkpoint are missing from the log
    /// (their changes were too large for a record): until the next
    /// checkpoint nothing is logged, and durability takes a checkpoint.
    log_gap: bool,
    /// Log size that calls for a checkpoint.
    log_checkpoint_bytes: u64,
    /// Why the writer stopped taking writes, once it has.
    failure: Option<String>,
}

/// How one attempt at a batch of jobs ended.
enum Attempt {
    /// Committed (without an fsync) as transaction `seq`.
    Committed {
        seq: u64,
        events: Vec<Event>,
        changes: Vec<u8>,
    },
    /// The job at this index failed; the transaction was abandoned.
    Failed { index: usize, error: StoreError },
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
    /// Each committed transaction's sequence number and changes.
    transactions: Vec<(u64, Vec<u8>)>,
    /// Whether a committed job must be answered only once durable.
    durable: bool,
}

impl Writer {
    pub(crate) fn new(
        db: Arc<Database>,
        notifier: Arc<Notifier>,
        jobs: mpsc::Receiver<Box<dyn Job>>,
        log: WriteAheadLog,
        last_seq: u64,
        log_checkpoint_bytes: u64,
    ) -> Self {
        Self {
            db,
            notifier,
            jobs,
            log,
            next_seq: last_seq.saturating_add(1),
            checkpointed_seq: last_seq,
            log_gap: false,
            log_checkpoint_bytes,
            failure: None,
        }
    }

    fn last_seq(&self) -> u64 {
        self.next_seq.saturating_sub(1)
    }

    /// Whether commits since the last checkpoint exist to make one of.
    fn checkpoint_due(&self) -> bool {
        self.failure.is_none() && self.checkpointed_seq < self.last_seq()
    }

    /// Runs until every sender is gone, then makes a checkpoint and deletes
    /// the emptied log, so that a store closed cleanly leaves no log.
    pub(crate) fn run(mut self) {
        loop {
            let first = if self.checkpoint_due() {
                match self.jobs.recv_timeout(IDLE_CHECKPOINT) {
                    Ok(job) => job,
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        self.checkpoint_or_stop();
                        continue;
                    }
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                }
            } else {
                match self.jobs.recv() {
                    Ok(job) => job,
                    Err(_) => break,
                }
            };
            let mut group = vec![first];
            while group.len() < MAX_GROUP_JOBS {
                match self.jobs.try_recv() {
                    Ok(job) => group.push(job),
                    Err(_) => break,
                }
            }
            self.run_group(group);
        }
        if self.checkpoint_due() {
            self.checkpoint_or_stop();
        }
        if self.failure.is_none() {
            self.log.remove();
        }
    }

    /// Commits the group as a few batches, each row of repeatable jobs in
    /// one transaction and every other job in one of its own, all without
    /// an fsync; logs the group's changes as one record and fdatasyncs the
    /// log; then publishes the events and answers the callers.
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
            self.run_batch(batch, &mut state);
        }
        if self.failure.is_none()
            && let Err(reason) = self.make_durable(&mut state)
        {
            self.failure = Some(reason);
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
        // After the answers: the group is durable in the log already.
        if self.log.records_len() >= self.log_checkpoint_bytes {
            self.checkpoint_or_stop();
        }
    }

    /// Puts the group's changes in the log. If a job of the group needs
    /// durability, writes them (with the changes of earlier groups that
    /// needed none) as one record and fdatasyncs it; or, if the changes are
    /// too large to log, makes a checkpoint instead.
    fn make_durable(&mut self, state: &mut GroupState) -> std::result::Result<(), String> {
        for (seq, changes) in state.transactions.drain(..) {
            if self.log_gap {
                break;
            }
            if self.log.staged_body_len_with(changes.len()) > RECORD_BODY_MAX {
                self.log.discard_staged();
                self.log_gap = true;
            } else {
                self.log.stage(seq, &changes);
            }
        }
        if !state.durable {
            return Ok(());
        }
        if self.log_gap {
            return self.checkpoint();
        }
        self.log
            .write_staged()
            .and_then(|()| self.log.sync())
            .map_err(|error| format!("cannot write the write-ahead log: {error}"))
    }

    /// Makes every commit so far durable in redb (one durable commit that
    /// covers the earlier ones), then empties the log.
    fn checkpoint(&mut self) -> std::result::Result<(), String> {
        let seq = self.last_seq();
        let committed = (|| -> Result<()> {
            let txn = self.db.begin_write()?;
            {
                let mut counters = txn.open_table(crate::schema::COUNTERS)?;
                counters.insert(COUNTER_COMMIT_SEQ, seq)?;
            }
            txn.commit()?;
            self.log.reset()
        })();
        committed.map_err(|error| format!("a checkpoint failed: {error}"))?;
        self.checkpointed_seq = seq;
        self.log_gap = false;
        Ok(())
    }

    fn checkpoint_or_stop(&mut self) {
        if let Err(reason) = self.checkpoint() {
            tracing::error!(%reason, "the store's writer stops");
            self.failure = Some(reason);
        }
    }

    /// Runs `batch` in one transaction and commits it. A job that fails is
    /// answered with its error at once and left out: the jobs before it
    /// (repeatable, since only a batch of those holds more than one job)
    /// run again and commit without it, and the jobs after it make a batch
    /// of their own. So each job runs at most twice, and what commits is
    /// what running the jobs one by one would have kept.
    fn run_batch(&mut self, mut batch: Vec<Box<dyn Job>>, state: &mut GroupState) {
        while !batch.is_empty() {
            if let Some(reason) = &self.failure {
                for job in batch {
                    job.answer(Err(StoreError::WriterFailed { detail: reason.clone() }));
                }
                return;
            }
            match self.attempt(&mut batch) {
                Attempt::Committed { seq, events, changes } => {
                    state.durable |= batch.iter().any(|job| job.durable());
                    state.transactions.push((seq, changes));
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
                        self.run_batch(std::mem::take(&mut batch), state);
                    }
                    batch = after;
                }
                Attempt::StorageFailed(reason) => self.failure = Some(reason),
            }
        }
    }

    fn attempt(&mut self, batch: &mut [Box<dyn Job>]) -> Attempt {
        let seq = self.next_seq;
        let txn = match self.begin() {
            Ok(txn) => txn,
            Err(error) => return Attempt::StorageFailed(error.to_string()),
        };
        let mut tx = Tx::new(Tables::new(&txn), seq);
        for (index, job) in batch.iter_mut().enumerate() {
            // Callers' closures run under catch_unwind in the jobs; this
            // guards the store's own work. Returning drops the transaction
            // uncommitted, which rolls it back, and its changes with it.
            let outcome = catch_panic(|| job.attempt(&mut tx));
            if let Err(error) = outcome {
                return Attempt::Failed { index, error };
            }
        }
        let counted = tx
            .tables
            .counters
            .open()
            .and_then(|counters| Ok(counters.insert(COUNTER_COMMIT_SEQ, seq).map(drop)?));
        if let Err(error) = counted {
            return Attempt::StorageFailed(error.to_string());
        }
        let mut changes = Vec::new();
        tx.take_redo(&mut changes);
        let events = tx.into_events();
        match txn.commit() {
            Ok(()) => {
                self.next_seq = seq.saturating_add(1);
                Attempt::Committed { seq, events, changes }
            }
            Err(error) => Attempt::StorageFailed(StoreError::from(error).to_string()),
        }
    }

    /// A transaction that commits without an fsync: the log makes it
    /// durable.
    fn begin(&self) -> Result<redb::WriteTransaction> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::None)?;
        Ok(txn)
    }
}
