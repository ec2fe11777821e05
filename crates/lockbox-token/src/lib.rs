//! Account tokens: the identity provider's word that a request acts for one account
//! (DESIGN.md §4, "client authentication, at both ends").
//!
//! Does: mint ([`Issuer`]) and verify ([`Verifier`]) PASETO v4.public tokens (Ed25519, no
//! algorithm negotiation: the version and purpose are fixed by the type) whose claims are
//! subject = account id, audience = the vault fleet, a unique id, issued-at / not-before /
//! expiry with a lifetime of at most [`MAX_LIFETIME`]. The token is signed with the implicit
//! assertion [`labels::ACCOUNT_TOKEN`](lockbox_crypto::labels::ACCOUNT_TOKEN), so a PASETO minted
//! by the same key for another purpose never passes here.
//! Does not: decide what an account may do (the vault core does), or keep state: a token may be
//! presented many times during its lifetime (the envelope layer stops byte-for-byte replays).
//! Trusts: `pasetors` (v4.public) and the OS RNG for the signing key and token ids. A production
//! node holds only [`Verifier`]'s public key; [`Issuer`] is the identity provider's, and the dev
//! tooling's.
#![forbid(unsafe_code)]

use lockbox_crypto::labels;
use pasetors::claims::{Claims, ClaimsValidationRules};
use pasetors::errors::{ClaimValidationError as C, Error as PasetoError};
use pasetors::keys::{AsymmetricKeyPair, AsymmetricPublicKey, AsymmetricSecretKey, Generate};
use pasetors::token::UntrustedToken;
use pasetors::version4::V4;
use pasetors::{Public, public};
use rand_core::{OsRng, RngCore};
use std::time::Duration;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use zeroize::Zeroizing;

/// The longest lifetime (expiry − issued-at) a token may have.
pub const MAX_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// Clock skew tolerated between the issuer and the verifier.
pub const MAX_SKEW: Duration = Duration::from_secs(300);
/// Largest token accepted, in bytes (a real one is about 300).
pub const MAX_TOKEN_LEN: usize = 1024;
/// An Ed25519 public key.
pub const PUBLIC_KEY_LEN: usize = 32;
/// An Ed25519 secret key as pasetors stores it: seed ‖ public key.
pub const SECRET_KEY_LEN: usize = 64;

/// Why a token was refused. Each cause is its own variant, so a refusal says what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("no account token was presented")]
    Missing,
    #[error("the account token is not a PASETO v4.public token")]
    Malformed,
    #[error("the account token is not signed by the trusted identity provider")]
    BadSignature,
    #[error("the account token has expired")]
    Expired,
    #[error("the account token is not valid yet")]
    NotYetValid,
    #[error("the account token lives longer than 24 h")]
    LifetimeTooLong,
    #[error("the account token is for another account")]
    WrongAccount,
    #[error("the account token is for another vault fleet")]
    WrongAudience,
    #[error("the account token lacks the claim `{0}`")]
    MissingClaim(&'static str),
    #[error("the account id cannot be carried in a token (it must be UTF-8)")]
    AccountNotUtf8,
    #[error("invalid token key: {0}")]
    Key(&'static str),
    #[error("could not mint the token")]
    Mint,
}

/// The name dev tooling (demo, dev cluster, benchmarks) gives its fleet: the tokens' audience.
pub const DEV_AUDIENCE: &str = "lockbox-dev";

/// The `[auth]` section of a vault or gateway config (DESIGN.md §4): every request must carry a
/// token for its account, signed by this issuer key, for this audience.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    pub issuer_public_key: String,
    pub audience: String,
}

impl AuthConfig {
    /// The `[auth]` section of a config that accepts `issuer`'s tokens for `audience`.
    pub fn toml_section(issuer: &Issuer, audience: &str) -> String {
        format!(
            "[auth]\nissuer_public_key = \"{}\"\naudience = \"{audience}\"\n",
            issuer.public_key_hex()
        )
    }

    pub fn verifier(&self) -> Result<Verifier, TokenError> {
        Verifier::from_hex(&self.issuer_public_key, &self.audience)
    }
}

/// What a verified token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedToken {
    pub account: String,
    pub token_id: String,
    pub expires_at: OffsetDateTime,
}

/// Checks tokens against the identity provider's public key, for one audience (fleet).
#[derive(Clone)]
pub struct Verifier {
    key: AsymmetricPublicKey<V4>,
    audience: String,
}

impl core::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Verifier")
            .field("key", &hex::encode(&self.key.as_bytes()[..8]))
            .field("audience", &self.audience)
            .finish()
    }
}

