//! Record layer checks: round trips, tampering, and agreement with rustls's
//! own record protection (the peer on the other end of every real session).

use rustls::crypto::cipher::{
    AeadKey, InboundOpaqueMessage, Iv, MessageDecrypter, MessageEncrypter, OutboundPlainMessage,
};
use rustls::crypto::ring::cipher_suite as suites;
use rustls::{ContentType, ProtocolVersion, SupportedCipherSuite};

use super::*;

const KEY: [u8; 32] = [0x42; 32];
const IV: [u8; 12] = [0x17, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11];

/// The suites whose keys can be built here (rustls only exposes 32-byte
/// `AeadKey`s publicly; AES-128 is covered over the wire in tls_records.rs).
fn cases() -> Vec<(&'static str, SupportedCipherSuite, Version)> {
    vec![
        (
            "1.3 AES-256-GCM",
            suites::TLS13_AES_256_GCM_SHA384,
            Version::Tls13,
        ),
        (
            "1.3 ChaCha20",
            suites::TLS13_CHACHA20_POLY1305_SHA256,
            Version::Tls13,
        ),
        (
            "1.2 AES-256-GCM",
            suites::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
            Version::Tls12,
        ),
        (
            "1.2 ChaCha20",
            suites::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
            Version::Tls12,
        ),
    ]
}

/// TLS 1.2 splits `IV` into the fixed part and the explicit-nonce seed.
fn tls12_iv(s: &rustls::Tls12CipherSuite) -> (&'static [u8], &'static [u8]) {
    let shape = s.aead_alg.key_block_shape();
    let (fixed, rest) = IV.split_at(shape.fixed_iv_len);
    (fixed, &rest[..shape.explicit_nonce_len])
}

fn secrets(suite: SupportedCipherSuite) -> ConnectionTrafficSecrets {
    match suite {
        SupportedCipherSuite::Tls13(s) => s
            .aead_alg
            .extract_keys(AeadKey::from(KEY), Iv::from(IV))
            .unwrap(),
        SupportedCipherSuite::Tls12(s) => {
            let (fixed, explicit) = tls12_iv(s);
            s.aead_alg
                .extract_keys(AeadKey::from(KEY), fixed, explicit)
                .unwrap()
        }
    }
}

fn keys(suite: SupportedCipherSuite, version: Version, seq: u64) -> Keys {
    Keys::new(version, seq, secrets(suite)).unwrap()
}

fn rustls_encrypter(suite: SupportedCipherSuite) -> Box<dyn MessageEncrypter> {
    match suite {
        SupportedCipherSuite::Tls13(s) => s.aead_alg.encrypter(AeadKey::from(KEY), Iv::from(IV)),
        SupportedCipherSuite::Tls12(s) => {
            let (fixed, explicit) = tls12_iv(s);
            s.aead_alg.encrypter(AeadKey::from(KEY), fixed, explicit)
        }
    }
}

fn rustls_decrypter(suite: SupportedCipherSuite) -> Box<dyn MessageDecrypter> {
    match suite {
        SupportedCipherSuite::Tls13(s) => s.aead_alg.decrypter(AeadKey::from(KEY), Iv::from(IV)),
        SupportedCipherSuite::Tls12(s) => s.aead_alg.decrypter(AeadKey::from(KEY), tls12_iv(s).0),
    }
}

fn seal_one(keys: &mut Keys, typ: u8, plain: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; plain.len() + keys.overhead()];
    let n = keys.seal(typ, plain, &mut out).unwrap();
    assert_eq!(n, out.len(), "overhead() must be exact");
    out
}

