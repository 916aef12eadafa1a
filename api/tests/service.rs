//! The service over real HTTP: every endpoint and its error cases.

mod common;

use common::{assert_error, login_failures, single, TestServer};
use serde_json::{json, Value};

// ---- Operations ----

#[tokio::test]
async fn health_ready_and_openapi() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path()).await;
    let (status, body) = s.get("/healthz").await;
    assert_eq!((status, body["status"].as_str()), (200, Some("ok")));
    let (status, body) = s.get("/readyz").await;
    assert_eq!((status, body["status"].as_str()), (200, Some("ready")));

    let (status, doc) = s.get("/api/v1/openapi.json").await;
    assert_eq!(status, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let expected = [
        ("get", "/healthz"),
        ("get", "/readyz"),
        ("get", "/metrics"),
        ("get", "/api/v1/openapi.json"),
        ("get", "/api/v1/patterns"),
        ("post", "/api/v1/patterns"),
        ("post", "/api/v1/patterns/validate"),
        ("get", "/api/v1/patterns/{name}"),
        ("put", "/api/v1/patterns/{name}"),
        ("delete", "/api/v1/patterns/{name}"),
        ("get", "/api/v1/pipelines"),
        ("post", "/api/v1/pipelines"),
        ("get", "/api/v1/pipelines/{name}"),
        ("put", "/api/v1/pipelines/{name}"),
        ("delete", "/api/v1/pipelines/{name}"),
        ("post", "/api/v1/pipelines/{name}/pause"),
        ("post", "/api/v1/pipelines/{name}/resume"),
        ("post", "/api/v1/pipelines/{name}/watermark"),
        ("post", "/api/v1/pipelines/{name}/events"),
        ("get", "/api/v1/pipelines/{name}/matches"),
        ("get", "/api/v1/pipelines/{name}/matches/stream"),
        ("get", "/api/v1/pipelines/{name}/keys/{key}"),
        ("post", "/api/v1/try"),
    ];
    for (method, path) in expected {
        assert!(
            doc["paths"][path][method]["responses"].is_object(),
            "{method} {path} is not in openapi.json"
        );
    }
    assert_eq!(
        doc["paths"].as_object().unwrap().len(),
        expected
            .iter()
            .map(|(_, p)| p)
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        "openapi.json lists a path that the service does not serve"
    );
    s.stop().await;
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_in_the_error_shape() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path()).await;
    let (status, body) = s.get("/api/v1/nothing").await;
    assert_error(status, &body, 404, "not_found");
    let (status, body) = s
        .send(s.request(reqwest::Method::PATCH, "/api/v1/patterns"))
        .await;
    assert_error(status, &body, 405, "method_not_allowed");
    let (status, body) = s.get("/api/v1/pipelines/nope").await;
    assert_error(status, &body, 404, "not_found");
    let (status, body) = s.get("/api/v1/pipelines/default/matches?kind=bogus").await;
    assert_error(status, &body, 400, "bad_query");
    let (status, body) = s.get("/api/v1/pipelines/default/matches?limit=-1").await;
    assert_error(status, &body, 400, "bad_query");
    s.stop().await;
}

// ---- Patterns ----

