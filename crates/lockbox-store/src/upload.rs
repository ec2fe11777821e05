//! [`UploadWriter`]: a blocking `io::Write` feeding a streaming multipart upload on tokio.

use std::io;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, WriteMultipart};
use tokio::runtime::Handle;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::backend::local_error;
use crate::staging::UploadLock;
use crate::store::{Transfer, backup_info};
use crate::{BackupInfo, BackupName, Store, StoreError};

/// Largest buffer handed from the writer thread to the upload task at a time.
const HANDOFF_CHUNK: usize = 256 * 1024;
/// Buffers queued between the writer thread and the upload task.
const HANDOFF_QUEUE: usize = 2;

enum Msg {
    Data(Bytes),
    Finish { size: u64 },
}

/// Writes one backup object. Use it from a blocking thread (`std::thread`,
/// `spawn_blocking`); calling its methods from async code panics (tokio's rule).
///
/// Bytes go to a multipart upload driven on the runtime given to [`Store::upload`], with at
/// most `max_parts_in_flight` parts uploading concurrently and back-pressure on `write`, so
/// memory stays near `(max_parts_in_flight + 1) * part_size` whatever the backup size.
///
/// Only [`UploadWriter::finish`] creates the backup. Any failure, [`UploadWriter::abort`], or
/// dropping the writer aborts the multipart upload, so no object that lists as a backup is
/// left behind. Dropping does not wait for the abort to finish; `abort` does.
/// [`io::Write::flush`] does nothing: parts are only sent when full or at `finish`.
#[derive(Debug)]
pub struct UploadWriter {
    buf: BytesMut,
    chunk: usize,
    written: u64,
    tx: Option<mpsc::Sender<Msg>>,
    task: Option<JoinHandle<Result<BackupInfo, StoreError>>>,
    rt: Handle,
    url: String,
    object: String,
    /// A local folder's upload lock, released after the upload finished or was aborted.
    _lock: Option<UploadLock>,
}

impl Store {
    /// Starts uploading backup `name`; see [`UploadWriter`]. The multipart upload is created
    /// on `rt` in the background: failures surface on a later `write` or on `finish`.
    pub fn upload(&self, name: &BackupName, rt: Handle) -> Result<UploadWriter, StoreError> {
        self.upload_sized(name, rt, None)
    }

    /// [`Self::upload`] of an object expected to be about `expected` bytes: parts grow with
    /// it, so that no object reaches the providers' limit of [`crate::MAX_PARTS`] parts
    /// (fixed 8 MiB parts would cap one object near 78 GiB). An object that outgrows its plan
    /// fails with [`StoreError::TooLarge`] before the limit, never a half-written object.
    pub fn upload_sized(
        &self,
        name: &BackupName,
        rt: Handle,
        expected: Option<u64>,
    ) -> Result<UploadWriter, StoreError> {
        let location = self.location_of(name)?;
        let store = self.backend().for_write(self.url())?;
        let lock = match self.backend().local_root() {
            Some(root) => Some(
                UploadLock::acquire(root)
                    .map_err(|e| local_error(self.url(), format!("locking {}", root.display()), e))?
                    .0,
            ),
            None => None,
        };
        let transfer = self.transfer().for_size(expected);
        let (tx, rx) = mpsc::channel(HANDOFF_QUEUE);
        let job = Job {
            store,
            url: self.url().to_owned(),
            prefix: self.backend().prefix(),
            location: location.clone(),
            transfer,
        };
        let task = rt.spawn(job.run(rx));
        let chunk = HANDOFF_CHUNK.min(transfer.part_size);
        Ok(UploadWriter {
            buf: BytesMut::with_capacity(chunk),
            chunk,
            written: 0,
            tx: Some(tx),
            task: Some(task),
            rt,
            url: self.url().to_owned(),
            object: location.to_string(),
            _lock: lock,
        })
    }
}

impl UploadWriter {
    /// Uploads what is buffered, completes the multipart upload and returns the new backup
    /// as the storage lists it (size checked against the bytes written).
    pub fn finish(mut self) -> Result<BackupInfo, StoreError> {
        self.send_buffer()?;
        let size = self.written;
        self.send(Msg::Finish { size })?;
        self.tx = None;
        self.join()
    }

    /// Aborts the upload and waits until the storage has discarded the uploaded parts.
    pub fn abort(mut self) -> Result<(), StoreError> {
        self.tx = None;
        match self.join() {
            Err(StoreError::UploadAborted { .. }) => Ok(()),
            Err(e) => Err(e),
            Ok(info) => Err(StoreError::TaskFailed {
                url: self.url.clone(),
                object: info.location.to_string(),
                reason: "upload completed although it was aborted".into(),
            }),
        }
    }

    /// Bytes accepted so far.
    pub fn bytes_written(&self) -> u64 {
        self.written
    }

