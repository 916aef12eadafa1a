//! Replacing a pattern while events flow (`PUT /api/v1/patterns/{name}?mode=`): with `drain`
//! (the default) every alert of the old version's partial matches still fires, labelled with the
//! old version, and no output mixes versions; with `restart` they are dropped. The draining
//! version survives a restart of the service.

mod common;

use common::TestServer;
use serde_json::{json, Value};

/// `A` then `second` within 10 s (the partial match waits for any later `second`).
fn pattern(second: &str) -> Value {
    json!({
        "name": "p", "within": "10s",
        "stages": [{"name": "a", "where": "type == 'A'"},
                   {"name": "b", "where": format!("type == '{second}'"), "contiguity": "followed_by_any"}]
    })
}

fn ev(key: &str, ts: i64, ty: &str) -> Value {
    json!({"key": key, "ts": ts, "type": ty})
}

/// The matches: (key, version, the A's time, the type of the second event).
async fn matches(s: &TestServer) -> Vec<(String, u64, i64, String)> {
    let mut got: Vec<_> = s
        .outputs("default", "?kind=match&after=0&limit=10000")
        .await
        .iter()
        .map(|o| {
            (
                o["key"].as_str().unwrap().to_string(),
                o["version"].as_u64().unwrap(),
                o["events"]["a"][0]["ts"].as_i64().unwrap(),
                o["events"]["b"][0]["type"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    got.sort();
    got
}

async fn run(mode: Option<&str>, restart_service: bool) -> Vec<(String, u64, i64, String)> {
    let dir = tempfile::tempdir().unwrap();
    let mut s = TestServer::start(dir.path()).await;
    s.register(&pattern("B")).await;
    let (_, doc) = s.get("/api/v1/patterns/p").await;
    assert_eq!(doc["version"], 1);
    // Ten keys start a partial match of version 1; a later event moves the watermark past them.
    let before: Vec<Value> = (0..10)
        .map(|k| ev(&format!("k{k}"), 1000 + k, "A"))
        .chain([ev("clock", 1500, "X")])
        .collect();
    s.events("default", &Value::Array(before)).await;
    let path = match mode {
        Some(m) => format!("/api/v1/patterns/p?mode={m}"),
        None => "/api/v1/patterns/p".to_string(),
    };
    let (status, doc) = s.put(&path, &pattern("C")).await;
    assert_eq!(status, 200, "{doc}");
    assert_eq!(doc["version"], 2);
    // The same definition again changes nothing.
    let (_, again) = s.put(&path, &pattern("C")).await;
    assert_eq!(again["version"], 2);
    let (_, held) = s.get("/api/v1/pipelines/default/keys/k3").await;
    let versions: Vec<(u64, bool)> = held["partial_matches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["version"].as_u64().unwrap(), p["draining"] == true))
        .collect();
    if mode == Some("restart") {
        assert!(versions.is_empty(), "{held}");
    } else {
        assert_eq!(versions, [(1, true)], "{held}");
    }
    if restart_service {
        s.stop().await;
        s = TestServer::start(dir.path()).await;
    }
    // Five keys start version 2; then every key gets a B and a C.
    let mut after: Vec<Value> = (0..5)
        .map(|k| ev(&format!("n{k}"), 2000 + k, "A"))
        .collect();
    // In time order (no out-of-orderness: a later time first would make the others late).
    after.extend((0..10).map(|k| ev(&format!("k{k}"), 3000 + k, "B")));
    after.extend((0..10).map(|k| ev(&format!("k{k}"), 3500 + k, "C")));
    after.extend((0..5).map(|k| ev(&format!("n{k}"), 4000 + k, "B")));
    after.extend((0..5).map(|k| ev(&format!("n{k}"), 4500 + k, "C")));
    after.push(ev("clock", 30_000, "X"));
    s.events("default", &Value::Array(after)).await;
    let got = matches(&s).await;
    // Version 1 held nothing after its partial matches timed out: it is gone.
    let (_, view) = s.get("/api/v1/pipelines/default").await;
    let mut gone = false;
    for _ in 0..40 {
        let (_, v) = s.get("/api/v1/pipelines/default").await;
        let stats = v["status"]["stats"]["patterns"].as_array().unwrap().clone();
        if stats.len() == 1 && stats[0]["version"] == 2 {
            gone = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(gone, "version 1 retired: {view}");
    s.stop().await;
    got
}

#[tokio::test]
async fn drain_fires_every_alert_of_the_old_version_and_mixes_none() {
    for restart_service in [false, true] {
        let got = run(None, restart_service).await;
        let mut want: Vec<(String, u64, i64, String)> = (0..10)
            .map(|k| (format!("k{k}"), 1, 1000 + k, "B".to_string()))
            .chain((0..5).map(|k| (format!("n{k}"), 2, 2000 + k, "C".to_string())))
            .collect();
        want.sort();
        assert_eq!(got, want, "restart of the service: {restart_service}");
    }
}

#[tokio::test]
async fn restart_drops_the_old_version_partial_matches() {
    let got = run(Some("restart"), false).await;
    let want: Vec<(String, u64, i64, String)> = (0..5)
        .map(|k| (format!("n{k}"), 2, 2000 + k, "C".to_string()))
        .collect();
    assert_eq!(got, want);
}

#[tokio::test]
async fn an_unknown_mode_is_refused_with_its_parameter() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path()).await;
    s.register(&pattern("B")).await;
    let (status, body) = s.put("/api/v1/patterns/p?mode=later", &pattern("C")).await;
    let error = common::assert_error(status, &body, 400, "bad_query");
    assert_eq!(error["details"]["parameter"], "mode");
    let (_, doc) = s.get("/api/v1/patterns/p").await;
    assert_eq!(doc["version"], 1, "nothing changed");
    s.stop().await;
}
