//! Why a push was refused: the error of every step of receiving one. Apart from the receiver
//! (`push/mod.rs`) so that its helpers (`crypto`, `message`) can return it without importing
//! the receiver that uses them. Public as [`crate::push::PushError`].

/// Why a push was refused. [`PushError::official_code`] gives the code of WeChat's sample
/// implementations for the same failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PushError {
    /// `signature` or `msg_signature` does not match.
    #[error("signature does not match")]
    InvalidSignature,
    /// The body is not a well-formed push.
    #[error("cannot parse the push: {0}")]
    Parse(String),
    /// The EncodingAESKey is not 43 characters of base64 for 32 bytes.
    #[error("EncodingAESKey must be 43 characters decoding to 32 bytes")]
    InvalidAesKey,
    /// The decrypted message names another app. (What it names is not kept: it is decrypted
    /// data of unknown origin, and errors end up in logs.)
    #[error("the message is for another app")]
    AppidMismatch,
    /// AES decryption failed (length, padding or framing).
    #[error("cannot decrypt the message")]
    DecryptFailed,
    /// `Encrypt` is not base64.
    #[error("Encrypt is not valid base64")]
    InvalidBase64,
    /// A required query parameter is missing.
    #[error("query parameter {0} is missing")]
    MissingParameter(&'static str),
    /// `timestamp` is outside the accepted window.
    #[error("timestamp is outside the accepted window")]
    StaleTimestamp,
    /// The same (timestamp, nonce) was already accepted.
    #[error("this push was already received (replay)")]
    Replayed,
    /// An AES key is configured (compatible or safe mode) but the push is not encrypted, or
    /// carries no `msg_signature`: only the encrypted copy, signed over its ciphertext, is
    /// authentic.
    #[error("the push must be encrypted (encrypt_type=aes with msg_signature)")]
    NotEncrypted,
}

impl PushError {
    /// The sample-code error number: -40001 signature, -40002 parse, -40004 AES key, -40005
    /// appid, -40007 decrypt, -40010 base64 (0 for the checks the samples do not have).
    pub fn official_code(&self) -> i32 {
        match self {
            PushError::InvalidSignature => -40001,
            PushError::Parse(_) | PushError::MissingParameter(_) => -40002,
            PushError::InvalidAesKey => -40004,
            PushError::AppidMismatch => -40005,
            PushError::DecryptFailed => -40007,
            PushError::InvalidBase64 => -40010,
            PushError::StaleTimestamp | PushError::Replayed | PushError::NotEncrypted => 0,
        }
    }

    /// True when the request is not authentic (answer 401); otherwise it is malformed (400).
    pub fn is_authentication(&self) -> bool {
        matches!(
            self,
            PushError::InvalidSignature
                | PushError::StaleTimestamp
                | PushError::Replayed
                | PushError::AppidMismatch
                | PushError::NotEncrypted
        )
    }
}
