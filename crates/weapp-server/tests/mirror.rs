//! The WeChat-compatible mirror (`/cgi-bin/token`, `/cgi-bin/stable_token`) against naive
//! clients: a client that only fetches its token there and fetches again on 40001 — as
//! wechatpy, WxJava and EasyWeChat do — recovers when the broker's token dies upstream, and no
//! number of such clients makes the broker refresh more than once per dead token.

mod common;

use common::{sqlite_url, world, World, KEY, OTHER_KEY};
use serde_json::{json, Value};
use weapp::TokenMode;
use weapp_server::config::ClientConfig;
use weapp_sim::tokens::ForeignFetch;
use weapp_sim::TokenKind;
use weapp_test_support::{PgDatabase, RedisServer};

/// A mirror fetch as a WeChat SDK makes it: `stable_token` for stable mode, `token` else.
async fn fetch(w: &World, base: &str, mode: TokenMode, secret: &str, force: bool) -> Value {
    let req = match mode {
        TokenMode::Stable => w
            .http
            .post(format!("{base}/cgi-bin/stable_token"))
            .json(&json!({"grant_type": "client_credential", "appid": w.appid, "secret": secret, "force_refresh": force})),
        _ => w.http.get(format!(
            "{base}/cgi-bin/token?grant_type=client_credential&appid={}&secret={secret}",
            w.appid
        )),
    };
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

/// One API call the way a naive WeChat SDK makes it: its cached token, and on 40001 a new
/// fetch and a retry, up to `limit` fetches. Returns (the call's answer, mirror fetches made).
async fn naive_call(
    w: &World,
    base: &str,
    mode: TokenMode,
    cached: Option<String>,
    limit: usize,
) -> (Value, usize) {
    let mut fetches = 0;
    let mut token = match cached {
        Some(t) => t,
        None => {
            fetches += 1;
            fetch(w, base, mode, &w.secret, false).await["access_token"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    loop {
        let answer = w.call_with_token(&token).await;
        let dead = matches!(answer["errcode"].as_i64(), Some(40001 | 40014 | 42001));
        if !dead || fetches >= limit {
            return (answer, fetches);
        }
        fetches += 1;
        token = fetch(w, base, mode, &w.secret, false).await["access_token"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
    }
}

/// Kills every token of `mode` the app's broker holds, as another machine with the secret
/// would: a stable `force_refresh` then WeChat's 5-minute grace, or two classic fetches.
fn kill_upstream(w: &World, mode: TokenMode) {
    let sim = w.sim.sim();
    match mode {
        TokenMode::Stable => {
            sim.foreign_fetch(&w.appid, ForeignFetch::StableForce)
                .unwrap();
        }
        _ => {
            sim.foreign_fetch(&w.appid, ForeignFetch::Classic).unwrap();
            sim.foreign_fetch(&w.appid, ForeignFetch::Classic).unwrap();
        }
    }
    sim.advance(301);
}

fn kind(mode: TokenMode) -> TokenKind {
    match mode {
        TokenMode::Stable => TokenKind::Stable,
        _ => TokenKind::Classic,
    }
}

async fn one_naive_client_recovers(mode: TokenMode) {
    let w = world().await;
    let server = weapp_server::spawn(w.config(&sqlite_url(), None, mode))
        .await
        .unwrap();
    let base = server.url();
    // A long-running client: it fetched once, and its calls work.
    let (answer, fetches) = naive_call(&w, base, mode, None, 50).await;
    assert_eq!(
        (answer["errcode"].as_i64(), fetches),
        (Some(0), 1),
        "{answer}"
    );
    let cached = fetch(&w, base, mode, &w.secret, false).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    kill_upstream(&w, mode);
    assert_eq!(w.call_with_token(&cached).await["errcode"], 40001);
    let issued = w.sim.sim().tokens_issued(&w.appid, kind(mode));
    let (answer, fetches) = naive_call(&w, base, mode, Some(cached), 50).await;
    assert_eq!(answer["errcode"], 0, "the call succeeds: {answer}");
    assert_eq!(fetches, 1, "recovered on its first refetch");
    assert!(w.sim.sim().tokens_issued(&w.appid, kind(mode)) - issued <= 1);
    let (_, metrics) = w.call("GET", format!("{base}/metrics"), None, None).await;
    let metrics = metrics.as_str().unwrap();
    assert!(
        metrics.contains(&format!(
            "weapp_token_probes_total{{appid=\"{}\",verdict=\"dead\"}} 1",
            w.appid
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            "weapp_token_invalidations_total{{appid=\"{}\",outcome=\"proven_dead\"}} 1",
            w.appid
        )),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_naive_client_recovers_from_a_foreign_force_refresh_on_its_first_refetch() {
    one_naive_client_recovers(TokenMode::Stable).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_naive_client_recovers_from_a_dead_classic_token_on_its_first_refetch() {
    one_naive_client_recovers(TokenMode::Classic).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_naive_clients_at_once_get_one_new_token() {
    let w = std::sync::Arc::new(world().await);
    let server = weapp_server::spawn(w.config(&sqlite_url(), None, TokenMode::Classic))
        .await
        .unwrap();
    let base = server.url().to_owned();
    let first = fetch(&w, &base, TokenMode::Classic, &w.secret, false).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    kill_upstream(&w, TokenMode::Classic);
    let issued = w.sim.sim().tokens_issued(&w.appid, TokenKind::Classic);
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let (w, base, first) = (w.clone(), base.clone(), first.clone());
            // Half of them held the dead token; half start now.
            tokio::spawn(async move {
                let cached = (i % 2 == 0).then_some(first);
                naive_call(&w, &base, TokenMode::Classic, cached, 50).await
            })
        })
        .collect();
    for t in tasks {
        let (answer, fetches) = t.await.unwrap();
        assert_eq!(answer["errcode"], 0, "{answer}");
        assert!(fetches <= 3, "{fetches} mirror fetches");
    }
    assert_eq!(
        w.sim.sim().tokens_issued(&w.appid, TokenKind::Classic) - issued,
        1,
        "one new token for twenty clients"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flood_of_refetches_cannot_refresh_a_live_token_nor_a_dead_one_twice() {
    let w = std::sync::Arc::new(world().await);
    let mut config = w.config(&sqlite_url(), None, TokenMode::Classic);
    // 300 connections from one address: this test is about the broker, not connection caps.
    config.max_connections_per_ip = 0;
    let server = weapp_server::spawn(config).await.unwrap();
    let base = server.url().to_owned();
    let flood = |n: usize| {
        let tasks: Vec<_> = (0..n)
            .map(|i| {
                let (w, base) = (w.clone(), base.clone());
                tokio::spawn(async move {
                    let secret = if i % 2 == 0 {
                        w.secret.clone()
                    } else {
                        KEY.into()
                    };
                    fetch(&w, &base, TokenMode::Classic, &secret, false).await["access_token"]
                        .as_str()
                        .unwrap()
                        .to_owned()
                })
            })
            .collect();
        async move {
            let mut out = Vec::new();
            for t in tasks {
                out.push(t.await.unwrap());
            }
            out
        }
    };
    let first = flood(1).await.remove(0);
    let issued = || w.sim.sim().tokens_issued(&w.appid, TokenKind::Classic);
    let probes = || w.sim.sim().calls("/cgi-bin/openapi/quota/get");
    let (issued_before, probes_before) = (issued(), probes());
    let started = std::time::Instant::now();
    // 300 refetches of a live token: all answered with it, no refresh, few probes.
    let tokens = flood(300).await;
    assert!(tokens.iter().all(|t| *t == first));
    assert_eq!(issued(), issued_before, "a live token is never refreshed");
    let allowed = 2 + started.elapsed().as_secs();
    assert!(
        probes() - probes_before <= allowed,
        "{} probes in {:?}",
        probes() - probes_before,
        started.elapsed()
    );
    // The token dies: 300 refetches, one new token, and the dead one is never handed out.
    kill_upstream(&w, TokenMode::Classic);
    let issued_before = issued();
    let tokens = flood(300).await;
    assert_eq!(issued() - issued_before, 1, "one refresh per dead token");
    assert!(tokens.iter().all(|t| *t == tokens[0] && *t != first));
    assert_eq!(w.call_with_token(&tokens[0]).await["errcode"], 0);
    for _ in 0..5 {
        let again = fetch(&w, &base, TokenMode::Classic, &w.secret, false).await;
        assert_eq!(again["access_token"], tokens[0].as_str());
    }
    assert_eq!(issued() - issued_before, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_refresh_on_the_mirror_replaces_only_a_dead_token() {
    let w = world().await;
    let server = weapp_server::spawn(w.config(&sqlite_url(), None, TokenMode::Stable))
        .await
        .unwrap();
    let base = server.url();
    let first = fetch(&w, base, TokenMode::Stable, &w.secret, false).await;
    // This app's stable tokens (the other app of the world warms its own meanwhile).
    let forced = || w.sim.sim().tokens_issued(&w.appid, TokenKind::Stable);
    let before = forced();
    for _ in 0..10 {
        let v = fetch(&w, base, TokenMode::Stable, &w.secret, true).await;
        assert_eq!(v["access_token"], first["access_token"], "{v}");
    }
    assert_eq!(forced(), before, "force_refresh never forces a new token");
    kill_upstream(&w, TokenMode::Stable);
    let v = fetch(&w, base, TokenMode::Stable, &w.secret, true).await;
    assert_ne!(v["access_token"], first["access_token"]);
    assert_eq!(
        w.call_with_token(v["access_token"].as_str().unwrap()).await["errcode"],
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_key_stands_in_for_the_secret_within_its_scope() {
    let w = world().await;
    let mut config = w.config(&sqlite_url(), None, TokenMode::Stable);
    let reporter = "reporter-key-0123456789ab";
    config.clients.push(ClientConfig {
        name: "reporter".into(),
        key: Some(reporter.into()),
        key_env: None,
        key_sha256: None,
        apps: vec![w.appid.clone()],
        scopes: Some(vec!["token:invalidate".into()]),
    });
    let server = weapp_server::spawn(config).await.unwrap();
    let base = server.url();
    let with_secret = fetch(&w, base, TokenMode::Stable, &w.secret, false).await;
    let with_key = fetch(&w, base, TokenMode::Stable, KEY, false).await;
    assert_eq!(with_key["access_token"], with_secret["access_token"]);
    assert!(with_key["expires_in"].as_i64().unwrap() > 0);
    // GET /cgi-bin/token takes it too.
    let classic = fetch(&w, base, TokenMode::Classic, KEY, false).await;
    assert_eq!(classic["access_token"], with_secret["access_token"]);
    // A key for another app, or without token:read: refused, and no token in the answer.
    for key in [OTHER_KEY, reporter] {
        let v = fetch(&w, base, TokenMode::Stable, key, false).await;
        assert_eq!(v["errcode"], 48001, "{v}");
        assert!(v.get("access_token").is_none());
    }
    let v = fetch(&w, base, TokenMode::Stable, "no-such-key-0123456789", false).await;
    assert_eq!(v["errcode"], 40125, "{v}");
    let (_, metrics) = w.call("GET", format!("{base}/metrics"), None, None).await;
    assert!(
        metrics
            .as_str()
            .unwrap()
            .contains("weapp_auth_failures_total{surface=\"mirror\"} 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttled_report_says_when_to_retry_and_a_dead_token_is_replaced_anyway() {
    let w = world().await;
    let mut config = w.config(&sqlite_url(), None, TokenMode::Classic);
    config.invalidate_min_interval_secs = 3600;
    let server = weapp_server::spawn(config).await.unwrap();
    let base = server.url();
    let report = |token: String| {
        w.call_full(
            "POST",
            format!("{base}/v1/apps/{}/access_token/invalidate", w.appid),
            Some(KEY),
            Some(json!({"access_token": token}).to_string()),
        )
    };
    let (_, t) = w
        .call(
            "GET",
            format!("{base}/v1/apps/{}/access_token", w.appid),
            Some(KEY),
            None,
        )
        .await;
    let (s, h, v) = report(t["access_token"].as_str().unwrap().to_owned()).await;
    assert_eq!((s, v["refreshed"].as_bool()), (200, Some(true)), "{v}");
    assert!(h.get("retry-after").is_none());
    // The new token works: a report of it within the interval is not acted on.
    let second = v["access_token"].as_str().unwrap().to_owned();
    let (s, h, v) = report(second.clone()).await;
    assert_eq!((s, v["refreshed"].as_bool()), (200, Some(false)), "{v}");
    let retry: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((3500..=3600).contains(&retry), "Retry-After: {retry}");
    assert_eq!(v["access_token"], second.as_str());
    // Now it dies upstream: the interval does not keep it alive.
    kill_upstream(&w, TokenMode::Classic);
    let issued = w.sim.sim().tokens_issued(&w.appid, TokenKind::Classic);
    let (s, h, v) = report(second.clone()).await;
    assert_eq!((s, v["refreshed"].as_bool()), (200, Some(true)), "{v}");
    assert!(h.get("retry-after").is_none());
    let third = v["access_token"].as_str().unwrap();
    assert_ne!(third, second);
    assert_eq!(w.call_with_token(third).await["errcode"], 0);
    assert_eq!(
        w.sim.sim().tokens_issued(&w.appid, TokenKind::Classic) - issued,
        1
    );
    // The dead token is not handed out again, by the broker or the mirror.
    let (_, t) = w
        .call(
            "GET",
            format!("{base}/v1/apps/{}/access_token", w.appid),
            Some(KEY),
            None,
        )
        .await;
    assert_eq!(t["access_token"], third);
    let m = fetch(&w, base, TokenMode::Classic, &w.secret, false).await;
    assert_eq!(m["access_token"], third);
}

/// Two instances sharing Redis and PostgreSQL: naive clients refetching from both prove the
/// token dead on both, and WeChat still issues one new token.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fleet_replaces_a_dead_token_once() {
    let db = PgDatabase::create().await;
    let redis = RedisServer::start();
    let w = std::sync::Arc::new(world().await);
    let config = w.config(db.url(), Some(redis.url()), TokenMode::Classic);
    let a = weapp_server::spawn(config.clone()).await.unwrap();
    let b = weapp_server::spawn(config).await.unwrap();
    let urls = [a.url().to_owned(), b.url().to_owned()];
    let first = fetch(&w, &urls[0], TokenMode::Classic, &w.secret, false).await;
    let first = first["access_token"].as_str().unwrap().to_owned();
    assert_eq!(
        fetch(&w, &urls[1], TokenMode::Classic, &w.secret, false).await["access_token"],
        first.as_str()
    );
    kill_upstream(&w, TokenMode::Classic);
    let issued = w.sim.sim().tokens_issued(&w.appid, TokenKind::Classic);
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let (w, base, first) = (w.clone(), urls[i % 2].clone(), first.clone());
            tokio::spawn(
                async move { naive_call(&w, &base, TokenMode::Classic, Some(first), 50).await },
            )
        })
        .collect();
    for t in tasks {
        let (answer, fetches) = t.await.unwrap();
        assert_eq!(answer["errcode"], 0, "{answer}");
        assert!(fetches <= 3, "{fetches} mirror fetches");
    }
    assert_eq!(
        w.sim.sim().tokens_issued(&w.appid, TokenKind::Classic) - issued,
        1
    );
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

const PROBE: &str = "/cgi-bin/openapi/quota/get";

/// Review finding: a suspicion dropped the instance's copy and re-read a store that was down,
/// which fetched a new token (retiring the live one) or answered -1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refetch_while_redis_is_down_keeps_the_live_token() {
    let db = PgDatabase::create().await;
    let mut redis = RedisServer::start();
    let w = world().await;
    let server = weapp_server::spawn(w.config(db.url(), Some(redis.url()), TokenMode::Classic))
        .await
        .unwrap();
    let base = server.url();
    let first = fetch(&w, base, TokenMode::Classic, &w.secret, false).await;
    let issued = w.sim.sim().tokens_issued(&w.appid, TokenKind::Classic);
    redis.stop();
    for _ in 0..3 {
        let again = fetch(&w, base, TokenMode::Classic, &w.secret, false).await;
        assert_eq!(again["access_token"], first["access_token"], "{again}");
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    }
    assert_eq!(
        w.sim.sim().tokens_issued(&w.appid, TokenKind::Classic),
        issued,
        "a live token is not refreshed because the store is down"
    );
}

/// Review finding: one slow probe stalled every refetch of the app past the request deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_probe_costs_a_refetch_a_few_seconds_not_the_request() {
    let w = std::sync::Arc::new(world().await);
    let server = weapp_server::spawn(w.config(&sqlite_url(), None, TokenMode::Stable))
        .await
        .unwrap();
    let base = server.url().to_owned();
    let first = fetch(&w, &base, TokenMode::Stable, &w.secret, false).await;
    w.sim
        .sim()
        .add_fault(weapp_sim::Fault::latency(PROBE, 12_000));
    let started = std::time::Instant::now();
    let tasks: Vec<_> = (0..5)
        .map(|_| {
            let (w, base) = (w.clone(), base.clone());
            tokio::spawn(async move { fetch(&w, &base, TokenMode::Stable, &w.secret, false).await })
        })
        .collect();
    for t in tasks {
        let v = t.await.unwrap();
        assert_eq!(v["access_token"], first["access_token"], "{v}");
    }
    let took = started.elapsed();
    assert!(took < std::time::Duration::from_secs(10), "{took:?}");
    w.sim.sim().clear_faults();
}

/// Review findings: a single 40001 from a flaky probe replaced a live token, and a remembered
/// "dead" verdict hid the token's real death later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_40001_from_the_probe_costs_nothing_and_a_later_death_is_still_caught() {
    let w = world().await;
    let server = weapp_server::spawn(w.config(&sqlite_url(), None, TokenMode::Stable))
        .await
        .unwrap();
    let base = server.url();
    let first = fetch(&w, base, TokenMode::Stable, &w.secret, false).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    w.sim
        .sim()
        .add_fault(weapp_sim::Fault::errcode(PROBE, 40001).times(1));
    let again = fetch(&w, base, TokenMode::Stable, &w.secret, false).await;
    assert_eq!(again["access_token"], first.as_str());
    let (_, metrics) = w.call("GET", format!("{base}/metrics"), None, None).await;
    let metrics = metrics.as_str().unwrap();
    assert!(
        !metrics.contains("outcome=\"proven_dead\""),
        "a lone 40001 is not proof: {metrics}"
    );
    assert!(
        metrics.contains(&format!(
            "weapp_token_probes_total{{appid=\"{}\",verdict=\"alive\"}} 1",
            w.appid
        )),
        "the second probe's verdict stands: {metrics}"
    );
    kill_upstream(&w, TokenMode::Stable);
    let (answer, fetches) = naive_call(&w, base, TokenMode::Stable, Some(first), 50).await;
    assert_eq!(answer["errcode"], 0, "{answer}");
    assert_eq!(fetches, 1);
}

/// Review finding: a refetch that a load balancer sent to another instance was not
/// recognised there.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refetch_at_another_instance_is_recognised_through_redis() {
    let db = PgDatabase::create().await;
    let redis = RedisServer::start();
    let w = world().await;
    let config = w.config(db.url(), Some(redis.url()), TokenMode::Classic);
    let a = weapp_server::spawn(config.clone()).await.unwrap();
    let b = weapp_server::spawn(config.clone()).await.unwrap();
    let c = weapp_server::spawn(config).await.unwrap();
    let first = fetch(&w, a.url(), TokenMode::Classic, &w.secret, false).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    // B and C serve it from their own copies.
    for s in [&b, &c] {
        assert_eq!(
            fetch(&w, s.url(), TokenMode::Classic, KEY, false).await["access_token"],
            first.as_str()
        );
    }
    kill_upstream(&w, TokenMode::Classic);
    let issued = w.sim.sim().tokens_issued(&w.appid, TokenKind::Classic);
    // The client's refetch lands on B: recognised, proven dead, replaced.
    assert_eq!(w.call_with_token(&first).await["errcode"], 40001);
    let fresh = fetch(&w, b.url(), TokenMode::Classic, &w.secret, false).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(fresh, first);
    assert_eq!(w.call_with_token(&fresh).await["errcode"], 0);
    // C still holds the dead token in its copy: a refetch there reads the store.
    let at_c = fetch(&w, c.url(), TokenMode::Classic, &w.secret, false).await;
    assert_eq!(at_c["access_token"], fresh.as_str(), "{at_c}");
    assert_eq!(
        w.sim.sim().tokens_issued(&w.appid, TokenKind::Classic) - issued,
        1
    );
}

/// Review finding: an answer that is not WeChat's (a proxy's page, `{}`) read as "alive".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probe_answer_that_is_not_wechats_proves_nothing() {
    let w = world().await;
    let client = weapp::Client::builder(&w.appid, weapp::AppSecret::new(w.secret.clone()))
        .base_url(w.sim.url())
        .build()
        .unwrap();
    let token = client.access_token().await.unwrap();
    assert_eq!(
        client.check_token(&token).await.unwrap(),
        weapp::TokenCheck::Alive
    );
    for fault in [
        weapp_sim::Fault::body(PROBE, "{}"),
        weapp_sim::Fault::body(PROBE, r#"{"errcode":"40001"}"#),
        weapp_sim::Fault::http_status(PROBE, 502),
        weapp_sim::Fault::errcode(PROBE, -1),
        weapp_sim::Fault::errcode(PROBE, 45009),
    ] {
        let id = w.sim.sim().add_fault(fault.clone());
        assert!(client.check_token(&token).await.is_err(), "{fault:?}");
        w.sim.sim().remove_fault(id);
    }
    w.sim
        .sim()
        .add_fault(weapp_sim::Fault::errcode(PROBE, 48001).times(1));
    assert_eq!(
        client.check_token(&token).await.unwrap(),
        weapp::TokenCheck::Alive,
        "another errcode: the token was accepted"
    );
    let dead = weapp::AccessToken::new("not-a-token".to_owned());
    assert!(matches!(
        client.check_token(&dead).await.unwrap(),
        weapp::TokenCheck::Dead(_)
    ));
}
