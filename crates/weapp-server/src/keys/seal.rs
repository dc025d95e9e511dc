//! Encryption at rest of session_keys: AES-256-GCM under a keyring of data keys.
//!
//! A sealed value is `0x02 ‖ key id (4) ‖ nonce (12) ‖ ciphertext ‖ tag`, with the row it
//! belongs to (appid and openid) as associated data: a value copied into another user's row
//! does not open. The key id is a key check value — the first four bytes of
//! HMAC-SHA256(key, "weapp data key check") — stored with every value, so the server can tell at
//! start-up that a configured key is missing or wrong instead of failing request by request.
//! Values sealed by earlier versions (`nonce ‖ ciphertext ‖ tag`, no associated data) are still
//! opened, and re-sealed at start-up.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

const VERSION: u8 = 2;
const HEADER: usize = 1 + 4;

/// Why a data key or a keyring could not be made. Never carries a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DataKeyError {
    /// The text is not base64.
    #[error("data key is not valid base64")]
    NotBase64,
    /// The key does not decode to 32 bytes.
    #[error("a data key must decode to 32 bytes, got {0}")]
    Length(usize),
    /// A keyring of no key.
    #[error("no data key")]
    Empty,
    /// A keyring listing one key twice.
    #[error("the same data key is listed twice")]
    Duplicate,
    /// A key of a list, by its position.
    #[error("data key {index}: {source}")]
    At {
        /// Its position (0: the newest).
        index: usize,
        /// What is wrong with it.
        #[source]
        source: Box<DataKeyError>,
    },
}

/// One data key. `Debug` shows its id, never the key.
#[derive(Clone)]
pub struct DataKey {
    cipher: Aes256Gcm,
    id: [u8; 4],
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DataKey({})", hex::encode(self.id))
    }
}

impl DataKey {
    /// From base64 of 32 bytes.
    ///
    /// # Errors
    /// Not base64, or not 32 bytes.
    pub fn from_base64(text: &str) -> Result<Self, DataKeyError> {
        // The decoder's error is left out: it names the offending character.
        let bytes = B64
            .decode(text.trim())
            .map_err(|_| DataKeyError::NotBase64)?;
        if bytes.len() != 32 {
            return Err(DataKeyError::Length(bytes.len()));
        }
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&bytes).expect("any key length");
        mac.update(b"weapp data key check");
        let check = mac.finalize().into_bytes();
        Ok(Self {
            cipher: Aes256Gcm::new_from_slice(&bytes)
                .map_err(|_| DataKeyError::Length(bytes.len()))?,
            id: [check[0], check[1], check[2], check[3]],
        })
    }

    /// A new random key, base64.
    pub fn generate_base64() -> String {
        B64.encode(rand::random::<[u8; 32]>())
    }

    /// The key check value, hex (8 digits): safe to log and store.
    pub fn id(&self) -> String {
        hex::encode(self.id)
    }
}

/// The data keys, newest first: seals with the newest, opens with whichever sealed a value.
#[derive(Clone, Debug)]
pub struct Keyring {
    keys: Vec<DataKey>,
}

/// The associated data binding a sealed session_key to its row.
pub fn user_aad(appid: &str, openid: &str) -> Vec<u8> {
    format!("weapp/session_key\0{appid}\0{openid}").into_bytes()
}

impl Keyring {
    /// A keyring; `keys` newest first.
    ///
    /// # Errors
    /// No key, or two identical keys.
    pub fn new(keys: Vec<DataKey>) -> Result<Self, DataKeyError> {
        if keys.is_empty() {
            return Err(DataKeyError::Empty);
        }
        let mut ids: Vec<_> = keys.iter().map(|k| k.id).collect();
        ids.sort_unstable();
        ids.dedup();
        if ids.len() != keys.len() {
            return Err(DataKeyError::Duplicate);
        }
        Ok(Self { keys })
    }

