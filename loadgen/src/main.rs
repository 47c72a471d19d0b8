//! The `loadgen` binary: parse the command line, run the subcommand, map
//! failures to exit status 1 (setup errors) and 2 (errors detected in the
//! measured traffic).

use std::process::ExitCode;

use clap::Parser;
use loadgen::cli::{Cli, Command};
use loadgen::cmd;

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let code = match &cli.command {
        Command::EchoServer(a) => cmd::servers::echo_server(a)?,
        Command::DelayProxy(a) => cmd::servers::delay_proxy(a)?,
        Command::Ping(a) => cmd::load::ping(a)?,
        Command::Throughput(a) => cmd::load::throughput(a)?,
        Command::Rate(a) => cmd::load::rate(a)?,
        Command::Connect(a) => cmd::connect::connect(a)?,
        Command::Compare(a) => cmd::compare::compare(a)?,
        Command::Soak(a) => cmd::soak::soak(a)?,
    };
    Ok(code)
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            // Every error message in this crate already includes its cause.
            eprintln!("loadgen: error: {e}");
            ExitCode::FAILURE
        }
    }
}
