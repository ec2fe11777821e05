//! The repository's config object: its id, chunker and pack sizes, and a key-check value, under
//! a MAC. The one object read before anything else.
//!
//! ```text
//! config = "LBXREPO\0" | version u8 | repo_id[32] | chunk_min u32 | chunk_avg u32 | chunk_max u32
//!          | pack_target u32 | key_check[16] | HMAC-SHA256(config key, all before)
//! ```
//!
//! The version says how chunks are named and cut ([`Layout`]): 1 is HMAC-SHA256 ids, 2 keyed
//! BLAKE3, both cutting every file by content; 3 is keyed BLAKE3 with dense files (media)
//! cut at the largest chunk size. All open; a new repository is version 3.

use lockbox_crypto::{BackupKey, KEY_CHECK_LEN, RepoKeys};
use subtle::ConstantTimeEq;

use crate::RepoError;
use crate::ids::{ChunkIds, RepoId};
use crate::wire::{Cursor, MAC_LEN, mac, verify_mac};

const CONFIG_MAGIC: [u8; 8] = *b"LBXREPO\0";
pub(crate) const CONFIG_OBJECT: &str = "config";
/// Longer than any config: a larger object named `config` is refused unread.
pub(crate) const MAX_CONFIG_LEN: u64 = 4096;
const BODY_LEN: usize = 8 + 1 + 32 + 4 * 4 + KEY_CHECK_LEN;

/// Content-defined chunking and packing parameters (fixed when the repository is created, so
/// that the same data always cuts the same way).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sizes {
    pub chunk_min: u32,
    pub chunk_avg: u32,
    pub chunk_max: u32,
    /// A pack is sealed and uploaded once it holds this many bytes.
    pub pack_target: u32,
}

impl Default for Sizes {
    /// 64 KiB / 256 KiB / 1 MiB chunks and 8 MiB packs: see docs/repository.md for why.
    fn default() -> Self {
        Sizes {
            chunk_min: 64 << 10,
            chunk_avg: 256 << 10,
            chunk_max: 1 << 20,
            pack_target: 8 << 20,
        }
    }
}

impl Sizes {
    /// Small chunks and packs, so a test of a few MiB has many of both (the integration tests'
    /// `common::small` is the same).
    #[cfg(test)]
    pub(crate) const SMALL: Sizes = Sizes {
        chunk_min: 4 << 10,
        chunk_avg: 16 << 10,
        chunk_max: 64 << 10,
        pack_target: 256 << 10,
    };

    /// Within fastcdc's limits, even, ordered, chunks within a tree's bound, packs of at most
    /// 256 MiB.
    pub fn is_valid(&self) -> bool {
        use fastcdc::v2020::{
            AVERAGE_MAX, AVERAGE_MIN, MAXIMUM_MAX, MAXIMUM_MIN, MINIMUM_MAX, MINIMUM_MIN,
        };
        let (min, avg, max) = (
            self.chunk_min as usize,
            self.chunk_avg as usize,
            self.chunk_max as usize,
        );
        (MINIMUM_MIN..=MINIMUM_MAX).contains(&min)
            && (AVERAGE_MIN..=AVERAGE_MAX).contains(&avg)
            && (MAXIMUM_MIN..=MAXIMUM_MAX).contains(&max)
            && min <= avg
            && avg <= max
            && [min, avg, max].iter().all(|v| v % 2 == 0)
            && max <= lockbox_archive::MAX_CHUNK_SIZE
            && (1 << 16..=256 << 20).contains(&self.pack_target)
    }
}

/// A verified config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub repo_id: RepoId,
    pub sizes: Sizes,
    pub layout: Layout,
}

/// How a repository names and cuts its chunks, fixed by its config's version so that the same
/// file always yields the same chunks in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Version 1: HMAC-SHA256 ids; every file cut by content.
    HmacSha256,
    /// Version 2: keyed BLAKE3 ids; every file cut by content.
    Blake3,
    /// Version 3, what a new repository uses: keyed BLAKE3 ids; a dense file (a known media
    /// or archive extension, or random-looking bytes at its start) cut at the largest chunk
    /// size, every other file by content.
    Blake3DenseFixed,
}

impl Layout {
    /// What a new repository uses.
    pub const NEW: Layout = Layout::Blake3DenseFixed;

    pub fn chunk_ids(self) -> ChunkIds {
        match self {
            Layout::HmacSha256 => ChunkIds::HmacSha256,
            Layout::Blake3 | Layout::Blake3DenseFixed => ChunkIds::Blake3,
        }
    }