#[tokio::test]
async fn pattern_crud() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path()).await;
    let pattern = login_failures();

    let response = s
        .request(reqwest::Method::POST, "/api/v1/patterns")
        .json(&pattern)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(
        response.headers()["location"],
        "/api/v1/patterns/login-failures"
    );
    // Shown with its version: 1 when registered.
    let mut v1 = pattern.clone();
    v1["version"] = json!(1);
    assert_eq!(response.json::<Value>().await.unwrap(), v1);

    let (status, body) = s.get("/api/v1/patterns/login-failures").await;
    assert_eq!((status, &body), (200, &v1));
    let (status, body) = s.get("/api/v1/patterns").await;
    assert_eq!(status, 200);
    assert_eq!(body["patterns"], json!([v1]));

    // The name is taken.
    let (status, body) = s.post("/api/v1/patterns", &pattern).await;
    assert_error(status, &body, 409, "already_exists");

    // PUT replaces (200) or creates (201); the name comes from the path when missing.
    let mut v2 = pattern.clone();
    v2["within"] = json!("3s");
    let (status, body) = s.put("/api/v1/patterns/login-failures", &v2).await;
    let mut shown = v2.clone();
    shown["version"] = json!(2);
    assert_eq!((status, &body), (200, &shown));
    // What GET shows can be PUT back: the version is read-only, and the same definition
    // changes nothing.
    let (status, body) = s.put("/api/v1/patterns/login-failures", &shown).await;
    assert_eq!((status, &body), (200, &shown));
    let (_, body) = s.get("/api/v1/patterns/login-failures").await;
    assert_eq!(body["within"], "3s");
    let (status, body) = s
        .put(
            "/api/v1/patterns/other",
            &json!({"stages": [{"name": "x", "where": "type == 'x'"}]}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["name"], "other");
    let (status, body) = s
        .put("/api/v1/patterns/third", &single("not-third", "x"))
        .await;
    assert_error(status, &body, 400, "name_mismatch");

    let (status, _) = s.delete("/api/v1/patterns/login-failures").await;
    assert_eq!(status, 204);
    let (status, body) = s.get("/api/v1/patterns/login-failures").await;
    assert_error(status, &body, 404, "not_found");
    let (status, body) = s.delete("/api/v1/patterns/login-failures").await;
    assert_error(status, &body, 404, "not_found");
    s.stop().await;
}

#[tokio::test]
async fn pattern_validation_errors_have_locations() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path()).await;

    // A condition that does not parse: the error names the stage's `where`.
    let bad = json!({"name": "bad", "stages": [
        {"name": "a", "where": "type == 'a'"},
        {"name": "b", "where": "type == == 'b'"}
    ]});
    let (status, body) = s.post("/api/v1/patterns", &bad).await;
    let error = assert_error(status, &body, 400, "invalid_pattern");
    let errors = error["details"]["errors"].as_array().unwrap();
    assert!(
        errors
            .iter()
            .any(|e| e["path"].as_str().unwrap().starts_with("stages[1]")),
        "{body}"
    );
    let (status, _) = s.get("/api/v1/patterns/bad").await;
    assert_eq!(status, 404);

    // The dry run says the same, and stores nothing either way.
    let (status, body) = s.post("/api/v1/patterns/validate", &bad).await;
    assert_error(status, &body, 400, "invalid_pattern");
    let (status, body) = s.post("/api/v1/patterns/validate", &login_failures()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["valid"], true);
    assert_eq!(body["name"], "login-failures");
    assert_eq!(body["exists"], false);
    // With the automaton, its conditions as written.
    assert_eq!(body["automaton"]["window"], 2000);
    // Three consecutive failures never branch: the strict chain matcher runs them.
    assert_eq!(body["automaton"]["matcher"], "strict chain");
    let takes: Vec<&Value> = body["automaton"]["states"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["transitions"].as_array().unwrap())
        .filter(|t| t["action"] == "take")
        .map(|t| &t["condition"])
        .collect();
    assert_eq!(takes.len(), 3, "{body}");
    assert!(takes.iter().all(|c| *c == "type == 'fail'"), "{body}");
    let (status, _) = s.get("/api/v1/patterns/login-failures").await;
    assert_eq!(status, 404);

    // Malformed JSON: 400 with line and column.
    let (status, body) = s
        .post_raw(
            "/api/v1/patterns",
            Some("application/json"),
            "{\"name\": \"x\",\n \"stages\": [",
        )
        .await;
    let error = assert_error(status, &body, 400, "malformed_json");
    assert_eq!(error["details"]["line"], 2);

    // Wrong types.
    let (status, body) = s
        .post("/api/v1/patterns", &json!({"name": 5, "stages": []}))
        .await;
    let error = assert_error(status, &body, 400, "invalid_pattern");
    assert_eq!(error["details"]["errors"][0]["path"], "name");
    let (status, body) = s.post("/api/v1/patterns", &json!([1, 2])).await;
    assert_error(status, &body, 400, "invalid_pattern");
    let (status, body) = s
        .post("/api/v1/patterns", &json!({"name": "t", "stages": "none"}))
        .await;
    assert_error(status, &body, 400, "invalid_pattern");
    let (status, body) = s
        .post("/api/v1/patterns", &json!({"name": "a/b", "stages": []}))
        .await;
    assert_error(status, &body, 400, "invalid_pattern");

    // Not JSON at all.
    let (status, body) = s
        .post_raw("/api/v1/patterns", Some("text/plain"), "name: x")
        .await;
    assert_error(status, &body, 415, "unsupported_media_type");
    s.stop().await;
}

