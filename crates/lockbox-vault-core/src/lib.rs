//! Sans-IO Backup Key Vault state machine: OPAQUE server, guess limits, records.
