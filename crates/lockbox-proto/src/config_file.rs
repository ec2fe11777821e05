//! Reading a server's TOML config file (vault node, gateway): one error type that names the
//! file, so a mistake is reported the same way by every server.

use serde::de::DeserializeOwned;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// Parses `path` with `parse` (deserialize and validate), which gets the file's text.
pub fn load<T: DeserializeOwned>(
    path: &Path,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.into(),
        source,
    })?;
    parse(&text).map_err(|message| ConfigError::Invalid {
        path: path.into(),
        message,
    })
}

/// The directory relative paths in `path` are relative to.
pub fn base_dir(path: &Path) -> &Path {
    path.parent().unwrap_or(Path::new("."))
}
