//! Three instances behind one (imaginary) load balancer, sharing PostgreSQL and Redis.

mod common;

use common::{world, KEY};
use serde_json::json;
use weapp::TokenMode;
use weapp_sim::TokenKind;
use weapp_test_support::{PgDatabase, RedisServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_instances_share_sessions_and_fetch_one_token() {
    let db = PgDatabase::create().await;
    let redis = RedisServer::start();
    let w = world().await;
    let config = w.config(db.url(), Some(redis.url()), TokenMode::Classic);
    let mut servers = Vec::new();
    for _ in 0..3 {
        servers.push(weapp_server::spawn(config.clone()).await.unwrap());
    }
    let urls: Vec<String> = servers.iter().map(|s| s.url().to_owned()).collect();

    // A session created on one instance works on every other.
    let (token, openid) = w.login(&servers[0], None).await;
    for url in &urls {
        let (s, me) = w
            .call("GET", format!("{url}/v1/me"), Some(&token), None)
            .await;
        assert_eq!(
            (s, me["openid"].as_str()),
            (200, Some(openid.as_str())),
            "{url}"
        );
    }

    // 300 concurrent token requests spread over the fleet: one upstream fetch.
    let tasks: Vec<_> = (0..300)
        .map(|i| {
            let url = format!("{}/v1/apps/{}/access_token", urls[i % 3], w.appid);
            let http = w.http.clone();
            tokio::spawn(async move {
                let v: serde_json::Value = http
                    .get(url)
                    .bearer_auth(KEY)
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                v["access_token"].as_str().unwrap().to_owned()
            })
        })
        .collect();
    let mut tokens = Vec::new();
    for t in tasks {
        tokens.push(t.await.unwrap());
    }
    assert!(
        tokens.iter().all(|t| *t == tokens[0]),
        "the whole fleet serves one token"
    );
    assert_eq!(w.sim.sim().tokens_issued(&w.appid, TokenKind::Classic), 1);

    // An invalidate storm with that token, spread over the fleet: exactly one refresh.
    let stale = tokens[0].clone();
    let tasks: Vec<_> = (0..90)
        .map(|i| {
            let url = format!(
                "{}/v1/apps/{}/access_token/invalidate",
                urls[i % 3],
                w.appid
            );
            let (http, stale) = (w.http.clone(), stale.clone());
            tokio::spawn(async move {
                let r = http
                    .post(url)
                    .bearer_auth(KEY)
                    .json(&json!({"access_token": stale}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
                let v: serde_json::Value = r.json().await.unwrap();
                (
                    v["access_token"].as_str().unwrap().to_owned(),
                    v["refreshed"].as_bool().unwrap(),
                )
            })
        })
        .collect();
    let mut fresh = Vec::new();
    for t in tasks {
        fresh.push(t.await.unwrap());
    }
    assert_eq!(
        w.sim.sim().tokens_issued(&w.appid, TokenKind::Classic),
        2,
        "one refresh for the whole storm"
    );
    assert!(fresh
        .iter()
        .all(|(t, refreshed)| *t == fresh[0].0 && *t != stale && *refreshed));

    // A later report of the same stale token changes nothing.
    let (s, v) = w
        .call(
            "POST",
            format!("{}/v1/apps/{}/access_token/invalidate", urls[1], w.appid),
            Some(KEY),
            Some(json!({"access_token": stale})),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(v["access_token"], fresh[0].0.as_str());
    assert_eq!(w.sim.sim().tokens_issued(&w.appid, TokenKind::Classic), 2);

    for s in servers {
        s.shutdown().await.unwrap();
    }
}
