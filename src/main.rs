//! The `ws-relay-core` binary: parses the command line and hands off to the
//! library. The only place `anyhow` is used.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "ws-relay-core",
    version,
    about = "Thread-per-core io_uring WebSocket relay"
)]
struct Cli {
    /// Configuration file.
    #[arg(
        long,
        short,
        env = "WS_RELAY_CONFIG",
        default_value = "config.toml",
        global = true
    )]
    config: PathBuf,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the relay (the default).
    Serve,
    /// Ask the running instance to re-read its configuration.
    Reload,
    /// Validate the configuration and exit.
    Check,
    /// Compare live kernel settings with the tuning/ recommendations.
    Doctor {
        /// Exit 1 when any setting warns.
        #[arg(long)]
        strict: bool,
        /// Read kernel settings below this directory instead of `/`
        /// (tests feed a fake `/proc/sys` this way).
        #[arg(long, default_value = "/")]
        proc_root: PathBuf,
    },
    /// Run the forward tunnel client (`--config client.toml`).
    Tunnel {
        /// Carry standard input/output to this `tcp://host:port` target
        /// instead of the config's [[forwards]] (SSH ProxyCommand).
        #[arg(long, value_name = "TCP_URL")]
        stdio: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    use ws_relay_core::{config::Config, control, doctor};
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let config = Config::load(&cli.config)?;
            control::serve(config)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Check => {
            let (config, _) = control::load_all(&cli.config, false)?;
            println!(
                "{}: ok ({} users, {}:{})",
                cli.config.display(),
                config.users.len(),
                config.server.host,
                config.server.port
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Reload => {
            let config = Config::load(&cli.config)?;
            match control::request_reload(&config.control_socket()) {
                Ok(msg) => {
                    println!("{msg}");
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("{e}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        Command::Tunnel { stdio } => {
            use ws_relay_core::tunnel;
            let cfg = tunnel::ClientConfig::load(&cli.config)?;
            let _log = ws_relay_core::logging::init_stderr()?;
            tunnel::run(cfg, stdio)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Doctor { strict, proc_root } => {
            // doctor must work without a config (fresh host): fall back to
            // defaults, but say why when a config exists and is broken.
            let config = match Config::load(&cli.config) {
                Ok(c) => Some(c),
                Err(e) => {
                    if cli.config.exists() {
                        eprintln!("warning: {e}; checking against built-in defaults");
                    }
                    None
                }
            };
            let opts = doctor::DoctorOptions::new(proc_root, strict, config.as_ref());
            let code = doctor::run(&opts, &mut std::io::stdout())?;
            Ok(ExitCode::from(code as u8))
        }
    }
}
