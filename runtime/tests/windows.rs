//! Window semantics end to end, through the dataflow API, with exact expected outputs.

use std::sync::Arc;

use cep_runtime::window::TimeWindow;
use cep_runtime::{
    AggregateFunction, Dataflow, GlobalWindow, ManualClock, OutputTag, Result, SessionWindows,
    SlidingWindows, Stream, Timestamp, Trigger, TriggerContext, TriggerResult, TumblingWindows,
    WatermarkStrategy,
};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Reading {
    sensor: String,
    ts: Timestamp,
    temp: f64,
}

fn r(sensor: &str, ts: Timestamp, temp: f64) -> Reading {
    Reading {
        sensor: sensor.into(),
        ts,
        temp,
    }
}

fn min_temp(a: Reading, b: Reading) -> Reading {
    if b.temp < a.temp {
        b
    } else {
        a
    }
}

/// Sensor readings, partly out of order. With a 5 s out-of-orderness bound the watermark after each
/// reading is: -4001, -3001, -1001, -1001, 8999, 10999, 10999, 15999, 15999, 23999, 25999, then +inf.
/// The reading `s1@13000` arrives when the watermark is already 15999.
fn readings() -> Vec<Reading> {
    vec![
        r("s1", 1_000, 20.0),
        r("s2", 2_000, 18.5),
        r("s1", 4_000, 19.0),
        r("s1", 3_000, 17.5),
        r("s2", 14_000, 21.0),
        r("s1", 16_000, 22.0),
        r("s2", 12_000, 16.0),
        r("s1", 21_000, 23.0),
        r("s1", 13_000, 10.0),
        r("s2", 29_000, 25.0),
        r("s1", 31_000, 24.5),
    ]
}

fn source(events: Vec<Reading>, bound: Timestamp) -> Stream<Reading> {
    Dataflow::new()
        .with_parallelism(1)
        .from_iter(events)
        .assign_timestamps_and_watermarks(
            WatermarkStrategy::for_bounded_out_of_orderness(bound)
                .with_timestamp_assigner(|r: &Reading| r.ts),
        )
}

fn key(r: &Reading) -> String {
    r.sensor.clone()
}

fn triples(v: Vec<Reading>) -> Vec<(String, Timestamp, f64)> {
    v.into_iter().map(|r| (r.sensor, r.ts, r.temp)).collect()
}

fn t(s: &str, ts: Timestamp, temp: f64) -> (String, Timestamp, f64) {
    (s.to_string(), ts, temp)
}

#[test]
fn min_temperature_per_sensor_over_15s_tumbling_windows() {
    let late = OutputTag::<Reading>::new("late");
    let mut out = source(readings(), 5_000)
        .key_by(key)
        .window(TumblingWindows::event_time(15_000).unwrap())
        .side_output_late_data(late.clone())
        .reduce(min_temp)
        .collect()
        .unwrap();
    let late_records = out.side_output(&late);
    assert_eq!(
        triples(out.records),
        vec![
            t("s1", 3_000, 17.5),
            t("s2", 12_000, 16.0),
            t("s1", 16_000, 22.0),
            t("s2", 29_000, 25.0),
            t("s1", 31_000, 24.5),
        ]
    );
    // Window results carry the window's max timestamp (end - 1).
    assert_eq!(out.timestamps, vec![14_999, 14_999, 29_999, 29_999, 44_999]);
    // s1@13000 belongs only to [0, 15000), already fired and cleaned up at watermark 15999.
    assert_eq!(late_records, vec![r("s1", 13_000, 10.0)]);
}

