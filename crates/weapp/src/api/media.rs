//! Temporary media (3 days): upload an image for customer-service messages, download by id.

use serde::{Deserialize, Serialize};

use crate::client::Client;
use crate::error::{Error, Result};
use crate::http::{Binary, Body, Endpoint, JsonResponse, Method};

/// Temporary media APIs. Get one with [`Client::media`].
#[derive(Debug, Clone)]
pub struct MediaApi {
    client: Client,
}

impl Client {
    /// Temporary media APIs.
    pub fn media(&self) -> MediaApi {
        MediaApi {
            client: self.clone(),
        }
    }
}

/// An uploaded medium.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[non_exhaustive]
pub struct Media {
    /// `image`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Its id (valid for 3 days).
    pub media_id: String,
    /// Unix seconds.
    pub created_at: i64,
}

impl JsonResponse for Media {}

struct Upload {
    body: Body,
}

impl Endpoint for Upload {
    type Output = Media;
    const PATH: &'static str = "/cgi-bin/media/upload";
    fn query(&self) -> Vec<(&'static str, String)> {
        vec![("type", "image".into())]
    }
    fn body(&self) -> Result<Body> {
        Ok(self.body.clone())
    }
}

struct Get<'a> {
    media_id: &'a str,
}

impl Endpoint for Get<'_> {
    type Output = Binary;
    const PATH: &'static str = "/cgi-bin/media/get";
    const IDEMPOTENT: bool = true;
    const METHOD: Method = Method::Get;
    fn query(&self) -> Vec<(&'static str, String)> {
        vec![("media_id", self.media_id.into())]
    }
}

impl MediaApi {
    /// Uploads an image (multipart field `media`).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an empty file; 40004, 40005.
    ///
    /// ```no_run
    /// # async fn run(client: weapp::Client) -> Result<(), weapp::Error> {
    /// let bytes = std::fs::read("card.png").unwrap();
    /// let media = client.media().upload_image("card.png", "image/png", bytes).await?;
    /// # Ok(()) }
    /// ```
    pub async fn upload_image(
        &self,
        filename: &str,
        content_type: &str,
        bytes: impl Into<bytes::Bytes>,
    ) -> Result<Media> {
        let bytes = bytes.into();
        if bytes.is_empty() {
            return Err(Error::InvalidArgument("the file is empty".into()));
        }
        let body = Body::File {
            field: "media",
            filename: filename.into(),
            content_type: content_type.into(),
            bytes,
        };
        self.client.send(&Upload { body }).await
    }

    /// Downloads a temporary medium.
    ///
    /// # Errors
    /// 40007 unknown or expired.
    ///
    /// ```no_run
    /// # async fn run(client: weapp::Client) -> Result<(), weapp::Error> {
    /// let file = client.media().get("MEDIA_ID").await?;
    /// # Ok(()) }
    /// ```
    pub async fn get(&self, media_id: &str) -> Result<Binary> {
        self.client.send(&Get { media_id }).await
    }
}
