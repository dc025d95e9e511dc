//! Content security: text checks (v2, typed verdicts), image checks, asynchronous media checks
//! (the verdict arrives as a `wxa_media_check` push, see [`crate::push`]) and user risk ranks.

use serde::{Deserialize, Deserializer, Serialize};

use super::Ack;
use crate::client::Client;
use crate::error::{Error, Result};
use crate::http::{Body, Endpoint, JsonResponse};

/// Content security APIs. Get one with [`Client::security`].
#[derive(Debug, Clone)]
pub struct SecurityApi {
    client: Client,
}

impl Client {
    /// Content security APIs.
    pub fn security(&self) -> SecurityApi {
        SecurityApi {
            client: self.clone(),
        }
    }
}

/// What kind of media to check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaType {
    /// Audio (1).
    Audio,
    /// Image (2).
    Image,
}

/// Where the content appears; it tunes WeChat's strictness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scene {
    /// 1: profile (avatar, nickname, signature).
    Profile,
    /// 2: comment.
    Comment,
    /// 3: forum.
    Forum,
    /// 4: social log.
    SocialLog,
}

#[derive(Serialize)]
struct MediaCheckAsync<'a> {
    media_url: &'a str,
    media_type: u8,
    version: u8,
    scene: u8,
    openid: &'a str,
}

/// The answer of `media_check_async`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[non_exhaustive]
pub struct MediaCheckTicket {
    /// Matches the `trace_id` of the `wxa_media_check` push carrying the verdict.
    pub trace_id: String,
}

impl JsonResponse for MediaCheckTicket {}

impl Endpoint for MediaCheckAsync<'_> {
    type Output = MediaCheckTicket;
    const PATH: &'static str = "/wxa/media_check_async";

    fn body(&self) -> Result<Body> {
        Body::json(self)
    }
}

/// WeChat's advice.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Suggest {
    /// Publish.
    Pass,
    /// Have a person look.
    Review,
    /// Do not publish.
    Risky,
    /// A value this version does not know.
    Other(String),
}

/// Written as WeChat writes it: `pass`, `review`, `risky` or the text received.
impl Serialize for Suggest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(match self {
            Suggest::Pass => "pass",
            Suggest::Review => "review",
            Suggest::Risky => "risky",
            Suggest::Other(text) => text,
        })
    }
}

impl<'de> Deserialize<'de> for Suggest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Ok(match String::deserialize(d)?.as_str() {
            "pass" => Suggest::Pass,
            "review" => Suggest::Review,
            "risky" => Suggest::Risky,
            other => Suggest::Other(other.to_owned()),
        })
    }
}

/// What the content is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Label {
    /// 100
    Normal,
    /// 10001
    Ad,
    /// 20001
    Politics,
    /// 20002
    Porn,
    /// 20003
    Abuse,
    /// 20006
    Illegal,
    /// 20008
    Fraud,
    /// 20012
    Vulgar,
    /// 20013
    Copyright,
    /// 21000
    Other,
    /// Any other code.
    Unknown(i64),
}

impl Label {
    /// WeChat's numeric code (`100`, `20001`, …).
    pub fn code(self) -> i64 {
        match self {
            Label::Normal => 100,
            Label::Ad => 10001,
            Label::Politics => 20001,
            Label::Porn => 20002,
            Label::Abuse => 20003,
            Label::Illegal => 20006,
            Label::Fraud => 20008,
            Label::Vulgar => 20012,
            Label::Copyright => 20013,
            Label::Other => 21000,
            Label::Unknown(n) => n,
        }
    }
}

/// Written as WeChat writes it: the numeric code.
impl Serialize for Label {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_i64(self.code())
    }
}

impl<'de> Deserialize<'de> for Label {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Ok(match i64::deserialize(d)? {
            100 => Label::Normal,
            10001 => Label::Ad,
            20001 => Label::Politics,
            20002 => Label::Porn,
            20003 => Label::Abuse,
            20006 => Label::Illegal,
            20008 => Label::Fraud,
            20012 => Label::Vulgar,
            20013 => Label::Copyright,
            21000 => Label::Other,
            n => Label::Unknown(n),
        })
    }
}

/// The overall verdict.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[non_exhaustive]
pub struct Verdict {
    /// Advice.
    pub suggest: Suggest,
    /// Category.
    pub label: Label,
}

