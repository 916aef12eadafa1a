//! The loop matcher (`a`, one or more `b`, then `c`, relaxed, no skip) against the general
//! automaton: random conditions (some reading the partial match), windows and state bounds,
//! random streams over a few keys, cut at random points and continued from snapshots (through
//! JSON). Both must give the same outputs in the same order, hold the same partial matches and
//! events after every step, and show the same partial matches.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use cep::{
    AfterMatchSkip, CepOperator, KeySnapshot, Nfa, Output, OutputKind, Pattern, StateBounds,
};
use proptest::prelude::*;

/// `(key, value, timestamp, arrival)`
type Ev = (u8, u8, i64, u32);

/// A stage's condition: the values it takes (`None`: any event), and whether it also reads the
/// partial match (0 no, 1 as one iterative condition, 2 as a guarded one whose guard is the
/// values).
type Cond = (Option<Vec<u8>>, u8);

#[derive(Clone, Debug)]
struct Spec {
    conds: [Cond; 3],
    window: Option<u64>,
    bounds: (Option<usize>, Option<usize>),
    /// A variation: 0 none, 1 `b` consecutive, 2 `c` strict, 3 skip past last, 4 `b` strict
    /// after `a`, 5 `b` greedy, 6 `b` until a 3, 7 `b` optional, 8 `b` with combinations, 9 two
    /// or more `b`s, 10 `b`'s condition or a 3, 11 `b`s at most 4 ms apart, 12 `c` relaxed
    /// any, 13 the window between consecutive events. Only 0 and 10 are the loop's shape.
    variation: u8,
}

fn compile(spec: &Spec) -> Nfa<Ev> {
    let names = ["a", "b", "c"];
    let skip = if spec.variation == 3 {
        AfterMatchSkip::SkipPastLastEvent
    } else {
        AfterMatchSkip::NoSkip
    };
    let with = |q: Pattern<Ev>, i: usize| -> Pattern<Ev> {
        let (values, reads) = spec.conds[i].clone();
        let own = names[i];
        let prev = names[i.saturating_sub(1)];
        // The arrival numbers of the events taken so far stand in for values.
        let rises = move |e: &Ev, ctx: &cep::Context<'_, Ev>| {
            let last = ctx.events(prev).chain(ctx.events(own)).map(|x| x.3).max();
            let count = ctx.events("b").count() as u32;
            last.is_none_or(|l| !(e.1 as u32 + l + count).is_multiple_of(3))
        };
        match (reads, values) {
            (0, None) => q,
            (0, Some(vs)) => q.where_(move |e: &Ev| vs.contains(&e.1)),
            (2, Some(vs)) => q.where_ctx_guarded(move |e: &Ev| vs.contains(&e.1), rises),
            (_, values) => q.where_ctx(move |e: &Ev, ctx| {
                values.as_ref().is_none_or(|vs| vs.contains(&e.1)) && rises(e, ctx)
            }),
        }
    };
    let three = |e: &Ev| e.1 == 3;
    let p = with(Pattern::begin_with_skip("a", skip), 0);
    let p = if spec.variation == 4 {
        p.next("b")
    } else {
        p.followed_by("b")
    };
    let mut p = with(p, 1);
    p = match spec.variation {
        9 => p.times_or_more(2),
        _ => p.one_or_more(),
    };
    p = match spec.variation {
        1 => p.consecutive(),
        5 => p.greedy(),
        6 => p.until(three),
        7 => p.optional(),
        8 => p.allow_combinations(),
        10 => p.or(three),
        11 => p.max_gap(Duration::from_millis(4)),
        _ => p,
    };
    let p = match spec.variation {
        2 => p.next("c"),
        12 => p.followed_by_any("c"),
        _ => p.followed_by("c"),
    };
    let mut p = with(p, 2);
    if let Some(w) = spec.window {
        p = match spec.variation {
            13 => p.within_type(
                Duration::from_millis(w),
                cep::WithinType::PreviousAndCurrent,
            ),
            _ => p.within(Duration::from_millis(w)),
        };
    }
    p.compile("p").unwrap()
}

