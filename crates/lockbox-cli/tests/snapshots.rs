//! Incremental snapshots through the real binary on an enabled device: a daily backup stores
//! little, the catalog lists and restores, and a storage that rolls back, drops or alters
//! anything is refused with exit 3 and leaves no restore behind.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::{Env, assert_exit, assert_fails_with, lockbox, partial_restores, run, stderr};

struct Phone {
    env: Env,
    home: PathBuf,
    chats: PathBuf,
}

fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

impl Phone {
    fn new() -> Self {
        let env = Env::new();
        let home = env.p("home");
        let chats = env.p("chats");
        fs::create_dir_all(chats.join("Media")).unwrap();
        let mut db = Vec::new();
        for i in 0..60_000 {
            db.extend_from_slice(format!("{i:08}|hello from chat {}\n", i % 97).as_bytes());
        }
        fs::write(chats.join("msgstore.db"), db).unwrap();
        for i in 0..3 {
            fs::write(
                chats.join(format!("Media/IMG-{i}.jpg")),
                noise(i + 1, 1 << 20),
            )
            .unwrap();
        }
        let out = run(lockbox()
            .arg("--home")
            .arg(&home)
            .args(["enable", "--account", "dana", "--store", &env.store()])
            .arg("--recovery-code"));
        assert_exit(&out, 0);
        fs::write(env.p("code.txt"), &out.stdout).unwrap();
        Phone { env, home, chats }
    }

    fn lockbox(&self) -> std::process::Command {
        let mut c = lockbox();
        c.arg("--home").arg(&self.home);
        c
    }

    fn json(&self, args: &[&str]) -> serde_json::Value {
        let out = run(self.lockbox().args(args));
        assert_exit(&out, 0);
        serde_json::from_slice(&out.stdout).unwrap()
    }

    fn backup(&self) -> serde_json::Value {
        let mut c = self.lockbox();
        c.args(["backup", "--incremental", "--json"])
            .arg(&self.chats);
        let out = run(&mut c);
        assert_exit(&out, 0);
        serde_json::from_slice(&out.stdout).unwrap()
    }

    fn stream_backup(&self) {
        let out = run(self.lockbox().args(["backup", "--stream"]).arg(&self.chats));
        assert_exit(&out, 0);
    }

    fn restore(&self, dest: &Path, id: &str) -> std::process::Output {
        run(self
            .lockbox()
            .arg("restore")
            .arg(dest)
            .args(["--snapshot", id]))
    }

