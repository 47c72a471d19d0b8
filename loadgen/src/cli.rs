//! The command line (clap derive): subcommands and their option groups.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::client::AuthMode;

/// Load generator for ws-relay-core: direct vs relayed WebSocket latency and
/// throughput, with every echo verified.
#[derive(Debug, Parser)]
#[command(name = "loadgen", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// WebSocket echo server, the mock target (plain or TLS, optional delay).
    EchoServer(EchoServerArgs),
    /// TCP proxy adding a fixed one-way delay in each direction.
    DelayProxy(DelayProxyArgs),
    /// Closed loop, one message in flight: round-trip latency.
    Ping(PingArgs),
    /// Pipelined messages per connection for a duration: msg/s and MB/s.
    Throughput(ThroughputArgs),
    /// Open loop at a fixed rate, latency corrected for coordinated omission.
    Rate(RateArgs),
    /// Connection rate and handshake latency (TLS full vs resumed).
    Connect(ConnectArgs),
    /// Direct vs relayed, alternating rounds: the original README's table. With no
    /// arguments it starts its own echo server and relay.
    Compare(CompareArgs),
    /// Soak test: thousands of relayed sessions with checked sequence
    /// numbers through reloads, target restarts and RST'd clients; RSS and
    /// fd count of the relay over time. Starts its own relay and targets.
    Soak(SoakArgs),
}

/// Client threads.
#[derive(Debug, Clone, Args)]
pub struct ThreadArgs {
    /// Client threads, each with its own monoio runtime (0: one per
    /// connection, at most one per CPU).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Pin thread i to CPU LIST[i % len], e.g. `--pin 0,1`.
    #[arg(long, value_delimiter = ',', value_name = "CPU,...")]
    pub pin: Vec<usize>,
}

/// Where connections go.
#[derive(Debug, Clone, Args)]
pub struct RouteArgs {
    /// Target WebSocket URL (ws:// or wss://), e.g. a `loadgen echo-server`.
    #[arg(value_name = "URL", default_value = "ws://127.0.0.1:9001/")]
    pub url: String,
    /// Go through this ws-relay-core (ws:// or wss://) instead of directly.
    #[arg(long, value_name = "URL")]
    pub relay: Option<String>,
    /// Relay token.
    #[arg(
        long,
        env = "LOADGEN_TOKEN",
        default_value = "",
        hide_env_values = true
    )]
    pub token: String,
    /// How to authenticate to the relay.
    #[arg(long, value_enum, default_value_t = AuthMode::FirstMessage)]
    pub auth: AuthMode,
    /// wss://: accept any server certificate.
    #[arg(long)]
    pub insecure: bool,
    /// wss://: trust the CA certificates in this PEM file.
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Give up on establishing a connection after this many seconds.
    #[arg(long, default_value_t = 10.0, value_name = "SECS")]
    pub connect_timeout: f64,
}

/// Message shape and connection count.
#[derive(Debug, Clone, Args)]
pub struct MessageArgs {
    /// Payload bytes per message (at least 40: sequence number, send times, checksum).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(40..=67_108_864))]
    pub size: u32,
    /// Split each message into frames of at most this many payload bytes.
    #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u32).range(1..))]
    pub fragment: Option<u32>,
    /// Concurrent connections.
    #[arg(short = 'c', long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub connections: u32,
    /// Stop waiting for an echo after this many milliseconds (it is then
    /// late, or counted lost when it never comes).
    #[arg(long, default_value_t = 5000, value_name = "MS")]
    pub timeout_ms: u64,
    #[command(flatten)]
    pub threads: ThreadArgs,
}

