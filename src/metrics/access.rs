//! Who may read `/metrics`: loopback clients (unless
//! `metrics_allow_loopback = false`, for hosts where a local proxy makes
//! every client look local), or anyone presenting `metrics_token` as
//! `Authorization: Bearer`. Everyone else gets 403.
//!
//! Must not: compare tokens in variable time, or log them.

use std::net::IpAddr;

use ring::digest::{digest, SHA256};
use subtle::ConstantTimeEq;

use crate::config::ServerConfig;
use crate::http::head::RequestHead;

pub fn allowed(cfg: &ServerConfig, peer: IpAddr, head: &RequestHead) -> bool {
    if cfg.metrics_allow_loopback && peer.to_canonical().is_loopback() {
        return true;
    }
    let Some(want) = cfg.metrics_token.as_deref().filter(|t| !t.is_empty()) else {
        return false;
    };
    let Some(given) = bearer(head) else {
        return false;
    };
    // Digests first, so neither the content nor the length is timed.
    let a = digest(&SHA256, want.as_bytes());
    let b = digest(&SHA256, given.as_bytes());
    a.as_ref().ct_eq(b.as_ref()).into()
}

fn bearer(head: &RequestHead) -> Option<&str> {
    let v = head.header("authorization")?;
    let (scheme, rest) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::head::parse_request_head;

    fn head(extra: &str) -> RequestHead {
        let raw = format!("GET /metrics HTTP/1.1\r\nHost: x\r\n{extra}\r\n");
        parse_request_head(raw.as_bytes(), 8192, 100)
            .unwrap()
            .unwrap()
    }

    #[test]
    fn loopback_or_token() {
        let mut cfg = ServerConfig::default();
        let remote: IpAddr = "192.0.2.7".parse().unwrap();
        let local: IpAddr = "127.0.0.1".parse().unwrap();
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        assert!(allowed(&cfg, local, &head("")));
        assert!(allowed(&cfg, mapped, &head("")));
        assert!(!allowed(&cfg, remote, &head("")));
        cfg.metrics_token = Some(crate::config::Redacted("s3cret-metrics".into()));
        assert!(allowed(
            &cfg,
            remote,
            &head("Authorization: Bearer s3cret-metrics\r\n")
        ));
        assert!(!allowed(
            &cfg,
            remote,
            &head("Authorization: Bearer s3cret-metricz\r\n")
        ));
        assert!(!allowed(&cfg, remote, &head("Authorization: Basic x\r\n")));
        cfg.metrics_allow_loopback = false;
        assert!(!allowed(&cfg, local, &head("")));
        assert!(allowed(
            &cfg,
            local,
            &head("authorization: bearer s3cret-metrics\r\n")
        ));
    }
}
