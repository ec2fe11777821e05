//! `lockbox-bench`: measures lockbox against reference tools on the same data in the same run,
//! and prints a Markdown table of medians, ratios and peak RSS for docs/benchmarks.md.
//!
//! It runs whole commands (the release `lockbox` binary beside this one, `age`, `restic`,
//! `cat`) under GNU `time` for peak RSS, with the input in the page cache and output to
//! /dev/null or a local folder. It asserts nothing: speed is reported, never a test verdict.

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use rand_core::{OsRng, RngCore};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

mod raft;
mod vault;

#[derive(Parser)]
#[command(about = "Benchmarks lockbox against age, restic and cat")]
struct Cli {
    /// The lockbox binary (default: `lockbox` beside this executable)
    #[arg(long, global = true)]
    lockbox: Option<PathBuf>,
    /// Runs per command; the median is reported
    #[arg(long, global = true, default_value_t = 3)]
    runs: usize,
    /// Scratch directory (default: a temporary directory under /var/tmp, on disk)
    #[arg(long, global = true)]
    scratch: Option<PathBuf>,
    #[command(subcommand)]
    what: What,
}

#[derive(Subcommand)]
enum What {
    /// Stream encryption of one random file: lockbox encrypt vs age vs cat
    Stream {
        #[arg(long, default_value_t = 1024)]
        size_mib: u64,
    },
    /// Directory backup to a local folder: lockbox backup vs restic backup
    Backup {
        #[arg(long, default_value_t = 1024)]
        size_mib: u64,
    },
    /// Incremental backups: a first backup, then a day's change (messages appended, two new
    /// photos) and a second: `lockbox backup --incremental` vs `restic backup`, with the bytes
    /// each stored
    Incremental {
        #[arg(long, default_value_t = 1024)]
        size_mib: u64,
    },
    /// Server-side OPAQUE logins per second on one core (in process, client work excluded)
    Opaque {
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
    },
    /// Sealer seal/unseal operations per second: software and PKCS#11 (SoftHSM2)
    Sealer {
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
    },
    /// Single vault node (software sealer, in process, gRPC on loopback): concurrent clients
    /// recovering their keys in a loop. Clients use light Argon2id so the vault is the bottleneck.
    Recover {
        #[arg(long, default_value_t = 8)]
        clients: usize,
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        /// Relay every call through an in-process gateway (limits off)
        #[arg(long)]
        via_gateway: bool,
    },
    /// Replicated writes: five in-process hosts on loopback, concurrent writers over the groups,
    /// with the rollback mark in a sealed file and in a SoftHSM2 token; and each mark store alone
    Raft {
        #[arg(long, default_value_t = 8)]
        groups: u32,
        #[arg(long, default_value_t = 64)]
        writers: usize,
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
    },
    #[command(hide = true)]
    RaftCluster {
        #[arg(long)]
        nodes: u64,
        #[arg(long)]
        mark: String,
        #[arg(long)]
        groups: u32,
        #[arg(long)]
        writers: usize,
        #[arg(long)]
        seconds: f64,
    },
    #[command(hide = true)]
    MarkPkcs11 {
        #[arg(long)]
        seconds: f64,
    },
    #[command(hide = true)]
    SealerPkcs11 {
        #[arg(long)]
        seconds: f64,
    },
}

mod incremental;

