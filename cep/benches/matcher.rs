//! Micro-benchmarks of the matcher's hot parts: one NFA step (`Nfa::process` on a key's state),
//! time advance with timeouts, extraction of partial matches from the shared buffer, and the
//! keyed operator per event.
//!
//! Run with: `cargo bench -p cep --bench matcher`

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use cep::{AfterMatchSkip, CepOperator, Nfa, Pattern};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

#[derive(Clone, Debug)]
struct Ev {
    kind: &'static str,
}

fn ev(kind: &'static str) -> Arc<Ev> {
    Arc::new(Ev { kind })
}

fn is(t: &'static str) -> impl Fn(&Ev) -> bool + Send + Sync + 'static {
    move |e: &Ev| e.kind == t
}

fn login_fail() -> Nfa<Ev> {
    Pattern::begin_with_skip("fail", AfterMatchSkip::SkipPastLastEvent)
        .where_(is("fail"))
        .times(3)
        .consecutive()
        .within(Duration::from_secs(2))
        .compile("login_fail")
        .unwrap()
}

fn seq_fby() -> Nfa<Ev> {
    Pattern::begin("a")
        .where_(is("A"))
        .followed_by("b")
        .where_(is("B"))
        .followed_by("c")
        .where_(is("C"))
        .within(Duration::from_secs(10))
        .compile("seq_fby")
        .unwrap()
}

fn oneormore() -> Nfa<Ev> {
    Pattern::begin("a")
        .where_(is("A"))
        .followed_by("b")
        .where_(is("B"))
        .one_or_more()
        .followed_by("c")
        .where_(is("C"))
        .within(Duration::from_secs(600))
        .compile("oneormore")
        .unwrap()
}

/// `Nfa::process` (with `advance_time` before each timestamp, as the operator does) over a
/// repeating cycle of events that keeps the state bounded.
fn nfa_step(c: &mut Criterion) {
    let mut g = c.benchmark_group("nfa_step");
    let cases: [(&str, Nfa<Ev>, Vec<&'static str>); 3] = [
        (
            "login_fail",
            login_fail(),
            vec!["fail", "fail", "success", "fail", "fail", "fail"],
        ),
        (
            "seq_fby",
            seq_fby(),
            vec!["A", "D", "B", "A", "C", "D", "B", "C"],
        ),
        ("start_only_no_match", seq_fby(), vec!["D"]),
    ];
    for (name, nfa, cycle) in cases {
        let events: Vec<Arc<Ev>> = cycle.iter().map(|k| ev(k)).collect();
        g.throughput(Throughput::Elements(events.len() as u64));
        let mut st = nfa.initial_state();
        let (mut matches, mut timeouts) = (Vec::new(), Vec::new());
        let mut ts = 0i64;
        g.bench_function(name, |b| {
            b.iter(|| {
                for e in &events {
                    ts += 500;
                    if nfa.next_due(&st) <= ts {
                        nfa.advance_time(&mut st, ts, &mut matches, &mut timeouts);
                    }
                    nfa.process(&mut st, e, ts, &mut matches);
                }
                matches.clear();
                timeouts.clear();
            })
        });
    }
    g.finish();
}

/// Extraction of partial matches from the shared buffer: a key holding one `a` and `n` `b`s
/// of a one-or-more stage; `partial_matches` extracts every partial match's events.
fn extraction(c: &mut Criterion) {
    let mut g = c.benchmark_group("extract");
    let nfa = oneormore();
    for n in [4usize, 16, 64] {
        let mut st = nfa.initial_state();
        let mut matches = Vec::new();
        nfa.process(&mut st, &ev("A"), 0, &mut matches);
        for i in 0..n {
            nfa.process(&mut st, &ev("B"), 1 + i as i64, &mut matches);
        }
        let partials = nfa.partial_matches(&st).len();
        g.bench_function(format!("oneormore_{n}b_{partials}partials"), |b| {
            b.iter(|| black_box(nfa.partial_matches(black_box(&st))))
        });
    }
    // A match's extraction: the last `c` completes every partial match.
    for n in [4usize, 16] {
        g.bench_function(format!("match_oneormore_{n}b"), |b| {
            b.iter_batched(
                || {
                    let mut st = nfa.initial_state();
                    let mut m = Vec::new();
                    nfa.process(&mut st, &ev("A"), 0, &mut m);
                    for i in 0..n {
                        nfa.process(&mut st, &ev("B"), 1 + i as i64, &mut m);
                    }
                    st
                },
                |mut st| {
                    let mut m = Vec::new();
                    nfa.process(&mut st, &ev("C"), 1000, &mut m);
                    black_box(m)
                },
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

/// The keyed operator per event, login workload shape: 1,000 keys, watermark after each event.
fn operator(c: &mut Criterion) {
    let mut g = c.benchmark_group("operator");
    let nfa = Arc::new(login_fail());
    let n = 10_000u64;
    g.throughput(Throughput::Elements(n));
    let mut op: CepOperator<u64, Ev> = CepOperator::new(vec![nfa]);
    let mut out = Vec::new();
    let mut i = 0u64;
    g.bench_function("login_fail_1k_keys", |b| {
        b.iter(|| {
            for _ in 0..n {
                let x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
                let kind = if matches!((x >> 40) % 5, 0) {
                    "success"
                } else {
                    "fail"
                };
                op.process_element(x % 1000, Ev { kind }, i as i64, &mut out);
                op.advance_watermark(i as i64 - 1, &mut out);
                out.clear();
                i += 1;
            }
        })
    });
    g.finish();
}

criterion_group!(benches, nfa_step, extraction, operator);
criterion_main!(benches);
