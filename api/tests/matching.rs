//! Matching through the service: the login-failure alert end to end, the live stream, pattern
//! replacement while events flow, key introspection, metrics, and outputs kept across a restart.
//!
//! Event time: with the default out-of-orderness of 0, the engine evaluates an event once the
//! watermark has passed it, so each test ends its burst with an event of a later time (on a key
//! no pattern cares about) to move the watermark.

mod common;

use common::{login_failures, single, TestServer};
use serde_json::{json, Value};

fn fail(key: &str, ts: i64) -> Value {
    json!({"key": key, "ts": ts, "type": "fail"})
}

fn tick(ts: i64) -> Value {
    json!({"key": "clock", "ts": ts, "type": "tick"})
}

fn stage_events(output: &Value, stage: &str) -> Vec<i64> {
    output["events"][stage]
        .as_array()
        .unwrap_or_else(|| panic!("no stage {stage} in {output}"))
        .iter()
        .map(|e| e["ts"].as_i64().unwrap())
        .collect()
}

#[tokio::test]
async fn login_failure_alert_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path()).await;
    s.register(&login_failures()).await;
    let report = s
        .events(
            "default",
            &json!([
                fail("alice", 1000),
                fail("bob", 1100),
                fail("alice", 1500),
                {"key": "bob", "ts": 1600, "type": "ok"},
                fail("alice", 2000),
                fail("bob", 2100),
                tick(10_000),
            ]),
        )
        .await;
    assert_eq!(report["accepted"], 7, "{report}");

    let matches = s.outputs("default", "?kind=match").await;
    assert_eq!(matches.len(), 1, "{matches:?}");
    let m = &matches[0];
    assert_eq!(m["kind"], "match");
    assert_eq!(m["pattern"], "login-failures");
    assert_eq!(m["key"], "alice");
    assert_eq!(m["pipeline"], "default");
    assert_eq!(stage_events(m, "fail"), [1000, 1500, 2000]);

    // Filters.
    assert_eq!(s.outputs("default", "?key=alice&kind=match").await.len(), 1);
    assert_eq!(s.outputs("default", "?key=bob&kind=match").await.len(), 0);
    assert_eq!(s.outputs("default", "?pattern=other").await.len(), 0);
    let seq = m["seq"].as_u64().unwrap();
    assert!(s
        .outputs("default", &format!("?kind=match&after={seq}"))
        .await
        .is_empty());

    let (status, metrics) = s.text("/metrics").await;
    assert_eq!(status, 200);
    assert!(
        metrics.contains("cep_matches_total{pipeline=\"default\",pattern=\"login-failures\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("cep_events_in_total{pipeline=\"default\"} 7"),
        "{metrics}"
    );
    assert!(
        metrics.contains("# TYPE cep_timeouts_total counter"),
        "{metrics}"
    );
    assert!(
        metrics.contains("# TYPE cep_late_events_total counter"),
        "{metrics}"
    );
    assert!(
        metrics.contains("# TYPE cep_partial_matches gauge"),
        "{metrics}"
    );
    assert!(
        metrics.contains("cep_keys{pipeline=\"default\"}"),
        "{metrics}"
    );
    s.stop().await;
}

#[tokio::test]
async fn late_events_and_timeouts_are_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path()).await;
    s.register(&json!({
        "name": "order-paid",
        "within": "3s",
        "stages": [
            {"name": "create", "where": "type == 'create'"},
            {"name": "pay", "where": "type == 'pay'", "contiguity": "followed_by"}
        ]
    }))
    .await;
    s.events(
        "default",
        &json!([{"key": "o1", "ts": 1000, "type": "create"}, tick(20_000)]),
    )
    .await;
    // Far behind the watermark now.
    s.events("default", &json!([{"key": "o2", "ts": 500, "type": "pay"}]))
        .await;
    let timeouts = s.outputs("default", "?kind=timeout").await;
    assert_eq!(timeouts.len(), 1, "{timeouts:?}");
    assert_eq!(timeouts[0]["pattern"], "order-paid");
    assert_eq!(timeouts[0]["key"], "o1");
    assert_eq!(stage_events(&timeouts[0], "create"), [1000]);
    let late = s.outputs("default", "?kind=late").await;
    assert_eq!(late.len(), 1, "{late:?}");
    assert_eq!(late[0]["key"], "o2");
    let (_, metrics) = s.text("/metrics").await;
    assert!(
        metrics.contains("cep_timeouts_total{pipeline=\"default\",pattern=\"order-paid\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("cep_late_events_total{pipeline=\"default\"} 1"),
        "{metrics}"
    );
    s.stop().await;
}

