//! `Device` on a recovery-code home and a local-folder store: what an app gets without a vault.
//! Cancellation, the interrupted key rotation, and deletes that touch only this key's backups.
//! (The password path runs against real node and gateway processes in lockbox-cli's
//! tests/device_flow.rs.)

use lockbox_client::backup::BackupError;
use lockbox_client::{Cancel, Device, DeviceError, EnableOptions, Secret, Step};
use lockbox_crypto::RecoveryCode;
use lockbox_vault_core::KsfParams;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Self {
        let env = Self {
            dir: tempfile::tempdir().unwrap(),
        };
        let chats = env.p("chats");
        std::fs::create_dir_all(chats.join("media")).unwrap();
        std::fs::write(chats.join("msgs.db"), b"see you at 8").unwrap();
        // Several buffers' worth, so a cancel lands in the middle of the stream.
        std::fs::write(chats.join("media/video.mp4"), vec![3u8; 8 << 20]).unwrap();
        env
    }

    fn p(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn opts(&self) -> EnableOptions {
        EnableOptions {
            account: "carol".into(),
            store: format!("file://{}", self.p("cloud").display()),
            fleet: None,
            max_attempts: 10,
            ksf: KsfParams::DEFAULT,
            replace: false,
        }
    }

    fn enable(&self, home: &str) -> (Device, RecoveryCode) {
        let (device, code) = Device::enable(&self.p(home), self.opts(), None, None).unwrap();
        (device, code.expect("a recovery-code device gets its code"))
    }

    fn objects(&self) -> Vec<PathBuf> {
        match std::fs::read_dir(self.p("cloud")) {
            Err(_) => Vec::new(),
            Ok(d) => d
                .map(|e| e.unwrap().path())
                .filter(|p| p.is_file())
                .collect(),
        }
    }

    fn restore(&self, home: &str, code: &RecoveryCode, dest: &Path) -> Result<Device, DeviceError> {
        let secret = Secret::RecoveryCode(code.key().clone());
        Device::restore(
            &self.p(home),
            self.opts(),
            secret,
            dest,
            &mut |_| {},
            &Cancel::new(),
            None,
        )
        .map(|(device, _)| device)
    }
}

fn cancel_after_first(step: Step, cancel: &Cancel) -> impl FnMut(lockbox_client::Progress) + '_ {
    move |p| {
        if p.step == step && p.bytes > 0 {
            cancel.cancel();
        }
    }
}

#[test]
fn enable_backup_and_restore_on_a_new_home() {
    let env = Env::new();
    let (mut device, code) = env.enable("phone");
    let mode = std::fs::metadata(env.p("phone/key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    device
        .backup(Some(&env.p("chats")), None, &mut |_| {}, &Cancel::new())
        .unwrap();
    assert!(matches!(
        Device::enable(&env.p("phone"), env.opts(), None, None),
        Err(DeviceError::AlreadyEnabled { .. })
    ));
    let dest = env.p("restored");
    let new = env.restore("new-phone", &code, &dest).unwrap();
    assert_eq!(
        std::fs::read(dest.join("msgs.db")).unwrap(),
        b"see you at 8"
    );
    assert_eq!(new.settings().account, "carol");
    // The new phone backs up with the same key: the old phone's code still opens everything.
    assert_eq!(new.status().unwrap().backups.len(), 1);
}

#[test]
fn a_cancelled_backup_or_restore_leaves_nothing() {
    let env = Env::new();
    let (mut device, code) = env.enable("phone");
    let cancel = Cancel::new();
    let mut on = cancel_after_first(Step::Backup, &cancel);
    let err = device
        .backup(Some(&env.p("chats")), None, &mut on, &cancel)
        .unwrap_err();
    assert!(
        matches!(err, DeviceError::Backup(BackupError::Cancelled)),
        "{err:?}"
    );
    assert_eq!(env.objects(), Vec::<PathBuf>::new());

    device
        .backup(Some(&env.p("chats")), None, &mut |_| {}, &Cancel::new())
        .unwrap();
    let cancel = Cancel::new();
    let mut on = cancel_after_first(Step::Restore, &cancel);
    let dest = env.p("restored");
    let err = device.restore_latest(&dest, &mut on, &cancel).unwrap_err();
    assert!(
        matches!(err, DeviceError::Backup(BackupError::Cancelled)),
        "{err:?}"
    );
    assert!(!dest.exists());
    let leftovers: Vec<_> = std::fs::read_dir(env.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("partial"))
        .collect();
    assert_eq!(leftovers, Vec::<String>::new());
    drop(code);
}

#[test]
fn an_interrupted_rotation_blocks_backups_and_finishes_with_the_same_new_key() {
    let env = Env::new();
    let (mut device, old_code) = env.enable("phone");
    let chats = env.p("chats");
    device
        .backup(Some(&chats), None, &mut |_| {}, &Cancel::new())
        .unwrap();
    let cancel = Cancel::new();
    let mut on = cancel_after_first(Step::Backup, &cancel);
    let err = device.rotate_key(None, None, &mut on, &cancel).unwrap_err();
    assert!(
        matches!(err, DeviceError::Backup(BackupError::Cancelled)),
        "{err:?}"
    );
    // Nothing old was touched, the old key is still the key, and the new one is pending.
    assert_eq!(env.objects().len(), 1);
    let pending = std::fs::read_to_string(env.p("phone/key.next")).unwrap();
    assert!(device.status().unwrap().rotation_pending);
    let err = device
        .backup(None, None, &mut |_| {}, &Cancel::new())
        .unwrap_err();
    assert!(matches!(err, DeviceError::RotationPending), "{err:?}");

    let rotated = device
        .rotate_key(None, None, &mut |_| {}, &Cancel::new())
        .unwrap();
    let new_code = rotated
        .recovery_code
        .expect("a recovery-code device gets its new code");
    assert_eq!(pending.trim(), new_code.to_grouped().as_str());
    assert_eq!(rotated.deleted.len(), 1);
    assert_eq!(env.objects().len(), 1);
    assert!(!env.p("phone/key.next").exists());
    assert!(!device.status().unwrap().rotation_pending);
    assert!(env.restore("stale", &old_code, &env.p("r1")).is_err());
    env.restore("fresh", &new_code, &env.p("r2")).unwrap();
}

#[test]
fn disable_deletes_only_this_keys_backups() {
    let env = Env::new();
    let (mut device, _code) = env.enable("phone");
    device
        .backup(Some(&env.p("chats")), None, &mut |_| {}, &Cancel::new())
        .unwrap();
    // Another device's backup in the same bucket, and an object planted by the provider.
    let (mut other, _) = Device::enable(&env.p("other"), env.opts(), None, None).unwrap();
    other
        .backup(Some(&env.p("chats")), None, &mut |_| {}, &Cancel::new())
        .unwrap();
    let planted = env
        .p("cloud")
        .join("lockbox-1700000000000-0011223344556677.lbx");
    std::fs::write(&planted, b"not a backup").unwrap();
    assert_eq!(env.objects().len(), 3);
    let disabled = device.disable(None, true).unwrap();
    assert_eq!(disabled.deleted.len(), 1);
    assert!(disabled.recovery_code.is_none());
    assert_eq!(env.objects().len(), 2);
    assert!(planted.exists());
    assert!(!env.p("phone/key").exists());
    assert!(matches!(
        Device::open(&env.p("phone"), None),
        Err(DeviceError::NotEnabled(_))
    ));
}