impl Verifier {
    pub fn new(public_key: &[u8], audience: &str) -> Result<Self, TokenError> {
        if public_key.len() != PUBLIC_KEY_LEN {
            return Err(TokenError::Key("the issuer public key must be 32 bytes"));
        }
        let key = AsymmetricPublicKey::<V4>::from(public_key)
            .map_err(|_| TokenError::Key("not an Ed25519 public key"))?;
        if audience.is_empty() {
            return Err(TokenError::Key("the audience must not be empty"));
        }
        Ok(Self {
            key,
            audience: audience.to_owned(),
        })
    }

    /// From the hex form an operator writes in a config file.
    pub fn from_hex(public_key_hex: &str, audience: &str) -> Result<Self, TokenError> {
        let bytes = hex::decode(public_key_hex.trim())
            .map_err(|_| TokenError::Key("the issuer public key is not hex"))?;
        Self::new(&bytes, audience)
    }

    /// Verifies `token` for `account` at time `now`. Checks, in order: shape, signature,
    /// audience, subject, validity window and lifetime.
    pub fn verify(
        &self,
        token: &str,
        account: &[u8],
        now: OffsetDateTime,
    ) -> Result<VerifiedToken, TokenError> {
        if token.is_empty() {
            return Err(TokenError::Missing);
        }
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Malformed);
        }
        let account = core::str::from_utf8(account).map_err(|_| TokenError::AccountNotUtf8)?;
        let untrusted =
            UntrustedToken::<Public, V4>::try_from(token).map_err(|_| TokenError::Malformed)?;
        let mut rules = ClaimsValidationRules::new();
        rules.validate_audience_with(&self.audience);
        rules.validate_subject_with(account);
        let trusted = public::verify(
            &self.key,
            &untrusted,
            &rules,
            None,
            Some(labels::ACCOUNT_TOKEN),
        )
        .map_err(refusal)?;
        let claims = trusted.payload_claims().ok_or(TokenError::Malformed)?;
        let issued_at = time_claim(claims, "iat")?;
        let not_before = time_claim(claims, "nbf")?;
        let expires_at = time_claim(claims, "exp")?;
        check_window(issued_at, not_before, expires_at, now)?;
        let token_id = claims
            .get_claim("jti")
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty())
            .ok_or(TokenError::MissingClaim("jti"))?;
        Ok(VerifiedToken {
            account: account.to_owned(),
            token_id: token_id.to_owned(),
            expires_at,
        })
    }
}

/// The window is checked here against the caller's clock as well as by pasetors against the
/// system clock, so that tests and the lifetime bound do not depend on when they run.
fn check_window(
    issued_at: OffsetDateTime,
    not_before: OffsetDateTime,
    expires_at: OffsetDateTime,
    now: OffsetDateTime,
) -> Result<(), TokenError> {
    if expires_at - issued_at > MAX_LIFETIME || expires_at - now > MAX_LIFETIME + MAX_SKEW {
        return Err(TokenError::LifetimeTooLong);
    }
    if now >= expires_at {
        return Err(TokenError::Expired);
    }
    if now + MAX_SKEW < not_before.max(issued_at) {
        return Err(TokenError::NotYetValid);
    }
    Ok(())
}

fn time_claim(claims: &Claims, name: &'static str) -> Result<OffsetDateTime, TokenError> {
    let text = claims
        .get_claim(name)
        .and_then(|v| v.as_str())
        .ok_or(TokenError::MissingClaim(name))?;
    OffsetDateTime::parse(text, &Rfc3339).map_err(|_| TokenError::Malformed)
}

fn refusal(e: PasetoError) -> TokenError {
    match e {
        PasetoError::TokenValidation => TokenError::BadSignature,
        PasetoError::ClaimValidation(c) => match c {
            C::Exp => TokenError::Expired,
            C::Nbf | C::Iat => TokenError::NotYetValid,
            C::Aud => TokenError::WrongAudience,
            C::Sub => TokenError::WrongAccount,
            C::NoAud => TokenError::MissingClaim("aud"),
            C::NoSub => TokenError::MissingClaim("sub"),
            C::NoExp => TokenError::MissingClaim("exp"),
            C::NoIat => TokenError::MissingClaim("iat"),
            C::NoNbf => TokenError::MissingClaim("nbf"),
            _ => TokenError::Malformed,
        },
        _ => TokenError::Malformed,
    }
}

/// The identity provider's signing key: mints tokens. Only dev tooling and tests hold one here;
/// in production it belongs to the messaging service's login.
pub struct Issuer {
    secret: AsymmetricSecretKey<V4>,
    public: AsymmetricPublicKey<V4>,
}

impl core::fmt::Debug for Issuer {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Issuer")
            .field("public_key", &self.public_key_hex())
            .finish_non_exhaustive()
    }
}

impl Issuer {
    /// A fresh signing key from the OS RNG.
    pub fn generate() -> Result<Self, TokenError> {
        let pair = AsymmetricKeyPair::<V4>::generate().map_err(|_| TokenError::Mint)?;
        Ok(Self {
            secret: pair.secret,
            public: pair.public,
        })
    }

