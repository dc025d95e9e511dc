//! Mini program crypto: `encryptedData` decryption with a strict watermark check, the legacy
//! rawData signature, and the login-state signature used by checksession and friends.
//!
//! Every failure is a distinct [`CryptoError`]; nothing here panics on hostile input.

use aes::cipher::{block_padding::NoPadding, BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha1::{Digest, Sha1};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::error::CryptoError;
use crate::secret::SessionKey;

type Aes128CbcDec = cbc::Decryptor<aes::Aes128>;
type Aes128CbcEnc = cbc::Encryptor<aes::Aes128>;

/// Decodes base64, naming the field on failure.
pub(crate) fn b64(field: &'static str, value: &str) -> Result<Vec<u8>, CryptoError> {
    B64.decode(value.trim())
        .map_err(|_| CryptoError::InvalidBase64 { field })
}

/// Removes PKCS#7 padding for the given block size, checking every padding byte.
pub(crate) fn unpad_pkcs7(data: &[u8], block: usize) -> Result<&[u8], CryptoError> {
    let n = *data.last().ok_or(CryptoError::BadPadding)? as usize;
    if n == 0 || n > block || n > data.len() {
        return Err(CryptoError::BadPadding);
    }
    let (body, pad) = data.split_at(data.len() - n);
    // Constant-time check of the padding bytes: a padding oracle must not learn which byte failed.
    let ok = pad
        .iter()
        .fold(0u8, |acc, b| acc | (b ^ n as u8))
        .ct_eq(&0u8);
    if bool::from(ok) {
        Ok(body)
    } else {
        Err(CryptoError::BadPadding)
    }
}

/// Appends PKCS#7 padding for the given block size (always at least one byte).
pub(crate) fn pad_pkcs7(data: &mut Vec<u8>, block: usize) {
    let n = block - data.len() % block;
    data.extend(std::iter::repeat_n(n as u8, n));
}

/// Options for [`decrypt_user_data`].
#[derive(Debug, Clone, Default)]
pub struct DecryptOptions {
    /// Reject data whose `watermark.timestamp` is older than this many seconds (relative to
    /// `now_secs`). `None` disables the check (the default: WeChat gives no freshness guarantee).
    pub max_age_secs: Option<u64>,
    /// The current Unix time used by the freshness check; `None` means the system clock.
    pub now_secs: Option<i64>,
}

/// Decrypts a mini program `encryptedData` blob (AES-128-CBC, PKCS#7) with the user's
/// session_key and checks that `watermark.appid` equals `appid`.
///
/// Returns the decrypted JSON (watermark included).
///
/// # Errors
/// A distinct [`CryptoError`] for bad base64, a key or iv of the wrong length, a ciphertext that
/// is not whole blocks, bad padding, non-JSON plaintext, a missing watermark, a foreign appid and
/// (with `max_age_secs`) a stale watermark.
///
/// ```
/// # use weapp::{crypto::{decrypt_user_data, DecryptOptions}, SessionKey};
/// let key = SessionKey::new("tiihtNczf5v6AKRyjwEUhQ==");
/// let err = decrypt_user_data("wx4f4bc4dec97d474b", &key, "r7BXXKkLb8qrSNn05n0qiA==", "not base64!", &DecryptOptions::default());
/// assert!(err.is_err());
/// ```
pub fn decrypt_user_data(
    appid: &str,
    session_key: &SessionKey,
    iv: &str,
    encrypted_data: &str,
    options: &DecryptOptions,
) -> Result<Value, CryptoError> {
    decrypt(Some(appid), session_key, iv, encrypted_data, options)
}

/// Like [`decrypt_user_data`] for a caller that does not know which app the data is for: the
/// watermark must be there (and, with `max_age_secs`, fresh), but its appid is not compared.
/// Prefer [`decrypt_user_data`] whenever the appid is known.
///
/// # Errors
/// As [`decrypt_user_data`], without [`CryptoError::AppidMismatch`].
pub fn decrypt_user_data_any_app(
    session_key: &SessionKey,
    iv: &str,
    encrypted_data: &str,
    options: &DecryptOptions,
) -> Result<Value, CryptoError> {
    decrypt(None, session_key, iv, encrypted_data, options)
}

fn decrypt(
    appid: Option<&str>,
    session_key: &SessionKey,
    iv: &str,
    encrypted_data: &str,
    options: &DecryptOptions,
) -> Result<Value, CryptoError> {
    let key = b64("session_key", session_key.expose())?;
    let iv = b64("iv", iv)?;
    let data = b64("encrypted_data", encrypted_data)?;
    if key.len() != 16 {
        return Err(CryptoError::InvalidKeyLength {
            expected: 16,
            actual: key.len(),
        });
    }
    if iv.len() != 16 {
        return Err(CryptoError::InvalidIvLength(iv.len()));
    }
    if data.is_empty() || data.len() % 16 != 0 {
        return Err(CryptoError::InvalidCiphertextLength(data.len()));
    }
    let mut buf = data;
    let plain = Aes128CbcDec::new_from_slices(&key, &iv)
        .map_err(|_| CryptoError::InvalidKeyLength {
            expected: 16,
            actual: key.len(),
        })?
        .decrypt_padded_mut::<NoPadding>(&mut buf)
        .map_err(|_| CryptoError::BadPadding)?;
    let plain = unpad_pkcs7(plain, 16)?;
    let value: Value =
        serde_json::from_slice(plain).map_err(|e| CryptoError::NotJson(e.to_string()))?;
    let watermark = value
        .get("watermark")
        .ok_or(CryptoError::MissingWatermark)?;
    let actual = watermark
        .get("appid")
        .and_then(Value::as_str)
        .ok_or(CryptoError::MissingWatermark)?;
    if let Some(appid) = appid.filter(|appid| *appid != actual) {
        return Err(CryptoError::AppidMismatch {
            expected: appid.to_owned(),
            actual: actual.to_owned(),
        });
    }
    if let Some(max_age) = options.max_age_secs {
        let timestamp = watermark
            .get("timestamp")
            .and_then(Value::as_i64)
            .ok_or(CryptoError::MissingWatermark)?;
        let now = options.now_secs.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0)
        });
        if now.saturating_sub(timestamp) > max_age as i64 {
            return Err(CryptoError::StaleWatermark {
                timestamp,
                max_age_secs: max_age,
            });
        }
    }
    Ok(value)
}

