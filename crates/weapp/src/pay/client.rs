//! [`PayClient`]: one merchant's handle to WeChat Pay APIv3 — the calls, `wx.requestPayment`
//! parameters, notification parsing, and (in certificate mode) the certificate store.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::HeaderValue;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::clock::{Clock, SystemClock};
use crate::pay::bill::{self, BillDownload};
use crate::pay::certs::{CertificateStore, RefreshPolicy};
use crate::pay::error::{serde_summary, NotifyError, PayError, VerifyError};
use crate::pay::keys::{ApiV3Key, PlatformCertificate, RsaPublicKey};
use crate::pay::models::{
    BillInfo, FundFlowBillRequest, JsapiPrepayRequest, Prepay, Refund, RefundRequest,
    TradeBillRequest, Transaction,
};
use crate::pay::notify::{Notification, NotificationParser};
use crate::pay::sign::{nonce, Merchant, RequestPayment};
use crate::pay::transport::{
    api_error, parse_base, read_capped, PayRequest, PayResponse, Retry, Transport, MAX_ERROR_BODY,
};
use crate::pay::verifier::{HeaderSource, VerificationMode, Verifier};

/// WeChat Pay's API host.
pub const PAY_BASE_URL: &str = "https://api.mch.weixin.qq.com";
/// WeChat Pay's backup host (cross-city disaster recovery).
pub const PAY_BACKUP_URL: &str = "https://api2.mch.weixin.qq.com";

struct Inner {
    transport: Transport,
    verifier: Verifier,
    parser: NotificationParser,
    certs: Option<CertificateStore>,
}

/// One merchant's WeChat Pay client. `Clone + Send + Sync`; clones share the connection pool,
/// the verifier and the certificate store.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use weapp::pay::{ApiV3Key, Fen, JsapiPrepayRequest, Merchant, MerchantPrivateKey, PayClient, RsaPublicKey};
/// let merchant = Merchant::new(
///     "1900000109",
///     "3A5E0C7D1B2F4A6C8E9D0B1A2C3D4E5F60718293",
///     MerchantPrivateKey::from_pem(&std::fs::read_to_string("apiclient_key.pem")?)?,
/// )?;
/// let pay = PayClient::builder(merchant, ApiV3Key::new(&std::env::var("APIV3_KEY")?)?)
///     .wechatpay_public_key(
///         "PUB_KEY_ID_0119000001092025010100000000000000",
///         RsaPublicKey::from_pem(&std::fs::read_to_string("pub_key.pem")?)?,
///     )
///     .build()?;
/// let prepay = pay
///     .jsapi_prepay(&JsapiPrepayRequest::new(
///         "wx1234567890abcdef", "A cup of tea", "order-20260101-0001",
///         "https://example.com/v1/pay/1900000109/notify", Fen::new(1), "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o",
///     ))
///     .await?;
/// let params = pay.request_payment("wx1234567890abcdef", &prepay.prepay_id)?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct PayClient {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for PayClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PayClient")
            .field("merchant", &self.inner.transport.merchant)
            .field(
                "base_url",
                &crate::http::redact_url(self.inner.transport.primary.as_str()),
            )
            .field(
                "backup_url",
                &self
                    .inner
                    .transport
                    .backup
                    .as_ref()
                    .map(|u| crate::http::redact_url(u.as_str())),
            )
            .field("verifier", &self.inner.verifier)
            .finish_non_exhaustive()
    }
}

/// Builds a [`PayClient`].
#[must_use]
pub struct PayClientBuilder {
    merchant: Merchant,
    apiv3_key: ApiV3Key,
    public_key: Option<(String, RsaPublicKey)>,
    certificates: Option<Vec<PlatformCertificate>>,
    download_certificates: bool,
    base_url: String,
    backup_url: Option<Option<String>>,
    timeout: Duration,
    connect_timeout: Duration,
    download_timeout: Duration,
    window_secs: u32,
    refresh: RefreshPolicy,
    clock: Arc<dyn Clock>,
    http_client: Option<reqwest::Client>,
}

impl PayClientBuilder {
    /// Verifies WeChat's signatures with the WeChat Pay public key `id` (`PUB_KEY_ID_…`),
    /// and sends `Wechatpay-Serial: <id>` on every request. Combined with
    /// [`PayClientBuilder::platform_certificates`] this is the migration's "both" mode.
    pub fn wechatpay_public_key(mut self, id: impl Into<String>, key: RsaPublicKey) -> Self {
        self.public_key = Some((id.into(), key));
        self
    }

