//! The conformance corpus of `../shared/conformance` (Flink CEP 2.3's outputs for 22 patterns
//! over 5,262 events) through the service: the patterns registered over REST, the events posted
//! as NDJSON to a pipeline, the outputs read back from the pipeline. Every output must agree with
//! Flink's (as multisets, like the corpus's `compare.py`).

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;

use common::TestServer;
use serde_json::{json, Value};

fn corpus_dir() -> PathBuf {
    match std::env::var_os("CEP_CONFORMANCE_DIR") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/conformance"),
    }
}

/// (kind, pattern, key, stage=ids;..., timeout time) -> count.
type Counts = BTreeMap<(String, String, String, String, String), i64>;

fn reference(text: &str) -> Counts {
    let mut out = Counts::new();
    for line in text.lines() {
        let p: Vec<&str> = line.trim().split('|').collect();
        if p.len() < 4 || (p[0] != "M" && p[0] != "T") {
            continue;
        }
        let mut stages: Vec<&str> = p[3].split(';').collect();
        stages.sort();
        let ts = if p[0] == "T" { p[4] } else { "" };
        *out.entry((
            p[0].into(),
            p[1].into(),
            p[2].into(),
            stages.join(";"),
            ts.into(),
        ))
        .or_insert(0) += 1;
    }
    out
}

fn tuple(o: &Value) -> (String, String, String, String, String) {
    let kind = match o["kind"].as_str() {
        Some("match") => "M",
        Some("timeout") => "T",
        other => panic!("no event of the corpus is late: {other:?} {o}"),
    };
    let mut stages: Vec<String> = o["events"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, evs)| !evs.as_array().unwrap().is_empty())
        .map(|(s, evs)| {
            let ids: Vec<String> = evs
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["id"].to_string())
                .collect();
            format!("{s}={}", ids.join(","))
        })
        .collect();
    stages.sort();
    let ts = if kind == "T" {
        o["timestamp"].to_string()
    } else {
        String::new()
    };
    (
        kind.into(),
        o["pattern"].as_str().unwrap().into(),
        o["key"].as_str().unwrap().into(),
        stages.join(";"),
        ts,
    )
}

#[tokio::test]
async fn the_corpus_through_http_ingest_agrees_with_flink() {
    let dir = corpus_dir();
    assert!(
        dir.join("expected.txt").exists(),
        "conformance corpus not found at {} (set CEP_CONFORMANCE_DIR)",
        dir.display()
    );
    let data = tempfile::tempdir().unwrap();
    let mut config = common::config(data.path());
    config.default_pipeline = false;
    let s = TestServer::start_with(config).await;
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("patterns"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for f in &files {
        let pattern: Value = serde_json::from_str(&std::fs::read_to_string(f).unwrap()).unwrap();
        s.register(&pattern).await;
    }
    let (status, body) = s
        .post(
            "/api/v1/pipelines",
            &json!({"name": "corpus", "key_by": "key", "time": {"field": "ts"},
                    "watermark": {"out_of_orderness": "300ms"}}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let events = std::fs::read_to_string(dir.join("events.jsonl")).unwrap();
    let lines: Vec<&str> = events.lines().filter(|l| !l.trim().is_empty()).collect();
    for batch in lines.chunks(700) {
        let (status, report) = s
            .post_raw(
                "/api/v1/pipelines/corpus/events",
                Some("application/x-ndjson"),
                batch.join("\n"),
            )
            .await;
        assert_eq!(status, 202, "{report}");
        assert_eq!(report["accepted"], batch.len(), "{report}");
    }
    let (status, body) = s
        .post(
            "/api/v1/pipelines/corpus/watermark",
            &json!({"watermark": "end"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    // Read back page by page with the cursor, from the output log.
    let mut got = Counts::new();
    let mut outputs = Vec::new();
    let mut after = 0;
    loop {
        let (status, body) = s
            .get(&format!(
                "/api/v1/pipelines/corpus/matches?after={after}&limit=10000"
            ))
            .await;
        assert_eq!(status, 200);
        let page = body["outputs"].as_array().unwrap();
        outputs.extend(page.iter().cloned());
        if body["more"] != true {
            break;
        }
        after = page.last().unwrap()["seq"].as_u64().unwrap();
    }
    for o in &outputs {
        *got.entry(tuple(o)).or_insert(0) += 1;
    }
    let want = reference(&std::fs::read_to_string(dir.join("expected.txt")).unwrap());
    let total: i64 = want.values().sum();
    assert!(total > 10_000, "the reference outputs are missing");
    let mut diffs = Vec::new();
    for k in want.keys().chain(got.keys()) {
        let (w, g) = (*want.get(k).unwrap_or(&0), *got.get(k).unwrap_or(&0));
        if w != g && diffs.len() < 20 {
            diffs.push(format!("{} {k:?}", if w > g { "missing" } else { "extra" }));
        }
    }
    assert!(
        diffs.is_empty(),
        "{} outputs, {total} expected:\n{}",
        outputs.len(),
        diffs.join("\n")
    );
    assert_eq!(outputs.len() as i64, total);
    s.stop().await;
}
