//! Keys: the merchant's RSA private key (signs requests and `paySign`), WeChat's RSA public
//! keys (the WeChat Pay public key and platform certificates, which verify WeChat's
//! signatures), and the APIv3 key (AES-256-GCM for notifications and certificates).
//!
//! RSA is ring's (constant-time; not the `rsa` crate, RUSTSEC-2023-0071). Private keys and the
//! APIv3 key print as `***` in `Debug` and `Display`.

use std::sync::Arc;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use ring::signature::{self as sig, RsaKeyPair};

use crate::pay::der;
use crate::pay::error::{KeyError, PayError};
use crate::pay::time::PayTime;

/// The merchant API private key (`apiclient_key.pem`): PKCS#8 (`BEGIN PRIVATE KEY`, what
/// WeChat issues) or PKCS#1 (`BEGIN RSA PRIVATE KEY`), RSA 2048–8192 bits. Cheap to clone.
#[derive(Clone)]
pub struct MerchantPrivateKey(Arc<RsaKeyPair>);

impl MerchantPrivateKey {
    /// Loads a PEM private key, PKCS#8 or PKCS#1 (unencrypted).
    ///
    /// # Errors
    /// [`KeyError`] when the text is not such a PEM block or ring refuses the key.
    pub fn from_pem(pem: &str) -> Result<Self, KeyError> {
        let (label, der) = der::pem_decode(
            pem,
            &["PRIVATE KEY", "RSA PRIVATE KEY"],
            "PRIVATE KEY or RSA PRIVATE KEY",
        )?;
        if label == "PRIVATE KEY" {
            Self::from_pkcs8_der(&der)
        } else {
            Self::from_pkcs1_der(&der)
        }
    }

    /// Loads a DER PKCS#8 `PrivateKeyInfo`.
    ///
    /// # Errors
    /// [`KeyError::Rejected`] when ring refuses it.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, KeyError> {
        RsaKeyPair::from_pkcs8(der)
            .map(|k| Self(Arc::new(k)))
            .map_err(|e| KeyError::Rejected(e.to_string()))
    }

    /// Loads a DER PKCS#1 `RSAPrivateKey` (ring parses it natively: `RsaKeyPair::from_der`).
    ///
    /// # Errors
    /// [`KeyError::Rejected`] when ring refuses it.
    pub fn from_pkcs1_der(der: &[u8]) -> Result<Self, KeyError> {
        RsaKeyPair::from_der(der)
            .map(|k| Self(Arc::new(k)))
            .map_err(|e| KeyError::Rejected(e.to_string()))
    }

    /// SHA256withRSA (PKCS#1 v1.5) over `message`, base64 (standard, padded): the signature
    /// of requests and of `paySign`.
    ///
    /// # Errors
    /// [`PayError::Sign`] if ring fails (it does not with a loaded key).
    pub fn sign(&self, message: &[u8]) -> Result<String, PayError> {
        let mut out = vec![0u8; self.0.public().modulus_len()];
        self.0
            .sign(
                &sig::RSA_PKCS1_SHA256,
                &ring::rand::SystemRandom::new(),
                message,
                &mut out,
            )
            .map_err(|_| PayError::Sign)?;
        Ok(B64.encode(out))
    }

    /// The public half (what WeChat holds in the merchant certificate).
    pub fn public_key(&self) -> RsaPublicKey {
        RsaPublicKey(Arc::from(self.0.public().as_ref()))
    }
}

impl std::fmt::Debug for MerchantPrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MerchantPrivateKey(***)")
    }
}

/// An RSA public key that verifies WeChat's SHA256withRSA signatures. Cheap to clone.
#[derive(Clone, PartialEq, Eq)]
pub struct RsaPublicKey(Arc<[u8]>);

impl RsaPublicKey {
    /// Loads `BEGIN PUBLIC KEY` (SubjectPublicKeyInfo, as `pub_key.pem` is) or
    /// `BEGIN RSA PUBLIC KEY` (PKCS#1).
    ///
    /// # Errors
    /// [`KeyError`] when it is not such a PEM block or not an RSA key.
    pub fn from_pem(pem: &str) -> Result<Self, KeyError> {
        let (label, der) = der::pem_decode(
            pem,
            &["PUBLIC KEY", "RSA PUBLIC KEY"],
            "PUBLIC KEY or RSA PUBLIC KEY",
        )?;
        let pkcs1 = if label == "PUBLIC KEY" {
            der::rsa_key_from_spki(&der)?
        } else {
            der
        };
        Ok(Self(Arc::from(pkcs1)))
    }

    /// True when `signature` (raw bytes) is this key's SHA256withRSA PKCS#1 v1.5 signature of
    /// `message`. Keys below 2048 bits never verify.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        sig::UnparsedPublicKey::new(&sig::RSA_PKCS1_2048_8192_SHA256, &self.0)
            .verify(message, signature)
            .is_ok()
    }

    /// The PKCS#1 `RSAPublicKey` DER.
    pub fn as_pkcs1_der(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for RsaPublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RsaPublicKey({} bytes)", self.0.len())
    }
}

