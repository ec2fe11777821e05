//! `prune`: forget all but the newest snapshots and collect what no snapshot needs.
//!
//! The order is what makes it crash-safe; a prune cut short anywhere leaves every kept snapshot
//! restorable, and the next prune finishes the job:
//!
//! 1. forget entries appended to the catalog (the snapshots vanish from the list at once);
//! 2. the kept snapshots' trees are read, and every chunk they name must be indexed;
//! 3. packs whose live blobs are under half their bytes are rewritten into new packs, which
//!    land before anything names them;
//! 4. one new index object names every pack that stays, old and new;
//! 5. the old index objects are deleted (until then, both old and new name existing packs);
//! 6. only then packs no index names are deleted: emptied, rewritten, and any left unindexed by a
//!    backup or prune that died after uploading;
//! 7. snapshot objects the catalog does not list live are deleted.

use std::collections::{HashMap, HashSet};

use futures::{StreamExt, TryStreamExt};
use lockbox_crypto::OsRng;
use lockbox_store::PutIf;

use crate::RepoError;
use crate::catalog::{Catalog, Head, MAX_FORGET, Op, SnapshotEntry};
use crate::fetch::unpack_chunk;
use crate::ids::{ChunkId, IndexId, PackId, SnapshotId};
use crate::index::{self, Index, IndexedPack};
use crate::lock::RepoLock;
use crate::pack::{self, BlobEntry};
use crate::repo::{Repository, object};
use crate::retention::Keep;
use crate::sink::Sink;
use crate::snapshot::snapshot_object;

/// A pack is rewritten when its live blobs fill less than this percentage of it.
const REPACK_BELOW_PERCENT: u64 = 50;
/// Deletes in flight at once.
const DELETES_IN_FLIGHT: usize = 8;

/// What one prune did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// Snapshots forgotten by this prune, and live ones kept.
    pub forgotten: u64,
    pub kept: u64,
    /// Packs deleted (emptied, rewritten, or unindexed leftovers), rewritten, and written.
    pub packs_deleted: u64,
    pub packs_rewritten: u64,
    pub packs_written: u64,
    /// Bytes of packs before and after.
    pub pack_bytes_before: u64,
    pub pack_bytes_after: u64,
    pub index_objects_deleted: u64,
    pub snapshot_objects_deleted: u64,
}

/// Which packs stay, which are rewritten (with their live blobs), which go.
#[derive(Default)]
struct Plan {
    keep: Vec<IndexedPack>,
    rewrite: Vec<(IndexedPack, Vec<BlobEntry>)>,
    drop: Vec<PackId>,
}

