//! Streams, offsets and history (docs/hub.md "Recovery").
//!
//! Every push lands in one stream: its user's (`user:<token>`) or the
//! broadcast one. With history on, each message gets the next offset of its
//! stream (1, 2, … no gaps) and the stream's epoch, a random string fixed
//! when its history starts; a client that reconnects with the last offset
//! and epoch it saw gets what it missed, or `recovered: false` when the
//! epoch changed or the history no longer reaches back that far.
//!
//! This file owns the names, what a client asks ([`Want`]) and gets
//! ([`Recovered`]), and [`MemoryHistory`]: the one-instance store, kept by
//! the hub thread alone (no lock), which assigns offsets and appends in the
//! same step as it hands the frame to the shards. Redis's store is in
//! `redis.rs`. Must not: do I/O, or be touched from a shard.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

pub use super::message::Kind;
use super::message::Push;
use crate::fanout::{text_frame, Frame};

/// The stream a push lands in: `user:<token>` or `broadcast`.
pub fn name_of(user: Option<&str>) -> String {
    match user {
        Some(u) => format!("user:{u}"),
        None => "broadcast".into(),
    }
}

/// One stream a client asks to recover: everything after `since` in `epoch`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Want {
    pub kind: Kind,
    /// `user:<token>` or `broadcast`.
    pub stream: String,
    pub since: u64,
    pub epoch: String,
}

/// What a recovery read found for one [`Want`].
#[derive(Debug)]
pub struct Recovered {
    pub kind: Kind,
    pub recovered: bool,
    /// The stream's position when read: the last offset (0: empty) and epoch
    /// ("" when the stream has no history yet).
    pub top: u64,
    pub epoch: String,
    /// The missed messages, in order (empty unless `recovered`).
    pub frames: Vec<Frame>,
}

impl Recovered {
    /// `{"event":"recovered","data":{…}}`, sent before the replayed frames.
    pub fn event(&self) -> Frame {
        let v = serde_json::json!({
            "event": "recovered",
            "data": {
                "stream": self.kind.as_str(),
                "recovered": self.recovered,
                "replayed": self.frames.len(),
                "offset": self.top,
                "epoch": self.epoch,
            }
        });
        text_frame(v.to_string().as_bytes())
    }
}

/// The decision shared by both stores: can `want` be served from a history
/// whose epoch is `epoch`, whose last offset is `top` and whose oldest kept
/// offset is `first` (`top + 1` when it keeps none)?
pub fn recoverable(want: &Want, epoch: &str, top: u64, first: u64) -> bool {
    !epoch.is_empty()
        && want.epoch == epoch
        && want.since <= top
        // The next one the client needs is still kept (or nothing is missed).
        && (want.since == top || want.since + 1 >= first)
}

struct MemStream {
    epoch: String,
    top: u64,
    /// Offsets `top - len + 1 ..= top`.
    frames: VecDeque<Frame>,
    bytes: usize,
    last: Instant,
}

/// One instance's history: `size` messages per stream, a stream forgotten
/// `ttl` after its last message (its next message starts a new epoch).
pub struct MemoryHistory {
    size: usize,
    ttl: Duration,
    streams: HashMap<String, MemStream>,
    bytes: usize,
    epochs: EpochSource,
}

impl MemoryHistory {
    pub fn new(size: usize, ttl: Duration) -> MemoryHistory {
        MemoryHistory {
            size: size.max(1),
            ttl,
            streams: HashMap::new(),
            bytes: 0,
            epochs: EpochSource::new(),
        }
    }

    /// Gives `push` the next offset of its stream and that stream's epoch,
    /// keeps its frame, and returns the frame and its offset.
    pub fn append(&mut self, push: &mut Push, now: Instant, now_ms: u64) -> (Frame, u64) {
        let name = name_of(push.user.as_deref());
        let s = self.streams.entry(name).or_insert_with(|| MemStream {
            epoch: self.epochs.fresh(),
            top: 0,
            frames: VecDeque::new(),
            bytes: 0,
            last: now,
        });
        s.top += 1;
        s.last = now;
        push.offset = Some(s.top);
        push.epoch = Some(s.epoch.clone());
        let frame = push.frame(now_ms);
        s.frames.push_back(frame.clone());
        s.bytes += frame.len();
        self.bytes += frame.len();
        while s.frames.len() > self.size {
            if let Some(old) = s.frames.pop_front() {
                s.bytes -= old.len();
                self.bytes -= old.len();
            }
        }
        (frame, s.top)
    }