/// Encrypts `plaintext` the way WeChat produces `encryptedData`: AES-128-CBC with PKCS#7.
/// Returns base64 ciphertext. Used by the simulator and by tests.
///
/// # Errors
/// [`CryptoError`] when the key or iv is not base64 of 16 bytes.
pub fn encrypt_user_data(
    session_key: &SessionKey,
    iv: &str,
    plaintext: &[u8],
) -> Result<String, CryptoError> {
    let key = b64("session_key", session_key.expose())?;
    let iv = b64("iv", iv)?;
    if key.len() != 16 {
        return Err(CryptoError::InvalidKeyLength {
            expected: 16,
            actual: key.len(),
        });
    }
    if iv.len() != 16 {
        return Err(CryptoError::InvalidIvLength(iv.len()));
    }
    let mut buf = plaintext.to_vec();
    pad_pkcs7(&mut buf, 16);
    let len = buf.len();
    let enc = Aes128CbcEnc::new_from_slices(&key, &iv).map_err(|_| CryptoError::BadPadding)?;
    enc.encrypt_padded_mut::<NoPadding>(&mut buf, len)
        .map_err(|_| CryptoError::BadPadding)?;
    Ok(B64.encode(buf))
}

/// The legacy rawData signature: `sha1_hex(raw_data + session_key)`.
pub fn raw_data_signature(raw_data: &str, session_key: &SessionKey) -> String {
    let mut h = Sha1::new();
    h.update(raw_data.as_bytes());
    h.update(session_key.expose().as_bytes());
    hex::encode(h.finalize())
}

/// Checks a legacy rawData `signature` in constant time.
pub fn verify_raw_data(raw_data: &str, session_key: &SessionKey, signature: &str) -> bool {
    let expected = raw_data_signature(raw_data, session_key);
    expected
        .as_bytes()
        .ct_eq(signature.to_ascii_lowercase().as_bytes())
        .into()
}

