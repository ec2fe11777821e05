//! Pack objects: many sealed chunks (blobs) in one object, so object stores see few, large
//! objects. Format in docs/repository.md.
//!
//! ```text
//! pack   = "LBXPACK\0" | version 1 | pack_id[32] | blob* | sealed header | header_len u32
//! blob   = AES-256-GCM(pack key, nonce = 0 | 0 0 0 | offset u64, aad = chunk_id | flags | raw_len)
//! header = AES-256-GCM(pack key, nonce = 1 | 0 0 0 | offset u64, aad = the 41 prefix bytes)
//!          of count u32 | entry*          (entry: see `BlobEntry`)
//! ```
//! The pack key is derived from the pack id, so each key seals one pack, and every offset in
//! it is a distinct nonce.

use lockbox_crypto::{CryptoRng, RepoKeys, RngCore, Secret32};

use crate::RepoError;
use crate::ids::{ChunkId, PackId};
use crate::wire::{Cursor, TAG_LEN, nonce, open, seal_into};

pub(crate) const PACK_MAGIC: [u8; 8] = *b"LBXPACK\0";
pub(crate) const PACK_VERSION: u8 = 1;
/// Magic, version and pack id.
pub(crate) const PACK_PREFIX_LEN: usize = 8 + 1 + 32;
/// Bytes of one encoded [`BlobEntry`].
pub(crate) const ENTRY_LEN: usize = 32 + 1 + 4 + 4 + 4;
const FLAG_ZSTD: u8 = 1;
const NONCE_BLOB: u8 = 0;
const NONCE_HEADER: u8 = 1;

/// Where one chunk lies in its pack and how it is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobEntry {
    pub id: ChunkId,
    pub compressed: bool,
    /// Bytes of the chunk itself.
    pub raw_len: u32,
    /// Offset of the sealed blob in the pack.
    pub offset: u32,
    /// Bytes of the sealed blob, tag included.
    pub sealed_len: u32,
}

impl BlobEntry {
    fn aad(&self) -> [u8; 37] {
        let mut aad = [0u8; 37];
        aad[..32].copy_from_slice(&self.id.0);
        aad[32] = if self.compressed { FLAG_ZSTD } else { 0 };
        aad[33..].copy_from_slice(&self.raw_len.to_be_bytes());
        aad
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.aad());
        out.extend_from_slice(&self.offset.to_be_bytes());
        out.extend_from_slice(&self.sealed_len.to_be_bytes());
    }

    pub(crate) fn decode(c: &mut Cursor<'_>) -> Option<Self> {
        let id = ChunkId(c.array().ok()?);
        let compressed = match c.u8().ok()? {
            0 => false,
            FLAG_ZSTD => true,
            _ => return None,
        };
        let entry = BlobEntry {
            id,
            compressed,
            raw_len: c.u32().ok()?,
            offset: c.u32().ok()?,
            sealed_len: c.u32().ok()?,
        };
        // Writers keep a compressed chunk only if it is smaller, so no blob is sealed in more
        // than its chunk and a tag: a larger claim would only make a restore read (and hold)
        // bytes beyond what its chunk-byte bounds count.
        let sane = entry.sealed_len as usize > TAG_LEN
            && u64::from(entry.sealed_len) <= u64::from(entry.raw_len) + TAG_LEN as u64
            && entry.raw_len > 0
            && entry.raw_len as usize <= lockbox_archive::MAX_CHUNK_SIZE
            && entry.offset as usize >= PACK_PREFIX_LEN;
        sane.then_some(entry)
    }

    /// The byte range of the sealed blob in its pack.
    pub fn range(&self) -> std::ops::Range<u64> {
        let start = u64::from(self.offset);
        start..start + u64::from(self.sealed_len)
    }
}

/// A pack being filled in memory.
pub(crate) struct PackBuilder {
    id: PackId,
    key: Secret32,
    bytes: Vec<u8>,
    entries: Vec<BlobEntry>,
}

