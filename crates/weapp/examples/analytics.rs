//! Analytics: yesterday's visit trend, pages and portrait.
//! Run: `cargo run -p weapp --example analytics`.

mod common;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let demo = common::Demo::start().await?;
    let day = weapp_test_support::beijing_date(-1);
    let a = demo.client.analytics();
    println!("{:?}", a.daily_visit_trend(&day).await?);
    for p in a.visit_page(&day).await?.list {
        println!("{}: {} visits", p.page_path, p.page_visit_pv);
    }
    for p in a.user_portrait(&day, 7).await?.visit_uv.province {
        println!("{}: {} users over 7 days", p.name, p.value);
    }
    Ok(())
}