/// Output destinations.
#[derive(Debug, Clone, Args)]
pub struct OutputArgs {
    /// Print the report as JSON (schema loadgen.report.v1, see docs/benchmarks.md).
    #[arg(long)]
    pub json: bool,
    /// Write an HdrHistogram percentile-distribution file per run here.
    #[arg(long, value_name = "DIR")]
    pub hist_dir: Option<PathBuf>,
    /// Write a latency-percentile plot (SVG) here.
    #[arg(long, value_name = "FILE")]
    pub svg: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct PingArgs {
    #[command(flatten)]
    pub route: RouteArgs,
    #[command(flatten)]
    pub msg: MessageArgs,
    /// Recorded round trips per connection.
    #[arg(short = 'n', long, default_value_t = 1000)]
    pub count: u64,
    /// Unrecorded round trips before them (still verified).
    #[arg(long, default_value_t = 100)]
    pub warmup: u64,
    /// Run name (histogram file, SVG legend); default "direct" or "relayed".
    #[arg(long)]
    pub name: Option<String>,
    #[command(flatten)]
    pub out: OutputArgs,
}

#[derive(Debug, Clone, Args)]
pub struct ThroughputArgs {
    #[command(flatten)]
    pub route: RouteArgs,
    #[command(flatten)]
    pub msg: MessageArgs,
    /// Seconds to run.
    #[arg(short = 'd', long, default_value_t = 10.0, value_name = "SECS")]
    pub duration: f64,
    /// Messages in flight per connection (raise it for long round trips:
    /// window ≥ rate × RTT).
    #[arg(short = 'w', long, default_value_t = 4096)]
    pub window: u64,
    #[arg(long)]
    pub name: Option<String>,
    #[command(flatten)]
    pub out: OutputArgs,
}

#[derive(Debug, Clone, Args)]
pub struct RateArgs {
    #[command(flatten)]
    pub route: RouteArgs,
    #[command(flatten)]
    pub msg: MessageArgs,
    /// Messages per second, all connections together.
    #[arg(short = 'r', long)]
    pub rate: f64,
    /// Seconds to run.
    #[arg(short = 'd', long, default_value_t = 10.0, value_name = "SECS")]
    pub duration: f64,
    /// Most messages outstanding per connection; a send that would exceed it
    /// waits (and its latency still counts from its intended time).
    /// 1 gives wrk2-style request/response behaviour.
    #[arg(long, default_value_t = 1024)]
    pub max_in_flight: u64,
    #[arg(long)]
    pub name: Option<String>,
    #[command(flatten)]
    pub out: OutputArgs,
}

/// Which TLS handshakes `connect` measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TlsSessions {
    Full,
    Resumed,
    Both,
}

#[derive(Debug, Clone, Args)]
pub struct ConnectArgs {
    #[command(flatten)]
    pub route: RouteArgs,
    /// Connections to open (per TLS phase).
    #[arg(short = 'n', long, default_value_t = 1000)]
    pub count: u64,
    /// Connection attempts in progress at once, all threads together.
    #[arg(long, default_value_t = 16)]
    pub concurrency: u32,
    /// wss://: measure full handshakes, resumed ones, or both (two runs).
    #[arg(long, value_enum, default_value_t = TlsSessions::Both)]
    pub tls_sessions: TlsSessions,
    /// Do not send and verify one echo on each connection before closing it.
    #[arg(long)]
    pub no_echo: bool,
    #[command(flatten)]
    pub threads: ThreadArgs,
    #[arg(long)]
    pub name: Option<String>,
    #[command(flatten)]
    pub out: OutputArgs,
}

/// The relay's forwarding mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Forward {
    Copy,
    Splice,
}

