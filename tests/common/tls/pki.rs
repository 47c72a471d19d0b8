//! Test PKI built with rcgen: a CA (optionally an intermediate), leaf
//! certificates for `localhost`/`127.0.0.1`, self-signed certificates, and the
//! key-format conversions the key tests need (PKCS#8 → PKCS#1 for RSA,
//! PKCS#8 → SEC1 for EC), with a tiny DER reader and PEM writer.

use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SignatureAlgorithm,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use super::provider;

/// A fixed 2048-bit RSA key (PKCS#8). rcgen with the ring backend cannot
/// generate RSA keys, so the PKCS#1 test derives its key from this one.
pub const RSA2048_PKCS8_PEM: &str = include_str!("rsa2048-pkcs8.pem");

/// The names every test leaf carries.
pub const LOCAL_NAMES: &[&str] = &["localhost", "127.0.0.1"];

/// A certificate authority that signs leaves (and intermediates).
pub struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
    pub der: CertificateDer<'static>,
    pub pem: String,
}

impl Ca {
    /// A self-signed root CA with an ECDSA P-256 key.
    pub fn new(name: &str) -> Ca {
        let key = KeyPair::generate().expect("CA key");
        let cert = ca_params(name).self_signed(&key).expect("self-sign CA");
        Ca::from_parts(cert, key)
    }

    /// An intermediate CA signed by `self`.
    pub fn intermediate(&self, name: &str) -> Ca {
        let key = KeyPair::generate().expect("intermediate key");
        let cert = ca_params(name)
            .signed_by(&key, &self.cert, &self.key)
            .expect("sign intermediate");
        Ca::from_parts(cert, key)
    }

    fn from_parts(cert: rcgen::Certificate, key: KeyPair) -> Ca {
        Ca {
            der: cert.der().clone(),
            pem: cert.pem(),
            cert,
            key,
        }
    }

    /// A leaf for `names` with a fresh ECDSA P-256 key (PKCS#8 PEM).
    pub fn leaf(&self, names: &[&str]) -> Leaf {
        self.leaf_with_key(names, KeyPair::generate().expect("leaf key"))
    }

    /// A leaf for `names` whose key is `key` (any algorithm rcgen can sign with).
    pub fn leaf_with_key(&self, names: &[&str], key: KeyPair) -> Leaf {
        let cert = leaf_params(names)
            .signed_by(&key, &self.cert, &self.key)
            .expect("sign leaf");
        Leaf::from_parts(cert, &key)
    }
}

fn ca_params(name: &str) -> CertificateParams {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

fn leaf_params(names: &[&str]) -> CertificateParams {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let mut params = CertificateParams::new(names).expect("leaf params");
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "ws-relay-core test leaf");
    params.distinguished_name = dn;
    params.is_ca = IsCa::NoCa;
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params
}

/// A certificate and its key, as PEM (key PKCS#8 unless converted) and DER.
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: CertificateDer<'static>,
    pub key_pkcs8: Vec<u8>,
}

impl Leaf {
    fn from_parts(cert: rcgen::Certificate, key: &KeyPair) -> Leaf {
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
            key_pkcs8: key.serialize_der(),
        }
    }

    /// A self-signed leaf (no CA) for `names`, ECDSA P-256.
    pub fn self_signed(names: &[&str]) -> Leaf {
        let key = KeyPair::generate().expect("key");
        let cert = leaf_params(names).self_signed(&key).expect("self-sign");
        Leaf::from_parts(cert, &key)
    }

    /// A plain rustls `ServerConfig` (defaults: TLS 1.2 + 1.3, stateful TLS 1.3
    /// tickets from the default session cache) serving this leaf, with
    /// `chain_extra` appended after the leaf.
    pub fn server_config(
        &self,
        chain_extra: &[CertificateDer<'static>],
    ) -> Arc<rustls::ServerConfig> {
        let mut chain = vec![self.der.clone()];
        chain.extend(chain_extra.iter().cloned());
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_pkcs8.clone()));
        let config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("target server config");
        Arc::new(config)
    }
}

/// A leaf signed by `ca` whose key is the fixed RSA key; returns the leaf (key
/// PEM still PKCS#8) and the same key as a PKCS#1 `RSA PRIVATE KEY` PEM.
pub fn rsa_leaf(ca: &Ca) -> (Leaf, String) {
    let key = KeyPair::from_pkcs8_pem_and_sign_algo(RSA2048_PKCS8_PEM, &rcgen::PKCS_RSA_SHA256)
        .expect("load fixed RSA key");
    let leaf = ca.leaf_with_key(LOCAL_NAMES, key);
    let pkcs1 = pkcs8_inner_key(&leaf.key_pkcs8);
    let pem = pem_encode("RSA PRIVATE KEY", &pkcs1);
    (leaf, pem)
}