    /// Whether dense files are cut at a fixed size rather than by content.
    pub fn dense_fixed(self) -> bool {
        self == Layout::Blake3DenseFixed
    }

    fn version(self) -> u8 {
        match self {
            Layout::HmacSha256 => 1,
            Layout::Blake3 => 2,
            Layout::Blake3DenseFixed => 3,
        }
    }

    fn of_version(version: u8) -> Option<Self> {
        [Layout::HmacSha256, Layout::Blake3, Layout::Blake3DenseFixed]
            .into_iter()
            .find(|layout| layout.version() == version)
    }
}

impl Config {
    pub(crate) fn encode(&self, keys: &RepoKeys) -> Vec<u8> {
        let mut out = Vec::with_capacity(BODY_LEN + MAC_LEN);
        out.extend_from_slice(&CONFIG_MAGIC);
        out.push(self.layout.version());
        out.extend_from_slice(&self.repo_id.0);
        for v in [
            self.sizes.chunk_min,
            self.sizes.chunk_avg,
            self.sizes.chunk_max,
            self.sizes.pack_target,
        ] {
            out.extend_from_slice(&v.to_be_bytes());
        }
        out.extend_from_slice(&keys.key_check);
        let tag = mac(&keys.config_mac, &[&out]);
        out.extend_from_slice(&tag);
        out
    }

    /// Whether the config authenticates once this key's key-check value is put back: then the
    /// key is right and only those bytes were damaged.
    fn only_check_damaged(keys: &RepoKeys, bytes: &[u8]) -> bool {
        let mut body = bytes[..BODY_LEN].to_vec();
        body[BODY_LEN - KEY_CHECK_LEN..].copy_from_slice(&keys.key_check);
        verify_mac(&keys.config_mac, &[&body], &bytes[BODY_LEN..])
    }

    /// Parses and authenticates a config object; returns it with its keys. With `expected`, a
    /// config of another repository is refused before any key is tried.
    pub(crate) fn decode(
        key: &BackupKey,
        url: &str,
        bytes: &[u8],
        expected: Option<RepoId>,
    ) -> Result<(Config, RepoKeys), RepoError> {
        let corrupt = |what: &str| RepoError::corrupt(format!("{url}: config"), what);
        if bytes.len() < 9 || bytes[..8] != CONFIG_MAGIC {
            return Err(corrupt("not a lockbox repository config (bad magic)"));
        }
        if bytes.len() != BODY_LEN + MAC_LEN {
            return Err(corrupt("wrong length: truncated or altered"));
        }
        let mut c = Cursor::new(&bytes[9..]);
        let field = |r: Result<u32, _>| r.map_err(|_| corrupt("truncated"));
        let repo_id = RepoId(c.array().map_err(|_| corrupt("truncated"))?);
        if let Some(expected) = expected
            && expected != repo_id
        {
            return Err(RepoError::Replaced {
                url: url.to_owned(),
                expected,
                found: repo_id,
            });
        }
        let sizes = Sizes {
            chunk_min: field(c.u32())?,
            chunk_avg: field(c.u32())?,
            chunk_max: field(c.u32())?,
            pack_target: field(c.u32())?,
        };
        let check: [u8; KEY_CHECK_LEN] = c.array().map_err(|_| corrupt("truncated"))?;
        let keys = key.repo_keys(&repo_id.0);
        let mac_ok = verify_mac(&keys.config_mac, &[&bytes[..BODY_LEN]], &bytes[BODY_LEN..]);
        let check_ok: bool = check.ct_eq(&keys.key_check).into();
        match (check_ok, mac_ok) {
            (true, true) => {}
            // The repository a device backed up to opened with its key before: a config of its
            // id that does not now is an altered or replaced one, not a wrong key.
            (false, false) if expected.is_some() => {
                return Err(corrupt(
                    "it does not open with the key this device backed up under: altered or replaced",
                ));
            }
            (false, false) if !Self::only_check_damaged(&keys, bytes) => {
                return Err(RepoError::WrongKey {
                    url: url.to_owned(),
                });
            }
            _ => return Err(corrupt("its MAC does not match: altered")),
        }
        // Only after authentication: a flipped version byte is damage, not a newer lockbox.
        let layout = Layout::of_version(bytes[8]).ok_or_else(|| RepoError::UnsupportedVersion {
            object: format!("{url}: config"),
            version: bytes[8],
        })?;
        if !sizes.is_valid() {
            return Err(corrupt("authenticated but its sizes are out of range"));
        }
        Ok((
            Config {
                repo_id,
                sizes,
                layout,
            },
            keys,
        ))
    }
}
