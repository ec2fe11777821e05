//! A minimal in-memory shell around the real vault core: a record store with compare-and-swap
//! commits, a clock, and the real OPAQUE client. Argon2id here is INSECURE_TEST_ONLY (256 KiB, t=1).
#![allow(dead_code)]

use std::collections::BTreeMap;

use lockbox_crypto::BackupKey;
use lockbox_vault_core::client::{ClientEnrollment, ClientRecovery, EnrollmentUpload};
use lockbox_vault_core::{
    AccountId, AttemptLimit, KsfParams, Outcome, Record, Reply, Request, SessionId, Vault,
    VaultConfig, VaultError, VaultIdentity, VaultSecrets,
};
use rand_core::{OsRng, RngCore};

pub const KSF: KsfParams = KsfParams::INSECURE_TEST_ONLY;
pub const SERVER_ID: &[u8] = b"lockbox-vault/test-partition";

pub fn acct(name: &str) -> AccountId {
    AccountId::new(name.as_bytes()).unwrap()
}

pub fn test_config() -> VaultConfig {
    let mut config = VaultConfig::new(SERVER_ID);
    config.min_ksf = KSF;
    config
}

pub struct Harness {
    pub secrets: VaultSecrets,
    pub vault: Vault,
    pub store: BTreeMap<AccountId, Record>,
    pub now: u64,
}

impl Harness {
    pub fn new() -> Self {
        let secrets = VaultSecrets::generate(&mut OsRng);
        Self::with_config(secrets, test_config())
    }

    pub fn with_config(secrets: VaultSecrets, config: VaultConfig) -> Self {
        Self {
            vault: Vault::new(secrets.clone(), config, &mut OsRng),
            secrets,
            store: BTreeMap::new(),
            now: 1_000_000,
        }
    }

    pub fn identity(&self) -> VaultIdentity {
        self.secrets.identity(SERVER_ID)
    }

    /// The process died: in-memory sessions are gone, the store survives.
    pub fn crash(&mut self) {
        let config = self.vault.config().clone();
        self.vault = Vault::new(self.secrets.clone(), config, &mut OsRng);
    }

    pub fn handle(&mut self, request: Request) -> Result<Outcome, VaultError> {
        let stored = self.store.get(request.account()).cloned();
        self.vault
            .handle(stored.as_ref(), request, &mut OsRng, self.now)
    }

    /// Compare-and-swap commit, then release. `None` if the CAS failed (reply dropped).
    pub fn commit(&mut self, outcome: Outcome) -> Option<Reply> {
        match outcome {
            Outcome::Reply(reply) => Some(reply),
            Outcome::WriteThenReply { write, pending } => {
                let account = write.record().account().clone();
                if self.store.get(&account) != write.prior() {
                    return None;
                }
                self.store.insert(account, write.record().clone());
                Some(self.vault.release(pending, write.committed()).unwrap())
            }
        }
    }

    pub fn run(&mut self, request: Request) -> Result<Reply, VaultError> {
        let outcome = self.handle(request)?;
        Ok(self
            .commit(outcome)
            .expect("no concurrent writer in this test"))
    }

    pub fn enroll(
        &mut self,
        account: &AccountId,
        password: &[u8],
        key: &BackupKey,
        limit: u8,
    ) -> u64 {
        let (session, enrollment) = self.register_start(account, password);
        self.register_finish(account, session, enrollment, key, limit)
            .unwrap()
    }

    pub fn register_start(
        &mut self,
        account: &AccountId,
        password: &[u8],
    ) -> (SessionId, PendingEnrollment) {
        let (msg, state) =
            ClientEnrollment::start(password, account.clone(), self.identity(), &mut OsRng)
                .unwrap();
        let reply = self
            .run(Request::RegisterStart {
                account: account.clone(),
                registration_request: msg,
            })
            .unwrap();
        let Reply::RegistrationStarted { session, response } = reply else {
            panic!("unexpected {reply:?}")
        };
        (session, PendingEnrollment { state, response })
    }

    pub fn register_finish(
        &mut self,
        account: &AccountId,
        session: SessionId,
        enrollment: PendingEnrollment,
        key: &BackupKey,
        limit: u8,
    ) -> Result<u64, VaultError> {
        let request = enrollment
            .finish(key, limit)
            .into_request(account.clone(), session);
        match self.run(request)? {
            Reply::Enrolled { generation } => Ok(generation),
            other => panic!("unexpected {other:?}"),
        }
    }

    /// KE1 → committed KE2. Returns the session, KE2 reply fields and the client state.
    pub fn login_start(
        &mut self,
        account: &AccountId,
        password: &[u8],
    ) -> Result<(SessionId, Vec<u8>, KsfParams, ClientRecovery), VaultError> {
        let (ke1, client) =
            ClientRecovery::start(password, account.clone(), self.identity(), &mut OsRng).unwrap();
        match self.run(Request::LoginStart {
            account: account.clone(),
            ke1,
        })? {
            Reply::LoginStarted {
                session, ke2, ksf, ..
            } => Ok((session, ke2, ksf, client)),
            other => panic!("unexpected {other:?}"),
        }
    }

    /// A full, successful recovery. Returns K and the now-authenticated session.
    pub fn recover(&mut self, account: &AccountId, password: &[u8]) -> (BackupKey, SessionId) {
        let (session, ke2, ksf, client) = self.login_start(account, password).unwrap();
        let (ke3, opening) = client.finish(&ke2, ksf, &mut OsRng).unwrap();
        let reply = self
            .run(Request::LoginFinish {
                account: account.clone(),
                session: session.as_bytes().to_vec(),
                ke3,
            })
            .unwrap();
        let Reply::Recovered {
            session,
            sealed_wrapped_key,
        } = reply
        else {
            panic!("unexpected {reply:?}")
        };
        (opening.open(&sealed_wrapped_key).unwrap(), session)
    }

    pub fn attempts(&self, account: &AccountId) -> Option<(u8, u8)> {
        self.store.get(account).and_then(Record::attempts)
    }
}

/// A KE3 of the right length that no login produced.
pub fn forged_ke3() -> Vec<u8> {
    let mut ke3 = vec![0u8; lockbox_vault_core::KE3_LEN];
    OsRng.fill_bytes(&mut ke3);
    ke3
}

/// Enrollment client state with the vault's response attached, for tests that finish later.
pub struct PendingEnrollment {
    state: ClientEnrollment,
    response: Vec<u8>,
}

impl PendingEnrollment {
    pub fn finish(self, key: &BackupKey, limit: u8) -> EnrollmentUpload {
        self.state
            .finish(
                &self.response,
                key,
                AttemptLimit::new(limit).unwrap(),
                KSF,
                &mut OsRng,
            )
            .unwrap()
    }
}
