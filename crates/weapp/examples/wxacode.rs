//! Mini program codes: an unlimited code for a page and scene, written to `wxacode.png`.
//! Run: `cargo run -p weapp --example wxacode` (or with `WEAPP_API_BASE=http://127.0.0.1:9400`).

mod common;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let demo = common::Demo::start().await?;
    let png = demo
        .client
        .wxacode()
        .unlimited("item=42")
        .page("pages/item/item")
        .width(430)
        .send()
        .await?;
    std::fs::write("wxacode.png", &png.bytes)?;
    println!(
        "wrote wxacode.png ({} bytes, {})",
        png.bytes.len(),
        png.content_type
    );
    match demo.client.wxacode().unlimited("has space").send().await {
        Err(e) => println!("refused before sending: {e}"),
        Ok(_) => println!("unexpected success"),
    }
    Ok(())
}
