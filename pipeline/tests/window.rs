//! The window stage of a pipeline spec against the runtime's window operator: the same events
//! through a JSON pipeline (`window` stage, then a pattern that matches every window result)
//! and through the runtime's dataflow (`key_by().window()/count_window().allowed_lateness()
//! .side_output_late_data().process()`), with the same watermark (bounded out-of-orderness
//! after every event, +infinity at the end). Windows, their start and end, the timestamps of
//! their results, their contents and the late events must agree, for every window kind; the
//! runtime's own tests (`runtime/tests/windows.rs`) pin those to Flink's semantics, and the
//! cases below repeat their expected values.

use std::sync::Arc;

use cep_patterns::{compile, Output, OutputKind, PatternSpec};
use cep_pipeline::window::PipelineEngine;
use cep_runtime::window::TimeWindow;
use cep_runtime::{
    Dataflow, GlobalWindow, OutputTag, SessionWindows, SlidingWindows, Stream, Timestamp,
    TumblingWindows, WatermarkStrategy, WindowAssigner,
};
use proptest::prelude::*;
use serde_json::{json, Value};

type Event = (String, Timestamp, i64);

/// One window result: key, window, the timestamp it carries, and count, sum, min, max and the
/// first and last value (by event time, then arrival) of its events.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Res {
    key: String,
    start: Timestamp,
    end: Timestamp,
    ts: Timestamp,
    count: u64,
    sum: i64,
    min: i64,
    max: i64,
    first: i64,
    last: i64,
}

#[derive(Debug, Default, PartialEq)]
struct Run {
    results: Vec<Res>,
    late: Vec<Event>,
}

const AGGREGATES: &str = r#"{"n": {"count": "*"}, "sum": {"sum": "v"}, "min": {"min": "v"},
    "max": {"max": "v"}, "first": {"first": "v"}, "last": {"last": "v"}}"#;