/// A WeChat Pay platform certificate (`Wechatpay-Serial` = its serial number).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlatformCertificate {
    serial: String,
    not_before: PayTime,
    not_after: PayTime,
    key: RsaPublicKey,
}

impl PlatformCertificate {
    /// Reads an X.509 PEM certificate: its serial (upper-case hex), validity and RSA key.
    /// The certificate's own signature is not checked; see the module docs of
    /// [`crate::pay::CertificateStore`] for what makes a downloaded certificate trusted.
    ///
    /// # Errors
    /// [`KeyError`] for anything that is not an RSA certificate.
    pub fn from_pem(pem: &str) -> Result<Self, KeyError> {
        let (_, der) = der::pem_decode(pem, &["CERTIFICATE"], "CERTIFICATE")?;
        Self::from_der(&der)
    }

    /// As [`PlatformCertificate::from_pem`], from DER.
    ///
    /// # Errors
    /// [`KeyError`] for anything that is not an RSA certificate.
    pub fn from_der(der: &[u8]) -> Result<Self, KeyError> {
        let f = der::parse_certificate(der)?;
        Ok(Self {
            serial: f.serial,
            not_before: PayTime::from_unix(f.not_before),
            not_after: PayTime::from_unix(f.not_after),
            key: RsaPublicKey(Arc::from(f.rsa_public_key)),
        })
    }

    /// The serial number, upper-case hex (what `Wechatpay-Serial` carries).
    pub fn serial(&self) -> &str {
        &self.serial
    }

    /// The start of validity.
    pub fn not_before(&self) -> PayTime {
        self.not_before
    }

    /// The end of validity (WeChat's listing may end it earlier: see
    /// [`PlatformCertificate::with_listing_validity`]).
    pub fn not_after(&self) -> PayTime {
        self.not_after
    }

    /// The public key.
    pub fn public_key(&self) -> &RsaPublicKey {
        &self.key
    }

    /// Narrows the validity to what `/v3/certificates` lists (`effective_time`,
    /// `expire_time`): during a rotation WeChat moves the old certificate's `expire_time`
    /// earlier than its X.509 notAfter.
    pub fn with_listing_validity(mut self, effective: PayTime, expire: PayTime) -> Self {
        self.not_before = self.not_before.max(effective);
        self.not_after = self.not_after.min(expire);
        self
    }

    /// True when `at` is within the validity.
    pub fn is_valid_at(&self, at: PayTime) -> bool {
        self.not_before <= at && at <= self.not_after
    }
}

/// The APIv3 key: 32 ASCII bytes set in the merchant platform; the AES-256-GCM key of
/// notifications and certificate downloads. `Debug`/`Display` print `***`.
#[derive(Clone)]
pub struct ApiV3Key([u8; 32]);

impl ApiV3Key {
    /// Wraps the key.
    ///
    /// # Errors
    /// [`KeyError::ApiV3KeyLength`] unless it is exactly 32 bytes.
    pub fn new(key: &str) -> Result<Self, KeyError> {
        <[u8; 32]>::try_from(key.as_bytes())
            .map(Self)
            .map_err(|_| KeyError::ApiV3KeyLength(key.len()))
    }

    /// Decrypts an `AEAD_AES_256_GCM` resource: `nonce` and `associated_data` taken as their
    /// UTF-8 bytes, `ciphertext` = base64(ct ‖ 16-byte tag). `None` when base64 or the tag
    /// check fails (wrong key, altered data).
    pub fn decrypt(&self, nonce: &str, associated_data: &str, ciphertext: &str) -> Option<Vec<u8>> {
        aead_open(&self.0, nonce, associated_data, ciphertext)
    }

    /// Encrypts as WeChat does (the inverse of [`ApiV3Key::decrypt`]): for simulators and
    /// tests that play WeChat's side. `nonce` must be 12 bytes.
    ///
    /// # Errors
    /// [`PayError::InvalidArgument`] when `nonce` is not 12 bytes.
    pub fn encrypt(
        &self,
        nonce: &str,
        associated_data: &str,
        plaintext: &[u8],
    ) -> Result<String, PayError> {
        if nonce.len() != 12 {
            return Err(PayError::InvalidArgument("nonce must be 12 bytes".into()));
        }
        let cipher = aes_gcm::Aes256Gcm::new((&self.0).into());
        let ct = cipher
            .encrypt(
                aes_gcm::Nonce::from_slice(nonce.as_bytes()),
                Payload {
                    msg: plaintext,
                    aad: associated_data.as_bytes(),
                },
            )
            .map_err(|_| PayError::InvalidArgument("cannot encrypt".into()))?;
        Ok(B64.encode(ct))
    }
}

