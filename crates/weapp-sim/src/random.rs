//! The random values the simulator hands out: ids, codes, secrets and session keys.
//!
//! A leaf: it imports nothing of the crate.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use rand::distributions::Alphanumeric;
use rand::Rng;

pub(crate) fn random_alnum(n: usize) -> String {
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(n)
        .map(char::from)
        .collect()
}

pub(crate) fn random_hex(bytes: usize) -> String {
    let v: Vec<u8> = (0..bytes).map(|_| rand::random()).collect();
    hex::encode(v)
}

pub(crate) fn random_key() -> String {
    B64.encode(rand::random::<[u8; 16]>())
}
