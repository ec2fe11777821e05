//! The software sealer's key file: format, permission check, atomic replacement.
//!
//! ```text
//! magic "LBXSEALK" ‖ format 0x01 ‖ count u32 BE ‖ count × (key id u32 BE ‖ 32-byte key)
//! ‖ SHA-256 of everything before it
//! ```
//! The checksum catches truncation and corruption; confidentiality comes from mode 0600.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use aws_lc_rs::digest;
use zeroize::Zeroizing;

use crate::{KeyId, SealError};

const MAGIC: &[u8; 8] = b"LBXSEALK";
const FORMAT: u8 = 1;
pub(crate) const KEY_LEN: usize = 32;
const ENTRY_LEN: usize = 4 + KEY_LEN;
const CHECKSUM_LEN: usize = 32;
/// Any permission bit for group or others makes the file unusable.
const FORBIDDEN_MODE_BITS: u32 = 0o077;

pub(crate) type KeyBytes = Zeroizing<[u8; KEY_LEN]>;

fn err(path: &Path, reason: impl Into<String>) -> SealError {
    SealError::KeyFile {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Reads every key from `path`, refusing files that group or others may access.
pub(crate) fn read(path: &Path) -> Result<Vec<(KeyId, KeyBytes)>, SealError> {
    let mut file = File::open(path).map_err(|e| err(path, format!("cannot open: {e}")))?;
    check_permissions(path, &file)?;
    let mut bytes = Zeroizing::new(Vec::new());
    file.read_to_end(&mut bytes)
        .map_err(|e| err(path, format!("cannot read: {e}")))?;
    decode(&bytes).map_err(|reason| err(path, reason))
}

fn check_permissions(path: &Path, file: &File) -> Result<(), SealError> {
    let meta = file
        .metadata()
        .map_err(|e| err(path, format!("cannot stat: {e}")))?;
    if !meta.is_file() {
        return Err(err(path, "not a regular file"));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & FORBIDDEN_MODE_BITS != 0 {
        return Err(err(
            path,
            format!("mode {mode:04o} lets group or others read it; run `chmod 600` on it"),
        ));
    }
    Ok(())
}

/// Writes `keys` to `path` atomically: temp file in the same directory, fsync, rename, fsync
/// of the directory. With `replace == false` an existing file is never overwritten.
pub(crate) fn write(
    path: &Path,
    keys: &[(KeyId, KeyBytes)],
    replace: bool,
) -> Result<(), SealError> {
    let dir = parent_dir(path);
    let bytes = encode(keys);
    // tempfile creates the file with mode 0600 on Unix.
    let mut tmp = tempfile::NamedTempFile::new_in(&dir).map_err(|e| {
        err(
            path,
            format!("cannot create temp file in {}: {e}", dir.display()),
        )
    })?;
    tmp.write_all(&bytes)
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(|e| err(path, format!("cannot write temp file: {e}")))?;
    let persisted = if replace {
        tmp.persist(path).map(drop)
    } else {
        tmp.persist_noclobber(path).map(drop)
    };
    persisted.map_err(|e| {
        err(
            path,
            format!("cannot move temp file into place: {}", e.error),
        )
    })?;
    sync_dir(&dir).map_err(|e| err(path, format!("cannot fsync directory: {e}")))
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

fn encode(keys: &[(KeyId, KeyBytes)]) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(
        MAGIC.len() + 5 + keys.len() * ENTRY_LEN + CHECKSUM_LEN,
    ));
    out.extend_from_slice(MAGIC);
    out.push(FORMAT);
    let count = u32::try_from(keys.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&count.to_be_bytes());
    for (id, key) in keys {
        out.extend_from_slice(&id.0.to_be_bytes());
        out.extend_from_slice(key.as_ref());
    }
    let sum = digest::digest(&digest::SHA256, &out);
    out.extend_from_slice(sum.as_ref());
    out
}

fn decode(bytes: &[u8]) -> Result<Vec<(KeyId, KeyBytes)>, &'static str> {
    let body_len = bytes
        .len()
        .checked_sub(CHECKSUM_LEN)
        .ok_or("file too short")?;
    let (body, sum) = bytes.split_at(body_len);
    let expected = digest::digest(&digest::SHA256, body);
    if expected.as_ref() != sum {
        return Err("checksum mismatch (truncated or corrupted)");
    }
    let rest = body.strip_prefix(MAGIC).ok_or("not a lockbox key file")?;
    let (&format, rest) = rest.split_first().ok_or("file too short")?;
    if format != FORMAT {
        return Err("unsupported key file format");
    }
    let (count, entries) = rest.split_at_checked(4).ok_or("file too short")?;
    let count = u32::from_be_bytes(count.try_into().map_err(|_| "file too short")?);
    if u64::try_from(entries.len()).ok() != Some(u64::from(count) * ENTRY_LEN as u64) || count == 0
    {
        return Err("key count does not match file length");
    }
    let keys: Vec<(KeyId, KeyBytes)> = entries.chunks_exact(ENTRY_LEN).map(decode_entry).collect();
    if !keys.windows(2).all(|w| w[0].0 < w[1].0) {
        return Err("key ids are not strictly increasing");
    }
    Ok(keys)
}

fn decode_entry(entry: &[u8]) -> (KeyId, KeyBytes) {
    let (id, key) = entry.split_at(4);
    let mut id_bytes = [0u8; 4];
    id_bytes.copy_from_slice(id);
    let mut k = Zeroizing::new([0u8; KEY_LEN]);
    k.copy_from_slice(key);
    (KeyId(u32::from_be_bytes(id_bytes)), k)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> KeyBytes {
        Zeroizing::new([b; KEY_LEN])
    }

    #[test]
    fn encode_decode_round_trip() {
        let keys = vec![(KeyId(1), key(1)), (KeyId(2), key(2))];
        let bytes = encode(&keys);
        let back = decode(&bytes).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back[1].0, KeyId(2));
        assert_eq!(*back[1].1, [2u8; KEY_LEN]);
    }

    #[test]
    fn any_corruption_or_truncation_is_rejected() {
        let bytes = encode(&[(KeyId(1), key(1))]);
        for i in 0..bytes.len() {
            let mut b = bytes.to_vec();
            b[i] ^= 0x01;
            assert!(decode(&b).is_err(), "flip at {i} accepted");
            assert!(decode(&bytes[..i]).is_err(), "truncation to {i} accepted");
        }
    }

    #[test]
    fn empty_key_list_is_rejected() {
        assert!(decode(&encode(&[])).is_err());
    }
}
