//! Access tokens a backend verifies alone: ES256 JWTs signed by a keyring of P-256 keys that
//! the whole fleet shares through the database, published as a JWKS.
//!
//! A key's life: created (published at once in `/.well-known/jwks.json`), signing from its
//! `not_before` (a rotation publishes the next key `signing_key_publish_ahead_secs` before it
//! signs, so backends that cache the JWKS know it before they meet it), retired when a newer
//! key starts signing, published until every token it signed has expired, then deleted. A key
//! removed by an administrator (a suspected leak) is unpublished at once, and tokens it signed
//! stop verifying here and at every backend that refreshes its JWKS.
//!
//! Private keys are sealed with the data key (bound to their kid) in the database; `Debug`
//! never shows them.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{
    EcdsaKeyPair, KeyPair, UnparsedPublicKey, ECDSA_P256_SHA256_FIXED,
    ECDSA_P256_SHA256_FIXED_SIGNING,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The claims of an access token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// The issuer (`access_token_issuer`).
    pub iss: String,
    /// The audience: the appid.
    pub aud: String,
    /// The subject: the user's openid (unique within the audience).
    pub sub: String,
    /// The user's openid.
    pub openid: String,
    /// The user's unionid, when WeChat gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unionid: Option<String>,
    /// The session the token was issued for (ends with it at this server's introspection).
    pub sid: String,
    /// Issued at (Unix seconds).
    pub iat: i64,
    /// Expires at (Unix seconds).
    pub exp: i64,
}

/// Why a token did not verify (never shown to callers in detail).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalid {
    /// Not three base64url parts of JSON, or not ES256.
    Malformed,
    /// Its kid is not a published key.
    UnknownKey,
    /// The signature does not match.
    Signature,
    /// Another issuer.
    Issuer,
    /// Expired (or issued in the future).
    Expired,
}

pub use crate::store::KeyRecord;

/// The associated data binding a sealed signing key to its kid.
pub fn key_aad(kid: &str) -> Vec<u8> {
    format!("weapp/signing_key\0{kid}").into_bytes()
}

/// A new P-256 key: its record (sealed with `seal`) and nothing else kept in the clear.
///
/// # Panics
/// If the system's random generator fails.
pub fn generate(
    seal: impl Fn(&[u8], &[u8]) -> Vec<u8>,
    key_id: String,
    now: i64,
    not_before: i64,
) -> KeyRecord {
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
        .expect("P-256 key generation");
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
        .expect("a generated key loads");
    let (x, y) = coordinates(pair.public_key().as_ref()).expect("an uncompressed point");
    // RFC 7638: SHA-256 over the required members in lexicographic order, no whitespace.
    let thumb = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
    let kid = B64URL.encode(Sha256::digest(thumb.as_bytes()));
    let jwk = serde_json::json!({
        "kty": "EC", "crv": "P-256", "x": x, "y": y, "kid": kid, "use": "sig", "alg": "ES256",
    });
    KeyRecord {
        sealed: seal(pkcs8.as_ref(), &key_aad(&kid)),
        kid,
        key_id,
        public_jwk: jwk.to_string(),
        created_at: now,
        not_before,
        retired_at: None,
    }
}

fn coordinates(point: &[u8]) -> Option<(String, String)> {
    (point.len() == 65 && point[0] == 4)
        .then(|| (B64URL.encode(&point[1..33]), B64URL.encode(&point[33..])))
}

/// One published key; `pair` when its private half could be opened.
struct Loaded {
    kid: String,
    /// The base64url JWS header of its tokens (made once).
    header: String,
    jwk: serde_json::Value,
    public: Vec<u8>,
    pair: Option<EcdsaKeyPair>,
    not_before: i64,
    created_at: i64,
    retired_at: Option<i64>,
}

/// The keys an instance signs and verifies with (a snapshot of the database's).
#[derive(Default)]
pub struct SigningKeys {
    keys: Vec<Loaded>,
}

impl std::fmt::Debug for SigningKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.keys.iter().map(|k| &k.kid))
            .finish()
    }
}

/// A key's public facts, for the admin API.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct KeyInfo {
    /// The key id.
    pub kid: String,
    /// `next` (published, not signing yet), `current` (signing), `retired` (published until its
    /// tokens expire).
    pub status: &'static str,
    /// Unix seconds.
    pub created_at: i64,
    /// Signs from (Unix seconds).
    pub not_before: i64,
    /// Stopped signing (Unix seconds).
    pub retired_at: Option<i64>,
    /// Whether this instance could open its private half (false: sealed under a data key it
    /// does not hold).
    pub usable: bool,
}

