//! Directories to and from object storage: walk → archive → encrypt → upload, and the verified
//! atomic restore. What `lockbox backup` / `restore` / `prune` run, and what [`crate::Device`]
//! runs for an app.
//!
//! The pipeline is synchronous on the calling thread and hands sealed buffers to the store's
//! upload writer, which streams a multipart upload on the runtime behind `rt`. Memory stays
//! bounded by a few chunks and a few upload parts, whatever the backup size. Prune and "latest"
//! consider only objects whose authenticated headers verify under the key ([`crate::catalog`]).

use lockbox_archive::{ArchiveError, WriteOptions, scan_size, write_dir};
use lockbox_crypto::{BackupKey, OsRng};
use lockbox_format::{DecryptReader, Encoder, EncoderParams, EncryptWriter, FormatError, Header};
use lockbox_store::{BackupInfo, BackupName, Store, StoreError};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::runtime::Handle;

use crate::catalog::{self, Catalog, HeaderError};

/// What kind of failure an error is, for a caller that maps failures to exit codes or to
/// what it tells the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Wrong key, recovery code or password, or a refused account token.
    Auth,
    /// Tampered, truncated, swapped or rolled back.
    Integrity,
    /// The vault record is gone for good.
    Destroyed,
    /// Anything else: bad input, unreachable service, full disk.
    Other,
}

impl Fault {
    pub fn of_format(e: &FormatError) -> Fault {
        if e.is_wrong_key() {
            Fault::Auth
        } else if e.is_integrity() {
            Fault::Integrity
        } else {
            Fault::Other
        }
    }
}

/// Why a backup, restore or prune failed.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error(transparent)]
    Header(#[from] HeaderError),
    #[error(
        "object {object} holds backup {found}, not {expected}: the storage provider swapped or renamed backups"
    )]
    Swapped {
        object: String,
        expected: String,
        found: String,
    },
    /// An object named newer than the newest verified backup is one of this key's, damaged or
    /// swapped: restoring an older one would be the rollback the storage is after.
    #[error(
        "the newest backup, {id}, was damaged or swapped; nothing restored (pick an older one by id if you trust it)"
    )]
    NewestDamaged {
        id: String,
        #[source]
        source: Box<BackupError>,
    },
    #[error("no backups at {url}")]
    NoBackups { url: String },
    #[error("cannot back up {}: {source}", path.display())]
    Source {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{what}: {source}")]
    Archive {
        what: String,
        #[source]
        source: ArchiveError,
    },
    #[error("storage: {0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Format(#[from] FormatError),
    /// Reading or writing the stream failed (the download, the upload, or a chunk that does
    /// not open).
    #[error("the backup stream failed: {0}")]
    Stream(#[source] io::Error),
    #[error("cancelled; nothing was kept")]
    Cancelled,
}

impl BackupError {
    /// The most specific fault this error proves; `None` when only its cause knows (an archive
    /// error that carries the decrypting reader's failure).
    pub fn fault(&self) -> Option<Fault> {
        match self {
            Self::Header(h) => Some(h.fault()),
            Self::Swapped { .. } => Some(Fault::Integrity),
            Self::NewestDamaged { source, .. } => source.fault(),
            Self::Format(f) => Some(Fault::of_format(f)),
            Self::Stream(e) => FormatError::from_io(e).map(Fault::of_format),
            Self::Archive { source, .. } => archive_fault(source),
            Self::NoBackups { .. } | Self::Source { .. } | Self::Store(_) | Self::Cancelled => {
                Some(Fault::Other)
            }
        }
    }
}

fn archive_fault(e: &ArchiveError) -> Option<Fault> {
    let io = match e {
        ArchiveError::Input(io) | ArchiveError::Output(io) => io,
        _ => return None,
    };
    FormatError::from_io(io).map(Fault::of_format)
}

/// Set from any thread to stop a running backup or restore at its next buffer: the upload is
/// aborted, a restore's staging directory removed.
#[derive(Debug, Clone, Default)]
pub struct Cancel(Arc<AtomicBool>);

impl Cancel {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// How far a backup or restore is, for a progress bar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub step: Step,
    /// Bytes of file content processed so far.
    pub bytes: u64,
    /// The total, when known up front.
    pub total: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Backup,
    /// Reading the new backup back from the store before anything old is deleted.
    Verify,
    Restore,
}

/// A progress callback; `&mut |_| {}` for none.
pub type OnProgress<'a> = &'a mut dyn FnMut(Progress);

/// Where a backup comes from and goes to.
#[derive(Debug)]
pub struct Job<'a> {
    pub store: &'a Store,
    pub rt: &'a Handle,
    pub key: &'a BackupKey,
    pub cancel: &'a Cancel,
}