impl std::fmt::Debug for ApiV3Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiV3Key(***)")
    }
}

impl std::fmt::Display for ApiV3Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// AES-GCM open with a 32-byte key (production) or a 16-byte one (only the official Go SDK's
/// published test vectors use AES-128).
fn aead_open(key: &[u8], nonce: &str, aad: &str, ciphertext_b64: &str) -> Option<Vec<u8>> {
    if nonce.len() != 12 {
        return None;
    }
    let ct = B64.decode(ciphertext_b64).ok()?;
    let payload = Payload {
        msg: &ct,
        aad: aad.as_bytes(),
    };
    let nonce = aes_gcm::Nonce::from_slice(nonce.as_bytes());
    match key.len() {
        32 => aes_gcm::Aes256Gcm::new_from_slice(key)
            .ok()?
            .decrypt(nonce, payload)
            .ok(),
        16 => aes_gcm::Aes128Gcm::new_from_slice(key)
            .ok()?
            .decrypt(nonce, payload)
            .ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// wechatpay-apiv3/wechatpay-go `utils/aes_test.go` (AES-128: the vector's key is 16 bytes).
    #[test]
    fn go_sdk_gcm_vector_decrypts_byte_for_byte() {
        let pt = aead_open(
            b"testAPIv3Key0000",
            "wCq51qZv4Yfg",
            "Dl56FrqWQJF1t9LtC3vEUsniZKvbqdR8",
            "FsdXzxryWfKwvLJKf8LG/ToRPTRh8RN9wROC",
        );
        assert_eq!(pt.as_deref(), Some(&b"Hello World"[..]));
        // The same vector's failure cases.
        let open = |k: &[u8], ct: &str| {
            aead_open(k, "wCq51qZv4Yfg", "Dl56FrqWQJF1t9LtC3vEUsniZKvbqdR8", ct)
        };
        assert_eq!(
            open(b"testAPIv3Key1111", "FsdXzxryWfKwvLJKf8LG/ToRPTRh8RN9wROC"),
            None
        );
        assert_eq!(
            open(b"not a aes key", "FsdXzxryWfKwvLJKf8LG/ToRPTRh8RN9wROC"),
            None
        );
        assert_eq!(open(b"testAPIv3Key0000", "invalid cipher"), None);
        assert_eq!(open(b"testAPIv3Key0000", "SGVsbG8gV29ybGQK"), None);
        // A different associated_data fails the tag.
        assert_eq!(
            aead_open(
                b"testAPIv3Key0000",
                "wCq51qZv4Yfg",
                "transaction",
                "FsdXzxryWfKwvLJKf8LG/ToRPTRh8RN9wROC"
            ),
            None
        );
    }

    /// wechatpay-go `core/notify/notify_test.go`: the resource of its full notification
    /// (APIv3 key `testMchAPIv3Key0`, again 16 bytes).
    #[test]
    fn go_sdk_notification_resource_decrypts_byte_for_byte() {
        let ct = "YDS3lKPaC4Y52Gf3uhft5qUBlIa8b428AWTtTauHQfQrRw+X1WpiuHIDy0vo1Vd6VEq67aVyqPdDYMkRVSDaZL3iZttevRMOoPKMifozg6XPWjIZumks/GpT48lI4NizyeaqLBokNebthah3o1H76qSlO9NkDjp9bzmKLEYYH9TEklFUpsvPqOTOcgSLgh21YJXYR7dEBXFgRLiNIKRgO5JdXh1hccRUAlyVWxE54PXpnQ==";
        let pt = aead_open(b"testMchAPIv3Key0", "Kj7QIyUiYx1q", "payscore", ct).unwrap();
        assert_eq!(
            String::from_utf8(pt).unwrap(),
            r#"{"mchid":"1234567890","appid":"054aa7d7a2a54ab5898df65bd96f001c","create_time":"2020-06-30T12:12:00+08:00","out_contract_code":"21640bdbd08e473e828f3206a2741c6e"}"#
        );
    }

    #[test]
    fn apiv3_key_is_32_bytes_and_round_trips() {
        assert_eq!(
            ApiV3Key::new("short").unwrap_err(),
            KeyError::ApiV3KeyLength(5)
        );
        let key = ApiV3Key::new("0123456789abcdef0123456789abcdef").unwrap();
        let ct = key.encrypt("0123456789ab", "transaction", b"{}").unwrap();
        assert_eq!(
            key.decrypt("0123456789ab", "transaction", &ct).as_deref(),
            Some(&b"{}"[..])
        );
        assert_eq!(key.decrypt("0123456789ab", "refund", &ct), None);
        assert_eq!(key.decrypt("0123456789", "transaction", &ct), None);
        assert_eq!(format!("{key:?} {key}"), "ApiV3Key(***) ***");
    }
}
