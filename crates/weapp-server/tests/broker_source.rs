//! The SDK's `BrokerTokenSource` against a real broker and the simulator: Rust clients on it
//! and the broker under load agree on one token (one upstream issue), a token WeChat rejects
//! is replaced once through the broker's compare-and-swap, and a wrong key or a missing scope
//! is a typed error that never shows the key.

mod common;

use std::sync::Arc;

use common::{sqlite_url, world, World, KEY, OTHER_KEY};
use weapp::token::BrokerTokenSource;
use weapp::{AccessToken, BrokerClientKey, Client, Error, TokenMode, TokenSource};
use weapp_server::config::ClientConfig;
use weapp_sim::tokens::ForeignFetch;
use weapp_sim::TokenKind;

/// A key that may only read tokens (no `token:invalidate`).
const READ_ONLY_KEY: &str = "read-only-key-0123456789abcdef";

async fn server(w: &World, mode: TokenMode) -> weapp_server::ServerHandle {
    let mut config = w.config(&sqlite_url(), None, mode);
    config.clients.push(ClientConfig {
        name: "reader".into(),
        key: Some(READ_ONLY_KEY.into()),
        key_env: None,
        key_sha256: None,
        apps: vec![w.appid.clone()],
        scopes: Some(vec!["token:read".into()]),
    });
    config.auth_failure_limit_per_minute = 0;
    weapp_server::spawn(config).await.unwrap()
}

/// The broker's current token, read directly.
async fn broker_token(w: &World, base: &str) -> String {
    let (s, v) = w
        .call(
            "GET",
            format!("{base}/v1/apps/{}/access_token", w.appid),
            Some(KEY),
            None,
        )
        .await;
    assert_eq!(s, 200, "{v}");
    v["access_token"].as_str().unwrap().to_owned()
}

/// Successful broker token reads so far, from the server's own metrics.
async fn broker_reads(w: &World, base: &str) -> u64 {
    let (_, m) = w.call("GET", format!("{base}/metrics"), None, None).await;
    let m = m.as_str().unwrap().to_owned();
    m.lines()
        .find(|l| {
            l.starts_with(
                r#"weapp_http_requests_total{route="/v1/apps/{appid}/access_token",status="200"}"#,
            )
        })
        .map_or(0, |l| l.rsplit(' ').next().unwrap().parse().unwrap())
}

/// Broker token reads answered `status` so far, from the server's own metrics.
async fn status_count(w: &World, base: &str, status: &str) -> u64 {
    let (_, m) = w.call("GET", format!("{base}/metrics"), None, None).await;
    let m = m.as_str().unwrap().to_owned();
    let prefix = format!(
        r#"weapp_http_requests_total{{route="/v1/apps/{{appid}}/access_token",status="{status}"}}"#
    );
    m.lines()
        .find(|l| l.starts_with(&prefix))
        .map_or(0, |l| l.rsplit(' ').next().unwrap().parse().unwrap())
}

