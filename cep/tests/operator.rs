//! The keyed operator: several patterns over one stream, processing time, introspection, and
//! state that goes away when a key has nothing left.

use std::sync::Arc;
use std::time::Duration;

use cep::{CepOperator, OutputKind, Pattern, TimeMode};

type Ev = (&'static str, char, i64);

fn ab(window_ms: u64) -> Pattern<Ev> {
    Pattern::<Ev>::begin("a")
        .where_(|e| e.1 == 'a')
        .followed_by("b")
        .where_(|e| e.1 == 'b')
        .within(Duration::from_millis(window_ms))
}

#[test]
fn several_patterns_share_one_stream() {
    let p1 = ab(100).compile("ab").unwrap();
    let p2 = Pattern::<Ev>::begin("b")
        .where_(|e| e.1 == 'b')
        .times(2)
        .within(Duration::from_millis(100))
        .compile("bb")
        .unwrap();
    let mut op = CepOperator::new(vec![Arc::new(p1), Arc::new(p2)]);
    let mut out = Vec::new();
    for (i, c) in ['a', 'b', 'b'].into_iter().enumerate() {
        let ts = i as i64 * 10;
        op.process_element("k", ("k", c, ts), ts, &mut out);
        op.advance_watermark(ts - 1, &mut out);
    }
    op.advance_watermark(i64::MAX, &mut out);
    let mut got: Vec<(usize, OutputKind, Vec<i64>)> = out
        .iter()
        .map(|o| {
            let ts = o
                .events
                .iter()
                .flat_map(|(_, v)| v.iter().map(|e| e.2))
                .collect();
            (o.pattern, o.kind, ts)
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![
            (0, OutputKind::Match, vec![0, 10]),
            (1, OutputKind::Match, vec![10, 20]),
            (1, OutputKind::Timeout, vec![20])
        ]
    );
    assert_eq!(op.stats().keys, 0, "a key with nothing pending is dropped");
}

#[test]
fn processing_time_handles_events_on_arrival() {
    let mut op = CepOperator::with_mode(
        vec![Arc::new(ab(50).compile("ab").unwrap())],
        TimeMode::ProcessingTime,
    );
    let mut out = Vec::new();
    // In processing time the timestamp is the arrival time; nothing waits for a watermark.
    op.process_element("k", ("k", 'a', 0), 1000, &mut out);
    op.process_element("k", ("k", 'b', 0), 1020, &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!((out[0].kind, out[0].timestamp), (OutputKind::Match, 1020));
    op.process_element("k", ("k", 'a', 0), 2000, &mut out);
    // The clock moves: the partial match started at 2000 times out at 2050.
    op.advance_watermark(2049, &mut out);
    assert_eq!(out.len(), 1);
    op.advance_watermark(2050, &mut out);
    assert_eq!((out[1].kind, out[1].timestamp), (OutputKind::Timeout, 2050));
}

#[test]
fn introspection_shows_partial_matches_and_late_events_go_aside() {
    let mut op = CepOperator::new(vec![Arc::new(ab(1000).compile("ab").unwrap())]);
    let mut out = Vec::new();
    op.process_element("u1", ("u1", 'a', 100), 100, &mut out);
    op.process_element("u2", ("u2", 'c', 150), 150, &mut out);
    op.advance_watermark(200, &mut out);
    let pm = op.partial_matches(&"u1");
    assert_eq!(pm.len(), 1);
    let (pattern, m) = &pm[0];
    assert_eq!((*pattern, m.stage.as_str(), m.start_ts), (0, "b", 100));
    assert_eq!(&*m.events[0].0, "a");
    assert!(op.partial_matches(&"u2").is_empty());
    let st = op.stats();
    assert_eq!((st.keys, st.partial_matches, st.queued_events), (1, 1, 0));
    // An event at or behind the watermark is late.
    op.process_element("u1", ("u1", 'b', 200), 200, &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!((out[0].kind, out[0].timestamp), (OutputKind::Late, 200));
    assert_eq!(out[0].event.as_ref().unwrap().2, 200);
}

#[test]
fn many_keys_time_out_without_further_events() {
    let mut op = CepOperator::new(vec![Arc::new(ab(1000).compile("ab").unwrap())]);
    let mut out = Vec::new();
    let n = 50_000u32;
    for k in 0..n {
        op.process_element(k, ("k", 'a', 0), i64::from(k % 100), &mut out);
    }
    op.advance_watermark(99, &mut out);
    assert!(out.is_empty());
    assert_eq!(op.stats().partial_matches, n as usize);
    op.advance_watermark(2_000, &mut out);
    assert_eq!(out.len(), n as usize);
    assert!(out
        .iter()
        .all(|o| o.kind == OutputKind::Timeout && o.timestamp == i64::from(o.key % 100) + 1000));
    assert_eq!(op.stats().keys, 0);
}

/// A key that always has a partial match (here: of a second pattern without a window) and whose
/// partial matches never time out is never reset; its per-timestamp event counters must still
/// be dropped as time passes (Flink drops them before every event), or they pile up with every
/// event the key ever took (and each new event scans them).
#[test]
fn a_busy_key_without_timeouts_keeps_its_state_bounded() {
    let pairs = Pattern::<Ev>::begin_with_skip("f", cep::AfterMatchSkip::SkipPastLastEvent)
        .where_(|e| e.1 == 'f')
        .times(2)
        .consecutive()
        .compile("ff")
        .unwrap();
    let waits = Pattern::<Ev>::begin("z")
        .where_(|e| e.1 == 'z')
        .followed_by("never")
        .where_(|_| false)
        .compile("z_never")
        .unwrap();
    let mut op = CepOperator::new(vec![Arc::new(pairs), Arc::new(waits)]);
    let mut out = Vec::new();
    op.process_element("k", ("k", 'z', 0), 0, &mut out);
    let n = 2_000i64;
    for ts in 1..=n {
        op.process_element("k", ("k", 'f', ts), ts, &mut out);
        op.advance_watermark(ts - 1, &mut out);
    }
    op.advance_watermark(n, &mut out);
    let matches = out.iter().filter(|o| o.kind == OutputKind::Match).count();
    assert_eq!(matches as i64, n / 2);
    let snap = op.snapshot_key(&"k", |e| e.2).expect("the key has state");
    let json = serde_json::to_value(&snap).unwrap();
    let counters: Vec<usize> = json["patterns"]
        .as_array()
        .expect("per-pattern states")
        .iter()
        .map(|s| s["counters"].as_array().expect("counters").len())
        .collect();
    assert!(
        counters.iter().all(|&c| c <= 1),
        "counters per pattern: {counters:?}"
    );
}
