//! End-to-end tests against a real S3-protocol server (s3s-fs) and a real local folder.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use lockbox_store::test_support::{
    ACCESS_KEY, BUCKET, S3Server, StorageServer, files_under, free_port, random_bytes, s3_options,
    with_part_limit,
};
use lockbox_store::{BackupInfo, BackupName, MIN_PART_SIZE, Store, StoreError, StoreOptions};
use tempfile::TempDir;
use tokio::runtime::Runtime;

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn name(created_unix_ms: u64, id: &str) -> BackupName {
    BackupName::new(created_unix_ms, id).expect("valid name")
}

/// Uploads `data` in odd-sized writes (as an encryptor would) and finishes.
fn upload(store: &Store, rt: &Runtime, name: &BackupName, data: &[u8]) -> BackupInfo {
    let mut writer = store
        .upload(name, rt.handle().clone())
        .expect("start upload");
    for piece in data.chunks(100_003) {
        writer.write_all(piece).expect("write");
    }
    assert_eq!(writer.bytes_written(), data.len() as u64);
    writer.finish().expect("finish upload")
}

/// What identifies a listed backup; `last_modified` is left out because S3 reports it to the
/// second in HEAD (used by `finish`) but to the millisecond in listings.
fn ids(infos: &[BackupInfo]) -> Vec<(BackupName, u64, String)> {
    infos
        .iter()
        .map(|i| (i.name.clone(), i.size, i.location.to_string()))
        .collect()
}

fn download(store: &Store, rt: &Runtime, info: &BackupInfo) -> Vec<u8> {
    let mut reader = store
        .download(info, rt.handle().clone())
        .expect("start download");
    let mut out = Vec::new();
    reader.read_to_end(&mut out).expect("read download");
    out
}

fn local_store(dir: &TempDir, sub: &str) -> (Store, std::path::PathBuf) {
    let path = dir.path().join(sub);
    let url = format!("file://{}", path.display());
    (Store::open(&url).expect("open local store"), path)
}

fn local_with(dir: &TempDir, sub: &str, options: StoreOptions) -> Store {
    let url = format!("file://{}", dir.path().join(sub).display());
    Store::open_with(&url, options).expect("open local store")
}

fn round_trip(store: &Store, rt: &Runtime) {
    assert!(rt.block_on(store.list()).unwrap().is_empty());
    assert_eq!(rt.block_on(store.latest()).unwrap(), None);

    let older = random_bytes(300_000);
    let newer = random_bytes(1_234_567);
    let small = b"tiny backup".to_vec();
    let n_newer = name(1_700_000_002_000, "00112233aabbccdd");
    let n_older = name(1_700_000_001_000, "ffeeddccbbaa9988");
    let n_small = name(1_700_000_001_500, "0123456789abcdef");
    let info_newer = upload(store, rt, &n_newer, &newer);
    let info_older = upload(store, rt, &n_older, &older);
    let info_small = upload(store, rt, &n_small, &small);
    assert_eq!(info_newer.size, newer.len() as u64);
    assert_eq!(info_newer.name, n_newer);

    let listed = rt.block_on(store.list()).unwrap();
    let names: Vec<_> = listed.iter().map(|b| b.name.clone()).collect();
    assert_eq!(names, [n_older.clone(), n_small.clone(), n_newer.clone()]);
    assert_eq!(listed[0].size, older.len() as u64);
    assert_eq!(
        ids(&listed),
        ids(&[info_older, info_small.clone(), info_newer.clone()])
    );
    let latest = rt
        .block_on(store.latest())
        .unwrap()
        .expect("a latest backup");
    assert_eq!(ids(&[latest]), ids(std::slice::from_ref(&info_newer)));

    let found = rt.block_on(store.find("FFEE")).unwrap();
    assert_eq!(found.name, n_older);
    assert_eq!(download(store, rt, &found), older);
    assert_eq!(download(store, rt, &info_newer), newer);
    assert_eq!(download(store, rt, &info_small), small);
}

