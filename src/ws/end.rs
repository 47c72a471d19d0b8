//! The one session-end table (docs/relay.md "Session end"): from how a
//! session ended to who closed it, the reason logged, and the Close frame
//! each side gets from the relay. The relay's passthrough (`forward`), the
//! tunnel bridge (`forward::bridge`) and the fan-out's server connection
//! (`fanout::ServerWs`: hub and demo clients) all end through [`verdict`].
//!
//! The conformance rule lives here once: the relay speaks (1014, 1001,
//! 1013) only for a peer that vanished without a word, or for its own
//! reasons (idle, shutdown, a slow client, a protocol error). A peer that
//! sent a Close gets its own Close back (an endpoint echoes it; a relay
//! passes the other peer's through), never one of ours. Whether a frame can
//! still go out at all (a Close already passed that way, a frame half
//! written) only the caller's framing knows; the table says which frame.
//!
//! Must not: do I/O.

use std::borrow::Cow;
use std::io;
use std::time::Duration;

use super::frame::close_code;
use super::message::ReadError;

/// One side of a session, as the session-end line names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Side {
    pub name: &'static str,
    pub kind: Kind,
}

/// What a side is, which decides what the other side is told when it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The WebSocket peer that opened the session toward us: when it
    /// vanishes the other side gets 1001 ("going away").
    Client,
    /// The WebSocket peer we opened the session toward: when it vanishes the
    /// other side gets 1014 ("bad gateway").
    Target,
    /// A byte stream (a `tcp://` service, a tunnel's local connection): its
    /// FIN is its normal end (1000 to the other side); an error is a 1014.
    Stream,
}

impl Side {
    pub const fn new(name: &'static str, kind: Kind) -> Side {
        Side { name, kind }
    }
}

/// How a session ended: the first thing that ended it.
#[derive(Debug)]
pub enum Ended<'e> {
    /// `by` sent a Close frame (its code, if it had one) that we answer as
    /// an endpoint. A relay passing Close frames through reports the TCP
    /// end behind it instead (`Eof { clean: true }`).
    Close {
        by: Side,
        code: Option<u16>,
    },
    /// `by`'s TCP ended (FIN). `clean`: its Close frame had passed first.
    Eof {
        by: Side,
        clean: bool,
    },
    /// `by`'s TCP ended, seen by a pump that does not read frames (splice).
    Unframed {
        by: Side,
    },
    /// Reading from `by` failed.
    ReadError {
        by: Side,
        error: &'e io::Error,
    },
    /// Writing to `by` failed: `by` is gone.
    WriteError {
        by: Side,
        error: &'e io::Error,
    },
    /// `by` broke the WebSocket protocol.
    Protocol {
        by: Side,
        error: &'e ReadError,
    },
    /// `by` sent nothing for this long (keepalive).
    Silent {
        by: Side,
        quiet: Duration,
    },
    /// `by`, a fan-out client, let its queue fill.
    Slow {
        by: Side,
    },
    /// No byte either way for `idle_timeout_secs`.
    Idle,
    Shutdown,
    /// A TLS 1.2 session neared its cipher's record limit.
    RecordLimit,
}

/// A Close frame the relay sends: code and reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Close {
    pub code: u16,
    pub reason: Cow<'static, str>,
}

impl Close {
    const fn new(code: u16, reason: &'static str) -> Close {
        Close {
            code,
            reason: Cow::Borrowed(reason),
        }
    }

    /// The frame, masked when we are the WebSocket client on that side.
    pub fn frame(&self, mask: Option<[u8; 4]>) -> Vec<u8> {
        super::frame::close_frame(self.code, &self.reason, mask)
    }
}

/// What a side gets as the session ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Nothing: it is gone, it already has a Close, or (splice) frames are
    /// not ours to send.
    Nothing,
    /// Its own Close frame back (code and reason as it sent them).
    Echo,
    Close(Close),
}

/// Who closed the session, why, and what each side gets.
#[derive(Debug)]
pub struct Verdict {
    /// The side the event came from (`None`: the relay's own reason).
    pub by: Option<Side>,
    pub closed_by: &'static str,
    pub reason: String,
    /// For the side the event came from (`by`); for relay-ended sessions,
    /// every side gets `to_other`.
    pub to_by: Reply,
    /// For the side across the relay from `by`.
    pub to_other: Reply,
}

impl Verdict {
    /// What `side` gets.
    pub fn reply_to(&self, side: Side) -> &Reply {
        match self.by == Some(side) {
            true => &self.to_by,
            false => &self.to_other,
        }
    }
}

/// The reason logged, and sent in the Close frames, at a TLS 1.2 record limit.
const RECORD_LIMIT: &str = "TLS 1.2 record limit";

