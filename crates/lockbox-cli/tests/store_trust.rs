//! The built `lockbox` binary against a storage folder someone else can write to: planted
//! objects never steer prune or "latest", and every damaged header field gets the exit code and
//! message of what really happened (issue 12, items 6 and 7).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{Env, assert_exit, assert_fails_with, code, lockbox, partial_restores, run, stderr};

/// A name that sorts after every real backup: "created" in 2033, by a clock nobody checked.
const JUNK: &str = "lockbox-1999999999999-0123456789abcdef.lbx";

impl Env {
    fn cloud(&self) -> PathBuf {
        self.p("cloud")
    }
    fn keyed(&self, subcommand: &str, key: &Path) -> Command {
        let mut c = lockbox();
        c.arg(subcommand).arg("--key-file").arg(key);
        c
    }
    /// Writes `content` as the chats' message database and backs the chats up; returns the id.
    fn backup(&self, key: &Path, content: &str, extra: &[&str]) -> (String, Output) {
        let chats = self.p("chats");
        std::fs::create_dir_all(&chats).unwrap();
        std::fs::write(chats.join("msgstore.db"), content).unwrap();
        let o = run(self
            .keyed("backup", key)
            .arg(&chats)
            .args(["--to", &self.store()])
            .args(extra));
        assert_exit(&o, 0);
        let id = String::from_utf8(o.stdout.clone())
            .unwrap()
            .trim()
            .to_owned();
        (id, o)
    }
    fn restore(&self, dest: &str, key: &Path, extra: &[&str]) -> Output {
        run(self
            .keyed("restore", key)
            .arg(self.p(dest))
            .args(["--from", &self.store()])
            .args(extra))
    }
    /// The file names in the storage folder (hidden files, such as a lock, left out).
    fn objects(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.cloud())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| !n.starts_with('.'))
            .collect();
        v.sort();
        v
    }
    fn object_of(&self, id: &str) -> PathBuf {
        let names: Vec<_> = self
            .objects()
            .into_iter()
            .filter(|n| n.ends_with(&format!("-{id}.lbx")))
            .collect();
        let [name] = names.as_slice() else {
            panic!("no single object for {id}: {:?}", self.objects());
        };
        self.cloud().join(name)
    }
    fn restored_db(&self, dest: &str) -> String {
        std::fs::read_to_string(self.p(dest).join("msgstore.db")).unwrap()
    }
}

fn has_object_of(objects: &[String], id: &str) -> bool {
    objects.iter().any(|n| n.ends_with(&format!("-{id}.lbx")))
}

#[test]
fn a_planted_object_never_makes_backup_keep_delete_real_backups() {
    let env = Env::new();
    let key = env.key("k");
    let (first, _) = env.backup(&key, "first", &[]);
    let (second, _) = env.backup(&key, "second", &[]);
    // Anyone with write access to the bucket plants junk that sorts newest by name.
    std::fs::write(env.cloud().join(JUNK), b"not a backup at all").unwrap();

    let (third, o) = env.backup(&key, "third", &["--keep", "2"]);
    let objects = env.objects();
    assert!(
        has_object_of(&objects, &third),
        "new backup pruned: {objects:?}"
    );
    assert!(
        has_object_of(&objects, &second),
        "second pruned: {objects:?}"
    );
    assert!(!has_object_of(&objects, &first), "first kept: {objects:?}");
    assert!(
        objects.contains(&JUNK.to_owned()),
        "junk deleted: {objects:?}"
    );
    assert!(
        stderr(&o).contains(JUNK) && stderr(&o).contains("not counted"),
        "the planted object is not reported: {}",
        stderr(&o)
    );

    // "latest" is the newest verified backup, not the junk with the newest name.
    let o = env.restore("latest", &key, &[]);
    assert_exit(&o, 0);
    assert_eq!(env.restored_db("latest"), "third");
    assert!(
        stderr(&o).contains(JUNK),
        "skipped junk not reported: {}",
        stderr(&o)
    );
    assert_exit(&env.restore("second", &key, &["--backup", &second]), 0);
    assert_eq!(env.restored_db("second"), "second");

    // The review's case: one junk object, then `backup --keep 1`.
    let (fourth, _) = env.backup(&key, "fourth", &["--keep", "1"]);
    let objects = env.objects();
    assert_eq!(
        objects.len(),
        2,
        "exactly the new backup and the junk remain: {objects:?}"
    );
    assert!(
        has_object_of(&objects, &fourth),
        "new backup pruned: {objects:?}"
    );
    assert!(
        objects.contains(&JUNK.to_owned()),
        "junk deleted: {objects:?}"
    );
    assert_exit(&env.restore("fourth", &key, &[]), 0);
    assert_eq!(env.restored_db("fourth"), "fourth");
}

#[test]
fn prune_counts_only_backups_its_key_verifies() {
    let env = Env::new();
    let key = env.key("k");
    let other = env.key("other");
    let (mine, _) = env.backup(&key, "mine", &[]);
    // A real lockbox backup under another key, made later, sorts newer than mine.
    let (foreign, _) = env.backup(&other, "foreign", &[]);
    let o = run(env
        .keyed("prune", &key)
        .args(["--keep", "1", "--from", &env.store()]));
    assert_exit(&o, 0);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        "",
        "nothing deleted"
    );
    let objects = env.objects();
    assert!(has_object_of(&objects, &mine), "{objects:?}");
    assert!(has_object_of(&objects, &foreign), "{objects:?}");
    assert!(stderr(&o).contains(&foreign), "{}", stderr(&o));
}

