//! `lockbox demo`: the whole recovery-code story on embedded defaults (a local folder as the
//! "cloud"), so a newcomer sees it work in seconds. Everything it claims, it checks.

use anyhow::{Context, Result, bail, ensure};
use lockbox_client::{ClientError, VaultClient};
use lockbox_crypto::{BackupKey, OsRng, RecoveryCode, RngCore};
use lockbox_gateway::GatewayConfig;
use lockbox_store::{BackupInfo, Store};
use lockbox_token::MintingSource;
use lockbox_vault::config::{AuthConfig, DEV_AUDIENCE};
use lockbox_vault_core::KsfParams;
use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::cli::DemoArgs;
use crate::exit::{self, Exit};

pub fn run(args: &DemoArgs) -> Result<()> {
    let _tmp;
    let work = match &args.workdir {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
            d.clone()
        }
        None => {
            _tmp = tempfile::tempdir().context("cannot create a temporary directory")?;
            _tmp.path().to_path_buf()
        }
    };
    let rt = super::runtime()?;
    let phone = work.join("old-phone/chats");
    step(1, "A phone with chat history");
    let bytes = make_sample_chats(&phone)?;
    // What every restore below must reproduce.
    let original = snapshot(&phone)?;
    let files = original
        .values()
        .filter(|e| matches!(e, Node::File { .. }))
        .count();
    println!(
        "   {} ({files} files, {} KiB)",
        phone.display(),
        bytes / 1024
    );

    step(
        2,
        "Turn on encrypted backups: a random 256-bit key, shown once as a recovery code",
    );
    let key = BackupKey::generate(&mut OsRng);
    let code = key.recovery_code().to_grouped();
    println!("   {}", code.as_str());

    let cloud = work.join("cloud");
    let store = Store::open(&format!("file://{}", cloud.display()))?;
    step(
        3,
        "Back up: one encrypted stream, uploaded to the cloud folder",
    );
    let info = backup_dir(&store, &rt, &phone, &key, true)?;
    println!(
        "   backup {} ({} bytes) in {}",
        info.name.id,
        info.size,
        cloud.display()
    );

    step(
        4,
        "The phone is lost. On a new phone, type the recovery code back (any spacing, any case)",
    );
    let typed = code.replace(' ', "-").to_uppercase();
    let new_key = RecoveryCode::parse(&typed)?.into_key();
    let restored = work.join("new-phone/chats");
    std::fs::create_dir_all(work.join("new-phone"))?;
    let latest = rt
        .block_on(store.latest())?
        .context("the backup is not listed")?;
    restore_backup(&store, &rt, &latest, &new_key, &restored, true)?;
    ensure!(
        original == snapshot(&restored)?,
        "restored tree differs from the original"
    );
    println!(
        "   restored into {}: identical, file by file",
        restored.display()
    );

    password_path(&rt, &work, &key, &store, &latest, &original)?;

    step(7, "A wrong recovery code is refused as such");
    let wrong = BackupKey::generate(&mut OsRng);
    let err = restore_backup(&store, &rt, &latest, &wrong, &work.join("wrong"), true)
        .err()
        .context("a wrong key restored the backup")?;
    ensure!(
        exit::classify(&err) == Exit::Auth,
        "unexpected error: {err:#}"
    );
    println!("   lockbox: {} (exit status 2)", exit::render(&err));

    step(
        8,
        "A storage provider that flips one byte is caught, and nothing is restored",
    );
    tamper(&cloud)?;
    let dest = work.join("tampered");
    let err = restore_backup(&store, &rt, &latest, &new_key, &dest, true)
        .err()
        .context("a tampered backup restored")?;
    ensure!(
        exit::classify(&err) == Exit::Integrity,
        "unexpected error: {err:#}"
    );
    ensure!(!dest.exists(), "a failed restore left {}", dest.display());
    println!("   lockbox: {} (exit status 3)", exit::render(&err));

    println!("\nDemo complete. Files are in {}", work.display());
    if args.workdir.is_none() {
        println!("(a temporary directory, removed now; pass --workdir DIR to keep it)");
    }
    Ok(())
}

