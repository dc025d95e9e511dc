//! The OpenAPI document is the API's contract (schemathesis fuzzes the server against it, clients
//! are generated from it): it changes only on purpose. `tests/data/openapi.json` is the document
//! as reviewed; a change to a route, a schema or a description shows here first. After an
//! intended change, regenerate it with `WEAPP_UPDATE_OPENAPI=1 cargo nextest run -p weapp-server
//! --test openapi_document` and review the diff.

mod common;

use serde_json::Value;

#[tokio::test]
async fn the_served_openapi_document_is_the_reviewed_one() {
    let w = common::world().await;
    let config = w.config(&common::sqlite_url(), None, weapp::TokenMode::Stable);
    let server = weapp_server::spawn(config).await.unwrap();
    let served: Value = w
        .http
        .get(format!("{}/openapi.json", server.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/openapi.json");
    if std::env::var_os("WEAPP_UPDATE_OPENAPI").is_some() {
        let text = serde_json::to_string_pretty(&served).unwrap();
        std::fs::write(path, text + "\n").unwrap();
    }
    let reviewed: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    // Object keys compare regardless of order; arrays (parameters, tags, enums) in order.
    assert!(
        served == reviewed,
        "the OpenAPI document changed; if on purpose, regenerate tests/data/openapi.json (see this file's doc)"
    );
    // The document describes every route family the service has.
    let paths = served["paths"].as_object().unwrap();
    for route in [
        "/v1/login",
        "/v1/apps/{appid}/access_token",
        "/v1/apps/{appid}/push",
        "/v1/platforms/{component_appid}/events",
        "/v1/admin/apps",
        "/.well-known/jwks.json",
        "/healthz",
    ] {
        assert!(paths.contains_key(route), "{route} missing");
    }
    server.shutdown().await.unwrap();
}
