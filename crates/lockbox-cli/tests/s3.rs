//! End-to-end tests of the built `lockbox` binary against a real S3-protocol server (s3s-fs on
//! loopback): configured only through the standard `AWS_*` variables, like a user would.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{assert_exit, assert_fails_with, code, partial_restores, run, stderr};
use lockbox_store::test_support::{ACCESS_KEY, S3Server, StorageServer, files_under, random_bytes};
use lockbox_store::{RETRIES_ENV, StoreOptions};
use tempfile::TempDir;

const PREFIX: &str = "phone";

/// The binary with a clean environment plus `env` (set on the child only).
fn lockbox(env: &[(&str, String)]) -> Command {
    let mut c = common::lockbox();
    c.envs(env.iter().map(|(k, v)| (k, v)));
    c
}

/// A work directory, a recovery-code file, and an s3s-fs server with the CLI's environment.
struct Setup {
    dir: TempDir,
    key: PathBuf,
    server: S3Server,
}

impl Setup {
    fn new() -> Self {
        let dir = TempDir::new().unwrap();
        let key = dir.path().join("recovery-code");
        assert_exit(
            &run(lockbox(&[]).args(["key", "new", "--out"]).arg(&key)),
            0,
        );
        Setup {
            dir,
            key,
            server: S3Server::start(),
        }
    }

    fn p(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn url(&self) -> String {
        self.server.url(PREFIX)
    }

    /// `lockbox ARGS` pointed at the server by the standard AWS variables.
    fn lockbox(&self) -> Command {
        lockbox(&self.server.aws_env())
    }

    /// Adds `backup DIR --to URL --key-file KEY` to `cmd`.
    fn backup_args<'c>(&self, cmd: &'c mut Command, dir: &Path) -> &'c mut Command {
        cmd.arg("backup")
            .arg(dir)
            .args(["--to", &self.url()])
            .arg("--key-file")
            .arg(&self.key)
    }

    fn backup(&self, dir: &Path) -> String {
        let o = run(self.backup_args(&mut self.lockbox(), dir));
        assert_exit(&o, 0);
        String::from_utf8(o.stdout).unwrap().trim().to_owned()
    }

    fn restore(&self, cmd: &mut Command, dest: &Path) -> Output {
        run(cmd
            .arg("restore")
            .arg(dest)
            .args(["--from", &self.url()])
            .arg("--key-file")
            .arg(&self.key))
    }

    /// The one backup object, as a file in s3s-fs's data directory.
    fn object(&self) -> PathBuf {
        let files = self.server.bucket_files();
        let [object] = files.as_slice() else {
            panic!("expected one object in the bucket: {files:?}");
        };
        self.server.bucket_dir().join(object)
    }
}

/// Chats, text and incompressible media: about `random_mib` MiB after compression.
fn chats(root: &Path, random_mib: usize) -> PathBuf {
    std::fs::create_dir_all(root.join("media/empty")).unwrap();
    std::fs::write(
        root.join("msgstore.db"),
        "hello, how are you?\n".repeat(100_000),
    )
    .unwrap();
    let half = random_mib * 1024 * 1024 / 2;
    std::fs::write(root.join("media/photo.jpg"), random_bytes(half)).unwrap();
    std::fs::write(root.join("media/video.mp4"), random_bytes(half + 12_345)).unwrap();
    std::os::unix::fs::symlink("../msgstore.db", root.join("media/link")).unwrap();
    root.to_path_buf()
}

fn assert_same_tree(src: &Path, dest: &Path) {
    let files = files_under(src);
    assert_eq!(files, files_under(dest), "file lists differ");
    for f in &files {
        let (a, b) = (src.join(f), dest.join(f));
        if a.is_symlink() {
            assert_eq!(
                std::fs::read_link(&a).unwrap(),
                std::fs::read_link(&b).unwrap()
            );
        } else {
            assert!(
                std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap(),
                "{f} differs"
            );
        }
    }
    assert!(dest.join("media/empty").is_dir());
}

/// Exit 1, saying the storage refused the credentials.
fn assert_permission_denied(o: &Output) {
    assert_exit(o, 1);
    assert!(
        stderr(o).contains("permission denied") && stderr(o).contains("credentials"),
        "{}",
        stderr(o)
    );
}

