//! The built `lockbox` binary against Azure Blob Storage (Azurite on loopback), configured only
//! through the standard `AZURE_*` variables: the default build speaks `az://` (issue 12, item 9).

mod common;

use std::path::Path;
use std::process::Command;

use common::{assert_exit, assert_fails_with, partial_restores, run, stderr};
use lockbox_store::test_support::{AzureServer, StorageServer, files_under, random_bytes};

fn lockbox(server: &AzureServer) -> Command {
    let mut c = common::lockbox();
    c.envs(server.azure_env());
    c
}

fn same_tree(a: &Path, b: &Path) {
    let files = files_under(a);
    assert_eq!(files, files_under(b));
    for f in files {
        assert!(
            std::fs::read(a.join(&f)).unwrap() == std::fs::read(b.join(&f)).unwrap(),
            "{f}"
        );
    }
}

#[test]
fn backup_list_restore_round_trip_over_azure() {
    let server = AzureServer::start();
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k");
    assert_exit(
        &run(common::lockbox().args(["key", "new", "--out"]).arg(&key)),
        0,
    );
    let src = dir.path().join("chats");
    std::fs::create_dir_all(src.join("media")).unwrap();
    std::fs::write(src.join("msgstore.db"), "hello\n".repeat(10_000)).unwrap();
    // More than one 8 MiB part: the upload is a multipart (block list) upload.
    std::fs::write(src.join("media/video.mp4"), random_bytes(9 * 1024 * 1024)).unwrap();
    let url = server.url("phone");

    let o = run(lockbox(&server)
        .arg("backup")
        .arg(&src)
        .args(["--to", &url, "--keep", "1"])
        .arg("--key-file")
        .arg(&key));
    assert_exit(&o, 0);
    let id = String::from_utf8(o.stdout).unwrap().trim().to_owned();
    assert_eq!(id.len(), 16, "{id}");

    let o = run(lockbox(&server).args(["list", "--from", &url]));
    assert_exit(&o, 0);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains(&id),
        "{}",
        stderr(&o)
    );

    let dest = dir.path().join("restored");
    let o = run(lockbox(&server)
        .arg("restore")
        .arg(&dest)
        .args(["--from", &url])
        .arg("--key-file")
        .arg(&key));
    assert_exit(&o, 0);
    same_tree(&src, &dest);
    assert_eq!(partial_restores(dir.path()), Vec::<String>::new());
    let again = run(lockbox(&server)
        .arg("restore")
        .arg(&dest)
        .args(["--from", &url])
        .arg("--key-file")
        .arg(&key));
    assert_fails_with(&again, 1, "not an empty directory");
}