#[test]
fn round_trip_on_s3() {
    let server = S3Server::start();
    let rt = runtime();
    let store = server.store("phone/one");
    assert_eq!(store.url(), format!("s3://{BUCKET}/phone/one"));
    round_trip(&store, &rt);
    // Keys live under the prefix in the bucket.
    let files = server.bucket_files();
    assert!(
        files.contains(&"phone/one/lockbox-1700000002000-00112233aabbccdd.lbx".to_owned()),
        "{files:?}"
    );
}

#[test]
fn round_trip_on_local_folder_created_on_first_upload() {
    let dir = TempDir::new().unwrap();
    let rt = runtime();
    let (store, path) = local_store(&dir, "nested/backups");
    let err = rt.block_on(store.list()).unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err}");
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );

    std::fs::create_dir_all(&path).unwrap();
    round_trip(&store, &rt);
    assert_eq!(
        files_under(&path).len(),
        3,
        "only the three backups: {:?}",
        files_under(&path)
    );
}

#[test]
fn local_upload_creates_missing_folder() {
    let dir = TempDir::new().unwrap();
    let rt = runtime();
    let (store, path) = local_store(&dir, "a/b/c");
    let info = upload(&store, &rt, &name(5, "aaaaaaaaaaaaaaaa"), b"x");
    assert!(
        path.join("lockbox-0000000000005-aaaaaaaaaaaaaaaa.lbx")
            .is_file()
    );
    assert_eq!(download(&store, &rt, &info), b"x");
}

fn multipart(store: &Store, rt: &Runtime) {
    let data = random_bytes(20 * 1024 * 1024 + 12_345);
    let info = upload(
        store,
        rt,
        &name(1_700_000_000_000, "5555555555555555"),
        &data,
    );
    assert_eq!(info.size, data.len() as u64);
    let back = download(store, rt, &info);
    assert!(
        back == data,
        "20 MiB multipart upload did not come back byte-identical"
    );
}

/// `base` with the smallest parts and two in flight, so a few MiB make a multipart upload.
fn small_parts(base: StoreOptions) -> StoreOptions {
    StoreOptions {
        part_size: MIN_PART_SIZE,
        max_parts_in_flight: 2,
        ..base
    }
}

#[test]
fn multipart_upload_round_trips_on_s3() {
    let server = S3Server::start();
    let rt = runtime();
    let store = server.store_with("mp", small_parts(server.options()));
    multipart(&store, &rt);
}

#[test]
fn multipart_upload_round_trips_on_local_folder() {
    let dir = TempDir::new().unwrap();
    let rt = runtime();
    multipart(
        &local_with(&dir, "mp", small_parts(StoreOptions::default())),
        &rt,
    );
}

/// Writes more than one part, waits until `part_stored` sees uploaded data in the storage,
/// then gives up in the way `how` says.
fn interrupted_upload(store: &Store, rt: &Runtime, how: &str, part_stored: impl Fn() -> bool) {
    let mut writer = store
        .upload(
            &name(1_700_000_000_000, "dddddddddddddddd"),
            rt.handle().clone(),
        )
        .unwrap();
    writer
        .write_all(&random_bytes(MIN_PART_SIZE + 1_000_000))
        .unwrap();
    wait_until("a part is stored", &part_stored);
    match how {
        "abort" => writer.abort().expect("abort"),
        _ => drop(writer),
    }
}

