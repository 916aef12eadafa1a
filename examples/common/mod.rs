//! Code shared by the demos: a seeded random generator, clock formatting, out-of-order arrival,
//! the watermark of a bounded out-of-orderness source, and Kafka helpers ([`kafka`]).
//!
//! Each demo compiles this module on its own and uses only part of it.
#![allow(dead_code)]

pub mod kafka;

use cep_runtime::time::BoundedOutOfOrderness;
use cep_runtime::{Watermark, WatermarkGenerator};

/// 2026-01-01T09:00:00Z in epoch milliseconds: the demos' clock starts here.
pub const T0: i64 = 1_767_258_000_000;

/// SplitMix64: a tiny seeded generator, so that every run produces the same data.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator with the given seed.
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// A number in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The time of day of an epoch-milliseconds timestamp, `HH:MM:SS.mmm` (UTC).
pub fn clock(ms: i64) -> String {
    let day_ms = ms.rem_euclid(86_400_000);
    let (h, m, s, milli) = (
        day_ms / 3_600_000,
        day_ms / 60_000 % 60,
        day_ms / 1000 % 60,
        day_ms % 1000,
    );
    format!("{h:02}:{m:02}:{s:02}.{milli:03}")
}

/// A duration in milliseconds, written `2m30s`, `1.5s`, `800ms`.
pub fn span(ms: i64) -> String {
    if ms >= 60_000 {
        let (m, s) = (ms / 60_000, ms % 60_000);
        if s == 0 {
            format!("{m}m")
        } else {
            format!("{m}m{}", span(s))
        }
    } else if ms >= 1000 {
        if ms % 1000 == 0 {
            format!("{}s", ms / 1000)
        } else {
            format!("{}s", ms as f64 / 1000.0)
        }
    } else {
        format!("{ms}ms")
    }
}

/// The order in which events arrive when each, sent at time `at`, is delayed by a random amount
/// below `max_delay` ms: sorted by `at + delay` (ties keep the original order). With `at` the
/// event's timestamp, no event arrives `max_delay` ms or more behind a later one.
pub fn arrival_order<T>(events: Vec<(i64, T)>, max_delay: i64, rng: &mut SplitMix64) -> Vec<T> {
    let mut delayed: Vec<(i64, usize, T)> = events
        .into_iter()
        .enumerate()
        .map(|(i, (at, e))| {
            let delay = if max_delay > 0 {
                rng.below(max_delay as u64) as i64
            } else {
                0
            };
            (at + delay, i, e)
        })
        .collect();
    delayed.sort_by_key(|(at, i, _)| (*at, *i));
    delayed.into_iter().map(|(_, _, e)| e).collect()
}

/// The watermark of a source whose events are at most `bound` ms out of order, as Flink's
/// `BoundedOutOfOrderness` computes it: the largest timestamp seen - `bound` - 1.
pub struct Watermarks(BoundedOutOfOrderness);

impl Watermarks {
    /// Watermarks for events at most `bound` ms out of order.
    pub fn new(bound: i64) -> Self {
        Watermarks(BoundedOutOfOrderness::new(bound))
    }

    /// Sees an event with timestamp `ts`; returns the watermark after it.
    pub fn on_event(&mut self, ts: i64) -> i64 {
        WatermarkGenerator::<()>::on_event(&mut self.0, &(), ts);
        match WatermarkGenerator::<()>::on_periodic_emit(&mut self.0) {
            Some(Watermark::EventTime(w)) => w,
            _ => i64::MIN,
        }
    }
}
