//! Raw WebSocket frames, for tests that must control exactly which bytes go
//! on the wire: several frames in one TCP write, fragments, frames written
//! straight after a 101, what a well-behaved client never sends.

pub const OP_CONT: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// The mask every client-side raw frame uses (any value is valid).
pub const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// Encodes one frame with the engine's encoder (`ws::frame`; the client
/// reading it back is tokio-tungstenite, independent of it). `mask =
/// Some(..)` for client→server frames.
pub fn encode_frame(fin: bool, opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut out = ws_relay_core::ws::frame::build_frame(opcode, payload, mask);
    if !fin {
        out[0] &= 0x7f;
    }
    out
}

/// A complete, masked client frame.
pub fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    encode_frame(true, opcode, payload, Some(MASK))
}

/// A complete, unmasked server frame.
pub fn server_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    encode_frame(true, opcode, payload, None)
}

/// Close payload: 2-byte code + reason.
pub fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut p = code.to_be_bytes().to_vec();
    p.extend_from_slice(reason.as_bytes());
    p
}
