//! Access tokens a backend verifies alone: login hands out an ES256 JWT that verifies with the
//! published JWKS (checked here with `ring` directly, not with the server's own code); the
//! session token refreshes it until the session ends; keys rotate with the old key published
//! until its tokens expire, and a removed key's tokens stop verifying; introspection answers
//! RFC 7662 for clients with the scope; a fleet shares one keyring.

mod common;

use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine;
use common::{sqlite_url, world, World, KEY};
use serde_json::{json, Value};
use weapp::TokenMode;
use weapp_server::config::{AdminConfig, ClientConfig};
use weapp_server::{Config, ServerHandle};
use weapp_test_support::PgDatabase;

const ADMIN: &str = "admin-key-0123456789abcdefghijkl";
const INTROSPECTOR: &str = "introspector-key-0123456789abcdef";

fn config(w: &World, db: &str) -> Config {
    let mut c = w.config(db, None, TokenMode::Stable);
    c.admins = vec![AdminConfig {
        name: "ops".into(),
        key: Some(ADMIN.into()),
        key_env: None,
        key_sha256: None,
    }];
    c.clients.push(ClientConfig {
        name: "api-backend".into(),
        key: Some(INTROSPECTOR.into()),
        key_env: None,
        key_sha256: None,
        apps: vec![w.appid.clone()],
        scopes: Some(vec!["sessions:introspect".into()]),
    });
    c.access_token_issuer = "https://login.example.com".into();
    c.auth_failure_limit_per_minute = 0;
    c
}

/// A JWT checked the way a backend checks it: ES256 only, a kid of the JWKS, the signature
/// over `header.payload` with that key. Returns the claims, or why not.
fn verify_with(jwks: &Value, token: &str) -> Result<Value, String> {
    let parts: Vec<&str> = token.split('.').collect();
    if parts.len() != 3 {
        return Err("not a JWS".into());
    }
    let header: Value = serde_json::from_slice(&B64URL.decode(parts[0]).unwrap()).unwrap();
    if header["alg"] != "ES256" || header["typ"] != "JWT" {
        return Err(format!("header {header}"));
    }
    let kid = header["kid"].as_str().ok_or("no kid")?;
    let key = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid)
        .ok_or_else(|| format!("kid {kid} is not published"))?;
    assert_eq!(
        (&key["kty"], &key["crv"], &key["alg"], &key["use"]),
        (
            &json!("EC"),
            &json!("P-256"),
            &json!("ES256"),
            &json!("sig")
        )
    );
    assert!(key.get("d").is_none(), "a private key is published: {key}");
    let mut point = vec![4u8];
    point.extend(B64URL.decode(key["x"].as_str().unwrap()).unwrap());
    point.extend(B64URL.decode(key["y"].as_str().unwrap()).unwrap());
    let sig = B64URL.decode(parts[2]).map_err(|e| e.to_string())?;
    ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_FIXED, &point)
        .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &sig)
        .map_err(|_| "bad signature".to_owned())?;
    Ok(serde_json::from_slice(&B64URL.decode(parts[1]).unwrap()).unwrap())
}

fn kid_of(token: &str) -> String {
    let h: Value =
        serde_json::from_slice(&B64URL.decode(token.split('.').next().unwrap()).unwrap()).unwrap();
    h["kid"].as_str().unwrap().to_owned()
}

