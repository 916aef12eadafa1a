//! The matchers for patterns that never branch against the general automaton: random chains
//! of strict and relaxed stages, conditions, windows, skip strategies and state bounds, random streams over
//! a few keys, cut at random points and continued from snapshots (through JSON). Both must give
//! the same outputs in the same order, hold the same partial matches and events after every
//! step, and show the same partial matches.

mod twins;

use std::collections::BTreeMap;
use std::time::Duration;

use cep::{AfterMatchSkip, Nfa, Pattern};
use proptest::prelude::*;
use twins::{drain, held, operator, same_as_general, seen, stream, Ev, Run};

/// A stage: the values it takes (`None`: any event), how many (and whether consecutive), and
/// how it follows the stage before: 0 strict (`next`), 1 relaxed (`followed_by`), 2 must not
/// be followed by it (`not_followed_by`, kept where the DSL allows it: between two stages,
/// before a `followed_by`; elsewhere it reads as 1).
///
/// A stage marked rising also reads the partial match: it takes an event only if its value is
/// at least the last value taken by this stage or the one before (an iterative condition; on
/// odd stages with values, a guarded one whose guard is the values).
type StageSpec = (Option<Vec<u8>>, bool, (u32, bool), u8);

#[derive(Clone, Debug)]
struct Spec {
    stages: Vec<StageSpec>,
    /// 0 no skip, 1 to next, 2 past last, 3 to first of stage, 4 to last of stage.
    skip: (u8, usize),
    window: Option<u64>,
    bounds: (Option<usize>, Option<usize>),
}

fn compile(spec: &Spec) -> Option<Nfa<Ev>> {
    let name = |i: usize| format!("s{i}");
    let skip = match spec.skip.0 {
        0 => AfterMatchSkip::NoSkip,
        1 => AfterMatchSkip::SkipToNext,
        2 => AfterMatchSkip::SkipPastLastEvent,
        3 => AfterMatchSkip::SkipToFirst(name(spec.skip.1 % spec.stages.len())),
        _ => AfterMatchSkip::SkipToLast(name(spec.skip.1 % spec.stages.len())),
    };
    let mut p: Option<Pattern<Ev>> = None;
    let join = |i: usize| {
        let (_, _, (times, _), join) = &spec.stages[i];
        let not_ok = i > 0
            && *times == 1
            && spec.stages.get(i + 1).is_some_and(|next| next.3 == 1)
            && spec.stages[i - 1].3 != 2;
        match join {
            2 if !not_ok => 1,
            j => *j,
        }
    };
    for (i, (values, rising, (times, consecutive), _)) in spec.stages.iter().enumerate() {
        let mut q = match p {
            None => Pattern::begin_with_skip(&name(i), skip.clone()),
            Some(p) => match join(i) {
                0 => p.next(&name(i)),
                1 => p.followed_by(&name(i)),
                _ => p.not_followed_by(&name(i)),
            },
        };
        let values = match values {
            None if join(i) == 2 => Some(vec![0]),
            v => v.clone(),
        };
        if *rising && join(i) != 2 {
            // One condition (a `where_` beside it would make a conjunction, which the linear
            // matchers leave to the general automaton).
            let (own, prev) = (name(i), name(i.saturating_sub(1)));
            // The arrival numbers of the events taken so far stand in for values.
            let rises = move |e: &Ev, ctx: &cep::Context<'_, Ev>| {
                let last = ctx.events(&prev).chain(ctx.events(&own)).map(|x| x.3).max();
                last.is_none_or(|l| !(e.1 as u32 + l).is_multiple_of(3))
            };
            q = match values {
                // On odd stages, the values as the guard of a guarded condition.
                Some(vs) if i % 2 == 1 => q.where_ctx_guarded(
                    move |e: &Ev| vs.contains(&e.1),
                    move |e, ctx| rises(e, ctx),
                ),
                values => q.where_ctx(move |e: &Ev, ctx| {
                    values.as_ref().is_none_or(|vs| vs.contains(&e.1)) && rises(e, ctx)
                }),
            };
        } else if let Some(vs) = values {
            q = q.where_(move |e: &Ev| vs.contains(&e.1));
        }
        if *times > 1 {
            q = q.times(*times);
            if *consecutive {
                q = q.consecutive();
            }
        }
        p = Some(q);
    }
    let mut p = p?;
    if let Some(w) = spec.window {
        p = p.within(Duration::from_millis(w));
    }
    p.compile("p").ok()
}

fn spec() -> impl Strategy<Value = Spec> {
    let stage = (
        prop::option::weighted(0.85, prop::collection::vec(0u8..3, 1..3)),
        prop::bool::weighted(0.25),
        (prop::sample::select(vec![1u32, 1, 1, 2, 3]), any::<bool>()),
        prop::sample::select(vec![0u8, 0, 1, 1, 2]),
    );
    (
        prop::collection::vec(stage, 1..5),
        (0u8..5, 0usize..4),
        prop::option::weighted(0.8, 1u64..40),
        (
            prop::option::weighted(0.2, 1usize..3),
            prop::option::weighted(0.2, 1usize..4),
        ),
    )
        .prop_map(|(stages, skip, window, bounds)| Spec {
            stages,
            skip,
            window,
            bounds,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(600))]

    #[test]
    fn the_linear_matcher_gives_what_the_general_automaton_gives(
        spec in spec(),
        evs in stream(3),
        lag in 0i64..6,
        cuts in prop::collection::vec((0usize..150, any::<bool>()), 0..3),
        drain_at in prop::option::weighted(0.2, 0usize..150),
    ) {
        let Some(nfa) = compile(&spec) else { return Ok(()) };
        // Conditions that read the partial match run on the linear matchers only in strict
        // chains; every other drawn shape does.
        let rising = spec.stages.iter().any(|s| s.1);
        prop_assert!(nfa.is_linear() || rising, "{:?}", spec);
        if !nfa.is_linear() {
            return Ok(());
        }
        let run = Run { evs, lag, cuts, drain_at, bounds: spec.bounds };
        same_as_general(&|| compile(&spec).unwrap(), run)?;
    }
}

