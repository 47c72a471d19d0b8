//! The delay proxy: a TCP forwarder that holds every chunk for a fixed
//! one-way delay in each direction, so a round trip through it gains twice
//! the delay. It emulates a distant VPS on a kernel without `tc netem`.
//! Half-closes are forwarded once the delayed data before them is written.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRent, Splitable};
use monoio::net::TcpStream;

use super::delay::{self, DelayLine};
use super::{Running, ServerError};
use crate::clock::{dur_ns, now_ns};
use crate::rt::ThreadPlan;

/// Bytes held per direction before the reader waits.
const LINE_LIMIT: usize = 16 * 1024 * 1024;
const CHUNK: usize = 64 * 1024;

/// Starts the proxy: connections to `listen` are forwarded to `upstream`.
pub fn start(
    listen: SocketAddr,
    upstream: SocketAddr,
    one_way: Duration,
    plan: &ThreadPlan,
    exit_after: Option<Duration>,
) -> Result<Running, ServerError> {
    let delay_ns = Arc::new(dur_ns(one_way));
    super::serve(
        listen,
        plan,
        "delay-proxy",
        exit_after,
        move |client: TcpStream| {
            let delay_ns = *delay_ns;
            async move {
                let Ok(up) = TcpStream::connect(upstream).await else {
                    return;
                };
                let _ = up.set_nodelay(true);
                forward(client, up, delay_ns).await;
            }
        },
    )
}

async fn forward(client: TcpStream, upstream: TcpStream, delay_ns: u64) {
    let (mut cr, mut cw) = client.into_split();
    let (mut ur, mut uw) = upstream.into_split();
    let to_up = DelayLine::new(LINE_LIMIT);
    let to_client = DelayLine::new(LINE_LIMIT);
    monoio::join!(
        pump(&mut cr, &to_up, delay_ns),
        drain_then_shutdown(&to_up, &mut uw),
        pump(&mut ur, &to_client, delay_ns),
        drain_then_shutdown(&to_client, &mut cw),
    );
}

/// Reads chunks and queues each one `delay_ns` after it arrived. Ends at
/// EOF or on an error, closing the line.
async fn pump<R: AsyncReadRent>(rd: &mut R, line: &DelayLine, delay_ns: u64) {
    // Bounded by the peer: ends at EOF, an error, or when the consumer quits.
    loop {
        let mut buf = line.buffer();
        if buf.capacity() < CHUNK {
            buf.reserve(CHUNK);
        }
        let cap = buf.capacity();
        let (res, slice) = rd.read(buf.slice_mut(0..cap)).await;
        let buf = slice.into_inner();
        match res {
            Ok(n) if n > 0 => line.push(now_ns() + delay_ns, buf).await,
            _ => {
                line.recycle(buf);
                line.close();
                return;
            }
        }
    }
}

async fn drain_then_shutdown<W: AsyncWriteRent>(line: &DelayLine, wr: &mut W) {
    if delay::drain(line, wr).await.is_ok() {
        let _ = wr.shutdown().await;
    }
}
