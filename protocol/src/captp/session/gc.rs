//! Distributed GC, both ways: sending `DropExports` (with the wire deltas
//! of what we received) and `DropAnswers` for what the runtime let go, and
//! freeing our exports and answers when the peer's drops arrive. An export
//! is freed only when every send of it has been acknowledged.
//!
//! A runtime that holds imports as plain [`Reference`] clones lets the
//! session find the ones it let go: [`Session::drop_unheld`] drops every
//! import whose only holder left is the session's own table, and
//! [`Session::is_gc_due`] says when the table has grown enough since the
//! last scan for another to be worth its cost.

use crate::captp::codec;
use crate::captp::message::{MAX_POSITIONS_PER_MESSAGE, Message, Positions};

use super::outbound::SettlementMessage;
use super::routing::Work;
use super::tables::AnswerState;
use super::{RemoteKind, RemoteTarget, Session, error_value, protocol_error};
use crate::value::Reference;

/// Imports a table may gain past twice what survived the last scan before
/// another scan is due: small tables are not scanned on every turn.
const SCAN_FLOOR: usize = 256;

impl Session {
    /// Drops every import (presence or imported promise) that only the
    /// session's table still holds, as [`Session::drop_reference`] would,
    /// and lets go of the promises of our questions that nobody holds
    /// (their answers are dropped when they return, as always). Returns
    /// how many imports were dropped; the drops reach the peer with the
    /// next transmit, batched. Costs one pass over the imports and
    /// questions.
    pub fn drop_unheld(&mut self) -> usize {
        let unheld: Vec<u64> = self
            .tables
            .imports
            .iter()
            .filter(|(_, import)| import.reference.is_only_holder())
            .map(|(&position, _)| position)
            .collect();
        for &position in &unheld {
            self.drop_import(position);
        }
        for question in self.tables.questions.values_mut() {
            if question.promise.as_ref().is_some_and(Reference::is_only_holder) {
                question.promise = None;
            }
        }
        self.imports_after_scan = self.tables.imports.len();
        unheld.len()
    }

    /// Whether the import table has grown past twice what survived the
    /// last [`Session::drop_unheld`] (plus a floor), so that a scan now
    /// keeps the table within a constant factor of what is really held at
    /// a cost amortized over the imports received. A runtime also scans
    /// on a timer, so that an idle session drops what it let go.
    pub fn is_gc_due(&self) -> bool {
        !self.is_closed()
            && self.tables.imports.len() >= self.imports_after_scan.saturating_mul(2).saturating_add(SCAN_FLOOR)
    }

    /// Forgets import `position` and queues its drop with its wire delta.
    pub(super) fn drop_import(&mut self, position: u64) {
        if let Some(entry) = self.tables.imports.remove(&position) {
            if RemoteTarget::of(&entry.reference).map(RemoteTarget::kind) == Some(RemoteKind::Presence) {
                self.tables.remember_interface(position, entry.reference.interface());
            }
            self.export_drops.push((position, entry.received));
        }
    }

    /// Writes the drops gathered since the last transmit, in messages of
    /// bounded size.
    pub(super) fn flush_drops(&mut self) {
        if self.is_closed() {
            self.export_drops.clear();
            self.answer_drops.clear();
            return;
        }
        let export_drops = std::mem::take(&mut self.export_drops);
        for chunk in export_drops.chunks(MAX_POSITIONS_PER_MESSAGE) {
            self.scratch_positions.clear();
            self.scratch_deltas.clear();
            for &(position, delta) in chunk {
                self.scratch_positions.push(position);
                self.scratch_deltas.push(delta);
            }
            let message = Message::DropExports {
                positions: Positions::borrowed(&self.scratch_positions),
                deltas: Positions::borrowed(&self.scratch_deltas),
            };
            let _ = codec::write_frame(&message, self.limits.max_frame_bytes, &mut self.outbound);
        }
        self.export_drops = export_drops;
        self.export_drops.clear();
        let answer_drops = std::mem::take(&mut self.answer_drops);
        for chunk in answer_drops.chunks(MAX_POSITIONS_PER_MESSAGE) {
            let message = Message::DropAnswers {
                positions: Positions::borrowed(chunk),
            };
            let _ = codec::write_frame(&message, self.limits.max_frame_bytes, &mut self.outbound);
        }
        self.answer_drops = answer_drops;
        self.answer_drops.clear();
    }

    /// The peer acknowledges `deltas` sends of each export; an export with no
    /// unacknowledged send is freed, except the bootstrap object.
    pub(super) fn on_drop_exports(&mut self, positions: &[u64], deltas: &[u64]) -> Result<(), String> {
        if positions.len() != deltas.len() {
            return Err(protocol_error(format!(
                "DropExports has {} positions but {} deltas",
                positions.len(),
                deltas.len()
            )));
        }
        for (&position, &delta) in positions.iter().zip(deltas) {
            let Some(entry) = self.tables.exports.get_mut(&position) else {
                return Err(protocol_error(format!("DropExports of unknown export {position}")));
            };
            if delta == 0 || delta > entry.sent {
                return Err(protocol_error(format!(
                    "DropExports delta {delta} for export {position}, which was sent {} times",
                    entry.sent
                )));
            }
            entry.sent -= delta;
            if entry.sent > 0 {
                continue;
            }
            if entry.pinned {
                entry.interface_sent = false;
                continue;
            }
            if let Some(entry) = self.tables.exports.remove(&position) {
                self.tables.export_positions.remove(&entry.reference);
                if let Some(answer) = entry.answer.and_then(|answer| self.tables.answers.get_mut(&answer)) {
                    answer.exported_as = None;
                }
            }
        }
        Ok(())
    }

    /// The peer no longer wants these answers; those still pending settle
    /// rejected.
    pub(super) fn on_drop_answers(&mut self, positions: &[u64]) -> Result<(), String> {
        for &position in positions {
            let Some(answer) = self.tables.answers.remove(&position) else {
                return Err(protocol_error(format!("DropAnswers of unknown answer {position}")));
            };
            let (queue, outcome) = match answer.state {
                AnswerState::Pending(queue) => {
                    let reason = error_value(format!("answer {position} was dropped before it settled"));
                    (queue, Err(reason))
                }
                // What the answer stood for is known: its promise.
                AnswerState::Forwarded(promise) => (Vec::new(), Ok(promise)),
                AnswerState::Settled(_) => continue,
            };
            // Whoever holds a promise for it learns what became of it.
            if let Some(promise) = answer.promise {
                self.settle_made_promise(promise, outcome.clone());
            }
            if let Some(export) = answer.exported_as
                && let Some(entry) = self.tables.exports.get_mut(&export)
            {
                entry.resolved = Some(outcome.clone());
                self.write_settlement(SettlementMessage::Resolve, export, &outcome);
            }
            for pending in queue {
                if let Some(answer) = pending.answer() {
                    self.work.push_back(Work::Settle {
                        answer,
                        outcome: outcome.clone(),
                    });
                }
            }
        }
        Ok(())
    }
}
