//! Holds across nodes: a formula id given to a peer keeps its formula
//! alive here while that peer's node holds it, and a node that lets go of
//! another node's id tells the node that gave it, durably.
//!
//! Holds follow the path an id travelled. The node that gives an id to a
//! peer (in a package, or as a request's answer) records that the peer
//! holds it, before the id leaves ([`give`]); the receiving node records
//! it as held from the giver, in the commit that keeps it. That giver is
//! the id's owner, or a node passing a third node's id on: the forwarding
//! node's record of what it gave is a root of its own collection, so it
//! keeps holding the id from the owner for as long as anyone it passed the
//! id to holds it. No node has to trust a third node's word about holds.
//! An id given back to its own node is recorded by neither side.
//!
//! After each collection the node calls [`release_unreachable`] with the
//! other nodes' ids it still reaches; the rest are queued (in the store)
//! as release batches to their givers, sent by [`send_releases`] until
//! each is acknowledged, at start, after queueing, when the giver opens a
//! session to us, and with a growing pause after a failure. The giver
//! applies each batch once (the gateway's `release`). `forget` drops
//! every hold of a peer the user no longer trusts.

use std::cell::Cell;
use std::collections::HashSet;
use std::rc::Rc;
use std::time::Duration;

use capstan_protocol::ErrorValue;
use capstan_store::{FormulaId, NodeId, StoreError};

use super::{Daemon, peers};

/// The ids of `ids` a node gives `peer` that make a hold: all but the
/// peer's own (a node holds its own formulas itself).
pub fn holdable(peer: NodeId, ids: &[FormulaId]) -> Vec<FormulaId> {
    ids.iter().copied().filter(|id| id.node() != peer).collect()
}

/// Records, durably, that `peer` is given `ids` (ours, or other nodes'
/// passed on), before they leave. Returns the ids recorded, for
/// [`ungive`] if the peer refuses them.
pub async fn give(daemon: &Daemon, peer: NodeId, ids: &[FormulaId]) -> Result<Vec<FormulaId>, ErrorValue> {
    let given = holdable(peer, ids);
    if !given.is_empty() {
        let recorded = given.clone();
        daemon.store.transact(move |tx| tx.give_holds(peer, &recorded)).await?;
    }
    Ok(given)
}

/// Takes back what [`give`] recorded for a send the peer refused.
pub async fn ungive(daemon: &Daemon, peer: NodeId, given: Vec<FormulaId>) {
    if given.is_empty() {
        return;
    }
    if let Err(error) = daemon.store.transact(move |tx| tx.ungive_holds(peer, &given)).await {
        tracing::warn!(peer = %peer, %error, "cannot take back the holds of a refused send");
    }
}

/// The ids of `ids`, received from another node, that this node holds
/// from it: all but our own.
pub fn taken(daemon: &Daemon, ids: impl IntoIterator<Item = FormulaId>) -> Vec<FormulaId> {
    ids.into_iter().filter(|id| id.node() != daemon.node_id).collect()
}

/// Holder side, after a collection: lets go of every other node's id this
/// node holds that is not in `reachable_remote` (the other nodes' ids the
/// collection found reachable, counting those in the roots) and was last
/// received no later than commit `marked_at_seq` (the commit sequence
/// number of what the collection looked at: `Snapshot::commit_seq`, or
/// `u64::MAX` if it marked in the same transaction). Their releases are
/// queued durably, one commit, and sent. How many ids were let go of.
pub async fn release_unreachable(
    daemon: &Rc<Daemon>,
    reachable_remote: HashSet<FormulaId>,
    marked_at_seq: u64,
) -> Result<u64, StoreError> {
    let queued = daemon
        .store
        .transact(move |tx| tx.queue_hold_releases(&reachable_remote, marked_at_seq))
        .await?;
    if queued > 0 {
        tracing::info!(ids = queued, "let go of other nodes' ids; releases queued");
        send_releases(daemon);
    }
    Ok(queued)
}

