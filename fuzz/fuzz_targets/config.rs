//! The config loader on arbitrary text: a `Config` or a `ConfigError` that
//! names a line, never a panic. The environment is empty so runs repeat.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use ws_relay_core::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("/nonexistent/ws-relay-core-fuzz/config.toml");
    if let Err(e) = Config::parse_with_env(path, text, &|_| None) {
        let _ = e.to_string();
    }
});
