//! An HTTP pipeline in the service restores its checkpoint and replays its log: stopped at any
//! point without a clean shutdown (the store closed as a crashed process leaves it) and started
//! again, it goes on with the outputs of a run that never stopped, numbered without gaps.

use std::sync::Arc;
use std::time::Duration;

use cep_patterns::{compile, CompiledPattern, PatternSpec};
use cep_pipeline::running::{Environment, OutputFilter, Pipeline, PipelineRecord, Retention};
use cep_pipeline::store::{Durability, Store};
use cep_pipeline::PipelineSpec;
use serde_json::{json, Value};

fn patterns(names: &[&str]) -> Vec<Arc<CompiledPattern>> {
    names
        .iter()
        .map(|name| {
            let doc = match *name {
                "three" => json!({
                    "name": "three", "within": "2s", "after_match": "skip_past_last_event",
                    "stages": [{"name": "f", "where": "type == 'fail'", "times": 3, "consecutive": true}]
                }),
                _ => json!({
                    "name": name, "within": "500ms",
                    "stages": [{"name": "f", "where": "type == 'fail'"},
                               {"name": "o", "where": "type == 'ok'"}]
                }),
            };
            Arc::new(compile(&PatternSpec::from_json(&doc.to_string()).unwrap()).unwrap())
        })
        .collect()
}

fn spec() -> PipelineSpec {
    let mut spec = PipelineSpec::default_named("p");
    spec.watermark.out_of_orderness = cep_patterns::DurationMs(300);
    spec.watermark.max_future = None;
    spec
}

fn env(store: Option<Arc<Store>>) -> Environment {
    Environment {
        store,
        checkpoint_every: Duration::from_secs(3600),
        retention: Retention::default(),
        ..Environment::in_memory(100_000, std::env::temp_dir())
    }
}

fn events(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let ty = if (i * 7) % 5 < 3 { "fail" } else { "ok" };
            json!({"key": format!("k{}", (i * 13) % 7), "ts": 1000 + 37 * i, "type": ty, "i": i})
                .to_string()
        })
        .collect()
}

fn feed(p: &Pipeline, events: &[String], id: &str) {
    let records = events
        .iter()
        .enumerate()
        .map(|(i, e)| (i, Ok(e.as_str())))
        .collect();
    let report = p.ingest(records, Some(id)).unwrap();
    assert_eq!(report.accepted, events.len());
}

fn all_outputs(p: &Pipeline) -> Vec<Value> {
    let filter = OutputFilter {
        after: Some(0),
        ..OutputFilter::default()
    };
    let page = p.recent(&filter, 100_000);
    assert!(!page.more);
    page.outputs
}

fn without_seq(outputs: &[Value]) -> Vec<Value> {
    outputs
        .iter()
        .map(|o| {
            let mut o = o.clone();
            o.as_object_mut().unwrap().remove("seq");
            o
        })
        .collect()
}

#[test]
fn a_restarted_pipeline_goes_on_as_if_it_never_stopped() {
    let evs = events(600);
    let chunks: Vec<&[String]> = evs.chunks(50).collect();
    // The run that never stops, in memory.
    let reference = Pipeline::start(
        PipelineRecord {
            spec: spec(),
            paused: false,
        },
        patterns(&["three", "pair"]),
        &env(None),
    )
    .unwrap();
    for (i, c) in chunks.iter().enumerate() {
        feed(&reference, c, &format!("b{i}"));
    }
    assert_eq!(
        reference.advance_watermark(i64::MAX).unwrap().unwrap(),
        i64::MAX
    );
    let want = all_outputs(&reference);
    assert!(want.len() > 50, "the events make outputs");

    for durability in [Durability::Write, Durability::Fsync] {
        let dir = tempfile::tempdir().unwrap();
        let open = || {
            let store = Arc::new(Store::open(dir.path(), durability).unwrap());
            let p = Pipeline::start(
                PipelineRecord {
                    spec: spec(),
                    paused: false,
                },
                patterns(&["three", "pair"]),
                &env(Some(store.clone())),
            )
            .unwrap();
            (store, p)
        };
        let (mut store, mut p) = open();
        for (i, c) in chunks.iter().enumerate() {
            feed(&p, c, &format!("b{i}"));
            // A checkpoint now and then, and a "crash" (no shutdown, no final checkpoint) at
            // other moments, one right after a checkpoint.
            if i % 4 == 1 {
                p.checkpoint().unwrap();
            }
            if i % 3 == 2 {
                drop(p);
                store.close();
                drop(store);
                (store, p) = open();
                // A repeated request is answered as before and evaluates nothing.
                let records = chunks[i]
                    .iter()
                    .enumerate()
                    .map(|(j, e)| (j, Ok(e.as_str())))
                    .collect();
                let again = p.ingest(records, Some(&format!("b{i}"))).unwrap();
                assert!(again.duplicate);
                assert_eq!(again.accepted, chunks[i].len());
            }
        }
        p.advance_watermark(i64::MAX).unwrap().unwrap();
        drop(p);
        store.close();
        drop(store);
        let (_store, p) = open();
        let got = all_outputs(&p);
        let seqs: Vec<u64> = got.iter().map(|o| o["seq"].as_u64().unwrap()).collect();
        assert_eq!(
            seqs,
            (1..=got.len() as u64).collect::<Vec<_>>(),
            "{durability}"
        );
        let mut got = without_seq(&got);
        let mut want = without_seq(&want);
        // Keys are independent: across keys the order of outputs of one watermark step may
        // differ after a restore.
        got.sort_by_key(|v| v.to_string());
        want.sort_by_key(|v| v.to_string());
        assert_eq!(got, want, "{durability}");
        assert_eq!(
            p.outputs().counters.to_json()["events_in"],
            600,
            "{durability}"
        );
    }
}

