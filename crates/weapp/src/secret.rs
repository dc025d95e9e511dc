//! Redacting newtypes for the values that must never reach a log line or a response by accident.
//!
//! `Debug` and `Display` print `AppSecret(***)`; the value itself is only reachable through an
//! explicit `expose()` call, which makes every place that handles the raw secret easy to audit.

use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

macro_rules! secret_type {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Wraps a raw value.
            pub fn new(value: impl Into<String>) -> Self {
                Self(value.into())
            }

            /// The raw value. Every call site of this method is a place where the secret leaves
            /// its wrapper: keep them few and never pass the result to a logger.
            pub fn expose(&self) -> &str {
                &self.0
            }

            /// Compares with another value in constant time (no early exit on the first
            /// differing byte), so comparisons do not leak how much of a guess was right.
            pub fn ct_eq(&self, other: &str) -> bool {
                self.0.as_bytes().ct_eq(other.as_bytes()).into()
            }
        }

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, concat!(stringify!($name), "(***)"))
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("***")
            }
        }

        impl From<String> for $name {
            fn from(value: String) -> Self {
                Self(value)
            }
        }

        impl From<&str> for $name {
            fn from(value: &str) -> Self {
                Self(value.to_owned())
            }
        }
    };
}

secret_type!(
    /// A mini program's AppSecret (`secret` in `/cgi-bin/token`).
    AppSecret
);
secret_type!(
    /// An `access_token`. It grants full API access to the app until it expires.
    AccessToken
);
secret_type!(
    /// A user's `session_key` (base64 of 16 bytes). It decrypts that user's open data and signs
    /// login-state calls, so it must stay on the server.
    SessionKey
);
secret_type!(
    /// A client key of a weapp-server token broker (`Authorization: Bearer <client key>`). It
    /// lets its holder read the broker's access tokens, so it is as sensitive as they are.
    BrokerClientKey
);
