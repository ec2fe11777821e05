//! Backups in object storage: a local folder (`file:///abs/path`), S3 (`s3://bucket/prefix`,
//! default feature `aws`), Google Cloud Storage (`gs://bucket/prefix`, feature `gcs`) and
//! Azure Blob Storage (`az://container/prefix`, feature `azure`), through `object_store`.
//!
//! What it does:
//! * names backups `{prefix}/lockbox-{created_unix_ms:013}-{id}.lbx` ([`BackupName`]) and
//!   lists, finds (by id prefix), deletes and prunes them ([`Store`]);
//! * uploads a backup from a blocking `io::Write` ([`UploadWriter`]) as a streaming multipart
//!   upload with bounded memory, aborting it on any error or drop so that a failed upload
//!   never lists as a backup; downloads through a blocking `io::Read` ([`DownloadReader`]);
//! * in a local folder, removes the staging files of killed uploads, never those of a running
//!   one (a flock on the folder; see the `staging` module);
//! * prunes only among backups the caller verified ([`Store::prune`]), and reads object heads
//!   so that a caller with the key can verify them ([`Store::read_heads`]);
//! * in a local folder, flushes every write to the disk before it reports success, or, for
//!   many objects in a row, writes them lazily and flushes them together
//!   ([`Store::put_object_lazily`], [`Store::make_durable`]);
//! * retries transient failures (see [`StoreOptions`] for the policy; [`RETRIES_ENV`] tunes
//!   how often) and classifies errors by fault ([`StoreError`], [`StoreError::is_transient`]).
//!
//! What it does not do: it never sees keys or plaintext. The bytes it stores are already
//! encrypted and authenticated by `lockbox-format`; integrity, truncation and swapping are
//! checked there, not here (a size check on download only catches gross failures early).
//!
//! What it trusts: the storage for availability only. Object names and listings come from
//! the storage and are parsed strictly; anything else under the prefix is ignored.
//! Credentials come from the provider's standard environment variables or explicit options
//! and are never put in URLs, errors or logs.
//!
//! Feature `test-support` adds the `test_support` module: real storage servers on loopback
//! (s3s-fs for S3, Azurite for Azure) for this crate's tests and for end-to-end tests of the CLI.
#![forbid(unsafe_code)]

mod backend;
mod download;
mod error;
mod name;
mod objects;
mod options;
mod staging;
mod store;
#[cfg(feature = "test-support")]
pub mod test_support;
mod upload;

pub use download::DownloadReader;
pub use error::StoreError;
pub use name::{BackupName, ID_LEN, MAX_CREATED_UNIX_MS};
pub use objects::{MAX_OBJECT_NAME_LEN, ObjectInfo, ObjectName, PutIf};
pub use options::{MAX_PART_SIZE, MIN_PART_SIZE, RETRIES_ENV, RETRIES_ENV_LIMIT, StoreOptions};
pub use store::{BackupInfo, MAX_PARTS, Store};
pub use upload::UploadWriter;
