//! The authenticated catalog: the only source of which snapshots exist and which is newest.
//!
//! One object per entry, `catalog/{seq:020}`, written only if absent, so two writers can never
//! both take the same place:
//!
//! ```text
//! entry = "LBXCATL\0" | version | repo_id[32] | seq u64 | prev_mac[32] | device_id[16]
//!         | created_unix_ms u64 | op u8 | op body | HMAC-SHA256(catalog key, all before)
//! op 1 (snapshot) body = snapshot_id[32] | files u64 | bytes u64
//! op 2 (forget)   body = count u32 | snapshot_id[32] * count
//! op 3 (snapshot) body = snapshot_id[32] | files u64 | bytes u64 | sealed_len u64
//! ```
//! New snapshots are op 3 in a version 2 entry (ops 1 and 2 are version 1): the sealed snapshot
//! object's length bounds its read, so a provider cannot make a reader hold more than the
//! snapshot. Op 1 (written before) still reads.
//! The live snapshots are those added and not forgotten by a later entry: `prune` forgets by
//! appending, so the chain (and rollback detection against a mark) is never cut.
//! `prev_mac` is the MAC of entry `seq - 1` (zeros for entry 1), so an entry dropped from the
//! middle, reordered or replaced breaks the chain. Dropping the newest entries keeps the chain
//! whole: that rollback is caught against a [`CatalogMark`] the device (or the vault) kept.

use lockbox_crypto::RepoKeys;
use subtle::ConstantTimeEq;

use crate::RepoError;
use crate::ids::{DeviceId, RepoId, SnapshotId};
use crate::wire::{Cursor, MAC_LEN, mac, verify_mac};

const CATALOG_MAGIC: [u8; 8] = *b"LBXCATL\0";
/// Entries of ops 1 and 2.
const CATALOG_VERSION: u8 = 1;
/// Entries that may also be op 3: an older lockbox reports them as a newer format.
const CATALOG_VERSION_SIZED: u8 = 2;
const OP_SNAPSHOT: u8 = 1;
const OP_FORGET: u8 = 2;
const OP_SNAPSHOT_SIZED: u8 = 3;
/// Snapshots one forget entry names at most (it stays below [`MAX_ENTRY_LEN`]).
pub(crate) const MAX_FORGET: usize = 1000;
pub(crate) const CATALOG_DIR: &str = "catalog";
/// No entry is longer (a snapshot entry is at most 194 bytes, a forget entry at most about 32 KiB): a
/// larger object under `catalog/` is refused unread.
pub(crate) const MAX_ENTRY_LEN: u64 = 64 << 10;

/// One snapshot as the catalog lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotEntry {
    /// The catalog entry that added it.
    pub seq: u64,
    pub id: SnapshotId,
    pub device: DeviceId,
    pub created_unix_ms: u64,
    pub files: u64,
    pub bytes: u64,
    /// The length of the sealed snapshot object, as its writer recorded it; `None` in entries
    /// written before lockbox recorded it.
    pub sealed_len: Option<u64>,
}

/// Where a catalog ended when someone last saw or wrote it: its last entry and that entry's
/// MAC. Kept by the device in its home (and by the vault beside the key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CatalogMark {
    pub repo: RepoId,
    pub seq: u64,
    pub mac: [u8; MAC_LEN],
}

/// What one entry does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Op {
    /// Adds a snapshot (its `seq` is the entry's).
    Snapshot(SnapshotEntry),
    /// Forgets snapshots added before.
    Forget(Vec<SnapshotId>),
}

/// The fields every entry has besides its op.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Head {
    pub device: DeviceId,
    pub created_unix_ms: u64,
}

#[derive(Debug, Clone)]
struct Entry {
    op: Op,
    mac: [u8; MAC_LEN],
}

/// A verified catalog.
#[derive(Debug, Clone)]
pub struct Catalog {
    repo: RepoId,
    entries: Vec<Entry>,
}

/// The object name of entry `seq`.
pub(crate) fn entry_object(seq: u64) -> String {
    format!("{CATALOG_DIR}/{seq:020}")
}

/// The sequence number in an entry's object name, if it is one.
pub(crate) fn parse_entry_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix(CATALOG_DIR)?.strip_prefix('/')?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

