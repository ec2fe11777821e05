//! The vault node as operators run it: `lockbox vault serve` in its own process, killed with
//! SIGKILL between KE1 and KE3. The spent attempt must survive the crash (DESIGN.md §4, inv. 1).
//! And the password path as users run it: `lockbox key deposit / recover / ...` against it.

mod common;
mod vault_node;

use common::{assert_exit, assert_fails_with, lockbox, partial_restores, run, stderr};
use lockbox_client::{ClientError, VaultClient};
use lockbox_crypto::{BackupKey, OsRng};
use lockbox_vault_core::KsfParams;
use std::process::Command;
use vault_node::{Node, client, rt, vault_serve};

const ACCOUNT: &[u8] = b"+15550001111";

#[test]
fn attempt_spent_before_ke2_survives_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    let node = Node::start(dir.path(), 0);
    let port = node.port();
    let key = BackupKey::generate(&mut OsRng);
    let (pinned, pending) = rt.block_on(async {
        let c = client(&node).await;
        c.enroll(
            ACCOUNT,
            b"correct horse",
            &key,
            5,
            KsfParams::INSECURE_TEST_ONLY,
        )
        .await
        .unwrap();
        let pending = c.login_start(ACCOUNT, b"correct horse").await.unwrap();
        assert_eq!(pending.attempts_left(), 4);
        (c.target().clone(), pending)
    });
    // KE2 is in the client's hands; the node dies before KE3 arrives.
    node.kill9();
    let node = Node::start(dir.path(), port);
    rt.block_on(async {
        // The restarted node still has the same partition keys: the pinned target works.
        let c = VaultClient::connect(pinned)
            .await
            .unwrap()
            .with_token_source(node.tokens());
        assert_eq!(c.status(ACCOUNT).await.unwrap().attempts(), Some((4, 5)));
        let err = c.login_finish(pending).await.unwrap_err();
        assert!(
            matches!(err, ClientError::Rejected { .. }),
            "KE3 of a lost session: {err:?}"
        );
        assert_eq!(c.status(ACCOUNT).await.unwrap().attempts(), Some((4, 5)));
        assert_eq!(c.recover(ACCOUNT, b"correct horse").await.unwrap(), key);
        assert_eq!(c.status(ACCOUNT).await.unwrap().attempts(), Some((5, 5)));
    });
    drop(node);
}

#[test]
fn sigterm_stops_cleanly_and_destroyed_records_stay_destroyed() {
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    let mut node = Node::start(dir.path(), 0);
    let port = node.port();
    rt.block_on(async {
        let c = client(&node).await;
        let key = BackupKey::generate(&mut OsRng);
        c.enroll(ACCOUNT, b"pw", &key, 2, KsfParams::INSECURE_TEST_ONLY)
            .await
            .unwrap();
        assert!(matches!(
            c.recover(ACCOUNT, b"nope").await,
            Err(ClientError::WrongPassword { attempts_left: 1 })
        ));
        assert!(matches!(
            c.recover(ACCOUNT, b"nope").await,
            Err(ClientError::Destroyed)
        ));
    });
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(node.child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    let exit = node.child.wait().unwrap();
    assert!(
        exit.success(),
        "SIGTERM should stop the node cleanly, got {exit:?}"
    );
    let node = Node::start(dir.path(), port);
    rt.block_on(async {
        let c = client(&node).await;
        assert!(c.status(ACCOUNT).await.unwrap().is_destroyed());
        assert!(matches!(
            c.recover(ACCOUNT, b"pw").await,
            Err(ClientError::Destroyed)
        ));
    });
}

#[test]
fn bad_config_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("vault.toml");
    let serve = |text: &str| {
        std::fs::write(&config, text).unwrap();
        let out = vault_serve(&config).output().unwrap();
        assert_eq!(out.status.code(), Some(1));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let base = "listen = \"127.0.0.1:0\"\ndata_dir = \"d\"\n";
    let err = serve(base);
    assert!(err.contains("missing field `auth`"), "{err}");
    let auth = "[auth]\nissuer_public_key = \"00\"\naudience = \"f\"\n";
    let err = serve(&format!("{base}{auth}"));
    assert!(err.contains("issuer public key must be 32 bytes"), "{err}");
    let auth = "[auth]\nissuer_public_key = \"d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a\"\naudience = \"f\"\n";
    let err = serve(&format!("{base}partitions = []\n{auth}"));
    assert!(err.contains("at least one partition"), "{err}");
}

/// The account the CLI tests file their vault record under.
const CLI_ACCOUNT: &str = "+15550002222";

/// The flags that point a command at `node`'s partition and the test account.
fn at_vault<'c>(c: &'c mut Command, node: &Node) -> &'c mut Command {
    c.args(["--vault", &node.endpoint, "--account", CLI_ACCOUNT])
        .args(["--partition", "3", "--token-file"])
        .arg(node.token_file(CLI_ACCOUNT))
}

