//! A third-party platform acting for a merchant: a ticket, the component token, the merchant
//! authorizing through the page, a client for the merchant's mini program, and its users'
//! login through the component.
//! Run: `cargo run -p weapp --example open_platform`.

mod common;

use std::sync::Arc;

use serde_json::json;
use weapp::open_platform::{AuthType, Component, MemoryPlatformStore, TicketStore};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The merchant's mini program (registered in the simulator) and a platform.
    let demo = common::Demo::start().await?;
    let platform = demo.control("/_sim/platforms", json!({})).await?;
    let component_appid = platform["component_appid"].as_str().ok_or("no appid")?;
    let store = Arc::new(MemoryPlatformStore::new());
    let component = Component::builder(
        component_appid,
        platform["secret"].as_str().ok_or("no secret")?,
        platform["token"].as_str().ok_or("no token")?,
        platform["encoding_aes_key"].as_str().ok_or("no key")?,
    )
    .base_url(&demo.base)
    .ticket_store(store.clone())
    .refresh_token_store(store.clone())
    .build()?;
    println!("platform {component_appid}");

    // WeChat pushes a ticket every ten minutes to the authorization-event URL, where
    // `Component::receive` verifies, decrypts and stores it. Here: one pushed on demand.
    let pushed = demo
        .control(
            &format!("/_sim/platforms/{component_appid}/ticket"),
            json!({}),
        )
        .await?;
    let ticket = pushed["ticket"].as_str().ok_or("no ticket")?;
    store.save(component_appid, ticket).await?;
    component.component_token().await?;
    println!("component token fetched from the stored ticket");

    // The merchant scans the authorization page.
    let pre = component.pre_auth_code().await?;
    println!(
        "authorization page: {}",
        component.authorization_url(
            &pre.pre_auth_code,
            "https://platform.example/authorized",
            AuthType::MiniProgram,
            None
        )
    );
    let scanned = demo
        .control(
            &format!("/_sim/platforms/{component_appid}/authorize"),
            json!({"pre_auth_code": pre.pre_auth_code, "authorizer_appid": demo.appid, "redirect_uri": "https://platform.example/authorized"}),
        )
        .await?;
    let auth_code = scanned["auth_code"].as_str().ok_or("no auth_code")?;
    let info = component.query_auth(auth_code).await?;
    println!(
        "{} authorized the platform ({} permission sets); its refresh token is saved",
        info.authorizer_appid,
        info.func_info.len()
    );

    // A client for the merchant's mini program: every API domain works with it.
    let merchant = component.authorizer(&info.authorizer_appid)?;
    let categories = merchant.subscribe().categories().await?;
    println!("the merchant's subscribe categories: {}", categories.len());

    // The merchant's users log in through the component.
    let openid = demo.user().await?;
    let code = demo
        .control(
            "/_sim/login",
            json!({"appid": demo.appid, "openid": openid}),
        )
        .await?;
    let session = component
        .code_to_session(&demo.appid, code["code"].as_str().ok_or("no code")?)
        .await?;
    println!("user {} logged in through the platform", session.openid);
    Ok(())
}