impl Catalog {
    /// Verifies the entries `objects` (sequence number and bytes, any order): numbered 1..=n
    /// without a gap, each authenticated and chained to the one before.
    pub(crate) fn verify(
        keys: &RepoKeys,
        repo: RepoId,
        mut objects: Vec<(u64, Vec<u8>)>,
    ) -> Result<Catalog, RepoError> {
        objects.sort_by_key(|(seq, _)| *seq);
        let mut entries: Vec<Entry> = Vec::with_capacity(objects.len());
        for (i, (seq, bytes)) in objects.iter().enumerate() {
            let expected = i as u64 + 1;
            if *seq != expected {
                return Err(RepoError::CatalogBroken {
                    seq: expected,
                    what: format!("entry {expected} is missing (the next one is {seq}): dropped"),
                });
            }
            let prev = entries.last().map_or([0; MAC_LEN], |e| e.mac);
            entries.push(decode_entry(keys, repo, *seq, &prev, bytes)?);
        }
        Ok(Catalog { repo, entries })
    }

    /// The live snapshots (added and not forgotten), oldest first.
    pub fn snapshots(&self) -> Vec<SnapshotEntry> {
        let forgotten: std::collections::HashSet<SnapshotId> = self
            .entries
            .iter()
            .filter_map(|e| match &e.op {
                Op::Forget(ids) => Some(ids.iter().copied()),
                Op::Snapshot(_) => None,
            })
            .flatten()
            .collect();
        let mut seen = std::collections::HashSet::new();
        self.entries
            .iter()
            .filter_map(|e| match &e.op {
                Op::Snapshot(s) if !forgotten.contains(&s.id) && seen.insert(s.id) => Some(*s),
                _ => None,
            })
            .collect()
    }

    /// Snapshots added and then forgotten.
    pub fn forgotten(&self) -> Vec<SnapshotId> {
        let mut seen: std::collections::HashSet<SnapshotId> =
            self.snapshots().iter().map(|s| s.id).collect();
        self.entries
            .iter()
            .filter_map(|e| match &e.op {
                Op::Snapshot(s) if seen.insert(s.id) => Some(s.id),
                _ => None,
            })
            .collect()
    }

    /// The newest live snapshot.
    pub fn latest(&self) -> Option<SnapshotEntry> {
        self.snapshots().last().copied()
    }

