//! What a killed `lockbox` leaves behind, and who may remove it (issue 12, item 8): a real
//! `backup`, `restore` or `decrypt -o` process is killed with SIGKILL half-way, and the next run
//! removes its staging, never the staging of a run that is still going (those are stopped with
//! SIGSTOP while the next run sweeps). Also: the restored root is private, and a restore onto a
//! mount point is refused before anything is written.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use common::{assert_exit, assert_fails_with, lockbox, partial_restores, run, stderr};
use lockbox_store::test_support::random_bytes;

/// Enough incompressible data that every command below runs long enough to be caught half-way.
const BIG: usize = 48 * 1024 * 1024;

struct Env {
    dir: tempfile::TempDir,
    key: PathBuf,
}

impl Env {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("k");
        assert_exit(&run(lockbox().args(["key", "new", "--out"]).arg(&key)), 0);
        Self { dir, key }
    }
    fn p(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    fn store(&self) -> String {
        format!("file://{}", self.p("cloud").display())
    }
    fn keyed(&self, subcommand: &str) -> Command {
        let mut c = lockbox();
        c.arg(subcommand).arg("--key-file").arg(&self.key);
        c
    }
    fn backup_cmd(&self, dir: &str) -> Command {
        let mut c = self.keyed("backup");
        c.arg(self.p(dir)).args(["--to", &self.store()]);
        c
    }
    fn restore_cmd(&self, dest: &Path) -> Command {
        let mut c = self.keyed("restore");
        c.arg(dest).args(["--from", &self.store()]);
        c
    }
    /// A source directory: one small file, plus `big` bytes of random media.
    fn source(&self, name: &str, big: usize) -> PathBuf {
        let root = self.p(name);
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join("msgstore.db"), name).unwrap();
        if big > 0 {
            std::fs::write(root.join("video.mp4"), random_bytes(big)).unwrap();
        }
        root
    }
}

/// Starts `cmd` with its output discarded.
fn spawn(cmd: &mut Command) -> Child {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Polls until `ready()` holds while `child` is still running. No time limit: if the child
/// ends first, the test fails and says so.
fn wait_until(child: &mut Child, what: &str, mut ready: impl FnMut() -> bool) {
    loop {
        if ready() {
            return;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("{what}: the process ended ({status}) before it could be interrupted");
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

fn signal(child: &Child, sig: &str) {
    let status = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success(), "kill -{sig} {}", child.id());
}

fn kill9(mut child: Child) {
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), None, "killed by a signal, not exited");
}

/// Names in `dir` that contain `mark`, sorted.
fn named(dir: &Path, mark: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(mark))
        .collect();
    v.sort();
    v
}

/// Staging files of the local backend's multipart uploads: `lockbox-….lbx#N`.
fn staging(env: &Env) -> Vec<String> {
    named(&env.p("cloud"), ".lbx#")
}

