//! The device commands: `enable`, `backup` and `restore` on a home, `status`, `password change`,
//! `key rotate`, `disable`. Each one is a call into [`lockbox_client::Device`]; this module only
//! gathers the inputs (flags, config, prompts), draws progress and prints the result.

use anyhow::{Context, Result, bail};
use lockbox_client::{
    Cancel, Device, DeviceStatus, EnableOptions, FleetSettings, Protection, Restored, Secret,
    Status, TokenSource,
};
use lockbox_crypto::RecoveryCode;
use lockbox_token::{FixedToken, MintingSource};
use lockbox_vault_core::KsfParams;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::keyvault::{ENV_NEW_PASSWORD, ENV_PASSWORD, new_password, password, token_from};
use crate::cli::{DisableArgs, EnableArgs, RestoreArgs, StatusArgs, TokenArgs};
use crate::config::Config;
use crate::{keysrc, progress};

/// What every device command needs: the config and where the home is.
pub struct Ctx<'a> {
    pub cfg: &'a Config,
    pub home: PathBuf,
    pub quiet: bool,
}

/// `--home`, else `LOCKBOX_HOME` (both through clap), else `$XDG_DATA_HOME/lockbox`, else
/// `~/.local/share/lockbox`.
pub fn home_dir(flag: Option<&Path>) -> Result<PathBuf> {
    if let Some(dir) = flag {
        return Ok(dir.to_owned());
    }
    let base = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .context("no home directory: pass --home DIR or set LOCKBOX_HOME")?;
    Ok(base.join("lockbox"))
}

impl Ctx<'_> {
    /// The pinned fleet from the config, if it names one; half a fleet is an error.
    pub(crate) fn fleet(&self) -> Result<Option<FleetSettings>> {
        let c = self.cfg;
        let keys = (&c.fleet_id, &c.fleet_public_key, &c.witness_public_key);
        match (&c.gateway, keys) {
            (None, (None, None, None)) => Ok(None),
            (Some(gateway), (Some(id), Some(fleet), Some(witness))) => Ok(Some(FleetSettings {
                gateway: gateway.clone(),
                gateway_ca: c.gateway_ca.clone(),
                fleet_id: id.clone(),
                fleet_public_key: fleet.clone(),
                witness_public_key: witness.clone(),
            })),
            _ => bail!(
                "the config names only part of a fleet: `gateway`, `fleet_id`, \
                 `fleet_public_key` and `witness_public_key` go together"
            ),
        }
    }

    /// The account token source: a token file or `LOCKBOX_ACCOUNT_TOKEN`, else (dev only) a
    /// token minted per request with the config's `dev_issuer_key`.
    pub(crate) fn tokens(&self, args: &TokenArgs) -> Result<Option<Arc<dyn TokenSource>>> {
        if let Some(token) = token_from(args.token_file.as_deref(), self.cfg)? {
            return Ok(Some(Arc::new(FixedToken::new(token.as_str()))));
        }
        let Some(key) = &self.cfg.dev_issuer_key else {
            return Ok(None);
        };
        let issuer = super::dev::load_issuer(key)?;
        let audience = self
            .cfg
            .fleet_id
            .as_deref()
            .unwrap_or(lockbox_token::DEV_AUDIENCE);
        let source = MintingSource::new(Arc::new(issuer), audience, Duration::from_secs(600));
        Ok(Some(Arc::new(source)))
    }

    /// The token source with no token flag: the environment, the config's file, or dev
    /// minting.
    pub(crate) fn dev_tokens(&self) -> Result<Option<Arc<dyn TokenSource>>> {
        self.tokens(&TokenArgs { token_file: None })
    }

    pub(crate) fn open(&self, token: &TokenArgs) -> Result<Device> {
        Ok(Device::open(&self.home, self.tokens(token)?)?)
    }

    /// The device for a command that never asks the vault (no token is read or minted).
    pub(crate) fn open_offline(&self) -> Result<Device> {
        Ok(Device::open(&self.home, None)?)
    }

    /// The pinned fleet, required when the key goes to or comes from the vault: said before a
    /// password is asked for.
    fn fleet_for(&self, password: bool, what: &str) -> Result<Option<FleetSettings>> {
        let fleet = self.fleet()?;
        if password && fleet.is_none() {
            bail!(
                "no fleet to {what}: pass --config FILE naming `gateway` and the pinned fleet \
                 keys (`lockbox dev cluster` writes one)"
            );
        }
        Ok(fleet)
    }

    /// Runs a vault exchange (the Argon2id hash alone takes about a second) with a spinner.
    fn vault<T>(&self, f: impl FnOnce() -> T) -> T {
        let bar = progress::spinner("hashing the password and asking the vault", self.quiet);
        let out = f();
        bar.finish_and_clear();
        out
    }
}

