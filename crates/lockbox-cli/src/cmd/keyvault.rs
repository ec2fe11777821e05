//! `lockbox key deposit | recover | status | change-password | forget`: the password path
//! through the Backup Key Vault. OPAQUE runs here, on the device: the password never leaves
//! this process, and the vault learns nothing that would let it test a guess offline.
//!
//! Passwords come from the terminal (never from argv, never echoed) or, for scripts, from
//! `LOCKBOX_PASSWORD` / `LOCKBOX_NEW_PASSWORD`. The account token (the messaging service's word
//! that this device acts for the account) comes from `--token-file`, `LOCKBOX_ACCOUNT_TOKEN` or
//! the config's `token_file`, never from argv.

use anyhow::{Context, Result, bail};
use lockbox_client::{Status, Transport, VaultClient};
use lockbox_crypto::BackupKey;
use lockbox_vault_core::KsfParams;
use std::path::Path;
use subtle::ConstantTimeEq;
use tokio::runtime::Runtime;
use zeroize::Zeroizing;

use super::device::Ctx;
use crate::cli::{KeyArgs, TokenArgs, VaultArgs};
use crate::config::{Config, env_text};
use crate::{keysrc, progress};

pub(crate) const ENV_PASSWORD: &str = "LOCKBOX_PASSWORD";
pub(crate) const ENV_NEW_PASSWORD: &str = "LOCKBOX_NEW_PASSWORD";
const ENV_TOKEN: &str = "LOCKBOX_ACCOUNT_TOKEN";
/// Shortest password accepted for a deposit. Online guessing is stopped by the vault's attempt
/// limit, not by the password's length; the Argon2id cost (64 MiB, t=3) is what slows an
/// attacker who stole the vault's secrets. Six characters is WhatsApp's minimum as well.
const MIN_PASSWORD_CHARS: usize = 6;

/// A connected vault client, the runtime it lives on, and the account it acts for.
struct Session<'rt> {
    rt: &'rt Runtime,
    client: VaultClient,
    endpoint: String,
    account: String,
    quiet: bool,
}

impl<'rt> Session<'rt> {
    fn open(rt: &'rt Runtime, args: &VaultArgs, ctx: &Ctx<'_>) -> Result<Self> {
        let (cfg, quiet) = (ctx.cfg, ctx.quiet);
        let account = args
            .account
            .as_ref()
            .or(cfg.account.as_ref())
            .context("no account: pass --account ID or set `account` in the config file")?;
        let Some(endpoint) = args.vault.as_ref().or(cfg.vault.as_ref()) else {
            return Self::pinned(rt, args, ctx, account);
        };
        let ca = match args.vault_ca.as_ref().or(cfg.vault_ca.as_ref()) {
            Some(path) => Some(
                std::fs::read(path)
                    .with_context(|| format!("cannot read CA file {}", path.display()))?,
            ),
            None => None,
        };
        let token = account_token(args, cfg)?;
        let client = rt
            .block_on(connect(endpoint, args.partition, ca.as_deref()))
            .with_context(|| format!("cannot reach the vault at {endpoint}"))?
            .with_token(token.as_str());
        Ok(Self {
            rt,
            client,
            endpoint: endpoint.clone(),
            account: account.clone(),
            quiet,
        })
    }

    /// Through the fleet the config pins (its gateway and manifest keys), with the manifest
    /// high-water mark kept in the home directory.
    fn pinned(rt: &'rt Runtime, args: &VaultArgs, ctx: &Ctx<'_>, account: &str) -> Result<Self> {
        let fleet = ctx.fleet()?.context(
            "no vault: pass --vault URL (one node), or a config naming the fleet (`gateway` and \
             the pinned keys; `lockbox dev cluster` writes one)",
        )?;
        let tokens = ctx
            .tokens(&TokenArgs {
                token_file: args.token_file.clone(),
            })?
            .with_context(|| {
                format!("no account token: pass --token-file FILE or set {ENV_TOKEN}")
            })?;
        let home = lockbox_client::home::Home::new(&ctx.home);
        let client =
            lockbox_client::pinned_client(rt, &home, &fleet, account.as_bytes(), tokens)
                .with_context(|| format!("cannot reach the vault through {}", fleet.gateway))?;
        Ok(Self {
            rt,
            client,
            endpoint: fleet.gateway,
            account: account.to_owned(),
            quiet: ctx.quiet,
        })
    }

    /// Runs one vault exchange with a spinner: the Argon2id password hash alone takes about a
    /// second on a phone-class CPU.
    fn run<T>(&self, exchange: impl std::future::Future<Output = T>) -> T {
        let bar = progress::spinner("hashing the password and asking the vault", self.quiet);
        let out = self.rt.block_on(exchange);
        bar.finish_and_clear();
        out
    }

