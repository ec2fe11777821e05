//! The device commands end to end, against `lockbox dev cluster` (vault node processes and a
//! gateway on loopback, the fleet ceremony, a pinned client.toml): enable, backup, restore on a
//! new phone, status, password change, key rotate, disable, and a record destroyed after its
//! limit. Every phone is its own `--home`; nothing is discovered on first use.

mod common;
mod device_cluster;

use common::{assert_exit, assert_fails_with, lockbox, run, stderr};
use device_cluster::{chats, msgs, phone, stored_objects, text, world};
use std::os::unix::fs::PermissionsExt;

#[test]
fn the_password_story_from_enable_to_disable() {
    let (dir, cluster) = world(2, 3);
    let d = dir.path();
    let old = phone(&cluster, d, "old-phone").of("alice");
    let enable = ["--password", "--max-attempts", "3"];
    assert_exit(&old.enable(&enable, Some("correct horse")), 0);
    let mode = std::fs::metadata(old.home.join("key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // A second enable on the same home is refused and changes nothing.
    assert_fails_with(
        &old.enable(&enable, Some("other password")),
        1,
        "already holds",
    );
    old.backup(&chats(d, "see you at 8"));
    // The next backup remembers the directory.
    assert_exit(&old.run(&["backup", "--stream"], None), 0);
    let status = old.status();
    assert_eq!(status["vault"]["attempts_left"], 3, "{status}");
    assert_eq!(status["backups"].as_array().unwrap().len(), 2);

    // The phone is lost. A new one restores after one wrong password.
    let new = phone(&cluster, d, "new-phone").of("alice");
    let dest = d.join("restored");
    let wrong = new.take_over(&dest, Some("wrong horse"), None);
    assert_fails_with(&wrong, 2, "2 attempts left");
    assert!(!dest.exists());
    assert!(!new.home.join("device.toml").exists());
    assert_exit(&new.take_over(&dest, Some("correct horse"), None), 0);
    assert_eq!(msgs(&dest), b"see you at 8");
    // The right password gave the attempts back, and the new phone is enabled.
    assert_eq!(new.status()["vault"]["attempts_left"], 3);
    new.backup(&dest);

    // Password change: the old password stops working, the new one works.
    let mut change = new.cmd(&["password", "change"]);
    change
        .env("LOCKBOX_PASSWORD", "correct horse")
        .env("LOCKBOX_NEW_PASSWORD", "battery staple");
    assert_exit(&run(&mut change), 0);
    let third = phone(&cluster, d, "third-phone").of("alice");
    let dest3 = d.join("restored-3");
    let stale = third.take_over(&dest3, Some("correct horse"), None);
    assert_fails_with(&stale, 2, "attempts left");

    // Key rotation: a new key, a verified backup under it, the old key's backups deleted.
    let old_key = std::fs::read_to_string(new.home.join("key")).unwrap();
    assert_eq!(stored_objects(d), 3);
    let rotate = new.run(&["key", "rotate"], Some("battery staple"));
    assert_exit(&rotate, 0);
    let said = stderr(&rotate);
    assert!(
        said.contains("3 backups under the old key deleted"),
        "{said}"
    );
    assert_ne!(
        std::fs::read_to_string(new.home.join("key")).unwrap(),
        old_key
    );
    assert_eq!(stored_objects(d), 1);
    // The old phone's key opens nothing any more; a new phone with the password gets the new one.
    let lost = old.run(&["restore", d.join("x").to_str().unwrap()], None);
    assert_fails_with(&lost, 2, "wrong key");
    assert_exit(&third.take_over(&dest3, Some("battery staple"), None), 0);
    assert_eq!(msgs(&dest3), b"see you at 8");

    // Disable with --delete-backups: record gone, backups gone, home wiped.
    let disable = third.run(&["disable", "--delete-backups"], Some("battery staple"));
    assert_exit(&disable, 0);
    assert_eq!(stored_objects(d), 0);
    assert!(!third.home.join("key").exists());
    let fourth = phone(&cluster, d, "fourth-phone").of("alice");
    let nothing = fourth.take_over(&d.join("restored-4"), Some("battery staple"), None);
    assert_fails_with(&nothing, 1, "no backups");
}

#[test]
fn a_record_is_destroyed_after_its_limit_and_says_so() {
    let (dir, cluster) = world(1, 2);
    let d = dir.path();
    let bob = phone(&cluster, d, "bob").of("bob");
    let enable = bob.enable(
        &["--password", "--max-attempts", "2"],
        Some("bobs password"),
    );
    assert_exit(&enable, 0);
    bob.backup(&chats(d, "bob's chats"));
    let thief = phone(&cluster, d, "thief").of("bob");
    let dest = d.join("stolen");
    assert_fails_with(
        &thief.take_over(&dest, Some("guess one"), None),
        2,
        "1 attempts left",
    );
    let last = thief.take_over(&dest, Some("guess two"), None);
    assert!(
        matches!(last.status.code(), Some(2 | 4)),
        "{}",
        stderr(&last)
    );
    // Now even the right password gets nothing: exit 4, and the message says the key is gone.
    let right = thief.take_over(&dest, Some("bobs password"), None);
    assert_fails_with(&right, 4, "gone for good");
    assert!(!dest.exists());
    let status = bob.status();
    assert_eq!(status["vault"]["state"], "destroyed", "{status}");
    let plain = bob.run(&["status"], None);
    assert_exit(&plain, 0);
    assert!(text(&plain).contains("gone for good"), "{}", text(&plain));
    // The low-level record command takes the same pinned path, through the gateway.
    let record = thief.run(&["key", "status", "--account", "bob"], None);
    assert_exit(&record, 0);
    assert!(text(&record).contains("destroyed"), "{}", text(&record));
}

#[test]
fn the_recovery_code_story() {
    let (dir, cluster) = world(1, 1);
    let d = dir.path();
    let carol = phone(&cluster, d, "carol").of("carol");
    let enable = carol.enable(&["--recovery-code"], None);
    assert_exit(&enable, 0);
    let code_file = d.join("code.txt");
    std::fs::write(&code_file, text(&enable)).unwrap();
    carol.backup(&chats(d, "carol"));
    assert!(carol.status()["vault"].is_null());

    let new = phone(&cluster, d, "carol-new").of("carol");
    let dest = d.join("restored");
    assert_exit(&new.take_over(&dest, None, Some(&code_file)), 0);
    assert_eq!(msgs(&dest), b"carol");

    // Rotation prints a new code; the old one opens nothing any more.
    let rotate = new.run(&["key", "rotate", dest.to_str().unwrap()], None);
    assert_exit(&rotate, 0);
    let new_code = d.join("new-code.txt");
    std::fs::write(&new_code, text(&rotate)).unwrap();
    let stale = phone(&cluster, d, "stale").of("carol");
    assert_fails_with(
        &stale.take_over(&d.join("r2"), None, Some(&code_file)),
        2,
        "wrong key",
    );
    let fresh = phone(&cluster, d, "fresh").of("carol");
    assert_exit(&fresh.take_over(&d.join("r3"), None, Some(&new_code)), 0);

    // Disable without --delete-backups keeps the backups.
    assert_exit(&fresh.run(&["disable"], None), 0);
    assert_eq!(stored_objects(d), 1);
    assert_fails_with(&fresh.run(&["status"], None), 1, "no enabled device");
}

#[test]
fn a_password_device_that_keeps_its_backups_on_disable_hands_out_the_code() {
    let (dir, cluster) = world(1, 1);
    let d = dir.path();
    let dan = phone(&cluster, d, "dan").of("dan");
    assert_exit(&dan.enable(&["--password"], Some("dans password")), 0);
    dan.backup(&chats(d, "dan"));
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
        .args(["--store", &dan.store, "--key-file"])
        .arg(&code));
    assert_exit(&out, 0);
    assert_eq!(msgs(&d.join("r")), b"dan");
    assert_fails_with(&dan.run(&["status"], None), 1, "no enabled device");
}
