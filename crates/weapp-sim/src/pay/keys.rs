//! The WeChat Pay side's cryptography, written for the simulator alone (not shared with the
//! SDK, so a mistake in one cannot hide behind the same mistake in the other): RSA-2048 key
//! pairs, SHA256withRSA (PKCS#1 v1.5) signatures, the platform's self-signed X.509
//! certificates built as DER by hand, and AEAD_AES_256_GCM for notification resources and
//! certificate downloads.
//!
//! A leaf: it imports nothing of the crate.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use rsa::pkcs1::DecodeRsaPublicKey;
use rsa::pkcs1v15::{Signature, SigningKey, VerifyingKey};
use rsa::pkcs8::{DecodePublicKey, EncodePrivateKey, EncodePublicKey, LineEnding};
use rsa::signature::{SignatureEncoding, Signer, Verifier};
use rsa::{RsaPrivateKey, RsaPublicKey};
use sha2::Sha256;

/// A fresh RSA-2048 key pair. CPU-bound (tens to hundreds of milliseconds, optimised): call it
/// from a blocking task.
pub(crate) fn generate() -> RsaPrivateKey {
    RsaPrivateKey::new(&mut rand::thread_rng(), 2048).expect("2048-bit RSA key generation")
}

/// The private key as `apiclient_key.pem` holds it: PKCS#8, `-----BEGIN PRIVATE KEY-----`.
pub(crate) fn private_pem(key: &RsaPrivateKey) -> String {
    key.to_pkcs8_pem(LineEnding::LF)
        .expect("an RSA key encodes")
        .to_string()
}

/// The public key as `pub_key.pem` holds it: SPKI, `-----BEGIN PUBLIC KEY-----`.
pub(crate) fn public_pem(key: &RsaPublicKey) -> String {
    key.to_public_key_pem(LineEnding::LF)
        .expect("an RSA key encodes")
}

/// A merchant's public key from PEM: SPKI (`BEGIN PUBLIC KEY`) or PKCS#1 (`BEGIN RSA PUBLIC
/// KEY`). `None` when it is neither.
pub(crate) fn parse_public_pem(pem: &str) -> Option<RsaPublicKey> {
    let pem = pem.trim();
    RsaPublicKey::from_public_key_pem(pem)
        .ok()
        .or_else(|| RsaPublicKey::from_pkcs1_pem(pem).ok())
}

/// Base64 of SHA256withRSA (PKCS#1 v1.5) over `message`.
pub(crate) fn sign(key: &RsaPrivateKey, message: &[u8]) -> String {
    let signer = SigningKey::<Sha256>::new(key.clone());
    B64.encode(signer.sign(message).to_bytes())
}

/// Whether `signature_b64` is a valid SHA256withRSA signature of `message` by `key`.
pub(crate) fn verify(key: &RsaPublicKey, message: &[u8], signature_b64: &str) -> bool {
    let Ok(raw) = B64.decode(signature_b64.trim()) else {
        return false;
    };
    let Ok(sig) = Signature::try_from(raw.as_slice()) else {
        return false;
    };
    VerifyingKey::<Sha256>::new(key.clone())
        .verify(message, &sig)
        .is_ok()
}

/// AEAD_AES_256_GCM as WeChat Pay uses it: the key is the APIv3 key's 32 ASCII bytes, the
/// nonce a 12-character string taken as its bytes, the associated data a short string; the
/// ciphertext is Base64(ct ‖ tag). `None` when the key is not 32 bytes.
pub(crate) fn aead_encrypt(
    key: &str,
    nonce: &str,
    associated_data: &str,
    plain: &[u8],
) -> Option<String> {
    let cipher = Aes256Gcm::new_from_slice(key.as_bytes()).ok()?;
    if nonce.len() != 12 {
        return None;
    }
    let ct = cipher
        .encrypt(
            Nonce::from_slice(nonce.as_bytes()),
            Payload {
                msg: plain,
                aad: associated_data.as_bytes(),
            },
        )
        .ok()?;
    Some(B64.encode(ct))
}

// ------------------------------------------------------------------------ X.509, by hand

/// A DER element: tag, length, content.
fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let n = content.len();
    if n < 0x80 {
        out.push(n as u8);
    } else {
        let bytes: Vec<u8> = n
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out.extend_from_slice(content);
    out
}