    fn send_buffer(&mut self) -> Result<(), StoreError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let full = std::mem::replace(&mut self.buf, BytesMut::with_capacity(self.chunk));
        self.send(Msg::Data(full.freeze()))
    }

    fn send(&mut self, msg: Msg) -> Result<(), StoreError> {
        let Some(tx) = &self.tx else {
            return Err(self.already_failed());
        };
        if tx.blocking_send(msg).is_ok() {
            return Ok(());
        }
        // The task stopped early: it failed (and aborted); report its error.
        self.tx = None;
        match self.join() {
            Err(e) => Err(e),
            Ok(_) => Err(self.task_failed("upload task finished before the data was sent")),
        }
    }

    fn join(&mut self) -> Result<BackupInfo, StoreError> {
        let Some(task) = self.task.take() else {
            return Err(self.already_failed());
        };
        match self.rt.block_on(task) {
            Ok(result) => result,
            Err(join) => Err(self.task_failed(&join.to_string())),
        }
    }

    fn already_failed(&self) -> StoreError {
        self.task_failed("the upload already failed or finished")
    }

    fn task_failed(&self, reason: &str) -> StoreError {
        StoreError::TaskFailed {
            url: self.url.clone(),
            object: self.object.clone(),
            reason: reason.to_owned(),
        }
    }
}

impl io::Write for UploadWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.tx.is_none() {
            return Err(self.already_failed().into_io());
        }
        let n = data.len().min(self.chunk - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        self.written += n as u64;
        if self.buf.len() == self.chunk {
            self.send_buffer().map_err(StoreError::into_io)?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// How long a dropped writer waits for its abort on a plain thread.
const ABORT_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

impl Drop for UploadWriter {
    fn drop(&mut self) {
        // Closing the channel without `Finish` makes the task abort the multipart upload.
        self.tx = None;
        // On a plain thread (the CLI's pipeline) wait for that abort: the caller usually drops
        // its runtime right after a failure, which would cancel the abort and strand uploaded
        // parts (billed, though never listed). Inside a runtime blocking is not allowed; the
        // abort then completes as long as the runtime lives.
        if tokio::runtime::Handle::try_current().is_err()
            && let Some(task) = self.task.take()
        {
            let _ = self
                .rt
                .block_on(async move { tokio::time::timeout(ABORT_WAIT, task).await });
        }
    }
}

struct Job {
    store: Arc<dyn ObjectStore>,
    url: String,
    prefix: Path,
    location: Path,
    transfer: Transfer,
}

impl Job {
    async fn run(self, mut rx: mpsc::Receiver<Msg>) -> Result<BackupInfo, StoreError> {
        let upload = self
            .store
            .put_multipart(&self.location)
            .await
            .map_err(|e| self.error("starting the upload", e))?;
        let mut parts = WriteMultipart::new_with_chunk_size(upload, self.transfer.part_size);
        let mut put = 0u64;
        loop {
            match rx.recv().await {
                Some(Msg::Data(bytes)) => {
                    put += bytes.len() as u64;
                    if put > self.transfer.capacity() {
                        let _ = parts.abort().await;
                        return Err(StoreError::TooLarge {
                            url: self.url.clone(),
                            object: self.location.to_string(),
                            size: put,
                            limit: self.transfer.capacity(),
                        });
                    }
                    let capacity = self.transfer.max_parts_in_flight;
                    if let Err(e) = parts.wait_for_capacity(capacity).await {
                        // Best effort: the part error is the one worth reporting.
                        let _ = parts.abort().await;
                        return Err(self.error("uploading a part", e));
                    }
                    parts.put(bytes);
                }
                Some(Msg::Finish { size }) => {
                    // `finish` aborts the upload itself when a part or completion fails.
                    parts
                        .finish()
                        .await
                        .map_err(|e| self.error("completing the upload", e))?;
                    return self.verify(size).await;
                }
                None => {
                    parts
                        .abort()
                        .await
                        .map_err(|e| self.error("aborting the upload", e))?;
                    return Err(StoreError::UploadAborted {
                        url: self.url.clone(),
                        object: self.location.to_string(),
                    });
                }
            }
        }
    }

    /// Reads back the stored size; a mismatching object is deleted so it never lists.
    async fn verify(&self, size: u64) -> Result<BackupInfo, StoreError> {
        let meta = self
            .store
            .head(&self.location)
            .await
            .map_err(|e| self.error("checking the uploaded object", e))?;
        if meta.size != size {
            let _ = self.store.delete(&self.location).await;
            return Err(StoreError::Storage {
                url: self.url.clone(),
                operation: format!("checking {}", self.location),
                source: format!("stored {} bytes but {size} were written", meta.size).into(),
            });
        }
        backup_info(&self.prefix, meta).ok_or_else(|| StoreError::Storage {
            url: self.url.clone(),
            operation: format!("checking {}", self.location),
            source: "the uploaded object does not list as a backup".into(),
        })
    }

    fn error(&self, what: &str, e: object_store::Error) -> StoreError {
        StoreError::from_object_store(&self.url, format!("{what} of {}", self.location), e)
    }
}
