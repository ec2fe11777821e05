#![allow(dead_code)] // Each test binary uses a different part of this module.
//! Shared by the end-to-end test files: the built binary with a clean environment.

use std::process::{Command, Output, Stdio};

/// The built `lockbox` with no inherited `AWS_*`, `AZURE_*`, `GOOGLE_*` or `LOCKBOX_*` settings
/// and no config file, so tests see the same environment on every machine. Stdin is empty unless
/// a test sets it.
pub fn lockbox() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lockbox"));
    for (key, _) in std::env::vars_os() {
        let name = key.to_str().unwrap_or_default();
        let provider = ["AWS_", "AZURE_", "GOOGLE_"]
            .iter()
            .any(|p| name.starts_with(p));
        if provider || name.starts_with("LOCKBOX_") {
            c.env_remove(&key);
        }
    }
    c.env("LOCKBOX_CONFIG", "/dev/null").stdin(Stdio::null());
    c
}

pub fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("run lockbox")
}

pub fn code(o: &Output) -> i32 {
    o.status.code().expect("exit code")
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts the exit code, showing stderr when it is not the expected one.
pub fn assert_exit(o: &Output, expected: i32) {
    assert_eq!(code(o), expected, "{}", stderr(o));
}

/// Asserts the exit code and that stderr says `message`.
pub fn assert_fails_with(o: &Output, expected: i32, message: &str) {
    assert_exit(o, expected);
    assert!(stderr(o).contains(message), "{}", stderr(o));
}

/// Entries of `dir` whose name says they are a partial restore (or partial output).
pub fn partial_restores(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("partial"))
        .collect()
}

/// A test's scratch directory, with a local-folder store (`cloud`) in it.
pub struct Env {
    pub dir: tempfile::TempDir,
}

impl Env {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn p(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }

    /// A new backup key, written by `lockbox key new` to `name`.
    pub fn key(&self, name: &str) -> std::path::PathBuf {
        let path = self.p(name);
        assert_exit(&run(lockbox().args(["key", "new", "--out"]).arg(&path)), 0);
        path
    }

    pub fn store(&self) -> String {
        format!("file://{}", self.p("cloud").display())
    }
}
