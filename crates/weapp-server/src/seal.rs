//! Encryption at rest of session_keys: AES-256-GCM under the server's data key, a fresh random
//! nonce per value (`nonce ‖ ciphertext ‖ tag`).

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;

/// The data key. `Debug` never shows it.
#[derive(Clone)]
pub struct DataKey(Aes256Gcm);

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey(***)")
    }
}

impl DataKey {
    /// From base64 of 32 bytes.
    ///
    /// # Errors
    /// A message naming the problem.
    pub fn from_base64(text: &str) -> Result<Self, String> {
        let bytes = B64
            .decode(text.trim())
            .map_err(|_| "data_key is not valid base64".to_owned())?;
        if bytes.len() != 32 {
            return Err(format!(
                "data_key must decode to 32 bytes, got {}",
                bytes.len()
            ));
        }
        Ok(Self(
            Aes256Gcm::new_from_slice(&bytes).map_err(|e| e.to_string())?,
        ))
    }

    /// A new random key, base64.
    pub fn generate_base64() -> String {
        B64.encode(rand::random::<[u8; 32]>())
    }

    /// Encrypts `plain`.
    pub fn seal(&self, plain: &[u8]) -> Vec<u8> {
        let nonce: [u8; 12] = rand::random();
        let mut out = nonce.to_vec();
        out.extend(
            self.0
                .encrypt(Nonce::from_slice(&nonce), plain)
                .expect("AES-GCM encryption cannot fail"),
        );
        out
    }

    /// Decrypts what [`DataKey::seal`] produced; `None` if it was tampered with or sealed
    /// under another key.
    pub fn open(&self, sealed: &[u8]) -> Option<Vec<u8>> {
        if sealed.len() < 12 + 16 {
            return None;
        }
        let (nonce, ct) = sealed.split_at(12);
        self.0.decrypt(Nonce::from_slice(nonce), ct).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_round_trips_and_detects_tampering() {
        let key = DataKey::from_base64(&DataKey::generate_base64()).unwrap();
        let sealed = key.seal(b"o0q0otL8aEzpcZL/FT9WsQ==");
        assert!(
            !sealed.windows(8).any(|w| w == b"o0q0otL8"),
            "no plaintext at rest"
        );
        assert_eq!(key.open(&sealed).unwrap(), b"o0q0otL8aEzpcZL/FT9WsQ==");
        let mut bad = sealed.clone();
        bad[20] ^= 1;
        assert!(key.open(&bad).is_none());
        let other = DataKey::from_base64(&DataKey::generate_base64()).unwrap();
        assert!(other.open(&sealed).is_none());
        assert!(DataKey::from_base64("short").is_err());
        assert!(format!("{key:?}").contains("***"));
    }
}