#[test]
fn min_temperature_over_15s_windows_sliding_by_5s() {
    let late = OutputTag::<Reading>::new("late");
    let mut out = source(readings(), 5_000)
        .key_by(key)
        .window(SlidingWindows::event_time(15_000, 5_000).unwrap())
        .side_output_late_data(late.clone())
        .reduce_with(min_temp, |k: &String, w: &TimeWindow, m: Reading| {
            (k.clone(), w.start, m.ts, m.temp)
        })
        .collect()
        .unwrap();
    let s = |k: &str, start, ts, temp| (k.to_string(), start, ts, temp);
    assert_eq!(
        out.records,
        vec![
            // Fired at watermark 8999: [-10000, 5000).
            s("s1", -10_000, 3_000, 17.5),
            s("s2", -10_000, 2_000, 18.5),
            // Watermark 10999: [-5000, 10000).
            s("s1", -5_000, 3_000, 17.5),
            s("s2", -5_000, 2_000, 18.5),
            // Watermark 15999: [0, 15000).
            s("s1", 0, 3_000, 17.5),
            s("s2", 0, 12_000, 16.0),
            // Watermark 23999: [5000, 20000), which took the out-of-order s1@13000.
            s("s1", 5_000, 13_000, 10.0),
            s("s2", 5_000, 12_000, 16.0),
            // Watermark 25999: [10000, 25000).
            s("s1", 10_000, 13_000, 10.0),
            s("s2", 10_000, 12_000, 16.0),
            // End of input: everything else, in timer order.
            s("s1", 15_000, 16_000, 22.0),
            s("s2", 15_000, 29_000, 25.0),
            s("s1", 20_000, 21_000, 23.0),
            s("s2", 20_000, 29_000, 25.0),
            s("s1", 25_000, 31_000, 24.5),
            s("s2", 25_000, 29_000, 25.0),
            s("s1", 30_000, 31_000, 24.5),
        ]
    );
    // s1@13000 was too late only for [0, 15000); it was added to two other windows, so it is not
    // a late record.
    assert!(out.side_output(&late).is_empty());
}

#[test]
fn window_fires_when_the_watermark_reaches_end_minus_one() {
    // Punctuated watermarks: each event carries the watermark to emit after it.
    let events = vec![(1_i64, 8_i64), (5, 8), (2, 9), (12, 9), (15, 30)];
    let out = Dataflow::new()
        .with_parallelism(1)
        .from_iter(events)
        .assign_timestamps_and_watermarks(
            WatermarkStrategy::for_punctuated(|e: &(i64, i64), _| Some(e.1))
                .with_timestamp_assigner(|e: &(i64, i64)| e.0),
        )
        .key_by(|_: &(i64, i64)| 0u8)
        .window(TumblingWindows::event_time(10).unwrap())
        .process(
            |_: &u8,
             w: &TimeWindow,
             els: Vec<(i64, i64)>,
             out: &mut Vec<(TimeWindow, Vec<i64>)>| {
                out.push((*w, els.into_iter().map(|e| e.0).collect()))
            },
        )
        .collect()
        .unwrap();
    // Watermark 8 does not fire [0, 10) (max timestamp 9); watermark 9 does, after (2, 9) was added.
    assert_eq!(
        out.records,
        vec![
            (TimeWindow::new(0, 10), vec![1, 5, 2]),
            (TimeWindow::new(10, 20), vec![12, 15])
        ]
    );
    assert_eq!(out.timestamps, vec![9, 19]);
}

