//! Refuses a byte-for-byte replay of a sealed request (DESIGN.md §4): a relay that delivers one
//! envelope twice must not get it executed twice. Each accepted envelope's HPKE `enc` (fresh per
//! envelope, bound into its key schedule) is remembered for as long as the envelope could still
//! pass the freshness check; older replays are refused by that check instead.

use std::collections::{HashMap, VecDeque};

pub const ENC_LEN: usize = 32;

/// Why an envelope was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Sealed more than the allowed age ago, or that far in the future.
    Stale,
    /// This exact envelope was accepted before.
    Replayed,
    /// The cache is full of envelopes still fresh: refusing is the only safe answer (forgetting
    /// one would let it be replayed).
    Full,
}

/// A bounded memory of recently accepted envelopes.
#[derive(Debug)]
pub struct ReplayGuard {
    max_age_ms: u64,
    capacity: usize,
    seen: HashMap<[u8; ENC_LEN], u64>,
    /// `(forget_at, enc)` in insertion order; `forget_at` never decreases.
    order: VecDeque<(u64, [u8; ENC_LEN])>,
}

impl ReplayGuard {
    pub fn new(max_age_ms: u64, capacity: usize) -> Self {
        Self {
            max_age_ms,
            capacity,
            seen: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// Accepts an envelope sealed at `sent_at_ms` with encapsulated key `enc`, at `now_ms`, or
    /// says why not. Call it only for an envelope that opened (an unauthenticated `enc` must
    /// not take a place in the cache).
    pub fn admit(
        &mut self,
        enc: &[u8; ENC_LEN],
        sent_at_ms: u64,
        now_ms: u64,
    ) -> Result<(), Refusal> {
        if sent_at_ms.abs_diff(now_ms) > self.max_age_ms {
            return Err(Refusal::Stale);
        }
        self.forget_expired(now_ms);
        if self.seen.contains_key(enc) {
            return Err(Refusal::Replayed);
        }
        if self.seen.len() >= self.capacity {
            return Err(Refusal::Full);
        }
        // Fresh until sent_at + max_age ≤ now + 2 × max_age: remember it that long.
        let forget_at = now_ms.saturating_add(2 * self.max_age_ms);
        let forget_at = self
            .order
            .back()
            .map_or(forget_at, |(last, _)| forget_at.max(*last));
        self.seen.insert(*enc, forget_at);
        self.order.push_back((forget_at, *enc));
        Ok(())
    }

    fn forget_expired(&mut self, now_ms: u64) {
        while let Some(&(forget_at, enc)) = self.order.front() {
            if forget_at > now_ms {
                break;
            }
            self.order.pop_front();
            self.seen.remove(&enc);
        }
    }

    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AGE: u64 = 300_000;

    fn enc(i: u8) -> [u8; ENC_LEN] {
        [i; ENC_LEN]
    }

    #[test]
    fn a_replay_is_refused_for_as_long_as_it_would_be_fresh() {
        let mut g = ReplayGuard::new(AGE, 1024);
        let t = 1_000_000_000;
        assert_eq!(g.admit(&enc(1), t + AGE, t), Ok(())); // sealed at the edge of the future
        for later in [t, t + AGE, t + 2 * AGE - 1] {
            assert_eq!(
                g.admit(&enc(1), t + AGE, later),
                Err(Refusal::Replayed),
                "{later}"
            );
        }
        // Past its freshness, the freshness check refuses it; the cache may forget it.
        assert_eq!(
            g.admit(&enc(1), t + AGE, t + 2 * AGE + 1),
            Err(Refusal::Stale)
        );
        assert_eq!(g.admit(&enc(2), t + 3 * AGE, t + 3 * AGE), Ok(()));
        assert_eq!(g.len(), 1);
    }

    #[test]
    fn stale_and_future_envelopes_are_refused() {
        let mut g = ReplayGuard::new(AGE, 1024);
        let t = 1_000_000_000;
        assert_eq!(g.admit(&enc(1), t - AGE - 1, t), Err(Refusal::Stale));
        assert_eq!(g.admit(&enc(1), t + AGE + 1, t), Err(Refusal::Stale));
        assert!(g.is_empty());
    }

    #[test]
    fn a_full_cache_refuses_rather_than_forgets() {
        let mut g = ReplayGuard::new(AGE, 2);
        let t = 1_000_000_000;
        g.admit(&enc(1), t, t).unwrap();
        g.admit(&enc(2), t, t).unwrap();
        assert_eq!(g.admit(&enc(3), t, t), Err(Refusal::Full));
        assert_eq!(g.admit(&enc(1), t, t + 1), Err(Refusal::Replayed));
        assert_eq!(g.admit(&enc(3), t + 2 * AGE, t + 2 * AGE), Ok(()));
    }
}
