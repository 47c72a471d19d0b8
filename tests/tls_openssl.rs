//! TLS interop with a second stack (issue 14, item 2): OpenSSL 3 on both of
//! the relay's TLS sides, over the wire.
//!
//! The peer is `tests/python_peers/openssl_peer.py`, which drives the system's
//! libssl through ctypes over memory BIOs. Python's own `ssl` module cannot
//! start a key update or choose a TLS 1.3 suite, and the `s_client` /
//! `s_server` tools cannot split records across TCP writes or corrupt a
//! record; the script can do all four, with OpenSSL doing every bit of TLS.
//!
//! - Listener side: OpenSSL is the client of the relay's TLS listener; the
//!   target is a plain echo target in this process. The script streams
//!   frames in records of chosen sizes and checks the echo by SHA-256.
//! - Target side: OpenSSL is the relay's `wss://` target, an echo server;
//!   the client is tokio-tungstenite over a plain listener.
//!
//! Covered on each side: every suite both stacks share (TLS 1.3's three,
//! TLS 1.2's ECDHE-ECDSA and ECDHE-RSA AES-GCM and ChaCha20), records of
//! every size from 1 to 2^14, records split into 1-7 byte TCP writes (the
//! handshake too), key updates started by OpenSSL (`update_not_requested`
//! and `update_requested` alternately), a peer that ends with close_notify
//! and one that sends a fatal alert, and resumption with OpenSSL as the
//! client. What the record layer must refuse (RFC 8446 §5) is in
//! `tls_close.rs` and `tls_records.rs`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::tls::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

const PEER: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/python_peers/openssl_peer.py"
);

/// TLS 1.3 suites, as OpenSSL names them.
const TLS13_SUITES: [&str; 3] = [
    "TLS_AES_128_GCM_SHA256",
    "TLS_AES_256_GCM_SHA384",
    "TLS_CHACHA20_POLY1305_SHA256",
];
/// TLS 1.2 suites for an ECDSA certificate; `ECDSA` becomes `RSA` for RSA.
const TLS12_SUITES: [&str; 3] = [
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305",
];
/// Bytes in one record of every size from 1 to 2^14.
const SWEEP_BYTES: usize = (1 << 14) * ((1 << 14) + 1) / 2;

fn python() -> Option<String> {
    common::python::python_with(&["ctypes", "hashlib"])
}

/// Runs the peer in client mode against the relay's listener; returns one
/// JSON object per session. Panics with the peer's stderr and the relay's
/// log tail when it fails.
async fn client(
    python: &str,
    relay: &TlsRelay,
    ca: &Path,
    target: &str,
    args: &[&str],
) -> Vec<Value> {
    let mut cmd = tokio::process::Command::new(python);
    cmd.arg(PEER)
        .arg("client")
        .args(["--port", &relay.port.to_string()])
        .arg("--ca")
        .arg(ca)
        .args(["--token", TOKEN, "--target", target])
        .args(args)
        .kill_on_drop(true);
    let out = within(Duration::from_secs(120), "the OpenSSL client", cmd.output())
        .await
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "OpenSSL client {args:?} failed: {}\nstdout: {stdout}\n--- relay log tail ---\n{}",
        String::from_utf8_lossy(&out.stderr),
        tail(&relay.log(), 15)
    );
    json_lines(&stdout)
}

fn json_lines(s: &str) -> Vec<Value> {
    s.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("peer printed {l:?}: {e}")))
        .collect()
}

fn tail(log: &str, n: usize) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// OpenSSL as a `wss://` echo target; killed on drop.
struct OpensslTarget {
    child: Child,
    port: u16,
    out: PathBuf,
    _dir: tempfile::TempDir,
}

