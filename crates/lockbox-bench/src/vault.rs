//! Vault-side ceilings, in process: server-side OPAQUE logins per second on one core (client
//! work excluded) and sealer operations per second (software and PKCS#11/SoftHSM2). These are
//! what the replicated vault is measured against.

use anyhow::{Result, bail};
use lockbox_client::TokenSource;
use lockbox_crypto::BackupKey;
use lockbox_hsm::{HsmPin, Pkcs11Config, Pkcs11Sealer, Sealer, SoftwareSealer};
use lockbox_token::{Issuer, MintingSource};
use lockbox_vault::admission::Admission;
use lockbox_vault::config::{AuthConfig, DEV_AUDIENCE};
use lockbox_vault_core::client::{ClientEnrollment, ClientRecovery};
use lockbox_vault_core::{
    AccountId, AttemptLimit, KsfParams, Outcome, Record, Reply, Request, Vault, VaultConfig,
    VaultSecrets,
};
use rand_core::OsRng;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Client Argon2 cost is outside the measured server time; light parameters keep runs short.
const KSF: KsfParams = KsfParams::INSECURE_TEST_ONLY;

fn commit(vault: &mut Vault, record: &mut Option<Record>, outcome: Outcome) -> Result<Reply> {
    Ok(match outcome {
        Outcome::Reply(reply) => reply,
        Outcome::WriteThenReply { write, pending } => {
            *record = Some(write.record().clone());
            vault.release(pending, write.committed())?
        }
    })
}

/// Server-side OPAQUE login (KE1 → KE2 and KE3 → verify, with the record writes it decides),
/// repeated for `secs`; prints logins per second.
pub fn opaque(secs: f64) -> Result<()> {
    let secrets = VaultSecrets::generate(&mut OsRng);
    let mut config = VaultConfig::new(b"bench");
    config.min_ksf = KSF;
    let identity = secrets.identity(b"bench");
    let mut vault = Vault::new(secrets, config, &mut OsRng);
    let account = AccountId::new(b"bench-account")?;
    let mut record = None;
    let (msg, client) =
        ClientEnrollment::start(b"pw", account.clone(), identity.clone(), &mut OsRng)?;
    let req = Request::RegisterStart {
        account: account.clone(),
        registration_request: msg,
    };
    let out = vault.handle(record.as_ref(), req, &mut OsRng, 0)?;
    let Reply::RegistrationStarted { session, response } = commit(&mut vault, &mut record, out)?
    else {
        bail!("unexpected reply to RegisterStart");
    };
    let key = BackupKey::generate(&mut OsRng);
    let upload = client.finish(&response, &key, AttemptLimit::DEFAULT, KSF, &mut OsRng)?;
    let out = vault.handle(
        record.as_ref(),
        upload.into_request(account.clone(), session),
        &mut OsRng,
        0,
    )?;
    commit(&mut vault, &mut record, out)?;

    // What the node does before the core sees a request: verify the account token (one per
    // request, minted fresh by the device's identity provider) and check the replay cache.
    let issuer = Issuer::generate()?;
    let admission = Admission::new(issuer.verifier(DEV_AUDIENCE)?, 300_000, 1 << 20, 1 << 20, 0);
    let now = time::OffsetDateTime::now_utc();
    let token = issuer.mint(
        account.as_bytes(),
        DEV_AUDIENCE,
        now,
        Duration::from_secs(3600),
    )?;
    let now_ms = (now.unix_timestamp_nanos() / 1_000_000) as u64;
    let admit = |n: u64| -> Result<Duration> {
        let mut enc = [0u8; 32];
        enc[..8].copy_from_slice(&n.to_le_bytes());
        let t = Instant::now();
        admission.admit(account.as_bytes(), &token, &enc, now_ms, now_ms)?;
        Ok(t.elapsed())
    };

    let (mut server, mut admitted, mut logins) = (Duration::ZERO, Duration::ZERO, 0u64);
    let wall = Instant::now();
    let mut now = 0u64;
    while wall.elapsed().as_secs_f64() < secs {
        // Each login leaves its authenticated session behind; let it expire before the next
        // (the per-account session quota would refuse the 17th otherwise).
        now += 60_001;
        let (ke1, client) =
            ClientRecovery::start(b"pw", account.clone(), identity.clone(), &mut OsRng)?;
        admitted += admit(2 * logins)? + admit(2 * logins + 1)?;
        let t = Instant::now();
        let out = vault.handle(
            record.as_ref(),
            Request::LoginStart {
                account: account.clone(),
                ke1,
            },
            &mut OsRng,
            now,
        )?;
        let reply = commit(&mut vault, &mut record, out)?;
        server += t.elapsed();
        let Reply::LoginStarted {
            session, ke2, ksf, ..
        } = reply
        else {
            bail!("no KE2")
        };
        let (ke3, opening) = client.finish(&ke2, ksf, &mut OsRng)?;
        let t = Instant::now();
        let req = Request::LoginFinish {
            account: account.clone(),
            session: session.as_bytes().to_vec(),
            ke3,
        };
        let out = vault.handle(record.as_ref(), req, &mut OsRng, now)?;
        let reply = commit(&mut vault, &mut record, out)?;
        server += t.elapsed();
        let Reply::Recovered {
            sealed_wrapped_key, ..
        } = reply
        else {
            bail!("login failed")
        };
        anyhow::ensure!(
            opening.open(&sealed_wrapped_key)? == key,
            "recovered a different key"
        );
        logins += 1;
    }
    let per = server / logins as u32;
    let per_admitted = (server + admitted) / logins as u32;
    println!("### Server-side OPAQUE login on one core ({logins} logins)\n");
    println!("| measure | value |\n|---|---:|");
    println!(
        "| server time per login (KE1→KE2 + KE3→verify) | {:.3} ms |",
        per.as_secs_f64() * 1e3
    );
    println!(
        "| logins per second per core | {:.0} |",
        1.0 / per.as_secs_f64()
    );
    println!(
        "| admission per login (2 account-token checks + replay cache) | {:.3} ms |",
        (admitted / logins as u32).as_secs_f64() * 1e3
    );
    println!(
        "| logins per second per core, admission included | {:.0} |\n",
        1.0 / per_admitted.as_secs_f64()
    );
    Ok(())
}

