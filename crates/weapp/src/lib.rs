//! # weapp — the server side of WeChat Mini Programs, in Rust
//!
//! A typed async client for the mini program server API with token management that is correct
//! across many processes, strict crypto and typed errors.
//!
//! - [`Client`]: one app's handle; every call goes through one pipeline that adds the access
//!   token, decodes WeChat's errcode envelope and retries what is safe to retry.
//! - [`token`]: `stable_token` by default, single-flight refresh, fenced writes and
//!   compare-and-swap invalidation, in memory or in Redis (feature `redis`).
//! - [`crypto`]: `encryptedData` with a watermark check, rawData and login-state signatures.
//! - [`push`]: receiving WeChat's signed, encrypted pushes: verification, decryption, typed
//!   messages, a handler router with an axum integration (feature `axum`).
//! - [`pay`]: WeChat Pay API v3 for the merchant: signed calls (prepay, queries, close,
//!   refunds, bills), verified responses and notifications (public key, platform certificates,
//!   or both), `wx.requestPayment` parameters, integer [`pay::Fen`] amounts.
//! - [`Error`]: `Error::Api { code, message, rid, endpoint }` with [`ErrCode`] for every
//!   documented code.
//!
//! ```no_run
//! # async fn run() -> Result<(), weapp::Error> {
//! use weapp::{AppSecret, Client};
//!
//! let client = Client::builder("wx1234567890abcdef", AppSecret::new("your-secret")).build()?;
//! let session = client.auth().code_to_session("code-from-wx.login").await?;
//! // Keep session.session_key on the server; hand the user your own session token.
//! let phone = client.auth().get_phone_number("code-from-getPhoneNumber").await?;
//! # Ok(()) }
//! ```

pub mod api;
pub mod client;
pub mod clock;
pub mod crypto;
pub mod error;
pub mod http;
pub mod observe;
pub mod open_platform;
pub mod pay;
pub mod push;
pub mod secret;
pub mod token;
mod token_source;

pub use client::{Client, ClientBuilder, TokenCheck, DEFAULT_BASE_URL};
pub use error::{CryptoError, ErrCode, Error, Result, StoreError};
pub use secret::{AccessToken, AppSecret, BrokerClientKey, SessionKey};
pub use token::{TokenManager, TokenMode, TokenSource};

/// The README's Rust examples, compiled as doc tests so they cannot drift from the API.
#[cfg(all(doctest, feature = "redis", feature = "axum"))]
#[doc = include_str!("../../../README.md")]
struct ReadmeDoctests;
