//! `weapp._native.NativePayClient`: `weapp::pay::PayClient` (WeChat Pay v3, a direct merchant)
//! behind `weapp.pay.PayClient` and `weapp.pay.AsyncPayClient`.
//!
//! The merchant's private key and APIv3 key are parsed once, when it is built (a bad key is an
//! error at once), and never leave Rust: no Python attribute, `repr` or exception carries them.
//! Like `NativeClient`, the HTTP client is made per process, on first use.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pyo3::prelude::*;
use serde_json::{json, Value};
use weapp::pay::{
    AccountType, ApiV3Key, BillInfo, FundFlowBillRequest, JsapiPrepayRequest, Merchant,
    MerchantPrivateKey, NotificationEvent, PayClient, PayError, RefundRequest, RsaPublicKey,
    TradeBillRequest, TradeBillType,
};

use crate::bridge::{self, TaskHandle};
use crate::convert::to_py;
use crate::errors;
use crate::ops::{Args, OpError, Output};

struct PayConfig {
    merchant: Merchant,
    apiv3_key: ApiV3Key,
    public_key: Option<(String, RsaPublicKey)>,
    certificates: bool,
    base_url: Option<String>,
    timeout: Duration,
}

impl PayConfig {
    fn build(&self) -> Result<PayClient, PayError> {
        let mut builder =
            PayClient::builder(self.merchant.clone(), self.apiv3_key.clone()).timeout(self.timeout);
        if let Some((id, key)) = &self.public_key {
            builder = builder.wechatpay_public_key(id.clone(), key.clone());
        }
        if self.certificates {
            builder = builder.platform_certificates();
        }
        if let Some(url) = &self.base_url {
            builder = builder.base_url(url.clone());
        }
        builder.build()
    }
}

/// The native half of `weapp.pay.PayClient`.
#[pyclass(frozen, module = "weapp._native")]
pub struct NativePayClient {
    config: Arc<PayConfig>,
    mchid: String,
    current: Mutex<Option<(u32, PayClient)>>,
}

impl NativePayClient {
    fn client(&self) -> Result<PayClient, PayError> {
        let pid = std::process::id();
        let mut slot = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((owner, client)) = slot.as_ref() {
            if *owner == pid {
                return Ok(client.clone());
            }
        }
        // One made before a fork is leaked, not dropped, in the child (see `runtime`).
        if let Some(old) = slot.take() {
            std::mem::forget(old);
        }
        let client = self.config.build()?;
        *slot = Some((pid, client.clone()));
        Ok(client)
    }
}

fn json_out<T: serde::Serialize>(value: &T) -> Result<Output, OpError> {
    serde_json::to_value(value)
        .map(Output::Json)
        .map_err(|e| OpError::Invalid(format!("cannot represent the answer: {e}")))
}

fn body<T: serde::de::DeserializeOwned>(a: &Args, what: &str) -> Result<T, OpError> {
    let v = a
        .present(what)
        .cloned()
        .ok_or_else(|| OpError::Invalid(format!("{what} is required")))?;
    serde_json::from_value(v).map_err(|e| OpError::Invalid(format!("{what}: {e}")))
}

async fn run(client: PayClient, op: String, a: Args) -> Result<Output, OpError> {
    match op.as_str() {
        "jsapi_prepay" => {
            let req: JsapiPrepayRequest = body(&a, "request")?;
            json_out(&client.jsapi_prepay(&req).await?)
        }
        "query_by_out_trade_no" => {
            json_out(&client.query_by_out_trade_no(a.str("out_trade_no")?).await?)
        }
        "query_by_transaction_id" => json_out(
            &client
                .query_by_transaction_id(a.str("transaction_id")?)
                .await?,
        ),
        "close" => {
            client.close(a.str("out_trade_no")?).await?;
            Ok(Output::Json(Value::Null))
        }
        "refund" => {
            let req: RefundRequest = body(&a, "request")?;
            json_out(&client.refund(&req).await?)
        }
        "query_refund" => json_out(&client.query_refund(a.str("out_refund_no")?).await?),
        "trade_bill" => {
            let req = TradeBillRequest {
                bill_date: a.str("bill_date")?.to_owned(),
                bill_type: TradeBillType::from(a.opt_str("bill_type")?.unwrap_or("ALL")),
            };
            json_out(&client.trade_bill(&req).await?)
        }
        "fund_flow_bill" => {
            let req = FundFlowBillRequest {
                bill_date: a.str("bill_date")?.to_owned(),
                account_type: AccountType::from(a.opt_str("account_type")?.unwrap_or("BASIC")),
            };
            json_out(&client.fund_flow_bill(&req).await?)
        }
        "download_bill" => {
            let info: BillInfo = body(&a, "info")?;
            let download = client.download_bill(&info).await?;
            Ok(Output::Bytes(download.bytes().await?))
        }
        _ => Err(OpError::Invalid(format!("unknown operation {op}"))),
    }
}

