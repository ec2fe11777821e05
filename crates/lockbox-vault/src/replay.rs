//! Refuses a byte-for-byte replay of a sealed request (DESIGN.md §4): a relay that delivers one
//! envelope twice must not get it executed twice. Each accepted envelope's HPKE `enc` (fresh per
//! envelope, bound into its key schedule) is remembered for as long as the envelope could still
//! pass the freshness check; older replays are refused by that check instead. The memory dies
//! with the process, so an envelope sealed before this node started is refused as stale: a
//! restart must not reopen the window for the envelopes accepted just before it. One account
//! may hold only a bounded share of the cache, so no token holder can fill it for everyone.

use std::collections::{HashMap, VecDeque};

pub use lockbox_proto::ENC_LEN;

/// Why an envelope was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Sealed more than the allowed age ago, or that far in the future.
    Stale,
    /// This exact envelope was accepted before.
    Replayed,
    /// The cache (or this account's share of it) is full of envelopes still fresh: refusing is
    /// the only safe answer (forgetting one would let it be replayed).
    Full,
    /// Sealed before this node started: its fate in the previous run is unknown. Reseal it.
    BeforeStart,
}

/// A bounded memory of recently accepted envelopes.
#[derive(Debug)]
pub struct ReplayGuard {
    max_age_ms: u64,
    capacity: usize,
    per_account: usize,
    started_at_ms: u64,
    seen: HashMap<[u8; ENC_LEN], u64>,
    /// Entries held by each account.
    held: HashMap<Vec<u8>, usize>,
    /// `(forget_at, enc, account)` in insertion order; `forget_at` never decreases.
    order: VecDeque<(u64, [u8; ENC_LEN], Vec<u8>)>,
}

impl ReplayGuard {
    /// `capacity` entries in all, at most `per_account` of them for one account; envelopes
    /// sealed before `started_at_ms` are refused.
    pub fn new(max_age_ms: u64, capacity: usize, per_account: usize, started_at_ms: u64) -> Self {
        Self {
            max_age_ms,
            capacity,
            per_account,
            started_at_ms,
            seen: HashMap::new(),
            held: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// Accepts an envelope sealed at `sent_at_ms` with encapsulated key `enc`, at `now_ms`, or
    /// says why not. Call it only for an envelope that opened (an unauthenticated `enc` must
    /// not take a place in the cache).
    pub fn admit(
        &mut self,
        account: &[u8],
        enc: &[u8; ENC_LEN],
        sent_at_ms: u64,
        now_ms: u64,
    ) -> Result<(), Refusal> {
        if sent_at_ms.abs_diff(now_ms) > self.max_age_ms {
            return Err(Refusal::Stale);
        }
        if sent_at_ms < self.started_at_ms {
            return Err(Refusal::BeforeStart);
        }
        self.forget_expired(now_ms);
        if self.seen.contains_key(enc) {
            return Err(Refusal::Replayed);
        }
        let held = self.held.get(account).copied().unwrap_or(0);
        if self.seen.len() >= self.capacity || held >= self.per_account {
            return Err(Refusal::Full);
        }
        // Fresh until sent_at + max_age ≤ now + 2 × max_age: remember it that long.
        let forget_at = now_ms.saturating_add(2 * self.max_age_ms);
        let forget_at = self
            .order
            .back()
            .map_or(forget_at, |(last, ..)| forget_at.max(*last));
        self.seen.insert(*enc, forget_at);
        self.held.insert(account.to_vec(), held + 1);
        self.order.push_back((forget_at, *enc, account.to_vec()));
        Ok(())
    }

    fn forget_expired(&mut self, now_ms: u64) {
        while self.order.front().is_some_and(|(at, ..)| *at <= now_ms) {
            let Some((_, enc, account)) = self.order.pop_front() else {
                break;
            };
            self.seen.remove(&enc);
            if let Some(n) = self.held.get_mut(&account) {
                *n -= 1;
                if *n == 0 {
                    self.held.remove(&account);
                }
            }
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
    const T: u64 = 1_000_000_000;

    fn enc(i: u8) -> [u8; ENC_LEN] {
        [i; ENC_LEN]
    }

    #[test]
    fn a_replay_is_refused_for_as_long_as_it_would_be_fresh() {
        let mut g = ReplayGuard::new(AGE, 1024, 16, T);
        assert_eq!(g.admit(b"a", &enc(1), T + AGE, T), Ok(())); // at the edge of the future
        for later in [T, T + AGE, T + 2 * AGE - 1] {
            let again = g.admit(b"a", &enc(1), T + AGE, later);
            assert_eq!(again, Err(Refusal::Replayed), "{later}");
        }
        // Past its freshness, the freshness check refuses it; the cache may forget it.
        let late = g.admit(b"a", &enc(1), T + AGE, T + 2 * AGE + 1);
        assert_eq!(late, Err(Refusal::Stale));
        assert_eq!(g.admit(b"a", &enc(2), T + 3 * AGE, T + 3 * AGE), Ok(()));
        assert_eq!(g.len(), 1);
    }

    #[test]
    fn stale_future_and_pre_start_envelopes_are_refused() {
        let mut g = ReplayGuard::new(AGE, 1024, 16, T);
        assert_eq!(g.admit(b"a", &enc(1), T - AGE - 1, T), Err(Refusal::Stale));
        assert_eq!(g.admit(b"a", &enc(1), T + AGE + 1, T), Err(Refusal::Stale));
        // Fresh, but sealed before this node started: a previous run may have accepted it.
        let before = g.admit(b"a", &enc(1), T - 1, T + 10);
        assert_eq!(before, Err(Refusal::BeforeStart));
        assert!(g.is_empty());
    }

    #[test]
    fn a_full_cache_refuses_rather_than_forgets() {
        let mut g = ReplayGuard::new(AGE, 2, 16, T);
        g.admit(b"a", &enc(1), T, T).unwrap();
        g.admit(b"b", &enc(2), T, T).unwrap();
        assert_eq!(g.admit(b"c", &enc(3), T, T), Err(Refusal::Full));
        assert_eq!(g.admit(b"a", &enc(1), T, T + 1), Err(Refusal::Replayed));
        assert_eq!(g.admit(b"c", &enc(3), T + 2 * AGE, T + 2 * AGE), Ok(()));
    }

    #[test]
    fn one_account_fills_only_its_own_share() {
        let mut g = ReplayGuard::new(AGE, 1024, 3, T);
        for i in 0..3 {
            g.admit(b"mallory", &enc(i), T, T).unwrap();
        }
        assert_eq!(g.admit(b"mallory", &enc(9), T, T), Err(Refusal::Full));
        assert_eq!(g.admit(b"alice", &enc(10), T, T), Ok(()));
        // Once mallory's entries age out, her share is free again.
        let later = T + 2 * AGE;
        assert_eq!(g.admit(b"mallory", &enc(11), later, later), Ok(()));
        assert_eq!(g.len(), 1);
    }
}
