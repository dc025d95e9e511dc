//! [`CertificateStore`]: platform certificates downloaded from `GET /v3/certificates`,
//! decrypted with the APIv3 key, kept several at once, refreshed before they expire.
//!
//! **Trust.** The listing is itself signed by one of the certificates it carries, so the first
//! download cannot be verified by a certificate we already hold (the bootstrap problem). The
//! signature is checked first with what we hold; when it names a certificate we do not hold,
//! that one listed certificate alone is decrypted and the listing verified with it, before the
//! rest is opened (at most 16 entries are accepted). A certificate is used only within its
//! validity (`effective_time`..`expire_time`, narrowed by X.509). What actually vouches for a certificate is its encryption: each arrives AES-256-GCM
//! encrypted under the merchant's APIv3 key, which only WeChat and the merchant know, and the
//! GCM tag fails on anything else. (TLS to WeChat's host is the second layer.)
//!
//! **Refresh.** Every 12 h by default, and earlier when a held certificate ends within the
//! margin or a response/notification names a serial we do not hold. Refreshes are
//! single-flight (concurrent callers wait for one download), and the unknown-serial trigger is
//! rate-limited (once a minute by default) so that forged serials cannot make us hammer WeChat.

use std::borrow::Cow;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::pay::error::{serde_summary, PayError, VerifyError};
use crate::pay::keys::{ApiV3Key, PlatformCertificate};
use crate::pay::time::PayTime;
use crate::pay::transport::{api_error, PayRequest, Retry, Transport};
use crate::pay::verifier::{sanitize, Verifier};

const ENDPOINT: &str = "/v3/certificates";
/// The most certificates a listing may carry (WeChat lists one or two: two during a rotation).
const MAX_LISTED: usize = 16;

/// When the certificate store downloads again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefreshPolicy {
    /// Download again after this long (default 12 h, as WeChat asks).
    pub interval: Duration,
    /// Download again when a held certificate ends within this margin (default 24 h: WeChat
    /// lists a new certificate 24 h before switching).
    pub expiry_margin: Duration,
    /// At most one download per this period for unknown serials and for due checks
    /// (default 60 s); an explicit [`CertificateStore::refresh`] is not limited.
    pub min_interval: Duration,
}

impl Default for RefreshPolicy {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(12 * 3600),
            expiry_margin: Duration::from_secs(24 * 3600),
            min_interval: Duration::from_secs(60),
        }
    }
}

#[derive(Deserialize)]
struct Listing {
    data: Vec<ListedCert>,
}

#[derive(Deserialize)]
struct ListedCert {
    serial_no: String,
    effective_time: PayTime,
    expire_time: PayTime,
    encrypt_certificate: EncryptedCert,
}

#[derive(Deserialize)]
struct EncryptedCert {
    algorithm: String,
    nonce: String,
    #[serde(default)]
    associated_data: String,
    ciphertext: String,
}

/// What a refresh attempt did.
enum Outcome {
    Downloaded,
    /// Another caller's download finished while this one waited.
    Shared,
    /// Not allowed yet.
    Limited(Duration),
}

struct Inner {
    transport: Transport,
    verifier: Verifier,
    apiv3_key: ApiV3Key,
    policy: RefreshPolicy,
    /// Single flight: held for the whole download.
    flight: tokio::sync::Mutex<()>,
    /// When the last download started / succeeded (ms; `i64::MIN` = never).
    last_attempt_ms: AtomicI64,
    last_success_ms: AtomicI64,
}

/// Downloads and refreshes platform certificates into a [`Verifier`]. Cheap to clone.
#[derive(Clone)]
pub struct CertificateStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for CertificateStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateStore")
            .field("verifier", &self.inner.verifier)
            .field("policy", &self.inner.policy)
            .finish_non_exhaustive()
    }
}

