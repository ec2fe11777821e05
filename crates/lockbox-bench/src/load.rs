//! `lockbox bench vault`: load on a running fleet through its gateway, the way devices reach it
//! (the manifest accepted under the pins, then routing by its partition map).
//!
//! Phases, each run by `concurrency` tasks: enrollment of `accounts` fresh accounts (real OPAQUE
//! registrations), status reads, recoveries with the right password (each checked against the
//! key enrolled), and wrong guesses (at most [`WRONG_PER_ACCOUNT`] per account, so no record is
//! destroyed; a wrong guess counts once its KE1 is answered, where the attempt is spent: the KE3
//! the device then sends to close the session changes nothing the count depends on). Tasks are
//! at most as many as accounts, so no account has more logins in flight than its attempt
//! limit. Client-side Argon2id is lowered to [`KSF`] so the client machine is not the
//! bottleneck; the server's work does not depend on it. The single-core ceiling
//! ([`crate::ceiling`]) is measured in the same run, after the load.

use crate::ceiling::{self, Ceiling};
use lockbox_client::{ClientError, FleetSettings, TokenSource, VaultClient};
use lockbox_crypto::BackupKey;
use lockbox_proto::manifest::Manifest;
use lockbox_vault_core::KsfParams;
use rand_core::{OsRng, RngCore};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The client's Argon2id during the benchmark (a real device uses far more).
pub const KSF: KsfParams = KsfParams::INSECURE_TEST_ONLY;
/// Wrong guesses per account in the wrong-guess phase, out of its limit of [`LIMIT`].
pub const WRONG_PER_ACCOUNT: u64 = 4;
const LIMIT: u8 = 10;
const PASSWORD: &[u8] = b"bench password";

