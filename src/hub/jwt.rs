//! JWT connection tokens (docs/hub.md "JWT"): a client's `token` is a
//! signed JWT whose `sub` is its user; `exp` and `nbf` are enforced.
//!
//! Verification is `jsonwebtoken`'s (signature, algorithm allow-list, time
//! claims); this file owns loading the keys (an HS256 secret, an RS256/ES256
//! PEM public key or a JWKS file), picking the key by `kid`, and saying what
//! failed in words a client may see. One algorithm per hub: a token whose
//! header names another (`none` included, or HS256 signed with the public
//! key) is refused before any key is tried.
//!
//! Must not: log or echo a token, a secret or a key.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::config::JwtConfig;

/// Why a token was refused (the text is what the client is told).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("token expired")]
    Expired,
    #[error("token not valid yet (nbf)")]
    NotYetValid,
    #[error("token signature does not verify")]
    BadSignature,
    #[error("token algorithm not accepted")]
    Algorithm,
    #[error("token has no key id this hub knows")]
    UnknownKey,
    #[error("token needs a non-empty sub claim")]
    NoSubject,
    #[error("token audience or issuer not accepted")]
    Audience,
    #[error("token is not a JWT")]
    Malformed,
}

/// A verified token: its user and when it stops being valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub user: String,
    /// `None`: the token has no `exp`.
    pub expires: Option<Instant>,
}

enum Keys {
    One(DecodingKey),
    /// A JWKS: (kid, key); a token without `kid` needs a set of one.
    Set(Vec<(Option<String>, DecodingKey)>),
}

pub struct Verifier {
    keys: Keys,
    validation: Validation,
    /// `allow_anonymous`, kept with the keys so a reload changes both.
    anonymous: bool,
}

#[derive(Deserialize)]
struct Claims {
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    exp: Option<u64>,
}

impl Verifier {
    /// Reads the key material `cfg` names (the control plane calls this at
    /// start and on every reload). The error names the file, never a key.
    pub fn load(cfg: &JwtConfig) -> Result<Verifier, String> {
        let alg = algorithm(&cfg.algorithm)?;
        let keys = match alg {
            Algorithm::HS256 => Keys::One(DecodingKey::from_secret(cfg.secret.as_bytes())),
            _ => match (&cfg.public_key_file, &cfg.jwks_file) {
                (Some(path), None) => {
                    let pem = std::fs::read(path)
                        .map_err(|e| format!("hub.jwt.public_key_file {}: {e}", path.display()))?;
                    let key = match alg {
                        Algorithm::RS256 => DecodingKey::from_rsa_pem(&pem),
                        _ => DecodingKey::from_ec_pem(&pem),
                    };
                    Keys::One(key.map_err(|e| {
                        format!(
                            "hub.jwt.public_key_file {}: not a {} public key: {e}",
                            path.display(),
                            cfg.algorithm
                        )
                    })?)
                }
                (None, Some(path)) => {
                    let text = std::fs::read(path)
                        .map_err(|e| format!("hub.jwt.jwks_file {}: {e}", path.display()))?;
                    let set: JwkSet = serde_json::from_slice(&text).map_err(|e| {
                        format!("hub.jwt.jwks_file {}: not a JWKS: {e}", path.display())
                    })?;
                    let mut keys = Vec::new();
                    for jwk in &set.keys {
                        let key = DecodingKey::from_jwk(jwk).map_err(|e| {
                            format!("hub.jwt.jwks_file {}: unusable key: {e}", path.display())
                        })?;
                        keys.push((jwk.common.key_id.clone(), key));
                    }
                    if keys.is_empty() {
                        return Err(format!("hub.jwt.jwks_file {}: no keys", path.display()));
                    }
                    Keys::Set(keys)
                }
                _ => {
                    return Err(format!(
                        "hub.jwt: {} needs exactly one of public_key_file and jwks_file",
                        cfg.algorithm
                    ))
                }
            },
        };
        let mut validation = Validation::new(alg);
        validation.leeway = cfg.leeway_secs;
        validation.validate_nbf = true;
        // `exp` is checked when present; a token without it never expires.
        validation.set_required_spec_claims::<&str>(&[]);
        validation.validate_aud = cfg.audience.is_some();
        if let Some(aud) = &cfg.audience {
            validation.set_audience(&[aud]);
        }
        if let Some(iss) = &cfg.issuer {
            validation.set_issuer(&[iss]);
        }
        Ok(Verifier {
            keys,
            validation,
            anonymous: cfg.allow_anonymous,
        })
    }

