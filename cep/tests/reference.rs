//! Reference cases from Flink CEP's documentation and test suite, through the Rust DSL. An event
//! is `(kind, label, ts)`; a condition "x" means the event's kind is x.

use std::sync::Arc;
use std::time::Duration;

use cep::{AfterMatchSkip, CepOperator, OutputKind, Pattern, WithinType};

type Ev = (&'static str, &'static str, i64);

fn is(kind: &'static str) -> impl Fn(&Ev) -> bool + Send + Sync + 'static {
    move |e: &Ev| e.0 == kind
}

/// Runs `pattern` over `events` (one key) and returns sorted matches and timeouts, each as the
/// labels of its events in match order (timeouts with their time).
fn run(pattern: Pattern<Ev>, events: &[Ev]) -> (Vec<String>, Vec<String>) {
    let nfa = pattern.compile("p").expect("valid pattern");
    let mut op = CepOperator::new(vec![Arc::new(nfa)]);
    let mut out = Vec::new();
    for e in events {
        op.process_element(0, *e, e.2, &mut out);
        op.advance_watermark(e.2 - 1, &mut out);
    }
    op.advance_watermark(i64::MAX, &mut out);
    let mut matches = Vec::new();
    let mut timeouts = Vec::new();
    for o in out {
        let labels: Vec<&str> = o
            .events
            .iter()
            .flat_map(|(_, evs)| evs.iter().map(|e| e.1))
            .collect();
        let s = labels.join(" ");
        match o.kind {
            OutputKind::Match => matches.push(s),
            OutputKind::Timeout => timeouts.push(format!("{s}@{}", o.timestamp)),
            OutputKind::Late => panic!("no late events expected"),
        }
    }
    matches.sort();
    timeouts.sort();
    (matches, timeouts)
}

fn seq(kind: &'static str, labels: &[&'static str]) -> Vec<Ev> {
    labels
        .iter()
        .enumerate()
        .map(|(i, l)| (kind, *l, i as i64 + 1))
        .collect()
}

#[test]
fn case1_times3_no_skip_and_skip_past_last() {
    let evs = seq("a", &["a1", "a2", "a3", "a4", "a5", "a6"]);
    let p = Pattern::begin("start").where_(is("a")).times(3);
    let (m, _) = run(p, &evs);
    assert_eq!(m, vec!["a1 a2 a3", "a2 a3 a4", "a3 a4 a5", "a4 a5 a6"]);
    let p = Pattern::begin_with_skip("start", AfterMatchSkip::SkipPastLastEvent)
        .where_(is("a"))
        .times(3);
    let (m, _) = run(p, &evs);
    assert_eq!(m, vec!["a1 a2 a3", "a4 a5 a6"]);
}

#[test]
fn case2_followed_by_any_no_skip_and_skip_to_next() {
    let evs = vec![
        ("a", "a1", 1),
        ("b", "b1", 2),
        ("a", "a2", 3),
        ("b", "b2", 4),
    ];
    let p = || {
        Pattern::begin("start")
            .where_(is("a"))
            .followed_by_any("end")
            .where_(is("b"))
    };
    assert_eq!(run(p(), &evs).0, vec!["a1 b1", "a1 b2", "a2 b2"]);
    assert_eq!(
        run(p().skip(AfterMatchSkip::SkipToNext), &evs).0,
        vec!["a1 b1", "a2 b2"]
    );
}

fn case3_events() -> Vec<Ev> {
    vec![
        ("start", "start1", 1),
        ("start", "start2", 2),
        ("middle", "middle3", 3),
        ("foobar", "foobar4", 4),
        ("end", "end5", 11),
        ("end", "end6", 13),
    ]
}

fn case3_pattern() -> Pattern<Ev> {
    Pattern::begin("start")
        .where_(is("start"))
        .followed_by_any("middle")
        .where_(is("middle"))
        .followed_by_any("end")
        .where_(is("end"))
}

#[test]
fn case3_within_first_and_last() {
    let p = case3_pattern().within(Duration::from_millis(10));
    let (m, t) = run(p, &case3_events());
    assert_eq!(m, vec!["start2 middle3 end5"]);
    assert_eq!(
        t,
        vec![
            "start1 middle3@11",
            "start1@11",
            "start2 middle3@12",
            "start2@12"
        ]
    );
}

