//! URL Scheme, URL Link and Short Link against weapp-sim.

use weapp::api::url_link::Expiry;
use weapp::api::EnvVersion;
use weapp::{AppSecret, Client, ErrCode};
use weapp_test_support::sim_with_app;

#[tokio::test]
async fn generated_links_resolve_back_to_what_was_asked() {
    let (sim, appid, secret) = sim_with_app().await;
    sim.sim()
        .set_pages(
            &appid,
            vec!["pages/index/index".into(), "pages/item/item".into()],
        )
        .unwrap();
    let client = Client::builder(&appid, AppSecret::new(secret))
        .base_url(sim.url())
        .build()
        .unwrap();
    let now = sim.sim().now();

    let scheme = client
        .url_link()
        .scheme()
        .path("pages/item/item")
        .query("id=42")
        .env_version(EnvVersion::Trial)
        .expiry(Expiry::InDays(7))
        .send()
        .await
        .unwrap();
    assert!(scheme.starts_with("weixin://dl/business/?t="), "{scheme}");
    let info = client.url_link().query_scheme(&scheme).await.unwrap();
    assert_eq!(
        (
            info.details.path.as_str(),
            info.details.query.as_str(),
            info.details.env_version
        ),
        ("pages/item/item", "id=42", EnvVersion::Trial)
    );
    assert_eq!(info.details.expire_time, now + 7 * 86_400);
    assert_eq!(info.details.appid, appid);

    let url = client
        .url_link()
        .link()
        .path("pages/index/index")
        .query("from=sms")
        .send()
        .await
        .unwrap();
    assert!(url.starts_with("https://wxaurl.cn/"), "{url}");
    let info = client.url_link().query_url_link(&url).await.unwrap();
    assert_eq!(
        (info.details.query.as_str(), info.details.expire_time),
        ("from=sms", now + 30 * 86_400)
    );

    let nfc = client
        .url_link()
        .nfc_scheme("model-1")
        .path("pages/item/item")
        .send()
        .await
        .unwrap();
    assert_eq!(
        client
            .url_link()
            .query_scheme(&nfc)
            .await
            .unwrap()
            .details
            .path,
        "pages/item/item"
    );

    let short = client
        .url_link()
        .short_link("pages/item/item?id=1")
        .title("商品 1")
        .permanent(true)
        .send()
        .await
        .unwrap();
    assert!(short.starts_with("#小程序://"), "{short}");

    // Expired links no longer resolve; foreign ones never did.
    sim.sim().advance(8 * 86_400);
    assert_eq!(
        client
            .url_link()
            .query_scheme(&scheme)
            .await
            .unwrap_err()
            .errcode(),
        Some(ErrCode::SchemeNotFound)
    );
    assert!(client.url_link().query_url_link(&url).await.is_ok());
    let (other, other_secret) = sim.sim().add_app(None, None, false);
    let stranger = Client::builder(&other, AppSecret::new(other_secret))
        .base_url(sim.url())
        .build()
        .unwrap();
    assert_eq!(
        stranger
            .url_link()
            .query_url_link(&url)
            .await
            .unwrap_err()
            .errcode(),
        Some(ErrCode::SchemeNotFound)
    );
}

#[tokio::test]
async fn link_rules_are_enforced_locally_and_by_the_simulator() {
    let (sim, appid, secret) = sim_with_app().await;
    let client = Client::builder(&appid, AppSecret::new(secret))
        .base_url(sim.url())
        .build()
        .unwrap();
    let err = client
        .url_link()
        .scheme()
        .path("pages/unpublished/x")
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        (err.errcode(), err.rid().is_some()),
        (Some(ErrCode::InvalidPagePath), true)
    );
    let err = client
        .url_link()
        .short_link("pages/nope/nope")
        .send()
        .await
        .unwrap_err();
    // Short links answer an unpublished page with 40066 "invalid url" (captures 2022–2023).
    assert_eq!(err.errcode(), Some(ErrCode::InvalidUrl));

    // 100 a second (the virtual clock stands still, so they all fall in one second).
    for _ in 0..100 {
        client.url_link().link().send().await.unwrap();
    }
    assert_eq!(
        client.url_link().link().send().await.unwrap_err().errcode(),
        Some(ErrCode::LinkRateLimited)
    );
    sim.sim().advance(1);
    client.url_link().link().send().await.unwrap();

    let before = sim.sim().calls("/wxa/generatescheme")
        + sim.sim().calls("/wxa/genwxashortlink")
        + sim.sim().calls("/wxa/generate_urllink");
    let local = [
        client
            .url_link()
            .scheme()
            .expiry(Expiry::InDays(31))
            .send()
            .await
            .unwrap_err(),
        client
            .url_link()
            .link()
            .query("a b")
            .send()
            .await
            .unwrap_err(),
        client
            .url_link()
            .short_link("pages/index/index")
            .title("标题".repeat(11))
            .send()
            .await
            .unwrap_err(),
    ];
    let codes: Vec<i64> = local.iter().map(|e| e.errcode().unwrap().code()).collect();
    assert_eq!(codes, [85401, 40212, 40225]);
    assert_eq!(
        sim.sim().calls("/wxa/generatescheme")
            + sim.sim().calls("/wxa/genwxashortlink")
            + sim.sim().calls("/wxa/generate_urllink"),
        before
    );
}
