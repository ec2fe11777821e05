//! `backup`, `list`, `restore`, `prune` with everything from flags, the environment and the
//! config file (no device home), and the dispatch to the device commands when a home is
//! enabled. The work itself is `lockbox_client::backup`'s.
//!
//! Prune and "latest" consider only objects whose authenticated headers verify under the key
//! (`lockbox_client::catalog`); `list` needs no key and shows every object that is named like a
//! backup.

use anyhow::{Result, bail};
use lockbox_client::Cancel;
use lockbox_client::Restored;
use lockbox_client::backup::{self, Job};
use lockbox_client::catalog::Catalog;
use lockbox_crypto::BackupKey;
use lockbox_store::Store;

use super::device::{self, Ctx};
use crate::cli::{BackupArgs, ListArgs, PruneArgs, RestoreArgs};
use crate::{keysrc, progress};

/// The store of a low-level command, on its own runtime.
struct Direct {
    rt: tokio::runtime::Runtime,
    store: Store,
    cancel: Cancel,
}

impl Direct {
    fn open(url: &str) -> Result<Self> {
        Ok(Self {
            rt: super::runtime()?,
            store: Store::open(url)?,
            cancel: Cancel::new(),
        })
    }

    fn job<'a>(&'a self, key: &'a BackupKey) -> Job<'a> {
        Job {
            store: &self.store,
            rt: self.rt.handle(),
            key,
            cancel: &self.cancel,
        }
    }
}

pub fn backup(args: &BackupArgs, ctx: &Ctx<'_>) -> Result<()> {
    let on_device = args.to.is_none()
        && args.key.key_file.is_none()
        && lockbox_client::home::Home::new(&ctx.home).is_enabled();
    if args.incremental || args.json || (on_device && !args.stream) {
        return super::snapshot::backup(args, ctx);
    }
    if args.keep_daily.is_some() || args.keep_weekly.is_some() {
        bail!(
            "--keep-daily and --keep-weekly are for snapshots; a single-stream backup takes --keep N"
        );
    }
    if ctx.cfg.keep_daily.is_some() || ctx.cfg.keep_weekly.is_some() {
        eprintln!(
            "lockbox: warning: the config's keep_daily and keep_weekly apply to snapshots; this single-stream backup prunes by `keep` only"
        );
    }
    if on_device {
        return device::backup(args.dir.as_deref(), args.keep, ctx);
    }
    let Some(dir) = &args.dir else {
        bail!("no directory to back up: pass DIR (or run `lockbox enable` to set up this device)");
    };
    let cfg = ctx.cfg;
    let url = cfg.storage(args.to.as_deref())?;
    let keep = args.keep.or(cfg.keep);
    if keep == Some(0) {
        // Refused before uploading: failing after the upload would report a backup that exists.
        bail!("keep = 0 would delete every backup, this one included; keep at least 1");
    }
    let key = keysrc::load_key(&args.key, cfg)?;
    let d = Direct::open(&url)?;
    let (bar, mut on) = progress::device(ctx.quiet);
    let info = backup::backup_dir(&d.job(&key), dir, lockbox_proto::unix_now_ms(), &mut on)?;
    bar.finish_and_clear();
    println!("{}", info.name.id);
    eprintln!(
        "backed up {} to {} ({} bytes)",
        dir.display(),
        url,
        info.size
    );
    if let Some(keep) = keep {
        let (deleted, catalog) = backup::prune_verified(&d.job(&key), keep, Some(&info.name))?;
        warn_rejected(&catalog, "not counted as a backup and not deleted");
        for d in deleted {
            eprintln!("pruned {}", d.name.id);
        }
    }
    Ok(())
}

pub fn list(args: &ListArgs, ctx: &Ctx<'_>) -> Result<()> {
    let on_device = args.from.is_none() && lockbox_client::home::Home::new(&ctx.home).is_enabled();
    if args.snapshots || args.json || on_device {
        return super::snapshot::list(args, ctx);
    }
    let url = ctx.cfg.storage(args.from.as_deref())?;
    let rt = super::runtime()?;
    let store = Store::open(&url)?;
    let backups = rt.block_on(store.list())?;
    if backups.is_empty() {
        eprintln!("no backups at {url}");
        return Ok(());
    }
    println!("{:<16}  {:<24}  {:>14}", "ID", "CREATED (UTC)", "SIZE");
    for b in backups {
        println!(
            "{:<16}  {:<24}  {:>14}",
            b.name.id,
            super::format_ms(b.name.created_unix_ms),
            b.size
        );
    }
    Ok(())
}