#[test]
fn case3_within_previous_and_current() {
    let p = case3_pattern().within_type(Duration::from_millis(10), WithinType::PreviousAndCurrent);
    let (m, t) = run(p, &case3_events());
    assert_eq!(m, vec!["start1 middle3 end5", "start2 middle3 end5"]);
    assert_eq!(t, vec!["start1 middle3@13", "start2 middle3@13"]);
}

#[test]
fn case4_trailing_not_followed_by() {
    let evs = vec![
        ("a", "a1", 1),
        ("b", "b1", 2),
        ("a", "a2", 4),
        ("c", "c", 5),
        ("b", "b2", 10),
        ("a", "a3", 11),
        ("b", "b3", 13),
    ];
    let p = Pattern::begin("a")
        .where_(is("a"))
        .not_followed_by("b")
        .where_(is("b"))
        .within(Duration::from_millis(3));
    assert_eq!(run(p, &evs).0, vec!["a2"]);
}

#[test]
fn case5_times_range_allow_combinations() {
    let evs = vec![
        ("c", "c", 1),
        ("a", "a1", 2),
        ("a", "a2", 3),
        ("a", "a3", 4),
        ("b", "b", 6),
    ];
    let p = Pattern::begin("c")
        .where_(is("c"))
        .next("a")
        .where_(is("a"))
        .times_range(1, 3)
        .allow_combinations()
        .followed_by("b")
        .where_(is("b"));
    assert_eq!(
        run(p, &evs).0,
        vec!["c a1 a2 a3 b", "c a1 a2 b", "c a1 a3 b", "c a1 b"]
    );
}

#[test]
fn case6_optional_greedy_one_or_more() {
    let evs = vec![
        ("c", "c", 1),
        ("a", "a1", 2),
        ("a", "a2", 3),
        ("a", "a3", 4),
        ("d", "d", 5),
    ];
    let p = Pattern::begin("c")
        .where_(is("c"))
        .followed_by("a")
        .where_(is("a"))
        .one_or_more()
        .optional()
        .greedy()
        .followed_by("d")
        .where_(is("d"));
    assert_eq!(run(p, &evs).0, vec!["c a1 a2 a3 d"]);
}

#[test]
fn case7_one_or_more_until() {
    let evs = vec![
        ("a", "a1", 1),
        ("c", "c", 2),
        ("a", "a2", 3),
        ("b", "b", 4),
        ("a", "a3", 5),
    ];
    let p = Pattern::begin("a")
        .where_(is("a"))
        .one_or_more()
        .until(is("b"));
    assert_eq!(run(p, &evs).0, vec!["a1", "a1 a2", "a2", "a3"]);
}

fn case8_events() -> Vec<Ev> {
    vec![
        ("c", "C", 1),
        ("d", "D", 2),
        ("a", "A1", 3),
        ("a", "A2", 4),
        ("a", "A3", 5),
        ("d", "D", 6),
        ("a", "A4", 7),
        ("b", "B", 8),
    ]
}

fn case8_pattern(f: impl Fn(Pattern<Ev>) -> Pattern<Ev>) -> Pattern<Ev> {
    f(Pattern::begin("c")
        .where_(is("c"))
        .followed_by("a")
        .where_(is("a"))
        .one_or_more())
    .followed_by("b")
    .where_(is("b"))
}

#[test]
fn case8_one_or_more_contiguity() {
    let (m, _) = run(case8_pattern(|p| p.consecutive()), &case8_events());
    assert_eq!(m, vec!["C A1 A2 A3 B", "C A1 A2 B", "C A1 B"]);
    let (m, _) = run(case8_pattern(|p| p), &case8_events());
    assert_eq!(
        m,
        vec!["C A1 A2 A3 A4 B", "C A1 A2 A3 B", "C A1 A2 B", "C A1 B"]
    );
    // Flink's documentation lists these eight for allowCombinations(): the relaxed contiguity
    // between c and a still makes A1 the first a (see docs/semantics.md).
    let (m, _) = run(case8_pattern(|p| p.allow_combinations()), &case8_events());
    assert_eq!(
        m,
        vec![
            "C A1 A2 A3 A4 B",
            "C A1 A2 A3 B",
            "C A1 A2 A4 B",
            "C A1 A2 B",
            "C A1 A3 A4 B",
            "C A1 A3 B",
            "C A1 A4 B",
            "C A1 B"
        ]
    );
    // With followed_by_any between c and a, every non-empty subset of A1..A4 starts a match.
    let p = Pattern::begin("c")
        .where_(is("c"))
        .followed_by_any("a")
        .where_(is("a"))
        .one_or_more()
        .allow_combinations()
        .followed_by("b")
        .where_(is("b"));
    assert_eq!(run(p, &case8_events()).0.len(), 15);
}

