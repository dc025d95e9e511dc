//! Push-message crypto: the URL/message signatures and the AES-256-CBC envelope
//! (`random16 ‖ u32be(len) ‖ msg ‖ appid`, PKCS#7 to a 32-byte block, iv = key[..16]).

use aes::cipher::{block_padding::NoPadding, BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use sha1::{Digest, Sha1};
use subtle::ConstantTimeEq;

use super::error::PushError;
use crate::crypto::{pad_pkcs7, unpad_pkcs7};

/// `sha1_hex` of the sorted, concatenated parts: the `signature` (token, timestamp, nonce) and
/// the `msg_signature` (… plus the `Encrypt` value).
pub fn signature(parts: &[&str]) -> String {
    let mut sorted = parts.to_vec();
    sorted.sort_unstable();
    hex::encode(Sha1::digest(sorted.concat().as_bytes()))
}

/// Compares a received signature with the expected one in constant time.
pub fn signature_matches(expected: &str, given: &str) -> bool {
    expected
        .as_bytes()
        .ct_eq(given.to_ascii_lowercase().as_bytes())
        .into()
}

/// The 43-character EncodingAESKey, decoded. `Debug` never shows it.
#[derive(Clone)]
pub struct EncodingAesKey([u8; 32]);

impl std::fmt::Debug for EncodingAesKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EncodingAesKey(***)")
    }
}

