//! The sandbox's demo shop (`--sandbox` only): the mini program backend a newcomer does not
//! have yet. The console's phone, signed in through `/v1/login`, buys an item with its session
//! token; the shop — not the phone — decides the price, places the order through this domain
//! (as `POST /v1/apps/{appid}/pay/orders` would), and answers the `wx.requestPayment`
//! parameters. The phone's payment sheet pays, WeChat (the simulator) notifies, and the payment
//! becomes the app's `TRANSACTION.SUCCESS` event: the whole journey, with nothing to write.
//!
//! Mounted only when the configuration says `sandbox` (see [`router`]); a server with real
//! merchants has no such route.

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::routing::post;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::handlers::{place_order, CreateOrder, RequestPaymentOut};
use super::service::Payments;
use crate::http::{AppError, ClientIp, ErrorBody, JsonBody};
use crate::sessions::Sessions;

/// What the shop sells: `(item, description, price in fen)`.
pub const CATALOG: [(&str, &str, i64); 2] = [
    ("coffee", "weapp sandbox · 咖啡 coffee", 990),
    ("tea", "weapp sandbox · 茶 tea", 660),
];

/// The shop's state: the payments domain places the order, sessions name the buyer.
#[derive(Clone)]
pub struct Shop {
    payments: Payments,
    sessions: Sessions,
}

// The shared extractors (client address, JSON body) take what they need from `Shared`.
impl axum::extract::FromRef<Shop> for crate::shared::Shared {
    fn from_ref(shop: &Shop) -> Self {
        Self::from_ref(&shop.payments)
    }
}

/// `POST /v1/sandbox/shop/{appid}/buy`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Buy {
    /// `coffee` (the default, ¥9.90) or `tea` (¥6.60). The price is the shop's: a mini program
    /// never sends an amount.
    #[serde(default)]
    pub item: Option<String>,
}

/// An order the shop placed for the signed-in user.
#[derive(Debug, Serialize, ToSchema)]
pub struct ShopOrder {
    /// The order (`sbx…`).
    pub out_trade_no: String,
    /// What was bought.
    pub item: String,
    /// Its price in fen.
    pub amount: i64,
    /// WeChat's prepay id.
    pub prepay_id: String,
    /// What the mini program passes to `wx.requestPayment`.
    pub request_payment: RequestPaymentOut,
}

/// A new order number: `sbx`, the time in milliseconds, 8 random hex digits (24 characters).
fn order_number() -> String {
    format!(
        "sbx{}{}",
        crate::shared::now_ms(),
        hex::encode(rand::random::<[u8; 4]>())
    )
}

/// Buy an item from the sandbox's demo shop as the signed-in user (session or access token of
/// `/v1/login`): an order placed with the app's merchant, answered with the
/// `wx.requestPayment` parameters. Only served by `weapp serve --sandbox` (404 otherwise).
#[utoipa::path(post, path = "/v1/sandbox/shop/{appid}/buy", tag = "sandbox", security(("session" = [])),
    params(("appid" = String, Path)),
    request_body = Buy,
    responses((status = 200, body = ShopOrder), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, description = "the user belongs to another app", body = ErrorBody),
        (status = 404, description = "not a sandbox, or no merchant takes this app's orders", body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 429, body = ErrorBody), (status = 502, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn buy(
    State(shop): State<Shop>,
    Path(appid): Path<String>,
    ip: ClientIp,
    headers: HeaderMap,
    body: Result<JsonBody<Buy>, AppError>,
) -> Result<Json<ShopOrder>, AppError> {
    let (user, _) = crate::sessions::handlers::session_user(&shop.sessions, &headers, ip).await?;
    if user.appid != appid {
        return Err(AppError::Forbidden(format!(
            "this session is of app {}, not {appid}",
            user.appid
        )));
    }
    let JsonBody(req) = body?;
    let wanted = req.item.as_deref().unwrap_or(CATALOG[0].0);
    let Some((item, description, amount)) = CATALOG.iter().find(|(i, _, _)| *i == wanted) else {
        return Err(AppError::bad_request(
            "invalid_item",
            format!(
                "the shop sells {}",
                CATALOG.map(|(i, _, _)| i).join(" and ")
            ),
        ));
    };
    let order = CreateOrder {
        out_trade_no: order_number(),
        description: (*description).to_owned(),
        amount: *amount,
        openid: user.openid,
        attach: Some(format!("sandbox shop: {item}")),
        time_expire: None,
    };
    let Json(placed) = place_order(&shop.payments, &appid, order, "sandbox shop").await?;
    Ok(Json(ShopOrder {
        out_trade_no: placed.out_trade_no,
        item: (*item).to_owned(),
        amount: *amount,
        prepay_id: placed.prepay_id,
        request_payment: placed.request_payment,
    }))
}

/// The shop's route when the configuration is a sandbox's; no route otherwise.
pub fn router(payments: Payments, sessions: Sessions) -> Router {
    if !payments.config.sandbox {
        return Router::new();
    }
    Router::new()
        .route("/v1/sandbox/shop/{appid}/buy", post(buy))
        .with_state(Shop { payments, sessions })
}