pub(crate) struct Sample {
    pub(crate) secs: f64,
    pub(crate) rss_kib: u64,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.what {
        What::Opaque { seconds } => vault::opaque(seconds),
        What::Sealer { seconds } => vault::sealers(seconds),
        What::SealerPkcs11 { seconds } => vault::pkcs11_child(seconds),
        What::Raft {
            groups,
            writers,
            seconds,
        } => raft::bench(groups, writers, seconds),
        What::RaftCluster {
            nodes,
            mark,
            groups,
            writers,
            seconds,
        } => raft::cluster(&mark, nodes, groups, writers, seconds),
        What::MarkPkcs11 { seconds } => raft::pkcs11_mark(seconds),
        What::Recover {
            clients,
            seconds,
            via_gateway,
        } => vault::recover_loop(clients, seconds, via_gateway),
        What::Stream { size_mib } => {
            let (lockbox, scratch) = tools(&cli)?;
            stream(&lockbox, scratch.path(), size_mib, cli.runs)
        }
        What::Backup { size_mib } => {
            let (lockbox, scratch) = tools(&cli)?;
            backup(&lockbox, scratch.path(), size_mib, cli.runs)
        }
        What::Incremental { size_mib } => {
            let (lockbox, scratch) = tools(&cli)?;
            incremental::bench(&lockbox, scratch.path(), size_mib)
        }
    }
}

/// The `lockbox` binary under test and a scratch directory for the reference runs.
fn tools(cli: &Cli) -> Result<(PathBuf, tempfile::TempDir)> {
    let lockbox = match &cli.lockbox {
        Some(p) => p.clone(),
        None => std::env::current_exe()?.with_file_name("lockbox"),
    };
    if !lockbox.exists() {
        bail!(
            "{} not found: run `cargo build --release -p lockbox-cli` first",
            lockbox.display()
        );
    }
    let scratch = match &cli.scratch {
        Some(p) => {
            std::fs::create_dir_all(p)
                .with_context(|| format!("creating the scratch directory {}", p.display()))?;
            tempfile::tempdir_in(p)?
        }
        None => tempfile::tempdir_in("/var/tmp")?,
    };
    Ok((lockbox, scratch))
}

fn stream(lockbox: &Path, dir: &Path, size_mib: u64, runs: usize) -> Result<()> {
    let input = dir.join("input.bin");
    write_random(&input, size_mib << 20)?;
    let key = new_key(lockbox, dir)?;
    let age_key = dir.join("age.key");
    run_ok(Command::new("age-keygen").arg("-o").arg(&age_key))?;
    let recipient = String::from_utf8(
        Command::new("age-keygen")
            .arg("-y")
            .arg(&age_key)
            .output()?
            .stdout,
    )?;
    let cat = measure(runs, || {
        let mut c = Command::new("cat");
        c.arg(&input);
        c
    })?;
    let lb = measure(runs, || {
        let mut c = Command::new(lockbox);
        c.args(["encrypt", "--key-file"]).arg(&key).arg(&input);
        c
    })?;
    let age = measure(runs, || {
        let mut c = Command::new("age");
        c.args(["-e", "-r", recipient.trim()]).arg(&input);
        c
    })?;
    println!(
        "### Stream encryption of {size_mib} MiB of random data (output to /dev/null, median of {runs})\n"
    );
    table(
        size_mib,
        &[("cat", &cat), ("lockbox encrypt", &lb), ("age -e", &age)],
        "lockbox encrypt",
    );
    let (lbx, agex) = (dir.join("input.lbx"), dir.join("input.age"));
    run_ok(
        Command::new(lockbox)
            .args(["encrypt", "--key-file"])
            .arg(&key)
            .arg("-o")
            .arg(&lbx)
            .arg(&input),
    )?;
    run_ok(
        Command::new("age")
            .args(["-e", "-r", recipient.trim(), "-o"])
            .arg(&agex)
            .arg(&input),
    )?;
    let lb_dec = measure(runs, || {
        let mut c = Command::new(lockbox);
        c.args(["decrypt", "--key-file"]).arg(&key).arg(&lbx);
        c
    })?;
    let age_dec = measure(runs, || {
        let mut c = Command::new("age");
        c.args(["-d", "-i"]).arg(&age_key).arg(&agex);
        c
    })?;
    println!("### Stream decryption of the same data (output to /dev/null, median of {runs})\n");
    table(
        size_mib,
        &[
            ("cat", &cat),
            ("lockbox decrypt", &lb_dec),
            ("age -d", &age_dec),
        ],
        "lockbox decrypt",
    );
    Ok(())
}

