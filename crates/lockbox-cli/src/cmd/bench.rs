//! `lockbox bench vault`: parses, runs `lockbox_bench::load`, prints.

use anyhow::{Context, Result};
use lockbox_bench::load::{self, LoadOptions};
use std::path::Path;
use std::time::Duration;

use super::device::Ctx;

pub struct VaultArgs<'a> {
    pub accounts: usize,
    pub concurrency: usize,
    pub duration: f64,
    pub ceiling_duration: f64,
    pub json: Option<&'a Path>,
}

pub fn vault(args: &VaultArgs<'_>, ctx: &Ctx<'_>) -> Result<()> {
    let fleet = ctx.fleet()?.context(
        "no fleet to measure: pass --config FILE naming `gateway` and the pinned fleet keys \
         (`lockbox dev cluster --bench` writes one)",
    )?;
    let tokens = ctx.dev_tokens()?.context(
        "no account tokens: the config needs `dev_issuer_key` (or LOCKBOX_ACCOUNT_TOKEN) to \
         speak for the benchmark's accounts",
    )?;
    let options = LoadOptions {
        accounts: args.accounts,
        concurrency: args.concurrency,
        duration: seconds(args.duration, "--duration")?,
        ceiling: seconds(args.ceiling_duration, "--ceiling-duration")?,
    };
    let bar = crate::progress::spinner("loading the fleet", ctx.quiet);
    let report = super::runtime()?.block_on(load::run(&fleet, tokens, options));
    bar.finish_and_clear();
    let report = report?;
    let to_stdout = args.json == Some(Path::new("-"));
    if !to_stdout {
        print!("{}", report.markdown());
    }
    if let Some(path) = args.json {
        let text = serde_json::to_string_pretty(&report.to_json())?;
        if to_stdout {
            println!("{text}");
        } else {
            std::fs::write(path, text + "\n")
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
    }
    Ok(())
}

fn seconds(s: f64, flag: &str) -> Result<Duration> {
    Duration::try_from_secs_f64(s)
        .ok()
        .filter(|d| !d.is_zero())
        .with_context(|| format!("{flag} must be a positive number of seconds, not {s}"))
}
