//! [`Store`]: list, find, delete and prune backups; entry points for transfers.

use chrono::{DateTime, Utc};
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt};

use crate::backend::Backend;
use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};

use crate::name::{normalize_id_prefix, prune_plan};
use crate::{BackupName, StoreError, StoreOptions};

/// Header reads [`Store::read_heads`] keeps in flight.
const HEAD_READS_IN_FLIGHT: usize = 8;

/// One finished backup as listed by the storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupInfo {
    pub name: BackupName,
    /// Size of the stored (encrypted) object in bytes.
    pub size: u64,
    /// When the storage last wrote the object (set by the storage, not by lockbox). Its
    /// precision depends on the source: S3 listings give milliseconds, the HEAD behind
    /// [`crate::UploadWriter::finish`] gives seconds.
    pub last_modified: DateTime<Utc>,
    /// Full object key inside the bucket / folder.
    pub location: Path,
}

/// Transfer sizing kept from [`StoreOptions`] (the provider options are not kept).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Transfer {
    pub(crate) part_size: usize,
    pub(crate) max_parts_in_flight: usize,
    /// [`MAX_PARTS`]; lower only in tests (`test_support::with_part_limit`).
    pub(crate) max_parts: u64,
}

/// The most parts a multipart upload may have (S3 and GCS; Azure allows 50,000 blocks).
pub const MAX_PARTS: u64 = 10_000;

impl Transfer {
    /// The plan for an object of about `expected` bytes: the configured part size, or larger
    /// parts of one size (some providers, such as R2, require all parts but the last to be
    /// equal) so that the object needs at most half the part limit (room for an object that
    /// comes out larger than expected: a file that grew, compression that did not help);
    /// fewer of them in flight, so
    /// that memory stays near `(max_parts_in_flight + 1) * part_size` as configured until a
    /// single part is larger than that.
    pub(crate) fn for_size(self, expected: Option<u64>) -> Transfer {
        const MIB: u64 = 1024 * 1024;
        let planned = (self.max_parts / 2).max(1);
        let needed = expected.unwrap_or(0).div_ceil(planned).div_ceil(MIB) * MIB;
        let part_size = (self.part_size as u64)
            .max(needed)
            .min(crate::MAX_PART_SIZE as u64) as usize;
        let budget = self.max_parts_in_flight * self.part_size;
        Transfer {
            part_size,
            max_parts_in_flight: (budget / part_size).clamp(1, self.max_parts_in_flight),
            max_parts: self.max_parts,
        }
    }

    /// The most bytes an upload with this plan can hold.
    pub(crate) fn capacity(&self) -> u64 {
        self.part_size as u64 * self.max_parts
    }
}

/// Backups in one storage location (`file:///…`, `s3://bucket/prefix`, `gs://…`, `az://…`).
#[derive(Debug, Clone)]
pub struct Store {
    url: String,
    backend: Backend,
    transfer: Transfer,
}

impl Store {
    /// Opens `url` with [`StoreOptions::default`] (provider settings and
    /// [`crate::RETRIES_ENV`] from the environment).
    /// Nothing is contacted yet.
    pub fn open(url: &str) -> Result<Store, StoreError> {
        Store::open_with(url, StoreOptions::default())
    }

    /// Opens `url` with full control over transfer sizes, retries and provider options.
    pub fn open_with(url: &str, options: StoreOptions) -> Result<Store, StoreError> {
        let options = options.with_env(url)?;
        let backend = Backend::build(url, &options)?;
        Ok(Store {
            url: url.to_owned(),
            backend,
            transfer: Transfer {
                part_size: options.part_size,
                max_parts_in_flight: options.max_parts_in_flight,
                max_parts: MAX_PARTS,
            },
        })
    }

    /// A store over an object store built elsewhere: a wrapper around a provider (fault
    /// injection in tests, a caching or auditing layer) or a backend lockbox does not build
    /// itself. `url` names it in messages; objects live at the store's root.
    pub fn from_object_store(url: &str, store: Arc<dyn ObjectStore>) -> Store {
        let options = StoreOptions::default();
        Store {
            url: url.to_owned(),
            backend: Backend::Remote {
                store,
                prefix: Path::default(),
            },
            transfer: Transfer {
                part_size: options.part_size,
                max_parts_in_flight: options.max_parts_in_flight,
                max_parts: MAX_PARTS,
            },
        }
    }

