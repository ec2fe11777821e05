//! The guess-limit rule (DESIGN.md §4 invariant 4): one pure function, no I/O. Every change of an
//! attempt counter in the vault goes through [`guess_step`].

/// Attempts allowed between two successful logins: 1..=100, default 10.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct AttemptLimit(u8);

impl AttemptLimit {
    pub const MIN: u8 = 1;
    pub const MAX: u8 = 100;
    pub const DEFAULT: Self = Self(10);

    pub fn new(limit: u8) -> Option<Self> {
        (Self::MIN..=Self::MAX)
            .contains(&limit)
            .then_some(Self(limit))
    }

    pub fn get(self) -> u8 {
        self.0
    }
}

/// The guess-relevant part of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuessState {
    /// `attempts_left <= limit` (the record decoder enforces it).
    Active {
        attempts_left: u8,
        limit: AttemptLimit,
    },
    Destroyed,
}

/// What happened in the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuessEvent {
    /// A fresh KE1 arrived: the client wants a KE2 (one password guess).
    Ke1,
    /// A KE3 verified: the client proved the password.
    Ke3Ok,
    /// A KE3 did not verify.
    Ke3Fail,
}

/// What the vault must do. Verdicts for which [`GuessVerdict::must_persist`] is true change the
/// state, and their reply may leave the vault only after the new state is durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuessVerdict {
    /// Persist the decremented counter, then (and only then) release a KE2.
    ReleaseKe2 { attempts_left: u8 },
    /// Persist the reset counter, then release the wrapped key.
    Recovered,
    /// A wrong guess; its attempt was already spent at KE1, so nothing to persist.
    Wrong { attempts_left: u8 },
    /// No attempts remain: persist a tombstone, then reply "destroyed".
    Destroy,
    /// Already destroyed: refuse, nothing to persist.
    Refuse,
}

impl GuessVerdict {
    pub fn must_persist(self) -> bool {
        matches!(
            self,
            Self::ReleaseKe2 { .. } | Self::Recovered | Self::Destroy
        )
    }
}