#[test]
fn allowed_lateness_fires_again_then_late_records_go_to_the_side_output() {
    let late = OutputTag::<(String, i64, i64)>::new("too-late");
    let events = vec![
        ("a", 1_000, 1),
        ("a", 9_000, 2),
        ("a", 12_000, 3), // watermark 11999: [0, 10000) fires with [1, 2]
        ("a", 8_000, 4),  // late but within 5 s of lateness: fires again with [1, 2, 4]
        ("a", 16_000, 5), // watermark 15999 passes the cleanup time 14999: [0, 10000) is dropped
        ("a", 7_000, 6),  // later than the allowed lateness: side output
        ("b", 3_000, 7),  // also too late (its window [0, 10000) is past cleanup)
    ];
    let events: Vec<(String, i64, i64)> = events
        .into_iter()
        .map(|(k, t, v)| (k.to_string(), t, v))
        .collect();
    let mut out = Dataflow::new()
        .with_parallelism(1)
        .from_iter(events)
        .assign_timestamps_and_watermarks(
            WatermarkStrategy::for_monotonous_timestamps()
                .with_timestamp_assigner(|e: &(String, i64, i64)| e.1),
        )
        .key_by(|e: &(String, i64, i64)| e.0.clone())
        .window(TumblingWindows::event_time(10_000).unwrap())
        .allowed_lateness(5_000)
        .side_output_late_data(late.clone())
        .process(
            |k: &String,
             w: &TimeWindow,
             els: Vec<(String, i64, i64)>,
             out: &mut Vec<(String, i64, Vec<i64>)>| {
                out.push((k.clone(), w.start, els.into_iter().map(|e| e.2).collect()))
            },
        )
        .collect()
        .unwrap();
    assert_eq!(
        out.records,
        vec![
            ("a".to_string(), 0, vec![1, 2]),
            ("a".to_string(), 0, vec![1, 2, 4]),
            ("a".to_string(), 10_000, vec![3, 5]),
        ]
    );
    assert_eq!(out.timestamps, vec![9_999, 9_999, 19_999]);
    assert_eq!(
        out.side_output(&late),
        vec![("a".to_string(), 7_000, 6), ("b".to_string(), 3_000, 7)]
    );
}

#[test]
fn count_windows_of_5_per_sensor() {
    // Timestamps do not matter to count windows.
    let events: Vec<Reading> = [
        ("s1", 30.0),
        ("s2", 12.0),
        ("s1", 29.0),
        ("s1", 31.0),
        ("s2", 11.0),
        ("s1", 27.5),
        ("s2", 13.0),
        ("s1", 28.0), // 5th s1 reading: fires min 27.5
        ("s2", 10.0),
        ("s1", 26.0),
        ("s2", 14.0), // 5th s2 reading: fires min 10.0
        ("s1", 25.0),
        ("s2", 9.0),
    ]
    .into_iter()
    .enumerate()
    .map(|(i, (s, v))| r(s, i as i64, v))
    .collect();
    let out = source(events.clone(), 0)
        .key_by(key)
        .count_window(5)
        .reduce(min_temp)
        .collect()
        .unwrap();
    // The unfinished windows (s1: 2 readings, s2: 1 reading) never fire, as in Flink.
    assert_eq!(
        triples(out.records),
        vec![t("s1", 5, 27.5), t("s2", 8, 10.0)]
    );
    // Count windows are global windows: results carry +infinity as their timestamp.
    assert_eq!(out.timestamps, vec![i64::MAX, i64::MAX]);

    // Sliding count windows: every 2 readings of a sensor, the minimum of its last 5.
    let out = source(events, 0)
        .key_by(key)
        .count_window_sliding(5, 2)
        .process(
            |k: &String, _: &GlobalWindow, els: Vec<Reading>, out: &mut Vec<(String, Vec<f64>)>| {
                out.push((k.clone(), els.into_iter().map(|r| r.temp).collect()))
            },
        )
        .collect()
        .unwrap();
    let s = |k: &str, v: &[f64]| (k.to_string(), v.to_vec());
    assert_eq!(
        out.records,
        vec![
            s("s1", &[30.0, 29.0]),
            s("s2", &[12.0, 11.0]),
            s("s1", &[30.0, 29.0, 31.0, 27.5]),
            s("s2", &[12.0, 11.0, 13.0, 10.0]),
            s("s1", &[29.0, 31.0, 27.5, 28.0, 26.0]),
            s("s2", &[11.0, 13.0, 10.0, 14.0, 9.0]),
        ]
    );
}

#[derive(Clone, Copy)]
struct CountSum;

