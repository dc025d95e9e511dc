//! OpenAPI management: quotas, and looking up a failed request by its rid.
//! Run: `cargo run -p weapp --example openapi`.

mod common;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let demo = common::Demo::start().await?;
    let q = demo.client.openapi().quota("/cgi-bin/stable_token").await?;
    println!(
        "stable_token: {} of {} used today",
        q.quota.used, q.quota.daily_limit
    );
    if let Err(e) = demo.client.auth().code_to_session("an-expired-code").await {
        if let Some(rid) = e.rid() {
            let req = demo.client.openapi().rid(rid).await?;
            println!(
                "rid {rid}: {} answered {}",
                req.request_url, req.response_body
            );
        }
    }
    Ok(())
}
