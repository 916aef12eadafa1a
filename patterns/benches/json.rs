//! Micro-benchmarks of the JSON path: condition evaluation over decoded rows, JSON decoding
//! (parse, key and time, row extraction, the engine's reading of a line), `JsonEngine::push` per event, and writing outputs
//! (`Output::write_json` against serde_json's derived serializer, which writes the same text).
//!
//! Run with: `cargo bench -p cep-patterns --bench json`

use std::hint::black_box;
use std::sync::Arc;

use cep_patterns::condition::{Condition, NoStageEvents, Row, Schema, StageEvents};
use cep_patterns::{
    compile, EngineConfig, JsonEngine, JsonEvent, MatchEvents, Output, OutputKind, PatternSpec,
    TimeFormat,
};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use serde_json::Value;

/// Matched events per stage, as the engine's context gives them to a condition.
struct Matched(Vec<Vec<Row>>);

impl StageEvents for Matched {
    fn for_each(&self, stage: usize, f: &mut dyn FnMut(&Row)) {
        for row in self.0.get(stage).into_iter().flatten() {
            f(row);
        }
    }
}

const LINE: &str = r#"{"id":123456,"key":"k417","ts":123456,"type":"fail","value":42.17}"#;

fn conditions(c: &mut Criterion) {
    let mut g = c.benchmark_group("condition");
    let stages = vec!["s".to_string(), "r".to_string(), "e".to_string()];
    let event: Value = serde_json::from_str(LINE).unwrap();
    for (name, src) in [
        ("string_eq", "type == 'fail'"),
        ("and_compare", "type == 'fail' && value > 40"),
        ("in_list", "type in ['A', 'B', 'fail']"),
        ("regex", "key =~ '^k4[0-9]+$'"),
    ] {
        let mut schema = Schema::new();
        let cond = Condition::parse(src, &stages, &mut schema).unwrap();
        let row = schema.extract(&event);
        g.bench_function(name, |b| {
            b.iter(|| black_box(cond.eval(black_box(&row), &NoStageEvents)))
        });
    }
    // An iterative condition over 8 matched events of stage `r`.
    let mut schema = Schema::new();
    let cond = Condition::parse(
        "type == 'fail' && value < avg(r.value)",
        &stages,
        &mut schema,
    )
    .unwrap();
    let row = schema.extract(&event);
    let matched = Matched(vec![
        vec![],
        (0..8)
            .map(|i| schema.extract(&serde_json::json!({"type": "B", "value": 40 + i})))
            .collect(),
        vec![],
    ]);
    g.bench_function("iterative_avg_8", |b| {
        b.iter(|| black_box(cond.eval(black_box(&row), &matched)))
    });
    g.finish();
}

/// Keyed by `key`, timed by `ts` (epoch ms), no out-of-orderness: the bench lines' fields.
fn config() -> EngineConfig {
    EngineConfig {
        key_by: "key".into(),
        time_field: "ts".into(),
        time_format: TimeFormat::EpochMs,
        out_of_orderness_ms: 0,
    }
}

fn decoding(c: &mut Criterion) {
    let mut g = c.benchmark_group("json_decode");
    g.throughput(Throughput::Bytes(LINE.len() as u64));
    g.bench_function("parse_value", |b| {
        b.iter(|| black_box(serde_json::from_str::<Value>(black_box(LINE)).unwrap()))
    });
    let mut schema = Schema::new();
    let stages = vec!["fail".to_string()];
    Condition::parse("type == 'fail' && value > 40", &stages, &mut schema).unwrap();
    let event: Value = serde_json::from_str(LINE).unwrap();
    g.bench_function("extract_row", |b| {
        b.iter(|| black_box(schema.extract(black_box(&event))))
    });
    // What `push_str` did before its scanner (serde_json's check of the line, without the scan
    // of the wanted members that followed it), and what it does now: check the line, find the
    // wanted members, read key and time, fill the row, keep the text.
    g.bench_function("serde_json_check_raw_value", |b| {
        b.iter(|| {
            let raw = serde_json::from_str::<&serde_json::value::RawValue>(black_box(LINE));
            black_box(raw.unwrap().get().len())
        })
    });
    let spec = PatternSpec::from_json(
        r#"{"name":"p","stages":[{"name":"fail","where":"type == 'fail' && value > 40"}]}"#,
    )
    .unwrap();
    let config = config();
    let engine = JsonEngine::new(config, vec![Arc::new(compile(&spec).unwrap())]).unwrap();
    g.bench_function("engine_parse_str", |b| {
        b.iter(|| black_box(engine.parse_str(black_box(LINE)).unwrap()))
    });
    g.finish();
}

