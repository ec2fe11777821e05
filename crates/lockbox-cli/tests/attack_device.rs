//! Attacks on the device commands (issue 13), through the built `lockbox` binary: a tampering
//! storage provider and a vault record replaced by another device during `key rotate` and
//! `disable`, a hostile gateway in front of a real `lockbox dev cluster` (holds that never end,
//! a rolled-back manifest), and a careless filesystem under the home directory.

mod common;
mod device_cluster;

use common::{Env, assert_exit, assert_fails_with, lockbox, run, stderr};
use device_cluster::{Cluster, Phone, chats, phone, store_url, stored_objects, text, world};
use lockbox_crypto::{BackupKey, RecoveryCode};
use lockbox_proto::manifest::HighWater;
use lockbox_proto::manifest::pb::fleet_client::FleetClient;
use lockbox_proto::manifest::pb::fleet_server::{Fleet, FleetServer};
use lockbox_proto::manifest::pb::{ManifestsRequest, ManifestsResponse};
use lockbox_proto::pb::{
    self,
    vault_client::VaultClient as RawClient,
    vault_server::{Vault, VaultServer},
};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tonic::codegen::Bytes;

const PASSWORD: &str = "correct horse";

fn enable_with_password(p: &Phone<'_>, account: &str, store: &str) {
    assert_exit(&p.enable_as(account, store, &[]), 0);
}

impl Phone<'_> {
    /// `enable --account ACCOUNT --store STORE --password --max-attempts 3 EXTRA…`
    fn enable_as(&self, account: &str, store: &str, extra: &[&str]) -> std::process::Output {
        let mut args = vec!["enable", "--account", account, "--store", store];
        args.extend(["--password", "--max-attempts", "3"]);
        args.extend_from_slice(extra);
        self.run(&args, Some(PASSWORD))
    }
}

