//! What this side writes: the runtime's calls (`Deliver`), settlements
//! (`Return`, `Resolve`, with a rejection saying why when one cannot be
//! sent), and the `Resolve`s re-sent after a message carried a promise
//! that had already settled.

use crate::captp::codec;
use crate::captp::codec::FrameError;
use crate::captp::message::{Body, Message, Outcome};
use crate::marshal::{MarshalError, NoSlots};
use crate::value::{Reference, Value};

use super::tables::EXPORT_ENTRIES;
use super::{SendError, Session, Settlement, error_value, limit_exceeded};

/// Which settlement message to write.
#[derive(Clone, Copy)]
pub(super) enum SettlementMessage {
    Return,
    Resolve,
}

impl Session {
    /// Writes a `Deliver` for `send` or `send_only`, with a question when a
    /// result is wanted.
    pub(super) fn send_call(
        &mut self,
        target: &Value,
        method: &str,
        args: &[Value],
        want_answer: bool,
    ) -> Result<Option<Reference>, SendError> {
        self.check_open()?;
        let wire_target = self.outbound_target(target)?;
        self.body.clear();
        self.marshaller
            .encode_list(args, &mut self.tables, &self.limits.marshal, &mut self.body)?;
        let question = want_answer.then(|| self.new_question()).transpose()?;
        let message = Message::Deliver {
            target: wire_target,
            method,
            args: Body(&self.body),
            answer: question.as_ref().map(|(position, _)| *position),
            resolver: None,
        };
        if let Err(error) = codec::write_frame(&message, self.limits.max_frame_bytes, &mut self.outbound) {
            if let Some((position, _)) = &question {
                self.tables.questions.remove(position);
            }
            return Err(error.into());
        }
        self.flush_resolves();
        Ok(question.map(|(_, promise)| promise))
    }

    /// Writes a message of our own making (no body); it always fits.
    pub(super) fn write_own(&mut self, message: &Message<'_>) {
        let _ = codec::write_frame(message, self.limits.max_frame_bytes, &mut self.outbound);
    }

    /// Writes a `Return` or `Resolve`; a settlement that cannot be
    /// marshalled or framed is sent as a rejection saying why.
    pub(super) fn write_settlement(&mut self, kind: SettlementMessage, position: u64, outcome: &Settlement) {
        let (value, fulfilled) = match outcome {
            Ok(value) => (value, true),
            Err(reason) => (reason, false),
        };
        self.body.clear();
        let problem = match self
            .marshaller
            .encode(value, &mut self.tables, &self.limits.marshal, &mut self.body)
        {
            Ok(()) => match self.write_settlement_body(kind, position, fulfilled) {
                Ok(()) => None,
                Err(error) => Some(error.to_string()),
            },
            Err(MarshalError::TooLarge {
                what: EXPORT_ENTRIES, ..
            }) => {
                // The peer's calls made us export this much: it is cut off
                // rather than let the table grow.
                let reason = limit_exceeded("max_table_entries (exports)", self.limits.max_table_entries);
                self.close_with(reason, false);
                return;
            }
            Err(error) => Some(error.to_string()),
        };
        if let Some(problem) = problem {
            self.body.clear();
            let what = if fulfilled { "result" } else { "rejection" };
            let error = error_value(format!("could not send the {what}: {problem}"));
            if self
                .marshaller
                .encode(&error, &mut NoSlots, &self.limits.marshal, &mut self.body)
                .is_ok()
            {
                let _ = self.write_settlement_body(kind, position, false);
            }
        }
        self.flush_resolves();
    }

    fn write_settlement_body(
        &mut self,
        kind: SettlementMessage,
        position: u64,
        fulfilled: bool,
    ) -> Result<(), FrameError> {
        let body = Body(&self.body);
        let outcome = if fulfilled {
            Outcome::Fulfilled(body)
        } else {
            Outcome::Rejected(body)
        };
        let message = match kind {
            SettlementMessage::Return => Message::Return {
                answer: position,
                outcome,
            },
            SettlementMessage::Resolve => Message::Resolve {
                promise: position,
                outcome,
            },
        };
        codec::write_frame(&message, self.limits.max_frame_bytes, &mut self.outbound).map(|_| ())
    }

    /// Sends `Resolve` for settled exported promises that the last message
    /// carried, so that an importer who had dropped them learns again.
    pub(super) fn flush_resolves(&mut self) {
        if self.tables.resolve_after.is_empty() {
            return;
        }
        let mut done: Vec<u64> = Vec::new();
        while let Some(position) = self.tables.resolve_after.pop() {
            if done.contains(&position) {
                continue;
            }
            done.push(position);
            let Some(outcome) = self
                .tables
                .exports
                .get(&position)
                .and_then(|entry| entry.resolved.clone())
            else {
                continue;
            };
            let (value, fulfilled) = match &outcome {
                Ok(value) => (value, true),
                Err(reason) => (reason, false),
            };
            self.body.clear();
            if self
                .marshaller
                .encode(value, &mut self.tables, &self.limits.marshal, &mut self.body)
                .is_ok()
            {
                let _ = self.write_settlement_body(SettlementMessage::Resolve, position, fulfilled);
            }
        }
    }
}
