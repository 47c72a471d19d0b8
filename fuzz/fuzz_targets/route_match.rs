//! The reverse proxy's route matcher on arbitrary request heads against a
//! fixed table with host rules, wildcards and nested prefixes: the route
//! chosen matches the request, and no matching route has a longer path.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use ws_relay_core::config::Config;
use ws_relay_core::http::head::parse_request_head;
use ws_relay_core::proxy::table::ShardRoutes;
use ws_relay_core::tls::target::RouteTrust;

const TABLE: &str = r#"
[server]
host = "127.0.0.1"
port = 8080
enable_tls = false
relay_path = "/relay"

[[routes]]
name = "root"
path = "/"
upstream = ["ws://127.0.0.1:9001/"]

[[routes]]
name = "chat"
path = "/chat"
upstream = ["ws://127.0.0.1:9002/"]

[[routes]]
name = "chat-room"
path = "/chat/room/"
upstream = ["ws://127.0.0.1:9003/"]

[[routes]]
name = "api-host"
path = "/chat"
host = "api.example.com"
upstream = ["ws://127.0.0.1:9004/"]

[[routes]]
name = "wild"
path = "/w"
host = "*.example.org"
upstream = ["ws://127.0.0.1:9005/"]
"#;

fn build() -> ShardRoutes {
    let cfg = Config::parse_with_env(Path::new("/fuzz/config.toml"), TABLE, &|_| None)
        .expect("the fixed table is valid");
    let empty = ShardRoutes { routes: Vec::new() };
    ShardRoutes::build(&cfg.routes, &RouteTrust::new(), &empty).expect("table builds")
}

thread_local! {
    // Shard state is `!Sync` (it lives on one shard), so one per thread.
    static ROUTES: ShardRoutes = build();
}

fuzz_target!(|data: &[u8]| {
    let Ok(Some(head)) = parse_request_head(data, 8192, 32) else {
        return;
    };
    ROUTES.with(|table| {
        let host = head.header("host");
        let path = head.path();
        let matches = |r: &ws_relay_core::proxy::table::ShardRoute| {
            path.starts_with(&r.spec.path) && r.spec.host.matches(host)
        };
        match table.find(&head) {
            Some(i) => {
                let chosen = &table.routes[i];
                assert!(matches(chosen), "route {} does not match", chosen.spec.name);
                let longest = table
                    .routes
                    .iter()
                    .filter(|r| matches(r))
                    .map(|r| r.spec.path.len())
                    .max();
                assert_eq!(
                    longest,
                    Some(chosen.spec.path.len()),
                    "a longer prefix matched"
                );
            }
            None => assert!(
                !table.routes.iter().any(matches),
                "a matching route was missed"
            ),
        }
    });
});
