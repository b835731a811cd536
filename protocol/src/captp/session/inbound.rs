//! What each message from the peer does: opening answers for its calls,
//! decoding bodies, and handing deliveries, returns and resolves on to
//! routing. A protocol error here aborts the session.

use std::sync::Arc;

use crate::captp::message::{Message, Outcome, Target};
use crate::marshal::{self, DecodeSlots, MarshalError, RefStyle};
use crate::value::Value;

use super::routing::{Pending, Work};
use super::tables::AnswerState;
use super::{
    Event, RemoteKind, RemoteTarget, Session, Settlement, error_value, limit_exceeded, protocol_error, reference_of,
};

/// How many of the peer's method names a session keeps for reuse.
const SHARED_METHOD_NAMES: usize = 16;

/// The longest method name a session keeps for reuse, in bytes.
const MAX_SHARED_METHOD_BYTES: usize = 64;

/// The abort reason for a body that did not decode: limits are named as limits.
fn body_error(context: &str, error: &MarshalError) -> String {
    match error {
        MarshalError::TooDeep { limit } => limit_exceeded("max_depth", *limit),
        MarshalError::TooLarge { what, claimed, limit } => {
            format!("CapTP limit exceeded: {what} of {claimed} in {context} exceeds {limit}")
        }
        other => protocol_error(format!("bad body in {context}: {other}")),
    }
}

impl Session {
    /// Handles one message from the peer; an `Err` is the reason to abort with.
    pub(super) fn on_message(&mut self, message: &Message<'_>) -> Result<(), String> {
        if matches!(
            message,
            Message::Bootstrap { .. } | Message::Deliver { .. } | Message::Get { .. }
        ) {
            self.calls_received += 1;
        }
        match message {
            Message::Bootstrap { answer } => {
                let answer = self.open_answer(*answer)?;
                let outcome = match &self.bootstrap {
                    Some(reference) => Ok(Value::Remotable(reference.clone())),
                    None => Err(error_value("this session offers no bootstrap object")),
                };
                self.work.push_back(Work::Settle { answer, outcome });
            }
            Message::Deliver {
                target,
                method,
                args,
                answer,
                resolver,
            } => {
                let answer = match answer {
                    Some(position) => {
                        if *target == Target::Answer(*position) {
                            return Err(protocol_error(format!("Deliver answer {position} targets itself")));
                        }
                        Some(self.open_answer(*position)?)
                    }
                    None => None,
                };
                let args = self.decode_args(args.0)?;
                let resolver = match resolver {
                    Some(descriptor) => Some(
                        self.tables
                            .reference(*descriptor, RefStyle::Remotable, None)
                            .map_err(|error| protocol_error(format!("bad resolver in Deliver: {error}")))?,
                    ),
                    None => None,
                };
                let pending = Pending::Deliver {
                    method: self.method_name(method),
                    args,
                    answer,
                    resolver,
                };
                self.dispatch("Deliver", *target, pending)?;
            }
            Message::Get { target, field, answer } => {
                if *target == Target::Answer(*answer) {
                    return Err(protocol_error(format!("Get answer {answer} targets itself")));
                }
                let answer = self.open_answer(*answer)?;
                let pending = Pending::Get {
                    field: (*field).to_owned(),
                    answer,
                };
                self.dispatch("Get", *target, pending)?;
            }
            Message::Resolve { promise, outcome } => self.on_resolve(*promise, *outcome)?,
            Message::Return { answer, outcome } => self.on_return(*answer, *outcome)?,
            Message::DropExports { positions, deltas } => {
                self.on_drop_exports(positions.as_slice(), deltas.as_slice())?
            }
            Message::DropAnswers { positions } => self.on_drop_answers(positions.as_slice())?,
            Message::Abort { reason } => {
                let reason = if reason.is_empty() {
                    "CapTP session aborted by the peer, which gave no reason"
                } else {
                    reason
                };
                self.close_with(reason.to_owned(), true)
            }
            Message::Disembargo { target, embargo } => self.on_disembargo(*target, *embargo)?,
            Message::DisembargoReply { embargo } => self.on_disembargo_reply(*embargo)?,
        }
        Ok(())
    }

