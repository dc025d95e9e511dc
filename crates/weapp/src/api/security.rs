//! Content security. For now `media_check_async`, whose verdict arrives as a `wxa_media_check`
//! push (see [`crate::push`]).

use serde::{Deserialize, Serialize};

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
#[derive(Debug, Clone, Deserialize)]
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

impl SecurityApi {
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
                scene: match scene {
                    Scene::Profile => 1,
                    Scene::Comment => 2,
                    Scene::Forum => 3,
                    Scene::SocialLog => 4,
                },
                openid,
            })
            .await
    }
}
