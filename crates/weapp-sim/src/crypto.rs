//! The simulator's own crypto, written independently of the SDK's so that a mistake in one
//! cannot hide behind the same mistake in the other.

use aes::cipher::{block_padding::Pkcs7, BlockEncryptMut, KeyIvInit};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// AES-128-CBC with PKCS#7 padding.
pub fn aes128_cbc_encrypt(key: &[u8], iv: &[u8; 16], plain: &[u8]) -> Vec<u8> {
    cbc::Encryptor::<aes::Aes128>::new_from_slices(key, iv)
        .expect("16-byte key and iv")
        .encrypt_padded_vec_mut::<Pkcs7>(plain)
}

/// `hex(HMAC-SHA256(key, msg))`.
pub fn hmac_sha256_hex(key: &[u8], msg: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("any key length");
    mac.update(msg);
    hex::encode(mac.finalize().into_bytes())
}

/// Constant-time equality of two byte strings (secrets compared with what a caller sent).
pub(crate) fn subtle_eq(a: &[u8], b: &[u8]) -> subtle::Choice {
    use subtle::ConstantTimeEq;
    a.ct_eq(b)
}