#[derive(Debug, Clone, Copy)]
pub struct LoadOptions {
    pub accounts: usize,
    pub concurrency: usize,
    /// How long each timed phase (status, recover, wrong guesses) runs at most.
    pub duration: Duration,
    /// How long the single-core ceiling runs.
    pub ceiling: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("cannot accept the fleet's manifest from the gateway")]
    Fleet(#[source] lockbox_client::DeviceError),
    #[error("cannot reach the gateway")]
    Connect(#[source] ClientError),
    #[error(
        "the vault refuses the benchmark's light client Argon2id; start the fleet for load \
         with `lockbox dev cluster --bench`"
    )]
    KsfRefused(#[source] ClientError),
    #[error("{phase}: every operation failed; the first")]
    AllFailed {
        phase: &'static str,
        #[source]
        first: ClientError,
    },
    #[error("{0}: recovered a key that is not the one enrolled")]
    WrongKey(String),
    #[error("the single-core ceiling run failed")]
    Ceiling(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("a load task failed")]
    Task(#[from] tokio::task::JoinError),
    #[error("--accounts and --concurrency must be at least 1")]
    Options,
}

/// One phase's count, rate and latency.
#[derive(Debug, Clone)]
pub struct Phase {
    pub name: &'static str,
    pub ok: u64,
    pub errors: u64,
    pub secs: f64,
    /// Latencies of successful operations, sorted.
    latencies: Vec<Duration>,
    pub first_error: Option<String>,
}

impl Phase {
    pub fn per_s(&self) -> f64 {
        self.ok as f64 / self.secs
    }

    /// The `p` quantile (0..=1) of successful operations' latency, in ms.
    pub fn quantile_ms(&self, p: f64) -> f64 {
        let n = self.latencies.len();
        if n == 0 {
            return f64::NAN;
        }
        let at = ((n as f64 * p).ceil() as usize).clamp(1, n) - 1;
        self.latencies[at].as_secs_f64() * 1e3
    }
}

#[derive(Debug, Clone)]
pub struct Report {
    pub options: LoadOptions,
    pub partitions: usize,
    pub phases: Vec<Phase>,
    pub ceiling: Ceiling,
}

impl Report {
    fn phase(&self, name: &str) -> Option<&Phase> {
        self.phases.iter().find(|p| p.name == name)
    }

    pub fn recoveries_per_s(&self) -> f64 {
        self.phase("recover").map_or(0.0, Phase::per_s)
    }

    pub fn recovery_p99_ms(&self) -> f64 {
        self.phase("recover")
            .map_or(f64::NAN, |p| p.quantile_ms(0.99))
    }

    /// End-to-end recoveries per second as a fraction of one core's server ceiling.
    pub fn fraction_of_ceiling(&self) -> f64 {
        self.recoveries_per_s() / self.ceiling.logins_per_s()
    }

    pub fn to_json(&self) -> serde_json::Value {
        let phases: serde_json::Map<String, serde_json::Value> = self
            .phases
            .iter()
            .map(|p| {
                let v = serde_json::json!({
                    "ok": p.ok,
                    "errors": p.errors,
                    "seconds": p.secs,
                    "ops_per_s": p.per_s(),
                    "p50_ms": finite(p.quantile_ms(0.50)),
                    "p99_ms": finite(p.quantile_ms(0.99)),
                    "p999_ms": finite(p.quantile_ms(0.999)),
                    "first_error": p.first_error,
                });
                (p.name.to_owned(), v)
            })
            .collect();
        serde_json::json!({
            "recoveries_per_s": self.recoveries_per_s(),
            "recovery_p99_ms": finite(self.recovery_p99_ms()),
            "ceiling_logins_per_s": self.ceiling.logins_per_s(),
            "fraction_of_ceiling": self.fraction_of_ceiling(),
            "accounts": self.options.accounts,
            "concurrency": self.options.concurrency,
            "phase_seconds": self.options.duration.as_secs_f64(),
            "partitions": self.partitions,
            "client_argon2id": {
                "m_cost_kib": KSF.m_cost_kib(), "t_cost": KSF.t_cost(), "p_cost": KSF.p_cost(),
                "note": "lowered on the client for load generation only; the server's work is unchanged",
            },
            "wrong_guesses_per_account": WRONG_PER_ACCOUNT,
            "phases": phases,
            "ceiling": {
                "logins": self.ceiling.logins,
                "core_ms": self.ceiling.part_ms(self.ceiling.core),
                "admission_ms": self.ceiling.part_ms(self.ceiling.admission),
                "sealing_ms": self.ceiling.part_ms(self.ceiling.sealing),
            },
        })
    }

    /// The report as Markdown, for a terminal and for docs/benchmarks.md.
    pub fn markdown(&self) -> String {
        let o = &self.options;
        let mut out = format!(
            "### Vault through the gateway: {} accounts over {} partitions, {} concurrent, timed phases up to {:.0} s\n\n\
             Client Argon2id lowered to m={} KiB, t={}, p={} for load generation only (the server's work is unchanged; \
             the fleet must accept it, so its records are weak: a benchmark fleet only). Latencies are of the \
             successful operations; the load generator runs on this machine too.\n\n\
             | phase | ok | errors | seconds | ops/s | p50 ms | p99 ms | p99.9 ms |\n|---|---:|---:|---:|---:|---:|---:|---:|\n",
            o.accounts,
            self.partitions,
            o.concurrency,
            o.duration.as_secs_f64(),
            KSF.m_cost_kib(),
            KSF.t_cost(),
            KSF.p_cost(),
        );
        for p in &self.phases {
            out += &format!(
                "| {} | {} | {} | {:.1} | {:.0} | {:.1} | {:.1} | {:.1} |\n",
                p.name,
                p.ok,
                p.errors,
                p.secs,
                p.per_s(),
                p.quantile_ms(0.50),
                p.quantile_ms(0.99),
                p.quantile_ms(0.999)
            );
        }
        let c = &self.ceiling;
        out += &format!(
            "\nSingle-core server ceiling (in process, no network, no log): {:.0} logins/s \
             ({:.3} ms each: core {:.3}, admission {:.3}, envelopes and record sealing {:.3}).\n\
             End to end: {:.0} recoveries/s = {:.0} % of the ceiling.\n",
            c.logins_per_s(),
            c.per_login().as_secs_f64() * 1e3,
            c.part_ms(c.core),
            c.part_ms(c.admission),
            c.part_ms(c.sealing),
            self.recoveries_per_s(),
            100.0 * self.fraction_of_ceiling(),
        );
        for p in self.phases.iter().filter(|p| p.first_error.is_some()) {
            out += &format!(
                "First {} error: {}\n",
                p.name,
                p.first_error.as_deref().unwrap_or_default()
            );
        }
        out
    }
}

fn finite(x: f64) -> Option<f64> {
    x.is_finite().then_some(x)
}

/// One benchmark account: its name, its client (its partition's) and the key it enrolled.
struct Account {
    name: Vec<u8>,
    client: VaultClient,
    key: BackupKey,
}

/// Runs every phase against `fleet`, then the ceiling.
pub async fn run(
    fleet: &FleetSettings,
    tokens: Arc<dyn TokenSource>,
    options: LoadOptions,
) -> Result<Report, BenchError> {
    if options.accounts == 0 || options.concurrency == 0 {
        return Err(BenchError::Options);
    }
    let manifest = manifest(fleet).await?;
    let partitions = manifest.partitions().len();
    let fresh = accounts(fleet, &manifest, tokens, options.accounts).await?;
    let (enrolled, enroll_phase) = enroll(fresh, options.concurrency).await?;
    // More tasks than accounts would put more logins in flight on one account than its attempt
    // limit allows (each KE1 spends one until its KE3 gives it back).
    let options = LoadOptions {
        concurrency: options.concurrency.min(enrolled.len()),
        ..options
    };
    let accounts = Arc::new(enrolled);
    let mut phases = vec![enroll_phase];
    for kind in [Kind::Status, Kind::Recover, Kind::WrongGuess] {
        phases.push(timed(kind, &accounts, options).await?);
    }
    let secs = options.ceiling.as_secs_f64();
    let ceiling = tokio::task::spawn_blocking(move || ceiling::measure(secs))
        .await?
        .map_err(BenchError::Ceiling)?;
    Ok(Report {
        options,
        partitions,
        phases,
        ceiling,
    })
}

async fn manifest(fleet: &FleetSettings) -> Result<Manifest, BenchError> {
    let pin = fleet.pin().map_err(BenchError::Fleet)?;
    let ca = fleet.ca_pem().map_err(BenchError::Fleet)?;
    let verified = lockbox_client::fleet::update(
        &fleet.gateway,
        ca.as_deref(),
        &pin,
        None,
        lockbox_proto::unix_now_ms(),
    )
    .await
    .map_err(|e| BenchError::Fleet(e.into()))?;
    Ok(verified.manifest().clone())
}

/// `n` fresh account names (random per run, so runs never collide), each with its partition's
/// client: one connection per partition, shared.
async fn accounts(
    fleet: &FleetSettings,
    manifest: &Manifest,
    tokens: Arc<dyn TokenSource>,
    n: usize,
) -> Result<Vec<Arc<Account>>, BenchError> {
    let ca = fleet.ca_pem().map_err(BenchError::Fleet)?;
    let mut run = [0u8; 6];
    OsRng.fill_bytes(&mut run);
    let run = hex::encode(run);
    let mut clients: BTreeMap<u32, VaultClient> = BTreeMap::new();
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let name = format!("bench-{run}-{i}").into_bytes();
        let target = lockbox_client::fleet::target(manifest, &name, &fleet.gateway);
        let client = match clients.get(&target.partition) {
            Some(c) => c.clone(),
            None => {
                let partition = target.partition;
                let c = VaultClient::connect_trusting(target, ca.as_deref())
                    .await
                    .map_err(BenchError::Connect)?
                    .with_token_source(Arc::clone(&tokens));
                clients.insert(partition, c.clone());
                c
            }
        };
        out.push(Arc::new(Account {
            name,
            client,
            key: BackupKey::generate(&mut OsRng),
        }));
    }
    Ok(out)
}

