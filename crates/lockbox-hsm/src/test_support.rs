//! SoftHSM2 harness for tests (feature `test-support`), for this crate and for the vault's.
//!
//! SoftHSM reads `SOFTHSM2_CONF` once, at `C_Initialize`, and `C_Initialize` happens once per
//! process. Setting the variable from inside a multi-threaded test process would need
//! `std::env::set_var`, which is `unsafe` (and racy) in edition 2024. So [`run_isolated`] runs
//! each test body in a fresh child process of the test binary itself, with `SOFTHSM2_CONF`
//! pointing at a private temporary token directory. That is correct under both `cargo test`
//! (tests as threads of one process) and nextest (one process per test): every test gets its
//! own SoftHSM configuration and tokens, and nothing is shared.
//!
//! ```no_run
//! # use lockbox_hsm::test_support::run_isolated;
//! #[test]
//! fn my_hsm_test() {
//!     run_isolated(|hsm| {
//!         let token = hsm.new_token();
//!         let sealer = lockbox_hsm::Pkcs11Sealer::open(&token.config).unwrap();
//!         // ...
//!     });
//! }
//! ```
//!
//! `run_isolated` must be the whole body of a `#[test]` function on the test's own thread
//! (libtest names that thread after the test, which is how the child finds it). For async
//! tests, build the runtime inside the closure.
//!
//! The child does not inherit [`crate::PIN_ENV_VAR`], so tests see the same environment on
//! every machine.
//!
//! A missing `softhsm2-util` or module is a test failure that says to run `scripts/setup`,
//! never a skip.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::{HsmPin, Pkcs11Config};

/// Where Debian's `softhsm2` package installs the PKCS#11 module.
pub const SOFTHSM_MODULE: &str = crate::softhsm::MODULE;
const SOFTHSM_UTIL: &str = "softhsm2-util";
/// Set in the child: the private directory holding `softhsm2.conf` and `tokens/`.
const DIR_ENV: &str = "LOCKBOX_SOFTHSM_TEST_DIR";
/// Set in the child: a file it creates once the body has returned.
const DONE_ENV: &str = "LOCKBOX_SOFTHSM_TEST_DONE";
/// User PIN of every token [`SoftHsm::new_token`] makes.
pub const TEST_USER_PIN: &str = "246810";
/// Security-officer PIN of every token [`SoftHsm::new_token`] makes.
pub const TEST_SO_PIN: &str = "13579111";

/// Tokens [`run_isolated`] prepares.
pub const DEFAULT_TOKENS: usize = 3;

/// A private SoftHSM2 installation: one config file and token directory for this process,
/// with tokens initialized before anything in the process calls `C_Initialize` (SoftHSM
/// does not see tokens created after that).
#[derive(Debug)]
pub struct SoftHsm {
    dir: PathBuf,
    tokens: Vec<TestToken>,
    next_token: AtomicUsize,
}

/// A freshly initialized token and the config that opens it.
#[derive(Debug, Clone)]
pub struct TestToken {
    /// Token label, unique within the [`SoftHsm`].
    pub label: String,
    /// Module path, token label and [`TEST_USER_PIN`], default key label prefix.
    pub config: Pkcs11Config,
}

impl TestToken {
    /// A read-write session of the test's own on this token, to inspect what a sealer made
    /// there (an open sealer keeps the token logged in).
    pub fn open_session(&self) -> cryptoki::session::Session {
        let ctx = crate::shared_context(&self.config.module_path).expect("load PKCS#11 module");
        let slot = crate::pkcs11::find_slot(&ctx, &self.label).expect("find test token");
        ctx.open_rw_session(slot).expect("open session")
    }
}

impl SoftHsm {
    /// The PKCS#11 module to load.
    pub fn module_path(&self) -> &Path {
        Path::new(SOFTHSM_MODULE)
    }

