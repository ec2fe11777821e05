//! `backup`, `list`, `restore`, `prune`: directories to and from object storage.
//!
//! Prune and "latest" consider only objects whose authenticated headers verify under the key
//! (see `verify`); `list` needs no key and shows every object that is named like a backup.
//!
//! The pipeline is synchronous on the calling thread (walk → archive → encrypt) and hands
//! sealed buffers to the store's upload writer, which streams a multipart upload on the runtime.
//! Memory stays bounded by a few chunks and a few upload parts, whatever the backup size.

use anyhow::{Context, Result, bail};
use lockbox_archive::{WriteOptions, restore as restore_archive, scan_size, write_dir};
use lockbox_crypto::{BackupKey, OsRng};
use lockbox_format::{DecryptReader, Encoder, EncoderParams, EncryptWriter, Header};
use lockbox_store::{BackupInfo, BackupName, Store};
use std::io::Read;
use std::path::Path;

use super::verify::{self, Catalog};
use crate::cli::{BackupArgs, ListArgs, PruneArgs, RestoreArgs};
use crate::config::Config;
use crate::{keysrc, progress};

pub fn backup(args: &BackupArgs, cfg: &Config, quiet: bool) -> Result<()> {
    let url = cfg.storage(args.to.as_deref())?;
    let keep = args.keep.or(cfg.keep);
    if keep == Some(0) {
        // Refused before uploading: failing after the upload would report a backup that exists.
        bail!("keep = 0 would delete every backup, this one included; keep at least 1");
    }
    let key = keysrc::load_key(&args.key, cfg)?;
    let rt = super::runtime()?;
    let store = Store::open(&url)?;
    let info = backup_dir(&store, &rt, &args.dir, &key, quiet)?;
    println!("{}", info.name.id);
    eprintln!(
        "backed up {} to {} ({} bytes)",
        args.dir.display(),
        url,
        info.size
    );
    if let Some(keep) = keep {
        for d in prune_verified(&store, &rt, &key, keep, Some(&info.name))? {
            eprintln!("pruned {}", d.name.id);
        }
    }
    Ok(())
}

/// Deletes all but the newest `keep` backups among those whose headers verify under `key`;
/// `protect` (the backup just made) always stays and counts as one of them. Objects that do
/// not verify are reported, never counted, never deleted.
fn prune_verified(
    store: &Store,
    rt: &tokio::runtime::Runtime,
    key: &BackupKey,
    keep: usize,
    protect: Option<&BackupName>,
) -> Result<Vec<BackupInfo>> {
    let catalog = Catalog::load(store, rt, key)?;
    catalog.warn_rejected("not counted as a backup and not deleted");
    Ok(rt.block_on(store.prune(&catalog.verified, keep, protect))?)
}

/// Archives, encrypts and uploads `dir`; returns the finished backup as it lists.
pub fn backup_dir(
    store: &Store,
    rt: &tokio::runtime::Runtime,
    dir: &Path,
    key: &BackupKey,
    quiet: bool,
) -> Result<BackupInfo> {
    let meta =
        std::fs::metadata(dir).with_context(|| format!("cannot back up {}", dir.display()))?;
    if !meta.is_dir() {
        bail!("cannot back up {}: not a directory", dir.display());
    }
    let total = scan_size(dir).ok();
    let bar = progress::bytes(total, "backup", quiet);
    let params = EncoderParams {
        created_unix_ms: super::now_unix_ms(),
        ..Default::default()
    };
    let encoder = Encoder::new(key, params, &mut OsRng)?;
    let name = backup_name(encoder.header());
    let upload = store.upload(&name, rt.handle().clone())?;
    let writer = EncryptWriter::from_encoder(upload, encoder).context("starting the upload")?;
    let mut on_progress = |n| bar.set_position(n);
    let (writer, _stats) = write_dir(dir, writer, &WriteOptions::default(), &mut on_progress)?;
    let (upload, _summary) = writer.finish().context("finishing the stream")?;
    let info = upload.finish()?;
    bar.finish_and_clear();
    Ok(info)
}

pub fn list(args: &ListArgs, cfg: &Config) -> Result<()> {
    let url = cfg.storage(args.from.as_deref())?;
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

pub fn restore(args: &RestoreArgs, cfg: &Config, quiet: bool) -> Result<()> {
    let url = cfg.storage(args.from.as_deref())?;
    let key = match args.with_password {
        false => Some(keysrc::load_key(&args.key, cfg)?),
        true => None,
    };
    lockbox_archive::check_destination(&args.dest)
        .with_context(|| format!("cannot restore into {}", args.dest.display()))?;
    let rt = super::runtime()?;
    let store = Store::open(&url)?;
    let by_id = match args.backup.as_deref() {
        Some(id) => Some(rt.block_on(store.find(id))?),
        None => None,
    };
    // A password attempt is spent only once there is a backup to restore and room for it.
    let key = match key {
        Some(key) => key,
        None => {
            if by_id.is_none() && rt.block_on(store.list())?.is_empty() {
                bail!("no backups at {url}");
            }
            super::keyvault::recover_key(&rt, &args.vault, cfg, quiet)?
        }
    };
    let info = match by_id {
        Some(info) => info,
        None => latest_verified(&store, &rt, &key)?,
    };
    restore_backup(&store, &rt, &info, &key, &args.dest, quiet)?;
    eprintln!(
        "restored backup {} into {}",
        info.name.id,
        args.dest.display()
    );
    Ok(())
}

/// The newest backup whose header verifies under `key` (see [`Catalog::latest`]).
fn latest_verified(
    store: &Store,
    rt: &tokio::runtime::Runtime,
    key: &BackupKey,
) -> Result<BackupInfo> {
    Catalog::load(store, rt, key)?.latest(store.url())
}

/// The object name a stream with this header is stored under.
pub(crate) fn backup_name(header: &Header) -> BackupName {
    BackupName {
        created_unix_ms: header.created_unix_ms,
        id: header.backup_id.short(),
    }
}

/// Downloads, decrypts and unpacks one backup into `dest`, checking first that the object
/// holds the backup its name promises (a provider that swaps two objects is caught here) and,
/// if its header does not open, what is wrong with it.
pub fn restore_backup(
    store: &Store,
    rt: &tokio::runtime::Runtime,
    info: &BackupInfo,
    key: &BackupKey,
    dest: &Path,
    quiet: bool,
) -> Result<()> {
    let mut download = store.download(info, rt.handle().clone())?;
    let head = verify::read_head(&mut download).context("reading the backup header")?;
    verify::check_for_restore(store, rt, info, &head, key)?;
    let reader = DecryptReader::new(std::io::Cursor::new(head).chain(download), key);
    let bar = progress::bytes(None, "restore", quiet);
    let mut on_progress = |n| bar.set_position(n);
    restore_archive(reader, dest, &mut on_progress)
        .with_context(|| format!("restoring backup {} into {}", info.name.id, dest.display()))?;
    bar.finish_and_clear();
    Ok(())
}

pub fn prune(args: &PruneArgs, cfg: &Config) -> Result<()> {
    let url = cfg.storage(args.from.as_deref())?;
    let rt = super::runtime()?;
    let store = Store::open(&url)?;
    let key = keysrc::load_key(&args.key, cfg)?;
    for d in prune_verified(&store, &rt, &key, args.keep, None)? {
        println!("{}", d.name.id);
    }
    Ok(())
}
