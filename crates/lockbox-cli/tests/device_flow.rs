//! The device commands end to end, against `lockbox dev cluster` (vault node processes and a
//! gateway on loopback, the fleet ceremony, a pinned client.toml): enable, backup, restore on a
//! new phone, status, password change, key rotate, disable, and a record destroyed after its
//! limit. Every phone is its own `--home`; nothing is discovered on first use.

mod common;
mod device_cluster;

use common::{assert_exit, assert_fails_with, lockbox, run, stderr};
use device_cluster::{Cluster, Phone, chats, phone, store_url, stored_objects, text};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

#[test]
fn the_password_story_from_enable_to_disable() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cluster = Cluster::start(d, 2, 3);
    let store = store_url(d);
    let old = phone(&cluster, d, "old-phone");
    let enable = [
        "enable",
        "--account",
        "alice",
        "--store",
        &store,
        "--password",
        "--max-attempts",
        "3",
    ];
    assert_exit(&old.run(&enable, Some("correct horse")), 0);
    let key = old.home.join("key");
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // A second enable on the same home is refused and changes nothing.
    assert_fails_with(
        &old.run(&enable, Some("other password")),
        1,
        "already holds",
    );
    let original = chats(d, "see you at 8");
    let backup = old.run(&["backup", original.to_str().unwrap()], None);
    assert_exit(&backup, 0);
    // The next backup remembers the directory.
    assert_exit(&old.run(&["backup"], None), 0);
    let status = old.status();
    assert_eq!(status["vault"]["attempts_left"], 3, "{status}");
    assert_eq!(status["backups"].as_array().unwrap().len(), 2);

    // The phone is lost. A new one restores after one wrong password.
    let new = phone(&cluster, d, "new-phone");
    let dest = d.join("restored");
    let restore = [
        "restore",
        dest.to_str().unwrap(),
        "--account",
        "alice",
        "--store",
        &store,
        "--password",
    ];
    assert_fails_with(
        &new.run(&restore, Some("wrong horse")),
        2,
        "2 attempts left",
    );
    assert!(!dest.exists());
    assert!(!new.home.join("device.toml").exists());
    assert_exit(&new.run(&restore, Some("correct horse")), 0);
    assert_eq!(
        std::fs::read(dest.join("msgs.db")).unwrap(),
        b"see you at 8"
    );
    // The right password gave the attempts back, and the new phone is enabled.
    assert_eq!(new.status()["vault"]["attempts_left"], 3);
    assert_exit(&new.run(&["backup", dest.to_str().unwrap()], None), 0);

    // Password change: the old password stops working, the new one works.
    let mut change = new.cmd(&["password", "change"]);
    change
        .env("LOCKBOX_PASSWORD", "correct horse")
        .env("LOCKBOX_NEW_PASSWORD", "battery staple");
    assert_exit(&run(&mut change), 0);
    let third = phone(&cluster, d, "third-phone");
    let dest3 = d.join("restored-3");
    let restore3 = [
        "restore",
        dest3.to_str().unwrap(),
        "--account",
        "alice",
        "--store",
        &store,
        "--password",
    ];
    assert_fails_with(
        &third.run(&restore3, Some("correct horse")),
        2,
        "attempts left",
    );

    // Key rotation: a new key, a verified backup under it, the old key's backups deleted.
    let old_key = std::fs::read_to_string(new.home.join("key")).unwrap();
    assert_eq!(stored_objects(d), 3);
    let rotate = new.run(&["key", "rotate"], Some("battery staple"));
    assert_exit(&rotate, 0);
    assert!(
        stderr(&rotate).contains("3 backups under the old key deleted"),
        "{}",
        stderr(&rotate)
    );
    assert_ne!(
        std::fs::read_to_string(new.home.join("key")).unwrap(),
        old_key
    );
    assert_eq!(stored_objects(d), 1);
    // The old phone's key opens nothing any more; a new phone with the password gets the new one.
    assert_fails_with(
        &old.run(&["restore", d.join("x").to_str().unwrap()], None),
        2,
        "wrong key",
    );
    assert_exit(&third.run(&restore3, Some("battery staple")), 0);
    assert_eq!(
        std::fs::read(dest3.join("msgs.db")).unwrap(),
        b"see you at 8"
    );

    // Disable with --delete-backups: record gone, backups gone, home wiped.
    let disable = third.run(&["disable", "--delete-backups"], Some("battery staple"));
    assert_exit(&disable, 0);
    assert_eq!(stored_objects(d), 0);
    assert!(!third.home.join("key").exists());
    let fourth = phone(&cluster, d, "fourth-phone");
    let dest4 = d.join("restored-4");
    let out = fourth.run(
        &[
            "restore",
            dest4.to_str().unwrap(),
            "--account",
            "alice",
            "--store",
            &store,
            "--password",
        ],
        Some("battery staple"),
    );
    assert_fails_with(&out, 1, "no backups");
}

