//! Property tests of the engine: results do not depend on the arrival order of events within the
//! out-of-orderness bound, nor on how many keys share the engine.

use std::sync::Arc;

use cep_patterns::{compile, EngineConfig, JsonEngine, Output, PatternSpec, TimeFormat};
use proptest::prelude::*;
use serde_json::{json, Value};

const PATTERNS: &[&str] = &[
    r#"{"name":"fby","within":"3s","stages":[{"name":"a","where":"type == 'A'"},{"name":"b","where":"type == 'B'","one_or_more":true},{"name":"c","where":"type == 'C'"}]}"#,
    r#"{"name":"skip","within":"2s","after_match":"skip_past_last_event","stages":[{"name":"a","where":"type == 'A'"},{"name":"b","where":"type != 'A'","contiguity":"followed_by_any","times":[1,2]}]}"#,
    r#"{"name":"notend","within":"1s","stages":[{"name":"a","where":"type == 'A'"},{"name":"b","where":"type == 'B'","contiguity":"not_followed_by"}]}"#,
    r#"{"name":"iter","within":"4s","stages":[{"name":"s","where":"type == 'A'"},{"name":"r","where":"value > last(s.value)","one_or_more":true,"consecutive":true},{"name":"e","where":"type == 'D'","contiguity":"next"}]}"#,
    r#"{"name":"prev","within":"500ms","within_type":"previous_and_current","stages":[{"name":"a","where":"type == 'A'"},{"name":"b","where":"type == 'B'"},{"name":"c","where":"type == 'C'"}]}"#,
];

fn engine(bound: i64) -> JsonEngine {
    let patterns = PATTERNS
        .iter()
        .map(|p| Arc::new(compile(&PatternSpec::from_json(p).unwrap()).unwrap()))
        .collect();
    let config = EngineConfig {
        key_by: "key".into(),
        time_field: "ts".into(),
        time_format: TimeFormat::EpochMs,
        out_of_orderness_ms: bound,
    };
    JsonEngine::new(config, patterns).unwrap()
}

fn render(outs: &[Output]) -> Vec<String> {
    let mut v: Vec<String> = outs
        .iter()
        .map(|o| serde_json::to_string(o).unwrap())
        .collect();
    v.sort();
    v
}

fn run(events: &[Value], bound: i64) -> Vec<String> {
    let mut e = engine(bound);
    let mut outs = Vec::new();
    for ev in events {
        e.push(ev.clone(), &mut outs).unwrap();
    }
    e.advance_watermark(i64::MAX, &mut outs);
    render(&outs)
}

prop_compose! {
    /// Events with strictly increasing timestamps (so that ties cannot be reordered), random
    /// types, values and keys, and a random arrival jitter each.
    fn events()(steps in prop::collection::vec((1i64..400, 0u8..4, 0u32..100, 0u8..3, 0i64..1000), 1..120))
        -> Vec<(Value, i64)> {
        let mut ts = 0;
        steps.into_iter().enumerate().map(|(i, (dt, t, v, k, jitter))| {
            ts += dt;
            let ty = ["A", "B", "C", "D"][t as usize];
            (json!({"id": i, "key": format!("k{k}"), "ts": ts, "type": ty, "value": v}), jitter)
        }).collect()
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn arrival_order_within_the_bound_does_not_matter(evs in events()) {
        let bound = 1000;
        let in_order: Vec<Value> = evs.iter().map(|(e, _)| e.clone()).collect();
        // Arrival order by ts + jitter with jitter in [0, bound): no event trails the highest
        // timestamp seen by more than the bound, so none is late.
        let mut shuffled = evs.clone();
        shuffled.sort_by_key(|(e, j)| e["ts"].as_i64().unwrap() + j);
        let shuffled: Vec<Value> = shuffled.into_iter().map(|(e, _)| e).collect();
        let a = run(&in_order, bound);
        let b = run(&shuffled, bound);
        prop_assert!(b.iter().all(|l| !l.contains("\"late\"")));
        prop_assert_eq!(a, b);
    }

    #[test]
    fn keys_are_independent(evs in events()) {
        let all: Vec<Value> = evs.iter().map(|(e, _)| e.clone()).collect();
        let together = run(&all, 0);
        let mut separately = Vec::new();
        for k in ["k0", "k1", "k2"] {
            let mine: Vec<Value> = all.iter().filter(|e| e["key"] == k).cloned().collect();
            separately.extend(run(&mine, 0));
        }
        separately.sort();
        prop_assert_eq!(together, separately);
    }
}
