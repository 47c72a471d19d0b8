//! An independent cross-check of loadgen's ping against a few lines of
//! tokio-tungstenite: both measure the p50 round trip of 64-byte binary
//! messages against the same echo server. Timing on a shared machine is
//! noisy, so only gross disagreement (more than 5×) fails; both are printed.

mod common;

use std::io::Write as _;
use std::time::{Duration, Instant};

use common::{f64_at, run, Server};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

fn tungstenite_p50(url: &str, warmup: usize, count: usize) -> f64 {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (mut ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("connect");
        let payload = vec![0x5Au8; 64];
        let mut samples = Vec::with_capacity(count);
        for i in 0..warmup + count {
            let t0 = Instant::now();
            ws.send(Message::Binary(payload.clone().into()))
                .await
                .expect("send");
            let echo = tokio::time::timeout(Duration::from_secs(5), ws.next())
                .await
                .expect("echo within 5 s")
                .expect("stream open")
                .expect("no error");
            let rtt = t0.elapsed();
            assert_eq!(echo.into_data().as_ref(), payload.as_slice());
            if i >= warmup {
                samples.push(rtt.as_secs_f64() * 1e6);
            }
        }
        let _ = ws.close(None).await;
        samples.sort_by(|a, b| a.total_cmp(b));
        samples[samples.len() / 2]
    })
}

#[test]
fn loadgen_ping_agrees_with_tokio_tungstenite() {
    let echo = Server::echo(&[]);
    let independent = tungstenite_p50(&echo.addr, 100, 1000);
    let f = run(
        &["ping", &echo.addr, "-n", "1000", "--json"],
        Duration::from_secs(60),
    );
    assert_eq!(f.code, Some(0), "{}", f.stderr);
    let ours = f64_at(&f.json()["runs"][0], &["latency_us", "p50"]);
    // Uncaptured, so both numbers show in every `cargo test` run.
    let _ = writeln!(
        std::io::stderr(),
        "cross-check ping p50: loadgen {ours:.1} µs, tokio-tungstenite {independent:.1} µs"
    );
    let ratio = ours / independent;
    assert!(
        (0.2..=5.0).contains(&ratio),
        "loadgen {ours:.1} µs vs tokio-tungstenite {independent:.1} µs (ratio {ratio:.2})"
    );
}
