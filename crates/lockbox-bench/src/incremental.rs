//! `lockbox-bench incremental`: the daily-backup pattern, lockbox's repository against restic in
//! one run on the same machine and the same directory. One run of each step (a second
//! backup needs the state the first left); the times are single samples. Each timed step
//! starts after an untimed `sync`, so neither tool pays for the other's writeback; each restore
//! also after both repositories' cached pages are dropped, so both read them from the disk.

use std::path::Path;
use std::process::Command;

use anyhow::Result;

use crate::{Sample, make_chat_dir, run_ok, timed, write_random};

/// Bytes of every file below `dir`.
fn stored(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(|e| e.ok())
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => stored(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// The day's change: 2,000 messages appended to the first database, two new 2 MiB photos.
/// Returns the bytes it added.
fn day_change(src: &Path) -> Result<u64> {
    use std::io::Write;
    let mut db = std::fs::OpenOptions::new()
        .append(true)
        .open(src.join("Databases/msgstore-0.db"))?;
    let mut added = 0u64;
    for i in 0..2_000 {
        let line = format!(
            "9{i:06}\tuser{}\t2026-12-02\tnew message {i} of the day\n",
            i % 97
        );
        db.write_all(line.as_bytes())?;
        added += line.len() as u64;
    }
    db.sync_all()?;
    std::fs::create_dir_all(src.join("Media/Images"))?;
    for n in 0..2 {
        write_random(&src.join(format!("Media/Images/new-{n}.jpg")), 2 << 20)?;
        added += 2 << 20;
    }
    Ok(added)
}

/// Times `cmd` after flushing what earlier steps left dirty (the source just written, the other
/// tool's repository), untimed: otherwise one tool's writeback lands in the next one's time.
fn quiet_disk_then(cmd: Command) -> Result<Sample> {
    run_ok(&mut Command::new("sync"))?;
    timed(cmd)
}

/// As [`quiet_disk_then`], with the pages of every file below `repos` dropped from the page
/// cache first: a restore reads its repository from the disk, as it would from a provider. A
/// lockbox backup drops its packs' pages as it writes them and restic's keeps them, so without
/// this restic restored from memory and lockbox from the disk.
fn cold_then(cmd: Command, repos: &[&Path]) -> Result<Sample> {
    run_ok(&mut Command::new("sync"))?;
    repos.iter().try_for_each(|repo| evict(repo))?;
    timed(cmd)
}

/// Drops the (clean, once synced) cached pages of every file below `dir`.
fn evict(dir: &Path) -> Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            evict(&entry.path())?;
        } else {
            let file = std::fs::File::open(entry.path())?;
            rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::DontNeed)?;
        }
    }
    Ok(())
}

pub fn bench(lockbox: &Path, dir: &Path, size_mib: u64) -> Result<()> {
    let src = dir.join("chats");
    make_chat_dir(&src, size_mib << 20)?;
    let home = dir.join("home");
    let store = dir.join("store");
    let restic_repo = dir.join("restic");
    let restic = |args: &[&str]| {
        let mut c = Command::new("restic");
        c.env("RESTIC_PASSWORD", "bench")
            .env("RESTIC_CACHE_DIR", dir.join("restic-cache"))
            .args(args)
            .arg("--quiet")
            .arg("-r")
            .arg(&restic_repo);
        c
    };
    run_ok(
        Command::new(lockbox)
            .env("LOCKBOX_CONFIG", "/dev/null")
            .arg("--home")
            .arg(&home)
            .args(["enable", "--account", "bench", "--store"])
            .arg(format!("file://{}", store.display()))
            .arg("--recovery-code"),
    )?;
    run_ok(&mut restic(&["init"]))?;
    let lb_backup = || {
        let mut c = Command::new(lockbox);
        c.env("LOCKBOX_CONFIG", "/dev/null")
            .arg("--quiet")
            .arg("--home")
            .arg(&home)
            .args(["backup", "--incremental"])
            .arg(&src);
        c
    };
    let restic_backup = || {
        let mut c = restic(&["backup"]);
        c.arg(&src);
        c
    };
    let lb1 = quiet_disk_then(lb_backup())?;
    let lb1_bytes = stored(&store);
    let r1 = quiet_disk_then(restic_backup())?;
    let r1_bytes = stored(&restic_repo);
    let changed = day_change(&src)?;
    let lb2 = quiet_disk_then(lb_backup())?;
    let lb2_bytes = stored(&store) - lb1_bytes;
    let r2 = quiet_disk_then(restic_backup())?;
    let r2_bytes = stored(&restic_repo) - r1_bytes;

    let dest = dir.join("restored");
    let repos = [store.as_path(), restic_repo.as_path()];
    let lb_restore = cold_then(
        {
            let mut c = Command::new(lockbox);
            c.env("LOCKBOX_CONFIG", "/dev/null")
                .arg("--quiet")
                .arg("--home")
                .arg(&home)
                .arg("restore")
                .arg(&dest)
                .args(["--snapshot", "latest"]);
            c
        },
        &repos,
    )?;
    std::fs::remove_dir_all(&dest)?;
    let restic_restore = cold_then(
        {
            let mut c = Command::new("sh");
            c.env("RESTIC_PASSWORD", "bench")
                .env("RESTIC_CACHE_DIR", dir.join("restic-cache"))
                .arg("-c")
                .arg(r#"restic restore latest --quiet -r "$1" --target "$2" && sync -f "$2""#)
                .args(["sh".as_ref(), restic_repo.as_os_str(), dest.as_os_str()]);
            c
        },
        &repos,
    )?;

    println!(
        "### Incremental backups of a {size_mib} MiB chat directory to a local folder (one run each)\n"
    );
    println!(
        "The day's change adds {changed} bytes (2,000 messages appended to one database, two new 2 MiB photos).\n"
    );
    println!(
        "| step | lockbox s | restic s | lockbox / restic | lockbox stored MiB | restic stored MiB | lockbox peak RSS MiB | restic peak RSS MiB |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    let row = |step: &str, lb: &Sample, r: &Sample, lb_b: Option<u64>, r_b: Option<u64>| {
        let mib =
            |b: Option<u64>| b.map_or("—".into(), |b| format!("{:.2}", b as f64 / 1048576.0));
        println!(
            "| {step} | {:.3} | {:.3} | {:.2}× | {} | {} | {:.1} | {:.1} |",
            lb.secs,
            r.secs,
            lb.secs / r.secs,
            mib(lb_b),
            mib(r_b),
            lb.rss_kib as f64 / 1024.0,
            r.rss_kib as f64 / 1024.0
        );
    };
    row("first backup", &lb1, &r1, Some(lb1_bytes), Some(r1_bytes));
    row(
        "second backup, after the day's change",
        &lb2,
        &r2,
        Some(lb2_bytes),
        Some(r2_bytes),
    );
    row(
        "restore of the second (repositories cold, synced to disk)",
        &lb_restore,
        &restic_restore,
        None,
        None,
    );
    println!();
    Ok(())
}