    fn id(&self) -> &[u8] {
        self.account.as_bytes()
    }
}

/// The account token from `--token-file`, `LOCKBOX_ACCOUNT_TOKEN`, or the config's `token_file`.
fn account_token(args: &VaultArgs, cfg: &Config) -> Result<Zeroizing<String>> {
    token_from(args.token_file.as_deref(), cfg)?.with_context(|| {
        format!(
            "no account token: pass --token-file FILE, set {ENV_TOKEN}, or set `token_file` in \
             the config (a dev vault's tokens come from `lockbox dev token`)"
        )
    })
}

/// The account token from `file`, else `LOCKBOX_ACCOUNT_TOKEN`, else the config's `token_file`;
/// `None` if none is given.
pub(crate) fn token_from(file: Option<&Path>, cfg: &Config) -> Result<Option<Zeroizing<String>>> {
    if let Some(token) = env_text(ENV_TOKEN)?.filter(|_| file.is_none()) {
        return Ok(Some(Zeroizing::new(token.trim().to_owned())));
    }
    let Some(path) = file.or(cfg.token_file.as_deref()) else {
        return Ok(None);
    };
    let text = Zeroizing::new(
        std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the account token file {}", path.display()))?,
    );
    Ok(Some(Zeroizing::new(text.trim().to_owned())))
}

async fn connect(endpoint: &str, partition: u32, ca: Option<&[u8]>) -> Result<VaultClient> {
    let target = VaultClient::discover_with_ca(endpoint, partition, ca).await?;
    Ok(VaultClient::connect_trusting(target, ca).await?)
}

pub fn deposit(key: &KeyArgs, args: &VaultArgs, attempts: u8, ctx: &Ctx<'_>) -> Result<()> {
    let cfg = ctx.cfg;
    if lockbox_vault_core::AttemptLimit::new(attempts).is_none() {
        bail!("--attempts must be between 1 and 100, not {attempts}");
    }
    let backup_key = keysrc::load_key(key, cfg)?;
    let rt = super::runtime()?;
    let vault = Session::open(&rt, args, ctx)?;
    check_authenticated(&vault.endpoint)?;
    let password = new_password(ENV_PASSWORD)?;
    vault
        .run(vault.client.enroll(
            vault.id(),
            password.as_bytes(),
            &backup_key,
            attempts,
            KsfParams::DEFAULT,
        ))
        .context("depositing the key")?;
    println!(
        "deposited: the vault holds the backup key of {} under your password; \
         {attempts} wrong passwords in a row destroy it",
        vault.account
    );
    Ok(())
}

pub fn recover(args: &VaultArgs, out: &Path, ctx: &Ctx<'_>) -> Result<()> {
    // Checked before the attempt is spent; `write_new` still refuses a file that appears since.
    if out.symlink_metadata().is_ok() {
        bail!("{} already exists; choose a new file", out.display());
    }
    let key = recover_key(&super::runtime()?, args, ctx)?;
    keysrc::write_new(out, &key.recovery_code())?;
    eprintln!(
        "recovered: recovery code written to {} (mode 0600)",
        out.display()
    );
    Ok(())
}

/// Asks for the password and recovers the backup key from the vault (one attempt), on the
/// caller's runtime.
pub fn recover_key(rt: &Runtime, args: &VaultArgs, ctx: &Ctx<'_>) -> Result<BackupKey> {
    recover_pinned(rt, args, ctx).map(|(key, _)| key)
}

/// [`recover_key`], and the vault's catalog pin (verified under the key), for a restore to
/// check the repository against.
pub fn recover_pinned(
    rt: &Runtime,
    args: &VaultArgs,
    ctx: &Ctx<'_>,
) -> Result<(BackupKey, Option<lockbox_vault_core::CatalogPin>)> {
    let vault = Session::open(rt, args, ctx)?;
    let password = password("Vault password: ", ENV_PASSWORD)?;
    vault
        .run(vault.client.recover_pinned(vault.id(), password.as_bytes()))
        .context("recovering the key")
}

pub fn status(args: &VaultArgs, ctx: &Ctx<'_>) -> Result<()> {
    let rt = super::runtime()?;
    let vault = Session::open(&rt, args, ctx)?;
    let status = vault
        .run(vault.client.status(vault.id()))
        .context("asking the vault")?;
    match status {
        Status::Absent => println!("{}: no record", vault.account),
        Status::Destroyed { generation } => println!(
            "{}: destroyed after too many wrong passwords, or deleted (generation \
             {generation}); only the recovery code restores now",
            vault.account
        ),
        Status::Active {
            attempts_left,
            limit,
            generation,
            created_at_ms,
        } => println!(
            "{}: active, {attempts_left} of {limit} attempts left; record generation \
             {generation}, deposited {}",
            vault.account,
            match created_at_ms {
                0 => "at an unknown time".to_owned(),
                ms => format!("{} UTC", super::format_ms(ms)),
            }
        ),
    }
    Ok(())
}