fn spec() -> impl Strategy<Value = Spec> {
    let cond = (
        prop::option::weighted(0.85, prop::collection::vec(0u8..4, 1..3)),
        prop::sample::select(vec![0u8, 0, 0, 1, 2]),
    );
    (
        [cond.clone(), cond.clone(), cond],
        prop::option::weighted(0.8, 1u64..40),
        (
            prop::option::weighted(0.15, 1usize..4),
            prop::option::weighted(0.15, 1usize..6),
        ),
        prop::sample::select(vec![
            0u8, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 10, 11, 12, 13,
        ]),
    )
        .prop_map(|(conds, window, bounds, variation)| Spec {
            conds,
            window,
            bounds,
            variation,
        })
}

fn stream() -> impl Strategy<Value = Vec<Ev>> {
    prop::collection::vec((0u8..3, 0u8..4, 0i64..5, -3i64..=0), 1..150).prop_map(|steps| {
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
type Seen = (OutputKind, i64, Vec<(String, Vec<Ev>)>);

fn seen(out: &mut Vec<Output<u8, Ev>>, into: &mut BTreeMap<u8, Vec<Seen>>) {
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
fn drain(op: &mut CepOperator<u8, Ev>) {
    let nfas = op.patterns().to_vec();
    op.set_patterns_draining(nfas, &[Some(0)], &[true]);
}

/// A partial match as shown: its stage, start and events.
type Shown = (String, i64, Vec<Ev>);

/// What each key holds.
fn held(op: &CepOperator<u8, Ev>) -> Vec<(u8, Vec<Shown>)> {
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

fn operator(nfa: Nfa<Ev>, spec: &Spec) -> CepOperator<u8, Ev> {
    let mut op = CepOperator::new(vec![Arc::new(nfa)]);
    op.set_bounds(StateBounds {
        max_partial_matches: spec.bounds.0,
        max_buffered_events: spec.bounds.1,
        ..StateBounds::default()
    });
    op
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(600))]

    #[test]
    fn the_loop_matcher_gives_what_the_general_automaton_gives(
        spec in spec(),
        evs in stream(),
        lag in 0i64..6,
        cuts in prop::collection::vec((0usize..150, any::<bool>()), 0..3),
        drain_at in prop::option::weighted(0.2, 0usize..150),
    ) {
        let nfa = compile(&spec);
        // Whatever shape the loop matcher takes, it is held to the general automaton.
        let want_loop = matches!(spec.variation, 0 | 10);
        prop_assert!(nfa.matcher() == "loop" || !want_loop, "{:?}", spec);
        if nfa.matcher() != "loop" {
            return Ok(());
        }
        let mut general = operator(compile(&spec).general(), &spec);
        let mut looped = operator(nfa, &spec);
        let cuts: BTreeMap<usize, bool> = cuts.into_iter().collect();
        let (mut want, mut got) = (BTreeMap::new(), BTreeMap::new());
        let (mut out_g, mut out_l) = (Vec::new(), Vec::new());
        let mut max_ts = 0;
        // What the bounds dropped on the operators replaced at the cuts.
        let mut dropped_before = 0;
        for (i, e) in evs.iter().enumerate() {
            if let Some(&upgrade) = cuts.get(&i) {
                // Continue on a fresh operator restored from snapshots of every key: the loop
                // matcher's own, or (`upgrade`) the general automaton's, as a checkpoint
                // written before the loop matcher existed gives (its keys then stay on the
                // general automaton).
                let mut fresh = operator(compile(&spec), &spec);
                if drain_at.is_some_and(|d| d < i) {
                    drain(&mut fresh);
                }
                fresh.advance_watermark(looped.watermark(), &mut out_l);
                let from = if upgrade { &general } else { &looped };
                for k in 0..3u8 {
                    if let Some(s) = from.snapshot_key(&k, |e| *e) {
                        let json = serde_json::to_string(&s).unwrap();
                        let s: KeySnapshot<Ev> = serde_json::from_str(&json).unwrap();
                        fresh.restore_key(k, s, |e| *e).unwrap();
                    }
                }
                dropped_before += looped.dropped().partial_matches;
                looped = fresh;
            }
            if drain_at == Some(i) {
                for op in [&mut general, &mut looped] {
                    drain(op);
                }
            }
            general.process_element(e.0, *e, e.2, &mut out_g);
            looped.process_element(e.0, *e, e.2, &mut out_l);
            max_ts = max_ts.max(e.2);
            general.advance_watermark(max_ts - lag, &mut out_g);
            looped.advance_watermark(max_ts - lag, &mut out_l);
            seen(&mut out_g, &mut want);
            seen(&mut out_l, &mut got);
            prop_assert_eq!(&got, &want, "after event {}", i);
            prop_assert_eq!(held(&looped), held(&general), "after event {}", i);
            let (sl, sg) = (looped.stats(), general.stats());
            prop_assert_eq!(
                (sl.partial_matches, sl.buffered_events, sl.keys),
                (sg.partial_matches, sg.buffered_events, sg.keys),
                "after event {}", i
            );
            prop_assert_eq!(
                dropped_before + looped.dropped().partial_matches,
                general.dropped().partial_matches
            );
        }
        general.advance_watermark(i64::MAX, &mut out_g);
        looped.advance_watermark(i64::MAX, &mut out_l);
        seen(&mut out_g, &mut want);
        seen(&mut out_l, &mut got);
        prop_assert_eq!(got, want);
    }
}

/// Many `b`s between one `a` and its `c`s: every partial match waiting for `c` completes on the
/// first `c`, with the prefix of `b`s it held, in the general automaton's order.
#[test]
fn a_long_loop_gives_what_the_general_automaton_gives() {
    let is = |v: u8| move |e: &Ev| e.1 == v;
    let pattern = || {
        Pattern::<Ev>::begin("a")
            .where_(is(0))
            .followed_by("b")
            .where_(is(1))
            .one_or_more()
            .followed_by("c")
            .where_(is(2))
            .within(Duration::from_millis(500))
            .compile("p")
            .unwrap()
    };
    assert_eq!(pattern().matcher(), "loop");
    let spec = Spec {
        conds: [(None, 0), (None, 0), (None, 0)],
        window: None,
        bounds: (None, None),
        variation: 0,
    };
    let mut general = operator(pattern().general(), &spec);
    let mut looped = operator(pattern(), &spec);
    let (mut want, mut got) = (BTreeMap::new(), BTreeMap::new());
    let (mut out_g, mut out_l) = (Vec::new(), Vec::new());
    // a b b 3 b b c b c ... then a second a half-way, and time running out.
    for i in 0..400u32 {
        let v = match i % 97 {
            0 | 50 => 0,
            n if n % 7 == 6 => 2,
            n if n % 5 == 4 => 3,
            _ => 1,
        };
        let e: Ev = (0, v, i64::from(i), i);
        general.process_element(0, e, e.2, &mut out_g);
        looped.process_element(0, e, e.2, &mut out_l);
        general.advance_watermark(e.2, &mut out_g);
        looped.advance_watermark(e.2, &mut out_l);
        seen(&mut out_g, &mut want);
        seen(&mut out_l, &mut got);
        assert_eq!(got, want, "after event {i}");
        assert_eq!(held(&looped), held(&general), "after event {i}");
    }
    for op in [&mut general, &mut looped] {
        op.advance_watermark(i64::MAX, &mut Vec::new());
    }
    let matches = want[&0].iter().filter(|s| s.0 == OutputKind::Match).count();
    assert!(matches > 100, "{matches} matches");
}

/// Which variations of the shape the loop matcher takes.
#[test]
fn only_the_loop_shape_runs_on_the_loop_matcher() {
    for variation in 0..14 {
        let spec = Spec {
            conds: [(Some(vec![0]), 0), (Some(vec![1]), 1), (Some(vec![2]), 2)],
            window: Some(10),
            bounds: (None, None),
            variation,
        };
        let matcher = compile(&spec).matcher();
        let want = if matches!(variation, 0 | 10) {
            "loop"
        } else {
            "automaton"
        };
        assert_eq!(matcher, want, "variation {variation}");
    }
}
