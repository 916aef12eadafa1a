//! Key snapshots: a stream cut at any point, the changed keys snapshotted (through JSON), and the
//! rest of the stream run by a fresh operator restored from the snapshots gives exactly the
//! outputs of one operator that saw the whole stream.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use cep::{AfterMatchSkip, CepOperator, KeySnapshot, Nfa, Output, OutputKind, Pattern};
use proptest::prelude::*;

/// `(key, kind, timestamp, value)`
type Ev = (u8, char, i64, i64);

const BOUND: i64 = 3;

fn patterns() -> Vec<Arc<Nfa<Ev>>> {
    let is = |c: char| move |e: &Ev| e.1 == c;
    let ab = Pattern::<Ev>::begin("a")
        .where_(is('a'))
        .followed_by("b")
        .where_(is('b'))
        .within(Duration::from_millis(20));
    let loop_ = Pattern::<Ev>::begin_with_skip("a", AfterMatchSkip::SkipPastLastEvent)
        .where_(is('a'))
        .followed_by_any("b")
        .where_(is('b'))
        .one_or_more()
        .followed_by("c")
        .where_(is('c'))
        .within(Duration::from_millis(30));
    let iterative = Pattern::<Ev>::begin("a")
        .where_(is('a'))
        .followed_by("more")
        .where_ctx(|e, ctx| {
            let sum: i64 = ctx.events("more").map(|x| x.3).sum();
            e.1 != 'c' && sum + e.3 < 12
        })
        .times_range(2, 3)
        .optional()
        .followed_by("end")
        .where_(is('c'))
        .within(Duration::from_millis(25));
    let not_fby = Pattern::<Ev>::begin("a")
        .where_(is('a'))
        .not_followed_by("no_b")
        .where_(is('b'))
        .followed_by("c")
        .where_(is('c'))
        .within(Duration::from_millis(15));
    // The loop matcher's shape, with a condition that reads the partial match.
    let rising = Pattern::<Ev>::begin("a")
        .where_(is('a'))
        .followed_by("up")
        .where_ctx(|e, ctx| matches!(e.1, 'b' | 'd') && ctx.events("up").all(|x| x.3 < e.3))
        .one_or_more()
        .followed_by("c")
        .where_(is('c'))
        .within(Duration::from_millis(30));
    [
        ab.compile("ab"),
        loop_.compile("loop"),
        iterative.compile("iterative"),
        not_fby.compile("not_fby"),
        rising.compile("rising"),
    ]
    .into_iter()
    .map(|p| Arc::new(p.unwrap()))
    .collect()
}

/// What an output says, comparable: pattern, kind, time and the events by stage.
type Seen = (usize, OutputKind, i64, Vec<(String, Vec<Ev>)>);

fn seen(out: &[Output<u8, Ev>], into: &mut BTreeMap<u8, Vec<Seen>>) {
    for o in out {
        let events = o
            .events
            .iter()
            .map(|(s, v)| (s.to_string(), v.iter().map(|e| **e).collect()))
            .collect();
        let event = o
            .event
            .as_ref()
            .map(|e| vec![("late".to_string(), vec![**e])]);
        into.entry(o.key).or_default().push((
            o.pattern,
            o.kind,
            o.timestamp,
            event.unwrap_or(events),
        ));
    }
}

fn feed(op: &mut CepOperator<u8, Ev>, evs: &[Ev], max_ts: &mut i64, out: &mut Vec<Output<u8, Ev>>) {
    for e in evs {
        op.process_element(e.0, *e, e.2, out);
        *max_ts = (*max_ts).max(e.2);
        op.advance_watermark(*max_ts - BOUND - 1, out);
    }
}