/// A leaf with a fresh EC key of `alg` (P-256 or P-384) signed by `ca`, and the
/// key as a SEC1 `EC PRIVATE KEY` PEM (with the curve parameters, as OpenSSL
/// writes it).
pub fn ec_sec1_leaf(ca: &Ca, alg: &'static SignatureAlgorithm) -> (Leaf, String) {
    let key = KeyPair::generate_for(alg).expect("EC key");
    let leaf = ca.leaf_with_key(LOCAL_NAMES, key);
    let sec1 = pkcs8_ec_to_sec1(&leaf.key_pkcs8);
    (leaf, pem_encode("EC PRIVATE KEY", &sec1))
}

// ---------------------------------------------------------------- DER / PEM

/// One DER TLV: (tag, whole TLV bytes, content bytes, rest of input).
fn tlv(input: &[u8]) -> (u8, &[u8], &[u8], &[u8]) {
    let tag = input[0];
    let (len, hdr) = match input[1] {
        n if n < 0x80 => (n as usize, 2),
        n => {
            let k = (n & 0x7f) as usize;
            let len = input[2..2 + k]
                .iter()
                .fold(0usize, |a, b| (a << 8) | *b as usize);
            (len, 2 + k)
        }
    };
    (
        tag,
        &input[..hdr + len],
        &input[hdr..hdr + len],
        &input[hdr + len..],
    )
}

fn encode_tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let n = content.len();
    if n < 0x80 {
        out.push(n as u8);
    } else {
        let bytes: Vec<u8> = n
            .to_be_bytes()
            .iter()
            .copied()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out.extend_from_slice(content);
    out
}

/// PKCS#8 `PrivateKeyInfo` → (algorithm identifier content, inner key DER).
fn pkcs8_parts(pkcs8: &[u8]) -> (&[u8], &[u8]) {
    let (tag, _, body, _) = tlv(pkcs8);
    assert_eq!(tag, 0x30, "PKCS#8 is a SEQUENCE");
    let (tag, _, _, rest) = tlv(body); // version
    assert_eq!(tag, 0x02);
    let (tag, _, alg, rest) = tlv(rest);
    assert_eq!(tag, 0x30, "AlgorithmIdentifier");
    let (tag, _, key, _) = tlv(rest);
    assert_eq!(tag, 0x04, "privateKey OCTET STRING");
    (alg, key)
}

/// The key inside a PKCS#8 wrapper (for RSA: exactly the PKCS#1 `RSAPrivateKey`).
pub fn pkcs8_inner_key(pkcs8: &[u8]) -> Vec<u8> {
    pkcs8_parts(pkcs8).1.to_vec()
}

/// PKCS#8 EC key → SEC1 `ECPrivateKey` with `[0] parameters` (the curve OID).
pub fn pkcs8_ec_to_sec1(pkcs8: &[u8]) -> Vec<u8> {
    let (alg, inner) = pkcs8_parts(pkcs8);
    let (_, _, _, rest) = tlv(alg); // id-ecPublicKey
    let (tag, curve_oid, _, _) = tlv(rest);
    assert_eq!(tag, 0x06, "namedCurve OID");
    let (tag, _, body, _) = tlv(inner);
    assert_eq!(tag, 0x30, "ECPrivateKey SEQUENCE");
    let (_, version, _, rest) = tlv(body);
    let (_, private, _, mut rest) = tlv(rest);
    let mut content = Vec::new();
    content.extend_from_slice(version);
    content.extend_from_slice(private);
    let mut has_params = false;
    while !rest.is_empty() {
        let (tag, whole, _, next) = tlv(rest);
        if tag == 0xa0 {
            has_params = true;
        }
        if tag == 0xa1 && !has_params {
            content.extend(encode_tlv(0xa0, curve_oid));
            has_params = true;
        }
        content.extend_from_slice(whole);
        rest = next;
    }
    if !has_params {
        content.extend(encode_tlv(0xa0, curve_oid));
    }
    encode_tlv(0x30, &content)
}

pub fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

pub fn pem_encode(label: &str, der: &[u8]) -> String {
    let b64 = base64(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Colon-separated upper-case hex SHA-256 of `der`, as the relay logs it.
pub fn fingerprint(der: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, der)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}
