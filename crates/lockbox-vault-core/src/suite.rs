//! The OPAQUE ciphersuite, the client's Argon2id parameters, and exact wire lengths.

use opaque_ke::Identifiers;
use opaque_ke::argon2::{Algorithm, Argon2, Params, Version};
use opaque_ke::errors::ProtocolError;
use zeroize::{Zeroize, Zeroizing};

use crate::record::AccountId;

/// OPRF ristretto255, TripleDH over ristretto255 with SHA-512, KSF Argon2id (RFC 9807 §7).
#[derive(Debug, Clone, Copy)]
pub struct Suite;

impl opaque_ke::CipherSuite for Suite {
    type OprfCs = opaque_ke::Ristretto255;
    type KeyExchange = opaque_ke::TripleDh<opaque_ke::Ristretto255, sha2::Sha512>;
    type Ksf = Argon2<'static>;
}

/// OPAQUE application context, bound into every key exchange transcript.
pub(crate) const OPAQUE_CONTEXT: &[u8] = b"lockbox/v1/opaque";

/// `RegistrationRequest`: the blinded password element.
pub const REGISTRATION_REQUEST_LEN: usize = 32;
/// `RegistrationResponse`: OPRF evaluation and server public key.
pub const REGISTRATION_RESPONSE_LEN: usize = 64;
/// `RegistrationUpload`, which is also the stored `ServerRegistration`.
pub const REGISTRATION_UPLOAD_LEN: usize = 192;
/// `CredentialRequest` (KE1).
pub const KE1_LEN: usize = 96;
/// `CredentialResponse` (KE2).
pub const KE2_LEN: usize = 320;
/// `CredentialFinalization` (KE3).
pub const KE3_LEN: usize = 64;

/// The OPAQUE identities both sides bind into every transcript: the account and the vault.
pub(crate) fn identifiers<'a>(account: &'a AccountId, server_id: &'a [u8]) -> Identifiers<'a> {
    Identifiers {
        client: Some(account.as_bytes()),
        server: Some(server_id),
    }
}

/// Copies a key out of an opaque-ke result into zeroizing memory and wipes the original:
/// opaque-ke's results do not zeroize themselves on drop.
pub(crate) fn take_key<Z: AsMut<[u8]>>(key: &mut Z) -> Zeroizing<Vec<u8>> {
    let copy = Zeroizing::new(key.as_mut().to_vec());
    key.as_mut().zeroize();
    copy
}

/// Parses an OPAQUE message of exactly `len` bytes; opaque-ke alone would accept trailing bytes.
pub(crate) fn parse_exact<T>(
    bytes: &[u8],
    len: usize,
    parse: impl FnOnce(&[u8]) -> Result<T, ProtocolError>,
) -> Option<T> {
    if bytes.len() != len {
        return None;
    }
    parse(bytes).ok()
}

/// Why a set of Argon2id parameters was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KsfError {
    #[error("Argon2id parameters out of range (m={m_cost_kib} KiB, t={t_cost}, p={p_cost})")]
    OutOfRange {
        m_cost_kib: u32,
        t_cost: u32,
        p_cost: u32,
    },
}

/// The Argon2id cost the client applies to the OPRF output (the OPAQUE KSF). Chosen by the client
/// at enrollment, stored in the record, and returned at login so both sides stay in step; raising
/// it needs a new registration (change password). Valid by construction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KsfParams {
    m_cost_kib: u32,
    t_cost: u32,
    p_cost: u32,
}

impl KsfParams {
    /// Production default: 64 MiB, 3 passes, 1 lane.
    pub const DEFAULT: Self = Self {
        m_cost_kib: 64 * 1024,
        t_cost: 3,
        p_cost: 1,
    };
    /// The weakest parameters a production vault accepts ([`crate::VaultConfig::min_ksf`]):
    /// Argon2's own default (19 MiB, 2 passes, 1 lane), the OWASP minimum.
    pub const PRODUCTION_FLOOR: Self = Self {
        m_cost_kib: 19 * 1024,
        t_cost: 2,
        p_cost: 1,
    };
    /// INSECURE, FOR TESTS ONLY: 256 KiB, 1 pass, so a test login costs about a millisecond.
    pub const INSECURE_TEST_ONLY: Self = Self {
        m_cost_kib: 256,
        t_cost: 1,
        p_cost: 1,
    };
    /// Upper bounds, so a hostile record or server cannot make a device allocate without limit.
    pub const MAX_M_COST_KIB: u32 = 1024 * 1024;
    pub const MAX_T_COST: u32 = 64;
    pub const MAX_P_COST: u32 = 16;
    /// Length of [`Self::to_bytes`].
    pub const ENCODED_LEN: usize = 12;

    pub fn new(m_cost_kib: u32, t_cost: u32, p_cost: u32) -> Result<Self, KsfError> {
        let in_bounds = m_cost_kib <= Self::MAX_M_COST_KIB
            && t_cost <= Self::MAX_T_COST
            && p_cost <= Self::MAX_P_COST;
        if in_bounds && Params::new(m_cost_kib, t_cost, p_cost, None).is_ok() {
            Ok(Self {
                m_cost_kib,
                t_cost,
                p_cost,
            })
        } else {
            Err(KsfError::OutOfRange {
                m_cost_kib,
                t_cost,
                p_cost,
            })
        }
    }