pub fn enable(args: &EnableArgs, ctx: &Ctx<'_>) -> Result<()> {
    let opts = EnableOptions {
        account: args.account.clone(),
        store: args.store.clone(),
        fleet: ctx.fleet_for(args.password, "deposit the key with")?,
        max_attempts: args.max_attempts,
        ksf: KsfParams::DEFAULT,
        replace: args.replace,
    };
    let secret = match args.password {
        true => Some(new_password(ENV_PASSWORD)?),
        false => None,
    };
    let tokens = ctx.tokens(&args.token)?;
    let (device, code) = ctx
        .vault(|| {
            Device::enable(
                &ctx.home,
                opts,
                secret.as_ref().map(|p| p.as_bytes()),
                tokens,
            )
        })
        .context("enabling backups")?;
    match code {
        Some(code) => {
            eprintln!(
                "backups enabled for {}; your recovery code (write it down, it is shown once \
                 and is the only way to restore on a new phone):",
                args.account
            );
            println!("{}", code.to_grouped().as_str());
        }
        None => println!(
            "backups enabled for {}: the vault holds the key under your password; {} wrong \
             passwords in a row destroy it",
            args.account, args.max_attempts
        ),
    }
    eprintln!("home: {}", device.home().display());
    Ok(())
}

pub fn backup(dir: Option<&Path>, keep: Option<usize>, ctx: &Ctx<'_>) -> Result<()> {
    let mut device = ctx.open_offline()?;
    let keep = keep.or(ctx.cfg.keep);
    let (bar, mut on) = progress::device(ctx.quiet);
    let report = device.backup(dir, keep, &mut on, &Cancel::new())?;
    bar.finish_and_clear();
    warn_ignored(&report.ignored, "not counted and not deleted");
    println!("{}", report.backup.name.id);
    eprintln!(
        "backed up {} to {} ({} bytes)",
        device
            .settings()
            .source_dir
            .as_deref()
            .unwrap_or(Path::new("?"))
            .display(),
        device.settings().store,
        report.backup.size
    );
    Ok(())
}

/// `restore DEST --account ID --store URL (--password | --recovery-code-file FILE)`: a new
/// phone takes over the account's backups.
pub fn restore_new_phone(args: &RestoreArgs, ctx: &Ctx<'_>) -> Result<()> {
    let account = args
        .vault
        .account
        .clone()
        .context("--account is required")?;
    let store = ctx.cfg.storage(args.from.as_deref())?;
    let opts = EnableOptions {
        account,
        store,
        fleet: ctx.fleet_for(args.with_password, "ask for the key")?,
        max_attempts: 10,
        ksf: KsfParams::DEFAULT,
        replace: false,
    };
    let tokens = ctx.tokens(&TokenArgs {
        token_file: args.vault.token_file.clone(),
    })?;
    let typed;
    let secret = match args.with_password {
        true => {
            typed = password("Vault password: ", ENV_PASSWORD)?;
            Secret::Password(typed.as_bytes())
        }
        false => Secret::RecoveryCode(keysrc::load_key(&args.key, ctx.cfg)?),
    };
    let (bar, mut on) = progress::device(ctx.quiet);
    let result = ctx.vault(|| {
        Device::restore(
            &ctx.home,
            opts,
            secret,
            &args.dest,
            &mut on,
            &Cancel::new(),
            tokens,
        )
    });
    bar.finish_and_clear();
    let (device, restored) = result.context("restoring on this device")?;
    let what = describe(&restored);
    if let Restored::Snapshot { pinned: None, .. } = &restored {
        eprintln!(
            "note: no vault pin to check this snapshot against (a recovery code): make sure it is the newest you made"
        );
    }
    eprintln!(
        "restored {what} into {}; this device now backs up for {}",
        args.dest.display(),
        device.settings().account
    );
    Ok(())
}

