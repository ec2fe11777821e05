//! Backup object names (`lockbox-{created_unix_ms:013}-{id}.lbx`) and retention choice.
//! Pure functions, no I/O.

use crate::StoreError;

const NAME_PREFIX: &str = "lockbox-";
const NAME_SUFFIX: &str = ".lbx";
const MILLIS_DIGITS: usize = 13;
/// Length of a backup id in a name: 16 lowercase hex characters (8 bytes).
pub const ID_LEN: usize = 16;
/// Largest creation time that fits the fixed 13-digit field (year 2286).
pub const MAX_CREATED_UNIX_MS: u64 = 9_999_999_999_999;

/// The identity of one backup object: creation time and short id.
///
/// Ordering is by `(created_unix_ms, id)`, i.e. oldest first.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BackupName {
    /// Creation time, milliseconds since the Unix epoch.
    pub created_unix_ms: u64,
    /// 16 lowercase hex characters: the first 8 bytes of the backup id.
    pub id: String,
}

impl BackupName {
    /// A validated name; `id` must be 16 lowercase hex characters.
    pub fn new(created_unix_ms: u64, id: impl Into<String>) -> Result<Self, StoreError> {
        let name = BackupName {
            created_unix_ms,
            id: id.into(),
        };
        name.validate()?;
        Ok(name)
    }

    /// Checks the invariants (the fields are public, so a caller may have broken them).
    pub fn validate(&self) -> Result<(), StoreError> {
        if self.created_unix_ms > MAX_CREATED_UNIX_MS {
            return Err(invalid(format!(
                "creation time {} ms does not fit 13 digits",
                self.created_unix_ms
            )));
        }
        if !is_lower_hex(&self.id) || self.id.len() != ID_LEN {
            return Err(invalid(format!(
                "backup id `{}` is not {ID_LEN} lowercase hex characters",
                self.id.escape_debug()
            )));
        }
        Ok(())
    }

    /// The object's file name, e.g. `lockbox-1700000000000-00112233aabbccdd.lbx`.
    pub fn file_name(&self) -> String {
        format!(
            "{NAME_PREFIX}{:0width$}-{}{NAME_SUFFIX}",
            self.created_unix_ms,
            self.id,
            width = MILLIS_DIGITS
        )
    }

    /// Parses a file name strictly; anything else (other files, staging files) is `None`.
    pub fn parse(file_name: &str) -> Option<BackupName> {
        let core = file_name
            .strip_prefix(NAME_PREFIX)?
            .strip_suffix(NAME_SUFFIX)?;
        let (millis, id) = core.split_once('-')?;
        let all_digits = millis.bytes().all(|b| b.is_ascii_digit());
        if millis.len() != MILLIS_DIGITS || !all_digits {
            return None;
        }
        if id.len() != ID_LEN || !is_lower_hex(id) {
            return None;
        }
        Some(BackupName {
            created_unix_ms: millis.parse().ok()?,
            id: id.to_owned(),
        })
    }
}

impl std::fmt::Display for BackupName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.file_name())
    }
}

/// Normalizes a user-typed id prefix (1..=16 hex characters, any case) to lowercase.
pub(crate) fn normalize_id_prefix(prefix: &str) -> Result<String, StoreError> {
    let lower = prefix.to_ascii_lowercase();
    if lower.is_empty() || lower.len() > ID_LEN || !is_lower_hex(&lower) {
        return Err(invalid(format!(
            "backup id prefix `{}` must be 1 to {ID_LEN} hex characters",
            prefix.escape_debug()
        )));
    }
    Ok(lower)
}