fn backup(lockbox: &Path, dir: &Path, size_mib: u64, runs: usize) -> Result<()> {
    let src = dir.join("chats");
    make_chat_dir(&src, size_mib << 20)?;
    let key = new_key(lockbox, dir)?;
    let restic_repo = dir.join("restic");
    let store = dir.join("store");
    let store_url = format!("file://{}", store.display());
    // `program` with restic's password and cache set (the cache keeps the runs comparable).
    let with_restic_env = |program: &str| {
        let mut c = Command::new(program);
        c.env("RESTIC_PASSWORD", "bench")
            .env("RESTIC_CACHE_DIR", dir.join("restic-cache"));
        c
    };
    let lb = measure(runs, || {
        let _ = std::fs::remove_dir_all(&store);
        let mut c = Command::new(lockbox);
        c.arg("backup").arg(&src).args(["--to", &store_url]);
        c.arg("--key-file").arg(&key);
        c
    })?;
    let restic = measure(runs, || {
        let _ = std::fs::remove_dir_all(&restic_repo);
        let status = with_restic_env("restic")
            .args(["init", "--quiet", "-r"])
            .arg(&restic_repo)
            .stdout(Stdio::null())
            .status();
        assert!(status.is_ok_and(|s| s.success()), "restic init failed");
        let mut c = with_restic_env("restic");
        c.args(["backup", "--quiet", "-r"])
            .arg(&restic_repo)
            .arg(&src);
        c
    })?;
    println!(
        "### Backup of a {size_mib} MiB chat directory to a local folder (median of {runs})\n"
    );
    table(
        size_mib,
        &[("lockbox backup", &lb), ("restic backup", &restic)],
        "lockbox backup",
    );
    let dest = dir.join("restored");
    let lb_restore = measure(runs, || {
        let _ = std::fs::remove_dir_all(&dest);
        let mut c = Command::new(lockbox);
        c.arg("restore").arg(&dest).args(["--from", &store_url]);
        c.arg("--key-file").arg(&key);
        c
    })?;
    let restic_restore = measure(runs, || {
        let _ = std::fs::remove_dir_all(&dest);
        let mut c = with_restic_env("restic");
        c.args(["restore", "latest", "--quiet", "-r"])
            .arg(&restic_repo)
            .arg("--target")
            .arg(&dest);
        c
    })?;
    // lockbox restore flushes the restored tree to disk (syncfs) before it reports success;
    // restic leaves it in the page cache. The second restic row adds the same flush.
    let restic_synced = measure(runs, || {
        let _ = std::fs::remove_dir_all(&dest);
        let mut c = with_restic_env("sh");
        c.arg("-c")
            .arg(r#"restic restore latest --quiet -r "$1" --target "$2" && sync -f "$2""#)
            .args(["sh".as_ref(), restic_repo.as_os_str(), dest.as_os_str()]);
        c
    })?;
    println!("### Restore of the same backup into a new directory (median of {runs})\n");
    table(
        size_mib,
        &[
            ("lockbox restore (synced to disk)", &lb_restore),
            ("restic restore", &restic_restore),
            ("restic restore + sync", &restic_synced),
        ],
        "lockbox restore (synced to disk)",
    );
    Ok(())
}

/// Runs the command `runs` times (after one warm-up) and returns the median wall time with the
/// largest peak RSS seen.
fn measure(runs: usize, mut make: impl FnMut() -> Command) -> Result<Sample> {
    let mut samples = Vec::new();
    for i in 0..=runs {
        let s = timed(make())?;
        if i > 0 {
            samples.push(s);
        }
    }
    samples.sort_by(|a, b| a.secs.total_cmp(&b.secs));
    let rss_kib = samples.iter().map(|s| s.rss_kib).max().unwrap_or(0);
    Ok(Sample {
        secs: samples[samples.len() / 2].secs,
        rss_kib,
    })
}

pub(crate) fn timed(cmd: Command) -> Result<Sample> {
    let rss_file = tempfile::NamedTempFile::new()?;
    let mut wrapped = Command::new("/usr/bin/time");
    wrapped.arg("-f").arg("%M").arg("-o").arg(rss_file.path());
    wrapped.arg(cmd.get_program()).args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => wrapped.env(k, v),
            None => wrapped.env_remove(k),
        };
    }
    wrapped
        .stdout(File::create("/dev/null")?)
        .stderr(Stdio::piped());
    let start = Instant::now();
    let out = wrapped
        .output()
        .with_context(|| format!("running {:?} (is GNU time installed?)", cmd.get_program()))?;
    let secs = start.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!(
            "{:?} failed: {}",
            cmd.get_program(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let rss_kib = std::fs::read_to_string(rss_file.path())?
        .trim()
        .lines()
        .last()
        .unwrap_or("0")
        .parse()?;
    Ok(Sample { secs, rss_kib })
}

fn table(size_mib: u64, rows: &[(&str, &Sample)], subject: &str) {
    let base = rows
        .iter()
        .find(|(n, _)| *n == subject)
        .map(|(_, s)| s.secs)
        .unwrap_or(1.0);
    println!("| command | median s | MiB/s | peak RSS MiB | time relative to `{subject}` |");
    println!("|---|---:|---:|---:|---:|");
    for (name, s) in rows {
        println!(
            "| {name} | {:.3} | {:.0} | {:.1} | {:.2}× |",
            s.secs,
            size_mib as f64 / s.secs,
            s.rss_kib as f64 / 1024.0,
            s.secs / base
        );
    }
    println!();
}

pub(crate) fn write_random(path: &Path, len: u64) -> Result<()> {
    let mut f = std::io::BufWriter::new(File::create(path)?);
    let mut buf = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        OsRng.fill_bytes(&mut buf[..n]);
        f.write_all(&buf[..n])?;
        left -= n as u64;
    }
    f.flush()?;
    Ok(())
}