/// The one table.
pub fn verdict(ended: &Ended<'_>) -> Verdict {
    use Reply::Nothing;
    let going = |reason| Reply::Close(Close::new(close_code::GOING_AWAY, reason));
    let relay = |reason: &str, close: &'static str| Verdict {
        by: None,
        closed_by: "relay",
        reason: reason.to_string(),
        to_by: Nothing,
        to_other: going(close),
    };
    let by_side = |by: Side, reason: String, to_by, to_other| Verdict {
        by: Some(by),
        closed_by: by.name,
        reason,
        to_by,
        to_other,
    };
    match *ended {
        Ended::Close { by, .. } => by_side(by, "close handshake".into(), Reply::Echo, Nothing),
        Ended::Eof { by, clean: true } => by_side(by, "close handshake".into(), Nothing, Nothing),
        Ended::Eof { by, clean: false } if by.kind == Kind::Stream => {
            let stream_closed = Reply::Close(Close::new(1000, "stream closed"));
            by_side(
                by,
                format!("{} stream closed", by.name),
                Nothing,
                stream_closed,
            )
        }
        Ended::Eof { by, clean: false } => {
            let reason = format!("{} disconnected without a close frame", by.name);
            by_side(by, reason, Nothing, gone(by))
        }
        Ended::Unframed { by } => {
            let reason = format!(
                "{SPLICE_EOF} by the {} first (splice mode does not see Close frames)",
                by.name
            );
            by_side(by, reason, Nothing, Nothing)
        }
        Ended::ReadError { by, error } => {
            let reason = format!("{} connection error: {error}", by.name);
            by_side(by, reason, Nothing, gone(by))
        }
        Ended::WriteError { by, error } => {
            let reason = format!("{} connection error: {error} (on write)", by.name);
            by_side(by, reason, Nothing, gone(by))
        }
        Ended::Protocol { by, error } => Verdict {
            by: Some(by),
            closed_by: "relay",
            reason: format!("{} protocol error: {error}", by.name),
            to_by: Reply::Close(Close {
                code: error.close_code(),
                reason: Cow::Owned(error.to_string()),
            }),
            to_other: gone(by),
        },
        Ended::Silent { by, quiet } => {
            let reason = format!("{} silent for {}s (keepalive)", by.name, quiet.as_secs());
            by_side(by, reason, going("keepalive timeout"), gone(by))
        }
        Ended::Slow { by } => {
            let slow = Reply::Close(Close::new(close_code::TRY_AGAIN_LATER, "client too slow"));
            by_side(by, "too slow: queue full".into(), slow, Nothing)
        }
        Ended::Idle => relay("idle timeout", "idle timeout"),
        Ended::Shutdown => relay("shutdown", "server shutting down"),
        Ended::RecordLimit => relay(RECORD_LIMIT, RECORD_LIMIT),
    }
}

/// How a splice-mode end by FIN is described: it cannot tell a close
/// handshake from a peer that vanished.
pub const SPLICE_EOF: &str = "TCP closed";

/// What the side across from a peer that vanished without a word is told.
fn gone(by: Side) -> Reply {
    Reply::Close(match by.kind {
        Kind::Client => Close::new(close_code::GOING_AWAY, "client went away"),
        Kind::Target | Kind::Stream => Close::new(close_code::BAD_GATEWAY, "target went away"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLIENT: Side = Side::new("client", Kind::Client);
    const TARGET: Side = Side::new("target", Kind::Target);
    const STREAM: Side = Side::new("target", Kind::Stream);

    fn to_other(e: Ended<'_>) -> Reply {
        verdict(&e).to_other
    }

    #[test]
    fn a_peer_that_said_something_never_gets_our_words() {
        let v = verdict(&Ended::Close {
            by: CLIENT,
            code: Some(4000),
        });
        assert_eq!(
            (v.closed_by, v.to_by, v.to_other),
            ("client", Reply::Echo, Reply::Nothing)
        );
        let v = verdict(&Ended::Eof {
            by: TARGET,
            clean: true,
        });
        assert_eq!((v.to_by, v.to_other), (Reply::Nothing, Reply::Nothing));
        assert_eq!(v.reason, "close handshake");
        assert_eq!(to_other(Ended::Unframed { by: TARGET }), Reply::Nothing);
    }

    #[test]
    fn a_peer_that_vanished_is_reported_by_what_it_was() {
        let code = |r: Reply| match r {
            Reply::Close(c) => c.code,
            other => panic!("{other:?}"),
        };
        let eof = |by| Ended::Eof { by, clean: false };
        assert_eq!(code(to_other(eof(CLIENT))), 1001);
        assert_eq!(code(to_other(eof(TARGET))), 1014);
        assert_eq!(
            code(to_other(eof(STREAM))),
            1000,
            "a stream's FIN is its end"
        );
        let e = io::Error::from(io::ErrorKind::ConnectionReset);
        let read = |by| Ended::ReadError { by, error: &e };
        assert_eq!(code(to_other(read(STREAM))), 1014);
        let v = verdict(&Ended::WriteError {
            by: TARGET,
            error: &e,
        });
        assert_eq!((v.closed_by, code(v.to_other)), ("target", 1014));
        assert!(v.reason.ends_with("(on write)"), "{}", v.reason);
    }

    #[test]
    fn the_relay_speaks_for_itself() {
        for (e, code, closed_by) in [
            (Ended::Idle, 1001, "relay"),
            (Ended::Shutdown, 1001, "relay"),
            (Ended::RecordLimit, 1001, "relay"),
            (Ended::Slow { by: CLIENT }, 1013, "client"),
        ] {
            let v = verdict(&e);
            let sent = [v.to_by, v.to_other].into_iter().find_map(|r| match r {
                Reply::Close(c) => Some(c.code),
                _ => None,
            });
            assert_eq!((sent, v.closed_by), (Some(code), closed_by), "{e:?}");
        }
    }
}