    pub fn m_cost_kib(&self) -> u32 {
        self.m_cost_kib
    }
    pub fn t_cost(&self) -> u32 {
        self.t_cost
    }
    pub fn p_cost(&self) -> u32 {
        self.p_cost
    }

    /// True when every cost is at least `floor`'s.
    pub fn at_least(&self, floor: &Self) -> bool {
        self.m_cost_kib >= floor.m_cost_kib
            && self.t_cost >= floor.t_cost
            && self.p_cost >= floor.p_cost
    }

    /// The Argon2id instance opaque-ke uses as its KSF.
    pub fn argon2(&self) -> Argon2<'static> {
        let params = Params::new(self.m_cost_kib, self.t_cost, self.p_cost, None)
            .unwrap_or_else(|_| Params::default());
        // `new` already accepted these values, so the fallback above cannot be taken.
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
    }

    /// Big-endian m, t, p.
    pub fn to_bytes(&self) -> [u8; Self::ENCODED_LEN] {
        let mut out = [0u8; Self::ENCODED_LEN];
        out[0..4].copy_from_slice(&self.m_cost_kib.to_be_bytes());
        out[4..8].copy_from_slice(&self.t_cost.to_be_bytes());
        out[8..12].copy_from_slice(&self.p_cost.to_be_bytes());
        out
    }

    pub fn from_bytes(bytes: [u8; Self::ENCODED_LEN]) -> Result<Self, KsfError> {
        let word =
            |i: usize| u32::from_be_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
        Self::new(word(0), word(4), word(8))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opaque_ke::{
        ClientLogin, ClientRegistration, ClientRegistrationFinishParameters, RegistrationUpload,
        ServerLogin, ServerLoginParameters, ServerRegistration, ServerSetup,
    };
    use rand_core::OsRng;

    #[test]
    fn wire_lengths_match_opaque_ke() {
        let setup = ServerSetup::<Suite>::new(&mut OsRng);
        let reg = ClientRegistration::<Suite>::start(&mut OsRng, b"pw").unwrap();
        assert_eq!(reg.message.serialize().len(), REGISTRATION_REQUEST_LEN);
        let resp = ServerRegistration::<Suite>::start(&setup, reg.message, b"acct").unwrap();
        assert_eq!(resp.message.serialize().len(), REGISTRATION_RESPONSE_LEN);
        let ksf = KsfParams::INSECURE_TEST_ONLY.argon2();
        let params = ClientRegistrationFinishParameters::new(Default::default(), Some(&ksf));
        let fin = reg
            .state
            .finish(&mut OsRng, b"pw", resp.message, params)
            .unwrap();
        let upload: RegistrationUpload<Suite> = fin.message;
        assert_eq!(upload.serialize().len(), REGISTRATION_UPLOAD_LEN);
        let login = ClientLogin::<Suite>::start(&mut OsRng, b"pw").unwrap();
        assert_eq!(login.message.serialize().len(), KE1_LEN);
        let server = ServerLogin::start(
            &mut OsRng,
            &setup,
            Some(ServerRegistration::finish(upload)),
            login.message,
            b"acct",
            ServerLoginParameters::default(),
        )
        .unwrap();
        assert_eq!(server.message.serialize().len(), KE2_LEN);
        let finish = login
            .state
            .finish(
                &mut OsRng,
                b"pw",
                server.message,
                opaque_ke::ClientLoginFinishParameters::new(None, Default::default(), Some(&ksf)),
            )
            .unwrap();
        assert_eq!(finish.message.serialize().len(), KE3_LEN);
    }

    #[test]
    fn ksf_params_validate_and_round_trip() {
        let p = KsfParams::new(1024, 2, 1).unwrap();
        assert_eq!(KsfParams::from_bytes(p.to_bytes()).unwrap(), p);
        assert!(KsfParams::new(0, 1, 1).is_err());
        assert!(KsfParams::new(1024, 0, 1).is_err());
        assert!(KsfParams::new(1024, 1, 0).is_err());
        assert!(KsfParams::new(KsfParams::MAX_M_COST_KIB + 1, 1, 1).is_err());
        assert!(KsfParams::new(1024, KsfParams::MAX_T_COST + 1, 1).is_err());
        assert!(KsfParams::from_bytes([0xFF; 12]).is_err());
        assert!(KsfParams::DEFAULT.at_least(&KsfParams::PRODUCTION_FLOOR));
        assert!(!KsfParams::INSECURE_TEST_ONLY.at_least(&KsfParams::PRODUCTION_FLOOR));
        let a = KsfParams::INSECURE_TEST_ONLY.argon2();
        assert_eq!(a.params().m_cost(), 256);
        assert_eq!(a.params().t_cost(), 1);
    }
}
