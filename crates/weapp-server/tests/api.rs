//! weapp-server over HTTP against weapp-sim, on SQLite and on PostgreSQL + Redis.

mod common;

use common::{sqlite_url, world, KEY, OTHER_KEY};
use serde_json::json;
use weapp::TokenMode;
use weapp_sim::{Fault, TokenKind};
use weapp_test_support::{PgDatabase, RedisServer};

async fn journey(database_url: &str, redis: Option<String>) {
    let w = world().await;
    let mut config = w.config(database_url, redis, TokenMode::Stable);
    config.expose_linked_accounts = true;
    let server = weapp_server::spawn(config).await.unwrap();
    let url = server.url().to_owned();

    let (code, openid) = w
        .sim
        .sim()
        .login(&w.appid, None, Some("oUNION1".into()), false)
        .unwrap();
    let (s, v) = w.post_login(&url, &w.appid, &code).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["openid"], openid.as_str());
    assert_eq!(v["unionid"], "oUNION1");
    assert!(v.get("session_key").is_none());
    let token = v["token"].as_str().unwrap().to_owned();
    assert!(token.len() >= 43, "≥ 256 bits");
    assert!(v["expires_at"].as_i64().unwrap() > 0);

    let (s, me) = w
        .call("GET", format!("{url}/v1/me"), Some(&token), None)
        .await;
    assert_eq!(s, 200, "{me}");
    assert_eq!(me["openid"], openid.as_str());
    assert!(me.get("phone_number").is_none());

    let phone_code = w
        .sim
        .sim()
        .phone_code(&w.appid, &openid, Some("13900001111".into()))
        .unwrap();
    let (s, v) = w
        .call(
            "POST",
            format!("{url}/v1/me/phone"),
            Some(&token),
            Some(json!({"code": phone_code})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        v,
        json!({"phone_number": "13900001111", "pure_phone_number": "13900001111", "country_code": "86"})
    );
    let (_, me) = w
        .call("GET", format!("{url}/v1/me"), Some(&token), None)
        .await;
    assert_eq!(me["phone_number"], "13900001111");

    let (data, iv) = w
        .sim
        .sim()
        .open_data(&w.appid, &openid, json!({"openGId": "g1"}))
        .unwrap();
    let (s, v) = w
        .call(
            "POST",
            format!("{url}/v1/me/decrypt"),
            Some(&token),
            Some(json!({"encrypted_data": data, "iv": iv})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["openGId"], "g1");

    // A new wx.login rotates the key at WeChat; the server keeps the new one.
    let (token2, _) = w.login(&server, Some(&openid)).await;
    let (data, iv) = w
        .sim
        .sim()
        .open_data(&w.appid, &openid, json!({"n": 2}))
        .unwrap();
    for t in [&token, &token2] {
        let (s, v) = w
            .call(
                "POST",
                format!("{url}/v1/me/decrypt"),
                Some(t),
                Some(json!({"encrypted_data": data, "iv": iv})),
            )
            .await;
        assert_eq!((s, v["n"].as_i64()), (200, Some(2)), "{v}");
    }

    // The same person in the other app is linked by unionid.
    let (code, _) = w
        .sim
        .sim()
        .login(&w.other_appid, None, Some("oUNION1".into()), false)
        .unwrap();
    let (s, _) = w.post_login(&url, &w.other_appid, &code).await;
    assert_eq!(s, 200);
    let (_, me) = w
        .call("GET", format!("{url}/v1/me"), Some(&token), None)
        .await;
    assert_eq!(me["linked"][0]["appid"], w.other_appid.as_str(), "{me}");

    let (s, _) = w
        .call("POST", format!("{url}/v1/logout"), Some(&token), None)
        .await;
    assert_eq!(s, 204);
    let (s, v) = w
        .call("GET", format!("{url}/v1/me"), Some(&token), None)
        .await;
    assert_eq!(s, 401);
    assert_eq!(v["error"]["code"], "unauthorized");
    let (s, _) = w
        .call("GET", format!("{url}/v1/me"), Some(&token2), None)
        .await;
    assert_eq!(s, 200, "other sessions live on");
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_journey_on_sqlite() {
    journey(&sqlite_url(), None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_journey_on_postgres_and_redis() {
    let db = PgDatabase::create().await;
    let redis = RedisServer::start();
    journey(db.url(), Some(redis.url())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wechat_failures_become_json_errors_with_errcode_and_rid() {
    let w = world().await;
    let server = weapp_server::spawn(w.config(&sqlite_url(), None, TokenMode::Stable))
        .await
        .unwrap();
    let url = server.url();
    let (code, _) = w.sim.sim().login(&w.appid, None, None, false).unwrap();
    let body = json!({"appid": w.appid, "code": code});
    assert_eq!(
        w.call("POST", format!("{url}/v1/login"), None, Some(body.clone()))
            .await
            .0,
        200
    );
    let (s, v) = w
        .call("POST", format!("{url}/v1/login"), None, Some(body))
        .await;
    assert_eq!(s, 400);
    assert_eq!(v["error"]["code"], "invalid_code");
    assert_eq!(v["error"]["wechat_errcode"], 40163);
    assert_eq!(v["error"]["rid"].as_str().unwrap().len(), 26);

    w.sim
        .sim()
        .add_fault(Fault::errcode("/sns/jscode2session", 45011).times(1));
    let (code, _) = w.sim.sim().login(&w.appid, None, None, false).unwrap();
    let (s, headers, v) = w
        .call_full(
            "POST",
            format!("{url}/v1/login"),
            None,
            Some(json!({"appid": w.appid, "code": code}).to_string()),
        )
        .await;
    assert_eq!(s, 429, "{v}");
    assert!(headers.get("retry-after").is_some());
    assert_eq!(v["error"]["wechat_errcode"], 45011);

    w.sim
        .sim()
        .add_fault(Fault::http_status("/sns/jscode2session", 502));
    let (s, v) = w.post_login(url, &w.appid, "x").await;
    assert_eq!(s, 502, "{v}");
    // A 5xx on a one-time-code exchange may have consumed the code: not retried, and said so.
    assert_eq!(v["error"]["code"], "upstream_outcome_unknown", "{v}");
    assert_eq!(
        w.sim.sim().calls("/sns/jscode2session"),
        4,
        "no blind retry"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_requires_a_key_for_the_right_app() {
    let w = world().await;
    let server = weapp_server::spawn(w.config(&sqlite_url(), None, TokenMode::Classic))
        .await
        .unwrap();
    let url = format!("{}/v1/apps/{}/access_token", server.url(), w.appid);
    let (s, v) = w.call("GET", url.clone(), None, None).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (401, Some("unauthorized"))
    );
    assert_eq!(
        w.call("GET", url.clone(), Some("not-a-key"), None).await.0,
        401
    );
    let (s, v) = w.call("GET", url.clone(), Some(OTHER_KEY), None).await;
    assert_eq!((s, v["error"]["code"].as_str()), (403, Some("forbidden")));
    let (s, v) = w.call("GET", url.clone(), Some(KEY), None).await;
    assert_eq!(s, 200, "{v}");
    let token = v["access_token"].as_str().unwrap().to_owned();
    assert!(v["expires_in"].as_i64().unwrap() > 7000);
    let other = format!("{}/v1/apps/{}/access_token", server.url(), w.other_appid);
    assert_eq!(
        w.call("GET", other.clone(), Some(OTHER_KEY), None).await.0,
        200
    );
    assert_eq!(w.call("GET", other, Some(KEY), None).await.0, 403);

    // Served from memory: many reads, no new fetch.
    for _ in 0..50 {
        let (_, v) = w.call("GET", url.clone(), Some(KEY), None).await;
        assert_eq!(v["access_token"], token.as_str());
    }
    assert_eq!(w.sim.sim().tokens_issued(&w.appid, TokenKind::Classic), 1);

    // The mirror: correct secret → the broker's token, never a new one; force_refresh ignored.
    let base = server.url();
    let (_, v) = w
        .call(
            "GET",
            format!(
                "{base}/cgi-bin/token?grant_type=client_credential&appid={}&secret={}",
                w.appid, w.secret
            ),
            None,
            None,
        )
        .await;
    assert_eq!(v["access_token"], token.as_str());
    let (_, v) = w
        .call("POST", format!("{base}/cgi-bin/stable_token"), None, Some(json!({"grant_type": "client_credential", "appid": w.appid, "secret": w.secret, "force_refresh": true})))
        .await;
    assert_eq!(v["access_token"], token.as_str());
    let (_, v) = w
        .call(
            "GET",
            format!(
                "{base}/cgi-bin/token?grant_type=client_credential&appid={}&secret=wrong",
                w.appid
            ),
            None,
            None,
        )
        .await;
    assert_eq!(v["errcode"], 40125);
    assert!(v["errmsg"].as_str().unwrap().contains("rid: "));
    let (_, v) = w
        .call(
            "GET",
            format!("{base}/cgi-bin/token?grant_type=client_credential&appid=wxnope&secret=x"),
            None,
            None,
        )
        .await;
    assert_eq!(v["errcode"], 40013);
    assert_eq!(
        w.sim.sim().tokens_issued(&w.appid, TokenKind::Classic),
        1,
        "the mirror never refreshes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_a_clear_4xx_and_changes_nothing() {
    let w = world().await;
    let server = weapp_server::spawn(w.config(&sqlite_url(), None, TokenMode::Stable))
        .await
        .unwrap();
    let url = server.url();
    let (token, _) = w.login(&server, None).await;
    let calls_before = w.sim.sim().calls("/sns/jscode2session");

    // (method, url, bearer, raw body, expected status, expected error code)
    type Case<'a> = (
        &'a str,
        String,
        Option<&'a str>,
        Option<String>,
        u16,
        &'a str,
    );
    let cases: Vec<Case> = vec![
        (
            "POST",
            format!("{url}/v1/login"),
            None,
            Some("{not json".into()),
            400,
            "invalid_json",
        ),
        (
            "POST",
            format!("{url}/v1/login"),
            None,
            Some(json!({"appid": w.appid}).to_string()),
            400,
            "invalid_body",
        ),
        (
            "POST",
            format!("{url}/v1/login"),
            None,
            Some(json!({"appid": w.appid, "code": "c", "extra": 1}).to_string()),
            400,
            "invalid_body",
        ),
        (
            "POST",
            format!("{url}/v1/login"),
            None,
            Some(json!({"appid": w.appid, "code": 5}).to_string()),
            400,
            "invalid_body",
        ),
        (
            "POST",
            format!("{url}/v1/login"),
            None,
            Some(json!({"appid": "wxunknown", "code": "c"}).to_string()),
            404,
            "not_found",
        ),
        (
            "POST",
            format!("{url}/v1/login"),
            None,
            Some(json!({"appid": w.appid, "code": ""}).to_string()),
            400,
            "invalid_code",
        ),
        (
            "POST",
            format!("{url}/v1/login"),
            None,
            Some(format!(
                "{{\"appid\":\"{}\",\"code\":\"{}\"}}",
                w.appid,
                "x".repeat(70_000)
            )),
            413,
            "payload_too_large",
        ),
        (
            "POST",
            format!("{url}/v1/me/phone"),
            None,
            Some(json!({"code": "c"}).to_string()),
            401,
            "unauthorized",
        ),
        (
            "POST",
            format!("{url}/v1/me/phone"),
            Some("wa_forged"),
            Some(json!({"code": "c"}).to_string()),
            401,
            "unauthorized",
        ),
        (
            "POST",
            format!("{url}/v1/me/decrypt"),
            Some(&token),
            Some(json!({"encrypted_data": "%%%", "iv": "AAAAAAAAAAAAAAAAAAAAAA=="}).to_string()),
            400,
            "decrypt_failed",
        ),
        (
            "POST",
            format!("{url}/v1/logout"),
            None,
            None,
            401,
            "unauthorized",
        ),
        (
            "GET",
            format!("{url}/v1/nothing-here"),
            None,
            None,
            404,
            "not_found",
        ),
        (
            "POST",
            format!("{url}/v1/apps/{}/access_token/invalidate", w.appid),
            Some(KEY),
            Some("{}".into()),
            400,
            "invalid_body",
        ),
    ];
    for (method, u, bearer, body, status, code) in cases {
        let (s, _, v) = w.call_full(method, u.clone(), bearer, body).await;
        assert_eq!(s, status, "{method} {u}: {v}");
        assert_eq!(v["error"]["code"], code, "{method} {u}: {v}");
        assert!(!v["error"]["message"].as_str().unwrap().is_empty());
    }
    assert_eq!(
        w.sim.sim().calls("/sns/jscode2session"),
        calls_before,
        "nothing reached WeChat"
    );
    let (_, me) = w
        .call("GET", format!("{url}/v1/me"), Some(&token), None)
        .await;
    assert!(me.get("phone_number").is_none(), "no state change");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_is_rate_limited_per_ip() {
    let w = world().await;
    let mut config = w.config(&sqlite_url(), None, TokenMode::Stable);
    config.login_rate_limit_per_minute = 3;
    let server = weapp_server::spawn(config).await.unwrap();
    let body = json!({"appid": w.appid, "code": "whatever"}).to_string();
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let (s, h, _) = w
            .call_full(
                "POST",
                format!("{}/v1/login", server.url()),
                None,
                Some(body.clone()),
            )
            .await;
        statuses.push((s, h.get("retry-after").is_some()));
    }
    assert_eq!(
        statuses,
        [(400, false), (400, false), (400, false), (429, true)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ops_endpoints_report_health_metrics_and_the_api() {
    let w = world().await;
    let mut redis = RedisServer::start();
    let server = weapp_server::spawn(w.config(&sqlite_url(), Some(redis.url()), TokenMode::Stable))
        .await
        .unwrap();
    let url = server.url();
    let (s, v) = w.call("GET", format!("{url}/healthz"), None, None).await;
    assert_eq!((s, v["status"].as_str()), (200, Some("ok")));
    w.login(&server, None).await;
    w.call(
        "GET",
        format!("{url}/v1/apps/{}/access_token", w.appid),
        Some(KEY),
        None,
    )
    .await;
    let (s, v) = w.call("GET", format!("{url}/readyz"), None, None).await;
    assert_eq!(s, 200, "{v}");

    let (s, metrics) = w.call("GET", format!("{url}/metrics"), None, None).await;
    assert_eq!(s, 200);
    let text = metrics.as_str().unwrap();
    assert!(
        text.contains(r#"weapp_http_requests_total{route="/v1/login",status="200"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            r#"weapp_logins_total{{appid="{}",outcome="ok"}} 1"#,
            w.appid
        )),
        "{text}"
    );
    // The one login went through the writer: one commit, one login written.
    assert!(text.contains("\nweapp_login_commits_total 1\n"), "{text}");
    assert!(text.contains("\nweapp_login_writes_total 1\n"), "{text}");
    assert!(
        text.contains(&format!(
            r#"weapp_token_refreshes_total{{appid="{}"}} 1"#,
            w.appid
        )),
        "{text}"
    );
    assert!(text.contains("weapp_token_age_seconds"), "{text}");

    let (s, doc) = w
        .call("GET", format!("{url}/openapi.json"), None, None)
        .await;
    assert_eq!(s, 200);
    for path in [
        "/v1/login",
        "/v1/me",
        "/v1/me/phone",
        "/v1/me/decrypt",
        "/v1/logout",
        "/v1/apps/{appid}/access_token",
        "/cgi-bin/token",
        "/healthz",
    ] {
        assert!(
            doc["paths"].get(path).is_some(),
            "{path} missing from openapi.json"
        );
    }

    redis.stop();
    // Readiness answers are reused for a second.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let (s, v) = w.call("GET", format!("{url}/readyz"), None, None).await;
    assert_eq!(s, 503, "{v}");
    assert_eq!(v["checks"]["redis"]["ok"], false);
    // What failed, never how (no error text, no address).
    assert_eq!(v["checks"]["redis"]["error"], "unavailable", "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_in_flight_requests() {
    let w = world().await;
    let server = weapp_server::spawn(w.config(&sqlite_url(), None, TokenMode::Stable))
        .await
        .unwrap();
    w.sim
        .sim()
        .add_fault(Fault::latency("/sns/jscode2session", 400).times(1));
    let (code, _) = w.sim.sim().login(&w.appid, None, None, false).unwrap();
    let url = format!("{}/v1/login", server.url());
    let http = w.http.clone();
    let appid = w.appid.clone();
    let in_flight = tokio::spawn(async move {
        http.post(url)
            .json(&json!({"appid": appid, "code": code}))
            .send()
            .await
            .map(|r| r.status().as_u16())
    });
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    server.shutdown().await.unwrap();
    assert_eq!(
        in_flight.await.unwrap().unwrap(),
        200,
        "the slow login completed during shutdown"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_over_its_deadline_gets_408() {
    let w = world().await;
    let mut config = w.config(&sqlite_url(), None, TokenMode::Stable);
    config.request_timeout_secs = 1;
    config.database_acquire_timeout_ms = 500;
    let server = weapp_server::spawn(config).await.unwrap();
    w.sim
        .sim()
        .add_fault(Fault::latency("/sns/jscode2session", 2500).times(1));
    let (code, _) = w.sim.sim().login(&w.appid, None, None, false).unwrap();
    let started = std::time::Instant::now();
    let (s, v) = w.post_login(server.url(), &w.appid, &code).await;
    assert_eq!(s, 408, "{v}");
    assert_eq!(v["error"]["code"], "timeout");
    assert!(
        started.elapsed() < std::time::Duration::from_millis(2000),
        "answered at the deadline, not after upstream"
    );
}