    fn cloud(&self, under: &str) -> Vec<PathBuf> {
        let mut found: Vec<PathBuf> = walk(&self.env.p("cloud"))
            .into_iter()
            .filter(|p| {
                p.strip_prefix(self.env.p("cloud"))
                    .unwrap()
                    .starts_with(under)
            })
            .collect();
        found.sort();
        found
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn same_tree(a: &Path, b: &Path) {
    let (mut x, mut y) = (walk(a), walk(b));
    x.sort();
    y.sort();
    assert_eq!(x.len(), y.len());
    for (p, q) in x.iter().zip(&y) {
        assert_eq!(p.strip_prefix(a).unwrap(), q.strip_prefix(b).unwrap());
        assert!(
            fs::read(p).unwrap() == fs::read(q).unwrap(),
            "{p:?} differs"
        );
    }
}

#[test]
fn a_daily_incremental_backup_stores_what_changed_and_restores() {
    let phone = Phone::new();
    let first = phone.backup();
    assert_eq!(first["seq"], 1);
    let total = first["bytes"].as_u64().unwrap();
    assert!(total > 4_000_000, "{first}");

    // A day: messages appended, one new photo.
    let mut db = fs::read(phone.chats.join("msgstore.db")).unwrap();
    db.extend_from_slice(&b"00060001|a new message\n".repeat(2_000));
    fs::write(phone.chats.join("msgstore.db"), db).unwrap();
    fs::write(phone.chats.join("Media/IMG-new.jpg"), noise(99, 2 << 20)).unwrap();
    let second = phone.backup();
    assert_eq!(second["seq"], 2);
    let uploaded = second["uploaded_bytes"].as_u64().unwrap();
    let changed = 2_000 * 23 + (2 << 20);
    assert!(
        uploaded < changed * 12 / 10 + (2 << 20),
        "uploaded {uploaded} for {changed} changed: {second}"
    );

    let listed = phone.json(&["list", "--snapshots", "--json"]);
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[1]["id"], second["snapshot"]);

    let dest = phone.env.p("restored");
    assert_exit(&phone.restore(&dest, "latest"), 0);
    same_tree(&dest, &phone.chats);
    let old = phone.env.p("old");
    let first_id = first["snapshot"].as_str().unwrap();
    assert_exit(&phone.restore(&old, &first_id[..12]), 0);
    assert_eq!(walk(&old).len(), 4);

    let check = phone.json(&["check", "--read-data", "--json"]);
    assert_eq!(check["snapshots"], 2);
    assert!(check["chunks_read"].as_u64().unwrap() > 0, "{check}");
}

#[test]
fn a_storage_that_hides_the_newest_snapshot_is_caught() {
    let phone = Phone::new();
    phone.backup();
    phone.backup();
    let entries = phone.cloud("catalog");
    assert_eq!(entries.len(), 2);
    fs::remove_file(&entries[1]).unwrap();

    let out = run(phone.lockbox().args(["list", "--snapshots"]));
    assert_fails_with(&out, 3, "rolled back");
    let dest = phone.env.p("dest");
    assert_fails_with(&phone.restore(&dest, "latest"), 3, "rolled back");
    assert!(!dest.exists());
    let mut c = phone.lockbox();
    c.args(["backup", "--incremental"]).arg(&phone.chats);
    assert_fails_with(&run(&mut c), 3, "rolled back");
}

#[test]
fn altered_or_missing_packs_fail_with_exit_3_and_leave_nothing() {
    let phone = Phone::new();
    phone.backup();
    let packs = phone.cloud("packs");
    assert!(!packs.is_empty());
    let mut bytes = fs::read(&packs[0]).unwrap();
    bytes[200] ^= 1;
    fs::write(&packs[0], &bytes).unwrap();

    assert_exit(&run(phone.lockbox().args(["check"])), 0);
    assert_fails_with(
        &run(phone.lockbox().args(["check", "--read-data"])),
        3,
        "does not authenticate",
    );
    let dest = phone.env.p("dest");
    assert_fails_with(&phone.restore(&dest, "latest"), 3, "does not authenticate");
    assert!(!dest.exists());
    assert!(partial_restores(phone.env.dir.path()).is_empty());

    fs::remove_file(&packs[0]).unwrap();
    assert_fails_with(&run(phone.lockbox().args(["check"])), 3, "missing");
}

#[test]
fn incremental_needs_an_enabled_device() {
    let env = Env::new();
    fs::create_dir(env.p("d")).unwrap();
    let out = run(lockbox()
        .arg("--home")
        .arg(env.p("nohome"))
        .args(["backup", "--incremental"])
        .arg(env.p("d")));
    assert_fails_with(&out, 1, "needs an enabled device");
}

#[test]
fn a_repository_deleted_by_the_storage_is_not_started_afresh() {
    let phone = Phone::new();
    phone.backup();
    let config = phone.env.p("cloud").join("config");
    fs::remove_file(&config).unwrap();

    let mut c = phone.lockbox();
    c.args(["backup", "--incremental"]).arg(&phone.chats);
    assert_fails_with(&run(&mut c), 3, "is gone");
    assert!(
        !config.exists(),
        "a new repository took the old one's place"
    );
    let out = run(phone.lockbox().args(["list", "--snapshots"]));
    assert_fails_with(&out, 3, "is gone");
}

#[test]
fn a_snapshot_stream_posing_as_a_backup_is_never_counted_by_prune() {
    let phone = Phone::new();
    phone.stream_backup();
    let real: Vec<PathBuf> = phone
        .cloud("")
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "lbx"))
        .collect();
    assert_eq!(real.len(), 1);
    let snap = phone.backup();

    // The storage copies the snapshot's stream in under the name its header would give a
    // backup: newer than the real one, so a prune that believed it would delete the real one.
    let id = snap["snapshot"].as_str().unwrap();
    let created = snap["created_unix_ms"].as_u64().unwrap();
    let stream = phone.env.p("cloud").join("snapshots").join(id);
    let posing = phone
        .env
        .p("cloud")
        .join(format!("lockbox-{created:013}-{}.lbx", &id[..16]));
    fs::copy(&stream, &posing).unwrap();

    let out = run(phone
        .lockbox()
        .args([
            "prune",
            "--keep",
            "1",
            "--from",
            &phone.env.store(),
            "--key-file",
        ])
        .arg(phone.home.join("key")));
    assert_exit(&out, 0);
    assert!(real[0].exists(), "prune deleted the real backup");
    let dest = phone.env.p("dest");
    let out = run(phone.lockbox().arg("restore").arg(&dest));
    assert_exit(&out, 0);
    same_tree(&dest, &phone.chats);
}