fn sealer_rate(name: &str, sealer: &dyn Sealer, secs: f64) -> Result<()> {
    let record = [7u8; 411]; // the largest vault record
    let aad = b"lockbox/v1/record bench";
    let (mut seals, mut seal_t) = (0u64, Duration::ZERO);
    let (mut unseals, mut unseal_t) = (0u64, Duration::ZERO);
    let wall = Instant::now();
    while wall.elapsed().as_secs_f64() < secs {
        let t = Instant::now();
        let blob = sealer.seal(aad, &record)?;
        seal_t += t.elapsed();
        seals += 1;
        let t = Instant::now();
        let back = sealer.unseal(aad, &blob)?;
        unseal_t += t.elapsed();
        unseals += 1;
        anyhow::ensure!(back.as_slice() == record, "unseal returned other bytes");
    }
    let rate = |n: u64, t: Duration| n as f64 / t.as_secs_f64();
    println!(
        "| {name} | {:.0} | {:.0} |",
        rate(seals, seal_t),
        rate(unseals, unseal_t)
    );
    Ok(())
}

/// Seal/unseal of a 411-byte record, one thread, for each sealer.
pub fn sealers(secs: f64) -> Result<()> {
    println!("### Sealer operations per second (411-byte record, one thread)\n");
    println!("| sealer | seal/s | unseal/s |\n|---|---:|---:|");
    let dir = tempfile::tempdir()?;
    let soft = SoftwareSealer::create(dir.path().join("sealer.key"))?;
    sealer_rate("software (aws-lc-rs AES-256-GCM)", &soft, secs)?;
    // SoftHSM2 reads its config from SOFTHSM2_CONF at load time: run the PKCS#11 part in a child
    // process with a fresh token of its own.
    let conf = softhsm_token(dir.path())?;
    let out = Command::new(std::env::current_exe()?)
        .args(["sealer-pkcs11", "--seconds", &secs.to_string()])
        .env(lockbox_hsm::softhsm::CONF_ENV, &conf)
        .output()?;
    if !out.status.success() {
        bail!(
            "PKCS#11 sealer bench failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    print!("{}", String::from_utf8_lossy(&out.stdout));
    println!();
    Ok(())
}

const MODULE: &str = lockbox_hsm::softhsm::MODULE;
const TOKEN: &str = "lockbox-bench";
const PIN: &str = "1234";

/// A SoftHSM2 configuration in `dir` with one fresh token; returns the configuration file.
fn softhsm_token(dir: &Path) -> Result<std::path::PathBuf> {
    let conf = lockbox_hsm::softhsm::write_conf(dir)?;
    lockbox_hsm::softhsm::init_token(dir, TOKEN, "5678", PIN)?;
    Ok(conf)
}

/// Child half of [`sealers`]: the PKCS#11 sealer on the token SOFTHSM2_CONF points at.
pub fn pkcs11_child(secs: f64) -> Result<()> {
    let cfg = Pkcs11Config::new(MODULE, TOKEN).with_pin(HsmPin::new(PIN));
    let sealer = Pkcs11Sealer::open(&cfg)?;
    sealer_rate(
        "PKCS#11 (SoftHSM2 2.6, AES-GCM in the token)",
        &sealer,
        secs,
    )
}

/// Recoveries per second and their latency against one node, `clients` concurrent loops,
/// directly or through an in-process gateway (its limits off, so only the relay is measured).
pub fn recover_loop(clients: usize, secs: f64, via_gateway: bool) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("vault.toml");
    // Each client is one account recovering ~100 times a second, far beyond any device: its
    // share of the replay cache (1,024 envelopes per 10 min by default) is lifted here.
    let issuer = Arc::new(Issuer::generate()?);
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = \"data\"\npartitions = [0]\n\
             min_client_ksf = {{ m_cost_kib = 256, t_cost = 1, p_cost = 1 }}\n\
             replay_entries_per_account = 1000000\n{}",
            AuthConfig::toml_section(&issuer, DEV_AUDIENCE)
        ),
    )?;
    let cfg = lockbox_vault::VaultConfig::load(&config)?;
    let auth = AuthConfig::toml_section(&issuer, DEV_AUDIENCE);
    let tokens: Arc<dyn TokenSource> = Arc::new(MintingSource::new(
        issuer,
        DEV_AUDIENCE,
        Duration::from_secs(600),
    ));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut latencies = rt.block_on(async move {
        let node = lockbox_vault::bind(cfg).await?;
        let endpoint = format!("http://{}", node.local_addr());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(node.serve(async {
            let _ = stopped.await;
        }));
        let mut target = lockbox_client::VaultClient::discover(&endpoint, 0).await?;
        let relay = if via_gateway {
            let cfg = lockbox_gateway::GatewayConfig::parse(&format!(
                "listen = \"127.0.0.1:0\"\n{auth}[limits]\nglobal_per_second = 0\n\
                 client_per_second = 0\naccount_per_minute = 0\nlogin_free = 4294967295\n\
                 [[partitions]]\nid = 0\nreplicas = [\"{endpoint}\"]\n"
            ))
            .map_err(anyhow::Error::msg)?;
            let gateway = lockbox_gateway::bind(cfg).await?;
            target.endpoint = format!("http://{}", gateway.local_addr());
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let serving = tokio::spawn(gateway.serve(async {
                let _ = stopped.await;
            }));
            Some((stop, serving))
        } else {
            None
        };
        let mut loops = Vec::new();
        for i in 0..clients {
            let client = lockbox_client::VaultClient::connect(target.clone())
                .await?
                .with_token_source(Arc::clone(&tokens));
            let account = format!("bench-{i}").into_bytes();
            let key = BackupKey::generate(&mut OsRng);
            client.enroll(&account, b"pw", &key, 10, KSF).await?;
            loops.push(tokio::spawn(async move {
                let mut lat = Vec::new();
                let wall = Instant::now();
                while wall.elapsed().as_secs_f64() < secs {
                    let t = Instant::now();
                    let got = client.recover(&account, b"pw").await?;
                    lat.push(t.elapsed());
                    anyhow::ensure!(got == key, "recovered a different key");
                }
                anyhow::Ok(lat)
            }));
        }
        let mut all = Vec::new();
        for l in loops {
            all.extend(l.await??);
        }
        if let Some((stop, serving)) = relay {
            let _ = stop.send(());
            serving.await??;
        }
        let _ = stop.send(());
        server.await??;
        anyhow::Ok(all)
    })?;
    latencies.sort();
    let n = latencies.len();
    anyhow::ensure!(n > 0, "no recovery finished");
    let pct = |p: f64| latencies[((n as f64 * p) as usize).min(n - 1)].as_secs_f64() * 1e3;
    println!(
        "### Single vault node{}: recover loop ({clients} clients, {secs} s, software sealer, light client Argon2id)\n",
        if via_gateway {
            ", through a gateway"
        } else {
            ""
        }
    );
    println!("| measure | value |\n|---|---:|");
    println!("| recoveries per second | {:.0} |", n as f64 / secs);
    println!("| latency p50 | {:.2} ms |", pct(0.50));
    println!("| latency p99 | {:.2} ms |\n", pct(0.99));
    Ok(())
}