async fn jwks(w: &World, server: &ServerHandle) -> Value {
    let (s, headers, v) = w
        .call_full(
            "GET",
            format!("{}/.well-known/jwks.json", server.url()),
            None,
            None,
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(headers["cache-control"], "public, max-age=300");
    v
}

/// Logs in a new user: (session token, access token, openid).
async fn login(w: &World, server: &ServerHandle, appid: &str) -> (String, String, String) {
    let (code, openid) = w.sim.sim().login(appid, None, None, false).unwrap();
    let (s, v) = w.post_login(server.url(), appid, &code).await;
    assert_eq!(s, 200, "{v}");
    (
        v["token"].as_str().unwrap().to_owned(),
        v["access_token"].as_str().unwrap().to_owned(),
        openid,
    )
}

async fn introspect(w: &World, server: &ServerHandle, key: &str, token: &str) -> (u16, Value) {
    let resp = w
        .http
        .post(format!("{}/v1/introspect", server.url()))
        .bearer_auth(key)
        .form(&[("token", token)])
        .send()
        .await
        .unwrap();
    let s = resp.status().as_u16();
    (s, resp.json().await.unwrap())
}

#[tokio::test]
async fn login_gives_an_access_token_that_verifies_with_the_jwks_until_the_session_ends() {
    let w = world().await;
    let server = weapp_server::spawn(config(&w, &sqlite_url()))
        .await
        .unwrap();
    let base = server.url().to_owned();
    let (code, openid) = w.sim.sim().login(&w.appid, None, None, false).unwrap();
    let before = chrono_now();
    let (s, v) = w.post_login(&base, &w.appid, &code).await;
    assert_eq!(s, 200, "{v}");
    let session = v["token"].as_str().unwrap().to_owned();
    let access = v["access_token"].as_str().unwrap().to_owned();
    let keys = jwks(&w, &server).await;
    assert_eq!(keys["keys"].as_array().unwrap().len(), 1);
    let claims = verify_with(&keys, &access).expect("verifies");
    assert_eq!(claims["iss"], "https://login.example.com");
    assert_eq!(claims["aud"], w.appid.as_str());
    assert_eq!(
        (&claims["sub"], &claims["openid"]),
        (&json!(openid), &json!(openid))
    );
    assert!(claims["sid"].as_str().is_some_and(|s| s.len() == 43));
    let iat = claims["iat"].as_i64().unwrap();
    assert!((before..=before + 5).contains(&iat));
    assert_eq!(claims["exp"].as_i64().unwrap() - iat, 900);
    assert_eq!(v["access_token_expires_at"], claims["exp"]);
    assert!(
        !access.contains(&session[3..]),
        "the session token leaks into the JWT"
    );

    // The access token works for the user's own endpoints, like the session token.
    let (s, me) = w
        .call("GET", format!("{base}/v1/me"), Some(&access), None)
        .await;
    assert_eq!((s, &me["openid"]), (200, &json!(openid)), "{me}");
    // A token with one bit changed does not.
    let mut forged: Vec<char> = access.chars().collect();
    let i = access.find('.').unwrap() + 5;
    forged[i] = if forged[i] == 'A' { 'B' } else { 'A' };
    let forged: String = forged.into_iter().collect();
    assert!(verify_with(&keys, &forged).is_err());
    let (s, _) = w
        .call("GET", format!("{base}/v1/me"), Some(&forged), None)
        .await;
    assert_eq!(s, 401);

    // Refresh: only with the session token.
    let refresh = |bearer: String| {
        let (w, base) = (&w, base.clone());
        async move {
            w.call(
                "POST",
                format!("{base}/v1/session/refresh"),
                Some(&bearer),
                None,
            )
            .await
        }
    };
    let (s, e) = refresh(access.clone()).await;
    assert_eq!(
        (s, &e["error"]["code"]),
        (401, &json!("unauthorized")),
        "{e}"
    );
    let (s, r) = refresh(session.clone()).await;
    assert_eq!(s, 200, "{r}");
    let again = r["access_token"].as_str().unwrap();
    let c2 = verify_with(&keys, again).unwrap();
    assert_eq!((&c2["sid"], &c2["sub"]), (&claims["sid"], &claims["sub"]));
    assert_eq!(r["expires_at"], v["expires_at"]);

    // Logout ends refreshes, and this server stops honouring the session's access tokens at
    // once (a backend verifying alone honours them until `exp`).
    let (s, _) = w
        .call("POST", format!("{base}/v1/logout"), Some(&session), None)
        .await;
    assert_eq!(s, 204);
    let (s, _) = refresh(session.clone()).await;
    assert_eq!(s, 401);
    let (s, _) = w
        .call("GET", format!("{base}/v1/me"), Some(&access), None)
        .await;
    assert_eq!(s, 401);
    assert!(verify_with(&keys, &access).is_ok());

    // Log out everywhere ends every session's refreshes.
    let (s1, _, _) = login(&w, &server, &w.appid).await;
    let (s, v) = w
        .call("POST", format!("{base}/v1/logout/all"), Some(&s1), None)
        .await;
    assert_eq!((s, v["revoked"].as_u64()), (200, Some(1)));
    assert_eq!(refresh(s1).await.0, 401);
}

fn chrono_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[tokio::test]
async fn rotated_keys_stay_published_until_their_tokens_expire_and_removed_keys_stop_verifying() {
    let w = world().await;
    let server = weapp_server::spawn(config(&w, &sqlite_url()))
        .await
        .unwrap();
    let base = server.url().to_owned();
    let (_, old_token, _) = login(&w, &server, &w.appid).await;
    let old_kid = kid_of(&old_token);

    // Non-admins cannot rotate.
    let (s, _) = w
        .call(
            "POST",
            format!("{base}/v1/admin/signing-keys/rotate"),
            Some(KEY),
            Some(json!({})),
        )
        .await;
    assert_eq!(s, 401);

    // A rotation publishes the next key first; the current one goes on signing meanwhile.
    let (s, v) = w
        .call(
            "POST",
            format!("{base}/v1/admin/signing-keys/rotate"),
            Some(ADMIN),
            Some(json!({})),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let statuses: Vec<&str> = v["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["next", "current"], "{v}");
    assert!(!v.to_string().contains("\"d\""), "{v}");
    assert_eq!(jwks(&w, &server).await["keys"].as_array().unwrap().len(), 2);
    let (_, t, _) = login(&w, &server, &w.appid).await;
    assert_eq!(kid_of(&t), old_kid);

    // An immediate rotation signs with the new key at once; the old key stays published.
    let (s, v) = w
        .call(
            "POST",
            format!("{base}/v1/admin/signing-keys/rotate"),
            Some(ADMIN),
            Some(json!({"immediate": true})),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let (session, new_token, _) = login(&w, &server, &w.appid).await;
    let new_kid = kid_of(&new_token);
    assert_ne!(new_kid, old_kid);
    let keys = jwks(&w, &server).await;
    assert_eq!(keys["keys"].as_array().unwrap().len(), 3);
    verify_with(&keys, &old_token).expect("a retired key's token still verifies");
    verify_with(&keys, &new_token).expect("the new key's token verifies");

    // Removing the old key (a suspected leak): unpublished, its tokens refused here too.
    let (s, _) = w
        .call(
            "DELETE",
            format!("{base}/v1/admin/signing-keys/{old_kid}"),
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(s, 204);
    let keys = jwks(&w, &server).await;
    assert!(verify_with(&keys, &old_token)
        .unwrap_err()
        .contains("not published"));
    let (s, _) = w
        .call("GET", format!("{base}/v1/me"), Some(&old_token), None)
        .await;
    assert_eq!(s, 401);
    let (s, _) = w
        .call("GET", format!("{base}/v1/me"), Some(&new_token), None)
        .await;
    assert_eq!(s, 200);
    let (s, _) = w
        .call(
            "DELETE",
            format!("{base}/v1/admin/signing-keys/{old_kid}"),
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(s, 404);

    // Removing the current key puts a new one in its place at once.
    let (s, _) = w
        .call(
            "DELETE",
            format!("{base}/v1/admin/signing-keys/{new_kid}"),
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(s, 204);
    let (s, r) = w
        .call(
            "POST",
            format!("{base}/v1/session/refresh"),
            Some(&session),
            None,
        )
        .await;
    assert_eq!(s, 200, "{r}");
    let fresh = r["access_token"].as_str().unwrap();
    assert!(![old_kid.as_str(), new_kid.as_str()].contains(&kid_of(fresh).as_str()));
    verify_with(&jwks(&w, &server).await, fresh).unwrap();

    // Retired keys are unpublished once every token they signed has expired.
    let published = jwks(&w, &server).await["keys"].as_array().unwrap().len();
    assert!(published >= 2, "the next key and the replacement");
    // (a day: the longest lifetime any instance may give its tokens)
    let later = (chrono_now() + 86_400 + 61 + 600) * 1000;
    server.state().keys.signing_tick(later).await.unwrap();
    let keys = jwks(&w, &server).await;
    assert_eq!(keys["keys"].as_array().unwrap().len(), 1, "{keys}");

    // The audit log has the rotations and removals, without key material.
    let (_, audit) = w
        .call("GET", format!("{base}/v1/admin/audit"), Some(ADMIN), None)
        .await;
    let text = audit.to_string();
    assert!(text.contains("signing_key.rotate") && text.contains("signing_key.delete"));
}

#[tokio::test]
async fn removing_a_key_mid_rotation_leaves_a_key_that_signs() {
    let w = world().await;
    let server = weapp_server::spawn(config(&w, &sqlite_url()))
        .await
        .unwrap();
    let base = server.url().to_owned();
    let (session, first, _) = login(&w, &server, &w.appid).await;
    let a = kid_of(&first);
    let rotate = || async {
        let (s, v) = w
            .call(
                "POST",
                format!("{base}/v1/admin/signing-keys/rotate"),
                Some(ADMIN),
                Some(json!({})),
            )
            .await;
        assert_eq!(s, 201, "{v}");
        v["keys"][0]["kid"].as_str().unwrap().to_owned()
    };
    let refresh_kid = || async {
        let (s, r) = w
            .call(
                "POST",
                format!("{base}/v1/session/refresh"),
                Some(&session),
                None,
            )
            .await;
        assert_eq!(s, 200, "{r}");
        kid_of(r["access_token"].as_str().unwrap())
    };
    let statuses = || async {
        let (_, v) = w
            .call(
                "GET",
                format!("{base}/v1/admin/signing-keys"),
                Some(ADMIN),
                None,
            )
            .await;
        v["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| {
                (
                    k["kid"].as_str().unwrap().to_owned(),
                    k["status"].as_str().unwrap().to_owned(),
                )
            })
            .collect::<Vec<_>>()
    };

    // The next key (published ahead) removed: the current one goes on signing, for good.
    let b = rotate().await;
    let (s, _) = w
        .call(
            "DELETE",
            format!("{base}/v1/admin/signing-keys/{b}"),
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(s, 204);
    assert_eq!(statuses().await, [(a.clone(), "current".to_owned())]);
    let (_, v) = w
        .call(
            "GET",
            format!("{base}/v1/admin/signing-keys"),
            Some(ADMIN),
            None,
        )
        .await;
    assert!(v["keys"][0]["retired_at"].is_null(), "{v}");
    assert_eq!(refresh_kid().await, a);

    // The current key removed while the next one waits: the next one signs at once.
    let c = rotate().await;
    let (s, _) = w
        .call(
            "DELETE",
            format!("{base}/v1/admin/signing-keys/{a}"),
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(s, 204);
    assert_eq!(refresh_kid().await, c);
    assert_eq!(statuses().await, [(c.clone(), "current".to_owned())]);
}

#[tokio::test]
async fn access_tokens_end_with_their_session() {
    let w = world().await;
    let mut c = config(&w, &sqlite_url());
    c.session_ttl_secs = 100;
    let server = weapp_server::spawn(c).await.unwrap();
    let (code, _) = w.sim.sim().login(&w.appid, None, None, false).unwrap();
    let (s, v) = w.post_login(server.url(), &w.appid, &code).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["access_token_expires_at"], v["expires_at"], "{v}");
}

#[tokio::test]
async fn signing_keys_sealed_under_a_missing_data_key_refuse_the_start() {
    let w = world().await;
    let db = sqlite_url();
    let server = weapp_server::spawn(config(&w, &db)).await.unwrap();
    drop(server);
    let mut c = config(&w, &db);
    c.data_key = Some("QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWY=".into());
    let err = weapp_server::spawn(c).await.unwrap_err();
    assert!(
        matches!(err, weapp_server::StartError::DataKeyMissing { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("data key"), "{err}");
    for shown in [err.to_string(), format!("{err:?}")] {
        assert!(
            !shown.contains("QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWY"),
            "{shown}"
        );
    }
}

#[tokio::test]
async fn expired_access_tokens_are_refused_and_introspected_inactive() {
    let w = world().await;
    let mut c = config(&w, &sqlite_url());
    c.access_token_ttl_secs = 5;
    // Expired tokens are users coming back, not guesses: they never trip the limit.
    c.auth_failure_limit_per_minute = 2;
    let server = weapp_server::spawn(c).await.unwrap();
    let base = server.url().to_owned();
    let (session, access, _) = login(&w, &server, &w.appid).await;
    assert_eq!(
        introspect(&w, &server, INTROSPECTOR, &access).await.1["active"],
        true
    );
    tokio::time::sleep(Duration::from_millis(6_100)).await;
    for _ in 0..4 {
        let (s, _) = w
            .call("GET", format!("{base}/v1/me"), Some(&access), None)
            .await;
        assert_eq!(s, 401);
    }
    assert_eq!(
        introspect(&w, &server, INTROSPECTOR, &access).await,
        (200, json!({"active": false}))
    );
    // The session lives on: a refresh gives a fresh one.
    let (s, r) = w
        .call(
            "POST",
            format!("{base}/v1/session/refresh"),
            Some(&session),
            None,
        )
        .await;
    assert_eq!(s, 200, "{r}");
}

#[tokio::test]
async fn introspection_answers_rfc7662_for_clients_with_the_scope() {
    let w = world().await;
    let server = weapp_server::spawn(config(&w, &sqlite_url()))
        .await
        .unwrap();
    let (session, access, openid) = login(&w, &server, &w.appid).await;

    let (s, v) = introspect(&w, &server, INTROSPECTOR, &access).await;
    assert_eq!(s, 200);
    assert_eq!(v["active"], true);
    assert_eq!(v["token_type"], "access_token");
    assert_eq!(
        (&v["sub"], &v["openid"], &v["aud"]),
        (&json!(openid), &json!(openid), &json!(w.appid))
    );
    assert_eq!(v["iss"], "https://login.example.com");
    assert!(v["exp"].as_i64().unwrap() > chrono_now());
    let (s, v2) = introspect(&w, &server, INTROSPECTOR, &session).await;
    assert_eq!(
        (s, &v2["active"], &v2["token_type"]),
        (200, &json!(true), &json!("refresh_token"))
    );
    assert_eq!(v2["sid"], v["sid"]);

    // Garbage, forgeries and tokens of apps the client may not use: inactive, nothing else.
    let inactive = json!({"active": false});
    for t in [
        "",
        "wa_nope",
        "a.b.c",
        &access[..access.len() - 4],
        "x".repeat(4096).as_str(),
    ] {
        assert_eq!(
            introspect(&w, &server, INTROSPECTOR, t).await,
            (200, inactive.clone()),
            "{t}"
        );
    }
    let (_, other_access, _) = login(&w, &server, &w.other_appid).await;
    assert_eq!(
        introspect(&w, &server, INTROSPECTOR, &other_access).await.1,
        inactive
    );

    // Longer than any token, or no token field: 400.
    let (s, e) = introspect(&w, &server, INTROSPECTOR, &"x".repeat(4097)).await;
    assert_eq!(
        (s, &e["error"]["code"]),
        (400, &json!("invalid_request")),
        "{e}"
    );
    let resp = w
        .http
        .post(format!("{}/v1/introspect", server.url()))
        .bearer_auth(INTROSPECTOR)
        .form(&[("tokn", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);

    // Over the body limit: 413, in the envelope.
    let resp = w
        .http
        .post(format!("{}/v1/introspect", server.url()))
        .bearer_auth(INTROSPECTOR)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={}", "x".repeat(2 << 20)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    let e: Value = resp.json().await.unwrap();
    assert_eq!(e["error"]["code"], "payload_too_large", "{e}");

    // Clients without the scope: 403; unknown keys: 401; not a form: 415.
    let (s, e) = introspect(&w, &server, KEY, &access).await;
    assert_eq!((s, &e["error"]["code"]), (403, &json!("forbidden")), "{e}");
    assert_eq!(
        introspect(&w, &server, "nobody-0123456789", &access)
            .await
            .0,
        401
    );
    let (s, _, e) = w
        .call_full(
            "POST",
            format!("{}/v1/introspect", server.url()),
            Some(INTROSPECTOR),
            Some(json!({"token": access}).to_string()),
        )
        .await;
    assert_eq!(s, 415, "{e}");
    assert!(e["error"]["message"].is_string(), "{e}");

    // Revoked: both the session token and its unexpired access token go inactive.
    let (s, _) = w
        .call(
            "POST",
            format!("{}/v1/logout", server.url()),
            Some(&session),
            None,
        )
        .await;
    assert_eq!(s, 204);
    assert_eq!(
        introspect(&w, &server, INTROSPECTOR, &access).await.1,
        inactive
    );
    assert_eq!(
        introspect(&w, &server, INTROSPECTOR, &session).await.1,
        inactive
    );
}

#[tokio::test]
async fn apps_without_access_tokens_get_only_the_session() {
    let w = world().await;
    let mut c = config(&w, &sqlite_url());
    c.apps[1].access_tokens = false;
    let server = weapp_server::spawn(c).await.unwrap();
    let (code, _) = w
        .sim
        .sim()
        .login(&w.other_appid, None, None, false)
        .unwrap();
    let (s, v) = w.post_login(server.url(), &w.other_appid, &code).await;
    assert_eq!(s, 200, "{v}");
    assert!(v.get("access_token").is_none(), "{v}");
    let session = v["token"].as_str().unwrap();
    let (s, e) = w
        .call(
            "POST",
            format!("{}/v1/session/refresh", server.url()),
            Some(session),
            None,
        )
        .await;
    assert_eq!(
        (s, &e["error"]["code"]),
        (400, &json!("access_tokens_off")),
        "{e}"
    );
}

#[tokio::test]
async fn a_first_key_added_a_moment_later_by_another_instance_is_not_doubled() {
    use weapp_server::store::KeyGuard;
    let db = PgDatabase::create().await;
    for url in [sqlite_url(), db.url().to_owned()] {
        let store = weapp_server::store::connect(&url, &Default::default())
            .await
            .unwrap();
        let key = |t: i64| weapp_server::keys::jwt::generate(|p, _| p.to_vec(), "k1".into(), t, t);
        // Instance B read its clock (1,999), then waited for the lock while instance A, whose
        // clock read 2,000, added the fleet's first key: B must not add a second one.
        assert!(store
            .add_signing_key(&key(2_000), KeyGuard::NoSignerAt(2_000), None)
            .await
            .unwrap());
        assert!(
            !store
                .add_signing_key(&key(1_999), KeyGuard::NoSignerAt(1_999), None)
                .await
                .unwrap(),
            "{url}"
        );
        assert_eq!(store.signing_keys().await.unwrap().len(), 1, "{url}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_shares_one_keyring() {
    let w = world().await;
    let db = PgDatabase::create().await;
    let c = config(&w, db.url());
    // Three instances starting together on a new database make one key, not three.
    let (a, b, c3) = tokio::join!(
        weapp_server::spawn(c.clone()),
        weapp_server::spawn(c.clone()),
        weapp_server::spawn(c.clone())
    );
    let (a, b, _c3) = (a.unwrap(), b.unwrap(), c3.unwrap());
    let ka = jwks(&w, &a).await;
    assert_eq!(ka["keys"].as_array().unwrap().len(), 1, "{ka}");
    assert_eq!(ka, jwks(&w, &b).await);

    // A token from A works at B.
    let (_, access, openid) = login(&w, &a, &w.appid).await;
    let (s, me) = w
        .call("GET", format!("{}/v1/me", b.url()), Some(&access), None)
        .await;
    assert_eq!((s, &me["openid"]), (200, &json!(openid)));

    // A rotation on A is published and used by B within the registry poll.
    let (s, _) = w
        .call(
            "POST",
            format!("{}/v1/admin/signing-keys/rotate", a.url()),
            Some(ADMIN),
            Some(json!({"immediate": true})),
        )
        .await;
    assert_eq!(s, 201);
    let start = Instant::now();
    loop {
        let (_, t, _) = login(&w, &b, &w.appid).await;
        if kid_of(&t) != kid_of(&access) {
            verify_with(&jwks(&w, &a).await, &t).unwrap();
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "B still signs with the old key"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The key a session of a new (timed) token is stored by: its issue time, then 26 bytes of the
/// token's SHA-256 — computed here independently of the server's code.
fn timed_key(token: &str) -> Vec<u8> {
    let raw = B64URL.decode(&token["wa_".len()..]).unwrap();
    assert_eq!(raw.len(), 38, "6 bytes of time and 32 random ones");
    let mut key = raw[..6].to_vec();
    key.extend_from_slice(&sha256(token)[..26]);
    key
}

fn sha256(token: &str) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    Sha256::digest(token.as_bytes()).to_vec()
}

/// Session tokens carry their issue time, which leads the key their session is stored by (so
/// the sessions index grows at its end). A session of an earlier release — stored by the whole
/// SHA-256 of a token without the time — keeps working on every path until it ends: the user's
/// endpoints, refresh (its access tokens' `sid` is its key), introspection, logout.
#[tokio::test]
async fn session_tokens_of_both_formats_are_honoured() {
    let w = world().await;
    let db = sqlite_url();
    let server = weapp_server::spawn(config(&w, &db)).await.unwrap();
    let base = server.url().to_owned();

    let before = weapp_server::shared::now_ms();
    let (code, openid) = w.sim.sim().login(&w.appid, None, None, false).unwrap();
    let (s, v) = w.post_login(&base, &w.appid, &code).await;
    assert_eq!(s, 200, "{v}");
    let after = weapp_server::shared::now_ms();
    let token = v["token"].as_str().unwrap().to_owned();
    assert_eq!(token.len(), 54, "{token}");
    let key = timed_key(&token);
    let mut issued = [0u8; 8];
    issued[2..].copy_from_slice(&key[..6]);
    let issued = i64::from_be_bytes(issued);
    assert!(
        (before..=after).contains(&issued),
        "{before} ≤ {issued} ≤ {after}"
    );
    let store = weapp_server::store::connect(&db, &Default::default())
        .await
        .unwrap();
    assert!(store.session_exists(&key).await.unwrap());
    // Not where an earlier release would look (hence `session_tokens = "random"` while a
    // fleet still runs one).
    assert!(!store.session_exists(&sha256(&token)).await.unwrap());
    let keys = jwks(&w, &server).await;
    let claims = verify_with(&keys, v["access_token"].as_str().unwrap()).unwrap();
    assert_eq!(claims["sid"], B64URL.encode(&key));

    // A session written the way an earlier release wrote it.
    let earlier = format!("wa_{}", B64URL.encode(rand::random::<[u8; 32]>()));
    let now = weapp_server::shared::now_ms();
    store
        .record_logins(&[weapp_server::store::LoginWrite {
            appid: w.appid.clone(),
            openid: openid.clone(),
            unionid: None,
            session_key_enc: vec![1, 2, 3],
            key_id: "k".into(),
            token_hash: sha256(&earlier),
            now,
            expires_at: now + 3_600_000,
        }])
        .await
        .unwrap();
    let (s, me) = w
        .call("GET", format!("{base}/v1/me"), Some(&earlier), None)
        .await;
    assert_eq!((s, &me["openid"]), (200, &json!(openid)), "{me}");
    let (s, r) = w
        .call(
            "POST",
            format!("{base}/v1/session/refresh"),
            Some(&earlier),
            None,
        )
        .await;
    assert_eq!(s, 200, "{r}");
    let access = r["access_token"].as_str().unwrap().to_owned();
    let c = verify_with(&keys, &access).unwrap();
    assert_eq!(c["sid"], B64URL.encode(sha256(&earlier)));
    let (s, me) = w
        .call("GET", format!("{base}/v1/me"), Some(&access), None)
        .await;
    assert_eq!((s, &me["openid"]), (200, &json!(openid)), "{me}");
    for bearer in [&earlier, &access] {
        let (s, i) = introspect(&w, &server, INTROSPECTOR, bearer).await;
        assert_eq!((s, &i["active"]), (200, &json!(true)), "{i}");
        assert_eq!(i["sid"], c["sid"], "{i}");
    }

    let (s, _) = w
        .call("POST", format!("{base}/v1/logout"), Some(&earlier), None)
        .await;
    assert_eq!(s, 204);
    let (s, _) = w
        .call("GET", format!("{base}/v1/me"), Some(&earlier), None)
        .await;
    assert_eq!(s, 401, "an earlier session ends like any other");
    let (_, i) = introspect(&w, &server, INTROSPECTOR, &access).await;
    assert_eq!(i["active"], false, "{i}");
    let (s, _) = w
        .call("GET", format!("{base}/v1/me"), Some(&token), None)
        .await;
    assert_eq!(s, 200, "the new session lives on");
    server.shutdown().await.unwrap();
}

/// `session_tokens = "random"` (a rolling upgrade from an earlier release): logins issue the
/// earlier kind of token, stored by its whole SHA-256 — where an instance of that release looks.
#[tokio::test]
async fn random_session_tokens_are_what_earlier_releases_look_up() {
    let w = world().await;
    let db = sqlite_url();
    let mut c = config(&w, &db);
    c.session_tokens = weapp_server::config::SessionTokens::Random;
    let server = weapp_server::spawn(c).await.unwrap();
    let base = server.url().to_owned();
    let (code, openid) = w.sim.sim().login(&w.appid, None, None, false).unwrap();
    let (s, v) = w.post_login(&base, &w.appid, &code).await;
    assert_eq!(s, 200, "{v}");
    let token = v["token"].as_str().unwrap().to_owned();
    assert_eq!(token.len(), 46, "{token}");
    let store = weapp_server::store::connect(&db, &Default::default())
        .await
        .unwrap();
    assert!(store.session_exists(&sha256(&token)).await.unwrap());
    let (s, me) = w
        .call("GET", format!("{base}/v1/me"), Some(&token), None)
        .await;
    assert_eq!((s, &me["openid"]), (200, &json!(openid)), "{me}");
    server.shutdown().await.unwrap();
}
