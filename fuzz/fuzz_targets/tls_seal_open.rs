//! Seal → open round trips over arbitrary plaintext, content type, key
//! material and sequence number, for every suite, cross-checked both ways
//! against rustls's own record protection; then one fuzz-chosen bit of the
//! sealed record is flipped and opening must fail.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rustls::crypto::cipher::{InboundOpaqueMessage, OutboundPlainMessage};
use rustls::{ContentType, ProtocolVersion};
use ws_relay_core::tls::record::{
    record_len, RecordError, Version, ALERT, APPLICATION_DATA, HANDSHAKE, HEADER_LEN, MAX_PLAINTEXT,
};
use ws_relay_core_fuzz::{take_u64, Material, SUITES};

/// The content types the relay seals (never 0: TLS 1.3 reads the inner
/// type as the last non-zero byte).
const TYPES: [u8; 3] = [APPLICATION_DATA, ALERT, HANDSHAKE];

fuzz_target!(|data: &[u8]| {
    let [sel, typ, flip_lo, flip_hi, data @ ..] = data else {
        return;
    };
    let suite = SUITES[usize::from(*sel) % SUITES.len()];
    let typ = TYPES[usize::from(*typ) % TYPES.len()];
    let (seq, data) = take_u64(data);
    // Leave room to seal; the last sequence number cannot be used.
    let seq = seq.min(u64::MAX - 1);
    let (material, plain) = Material::take(data);
    let plain = &plain[..plain.len().min(MAX_PLAINTEXT)];

    // Ours seals, rustls opens.
    let mut ours = material.keys(suite, seq);
    let mut sealed = vec![0u8; plain.len() + ours.overhead()];
    let n = ours.seal(typ, plain, &mut sealed).expect("seal");
    assert_eq!(n, sealed.len(), "overhead() is exact");
    assert_eq!(ours.seq(), seq + 1);
    let header: [u8; HEADER_LEN] = sealed[..HEADER_LEN].try_into().unwrap();
    assert_eq!(record_len(&header), Ok(n));
    {
        let mut copy = sealed.clone();
        let (h, body) = copy.split_at_mut(HEADER_LEN);
        let opaque =
            InboundOpaqueMessage::new(ContentType::from(h[0]), ProtocolVersion::TLSv1_2, body);
        let got = material
            .rustls_decrypter(suite.suite)
            .decrypt(opaque, seq)
            .expect("rustls opens our record");
        assert_eq!(got.payload, plain);
        assert_eq!(u8::from(got.typ), typ);
    }

    // Ours opens what ours sealed.
    let mut copy = sealed.clone();
    let mut rx = material.keys(suite, seq);
    let (got_typ, range) = rx.open(&mut copy).expect("we open our own record");
    assert_eq!((got_typ, &copy[range]), (typ, plain));

    // rustls seals, ours opens.
    let msg = OutboundPlainMessage {
        typ: ContentType::from(typ),
        version: ProtocolVersion::TLSv1_2,
        payload: plain.into(),
    };
    let mut theirs = material
        .rustls_encrypter(suite.suite)
        .encrypt(msg, seq)
        .expect("rustls seals")
        .encode();
    let (got_typ, range) = material
        .keys(suite, seq)
        .open(&mut theirs)
        .expect("we open a rustls record");
    assert_eq!((got_typ, &theirs[range]), (typ, plain));

    // One flipped bit anywhere fails. TLS 1.3 authenticates the whole
    // header; TLS 1.2 authenticates the type, but its AAD carries the
    // plaintext length and a constant version rather than the header's
    // bytes (RFC 5246 §6.2.3.3), and the stream layer frames records by the
    // header before the opener sees them, so those four bytes are skipped.
    let bit = usize::from(u16::from_le_bytes([*flip_lo, *flip_hi])) % (sealed.len() * 8);
    let at = bit / 8;
    if suite.version == Version::Tls12 && (1..HEADER_LEN).contains(&at) {
        return;
    }
    let mut bad = sealed.clone();
    bad[at] ^= 1 << (bit % 8);
    let opened = material.keys(suite, seq).open(&mut bad);
    assert!(
        matches!(
            opened,
            Err(RecordError::BadMac | RecordError::UnexpectedType(_))
        ),
        "a tampered record opened: byte {at}: {opened:?}"
    );
});
