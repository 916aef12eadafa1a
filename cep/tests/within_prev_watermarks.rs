//! A `previous_and_current` window times out the same way however often the watermark moves.
//!
//! Flink 2.3 reports the timeout of the minimal case below only when the watermark jumps to the
//! end at once; with a watermark after every event it never reports it (and keeps the partial
//! match forever), because its operator sets no timer for the end of a `PREVIOUS_AND_CURRENT`
//! window (nor for a `max_gap`). We report it in both cases, at `previous event + window`, as
//! soon as the watermark reaches that time. See docs/semantics.md, "Where we differ, on purpose".

mod common;

use std::sync::Arc;
use std::time::Duration;

use cep::{CepOperator, OutputKind, Pattern, WithinType};

/// `(id, key, ts, type)`.
type Ev = (u32, &'static str, i64, &'static str);

fn is(kind: &'static str) -> impl Fn(&Ev) -> bool + Send + Sync + 'static {
    move |e: &Ev| e.3 == kind
}

/// The corpus pattern `within_prev`: `a followed_by b followed_by c`, 2 s between an event and
/// the previous one (Flink: `.within(Duration.ofSeconds(2), WithinType.PREVIOUS_AND_CURRENT)`).
fn within_prev() -> CepOperator<&'static str, Ev> {
    let nfa = Pattern::begin("a")
        .where_(is("A"))
        .followed_by("b")
        .where_(is("B"))
        .followed_by("c")
        .where_(is("C"))
        .within_type(Duration::from_secs(2), WithinType::PreviousAndCurrent)
        .compile("within_prev")
        .expect("valid pattern");
    CepOperator::new(vec![Arc::new(nfa)])
}

/// How the watermark moves, as in `flink-reference` (`ORACLE_WM`).
#[derive(Clone, Copy, Debug)]
enum Watermarks {
    /// No watermark until the end of input (the corpus's `expected.txt`).
    AtEnd,
    /// After every event, max timestamp - bound - 1 (`expected-event-watermarks.txt`).
    PerEvent,
}

/// Runs the events in arrival order with the given out-of-orderness bound and returns the
/// outputs as `M|key|stage=ids;...` and `T|key|stage=ids;...|timestamp`, sorted (the format of
/// the conformance files, without the pattern column).
fn run(events: &[Ev], bound: i64, wm: Watermarks) -> Vec<String> {
    let mut op = within_prev();
    let mut out = Vec::new();
    let mut max = i64::MIN;
    for e in events {
        op.process_element(e.1, *e, e.2, &mut out);
        if let Watermarks::PerEvent = wm {
            if e.2 > max {
                max = e.2;
                op.advance_watermark(max - bound - 1, &mut out);
            }
        }
    }
    op.advance_watermark(i64::MAX, &mut out);
    assert_eq!(op.key_count(), 0, "state left behind ({wm:?})");
    common::oracle_lines(&out, |e| e.0.to_string())
}

/// The minimal case. Key k: A at 1000, B at 2000; key x: an unrelated D at 2500; bound 0.
/// Flink 2.3: `T|k|a=1;b=2|4000` with the watermark at the end, nothing with a watermark after
/// every event (the D moves the watermark past B, so B is handled before the end, and no timer
/// of k is left for the end-of-input watermark to fire).
const MINIMAL: [Ev; 3] = [
    (1, "k", 1000, "A"),
    (2, "k", 2000, "B"),
    (3, "x", 2500, "D"),
];

#[test]
fn minimal_case_times_out_in_both_watermark_modes() {
    for wm in [Watermarks::AtEnd, Watermarks::PerEvent] {
        assert_eq!(run(&MINIMAL, 0, wm), vec!["T|k|a=1;b=2|4000"], "{wm:?}");
    }
}

/// Without the D of key x, B is still queued when the end-of-input watermark arrives, and Flink
/// reports the timeout in both modes; so do we.
#[test]
fn without_the_unrelated_event_both_modes_agree_with_flink() {
    for wm in [Watermarks::AtEnd, Watermarks::PerEvent] {
        assert_eq!(
            run(&MINIMAL[..2], 0, wm),
            vec!["T|k|a=1;b=2|4000"],
            "{wm:?}"
        );
    }
}