impl Repository {
    /// Forgets the live snapshots of `catalog` (verified by the caller against its mark) that
    /// `keep` does not keep, and collects what no kept snapshot needs. Returns the report and
    /// the catalog with the forget entries, for the caller's mark.
    pub fn prune(
        &self,
        lock: &RepoLock<'_>,
        catalog: Catalog,
        keep: &Keep,
        now_unix_ms: u64,
    ) -> Result<(PruneReport, Catalog), RepoError> {
        if keep.is_nothing() {
            return Err(RepoError::KeepNothing);
        }
        let mut report = PruneReport::default();
        let live = catalog.snapshots();
        let (kept, forget): (Vec<_>, Vec<_>) = live
            .iter()
            .zip(keep.select(&live))
            .partition(|(_, kept)| *kept);
        let kept: Vec<&SnapshotEntry> = kept.into_iter().map(|(s, _)| s).collect();
        let forget: Vec<&SnapshotEntry> = forget.into_iter().map(|(s, _)| s).collect();

        // Everything is checked before anything is forgotten: the kept snapshots' trees, and
        // that each chunk they name lies in a pack the storage lists at its full length. Index
        // entries for packs that are not there (an index replayed from before an earlier prune,
        // a stale listing) are ignored, never trusted as the only copy.
        let (objects, present) = self.present_index_objects()?;
        let index = merged(&objects);
        let mut referenced = HashSet::new();
        for snapshot in kept {
            self.check_tree(snapshot, &index, &mut referenced)?;
            report.kept += 1;
        }

        let head = Head {
            device: lock.device,
            created_unix_ms: now_unix_ms,
        };
        let forget: Vec<SnapshotId> = forget.iter().map(|s| s.id).collect();
        let mut catalog = catalog;
        for ids in forget.chunks(MAX_FORGET) {
            catalog = self
                .append(catalog, head, Op::Forget(ids.to_vec()))?
                .catalog;
        }
        report.forgotten = forget.len() as u64;

        let plan = plan(&objects, &referenced);
        report.pack_bytes_before = present.values().sum();
        let written = self.rewrite(&plan.rewrite)?;
        report.packs_rewritten = plan.rewrite.len() as u64;
        report.packs_written = written.len() as u64;
        let mut stays = plan.keep;
        stays.extend(written);
        report.pack_bytes_after = stays.iter().map(|p| u64::from(p.len)).sum();

        lock.verify()?;
        let unchanged = plan.drop.is_empty() && plan.rewrite.is_empty() && objects.len() == 1;
        if !unchanged {
            if !stays.is_empty() {
                let (id, bytes) = index::encode_index(&self.keys, &stays, &mut OsRng);
                self.put(&index::index_object(&id), bytes, PutIf::Absent)?;
            }
            let names: Vec<String> = objects
                .iter()
                .map(|(id, _)| index::index_object(id))
                .collect();
            lock.verify()?;
            report.index_objects_deleted = self.delete_all(names)?;
        }

        lock.verify()?;
        let indexed: HashSet<PackId> = stays.iter().map(|p| p.id).collect();
        let unindexed: Vec<String> = present
            .keys()
            .filter(|id| !indexed.contains(id))
            .map(pack::pack_object)
            .collect();
        report.packs_deleted = self.delete_all(unindexed)?;

        let live: HashSet<SnapshotId> = catalog.snapshots().iter().map(|s| s.id).collect();
        let dead: Vec<String> = self
            .listed_snapshots()?
            .into_iter()
            .filter(|id| !live.contains(id))
            .map(|id| snapshot_object(&id))
            .collect();
        report.snapshot_objects_deleted = self.delete_all(dead)?;
        Ok((report, catalog))
    }

    /// Seals the live blobs of `packs` into new packs; they land before this returns.
    fn rewrite(
        &self,
        packs: &[(IndexedPack, Vec<BlobEntry>)],
    ) -> Result<Vec<IndexedPack>, RepoError> {
        let nothing = Index::default();
        let (_, copied) = self.with_sink(&nothing, |sink| {
            packs
                .iter()
                .try_for_each(|(pack, live)| self.copy_live(sink, pack, live))
        });
        Ok(copied?.1.packs)
    }

    /// Queues the `live` blobs of `pack`, each checked against its id, to be sealed again.
    fn copy_live(
        &self,
        sink: &mut Sink<'_>,
        pack: &IndexedPack,
        live: &[BlobEntry],
    ) -> Result<(), RepoError> {
        let name = pack::pack_object(&pack.id);
        let bytes = self.get_listed(&name, pack.len.into())?;
        let key = self.keys.pack_key(&pack.id.0);
        for blob in live {
            let sealed = bytes
                .get(blob.range().start as usize..blob.range().end as usize)
                .ok_or_else(|| {
                    RepoError::corrupt(&name, "is shorter than its index says: truncated")
                })?;
            let stored = pack::open_blob(&key, &pack.id, blob, sealed)?;
            // Checked before it is sealed again: a rewrite must not carry bytes that are not
            // their chunk's into a fresh pack, where nothing would tell them apart.
            unpack_chunk(&self.namer, blob, stored.clone(), &name)?;
            sink.add_stored(blob.id, stored, blob.compressed, blob.raw_len)?;
        }
        Ok(())
    }

    /// Every index object, keeping only the packs the storage lists at their full length (an
    /// index replayed from before a prune, or left by a writer that lost its lock, names packs
    /// that are gone: their chunks must not be counted as stored); and the packs listed.
    pub(crate) fn present_index_objects(
        &self,
    ) -> Result<(IndexObjects, HashMap<PackId, u64>), RepoError> {
        let present = self.listed_packs()?;
        let objects = self
            .load_index_objects()?
            .into_iter()
            .map(|(id, packs)| {
                let packs = packs
                    .into_iter()
                    .filter(|p| present.get(&p.id) == Some(&u64::from(p.len)))
                    .collect();
                (id, packs)
            })
            .collect();
        Ok((objects, present))
    }

