//! The formula collector: a formula that nothing reaches from the roots is
//! removed with its names, its mailbox and (when no other formula has the
//! same hash) its blob's bytes, and its live value is cancelled.
//!
//! Reachability is [`mark`], a pure function over a [`Graph`] of formula
//! ids, so it is tested on its own. [`sweep`] builds the graph from the
//! store inside one write transaction (formulas, every name of every pet
//! store, every message still held), marks from the roots, and removes the
//! rest in that same transaction, so nothing written concurrently can fall
//! between the mark and the sweep. [`super::Daemon::collect_garbage`] adds
//! the roots only the vat thread knows (live values exported on a
//! session, values being made, formulas within their grace period),
//! submits the sweep, then cancels what was collected.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use capstan_protocol::Value;
use capstan_store::{BlobHash, FormulaId, NodeId, StoreError, Tx};

use super::formula::{Formula, Id};
use super::message::{Content, Settled, StoredMessage};
use super::{COLLECTED_IDS_KEPT, Daemon, DaemonError};

/// Formula ids and what each refers to: its formula's own references, the
/// names of the pet store it is, and the references in its mailbox.
#[derive(Clone, Debug, Default)]
pub struct Graph {
    pub edges: HashMap<FormulaId, Vec<FormulaId>>,
}

impl Graph {
    pub fn add_edge(&mut self, from: FormulaId, to: FormulaId) {
        self.edges.entry(from).or_default().push(to);
    }
}

/// Every id reachable from `roots` through `graph` (the roots included),
/// whether or not it has a formula here.
pub fn mark(graph: &Graph, roots: impl IntoIterator<Item = FormulaId>) -> HashSet<FormulaId> {
    let mut reached = HashSet::new();
    let mut to_visit: Vec<FormulaId> = roots.into_iter().collect();
    while let Some(id) = to_visit.pop() {
        if !reached.insert(id) {
            continue;
        }
        if let Some(next) = graph.edges.get(&id) {
            to_visit.extend(next.iter().filter(|next| !reached.contains(next)).copied());
        }
    }
    reached
}

/// What one collection did.
#[derive(Clone, Debug, Default)]
pub struct Collected {
    /// The formulas removed.
    pub formulas: Vec<FormulaId>,
    /// How many of each type were removed, by type name.
    pub by_type: BTreeMap<String, u64>,
    /// Blobs whose bytes were deleted.
    pub blobs: u64,
    /// Bytes freed: formula records, blob bytes and messages.
    pub bytes_freed: u64,
    /// Formulas left in the store.
    pub formulas_left: u64,
    /// Formula ids of other nodes reached from the roots: this node still
    /// holds them. (Holds across nodes compare this with the previous run
    /// to tell owners what this node let go.)
    pub remote_reachable: HashSet<FormulaId>,
    /// Ids of other nodes this node held and no longer reaches, queued
    /// (in the sweep's commit) to be released to the nodes that gave them.
    pub releases_queued: u64,
}

/// Ids named inside a message: its ends, its references, its requester
/// and the value it was answered with.
fn message_references(message: &StoredMessage) -> Vec<&Id> {
    let mut ids = vec![&message.from, &message.to];
    match &message.content {
        Content::Package { ids: references, .. } => ids.extend(references.iter()),
        Content::Request { requester, settled, .. } => {
            ids.push(requester);
            if let Some(Settled::Resolved(id)) = settled {
                ids.push(id);
            }
        }
    }
    ids
}