/// The events through a pipeline whose window stage is `window` (aggregates added).
fn through_pipeline(mut window: Value, bound: Timestamp, events: &[Event]) -> Run {
    window["aggregates"] = serde_json::from_str(AGGREGATES).unwrap();
    let spec = cep_pipeline::parse(json!({
        "key_by": "k",
        "watermark": {"out_of_orderness": bound, "max_future": "off"},
        "window": window,
    }))
    .unwrap();
    let every = PatternSpec::from_json(r#"{"name": "every", "stages": [{"name": "w"}]}"#).unwrap();
    let mut engine = PipelineEngine::new(&spec, vec![Arc::new(compile(&every).unwrap())]).unwrap();
    let mut out = Vec::new();
    for (k, ts, v) in events {
        engine
            .push(json!({"k": k, "ts": ts, "v": v}), &mut out)
            .unwrap();
    }
    engine.advance_watermark(i64::MAX, &mut out);
    collect(&out)
}

/// Window results are the matches of `every` and the results that reached the patterns late
/// (a window fired again by a late event within the allowed lateness); late events are the
/// late outputs that are not window results.
fn collect(out: &[Output]) -> Run {
    let mut run = Run::default();
    for o in out {
        let event = match o.kind {
            OutputKind::Match => o.events.as_ref().unwrap().get("w").unwrap()[0].value(),
            OutputKind::Late => o.event.as_ref().unwrap().value(),
            OutputKind::Timeout => panic!("no timeouts expected: {o:?}"),
        };
        if event.get("window_end").is_none() {
            run.late.push((
                event["k"].as_str().unwrap().to_string(),
                event["ts"].as_i64().unwrap(),
                event["v"].as_i64().unwrap(),
            ));
            continue;
        }
        let int = |f: &str| event[f].as_i64().unwrap_or_else(|| panic!("{f}: {event}"));
        assert_eq!(o.timestamp, int("window_end") - 1, "{event}");
        run.results.push(Res {
            key: event["k"].as_str().unwrap().to_string(),
            start: int("window_start"),
            end: int("window_end"),
            ts: o.timestamp,
            count: event["n"].as_u64().unwrap(),
            sum: int("sum"),
            min: int("min"),
            max: int("max"),
            first: int("first"),
            last: int("last"),
        });
    }
    run.results.sort();
    run.late.sort();
    run
}

fn source(events: &[Event], bound: Timestamp) -> Stream<Event> {
    Dataflow::new()
        .with_parallelism(1)
        .from_iter(events.to_vec())
        .assign_timestamps_and_watermarks(
            WatermarkStrategy::for_bounded_out_of_orderness(bound)
                .with_timestamp_assigner(|e: &Event| e.1),
        )
}

/// Count, sum, min, max, first and last of a window's events (in arrival order).
fn summary(key: &str, start: i64, end: i64, ts: i64, els: &[Event]) -> Res {
    let vs = || els.iter().map(|e| e.2);
    let first = els.iter().min_by_key(|e| e.1).unwrap().2;
    // The last to arrive among the latest in event time.
    let max_ts = els.iter().map(|e| e.1).max().unwrap();
    let last = els.iter().rev().find(|e| e.1 == max_ts).unwrap().2;
    Res {
        key: key.to_string(),
        start,
        end,
        ts,
        count: els.len() as u64,
        sum: vs().sum(),
        min: vs().min().unwrap(),
        max: vs().max().unwrap(),
        first,
        last,
    }
}

/// The same events through the runtime's time windows.
fn through_runtime<A: WindowAssigner<W = TimeWindow>>(
    assigner: A,
    lateness: Timestamp,
    bound: Timestamp,
    events: &[Event],
) -> Run {
    let late = OutputTag::<Event>::new("late");
    let mut out = source(events, bound)
        .key_by(|e: &Event| e.0.clone())
        .window(assigner)
        .allowed_lateness(lateness)
        .side_output_late_data(late.clone())
        .process(
            |k: &String, w: &TimeWindow, els: Vec<Event>, out: &mut Vec<Res>| {
                out.push(summary(k, w.start, w.end, w.end - 1, &els))
            },
        )
        .collect()
        .unwrap();
    for (r, ts) in out.records.iter().zip(&out.timestamps) {
        assert_eq!(
            r.ts, *ts,
            "the runtime stamps a result with its window's end - 1"
        );
    }
    let mut run = Run {
        results: out.records.clone(),
        late: out.side_output(&late),
    };
    run.results.sort();
    run.late.sort();
    run
}

/// The same events through the runtime's count windows; a result's time is its newest event's.
fn through_runtime_count(size: u64, slide: Option<u64>, events: &[Event]) -> Run {
    let keyed = source(events, 0).key_by(|e: &Event| e.0.clone());
    let windowed = match slide {
        None => keyed.count_window(size),
        Some(slide) => keyed.count_window_sliding(size, slide),
    };
    let out = windowed
        .process(
            |k: &String, _: &GlobalWindow, els: Vec<Event>, out: &mut Vec<Res>| {
                let min = els.iter().map(|e| e.1).min().unwrap();
                let max = els.iter().map(|e| e.1).max().unwrap();
                out.push(summary(k, min, max + 1, max, &els))
            },
        )
        .collect()
        .unwrap();
    // Flink stamps a global window's result with +infinity, which no pattern could use.
    assert!(out.timestamps.iter().all(|t| *t == i64::MAX));
    let mut results = out.records;
    results.sort();
    Run {
        results,
        late: Vec::new(),
    }
}

fn ev(k: &str, ts: Timestamp, v: i64) -> Event {
    (k.to_string(), ts, v)
}

/// `runtime/tests/windows.rs`'s sensor readings (temperatures in tenths).
fn readings() -> Vec<Event> {
    vec![
        ev("s1", 1_000, 200),
        ev("s2", 2_000, 185),
        ev("s1", 4_000, 190),
        ev("s1", 3_000, 175),
        ev("s2", 14_000, 210),
        ev("s1", 16_000, 220),
        ev("s2", 12_000, 160),
        ev("s1", 21_000, 230),
        ev("s1", 13_000, 100),
        ev("s2", 29_000, 250),
        ev("s1", 31_000, 245),
    ]
}

#[test]
fn tumbling_windows_agree_with_the_runtime() {
    let events = readings();
    let got = through_pipeline(json!({"type": "tumbling", "size": "15s"}), 5_000, &events);
    let want = through_runtime(
        TumblingWindows::event_time(15_000).unwrap(),
        0,
        5_000,
        &events,
    );
    assert_eq!(got, want);
    // As `min_temperature_per_sensor_over_15s_tumbling_windows`: the minima, the timestamps
    // (end - 1), and s1@13000 late for [0, 15000), fired and cleaned up at watermark 15999.
    let mins: Vec<(&str, i64, i64)> = got
        .results
        .iter()
        .map(|r| (r.key.as_str(), r.ts, r.min))
        .collect();
    assert_eq!(
        mins,
        [
            ("s1", 14_999, 175),
            ("s1", 29_999, 220),
            ("s1", 44_999, 245),
            ("s2", 14_999, 160),
            ("s2", 29_999, 250),
        ]
    );
    assert_eq!(got.late, [ev("s1", 13_000, 100)]);
}

#[test]
fn sliding_windows_agree_with_the_runtime() {
    let events = readings();
    let got = through_pipeline(
        json!({"type": "sliding", "size": "15s", "slide": "5s"}),
        5_000,
        &events,
    );
    let want = through_runtime(
        SlidingWindows::event_time(15_000, 5_000).unwrap(),
        0,
        5_000,
        &events,
    );
    assert_eq!(got, want);
    // As `min_temperature_over_15s_windows_sliding_by_5s`: 17 windows, starting at -10 s, and
    // s1@13000, too late only for [0, 15000), is in two others and so not late.
    assert_eq!(got.results.len(), 17);
    assert_eq!(got.results[0].start, -10_000);
    assert!(got.late.is_empty());
    let s1_5000 = got
        .results
        .iter()
        .find(|r| r.key == "s1" && r.start == 5_000)
        .unwrap();
    assert_eq!((s1_5000.min, s1_5000.end), (100, 20_000));
}

#[test]
fn allowed_lateness_fires_again_then_sends_events_to_late() {
    // `allowed_lateness_fires_again_then_late_records_go_to_the_side_output`, monotonous
    // timestamps (bound 0).
    let events = vec![
        ev("a", 1_000, 1),
        ev("a", 9_000, 2),
        ev("a", 12_000, 3),
        ev("a", 8_000, 4),
        ev("a", 16_000, 5),
        ev("a", 7_000, 6),
        ev("b", 3_000, 7),
    ];
    let window = json!({"type": "tumbling", "size": "10s", "allowed_lateness": "5s"});
    let got = through_pipeline(window, 0, &events);
    let want = through_runtime(
        TumblingWindows::event_time(10_000).unwrap(),
        5_000,
        0,
        &events,
    );
    assert_eq!(got, want);
    let sums: Vec<(i64, i64)> = got.results.iter().map(|r| (r.start, r.sum)).collect();
    // [0, 10000) fires with 1 + 2, again with 1 + 2 + 4 (a result the patterns get late), then
    // [10000, 20000) with 3 + 5.
    assert_eq!(sums, [(0, 3), (0, 7), (10_000, 8)]);
    assert_eq!(got.late, [ev("a", 7_000, 6), ev("b", 3_000, 7)]);
}

#[test]
fn session_windows_merge_as_in_the_runtime() {
    // The runtime operator's session test: gap 10, watermark 5 behind.
    let events = vec![
        ev("a", 1, 1),
        ev("b", 2, 2),
        ev("a", 8, 3),
        ev("a", 30, 4),
        ev("b", 9, 5),
        ev("a", 15, 6),
        ev("b", 40, 7),
        ev("a", 33, 8),
        ev("c", 41, 9),
        ev("a", 60, 10),
    ];
    let got = through_pipeline(json!({"type": "session", "gap": 10}), 4, &events);
    let want = through_runtime(SessionWindows::event_time(10).unwrap(), 0, 4, &events);
    assert_eq!(got, want);
    let windows: Vec<(&str, i64, i64, u64)> = got
        .results
        .iter()
        .map(|r| (r.key.as_str(), r.start, r.end, r.count))
        .collect();
    assert_eq!(
        windows,
        [
            ("a", 1, 18, 2),
            ("a", 30, 43, 2),
            ("a", 60, 70, 1),
            ("b", 2, 12, 1),
            ("b", 40, 50, 1),
            ("c", 41, 51, 1),
        ]
    );
    assert_eq!(got.late, [ev("a", 15, 6), ev("b", 9, 5)]);
}

#[test]
fn a_late_event_can_merge_sessions() {
    // a@10 arrives out of order (within the bound); its window [10, 20) touches both [0, 10)
    // and [20, 30), which merge into one session.
    let events = vec![
        ev("a", 0, 1),
        ev("a", 20, 2),
        ev("a", 10, 3),
        ev("a", 100, 4),
    ];
    let got = through_pipeline(json!({"type": "session", "gap": 10}), 50, &events);
    let want = through_runtime(SessionWindows::event_time(10).unwrap(), 0, 50, &events);
    assert_eq!(got, want);
    assert_eq!(
        (got.results[0].start, got.results[0].end, got.results[0].sum),
        (0, 30, 6)
    );
}

#[test]
fn count_windows_agree_with_the_runtime() {
    let values = [30, 12, 29, 31, 11, 27, 13, 28, 10, 26, 14, 25, 9];
    let keys = [
        "s1", "s2", "s1", "s1", "s2", "s1", "s2", "s1", "s2", "s1", "s2", "s1", "s2",
    ];
    let events: Vec<Event> = keys
        .iter()
        .zip(values)
        .enumerate()
        .map(|(i, (k, v))| ev(k, i as i64, v))
        .collect();
    let got = through_pipeline(json!({"type": "count", "size": 5}), 0, &events);
    assert_eq!(got, through_runtime_count(5, None, &events));
    // `count_windows_of_5_per_sensor`: s1's 5th reading fires min 27, s2's min 10; the
    // unfinished windows never fire.
    let mins: Vec<(&str, i64)> = got
        .results
        .iter()
        .map(|r| (r.key.as_str(), r.min))
        .collect();
    assert_eq!(mins, [("s1", 27), ("s2", 10)]);
    let got = through_pipeline(json!({"type": "count", "size": 5, "slide": 2}), 0, &events);
    assert_eq!(got, through_runtime_count(5, Some(2), &events));
    assert_eq!(got.results.len(), 6);
}

#[test]
fn results_carry_the_key_where_key_by_reads_it_and_null_for_no_values() {
    let spec = cep_pipeline::parse(json!({
        "key_by": "device.id",
        "watermark": {"max_future": "off"},
        "window": {"type": "tumbling", "size": "10s", "aggregates": {
            "avg": {"avg": "temp"}, "n": {"count": "temp"}, "kinds": {"count_distinct": "kind"},
            "total": {"sum": "temp"}}},
    }))
    .unwrap();
    let every = PatternSpec::from_json(r#"{"name": "every", "stages": [{"name": "w"}]}"#).unwrap();
    let mut engine = PipelineEngine::new(&spec, vec![Arc::new(compile(&every).unwrap())]).unwrap();
    let mut out = Vec::new();
    for e in [
        json!({"device": {"id": 7}, "ts": 1000, "temp": 20, "kind": "a"}),
        json!({"device": {"id": 7}, "ts": 2000, "temp": 21.5, "kind": "b"}),
        json!({"device": {"id": 7}, "ts": 3000, "kind": "a"}),
        json!({"device": {"id": 8}, "ts": 4000, "temp": null, "kind": {"x": 1}}),
    ] {
        engine.push(e, &mut out).unwrap();
    }
    engine.advance_watermark(i64::MAX, &mut out);
    let results: Vec<Value> = out
        .iter()
        .map(|o| o.events.as_ref().unwrap().get("w").unwrap()[0].value())
        .collect();
    assert_eq!(
        results,
        [
            json!({"device": {"id": 7}, "window_start": 0, "window_end": 10000,
                   "avg": 20.75, "kinds": 2, "n": 2, "total": 41.5}),
            json!({"device": {"id": 8}, "window_start": 0, "window_end": 10000,
                   "avg": null, "kinds": 1, "n": 0, "total": 0}),
        ]
    );
    assert_eq!(out[0].key, "7");
    // A bad event is refused with the engine's message, and changes nothing.
    let e = engine.push(json!({"ts": 5}), &mut out).unwrap_err();
    assert_eq!(e.message, "missing key field 'device.id'");
    // So is a time no window bound could be computed for.
    let e = engine
        .push(json!({"device": {"id": 7}, "ts": i64::MAX - 5}), &mut out)
        .unwrap_err();
    assert!(e.message.contains("out of the range"), "{}", e.message);
}

fn kind() -> impl Strategy<Value = Value> {
    prop_oneof![
        (1i64..20_000, 0i64..3).prop_map(|(size, o)| json!({"type": "tumbling", "size": size,
            "offset": (size * o / 4) as u64})),
        // A slide that puts an event in at most 1000 windows (the spec refuses more).
        (1i64..20_000)
            .prop_flat_map(|size| (Just(size), ((size + 999) / 1000).max(1)..20_000))
            .prop_map(|(size, slide)| json!({"type": "sliding", "size": size, "slide": slide})),
        (1i64..10_000).prop_map(|gap| json!({"type": "session", "gap": gap})),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Any events, any time window, any lateness and bound: the pipeline's stage and the
    /// runtime's operator agree.
    #[test]
    fn time_windows_agree_with_the_runtime_on_any_input(
        window in kind(),
        lateness in prop_oneof![Just(0i64), 0i64..10_000],
        bound in prop_oneof![Just(0i64), 0i64..5_000],
        raw in prop::collection::vec((0usize..3, 0i64..60_000, -50i64..50), 0..40),
    ) {
        let events: Vec<Event> = raw
            .iter()
            .map(|(k, ts, v)| (["a", "b", "c"][*k].to_string(), *ts, *v))
            .collect();
        let mut with_lateness = window.clone();
        with_lateness["allowed_lateness"] = json!(lateness);
        let got = through_pipeline(with_lateness, bound, &events);
        let size = window["size"].as_i64().unwrap_or(0);
        let want = match window["type"].as_str().unwrap() {
            "tumbling" => {
                let offset = window["offset"].as_i64().unwrap();
                let a = TumblingWindows::event_time(size).unwrap().with_offset(offset).unwrap();
                through_runtime(a, lateness, bound, &events)
            }
            "sliding" => {
                let slide = window["slide"].as_i64().unwrap();
                through_runtime(SlidingWindows::event_time(size, slide).unwrap(), lateness, bound, &events)
            }
            _ => {
                let gap = window["gap"].as_i64().unwrap();
                through_runtime(SessionWindows::event_time(gap).unwrap(), lateness, bound, &events)
            }
        };
        prop_assert_eq!(got, want);
    }

    #[test]
    fn count_windows_agree_with_the_runtime_on_any_input(
        size in 1u64..6,
        slide in prop::option::of(1u64..6),
        raw in prop::collection::vec((0usize..3, 0i64..60_000, -50i64..50), 0..40),
    ) {
        let events: Vec<Event> = raw
            .iter()
            .map(|(k, ts, v)| (["a", "b", "c"][*k].to_string(), *ts, *v))
            .collect();
        let mut window = json!({"type": "count", "size": size});
        if let Some(s) = slide {
            window["slide"] = json!(s);
        }
        // Count windows ignore time; with no bound, results behind the watermark reach the
        // patterns late, which `collect` counts as results all the same.
        let got = through_pipeline(window, 0, &events);
        prop_assert_eq!(got, through_runtime_count(size, slide, &events));
    }
}