pub fn change_password(args: &VaultArgs, ctx: &Ctx<'_>) -> Result<()> {
    let rt = super::runtime()?;
    let vault = Session::open(&rt, args, ctx)?;
    // A new registration, like a deposit: an impostor must not receive it.
    check_authenticated(&vault.endpoint)?;
    let old = password("Current vault password: ", ENV_PASSWORD)?;
    let new = new_password(ENV_NEW_PASSWORD)?;
    vault
        .run(vault.client.change_password(
            vault.id(),
            old.as_bytes(),
            new.as_bytes(),
            KsfParams::DEFAULT,
        ))
        .context("changing the password")?;
    println!("password changed for {}", vault.account);
    Ok(())
}

pub fn forget(args: &VaultArgs, ctx: &Ctx<'_>) -> Result<()> {
    let rt = super::runtime()?;
    let vault = Session::open(&rt, args, ctx)?;
    let password = password("Vault password: ", ENV_PASSWORD)?;
    vault
        .run(vault.client.delete(vault.id(), password.as_bytes()))
        .context("deleting the vault record")?;
    println!(
        "deleted: the vault no longer holds a key for {}; the recovery code still restores",
        vault.account
    );
    Ok(())
}

/// Refuses to register a password (deposit, change) over plain HTTP to anything but this
/// machine. The vault's OPAQUE and HPKE
/// keys are learned from the node itself; unauthenticated, a machine in the middle could pose
/// as the vault, take the registration and guess the password offline. (Recovery is safe
/// either way: an impostor without the real record cannot complete OPAQUE.) The signed fleet
/// manifest of the replicated vault will pin these keys independently of the transport.
fn check_authenticated(endpoint: &str) -> Result<()> {
    match lockbox_client::transport(endpoint)? {
        Transport::Tls | Transport::PlainLocal => Ok(()),
        Transport::PlainRemote => bail!(
            "refusing to register a password over plain http to {endpoint}: the vault's keys \
             would not be authenticated; use an https:// endpoint (and --vault-ca for a private CA)"
        ),
    }
}

/// The password from `env`, else from the terminal without echo.
/// An empty password is refused before it can spend an attempt.
pub(crate) fn password(prompt: &str, env: &str) -> Result<Zeroizing<String>> {
    let password = match env_text(env)? {
        Some(p) => p,
        None => rpassword::prompt_password(prompt)
            .map(Zeroizing::new)
            .with_context(|| format!("cannot read a password: run on a terminal or set {env}"))?,
    };
    if password.is_empty() {
        bail!("empty password (from {env} or the terminal); nothing was sent");
    }
    Ok(password)
}

/// A new password from `env`, else typed twice on the terminal; at least six characters.
pub(crate) fn new_password(env: &str) -> Result<Zeroizing<String>> {
    let password = match env_text(env)? {
        Some(p) => p,
        None => {
            let first = password("New vault password: ", env)?;
            check_length(&first)?;
            let again = password("Repeat the new password: ", env)?;
            if !bool::from(first.as_bytes().ct_eq(again.as_bytes())) {
                bail!("the two passwords differ; nothing was changed");
            }
            first
        }
    };
    check_length(&password)?;
    Ok(password)
}

fn check_length(password: &str) -> Result<()> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        bail!("the password must have at least {MIN_PASSWORD_CHARS} characters");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check_authenticated;

    #[test]
    fn deposits_need_tls_unless_the_vault_is_on_this_machine() {
        for ok in [
            "https://vault.example:7401",
            "http://127.0.0.1:7401",
            "http://127.8.9.1:1",
            "http://localhost:7401",
            "http://[::1]:7401/",
        ] {
            assert!(check_authenticated(ok).is_ok(), "{ok}");
        }
        for refused in [
            "http://vault.example:7401",
            "http://10.0.0.5:7401",
            "HTTP://10.0.0.5:7401",
            "Http://vault.example",
            "http://127.0.0.1@evil.example:7401",
            "http://[2001:db8::1]:7401",
            "http://[::ffff:10.0.0.5]:7401",
            "http://localhost.evil.example",
        ] {
            let err = check_authenticated(refused).unwrap_err().to_string();
            assert!(err.contains("https://"), "{refused}: {err}");
        }
        for invalid in ["vault.example:7401", "ftp://vault.example", "//10.0.0.5"] {
            assert!(check_authenticated(invalid).is_err(), "{invalid}");
        }
    }
}