impl AggregateFunction for CountSum {
    type In = (String, i64, i64);
    type Acc = (u32, i64);
    type Out = (u32, i64);
    fn create_accumulator(&self) -> (u32, i64) {
        (0, 0)
    }
    fn add(&self, v: (String, i64, i64), acc: &mut (u32, i64)) {
        acc.0 += 1;
        acc.1 += v.2;
    }
    fn get_result(&self, acc: &(u32, i64)) -> (u32, i64) {
        *acc
    }
    fn merge(&self, a: (u32, i64), b: (u32, i64)) -> (u32, i64) {
        (a.0 + b.0, a.1 + b.1)
    }
}

/// Session events: the watermark lags 20 s, so nothing fires before the end.
fn session_events() -> Vec<(String, i64, i64)> {
    [
        ("u1", 1_000, 1),
        ("u1", 5_000, 2), // merges with [1000, 11000) into [1000, 15000)
        ("u2", 3_000, 3),
        ("u1", 30_000, 4), // a new session [30000, 40000)
        ("u1", 12_000, 5), // out of order: extends the first session to [1000, 22000)
        ("u2", 25_000, 6), // 12 s after u2's last event: a new session
        ("u1", 21_000, 7), // bridges both u1 sessions into [1000, 40000)
    ]
    .into_iter()
    .map(|(k, t, v)| (k.to_string(), t, v))
    .collect()
}

fn session_stream() -> Stream<(String, i64, i64)> {
    Dataflow::new()
        .with_parallelism(1)
        .from_iter(session_events())
        .assign_timestamps_and_watermarks(
            WatermarkStrategy::for_bounded_out_of_orderness(20_000)
                .with_timestamp_assigner(|e: &(String, i64, i64)| e.1),
        )
}

#[test]
fn session_windows_with_a_10s_gap_merge() {
    let expected = vec![
        ("u2".to_string(), 3_000, 13_000, 1, 3),
        ("u2".to_string(), 25_000, 35_000, 1, 6),
        ("u1".to_string(), 1_000, 40_000, 5, 19),
    ];
    let process = session_stream()
        .key_by(|e: &(String, i64, i64)| e.0.clone())
        .window(SessionWindows::event_time(10_000).unwrap())
        .process(
            |k: &String,
             w: &TimeWindow,
             els: Vec<(String, i64, i64)>,
             out: &mut Vec<(String, i64, i64, u32, i64)>| {
                let sum = els.iter().map(|e| e.2).sum();
                out.push((k.clone(), w.start, w.end, els.len() as u32, sum))
            },
        )
        .collect()
        .unwrap();
    assert_eq!(process.records, expected);
    assert_eq!(process.timestamps, vec![12_999, 34_999, 39_999]);

    // Incremental aggregation merges accumulators instead of lists; same results.
    let aggregate = session_stream()
        .key_by(|e: &(String, i64, i64)| e.0.clone())
        .window(SessionWindows::event_time(10_000).unwrap())
        .aggregate_with(CountSum, |k: &String, w: &TimeWindow, (n, sum)| {
            (k.clone(), w.start, w.end, n, sum)
        })
        .collect()
        .unwrap();
    assert_eq!(aggregate.records, expected);

    // And so does a reduce.
    let reduce = session_stream()
        .key_by(|e: &(String, i64, i64)| e.0.clone())
        .window(SessionWindows::event_time(10_000).unwrap())
        .reduce_with(
            |a, b| (a.0, a.1.min(b.1), a.2 + b.2),
            |k: &String, w: &TimeWindow, e| (k.clone(), w.start, w.end, e.2),
        )
        .collect()
        .unwrap();
    assert_eq!(
        reduce.records,
        vec![
            ("u2".to_string(), 3_000, 13_000, 3),
            ("u2".to_string(), 25_000, 35_000, 6),
            ("u1".to_string(), 1_000, 40_000, 19),
        ]
    );
}

