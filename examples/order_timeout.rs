//! Run with: cargo run --example order_timeout
//!
//! Orders are created and then paid, or not. The pattern `order-paid` (per order: `created`, then
//! `paid` within 15 minutes) puts paid orders on the main output; an order not paid in time is a
//! timed-out partial match, which goes to the side output `unpaid`. Timeouts are fired by the
//! watermark: another order's event moves event time past the 15 minutes; no further event of the
//! unpaid order is needed. A payment after the timeout matches nothing.
//!
//! The same pattern as JSON is `examples/patterns/order/order-paid.json`. `--events` prints the
//! events as JSON lines instead, for `cep run`.

mod common;

use std::sync::Arc;
use std::time::Duration;

use cep::{CepOperator, OutputKind, Pattern};
use common::{clock, span, Watermarks, T0};

/// What happened to an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Created,
    Paid,
}

/// One order event.
#[derive(Debug, Clone)]
struct OrderEvent {
    kind: Kind,
    amount_cents: i64,
    ts: i64,
}

/// The events as they arrive: (minutes:seconds after 09:00, order, kind, amount in cents).
const EVENTS: &[(&str, &str, Kind, i64)] = &[
    ("00:00", "o-1", Kind::Created, 4250),
    ("02:00", "o-2", Kind::Created, 1999),
    ("05:30", "o-1", Kind::Paid, 4250),
    ("08:00", "o-3", Kind::Created, 700),
    ("12:00", "o-4", Kind::Created, 12000),
    ("14:00", "o-2", Kind::Paid, 1999),
    ("20:00", "o-5", Kind::Created, 6400),
    ("25:00", "o-6", Kind::Created, 1500),
    ("28:00", "o-7", Kind::Created, 3300),
    ("29:00", "o-4", Kind::Paid, 12000),
    ("31:00", "o-6", Kind::Paid, 1500),
    ("36:00", "o-8", Kind::Created, 900),
    ("37:00", "o-8", Kind::Paid, 900),
    ("45:00", "o-9", Kind::Created, 2500),
];

/// Payments may reach us this late relative to order creations (bounded out-of-orderness).
const OUT_OF_ORDERNESS_MS: i64 = 5000;

fn money(cents: i64) -> String {
    format!("{}.{:02}", cents / 100, cents % 100)
}

fn main() -> anyhow::Result<()> {
    let events = EVENTS
        .iter()
        .map(|&(at, order, kind, amount_cents)| {
            let (m, s) = at.split_once(':').expect("mm:ss");
            let ts = T0 + (m.parse::<i64>()? * 60 + s.parse::<i64>()?) * 1000;
            Ok((ts, order, kind, amount_cents))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    if std::env::args().any(|a| a == "--events") {
        for &(ts, order, kind, amount_cents) in &events {
            let kind = if kind == Kind::Created {
                "created"
            } else {
                "paid"
            };
            let amount = amount_cents as f64 / 100.0;
            let line =
                serde_json::json!({"order": order, "ts": ts, "type": kind, "amount": amount});
            println!("{line}");
        }
        return Ok(());
    }

    let window = Duration::from_secs(15 * 60);
    let paid_in_time = Pattern::<OrderEvent>::begin("created")
        .where_(|e| e.kind == Kind::Created)
        .followed_by("paid")
        .where_(|e| e.kind == Kind::Paid)
        .within(window)
        .compile("order-paid")?;
    let mut op = CepOperator::new(vec![Arc::new(paid_in_time)]);
    let mut watermarks = Watermarks::new(OUT_OF_ORDERNESS_MS);

    println!(
        "Order-timeout demo: pattern `order-paid` = created, then paid within {} (per order).",
        span(window.as_millis() as i64)
    );
    println!(
        "Watermark = largest timestamp seen - {} ms; unpaid orders go to the side output `unpaid`.\n",
        OUT_OF_ORDERNESS_MS + 1
    );

    let (mut paid, mut unpaid) = (Vec::new(), Vec::new());
    let mut out = Vec::new();
    for &(ts, order, kind, amount_cents) in &events {
        let e = OrderEvent {
            kind,
            amount_cents,
            ts,
        };
        match kind {
            Kind::Created => println!("{}  {order} created, {}", clock(ts), money(amount_cents)),
            Kind::Paid => println!("{}  {order} paid", clock(ts)),
        }
        op.process_element(order, e, ts, &mut out);
        let wm = watermarks.on_event(ts);
        op.advance_watermark(wm, &mut out);
        // Outputs of one watermark advance may come in any key order: show them in time order.
        out.sort_by_key(|o| (o.timestamp, o.key));
        for o in out.drain(..) {
            let first = |stage: &str| {
                o.events
                    .iter()
                    .find(|(name, _)| &**name == stage)
                    .and_then(|(_, evs)| evs.first().cloned())
            };
            let created = first("created").expect("every partial match starts with `created`");
            match o.kind {
                OutputKind::Match => {
                    let p = first("paid").expect("a match has its payment");
                    println!(
                        "              -> PAID     {} after {} (watermark {})",
                        o.key,
                        span(p.ts - created.ts),
                        clock(wm)
                    );
                    paid.push(o.key);
                }
                OutputKind::Timeout => {
                    println!(
                        "              -> UNPAID   {} created {}, {}: no payment by {} (watermark {}, side output)",
                        o.key,
                        clock(created.ts),
                        money(created.amount_cents),
                        clock(o.timestamp),
                        clock(wm)
                    );
                    unpaid.push(o.key);
                }
                OutputKind::Late => println!("              -> LATE     {}", o.key),
            }
        }
    }
    println!();
    println!("Main output (paid in time): {}", paid.join(", "));
    println!("Side output `unpaid`: {}", unpaid.join(", "));
    // The stream stays open: what is still held waits for event time to move on.
    let held = op.stats();
    println!(
        "Still held: {} event(s) waiting for the watermark, {} partial match(es).",
        held.queued_events, held.partial_matches
    );
    Ok(())
}