fn wait_until(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn interrupted_uploads_leave_nothing_on_s3() {
    let server = S3Server::start();
    let rt = runtime();
    let store = server.store_with(
        "x",
        StoreOptions {
            part_size: MIN_PART_SIZE,
            ..server.options()
        },
    );
    // s3s-fs keeps uploaded parts as `.upload_id-*` files in its data directory.
    let all_files = || files_under(server.data_dir());
    let part_stored = || all_files().iter().any(|f| f.starts_with(".upload_id-"));

    interrupted_upload(&store, &rt, "abort", part_stored);
    assert!(rt.block_on(store.list()).unwrap().is_empty());
    assert_eq!(
        all_files(),
        Vec::<String>::new(),
        "abort discards the uploaded parts"
    );

    interrupted_upload(&store, &rt, "drop", part_stored);
    // Dropped on a plain thread, the writer waits for its abort: the parts are gone at once,
    // even though the runtime is shut down right after (as the CLI does after a failure).
    drop(rt);
    assert_eq!(
        all_files(),
        Vec::<String>::new(),
        "drop discards the uploaded parts"
    );
    let rt = runtime();
    assert!(rt.block_on(store.list()).unwrap().is_empty());
}

#[test]
fn interrupted_uploads_leave_nothing_in_local_folder() {
    let dir = TempDir::new().unwrap();
    let rt = runtime();
    let store = local_with(&dir, "f", small_parts(StoreOptions::default()));
    let path = dir.path().join("f");
    // LocalFileSystem stages an upload in `<name>#<n>` next to its destination.
    let part_stored = || {
        files_under(&path).iter().any(|f| f.contains(".lbx#"))
            && std::fs::read_dir(&path)
                .unwrap()
                .flatten()
                .any(|e| e.metadata().unwrap().len() > 0)
    };

    interrupted_upload(&store, &rt, "abort", part_stored);
    assert!(rt.block_on(store.list()).unwrap().is_empty());
    assert_eq!(
        files_under(&path),
        Vec::<String>::new(),
        "abort leaves no staging file"
    );

    interrupted_upload(&store, &rt, "drop", part_stored);
    wait_until("the dropped upload's staging file is removed", || {
        assert!(rt.block_on(store.list()).unwrap().is_empty());
        files_under(&path).is_empty()
    });
}

#[test]
fn failing_upload_reports_store_error_through_io_and_leaves_nothing() {
    let dir = TempDir::new().unwrap();
    let rt = runtime();
    let store = local_with(&dir, "f", small_parts(StoreOptions::default()));
    let path = dir.path().join("f");
    let mut writer = store
        .upload(&name(9, "9999999999999999"), rt.handle().clone())
        .unwrap();
    writer.write_all(&random_bytes(1_000_000)).unwrap();
    // The folder vanishes mid-upload: the staged data cannot be published.
    std::fs::remove_dir_all(&path).unwrap();
    let err = writer
        .finish()
        .expect_err("upload into a deleted folder must fail");
    assert!(!err.is_transient(), "{err}");
    assert!(!path.exists() || files_under(&path).is_empty());
}

#[test]
fn prune_keeps_newest_and_refuses_zero() {
    let server = S3Server::start();
    let rt = runtime();
    let store = server.store("prune");
    let names: Vec<_> = (1..=5u64)
        .map(|i| name(1_000 * i, &format!("{i:016x}")))
        .collect();
    for n in &names {
        upload(&store, &rt, n, n.id.as_bytes());
    }
    let listed = rt.block_on(store.list()).unwrap();
    let err = rt.block_on(store.prune(&listed, 0, None)).unwrap_err();
    assert!(
        matches!(err, StoreError::PruneWouldDeleteAll { .. }),
        "{err}"
    );
    assert_eq!(rt.block_on(store.list()).unwrap().len(), 5);

    // Only the backups handed in as verified count: the newest listed one is left out (the
    // caller could not verify it), so it is neither one of the two kept nor deleted.
    let verified = &listed[..4];
    let deleted = rt.block_on(store.prune(verified, 2, None)).unwrap();
    let deleted: Vec<_> = deleted.into_iter().map(|b| b.name).collect();
    assert_eq!(deleted, names[..2]);
    let kept: Vec<_> = rt
        .block_on(store.list())
        .unwrap()
        .into_iter()
        .map(|b| b.name)
        .collect();
    assert_eq!(kept, names[2..]);

    // The protected backup (the oldest left) survives and takes one of the places.
    let listed = rt.block_on(store.list()).unwrap();
    let deleted = rt
        .block_on(store.prune(&listed, 2, Some(&names[2])))
        .unwrap();
    let deleted: Vec<_> = deleted.into_iter().map(|b| b.name).collect();
    assert_eq!(deleted, names[3..4]);
    let listed = rt.block_on(store.list()).unwrap();
    assert!(
        rt.block_on(store.prune(&listed, 7, None))
            .unwrap()
            .is_empty()
    );
    assert_eq!(rt.block_on(store.list()).unwrap().len(), 2);
}

#[test]
fn find_by_id_prefix() {
    let dir = TempDir::new().unwrap();
    let rt = runtime();
    let (store, _) = local_store(&dir, "find");
    upload(&store, &rt, &name(1, "abc0000000000001"), b"1");
    upload(&store, &rt, &name(2, "abc0000000000002"), b"2");
    upload(&store, &rt, &name(3, "def0000000000003"), b"3");

    assert_eq!(
        rt.block_on(store.find("d")).unwrap().name.id,
        "def0000000000003"
    );
    assert_eq!(
        rt.block_on(store.find("abc0000000000002"))
            .unwrap()
            .name
            .created_unix_ms,
        2
    );
    match rt.block_on(store.find("abc")).unwrap_err() {
        StoreError::Ambiguous { matches, .. } => assert_eq!(matches.len(), 2),
        other => panic!("expected Ambiguous, got {other}"),
    }
    let missing = rt.block_on(store.find("0")).unwrap_err();
    assert!(matches!(missing, StoreError::NotFound { .. }), "{missing}");
    assert!(missing.to_string().contains("`0`"), "{missing}");
    let invalid = rt.block_on(store.find("xyz")).unwrap_err();
    assert!(
        matches!(invalid, StoreError::InvalidName { .. }),
        "{invalid}"
    );
}

/// Writes a small file at each of `names` under `root`, creating folders on the way.
fn write_junk(root: &std::path::Path, names: &[&str]) {
    for name in names {
        let path = root.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, b"junk").unwrap();
    }
}

