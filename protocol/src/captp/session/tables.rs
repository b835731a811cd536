//! The session's tables: what we export (with send counts for GC),
//! what we import, our questions and the peer's answers, and the
//! interfaces of dropped presences. [`Tables`] also maps references to
//! wire positions and back while a body is marshalled.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use crate::marshal::{DecodeSlots, Descriptor, EncodeSlots, MarshalError, RefStyle, SlotOut};
use crate::value::{Reference, Value};

use super::routing::Pending;
use super::{
    AnswerId, Event, RemoteKind, RemoteTarget, SendError, Session, SessionId, Settlement, limit_exceeded,
    protocol_error,
};

/// A fast hasher for keys this side chooses (its own question and export
/// positions, reference identities): the peer cannot pick colliding keys
/// for these tables, so they need no keyed hash. Tables keyed by the
/// peer's choices (answers, imports) keep the standard keyed hasher.
#[derive(Default, Clone, Copy)]
pub(super) struct OwnKeyHasher(u64);

impl Hasher for OwnKeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.write_u64(u64::from(byte));
        }
    }

    fn write_u64(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x517c_c1b7_2722_0a95);
    }

    fn write_usize(&mut self, word: usize) {
        self.write_u64(word as u64);
    }
}

pub(super) type OwnKeyMap<K, V> = HashMap<K, V, BuildHasherDefault<OwnKeyHasher>>;

/// What a full export table reports: sending one more local reference
/// would export it.
pub(super) const EXPORT_ENTRIES: &str = "export table entries";

/// The interface a presence gets if the exporter sent its interface
/// before and this side has forgotten it.
const FORGOTTEN_INTERFACE: &str = "Alleged: remote object";

pub(super) struct Export {
    pub(super) reference: Reference,
    pub(super) style: RefStyle,
    /// Times sent and not yet acknowledged by a `DropExports` delta.
    pub(super) sent: u64,
    pub(super) interface_sent: bool,
    /// For promises: the settlement, once known, re-sent after every
    /// later message that carries the promise.
    pub(super) resolved: Option<Settlement>,
    /// The bootstrap object is never freed.
    pub(super) pinned: bool,
    /// Set when this export is the promise for one of our answers.
    pub(super) answer: Option<u64>,
}

pub(super) struct Import {
    pub(super) reference: Reference,
    /// Times received since the last drop.
    pub(super) received: u64,
}

/// The imports, by the positions the peer gave them (so with the keyed
/// hasher). Every send to a presence asks whether its import is still
/// here; the last position found is remembered until an import is
/// removed, so that a burst of sends to one presence hashes once.
#[derive(Default)]
pub(super) struct Imports {
    entries: HashMap<u64, Import>,
    last_found: Option<u64>,
}

impl Imports {
    pub(super) fn contains(&mut self, position: u64) -> bool {
        if self.last_found == Some(position) {
            return true;
        }
        let found = self.entries.contains_key(&position);
        if found {
            self.last_found = Some(position);
        }
        found
    }

    pub(super) fn get(&self, position: &u64) -> Option<&Import> {
        self.entries.get(position)
    }

    pub(super) fn get_mut(&mut self, position: &u64) -> Option<&mut Import> {
        self.entries.get_mut(position)
    }

    pub(super) fn insert(&mut self, position: u64, import: Import) {
        self.entries.insert(position, import);
    }

    pub(super) fn remove(&mut self, position: &u64) -> Option<Import> {
        self.last_found = None;
        self.entries.remove(position)
    }

    pub(super) fn drain(&mut self) -> impl Iterator<Item = (u64, Import)> + '_ {
        self.last_found = None;
        self.entries.drain()
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (&u64, &Import)> {
        self.entries.iter()
    }

    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }
}

pub(super) struct Question {
    /// `None` when the runtime dropped it or the session forwards the
    /// result to an answer.
    pub(super) promise: Option<Reference>,
    pub(super) forward: Option<AnswerId>,
    /// Sends targeted at the answer position: they need a disembargo if
    /// the answer settles to one of our own objects.
    pub(super) pipelined: u64,
    /// Set while a disembargo is in flight.
    pub(super) returned: Option<Settlement>,
    /// `pipelined` when the disembargo in flight was sent: sends made
    /// after it need another one.
    pub(super) pipelined_at_embargo: u64,
}