    /// `method` as shared text: a name among the last
    /// [`SHARED_METHOD_NAMES`] the peer called is not allocated again.
    /// Long names are never kept, so what is kept stays small.
    fn method_name(&mut self, method: &str) -> Arc<str> {
        if let Some(known) = self.method_names.iter().find(|known| ***known == *method) {
            return Arc::clone(known);
        }
        let name: Arc<str> = Arc::from(method);
        if method.len() <= MAX_SHARED_METHOD_BYTES {
            if self.method_names.len() == SHARED_METHOD_NAMES {
                self.method_names.remove(0);
            }
            self.method_names.push(Arc::clone(&name));
        }
        name
    }

    /// Decodes a `Deliver` body, which must be an array of arguments.
    fn decode_args(&mut self, body: &[u8]) -> Result<Arc<[Value]>, String> {
        match marshal::decode(body, &mut self.tables, &self.limits.marshal) {
            Ok(Value::Array(items)) => Ok(items),
            Ok(other) => Err(protocol_error(format!(
                "Deliver args must be a copyArray, not a {}",
                other.pass_style().name()
            ))),
            Err(error) => Err(body_error("Deliver args", &error)),
        }
    }

    /// Decodes the body of a `Return` or `Resolve`.
    fn decode_outcome(&mut self, outcome: Outcome<'_>, context: &str) -> Result<Settlement, String> {
        let (body, fulfilled) = match outcome {
            Outcome::Fulfilled(body) => (body, true),
            Outcome::Rejected(body) => (body, false),
        };
        let value = marshal::decode(body.0, &mut self.tables, &self.limits.marshal)
            .map_err(|error| body_error(context, &error))?;
        Ok(if fulfilled { Ok(value) } else { Err(value) })
    }

    /// Hands a delivery to its target: via the work queue for an export or a
    /// settled answer, or onto a pending answer's queue.
    fn dispatch(&mut self, context: &str, target: Target, pending: Pending) -> Result<(), String> {
        match target {
            Target::Export(position) => {
                let Some(entry) = self.tables.exports.get(&position) else {
                    return Err(protocol_error(format!("{context} to unknown export {position}")));
                };
                let value = match entry.style {
                    RefStyle::Remotable => Value::Remotable(entry.reference.clone()),
                    RefStyle::Promise => Value::Promise(entry.reference.clone()),
                };
                if self.work.is_empty() {
                    // Routing it now is what draining the queue would do
                    // first.
                    self.route(Ok(value), pending);
                } else {
                    self.work.push_back(Work::Route {
                        target: Ok(value),
                        pending,
                    });
                }
            }
            Target::Answer(position) => {
                let Some(answer) = self.tables.answers.get_mut(&position) else {
                    return Err(protocol_error(format!("{context} to unknown answer {position}")));
                };
                match &mut answer.state {
                    AnswerState::Pending(queue) => {
                        if queue.len() >= self.limits.max_queued_per_answer {
                            return Err(limit_exceeded(
                                "max_queued_per_answer",
                                self.limits.max_queued_per_answer,
                            ));
                        }
                        queue.push(pending);
                    }
                    AnswerState::Forwarded(promise) => {
                        let target = Ok(promise.clone());
                        self.work.push_back(Work::Route { target, pending });
                    }
                    AnswerState::Settled(outcome) => {
                        let target = outcome.clone();
                        self.work.push_back(Work::Route { target, pending });
                    }
                }
            }
        }
        Ok(())
    }