impl CertificateStore {
    pub(crate) fn new(
        transport: Transport,
        verifier: Verifier,
        apiv3_key: ApiV3Key,
        policy: RefreshPolicy,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                transport,
                verifier,
                apiv3_key,
                policy,
                flight: tokio::sync::Mutex::new(()),
                last_attempt_ms: AtomicI64::new(i64::MIN),
                last_success_ms: AtomicI64::new(i64::MIN),
            }),
        }
    }

    fn now_ms(&self) -> i64 {
        self.inner.verifier.clock().now_ms()
    }

    /// Time left before a rate-limited refresh is allowed again (zero when allowed).
    fn wait_left(&self) -> Duration {
        let last = self.inner.last_attempt_ms.load(Ordering::SeqCst);
        if last == i64::MIN {
            return Duration::ZERO;
        }
        let next = last.saturating_add(self.inner.policy.min_interval.as_millis() as i64);
        Duration::from_millis(next.saturating_sub(self.now_ms()).max(0) as u64)
    }

    /// True when a download is due: none yet, the interval passed, or no held certificate
    /// is valid now beyond the margin.
    pub fn is_due(&self) -> bool {
        let last = self.inner.last_success_ms.load(Ordering::SeqCst);
        let now = self.now_ms();
        if last == i64::MIN
            || now.saturating_sub(last) >= self.inner.policy.interval.as_millis() as i64
        {
            return true;
        }
        let horizon = PayTime::from_unix(
            (now + self.inner.policy.expiry_margin.as_millis() as i64).div_euclid(1000),
        );
        let certs = self.inner.verifier.certificates();
        let now = PayTime::from_unix(now.div_euclid(1000));
        // Due when nothing held verifies now, or everything that does ends within the margin.
        !certs
            .iter()
            .any(|c| self.inner.verifier.usable(c, now) && c.not_after() >= horizon)
    }

    /// Downloads when [`CertificateStore::is_due`] and the rate limit allows (waiting for a
    /// download already under way rather than starting another). Returns whether it
    /// downloaded.
    ///
    /// # Errors
    /// As [`CertificateStore::refresh`].
    pub async fn refresh_if_due(&self) -> Result<bool, PayError> {
        if !self.is_due() {
            return Ok(false);
        }
        Ok(matches!(self.run(true).await?, Outcome::Downloaded))
    }

    /// Called when `serial` verified nothing: downloads (rate-limited, single-flight) unless
    /// the serial is known by now. Returns whether the serial is known afterwards.
    ///
    /// # Errors
    /// [`PayError::RefreshRateLimited`] when the last download is too recent; else as
    /// [`CertificateStore::refresh`].
    pub async fn refresh_for_serial(&self, serial: &str) -> Result<bool, PayError> {
        if self.inner.verifier.knows_serial(serial) {
            return Ok(true);
        }
        // The rate limit before the lock: a flood of forged serials is refused here without
        // queueing on the refresh lock — unless a download is under way, whose result is
        // then shared (it may bring the serial).
        let wait = self.wait_left();
        if !wait.is_zero() && self.inner.flight.try_lock().is_ok() {
            return Err(PayError::RefreshRateLimited { retry_after: wait });
        }
        match self.run(true).await? {
            Outcome::Limited(retry_after) if !self.inner.verifier.knows_serial(serial) => {
                Err(PayError::RefreshRateLimited { retry_after })
            }
            _ => Ok(self.inner.verifier.knows_serial(serial)),
        }
    }

    /// Downloads now (single-flight: callers arriving during a download share its result) and
    /// returns how many certificates are held.
    ///
    /// # Errors
    /// The call's [`PayError`] (a public-key-only merchant gets 404 `RESOURCE_NOT_EXISTS`);
    /// [`PayError::Verify`] when the listing's signature fails even with its own
    /// certificates; [`PayError::CertificateDecrypt`] for a certificate the APIv3 key does not
    /// open; [`PayError::Decode`] for an empty or malformed listing. The held set is kept on
    /// any failure.
    pub async fn refresh(&self) -> Result<usize, PayError> {
        self.run(false).await?;
        Ok(self.inner.verifier.certificates().len())
    }

    async fn run(&self, limited: bool) -> Result<Outcome, PayError> {
        let seen = self.inner.last_success_ms.load(Ordering::SeqCst);
        let _flight = self.inner.flight.lock().await;
        // Someone else downloaded while we waited: share their result.
        if self.inner.last_success_ms.load(Ordering::SeqCst) != seen {
            return Ok(Outcome::Shared);
        }
        let wait = self.wait_left();
        if limited && !wait.is_zero() {
            return Ok(Outcome::Limited(wait));
        }
        self.inner
            .last_attempt_ms
            .store(self.now_ms(), Ordering::SeqCst);
        let certs = self.download().await?;
        tracing::info!(
            serials = ?certs.iter().map(PlatformCertificate::serial).collect::<Vec<_>>(),
            "WeChat Pay platform certificates refreshed"
        );
        self.inner.verifier.set_certificates(certs);
        self.inner
            .last_success_ms
            .store(self.now_ms(), Ordering::SeqCst);
        Ok(Outcome::Downloaded)
    }

    async fn download(&self) -> Result<Vec<PlatformCertificate>, PayError> {
        let resp = self
            .inner
            .transport
            .send(&PayRequest {
                method: reqwest::Method::GET,
                endpoint: ENDPOINT,
                path_and_query: ENDPOINT.into(),
                body: Vec::new(),
                retry: Retry::Read,
            })
            .await?;
        if !(200..300).contains(&resp.status) {
            return Err(api_error(ENDPOINT, &resp));
        }
        let decode = |message: String| PayError::Decode {
            endpoint: Cow::Borrowed(ENDPOINT),
            message,
        };
        let refused = |source: VerifyError| PayError::Verify {
            endpoint: Cow::Borrowed(ENDPOINT),
            source,
            request_id: resp.request_id(),
        };
        let listing: Listing =
            serde_json::from_slice(&resp.body).map_err(|e| decode(serde_summary(&e)))?;
        if listing.data.is_empty() {
            return Err(decode("no certificates listed".into()));
        }
        if listing.data.len() > MAX_LISTED {
            return Err(decode(format!(
                "{} certificates listed, more than {MAX_LISTED}",
                listing.data.len()
            )));
        }
        // The signature first, with what we hold (the public key in "both" mode, the held
        // certificates). Only when it names a certificate we do not hold yet (the bootstrap,
        // a rotation) is that one listed certificate opened, and the listing verified with it,
        // before anything else in the listing is decrypted.
        match self.inner.verifier.verify(&resp.headers, &resp.body) {
            Ok(_) => {}
            Err(VerifyError::UnknownSerial { serial, have }) => {
                let Some(item) = listing
                    .data
                    .iter()
                    .find(|i| i.serial_no.eq_ignore_ascii_case(&serial))
                else {
                    return Err(refused(VerifyError::UnknownSerial { serial, have }));
                };
                let signer = self.open(item)?;
                let mut union: Vec<PlatformCertificate> =
                    self.inner.verifier.certificates().to_vec();
                union.push(signer);
                self.inner
                    .verifier
                    .with_certificate_set(union)
                    .verify(&resp.headers, &resp.body)
                    .map_err(refused)?;
            }
            Err(e) => return Err(refused(e)),
        }
        let now = PayTime::from_unix(self.inner.verifier.now_secs());
        let mut fresh = Vec::with_capacity(listing.data.len());
        for item in &listing.data {
            let cert = self.open(item)?;
            // Kept until it ends, including one listed ahead of its effective time (WeChat
            // lists the next certificate before switching): the verifier uses each only
            // within its validity.
            if cert.not_after() >= now {
                fresh.push(cert);
            }
        }
        if fresh.is_empty() {
            return Err(decode("every listed certificate has expired".into()));
        }
        Ok(fresh)
    }

    /// Decrypts one listed certificate and checks it is the one listed, with the listing's
    /// validity.
    fn open(&self, item: &ListedCert) -> Result<PlatformCertificate, PayError> {
        let e = &item.encrypt_certificate;
        let failed = || PayError::CertificateDecrypt {
            serial: sanitize(&item.serial_no),
        };
        if e.algorithm != "AEAD_AES_256_GCM" {
            return Err(failed());
        }
        let pem = self
            .inner
            .apiv3_key
            .decrypt(&e.nonce, &e.associated_data, &e.ciphertext)
            .ok_or_else(failed)?;
        let pem = String::from_utf8(pem).map_err(|_| failed())?;
        let cert = PlatformCertificate::from_pem(&pem)?;
        if !cert.serial().eq_ignore_ascii_case(&item.serial_no) {
            return Err(PayError::Decode {
                endpoint: Cow::Borrowed(ENDPOINT),
                message: format!(
                    "listed serial {} is not the certificate's {}",
                    sanitize(&item.serial_no),
                    cert.serial()
                ),
            });
        }
        Ok(cert.with_listing_validity(item.effective_time, item.expire_time))
    }
}
