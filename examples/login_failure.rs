//! Run with: cargo run --example login_failure
//!
//! Login-failure detection, the classic CEP demo, with the Rust DSL. Users' login events (success
//! or failure, with the client's IP) arrive up to 1 s out of order, and one arrives 10 s late.
//! Three rules run per user in event time:
//!
//! - `fails-strict`: 3 failed logins in a row within 2 s (`times(3).consecutive()`: no success in
//!   between);
//! - `fails-relaxed`: 3 failed logins within 2 s, successes in between allowed (`times(3)`);
//! - `fails-3-ips`: failed logins from 3 different IPs within 1 min (an iterative condition: a
//!   failure counts only if its IP is not among the failures already matched).
//!
//! Every rule skips past the last event of a match, so one burst gives one alert. The same rules as
//! JSON patterns are in `examples/patterns/login/`.
//!
//! `--seed N` shuffles the arrival differently (within the same bound); the alerts do not change.
//! `--events` prints the events in arrival order as JSON lines instead, for `cep run`.

mod common;

use std::sync::Arc;
use std::time::Duration;

use cep::{AfterMatchSkip, CepOperator, Context, Nfa, Output, OutputKind, Pattern};
use common::{arrival_order, clock, SplitMix64, Watermarks, T0};

/// One login attempt.
#[derive(Debug, Clone)]
struct Login {
    user: &'static str,
    ip: &'static str,
    ok: bool,
    ts: i64,
}

/// The events, in event-time order: (seconds after 09:00, user, IP, success, extra delay in ms).
const EVENTS: &[(f64, &str, &str, bool, i64)] = &[
    (1.0, "alice", "10.0.0.5", true, 0),
    (5.0, "alice", "10.0.0.5", false, 0),
    (5.8, "alice", "10.0.0.5", true, 0),
    // bob: a brute-force burst from one address, then a success.
    (10.0, "bob", "203.0.113.7", false, 0),
    (10.4, "bob", "203.0.113.7", false, 0),
    (10.9, "bob", "203.0.113.7", false, 0),
    // This fourth failure reaches us 10 s late, behind the watermark: it is reported as late.
    (11.5, "bob", "203.0.113.7", false, 10_000),
    (12.5, "bob", "203.0.113.7", true, 0),
    // carol: three failures within 2 s, but a success in between: only the relaxed rule fires.
    (20.0, "carol", "10.1.1.1", false, 0),
    (20.5, "carol", "10.1.1.1", true, 0),
    (20.9, "carol", "10.1.1.1", false, 0),
    (21.5, "carol", "10.1.1.1", false, 0),
    // dave: three failures, but spread over 2.5 s: no alert.
    (30.0, "dave", "10.2.2.2", false, 0),
    (31.5, "dave", "10.2.2.2", false, 0),
    (32.5, "dave", "10.2.2.2", false, 0),
    (33.0, "alice", "10.0.0.5", true, 0),
    // erin: a slow credential-stuffing run from several addresses (the second .2 does not count).
    (40.0, "erin", "198.51.100.1", false, 0),
    (55.0, "erin", "198.51.100.2", false, 0),
    // frank: a fast distributed attack, three addresses within 1.2 s: every rule fires.
    (60.0, "frank", "192.0.2.10", false, 0),
    (60.7, "frank", "192.0.2.11", false, 0),
    (61.2, "frank", "192.0.2.12", false, 0),
    (70.0, "erin", "198.51.100.2", false, 0),
    (85.0, "erin", "198.51.100.3", false, 0),
    (90.0, "alice", "10.0.0.5", true, 0),
];

/// Events arrive up to this much out of order; the watermark trails the largest timestamp by it.
const OUT_OF_ORDERNESS_MS: i64 = 1000;

fn rules() -> anyhow::Result<Vec<Arc<Nfa<Login>>>> {
    let skip = AfterMatchSkip::SkipPastLastEvent;
    let strict = Pattern::<Login>::begin_with_skip("fail", skip.clone())
        .where_(|e| !e.ok)
        .times(3)
        .consecutive()
        .within(Duration::from_secs(2))
        .compile("fails-strict")?;
    let relaxed = Pattern::<Login>::begin_with_skip("fail", skip.clone())
        .where_(|e| !e.ok)
        .times(3)
        .within(Duration::from_secs(2))
        .compile("fails-relaxed")?;
    let ips = Pattern::<Login>::begin_with_skip("fail", skip)
        // A failure (once per event) from an address not seen yet (per partial match).
        .where_ctx_guarded(
            |e: &Login| !e.ok,
            |e: &Login, ctx: &Context<'_, Login>| ctx.events("fail").all(|seen| seen.ip != e.ip),
        )
        .times(3)
        .within(Duration::from_secs(60))
        .compile("fails-3-ips")?;
    Ok(vec![Arc::new(strict), Arc::new(relaxed), Arc::new(ips)])
}

