//! The CEP operator as a keyed operator of the runtime's dataflow: on one worker and on three,
//! its outputs are those of the operator driven by hand.

use std::sync::Arc;
use std::time::Duration;

use cep::{CepOperator, Output, OutputKind, Pattern};
use cep_runtime::{Dataflow, WatermarkStrategy};

#[derive(Clone, Debug)]
struct Login {
    user: String,
    fail: bool,
    ts: i64,
}

/// Logins of 7 users, at most 50 ms out of order.
fn logins() -> Vec<Login> {
    let mut s = 7u64;
    let mut next = move || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (s >> 33) as i64
    };
    let mut ts = 1_000;
    (0..800)
        .map(|_| {
            ts += 5 + next() % 400;
            Login {
                user: format!("u{}", next() % 7),
                fail: next() % 5 != 0,
                ts: ts - next() % 50,
            }
        })
        .collect()
}

fn patterns() -> Vec<Arc<cep::Nfa<Login>>> {
    let strict = Pattern::<Login>::begin("fail")
        .where_(|e| e.fail)
        .times(3)
        .consecutive()
        .within(Duration::from_secs(2))
        .compile("strict")
        .unwrap();
    let relaxed = Pattern::<Login>::begin("first")
        .where_(|e| e.fail)
        .followed_by("second")
        .where_(|e| e.fail)
        .within(Duration::from_millis(700))
        .compile("relaxed")
        .unwrap();
    vec![Arc::new(strict), Arc::new(relaxed)]
}

/// An output as comparable text: kind, pattern, key, timestamp and the events' times by stage.
fn text(o: &Output<String, Login>) -> String {
    let stages: Vec<String> = o
        .events
        .iter()
        .map(|(stage, evs)| {
            let ts: Vec<String> = evs.iter().map(|e| e.ts.to_string()).collect();
            format!("{stage}={}", ts.join(","))
        })
        .collect();
    format!(
        "{:?} {} {} {} {}",
        o.kind,
        o.pattern,
        o.key,
        o.timestamp,
        stages.join(" ")
    )
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[test]
fn the_cep_operator_runs_on_the_dataflow() {
    let events = logins();
    let mut by_hand = CepOperator::new(patterns());
    let mut want = Vec::new();
    for e in &events {
        by_hand.process_element(e.user.clone(), e.clone(), e.ts, &mut want);
    }
    by_hand.advance_watermark(i64::MAX, &mut want);
    let want = sorted(want.iter().map(text).collect());
    assert!(want.iter().any(|w| w.starts_with("Match")), "{want:?}");
    assert!(want.iter().any(|w| w.starts_with("Timeout")), "{want:?}");

    for workers in [1, 3] {
        let flow = Dataflow::new().with_parallelism(workers);
        let got = flow
            .from_iter(events.clone())
            .assign_timestamps_and_watermarks(
                WatermarkStrategy::for_bounded_out_of_orderness(50)
                    .with_timestamp_assigner(|e: &Login| e.ts),
            )
            .key_by(|e: &Login| e.user.clone())
            .operator(cep::dataflow::operator(patterns()))
            .collect()
            .unwrap();
        for (o, ts) in got.records.iter().zip(&got.timestamps) {
            assert_eq!(o.timestamp, *ts, "outputs carry their own time");
            assert_ne!(o.kind, OutputKind::Late, "no event is late at this bound");
        }
        let got = sorted(got.records.iter().map(text).collect());
        assert_eq!(got, want, "{workers} worker(s)");
    }
}
