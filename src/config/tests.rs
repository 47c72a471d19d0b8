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

const ROUTE_BASE: &str = "[server]\nenable_tls = false\nrelay_path = \"/relay\"\n";

fn with_route(body: &str) -> String {
    format!("{ROUTE_BASE}[[routes]]\nname = \"r\"\n{body}")
}

#[test]
fn routes_parse_with_defaults() {
    let c = parse(&with_route(
        "path = \"/chat\"\nhost = \"*.Example.com\"\nupstream = [\"ws://10.0.0.2:8081\", \"wss://ws.internal/\"]\nhealth_check = { path = \"/up\" }\n",
    ))
    .unwrap();
    let r = &c.routes.routes[0];
    assert_eq!(r.upstreams.len(), 2);
    assert_eq!(r.auth, RouteAuth::None);
    assert_eq!(r.max_connections, 0);
    assert!(!r.upstream_host);
    let h = r.health_check.as_ref().unwrap();
    assert_eq!(
        (h.path.as_str(), h.interval_secs, h.timeout_secs),
        ("/up", 5, 2)
    );
    assert!(r.host.matches(Some("a.example.com")));
}

#[test]
fn route_errors_name_line_and_key() {
    let cases = [
        (
            "path = \"/a\"\nupstream = [\"http://h/\"]\n",
            ":7: routes[0].upstream",
        ),
        (
            "path = \"/a\"\nupstream = [\"tcp://h:22\"]\n",
            ":7: routes[0].upstream",
        ),
        (
            "path = \"/a\"\nupstream = []\n",
            ":7: routes[0].upstream: needs at least one",
        ),
        (
            "path = \"/relay\"\nupstream = [\"ws://h/\"]\n",
            ":6: routes[0].path: \"/relay\" is server.relay_path",
        ),
        (
            "path = \"/health\"\nupstream = [\"ws://h/\"]\n",
            ":6: routes[0].path",
        ),
        (
            "path = \"a\"\nupstream = [\"ws://h/\"]\n",
            ":6: routes[0].path: must start with '/'",
        ),
        (
            "path = \"/a\"\nhost = \"h:80\"\nupstream = [\"ws://h/\"]\n",
            ":7: routes[0].host",
        ),
        (
            "path = \"/a\"\nupstream = [\"ws://h/\"]\nauth = \"basic\"\n",
            ":8:",
        ),
        (
            "path = \"/a\"\nupstream = [\"ws://h/\"]\nbogus = 1\n",
            ":8:",
        ),
    ];
    for (body, want) in cases {
        let e = err_of(&with_route(body));
        assert!(e.starts_with("/etc/relay/config.toml:"), "{e}");
        assert!(e.contains(want), "{body:?}: wanted {want:?} in {e}");
    }
}

#[test]
fn duplicate_routes_are_rejected() {
    let two = |a: &str, b: &str| {
        format!(
            "{ROUTE_BASE}[[routes]]\nname = \"a\"\npath = \"/x\"\n{a}upstream = [\"ws://h/\"]\n[[routes]]\nname = \"b\"\npath = \"/x\"\n{b}upstream = [\"ws://h/\"]\n"
        )
    };
    let e = err_of(&two("", ""));
    assert!(
        e.contains(":10: routes[1].path: routes[0] already has this host and path"),
        "{e}"
    );
    let e = err_of(&two("host = \"H.example\"\n", "host = \"h.EXAMPLE\"\n"));
    assert!(e.contains("routes[1].path"), "{e}");
    assert!(parse(&two("host = \"a.example\"\n", "")).is_ok());
    let e = err_of(&format!(
        "{ROUTE_BASE}[[routes]]\nname = \"a\"\npath = \"/x\"\nupstream = [\"ws://h/\"]\n[[routes]]\nname = \"a\"\npath = \"/y\"\nupstream = [\"ws://h/\"]\n"
    ));
    assert!(
        e.contains(":9: routes[1].name: duplicate route name"),
        "{e}"
    );
}

#[test]
fn user_routes_must_name_existing_routes() {
    let text = format!(
        "{}[[users]]\nname = \"u\"\ntoken = \"t\"\nroutes = [\"r\", \"nope\"]\n",
        with_route("path = \"/a\"\nupstream = [\"ws://h/\"]\n")
    );
    let e = err_of(&text);
    assert!(
        e.contains(":11: users[0].routes: no route named \"nope\""),
        "{e}"
    );
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
