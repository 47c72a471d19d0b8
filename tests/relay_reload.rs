//! Hot reload and logging: `reload` adds and removes users while a live
//! session (even of a removed user) keeps working; a broken config (duplicate
//! token, TOML syntax error, unknown key) is refused with an error naming the
//! file and line and the old config stays; `reload` with no instance running
//! fails clearly; SIGHUP reloads too; one `session end` log line per session
//! with user, target host and bytes each way; tokens never appear in the
//! output, even at trace level.

mod common;

use std::time::{Duration, Instant};

use common::*;
use tokio_tungstenite::tungstenite::Message;

/// Tries a first-message session until it is accepted (config changes may
/// take a moment to reach every shard after SIGHUP; a closed session's slot
/// may take a moment to free).
async fn eventually_connects(port: u16, token: &str, target: &str, limit: Duration) -> Ws {
    let deadline = Instant::now() + limit;
    loop {
        let mut ws = upgrade(port, "/").await;
        send(&mut ws, Message::text(auth_json(token, target))).await;
        match next_msg(&mut ws, STEP).await {
            Message::Text(t) if t.as_str() == CONNECTED => return ws,
            Message::Text(t) if Instant::now() < deadline => {
                assert!(
                    t.contains("auth_failed") || t.contains("over_capacity"),
                    "unexpected refusal {t}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => panic!(
                "never accepted within {limit:?}: last answer {}",
                describe(&other)
            ),
        }
    }
}

async fn refused_auth(mode: AuthMode, port: u16, token: &str, target: &str) {
    match mode {
        AuthMode::FirstMessage => {
            let mut ws = upgrade(port, "/").await;
            send(&mut ws, Message::text(auth_json(token, target))).await;
            expect_ws_error(&mut ws, "auth_failed", 1008).await;
        }
        AuthMode::Header => match try_connect_header(port, &HeaderAuth::new(token, target)).await {
            Ok(_) => panic!("removed user's token still accepted (header mode)"),
            Err(r) => assert_refused(&r, 401, "auth_failed"),
        },
    }
}

async fn echo_once(ws: &mut Ws, text: &str) {
    send(ws, Message::text(text)).await;
    expect_text(ws, text).await;
}

#[tokio::test]
async fn reload_adds_and_removes_users_live_sessions_survive() {
    let target = Target::echo().await;
    let mut relay =
        Relay::start(RelayConfig::default().with_users(vec![UserSpec::alice(), UserSpec::bob()]))
            .await;
    let url = target.url("/");
    let mut live_alice = connect(AuthMode::FirstMessage, relay.port, ALICE_TOKEN, &url).await;
    let mut live_bob = connect(AuthMode::Header, relay.port, BOB_TOKEN, &url).await;

    let new_cfg = relay
        .cfg
        .clone()
        .with_users(vec![UserSpec::bob(), UserSpec::carol()]);
    relay.write_config(new_cfg);
    let out = relay.reload_cli().await;
    assert_eq!(out.code, Some(0), "reload failed: {out:?}");
    assert!(
        out.stdout.contains("reloaded: 2 users"),
        "reload output: {out:?}"
    );

    echo_once(&mut live_alice, "alice after reload (removed user)").await;
    echo_once(&mut live_bob, "bob after reload").await;
    // Several attempts so both shards are exercised.
    for i in 0..6 {
        let mode = if i % 2 == 0 {
            AuthMode::FirstMessage
        } else {
            AuthMode::Header
        };
        refused_auth(mode, relay.port, ALICE_TOKEN, &url).await;
        let mut carol = connect(mode, relay.port, CAROL_TOKEN, &url).await;
        echo_once(&mut carol, "carol").await;
        close_and_expect_echo(&mut carol, 1000, "").await;
    }
    echo_once(&mut live_alice, "alice still here").await;
    close_and_expect_echo(&mut live_alice, 1000, "").await;
    close_and_expect_echo(&mut live_bob, 1000, "").await;
}

/// Live session counts carry over a reload: a user at `max_sessions` stays
/// there, and a lowered limit applies to new sessions.
#[tokio::test]
async fn reload_keeps_session_limits() {
    let target = Target::echo().await;
    let mut relay =
        Relay::start(RelayConfig::default().with_users(vec![UserSpec::alice().max_sessions(2)]))
            .await;
    let url = target.url("/");
    let mut a1 = connect_first_message(relay.port, ALICE_TOKEN, &url).await;
    let mut a2 = connect_first_message(relay.port, ALICE_TOKEN, &url).await;
    relay.write_config(
        relay
            .cfg
            .clone()
            .with_users(vec![UserSpec::alice().max_sessions(2), UserSpec::carol()]),
    );
    let out = relay.reload_cli().await;
    assert_eq!(out.code, Some(0), "{out:?}");
    for mode in [AuthMode::FirstMessage, AuthMode::Header] {
        match mode {
            AuthMode::FirstMessage => {
                let mut ws = upgrade(relay.port, "/").await;
                send(&mut ws, Message::text(auth_json(ALICE_TOKEN, &url))).await;
                expect_ws_error(&mut ws, "over_capacity", 1013).await;
            }
            AuthMode::Header => {
                match try_connect_header(relay.port, &HeaderAuth::new(ALICE_TOKEN, &url)).await {
                    Ok(_) => {
                        panic!("third session accepted after reload (max_sessions = 2, two open)")
                    }
                    Err(r) => assert_refused(&r, 503, "over_capacity"),
                }
            }
        }
    }
    // Lower the limit to 1: with one session left open, a new one is refused.
    close_and_expect_echo(&mut a2, 1000, "").await;
    relay.write_config(
        relay
            .cfg
            .clone()
            .with_users(vec![UserSpec::alice().max_sessions(1), UserSpec::carol()]),
    );
    assert_eq!(relay.reload_cli().await.code, Some(0));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut ws = upgrade(relay.port, "/").await;
    send(&mut ws, Message::text(auth_json(ALICE_TOKEN, &url))).await;
    expect_ws_error(&mut ws, "over_capacity", 1013).await;
    echo_once(&mut a1, "a1 still alive").await;
    close_and_expect_echo(&mut a1, 1000, "").await;
    let mut ws = eventually_connects(relay.port, ALICE_TOKEN, &url, Duration::from_secs(3)).await;
    close_and_expect_echo(&mut ws, 1000, "").await;
}

/// 1-based line of the first line containing `needle`.
fn line_of(text: &str, needle: &str, nth: usize) -> usize {
    text.lines()
        .enumerate()
        .filter(|(_, l)| l.contains(needle))
        .nth(nth)
        .map(|(i, _)| i + 1)
        .unwrap_or_else(|| panic!("{needle:?} not in config"))
}

#[tokio::test]
async fn reload_with_broken_config_keeps_the_old_one() {
    let target = Target::echo().await;
    let mut relay = Relay::start(RelayConfig::default()).await;
    let url = target.url("/");
    let mut live = connect_first_message(relay.port, ALICE_TOKEN, &url).await;
    let path = relay.config_path.display().to_string();

    // Duplicate token: the second user's token line is named.
    let dup = relay.render(&relay.cfg.clone().with_users(vec![
        UserSpec::alice(),
        UserSpec::new("mallory", ALICE_TOKEN),
    ]));
    let dup_line = line_of(&dup, ALICE_TOKEN, 1);
    // TOML syntax error.
    let mut syntax = relay.render(
        &relay
            .cfg
            .clone()
            .with_users(vec![UserSpec::alice(), UserSpec::carol()]),
    );
    syntax.push_str("\n[[users]\nname = \"broken\"\n");
    let syntax_line = line_of(&syntax, "name = \"broken\"", 0) - 1;
    assert_eq!(syntax.lines().nth(syntax_line - 1), Some("[[users]"));
    // Unknown key.
    let unknown = relay
        .render(&relay.cfg)
        .replace("[server]\n", "[server]\nfrobnicate = 1\n");
    let unknown_line = line_of(&unknown, "frobnicate", 0);

    for (what, text, line) in [
        ("duplicate token", dup, dup_line),
        ("TOML syntax error", syntax, syntax_line),
        ("unknown key", unknown, unknown_line),
    ] {
        relay.write_config_text(&text);
        let out = relay.reload_cli().await;
        assert_eq!(out.code, Some(1), "{what}: reload should fail: {out:?}");
        let all = out.all();
        assert!(
            all.contains(&path),
            "{what}: error does not name the file {path}: {all}"
        );
        assert!(
            all.contains(&format!("{path}:{line}")),
            "{what}: error does not name line {line}: {all}"
        );
        // The old config is still in force.
        echo_once(&mut live, &format!("live after {what}")).await;
        let mut ws = connect_first_message(relay.port, ALICE_TOKEN, &url).await;
        close_and_expect_echo(&mut ws, 1000, "").await;
        refused_auth(AuthMode::FirstMessage, relay.port, CAROL_TOKEN, &url).await;
    }

    // A good config afterwards still applies.
    relay.write_config(
        relay
            .cfg
            .clone()
            .with_users(vec![UserSpec::alice(), UserSpec::carol()]),
    );
    let out = relay.reload_cli().await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains("reloaded: 2 users"), "{out:?}");
    let mut ws = connect_first_message(relay.port, CAROL_TOKEN, &url).await;
    close_and_expect_echo(&mut ws, 1000, "").await;
    close_and_expect_echo(&mut live, 1000, "").await;
}