#[test]
fn sealed_records_open_again_in_order() {
    for (name, suite, version) in cases() {
        let (mut tx, mut rx) = (keys(suite, version, 5), keys(suite, version, 5));
        for (i, msg) in [&b"hello"[..], b"", &[0u8; 300], &[0xab; MAX_PLAINTEXT]]
            .iter()
            .enumerate()
        {
            let mut rec = seal_one(&mut tx, APPLICATION_DATA, msg);
            assert_eq!(
                record_len(rec[..5].try_into().unwrap()),
                Ok(rec.len()),
                "{name}"
            );
            let (typ, range) = rx
                .open(&mut rec)
                .unwrap_or_else(|e| panic!("{name} #{i}: {e}"));
            assert_eq!(typ, APPLICATION_DATA, "{name}");
            assert_eq!(&rec[range], *msg, "{name} #{i}");
        }
        assert_eq!((tx.seq(), rx.seq()), (9, 9), "{name}");
    }
}

#[test]
fn our_records_open_with_rustls() {
    for (name, suite, version) in cases() {
        let mut ours = keys(suite, version, 0);
        let mut theirs = rustls_decrypter(suite);
        for seq in 0..3u64 {
            let msg = format!("message {seq} from the relay");
            let mut rec = seal_one(&mut ours, APPLICATION_DATA, msg.as_bytes());
            let (header, body) = rec.split_at_mut(HEADER_LEN);
            let typ = ContentType::from(header[0]);
            let opaque = InboundOpaqueMessage::new(typ, ProtocolVersion::TLSv1_2, body);
            let plain = theirs
                .decrypt(opaque, seq)
                .unwrap_or_else(|e| panic!("{name}: rustls rejected our record: {e}"));
            assert_eq!(plain.payload, msg.as_bytes(), "{name}");
            assert_eq!(plain.typ, ContentType::ApplicationData, "{name}");
        }
    }
}

#[test]
fn rustls_records_open_with_ours() {
    for (name, suite, version) in cases() {
        let mut theirs = rustls_encrypter(suite);
        let mut ours = keys(suite, version, 0);
        for (seq, typ) in [
            ContentType::ApplicationData,
            ContentType::Alert,
            ContentType::Handshake,
        ]
        .into_iter()
        .enumerate()
        {
            let payload = format!("{typ:?} number {seq}");
            let msg = OutboundPlainMessage {
                typ,
                version: ProtocolVersion::TLSv1_2,
                payload: payload.as_bytes().into(),
            };
            let mut rec = theirs.encrypt(msg, seq as u64).unwrap().encode();
            let (got, range) = ours
                .open(&mut rec)
                .unwrap_or_else(|e| panic!("{name}: we rejected a rustls record: {e}"));
            assert_eq!(got, u8::from(typ), "{name}");
            assert_eq!(&rec[range], payload.as_bytes(), "{name}");
        }
    }
}

#[test]
fn any_flipped_bit_fails_authentication() {
    for (name, suite, version) in cases() {
        let rec = seal_one(&mut keys(suite, version, 0), APPLICATION_DATA, b"integrity");
        for at in HEADER_LEN..rec.len() {
            let mut bad = rec.clone();
            bad[at] ^= 0x01;
            let got = keys(suite, version, 0).open(&mut bad);
            assert_eq!(got.err(), Some(RecordError::BadMac), "{name}: byte {at}");
        }
        // A record replayed out of order fails too (wrong sequence number).
        let mut replay = rec.clone();
        assert!(keys(suite, version, 1).open(&mut replay).is_err(), "{name}");
    }
}

#[test]
fn tls13_padding_and_inner_type() {
    assert_eq!(strip_padding(&[1, 2, 23, 0, 0]), Some((23, 2)));
    assert_eq!(strip_padding(&[21]), Some((21, 0)));
    assert_eq!(strip_padding(&[0, 0, 0]), None);
    assert_eq!(strip_padding(&[]), None);
    let (suite, version) = (suites::TLS13_AES_256_GCM_SHA384, Version::Tls13);
    let mut rec = seal_one(&mut keys(suite, version, 0), ALERT, &[1, 0]);
    assert_eq!(rec[0], APPLICATION_DATA, "TLS 1.3 hides the real type");
    let (typ, range) = keys(suite, version, 0).open(&mut rec).unwrap();
    assert_eq!((typ, &rec[range]), (ALERT, &[1u8, 0][..]));
}

