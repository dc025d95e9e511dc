//! [`Verifier`]: checks WeChat's signature on a response or a notification — the three-line
//! message, a ±300 s window, probe refusal, and the key chosen by `Wechatpay-Serial` among the
//! WeChat Pay public key and the platform certificates (or both, during the 7-day migration).
//!
//! It needs no HTTP client: a server receiving notifications builds one from configuration.
//! Clones share the certificate set, so a [`crate::pay::CertificateStore`] refreshing it is
//! seen by every clone at once.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;

use crate::clock::{Clock, SystemClock};
use crate::pay::error::{KeyError, VerifyError};
use crate::pay::keys::{PlatformCertificate, RsaPublicKey};
use crate::pay::sign::{response_message, AUTH_SCHEME};

/// Where `Wechatpay-*` headers are read from: `http::HeaderMap` (axum, hyper, reqwest) or a
/// list of name/value pairs (names compared case-insensitively).
pub trait HeaderSource {
    /// The value of header `name` (case-insensitive), if present and text.
    fn header(&self, name: &str) -> Option<&str>;
}

impl HeaderSource for reqwest::header::HeaderMap {
    fn header(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(|v| v.to_str().ok())
    }
}

impl<K: AsRef<str>, V: AsRef<str>> HeaderSource for [(K, V)] {
    fn header(&self, name: &str) -> Option<&str> {
        self.iter()
            .find(|(k, _)| k.as_ref().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_ref())
    }
}

impl<K: AsRef<str>, V: AsRef<str>> HeaderSource for Vec<(K, V)> {
    fn header(&self, name: &str) -> Option<&str> {
        self.as_slice().header(name)
    }
}

impl<S: std::hash::BuildHasher> HeaderSource for HashMap<String, String, S> {
    fn header(&self, name: &str) -> Option<&str> {
        self.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// The header names WeChat signs with.
pub mod headers {
    /// Unix seconds of the signature.
    pub const TIMESTAMP: &str = "Wechatpay-Timestamp";
    /// The signature's nonce.
    pub const NONCE: &str = "Wechatpay-Nonce";
    /// base64 signature (or a `WECHATPAY/SIGNTEST/…` probe).
    pub const SIGNATURE: &str = "Wechatpay-Signature";
    /// Serial of the signing key: a platform certificate serial or `PUB_KEY_ID_…`. Also sent
    /// by the merchant on requests, to choose which key signs the responses.
    pub const SERIAL: &str = "Wechatpay-Serial";
    /// `WECHATPAY2-SHA256-RSA2048`.
    pub const SIGNATURE_TYPE: &str = "Wechatpay-Signature-Type";
    /// WeChat's id for the request (responses).
    pub const REQUEST_ID: &str = "Request-ID";
}

/// The prefix of 签名探测 probe signatures.
pub const PROBE_PREFIX: &str = "WECHATPAY/SIGNTEST/";

/// How WeChat's signatures are verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum VerificationMode {
    /// Only the WeChat Pay public key (`PUB_KEY_ID_…`): new merchants, and everyone after the
    /// migration.
    PublicKey,
    /// Only platform certificates (the legacy scheme).
    Certificates,
    /// Both, routed by `Wechatpay-Serial`: during the 7-day migration WeChat signs a growing
    /// share of notifications with the public key and the rest with a certificate.
    Both,
}

/// What a verified signature said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The `Wechatpay-Serial` of the key that verified.
    pub serial: String,
    /// `Wechatpay-Timestamp`.
    pub timestamp: i64,
    /// `Wechatpay-Nonce`.
    pub nonce: String,
}

struct Inner {
    public_key: Option<(String, RsaPublicKey)>,
    use_certificates: bool,
    /// Replaced whole (never edited in place), so a reader holds a consistent set.
    certificates: RwLock<Arc<Vec<PlatformCertificate>>>,
    clock: Arc<dyn Clock>,
    window_secs: i64,
}

/// Verifies WeChat's signatures on responses and notifications. Cheap to clone; clones share
/// the certificate set.
///
/// ```
/// use weapp::pay::{RsaPublicKey, Verifier};
/// # fn run(pem: &str) -> Result<(), weapp::pay::KeyError> {
/// let verifier = Verifier::builder()
///     .public_key("PUB_KEY_ID_0114232134912410000000000000000000", RsaPublicKey::from_pem(pem)?)
///     .build()?;
/// assert_eq!(verifier.request_serial(), Some("PUB_KEY_ID_0114232134912410000000000000000000"));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Verifier {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("mode", &self.mode())
            .field("public_key_id", &self.public_key_id())
            .field("certificates", &self.serials())
            .field("window_secs", &self.inner.window_secs)
            .finish()
    }
}

