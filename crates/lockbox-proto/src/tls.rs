//! TLS settings shared by the servers (vault node, gateway): the `[tls]` section of their config
//! files, and loading it into tonic's server identity.

use std::path::{Path, PathBuf};
use tonic::transport::Identity;

/// `[tls]`: the server's certificate chain and private key, PEM files.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot read TLS {what} {path}: {source}")]
pub struct TlsError {
    pub what: &'static str,
    pub path: String,
    pub source: std::io::Error,
}

impl TlsConfig {
    /// Makes relative paths relative to `base` (the config file's directory).
    pub fn resolve_relative(&mut self, base: &Path) {
        for p in [&mut self.cert, &mut self.key] {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
    }

    pub fn identity(&self) -> Result<Identity, TlsError> {
        let read = |what, path: &Path| {
            std::fs::read(path).map_err(|source| TlsError {
                what,
                path: path.display().to_string(),
                source,
            })
        };
        Ok(Identity::from_pem(
            read("certificate", &self.cert)?,
            read("key", &self.key)?,
        ))
    }
}
