//! `lockbox`: end-to-end encrypted chat backups.
//!
//! The binary is a thin shell: it parses arguments and configuration, reads secrets from a
//! file, the environment or a prompt, drives the library crates, draws progress bars on a
//! terminal and turns failures into one-line messages and documented exit codes
//! (see [`exit`]). It holds no cryptography of its own.

mod cli;
mod cmd;
mod config;
mod exit;
mod keysrc;
mod progress;

use clap::Parser;

fn main() -> std::process::ExitCode {
    // clap exits with 2 on a usage error, but 2 means "wrong key" here: usage errors are 1.
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                exit::Exit::Failure.into()
            } else {
                std::process::ExitCode::SUCCESS
            };
        }
    };
    init_tracing(cli.global.verbose);
    match cmd::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            let code = exit::classify(&err);
            eprintln!("lockbox: {}", exit::render(&err));
            code.into()
        }
    }
}

fn init_tracing(verbose: u8) {
    use tracing_subscriber::EnvFilter;
    let default = match verbose {
        0 => "warn",
        1 => "info,lockbox=debug",
        _ => "debug",
    };
    let filter = EnvFilter::try_from_env("LOCKBOX_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}
