use super::*;

const FLEET: &str = "lockbox-test-fleet";

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

fn claims<'a>(issued_at: OffsetDateTime, expires_at: OffsetDateTime) -> TokenClaims<'a> {
    TokenClaims {
        account: "alice",
        audience: FLEET,
        token_id: "t-1",
        issued_at,
        expires_at,
    }
}

fn hours(h: i64) -> time::Duration {
    time::Duration::hours(h)
}

#[test]
fn a_minted_token_verifies_for_its_account_and_fleet() {
    let issuer = Issuer::generate().unwrap();
    let token = issuer
        .mint(b"alice", FLEET, now(), Duration::from_secs(3600))
        .unwrap();
    assert!(token.starts_with("v4.public."));
    let v = issuer.verifier(FLEET).unwrap();
    let ok = v.verify(&token, b"alice", now()).unwrap();
    assert_eq!(ok.account, "alice");
    assert_eq!(ok.token_id.len(), 32);
}

#[test]
fn each_refusal_has_its_own_error() {
    let issuer = Issuer::generate().unwrap();
    let other = Issuer::generate().unwrap();
    let v = issuer.verifier(FLEET).unwrap();
    let t = issuer
        .mint(b"alice", FLEET, now(), Duration::from_secs(600))
        .unwrap();
    let check = |token: &str, account: &[u8]| v.verify(token, account, now()).unwrap_err();

    assert_eq!(check("", b"alice"), TokenError::Missing);
    assert_eq!(check("v4.public.garbage", b"alice"), TokenError::Malformed);
    assert_eq!(
        check(&t.replace("v4.public", "v4.local"), b"alice"),
        TokenError::Malformed
    );
    assert_eq!(check(&t, b"bob"), TokenError::WrongAccount);
    let forged = other
        .mint(b"alice", FLEET, now(), Duration::from_secs(600))
        .unwrap();
    assert_eq!(check(&forged, b"alice"), TokenError::BadSignature);
    let elsewhere = issuer
        .mint(b"alice", "another-fleet", now(), Duration::from_secs(600))
        .unwrap();
    assert_eq!(check(&elsewhere, b"alice"), TokenError::WrongAudience);
    let expired = issuer
        .sign(&claims(now() - hours(2), now() - hours(1)))
        .unwrap();
    assert_eq!(check(&expired, b"alice"), TokenError::Expired);
    let overlong = issuer.sign(&claims(now(), now() + hours(25))).unwrap();
    assert_eq!(check(&overlong, b"alice"), TokenError::LifetimeTooLong);
    let mut no_id = claims(now(), now() + hours(1));
    no_id.token_id = "";
    let no_id = issuer.sign(&no_id).unwrap();
    assert_eq!(check(&no_id, b"alice"), TokenError::MissingClaim("jti"));
}

#[test]
fn the_verifier_clock_bounds_the_window() {
    let issuer = Issuer::generate().unwrap();
    let v = issuer.verifier(FLEET).unwrap();
    let t = issuer.sign(&claims(now(), now() + hours(1))).unwrap();
    // A verifier whose clock is past the expiry refuses, whatever the system clock says.
    assert_eq!(
        v.verify(&t, b"alice", now() + hours(2)).unwrap_err(),
        TokenError::Expired
    );
    assert_eq!(
        v.verify(&t, b"alice", now() - hours(1)).unwrap_err(),
        TokenError::NotYetValid
    );
}

#[test]
fn every_flipped_signature_bit_is_refused() {
    let issuer = Issuer::generate().unwrap();
    let v = issuer.verifier(FLEET).unwrap();
    let t = issuer
        .mint(b"alice", FLEET, now(), Duration::from_secs(600))
        .unwrap();
    let body = t.strip_prefix("v4.public.").unwrap();
    let mut raw = ct_codecs_decode(body);
    for i in 0..raw.len() * 8 {
        raw[i / 8] ^= 1 << (i % 8);
        let tampered = format!("v4.public.{}", ct_codecs_encode(&raw));
        assert!(v.verify(&tampered, b"alice", now()).is_err(), "bit {i}");
        raw[i / 8] ^= 1 << (i % 8);
    }
}

/// base64url without padding, as PASETO writes it.
fn ct_codecs_decode(s: &str) -> Vec<u8> {
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::new();
    for c in s.bytes() {
        bits = (bits << 6) | alphabet.iter().position(|&a| a == c).unwrap() as u32;
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
        }
    }
    out
}

fn ct_codecs_encode(b: &[u8]) -> String {
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    let (mut bits, mut n) = (0u32, 0);
    for &x in b {
        bits = (bits << 8) | u32::from(x);
        n += 8;
        while n >= 6 {
            n -= 6;
            out.push(alphabet[((bits >> n) & 63) as usize] as char);
        }
    }
    if n > 0 {
        out.push(alphabet[((bits << (6 - n)) & 63) as usize] as char);
    }
    out
}

#[test]
fn keys_round_trip_and_stay_out_of_debug() {
    let issuer = Issuer::generate().unwrap();
    let again = Issuer::from_secret_bytes(&issuer.secret_bytes()).unwrap();
    assert_eq!(again.public_key(), issuer.public_key());
    let mut bad = issuer.secret_bytes().to_vec();
    bad[40] ^= 1;
    assert!(Issuer::from_secret_bytes(&bad).is_err());
    let debug = format!("{issuer:?}");
    assert!(!debug.contains(&hex::encode(&issuer.secret_bytes()[..32])));
    assert!(Verifier::from_hex("zz", FLEET).is_err());
    assert!(Verifier::from_hex(&issuer.public_key_hex(), FLEET).is_ok());
}
