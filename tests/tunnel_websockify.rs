//! websockify compatibility: the same noVNC-style client (Python
//! `websockets`, offering the `binary` subprotocol) talks to a TCP echo
//! service through Debian's `websockify` and through the relay, and must
//! see the same thing from both: the subprotocol, binary messages only, every
//! byte echoed, pings answered.

mod common;

use std::net::TcpStream as StdTcp;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::tcp::{tcp_echo, Kill};
use common::*;

const PEER: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/python_peers/websockify_peer.py"
);

fn websockify_available() -> bool {
    let found = Command::new("websockify")
        .arg("--help")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI must run every test, but websockify is not installed"
        );
        python::skip("websockify not installed (apt-get install websockify)");
    }
    found
}

async fn run_peer(python: &str, url: String) -> serde_json::Value {
    let python = python.to_string();
    let out = tokio::task::spawn_blocking(move || Command::new(python).args([PEER, &url]).output())
        .await
        .unwrap()
        .unwrap();
    assert!(
        out.status.success(),
        "peer failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test]
async fn relay_answers_a_novnc_style_client_like_websockify() {
    let Some(python) = python::python_with(&["websockets"]) else {
        return;
    };
    if !websockify_available() {
        return;
    }
    let echo = tcp_echo().await;
    let ws_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let _wsf = Kill(
        Command::new("websockify")
            .args([format!("127.0.0.1:{ws_port}"), format!("127.0.0.1:{echo}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start websockify"),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while StdTcp::connect(("127.0.0.1", ws_port)).is_err() {
        assert!(Instant::now() < deadline, "websockify did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let relay = Relay::start(RelayConfig::default().with_users(vec![
        UserSpec::alice().allowed(&[&format!("tcp://127.0.0.1:{echo}")]),
    ]))
    .await;
    let reference = run_peer(&python, format!("ws://127.0.0.1:{ws_port}/")).await;
    let target = http::urlencode(&format!("tcp://127.0.0.1:{echo}"));
    let ours = run_peer(
        &python,
        format!(
            "ws://127.0.0.1:{}/?token={ALICE_TOKEN}&target={target}",
            relay.port
        ),
    )
    .await;
    assert_eq!(reference["subprotocol"], "binary", "{reference}");
    assert_eq!(reference["echo_matches"], true, "{reference}");
    assert_eq!(ours, reference, "relay differs from websockify");
}