/// What one task measured.
#[derive(Default)]
struct Tally {
    ok: u64,
    errors: u64,
    latencies: Vec<Duration>,
    first_error: Option<ClientError>,
}

impl Tally {
    fn record(&mut self, started: Instant, result: Result<(), ClientError>) {
        match result {
            Ok(()) => {
                self.ok += 1;
                self.latencies.push(started.elapsed());
            }
            Err(e) => {
                self.errors += 1;
                self.first_error.get_or_insert(e);
            }
        }
    }

    fn merge(mut self, other: Tally) -> Tally {
        self.ok += other.ok;
        self.errors += other.errors;
        self.latencies.extend(other.latencies);
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        self
    }

    /// The phase, or an error if nothing at all succeeded.
    fn phase(self, name: &'static str, secs: f64) -> Result<Phase, BenchError> {
        let Tally {
            ok,
            errors,
            mut latencies,
            first_error,
        } = self;
        let first_error = match (ok, first_error) {
            (0, Some(first)) => return Err(BenchError::AllFailed { phase: name, first }),
            (_, first) => first.map(|e| lockbox_client::render_error(&e)),
        };
        latencies.sort_unstable();
        Ok(Phase {
            name,
            ok,
            errors,
            secs,
            latencies,
            first_error,
        })
    }
}