    /// Entries so far; the next entry gets `len() + 1`.
    pub fn len(&self) -> u64 {
        self.entries.len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Where this catalog ends now.
    pub fn mark(&self) -> CatalogMark {
        CatalogMark {
            repo: self.repo,
            seq: self.len(),
            mac: self.entries.last().map_or([0; MAC_LEN], |e| e.mac),
        }
    }

    /// Refuses a catalog that ends before `mark`, or whose entry at `mark` is not the one
    /// marked (replaced by another history).
    pub fn check_mark(&self, mark: &CatalogMark) -> Result<(), RepoError> {
        if mark.repo != self.repo {
            return Err(RepoError::ForeignSnapshot {
                snapshot: "(catalog)".into(),
                what: format!(
                    "this device last saw repository {}, but the storage holds repository {}",
                    mark.repo, self.repo
                ),
            });
        }
        if mark.seq == 0 {
            return Ok(());
        }
        if self.len() < mark.seq {
            return Err(RepoError::RolledBack {
                found: self.len(),
                expected: mark.seq,
            });
        }
        let entry = &self.entries[(mark.seq - 1) as usize];
        if !bool::from(entry.mac.ct_eq(&mark.mac)) {
            return Err(RepoError::CatalogBroken {
                seq: mark.seq,
                what: "it is not the entry this device saw there: the history was replaced".into(),
            });
        }
        Ok(())
    }

    /// The snapshot whose id starts with `prefix` (hex, at least 4 digits). A snapshot listed
    /// twice (an older lockbox retried an entry whose write had landed) is one snapshot.
    pub fn find(&self, prefix: &str, url: &str) -> Result<SnapshotEntry, RepoError> {
        let prefix = prefix.to_ascii_lowercase();
        let live = self.snapshots();
        let mut hits = live
            .iter()
            .filter(|s| prefix.len() >= 4 && s.id.hex().starts_with(&prefix));
        match (hits.next(), hits.next()) {
            (Some(s), None) => Ok(*s),
            (Some(_), Some(_)) => Err(RepoError::AmbiguousSnapshot { prefix }),
            _ => Err(RepoError::NoSuchSnapshot {
                url: url.to_owned(),
                id: prefix,
            }),
        }
    }

    /// The MAC of entry `seq`, if the catalog reaches it.
    pub(crate) fn mac_at(&self, seq: u64) -> Option<[u8; MAC_LEN]> {
        let at = usize::try_from(seq.checked_sub(1)?).ok()?;
        self.entries.get(at).map(|e| e.mac)
    }

    /// The catalog with `bytes` (from [`next_entry`](Self::next_entry) for `op`) appended.
    pub(crate) fn appended(&self, op: Op, bytes: &[u8]) -> Catalog {
        let mut next = self.clone();
        let op = match op {
            Op::Snapshot(s) => Op::Snapshot(SnapshotEntry {
                seq: self.len() + 1,
                ..s
            }),
            forget => forget,
        };
        next.entries.push(Entry {
            op,
            mac: bytes[bytes.len() - MAC_LEN..]
                .try_into()
                .expect("an entry ends in its MAC"),
        });
        next
    }

    /// The bytes of the next entry: `op`, by `head`.
    pub(crate) fn next_entry(&self, keys: &RepoKeys, head: Head, op: &Op) -> Vec<u8> {
        let seq = self.len() + 1;
        let prev = self.mark().mac;
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(&CATALOG_MAGIC);
        let sized = matches!(op, Op::Snapshot(s) if s.sealed_len.is_some());
        out.push(if sized {
            CATALOG_VERSION_SIZED
        } else {
            CATALOG_VERSION
        });
        out.extend_from_slice(&self.repo.0);
        out.extend_from_slice(&seq.to_be_bytes());
        out.extend_from_slice(&prev);
        out.extend_from_slice(&head.device.0);
        out.extend_from_slice(&head.created_unix_ms.to_be_bytes());
        match op {
            Op::Snapshot(snapshot) => {
                out.push(if sized {
                    OP_SNAPSHOT_SIZED
                } else {
                    OP_SNAPSHOT
                });
                out.extend_from_slice(&snapshot.id.0);
                out.extend_from_slice(&snapshot.files.to_be_bytes());
                out.extend_from_slice(&snapshot.bytes.to_be_bytes());
                if let Some(len) = snapshot.sealed_len {
                    out.extend_from_slice(&len.to_be_bytes());
                }
            }
            Op::Forget(ids) => {
                out.push(OP_FORGET);
                out.extend_from_slice(&(ids.len() as u32).to_be_bytes());
                for id in ids {
                    out.extend_from_slice(&id.0);
                }
            }
        }
        let tag = mac(&keys.catalog_mac, &[&out]);
        out.extend_from_slice(&tag);
        out
    }
}

/// The fields of an authenticated entry of `version` after its magic and version: repository,
/// sequence, previous MAC, op.
pub(crate) fn parse_entry(version: u8, fields: &[u8]) -> Option<(RepoId, u64, [u8; MAC_LEN], Op)> {
    let mut c = Cursor::new(fields);
    let entry_repo = RepoId(c.array().ok()?);
    let entry_seq = c.u64().ok()?;
    let entry_prev: [u8; MAC_LEN] = c.array().ok()?;
    let device = DeviceId(c.array().ok()?);
    let created_unix_ms = c.u64().ok()?;
    let snapshot = |c: &mut Cursor, sized: bool| {
        Some(Op::Snapshot(SnapshotEntry {
            seq: entry_seq,
            id: SnapshotId(c.array().ok()?),
            device,
            created_unix_ms,
            files: c.u64().ok()?,
            bytes: c.u64().ok()?,
            sealed_len: if sized { Some(c.u64().ok()?) } else { None },
        }))
    };
    let op = match c.u8().ok()? {
        OP_SNAPSHOT => snapshot(&mut c, false)?,
        OP_SNAPSHOT_SIZED if version == CATALOG_VERSION_SIZED => snapshot(&mut c, true)?,
        OP_FORGET => {
            let count = c.u32().ok()? as usize;
            if count > MAX_FORGET {
                return None;
            }
            let ids = (0..count)
                .map(|_| c.array().ok().map(SnapshotId))
                .collect::<Option<Vec<_>>>()?;
            Op::Forget(ids)
        }
        _ => return None,
    };
    c.is_empty()
        .then_some((entry_repo, entry_seq, entry_prev, op))
}

fn decode_entry(
    keys: &RepoKeys,
    repo: RepoId,
    seq: u64,
    prev: &[u8; MAC_LEN],
    bytes: &[u8],
) -> Result<Entry, RepoError> {
    let broken = |what: &str| RepoError::CatalogBroken {
        seq,
        what: what.to_owned(),
    };
    if bytes.len() < MAC_LEN + 9 || bytes[..8] != CATALOG_MAGIC {
        return Err(broken("not a catalog entry (bad magic or truncated)"));
    }
    let (body, tag) = bytes.split_at(bytes.len() - MAC_LEN);
    if !verify_mac(&keys.catalog_mac, &[body], tag) {
        return Err(broken(
            "it does not authenticate: altered, or written under another key or for another repository",
        ));
    }
    // Only after authentication: a flipped version byte is damage, not a newer lockbox.
    let version = bytes[8];
    if ![CATALOG_VERSION, CATALOG_VERSION_SIZED].contains(&version) {
        return Err(RepoError::UnsupportedVersion {
            object: entry_object(seq),
            version,
        });
    }
    let (entry_repo, entry_seq, entry_prev, op) = parse_entry(version, &body[9..])
        .ok_or_else(|| broken("authenticated but does not parse"))?;
    // The MAC key is bound to the repository already; the id inside says so in plain words.
    if entry_repo != repo {
        return Err(broken("it belongs to another repository"));
    }
    if entry_seq != seq {
        return Err(broken(&format!(
            "it is entry {entry_seq} stored under the name of entry {seq}: reordered"
        )));
    }
    if !bool::from(entry_prev.ct_eq(prev)) {
        return Err(broken(
            "it does not follow the entry before it: entries were replaced or reordered",
        ));
    }
    Ok(Entry {
        op,
        mac: tag.try_into().expect("MAC_LEN bytes"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use lockbox_crypto::BackupKey;

    #[test]
    fn config_and_catalog_golden() {
        // Computed independently from docs/repository.md with Python's hmac and hashlib when
        // pinned.
        let key = BackupKey::from_bytes([0x11; 32]);
        let repo = RepoId([0x22; 32]);
        let keys = key.repo_keys(&repo.0);
        let config = crate::Config {
            repo_id: repo,
            sizes: crate::Sizes::default(),
            layout: crate::Layout::HmacSha256,
        };
        assert_eq!(hex::encode(config.encode(&keys)), GOLDEN_CONFIG);
        let v2 = crate::Config {
            layout: crate::Layout::Blake3,
            ..config
        };
        assert_eq!(hex::encode(v2.encode(&keys)), GOLDEN_CONFIG_V2);
        let v3 = crate::Config {
            layout: crate::Layout::Blake3DenseFixed,
            ..config.clone()
        };
        assert_eq!(hex::encode(v3.encode(&keys)), GOLDEN_CONFIG_V3);
        for c in [config, v2, v3] {
            let key = BackupKey::from_bytes([0x11; 32]);
            let (decoded, _) = crate::Config::decode(&key, "u", &c.encode(&keys), None).unwrap();
            assert_eq!(decoded, c);
        }

        let empty = Catalog::verify(&keys, repo, Vec::new()).unwrap();
        let entry = SnapshotEntry {
            seq: 0,
            id: SnapshotId([0x44; 32]),
            device: DeviceId([0x55; 16]),
            created_unix_ms: 1_700_000_000_000,
            files: 3,
            bytes: 1000,
            sealed_len: None,
        };
        let head = Head {
            device: entry.device,
            created_unix_ms: entry.created_unix_ms,
        };
        let bytes = empty.next_entry(&keys, head, &Op::Snapshot(entry));
        assert_eq!(hex::encode(&bytes), GOLDEN_ENTRY_1);
        let catalog = Catalog::verify(&keys, repo, vec![(1, bytes.clone())]).unwrap();
        assert_eq!(catalog.latest().unwrap(), SnapshotEntry { seq: 1, ..entry });

        let head = Head {
            created_unix_ms: 1_700_000_000_001,
            ..head
        };
        let forget = catalog.next_entry(&keys, head, &Op::Forget(vec![entry.id]));
        assert_eq!(hex::encode(&forget), GOLDEN_ENTRY_2_FORGET);
        let catalog =
            Catalog::verify(&keys, repo, vec![(2, forget.clone()), (1, bytes.clone())]).unwrap();
        assert_eq!(catalog.len(), 2);
        assert!(catalog.snapshots().is_empty());
        assert_eq!(catalog.forgotten(), vec![entry.id]);

        let head = Head {
            created_unix_ms: 1_700_000_000_002,
            ..head
        };
        let sized = SnapshotEntry {
            id: SnapshotId([0x66; 32]),
            created_unix_ms: head.created_unix_ms,
            sealed_len: Some(0x0102_0304),
            ..entry
        };
        let third = catalog.next_entry(&keys, head, &Op::Snapshot(sized));
        assert_eq!(hex::encode(&third), GOLDEN_ENTRY_3_SIZED);
        let fields = &third[9..third.len() - MAC_LEN];
        assert!(parse_entry(CATALOG_VERSION_SIZED, fields).is_some());
        assert!(
            parse_entry(CATALOG_VERSION, fields).is_none(),
            "op 3 only in a version 2 entry"
        );
        let catalog = catalog.appended(Op::Snapshot(sized), &third);
        let entries = vec![(1, bytes), (2, forget), (3, third)];
        let verified = Catalog::verify(&keys, repo, entries).unwrap();
        assert_eq!(
            verified.latest().unwrap(),
            SnapshotEntry { seq: 3, ..sized }
        );
        assert_eq!(verified.mark(), catalog.mark());
    }
    const GOLDEN_ENTRY_3_SIZED: &str = "4c42584341544c0002222222222222222222222222222222222222222222222222222222222222222200000000000000037deab1e2f357774e4972a6877b9e7c0571e511aebe8e2069065f046b23015469555555555555555555555555555555550000018bcfe56802036666666666666666666666666666666666666666666666666666666666666666000000000000000300000000000003e800000000010203040dc99e4ad8620974d85c4965509641d7f526d11c75d27bed3bb0e27f79474a5c";
    const GOLDEN_ENTRY_2_FORGET: &str = "4c42584341544c00012222222222222222222222222222222222222222222222222222222222222222000000000000000281b8444d8814eac234bfc96085bd844505b89d13ffff9e384fe4b7f0c874f742555555555555555555555555555555550000018bcfe56801020000000144444444444444444444444444444444444444444444444444444444444444447deab1e2f357774e4972a6877b9e7c0571e511aebe8e2069065f046b23015469";
    const GOLDEN_CONFIG: &str = "4c42585245504f0001222222222222222222222222222222222222222222222222222222222222222200010000000400000010000000800000eac2109a6cf4b0ab4b9720267bbe20a07b6e5cc8245cd38eed44968309541f0399797dd5f13cba1969d9f0e3a915d539";
    const GOLDEN_CONFIG_V2: &str = "4c42585245504f0002222222222222222222222222222222222222222222222222222222222222222200010000000400000010000000800000eac2109a6cf4b0ab4b9720267bbe20a0dc14acbfa2d112e8219c5102b8e2e44649a60b98be4737da89c66d4bf82a35ee";
    const GOLDEN_CONFIG_V3: &str = "4c42585245504f0003222222222222222222222222222222222222222222222222222222222222222200010000000400000010000000800000eac2109a6cf4b0ab4b9720267bbe20a027a346e551aec26d12b7a6ccad2898ac21ac5e28c6c7432e64642eca08da6129";
    const GOLDEN_ENTRY_1: &str = "4c42584341544c0001222222222222222222222222222222222222222222222222222222222222222200000000000000010000000000000000000000000000000000000000000000000000000000000000555555555555555555555555555555550000018bcfe56800014444444444444444444444444444444444444444444444444444444444444444000000000000000300000000000003e881b8444d8814eac234bfc96085bd844505b89d13ffff9e384fe4b7f0c874f742";
}
