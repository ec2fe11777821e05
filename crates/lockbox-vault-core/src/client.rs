//! The device side of the vault protocol, sans-IO. Each step is a type consumed by the next:
//!
//! ```text
//! enroll:   ClientEnrollment::start -> RegisterStart ... RegistrationStarted -> .finish -> EnrollmentUpload
//! recover:  ClientRecovery::start  -> LoginStart   ... LoginStarted -> .finish -> (KE3, RecoveryOpening)
//!           LoginFinish ... Recovered -> RecoveryOpening::open -> BackupKey
//! ```
//! A wrong password is detected on the device at [`ClientRecovery::finish`] (the OPAQUE envelope
//! does not open); the attempt was already spent at KE1, so the device need not send a KE3.

use lockbox_crypto::BackupKey;
use opaque_ke::errors::ProtocolError;
use opaque_ke::{
    ClientLogin, ClientLoginFinishParameters, ClientRegistration,
    ClientRegistrationFinishParameters, CredentialResponse, RegistrationResponse,
};
use rand_core::{CryptoRng, RngCore};
use zeroize::Zeroizing;

use crate::guess::AttemptLimit;
use crate::pin::{CatalogKey, CatalogPin};
use crate::record::AccountId;
use crate::seal::{open_reply, unwrap, wrap};
use crate::secrets::VaultIdentity;
use crate::session::SessionId;
use crate::suite::{
    KE2_LEN, KsfParams, OPAQUE_CONTEXT, REGISTRATION_RESPONSE_LEN, Suite, identifiers, parse_exact,
    take_key,
};
use crate::vault::Request;

/// Why a client step failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    #[error("malformed registration response from the vault")]
    MalformedRegistrationResponse,
    #[error("malformed KE2 from the vault")]
    MalformedKe2,
    #[error("wrong password")]
    WrongPassword,
    #[error("the vault's OPAQUE public key is not the pinned one")]
    ServerKeyMismatch,
    #[error("the vault's reply does not decrypt under this login's session key")]
    ReplyUndecryptable,
    #[error("the wrapped key does not open with this password's export key")]
    WrappedKeyUndecryptable,
    #[error("the vault's catalog pin is not signed by this backup key")]
    BadCatalogPin,
    #[error("OPAQUE protocol failure")]
    Protocol,
}

fn check_server_key(got: &[u8], vault: &VaultIdentity) -> Result<(), ClientError> {
    if got == vault.public_key {
        Ok(())
    } else {
        Err(ClientError::ServerKeyMismatch)
    }
}

/// A protocol run waiting for the vault's answer: who, to which vault, with which password.
struct Started<S> {
    account: AccountId,
    vault: VaultIdentity,
    password: Zeroizing<Vec<u8>>,
    state: S,
}

impl<S> Started<S> {
    /// Keeps what the second step needs, given the first message and state opaque-ke produced.
    fn begin(
        account: AccountId,
        vault: VaultIdentity,
        password: &[u8],
        start: Result<(Vec<u8>, S), ProtocolError>,
    ) -> Result<(Vec<u8>, Self), ClientError> {
        let (message, state) = start.map_err(|_| ClientError::Protocol)?;
        let run = Self {
            account,
            vault,
            password: Zeroizing::new(password.to_vec()),
            state,
        };
        Ok((message, run))
    }
}

impl<S> core::fmt::Debug for Started<S> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Started")
            .field("account", &self.account)
            .finish_non_exhaustive()
    }
}

/// Enrollment in progress: holds the password until the vault's response arrives.
#[derive(Debug)]
pub struct ClientEnrollment(Started<ClientRegistration<Suite>>);

/// What the device uploads to finish enrollment (fields of [`Request::RegisterFinish`]).
/// `Debug` shows the lengths of the upload and the wrapped key, not their bytes.
#[derive(Clone)]
pub struct EnrollmentUpload {
    pub upload: Vec<u8>,
    pub wrapped_key: Vec<u8>,
    pub attempt_limit: u8,
    pub ksf: KsfParams,
    /// Derived from `K`: lets the vault verify this account's catalog pins.
    pub catalog_key: CatalogKey,
}

impl core::fmt::Debug for EnrollmentUpload {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("EnrollmentUpload")
            .field("upload_len", &self.upload.len())
            .field("wrapped_key_len", &self.wrapped_key.len())
            .field("attempt_limit", &self.attempt_limit)
            .field("ksf", &self.ksf)
            .finish()
    }
}

impl EnrollmentUpload {
    pub fn into_request(self, account: AccountId, session: SessionId) -> Request {
        Request::RegisterFinish {
            account,
            session: session.as_bytes().to_vec(),
            upload: self.upload,
            wrapped_key: self.wrapped_key,
            attempt_limit: self.attempt_limit,
            ksf: self.ksf,
            catalog_key: Some(self.catalog_key),
        }
    }
}

impl ClientEnrollment {
    /// Returns the `RegistrationRequest` to send and the state to keep.
    pub fn start<R: RngCore + CryptoRng>(
        password: &[u8],
        account: AccountId,
        vault: VaultIdentity,
        rng: &mut R,
    ) -> Result<(Vec<u8>, Self), ClientError> {
        let start = ClientRegistration::<Suite>::start(rng, password)
            .map(|s| (s.message.serialize().to_vec(), s.state));
        Started::begin(account, vault, password, start).map(|(msg, run)| (msg, Self(run)))
    }