    /// For a backup: the present index, and the packs no index object names, read and
    /// authenticated. Those are what an interrupted backup (or prune) uploaded before it could
    /// write its index: the backup uses their chunks instead of uploading them again, and names
    /// them in its own index. A pack that does not authenticate, or is larger than a pack of
    /// this repository can be, is left for the next prune to delete.
    pub(crate) fn index_for_backup(&self) -> Result<(Index, Vec<IndexedPack>), RepoError> {
        let (objects, present) = self.present_index_objects()?;
        let mut index = merged(&objects);
        let named: std::collections::HashSet<PackId> = objects
            .iter()
            .flat_map(|(_, packs)| packs.iter().map(|p| p.id))
            .collect();
        let sizes = self.config().sizes;
        let largest = u64::from(sizes.pack_target) + 2 * u64::from(sizes.chunk_max) + (1 << 20);
        let mut adopted = Vec::new();
        for (id, &len) in present.iter().filter(|(id, _)| !named.contains(id)) {
            if len > largest || adopted.len() >= MAX_ADOPTED {
                continue;
            }
            let name = pack::pack_object(id);
            // Capped while read too: the body served may be larger than the listing said.
            let read = object(&name)
                .and_then(|o| {
                    Ok(self
                        .rt()
                        .block_on(self.store().get_object_bounded(&o, largest))?)
                })
                .and_then(|bytes| {
                    let blobs = pack::read_pack(&self.keys, id, &bytes)?;
                    // Every blob, not the header alone: a pack an interrupted run wrote lazily
                    // may have lost blocks in a power cut while its header survived, and its
                    // chunks would be deduplicated into a snapshot that cannot be restored.
                    self.check_blobs(id, &bytes, &blobs, &name)?;
                    Ok(blobs)
                });
            match read {
                Ok(blobs) => {
                    let pack = IndexedPack {
                        id: *id,
                        len: len as u32,
                        blobs,
                    };
                    index.add_pack(&pack);
                    adopted.push(pack);
                }
                Err(e) => tracing::warn!(pack = %name, error = %e, "unindexed pack left for prune"),
            }
        }
        Ok((index, adopted))
    }

    /// For a restore: every chunk at a location in a pack that is there if it has one, else
    /// where the index says (so a pack that is gone or cut short is reported as such).
    pub(crate) fn restore_index(&self) -> Result<Index, RepoError> {
        let all = self.load_index_objects()?;
        let present = self.listed_packs()?;
        let mut index = Index::default();
        for (_, packs) in &all {
            for p in packs {
                if present.get(&p.id) == Some(&u64::from(p.len)) {
                    index.add_pack(p);
                }
            }
        }
        for (_, packs) in &all {
            index.merge(packs);
        }
        Ok(index)
    }

    /// Every pack the storage lists (by its name's shape), with its size.
    pub(crate) fn listed_packs(&self) -> Result<HashMap<PackId, u64>, RepoError> {
        let listed = self.rt().block_on(self.store().list_objects("packs"))?;
        Ok(listed
            .into_iter()
            .filter_map(|o| Some((pack::parse_pack_object(o.name.as_str())?, o.size)))
            .collect())
    }

    /// Every snapshot object the storage lists (by its name's shape).
    fn listed_snapshots(&self) -> Result<Vec<SnapshotId>, RepoError> {
        let listed = self.rt().block_on(self.store().list_objects("snapshots"))?;
        Ok(listed
            .into_iter()
            .filter_map(|o| SnapshotId::from_hex(o.name.as_str().strip_prefix("snapshots/")?))
            .collect())
    }

    /// Deletes `names`, a few at a time; how many.
    pub(crate) fn delete_all(&self, names: Vec<String>) -> Result<u64, RepoError> {
        let store = self.store();
        let count = names.len() as u64;
        let deletes = names.into_iter().map(|name| {
            let store = store.clone();
            async move {
                let name = object(&name)?;
                store.delete_object(&name).await?;
                Ok::<_, RepoError>(())
            }
        });
        self.rt().block_on(
            futures::stream::iter(deletes)
                .buffer_unordered(DELETES_IN_FLIGHT)
                .try_collect::<Vec<()>>(),
        )?;
        Ok(count)
    }
}