fn key_in(path: &Path) -> BackupKey {
    let text = std::fs::read_to_string(path).unwrap();
    RecoveryCode::parse(&text).unwrap().into_key()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// A new random key, as `lockbox key new` writes it.
fn new_key(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    assert_exit(&run(lockbox().args(["key", "new", "--out"]).arg(&path)), 0);
    path
}

/// `lockbox key deposit` of the key in `code` for `account`, through the cluster's gateway.
fn deposit(cluster: &Cluster, dir: &Path, account: &str, code: &Path) {
    let out = run(lockbox()
        .arg("--config")
        .arg(&cluster.config)
        .arg("--home")
        .arg(dir.join("tool-home"))
        .args(["key", "deposit", "--account", account, "--attempts", "3"])
        .arg("--key-file")
        .arg(code)
        .env("LOCKBOX_PASSWORD", PASSWORD));
    assert_exit(&out, 0);
}

/// `key rotate` got as far as the vault: the new key is in `key.next` and the vault holds it
/// under the same password (the reply to the re-deposit was lost, or the process was killed
/// before the home switched keys). Running the rotation again must finish it, not stop with
/// "the vault holds another key" forever while every backup is refused as "rotation pending".
#[test]
fn a_rotation_interrupted_after_the_vault_took_the_new_key_finishes_when_run_again() {
    let (dir, cluster) = world(1, 1);
    let d = dir.path();
    let store = store_url(d);
    let alice = phone(&cluster, d, "alice");
    enable_with_password(&alice, "alice", &store);
    let old_chats = chats(d, "before the rotation");
    alice.backup(&old_chats);

    let next = new_key(d, "next.code");
    let pending = alice.home.join("key.next");
    std::fs::copy(&next, &pending).unwrap();
    std::fs::set_permissions(&pending, std::fs::Permissions::from_mode(0o600)).unwrap();
    deposit(&cluster, d, "alice", &next);

    let rotate = alice.run(&["key", "rotate"], Some(PASSWORD));
    assert_exit(&rotate, 0);
    assert!(
        stderr(&rotate).contains("1 backups under the old key deleted"),
        "{}",
        stderr(&rotate)
    );
    assert!(key_in(&alice.home.join("key")) == key_in(&next));
    assert!(!pending.exists());
    assert_eq!(stored_objects(d), 1);
    let new = phone(&cluster, d, "new-phone");
    let dest = d.join("restored");
    let restore = new.run(
        &[
            "restore",
            dest.to_str().unwrap(),
            "--account",
            "alice",
            "--store",
            &store,
            "--password",
        ],
        Some(PASSWORD),
    );
    assert_exit(&restore, 0);
    assert_eq!(
        std::fs::read(dest.join("msgs.db")).unwrap(),
        b"before the rotation"
    );
}

/// Another phone enabled the same account with the same password: the vault now holds its key.
/// The old phone's `key rotate` and `disable --delete-backups` prove the password, find
/// another key and must stop (exit 3) before they delete anything: not its backups, and not
/// the vault record the other phone relies on.
#[test]
fn a_device_whose_vault_record_was_replaced_deletes_nothing() {
    let (dir, cluster) = world(1, 1);
    let d = dir.path();
    let store = store_url(d);
    let old = phone(&cluster, d, "old-phone");
    enable_with_password(&old, "alice", &store);
    let old_chats = chats(d, "old phone's chats");
    old.backup(&old_chats);
    // And a snapshot: the old key's repository now holds the prefix.
    assert_exit(&old.run(&["backup", old_chats.to_str().unwrap()], None), 0);
    let other = phone(&cluster, d, "other-phone");
    // Enabling over an active record is refused unless asked for.
    let refused = other.enable_as("alice", &store, &[]);
    assert_fails_with(&refused, 1, "already holds a key for alice");
    assert_exit(&other.enable_as("alice", &store, &["--replace"]), 0);
    let old_key = std::fs::read(old.home.join("key")).unwrap();

    let rotate = old.run(&["key", "rotate"], Some(PASSWORD));
    assert_fails_with(&rotate, 3, "the vault holds another key");
    assert_eq!(stored_objects(d), 2, "the stream and the repository config");
    assert!(!old.home.join("key.next").exists());
    assert_eq!(std::fs::read(old.home.join("key")).unwrap(), old_key);

    let disable = old.run(&["disable", "--delete-backups"], Some(PASSWORD));
    assert_fails_with(&disable, 3, "the vault holds another key");
    assert_eq!(stored_objects(d), 2, "the stream and the repository config");
    assert_eq!(std::fs::read(old.home.join("key")).unwrap(), old_key);
    let status = other.status();
    assert_eq!(status["vault"]["state"], "active", "{status}");
    assert_eq!(status["vault"]["attempts_left"], 3, "{status}");
    // One repository per prefix: the other key cannot make snapshots beside the old key's
    // repository, says so before uploading, and can still make single streams.
    let theirs = chats(d, "other phone");
    let shared = other.run(&["backup", theirs.to_str().unwrap()], None);
    assert_fails_with(&shared, 2, "another key's repository");
    other.backup(&theirs);
    assert_eq!(stored_objects(d), 3);
}

/// The storage fails while `disable --delete-backups` runs (a provider outage, or one that
/// refuses deletes). The vault record must still be there afterwards: destroyed first, it left
/// a home that no rerun could finish (the record it proves the password against is gone).
#[test]
fn a_store_that_fails_during_disable_leaves_the_record_and_a_rerun_finishes() {
    let (dir, cluster) = world(1, 1);
    let d = dir.path();
    let alice = phone(&cluster, d, "alice");
    enable_with_password(&alice, "alice", &store_url(d));
    assert_exit(
        &alice.run(&["backup", chats(d, "alice").to_str().unwrap()], None),
        0,
    );
    let (cloud, away) = (d.join("cloud"), d.join("cloud-away"));
    std::fs::rename(&cloud, &away).unwrap();
    std::fs::write(&cloud, b"not a directory").unwrap();

    let failed = alice.run(&["disable", "--delete-backups"], Some(PASSWORD));
    assert_exit(&failed, 1);
    std::fs::remove_file(&cloud).unwrap();
    std::fs::rename(&away, &cloud).unwrap();
    let status = alice.status();
    assert_eq!(status["vault"]["state"], "active", "{status}");
    assert_exit(
        &alice.run(&["disable", "--delete-backups"], Some(PASSWORD)),
        0,
    );
    assert_eq!(stored_objects(d), 0);
    assert!(!alice.home.join("key").exists());
}

/// A new phone's `restore --password` spends an attempt only once there is something to
/// restore and room for it: an empty store, or a destination that already holds files, is
/// refused before the password reaches the vault, even a wrong one.
#[test]
fn a_new_phone_spends_no_attempt_when_nothing_could_be_restored() {
    let (dir, cluster) = world(1, 1);
    let d = dir.path();
    let store = store_url(d);
    let alice = phone(&cluster, d, "alice");
    enable_with_password(&alice, "alice", &store);
    let new = phone(&cluster, d, "new-phone");
    let restore = |dest: &Path| {
        new.run(
            &[
                "restore",
                dest.to_str().unwrap(),
                "--account",
                "alice",
                "--store",
                &store,
                "--password",
            ],
            Some("wrong horse"),
        )
    };
    std::fs::create_dir_all(d.join("cloud")).unwrap();
    assert_fails_with(&restore(&d.join("dest")), 1, "no backups");
    assert_exit(
        &alice.run(&["backup", chats(d, "alice").to_str().unwrap()], None),
        0,
    );
    let occupied = d.join("occupied");
    std::fs::create_dir_all(&occupied).unwrap();
    std::fs::write(occupied.join("mine.txt"), b"keep me").unwrap();
    assert_exit(&restore(&occupied), 1);
    assert_eq!(
        std::fs::read(occupied.join("mine.txt")).unwrap(),
        b"keep me"
    );
    assert_eq!(alice.status()["vault"]["attempts_left"], 3);
    assert!(!new.home.join("device.toml").exists());
}

fn enable_with_code(env: &Env, home: &Path) -> String {
    let out = run(lockbox()
        .arg("--home")
        .arg(home)
        .args(["enable", "--account", "carol", "--store", &env.store()])
        .arg("--recovery-code"));
    assert_exit(&out, 0);
    text(&out)
}

fn backup_in(home: &Path, dir: &Path) {
    let out = run(lockbox().arg("--home").arg(home).arg("backup").arg(dir));
    assert_exit(&out, 0);
}

fn backups_listed(home: &Path) -> usize {
    let out = run(lockbox().arg("--home").arg(home).args(["status", "--json"]));
    assert_exit(&out, 0);
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    status["backups"].as_array().unwrap().len() + status["snapshots"].as_array().unwrap().len()
}

/// A careless filesystem tore `device.toml` (or a newer lockbox wrote a field this one does
/// not know). `enable` must refuse, naming the file, and never replace the key it cannot
/// account for: it may be the only way into the backups.
#[test]
fn enable_never_replaces_the_key_of_a_home_it_cannot_read() {
    let env = Env::new();
    let home = env.p("home");
    enable_with_code(&env, &home);
    backup_in(&home, &chats(env.dir.path(), "carol's chats"));
    let key = std::fs::read(home.join("key")).unwrap();
    let settings = home.join("device.toml");
    let torn = std::fs::read(&settings).unwrap();
    std::fs::write(&settings, &torn[..torn.len() / 2]).unwrap();

    let again = run(lockbox()
        .arg("--home")
        .arg(&home)
        .args(["enable", "--account", "carol", "--store", &env.store()])
        .arg("--recovery-code"));
    assert_fails_with(&again, 1, "device.toml");
    assert_eq!(std::fs::read(home.join("key")).unwrap(), key);
}

/// A restore (or an enable) stopped after writing the key and before `device.toml`. Running
/// `enable` on that home keeps the key it finds, so the backups made under it still open.
#[test]
fn enable_on_a_home_that_holds_only_a_key_keeps_that_key() {
    let env = Env::new();
    let home = env.p("home");
    enable_with_code(&env, &home);
    backup_in(&home, &chats(env.dir.path(), "carol's chats"));
    let key = key_in(&home.join("key"));
    std::fs::remove_file(home.join("device.toml")).unwrap();

    let code = enable_with_code(&env, &home);
    assert!(RecoveryCode::parse(&code).unwrap().into_key() == key);
    assert!(key_in(&home.join("key")) == key);
    assert_eq!(backups_listed(&home), 1);
}

/// A backup damaged in the store is exit 3 for the device's own restore and for a new phone's,
/// and nothing appears at the destination.
#[test]
fn a_tampered_backup_is_exit_3_and_restores_nothing() {
    let env = Env::new();
    let home = env.p("home");
    let code = env.p("code.txt");
    std::fs::write(&code, enable_with_code(&env, &home)).unwrap();
    backup_in(&home, &chats(env.dir.path(), "carol's chats"));
    let object = std::fs::read_dir(env.p("cloud"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.is_file())
        .unwrap();
    let mut bytes = std::fs::read(&object).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 1;
    std::fs::write(&object, bytes).unwrap();

    let dest = env.p("restored");
    let here = run(lockbox().arg("--home").arg(&home).arg("restore").arg(&dest));
    assert_exit(&here, 3);
    let new_phone = run(lockbox()
        .arg("--home")
        .arg(env.p("new-home"))
        .arg("restore")
        .arg(&dest)
        .args(["--account", "carol", "--store", &env.store()])
        .arg("--recovery-code-file")
        .arg(&code));
    assert_exit(&new_phone, 3);
    assert!(!dest.exists());
    assert!(!env.p("new-home/device.toml").exists());
}

/// The home and its key files are private to the user, a key rotation's pending key too, and
/// temporary names planted as symlinks (by anything else that can write there) do not send
/// the key anywhere else.
#[test]
fn the_home_and_its_keys_are_private_and_symlinks_do_not_redirect_them() {
    let env = Env::new();
    let home = env.p("home");
    enable_with_code(&env, &home);
    assert_eq!(mode(&home), 0o700);
    assert_eq!(mode(&home.join("key")), 0o600);

    let planted = env.p("planted");
    std::fs::create_dir_all(&planted).unwrap();
    let other = env.p("other-home");
    std::fs::create_dir_all(&other).unwrap();
    for name in [".key.tmp", ".key.next.tmp", ".device.toml.tmp"] {
        std::os::unix::fs::symlink(planted.join(name), other.join(name)).unwrap();
        std::os::unix::fs::symlink(planted.join(name), home.join(name)).unwrap();
    }
    enable_with_code(&env, &other);
    assert_eq!(mode(&other.join("key")), 0o600);

    // A rotation whose backup fails leaves the new key pending, 0600.
    let out = run(lockbox()
        .arg("--home")
        .arg(&home)
        .args(["key", "rotate"])
        .arg(env.p("no-such-dir")));
    assert_exit(&out, 1);
    assert_eq!(mode(&home.join("key.next")), 0o600);
    let written: Vec<_> = std::fs::read_dir(&planted).unwrap().collect();
    assert!(written.is_empty(), "written through a symlink: {written:?}");
}

/// A gateway the attacker runs in front of the cluster's: it serves the manifests it chooses
/// (or relays the real ones), and relays vault calls or holds each one back with "retry now".
struct Hostile {
    upstream: String,
    manifests: Mutex<Option<Vec<Bytes>>>,
    retry_now: AtomicBool,
    held: AtomicUsize,
}

/// Holds after which the hostile gateway gives up and refuses outright, so that a device that
/// never stops asking still ends.
const HOLD_CAP: usize = 100;

struct HostileService(Arc<Hostile>);

#[tonic::async_trait]
impl Fleet for HostileService {
    async fn manifests(
        &self,
        request: tonic::Request<ManifestsRequest>,
    ) -> Result<tonic::Response<ManifestsResponse>, tonic::Status> {
        if let Some(manifests) = self.0.manifests.lock().unwrap().clone() {
            return Ok(tonic::Response::new(ManifestsResponse { manifests }));
        }
        let mut real = FleetClient::connect(self.0.upstream.clone())
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        real.manifests(request.into_inner()).await
    }
}

#[tonic::async_trait]
impl Vault for HostileService {
    async fn call(
        &self,
        request: tonic::Request<pb::SealedRequest>,
    ) -> Result<tonic::Response<pb::SealedResponse>, tonic::Status> {
        if self.0.retry_now.load(Ordering::SeqCst) {
            if self.0.held.fetch_add(1, Ordering::SeqCst) >= HOLD_CAP {
                return Err(tonic::Status::permission_denied(
                    "the hostile gateway gave up",
                ));
            }
            let mut hold = tonic::Status::resource_exhausted("held back by the hostile gateway");
            hold.metadata_mut()
                .insert("retry-after-ms", "0".parse().unwrap());
            return Err(hold);
        }
        let (metadata, _, sealed) = request.into_parts();
        let mut relayed = tonic::Request::new(sealed);
        if let Some(auth) = metadata.get("authorization") {
            relayed.metadata_mut().insert("authorization", auth.clone());
        }
        let mut real = RawClient::connect(self.0.upstream.clone())
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        real.call(relayed).await
    }

    async fn info(
        &self,
        _: tonic::Request<pb::InfoRequest>,
    ) -> Result<tonic::Response<pb::InfoResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("not here"))
    }
}

