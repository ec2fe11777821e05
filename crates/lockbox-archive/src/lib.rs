//! Directory <-> archive stream with per-block zstd compression.