#[test]
fn session_windows_fire_as_the_watermark_passes_each_session() {
    // With monotonous timestamps each session fires as soon as the watermark passes its end - 1.
    let events = vec![
        ("k", 0, 1),
        ("k", 4_000, 2),
        ("k", 20_000, 3), // watermark 19999 closes [0, 14000)
        ("k", 25_000, 4),
        ("k", 40_000, 5), // watermark 39999 closes [20000, 35000)
    ];
    let events: Vec<_> = events
        .into_iter()
        .map(|(k, t, v)| (k.to_string(), t, v))
        .collect();
    let out = Dataflow::new()
        .with_parallelism(1)
        .from_iter(events)
        .assign_timestamps_and_watermarks(
            WatermarkStrategy::for_monotonous_timestamps()
                .with_timestamp_assigner(|e: &(String, i64, i64)| e.1),
        )
        .key_by(|e: &(String, i64, i64)| e.0.clone())
        .window(SessionWindows::event_time(10_000).unwrap())
        .aggregate_with(CountSum, |_: &String, w: &TimeWindow, r| {
            (w.start, w.end, r)
        })
        .collect()
        .unwrap();
    assert_eq!(
        out.records,
        vec![
            (0, 14_000, (2, 3)),
            (20_000, 35_000, (2, 7)),
            (40_000, 50_000, (1, 5))
        ]
    );
}

#[test]
fn processing_time_windows_follow_the_injected_clock() {
    let clock = ManualClock::new(0);
    let source_clock = clock.clone();
    // (processing time at arrival, key, value)
    let events = vec![
        (0, "a", 1),
        (30, "a", 2),
        (60, "b", 3),
        (110, "a", 4),
        (250, "a", 5),
    ];
    let out = Dataflow::new()
        .with_parallelism(1)
        .with_clock(Arc::new(clock))
        .from_iter(events)
        .map(move |(at, k, v)| {
            source_clock.set(at);
            (k.to_string(), v)
        })
        .key_by(|e: &(String, i64)| e.0.clone())
        .window(TumblingWindows::processing_time(100).unwrap())
        .process(
            |k: &String,
             w: &TimeWindow,
             els: Vec<(String, i64)>,
             out: &mut Vec<(String, i64, Vec<i64>)>| {
                out.push((k.clone(), w.start, els.into_iter().map(|e| e.1).collect()))
            },
        )
        .collect()
        .unwrap();
    assert_eq!(
        out.records,
        vec![
            // Fired when the clock showed 110.
            ("a".to_string(), 0, vec![1, 2]),
            ("b".to_string(), 0, vec![3]),
            // Fired when the clock showed 250.
            ("a".to_string(), 100, vec![4]),
            // Fired at the end of the bounded input.
            ("a".to_string(), 200, vec![5]),
        ]
    );
}

/// Fires and purges a global window when an element with value 0 arrives.
struct FlushOnZero;

impl Trigger<(String, i64), GlobalWindow> for FlushOnZero {
    fn on_element(
        &self,
        e: &(String, i64),
        _: Timestamp,
        _: &GlobalWindow,
        _: &mut TriggerContext<'_>,
    ) -> Result<TriggerResult> {
        Ok(if e.1 == 0 {
            TriggerResult::FireAndPurge
        } else {
            TriggerResult::Continue
        })
    }
    fn on_event_time(
        &self,
        _: Timestamp,
        _: &GlobalWindow,
        _: &mut TriggerContext<'_>,
    ) -> Result<TriggerResult> {
        Ok(TriggerResult::Continue)
    }
    fn on_processing_time(
        &self,
        _: Timestamp,
        _: &GlobalWindow,
        _: &mut TriggerContext<'_>,
    ) -> Result<TriggerResult> {
        Ok(TriggerResult::Continue)
    }
}

