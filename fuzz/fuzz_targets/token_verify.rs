//! Account tokens arrive from anyone who can reach a gateway or a vault node: whatever the
//! string, the verifier must refuse it cleanly, never panic, and never accept it. The bytes are
//! also turned into claims that the trusted issuer signs (odd accounts, audiences and times),
//! which takes them past the signature into the claim and validity-window checks.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lockbox_token::{Issuer, TokenClaims, Verifier};
use std::sync::OnceLock;
use time::{Duration, OffsetDateTime};

const AUDIENCE: &str = "fleet-a";

fn keys() -> &'static (Issuer, Verifier) {
    static K: OnceLock<(Issuer, Verifier)> = OnceLock::new();
    K.get_or_init(|| {
        let issuer = Issuer::generate().unwrap();
        let verifier = issuer.verifier(AUDIENCE).unwrap();
        (issuer, verifier)
    })
}

fn now() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap()
}

fuzz_target!(|data: &[u8]| {
    let (issuer, verifier) = keys();
    let text = String::from_utf8_lossy(data);
    for token in [text.to_string(), format!("v4.public.{text}")] {
        assert!(
            verifier.verify(&token, b"alice", now()).is_err(),
            "an unsigned string verified as a token"
        );
    }
    let _ = verifier.verify("v4.public.AAAA", data, now());

    // Claims from the bytes: two signed second offsets, then account and audience text.
    let Some((offsets, rest)) = data.split_first_chunk::<8>() else {
        return;
    };
    let secs = |b: [u8; 4]| Duration::seconds(i64::from(i32::from_be_bytes(b)) * 64);
    let (a, b) = offsets.split_at(4);
    let issued_at = now().checked_add(secs(a.try_into().unwrap()));
    let expires_at = issued_at.and_then(|t| t.checked_add(secs(b.try_into().unwrap())));
    let (Some(issued_at), Some(expires_at)) = (issued_at, expires_at) else {
        return;
    };
    let rest = String::from_utf8_lossy(rest);
    let (account, audience) = rest.split_once('|').unwrap_or((&rest, AUDIENCE));
    let claims = TokenClaims {
        account,
        audience,
        token_id: "jti",
        issued_at,
        expires_at,
    };
    if let Ok(token) = issuer.sign(&claims)
        && let Ok(v) = verifier.verify(&token, account.as_bytes(), now())
    {
        assert_eq!(v.account, account);
        assert!(audience == AUDIENCE && expires_at > now());
    }
});