/// The guess-limit rule.
///
/// * A KE1 spends one attempt before any KE2 exists; with none left it destroys the record
///   (an earlier KE1 spent the last one and its login never succeeded, or its success was lost).
/// * A verified KE3 restores the full limit.
/// * A failed KE3 changes nothing unless no attempts remain, in which case it destroys.
/// * Destroyed is absorbing: only a new enrollment (a new generation, outside this rule) leaves it.
pub fn guess_step(state: GuessState, event: GuessEvent) -> (GuessState, GuessVerdict) {
    let GuessState::Active {
        attempts_left,
        limit,
    } = state
    else {
        return (GuessState::Destroyed, GuessVerdict::Refuse);
    };
    match (event, attempts_left) {
        (GuessEvent::Ke1 | GuessEvent::Ke3Fail, 0) => {
            (GuessState::Destroyed, GuessVerdict::Destroy)
        }
        (GuessEvent::Ke1, n) => {
            let attempts_left = n - 1;
            (
                GuessState::Active {
                    attempts_left,
                    limit,
                },
                GuessVerdict::ReleaseKe2 { attempts_left },
            )
        }
        (GuessEvent::Ke3Ok, _) => (
            GuessState::Active {
                attempts_left: limit.get(),
                limit,
            },
            GuessVerdict::Recovered,
        ),
        (GuessEvent::Ke3Fail, n) => (state, GuessVerdict::Wrong { attempts_left: n }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn active(attempts_left: u8, limit: u8) -> GuessState {
        GuessState::Active {
            attempts_left,
            limit: AttemptLimit::new(limit).unwrap(),
        }
    }

    #[test]
    fn attempt_limit_bounds() {
        assert_eq!(AttemptLimit::new(0), None);
        assert_eq!(AttemptLimit::new(101), None);
        assert_eq!(AttemptLimit::new(1).unwrap().get(), 1);
        assert_eq!(AttemptLimit::new(100).unwrap().get(), 100);
        assert_eq!(AttemptLimit::DEFAULT.get(), 10);
    }

    #[test]
    fn table() {
        use GuessEvent::*;
        use GuessVerdict::*;
        let cases = [
            (
                active(3, 10),
                Ke1,
                active(2, 10),
                ReleaseKe2 { attempts_left: 2 },
            ),
            (
                active(1, 10),
                Ke1,
                active(0, 10),
                ReleaseKe2 { attempts_left: 0 },
            ),
            (active(0, 10), Ke1, GuessState::Destroyed, Destroy),
            (active(0, 10), Ke3Ok, active(10, 10), Recovered),
            (active(4, 10), Ke3Ok, active(10, 10), Recovered),
            (
                active(4, 10),
                Ke3Fail,
                active(4, 10),
                Wrong { attempts_left: 4 },
            ),
            (active(0, 10), Ke3Fail, GuessState::Destroyed, Destroy),
            (GuessState::Destroyed, Ke1, GuessState::Destroyed, Refuse),
            (GuessState::Destroyed, Ke3Ok, GuessState::Destroyed, Refuse),
            (
                GuessState::Destroyed,
                Ke3Fail,
                GuessState::Destroyed,
                Refuse,
            ),
        ];
        for (state, event, next, verdict) in cases {
            assert_eq!(
                guess_step(state, event),
                (next, verdict),
                "{state:?} {event:?}"
            );
            assert_eq!(
                verdict.must_persist(),
                next != state || verdict == Recovered
            );
        }
    }

    fn event() -> impl Strategy<Value = GuessEvent> {
        prop_oneof![
            Just(GuessEvent::Ke1),
            Just(GuessEvent::Ke3Ok),
            Just(GuessEvent::Ke3Fail)
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        /// Over any event sequence: at most `limit` KE2s between two recoveries (so an attacker
        /// who never recovers gets at most `limit`, and in all <= limit * (1 + recoveries));
        /// destroyed is absorbing; the counter never exceeds the limit, never rises except by a
        /// recovery, and every KE2 costs exactly one attempt.
        #[test]
        fn guess_rule_invariants(limit in 1u8..=100, events in proptest::collection::vec(event(), 0..300)) {
            let mut state = active(limit, limit);
            let (mut ke2s, mut since_recovery, mut recoveries, mut destroyed) = (0u32, 0u32, 0u32, false);
            for ev in events {
                let (next, verdict) = guess_step(state, ev);
                if destroyed {
                    prop_assert_eq!(next, GuessState::Destroyed);
                    prop_assert_eq!(verdict, GuessVerdict::Refuse);
                }
                match (state, next, verdict) {
                    (GuessState::Active { attempts_left: a, .. }, GuessState::Active { attempts_left: b, .. }, GuessVerdict::ReleaseKe2 { attempts_left }) => {
                        prop_assert_eq!(b + 1, a);
                        prop_assert_eq!(b, attempts_left);
                        ke2s += 1;
                        since_recovery += 1;
                    }
                    (_, GuessState::Active { attempts_left: b, .. }, GuessVerdict::Recovered) => {
                        prop_assert_eq!(b, limit);
                        recoveries += 1;
                        since_recovery = 0;
                    }
                    (GuessState::Active { attempts_left: a, .. }, GuessState::Active { attempts_left: b, .. }, GuessVerdict::Wrong { .. }) => prop_assert_eq!(a, b),
                    (_, GuessState::Destroyed, _) => destroyed = true,
                    other => prop_assert!(false, "unexpected transition {:?}", other),
                }
                if let GuessState::Active { attempts_left, .. } = next {
                    prop_assert!(attempts_left <= limit);
                }
                prop_assert!(since_recovery <= u32::from(limit));
                prop_assert!(ke2s <= u32::from(limit) * (1 + recoveries));
                state = next;
            }
        }
    }
}