impl std::fmt::Debug for PackBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackBuilder")
            .field("id", &self.id)
            .field("len", &self.bytes.len())
            .field("blobs", &self.entries.len())
            .finish_non_exhaustive()
    }
}

/// A finished pack: its bytes and what they hold.
#[derive(Debug)]
pub(crate) struct Pack {
    pub id: PackId,
    pub bytes: Vec<u8>,
    pub entries: Vec<BlobEntry>,
}

impl PackBuilder {
    /// A pack built in `bytes` (cleared first): a buffer an earlier pack used, so a backup
    /// reuses a few pack buffers instead of asking the allocator for one per pack.
    pub fn in_buffer<R: RngCore + CryptoRng>(
        keys: &RepoKeys,
        mut bytes: Vec<u8>,
        rng: &mut R,
    ) -> Self {
        let id = PackId::generate(rng);
        bytes.clear();
        bytes.extend_from_slice(&prefix(&id));
        PackBuilder {
            key: keys.pack_key(&id.0),
            id,
            bytes,
            entries: Vec::new(),
        }
    }

    /// Bytes so far.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Seals `stored` (the chunk, zstd-compressed if `compressed`) as the chunk `id` of
    /// `raw_len` bytes.
    pub fn add(&mut self, id: ChunkId, stored: &[u8], compressed: bool, raw_len: u32) -> BlobEntry {
        let offset = self.bytes.len();
        let mut entry = BlobEntry {
            id,
            compressed,
            raw_len,
            offset: u32::try_from(offset).expect("packs stay far below 4 GiB"),
            sealed_len: 0,
        };
        let nonce = nonce(NONCE_BLOB, offset as u64);
        seal_into(&self.key, nonce, &entry.aad(), stored, &mut self.bytes);
        entry.sealed_len = (self.bytes.len() - offset) as u32;
        self.entries.push(entry);
        entry
    }

    /// Appends the sealed header and its length.
    pub fn finish(mut self) -> Pack {
        let mut header = Vec::with_capacity(4 + self.entries.len() * ENTRY_LEN);
        header.extend_from_slice(&(self.entries.len() as u32).to_be_bytes());
        for e in &self.entries {
            e.encode(&mut header);
        }
        let offset = self.bytes.len();
        let aad = prefix(&self.id);
        let nonce = nonce(NONCE_HEADER, offset as u64);
        seal_into(&self.key, nonce, &aad, &header, &mut self.bytes);
        let sealed_len = (self.bytes.len() - offset) as u32;
        self.bytes.extend_from_slice(&sealed_len.to_be_bytes());
        Pack {
            id: self.id,
            bytes: self.bytes,
            entries: self.entries,
        }
    }
}

fn prefix(id: &PackId) -> [u8; PACK_PREFIX_LEN] {
    let mut p = [0u8; PACK_PREFIX_LEN];
    p[..8].copy_from_slice(&PACK_MAGIC);
    p[8] = PACK_VERSION;
    p[9..].copy_from_slice(&id.0);
    p
}

/// The object name of a pack.
pub(crate) fn pack_object(id: &PackId) -> String {
    let hex = id.hex();
    format!("packs/{}/{hex}", &hex[..2])
}

/// The pack an object name names, if it has exactly a pack's shape.
pub(crate) fn parse_pack_object(name: &str) -> Option<PackId> {
    let (dir, hex) = name.strip_prefix("packs/")?.split_once('/')?;
    let id = PackId::from_hex(hex)?;
    (hex.len() == 64
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        && dir == &hex[..2])
        .then_some(id)
}

/// Opens the blob `entry` of pack `pack` (`sealed` = its bytes at `entry.range()`) and returns
/// the stored bytes (still compressed if `entry.compressed`).
pub(crate) fn open_blob(
    key: &Secret32,
    pack: &PackId,
    entry: &BlobEntry,
    sealed: &[u8],
) -> Result<Vec<u8>, RepoError> {
    let nonce = nonce(NONCE_BLOB, u64::from(entry.offset));
    open(key, nonce, &entry.aad(), sealed).ok_or_else(|| {
        RepoError::corrupt(
            pack_object(pack),
            format!(
                "the blob of chunk {} at offset {} does not authenticate",
                entry.id, entry.offset
            ),
        )
    })
}

