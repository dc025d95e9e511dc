//! Dispatching pushes to async handlers by kind, and (feature `axum`) serving them inside an
//! existing axum application.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde_json::json;

use super::message::{value_to_xml, Format};
use super::{Incoming, PushError, PushMessage, PushQuery, Receiver};

/// What to answer WeChat.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Reply {
    /// `success`: received, nothing to say.
    #[default]
    Success,
    /// Hand the conversation to the customer-service staff (`transfer_customer_service`).
    TransferCustomerService,
    /// The push could not be processed (say, the database was down): answer HTTP 500 so that
    /// WeChat retries it, and forget its nonce so the retry is not refused as a replay.
    Retry,
}

/// A response: status, body and content type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpReply {
    /// 200, or 500 for [`Reply::Retry`].
    pub status: u16,
    /// `text/plain`, `application/xml` or `application/json`.
    pub content_type: &'static str,
    /// The body.
    pub body: String,
}

type Handler =
    Arc<dyn Fn(PushMessage) -> Pin<Box<dyn Future<Output = Reply> + Send>> + Send + Sync>;

/// Routes verified pushes to handlers registered by [`PushMessage::type_name`].
///
/// ```no_run
/// use weapp::push::{PushConfig, PushRouter, Receiver, Reply, MessageKind};
/// # fn build() -> Result<(), weapp::push::PushError> {
/// // Safe mode: only encrypted pushes signed over their ciphertext are accepted; replay
/// // protection (a 300 s window) is on by default.
/// let receiver = Receiver::new(PushConfig::new("wx1234567890abcdef", "token", Some("kWxPEV2UEDyxWpmPdKC3F4dgPDmOvfKX1HGnEUDS1aR"))?);
/// let router = PushRouter::new(receiver)
///     .on("text", |msg| async move {
///         if let MessageKind::Text { content, .. } = &msg.kind { println!("{content}"); }
///         Reply::TransferCustomerService
///     })
///     .on("subscribe_msg_popup_event", |_msg| async { Reply::Success });
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct PushRouter {
    receiver: Arc<Receiver>,
    handlers: HashMap<String, Handler>,
    fallback: Option<Handler>,
}

impl std::fmt::Debug for PushRouter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushRouter")
            .field("receiver", &self.receiver)
            .field("handlers", &self.handlers.keys().collect::<Vec<_>>())
            .finish()
    }
}

fn boxed<F, Fut>(f: F) -> Handler
where
    F: Fn(PushMessage) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Reply> + Send + 'static,
{
    Arc::new(move |m| Box::pin(f(m)))
}

impl PushRouter {
    /// A router with no handlers (everything is answered `success`).
    pub fn new(receiver: Receiver) -> Self {
        Self {
            receiver: Arc::new(receiver),
            handlers: HashMap::new(),
            fallback: None,
        }
    }

    /// Handles pushes whose [`PushMessage::type_name`] is `kind` (`text`, `image`,
    /// `miniprogrampage`, `user_enter_tempsession`, `subscribe_msg_popup_event`,
    /// `subscribe_msg_change_event`, `subscribe_msg_sent_event`, `wxa_media_check`, …).
    #[must_use]
    pub fn on<F, Fut>(mut self, kind: &str, handler: F) -> Self
    where
        F: Fn(PushMessage) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Reply> + Send + 'static,
    {
        self.handlers.insert(kind.to_owned(), boxed(handler));
        self
    }

    /// Handles every kind without its own handler.
    #[must_use]
    pub fn fallback<F, Fut>(mut self, handler: F) -> Self
    where
        F: Fn(PushMessage) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Reply> + Send + 'static,
    {
        self.fallback = Some(boxed(handler));
        self
    }

    /// URL verification: the `echostr` to send back.
    ///
    /// # Errors
    /// See [`Receiver::verify_url`].
    pub fn verify(&self, query: &PushQuery) -> Result<HttpReply, PushError> {
        Ok(HttpReply {
            status: 200,
            content_type: "text/plain",
            body: self.receiver.verify_url(query)?,
        })
    }

    /// Verifies, parses and dispatches one push; returns what to answer.
    ///
    /// # Errors
    /// See [`Receiver::receive`]; handlers are not called for refused pushes.
    pub async fn handle(&self, query: &PushQuery, body: &[u8]) -> Result<HttpReply, PushError> {
        let incoming = self.receiver.receive(query, body)?;
        let handler = self
            .handlers
            .get(incoming.message.type_name())
            .or(self.fallback.as_ref());
        let reply = match handler {
            Some(h) => h(incoming.message.clone()).await,
            None => Reply::Success,
        };
        self.render(&incoming, query, reply)
    }

    fn render(
        &self,
        incoming: &Incoming,
        query: &PushQuery,
        reply: Reply,
    ) -> Result<HttpReply, PushError> {
        match reply {
            Reply::Success => Ok(HttpReply {
                status: 200,
                content_type: "text/plain",
                body: "success".into(),
            }),
            Reply::Retry => {
                self.receiver.forget(incoming);
                Ok(HttpReply {
                    status: 500,
                    content_type: "text/plain",
                    body: "retry".into(),
                })
            }
            Reply::TransferCustomerService => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                let m = &incoming.message;
                let v = json!({"ToUserName": m.from_user_name, "FromUserName": m.to_user_name, "CreateTime": now, "MsgType": "transfer_customer_service"});
                let (plain, content_type) = match incoming.format {
                    Format::Json => (v.to_string(), "application/json"),
                    Format::Xml => (value_to_xml(&v), "application/xml"),
                };
                let body = if incoming.encrypted {
                    let ts = query.timestamp.clone().unwrap_or_else(|| now.to_string());
                    let nonce = query.nonce.clone().unwrap_or_default();
                    self.receiver
                        .encrypt_reply(&plain, incoming.format, &ts, &nonce)?
                } else {
                    plain
                };
                Ok(HttpReply {
                    status: 200,
                    content_type,
                    body,
                })
            }
        }
    }

    /// An axum `Router` answering `GET` (verification) and `POST` (pushes) at its root: `nest`
    /// it at the URL configured in the WeChat console. Refused pushes get 401 (not authentic) or
    /// 400 (malformed) and reach no handler.
    #[cfg(feature = "axum")]
    pub fn into_axum(self) -> axum::Router {
        use axum::extract::{Query, State};
        use axum::http::{header, StatusCode};
        use axum::response::{IntoResponse, Response};

        fn respond(r: Result<HttpReply, PushError>) -> Response {
            match r {
                Ok(reply) => (
                    StatusCode::from_u16(reply.status).unwrap_or(StatusCode::OK),
                    [(header::CONTENT_TYPE, reply.content_type)],
                    reply.body,
                )
                    .into_response(),
                Err(e) => {
                    let status = if e.is_authentication() {
                        StatusCode::UNAUTHORIZED
                    } else {
                        StatusCode::BAD_REQUEST
                    };
                    tracing::info!(error = %e, "push refused");
                    (status, e.to_string()).into_response()
                }
            }
        }
        async fn get(State(r): State<Arc<PushRouter>>, Query(q): Query<PushQuery>) -> Response {
            respond(r.verify(&q))
        }
        async fn post(
            State(r): State<Arc<PushRouter>>,
            Query(q): Query<PushQuery>,
            body: axum::body::Bytes,
        ) -> Response {
            respond(r.handle(&q, &body).await)
        }
        axum::Router::new()
            .route("/", axum::routing::get(get).post(post))
            .with_state(Arc::new(self))
    }
}