/// One strategy's verdict.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[non_exhaustive]
pub struct VerdictDetail {
    /// Strategy name.
    pub strategy: String,
    /// 0 when the strategy ran.
    pub errcode: i64,
    /// Advice.
    #[serde(default)]
    pub suggest: Option<Suggest>,
    /// Category.
    #[serde(default)]
    pub label: Option<Label>,
    /// The matched keyword, when a keyword strategy hit.
    #[serde(default)]
    pub keyword: Option<String>,
    /// Confidence 0–100.
    #[serde(default)]
    pub prob: Option<i64>,
}

/// The answer of `msg_sec_check` v2.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[non_exhaustive]
pub struct TextCheck {
    /// The overall verdict.
    pub result: Verdict,
    /// Per strategy.
    #[serde(default)]
    pub detail: Vec<VerdictDetail>,
    /// Request id for appeals.
    pub trace_id: String,
}

impl JsonResponse for TextCheck {}

/// `msg_sec_check` (v2).
#[derive(Debug, Clone, Serialize)]
#[must_use = "call .send()"]
pub struct MsgSecCheck {
    #[serde(skip)]
    client: Client,
    content: String,
    version: u8,
    scene: u8,
    openid: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    title: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    nickname: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    signature: Option<String>,
}

impl MsgSecCheck {
    /// The post's title.
    pub fn title(mut self, t: impl Into<String>) -> Self {
        self.title = Some(t.into());
        self
    }

    /// The user's nickname.
    pub fn nickname(mut self, n: impl Into<String>) -> Self {
        self.nickname = Some(n.into());
        self
    }

    /// The user's signature (profile scene).
    pub fn signature(mut self, s: impl Into<String>) -> Self {
        self.signature = Some(s.into());
        self
    }

    /// Runs the check.
    ///
    /// # Errors
    /// Local: content over 2500 characters; WeChat 61010 (the user has not visited in 2 hours), 40003.
    ///
    /// ```no_run
    /// # async fn run(client: weapp::Client) -> Result<(), weapp::Error> {
    /// use weapp::api::security::{Scene, Suggest};
    /// let check = client.security().msg_sec_check("今天天气不错", Scene::Comment, "oOPENID").send().await?;
    /// if check.result.suggest != Suggest::Pass { /* hold for review */ }
    /// # Ok(()) }
    /// ```
    pub async fn send(self) -> Result<TextCheck> {
        if self.content.chars().count() > 2500 {
            return Err(crate::error::rejected_locally(
                Self::PATH,
                40097,
                "content must be at most 2500 characters",
            ));
        }
        self.client.send(&self).await
    }
}

impl Endpoint for MsgSecCheck {
    type Output = TextCheck;
    const PATH: &'static str = "/wxa/msg_sec_check";
    const IDEMPOTENT: bool = true;
    fn body(&self) -> Result<Body> {
        Body::json(self)
    }
}

fn scene_code(scene: Scene) -> u8 {
    match scene {
        Scene::Profile => 1,
        Scene::Comment => 2,
        Scene::Forum => 3,
        Scene::SocialLog => 4,
    }
}

struct ImgSecCheck {
    body: Body,
}

impl Endpoint for ImgSecCheck {
    type Output = Ack;
    const PATH: &'static str = "/wxa/img_sec_check";
    const IDEMPOTENT: bool = true;
    fn body(&self) -> Result<Body> {
        Ok(self.body.clone())
    }
}

/// What the risk rank is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RiskScene {
    /// 0: sign-up.
    Register,
    /// 1: marketing campaigns.
    Marketing,
    /// 2: other.
    Other,
}

/// `getuserriskrank`.
#[derive(Debug, Clone, Serialize)]
#[must_use = "call .send()"]
pub struct UserRiskRank {
    #[serde(skip)]
    client: Client,
    appid: String,
    openid: String,
    scene: u8,
    client_ip: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    mobile_no: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    email_address: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    extended_info: Option<String>,
    is_test: bool,
}

/// A user's risk rank.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[non_exhaustive]
pub struct RiskRank {
    /// 0 (lowest) to 4 (highest).
    pub risk_rank: u8,
    /// An id of this evaluation (spelled `unoin_id` by WeChat).
    #[serde(rename = "unoin_id", default)]
    pub union_id: Option<i64>,
}

impl JsonResponse for RiskRank {}

impl UserRiskRank {
    /// The user's phone number.
    pub fn mobile(mut self, m: impl Into<String>) -> Self {
        self.mobile_no = Some(m.into());
        self
    }

    /// The user's email address.
    pub fn email(mut self, e: impl Into<String>) -> Self {
        self.email_address = Some(e.into());
        self
    }

