//! The admin API and the registry: apps and clients created at runtime reach every instance
//! within two seconds; disabled apps stop being served and refreshed; deleted ones go; file
//! apps are read-only; only admin keys get in; every change is audited — in the transaction
//! of the change: no change without its audit row.

mod common;

use std::time::Duration;

use common::{within, world, KEY};
use serde_json::{json, Value};
use weapp::TokenMode;
use weapp_server::config::AdminConfig;
use weapp_test_support::{PgDatabase, RedisServer};

const ADMIN: &str = "admin-key-0123456789abcdefghijkl";

fn admins() -> Vec<AdminConfig> {
    vec![AdminConfig {
        name: "ops".into(),
        key: Some(ADMIN.into()),
        key_env: None,
        key_sha256: None,
    }]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_changes_reach_every_instance_within_two_seconds() {
    let w = world().await;
    let db = PgDatabase::create().await;
    let redis = RedisServer::start();
    let mut config = w.config(db.url(), Some(redis.url()), TokenMode::Stable);
    config.admins = admins();
    let a = weapp_server::spawn(config.clone()).await.unwrap();
    let b = weapp_server::spawn(config).await.unwrap();
    let (a_url, b_url) = (a.url().to_owned(), b.url().to_owned());

    // An app registered on A, a client for it created on A…
    let (appid, secret) = w.sim.sim().add_app(None, None, false);
    let (s, v) = w
        .call(
            "POST",
            format!("{a_url}/v1/admin/apps"),
            Some(ADMIN),
            Some(json!({"appid": appid, "secret": secret, "api_base": w.sim.url(), "token_mode": "classic"})),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["source"], "managed");
    assert_eq!(v["enabled"], true);
    assert!(!v.to_string().contains(&secret));
    let (s, v) = w
        .call(
            "POST",
            format!("{a_url}/v1/admin/clients"),
            Some(ADMIN),
            Some(json!({"name": "shop", "apps": [appid]})),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let key = v["key"].as_str().unwrap().to_owned();
    assert!(key.starts_with("wck_"));
    // …is served by B within two seconds.
    let token_on = |base: String| {
        let w = &w;
        let key = key.clone();
        let appid = appid.clone();
        async move {
            w.call(
                "GET",
                format!("{base}/v1/apps/{appid}/access_token"),
                Some(&key),
                None,
            )
            .await
        }
    };
    // (Polled through the admin API: a broker key B does not know yet counts as a failed
    // authentication of this source.)
    let took = within(
        Duration::from_secs(2),
        "B knows the new app and client",
        || {
            let w = &w;
            let (app, clients) = (
                format!("{b_url}/v1/admin/apps/{appid}"),
                format!("{b_url}/v1/admin/clients"),
            );
            async move {
                w.call("GET", app, Some(ADMIN), None).await.0 == 200
                    && w.call("GET", clients, Some(ADMIN), None).await.1["clients"]
                        .as_array()
                        .is_some_and(|c| c.iter().any(|c| c["name"] == "shop"))
            }
        },
    )
    .await;
    println!("runtime app and client on the other instance after {took:?}");
    let (s, v) = token_on(b_url.clone()).await;
    assert_eq!(s, 200, "{v}");
    // The key is shown once: listing clients never shows it.
    let (_, list) = w
        .call(
            "GET",
            format!("{b_url}/v1/admin/clients"),
            Some(ADMIN),
            None,
        )
        .await;
    assert!(!list.to_string().contains(&key));
    assert!(list["clients"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["name"] == "shop" && c["source"] == "managed"));

    // Disabled on B: A answers 404 within two seconds.
    let (s, v) = w
        .call(
            "PATCH",
            format!("{b_url}/v1/admin/apps/{appid}"),
            Some(ADMIN),
            Some(json!({"enabled": false})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["enabled"], false);
    within(
        Duration::from_secs(2),
        "A stops serving the disabled app",
        || {
            let f = token_on(a_url.clone());
            async move { f.await.0 == 404 }
        },
    )
    .await;
    // Enabled again, then the client's key rotated: the old key stops working everywhere.
    let (s, _) = w
        .call(
            "PATCH",
            format!("{b_url}/v1/admin/apps/{appid}"),
            Some(ADMIN),
            Some(json!({"enabled": true})),
        )
        .await;
    assert_eq!(s, 200);
    within(Duration::from_secs(2), "A serves it again", || {
        let f = token_on(a_url.clone());
        async move { f.await.0 == 200 }
    })
    .await;
    let (s, v) = w
        .call(
            "PATCH",
            format!("{a_url}/v1/admin/clients/shop"),
            Some(ADMIN),
            Some(json!({"rotate_key": true})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let new_key = v["key"].as_str().unwrap().to_owned();
    assert_ne!(new_key, key);
    within(Duration::from_secs(2), "B refuses the old key", || {
        let f = token_on(b_url.clone());
        async move { f.await.0 == 401 }
    })
    .await;
    // Deleted: gone from both.
    let (s, _) = w
        .call(
            "DELETE",
            format!("{a_url}/v1/admin/apps/{appid}"),
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(s, 204);
    within(Duration::from_secs(2), "B forgets the deleted app", || {
        let w = &w;
        let url = format!("{b_url}/v1/admin/apps/{appid}");
        async move {
            let (s, v) = w.call("GET", url.clone(), Some(ADMIN), None).await;
            assert_ne!(s, 429, "{v}");
            s == 404
        }
    })
    .await;
    // Its events are gone from the admin API too (404, not an empty page), as are an unknown
    // app's.
    for id in [appid.as_str(), "wxneverregistered"] {
        let (s, v) = w
            .call(
                "GET",
                format!("{a_url}/v1/admin/apps/{id}/events"),
                Some(ADMIN),
                None,
            )
            .await;
        assert_eq!(s, 404, "{id}: {v}");
        let (s, v) = w
            .call(
                "POST",
                format!("{a_url}/v1/admin/apps/{id}/events/1/redeliver"),
                Some(ADMIN),
                None,
            )
            .await;
        assert_eq!(s, 404, "{id}: {v}");
    }
    // Every change is in the audit log, with the admin's name and no secret.
    let (s, v) = w
        .call("GET", format!("{a_url}/v1/admin/audit"), Some(ADMIN), None)
        .await;
    assert_eq!(s, 200);
    let actions: Vec<&str> = v["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "app.create",
            "client.create",
            "app.update",
            "app.update",
            "client.update",
            "app.delete"
        ]
    );
    assert!(v["records"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["admin"] == "ops"));
    assert!(!v.to_string().contains(&secret));
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test]
async fn file_apps_are_read_only_and_input_is_checked() {
    let w = world().await;
    let mut config = w.config(&common::sqlite_url(), None, TokenMode::Stable);
    config.admins = admins();
    let server = weapp_server::spawn(config).await.unwrap();
    let url = server.url();
    let call = |method: &'static str, path: String, body: Option<Value>| {
        let w = &w;
        async move {
            w.call(method, format!("{url}{path}"), Some(ADMIN), body)
                .await
        }
    };
    // The file's app is listed, read-only.
    let (s, v) = call("GET", "/v1/admin/apps".into(), None).await;
    assert_eq!(s, 200);
    let file_app = v["apps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["appid"] == w.appid.as_str())
        .cloned()
        .unwrap();
    assert_eq!(file_app["source"], "file");
    let (s, v) = call(
        "PATCH",
        format!("/v1/admin/apps/{}", w.appid),
        Some(json!({"enabled": false})),
    )
    .await;
    assert_eq!(s, 409, "{v}");
    let (s, _) = call("DELETE", format!("/v1/admin/apps/{}", w.appid), None).await;
    assert_eq!(s, 409);
    let (s, _) = call(
        "POST",
        "/v1/admin/apps".into(),
        Some(json!({"appid": w.appid, "secret": "x"})),
    )
    .await;
    assert_eq!(s, 409);
    let (s, _) = call("DELETE", "/v1/admin/clients/billing".into(), None).await;
    assert_eq!(s, 409);
    // Bad input: 400 naming the problem, and nothing created.
    for body in [
        json!({"appid": "wx bad", "secret": "s"}),
        json!({"appid": "wxok", "secret": ""}),
        json!({"appid": "wxok", "secret": "s", "api_base": "ftp://x"}),
        json!({"appid": "wxok", "secret": "s", "token_mode": "weird"}),
        json!({"appid": "wxok", "secret": "s", "push": {"token": "t0ken"}}),
        json!({"appid": "wxok", "secret": "s", "push": {"token": "t0ken", "encoding_aes_key": "short"}}),
        json!({"appid": "wxok", "secret": "s", "surprise": 1}),
        // serde reads a struct from an array too; the API does not.
        json!(["wxarr", "secret"]),
    ] {
        let (s, v) = call("POST", "/v1/admin/apps".into(), Some(body.clone())).await;
        assert_eq!(s, 400, "{body} → {v}");
        assert!(v["error"]["message"].is_string());
    }
    for body in [
        json!({"name": "", "apps": ["*"]}),
        json!({"name": "x", "apps": []}),
        json!({"name": "x", "apps": ["*"], "scopes": ["root"]}),
    ] {
        let (s, _) = call("POST", "/v1/admin/clients".into(), Some(body.clone())).await;
        assert_eq!(s, 400, "{body}");
    }
    let (s, v) = call("GET", "/v1/admin/apps?limit=0".into(), None).await;
    assert_eq!(s, 400, "{v}");
    let (_, v) = call("GET", "/v1/admin/apps".into(), None).await;
    assert_eq!(
        v["apps"].as_array().unwrap().len(),
        2,
        "nothing was created"
    );
    // Paging: one at a time.
    let (_, p1) = call("GET", "/v1/admin/apps?limit=1".into(), None).await;
    let after = p1["next_after"].as_str().unwrap().to_owned();
    let (_, p2) = call("GET", format!("/v1/admin/apps?limit=1&after={after}"), None).await;
    assert_eq!(p2["apps"].as_array().unwrap().len(), 1);
    assert!(p2["next_after"].is_null());
    assert_ne!(p1["apps"][0]["appid"], p2["apps"][0]["appid"]);
    // A `*` client reads every app, managed ones included.
    let (s, v) = call(
        "POST",
        "/v1/admin/clients".into(),
        Some(json!({"name": "all", "apps": ["*"]})),
    )
    .await;
    assert_eq!(s, 201);
    let all = v["key"].as_str().unwrap().to_owned();
    // Clients are paged too (the file's two and this one), in name order.
    let (s, _) = call("GET", "/v1/admin/clients?limit=101".into(), None).await;
    assert_eq!(s, 400);
    let mut names = Vec::new();
    let mut after = String::new();
    loop {
        let (s, page) = call(
            "GET",
            format!("/v1/admin/clients?limit=2&after={after}"),
            None,
        )
        .await;
        assert_eq!(s, 200, "{page}");
        assert!(page["clients"].as_array().unwrap().len() <= 2);
        names.extend(
            page["clients"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["name"].as_str().unwrap().to_owned()),
        );
        match page["next_after"].as_str() {
            Some(n) => after = n.to_owned(),
            None => break,
        }
    }
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);
    assert_eq!(names, ["all", "billing", "other"]);
    let (s, _) = w
        .call(
            "GET",
            format!("{url}/v1/apps/{}/access_token", w.other_appid),
            Some(&all),
            None,
        )
        .await;
    assert_eq!(s, 200);
}

#[tokio::test]
async fn only_admin_keys_get_in() {
    let w = world().await;
    let mut config = w.config(&common::sqlite_url(), None, TokenMode::Stable);
    config.admins = admins();
    config.auth_failure_limit_per_minute = 8;
    let server = weapp_server::spawn(config).await.unwrap();
    let url = server.url();
    let (_, session) = w.login(&server, None).await;
    for bearer in [
        None,
        Some(KEY),
        Some(session.as_str()),
        Some("admin-key-0123456789abcdefghijkX"),
    ] {
        let (s, v) = w
            .call("GET", format!("{url}/v1/admin/apps"), bearer, None)
            .await;
        assert_eq!(s, 401, "{bearer:?}: {v}");
        let (s, _) = w
            .call(
                "POST",
                format!("{url}/v1/admin/apps"),
                bearer,
                Some(json!({"appid": "wxnew", "secret": "s"})),
            )
            .await;
        assert_eq!(s, 401, "{bearer:?}");
    }
    // The failures are counted: the source is now refused before its key is looked at.
    let (s, _) = w
        .call("GET", format!("{url}/v1/admin/apps"), Some(ADMIN), None)
        .await;
    assert_eq!(s, 429);
}

#[tokio::test]
async fn admins_are_rate_limited() {
    let w = world().await;
    let mut config = w.config(&common::sqlite_url(), None, TokenMode::Stable);
    config.admins = admins();
    config.admin_rate_limit_per_minute = 3;
    let server = weapp_server::spawn(config).await.unwrap();
    let url = server.url();
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(
            w.call("GET", format!("{url}/v1/admin/fleet"), Some(ADMIN), None)
                .await
                .0,
        );
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429]);
}

/// Found by review: moving an app's api_base to another host takes the secret again (or an
/// admin key alone could send the secret anywhere); settings edited in the database to point
/// elsewhere no longer open the secrets, and the app is then not served (and shown broken);
/// concurrent changes cannot silently undo each other; a disabled app's sessions stop working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_follow_their_host_and_changes_do_not_undo_each_other() {
    let w = world().await;
    let db_url = common::sqlite_url();
    let mut config = w.config(&db_url, None, TokenMode::Stable);
    config.admins = admins();
    config.registry_poll_ms = 100;
    let server = weapp_server::spawn(config).await.unwrap();
    let url = server.url().to_owned();
    let call = |method: &'static str, path: String, body: Option<Value>| {
        let (w, url) = (&w, url.clone());
        async move {
            w.call(method, format!("{url}{path}"), Some(ADMIN), body)
                .await
        }
    };
    let (appid, secret) = w.sim.sim().add_app(None, None, false);
    let (s, _) = call(
        "POST",
        "/v1/admin/apps".into(),
        Some(json!({"appid": appid, "secret": secret, "api_base": w.sim.url()})),
    )
    .await;
    assert_eq!(s, 201);
    // Another host without the secret: refused, nothing changed.
    let (s, v) = call(
        "PATCH",
        format!("/v1/admin/apps/{appid}"),
        Some(json!({"api_base": "https://attacker.example"})),
    )
    .await;
    assert_eq!(s, 400, "{v}");
    let (_, v) = call("GET", format!("/v1/admin/apps/{appid}"), None).await;
    assert_eq!(v["api_base"], w.sim.url());
    // The same host with a path is fine; another host with the secret is too.
    let (s, _) = call(
        "PATCH",
        format!("/v1/admin/apps/{appid}"),
        Some(json!({"api_base": format!("{}/", w.sim.url())})),
    )
    .await;
    assert_eq!(s, 200);

    // A stale compare-and-set loses (409 through the API; None from the store).
    let store = &server.state().store;
    let current = store.managed_app(&appid).await.unwrap().unwrap();
    let mut stale = current.clone();
    stale.rev = current.rev - 1;
    let stale_audit = weapp_server::store::AuditRecord {
        id: 0,
        at: 0,
        admin: "stale-writer".into(),
        action: "app.update".into(),
        target: appid.clone(),
        source: String::new(),
        detail: "{}".into(),
    };
    assert!(store
        .put_managed_app(&stale, false, &stale_audit)
        .await
        .unwrap()
        .is_none());
    // No audit row for a change that did not happen.
    assert!(!store
        .audit_after(0, 1_000)
        .await
        .unwrap()
        .iter()
        .any(|r| r.admin == "stale-writer"));

    // A user of the app logs in; the app is disabled; the session stops working.
    let (code, _) = w.sim.sim().login(&appid, None, None, false).unwrap();
    let (s, v) = w.post_login(&url, &appid, &code).await;
    assert_eq!(s, 200, "{v}");
    let token = v["token"].as_str().unwrap().to_owned();
    let (s, _) = call(
        "PATCH",
        format!("/v1/admin/apps/{appid}"),
        Some(json!({"enabled": false})),
    )
    .await;
    assert_eq!(s, 200);
    let (s, _) = w
        .call("GET", format!("{url}/v1/me"), Some(&token), None)
        .await;
    assert_eq!(s, 401);
    let (s, _) = call(
        "PATCH",
        format!("/v1/admin/apps/{appid}"),
        Some(json!({"enabled": true})),
    )
    .await;
    assert_eq!(s, 200);

    // Someone with write access to the database points the app elsewhere: its secrets no
    // longer open, so it is not served, and the admin API says why.
    {
        use sqlx::Connection;
        let mut conn = sqlx::SqliteConnection::connect(&db_url).await.unwrap();
        sqlx::query("UPDATE registry SET rev = rev + 1 WHERE id = 1")
            .execute(&mut conn)
            .await
            .unwrap();
        sqlx::query(
            "UPDATE managed_apps SET settings = replace(settings, $1, 'https://attacker.example'), \
             rev = (SELECT rev FROM registry WHERE id = 1) WHERE appid = $2",
        )
        .bind(w.sim.url())
        .bind(&appid)
        .execute(&mut conn)
        .await
        .unwrap();
    }
    within(
        Duration::from_secs(3),
        "the tampered app not served",
        || {
            let call = &call;
            let appid = appid.clone();
            async move {
                let (_, v) = call("GET", format!("/v1/admin/apps/{appid}"), None).await;
                v["load_error"].is_string() && v["token"].is_null()
            }
        },
    )
    .await;
    assert!(server.state().broker.app(&appid).is_none());
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_change_without_its_audit_row() {
    let w = world().await;
    let role = weapp_test_support::PgRole::new("weapp_audit");
    let db = PgDatabase::create().await;
    let mut config = w.config(db.url(), None, TokenMode::Stable);
    config.admins = admins();
    // A migrates the database; the instance under test connects as a role of its own.
    let a = weapp_server::spawn(config.clone()).await.unwrap();
    let mut on_db = role.create_on(db.url()).await;
    let mut mine = config.clone();
    mine.database_url = role.url(db.url());
    let server = weapp_server::spawn(mine).await.unwrap();
    let url = server.url().to_owned();
    let (appid, secret) = w.sim.sim().add_app(None, None, false);
    let create =
        json!({"appid": appid, "secret": secret, "api_base": w.sim.url(), "token_mode": "stable"});
    let post = |path: &'static str, body: Value| {
        let (w, url) = (&w, url.clone());
        async move {
            w.call("POST", format!("{url}{path}"), Some(ADMIN), Some(body))
                .await
        }
    };

    // The audit log refuses writes: the change is refused too, and nothing is stored.
    sqlx::query(&format!("REVOKE INSERT ON admin_audit FROM {}", role.name))
        .execute(&mut on_db)
        .await
        .unwrap();
    let (s, v) = post("/v1/admin/apps", create.clone()).await;
    assert_eq!(s, 500, "{v}");
    assert!(v["error"]["message"].is_string(), "{v}");
    assert!(!v.to_string().contains(&secret), "{v}");
    let store = a.state().store.clone();
    assert!(store.managed_app(&appid).await.unwrap().is_none());
    let (s, _) = post(
        "/v1/admin/clients",
        json!({"name": "unaudited", "apps": ["*"]}),
    )
    .await;
    assert_eq!(s, 500);
    assert!(store.managed_client("unaudited").await.unwrap().is_none());

    // The log writable again: the same change goes through, with its row.
    sqlx::query(&format!("GRANT INSERT ON admin_audit TO {}", role.name))
        .execute(&mut on_db)
        .await
        .unwrap();
    let (s, v) = post("/v1/admin/apps", create).await;
    assert_eq!(s, 201, "{v}");
    let rows = store.audit_after(0, 1_000).await.unwrap();
    assert_eq!(
        rows.iter()
            .filter(|r| r.action == "app.create" && r.target == appid)
            .count(),
        1
    );
    assert!(!rows.iter().any(|r| r.target == "unaudited"));
    // A delete whose row cannot be written leaves the app in place.
    sqlx::query(&format!("REVOKE INSERT ON admin_audit FROM {}", role.name))
        .execute(&mut on_db)
        .await
        .unwrap();
    let (s, _) = w
        .call(
            "DELETE",
            format!("{url}/v1/admin/apps/{appid}"),
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(s, 500);
    assert!(!store.managed_app(&appid).await.unwrap().unwrap().deleted);
    drop((a, server, on_db));
}

/// Every registry write of the store (apps, platforms, clients, an administrator's signing-key
/// rotation and removal) and every administrator's operation on sessions and events (a user's
/// revocation, a redelivery), on SQLite and PostgreSQL, with the audit table refusing inserts
/// (a trigger): each fails and changes nothing; without the trigger each succeeds with exactly
/// one audit row.
#[tokio::test]
async fn every_registry_write_fails_whole_when_its_audit_row_cannot_be_written() {
    use weapp_server::store::{AuditRecord, KeyGuard, ManagedAppRecord, ManagedClientRecord};
    let db = PgDatabase::create().await;
    for url in [common::sqlite_url(), db.url().to_owned()] {
        let store = weapp_server::store::connect(&url, &Default::default())
            .await
            .unwrap();
        let pg = url.starts_with("postgres");
        let row = |id: &str, rev: i64| ManagedAppRecord {
            appid: id.into(),
            settings: r#"{"api_base":"https://api.weixin.qq.com"}"#.into(),
            sealed: Some(b"sealed-secrets".to_vec()),
            key_id: Some("k1".into()),
            enabled: true,
            deleted: false,
            rev,
            created_at: 1,
            updated_at: 1,
        };
        let client = |rev: i64| ManagedClientRecord {
            name: "auditedclient".into(),
            key_sha256: Some(vec![7; 32]),
            apps: r#"["*"]"#.into(),
            scopes: "[]".into(),
            enabled: true,
            deleted: false,
            rev,
            created_at: 1,
            updated_at: 1,
        };
        let audit = |action: &str| AuditRecord {
            id: 0,
            at: 1,
            admin: "ops".into(),
            action: action.into(),
            target: "t".into(),
            source: String::new(),
            detail: "{}".into(),
        };
        let app_rev = store
            .put_managed_app(&row("wxauditedapp", 0), true, &audit("a"))
            .await
            .unwrap()
            .unwrap();
        let platform_rev = store
            .put_managed_platform(&row("wxauditedplatform", 0), true, &audit("p"))
            .await
            .unwrap()
            .unwrap();
        let client_rev = store
            .put_managed_client(&client(0), true, &audit("c"))
            .await
            .unwrap()
            .unwrap();
        let key = |t: i64| weapp_server::keys::jwt::generate(|p, _| p.to_vec(), "k1".into(), t, t);
        let first_key = key(1_000);
        assert!(store
            .add_signing_key(&first_key, KeyGuard::Always, Some(&audit("k")))
            .await
            .unwrap());
        let rows_before = store.audit_after(0, 100).await.unwrap().len();
        assert_eq!(rows_before, 4, "{url}");
        // A user with two sessions, a dead-lettered push event.
        let login = |token: u8| weapp_server::store::LoginWrite {
            appid: "wxauditedapp".into(),
            openid: "oAudited".into(),
            unionid: None,
            session_key_enc: vec![1],
            key_id: "k1".into(),
            token_hash: vec![token; 32],
            now: 1,
            expires_at: i64::MAX / 2,
        };
        let user_id = store.record_logins(&[login(1), login(2)]).await.unwrap()[0].user_id;
        let (event, _) = store
            .insert_event("wxauditedapp", "d1", "text", "{}", 1, 1)
            .await
            .unwrap();
        store.mark_failed(event, 1, "gone", Some(2)).await.unwrap();

        // The audit table refuses every insert.
        let refuse: &[&str] = if pg {
            &[
                "CREATE FUNCTION refuse_audit() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION 'audit refused'; END $$ LANGUAGE plpgsql",
                "CREATE TRIGGER refuse_audit BEFORE INSERT ON admin_audit FOR EACH ROW EXECUTE FUNCTION refuse_audit()",
            ]
        } else {
            &["CREATE TRIGGER refuse_audit BEFORE INSERT ON admin_audit BEGIN SELECT RAISE(ABORT, 'audit refused'); END"]
        };
        exec_on(&url, refuse).await;
        let a = audit("refused");
        assert!(store
            .put_managed_app(&row("wxauditedapp", app_rev), false, &a)
            .await
            .is_err());
        assert!(store
            .delete_managed_app("wxauditedapp", 2, &a)
            .await
            .is_err());
        assert!(store
            .put_managed_app(&row("wxunauditedapp", 0), true, &a)
            .await
            .is_err());
        assert!(store
            .put_managed_platform(&row("wxauditedplatform", platform_rev), false, &a)
            .await
            .is_err());
        assert!(store
            .delete_managed_platform("wxauditedplatform", 2, &a)
            .await
            .is_err());
        assert!(store
            .put_managed_platform(&row("wxunauditedplatform", 0), true, &a)
            .await
            .is_err());
        assert!(store
            .put_managed_client(&client(client_rev), false, &a)
            .await
            .is_err());
        assert!(store
            .delete_managed_client("auditedclient", 2, &a)
            .await
            .is_err());
        assert!(store
            .add_signing_key(&key(2_000), KeyGuard::Always, Some(&a))
            .await
            .is_err());
        assert!(store
            .delete_signing_keys(Some(&first_key.kid), 3_000, 0, Some(&a))
            .await
            .is_err());
        assert!(store.delete_user_sessions(user_id, Some(&a)).await.is_err());
        assert_eq!(store.count_sessions(user_id, 1).await.unwrap(), 2, "{url}");
        assert!(store
            .redeliver("wxauditedapp", event, 3, Some(&a))
            .await
            .is_err());
        let dead = &store.events_after("wxauditedapp", 0, 10).await.unwrap()[0];
        assert_eq!((dead.dead_at, dead.attempts), (Some(2), 1), "{url}");
        let keys = store.signing_keys().await.unwrap();
        assert_eq!(keys.len(), 1, "{url}");
        assert_eq!(keys[0].kid, first_key.kid);
        assert_eq!(keys[0].retired_at, None, "{url}");
        // Nothing changed: same revisions, live rows, no new rows.
        let app = store.managed_app("wxauditedapp").await.unwrap().unwrap();
        assert_eq!((app.rev, app.deleted), (app_rev, false), "{url}");
        let platform = store
            .managed_platform("wxauditedplatform")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (platform.rev, platform.deleted),
            (platform_rev, false),
            "{url}"
        );
        let c = store
            .managed_client("auditedclient")
            .await
            .unwrap()
            .unwrap();
        assert_eq!((c.rev, c.deleted), (client_rev, false), "{url}");
        assert!(store.managed_app("wxunauditedapp").await.unwrap().is_none());
        assert!(store
            .managed_platform("wxunauditedplatform")
            .await
            .unwrap()
            .is_none());

        // Inserts allowed again: the same writes go through, one row each.
        exec_on(
            &url,
            &[if pg {
                "DROP TRIGGER refuse_audit ON admin_audit"
            } else {
                "DROP TRIGGER refuse_audit"
            }],
        )
        .await;
        assert!(store
            .put_managed_app(&row("wxauditedapp", app_rev), false, &audit("a2"))
            .await
            .unwrap()
            .is_some());
        assert!(store
            .delete_managed_client("auditedclient", 2, &audit("c2"))
            .await
            .unwrap()
            .is_some());
        assert!(store
            .delete_signing_keys(Some(&first_key.kid), 3_000, 0, Some(&audit("k2")))
            .await
            .is_ok_and(|n| n == 1));
        assert!(store
            .redeliver("wxauditedapp", event, 3, Some(&audit("e2")))
            .await
            .unwrap());
        // A delivered event is not requeued, and its redelivery writes no audit row.
        store.mark_delivered(event, 4).await.unwrap();
        assert!(!store
            .redeliver("wxauditedapp", event, 5, Some(&audit("none")))
            .await
            .unwrap());
        assert_eq!(
            store
                .delete_user_sessions(user_id, Some(&audit("u2")))
                .await
                .unwrap(),
            2
        );
        let rows = store.audit_after(0, 100).await.unwrap();
        let actions: Vec<&str> = rows.iter().map(|r| r.action.as_str()).collect();
        assert_eq!(
            actions,
            ["a", "p", "c", "k", "a2", "c2", "k2", "e2", "u2"],
            "{url}"
        );
        assert_eq!(rows[8].detail, r#"{"revoked":2}"#, "{url}");
    }
}

/// Runs statements on the database at `url` through a connection of the test's own.
async fn exec_on(url: &str, statements: &[&str]) {
    use sqlx::Connection;
    if url.starts_with("postgres") {
        let mut c = sqlx::PgConnection::connect(url).await.unwrap();
        for s in statements {
            sqlx::query(s).execute(&mut c).await.unwrap();
        }
    } else {
        let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
        for s in statements {
            sqlx::query(s).execute(&mut c).await.unwrap();
        }
    }
}

/// The admin API's event listing describes an event as the client API (`events:read`) does:
/// the same object — `type` (not `kind`), `created_at` in Unix seconds, `stored` for an app
/// without a webhook, `pending` for one waiting for its webhook.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_events_are_described_as_the_client_api_describes_them() {
    use weapp_server::config::PushConfig;
    use weapp_sim::{PushFormat, PushMode, PushTarget};
    const TOKEN: &str = "pushToken123";
    const AES_KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
    let w = world().await;
    let mut config = w.config(&common::sqlite_url(), None, TokenMode::Stable);
    config.admins = admins();
    let push = |webhook_url: Option<&str>| PushConfig {
        token: TOKEN.into(),
        encoding_aes_key: Some(AES_KEY.into()),
        mode: None,
        webhook_url: webhook_url.map(str::to_owned),
        webhook_secret: webhook_url.map(|_| "webhook-secret-0123456789".into()),
        replay_window_secs: 300,
    };
    // The first app keeps its pushes for pulling; the second's webhook never answers (a
    // closed port), so its event stays pending: retried, never dead within the test.
    config.apps[0].push = Some(push(None));
    config.apps[1].push = Some(push(Some("http://127.0.0.1:9/hook")));
    config.webhook_max_attempts = 1000;
    config.webhook_retry_base_ms = 60_000;
    let server = weapp_server::spawn(config).await.unwrap();
    let url = server.url().to_owned();
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    for (appid, content) in [
        (&w.appid, "kept for pulling"),
        (&w.other_appid, "for a webhook"),
    ] {
        w.sim
            .sim()
            .set_push_target(
                appid,
                PushTarget {
                    url: format!("{url}/v1/apps/{appid}/push"),
                    token: TOKEN.into(),
                    encoding_aes_key: Some(AES_KEY.into()),
                    mode: PushMode::Safe,
                    format: PushFormat::Json,
                },
            )
            .unwrap();
        let message =
            json!({"FromUserName": "oUser", "MsgType": "text", "Content": content, "MsgId": 4242});
        let d = w
            .sim
            .sim()
            .push(appid, message.as_object().unwrap().clone())
            .await
            .unwrap();
        assert!(d.delivered, "{d:?}");
    }
    let client = |appid: &str, key: &str| {
        let (w, url, appid, key) = (&w, url.clone(), appid.to_owned(), key.to_owned());
        async move {
            let (s, v) = w
                .call(
                    "GET",
                    format!("{url}/v1/apps/{appid}/events"),
                    Some(&key),
                    None,
                )
                .await;
            assert_eq!(s, 200, "{v}");
            v["events"].as_array().unwrap().clone()
        }
    };
    let admin = |appid: &str| {
        let (w, url, appid) = (&w, url.clone(), appid.to_owned());
        async move {
            let (s, v) = w
                .call(
                    "GET",
                    format!("{url}/v1/admin/apps/{appid}/events"),
                    Some(ADMIN),
                    None,
                )
                .await;
            assert_eq!(s, 200, "{v}");
            assert_eq!(v["next_after"], Value::Null, "one page: {v}");
            v["events"].as_array().unwrap().clone()
        }
    };

    // Without a webhook: the very same object from both APIs.
    let (by_client, by_admin) = (client(&w.appid, KEY).await, admin(&w.appid).await);
    assert_eq!(by_admin.len(), 1, "{by_admin:?}");
    assert_eq!(by_admin, by_client);
    let e = &by_admin[0];
    assert_eq!(e["type"], "text");
    assert!(e.get("kind").is_none(), "{e}");
    assert_eq!(e["appid"], w.appid.as_str());
    assert_eq!(e["status"], "stored");
    assert_eq!(e["delivered"], false);
    assert_eq!(e["payload"]["Content"], "kept for pulling");
    let at = e["created_at"].as_i64().unwrap();
    assert!(
        (started - 5..=started + 60).contains(&at),
        "created_at {at} is not Unix seconds near {started}"
    );

    // With a webhook that does not answer: pending in both (attempts and the last error move
    // on with the outbox, so they are compared for shape, not value).
    let (by_client, by_admin) = (
        client(&w.other_appid, common::OTHER_KEY).await,
        admin(&w.other_appid).await,
    );
    assert_eq!(by_admin.len(), 1, "{by_admin:?}");
    let (c, a) = (&by_client[0], &by_admin[0]);
    for field in [
        "id",
        "appid",
        "type",
        "created_at",
        "payload",
        "delivered",
        "status",
    ] {
        assert_eq!(a[field], c[field], "{field}: admin {a} client {c}");
    }
    assert_eq!(a["status"], "pending");
    let keys = |v: &Value| {
        let mut k: Vec<String> = v
            .as_object()
            .unwrap()
            .keys()
            .filter(|k| *k != "last_error")
            .cloned()
            .collect();
        k.sort();
        k
    };
    assert_eq!(keys(a), keys(c));
}