#[test]
fn a_key_rotation_takes_the_old_snapshots_with_the_old_key_and_backups_go_on() {
    let phone = Phone::new();
    phone.backup();
    phone.backup();
    let out = run(phone.lockbox().args(["key", "rotate"]).arg(&phone.chats));
    assert_exit(&out, 0);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("incremental snapshots"), "{said}");
    for dir in ["config", "catalog", "snapshots", "index", "packs"] {
        assert!(phone.cloud(dir).is_empty(), "{dir} left behind: {said}");
    }

    // A new repository under the new key, from sequence 1.
    let first = phone.backup();
    assert_eq!(first["seq"], 1, "{first}");
    let dest = phone.env.p("dest");
    assert_exit(&phone.restore(&dest, "latest"), 0);
    same_tree(&dest, &phone.chats);

    let out = run(phone.lockbox().args(["disable", "--delete-backups"]));
    assert_exit(&out, 0);
    for dir in ["config", "catalog", "snapshots", "index", "packs"] {
        assert!(
            phone.cloud(dir).is_empty(),
            "{dir} left behind after disable"
        );
    }
}

#[test]
fn prune_keeps_the_newest_snapshots_and_frees_the_rest() {
    let phone = Phone::new();
    phone.backup();
    // Each day's photo replaces the last: older photos live only in older snapshots.
    for day in 0..2u64 {
        for f in fs::read_dir(phone.chats.join("Media")).unwrap() {
            fs::remove_file(f.unwrap().path()).unwrap();
        }
        fs::write(
            phone.chats.join(format!("Media/IMG-day{day}.jpg")),
            noise(50 + 2 * day, 1 << 20),
        )
        .unwrap();
        phone.backup();
    }
    let packs = |p: &Phone| -> u64 {
        p.cloud("packs")
            .iter()
            .map(|f| fs::metadata(f).unwrap().len())
            .sum()
    };
    let before = packs(&phone);

    let report = phone.json(&["prune", "--snapshots", "--keep", "1", "--json"]);
    assert_eq!(report["forgotten"], 2, "{report}");
    assert_eq!(report["kept"], 1, "{report}");
    let after = packs(&phone);
    // Three 1 MiB photos of the first day and one of the second are gone.
    assert!(
        after + (3 << 20) < before,
        "packs {before} -> {after}: {report}"
    );
    let listed = phone.json(&["list", "--snapshots", "--json"]);
    assert_eq!(listed.as_array().unwrap().len(), 1);
    let check = phone.json(&["check", "--read-data", "--json"]);
    assert_eq!(check["snapshots"], 1);
    let dest = phone.env.p("dest");
    assert_exit(&phone.restore(&dest, "latest"), 0);
    same_tree(&dest, &phone.chats);

    // And as part of a backup.
    let mut c = phone.lockbox();
    c.args(["backup", "--incremental", "--keep", "1", "--json"])
        .arg(&phone.chats);
    let out = run(&mut c);
    assert_exit(&out, 0);
    let backup: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(backup["pruned"]["forgotten"], 1, "{backup}");
    assert_fails_with(
        &run(phone
            .lockbox()
            .args(["prune", "--snapshots", "--keep", "0"])),
        1,
        "at least one",
    );
}

