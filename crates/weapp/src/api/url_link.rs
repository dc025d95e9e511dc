//! URL Scheme (`weixin://dl/business/?t=…`), URL Link (`https://wxaurl.cn/…`) and Short Link
//! (`#小程序://…`): open the mini program from outside WeChat. Expiry (≤ 30 days), query
//! characters and title length are checked before sending, with WeChat's errcodes.

use serde::{Deserialize, Serialize};

use super::EnvVersion;
use crate::client::Client;
use crate::error::{rejected_locally, Result};
use crate::http::{Body, Endpoint, JsonResponse};

/// Scheme and link APIs. Get one with [`Client::url_link`].
#[derive(Debug, Clone)]
pub struct UrlLinkApi {
    client: Client,
}

impl Client {
    /// URL Scheme, URL Link and Short Link APIs.
    pub fn url_link(&self) -> UrlLinkApi {
        UrlLinkApi {
            client: self.clone(),
        }
    }
}

const QUERY_CHARS: &str = "!#$&'()*+,/:;=?@-._~%";

/// A link `query`: ≤ 1024 characters of `[0-9A-Za-z]` and `!#$&'()*+,/:;=?@-._~%`.
///
/// # Errors
/// 40212.
pub fn validate_query(endpoint: &'static str, query: &str) -> Result<()> {
    if query.chars().count() > 1024 {
        return Err(rejected_locally(
            endpoint,
            40212,
            "query is longer than 1024 characters",
        ));
    }
    if let Some(c) = query
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || QUERY_CHARS.contains(*c)))
    {
        return Err(rejected_locally(
            endpoint,
            40212,
            format!("query contains `{c}`; percent-encode it"),
        ));
    }
    Ok(())
}

/// When a scheme or link stops working.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// At this Unix time (between 1 minute and 30 days ahead).
    At(i64),
    /// After this many days (1–30).
    InDays(u32),
}

impl Expiry {
    fn check(self, endpoint: &'static str) -> Result<()> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let ok = match self {
            Expiry::InDays(d) => (1..=30).contains(&d),
            Expiry::At(t) => t >= now + 60 && t <= now + 30 * 86_400,
        };
        if ok {
            Ok(())
        } else {
            Err(rejected_locally(
                endpoint,
                85401,
                "expiry must be between 1 minute and 30 days ahead",
            ))
        }
    }

    fn fields(self) -> ExpiryFields {
        match self {
            Expiry::At(t) => ExpiryFields {
                expire_type: 0,
                expire_time: Some(t),
                expire_interval: None,
            },
            Expiry::InDays(d) => ExpiryFields {
                expire_type: 1,
                expire_time: None,
                expire_interval: Some(d),
            },
        }
    }
}

#[derive(Debug, Clone, Serialize)]
struct ExpiryFields {
    expire_type: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    expire_time: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expire_interval: Option<u32>,
}

/// Where a scheme lands.
#[derive(Debug, Clone, Default, Serialize)]
struct JumpWxa {
    #[serde(skip_serializing_if = "String::is_empty")]
    path: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    query: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    env_version: Option<EnvVersion>,
}

macro_rules! target_setters {
    ($($field:ident).+) => {
        /// The page to open (published; default: home page).
        pub fn path(mut self, path: impl Into<String>) -> Self {
            self.$($field).+.path = path.into();
            self
        }
        /// The page's query string (`a=1&b=2`; percent-encode other characters).
        pub fn query(mut self, query: impl Into<String>) -> Self {
            self.$($field).+.query = query.into();
            self
        }
        /// Which version it opens.
        pub fn env_version(mut self, env: EnvVersion) -> Self {
            self.$($field).+.env_version = Some(env);
            self
        }
    };
}

/// `generatescheme`.
#[derive(Debug, Clone, Serialize)]
#[must_use = "call .send()"]
pub struct GenerateScheme {
    #[serde(skip)]
    client: Client,
    jump_wxa: JumpWxa,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    expiry: Option<ExpiryFields>,
    #[serde(skip)]
    expiry_raw: Option<Expiry>,
}

