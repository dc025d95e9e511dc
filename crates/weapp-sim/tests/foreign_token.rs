//! The console's "another machine" buttons over raw HTTP: `POST /_sim/apps/{appid}/foreign-token`
//! fetches a classic token (the default, as before) or force-refreshes the stable token
//! (`{"kind": "stable_force"}`), and says which token it killed and when that one stops working;
//! `GET /_sim/clock` says how far the clock is from the wall clock (the console's push warning).

use serde_json::{json, Value};
use weapp_sim::{spawn, SimConfig, SimHandle, TOKEN_OVERLAP};

struct T {
    h: SimHandle,
    http: reqwest::Client,
    appid: String,
    secret: String,
}

impl T {
    async fn new() -> Self {
        let h = spawn(SimConfig::default()).await.unwrap();
        let (appid, secret) = h
            .sim()
            .add_app(Some("wx00000000000000fe".into()), None, false);
        T {
            h,
            http: reqwest::Client::new(),
            appid,
            secret,
        }
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> (u16, Value) {
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// The foreign fetch; `None` sends no body at all (what the console sent before).
    async fn foreign(&self, body: Option<Value>) -> (u16, Value) {
        let url = format!("{}/_sim/apps/{}/foreign-token", self.h.url(), self.appid);
        let req = self.http.post(url);
        self.send(match body {
            Some(b) => req.json(&b),
            None => req,
        })
        .await
    }

    /// What the app's server does: a plain `stable_token` call.
    async fn server_stable_token(&self) -> String {
        let (_, v) = self
            .send(
                self.http
                    .post(format!("{}/cgi-bin/stable_token", self.h.url()))
                    .json(&json!({"grant_type": "client_credential", "appid": self.appid, "secret": self.secret})),
            )
            .await;
        v["access_token"]
            .as_str()
            .expect("a stable token")
            .to_owned()
    }

    async fn server_classic_token(&self) -> String {
        let (_, v) = self
            .send(self.http.get(format!(
                "{}/cgi-bin/token?grant_type=client_credential&appid={}&secret={}",
                self.h.url(),
                self.appid,
                self.secret
            )))
            .await;
        v["access_token"]
            .as_str()
            .expect("a classic token")
            .to_owned()
    }

    /// 0 when WeChat accepts `token` (the probe then fails on its own argument: 40003),
    /// otherwise the token error.
    async fn probe(&self, token: &str) -> i64 {
        let (_, v) = self
            .send(self.http.get(format!(
                "{}/wxa/getpaidunionid?access_token={token}&openid=nobody&transaction_id=1",
                self.h.url()
            )))
            .await;
        match v["errcode"].as_i64().unwrap() {
            40003 => 0,
            other => other,
        }
    }

    async fn clock(&self) -> Value {
        self.send(self.http.get(format!("{}/_sim/clock", self.h.url())))
            .await
            .1
    }

    async fn advance(&self, secs: i64) {
        let (status, _) = self
            .send(
                self.http
                    .post(format!("{}/_sim/clock", self.h.url()))
                    .json(&json!({"advance_secs": secs})),
            )
            .await;
        assert_eq!(status, 200);
    }
}

/// The console shows a token as its first 8 characters and its length.
fn shown(token: &str) -> String {
    format!("{}…({} chars)", &token[..8], token.chars().count())
}

#[tokio::test]
async fn a_foreign_force_refresh_kills_the_servers_stable_token_after_five_minutes() {
    let t = T::new().await;
    let held = t.server_stable_token().await;
    assert_eq!(t.probe(&held).await, 0);
    let now = t.h.sim().now_ms();

    let (status, v) = t.foreign(Some(json!({"kind": "stable_force"}))).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["kind"], "stable_force");
    assert_eq!(v["path"], "/cgi-bin/stable_token");
    assert_eq!(v["token_kind"], "stable");
    assert_eq!(v["renewed"], true);
    assert_eq!(v["expires_in"], 7200);
    // Exactly the server's token was killed, and it stops working in 300 s of virtual time.
    let retired = v["retired"].as_array().unwrap();
    assert_eq!(retired.len(), 1, "{v}");
    assert_eq!(retired[0]["access_token"], shown(&held));
    assert_eq!(retired[0]["token_kind"], "stable");
    assert_eq!(retired[0]["works"], true);
    assert_eq!(
        retired[0]["valid_until"].as_i64().unwrap(),
        now + TOKEN_OVERLAP * 1000
    );
    assert_eq!(v["now"].as_i64().unwrap(), now);
    // The answer never carries a whole token.
    assert!(!v.to_string().contains(&held));
    assert_ne!(v["access_token"], shown(&held));

    // WeChat's grace: the old token works 299 s more, and is refused from the 300th on.
    t.advance(TOKEN_OVERLAP - 1).await;
    assert_eq!(t.probe(&held).await, 0);
    t.advance(1).await;
    assert_eq!(t.probe(&held).await, 40001);
    // The server's next plain stable_token call gets the other machine's token, which works.
    let fresh = t.server_stable_token().await;
    assert_ne!(fresh, held);
    assert_eq!(shown(&fresh), v["access_token"]);
    assert_eq!(t.probe(&fresh).await, 0);

    // The journal tells the console what happened, tokens masked.
    let (_, page) = t
        .send(
            t.http
                .get(format!("{}/_sim/events?kind=foreign_fetch", t.h.url())),
        )
        .await;
    let events = page["events"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{page}");
    let e = &events[0];
    assert_eq!(e["appid"], t.appid);
    assert_eq!(e["path"], "/cgi-bin/stable_token");
    assert_eq!(e["detail"]["kind"], "stable_force");
    assert_eq!(e["detail"]["retired"][0]["access_token"], shown(&held));
    assert!(!page.to_string().contains(&held));
}

#[tokio::test]
async fn the_default_foreign_fetch_is_still_classic_and_leaves_the_stable_token_alone() {
    let t = T::new().await;
    let stable = t.server_stable_token().await;
    let classic = t.server_classic_token().await;
    let now = t.h.sim().now_ms();

    // No body (what older consoles and scripts send), `{}` and `{"kind": "classic"}` alike.
    let (status, v) = t.foreign(None).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["kind"], "classic");
    assert_eq!(v["path"], "/cgi-bin/token");
    assert_eq!(v["token_kind"], "classic");
    let retired = v["retired"].as_array().unwrap();
    assert_eq!(retired.len(), 1, "{v}");
    assert_eq!(retired[0]["access_token"], shown(&classic));
    assert_eq!(
        retired[0]["valid_until"].as_i64().unwrap(),
        now + TOKEN_OVERLAP * 1000
    );
    // A second classic fetch kills the server's token at once (WeChat keeps one predecessor),
    // and the first foreign token gets its 300 s.
    let (_, v2) = t.foreign(Some(json!({}))).await;
    let retired2 = v2["retired"].as_array().unwrap();
    assert_eq!(retired2.len(), 2, "{v2}");
    let mine = retired2
        .iter()
        .find(|r| r["access_token"] == shown(&classic))
        .expect("the server's token");
    assert_eq!(mine["works"], false);
    assert_eq!(mine["valid_until"].as_i64().unwrap(), now);
    assert_eq!(t.probe(&classic).await, 40001);
    let (_, v3) = t.foreign(Some(json!({"kind": "classic"}))).await;
    assert_eq!(v3["kind"], "classic");

    // The stable token is not touched by any of it, even once the overlap has passed.
    t.advance(TOKEN_OVERLAP + 1).await;
    assert_eq!(t.probe(&stable).await, 0);
    assert_eq!(t.server_stable_token().await, stable);
}

#[tokio::test]
async fn a_second_foreign_force_within_30_seconds_kills_nothing() {
    let t = T::new().await;
    let held = t.server_stable_token().await;
    let (_, first) = t.foreign(Some(json!({"kind": "stable_force"}))).await;
    assert_eq!(first["retired"].as_array().unwrap().len(), 1);
    t.advance(10).await;
    // WeChat answers the current token: no new token, nothing retired.
    let (status, again) = t.foreign(Some(json!({"kind": "stable_force"}))).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["renewed"], false);
    assert_eq!(again["access_token"], first["access_token"]);
    assert_eq!(again["retired"], json!([]));
    // Past the spacing, a force retires the first foreign token and, at once, the server's
    // (already retired) one — WeChat keeps a single predecessor.
    t.advance(30).await;
    let (_, third) = t.foreign(Some(json!({"kind": "stable_force"}))).await;
    assert_eq!(third["renewed"], true);
    let retired = third["retired"].as_array().unwrap();
    assert_eq!(retired.len(), 2, "{third}");
    assert!(retired
        .iter()
        .any(|r| r["access_token"] == shown(&held) && r["works"] == false));
    assert!(retired
        .iter()
        .any(|r| r["access_token"] == first["access_token"] && r["works"] == true));
}

