//! JWT connection tokens over the wire (docs/hub.md "JWT"): `sub` is the
//! user; an expired token, one signed with the wrong key and `alg: none`
//! are refused at connect with 401; a connection whose token expires is
//! closed with 4001 unless it refreshes first; ES256 keys from a PEM file
//! and from a JWKS file that a reload re-reads; RS256 with an OpenSSL key.
//! Tokens and secrets never reach the log.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use common::hub::*;
use common::*;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

const SECRET: &str = "hs256-test-secret-of-at-least-32-bytes";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn hs256(claims: serde_json::Value, secret: &str) -> String {
    encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

fn jwt_config(lines: &[&str]) -> RelayConfig {
    let mut cfg = hub_config(&[]);
    cfg.extra_toml.push("[hub.jwt]".into());
    cfg.extra_toml.extend(lines.iter().map(|s| s.to_string()));
    cfg
}

fn hs_config(extra: &[&str]) -> RelayConfig {
    let mut lines = vec![
        "algorithm = \"HS256\"".to_string(),
        format!("secret = {SECRET:?}"),
    ];
    lines.extend(extra.iter().map(|s| s.to_string()));
    jwt_config(&lines.iter().map(String::as_str).collect::<Vec<_>>())
}

/// The upgrade's refusal: status and error code.
async fn refused(port: u16, query: &str) -> (u16, String) {
    let r = common::http::request(
        port,
        format!(
            "GET /ws?{query} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap()
    .0;
    let code = r.json()["code"].as_str().unwrap_or_default().to_string();
    (r.status, code)
}

#[tokio::test]
async fn hs256_tokens_name_the_user_and_bad_ones_get_401() {
    let relay = Relay::start(hs_config(&[])).await;
    let good = hs256(json!({"sub": "alice", "exp": now() + 60}), SECRET);
    let mut ws = hub_client(relay.port, Some(&good)).await;
    let r = push_once(
        relay.port,
        &json!({"event_name": "e", "subject": 1, "token": "alice"}),
    )
    .await;
    assert_delivered(&r, 1);
    assert_push(&next_json(&mut ws).await, "e", &json!(1), &json!("alice"));

    let b64 = |x: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(x);
    let none = format!(
        "{}.{}.",
        b64(r#"{"alg":"none","typ":"JWT"}"#),
        b64(r#"{"sub":"alice"}"#)
    );
    for (what, token, code) in [
        (
            "wrong key",
            hs256(
                json!({"sub": "alice"}),
                "some-other-secret-of-32-bytes-or-more",
            ),
            "token_invalid",
        ),
        (
            "expired",
            hs256(json!({"sub": "alice", "exp": now() - 30}), SECRET),
            "token_expired",
        ),
        ("alg none", none, "token_invalid"),
        (
            "not yet valid",
            hs256(json!({"sub": "alice", "nbf": now() + 60}), SECRET),
            "token_invalid",
        ),
        (
            "no sub",
            hs256(json!({"exp": now() + 60}), SECRET),
            "token_invalid",
        ),
    ] {
        let got = refused(relay.port, &format!("token={token}")).await;
        assert_eq!(got, (401, code.to_string()), "{what}");
    }
    assert_eq!(
        refused(relay.port, "").await,
        (401, "token_required".into())
    );
    let log = relay.log();
    assert!(
        !log.contains(SECRET) && !log.contains(&good),
        "a token or the secret was logged"
    );
}

#[tokio::test]
async fn anonymous_clients_get_broadcasts_when_allowed() {
    let relay = Relay::start(hs_config(&["allow_anonymous = true"])).await;
    let mut anon = hub_client(relay.port, None).await;
    let r = push_once(relay.port, &json!({"event_name": "all", "subject": 0})).await;
    assert_delivered(&r, 1);
    assert_eq!(next_json(&mut anon).await["event"], "all");
    // A plain (non-JWT) token in an identify is refused; the connection stays.
    send(
        &mut anon,
        Message::text(json!({"event": "identify", "data": {"token": 5}}).to_string()),
    )
    .await;
    assert_eq!(next_json(&mut anon).await["event"], "error");
}

#[tokio::test]
async fn a_reload_applies_allow_anonymous_with_the_keys() {
    let mut relay = Relay::start(hs_config(&[])).await;
    assert_eq!(
        refused(relay.port, "").await,
        (401, "token_required".into())
    );
    relay.write_config(hs_config(&["allow_anonymous = true"]));
    relay.signal(libc::SIGHUP);
    relay
        .wait_for_log("reload", STEP, |l| l.contains("configuration reloaded"))
        .await;
    let mut anon = hub_client(relay.port, None).await;
    let r = push_once(relay.port, &json!({"event_name": "all", "subject": 0})).await;
    assert_delivered(&r, 1);
    assert_eq!(next_json(&mut anon).await["event"], "all");
}

#[tokio::test]
async fn an_expiring_token_closes_with_4001_unless_refreshed() {
    let relay = Relay::start(hs_config(&[])).await;
    let short = hs256(json!({"sub": "bob", "exp": now() + 2}), SECRET);
    let mut lapses = hub_client(relay.port, Some(&short)).await;
    let mut refreshes = hub_client(relay.port, Some(&short)).await;
    let fresh = hs256(json!({"sub": "bob", "exp": now() + 60}), SECRET);
    let refresh = json!({"event": "refresh", "data": {"token": fresh}});
    send(&mut refreshes, Message::text(refresh.to_string())).await;
    fence(&mut refreshes).await;
    let reason = expect_close(&mut lapses, 4001, Duration::from_secs(5)).await;
    assert_eq!(reason, "token expired");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let r = push_once(
        relay.port,
        &json!({"event_name": "e", "subject": 2, "token": "bob"}),
    )
    .await;
    assert_delivered(&r, 1);
    assert_push(
        &next_json(&mut refreshes).await,
        "e",
        &json!(2),
        &json!("bob"),
    );
    // A refresh with a bad token is refused and changes nothing.
    let bad = json!({"event": "refresh", "data": {"token": hs256(json!({"sub": "bob"}), "x-wrong-secret-x-wrong-secret-x-wrong")}});
    send(&mut refreshes, Message::text(bad.to_string())).await;
    let m = next_json(&mut refreshes).await;
    assert_eq!(
        (m["event"].as_str(), m["data"]["msg"].as_str()),
        (Some("error"), Some("token signature does not verify"))
    );
}

/// An ES256 key: (private PKCS#8 PEM, public PEM, JWK with `kid`).
fn es256_key(kid: &str) -> (String, String, serde_json::Value) {
    let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let raw = kp.public_key_raw(); // 0x04 || x || y
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let jwk = json!({"kty": "EC", "crv": "P-256", "x": b64(&raw[1..33]), "y": b64(&raw[33..65]),
                     "kid": kid, "alg": "ES256", "use": "sig"});
    (kp.serialize_pem(), kp.public_key_pem(), jwk)
}

fn es256(claims: serde_json::Value, private_pem: &str, kid: Option<&str>) -> String {
    let mut h = Header::new(Algorithm::ES256);
    h.kid = kid.map(str::to_string);
    encode(
        &h,
        &claims,
        &EncodingKey::from_ec_pem(private_pem.as_bytes()).unwrap(),
    )
    .unwrap()
}

#[tokio::test]
async fn es256_with_a_pem_key_and_a_jwks_that_reload_rereads() {
    let dir = tempfile::tempdir().unwrap();
    let (priv1, pub1, jwk1) = es256_key("k1");
    let pem = dir.path().join("pub.pem");
    std::fs::write(&pem, pub1).unwrap();
    let relay = Relay::start(jwt_config(&[
        "algorithm = \"ES256\"",
        &format!("public_key_file = {pem:?}"),
    ]))
    .await;
    let t = es256(json!({"sub": "carol", "exp": now() + 60}), &priv1, None);
    let _ws = hub_client(relay.port, Some(&t)).await;
    let hs = hs256(json!({"sub": "carol"}), SECRET);
    assert_eq!(
        refused(relay.port, &format!("token={hs}")).await,
        (401, "token_invalid".into()),
        "HS256 refused by an ES256 hub"
    );
    drop(relay);

    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, json!({"keys": [jwk1]}).to_string()).unwrap();
    let relay = Relay::start(jwt_config(&[
        "algorithm = \"ES256\"",
        &format!("jwks_file = {jwks:?}"),
    ]))
    .await;
    let (priv2, _, jwk2) = es256_key("k2");
    let by_k1 = es256(json!({"sub": "carol"}), &priv1, Some("k1"));
    let by_k2 = es256(json!({"sub": "carol"}), &priv2, Some("k2"));
    let _ws = hub_client(relay.port, Some(&by_k1)).await;
    assert_eq!(
        refused(relay.port, &format!("token={by_k2}")).await,
        (401, "token_invalid".into())
    );
    // Rotate: the JWKS now has k2 only; a reload re-reads it.
    std::fs::write(&jwks, json!({"keys": [jwk2]}).to_string()).unwrap();
    relay.signal(libc::SIGHUP);
    relay
        .wait_for_log("reload", STEP, |l| l.contains("configuration reloaded"))
        .await;
    let _ws = hub_client(relay.port, Some(&by_k2)).await;
    assert_eq!(
        refused(relay.port, &format!("token={by_k1}")).await,
        (401, "token_invalid".into())
    );
    // A broken JWKS is refused by the reload and the keys stay.
    std::fs::write(&jwks, "{not json").unwrap();
    relay.signal(libc::SIGHUP);
    relay
        .wait_for_log("rejected reload", STEP, |l| l.contains("not a JWKS"))
        .await;
    let _ws = hub_client(relay.port, Some(&by_k2)).await;
}

#[tokio::test]
async fn rs256_with_an_openssl_key() {
    if !have("openssl") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = (dir.path().join("key.pem"), dir.path().join("pub.pem"));
    let ok = std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&key)
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap()
        .success()
        && std::process::Command::new("openssl")
            .args(["pkey", "-pubout", "-in"])
            .arg(&key)
            .arg("-out")
            .arg(&public)
            .status()
            .unwrap()
            .success();
    assert!(ok, "openssl could not make an RSA key");
    let relay = Relay::start(jwt_config(&[
        "algorithm = \"RS256\"",
        &format!("public_key_file = {public:?}"),
    ]))
    .await;
    let private = std::fs::read(&key).unwrap();
    let sign = |claims| {
        encode(
            &Header::new(Algorithm::RS256),
            &claims,
            &EncodingKey::from_rsa_pem(&private).unwrap(),
        )
        .unwrap()
    };
    let mut ws = hub_client(
        relay.port,
        Some(&sign(json!({"sub": "dave", "exp": now() + 60}))),
    )
    .await;
    let r = push_once(
        relay.port,
        &json!({"event_name": "e", "subject": 3, "token": "dave"}),
    )
    .await;
    assert_delivered(&r, 1);
    assert_push(&next_json(&mut ws).await, "e", &json!(3), &json!("dave"));
    let expired = sign(json!({"sub": "dave", "exp": now() - 30}));
    assert_eq!(
        refused(relay.port, &format!("token={expired}")).await,
        (401, "token_expired".into())
    );
}
