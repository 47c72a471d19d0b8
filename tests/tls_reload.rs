//! Certificate reload over the wire: `reload` re-reads `tls_cert`/`tls_key`;
//! a session open across the reload keeps echoing; new connections see the
//! new certificate (DER compared client-side, fingerprint in the log); a bad
//! certificate (garbage PEM), a key that does not match, or a missing key
//! file makes `reload` exit 1 naming the key and file, and the old
//! certificate keeps being served (and a later good reload still works);
//! `target_ca_file` is re-read too.

mod common;

use std::sync::Arc;

use common::tls::*;
use tokio_tungstenite::tungstenite::Message;

struct Fixture {
    ca: Ca,
    relay: TlsRelay,
    target: EchoTarget,
    old: Leaf,
}

async fn fixture() -> Fixture {
    let ca = Ca::new("reload CA");
    let old = ca.leaf(LOCAL_NAMES);
    let relay = TlsRelay::start(RelaySpec::tls_leaf(&old).workers(2)).await;
    let target = EchoTarget::plain().await;
    Fixture {
        ca,
        relay,
        target,
        old,
    }
}

impl Fixture {
    /// A fresh client config each time: no stored session, so the server's
    /// current certificate is what the handshake shows.
    fn fresh_client(&self) -> Arc<rustls::ClientConfig> {
        client_config(&[&self.ca.der])
    }

    /// Opens a relayed session; returns it and the leaf the relay presented.
    async fn session(&self) -> (Ws, rustls::pki_types::CertificateDer<'static>) {
        let s = tls(self.relay.port, &self.fresh_client(), "localhost").await;
        let leaf = peer_leaf(&s);
        let ws = first_message(
            Box::new(s) as BoxIo,
            self.relay.port,
            TOKEN,
            &self.target.url(),
        )
        .await;
        (ws, leaf)
    }

    /// Several new connections (spread over both shards) all present `want`.
    async fn expect_serving(&self, want: &Leaf, what: &str) {
        for i in 0..6 {
            let (mut ws, leaf) = self.session().await;
            assert!(
                leaf == want.der,
                "{what}: new connection {i} got certificate sha256={} instead of sha256={}",
                fingerprint(&leaf),
                fingerprint(&want.der)
            );
            echo(&mut ws, Message::text(format!("{what} {i}"))).await;
            close(ws).await;
        }
    }

    fn install(&self, leaf: &Leaf) {
        self.relay.write("cert.pem", &leaf.cert_pem);
        self.relay.write("key.pem", &leaf.key_pem);
    }

    async fn reload_ok(&self) {
        let out = self.relay.reload().await;
        assert_eq!(out.code, Some(0), "reload failed: {}", out.all());
        assert!(
            out.stdout.contains("reloaded: 1 users"),
            "reload output: {}",
            out.all()
        );
    }

    /// A reload that must fail; returns its output.
    async fn reload_fails(&self) -> CliOutput {
        let out = self.relay.reload().await;
        assert_eq!(out.code, Some(1), "reload must fail: {}", out.all());
        out
    }
}

/// The error must name the `[server]` key and the offending file.
fn assert_names(out: &CliOutput, key: &str, file: &str) {
    let all = out.all();
    assert!(
        all.contains(key),
        "the reload error must name `{key}`: {all}"
    );
    assert!(
        all.contains(file),
        "the reload error must name the file {file}: {all}"
    );
}

#[tokio::test]
async fn reload_swaps_certificate_and_open_session_survives() {
    let f = fixture().await;
    let (mut open, leaf) = f.session().await;
    assert!(leaf == f.old.der, "initial certificate");
    echo(&mut open, Message::text("before reload")).await;

    let new = f.ca.leaf(LOCAL_NAMES);
    f.install(&new);
    f.reload_ok().await;

    echo(&mut open, Message::text("across the reload")).await;
    echo(&mut open, Message::binary(vec![0x5a; 1 << 20])).await;
    f.expect_serving(&new, "after reload").await;
    echo(&mut open, Message::text("still open after new sessions")).await;
    close(open).await;

    let fp = fingerprint(&new.der);
    f.relay
        .wait_for_log("the new certificate's fingerprint", STEP, |l| {
            l.to_ascii_uppercase().contains(&fp)
        })
        .await;
    let ends = f.relay.wait_session_ends(7).await;
    assert!(ends
        .iter()
        .all(|l| field(l, "client_tls").is_some_and(|k| k != "none")));
}

