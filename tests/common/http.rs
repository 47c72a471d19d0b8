//! Minimal raw HTTP/1.1 over TCP: the relay's front door must be checked with
//! bytes we control (oversized heads, garbage, half-open connections).

use std::io;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub head: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn body_str(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON; panics with the raw response when it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "response body is not JSON ({e}):\n{}\n{}",
                self.head,
                self.body_str()
            )
        })
    }
}

pub fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

/// Parses a response head (`HTTP/1.1 NNN ...` + headers, up to the blank line).
pub fn parse_head(head: &[u8]) -> io::Result<(u16, Vec<(String, String)>)> {
    let text = String::from_utf8_lossy(head);
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    let status = parts.next().and_then(|s| s.parse::<u16>().ok());
    let Some(status) = status.filter(|_| version.starts_with("HTTP/1.")) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("not an HTTP response: {status_line:?}"),
        ));
    };
    let headers = lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    Ok((status, headers))
}

/// Reads one response. The body is read by Content-Length, else (except for
/// 1xx/204/304) until EOF, capped at 3 s. Bytes read past it are dropped:
/// for pipelined answers use [`read_response_from`].
pub async fn read_response(stream: &mut TcpStream) -> io::Result<HttpResponse> {
    read_response_from(stream, &mut Vec::new()).await
}

/// [`read_response`] that starts from `carry` (bytes an earlier call read
/// past its response) and leaves what it reads past this one there: the
/// way to read pipelined answers, which may arrive in one segment.
pub async fn read_response_from(
    stream: &mut TcpStream,
    carry: &mut Vec<u8>,
) -> io::Result<HttpResponse> {
    let mut buf = std::mem::take(carry);
    let mut chunk = [0u8; 4096];
    let end = loop {
        if let Some(end) = find_head_end(&buf) {
            break end;
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "connection closed before a full response head ({} bytes: {:?})",
                    buf.len(),
                    String::from_utf8_lossy(&buf)
                ),
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let (status, headers) = parse_head(&buf[..end])?;
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut body = buf[end..].to_vec();
    let content_length = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse::<usize>().ok());
    match content_length {
        Some(len) => {
            while body.len() < len {
                let n = stream.read(&mut chunk).await?;
                if n == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..n]);
            }
            if body.len() > len {
                *carry = body.split_off(len);
            }
        }
        None if status < 200 || status == 204 || status == 304 => {}
        None => {
            let _ = tokio::time::timeout(Duration::from_secs(3), async {
                loop {
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => body.extend_from_slice(&chunk[..n]),
                    }
                }
            })
            .await;
        }
    }
    Ok(HttpResponse {
        status,
        head,
        headers,
        body,
    })
}

/// Sends `raw` on a fresh connection and reads one response; returns the
/// stream too so callers can check whether the relay closed it.
pub async fn request(port: u16, raw: &[u8]) -> io::Result<(HttpResponse, TcpStream)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
    stream.write_all(raw).await?;
    let resp = read_response(&mut stream).await?;
    Ok((resp, stream))
}

/// `GET path` with `Connection: close`.
pub async fn get(port: u16, path: &str) -> io::Result<HttpResponse> {
    let raw = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    Ok(request(port, raw.as_bytes()).await?.0)
}

/// True when the peer closes (EOF or reset) within `within`; bytes that
/// arrive meanwhile are discarded.
pub async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut chunk = [0u8; 4096];
    tokio::time::timeout(within, async {
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
pub fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
