//! Who may send how much (DESIGN.md §4, "per-account backoff and global limits"): a global
//! rate, a rate per client address, a rate per account for every call, and a backoff on the
//! account's login starts (the envelopes whose class says they spend an attempt).
//!
//! The account limits are applied only after the account token verified, so a stranger cannot
//! use up someone else's allowance; the global and per-client limits come first, so an
//! unauthenticated flood is cut before it costs a signature check. Every table is bounded:
//! when one is full of recently active keys, new keys are refused (the gateway is busy) rather
//! than old ones forgotten early.

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota};
use serde::Deserialize;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU32;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// `[limits]` in gateway.toml. A rate of 0 disables that limit.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Calls per second through this gateway, all clients together.
    pub global_per_second: u32,
    /// Calls per second from one client address, with bursts of `client_burst`.
    pub client_per_second: u32,
    pub client_burst: u32,
    /// Calls per minute for one account (any kind), with bursts of `account_burst`.
    pub account_per_minute: u32,
    pub account_burst: u32,
    /// Login starts an account may make back to back before the backoff begins.
    pub login_free: u32,
    /// The first backoff delay; it doubles with every further login start, up to the maximum.
    pub login_backoff_base_ms: u64,
    pub login_backoff_max_secs: u64,
    /// Each quiet period this long forgives one login start.
    pub login_forgive_secs: u64,
    /// Most clients, accounts, and accounts in backoff tracked at once (each table).
    pub max_tracked: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            global_per_second: 2000,
            client_per_second: 20,
            client_burst: 60,
            account_per_minute: 60,
            account_burst: 20,
            login_free: 5,
            login_backoff_base_ms: 1000,
            login_backoff_max_secs: 3600,
            login_forgive_secs: 600,
            max_tracked: 1_000_000,
        }
    }
}

impl LimitsConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.client_per_second > 0 && self.client_burst == 0 {
            return Err("`client_burst` must be at least 1".into());
        }
        if self.account_per_minute > 0 && self.account_burst == 0 {
            return Err("`account_burst` must be at least 1".into());
        }
        if self.login_backoff_base_ms == 0 || self.login_forgive_secs == 0 {
            return Err(
                "`login_backoff_base_ms` and `login_forgive_secs` must be at least 1".into(),
            );
        }
        let (Some(max_ms), Some(_)) = (
            self.login_backoff_max_secs.checked_mul(1000),
            self.login_forgive_secs.checked_mul(1000),
        ) else {
            return Err(
                "`login_backoff_max_secs` and `login_forgive_secs` must fit in milliseconds".into(),
            );
        };
        if max_ms < self.login_backoff_base_ms {
            return Err("`login_backoff_max_secs` must not be below the base delay".into());
        }
        if self.max_tracked < 16 {
            return Err("`max_tracked` must be at least 16".into());
        }
        Ok(())
    }
}

/// Which limit refused a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Global,
    Client,
    Account,
    Login,
    /// A table is full of active keys.
    Busy,
}

impl Scope {
    pub fn name(self) -> &'static str {
        match self {
            Scope::Global => "global",
            Scope::Client => "client",
            Scope::Account => "account",
            Scope::Login => "login",
            Scope::Busy => "busy",
        }
    }
}

/// A refusal, and when the same call could succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    pub scope: Scope,
    pub retry_after: Duration,
}

/// The backoff on one account's login starts: `free` back to back, then each must wait
/// `base · 2^(n − free − 1)` (capped) after the previous one; quiet time forgives strikes.
/// Pure, with the clock passed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffPolicy {
    pub free: u32,
    pub base_ms: u64,
    pub max_ms: u64,
    pub forgive_ms: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Strikes {
    count: u32,
    last_ms: u64,
    next_ms: u64,
}

impl Strikes {
    /// Admits a login start at `now_ms`, or says how long to wait. A refused start is no strike.
    pub fn admit(&mut self, p: &BackoffPolicy, now_ms: u64) -> Result<(), u64> {
        self.forgive(p, now_ms);
        if now_ms < self.next_ms {
            return Err(self.next_ms - now_ms);
        }
        self.count = self.count.saturating_add(1);
        self.last_ms = self.last_ms.max(now_ms);
        // Concurrent starts read the clock before they take the table's lock, so `now_ms` may be
        // a little older than the last admit's: a free start must not set a wait they then
        // "owe" (that refused free logins with "retry in 2 ms").
        let delay = p.delay_after(self.count);
        if delay > 0 {
            self.next_ms = self.next_ms.max(now_ms.saturating_add(delay));
        }
        Ok(())
    }