    /// Connections without a token are allowed (broadcasts only).
    pub fn allows_anonymous(&self) -> bool {
        self.anonymous
    }

    pub fn verify(&self, token: &str) -> Result<Verified, JwtError> {
        let header = decode_header(token).map_err(|_| JwtError::Malformed)?;
        if !self.validation.algorithms.contains(&header.alg) {
            return Err(JwtError::Algorithm);
        }
        let key = match &self.keys {
            Keys::One(k) => k,
            Keys::Set(set) => {
                let found = match &header.kid {
                    Some(kid) => set.iter().find(|(id, _)| id.as_deref() == Some(kid)),
                    None if set.len() == 1 => set.first(),
                    None => None,
                };
                &found.ok_or(JwtError::UnknownKey)?.1
            }
        };
        use jsonwebtoken::errors::ErrorKind as K;
        let data = decode::<Claims>(token, key, &self.validation).map_err(|e| match e.kind() {
            K::ExpiredSignature => JwtError::Expired,
            K::ImmatureSignature => JwtError::NotYetValid,
            K::InvalidSignature => JwtError::BadSignature,
            K::InvalidAlgorithm => JwtError::Algorithm,
            K::InvalidAudience | K::InvalidIssuer => JwtError::Audience,
            _ => JwtError::Malformed,
        })?;
        let user = data
            .claims
            .sub
            .filter(|s| !s.is_empty())
            .ok_or(JwtError::NoSubject)?;
        let expires = data.claims.exp.map(|exp| {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            Instant::now() + Duration::from_secs(exp.saturating_sub(now) + self.validation.leeway)
        });
        Ok(Verified { user, expires })
    }
}

fn algorithm(name: &str) -> Result<Algorithm, String> {
    match name {
        "HS256" => Ok(Algorithm::HS256),
        "RS256" => Ok(Algorithm::RS256),
        "ES256" => Ok(Algorithm::ES256),
        other => Err(format!(
            "hub.jwt.algorithm: {other:?} is not one of HS256, RS256, ES256"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};

    fn hs(secret: &str) -> Verifier {
        let cfg = JwtConfig {
            algorithm: "HS256".into(),
            secret: secret.into(),
            ..JwtConfig::default()
        };
        Verifier::load(&cfg).unwrap()
    }

    fn token(claims: serde_json::Value, secret: &str) -> String {
        encode(
            &Header::default(),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    fn now() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    #[test]
    fn hs256_rules() {
        let s = "a-secret-of-at-least-thirty-two-bytes!!";
        let v = hs(s);
        let ok = v.verify(&token(
            serde_json::json!({"sub": "u1", "exp": now() + 60}),
            s,
        ));
        assert_eq!(ok.map(|t| t.user), Ok("u1".into()));
        let none = v
            .verify(&token(serde_json::json!({"sub": "u1"}), s))
            .unwrap();
        assert_eq!(none.expires, None, "no exp: never expires");
        let t = token(serde_json::json!({"sub": "u1", "exp": now() - 10}), s);
        assert_eq!(v.verify(&t), Err(JwtError::Expired));
        let t = token(serde_json::json!({"sub": "u1", "nbf": now() + 60}), s);
        assert_eq!(v.verify(&t), Err(JwtError::NotYetValid));
        let t = token(
            serde_json::json!({"sub": "u1"}),
            "another-secret-of-thirty-two-bytes!!",
        );
        assert_eq!(v.verify(&t), Err(JwtError::BadSignature));
        let t = token(serde_json::json!({"exp": now() + 60}), s);
        assert_eq!(v.verify(&t), Err(JwtError::NoSubject));
        assert_eq!(v.verify("not.a.jwt"), Err(JwtError::Malformed));
        // alg none: header {"alg":"none"}, no signature.
        let b64 = |x: &str| {
            use base64::Engine;
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(x)
        };
        let unsigned = format!(
            "{}.{}.",
            b64(r#"{"alg":"none","typ":"JWT"}"#),
            b64(r#"{"sub":"u1"}"#)
        );
        assert!(v.verify(&unsigned).is_err());
        let hs384 = encode(
            &Header::new(Algorithm::HS384),
            &serde_json::json!({"sub": "u1"}),
            &EncodingKey::from_secret(s.as_bytes()),
        )
        .unwrap();
        assert_eq!(v.verify(&hs384), Err(JwtError::Algorithm));
    }
}