    /// Verifies with platform certificates downloaded from `/v3/certificates` (on the first
    /// call, then refreshed).
    pub fn platform_certificates(mut self) -> Self {
        self.download_certificates = true;
        self.certificates.get_or_insert_with(Vec::new);
        self
    }

    /// Verifies with these platform certificates. They are still refreshed from
    /// `/v3/certificates` unless [`PayClientBuilder::no_certificate_download`] is set.
    pub fn with_certificates(mut self, certificates: Vec<PlatformCertificate>) -> Self {
        self.download_certificates = true;
        self.certificates
            .get_or_insert_with(Vec::new)
            .extend(certificates);
        self
    }

    /// Never downloads certificates (they come from [`PayClientBuilder::with_certificates`]
    /// and [`Verifier::set_certificates`]).
    pub fn no_certificate_download(mut self) -> Self {
        self.download_certificates = false;
        self
    }

    /// Where requests go (default `https://api.mch.weixin.qq.com`): a simulator, a test
    /// server, a proxy (a path prefix is kept and not signed). Setting it drops the default
    /// backup host, so a test never falls back to production; set one with
    /// [`PayClientBuilder::backup_url`].
    pub fn base_url(mut self, url: impl Into<String>) -> Self {
        self.base_url = url.into();
        self
    }

    /// The host tried once when the primary fails (default `https://api2.mch.weixin.qq.com`
    /// with the default base URL, none otherwise); `None` disables it.
    pub fn backup_url(mut self, url: Option<String>) -> Self {
        self.backup_url = Some(url);
        self
    }

    /// Whole-request timeout (default 10 s). A call takes at most two of them (primary, then
    /// backup).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Connect timeout (default 3 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Timeout of a bill download, body included (default 5 min).
    pub fn download_timeout(mut self, timeout: Duration) -> Self {
        self.download_timeout = timeout;
        self
    }

    /// The accepted clock difference of signatures, ± seconds (default 300).
    pub fn timestamp_window_secs(mut self, secs: u32) -> Self {
        self.window_secs = secs;
        self
    }

    /// When certificates are downloaded again.
    pub fn certificate_refresh(mut self, policy: RefreshPolicy) -> Self {
        self.refresh = policy;
        self
    }

    /// The clock for request timestamps, the signature window and certificate expiry.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Uses this reqwest client (proxies, TLS roots). The builder's timeouts then only bound
    /// what the client itself does not: configure them on it.
    pub fn http_client(mut self, client: reqwest::Client) -> Self {
        self.http_client = Some(client);
        self
    }

    /// Builds the client.
    ///
    /// # Errors
    /// [`PayError::InvalidArgument`] for a bad URL or a zero timeout; [`PayError::Key`] when
    /// no verification key was configured (public key, certificates, or both).
    pub fn build(self) -> Result<PayClient, PayError> {
        if self.timeout.is_zero()
            || self.connect_timeout.is_zero()
            || self.download_timeout.is_zero()
        {
            return Err(PayError::InvalidArgument(
                "timeouts must be positive".into(),
            ));
        }
        let primary = parse_base(&self.base_url)?;
        let backup = match self.backup_url {
            Some(Some(url)) => Some(parse_base(&url)?),
            Some(None) => None,
            None if self.base_url.trim_end_matches('/') == PAY_BASE_URL => {
                Some(parse_base(PAY_BACKUP_URL)?)
            }
            None => None,
        };
        let mut vb = Verifier::builder()
            .clock(self.clock.clone())
            .window_secs(self.window_secs);
        if let Some((id, key)) = self.public_key {
            vb = vb.public_key(id, key);
        }
        if let Some(certs) = self.certificates {
            vb = vb.certificates(certs);
        }
        let verifier = vb.build()?;
        let serial = match verifier.request_serial() {
            Some(s) => Some(
                HeaderValue::from_str(s)
                    .map_err(|_| PayError::InvalidArgument("public key id".into()))?,
            ),
            None => None,
        };
        let client = match self.http_client {
            Some(c) => c,
            None => reqwest::Client::builder()
                .timeout(self.timeout)
                .connect_timeout(self.connect_timeout)
                .build()
                .map_err(|e| PayError::InvalidArgument(format!("http client: {e}")))?,
        };
        let transport = Transport {
            client,
            primary,
            backup,
            merchant: self.merchant,
            serial,
            clock: self.clock,
            timeout: self.timeout,
            download_timeout: self.download_timeout,
        };
        let certs = (self.download_certificates && verifier.mode() != VerificationMode::PublicKey)
            .then(|| {
                CertificateStore::new(
                    transport.clone(),
                    verifier.clone(),
                    self.apiv3_key.clone(),
                    self.refresh,
                )
            });
        Ok(PayClient {
            inner: Arc::new(Inner {
                parser: NotificationParser::new(verifier.clone(), self.apiv3_key),
                transport,
                verifier,
                certs,
            }),
        })
    }
}