    fn forgive(&mut self, p: &BackoffPolicy, now_ms: u64) {
        let quiet = now_ms.saturating_sub(self.last_ms) / p.forgive_ms;
        let forgiven = u32::try_from(quiet).unwrap_or(u32::MAX);
        if forgiven > 0 {
            self.count = self.count.saturating_sub(forgiven);
            self.last_ms = self
                .last_ms
                .saturating_add(u64::from(forgiven) * p.forgive_ms);
        }
    }

    /// Nothing left to remember: every strike forgiven and no wait pending.
    fn is_spent(&self, p: &BackoffPolicy, now_ms: u64) -> bool {
        let mut s = *self;
        s.forgive(p, now_ms);
        s.count == 0 && now_ms >= s.next_ms
    }
}

impl BackoffPolicy {
    fn delay_after(&self, count: u32) -> u64 {
        if count <= self.free {
            return 0;
        }
        let doublings = (count - self.free - 1).min(40);
        self.base_ms.saturating_mul(1 << doublings).min(self.max_ms)
    }
}

/// Every limit, shared by all connections.
#[derive(Debug)]
pub struct Limits {
    global: Option<DefaultDirectRateLimiter>,
    client: Option<DefaultKeyedRateLimiter<IpAddr>>,
    account: Option<DefaultKeyedRateLimiter<Vec<u8>>>,
    backoff: BackoffPolicy,
    strikes: Mutex<HashMap<Vec<u8>, Strikes>>,
    max_tracked: usize,
}

fn quota(per: Duration, rate: u32, burst: u32) -> Option<Quota> {
    let rate = NonZeroU32::new(rate)?;
    let burst = NonZeroU32::new(burst.max(1))?;
    Quota::with_period(per / rate.get()).map(|q| q.allow_burst(burst))
}

impl Limits {
    pub fn new(cfg: &LimitsConfig) -> Self {
        let second = Duration::from_secs(1);
        let global = quota(second, cfg.global_per_second, cfg.global_per_second)
            .map(governor::RateLimiter::direct);
        let client = quota(second, cfg.client_per_second, cfg.client_burst)
            .map(governor::RateLimiter::keyed);
        let account = quota(
            Duration::from_secs(60),
            cfg.account_per_minute,
            cfg.account_burst,
        )
        .map(governor::RateLimiter::keyed);
        Self {
            global,
            client,
            account,
            backoff: BackoffPolicy {
                free: cfg.login_free,
                base_ms: cfg.login_backoff_base_ms,
                max_ms: cfg.login_backoff_max_secs.saturating_mul(1000),
                forgive_ms: cfg.login_forgive_secs.saturating_mul(1000).max(1),
            },
            strikes: Mutex::new(HashMap::new()),
            max_tracked: cfg.max_tracked,
        }
    }

    /// Before the token is checked: the client's rate, then the global one. In this order, so
    /// that the calls one client is refused never use up the budget all clients share.
    pub fn check_client(&self, client: Option<IpAddr>) -> Result<(), Limited> {
        if let (Some(limiter), Some(ip)) = (&self.client, client) {
            check_keyed(limiter, &client_key(ip), Scope::Client, self.max_tracked)?;
        }
        if let Some(global) = &self.global {
            global.check().map_err(|n| limited(Scope::Global, &n))?;
        }
        Ok(())
    }

    /// After the token verified for `account`: its call rate and, for a login start, its
    /// backoff (`now_ms` is wall-clock Unix time).
    pub fn check_account(
        &self,
        account: &[u8],
        login_start: bool,
        now_ms: u64,
    ) -> Result<(), Limited> {
        if let Some(limiter) = &self.account {
            check_keyed(limiter, &account.to_vec(), Scope::Account, self.max_tracked)?;
        }
        if login_start {
            self.check_login(account, now_ms)?;
        }
        Ok(())
    }

