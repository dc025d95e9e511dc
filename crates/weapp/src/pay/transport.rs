//! The HTTP layer of `weapp::pay`: sign each request over the exact bytes sent, send it to the
//! primary host, and on a connection failure try the backup host once — for every call when
//! the request provably never left (connect refused, DNS, TLS handshake), and after a failure
//! mid-request only for calls that are idempotent by their key. A creating call (prepay) that
//! fails after sending is [`PayError::OutcomeUnknown`].
//!
//! Responses come back unverified: the caller checks the status and the signature.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE, USER_AGENT};

use crate::clock::Clock;
use crate::pay::error::{clean_text, PayError, MAX_TEXT_CHARS};
use crate::pay::sign::{nonce, Merchant};

/// What may be repeated after a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Retry {
    /// Reads (queries, bills, certificates): always safe.
    Read,
    /// Writes that are idempotent by their key (close by out_trade_no, refund by
    /// out_refund_no): the same key never acts twice.
    Keyed,
    /// A prepay: not repeated once the request may have left.
    Create,
}

/// One request: the API path and query (`/v3/...?...`), method, body.
pub(crate) struct PayRequest {
    pub(crate) method: reqwest::Method,
    /// The endpoint's name in errors and logs (no ids, no query).
    pub(crate) endpoint: &'static str,
    pub(crate) path_and_query: String,
    pub(crate) body: Vec<u8>,
    pub(crate) retry: Retry,
}

/// An answer as received (not verified).
#[derive(Debug)]
pub(crate) struct PayResponse {
    pub(crate) status: u16,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

impl PayResponse {
    pub(crate) fn request_id(&self) -> Option<String> {
        self.headers
            .get("Request-ID")
            .and_then(|v| v.to_str().ok())
            .map(|s| s.chars().take(128).collect())
    }
}

/// The most of a 2xx answer read into memory (WeChat's answers are a few KiB; a certificate
/// listing well under 64 KiB).
pub(crate) const MAX_BODY: u64 = 1 << 20;
/// The most of a non-2xx answer's body read (an error JSON or a proxy's page).
pub(crate) const MAX_ERROR_BODY: u64 = 64 << 10;

/// Why a body was not read whole.
pub(crate) enum ReadError {
    /// Larger than the limit (by `Content-Length` or while reading).
    TooLarge,
    /// The stream broke.
    Transport(reqwest::Error),
}

/// Reads `resp`'s body, refusing one announced or found larger than `limit` bytes (without
/// reading the rest).
pub(crate) async fn read_capped(
    mut resp: reqwest::Response,
    limit: u64,
) -> Result<Bytes, ReadError> {
    if resp.content_length().is_some_and(|n| n > limit) {
        return Err(ReadError::TooLarge);
    }
    let mut out = bytes::BytesMut::new();
    while let Some(chunk) = resp.chunk().await.map_err(ReadError::Transport)? {
        if (out.len() + chunk.len()) as u64 > limit {
            return Err(ReadError::TooLarge);
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out.freeze())
}

/// `detail` of an unsigned error body with its strings cleaned and its size bounded (depth 4,
/// 16 entries per level).
fn clean_detail(value: serde_json::Value, depth: usize) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::String(s) => Value::String(clean_text(&s, MAX_TEXT_CHARS)),
        Value::Array(items) if depth < 4 => Value::Array(
            items
                .into_iter()
                .take(16)
                .map(|v| clean_detail(v, depth + 1))
                .collect(),
        ),
        Value::Object(map) if depth < 4 => Value::Object(
            map.into_iter()
                .take(16)
                .map(|(k, v)| (clean_text(&k, 64), clean_detail(v, depth + 1)))
                .collect(),
        ),
        Value::Array(_) | Value::Object(_) => Value::String("…".into()),
        other => other,
    }
}

/// The typed error of a non-2xx answer: `{"code","message","detail"}` when the body is that
/// JSON, else the bare status. (Such answers are not signed: their text is cut to 512
/// characters and control characters are escaped before it reaches `Display` and logs.)
pub(crate) fn api_error(endpoint: &'static str, resp: &PayResponse) -> PayError {
    #[derive(serde::Deserialize)]
    struct Body {
        code: String,
        #[serde(default)]
        message: String,
        #[serde(default)]
        detail: Option<serde_json::Value>,
    }
    match serde_json::from_slice::<Body>(&resp.body) {
        Ok(b) => PayError::Api {
            endpoint: Cow::Borrowed(endpoint),
            status: resp.status,
            code: clean_text(&b.code, MAX_TEXT_CHARS).as_str().into(),
            message: clean_text(&b.message, MAX_TEXT_CHARS),
            detail: b.detail.map(|d| Box::new(clean_detail(d, 0))),
            request_id: resp.request_id(),
        },
        Err(_) => PayError::HttpStatus {
            endpoint: Cow::Borrowed(endpoint),
            status: resp.status,
            request_id: resp.request_id(),
        },
    }
}