#[derive(Debug, Clone, Args)]
pub struct CompareArgs {
    /// Use this target instead of starting an echo server.
    #[arg(long, value_name = "URL")]
    pub target: Option<String>,
    /// Use this running relay instead of starting one.
    #[arg(long, value_name = "URL")]
    pub relay: Option<String>,
    /// Relay token (the started relay is configured with this one).
    #[arg(
        long,
        env = "LOADGEN_TOKEN",
        default_value = "bench-token-0123456789",
        hide_env_values = true
    )]
    pub token: String,
    /// How to authenticate to the relay.
    #[arg(long, value_enum, default_value_t = AuthMode::FirstMessage)]
    pub auth: AuthMode,
    /// The relay binary to start (default: ws-relay-core next to loadgen).
    #[arg(long, value_name = "PATH", env = "LOADGEN_RELAY_BIN")]
    pub relay_bin: Option<PathBuf>,
    /// `server.forward` for the started relay (default: the relay's own).
    #[arg(long, value_enum)]
    pub forward: Option<Forward>,
    /// `server.workers` for the started relay.
    #[arg(long, default_value_t = 1)]
    pub relay_workers: u32,
    /// Pin the started relay process to this CPU (its shards may pin themselves).
    #[arg(long, value_name = "CPU")]
    pub relay_cpu: Option<usize>,
    /// Rounds; each runs direct and relayed, alternating which goes first.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub rounds: u32,
    /// Ping round trips per run.
    #[arg(short = 'n', long, default_value_t = 1000)]
    pub count: u64,
    /// Unrecorded ping round trips before them.
    #[arg(long, default_value_t = 100)]
    pub warmup: u64,
    /// Throughput seconds per run (0: skip throughput).
    #[arg(short = 'd', long, default_value_t = 2.0, value_name = "SECS")]
    pub duration: f64,
    /// Throughput window (messages in flight).
    #[arg(short = 'w', long, default_value_t = 4096)]
    pub window: u64,
    /// Payload bytes per message.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(40..=67_108_864))]
    pub size: u32,
    /// The started echo server answers after this many milliseconds
    /// (48 emulates the original README's Tokyo VPS round trip).
    #[arg(long, default_value_t = 0.0, value_name = "MS")]
    pub delay_ms: f64,
    /// Pin client, echo server and relay all to this CPU (the "clean case"
    /// on a small VM: no cross-core wake-ups). The per-part options win.
    #[arg(long, value_name = "CPU")]
    pub cpu: Option<usize>,
    /// Pin the client thread to this CPU.
    #[arg(long, value_name = "CPU")]
    pub client_cpu: Option<usize>,
    /// Pin the started echo server to this CPU.
    #[arg(long, value_name = "CPU")]
    pub target_cpu: Option<usize>,
    /// wss:// relay or target: accept any certificate.
    #[arg(long)]
    pub insecure: bool,
    /// wss://: trust the CA certificates in this PEM file.
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Stop waiting for an echo after this many milliseconds.
    #[arg(long, default_value_t = 5000, value_name = "MS")]
    pub timeout_ms: u64,
    #[command(flatten)]
    pub out: OutputArgs,
}

#[derive(Debug, Clone, Args)]
pub struct EchoServerArgs {
    /// Address to listen on (port 0: pick a free port; the first line of
    /// output says which).
    #[arg(long, default_value = "127.0.0.1:9001")]
    pub listen: SocketAddr,
    /// Server threads, one SO_REUSEPORT listener each (0: one per CPU).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Pin thread i to CPU LIST[i % len].
    #[arg(long, value_delimiter = ',', value_name = "CPU,...")]
    pub pin: Vec<usize>,
    /// Serve wss:// (self-signed certificate unless --cert/--key).
    #[arg(long)]
    pub tls: bool,
    /// PEM certificate chain (with --tls).
    #[arg(long, value_name = "FILE", requires = "key")]
    pub cert: Option<PathBuf>,
    /// PEM private key (with --tls).
    #[arg(long, value_name = "FILE", requires = "cert")]
    pub key: Option<PathBuf>,
    /// Write the generated self-signed certificate here (for clients' --ca).
    #[arg(long, value_name = "FILE")]
    pub cert_out: Option<PathBuf>,
    /// Answer each message this many milliseconds after it arrived
    /// (pipelined, like a distant target).
    #[arg(long, default_value_t = 0.0, value_name = "MS")]
    pub delay_ms: f64,
    /// Fault injection: flip a bit in every Nth message.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub corrupt_every: u64,
    /// Fault injection: do not echo every Nth message.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub drop_every: u64,
    /// Fault injection: echo every Nth message twice.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub duplicate_every: u64,
    /// Ping the client after every N echoed messages.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub ping_every: u64,
    /// Exit after this many seconds (default: run until killed).
    #[arg(long, value_name = "SECS")]
    pub exit_after: Option<f64>,
}