/// Builds a [`Verifier`].
#[must_use]
pub struct VerifierBuilder {
    public_key: Option<(String, RsaPublicKey)>,
    certificates: Option<Vec<PlatformCertificate>>,
    clock: Arc<dyn Clock>,
    window_secs: i64,
}

impl VerifierBuilder {
    /// Verifies with the WeChat Pay public key `id` (`PUB_KEY_ID_…`).
    pub fn public_key(mut self, id: impl Into<String>, key: RsaPublicKey) -> Self {
        self.public_key = Some((id.into(), key));
        self
    }

    /// Verifies with platform certificates, starting with `certificates` (may be empty when a
    /// [`crate::pay::CertificateStore`] downloads them).
    pub fn certificates(mut self, certificates: Vec<PlatformCertificate>) -> Self {
        self.certificates = Some(certificates);
        self
    }

    /// The clock the timestamp window is checked against (tests pin it).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The accepted distance between `Wechatpay-Timestamp` and now, in seconds, both ways
    /// (default 300, WeChat's).
    pub fn window_secs(mut self, secs: u32) -> Self {
        self.window_secs = i64::from(secs);
        self
    }

    /// Builds the verifier: public key, certificates, or both.
    ///
    /// # Errors
    /// [`KeyError::InvalidId`] when neither was given, or the key id is empty or not
    /// header-safe.
    pub fn build(self) -> Result<Verifier, KeyError> {
        if self.public_key.is_none() && self.certificates.is_none() {
            return Err(KeyError::InvalidId(
                "verification key: give the WeChat Pay public key, certificates, or both",
            ));
        }
        if let Some((id, _)) = &self.public_key {
            if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(KeyError::InvalidId("WeChat Pay public key id"));
            }
        }
        Ok(Verifier {
            inner: Arc::new(Inner {
                public_key: self.public_key,
                use_certificates: self.certificates.is_some(),
                certificates: RwLock::new(Arc::new(self.certificates.unwrap_or_default())),
                clock: self.clock,
                window_secs: self.window_secs,
            }),
        })
    }
}

/// A header value fit for an error message (it comes from the network): printable ASCII, at
/// most 64 characters.
pub(crate) fn sanitize(value: &str) -> String {
    value
        .chars()
        .take(64)
        .map(|c| if c.is_ascii_graphic() { c } else { '?' })
        .collect()
}

impl Verifier {
    /// Starts a builder (window 300 s, system clock).
    pub fn builder() -> VerifierBuilder {
        VerifierBuilder {
            public_key: None,
            certificates: None,
            clock: Arc::new(SystemClock),
            window_secs: 300,
        }
    }

    /// Public key, certificates or both.
    pub fn mode(&self) -> VerificationMode {
        match (&self.inner.public_key, self.inner.use_certificates) {
            (Some(_), true) => VerificationMode::Both,
            (Some(_), false) => VerificationMode::PublicKey,
            _ => VerificationMode::Certificates,
        }
    }

    /// The WeChat Pay public key id, when one is configured.
    pub fn public_key_id(&self) -> Option<&str> {
        self.inner.public_key.as_ref().map(|(id, _)| id.as_str())
    }

    /// What to send as the `Wechatpay-Serial` request header: the public key id whenever one
    /// is configured (it makes WeChat sign the response with the public key, and drives the
    /// migration's progress); nothing in certificate-only mode.
    pub fn request_serial(&self) -> Option<&str> {
        self.public_key_id()
    }

