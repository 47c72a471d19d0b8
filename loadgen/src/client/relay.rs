//! The ws-relay-core protocol from the client side (docs/relay.md "Using the relay"): where a
//! connection goes (direct or through a relay), the two auth modes, the
//! exact `{"status":"已连接"}` acknowledgement and the error object.

use serde::Serialize;

use crate::ws::WsUrl;

/// The relay's exact acknowledgement in first-message mode.
pub const CONNECTED_STATUS: &str = r#"{"status":"已连接"}"#;

/// How the client authenticates to the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AuthMode {
    /// Upgrade, then send `{"token","target"}` and wait for the status message.
    FirstMessage,
    /// `Authorization: Bearer` and `X-Relay-Target` on the upgrade request.
    Header,
}

impl AuthMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::FirstMessage => "first-message",
            Self::Header => "header",
        }
    }
}

/// Where a client connection goes.
#[derive(Debug, Clone)]
pub enum Route {
    Direct {
        target: WsUrl,
    },
    Relay {
        relay: WsUrl,
        target: WsUrl,
        token: String,
        auth: AuthMode,
    },
}

impl Route {
    /// The endpoint the TCP connection is made to.
    pub fn first_hop(&self) -> &WsUrl {
        match self {
            Self::Direct { target } => target,
            Self::Relay { relay, .. } => relay,
        }
    }

    pub fn target(&self) -> &WsUrl {
        match self {
            Self::Direct { target } | Self::Relay { target, .. } => target,
        }
    }

    /// "direct" or "relayed".
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Direct { .. } => "direct",
            Self::Relay { .. } => "relayed",
        }
    }

    pub fn auth(&self) -> Option<AuthMode> {
        match self {
            Self::Direct { .. } => None,
            Self::Relay { auth, .. } => Some(*auth),
        }
    }

    /// Extra upgrade-request headers for header-mode auth.
    pub fn upgrade_headers(&self) -> Vec<(&'static str, String)> {
        match self {
            Self::Relay {
                target,
                token,
                auth: AuthMode::Header,
                ..
            } => vec![
                ("Authorization", format!("Bearer {token}")),
                ("X-Relay-Target", target.raw.clone()),
            ],
            _ => Vec::new(),
        }
    }

    /// The first-message auth text, when that mode applies.
    pub fn auth_message(&self) -> Option<String> {
        match self {
            Self::Relay {
                target,
                token,
                auth: AuthMode::FirstMessage,
                ..
            } => Some(serde_json::json!({ "token": token, "target": target.raw }).to_string()),
            _ => None,
        }
    }
}

/// A relay's error object, `{"status":"error","code":..,"error":..}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayRefusal {
    pub code: String,
    pub error: String,
}

/// Reads a relay error object from a text message or HTTP body.
pub fn parse_refusal(text: &[u8]) -> Option<RelayRefusal> {
    let v: serde_json::Value = serde_json::from_slice(text).ok()?;
    if v.get("status")?.as_str()? != "error" {
        return None;
    }
    Some(RelayRefusal {
        code: v
            .get("code")
            .and_then(|c| c.as_str())
            .unwrap_or("?")
            .to_string(),
        error: v
            .get("error")
            .and_then(|c| c.as_str())
            .unwrap_or("")
            .to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_message_and_refusal() {
        let route = Route::Relay {
            relay: WsUrl::parse("ws://127.0.0.1:1/").unwrap(),
            target: WsUrl::parse("ws://127.0.0.1:2/").unwrap(),
            token: "t\"k".into(),
            auth: AuthMode::FirstMessage,
        };
        let m: serde_json::Value = serde_json::from_str(&route.auth_message().unwrap()).unwrap();
        assert_eq!(m["token"], "t\"k");
        assert_eq!(m["target"], "ws://127.0.0.1:2/");
        assert!(route.upgrade_headers().is_empty());
        let r =
            parse_refusal(br#"{"status":"error","code":"auth_failed","error":"unknown token"}"#)
                .unwrap();
        assert_eq!(r.code, "auth_failed");
        assert!(parse_refusal(CONNECTED_STATUS.as_bytes()).is_none());
    }
}
