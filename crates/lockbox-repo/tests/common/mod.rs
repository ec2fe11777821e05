//! Helpers for the repository's tests: trees to back up, tree comparison, a repository in a
//! local folder, and a deterministic generator of chat-like data.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use lockbox_crypto::BackupKey;
use lockbox_repo::{Backup, CatalogMark, DeviceId, Purpose, RepoError, Repository, Sizes};
use lockbox_store::Store;
use tokio::runtime::Runtime;

pub fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Small chunks and packs, so a test of a few MiB has many of both.
pub fn small() -> Sizes {
    Sizes {
        chunk_min: 4 << 10,
        chunk_avg: 16 << 10,
        chunk_max: 64 << 10,
        pack_target: 256 << 10,
    }
}

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub rt: Runtime,
    pub key: BackupKey,
    pub device: DeviceId,
}

impl Fixture {
    pub fn new() -> Self {
        Fixture {
            dir: tempfile::tempdir().unwrap(),
            rt: runtime(),
            key: BackupKey::from_bytes([7; 32]),
            device: DeviceId([1; 16]),
        }
    }

    pub fn folder(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn store(&self, name: &str) -> Store {
        Store::open(&format!("file://{}", self.folder(name).display())).unwrap()
    }

    pub fn init(&self, name: &str, sizes: Sizes) -> Repository {
        Repository::init(self.store(name), self.rt.handle().clone(), &self.key, sizes).unwrap()
    }

    pub fn open(&self, name: &str) -> Repository {
        Repository::open(self.store(name), self.rt.handle().clone(), &self.key).unwrap()
    }
}

/// xorshift bytes: deterministic, incompressible.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
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

/// Chat-like text: compressible, but not one repeated line.
pub fn messages(seed: u64, count: usize) -> Vec<u8> {
    let words = [
        "hi",
        "see you",
        "ok",
        "lunch?",
        "running late",
        "😀",
        "photo",
        "call me",
    ];
    let mut out = Vec::new();
    let mut x = seed | 1;
    for i in 0..count {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let w = words[(x % words.len() as u64) as usize];
        out.extend_from_slice(format!("{i:08}|{:016x}|{w}\n", x).as_bytes());
    }
    out
}

/// Kind, content (or target), mode and mtime of every object below `root`.
pub fn tree(root: &Path) -> BTreeMap<Vec<u8>, (String, Vec<u8>, u32, i64)> {
    let mut out = BTreeMap::new();
    collect(root, root, &mut out);
    out
}

fn collect(root: &Path, dir: &Path, out: &mut BTreeMap<Vec<u8>, (String, Vec<u8>, u32, i64)>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let meta = fs::symlink_metadata(&path).unwrap();
        let rel = path
            .strip_prefix(root)
            .unwrap()
            .as_os_str()
            .as_bytes()
            .to_vec();
        let mode = meta.permissions().mode() & 0o7777;
        let value = if meta.is_symlink() {
            let target = fs::read_link(&path).unwrap();
            (
                "link".into(),
                target.as_os_str().as_bytes().to_vec(),
                0,
                meta.mtime(),
            )
        } else if meta.is_dir() {
            collect(root, &path, out);
            ("dir".into(), Vec::new(), mode, meta.mtime())
        } else {
            ("file".into(), fs::read(&path).unwrap(), mode, meta.mtime())
        };
        out.insert(rel, value);
    }
}

/// Bytes of every file below `dir`.
pub fn stored_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let m = e.metadata().unwrap();
            if m.is_dir() {
                stack.push(e.path());
            } else {
                total += m.len();
            }
        }
    }
    total
}

/// Files below `dir` whose relative path starts with `prefix`, sorted.
pub fn objects(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for e in entries {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p
                .strip_prefix(dir)
                .unwrap()
                .to_string_lossy()
                .starts_with(prefix)
            {
                found.push(p);
            }
        }
    }
    found.sort();
    found
}

/// A backup under the repository's lock, taken (over a stale one of the same device) and
/// released around it.
pub trait BackupAs {
    fn backup_as(
        &self,
        root: &Path,
        device: DeviceId,
        mark: Option<&CatalogMark>,
        now_unix_ms: u64,
        progress: &mut dyn FnMut(u64),
    ) -> Result<Backup, RepoError>;
}

impl BackupAs for Repository {
    fn backup_as(
        &self,
        root: &Path,
        device: DeviceId,
        mark: Option<&CatalogMark>,
        now_unix_ms: u64,
        progress: &mut dyn FnMut(u64),
    ) -> Result<Backup, RepoError> {
        let lock = self.lock(device, Purpose::Backup, true)?;
        let done = self.backup(&lock, root, mark, now_unix_ms, None, progress);
        lock.release()?;
        done
    }
}

/// A big photo and a small note that share packs, backed up once (snapshot time 1); returns
/// the source directory.
pub fn photo_and_note(f: &Fixture, repo: &Repository) -> PathBuf {
    let src = f.folder("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a.jpg"), noise(1, 230_000)).unwrap();
    fs::write(src.join("note.jpg"), noise(2, 40_000)).unwrap();
    repo.backup_as(&src, f.device, None, 1, &mut |_| {})
        .unwrap();
    src
}