#[test]
fn unparseable_names_are_ignored_by_list() {
    let server = S3Server::start();
    let rt = runtime();
    let store = server.store("mixed");
    let good = upload(
        &store,
        &rt,
        &name(1_700_000_000_000, "0011223344556677"),
        b"ok",
    );
    let junk = [
        "notes.txt",
        "lockbox-123-0011223344556677.lbx",
        "lockbox-1700000000000-0011223344556677.lbx.tmp",
        "lockbox-1700000000000-00112233445566AA.lbx",
        "sub/lockbox-1700000000001-0011223344556677.lbx",
    ];
    write_junk(&server.bucket_dir().join("mixed"), &junk);
    assert_eq!(
        ids(&rt.block_on(store.list()).unwrap()),
        ids(std::slice::from_ref(&good))
    );

    let dir = TempDir::new().unwrap();
    let (local, path) = local_store(&dir, "mixed");
    let good = upload(&local, &rt, &good.name, b"ok");
    write_junk(&path, &junk);
    assert_eq!(ids(&rt.block_on(local.list()).unwrap()), ids(&[good]));
}

#[test]
fn wrong_credentials_are_permission_denied() {
    let server = S3Server::start();
    let rt = runtime();
    let wrong = s3_options(&server.endpoint(), ACCESS_KEY, "not-the-secret");
    let store = server.store_with("p", wrong);
    let err = rt.block_on(store.list()).unwrap_err();
    assert!(
        matches!(err, StoreError::PermissionDenied { .. }),
        "{err:?}"
    );
    assert!(!err.is_transient());
    assert!(err.to_string().contains("s3://backups/p"), "{err}");

    let unknown = s3_options(&server.endpoint(), "nobody", "nothing");
    let err = rt
        .block_on(server.store_with("p", unknown).list())
        .unwrap_err();
    assert!(
        matches!(err, StoreError::PermissionDenied { .. }),
        "{err:?}"
    );
}

