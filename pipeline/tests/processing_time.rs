//! HTTP pipelines in processing time (`"time": {"mode": "processing"}`), driven by a manual
//! clock: events are taken in arrival order at the clock's time, a batch is matched when it is
//! taken, and timeouts and windows fire when the clock (read on every tick) passes them. No test
//! sleeps.

use std::sync::Arc;
use std::time::Instant;

use cep_patterns::{compile, CompiledPattern, PatternSpec};
use cep_pipeline::running::{Environment, OutputFilter, Pipeline, PipelineRecord};
use cep_pipeline::{Clock, ManualClock};
use serde_json::{json, Value};

const T: i64 = 1_767_258_000_000;

fn pattern(value: Value) -> Arc<CompiledPattern> {
    Arc::new(compile(&PatternSpec::from_json(&value.to_string()).unwrap()).unwrap())
}

fn patterns() -> Vec<Arc<CompiledPattern>> {
    vec![
        pattern(
            json!({"name": "fails", "within": "2s", "after_match": "skip_past_last_event",
            "stages": [{"name": "f", "where": "type == 'fail'", "times": 3, "consecutive": true}]}),
        ),
        pattern(json!({"name": "paid", "within": "5s", "stages": [
            {"name": "created", "where": "type == 'created'"},
            {"name": "paid", "where": "type == 'paid'", "contiguity": "followed_by"}]})),
    ]
}

struct Harness {
    clock: Arc<ManualClock>,
    pipeline: Pipeline,
    _dir: tempfile::TempDir,
}

impl Harness {
    fn new(spec: Value, patterns: Vec<Arc<CompiledPattern>>) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(T));
        let env = Environment {
            clock: clock.clone() as Arc<dyn Clock>,
            ..Environment::in_memory(1000, dir.path().to_path_buf())
        };
        let spec = cep_pipeline::parse(spec).unwrap();
        let record = PipelineRecord {
            spec,
            paused: false,
        };
        Harness {
            clock,
            pipeline: Pipeline::start(record, patterns, &env).unwrap(),
            _dir: dir,
        }
    }

    fn ingest(&self, events: &[Value]) {
        let texts: Vec<String> = events.iter().map(Value::to_string).collect();
        let records = texts.iter().map(|t| Ok(t.as_str())).enumerate().collect();
        let report = self.pipeline.ingest(records, None).unwrap();
        assert_eq!(report.rejected, 0, "{:?}", report.errors);
    }

    /// The outputs so far, as `kind pattern key time-since-T [event times since T]`.
    fn outputs(&self) -> Vec<String> {
        let page = self.pipeline.recent(&OutputFilter::default(), 1000);
        page.outputs
            .iter()
            .map(|o| {
                let times: Vec<String> = o["events"]
                    .as_object()
                    .map(|stages| {
                        stages
                            .values()
                            .flat_map(|evs| evs.as_array().unwrap().iter())
                            .map(|e| e["n"].to_string())
                            .collect()
                    })
                    .unwrap_or_default();
                format!(
                    "{} {} {} +{} [{}]",
                    o["kind"].as_str().unwrap(),
                    o["pattern"].as_str().unwrap_or("-"),
                    o["key"].as_str().unwrap(),
                    o["timestamp"].as_i64().unwrap() - T,
                    times.join(" ")
                )
            })
            .collect()
    }
}

fn ev(key: &str, ty: &str, n: u32) -> Value {
    // `ts` is wrong on purpose: in processing time the event's own time is not read.
    json!({"key": key, "type": ty, "n": n, "ts": 5})
}

#[test]
fn events_match_in_arrival_order_at_the_clocks_time() {
    let h = Harness::new(
        json!({"name": "p", "time": {"mode": "processing"}}),
        patterns(),
    );
    h.ingest(&[ev("a", "fail", 1)]);
    h.clock.advance(500);
    h.ingest(&[ev("a", "fail", 2), ev("b", "fail", 3)]);
    h.clock.advance(500);
    // The third failure of `a` matches as its batch is taken: no tick needed.
    h.ingest(&[ev("a", "fail", 4)]);
    assert_eq!(h.outputs(), ["match fails a +1000 [1 2 4]"]);
    // `b` fails twice more, 2.5 s after its first: outside `within`.
    h.clock.advance(1500);
    h.ingest(&[ev("b", "fail", 5)]);
    h.ingest(&[ev("b", "fail", 6)]);
    assert_eq!(
        h.outputs(),
        [
            "match fails a +1000 [1 2 4]",
            // b's run from its first failure timed out at +500 + 2 s.
            "timeout fails b +2500 [3]",
        ]
    );
    assert_eq!(
        h.pipeline.watermark(),
        T + 2500 + 1,
        "a batch in the same ms is 1 ms later"
    );
}

