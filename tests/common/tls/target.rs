//! Echo targets in the test process: plain `ws://` or `wss://` (tokio-rustls
//! with a default rustls `ServerConfig`, which issues TLS 1.3 tickets) on
//! 127.0.0.1. Each records the TLS handshake kind of every accepted
//! connection, so resumption can be observed from the target's side too.

use std::sync::{Arc, Mutex};

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

pub struct EchoTarget {
    pub port: u16,
    tls: bool,
    /// One entry per completed TLS handshake (`None` for plain targets).
    kinds: Arc<Mutex<Vec<Option<rustls::HandshakeKind>>>>,
    /// TLS handshakes that failed (e.g. the relay rejected our certificate).
    failed: Arc<Mutex<Vec<String>>>,
    /// Every text message received, on any connection, in arrival order.
    texts: Texts,
    task: tokio::task::JoinHandle<()>,
}

type Texts = Arc<Mutex<Vec<String>>>;

impl EchoTarget {
    pub async fn plain() -> EchoTarget {
        EchoTarget::start(None).await
    }

    pub async fn tls(config: Arc<rustls::ServerConfig>) -> EchoTarget {
        EchoTarget::start(Some(config)).await
    }

    async fn start(config: Option<Arc<rustls::ServerConfig>>) -> EchoTarget {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind target");
        let port = listener.local_addr().unwrap().port();
        let kinds = Arc::new(Mutex::new(Vec::new()));
        let failed = Arc::new(Mutex::new(Vec::new()));
        let texts: Texts = Arc::default();
        let tls = config.is_some();
        let acceptor = config.map(tokio_rustls::TlsAcceptor::from);
        let (k, f, t) = (kinds.clone(), failed.clone(), texts.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let _ = tcp.set_nodelay(true);
                let (k, f, t, acceptor) = (k.clone(), f.clone(), t.clone(), acceptor.clone());
                tokio::spawn(async move {
                    match acceptor {
                        None => echo_recording(tcp, &t).await,
                        Some(acc) => match acc.accept(tcp).await {
                            Ok(s) => {
                                k.lock().unwrap().push(s.get_ref().1.handshake_kind());
                                echo_recording(s, &t).await;
                            }
                            Err(e) => f.lock().unwrap().push(e.to_string()),
                        },
                    }
                });
            }
        });
        EchoTarget {
            port,
            tls,
            kinds,
            failed,
            texts,
            task,
        }
    }

    /// Text messages received so far, oldest first.
    pub fn texts(&self) -> Vec<String> {
        self.texts.lock().unwrap().clone()
    }

    /// `ws://127.0.0.1:P/` or `wss://localhost:P/`.
    pub fn url(&self) -> String {
        if self.tls {
            format!("wss://localhost:{}/", self.port)
        } else {
            format!("ws://127.0.0.1:{}/", self.port)
        }
    }

    pub fn handshake_kinds(&self) -> Vec<Option<rustls::HandshakeKind>> {
        self.kinds.lock().unwrap().clone()
    }

    pub fn failed_handshakes(&self) -> Vec<String> {
        self.failed.lock().unwrap().clone()
    }
}

impl Drop for EchoTarget {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// WebSocket accept, then echo every data message until Close or EOF.
pub async fn echo_ws<S>(s: S)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    echo_recording(s, &Texts::default()).await
}

/// `echo_ws`, noting each text message in `texts` first.
async fn echo_recording<S>(s: S, texts: &Texts)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let Ok(mut ws) = tokio_tungstenite::accept_async(s).await else {
        return;
    };
    while let Some(Ok(m)) = ws.next().await {
        if let Message::Text(t) = &m {
            texts.lock().unwrap().push(t.to_string());
        }
        match m {
            Message::Text(_) | Message::Binary(_) => {
                let sent = ws.send(m).await;
                if sent.is_err() {
                    return;
                }
            }
            Message::Close(_) => {
                let _ = ws.flush().await;
                return;
            }
            _ => {}
        }
    }
}
