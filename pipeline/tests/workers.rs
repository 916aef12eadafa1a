//! A pipeline spread over worker threads by key gives the outputs of one thread: the same
//! matches, timeouts and late events (only the order of different keys' outputs within a batch
//! may differ), with events out of order and late, a window stage, and a pattern replaced
//! while events flow; and its checkpoint restores into the same number of workers.

use std::sync::Arc;
use std::time::Duration;

use cep_patterns::{compile, CompiledPattern, PatternSpec, Replace};
use cep_pipeline::running::{Environment, OutputFilter, Pipeline, PipelineRecord, Retention};
use cep_pipeline::store::{Durability, Store};
use serde_json::{json, Value};

fn pattern(doc: Value) -> Arc<CompiledPattern> {
    Arc::new(compile(&PatternSpec::from_json(&doc.to_string()).unwrap()).unwrap())
}

fn patterns() -> Vec<Arc<CompiledPattern>> {
    vec![
        pattern(json!({
            "name": "three", "within": "2s",
            "stages": [{"name": "f", "where": "type == 'fail'", "times": 3, "consecutive": true}]
        })),
        pattern(json!({
            "name": "pair", "within": "500ms",
            "stages": [{"name": "f", "where": "type == 'fail'"},
                       {"name": "o", "where": "type == 'ok'", "contiguity": "followed_by"}]
        })),
        pattern(json!({
            "name": "hot", "stages": [{"name": "h", "where": "avg > 5", "times": 2, "consecutive": true}]
        })),
    ]
}

/// `pair` with a longer window: a replacement.
fn pair_v2() -> Arc<CompiledPattern> {
    let doc = json!({
        "name": "pair", "within": "900ms",
        "stages": [{"name": "f", "where": "type == 'fail'"},
                   {"name": "o", "where": "type == 'ok'", "contiguity": "followed_by"}]
    });
    Arc::new(
        compile(&PatternSpec::from_json(&doc.to_string()).unwrap())
            .unwrap()
            .with_version(2),
    )
}

fn spec(workers: usize, window: bool) -> cep_pipeline::PipelineSpec {
    let mut doc = json!({
        "name": "w", "key_by": "key", "workers": workers,
        "watermark": {"out_of_orderness": "300ms", "max_future": "off"},
        "patterns": ["three", "pair"],
    });
    if window {
        doc["window"] = json!({"type": "tumbling", "size": "1s",
                               "aggregates": {"avg": {"avg": "v"}}, "patterns": ["hot"]});
        doc["patterns"] = json!(["three", "pair", "hot"]);
    }
    cep_pipeline::parse(doc).unwrap()
}

fn env(store: Option<Arc<Store>>) -> Environment {
    Environment {
        store,
        checkpoint_every: Duration::from_secs(3600),
        retention: Retention::default(),
        ..Environment::in_memory(1_000_000, std::env::temp_dir())
    }
}

/// 12,000 events over 101 keys, times mostly rising with jitter (some behind the watermark:
/// late), in batches of 600.
fn batches() -> Vec<Vec<String>> {
    let mut s = 7u64;
    let mut next = move || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (s >> 33) as i64
    };
    let events: Vec<String> = (0..12_000)
        .map(|i| {
            let ts = 10_000 + 9 * i - next() % 400;
            let ty = if next() % 5 < 3 { "fail" } else { "ok" };
            json!({"key": format!("k{}", next() % 101), "ts": ts, "type": ty, "v": next() % 11, "i": i})
                .to_string()
        })
        .collect();
    events.chunks(600).map(<[String]>::to_vec).collect()
}

fn feed(p: &Pipeline, batch: &[String]) -> usize {
    let records = batch
        .iter()
        .enumerate()
        .map(|(i, e)| (i, Ok(e.as_str())))
        .collect();
    p.ingest(records, None).unwrap().accepted
}

/// Outputs without their sequence numbers, sorted.
fn outputs(p: &Pipeline) -> Vec<String> {
    let filter = OutputFilter {
        after: Some(0),
        ..OutputFilter::default()
    };
    let mut all: Vec<String> = p
        .recent(&filter, 1_000_000)
        .outputs
        .into_iter()
        .map(|mut o| {
            o.as_object_mut().unwrap().remove("seq");
            o.to_string()
        })
        .collect();
    all.sort();
    all
}

fn run(workers: usize, window: bool) -> (Vec<String>, Value) {
    let mut pats = patterns();
    let p = Pipeline::start(
        PipelineRecord {
            spec: spec(workers, window),
            paused: false,
        },
        pats.clone(),
        &env(None),
    )
    .unwrap();
    for (i, b) in batches().iter().enumerate() {
        assert_eq!(feed(&p, b), b.len());
        if i == 8 {
            // `pair` replaced while its partial matches are in flight: they drain.
            pats[1] = pair_v2();
            p.set_patterns(pats.clone(), Replace::Drain).unwrap();
        }
    }
    p.advance_watermark(i64::MAX).unwrap().unwrap();
    let stats = p.stats();
    (outputs(&p), stats)
}

#[test]
fn workers_give_the_outputs_of_one_thread() {
    for window in [false, true] {
        let (one, one_stats) = run(1, window);
        let kinds = |outs: &[String], kind: &str| {
            outs.iter()
                .filter(|o| o.contains(&format!("\"kind\":\"{kind}\"")))
                .count()
        };
        assert!(kinds(&one, "match") > 100, "window {window}");
        assert!(kinds(&one, "timeout") > 10, "window {window}");
        assert!(kinds(&one, "late") > 10, "window {window}");
        assert!(one.iter().any(|o| o.contains("\"version\":2")));
        for workers in [2, 5] {
            let (many, stats) = run(workers, window);
            assert_eq!(many.len(), one.len(), "{workers} workers, window {window}");
            assert!(many == one, "{workers} workers, window {window}");
            for field in ["events", "late", "keys", "partial_matches"] {
                assert_eq!(stats[field], one_stats[field], "{field}: {workers} workers");
            }
        }
    }
}

/// Killed without a shutdown and started again (checkpoints now and then), a pipeline of 3
/// workers goes on with the outputs of one that never stopped.
#[test]
fn workers_restore_their_checkpoint() {
    let (want, _) = run(1, true);
    let dir = tempfile::tempdir().unwrap();
    // The service starts a pipeline with the catalog's patterns.
    let open = |pats: &[Arc<CompiledPattern>]| {
        let store = Arc::new(Store::open(dir.path(), Durability::Write).unwrap());
        let p = Pipeline::start(
            PipelineRecord {
                spec: spec(3, true),
                paused: false,
            },
            pats.to_vec(),
            &env(Some(store.clone())),
        )
        .unwrap();
        (store, p)
    };
    let mut pats = patterns();
    let (mut store, mut p) = open(&pats);
    for (i, b) in batches().iter().enumerate() {
        feed(&p, b);
        if i == 8 {
            pats[1] = pair_v2();
            p.set_patterns(pats.clone(), Replace::Drain).unwrap();
        }
        if i % 3 == 0 {
            p.checkpoint().unwrap();
        }
        if i % 4 == 2 {
            drop(p);
            store.close();
            drop(store);
            (store, p) = open(&pats);
        }
    }
    p.advance_watermark(i64::MAX).unwrap().unwrap();
    assert!(outputs(&p) == want, "3 workers restored");
}
