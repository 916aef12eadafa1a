//! An iterative condition with conjuncts that read only the event (`type == 'B' && value >
//! last(a.value)`) runs as a guarded condition: the event-only part once per event, the rest
//! per partial match for the events it accepts. It gives the outputs of the same condition
//! evaluated whole, and the automaton shows it as written.

use std::sync::Arc;

use cep_patterns::{compile, EngineConfig, JsonEngine, Output, PatternSpec, TimeFormat};
use proptest::prelude::*;
use serde_json::json;

/// The pattern with `cond` at its looping middle stage and `end` at its last.
fn spec(cond: &str, end: &str) -> PatternSpec {
    let doc = json!({
        "name": "p",
        "within": "10s",
        "stages": [
            {"name": "a", "where": "type == 'A'"},
            {"name": "b", "where": cond, "contiguity": "followed_by", "one_or_more": true},
            {"name": "c", "where": end, "contiguity": "followed_by"}
        ]
    });
    PatternSpec::from_json(&doc.to_string()).unwrap()
}

const GUARDED: (&str, &str) = (
    "type == 'B' && value > last(a.value)",
    "value < avg(b.value) && type == 'C' && id >= 0",
);
/// The same conditions written so that they have no event-only conjunct (an `||` with a
/// branch no event takes): evaluated whole, per partial match.
const WHOLE: (&str, &str) = (
    "(type == 'B' && value > last(a.value)) || type == 'never'",
    "(value < avg(b.value) && type == 'C' && id >= 0) || type == 'never'",
);

fn engine(conds: (&str, &str)) -> JsonEngine {
    let pattern = Arc::new(compile(&spec(conds.0, conds.1)).unwrap());
    let config = EngineConfig {
        key_by: "key".into(),
        time_field: "ts".into(),
        time_format: TimeFormat::EpochMs,
        out_of_orderness_ms: 0,
    };
    JsonEngine::new(config, vec![pattern]).unwrap()
}

fn lines(outs: &[Output]) -> Vec<String> {
    outs.iter()
        .map(|o| {
            let mut buf = Vec::new();
            o.write_json(&mut buf);
            String::from_utf8(buf).unwrap()
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn a_guarded_condition_gives_what_the_whole_condition_gives(
        events in prop::collection::vec((0u8..3, 0u8..4, 0i64..20, 1i64..1500), 1..80)
    ) {
        let (mut guarded, mut whole) = (engine(GUARDED), engine(WHOLE));
        let (mut a, mut b) = (Vec::new(), Vec::new());
        let mut ts = 0;
        for (i, (key, ty, value, gap)) in events.into_iter().enumerate() {
            ts += gap;
            let ty = ["A", "B", "C", "D"][usize::from(ty)];
            let line = json!({
                "id": i,
                "key": format!("k{key}"),
                "ts": ts,
                "type": ty,
                "value": value,
            })
            .to_string();
            guarded.push_str(&line, &mut a).unwrap();
            whole.push_str(&line, &mut b).unwrap();
        }
        guarded.advance_watermark(i64::MAX, &mut a);
        whole.advance_watermark(i64::MAX, &mut b);
        prop_assert_eq!(lines(&a), lines(&b));
    }
}

#[test]
fn a_guarded_condition_is_shown_as_written() {
    let pattern = compile(&spec(GUARDED.0, GUARDED.1)).unwrap();
    let nfa = pattern.nfa();
    let texts: Vec<String> = nfa
        .states()
        .iter()
        .flat_map(|s| &s.transitions)
        .map(|t| nfa.condition_text(&t.cond))
        .collect();
    assert!(texts.iter().any(|t| t == GUARDED.0), "{texts:?}");
    assert!(texts.iter().any(|t| t == GUARDED.1), "{texts:?}");
    assert!(!texts.iter().any(|t| t.contains("condition ")), "{texts:?}");
}