pub(super) struct Answer {
    pub(super) generation: u64,
    pub(super) state: AnswerState,
    pub(super) promise: Option<Reference>,
    pub(super) exported_as: Option<u64>,
}

pub(super) enum AnswerState {
    Pending(Vec<Pending>),
    /// The runtime's result is a promise that it will settle the answer
    /// to later: calls on the answer go to that promise meanwhile, and the
    /// peer hears only the final `Return`.
    Forwarded(Value),
    Settled(Settlement),
}

/// The tables, kept apart from the output buffers so that the marshaller
/// can borrow them while a body is written.
pub(super) struct Tables {
    pub(super) id: SessionId,
    promise_interface: Arc<str>,
    pub(super) exports: OwnKeyMap<u64, Export>,
    pub(super) export_positions: OwnKeyMap<Reference, u64>,
    next_export: u64,
    pub(super) imports: Imports,
    pub(super) forgotten_interfaces: VecDeque<(u64, Arc<str>)>,
    remembered_interfaces: usize,
    /// Bound on `imports` and on `exports`, each.
    max_entries: usize,
    pub(super) questions: OwnKeyMap<u64, Question>,
    pub(super) answers: HashMap<u64, Answer>,
    pub(super) events: VecDeque<Event>,
    /// Exported promises already settled that the last message carried.
    pub(super) resolve_after: Vec<u64>,
}

fn import_descriptor(style: RefStyle, position: u64) -> Descriptor {
    match style {
        RefStyle::Remotable => Descriptor::ImportObject(position),
        RefStyle::Promise => Descriptor::ImportPromise(position),
    }
}

impl Tables {
    /// Empty tables, with the bootstrap object (if any) pinned at export
    /// position 0.
    pub(super) fn new(
        id: SessionId,
        remembered_interfaces: usize,
        max_entries: usize,
        bootstrap: Option<&Reference>,
    ) -> Tables {
        let mut tables = Tables {
            id,
            promise_interface: Arc::from("Promise"),
            exports: OwnKeyMap::default(),
            export_positions: OwnKeyMap::default(),
            next_export: 1,
            imports: Imports::default(),
            forgotten_interfaces: VecDeque::new(),
            remembered_interfaces,
            max_entries,
            questions: OwnKeyMap::default(),
            answers: HashMap::new(),
            events: VecDeque::new(),
            resolve_after: Vec::new(),
        };
        if let Some(reference) = bootstrap {
            tables.exports.insert(
                0,
                Export {
                    reference: reference.clone(),
                    style: RefStyle::Remotable,
                    sent: 0,
                    interface_sent: false,
                    resolved: None,
                    pinned: true,
                    answer: None,
                },
            );
            tables.export_positions.insert(reference.clone(), 0);
        }
        tables
    }

