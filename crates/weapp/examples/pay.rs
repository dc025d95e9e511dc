//! WeChat Pay v3: prepay, the `wx.requestPayment` parameters, a query, a refund.
//!
//! Run against a simulator or a test server (the TEST keys of `tests/data/pay` by default):
//! `WECHATPAY_BASE_URL=http://127.0.0.1:9000 cargo run -p weapp --example pay`.
//! Real merchants set `WECHATPAY_MCHID`, `WECHATPAY_SERIAL`, `WECHATPAY_KEY_FILE`
//! (apiclient_key.pem), `WECHATPAY_APIV3_KEY`, `WECHATPAY_PUBLIC_KEY_ID`,
//! `WECHATPAY_PUBLIC_KEY_FILE` (pub_key.pem), and leave `WECHATPAY_BASE_URL` unset.

use weapp::pay::{
    ApiV3Key, Fen, JsapiPrepayRequest, Merchant, MerchantPrivateKey, OrderRef, PayClient, PayError,
    RefundRequest, RsaPublicKey,
};

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let data = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/pay");
    let key_file = env_or(
        "WECHATPAY_KEY_FILE",
        &format!("{data}/TEST-merchant-key.pkcs8.pem"),
    );
    let public_key_file = env_or(
        "WECHATPAY_PUBLIC_KEY_FILE",
        &format!("{data}/TEST-wechatpay-pubkey.pem"),
    );
    let merchant = Merchant::new(
        env_or("WECHATPAY_MCHID", "1900000109"),
        env_or(
            "WECHATPAY_SERIAL",
            "3A5E0C7D1B2F4A6C8E9D0B1A2C3D4E5F60718293",
        ),
        MerchantPrivateKey::from_pem(&std::fs::read_to_string(key_file)?)?,
    )?;
    let mut builder = PayClient::builder(
        merchant,
        ApiV3Key::new(&env_or(
            "WECHATPAY_APIV3_KEY",
            "TESTapiv3key-not-real-0123456789",
        ))?,
    )
    .wechatpay_public_key(
        env_or(
            "WECHATPAY_PUBLIC_KEY_ID",
            "PUB_KEY_ID_0119000001092026120600000000000001",
        ),
        RsaPublicKey::from_pem(&std::fs::read_to_string(public_key_file)?)?,
    );
    if let Ok(base) = std::env::var("WECHATPAY_BASE_URL") {
        builder = builder.base_url(base);
    }
    let pay = builder.build()?;
    println!("{pay:?}");

    let appid = env_or("WECHATPAY_APPID", "wxd678efh567hg6787");
    let out_trade_no = format!("example-{}", std::process::id());
    let order = JsapiPrepayRequest::new(
        &appid,
        "weapp example",
        &out_trade_no,
        env_or("WECHATPAY_NOTIFY_URL", "https://example.com/v1/pay/notify"),
        Fen::new(1),
        env_or("WECHATPAY_OPENID", "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"),
    );
    let prepay = match pay.jsapi_prepay(&order).await {
        Ok(p) => p,
        Err(e) if e.is_outcome_unknown() => pay.jsapi_prepay(&order).await?,
        Err(PayError::Transport { .. }) => {
            eprintln!("nothing answers at the base URL: set WECHATPAY_BASE_URL to a simulator");
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    let params = pay.request_payment(&appid, &prepay.prepay_id)?;
    println!(
        "wx.requestPayment({})",
        serde_json::to_string_pretty(&params)?
    );

    let tx = pay.query_by_out_trade_no(&out_trade_no).await?;
    println!(
        "{out_trade_no}: {} ({})",
        tx.trade_state, tx.trade_state_desc
    );

    let refund = RefundRequest::new(
        OrderRef::OutTradeNo(out_trade_no.clone()),
        format!("{out_trade_no}-r1"),
        Fen::new(1),
        Fen::new(1),
    );
    match pay.refund(&refund).await {
        Ok(r) => println!("refund {}: {}", r.out_refund_no, r.status),
        Err(e) => println!("refund refused: {e}"),
    }
    Ok(())
}
