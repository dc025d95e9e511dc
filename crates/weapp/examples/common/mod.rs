//! Shared setup of the examples: a simulator (`WEAPP_API_BASE`, e.g. a running `weapp sim`, or
//! an in-process one), a fresh app registered through its control API, and a client for it.
#![allow(dead_code)]

use serde_json::{json, Value};
use weapp::{AppSecret, Client};

pub struct Demo {
    pub client: Client,
    pub appid: String,
    pub base: String,
    http: reqwest::Client,
    _sim: Option<weapp_sim::SimHandle>,
}

impl Demo {
    pub async fn start() -> Result<Demo, Box<dyn std::error::Error>> {
        let (base, sim) = match std::env::var("WEAPP_API_BASE") {
            Ok(base) => (base, None),
            Err(_) => {
                let sim = weapp_sim::spawn(weapp_sim::SimConfig::default()).await?;
                (sim.url().to_owned(), Some(sim))
            }
        };
        let http = reqwest::Client::new();
        let app: Value = http
            .post(format!("{base}/_sim/apps"))
            .json(&json!({"pages": ["pages/index/index", "pages/item/item"]}))
            .send()
            .await?
            .json()
            .await?;
        let appid = app["appid"].as_str().ok_or("no appid")?.to_owned();
        let secret = app["secret"].as_str().ok_or("no secret")?.to_owned();
        let client = Client::builder(&appid, AppSecret::new(secret))
            .base_url(&base)
            .build()?;
        println!("simulator {base}, app {appid}");
        Ok(Demo {
            client,
            appid,
            base,
            http,
            _sim: sim,
        })
    }

    /// A control-API call (what the WeChat app or console would do).
    pub async fn control(
        &self,
        path: &str,
        body: Value,
    ) -> Result<Value, Box<dyn std::error::Error>> {
        Ok(self
            .http
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await?
            .json()
            .await?)
    }

    /// A user who just opened the mini program.
    pub async fn user(&self) -> Result<String, Box<dyn std::error::Error>> {
        let v = self
            .control("/_sim/login", json!({"appid": self.appid}))
            .await?;
        Ok(v["openid"].as_str().ok_or("no openid")?.to_owned())
    }
}
