//! Distributed GC, both ways: sending `DropExports` (with the wire deltas
//! of what we received) and `DropAnswers` for what the runtime let go, and
//! freeing our exports and answers when the peer's drops arrive. An export
//! is freed only when every send of it has been acknowledged.

use crate::captp::codec;
use crate::captp::message::{MAX_POSITIONS_PER_MESSAGE, Message, Positions};

use super::outbound::SettlementMessage;
use super::routing::Work;
use super::tables::AnswerState;
use super::{Session, error_value, protocol_error};

impl Session {
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
            if let AnswerState::Pending(queue) = answer.state {
                let reason = error_value(format!("answer {position} was dropped before it settled"));
                // Whoever holds a promise for it learns it will never settle.
                if let Some(promise) = answer.promise {
                    self.settle_made_promise(promise, Err(reason.clone()));
                }
                if let Some(export) = answer.exported_as
                    && let Some(entry) = self.tables.exports.get_mut(&export)
                {
                    entry.resolved = Some(Err(reason.clone()));
                    let outcome = Err(reason.clone());
                    self.write_settlement(SettlementMessage::Resolve, export, &outcome);
                }
                for pending in queue {
                    if let Some(answer) = pending.answer() {
                        self.work.push_back(Work::Settle {
                            answer,
                            outcome: Err(reason.clone()),
                        });
                    }
                }
            }
        }
        Ok(())
    }
}
