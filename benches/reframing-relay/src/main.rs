//! The original relay design, for comparison in benches/e2e.sh: accept a
//! WebSocket (tokio-tungstenite), dial the fixed `--target` with
//! tokio-tungstenite, then forward message by message both ways with
//! `StreamExt::forward` (the `futures` combinator; `futures-util` is the
//! crate `futures` re-exports it from). Every message is parsed, unmasked,
//! allocated and re-framed (and re-masked toward the target), the way the
//! original ws-relay-core relayed. No relay auth protocol: the target is fixed.
//!
//! Runs on tokio's multi-thread runtime (the original's `#[tokio::main]`):
//! one worker per CPU in the process's affinity mask.
//! The first line on stdout is `listening on 127.0.0.1:PORT`.

use std::io::Write as _;

use futures_util::StreamExt;
use tokio::net::{TcpListener, TcpStream};

fn usage() -> ! {
    eprintln!("usage: bench-reframing-relay --listen 127.0.0.1:PORT --target ws://127.0.0.1:PORT/");
    std::process::exit(1)
}

async fn serve(stream: TcpStream, target: String) {
    let _ = stream.set_nodelay(true);
    let Ok(client) = tokio_tungstenite::accept_async(stream).await else {
        return;
    };
    let Ok((upstream, _)) =
        tokio_tungstenite::connect_async_with_config(target.as_str(), None, true).await
    else {
        return;
    };
    let (client_tx, client_rx) = client.split();
    let (up_tx, up_rx) = upstream.split();
    // One direction ending (close, error, EOF) ends the session.
    tokio::select! {
        _ = client_rx.forward(up_tx) => {}
        _ = up_rx.forward(client_tx) => {}
    }
}

#[tokio::main]
async fn main() {
    let mut listen = None;
    let mut target = None;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let v = it.next().unwrap_or_else(|| usage());
        match a.as_str() {
            "--listen" => listen = Some(v),
            "--target" => target = Some(v),
            _ => usage(),
        }
    }
    let (Some(listen), Some(target)) = (listen, target) else { usage() };
    let listener = TcpListener::bind(&listen).await.expect("bind");
    println!("listening on {}", listener.local_addr().expect("local_addr"));
    let _ = std::io::stdout().flush();
    loop {
        match listener.accept().await {
            Ok((s, _)) => {
                tokio::spawn(serve(s, target.clone()));
            }
            Err(e) => {
                eprintln!("accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
    }
}
