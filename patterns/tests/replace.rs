//! Replacing a pattern while events flow: with `drain` the old version's partial matches run on
//! to their match or timeout (outputs labelled with the old version) and start none, new partial
//! matches start on the new version, and the old version goes once it holds nothing; with
//! `restart` the old version's partial matches are dropped.

use std::sync::Arc;

use cep_patterns::{
    compile, CompiledPattern, EngineConfig, JsonEngine, Output, OutputKind, PatternSpec, Replace,
    TimeFormat,
};
use serde_json::{json, Value};

fn pattern(second: &str, version: u64) -> Arc<CompiledPattern> {
    let doc = json!({
        "name": "p", "within": "10s",
        "stages": [{"name": "a", "where": "type == 'A'"},
                   {"name": "b", "where": format!("type == '{second}'"), "contiguity": "followed_by_any"}]
    });
    Arc::new(
        compile(&PatternSpec::from_json(&doc.to_string()).unwrap())
            .unwrap()
            .with_version(version),
    )
}

fn engine() -> JsonEngine {
    let config = EngineConfig {
        key_by: "key".into(),
        time_field: "ts".into(),
        time_format: TimeFormat::EpochMs,
        out_of_orderness_ms: 0,
    };
    JsonEngine::new(config, vec![pattern("B", 1)]).unwrap()
}

fn push(e: &mut JsonEngine, key: &str, ts: i64, ty: &str, out: &mut Vec<Output>) {
    e.push(json!({"key": key, "ts": ts, "type": ty}), out)
        .unwrap();
}

/// (kind, key, version, the first event's time) of each output.
fn summary(out: &[Output]) -> Vec<(OutputKind, String, u64, i64)> {
    out.iter()
        .map(|o| {
            let events = serde_json::to_value(o.events.as_ref().unwrap()).unwrap();
            (
                o.kind,
                o.key.clone(),
                o.version,
                events["a"][0]["ts"].as_i64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn drain_lets_the_old_version_finish_and_mixes_no_versions() {
    let mut e = engine();
    let mut out = Vec::new();
    push(&mut e, "k1", 1000, "A", &mut out);
    push(&mut e, "k9", 1100, "X", &mut out);
    e.set_patterns_mode(vec![pattern("C", 2)], Replace::Drain)
        .unwrap();
    assert!(e.is_draining());
    let held: Vec<Value> = e
        .partial_matches("k1")
        .iter()
        .map(|p| json!([p.version, p.draining]))
        .collect();
    assert!(held.contains(&json!([1, true])), "{held:?}");
    // k1's partial match of version 1 completes with a B; the new version starts with k2's A.
    push(&mut e, "k1", 2000, "B", &mut out);
    push(&mut e, "k2", 2500, "A", &mut out);
    push(&mut e, "k2", 3000, "B", &mut out); // version 1 starts nothing: no match
    push(&mut e, "k2", 3500, "C", &mut out);
    push(&mut e, "k1", 3600, "C", &mut out); // version 2 never saw k1's A
    push(&mut e, "k9", 4000, "X", &mut out);
    let matches: Vec<_> = summary(&out)
        .into_iter()
        .filter(|m| m.0 == OutputKind::Match)
        .collect();
    assert_eq!(
        matches,
        [
            (OutputKind::Match, "k1".into(), 1, 1000),
            (OutputKind::Match, "k2".into(), 2, 2500)
        ]
    );
    // Version 1 still holds k1's A (it waits for more B's) until it times out.
    assert!(!e.retire_drained());
    out.clear();
    push(&mut e, "k9", 20_000, "X", &mut out);
    let timeouts: Vec<_> = summary(&out);
    assert!(
        timeouts.contains(&(OutputKind::Timeout, "k1".into(), 1, 1000)),
        "{timeouts:?}"
    );
    assert!(
        timeouts.contains(&(OutputKind::Timeout, "k2".into(), 2, 2500)),
        "{timeouts:?}"
    );
    assert!(e.retire_drained());
    assert!(!e.is_draining());
    assert_eq!(e.slots().len(), 1);
    assert_eq!(e.slots()[0].0.version(), 2);
}

#[test]
fn restart_drops_the_old_version_partial_matches() {
    let mut e = engine();
    let mut out = Vec::new();
    push(&mut e, "k1", 1000, "A", &mut out);
    // The watermark passes the A: version 1 has evaluated it.
    push(&mut e, "k9", 1100, "X", &mut out);
    e.set_patterns_mode(vec![pattern("C", 2)], Replace::Restart)
        .unwrap();
    assert!(!e.is_draining());
    push(&mut e, "k1", 2000, "B", &mut out);
    push(&mut e, "k1", 2500, "C", &mut out);
    push(&mut e, "k9", 30_000, "X", &mut out);
    assert!(out.is_empty(), "{:?}", summary(&out));
}

#[test]
fn a_version_that_holds_nothing_is_not_kept_and_an_unchanged_one_keeps_its_state() {
    let mut e = engine();
    let mut out = Vec::new();
    // Nothing under way: the old version is not kept.
    e.set_patterns_mode(vec![pattern("C", 2)], Replace::Drain)
        .unwrap();
    assert!(!e.is_draining());
    push(&mut e, "k1", 1000, "A", &mut out);
    // The same definition and version again: its partial matches stay.
    e.set_patterns_mode(vec![pattern("C", 2)], Replace::Restart)
        .unwrap();
    push(&mut e, "k1", 2000, "C", &mut out);
    push(&mut e, "k9", 3000, "X", &mut out);
    assert_eq!(summary(&out), [(OutputKind::Match, "k1".into(), 2, 1000)]);
}