#[test]
fn missing_bucket_is_not_found() {
    let server = S3Server::start();
    let rt = runtime();
    let store = Store::open_with("s3://no-such-bucket/p", server.options()).unwrap();
    let err = rt.block_on(store.list()).unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err:?}");
}

#[test]
fn server_not_running_is_transient_and_quick() {
    let rt = runtime();
    let endpoint = format!("http://127.0.0.1:{}", free_port());
    let options = s3_options(&endpoint, "ak", "sk");
    let store = Store::open_with("s3://backups/p", options).unwrap();
    let started = Instant::now();
    let err = rt.block_on(store.list()).unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    assert!(matches!(err, StoreError::Unavailable { .. }));
    assert!(err.to_string().contains("s3://backups/p"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );

    // The same error reaches a blocking writer through io::Error, StoreError inside.
    let mut writer = store
        .upload(&name(1, "1111111111111111"), rt.handle().clone())
        .unwrap();
    let data = random_bytes(2 * 1024 * 1024);
    let io_err = writer
        .write_all(&data)
        .expect_err("writing to a dead server must fail");
    let inner = StoreError::from_io_ref(&io_err).unwrap_or_else(|| panic!("{io_err}"));
    assert!(inner.is_transient(), "{inner}");
}

#[test]
fn server_errors_after_retries_are_transient() {
    let rt = runtime();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = hits.clone();
    rt.spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut socket, _)) = listener.accept().await {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut buf = [0u8; 4096];
            let _ = socket.read(&mut buf).await;
            let reply = "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
            let _ = socket.write_all(reply.as_bytes()).await;
        }
    });
    let options = s3_options(&format!("http://127.0.0.1:{port}"), "ak", "sk");
    let store = Store::open_with("s3://backups/p", options).unwrap();
    let err = rt.block_on(store.list()).unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    assert_eq!(
        hits.load(std::sync::atomic::Ordering::SeqCst),
        3,
        "first try + 2 retries"
    );
}

/// A provider that answers with the Content-Range and Content-Length of what was asked and then
/// a chunked body that never ends. The range read stops one piece past the range, the whole
/// read one piece past its limit, and the server sees the client hang up: before, both kept
/// every byte sent (the server here stops itself at 256 MiB).
#[test]
fn an_endless_body_over_http_is_cut_off() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const PIECE: usize = 64 << 10;
    const GIVE_UP: u64 = 256 << 20;
    let rt = runtime();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    let sent = Arc::new(AtomicU64::new(0));
    let counter = sent.clone();
    rt.spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let sent = counter.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let reply = "HTTP/1.1 206 Partial Content\r\ncontent-range: bytes 0-99/100\r\n\
                    content-length: 100\r\ntransfer-encoding: chunked\r\netag: \"e\"\r\n\
                    last-modified: Tue, 08 Dec 2026 00:00:00 GMT\r\n\r\n";
                let mut piece = format!("{PIECE:x}\r\n").into_bytes();
                piece.extend(std::iter::repeat_n(b'Z', PIECE));
                piece.extend_from_slice(b"\r\n");
                let _ = socket.write_all(reply.as_bytes()).await;
                while sent.load(Ordering::SeqCst) < GIVE_UP {
                    if socket.write_all(&piece).await.is_err() {
                        return;
                    }
                    sent.fetch_add(PIECE as u64, Ordering::SeqCst);
                }
            });
        }
    });
    let options = s3_options(&format!("http://127.0.0.1:{port}"), "ak", "sk");
    let store = Store::open_with("s3://backups/p", options).unwrap();
    let object = lockbox_store::ObjectName::new("packs/ab/abcd").unwrap();

    let err = rt
        .block_on(store.get_object_range(&object, 0..100))
        .unwrap_err();
    assert!(matches!(err, StoreError::LongRead { .. }), "{err:?}");
    let err = rt
        .block_on(store.get_object_bounded(&object, 1000))
        .unwrap_err();
    assert!(matches!(err, StoreError::TooLarge { .. }), "{err:?}");
    std::thread::sleep(Duration::from_millis(200));
    let taken = sent.load(Ordering::SeqCst);
    assert!(taken < 32 << 20, "the server got {taken} bytes out");
}

