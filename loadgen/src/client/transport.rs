//! The byte stream under a client WebSocket: plain TCP or rustls over TCP,
//! behind one type so the framing and measuring code is written once.

use monoio::buf::{IoBuf, IoBufMut, IoVecBuf, IoVecBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent, Split};
use monoio::net::TcpStream;
use monoio::BufResult;
use monoio_rustls::ClientTlsStream;

/// A connected client stream.
pub enum Transport {
    Plain(TcpStream),
    Tls(Box<ClientTlsStream<TcpStream>>),
}

impl Transport {
    pub fn is_tls(&self) -> bool {
        matches!(self, Self::Tls(_))
    }
}

// SAFETY: both variants are `Split` (monoio's TcpStream and monoio-rustls's
// stream declare that their read and write paths are independent); the enum
// never changes variant after construction.
unsafe impl Split for Transport {}

impl AsyncReadRent for Transport {
    async fn read<T: IoBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            Self::Plain(s) => s.read(buf).await,
            Self::Tls(s) => s.read(buf).await,
        }
    }

    async fn readv<T: IoVecBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            Self::Plain(s) => s.readv(buf).await,
            Self::Tls(s) => s.readv(buf).await,
        }
    }
}

impl AsyncWriteRent for Transport {
    async fn write<T: IoBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            Self::Plain(s) => s.write(buf).await,
            Self::Tls(s) => s.write(buf).await,
        }
    }

    async fn writev<T: IoVecBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            Self::Plain(s) => s.writev(buf).await,
            Self::Tls(s) => s.writev(buf).await,
        }
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Self::Plain(s) => s.flush().await,
            Self::Tls(s) => s.flush().await,
        }
    }

    async fn shutdown(&mut self) -> std::io::Result<()> {
        match self {
            Self::Plain(s) => s.shutdown().await,
            Self::Tls(s) => s.shutdown().await,
        }
    }
}
