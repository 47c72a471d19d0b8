//! tcpbench: the plain-TCP ends of benches/tunnel/tunnel.sh.
//!
//! Servers (the first stdout line is `listening on 127.0.0.1:PORT`):
//! - `echo --listen ADDR`: writes back whatever it reads, per connection.
//! - `sink --listen ADDR`: per connection, reads an 8-byte big-endian header
//!   (the byte count the client will send, or `u64::MAX` for "until EOF"),
//!   then reads until that many bytes or EOF arrived, writes the received
//!   count back as 8 bytes big-endian, and closes.
//!
//! Clients (`--json` prints one JSON object on stdout):
//! - `ping --connect ADDR -n N --size 64 --warmup W`: closed loop over one
//!   connection, one message in flight; latency of each full echo in µs.
//! - `bulk --connect ADDR --bytes N --streams K [--until-eof]`: K parallel
//!   connections to a sink share N bytes; MB/s (10^6 B/s) of the total from
//!   the first byte written to the last ack read. By default each stream
//!   announces its length, so the sink acks without needing a half-close
//!   (wstunnel turns a FIN into a full close); `--until-eof` instead
//!   half-closes and lets the sink ack on EOF.
//!
//! It owns no tunnel logic and must stay std-only and allocation-free inside
//! the timed loops, so the floor it measures is the kernel's.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::exit;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

const CHUNK: usize = 64 * 1024;
const UNTIL_EOF: u64 = u64::MAX;

fn usage() -> ! {
    eprintln!(
        "usage:\n  tcpbench echo --listen ADDR\n  tcpbench sink --listen ADDR\n  \
         tcpbench ping --connect ADDR [-n N] [--size B] [--warmup W] [--json]\n  \
         tcpbench bulk --connect ADDR [--bytes N] [--streams K] [--until-eof] [--json]"
    );
    exit(2)
}

struct Args {
    listen: String,
    connect: String,
    n: usize,
    size: usize,
    warmup: usize,
    bytes: u64,
    streams: usize,
    until_eof: bool,
    json: bool,
}

fn parse(args: &[String]) -> Args {
    let mut a = Args {
        listen: "127.0.0.1:0".into(),
        connect: String::new(),
        n: 10_000,
        size: 64,
        warmup: 1_000,
        bytes: 256 << 20,
        streams: 1,
        until_eof: false,
        json: false,
    };
    let mut it = args.iter();
    while let Some(k) = it.next() {
        let mut val = || it.next().cloned().unwrap_or_else(|| usage());
        match k.as_str() {
            "--listen" => a.listen = val(),
            "--connect" => a.connect = val(),
            "-n" => a.n = num(&val()),
            "--size" => a.size = num(&val()),
            "--warmup" => a.warmup = num(&val()),
            "--bytes" => a.bytes = num(&val()),
            "--streams" => a.streams = num(&val()),
            "--until-eof" => a.until_eof = true,
            "--json" => a.json = true,
            _ => usage(),
        }
    }
    a
}

fn num<T: std::str::FromStr>(s: &str) -> T {
    s.parse().unwrap_or_else(|_| {
        eprintln!("not a number: {s}");
        exit(2)
    })
}

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let Some(cmd) = argv.first() else { usage() };
    let a = parse(&argv[1..]);
    let r = match cmd.as_str() {
        "echo" => serve(&a.listen, echo_conn),
        "sink" => serve(&a.listen, sink_conn),
        "ping" if !a.connect.is_empty() => ping(&a),
        "bulk" if !a.connect.is_empty() => bulk(&a),
        _ => usage(),
    };
    if let Err(e) = r {
        eprintln!("tcpbench {cmd}: {e}");
        exit(1);
    }
}

fn serve(listen: &str, handler: fn(TcpStream) -> io::Result<()>) -> io::Result<()> {
    let l = TcpListener::bind(listen)?;
    println!("listening on {}", l.local_addr()?);
    io::stdout().flush()?;
    for s in l.incoming() {
        let s = s?;
        s.set_nodelay(true)?;
        thread::spawn(move || {
            if let Err(e) = handler(s) {
                eprintln!("connection: {e}");
            }
        });
    }
    Ok(())
}

fn echo_conn(mut s: TcpStream) -> io::Result<()> {
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = s.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        s.write_all(&buf[..n])?;
    }
}