impl GenerateScheme {
    target_setters!(jump_wxa);

    /// When it expires (default: in 30 days).
    pub fn expiry(mut self, expiry: Expiry) -> Self {
        self.expiry_raw = Some(expiry);
        self.expiry = Some(expiry.fields());
        self
    }

    /// Generates the scheme.
    ///
    /// # Errors
    /// Local 40212, 85401; WeChat 40165 unpublished page, 85402, 44993 daily quota.
    ///
    /// ```no_run
    /// # async fn run(client: weapp::Client) -> Result<(), weapp::Error> {
    /// use weapp::api::url_link::Expiry;
    /// let link = client.url_link().scheme().path("pages/item/item").query("id=42").expiry(Expiry::InDays(7)).send().await?;
    /// # Ok(()) }
    /// ```
    pub async fn send(self) -> Result<String> {
        validate_query(Self::PATH, &self.jump_wxa.query)?;
        if let Some(e) = self.expiry_raw {
            e.check(Self::PATH)?;
        }
        self.client.send(&self).await.map(|r| r.openlink)
    }
}

/// The answer of a scheme generation.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[non_exhaustive]
pub struct OpenLink {
    /// The generated value.
    pub openlink: String,
}

impl JsonResponse for OpenLink {}

impl Endpoint for GenerateScheme {
    type Output = OpenLink;
    const PATH: &'static str = "/wxa/generatescheme";
    fn body(&self) -> Result<Body> {
        Body::json(self)
    }
}

/// `generatenfcscheme`.
#[derive(Debug, Clone, Serialize)]
#[must_use = "call .send()"]
pub struct GenerateNfcScheme {
    #[serde(skip)]
    client: Client,
    jump_wxa: JumpWxa,
    model_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    sn: Option<String>,
}

impl GenerateNfcScheme {
    target_setters!(jump_wxa);

    /// The NFC device's serial number.
    pub fn sn(mut self, sn: impl Into<String>) -> Self {
        self.sn = Some(sn.into());
        self
    }

    /// Generates the NFC scheme.
    ///
    /// # Errors
    /// Local 40212; WeChat 40097, 40165, 85402.
    ///
    /// ```no_run
    /// # async fn run(client: weapp::Client) -> Result<(), weapp::Error> {
    /// let link = client.url_link().nfc_scheme("model-123").path("pages/index/index").send().await?;
    /// # Ok(()) }
    /// ```
    pub async fn send(self) -> Result<String> {
        validate_query(Self::PATH, &self.jump_wxa.query)?;
        self.client.send(&self).await.map(|r| r.openlink)
    }
}

impl Endpoint for GenerateNfcScheme {
    type Output = OpenLink;
    const PATH: &'static str = "/wxa/generatenfcscheme";
    fn body(&self) -> Result<Body> {
        Body::json(self)
    }
}

/// `generate_urllink`.
#[derive(Debug, Clone, Serialize)]
#[must_use = "call .send()"]
pub struct GenerateUrlLink {
    #[serde(skip)]
    client: Client,
    #[serde(flatten)]
    target: JumpWxa,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    expiry: Option<ExpiryFields>,
    #[serde(skip)]
    expiry_raw: Option<Expiry>,
}

impl GenerateUrlLink {
    target_setters!(target);

    /// When it expires (default: in 30 days).
    pub fn expiry(mut self, expiry: Expiry) -> Self {
        self.expiry_raw = Some(expiry);
        self.expiry = Some(expiry.fields());
        self
    }

    /// Generates the link.
    ///
    /// # Errors
    /// Local 40212, 85401; WeChat 40165, 85402, 44993.
    ///
    /// ```no_run
    /// # async fn run(client: weapp::Client) -> Result<(), weapp::Error> {
    /// let url = client.url_link().link().path("pages/item/item").query("id=42").send().await?;
    /// # Ok(()) }
    /// ```
    pub async fn send(self) -> Result<String> {
        validate_query(Self::PATH, &self.target.query)?;
        if let Some(e) = self.expiry_raw {
            e.check(Self::PATH)?;
        }
        self.client.send(&self).await.map(|r| r.url_link)
    }
}

