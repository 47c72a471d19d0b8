//! The TLS record layer of an established session: seals and opens records
//! in place with the traffic keys rustls hands over once its handshake is
//! done (its kernel-connection API, the one built for kTLS).
//!
//! Why own this step: rustls 0.23 copies every record it encrypts or
//! decrypts into a fresh `Vec`, buffered and unbuffered API alike, so a TLS
//! session would allocate per message. Here a record is sealed into, and
//! opened inside, a buffer the caller owns. The framing follows RFC 8446
//! §5.2 (TLS 1.3) and RFC 5288 / RFC 7905 (TLS 1.2 AES-GCM, ChaCha20-Poly1305),
//! the same conventions rustls uses, so either side may be rustls.
//!
//! Must not: do I/O, allocate, or hand out a byte it could not authenticate.

use std::ops::Range;

use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use rustls::ConnectionTrafficSecrets;

pub const HEADER_LEN: usize = 5;
/// Largest plaintext one record may carry (2^14).
pub const MAX_PLAINTEXT: usize = 16384;
/// Largest record body a peer may send: 2^14 + 2048 (TLS 1.2's bound, the
/// looser of the two; TLS 1.3 allows 2^14 + 256).
pub const MAX_BODY: usize = MAX_PLAINTEXT + 2048;
/// TLS 1.3's own bound on a record body (RFC 8446 §5.2).
pub const MAX_BODY_TLS13: usize = MAX_PLAINTEXT + 256;

pub const CHANGE_CIPHER_SPEC: u8 = 20;
pub const ALERT: u8 = 21;
pub const HANDSHAKE: u8 = 22;
pub const APPLICATION_DATA: u8 = 23;

const TAG_LEN: usize = 16;
/// TLS 1.2 AES-GCM carries 8 bytes of its nonce in front of each record.
const EXPLICIT_NONCE_LEN: usize = 8;
const LEGACY_VERSION: [u8; 2] = [0x03, 0x03];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    Tls12,
    Tls13,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecordError {
    #[error("not a TLS record (content type {0})")]
    NotTls(u8),
    #[error("TLS record body of {0} bytes is over the limit")]
    Oversized(usize),
    #[error("TLS record body of {0} bytes is too short to be protected")]
    TooShort(usize),
    #[error("TLS record failed authentication (bad_record_mac)")]
    BadMac,
    #[error("TLS 1.3 record carries no content type")]
    NoContentType,
    #[error("unexpected TLS record type {0}")]
    UnexpectedType(u8),
    #[error("negotiated cipher suite has no in-process record layer")]
    UnsupportedSuite,
    #[error("TLS sequence numbers exhausted")]
    Exhausted,
}

impl From<RecordError> for std::io::Error {
    fn from(e: RecordError) -> Self {
        std::io::Error::new(std::io::ErrorKind::InvalidData, e)
    }
}

/// Checks a record header; returns the whole record's length.
pub fn record_len(header: &[u8; HEADER_LEN]) -> Result<usize, RecordError> {
    if !(CHANGE_CIPHER_SPEC..=APPLICATION_DATA).contains(&header[0]) {
        return Err(RecordError::NotTls(header[0]));
    }
    let body = u16::from_be_bytes([header[3], header[4]]) as usize;
    if body > MAX_BODY {
        return Err(RecordError::Oversized(body));
    }
    Ok(HEADER_LEN + body)
}

/// One direction's AEAD key, IV and sequence number.
pub struct Keys {
    key: LessSafeKey,
    iv: [u8; aead::NONCE_LEN],
    seq: u64,
    version: Version,
    /// TLS 1.2 AES-GCM: explicit nonce on the wire, salt in `iv[..4]`.
    explicit_nonce: bool,
}

impl Keys {
    pub fn new(
        version: Version,
        seq: u64,
        secrets: ConnectionTrafficSecrets,
    ) -> Result<Keys, RecordError> {
        let (alg, key, iv, gcm) = match &secrets {
            ConnectionTrafficSecrets::Aes128Gcm { key, iv } => (&aead::AES_128_GCM, key, iv, true),
            ConnectionTrafficSecrets::Aes256Gcm { key, iv } => (&aead::AES_256_GCM, key, iv, true),
            ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => {
                (&aead::CHACHA20_POLY1305, key, iv, false)
            }
            _ => return Err(RecordError::UnsupportedSuite),
        };
        let key = UnboundKey::new(alg, key.as_ref()).map_err(|_| RecordError::UnsupportedSuite)?;
        let iv = iv
            .as_ref()
            .try_into()
            .map_err(|_| RecordError::UnsupportedSuite)?;
        Ok(Keys {
            key: LessSafeKey::new(key),
            iv,
            seq,
            version,
            explicit_nonce: gcm && version == Version::Tls12,
        })
    }

    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Bytes a sealed record adds to its plaintext.
    pub fn overhead(&self) -> usize {
        self.body_offset() + TAG_LEN + self.inner_type_len()
    }

    fn body_offset(&self) -> usize {
        HEADER_LEN
            + if self.explicit_nonce {
                EXPLICIT_NONCE_LEN
            } else {
                0
            }
    }

    fn inner_type_len(&self) -> usize {
        usize::from(self.version == Version::Tls13)
    }