#[tokio::test]
async fn sse_stream_receives_a_live_match() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path()).await;
    s.register(&login_failures()).await;
    let mut stream = s
        .request(
            reqwest::Method::GET,
            "/api/v1/pipelines/default/matches/stream?kind=match&key=alice",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    assert!(stream.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    // The subscription exists once the headers are here; the first chunk says so.
    let mut received = String::new();
    while !received.contains("subscribed") {
        let chunk = stream.chunk().await.unwrap().expect("stream open");
        received.push_str(&String::from_utf8_lossy(&chunk));
    }
    s.events(
        "default",
        &json!([
            fail("bob", 900),
            fail("bob", 950),
            fail("bob", 990),
            fail("alice", 1000),
            fail("alice", 1200),
            fail("alice", 1400),
            tick(9000)
        ]),
    )
    .await;
    let event = loop {
        if let Some(start) = received.find("event: match\n") {
            let rest = &received[start..];
            if let Some(end) = rest.find("\n\n") {
                break rest[..end].to_string();
            }
        }
        let chunk = stream.chunk().await.unwrap().expect("stream open");
        received.push_str(&String::from_utf8_lossy(&chunk));
    };
    let data = event
        .lines()
        .find_map(|l| l.strip_prefix("data: "))
        .expect("data line");
    let output: Value = serde_json::from_str(data).unwrap();
    assert_eq!(output["key"], "alice", "{output}");
    assert_eq!(output["pattern"], "login-failures");
    assert_eq!(stage_events(&output, "fail"), [1000, 1200, 1400]);
    // Bob's match was filtered out of this stream.
    assert!(!received.contains("\"bob\""), "{received}");
    drop(stream);
    s.stop().await;
}

#[tokio::test]
async fn a_pattern_replaced_while_events_flow() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path()).await;
    s.register(&single("watch", "a")).await;
    s.events(
        "default",
        &json!([{"key": "k", "ts": 1000, "type": "a"}, {"key": "k", "ts": 1100, "type": "b"}, tick(1200)]),
    )
    .await;
    let before = s.outputs("default", "?pattern=watch").await;
    assert_eq!(before.len(), 1, "{before:?}");
    assert_eq!(stage_events(&before[0], "s"), [1000]);

    // Replace: the pipeline switches at once, without a restart.
    let (status, body) = s.put("/api/v1/patterns/watch", &single("watch", "b")).await;
    assert_eq!(status, 200, "{body}");
    s.events(
        "default",
        &json!([{"key": "k", "ts": 2000, "type": "a"}, {"key": "k", "ts": 2100, "type": "b"}, tick(2200)]),
    )
    .await;
    let after = s.outputs("default", "?pattern=watch").await;
    assert_eq!(after.len(), 2, "{after:?}");
    assert_eq!(stage_events(&after[1], "s"), [2100]);

    // A pattern registered later joins the pipeline evaluating "*".
    s.register(&single("also", "c")).await;
    s.events(
        "default",
        &json!([{"key": "k", "ts": 3000, "type": "c"}, tick(3100)]),
    )
    .await;
    assert_eq!(s.outputs("default", "?pattern=also").await.len(), 1);

    // A deleted pattern stops matching.
    let (status, _) = s.delete("/api/v1/patterns/also").await;
    assert_eq!(status, 204);
    s.events(
        "default",
        &json!([{"key": "k", "ts": 4000, "type": "c"}, tick(4100)]),
    )
    .await;
    assert_eq!(s.outputs("default", "?pattern=also").await.len(), 1);
    s.stop().await;
}

