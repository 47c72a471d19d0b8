//! The wire's error vocabulary (docs/relay.md "Errors"): one code per failure, each
//! with its WebSocket Close code and its HTTP status for handshake-time
//! auth. Every feature refuses sessions in these terms.

use std::fmt;

use super::frame::close_code;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    BadRequest,
    AuthFailed,
    AuthTimeout,
    AuthThrottled,
    TargetForbidden,
    TargetUnreachable,
    /// `target_unreachable` because the connect timed out (HTTP 504).
    TargetTimeout,
    TargetHandshakeFailed,
    OverCapacity,
    /// A reverse tunnel asked for a port that is already published.
    PortInUse,
}

impl ErrorCode {
    /// Every code, for series that should exist (at 0) before the first use.
    pub const ALL: [ErrorCode; 10] = [
        ErrorCode::BadRequest,
        ErrorCode::AuthFailed,
        ErrorCode::AuthTimeout,
        ErrorCode::AuthThrottled,
        ErrorCode::TargetForbidden,
        ErrorCode::TargetUnreachable,
        ErrorCode::TargetTimeout,
        ErrorCode::TargetHandshakeFailed,
        ErrorCode::OverCapacity,
        ErrorCode::PortInUse,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::AuthFailed => "auth_failed",
            ErrorCode::AuthTimeout => "auth_timeout",
            ErrorCode::AuthThrottled => "auth_throttled",
            ErrorCode::TargetForbidden => "target_forbidden",
            ErrorCode::TargetUnreachable | ErrorCode::TargetTimeout => "target_unreachable",
            ErrorCode::TargetHandshakeFailed => "target_handshake_failed",
            ErrorCode::OverCapacity => "over_capacity",
            ErrorCode::PortInUse => "port_in_use",
        }
    }

    pub fn close_code(self) -> u16 {
        match self {
            ErrorCode::BadRequest
            | ErrorCode::AuthFailed
            | ErrorCode::AuthTimeout
            | ErrorCode::AuthThrottled
            | ErrorCode::TargetForbidden => close_code::POLICY_VIOLATION,
            ErrorCode::TargetUnreachable
            | ErrorCode::TargetTimeout
            | ErrorCode::TargetHandshakeFailed => close_code::BAD_GATEWAY,
            ErrorCode::OverCapacity | ErrorCode::PortInUse => close_code::TRY_AGAIN_LATER,
        }
    }

    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::BadRequest => 400,
            ErrorCode::AuthFailed => 401,
            ErrorCode::AuthTimeout => 408,
            ErrorCode::AuthThrottled => 429,
            ErrorCode::TargetForbidden => 403,
            ErrorCode::TargetUnreachable | ErrorCode::TargetHandshakeFailed => 502,
            ErrorCode::TargetTimeout => 504,
            ErrorCode::OverCapacity => 503,
            ErrorCode::PortInUse => 409,
        }
    }
}

/// A refused session: the code the peer sees and a human-readable detail.
/// The detail must never contain a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayError {
    pub code: ErrorCode,
    pub detail: String,
}

impl RelayError {
    pub fn new(code: ErrorCode, detail: impl Into<String>) -> RelayError {
        RelayError {
            code,
            detail: detail.into(),
        }
    }
}

impl fmt::Display for RelayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.detail)
    }
}

impl std::error::Error for RelayError {}
