//! Logging per `[logging]`: level, optional rotating files, optional console.
//! Writers are non-blocking (a background thread does the I/O), so a shard
//! never blocks on a log write.

use std::io::IsTerminal;

use tracing_appender::non_blocking::WorkerGuard;
use tracing_appender::rolling::{RollingFileAppender, Rotation as RollRotation};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, EnvFilter};

use crate::config::{LoggingConfig, Rotation};

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("logging.level {0:?}: {1}")]
    Level(String, String),
    #[error("logging.directory {0:?}: {1}")]
    Directory(String, String),
    #[error("logging already initialised")]
    Init,
}

/// Keeps the background writers alive; drop flushes them.
pub struct LogGuards(#[allow(dead_code)] Vec<WorkerGuard>);

pub fn init(cfg: &LoggingConfig) -> Result<LogGuards, LogError> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.is_empty() => {
            EnvFilter::try_new(&v).map_err(|e| LogError::Level(v, e.to_string()))?
        }
        _ => EnvFilter::try_new(&cfg.level)
            .map_err(|e| LogError::Level(cfg.level.clone(), e.to_string()))?,
    };
    let mut guards = Vec::new();
    let console = cfg.console_output.then(|| {
        let (writer, guard) = tracing_appender::non_blocking(std::io::stdout());
        guards.push(guard);
        fmt::layer()
            .with_writer(writer)
            .with_ansi(std::io::stdout().is_terminal())
    });
    let file = if cfg.directory.is_empty() {
        None
    } else {
        let rotation = match cfg.rotation {
            Rotation::Daily => RollRotation::DAILY,
            Rotation::Hourly => RollRotation::HOURLY,
            Rotation::Never => RollRotation::NEVER,
        };
        let appender = RollingFileAppender::builder()
            .rotation(rotation)
            .filename_prefix(&cfg.file_prefix)
            .filename_suffix("log")
            .build(&cfg.directory)
            .map_err(|e| LogError::Directory(cfg.directory.clone(), e.to_string()))?;
        let (writer, guard) = tracing_appender::non_blocking(appender);
        guards.push(guard);
        Some(fmt::layer().with_writer(writer).with_ansi(false))
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(console)
        .with(file)
        .try_init()
        .map_err(|_| LogError::Init)?;
    Ok(LogGuards(guards))
}

/// Logging for the tunnel client: the server's format, on standard error
/// (standard output may carry tunnel data in `--stdio` mode). `RUST_LOG`
/// overrides the `info` default.
pub fn init_stderr() -> Result<LogGuards, LogError> {
    let level = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "info".into());
    let filter = EnvFilter::try_new(&level).map_err(|e| LogError::Level(level, e.to_string()))?;
    let (writer, guard) = tracing_appender::non_blocking(std::io::stderr());
    let console = fmt::layer()
        .with_writer(writer)
        .with_ansi(std::io::stderr().is_terminal());
    tracing_subscriber::registry()
        .with(filter)
        .with(console)
        .try_init()
        .map_err(|_| LogError::Init)?;
    Ok(LogGuards(vec![guard]))
}