/// Marks from the node's roots (`roots`, plus every stored invitation and
/// every formula that cannot be read) and removes everything else of this
/// node, in `tx`. With `keep_blob_bytes`, a collected blob formula's bytes
/// stay (a blob upload is in flight); `protected_hashes` are never deleted.
pub fn sweep(
    tx: &mut Tx<'_>,
    node: NodeId,
    roots: &HashSet<FormulaId>,
    protected_hashes: &HashSet<BlobHash>,
    keep_blob_bytes: bool,
) -> Result<Collected, StoreError> {
    let mut graph = Graph::default();
    let mut all_roots: Vec<FormulaId> = roots.iter().copied().collect();
    // What peers were given stays while they hold it (read here, in the
    // sweep's own transaction, so a hold taken meanwhile is seen).
    all_roots.extend(tx.formulas_held_by_peers()?);
    let mut formulas = HashMap::new();
    let mut record_lens = HashMap::new();
    for (id, record) in tx.all_formulas()? {
        record_lens.insert(id, (record.body.len() + record.formula_type.len()) as u64);
        match Formula::from_record(&record) {
            Ok(formula) => {
                for dependency in formula.dependencies() {
                    if let Ok(dependency) = dependency.get() {
                        graph.add_edge(id, dependency);
                    }
                }
                // An outstanding invitation is held by whoever has its
                // locator, which no name here records.
                if matches!(formula, Formula::Invitation { .. }) {
                    all_roots.push(id);
                }
                formulas.insert(id, formula);
            }
            // What cannot be read cannot be traced: keep it, and so keep
            // nothing less than before.
            Err(_) => all_roots.push(id),
        }
    }
    for (pet_store, named) in tx.all_names()? {
        graph.add_edge(pet_store, named);
    }
    for (agent, bytes) in tx.all_messages()? {
        if let Ok(message) = StoredMessage::decode(&bytes) {
            for id in message_references(&message) {
                if let Ok(id) = id.get() {
                    graph.add_edge(agent, id);
                }
            }
        }
    }
    let reached = mark(&graph, all_roots);

    let mut collected = Collected {
        remote_reachable: reached.iter().filter(|id| id.node() != node).copied().collect(),
        ..Collected::default()
    };
    let mut kept_hashes = HashSet::new();
    let mut collected_hashes = HashSet::new();
    for (id, formula) in &formulas {
        if let Formula::ReadableBlob { hash } = formula
            && let Ok(hash) = hash.parse::<BlobHash>()
        {
            if reached.contains(id) {
                kept_hashes.insert(hash);
            } else {
                collected_hashes.insert(hash);
            }
        }
    }
    for (id, formula) in &formulas {
        if reached.contains(id) || id.node() != node {
            continue;
        }
        tx.remove_formula(*id)?;
        tx.remove_pet_store(*id)?;
        let message_bytes = tx.remove_mailbox(*id)?;
        let record_bytes = record_lens.get(id).copied().unwrap_or(0);
        collected.bytes_freed = collected
            .bytes_freed
            .saturating_add(record_bytes)
            .saturating_add(message_bytes);
        *collected.by_type.entry(formula.type_name().to_string()).or_default() += 1;
        collected.formulas.push(*id);
    }
    if !keep_blob_bytes {
        for hash in collected_hashes {
            if kept_hashes.contains(&hash) || protected_hashes.contains(&hash) {
                continue;
            }
            let len = tx.blob_len(hash)?.unwrap_or(0);
            if tx.remove_blob(hash)? {
                collected.blobs += 1;
                collected.bytes_freed = collected.bytes_freed.saturating_add(len);
            }
        }
    }
    collected.formulas_left = record_lens.len().saturating_sub(collected.formulas.len()) as u64;
    // Marked in this very transaction: every id received before it is
    // judged, none received after.
    collected.releases_queued = tx.queue_hold_releases(&collected.remote_reachable, u64::MAX)?;
    Ok(collected)
}

impl Daemon {
    fn grace(&self) -> Duration {
        Duration::from_secs(self.gc_options.grace_seconds)
    }

    /// Spares `id` for the grace period: it was just made or incarnated,
    /// and may not be named or exported yet.
    pub(super) fn note_recent(&self, id: FormulaId) {
        let now = Instant::now();
        let mut recent = self.gc.recent.borrow_mut();
        while recent
            .front()
            .is_some_and(|(when, _)| now.duration_since(*when) > self.grace())
        {
            recent.pop_front();
        }
        recent.push_back((now, id));
    }

    /// A blob upload starts: no blob bytes are deleted until it ends.
    pub fn blob_upload_started(&self) {
        self.gc.uploads.set(self.gc.uploads.get().saturating_add(1));
    }

    /// A blob upload ended, with the hash it stored if it succeeded: those
    /// bytes are spared for the grace period, until their formula is
    /// written.
    pub fn blob_upload_ended(&self, stored: Option<BlobHash>) {
        self.gc.uploads.set(self.gc.uploads.get().saturating_sub(1));
        if let Some(hash) = stored {
            let now = Instant::now();
            let mut recent = self.gc.recent_blobs.borrow_mut();
            while recent
                .front()
                .is_some_and(|(when, _)| now.duration_since(*when) > self.grace())
            {
                recent.pop_front();
            }
            recent.push_back((now, hash));
        }
    }

    /// How many values are live (made and not cancelled, or being made).
    pub fn incarnation_count(&self) -> usize {
        self.live.borrow().len()
    }

