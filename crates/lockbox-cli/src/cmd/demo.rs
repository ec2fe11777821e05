//! `lockbox demo`: the whole story on embedded defaults, so a newcomer sees it work in a minute.
//! A dev cluster (vault node processes and a gateway on loopback, after the fleet ceremony), a
//! local folder as the "cloud", and the device library doing exactly what the CLI commands do:
//! enable with a password, back up, lose the phone, restore after a mistyped password, change the
//! password, rotate the key, and a second account destroyed by a guessing thief. Everything it
//! claims, it checks; it exits 0 only if every step verified.

use anyhow::{Context, Result, bail, ensure};
use lockbox_client::backup::BackupError;
use lockbox_client::{Cancel, ClientError, Device, DeviceError, EnableOptions, Secret};
use lockbox_crypto::{OsRng, RngCore};
use lockbox_vault_core::KsfParams;
use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::cluster::{self, ClusterOptions};
use super::device::Ctx;
use crate::cli::DemoArgs;
use crate::config::Config;
use crate::exit::{self, Exit};

const ALICE: &str = "+15550123456";
const PASSWORD: &[u8] = b"correct horse battery staple";
const NEW_PASSWORD: &[u8] = b"tr0ub4dor&3 is not a password";
const ATTEMPTS: u8 = 5;
const NODES: u32 = 5;

/// What every step needs: where things are, and the fleet the phones pin.
struct Story {
    work: PathBuf,
    cfg: Config,
    store: String,
    original: Tree,
}

impl Story {
    fn ctx(&self, phone: &str) -> Ctx<'_> {
        Ctx {
            cfg: &self.cfg,
            home: self.work.join(phone).join("home"),
            quiet: true,
        }
    }

    fn opts(&self, account: &str, max_attempts: u8) -> Result<EnableOptions> {
        Ok(EnableOptions {
            account: account.to_owned(),
            store: self.store.clone(),
            fleet: self.ctx("-").fleet()?,
            max_attempts,
            ksf: KsfParams::DEFAULT,
            replace: false,
        })
    }

    fn enable(&self, phone: &str, account: &str, password: &[u8], max: u8) -> Result<Device> {
        let ctx = self.ctx(phone);
        let tokens = ctx.dev_tokens()?;
        let (device, code) =
            Device::enable(&ctx.home, self.opts(account, max)?, Some(password), tokens)?;
        ensure!(
            code.is_none(),
            "a password device was handed a recovery code"
        );
        Ok(device)
    }

    fn restore(&self, phone: &str, account: &str, password: &[u8]) -> Result<Device, DeviceError> {
        let ctx = self.ctx(phone);
        let tokens = ctx
            .dev_tokens()
            .map_err(|e| DeviceError::Invalid(format!("{e:#}")))?;
        let opts = self
            .opts(account, ATTEMPTS)
            .map_err(|e| DeviceError::Invalid(format!("{e:#}")))?;
        let dest = self.work.join(phone).join("chats");
        Device::restore(
            &ctx.home,
            opts,
            Secret::Password(password),
            &dest,
            &mut |_| {},
            &Cancel::new(),
            tokens,
        )
        .map(|(device, _)| device)
    }

    fn check_restored(&self, phone: &str) -> Result<()> {
        let restored = self.work.join(phone).join("chats");
        ensure!(
            self.original == snapshot(&restored)?,
            "the restored tree in {} differs from the original",
            restored.display()
        );
        println!(
            "   restored into {}: identical, file by file",
            restored.display()
        );
        Ok(())
    }
}

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
    step(1, "A phone with chat history");
    let chats = work.join("old-phone/chats");
    let bytes = make_sample_chats(&chats)?;
    let original = snapshot(&chats)?;
    let files = original
        .values()
        .filter(|e| matches!(e, Node::File { .. }))
        .count();
    println!(
        "   {} ({files} files, {} KiB)",
        chats.display(),
        bytes / 1024
    );

    step(
        2,
        "A Backup Key Vault on this machine: 5 vault nodes and a gateway",
    );
    let mut cluster = cluster::start(&ClusterOptions {
        dir: work.join("cluster"),
        nodes: NODES,
        partitions: 8,
        hsm: false,
        bench: false,
    })?;
    println!("   8 partitions, each a Raft group replicated on all 5 nodes (it survives losing 2)");
    println!(
        "   the fleet ceremony sealed each partition's keys to its replicas and signed manifest 1"
    );
    println!("   (fleet key + an independent witness); phones pin both public keys");
    println!("   gateway {}", cluster.gateway_url());
    let cfg = Config::load(Some(cluster.client_config()))?;
    let story = Story {
        store: format!("file://{}", work.join("cloud").display()),
        work,
        cfg,
        original,
    };
    // The cluster takes Ctrl-C: each step ends by asking whether one came.
    let old = enable_and_back_up(&story, &chats)?;
    cluster.check_interrupted()?;
    lose_the_phone(&story)?;
    cluster.check_interrupted()?;
    let mut new = Device::open(
        &story.ctx("new-phone").home,
        story.ctx("new-phone").dev_tokens()?,
    )?;
    lose_two_nodes(&story, &mut cluster, &new)?;
    cluster.check_interrupted()?;
    step(8, "Change the password on the new phone");
    new.change_password(PASSWORD, NEW_PASSWORD)?;
    println!("   the old password proved once more, the new one registered over the same key");
    cluster.check_interrupted()?;
    rotate(&story, &mut new)?;
    cluster.check_interrupted()?;
    let err = old
        .restore_latest(&story.work.join("lost-key"), &mut |_| {}, &Cancel::new())
        .err()
        .context("the lost phone's key still opens a backup")?;
    let err = anyhow::Error::from(err);
    ensure!(exit::classify(&err) == Exit::Auth, "unexpected: {err:#}");
    println!("   the lost phone's key opens nothing in the cloud any more (exit status 2)");
    cluster.check_interrupted()?;
    thief(&story)?;
    cluster.check_interrupted()?;
    tampered(&story, &new)?;
    cluster.check_interrupted()?;
    drop(cluster);
    println!(
        "\nDemo complete: every step above was checked. Files are in {}",
        story.work.display()
    );
    if args.workdir.is_none() {
        println!("(a temporary directory, removed now; pass --workdir DIR to keep it)");
    }
    Ok(())
}