#[tokio::test]
async fn reload_with_garbage_certificate_keeps_the_old_one() {
    let f = fixture().await;
    let (mut open, _) = f.session().await;
    for garbage in [GARBAGE_CERT_PEM, "this is not PEM\n"] {
        f.relay.write("cert.pem", garbage);
        f.reload_fails().await;
        echo(&mut open, Message::text("after the failed reload")).await;
        f.expect_serving(&f.old, "after a failed reload").await;
    }
    // A good reload afterwards still works.
    let new = f.ca.leaf(LOCAL_NAMES);
    f.install(&new);
    f.reload_ok().await;
    f.expect_serving(&new, "after the good reload").await;
    echo(&mut open, Message::text("survived everything")).await;
    close(open).await;
}

/// A PEM block whose content is not a certificate.
const GARBAGE_CERT_PEM: &str =
    "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n";

#[tokio::test]
async fn garbage_certificate_reload_error_names_key_and_file() {
    let f = fixture().await;
    f.relay.write("cert.pem", "this is not PEM\n");
    assert_names(&f.reload_fails().await, "tls_cert", "cert.pem");
    f.relay.write("cert.pem", GARBAGE_CERT_PEM);
    assert_names(&f.reload_fails().await, "tls_cert", "cert.pem");
}

#[tokio::test]
async fn garbage_key_reload_error_names_key_and_file() {
    let f = fixture().await;
    f.relay.write("key.pem", "this is not PEM\n");
    assert_names(&f.reload_fails().await, "tls_key", "key.pem");
    f.relay.write("key.pem", GARBAGE_KEY_PEM);
    assert_names(&f.reload_fails().await, "tls_key", "key.pem");
}

/// A PEM block labelled as a PKCS#8 key whose content is not one.
const GARBAGE_KEY_PEM: &str = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";

#[tokio::test]
async fn reload_with_mismatched_key_keeps_the_old_one() {
    let f = fixture().await;
    let other = f.ca.leaf(LOCAL_NAMES);
    // The new certificate with the old key: not a usable identity.
    f.relay.write("cert.pem", &other.cert_pem);
    let out = f.reload_fails().await;
    assert!(
        out.all().contains("tls_"),
        "the error should name the TLS keys: {}",
        out.all()
    );
    f.expect_serving(&f.old, "after a mismatched-key reload")
        .await;
}

#[tokio::test]
async fn reload_with_missing_key_file_keeps_the_old_one() {
    let f = fixture().await;
    std::fs::remove_file(f.relay.path("key.pem")).expect("remove key");
    assert_names(&f.reload_fails().await, "tls_key", "key.pem");
    f.expect_serving(&f.old, "after a missing-key reload").await;
}

#[tokio::test]
async fn reload_with_garbage_key_keeps_the_old_one() {
    let f = fixture().await;
    f.relay.write("key.pem", GARBAGE_KEY_PEM);
    f.reload_fails().await;
    f.expect_serving(&f.old, "after a garbage-key reload").await;
}

/// `target_ca_file` is re-read on reload: a target signed by a CA added to
/// the file becomes reachable without a restart.
#[tokio::test]
async fn reload_rereads_target_ca_file() {
    let old_ca = Ca::new("old target CA");
    let new_ca = Ca::new("new target CA");
    let target = EchoTarget::tls(new_ca.leaf(LOCAL_NAMES).server_config(&[])).await;
    let relay = TlsRelay::start(RelaySpec::plain().target_ca(&old_ca.pem)).await;

    let (io, seen) = tap(tcp(relay.port).await);
    let mut ws = try_upgrade(io, relay.port, &[]).await.expect("upgrade");
    let auth = serde_json::json!({ "token": TOKEN, "target": target.url() }).to_string();
    send(&mut ws, Message::text(auth)).await;
    expect_error_close_raw(&mut ws, &seen, "target_handshake_failed", 1014).await;

    relay.write("target-ca.pem", &format!("{}{}", old_ca.pem, new_ca.pem));
    let out = relay.reload().await;
    assert_eq!(out.code, Some(0), "reload: {}", out.all());
    // Both shards must have the new trust: try several connections.
    for i in 0..6 {
        let mut ws = first_message(tcp(relay.port).await, relay.port, TOKEN, &target.url()).await;
        echo(&mut ws, Message::text(format!("trusted after reload {i}"))).await;
        close(ws).await;
    }
}
