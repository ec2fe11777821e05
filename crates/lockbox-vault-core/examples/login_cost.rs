//! Measures the server side of one OPAQUE login (KE1 -> KE2, KE3 -> verify), client work
//! excluded. `cargo run -p lockbox-vault-core --example login_cost [--release]`.

use std::time::{Duration, Instant};

use lockbox_crypto::BackupKey;
use lockbox_vault_core::client::{ClientEnrollment, ClientRecovery};
use lockbox_vault_core::{
    AccountId, AttemptLimit, KsfParams, Outcome, Record, Reply, Request, Vault, VaultConfig,
    VaultSecrets,
};
use rand_core::OsRng;

const ROUNDS: u32 = 50;
// Client KSF cost is irrelevant to server time; light parameters keep the run short.
const KSF: KsfParams = KsfParams::INSECURE_TEST_ONLY;

fn commit(vault: &mut Vault, record: &mut Option<Record>, outcome: Outcome) -> Reply {
    match outcome {
        Outcome::Reply(reply) => reply,
        Outcome::WriteThenReply { write, pending } => {
            *record = Some(write.record().clone());
            vault
                .release(pending, write.committed())
                .expect("own proof")
        }
    }
}

fn main() {
    let secrets = VaultSecrets::generate(&mut OsRng);
    let mut config = VaultConfig::new(b"bench");
    config.min_ksf = KSF;
    let identity = secrets.identity(b"bench");
    let mut vault = Vault::new(secrets, config, &mut OsRng);
    let account = AccountId::new(b"bench-account").expect("valid id");
    let mut record = None;

    let (msg, client) =
        ClientEnrollment::start(b"pw", account.clone(), identity.clone(), &mut OsRng)
            .expect("start");
    let req = Request::RegisterStart {
        account: account.clone(),
        registration_request: msg,
    };
    let out = vault
        .handle(record.as_ref(), req, &mut OsRng, 0)
        .expect("register start");
    let Reply::RegistrationStarted { session, response } = commit(&mut vault, &mut record, out)
    else {
        panic!()
    };
    let key = BackupKey::generate(&mut OsRng);
    let upload = client
        .finish(&response, &key, AttemptLimit::DEFAULT, KSF, &mut OsRng)
        .expect("finish");
    let out = vault
        .handle(
            record.as_ref(),
            upload.into_request(account.clone(), session),
            &mut OsRng,
            0,
        )
        .expect("register");
    commit(&mut vault, &mut record, out);

    let (mut start_t, mut finish_t) = (Duration::ZERO, Duration::ZERO);
    for _ in 0..ROUNDS {
        let (ke1, client) =
            ClientRecovery::start(b"pw", account.clone(), identity.clone(), &mut OsRng)
                .expect("ke1");
        let t = Instant::now();
        let out = vault
            .handle(
                record.as_ref(),
                Request::LoginStart {
                    account: account.clone(),
                    ke1,
                },
                &mut OsRng,
                0,
            )
            .expect("ke1");
        let Reply::LoginStarted {
            session, ke2, ksf, ..
        } = commit(&mut vault, &mut record, out)
        else {
            panic!()
        };
        start_t += t.elapsed();
        let (ke3, opening) = client.finish(&ke2, ksf, &mut OsRng).expect("ke2");
        let req = Request::LoginFinish {
            account: account.clone(),
            session: session.as_bytes().to_vec(),
            ke3,
        };
        let t = Instant::now();
        let out = vault
            .handle(record.as_ref(), req, &mut OsRng, 0)
            .expect("ke3");
        let Reply::Recovered {
            sealed_wrapped_key, ..
        } = commit(&mut vault, &mut record, out)
        else {
            panic!()
        };
        finish_t += t.elapsed();
        assert_eq!(opening.open(&sealed_wrapped_key).expect("open"), key);
    }
    println!(
        "server login: start {:?}/op, finish {:?}/op, total {:?}/op ({ROUNDS} rounds)",
        start_t / ROUNDS,
        finish_t / ROUNDS,
        (start_t + finish_t) / ROUNDS
    );
}
