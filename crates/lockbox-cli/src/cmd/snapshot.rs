//! Incremental snapshots on an enabled device: `backup --incremental`, `list --snapshots`,
//! `restore DEST --snapshot ID|latest`, `check [--read-data]`, `prune --snapshots --keep N`. The work is
//! `lockbox_client`'s (`Device::backup_snapshot` and friends) over `lockbox_repo`.

use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use anyhow::{Result, bail};
use lockbox_client::{Device, DeviceError, SnapshotBackup, SnapshotPrune, VaultPin};
use lockbox_repo::{Keep, PruneReport, RepoError, SnapshotEntry};

use super::device::Ctx;
use crate::cli::{BackupArgs, CheckArgs, ListArgs, PruneArgs};
use crate::progress;

fn require_device(ctx: &Ctx<'_>, what: &str) -> Result<()> {
    if !lockbox_client::home::Home::new(&ctx.home).is_enabled() {
        bail!(
            "{what} needs an enabled device (run `lockbox enable` first); incremental snapshots with --to and a key file are not supported yet"
        );
    }
    Ok(())
}

pub fn backup(args: &BackupArgs, ctx: &Ctx<'_>) -> Result<()> {
    require_device(ctx, "an incremental backup")?;
    if args.key.key_file.is_some() {
        bail!(
            "a snapshot uses the device's own key; --key-file is for single-stream backups with --to"
        );
    }
    let cfg = ctx.cfg;
    let keep = retention(
        args.keep.or(cfg.keep),
        args.keep_daily.or(cfg.keep_daily),
        args.keep_weekly.or(cfg.keep_weekly),
    );
    if keep.is_some_and(|k| k.is_nothing()) {
        // Refused before uploading: failing after the upload would report a snapshot that exists.
        bail!("keep = 0 would forget every snapshot, this one included; keep at least 1");
    }
    // A password device pins the catalog's new end at the vault, which needs the account token.
    let mut device = ctx.open(&args.token)?;
    let (bar, mut on) = progress::device(ctx.quiet);
    let SnapshotBackup { backup, pin } =
        device
            .backup_snapshot(args.dir.as_deref(), &mut on)
            .map_err(|e| match e {
                DeviceError::Repo(RepoError::WrongKey { .. }) => anyhow::Error::new(e).context(
                    "the store holds another key's repository: back up with --stream, or to another store",
                ),
                e => e.into(),
            })?;
    bar.finish_and_clear();
    let complete = backup.stats.vanished + backup.stats.changing == 0;
    let (pruned, pin) = match keep {
        // Older snapshots may hold what an incomplete one lacks: they are not forgotten for it.
        Some(_) if !complete => {
            eprintln!(
                "lockbox: warning: not pruning: this snapshot is incomplete, and older ones may hold what it lacks"
            );
            (None, pin)
        }
        Some(keep) => {
            let SnapshotPrune { report, pin } = device.prune_snapshots(&keep)?;
            (Some(report), pin)
        }
        None => (None, pin),
    };
    let s = &backup.stats;
    if args.json {
        let mut report = serde_json::json!({
            "snapshot": backup.snapshot.id.hex(),
            "seq": backup.snapshot.seq,
            "created_unix_ms": backup.snapshot.created_unix_ms,
            "files": s.files,
            "dirs": s.dirs,
            "symlinks": s.symlinks,
            "bytes": s.bytes,
            "new_chunks": s.new_chunks,
            "new_bytes": s.new_bytes,
            "reused_chunks": s.reused_chunks,
            "reused_bytes": s.reused_bytes,
            "packs": s.packs,
            "adopted_packs": s.adopted_packs,
            "uploaded_bytes": s.uploaded_bytes,
            "cached_files": s.cached_files,
            "vanished": s.vanished,
            "changing": s.changing,
        });
        if let Some(p) = &pruned {
            report["pruned"] = prune_json(p);
        }
        report["vault_pin"] = pin_json(&pin);
        println!("{}", serde_json::to_string_pretty(&report)?);
        incomplete(&backup)?;
        return unpinned(pin, &made_unpinned(backup.snapshot.seq));
    }
    println!("{}", backup.snapshot.id.short());
    if let Some(p) = &pruned {
        say_pruned(p);
    }
    eprintln!(
        "snapshot {} of {} ({} files, {} bytes): {} new bytes in {} packs, {} bytes reused, {} bytes uploaded",
        backup.snapshot.seq,
        device
            .settings()
            .source_dir
            .as_deref()
            .unwrap_or(Path::new("?"))
            .display(),
        s.files,
        s.bytes,
        s.new_bytes,
        s.packs,
        s.reused_bytes,
        s.uploaded_bytes
    );
    if let VaultPin::Pinned { seq } = pin {
        eprintln!("the vault pins the catalog at entry {seq}");
    }
    incomplete(&backup)?;
    unpinned(pin, &made_unpinned(backup.snapshot.seq))
}

