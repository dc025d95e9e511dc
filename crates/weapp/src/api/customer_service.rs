//! Customer-service messages (allowed within 48 h of a user message, up to 5 replies, or 1
//! minute after the user enters the session, 2 replies) and the typing indicator.
//! Sends are not idempotent: an unknown outcome is reported, never blindly retried.

use serde::Serialize;
use serde_json::json;

use super::Ack;
use crate::client::Client;
use crate::error::{Error, Result};
use crate::http::{Body, Endpoint};

/// Customer-service APIs. Get one with [`Client::customer_service`].
#[derive(Debug, Clone)]
pub struct CustomerServiceApi {
    client: Client,
}

impl Client {
    /// Customer-service message APIs.
    pub fn customer_service(&self) -> CustomerServiceApi {
        CustomerServiceApi {
            client: self.clone(),
        }
    }
}

/// A link card.
#[derive(Debug, Clone, Serialize)]
pub struct LinkCard {
    /// Title.
    pub title: String,
    /// Description.
    pub description: String,
    /// Where it leads.
    pub url: String,
    /// Thumbnail URL.
    pub thumb_url: String,
}

/// What to send.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum CustomMessage {
    /// Text.
    Text(String),
    /// An image uploaded with [`crate::api::media::MediaApi::upload_image`].
    Image {
        /// Its media id.
        media_id: String,
    },
    /// A link card.
    Link(LinkCard),
    /// A mini program card.
    MiniProgramPage {
        /// Title.
        title: String,
        /// Page path.
        pagepath: String,
        /// Thumbnail media id.
        thumb_media_id: String,
    },
}

struct Send<'a> {
    touser: &'a str,
    message: &'a CustomMessage,
}

impl Endpoint for Send<'_> {
    type Output = Ack;
    const PATH: &'static str = "/cgi-bin/message/custom/send";
    const IDEMPOTENT: bool = false;
    fn body(&self) -> Result<Body> {
        let v = match self.message {
            CustomMessage::Text(content) => {
                json!({"touser": self.touser, "msgtype": "text", "text": {"content": content}})
            }
            CustomMessage::Image { media_id } => {
                json!({"touser": self.touser, "msgtype": "image", "image": {"media_id": media_id}})
            }
            CustomMessage::Link(link) => {
                json!({"touser": self.touser, "msgtype": "link", "link": link})
            }
            CustomMessage::MiniProgramPage {
                title,
                pagepath,
                thumb_media_id,
            } => json!({
                "touser": self.touser, "msgtype": "miniprogrampage",
                "miniprogrampage": {"title": title, "pagepath": pagepath, "thumb_media_id": thumb_media_id}
            }),
        };
        Body::json(&v)
    }
}

#[derive(Serialize)]
struct Typing<'a> {
    touser: &'a str,
    command: &'static str,
}

impl Endpoint for Typing<'_> {
    type Output = Ack;
    const PATH: &'static str = "/cgi-bin/message/custom/typing";
    const IDEMPOTENT: bool = false;
    fn body(&self) -> Result<Body> {
        Body::json(self)
    }
}

impl CustomerServiceApi {
    /// Sends a message to `openid`.
    ///
    /// # Errors
    /// 45015 outside the reply window, 45047 replies used up, 40007 unknown media,
    /// [`Error::OutcomeUnknown`] when it may or may not have been delivered.
    ///
    /// ```no_run
    /// # async fn run(client: weapp::Client) -> Result<(), weapp::Error> {
    /// use weapp::api::customer_service::CustomMessage;
    /// client.customer_service().send("oOPENID", &CustomMessage::Text("您好，有什么可以帮您？".into())).await?;
    /// # Ok(()) }
    /// ```
    pub async fn send(&self, openid: &str, message: &CustomMessage) -> Result<()> {
        if openid.is_empty() {
            return Err(Error::InvalidArgument("openid must not be empty".into()));
        }
        if matches!(message, CustomMessage::Text(t) if t.is_empty()) {
            return Err(Error::InvalidArgument("text must not be empty".into()));
        }
        self.client
            .send(&Send {
                touser: openid,
                message,
            })
            .await
            .map(|_| ())
    }

    /// Shows (`true`) or hides the "typing…" indicator.
    ///
    /// # Errors
    /// 45080 no user message in the last 30 s, 45081 already typing.
    ///
    /// ```no_run
    /// # async fn run(client: weapp::Client) -> Result<(), weapp::Error> {
    /// client.customer_service().typing("oOPENID", true).await?;
    /// # Ok(()) }
    /// ```
    pub async fn typing(&self, openid: &str, typing: bool) -> Result<()> {
        let command = if typing { "Typing" } else { "CancelTyping" };
        self.client
            .send(&Typing {
                touser: openid,
                command,
            })
            .await
            .map(|_| ())
    }
}
