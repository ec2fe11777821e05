//! The optional TOML config file: defaults for flags, so a scheduled backup can be one word.
//!
//! ```toml
//! storage  = "s3://my-bucket/phone"   # --to / --from
//! key_file = "/home/me/.config/lockbox/recovery-code"
//! keep     = 7                         # backup --keep
//! keep_daily  = 14                     # backup --keep-daily (snapshots only)
//! keep_weekly = 8                      # backup --keep-weekly (snapshots only)
//! vault    = "https://vault.example:7401"   # key deposit/recover --vault
//! account  = "+15550123456"                 # --account
//! vault_ca = "/etc/lockbox/vault-ca.pem"    # --vault-ca
//! token_file = "/run/user/1000/lockbox-token"  # --token-file (the account token)
//!
//! # The fleet a device pins (what `lockbox dev cluster` writes to D/client.toml):
//! gateway            = "https://gw.example:7400"  # where devices reach the vault
//! gateway_ca         = "/etc/lockbox/gw-ca.pem"   # a private CA for it (optional)
//! fleet_id           = "lockbox-dev"              # the fleet's name, its tokens' audience
//! fleet_public_key   = "…64 hex digits…"          # pinned: signs every manifest
//! witness_public_key = "…64 hex digits…"          # pinned: countersigns every manifest
//! dev_issuer_key     = "/tmp/d/issuer.key"        # DEV ONLY: mint a token for any account
//! ```
//! Precedence: command-line flag, then environment variable, then this file.

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub storage: Option<String>,
    pub key_file: Option<PathBuf>,
    pub keep: Option<usize>,
    pub keep_daily: Option<usize>,
    pub keep_weekly: Option<usize>,
    pub vault: Option<String>,
    pub account: Option<String>,
    pub vault_ca: Option<PathBuf>,
    pub token_file: Option<PathBuf>,
    pub gateway: Option<String>,
    pub gateway_ca: Option<PathBuf>,
    pub fleet_id: Option<String>,
    pub fleet_public_key: Option<String>,
    pub witness_public_key: Option<String>,
    pub dev_issuer_key: Option<PathBuf>,
}

impl Config {
    /// Loads `explicit` (which must exist), else the default path if it exists, else defaults.
    pub fn load(explicit: Option<&Path>) -> Result<Self> {
        let path = match explicit {
            Some(p) => p.to_path_buf(),
            None => match default_path() {
                Some(p) if p.exists() => p,
                _ => return Ok(Self::default()),
            },
        };
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))
    }

    /// The storage URL from a flag, `LOCKBOX_STORAGE`, or the config file.
    pub fn storage(&self, flag: Option<&str>) -> Result<String> {
        if let Some(url) = flag {
            return Ok(url.to_owned());
        }
        if let Some(url) = env_text("LOCKBOX_STORAGE")? {
            return Ok(url.to_string());
        }
        self.storage.clone().context("no storage URL: pass --to/--from URL, set LOCKBOX_STORAGE, or set `storage` in the config file")
    }
}

/// An environment variable's value: `None` if unset. A value that is not UTF-8 is an error
/// (naming the variable, never echoing the value, which may be a recovery code) rather than
/// "unset", so a lower-precedence source is never used behind the user's back.
pub fn env_text(name: &str) -> Result<Option<Zeroizing<String>>> {
    match std::env::var_os(name) {
        None => Ok(None),
        Some(value) => match value.into_string() {
            Ok(text) => Ok(Some(Zeroizing::new(text))),
            Err(_) => bail!("environment variable {name} is set but is not valid UTF-8"),
        },
    }
}

fn default_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("lockbox").join("config.toml"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects_unknown_keys() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "storage = \"file:///x\"\nkeep = 3\n").unwrap();
        let c = Config::load(Some(&p)).unwrap();
        assert_eq!(c.storage.as_deref(), Some("file:///x"));
        assert_eq!(c.keep, Some(3));
        std::fs::write(&p, "storgae = \"typo\"\n").unwrap();
        let err = format!("{:#}", Config::load(Some(&p)).unwrap_err());
        assert!(err.contains("storgae"), "{err}");
    }

    #[test]
    fn explicit_missing_file_is_an_error() {
        assert!(Config::load(Some(Path::new("/nonexistent/lockbox.toml"))).is_err());
    }
}