/// `restore DEST` on an enabled device, with its own key.
pub fn restore_here(dest: &Path, ctx: &Ctx<'_>) -> Result<()> {
    let device = ctx.open_offline()?;
    let (bar, mut on) = progress::device(ctx.quiet);
    let restored = device.restore_latest(dest, &mut on, &Cancel::new())?;
    bar.finish_and_clear();
    eprintln!("restored {} into {}", describe(&restored), dest.display());
    Ok(())
}

/// What a restore restored: its id, date and, for a snapshot, its place in the catalog.
pub(crate) fn describe(restored: &Restored) -> String {
    match restored {
        Restored::Stream(info) => format!(
            "backup {} (made {} UTC)",
            info.name.id,
            super::format_ms(info.name.created_unix_ms)
        ),
        Restored::Snapshot { entry, pinned } => format!(
            "snapshot {} (entry {} of the catalog, made {} UTC{})",
            entry.id.short(),
            entry.seq,
            super::format_ms(entry.created_unix_ms),
            match pinned {
                Some(seq) =>
                    format!("; the vault's pin required entry {seq}, and the catalog reaches it"),
                None => String::new(),
            }
        ),
    }
}

pub fn status(args: &StatusArgs, ctx: &Ctx<'_>) -> Result<()> {
    let device = ctx.open(&args.token)?;
    let status = ctx.vault(|| device.status())?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&status_json(&status))?);
        return Ok(());
    }
    let s = &status.settings;
    println!("account     {}", s.account);
    println!("store       {}", s.store);
    println!(
        "protection  {}",
        match s.protection {
            Protection::Password => "vault password",
            Protection::RecoveryCode => "recovery code",
        }
    );
    if let Some(v) = &status.vault {
        println!("vault       {}", describe_vault(v));
    }
    println!("backups     {}", status.backups.len());
    if let Some(latest) = status.backups.last() {
        println!(
            "latest      {} ({} UTC, {} bytes)",
            latest.name.id,
            super::format_ms(latest.name.created_unix_ms),
            latest.size
        );
    }
    println!("snapshots   {}", status.snapshots.len());
    if let Some(latest) = status.snapshots.last() {
        println!(
            "latest      snapshot {} (entry {}, {} UTC, {} bytes)",
            latest.id.short(),
            latest.seq,
            super::format_ms(latest.created_unix_ms),
            latest.bytes
        );
    }
    if status.rotation_pending {
        println!("note        a key rotation was interrupted: run `lockbox key rotate` again");
    }
    warn_ignored(&status.ignored, "not one of this device's backups");
    Ok(())
}

fn describe_vault(v: &Status) -> String {
    match v {
        Status::Absent => "no record (deleted)".into(),
        Status::Destroyed { .. } => {
            "destroyed after too many wrong passwords: the key it held is gone for good".into()
        }
        Status::Active {
            attempts_left,
            limit,
            ..
        } => format!("active, {attempts_left} of {limit} attempts left"),
    }
}