    /// The directory holding `softhsm2.conf` and the token files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Hands out the next prepared token (labels `lockbox-test-0`, `-1`, ...), each with
    /// user PIN [`TEST_USER_PIN`]. Panics when all prepared tokens are used.
    pub fn new_token(&self) -> TestToken {
        let n = self.next_token.fetch_add(1, Ordering::Relaxed);
        self.tokens.get(n).cloned().unwrap_or_else(|| {
            panic!(
                "only {} SoftHSM tokens were prepared; use run_isolated_with_tokens",
                self.tokens.len()
            )
        })
    }
}

/// Initialises token `label` in `dir`'s configuration, with the test PINs.
fn init_token(dir: &Path, label: &str) -> TestToken {
    crate::softhsm::init_token(dir, label, TEST_SO_PIN, TEST_USER_PIN)
        .unwrap_or_else(|e| panic!("{e}"));
    TestToken {
        label: label.to_owned(),
        config: Pkcs11Config::new(SOFTHSM_MODULE, label).with_pin(HsmPin::new(TEST_USER_PIN)),
    }
}

fn conf_path(dir: &Path) -> PathBuf {
    crate::softhsm::conf_path(dir)
}

/// Fails (never skips) when SoftHSM2 is not installed.
fn require_softhsm() {
    assert!(
        Path::new(SOFTHSM_MODULE).is_file(),
        "SoftHSM2 module {SOFTHSM_MODULE} is missing; run scripts/setup (installs softhsm2)"
    );
    let found = Command::new(SOFTHSM_UTIL).arg("--version").output();
    assert!(
        found.is_ok_and(|o| o.status.success()),
        "{SOFTHSM_UTIL} is missing or broken; run scripts/setup (installs softhsm2)"
    );
}

fn write_conf(dir: &Path) {
    crate::softhsm::write_conf(dir).unwrap_or_else(|e| panic!("{e}"));
}

/// Runs `body` with a private SoftHSM2 holding [`DEFAULT_TOKENS`] fresh tokens, in a child
/// process of the current test binary.
///
/// Call it as the whole body of a `#[test]` function (see the module docs).
pub fn run_isolated(body: impl FnOnce(&SoftHsm)) {
    run_isolated_with_tokens(DEFAULT_TOKENS, body);
}

/// [`run_isolated`] with `tokens` fresh tokens.
pub fn run_isolated_with_tokens(tokens: usize, body: impl FnOnce(&SoftHsm)) {
    if let Some(dir) = std::env::var_os(DIR_ENV) {
        return run_child(PathBuf::from(dir), tokens, body);
    }
    require_softhsm();
    let current = std::thread::current();
    let test_name = match current.name() {
        Some(name) if name != "main" => name,
        _ => panic!("run_isolated must be called on the libtest thread of a #[test] function"),
    };
    let dir = tempfile::tempdir().expect("create SoftHSM temp dir");
    write_conf(dir.path());
    let done = dir.path().join("done");
    let exe = std::env::current_exe().expect("locate test binary");
    let out = Command::new(exe)
        .args([test_name, "--exact", "--nocapture", "--test-threads=1"])
        .env(DIR_ENV, dir.path())
        .env(DONE_ENV, &done)
        .env("SOFTHSM2_CONF", conf_path(dir.path()))
        .env_remove(crate::PIN_ENV_VAR)
        .output()
        .expect("spawn isolated test process");
    let log = format!(
        "--- child stdout ---\n{}\n--- child stderr ---\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "isolated test {test_name} failed\n{log}"
    );
    assert!(
        done.exists(),
        "isolated child did not run test {test_name} (name not found?)\n{log}"
    );
}

fn run_child(dir: PathBuf, tokens: usize, body: impl FnOnce(&SoftHsm)) {
    let tokens = (0..tokens)
        .map(|i| init_token(&dir, &format!("lockbox-test-{i}")))
        .collect();
    let hsm = SoftHsm {
        dir,
        tokens,
        next_token: AtomicUsize::new(0),
    };
    body(&hsm);
    if let Some(done) = std::env::var_os(DONE_ENV) {
        std::fs::write(done, b"ok").expect("write completion marker");
    }
}
