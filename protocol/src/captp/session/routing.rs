//! Where deliveries go and when settlements are released: the work
//! queue, following promises to what they settled to, queueing on
//! unsettled answers, forwarding calls back over the wire (pipelining),
//! settling answers, and disembargo, which holds a question's settlement
//! until the calls pipelined through the peer have come back, for E-order.

use std::sync::Arc;

use crate::captp::codec;
use crate::captp::message::{Body, Message, Target};
use crate::value::{Reference, Value};

use super::outbound::SettlementMessage;
use super::tables::{Answer, AnswerState, Question};
use super::{
    AnswerId, Event, RemoteKind, RemoteTarget, SendError, Session, SettleError, Settlement, error_value,
    limit_exceeded, protocol_error, reference_of,
};

/// Redirections followed when a promise settled to another promise.
const MAX_REDIRECTS: usize = 32;

/// A delivery waiting for (or being routed to) its target.
pub(super) enum Pending {
    Deliver {
        method: Arc<str>,
        args: Arc<[Value]>,
        answer: Option<AnswerId>,
        resolver: Option<Reference>,
    },
    Get {
        field: String,
        answer: AnswerId,
    },
}

impl Pending {
    pub(super) fn answer(&self) -> Option<AnswerId> {
        match self {
            Pending::Deliver { answer, .. } => *answer,
            Pending::Get { answer, .. } => Some(*answer),
        }
    }

    fn into_event(self, target: Value) -> Event {
        match self {
            Pending::Deliver {
                method,
                args,
                answer,
                resolver,
            } => Event::Deliver {
                target,
                method,
                args,
                answer,
                resolver,
            },
            Pending::Get { field, answer } => Event::Get { target, field, answer },
        }
    }
}

/// Work done after the message or call that caused it, in order, so that
/// long pipelined chains need no recursion.
pub(super) enum Work {
    Settle { answer: AnswerId, outcome: Settlement },
    Route { target: Settlement, pending: Pending },
}

/// Where a delivery goes next.
enum Route {
    Wire(Target),
    QueueOn(u64),
    Follow(Value),
    Reject(Value),
    Local,
}

impl Session {
    /// Where a send from the runtime to `target` goes on the wire.
    pub(super) fn outbound_target(&mut self, target: &Value) -> Result<Target, SendError> {
        // Only a redirection takes a value of its own.
        let mut current = std::borrow::Cow::Borrowed(target);
        for _ in 0..MAX_REDIRECTS {
            match self.next_hop(&current) {
                Route::Wire(target) => return Ok(target),
                Route::Follow(value) => current = std::borrow::Cow::Owned(value),
                Route::Reject(reason) => return Err(SendError::Rejected { reason }),
                Route::QueueOn(_) | Route::Local => {
                    return Err(SendError::NotRemote {
                        target: current.into_owned(),
                    });
                }
            }
        }
        Err(SendError::NotRemote {
            target: current.into_owned(),
        })
    }

    fn next_hop(&mut self, value: &Value) -> Route {
        let Some(target) = reference_of(value).and_then(|reference| self.tables.ours(reference)) else {
            return Route::Local;
        };
        let position = target.position;
        match target.kind {
            RemoteKind::Presence => {
                if self.tables.imports.contains(position) {
                    return Route::Wire(Target::Export(position));
                }
                return Route::Reject(error_value(format!(
                    "presence {position} was dropped from this session"
                )));
            }
            RemoteKind::Promise => {
                if target.resolution.get().is_none() && self.tables.imports.contains(position) {
                    return Route::Wire(Target::Export(position));
                }
            }
            RemoteKind::Question => {
                if let Some(question) = self.tables.questions.get_mut(&position) {
                    question.pipelined += 1;
                    return Route::Wire(Target::Answer(position));
                }
            }
            RemoteKind::Answer => match self.tables.answers.get(&position).map(|answer| &answer.state) {
                Some(AnswerState::Pending(_)) => return Route::QueueOn(position),
                Some(AnswerState::Forwarded(promise)) => return Route::Follow(promise.clone()),
                Some(AnswerState::Settled(Ok(value))) => return Route::Follow(value.clone()),
                Some(AnswerState::Settled(Err(reason))) => return Route::Reject(reason.clone()),
                None => {}
            },
        }
        match target.resolution.get() {
            Some(Ok(value)) => Route::Follow(value.clone()),
            Some(Err(reason)) => Route::Reject(reason.clone()),
            None => Route::Reject(error_value(format!(
                "{:?} {position} is no longer reachable",
                target.kind
            ))),
        }
    }