#[derive(Debug, Clone, Args)]
pub struct DelayProxyArgs {
    /// Address to listen on (port 0: pick a free one).
    #[arg(long, default_value = "127.0.0.1:9100")]
    pub listen: SocketAddr,
    /// Where to forward connections.
    #[arg(long, value_name = "HOST:PORT")]
    pub to: SocketAddr,
    /// One-way delay added in each direction, in milliseconds.
    #[arg(long, value_name = "MS")]
    pub delay_ms: f64,
    /// Proxy threads (0: one per CPU).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Pin thread i to CPU LIST[i % len].
    #[arg(long, value_delimiter = ',', value_name = "CPU,...")]
    pub pin: Vec<usize>,
    /// Exit after this many seconds (default: run until killed).
    #[arg(long, value_name = "SECS")]
    pub exit_after: Option<f64>,
}

/// One soak variant: client transport and the relay's `forward` setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SoakVariant {
    /// ws:// to the relay, `forward = "splice"`.
    PlainSplice,
    /// ws:// to the relay, `forward = "copy"`.
    PlainCopy,
    /// wss:// to the relay, `forward = "copy"`.
    TlsCopy,
    /// wss:// to the relay, `forward = "splice"` (TLS sessions use copy anyway).
    TlsSplice,
    /// ws:// to the relay, `forward = "ring"` (provided-buffer receives).
    PlainRing,
    /// wss:// to the relay, `forward = "ring"` (the target side's reads
    /// ride the ring, the client side's read as copy).
    TlsRing,
}

#[derive(Debug, Clone, Args)]
pub struct SoakArgs {
    /// Seconds of traffic per variant (after the ramp-up).
    #[arg(short = 'd', long, default_value_t = 8.0, value_name = "SECS")]
    pub duration: f64,
    /// Concurrent relayed sessions (kept up: ended ones are replaced).
    #[arg(short = 'c', long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=9_000))]
    pub sessions: u32,
    /// Echo targets, each its own `loadgen echo-server` process.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub targets: u32,
    /// Reloads per variant (users added and removed each time).
    #[arg(long, default_value_t = 4)]
    pub reloads: u32,
    /// Target restarts per variant (kill one echo target, restart it on its port).
    #[arg(long, default_value_t = 2)]
    pub target_restarts: u32,
    /// Every Nth session started vanishes by RST at a random moment (0: none).
    #[arg(long, default_value_t = 10, value_name = "N")]
    pub rst_every: u64,
    /// Messages per second per session.
    #[arg(long, default_value_t = 4.0)]
    pub rate: f64,
    /// Largest payload after the 28-byte header (lengths vary per message).
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u32).range(0..=65_536))]
    pub max_payload: u32,
    /// Mean session lifetime before a clean close and a replacement
    /// (uniform in 0.5x..1.5x); 0: sessions live until the end.
    #[arg(long, default_value_t = 0.0, value_name = "SECS")]
    pub lifetime: f64,
    /// Seconds over which the sessions are opened at the start (0: one
    /// second per 200 sessions, at least 2; 500 a second timed out
    /// connects at 8,000 sessions on a 2-vCPU host).
    #[arg(long, default_value_t = 0.0, value_name = "SECS")]
    pub ramp: f64,
    /// Users in the relay's config at the start.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(4..=10_000))]
    pub users: u32,
    /// Variants to run, in order.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [SoakVariant::PlainSplice, SoakVariant::PlainCopy, SoakVariant::TlsCopy, SoakVariant::TlsSplice, SoakVariant::PlainRing, SoakVariant::TlsRing])]
    pub variants: Vec<SoakVariant>,
    /// RSS and fd sampling period of the relay process.
    #[arg(long, default_value_t = 1000, value_name = "MS")]
    pub sample_ms: u64,
    /// Seconds after the ramp before RSS samples count (allocator and
    /// session churn warm up first).
    #[arg(long, default_value_t = 60.0, value_name = "SECS")]
    pub warmup: f64,
    /// The RSS rule: after warm-up, the median of the last quarter of the
    /// samples at most this much above the median of the first quarter.
    #[arg(long, default_value_t = 10.0, value_name = "PCT")]
    pub rss_growth_pct: f64,
    /// Client threads (each its own monoio runtime).
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// `server.workers` of the started relay.
    #[arg(long, default_value_t = 2)]
    pub relay_workers: u32,
    /// The relay binary to start (default: ws-relay-core next to loadgen).
    #[arg(long, value_name = "PATH", env = "LOADGEN_RELAY_BIN")]
    pub relay_bin: Option<PathBuf>,
    /// Write the report (JSON) here.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}
