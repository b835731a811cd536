//! The bounds a CapTP session enforces on what its peer sends. Exceeding
//! one aborts the session with a reason naming the limit.

use crate::marshal::MarshalLimits;

/// Per-session limits. `Default` gives the documented defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest frame (postcard message bytes, after the length prefix).
    pub max_frame_bytes: usize,
    /// Bounds on every marshalled body (nesting depth 64 by default).
    pub marshal: MarshalLimits,
    /// Answers the peer may hold open with us at once (calls it made that
    /// it has not dropped).
    pub max_outstanding_answers: usize,
    /// Our own calls the peer has not answered yet; a call beyond it is
    /// refused with [`SendError::TooManyQuestions`](super::SendError).
    pub max_questions_in_flight: usize,
    /// Entries in the import table and in the export table, each. A peer
    /// that makes us hold more (by sending references, or by calls whose
    /// results we export) is cut off; our own sends beyond it are refused.
    pub max_table_entries: usize,
    /// Pipelined deliveries queued on one unsettled answer.
    pub max_queued_per_answer: usize,
    /// Interface names of dropped imports kept in case the exporter re-sends
    /// one while the drop is in flight (it sends each interface only once).
    pub remembered_interfaces: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_frame_bytes: 16 << 20,
            marshal: MarshalLimits::default(),
            max_outstanding_answers: 1 << 16,
            max_questions_in_flight: 1 << 16,
            max_table_entries: 1 << 20,
            max_queued_per_answer: 1 << 12,
            remembered_interfaces: 1 << 12,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Limits;
    use crate::captp::{Event, SendError, Session, SessionId};
    use crate::marshal::MarshalError;
    use crate::{Reference, Value};

    fn object(name: &str) -> Reference {
        Reference::new(format!("Alleged: {name}"), name.to_owned())
    }

    fn carry(from: &mut Session, to: &mut Session) {
        let mut bytes = Vec::new();
        from.poll_transmit(&mut bytes);
        to.handle_bytes(&bytes);
    }

    #[test]
    fn questions_beyond_the_limit_are_refused() {
        let limits = Limits {
            max_questions_in_flight: 2,
            ..Limits::default()
        };
        let mut session = Session::new(SessionId(1), None, limits);
        let root = session.bootstrap().unwrap();
        session.send(&root, "first", &[]).unwrap();
        let refused = session.send(&root, "second", &[]);
        assert!(
            matches!(refused, Err(SendError::TooManyQuestions { limit: 2 })),
            "{refused:?}"
        );
        assert!(matches!(
            session.get(&root, "x"),
            Err(SendError::TooManyQuestions { .. })
        ));
        // Sends without an answer take no question.
        session.send_only(&root, "third", &[]).unwrap();
        assert_eq!(session.question_count(), 2);
    }

    #[test]
    fn a_peer_that_fills_our_import_table_is_cut_off() {
        let small = Limits {
            max_table_entries: 3,
            ..Limits::default()
        };
        let mut attacker = Session::new(SessionId(1), None, Limits::default());
        let mut victim = Session::new(SessionId(2), Some(object("root")), small);
        let root = attacker.bootstrap().unwrap();
        for index in 0..3 {
            let gift = Value::Remotable(object(&format!("gift{index}")));
            attacker.send_only(&root, "take", &[gift]).unwrap();
        }
        carry(&mut attacker, &mut victim);
        assert!(!victim.is_closed(), "{:?}", victim.close_reason());
        assert_eq!(victim.import_count(), 3);
        attacker
            .send_only(&root, "take", &[Value::Remotable(object("one too many"))])
            .unwrap();
        carry(&mut attacker, &mut victim);
        let reason = victim.close_reason().unwrap_or_default();
        assert!(
            reason.contains("import table entries") && reason.contains("limit"),
            "{reason}"
        );
    }

    #[test]
    fn our_own_exports_beyond_the_limit_are_refused() {
        let small = Limits {
            max_table_entries: 2,
            ..Limits::default()
        };
        let mut session = Session::new(SessionId(1), None, small);
        let root = session.bootstrap().unwrap();
        let kept = Value::Remotable(object("a"));
        session.send_only(&root, "take", std::slice::from_ref(&kept)).unwrap();
        session
            .send_only(&root, "take", &[Value::Remotable(object("b"))])
            .unwrap();
        let refused = session.send_only(&root, "take", &[Value::Remotable(object("c"))]);
        assert!(
            matches!(
                refused,
                Err(SendError::Marshal(MarshalError::TooLarge { limit: 2, .. }))
            ),
            "{refused:?}"
        );
        // Sending one already exported again still works.
        session.send_only(&root, "take", &[kept]).unwrap();
        assert!(!session.is_closed());
    }

    #[test]
    fn a_peer_whose_calls_fill_our_export_table_is_cut_off() {
        let small = Limits {
            max_table_entries: 2,
            ..Limits::default()
        };
        let mut attacker = Session::new(SessionId(1), None, Limits::default());
        let mut victim = Session::new(SessionId(2), Some(object("root")), small);
        let root = attacker.bootstrap().unwrap();
        for _ in 0..3 {
            attacker.send(&root, "make", &[]).unwrap();
        }
        carry(&mut attacker, &mut victim);
        let mut made = 0;
        while let Some(event) = victim.poll_event() {
            if let Event::Deliver {
                answer: Some(answer), ..
            } = event
            {
                made += 1;
                let fresh = Value::Remotable(object(&format!("made{made}")));
                let _ = victim.answer(answer, Ok(fresh));
            }
        }
        // Root plus one made object fill the table; the second is refused.
        let reason = victim.close_reason().unwrap_or_default();
        assert!(reason.contains("max_table_entries (exports) (2)"), "{reason}");
    }
}