#[tokio::test]
async fn pattern_limits() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::config(dir.path());
    config.limits.max_pattern_stages = 2;
    config.limits.max_condition_length = 20;
    config.limits.max_window = cep_patterns::DurationMs(60_000);
    let s = TestServer::start_with(config).await;
    let pattern = json!({"name": "big", "within": "1h", "stages": [
        {"name": "a", "where": "type == 'a'"},
        {"name": "b", "where": "type == 'a very long condition'"},
        {"name": "c", "where": "type == 'c'", "contiguity": "followed_by"}
    ]});
    let (status, body) = s.post("/api/v1/patterns", &pattern).await;
    let error = assert_error(status, &body, 400, "invalid_pattern");
    let paths: Vec<&str> = error["details"]["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["within", "stages[1].where", "stages"]);
    // A window given as a number of milliseconds is held to the same limit.
    let pattern = json!({"name": "long", "within": 3_600_000, "stages": [{"name": "a"}]});
    let (status, body) = s.post("/api/v1/patterns", &pattern).await;
    let error = assert_error(status, &body, 400, "invalid_pattern");
    assert_eq!(error["details"]["errors"][0]["path"], "within");
    s.stop().await;
}

// ---- Limits and auth ----

#[tokio::test]
async fn huge_bodies_are_refused_with_413() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::config(dir.path());
    config.body_limit = 4096;
    let s = TestServer::start_with(config).await;
    let events: Vec<Value> = (0..500)
        .map(|i| json!({"key": "k", "ts": i, "type": "x"}))
        .collect();
    let (status, body) = s
        .post("/api/v1/pipelines/default/events", &json!(events))
        .await;
    assert_error(status, &body, 413, "payload_too_large");
    let huge = json!({"name": "p", "stages": [{"name": "a", "where": "x".repeat(10_000)}]});
    let (status, body) = s.post("/api/v1/patterns", &huge).await;
    assert_error(status, &body, 413, "payload_too_large");
    let (status, body) = s
        .post("/api/v1/pipelines", &json!({"name": "x".repeat(5000)}))
        .await;
    assert_error(status, &body, 413, "payload_too_large");
    // The service is still up and takes normal bodies.
    let report = s
        .events("default", &json!({"key": "k", "ts": 1, "type": "x"}))
        .await;
    assert_eq!(report["accepted"], 1);
    s.stop().await;
}

