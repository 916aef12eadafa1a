//! Events given as JSON text (`JsonEngine::push_str`, what `cep run` uses): only the fields the
//! patterns read are decoded, yet the outputs are those of the same events given as values, the
//! events in them are the input text, and bad lines get the same errors.

use std::sync::Arc;

use cep_patterns::{compile, EngineConfig, JsonEngine, Output, OutputKind, PatternSpec};
use proptest::prelude::*;
use serde_json::{json, Value};

fn engine() -> JsonEngine {
    let specs = [
        json!({"name": "fails", "within": "2s", "after_match": "skip_past_last_event",
               "stages": [{"name": "fail", "where": "type == 'fail'", "times": 3}]}),
        json!({"name": "ips", "within": "1min",
               "stages": [{"name": "fail", "times": 2,
                 "where": "type == 'fail' && (count(fail) == 0 || geo.ip != last(fail.geo.ip))"}]}),
    ];
    let patterns = specs
        .iter()
        .map(|s| {
            let spec: PatternSpec = serde_json::from_value(s.clone()).unwrap();
            Arc::new(compile(&spec).unwrap())
        })
        .collect();
    let config = EngineConfig {
        key_by: "user.id".into(),
        time_field: "ts".into(),
        time_format: Default::default(),
        out_of_orderness_ms: 50,
    };
    JsonEngine::new(config, patterns).unwrap()
}

/// Outputs as values (the events decoded from their text), in order.
fn values(outs: &[Output]) -> Vec<Value> {
    outs.iter()
        .map(|o| serde_json::to_value(o).unwrap())
        .collect()
}

fn event(i: i64, kind_bits: u8, extra: bool) -> Value {
    let kind = if kind_bits % 4 == 3 {
        "success"
    } else {
        "fail"
    };
    let mut e = json!({
        "user": {"id": format!("u{}", i % 3), "name": "x"},
        "ts": i * 300 - (i % 2) * 40,
        "type": kind,
        "geo": {"ip": format!("10.0.0.{}", kind_bits % 3), "city": "Z\u{fc}rich"},
    });
    if extra {
        e["payload"] = json!({"list": [1, 2.5, null, {"deep": ["a", true]}], "s": "q\"uote"});
    }
    e
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn text_and_values_give_the_same_outputs(
        kinds in proptest::collection::vec((any::<u8>(), any::<bool>(), any::<bool>()), 1..60)
    ) {
        let (mut by_value, mut by_text) = (engine(), engine());
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for (i, (bits, extra, pretty)) in kinds.iter().enumerate() {
            let e = event(i as i64, *bits, *extra);
            let text = if *pretty {
                serde_json::to_string_pretty(&e).unwrap()
            } else {
                e.to_string()
            };
            by_value.push(e, &mut a).unwrap();
            by_text.push_str(&text, &mut b).unwrap();
        }
        by_value.advance_watermark(i64::MAX, &mut a);
        by_text.advance_watermark(i64::MAX, &mut b);
        prop_assert_eq!(values(&a), values(&b));
    }
}

#[test]
fn outputs_show_the_input_text() {
    let mut engine = engine();
    let mut out = Vec::new();
    let lines = [
        r#"{"user": {"id": "u1"}, "ts": 1, "type": "fail", "note": 1.50}"#,
        r#"{"user": {"id": "u1"}, "ts": 2, "type": "fail", "note": 1e2}"#,
        "\t {\"user\": {\"id\": \"u1\"}, \"ts\": 3, \"type\": \"fail\"}  \r\n",
    ];
    for l in lines {
        engine.push_str(l, &mut out).unwrap();
    }
    engine.advance_watermark(i64::MAX, &mut out);
    let m = out
        .iter()
        .find(|o| o.kind == OutputKind::Match && o.pattern.as_deref() == Some("fails"))
        .expect("a match of fails");
    let texts: Vec<&str> = m
        .events
        .as_ref()
        .unwrap()
        .get("fail")
        .unwrap()
        .iter()
        .map(|e| e.json())
        .collect();
    // As written (numbers not rewritten), surrounding whitespace trimmed.
    assert_eq!(texts, [lines[0], lines[1], lines[2].trim()]);
    let line = serde_json::to_string(m).unwrap();
    assert!(line.contains(r#""note": 1.50}"#), "{line}");
}

#[test]
fn bad_lines_get_clear_errors_and_change_nothing() {
    let mut engine = engine();
    let mut out = Vec::new();
    let cases = [
        (
            r#"{"user": {"id": "u1"}, "ts": 1, "type": "fail""#,
            "malformed JSON: EOF while parsing",
        ),
        (
            r#"{"user": {"id": "u1"}, "ts": 1} trailing"#,
            "malformed JSON: trailing characters",
        ),
        ("[1, 2]", "an event must be a JSON object"),
        ("17", "an event must be a JSON object"),
        (
            r#"{"ts": 1, "type": "fail"}"#,
            "missing key field 'user.id'",
        ),
        (
            r#"{"user": {"id": [1]}, "ts": 1}"#,
            "key field 'user.id' must be a string or a number",
        ),
        (
            r#"{"user": {"id": "u1"}, "ts": "1"}"#,
            "time field 'ts' must be a number",
        ),
        (
            r#"{"user": {"id": "u1"}, "ts": 1, "x": "\q"}"#,
            "malformed JSON: invalid escape",
        ),
    ];
    for (line, want) in cases {
        let err = engine.push_str(line, &mut out).unwrap_err();
        assert!(err.message.starts_with(want), "{line}: {}", err.message);
    }
    // Nested deeper than a decoded value may be, in a field no pattern reads: refused as by
    // `push`, not kept.
    let deep = format!(
        r#"{{"user": {{"id": "u1"}}, "ts": 1, "extra": {}{}}}"#,
        "[".repeat(200),
        "]".repeat(200)
    );
    let err = engine.push_str(&deep, &mut out).unwrap_err();
    assert!(
        err.message.contains("recursion limit exceeded"),
        "{}",
        err.message
    );
    assert!(
        serde_json::from_str::<Value>(&deep).is_err(),
        "push never sees it either"
    );
    // Many brackets inside strings only: accepted.
    let brackets = format!(
        r#"{{"user": {{"id": "u1"}}, "ts": 1, "s": "{}"}}"#,
        "[".repeat(300)
    );
    engine.push_str(&brackets, &mut out).unwrap();
    assert_eq!(engine.stats().events, 1);
    let mut engine = self::engine();
    assert_eq!(engine.stats().events, 0);
    // The good lines around bad ones are kept.
    for ts in [10, 20, 30] {
        let line = format!(r#"{{"user": {{"id": 7}}, "ts": {ts}, "type": "fail"}}"#);
        engine.push_str(&line, &mut out).unwrap();
        engine.push_str("{oops", &mut out).unwrap_err();
    }
    engine.advance_watermark(i64::MAX, &mut out);
    let m: Vec<&Output> = out.iter().filter(|o| o.kind == OutputKind::Match).collect();
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].key, "7");
    assert_eq!(m[0].events.as_ref().unwrap().get("fail").unwrap().len(), 3);
}
