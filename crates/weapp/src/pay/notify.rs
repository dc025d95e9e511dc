//! Payment and refund notifications: verify the signature over the raw body (never a
//! re-serialized one), check the time window, refuse probes, decrypt the AES-256-GCM resource
//! and decode it into a typed event; and the answers WeChat expects.
//!
//! Persist what [`NotificationParser::parse`] returns (keyed by [`Notification::id`]) before
//! answering [`NotifyResponse::success`]: WeChat retries until it gets a 2xx, for 24 h 4 min,
//! and duplicates are normal.

use serde::Deserialize;

use crate::pay::error::{serde_summary, NotifyError};
use crate::pay::keys::ApiV3Key;
use crate::pay::models::{RefundNotice, Transaction};
use crate::pay::time::PayTime;
use crate::pay::verifier::{sanitize, HeaderSource, Verifier};

/// The only resource algorithm of RSA merchants.
const AEAD: &str = "AEAD_AES_256_GCM";

/// A verified, decrypted notification.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Notification {
    /// The notification id (UUID-like): the key to deduplicate on.
    pub id: String,
    /// When WeChat created it.
    pub create_time: Option<PayTime>,
    /// `TRANSACTION.SUCCESS`, `REFUND.SUCCESS`, `REFUND.ABNORMAL`, `REFUND.CLOSED`, …
    pub event_type: String,
    /// `encrypt-resource`.
    pub resource_type: String,
    /// WeChat's summary, e.g. 支付成功.
    pub summary: String,
    /// `resource.original_type`: `transaction`, `refund`, …
    pub original_type: String,
    /// The decrypted resource JSON, as WeChat wrote it (for durable storage).
    pub plaintext: String,
    /// The resource, typed by `event_type`.
    pub event: NotificationEvent,
    /// The `Wechatpay-Serial` that verified it (a certificate serial or `PUB_KEY_ID_…`).
    pub serial: String,
}

/// A notification's resource, by kind.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum NotificationEvent {
    /// `TRANSACTION.*`: the transaction, as a query would return it.
    Transaction(Box<Transaction>),
    /// `REFUND.*`: the refund's outcome.
    Refund(Box<RefundNotice>),
    /// Any other event type: see [`Notification::plaintext`].
    Other,
}

#[derive(Deserialize)]
struct Envelope {
    id: String,
    #[serde(default)]
    create_time: Option<String>,
    #[serde(default)]
    resource_type: String,
    event_type: String,
    #[serde(default)]
    summary: String,
    resource: Resource,
}

#[derive(Deserialize)]
struct Resource {
    #[serde(default)]
    original_type: String,
    algorithm: String,
    ciphertext: String,
    #[serde(default)]
    associated_data: String,
    nonce: String,
}

/// Parses notifications for one merchant: its [`Verifier`] and APIv3 key. Cheap to clone.
#[derive(Debug, Clone)]
pub struct NotificationParser {
    verifier: Verifier,
    apiv3_key: ApiV3Key,
}

impl NotificationParser {
    /// A parser verifying with `verifier` and decrypting with `apiv3_key`.
    pub fn new(verifier: Verifier, apiv3_key: ApiV3Key) -> Self {
        Self {
            verifier,
            apiv3_key,
        }
    }

    /// The verifier.
    pub fn verifier(&self) -> &Verifier {
        &self.verifier
    }

