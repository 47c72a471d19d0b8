use std::path::Path;

use super::*;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(Path::new("/etc/relay/config.toml"), text)
}

fn err_of(text: &str) -> String {
    parse(text).unwrap_err().to_string()
}

const MINIMAL: &str = "[server]\nenable_tls = false\n";

#[test]
fn defaults_keep_original_meanings() {
    let c = parse(MINIMAL).unwrap();
    assert_eq!(c.server.host, "0.0.0.0");
    assert_eq!(c.server.port, 443);
    assert_eq!(c.server.auth_timeout_secs, 10);
    assert_eq!(c.server.idle_timeout_secs, 600);
    assert_eq!(c.logging.file_prefix, "ws-relay");
    assert_eq!(c.logging.directory, "logs");
    assert!(c.logging.console_output);
    assert!(!c.server.allow_private_targets);
    assert_eq!(c.server.control_socket, "/etc/relay/ws-relay-core.sock");
}

#[test]
fn unknown_key_names_line_and_key() {
    let e = err_of("[server]\nenable_tls = false\nprot = 80\n");
    assert!(e.starts_with("/etc/relay/config.toml:3:"), "{e}");
    assert!(e.contains("prot"), "{e}");
}

#[test]
fn duplicate_token_names_second_line() {
    let e = err_of(
        "[server]\nenable_tls = false\n[[users]]\nname = \"a\"\ntoken = \"t1\"\n[[users]]\nname = \"b\"\ntoken = \"t1\"\n",
    );
    assert!(e.starts_with("/etc/relay/config.toml:8:"), "{e}");
    assert!(e.contains("users[1].token: duplicate token"), "{e}");
    assert!(!e.contains("t1"), "token value leaked into error: {e}");
}

#[test]
fn empty_name_and_token_rejected() {
    let e = err_of("[server]\nenable_tls = false\n[[users]]\nname = \"\"\ntoken = \"x\"\n");
    assert!(e.contains(":4: users[0].name: must not be empty"), "{e}");
    let e = err_of("[server]\nenable_tls = false\n[[users]]\nname = \"a\"\ntoken = \" \"\n");
    assert!(e.contains(":5: users[0].token: must not be empty"), "{e}");
}

#[test]
fn tls_without_cert_is_an_error_unless_self_signed() {
    let e = err_of("[server]\nport = 1\nenable_tls = true\n");
    assert!(e.contains(":3: server.enable_tls"), "{e}");
    assert!(parse("[server]\nenable_tls = true\ntls_self_signed = true\n").is_ok());
}

#[test]
fn bad_enum_value_is_reported() {
    let e = err_of("[server]\nenable_tls = false\nforward = \"zerocopy\"\n");
    assert!(e.contains(":3:"), "{e}");
}

#[test]
fn authenticate_finds_only_exact_token() {
    let c = parse(
        "[server]\nenable_tls = false\n[[users]]\nname = \"a\"\ntoken = \"alpha\"\n[[users]]\nname = \"b\"\ntoken = \"beta\"\n",
    )
    .unwrap();
    assert_eq!(c.users.authenticate(b"beta").unwrap().name, "b");
    assert!(c.users.authenticate(b"bet").is_none());
    assert!(c.users.authenticate(b"betaa").is_none());
    assert!(c.users.authenticate(b"").is_none());
}

#[test]
fn target_patterns() {
    let p = TargetPattern::parse("wss://stream.example.com/*");
    assert!(p.matches("wss://stream.example.com/a/b"));
    assert!(!p.matches("wss://stream.example.com.evil/"));
    assert!(!p.matches("ws://stream.example.com/a"));
    let exact = TargetPattern::parse("ws://h:1/x");
    assert!(exact.matches("ws://h:1/x"));
    assert!(!exact.matches("ws://h:1/xy"));
}

#[test]
fn max_sessions_limit_and_counters_survive_reload() {
    let text =
        "[server]\nenable_tls = false\n[[users]]\nname = \"a\"\ntoken = \"t\"\nmax_sessions = 1\n";
    let old = parse(text).unwrap().users;
    let u = old.authenticate(b"t").unwrap();
    let slot = u.claim_session().unwrap();
    assert!(u.claim_session().is_none());
    let mut new = parse(text).unwrap().users;
    new.inherit_counters(&old);
    assert!(new.authenticate(b"t").unwrap().claim_session().is_none());
    drop(slot);
    assert!(new.authenticate(b"t").unwrap().claim_session().is_some());
}

#[test]
fn debug_output_redacts_tokens() {
    let c = parse("[server]\nenable_tls = false\n[[users]]\nname = \"a\"\ntoken = \"s3cret\"\n")
        .unwrap();
    let shown = format!("{:?}", c.users);
    assert!(!shown.contains("s3cret"));
    assert!(shown.contains("\"a\""), "{shown}");
}

fn parse_env(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Config::parse_with_env(Path::new("/etc/relay/config.toml"), text, &|k| {
        env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
    })
}

#[test]
fn hub_is_off_by_default_and_needs_a_long_key() {
    let c = parse_env(MINIMAL, &[("RELAY_API_KEY", "x"), ("PORT", "1")]).unwrap();
    assert!(!c.hub.enabled);
    assert_eq!(
        c.server.port, 443,
        "seed variables only apply with the hub on"
    );
    assert_eq!(
        (c.hub.ws_path.as_str(), c.hub.push_path.as_str()),
        ("/ws", "/api/push")
    );
    let e = parse_env("[server]\nenable_tls = false\n[hub]\nenabled = true\n", &[]).unwrap_err();
    assert!(
        e.to_string().contains(":3: hub.api_key: is required"),
        "{e}"
    );
    let text = "[server]\nenable_tls = false\n[hub]\nenabled = true\napi_key = \"tooshort\"\n";
    let e = parse_env(text, &[]).unwrap_err().to_string();
    assert!(e.contains(":5: hub.api_key: must be at least 16"), "{e}");
    assert!(!e.contains("tooshort"), "key leaked: {e}");
    let e = parse_env(
        "[hub]\nenabled = true\napi_key = \"0123456789abcdef\"\nbogus = 1\n",
        &[],
    )
    .unwrap_err();
    assert!(
        e.to_string().contains(":4:") && e.to_string().contains("bogus"),
        "{e}"
    );
}

#[test]
fn hub_env_overrides_and_redacted_debug() {
    let text = "[server]\nenable_tls = false\n[hub]\nenabled = true\n";
    let c = parse_env(
        text,
        &[
            ("RELAY_API_KEY", "0123456789abcdef-secret"),
            ("WS_PATH", "/socket"),
            ("PUSH_PATH", "/push"),
            ("PORT", "3000"),
        ],
    )
    .unwrap();
    assert_eq!(c.hub.api_key, "0123456789abcdef-secret");
    assert_eq!(
        (
            c.hub.ws_path.as_str(),
            c.hub.push_path.as_str(),
            c.server.port
        ),
        ("/socket", "/push", 3000)
    );
    assert_eq!(c.env_overrides.len(), 4);
    assert!(!format!("{:?}", c.hub).contains("secret"));
    let e = parse_env(
        text,
        &[("RELAY_API_KEY", "0123456789abcdef"), ("PORT", "http")],
    )
    .unwrap_err();
    assert!(e.to_string().contains("PORT=\"http\""), "{e}");
    let e = parse_env(
        text,
        &[
            ("RELAY_API_KEY", "0123456789abcdef"),
            ("WS_PATH", "/api/push"),
        ],
    )
    .unwrap_err();
    assert!(e.to_string().contains("hub.push_path: must differ"), "{e}");
}