/// Ids that go into a URL path: WeChat's documented characters only.
fn check_id(what: &str, id: &str, max: usize) -> Result<(), PayError> {
    let ok = !id.is_empty()
        && id.len() <= max
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'|' | b'*' | b'@'));
    if ok {
        Ok(())
    } else {
        Err(PayError::InvalidArgument(format!(
            "{what} must be 1–{max} characters of [0-9A-Za-z_-|*@]"
        )))
    }
}

fn check_date(date: &str) -> Result<(), PayError> {
    let b = date.as_bytes();
    let ok = b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(PayError::InvalidArgument(
            "bill_date must be yyyy-MM-dd".into(),
        ))
    }
}

impl PayClient {
    /// Starts a builder for `merchant` with its APIv3 key. Then choose how WeChat's
    /// signatures are verified: [`PayClientBuilder::wechatpay_public_key`],
    /// [`PayClientBuilder::platform_certificates`], or both.
    pub fn builder(merchant: Merchant, apiv3_key: ApiV3Key) -> PayClientBuilder {
        PayClientBuilder {
            merchant,
            apiv3_key,
            public_key: None,
            certificates: None,
            download_certificates: false,
            base_url: PAY_BASE_URL.into(),
            backup_url: None,
            timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(3),
            download_timeout: Duration::from_secs(300),
            window_secs: 300,
            refresh: RefreshPolicy::default(),
            clock: Arc::new(SystemClock),
            http_client: None,
        }
    }

    /// The merchant.
    pub fn merchant(&self) -> &Merchant {
        &self.inner.transport.merchant
    }

    /// The mchid.
    pub fn mchid(&self) -> &str {
        self.inner.transport.merchant.mchid()
    }

    /// The verifier (shared with the certificate store).
    pub fn verifier(&self) -> &Verifier {
        &self.inner.verifier
    }

    /// The certificate store, in certificate or both mode with downloads on.
    pub fn certificate_store(&self) -> Option<&CertificateStore> {
        self.inner.certs.as_ref()
    }

    /// A notification parser sharing this client's verifier and APIv3 key (for a receiver
    /// that does not need the client).
    pub fn notification_parser(&self) -> NotificationParser {
        self.inner.parser.clone()
    }

    /// Verifies, checks and decrypts a notification: see [`NotificationParser::parse`]. No
    /// network: in certificate mode, a serial not yet downloaded fails with
    /// `VerifyError::UnknownSerial`; [`PayClient::receive_notification`] refreshes then.
    ///
    /// # Errors
    /// As [`NotificationParser::parse`].
    pub fn parse_notification<H: HeaderSource + ?Sized>(
        &self,
        headers: &H,
        body: &[u8],
    ) -> Result<Notification, NotifyError> {
        self.inner.parser.parse(headers, body)
    }

    /// As [`PayClient::parse_notification`], and in certificate mode downloads certificates
    /// once (rate-limited) when the notification names a serial not held yet.
    ///
    /// # Errors
    /// As [`NotificationParser::parse`].
    pub async fn receive_notification<H: HeaderSource + ?Sized>(
        &self,
        headers: &H,
        body: &[u8],
    ) -> Result<Notification, NotifyError> {
        self.refresh_if_due().await;
        match self.inner.parser.parse(headers, body) {
            Err(NotifyError::Verify(VerifyError::UnknownSerial { serial, .. })) => {
                self.refresh_for(&serial).await;
                self.inner.parser.parse(headers, body)
            }
            other => other,
        }
    }

