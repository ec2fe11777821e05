//! The single-core server ceiling: what one core of a vault node can do per second when the
//! network, the log and the client are taken away. Each login is the server's whole share of a
//! recovery: two envelopes opened (HPKE) and answered, two account-token checks and replay-cache
//! entries, the record unsealed (AES-256-GCM) and decoded before each step, the core's KE1→KE2
//! and KE3→verify, and the two record writes encoded and sealed. Not in it: protobuf and gRPC
//! framing, the log, the network.

use lockbox_crypto::BackupKey;
use lockbox_hsm::{MemorySealer, Sealer};
use lockbox_proto::envelope::{self, PartitionSecretKey, Sealed};
use lockbox_token::Issuer;
use lockbox_vault::admission::Admission;
use lockbox_vault::config::DEV_AUDIENCE;
use lockbox_vault_core::client::{ClientEnrollment, ClientRecovery};
use lockbox_vault_core::{
    AccountId, AttemptLimit, KsfParams, Outcome, Record, Reply, Request, Vault, VaultConfig,
    VaultIdentity, VaultSecrets,
};
use rand_core::{OsRng, RngCore};
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

/// Client Argon2id runs outside the measured time; light parameters keep the run short.
const KSF: KsfParams = KsfParams::INSECURE_TEST_ONLY;

type Failure = Box<dyn std::error::Error + Send + Sync>;

/// The server's time per login, split where it is spent.
#[derive(Debug, Clone, Copy)]
pub struct Ceiling {
    pub logins: u64,
    /// The core alone (KE1→KE2 and KE3→verify, with the record updates they decide).
    pub core: Duration,
    /// Account-token checks and replay cache, both requests.
    pub admission: Duration,
    /// Envelope open and answer, both requests, and the record unsealed and decoded before each
    /// step and sealed after each write.
    pub sealing: Duration,
}

impl Ceiling {
    const ZERO: Self = Self {
        logins: 0,
        core: Duration::ZERO,
        admission: Duration::ZERO,
        sealing: Duration::ZERO,
    };

    pub fn per_login(&self) -> Duration {
        (self.core + self.admission + self.sealing) / self.logins.max(1) as u32
    }

    /// Logins per second on one core, everything above included.
    pub fn logins_per_s(&self) -> f64 {
        1.0 / self.per_login().as_secs_f64()
    }

    pub fn core_only_per_s(&self) -> f64 {
        self.logins as f64 / self.core.as_secs_f64()
    }

    pub fn part_ms(&self, part: Duration) -> f64 {
        part.as_secs_f64() * 1e3 / self.logins.max(1) as f64
    }
}

/// One account's server side, and the clocks it is timed on.
struct Server {
    vault: Vault,
    /// The record as the store keeps it: sealed.
    sealed: Option<Vec<u8>>,
    records: MemorySealer,
    hpke: PartitionSecretKey,
    hpke_public: envelope::PartitionPublicKey,
    admission: Admission,
    issuer: Issuer,
    account: AccountId,
    identity: VaultIdentity,
    /// The core's clock (sessions), apart from the real time tokens are checked at.
    now_ms: u64,
    admitted_at_ms: u64,
    envelopes: u64,
    sum: Ceiling,
}

impl Server {
    fn new() -> Result<Self, Failure> {
        let secrets = VaultSecrets::generate(&mut OsRng);
        let mut config = VaultConfig::new(b"bench");
        config.min_ksf = KSF;
        let identity = secrets.identity(b"bench");
        let vault = Vault::new(secrets, config, &mut OsRng);
        let mut key = Zeroizing::new([0u8; 32]);
        OsRng.fill_bytes(key.as_mut());
        let (hpke, hpke_public) = PartitionSecretKey::generate(&mut OsRng);
        let issuer = Issuer::generate()?;
        let admission =
            Admission::new(issuer.verifier(DEV_AUDIENCE)?, 300_000, 1 << 20, 1 << 20, 0);
        Ok(Self {
            vault,
            sealed: None,
            records: MemorySealer::new(key)?,
            hpke,
            hpke_public,
            admission,
            issuer,
            account: AccountId::new(b"bench-account")?,
            identity,
            now_ms: 0,
            admitted_at_ms: 0,
            envelopes: 0,
            sum: Ceiling::ZERO,
        })
    }

    /// What the node does before the core sees a request carrying `payload`, timed: open the
    /// envelope, admit it. The responder seals the answer ([`Self::answer`]).
    fn envelope(&mut self, payload: &[u8], token: &str) -> Result<envelope::Responder, Failure> {
        let account = self.account.as_bytes().to_vec();
        let (sealed, _awaiting) =
            envelope::seal_request(&self.hpke_public, 0, &account, payload, &mut OsRng)?;
        let t = Instant::now();
        let (_plain, responder) = envelope::open_request(&self.hpke, 0, &account, &sealed)?;
        self.sum.sealing += t.elapsed();
        self.admit(&sealed, token)?;
        Ok(responder)
    }