#[tokio::test]
async fn bearer_token_guards_everything_but_health() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::config(dir.path());
    config.auth_token = Some("s3cret-token".into());
    let s = TestServer::start_with(config).await;
    let anonymous = reqwest::Client::new();
    for path in [
        "/api/v1/patterns",
        "/api/v1/pipelines",
        "/metrics",
        "/api/v1/openapi.json",
        "/api/v1/pipelines/default/matches",
    ] {
        let response = anonymous.get(s.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 401, "{path}");
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "unauthorized");
        let response = anonymous
            .get(s.url(path))
            .bearer_auth("wrong")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401, "{path}");
    }
    let response = anonymous
        .post(s.url("/api/v1/pipelines/default/events"))
        .json(&json!({"key": "k", "ts": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    // The console's page and assets load without the token (the console asks for it and
    // sends it with each API call).
    for path in [
        "/healthz",
        "/readyz",
        "/",
        "/console/app.js",
        "/console/style.css",
    ] {
        let response = anonymous.get(s.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
    }
    let response = anonymous
        .post(s.url("/api/v1/try"))
        .json(&json!({"pattern": login_failures(), "steps": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    // With the token (the TestServer client sends it).
    let (status, body) = s.get("/api/v1/patterns").await;
    assert_eq!(status, 200, "{body}");
    s.stop().await;
}

// ---- Try ----

#[tokio::test]
async fn try_runs_a_pattern_step_by_step_without_storing() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path()).await;
    let fail = |key: &str, ts: i64| json!({"event": {"user": key, "ts": ts, "type": "fail"}});
    let body = json!({
        "pattern": login_failures(),
        "key_by": "user",
        "steps": [fail("alice", 1000), fail("alice", 1500), fail("bob", 1600), fail("alice", 1800),
                  {"watermark": 5000}]
    });
    let (status, r) = s.post("/api/v1/try", &body).await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["pattern"], "login-failures");
    let outputs: Vec<(String, String, i64)> = r["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o["kind"].as_str().unwrap().to_string(),
                o["key"].as_str().unwrap().to_string(),
                o["timestamp"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        outputs,
        [
            ("match".to_string(), "alice".to_string(), 1800),
            ("timeout".to_string(), "bob".to_string(), 3600)
        ]
    );
    assert_eq!(
        r["outputs"][0]["events"]["fail"].as_array().unwrap().len(),
        3
    );
    let steps = r["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 5);
    // An event waits for the watermark to pass it: after the first, nothing is alive.
    assert_eq!(steps[0]["watermark"], 999);
    assert_eq!(steps[0]["partial_matches"], json!([]));
    assert_eq!(
        steps[1]["partial_matches"],
        json!([{"key": "alice", "state": "fail:0", "start_timestamp": 1000, "times_out_at": 3000,
                "events": {"fail": [{"user": "alice", "ts": 1000, "type": "fail"}]}}])
    );
    // Alice's third failure (1800) is evaluated once the watermark passes it: at the last step,
    // which also times bob out.
    assert_eq!(steps[3]["outputs"], json!([]));
    assert_eq!(steps[4]["kind"], "watermark");
    assert_eq!(steps[4]["watermark"], 5000);
    assert_eq!(steps[4]["outputs"], json!([0, 1]));
    assert_eq!(steps[4]["partial_matches"], json!([]));
    // Nothing was stored.
    assert_eq!(s.get("/api/v1/patterns").await.1, json!({"patterns": []}));

    // A registered pattern by name gives the same answer.
    assert_eq!(s.post("/api/v1/patterns", &login_failures()).await.0, 201);
    let mut by_name = body.clone();
    by_name["pattern"] = json!("login-failures");
    let (status, mut named) = s.post("/api/v1/try", &by_name).await;
    assert_eq!(status, 200);
    // The registered pattern's outputs and partial matches carry its version.
    fn unversioned(v: &mut Value, seen: &mut usize) {
        match v {
            Value::Object(map) => {
                if map.remove("version") == Some(json!(1)) {
                    *seen += 1;
                }
                map.values_mut().for_each(|v| unversioned(v, seen));
            }
            Value::Array(items) => items.iter_mut().for_each(|v| unversioned(v, seen)),
            _ => {}
        }
    }
    let mut versions = 0;
    unversioned(&mut named, &mut versions);
    assert!(versions > 0, "{named}");
    assert_eq!(named, r);
    s.stop().await;
}

#[tokio::test]
async fn try_locates_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path()).await;
    let path_of = |error: &Value| error["details"]["errors"][0]["path"].clone();
    let bad_condition = json!({"name": "p", "stages": [{"name": "a", "where": "type == "}]});
    let (status, body) = s
        .post(
            "/api/v1/try",
            &json!({"pattern": bad_condition, "steps": []}),
        )
        .await;
    let error = assert_error(status, &body, 400, "invalid_pattern");
    assert_eq!(path_of(&error), "pattern.stages[0].where");
    assert_eq!(error["details"]["errors"][0]["column"], 9);

    let (status, body) = s
        .post("/api/v1/try", &json!({"pattern": "nope", "steps": []}))
        .await;
    let error = assert_error(status, &body, 400, "invalid_try");
    assert_eq!(path_of(&error), "pattern");

    let pattern = single("p", "a");
    let (status, body) = s
        .post(
            "/api/v1/try",
            &json!({"pattern": pattern, "steps": [{"event": {"key": "k", "ts": 1}}, {"event": {"ts": 2}}]}),
        )
        .await;
    let error = assert_error(status, &body, 400, "invalid_try");
    assert_eq!(path_of(&error), "steps[1].event");
    assert!(error["message"]
        .as_str()
        .unwrap()
        .contains("missing key field 'key'"));

    let (status, body) = s
        .post(
            "/api/v1/try",
            &json!({"pattern": pattern, "steps": [{"watermark": "soon"}]}),
        )
        .await;
    let error = assert_error(status, &body, 400, "invalid_try");
    assert_eq!(path_of(&error), "steps[0].watermark");

    let (status, body) = s
        .post(
            "/api/v1/try",
            &json!({"pattern": pattern, "steps": [], "extra": 1}),
        )
        .await;
    let error = assert_error(status, &body, 400, "invalid_try");
    assert_eq!(path_of(&error), "extra");

    let (status, body) = s
        .post_raw("/api/v1/try", Some("application/json"), "{\"pattern\": ")
        .await;
    assert_error(status, &body, 400, "malformed_json");

    let steps: Vec<Value> = (0..10_001).map(|i| json!({"watermark": i})).collect();
    let (status, body) = s
        .post("/api/v1/try", &json!({"pattern": pattern, "steps": steps}))
        .await;
    let error = assert_error(status, &body, 400, "invalid_try");
    assert_eq!(path_of(&error), "steps");
    s.stop().await;
}

// ---- Pipelines ----

#[tokio::test]
async fn pipeline_crud_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path()).await;
    s.register(&login_failures()).await;

    // The default pipeline exists without any call.
    let (status, body) = s.get("/api/v1/pipelines/default").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["key_by"], "key");
    assert_eq!(body["time"], json!({"field": "ts", "format": "epoch_ms"}));
    assert_eq!(body["patterns"], "*");
    assert_eq!(body["status"]["paused"], false);

    let spec = json!({
        "name": "logins",
        "key_by": "user.id",
        "time": {"field": "at", "format": "rfc3339"},
        "watermark": {"out_of_orderness": "1.5s", "idleness": "10s"},
        "patterns": ["login-failures"],
        "sinks": [{"type": "recent"}]
    });
    let (status, body) = s.post("/api/v1/pipelines", &spec).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["key_by"], "user.id");
    assert_eq!(body["watermark"]["out_of_orderness"], "1500ms");
    assert_eq!(body["patterns"], json!(["login-failures"]));
    let (status, body) = s.post("/api/v1/pipelines", &spec).await;
    assert_error(status, &body, 409, "already_exists");

    let (status, body) = s.get("/api/v1/pipelines").await;
    assert_eq!(status, 200);
    let names: Vec<&str> = body["pipelines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["default", "logins"]);

    // A GET answer can be PUT back; PUT changes the configuration.
    let (_, mut current) = s.get("/api/v1/pipelines/logins").await;
    current["key_by"] = json!("user.name");
    let (status, body) = s.put("/api/v1/pipelines/logins", &current).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["key_by"], "user.name");
    let (status, body) = s.put("/api/v1/pipelines/fresh", &json!({})).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["name"], "fresh");

    // A pattern a pipeline lists by name cannot be deleted.
    let (status, body) = s.delete("/api/v1/patterns/login-failures").await;
    let error = assert_error(status, &body, 409, "in_use");
    assert_eq!(error["details"]["pipelines"], json!(["logins"]));

    // Bad pipelines.
    let (status, body) = s
        .post(
            "/api/v1/pipelines",
            &json!({"name": "p", "patterns": ["nope"]}),
        )
        .await;
    let error = assert_error(status, &body, 422, "unknown_pattern");
    assert_eq!(error["details"]["patterns"], json!(["nope"]));
    let (status, body) = s
        .post("/api/v1/pipelines", &json!({"name": "p", "key_by": 5}))
        .await;
    let error = assert_error(status, &body, 422, "invalid_pipeline");
    assert_eq!(error["details"][0]["path"], "key_by");
    let (status, body) = s
        .post(
            "/api/v1/pipelines",
            &json!({"name": "p", "time": {"format": "epoch_ns"}}),
        )
        .await;
    let error = assert_error(status, &body, 422, "invalid_pipeline");
    assert_eq!(error["details"][0]["path"], "time.format");
    let (status, body) = s
        .post(
            "/api/v1/pipelines",
            &json!({"name": "p", "sinks": [{"type": "kafka", "topic": "t"}]}),
        )
        .await;
    let error = assert_error(status, &body, 422, "invalid_pipeline");
    assert_eq!(error["details"][0]["path"], "sinks[0]");
    assert!(error["message"]
        .as_str()
        .unwrap()
        .contains("needs a kafka source"));
    let (status, body) = s
        .post(
            "/api/v1/pipelines",
            &json!({"name": "p", "source": {"type": "file", "path": "/etc/passwd"}}),
        )
        .await;
    let error = assert_error(status, &body, 422, "invalid_pipeline");
    assert_eq!(error["details"][0]["path"], "source");
    let (status, body) = s
        .post("/api/v1/pipelines", &json!({"name": "p", "colour": "red"}))
        .await;
    let error = assert_error(status, &body, 422, "invalid_pipeline");
    assert!(error["message"].as_str().unwrap().contains("colour"));
    let (status, body) = s
        .post("/api/v1/pipelines", &json!({"name": "has space"}))
        .await;
    assert_error(status, &body, 422, "invalid_pipeline");
    let (status, body) = s
        .post_raw("/api/v1/pipelines", Some("application/json"), "{\"name\": ")
        .await;
    assert_error(status, &body, 400, "malformed_json");
    let (status, body) = s
        .post_raw("/api/v1/pipelines", Some("text/plain"), "{\"name\": \"p\"}")
        .await;
    assert_error(status, &body, 415, "unsupported_media_type");
    let (status, body) = s.put("/api/v1/pipelines/a", &json!({"name": "b"})).await;
    assert_error(status, &body, 400, "name_mismatch");

    let (status, _) = s.delete("/api/v1/pipelines/logins").await;
    assert_eq!(status, 204);
    let (status, body) = s.get("/api/v1/pipelines/logins").await;
    assert_error(status, &body, 404, "not_found");
    let (status, body) = s.delete("/api/v1/pipelines/logins").await;
    assert_error(status, &body, 404, "not_found");
    // Now the pattern is free.
    let (status, _) = s.delete("/api/v1/patterns/login-failures").await;
    assert_eq!(status, 204);
    s.stop().await;
}

