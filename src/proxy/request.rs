//! The upgrade request a route sends upstream, rebuilt from the client's:
//! hop-by-hop headers removed (RFC 9110 §7.6.1), `Connection`/`Upgrade`
//! sent again, `X-Forwarded-*` set, relay credentials stripped, and every
//! other header passed through in its original order and spelling.
//!
//! Also owns reading a route token from the request. Must not: let a relay
//! token reach the upstream, or do I/O.

use std::fmt::Write as _;
use std::net::IpAddr;

use crate::http::head::HeadError;
use crate::http::url::{percent_decode, query_param};

/// The subprotocol form of a route token: `bearer.<token>`. Browsers can set
/// only the URL and `Sec-WebSocket-Protocol`, so this is how they send one
/// without putting it in the URL (and in access logs).
pub const PROTOCOL_PREFIX: &str = "bearer.";

/// Headers that describe one connection, never forwarded (RFC 9110
/// §7.6.1, plus `Upgrade`, which is sent again explicitly).
fn is_hop_by_hop(name: &str) -> bool {
    const HOP: [&str; 6] = [
        "connection",
        "keep-alive",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    ];
    HOP.iter().any(|h| name.eq_ignore_ascii_case(h))
        || name
            .get(..6)
            .is_some_and(|p| p.eq_ignore_ascii_case("proxy-"))
}

/// What the rebuilt request needs besides the client's head.
pub struct Forwarding<'a> {
    pub client_ip: IpAddr,
    /// The client reached the relay over TLS.
    pub client_tls: bool,
    /// `Host` for the upstream: the client's, or the upstream's own when the
    /// route sets `upstream_host`.
    pub host: &'a str,
    /// Remove relay credentials (routes with `auth = "token"`).
    pub strip_credentials: bool,
}

/// The rebuilt request and what the relay must remember about it.
#[derive(Debug)]
pub struct UpstreamRequest {
    pub bytes: Vec<u8>,
    /// The client offered only a `bearer.` entry: browsers fail a handshake
    /// whose 101 names no protocol after they offered one, so the relay
    /// names that entry in the 101 when the upstream picks none.
    pub echo_protocol: Option<String>,
}

/// The route token, from `Authorization: Bearer`, `?token=`, or a
/// `bearer.<token>` subprotocol entry, in that order.
pub fn route_token(headers: &[(String, String)], query: Option<&str>) -> Option<String> {
    let bearer = headers
        .iter()
        .find(|(n, _)| n == "authorization")
        .and_then(|(_, v)| bearer_of(v));
    bearer
        .or_else(|| query.and_then(|q| query_param(q, "token")))
        .or_else(|| {
            protocol_entries(headers)
                .find_map(|p| p.strip_prefix(PROTOCOL_PREFIX).map(str::to_string))
        })
        .filter(|t| !t.is_empty())
}

fn bearer_of(value: &str) -> Option<String> {
    let (scheme, rest) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| rest.trim().to_string())
}

fn protocol_entries(headers: &[(String, String)]) -> impl Iterator<Item = &str> {
    headers
        .iter()
        .filter(|(n, _)| n == "sec-websocket-protocol")
        .flat_map(|(_, v)| v.split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty())
}

