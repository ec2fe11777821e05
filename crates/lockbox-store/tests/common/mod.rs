//! Test harness: a real S3-protocol server (s3s-fs) on loopback, one per test.

#![allow(dead_code)] // each test binary uses a different subset

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lockbox_store::{Store, StoreOptions};
use tempfile::TempDir;

pub const ACCESS_KEY: &str = "lockbox-test-ak";
pub const SECRET_KEY: &str = "lockbox-test-sk-0123456789";
pub const BUCKET: &str = "backups";

/// An `s3s-fs` process serving a fresh data directory with bucket [`BUCKET`]; killed on drop.
pub struct S3Server {
    child: Child,
    pub port: u16,
    pub data: TempDir,
}

impl S3Server {
    pub fn start() -> S3Server {
        let binary = s3s_fs_binary();
        let data = TempDir::new().expect("temp dir for s3s-fs");
        std::fs::create_dir(data.path().join(BUCKET)).expect("create bucket directory");
        let port = free_port();
        let child = Command::new(&binary)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
            .arg(data.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", binary.display()));
        let mut server = S3Server { child, port, data };
        server.wait_until_listening();
        server
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Store options pointing at this server, ignoring the process environment.
    pub fn options(&self) -> StoreOptions {
        options_for(&self.endpoint(), ACCESS_KEY, SECRET_KEY)
    }

    pub fn store(&self, prefix: &str) -> Store {
        self.store_with(prefix, self.options())
    }

    pub fn store_with(&self, prefix: &str, options: StoreOptions) -> Store {
        Store::open_with(&format!("s3://{BUCKET}/{prefix}"), options).expect("open s3 store")
    }

    /// Files under the bucket directory, relative paths, sorted (s3s-fs keeps objects as files).
    pub fn bucket_files(&self) -> Vec<String> {
        files_under(&self.data.path().join(BUCKET))
    }

    fn wait_until_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "s3s-fs exited before listening on port {}: {status}",
                    self.port
                );
            }
            assert!(
                Instant::now() < deadline,
                "s3s-fs did not listen on port {} within 20 s",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Options for an S3 endpoint with explicit credentials, short retries, no environment.
pub fn options_for(endpoint: &str, access_key: &str, secret_key: &str) -> StoreOptions {
    StoreOptions {
        use_env: false,
        max_retries: 2,
        retry_timeout: Duration::from_secs(5),
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(50),
        connect_timeout: Duration::from_secs(2),
        read_timeout: Duration::from_secs(30),
        provider_options: [
            ("aws_endpoint", endpoint),
            ("aws_access_key_id", access_key),
            ("aws_secret_access_key", secret_key),
            ("aws_region", "us-east-1"),
            ("aws_allow_http", "true"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect(),
        ..StoreOptions::default()
    }
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local addr").port()
}

fn s3s_fs_binary() -> PathBuf {
    let mut candidates: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("s3s-fs"))
                .collect()
        })
        .unwrap_or_default();
    if let Some(home) = std::env::var_os("HOME") {
        candidates.push(PathBuf::from(home).join(".cargo/bin/s3s-fs"));
    }
    candidates
        .into_iter()
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "s3s-fs (the S3-protocol test server) is not installed: run scripts/setup \
             (it runs `cargo install --locked s3s-fs@0.14.1 --features binary`)"
            )
        })
}

/// All files under `dir` (recursively), as sorted paths relative to `dir`.
pub fn files_under(dir: &std::path::Path) -> Vec<String> {
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

/// `n` bytes from the OS RNG.
pub fn random_bytes(n: usize) -> Vec<u8> {
    use rand_core::RngCore;
    let mut data = vec![0u8; n];
    rand_core::OsRng.fill_bytes(&mut data);
    data
}