/// The login-state signature of checksession / resetusersessionkey / getuserencryptkey:
/// `hex(HMAC-SHA256(key = the session_key's base64 text, msg = body))`; for GET the body is `""`.
pub fn login_state_signature(session_key: &SessionKey, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(session_key.expose().as_bytes())
        .expect("HMAC accepts keys of any length");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const APPID: &str = "wx4f4bc4dec97d474b";

    fn key() -> SessionKey {
        SessionKey::new("tiihtNczf5v6AKRyjwEUhQ==")
    }
    const IV: &str = "r7BXXKkLb8qrSNn05n0qiA==";

    fn sealed(value: &Value) -> String {
        encrypt_user_data(&key(), IV, value.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn login_state_signature_matches_the_spec_vector() {
        let sig = login_state_signature(
            &SessionKey::new("o0q0otL8aEzpcZL/FT9WsQ=="),
            br#"{"foo":"bar"}"#,
        );
        assert_eq!(
            sig,
            "654571f79995b2ce1e149e53c0a33dc39c0a74090db514261454e8dbe432aa0b"
        );
    }

    #[test]
    fn raw_data_signature_matches_the_spec_vector() {
        let key = SessionKey::new("HyVFkGl5F5OQWJZZaNzBBg==");
        let raw = r#"{"nickName":"Band","gender":1,"language":"zh_CN","city":"Guangzhou","province":"Guangdong","country":"CN","avatarUrl":"http://wx.qlogo.cn/mmopen/vi_32/1vZvI39NWFQ9XM4LtQpFrQJ1xlgZxx3w7bQxKARol6503Iuswjjn6nIGBiaycAjAtpujxyzYsrztuuICqIM5ibXQ/0"}"#;
        assert_eq!(
            raw_data_signature(raw, &key),
            "75e81ceda165f4ffa64f4068af58c64b8f54b88c"
        );
        assert!(verify_raw_data(
            raw,
            &key,
            "75E81CEDA165F4FFA64F4068AF58C64B8F54B88C"
        ));
        assert!(!verify_raw_data(
            raw,
            &key,
            "75e81ceda165f4ffa64f4068af58c64b8f54b88d"
        ));
    }

    #[test]
    fn round_trip_with_matching_watermark() {
        let v = json!({"phoneNumber": "13800138000", "watermark": {"appid": APPID, "timestamp": 1_700_000_000}});
        let out =
            decrypt_user_data(APPID, &key(), IV, &sealed(&v), &DecryptOptions::default()).unwrap();
        assert_eq!(out, v);
    }

    #[test]
    fn each_failure_has_its_own_error() {
        let opts = DecryptOptions::default();
        let good = sealed(&json!({"watermark": {"appid": APPID, "timestamp": 1}}));
        let err = |r: Result<Value, CryptoError>| r.unwrap_err();

        assert_eq!(
            err(decrypt_user_data(APPID, &key(), IV, "@@@", &opts)),
            CryptoError::InvalidBase64 {
                field: "encrypted_data"
            }
        );
        assert_eq!(
            err(decrypt_user_data(APPID, &key(), "!!", &good, &opts)),
            CryptoError::InvalidBase64 { field: "iv" }
        );
        assert_eq!(
            err(decrypt_user_data(
                APPID,
                &SessionKey::new("%%"),
                IV,
                &good,
                &opts
            )),
            CryptoError::InvalidBase64 {
                field: "session_key"
            }
        );
        assert_eq!(
            err(decrypt_user_data(
                APPID,
                &SessionKey::new("AAAA"),
                IV,
                &good,
                &opts
            )),
            CryptoError::InvalidKeyLength {
                expected: 16,
                actual: 3
            }
        );
        assert_eq!(
            err(decrypt_user_data(APPID, &key(), "AAAA", &good, &opts)),
            CryptoError::InvalidIvLength(3)
        );
        assert_eq!(
            err(decrypt_user_data(APPID, &key(), IV, "AAAA", &opts)),
            CryptoError::InvalidCiphertextLength(3)
        );
        // A different key yields garbage whose padding fails (or, rarely, non-JSON).
        let wrong = SessionKey::new("AAAAAAAAAAAAAAAAAAAAAA==");
        assert!(matches!(
            err(decrypt_user_data(APPID, &wrong, IV, &good, &opts)),
            CryptoError::BadPadding | CryptoError::NotJson(_)
        ));
        let not_json = encrypt_user_data(&key(), IV, b"hello").unwrap();
        assert!(matches!(
            err(decrypt_user_data(APPID, &key(), IV, &not_json, &opts)),
            CryptoError::NotJson(_)
        ));
        let no_wm = sealed(&json!({"a": 1}));
        assert_eq!(
            err(decrypt_user_data(APPID, &key(), IV, &no_wm, &opts)),
            CryptoError::MissingWatermark
        );
        let foreign = sealed(&json!({"watermark": {"appid": "wxother", "timestamp": 1}}));
        assert_eq!(
            err(decrypt_user_data(APPID, &key(), IV, &foreign, &opts)),
            CryptoError::AppidMismatch {
                expected: APPID.into(),
                actual: "wxother".into()
            }
        );
        let fresh = DecryptOptions {
            max_age_secs: Some(60),
            now_secs: Some(100),
        };
        assert_eq!(
            err(decrypt_user_data(APPID, &key(), IV, &good, &fresh)),
            CryptoError::StaleWatermark {
                timestamp: 1,
                max_age_secs: 60
            }
        );
        let fresh = DecryptOptions {
            max_age_secs: Some(60),
            now_secs: Some(30),
        };
        assert!(decrypt_user_data(APPID, &key(), IV, &good, &fresh).is_ok());
    }

    #[test]
    fn padding_bytes_are_all_checked() {
        assert_eq!(unpad_pkcs7(&[1, 2, 3, 2, 2], 16).unwrap(), &[1, 2, 3]);
        assert_eq!(
            unpad_pkcs7(&[1, 2, 3, 1, 2], 16),
            Err(CryptoError::BadPadding)
        );
        assert_eq!(unpad_pkcs7(&[1, 0], 16), Err(CryptoError::BadPadding));
        assert_eq!(unpad_pkcs7(&[17; 17], 16), Err(CryptoError::BadPadding));
        assert_eq!(unpad_pkcs7(&[], 16), Err(CryptoError::BadPadding));
        let mut v = vec![0u8; 16];
        pad_pkcs7(&mut v, 16);
        assert_eq!(v.len(), 32);
        assert_eq!(unpad_pkcs7(&v, 16).unwrap(), &[0u8; 16]);
    }
}