    /// The five `wx.requestPayment` parameters for `prepay_id`, with `paySign` over
    /// `appId\ntimeStamp\nnonceStr\npackage\n` (`appid` = the appid the order was placed with).
    ///
    /// # Errors
    /// [`PayError::InvalidArgument`] for an empty argument; [`PayError::Sign`] if signing fails.
    pub fn request_payment(
        &self,
        appid: &str,
        prepay_id: &str,
    ) -> Result<RequestPayment, PayError> {
        let ts = self.inner.transport.clock.now_ms().div_euclid(1000);
        self.inner
            .transport
            .merchant
            .request_payment(appid, prepay_id, ts, &nonce())
    }

    /// Downloads platform certificates now (certificate modes only).
    ///
    /// # Errors
    /// See [`CertificateStore::refresh`]; [`PayError::InvalidArgument`] in public-key mode.
    pub async fn refresh_certificates(&self) -> Result<usize, PayError> {
        match &self.inner.certs {
            Some(store) => store.refresh().await,
            None => Err(PayError::InvalidArgument(
                "no certificate download configured".into(),
            )),
        }
    }

    async fn refresh_if_due(&self) {
        if let Some(store) = &self.inner.certs {
            if let Err(e) = store.refresh_if_due().await {
                tracing::warn!(error = %e, "WeChat Pay certificate refresh failed; keeping the held set");
            }
        }
    }

    async fn refresh_for(&self, serial: &str) {
        if let Some(store) = &self.inner.certs {
            match store.refresh_for_serial(serial).await {
                Ok(_) => {}
                // Anyone can send a notification naming a random serial: a refusal by the
                // rate limit is routine, not worth a warning per request.
                Err(e @ PayError::RefreshRateLimited { .. }) => {
                    tracing::debug!(error = %e, serial, "WeChat Pay certificate refresh for an unknown serial skipped");
                }
                Err(e) => {
                    tracing::warn!(error = %e, serial, "WeChat Pay certificate refresh for an unknown serial failed");
                }
            }
        }
    }

    /// Sends `req`, checks the status (non-2xx → [`PayError::Api`]) and verifies the
    /// signature of a 2xx (in certificate mode an unknown serial triggers one rate-limited
    /// download and a second check). For a creating call, anything that leaves the outcome
    /// in doubt (5xx, an unverifiable or undecodable 2xx) is [`PayError::OutcomeUnknown`].
    async fn execute(&self, req: PayRequest) -> Result<PayResponse, PayError> {
        self.refresh_if_due().await;
        let resp = self.inner.transport.send(&req).await?;
        let request_id = resp.request_id();
        tracing::debug!(
            endpoint = req.endpoint,
            status = resp.status,
            request_id = request_id.as_deref().unwrap_or(""),
            "WeChat Pay call"
        );
        let doubt = |err: PayError| {
            if req.retry == Retry::Create {
                PayError::OutcomeUnknown {
                    endpoint: Cow::Borrowed(req.endpoint),
                    source: Box::new(err),
                }
            } else {
                err
            }
        };
        if !(200..300).contains(&resp.status) {
            let err = api_error(req.endpoint, &resp);
            return Err(if resp.status >= 500 { doubt(err) } else { err });
        }
        let mut checked = self.inner.verifier.verify(&resp.headers, &resp.body);
        if let Err(VerifyError::UnknownSerial { serial, .. }) = &checked {
            self.refresh_for(&serial.clone()).await;
            checked = self.inner.verifier.verify(&resp.headers, &resp.body);
        }
        checked.map_err(|source| {
            doubt(PayError::Verify {
                endpoint: Cow::Borrowed(req.endpoint),
                source,
                request_id,
            })
        })?;
        Ok(resp)
    }

    async fn json<T: DeserializeOwned>(&self, req: PayRequest) -> Result<T, PayError> {
        let endpoint = req.endpoint;
        let create = req.retry == Retry::Create;
        let resp = self.execute(req).await?;
        serde_json::from_slice(&resp.body).map_err(|e| {
            let err = PayError::Decode {
                endpoint: Cow::Borrowed(endpoint),
                message: serde_summary(&e),
            };
            if create {
                PayError::OutcomeUnknown {
                    endpoint: Cow::Borrowed(endpoint),
                    source: Box::new(err),
                }
            } else {
                err
            }
        })
    }

    fn body<T: Serialize>(value: &T) -> Result<Vec<u8>, PayError> {
        serde_json::to_vec(value).map_err(|e| PayError::InvalidArgument(e.to_string()))
    }

