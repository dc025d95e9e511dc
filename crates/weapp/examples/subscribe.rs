//! Subscribe messages: pick a library template, add it, get the user's grant, send.
//! Run: `cargo run -p weapp --example subscribe`.

mod common;

use serde_json::json;
use weapp::api::subscribe::{Lang, MiniprogramState, SubscribeData};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let demo = common::Demo::start().await?;
    let s = demo.client.subscribe();
    for k in s.public_keywords(1001).await? {
        println!(
            "keyword {} {} ({}), e.g. {}",
            k.kid, k.name, k.rule, k.example
        );
    }
    let template_id = s.add_template(1001, &[2, 4, 7], "外卖送达").await?;
    let openid = demo.user().await?;
    // What wx.requestSubscribeMessage does when the user accepts:
    demo.control(
        "/_sim/subscribe-grant",
        json!({"appid": demo.appid, "openid": openid, "template_id": template_id}),
    )
    .await?;
    let data = SubscribeData::new()
        .set("thing1", "黄焖鸡米饭")?
        .set("amount2", "¥32.50")?
        .set("phrase3", "已送达")?;
    s.send(&openid, &template_id, data.clone())
        .page("pages/item/item?id=1")
        .state(MiniprogramState::Formal)
        .lang(Lang::ZhCn)
        .send()
        .await?;
    match s.send(&openid, &template_id, data).send().await {
        Err(e) => println!("sent; a second send needs a new grant: {e}"),
        Ok(_) => println!("unexpected: sent twice on one grant"),
    }
    Ok(())
}