#[test]
fn a_record_is_destroyed_after_its_limit_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cluster = Cluster::start(d, 1, 2);
    let store = store_url(d);
    let bob = phone(&cluster, d, "bob");
    let enable = [
        "enable",
        "--account",
        "bob",
        "--store",
        &store,
        "--password",
        "--max-attempts",
        "2",
    ];
    assert_exit(&bob.run(&enable, Some("bobs password")), 0);
    assert_exit(
        &bob.run(&["backup", chats(d, "bob's chats").to_str().unwrap()], None),
        0,
    );
    let thief = phone(&cluster, d, "thief");
    let dest = d.join("stolen");
    let restore = [
        "restore",
        dest.to_str().unwrap(),
        "--account",
        "bob",
        "--store",
        &store,
        "--password",
    ];
    assert_fails_with(
        &thief.run(&restore, Some("guess one")),
        2,
        "1 attempts left",
    );
    let last = thief.run(&restore, Some("guess two"));
    assert!(
        matches!(last.status.code(), Some(2 | 4)),
        "{}",
        stderr(&last)
    );
    // Now even the right password gets nothing: exit 4, and the message says the key is gone.
    assert_fails_with(
        &thief.run(&restore, Some("bobs password")),
        4,
        "gone for good",
    );
    assert!(!dest.exists());
    let status = bob.status();
    assert_eq!(status["vault"]["state"], "destroyed", "{status}");
}

#[test]
fn the_recovery_code_story() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cluster = Cluster::start(d, 1, 1);
    let store = store_url(d);
    let carol = phone(&cluster, d, "carol");
    let enable = carol.run(
        &[
            "enable",
            "--account",
            "carol",
            "--store",
            &store,
            "--recovery-code",
        ],
        None,
    );
    assert_exit(&enable, 0);
    let code_file = d.join("code.txt");
    std::fs::write(&code_file, text(&enable)).unwrap();
    assert_exit(
        &carol.run(&["backup", chats(d, "carol").to_str().unwrap()], None),
        0,
    );
    assert!(carol.status()["vault"].is_null());

    let new = phone(&cluster, d, "carol-new");
    let dest = d.join("restored");
    let restore = |phone: &Phone<'_>, dest: &Path, code: &Path| {
        phone.run(
            &[
                "restore",
                dest.to_str().unwrap(),
                "--account",
                "carol",
                "--store",
                &store,
                "--recovery-code-file",
                code.to_str().unwrap(),
            ],
            None,
        )
    };
    assert_exit(&restore(&new, &dest, &code_file), 0);
    assert_eq!(std::fs::read(dest.join("msgs.db")).unwrap(), b"carol");

    // Rotation prints a new code; the old one opens nothing any more.
    let rotate = new.run(&["key", "rotate", dest.to_str().unwrap()], None);
    assert_exit(&rotate, 0);
    let new_code = d.join("new-code.txt");
    std::fs::write(&new_code, text(&rotate)).unwrap();
    let stale = phone(&cluster, d, "stale");
    assert_fails_with(&restore(&stale, &d.join("r2"), &code_file), 2, "wrong key");
    let fresh = phone(&cluster, d, "fresh");
    assert_exit(&restore(&fresh, &d.join("r3"), &new_code), 0);

    // Disable without --delete-backups keeps the backups.
    assert_exit(&fresh.run(&["disable"], None), 0);
    assert_eq!(stored_objects(d), 1);
    assert_fails_with(&fresh.run(&["status"], None), 1, "no enabled device");
}

#[test]
fn a_password_device_that_keeps_its_backups_on_disable_hands_out_the_code() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cluster = Cluster::start(d, 1, 1);
    let store = store_url(d);
    let dan = phone(&cluster, d, "dan");
    let enable = [
        "enable",
        "--account",
        "dan",
        "--store",
        &store,
        "--password",
    ];
    assert_exit(&dan.run(&enable, Some("dans password")), 0);
    assert_exit(
        &dan.run(&["backup", chats(d, "dan").to_str().unwrap()], None),
        0,
    );
    assert_fails_with(&dan.run(&["disable"], Some("not dans")), 2, "attempts left");
    assert!(
        dan.home.join("key").exists(),
        "a failed disable keeps the home"
    );
    let disable = dan.run(&["disable"], Some("dans password"));
    assert_exit(&disable, 0);
    let code = d.join("code.txt");
    std::fs::write(&code, text(&disable)).unwrap();
    let out = run(lockbox()
        .args(["restore"])
        .arg(d.join("r"))
        .args(["--store", &store, "--key-file"])
        .arg(&code));
    assert_exit(&out, 0);
    assert_eq!(std::fs::read(d.join("r/msgs.db")).unwrap(), b"dan");
    assert_eq!(dan.status_code_after_disable(), 1);
}

impl Phone<'_> {
    fn status_code_after_disable(&self) -> i32 {
        self.run(&["status"], None).status.code().unwrap()
    }
}
