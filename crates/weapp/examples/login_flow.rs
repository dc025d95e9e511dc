//! The login flow end to end against an in-process weapp-sim: wx.login → code_to_session →
//! check the session key → phone number → decrypt open data → access token.
//!
//! Run: `cargo run -p weapp --example login_flow`

use serde_json::json;
use weapp::crypto::DecryptOptions;
use weapp::{AppSecret, Client};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let sim = weapp_sim::spawn(weapp_sim::SimConfig::default()).await?;
    let (appid, secret) = sim.sim().add_app(None, None, false);
    println!("simulator at {} with app {appid}", sim.url());

    let client = Client::builder(&appid, AppSecret::new(secret))
        .base_url(sim.url())
        .build()?;

    // What the mini program does: wx.login() hands it a one-time code.
    let (code, _) = sim.sim().login(&appid, None, None, false)?;
    let session = client.auth().code_to_session(&code).await?;
    println!(
        "1. code_to_session → openid {} (session_key stays here: {:?})",
        session.openid, session.session_key
    );

    client
        .auth()
        .check_session_key(&session.openid, &session.session_key)
        .await?;
    println!("2. checksession → the session_key is current");

    let phone_code = sim
        .sim()
        .phone_code(&appid, &session.openid, Some("13800138000".into()))?;
    let phone = client.auth().get_phone_number(&phone_code).await?;
    println!(
        "3. getuserphonenumber → {} (+{})",
        phone.pure_phone_number, phone.country_code
    );

    let (data, iv) = sim
        .sim()
        .open_data(&appid, &session.openid, json!({"openGId": "tG-demo"}))?;
    let open =
        client
            .auth()
            .decrypt(&session.session_key, &iv, &data, &DecryptOptions::default())?;
    println!(
        "4. decrypt encryptedData → openGId {} (watermark checked)",
        open["openGId"]
    );

    let token = client.access_token().await?;
    println!("5. access token ready ({token:?}); second use is served from the cache");
    client.access_token().await?;
    println!(
        "   upstream token fetches: {}",
        sim.sim().calls("/cgi-bin/stable_token")
    );
    Ok(())
}
