//! The vault's catalog pin, end to end against `lockbox dev cluster`: every incremental backup of
//! a password device pins the catalog's new end at the vault, and a new phone that recovers K
//! with the password refuses a storage that rolled the repository back or deleted it (exit 3),
//! where without the pin it could not tell (DESIGN.md §3). The storage provider is the attacker
//! here: it serves yesterday's copy of the bucket, or drops the repository and keeps an old
//! single-stream backup to fall back on.

mod common;
mod device_cluster;

use std::path::Path;
use std::process::Command;

use common::{assert_exit, assert_fails_with, stderr};
use device_cluster::{Phone, chats, msgs, phone, world};

const PW: &str = "correct horse";

fn snapshot(p: &Phone<'_>, dir: &Path) -> serde_json::Value {
    let out = p.run(
        &["backup", "--incremental", "--json", dir.to_str().unwrap()],
        None,
    );
    assert_exit(&out, 0);
    serde_json::from_slice(&out.stdout).unwrap()
}

fn copy_dir(from: &Path, to: &Path) {
    let status = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn a_new_phone_catches_a_rolled_back_or_deleted_repository_through_the_pin() {
    let (dir, cluster) = world(1, 1);
    let d = dir.path();
    let old = phone(&cluster, d, "old-phone").of("erin");
    assert_exit(&old.enable(&["--password"], Some(PW)), 0);
    // A single-stream backup from before the snapshots: what a provider would fall back on.
    old.backup(&chats(d, "monday"));
    let day1 = snapshot(&old, &chats(d, "tuesday"));
    assert_eq!(day1["vault_pin"]["seq"], 1, "{day1}");
    copy_dir(&d.join("cloud"), &d.join("cloud-tuesday"));
    let day2 = snapshot(&old, &chats(d, "wednesday!"));
    assert_eq!(day2["vault_pin"]["seq"], 2, "{day2}");

    // The honest storage: the new phone gets Wednesday, checked against the pin.
    let honest = phone(&cluster, d, "phone-2").of("erin");
    let dest = d.join("restored-honest");
    let out = honest.take_over(&dest, Some(PW), None);
    assert_exit(&out, 0);
    assert_eq!(msgs(&dest), b"wednesday!");
    assert!(
        stderr(&out).contains("entry 2 of the catalog")
            && stderr(&out).contains("the vault's pin required entry 2"),
        "{}",
        stderr(&out)
    );
    // The new phone carries on in the same repository, and the pin moves on.
    let day3 = snapshot(&honest, &dest);
    assert_eq!(day3["seq"], 3);
    assert_eq!(day3["vault_pin"]["seq"], 3, "{day3}");

    // The provider serves Tuesday's bucket: a valid, older catalog. Refused, nothing restored.
    std::fs::rename(d.join("cloud"), d.join("cloud-now")).unwrap();
    copy_dir(&d.join("cloud-tuesday"), &d.join("cloud"));
    let victim = phone(&cluster, d, "phone-3").of("erin");
    let dest = d.join("restored-rolled-back");
    let out = victim.take_over(&dest, Some(PW), None);
    assert_fails_with(&out, 3, "rolled back");
    assert!(!dest.exists(), "a rolled-back restore left files behind");
    assert!(!victim.home.join("device.toml").exists());
    // The same with no device at all: the key from the vault named by --vault, the store from
    // the flags (the review found this path ignored the pin and restored Tuesday).
    let client: toml::Table =
        toml::from_str(&std::fs::read_to_string(&cluster.config).unwrap()).unwrap();
    let node: toml::Table = toml::from_str(
        &std::fs::read_to_string(cluster.dir().join("nodes/1/vault.toml"))
            .or_else(|_| std::fs::read_to_string(cluster.dir().join("nodes/0/vault.toml")))
            .unwrap(),
    )
    .unwrap();
    let node = format!("http://{}", node["listen"].as_str().unwrap());
    let token = common::run(
        common::lockbox()
            .args(["dev", "token", "--account", "erin", "--issuer-key"])
            .arg(client["dev_issuer_key"].as_str().unwrap())
            .args(["--audience", client["fleet_id"].as_str().unwrap()]),
    );
    assert_exit(&token, 0);
    let token_file = d.join("erin.token");
    std::fs::write(&token_file, &token.stdout).unwrap();
    let store = victim.store.clone();
    let direct = victim.run(
        &[
            "restore",
            dest.to_str().unwrap(),
            "--store",
            &store,
            "--password",
            "--vault",
            &node,
            "--account",
            "erin",
            "--token-file",
            token_file.to_str().unwrap(),
        ],
        Some(PW),
    );
    assert_fails_with(&direct, 3, "rolled back");
    assert!(!dest.exists());

    // The provider deletes the repository and keeps Monday's single stream: still refused.
    std::fs::remove_dir_all(d.join("cloud")).unwrap();
    copy_dir(&d.join("cloud-now"), &d.join("cloud"));
    for sub in ["config", "catalog", "snapshots", "index", "packs"] {
        let p = d.join("cloud").join(sub);
        if p.is_dir() {
            std::fs::remove_dir_all(&p).unwrap();
        } else {
            std::fs::remove_file(&p).unwrap();
        }
    }
    let out = victim.take_over(&dest, Some(PW), None);
    assert_exit(&out, 3);
    assert!(!dest.exists(), "fell back to an older single-stream backup");
}

/// A pin from a backup after a `prune` names the catalog's new end (the forget entries), and a
/// recovery-code device pins nothing (the vault holds nothing for it).
#[test]
fn prune_pins_the_new_end_and_a_recovery_code_device_pins_nothing() {
    let (dir, cluster) = world(1, 1);
    let d = dir.path();
    let p = phone(&cluster, d, "phone").of("fay");
    assert_exit(&p.enable(&["--password"], Some(PW)), 0);
    snapshot(&p, &chats(d, "one"));
    snapshot(&p, &chats(d, "two!"));
    let out = p.run(&["prune", "--snapshots", "--keep", "1", "--json"], None);
    assert_exit(&out, 0);
    let pruned: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(pruned["vault_pin"]["seq"], 3, "{pruned}");
    let next = phone(&cluster, d, "next").of("fay");
    let dest = d.join("restored");
    assert_exit(&next.take_over(&dest, Some(PW), None), 0);
    assert_eq!(msgs(&dest), b"two!");

    let d2 = d.join("gus");
    let coded = phone(&cluster, &d2, "coded").of("gus");
    assert_exit(&coded.enable(&["--recovery-code"], None), 0);
    let made = snapshot(&coded, &chats(&d2, "three"));
    assert!(made["vault_pin"].is_null(), "{made}");
}

/// The review's fork: the provider serves a second phone yesterday's bucket while the first
/// phone writes on in the real one. The second phone's backup lands on the fork, and the vault
/// answers with the first phone's newer pin; a catalog that does not reach that pin is a fork,
/// exit 3, not a quiet success whose snapshots no later restore would ever see.
#[test]
fn a_device_served_a_fork_is_caught_by_the_other_devices_pin() {
    let (dir, cluster) = world(1, 1);
    let d = dir.path();
    let first = phone(&cluster, d, "first").of("hal");
    assert_exit(&first.enable(&["--password"], Some(PW)), 0);
    snapshot(&first, &chats(d, "one"));
    let second = phone(&cluster, d, "second").of("hal");
    let dest = d.join("second-chats");
    assert_exit(&second.take_over(&dest, Some(PW), None), 0);
    copy_dir(&d.join("cloud"), &d.join("cloud-fork"));
    snapshot(&first, &chats(d, "two!"));
    let three = snapshot(&first, &chats(d, "three"));
    assert_eq!(three["vault_pin"]["seq"], 3);
    std::fs::rename(d.join("cloud"), d.join("cloud-real")).unwrap();
    std::fs::rename(d.join("cloud-fork"), d.join("cloud")).unwrap();
    let out = second.run(
        &["backup", "--incremental", "--json", dest.to_str().unwrap()],
        None,
    );
    assert_exit(&out, 3);
    assert!(
        stderr(&out).contains("vault did not pin"),
        "{}",
        stderr(&out)
    );
}

/// The review's stream case: a new phone that restores a single stream newer than the pinned
/// snapshots still keeps the catalog's end it verified, so its first incremental backup refuses
/// a catalog the provider cut back afterwards.
#[test]
fn a_new_phone_that_restored_a_stream_keeps_the_pinned_catalog_end() {
    let (dir, cluster) = world(1, 1);
    let d = dir.path();
    let old = phone(&cluster, d, "old").of("ida");
    assert_exit(&old.enable(&["--password"], Some(PW)), 0);
    snapshot(&old, &chats(d, "one"));
    snapshot(&old, &chats(d, "two!"));
    old.backup(&chats(d, "three"));
    let new = phone(&cluster, d, "new").of("ida");
    let dest = d.join("restored");
    let out = new.take_over(&dest, Some(PW), None);
    assert_exit(&out, 0);
    assert_eq!(msgs(&dest), b"three", "the newest is the stream");
    std::fs::remove_file(d.join("cloud/catalog/00000000000000000002")).unwrap();
    let out = new.run(&["backup", "--incremental", dest.to_str().unwrap()], None);
    assert_fails_with(&out, 3, "rolled back");
}