    pub(super) fn ours<'r>(&self, reference: &'r Reference) -> Option<&'r RemoteTarget> {
        RemoteTarget::of(reference).filter(|target| target.session == self.id)
    }

    fn export_local(&mut self, reference: &Reference, style: RefStyle) -> Result<SlotOut, MarshalError> {
        let known = self.export_positions.get(reference).copied();
        if let Some((position, entry)) =
            known.and_then(|position| self.exports.get_mut(&position).map(|entry| (position, entry)))
        {
            entry.sent = entry.sent.saturating_add(1);
            let send_interface = !entry.interface_sent;
            entry.interface_sent = true;
            if entry.resolved.is_some() {
                self.resolve_after.push(position);
            }
            return Ok(SlotOut {
                descriptor: import_descriptor(entry.style, position),
                send_interface,
            });
        }
        if self.exports.len() >= self.max_entries {
            return Err(MarshalError::TooLarge {
                what: EXPORT_ENTRIES,
                claimed: self.exports.len() as u64 + 1,
                limit: self.max_entries as u64,
            });
        }
        let position = self.next_export;
        self.next_export += 1;
        let mut entry = Export {
            reference: reference.clone(),
            style,
            sent: 1,
            interface_sent: true,
            resolved: None,
            pinned: false,
            answer: None,
        };
        if style == RefStyle::Promise {
            match self.ours(reference) {
                Some(target) if target.kind == RemoteKind::Answer => {
                    if let Some(answer) = self.answers.get_mut(&target.position) {
                        answer.exported_as = Some(position);
                        entry.answer = Some(target.position);
                        if let AnswerState::Settled(outcome) = &answer.state {
                            entry.resolved = Some(outcome.clone());
                        }
                    } else {
                        entry.resolved = target.resolution.get().cloned();
                    }
                }
                Some(target) => entry.resolved = target.resolution.get().cloned(),
                None => self.events.push_back(Event::WatchPromise {
                    promise: reference.clone(),
                }),
            }
            if entry.resolved.is_some() {
                self.resolve_after.push(position);
            }
        }
        self.exports.insert(position, entry);
        self.export_positions.insert(reference.clone(), position);
        Ok(SlotOut {
            descriptor: import_descriptor(style, position),
            send_interface: true,
        })
    }

    fn import(&mut self, position: u64, kind: RemoteKind, interface: Option<&str>) -> Result<Reference, MarshalError> {
        if let Some(entry) = self.imports.get_mut(&position) {
            if RemoteTarget::of(&entry.reference).map(RemoteTarget::kind) != Some(kind) {
                return Err(MarshalError::Slot(format!(
                    "import {position} arrived as a different kind"
                )));
            }
            entry.received = entry.received.saturating_add(1);
            return Ok(entry.reference.clone());
        }
        if self.imports.len() >= self.max_entries {
            return Err(MarshalError::TooLarge {
                what: "import table entries",
                claimed: self.imports.len() as u64 + 1,
                limit: self.max_entries as u64,
            });
        }
        let interface = match kind {
            RemoteKind::Presence => match interface {
                Some(interface) => Arc::from(interface),
                None => self.recall_interface(position),
            },
            _ => self.promise_interface.clone(),
        };
        let reference = Reference::new(interface, RemoteTarget::new(self.id, position, kind));
        self.imports.insert(
            position,
            Import {
                reference: reference.clone(),
                received: 1,
            },
        );
        Ok(reference)
    }

    fn recall_interface(&mut self, position: u64) -> Arc<str> {
        match self
            .forgotten_interfaces
            .iter()
            .rposition(|(known, _)| *known == position)
        {
            Some(index) => match self.forgotten_interfaces.remove(index) {
                Some((_, interface)) => interface,
                None => Arc::from(FORGOTTEN_INTERFACE),
            },
            None => Arc::from(FORGOTTEN_INTERFACE),
        }
    }

    /// Answer `id`, unless the peer dropped it (or reused its position
    /// since).
    pub(super) fn answer_mut(&mut self, id: AnswerId) -> Option<&mut Answer> {
        self.answers
            .get_mut(&id.position)
            .filter(|answer| answer.generation == id.generation)
    }

    pub(super) fn remember_interface(&mut self, position: u64, interface: &str) {
        if self.remembered_interfaces == 0 {
            return;
        }
        if self.forgotten_interfaces.len() >= self.remembered_interfaces {
            self.forgotten_interfaces.pop_front();
        }
        self.forgotten_interfaces.push_back((position, Arc::from(interface)));
    }
}

impl EncodeSlots for Tables {
    fn slot(&mut self, reference: &Reference, style: RefStyle) -> Result<SlotOut, MarshalError> {
        if let Some(target) = self.ours(reference) {
            let position = target.position;
            let back_to_peer = |descriptor| SlotOut {
                descriptor,
                send_interface: false,
            };
            match target.kind {
                RemoteKind::Presence => {
                    return if self.imports.contains(position) {
                        Ok(back_to_peer(Descriptor::Export(position)))
                    } else {
                        Err(MarshalError::Slot(format!(
                            "presence {position} was dropped from this session"
                        )))
                    };
                }
                RemoteKind::Promise => {
                    if target.resolution.get().is_none() && self.imports.contains(position) {
                        return Ok(back_to_peer(Descriptor::Export(position)));
                    }
                }
                RemoteKind::Question => {
                    if self.questions.contains_key(&position) {
                        return Ok(back_to_peer(Descriptor::Answer(position)));
                    }
                }
                RemoteKind::Answer => {}
            }
        }
        self.export_local(reference, style)
    }
}