pub fn restore(args: &RestoreArgs, ctx: &Ctx<'_>) -> Result<()> {
    if let Some(id) = &args.snapshot {
        return super::snapshot::restore(&args.dest, id, args.path.as_deref(), ctx);
    }
    let vault_flags = args.vault.vault.is_some() || ctx.cfg.vault.is_some();
    if args.vault.account.is_some() && !vault_flags {
        return device::restore_new_phone(args, ctx);
    }
    let plain = args.from.is_none() && args.key.key_file.is_none() && !args.with_password;
    if plain && args.backup.is_none() && lockbox_client::home::Home::new(&ctx.home).is_enabled() {
        return device::restore_here(&args.dest, ctx);
    }
    restore_direct(args, ctx)
}

/// A restore with the store and the key from flags: a recovery code, or the password against
/// a vault node named by --vault.
fn restore_direct(args: &RestoreArgs, ctx: &Ctx<'_>) -> Result<()> {
    let cfg = ctx.cfg;
    let url = cfg.storage(args.from.as_deref())?;
    let key = match args.with_password {
        false => Some(keysrc::load_key(&args.key, cfg)?),
        true => None,
    };
    lockbox_archive::check_destination(&args.dest).map_err(|e| {
        anyhow::Error::from(e).context(format!("cannot restore into {}", args.dest.display()))
    })?;
    let d = Direct::open(&url)?;
    let by_id = match args.backup.as_deref() {
        Some(id) => Some(d.rt.block_on(d.store.find(id))?),
        None => None,
    };
    // A password attempt is spent only once there is a backup to restore and room for it.
    let (key, pin) = match key {
        Some(key) => (key, None),
        None => {
            if by_id.is_none() && !lockbox_client::holds_backups(&d.store, d.rt.handle())? {
                bail!("no backups at {url}");
            }
            super::keyvault::recover_pinned(&d.rt, &args.vault, ctx)?
        }
    };
    let job = d.job(&key);
    let (bar, mut on) = progress::device(ctx.quiet);
    let restored = match by_id {
        Some(info) => {
            backup::restore_backup(&job, &info, &args.dest, &mut on)?;
            Restored::Stream(info)
        }
        // The newest of the snapshots and the single streams, checked against the vault's
        // pin when the key came from the vault; without one, the snapshot's place and date are
        // said for the user to judge.
        None => {
            let first = lockbox_client::restore_first(&job, pin.as_ref(), &args.dest, &mut on)?;
            for why in first.skipped {
                eprintln!("lockbox: warning: {why}; skipped");
            }
            first.restored
        }
    };
    bar.finish_and_clear();
    eprintln!(
        "restored {} into {}",
        device::describe(&restored),
        args.dest.display()
    );
    Ok(())
}

pub fn prune(args: &PruneArgs, ctx: &Ctx<'_>) -> Result<()> {
    if args.snapshots {
        return super::snapshot::prune(args, ctx);
    }
    let url = ctx.cfg.storage(args.from.as_deref())?;
    let key = keysrc::load_key(&args.key, ctx.cfg)?;
    let d = Direct::open(&url)?;
    let Some(keep) = args.keep else {
        bail!(
            "say how many backups to keep: --keep N (--keep-daily and --keep-weekly are for --snapshots)"
        );
    };
    let (deleted, catalog) = backup::prune_verified(&d.job(&key), keep, None)?;
    warn_rejected(&catalog, "not counted as a backup and not deleted");
    for d in deleted {
        println!("{}", d.name.id);
    }
    Ok(())
}

/// One warning per stored object that is not one of this key's intact backups.
fn warn_rejected(catalog: &Catalog, consequence: &str) {
    for (_, r) in &catalog.rejected {
        eprintln!(
            "lockbox: warning: {}; {consequence}",
            lockbox_client::render_error(&r.err)
        );
    }
}