fn status_json(status: &DeviceStatus) -> serde_json::Value {
    let s = &status.settings;
    let vault = status.vault.as_ref().map(|v| match v {
        Status::Absent => serde_json::json!({ "state": "absent" }),
        Status::Destroyed { generation } => {
            serde_json::json!({ "state": "destroyed", "generation": generation })
        }
        Status::Active {
            attempts_left,
            limit,
            generation,
            ..
        } => serde_json::json!({
            "state": "active", "attempts_left": attempts_left, "limit": limit,
            "generation": generation,
        }),
    });
    let backups: Vec<_> = status
        .backups
        .iter()
        .map(|b| {
            serde_json::json!({
                "id": b.name.id, "created_unix_ms": b.name.created_unix_ms, "size": b.size,
            })
        })
        .collect();
    serde_json::json!({
        "account": s.account,
        "store": s.store,
        "protection": match s.protection {
            Protection::Password => "password",
            Protection::RecoveryCode => "recovery-code",
        },
        "source_dir": s.source_dir,
        "vault": vault,
        "backups": backups,
        "snapshots": status.snapshots.iter().map(super::snapshot::entry_json).collect::<Vec<_>>(),
        "ignored": status.ignored,
        "rotation_pending": status.rotation_pending,
    })
}

pub fn password_change(token: &TokenArgs, ctx: &Ctx<'_>) -> Result<()> {
    let device = ctx.open(token)?;
    if device.settings().protection != Protection::Password {
        return Err(lockbox_client::DeviceError::NoPassword.into());
    }
    let old = password("Current vault password: ", ENV_PASSWORD)?;
    let new = new_password(ENV_NEW_PASSWORD)?;
    ctx.vault(|| device.change_password(old.as_bytes(), new.as_bytes()))
        .context("changing the password")?;
    println!("password changed for {}", device.settings().account);
    Ok(())
}

pub fn rotate(dir: Option<&Path>, token: &TokenArgs, ctx: &Ctx<'_>) -> Result<()> {
    let mut device = ctx.open(token)?;
    let typed = match device.settings().protection {
        Protection::Password => Some(password("Vault password: ", ENV_PASSWORD)?),
        Protection::RecoveryCode => None,
    };
    let (bar, mut on) = progress::device(ctx.quiet);
    let rotated = ctx.vault(|| {
        device.rotate_key(
            typed.as_ref().map(|p| p.as_bytes()),
            dir,
            &mut on,
            &Cancel::new(),
        )
    });
    bar.finish_and_clear();
    let rotated = rotated.context("rotating the key")?;
    eprintln!(
        "new key in use: backup {} made and verified under it; {} backups under the old key deleted{}",
        rotated.backup.name.id,
        rotated.deleted.len(),
        repository_note(rotated.repository_objects)
    );
    if let Some(code) = rotated.recovery_code {
        print_code(
            "your new recovery code (the old one no longer restores anything):",
            &code,
        );
    }
    Ok(())
}

fn repository_note(objects: u64) -> String {
    match objects {
        0 => String::new(),
        n => format!(", and the incremental snapshots with them ({n} objects)"),
    }
}

pub fn disable(args: &DisableArgs, ctx: &Ctx<'_>) -> Result<()> {
    let device = ctx.open(&args.token)?;
    let typed = match device.settings().protection {
        Protection::Password => Some(password("Vault password: ", ENV_PASSWORD)?),
        Protection::RecoveryCode => None,
    };
    let account = device.settings().account.clone();
    let record = match typed {
        Some(_) => "vault record destroyed, ",
        None => "",
    };
    let disabled = ctx
        .vault(|| device.disable(typed.as_ref().map(|p| p.as_bytes()), args.delete_backups))
        .context("disabling backups")?;
    eprintln!(
        "backups disabled for {account}: {record}home wiped, {} backups deleted{}",
        disabled.deleted.len(),
        repository_note(disabled.repository_objects)
    );
    if let Some(code) = disabled.recovery_code {
        print_code(
            "the backups were kept; this recovery code is now the only way to open them:",
            &code,
        );
    }
    Ok(())
}

fn print_code(what: &str, code: &RecoveryCode) {
    eprintln!("{what}");
    println!("{}", code.to_grouped().as_str());
}

fn warn_ignored(ignored: &[String], consequence: &str) {
    for why in ignored {
        eprintln!("lockbox: warning: {why}; {consequence}");
    }
}