    /// Runs queued work until none is left or the session closed.
    pub(super) fn drain_work(&mut self) {
        while let Some(work) = self.work.pop_front() {
            if self.is_closed() {
                self.work.clear();
                return;
            }
            match work {
                Work::Settle { answer, outcome } => {
                    let _ = self.settle_answer(answer, outcome);
                }
                Work::Route { target, pending } => self.route(target, pending),
            }
        }
    }

    /// Settles one of our answers: writes the `Return`, reports the promise
    /// made for it, and routes the calls queued on it.
    pub(super) fn settle_answer(&mut self, id: AnswerId, outcome: Settlement) -> Result<(), SettleError> {
        let Some(answer) = self.tables.answer_mut(id) else {
            return Ok(());
        };
        if matches!(answer.state, AnswerState::Settled(_)) {
            return Err(SettleError::AnswerAlreadySettled(id.position));
        }
        let queue = match std::mem::replace(&mut answer.state, AnswerState::Settled(outcome.clone())) {
            AnswerState::Pending(queue) => queue,
            AnswerState::Forwarded(_) | AnswerState::Settled(_) => Vec::new(),
        };
        let promise = answer.promise.clone();
        let exported_as = answer.exported_as;
        self.write_settlement(SettlementMessage::Return, id.position, &outcome);
        if let Some(promise) = promise {
            if let Some(target) = RemoteTarget::of(&promise) {
                let _ = target.resolution.set(outcome.clone());
            }
            self.tables.events.push_back(Event::Settled {
                promise,
                outcome: outcome.clone(),
            });
        }
        if let Some(position) = exported_as
            && let Some(entry) = self.tables.exports.get_mut(&position)
            && entry.resolved.is_none()
        {
            entry.resolved = Some(outcome.clone());
            self.write_settlement(SettlementMessage::Resolve, position, &outcome);
        }
        for pending in queue {
            self.work.push_back(Work::Route {
                target: outcome.clone(),
                pending,
            });
        }
        Ok(())
    }

    /// Points one of our unsettled answers at `promise` (see
    /// [`Session::forward_answer`]) and routes the calls queued on it.
    pub(super) fn forward_pending_answer(&mut self, id: AnswerId, promise: Value) -> Result<(), SettleError> {
        let Some(answer) = self.tables.answer_mut(id) else {
            return Ok(());
        };
        let queue = match std::mem::replace(&mut answer.state, AnswerState::Forwarded(promise.clone())) {
            AnswerState::Pending(queue) => queue,
            AnswerState::Forwarded(_) => Vec::new(),
            settled @ AnswerState::Settled(_) => {
                answer.state = settled;
                return Err(SettleError::AnswerAlreadySettled(id.position));
            }
        };
        for pending in queue {
            self.work.push_back(Work::Route {
                target: Ok(promise.clone()),
                pending,
            });
        }
        Ok(())
    }

    /// Delivers `pending` to what `target` settled to, following promises.
    pub(super) fn route(&mut self, target: Settlement, pending: Pending) {
        let mut current = match target {
            Ok(value) => value,
            Err(reason) => return self.reject_pending(pending, reason),
        };
        for _ in 0..MAX_REDIRECTS {
            match self.next_hop(&current) {
                Route::Wire(target) => return self.forward(target, pending),
                Route::Follow(value) => current = value,
                Route::Reject(reason) => return self.reject_pending(pending, reason),
                Route::QueueOn(position) => {
                    if let Some(Answer {
                        state: AnswerState::Pending(queue),
                        ..
                    }) = self.tables.answers.get_mut(&position)
                    {
                        if queue.len() >= self.limits.max_queued_per_answer {
                            let reason = limit_exceeded("max_queued_per_answer", self.limits.max_queued_per_answer);
                            return self.close_with(reason, false);
                        }
                        queue.push(pending);
                    }
                    return;
                }
                Route::Local => {
                    self.tables.events.push_back(pending.into_event(current));
                    return;
                }
            }
        }
        self.reject_pending(pending, error_value("too many promise redirections"));
    }

    fn reject_pending(&mut self, pending: Pending, reason: Value) {
        if let Some(answer) = pending.answer() {
            self.work.push_back(Work::Settle {
                answer,
                outcome: Err(reason),
            });
        }
    }

