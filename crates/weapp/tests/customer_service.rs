//! Customer service and temporary media against weapp-sim: reply windows, typing, upload/get.

use weapp::api::customer_service::{CustomMessage, LinkCard};
use weapp::{AppSecret, Client, ErrCode};
use weapp_test_support::sim_with_app;

const PNG: &[u8] = b"\x89PNG\r\n\x1a\nnot-really-but-enough";

#[tokio::test]
async fn the_48_hour_window_allows_five_replies() {
    let (sim, appid, secret) = sim_with_app().await;
    let client = Client::builder(&appid, AppSecret::new(secret))
        .base_url(sim.url())
        .build()
        .unwrap();
    let cs = client.customer_service();
    let (_, openid) = sim.sim().login(&appid, None, None, false).unwrap();
    let text = CustomMessage::Text("您好".into());
    assert_eq!(
        cs.send(&openid, &text).await.unwrap_err().errcode(),
        Some(ErrCode::ResponseOutOfTimeLimit),
        "no user message yet"
    );

    sim.sim()
        .user_message(&appid, &openid, "text", Some("在吗".into()))
        .await
        .unwrap();
    cs.typing(&openid, true).await.unwrap();
    assert_eq!(
        cs.typing(&openid, true).await.unwrap_err().errcode(),
        Some(ErrCode::AlreadyTyping)
    );
    let media = client
        .media()
        .upload_image("a.png", "image/png", PNG.to_vec())
        .await
        .unwrap();
    let link = CustomMessage::Link(LinkCard {
        title: "t".into(),
        description: "d".into(),
        url: "https://example.com".into(),
        thumb_url: "https://example.com/t.png".into(),
    });
    let page = CustomMessage::MiniProgramPage {
        title: "p".into(),
        pagepath: "pages/index/index".into(),
        thumb_media_id: media.media_id.clone(),
    };
    for m in [
        &text,
        &CustomMessage::Image {
            media_id: media.media_id.clone(),
        },
        &link,
        &page,
        &text,
    ] {
        cs.send(&openid, m).await.unwrap();
    }
    assert_eq!(
        cs.send(&openid, &text).await.unwrap_err().errcode(),
        Some(ErrCode::OutOfResponseCountLimit),
        "5 replies"
    );
    assert_eq!(
        sim.sim().calls("/cgi-bin/message/custom/send"),
        7,
        "never retried"
    );

    // A new user message resets the count; 48 hours later the window is closed.
    sim.sim()
        .user_message(&appid, &openid, "text", Some("还在吗".into()))
        .await
        .unwrap();
    cs.send(&openid, &text).await.unwrap();
    sim.sim().advance(48 * 3600);
    assert_eq!(
        cs.send(&openid, &text).await.unwrap_err().errcode(),
        Some(ErrCode::ResponseOutOfTimeLimit)
    );
}

#[tokio::test]
async fn entering_the_session_allows_two_replies_within_a_minute() {
    let (sim, appid, secret) = sim_with_app().await;
    let client = Client::builder(&appid, AppSecret::new(secret))
        .base_url(sim.url())
        .build()
        .unwrap();
    let cs = client.customer_service();
    let (_, openid) = sim.sim().login(&appid, None, None, false).unwrap();
    let text = CustomMessage::Text("欢迎".into());
    sim.sim()
        .user_message(&appid, &openid, "enter_session", None)
        .await
        .unwrap();
    cs.send(&openid, &text).await.unwrap();
    cs.send(&openid, &text).await.unwrap();
    assert_eq!(
        cs.send(&openid, &text).await.unwrap_err().errcode(),
        Some(ErrCode::OutOfResponseCountLimit)
    );
    sim.sim()
        .user_message(&appid, &openid, "enter_session", None)
        .await
        .unwrap();
    sim.sim().advance(60);
    assert_eq!(
        cs.send(&openid, &text).await.unwrap_err().errcode(),
        Some(ErrCode::ResponseOutOfTimeLimit)
    );
    assert_eq!(
        cs.typing(&openid, true).await.unwrap_err().errcode(),
        Some(ErrCode::NoRecentExchange),
        "no exchange in 30 s"
    );
}

#[tokio::test]
async fn media_upload_and_get_with_a_three_day_lifetime() {
    let (sim, appid, secret) = sim_with_app().await;
    let client = Client::builder(&appid, AppSecret::new(secret))
        .base_url(sim.url())
        .build()
        .unwrap();
    let media = client
        .media()
        .upload_image("a.png", "image/png", PNG.to_vec())
        .await
        .unwrap();
    assert_eq!(media.kind, "image");
    let back = client.media().get(&media.media_id).await.unwrap();
    assert_eq!(
        (back.content_type.as_str(), &back.bytes[..]),
        ("image/png", PNG)
    );
    assert_eq!(
        client.media().get("nope").await.unwrap_err().errcode(),
        Some(ErrCode::InvalidMediaId)
    );
    assert!(client
        .media()
        .upload_image("a.txt", "text/plain", b"hello".to_vec())
        .await
        .is_err());
    sim.sim().advance(3 * 86_400);
    assert_eq!(
        client
            .media()
            .get(&media.media_id)
            .await
            .unwrap_err()
            .errcode(),
        Some(ErrCode::InvalidMediaId)
    );
}
