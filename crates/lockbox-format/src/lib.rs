//! The lockbox backup stream: sans-IO encoder/decoder and Read/Write adapters.