/// `lockbox key ...` with the vault flags for `node`, and `password` in LOCKBOX_PASSWORD.
fn key_cmd(node: &Node, args: &[&str], password: Option<&str>) -> std::process::Output {
    let mut c = lockbox();
    at_vault(c.arg("key").args(args), node);
    if let Some(p) = password {
        c.env("LOCKBOX_PASSWORD", p);
    }
    run(&mut c)
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn password_path_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), 0);
    let code = dir.path().join("code");
    assert_exit(&run(lockbox().args(["key", "new", "--out"]).arg(&code)), 0);
    let code_arg = code.to_str().unwrap();
    let deposit = ["deposit", "--key-file", code_arg, "--attempts", "3"];

    let short = key_cmd(&node, &deposit, Some("pw"));
    assert_fails_with(&short, 1, "at least 6 characters");
    let o = key_cmd(&node, &deposit, Some("correct horse"));
    assert_exit(&o, 0);
    assert!(stdout(&o).contains("3 wrong passwords"), "{}", stdout(&o));
    let status = || stdout(&key_cmd(&node, &["status"], None));
    assert!(
        status().contains("active, 3 of 3 attempts left"),
        "{}",
        status()
    );

    // An empty password is refused before anything is sent.
    let empty = key_cmd(&node, &["recover", "--out", "never"], Some(""));
    assert_fails_with(&empty, 1, "empty password");
    assert!(status().contains("3 of 3"), "{}", status());

    // A wrong password costs an attempt, exits 2 and writes nothing.
    let out = dir.path().join("recovered");
    let recover = ["recover", "--out", out.to_str().unwrap()];
    let wrong = key_cmd(&node, &recover, Some("wrong horse"));
    assert_fails_with(&wrong, 2, "wrong password (2 attempts left)");
    assert!(
        !stderr(&wrong).contains("wrong horse"),
        "the password is never echoed"
    );
    assert!(!out.exists());
    assert!(status().contains("2 of 3"), "{}", status());
    // The right one writes the same recovery code and restores the count.
    assert_exit(&key_cmd(&node, &recover, Some("correct horse")), 0);
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        std::fs::read_to_string(&code).unwrap()
    );
    assert!(status().contains("3 of 3"), "{}", status());
    let again = key_cmd(&node, &recover, Some("correct horse"));
    assert_fails_with(&again, 1, "already exists");

    // A new phone restores a backup with the password alone.
    let chats = dir.path().join("chats");
    std::fs::create_dir(&chats).unwrap();
    std::fs::write(chats.join("msgs.db"), b"see you at 8").unwrap();
    let store = format!("file://{}", dir.path().join("store").display());
    let phone = dir.path().join("phone");
    let restore = |password: &str| {
        let mut c = lockbox();
        c.arg("restore")
            .arg(&phone)
            .args(["--from", &store, "--with-password"]);
        run(at_vault(&mut c, &node).env("LOCKBOX_PASSWORD", password))
    };
    // Nothing to restore yet: refused before the password is tried.
    std::fs::create_dir(dir.path().join("store")).unwrap();
    assert_fails_with(&restore("wrong horse"), 1, "no backups");
    assert!(status().contains("3 of 3"), "{}", status());
    let backup =
        run(lockbox()
            .arg("backup")
            .arg(&chats)
            .args(["--to", &store, "--key-file", code_arg]));
    assert_exit(&backup, 0);
    assert_fails_with(&restore("wrong horse"), 2, "wrong password");
    assert!(!phone.exists());
    assert_eq!(partial_restores(dir.path()), Vec::<String>::new());
    assert_exit(&restore("correct horse"), 0);
    assert_eq!(
        std::fs::read(phone.join("msgs.db")).unwrap(),
        b"see you at 8"
    );

    // After a password change only the new password works.
    let mut change = lockbox();
    at_vault(change.args(["key", "change-password"]), &node)
        .env("LOCKBOX_PASSWORD", "correct horse")
        .env("LOCKBOX_NEW_PASSWORD", "battery staple");
    assert_exit(&run(&mut change), 0);
    std::fs::remove_file(&out).unwrap();
    assert_fails_with(
        &key_cmd(&node, &recover, Some("correct horse")),
        2,
        "wrong password (2 attempts left)",
    );
    assert_exit(&key_cmd(&node, &recover, Some("battery staple")), 0);

    // The third wrong password in a row spends the last attempt and destroys the record.
    std::fs::remove_file(&out).unwrap();
    for left in [2, 1] {
        let o = key_cmd(&node, &recover, Some("guess"));
        assert_fails_with(&o, 2, &format!("({left} attempts left)"));
    }
    assert_fails_with(&key_cmd(&node, &recover, Some("guess")), 4, "destroyed");
    assert_fails_with(
        &key_cmd(&node, &recover, Some("battery staple")),
        4,
        "destroyed",
    );
    assert!(status().contains("destroyed"), "{}", status());
    assert_fails_with(
        &key_cmd(&node, &["forget"], Some("battery staple")),
        4,
        "destroyed",
    );
    assert!(!out.exists());

    // A dead vault node is a clear runtime error (exit 1), never a password verdict.
    let endpoint = node.endpoint.clone();
    let token = node.token_file(CLI_ACCOUNT);
    node.kill9();
    let mut c = lockbox();
    c.args([
        "key",
        "status",
        "--vault",
        &endpoint,
        "--account",
        CLI_ACCOUNT,
        "--token-file",
    ])
    .arg(&token);
    assert_fails_with(&run(&mut c), 1, "cannot reach the vault");
    let node = Node::start(dir.path(), 0);

    // There is no way to put a password on the command line.
    let argv = key_cmd(&node, &["recover", "--out", "x", "--password", "pw"], None);
    assert_fails_with(&argv, 1, "--password");
}
