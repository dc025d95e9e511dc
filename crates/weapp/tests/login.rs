//! Login and identity APIs against weapp-sim.

use serde_json::json;
use weapp::api::auth::PaidOrder;
use weapp::crypto::DecryptOptions;
use weapp::{AppSecret, Client, CryptoError, ErrCode, Error};
use weapp_test_support::sim_with_app;

async fn setup() -> (weapp_sim::SimHandle, Client, String) {
    let (sim, appid, secret) = sim_with_app().await;
    let client = Client::builder(&appid, AppSecret::new(secret))
        .base_url(sim.url())
        .build()
        .unwrap();
    (sim, client, appid)
}

#[tokio::test]
async fn code_to_session_returns_the_users_key_and_never_fetches_a_token() {
    let (sim, client, appid) = setup().await;
    let (code, openid) = sim.sim().login(&appid, None, None, false).unwrap();
    let s = client.auth().code_to_session(&code).await.unwrap();
    assert_eq!(s.openid, openid);
    assert_eq!(s.unionid, None, "no open platform binding, no unionid");
    let user = sim.sim().user(&appid, &openid).unwrap();
    assert_eq!(Some(s.session_key.expose()), user.session_key.as_deref());
    assert_eq!(
        sim.sim().calls("/cgi-bin/stable_token") + sim.sim().calls("/cgi-bin/token"),
        0
    );
}

#[tokio::test]
async fn unionid_is_returned_when_the_app_has_one() {
    let (sim, client, appid) = setup().await;
    sim.sim().add_app(Some(appid.clone()), None, true);
    let (code, _) = sim
        .sim()
        .login(&appid, None, Some("oUNION".into()), false)
        .unwrap();
    assert_eq!(
        client
            .auth()
            .code_to_session(&code)
            .await
            .unwrap()
            .unionid
            .as_deref(),
        Some("oUNION")
    );
}

#[tokio::test]
async fn second_redemption_of_a_code_is_40163_and_expired_is_40029() {
    let (sim, client, appid) = setup().await;
    let (code, _) = sim.sim().login(&appid, None, None, false).unwrap();
    client.auth().code_to_session(&code).await.unwrap();
    let err = client.auth().code_to_session(&code).await.unwrap_err();
    assert_eq!(err.errcode(), Some(ErrCode::CodeBeenUsed));
    assert!(err.rid().is_some());
    assert_eq!(
        sim.sim().calls("/sns/jscode2session"),
        2,
        "one-time codes are never retried"
    );

    let (code, _) = sim.sim().login(&appid, None, None, false).unwrap();
    sim.sim().advance(300);
    let err = client.auth().code_to_session(&code).await.unwrap_err();
    assert_eq!(err.errcode(), Some(ErrCode::InvalidCode));
    let err = client
        .auth()
        .code_to_session("never-issued")
        .await
        .unwrap_err();
    assert_eq!(err.errcode(), Some(ErrCode::InvalidCode));
    assert!(matches!(
        client.auth().code_to_session("").await,
        Err(Error::InvalidArgument(_))
    ));
}

#[tokio::test]
async fn wrong_secret_and_unknown_app_are_typed() {
    let (sim, _client, appid) = setup().await;
    let (code, _) = sim.sim().login(&appid, None, None, false).unwrap();
    let bad = Client::builder(&appid, AppSecret::new("wrong"))
        .base_url(sim.url())
        .build()
        .unwrap();
    assert_eq!(
        bad.auth()
            .code_to_session(&code)
            .await
            .unwrap_err()
            .errcode(),
        Some(ErrCode::InvalidAppSecret)
    );
    assert_eq!(
        bad.access_token().await.unwrap_err().errcode(),
        Some(ErrCode::InvalidAppSecret)
    );
    let classic = Client::builder(&appid, AppSecret::new("wrong"))
        .base_url(sim.url())
        .token_mode(weapp::TokenMode::Classic)
        .build()
        .unwrap();
    // /cgi-bin/token answers a wrong secret with 40125 too today (captures 2023–2026).
    assert_eq!(
        classic.access_token().await.unwrap_err().errcode(),
        Some(ErrCode::InvalidAppSecret)
    );
    let unknown = Client::builder("wxnope", AppSecret::new("x"))
        .base_url(sim.url())
        .build()
        .unwrap();
    assert_eq!(
        unknown.access_token().await.unwrap_err().errcode(),
        Some(ErrCode::InvalidAppid)
    );
}

#[tokio::test]
async fn blocked_users_and_the_minute_limit() {
    let (sim, client, appid) = setup().await;
    let (code, _) = sim.sim().login(&appid, None, None, true).unwrap();
    assert_eq!(
        client
            .auth()
            .code_to_session(&code)
            .await
            .unwrap_err()
            .errcode(),
        Some(ErrCode::CodeBlocked)
    );
    let openid = "oBUSY".to_string();
    for _ in 0..weapp_sim::JSCODE_PER_USER_MINUTE {
        let (code, _) = sim
            .sim()
            .login(&appid, Some(openid.clone()), None, false)
            .unwrap();
        client.auth().code_to_session(&code).await.unwrap();
    }
    let (code, _) = sim
        .sim()
        .login(&appid, Some(openid.clone()), None, false)
        .unwrap();
    let err = client.auth().code_to_session(&code).await.unwrap_err();
    assert_eq!(err.errcode(), Some(ErrCode::MinuteQuotaExceeded));
    assert!(err.retry_after().is_some());
    sim.sim().advance(60);
    client.auth().code_to_session(&code).await.unwrap();
}

