//! The whole account life cycle through a real node over gRPC, and what the node leaves on disk.

mod common;

use common::{KSF, TestNode, attempts, new_key};
use lockbox_client::{ClientError, Status};

#[tokio::test]
async fn enroll_recover_change_password_delete() {
    let node = TestNode::start().await;
    let c = node.client().await;
    let key = new_key();
    assert_eq!(c.status(b"alice").await.unwrap(), Status::Absent);
    assert_eq!(
        c.recover(b"alice", b"pw1").await.unwrap_err(),
        ClientError::NoRecord
    );

    c.enroll(b"alice", b"pw1", &key, 5, KSF).await.unwrap();
    assert_eq!(attempts(&c, b"alice").await, (5, 5));
    assert_eq!(c.recover(b"alice", b"pw1").await.unwrap(), key);
    assert_eq!(attempts(&c, b"alice").await, (5, 5), "success resets");

    let wrong = c.recover(b"alice", b"nope").await.unwrap_err();
    assert_eq!(wrong, ClientError::WrongPassword { attempts_left: 4 });
    assert!(wrong.is_auth_failure());
    assert_eq!(attempts(&c, b"alice").await, (4, 5));
    assert_eq!(c.status(b"bob").await.unwrap(), Status::Absent);

    let err = c
        .change_password(b"alice", b"nope", b"pw2", KSF)
        .await
        .unwrap_err();
    assert_eq!(err, ClientError::WrongPassword { attempts_left: 3 });
    c.change_password(b"alice", b"pw1", b"pw2", KSF)
        .await
        .unwrap();
    assert_eq!(attempts(&c, b"alice").await, (5, 5), "limit kept");
    assert!(
        c.recover(b"alice", b"pw1")
            .await
            .unwrap_err()
            .is_auth_failure()
    );
    assert_eq!(c.recover(b"alice", b"pw2").await.unwrap(), key, "same K");

    assert!(
        c.delete(b"alice", b"pw1")
            .await
            .unwrap_err()
            .is_auth_failure()
    );
    c.delete(b"alice", b"pw2").await.unwrap();
    assert!(c.status(b"alice").await.unwrap().is_destroyed());
    let gone = c.recover(b"alice", b"pw2").await.unwrap_err();
    assert!(
        matches!(gone, ClientError::Destroyed | ClientError::NoRecord),
        "{gone:?}"
    );

    // A fresh enrollment after deletion starts a new record with a new key.
    let key2 = new_key();
    c.enroll(b"alice", b"pw3", &key2, 2, KSF).await.unwrap();
    assert_eq!(attempts(&c, b"alice").await, (2, 2));
    assert_eq!(c.recover(b"alice", b"pw3").await.unwrap(), key2);
}

#[tokio::test]
async fn client_refuses_bad_input_and_unpinned_vault() {
    let node = TestNode::start().await;
    let c = node.client().await;
    let key = new_key();
    for limit in [0, 101] {
        assert!(matches!(
            c.enroll(b"a", b"pw", &key, limit, KSF).await,
            Err(ClientError::InvalidInput(_))
        ));
    }
    assert!(matches!(
        c.status(&[7; 65]).await,
        Err(ClientError::InvalidInput(_))
    ));
    assert!(matches!(
        c.status(b"").await,
        Err(ClientError::InvalidInput(_))
    ));

    // A vault whose OPAQUE key is not the pinned one is refused at enrollment.
    let mut target = c.target().clone();
    target.identity.public_key[0] ^= 1;
    let impostor = lockbox_client::VaultClient::connect(target)
        .await
        .unwrap()
        .with_token_source(node.tokens());
    let err = impostor
        .enroll(b"a", b"pw", &key, 3, KSF)
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Protocol(_)), "{err:?}");
    assert_eq!(c.status(b"a").await.unwrap(), Status::Absent);
}

/// Neither K, its recovery code, nor the password may appear anywhere in the node's files.
#[tokio::test]
async fn nothing_secret_at_rest() {
    let node = TestNode::start().await;
    let c = node.client().await;
    let key = new_key();
    let password = b"correct horse battery staple";
    c.enroll(b"alice", password, &key, 5, KSF).await.unwrap();
    assert_eq!(c.recover(b"alice", password).await.unwrap(), key);
    let _ = c.recover(b"alice", b"wrong guess").await;

    let hex_lower = key.recovery_code().to_grouped().replace(' ', "");
    let hex_upper = hex_lower.to_uppercase();
    let grouped = key.recovery_code().to_grouped();
    let needles: [(&str, &[u8]); 5] = [
        ("K", key.expose()),
        ("password", password),
        ("recovery code hex", hex_lower.as_bytes()),
        ("recovery code HEX", hex_upper.as_bytes()),
        ("grouped recovery code", grouped.as_bytes()),
    ];
    let mut files = 0;
    let mut stack = vec![node.data_dir()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let bytes = std::fs::read(&path).unwrap();
            files += 1;
            for (what, needle) in needles {
                assert!(
                    !bytes.windows(needle.len()).any(|w| w == needle),
                    "{what} found in {}",
                    path.display()
                );
            }
        }
    }
    assert!(files >= 2, "expected the database and the sealer key file");
    assert!(node.data_dir().join("vault.redb").is_file());
}