fn made_unpinned(seq: u64) -> String {
    format!(
        "snapshot {seq} was made, but the vault did not pin it: until a backup pins again, a new phone restoring with the password cannot catch a storage that hides it"
    )
}

fn pin_json(pin: &VaultPin) -> serde_json::Value {
    match pin {
        VaultPin::NotUsed => serde_json::Value::Null,
        VaultPin::Pinned { seq } => serde_json::json!({ "seq": seq }),
        VaultPin::Failed(e) => serde_json::json!({ "error": lockbox_client::render_error(e) }),
    }
}

/// What the vault was not told of is kept, but the run fails saying `what` (with the exit
/// code of the cause: 3 if the vault's pin contradicts the repository).
fn unpinned(pin: VaultPin, what: &str) -> Result<()> {
    match pin {
        VaultPin::Failed(e) => Err(anyhow::Error::new(e).context(what.to_owned())),
        _ => Ok(()),
    }
}

/// A snapshot that left files out is made and kept, but the run fails (exit 1) saying so.
fn incomplete(backup: &lockbox_repo::Backup) -> Result<()> {
    let (gone, changing) = (backup.stats.vanished, backup.stats.changing);
    if gone + changing > 0 {
        bail!(
            "snapshot {} was made, but it is incomplete: {gone} files vanished and {changing} kept changing while they were read (their paths are in the log); run the backup again",
            backup.snapshot.seq
        );
    }
    Ok(())
}

pub fn prune(args: &PruneArgs, ctx: &Ctx<'_>) -> Result<()> {
    require_device(ctx, "pruning snapshots")?;
    let device = Device::open(&ctx.home, ctx.dev_tokens()?)?;
    // A policy that keeps nothing is refused by the repository's prune itself.
    let Some(keep) = retention(args.keep, args.keep_daily, args.keep_weekly) else {
        bail!("say what to keep: --keep N, --keep-daily N or --keep-weekly N");
    };
    let SnapshotPrune { report, pin } = device.prune_snapshots(&keep)?;
    if args.json {
        let mut out = prune_json(&report);
        out["vault_pin"] = pin_json(&pin);
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        say_pruned(&report);
    }
    unpinned(
        pin,
        "the prune is done, but the vault did not pin the catalog's new end",
    )
}

/// The retention policy the flags (or config) give, if any of them was given.
fn retention(last: Option<usize>, daily: Option<usize>, weekly: Option<usize>) -> Option<Keep> {
    if last.is_none() && daily.is_none() && weekly.is_none() {
        return None;
    }
    Some(Keep {
        last: last.unwrap_or(0),
        daily: daily.unwrap_or(0),
        weekly: weekly.unwrap_or(0),
    })
}

fn prune_json(r: &PruneReport) -> serde_json::Value {
    serde_json::json!({
        "forgotten": r.forgotten,
        "kept": r.kept,
        "packs_deleted": r.packs_deleted,
        "packs_rewritten": r.packs_rewritten,
        "packs_written": r.packs_written,
        "pack_bytes_before": r.pack_bytes_before,
        "pack_bytes_after": r.pack_bytes_after,
        "index_objects_deleted": r.index_objects_deleted,
        "snapshot_objects_deleted": r.snapshot_objects_deleted,
    })
}

