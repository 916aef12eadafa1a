//! Parses arbitrary bytes as a condition, and evaluates whatever parses on a few events.
//!
//! Run with: `cargo +nightly fuzz run parse_condition` (from `patterns/fuzz`).
#![no_main]

use cep_patterns::condition::{Condition, NoStageEvents, Row, Schema, StageEvents};
use libfuzzer_sys::fuzz_target;

struct Matched(Vec<Vec<Row>>);

impl StageEvents for Matched {
    fn for_each(&self, stage: usize, f: &mut dyn FnMut(&Row)) {
        self.0[..].for_each(stage, f)
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(src) = std::str::from_utf8(data) else {
        return;
    };
    let stages = ["a".to_string(), "b".to_string()];
    let mut schema = Schema::new();
    let _ = schema.clone().slot_for(src);
    let Ok(cond) = Condition::parse(src, &stages, &mut schema) else {
        return;
    };
    let events = [
        serde_json::json!({"type": "a", "user": {"id": 3}, "items": [1, 2.5, "x"], "value": -7}),
        serde_json::json!({"type": null, "value": 9_223_372_036_854_775_807i64, "items": {}}),
        serde_json::json!([]),
    ];
    let rows: Vec<Row> = events.iter().map(|e| schema.extract(e)).collect();
    let ctx = Matched(vec![rows.clone(), Vec::new()]);
    for row in &rows {
        let matched = cond.eval(row, &ctx);
        assert_eq!(matched, cond.value(row, &ctx) == cep_patterns::condition::Val::Bool(true));
        let _ = cond.eval(row, &NoStageEvents);
    }
});