pub(crate) type IndexObjects = Vec<(IndexId, Vec<IndexedPack>)>;

/// Unindexed packs one backup takes in at most (the rest wait for the next backup or prune).
const MAX_ADOPTED: usize = 256;

fn merged(objects: &IndexObjects) -> Index {
    let mut index = Index::default();
    for (_, packs) in objects {
        index.merge(packs);
    }
    index
}

/// Each referenced chunk keeps one location (the first index object and pack that list it);
/// a pack keeps, rewrites or drops by the share of its bytes those locations fill.
fn plan(objects: &[(IndexId, Vec<IndexedPack>)], referenced: &HashSet<ChunkId>) -> Plan {
    let mut chosen = HashSet::new();
    let mut seen = HashSet::new();
    let mut plan = Plan::default();
    for pack in objects.iter().flat_map(|(_, packs)| packs) {
        if !seen.insert(pack.id) {
            continue;
        }
        let live: Vec<BlobEntry> = pack
            .blobs
            .iter()
            .filter(|b| referenced.contains(&b.id) && chosen.insert(b.id))
            .copied()
            .collect();
        let live_bytes: u64 = live.iter().map(|b| u64::from(b.sealed_len)).sum();
        if live.is_empty() {
            plan.drop.push(pack.id);
        } else if live_bytes * 100 < u64::from(pack.len) * REPACK_BELOW_PERCENT {
            plan.rewrite.push((pack.clone(), live));
        } else {
            plan.keep.push(pack.clone());
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use lockbox_store::test_support::{Hostile, OnPut};

    use super::*;
    use crate::config::Sizes;
    use crate::ids::DeviceId;
    use crate::lock::Purpose;

    /// A rewrite that meets a damaged pack while the provider refuses its new packs must report
    /// the damage: the packing thread's storage error is the cause only when the copy stopped
    /// because packing did.
    #[test]
    fn a_rewrite_reports_the_damaged_pack_not_the_failed_upload_behind_it() {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Runtime::new().unwrap();
        let cloud = dir.path().join("cloud");
        let provider = Hostile::over_folder(&cloud);
        let key = lockbox_crypto::BackupKey::from_bytes([5; 32]);
        let repo = Repository::init(
            provider.store("hostile://cloud"),
            rt.handle().clone(),
            &key,
            Sizes::SMALL,
        )
        .unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir_all(&src).unwrap();
        let mut x = 1u64;
        let noise: Vec<u8> = (0..2_000_000)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (x >> 33) as u8
            })
            .collect();
        std::fs::write(src.join("IMG.jpg"), noise).unwrap();
        let lock = repo.lock(DeviceId([1; 16]), Purpose::Backup, true).unwrap();
        repo.backup(&lock, &src, None, 1, None, &mut |_| {})
            .unwrap();
        lock.release().unwrap();

        let packs: Vec<IndexedPack> = repo
            .load_index_objects()
            .unwrap()
            .into_iter()
            .flat_map(|(_, p)| p)
            .filter(|p| p.blobs.len() >= 2)
            .collect();
        let (first, second) = (packs[0].clone(), packs[1].clone());
        // The second pack's last blob loses a byte's worth of truth on the disk.
        let path = cloud.join(pack::pack_object(&second.id));
        let mut bytes = std::fs::read(&path).unwrap();
        let last = second.blobs.last().unwrap().range();
        bytes[last.start as usize + 5] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        provider.on_put(|name, _| {
            if name.starts_with("packs/") {
                OnPut::Refuse
            } else {
                OnPut::Pass
            }
        });

        // The damaged pack first: what comes before its last blob stays under one pack's
        // size, so the copy meets the damage before packing has anything to upload, whatever
        // the threads' timing; the refused upload comes after, when the last pack is sealed.
        let job = [
            (second.clone(), second.blobs.clone()),
            (first.clone(), first.blobs.clone()),
        ];
        let err = repo.rewrite(&job).unwrap_err();
        assert!(matches!(err, RepoError::Corrupt { .. }), "{err:?}");
    }
}