/// A failed attempt, and whether the request certainly never reached the server.
struct Failed {
    err: PayError,
    never_sent: bool,
    /// The server answered (an oversized body): not a connection failure, not retried.
    answered: bool,
}

/// Parses an http(s) base URL without query or fragment; a trailing `/` is dropped.
pub(crate) fn parse_base(url: &str) -> Result<reqwest::Url, PayError> {
    reqwest::Url::parse(url.trim_end_matches('/'))
        .ok()
        .filter(|u| {
            matches!(u.scheme(), "http" | "https") && u.query().is_none() && u.fragment().is_none()
        })
        .ok_or_else(|| {
            PayError::InvalidArgument(format!(
                "base URL `{}` must be an http(s) URL without query or fragment",
                crate::http::redact_url(url)
            ))
        })
}

#[derive(Clone)]
pub(crate) struct Transport {
    pub(crate) client: reqwest::Client,
    pub(crate) primary: reqwest::Url,
    pub(crate) backup: Option<reqwest::Url>,
    pub(crate) merchant: Merchant,
    /// `Wechatpay-Serial` to send on every request (the public key id), if any.
    pub(crate) serial: Option<HeaderValue>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) timeout: Duration,
    pub(crate) download_timeout: Duration,
}

impl Transport {
    /// `base` + API path, and the canonical URL to sign (the API path and query as the URL
    /// will send them; a base path prefix, for a proxy, is not part of it).
    fn url(base: &reqwest::Url, path_and_query: &str) -> (reqwest::Url, String) {
        let (path, query) = match path_and_query.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path_and_query, None),
        };
        let mut url = base.clone();
        let prefix = base.path().trim_end_matches('/').to_owned();
        url.set_path(&format!("{prefix}{path}"));
        url.set_query(query);
        let mut canonical = url.path()[prefix.len()..].to_owned();
        if let Some(q) = url.query() {
            canonical.push('?');
            canonical.push_str(q);
        }
        (url, canonical)
    }

    /// A signed request builder for `url` (absolute) whose canonical form is `canonical`.
    fn signed(
        &self,
        method: reqwest::Method,
        url: reqwest::Url,
        canonical: &str,
        body: &[u8],
    ) -> Result<reqwest::RequestBuilder, PayError> {
        let ts = self.clock.now_ms().div_euclid(1000);
        let auth = self
            .merchant
            .authorization(method.as_str(), canonical, body, ts, &nonce())?;
        let mut req = self
            .client
            .request(method, url)
            .header(AUTHORIZATION, auth)
            .header(ACCEPT, "application/json")
            .header(
                USER_AGENT,
                concat!("weapp-rs/", env!("CARGO_PKG_VERSION"), " (WeChatPay-APIv3)"),
            );
        if let Some(serial) = &self.serial {
            req = req.header("Wechatpay-Serial", serial.clone());
        }
        if !body.is_empty() {
            req = req
                .header(CONTENT_TYPE, "application/json")
                .body(body.to_vec());
        }
        Ok(req)
    }

    fn failed(&self, endpoint: &'static str, e: reqwest::Error) -> Failed {
        let never_sent = e.is_connect();
        let err = if e.is_timeout() && !never_sent {
            PayError::TimedOut {
                endpoint: Cow::Borrowed(endpoint),
                after: self.timeout,
            }
        } else {
            PayError::Transport {
                endpoint: Cow::Borrowed(endpoint),
                source: Arc::new(e.without_url()),
            }
        };
        Failed {
            err,
            never_sent,
            answered: false,
        }
    }

    async fn attempt(&self, base: &reqwest::Url, req: &PayRequest) -> Result<PayResponse, Failed> {
        let (url, canonical) = Self::url(base, &req.path_and_query);
        let builder = self
            .signed(req.method.clone(), url, &canonical, &req.body)
            .map_err(|err| Failed {
                err,
                never_sent: true,
                answered: false,
            })?;
        let resp = builder
            .send()
            .await
            .map_err(|e| self.failed(req.endpoint, e))?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let ok = (200..300).contains(&status);
        let limit = if ok { MAX_BODY } else { MAX_ERROR_BODY };
        let body = match read_capped(resp, limit).await {
            Ok(body) => body,
            // An oversized error body: the status is the answer.
            Err(ReadError::TooLarge) if !ok => Bytes::new(),
            Err(ReadError::TooLarge) => {
                return Err(Failed {
                    err: PayError::ResponseTooLarge {
                        endpoint: Cow::Borrowed(req.endpoint),
                        limit,
                    },
                    never_sent: false,
                    answered: true,
                })
            }
            Err(ReadError::Transport(e)) => {
                let mut f = self.failed(req.endpoint, e);
                f.never_sent = false;
                return Err(f);
            }
        };
        Ok(PayResponse {
            status,
            headers,
            body,
        })
    }

    /// Sends `req` to the primary host, and once to the backup host when that is safe.
    /// Bounded by two request timeouts.
    pub(crate) async fn send(&self, req: &PayRequest) -> Result<PayResponse, PayError> {
        let first = match self.attempt(&self.primary, req).await {
            Ok(resp) => return Ok(resp),
            Err(f) => f,
        };
        let retry = self
            .backup
            .as_ref()
            .filter(|_| !first.answered && (first.never_sent || req.retry != Retry::Create));
        let last = match retry {
            Some(backup) => {
                tracing::warn!(
                    endpoint = req.endpoint,
                    error = %first.err,
                    "WeChat Pay primary host failed; retrying once on the backup host"
                );
                match self.attempt(backup, req).await {
                    Ok(resp) => return Ok(resp),
                    Err(f) => f,
                }
            }
            None => first,
        };
        if req.retry == Retry::Create && !last.never_sent {
            return Err(PayError::OutcomeUnknown {
                endpoint: Cow::Borrowed(req.endpoint),
                source: Box::new(last.err),
            });
        }
        Err(last.err)
    }

    /// The canonical (signed) form of a bill's `download_url`, which must name this client's
    /// primary or backup host (scheme, host and port) and a path under that base's
    /// `/v3/billdownload/`. Anything else is refused before it is signed: a signed GET is
    /// valid at WeChat for any endpoint it names, so `download_url` may not choose where one
    /// goes or what it asks for.
    pub(crate) fn download_target(&self, url: &str) -> Result<(reqwest::Url, String), PayError> {
        let refuse = |reason| PayError::UntrustedDownloadUrl { reason };
        let url = reqwest::Url::parse(url).map_err(|_| refuse("not a URL"))?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(refuse("carries credentials"));
        }
        let base = std::iter::once(&self.primary)
            .chain(self.backup.as_ref())
            .find(|b| b.origin() == url.origin())
            .ok_or(refuse("not the WeChat Pay host of this client"))?;
        let prefix = base.path().trim_end_matches('/');
        let path = url
            .path()
            .strip_prefix(prefix)
            .filter(|p| p.starts_with("/v3/billdownload/"))
            .ok_or(refuse("not under /v3/billdownload/"))?;
        if path.split('/').any(|seg| seg == ".." || seg == ".") {
            return Err(refuse("not under /v3/billdownload/"));
        }
        let mut canonical = path.to_owned();
        if let Some(q) = url.query() {
            canonical.push('?');
            canonical.push_str(q);
        }
        let mut url = url;
        url.set_fragment(None);
        Ok((url, canonical))
    }

    /// A signed GET of a bill's `download_url` (checked by [`Transport::download_target`]),
    /// with the download timeout; the response is returned before its body is read.
    pub(crate) async fn get_stream(
        &self,
        endpoint: &'static str,
        url: &str,
    ) -> Result<reqwest::Response, PayError> {
        let (url, canonical) = self.download_target(url)?;
        let req = self
            .signed(reqwest::Method::GET, url, &canonical, b"")?
            .timeout(self.download_timeout);
        req.send().await.map_err(|e| self.failed(endpoint, e).err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_url_is_the_api_path_and_query_as_sent() {
        let base = parse_base("http://gw.example.com/wechat/").unwrap();
        let (url, canonical) = Transport::url(&base, "/v3/pay/transactions/id/42?mchid=1900007291");
        assert_eq!(
            url.as_str(),
            "http://gw.example.com/wechat/v3/pay/transactions/id/42?mchid=1900007291"
        );
        assert_eq!(canonical, "/v3/pay/transactions/id/42?mchid=1900007291");
        let base = parse_base("https://api.mch.weixin.qq.com").unwrap();
        let (url, canonical) = Transport::url(&base, "/v3/certificates");
        assert_eq!(
            url.as_str(),
            "https://api.mch.weixin.qq.com/v3/certificates"
        );
        assert_eq!(canonical, "/v3/certificates");
        for bad in [
            "api.mch.weixin.qq.com",
            "ftp://x",
            "http://x/?k=v",
            "http://x/#f",
        ] {
            assert!(parse_base(bad).is_err(), "{bad}");
        }
    }
}