    /// The storage URL as given to `open`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Finished backups, oldest first by `(created_unix_ms, id)`. Objects whose names do not
    /// parse strictly (other files, staging files, unfinished uploads) are ignored.
    pub async fn list(&self) -> Result<Vec<BackupInfo>, StoreError> {
        let store = self.backend.existing(&self.url)?;
        let prefix = self.backend.prefix();
        let listing = store
            .list_with_delimiter(non_empty(&prefix))
            .await
            .map_err(|e| self.list_error(e))?;
        let mut backups: Vec<BackupInfo> = listing
            .objects
            .into_iter()
            .filter_map(|meta| backup_info(&prefix, meta))
            .collect();
        backups.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(backups)
    }

    /// The newest backup by object name, if any. Names are chosen by whoever writes to the
    /// storage: a caller that holds the key should pick among the backups whose authenticated
    /// headers it verified instead (see [`Store::read_heads`]).
    pub async fn latest(&self) -> Result<Option<BackupInfo>, StoreError> {
        Ok(self.list().await?.pop())
    }

    /// The one backup whose 16-hex id starts with `id_prefix` (case-insensitive).
    pub async fn find(&self, id_prefix: &str) -> Result<BackupInfo, StoreError> {
        let prefix = normalize_id_prefix(id_prefix)?;
        let mut matches: Vec<BackupInfo> = self
            .list()
            .await?
            .into_iter()
            .filter(|b| b.name.id.starts_with(&prefix))
            .collect();
        match matches.len() {
            0 => Err(StoreError::NotFound {
                url: self.url.clone(),
                what: format!("backup with id prefix `{prefix}`"),
            }),
            1 => Ok(matches.remove(0)),
            _ => Err(StoreError::Ambiguous {
                url: self.url.clone(),
                prefix,
                matches: matches.iter().map(|b| b.name.file_name()).collect(),
            }),
        }
    }

    /// Deletes one backup. Refuses a `BackupInfo` whose location is not the object key its
    /// name maps to in this store (so a hand-made `BackupInfo` cannot delete other objects).
    pub async fn delete(&self, info: &BackupInfo) -> Result<(), StoreError> {
        self.check_location(info)?;
        let store = self.backend.existing(&self.url)?;
        store
            .delete(&info.location)
            .await
            .map_err(|e| self.error(format!("deleting {}", info.location), e))
    }

    /// Deletes all but the newest `keep_last` of `verified`, oldest first; returns the deleted.
    ///
    /// `verified` must hold only backups whose authenticated header the caller checked against
    /// their names (this crate holds no key): objects left out are neither counted nor deleted,
    /// so a planted or foreign object can never push a real backup out. `protect` (the backup
    /// just made) is never deleted and fills one of the `keep_last` places. `keep_last == 0` is
    /// refused. Stops at the first failed delete.
    pub async fn prune(
        &self,
        verified: &[BackupInfo],
        keep_last: usize,
        protect: Option<&BackupName>,
    ) -> Result<Vec<BackupInfo>, StoreError> {
        if keep_last == 0 {
            return Err(StoreError::PruneWouldDeleteAll {
                url: self.url.clone(),
            });
        }
        let names: Vec<BackupName> = verified.iter().map(|b| b.name.clone()).collect();
        let doomed: Vec<BackupInfo> = prune_plan(&names, keep_last, protect)
            .into_iter()
            .map(|i| verified[i].clone())
            .collect();
        for backup in &doomed {
            self.delete(backup).await?;
        }
        Ok(doomed)
    }

    /// The first `len` bytes (fewer if the object is shorter) of each backup, in order: enough
    /// for a caller with the key to authenticate stream headers without downloading bodies.
    /// A few reads run at once.
    pub async fn read_heads(
        &self,
        backups: &[BackupInfo],
        len: u64,
    ) -> Result<Vec<Bytes>, StoreError> {
        for info in backups {
            self.check_location(info)?;
        }
        let store = self.backend.existing(&self.url)?;
        let reads = backups.iter().map(|info| {
            let store = Arc::clone(&store);
            async move {
                let range = 0..len.min(info.size);
                if range.is_empty() {
                    return Ok(Bytes::new());
                }
                store
                    .get_range(&info.location, range)
                    .await
                    .map_err(|e| self.error(format!("reading the header of {}", info.location), e))
            }
        });
        futures::stream::iter(reads)
            .buffered(HEAD_READS_IN_FLIGHT)
            .try_collect()
            .await
    }