/// Steps 5–6: the key deposited in a Backup Key Vault node (in process, software sealer) under a
/// password, and recovered on the new phone with OPAQUE, with real Argon2id costs.
fn password_path(
    rt: &tokio::runtime::Runtime,
    work: &Path,
    key: &BackupKey,
    store: &Store,
    latest: &BackupInfo,
    original: &Tree,
) -> Result<()> {
    const ACCOUNT: &[u8] = b"+15550123456";
    const PASSWORD: &[u8] = b"correct horse battery staple";
    step(
        5,
        "Or protect the key with a password: deposit it in the Backup Key Vault (OPAQUE)",
    );
    let vault_dir = work.join("vault");
    std::fs::create_dir_all(&vault_dir)?;
    let config = vault_dir.join("vault.toml");
    // The demo plays the messaging service's login too: a dev identity provider whose tokens
    // the node accepts, minting one per request for the demo account.
    let issuer = std::sync::Arc::new(lockbox_token::Issuer::generate()?);
    let tokens = MintingSource::new(issuer.clone(), DEV_AUDIENCE, Duration::from_secs(600));
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = \"data\"\npartitions = [0]\n{}",
            AuthConfig::toml_section(&issuer, DEV_AUDIENCE)
        ),
    )?;
    let cfg = lockbox_vault::VaultConfig::load(&config)?;
    let recovered = rt.block_on(async {
        let node = lockbox_vault::bind(cfg).await?;
        let endpoint = format!("http://{}", node.local_addr());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(node.serve(async {
            let _ = stopped.await;
        }));
        // The device talks to a gateway, which checks its token and relays what it cannot read.
        let gateway = lockbox_gateway::bind(GatewayConfig::parse(&format!(
            "listen = \"127.0.0.1:0\"\n{}[[partitions]]\nid = 0\nreplicas = [\"{endpoint}\"]\n",
            AuthConfig::toml_section(&issuer, DEV_AUDIENCE)
        ))
        .map_err(anyhow::Error::msg)?)
        .await?;
        let relay = format!("http://{}", gateway.local_addr());
        let (stop_gateway, gateway_stopped) = tokio::sync::oneshot::channel::<()>();
        let relaying = tokio::spawn(gateway.serve(async {
            let _ = gateway_stopped.await;
        }));
        // Trust on first use of the node's keys, for the demo only: devices pin them from the
        // signed fleet manifest.
        let mut target = VaultClient::discover(&endpoint, 0).await?;
        target.endpoint = relay.clone();
        let client = VaultClient::connect(target)
            .await?
            .with_token_source(std::sync::Arc::new(tokens));
        client.enroll(ACCOUNT, PASSWORD, key, 10, KsfParams::DEFAULT).await?;
        println!("   device -> gateway {relay} -> vault node {endpoint}");
        println!("   record enrolled, 10 attempts; the password never left the device, and the gateway saw only ciphertext");
        step(6, "New phone, no recovery code: recover the key with the password");
        match client.recover(ACCOUNT, b"correct horse battery stable").await {
            Err(ClientError::WrongPassword { attempts_left }) => {
                println!("   a mistyped password is refused and costs an attempt: {attempts_left} left")
            }
            other => bail!("a wrong password was not refused: {other:?}"),
        }
        let recovered = client.recover(ACCOUNT, PASSWORD).await?;
        let _ = stop_gateway.send(());
        relaying.await??;
        let _ = stop.send(());
        server.await??;
        anyhow::Ok(recovered)
    })?;
    ensure!(&recovered == key, "the vault released a different key");
    let restored = work.join("new-phone-2/chats");
    std::fs::create_dir_all(work.join("new-phone-2"))?;
    restore_backup(store, rt, latest, &recovered, &restored, true)?;
    ensure!(
        *original == snapshot(&restored)?,
        "password restore differs from the original"
    );
    println!(
        "   the right password released the key; restored into {}: identical",
        restored.display()
    );
    Ok(())
}

fn step(n: u32, what: &str) {
    println!("\n{n}. {what}");
}