/// A chat-like directory: ~25% compressible message text in a few files, ~75% incompressible
/// media in 1–4 MiB files across nested folders.
pub(crate) fn make_chat_dir(root: &Path, total: u64) -> Result<()> {
    std::fs::create_dir_all(root.join("Databases"))?;
    let text_target = total / 4;
    let mut text = Vec::new();
    let mut i = 0u64;
    while (text.len() as u64) < text_target / 4 {
        writeln!(
            text,
            "{i}\tuser{}\t2026-11-{:02}\tmessage number {i} about lunch at {}",
            i % 97,
            i % 28 + 1,
            i % 24
        )?;
        i += 1;
    }
    for n in 0..4 {
        std::fs::write(root.join(format!("Databases/msgstore-{n}.db")), &text)?;
    }
    let mut media = total.saturating_sub(4 * text.len() as u64);
    let mut n = 0u64;
    while media > 0 {
        let folder = root.join(format!(
            "Media/{}",
            ["Images", "Video", "Voice Notes", "Documents"][n as usize % 4]
        ));
        std::fs::create_dir_all(&folder)?;
        let size = media.min((1 + n % 4) << 20);
        write_random(&folder.join(format!("file-{n:05}.bin")), size)?;
        media -= size;
        n += 1;
    }
    Ok(())
}

/// A fresh lockbox recovery-code file in `dir`.
fn new_key(lockbox: &Path, dir: &Path) -> Result<PathBuf> {
    let key = dir.join("key");
    run_ok(
        Command::new(lockbox)
            .args(["key", "new", "--out"])
            .arg(&key),
    )?;
    Ok(key)
}

pub(crate) fn run_ok(cmd: &mut Command) -> Result<()> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {:?}", cmd.get_program()))?;
    if !out.status.success() {
        bail!(
            "{:?} failed: {}",
            cmd.get_program(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}
