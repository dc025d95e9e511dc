//! Keys: the data keyring that seals secrets at rest ([`seal`]), the ES256 keys that sign
//! access tokens ([`jwt`]), their rotation and re-sealing ([`Keys`]) and the published JWKS.
//!
//! Owns the `signing_keys` table; seals what other domains store (session keys, app and
//! platform secrets, refresh tokens). Depends on no other domain.

mod error;
pub mod handlers;
pub mod jwt;
pub mod seal;
mod service;

pub use error::SealError;
pub use service::{Keys, KeysInner};
