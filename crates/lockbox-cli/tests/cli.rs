//! End-to-end tests of the built `lockbox` binary: exit codes, messages, files left behind.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{Env, assert_exit, assert_fails_with, code, lockbox, partial_restores, run, stderr};

/// `lockbox SUBCOMMAND --key-file KEY`, for the commands that take a recovery code.
fn keyed(subcommand: &str, key: &Path) -> Command {
    let mut c = lockbox();
    c.arg(subcommand).arg("--key-file").arg(key);
    c
}

impl Env {
    fn chats(&self) -> PathBuf {
        let root = self.p("chats");
        std::fs::create_dir_all(root.join("media/empty")).unwrap();
        std::fs::write(root.join("msgstore.db"), "hello\n".repeat(50_000)).unwrap();
        let noise: Vec<u8> = (0..300_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        std::fs::write(root.join("media/photo.jpg"), noise).unwrap();
        std::os::unix::fs::symlink("../msgstore.db", root.join("media/link")).unwrap();
        root
    }
    /// Writes `plain` to the file `plain` and encrypts it, successfully, to the file `c`.
    fn encrypted(&self, key: &Path, plain: &[u8]) -> PathBuf {
        std::fs::write(self.p("plain"), plain).unwrap();
        let c = self.p("c");
        assert_exit(
            &run(keyed("encrypt", key).arg("-o").arg(&c).arg(self.p("plain"))),
            0,
        );
        c
    }
    fn decrypt_to(&self, key: &Path, input: &Path, out: &Path) -> Output {
        run(keyed("decrypt", key).arg("-o").arg(out).arg(input))
    }
    /// `lockbox backup` of the `chats` folder as it is now, plus `extra` arguments.
    fn run_backup(&self, key: &Path, extra: &[&str]) -> Output {
        run(keyed("backup", key)
            .arg(self.p("chats"))
            .args(["--to", &self.store()])
            .args(extra))
    }
    /// Backs up the `chats` folder as it is now; returns the new backup's id.
    fn backup_again(&self, key: &Path) -> String {
        let o = self.run_backup(key, &[]);
        assert_exit(&o, 0);
        String::from_utf8(o.stdout).unwrap().trim().to_string()
    }
    /// Writes the sample chats and backs them up; returns the backup's id.
    fn backup(&self, key: &Path) -> String {
        self.chats();
        self.backup_again(key)
    }
    fn list(&self) -> Output {
        run(lockbox().args(["list", "--from", &self.store()]))
    }
    fn restore_cmd(&self, dest: &Path, key: &Path) -> Command {
        let mut c = keyed("restore", key);
        c.arg(dest).args(["--from", &self.store()]);
        c
    }
    fn restore(&self, dest: &Path, key: &Path) -> Output {
        run(&mut self.restore_cmd(dest, key))
    }
    fn objects(&self) -> Vec<PathBuf> {
        let mut v: Vec<_> = std::fs::read_dir(self.p("cloud"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "lbx"))
            .collect();
        v.sort();
        v
    }
}

#[test]
fn key_new_writes_a_private_grouped_code_and_never_overwrites() {
    let env = Env::new();
    let path = env.p("k");
    let o = run(lockbox().args(["key", "new", "--out"]).arg(&path));
    assert_exit(&o, 0);
    let shown = String::from_utf8(o.stdout).unwrap();
    let groups: Vec<_> = shown.split_whitespace().collect();
    assert_eq!(groups.len(), 16);
    assert!(
        groups
            .iter()
            .all(|g| g.len() == 4 && g.chars().all(|c| c.is_ascii_hexdigit()))
    );
    assert_eq!(std::fs::read_to_string(&path).unwrap().trim(), shown.trim());
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let again = run(lockbox().args(["key", "new", "--out"]).arg(&path));
    assert_eq!(code(&again), 1);
    assert_eq!(std::fs::read_to_string(&path).unwrap().trim(), shown.trim());
}

#[test]
fn encrypt_decrypt_round_trip_files_and_pipes() {
    let env = Env::new();
    let key = env.key("k");
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let c = env.encrypted(&key, &data);
    let ct = std::fs::read(&c).unwrap();
    assert!(ct.len() > data.len());
    assert!(!ct.windows(64).any(|w| data.windows(64).next() == Some(w)));
    // decrypt from stdin to stdout
    let o = run(keyed("decrypt", &key).stdin(std::fs::File::open(&c).unwrap()));
    assert_exit(&o, 0);
    assert_eq!(o.stdout, data);
}

#[test]
fn recovery_code_from_environment_leniently_typed() {
    let env = Env::new();
    let key = env.key("k");
    let typed = std::fs::read_to_string(&key)
        .unwrap()
        .trim()
        .replace(' ', "-")
        .to_uppercase();
    std::fs::write(env.p("plain"), b"secret chat").unwrap();
    let o = run(lockbox()
        .arg("encrypt")
        .arg("-o")
        .arg(env.p("c"))
        .arg(env.p("plain"))
        .env("LOCKBOX_RECOVERY_CODE", &typed));
    assert_exit(&o, 0);
    let o = run(keyed("decrypt", &key).arg(env.p("c")));
    assert_eq!(o.stdout, b"secret chat");
}

#[test]
fn wrong_key_exits_2_and_leaves_no_output() {
    let env = Env::new();
    let (k1, k2) = (env.key("k1"), env.key("k2"));
    let c = env.encrypted(&k1, &b"x".repeat(100_000));
    let o = env.decrypt_to(&k2, &c, &env.p("out"));
    assert_fails_with(&o, 2, "wrong");
    assert!(!env.p("out").exists());
    assert_eq!(
        std::fs::read_dir(env.dir.path()).unwrap().count(),
        4,
        "no temp files left"
    );
}

#[test]
fn malformed_code_exits_2_with_a_clear_message() {
    let env = Env::new();
    std::fs::write(env.p("k"), "1234 5678").unwrap();
    let o = run(keyed("decrypt", &env.p("k")).arg("/dev/null"));
    assert_fails_with(&o, 2, "expected 64");
}

#[test]
fn tampered_and_truncated_streams_exit_3() {
    let env = Env::new();
    let key = env.key("k");
    let ct = std::fs::read(env.encrypted(&key, &b"chat ".repeat(60_000))).unwrap();
    let mut flipped = ct.clone();
    flipped[ct.len() / 2] ^= 0x80;
    let cases = [
        ("flipped", flipped),
        ("truncated", ct[..ct.len() - 1000].to_vec()),
        ("cut", ct[..ct.len() / 2].to_vec()),
    ];
    for (name, bytes) in cases {
        std::fs::write(env.p(name), bytes).unwrap();
        let out = env.p(&format!("{name}.out"));
        let o = env.decrypt_to(&key, &env.p(name), &out);
        assert_eq!(code(&o), 3, "{name}: {}", stderr(&o));
        assert!(!out.exists(), "{name}: partial output left");
    }
}

#[test]
fn not_a_lockbox_file_is_a_plain_error() {
    let env = Env::new();
    let key = env.key("k");
    std::fs::write(env.p("junk"), b"this is not encrypted at all, just text").unwrap();
    let o = run(keyed("decrypt", &key).arg(env.p("junk")));
    assert_ne!(code(&o), 0);
    assert!(
        stderr(&o).to_lowercase().contains("not a lockbox"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn backup_list_restore_round_trip() {
    let env = Env::new();
    let key = env.key("k");
    let id = env.backup(&key);
    assert_eq!(id.len(), 16, "{id}");
    let o = env.list();
    assert_exit(&o, 0);
    assert!(String::from_utf8_lossy(&o.stdout).contains(&id));
    let dest = env.p("restored");
    assert_exit(&env.restore(&dest, &key), 0);
    let src = env.p("chats");
    for f in ["msgstore.db", "media/photo.jpg"] {
        assert_eq!(
            std::fs::read(src.join(f)).unwrap(),
            std::fs::read(dest.join(f)).unwrap(),
            "{f}"
        );
    }
    assert!(dest.join("media/empty").is_dir());
    assert_eq!(
        std::fs::read_link(dest.join("media/link")).unwrap(),
        Path::new("../msgstore.db")
    );
    // a second restore into the now non-empty destination is refused
    assert_exit(&env.restore(&dest, &key), 1);
}

#[test]
fn restore_picks_by_id_and_prune_keeps_newest() {
    let env = Env::new();
    let key = env.key("k");
    let first = env.backup(&key);
    std::fs::write(env.p("chats/msgstore.db"), b"changed").unwrap();
    env.backup_again(&key);
    let dest = env.p("old");
    let o = run(env.restore_cmd(&dest, &key).args(["--backup", &first[..6]]));
    assert_exit(&o, 0);
    assert_eq!(
        std::fs::read(dest.join("msgstore.db")).unwrap(),
        "hello\n".repeat(50_000).as_bytes()
    );
    let o = run(keyed("prune", &key).args(["--keep", "1", "--from", &env.store()]));
    assert_exit(&o, 0);
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), first);
    assert_eq!(env.objects().len(), 1);
}

#[test]
fn restore_with_wrong_key_exits_2_and_leaves_nothing() {
    let env = Env::new();
    let key = env.key("k");
    env.backup(&key);
    let other = env.key("other");
    let dest = env.p("restored");
    assert_exit(&env.restore(&dest, &other), 2);
    assert!(!dest.exists());
}

#[test]
fn tampering_storage_provider_is_caught_exit_3() {
    let env = Env::new();
    let key = env.key("k");
    env.backup(&key);
    let [object] = env.objects().try_into().unwrap();
    let mut bytes = std::fs::read(&object).unwrap();
    let n = bytes.len();
    bytes[n - 100] ^= 1;
    std::fs::write(&object, &bytes).unwrap();
    let dest = env.p("restored");
    assert_exit(&env.restore(&dest, &key), 3);
    assert!(!dest.exists(), "half-written restore left behind");
    assert_eq!(partial_restores(env.dir.path()), Vec::<String>::new());
}

#[test]
fn swapped_backups_are_caught_exit_3() {
    let env = Env::new();
    let key = env.key("k");
    env.backup(&key);
    std::fs::write(env.p("chats/msgstore.db"), b"newer").unwrap();
    env.backup_again(&key);
    let [old, new] = env.objects().try_into().unwrap();
    // the provider serves the old backup under the newest name
    std::fs::copy(&old, &new).unwrap();
    assert_fails_with(&env.restore(&env.p("r"), &key), 3, "swapped");
}

#[test]
fn help_documents_exit_status() {
    let o = run(lockbox().arg("--help"));
    assert_eq!(code(&o), 0);
    let text = String::from_utf8_lossy(&o.stdout);
    for needle in ["EXIT STATUS", "LOCKBOX_RECOVERY_CODE", "backup", "restore"] {
        assert!(text.contains(needle), "missing {needle}");
    }
    assert_eq!(
        code(&run(lockbox().arg("no-such-command"))),
        1,
        "usage errors are 1, not 2 (wrong key)"
    );
}

#[test]
fn demo_runs_end_to_end() {
    let env = Env::new();
    let o = run(lockbox().arg("demo").arg("--workdir").arg(env.p("demo")));
    assert_eq!(
        code(&o),
        0,
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        stderr(&o)
    );
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("identical") && out.contains("Demo complete"),
        "{out}"
    );
    for step in [
        "4 attempts left",
        "5 of 5",
        "gone for good (exit status 4)",
        "opens nothing in the cloud any more (exit status 2)",
        "(exit status 3)",
    ] {
        assert!(out.contains(step), "{step:?} missing from\n{out}");
    }
}

/// Runs `cmd` with its stdout on `/dev/full`: a clear runtime error, exit 1.
fn assert_disk_full_error(cmd: &mut Command) {
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    assert_fails_with(&run(cmd.stdout(full)), 1, "No space left on device");
}

#[test]
fn full_disk_is_a_clear_runtime_error() {
    let env = Env::new();
    let key = env.key("k");
    let c = env.encrypted(&key, &b"chat ".repeat(100_000));
    assert_disk_full_error(keyed("encrypt", &key).arg(env.p("plain")));
    assert_disk_full_error(keyed("decrypt", &key).arg(&c));
}

/// `cmd` run under a 128 KiB file-size limit (RLIMIT_FSIZE, via `ulimit -f` in dash's 512-byte
/// blocks) with SIGXFSZ ignored: a write past the limit fails with EFBIG, the way a full disk
/// makes writes fail, without needing a small filesystem to fill.
fn with_file_size_limit(cmd: &Command) -> Command {
    let mut limited = Command::new("sh");
    limited
        .arg("-c")
        .arg(r#"trap '' XFSZ; ulimit -f 256; exec "$@""#)
        .arg("sh")
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => limited.env(k, v),
            None => limited.env_remove(k),
        };
    }
    limited.stdin(std::process::Stdio::null());
    limited
}

