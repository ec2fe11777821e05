//! Depth-first walk of a directory tree without following symlinks, siblings sorted by name
//! bytes, so the output order is the archive's canonical order.

use std::ffi::OsString;
use std::fs::{self, Metadata};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::ArchiveError;
use crate::format::MAX_PATH_LEN;

/// One filesystem object below the root.
#[derive(Debug)]
pub(crate) struct Node {
    /// Path relative to the root, '/'-separated bytes.
    pub rel: Vec<u8>,
    pub full: PathBuf,
    pub meta: Metadata,
}

struct Frame {
    rel: Vec<u8>,
    full: PathBuf,
    /// Remaining children, sorted descending so `pop` yields them in ascending order.
    names: Vec<OsString>,
}

pub(crate) struct Walker {
    stack: Vec<Frame>,
    /// Entries listed but gone before they could be looked at (deleted during the walk).
    pub vanished: u64,
}

impl Walker {
    pub fn new(root: &Path) -> Result<Self, ArchiveError> {
        let meta = fs::symlink_metadata(root).map_err(ArchiveError::io(root))?;
        if !meta.is_dir() {
            return Err(ArchiveError::NotADirectory(root.to_path_buf()));
        }
        let frame = Frame {
            rel: Vec::new(),
            full: root.to_path_buf(),
            names: list(root)?,
        };
        Ok(Walker {
            stack: vec![frame],
            vanished: 0,
        })
    }

    /// The next node in depth-first order; directories are descended into after being returned.
    pub fn next_node(&mut self) -> Result<Option<Node>, ArchiveError> {
        loop {
            let Some(frame) = self.stack.last_mut() else {
                return Ok(None);
            };
            let Some(name) = frame.names.pop() else {
                self.stack.pop();
                continue;
            };
            let full = frame.full.join(&name);
            let mut rel = frame.rel.clone();
            if !rel.is_empty() {
                rel.push(b'/');
            }
            rel.extend_from_slice(name.as_bytes());
            if rel.len() > MAX_PATH_LEN {
                return Err(ArchiveError::PathTooLong(full));
            }
            let meta = match fs::symlink_metadata(&full) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    self.vanished += 1;
                    continue;
                }
                other => other.map_err(ArchiveError::io(&full))?,
            };
            if meta.is_dir() {
                let names = match list(&full) {
                    Err(ArchiveError::Io { source, .. })
                        if source.kind() == std::io::ErrorKind::NotFound =>
                    {
                        self.vanished += 1;
                        continue;
                    }
                    other => other?,
                };
                self.stack.push(Frame {
                    rel: rel.clone(),
                    full: full.clone(),
                    names,
                });
            }
            return Ok(Some(Node { rel, full, meta }));
        }
    }
}

fn list(dir: &Path) -> Result<Vec<OsString>, ArchiveError> {
    let mut names = fs::read_dir(dir)
        .and_then(|entries| {
            entries
                .map(|e| e.map(|e| e.file_name()))
                .collect::<Result<Vec<_>, _>>()
        })
        .map_err(ArchiveError::io(dir))?;
    names.sort_unstable_by(|a, b| b.as_bytes().cmp(a.as_bytes()));
    Ok(names)
}
