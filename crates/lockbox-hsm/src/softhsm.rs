//! SoftHSM2 for development: a private configuration directory and initialised tokens, for
//! `lockbox dev cluster`, the benchmarks and the test harness. Not for production HSMs, whose
//! tokens their operators initialise.
//!
//! SoftHSM reads `SOFTHSM2_CONF` once, when the module is first loaded in a process, so the
//! processes that use these tokens get the variable in their environment from whoever starts
//! them ([`conf_path`] names the file).

use std::path::{Path, PathBuf};
use std::process::Command;

/// Where Debian's `softhsm2` package installs the PKCS#11 module.
pub const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
/// The variable SoftHSM2 finds its configuration file through.
pub const CONF_ENV: &str = "SOFTHSM2_CONF";
const UTIL: &str = "softhsm2-util";

#[derive(Debug, thiserror::Error)]
pub enum SoftHsmError {
    #[error("cannot write the SoftHSM2 configuration in {dir}: {source}")]
    Write {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot run {UTIL} ({0}); run scripts/setup (installs softhsm2)")]
    Missing(#[source] std::io::Error),
    #[error("{UTIL} --init-token --label {label} failed: {output}")]
    InitToken { label: String, output: String },
}

/// The configuration file [`write_conf`] writes in `dir`.
pub fn conf_path(dir: &Path) -> PathBuf {
    dir.join("softhsm2.conf")
}

/// Writes `dir/softhsm2.conf` with its token directory `dir/tokens` (created), and returns the
/// file's path.
pub fn write_conf(dir: &Path) -> Result<PathBuf, SoftHsmError> {
    let write_err = |source| SoftHsmError::Write {
        dir: dir.to_path_buf(),
        source,
    };
    let tokens = dir.join("tokens");
    std::fs::create_dir_all(&tokens).map_err(write_err)?;
    let conf = conf_path(dir);
    let text = format!(
        "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n",
        tokens.display()
    );
    std::fs::write(&conf, text).map_err(write_err)?;
    Ok(conf)
}

/// Initialises a new token `label` in the configuration [`write_conf`] wrote in `dir`, with
/// these security-officer and user PINs. Run it before any process that should see the token
/// loads the module.
pub fn init_token(
    dir: &Path,
    label: &str,
    so_pin: &str,
    user_pin: &str,
) -> Result<(), SoftHsmError> {
    let out = Command::new(UTIL)
        .args(["--init-token", "--free", "--label", label])
        .args(["--pin", user_pin, "--so-pin", so_pin])
        .env(CONF_ENV, conf_path(dir))
        .output()
        .map_err(SoftHsmError::Missing)?;
    if out.status.success() {
        return Ok(());
    }
    Err(SoftHsmError::InitToken {
        label: label.to_owned(),
        output: format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
        .trim()
        .to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_initialises_in_a_fresh_configuration() {
        let dir = tempfile::tempdir().unwrap();
        let conf = write_conf(dir.path()).unwrap();
        assert_eq!(conf, dir.path().join("softhsm2.conf"));
        init_token(dir.path(), "dev-0", "13579111", "246810").unwrap();
        // The token exists: the same label again is a second token, so list the slots instead.
        let out = Command::new(UTIL)
            .arg("--show-slots")
            .env(CONF_ENV, &conf)
            .output()
            .unwrap();
        assert!(String::from_utf8_lossy(&out.stdout).contains("dev-0"));
    }

    #[test]
    fn a_failed_initialisation_says_why() {
        let dir = tempfile::tempdir().unwrap();
        write_conf(dir.path()).unwrap();
        // softhsm2-util refuses a user PIN shorter than 4 characters.
        let err = init_token(dir.path(), "dev-0", "13579111", "1").unwrap_err();
        assert!(
            matches!(err, SoftHsmError::InitToken { ref label, .. } if label == "dev-0"),
            "{err}"
        );
    }
}
