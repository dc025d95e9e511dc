//! Shared helpers of the server tests: a simulator with two apps, configs, an HTTP caller.
#![allow(dead_code)]

use serde_json::Value;
use weapp_server::config::{AppConfig, ClientConfig};
use weapp_server::{Config, ServerHandle};
use weapp_sim::{SimConfig, SimHandle};

/// Reads the app's token.
pub const KEY: &str = "billing-key-0123456789";
/// Reads only the other app's token.
pub const OTHER_KEY: &str = "other-key-0123456789ab";

pub struct World {
    pub sim: SimHandle,
    pub appid: String,
    pub secret: String,
    pub other_appid: String,
    pub http: reqwest::Client,
}

pub async fn world() -> World {
    let sim = weapp_sim::spawn(SimConfig::default()).await.unwrap();
    let (appid, secret) = sim.sim().add_app(None, None, true);
    let (other_appid, _) = sim.sim().add_app(None, None, true);
    World {
        sim,
        appid,
        secret,
        other_appid,
        http: reqwest::Client::new(),
    }
}

impl World {
    pub fn config(
        &self,
        database_url: &str,
        redis_url: Option<String>,
        mode: weapp::TokenMode,
    ) -> Config {
        let other_secret = self
            .sim
            .sim()
            .add_app(Some(self.other_appid.clone()), None, true)
            .1;
        let app = |appid: &str, secret: &str| AppConfig {
            appid: appid.into(),
            secret: Some(secret.into()),
            secret_env: None,
            api_base: self.sim.url().into(),
            token_mode: mode,
            push: None,
            warm: None,
            access_tokens: true,
        };
        let client = |name: &str, key: &str, apps: &[&str]| ClientConfig {
            name: name.into(),
            key: Some(key.into()),
            key_env: None,
            key_sha256: None,
            apps: apps.iter().map(|s| s.to_string()).collect(),
            scopes: Some(vec![
                "token:read".into(),
                "token:invalidate".into(),
                "events:read".into(),
                "events:redeliver".into(),
            ]),
        };
        Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            database_url: database_url.into(),
            redis_url,
            redis_prefix: weapp_test_support::unique_prefix("server"),
            data_key: Some("MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=".into()),
            login_rate_limit_per_minute: 0,
            // The simulator and the tests' webhook receivers listen on loopback.
            webhook_allow_private: loopback(),
            apps: vec![
                app(&self.appid, &self.secret),
                app(&self.other_appid, &other_secret),
            ],
            clients: vec![
                client("billing", KEY, &[&self.appid]),
                client("other", OTHER_KEY, &[&self.other_appid]),
            ],
            ..Config::default()
        }
    }

    /// `(status, body)`; the body parsed as JSON when it is JSON, else a JSON string.
    pub async fn call(
        &self,
        method: &str,
        url: String,
        bearer: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let (s, _, v) = self
            .call_full(method, url, bearer, body.map(|b| b.to_string()))
            .await;
        (s, v)
    }

    pub async fn call_full(
        &self,
        method: &str,
        url: String,
        bearer: Option<&str>,
        raw_body: Option<String>,
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        let mut req = self.http.request(method.parse().unwrap(), url);
        if let Some(b) = bearer {
            req = req.bearer_auth(b);
        }
        if let Some(body) = raw_body {
            req = req.header("content-type", "application/json").body(body);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap();
        (
            status,
            headers,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// `POST {base}/v1/login {appid, code}`.
    pub async fn post_login(&self, base: &str, appid: &str, code: &str) -> (u16, Value) {
        self.call(
            "POST",
            format!("{base}/v1/login"),
            None,
            Some(serde_json::json!({"appid": appid, "code": code})),
        )
        .await
    }

    /// wx.login + POST /v1/login on `server`; returns (session token, openid).
    pub async fn login(&self, server: &ServerHandle, openid: Option<&str>) -> (String, String) {
        let (code, openid) = self
            .sim
            .sim()
            .login(&self.appid, openid.map(Into::into), None, false)
            .unwrap();
        let (s, v) = self
            .call(
                "POST",
                format!("{}/v1/login", server.url()),
                None,
                Some(serde_json::json!({"appid": self.appid, "code": code})),
            )
            .await;
        assert_eq!(s, 200, "{v}");
        (v["token"].as_str().unwrap().to_owned(), openid)
    }
}

/// What the tests' simulators and webhook receivers listen on: loopback, the only internal
/// range their servers may call (`webhook_allow_private`).
pub fn loopback() -> Vec<String> {
    vec!["127.0.0.0/8".into(), "::1".into()]
}

/// A fresh SQLite database file in the temp directory.
pub fn sqlite_url() -> String {
    let path = std::env::temp_dir().join(format!(
        "weapp-test-{}-{}.db",
        std::process::id(),
        weapp_test_support::free_port()
    ));
    format!("sqlite://{}", path.display())
}

/// Polls `f` every 50 ms until it is true; returns how long it took (panics after `limit`).
pub async fn within<F, Fut>(limit: std::time::Duration, what: &str, mut f: F) -> std::time::Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = std::time::Instant::now();
    loop {
        if f().await {
            return start.elapsed();
        }
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

impl World {
    /// What WeChat (the simulator) answers a mini program API call made with `token`
    /// (`errcode` 0: the token works).
    pub async fn call_with_token(&self, token: &str) -> Value {
        self.http
            .get(format!(
                "{}/wxaapi/newtmpl/getcategory?access_token={token}",
                self.sim.url()
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}