#[test]
fn backup_list_restore_round_trip_over_s3_multipart() {
    let s = Setup::new();
    // Half a part more than one default part (8 MiB): the upload really is multipart.
    let part = StoreOptions::default().part_size;
    let src = chats(&s.p("chats"), part / (1024 * 1024) + 4);
    let id = s.backup(&src);
    assert_eq!(id.len(), 16, "{id}");

    let object = s.object();
    let name = object.file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.ends_with(&format!("-{id}.lbx")), "{name}");
    assert_eq!(object.parent().unwrap(), s.server.bucket_dir().join(PREFIX));
    let size = std::fs::metadata(&object).unwrap().len();
    assert!(size > part as u64, "{size} bytes fit one part");
    // s3s-fs keeps in-progress multipart uploads as `.upload_id-*` files.
    let leftovers = files_under(s.server.data_dir());
    assert!(
        !leftovers.iter().any(|f| f.starts_with(".upload_id-")),
        "{leftovers:?}"
    );

    let o = run(s.lockbox().args(["list", "--from", &s.url()]));
    assert_exit(&o, 0);
    let listed = String::from_utf8_lossy(&o.stdout);
    assert!(
        listed.contains(&id) && listed.contains(&size.to_string()),
        "{listed}"
    );

    let dest = s.p("restored");
    assert_exit(&s.restore(&mut s.lockbox(), &dest), 0);
    assert_same_tree(&src, &dest);
}

#[test]
fn tampered_object_exits_3_and_leaves_no_destination() {
    let s = Setup::new();
    s.backup(&chats(&s.p("chats"), 1));
    let object = s.object();
    let mut bytes = std::fs::read(&object).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&object, &bytes).unwrap();

    let dest = s.p("restored");
    assert_exit(&s.restore(&mut s.lockbox(), &dest), 3);
    assert!(!dest.exists(), "half-written restore left behind");
    assert_eq!(partial_restores(s.dir.path()), Vec::<String>::new());
}

#[test]
fn wrong_credentials_exit_1_saying_permission_denied() {
    let s = Setup::new();
    let src = chats(&s.p("chats"), 1);
    let wrong: Vec<_> = s
        .server
        .aws_env()
        .into_iter()
        .map(|(k, v)| match k {
            "AWS_SECRET_ACCESS_KEY" => (k, "not-the-secret".to_owned()),
            _ => (k, v),
        })
        .collect();
    // Only the secret is wrong: the key id is one the server knows.
    assert!(wrong.contains(&("AWS_ACCESS_KEY_ID", ACCESS_KEY.to_owned())));

    let o = run(lockbox(&wrong).args(["list", "--from", &s.url()]));
    assert_permission_denied(&o);
    assert!(
        !stderr(&o).contains("not-the-secret"),
        "secret echoed: {}",
        stderr(&o)
    );

    assert_permission_denied(&run(s.backup_args(&mut lockbox(&wrong), &src)));
    assert_eq!(files_under(s.server.data_dir()), Vec::<String>::new());
}

#[test]
fn stopped_server_exits_1_saying_unavailable_quickly() {
    let mut s = Setup::new();
    let src = chats(&s.p("chats"), 1);
    s.backup(&src);
    s.server.stop();
    let mut env = s.server.aws_env();
    env.push((RETRIES_ENV, "2".to_owned()));

    let dest = s.p("restored");
    let mut list = lockbox(&env);
    list.args(["list", "--from", &s.url()]);
    let mut backup = lockbox(&env);
    s.backup_args(&mut backup, &src);
    for (what, mut cmd) in [("list", list), ("backup", backup)] {
        let started = Instant::now();
        let o = run(&mut cmd);
        assert_eq!(code(&o), 1, "{what}: {}", stderr(&o));
        assert!(stderr(&o).contains("unavailable"), "{what}: {}", stderr(&o));
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{what}: {:?}",
            started.elapsed()
        );
    }
    assert_fails_with(&s.restore(&mut lockbox(&env), &dest), 1, "unavailable");
    assert!(!dest.exists());

    let mut bad = env.clone();
    bad.retain(|(k, _)| *k != RETRIES_ENV);
    bad.push((RETRIES_ENV, "many".to_owned()));
    let o = run(lockbox(&bad).args(["list", "--from", &s.url()]));
    assert_fails_with(&o, 1, RETRIES_ENV);
}
