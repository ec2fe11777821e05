//! Shared test helpers: tree building/comparison and an independent encoder of the wire format
//! (written from docs/archive.md, not from the crate's writer) for hand-crafted archives.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs::{self, File, FileTimes};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use lockbox_archive::{ArchiveStats, WriteOptions, write_dir};

/// Archive `root` into memory.
pub fn archive(root: &Path, opts: &WriteOptions) -> (Vec<u8>, ArchiveStats) {
    write_dir(root, Vec::new(), opts, &mut |_| {}).expect("write_dir")
}

pub fn set_mtime(path: &Path, secs: u64, nanos: u32) {
    let t = UNIX_EPOCH + Duration::new(secs, nanos);
    File::open(path)
        .unwrap()
        .set_times(FileTimes::new().set_modified(t))
        .unwrap();
}

pub fn set_mode(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// What we compare for each object: kind, content or target, permission bits, mtime.
#[derive(Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub kind: &'static str,
    pub content: Vec<u8>,
    pub mode: u32,
    pub mtime: (i64, i64),
}

/// Every object below `root` (not `root` itself), keyed by relative path.
pub fn snapshot(root: &Path) -> BTreeMap<Vec<u8>, Snapshot> {
    let mut out = BTreeMap::new();
    collect(root, root, &mut out);
    out
}

fn collect(root: &Path, dir: &Path, out: &mut BTreeMap<Vec<u8>, Snapshot>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let meta = fs::symlink_metadata(&path).unwrap();
        let rel = path
            .strip_prefix(root)
            .unwrap()
            .as_os_str()
            .as_bytes()
            .to_vec();
        let mtime = (meta.mtime(), meta.mtime_nsec());
        let (kind, content, mode) = if meta.is_symlink() {
            (
                "symlink",
                fs::read_link(&path)
                    .unwrap()
                    .as_os_str()
                    .as_bytes()
                    .to_vec(),
                0,
            )
        } else if meta.is_dir() {
            collect(root, &path, out);
            ("dir", Vec::new(), meta.mode() & 0o7777)
        } else {
            ("file", fs::read(&path).unwrap(), meta.mode() & 0o7777)
        };
        out.insert(
            rel,
            Snapshot {
                kind,
                content,
                mode,
                mtime,
            },
        );
    }
}

/// Names in `dir`, sorted.
pub fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into())
        .collect();
    v.sort();
    v
}

/// Independent encoder of archive format version 1.
#[derive(Default)]
pub struct Crafted(pub Vec<u8>);

impl Crafted {
    pub fn new() -> Self {
        let mut c = Crafted(b"LBXARCH\0".to_vec());
        c.0.push(1);
        c
    }

    fn common(&mut self, tag: u8, path: &[u8], mode: u32) -> &mut Self {
        self.0.push(tag);
        self.0.extend_from_slice(&(path.len() as u16).to_be_bytes());
        self.0.extend_from_slice(path);
        self.0.extend_from_slice(&mode.to_be_bytes());
        self.0.extend_from_slice(&1_600_000_000i64.to_be_bytes());
        self.0.extend_from_slice(&0u32.to_be_bytes());
        self
    }

    pub fn dir(&mut self, path: &[u8]) -> &mut Self {
        self.common(1, path, 0o755)
    }

    /// File header declaring `size`; follow with `raw`/`zstd` blocks and `data_end`.
    pub fn file_header(&mut self, path: &[u8], size: u64) -> &mut Self {
        self.common(2, path, 0o644);
        self.0.extend_from_slice(&size.to_be_bytes());
        self
    }

    pub fn raw(&mut self, data: &[u8]) -> &mut Self {
        self.raw_claiming(data.len() as u32, data)
    }

    pub fn raw_claiming(&mut self, len: u32, data: &[u8]) -> &mut Self {
        self.0.push(1);
        self.0.extend_from_slice(&len.to_be_bytes());
        self.0.extend_from_slice(data);
        self
    }

    pub fn zstd(&mut self, raw_len: u32, compressed: &[u8]) -> &mut Self {
        self.0.push(2);
        self.0.extend_from_slice(&raw_len.to_be_bytes());
        self.0
            .extend_from_slice(&(compressed.len() as u32).to_be_bytes());
        self.0.extend_from_slice(compressed);
        self
    }

    pub fn data_end(&mut self) -> &mut Self {
        self.0.push(0);
        self
    }

    /// A complete small file.
    pub fn file(&mut self, path: &[u8], data: &[u8]) -> &mut Self {
        self.file_header(path, data.len() as u64);
        if !data.is_empty() {
            self.raw(data);
        }
        self.data_end()
    }

    pub fn symlink(&mut self, path: &[u8], target: &[u8]) -> &mut Self {
        self.common(3, path, 0o777);
        self.0
            .extend_from_slice(&(target.len() as u16).to_be_bytes());
        self.0.extend_from_slice(target);
        self
    }

    pub fn end(&mut self) -> Vec<u8> {
        self.0.push(0xFF);
        self.0.clone()
    }
}