    pub fn read(&self, want: &Want) -> Recovered {
        let Some(s) = self.streams.get(&want.stream) else {
            return Recovered {
                kind: want.kind,
                recovered: false,
                top: 0,
                epoch: String::new(),
                frames: Vec::new(),
            };
        };
        let first = s.top + 1 - s.frames.len() as u64;
        let ok = recoverable(want, &s.epoch, s.top, first);
        let frames = if ok {
            let skip = (want.since + 1 - first) as usize;
            s.frames.iter().skip(skip).cloned().collect()
        } else {
            Vec::new()
        };
        Recovered {
            kind: want.kind,
            recovered: ok,
            top: s.top,
            epoch: s.epoch.clone(),
            frames,
        }
    }

    /// Forgets streams idle for longer than the TTL.
    pub fn sweep(&mut self, now: Instant) {
        let (ttl, mut freed) = (self.ttl, 0);
        self.streams.retain(|_, s| {
            let keep = now.saturating_duration_since(s.last) <= ttl;
            if !keep {
                freed += s.bytes;
            }
            keep
        });
        self.bytes -= freed;
    }

    /// Streams kept and the bytes of their frames (`/metrics`).
    pub fn usage(&self) -> (usize, usize) {
        (self.streams.len(), self.bytes)
    }
}

/// Epochs: this process's random id and a counter, so two are never equal
/// (here or on another instance) without a random draw per stream.
pub struct EpochSource {
    prefix: String,
    n: u64,
}

impl EpochSource {
    pub fn new() -> EpochSource {
        let mut prefix = super::random_id();
        prefix.truncate(12);
        EpochSource { prefix, n: 0 }
    }

    pub fn fresh(&mut self) -> String {
        self.n += 1;
        format!("{}{:x}", self.prefix, self.n)
    }
}

impl Default for EpochSource {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::message::parse;

    fn push(user: Option<&str>, subject: u32) -> Push {
        let token = user.map_or("null".to_string(), |u| format!("{u:?}"));
        let body = format!(r#"{{"event_name":"e","subject":{subject},"token":{token}}}"#);
        parse(body.as_bytes(), String::new()).unwrap().push
    }

    fn want(s: &str, since: u64, epoch: &str) -> Want {
        let kind = if s == "broadcast" {
            Kind::Broadcast
        } else {
            Kind::User
        };
        Want {
            kind,
            stream: s.into(),
            since,
            epoch: epoch.into(),
        }
    }

    #[test]
    fn offsets_per_stream_and_recovery_rules() {
        let mut h = MemoryHistory::new(3, Duration::from_secs(60));
        let t = Instant::now();
        let mut offsets = Vec::new();
        for (u, i) in [(Some("a"), 1), (None, 2), (Some("a"), 3), (Some("b"), 4)] {
            let mut p = push(u, i);
            offsets.push(h.append(&mut p, t, 7).1);
        }
        assert_eq!(offsets, [1, 1, 2, 1], "each stream counts on its own");
        let epoch = h.read(&want("user:a", 0, "")).epoch;
        let text = |f: &Frame| String::from_utf8_lossy(&f[2..]).into_owned();
        let r = h.read(&want("user:a", 1, &epoch));
        assert!(r.recovered && r.top == 2);
        assert_eq!(r.frames.len(), 1);
        assert!(text(&r.frames[0])
            .contains(&format!(r#""stream":"user","offset":2,"epoch":"{epoch}""#)));
        assert!(h.read(&want("user:a", 2, &epoch)).recovered, "up to date");
        assert!(!h.read(&want("user:a", 1, "other")).recovered, "epoch");
        assert!(!h.read(&want("user:a", 3, &epoch)).recovered, "future");
        assert!(!h.read(&want("user:zz", 0, "x")).recovered, "no stream");
        // Trimmed: size 3 keeps offsets 3..=5 after five messages.
        for i in 0..3 {
            h.append(&mut push(Some("a"), i), t, 7);
        }
        assert!(
            !h.read(&want("user:a", 1, &epoch)).recovered,
            "offset 2 was trimmed"
        );
        let r = h.read(&want("user:a", 2, &epoch));
        assert!(r.recovered && r.frames.len() == 3);
        assert_eq!(h.usage().0, 3);
        // Forgotten after the TTL; the next message starts a new epoch.
        h.sweep(t + Duration::from_secs(61));
        assert_eq!(h.usage(), (0, 0));
        h.append(&mut push(Some("a"), 9), t, 7);
        let r = h.read(&want("user:a", 5, &epoch));
        assert!(!r.recovered && r.top == 1 && r.epoch != epoch);
    }
}