#[test]
fn custom_trigger_on_global_windows() {
    let events: Vec<(String, i64)> = [
        ("a", 1),
        ("b", 5),
        ("a", 2),
        ("a", 0),
        ("b", 0),
        ("a", 3),
        ("a", 0),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let out = Dataflow::new()
        .with_parallelism(1)
        .from_iter(events)
        .key_by(|e: &(String, i64)| e.0.clone())
        .window(cep_runtime::GlobalWindows)
        .trigger(FlushOnZero)
        .reduce(|a, b| (a.0, a.1 + b.1))
        .collect()
        .unwrap();
    assert_eq!(
        out.records,
        vec![
            ("a".to_string(), 3),
            ("b".to_string(), 5),
            ("a".to_string(), 3)
        ]
    );
}

#[test]
fn json_value_events_work_in_windows() {
    use serde_json::{json, Value};
    let input = [
        r#"{"sensor":"s1","ts":1000,"temp":20.5}"#,
        r#"{"sensor":"s1","ts":2000,"temp":19.5}"#,
        r#"{"sensor":"s2","ts":2500,"temp":30}"#,
    ]
    .join("\n");
    let out = Dataflow::new()
        .with_parallelism(1)
        .from_json_lines(std::io::Cursor::new(input))
        .assign_timestamps_and_watermarks(
            WatermarkStrategy::for_monotonous_timestamps()
                .with_timestamp_assigner(|v: &Value| v["ts"].as_i64().unwrap_or(0)),
        )
        .key_by(|v: &Value| v["sensor"].as_str().unwrap_or("").to_string())
        .window(TumblingWindows::event_time(15_000).unwrap())
        .process(
            |k: &String, w: &TimeWindow, els: Vec<Value>, out: &mut Vec<Value>| {
                let min = els
                    .iter()
                    .filter_map(|v| v["temp"].as_f64())
                    .fold(f64::INFINITY, f64::min);
                out.push(json!({"sensor": k, "window_end": w.end, "min": min, "n": els.len()}))
            },
        )
        .collect()
        .unwrap();
    assert_eq!(
        out.records,
        vec![
            json!({"sensor": "s1", "window_end": 15000, "min": 19.5, "n": 2}),
            json!({"sensor": "s2", "window_end": 15000, "min": 30.0, "n": 1}),
        ]
    );
}

#[test]
fn processing_time_sessions_merge_and_fire_from_the_clock() {
    let clock = ManualClock::new(0);
    let source_clock = clock.clone();
    let events = vec![(0, "a", 1), (30, "a", 2), (100, "b", 3), (200, "a", 4)];
    let out = Dataflow::new()
        .with_parallelism(1)
        .with_clock(Arc::new(clock))
        .from_iter(events)
        .map(move |(at, k, v)| {
            source_clock.set(at);
            (k.to_string(), v)
        })
        .key_by(|e: &(String, i64)| e.0.clone())
        .window(SessionWindows::processing_time(50).unwrap())
        .process(
            |k: &String,
             w: &TimeWindow,
             els: Vec<(String, i64)>,
             out: &mut Vec<(String, i64, i64, Vec<i64>)>| {
                out.push((
                    k.clone(),
                    w.start,
                    w.end,
                    els.into_iter().map(|e| e.1).collect(),
                ))
            },
        )
        .collect()
        .unwrap();
    assert_eq!(
        out.records,
        vec![
            // a@0 and a@30 merged into [0, 80); fired when the clock showed 100.
            ("a".to_string(), 0, 80, vec![1, 2]),
            // Fired when the clock showed 200.
            ("b".to_string(), 100, 150, vec![3]),
            // Fired at the end of input.
            ("a".to_string(), 200, 250, vec![4]),
        ]
    );
}

#[test]
fn vec_sink_collects_records_with_timestamps() {
    let sink = cep_runtime::VecSink::new();
    let side = source(readings(), 5_000)
        .key_by(key)
        .window(TumblingWindows::event_time(15_000).unwrap())
        .aggregate_with(MaxTemp, |k: &String, _: &TimeWindow, m| (k.clone(), m))
        .sink(sink.clone())
        .unwrap();
    assert!(side.is_empty());
    assert_eq!(
        sink.take(),
        vec![
            (14_999, ("s1".to_string(), 20.0)),
            (14_999, ("s2".to_string(), 21.0)),
            (29_999, ("s1".to_string(), 23.0)),
            (29_999, ("s2".to_string(), 25.0)),
            (44_999, ("s1".to_string(), 24.5)),
        ]
    );
}

struct MaxTemp;

impl AggregateFunction for MaxTemp {
    type In = Reading;
    type Acc = f64;
    type Out = f64;
    fn create_accumulator(&self) -> f64 {
        f64::NEG_INFINITY
    }
    fn add(&self, r: Reading, acc: &mut f64) {
        *acc = acc.max(r.temp);
    }
    fn get_result(&self, acc: &f64) -> f64 {
        *acc
    }
    fn merge(&self, a: f64, b: f64) -> f64 {
        a.max(b)
    }
}

proptest::proptest! {
    /// With an out-of-orderness bound larger than the time span, nothing is late, so the arrival
    /// order cannot change the per-key window results.
    #[test]
    fn window_results_do_not_depend_on_arrival_order(
        events in proptest::collection::vec((0u8..4, 0i64..60_000, -40i32..40), 1..80),
        seed in proptest::num::u64::ANY,
    ) {
        let run = |evs: Vec<(u8, i64, i32)>| {
            let mut out = Dataflow::new()
                .with_parallelism(1)
                .from_iter(evs)
                .assign_timestamps_and_watermarks(
                    WatermarkStrategy::for_bounded_out_of_orderness(100_000)
                        .with_timestamp_assigner(|e: &(u8, i64, i32)| e.1),
                )
                .key_by(|e: &(u8, i64, i32)| e.0)
                .window(SlidingWindows::event_time(15_000, 5_000).unwrap())
                .aggregate_with(SumCount, |k: &u8, w: &TimeWindow, r| (*k, w.start, r))
                .collect()
                .unwrap()
                .records;
            out.sort();
            out
        };
        let mut shuffled = events.clone();
        // A seeded Fisher-Yates shuffle.
        let mut x = seed | 1;
        for i in (1..shuffled.len()).rev() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            shuffled.swap(i, (x % (i as u64 + 1)) as usize);
        }
        proptest::prop_assert_eq!(run(events), run(shuffled));
    }
}