/// Drops every hold `peer`'s node has on this node's formulas (and on ids
/// we passed it); how many ids it held.
pub async fn forget(daemon: &Daemon, peer: NodeId) -> Result<u64, StoreError> {
    let forgotten = daemon.store.transact(move |tx| tx.forget_holds_of(peer)).await?;
    tracing::info!(peer = %peer, ids = forgotten, "forgot a peer's holds");
    Ok(forgotten)
}

/// The first pause after a failed send of releases, and the longest.
const RETRY_FIRST: Duration = Duration::from_secs(5);
const RETRY_LONGEST: Duration = Duration::from_secs(300);

thread_local! {
    /// Whether a task sending releases runs on this (the vat's) thread,
    /// and whether more were asked for while it ran; asking also ends its
    /// pause.
    static SENDING: Cell<bool> = const { Cell::new(false) };
    static ASKED_AGAIN: Cell<bool> = const { Cell::new(false) };
    static WAKE: Rc<tokio::sync::Notify> = Rc::new(tokio::sync::Notify::new());
}

/// Sends the queued release batches to their givers, in order, each until
/// it is acknowledged, then removes it. One task does it; asked while it
/// runs, it goes round once more (at once, if it was pausing). A giver that
/// cannot be reached is tried again after a pause that doubles, from 5 s
/// to 5 min.
pub fn send_releases(daemon: &Rc<Daemon>) {
    if SENDING.with(Cell::get) {
        ASKED_AGAIN.with(|again| again.set(true));
        WAKE.with(|wake| wake.notify_one());
        return;
    }
    SENDING.with(|sending| sending.set(true));
    let daemon = Rc::clone(daemon);
    daemon.vat.clone().spawn(async move {
        let mut pause = RETRY_FIRST;
        loop {
            ASKED_AGAIN.with(|again| again.set(false));
            let all_sent = send_queued(&daemon).await;
            if all_sent && !ASKED_AGAIN.with(Cell::get) {
                break;
            }
            if !all_sent && !ASKED_AGAIN.with(Cell::get) {
                let wake = WAKE.with(Rc::clone);
                tokio::select! {
                    () = tokio::time::sleep(pause) => pause = (pause * 2).min(RETRY_LONGEST),
                    () = wake.notified() => {}
                }
            }
        }
        SENDING.with(|sending| sending.set(false));
    });
}

/// One round: every queued batch, giver by giver, in batch order; a
/// giver's later batches wait while an earlier one fails. `true` if
/// nothing is left.
async fn send_queued(daemon: &Rc<Daemon>) -> bool {
    let batches = match daemon
        .store
        .read()
        .and_then(|snapshot| snapshot.pending_release_batches())
    {
        Ok(batches) => batches,
        Err(error) => {
            tracing::warn!(%error, "cannot read the queued releases");
            return false;
        }
    };
    let mut failed: Vec<NodeId> = Vec::new();
    for batch in batches {
        if failed.contains(&batch.giver) {
            continue;
        }
        let (giver, number) = (batch.giver, batch.number);
        match peers::release_remote(daemon, giver, number, &batch.released).await {
            Ok(()) => {
                if let Err(error) = daemon
                    .store
                    .transact(move |tx| tx.remove_release_batch(giver, number))
                    .await
                {
                    tracing::warn!(peer = %giver, %error, "cannot remove an acknowledged release batch");
                    failed.push(giver);
                }
            }
            Err(error) => {
                tracing::info!(peer = %giver, batch = number, error = %error.message, "releases not sent; will try again");
                failed.push(giver);
            }
        }
    }
    failed.is_empty()
}

/// Whether releases wait to be sent to `giver` (read when it opens a
/// session to us).
pub fn releases_wait_for(daemon: &Daemon, giver: NodeId) -> bool {
    daemon
        .store
        .read()
        .and_then(|snapshot| snapshot.releases_wait_for(giver))
        .unwrap_or(false)
}