/// Steps 3–4: a password-protected device and its first backup.
fn enable_and_back_up(story: &Story, chats: &Path) -> Result<Device> {
    step(3, "Turn on backups, protected by a password");
    let mut device = story.enable("old-phone", ALICE, PASSWORD, ATTEMPTS)?;
    let key = device.home().join("key");
    let mode = std::fs::metadata(&key)?.permissions().mode() & 0o777;
    ensure!(mode == 0o600, "the key file is mode {mode:o}");
    println!(
        "   a random 256-bit key, kept in {} (mode 600); the vault holds it",
        key.display()
    );
    println!("   under an OPAQUE registration: the password never left the phone, and the");
    println!("   gateway relayed only ciphertext");
    step(4, "Back up: one encrypted stream to the cloud folder");
    let report = device.backup(Some(chats), None, &mut |_| {}, &Cancel::new())?;
    let object = only_object(&story.work.join("cloud"))?;
    let stored = std::fs::read(&object)?;
    ensure!(
        !contains(&stored, b"see you at"),
        "the cloud copy contains plaintext"
    );
    println!(
        "   backup {} ({} bytes); the cloud copy holds no readable chat",
        report.backup.name.id, report.backup.size
    );
    Ok(device)
}

/// Steps 5–6: a new phone, one mistyped password, then the right one.
fn lose_the_phone(story: &Story) -> Result<()> {
    step(5, "The phone is lost. On a new phone, a mistyped password");
    match story.restore("new-phone", ALICE, b"correct horse battery stable") {
        Err(DeviceError::Vault(ClientError::WrongPassword { attempts_left })) => println!(
            "   refused: wrong password ({attempts_left} attempts left); every guess counts, right or wrong"
        ),
        Err(e) => return Err(e.into()),
        Ok(_) => bail!("a wrong password restored the backup"),
    }
    ensure!(
        !story.work.join("new-phone/chats").exists(),
        "a refused restore left files behind"
    );
    step(
        6,
        "The right password: the vault releases the key, the phone restores",
    );
    let device = story.restore("new-phone", ALICE, PASSWORD)?;
    story.check_restored("new-phone")?;
    let status = device.status()?;
    let attempts = status.vault.and_then(|v| v.attempts());
    ensure!(
        attempts == Some((ATTEMPTS, ATTEMPTS)),
        "attempts after success: {attempts:?}"
    );
    println!("   the right password gave the attempts back: {ATTEMPTS} of {ATTEMPTS}");
    Ok(())
}

/// Step 7: two of the five nodes die; the three left elect leaders that know every spent
/// attempt, and a recovery still works.
fn lose_two_nodes(story: &Story, cluster: &mut cluster::Cluster, device: &Device) -> Result<()> {
    step(
        7,
        "Two of the five vault nodes die: the vault still answers, and the counter holds",
    );
    match story.restore("fourth-phone", ALICE, b"correct horse battery stapel") {
        Err(DeviceError::Vault(ClientError::WrongPassword { attempts_left })) => {
            ensure!(
                attempts_left == ATTEMPTS - 1,
                "{attempts_left} attempts left"
            );
            println!(
                "   first, a mistyped password on a fourth phone ({attempts_left} attempts left)"
            );
        }
        Err(e) => return Err(e.into()),
        Ok(_) => bail!("a wrong password restored the backup"),
    }
    for i in [1, 2] {
        let pid = cluster.kill_node(i)?;
        println!("   SIGKILL node-{i} (pid {pid}): no shutdown, as when a machine dies");
    }
    let started = std::time::Instant::now();
    let attempts = loop {
        // Until the survivors have elected leaders for the partitions the dead nodes led.
        if let Ok(s) = device.status()
            && let Some(a) = s.vault.and_then(|v| v.attempts())
        {
            break a;
        }
        ensure!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "the three surviving nodes did not answer within 60 s"
        );
        cluster.check_interrupted()?;
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    ensure!(
        attempts == (ATTEMPTS - 1, ATTEMPTS),
        "the surviving nodes say {attempts:?}: a spent guess was forgotten"
    );
    println!(
        "   the 3 survivors answered after {:.1} s: still {} of {ATTEMPTS} attempts left",
        started.elapsed().as_secs_f64(),
        attempts.0
    );
    let phone = story.restore("fourth-phone", ALICE, PASSWORD)?;
    story.check_restored("fourth-phone")?;
    let attempts = phone.status()?.vault.and_then(|v| v.attempts());
    ensure!(
        attempts == Some((ATTEMPTS, ATTEMPTS)),
        "attempts after success: {attempts:?}"
    );
    println!("   the right password, on 3 of 5 nodes: attempts back to {ATTEMPTS} of {ATTEMPTS}");
    Ok(())
}