/// Rebuilds `raw` (a complete request head) for the upstream.
pub fn upstream_request(raw: &[u8], fwd: &Forwarding<'_>) -> Result<UpstreamRequest, HeadError> {
    let mut storage = [httparse::EMPTY_HEADER; 128];
    let mut req = httparse::Request::new(&mut storage);
    match req.parse(raw) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(HeadError::Malformed("incomplete".into())),
        Err(e) => return Err(HeadError::Malformed(e.to_string())),
    }
    let headers: Vec<(&str, &str)> = req
        .headers
        .iter()
        .map(|h| Ok((h.name, std::str::from_utf8(h.value).map_err(|_| ())?.trim())))
        .collect::<Result<_, ()>>()
        .map_err(|_| HeadError::Malformed("a header value is not UTF-8".into()))?;
    let listed_in_connection: Vec<&str> = headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("connection"))
        .flat_map(|(_, v)| v.split(','))
        .map(str::trim)
        .collect();
    let dropped = |name: &str| {
        is_hop_by_hop(name)
            || listed_in_connection
                .iter()
                .any(|c| c.eq_ignore_ascii_case(name))
            || ["host", "x-forwarded-proto", "x-forwarded-host"]
                .iter()
                .any(|h| name.eq_ignore_ascii_case(h))
    };
    let target = req.path.unwrap_or("/");
    let target = if fwd.strip_credentials {
        without_query_param(target, "token")
    } else {
        target.to_string()
    };
    let mut out = String::with_capacity(raw.len() + 128);
    let _ = write!(out, "GET {target} HTTP/1.1\r\nHost: {}\r\n", fwd.host);
    let mut forwarded_for: Option<String> = None;
    let mut protocols: Vec<&str> = Vec::new();
    let mut offered_other = false;
    let mut echo_protocol = None;
    for &(name, value) in &headers {
        if dropped(name) {
            continue;
        }
        if name.eq_ignore_ascii_case("x-forwarded-for") {
            forwarded_for = Some(match forwarded_for {
                Some(prev) => format!("{prev}, {value}"),
                None => value.to_string(),
            });
            continue;
        }
        if name.eq_ignore_ascii_case("sec-websocket-protocol") {
            for p in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                if fwd.strip_credentials && p.starts_with(PROTOCOL_PREFIX) {
                    echo_protocol.get_or_insert_with(|| p.to_string());
                } else {
                    offered_other = true;
                    protocols.push(p);
                }
            }
            continue;
        }
        if fwd.strip_credentials
            && name.eq_ignore_ascii_case("authorization")
            && bearer_of(value).is_some()
        {
            continue;
        }
        let _ = write!(out, "{name}: {value}\r\n");
    }
    if !protocols.is_empty() {
        let _ = write!(out, "Sec-WebSocket-Protocol: {}\r\n", protocols.join(", "));
    }
    let xff = match forwarded_for {
        Some(prev) => format!("{prev}, {}", fwd.client_ip),
        None => fwd.client_ip.to_string(),
    };
    let client_host = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("host"))
        .map_or("", |(_, v)| *v);
    let proto = if fwd.client_tls { "https" } else { "http" };
    let _ = write!(
        out,
        "X-Forwarded-For: {xff}\r\nX-Forwarded-Proto: {proto}\r\nX-Forwarded-Host: {client_host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
    );
    Ok(UpstreamRequest {
        bytes: out.into_bytes(),
        echo_protocol: if offered_other { None } else { echo_protocol },
    })
}

