//! Patterns and pipelines persist in RocksDB: they are back after a restart on the same data dir.

mod common;

use common::{login_failures, single, TestServer};
use serde_json::json;

#[tokio::test]
async fn catalog_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path()).await;
    s.register(&login_failures()).await;
    s.register(&single("other", "x")).await;
    let (status, body) = s
        .post(
            "/api/v1/pipelines",
            &json!({"name": "logins", "key_by": "user", "patterns": ["login-failures"],
                    "watermark": {"out_of_orderness": "1s"}}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, _) = s.post("/api/v1/pipelines/logins/pause", &json!({})).await;
    assert_eq!(status, 200);
    let (status, _) = s.delete("/api/v1/patterns/other").await;
    assert_eq!(status, 204);
    s.stop().await;

    let s = TestServer::start(dir.path()).await;
    let (status, body) = s.get("/api/v1/patterns/login-failures").await;
    let mut shown = login_failures();
    shown["version"] = json!(1);
    assert_eq!((status, body), (200, shown));
    let (status, _) = s.get("/api/v1/patterns/other").await;
    assert_eq!(status, 404);
    let (status, body) = s.get("/api/v1/pipelines/logins").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["key_by"], "user");
    assert_eq!(body["watermark"]["out_of_orderness"], "1s");
    assert_eq!(body["patterns"], json!(["login-failures"]));
    assert_eq!(body["status"]["paused"], true);
    let (status, body) = s.get("/api/v1/pipelines").await;
    assert_eq!(status, 200);
    assert_eq!(body["pipelines"].as_array().unwrap().len(), 2);
    // Still paused after the restart.
    let (status, _) = s
        .post(
            "/api/v1/pipelines/logins/events",
            &json!({"user": "u", "ts": 1}),
        )
        .await;
    assert_eq!(status, 409);
    s.stop().await;
}

#[tokio::test]
async fn the_default_pipeline_can_be_turned_off() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::config(dir.path());
    config.default_pipeline = false;
    let s = TestServer::start_with(config).await;
    let (status, body) = s.get("/api/v1/pipelines").await;
    assert_eq!(status, 200);
    assert_eq!(body["pipelines"], json!([]));
    s.stop().await;
}