#[tokio::test]
async fn reload_without_a_running_instance_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("nobody.sock");
    let config = dir.path().join("config.toml");
    std::fs::write(&config, RelayConfig::default().render(1, &socket)).unwrap();
    let out = run_cli(&config, "reload").await;
    assert_eq!(out.code, Some(1), "{out:?}");
    let all = out.all();
    assert!(
        all.contains(&socket.display().to_string()) || all.to_lowercase().contains("running"),
        "unclear message (names neither the socket nor a missing instance): {all:?}"
    );
    assert!(!all.contains("panicked"), "{all}");
}

#[tokio::test]
async fn sighup_reloads() {
    let target = Target::echo().await;
    let mut relay = Relay::start(RelayConfig::default()).await;
    let url = target.url("/");
    let mut live = connect_first_message(relay.port, ALICE_TOKEN, &url).await;
    relay.write_config(
        relay
            .cfg
            .clone()
            .with_users(vec![UserSpec::alice(), UserSpec::carol()]),
    );
    relay.signal(libc::SIGHUP);
    let mut carol =
        eventually_connects(relay.port, CAROL_TOKEN, &url, Duration::from_secs(5)).await;
    echo_once(&mut carol, "carol via SIGHUP").await;
    close_and_expect_echo(&mut carol, 1000, "").await;

    // A broken config on SIGHUP: logged, ignored, process alive.
    let path = relay.config_path.display().to_string();
    let before = relay.log().matches(&path).count();
    let dup = relay.render(&relay.cfg.clone().with_users(vec![
        UserSpec::alice(),
        UserSpec::new("mallory", ALICE_TOKEN),
    ]));
    relay.write_config_text(&dup);
    relay.signal(libc::SIGHUP);
    relay
        .wait_for_log(
            "the rejected config named in the log",
            Duration::from_secs(5),
            |l| l.matches(&path).count() > before,
        )
        .await;
    assert!(
        relay.wait_exit(Duration::from_millis(200)).await.is_none(),
        "relay exited on a broken config"
    );
    echo_once(&mut live, "live after broken SIGHUP").await;
    let mut ws = connect_first_message(relay.port, CAROL_TOKEN, &url).await;
    close_and_expect_echo(&mut ws, 1000, "").await;
    close_and_expect_echo(&mut live, 1000, "").await;
}