/// `target` with every `key=` pair removed from its query.
fn without_query_param(target: &str, key: &str) -> String {
    let Some((path, query)) = target.split_once('?') else {
        return target.to_string();
    };
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| {
            let k = pair.split_once('=').map_or(*pair, |(k, _)| k);
            percent_decode(k).as_deref() != Some(key)
        })
        .collect();
    if kept.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{}", kept.join("&"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLIENT: &str = "GET /chat/room?token=s3cret&x=1 HTTP/1.1\r\n\
        Host: Chat.Example.com:8443\r\n\
        Upgrade: websocket\r\n\
        Connection: keep-alive, Upgrade, X-Secret-Hop\r\n\
        X-Secret-Hop: 1\r\n\
        Keep-Alive: timeout=5\r\n\
        Proxy-Authorization: Basic abc\r\n\
        TE: trailers\r\n\
        Trailer: X\r\n\
        Transfer-Encoding: chunked\r\n\
        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
        Sec-WebSocket-Version: 13\r\n\
        Sec-WebSocket-Protocol: chat, bearer.s3cret\r\n\
        Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\
        Authorization: Bearer s3cret\r\n\
        X-Forwarded-For: 203.0.113.7\r\n\
        X-Forwarded-Proto: spoofed\r\n\
        Origin: https://app.example.com\r\n\
        Cookie: a=b\r\n\r\n";

    fn rebuild(strip: bool) -> (String, UpstreamRequest) {
        let fwd = Forwarding {
            client_ip: "198.51.100.2".parse().unwrap(),
            client_tls: true,
            host: "Chat.Example.com:8443",
            strip_credentials: strip,
        };
        let r = upstream_request(CLIENT.as_bytes(), &fwd).unwrap();
        (String::from_utf8(r.bytes.clone()).unwrap(), r)
    }

    #[test]
    fn hop_by_hop_headers_go_and_end_to_end_headers_stay() {
        let (text, _) = rebuild(true);
        for gone in [
            "Keep-Alive",
            "Proxy-Authorization",
            "TE:",
            "Trailer",
            "Transfer-Encoding",
            "X-Secret-Hop",
            "keep-alive, Upgrade",
            "spoofed",
        ] {
            assert!(!text.contains(gone), "{gone} leaked:\n{text}");
        }
        for kept in [
            "GET /chat/room?x=1 HTTP/1.1\r\n",
            "Host: Chat.Example.com:8443\r\n",
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
            "Sec-WebSocket-Version: 13\r\n",
            "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n",
            "Sec-WebSocket-Protocol: chat\r\n",
            "Origin: https://app.example.com\r\n",
            "Cookie: a=b\r\n",
            "X-Forwarded-For: 203.0.113.7, 198.51.100.2\r\n",
            "X-Forwarded-Proto: https\r\n",
            "X-Forwarded-Host: Chat.Example.com:8443\r\n",
            "Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
        ] {
            assert!(text.contains(kept), "missing {kept:?}:\n{text}");
        }
        assert_eq!(text.matches("Connection:").count(), 1);
    }

    #[test]
    fn credentials_never_reach_the_upstream() {
        let (text, r) = rebuild(true);
        assert!(!text.contains("s3cret"), "{text}");
        assert_eq!(r.echo_protocol, None, "the client offered chat too");
        let (text, _) = rebuild(false);
        assert!(text.contains("Authorization: Bearer s3cret"));
    }

    #[test]
    fn token_sources_in_order() {
        let h = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect()
        };
        let all = h(&[
            ("authorization", "Bearer a"),
            ("sec-websocket-protocol", "x, bearer.c"),
        ]);
        assert_eq!(route_token(&all, Some("token=b")).as_deref(), Some("a"));
        let no_auth = h(&[("sec-websocket-protocol", "x, bearer.c")]);
        assert_eq!(route_token(&no_auth, Some("token=b")).as_deref(), Some("b"));
        assert_eq!(route_token(&no_auth, None).as_deref(), Some("c"));
        assert_eq!(route_token(&h(&[("authorization", "Basic z")]), None), None);
        assert_eq!(route_token(&[], Some("token=")), None);
    }

    #[test]
    fn only_credential_offer_is_echoed() {
        let raw = "GET /r HTTP/1.1\r\nHost: h\r\nSec-WebSocket-Protocol: bearer.tok\r\n\r\n";
        let fwd = Forwarding {
            client_ip: "::1".parse().unwrap(),
            client_tls: false,
            host: "h",
            strip_credentials: true,
        };
        let r = upstream_request(raw.as_bytes(), &fwd).unwrap();
        let text = String::from_utf8(r.bytes).unwrap();
        assert!(!text.contains("Sec-WebSocket-Protocol"), "{text}");
        assert!(text.contains("X-Forwarded-Proto: http\r\n"));
        assert_eq!(r.echo_protocol.as_deref(), Some("bearer.tok"));
    }

    #[test]
    fn query_param_removal() {
        assert_eq!(without_query_param("/a?token=x", "token"), "/a");
        assert_eq!(without_query_param("/a?b=1&token=x&c", "token"), "/a?b=1&c");
        assert_eq!(without_query_param("/a?tok%65n=x", "token"), "/a");
        assert_eq!(without_query_param("/a", "token"), "/a");
    }
}
