//! OpenAPI management: quota inspection and resets, and looking up a failed request by `rid`.

use serde::{Deserialize, Serialize};

use super::Ack;
use crate::client::Client;
use crate::error::{Error, Result};
use crate::http::{Auth, Body, Endpoint, JsonResponse, Method};

/// OpenAPI management. Get one with [`Client::openapi`].
#[derive(Debug, Clone)]
pub struct OpenApiApi {
    client: Client,
}

impl Client {
    /// OpenAPI management (quotas, rids).
    pub fn openapi(&self) -> OpenApiApi {
        OpenApiApi {
            client: self.clone(),
        }
    }
}

/// Daily quota of one API.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[non_exhaustive]
pub struct Quota {
    /// Calls allowed per day.
    pub daily_limit: u64,
    /// Calls made today.
    pub used: u64,
    /// Calls left today.
    pub remain: u64,
}

/// Frequency limit of one API.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[non_exhaustive]
pub struct RateLimit {
    /// Calls allowed per period.
    pub call_count: u64,
    /// The period in seconds.
    pub refresh_second: u64,
}

/// The answer of `openapi/quota/get`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[non_exhaustive]
pub struct QuotaInfo {
    /// The daily quota.
    pub quota: Quota,
    /// The frequency limit.
    pub rate_limit: RateLimit,
}

impl JsonResponse for QuotaInfo {}

/// A request WeChat recorded under a `rid`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[non_exhaustive]
pub struct RidRequest {
    /// Unix seconds.
    pub invoke_time: i64,
    /// Time spent.
    pub cost_in_ms: i64,
    /// The request URL.
    pub request_url: String,
    /// The request body.
    pub request_body: String,
    /// The response body.
    pub response_body: String,
    /// The caller's IP.
    pub client_ip: String,
}

#[derive(Debug, Deserialize)]
struct RidResponse {
    request: RidRequest,
}

impl JsonResponse for RidResponse {}

#[derive(Serialize)]
struct QuotaGet<'a> {
    cgi_path: &'a str,
}

impl Endpoint for QuotaGet<'_> {
    type Output = QuotaInfo;
    const PATH: &'static str = "/cgi-bin/openapi/quota/get";
    const IDEMPOTENT: bool = true;
    fn body(&self) -> Result<Body> {
        Body::json(self)
    }
}

#[derive(Serialize)]
struct ClearQuota<'a> {
    appid: &'a str,
}

impl Endpoint for ClearQuota<'_> {
    type Output = Ack;
    const PATH: &'static str = "/cgi-bin/clear_quota";
    // Each reset uses one of the 10 a month.
    const IDEMPOTENT: bool = false;
    fn body(&self) -> Result<Body> {
        Body::json(self)
    }
}

struct ClearQuotaV2<'a> {
    appid: &'a str,
    secret: &'a str,
}

impl Endpoint for ClearQuotaV2<'_> {
    type Output = Ack;
    const PATH: &'static str = "/cgi-bin/clear_quota/v2";
    const METHOD: Method = Method::Post;
    const AUTH: Auth = Auth::None;
    const IDEMPOTENT: bool = false;
    fn query(&self) -> Vec<(&'static str, String)> {
        vec![
            ("appid", self.appid.into()),
            ("appsecret", self.secret.into()),
        ]
    }
}

#[derive(Serialize)]
struct RidGet<'a> {
    rid: &'a str,
}

impl Endpoint for RidGet<'_> {
    type Output = RidResponse;
    const PATH: &'static str = "/cgi-bin/openapi/rid/get";
    const IDEMPOTENT: bool = true;
    fn body(&self) -> Result<Body> {
        Body::json(self)
    }
}

impl OpenApiApi {
    /// The daily quota and rate limit of one API, e.g. `/cgi-bin/token`.
    ///
    /// # Errors
    /// 76021 unknown path, 76022 `/sns/` paths (not supported).
    ///
    /// ```no_run
    /// # async fn run(client: weapp::Client) -> Result<(), weapp::Error> {
    /// let q = client.openapi().quota("/wxa/getwxacode").await?;
    /// println!("{} of {} used", q.quota.used, q.quota.daily_limit);
    /// # Ok(()) }
    /// ```
    pub async fn quota(&self, cgi_path: &str) -> Result<QuotaInfo> {
        if !cgi_path.starts_with('/') {
            return Err(Error::InvalidArgument("cgi_path must start with /".into()));
        }
        self.client.send(&QuotaGet { cgi_path }).await
    }

    /// Resets the app's daily quotas (10 times a month).
    ///
    /// # Errors
    /// 48006 monthly limit reached.
    ///
    /// ```no_run
    /// # async fn run(client: weapp::Client) -> Result<(), weapp::Error> {
    /// client.openapi().clear_quota().await?;
    /// # Ok(()) }
    /// ```
    pub async fn clear_quota(&self) -> Result<()> {
        self.client
            .send(&ClearQuota {
                appid: self.client.appid(),
            })
            .await?;
        self.quota_restored();
        Ok(())
    }

    /// A reset succeeded: a remembered 45009 of the token endpoint no longer holds.
    fn quota_restored(&self) {
        if let Some(m) = self.client.token_manager() {
            m.forget_failures();
        }
    }

    /// Resets the quotas authenticating with the AppSecret — works when the token quota itself
    /// is exhausted (45009 on `/cgi-bin/token`).
    ///
    /// # Errors
    /// 40125 wrong secret, 48006 monthly limit reached.
    ///
    /// ```no_run
    /// # async fn run(client: weapp::Client) -> Result<(), weapp::Error> {
    /// client.openapi().clear_quota_v2().await?;
    /// # Ok(()) }
    /// ```
    pub async fn clear_quota_v2(&self) -> Result<()> {
        self.client
            .send(&ClearQuotaV2 {
                appid: self.client.appid(),
                secret: self.client.secret().expose(),
            })
            .await?;
        self.quota_restored();
        Ok(())
    }

    /// The request behind a `rid` from an error message (see [`Error::rid`]).
    ///
    /// # Errors
    /// 76001 not found, 76002 malformed rid.
    ///
    /// ```no_run
    /// # async fn run(client: weapp::Client, err: weapp::Error) -> Result<(), weapp::Error> {
    /// if let Some(rid) = err.rid() {
    ///     let req = client.openapi().rid(rid).await?;
    ///     println!("{} answered {}", req.request_url, req.response_body);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn rid(&self, rid: &str) -> Result<RidRequest> {
        self.client.send(&RidGet { rid }).await.map(|r| r.request)
    }
}