    /// An imported promise settled: report it and drop the import.
    fn on_resolve(&mut self, promise: u64, outcome: Outcome<'_>) -> Result<(), String> {
        let Some(entry) = self.tables.imports.get(&promise) else {
            // We dropped it and the drop is in flight: nothing waits on it.
            return Ok(());
        };
        if RemoteTarget::of(&entry.reference).map(RemoteTarget::kind) != Some(RemoteKind::Promise) {
            return Err(protocol_error(format!(
                "Resolve of import {promise}, which is not a promise"
            )));
        }
        let outcome = self.decode_outcome(outcome, "Resolve")?;
        if let Some(entry) = self.tables.imports.remove(&promise) {
            if let Some(target) = RemoteTarget::of(&entry.reference) {
                let _ = target.resolution.set(outcome.clone());
            }
            self.export_drops.push((promise, entry.received));
            self.tables.events.push_back(Event::Settled {
                promise: entry.reference,
                outcome,
            });
        }
        Ok(())
    }

    /// One of our questions settled at the peer.
    fn on_return(&mut self, position: u64, outcome: Outcome<'_>) -> Result<(), String> {
        match self.tables.questions.get(&position) {
            None => {
                return Err(protocol_error(format!("Return for unknown question {position}")));
            }
            Some(question) if question.returned.is_some() => {
                return Err(protocol_error(format!("second Return for question {position}")));
            }
            Some(_) => {}
        }
        let outcome = self.decode_outcome(outcome, "Return")?;
        let settled_here = match &outcome {
            Ok(value) => reference_of(value).is_some_and(|reference| self.tables.ours(reference).is_none()),
            Err(_) => false,
        };
        let Some(question) = self.tables.questions.get_mut(&position) else {
            return Ok(());
        };
        if let Some(answer) = question.forward {
            self.tables.questions.remove(&position);
            self.answer_drops.push(position);
            self.work.push_back(Work::Settle { answer, outcome });
            return Ok(());
        }
        if settled_here && question.pipelined > 0 {
            // Calls we pipelined on this answer come back to our own
            // object through the peer; hold the settlement until they have.
            question.returned = Some(outcome);
            self.send_disembargo(position);
        } else {
            self.release_question(position, outcome);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::{MAX_SHARED_METHOD_BYTES, SHARED_METHOD_NAMES};
    use crate::captp::session::alice_and_bob;
    use crate::captp::{Event, Session};

    /// The method names of the calls Bob receives for Alice's `methods`.
    fn delivered(methods: &[String]) -> (Session, Vec<Arc<str>>) {
        let (mut alice, mut bob) = alice_and_bob();
        let bootstrap = alice.bootstrap().unwrap();
        for method in methods {
            alice.send_only(&bootstrap, method, &[]).unwrap();
        }
        let mut wire = Vec::new();
        alice.poll_transmit(&mut wire);
        bob.handle_bytes(&wire);
        let mut names = Vec::new();
        while let Some(event) = bob.poll_event() {
            if let Event::Deliver { method, .. } = event {
                names.push(method);
            }
        }
        (bob, names)
    }

    #[test]
    fn a_method_called_again_shares_its_name_and_long_names_are_not_kept() {
        let long = "m".repeat(MAX_SHARED_METHOD_BYTES + 1);
        let (_, names) = delivered(&["tick".into(), "tick".into(), long.clone(), long.clone()]);
        assert_eq!(names.len(), 4);
        assert_eq!(&*names[0], "tick");
        assert!(Arc::ptr_eq(&names[0], &names[1]));
        assert_eq!(*names[2], *long);
        assert!(!Arc::ptr_eq(&names[2], &names[3]));
    }

    #[test]
    fn the_names_kept_are_bounded_and_the_oldest_go_first() {
        let mut methods: Vec<String> = (0..=SHARED_METHOD_NAMES).map(|index| format!("m{index}")).collect();
        methods.push("m0".into());
        methods.push(format!("m{SHARED_METHOD_NAMES}"));
        let (bob, names) = delivered(&methods);
        assert_eq!(bob.method_names.len(), SHARED_METHOD_NAMES);
        let count = names.len();
        assert!(!Arc::ptr_eq(&names[0], &names[count - 2]), "m0 was pushed out");
        assert!(Arc::ptr_eq(&names[SHARED_METHOD_NAMES], &names[count - 1]));
    }
}