/// Flips bit 0 of byte `at` of the stored backup `id`.
fn flip(env: &Env, id: &str, at: usize) {
    let object = env.object_of(id);
    let mut bytes = std::fs::read(&object).unwrap();
    bytes[at] ^= 1;
    std::fs::write(&object, bytes).unwrap();
}

/// Header offsets (docs/format.md): magic 0..8, version 8, log2 9, reserved 10..12, created
/// 12..20, backup_id 20..52 (its first 8 bytes name the object), key check 52..68, MAC 68..100.
const FIELDS: [(&str, usize); 9] = [
    ("magic", 0),
    ("version", 8),
    ("chunk size", 9),
    ("reserved", 10),
    ("created", 15),
    ("backup_id (named part)", 21),
    ("key check", 60),
    ("mac", 90),
    ("backup_id (unnamed part)", 40),
];

#[test]
fn every_flipped_header_field_of_a_stored_backup_is_an_integrity_failure() {
    for (field, at) in FIELDS {
        let env = Env::new();
        let key = env.key("k");
        let (good, _) = env.backup(&key, "intact", &[]);
        let (id, _) = env.backup(&key, "damaged", &[]);
        flip(&env, &id, at);
        // Restoring that backup by id: the key opens the other backup, so this is corruption.
        let o = env.restore("r", &key, &["--backup", &id]);
        assert_eq!(code(&o), 3, "{field}: {}", stderr(&o));
        assert!(stderr(&o).contains("corrupt"), "{field}: {}", stderr(&o));
        assert!(!env.p("r").exists(), "{field}");
        let o = env.restore("latest", &key, &[]);
        assert!(stderr(&o).contains(&id), "{field}: {}", stderr(&o));
        if matches!(field, "magic" | "version") {
            // Provably this key's newest backup, damaged: restoring an older one instead would
            // be a silent rollback, so "latest" refuses and names it.
            assert_fails_with(&o, 3, "newest backup");
            assert!(!env.p("latest").exists(), "{field}");
            assert_exit(&env.restore("older", &key, &["--backup", &good]), 0);
        } else {
            // Nothing shows it is this key's: "latest" skips it, says so, restores the intact one.
            assert_exit(&o, 0);
            assert_eq!(env.restored_db("latest"), "intact", "{field}");
        }
    }
}

#[test]
fn a_lone_backup_with_a_flipped_header_field() {
    for (field, at) in FIELDS {
        let env = Env::new();
        let key = env.key("k");
        let (id, _) = env.backup(&key, "only", &[]);
        flip(&env, &id, at);
        let o = env.restore("r", &key, &[]);
        assert!(!env.p("r").exists(), "{field}");
        assert_eq!(
            partial_restores(env.dir.path()),
            Vec::<String>::new(),
            "{field}"
        );
        if field == "backup_id (unnamed part)" {
            // Key check and MAC both fail, exactly as under another key: say both.
            assert_fails_with(&o, 2, "wrong key, or");
            assert!(stderr(&o).contains("corrupt"), "{field}: {}", stderr(&o));
        } else {
            assert_eq!(code(&o), 3, "{field}: {}", stderr(&o));
            assert!(stderr(&o).contains("corrupt"), "{field}: {}", stderr(&o));
            assert!(!stderr(&o).contains("wrong key"), "{field}: {}", stderr(&o));
        }
    }
}

#[test]
fn decrypt_of_a_file_keeps_its_codes_but_never_blames_the_key_alone() {
    let env = Env::new();
    let key = env.key("k");
    std::fs::write(env.p("plain"), b"chat").unwrap();
    let c = env.p("c");
    assert_exit(
        &run(env
            .keyed("encrypt", &key)
            .arg("-o")
            .arg(&c)
            .arg(env.p("plain"))),
        0,
    );
    let good = std::fs::read(&c).unwrap();
    let decrypt_flipped = |at: usize| {
        let mut bytes = good.clone();
        bytes[at] ^= 1;
        std::fs::write(&c, bytes).unwrap();
        run(env.keyed("decrypt", &key).arg(&c))
    };
    // An arbitrary file is just not a backup: exit 1.
    std::fs::write(env.p("junk"), b"this is not encrypted at all").unwrap();
    assert_fails_with(
        &run(env.keyed("decrypt", &key).arg(env.p("junk"))),
        1,
        "not a lockbox",
    );
    // A backup whose magic bytes authenticate once restored was damaged: exit 3.
    assert_fails_with(&decrypt_flipped(0), 3, "corrupt");
    // A flipped backup_id cannot be told from another key: say so, exit 2.
    let o = decrypt_flipped(40);
    assert_fails_with(&o, 2, "wrong key, or");
    assert!(stderr(&o).contains("corrupt"), "{}", stderr(&o));
    // The version byte restored from a flip is authentic: the header is corrupt.
    assert_fails_with(&decrypt_flipped(8), 3, "corrupt");
}
