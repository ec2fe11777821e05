//! `lockbox encrypt` / `lockbox decrypt`: the raw stream format, like `age`.

use anyhow::{Context, Result};
use lockbox_archive::partial;
use lockbox_crypto::OsRng;
use lockbox_format::{Encoder, EncoderParams, decrypt_stream, encrypt_stream};
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;

use crate::cli::CryptArgs;
use crate::config::Config;
use crate::keysrc;

const IO_BUF: usize = 1 << 20;

pub fn encrypt(args: &CryptArgs, cfg: &Config) -> Result<()> {
    let key = keysrc::load_key(&args.key, cfg)?;
    let mut input = open_input(args.input.as_deref())?;
    let params = EncoderParams {
        created_unix_ms: lockbox_proto::unix_now_ms(),
        ..Default::default()
    };
    let encoder = Encoder::new(&key, params, &mut OsRng)?;
    with_output(args.output.as_deref(), |out| {
        let (mut out, _summary) = encrypt_stream(&mut input, out, encoder).context("encrypting")?;
        out.flush().context("writing output")?;
        Ok(())
    })
}

pub fn decrypt(args: &CryptArgs, cfg: &Config) -> Result<()> {
    let key = keysrc::load_key(&args.key, cfg)?;
    let mut input = open_input(args.input.as_deref())?;
    // The header is checked before any output exists, and its faults told apart (verify).
    let head = lockbox_client::catalog::read_head(&mut input).context("reading input")?;
    if let Err(fault) = lockbox_client::catalog::check_header(&head, &key) {
        let name = args
            .input
            .as_deref()
            .map_or("standard input".into(), |p| p.display().to_string());
        return Err(lockbox_client::catalog::file_error(fault, &name).into());
    }
    let input = io::Cursor::new(head).chain(input);
    with_output(args.output.as_deref(), |out| {
        let (mut out, _summary) = decrypt_stream(input, out, &key).context("decrypting")?;
        out.flush().context("writing output")?;
        Ok(())
    })
}

fn open_input(path: Option<&Path>) -> Result<Box<dyn Read + Send>> {
    Ok(match path {
        None => Box::new(stdin_file()?),
        Some(p) => {
            Box::new(File::open(p).with_context(|| format!("cannot open input {}", p.display()))?)
        }
    })
}

type Output = Box<dyn Write + Send>;

/// Standard input as a plain file handle (a dup of fd 0): `Send`, so the reading thread can
/// read it.
fn stdin_file() -> Result<File> {
    dup(io::stdin().as_fd()).context("cannot use standard input")
}

/// Standard output as a plain file handle (a dup of fd 1): `Send`, so the sealing thread can
/// write to it, and free of std's line buffering.
fn stdout_file() -> Result<File> {
    dup(io::stdout().as_fd()).context("cannot use standard output")
}

fn dup(fd: BorrowedFd<'_>) -> io::Result<File> {
    fd.try_clone_to_owned().map(File::from)
}

/// Runs `f` with a buffered output. A file output is written to a temporary file beside it
/// (`.NAME.lockbox-partial-*`, mode 0600, locked while this run lives) and renamed into place
/// only if `f` succeeds, so a failed run never leaves a partial file under the requested name.
/// Leftovers of killed runs in that directory are removed first (`lockbox_archive::partial`).
fn with_output(path: Option<&Path>, f: impl FnOnce(Output) -> Result<()>) -> Result<()> {
    let Some(path) = path else {
        return f(Box::new(BufWriter::with_capacity(IO_BUF, stdout_file()?)));
    };
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    partial::sweep(dir);
    let tmp = partial::staging_file(path)
        .with_context(|| format!("cannot create a file in {}", dir.display()))?;
    let file = tmp.reopen().context("cannot open temporary output")?;
    f(Box::new(BufWriter::with_capacity(IO_BUF, file)))?;
    tmp.as_file().sync_all().context("cannot sync output")?;
    tmp.persist(path)
        .map_err(|e| e.error)
        .with_context(|| format!("cannot write output {}", path.display()))?;
    Ok(())
}
