//! `weapp demo`: the whole journey — wx.login → /v1/login → /v1/me → phone → decrypt → broker
//! token → logout — in-process against the sandbox, one printed step at a time.

use serde_json::{json, Value};
use weapp_server::Config;

use super::CmdResult;

/// Arguments of `weapp demo`.
#[derive(Debug, clap::Args)]
pub struct Args {}

struct Journey {
    http: reqwest::Client,
    server: String,
    sim: String,
    step: usize,
}

impl Journey {
    fn ok(&mut self, what: &str, detail: impl std::fmt::Display) {
        self.step += 1;
        println!("{:>2}. ✓ {what}: {detail}", self.step);
    }

    async fn call(
        &self,
        method: reqwest::Method,
        url: String,
        bearer: Option<&str>,
        body: Option<Value>,
    ) -> Result<(u16, Value), String> {
        let mut req = self.http.request(method, &url);
        if let Some(b) = bearer {
            req = req.bearer_auth(b);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.map_err(|e| format!("{url}: {e}"))?;
        let status = resp.status().as_u16();
        let text = resp.text().await.map_err(|e| e.to_string())?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
    }

    async fn expect(
        &self,
        method: reqwest::Method,
        url: String,
        bearer: Option<&str>,
        body: Option<Value>,
        want: u16,
    ) -> Result<Value, String> {
        let (status, v) = self.call(method, url.clone(), bearer, body).await?;
        if status != want {
            return Err(format!("{url} answered {status}, expected {want}: {v}"));
        }
        Ok(v)
    }
}

/// Runs the journey; fails on the first step that does not behave.
pub async fn run(_args: Args) -> CmdResult {
    let db = std::env::temp_dir().join(format!("weapp-demo-{}.db", std::process::id()));
    let config = Config {
        listen: "127.0.0.1:0".parse().expect("literal address"),
        database_url: format!("sqlite://{}", db.display()),
        ..Config::default()
    };
    let result = journey(config).await;
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
    result
}

async fn journey(config: Config) -> CmdResult {
    use reqwest::Method;
    let sandbox = weapp_server::sandbox::prepare(config, None)
        .await
        .map_err(|e| e.to_string())?;
    let key = sandbox
        .demo_client_key
        .clone()
        .ok_or("sandbox created no client key")?;
    let appid = sandbox.config.apps[0].appid.clone();
    let server = weapp_server::spawn(sandbox.config.clone())
        .await
        .map_err(|e| e.to_string())?;
    sandbox.connect(server.url()).map_err(|e| e.to_string())?;
    let mut j = Journey {
        http: reqwest::Client::new(),
        server: server.url().to_owned(),
        sim: sandbox.sim.url().to_owned(),
        step: 0,
    };
    println!(
        "weapp demo — server {} — WeChat simulator {} — app {appid}\n",
        j.server, j.sim
    );

    let login = j
        .expect(
            Method::POST,
            format!("{}/_sim/login", j.sim),
            None,
            Some(json!({"appid": appid})),
            200,
        )
        .await?;
    let code = login["code"]
        .as_str()
        .ok_or("no code from the simulator")?
        .to_owned();
    let openid = login["openid"].as_str().unwrap_or_default().to_owned();
    j.ok(
        "wx.login() in the mini program",
        format!("one-time code {}…", &code[..8]),
    );

    let session = j
        .expect(
            Method::POST,
            format!("{}/v1/login", j.server),
            None,
            Some(json!({"appid": appid, "code": code})),
            200,
        )
        .await?;
    let token = session["token"]
        .as_str()
        .ok_or("no session token")?
        .to_owned();
    if session.get("session_key").is_some() {
        return Err("the login response leaked session_key".into());
    }
    j.ok(
        "POST /v1/login",
        format!(
            "session {}… for openid {}, no session_key in the response",
            &token[..10],
            openid
        ),
    );

    let again = j
        .call(
            Method::POST,
            format!("{}/v1/login", j.server),
            None,
            Some(json!({"appid": appid, "code": code})),
        )
        .await?;
    if again.0 != 400 || again.1["error"]["wechat_errcode"] != 40163 {
        return Err(format!(
            "reusing the code should be 400 / 40163, got {} {}",
            again.0, again.1
        ));
    }
    j.ok(
        "the same code again",
        "400 invalid_code, WeChat errcode 40163 (codes are single-use)",
    );

    let me = j
        .expect(
            Method::GET,
            format!("{}/v1/me", j.server),
            Some(&token),
            None,
            200,
        )
        .await?;
    if me["openid"] != openid.as_str() {
        return Err(format!("/v1/me returned another user: {me}"));
    }
    j.ok(
        "GET /v1/me",
        format!(
            "openid {openid}, unionid {}",
            me["unionid"].as_str().unwrap_or("(none)")
        ),
    );

    let phone_code = j
        .expect(
            Method::POST,
            format!("{}/_sim/phone-code", j.sim),
            None,
            Some(json!({"appid": appid, "openid": openid, "phone": "13800138000"})),
            200,
        )
        .await?;
    let phone = j
        .expect(
            Method::POST,
            format!("{}/v1/me/phone", j.server),
            Some(&token),
            Some(json!({"code": phone_code["code"]})),
            200,
        )
        .await?;
    j.ok(
        "POST /v1/me/phone",
        format!(
            "bound {} (+{})",
            phone["pure_phone_number"].as_str().unwrap_or("?"),
            phone["country_code"].as_str().unwrap_or("?")
        ),
    );

    let sealed = j
        .expect(
            Method::POST,
            format!("{}/_sim/open-data", j.sim),
            None,
            Some(json!({"appid": appid, "openid": openid, "data": {"openGId": "tGdemo"}})),
            200,
        )
        .await?;
    let open = j
        .expect(
            Method::POST,
            format!("{}/v1/me/decrypt", j.server),
            Some(&token),
            Some(json!({"encrypted_data": sealed["encryptedData"], "iv": sealed["iv"]})),
            200,
        )
        .await?;
    if open["openGId"] != "tGdemo" {
        return Err(format!("decrypted data is wrong: {open}"));
    }
    j.ok(
        "POST /v1/me/decrypt",
        format!(
            "openGId tGdemo, watermark appid {}",
            open["watermark"]["appid"].as_str().unwrap_or("?")
        ),
    );

    let t = j
        .expect(
            Method::GET,
            format!("{}/v1/apps/{appid}/access_token", j.server),
            Some(&key),
            None,
            200,
        )
        .await?;
    j.ok(
        "GET /v1/apps/{appid}/access_token",
        format!("broker token valid for {} s", t["expires_in"]),
    );
    j.expect(
        Method::GET,
        format!("{}/v1/apps/{appid}/access_token", j.server),
        None,
        None,
        401,
    )
    .await?;
    j.ok("the same without a client key", "401");

    j.expect(
        Method::POST,
        format!("{}/v1/logout", j.server),
        Some(&token),
        None,
        204,
    )
    .await?;
    j.expect(
        Method::GET,
        format!("{}/v1/me", j.server),
        Some(&token),
        None,
        401,
    )
    .await?;
    j.ok("POST /v1/logout", "the session token no longer works (401)");

    server.shutdown().await.map_err(|e| e.to_string())?;
    println!("\nall {} steps passed", j.step);
    println!(
        "to click through the same journey yourself: `weapp serve --sandbox` and open the console it prints (a virtual phone, tokens, traffic, pushes, faults, the clock)"
    );
    Ok(())
}