fn say_pruned(r: &PruneReport) {
    eprintln!(
        "pruned: {} snapshots forgotten, {} kept; {} packs deleted, {} rewritten; packs hold {} bytes, were {}",
        r.forgotten,
        r.kept,
        r.packs_deleted,
        r.packs_rewritten,
        r.pack_bytes_after,
        r.pack_bytes_before
    );
}

pub(crate) fn entry_json(e: &SnapshotEntry) -> serde_json::Value {
    serde_json::json!({
        "id": e.id.hex(),
        "seq": e.seq,
        "created_unix_ms": e.created_unix_ms,
        "device": e.device.hex(),
        "files": e.files,
        "bytes": e.bytes,
    })
}

pub fn list(args: &ListArgs, ctx: &Ctx<'_>) -> Result<()> {
    require_device(ctx, "listing snapshots")?;
    let device = ctx.open_offline()?;
    let snapshots = device.snapshot_entries()?;
    if args.json {
        let all: Vec<_> = snapshots.iter().map(entry_json).collect();
        println!("{}", serde_json::to_string_pretty(&all)?);
        return Ok(());
    }
    if snapshots.is_empty() {
        eprintln!(
            "no snapshots yet at {} (`lockbox status` also lists single-stream backups)",
            device.settings().store
        );
        return Ok(());
    }
    println!(
        "{:>5}  {:<16}  {:<19}  {:>8}  {:>14}",
        "SEQ", "ID", "CREATED (UTC)", "FILES", "BYTES"
    );
    for e in snapshots {
        println!(
            "{:>5}  {:<16}  {:<19}  {:>8}  {:>14}",
            e.seq,
            e.id.short(),
            super::format_ms(e.created_unix_ms),
            e.files,
            e.bytes
        );
    }
    Ok(())
}

pub fn restore(dest: &Path, id: &str, part: Option<&Path>, ctx: &Ctx<'_>) -> Result<()> {
    require_device(ctx, "restoring a snapshot")?;
    let device = ctx.open_offline()?;
    let id = (id != "latest").then_some(id);
    let (bar, mut on) = progress::device(ctx.quiet);
    let part = part.map(tree_path).transpose()?;
    let (entry, _) = device.restore_snapshot(dest, id, part.as_deref(), &mut on)?;
    bar.finish_and_clear();
    eprintln!(
        "restored snapshot {} (entry {} of the catalog, made {} UTC) into {}",
        entry.id.short(),
        entry.seq,
        super::format_ms(entry.created_unix_ms),
        dest.display()
    );
    Ok(())
}

pub fn check(args: &CheckArgs, ctx: &Ctx<'_>) -> Result<()> {
    require_device(ctx, "checking the repository")?;
    let device = ctx.open_offline()?;
    let r = device.check_repository(args.read_data)?;
    if args.json {
        let report = serde_json::json!({
            "ok": true,
            "snapshots": r.snapshots,
            "chunks": r.chunks,
            "packs": r.packs,
            "packs_read": r.packs_read,
            "chunks_read": r.chunks_read,
        });
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    eprintln!(
        "repository intact: {} snapshots, {} chunks referenced, {} packs stored{}",
        r.snapshots,
        r.chunks,
        r.packs,
        if args.read_data {
            format!(", {} chunks read and verified", r.chunks_read)
        } else {
            String::new()
        }
    );
    Ok(())
}

/// `--path` as a path in a snapshot's tree: relative, `/`-separated, no `.` or `..`.
fn tree_path(p: &Path) -> Result<Vec<u8>> {
    use std::path::Component;
    let mut out = Vec::new();
    for c in p.components() {
        match c {
            Component::Normal(name) => {
                if !out.is_empty() {
                    out.push(b'/');
                }
                out.extend_from_slice(name.as_bytes());
            }
            Component::CurDir => {}
            _ => bail!(
                "--path {}: give a path inside the snapshot, relative to the backed-up directory",
                p.display()
            ),
        }
    }
    if out.is_empty() {
        bail!("--path is empty; leave it out to restore the whole snapshot");
    }
    Ok(out)
}