    fn check_login(&self, account: &[u8], now_ms: u64) -> Result<(), Limited> {
        let mut table = self.strikes.lock().unwrap_or_else(PoisonError::into_inner);
        if !table.contains_key(account) && table.len() >= self.max_tracked {
            let p = self.backoff;
            table.retain(|_, s| !s.is_spent(&p, now_ms));
            if table.len() >= self.max_tracked {
                return Err(busy());
            }
        }
        let strikes = table.entry(account.to_vec()).or_default();
        strikes
            .admit(&self.backoff, now_ms)
            .map_err(|wait| Limited {
                scope: Scope::Login,
                retry_after: Duration::from_millis(wait),
            })
    }

    /// Forgets what no longer limits anybody (run now and then).
    pub fn sweep(&self, now_ms: u64) {
        if let Some(limiter) = &self.account {
            limiter.retain_recent();
        }
        if let Some(limiter) = &self.client {
            limiter.retain_recent();
        }
        let p = self.backoff;
        let mut table = self.strikes.lock().unwrap_or_else(PoisonError::into_inner);
        table.retain(|_, s| !s.is_spent(&p, now_ms));
    }

    /// Keys tracked per table: (clients, accounts, accounts in backoff).
    pub fn tracked(&self) -> (usize, usize, usize) {
        let strikes = self.strikes.lock().unwrap_or_else(PoisonError::into_inner);
        (
            self.client.as_ref().map_or(0, |l| l.len()),
            self.account.as_ref().map_or(0, |l| l.len()),
            strikes.len(),
        )
    }
}

/// Whose rate a call counts against: an IPv4 address (also when it reaches a dual-stack
/// socket as `::ffff:a.b.c.d`), or an IPv6 /64, the least any IPv6 host holds and picks its
/// source addresses from at will.
fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX))),
        },
    }
}

fn check_keyed<K>(
    limiter: &DefaultKeyedRateLimiter<K>,
    key: &K,
    scope: Scope,
    max: usize,
) -> Result<(), Limited>
where
    K: Clone + Eq + std::hash::Hash,
{
    if limiter.len() >= max {
        limiter.retain_recent();
        if limiter.len() >= max {
            return Err(busy());
        }
    }
    limiter.check_key(key).map_err(|n| limited(scope, &n))
}

fn limited(scope: Scope, n: &governor::NotUntil<<DefaultClock as Clock>::Instant>) -> Limited {
    Limited {
        scope,
        retry_after: n.wait_time_from(DefaultClock::default().now()),
    }
}

