//! Pattern shapes the DSL offers but the other suites do not exercise: `times_or_more`, a gap on
//! `one_or_more` (`max_gap`, Flink's `oneOrMore(Duration)`), looping, optional and nested groups,
//! `or`, `until` with iterative conditions, and a skip strategy on a looping group.
//!
//! Each test runs a small CSV (`id,key,ts,type,value`, the input format of
//! `shared/flink-reference`) through the pattern and compares with what Flink CEP 2.3 printed for
//! the Java twin of the pattern (given above each test) on the same input, with no watermark
//! until the end of input: `M|key|stage=ids;...` per match, `T|key|stage=ids;...|ts` per timeout.

mod common;

use std::sync::Arc;
use std::time::Duration;

use cep::{AfterMatchSkip, CepOperator, Context, Pattern};

#[derive(Debug)]
struct Ev {
    id: u32,
    key: &'static str,
    ts: i64,
    ty: &'static str,
    value: f64,
}

fn parse(csv: &'static str) -> Vec<Ev> {
    csv.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| {
            let f: Vec<&'static str> = l.split(',').collect();
            Ev {
                id: f[0].parse().unwrap(),
                key: f[1],
                ts: f[2].parse().unwrap(),
                ty: f[3],
                value: f[4].parse().unwrap(),
            }
        })
        .collect()
}

