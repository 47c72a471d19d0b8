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

/// What a client that sends faster than it reads saw: the text messages it
/// got, in order, and the Close code if the server closed.
pub struct Flooded {
    pub texts: Vec<String>,
    pub close: Option<u16>,
    /// The connection, still open when every answer came (no FIN sent).
    pub conn: Option<(
        tokio::net::tcp::OwnedReadHalf,
        tokio::net::tcp::OwnedWriteHalf,
    )>,
}

/// Opens a raw WebSocket on `path` with a 4 KiB receive buffer, writes
/// `frames` (many client frames) from another task while reading nothing
/// for `pause`, then reads server frames until `texts` text messages or a
/// Close arrived. The server's answers pile up behind a full socket.
pub async fn flood_then_read(
    port: u16,
    path: &str,
    frames: Vec<u8>,
    pause: std::time::Duration,
    texts: usize,
) -> Flooded {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let mut tcp = sock
        .connect(([127, 0, 0, 1], port).into())
        .await
        .expect("connect");
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    tcp.write_all(req.as_bytes()).await.unwrap();
    let resp = super::http::read_response(&mut tcp).await.expect("101");
    assert_eq!(resp.status, 101, "{}", resp.head);
    let (mut rd, mut wr) = tcp.into_split();
    let writer = tokio::spawn(async move {
        let _ = wr.write_all(&frames).await;
        wr
    });
    tokio::time::sleep(pause).await;
    let mut buf = resp.body;
    let mut out = Flooded {
        texts: Vec::new(),
        close: None,
        conn: None,
    };
    let read = async {
        let mut chunk = vec![0u8; 64 * 1024];
        while out.texts.len() < texts {
            match server_frame_in(&buf) {
                Some((op, payload, used)) => {
                    match op {
                        OP_TEXT => out
                            .texts
                            .push(String::from_utf8_lossy(&payload).into_owned()),
                        OP_CLOSE => {
                            out.close = Some(
                                payload
                                    .get(..2)
                                    .map_or(1005, |c| u16::from_be_bytes([c[0], c[1]])),
                            );
                            return;
                        }
                        _ => {}
                    }
                    buf.drain(..used);
                }
                None => match rd.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                },
            }
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(60), read)
        .await
        .expect("flooded client: reading the answers took over 60 s");
    if out.close.is_none() {
        // Every answer came, so the server read every frame: the writer is done.
        out.conn = Some((rd, writer.await.unwrap()));
    } else {
        writer.abort();
    }
    out
}

/// One unmasked server frame at the start of `buf`: opcode, payload, bytes
/// used. `None` until it is complete.
fn server_frame_in(buf: &[u8]) -> Option<(u8, Vec<u8>, usize)> {
    let (&b0, &b1) = (buf.first()?, buf.get(1)?);
    let (len, at) = match b1 & 0x7f {
        126 => (
            u16::from_be_bytes(buf.get(2..4)?.try_into().ok()?) as usize,
            4,
        ),
        127 => (
            u64::from_be_bytes(buf.get(2..10)?.try_into().ok()?) as usize,
            10,
        ),
        n => (n as usize, 2),
    };
    let payload = buf.get(at..at + len)?.to_vec();
    Some((b0 & 0x0f, payload, at + len))
}
