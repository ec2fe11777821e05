//! Index objects: which pack holds each chunk, sealed so the storage learns nothing from them.
//!
//! ```text
//! index = "LBXINDX\0" | version 1 | index_id[32] | AES-256-GCM(index key, nonce 0, aad = prefix)
//!         of  packs u32 | (pack_id[32] | pack_len u32 | blobs u32 | entry*)*
//! ```
//! Every backup writes one index for the packs it uploaded, after they landed. The in-memory
//! [`Index`] is the union of all index objects.

use std::collections::HashMap;

use lockbox_crypto::{CryptoRng, RepoKeys, RngCore};

use crate::RepoError;
use crate::ids::{ChunkId, IndexId, PackId};
use crate::pack::{BlobEntry, ENTRY_LEN};
use crate::wire::{Cursor, nonce, open, seal_into};

const INDEX_MAGIC: [u8; 8] = *b"LBXINDX\0";
const INDEX_VERSION: u8 = 1;
const PREFIX_LEN: usize = 8 + 1 + 32;
/// No index object is larger (about 20 million chunks, several TiB of new data in one backup):
/// a larger object under `index/` is refused unread.
pub(crate) const MAX_INDEX_LEN: u64 = 1 << 30;

/// Where a chunk is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    pub pack: PackId,
    pub blob: BlobEntry,
}

/// One pack as an index lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexedPack {
    pub id: PackId,
    /// Bytes of the whole pack object.
    pub len: u32,
    pub blobs: Vec<BlobEntry>,
}

/// Every known chunk, by id.
#[derive(Debug, Default)]
pub struct Index {
    chunks: HashMap<ChunkId, Location>,
    packs: HashMap<PackId, IndexedPack>,
}

impl Index {
    pub fn get(&self, id: &ChunkId) -> Option<&Location> {
        self.chunks.get(id)
    }

    pub fn contains(&self, id: &ChunkId) -> bool {
        self.chunks.contains_key(id)
    }

    pub fn len(&self) -> usize {
        self.chunks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    /// Every pack the index names, with its blobs.
    pub fn packs(&self) -> impl Iterator<Item = &IndexedPack> {
        self.packs.values()
    }

    /// Adds one pack. A chunk already known keeps its first location; a pack listed twice (by
    /// two index objects) keeps its first listing.
    pub(crate) fn add_pack(&mut self, pack: &IndexedPack) {
        for blob in &pack.blobs {
            self.chunks.entry(blob.id).or_insert(Location {
                pack: pack.id,
                blob: *blob,
            });
        }
        self.packs.entry(pack.id).or_insert_with(|| pack.clone());
    }

    /// Adds every pack of a decoded index object.
    pub(crate) fn merge(&mut self, packs: &[IndexedPack]) {
        for pack in packs {
            self.add_pack(pack);
        }
    }
}

/// The object name of an index.
pub(crate) fn index_object(id: &IndexId) -> String {
    format!("index/{}", id.hex())
}

fn prefix(id: &IndexId) -> [u8; PREFIX_LEN] {
    let mut p = [0u8; PREFIX_LEN];
    p[..8].copy_from_slice(&INDEX_MAGIC);
    p[8] = INDEX_VERSION;
    p[9..].copy_from_slice(&id.0);
    p
}

/// Seals an index object for `packs`; returns its id and bytes.
pub(crate) fn encode_index<R: RngCore + CryptoRng>(
    keys: &RepoKeys,
    packs: &[IndexedPack],
    rng: &mut R,
) -> (IndexId, Vec<u8>) {
    let id = IndexId::generate(rng);
    let blobs: usize = packs.iter().map(|p| p.blobs.len()).sum();
    let mut body = Vec::with_capacity(4 + packs.len() * 40 + blobs * ENTRY_LEN);
    body.extend_from_slice(&(packs.len() as u32).to_be_bytes());
    for pack in packs {
        body.extend_from_slice(&pack.id.0);
        body.extend_from_slice(&pack.len.to_be_bytes());
        body.extend_from_slice(&(pack.blobs.len() as u32).to_be_bytes());
        for e in &pack.blobs {
            e.encode(&mut body);
        }
    }
    let p = prefix(&id);
    let mut out = Vec::with_capacity(PREFIX_LEN + body.len() + 16);
    out.extend_from_slice(&p);
    seal_into(&keys.index_key(&id.0), nonce(0, 0), &p, &body, &mut out);
    (id, out)
}

/// Opens the index object `id`.
pub(crate) fn decode_index(
    keys: &RepoKeys,
    id: &IndexId,
    bytes: &[u8],
) -> Result<Vec<IndexedPack>, RepoError> {
    let object = index_object(id);
    let corrupt = |what: &str| RepoError::corrupt(&object, what);
    if bytes.len() < PREFIX_LEN || bytes[..8] != INDEX_MAGIC {
        return Err(corrupt("not an index (bad magic or truncated)"));
    }
    if bytes[9..PREFIX_LEN] != id.0 {
        return Err(corrupt("holds another index's id: renamed or swapped"));
    }
    let body = open(
        &keys.index_key(&id.0),
        nonce(0, 0),
        &bytes[..PREFIX_LEN],
        &bytes[PREFIX_LEN..],
    )
    .ok_or_else(|| corrupt("does not authenticate: altered, truncated or another key's"))?;
    // Only after authentication: a flipped version byte is damage, not a newer lockbox.
    if bytes[8] != INDEX_VERSION {
        return Err(RepoError::UnsupportedVersion {
            object,
            version: bytes[8],
        });
    }
    parse_body(&body).ok_or_else(|| corrupt("authenticated but does not parse"))
}

pub(crate) fn parse_body(body: &[u8]) -> Option<Vec<IndexedPack>> {
    let mut c = Cursor::new(body);
    let packs = c.u32().ok()? as usize;
    let mut out = Vec::with_capacity(packs.min(body.len() / 40));
    for _ in 0..packs {
        let id = PackId(c.array().ok()?);
        let len = c.u32().ok()?;
        let n = c.u32().ok()? as usize;
        let mut blobs = Vec::with_capacity(n.min(body.len() / ENTRY_LEN));
        for _ in 0..n {
            let blob = BlobEntry::decode(&mut c)?;
            if blob.range().end > u64::from(len) {
                return None;
            }
            blobs.push(blob);
        }
        out.push(IndexedPack { id, len, blobs });
    }
    c.is_empty().then_some(out)
}
