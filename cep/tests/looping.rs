//! The loop matcher (`a`, one or more `b`, then `c`, relaxed) against the general automaton:
//! random conditions (some reading the partial match), skip strategies, windows and state bounds,
//! random streams over a few keys, cut at random points and continued from snapshots (through
//! JSON). Both must give the same outputs in the same order, hold the same partial matches and
//! events after every step, and show the same partial matches.

mod twins;

use std::collections::BTreeMap;
use std::time::Duration;

use cep::{AfterMatchSkip, Nfa, OutputKind, Pattern};
use proptest::prelude::*;
use twins::{held, operator, same_as_general, seen, stream, Ev, Run};

/// A stage's condition: the values it takes (`None`: any event), and whether it also reads the
/// partial match (0 no, 1 as one iterative condition, 2 as a guarded one whose guard is the
/// values).
type Cond = (Option<Vec<u8>>, u8);

#[derive(Clone, Debug)]
struct Spec {
    conds: [Cond; 3],
    /// 0 no skip, 1 to next, 2 past last, 3 to first of stage, 4 to last of stage (`a`, `b`,
    /// `c`).
    skip: (u8, usize),
    window: Option<u64>,
    bounds: (Option<usize>, Option<usize>),
    /// A variation: 0 none, 1 `b` consecutive, 2 `c` strict, 3 none, 4 `b` strict
    /// after `a`, 5 `b` greedy, 6 `b` until a 3, 7 `b` optional, 8 `b` with combinations, 9 two
    /// or more `b`s, 10 `b`'s condition or a 3, 11 `b`s at most 4 ms apart (or the window), 12 `c` relaxed
    /// any, 13 the window between consecutive events. Only 0, 3 and 10 are the loop's shape.
    variation: u8,
}

fn compile(spec: &Spec) -> Nfa<Ev> {
    let names = ["a", "b", "c"];
    let stage = names[spec.skip.1 % 3].to_string();
    let skip = match spec.skip.0 {
        0 => AfterMatchSkip::NoSkip,
        1 => AfterMatchSkip::SkipToNext,
        2 => AfterMatchSkip::SkipPastLastEvent,
        3 => AfterMatchSkip::SkipToFirst(stage),
        _ => AfterMatchSkip::SkipToLast(stage),
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
        11 => p.max_gap(Duration::from_millis(spec.window.unwrap_or(4).min(4))),
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
        (prop::sample::select(vec![0u8, 0, 1, 2, 2, 3, 4]), 0usize..3),
        prop::option::weighted(0.8, 1u64..40),
        (
            prop::option::weighted(0.15, 1usize..4),
            prop::option::weighted(0.15, 1usize..6),
        ),
        prop::sample::select(vec![
            0u8, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 10, 11, 12, 13,
        ]),
    )
        .prop_map(|(conds, skip, window, bounds, variation)| Spec {
            conds,
            skip,
            window,
            bounds,
            variation,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(600))]

    #[test]
    fn the_loop_matcher_gives_what_the_general_automaton_gives(
        spec in spec(),
        evs in stream(4),
        lag in 0i64..6,
        cuts in prop::collection::vec((0usize..150, any::<bool>()), 0..3),
        drain_at in prop::option::weighted(0.2, 0usize..150),
    ) {
        let nfa = compile(&spec);
        // Whatever shape the loop matcher takes, it is held to the general automaton.
        let want_loop = matches!(spec.variation, 0 | 3 | 10);
        prop_assert!(nfa.matcher() == "loop" || !want_loop, "{:?}", spec);
        if nfa.matcher() != "loop" {
            return Ok(());
        }
        let run = Run { evs, lag, cuts, drain_at, bounds: spec.bounds };
        same_as_general(&|| compile(&spec), run)?;
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
    let mut general = operator(pattern().general(), (None, None));
    let mut looped = operator(pattern(), (None, None));
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
    for (variation, skip) in (0..14).flat_map(|v| (0..5).map(move |s| (v, s))) {
        let spec = Spec {
            conds: [(Some(vec![0]), 0), (Some(vec![1]), 1), (Some(vec![2]), 2)],
            skip: (skip, 1),
            window: Some(10),
            bounds: (None, None),
            variation,
        };
        let matcher = compile(&spec).matcher();
        let want = if matches!(variation, 0 | 3 | 10) {
            "loop"
        } else {
            "automaton"
        };
        assert_eq!(matcher, want, "variation {variation}, skip {skip}");
    }
}