fn main() -> anyhow::Result<()> {
    // Each event is delayed by less than the bound, plus its extra delay, with a fixed seed.
    let seed = match std::env::args().skip_while(|a| a != "--seed").nth(1) {
        Some(s) => s.parse()?,
        None => 7,
    };
    let mut rng = SplitMix64::new(seed);
    let arrivals: Vec<Login> = arrival_order(
        EVENTS
            .iter()
            .map(|&(s, user, ip, ok, extra)| {
                let ts = T0 + (s * 1000.0).round() as i64;
                (ts + extra, Login { user, ip, ok, ts })
            })
            .collect(),
        OUT_OF_ORDERNESS_MS,
        &mut rng,
    );

    if std::env::args().any(|a| a == "--events") {
        for e in &arrivals {
            let kind = if e.ok { "success" } else { "fail" };
            let line = serde_json::json!({"user": e.user, "ts": e.ts, "type": kind, "ip": e.ip});
            println!("{line}");
        }
        return Ok(());
    }

    let rules = rules()?;
    let names: Vec<String> = rules.iter().map(|n| n.name().to_string()).collect();
    let mut op = CepOperator::new(rules);
    let mut watermarks = Watermarks::new(OUT_OF_ORDERNESS_MS);

    println!(
        "Login-failure demo: {} login events of 6 users; watermark = largest timestamp seen - {} ms.",
        arrivals.len(),
        OUT_OF_ORDERNESS_MS + 1
    );
    println!("Rules: {}.", names.join(", "));
    let mut latest: Option<&Login> = None;
    for e in &arrivals {
        match latest {
            Some(l) if e.ts < l.ts => println!(
                "Out of order: {} {} arrives after {} {}.",
                e.user,
                clock(e.ts),
                l.user,
                clock(l.ts)
            ),
            _ => latest = Some(e),
        }
    }
    println!();

    let (mut alerts, mut late) = (0, 0);
    let mut out = Vec::new();
    for e in arrivals {
        let ts = e.ts;
        op.process_element(e.user, e, ts, &mut out);
        let wm = watermarks.on_event(ts);
        report(&mut out, &names, op.watermark(), &mut alerts, &mut late);
        op.advance_watermark(wm, &mut out);
        report(&mut out, &names, wm, &mut alerts, &mut late);
    }
    // The end of the input: every event still waiting for the watermark is evaluated.
    op.advance_watermark(i64::MAX, &mut out);
    report(&mut out, &names, i64::MAX, &mut alerts, &mut late);
    println!("{alerts} alerts, {late} late event.");
    Ok(())
}

/// Prints the outputs of one step, in time order (outputs of one watermark advance may come in
/// any key order), and counts them. Timed-out partial matches are not alerts: they are skipped.
fn report(
    out: &mut Vec<Output<&'static str, Login>>,
    names: &[String],
    watermark: i64,
    alerts: &mut usize,
    late: &mut usize,
) {
    out.sort_by_key(|o| (o.timestamp, o.pattern, o.key));
    for o in out.drain(..) {
        match o.kind {
            OutputKind::Match => {
                *alerts += 1;
                println!(
                    "ALERT {:<13} user={:<6} at {}",
                    names[o.pattern],
                    o.key,
                    clock(o.timestamp)
                );
                for (_, events) in &o.events {
                    for e in events {
                        println!("    failed login at {} from {}", clock(e.ts), e.ip);
                    }
                }
            }
            OutputKind::Late => {
                *late += 1;
                let e = o.event.expect("a late output carries its event");
                println!(
                    "LATE  user={:<6} {} at {} from {} arrived behind the watermark ({}): not evaluated",
                    o.key,
                    if e.ok { "success" } else { "failure" },
                    clock(e.ts),
                    e.ip,
                    clock(watermark)
                );
            }
            OutputKind::Timeout => {}
        }
    }
}
