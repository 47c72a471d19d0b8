//! Autobahn|Testsuite conformance (issue 25 item 2): runs
//! `tests/autobahn/run.sh` against this build's relay, which puts every
//! path (direct, relay copy/splice, TLS listener, wss:// target, routes,
//! forward tunnel, loadgen's echo server) through one fuzzing-client run and
//! judges each against Autobahn's own echo server reached directly.
//!
//! Owns: finding the binaries and the suite's venv, skipping (or failing,
//! under `CI=true`) when the venv is absent, a time limit, and showing the
//! script's output. The harness itself is the script; see its header.
//!
//! Environment: `AUTOBAHN_VENV` (default `target/autobahn-venv`, what
//! `.ci/run` installs), `LOADGEN_BIN` (default: the loadgen built beside
//! this relay, else `target/release/loadgen`), `CASES` (passed through).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const RELAY_BIN: &str = env!("CARGO_BIN_EXE_ws-relay-core");
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/autobahn/run.sh");
/// A full run takes a minute or two; this only catches a hung suite.
const LIMIT: Duration = Duration::from_secs(20 * 60);

/// `cargo test` of the root package does not build loadgen (another
/// package), so: `LOADGEN_BIN`, else loadgen beside this relay (`cargo
/// test --workspace` builds both), else the release one (`.ci/run` builds
/// it before the tests).
fn loadgen_bin(target_dir: &Path) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("LOADGEN_BIN") {
        return Some(PathBuf::from(p));
    }
    [
        Path::new(RELAY_BIN).with_file_name("loadgen"),
        target_dir.join("release/loadgen"),
    ]
    .into_iter()
    .find(|p| p.is_file())
}

/// Prints past the test harness's output capture (tests/common/python.rs
/// `skip`), or fails under CI, which must run everything.
fn skip(why: &str) {
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("CI must run the Autobahn suite, but there is {why}");
    }
    let _ = writeln!(std::io::stderr(), "SKIP: autobahn: {why}");
}

#[test]
fn autobahn_conformance() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    // <target>/debug/ws-relay-core: reports go beside the other outputs.
    let target_dir = Path::new(RELAY_BIN)
        .parent()
        .and_then(Path::parent)
        .expect("the relay binary is in <target>/<profile>/");
    let venv = std::env::var_os("AUTOBAHN_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target/autobahn-venv"));
    let wstest = venv.join("bin/wstest");
    let python2 = venv.join("bin/python");
    let usable = wstest.is_file()
        && Command::new(&python2)
            .args(["-c", "import autobahntestsuite"])
            .output()
            .is_ok_and(|o| o.status.success());
    if !usable {
        skip(&format!(
            "no Autobahn|Testsuite venv at {} (.ci/run installs it; or set AUTOBAHN_VENV)",
            venv.display()
        ));
        return;
    }
    let Some(loadgen) = loadgen_bin(target_dir) else {
        skip("no loadgen binary (cargo build -p loadgen, cargo test --workspace, or set LOADGEN_BIN)");
        return;
    };

    let out = target_dir.join("autobahn");
    std::fs::create_dir_all(&out).unwrap();
    // To a file, not a pipe: nothing has to drain it while we wait.
    let log_path = out.join("run.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = Command::new("bash")
        .arg(SCRIPT)
        .env("RELAY_BIN", RELAY_BIN)
        .env("LOADGEN_BIN", &loadgen)
        .env("AUTOBAHN_VENV", &venv)
        .env("OUT", &out)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("start bash tests/autobahn/run.sh");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > LIMIT {
            // SIGTERM, not kill(): the script's trap then stops everything
            // it started. SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let output = std::fs::read_to_string(&log_path).unwrap_or_default();
    println!("loadgen: {}\n{output}", loadgen.display());
    match status {
        Some(s) if s.success() => {}
        Some(s) => panic!(
            "tests/autobahn/run.sh failed ({s}); its output (also in {}):\n{output}",
            log_path.display()
        ),
        None => panic!("tests/autobahn/run.sh ran over {LIMIT:?}; its output so far:\n{output}"),
    }
}