fn engine(c: &mut Criterion) {
    let mut g = c.benchmark_group("json_engine");
    let spec = PatternSpec::from_json(
        r#"{"name":"login_fail","within":"2s","after_match":"skip_past_last_event",
            "stages":[{"name":"fail","where":"type == 'fail'","times":3,"consecutive":true}]}"#,
    )
    .unwrap();
    let config = config();
    let n = 10_000u64;
    g.throughput(Throughput::Elements(n));
    // The same lines, parsed into a `Value` and pushed (`push`, as HTTP and Kafka pipelines do),
    // or pushed as text (`push_str`, as `cep run` does).
    for text in [false, true] {
        let pattern = Arc::new(compile(&spec).unwrap());
        let mut engine = JsonEngine::new(config.clone(), vec![pattern]).unwrap();
        let mut out = Vec::new();
        let mut i = 0u64;
        let mut line = String::new();
        let name = if text {
            "push_str_login_fail_1k_keys"
        } else {
            "push_login_fail_1k_keys"
        };
        g.bench_function(name, |b| {
            b.iter(|| {
                for _ in 0..n {
                    use std::fmt::Write;
                    let x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
                    let kind = if matches!((x >> 40) % 5, 0) {
                        "success"
                    } else {
                        "fail"
                    };
                    line.clear();
                    write!(
                        line,
                        r#"{{"id":{i},"key":"k{}","ts":{i},"type":"{kind}","value":1.5}}"#,
                        x % 1000
                    )
                    .unwrap();
                    if text {
                        engine.push_str(&line, &mut out).unwrap();
                    } else {
                        let v: Value = serde_json::from_str(&line).unwrap();
                        engine.push(v, &mut out).unwrap();
                    }
                    out.clear();
                    i += 1;
                }
            })
        });
    }
    g.finish();
}

fn outputs(c: &mut Criterion) {
    let mut g = c.benchmark_group("json_output");
    let ev = |v: Value| Arc::new(JsonEvent::from_value(Row::empty(), &v));
    let line = |i: u64, kind: &str| serde_json::json!({"id": i, "key": "k17", "ts": 1_700_000_000_000u64 + i, "type": kind, "value": 12.34});
    // A oneormore match: an A, three Bs, a C.
    let events: Vec<(Arc<str>, Vec<Arc<JsonEvent>>)> = vec![
        (Arc::from("a"), vec![ev(line(1, "A"))]),
        (
            Arc::from("b"),
            (2..5).map(|i| ev(line(i, "B"))).collect::<Vec<_>>(),
        ),
        (Arc::from("c"), vec![ev(line(5, "C"))]),
    ];
    let output = Output {
        kind: OutputKind::Match,
        pattern: Some(Arc::from("oneormore")),
        key: "k17".into(),
        timestamp: 1_700_000_000_005,
        events: Some(MatchEvents::from(events)),
        event: None,
        version: 0,
    };
    let mut buf = Vec::with_capacity(1024);
    g.throughput(Throughput::Elements(1));
    g.bench_function("write_json_match_5_events", |b| {
        b.iter(|| {
            buf.clear();
            black_box(&output).write_json(&mut buf);
            black_box(buf.len())
        })
    });
    g.bench_function("serde_json_match_5_events", |b| {
        b.iter(|| {
            buf.clear();
            serde_json::to_writer(&mut buf, black_box(&output)).unwrap();
            black_box(buf.len())
        })
    });
    g.finish();
}

criterion_group!(benches, conditions, decoding, engine, outputs);
criterion_main!(benches);