/// Which of `names` (any order, no duplicates) a prune keeping `keep_last` deletes, as
/// indices into `names`, oldest first. `protect` always survives and fills one of the
/// `keep_last` places (listed or not); the other places go to the newest of the rest.
pub(crate) fn prune_plan(
    names: &[BackupName],
    keep_last: usize,
    protect: Option<&BackupName>,
) -> Vec<usize> {
    let mut others: Vec<usize> = (0..names.len())
        .filter(|&i| Some(&names[i]) != protect)
        .collect();
    others.sort_by(|&a, &b| names[a].cmp(&names[b]));
    let places = keep_last.saturating_sub(usize::from(protect.is_some()));
    others.truncate(others.len().saturating_sub(places));
    others
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn invalid(reason: String) -> StoreError {
    StoreError::InvalidName { reason }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_name_round_trips() {
        let name = BackupName::new(1_700_000_000_123, "00112233aabbccdd").unwrap();
        assert_eq!(
            name.file_name(),
            "lockbox-1700000000123-00112233aabbccdd.lbx"
        );
        assert_eq!(BackupName::parse(&name.file_name()), Some(name));
        let early = BackupName::new(42, "ffffffffffffffff").unwrap();
        assert_eq!(
            early.file_name(),
            "lockbox-0000000000042-ffffffffffffffff.lbx"
        );
        assert_eq!(BackupName::parse(&early.file_name()), Some(early));
    }

    #[test]
    fn invalid_fields_are_rejected() {
        for id in [
            "",
            "00112233aabbccd",
            "00112233aabbccdd0",
            "00112233AABBCCDD",
            "0011223xaabbccdd",
        ] {
            assert!(BackupName::new(1, id).is_err(), "{id}");
        }
        assert!(BackupName::new(MAX_CREATED_UNIX_MS + 1, "00112233aabbccdd").is_err());
        assert!(BackupName::new(MAX_CREATED_UNIX_MS, "00112233aabbccdd").is_ok());
    }

    #[test]
    fn parse_is_strict() {
        let rejected = [
            "lockbox-1700000000123-00112233aabbccdd.lbx#1",
            "lockbox-1700000000123-00112233aabbccdd.lbx.tmp",
            "lockbox-170000000012-00112233aabbccdd.lbx",
            "lockbox-17000000001234-00112233aabbccdd.lbx",
            "lockbox-+700000000123-00112233aabbccdd.lbx",
            "lockbox-1700000000123-00112233AABBCCDD.lbx",
            "lockbox-1700000000123-00112233aabbccd.lbx",
            "lockbox-1700000000123_00112233aabbccdd.lbx",
            "Lockbox-1700000000123-00112233aabbccdd.lbx",
            "lockbox-1700000000123-00112233aabbccdd.LBX",
            "notes.txt",
            "",
        ];
        for name in rejected {
            assert_eq!(BackupName::parse(name), None, "{name}");
        }
    }

    #[test]
    fn ordering_is_by_time_then_id() {
        let a = BackupName::new(1, "ffffffffffffffff").unwrap();
        let b = BackupName::new(2, "0000000000000000").unwrap();
        let c = BackupName::new(2, "0000000000000001").unwrap();
        assert!(a < b && b < c);
    }

    #[test]
    fn id_prefixes_are_normalized() {
        assert_eq!(normalize_id_prefix("ABc").unwrap(), "abc");
        assert!(normalize_id_prefix("").is_err());
        assert!(normalize_id_prefix("xyz").is_err());
        assert!(normalize_id_prefix("00112233aabbccdd0").is_err());
    }

    fn names(times: &[u64]) -> Vec<BackupName> {
        times
            .iter()
            .map(|&t| BackupName::new(t, format!("{t:016x}")).unwrap())
            .collect()
    }

    #[test]
    fn prune_keeps_newest() {
        let five = names(&[3, 1, 5, 2, 4]);
        assert_eq!(prune_plan(&five, 2, None), vec![1, 3, 0]);
        assert_eq!(prune_plan(&five, 5, None), Vec::<usize>::new());
        assert_eq!(prune_plan(&five, 7, None), Vec::<usize>::new());
        assert_eq!(prune_plan(&[], 1, None), Vec::<usize>::new());
    }

    #[test]
    fn prune_never_deletes_the_protected_backup_and_counts_it() {
        let five = names(&[3, 1, 5, 2, 4]);
        // The protected backup is the oldest by name (a device clock ran ahead before).
        let protect = five[1].clone();
        assert_eq!(prune_plan(&five, 1, Some(&protect)), vec![3, 0, 4, 2]);
        assert_eq!(prune_plan(&five, 2, Some(&protect)), vec![3, 0, 4]);
        // Not listed (yet): it still takes one of the places.
        let absent = BackupName::new(9, "00000000000000ff").unwrap();
        assert_eq!(prune_plan(&five, 2, Some(&absent)), vec![1, 3, 0, 4]);
    }
}
