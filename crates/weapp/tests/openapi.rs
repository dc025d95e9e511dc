//! OpenAPI management against weapp-sim: quotas report real counters, rids resolve.

use weapp::{AppSecret, Client, ErrCode, TokenMode};
use weapp_test_support::sim_with_app;

#[tokio::test]
async fn quota_reports_real_counters_and_clear_quota_resets_them() {
    let (sim, appid, secret) = sim_with_app().await;
    let client = Client::builder(&appid, AppSecret::new(secret.clone()))
        .base_url(sim.url())
        .token_mode(TokenMode::Classic)
        .build()
        .unwrap();
    client
        .wxacode()
        .qrcode("pages/index/index")
        .send()
        .await
        .unwrap();
    client.wxacode().unlimited("a=1").send().await.unwrap();
    client.wxacode().unlimited("a=2").send().await.unwrap();

    let q = client.openapi().quota("/cgi-bin/token").await.unwrap();
    assert_eq!(
        (q.quota.daily_limit, q.quota.used, q.quota.remain),
        (2000, 1, 1999)
    );
    let q = client
        .openapi()
        .quota("/wxa/getwxacodeunlimit")
        .await
        .unwrap();
    assert_eq!(q.quota.used, 2);
    assert_eq!(
        (q.rate_limit.call_count, q.rate_limit.refresh_second),
        (5000, 60)
    );
    assert_eq!(
        client
            .openapi()
            .quota("/cgi-bin/wxaapp/createwxaqrcode")
            .await
            .unwrap()
            .quota
            .used,
        1
    );

    assert_eq!(
        client
            .openapi()
            .quota("/sns/jscode2session")
            .await
            .unwrap_err()
            .errcode(),
        Some(ErrCode::CgiPathNoPermission)
    );
    assert_eq!(
        client
            .openapi()
            .quota("/no/such/api")
            .await
            .unwrap_err()
            .errcode(),
        Some(ErrCode::CgiPathNotFound)
    );

    client.openapi().clear_quota().await.unwrap();
    assert_eq!(
        client
            .openapi()
            .quota("/wxa/getwxacodeunlimit")
            .await
            .unwrap()
            .quota
            .used,
        0
    );
    client.openapi().clear_quota_v2().await.unwrap();
    let bad = Client::builder(&appid, AppSecret::new("wrong"))
        .base_url(sim.url())
        .build()
        .unwrap();
    assert_eq!(
        bad.openapi().clear_quota_v2().await.unwrap_err().errcode(),
        Some(ErrCode::InvalidAppSecret)
    );
    for _ in 0..8 {
        client.openapi().clear_quota_v2().await.unwrap();
    }
    assert_eq!(
        client.openapi().clear_quota().await.unwrap_err().errcode(),
        Some(ErrCode::ForbidToClearQuota),
        "10 a month"
    );
}

#[tokio::test]
async fn a_rid_from_an_error_resolves_to_its_request() {
    let (sim, appid, secret) = sim_with_app().await;
    let client = Client::builder(&appid, AppSecret::new(secret))
        .base_url(sim.url())
        .build()
        .unwrap();
    let err = client
        .auth()
        .code_to_session("never-issued")
        .await
        .unwrap_err();
    let rid = err.rid().unwrap().to_owned();
    let req = client.openapi().rid(&rid).await.unwrap();
    assert_eq!(req.request_url, "/sns/jscode2session");
    assert!(req.response_body.contains("40029"), "{}", req.response_body);
    assert!(
        !req.request_url.contains("secret"),
        "query strings are not recorded"
    );
    assert_eq!(
        client
            .openapi()
            .rid("0000-0000-0000")
            .await
            .unwrap_err()
            .errcode(),
        Some(ErrCode::RidNotFound)
    );
    assert_eq!(
        client.openapi().rid("garbage").await.unwrap_err().errcode(),
        Some(ErrCode::RidInvalid)
    );
}
