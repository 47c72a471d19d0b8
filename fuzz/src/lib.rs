//! Helpers shared by the fuzz targets: traffic keys for every suite the
//! in-process record layer supports, built the way rustls builds them, and
//! rustls's own record protection for the same keys, so a target can check
//! our records against an independent implementation.
//!
//! AES-128-GCM is absent: rustls exposes only 32-byte `AeadKey`s publicly.
//! The over-the-wire suites (tests/tls_records.rs, tests/tls_openssl.rs)
//! cover it.

use rustls::crypto::cipher::{AeadKey, Iv, MessageDecrypter, MessageEncrypter};
use rustls::crypto::ring::cipher_suite as suites;
use rustls::{ConnectionTrafficSecrets, SupportedCipherSuite};
use ws_relay_core::tls::record::{Keys, Version};

/// One suite and the protocol version it runs under.
#[derive(Clone, Copy)]
pub struct Suite {
    pub suite: SupportedCipherSuite,
    pub version: Version,
}

pub const SUITES: [Suite; 4] = [
    Suite {
        suite: suites::TLS13_AES_256_GCM_SHA384,
        version: Version::Tls13,
    },
    Suite {
        suite: suites::TLS13_CHACHA20_POLY1305_SHA256,
        version: Version::Tls13,
    },
    Suite {
        suite: suites::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        version: Version::Tls12,
    },
    Suite {
        suite: suites::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
        version: Version::Tls12,
    },
];

/// Key material taken from the fuzz input (so the fuzzer varies it too).
#[derive(Clone, Copy)]
pub struct Material {
    pub key: [u8; 32],
    pub iv: [u8; 12],
}

impl Material {
    /// Splits 44 bytes off the front of `data`, or uses fixed material when
    /// there are fewer.
    pub fn take(data: &[u8]) -> (Material, &[u8]) {
        if data.len() < 44 {
            let m = Material {
                key: [0x42; 32],
                iv: [0x17; 12],
            };
            return (m, data);
        }
        let mut key = [0u8; 32];
        let mut iv = [0u8; 12];
        key.copy_from_slice(&data[..32]);
        iv.copy_from_slice(&data[32..44]);
        (Material { key, iv }, &data[44..])
    }

    fn tls12_iv(&self, s: &rustls::Tls12CipherSuite) -> (&[u8], &[u8]) {
        let shape = s.aead_alg.key_block_shape();
        let (fixed, rest) = self.iv.split_at(shape.fixed_iv_len);
        (fixed, &rest[..shape.explicit_nonce_len])
    }

    pub fn secrets(&self, suite: SupportedCipherSuite) -> ConnectionTrafficSecrets {
        let key = AeadKey::from(self.key);
        match suite {
            SupportedCipherSuite::Tls13(s) => {
                s.aead_alg.extract_keys(key, Iv::from(self.iv)).unwrap()
            }
            SupportedCipherSuite::Tls12(s) => {
                let (fixed, explicit) = self.tls12_iv(s);
                s.aead_alg.extract_keys(key, fixed, explicit).unwrap()
            }
        }
    }

    pub fn keys(&self, s: Suite, seq: u64) -> Keys {
        Keys::new(s.version, seq, self.secrets(s.suite)).unwrap()
    }

    pub fn rustls_encrypter(&self, suite: SupportedCipherSuite) -> Box<dyn MessageEncrypter> {
        let key = AeadKey::from(self.key);
        match suite {
            SupportedCipherSuite::Tls13(s) => s.aead_alg.encrypter(key, Iv::from(self.iv)),
            SupportedCipherSuite::Tls12(s) => {
                let (fixed, explicit) = self.tls12_iv(s);
                s.aead_alg.encrypter(key, fixed, explicit)
            }
        }
    }

    pub fn rustls_decrypter(&self, suite: SupportedCipherSuite) -> Box<dyn MessageDecrypter> {
        let key = AeadKey::from(self.key);
        match suite {
            SupportedCipherSuite::Tls13(s) => s.aead_alg.decrypter(key, Iv::from(self.iv)),
            SupportedCipherSuite::Tls12(s) => s.aead_alg.decrypter(key, self.tls12_iv(s).0),
        }
    }
}

/// Reads a little-endian u64 off the front of `data` (zero-padded).
pub fn take_u64(data: &[u8]) -> (u64, &[u8]) {
    let n = data.len().min(8);
    let mut b = [0u8; 8];
    b[..n].copy_from_slice(&data[..n]);
    (u64::from_le_bytes(b), &data[n..])
}

/// Cuts `stream` into chunks whose sizes come from `sizes` (each byte + 1,
/// cycled), the way reads could have delivered it.
pub fn chunks<'a>(stream: &'a [u8], sizes: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + 'a {
    let mut rest = stream;
    let mut i = 0;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let size = sizes
            .get(i % sizes.len().max(1))
            .map_or(rest.len(), |&s| usize::from(s) + 1);
        i += 1;
        let (head, tail) = rest.split_at(size.min(rest.len()));
        rest = tail;
        Some(head)
    })
}

/// Splits fuzz input into a control prefix of `n` bytes and the rest.
pub fn split_front(data: &[u8], n: usize) -> (&[u8], &[u8]) {
    data.split_at(n.min(data.len()))
}
