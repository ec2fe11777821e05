use anyhow::Result;
use lockbox_crypto::{BackupKey, OsRng};
use std::path::Path;

use crate::keysrc;

pub fn new(out: &Path) -> Result<()> {
    let code = BackupKey::generate(&mut OsRng).recovery_code();
    keysrc::write_new(out, &code)?;
    println!("{}", code.to_grouped().as_str());
    eprintln!(
        "Recovery code written to {} (mode 0600). Write it down and keep it safe: \
         without it your backups cannot be restored.",
        out.display()
    );
    Ok(())
}
