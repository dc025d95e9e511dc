//! Content security against weapp-sim.

use weapp::api::security::{MediaType, Scene};
use weapp::{AppSecret, Client, ErrCode, Error};
use weapp_test_support::sim_with_app;

#[tokio::test]
async fn media_check_async_returns_a_trace_id_and_refuses_bad_input() {
    let (sim, appid, secret) = sim_with_app().await;
    let client = Client::builder(&appid, AppSecret::new(secret))
        .base_url(sim.url())
        .build()
        .unwrap();
    let (_, openid) = sim.sim().login(&appid, None, None, false).unwrap();
    let ticket = client
        .security()
        .media_check_async(
            "https://cdn.example.com/cat.jpg",
            MediaType::Image,
            Scene::Comment,
            &openid,
        )
        .await
        .unwrap();
    assert!(ticket.trace_id.ends_with("-2"), "{}", ticket.trace_id);

    let err = client
        .security()
        .media_check_async("https://x/a.jpg", MediaType::Audio, Scene::Forum, "oNOBODY")
        .await
        .unwrap_err();
    assert_eq!(err.errcode(), Some(ErrCode::InvalidOpenid));
    let calls = sim.sim().calls("/wxa/media_check_async");
    let err = client
        .security()
        .media_check_async("ftp://x/a.jpg", MediaType::Image, Scene::Profile, &openid)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)));
    assert_eq!(
        sim.sim().calls("/wxa/media_check_async"),
        calls,
        "refused before any request"
    );
}

#[tokio::test]
async fn text_checks_give_typed_verdicts_and_need_a_recent_visitor() {
    use weapp::api::security::{Label, Suggest};
    let (sim, appid, secret) = sim_with_app().await;
    let client = Client::builder(&appid, AppSecret::new(secret))
        .base_url(sim.url())
        .build()
        .unwrap();
    let (_, openid) = sim.sim().login(&appid, None, None, false).unwrap();
    let ok = client
        .security()
        .msg_sec_check("今天天气不错", Scene::Comment, &openid)
        .send()
        .await
        .unwrap();
    assert_eq!(
        (ok.result.suggest, ok.result.label),
        (Suggest::Pass, Label::Normal)
    );
    assert!(!ok.trace_id.is_empty());
    let bad = client
        .security()
        .msg_sec_check("一起来赌博吧", Scene::Forum, &openid)
        .title("标题")
        .send()
        .await
        .unwrap();
    assert_eq!(
        (bad.result.suggest, bad.result.label),
        (Suggest::Risky, Label::Illegal)
    );
    assert_eq!(bad.detail[0].keyword.as_deref(), Some("赌博"));
    let ad = client
        .security()
        .msg_sec_check("加微信领红包", Scene::Comment, &openid)
        .send()
        .await
        .unwrap();
    assert_eq!(
        (ad.result.suggest, ad.result.label),
        (Suggest::Review, Label::Ad)
    );

    sim.sim().advance(2 * 3600 + 1);
    let err = client
        .security()
        .msg_sec_check("hi", Scene::Comment, &openid)
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        err.errcode(),
        Some(ErrCode::NotRecentVisitor),
        "not a visitor in the last 2 hours"
    );
    let err = client
        .security()
        .msg_sec_check("字".repeat(2501), Scene::Comment, &openid)
        .send()
        .await
        .unwrap_err();
    assert!(
        err.rid().is_none() && err.errcode() == Some(ErrCode::InvalidArgs),
        "checked locally"
    );
}

#[tokio::test]
async fn image_checks_and_risk_ranks() {
    use weapp::api::security::RiskScene;
    let (sim, appid, secret) = sim_with_app().await;
    let client = Client::builder(&appid, AppSecret::new(secret))
        .base_url(sim.url())
        .build()
        .unwrap();
    client
        .security()
        .img_sec_check("a.png", "image/png", b"\x89PNG clean".to_vec())
        .await
        .unwrap();
    let err = client
        .security()
        .img_sec_check("b.png", "image/png", b"\x89PNG RISKY".to_vec())
        .await
        .unwrap_err();
    assert_eq!(err.errcode(), Some(ErrCode::RiskyContent));

    let (_, openid) = sim.sim().login(&appid, None, None, false).unwrap();
    let a = client
        .security()
        .user_risk_rank(&openid, RiskScene::Marketing, "203.0.113.7")
        .send()
        .await
        .unwrap();
    let b = client
        .security()
        .user_risk_rank(&openid, RiskScene::Marketing, "203.0.113.7")
        .mobile("13800138000")
        .send()
        .await
        .unwrap();
    assert!(
        a.risk_rank <= 4 && a.risk_rank == b.risk_rank,
        "deterministic per user"
    );
    assert_eq!(
        client
            .security()
            .user_risk_rank(&openid, RiskScene::Register, "1.2.3.4")
            .test(true)
            .send()
            .await
            .unwrap()
            .risk_rank,
        0
    );
    assert_eq!(
        client
            .security()
            .user_risk_rank("oNOBODY", RiskScene::Other, "1.2.3.4")
            .send()
            .await
            .unwrap_err()
            .errcode(),
        Some(ErrCode::InvalidOpenid)
    );
    assert_eq!(
        client
            .security()
            .user_risk_rank(&openid, RiskScene::Other, "")
            .send()
            .await
            .unwrap_err()
            .errcode(),
        Some(ErrCode::InvalidArgs)
    );
}