/// The answer of `generate_urllink`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[non_exhaustive]
pub struct UrlLinkOut {
    /// The generated value.
    pub url_link: String,
}

impl JsonResponse for UrlLinkOut {}

impl Endpoint for GenerateUrlLink {
    type Output = UrlLinkOut;
    const PATH: &'static str = "/wxa/generate_urllink";
    fn body(&self) -> Result<Body> {
        Body::json(self)
    }
}

/// `genwxashortlink`.
#[derive(Debug, Clone, Serialize)]
#[must_use = "call .send()"]
pub struct ShortLink {
    #[serde(skip)]
    client: Client,
    page_url: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    page_title: String,
    is_permanent: bool,
}

impl ShortLink {
    /// Title shown with the link (≤ 20 characters).
    pub fn title(mut self, title: impl Into<String>) -> Self {
        self.page_title = title.into();
        self
    }

    /// Permanent (100,000 per app) instead of temporary.
    pub fn permanent(mut self, permanent: bool) -> Self {
        self.is_permanent = permanent;
        self
    }

    /// Generates the short link.
    ///
    /// # Errors
    /// Local 40066, 40225, 40212; WeChat 40066 (a page the published app does not have), 85400
    /// permanent quota.
    ///
    /// ```no_run
    /// # async fn run(client: weapp::Client) -> Result<(), weapp::Error> {
    /// let link = client.url_link().short_link("pages/item/item?id=42").title("Item 42").send().await?;
    /// # Ok(()) }
    /// ```
    pub async fn send(self) -> Result<String> {
        if self.page_url.is_empty() || self.page_url.chars().count() > 1024 {
            return Err(rejected_locally(
                Self::PATH,
                40066,
                "page_url must be 1-1024 characters",
            ));
        }
        if self.page_title.chars().count() > 20 {
            return Err(rejected_locally(
                Self::PATH,
                40225,
                "page_title must be at most 20 characters",
            ));
        }
        if let Some((_, q)) = self.page_url.split_once('?') {
            validate_query(Self::PATH, q)?;
        }
        self.client.send(&self).await.map(|r| r.link)
    }
}

/// The answer of `genwxashortlink`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[non_exhaustive]
pub struct LinkOut {
    /// The generated value.
    pub link: String,
}

impl JsonResponse for LinkOut {}

impl Endpoint for ShortLink {
    type Output = LinkOut;
    const PATH: &'static str = "/wxa/genwxashortlink";
    fn idempotent(&self) -> bool {
        // A temporary link may be made twice; a permanent one spends 1 of 100,000.
        !self.is_permanent
    }
    fn body(&self) -> Result<Body> {
        Body::json(self)
    }
}

/// What a scheme or link resolves to.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[non_exhaustive]
pub struct LinkDetails {
    /// The app.
    pub appid: String,
    /// The page.
    pub path: String,
    /// The query.
    pub query: String,
    /// Unix seconds.
    pub create_time: i64,
    /// Unix seconds (0: never).
    pub expire_time: i64,
    /// The version it opens.
    pub env_version: EnvVersion,
}

/// Visits left.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[non_exhaustive]
pub struct VisitQuota {
    /// Visits left.
    pub remain_visit_quota: u64,
}

/// The answer of a query call.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[non_exhaustive]
pub struct LinkInfo {
    /// What it resolves to.
    #[serde(alias = "scheme_info", alias = "url_link_info")]
    pub details: LinkDetails,
    /// Visits left.
    pub quota_info: VisitQuota,
}

impl JsonResponse for LinkInfo {}

#[derive(Serialize)]
struct QueryScheme<'a> {
    scheme: &'a str,
    query_type: u8,
}

