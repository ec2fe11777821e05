//! `Pkcs11Sealer` against a real SoftHSM2 token; each test runs in its own process with its
//! own token directory (see `lockbox_hsm::test_support`).

mod common;

use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeInfo, AttributeType};
use lockbox_hsm::test_support::{SOFTHSM_MODULE, SoftHsm, TestToken, run_isolated};
use lockbox_hsm::{HsmPin, KeyId, Pkcs11Config, Pkcs11Sealer, SealError, Sealer};

fn open_new(hsm: &SoftHsm) -> (TestToken, Pkcs11Sealer) {
    let token = hsm.new_token();
    let sealer = Pkcs11Sealer::open(&token.config).unwrap();
    (token, sealer)
}

#[test]
fn pkcs11_sealer_meets_the_contract() {
    run_isolated(|hsm| {
        let (_, s) = open_new(hsm);
        assert_eq!(s.current_key_id(), KeyId(1));
        common::full_contract(&s);
    });
}

#[test]
fn pkcs11_key_never_leaves_the_token() {
    run_isolated(|hsm| {
        let (token, s) = open_new(hsm);
        let session = token.open_session();
        let label = s.key_label(KeyId(1)).into_bytes();
        let found = session.find_objects(&[Attribute::Label(label)]).unwrap();
        assert_eq!(found.len(), 1, "exactly one key with our label");
        let key = found[0];

        let attrs = session
            .get_attributes(
                key,
                &[
                    AttributeType::Token,
                    AttributeType::Sensitive,
                    AttributeType::Extractable,
                    AttributeType::AlwaysSensitive,
                    AttributeType::NeverExtractable,
                    AttributeType::ValueLen,
                ],
            )
            .unwrap();
        for expected in [
            Attribute::Token(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::AlwaysSensitive(true),
            Attribute::NeverExtractable(true),
            Attribute::ValueLen(32.into()),
        ] {
            assert!(
                attrs.contains(&expected),
                "missing {expected:?} in {attrs:?}"
            );
        }

        // Reading CKA_VALUE is refused.
        let info = session
            .get_attribute_info(key, &[AttributeType::Value])
            .unwrap();
        assert!(matches!(info[..], [AttributeInfo::Sensitive]), "{info:?}");
        let values = session
            .get_attributes(key, &[AttributeType::Value])
            .unwrap();
        assert!(
            values.is_empty(),
            "CKA_VALUE came back: refusing to print it"
        );

        // Wrapping it out under a key we control is refused.
        let wrapper = session
            .generate_key(
                &Mechanism::AesKeyGen,
                &[
                    Attribute::Token(false),
                    Attribute::Wrap(true),
                    Attribute::ValueLen(32.into()),
                ],
            )
            .unwrap();
        let wrapped = session.wrap_key(&Mechanism::AesKeyWrap, wrapper, key);
        assert!(
            matches!(wrapped, Err(CkError::Pkcs11(RvError::KeyUnextractable, _))),
            "{wrapped:?}"
        );

        // And it cannot be made extractable again.
        let flip = session.update_attributes(key, &[Attribute::Extractable(true)]);
        assert!(flip.is_err(), "CKA_EXTRACTABLE went back to true");
    });
}

#[test]
fn pkcs11_restart_unseals_what_the_first_sealer_sealed() {
    run_isolated(|hsm| {
        let (token, first) = open_new(hsm);
        let old = first.seal(common::AAD, common::PLAINTEXT).unwrap();
        assert_eq!(first.rotate().unwrap(), KeyId(2));
        let new = first.seal(common::AAD, common::PLAINTEXT).unwrap();
        drop(first);

        let second = Pkcs11Sealer::open(&token.config).unwrap();
        assert_eq!(
            second.current_key_id(),
            KeyId(2),
            "keys persist in the token"
        );
        for blob in [&old, &new] {
            assert_eq!(
                second.unseal(common::AAD, blob).unwrap().as_slice(),
                common::PLAINTEXT
            );
        }
    });
}

#[test]
fn pkcs11_tokens_do_not_share_keys() {
    run_isolated(|hsm| {
        let (_, a) = open_new(hsm);
        let (_, b) = open_new(hsm);
        let blob = a.seal(common::AAD, common::PLAINTEXT).unwrap();
        assert!(matches!(
            b.unseal(common::AAD, &blob),
            Err(SealError::Tampered)
        ));
    });
}

#[test]
fn pkcs11_wrong_pin_is_reported() {
    run_isolated(|hsm| {
        let token = hsm.new_token();
        let wrong = token.config.clone().with_pin(HsmPin::new("999999"));
        let err = Pkcs11Sealer::open(&wrong).unwrap_err();
        assert!(matches!(err, SealError::WrongPin), "{err}");
        Pkcs11Sealer::open(&token.config).expect("the right PIN still works");
    });
}

#[test]
fn pkcs11_unknown_token_label_is_reported() {
    run_isolated(|hsm| {
        hsm.new_token();
        let config = Pkcs11Config::new(SOFTHSM_MODULE, "no-such-token").with_pin(HsmPin::new("1"));
        let err = Pkcs11Sealer::open(&config).unwrap_err();
        assert!(
            matches!(&err, SealError::TokenNotFound { label } if label == "no-such-token"),
            "{err}"
        );
    });
}

#[test]
fn pkcs11_missing_module_is_reported() {
    let path = "/nonexistent/libpkcs11-module.so";
    let config = Pkcs11Config::new(path, "any").with_pin(HsmPin::new("1"));
    let err = Pkcs11Sealer::open(&config).unwrap_err();
    assert!(
        matches!(&err, SealError::ModuleNotFound { path: p } if p.to_str() == Some(path)),
        "{err}"
    );
    assert!(err.to_string().contains(path), "{err}");
}

#[test]
fn pkcs11_missing_pin_is_reported() {
    run_isolated(|hsm| {
        let mut config = hsm.new_token().config;
        config.pin = None;
        let err = Pkcs11Sealer::open(&config).unwrap_err();
        assert!(matches!(err, SealError::MissingPin { .. }), "{err}");
        assert!(err.to_string().contains("LOCKBOX_HSM_PIN"), "{err}");
    });
}

#[test]
fn pkcs11_file_that_is_not_a_module_is_reported() {
    let not_a_module = std::env::current_dir().unwrap().join("Cargo.toml");
    let config = Pkcs11Config::new(&not_a_module, "any").with_pin(HsmPin::new("1"));
    let err = Pkcs11Sealer::open(&config).unwrap_err();
    assert!(
        matches!(&err, SealError::Pkcs11(msg) if msg.contains("cannot load module")),
        "{err}"
    );
}