    /// `iv XOR seq`, the nonce of every construction but TLS 1.2 GCM's
    /// receive side (which reads its nonce off the wire).
    fn xor_nonce(&self) -> [u8; aead::NONCE_LEN] {
        let mut nonce = self.iv;
        for (n, s) in nonce[4..].iter_mut().zip(self.seq.to_be_bytes()) {
            *n ^= s;
        }
        nonce
    }

    fn advance(&mut self) -> Result<(), RecordError> {
        self.seq = self.seq.checked_add(1).ok_or(RecordError::Exhausted)?;
        Ok(())
    }

    /// Seals `plaintext` as one record of content type `typ` at the front of
    /// `out`; returns the record's length. `out` must hold
    /// `plaintext.len() + overhead()` bytes and `plaintext` at most
    /// `MAX_PLAINTEXT`.
    pub fn seal(
        &mut self,
        typ: u8,
        plaintext: &[u8],
        out: &mut [u8],
    ) -> Result<usize, RecordError> {
        debug_assert!(plaintext.len() <= MAX_PLAINTEXT);
        let body = self.body_offset();
        let inner_len = plaintext.len() + self.inner_type_len();
        let total = body + inner_len + TAG_LEN;
        let nonce = self.xor_nonce();
        let outer_type = match self.version {
            Version::Tls13 => APPLICATION_DATA,
            Version::Tls12 => typ,
        };
        out[0] = outer_type;
        out[1..3].copy_from_slice(&LEGACY_VERSION);
        out[3..5].copy_from_slice(&((total - HEADER_LEN) as u16).to_be_bytes());
        if self.explicit_nonce {
            out[HEADER_LEN..body].copy_from_slice(&nonce[4..]);
        }
        out[body..body + plaintext.len()].copy_from_slice(plaintext);
        if self.version == Version::Tls13 {
            out[body + plaintext.len()] = typ;
        }
        let mut aad = [0u8; 13];
        let aad = self.aad(&mut aad, &out[..HEADER_LEN], typ, plaintext.len());
        let tag = self
            .key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut out[body..body + inner_len],
            )
            .map_err(|_| RecordError::Exhausted)?;
        out[body + inner_len..total].copy_from_slice(tag.as_ref());
        self.advance()?;
        Ok(total)
    }

    /// TLS 1.3 authenticates the record header; TLS 1.2 a pseudo-header
    /// of sequence number, type, version and plaintext length.
    fn aad<'a>(&self, aad: &'a mut [u8; 13], header: &[u8], typ: u8, plain_len: usize) -> &'a [u8] {
        match self.version {
            Version::Tls13 => {
                aad[..HEADER_LEN].copy_from_slice(header);
                &aad[..HEADER_LEN]
            }
            Version::Tls12 => {
                aad[..8].copy_from_slice(&self.seq.to_be_bytes());
                aad[8] = typ;
                aad[9..11].copy_from_slice(&LEGACY_VERSION);
                aad[11..13].copy_from_slice(&(plain_len as u16).to_be_bytes());
                &aad[..]
            }
        }
    }

    /// Opens one whole record (header included) in place. Returns its
    /// content type and where its plaintext now lies within `record`.
    pub fn open(&mut self, record: &mut [u8]) -> Result<(u8, Range<usize>), RecordError> {
        let body = self.body_offset();
        let outer_type = record[0];
        // After the handshake TLS 1.3 protects everything as application
        // data, and neither version may change cipher spec again.
        let type_ok = match self.version {
            Version::Tls13 => outer_type == APPLICATION_DATA,
            Version::Tls12 => outer_type != CHANGE_CIPHER_SPEC,
        };
        if !type_ok {
            return Err(RecordError::UnexpectedType(outer_type));
        }
        let body_len = record.len().saturating_sub(HEADER_LEN);
        if self.version == Version::Tls13 && body_len > MAX_BODY_TLS13 {
            return Err(RecordError::Oversized(body_len));
        }
        if record.len() < body + TAG_LEN {
            return Err(RecordError::TooShort(body_len));
        }
        let nonce = if self.explicit_nonce {
            let mut n = [0u8; aead::NONCE_LEN];
            n[..4].copy_from_slice(&self.iv[..4]);
            n[4..].copy_from_slice(&record[HEADER_LEN..body]);
            n
        } else {
            self.xor_nonce()
        };
        let mut aad = [0u8; 13];
        let plain_len = record.len() - body - TAG_LEN;
        let (header, rest) = record.split_at_mut(HEADER_LEN);
        let aad = self.aad(&mut aad, header, outer_type, plain_len);
        let opened = self
            .key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut rest[body - HEADER_LEN..],
            )
            .map_err(|_| RecordError::BadMac)?
            .len();
        self.advance()?;
        let (typ, content) = match self.version {
            Version::Tls12 => (outer_type, body..body + opened),
            Version::Tls13 => strip_padding(&record[body..body + opened])
                .map(|(typ, len)| (typ, body..body + len))
                .ok_or(RecordError::NoContentType)?,
        };
        if content.len() > MAX_PLAINTEXT {
            return Err(RecordError::Oversized(content.len()));
        }
        Ok((typ, content))
    }
}

/// TLS 1.3 inner plaintext is `content || type || zeros`.
fn strip_padding(inner: &[u8]) -> Option<(u8, usize)> {
    let at = inner.iter().rposition(|&b| b != 0)?;
    Some((inner[at], at))
}

#[cfg(test)]
#[path = "record/tests.rs"]
mod tests;
