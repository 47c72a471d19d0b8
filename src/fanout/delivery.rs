//! The fan-out's data types: a [`Frame`] built once, the [`Space`] and
//! [`Audience`] it is for, and the [`Delivery`] one shard receives. Plain
//! data, so the shard messages (`crate::msg`) can carry them without
//! importing the fan-out's machinery.

use std::sync::Arc;

use bytes::Bytes;

use crate::ws::frame::{encode_header, opcode, MAX_HEADER_LEN};

/// A complete server-to-client WebSocket frame (header and payload).
pub type Frame = Bytes;

/// A FIN text frame carrying `payload`, built once for every recipient.
pub fn text_frame(payload: &[u8]) -> Frame {
    let mut header = [0u8; MAX_HEADER_LEN];
    let n = encode_header(&mut header, true, opcode::TEXT, payload.len() as u64, None);
    let mut out = Vec::with_capacity(n + payload.len());
    out.extend_from_slice(&header[..n]);
    out.extend_from_slice(payload);
    Bytes::from(out)
}

/// Which registry on each shard a delivery is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Space {
    Hub,
    Demo,
}

impl Space {
    pub const COUNT: usize = 2;
}

/// Who receives a frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Audience {
    /// Every connection in the space.
    All,
    /// The connections that joined this group.
    Group(Arc<str>),
}

/// One frame for one shard's registry.
pub struct Delivery {
    pub space: Space,
    pub audience: Audience,
    pub frame: Frame,
    /// The frame's place in its audience's ordered stream (the hub's
    /// offsets), so a connection that just recovered history can skip what
    /// it already has; 0 = unordered, never skipped.
    pub offset: u64,
    /// Told how many connections on that shard took the frame.
    pub reply: Option<flume::Sender<usize>>,
}
