//! One module per subcommand group; each takes parsed arguments and the loaded config.

mod backup;
mod bench;
mod cluster;
mod crypt;
mod demo;
mod dev;
mod device;
mod fleet;
mod gateway;
mod key;
mod keyvault;
mod snapshot;
mod vault;

use anyhow::{Context, Result};

use crate::cli::{
    BenchCommand, Cli, Command, DevCommand, FleetCommand, GatewayCommand, KeyCommand,
    PasswordCommand, VaultCommand,
};
use crate::config::Config;

pub fn run(cli: Cli) -> Result<()> {
    let quiet = cli.global.quiet;
    // The device config file is read only by the commands that use it; a vault node has its own.
    let cfg = || Config::load(cli.global.config.as_deref());
    let home = device::home_dir(cli.global.home.as_deref());
    let with_ctx = |f: &dyn Fn(&device::Ctx<'_>) -> Result<()>| -> Result<()> {
        let cfg = cfg()?;
        let ctx = device::Ctx {
            cfg: &cfg,
            home: home.as_ref().map_err(|e| anyhow::anyhow!("{e:#}"))?.clone(),
            quiet,
        };
        f(&ctx)
    };
    match cli.command {
        Command::Enable(args) => with_ctx(&|c| device::enable(&args, c)),
        Command::Status(args) => with_ctx(&|c| device::status(&args, c)),
        Command::Password(PasswordCommand::Change { token }) => {
            with_ctx(&|c| device::password_change(&token, c))
        }
        Command::Disable(args) => with_ctx(&|c| device::disable(&args, c)),
        Command::Key(KeyCommand::Rotate { dir, token }) => {
            with_ctx(&|c| device::rotate(dir.as_deref(), &token, c))
        }
        Command::Key(KeyCommand::New { out }) => key::new(&out),
        Command::Key(KeyCommand::Deposit {
            key,
            vault,
            attempts,
        }) => with_ctx(&|c| keyvault::deposit(&key, &vault, attempts, c)),
        Command::Key(KeyCommand::Recover { vault, out }) => {
            with_ctx(&|c| keyvault::recover(&vault, &out, c))
        }
        Command::Key(KeyCommand::Status { vault }) => with_ctx(&|c| keyvault::status(&vault, c)),
        Command::Key(KeyCommand::ChangePassword { vault }) => {
            with_ctx(&|c| keyvault::change_password(&vault, c))
        }
        Command::Key(KeyCommand::Forget { vault }) => with_ctx(&|c| keyvault::forget(&vault, c)),
        Command::Encrypt(args) => crypt::encrypt(&args, &cfg()?),
        Command::Decrypt(args) => crypt::decrypt(&args, &cfg()?),
        Command::Backup(args) => with_ctx(&|c| backup::backup(&args, c)),
        Command::List(args) => with_ctx(&|c| backup::list(&args, c)),
        Command::Restore(args) => with_ctx(&|c| backup::restore(&args, c)),
        Command::Prune(args) => with_ctx(&|c| backup::prune(&args, c)),
        Command::Check(args) => with_ctx(&|c| snapshot::check(&args, c)),
        Command::Demo(args) => demo::run(&args),
        Command::Vault(VaultCommand::Serve { config }) => vault::serve(&config),
        Command::Vault(VaultCommand::Members { command }) => vault::members(command),
        Command::Gateway(GatewayCommand::Serve { config }) => gateway::serve(&config),
        Command::Fleet(FleetCommand::Init {
            dir,
            fleet_id,
            nodes,
            gateways,
            valid_days,
        }) => fleet::init(&fleet::InitArgs {
            dir: &dir,
            fleet_id: &fleet_id,
            nodes: &nodes,
            gateways: &gateways,
            valid_days,
        }),
        Command::Fleet(FleetCommand::Publish { dir, valid_days }) => {
            fleet::publish(&dir, valid_days)
        }
        Command::Fleet(FleetCommand::Witness {
            witness_dir,
            fleet_public_key,
            input,
            out,
        }) => fleet::witness(&witness_dir, &fleet_public_key, &input, &out),
        Command::Fleet(FleetCommand::Show { file, json }) => fleet::show(&file, json),
        Command::Fleet(FleetCommand::VerifyLog { dir }) => fleet::verify(&dir),
        Command::Dev(DevCommand::Issuer { out }) => dev::issuer(&out),
        Command::Dev(DevCommand::Token {
            issuer_key,
            account,
            audience,
            ttl,
        }) => dev::token(&issuer_key, &account, &audience, ttl),
        Command::Dev(DevCommand::Cluster {
            dir,
            nodes,
            partitions,
            hsm,
            bench,
        }) => cluster::run(&cluster::ClusterOptions {
            dir,
            nodes,
            partitions,
            hsm: hsm.is_some(),
            bench,
        }),
        Command::Bench(BenchCommand::Vault {
            accounts,
            concurrency,
            duration,
            ceiling_duration,
            json,
        }) => with_ctx(&|c| {
            bench::vault(
                &bench::VaultArgs {
                    accounts,
                    concurrency,
                    duration,
                    ceiling_duration,
                    json: json.as_deref(),
                },
                c,
            )
        }),
    }
}

/// A multi-threaded runtime for storage I/O; the archive and crypto pipeline runs on the
/// calling thread and hands buffers to it.
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    lockbox_client::backup::io_runtime().context("cannot start the I/O runtime")
}

/// A Unix time in ms as `YYYY-MM-DD HH:MM:SS` (UTC).
pub(crate) fn format_ms(ms: u64) -> String {
    let fmt = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(fmt).ok())
        .unwrap_or_else(|| format!("{ms} ms"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_utc_times() {
        assert_eq!(super::format_ms(0), "1970-01-01 00:00:00");
        assert_eq!(super::format_ms(1_700_000_000_000), "2023-11-14 22:13:20");
        assert_eq!(super::format_ms(951_782_400_000), "2000-02-29 00:00:00");
    }
}