/// Reads and authenticates a whole pack's header: what `check` compares against the index.
pub(crate) fn read_pack(
    keys: &RepoKeys,
    id: &PackId,
    bytes: &[u8],
) -> Result<Vec<BlobEntry>, RepoError> {
    let object = pack_object(id);
    let corrupt = |what: &str| RepoError::corrupt(&object, what);
    if bytes.len() < PACK_PREFIX_LEN + TAG_LEN + 8 {
        return Err(corrupt("shorter than an empty pack: truncated"));
    }
    if bytes[..8] != PACK_MAGIC {
        return Err(corrupt("not a pack (bad magic)"));
    }
    if bytes[9..PACK_PREFIX_LEN] != id.0 {
        return Err(corrupt("holds another pack's id: renamed or swapped"));
    }
    let (body, len) = bytes.split_at(bytes.len() - 4);
    let header_len = u32::from_be_bytes(len.try_into().expect("4 bytes")) as usize;
    if header_len > body.len() - PACK_PREFIX_LEN || header_len < TAG_LEN + 4 {
        return Err(corrupt(
            "its header length is out of range: truncated or altered",
        ));
    }
    let offset = body.len() - header_len;
    let key = keys.pack_key(&id.0);
    let header = open(
        &key,
        nonce(NONCE_HEADER, offset as u64),
        &bytes[..PACK_PREFIX_LEN],
        &body[offset..],
    )
    .ok_or_else(|| corrupt("its header does not authenticate: truncated or altered"))?;
    // Only after authentication: a flipped version byte is damage, not a newer lockbox.
    if bytes[8] != PACK_VERSION {
        return Err(RepoError::UnsupportedVersion {
            object,
            version: bytes[8],
        });
    }
    parse_header(&header, offset as u64).map_err(corrupt)
}