/// Step 9: a new key; the old backups go only after the new one verified.
fn rotate(story: &Story, device: &mut Device) -> Result<()> {
    step(
        9,
        "Rotate the key: new key, new backup verified in the cloud, old backups deleted",
    );
    let rotated = device.rotate_key(Some(NEW_PASSWORD), None, &mut |_| {}, &Cancel::new())?;
    let left = device.status()?.backups.len();
    ensure!(left == 1, "{left} backups after the rotation");
    println!(
        "   backup {} made and read back under the new key; then deleted under the old key: {}",
        rotated.backup.name.id,
        plural(rotated.deleted.len(), "backup")
    );
    let check = story.restore("third-phone", ALICE, NEW_PASSWORD)?;
    story.check_restored("third-phone")?;
    drop(check);
    println!("   (a third phone with the new password gets the new key)");
    Ok(())
}

/// Step 10: a thief guessing another account's password destroys the record, for good.
fn thief(story: &Story) -> Result<()> {
    step(
        10,
        "A thief guesses bob's password: after 3 wrong guesses the key is destroyed",
    );
    const BOB: &str = "+15550199999";
    let mut bob = story.enable("bobs-phone", BOB, b"bob's secret phrase", 3)?;
    bob.backup(
        Some(&story.work.join("old-phone/chats")),
        None,
        &mut |_| {},
        &Cancel::new(),
    )?;
    for guess in ["password", "123456", "bob1985"] {
        match story.restore("thiefs-phone", BOB, guess.as_bytes()) {
            Err(DeviceError::Vault(ClientError::WrongPassword { attempts_left })) => {
                println!("   guess {guess:?}: wrong ({attempts_left} attempts left)")
            }
            Err(DeviceError::Vault(ClientError::Destroyed)) => {
                println!("   guess {guess:?}: wrong, and that was the last one")
            }
            other => bail!("guess {guess:?} was not refused: {:?}", other.map(|_| ())),
        }
    }
    let err = story
        .restore("thiefs-phone", BOB, b"bob's secret phrase")
        .err()
        .context("a destroyed record released the key")?;
    let err = anyhow::Error::from(err);
    ensure!(
        exit::classify(&err) == Exit::Destroyed,
        "unexpected: {err:#}"
    );
    println!(
        "   even the right password now: {} (exit status 4)",
        exit::render(&err)
    );
    Ok(())
}

/// Step 11: a storage provider that flips one byte is caught, and nothing is restored.
fn tampered(story: &Story, device: &Device) -> Result<()> {
    step(
        11,
        "A storage provider that flips one byte is caught, and nothing is restored",
    );
    let latest = device
        .status()?
        .backups
        .pop()
        .context("no backup in the cloud")?;
    let object = story.work.join("cloud").join(latest.name.file_name());
    tamper(&object)?;
    let dest = story.work.join("tampered");
    let err = device
        .restore_latest(&dest, &mut |_| {}, &Cancel::new())
        .err()
        .context("a tampered backup restored")?;
    ensure!(
        matches!(&err, DeviceError::Backup(e) if !matches!(e, BackupError::NoBackups { .. })),
        "unexpected: {err:?}"
    );
    let err = anyhow::Error::from(err);
    ensure!(
        exit::classify(&err) == Exit::Integrity,
        "unexpected: {err:#}"
    );
    ensure!(!dest.exists(), "a failed restore left {}", dest.display());
    println!("   lockbox: {} (exit status 3)", exit::render(&err));
    Ok(())
}

fn plural(n: usize, what: &str) -> String {
    match n {
        1 => format!("1 {what}"),
        _ => format!("{n} {what}s"),
    }
}

fn only_object(dir: &Path) -> Result<PathBuf> {
    let objects: Vec<_> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    match objects.as_slice() {
        [one] => Ok(one.clone()),
        _ => bail!(
            "expected one object in {}, found {}",
            dir.display(),
            objects.len()
        ),
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
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

/// Plays the storage provider: flips one byte in the middle of `object`.
fn tamper(object: &Path) -> Result<()> {
    let mut bytes = std::fs::read(object)?;
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(object, bytes)?;
    Ok(())
}