    /// The platform certificates currently held (empty in public-key mode).
    pub fn certificates(&self) -> Arc<Vec<PlatformCertificate>> {
        self.inner
            .certificates
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Replaces the platform certificates (a [`crate::pay::CertificateStore`] calls this;
    /// so can a deployment that distributes certificates itself). Ignored in public-key-only
    /// mode.
    pub fn set_certificates(&self, certificates: Vec<PlatformCertificate>) {
        if !self.inner.use_certificates {
            return;
        }
        *self
            .inner
            .certificates
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Arc::new(certificates);
    }

    /// A verifier like this one (public key, clock, window) holding `certificates` instead:
    /// the certificate store checks a listing against the certificates it carries.
    pub(crate) fn with_certificate_set(&self, certificates: Vec<PlatformCertificate>) -> Verifier {
        Verifier {
            inner: Arc::new(Inner {
                public_key: self.inner.public_key.clone(),
                use_certificates: true,
                certificates: RwLock::new(Arc::new(certificates)),
                clock: self.inner.clock.clone(),
                window_secs: self.inner.window_secs,
            }),
        }
    }

    /// True when `serial` names a key that verifies now (the public key id, or a platform
    /// certificate valid now: past its start — up to the timestamp window early — and not
    /// ended).
    pub fn knows_serial(&self, serial: &str) -> bool {
        self.key_for(serial).is_some()
    }

    /// Now, in Unix seconds, by this verifier's clock.
    pub fn now_secs(&self) -> i64 {
        self.inner.clock.now_ms().div_euclid(1000)
    }

    /// The clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.inner.clock
    }

    fn serials(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .public_key_id()
            .map(str::to_owned)
            .into_iter()
            .collect();
        out.extend(self.certificates().iter().map(|c| c.serial().to_owned()));
        out
    }

    fn key_for(&self, serial: &str) -> Option<RsaPublicKey> {
        if let Some((id, key)) = &self.inner.public_key {
            if id == serial {
                return Some(key.clone());
            }
        }
        if !self.inner.use_certificates {
            return None;
        }
        let now = crate::pay::time::PayTime::from_unix(self.now_secs());
        self.certificates()
            .iter()
            .find(|c| c.serial().eq_ignore_ascii_case(serial) && self.usable(c, now))
            .map(|c| c.public_key().clone())
    }

    /// True when `cert` may verify at `now`: within its validity (the listing's
    /// `effective_time`/`expire_time` narrowed by X.509), its start accepted up to the
    /// timestamp window early, so that a slightly slow clock does not refuse WeChat's first
    /// signatures with a new certificate. Never after its end.
    pub(crate) fn usable(
        &self,
        cert: &PlatformCertificate,
        now: crate::pay::time::PayTime,
    ) -> bool {
        cert.is_valid_at(now)
            || (now < cert.not_before() && cert.is_valid_at(now.plus_secs(self.inner.window_secs)))
    }

    /// The serials that verify now (public key id, usable certificates).
    fn usable_serials(&self) -> Vec<String> {
        let now = crate::pay::time::PayTime::from_unix(self.now_secs());
        let mut out: Vec<String> = self
            .public_key_id()
            .map(str::to_owned)
            .into_iter()
            .collect();
        if self.inner.use_certificates {
            out.extend(
                self.certificates()
                    .iter()
                    .filter(|c| self.usable(c, now))
                    .map(|c| c.serial().to_owned()),
            );
        }
        out
    }

    /// Verifies the `Wechatpay-*` headers over the raw `body` (exactly as received).
    ///
    /// Checks, in order: a signature is present and is not a `WECHATPAY/SIGNTEST/` probe; the
    /// signature type (when sent) is RSA; timestamp, nonce and serial are present; the
    /// timestamp is within the window of now; the serial names a key we hold that is valid now
    /// (not expired, not before its effective time less the window);
    /// the signature is base64 and verifies over `TIMESTAMP\nNONCE\nBODY\n`.
    ///
    /// # Errors
    /// The [`VerifyError`] of the first check that fails.
    pub fn verify<H: HeaderSource + ?Sized>(
        &self,
        headers: &H,
        body: &[u8],
    ) -> Result<Verified, VerifyError> {
        let get = |name: &'static str| {
            headers
                .header(name)
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .ok_or(VerifyError::MissingHeader(name))
        };
        let signature = get(headers::SIGNATURE)?;
        if signature.starts_with(PROBE_PREFIX) {
            return Err(VerifyError::ProbeSignature);
        }
        if let Some(kind) = headers.header(headers::SIGNATURE_TYPE) {
            if kind.trim() != AUTH_SCHEME {
                return Err(VerifyError::UnsupportedSignatureType(sanitize(kind)));
            }
        }
        let timestamp_text = get(headers::TIMESTAMP)?;
        let nonce = get(headers::NONCE)?;
        let serial = get(headers::SERIAL)?;
        let timestamp: i64 = timestamp_text
            .parse()
            .map_err(|_| VerifyError::BadTimestamp)?;
        let now = self.now_secs();
        if timestamp.abs_diff(now) > self.inner.window_secs.unsigned_abs() {
            return Err(VerifyError::StaleTimestamp {
                timestamp,
                now,
                window_secs: self.inner.window_secs,
            });
        }
        let key = self
            .key_for(serial)
            .ok_or_else(|| VerifyError::UnknownSerial {
                serial: sanitize(serial),
                have: self.usable_serials().join(","),
            })?;
        let raw = B64
            .decode(signature)
            .map_err(|_| VerifyError::SignatureEncoding)?;
        if !key.verify(&response_message(timestamp_text, nonce, body), &raw) {
            return Err(VerifyError::Mismatch);
        }
        Ok(Verified {
            serial: serial.to_owned(),
            timestamp,
            nonce: nonce.to_owned(),
        })
    }
}
