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

#[test]
fn demo_page_and_metrics_keys() {
    let c = parse(MINIMAL).unwrap();
    assert!(!c.server.demo.enabled, "the demo app is opt-in");
    assert_eq!(c.server.demo.path, "/demo");
    assert!(c.server.page.enabled);
    assert_eq!(c.server.page.path, "/");
    assert!(c.server.metrics_allow_loopback);
    assert!(c.server.metrics_token.is_none());
    let c = parse(
        "[server]\nenable_tls = false\nmetrics_token = \"0123456789abcdef\"\n[demo]\nenabled = true\npath = \"/d\"\n[page]\npath = \"/try\"\n",
    )
    .unwrap();
    assert_eq!(c.server.demo.path, "/d");
    assert_eq!(c.server.page.path, "/try");
    assert!(!format!("{:?}", c.server).contains("0123456789abcdef"));
    let e = err_of("[server]\nenable_tls = false\n[page]\npath = \"/x\"\n[demo]\nenabled = true\npath = \"/\"\n");
    assert!(
        e.contains(":7: demo.path: / is already server.relay_path"),
        "{e}"
    );
    let e = err_of("[server]\nenable_tls = false\n[page]\npath = \"/metrics\"\n");
    assert!(e.contains(":4: page.path: /metrics is reserved"), "{e}");
    let e = err_of("[server]\nenable_tls = false\nmetrics_token = \"short\"\n");
    assert!(e.contains(":3: server.metrics_token"), "{e}");
    assert!(!e.contains("short"), "{e}");
    let e = err_of("[server]\nenable_tls = false\n[demo]\nmax_queue_messages = 0\n");
    assert!(e.contains(":4: demo.max_queue_messages"), "{e}");
    let e = err_of("[demo]\nbogus = 1\n");
    assert!(e.contains("bogus"), "{e}");
}
