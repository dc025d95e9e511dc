//! Content security: a text check with a typed verdict, an image check, a risk rank.
//! Run: `cargo run -p weapp --example security`.

mod common;

use weapp::api::security::{RiskScene, Scene};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let demo = common::Demo::start().await?;
    let openid = demo.user().await?;
    let sec = demo.client.security();
    for text in ["今天天气不错", "加微信领红包", "一起来赌博吧"] {
        let check = sec
            .msg_sec_check(text, Scene::Comment, &openid)
            .send()
            .await?;
        println!(
            "{text}: {:?} / {:?}",
            check.result.suggest, check.result.label
        );
    }
    sec.img_sec_check("a.png", "image/png", b"\x89PNG clean".to_vec())
        .await?;
    let rank = sec
        .user_risk_rank(&openid, RiskScene::Marketing, "203.0.113.7")
        .send()
        .await?;
    println!("risk rank {}", rank.risk_rank);
    Ok(())
}
