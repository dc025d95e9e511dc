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