/// Enrolls every account once, `concurrency` at a time; returns those that enrolled.
async fn enroll(
    accounts: Vec<Arc<Account>>,
    concurrency: usize,
) -> Result<(Vec<Arc<Account>>, Phase), BenchError> {
    let accounts = Arc::new(accounts);
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (accounts, next) = (Arc::clone(&accounts), Arc::clone(&next));
        tasks.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            let mut done = Vec::new();
            while let Some(a) = accounts.get(next.fetch_add(1, Ordering::Relaxed) as usize) {
                let t = Instant::now();
                let result = a.client.enroll(&a.name, PASSWORD, &a.key, LIMIT, KSF).await;
                if result.is_ok() {
                    done.push(Arc::clone(a));
                }
                tally.record(t, result);
            }
            (tally, done)
        }));
    }
    let mut tally = Tally::default();
    let mut done = Vec::new();
    for task in tasks {
        let (t, d) = task.await?;
        tally = tally.merge(t);
        done.extend(d);
    }
    let phase = tally
        .phase("enroll", started.elapsed().as_secs_f64())
        .map_err(|e| match e {
            BenchError::AllFailed { first, .. } if is_ksf_refusal(&first) => {
                BenchError::KsfRefused(first)
            }
            e => e,
        })?;
    Ok((done, phase))
}

fn is_ksf_refusal(e: &ClientError) -> bool {
    matches!(e, ClientError::Rejected { message, .. } if message.contains("Argon2id"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Status,
    Recover,
    WrongGuess,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Status => "status",
            Kind::Recover => "recover",
            Kind::WrongGuess => "wrong_guess",
        }
    }

    /// One operation; `Ok` when the vault answered as it must.
    async fn run(self, a: &Account) -> Result<(), ClientError> {
        match self {
            Kind::Status => match a.client.status(&a.name).await? {
                lockbox_client::Status::Active { .. } => Ok(()),
                other => Err(ClientError::Protocol(format!(
                    "an enrolled account's status is {other:?}"
                ))),
            },
            Kind::Recover => {
                if a.client.recover(&a.name, PASSWORD).await? == a.key {
                    Ok(())
                } else {
                    Err(ClientError::Protocol(
                        BenchError::WrongKey(String::from_utf8_lossy(&a.name).into_owned())
                            .to_string(),
                    ))
                }
            }
            Kind::WrongGuess => match a.client.recover(&a.name, b"not the password").await {
                Err(ClientError::WrongPassword { .. }) => Ok(()),
                Err(e) => Err(e),
                Ok(_) => Err(ClientError::Protocol(
                    "a wrong password recovered the key".into(),
                )),
            },
        }
    }

    /// Operations this phase may make in all (wrong guesses are capped per account).
    fn budget(self, accounts: usize) -> u64 {
        match self {
            Kind::WrongGuess => WRONG_PER_ACCOUNT * accounts as u64,
            _ => u64::MAX,
        }
    }
}

/// Runs `kind` on the accounts round-robin from `concurrency` tasks for the phase duration
/// (or until its budget is spent).
async fn timed(
    kind: Kind,
    accounts: &Arc<Vec<Arc<Account>>>,
    options: LoadOptions,
) -> Result<Phase, BenchError> {
    let next = Arc::new(AtomicU64::new(0));
    let budget = kind.budget(accounts.len());
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..options.concurrency {
        let (accounts, next) = (Arc::clone(accounts), Arc::clone(&next));
        tasks.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            while started.elapsed() < options.duration {
                let k = next.fetch_add(1, Ordering::Relaxed);
                if k >= budget {
                    break;
                }
                let a = &accounts[(k % accounts.len() as u64) as usize];
                let t = Instant::now();
                let result = kind.run(a).await;
                tally.record(t, result);
            }
            tally
        }));
    }
    let mut tally = Tally::default();
    for task in tasks {
        tally = tally.merge(task.await?);
    }
    tally.phase(kind.name(), started.elapsed().as_secs_f64())
}