/// Bytes in the regular files directly inside `dir` or one level down.
fn bytes_inside(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => bytes_inside(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

#[test]
fn a_killed_backup_leaves_staging_that_the_next_backup_removes() {
    let env = Env::new();
    env.source("big", BIG);
    env.source("small", 0);

    let mut killed = spawn(&mut env.backup_cmd("big"));
    wait_until(&mut killed, "backup", || {
        env.p("cloud").is_dir() && !staging(&env).is_empty()
    });
    kill9(killed);
    let left = staging(&env);
    assert_eq!(
        left.len(),
        1,
        "the killed backup left its staging: {left:?}"
    );

    // The next backup removes it as it starts; stopped half-way, it is a backup still running.
    let mut paused = spawn(&mut env.backup_cmd("big"));
    wait_until(&mut paused, "next backup", || {
        let now = staging(&env);
        now.len() == 1 && now != left
    });
    signal(&paused, "STOP");
    let running = staging(&env);
    // Another backup meanwhile must leave the running upload's staging alone.
    assert_exit(&run(&mut env.backup_cmd("small")), 0);
    assert_eq!(
        staging(&env),
        running,
        "a running upload's staging was removed"
    );
    signal(&paused, "CONT");
    assert!(
        paused.wait().unwrap().success(),
        "the paused backup completes"
    );
    assert_eq!(staging(&env), Vec::<String>::new());
    let listed = run(lockbox().args(["list", "--from", &env.store()]));
    assert_eq!(
        String::from_utf8_lossy(&listed.stdout).lines().count(),
        3,
        "header + 2 backups"
    );
}

#[test]
fn a_killed_restore_leaves_plaintext_that_the_next_restore_removes() {
    let env = Env::new();
    env.source("big", BIG);
    assert_exit(&run(&mut env.backup_cmd("big")), 0);
    let parent = env.p("phone");
    std::fs::create_dir(&parent).unwrap();

    let mut killed = spawn(&mut env.restore_cmd(&parent.join("killed")));
    wait_until(&mut killed, "restore", || {
        partial_restores(&parent)
            .iter()
            .any(|p| bytes_inside(&parent.join(p)) > 0)
    });
    kill9(killed);
    let left = partial_restores(&parent);
    assert_eq!(left.len(), 1, "decrypted data left beside DEST: {left:?}");
    assert!(!parent.join("killed").exists());

    // The next restore removes it as it starts; stopped half-way, it is a restore still running.
    let mut paused = spawn(&mut env.restore_cmd(&parent.join("paused")));
    wait_until(&mut paused, "next restore", || {
        let now = partial_restores(&parent);
        now.len() == 1 && now != left && bytes_inside(&parent.join(&now[0])) > 0
    });
    signal(&paused, "STOP");
    let running = partial_restores(&parent);
    // Another restore beside it meanwhile must leave the running restore's staging alone.
    assert_exit(&run(&mut env.restore_cmd(&parent.join("done"))), 0);
    assert_eq!(
        partial_restores(&parent),
        running,
        "a running restore's staging was removed"
    );
    signal(&paused, "CONT");
    assert!(
        paused.wait().unwrap().success(),
        "the paused restore completes"
    );
    assert_eq!(partial_restores(&parent), Vec::<String>::new());
    assert_eq!(
        std::fs::read(parent.join("paused/video.mp4")).unwrap(),
        std::fs::read(env.p("big/video.mp4")).unwrap()
    );
}

#[test]
fn a_killed_decrypt_leaves_plaintext_that_the_next_decrypt_removes() {
    let env = Env::new();
    std::fs::write(env.p("plain"), random_bytes(BIG)).unwrap();
    let out_dir = env.p("out");
    std::fs::create_dir(&out_dir).unwrap();
    let c = env.p("c.lbx");
    assert_exit(
        &run(env.keyed("encrypt").arg("-o").arg(&c).arg(env.p("plain"))),
        0,
    );

    let mut killed = spawn(
        env.keyed("decrypt")
            .arg("-o")
            .arg(out_dir.join("a"))
            .arg(&c),
    );
    wait_until(&mut killed, "decrypt", || bytes_inside(&out_dir) > 0);
    kill9(killed);
    assert_eq!(
        partial_restores(&out_dir).len(),
        1,
        "no partial plaintext to clean up"
    );
    assert!(!out_dir.join("a").exists());

    let o = run(env
        .keyed("decrypt")
        .arg("-o")
        .arg(out_dir.join("b"))
        .arg(&c));
    assert_exit(&o, 0);
    assert_eq!(
        partial_restores(&out_dir),
        Vec::<String>::new(),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        std::fs::read(out_dir.join("b")).unwrap(),
        std::fs::read(env.p("plain")).unwrap()
    );
}

#[test]
fn the_restored_root_is_private() {
    let env = Env::new();
    env.source("chats", 0);
    assert_exit(&run(&mut env.backup_cmd("chats")), 0);
    let dest = env.p("restored");
    assert_exit(&run(&mut env.restore_cmd(&dest)), 0);
    let mode = std::fs::metadata(&dest).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o700, "restored root has mode {mode:o}");
}

/// A mount made for one test; unmounted on drop.
struct Mount(PathBuf);

impl Mount {
    /// `mount ARGS… TARGET`. CI runs as root, so a refusal is a failure, never a skip.
    fn new(args: &[&str], target: &Path) -> Mount {
        std::fs::create_dir_all(target).unwrap();
        let o = Command::new("mount")
            .args(args)
            .arg(target)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "this test needs to mount ({args:?}); CI runs it as root: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        Mount(target.to_path_buf())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn restore_onto_a_mount_point_is_refused_before_anything_is_written() {
    let env = Env::new();
    env.source("chats", 4 * 1024 * 1024);
    assert_exit(&run(&mut env.backup_cmd("chats")), 0);
    let parent = env.p("phone");
    std::fs::create_dir(&parent).unwrap();
    let tmpfs = parent.join("tmpfs");
    let _tmpfs = Mount::new(&["-t", "tmpfs", "lockbox-test"], &tmpfs);
    // A bind mount stays on the same filesystem (same st_dev), yet the rename fails too.
    let bound_from = env.p("elsewhere");
    std::fs::create_dir(&bound_from).unwrap();
    let bind = parent.join("bind");
    let _bind = Mount::new(&["--bind", bound_from.to_str().unwrap()], &bind);

    for dest in [&tmpfs, &bind] {
        let o = run(&mut env.restore_cmd(dest));
        assert_fails_with(&o, 1, "mount point");
        assert_eq!(
            partial_restores(&parent),
            Vec::<String>::new(),
            "{}",
            stderr(&o)
        );
        assert_eq!(std::fs::read_dir(dest).unwrap().count(), 0);
    }
    // Restoring into a new directory inside the mount works.
    assert_exit(&run(&mut env.restore_cmd(&tmpfs.join("chats"))), 0);
}