impl DecodeSlots for Tables {
    fn reference(
        &mut self,
        descriptor: Descriptor,
        style: RefStyle,
        interface: Option<&str>,
    ) -> Result<Reference, MarshalError> {
        match (descriptor, style) {
            (Descriptor::ImportObject(position), RefStyle::Remotable) => {
                self.import(position, RemoteKind::Presence, interface)
            }
            (Descriptor::ImportPromise(position), RefStyle::Promise) => {
                self.import(position, RemoteKind::Promise, None)
            }
            (Descriptor::Export(position), _) => match self.exports.get(&position) {
                Some(entry) if entry.style == style => Ok(entry.reference.clone()),
                Some(_) => Err(MarshalError::Slot(format!(
                    "export {position} sent back as a {style:?}"
                ))),
                None => Err(MarshalError::Slot(format!("unknown export {position}"))),
            },
            (Descriptor::Answer(position), RefStyle::Promise) => {
                let (id, promise_interface) = (self.id, self.promise_interface.clone());
                let answer = self
                    .answers
                    .get_mut(&position)
                    .ok_or_else(|| MarshalError::Slot(format!("unknown answer {position}")))?;
                if let Some(promise) = &answer.promise {
                    return Ok(promise.clone());
                }
                let target = RemoteTarget::new(id, position, RemoteKind::Answer);
                if let AnswerState::Settled(outcome) = &answer.state {
                    let _ = target.resolution.set(outcome.clone());
                }
                let promise = Reference::new(promise_interface, target);
                answer.promise = Some(promise.clone());
                Ok(promise)
            }
            (descriptor, style) => Err(MarshalError::Slot(format!(
                "{descriptor:?} cannot stand for a {style:?}"
            ))),
        }
    }
}

impl Session {
    /// Opens a question for one of our calls, with the promise the runtime gets
    /// for it.
    pub(super) fn new_question(&mut self) -> Result<(u64, Reference), SendError> {
        if self.tables.questions.len() >= self.limits.max_questions_in_flight {
            return Err(SendError::TooManyQuestions {
                limit: self.limits.max_questions_in_flight,
            });
        }
        let position = self.next_question;
        self.next_question += 1;
        let promise = Reference::new(
            self.tables.promise_interface.clone(),
            RemoteTarget::new(self.tables.id, position, RemoteKind::Question),
        );
        self.tables.questions.insert(
            position,
            Question {
                promise: Some(promise.clone()),
                forward: None,
                pipelined: 0,
                returned: None,
                pipelined_at_embargo: 0,
            },
        );
        Ok((position, promise))
    }

    /// Opens an answer at the position the peer chose for its call.
    pub(super) fn open_answer(&mut self, position: u64) -> Result<AnswerId, String> {
        if self.tables.answers.contains_key(&position) {
            return Err(protocol_error(format!(
                "answer position {position} reused while still in use"
            )));
        }
        if self.tables.answers.len() >= self.limits.max_outstanding_answers {
            return Err(limit_exceeded(
                "max_outstanding_answers",
                self.limits.max_outstanding_answers,
            ));
        }
        let generation = self.next_answer_generation;
        self.next_answer_generation += 1;
        self.tables.answers.insert(
            position,
            Answer {
                generation,
                state: AnswerState::Pending(Vec::new()),
                promise: None,
                exported_as: None,
            },
        );
        Ok(AnswerId { position, generation })
    }
}

#[cfg(test)]
mod tests {
    use crate::captp::session::alice_and_bob;
    use crate::captp::{Event, SendError, Session};
    use crate::value::Value;

    fn carry(from: &mut Session, to: &mut Session) {
        let mut wire = Vec::new();
        from.poll_transmit(&mut wire);
        to.handle_bytes(&wire);
    }

    #[test]
    fn a_send_right_after_its_presence_was_dropped_is_refused() {
        let (mut alice, mut bob) = alice_and_bob();
        let bootstrap = alice.bootstrap().unwrap();
        carry(&mut alice, &mut bob);
        carry(&mut bob, &mut alice);
        let mut presence = None;
        while let Some(event) = alice.poll_event() {
            if let Event::Settled {
                outcome: Ok(Value::Remotable(reference)),
                ..
            } = event
            {
                presence = Some(reference);
            }
        }
        let presence = presence.unwrap();
        // Twice, so that the second send finds the import remembered.
        alice.send_only(&bootstrap, "tick", &[]).unwrap();
        alice.send_only(&bootstrap, "tick", &[]).unwrap();
        alice.drop_reference(&presence);
        assert!(matches!(
            alice.send_only(&bootstrap, "tick", &[]),
            Err(SendError::Rejected { .. })
        ));
        assert!(matches!(
            alice.send_only(&Value::Remotable(presence), "tick", &[]),
            Err(SendError::Rejected { .. })
        ));
    }
}