impl Endpoint for QueryScheme<'_> {
    type Output = LinkInfo;
    const PATH: &'static str = "/wxa/queryscheme";
    const IDEMPOTENT: bool = true;
    fn body(&self) -> Result<Body> {
        Body::json(self)
    }
}

#[derive(Serialize)]
struct QueryUrlLink<'a> {
    url_link: &'a str,
    query_type: u8,
}

impl Endpoint for QueryUrlLink<'_> {
    type Output = LinkInfo;
    const PATH: &'static str = "/wxa/query_urllink";
    const IDEMPOTENT: bool = true;
    fn body(&self) -> Result<Body> {
        Body::json(self)
    }
}

impl UrlLinkApi {
    /// A URL Scheme; see [`GenerateScheme`].
    pub fn scheme(&self) -> GenerateScheme {
        GenerateScheme {
            client: self.client.clone(),
            jump_wxa: JumpWxa::default(),
            expiry: None,
            expiry_raw: None,
        }
    }

    /// An NFC scheme for the device model `model_id`; see [`GenerateNfcScheme`].
    pub fn nfc_scheme(&self, model_id: impl Into<String>) -> GenerateNfcScheme {
        GenerateNfcScheme {
            client: self.client.clone(),
            jump_wxa: JumpWxa::default(),
            model_id: model_id.into(),
            sn: None,
        }
    }

    /// A URL Link; see [`GenerateUrlLink`].
    pub fn link(&self) -> GenerateUrlLink {
        GenerateUrlLink {
            client: self.client.clone(),
            target: JumpWxa::default(),
            expiry: None,
            expiry_raw: None,
        }
    }

    /// A Short Link to `page_url` (a page with an optional query); see [`ShortLink`].
    pub fn short_link(&self, page_url: impl Into<String>) -> ShortLink {
        ShortLink {
            client: self.client.clone(),
            page_url: page_url.into(),
            page_title: String::new(),
            is_permanent: false,
        }
    }

    /// What a scheme resolves to.
    ///
    /// # Errors
    /// 85403 unknown or expired.
    ///
    /// ```no_run
    /// # async fn run(client: weapp::Client) -> Result<(), weapp::Error> {
    /// let info = client.url_link().query_scheme("weixin://dl/business/?t=abc").await?;
    /// # Ok(()) }
    /// ```
    pub async fn query_scheme(&self, scheme: &str) -> Result<LinkInfo> {
        self.client
            .send(&QueryScheme {
                scheme,
                query_type: 0,
            })
            .await
    }

    /// What a URL Link resolves to.
    ///
    /// # Errors
    /// 85403 unknown or expired.
    ///
    /// ```no_run
    /// # async fn run(client: weapp::Client) -> Result<(), weapp::Error> {
    /// let info = client.url_link().query_url_link("https://wxaurl.cn/abc").await?;
    /// # Ok(()) }
    /// ```
    pub async fn query_url_link(&self, url_link: &str) -> Result<LinkInfo> {
        self.client
            .send(&QueryUrlLink {
                url_link,
                query_type: 0,
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_charset_and_expiry_bounds() {
        assert!(validate_query("/x", "id=42&from=share%20x").is_ok());
        assert_eq!(
            validate_query("/x", "a b")
                .unwrap_err()
                .errcode()
                .unwrap()
                .code(),
            40212
        );
        assert_eq!(
            validate_query("/x", &"a".repeat(1025))
                .unwrap_err()
                .errcode()
                .unwrap()
                .code(),
            40212
        );
        assert!(validate_query("/x", &"a".repeat(1024)).is_ok());
        assert!(Expiry::InDays(30).check("/x").is_ok());
        assert!(Expiry::InDays(1).check("/x").is_ok());
        assert!(Expiry::InDays(0).check("/x").is_err());
        assert!(Expiry::InDays(31).check("/x").is_err());
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        assert!(Expiry::At(now + 120).check("/x").is_ok());
        assert!(Expiry::At(now + 10).check("/x").is_err());
        assert!(Expiry::At(now + 31 * 86_400).check("/x").is_err());
    }
}
