//! Test harness (feature `test-support`): real storage servers on loopback, for this crate's
//! tests and for end-to-end tests of programs built on it (the CLI).
//!
//! * [`S3Server`]: `s3s-fs` (S3 protocol, checks SigV4 credentials), from `~/.cargo/bin`.
//! * `AzureServer` (feature `azure`): Azurite (checks SharedKey credentials), from `.tools/`.
//! * [`Hostile`]: a provider that lies (fake "already exists", deletions, hidden objects, death
//!   after N writes) around a local folder, for the attacks and crashes a real server won't stage.
//!
//! ```no_run
//! # use lockbox_store::test_support::{S3Server, StorageServer};
//! let server = S3Server::start(); // killed on drop
//! let store = server.store("phone"); // s3://backups/phone, explicit options, no environment
//! // Or run a child process against it:
//! let mut cmd = std::process::Command::new("lockbox");
//! cmd.envs(server.aws_env()).args(["list", "--from", &server.url("phone")]);
//! ```
//!
//! `scripts/setup` installs every server; a missing one is a test failure that says to run
//! it, never a skip. Everything here panics on failure: it is test code.

use std::ffi::OsString;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::{Store, StoreOptions};

/// `store` with uploads limited to `parts` multipart parts instead of [`crate::MAX_PARTS`],
/// so that tests reach the limit with megabytes instead of tens of gigabytes.
pub fn with_part_limit(mut store: Store, parts: u64) -> Store {
    store.set_part_limit(parts);
    store
}

#[cfg(feature = "azure")]
mod azure;
mod hostile;

pub use hostile::{Hostile, JUNK_PIECE, OnPut, PutRule, Reads, Tamper};

#[cfg(feature = "azure")]
pub use azure::{AZURE_ACCOUNT, AZURE_ACCOUNT_KEY, AzureServer, azure_options};

/// Access key id that [`S3Server`] accepts.
pub const ACCESS_KEY: &str = "lockbox-test-ak";
/// Secret access key that [`S3Server`] accepts.
pub const SECRET_KEY: &str = "lockbox-test-sk-0123456789";
/// The bucket (or container) every test server starts with.
pub const BUCKET: &str = "backups";
/// Region the test options and environment name (s3s-fs accepts any).
pub const REGION: &str = "us-east-1";

/// How long a freshly started server may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// An `s3s-fs` process serving a fresh data directory that holds bucket [`BUCKET`] on
/// `127.0.0.1`; killed on drop (the data directory is removed with it).
///
/// s3s-fs keeps each object as a plain file, `data_dir()/BUCKET/key` (plus metadata files
/// at the top of the data directory), so tests can inspect or tamper with stored bytes
/// directly; in-progress multipart uploads are kept as `.upload_id-*` files at the top.
#[derive(Debug)]
pub struct S3Server {
    process: ServerProcess,
}

/// What every test storage server offers: the URL of a prefix in its bucket and options that
/// reach it with the right credentials, short retries and no environment.
pub trait StorageServer {
    /// `SCHEME://BUCKET/prefix`.
    fn url(&self, prefix: &str) -> String;

    /// Store options pointing at this server.
    fn options(&self) -> StoreOptions;

    /// [`StorageServer::url`] opened with [`StorageServer::options`].
    fn store(&self, prefix: &str) -> Store {
        self.store_with(prefix, self.options())
    }

    /// [`StorageServer::url`] opened with `options`.
    fn store_with(&self, prefix: &str, options: StoreOptions) -> Store {
        Store::open_with(&self.url(prefix), options).expect("open test store")
    }
}

impl StorageServer for S3Server {
    fn url(&self, prefix: &str) -> String {
        format!("s3://{BUCKET}/{prefix}")
    }

    fn options(&self) -> StoreOptions {
        s3_options(&self.endpoint(), ACCESS_KEY, SECRET_KEY)
    }
}

impl S3Server {
    /// Starts a server on a free port and waits until it accepts connections.
    pub fn start() -> S3Server {
        let binary = s3s_fs_binary();
        let data = data_dir_with_bucket();
        let port = free_port();
        let mut command = Command::new(&binary);
        command
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
            .arg(data.path());
        S3Server {
            process: ServerProcess::start("s3s-fs", command, port, data),
        }
    }

    /// Kills the server now (as if the storage went away); the data directory stays until
    /// drop. Idempotent.
    pub fn stop(&mut self) {
        self.process.stop();
    }

    /// The loopback port the server listens on.
    pub fn port(&self) -> u16 {
        self.process.port
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.process.port)
    }

    /// The directory s3s-fs serves: one sub-directory per bucket.
    pub fn data_dir(&self) -> &Path {
        self.process.data.path()
    }

    /// Where the objects of [`BUCKET`] live as files.
    pub fn bucket_dir(&self) -> PathBuf {
        self.data_dir().join(BUCKET)
    }

    /// Files under the bucket directory, as sorted relative paths (object keys).
    pub fn bucket_files(&self) -> Vec<String> {
        files_under(&self.bucket_dir())
    }

    /// The standard AWS environment variables that point a child process (using
    /// [`Store::open`]) at this server: credentials, region, endpoint, plain HTTP allowed.
    /// Set them on the child's `Command`, never on the test process.
    pub fn aws_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.to_owned()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.to_owned()),
            ("AWS_REGION", REGION.to_owned()),
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_ALLOW_HTTP", "true".to_owned()),
        ]
    }
}