#[test]
fn delete_refuses_foreign_locations() {
    let dir = TempDir::new().unwrap();
    let rt = runtime();
    let (store, path) = local_store(&dir, "d");
    let info = upload(&store, &rt, &name(1, "1234123412341234"), b"1");
    std::fs::write(path.join("precious.txt"), b"keep").unwrap();
    let forged = BackupInfo {
        location: "precious.txt".into(),
        ..info.clone()
    };
    assert!(matches!(
        rt.block_on(store.delete(&forged)),
        Err(StoreError::InvalidName { .. })
    ));
    assert!(path.join("precious.txt").is_file());
    rt.block_on(store.delete(&info)).unwrap();
    assert!(rt.block_on(store.list()).unwrap().is_empty());
}

#[test]
fn truncated_object_is_an_error_not_a_short_read() {
    let dir = TempDir::new().unwrap();
    let rt = runtime();
    let (store, path) = local_store(&dir, "t");
    let data = random_bytes(100_000);
    let info = upload(&store, &rt, &name(1, "7777777777777777"), &data);
    std::fs::write(path.join(info.name.file_name()), &data[..50_000]).unwrap();
    let mut reader = store.download(&info, rt.handle().clone()).unwrap();
    let mut out = Vec::new();
    let err = reader.read_to_end(&mut out).unwrap_err();
    assert!(StoreError::from_io_ref(&err).is_some(), "{err}");
    assert!(reader.read(&mut [0u8; 16]).is_err(), "stays failed");
}

#[test]
fn an_object_changing_size_mid_download_is_an_error() {
    let dir = TempDir::new().unwrap();
    let rt = runtime();
    let (store, path) = local_store(&dir, "g");
    let data = random_bytes(100_000);
    for (i, change) in ["grow", "shrink"].into_iter().enumerate() {
        let info = upload(&store, &rt, &name(i as u64 + 1, "5555555555555555"), &data);
        let file = path.join(info.name.file_name());
        let mut reader = store.download(&info, rt.handle().clone()).unwrap();
        let mut head = [0u8; 1000];
        reader.read_exact(&mut head).unwrap();
        assert_eq!(head, data[..1000]);
        let f = std::fs::OpenOptions::new()
            .append(true)
            .open(&file)
            .unwrap();
        match change {
            "grow" => (&f).write_all(b"appended").unwrap(),
            _ => f.set_len(50_000).unwrap(),
        }
        let mut rest = Vec::new();
        let err = reader.read_to_end(&mut rest).unwrap_err();
        assert!(StoreError::from_io_ref(&err).is_some(), "{change}: {err}");
        assert!(err.to_string().contains("listed at 100000 bytes"), "{err}");
    }
}

#[test]
fn transfers_work_from_spawn_blocking_threads() {
    let dir = TempDir::new().unwrap();
    let rt = runtime();
    let (store, _) = local_store(&dir, "sb");
    let data = random_bytes(700_000);
    let handle = rt.handle().clone();
    let (s, d) = (store.clone(), data.clone());
    let back = rt
        .block_on(rt.spawn_blocking(move || {
            let mut writer = s
                .upload(&name(3, "3333333333333333"), handle.clone())
                .unwrap();
            writer.write_all(&d).unwrap();
            let info = writer.finish().unwrap();
            let mut out = Vec::new();
            s.download(&info, handle)
                .unwrap()
                .read_to_end(&mut out)
                .unwrap();
            out
        }))
        .unwrap();
    assert!(back == data);
}

