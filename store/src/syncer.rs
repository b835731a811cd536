//! The syncer: a thread that makes the writer's last log record durable
//! (one fdatasync) while the writer runs the next group's transactions,
//! then publishes that group's events and answers its callers.
//!
//! The writer hands it at most one record at a time: it writes the next
//! record only once the syncer reports the previous one synced, so, as
//! when the writer synced itself, the log never holds a record written
//! after one not yet durable (recovery reads a damaged record followed by
//! a whole one as damage, not as a torn tail). Groups reach the syncer in
//! commit order and leave it in that order, so events stay in order.

use std::fs::File;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Condvar, Mutex, PoisonError, mpsc};
use std::thread::JoinHandle;

use crate::error::StoreError;
use crate::events::{Event, Notifier};
use crate::writer::Job;

/// One group for the syncer: the record to sync first, if any, then the
/// events to publish and the callers to answer.
pub(crate) struct SyncedGroup {
    pub sync: bool,
    pub events: Vec<Event>,
    pub jobs: Vec<Box<dyn Job>>,
}

/// What the writer shares with the syncer.
#[derive(Default)]
struct Progress {
    /// Groups handed over whose events are not yet published.
    pending: usize,
    /// Why the log could not be synced, once it could not.
    failure: Option<String>,
}

/// The writer's end of the syncer.
pub(crate) struct Syncer {
    groups: Option<mpsc::Sender<SyncedGroup>>,
    progress: Arc<(Mutex<Progress>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

impl Syncer {
    /// Starts the thread; `log` is the write-ahead log's file (another
    /// handle on it).
    pub(crate) fn start(log: File, notifier: Arc<Notifier>) -> std::io::Result<Self> {
        let (sender, receiver) = mpsc::channel::<SyncedGroup>();
        let progress = Arc::new((Mutex::new(Progress::default()), Condvar::new()));
        let shared = progress.clone();
        let thread = std::thread::Builder::new()
            .name("capstan-store-syncer".into())
            .spawn(move || {
                for group in receiver {
                    // A panic (a caller's value dropped as it is answered)
                    // must not stop the thread: the writer waits on it.
                    let _ = catch_unwind(AssertUnwindSafe(|| sync_one(&log, &notifier, &shared, group)));
                }
            })?;
        Ok(Self {
            groups: Some(sender),
            progress,
            thread: Some(thread),
        })
    }

    pub(crate) fn thread_id(&self) -> Option<std::thread::ThreadId> {
        self.thread.as_ref().map(|thread| thread.thread().id())
    }

    /// Hands a group over. Should the thread be gone (it panicked), the
    /// group comes back for the writer to finish itself.
    pub(crate) fn hand_over(&self, group: SyncedGroup) -> Result<(), SyncedGroup> {
        let Some(groups) = &self.groups else {
            return Err(group);
        };
        let progress = &self.progress.0;
        progress.lock().unwrap_or_else(PoisonError::into_inner).pending += 1;
        groups.send(group).map_err(|mpsc::SendError(group)| {
            let mut progress = progress.lock().unwrap_or_else(PoisonError::into_inner);
            progress.pending = progress.pending.saturating_sub(1);
            group
        })
    }

    /// Waits until every group handed over is synced and its events
    /// published; fails if a sync failed.
    pub(crate) fn wait_idle(&self) -> Result<(), String> {
        let (progress, changed) = &*self.progress;
        let mut progress = progress.lock().unwrap_or_else(PoisonError::into_inner);
        while progress.pending > 0 {
            progress = changed.wait(progress).unwrap_or_else(PoisonError::into_inner);
        }
        progress.failure.clone().map_or(Ok(()), Err)
    }

    /// Whether groups handed over are still being synced.
    pub(crate) fn busy(&self) -> bool {
        self.progress.0.lock().unwrap_or_else(PoisonError::into_inner).pending > 0
    }

    /// Lets the thread finish the groups handed over, and waits for it.
    pub(crate) fn stop(&mut self) {
        drop(self.groups.take());
        if let Some(thread) = self.thread.take() {
            // A panic there has left its callers with WriterStopped.
            let _ = thread.join();
        }
    }
}

/// Counts one handed-over group as finished when dropped, even by a panic.
struct Finished<'a>(&'a (Mutex<Progress>, Condvar));

impl Drop for Finished<'_> {
    fn drop(&mut self) {
        let (state, changed) = self.0;
        let mut state = state.lock().unwrap_or_else(PoisonError::into_inner);
        state.pending = state.pending.saturating_sub(1);
        drop(state);
        changed.notify_all();
    }
}

fn sync_one(log: &File, notifier: &Notifier, progress: &(Mutex<Progress>, Condvar), group: SyncedGroup) {
    let finished = Finished(progress);
    let state = &progress.0;
    let earlier_failure = state.lock().unwrap_or_else(PoisonError::into_inner).failure.clone();
    let outcome = match earlier_failure {
        Some(reason) => Err(reason),
        None if group.sync => log.sync_data().map_err(|error| {
            let reason = format!("cannot write the write-ahead log: {error}");
            tracing::error!(%reason, "the store's writer stops");
            reason
        }),
        None => Ok(()),
    };
    if outcome.is_ok() {
        for event in &group.events {
            notifier.publish(event);
        }
    }
    if let Err(reason) = &outcome {
        let mut state = state.lock().unwrap_or_else(PoisonError::into_inner);
        state.failure.get_or_insert_with(|| reason.clone());
    }
    // The writer may write its next record now; the answers follow.
    drop(finished);
    for job in group.jobs {
        job.answer(outcome.clone().map_err(|detail| StoreError::WriterFailed { detail }));
    }
}