#[test]
fn case9_login_failures_per_user() {
    type Login = (u32, &'static str, i64);
    let evs: Vec<Login> = vec![
        (1, "fail", 842_000),
        (1, "fail", 843_000),
        (1, "fail", 844_000),
        (2, "success", 845_000),
    ];
    let run_login = |p: Pattern<Login>| {
        let mut op = CepOperator::new(vec![Arc::new(p.compile("login").unwrap())]);
        let mut out = Vec::new();
        for e in &evs {
            op.process_element(e.0, *e, e.2, &mut out);
        }
        op.advance_watermark(i64::MAX, &mut out);
        let mut m: Vec<(u32, Vec<i64>)> = out
            .iter()
            .filter(|o| o.kind == OutputKind::Match)
            .map(|o| {
                (
                    o.key,
                    o.events
                        .iter()
                        .flat_map(|(_, v)| v.iter().map(|e| e.2 / 1000))
                        .collect(),
                )
            })
            .collect();
        m.sort();
        m
    };
    let p = Pattern::<Login>::begin("first")
        .where_(|e| e.1 == "fail")
        .next("second")
        .where_(|e| e.1 == "fail")
        .within(Duration::from_secs(2));
    assert_eq!(run_login(p), vec![(1, vec![842, 843]), (1, vec![843, 844])]);
    let p = Pattern::<Login>::begin("fail")
        .where_(|e| e.1 == "fail")
        .times(3)
        .consecutive()
        .within(Duration::from_secs(5));
    assert_eq!(run_login(p), vec![(1, vec![842, 843, 844])]);
}

#[test]
fn case10_order_timeout_without_further_events() {
    type Order = (u32, &'static str, i64);
    let evs: Vec<Order> = vec![
        (1, "create", 1_558_430_842_000),
        (2, "create", 1_558_430_843_000),
        (2, "pay", 1_558_430_844_000),
    ];
    let p = Pattern::<Order>::begin("create")
        .where_(|e| e.1 == "create")
        .followed_by("pay")
        .where_(|e| e.1 == "pay")
        .within(Duration::from_secs(15 * 60));
    let mut op = CepOperator::new(vec![Arc::new(p.compile("orders").unwrap())]);
    let mut out = Vec::new();
    for e in &evs {
        op.process_element(e.0, *e, e.2, &mut out);
    }
    // Only the watermark moves: order 1 never sees another event.
    op.advance_watermark(1_558_431_742_000, &mut out);
    let mut got: Vec<(OutputKind, u32, i64)> =
        out.iter().map(|o| (o.kind, o.key, o.timestamp)).collect();
    got.sort_by_key(|g| g.1);
    assert_eq!(
        got,
        vec![
            (OutputKind::Timeout, 1, 1_558_431_742_000),
            (OutputKind::Match, 2, 1_558_430_844_000)
        ]
    );
}

#[test]
fn build_time_errors_are_collected() {
    let p = Pattern::<Ev>::begin("a")
        .where_(is("a"))
        .times(2)
        .times(3)
        .followed_by("a")
        .greedy()
        .until(is("x"));
    let errs = p.compile("bad").unwrap_err();
    let text = errs.to_string();
    assert!(text.contains("already applied"), "{text}");
    assert!(text.contains("greedy"), "{text}");
    assert!(text.contains("until"), "{text}");
    assert!(text.contains("duplicate"), "{text}");
    let p = Pattern::<Ev>::begin("a").not_followed_by("b");
    assert!(p.compile("x").unwrap_err().to_string().contains("window"));
    let p = Pattern::<Ev>::begin("a").optional().not_next("b");
    assert!(p.compile("x").unwrap_err().to_string().contains("optional"));
}