fn sink_conn(mut s: TcpStream) -> io::Result<()> {
    let mut hdr = [0u8; 8];
    s.read_exact(&mut hdr)?;
    let want = u64::from_be_bytes(hdr);
    let mut buf = vec![0u8; CHUNK];
    let mut got = 0u64;
    while got < want {
        let room = (want - got).min(CHUNK as u64) as usize;
        let n = s.read(&mut buf[..room])?;
        if n == 0 {
            break;
        }
        got += n as u64;
    }
    s.write_all(&got.to_be_bytes())?;
    s.flush()?;
    // Linger until the peer closes, so the ack is never lost to a reset.
    let _ = s.shutdown(Shutdown::Write);
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
    Ok(())
}

fn connect(addr: &str) -> io::Result<TcpStream> {
    let s = TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    Ok(s)
}

fn ping(a: &Args) -> io::Result<()> {
    let mut s = connect(&a.connect)?;
    let msg: Vec<u8> = (0..a.size).map(|i| (i % 251) as u8).collect();
    let mut back = vec![0u8; a.size];
    let mut lat_ns: Vec<u64> = Vec::with_capacity(a.n);
    for i in 0..a.warmup + a.n {
        let t = Instant::now();
        s.write_all(&msg)?;
        s.read_exact(&mut back)?;
        let d = t.elapsed().as_nanos() as u64;
        if back != msg {
            return Err(io::Error::other(format!("echo {i} differs")));
        }
        if i >= a.warmup {
            lat_ns.push(d);
        }
    }
    let _ = s.shutdown(Shutdown::Write);
    lat_ns.sort_unstable();
    let pct = |p: f64| {
        let i = ((lat_ns.len() as f64 * p).ceil() as usize).clamp(1, lat_ns.len()) - 1;
        lat_ns[i] as f64 / 1e3
    };
    let mean = lat_ns.iter().sum::<u64>() as f64 / lat_ns.len() as f64 / 1e3;
    let (p50, p99, min, max) = (pct(0.50), pct(0.99), pct(0.0), pct(1.0));
    if a.json {
        println!(
            "{{\"kind\":\"ping\",\"n\":{},\"size\":{},\"warmup\":{},\"p50_us\":{p50:.2},\
             \"p99_us\":{p99:.2},\"mean_us\":{mean:.2},\"min_us\":{min:.2},\"max_us\":{max:.2}}}",
            lat_ns.len(),
            a.size,
            a.warmup
        );
    } else {
        println!(
            "ping {} x {} B: p50 {p50:.1} µs  p99 {p99:.1} µs  mean {mean:.1} µs",
            lat_ns.len(),
            a.size
        );
    }
    Ok(())
}

/// One bulk stream: waits at the barrier, sends `len` bytes, returns the
/// instant its ack arrived.
fn bulk_stream(addr: &str, len: u64, until_eof: bool, go: &Barrier) -> io::Result<Instant> {
    let mut s = connect(addr)?;
    let buf: Vec<u8> = (0..CHUNK).map(|i| (i % 253) as u8).collect();
    go.wait();
    let hdr = if until_eof { UNTIL_EOF } else { len };
    s.write_all(&hdr.to_be_bytes())?;
    let mut left = len;
    while left > 0 {
        let n = left.min(CHUNK as u64) as usize;
        s.write_all(&buf[..n])?;
        left -= n as u64;
    }
    if until_eof {
        s.shutdown(Shutdown::Write)?;
    }
    let mut ack = [0u8; 8];
    s.read_exact(&mut ack)?;
    let done = Instant::now();
    let got = u64::from_be_bytes(ack);
    if got != len {
        return Err(io::Error::other(format!("sink acked {got} of {len} bytes")));
    }
    Ok(done)
}

fn bulk(a: &Args) -> io::Result<()> {
    let k = a.streams.max(1);
    let per = a.bytes / k as u64;
    let go = Arc::new(Barrier::new(k + 1));
    let handles: Vec<_> = (0..k)
        .map(|_| {
            let (addr, go, eof) = (a.connect.clone(), go.clone(), a.until_eof);
            thread::spawn(move || bulk_stream(&addr, per, eof, &go))
        })
        .collect();
    go.wait();
    let start = Instant::now();
    let mut last = start;
    for h in handles {
        let done = h
            .join()
            .map_err(|_| io::Error::other("stream panicked"))??;
        last = last.max(done);
    }
    let secs = (last - start).as_secs_f64();
    let total = per * k as u64;
    let mbps = total as f64 / secs / 1e6;
    if a.json {
        println!(
            "{{\"kind\":\"bulk\",\"streams\":{k},\"bytes\":{total},\"secs\":{secs:.4},\
             \"mb_per_s\":{mbps:.1},\"until_eof\":{}}}",
            a.until_eof
        );
    } else {
        println!("bulk {k} stream(s), {total} B in {secs:.3} s: {mbps:.1} MB/s");
    }
    Ok(())
}