    /// Finishes OPAQUE registration with Argon2id `ksf`, and wraps `key` under the export key.
    pub fn finish<R: RngCore + CryptoRng>(
        self,
        response: &[u8],
        key: &BackupKey,
        attempt_limit: AttemptLimit,
        ksf: KsfParams,
        rng: &mut R,
    ) -> Result<EnrollmentUpload, ClientError> {
        let response = parse_exact(
            response,
            REGISTRATION_RESPONSE_LEN,
            RegistrationResponse::deserialize,
        )
        .ok_or(ClientError::MalformedRegistrationResponse)?;
        let Self(run) = self;
        let argon2 = ksf.argon2();
        let params = ClientRegistrationFinishParameters::new(
            identifiers(&run.account, &run.vault.server_id),
            Some(&argon2),
        );
        let mut finish = run
            .state
            .finish(rng, &run.password, response, params)
            .map_err(|_| ClientError::Protocol)?;
        let export_key = take_key(&mut finish.export_key);
        check_server_key(&finish.server_s_pk.serialize(), &run.vault)?;
        let wrapped_key = wrap(&export_key, &run.account, key, rng).ok_or(ClientError::Protocol)?;
        Ok(EnrollmentUpload {
            upload: finish.message.serialize().to_vec(),
            wrapped_key,
            attempt_limit: attempt_limit.get(),
            ksf,
            catalog_key: CatalogKey::of(key),
        })
    }
}

/// Recovery in progress, between KE1 and KE2.
#[derive(Debug)]
pub struct ClientRecovery(Started<ClientLogin<Suite>>);

impl ClientRecovery {
    /// Returns KE1 and the state to keep.
    pub fn start<R: RngCore + CryptoRng>(
        password: &[u8],
        account: AccountId,
        vault: VaultIdentity,
        rng: &mut R,
    ) -> Result<(Vec<u8>, Self), ClientError> {
        let start = ClientLogin::<Suite>::start(rng, password)
            .map(|s| (s.message.serialize().to_vec(), s.state));
        Started::begin(account, vault, password, start).map(|(msg, run)| (msg, Self(run)))
    }

    /// Processes KE2 (with the Argon2id parameters the vault returned alongside it) and returns
    /// KE3 plus the state that opens the vault's final reply.
    pub fn finish<R: RngCore + CryptoRng>(
        self,
        ke2: &[u8],
        ksf: KsfParams,
        rng: &mut R,
    ) -> Result<(Vec<u8>, RecoveryOpening), ClientError> {
        let ke2 = parse_exact(ke2, KE2_LEN, CredentialResponse::deserialize)
            .ok_or(ClientError::MalformedKe2)?;
        let Self(run) = self;
        let argon2 = ksf.argon2();
        let params = ClientLoginFinishParameters::new(
            Some(OPAQUE_CONTEXT),
            identifiers(&run.account, &run.vault.server_id),
            Some(&argon2),
        );
        let mut finish =
            run.state
                .finish(rng, &run.password, ke2, params)
                .map_err(|e| match e {
                    ProtocolError::InvalidLoginError => ClientError::WrongPassword,
                    _ => ClientError::Protocol,
                })?;
        let session_key = take_key(&mut finish.session_key);
        let export_key = take_key(&mut finish.export_key);
        check_server_key(&finish.server_s_pk.serialize(), &run.vault)?;
        let opening = RecoveryOpening {
            account: run.account,
            session_key,
            export_key,
        };
        Ok((finish.message.serialize().to_vec(), opening))
    }
}

/// After KE3: the keys that open the vault's `Recovered` reply.
pub struct RecoveryOpening {
    account: AccountId,
    session_key: Zeroizing<Vec<u8>>,
    export_key: Zeroizing<Vec<u8>>,
}

impl core::fmt::Debug for RecoveryOpening {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("RecoveryOpening")
            .field("account", &self.account)
            .finish_non_exhaustive()
    }
}

impl RecoveryOpening {
    /// Opens `sealed_wrapped_key` from [`crate::Reply::Recovered`] and unwraps `K`.
    pub fn open(self, sealed_wrapped_key: &[u8]) -> Result<BackupKey, ClientError> {
        let wrapped = open_reply(&self.session_key, &self.account, sealed_wrapped_key)
            .ok_or(ClientError::ReplyUndecryptable)?;
        unwrap(&self.export_key, &self.account, &wrapped)
            .ok_or(ClientError::WrappedKeyUndecryptable)
    }

    /// [`Self::open`], and the reply's catalog pin (encoded), checked against `K`'s catalog key:
    /// a pin that `K` did not sign is refused, never ignored.
    pub fn open_pinned(
        self,
        sealed_wrapped_key: &[u8],
        catalog_pin: Option<&[u8]>,
    ) -> Result<(BackupKey, Option<CatalogPin>), ClientError> {
        let account = self.account.clone();
        let key = self.open(sealed_wrapped_key)?;
        let pin = match catalog_pin {
            None => None,
            Some(bytes) => {
                let pin = CatalogPin::decode(bytes).ok_or(ClientError::BadCatalogPin)?;
                if !pin.verify(&CatalogKey::of(&key), &account) {
                    return Err(ClientError::BadCatalogPin);
                }
                Some(pin)
            }
        };
        Ok((key, pin))
    }
}
