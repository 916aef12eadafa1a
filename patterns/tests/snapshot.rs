//! Key snapshots through the JSON engine: cut a stream anywhere, snapshot the changed keys, go on
//! with a fresh engine restored from them, and the outputs are those of one uncut run.

use std::sync::Arc;

use cep_patterns::{compile, EngineConfig, JsonEngine, Output, PatternSpec};
use serde_json::{json, Value};

fn engine() -> JsonEngine {
    let specs = [
        json!({"name": "fails", "within": "2s", "after_match": "skip_past_last_event",
               "stages": [{"name": "fail", "where": "type == 'fail'", "times": 3}]}),
        json!({"name": "ips", "within": "1min",
               "stages": [{"name": "fail", "times": 3,
                 "where": "type == 'fail' && (count(fail) == 0 || ip != last(fail.ip))"}]}),
    ];
    let patterns = specs
        .iter()
        .map(|s| {
            let spec: PatternSpec = serde_json::from_value(s.clone()).unwrap();
            Arc::new(compile(&spec).unwrap())
        })
        .collect();
    let config = EngineConfig {
        key_by: "user".into(),
        time_field: "ts".into(),
        time_format: Default::default(),
        out_of_orderness_ms: 100,
    };
    JsonEngine::new(config, patterns).unwrap()
}

fn events() -> Vec<Value> {
    (0..400)
        .map(|i: i64| {
            let user = format!("u{}", i * 7 % 5);
            let kind = if i % 11 < 8 { "fail" } else { "success" };
            // Out of order within the bound.
            let ts = i * 150 - (i % 3) * 40;
            json!({"user": user, "type": kind, "ip": format!("10.0.0.{}", i % 4), "ts": ts})
        })
        .collect()
}

fn sorted(mut out: Vec<Output>) -> Vec<String> {
    let mut v: Vec<String> = out
        .drain(..)
        .map(|o| serde_json::to_string(&o).unwrap())
        .collect();
    v.sort();
    v
}

#[test]
fn a_restored_engine_continues_exactly() {
    let evs = events();
    let mut whole = engine();
    let mut expected = Vec::new();
    for e in &evs {
        whole.push(e.clone(), &mut expected).unwrap();
    }
    whole.advance_watermark(i64::MAX, &mut expected);
    assert!(expected.len() > 20, "the stream has matches and timeouts");

    let mut store: std::collections::BTreeMap<String, Vec<u8>> = Default::default();
    let mut got = Vec::new();
    let mut watermark = i64::MIN;
    let pieces: Vec<&[Value]> = evs.chunks(37).collect();
    for (i, piece) in pieces.iter().enumerate() {
        let mut e = engine();
        e.track_changes(true);
        e.advance_watermark(watermark, &mut got);
        for (k, s) in &store {
            e.restore_key(k, s).unwrap();
        }
        for ev in *piece {
            e.push(ev.clone(), &mut got).unwrap();
        }
        for k in e.take_changed() {
            match e.snapshot_key(&k) {
                Some(s) => store.insert(k, s),
                None => store.remove(&k),
            };
        }
        watermark = e.watermark();
        if i == pieces.len() - 1 {
            e.advance_watermark(i64::MAX, &mut got);
        }
    }
    assert_eq!(sorted(got), sorted(expected));
}

#[test]
fn unreadable_state_is_an_error_not_a_panic() {
    let mut e = engine();
    let err = e.restore_key("u1", b"{not json").unwrap_err();
    assert!(
        err.message.contains("unreadable state of key 'u1'"),
        "{err}"
    );
    let err = e
        .restore_key("u1", br#"{"events":[],"queue":[[5,3]],"patterns":[]}"#)
        .unwrap_err();
    assert!(err.message.contains("patterns in the snapshot"), "{err}");
    assert_eq!(e.stats().keys, 0);
}