impl SigningKeys {
    /// Loads the published keys, opening the private halves with `open`. A key whose private
    /// half does not open is still published (its tokens verify) but never signs.
    pub fn load(records: &[KeyRecord], open: impl Fn(&[u8], &[u8]) -> Option<Vec<u8>>) -> Self {
        let rng = SystemRandom::new();
        let mut keys = Vec::with_capacity(records.len());
        for r in records {
            let Ok(jwk) = serde_json::from_str::<serde_json::Value>(&r.public_jwk) else {
                tracing::error!(kid = %r.kid, "signing key: its public JWK does not parse; skipped");
                continue;
            };
            let public = match (jwk["x"].as_str(), jwk["y"].as_str()) {
                (Some(x), Some(y)) => match (B64URL.decode(x), B64URL.decode(y)) {
                    (Ok(x), Ok(y)) if x.len() == 32 && y.len() == 32 => {
                        let mut p = vec![4u8];
                        p.extend(x);
                        p.extend(y);
                        p
                    }
                    _ => continue,
                },
                _ => continue,
            };
            let pair = open(&r.sealed, &key_aad(&r.kid)).and_then(|pkcs8| {
                EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &pkcs8, &rng).ok()
            });
            // A private half that does not match the published half is not used.
            let pair = pair.filter(|p| p.public_key().as_ref() == public.as_slice());
            if pair.is_none() {
                tracing::warn!(kid = %r.kid, data_key = %r.key_id, "signing key: the private key does not open with the configured data keys; it is published but does not sign");
            }
            keys.push(Loaded {
                header: B64URL.encode(
                    serde_json::json!({"alg": "ES256", "typ": "JWT", "kid": r.kid}).to_string(),
                ),
                kid: r.kid.clone(),
                jwk,
                public,
                pair,
                not_before: r.not_before,
                created_at: r.created_at,
                retired_at: r.retired_at,
            });
        }
        Self { keys }
    }

    /// The key that signs at `now`: the newest usable one whose `not_before` has come.
    fn signer(&self, now: i64) -> Option<&Loaded> {
        self.keys
            .iter()
            .filter(|k| {
                k.pair.is_some() && k.not_before <= now && k.retired_at.is_none_or(|r| r > now)
            })
            .max_by(|a, b| (a.not_before, &a.kid).cmp(&(b.not_before, &b.kid)))
    }

    /// Whether some key can sign at `now`.
    pub fn can_sign(&self, now: i64) -> bool {
        self.signer(now).is_some()
    }

    /// Whether no key is published.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Whether a usable key will start signing after `now` (a rotation in progress).
    pub fn has_pending(&self, now: i64) -> bool {
        self.keys
            .iter()
            .any(|k| k.pair.is_some() && k.not_before > now && k.retired_at.is_none())
    }

    /// Whether a key retired before `t` is still published.
    pub fn has_retired_before(&self, t: i64) -> bool {
        self.keys
            .iter()
            .any(|k| k.retired_at.is_some_and(|r| r < t))
    }

    /// The newest key's creation time (Unix ms), if any key exists.
    pub fn newest_created_at(&self) -> Option<i64> {
        self.keys.iter().map(|k| k.created_at).max()
    }

    /// Signs `claims` with the current key; `None` when no key can sign.
    pub fn sign(&self, claims: &Claims, now: i64) -> Option<String> {
        let key = self.signer(now)?;
        let mut out = String::with_capacity(512);
        out.push_str(&key.header);
        out.push('.');
        out.push_str(&B64URL.encode(serde_json::to_vec(claims).ok()?));
        let sig = key
            .pair
            .as_ref()?
            .sign(&SystemRandom::new(), out.as_bytes())
            .ok()?;
        out.push('.');
        out.push_str(&B64URL.encode(sig.as_ref()));
        Some(out)
    }

    /// Verifies a token's signature (against a published key), issuer and expiry at `now_s`
    /// (Unix seconds). The audience is the caller's to check.
    ///
    /// # Errors
    /// Why it does not verify.
    pub fn verify(&self, token: &str, issuer: &str, now_s: i64) -> Result<Claims, Invalid> {
        if token.len() > 4096 {
            return Err(Invalid::Malformed);
        }
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(Invalid::Malformed);
        };
        #[derive(Deserialize)]
        struct Header {
            alg: String,
            kid: Option<String>,
        }
        let header: Header = B64URL
            .decode(h)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or(Invalid::Malformed)?;
        if header.alg != "ES256" {
            return Err(Invalid::Malformed);
        }
        let kid = header.kid.ok_or(Invalid::UnknownKey)?;
        let key = self
            .keys
            .iter()
            .find(|k| k.kid == kid)
            .ok_or(Invalid::UnknownKey)?;
        let sig = B64URL.decode(s).map_err(|_| Invalid::Malformed)?;
        let signed = &token[..h.len() + 1 + p.len()];
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &key.public)
            .verify(signed.as_bytes(), &sig)
            .map_err(|_| Invalid::Signature)?;
        let claims: Claims = B64URL
            .decode(p)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or(Invalid::Malformed)?;
        if claims.iss != issuer {
            return Err(Invalid::Issuer);
        }
        // A minute of leeway for clocks, never more.
        if claims.exp <= now_s || claims.iat > now_s + 60 {
            return Err(Invalid::Expired);
        }
        Ok(claims)
    }

    /// The JWKS document: every published key.
    pub fn jwks(&self) -> serde_json::Value {
        serde_json::json!({ "keys": self.keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>() })
    }

    /// Every key's public facts, newest first.
    pub fn info(&self, now: i64) -> Vec<KeyInfo> {
        let current = self.signer(now).map(|k| k.kid.clone());
        let mut keys: Vec<&Loaded> = self.keys.iter().collect();
        keys.sort_by(|a, b| {
            (b.created_at, b.not_before, &b.kid).cmp(&(a.created_at, a.not_before, &a.kid))
        });
        keys.into_iter()
            .map(|k| KeyInfo {
                kid: k.kid.clone(),
                status: if Some(&k.kid) == current.as_ref() {
                    "current"
                } else if k.retired_at.is_some() || k.not_before <= now {
                    "retired"
                } else {
                    "next"
                },
                created_at: k.created_at / 1000,
                not_before: k.not_before / 1000,
                retired_at: k.retired_at.map(|r| r / 1000),
                usable: k.pair.is_some(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring_of(records: &[KeyRecord]) -> SigningKeys {
        SigningKeys::load(records, |s, _| Some(s.to_vec()))
    }

    fn claims(now_s: i64) -> Claims {
        Claims {
            iss: "https://login.example".into(),
            aud: "wxapp".into(),
            sub: "o1".into(),
            openid: "o1".into(),
            unionid: None,
            sid: "s".into(),
            iat: now_s,
            exp: now_s + 900,
        }
    }

    #[test]
    fn sign_verify_and_refusals() {
        let now = 1_700_000_000_000;
        let k = generate(|p, _| p.to_vec(), "k".into(), now, now);
        let ring = ring_of(std::slice::from_ref(&k));
        let t = ring.sign(&claims(now / 1000), now).expect("signs");
        let iss = "https://login.example";
        assert_eq!(ring.verify(&t, iss, now / 1000), Ok(claims(now / 1000)));
        assert_eq!(
            ring.verify(&t, "https://other", now / 1000),
            Err(Invalid::Issuer)
        );
        assert_eq!(
            ring.verify(&t, iss, now / 1000 + 900),
            Err(Invalid::Expired)
        );
        // A flipped payload bit breaks the signature.
        let mut parts: Vec<String> = t.split('.').map(str::to_owned).collect();
        let mut payload = B64URL.decode(&parts[1]).unwrap();
        payload[10] ^= 1;
        parts[1] = B64URL.encode(payload);
        assert_eq!(
            ring.verify(&parts.join("."), iss, now / 1000),
            Err(Invalid::Signature)
        );
        // alg "none" and other algorithms are refused before any key is looked at.
        let none = format!(
            "{}.{}.",
            B64URL.encode(r#"{"alg":"none","kid":"x"}"#),
            parts[1]
        );
        assert_eq!(ring.verify(&none, iss, now / 1000), Err(Invalid::Malformed));
        // Another key's token: unknown kid.
        let other = generate(|p, _| p.to_vec(), "k".into(), now, now);
        let t2 = ring_of(&[other]).sign(&claims(now / 1000), now).unwrap();
        assert_eq!(ring.verify(&t2, iss, now / 1000), Err(Invalid::UnknownKey));
    }

    #[test]
    fn the_newest_key_whose_time_has_come_signs() {
        let now = 1_700_000_000_000;
        let old = generate(|p, _| p.to_vec(), "k".into(), now - 10, now - 10);
        let next = generate(|p, _| p.to_vec(), "k".into(), now, now + 60_000);
        let ring = ring_of(&[old.clone(), next.clone()]);
        let kid_of = |t: &str| -> String {
            let h: serde_json::Value =
                serde_json::from_slice(&B64URL.decode(t.split('.').next().unwrap()).unwrap())
                    .unwrap();
            h["kid"].as_str().unwrap().to_owned()
        };
        assert_eq!(kid_of(&ring.sign(&claims(0), now).unwrap()), old.kid);
        assert_eq!(
            kid_of(&ring.sign(&claims(0), now + 60_000).unwrap()),
            next.kid
        );
        assert_eq!(ring.jwks()["keys"].as_array().unwrap().len(), 2);
        // A key whose private half does not open publishes but never signs.
        let sealed_elsewhere = SigningKeys::load(&[next], |_, _| None);
        assert!(!sealed_elsewhere.can_sign(now + 60_000));
        assert_eq!(sealed_elsewhere.jwks()["keys"].as_array().unwrap().len(), 1);
        assert!(!format!("{:?}", old).contains("sealed"));
    }
}
