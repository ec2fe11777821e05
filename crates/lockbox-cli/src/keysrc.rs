//! Where the recovery code comes from: `--key-file`, then `LOCKBOX_RECOVERY_CODE`, then the
//! config file's `key_file`. Never from argv: a code on the command line lands in shell history
//! and in `ps` output.

use anyhow::{Context, Result, bail};
use lockbox_crypto::{BackupKey, RecoveryCode};
use std::path::Path;
use zeroize::Zeroizing;

use crate::cli::KeyArgs;
use crate::config::Config;

pub const ENV_CODE: &str = "LOCKBOX_RECOVERY_CODE";

pub fn load_key(args: &KeyArgs, cfg: &Config) -> Result<BackupKey> {
    if let Some(path) = &args.key_file {
        return from_file(path);
    }
    if let Some(code) = crate::config::env_text(ENV_CODE)? {
        let parsed = RecoveryCode::parse(&code).with_context(|| format!("in {ENV_CODE}"))?;
        return Ok(parsed.into_key());
    }
    if let Some(path) = &cfg.key_file {
        return from_file(path);
    }
    bail!("no recovery code: pass --key-file FILE or set {ENV_CODE}")
}

fn from_file(path: &Path) -> Result<BackupKey> {
    let text = Zeroizing::new(
        std::fs::read_to_string(path)
            .with_context(|| format!("cannot read key file {}", path.display()))?,
    );
    warn_if_shared(path);
    let parsed =
        RecoveryCode::parse(&text).with_context(|| format!("in key file {}", path.display()))?;
    Ok(parsed.into_key())
}

fn warn_if_shared(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(
            "key file {} is readable by other users; chmod 600 it",
            path.display()
        );
    }
}

/// Writes a new recovery code to `path` with mode 0600, refusing to overwrite anything.
pub fn write_new(path: &Path, code: &RecoveryCode) -> Result<()> {
    let text = zeroize::Zeroizing::new(code.to_grouped());
    write_secret(path, &text)
}

/// A hex-encoded secret from a key file (what [`write_secret`] wrote), never held unzeroized.
pub fn read_secret_hex(path: &Path) -> Result<zeroize::Zeroizing<Vec<u8>>> {
    let text = zeroize::Zeroizing::new(
        std::fs::read_to_string(path)
            .with_context(|| format!("cannot read key file {}", path.display()))?,
    );
    Ok(zeroize::Zeroizing::new(
        hex::decode(text.trim())
            .with_context(|| format!("{} is not a hex key file", path.display()))?,
    ))
}

/// Writes `secret` and a newline to a new file at `path` with mode 0600, fsync'd, refusing to
/// overwrite anything.
pub fn write_secret(path: &Path, secret: &str) -> Result<()> {
    let mut text = Zeroizing::new(String::with_capacity(secret.len() + 1));
    text.push_str(secret);
    text.push('\n');
    lockbox_client::home::create_private(path, text.as_bytes())
        .with_context(|| format!("cannot create key file {}", path.display()))
}