#[tokio::test]
async fn partial_matches_of_a_key_and_the_watermark() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path()).await;
    s.register(&login_failures()).await;
    let (status, body) = s.get("/api/v1/pipelines/default/keys/alice").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["watermark"], Value::Null);
    assert_eq!(body["partial_matches"], json!([]));

    s.events(
        "default",
        &json!([fail("alice", 1000), fail("alice", 1500), tick(1600)]),
    )
    .await;
    let (status, body) = s.get("/api/v1/pipelines/default/keys/alice").await;
    assert_eq!(status, 200, "{body}");
    assert!(body["watermark"].as_i64().unwrap() >= 1500, "{body}");
    let partials = body["partial_matches"].as_array().unwrap();
    assert!(!partials.is_empty(), "{body}");
    assert!(
        partials.iter().all(|p| p["pattern"] == "login-failures"),
        "{body}"
    );
    // Each says when it times out: the end of the pattern's 2 s window.
    for p in partials {
        assert_eq!(
            p["times_out_at"].as_i64(),
            p["start_timestamp"].as_i64().map(|s| s + 2000),
            "{body}"
        );
    }
    // Alice's events were evaluated; the tick waits for the watermark to pass it.
    assert_eq!(body["waiting_events"], json!([]));
    let (_, body) = s.get("/api/v1/pipelines/default/keys/clock").await;
    assert_eq!(
        body["waiting_events"],
        json!([{"timestamp": 1600, "event": tick(1600)}])
    );
    let (_, body) = s.get("/api/v1/pipelines/default/keys/bob").await;
    assert_eq!(body["partial_matches"], json!([]));
    assert_eq!(body["waiting_events"], json!([]));
    let (status, body) = s.get("/api/v1/pipelines/nope/keys/alice").await;
    common::assert_error(status, &body, 404, "not_found");

    // The watermark can be moved by hand; "end" closes every window.
    let (status, body) = s
        .post(
            "/api/v1/pipelines/default/watermark",
            &json!({"watermark": "end"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let timeouts = s.outputs("default", "?kind=timeout&key=alice").await;
    assert!(!timeouts.is_empty(), "{body}");
    assert!(timeouts.iter().all(|t| t["pattern"] == "login-failures"));
    let (_, body) = s.get("/api/v1/pipelines/default/keys/alice").await;
    assert_eq!(body["partial_matches"], json!([]));
    s.stop().await;
}

#[tokio::test]
async fn recent_outputs_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path()).await;
    s.register(&login_failures()).await;
    s.events(
        "default",
        &json!([
            fail("alice", 1000),
            fail("alice", 1100),
            fail("alice", 1200),
            tick(5000)
        ]),
    )
    .await;
    let before = s.outputs("default", "?kind=match").await;
    assert_eq!(before.len(), 1);
    s.stop().await;

    let s = TestServer::start(dir.path()).await;
    assert_eq!(s.outputs("default", "?kind=match").await, before);
    // New outputs continue the sequence.
    s.events(
        "default",
        &json!([
            fail("carol", 6000),
            fail("carol", 6100),
            fail("carol", 6200),
            tick(9000)
        ]),
    )
    .await;
    let after = s.outputs("default", "?kind=match").await;
    assert_eq!(after.len(), 2);
    assert!(after[1]["seq"].as_u64() > before[0]["seq"].as_u64());
    s.stop().await;
}

