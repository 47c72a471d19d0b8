//! The forward tunnel client over the wire: the real binary as `tunnel`
//! (listening forwards and `--stdio`) in front of the real binary as relay,
//! carrying real TCP services, directly, over `wss://`, and through a real
//! `tinyproxy` (with and without Basic auth, and refusing with 407).

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::tcp::{
    echo_through, free_port, start_tunnel, tcp_echo, wait_exit, wait_listening, Proc,
};
use common::*;

fn write_client_config(dir: &Path, client: &str, forwards: &[(u16, String)]) -> PathBuf {
    let mut text = format!("[client]\n{client}\n");
    for (port, target) in forwards {
        text.push_str(&format!(
            "\n[[forwards]]\nlisten = \"127.0.0.1:{port}\"\ntarget = {target:?}\n"
        ));
    }
    let path = dir.join("client.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// A tunnel client forwarding a free local port to the echo service.
async fn forwarding_client(relay_port: u16, echo: u16) -> (tempfile::TempDir, u16, Proc) {
    let dir = tempfile::tempdir().unwrap();
    let listen = free_port();
    let cfg = write_client_config(
        dir.path(),
        &format!("server = \"ws://127.0.0.1:{relay_port}/\"\ntoken = {ALICE_TOKEN:?}"),
        &[(listen, format!("tcp://127.0.0.1:{echo}"))],
    );
    let p = start_tunnel(dir.path(), &cfg, &[]);
    wait_listening(listen, &p).await;
    (dir, listen, p)
}

fn relay_user(echo: u16) -> UserSpec {
    UserSpec::alice().allowed(&[&format!("tcp://127.0.0.1:{echo}")])
}

#[tokio::test]
async fn forwards_carry_many_concurrent_connections() {
    let echo = tcp_echo().await;
    let relay = Relay::start(RelayConfig::default().with_users(vec![relay_user(echo)])).await;
    let (_dir, listen, p) = forwarding_client(relay.port, echo).await;
    echo_through(listen, 8 << 20, 1).await;
    let mut all = Vec::new();
    for i in 0..50u8 {
        all.push(tokio::spawn(echo_through(
            listen,
            200_000 + i as usize * 997,
            i,
        )));
    }
    for t in all {
        t.await.unwrap();
    }
    let deadline = Instant::now() + STEP;
    while p.log().matches("tunnel end").count() < 51 {
        assert!(Instant::now() < deadline, "{}", p.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!p.log().contains(ALICE_TOKEN), "token logged");
}

#[tokio::test]
async fn stdio_mode_works_as_a_proxy_command() {
    let echo = tcp_echo().await;
    let relay = Relay::start(RelayConfig::default().with_users(vec![relay_user(echo)])).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_client_config(
        dir.path(),
        &format!(
            "server = \"ws://127.0.0.1:{}/\"\ntoken = {ALICE_TOKEN:?}",
            relay.port
        ),
        &[],
    );
    let target = format!("tcp://127.0.0.1:{echo}");
    let mut p = start_tunnel(dir.path(), &cfg, &["--stdio", &target]);
    let data = pattern(300_000, 7);
    let mut stdin = p.child.stdin.take().unwrap();
    let mut stdout = p.child.stdout.take().unwrap();
    let to_send = data.clone();
    let writer = std::thread::spawn(move || {
        stdin.write_all(&to_send).unwrap();
        // EOF on stdin, as when ssh exits.
    });
    let got = tokio::task::spawn_blocking(move || {
        let mut got = vec![0u8; 300_000];
        stdout.read_exact(&mut got).map(|_| got)
    })
    .await
    .unwrap();
    writer.join().unwrap();
    assert!(got.expect("read stdout") == data, "stdio bytes differ");
    let status = within(STEP, "tunnel exits", async {
        loop {
            if let Some(s) = p.child.try_wait().unwrap() {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(status.success(), "{}", p.log());
}

#[tokio::test]
async fn refusals_are_clear_errors() {
    let echo = tcp_echo().await;
    let relay = Relay::start(RelayConfig::default().with_users(vec![relay_user(echo)])).await;
    let dir = tempfile::tempdir().unwrap();
    for (token, target, want) in [
        (
            "wrong-token",
            format!("tcp://127.0.0.1:{echo}"),
            "HTTP 401 auth_failed",
        ),
        (
            ALICE_TOKEN,
            "tcp://127.0.0.1:1".to_string(),
            "HTTP 403 target_forbidden",
        ),
    ] {
        let cfg = write_client_config(
            dir.path(),
            &format!(
                "server = \"ws://127.0.0.1:{}/\"\ntoken = {token:?}",
                relay.port
            ),
            &[],
        );
        let p = start_tunnel(dir.path(), &cfg, &["--stdio", &target]);
        let out = wait_exit(p).await;
        assert!(out.contains(want), "wanted {want:?}:\n{out}");
    }
}

/// A real tinyproxy on a free port, optionally with Basic auth.
fn start_tinyproxy(dir: &Path, auth: Option<(&str, &str)>) -> Option<(Proc, u16)> {
    let bin = ["/usr/bin/tinyproxy", "/usr/sbin/tinyproxy"]
        .into_iter()
        .find(|p| Path::new(p).exists());
    let Some(bin) = bin else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI must run every test, but tinyproxy is not installed"
        );
        python::skip("tinyproxy not installed (apt-get install tinyproxy)");
        return None;
    };
    let port = free_port();
    let mut conf = format!(
        "Port {port}\nListen 127.0.0.1\nTimeout 60\nMaxClients 100\nAllow 127.0.0.1\nLogLevel Info\nLogFile \"{}\"\n",
        dir.join(format!("tinyproxy-{port}.log")).display()
    );
    if let Some((u, p)) = auth {
        conf.push_str(&format!("BasicAuth {u} {p}\n"));
    }
    let path = dir.join(format!("tinyproxy-{port}.conf"));
    std::fs::write(&path, conf).unwrap();
    let log = dir.join(format!("tinyproxy-{port}.out"));
    let child = Command::new(bin)
        .arg("-d")
        .arg("-c")
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("start tinyproxy");
    let p = Proc { child, log };
    let deadline = Instant::now() + STEP;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "tinyproxy did not start: {}",
            p.log()
        );
        std::thread::sleep(Duration::from_millis(30));
    }
    Some((p, port))
}

#[tokio::test]
async fn through_a_real_connect_proxy_with_and_without_auth() {
    let echo = tcp_echo().await;
    let relay = Relay::start(RelayConfig::default().with_users(vec![relay_user(echo)])).await;
    let dir = tempfile::tempdir().unwrap();
    let Some((_open, open_port)) = start_tinyproxy(dir.path(), None) else {
        return;
    };
    let Some((_authed, auth_port)) = start_tinyproxy(dir.path(), Some(("tun", "s3cr3t"))) else {
        return;
    };
    let server = format!(
        "server = \"ws://127.0.0.1:{}/\"\ntoken = {ALICE_TOKEN:?}",
        relay.port
    );
    for (proxy, n) in [
        (format!("http://127.0.0.1:{open_port}"), 1u8),
        (format!("http://tun:s3cr3t@127.0.0.1:{auth_port}"), 2),
    ] {
        let listen = free_port();
        let cfg = write_client_config(
            dir.path(),
            &format!("{server}\nhttp_proxy = {proxy:?}"),
            &[(listen, format!("tcp://127.0.0.1:{echo}"))],
        );
        let p = start_tunnel(dir.path(), &cfg, &[]);
        wait_listening(listen, &p).await;
        echo_through(listen, 2 << 20, n).await;
        assert!(!p.log().contains("s3cr3t"), "proxy password logged");
    }
    for proxy in [
        format!("http://127.0.0.1:{auth_port}"),
        format!("http://tun:wrong@127.0.0.1:{auth_port}"),
    ] {
        let cfg = write_client_config(
            dir.path(),
            &format!("{server}\nhttp_proxy = {proxy:?}"),
            &[],
        );
        let p = start_tunnel(
            dir.path(),
            &cfg,
            &["--stdio", &format!("tcp://127.0.0.1:{echo}")],
        );
        let out = wait_exit(p).await;
        assert!(out.contains("407 Proxy Authentication Required"), "{out}");
        assert_eq!(
            out.matches("HTTP proxy refused").count(),
            1,
            "said once: {out}"
        );
    }
}

#[tokio::test]
async fn over_wss_with_a_ca_file_or_skip_verify() {
    use common::tls::{Ca, RelaySpec, TlsRelay, LOCAL_NAMES, TOKEN};
    let echo = tcp_echo().await;
    let ca = Ca::new("tunnel test CA");
    let leaf = ca.leaf(LOCAL_NAMES);
    let relay = TlsRelay::start(
        RelaySpec::tls_leaf(&leaf)
            .user_line(&format!("allowed_targets = [\"tcp://127.0.0.1:{echo}\"]")),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let ca_path = dir.path().join("ca.pem");
    std::fs::write(&ca_path, &ca.pem).unwrap();
    let server = format!(
        "server = \"wss://localhost:{}/\"\ntoken = {TOKEN:?}",
        relay.port
    );
    for (extra, n) in [
        (
            format!("ca_cert_path = {:?}", ca_path.display().to_string()),
            1u8,
        ),
        ("skip_verify = true".to_string(), 2),
    ] {
        let listen = free_port();
        let cfg = write_client_config(
            dir.path(),
            &format!("{server}\n{extra}"),
            &[(listen, format!("tcp://127.0.0.1:{echo}"))],
        );
        let p = start_tunnel(dir.path(), &cfg, &[]);
        wait_listening(listen, &p).await;
        echo_through(listen, 4 << 20, n).await;
    }
    // Without the CA the certificate does not verify: a clear TLS error.
    let cfg = write_client_config(dir.path(), &server, &[]);
    let p = start_tunnel(
        dir.path(),
        &cfg,
        &["--stdio", &format!("tcp://127.0.0.1:{echo}")],
    );
    let out = wait_exit(p).await;
    assert!(out.contains("TLS handshake with localhost failed"), "{out}");
}

#[tokio::test]
async fn forwards_recover_after_a_relay_crash() {
    let echo = tcp_echo().await;
    let mut relay = Relay::start(RelayConfig::default().with_users(vec![relay_user(echo)])).await;
    let (_dir, listen, p) = forwarding_client(relay.port, echo).await;
    echo_through(listen, 1 << 20, 1).await;
    // While the relay is down, a new local connection waits out the backoff
    // instead of failing; once the relay is back it is carried.
    relay.kill_hard();
    let pending = tokio::spawn(echo_through(listen, 1 << 20, 2));
    tokio::time::sleep(Duration::from_millis(300)).await;
    relay.crash_and_restart().await;
    pending.await.unwrap();
    echo_through(listen, 1 << 20, 3).await;
    assert!(p.log().contains("tunnel attempt failed"), "{}", p.log());
}