impl OpensslTarget {
    fn start(python: &str, leaf: &Leaf, args: &[&str]) -> OpensslTarget {
        let dir = tempfile::tempdir().expect("tempdir");
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        std::fs::write(&cert, &leaf.cert_pem).unwrap();
        std::fs::write(&key, &leaf.key_pem).unwrap();
        let (port_file, out) = (dir.path().join("port"), dir.path().join("sessions.jsonl"));
        let child = Command::new(python)
            .arg(PEER)
            .arg("server")
            .arg("--cert")
            .arg(&cert)
            .arg("--key")
            .arg(&key)
            .arg("--port-file")
            .arg(&port_file)
            .args(args)
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the OpenSSL target");
        let deadline = Instant::now() + Duration::from_secs(10);
        let port = loop {
            if let Some(p) = std::fs::read_to_string(&port_file)
                .ok()
                .and_then(|s| s.trim().parse().ok())
            {
                break p;
            }
            assert!(
                Instant::now() < deadline,
                "the OpenSSL target never wrote its port"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        OpensslTarget {
            child,
            port,
            out,
            _dir: dir,
        }
    }

    fn url(&self) -> String {
        format!("wss://localhost:{}/", self.port)
    }

    /// The sessions the target has finished, once there are `n`.
    async fn sessions(&self, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + STEP;
        loop {
            let got = json_lines(&std::fs::read_to_string(&self.out).unwrap_or_default());
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "the OpenSSL target reported {} of {n} sessions",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for OpensslTarget {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write_ca(relay: &TlsRelay, ca: &Ca) -> PathBuf {
    relay.write("openssl-ca.pem", &ca.pem);
    relay.path("openssl-ca.pem")
}

fn assert_negotiated(s: &Value, version: &str, suite: &str) {
    let want_version = if version == "1.3" {
        "TLSv1.3"
    } else {
        "TLSv1.2"
    };
    assert_eq!(s["version"], want_version, "{s}");
    assert_eq!(s["cipher"], suite, "{s}");
    assert!(s.get("error").is_none(), "{s}");
}

fn rsa_name(suite: &str) -> String {
    suite.replace("ECDSA", "RSA")
}

/// OpenSSL as the client of a TLS listener (ECDSA certificate) whose
/// sessions go to a plain echo target.
struct Listener {
    py: String,
    relay: TlsRelay,
    ca_file: PathBuf,
    target: EchoTarget,
}

impl Listener {
    async fn start() -> Option<Listener> {
        let py = python()?;
        let ca = Ca::new("openssl interop CA");
        let target = EchoTarget::plain().await;
        let relay = TlsRelay::start(RelaySpec::tls_leaf(&ca.leaf(LOCAL_NAMES))).await;
        let ca_file = write_ca(&relay, &ca);
        Some(Listener {
            py,
            relay,
            ca_file,
            target,
        })
    }

    async fn client(&self, args: &[&str]) -> Vec<Value> {
        client(
            &self.py,
            &self.relay,
            &self.ca_file,
            &self.target.url(),
            args,
        )
        .await
    }
}

// --- listener side -----------------------------------------------------------

#[tokio::test]
async fn openssl_client_every_suite() {
    let Some(py) = python() else { return };
    let ca = Ca::new("openssl interop CA");
    let target = EchoTarget::plain().await;
    let ecdsa = TlsRelay::start(RelaySpec::tls_leaf(&ca.leaf(LOCAL_NAMES))).await;
    let (rsa_leaf, _) = rsa_leaf(&ca);
    let rsa = TlsRelay::start(RelaySpec::tls_leaf(&rsa_leaf)).await;
    let mut runs: Vec<(&TlsRelay, &str, String)> = Vec::new();
    runs.extend(TLS13_SUITES.iter().map(|s| (&ecdsa, "1.3", s.to_string())));
    runs.extend(TLS12_SUITES.iter().map(|s| (&ecdsa, "1.2", s.to_string())));
    runs.extend(TLS12_SUITES.iter().map(|s| (&rsa, "1.2", rsa_name(s))));
    for (relay, version, suite) in runs {
        let ca_file = write_ca(relay, &ca);
        let args = [
            "--version",
            version,
            "--suite",
            &suite,
            "--records",
            "edges",
            "--bytes",
            "300000",
        ];
        let got = client(&py, relay, &ca_file, &target.url(), &args).await;
        assert_negotiated(&got[0], version, &suite);
        assert_eq!(got[0]["bytes"], 300_000, "{suite}");
        assert_eq!(got[0]["end"], "close 1000", "{suite}");
    }
}

#[tokio::test]
async fn openssl_client_records_of_every_size_and_split_reads() {
    let Some(side) = Listener::start().await else {
        return;
    };
    for (version, suite) in [
        ("1.3", "TLS_AES_128_GCM_SHA256"),
        ("1.2", "ECDHE-ECDSA-AES256-GCM-SHA384"),
    ] {
        let bytes = SWEEP_BYTES.to_string();
        let args = [
            "--version",
            version,
            "--suite",
            suite,
            "--records",
            "sweep",
            "--bytes",
            &bytes,
        ];
        let got = side.client(&args).await;
        assert_negotiated(&got[0], version, suite);
        assert_eq!(got[0]["bytes"], SWEEP_BYTES);
        assert!(got[0]["records"].as_u64().unwrap() >= 1 << 14, "{}", got[0]);
        // Every byte of the handshake and of the records arrives in 1-7 byte
        // TCP writes, so the relay reassembles each record across reads.
        let args = [
            "--version",
            version,
            "--suite",
            suite,
            "--split",
            "--records",
            "edges",
            "--bytes",
            "20000",
            "--message",
            "2500",
        ];
        let got = side.client(&args).await;
        assert_negotiated(&got[0], version, suite);
        assert_eq!(got[0]["bytes"], 20_000);
    }
}

#[tokio::test]
async fn openssl_client_key_updates() {
    let Some(side) = Listener::start().await else {
        return;
    };
    for suite in TLS13_SUITES {
        // A key update after every 32 KiB message, requested every other
        // time, so the relay rekeys both directions mid-stream.
        let args = [
            "--version",
            "1.3",
            "--suite",
            suite,
            "--key-update-every",
            "1",
            "--message",
            "32768",
            "--bytes",
            "1048576",
        ];
        let got = side.client(&args).await;
        assert_negotiated(&got[0], "1.3", suite);
        assert_eq!(got[0]["key_updates"], 32, "{}", got[0]);
        assert_eq!(got[0]["bytes"], 1_048_576);
    }
}

#[tokio::test]
async fn openssl_client_close_notify_and_fatal_alert() {
    let Some(side) = Listener::start().await else {
        return;
    };
    let mut ends = 0;
    for version in ["1.3", "1.2"] {
        // close_notify with no WebSocket Close: the relay answers it.
        let args = ["--version", version, "--end", "notify", "--bytes", "100000"];
        let got = side.client(&args).await;
        assert_eq!(got[0]["end"], "close_notify answered");
        ends += 1;
        let line = side.relay.wait_session_ends(ends).await.pop().unwrap();
        assert_eq!(field(&line, "closed_by"), Some("client"), "{line}");

        // OpenSSL refuses a corrupted record from the relay and sends a
        // fatal bad_record_mac alert: the relay ends that session at once.
        let args = ["--version", version, "--end", "alert", "--bytes", "100000"];
        let got = side.client(&args).await;
        assert_eq!(got[0]["end"], "fatal alert sent, relay closed");
        ends += 1;
        let line = side.relay.wait_session_ends(ends).await.pop().unwrap();
        assert!(line.contains("peer sent TLS alert 20"), "{line}");
    }
}

#[tokio::test]
async fn openssl_client_resumes() {
    let Some(side) = Listener::start().await else {
        return;
    };
    for version in ["1.3", "1.2"] {
        let args = ["--version", version, "--resume", "--bytes", "100000"];
        let got = side.client(&args).await;
        assert_eq!(got.len(), 2);
        assert_eq!(got[0]["reused"], false, "{}", got[0]);
        assert_eq!(
            got[1]["reused"], true,
            "TLS {version}: OpenSSL did not resume: {}",
            got[1]
        );
        assert_eq!(got[1]["bytes"], 100_000);
    }
    let kinds: Vec<String> = side
        .relay
        .session_ends()
        .iter()
        .filter_map(|l| field(l, "client_tls").map(str::to_string))
        .collect();
    assert_eq!(kinds, ["full", "resumed", "full", "resumed"]);
}

// --- target side -------------------------------------------------------------

/// A plain listener that trusts `ca` for `wss://` targets.
async fn relay_trusting(ca: &Ca) -> TlsRelay {
    TlsRelay::start(RelaySpec::plain().target_ca(&ca.pem)).await
}

/// Sends `sizes` as binary messages through the relay and checks each echo.
async fn echo_through(relay: &TlsRelay, target: &str, sizes: &[usize]) {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", relay.port))
        .await
        .unwrap();
    let mut ws = header_auth(tcp, relay.port, TOKEN, target)
        .await
        .unwrap_or_else(|e| panic!("upgrade to {target}: {e}\n{}", tail(&relay.log(), 10)));
    for (i, &n) in sizes.iter().enumerate() {
        let payload: Vec<u8> = (0..n).map(|j| (i * 31 + j) as u8).collect();
        echo(&mut ws, Message::binary(payload)).await;
    }
    close(ws).await;
}

#[tokio::test]
async fn openssl_target_every_suite() {
    let Some(py) = python() else { return };
    let ca = Ca::new("openssl interop CA");
    let relay = relay_trusting(&ca).await;
    let ecdsa = ca.leaf(LOCAL_NAMES);
    let (rsa, _) = rsa_leaf(&ca);
    let mut runs: Vec<(&Leaf, &str, String)> = Vec::new();
    runs.extend(TLS13_SUITES.iter().map(|s| (&ecdsa, "1.3", s.to_string())));
    runs.extend(TLS12_SUITES.iter().map(|s| (&ecdsa, "1.2", s.to_string())));
    runs.extend(TLS12_SUITES.iter().map(|s| (&rsa, "1.2", rsa_name(s))));
    for (leaf, version, suite) in runs {
        let target = OpensslTarget::start(
            &py,
            leaf,
            &[
                "--version",
                version,
                "--suite",
                &suite,
                "--records",
                "edges",
            ],
        );
        echo_through(&relay, &target.url(), &[1, 125, 126, 65535, 65536, 300_000]).await;
        let s = &target.sessions(1).await[0];
        assert_negotiated(s, version, &suite);
        assert_eq!(s["messages"], 6, "{s}");
        // The relay's Close handshake ends with its close_notify.
        assert_eq!(s["end"], "close", "{s}");
    }
}

#[tokio::test]
async fn openssl_target_records_of_every_size_key_updates_and_split_reads() {
    let Some(py) = python() else { return };
    let ca = Ca::new("openssl interop CA");
    let relay = relay_trusting(&ca).await;
    let leaf = ca.leaf(LOCAL_NAMES);
    // Echoes cut into records of every size from 1 to 2^14.
    for version in ["1.3", "1.2"] {
        let target =
            OpensslTarget::start(&py, &leaf, &["--version", version, "--records", "sweep"]);
        let sizes = vec![65536; SWEEP_BYTES / 65536 + 1];
        echo_through(&relay, &target.url(), &sizes).await;
        let s = &target.sessions(1).await[0];
        assert!(s["records"].as_u64().unwrap() >= 1 << 14, "{s}");
        assert_eq!(s["end"], "close", "{s}");
    }
    // OpenSSL rekeys after every echo, asking for the relay's update every
    // other time.
    let target = OpensslTarget::start(&py, &leaf, &["--version", "1.3", "--key-update-every", "1"]);
    echo_through(&relay, &target.url(), &[32768; 24]).await;
    let s = &target.sessions(1).await[0];
    assert_eq!(s["key_updates"], 24, "{s}");
    // Handshake and records in 1-7 byte TCP writes.
    for version in ["1.3", "1.2"] {
        let target = OpensslTarget::start(
            &py,
            &leaf,
            &["--version", version, "--split", "--records", "edges"],
        );
        echo_through(&relay, &target.url(), &[1, 200, 3000, 9000]).await;
        assert_eq!(target.sessions(1).await[0]["messages"], 4);
    }
}

/// One session to an OpenSSL target that ends it after 2 echoes as `end`
/// says; returns the Close codes the relay sent the client (as on the wire)
/// and the relay's session-end line.
async fn target_ends(
    py: &str,
    relay: &TlsRelay,
    leaf: &Leaf,
    version: &str,
    end: &str,
    ends: usize,
) -> (Vec<Option<u16>>, String) {
    let target = OpensslTarget::start(
        py,
        leaf,
        &["--version", version, "--end", end, "--end-after", "2"],
    );
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", relay.port))
        .await
        .unwrap();
    let (tcp, seen) = tap(tcp);
    let mut ws = header_auth(tcp, relay.port, TOKEN, &target.url())
        .await
        .expect("upgrade");
    echo(&mut ws, Message::binary(vec![7u8; 1000])).await;
    echo(&mut ws, Message::binary(vec![8u8; 1000])).await;
    let _ = ws.send(Message::binary(vec![9u8; 1000])).await;
    // Read to the end; tungstenite reports 1014 as a protocol error, so the
    // codes come from the raw bytes.
    while let Some(Ok(_)) = within(STEP, "the relay's Close", ws.next()).await {}
    let line = relay.wait_session_ends(ends).await.pop().unwrap();
    target.sessions(1).await;
    let codes = raw_close_codes(&seen.lock().unwrap());
    (codes, line)
}

#[tokio::test]
async fn openssl_target_close_notify_and_fatal_alert() {
    let Some(py) = python() else { return };
    let ca = Ca::new("openssl interop CA");
    let relay = relay_trusting(&ca).await;
    let leaf = ca.leaf(LOCAL_NAMES);
    let mut ends = 0;
    for version in ["1.3", "1.2"] {
        // The target leaves with close_notify and no WebSocket Close: the
        // client gets 1014, as for any target that vanishes in copy mode.
        ends += 1;
        let (codes, line) = target_ends(&py, &relay, &leaf, version, "notify", ends).await;
        assert_eq!(codes, [Some(1014)], "{line}");
        assert_eq!(field(&line, "closed_by"), Some("target"), "{line}");
        ends += 1;
        let (codes, line) = target_ends(&py, &relay, &leaf, version, "alert", ends).await;
        assert_eq!(codes, [Some(1014)], "{line}");
        assert!(line.contains("peer sent TLS alert 20"), "{line}");
    }
}