/// The hostile gateway on loopback, and a client config that points a device at it (the same
/// pinned keys as the cluster's).
fn hostile_gateway(
    rt: &tokio::runtime::Runtime,
    cluster: &Cluster,
    dir: &Path,
) -> (Arc<Hostile>, PathBuf) {
    let config = std::fs::read_to_string(&cluster.config).unwrap();
    let upstream = toml_value(&config, "gateway");
    let hostile = Arc::new(Hostile {
        upstream,
        manifests: Mutex::new(None),
        retry_now: AtomicBool::new(false),
        held: AtomicUsize::new(0),
    });
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    rt.spawn(
        tonic::transport::Server::builder()
            .add_service(FleetServer::new(HostileService(Arc::clone(&hostile))))
            .add_service(VaultServer::new(HostileService(Arc::clone(&hostile))))
            .serve_with_incoming(incoming),
    );
    let path = dir.join("hostile.toml");
    let rewritten: String = config
        .lines()
        .map(|l| match l.starts_with("gateway ") {
            true => format!("gateway = \"{url}\"\n"),
            false => format!("{l}\n"),
        })
        .collect();
    std::fs::write(&path, rewritten).unwrap();
    (hostile, path)
}

/// The string value of `key = "…"` in a flat TOML text.
fn toml_value(text: &str, key: &str) -> String {
    let line = text
        .lines()
        .find(|l| l.starts_with(&format!("{key} ")))
        .unwrap_or_else(|| panic!("no {key} in {text}"));
    line.split('"').nth(1).unwrap().to_owned()
}

