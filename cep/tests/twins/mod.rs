//! Shared by the tests that hold a specialised matcher (`linear.rs`, `looping.rs`) to the
//! general automaton: the same pattern compiled twice, the same stream, cut at random points
//! and continued from snapshots; the outputs, the partial matches shown, the events held and
//! what bounds drop must be the same after every event.

use std::collections::BTreeMap;
use std::sync::Arc;

use cep::{CepOperator, KeySnapshot, Nfa, Output, OutputKind, StateBounds};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

/// `(key, value, timestamp, arrival)`
pub type Ev = (u8, u8, i64, u32);

/// A random stream over three keys, with values below `values`, in rough time order (up to
/// 3 ms out of it).
pub fn stream(values: u8) -> impl Strategy<Value = Vec<Ev>> {
    prop::collection::vec((0u8..3, 0u8..values, 0i64..5, -3i64..=0), 1..150).prop_map(|steps| {
        let mut t = 0;
        steps
            .into_iter()
            .enumerate()
            .map(|(i, (k, v, dt, jitter))| {
                t += dt;
                (k, v, (t + jitter).max(0), i as u32)
            })
            .collect()
    })
}

/// What an output says, comparable: kind, time, the events by stage.
pub type Seen = (OutputKind, i64, Vec<(String, Vec<Ev>)>);

pub fn seen(out: &mut Vec<Output<u8, Ev>>, into: &mut BTreeMap<u8, Vec<Seen>>) {
    for o in out.drain(..) {
        let events = match &o.event {
            Some(e) => vec![("late".to_string(), vec![**e])],
            None => o
                .events
                .iter()
                .map(|(s, v)| (s.to_string(), v.iter().map(|e| **e).collect()))
                .collect(),
        };
        into.entry(o.key)
            .or_default()
            .push((o.kind, o.timestamp, events));
    }
}

/// The pattern drains, as when it is replaced with `drain`: no new partial matches.
pub fn drain(op: &mut CepOperator<u8, Ev>) {
    let nfas = op.patterns().to_vec();
    op.set_patterns_draining(nfas, &[Some(0)], &[true]);
}

/// A partial match as shown: its stage, start and events.
pub type Shown = (String, i64, Vec<Ev>);

/// What each key holds.
pub fn held(op: &CepOperator<u8, Ev>) -> Vec<(u8, Vec<Shown>)> {
    (0..3u8)
        .map(|k| {
            let pms = op
                .partial_matches(&k)
                .into_iter()
                .map(|(_, pm)| {
                    let evs = pm.events.iter().flat_map(|(_, v)| v.iter().map(|e| **e));
                    (pm.stage, pm.start_ts, evs.collect())
                })
                .collect();
            (k, pms)
        })
        .collect()
}

/// An operator running `nfa` under `bounds` (most partial matches, most events held, per key).
pub fn operator(nfa: Nfa<Ev>, bounds: (Option<usize>, Option<usize>)) -> CepOperator<u8, Ev> {
    let mut op = CepOperator::new(vec![Arc::new(nfa)]);
    op.set_bounds(StateBounds {
        max_partial_matches: bounds.0,
        max_buffered_events: bounds.1,
        ..StateBounds::default()
    });
    op
}

/// How one random run goes: the stream, the watermark's lag behind the latest timestamp, where
/// the specialised side continues from snapshots (`true`: of the general automaton's keys, as
/// a checkpoint written before the specialised matcher existed gives), where both start to
/// drain, and the bounds.
pub struct Run {
    pub evs: Vec<Ev>,
    pub lag: i64,
    pub cuts: Vec<(usize, bool)>,
    pub drain_at: Option<usize>,
    pub bounds: (Option<usize>, Option<usize>),
}

/// Runs `run` through `compile()` (the pattern on its specialised matcher) and through
/// `compile().general()`, and checks that both give the same after every event.
pub fn same_as_general(compile: &dyn Fn() -> Nfa<Ev>, run: Run) -> Result<(), TestCaseError> {
    let mut general = operator(compile().general(), run.bounds);
    let mut special = operator(compile(), run.bounds);
    let cuts: BTreeMap<usize, bool> = run.cuts.into_iter().collect();
    let (mut want, mut got) = (BTreeMap::new(), BTreeMap::new());
    let (mut out_g, mut out_s) = (Vec::new(), Vec::new());
    let mut max_ts = 0;
    // What the bounds dropped on the operators replaced at the cuts.
    let mut dropped_before = 0;
    for (i, e) in run.evs.iter().enumerate() {
        if let Some(&upgrade) = cuts.get(&i) {
            // Continue on a fresh operator restored from snapshots of every key: the
            // specialised matcher's own, or (`upgrade`) the general automaton's (its keys then
            // stay on the general automaton).
            let mut fresh = operator(compile(), run.bounds);
            if run.drain_at.is_some_and(|d| d < i) {
                drain(&mut fresh);
            }
            fresh.advance_watermark(special.watermark(), &mut out_s);
            let from = if upgrade { &general } else { &special };
            for k in 0..3u8 {
                if let Some(s) = from.snapshot_key(&k, |e| *e) {
                    let json = serde_json::to_string(&s).unwrap();
                    let s: KeySnapshot<Ev> = serde_json::from_str(&json).unwrap();
                    fresh.restore_key(k, s, |e| *e).unwrap();
                }
            }
            dropped_before += special.dropped().partial_matches;
            special = fresh;
        }
        if run.drain_at == Some(i) {
            for op in [&mut general, &mut special] {
                drain(op);
            }
        }
        general.process_element(e.0, *e, e.2, &mut out_g);
        special.process_element(e.0, *e, e.2, &mut out_s);
        max_ts = max_ts.max(e.2);
        general.advance_watermark(max_ts - run.lag, &mut out_g);
        special.advance_watermark(max_ts - run.lag, &mut out_s);
        seen(&mut out_g, &mut want);
        seen(&mut out_s, &mut got);
        prop_assert_eq!(&got, &want, "after event {}", i);
        prop_assert_eq!(held(&special), held(&general), "after event {}", i);
        let (ss, sg) = (special.stats(), general.stats());
        prop_assert_eq!(
            (ss.partial_matches, ss.buffered_events, ss.keys),
            (sg.partial_matches, sg.buffered_events, sg.keys),
            "after event {}",
            i
        );
        prop_assert_eq!(
            dropped_before + special.dropped().partial_matches,
            general.dropped().partial_matches
        );
    }
    general.advance_watermark(i64::MAX, &mut out_g);
    special.advance_watermark(i64::MAX, &mut out_s);
    seen(&mut out_g, &mut want);
    seen(&mut out_s, &mut got);
    prop_assert_eq!(got, want);
    Ok(())
}