/// What a cloud backend must do against its real protocol server: a multipart round trip,
/// listing, and interrupted uploads that never list (Azure keeps uncommitted blocks
/// invisibly until it expires them; nothing else is left).
#[cfg(feature = "azure")]
fn cloud_round_trip(server: &impl StorageServer) {
    let rt = runtime();
    round_trip(&server.store("phone/one"), &rt);
    let parts = small_parts(server.options());
    multipart(&server.store_with("mp", parts.clone()), &rt);

    let store = server.store_with("x", parts);
    for how in ["abort", "drop"] {
        // Azurite keeps blocks in its own extent files: give the first block time to land.
        let started = Instant::now();
        interrupted_upload(&store, &rt, how, || {
            started.elapsed() > Duration::from_millis(300)
        });
        wait_until("the interrupted upload is gone", || {
            rt.block_on(store.list()).unwrap().is_empty()
        });
    }
}

#[cfg(feature = "azure")]
mod azure {
    use super::*;
    use lockbox_store::test_support::{AZURE_ACCOUNT, AzureServer, azure_options};

    #[test]
    fn round_trip_multipart_and_interrupted_uploads_on_azure() {
        let server = AzureServer::start();
        cloud_round_trip(&server);
    }

    #[test]
    fn wrong_azure_key_is_permission_denied() {
        let server = AzureServer::start();
        let wrong_key = "d3Jvbmcga2V5IGZvciB0aGUgbG9ja2JveCB0ZXN0IGFjY291bnQ=";
        let options = azure_options(&server.endpoint(), AZURE_ACCOUNT, wrong_key);
        let err = runtime()
            .block_on(server.store_with("p", options).list())
            .unwrap_err();
        assert!(
            matches!(err, StoreError::PermissionDenied { .. }),
            "{err:?}"
        );
    }

    #[test]
    fn stopped_azure_is_unavailable() {
        let mut server = AzureServer::start();
        let store = server.store("p");
        server.stop();
        let err = runtime().block_on(store.list()).unwrap_err();
        assert!(matches!(err, StoreError::Unavailable { .. }), "{err:?}");
    }
}

/// An object that would need more parts than the provider allows fails with `TooLarge` and
/// leaves nothing listed; told the expected size, the upload picks parts large enough for it.
/// (The limit is lowered to 2 parts here so that megabytes stand for tens of gigabytes.)
#[test]
fn an_upload_never_outgrows_the_part_limit_and_a_size_hint_makes_room() {
    let server = S3Server::start();
    let rt = runtime();
    let store = with_part_limit(server.store_with("parts", small_parts(server.options())), 2);
    let data: Vec<u8> = (0..3 * MIN_PART_SIZE).map(|i| (i % 251) as u8).collect();

    let mut writer = store
        .upload(&name(1, "1111111111111111"), rt.handle().clone())
        .unwrap();
    let written = data
        .chunks(100_003)
        .try_for_each(|piece| writer.write_all(piece));
    // The task's error comes back on the write that finds it stopped, or else on `finish`.
    let too_large = match written {
        Err(e) => e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<StoreError>())
            .is_some_and(|e| matches!(e, StoreError::TooLarge { .. })),
        Ok(()) => matches!(writer.finish(), Err(StoreError::TooLarge { .. })),
    };
    assert!(
        too_large,
        "an object past the part limit was not refused as too large"
    );
    assert!(rt.block_on(store.list()).unwrap().is_empty());

    let mut writer = store
        .upload_sized(
            &name(2, "2222222222222222"),
            rt.handle().clone(),
            Some(data.len() as u64),
        )
        .unwrap();
    writer.write_all(&data).unwrap();
    let info = writer.finish().unwrap();
    assert_eq!(info.size, data.len() as u64);
    assert!(
        download(&store, &rt, &info) == data,
        "the sized upload did not round-trip"
    );
}
