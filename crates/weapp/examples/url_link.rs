//! URL Scheme, URL Link and Short Link, and resolving them back.
//! Run: `cargo run -p weapp --example url_link`.

mod common;

use weapp::api::url_link::Expiry;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let demo = common::Demo::start().await?;
    let links = demo.client.url_link();
    let scheme = links
        .scheme()
        .path("pages/item/item")
        .query("id=42")
        .expiry(Expiry::InDays(7))
        .send()
        .await?;
    println!(
        "scheme {scheme} → {:?}",
        links.query_scheme(&scheme).await?.details
    );
    let url = links
        .link()
        .path("pages/index/index")
        .query("from=sms")
        .send()
        .await?;
    println!(
        "url link {url} → {:?}",
        links.query_url_link(&url).await?.details
    );
    println!(
        "short link {}",
        links
            .short_link("pages/item/item?id=42")
            .title("商品 42")
            .send()
            .await?
    );
    Ok(())
}
