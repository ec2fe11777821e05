//! A minimal in-memory shell around the real vault core: a record store with compare-and-swap
//! commits, a clock, and the real OPAQUE client. Argon2id here is INSECURE_TEST_ONLY (256 KiB, t=1).
#![allow(dead_code)]

use std::collections::BTreeMap;

use lockbox_crypto::BackupKey;
use lockbox_vault_core::client::{ClientEnrollment, ClientRecovery, EnrollmentUpload};
use lockbox_vault_core::{
    AccountId, AttemptLimit, CatalogPin, KsfParams, Outcome, Record, Reply, Request, SessionId,
    Vault, VaultConfig, VaultError, VaultIdentity, VaultSecrets,
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
        let (key, session, _) = self.recover_pinned(account, password);
        (key, session)
    }

    /// [`Self::recover`], and the catalog pin the reply carried (verified under K).
    pub fn recover_pinned(
        &mut self,
        account: &AccountId,
        password: &[u8],
    ) -> (BackupKey, SessionId, Option<CatalogPin>) {
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
            catalog_pin,
        } = reply
        else {
            panic!("unexpected {reply:?}")
        };
        let pin = catalog_pin.map(|p| p.encode());
        let (key, pin) = opening
            .open_pinned(&sealed_wrapped_key, pin.as_ref().map(|p| p.as_slice()))
            .unwrap();
        (key, session, pin)
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

/// Vault secrets and a version-1 record written by the vault before issue 12 (legacy format:
/// OPRF key from the bare account id): account "alice", password [`LEGACY_PASSWORD`],
/// K = [`LEGACY_KEY`], limit 10.
pub const LEGACY_SECRETS_HEX: &str = concat!(
    "0925a3ac52d276129ca71f7c93ec51c00c59814cbeb0b8a8d61efffefaafc4a11151f420c28e57d50ec20379",
    "71f0cce064a2e4e7862539f5831d48e7fdc2201b60093d4eb7a0e8c2361a1bda39948f31fd23fbdf91885a2f",
    "87b9b918bcd3e30b96910bcedae2f92a3f4786fa4c59d1e377b33662dfb75f3fb1bf5f11157ebf39",
);
pub const LEGACY_RECORD_HEX: &str = concat!(
    "0105616c696365000000000000000100010a0a00000100000000010000000106306e55a5ea7defb613f6edba",
    "7e596e28d5eaaefbd258d28db8bbdefbd89d716b3c5abd1ffa777c3824b1a182f33b70d4b3a381601e470dcc",
    "e6a05c615e243787cdcb710fdaeffb2ed1e6527efa1af78c4d4aa99beff24a7c813528c2a5a0596582f06ab4",
    "5834e431079573f7bdeef78186f07f4d51698c1d1d64b1841938b4c6ee3591ec97083fc50d8ecfff7df66704",
    "1cba8335887eb34e671503f1b0803ed2cd83c88dbf5bf589b1538f54401c3e382afaab98e5df3cc83796adbc",
    "ba55423c4f8f37aa4cd965037c0e29571d78a1f01db692fe232093f9804404e06d4909ed82f61038c04f0de8",
    "cf7237d9efa8dedcaafe50b354553d8626f11741",
);
pub const LEGACY_PASSWORD: &[u8] = b"legacy password";
pub const LEGACY_KEY: [u8; 32] = [0x4B; 32];

pub fn unhex(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

/// A vault holding the legacy record, as after an upgrade.
pub fn legacy_harness() -> Harness {
    let secrets = VaultSecrets::from_bytes(&unhex(LEGACY_SECRETS_HEX)).unwrap();
    let mut h = Harness::with_config(secrets, test_config());
    let record = Record::decode(&unhex(LEGACY_RECORD_HEX)).unwrap();
    h.store.insert(acct("alice"), record);
    h
}
