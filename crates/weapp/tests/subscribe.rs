//! Subscribe messages against weapp-sim: templates, grants, value rules, delivery.

use weapp::api::subscribe::{Lang, MiniprogramState, SubscribeData};
use weapp::{AppSecret, Client, ErrCode, Error};
use weapp_test_support::sim_with_app;

#[tokio::test]
async fn template_management_and_a_granted_send() {
    let (sim, appid, secret) = sim_with_app().await;
    let client = Client::builder(&appid, AppSecret::new(secret))
        .base_url(sim.url())
        .build()
        .unwrap();
    let s = client.subscribe();
    let categories = s.categories().await.unwrap();
    assert!(categories.iter().any(|c| c.id == 616));
    let titles = s.public_templates(&[616, 632], 0, 30).await.unwrap();
    assert_eq!(titles.count, 2);
    let keywords = s.public_keywords(1001).await.unwrap();
    assert_eq!(
        keywords.iter().map(|k| k.rule.as_str()).collect::<Vec<_>>()[..3],
        ["character_string", "thing", "time"]
    );
    let id = s.add_template(1001, &[2, 4, 7], "外卖送达").await.unwrap();
    let templates = s.templates().await.unwrap();
    assert_eq!(templates.len(), 1);
    assert!(
        templates[0].content.contains("{{thing1.DATA}}")
            && templates[0].content.contains("{{phrase3.DATA}}"),
        "{}",
        templates[0].content
    );

    let (_, openid) = sim.sim().login(&appid, None, None, false).unwrap();
    let data = || {
        SubscribeData::new()
            .set("thing1", "黄焖鸡米饭")
            .unwrap()
            .set("amount2", "¥32.50")
            .unwrap()
            .set("phrase3", "已送达")
            .unwrap()
    };
    // No grant yet: refused.
    let err = s.send(&openid, &id, data()).send().await.unwrap_err();
    assert_eq!(err.errcode(), Some(ErrCode::UserRefuseToAcceptMsg));
    // One grant, one message.
    sim.sim()
        .subscribe_grant(&appid, &openid, &id, 1)
        .await
        .unwrap();
    s.send(&openid, &id, data())
        .page("pages/order/order?id=1")
        .state(MiniprogramState::Trial)
        .lang(Lang::EnUs)
        .send()
        .await
        .unwrap();
    let delivered = sim.sim().messages(&appid, &openid);
    assert_eq!(delivered.len(), 1);
    assert_eq!(delivered[0]["miniprogram_state"], "trial");
    assert_eq!(delivered[0]["lang"], "en_US");
    assert_eq!(delivered[0]["data"]["thing1"]["value"], "黄焖鸡米饭");
    assert_eq!(
        s.send(&openid, &id, data())
            .send()
            .await
            .unwrap_err()
            .errcode(),
        Some(ErrCode::UserRefuseToAcceptMsg),
        "the grant was used"
    );

    s.delete_template(&id).await.unwrap();
    assert!(s.templates().await.unwrap().is_empty());
    assert_eq!(
        s.send(&openid, &id, data())
            .send()
            .await
            .unwrap_err()
            .errcode(),
        Some(ErrCode::InvalidTemplateId)
    );
}

#[tokio::test]
async fn value_rules_are_checked_locally_and_by_the_simulator() {
    let (sim, appid, secret) = sim_with_app().await;
    let client = Client::builder(&appid, AppSecret::new(secret))
        .base_url(sim.url())
        .build()
        .unwrap();
    let id = client
        .subscribe()
        .add_template(1002, &[2, 3], "")
        .await
        .unwrap();
    let (_, openid) = sim.sim().login(&appid, None, None, false).unwrap();
    sim.sim()
        .subscribe_grant(&appid, &openid, &id, 5)
        .await
        .unwrap();

    // Locally: the builder refuses a bad value with WeChat's 47003 naming the field.
    let err = SubscribeData::new().set("letter2", "A1").unwrap_err();
    assert!(
        matches!(
            &err,
            Error::Api {
                code: ErrCode::ArgumentInvalid,
                rid: None,
                ..
            }
        ) && err.to_string().contains("data.letter2"),
        "{err}"
    );

    // Remotely: a key the template does not have a value for → 47003 naming it; the grant stays.
    let partial = SubscribeData::new().set("date1", "2023年11月10日").unwrap();
    let err = client
        .subscribe()
        .send(&openid, &id, partial)
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.errcode(), Some(ErrCode::ArgumentInvalid));
    assert!(err.to_string().contains("letter2"), "{err}");
    assert_eq!(sim.sim().grants(&appid, &openid, &id), 5);
    assert!(
        client
            .subscribe()
            .add_template(1002, &[2], "")
            .await
            .is_err(),
        "kidList of 1"
    );
    let err = client
        .subscribe()
        .add_template(9999, &[1, 2], "")
        .await
        .unwrap_err();
    assert_eq!(err.errcode(), Some(ErrCode::Other(200014)));
}

#[tokio::test]
async fn a_send_whose_outcome_is_unknown_is_reported_not_retried() {
    use weapp_sim::Fault;
    let (sim, appid, secret) = sim_with_app().await;
    let client = Client::builder(&appid, AppSecret::new(secret))
        .base_url(sim.url())
        .build()
        .unwrap();
    let id = client
        .subscribe()
        .add_template(1003, &[1, 2], "")
        .await
        .unwrap();
    let (_, openid) = sim.sim().login(&appid, None, None, false).unwrap();
    sim.sim()
        .subscribe_grant(&appid, &openid, &id, 1)
        .await
        .unwrap();
    sim.sim()
        .add_fault(Fault::errcode("/cgi-bin/message/subscribe/send", -1).times(1));
    let data = SubscribeData::new()
        .set("time1", "12:30")
        .unwrap()
        .set("thing2", "广州")
        .unwrap();
    let err = client
        .subscribe()
        .send(&openid, &id, data.clone())
        .send()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::OutcomeUnknown { .. }), "{err:?}");
    assert_eq!(err.errcode(), Some(ErrCode::SystemError));
    assert_eq!(
        sim.sim().calls("/cgi-bin/message/subscribe/send"),
        1,
        "not retried"
    );
    // An idempotent call under the same fault is retried and succeeds.
    sim.sim()
        .add_fault(Fault::errcode("/wxaapi/newtmpl/gettemplate", -1).times(1));
    assert_eq!(client.subscribe().templates().await.unwrap().len(), 1);
    assert_eq!(sim.sim().calls("/wxaapi/newtmpl/gettemplate"), 2);
}
