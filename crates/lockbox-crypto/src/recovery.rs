use core::fmt;
use zeroize::{Zeroize, Zeroizing};

use crate::key::BackupKey;

/// Number of hex digits in a recovery code (the 32 bytes of `K`).
const DIGITS: usize = 64;

/// `K` written for people: 64 hex digits in 16 groups of 4, e.g. `3f2a 9c01 …`.
/// Parsing is lenient: spaces, dashes, newlines and upper case are accepted.
/// Whether the code is the *right* one is decided against a backup's key-check value.
#[derive(Clone, PartialEq, Eq)]
pub struct RecoveryCode(BackupKey);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecoveryCodeError {
    #[error("recovery code has {found} hex digits, expected 64")]
    WrongLength { found: usize },
    #[error("recovery code has an invalid character {ch:?} at position {position}")]
    InvalidCharacter { ch: char, position: usize },
}

impl RecoveryCode {
    pub fn from_key(key: &BackupKey) -> Self {
        Self(key.clone())
    }

    pub fn key(&self) -> &BackupKey {
        &self.0
    }

    pub fn into_key(self) -> BackupKey {
        self.0
    }

    /// Parses a code as people type it. Characters other than hex digits, spaces, tabs,
    /// newlines and dashes are rejected with their position (1-based, in the input).
    pub fn parse(input: &str) -> Result<Self, RecoveryCodeError> {
        let mut digits = Zeroizing::new([0u8; DIGITS]);
        let mut found = 0usize;
        for (i, ch) in input.chars().enumerate() {
            if ch.is_whitespace() || ch == '-' {
                continue;
            }
            let Some(v) = ch.to_digit(16) else {
                return Err(RecoveryCodeError::InvalidCharacter {
                    ch,
                    position: i + 1,
                });
            };
            if found < DIGITS {
                digits[found] = v as u8;
            }
            found += 1;
        }
        if found != DIGITS {
            return Err(RecoveryCodeError::WrongLength { found });
        }
        let mut key = [0u8; 32];
        for (byte, pair) in key.iter_mut().zip(digits.chunks_exact(2)) {
            *byte = (pair[0] << 4) | pair[1];
        }
        let code = Self(BackupKey::from_bytes(key));
        key.zeroize();
        Ok(code)
    }

    /// The grouped form, in a zeroizing string.
    pub fn to_grouped(&self) -> Zeroizing<String> {
        let hex = Zeroizing::new(hex::encode(self.0.expose()));
        let mut out = Zeroizing::new(String::with_capacity(DIGITS + 15));
        for (i, group) in hex.as_bytes().chunks(4).enumerate() {
            if i > 0 {
                out.push(' ');
            }
            out.push_str(core::str::from_utf8(group).expect("hex is ASCII"));
        }
        out
    }
}

/// Displays the grouped code. Only for showing it to its owner.
impl fmt::Display for RecoveryCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_grouped())
    }
}

impl fmt::Debug for RecoveryCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RecoveryCode([REDACTED])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn groups_of_four() {
        let key = BackupKey::from_bytes(core::array::from_fn(|i| i as u8));
        let shown = RecoveryCode::from_key(&key).to_string();
        assert_eq!(shown.split(' ').count(), 16);
        assert!(shown.split(' ').all(|g| g.len() == 4));
        assert!(shown.starts_with("0001 0203 0405"));
    }

    #[test]
    fn lenient_parsing() {
        let key = BackupKey::from_bytes([0xAB; 32]);
        let canonical = RecoveryCode::from_key(&key).to_string();
        let variants = [
            canonical.clone(),
            canonical.replace(' ', ""),
            canonical.replace(' ', "-").to_uppercase(),
            format!("  {}\n", canonical.replace(' ', "\n")),
        ];
        for v in variants {
            assert_eq!(RecoveryCode::parse(&v).unwrap().key(), &key, "{v:?}");
        }
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let short = "ab".repeat(31);
        assert_eq!(
            RecoveryCode::parse(&short),
            Err(RecoveryCodeError::WrongLength { found: 62 })
        );
        let long = "ab".repeat(33);
        assert_eq!(
            RecoveryCode::parse(&long),
            Err(RecoveryCodeError::WrongLength { found: 66 })
        );
        let bad = format!("abcg{}", "0".repeat(60));
        assert_eq!(
            RecoveryCode::parse(&bad),
            Err(RecoveryCodeError::InvalidCharacter {
                ch: 'g',
                position: 4
            })
        );
    }

    #[test]
    fn debug_is_redacted() {
        let code = RecoveryCode::from_key(&BackupKey::from_bytes([0x42; 32]));
        assert_eq!(format!("{code:?}"), "RecoveryCode([REDACTED])");
    }

    proptest! {
        #[test]
        fn display_parse_round_trip(bytes in any::<[u8; 32]>()) {
            let key = BackupKey::from_bytes(bytes);
            let code = RecoveryCode::from_key(&key).to_string();
            let parsed = RecoveryCode::parse(&code).unwrap();
            prop_assert_eq!(parsed.key(), &key);
        }
    }
}
