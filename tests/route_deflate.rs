//! `permessage-deflate` end to end through a route: Python `websockets` on
//! both sides (a deflate-capable upstream and client), the relay in the
//! middle negotiating nothing and touching no frame. The session-end line
//! proves the compressed frames crossed it: far fewer bytes than payload.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use common::tcp::Kill;
use common::*;

const PEER: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/python_peers/deflate_peer.py"
);

fn start_server(python: &str) -> (Kill, u16) {
    let mut child = Command::new(python)
        .args([PEER, "server"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the Python upstream");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line.trim().parse().expect("the upstream prints its port");
    (Kill(child), port)
}

#[tokio::test]
async fn permessage_deflate_is_negotiated_and_used_end_to_end() {
    let Some(python) = python::python_with(&["websockets"]) else {
        return;
    };
    for forward in [Forward::Copy, Forward::Splice, Forward::Ring] {
        let (_server, port) = start_server(&python);
        let relay = Relay::start(RelayConfig {
            relay_path: Some("/relay".into()),
            extra_toml: vec![format!(
                "[[routes]]\nname = \"deflate\"\npath = \"/deflate\"\nupstream = [\"ws://127.0.0.1:{port}\"]\n"
            )],
            ..RelayConfig::default().with_forward(forward)
        })
        .await;
        let url = format!("ws://127.0.0.1:{}/deflate", relay.port);
        let out = tokio::task::spawn_blocking({
            let python = python.clone();
            move || {
                Command::new(python)
                    .args([PEER, "client", &url, "20"])
                    .output()
            }
        })
        .await
        .unwrap()
        .unwrap();
        assert!(
            out.status.success(),
            "client failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(
            v["client_extensions"],
            serde_json::json!(["permessage-deflate"]),
            "{v}"
        );
        assert_eq!(
            v["server_extensions"],
            serde_json::json!(["permessage-deflate"]),
            "{v}"
        );
        let payload = v["payload_bytes"].as_u64().unwrap();
        let log = relay
            .wait_for_log("session end", STEP, |l| l.contains("route=deflate"))
            .await;
        let line = log.lines().find(|l| l.contains("route=deflate")).unwrap();
        let field = |name: &str| -> u64 {
            let at = line.find(&format!("{name}=")).unwrap() + name.len() + 1;
            line[at..].split(' ').next().unwrap().parse().unwrap()
        };
        let (up, down) = (field("bytes_up"), field("bytes_down"));
        assert!(
            up * 20 < payload && down * 20 < payload,
            "{forward:?}: {payload} payload bytes crossed as {up} up / {down} down: not compressed?\n{line}"
        );
    }
}
