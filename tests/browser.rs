//! The test page in a real Chromium (Debian's `chromium`, headless, over
//! CDP): loaded from the running relay, it connects to the demo app, sends
//! an echo and a broadcast (a second, independent client sees it and
//! answers), runs the relay flow against a local echo target in both auth
//! modes with an RTT test and close codes, shows live counters from
//! `/metrics`, and stays tidy at 1280×800 and at phone width. Screenshots go
//! to `target/browser/`.

mod common;

use std::time::Duration;

use common::browser::*;
use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::runtime::Handle;
use tokio_tungstenite::connect_async;
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(10);
/// The page polls `/metrics` every 3 s.
const COUNTERS: Duration = Duration::from_secs(12);

fn config() -> RelayConfig {
    RelayConfig {
        extra_toml: vec!["[demo]\nenabled = true\n".into()],
        ..RelayConfig::default()
    }
}

fn page_url(relay: &Relay) -> String {
    format!("http://127.0.0.1:{}/", relay.port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_echo_broadcast_and_counters() {
    let Some(chromium) = chromium_or_skip("demo_echo_broadcast_and_counters") else {
        return;
    };
    let relay = Relay::start(config()).await;
    let (url, demo_url) = (page_url(&relay), relay.url("/demo"));
    let rt = Handle::current();
    tokio::task::spawn_blocking(move || {
        let chrome = launch(chromium);
        let tab = chrome.browser.new_tab().unwrap();
        viewport(&tab, 1280, 800, false);
        tab.navigate_to(&url).unwrap().wait_until_navigated().unwrap();
        assert_eq!(tab.get_title().unwrap(), "ws-relay-core · try it");
        wait_text(&tab, "metrics-state", "a counters update", COUNTERS, |t| t.starts_with("updated"));

        click(&tab, "connect");
        wait_text(&tab, "state", "open", WAIT, |t| t == "open");
        wait_text(&tab, "log", "the connected notification", WAIT, |t| {
            t.contains(r#"{"type":"notification","data":{"event":"connected","connection_id":""#)
        });
        set_value(&tab, "message", "hello from chromium");
        click(&tab, "do-echo");
        wait_text(&tab, "log", "the echo response", WAIT, |t| {
            t.contains(r#"{"id":"1","type":"response","data":{"echo":"hello from chromium"}}"#)
        });

        // A second client, not a browser, on the same demo app.
        let (mut other, other_id) = rt.block_on(async {
            let (mut ws, _) = connect_async(demo_url).await.unwrap();
            let hello = next_text(&mut ws).await;
            let v: Value = serde_json::from_str(&hello).unwrap();
            let id = v["data"]["connection_id"].as_str().unwrap().to_string();
            (ws, id)
        });
        click(&tab, "do-count");
        wait_text(&tab, "log", "a count of 2", WAIT, |t| {
            t.contains(r#"{"id":"2","type":"response","data":{"connections":2}}"#)
        });
        set_value(&tab, "message", "to everyone");
        click(&tab, "do-broadcast");
        let note: Value = rt.block_on(async { serde_json::from_str(&next_text(&mut other).await).unwrap() });
        assert_eq!(note["data"]["event"], "broadcast");
        assert_eq!(note["data"]["message"], "to everyone");
        wait_text(&tab, "log", "its own broadcast", WAIT, |t| {
            t.contains(r#""data":{"broadcast":true,"recipients":2}"#)
                && t.contains(r#""event":"broadcast","#)
                && t.contains(r#""message":"to everyone"}}"#)
        });
        rt.block_on(async {
            let req = r#"{"id":"r1","type":"request","action":"broadcast","payload":{"message":"from rust"}}"#;
            other.send(Message::text(req)).await.unwrap();
        });
        wait_text(&tab, "log", "the other client's broadcast", WAIT, |t| {
            t.contains(&format!(r#""from":"{other_id}","message":"from rust""#))
        });
        // Bad input is answered, not disconnected.
        set_value(&tab, "message", "{not json");
        click(&tab, "send-text");
        wait_text(&tab, "log", "an invalid_json error", WAIT, |t| {
            t.contains(r#"{"type":"error","data":{"code":"invalid_json""#)
                || t.contains(r#""type":"error","data":{"code":"invalid_json""#)
        });
        assert_eq!(text_of(&tab, "state"), "open");

        wait_text(&tab, "stat-sess-demo", "2 demo sessions", COUNTERS, |t| t == "2");
        assert!(fits_width(&tab), "page scrolls sideways at 1280x800");
        screenshot(&tab, "demo-1280x800");

        click(&tab, "disconnect");
        // The page closes with 1000 "bye"; the demo echoes code and reason.
        wait_text(&tab, "log", "close code 1000", WAIT, |t| {
            t.contains("closed: code 1000 (bye), clean")
        });
        wait_text(&tab, "stat-sess-demo", "1 demo session", COUNTERS, |t| t == "1");
    })
    .await
    .unwrap();
}

async fn next_text(
    ws: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
) -> String {
    loop {
        match within(WAIT, "demo message", ws.next()).await {
            Some(Ok(Message::Text(t))) => return t.to_string(),
            Some(Ok(_)) => continue,
            other => panic!("demo client: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_flow_rtt_and_close_codes() {
    let Some(chromium) = chromium_or_skip("relay_flow_rtt_and_close_codes") else {
        return;
    };
    let target = Target::echo().await;
    let relay = Relay::start(config()).await;
    let url = page_url(&relay);
    let echo = target.url("/");
    tokio::task::spawn_blocking(move || {
        let chrome = launch(chromium);
        let tab = chrome.browser.new_tab().unwrap();
        viewport(&tab, 1280, 800, false);
        tab.navigate_to(&url)
            .unwrap()
            .wait_until_navigated()
            .unwrap();
        click(&tab, "tab-relay");
        set_value(&tab, "relay-token", ALICE_TOKEN);
        set_value(&tab, "relay-target", &echo);
        assert!(!text_of(&tab, "url").contains(ALICE_TOKEN));

        // First-message auth.
        click(&tab, "connect");
        wait_text(&tab, "log", "the relay's status message", WAIT, |t| {
            t.contains(r#"{"status":"已连接"}"#)
        });
        assert!(
            !text_of(&tab, "log").contains(ALICE_TOKEN),
            "the page logged the token"
        );
        set_value(&tab, "message", "through the relay");
        click(&tab, "send-text");
        wait_text(&tab, "log", "the echo through the relay", WAIT, |t| {
            t.matches("through the relay").count() >= 2
        });
        click(&tab, "rtt");
        let out = wait_text(
            &tab,
            "rtt-state",
            "the RTT run done",
            Duration::from_secs(30),
            |t| t == "done" || t == "failed",
        );
        assert_eq!(out, "done", "{}", text_of(&tab, "log"));
        let rtt = text_of(&tab, "rtt-out");
        let ms = |key: &str| -> f64 {
            let rest = rtt
                .split(key)
                .nth(1)
                .unwrap_or_else(|| panic!("{key} in {rtt}"));
            rest.trim().split(' ').next().unwrap().parse().unwrap()
        };
        let (p50, p99) = (ms("p50"), ms("p99"));
        assert!(p50 > 0.0 && p50 <= p99 && p99 < 1000.0, "{rtt}");
        eprintln!("page RTT through the relay (debug build, loopback): {rtt}");
        wait_text(&tab, "stat-sess-relay", "1 relay session", COUNTERS, |t| {
            t == "1"
        });
        wait_text(
            &tab,
            "stat-bytes-up",
            "bytes toward the target",
            COUNTERS,
            |t| t != "0" && t != "–",
        );
        screenshot(&tab, "relay-1280x800");

        // Handshake-time auth: ?token=&target= on the upgrade.
        click(&tab, "auth-query");
        let shown = text_of(&tab, "url");
        assert!(
            shown.contains("?token=…&target=ws%3A%2F%2F127.0.0.1"),
            "{shown}"
        );
        click(&tab, "connect");
        wait_text(&tab, "state", "open", WAIT, |t| t == "open");
        set_value(&tab, "message", "header mode");
        click(&tab, "send-text");
        wait_text(&tab, "log", "the header-mode echo", WAIT, |t| {
            t.matches("header mode").count() >= 2
        });
        click(&tab, "disconnect");
        wait_text(&tab, "log", "close code 1000", WAIT, |t| {
            t.contains("closed: code 1000")
        });

        // A wrong token in handshake mode is refused before the upgrade.
        set_value(&tab, "relay-token", "wrong-token");
        click(&tab, "connect");
        wait_text(&tab, "log", "close code 1006", WAIT, |t| {
            t.contains("closed: code 1006")
        });
        wait_text(&tab, "stat-refused", "a refusal", COUNTERS, |t| t == "1");

        // First-message mode with the wrong token: the error and 1008.
        click(&tab, "auth-first");
        click(&tab, "connect");
        wait_text(&tab, "log", "the auth_failed error and 1008", WAIT, |t| {
            t.contains(r#""code":"auth_failed""#) && t.contains("closed: code 1008 (auth_failed)")
        });
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phone_width_is_tidy() {
    let Some(chromium) = chromium_or_skip("phone_width_is_tidy") else {
        return;
    };
    let relay = Relay::start(config()).await;
    let (url, port) = (page_url(&relay), relay.port);
    tokio::task::spawn_blocking(move || {
        let chrome = launch(chromium);
        let tab = chrome.browser.new_tab().unwrap();
        viewport(&tab, 390, 844, true);
        tab.navigate_to(&url)
            .unwrap()
            .wait_until_navigated()
            .unwrap();
        click(&tab, "connect");
        wait_text(&tab, "log", "the connected notification", WAIT, |t| {
            t.contains(r#""event":"connected""#)
        });
        click(&tab, "do-echo");
        wait_text(&tab, "log", "the echo", WAIT, |t| {
            t.contains(r#""data":{"echo":"Hello"}"#)
        });
        assert!(fits_width(&tab), "page scrolls sideways at 390 px");
        // One column: the counters sit below the controls, not beside them.
        let stacked = eval(
            &tab,
            "document.getElementById('stats').getBoundingClientRect().left < 40",
        );
        assert_eq!(stacked, Value::Bool(true), "not one column at phone width");
        screenshot(&tab, "phone-390x844");
        // The hub tab builds ws_path?token= from the same origin.
        click(&tab, "tab-hub");
        set_value(&tab, "hub-token", "user-42");
        let shown = text_of(&tab, "url");
        assert_eq!(shown, format!("ws://127.0.0.1:{port}/ws?token=…"));
    })
    .await
    .unwrap();
}