    /// Object key of the backup called `name` in this store.
    pub fn location_of(&self, name: &BackupName) -> Result<Path, StoreError> {
        name.validate()?;
        Ok(self.backend.prefix().join(name.file_name()))
    }

    pub(crate) fn check_location(&self, info: &BackupInfo) -> Result<(), StoreError> {
        if info.location != self.location_of(&info.name)? {
            return Err(StoreError::InvalidName {
                reason: format!(
                    "{} is not the location of backup {} in {}",
                    info.location, info.name, self.url
                ),
            });
        }
        Ok(())
    }

    pub(crate) fn backend(&self) -> &Backend {
        &self.backend
    }

    pub(crate) fn transfer(&self) -> Transfer {
        self.transfer
    }

    #[cfg(feature = "test-support")]
    pub(crate) fn set_part_limit(&mut self, parts: u64) {
        self.transfer.max_parts = parts;
    }

    pub(crate) fn error(&self, operation: String, e: object_store::Error) -> StoreError {
        StoreError::from_object_store(&self.url, operation, e)
    }

    fn list_error(&self, e: object_store::Error) -> StoreError {
        match self.error("listing backups".into(), e) {
            StoreError::NotFound { url, .. } => StoreError::NotFound {
                what: "bucket, container or folder".into(),
                url,
            },
            other => other,
        }
    }
}

fn non_empty(prefix: &Path) -> Option<&Path> {
    (!prefix.as_ref().is_empty()).then_some(prefix)
}

pub(crate) fn backup_info(prefix: &Path, meta: ObjectMeta) -> Option<BackupInfo> {
    let name = BackupName::parse(meta.location.filename()?)?;
    // Only direct children of the prefix, spelled exactly as this crate writes them.
    if meta.location != prefix.clone().join(name.file_name()) {
        return None;
    }
    Some(BackupInfo {
        name,
        size: meta.size,
        last_modified: meta.last_modified,
        location: meta.location,
    })
}

#[cfg(test)]
mod part_plan {
    use super::*;

    const MIB: u64 = 1024 * 1024;
    const GIB: u64 = 1024 * MIB;
    const DEFAULT: Transfer = Transfer {
        part_size: 8 * MIB as usize,
        max_parts_in_flight: 3,
        max_parts: MAX_PARTS,
    };

    #[test]
    fn small_objects_keep_the_configured_parts() {
        for expected in [None, Some(0), Some(GIB), Some(39 * GIB)] {
            let plan = DEFAULT.for_size(expected);
            assert_eq!(plan.part_size, DEFAULT.part_size, "{expected:?}");
            assert_eq!(plan.max_parts_in_flight, 3);
        }
    }

    /// Fixed 8 MiB parts capped one object near 78 GiB. Any expected size up to what
    /// 10,000 parts of the largest part can hold now plans within half the part limit, in
    /// parts of one size, and memory stays at the configured budget until one part exceeds it.
    #[test]
    fn large_objects_get_larger_parts_within_the_part_limit() {
        assert!(DEFAULT.capacity() < 80 * GIB);
        for expected in [100 * GIB, 500 * GIB, 2048 * GIB, 4096 * GIB] {
            let plan = DEFAULT.for_size(Some(expected));
            assert!((plan.part_size as u64).is_multiple_of(MIB));
            assert!(plan.part_size <= crate::MAX_PART_SIZE);
            assert!(
                expected.div_ceil(plan.part_size as u64) <= MAX_PARTS / 2,
                "{expected}: {} parts of {}",
                expected.div_ceil(plan.part_size as u64),
                plan.part_size
            );
            assert!(plan.capacity() >= 2 * expected, "room to grow: {expected}");
            let held = (plan.max_parts_in_flight + 1) * plan.part_size;
            let budget = (DEFAULT.max_parts_in_flight + 1) * DEFAULT.part_size;
            assert!(held <= budget.max(2 * plan.part_size), "{expected}: {held}");
        }
        let huge = DEFAULT.for_size(Some(u64::MAX / 2));
        assert_eq!(huge.part_size, crate::MAX_PART_SIZE);
        assert_eq!(huge.max_parts_in_flight, 1);
    }
}
