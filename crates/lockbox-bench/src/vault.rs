//! Vault-side ceilings, in process: server-side OPAQUE logins per second on one core (client
//! work excluded) and sealer operations per second (software and PKCS#11/SoftHSM2). These are
//! what the replicated vault is measured against.

use anyhow::{Result, bail};
use lockbox_client::TokenSource;
use lockbox_crypto::BackupKey;
use lockbox_hsm::{HsmPin, Pkcs11Config, Pkcs11Sealer, Sealer, SoftwareSealer};
use lockbox_token::{Issuer, MintingSource};
use lockbox_vault::config::{AuthConfig, DEV_AUDIENCE};
use lockbox_vault_core::KsfParams;
use rand_core::OsRng;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Client Argon2 cost is outside the measured server time; light parameters keep runs short.
const KSF: KsfParams = KsfParams::INSECURE_TEST_ONLY;

/// The single-core server ceiling ([`lockbox_bench::ceiling`]), run for `secs`.
pub fn opaque(secs: f64) -> Result<()> {
    let c = lockbox_bench::ceiling::measure(secs).map_err(anyhow::Error::from_boxed)?;
    println!(
        "### Server-side OPAQUE login on one core ({} logins)\n",
        c.logins
    );
    println!("| measure | value |\n|---|---:|");
    println!(
        "| core per login (KE1→KE2 + KE3→verify) | {:.3} ms |",
        c.part_ms(c.core)
    );
    println!(
        "| logins per second per core, core only | {:.0} |",
        c.core_only_per_s()
    );
    println!(
        "| admission per login (2 account-token checks + replay cache) | {:.3} ms |",
        c.part_ms(c.admission)
    );
    println!(
        "| envelopes (2 opened, 2 answered) and record seals (2) per login | {:.3} ms |",
        c.part_ms(c.sealing)
    );
    println!(
        "| logins per second per core, all of it | {:.0} |\n",
        c.logins_per_s()
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