#[test]
fn keep_daily_and_weekly_keep_the_newest_of_today() {
    let phone = Phone::new();
    for _ in 0..3 {
        phone.backup();
    }
    // Made today, all three: one day and one week hold them, and each keeps its newest.
    let mut c = phone.lockbox();
    c.args(["backup", "--keep-weekly", "1", "--json"])
        .arg(&phone.chats);
    let out = run(&mut c);
    assert_exit(&out, 0);
    let backup: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(backup["pruned"]["forgotten"], 3, "{backup}");
    let newest = phone.backup()["snapshot"].clone();
    let report = phone.json(&["prune", "--snapshots", "--keep-daily", "1", "--json"]);
    assert_eq!(
        (&report["forgotten"], &report["kept"]),
        (&1.into(), &1.into()),
        "{report}"
    );
    let listed = phone.json(&["list", "--snapshots", "--json"]);
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["id"], newest, "the newest stays");
    let dest = phone.env.p("dest");
    assert_exit(&phone.restore(&dest, "latest"), 0);
    same_tree(&dest, &phone.chats);

    for (args, says) in [
        (&["prune", "--snapshots"][..], "say what to keep"),
        (
            &["prune", "--snapshots", "--keep-daily", "0"][..],
            "at least one",
        ),
        (&["prune", "--keep-daily", "2"][..], "--snapshots"),
        (
            &["backup", "--stream", "--keep-weekly", "2"][..],
            "--stream",
        ),
    ] {
        assert_fails_with(&run(phone.lockbox().args(args)), 1, says);
    }
}

#[test]
fn restore_path_brings_back_only_that_part() {
    let phone = Phone::new();
    phone.backup();
    let dest = phone.env.p("media");
    let out = run(phone.lockbox().arg("restore").arg(&dest).args([
        "--snapshot",
        "latest",
        "--path",
        "Media/",
    ]));
    assert_exit(&out, 0);
    assert!(!dest.join("msgstore.db").exists());
    same_tree(&dest.join("Media"), &phone.chats.join("Media"));

    let none = phone.env.p("none");
    let out = run(phone.lockbox().arg("restore").arg(&none).args([
        "--snapshot",
        "latest",
        "--path",
        "Media/nothing.jpg",
    ]));
    assert_fails_with(&out, 1, "holds no Media/nothing.jpg");
    assert!(!none.exists());
    let out = run(phone.lockbox().arg("restore").arg(&none).args([
        "--snapshot",
        "latest",
        "--path",
        "../etc",
    ]));
    assert_fails_with(&out, 1, "inside the snapshot");
}

/// A snapshot is what `backup` makes on an enabled device; `list`, `status` and both kinds of
/// `restore` (the device's own, and one with the store and the recovery code) find it, and
/// `backup --stream` still makes a single stream, which a later snapshot outdates.
#[test]
fn backup_makes_a_snapshot_by_default_and_every_restore_finds_it() {
    let phone = Phone::new();
    let out = run(phone.lockbox().arg("backup").arg(&phone.chats));
    assert_exit(&out, 0);
    assert_eq!(phone.cloud("snapshots").len(), 1, "no snapshot was made");
    assert!(
        phone
            .cloud("")
            .iter()
            .all(|p| p.extension().is_none_or(|e| e != "lbx"))
    );
    let listed = phone.json(&["list", "--json"]);
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    let status = phone.json(&["status", "--json"]);
    assert_eq!(status["snapshots"].as_array().unwrap().len(), 1, "{status}");
    assert_eq!(status["backups"].as_array().unwrap().len(), 0, "{status}");

    let here = phone.env.p("here");
    let out = run(phone.lockbox().arg("restore").arg(&here));
    assert_exit(&out, 0);
    assert!(
        stderr(&out).contains("entry 1 of the catalog"),
        "{}",
        stderr(&out)
    );
    same_tree(&phone.chats, &here);

    // A stream made later is the newest; a snapshot after it outdates it again.
    fs::write(phone.chats.join("msgstore.db"), b"stream day").unwrap();
    phone.stream_backup();
    let direct = |name: &str| {
        let dest = phone.env.p(name);
        let out = run(lockbox()
            .arg("restore")
            .arg(&dest)
            .args(["--store", &phone.env.store(), "--key-file"])
            .arg(phone.env.p("code.txt")));
        assert_exit(&out, 0);
        (dest, stderr(&out))
    };
    let (dest, said) = direct("direct-1");
    assert!(said.contains("restored backup"), "{said}");
    assert_eq!(fs::read(dest.join("msgstore.db")).unwrap(), b"stream day");
    fs::write(phone.chats.join("msgstore.db"), b"snapshot day").unwrap();
    phone.backup();
    let (dest, said) = direct("direct-2");
    assert!(said.contains("entry 2 of the catalog"), "{said}");
    same_tree(&phone.chats, &dest);
}