/// A small chat directory: a compressible message database, incompressible media, nesting,
/// an empty folder, restrictive permissions and a symlink.
fn make_sample_chats(root: &Path) -> Result<u64> {
    let media = root.join("Media");
    for d in ["Images", "Voice Notes", "Documents", "Stickers"] {
        std::fs::create_dir_all(media.join(d))?;
    }
    let mut db = String::new();
    let names = ["alice", "bob", "carol", "dave"];
    for i in 0..40_000u32 {
        let who = names[i as usize % names.len()];
        db.push_str(&format!(
            "{i}\t{who}\t2026-11-{:02}\tsee you at {} o'clock?\n",
            i % 28 + 1,
            i % 12 + 1
        ));
    }
    let mut total = write(&root.join("msgstore.db"), db.as_bytes(), 0o600)?;
    for i in 1..=3 {
        total += write(
            &media.join(format!("Images/IMG-{i:04}.jpg")),
            &random(512 * 1024),
            0o644,
        )?;
    }
    total += write(
        &media.join("Voice Notes/PTT-0001.opus"),
        &random(300 * 1024),
        0o644,
    )?;
    total += write(
        &media.join("Documents/recipe.txt"),
        b"flour, water, salt, patience\n",
        0o644,
    )?;
    std::os::unix::fs::symlink("Documents/recipe.txt", media.join("latest-doc"))?;
    Ok(total)
}

fn write(path: &Path, data: &[u8], mode: u32) -> Result<u64> {
    std::fs::write(path, data).with_context(|| format!("cannot write {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(data.len() as u64)
}

fn random(n: usize) -> Vec<u8> {
    let mut v = vec![0; n];
    OsRng.fill_bytes(&mut v);
    v
}

#[derive(Debug, PartialEq, Eq)]
enum Node {
    Dir { mode: u32 },
    File { mode: u32, data: Vec<u8> },
    Link(PathBuf),
}

/// Everything a restore must reproduce, keyed by relative path.
type Tree = BTreeMap<PathBuf, Node>;

fn snapshot(root: &Path) -> Result<Tree> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            let meta = std::fs::symlink_metadata(&path)?;
            let rel = path.strip_prefix(root)?.to_path_buf();
            let mode = meta.mode() & 0o7777;
            let node = if meta.file_type().is_symlink() {
                Node::Link(std::fs::read_link(&path)?)
            } else if meta.is_dir() {
                stack.push(path.clone());
                Node::Dir { mode }
            } else {
                Node::File {
                    mode,
                    data: std::fs::read(&path)?,
                }
            };
            out.insert(rel, node);
        }
    }
    Ok(out)
}

/// Plays the storage provider: flips one byte in the middle of the only backup object.
fn tamper(cloud: &Path) -> Result<()> {
    let mut objects = Vec::new();
    let mut stack = vec![cloud.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let p = entry?.path();
            if p.is_dir() {
                stack.push(p)
            } else {
                objects.push(p)
            }
        }
    }
    let [object] = objects.as_slice() else {
        bail!("expected one backup object, found {}", objects.len())
    };
    let mut bytes = std::fs::read(object)?;
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(object, bytes)?;
    Ok(())
}

fn job<'a>(
    store: &'a Store,
    rt: &'a tokio::runtime::Runtime,
    key: &'a BackupKey,
    cancel: &'a lockbox_client::Cancel,
) -> lockbox_client::backup::Job<'a> {
    lockbox_client::backup::Job {
        store,
        rt: rt.handle(),
        key,
        cancel,
    }
}

fn backup_dir(
    store: &Store,
    rt: &tokio::runtime::Runtime,
    dir: &Path,
    key: &BackupKey,
    _quiet: bool,
) -> Result<BackupInfo> {
    let cancel = lockbox_client::Cancel::new();
    let job = job(store, rt, key, &cancel);
    Ok(lockbox_client::backup::backup_dir(
        &job,
        dir,
        super::now_unix_ms(),
        &mut |_| {},
    )?)
}

fn restore_backup(
    store: &Store,
    rt: &tokio::runtime::Runtime,
    info: &BackupInfo,
    key: &BackupKey,
    dest: &Path,
    _quiet: bool,
) -> Result<()> {
    let cancel = lockbox_client::Cancel::new();
    let job = job(store, rt, key, &cancel);
    Ok(lockbox_client::backup::restore_backup(
        &job,
        info,
        dest,
        &mut |_| {},
    )?)
}