fn busy() -> Limited {
    Limited {
        scope: Scope::Busy,
        retry_after: Duration::from_secs(1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: BackoffPolicy = BackoffPolicy {
        free: 3,
        base_ms: 1000,
        max_ms: 8000,
        forgive_ms: 60_000,
    };

    #[test]
    fn free_starts_then_doubling_waits_capped() {
        let mut s = Strikes::default();
        let mut now = 1_000_000;
        for _ in 0..3 {
            assert_eq!(s.admit(&P, now), Ok(()));
        }
        // The third start set no wait; the fourth is admitted and sets 1 s.
        assert_eq!(s.admit(&P, now), Ok(()));
        assert_eq!(s.admit(&P, now), Err(1000));
        let mut waits = Vec::new();
        for _ in 0..5 {
            now += match s.admit(&P, now) {
                Err(w) => w,
                Ok(()) => unreachable!("a wait is pending"),
            };
            assert_eq!(s.admit(&P, now), Ok(()));
            waits.push(s.next_ms - now);
        }
        assert_eq!(waits, [2000, 4000, 8000, 8000, 8000]);
    }

    #[test]
    fn refused_starts_are_no_strikes_and_quiet_time_forgives() {
        let mut s = Strikes::default();
        let now = 5_000_000;
        for _ in 0..4 {
            s.admit(&P, now).unwrap();
        }
        for _ in 0..100 {
            assert!(s.admit(&P, now + 1).is_err());
        }
        assert_eq!(s.count, 4);
        // Two quiet minutes forgive two strikes: back to two, so one more is free.
        let later = now + 120_000;
        s.admit(&P, later).unwrap();
        assert_eq!(s.count, 3);
        assert!(s.next_ms <= later, "a free start left a wait");
        assert!(s.is_spent(&P, later + 3 * 60_000));
    }

    #[test]
    fn free_starts_read_a_clock_a_little_behind_are_not_refused() {
        let mut s = Strikes::default();
        s.admit(&P, 1_000_002).unwrap();
        // Read before the first took the lock: two ms older, still free.
        s.admit(&P, 1_000_000).unwrap();
        assert_eq!(s.count, 2);
    }

    fn tight() -> LimitsConfig {
        LimitsConfig {
            account_per_minute: 0,
            login_free: 2,
            max_tracked: 16,
            ..LimitsConfig::default()
        }
    }

    #[test]
    fn one_accounts_backoff_leaves_another_alone() {
        let limits = Limits::new(&tight());
        let now = 10_000_000;
        for _ in 0..3 {
            limits.check_account(b"mallory", true, now).unwrap();
        }
        let e = limits.check_account(b"mallory", true, now).unwrap_err();
        assert_eq!(e.scope, Scope::Login);
        assert_eq!(e.retry_after, Duration::from_millis(1000));
        // Other calls of the same account are not login starts: no backoff for them.
        limits.check_account(b"mallory", false, now).unwrap();
        limits.check_account(b"alice", true, now).unwrap();
    }

    #[test]
    fn a_full_table_refuses_new_accounts_but_not_known_ones() {
        let limits = Limits::new(&tight());
        let now = 10_000_000;
        for i in 0..16u8 {
            limits.check_account(&[i], true, now).unwrap();
        }
        let e = limits.check_account(b"new", true, now).unwrap_err();
        assert_eq!(e.scope, Scope::Busy);
        limits.check_account(&[0], true, now).unwrap();
        // Once their strikes are forgiven the old entries make room.
        let later = now + 11 * 60_000;
        limits.check_account(b"new", true, later).unwrap();
    }

    #[test]
    fn account_rate_counts_every_call_kind() {
        let cfg = LimitsConfig {
            account_per_minute: 60,
            account_burst: 3,
            ..tight()
        };
        let limits = Limits::new(&cfg);
        for _ in 0..3 {
            limits.check_account(b"a", false, 0).unwrap();
        }
        let e = limits.check_account(b"a", false, 0).unwrap_err();
        assert_eq!(e.scope, Scope::Account);
        assert!(e.retry_after > Duration::ZERO && e.retry_after <= Duration::from_secs(1));
        limits.check_account(b"b", false, 0).unwrap();
    }

    #[test]
    fn client_rate_is_per_address() {
        let cfg = LimitsConfig {
            client_per_second: 1,
            client_burst: 2,
            ..tight()
        };
        let limits = Limits::new(&cfg);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        limits.check_client(Some(a)).unwrap();
        limits.check_client(Some(a)).unwrap();
        assert_eq!(
            limits.check_client(Some(a)).unwrap_err().scope,
            Scope::Client
        );
        limits.check_client(Some(b)).unwrap();
    }

    /// Every IPv6 host holds at least a /64 and picks its source address in it at will: a
    /// rate per /128 would give one host 2^64 fresh budgets. An IPv4 client seen through a
    /// dual-stack socket is still its own IPv4 address, not one /64 shared by all of IPv4.
    #[test]
    fn an_ipv6_host_cannot_rotate_addresses_past_its_rate() {
        let cfg = LimitsConfig {
            client_per_second: 1,
            client_burst: 2,
            ..tight()
        };
        let limits = Limits::new(&cfg);
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        limits.check_client(ip("2001:db8:0:7::1")).unwrap();
        limits.check_client(ip("2001:db8:0:7::2")).unwrap();
        let rotated = limits.check_client(ip("2001:db8:0:7:abcd::3"));
        assert_eq!(rotated.map_err(|l| l.scope), Err(Scope::Client));
        limits.check_client(ip("2001:db8:0:8::1")).unwrap();

        limits.check_client(ip("10.0.0.1")).unwrap();
        limits.check_client(ip("::ffff:10.0.0.1")).unwrap();
        let mapped = limits.check_client(ip("::ffff:10.0.0.1"));
        assert_eq!(mapped.map_err(|l| l.scope), Err(Scope::Client));
        limits.check_client(ip("::ffff:10.0.0.2")).unwrap();
    }
}