    /// JSAPI / mini program prepay (`POST /v3/pay/transactions/jsapi`); `mchid` is set from
    /// the merchant. Never retried once sent: a failure after sending is
    /// [`PayError::OutcomeUnknown`] — call again with the same `out_trade_no` and parameters,
    /// or query.
    ///
    /// # Errors
    /// [`PayError::Api`] (e.g. `APPID_MCHID_NOT_MATCH`, `OUT_TRADE_NO_USED`),
    /// [`PayError::OutcomeUnknown`], [`PayError::InvalidArgument`] for a bad `out_trade_no`.
    pub async fn jsapi_prepay(&self, req: &JsapiPrepayRequest) -> Result<Prepay, PayError> {
        check_id("out_trade_no", &req.out_trade_no, 32)?;
        let mut req = req.clone();
        req.mchid = self.mchid().to_owned();
        self.json(PayRequest {
            method: reqwest::Method::POST,
            endpoint: "/v3/pay/transactions/jsapi",
            path_and_query: "/v3/pay/transactions/jsapi".into(),
            body: Self::body(&req)?,
            retry: Retry::Create,
        })
        .await
    }

    /// Queries an order by the merchant's `out_trade_no` (the only query that works before
    /// payment).
    ///
    /// # Errors
    /// [`PayError::Api`] with [`crate::pay::PayErrorCode::OrderNotExist`] for an unknown order.
    pub async fn query_by_out_trade_no(&self, out_trade_no: &str) -> Result<Transaction, PayError> {
        check_id("out_trade_no", out_trade_no, 32)?;
        self.json(PayRequest {
            method: reqwest::Method::GET,
            endpoint: "/v3/pay/transactions/out-trade-no/{out_trade_no}",
            path_and_query: format!(
                "/v3/pay/transactions/out-trade-no/{out_trade_no}?mchid={}",
                self.mchid()
            ),
            body: Vec::new(),
            retry: Retry::Read,
        })
        .await
    }

    /// Queries a paid order by WeChat's `transaction_id`.
    ///
    /// # Errors
    /// As [`PayClient::query_by_out_trade_no`].
    pub async fn query_by_transaction_id(
        &self,
        transaction_id: &str,
    ) -> Result<Transaction, PayError> {
        check_id("transaction_id", transaction_id, 32)?;
        self.json(PayRequest {
            method: reqwest::Method::GET,
            endpoint: "/v3/pay/transactions/id/{transaction_id}",
            path_and_query: format!(
                "/v3/pay/transactions/id/{transaction_id}?mchid={}",
                self.mchid()
            ),
            body: Vec::new(),
            retry: Retry::Read,
        })
        .await
    }

    /// Closes an unpaid order (WeChat answers 204, also for an unknown or already closed
    /// order). Idempotent: retried on the backup host after a connection failure.
    ///
    /// # Errors
    /// [`PayError::Api`], e.g. `ORDER_PAID`-like codes for a paid order.
    pub async fn close(&self, out_trade_no: &str) -> Result<(), PayError> {
        check_id("out_trade_no", out_trade_no, 32)?;
        self.execute(PayRequest {
            method: reqwest::Method::POST,
            endpoint: "/v3/pay/transactions/out-trade-no/{out_trade_no}/close",
            path_and_query: format!("/v3/pay/transactions/out-trade-no/{out_trade_no}/close"),
            body: Self::body(&serde_json::json!({ "mchid": self.mchid() }))?,
            retry: Retry::Keyed,
        })
        .await
        .map(|_| ())
    }

    /// Requests a refund (`POST /v3/refund/domestic/refunds`). The answer is usually
    /// `PROCESSING`; the outcome comes by notification or [`PayClient::query_refund`]. The same
    /// `out_refund_no` refunds once, so the call is retried on the backup host after a
    /// connection failure.
    ///
    /// # Errors
    /// [`PayError::Api`] (e.g. `NOT_ENOUGH`, `FREQUENCY_LIMITED`), [`PayError::InvalidArgument`].
    pub async fn refund(&self, req: &RefundRequest) -> Result<Refund, PayError> {
        check_id("out_refund_no", &req.out_refund_no, 64)?;
        if req.transaction_id.is_some() == req.out_trade_no.is_some() {
            return Err(PayError::InvalidArgument(
                "give exactly one of transaction_id and out_trade_no".into(),
            ));
        }
        if req.amount.refund > req.amount.total || req.amount.refund.get() == 0 {
            return Err(PayError::InvalidArgument(
                "the refund must be positive and at most the order total".into(),
            ));
        }
        self.json(PayRequest {
            method: reqwest::Method::POST,
            endpoint: "/v3/refund/domestic/refunds",
            path_and_query: "/v3/refund/domestic/refunds".into(),
            body: Self::body(req)?,
            retry: Retry::Keyed,
        })
        .await
    }