    /// Sends a delivery queued on one of our answers on to the peer, with
    /// a question of our own whose result settles that answer.
    fn forward(&mut self, target: Target, pending: Pending) {
        let answer = pending.answer();
        let question = answer.map(|answer| {
            let position = self.next_question;
            self.next_question += 1;
            self.tables.questions.insert(
                position,
                Question {
                    promise: None,
                    forward: Some(answer),
                    pipelined: 0,
                    returned: None,
                    pipelined_at_embargo: 0,
                },
            );
            position
        });
        let written = match &pending {
            Pending::Deliver { method, args, .. } => {
                self.body.clear();
                match self
                    .marshaller
                    .encode_list(args, &mut self.tables, &self.limits.marshal, &mut self.body)
                {
                    Ok(()) => {
                        let message = Message::Deliver {
                            target,
                            method,
                            args: Body(&self.body),
                            answer: question,
                            resolver: None,
                        };
                        codec::write_frame(&message, self.limits.max_frame_bytes, &mut self.outbound)
                            .map_err(|error| error.to_string())
                    }
                    Err(error) => Err(error.to_string()),
                }
            }
            Pending::Get { field, .. } => {
                let message = Message::Get {
                    target,
                    field,
                    answer: question.unwrap_or(0),
                };
                codec::write_frame(&message, self.limits.max_frame_bytes, &mut self.outbound)
                    .map_err(|error| error.to_string())
            }
        };
        match written {
            Ok(_) => self.flush_resolves(),
            Err(problem) => {
                if let Some(position) = question {
                    self.tables.questions.remove(&position);
                }
                self.reject_pending(pending, error_value(format!("could not forward the call: {problem}")));
            }
        }
    }

    /// Writes a `Disembargo` for `question`, remembering how many sends it
    /// covers.
    pub(super) fn send_disembargo(&mut self, question: u64) {
        if let Some(entry) = self.tables.questions.get_mut(&question) {
            entry.pipelined_at_embargo = entry.pipelined;
        }
        let embargo = self.next_embargo;
        self.next_embargo += 1;
        self.embargoes.insert(embargo, question);
        self.write_own(&Message::Disembargo {
            target: Target::Answer(question),
            embargo,
        });
    }

    /// The peer's `Disembargo` on an answer we returned: echo it, so that
    /// it follows every call already forwarded back to the peer for it.
    pub(super) fn on_disembargo(&mut self, target: Target, embargo: u64) -> Result<(), String> {
        let Target::Answer(position) = target else {
            return Err(protocol_error("Disembargo must target an answer"));
        };
        match self.tables.answers.get(&position) {
            Some(Answer {
                state: AnswerState::Settled(_),
                ..
            }) => {
                let reply = Message::DisembargoReply { embargo };
                self.write_own(&reply);
            }
            Some(_) => {
                return Err(protocol_error(format!("Disembargo on unsettled answer {position}")));
            }
            None => {
                return Err(protocol_error(format!("Disembargo on unknown answer {position}")));
            }
        }
        Ok(())
    }

    /// Our `Disembargo` came back: the calls pipelined before it have
    /// arrived, so the held settlement can be released.
    pub(super) fn on_disembargo_reply(&mut self, embargo: u64) -> Result<(), String> {
        let Some(question) = self.embargoes.remove(&embargo) else {
            return Err(protocol_error(format!("DisembargoReply for unknown embargo {embargo}")));
        };
        let Some(entry) = self.tables.questions.get_mut(&question) else {
            return Ok(());
        };
        if entry.pipelined > entry.pipelined_at_embargo {
            // Sent through the peer after the last marker: wait
            // for those too.
            self.send_disembargo(question);
        } else if let Some(outcome) = entry.returned.take() {
            self.release_question(question, outcome);
        }
        Ok(())
    }

    /// Reports how a question settled and lets the peer free its answer.
    pub(super) fn release_question(&mut self, position: u64, outcome: Settlement) {
        let Some(question) = self.tables.questions.remove(&position) else {
            return;
        };
        self.answer_drops.push(position);
        if let Some(promise) = question.promise {
            if let Some(target) = RemoteTarget::of(&promise) {
                let _ = target.resolution.set(outcome.clone());
            }
            self.tables.events.push_back(Event::Settled { promise, outcome });
        }
    }

    /// Records and reports the settlement of a promise this session made.
    pub(super) fn settle_made_promise(&mut self, promise: Reference, outcome: Settlement) {
        if let Some(target) = RemoteTarget::of(&promise) {
            let _ = target.resolution.set(outcome.clone());
        }
        self.tables.events.push_back(Event::Settled { promise, outcome });
    }
}
