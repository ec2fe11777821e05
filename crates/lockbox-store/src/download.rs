//! [`DownloadReader`]: a blocking `io::Read` over an object streamed on tokio.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};

use bytes::Bytes;
use futures::StreamExt;
use object_store::{GetResultPayload, ObjectStoreExt};
use tokio::runtime::Handle;
use tokio::sync::mpsc;

use crate::{BackupInfo, Store, StoreError};

/// Chunks of the response body buffered between the download task and the reader
/// (each is one network read, typically a few KiB to a few hundred KiB).
const QUEUE: usize = 16;

/// What the download task hands the reader: body chunks, or (for a local folder) the open file
/// itself, which the reader then reads directly. object_store would otherwise stream a file in
/// 8 KiB pieces through tokio's blocking pool, which made restores from a folder 2x slower.
#[derive(Debug)]
enum Piece {
    Chunk(Bytes),
    File(File),
}

/// Reads one backup object. Use it from a blocking thread (`std::thread`,
/// `spawn_blocking`); calling `read` from async code panics (tokio's rule).
///
/// The object is streamed by a task on the runtime given to [`Store::download`] through a
/// small bounded queue, so memory stays small whatever the backup size. A stream that ends
/// early or runs past the listed size is an error, not a short read. Dropping the reader
/// cancels the download.
#[derive(Debug)]
pub struct DownloadReader {
    rx: mpsc::Receiver<Result<Piece, StoreError>>,
    current: Bytes,
    file: Option<io::Take<File>>,
    received: u64,
    expected: u64,
    done: bool,
    failed: bool,
    url: String,
    object: String,
}

impl Store {
    /// Starts downloading `info`; see [`DownloadReader`].
    pub fn download(&self, info: &BackupInfo, rt: Handle) -> Result<DownloadReader, StoreError> {
        self.check_location(info)?;
        let store = self.backend().existing(self.url())?;
        let (tx, rx) = mpsc::channel(QUEUE);
        let location = info.location.clone();
        let url = self.url().to_owned();
        rt.spawn(async move {
            let operation = || format!("downloading {location}");
            let result = match store.get(&location).await {
                Ok(result) => result,
                Err(e) => {
                    let _ = tx
                        .send(Err(StoreError::from_object_store(&url, operation(), e)))
                        .await;
                    return;
                }
            };
            let mut stream = match result.payload {
                GetResultPayload::File(file, _) => {
                    let _ = tx.send(Ok(Piece::File(file))).await;
                    return;
                }
                GetResultPayload::Stream(stream) => stream,
            };
            while let Some(item) = stream.next().await {
                let item = item
                    .map(Piece::Chunk)
                    .map_err(|e| StoreError::from_object_store(&url, operation(), e));
                let failed = item.is_err();
                if tx.send(item).await.is_err() || failed {
                    return;
                }
            }
        });
        Ok(DownloadReader {
            rx,
            current: Bytes::new(),
            file: None,
            received: 0,
            expected: info.size,
            done: false,
            failed: false,
            url: self.url().to_owned(),
            object: info.location.to_string(),
        })
    }
}

impl DownloadReader {
    /// Size of the object as listed.
    pub fn expected_size(&self) -> u64 {
        self.expected
    }

    fn next_chunk(&mut self) -> Result<(), StoreError> {
        match self.rx.blocking_recv() {
            Some(Ok(Piece::Chunk(bytes))) => {
                self.received += bytes.len() as u64;
                if self.received > self.expected {
                    return Err(self.size_error());
                }
                self.current = bytes;
                Ok(())
            }
            Some(Ok(Piece::File(mut file))) => {
                let len = file.seek(SeekFrom::End(0)).map_err(|e| self.io_error(e))?;
                if len != self.expected {
                    self.received = len;
                    return Err(self.size_error());
                }
                file.rewind().map_err(|e| self.io_error(e))?;
                // One byte past the listed size, so growth is seen rather than cut off.
                self.file = Some(file.take(self.expected + 1));
                Ok(())
            }
            Some(Err(e)) => Err(e),
            None if self.received == self.expected => {
                self.done = true;
                Ok(())
            }
            None => Err(self.size_error()),
        }
    }

    fn io_error(&self, e: io::Error) -> StoreError {
        StoreError::Storage {
            url: self.url.clone(),
            operation: format!("reading {}", self.object),
            source: Box::new(e),
        }
    }

    fn fill(&mut self, out: &mut [u8]) -> Result<usize, StoreError> {
        while self.current.is_empty() && !self.done && !out.is_empty() {
            if let Some(file) = self.file.as_mut() {
                let read = loop {
                    match file.read(out) {
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        other => break other,
                    }
                };
                return self.count_file_read(read);
            }
            self.next_chunk()?;
        }
        let n = out.len().min(self.current.len());
        out[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }

    /// Accounts for a read straight from the object's file (local folders).
    fn count_file_read(&mut self, read: io::Result<usize>) -> Result<usize, StoreError> {
        let n = read.map_err(|e| self.io_error(e))?;
        self.received += n as u64;
        if self.received > self.expected || (n == 0 && self.received != self.expected) {
            return Err(self.size_error());
        }
        Ok(n)
    }

    fn failed_error(&self) -> StoreError {
        StoreError::TaskFailed {
            url: self.url.clone(),
            object: self.object.clone(),
            reason: "the download already failed".into(),
        }
    }

    fn size_error(&self) -> StoreError {
        StoreError::Storage {
            url: self.url.clone(),
            operation: format!("downloading {}", self.object),
            source: format!(
                "received {} bytes (so far) of an object listed at {} bytes",
                self.received, self.expected
            )
            .into(),
        }
    }
}

impl io::Read for DownloadReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.failed {
            return Err(self.failed_error().into_io());
        }
        self.fill(out).map_err(|e| {
            // Fail for good: later reads must not look like a clean end of file.
            self.failed = true;
            self.rx.close();
            e.into_io()
        })
    }
}