fn through(config: &Path, home: &Path, args: &[&str]) -> std::process::Output {
    run(lockbox()
        .arg("--config")
        .arg(config)
        .arg("--home")
        .arg(home)
        .args(args)
        .env("LOCKBOX_PASSWORD", PASSWORD))
}

/// A gateway that answers every vault call with "rate limited, retry after 0 ms" would keep a
/// patient device asking forever. The device must give up after a bounded number of holds,
/// saying it was held back, rather than wait until the gateway itself relents.
#[test]
fn a_gateway_that_always_says_retry_now_cannot_keep_a_device_asking() {
    let (dir, cluster) = world(1, 1);
    let d = dir.path();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (hostile, config) = hostile_gateway(&rt, &cluster, d);
    let home = d.join("phone");
    let store = store_url(d);
    let enable = [
        "enable",
        "--account",
        "alice",
        "--store",
        &store,
        "--password",
    ];
    assert_exit(&through(&config, &home, &enable), 0);

    hostile.retry_now.store(true, Ordering::SeqCst);
    // A call that spends no attempt, and a login start (which the client leaves to the device).
    for args in [&["status"][..], &["disable", "--delete-backups"][..]] {
        hostile.held.store(0, Ordering::SeqCst);
        let out = through(&config, &home, args);
        let held = hostile.held.load(Ordering::SeqCst);
        assert!(held < HOLD_CAP, "{args:?}: still asking after {held} holds");
        assert_fails_with(&out, 1, "held back by the hostile gateway");
    }
    assert!(
        home.join("key").exists(),
        "a held-back disable wiped the home"
    );
}