/// The entries of an authenticated pack header whose blobs end at `blobs_end`.
pub(crate) fn parse_header(header: &[u8], blobs_end: u64) -> Result<Vec<BlobEntry>, &'static str> {
    let mut c = Cursor::new(header);
    let count = c.u32().map_err(|_| "empty header")? as usize;
    let mut entries = Vec::with_capacity(count.min(header.len() / ENTRY_LEN));
    for _ in 0..count {
        let e = BlobEntry::decode(&mut c).ok_or("a header entry does not parse")?;
        if e.range().end > blobs_end {
            return Err("a header entry points past the blobs");
        }
        entries.push(e);
    }
    if !c.is_empty() {
        return Err("trailing bytes in its header");
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{ChunkIds, ChunkNamer};
    use lockbox_crypto::BackupKey;

    /// An RNG that yields one byte value forever.
    pub(crate) struct Fixed(pub u8);
    impl RngCore for Fixed {
        fn next_u32(&mut self) -> u32 {
            u32::from_ne_bytes([self.0; 4])
        }
        fn next_u64(&mut self) -> u64 {
            u64::from_ne_bytes([self.0; 8])
        }
        fn fill_bytes(&mut self, d: &mut [u8]) {
            d.fill(self.0)
        }
        fn try_fill_bytes(&mut self, d: &mut [u8]) -> Result<(), rand_core::Error> {
            d.fill(self.0);
            Ok(())
        }
    }
    impl CryptoRng for Fixed {}

    fn golden_pack() -> (RepoKeys, Pack) {
        let keys = BackupKey::from_bytes([0x11; 32]).repo_keys(&[0x22; 32]);
        let mut b = PackBuilder::in_buffer(&keys, Vec::new(), &mut Fixed(0x33));
        // The ids of a version 1 repository: the pack format is the same in both versions.
        let namer = ChunkNamer::new(&keys, ChunkIds::HmacSha256);
        b.add(namer.id(b"hello"), b"hello", false, 5);
        b.add(namer.id(b"chat"), b"chat", false, 4);
        (keys, b.finish())
    }

    #[test]
    fn an_entry_sealed_in_more_than_its_chunk_and_a_tag_does_not_parse() {
        let entry = |raw_len: u32, sealed_len: u32| {
            let mut out = Vec::new();
            BlobEntry {
                id: ChunkId([7; 32]),
                compressed: true,
                raw_len,
                offset: PACK_PREFIX_LEN as u32,
                sealed_len,
            }
            .encode(&mut out);
            BlobEntry::decode(&mut Cursor::new(&out))
        };
        let most = 1000 + TAG_LEN as u32;
        assert_eq!(entry(1000, most).map(|e| e.sealed_len), Some(most));
        assert_eq!(entry(1000, most + 1), None);
        assert_eq!(
            entry(5, 64 << 20),
            None,
            "a tiny chunk claiming a huge read"
        );
    }

    #[test]
    fn pack_golden() {
        // Computed independently from docs/repository.md with Python's hmac, hashlib and
        // cryptography (AESGCM) when pinned.
        let (_, pack) = golden_pack();
        assert_eq!(hex::encode(&pack.bytes), GOLDEN_PACK);
    }
    const GOLDEN_PACK: &str = "4c42585041434b00013333333333333333333333333333333333333333333333333333333333333333f698e200351a7b4d58d7b8ef20ebfcbdac4ad754a4b49f5f3571d6a8e15e140602b02de6868233d6854fe3c8312c2a931f1bdb4b9143d84ebefc6fd3b043a8b62f4b71546b15bbebec1189d9e9feae23d4dc9e13423445a54b3f630e68e226ea3f97a2dce07261856d55244e7ad0f9906dec5e2cc083ef370be0cec63fbf90e62a93a8bb5439c68e4c1ff4d2d836dd55c655c471161a4b0000006e";

    #[test]
    fn a_pack_reads_back_and_refuses_damage() {
        let (keys, pack) = golden_pack();
        assert_eq!(
            read_pack(&keys, &pack.id, &pack.bytes).unwrap(),
            pack.entries
        );
        let key = keys.pack_key(&pack.id.0);
        for e in &pack.entries {
            let r = e.range().start as usize..e.range().end as usize;
            open_blob(&key, &pack.id, e, &pack.bytes[r]).unwrap();
        }
        // Any flipped byte, any cut, another id: refused, never a panic.
        let intact = |bytes: &[u8]| {
            read_pack(&keys, &pack.id, bytes).is_ok_and(|entries| {
                entries.iter().all(|e| {
                    let r = e.range().start as usize..e.range().end as usize;
                    open_blob(&key, &pack.id, e, &bytes[r]).is_ok()
                })
            })
        };
        assert!(intact(&pack.bytes));
        for at in 0..pack.bytes.len() {
            let mut bad = pack.bytes.clone();
            bad[at] ^= 1;
            assert!(!intact(&bad), "byte {at} flipped unnoticed");
        }
        for len in 0..pack.bytes.len() {
            assert!(
                read_pack(&keys, &pack.id, &pack.bytes[..len]).is_err(),
                "{len}"
            );
        }
        let err = read_pack(&keys, &PackId([0x34; 32]), &pack.bytes).unwrap_err();
        assert!(err.to_string().contains("another pack"), "{err}");
        // A blob opened as another chunk (an index pointing elsewhere) does not authenticate.
        let (a, b) = (pack.entries[0], pack.entries[1]);
        let swapped = BlobEntry {
            id: b.id,
            raw_len: b.raw_len,
            ..a
        };
        let r = a.range().start as usize..a.range().end as usize;
        assert!(open_blob(&key, &pack.id, &swapped, &pack.bytes[r]).is_err());
    }
}
