//! The subcommands, one module each, and what they share: turning route
//! options into a [`ClientSetup`], and finishing with output and an exit
//! status (0: every echo verified, 2: errors were detected).

pub mod compare;
pub mod connect;
pub mod load;
pub mod relay_proc;
pub mod servers;
pub mod soak;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use crate::cli::{OutputArgs, RouteArgs};
use crate::client::tls::{self, TlsSetupError, Trust};
use crate::client::{ClientSetup, Route};
use crate::engine::EngineError;
use crate::output::{self, OutputError, OutputOptions, Report, Run};
use crate::server::ServerError;
use crate::ws::{UrlError, WsUrl};

/// Largest message a client accepts.
pub const MAX_MESSAGE: usize = 64 * 1024 * 1024;

/// Exit status when a run detected lost, duplicated or corrupted messages.
pub const EXIT_ERRORS: u8 = 2;

/// Command failures (setup problems; measurement errors are reported, not raised).
#[derive(Debug, thiserror::Error)]
pub enum CmdError {
    #[error(transparent)]
    Url(#[from] UrlError),
    #[error(transparent)]
    Tls(#[from] TlsSetupError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Output(#[from] OutputError),
    #[error(transparent)]
    Server(#[from] ServerError),
    #[error(transparent)]
    Relay(#[from] relay_proc::RelayProcError),
    #[error("{0}")]
    Usage(String),
}

/// A positive, finite number of seconds.
pub fn secs(v: f64, what: &str) -> Result<Duration, CmdError> {
    if (0.0..1e9).contains(&v) {
        Ok(Duration::from_secs_f64(v))
    } else {
        Err(CmdError::Usage(format!(
            "{what}: {v} is not a valid number of seconds"
        )))
    }
}

/// Trust settings for wss:// first hops (None when not needed).
pub fn trust(insecure: bool, ca: Option<&std::path::Path>) -> Option<Trust> {
    if insecure {
        Some(Trust::Insecure)
    } else {
        ca.map(|p| Trust::CaFile(p.to_path_buf()))
    }
}

/// Builds the client setup for a route.
pub fn make_setup(
    route: Route,
    trust: Option<&Trust>,
    resume: bool,
    connect_timeout: Duration,
    fragment: usize,
) -> Result<ClientSetup, CmdError> {
    let tls = if route.first_hop().secure {
        let trust = trust.ok_or(TlsSetupError::NoTrust)?;
        Some(tls::client_config(trust, resume)?)
    } else {
        None
    };
    Ok(ClientSetup {
        route,
        tls,
        connect_timeout,
        max_message: MAX_MESSAGE,
        fragment,
    })
}

/// The route described by the common options.
pub fn route_from(args: &RouteArgs) -> Result<Route, CmdError> {
    let target = WsUrl::parse(&args.url)?;
    Ok(match &args.relay {
        None => Route::Direct { target },
        Some(relay) => {
            if args.token.is_empty() {
                return Err(CmdError::Usage(
                    "--relay needs --token (or LOADGEN_TOKEN)".into(),
                ));
            }
            Route::Relay {
                relay: WsUrl::parse(relay)?,
                target,
                token: args.token.clone(),
                auth: args.auth,
            }
        }
    })
}

/// Setup from the common route options.
pub fn setup_from(args: &RouteArgs, fragment: usize) -> Result<Arc<ClientSetup>, CmdError> {
    let route = route_from(args)?;
    let timeout = secs(args.connect_timeout, "--connect-timeout")?;
    Ok(Arc::new(make_setup(
        route,
        trust(args.insecure, args.ca.as_deref()).as_ref(),
        true,
        timeout,
        fragment,
    )?))
}

pub fn output_options(o: &OutputArgs) -> OutputOptions {
    OutputOptions {
        json: o.json,
        hist_dir: o.hist_dir.clone(),
        svg: o.svg.clone(),
    }
}

/// Emits the report and picks the exit status.
pub fn finish(
    command: &str,
    runs: &[Run],
    compare: Option<output::CompareReport>,
    opts: &OutputOptions,
    started_unix_ms: u64,
    svg_modes: &[&str],
) -> Result<ExitCode, CmdError> {
    let mut report = Report::new(command, runs, compare, started_unix_ms);
    let title = format!("loadgen {command}: latency by percentile");
    output::emit(&mut report, runs, opts, &title, svg_modes)?;
    Ok(if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_ERRORS)
    })
}
