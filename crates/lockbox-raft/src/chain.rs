//! The MAC chain over a group's log on disk: each stored entry carries
//! `HMAC-SHA256(partition log key, label ‖ group ‖ previous MAC ‖ entry bytes)`, so a replica
//! that reads its log back at start finds any entry altered, swapped, or removed from the
//! middle, unless the editor holds the partition's log key. The first live entry chains from
//! the anchor saved when the log was last purged (zeros before any purge).
//!
//! Rolling the whole log back to an older, self-consistent copy is the rollback mark's to catch
//! ([`crate::mark`]), not the chain's.

use hmac::{Hmac, Mac as _};
use lockbox_crypto::Secret32;
use sha2::Sha256;

use crate::types::GroupId;

pub type Mac = [u8; 32];
/// What the first entry chains from before any purge.
pub const ZERO_ANCHOR: Mac = [0u8; 32];
const LABEL: &[u8] = b"lockbox/v1/raft-log-chain";

/// A partition's log key: the same on every replica of the group (so their chains agree),
/// made with the partition's secrets. Zeroized on drop, redacted in `Debug`.
#[derive(Clone, Debug)]
pub struct LogKey(Secret32);

impl LogKey {
    pub fn new(key: Secret32) -> Self {
        Self(key)
    }

    fn hmac(&self, group: GroupId, prev: &Mac, entry: &[u8]) -> Hmac<Sha256> {
        let mut m = <Hmac<Sha256> as hmac::Mac>::new_from_slice(self.0.expose())
            .expect("HMAC takes any key length");
        m.update(LABEL);
        m.update(&group.to_be_bytes());
        m.update(prev);
        m.update(entry);
        m
    }

    pub fn mac(&self, group: GroupId, prev: &Mac, entry: &[u8]) -> Mac {
        self.hmac(group, prev, entry).finalize().into_bytes().into()
    }

    /// Constant-time check of a stored MAC.
    pub fn verify(&self, group: GroupId, prev: &Mac, entry: &[u8], mac: &Mac) -> bool {
        self.hmac(group, prev, entry).verify_slice(mac).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mac_binds_key_group_predecessor_and_bytes() {
        let k = LogKey::new(Secret32::new([1; 32]));
        let m = k.mac(3, &ZERO_ANCHOR, b"entry");
        assert!(k.verify(3, &ZERO_ANCHOR, b"entry", &m));
        assert!(!k.verify(4, &ZERO_ANCHOR, b"entry", &m), "another group");
        assert!(!k.verify(3, &[9; 32], b"entry", &m), "another predecessor");
        assert!(!k.verify(3, &ZERO_ANCHOR, b"entrY", &m), "other bytes");
        let other = LogKey::new(Secret32::new([2; 32]));
        assert!(!other.verify(3, &ZERO_ANCHOR, b"entry", &m), "another key");
    }
}
