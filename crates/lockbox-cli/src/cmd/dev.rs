//! `lockbox dev issuer | token`: a development identity provider. It plays the messaging
//! service's login, which in production alone holds the token key; vault nodes hold only its
//! public half (`[auth] issuer_public_key`).

use anyhow::{Result, bail};
use lockbox_token::Issuer;
use std::path::Path;
use std::time::Duration;

use crate::keysrc;

pub fn issuer(out: &Path) -> Result<()> {
    let issuer = new_issuer(out)?;
    eprintln!("dev issuer key written to {} (mode 0600)", out.display());
    println!("{}", issuer.public_key_hex());
    Ok(())
}

pub fn token(issuer_key: &Path, account: &str, audience: &str, ttl: u64) -> Result<()> {
    if !(1..=lockbox_token::MAX_LIFETIME.as_secs()).contains(&ttl) {
        bail!("--ttl must be 1..=86400 seconds, not {ttl}");
    }
    let issuer = load_issuer(issuer_key)?;
    let now = time::OffsetDateTime::now_utc();
    let token = issuer.mint(account.as_bytes(), audience, now, Duration::from_secs(ttl))?;
    println!("{token}");
    Ok(())
}

/// A fresh dev identity-provider key, written hex-encoded to a new 0600 file `out`.
pub fn new_issuer(out: &Path) -> Result<Issuer> {
    let issuer = Issuer::generate()?;
    keysrc::write_secret(
        out,
        &zeroize::Zeroizing::new(hex::encode(issuer.secret_bytes())),
    )?;
    Ok(issuer)
}

pub fn load_issuer(path: &Path) -> Result<Issuer> {
    let bytes = keysrc::read_secret_hex(path)?;
    Ok(Issuer::from_secret_bytes(&bytes)?)
}