/// Two numbers in `line` of at least `min` (bytes each way).
fn has_two_counts_at_least(line: &str, min: u64) -> bool {
    line.split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse::<u64>().ok())
        .filter(|n| *n >= min)
        .count()
        >= 2
}

#[tokio::test]
async fn session_end_is_logged_and_tokens_never_are() {
    for level in ["info", "trace"] {
        let target = Target::echo().await;
        let relay = Relay::start(RelayConfig {
            log_level: level.into(),
            ..RelayConfig::default()
        })
        .await;
        let url = target.url("/logged");
        let wrong = "wrong-token-MUST-NOT-BE-LOGGED";

        let mut ws = connect_first_message(relay.port, ALICE_TOKEN, &url).await;
        send(&mut ws, Message::binary(pattern(5000, 1))).await;
        expect_binary(&mut ws, &pattern(5000, 1)).await;
        close_and_expect_echo(&mut ws, 1000, "").await;
        let mut ws = connect_header(relay.port, ALICE_TOKEN, &url).await;
        close_and_expect_echo(&mut ws, 1000, "").await;
        let q = HeaderAuth {
            query: true,
            ..HeaderAuth::new(ALICE_TOKEN, &url)
        };
        let (mut ws, _) = try_connect_header(relay.port, &q)
            .await
            .unwrap_or_else(|r| panic!("{r:?}"));
        close_and_expect_echo(&mut ws, 1000, "").await;
        refused_auth(AuthMode::FirstMessage, relay.port, wrong, &url).await;
        refused_auth(AuthMode::Header, relay.port, wrong, &url).await;

        let log = relay
            .wait_for_log("three `session end` lines", Duration::from_secs(5), |l| {
                l.matches("session end").count() >= 3
            })
            .await;
        let ends: Vec<&str> = log.lines().filter(|l| l.contains("session end")).collect();
        assert_eq!(
            ends.len(),
            3,
            "[{level}] one session end line per session:\n{log}"
        );
        for l in &ends {
            assert!(
                l.contains("alice"),
                "[{level}] session end without the user: {l}"
            );
            assert!(
                l.contains("127.0.0.1"),
                "[{level}] session end without the target host: {l}"
            );
            assert!(
                l.contains(&format!("{}", target.port)) || l.contains("127.0.0.1"),
                "{l}"
            );
        }
        assert!(
            has_two_counts_at_least(ends[0], 5000),
            "[{level}] session end without bytes each way (≥ 5000): {}",
            ends[0]
        );
        for secret in [ALICE_TOKEN, wrong] {
            assert!(
                !log.contains(secret),
                "[{level}] token {secret:?} appears in the log:\n{log}"
            );
        }
    }
}