#[tokio::test]
async fn idleness_moves_the_watermark_without_events() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path()).await;
    s.register(&json!({
        "name": "order-paid",
        "within": "200ms",
        "stages": [
            {"name": "create", "where": "type == 'create'"},
            {"name": "pay", "where": "type == 'pay'", "contiguity": "followed_by"}
        ]
    }))
    .await;
    let (status, body) = s
        .post(
            "/api/v1/pipelines",
            &json!({"name": "idle", "watermark": {"idleness": "50ms"}}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    s.events(
        "idle",
        &json!([{"key": "o1", "ts": 1000, "type": "create"}]),
    )
    .await;
    // No more events: once the pipeline has been idle for 50 ms, the watermark follows
    // wall-clock time, the window closes and the partial match times out. Polled, with a
    // generous bound only so that a broken build fails instead of hanging.
    let mut timeouts = Vec::new();
    for _ in 0..600 {
        timeouts = s.outputs("idle", "?kind=timeout").await;
        if !timeouts.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(timeouts.len(), 1, "no timeout after idling");
    assert_eq!(timeouts[0]["key"], "o1");
    let (_, body) = s.get("/api/v1/pipelines/idle").await;
    assert!(
        body["status"]["watermark"].as_i64().unwrap() >= 1200,
        "{body}"
    );
    s.stop().await;
}

/// `after` is a cursor: the next `limit` outputs after that `seq`, oldest first, with `more`
/// while others follow, so a poller that falls behind pages through everything in order; and
/// `missed` says when outputs after the cursor already left the ring.
#[tokio::test]
async fn polling_with_a_cursor_pages_through_every_output() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::config(dir.path());
    config.recent_outputs = 20;
    let s = TestServer::start_with(config).await;
    s.register(&single("any", "x")).await;
    // 15 matches, one per event.
    let events: Vec<Value> = (0..15)
        .map(|i| json!({"key": format!("k{i}"), "ts": 1000 + i, "type": "x"}))
        .chain([tick(5000)])
        .collect();
    s.events("default", &Value::Array(events)).await;
    let mut seen = Vec::new();
    let mut after = 0;
    loop {
        let (status, body) = s
            .get(&format!(
                "/api/v1/pipelines/default/matches?after={after}&limit=4"
            ))
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["missed"], false);
        let page = body["outputs"].as_array().unwrap();
        assert!(page.len() <= 4);
        seen.extend(page.iter().map(|o| o["seq"].as_u64().unwrap()));
        if body["more"] == false {
            break;
        }
        after = *seen.last().unwrap();
    }
    assert_eq!(
        seen,
        (1..=15).collect::<Vec<u64>>(),
        "every output, in order, once"
    );
    // Without a cursor: the most recent ones.
    let (_, body) = s.get("/api/v1/pipelines/default/matches?limit=3").await;
    let last: Vec<u64> = body["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(last, [13, 14, 15]);
    assert_eq!(body["more"], true);
    // 10 more: the ring (20) drops the oldest 5, the output log still has them.
    let events: Vec<Value> = (0..10)
        .map(|i| json!({"key": format!("m{i}"), "ts": 6000 + i, "type": "x"}))
        .chain([tick(9000)])
        .collect();
    s.events("default", &Value::Array(events)).await;
    let (_, body) = s
        .get("/api/v1/pipelines/default/matches?after=2&limit=4")
        .await;
    assert_eq!(body["missed"], false, "{body}");
    assert_eq!(body["first_seq"], 1);
    let seqs: Vec<u64> = body["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [3, 4, 5, 6], "{body}");
    assert_eq!(body["more"], true);
    s.stop().await;
}

/// The output log keeps `output_retention` outputs: a cursor behind them is told it missed
/// some, and reads on from the oldest kept.
#[tokio::test]
async fn a_cursor_behind_the_retention_is_told_what_it_missed() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::config(dir.path());
    config.recent_outputs = 4;
    config.output_retention = 6;
    config.checkpoint_interval = cep_patterns::DurationMs(50);
    let s = TestServer::start_with(config).await;
    s.register(&single("any", "x")).await;
    let events: Vec<Value> = (0..15)
        .map(|i| json!({"key": format!("k{i}"), "ts": 1000 + i, "type": "x"}))
        .chain([tick(5000)])
        .collect();
    s.events("default", &Value::Array(events)).await;
    // The retention pass runs with the service's tick: poll until it has.
    let mut body = Value::Null;
    for _ in 0..100 {
        body = s
            .get("/api/v1/pipelines/default/matches?after=2&limit=100")
            .await
            .1;
        if body["missed"] == true {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(body["missed"], true, "{body}");
    assert_eq!(body["first_seq"], 10, "{body}");
    assert_eq!(body["outputs"][0]["seq"], 10);
    assert_eq!(body["outputs"].as_array().unwrap().len(), 6, "{body}");
    s.stop().await;
}

/// An event stamped far in the future (nanoseconds sent as milliseconds) is refused with the
/// reason, and does not move the watermark: later events are not late.
#[tokio::test]
async fn events_from_the_far_future_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path()).await;
    s.register(&login_failures()).await;
    let report = s
        .events(
            "default",
            &json!([fail("u", 1000), {"key": "u", "ts": 9223372036854775807i64, "type": "fail"}, fail("u", 1500)]),
        )
        .await;
    assert_eq!(report["accepted"], 2, "{report}");
    assert_eq!(report["rejected"], 1, "{report}");
    assert_eq!(report["errors"][0]["index"], 1);
    let reason = report["errors"][0]["reason"].as_str().unwrap();
    assert!(reason.contains("ahead of the wall clock"), "{reason}");
    s.events("default", &json!([fail("u", 2000), tick(10_000)]))
        .await;
    let matches = s.outputs("default", "?kind=match").await;
    assert_eq!(matches.len(), 1, "{matches:?}");
    assert_eq!(stage_events(&matches[0], "fail"), [1000, 1500, 2000]);
    assert!(s.outputs("default", "?kind=late").await.is_empty());
    s.stop().await;
}

/// An SSE client that reconnects with `Last-Event-ID` first gets the outputs it missed (those the
/// ring holds), then the live ones, each once.
#[tokio::test]
async fn sse_reconnect_with_last_event_id_gets_what_it_missed() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path()).await;
    s.register(&single("any", "x")).await;
    let batch = |from: i64| {
        Value::Array(
            (0..3)
                .map(|i| json!({"key": format!("k{}", from + i), "ts": from + i, "type": "x"}))
                .chain([tick(from + 100)])
                .collect(),
        )
    };
    s.events("default", &batch(1000)).await; // outputs 1, 2, 3
    let mut stream = s
        .request(
            reqwest::Method::GET,
            "/api/v1/pipelines/default/matches/stream",
        )
        .header("Last-Event-ID", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let mut received = String::new();
    while !received.contains("subscribed") {
        let chunk = stream.chunk().await.unwrap().expect("stream open");
        received.push_str(&String::from_utf8_lossy(&chunk));
    }
    s.events("default", &batch(2000)).await; // outputs 4, 5, 6
    let ids = |text: &str| -> Vec<u64> {
        text.lines()
            .filter_map(|l| l.strip_prefix("id: "))
            .map(|id| id.parse().unwrap())
            .collect()
    };
    while ids(&received).len() < 5 {
        let chunk = tokio::time::timeout(std::time::Duration::from_secs(10), stream.chunk())
            .await
            .expect("outputs within 10 s")
            .unwrap()
            .expect("stream open");
        received.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert_eq!(ids(&received), [2, 3, 4, 5, 6], "{received}");
    drop(stream);
    s.stop().await;
}

/// What a pipeline's state bounds drop is counted in its stats and in `/metrics`.
#[tokio::test]
async fn state_bounds_count_what_they_drop_in_the_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path()).await;
    // `A` then any later `B`, no window: each `A` starts a partial match that waits for ever.
    s.register(&json!({
        "name": "ab",
        "stages": [{"name": "a", "where": "type == 'A'"},
                   {"name": "b", "where": "type == 'B'", "contiguity": "followed_by_any"}]
    }))
    .await;
    let (status, body) = s
        .post(
            "/api/v1/pipelines",
            &json!({"name": "bounded", "patterns": ["ab"], "key_by": "key",
                    "state": {"max_partial_matches": 2}}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let events: Vec<Value> = (0..5)
        .map(|i| json!({"key": "k", "ts": 1000 + i, "type": "A"}))
        .chain([json!({"key": "k", "ts": 2000, "type": "B"})])
        .collect();
    let report = s.events("bounded", &Value::Array(events)).await;
    assert_eq!(report["accepted"], 6, "{report}");
    // Five partial matches, two kept: three dropped (the last `A` waits for the watermark
    // until the `B`, which matches the two kept).
    let (_, metrics) = s.text("/metrics").await;
    assert!(
        metrics
            .contains("cep_state_dropped_total{pipeline=\"bounded\",reason=\"partial_matches\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("cep_state_dropped_total{pipeline=\"bounded\",reason=\"evicted_keys\"} 0"),
        "{metrics}"
    );
    s.stop().await;
}