/// Archives, encrypts and uploads `dir`; returns the finished backup as it lists.
pub fn backup_dir(
    job: &Job<'_>,
    dir: &Path,
    created_unix_ms: u64,
    on: OnProgress<'_>,
) -> Result<BackupInfo, BackupError> {
    let source = |source| BackupError::Source {
        path: dir.to_owned(),
        source,
    };
    let meta = std::fs::metadata(dir).map_err(source)?;
    if !meta.is_dir() {
        return Err(source(io::Error::other("not a directory")));
    }
    let total = scan_size(dir).ok();
    let params = EncoderParams {
        created_unix_ms,
        ..Default::default()
    };
    let encoder = Encoder::new(job.key, params, &mut OsRng)?;
    let name = backup_name(encoder.header());
    // The directory's size sets the part size, so that no backup outgrows the part limit.
    let upload = job.store.upload_sized(&name, job.rt.clone(), total)?;
    let writer = EncryptWriter::from_encoder(upload, encoder).map_err(BackupError::Stream)?;
    let writer = Cancellable::new(writer, job.cancel);
    let mut tick = |bytes| {
        on(Progress {
            step: Step::Backup,
            bytes,
            total,
        })
    };
    let (writer, _stats) = write_dir(dir, writer, &WriteOptions::default(), &mut tick)
        .map_err(|e| archive(e, job.cancel, format!("backing up {}", dir.display())))?;
    let (upload, _summary) = writer.inner.finish().map_err(BackupError::Stream)?;
    if job.cancel.is_cancelled() {
        upload.abort()?;
        return Err(BackupError::Cancelled);
    }
    Ok(upload.finish()?)
}

/// Downloads, decrypts and unpacks one backup into `dest`, checking first that the object
/// holds the backup its name promises (a provider that swaps two objects is caught here) and,
/// if its header does not open, what is wrong with it. `dest` appears only once every byte
/// verified.
pub fn restore_backup(
    job: &Job<'_>,
    info: &BackupInfo,
    dest: &Path,
    on: OnProgress<'_>,
) -> Result<(), BackupError> {
    let reader = open_verified(job, info)?;
    let reader = Cancellable::new(reader, job.cancel);
    let mut tick = |bytes| {
        on(Progress {
            step: Step::Restore,
            bytes,
            total: None,
        })
    };
    lockbox_archive::restore(reader, dest, &mut tick).map_err(|e| {
        let what = format!("restoring backup {} into {}", info.name.id, dest.display());
        archive(e, job.cancel, what)
    })?;
    Ok(())
}

/// Reads a whole backup back from the store and checks every chunk and the end of the stream,
/// writing nothing: what a key rotation does before it deletes anything old.
pub fn verify_backup(
    job: &Job<'_>,
    info: &BackupInfo,
    on: OnProgress<'_>,
) -> Result<(), BackupError> {
    let mut reader = Cancellable::new(open_verified(job, info)?, job.cancel);
    let mut buf = vec![0u8; 1 << 16];
    let mut bytes = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(read_error(e, job.cancel)),
        };
        bytes += n as u64;
        on(Progress {
            step: Step::Verify,
            bytes,
            total: None,
        });
    }
}

fn open_verified(job: &Job<'_>, info: &BackupInfo) -> Result<impl Read + use<>, BackupError> {
    let mut download = job.store.download(info, job.rt.clone())?;
    let head = catalog::read_head(&mut download).map_err(BackupError::Stream)?;
    catalog::check_for_restore(job.store, job.rt, info, &head, job.key)?;
    Ok(DecryptReader::new(
        io::Cursor::new(head).chain(download),
        job.key,
    ))
}

/// The newest backup whose header verifies under the key (see [`Catalog::latest`]), with the
/// catalog it came from (its `rejected` are the objects passed over).
pub fn latest_verified(job: &Job<'_>) -> Result<(BackupInfo, Catalog), BackupError> {
    let mut catalog = Catalog::load(job.store, job.rt, job.key)?;
    let latest = catalog.latest(job.store.url())?;
    Ok((latest, catalog))
}

/// Deletes all but the newest `keep` backups among those whose headers verify under the key;
/// `protect` (the backup just made) always stays and counts as one of them. Objects that do
/// not verify are never counted, never deleted: they are returned in the catalog's `rejected`.
pub fn prune_verified(
    job: &Job<'_>,
    keep: usize,
    protect: Option<&BackupName>,
) -> Result<(Vec<BackupInfo>, Catalog), BackupError> {
    let catalog = Catalog::load(job.store, job.rt, job.key)?;
    let deleted = job
        .rt
        .block_on(job.store.prune(&catalog.verified, keep, protect))?;
    Ok((deleted, catalog))
}

/// A small multi-threaded runtime for storage and vault I/O; the archive and crypto pipeline
/// runs on the calling thread and hands buffers to it.
pub fn io_runtime() -> io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
}

/// The object name a stream with this header is stored under.
pub fn backup_name(header: &Header) -> BackupName {
    BackupName {
        created_unix_ms: header.created_unix_ms,
        id: header.backup_id.short(),
    }
}

fn archive(e: ArchiveError, cancel: &Cancel, what: String) -> BackupError {
    if cancel.is_cancelled() {
        return BackupError::Cancelled;
    }
    BackupError::Archive { what, source: e }
}

fn read_error(e: io::Error, cancel: &Cancel) -> BackupError {
    if cancel.is_cancelled() {
        return BackupError::Cancelled;
    }
    match StoreError::from_io(e) {
        Ok(s) => BackupError::Store(s),
        Err(e) => BackupError::Stream(e),
    }
}

/// A reader or writer that fails its next call once the job is cancelled.
struct Cancellable<'a, T> {
    inner: T,
    cancel: &'a Cancel,
}

impl<'a, T> Cancellable<'a, T> {
    fn new(inner: T, cancel: &'a Cancel) -> Self {
        Self { inner, cancel }
    }
    fn check(&self) -> io::Result<()> {
        match self.cancel.is_cancelled() {
            true => Err(io::Error::other("cancelled")),
            false => Ok(()),
        }
    }
}

impl<T: Write> Write for Cancellable<'_, T> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.check()?;
        self.inner.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<T: Read> Read for Cancellable<'_, T> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.check()?;
        self.inner.read(buf)
    }
}