#[tokio::test]
async fn pause_and_resume() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path()).await;
    let event = json!({"key": "k", "ts": 1});
    let (status, body) = s.post("/api/v1/pipelines/default/pause", &json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"]["paused"], true);
    let (status, body) = s.post("/api/v1/pipelines/default/events", &event).await;
    assert_error(status, &body, 409, "paused");
    let (status, body) = s.post("/api/v1/pipelines/default/resume", &json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"]["paused"], false);
    assert_eq!(s.events("default", &event).await["accepted"], 1);
    let (status, body) = s.post("/api/v1/pipelines/nope/pause", &json!({})).await;
    assert_error(status, &body, 404, "not_found");
    s.stop().await;
}

// ---- Ingest ----

#[tokio::test]
async fn ingest_accepts_good_records_and_reports_bad_ones() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path()).await;
    let events = json!([
        {"key": "a", "ts": 1000, "type": "x"},
        {"ts": 1001, "type": "x"},
        {"key": "a", "type": "x"},
        {"key": "a", "ts": "yesterday", "type": "x"},
        42,
        {"key": "b", "ts": 1002, "type": "x"}
    ]);
    let report = s.events("default", &events).await;
    assert_eq!(report["accepted"], 2, "{report}");
    assert_eq!(report["rejected"], 4, "{report}");
    let errors = report["errors"].as_array().unwrap();
    let indices: Vec<u64> = errors
        .iter()
        .map(|e| e["index"].as_u64().unwrap())
        .collect();
    assert_eq!(indices, [1, 2, 3, 4]);
    assert!(
        errors[0]["reason"].as_str().unwrap().contains("key"),
        "{report}"
    );
    assert!(
        errors[1]["reason"].as_str().unwrap().contains("ts"),
        "{report}"
    );
    assert!(
        errors[3]["reason"].as_str().unwrap().contains("object"),
        "{report}"
    );

    // One object.
    let report = s.events("default", &json!({"key": "a", "ts": 1003})).await;
    assert_eq!(
        (report["accepted"].as_u64(), report["rejected"].as_u64()),
        (Some(1), Some(0))
    );

    // NDJSON, declared: a malformed line is rejected by its line index.
    let ndjson = "{\"key\": \"a\", \"ts\": 1004}\n{\"key\": \"a\", \"ts\":\n\n{\"key\": \"c\", \"ts\": 1005}\n";
    let (status, report) = s
        .post_raw(
            "/api/v1/pipelines/default/events",
            Some("application/x-ndjson"),
            ndjson,
        )
        .await;
    assert_eq!(status, 202, "{report}");
    assert_eq!(report["accepted"], 2);
    assert_eq!(report["errors"][0]["index"], 1);
    assert!(report["errors"][0]["reason"]
        .as_str()
        .unwrap()
        .contains("malformed"));

    // NDJSON, detected without a content type.
    let (status, report) = s
        .post_raw(
            "/api/v1/pipelines/default/events",
            None,
            "{\"key\":\"a\",\"ts\":1006}\n{\"key\":\"a\",\"ts\":1007}",
        )
        .await;
    assert_eq!(status, 202, "{report}");
    assert_eq!(report["accepted"], 2);

    // Whole-request errors.
    let (status, body) = s
        .post_raw(
            "/api/v1/pipelines/default/events",
            Some("application/json"),
            "{\"key\": ",
        )
        .await;
    assert_error(status, &body, 400, "malformed_json");
    let (status, body) = s
        .post_raw(
            "/api/v1/pipelines/default/events",
            Some("application/json"),
            "",
        )
        .await;
    assert_error(status, &body, 400, "empty_body");
    let (status, body) = s
        .post_raw("/api/v1/pipelines/default/events", Some("text/csv"), "a,b")
        .await;
    assert_error(status, &body, 415, "unsupported_media_type");
    let (status, body) = s
        .post(
            "/api/v1/pipelines/nope/events",
            &json!({"key": "a", "ts": 1}),
        )
        .await;
    assert_error(status, &body, 404, "not_found");

    let (status, metrics) = s.text("/metrics").await;
    assert_eq!(status, 200);
    assert!(
        metrics.contains("cep_events_in_total{pipeline=\"default\"} 7"),
        "{metrics}"
    );
    assert!(
        metrics.contains("cep_events_rejected_total{pipeline=\"default\"} 5"),
        "{metrics}"
    );
    s.stop().await;
}