#[test]
fn timeouts_fire_when_the_clock_passes_them() {
    let h = Harness::new(
        json!({"name": "p", "time": {"mode": "processing"}}),
        patterns(),
    );
    h.ingest(&[ev("o1", "created", 1), ev("o2", "created", 2)]);
    h.clock.advance(3000);
    h.ingest(&[ev("o2", "paid", 3)]);
    assert_eq!(h.outputs(), ["match paid o2 +3000 [2 3]"]);
    h.clock.advance(1999);
    h.pipeline.tick(Instant::now());
    assert_eq!(
        h.outputs().len(),
        1,
        "4999 ms after o1 was created: not yet"
    );
    h.clock.advance(1);
    h.pipeline.tick(Instant::now());
    assert_eq!(
        h.outputs(),
        ["match paid o2 +3000 [2 3]", "timeout paid o1 +5000 [1]"]
    );
}

#[test]
fn windows_close_on_the_clock() {
    let every = pattern(json!({"name": "every", "stages": [{"name": "w"}]}));
    let h = Harness::new(
        json!({"name": "p", "time": {"mode": "processing"},
               "window": {"type": "tumbling", "size": "10s",
                          "aggregates": {"n": {"count": "*"}, "last": {"last": "n"}}}}),
        vec![every],
    );
    // T is a multiple of 10 s: windows are [T, T + 10 s), [T + 10 s, T + 20 s).
    h.ingest(&[ev("a", "x", 1), ev("a", "x", 2)]);
    h.clock.advance(9_000);
    h.ingest(&[ev("a", "x", 3)]);
    h.clock.advance(998);
    h.pipeline.tick(Instant::now());
    assert!(h.outputs().is_empty(), "{:?}", h.outputs());
    h.clock.advance(1);
    h.pipeline.tick(Instant::now());
    let page = h.pipeline.recent(&OutputFilter::default(), 10);
    let result = &page.outputs[0]["events"]["w"][0];
    assert_eq!(
        result,
        &json!({"key": "a", "window_start": T, "window_end": T + 10_000, "n": 3, "last": 3})
    );
    assert_eq!(page.outputs[0]["timestamp"], T + 9_999);
}

#[test]
fn processing_time_is_for_live_sources() {
    let errors = |v: Value| -> Vec<String> {
        cep_pipeline::parse(v)
            .unwrap_err()
            .into_iter()
            .map(|e| e.path)
            .collect()
    };
    // Kafka sources take it (api/tests/kafka.rs runs one); a file is replayed in event time.
    let kafka = cep_pipeline::parse(json!({"time": {"mode": "processing"},
        "source": {"type": "kafka", "bootstrap": "b", "topics": ["t"], "group": "g"}}))
    .unwrap();
    assert_eq!(kafka.time.mode, cep_pipeline::TimeMode::Processing);
    assert_eq!(
        errors(json!({"time": {"mode": "processing"},
                      "source": {"type": "file", "path": "events.jsonl"}})),
        ["time.mode"]
    );
    assert_eq!(
        errors(json!({"time": {"mode": "processing"},
                      "watermark": {"out_of_orderness": "1s", "idleness": "5s"}})),
        ["watermark.out_of_orderness", "watermark.idleness"]
    );
    assert_eq!(errors(json!({"time": {"mode": "wall"}})), ["time.mode"]);
    let spec = cep_pipeline::parse(json!({"time": {"mode": "processing"}})).unwrap();
    let text = serde_json::to_value(&spec).unwrap();
    assert_eq!(text["time"]["mode"], "processing");
    let event = cep_pipeline::parse(json!({})).unwrap();
    assert!(serde_json::to_value(&event).unwrap()["time"]
        .get("mode")
        .is_none());
}