/// Which shapes take the linear matcher.
#[test]
fn only_chains_of_single_event_stages_are_linear() {
    let is = |v: u8| move |e: &Ev| e.1 == v;
    let linear = [
        Pattern::<Ev>::begin("a").where_(is(0)),
        Pattern::<Ev>::begin("a")
            .where_(is(0))
            .next("b")
            .where_(is(1)),
        Pattern::<Ev>::begin("a")
            .where_(is(0))
            .times(3)
            .consecutive(),
        Pattern::<Ev>::begin("a")
            .next("b")
            .within(Duration::from_secs(1)),
        Pattern::<Ev>::begin("a").where_(is(0)).followed_by("b"),
        Pattern::<Ev>::begin("a").where_(is(0)).times(3),
        Pattern::<Ev>::begin("a")
            .followed_by("b")
            .where_(is(1))
            .next("c"),
        Pattern::<Ev>::begin("a")
            .not_followed_by("b")
            .where_(is(1))
            .followed_by("c"),
        Pattern::<Ev>::begin("a")
            .where_(is(0))
            .next("b")
            .where_ctx(|e, ctx| ctx.events("a").count() as u8 > e.1),
    ];
    for p in linear {
        assert!(p.compile("p").unwrap().is_linear());
    }
    let strict = Pattern::<Ev>::begin("a").where_(is(0)).next("b");
    assert_eq!(strict.compile("p").unwrap().matcher(), "strict chain");
    let relaxed = Pattern::<Ev>::begin("a").where_(is(0)).followed_by("b");
    assert_eq!(relaxed.compile("p").unwrap().matcher(), "chain");
    let any = Pattern::<Ev>::begin("a").where_(is(0)).followed_by_any("b");
    assert_eq!(any.compile("p").unwrap().matcher(), "automaton");
    let general = [
        Pattern::<Ev>::begin("a").where_(is(0)).followed_by_any("b"),
        // Iterative conditions only in strict chains (see `Linear::of`).
        Pattern::<Ev>::begin("a")
            .followed_by("b")
            .where_ctx(|e, ctx| ctx.events("a").count() as u8 > e.1),
        Pattern::<Ev>::begin("a").where_(is(0)).one_or_more(),
        Pattern::<Ev>::begin("a").where_(is(0)).times_range(1, 2),
        Pattern::<Ev>::begin("a").next("b").optional().next("c"),
        Pattern::<Ev>::begin("a")
            .where_(is(0))
            .not_next("b")
            .where_(is(1))
            .next("c"),
        Pattern::<Ev>::begin("a")
            .not_followed_by("b")
            .where_(is(1))
            .within(Duration::from_secs(1)),
        Pattern::<Ev>::begin("a").where_(is(0)).or(is(1)).next("b"),
        Pattern::<Ev>::begin("a")
            .next("b")
            .within_type(Duration::from_secs(1), cep::WithinType::PreviousAndCurrent),
    ];
    for p in general {
        assert!(!p.compile("p").unwrap().is_linear());
    }
}

/// The longest chains the linear matchers take (63 stages: partial matches of up to 62 events,
/// the highest bits of the strict chain's word beside its drain flag), and the first too long
/// for them, give what the general automaton gives, also once the pattern drains.
#[test]
fn the_longest_strict_chains_give_what_the_general_automaton_gives() {
    for stages in [62u32, 63, 64] {
        let pattern = || {
            Pattern::<Ev>::begin("a")
                .times(stages)
                .consecutive()
                .compile("p")
                .unwrap()
        };
        assert_eq!(pattern().is_linear(), stages <= 63, "{stages} stages");
        let mut general = operator(pattern().general(), (None, None));
        let mut linear = operator(pattern(), (None, None));
        let (mut want, mut got) = (BTreeMap::new(), BTreeMap::new());
        let (mut out_g, mut out_l) = (Vec::new(), Vec::new());
        for i in 0..(2 * stages + 5) {
            if i == stages + 2 {
                for op in [&mut general, &mut linear] {
                    drain(op);
                }
            }
            let e: Ev = (0, 0, i64::from(i), i);
            general.process_element(0, e, e.2, &mut out_g);
            linear.process_element(0, e, e.2, &mut out_l);
            general.advance_watermark(e.2, &mut out_g);
            linear.advance_watermark(e.2, &mut out_l);
            seen(&mut out_g, &mut want);
            seen(&mut out_l, &mut got);
            assert_eq!(got, want, "{stages} stages, after event {i}");
            assert_eq!(
                held(&linear),
                held(&general),
                "{stages} stages, after event {i}"
            );
        }
        assert!(!want.is_empty(), "{stages} stages: some matches");
    }
}