impl EncodingAesKey {
    /// Decodes the console's 43-character key (base64 without its final `=`).
    ///
    /// # Errors
    /// [`PushError::InvalidAesKey`] unless it is 43 characters decoding to 32 bytes.
    pub fn new(text: &str) -> Result<Self, PushError> {
        let text = text.trim();
        if text.len() != 43 {
            return Err(PushError::InvalidAesKey);
        }
        // Console keys are any 43 base64 characters, so the last one may carry non-zero
        // trailing bits, which a strict decoder refuses (WeChat's own samples accept them).
        let lenient = base64::engine::GeneralPurpose::new(
            &base64::alphabet::STANDARD,
            base64::engine::GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true),
        );
        let bytes = lenient
            .decode(format!("{text}="))
            .map_err(|_| PushError::InvalidAesKey)?;
        <[u8; 32]>::try_from(bytes)
            .map(Self)
            .map_err(|_| PushError::InvalidAesKey)
    }

    /// Decrypts an `Encrypt` value and checks that the trailing appid is `appid`.
    ///
    /// # Errors
    /// [`PushError::InvalidBase64`], [`PushError::DecryptFailed`] (length, padding, framing),
    /// [`PushError::AppidMismatch`].
    pub fn decrypt(&self, encrypt: &str, appid: &str) -> Result<String, PushError> {
        let mut data = B64
            .decode(encrypt.trim())
            .map_err(|_| PushError::InvalidBase64)?;
        if data.is_empty() || data.len() % 16 != 0 {
            return Err(PushError::DecryptFailed);
        }
        let plain = cbc::Decryptor::<aes::Aes256>::new_from_slices(&self.0, &self.0[..16])
            .map_err(|_| PushError::InvalidAesKey)?
            .decrypt_padded_mut::<NoPadding>(&mut data)
            .map_err(|_| PushError::DecryptFailed)?;
        let plain = unpad_pkcs7(plain, 32).map_err(|_| PushError::DecryptFailed)?;
        if plain.len() < 20 {
            return Err(PushError::DecryptFailed);
        }
        let len = u32::from_be_bytes([plain[16], plain[17], plain[18], plain[19]]) as usize;
        let rest = &plain[20..];
        if len > rest.len() {
            return Err(PushError::DecryptFailed);
        }
        let (msg, tail) = rest.split_at(len);
        if tail != appid.as_bytes() {
            return Err(PushError::AppidMismatch);
        }
        String::from_utf8(msg.to_vec()).map_err(|_| PushError::DecryptFailed)
    }

    /// Encrypts `msg` for `appid` with the given 16-byte random prefix (tests pass a fixed one;
    /// use [`EncodingAesKey::encrypt`] otherwise).
    pub fn encrypt_with_prefix(&self, msg: &str, appid: &str, prefix: &[u8; 16]) -> String {
        let mut buf = Vec::with_capacity(20 + msg.len() + appid.len() + 32);
        buf.extend_from_slice(prefix);
        buf.extend_from_slice(&(msg.len() as u32).to_be_bytes());
        buf.extend_from_slice(msg.as_bytes());
        buf.extend_from_slice(appid.as_bytes());
        pad_pkcs7(&mut buf, 32);
        let len = buf.len();
        cbc::Encryptor::<aes::Aes256>::new_from_slices(&self.0, &self.0[..16])
            .expect("32-byte key, 16-byte iv")
            .encrypt_padded_mut::<NoPadding>(&mut buf, len)
            .expect("buffer is whole blocks");
        B64.encode(buf)
    }

    /// Encrypts `msg` for `appid` with a random prefix.
    pub fn encrypt(&self, msg: &str, appid: &str) -> String {
        self.encrypt_with_prefix(msg, appid, &rand::random())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "123456";
    const KEY: &str = "kWxPEV2UEDyxWpmPdKC3F4dgPDmOvfKX1HGnEUDS1aR";
    const APPID: &str = "wx49f0ab532d5d035a";
    const ENCRYPT: &str = "RgqEoJj5A4EMYlLvWO1F86ioRjZfaex/gePD0gOXTxpsq5Yj4GNglrBb8I2BAJVODGajiFnXBu7mCPatfjsu6IHCrsTyeDXzF6Bv283dGymzxh6ydJRvZsryDyZbLTE7rhnus50qGPMfp2wASFlzEgMW9z1ef/RD8XzaFYgm7iTdaXpXaG4+BiYyolBug/gYNx410cvkKR2/nPwBiT+P4hIiOAQqGp/TywZBtDh1yCF2KOd0gpiMZ5jSw3e29mTvmUHzkVQiMS6td7vXUaWOMZnYZlF3So2SjHnwh4jYFxdgpkHHqIrH/54SNdshoQgWYEvccTKe7FS709/5t6NMxuGhcUGAPOQipvWTT4dShyqio7mlsl5noTrb++x6En749zCpQVhDpbV6GDnTbcX2e8K9QaNWHp91eBdCRxthuL0=";

    #[test]
    fn decrypt_vector_from_the_spec() {
        let sig = signature(&[TOKEN, "1411525903", "461056294", ENCRYPT]);
        assert_eq!(sig, "74d92dfeb87ba7c714f89d98870ae5eb62dff26d");
        let xml = EncodingAesKey::new(KEY)
            .unwrap()
            .decrypt(ENCRYPT, APPID)
            .unwrap();
        assert!(
            xml.contains("<FromUserName><![CDATA[messense]]></FromUserName>"),
            "{xml}"
        );
        assert!(xml.contains("<Content><![CDATA[test]]></Content>"));
        assert!(xml.contains("<MsgId>4363689963896700987</MsgId>"));
        assert!(xml.contains("<AgentID>1</AgentID>"));
    }

    #[test]
    fn encrypt_vector_from_the_spec() {
        let msg = "<xml>\n<MsgType><![CDATA[text]]></MsgType>\n<Content><![CDATA[test]]></Content>\n<FromUserName><![CDATA[wx49f0ab532d5d035a]]></FromUserName>\n<ToUserName><![CDATA[messense]]></ToUserName>\n<AgentID>1</AgentID>\n<CreateTime>1411525903</CreateTime>\n</xml>";
        let key = EncodingAesKey::new(KEY).unwrap();
        let enc = key.encrypt_with_prefix(msg, APPID, b"1234567890123456");
        assert!(enc.starts_with("9s4gMv99m88kKTh/H8IdkOiMg6bisoy3"), "{enc}");
        assert_eq!(
            signature(&[TOKEN, "1411525903", "461056294", &enc]),
            "407518b7649e86ef23978113f92d27afa9296533"
        );
        assert_eq!(key.decrypt(&enc, APPID).unwrap(), msg);
    }

    #[test]
    fn failures_are_typed() {
        let key = EncodingAesKey::new(KEY).unwrap();
        assert_eq!(
            EncodingAesKey::new("short").unwrap_err(),
            PushError::InvalidAesKey
        );
        assert_eq!(
            key.decrypt("***", APPID).unwrap_err(),
            PushError::InvalidBase64
        );
        assert_eq!(
            key.decrypt("AAAA", APPID).unwrap_err(),
            PushError::DecryptFailed
        );
        assert!(matches!(
            key.decrypt(ENCRYPT, "wxother").unwrap_err(),
            PushError::AppidMismatch
        ));
        let other = EncodingAesKey::new("abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG").unwrap();
        assert!(matches!(
            other.decrypt(ENCRYPT, APPID).unwrap_err(),
            PushError::DecryptFailed | PushError::AppidMismatch
        ));
        assert!(signature_matches(
            &signature(&["a", "b"]),
            &signature(&["b", "a"]).to_uppercase()
        ));
        assert!(format!("{key:?}").contains("***"));
    }
}