fn seq(parts: &[Vec<u8>]) -> Vec<u8> {
    tlv(0x30, &parts.concat())
}

/// `sha256WithRSAEncryption` (1.2.840.113549.1.1.11) with NULL parameters.
fn sha256_with_rsa() -> Vec<u8> {
    seq(&[
        tlv(
            0x06,
            &[0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01, 0x0B],
        ),
        vec![0x05, 0x00],
    ])
}

/// A Name of `(attribute OID's last byte under 2.5.4, UTF-8 value)` pairs.
fn name(attrs: &[(u8, &str)]) -> Vec<u8> {
    let rdns: Vec<Vec<u8>> = attrs
        .iter()
        .map(|(oid, value)| {
            tlv(
                0x31,
                &seq(&[tlv(0x06, &[0x55, 0x04, *oid]), tlv(0x0C, value.as_bytes())]),
            )
        })
        .collect();
    seq(&rdns)
}

/// UTCTime before 2050, GeneralizedTime from then on (RFC 5280 §4.1.2.5).
fn x509_time(unix_secs: i64) -> Vec<u8> {
    let (y, mo, d, h, mi, s) = super::time::civil(unix_secs);
    if (1950..2050).contains(&y) {
        tlv(
            0x17,
            format!("{:02}{mo:02}{d:02}{h:02}{mi:02}{s:02}Z", y % 100).as_bytes(),
        )
    } else {
        tlv(
            0x18,
            format!("{y:04}{mo:02}{d:02}{h:02}{mi:02}{s:02}Z").as_bytes(),
        )
    }
}

/// A self-signed X.509 v3 certificate for `key`, as PEM: serial `serial_hex` (40 hex digits,
/// the first non-zero, below 0x80 so the INTEGER is positive without padding), valid from
/// `not_before` to `not_after` (Unix seconds), subject and issuer naming the simulated
/// Tenpay platform and `mchid`.
pub(crate) fn self_signed_certificate(
    key: &RsaPrivateKey,
    serial_hex: &str,
    mchid: &str,
    not_before: i64,
    not_after: i64,
) -> String {
    let serial = hex::decode(serial_hex).expect("a hex serial");
    let subject = name(&[
        (0x06, "CN"),
        (0x0A, "Tenpay.com (weapp-sim)"),
        (0x0B, mchid),
        (0x03, "Tenpay.com platform certificate (weapp-sim)"),
    ]);
    let spki = key
        .to_public_key()
        .to_public_key_der()
        .expect("an RSA key encodes")
        .as_bytes()
        .to_vec();
    let tbs = seq(&[
        tlv(0xA0, &tlv(0x02, &[2])),
        tlv(0x02, &serial),
        sha256_with_rsa(),
        subject.clone(),
        seq(&[x509_time(not_before), x509_time(not_after)]),
        subject,
        spki,
    ]);
    let signature = SigningKey::<Sha256>::new(key.clone()).sign(&tbs).to_bytes();
    let mut bits = vec![0u8];
    bits.extend_from_slice(&signature);
    let der = seq(&[tbs, sha256_with_rsa(), tlv(0x03, &bits)]);
    let b64 = B64.encode(der);
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(chunk).expect("base64 is ASCII"));
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    pem
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aead_matches_the_published_gcm_framing() {
        // wechat-pay.md §6: the Go SDK's vector uses a 16-byte key (AES-128), so only the
        // framing can be checked here: a 32-byte key round-trips, others are refused.
        let key = "0123456789abcdef0123456789abcdef";
        let ct = aead_encrypt(key, "wCq51qZv4Yfg", "transaction", b"Hello World").unwrap();
        let raw = B64.decode(&ct).unwrap();
        assert_eq!(raw.len(), 11 + 16, "ciphertext then a 16-byte tag");
        let plain = Aes256Gcm::new_from_slice(key.as_bytes())
            .unwrap()
            .decrypt(
                Nonce::from_slice(b"wCq51qZv4Yfg"),
                Payload {
                    msg: &raw,
                    aad: b"transaction",
                },
            )
            .unwrap();
        assert_eq!(plain, b"Hello World");
        assert!(aead_encrypt("testAPIv3Key0000", "wCq51qZv4Yfg", "", b"x").is_none());
    }
}
