//! The plaintext inside an opened envelope is attacker-chosen (anyone can seal to a partition's
//! public key). Decoding it (protobuf, account binding, field ranges) and handing it to the
//! vault core must never panic, whatever the bytes, for an absent and for an active record.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lockbox_crypto::BackupKey;
use lockbox_vault::request;
use lockbox_vault_core::client::ClientEnrollment;
use lockbox_vault_core::{
    AccountId, AttemptLimit, KsfParams, Outcome, Record, Request, Vault, VaultConfig, VaultSecrets,
};
use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::SeedableRng;
use std::sync::OnceLock;

const ACCOUNT: &[u8] = b"alice";
const KSF: KsfParams = KsfParams::INSECURE_TEST_ONLY;

struct Fixture {
    secrets: VaultSecrets,
    record: Record,
}

/// One partition's secrets and an enrolled record for ACCOUNT, made once.
fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let mut rng = ChaCha20Rng::from_seed([1; 32]);
        let secrets = VaultSecrets::generate(&mut rng);
        let mut vault = vault(&secrets, &mut rng);
        let account = AccountId::new(ACCOUNT).unwrap();
        let (req, state) =
            ClientEnrollment::start(b"pw", account.clone(), secrets.identity(b"fuzz"), &mut rng)
                .unwrap();
        let started = vault.handle(
            None,
            Request::RegisterStart {
                account: account.clone(),
                registration_request: req,
            },
            &mut rng,
            0,
        );
        let Ok(Outcome::Reply(lockbox_vault_core::Reply::RegistrationStarted {
            session,
            response,
        })) = started
        else {
            panic!("registration did not start: {started:?}");
        };
        let key = BackupKey::generate(&mut rng);
        let upload = state
            .finish(
                &response,
                &key,
                AttemptLimit::new(3).unwrap(),
                KSF,
                &mut rng,
            )
            .unwrap();
        let finish = vault.handle(None, upload.into_request(account, session), &mut rng, 0);
        let Ok(Outcome::WriteThenReply { write, .. }) = finish else {
            panic!("enrollment did not finish: {finish:?}");
        };
        Fixture {
            secrets,
            record: write.record().clone(),
        }
    })
}

fn vault(secrets: &VaultSecrets, rng: &mut ChaCha20Rng) -> Vault {
    let mut config = VaultConfig::new(b"fuzz");
    config.min_ksf = KSF;
    Vault::new(secrets.clone(), config, rng)
}

fuzz_target!(|data: &[u8]| {
    let Some((&class, data)) = data.split_first() else {
        return;
    };
    let Ok(decoded) = request::decode(ACCOUNT, i32::from(class % 3), data) else {
        return;
    };
    let Ok(req) = request::to_core(decoded) else {
        return;
    };
    let f = fixture();
    let mut rng = ChaCha20Rng::from_seed([2; 32]);
    let mut vault = vault(&f.secrets, &mut rng);
    let _ = vault.handle(None, req.clone(), &mut rng, 1);
    let _ = vault.handle(Some(&f.record), req, &mut rng, 1);
});