#[test]
fn a_pattern_change_before_a_crash_is_the_one_running_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path(), Durability::Write).unwrap());
    let p = Pipeline::start(
        PipelineRecord {
            spec: spec(),
            paused: false,
        },
        patterns(&["three"]),
        &env(Some(store.clone())),
    )
    .unwrap();
    feed(&p, &events(20), "a");
    p.set_patterns(patterns(&["three", "pair"]), cep_patterns::Replace::Drain)
        .unwrap();
    drop(p);
    store.close();
    drop(store);
    // Started with the old selection (as a catalog written before the change would say): the
    // log's pattern change is replayed, then the engine is brought to what it is given.
    let store = Arc::new(Store::open(dir.path(), Durability::Write).unwrap());
    let p = Pipeline::start(
        PipelineRecord {
            spec: spec(),
            paused: false,
        },
        patterns(&["three", "pair"]),
        &env(Some(store.clone())),
    )
    .unwrap();
    let stats = p.stats();
    let names: Vec<&str> = stats["patterns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["pattern"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["three", "pair"]);
    assert_eq!(p.outputs().counters.to_json()["events_in"], 20);
}

/// A pipeline with a window stage checkpoints its windows key by key with its partial matches
/// (and drops the log before the checkpoint): restored and its log replayed anywhere, it gives
/// the outputs of a run that never stopped.
#[test]
fn a_window_pipeline_restores_its_checkpoint_after_a_restart() {
    let window_spec = || {
        cep_pipeline::parse(json!({
            "name": "w", "key_by": "key", "watermark": {"out_of_orderness": "200ms", "max_future": "off"},
            "window": {"type": "tumbling", "size": "1s", "aggregates": {"avg": {"avg": "v"}},
                       "patterns": ["hot"]},
        }))
        .unwrap()
    };
    let hot = || {
        let doc = json!({"name": "hot", "stages": [{"name": "h", "where": "avg > 5", "times": 2, "consecutive": true}]});
        vec![Arc::new(
            compile(&PatternSpec::from_json(&doc.to_string()).unwrap()).unwrap(),
        )]
    };
    let evs: Vec<String> = (0..400)
        .map(|i| {
            json!({"key": format!("s{}", i % 3), "ts": 1000 + 50 * i, "v": (i * 7) % 11})
                .to_string()
        })
        .collect();
    let chunks: Vec<&[String]> = evs.chunks(40).collect();
    let start = |env: &Environment| {
        Pipeline::start(
            PipelineRecord {
                spec: window_spec(),
                paused: false,
            },
            hot(),
            env,
        )
        .unwrap()
    };
    let reference = start(&env(None));
    for (i, c) in chunks.iter().enumerate() {
        feed(&reference, c, &format!("b{i}"));
    }
    reference.advance_watermark(i64::MAX).unwrap().unwrap();
    let want = without_seq(&all_outputs(&reference));
    assert!(want.len() >= 2, "the windows make alerts: {want:?}");

    let dir = tempfile::tempdir().unwrap();
    let open = || {
        let store = Arc::new(Store::open(dir.path(), Durability::Write).unwrap());
        let p = start(&env(Some(store.clone())));
        (store, p)
    };
    let (mut store, mut p) = open();
    for (i, c) in chunks.iter().enumerate() {
        feed(&p, c, &format!("b{i}"));
        p.checkpoint().unwrap();
        if i % 3 == 1 {
            drop(p);
            store.close();
            drop(store);
            (store, p) = open();
        }
    }
    p.advance_watermark(i64::MAX).unwrap().unwrap();
    let got = all_outputs(&p);
    let seqs: Vec<u64> = got.iter().map(|o| o["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=got.len() as u64).collect::<Vec<_>>());
    assert_eq!(without_seq(&got), want);
}