    /// Seals the reply's protocol bytes to the requester, timed.
    fn answer(&mut self, responder: envelope::Responder, reply: &[u8]) {
        let t = Instant::now();
        let _sealed = responder.seal(reply, &mut OsRng);
        self.sum.sealing += t.elapsed();
    }

    fn admit(&mut self, sealed: &Sealed, token: &str) -> Result<(), Failure> {
        let mut enc = [0u8; 32];
        enc[..8].copy_from_slice(&self.envelopes.to_le_bytes());
        enc[8..].copy_from_slice(&sealed.enc[..24]);
        self.envelopes += 1;
        let t = Instant::now();
        self.admission.admit(
            self.account.as_bytes(),
            token,
            &enc,
            self.admitted_at_ms,
            self.admitted_at_ms,
        )?;
        self.sum.admission += t.elapsed();
        Ok(())
    }

    /// The core's answer to `req`: the stored record unsealed and decoded first, the write it
    /// decides encoded, sealed and kept.
    fn handle(&mut self, req: Request) -> Result<Reply, Failure> {
        let t = Instant::now();
        let record = match &self.sealed {
            Some(sealed) => Some(Record::decode(
                &self.records.unseal(self.account.as_bytes(), sealed)?,
            )?),
            None => None,
        };
        self.sum.sealing += t.elapsed();
        let t = Instant::now();
        let out = self
            .vault
            .handle(record.as_ref(), req, &mut OsRng, self.now_ms)?;
        let mut seal_time = Duration::ZERO;
        let reply = match out {
            Outcome::Reply(reply) => reply,
            Outcome::WriteThenReply { write, pending } => {
                let s = Instant::now();
                let record = write.record();
                let sealed = self
                    .records
                    .seal(record.account().as_bytes(), &record.encode())?;
                seal_time = s.elapsed();
                self.sealed = Some(sealed);
                self.vault.release(pending, write.committed())?
            }
        };
        self.sum.core += t.elapsed().saturating_sub(seal_time);
        self.sum.sealing += seal_time;
        Ok(reply)
    }
}

/// Enrolls one account, then logs in with the right password for `secs`.
pub fn measure(secs: f64) -> Result<Ceiling, Failure> {
    let mut s = Server::new()?;
    let (msg, client) =
        ClientEnrollment::start(b"pw", s.account.clone(), s.identity.clone(), &mut OsRng)?;
    let reply = s.handle(Request::RegisterStart {
        account: s.account.clone(),
        registration_request: msg,
    })?;
    let Reply::RegistrationStarted { session, response } = reply else {
        return Err("unexpected reply to RegisterStart".into());
    };
    let key = BackupKey::generate(&mut OsRng);
    let upload = client.finish(&response, &key, AttemptLimit::DEFAULT, KSF, &mut OsRng)?;
    s.handle(upload.into_request(s.account.clone(), session))?;
    s.sum = Ceiling::ZERO;
    s.admitted_at_ms = lockbox_proto::unix_now_ms();
    let token = s.issuer.mint(
        s.account.as_bytes(),
        DEV_AUDIENCE,
        time::OffsetDateTime::now_utc(),
        Duration::from_secs(3600),
    )?;
    let wall = Instant::now();
    while wall.elapsed().as_secs_f64() < secs {
        login(&mut s, &key, &token)?;
    }
    Ok(s.sum)
}

fn login(s: &mut Server, key: &BackupKey, token: &str) -> Result<(), Failure> {
    // Each login leaves its authenticated session behind; the core's clock moves on so that it
    // expires before the next (the per-account session quota would refuse the 17th otherwise).
    s.now_ms += 60_001;
    let (ke1, client) =
        ClientRecovery::start(b"pw", s.account.clone(), s.identity.clone(), &mut OsRng)?;
    let responder = s.envelope(&payload(&ke1, token), token)?;
    let reply = s.handle(Request::LoginStart {
        account: s.account.clone(),
        ke1,
    })?;
    let Reply::LoginStarted {
        session, ke2, ksf, ..
    } = reply
    else {
        return Err("no KE2".into());
    };
    s.answer(responder, &[session.as_bytes(), &ke2[..]].concat());
    let (ke3, opening) = client.finish(&ke2, ksf, &mut OsRng)?;
    let responder = s.envelope(&payload(&ke3, token), token)?;
    let reply = s.handle(Request::LoginFinish {
        account: s.account.clone(),
        session: session.as_bytes().to_vec(),
        ke3,
    })?;
    let Reply::Recovered {
        sealed_wrapped_key, ..
    } = reply
    else {
        return Err("the login failed".into());
    };
    s.answer(responder, &sealed_wrapped_key);
    if opening.open(&sealed_wrapped_key)? != *key {
        return Err("recovered a different key".into());
    }
    s.sum.logins += 1;
    Ok(())
}

/// A request envelope's plaintext of the real size: the protocol message and the token.
fn payload(message: &[u8], token: &str) -> Vec<u8> {
    [message, token.as_bytes(), &[0u8; 32]].concat()
}