#[test]
fn headers_are_checked_before_any_crypto() {
    assert_eq!(record_len(&[23, 3, 3, 0, 10]), Ok(15));
    assert_eq!(record_len(b"GET /"), Err(RecordError::NotTls(b'G')));
    assert_eq!(
        record_len(&[23, 3, 3, 0xff, 0xff]),
        Err(RecordError::Oversized(0xffff))
    );
    let mut short = [23u8, 3, 3, 0, 4, 1, 2, 3, 4];
    let got = keys(suites::TLS13_AES_256_GCM_SHA384, Version::Tls13, 0).open(&mut short);
    assert_eq!(got.err(), Some(RecordError::TooShort(4)));
    let mut tls12_type = seal_one(
        &mut keys(suites::TLS13_AES_256_GCM_SHA384, Version::Tls13, 0),
        APPLICATION_DATA,
        b"x",
    );
    tls12_type[0] = HANDSHAKE;
    let got = keys(suites::TLS13_AES_256_GCM_SHA384, Version::Tls13, 0).open(&mut tls12_type);
    assert_eq!(got.err(), Some(RecordError::UnexpectedType(HANDSHAKE)));
}

/// RFC 8446 §5 / §5.2 / §5.4: what an established session refuses, and
/// with which error (the stream turns each into its alert).
#[test]
fn refusals_after_the_handshake() {
    let open13 =
        |rec: &mut [u8]| keys(suites::TLS13_AES_256_GCM_SHA384, Version::Tls13, 0).open(rec);
    // A plaintext ChangeCipherSpec or alert after the handshake.
    assert_eq!(
        open13(&mut [20, 3, 3, 0, 1, 1]).err(),
        Some(RecordError::UnexpectedType(20))
    );
    assert_eq!(
        open13(&mut [21, 3, 3, 0, 2, 2, 10]).err(),
        Some(RecordError::UnexpectedType(21))
    );
    // Over TLS 1.3's 2^14 + 256, though under TLS 1.2's 2^14 + 2048.
    for body in [MAX_BODY_TLS13 + 1, MAX_BODY] {
        let mut rec = vec![0u8; HEADER_LEN + body];
        rec[..5].copy_from_slice(&[23, 3, 3, (body >> 8) as u8, body as u8]);
        assert_eq!(
            open13(&mut rec).err(),
            Some(RecordError::Oversized(body)),
            "{body}"
        );
    }
    // Exactly the limit is authenticated (and fails only on its tag).
    let mut rec = vec![0u8; HEADER_LEN + MAX_BODY_TLS13];
    rec[..5].copy_from_slice(&[23, 3, 3, (MAX_BODY_TLS13 >> 8) as u8, MAX_BODY_TLS13 as u8]);
    assert_eq!(open13(&mut rec).err(), Some(RecordError::BadMac));
    // A zero-length record, and an authentic one with no content type.
    assert_eq!(
        open13(&mut [23, 3, 3, 0, 0]).err(),
        Some(RecordError::TooShort(0))
    );
    let mut k = keys(suites::TLS13_AES_256_GCM_SHA384, Version::Tls13, 0);
    let mut no_type = [0u8; 64];
    let n = k.seal(0, &[], &mut no_type).unwrap();
    assert_eq!(
        open13(&mut no_type[..n]).err(),
        Some(RecordError::NoContentType)
    );
    // TLS 1.2: no second ChangeCipherSpec once keys are in use.
    let mut ccs = seal_one(
        &mut keys(
            suites::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
            Version::Tls12,
            0,
        ),
        CHANGE_CIPHER_SPEC,
        &[1],
    );
    let got = keys(
        suites::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        Version::Tls12,
        0,
    )
    .open(&mut ccs);
    assert_eq!(
        got.err(),
        Some(RecordError::UnexpectedType(CHANGE_CIPHER_SPEC))
    );
}