/// With a later event of key k that the pattern ignores (D at 9000), Flink 2.3 reports the
/// timeout in both modes too (the timer of that event advances k's time past 4000).
#[test]
fn a_later_event_of_the_key_gives_the_same_timeout() {
    let mut evs = MINIMAL.to_vec();
    evs.push((4, "k", 9000, "D"));
    for wm in [Watermarks::AtEnd, Watermarks::PerEvent] {
        assert_eq!(run(&evs, 0, wm), vec!["T|k|a=1;b=2|4000"], "{wm:?}");
    }
}

/// The timeout comes out when the watermark reaches `B + 2 s`, not later and not only at the
/// end of input, and the key's state goes with it.
#[test]
fn timeout_fires_when_the_watermark_reaches_the_end_of_the_window() {
    let mut op = within_prev();
    let mut out = Vec::new();
    for e in &MINIMAL {
        op.process_element(e.1, *e, e.2, &mut out);
    }
    op.advance_watermark(2499, &mut out);
    assert!(out.is_empty());
    let held = op.partial_matches(&"k");
    assert_eq!(held.len(), 1, "a;b waiting for c");
    assert_eq!((held[0].1.stage.as_str(), held[0].1.start_ts), ("c", 1000));
    op.advance_watermark(3999, &mut out);
    assert!(out.is_empty(), "2 s after B is 4000");
    op.advance_watermark(4000, &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].kind, OutputKind::Timeout);
    assert_eq!((out[0].key, out[0].timestamp), ("k", 4000));
    assert_eq!(op.key_count(), 0);
}

/// One of the 44 corpus outputs that `expected-event-watermarks.txt` lacks: key s1d137u1 (all
/// its events), the event of s1d137u0 that moves the watermark past its last B, and the first
/// event of the next dataset; bound 300 ms as in the corpus.
#[test]
fn corpus_key_s1d137u1() {
    let evs: [Ev; 8] = [
        (2444, "s1d137u1", 1370000300, "B"),
        (2448, "s1d137u1", 1370003300, "A"),
        (2454, "s1d137u1", 1370007200, "C"),
        (2457, "s1d137u1", 1370010800, "B"),
        (2464, "s1d137u1", 1370016900, "A"),
        (2466, "s1d137u1", 1370020200, "B"),
        (2468, "s1d137u0", 1370021200, "C"),
        (2469, "s1d138u0", 1380000500, "C"),
    ];
    // Flink 2.3 at end of input gives both; with a watermark after every event only the first.
    let want = vec![
        "T|s1d137u1|a=2448;b=2457|1370012800",
        "T|s1d137u1|a=2464;b=2466|1370022200",
    ];
    for wm in [Watermarks::AtEnd, Watermarks::PerEvent] {
        assert_eq!(run(&evs, 300, wm), want, "{wm:?}");
    }
}

/// The same holds for the other per-state window, `max_gap` (Flink's `times(n, Duration)`), when
/// the pattern has no `within`: key k: A at 1000, A at 1500; key x: D at 1700; bound 0;
/// `a.times(3).max_gap(1 s)`. Flink 2.3 gives `T|k|a=2|2500` with the watermark at the end and
/// nothing with a watermark after every event (with a `within` as well, its timer at
/// `start + within` catches it in both modes). We give it in both.
#[test]
fn max_gap_without_within_times_out_in_both_watermark_modes() {
    let nfa = Arc::new(
        Pattern::begin("a")
            .where_(is("A"))
            .times(3)
            .max_gap(Duration::from_secs(1))
            .compile("gap_only")
            .expect("valid pattern"),
    );
    let evs: [Ev; 3] = [
        (1, "k", 1000, "A"),
        (2, "k", 1500, "A"),
        (3, "x", 1700, "D"),
    ];
    for per_event in [false, true] {
        let mut op = CepOperator::new(vec![Arc::clone(&nfa)]);
        let mut out = Vec::new();
        for e in &evs {
            op.process_element(e.1, *e, e.2, &mut out);
            if per_event {
                op.advance_watermark(e.2 - 1, &mut out);
            }
        }
        op.advance_watermark(i64::MAX, &mut out);
        let got: Vec<(OutputKind, &str, Vec<u32>, i64)> = out
            .iter()
            .map(|o| {
                let ids = o.events.iter().flat_map(|(_, v)| v.iter().map(|e| e.0));
                (o.kind, o.key, ids.collect(), o.timestamp)
            })
            .collect();
        assert_eq!(
            got,
            vec![(OutputKind::Timeout, "k", vec![2], 2500)],
            "per_event={per_event}"
        );
    }
}