/// The device has accepted manifest 2; the gateway then serves manifest 1 only (a rollback to
/// an older, validly signed partition map). The device must refuse it with exit 3 and keep its
/// high-water mark.
#[test]
fn a_rolled_back_manifest_is_refused_and_the_mark_stays() {
    let (dir, cluster) = world(1, 1);
    let d = dir.path();
    let fleet_dir = d.join("cluster/fleet");
    let first = std::fs::read(fleet_dir.join("manifests/00000001.manifest")).unwrap();
    let publish = run(lockbox()
        .args(["fleet", "publish", "--dir"])
        .arg(&fleet_dir));
    assert_exit(&publish, 0);
    let pending = PathBuf::from(text(&publish).trim());
    let second_path = d.join("00000002.manifest");
    let config_text = std::fs::read_to_string(&cluster.config).unwrap();
    let witness = run(lockbox()
        .args(["fleet", "witness", "--witness-dir"])
        .arg(fleet_dir.join("witness"))
        .args([
            "--fleet-public-key",
            &toml_value(&config_text, "fleet_public_key"),
        ])
        .arg("--in")
        .arg(&pending)
        .arg("--out")
        .arg(&second_path));
    assert_exit(&witness, 0);
    let second = std::fs::read(&second_path).unwrap();

    let rt = tokio::runtime::Runtime::new().unwrap();
    let (hostile, config) = hostile_gateway(&rt, &cluster, d);
    *hostile.manifests.lock().unwrap() = Some(vec![first.clone().into(), second.into()]);
    let home = d.join("phone");
    let enable = [
        "enable",
        "--account",
        "alice",
        "--store",
        &store_url(d),
        "--password",
    ];
    assert_exit(&through(&config, &home, &enable), 0);
    let mark = std::fs::read(home.join("manifest.hw")).unwrap();
    assert_eq!(HighWater::from_bytes(&mark).unwrap().sequence, 2);

    *hostile.manifests.lock().unwrap() = Some(vec![first.into()]);
    for args in [&["status"][..], &["key", "rotate", d.to_str().unwrap()][..]] {
        let out = through(&config, &home, args);
        assert_exit(&out, 3);
        assert!(
            stderr(&out).contains("fleet manifest refused"),
            "{}",
            stderr(&out)
        );
        assert_eq!(std::fs::read(home.join("manifest.hw")).unwrap(), mark);
    }
    assert!(!home.join("key.next").exists());
}