fn stream() -> impl Strategy<Value = Vec<Ev>> {
    prop::collection::vec(
        (
            0u8..3,
            prop::sample::select(vec!['a', 'b', 'c', 'x']),
            0i64..4,
            1i64..6,
            -2i64..=0,
        ),
        1..120,
    )
    .prop_map(|steps| {
        let mut t = 0;
        steps
            .into_iter()
            .map(|(k, c, dt, v, jitter)| {
                t += dt;
                (k, c, (t + jitter).max(0), v)
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn restored_operator_continues_exactly(evs in stream(), cuts in prop::collection::vec(0usize..120, 1..4)) {
        // One operator over the whole stream.
        let mut whole = CepOperator::new(patterns());
        let mut out = Vec::new();
        let mut max_ts = i64::MIN + BOUND + 1;
        feed(&mut whole, &evs, &mut max_ts, &mut out);
        whole.advance_watermark(i64::MAX, &mut out);
        let mut expected = BTreeMap::new();
        seen(&out, &mut expected);

        // The same stream cut into pieces; after each piece the changed keys are snapshotted into
        // a store, and the next piece runs on a fresh operator restored from the store.
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(evs.len())).collect();
        cuts.sort_unstable();
        cuts.push(evs.len());
        let mut store: BTreeMap<u8, String> = BTreeMap::new();
        let mut got = BTreeMap::new();
        let mut from = 0;
        let mut watermark = i64::MIN;
        let mut max_ts = i64::MIN + BOUND + 1;
        for &to in &cuts {
            let mut op = CepOperator::new(patterns());
            op.track_changes(true);
            let mut out = Vec::new();
            op.advance_watermark(watermark, &mut out);
            for (k, json) in &store {
                let snap: KeySnapshot<Ev> = serde_json::from_str(json).unwrap();
                op.restore_key(*k, snap, |e| *e).unwrap();
            }
            op.take_changed();
            feed(&mut op, &evs[from..to], &mut max_ts, &mut out);
            if to == evs.len() {
                op.advance_watermark(i64::MAX, &mut out);
            }
            for k in op.take_changed() {
                match op.snapshot_key(&k, |e| *e) {
                    Some(s) => store.insert(k, serde_json::to_string(&s).unwrap()),
                    None => store.remove(&k),
                };
            }
            // Every key with state was reported as changed at some point.
            for k in 0..3u8 {
                let snap = op.snapshot_key(&k, |e| *e).map(|s| serde_json::to_string(&s).unwrap());
                prop_assert_eq!(snap.as_ref(), store.get(&k), "key {}", k);
            }
            seen(&out, &mut got);
            watermark = op.watermark();
            from = to;
        }
        prop_assert_eq!(got, expected);
    }
}

/// Restoring `snap` as changed by `edit` into `op` is refused with `want` in the message, and
/// nothing is restored.
fn refused(
    op: &mut CepOperator<u8, Ev>,
    snap: &KeySnapshot<Ev>,
    edit: impl FnOnce(&mut serde_json::Value),
    want: &str,
) {
    let mut json = serde_json::to_value(snap).unwrap();
    edit(&mut json);
    let bad: KeySnapshot<Ev> = serde_json::from_value(json).unwrap();
    let err = op.restore_key(0, bad, |e| *e).unwrap_err();
    assert!(err.to_string().contains(want), "{err}");
    assert_eq!(op.stats().keys, 0);
}

#[test]
fn snapshots_are_checked_against_the_patterns() {
    let mut op = CepOperator::new(patterns());
    let mut out = Vec::new();
    op.process_element(0, (0, 'a', 1, 1), 1, &mut out);
    op.process_element(0, (0, 'd', 2, 2), 2, &mut out);
    op.advance_watermark(5, &mut out);
    let snap = op
        .snapshot_key(&0, |e| *e)
        .expect("key 0 has a partial match");
    assert!(op.snapshot_key(&1, |e| *e).is_none());

    // Fewer patterns: refused.
    let mut other = CepOperator::new(patterns()[..2].to_vec());
    refused(&mut other, &snap, |_| {}, "5 patterns in the snapshot, 2");

    // A state that does not exist in the automaton (pattern 1 runs the general automaton).
    let mut fresh = CepOperator::new(patterns());
    refused(
        &mut fresh,
        &snap,
        |json| json["patterns"][1]["partial"][0]["state"] = 999.into(),
        "state 999 does not exist",
    );

    // A buffer node that no lock holds (the buffer would have removed it).
    refused(
        &mut fresh,
        &snap,
        |json| {
            assert!(
                json["patterns"][1]["nodes"][0]["lock"].is_number(),
                "{json}"
            );
            json["patterns"][1]["nodes"][0]["lock"] = 0.into();
        },
        "a buffer node with lock count 0",
    );

    // Pattern 0 (a followed by b) runs the chain matcher: a partial match with more events than
    // the pattern has stages is refused, and so is a chain state for a pattern of another shape.
    refused(
        &mut fresh,
        &snap,
        |json| {
            let held = json["patterns"][0]["chain"]["partials"][0][0].clone();
            assert!(held.is_array(), "{json}");
            json["patterns"][0]["chain"]["partials"][0] = serde_json::json!([held, held]);
        },
        "a partial match of 2 events",
    );
    refused(
        &mut fresh,
        &snap,
        |json| json["patterns"][1] = json["patterns"][0].clone(),
        "pattern loop: a state of the chain matcher",
    );

    // Pattern 4 runs the loop matcher: a partial match of a run that does not exist, or holding
    // more of its run than there is, is refused, and so is its state for another pattern.
    assert_eq!(op.patterns()[4].matcher(), "loop");
    refused(
        &mut fresh,
        &snap,
        |json| {
            let partial = &mut json["patterns"][4]["looped"]["partial"];
            assert!(partial.as_array().unwrap().len() > 1, "{json}");
            for p in partial.as_array_mut().unwrap() {
                if p[0] != 0 {
                    p[3] = 7.into();
                }
            }
        },
        "partial match of run 7 that does not exist",
    );
    refused(
        &mut fresh,
        &snap,
        |json| {
            for p in json["patterns"][4]["looped"]["partial"]
                .as_array_mut()
                .unwrap()
            {
                if p[0] != 0 {
                    p[4] = 5.into();
                }
            }
        },
        "partial match with 5 of the 1 events of its run",
    );
    refused(
        &mut fresh,
        &snap,
        |json| json["patterns"][0] = json["patterns"][4].clone(),
        "pattern ab: a state of the loop matcher, for another pattern",
    );
    // Event ids are kept only under a skip strategy (this pattern has none), one per event.
    refused(
        &mut fresh,
        &snap,
        |json| {
            let looped = &mut json["patterns"][4]["looped"];
            let runs = looped["runs"].as_array().unwrap().len();
            assert!(looped.get("ids").is_none(), "{json}");
            looped["ids"] = serde_json::json!(vec![[[1, 0]]; runs]);
        },
        "a run whose events and ids differ in number",
    );

    // Restored, the partial match times out as it would have.
    fresh.advance_watermark(5, &mut out);
    fresh.restore_key(0, snap, |e| *e).unwrap();
    assert_eq!(fresh.stats().partial_matches, op.stats().partial_matches);
    let mut a = Vec::new();
    let mut b = Vec::new();
    op.advance_watermark(100, &mut a);
    fresh.advance_watermark(100, &mut b);
    let kinds = |o: &[Output<u8, Ev>]| {
        o.iter()
            .map(|o| (o.pattern, o.kind, o.timestamp))
            .collect::<Vec<_>>()
    };
    assert!(!a.is_empty());
    assert_eq!(kinds(&a), kinds(&b));
    assert!(fresh.remove_key(&0) || fresh.stats().keys == 0);
}