    /// Verifies `headers` over the raw `body` (the exact bytes received), then decrypts and
    /// decodes the resource.
    ///
    /// # Errors
    /// [`NotifyError::Verify`] for any signature failure (missing header, probe, stale
    /// timestamp, unknown serial, mismatch) — answer it with [`NotifyResponse::for_error`];
    /// [`NotifyError::Malformed`], [`NotifyError::TypeMismatch`], [`NotifyError::Decrypt`] or
    /// [`NotifyError::Resource`] for a verified body that does not decode (`event_type`
    /// `TRANSACTION.*` needs `original_type` `transaction`, `REFUND.*` needs `refund`, and
    /// `associated_data` must be the `original_type` or empty — WeChat documents it as
    /// "可能为空字符串").
    pub fn parse<H: HeaderSource + ?Sized>(
        &self,
        headers: &H,
        body: &[u8],
    ) -> Result<Notification, NotifyError> {
        let verified = self.verifier.verify(headers, body)?;
        let env: Envelope =
            serde_json::from_slice(body).map_err(|e| NotifyError::Malformed(serde_summary(&e)))?;
        if env.resource.algorithm != AEAD {
            return Err(NotifyError::UnsupportedAlgorithm(sanitize(
                &env.resource.algorithm,
            )));
        }
        // The kind is decided by `event_type`; `original_type` must agree, and the GCM
        // associated data is `original_type` or empty (WeChat: "associated_data … 可能为空字符串"),
        // so a resource encrypted as another kind cannot be presented as this one.
        let expected = if env.event_type.starts_with("TRANSACTION.") {
            Some("transaction")
        } else if env.event_type.starts_with("REFUND.") {
            Some("refund")
        } else {
            None
        };
        let original = env.resource.original_type.as_str();
        let agrees = match expected {
            Some(kind) => original == kind,
            None => !matches!(original, "transaction" | "refund"),
        };
        let aad = env.resource.associated_data.as_str();
        if !agrees || !(aad == original || aad.is_empty()) {
            return Err(NotifyError::TypeMismatch {
                event_type: sanitize(&env.event_type),
                original_type: sanitize(original),
            });
        }
        let plain = self
            .apiv3_key
            .decrypt(&env.resource.nonce, aad, &env.resource.ciphertext)
            .ok_or(NotifyError::Decrypt)?;
        let plaintext =
            String::from_utf8(plain).map_err(|_| NotifyError::Resource("not UTF-8".into()))?;
        // Never the serde message itself: it quotes values of the decrypted resource.
        let resource = |e: serde_json::Error| NotifyError::Resource(serde_summary(&e));
        let event = if expected == Some("transaction") {
            NotificationEvent::Transaction(Box::new(
                serde_json::from_str(&plaintext).map_err(resource)?,
            ))
        } else if expected == Some("refund") {
            NotificationEvent::Refund(Box::new(
                serde_json::from_str(&plaintext).map_err(resource)?,
            ))
        } else {
            NotificationEvent::Other
        };
        Ok(Notification {
            id: env.id,
            create_time: env.create_time.and_then(|t| t.parse().ok()),
            event_type: env.event_type,
            resource_type: env.resource_type,
            summary: env.summary,
            original_type: env.resource.original_type,
            plaintext,
            event,
            serial: verified.serial,
        })
    }
}

/// The HTTP answer WeChat expects from a notify URL: **204** (or 200) without a body for
/// success; **4xx/5xx** with `{"code":"FAIL","message":…}` to have it retried. The status
/// decides: a 200 with `"FAIL"` counts as success and is never retried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifyResponse {
    /// The HTTP status.
    pub status: u16,
    /// The JSON body (`application/json`), if any.
    pub body: Option<String>,
}

impl NotifyResponse {
    /// 204 No Content: received and stored.
    pub fn success() -> Self {
        Self {
            status: 204,
            body: None,
        }
    }

    /// A failure WeChat will retry: `status` (forced into 400–599; anything else becomes 500)
    /// and `{"code":"FAIL","message":message}`.
    pub fn failure(status: u16, message: &str) -> Self {
        let status = if (400..600).contains(&status) {
            status
        } else {
            500
        };
        Self {
            status,
            body: Some(serde_json::json!({"code": "FAIL", "message": message}).to_string()),
        }
    }

    /// The answer to a refused notification: 401 when it is not authentic (including probes:
    /// WeChat expects them refused), 400 when it is malformed. Nothing of the request is
    /// echoed.
    pub fn for_error(err: &NotifyError) -> Self {
        if err.is_authentication() {
            Self::failure(401, "signature verification failed")
        } else {
            Self::failure(400, "malformed notification")
        }
    }

    /// `application/json` when there is a body.
    pub fn content_type(&self) -> Option<&'static str> {
        self.body.as_ref().map(|_| "application/json")
    }
}

#[cfg(feature = "axum")]
impl axum::response::IntoResponse for NotifyResponse {
    fn into_response(self) -> axum::response::Response {
        let status = axum::http::StatusCode::from_u16(self.status)
            .unwrap_or(axum::http::StatusCode::INTERNAL_SERVER_ERROR);
        match self.body {
            Some(body) => (
                status,
                [(axum::http::header::CONTENT_TYPE, "application/json")],
                body,
            )
                .into_response(),
            None => status.into_response(),
        }
    }
}