/// The review's data loss: a snapshot that left out a file that kept changing must not make
/// `--keep` forget the older snapshots, which still hold that file. A writer changes the
/// database in place without a pause while the backup runs, so every read of it sees a change.
#[test]
fn an_incomplete_snapshot_never_prunes_the_ones_that_hold_what_it_lacks() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let phone = Phone::new();
    phone.backup();
    let db = phone.chats.join("msgstore.db");
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, db) = (stop.clone(), db.clone());
        // Small writes in place, without a pause: every read of the file overlaps one.
        std::thread::spawn(move || {
            use std::os::unix::fs::FileExt;
            let file = fs::OpenOptions::new().write(true).open(&db).unwrap();
            let len = file.metadata().unwrap().len();
            let (block, mut n) = (noise(7, 4096), 0u64);
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                file.write_all_at(&block, (n * 4096) % (len - 4096))
                    .unwrap();
            }
        })
    };
    let mut incomplete = None;
    for _ in 0..20 {
        let before = phone.json(&["list", "--json"]).as_array().unwrap().len();
        let mut c = phone.lockbox();
        c.args(["backup", "--keep", "1"]).arg(&phone.chats);
        let out = run(&mut c);
        if stderr(&out).contains("incomplete") {
            incomplete = Some((out, before));
            break;
        }
        assert_exit(&out, 0);
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    let (out, before) = incomplete.expect("no backup came out incomplete under the writer");
    assert_exit(&out, 1);
    assert!(stderr(&out).contains("not pruning"), "{}", stderr(&out));
    let after = phone.json(&["list", "--json"]).as_array().unwrap().len();
    assert_eq!(after, before + 1, "an older snapshot was forgotten");
}

/// From the second review of the default: what the storage plants or alters around a
/// snapshot gets the answer a user needs, not a silent fall-back or a misleading one.
#[test]
fn planted_streams_wrong_codes_and_altered_configs_get_the_right_answer() {
    let phone = Phone::new();
    phone.backup();
    // A planted object named like a newer single stream does not block the snapshot.
    let junk = phone
        .env
        .p("cloud")
        .join("lockbox-9999999999999-aaaaaaaaaaaaaaaa.lbx");
    fs::write(&junk, b"not a backup").unwrap();
    let here = phone.env.p("here");
    let out = run(phone.lockbox().arg("restore").arg(&here));
    assert_exit(&out, 0);
    same_tree(&phone.chats, &here);
    let direct = |dest: &Path, code: &Path| {
        run(lockbox()
            .arg("restore")
            .arg(dest)
            .args(["--store", &phone.env.store(), "--key-file"])
            .arg(code))
    };
    let out = direct(&phone.env.p("direct"), &phone.env.p("code.txt"));
    assert_exit(&out, 0);
    assert!(stderr(&out).contains("skipped"), "{}", stderr(&out));
    fs::remove_file(&junk).unwrap();

    // A wrong recovery code on a store that holds only snapshots is a wrong key (exit 2), not
    // "no backups".
    let wrong = phone.env.key("wrong");
    assert_fails_with(&direct(&phone.env.p("w"), &wrong), 2, "wrong key");

    // The device's own repository with its config altered: damage (exit 3), and neither a
    // backup's advice to use another key nor a disable that deletes nothing pass it by.
    let config = phone.env.p("cloud").join("config");
    // Everything after the repository id (magic 8, version 1, id 32): key check and MAC no
    // longer match, which without a mark would read as another key's repository.
    let mut bytes = fs::read(&config).unwrap();
    for b in &mut bytes[41..] {
        *b ^= 0x55;
    }
    fs::write(&config, &bytes).unwrap();
    let mut c = phone.lockbox();
    c.arg("backup").arg(&phone.chats);
    assert_exit(&run(&mut c), 3);
    assert_exit(&run(phone.lockbox().arg("list")), 3);
    let disable = run(phone.lockbox().args(["disable", "--delete-backups"]));
    assert_exit(&disable, 3);
    assert!(config.exists());
}

/// `list` on a device that has made only single streams says so instead of failing.
#[test]
fn list_on_a_device_without_snapshots_says_none_yet() {
    let phone = Phone::new();
    phone.stream_backup();
    let out = run(phone.lockbox().arg("list"));
    assert_exit(&out, 0);
    assert!(
        stderr(&out).contains("no snapshots yet"),
        "{}",
        stderr(&out)
    );
}