/// Options for an S3 endpoint with explicit credentials, short retries (2 retries, 10–50 ms
/// apart, so an unreachable server fails within a second or two) and no environment.
pub fn s3_options(endpoint: &str, access_key: &str, secret_key: &str) -> StoreOptions {
    StoreOptions {
        provider_options: provider_options(&[
            ("aws_endpoint", endpoint),
            ("aws_access_key_id", access_key),
            ("aws_secret_access_key", secret_key),
            ("aws_region", REGION),
            ("aws_allow_http", "true"),
        ]),
        ..hermetic_options()
    }
}

/// Short retries and timeouts, no environment, no provider options yet.
pub(crate) fn hermetic_options() -> StoreOptions {
    StoreOptions {
        use_env: false,
        max_retries: 2,
        retry_timeout: Duration::from_secs(5),
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(50),
        connect_timeout: Duration::from_secs(2),
        read_timeout: Duration::from_secs(30),
        ..StoreOptions::default()
    }
}

pub(crate) fn provider_options(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local addr").port()
}

/// All files under `dir` (recursively), as sorted paths relative to `dir`; empty if `dir`
/// does not exist.
pub fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(rel) = path.strip_prefix(dir) {
                out.push(rel.to_string_lossy().into_owned());
            }
        }
    }
    out.sort();
    out
}

/// `n` bytes from the OS RNG (incompressible test data).
pub fn random_bytes(n: usize) -> Vec<u8> {
    use rand_core::RngCore;
    let mut data = vec![0u8; n];
    rand_core::OsRng.fill_bytes(&mut data);
    data
}

/// A storage server child process on a loopback port, serving its own data directory;
/// killed on drop.
#[derive(Debug)]
pub(crate) struct ServerProcess {
    pub(crate) port: u16,
    pub(crate) data: TempDir,
    child: Child,
}

impl ServerProcess {
    /// Spawns `command` (output discarded) and waits until `port` accepts connections.
    pub(crate) fn start(name: &str, mut command: Command, port: u16, data: TempDir) -> Self {
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name} ({command:?}): {e}"));
        let mut process = ServerProcess { port, data, child };
        process.wait_until_listening(name);
        process
    }

    pub(crate) fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Panics if the child exits first or is not up within [`START_TIMEOUT`].
    fn wait_until_listening(&mut self, name: &str) {
        let deadline = Instant::now() + START_TIMEOUT;
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "{name} exited before listening on port {}: {status}",
                    self.port
                );
            }
            assert!(
                Instant::now() < deadline,
                "{name} did not listen on port {} within {START_TIMEOUT:?}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A fresh temporary directory holding an empty sub-directory [`BUCKET`].
pub(crate) fn data_dir_with_bucket() -> TempDir {
    let data = TempDir::new().expect("temp dir for a storage server");
    std::fs::create_dir(data.path().join(BUCKET)).expect("create bucket directory");
    data
}

/// Where `scripts/setup` installs the emulators that do not come from cargo: the
/// workspace's `.tools/` directory.
#[cfg(feature = "azure")]
pub(crate) fn tool(relative: &str, name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../.tools")
        .join(relative);
    assert!(
        path.exists(),
        "{name} is not installed at {}: run scripts/setup",
        path.display()
    );
    path
}

/// `s3s-fs` from `PATH` or `~/.cargo/bin`, where `scripts/setup` installs it.
fn s3s_fs_binary() -> PathBuf {
    let cargo_bin = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo/bin"));
    find_program("s3s-fs", std::env::var_os("PATH"), cargo_bin).unwrap_or_else(|| {
        panic!(
            "s3s-fs (the S3-protocol test server) is not installed: run scripts/setup \
             (it runs `cargo install --locked s3s-fs@0.14.1 --features binary`)"
        )
    })
}

/// The first file called `name` in the directories of `path` (a `PATH`-style list), then
/// in `fallback`.
fn find_program(name: &str, path: Option<OsString>, fallback: Option<PathBuf>) -> Option<PathBuf> {
    let dirs: Vec<PathBuf> = path
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.into_iter()
        .chain(fallback)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_are_found_on_path_then_fallback_or_not_at_all() {
        let (a, b) = (TempDir::new().unwrap(), TempDir::new().unwrap());
        std::fs::write(b.path().join("tool"), b"").unwrap();
        let path = std::env::join_paths([a.path(), b.path()]).unwrap();
        assert_eq!(
            find_program("tool", Some(path.clone()), None),
            Some(b.path().join("tool"))
        );
        let only_a = std::env::join_paths([a.path()]).unwrap();
        assert_eq!(
            find_program("tool", Some(only_a.clone()), Some(b.path().into())),
            Some(b.path().join("tool"))
        );
        assert_eq!(find_program("tool", Some(only_a), None), None);
        assert_eq!(find_program("missing", Some(path), None), None);
    }
}