    /// Queries a refund by `out_refund_no`.
    ///
    /// # Errors
    /// [`PayError::Api`] (`RESOURCE_NOT_EXISTS` for an unknown refund).
    pub async fn query_refund(&self, out_refund_no: &str) -> Result<Refund, PayError> {
        check_id("out_refund_no", out_refund_no, 64)?;
        self.json(PayRequest {
            method: reqwest::Method::GET,
            endpoint: "/v3/refund/domestic/refunds/{out_refund_no}",
            path_and_query: format!("/v3/refund/domestic/refunds/{out_refund_no}"),
            body: Vec::new(),
            retry: Retry::Read,
        })
        .await
    }

    /// Applies for a trade bill (uncompressed); download it with [`PayClient::download_bill`].
    ///
    /// # Errors
    /// [`PayError::Api`] (e.g. the bill is not generated yet), [`PayError::InvalidArgument`].
    pub async fn trade_bill(&self, req: &TradeBillRequest) -> Result<BillInfo, PayError> {
        check_date(&req.bill_date)?;
        self.json(PayRequest {
            method: reqwest::Method::GET,
            endpoint: "/v3/bill/tradebill",
            path_and_query: format!(
                "/v3/bill/tradebill?bill_date={}&bill_type={}",
                req.bill_date,
                url_component(req.bill_type.as_str())
            ),
            body: Vec::new(),
            retry: Retry::Read,
        })
        .await
    }

    /// Applies for a fund-flow bill (uncompressed).
    ///
    /// # Errors
    /// As [`PayClient::trade_bill`].
    pub async fn fund_flow_bill(&self, req: &FundFlowBillRequest) -> Result<BillInfo, PayError> {
        check_date(&req.bill_date)?;
        self.json(PayRequest {
            method: reqwest::Method::GET,
            endpoint: "/v3/bill/fundflowbill",
            path_and_query: format!(
                "/v3/bill/fundflowbill?bill_date={}&account_type={}",
                req.bill_date,
                url_component(req.account_type.as_str())
            ),
            body: Vec::new(),
            retry: Retry::Read,
        })
        .await
    }

    /// Starts downloading a bill (a signed GET of `download_url`; the answer is unsigned and is
    /// checked against `hash_value` instead). Read it with [`BillDownload::chunk`].
    ///
    /// `download_url` must name this client's base or backup host (scheme, host, port) and a
    /// path under `/v3/billdownload/`: it is refused, unsigned and unsent, otherwise.
    ///
    /// # Errors
    /// [`PayError::InvalidArgument`] unless `hash_type` is SHA1;
    /// [`PayError::UntrustedDownloadUrl`] for a URL elsewhere; [`PayError::Api`] for a
    /// non-2xx answer; transport errors.
    pub async fn download_bill(&self, info: &BillInfo) -> Result<BillDownload, PayError> {
        if !info.hash_type.eq_ignore_ascii_case("SHA1")
            || info.hash_value.len() != 40
            || !info.hash_value.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return Err(PayError::InvalidArgument(
                "only SHA1 bills (40 hex digits) can be checked".into(),
            ));
        }
        let resp = self
            .inner
            .transport
            .get_stream(bill::ENDPOINT, &info.download_url)
            .await?;
        let status = resp.status().as_u16();
        if !(200..300).contains(&status) {
            let headers = resp.headers().clone();
            // Unsigned: read at most 64 KiB of it (else the bare status).
            let body = read_capped(resp, MAX_ERROR_BODY).await.unwrap_or_default();
            return Err(api_error(
                bill::ENDPOINT,
                &PayResponse {
                    status,
                    headers,
                    body,
                },
            ));
        }
        Ok(BillDownload::new(
            resp,
            &info.hash_value,
            self.inner.transport.download_timeout,
        ))
    }
}

/// Percent-encodes a query value (the enum values are plain, but `Other` may not be).
fn url_component(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
