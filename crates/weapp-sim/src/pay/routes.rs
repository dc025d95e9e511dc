//! The `/v3` routes: each checks the merchant's signature, does its work, and answers signed
//! (or, for errors and the bill file, unsigned) as production does.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};

use super::bills::BillKind;
use super::keys;
use super::merchants::listed_certs;
use super::time::rfc3339;
use super::wire::{authenticate, error_response, json_body, signed, Caller};
use crate::error::{PayError, PayResult};
use crate::random::random_alnum;
use crate::world::Sim;

/// What an operation answers.
enum Answer {
    /// 200 JSON, signed.
    Json(Value),
    /// 204, signed.
    NoContent,
    /// The bill file: 200, unsigned.
    File(Vec<u8>, bool),
}

/// A request as the operations see it.
struct V3 {
    caller: Caller,
    body: Bytes,
    query: HashMap<String, String>,
    headers: HeaderMap,
}

/// Reads the request, checks its signature, runs `op`, answers.
async fn v3(sim: Sim, req: Request, op: impl FnOnce(&Sim, &V3) -> PayResult<Answer>) -> Response {
    let (parts, body) = req.into_parts();
    let Ok(body) = axum::body::to_bytes(body, 1024 * 1024).await else {
        return error_response(&PayError::new(400, "PARAM_ERROR", "请求体过大"));
    };
    let url = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path().to_owned(), |p| p.as_str().to_owned());
    let caller = match authenticate(&sim, parts.method.as_str(), &url, &parts.headers, &body) {
        Ok(c) => c,
        Err(e) => return error_response(&e),
    };
    let query = axum::extract::Query::<HashMap<String, String>>::try_from_uri(&parts.uri)
        .map(|q| q.0)
        .unwrap_or_default();
    let request = V3 {
        caller,
        body,
        query,
        headers: parts.headers,
    };
    match op(&sim, &request) {
        Ok(Answer::Json(v)) => signed(&sim, &request.caller.signer, Some(v)),
        Ok(Answer::NoContent) => signed(&sim, &request.caller.signer, None),
        Ok(Answer::File(bytes, gzip)) => {
            let mut resp = bytes.into_response();
            let kind = if gzip {
                "application/x-gzip"
            } else {
                "text/plain; charset=utf-8"
            };
            resp.headers_mut()
                .insert("content-type", HeaderValue::from_static(kind));
            resp
        }
        Err(e) => error_response(&e),
    }
}

async fn jsapi(State(sim): State<Sim>, req: Request) -> Response {
    v3(sim, req, |sim, r| {
        let body = json_body(&r.body)?;
        sim.pay_prepay(&r.caller.mchid, &body).map(Answer::Json)
    })
    .await
}

async fn query_out_trade_no(
    State(sim): State<Sim>,
    Path(no): Path<String>,
    req: Request,
) -> Response {
    v3(sim, req, move |sim, r| {
        sim.pay_query(&r.caller.mchid, &r.query, &no)
            .map(Answer::Json)
    })
    .await
}

async fn query_id(State(sim): State<Sim>, Path(id): Path<String>, req: Request) -> Response {
    v3(sim, req, move |sim, r| {
        sim.pay_query_by_id(&r.caller.mchid, &r.query, &id)
            .map(Answer::Json)
    })
    .await
}

async fn close(State(sim): State<Sim>, Path(no): Path<String>, req: Request) -> Response {
    v3(sim, req, move |sim, r| {
        let body = json_body(&r.body)?;
        sim.pay_close(&r.caller.mchid, &no, &body)
            .map(|()| Answer::NoContent)
    })
    .await
}

async fn refund(State(sim): State<Sim>, req: Request) -> Response {
    v3(sim, req, |sim, r| {
        let body = json_body(&r.body)?;
        sim.pay_refund(&r.caller.mchid, &body).map(Answer::Json)
    })
    .await
}

async fn refund_query(State(sim): State<Sim>, Path(no): Path<String>, req: Request) -> Response {
    v3(sim, req, move |sim, r| {
        sim.pay_refund_query(&r.caller.mchid, &no).map(Answer::Json)
    })
    .await
}

/// `http://host` of the request, for the download URL.
fn base(headers: &HeaderMap) -> String {
    let host = headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1");
    format!("http://{host}")
}

async fn trade_bill(State(sim): State<Sim>, req: Request) -> Response {
    v3(sim, req, |sim, r| {
        sim.pay_bill(
            &r.caller.mchid,
            BillKind::Trade,
            &r.query,
            &base(&r.headers),
        )
        .map(Answer::Json)
    })
    .await
}

async fn fund_bill(State(sim): State<Sim>, req: Request) -> Response {
    v3(sim, req, |sim, r| {
        sim.pay_bill(
            &r.caller.mchid,
            BillKind::FundFlow,
            &r.query,
            &base(&r.headers),
        )
        .map(Answer::Json)
    })
    .await
}

async fn bill_file(State(sim): State<Sim>, req: Request) -> Response {
    v3(sim, req, |sim, r| {
        sim.pay_bill_file(&r.caller.mchid, &r.query)
            .map(|(b, gz)| Answer::File(b, gz))
    })
    .await
}

/// `GET /v3/certificates`: the listed platform certificates, each encrypted with the APIv3
/// key; 404 for a public-key-only merchant.
async fn certificates(State(sim): State<Sim>, req: Request) -> Response {
    v3(sim, req, |sim, r| {
        let w = sim.world();
        let now = sim.now_in(&w);
        let m = w
            .pay
            .merchants
            .get(&r.caller.mchid)
            .ok_or_else(|| PayError::new(400, "MCH_NOT_EXISTS", "商户号不存在"))?;
        let certs = listed_certs(m, now);
        if certs.is_empty() {
            return Err(PayError::new(
                404,
                "RESOURCE_NOT_EXISTS",
                "无可用的平台证书，请在商户平台-API安全申请使用微信支付公钥。可查看指引https://pay.weixin.qq.com/docs/merchant/products/platform-certificate/wxp-pub-key-guide.html",
            ));
        }
        let data: Vec<Value> = certs
            .iter()
            .map(|c| {
                let nonce = random_alnum(12);
                json!({
                    "serial_no": c.serial_no,
                    "effective_time": rfc3339(c.effective_ms),
                    "expire_time": rfc3339(c.expire_ms),
                    "encrypt_certificate": {
                        "algorithm": "AEAD_AES_256_GCM",
                        "nonce": nonce,
                        "associated_data": "certificate",
                        "ciphertext": keys::aead_encrypt(&m.apiv3_key.0, &nonce, "certificate", c.pem.as_bytes()),
                    },
                })
            })
            .collect();
        Ok(Answer::Json(json!({"data": data})))
    })
    .await
}

/// The `/v3` routes.
pub(crate) fn routes() -> Router<Sim> {
    Router::new()
        .route("/v3/pay/transactions/jsapi", post(jsapi))
        .route(
            "/v3/pay/transactions/out-trade-no/{out_trade_no}",
            get(query_out_trade_no),
        )
        .route(
            "/v3/pay/transactions/out-trade-no/{out_trade_no}/close",
            post(close),
        )
        .route("/v3/pay/transactions/id/{transaction_id}", get(query_id))
        .route("/v3/refund/domestic/refunds", post(refund))
        .route(
            "/v3/refund/domestic/refunds/{out_refund_no}",
            get(refund_query),
        )
        .route("/v3/bill/tradebill", get(trade_bill))
        .route("/v3/bill/fundflowbill", get(fund_bill))
        .route("/v3/billdownload/file", get(bill_file))
        .route("/v3/certificates", get(certificates))
}