#[test]
fn a_write_failure_during_backup_or_restore_leaves_nothing_that_looks_complete() {
    let env = Env::new();
    let key = env.key("k");
    env.chats();
    let mut backup = keyed("backup", &key);
    backup.arg(env.p("chats")).args(["--to", &env.store()]);
    let failed = run(&mut with_file_size_limit(&backup));
    assert_fails_with(&failed, 1, "too large");
    assert!(
        String::from_utf8_lossy(&env.list().stdout)
            .trim()
            .is_empty(),
        "a failed backup must not list"
    );

    env.backup_again(&key);
    let dest = env.p("restored");
    let failed = run(&mut with_file_size_limit(&env.restore_cmd(&dest, &key)));
    assert_fails_with(&failed, 1, "too large");
    assert!(!dest.exists(), "a failed restore must not leave DEST");
    assert_eq!(partial_restores(env.dir.path()), Vec::<String>::new());
    assert_exit(&env.restore(&dest, &key), 0);
}

/// A value no `String` can hold.
fn not_utf8() -> &'static std::ffi::OsStr {
    use std::os::unix::ffi::OsStrExt;
    std::ffi::OsStr::from_bytes(b"\xff\xfe")
}

#[test]
fn an_unrelated_non_utf8_variable_does_not_crash_cloud_storage() {
    // Nothing listens on port 1: the run must reach the storage and fail there, cleanly.
    let o = run(lockbox()
        .args(["list", "--from", "s3://bucket/prefix"])
        .env("SOME_UNRELATED_VARIABLE", not_utf8())
        .env("AWS_ENDPOINT", "http://127.0.0.1:1")
        .env("AWS_ALLOW_HTTP", "true")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .env("LOCKBOX_STORAGE_RETRIES", "0"));
    assert_exit(&o, 1);
    assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));
    assert!(stderr(&o).contains("unavailable"), "{}", stderr(&o));
}