    /// Free-form extra information.
    pub fn extended_info(mut self, i: impl Into<String>) -> Self {
        self.extended_info = Some(i.into());
        self
    }

    /// A test call (rank 0, not counted).
    pub fn test(mut self, t: bool) -> Self {
        self.is_test = t;
        self
    }

    /// Gets the rank.
    ///
    /// # Errors
    /// 40003, 40097.
    ///
    /// ```no_run
    /// # async fn run(client: weapp::Client) -> Result<(), weapp::Error> {
    /// use weapp::api::security::RiskScene;
    /// let rank = client.security().user_risk_rank("oOPENID", RiskScene::Marketing, "203.0.113.7").send().await?;
    /// # Ok(()) }
    /// ```
    pub async fn send(self) -> Result<RiskRank> {
        self.client.send(&self).await
    }
}

impl Endpoint for UserRiskRank {
    type Output = RiskRank;
    const PATH: &'static str = "/wxa/getuserriskrank";
    const IDEMPOTENT: bool = true;
    fn body(&self) -> Result<Body> {
        Body::json(self)
    }
}

impl SecurityApi {
    /// Checks text (v2); see [`MsgSecCheck`].
    pub fn msg_sec_check(
        &self,
        content: impl Into<String>,
        scene: Scene,
        openid: impl Into<String>,
    ) -> MsgSecCheck {
        MsgSecCheck {
            client: self.client.clone(),
            content: content.into(),
            version: 2,
            scene: scene_code(scene),
            openid: openid.into(),
            title: None,
            nickname: None,
            signature: None,
        }
    }

    /// Checks an image synchronously.
    ///
    /// # Errors
    /// [`crate::ErrCode::RiskyContent`] (87014) when it is risky.
    ///
    /// ```no_run
    /// # async fn run(client: weapp::Client) -> Result<(), weapp::Error> {
    /// client.security().img_sec_check("a.jpg", "image/jpeg", std::fs::read("a.jpg").unwrap()).await?;
    /// # Ok(()) }
    /// ```
    pub async fn img_sec_check(
        &self,
        filename: &str,
        content_type: &str,
        bytes: impl Into<bytes::Bytes>,
    ) -> Result<()> {
        let body = Body::File {
            field: "media",
            filename: filename.into(),
            content_type: content_type.into(),
            bytes: bytes.into(),
        };
        self.client.send(&ImgSecCheck { body }).await.map(|_| ())
    }

    /// A user's risk rank; see [`UserRiskRank`].
    pub fn user_risk_rank(
        &self,
        openid: impl Into<String>,
        scene: RiskScene,
        client_ip: impl Into<String>,
    ) -> UserRiskRank {
        UserRiskRank {
            client: self.client.clone(),
            appid: self.client.appid().to_owned(),
            openid: openid.into(),
            scene: match scene {
                RiskScene::Register => 0,
                RiskScene::Marketing => 1,
                RiskScene::Other => 2,
            },
            client_ip: client_ip.into(),
            mobile_no: None,
            email_address: None,
            extended_info: None,
            is_test: false,
        }
    }

    /// Submits an image or audio URL for an asynchronous check (v2). The verdict is pushed
    /// later as a `wxa_media_check` event with the returned `trace_id`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a non-http(s) URL or empty openid (before any request);
    /// 40097 invalid arguments, 40003 openid not a recent visitor, 45009.
    ///
    /// ```no_run
    /// # async fn run(client: weapp::Client) -> Result<(), weapp::Error> {
    /// use weapp::api::security::{MediaType, Scene};
    /// let ticket = client.security().media_check_async("https://cdn.example.com/a.jpg", MediaType::Image, Scene::Comment, "oOPENID").await?;
    /// println!("verdict will arrive with trace_id {}", ticket.trace_id);
    /// # Ok(()) }
    /// ```
    pub async fn media_check_async(
        &self,
        media_url: &str,
        media_type: MediaType,
        scene: Scene,
        openid: &str,
    ) -> Result<MediaCheckTicket> {
        if !(media_url.starts_with("http://") || media_url.starts_with("https://")) {
            return Err(Error::InvalidArgument(
                "media_url must be an http(s) URL".into(),
            ));
        }
        if openid.trim().is_empty() {
            return Err(Error::InvalidArgument("openid must not be empty".into()));
        }
        self.client
            .send(&MediaCheckAsync {
                media_url,
                media_type: match media_type {
                    MediaType::Audio => 1,
                    MediaType::Image => 2,
                },
                version: 2,
                scene: scene_code(scene),
                openid,
            })
            .await
    }
}