fn ty(t: &'static str) -> impl Fn(&Ev) -> bool + Send + Sync + 'static {
    move |e: &Ev| e.ty == t
}

fn s(secs: u64) -> Duration {
    Duration::from_secs(secs)
}

/// The value of the last event of `stage` in the partial match, NaN if none (Flink's `last`
/// helper of `Patterns.java`).
fn last(ctx: &Context<'_, Ev>, stage: &str) -> f64 {
    ctx.events(stage).last().map_or(f64::NAN, |e| e.value)
}

/// Runs `pattern` over the events of `csv` (keyed by their key), with the watermark at +infinity
/// after the last event, and renders the output as the Flink reference does, sorted.
fn run(pattern: Pattern<Ev>, csv: &'static str) -> Vec<String> {
    let nfa = pattern.compile("p").expect("valid pattern");
    let mut op = CepOperator::new(vec![Arc::new(nfa)]);
    let mut out = Vec::new();
    for e in parse(csv) {
        let (key, ts) = (e.key, e.ts);
        op.process_element(key, e, ts, &mut out);
    }
    op.advance_watermark(i64::MAX, &mut out);
    common::oracle_lines(&out, |e| e.id.to_string())
}

fn sorted(expected: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

const TIMES_OR_MORE: &str = "
1,k1,1000,A,0
2,k1,2000,A,0
3,k1,3000,X,0
4,k1,4000,A,0
5,k1,5000,C,0
6,k1,6000,A,0
7,k1,7000,C,0
8,k2,1500,A,0
9,k2,2500,C,0
10,k2,3500,A,0
11,k2,11000,A,0
12,k2,12000,C,0
";

/// Flink: `begin("a").where(type("A")).timesOrMore(2).followedBy("c").where(type("C")).within(8s)`.
#[test]
fn times_or_more_then_followed_by() {
    let p = Pattern::begin("a")
        .where_(ty("A"))
        .times_or_more(2)
        .followed_by("c")
        .where_(ty("C"))
        .within(s(8));
    assert_eq!(
        run(p, TIMES_OR_MORE),
        sorted(&[
            "M|k1|a=1,2,4,6;c=7",
            "M|k1|a=1,2,4;c=5",
            "M|k1|a=1,2;c=5",
            "M|k1|a=2,4,6;c=7",
            "M|k1|a=2,4;c=5",
            "M|k1|a=4,6;c=7",
            "T|k1|a=1,2,4,6|9000",
            "T|k1|a=2,4,6|10000",
            "T|k1|a=4,6|12000",
            "T|k1|a=6|14000",
            "T|k2|a=10,11|11500",
            "T|k2|a=11|19000",
            "T|k2|a=8,10|9500",
        ])
    );
}

const GAP: &str = "
1,k1,1000,A,0
2,k1,2000,B,0
3,k1,3000,B,0
4,k1,3500,X,0
5,k1,6000,B,0
6,k1,6500,C,0
7,k1,7000,B,0
8,k1,8000,C,0
9,k2,1000,A,0
10,k2,2000,B,0
11,k2,4500,B,0
12,k2,5000,C,0
";

fn looping_b(from: u32, gap: Option<Duration>) -> Pattern<Ev> {
    let p = Pattern::begin("a")
        .where_(ty("A"))
        .followed_by("b")
        .where_(ty("B"))
        .times_or_more(from);
    let p = match gap {
        Some(g) => p.max_gap(g),
        None => p,
    };
    p.followed_by("c").where_(ty("C")).within(s(20))
}

/// Flink: `begin("a").where(type("A")).followedBy("b").where(type("B")).oneOrMore(2s)
/// .followedBy("c").where(type("C")).within(20s)`. In Flink 2.3 the gap of a looping stage
/// bounds only the steps between its mandatory events (`timesOrMore(n, gap)` with n >= 2), so
/// with `oneOrMore` it has no effect: B3 -> B5 (3 s) and B10 -> B11 (2.5 s) are taken, and
/// Flink's output is the same as for `oneOrMore()` without a gap (checked: also run).
#[test]
fn one_or_more_with_gap() {
    let expected = sorted(&[
        "M|k1|a=1;b=2,3,5,7;c=8",
        "M|k1|a=1;b=2,3,5;c=6",
        "M|k1|a=1;b=2,3;c=6",
        "M|k1|a=1;b=2;c=6",
        "M|k2|a=9;b=10,11;c=12",
        "M|k2|a=9;b=10;c=12",
        "T|k1|a=1;b=2,3,5,7|21000",
        "T|k2|a=9;b=10,11|21000",
    ]);
    let p = Pattern::begin("a")
        .where_(ty("A"))
        .followed_by("b")
        .where_(ty("B"))
        .one_or_more()
        .max_gap(s(2))
        .followed_by("c")
        .where_(ty("C"))
        .within(s(20));
    assert_eq!(run(p, GAP), expected);
    assert_eq!(run(looping_b(1, None), GAP), expected);
}

const GAP3: &str = "
1,k1,1000,A,0
2,k1,2000,B,0
3,k1,3000,B,0
4,k1,3500,X,0
5,k1,6000,B,0
6,k1,6500,B,0
7,k1,7000,C,0
8,k1,7500,B,0
9,k1,8000,C,0
10,k2,1000,A,0
11,k2,2000,B,0
12,k2,3500,B,0
13,k2,4000,B,0
14,k2,5000,C,0
";

/// Flink: `begin("a").where(type("A")).followedBy("b").where(type("B")).timesOrMore(3, 2s)
/// .followedBy("c").where(type("C")).within(20s)`, and the same with `timesOrMore(3)`. With the
/// gap, k1's B3 -> B5 (3 s, the step to the third, mandatory B) is too long: `b=2,3` times out
/// at 3000 + 2000, and no match of k1 is left.
#[test]
fn times_or_more_with_gap() {
    assert_eq!(
        run(looping_b(3, Some(s(2))), GAP3),
        sorted(&[
            "M|k2|a=10;b=11,12,13;c=14",
            "T|k1|a=1;b=2,3|5000",
            "T|k2|a=10;b=11,12,13|21000",
        ])
    );
    assert_eq!(
        run(looping_b(3, None), GAP3),
        sorted(&[
            "M|k1|a=1;b=2,3,5,6,8;c=9",
            "M|k1|a=1;b=2,3,5,6;c=7",
            "M|k1|a=1;b=2,3,5;c=7",
            "M|k2|a=10;b=11,12,13;c=14",
            "T|k1|a=1;b=2,3,5,6,8|21000",
            "T|k2|a=10;b=11,12,13|21000",
        ])
    );
    // timesOrMore(2, 2s): the one bounded step (B2 -> B3, 1 s) is short enough.
    assert_eq!(
        run(looping_b(2, Some(s(2))), GAP3),
        sorted(&[
            "M|k1|a=1;b=2,3,5,6,8;c=9",
            "M|k1|a=1;b=2,3,5,6;c=7",
            "M|k1|a=1;b=2,3,5;c=7",
            "M|k1|a=1;b=2,3;c=7",
            "M|k2|a=10;b=11,12,13;c=14",
            "M|k2|a=10;b=11,12;c=14",
            "T|k1|a=1;b=2,3,5,6,8|21000",
            "T|k2|a=10;b=11,12,13|21000",
        ])
    );
}

const GROUP: &str = "
1,k1,1000,S,0
2,k1,2000,A,0
3,k1,3000,B,0
4,k1,4000,A,0
5,k1,5000,B,0
6,k1,6000,C,0
7,k1,7000,A,0
8,k1,8000,B,0
9,k1,9000,C,0
10,k2,1000,S,0
11,k2,2000,A,0
12,k2,3000,C,0
13,k2,4000,B,0
14,k2,5000,C,0
";

fn looping_group_pattern(skip: AfterMatchSkip) -> Pattern<Ev> {
    Pattern::begin_with_skip("s", skip)
        .where_(ty("S"))
        .followed_by_group(
            Pattern::begin("x")
                .where_(ty("A"))
                .followed_by("y")
                .where_(ty("B")),
        )
        .one_or_more()
        .followed_by("e")
        .where_(ty("C"))
        .within(s(10))
}

/// Flink: `begin("s").where(type("S")).followedBy(begin("x").where(type("A"))
/// .followedBy("y").where(type("B"))).oneOrMore().followedBy("e").where(type("C")).within(10s)`.
#[test]
fn looping_group() {
    assert_eq!(
        run(looping_group_pattern(AfterMatchSkip::NoSkip), GROUP),
        sorted(&[
            "M|k1|s=1;x=2,4,7;y=3,5,8;e=9",
            "M|k1|s=1;x=2,4;y=3,5;e=6",
            "M|k1|s=1;x=2,4;y=3,5;e=9",
            "M|k1|s=1;x=2;y=3;e=6",
            "M|k2|s=10;x=11;y=13;e=14",
            "T|k1|s=1;x=2,4,7;y=3,5,8|11000",
            "T|k2|s=10;x=11;y=13|11000",
        ])
    );
}

/// Flink: the pattern of `looping_group` with `begin("s", skipPastLastEvent())`.
#[test]
fn looping_group_skip_past_last_event() {
    assert_eq!(
        run(
            looping_group_pattern(AfterMatchSkip::SkipPastLastEvent),
            GROUP
        ),
        sorted(&["M|k1|s=1;x=2,4;y=3,5;e=6", "M|k2|s=10;x=11;y=13;e=14"])
    );
}

const OPTIONAL: &str = "
1,k1,1000,A,0
2,k1,2000,B,0
3,k1,3000,D,0
4,k1,4000,E,0
5,k1,5000,C,0
6,k2,1000,A,0
7,k2,2000,B,0
8,k2,3000,E,0
9,k2,4000,C,0
10,k2,5000,A,0
11,k2,6000,C,0
12,k2,7000,B,0
";

/// Flink: `begin("a").where(type("A")).followedBy(begin("x").where(type("B"))
/// .followedBy("y").where(type("D")).optional().followedBy("z").where(type("E"))).optional()
/// .followedBy("c").where(type("C")).within(10s)`.
#[test]
fn optional_group_with_optional_stage() {
    let p = Pattern::begin("a")
        .where_(ty("A"))
        .followed_by_group(
            Pattern::begin("x")
                .where_(ty("B"))
                .followed_by("y")
                .where_(ty("D"))
                .optional()
                .followed_by("z")
                .where_(ty("E")),
        )
        .optional()
        .followed_by("c")
        .where_(ty("C"))
        .within(s(10));
    assert_eq!(
        run(p, OPTIONAL),
        sorted(&[
            "M|k1|a=1;c=5",
            "M|k1|a=1;x=2;y=3;z=4;c=5",
            "M|k1|a=1;x=2;z=4;c=5",
            "M|k2|a=10;c=11",
            "M|k2|a=6;c=9",
            "M|k2|a=6;x=7;z=8;c=9",
            "T|k2|a=10;x=12|15000",
            "T|k2|a=6;x=7|11000",
        ])
    );
}

const NESTED: &str = "
1,k1,1000,S,0
2,k1,2000,A,0
3,k1,3000,B,0
4,k1,4000,A,0
5,k1,5000,B,0
6,k1,6000,D,0
7,k1,7000,C,0
8,k2,1000,S,0
9,k2,2000,A,0
10,k2,3000,B,0
11,k2,3500,X,0
12,k2,4000,A,0
13,k2,5000,B,0
14,k2,5500,A,0
15,k2,6000,B,0
16,k2,7000,D,0
17,k2,8000,C,0
";

/// Flink: `begin("s").where(type("S")).followedBy(Pattern.begin(begin("x").where(type("A"))
/// .next("y").where(type("B"))).times(2).followedBy("z").where(type("D")))
/// .followedBy("e").where(type("C")).within(20s)`.
#[test]
fn nested_group() {
    let inner = Pattern::begin("x")
        .where_(ty("A"))
        .next("y")
        .where_(ty("B"));
    let outer = Pattern::begin_group(inner)
        .times(2)
        .followed_by("z")
        .where_(ty("D"));
    let p = Pattern::begin("s")
        .where_(ty("S"))
        .followed_by_group(outer)
        .followed_by("e")
        .where_(ty("C"))
        .within(s(20));
    assert_eq!(
        run(p, NESTED),
        sorted(&[
            "M|k1|s=1;x=2,4;y=3,5;z=6;e=7",
            "M|k2|s=8;x=9,12;y=10,13;z=16;e=17",
        ])
    );
}

const OR: &str = "
1,k1,1000,A,10
2,k1,2000,X,5
3,k1,3000,B,1
4,k1,4000,Y,50
5,k1,5000,Z,200
6,k1,6000,Y,7
7,k2,1000,X,100
8,k2,2000,Y,99
9,k2,3000,B,150
10,k2,4000,B,0
";

/// Flink: `begin("a").where(type("A")).or(type("X")).followedBy("b").where(type("B"))
/// .or(iterative: e.value > last(ctx, "a")).where(e.value < 100).within(10s)`.
#[test]
fn or_with_iterative_condition() {
    let p = Pattern::begin("a")
        .where_(ty("A"))
        .or(ty("X"))
        .followed_by("b")
        .where_(ty("B"))
        .or_ctx(|e: &Ev, ctx| e.value > last(ctx, "a"))
        .where_(|e: &Ev| e.value < 100.0)
        .within(s(10));
    assert_eq!(
        run(p, OR),
        sorted(&["M|k1|a=1;b=3", "M|k1|a=2;b=3", "M|k2|a=7;b=10"])
    );
}

const UNTIL: &str = "
1,k1,1000,A,0
2,k1,2000,B,10
3,k1,3000,B,5
4,k1,4000,B,20
5,k1,5000,D,15
6,k1,6000,B,30
7,k1,7000,C,0
8,k2,1000,A,0
9,k2,2000,B,1
10,k2,3000,D,0
11,k2,4000,B,2
12,k2,5000,D,5
13,k2,6000,B,9
14,k2,7000,C,0
";

/// Flink: `begin("a").where(type("A")).followedBy("b").where(iterative: type B and (no b yet or
/// e.value > last(ctx, "b"))).oneOrMore().until(iterative: type D and e.value > last(ctx, "b"))
/// .followedBy("c").where(type("C")).within(10s)`.
#[test]
fn until_with_iterative_conditions() {
    let p = Pattern::begin("a")
        .where_(ty("A"))
        .followed_by("b")
        .where_ctx(|e: &Ev, ctx| {
            let l = last(ctx, "b");
            e.ty == "B" && (l.is_nan() || e.value > l)
        })
        .one_or_more()
        .until_ctx(|e: &Ev, ctx| e.ty == "D" && e.value > last(ctx, "b"))
        .followed_by("c")
        .where_(ty("C"))
        .within(s(10));
    assert_eq!(
        run(p, UNTIL),
        sorted(&[
            "M|k1|a=1;b=2,4,6;c=7",
            "M|k1|a=1;b=2,4;c=7",
            "M|k1|a=1;b=2;c=7",
            "M|k2|a=8;b=9,11;c=14",
            "M|k2|a=8;b=9;c=14",
            "T|k1|a=1;b=2,4,6|11000",
        ])
    );
}

/// An iterative condition is called once per event and partial match, although a relaxed
/// stage tests it on two transitions (take, and ignore when it fails): Flink calls it once per
/// transition, with the same event and partial match, so for a condition (a function of both)
/// the results are the same.
#[test]
fn iterative_condition_called_once_per_event_and_partial_match() {
    let calls = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = calls.clone();
    let p = Pattern::begin("a")
        .where_(ty("A"))
        .followed_by("b")
        .where_ctx(move |e: &Ev, ctx| {
            let first = ctx.events("a").next().map_or(0, |a| a.id);
            seen.lock().unwrap().push((e.id, first));
            e.ty == "B" && e.value > last(ctx, "a")
        });
    let csv = "
1,k1,1000,A,5
2,k1,2000,X,0
3,k1,3000,B,1
4,k1,4000,A,0
5,k1,5000,B,9
";
    assert_eq!(run(p, csv), sorted(&["M|k1|a=1;b=5", "M|k1|a=4;b=5"]));
    assert_eq!(
        *calls.lock().unwrap(),
        [(2, 1), (3, 1), (4, 1), (5, 1), (5, 4)]
    );
}

/// A guarded iterative condition answers as its guard and its iterative part together; the
/// guard runs once per event, the iterative part only for the events the guard accepts, once
/// per partial match.
#[test]
fn guarded_condition_runs_its_guard_once_per_event() {
    let guards = Arc::new(std::sync::Mutex::new(Vec::new()));
    let parts = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (g, f) = (guards.clone(), parts.clone());
    /// A, then Bs (whose condition `b` adds), then a C, within 10 s.
    fn abc(b: impl FnOnce(Pattern<Ev>) -> Pattern<Ev>) -> Pattern<Ev> {
        b(Pattern::begin("a").where_(ty("A")).followed_by("b"))
            .one_or_more()
            .followed_by("c")
            .where_(ty("C"))
            .within(s(10))
    }
    let guarded = abc(|p| {
        p.where_ctx_guarded(
            move |e: &Ev| {
                g.lock().unwrap().push(e.id);
                e.ty == "B"
            },
            move |e: &Ev, ctx| {
                let first = ctx.events("a").next().map_or(0, |a| a.id);
                let taken: Vec<u32> = ctx.events("b").map(|b| b.id).collect();
                f.lock().unwrap().push((e.id, first, taken));
                e.value > last(ctx, "a")
            },
        )
    });
    let plain = abc(|p| p.where_ctx(|e: &Ev, ctx| e.ty == "B" && e.value > last(ctx, "a")));
    let csv = "
1,k1,1000,A,5
2,k1,2000,X,0
3,k1,3000,B,1
4,k1,4000,A,0
5,k1,5000,B,9
6,k1,6000,B,7
7,k1,7000,C,0
";
    let want = run(plain, csv);
    assert_eq!(want.len(), 6, "{want:?}");
    assert_eq!(run(guarded, csv), want);
    // Once per event from the first one a partial match tests at "b" (event 2) on.
    assert_eq!(*guards.lock().unwrap(), [2, 3, 4, 5, 6, 7]);
    // Only the Bs, once per partial match (its first event and its Bs so far): event 3 for the
    // A of 1 (refused, 1 < 5), event 5 for the As of 1 and 4 (both take it), event 6 for the
    // two partial matches looping in "b".
    assert_eq!(
        *parts.lock().unwrap(),
        [
            (3, 1, vec![]),
            (5, 1, vec![]),
            (5, 4, vec![]),
            (6, 1, vec![5]),
            (6, 4, vec![5]),
        ]
    );
}