#[test]
fn non_utf8_environment_settings_are_errors_not_silently_skipped() {
    let env = Env::new();
    let key = env.key("k");
    let config = env.p("config.toml");
    std::fs::write(
        &config,
        format!(
            "storage = \"{}\"\nkey_file = \"{}\"\n",
            env.store(),
            key.display()
        ),
    )
    .unwrap();
    // Without the check, both commands fell back to the config file's storage / key file.
    let o = run(lockbox()
        .arg("list")
        .env("LOCKBOX_CONFIG", &config)
        .env("LOCKBOX_STORAGE", not_utf8()));
    assert_fails_with(&o, 1, "LOCKBOX_STORAGE is set but is not valid UTF-8");
    std::fs::write(env.p("plain"), b"chat").unwrap();
    let o = run(lockbox()
        .arg("encrypt")
        .arg(env.p("plain"))
        .env("LOCKBOX_CONFIG", &config)
        .env("LOCKBOX_RECOVERY_CODE", not_utf8()));
    assert_fails_with(&o, 1, "LOCKBOX_RECOVERY_CODE is set but is not valid UTF-8");
    assert!(o.stdout.is_empty());
}

#[test]
fn a_backup_renamed_to_another_time_is_caught_and_named() {
    let env = Env::new();
    let key = env.key("k");
    let id = env.backup(&key);
    let [object] = env.objects().try_into().unwrap();
    let name = object.file_name().unwrap().to_str().unwrap().to_owned();
    let millis: u64 = name["lockbox-".len().."lockbox-".len() + 13]
        .parse()
        .unwrap();
    let renamed = name.replace(&format!("{millis:013}"), &format!("{:013}", millis + 1));
    std::fs::rename(&object, object.with_file_name(renamed)).unwrap();
    let o = env.restore(&env.p("r"), &key);
    assert_exit(&o, 3);
    let err = stderr(&o);
    assert!(
        err.contains(&format!("{id} (created_unix_ms {millis})")),
        "{err}"
    );
    assert!(
        err.contains(&format!("not {id} (created_unix_ms {})", millis + 1)),
        "{err}"
    );
    assert!(!env.p("r").exists());
}

#[test]
fn backup_keep_zero_is_refused_before_uploading() {
    let env = Env::new();
    let key = env.key("k");
    env.chats();
    let o = env.run_backup(&key, &["--keep", "0"]);
    assert_fails_with(&o, 1, "keep at least 1");
    assert!(o.stdout.is_empty(), "no backup id is reported");
    assert!(env.list().stdout.is_empty(), "no backup was made");
}
