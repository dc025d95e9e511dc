//! Temporary media: upload an image, download it again.
//! Run: `cargo run -p weapp --example media`.

mod common;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let demo = common::Demo::start().await?;
    let media = demo
        .client
        .media()
        .upload_image("a.png", "image/png", b"\x89PNG\r\n\x1a\nhello".to_vec())
        .await?;
    let back = demo.client.media().get(&media.media_id).await?;
    println!(
        "uploaded {} at {}, downloaded {} bytes ({})",
        media.media_id,
        media.created_at,
        back.bytes.len(),
        back.content_type
    );
    Ok(())
}