#[tokio::test]
async fn session_key_check_reset_and_rotation_on_login() {
    let (sim, client, appid) = setup().await;
    let (code, openid) = sim.sim().login(&appid, None, None, false).unwrap();
    let key = client
        .auth()
        .code_to_session(&code)
        .await
        .unwrap()
        .session_key;
    client
        .auth()
        .check_session_key(&openid, &key)
        .await
        .unwrap();

    let fresh = client
        .auth()
        .reset_session_key(&openid, &key)
        .await
        .unwrap();
    assert_eq!(fresh.openid, openid);
    assert_ne!(fresh.session_key, key);
    let err = client
        .auth()
        .check_session_key(&openid, &key)
        .await
        .unwrap_err();
    assert_eq!(
        err.errcode(),
        Some(ErrCode::InvalidSignature),
        "the old key died at once"
    );
    client
        .auth()
        .check_session_key(&openid, &fresh.session_key)
        .await
        .unwrap();

    // A new wx.login rotates the key too.
    sim.sim()
        .login(&appid, Some(openid.clone()), None, false)
        .unwrap();
    let err = client
        .auth()
        .check_session_key(&openid, &fresh.session_key)
        .await
        .unwrap_err();
    assert_eq!(err.errcode(), Some(ErrCode::InvalidSignature));

    let keys = client
        .auth()
        .user_encrypt_key(
            &openid,
            &weapp::SessionKey::new(
                sim.sim()
                    .user(&appid, &openid)
                    .unwrap()
                    .session_key
                    .unwrap(),
            ),
        )
        .await
        .unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].version, 1);
}

#[tokio::test]
async fn phone_number_accepts_numeric_country_code_and_codes_are_single_use() {
    let (sim, client, appid) = setup().await;
    let (_, openid) = sim.sim().login(&appid, None, None, false).unwrap();
    let code = sim
        .sim()
        .phone_code(&appid, &openid, Some("13800138000".into()))
        .unwrap();
    let phone = client.auth().get_phone_number(&code).await.unwrap();
    assert_eq!(phone.phone_number, "13800138000");
    assert_eq!(phone.pure_phone_number, "13800138000");
    assert_eq!(phone.country_code, "86");
    assert_eq!(phone.watermark.appid, appid);
    let err = client.auth().get_phone_number(&code).await.unwrap_err();
    assert_eq!(err.errcode(), Some(ErrCode::InvalidCode));

    // A code minted for another app is 40013.
    let (other, _) = sim.sim().add_app(None, None, false);
    let (_, other_user) = sim.sim().login(&other, None, None, false).unwrap();
    let foreign = sim.sim().phone_code(&other, &other_user, None).unwrap();
    assert_eq!(
        client
            .auth()
            .get_phone_number(&foreign)
            .await
            .unwrap_err()
            .errcode(),
        Some(ErrCode::InvalidAppid)
    );
}

#[tokio::test]
async fn paid_unionid_and_plugin_openpid() {
    let (sim, client, appid) = setup().await;
    sim.sim().add_app(Some(appid.clone()), None, true);
    let (_, openid) = sim.sim().login(&appid, None, None, false).unwrap();
    let order = PaidOrder::Transaction("4200000001".into());
    assert_eq!(
        client
            .auth()
            .paid_unionid(&openid, &order)
            .await
            .unwrap_err()
            .errcode(),
        Some(ErrCode::InvalidTrade)
    );
    sim.sim()
        .record_payment(&appid, &openid, Some("4200000001".into()), None, None)
        .unwrap();
    let unionid = client.auth().paid_unionid(&openid, &order).await.unwrap();
    assert_eq!(
        Some(unionid),
        sim.sim().user(&appid, &openid).unwrap().unionid
    );
    sim.sim().advance(301);
    assert_eq!(
        client
            .auth()
            .paid_unionid(&openid, &order)
            .await
            .unwrap_err()
            .errcode(),
        Some(ErrCode::InvalidTrade)
    );

    let code = sim.sim().plugin_code(&appid, &openid).unwrap();
    let pid = client.auth().plugin_openpid(&code).await.unwrap();
    assert!(pid.starts_with('p'));
    assert!(
        client.auth().plugin_openpid(&code).await.is_err(),
        "single-use"
    );
}

#[tokio::test]
async fn open_data_from_the_simulator_decrypts_and_foreign_data_is_rejected() {
    let (sim, client, appid) = setup().await;
    let (code, openid) = sim.sim().login(&appid, None, None, false).unwrap();
    let key = client
        .auth()
        .code_to_session(&code)
        .await
        .unwrap()
        .session_key;
    let (data, iv) = sim
        .sim()
        .open_data(&appid, &openid, json!({"openGId": "tGxyz"}))
        .unwrap();
    let value = client
        .auth()
        .decrypt(&key, &iv, &data, &DecryptOptions::default())
        .unwrap();
    assert_eq!(value["openGId"], "tGxyz");
    assert_eq!(value["watermark"]["appid"], appid.as_str());

    // Same user data, but this client belongs to another app: the watermark gives it away.
    let other = Client::builder("wxother", AppSecret::new("s"))
        .base_url(sim.url())
        .build()
        .unwrap();
    let err = other
        .auth()
        .decrypt(&key, &iv, &data, &DecryptOptions::default())
        .unwrap_err();
    assert!(matches!(
        err,
        Error::Crypto(CryptoError::AppidMismatch { .. })
    ));
}
