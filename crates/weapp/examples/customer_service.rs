//! Customer service: the user writes, we answer (typing indicator, text, image card).
//! Run: `cargo run -p weapp --example customer_service`.

mod common;

use serde_json::json;
use weapp::api::customer_service::CustomMessage;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let demo = common::Demo::start().await?;
    let openid = demo.user().await?;
    demo.control(
        "/_sim/user-message",
        json!({"appid": demo.appid, "openid": openid, "kind": "text", "content": "在吗？"}),
    )
    .await?;
    let cs = demo.client.customer_service();
    cs.typing(&openid, true).await?;
    cs.send(
        &openid,
        &CustomMessage::Text("您好，请问有什么可以帮您？".into()),
    )
    .await?;
    let media = demo
        .client
        .media()
        .upload_image("card.png", "image/png", b"\x89PNG\r\n\x1a\ncard".to_vec())
        .await?;
    cs.send(
        &openid,
        &CustomMessage::Image {
            media_id: media.media_id,
        },
    )
    .await?;
    println!("replied twice within the 48-hour window");
    Ok(())
}
