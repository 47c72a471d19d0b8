//! The floor: a minimal TCP copy forwarder on monoio (io_uring).
//!
//! Accepts TCP on `--listen`, connects to the fixed `--upstream`, and copies
//! bytes both ways with two tasks per connection and one 16 KiB buffer each.
//! No WebSocket awareness: a client speaks WebSocket straight through it.
//! `--threads N` runs N thread-per-core runtimes, each with its own
//! SO_REUSEPORT listener (default 1; pin the process with `taskset`).
//! The first line on stdout is `listening on 127.0.0.1:PORT`.

use std::net::SocketAddr;

use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, Splitable};
use monoio::net::{ListenerOpts, TcpListener, TcpStream};
use std::io::Write as _;

const BUF: usize = 16 * 1024;

struct Args {
    listen: SocketAddr,
    upstream: SocketAddr,
    threads: usize,
}

fn usage() -> ! {
    eprintln!("usage: bench-forwarder --listen 127.0.0.1:PORT --upstream 127.0.0.1:PORT [--threads N]");
    std::process::exit(1)
}

fn parse_args() -> Args {
    let mut listen = None;
    let mut upstream = None;
    let mut threads = 1usize;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let v = it.next().unwrap_or_else(|| usage());
        match a.as_str() {
            "--listen" => listen = v.parse().ok(),
            "--upstream" => upstream = v.parse().ok(),
            "--threads" => threads = v.parse().unwrap_or_else(|_| usage()),
            _ => usage(),
        }
    }
    match (listen, upstream) {
        (Some(listen), Some(upstream)) if threads > 0 => Args { listen, upstream, threads },
        _ => usage(),
    }
}

async fn copy<R: AsyncReadRent, W: AsyncWriteRent>(mut r: R, mut w: W) {
    let mut buf: Vec<u8> = Vec::with_capacity(BUF);
    loop {
        // monoio reads into the Vec's capacity from its start and sets len.
        let (res, b) = r.read(buf).await;
        buf = b;
        match res {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let (res, b) = w.write_all(buf).await;
        buf = b;
        if res.is_err() {
            break;
        }
    }
    let _ = w.shutdown().await;
}

async fn serve(client: TcpStream, upstream: SocketAddr) {
    let Ok(up) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = up.set_nodelay(true);
    let (cr, cw) = client.into_split();
    let (ur, uw) = up.into_split();
    let a = monoio::spawn(copy(cr, uw));
    copy(ur, cw).await;
    a.await;
}

fn run_shard(addr: SocketAddr, reuse_port: bool, upstream: SocketAddr, ready: std::sync::mpsc::Sender<std::io::Result<()>>) {
    let mut rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
        .enable_timer()
        .build()
        .expect("monoio runtime");
    rt.block_on(async move {
        let opts = ListenerOpts::new().reuse_port(reuse_port).backlog(4096);
        let listener = match TcpListener::bind_with_config(addr, &opts) {
            Ok(l) => {
                let _ = ready.send(Ok(()));
                l
            }
            Err(e) => {
                let _ = ready.send(Err(e));
                return;
            }
        };
        loop {
            match listener.accept().await {
                Ok((s, _)) => {
                    monoio::spawn(serve(s, upstream));
                }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    eprintln!("accept: {e}");
                    monoio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
            }
        }
    });
}

fn main() {
    let a = parse_args();
    // Resolve port 0 once so every shard binds the same port.
    let addr = if a.listen.port() == 0 {
        std::net::TcpListener::bind(a.listen)
            .and_then(|l| l.local_addr())
            .expect("bind")
    } else {
        a.listen
    };
    let (tx, rx) = std::sync::mpsc::channel();
    let mut handles = Vec::new();
    for i in 0..a.threads {
        let (upstream, tx, reuse) = (a.upstream, tx.clone(), a.threads > 1);
        handles.push(
            std::thread::Builder::new()
                .name(format!("fwd-{i}"))
                .spawn(move || run_shard(addr, reuse, upstream, tx))
                .expect("thread"),
        );
    }
    for _ in 0..a.threads {
        if let Err(e) = rx.recv().expect("shard start") {
            eprintln!("cannot listen on {addr}: {e}");
            std::process::exit(1);
        }
    }
    println!("listening on {addr}");
    let _ = std::io::stdout().flush();
    for h in handles {
        let _ = h.join();
    }
}