    /// From the 64-byte secret key (seed ‖ public key) of [`Self::secret_bytes`].
    pub fn from_secret_bytes(bytes: &[u8]) -> Result<Self, TokenError> {
        if bytes.len() != SECRET_KEY_LEN {
            return Err(TokenError::Key("the issuer secret key must be 64 bytes"));
        }
        let secret = AsymmetricSecretKey::<V4>::from(bytes)
            .map_err(|_| TokenError::Key("the issuer secret key does not match its public half"))?;
        let public = AsymmetricPublicKey::<V4>::try_from(&secret)
            .map_err(|_| TokenError::Key("the issuer secret key is malformed"))?;
        Ok(Self { secret, public })
    }

    /// The secret key, for a 0600 key file. Never log it.
    pub fn secret_bytes(&self) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(self.secret.as_bytes().to_vec())
    }

    pub fn public_key(&self) -> [u8; PUBLIC_KEY_LEN] {
        let mut out = [0u8; PUBLIC_KEY_LEN];
        out.copy_from_slice(self.public.as_bytes());
        out
    }

    pub fn public_key_hex(&self) -> String {
        hex::encode(self.public_key())
    }

    pub fn verifier(&self, audience: &str) -> Result<Verifier, TokenError> {
        Verifier::new(&self.public_key(), audience)
    }

    /// A token for `account` and `audience`, valid from `now` for `lifetime`, with a random id.
    pub fn mint(
        &self,
        account: &[u8],
        audience: &str,
        now: OffsetDateTime,
        lifetime: Duration,
    ) -> Result<String, TokenError> {
        let account = core::str::from_utf8(account).map_err(|_| TokenError::AccountNotUtf8)?;
        let mut id = [0u8; 16];
        OsRng.fill_bytes(&mut id);
        let claims = TokenClaims {
            account,
            audience,
            token_id: &hex::encode(id),
            issued_at: now,
            expires_at: now + lifetime,
        };
        self.sign(&claims)
    }

    /// Signs exactly these claims, valid or not: for tests that need expired, premature or
    /// overlong tokens.
    pub fn sign(&self, c: &TokenClaims<'_>) -> Result<String, TokenError> {
        let rfc = |t: OffsetDateTime| t.format(&Rfc3339).map_err(|_| TokenError::Mint);
        let mut claims = Claims::new().map_err(|_| TokenError::Mint)?;
        let set = |r: Result<(), PasetoError>| r.map_err(|_| TokenError::Mint);
        set(claims.subject(c.account))?;
        set(claims.audience(c.audience))?;
        if !c.token_id.is_empty() {
            set(claims.token_identifier(c.token_id))?;
        }
        set(claims.issued_at(&rfc(c.issued_at)?))?;
        set(claims.not_before(&rfc(c.issued_at)?))?;
        set(claims.expiration(&rfc(c.expires_at)?))?;
        public::sign(&self.secret, &claims, None, Some(labels::ACCOUNT_TOKEN))
            .map_err(|_| TokenError::Mint)
    }
}

/// Where a device gets the token for an account (the messaging service's login, in an app).
pub trait TokenSource: Send + Sync + 'static {
    /// A currently valid token for `account`, or `None` if this source has none.
    fn token_for(&self, account: &[u8]) -> Option<String>;
}

/// One token, handed to the device by whoever logged it in. Redacted in Debug.
pub struct FixedToken(Zeroizing<String>);

impl FixedToken {
    pub fn new(token: impl Into<String>) -> Self {
        Self(Zeroizing::new(token.into()))
    }
}

impl core::fmt::Debug for FixedToken {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("FixedToken([REDACTED])")
    }
}

impl TokenSource for FixedToken {
    fn token_for(&self, _account: &[u8]) -> Option<String> {
        Some(self.0.as_str().to_owned())
    }
}

/// Mints a fresh short-lived token per request: the identity provider's role, for the demo, the
/// dev cluster and tests.
#[derive(Debug)]
pub struct MintingSource {
    issuer: std::sync::Arc<Issuer>,
    audience: String,
    lifetime: Duration,
}

impl MintingSource {
    pub fn new(issuer: std::sync::Arc<Issuer>, audience: &str, lifetime: Duration) -> Self {
        Self {
            issuer,
            audience: audience.to_owned(),
            lifetime,
        }
    }
}

impl TokenSource for MintingSource {
    fn token_for(&self, account: &[u8]) -> Option<String> {
        let now = OffsetDateTime::now_utc();
        self.issuer
            .mint(account, &self.audience, now, self.lifetime)
            .ok()
    }
}

/// The claims of one token, as [`Issuer::sign`] writes them.
#[derive(Debug, Clone)]
pub struct TokenClaims<'a> {
    pub account: &'a str,
    pub audience: &'a str,
    pub token_id: &'a str,
    pub issued_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
}

#[cfg(test)]
mod tests;
