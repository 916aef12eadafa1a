//! State bounds: partial matches per key, keys, and an idle-key TTL drop what they must and
//! count it; without bounds nothing is dropped (Flink's behaviour).

use std::sync::Arc;

use cep_patterns::{
    compile, EngineConfig, JsonEngine, Output, OutputKind, PatternSpec, StateBounds, TimeFormat,
};
use serde_json::json;

/// `A` then any later `B`, no window: every `A` starts a partial match that waits for ever.
fn engine(bounds: StateBounds) -> JsonEngine {
    engine_of(
        json!({
            "name": "ab",
            "stages": [{"name": "a", "where": "type == 'A'"},
                       {"name": "b", "where": "type == 'B'", "contiguity": "followed_by_any"}]
        }),
        bounds,
    )
}

/// An engine of one pattern, keyed by `key`, in event time without out-of-orderness.
fn engine_of(doc: serde_json::Value, bounds: StateBounds) -> JsonEngine {
    let pattern = Arc::new(compile(&PatternSpec::from_json(&doc.to_string()).unwrap()).unwrap());
    let config = EngineConfig {
        key_by: "key".into(),
        time_field: "ts".into(),
        time_format: TimeFormat::EpochMs,
        out_of_orderness_ms: 0,
    };
    let mut e = JsonEngine::new(config, vec![pattern]).unwrap();
    e.set_bounds(bounds);
    e
}

fn push(e: &mut JsonEngine, key: &str, ts: i64, ty: &str, out: &mut Vec<Output>) {
    e.push(json!({"key": key, "ts": ts, "type": ty}), out)
        .unwrap();
}

/// The times of the `A`s of each match.
fn matched_a(out: &[Output]) -> Vec<i64> {
    let mut a: Vec<i64> = out
        .iter()
        .filter(|o| o.kind == OutputKind::Match)
        .map(|o| {
            serde_json::to_value(o.events.as_ref().unwrap()).unwrap()["a"][0]["ts"]
                .as_i64()
                .unwrap()
        })
        .collect();
    a.sort();
    a
}

#[test]
fn the_oldest_partial_matches_beyond_the_limit_go() {
    for (max, want) in [
        (None, (1000..1010).collect::<Vec<i64>>()),
        (Some(3), vec![1007, 1008, 1009]),
    ] {
        let mut e = engine(StateBounds {
            max_partial_matches: max,
            ..StateBounds::default()
        });
        let mut out = Vec::new();
        for i in 0..10 {
            push(&mut e, "k", 1000 + i, "A", &mut out);
        }
        push(&mut e, "k", 2000, "B", &mut out);
        push(&mut e, "other", 3000, "X", &mut out);
        assert_eq!(matched_a(&out), want, "max {max:?}");
        assert_eq!(
            e.stats().dropped_partial_matches,
            if max.is_some() { 7 } else { 0 }
        );
    }
}

#[test]
fn beyond_max_keys_the_least_recently_active_keys_go() {
    let mut e = engine(StateBounds {
        max_keys: Some(50),
        ..StateBounds::default()
    });
    let mut out = Vec::new();
    for k in 0..100 {
        push(&mut e, &format!("k{k}"), 1000 + k, "A", &mut out);
        assert!(e.key_count() <= 50);
    }
    let stats = e.stats();
    assert!(stats.evicted_keys >= 50, "{stats:?}");
    // The most recent key kept its partial match; the first one lost it.
    push(&mut e, "k99", 5000, "B", &mut out);
    push(&mut e, "k0", 5001, "B", &mut out);
    push(&mut e, "clock", 6000, "X", &mut out);
    assert_eq!(matched_a(&out), [1099]);
}

#[test]
fn an_idle_key_goes_after_its_ttl_without_a_timeout() {
    let mut e = engine(StateBounds {
        key_ttl: Some(5_000),
        ..StateBounds::default()
    });
    let mut out = Vec::new();
    push(&mut e, "idle", 1000, "A", &mut out);
    push(&mut e, "busy", 1500, "A", &mut out);
    // Event time moves on with other keys; `busy` stays active.
    for t in (2000..=7000).step_by(1000) {
        push(&mut e, "busy", t, "X", &mut out);
    }
    assert_eq!(e.stats().expired_keys, 1);
    assert!(e.partial_matches("idle").is_empty());
    assert_eq!(e.partial_matches("busy").len(), 1);
    assert!(out.iter().all(|o| o.kind != OutputKind::Timeout));
    push(&mut e, "idle", 8000, "B", &mut out);
    push(&mut e, "busy", 8001, "B", &mut out);
    push(&mut e, "clock", 9000, "X", &mut out);
    assert_eq!(matched_a(&out), [1500]);
}

/// One or more `A`s (relaxed), then a `B`: every `A` starts a partial match and extends the
/// earlier ones, so the key's shared buffer keeps every `A` until a `B` comes.
fn looping(bounds: StateBounds) -> JsonEngine {
    engine_of(
        json!({
            "name": "run",
            "stages": [{"name": "a", "where": "type == 'A'", "one_or_more": true},
                       {"name": "b", "where": "type == 'B'", "contiguity": "followed_by"}]
        }),
        bounds,
    )
}

/// The `A` times of each match, sorted.
fn runs(out: &[Output]) -> Vec<Vec<i64>> {
    let mut r: Vec<Vec<i64>> = out
        .iter()
        .filter(|o| o.kind == OutputKind::Match)
        .map(|o| {
            serde_json::to_value(o.events.as_ref().unwrap()).unwrap()["a"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["ts"].as_i64().unwrap())
                .collect()
        })
        .collect();
    r.sort();
    r
}

#[test]
fn beyond_max_buffered_events_the_oldest_partial_matches_go() {
    let run = |max: Option<usize>| {
        let mut e = looping(StateBounds {
            max_buffered_events: max,
            ..StateBounds::default()
        });
        let mut out = Vec::new();
        let mut most = 0;
        for i in 0..10 {
            push(&mut e, "k", 1000 + i, "A", &mut out);
            // The stat counts the latest A too, waiting for the watermark.
            most = most.max(e.stats().buffered_events);
        }
        push(&mut e, "k", 2000, "B", &mut out);
        push(&mut e, "clock", 3000, "X", &mut out);
        (runs(&out), most, e.stats().dropped_partial_matches)
    };
    // Unbounded: the buffer grows with the run, and every run of consecutive As matches (the
    // loop's relaxed contiguity skips no matching A): 10 * 11 / 2 of them.
    let (all, most, dropped) = run(None);
    assert_eq!(all.len(), 55);
    assert_eq!(most, 10);
    assert_eq!(dropped, 0);
    // At most 3 events: only partial matches from the last three As are left, with the runs
    // over them; the rest were dropped and counted.
    let (bounded, most, dropped) = run(Some(3));
    assert_eq!(most, 3 + 1);
    assert!(dropped > 0);
    let last3: Vec<Vec<i64>> = all
        .into_iter()
        .filter(|r| r.iter().all(|t| *t >= 1007))
        .collect();
    assert_eq!(bounded, last3);
}
