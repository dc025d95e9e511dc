//! Merchants added at runtime through the admin API (`/v1/admin/merchants`): created, listed,
//! shown, changed (keys rotated) and deleted; their keys sealed and never in an answer or a
//! log line; invalid or forged keys refused with nothing stored; the file's merchants
//! read-only; and a merchant created at one instance taking orders and notifications at
//! another (PostgreSQL).

mod common;
#[path = "common/pay_world.rs"]
mod pay_world;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::sqlite_url;
use pay_world::PayWorld;
use serde_json::{json, Value};
use weapp_test_support::PgDatabase;

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Rows of `pay_merchants` in a SQLite database.
async fn stored_merchants(database_url: &str) -> i64 {
    use sqlx::Row;
    let pool = sqlx::SqlitePool::connect(database_url).await.unwrap();
    sqlx::query("SELECT COUNT(*) AS n FROM pay_merchants")
        .fetch_one(&pool)
        .await
        .unwrap()
        .get::<i64, _>("n")
}

/// The secret parts of a PEM (its base64 lines), to look for anywhere.
fn key_lines(pem: &str) -> Vec<String> {
    pem.lines()
        .filter(|l| !l.starts_with("-----") && l.len() > 20)
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merchants_are_created_listed_changed_and_deleted_and_no_key_is_ever_shown_or_logged() {
    let capture = Capture::default();
    let writer = capture.clone();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("trace"))
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();

    let t = PayWorld::new().await;
    let db = sqlite_url();
    let s = t.spawn(&db).await;
    let other = t.w.other_appid.clone();
    let mut answers: Vec<Value> = Vec::new();

    // No merchant takes the other app's orders yet.
    let (st, v) = t.order(&s, &other, "rt_order_0001", 100).await;
    assert_eq!(st, 404, "{v}");

    let (st, created) = t
        .admin(&s, "POST", "/v1/admin/merchants", Some(t.admin_body()))
        .await;
    assert_eq!(st, 201, "{created}");
    assert_eq!(created["mchid"], t.other_mchid().as_str());
    assert_eq!(created["source"], "admin");
    assert_eq!(created["has_private_key"], true);
    assert_eq!(created["has_apiv3_key"], true);
    assert_eq!(created["served"], true);
    answers.push(created);

    // The same mchid again: 409.
    let (st, v) = t
        .admin(&s, "POST", "/v1/admin/merchants", Some(t.admin_body()))
        .await;
    assert_eq!(st, 409, "{v}");
    answers.push(v);

    let (st, list) = t.admin(&s, "GET", "/v1/admin/merchants", None).await;
    assert_eq!(st, 200, "{list}");
    let merchants = list["merchants"].as_array().unwrap();
    assert_eq!(merchants.len(), 2, "{list}");
    let source_of = |mchid: &str| {
        merchants
            .iter()
            .find(|m| m["mchid"] == mchid)
            .map(|m| m["source"].clone())
            .unwrap()
    };
    assert_eq!(source_of(&t.mchid()), "config");
    assert_eq!(source_of(&t.other_mchid()), "admin");
    answers.push(list.clone());

    let path = format!("/v1/admin/merchants/{}", t.other_mchid());
    let (st, one) = t.admin(&s, "GET", &path, None).await;
    assert_eq!(st, 200, "{one}");
    assert_eq!(one["appids"], json!([other]));
    answers.push(one);

    // The runtime merchant takes the other app's orders and its notification.
    let paid = t.order_and_pay(&s, &other, "rt_order_0001", 100).await;
    assert_eq!(paid["mchid"], t.other_mchid().as_str());
    assert_eq!(t.events(&s, &other, "TRANSACTION.SUCCESS").await.len(), 1);

    // A rotation: new keys given (the simulator's, again), a new notify URL; omitted ones kept.
    let (st, updated) = t
        .admin(
            &s,
            "PUT",
            &path,
            Some(json!({
                "private_key": t.other_issued["merchant_private_key"],
                "apiv3_key": t.other_issued["apiv3_key"],
                "notify_url": format!("{}/notify/{}", t.relay.url, t.other_mchid()),
            })),
        )
        .await;
    assert_eq!(st, 200, "{updated}");
    assert!(updated["updated_at"].as_i64() >= one_updated(&answers));
    answers.push(updated);
    // Only the settings: the keys are kept, and it still serves.
    let (st, v) = t
        .admin(
            &s,
            "PUT",
            &path,
            Some(json!({"serial_no": t.other_issued["merchant_serial_no"]})),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    answers.push(v);
    t.order_and_pay(&s, &other, "rt_order_0002", 200).await;
    // The mchid of the path cannot change; an unknown field is refused.
    let (st, v) = t.admin(&s, "PUT", &path, Some(json!({"mchid": "1"}))).await;
    assert_eq!(st, 400, "{v}");
    let (st, v) = t
        .admin(&s, "PUT", &path, Some(json!({"secret": "x"})))
        .await;
    assert_eq!(st, 400, "{v}");
    // The file's merchant cannot be changed or deleted here.
    let file_path = format!("/v1/admin/merchants/{}", t.mchid());
    let (st, v) = t
        .admin(
            &s,
            "PUT",
            &file_path,
            Some(json!({"notify_url": "https://x.example/n"})),
        )
        .await;
    assert_eq!(st, 409, "{v}");
    let (st, v) = t.admin(&s, "DELETE", &file_path, None).await;
    assert_eq!(st, 409, "{v}");
    let (st, v) = t.admin(&s, "GET", &file_path, None).await;
    assert_eq!((st, v["source"].clone()), (200, json!("config")), "{v}");
    answers.push(v);

    // Deleted: no longer served, orders refused.
    let (st, v) = t.admin(&s, "DELETE", &path, None).await;
    assert_eq!(st, 204, "{v}");
    let (st, v) = t.admin(&s, "GET", &path, None).await;
    assert_eq!(st, 404, "{v}");
    let (st, v) = t.order(&s, &other, "rt_order_0003", 100).await;
    assert_eq!(st, 404, "{v}");
    assert_eq!(stored_merchants(&db).await, 0);

    // Audited.
    let (st, audit) = t.admin(&s, "GET", "/v1/admin/audit", None).await;
    assert_eq!(st, 200, "{audit}");
    let text = audit.to_string();
    for action in ["merchant.create", "merchant.update", "merchant.delete"] {
        assert!(text.contains(action), "{action} not audited: {text}");
    }
    answers.push(audit);

    // No key in any answer or log line.
    let private_key = t.other_issued["merchant_private_key"].as_str().unwrap();
    let apiv3 = t.other_issued["apiv3_key"].as_str().unwrap();
    let logs = String::from_utf8_lossy(&capture.0.lock().unwrap()).into_owned();
    let answers = serde_json::to_string(&answers).unwrap();
    for needle in key_lines(private_key)
        .iter()
        .map(String::as_str)
        .chain([apiv3])
    {
        assert!(!answers.contains(needle), "a key in an answer");
        assert!(!logs.contains(needle), "a key in a log line");
    }
    assert!(logs.contains("merchant.create"), "the capture works");
}

fn one_updated(answers: &[Value]) -> Option<i64> {
    answers[0]["updated_at"].as_i64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_or_forged_keys_and_taken_apps_are_refused_and_nothing_is_stored() {
    let t = PayWorld::new().await;
    let db = sqlite_url();
    let s = t.spawn(&db).await;
    let body = t.admin_body();
    let with = |field: &str, value: Value| {
        let mut b = body.clone();
        b[field] = value;
        b
    };
    let pem = body["private_key"].as_str().unwrap();
    // A PEM whose body was altered (a forged key), one cut short, a made-up one.
    let forged = {
        let mut lines: Vec<String> = pem.lines().map(str::to_owned).collect();
        lines[3] = lines[3].chars().rev().collect();
        lines.join("\n")
    };
    let cut = pem.lines().take(5).collect::<Vec<_>>().join("\n");
    let cases = [
        with("private_key", json!(forged)),
        with("private_key", json!(cut)),
        with(
            "private_key",
            json!("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----"),
        ),
        with("apiv3_key", json!("0123456789abcdef0123456789abcde")),
        with("apiv3_key", json!("0123456789abcdef0123456789abcdef0")),
        with("public_key", json!("not a key")),
        with("mchid", json!("12ab")),
        with("notify_url", json!("not a url")),
        with("appids", json!([])),
    ];
    for case in cases {
        let (st, v) = t.admin(&s, "POST", "/v1/admin/merchants", Some(case)).await;
        assert_eq!(st, 400, "{v}");
        assert!(v["error"]["message"].is_string(), "{v}");
    }
    // An app another merchant serves (the file's), and the file's mchid: 409.
    let (st, v) = t
        .admin(
            &s,
            "POST",
            "/v1/admin/merchants",
            Some(with("appids", json!([t.w.appid]))),
        )
        .await;
    assert_eq!(st, 409, "{v}");
    let (st, v) = t
        .admin(
            &s,
            "POST",
            "/v1/admin/merchants",
            Some(with("mchid", json!(t.mchid()))),
        )
        .await;
    assert_eq!(st, 409, "{v}");
    // Without the admin key: 401.
    let (st, _) =
        t.w.call(
            "POST",
            format!("{}/v1/admin/merchants", s.url()),
            None,
            Some(body.clone()),
        )
        .await;
    assert_eq!(st, 401);
    assert_eq!(stored_merchants(&db).await, 0);
    let (_, list) = t.admin(&s, "GET", "/v1/admin/merchants", None).await;
    assert_eq!(list["merchants"].as_array().unwrap().len(), 1, "{list}");

    // A valid one, then a PUT with a forged key: refused, the stored one still serves.
    let (st, v) = t
        .admin(&s, "POST", "/v1/admin/merchants", Some(body.clone()))
        .await;
    assert_eq!(st, 201, "{v}");
    let path = format!("/v1/admin/merchants/{}", t.other_mchid());
    let (st, v) = t
        .admin(&s, "PUT", &path, Some(json!({"private_key": forged})))
        .await;
    assert_eq!(st, 400, "{v}");
    let (st, v) = t
        .admin(&s, "PUT", &path, Some(json!({"appids": [t.w.appid]})))
        .await;
    assert_eq!(st, 409, "{v}");
    t.order_and_pay(&s, &t.w.other_appid, "rt_order_0101", 300)
        .await;
}

/// One column of a runtime merchant's row in a SQLite database.
async fn merchant_column(database_url: &str, mchid: &str, column: &str) -> String {
    use sqlx::Row;
    let pool = sqlx::SqlitePool::connect(database_url).await.unwrap();
    sqlx::query(&format!(
        "SELECT {column} AS v FROM pay_merchants WHERE mchid = $1"
    ))
    .bind(mchid)
    .fetch_one(&pool)
    .await
    .unwrap()
    .get::<String, _>("v")
}

/// Writes one column of a runtime merchant's row directly (someone with write access to the
/// database, not the admin API).
async fn set_merchant_column(database_url: &str, mchid: &str, column: &str, value: &str) {
    let pool = sqlx::SqlitePool::connect(database_url).await.unwrap();
    sqlx::query(&format!(
        "UPDATE pay_merchants SET {column} = $1 WHERE mchid = $2"
    ))
    .bind(value)
    .bind(mchid)
    .execute(&pool)
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_public_key_or_apps_changed_in_the_database_make_the_merchant_not_load() {
    let t = PayWorld::new().await;
    let db = sqlite_url();
    let s = t.spawn(&db).await;
    let other = t.w.other_appid.clone();
    let mchid = t.other_mchid();
    let path = format!("/v1/admin/merchants/{mchid}");
    let (st, v) = t
        .admin(&s, "POST", "/v1/admin/merchants", Some(t.admin_body()))
        .await;
    assert_eq!(st, 201, "{v}");
    t.order_and_pay(&s, &other, "seal_order_0001", 100).await;
    let served = |want: bool| {
        let (t, s, path) = (&t, &s, &path);
        async move {
            common::within(
                std::time::Duration::from_secs(10),
                if want { "served" } else { "not served" },
                || async move { t.admin(s, "GET", path, None).await.1["served"] == want },
            )
            .await;
        }
    };

    // Someone who can write the table swaps in a public key of their own (here: another
    // merchant's WeChat Pay key, valid and different): notifications signed with its private
    // key would verify. The sealed keys no longer open, so the merchant is not served at all.
    let original = merchant_column(&db, &mchid, "settings").await;
    let mut settings: Value = serde_json::from_str(&original).unwrap();
    assert_eq!(
        settings["public_key"],
        t.other_issued["wechatpay_public_key"]
    );
    settings["public_key"] = t.issued["wechatpay_public_key"].clone();
    set_merchant_column(&db, &mchid, "settings", &settings.to_string()).await;
    served(false).await;
    let (st, v) = t.order(&s, &other, "seal_order_0002", 100).await;
    assert_eq!(st, 404, "{v}");
    let (st, _) =
        t.w.call(
            "POST",
            format!("{}/v1/pay/{mchid}/notify", s.url()),
            None,
            Some(json!({"id": "forged"})),
        )
        .await;
    assert_eq!(st, 404, "no merchant here to verify it");

    // The settings as the admin API wrote them: served again (the same sealed keys).
    set_merchant_column(&db, &mchid, "settings", &original).await;
    served(true).await;
    t.order_and_pay(&s, &other, "seal_order_0003", 100).await;

    // An app added in the database (to take its orders): not served either.
    let appids = json!([other, t.w.appid]).to_string();
    set_merchant_column(&db, &mchid, "appids", &appids).await;
    served(false).await;
    let (st, v) = t.order(&s, &other, "seal_order_0004", 100).await;
    assert_eq!(st, 404, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merchant_created_at_one_instance_serves_orders_and_notifications_at_another_on_postgres()
{
    let t = PayWorld::new().await;
    let db = PgDatabase::create().await;
    let a = t.spawn(db.url()).await;
    let b = t.spawn(db.url()).await;
    let other = t.w.other_appid.clone();
    let (st, v) = t
        .admin(&a, "POST", "/v1/admin/merchants", Some(t.admin_body()))
        .await;
    assert_eq!(st, 201, "{v}");
    // B picks it up at its next poll.
    let path = format!("/v1/admin/merchants/{}", t.other_mchid());
    common::within(
        std::time::Duration::from_secs(10),
        "B serves the merchant",
        || async { t.admin(&b, "GET", &path, None).await.1["served"] == true },
    )
    .await;
    // An order placed at B, paid; the notification reaches both: one event.
    let paid = t.order_and_pay(&b, &other, "fleet_order_0001", 500).await;
    assert_eq!(paid["mchid"], t.other_mchid().as_str());
    let (_, at_a) = t.get_order(&a, &other, "fleet_order_0001").await;
    assert_eq!(at_a["state"], "SUCCESS", "{at_a}");
    assert_eq!(t.events(&a, &other, "TRANSACTION.SUCCESS").await.len(), 1);
    // Another merchant for the same app: 409.
    let mut body = t.admin_body();
    body["mchid"] = json!("1900000999");
    let (st, v) = t.admin(&b, "POST", "/v1/admin/merchants", Some(body)).await;
    assert_eq!(st, 409, "{v}");
    // Deleted at B: A stops serving it after a poll.
    let (st, _) = t.admin(&b, "DELETE", &path, None).await;
    assert_eq!(st, 204);
    common::within(
        std::time::Duration::from_secs(10),
        "A drops the merchant",
        || async { t.order(&a, &other, "fleet_order_0002", 100).await.0 == 404 },
    )
    .await;
}