/// Two foreign classic fetches and the 300 s grace period: the broker's classic token dies.
fn kill_upstream(w: &World) {
    let sim = w.sim.sim();
    sim.foreign_fetch(&w.appid, ForeignFetch::Classic).unwrap();
    sim.foreign_fetch(&w.appid, ForeignFetch::Classic).unwrap();
    sim.advance(301);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_rust_clients_and_direct_reads_under_load_agree_on_one_token() {
    let w = Arc::new(world().await);
    let server = server(&w, TokenMode::Stable).await;
    let base = server.url().to_owned();

    // 8 independent sources (8 "processes"), 25 concurrent callers each, plus 50 direct
    // broker reads at the same time.
    let sources: Vec<BrokerTokenSource> = (0..8)
        .map(|_| BrokerTokenSource::new(&base, BrokerClientKey::new(KEY), &w.appid).unwrap())
        .collect();
    let mut tasks = Vec::new();
    for source in &sources {
        for _ in 0..25 {
            let source = source.clone();
            tasks.push(tokio::spawn(async move {
                source.token().await.unwrap().expose().to_owned()
            }));
        }
    }
    for _ in 0..50 {
        let w = w.clone();
        let base = base.clone();
        tasks.push(tokio::spawn(async move { broker_token(&w, &base).await }));
    }
    let mut tokens = Vec::new();
    for t in tasks {
        tokens.push(t.await.unwrap());
    }
    tokens.dedup();
    assert_eq!(tokens.len(), 1, "the clients and the broker disagree");
    assert_eq!(w.call_with_token(&tokens[0]).await["errcode"], 0);
    // One upstream issue in all (the broker may already have warmed it at start).
    assert_eq!(
        w.sim.sim().tokens_issued(&w.appid, TokenKind::Stable),
        1,
        "one upstream issue"
    );

    // Single flight and the local copy: each source asked the broker once for its 25 callers,
    // and asking again costs no broker request.
    let reads = broker_reads(&w, &base).await;
    assert_eq!(
        reads,
        8 + 50,
        "one broker read per source, plus the direct ones"
    );
    for source in &sources {
        assert_eq!(source.token().await.unwrap().expose(), tokens[0]);
    }
    assert_eq!(broker_reads(&w, &base).await, reads);

    // A client built in one line agrees too.
    let client = Client::builder(&w.appid, "")
        .base_url(w.sim.url())
        .broker(&base, BrokerClientKey::new(KEY))
        .build()
        .unwrap();
    assert_eq!(client.access_token().await.unwrap().expose(), tokens[0]);
    assert!(client.token_manager().is_none());
    client.subscribe().categories().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_token_is_replaced_once_through_the_broker_and_an_old_report_changes_nothing() {
    let w = world().await;
    let server = server(&w, TokenMode::Classic).await;
    let base = server.url().to_owned();
    let source =
        Arc::new(BrokerTokenSource::new(&base, BrokerClientKey::new(KEY), &w.appid).unwrap());
    let client = Client::builder(&w.appid, "")
        .base_url(w.sim.url())
        .token_source(source.clone())
        .build()
        .unwrap();
    client.subscribe().categories().await.unwrap();
    let first = source.token().await.unwrap();
    assert_eq!(first.expose(), broker_token(&w, &base).await);

    // WeChat kills the token behind everyone's back (two foreign classic fetches, and the
    // grace period passes).
    kill_upstream(&w);
    assert_ne!(w.call_with_token(first.expose()).await["errcode"], 0);
    let issued = w.sim.sim().tokens_issued(&w.appid, TokenKind::Classic);

    // The client's call gets 40001, reports the token to the broker, and succeeds on retry.
    client.subscribe().categories().await.unwrap();
    assert_eq!(
        w.sim.sim().tokens_issued(&w.appid, TokenKind::Classic) - issued,
        1,
        "exactly one refresh at the broker"
    );
    let second = source.token().await.unwrap();
    assert_ne!(second.expose(), first.expose());
    assert_eq!(second.expose(), broker_token(&w, &base).await);
    assert_eq!(w.call_with_token(second.expose()).await["errcode"], 0);

    // A late report of the old token (another caller that still held it) drops nothing:
    // neither the broker's token nor this source's copy, and nothing is fetched.
    let reads = broker_reads(&w, &base).await;
    source.invalidate(&first).await.unwrap();
    assert_eq!(source.token().await.unwrap().expose(), second.expose());
    assert_eq!(
        broker_reads(&w, &base).await,
        reads,
        "the local copy was kept"
    );
    assert_eq!(broker_token(&w, &base).await, second.expose());
    assert_eq!(
        w.sim.sim().tokens_issued(&w.appid, TokenKind::Classic) - issued,
        1
    );
    // Reporting the current token drops this source's copy; the broker answers the new one,
    // which the source keeps.
    kill_upstream(&w);
    source.invalidate(&second).await.unwrap();
    let third = source.token().await.unwrap();
    assert_ne!(third.expose(), second.expose());
    assert_eq!(third.expose(), broker_token(&w, &base).await);
    assert_eq!(w.call_with_token(third.expose()).await["errcode"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_key_or_a_missing_scope_is_a_typed_error_without_the_key() {
    let w = world().await;
    let server = server(&w, TokenMode::Stable).await;
    let base = server.url().to_owned();
    let wrong = "wrong-key-that-must-not-leak-0123456789";
    let source = BrokerTokenSource::new(&base, BrokerClientKey::new(wrong), &w.appid).unwrap();
    let shown = format!("{source:?}");
    assert!(!shown.contains(wrong), "{shown}");
    assert!(shown.contains("BrokerClientKey(***)"), "{shown}");

    let err = source.token().await.unwrap_err();
    assert!(
        matches!(&err, Error::Broker { status: 401, code, .. } if code == "unauthorized"),
        "{err:?}"
    );
    for text in [err.to_string(), format!("{err:?}")] {
        assert!(!text.contains(wrong), "{text}");
    }
    assert!(!err.is_token_invalid());

    // A key of another app: forbidden.
    let other = BrokerTokenSource::new(&base, BrokerClientKey::new(OTHER_KEY), &w.appid).unwrap();
    let err = other.token().await.unwrap_err();
    assert!(matches!(&err, Error::Broker { status: 403, .. }), "{err:?}");
    for text in [err.to_string(), format!("{err:?}")] {
        assert!(!text.contains(OTHER_KEY), "{text}");
    }

    // A key without `token:invalidate`: reading works, reporting is forbidden, and the
    // token appears in no error.
    let reader =
        BrokerTokenSource::new(&base, BrokerClientKey::new(READ_ONLY_KEY), &w.appid).unwrap();
    let token = reader.token().await.unwrap();
    let err = reader.invalidate(&token).await.unwrap_err();
    assert!(
        matches!(&err, Error::Broker { status: 403, code, message, .. }
            if code == "forbidden" && message.contains("token:invalidate")),
        "{err:?}"
    );
    for text in [err.to_string(), format!("{err:?}")] {
        assert!(!text.contains(READ_ONLY_KEY), "{text}");
        assert!(!text.contains(token.expose()), "{text}");
    }
    // The broker's token is still the one it had.
    assert_eq!(broker_token(&w, &base).await, token.expose());
    let _: AccessToken = token;

    // Nothing listening: a transport error, bounded, without the key.
    let port = weapp_test_support::free_port();
    let gone = BrokerTokenSource::new(
        format!("http://127.0.0.1:{port}"),
        BrokerClientKey::new(KEY),
        &w.appid,
    )
    .unwrap();
    let err = gone.token().await.unwrap_err();
    assert!(matches!(&err, Error::Transport { .. }), "{err:?}");
    assert!(!format!("{err:?}{err}").contains(KEY));

    // Arguments are checked before anything is sent.
    assert!(matches!(
        BrokerTokenSource::new("not a url", BrokerClientKey::new(KEY), &w.appid),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        BrokerTokenSource::new(&base, BrokerClientKey::new(KEY), "wx/../x"),
        Err(Error::InvalidArgument(_))
    ));
    // A query, a fragment or credentials in the base URL would send the request elsewhere
    // (or with a second Authorization header): refused, and the password is not repeated.
    for url in [
        format!("{base}/?x=1"),
        format!("{base}/#f"),
        base.replace("http://", "http://user:pa55word@"),
    ] {
        let err = BrokerTokenSource::new(&url, BrokerClientKey::new(KEY), &w.appid).unwrap_err();
        assert!(matches!(&err, Error::InvalidArgument(_)), "{err:?}");
        assert!(!err.to_string().contains("pa55word"), "{err}");
    }
    // A refusal is answered from memory for a moment: a misconfigured key does not send a
    // request (and count a failed authentication at the broker) per call.
    let refused = BrokerTokenSource::new(&base, BrokerClientKey::new(wrong), &w.appid).unwrap();
    let before = status_count(&w, &base, "401").await;
    for _ in 0..50 {
        let err = refused.token().await.unwrap_err();
        assert!(matches!(&err, Error::Broker { status: 401, .. }), "{err:?}");
    }
    let sent = status_count(&w, &base, "401").await - before;
    assert!(sent < 5, "{sent} refused requests sent for 50 calls");
}