#[pymethods]
impl NativePayClient {
    #[new]
    #[pyo3(signature = (mchid, serial_no, private_key, apiv3_key, public_key_id=None, public_key=None, platform_certificates=false, base_url=None, timeout=10.0))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        mchid: String,
        serial_no: String,
        private_key: &str,
        apiv3_key: &str,
        public_key_id: Option<String>,
        public_key: Option<&str>,
        platform_certificates: bool,
        base_url: Option<String>,
        timeout: f64,
    ) -> PyResult<Self> {
        let public_key = match (public_key_id, public_key) {
            (Some(id), Some(pem)) => Some((id, pem)),
            (None, None) => None,
            _ => {
                return Err(errors::invalid(
                    py,
                    "public_key_id and public_key go together",
                ))
            }
        };
        if public_key.is_none() && !platform_certificates {
            return Err(errors::invalid(
                py,
                "give the WeChat Pay public key (public_key_id, public_key), platform_certificates=True, or both",
            ));
        }
        if !(timeout.is_finite() && timeout > 0.0 && timeout <= 600.0) {
            return Err(errors::invalid(
                py,
                "timeout must be a number of seconds in (0, 600]",
            ));
        }
        let key_error = |e: weapp::pay::KeyError| errors::make(py, "pay", (e.to_string(),));
        let key = MerchantPrivateKey::from_pem(private_key).map_err(key_error)?;
        let merchant = Merchant::new(mchid.clone(), serial_no, key).map_err(key_error)?;
        let apiv3_key = ApiV3Key::new(apiv3_key).map_err(key_error)?;
        let public_key = match public_key {
            Some((id, pem)) => Some((id, RsaPublicKey::from_pem(pem).map_err(key_error)?)),
            None => None,
        };
        let config = PayConfig {
            merchant,
            apiv3_key,
            public_key,
            certificates: platform_certificates,
            base_url,
            timeout: Duration::from_secs_f64(timeout),
        };
        // Built once here so a bad setting is refused now, not at the first call.
        config.build().map_err(|e| errors::pay(py, e))?;
        Ok(Self {
            config: Arc::new(config),
            mchid,
            current: Mutex::new(None),
        })
    }

    /// The merchant id.
    #[getter]
    fn mchid(&self) -> &str {
        &self.mchid
    }

    /// Runs a call and waits for it without holding the GIL.
    fn invoke(&self, py: Python<'_>, op: String, args: String) -> PyResult<Py<PyAny>> {
        let args = Args::parse(&args, None).map_err(|e| bridge::error(py, e))?;
        let client = self.client().map_err(|e| errors::pay(py, e))?;
        bridge::block(py, run(client, op, args))
    }

    /// Starts a call; `done(ok, value)` gets its result (see `NativeClient.spawn`).
    fn spawn(
        &self,
        py: Python<'_>,
        op: String,
        args: String,
        done: Py<PyAny>,
    ) -> PyResult<TaskHandle> {
        let args = Args::parse(&args, None).map_err(|e| bridge::error(py, e))?;
        let client = self.client().map_err(|e| errors::pay(py, e))?;
        Ok(bridge::spawn(py, done, run(client, op, args)))
    }

    /// The five `wx.requestPayment` parameters for `prepay_id`, with `paySign`.
    fn request_payment(&self, py: Python<'_>, appid: &str, prepay_id: &str) -> PyResult<Py<PyAny>> {
        let client = self.client().map_err(|e| errors::pay(py, e))?;
        let r = client
            .request_payment(appid, prepay_id)
            .map_err(|e| errors::pay(py, e))?;
        let v = serde_json::to_value(&r).map_err(|e| errors::internal(e.to_string()))?;
        to_py(py, &v)
    }

    /// Verifies (signature, ±300 s, no probe) and decrypts a notification from the raw body
    /// and the request's headers, as any framework hands them over.
    fn parse_notification(
        &self,
        py: Python<'_>,
        headers: HashMap<String, String>,
        body: &[u8],
    ) -> PyResult<Py<PyAny>> {
        let client = self.client().map_err(|e| errors::pay(py, e))?;
        // Header names are case-insensitive; frameworks hand them over in any case.
        let headers: HashMap<String, String> = headers
            .into_iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .collect();
        let n = client
            .parse_notification(&headers, body)
            .map_err(|e| errors::notify(py, &e))?;
        let resource: Value = serde_json::from_str(&n.plaintext).unwrap_or(Value::Null);
        let kind = match &n.event {
            NotificationEvent::Transaction(_) => "transaction",
            NotificationEvent::Refund(_) => "refund",
            _ => "other",
        };
        let v = json!({
            "id": n.id,
            "create_time": n.create_time.map(|t| t.to_string()),
            "event_type": n.event_type,
            "resource_type": n.resource_type,
            "summary": n.summary,
            "original_type": n.original_type,
            "kind": kind,
            "resource": resource,
        });
        to_py(py, &v)
    }

    fn __repr__(&self) -> String {
        format!("PayClient(mchid={:?})", self.mchid)
    }
}
