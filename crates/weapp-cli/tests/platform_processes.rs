//! A third-party platform's fleet loses nothing when every process dies at once: three
//! `weapp serve` processes on Postgres and Redis serve a platform's merchants; all three are
//! killed with SIGKILL and Redis is flushed; three new processes — with WeChat unable to push a
//! new ticket meanwhile — get a component token from the stored ticket and serve every
//! merchant with its stored refresh token: no merchant authorizes again.

mod common;

use common::{serve, until, Server};

use std::time::Duration;

use serde_json::{json, Value};
use weapp_test_support::{unique_prefix, PgDatabase, RedisServer};

const ADMIN: &str = "admin-key-platform-procs-0123456";
const CLIENT: &str = "platform-procs-client-key-01234";
const COMPONENT: &str = "wxplatformprocs01";
const SECRET: &str = "platform-procs-secret-0123";
const TOKEN: &str = "platformprocs";
/// 43 characters of base64 (32 bytes of 0x2a).
const AES: &str = "KioqKioqKioqKioqKioqKioqKioqKioqKioqKioqKio";
const MERCHANTS: usize = 12;

async fn broker(http: &reqwest::Client, base: &str, appid: &str) -> (u16, Value) {
    let r = http
        .get(format!("{base}/v1/apps/{appid}/access_token"))
        .bearer_auth(CLIENT)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

async fn platform_view(http: &reqwest::Client, base: &str) -> Option<Value> {
    http.get(format!("{base}/v1/admin/platforms/{COMPONENT}"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()
}

/// `sim` (WeChat) sends the platform's pushes to `event_url`.
async fn point_wechat_at(http: &reqwest::Client, sim: &str, event_url: &str) {
    let r = http
        .post(format!("{sim}/_sim/platforms"))
        .json(
            &json!({"component_appid": COMPONENT, "secret": SECRET, "token": TOKEN,
            "encoding_aes_key": AES, "event_url": event_url}),
        )
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_every_instance_and_a_flushed_redis_lose_no_ticket_and_no_refresh_token() {
    let sim = weapp_sim::spawn(weapp_sim::SimConfig::default())
        .await
        .unwrap();
    let db = PgDatabase::create().await;
    let redis = RedisServer::start();
    let dir = std::env::temp_dir().join(unique_prefix("platform-kill").replace(':', "-"));
    std::fs::create_dir_all(&dir).unwrap();
    let toml = format!(
        "listen = \"127.0.0.1:0\"\ndatabase_url = \"{}\"\nredis_url = \"{}\"\nredis_prefix = \"{}\"\n\
         data_key = \"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\"\n\
         fleet_lease_ms = 2000\nauth_failure_limit_per_minute = 0\nadmin_rate_limit_per_minute = 0\n\
         webhook_allow_private = [\"127.0.0.0/8\"]\n\n\
         [[admins]]\nname = \"ops\"\nkey = \"{ADMIN}\"\n\n\
         [[clients]]\nname = \"platform-backend\"\nkey = \"{CLIENT}\"\napps = [\"*\"]\n\n\
         [[platforms]]\ncomponent_appid = \"{COMPONENT}\"\nsecret = \"{SECRET}\"\ntoken = \"{TOKEN}\"\n\
         encoding_aes_key = \"{AES}\"\napi_base = \"{}\"\n",
        db.url(),
        redis.url(),
        unique_prefix("platform-kill"),
        sim.url(),
    );
    let path = dir.join("weapp.toml");
    std::fs::write(&path, toml).unwrap();
    let http = reqwest::Client::new();
    let servers: Vec<Server> = (0..3).map(|_| serve(&path)).collect();
    let urls: Vec<String> = servers.iter().map(|s| s.url.clone()).collect();

    // WeChat pushes the ticket to the first instance.
    point_wechat_at(
        &http,
        sim.url(),
        &format!("{}/v1/platforms/{COMPONENT}/events", urls[0]),
    )
    .await;
    until(Duration::from_secs(10), "the ticket stored", async || {
        platform_view(&http, &urls[0])
            .await
            .is_some_and(|v| v["has_ticket"] == true)
    })
    .await;
    // Merchants authorize the platform (its onboarding page asks WeChat for pre-auth codes).
    let ticket = sim.sim().latest_ticket(COMPONENT).unwrap();
    let page_token = sim
        .sim()
        .component_token(&json!({"component_appid": COMPONENT, "component_appsecret": SECRET, "component_verify_ticket": ticket}))
        .unwrap()["component_access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut merchants = Vec::new();
    for _ in 0..MERCHANTS {
        let pre = sim
            .sim()
            .create_preauthcode(Some(&page_token), &json!({"component_appid": COMPONENT}))
            .unwrap()["pre_auth_code"]
            .as_str()
            .unwrap()
            .to_owned();
        let (merchant, _) = sim.sim().add_app(None, None, false);
        let v: Value = http
            .post(format!("{}/_sim/platforms/{COMPONENT}/authorize", sim.url()))
            .json(&json!({"pre_auth_code": pre, "authorizer_appid": merchant, "redirect_uri": "https://x"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(v["push"]["delivered"], true, "{v}");
        merchants.push(merchant);
    }
    until(
        Duration::from_secs(10),
        "every instance serves every merchant",
        async || {
            for u in &urls {
                for m in &merchants {
                    if broker(&http, u, m).await.0 != 200 {
                        return false;
                    }
                }
            }
            true
        },
    )
    .await;
    let query_auths = sim.sim().calls("/cgi-bin/component/api_query_auth");
    let component_tokens = sim.sim().component_tokens_issued(COMPONENT);

    // WeChat can no longer reach the fleet (no new ticket, no event can help), every process
    // dies without a goodbye, Redis loses everything.
    point_wechat_at(&http, sim.url(), "http://127.0.0.1:9/unreachable").await;
    for mut s in servers {
        s.child.kill().unwrap();
        s.child.wait().unwrap();
    }
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let () = redis::cmd("FLUSHALL").query_async(&mut conn).await.unwrap();

    // A new fleet: every merchant served, every token accepted by WeChat, no re-authorization.
    let servers: Vec<Server> = (0..3).map(|_| serve(&path)).collect();
    let urls: Vec<String> = servers.iter().map(|s| s.url.clone()).collect();
    for (i, m) in merchants.iter().enumerate() {
        let (s, v) = broker(&http, &urls[i % 3], m).await;
        assert_eq!(s, 200, "{m}: {v}");
        let works: Value = http
            .get(format!(
                "{}/wxaapi/newtmpl/getcategory?access_token={}",
                sim.url(),
                v["access_token"].as_str().unwrap()
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(works["errcode"], 0, "{m}: {works}");
    }
    // The merchants' users log in through the platform (component token from the stored
    // ticket: the cached one went with Redis).
    let (code, openid) = sim.sim().login(&merchants[0], None, None, false).unwrap();
    let r: Value = http
        .post(format!("{}/v1/login", urls[1]))
        .json(&json!({"appid": merchants[0], "code": code}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["openid"], openid.as_str(), "{r}");
    assert_eq!(
        sim.sim().calls("/cgi-bin/component/api_query_auth"),
        query_auths,
        "no merchant authorized again"
    );
    let fetched = sim.sim().component_tokens_issued(COMPONENT) - component_tokens;
    println!("component tokens fetched by the new fleet: {fetched}");
    assert_eq!(
        fetched, 1,
        "one component token for the new fleet, from the stored ticket"
    );
    let view = platform_view(&http, &urls[2]).await.unwrap();
    assert_eq!(view["merchants"], MERCHANTS, "{view}");
    for mut s in servers {
        let _ = s.child.kill();
        let _ = s.child.wait();
    }
    let _ = std::fs::remove_dir_all(&dir);
}