#[tokio::test]
async fn foreign_fetch_refuses_unknown_kinds_and_apps() {
    let t = T::new().await;
    let (status, v) = t.foreign(Some(json!({"kind": "laptop"}))).await;
    assert_eq!(status, 400, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("unknown variant"),
        "{v}"
    );
    let (status, _) = t.foreign(Some(json!({"kind": "classic", "x": 1}))).await;
    assert_eq!(status, 400);
    let (status, v) = t
        .send(
            t.http
                .post(format!("{}/_sim/apps/wxnobody/foreign-token", t.h.url()))
                .json(&json!({"kind": "stable_force"})),
        )
        .await;
    assert_eq!(status, 404, "{v}");
}

#[tokio::test]
async fn the_clock_says_how_far_it_is_from_the_wall_clock() {
    let t = T::new().await;
    let v = t.clock().await;
    assert!(v["offset_secs"].as_i64().unwrap().abs() <= 2, "{v}");
    t.advance(301).await;
    let v = t.clock().await;
    let off = v["offset_secs"].as_i64().unwrap();
    assert!((299..=302).contains(&off), "{v}");
    assert_eq!(t.h.sim().clock_offset_secs(), off);
    // resync answers the offset too: back at the wall clock.
    let (_, v) = t
        .send(
            t.http
                .post(format!("{}/_sim/clock", t.h.url()))
                .json(&json!({"resync": true})),
        )
        .await;
    assert!(v["offset_secs"].as_i64().unwrap().abs() <= 1, "{v}");
    assert_eq!(v["real_time"], true);
}

#[tokio::test]
async fn a_backend_may_tell_its_push_replay_window() {
    let t = T::new().await;
    let url = format!("{}/_sim/apps/{}/backend", t.h.url(), t.appid);
    let mut backend = serde_json::to_value(
        weapp_sim::Backend::weapp_server("http://127.0.0.1:9").replay_window(120),
    )
    .unwrap();
    assert_eq!(backend["replay_window_secs"], 120);
    let (status, v) = t.send(t.http.put(&url).json(&backend)).await;
    assert_eq!(status, 200, "{v}");
    let (_, v) = t.send(t.http.get(&url)).await;
    assert_eq!(v["backend"]["replay_window_secs"], 120);
    // Unset is weapp-server's default (the field is absent); more than a day is refused.
    backend["replay_window_secs"] = json!(86_401);
    let (status, _) = t.send(t.http.put(&url).json(&backend)).await;
    assert_eq!(status, 400);
    let plain =
        serde_json::to_value(weapp_sim::Backend::weapp_server("http://127.0.0.1:9")).unwrap();
    assert!(plain.get("replay_window_secs").is_none());
}
