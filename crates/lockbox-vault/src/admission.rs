//! What every request must pass before the core sees it (DESIGN.md §4): a fresh envelope never
//! seen before, carrying a valid account token for the envelope's account. Nothing is
//! evaluated, spent or given a session slot before this says yes.

use lockbox_token::{TokenError, Verifier};
use std::sync::{Mutex, PoisonError};

use crate::replay::{ENC_LEN, Refusal, ReplayGuard};

/// Why a request was not admitted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error("{0}")]
    Token(#[from] TokenError),
    #[error("the request was sealed too long ago (or in the future): check the device clock")]
    Stale,
    #[error("this exact request was delivered before")]
    Replayed,
    #[error("too many requests in flight; try again shortly")]
    Busy,
    #[error("the request was sealed before this vault node started; seal it again")]
    BeforeStart,
}

#[derive(Debug)]
pub struct Admission {
    verifier: Verifier,
    replay: Mutex<ReplayGuard>,
}

impl Admission {
    /// `replay_per_account` bounds one account's share of the `replay_capacity` envelopes
    /// remembered; envelopes sealed before `started_at_ms` are refused.
    pub fn new(
        verifier: Verifier,
        max_age_ms: u64,
        replay_capacity: usize,
        replay_per_account: usize,
        started_at_ms: u64,
    ) -> Self {
        let replay = ReplayGuard::new(
            max_age_ms,
            replay_capacity,
            replay_per_account,
            started_at_ms,
        );
        Self {
            verifier,
            replay: Mutex::new(replay),
        }
    }

    /// Checks the token first, so that only an envelope its account's token holder sealed can
    /// take a place in the replay cache.
    pub fn admit(
        &self,
        account: &[u8],
        token: &str,
        enc: &[u8; ENC_LEN],
        sent_at_ms: u64,
        now_ms: u64,
    ) -> Result<(), Denied> {
        let now = time::OffsetDateTime::UNIX_EPOCH + time::Duration::milliseconds(now_ms as i64);
        self.verifier.verify(token, account, now)?;
        let mut replay = self.replay.lock().unwrap_or_else(PoisonError::into_inner);
        replay
            .admit(account, enc, sent_at_ms, now_ms)
            .map_err(|r| match r {
                Refusal::Stale => Denied::Stale,
                Refusal::BeforeStart => Denied::BeforeStart,
                Refusal::Replayed => Denied::Replayed,
                Refusal::Full => Denied::Busy,
            })
    }
}