    /// The roots only the vat thread knows, besides the root formulas:
    /// formulas within their grace period, values being made, and values
    /// exported on some session (a worker, a peer or a CLI holds them).
    fn gc_roots(&self) -> HashSet<FormulaId> {
        let now = Instant::now();
        let grace = self.grace();
        let mut roots: HashSet<FormulaId> = [
            self.roots.endo,
            self.roots.host,
            self.roots.host_handle,
            self.roots.host_pet_store,
            self.roots.main_worker,
            self.roots.least_authority,
            self.roots.pins,
            self.roots.kernel,
        ]
        .into_iter()
        .collect();
        roots.extend(
            self.gc
                .recent
                .borrow()
                .iter()
                .filter(|(when, _)| now.duration_since(*when) <= grace)
                .map(|(_, id)| *id),
        );
        for (id, value) in self.live.borrow().iter() {
            let held = match value {
                // Still being made (or a promise someone holds).
                Value::Promise(_) => true,
                Value::Remotable(reference) => self.vat.exported_on_any_session(reference),
                _ => false,
            };
            if held {
                roots.insert(*id);
            }
        }
        // Formulas held by peers are added by `sweep`, in its transaction.
        roots
    }

    /// Collects every formula nothing reaches: removes them from the store
    /// in one commit, then cancels their values (stopping their workers).
    /// Never runs twice at once; a second caller waits for the first.
    pub async fn collect_garbage(&self) -> Result<Collected, DaemonError> {
        let _running = self.gc.running.lock().await;
        self.gc.due.set(None);
        let roots = self.gc_roots();
        let now = Instant::now();
        let grace = self.grace();
        let protected: HashSet<BlobHash> = self
            .gc
            .recent_blobs
            .borrow()
            .iter()
            .filter(|(when, _)| now.duration_since(*when) <= grace)
            .map(|(_, hash)| *hash)
            .collect();
        let keep_blob_bytes = self.gc.uploads.get() > 0;
        let node = self.node_id;
        let collected = self
            .store
            .transact(move |tx| sweep(tx, node, &roots, &protected, keep_blob_bytes))
            .await?;
        let gone: HashSet<FormulaId> = collected.formulas.iter().copied().collect();
        {
            let mut remembered = self.gc.collected.borrow_mut();
            if remembered.len() + gone.len() > COLLECTED_IDS_KEPT {
                remembered.clear();
            }
            remembered.extend(gone.iter().copied());
        }
        // Values of other nodes' formulas this node no longer reaches are
        // let go too, so the owner's session sees them dropped.
        let unreached_remote: Vec<FormulaId> = self
            .live
            .borrow()
            .keys()
            .filter(|id| id.node() != self.node_id && !collected.remote_reachable.contains(id))
            .copied()
            .collect();
        for id in unreached_remote {
            self.cancel(id);
        }
        let mut stopped_workers = false;
        for id in &collected.formulas {
            stopped_workers |= self.workers.is_running(*id);
            self.cancel(*id);
        }
        // A stopped worker's session held what it was given; once that
        // session has ended those values may be free too.
        if stopped_workers {
            self.schedule_collection();
        }
        // What was made from a collected formula was collected with it;
        // drop the stale records the other way round.
        self.dependents.borrow_mut().retain(|_, dependents| {
            dependents.retain(|id| !gone.contains(id));
            !dependents.is_empty()
        });
        if collected.releases_queued > 0 {
            super::holds::send_releases(&self.rc());
        }
        if !collected.formulas.is_empty() {
            tracing::info!(
                formulas = collected.formulas.len(),
                blobs = collected.blobs,
                bytes = collected.bytes_freed,
                "collected formulas nothing reaches"
            );
        }
        Ok(collected)
    }

