//! A node whose records and partition secrets are sealed by a PKCS#11 token (SoftHSM2).

mod common;

use common::{KSF, TestNode, new_key};
use lockbox_hsm::test_support::{TEST_USER_PIN, run_isolated};

#[test]
fn pkcs11_sealed_node_recovers_across_restart() {
    run_isolated(|hsm| {
        let token = hsm.new_token();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let pin_file = dir.path().join("hsm-pin");
            std::fs::write(&pin_file, format!("{TEST_USER_PIN}\n")).unwrap();
            let sealer = format!(
                "[sealer]\nkind = \"pkcs11\"\nmodule = \"{}\"\ntoken_label = \"{}\"\npin_file = \"{}\"\n",
                hsm.module_path().display(),
                token.label,
                pin_file.display()
            );
            let mut node = TestNode::start_in(dir.path(), &sealer).await;
            let c = node.client().await;
            let key = new_key();
            c.enroll(b"alice", b"pw", &key, 3, KSF).await.unwrap();
            assert_eq!(c.recover(b"alice", b"pw").await.unwrap(), key);
            let hpke_key = c.target().hpke_public_key.clone();

            node.restart().await;
            let c = node.client().await;
            assert_eq!(c.target().hpke_public_key, hpke_key, "same partition secrets");
            assert_eq!(c.recover(b"alice", b"pw").await.unwrap(), key);
            assert!(
                !node.data_dir().join("sealer.key").exists(),
                "no software key file: the token sealed everything"
            );
            node.stop().await;
        });
    });
}
