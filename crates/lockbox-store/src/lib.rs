//! Backups in object storage (local folder, S3, GCS, Azure) via object_store.