    /// Asks for a collection after the configured delay; each call pushes
    /// it back, so a burst of changes makes one collection.
    pub fn schedule_collection(&self) {
        let delay = Duration::from_millis(self.gc_options.delay_ms);
        self.gc.due.set(Some(Instant::now() + delay));
        if self.gc.timer.replace(true) {
            return;
        }
        let daemon = self.rc();
        self.vat.spawn(async move {
            while let Some(due) = daemon.gc.due.get() {
                let now = Instant::now();
                if due > now {
                    tokio::time::sleep(due - now).await;
                    continue;
                }
                if let Err(error) = daemon.collect_garbage().await {
                    tracing::warn!(%error, "the formula collector failed");
                }
            }
            daemon.gc.timer.set(false);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn id(number: u8) -> FormulaId {
        let mut bytes = [0u8; 32];
        bytes[0] = number;
        FormulaId::new(bytes, NodeId::from_bytes([7; 32]))
    }

    /// Reachability by the slowest obvious method: grow the set until a
    /// pass over every edge adds nothing.
    fn closure(edges: &[(u8, u8)], roots: &[u8]) -> HashSet<u8> {
        let mut reached: HashSet<u8> = roots.iter().copied().collect();
        loop {
            let before = reached.len();
            for (from, to) in edges {
                if reached.contains(from) {
                    reached.insert(*to);
                }
            }
            if reached.len() == before {
                return reached;
            }
        }
    }

    proptest! {
        #[test]
        fn mark_keeps_exactly_what_the_roots_reach(
            edges in proptest::collection::vec((0u8..40, 0u8..40), 0..120),
            roots in proptest::collection::vec(0u8..40, 0..5),
        ) {
            let mut graph = Graph::default();
            for (from, to) in &edges {
                graph.add_edge(id(*from), id(*to));
            }
            let marked = mark(&graph, roots.iter().map(|root| id(*root)));
            let expected: HashSet<FormulaId> = closure(&edges, &roots).into_iter().map(id).collect();
            prop_assert_eq!(marked, expected);
        }
    }

    /// A random store: formula `i` is one of a few kinds whose references
    /// point at other formulas (or at another node's), names in pet
    /// stores, messages in mailboxes, and blobs that formulas may share.
    #[derive(Clone, Debug)]
    struct Case {
        /// (kind, references, blob) per formula; kind 0 pet store, 1
        /// directory, 2 eval, 3 marshal, 4 worker, 5 blob.
        formulas: Vec<(u8, Vec<usize>, u8)>,
        /// (pet store index, target index)
        names: Vec<(usize, usize)>,
        /// (agent index, referenced index)
        messages: Vec<(usize, usize)>,
        roots: Vec<usize>,
    }

    fn case() -> impl Strategy<Value = Case> {
        (4usize..30).prop_flat_map(|count| {
            let formula = (0u8..6, proptest::collection::vec(0..count + 3, 0..3), 0u8..3);
            (
                proptest::collection::vec(formula, count),
                proptest::collection::vec((0..count, 0..count + 3), 0..25),
                proptest::collection::vec((0..count, 0..count + 3), 0..6),
                proptest::collection::vec(0..count, 0..4),
            )
                .prop_map(|(formulas, names, messages, roots)| Case {
                    formulas,
                    names,
                    messages,
                    roots,
                })
        })
    }

    fn temporary_store(tag: &str) -> (std::path::PathBuf, capstan_store::Store) {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let number = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("capstan-gc-{tag}-{}-{number}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = capstan_store::Store::open(&dir).unwrap();
        (dir, store)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

        /// Against a real store: exactly the formulas the roots reach are
        /// left, a blob's bytes go only with the last formula of its hash,
        /// the other node's ids reached are reported, and nothing collected
        /// comes back when the store is opened again.
        #[test]
        fn a_sweep_leaves_exactly_what_is_reachable_and_it_stays_so(case in case()) {
            let (dir, store) = temporary_store("sweep");
            let node = store.node_id();
            let other = NodeId::from_bytes([9; 32]);
            let count = case.formulas.len();
            // Indexes past the formulas are another node's ids.
            let ids: Vec<FormulaId> = (0..count + 3)
                .map(|index| if index < count { FormulaId::random(node).unwrap() } else { FormulaId::random(other).unwrap() })
                .collect();
            let hashes: Vec<BlobHash> = (0u8..3)
                .map(|blob| store.store_blob(&[blob; 100]).wait().unwrap())
                .collect();
            let formulas: Vec<Formula> = case
                .formulas
                .iter()
                .enumerate()
                .map(|(index, (kind, references, blob))| {
                    let refs = || references.iter().map(|reference| Id::from(ids[*reference])).collect::<Vec<_>>();
                    match kind {
                        0 => Formula::PetStore,
                        1 => Formula::Directory {
                            pet_store: Id::from(ids[references.first().copied().unwrap_or(index)]),
                        },
                        2 => Formula::Eval {
                            worker: Id::from(ids[index]),
                            source: "1".into(),
                            names: refs().iter().map(|_| "x".to_string()).collect(),
                            values: refs(),
                        },
                        3 => Formula::Marshal { body: "#null".into(), slots: refs() },
                        4 => Formula::Worker,
                        _ => Formula::ReadableBlob { hash: hashes[*blob as usize].to_hex() },
                    }
                })
                .collect();
            let names = case.names.clone();
            let messages = case.messages.clone();
            let (ids_for_tx, formulas_for_tx) = (ids.clone(), formulas.clone());
            store
                .transact(move |tx| {
                    for (index, formula) in formulas_for_tx.iter().enumerate() {
                        tx.put_formula(ids_for_tx[index], &formula.to_record().unwrap())?;
                    }
                    for (number, (pet_store, target)) in names.iter().enumerate() {
                        let name = capstan_store::PetName::new(format!("n{number}"))?;
                        tx.write_name(ids_for_tx[*pet_store], &name, ids_for_tx[*target])?;
                    }
                    for (agent, reference) in &messages {
                        let message = StoredMessage {
                            date: "2026-01-01T00:00:00.000Z".into(),
                            from: Id::from(ids_for_tx[*agent]),
                            to: Id::from(ids_for_tx[*agent]),
                            content: Content::Package {
                                strings: vec![String::new(), String::new()],
                                names: vec!["a".into()],
                                ids: vec![Id::from(ids_for_tx[*reference])],
                            },
                        };
                        tx.append_message(ids_for_tx[*agent], &message.encode().unwrap())?;
                    }
                    Ok(())
                })
                .wait()
                .unwrap();

            // The oracle: the closure of the case's own description.
            let mut edges: Vec<(usize, usize)> = Vec::new();
            for (index, formula) in formulas.iter().enumerate() {
                for reference in formula.dependencies() {
                    let target = ids.iter().position(|id| Id::from(*id) == *reference).unwrap();
                    edges.push((index, target));
                }
            }
            edges.extend(case.names.iter().copied());
            // A message refers to its ends (here the agent itself) and its
            // reference.
            edges.extend(case.messages.iter().copied());
            let mut reached: HashSet<usize> = case.roots.iter().copied().collect();
            loop {
                let before = reached.len();
                for (from, to) in &edges {
                    if reached.contains(from) {
                        reached.insert(*to);
                    }
                }
                if reached.len() == before {
                    break;
                }
            }

            let roots: HashSet<FormulaId> = case.roots.iter().map(|root| ids[*root]).collect();
            let collected = store
                .transact(move |tx| sweep(tx, node, &roots, &HashSet::new(), false))
                .wait()
                .unwrap();
            let expected_remote: HashSet<FormulaId> =
                reached.iter().filter(|index| **index >= count).map(|index| ids[*index]).collect();
            prop_assert_eq!(&collected.remote_reachable, &expected_remote);
            prop_assert_eq!(collected.formulas.len(), (0..count).filter(|index| !reached.contains(index)).count());

            let check = |store: &capstan_store::Store| -> Result<(), TestCaseError> {
                let snapshot = store.read().unwrap();
                for (index, id) in ids.iter().enumerate().take(count) {
                    prop_assert_eq!(snapshot.has_formula(*id).unwrap(), reached.contains(&index), "formula {}", index);
                    if !reached.contains(&index) {
                        prop_assert!(snapshot.list_names(*id).unwrap().is_empty());
                        prop_assert!(snapshot.list_messages(*id).unwrap().is_empty());
                    }
                }
                for (blob, hash) in hashes.iter().enumerate() {
                    let used_by_survivor = (0..count).any(|index| {
                        reached.contains(&index) && case.formulas[index].0 == 5 && case.formulas[index].2 as usize == blob
                    });
                    let used_at_all = (0..count).any(|index| case.formulas[index].0 == 5 && case.formulas[index].2 as usize == blob);
                    // Bytes no formula ever named are not the collector's.
                    prop_assert_eq!(snapshot.has_blob(*hash).unwrap(), used_by_survivor || !used_at_all, "blob {}", blob);
                }
                Ok(())
            };
            check(&store)?;
            store.close().unwrap();
            let reopened = capstan_store::Store::open(&dir).unwrap();
            check(&reopened)?;
            // A second sweep from the same roots finds nothing more.
            let roots: HashSet<FormulaId> = case.roots.iter().map(|root| ids[*root]).collect();
            let again = reopened
                .transact(move |tx| sweep(tx, node, &roots, &HashSet::new(), false))
                .wait()
                .unwrap();
            prop_assert!(again.formulas.is_empty());
            reopened.close().unwrap();
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
}