    /// From base64 keys, newest first.
    ///
    /// # Errors
    /// A malformed key (named by its position), none, or a duplicate.
    pub fn from_base64<'a>(keys: impl IntoIterator<Item = &'a str>) -> Result<Self, DataKeyError> {
        let keys = keys
            .into_iter()
            .enumerate()
            .map(|(index, k)| {
                DataKey::from_base64(k).map_err(|e| DataKeyError::At {
                    index,
                    source: Box::new(e),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Self::new(keys)
    }

    /// The ids of the keys, newest first.
    pub fn ids(&self) -> Vec<String> {
        self.keys.iter().map(DataKey::id).collect()
    }

    /// The id of the key that seals new values.
    pub fn current_id(&self) -> String {
        self.keys[0].id()
    }

    /// Seals `plain` with the newest key, bound to `aad`.
    pub fn seal(&self, plain: &[u8], aad: &[u8]) -> Vec<u8> {
        let key = &self.keys[0];
        let nonce: [u8; 12] = rand::random();
        let mut out = Vec::with_capacity(HEADER + 12 + plain.len() + 16);
        out.push(VERSION);
        out.extend_from_slice(&key.id);
        out.extend_from_slice(&nonce);
        out.extend(
            key.cipher
                .encrypt(Nonce::from_slice(&nonce), Payload { msg: plain, aad })
                .expect("AES-GCM encryption cannot fail"),
        );
        out
    }

    /// The id of the key that sealed `sealed` (`None` for a value of the older format).
    pub fn key_id_of(sealed: &[u8]) -> Option<String> {
        (sealed.len() >= HEADER + 12 + 16 && sealed[0] == VERSION)
            .then(|| hex::encode(&sealed[1..HEADER]))
    }

    /// Opens a value sealed by [`Keyring::seal`] for `aad`; `None` if it was tampered with,
    /// belongs to another row, or was sealed under a key not in the ring.
    pub fn open(&self, sealed: &[u8], aad: &[u8]) -> Option<Vec<u8>> {
        if sealed.len() >= HEADER + 12 + 16 && sealed[0] == VERSION {
            let id = &sealed[1..HEADER];
            if let Some(key) = self.keys.iter().find(|k| k.id == id) {
                let (nonce, ct) = sealed[HEADER..].split_at(12);
                if let Ok(plain) = key
                    .cipher
                    .decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad })
                {
                    return Some(plain);
                }
            }
        }
        None
    }

    /// Opens a value of the older format (`nonce ‖ ciphertext ‖ tag`, no associated data)
    /// with any key of the ring.
    pub fn open_legacy(&self, sealed: &[u8]) -> Option<Vec<u8>> {
        if sealed.len() < 12 + 16 {
            return None;
        }
        let (nonce, ct) = sealed.split_at(12);
        self.keys
            .iter()
            .find_map(|k| k.cipher.decrypt(Nonce::from_slice(nonce), ct).ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> String {
        DataKey::generate_base64()
    }

    #[test]
    fn seal_round_trips_and_detects_tampering_and_moved_rows() {
        let ring = Keyring::from_base64([key().as_str()]).unwrap();
        let aad = user_aad("wxapp", "oUser");
        let sealed = ring.seal(b"o0q0otL8aEzpcZL/FT9WsQ==", &aad);
        assert!(
            !sealed.windows(8).any(|w| w == b"o0q0otL8"),
            "no plaintext at rest"
        );
        assert_eq!(
            ring.open(&sealed, &aad).unwrap(),
            b"o0q0otL8aEzpcZL/FT9WsQ=="
        );
        assert_eq!(Keyring::key_id_of(&sealed).unwrap(), ring.current_id());
        let mut bad = sealed.clone();
        bad[25] ^= 1;
        assert!(ring.open(&bad, &aad).is_none());
        // Copied into another user's row, it does not open.
        assert!(ring.open(&sealed, &user_aad("wxapp", "oOther")).is_none());
        assert!(ring.open(&sealed, &user_aad("wxother", "oUser")).is_none());
        let other = Keyring::from_base64([key().as_str()]).unwrap();
        assert!(other.open(&sealed, &aad).is_none());
        assert!(DataKey::from_base64("short").is_err());
        let text = format!("{ring:?}");
        assert!(text.contains(&ring.current_id()));
    }

    #[test]
    fn a_rotated_ring_opens_old_values_and_seals_with_the_new_key() {
        let (old, new) = (key(), key());
        let aad = user_aad("wxapp", "o1");
        let before = Keyring::from_base64([old.as_str()]).unwrap();
        let sealed = before.seal(b"k", &aad);
        let after = Keyring::from_base64([new.as_str(), old.as_str()]).unwrap();
        assert_eq!(after.open(&sealed, &aad).unwrap(), b"k");
        assert_ne!(
            Keyring::key_id_of(&after.seal(b"k", &aad)).unwrap(),
            Keyring::key_id_of(&sealed).unwrap()
        );
        assert!(Keyring::from_base64([old.as_str(), old.as_str()]).is_err());
        assert!(Keyring::from_base64(std::iter::empty()).is_err());
    }

    #[test]
    fn legacy_values_open() {
        let k = key();
        let ring = Keyring::from_base64([k.as_str()]).unwrap();
        let cipher = Aes256Gcm::new_from_slice(&B64.decode(&k).unwrap()).unwrap();
        let nonce = [7u8; 12];
        let mut legacy = nonce.to_vec();
        legacy.extend(
            cipher
                .encrypt(Nonce::from_slice(&nonce), &b"legacy"[..])
                .unwrap(),
        );
        assert_eq!(ring.open_legacy(&legacy).unwrap(), b"legacy");
    }
}