struct SumCount;

impl AggregateFunction for SumCount {
    type In = (u8, i64, i32);
    type Acc = (i64, u32);
    type Out = (i64, u32);
    fn create_accumulator(&self) -> (i64, u32) {
        (0, 0)
    }
    fn add(&self, e: (u8, i64, i32), acc: &mut (i64, u32)) {
        acc.0 += i64::from(e.2);
        acc.1 += 1;
    }
    fn get_result(&self, acc: &(i64, u32)) -> (i64, u32) {
        *acc
    }
    fn merge(&self, a: (i64, u32), b: (i64, u32)) -> (i64, u32) {
        (a.0 + b.0, a.1 + b.1)
    }
}

#[test]
fn a_late_event_within_the_lateness_merges_into_a_fired_session_and_fires_it_again() {
    let events: Vec<(String, i64)> = [0, 30, 5, 200]
        .into_iter()
        .map(|t| ("k".to_string(), t))
        .collect();
    let out = Dataflow::new()
        .with_parallelism(1)
        .from_iter(events)
        .assign_timestamps_and_watermarks(
            WatermarkStrategy::for_monotonous_timestamps()
                .with_timestamp_assigner(|e: &(String, i64)| e.1),
        )
        .key_by(|e: &(String, i64)| e.0.clone())
        .window(SessionWindows::event_time(10).unwrap())
        .allowed_lateness(100)
        .process(
            |_: &String,
             w: &TimeWindow,
             els: Vec<(String, i64)>,
             out: &mut Vec<(i64, i64, Vec<i64>)>| {
                out.push((w.start, w.end, els.into_iter().map(|e| e.1).collect()))
            },
        )
        .collect()
        .unwrap();
    assert_eq!(
        out.records,
        vec![
            // Watermark 29 closes [0, 10).
            (0, 10, vec![0]),
            // k@5 is late but within the lateness: it extends the fired session to [0, 15), which
            // fires again at once with the merged contents.
            (0, 15, vec![0, 5]),
            (30, 40, vec![30]),
            (200, 210, vec![200]),
        ]
    );
}
