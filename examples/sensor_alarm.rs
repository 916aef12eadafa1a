//! Run with: cargo run --example sensor_alarm
//!
//! Sensor alarms, the other classic CEP demo. Four sensors report a temperature every 2 s for two
//! minutes; readings arrive up to 1 s out of order. Per sensor, in event time:
//!
//! - (a) `rising`: the temperature rises at every reading, 3 times in a row, within 10 s (a base
//!   reading, then 3 strictly consecutive readings each warmer than the one before: an iterative
//!   condition that looks at the readings already matched);
//! - (b) `hot`: the 10 s tumbling-window average is above 30 °C in 3 consecutive windows. The
//!   runtime's `WindowOperator` computes the averages; each window result (timestamped with the
//!   window's end - 1 ms) is an event of a second CEP operator, `times(3).consecutive()` within
//!   30 s, so a missing window (a sensor with no readings for 10 s) breaks the run too;
//! - (c) `silent`: no reading for 30 s after a sensor's last one: a trailing `not_followed_by` with
//!   a 30 s window, reported when event time passes the end of the window;
//! - (d) readings below freezing go to the side output `freezing`.
//!
//! The stream is not closed at the end (as for a live source), so sensors are not reported silent
//! just because the demo stops. JSON versions of (a), (c) and (d) are in `examples/patterns/sensor/`,
//! and the whole demo, (b) by a window stage, is one JSON pipeline:
//! `examples/pipelines/sensor_alarm.json`. `--events` prints the readings in arrival order as JSON
//! lines instead, for `cep run` and the service.

mod common;

use std::sync::Arc;
use std::time::Duration;

use cep::{AfterMatchSkip, CepOperator, Context, Output as CepOutput, OutputKind, Pattern};
use cep_runtime::window::{AggregateContents, TimeWindow, WindowOperator, WindowSpec};
use cep_runtime::{
    AggregateFunction, MemoryBackend, Operator, Output, OutputTag, SideOutputs, SystemClock,
    TumblingWindows,
};
use common::{arrival_order, clock, SplitMix64, Watermarks, T0};
use serde::{Deserialize, Serialize};

/// One temperature reading.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Reading {
    sensor: String,
    ts: i64,
    temp: f64,
}

/// The average temperature of one sensor over one window.
#[derive(Debug, Clone)]
struct WindowAvg {
    sensor: String,
    start: i64,
    end: i64,
    avg: f64,
}

/// Averages the temperatures of a window.
struct AvgTemp;

impl AggregateFunction for AvgTemp {
    type In = Reading;
    type Acc = (f64, u32);
    type Out = f64;
    fn create_accumulator(&self) -> (f64, u32) {
        (0.0, 0)
    }
    fn add(&self, r: Reading, acc: &mut (f64, u32)) {
        acc.0 += r.temp;
        acc.1 += 1;
    }
    fn get_result(&self, acc: &(f64, u32)) -> f64 {
        acc.0 / f64::from(acc.1.max(1))
    }
    fn merge(&self, a: (f64, u32), b: (f64, u32)) -> (f64, u32) {
        (a.0 + b.0, a.1 + b.1)
    }
}

const OUT_OF_ORDERNESS_MS: i64 = 1000;
const HOT_AVG: f64 = 30.0;
const WINDOW_MS: i64 = 10_000;

/// The readings in event-time order. Each sensor reports every 2 s (sensor n at n * 0.5 s past
/// the even second), zigzagging by 0.2 °C so that it never rises twice in a row by itself:
/// - s1 rises 3 times in a row at 42, 44 and 46 s;
/// - s2 is above 30 °C from 30 s to 70 s: 4 hot windows;
/// - s3 is silent from 49 s (its last reading) to 91 s;
/// - s4 goes below freezing at 61.5 and 63.5 s.
fn readings() -> Vec<Reading> {
    let mut all = Vec::new();
    for i in 0..60i64 {
        let zig = if i % 2 == 0 { 0.0 } else { 0.2 };
        for (n, sensor) in ["s1", "s2", "s3", "s4"].iter().enumerate() {
            let t_ms = i * 2000 + n as i64 * 500;
            let temp = match *sensor {
                "s1" => match i {
                    20 => 21.0,
                    21 => 21.6,
                    22 => 22.3,
                    23 => 23.1,
                    _ => 21.0 + zig,
                },
                "s2" if (30_000..70_000).contains(&t_ms) => 32.0 - zig,
                "s2" => 25.0 + zig,
                "s3" if (49_001..91_000).contains(&t_ms) => continue,
                "s3" => 22.0 + zig,
                _ => match i {
                    30 => -0.5,
                    31 => -1.5,
                    _ => 2.0 + zig,
                },
            };
            all.push(Reading {
                sensor: sensor.to_string(),
                ts: T0 + t_ms,
                temp,
            });
        }
    }
    all
}

/// An alarm, to be printed in time order.
struct Alarm {
    ts: i64,
    kind: &'static str,
    sensor: String,
    text: String,
}

fn main() -> anyhow::Result<()> {
    // (a) and (c), over the readings.
    let rising = Pattern::<Reading>::begin_with_skip("base", AfterMatchSkip::SkipPastLastEvent)
        .next("rise")
        .where_ctx(|r: &Reading, ctx: &Context<'_, Reading>| {
            let previous = ctx
                .events("rise")
                .last()
                .or_else(|| ctx.events("base").last());
            previous.is_some_and(|p| r.temp > p.temp)
        })
        .times(3)
        .consecutive()
        .within(Duration::from_secs(10))
        .compile("rising")?;
    let silent = Pattern::<Reading>::begin("last")
        .not_followed_by("next")
        .within(Duration::from_secs(30))
        .compile("silent")?;
    let mut readings_cep = CepOperator::new(vec![Arc::new(rising), Arc::new(silent)]);

    // (b): a tumbling-window average per sensor, feeding a pattern over the window results.
    let averages = AggregateContents::new(AvgTemp, |sensor: &String, w: &TimeWindow, avg: f64| {
        WindowAvg {
            sensor: sensor.clone(),
            start: w.start,
            end: w.end,
            avg,
        }
    });
    let mut windows = WindowOperator::new(
        WindowSpec::new(TumblingWindows::event_time(WINDOW_MS)?),
        Arc::new(averages),
        Box::new(MemoryBackend::new()),
        Arc::new(SystemClock),
    );
    let hot = Pattern::<WindowAvg>::begin_with_skip("hot", AfterMatchSkip::SkipPastLastEvent)
        .where_(|w| w.avg > HOT_AVG)
        .times(3)
        .consecutive()
        .within(Duration::from_millis(3 * WINDOW_MS as u64))
        .compile("hot")?;
    let mut windows_cep = CepOperator::new(vec![Arc::new(hot)]);

    // (d): the side output.
    let freezing = OutputTag::<Reading>::new("freezing");
    let mut side = SideOutputs::new();

    let all = readings();
    let sensors = 4;
    let mut rng = SplitMix64::new(11);
    let arrivals = arrival_order(
        all.into_iter().map(|r| (r.ts, r)).collect(),
        OUT_OF_ORDERNESS_MS,
        &mut rng,
    );
    if std::env::args().any(|a| a == "--events") {
        for r in &arrivals {
            println!("{}", serde_json::to_string(r)?);
        }
        return Ok(());
    }
    println!(
        "Sensor-alarm demo: {} readings of {sensors} sensors, up to {} ms out of order; watermark = largest timestamp seen - {} ms.\n",
        arrivals.len(),
        OUT_OF_ORDERNESS_MS - 1,
        OUT_OF_ORDERNESS_MS + 1
    );

    let mut watermarks = Watermarks::new(OUT_OF_ORDERNESS_MS);
    let mut alarms = Vec::new();
    let mut cep_out = Vec::new();
    let mut window_out = Vec::new();
    let mut avg_out = Vec::new();
    let mut last_wm = i64::MIN;
    for r in arrivals {
        let ts = r.ts;
        if r.temp < 0.0 {
            side.emit(&freezing, r.clone());
        }
        let sensor = r.sensor.clone();
        readings_cep.process_element(sensor.clone(), r.clone(), ts, &mut cep_out);
        windows.process_element(
            ts,
            (sensor, r),
            &mut Output {
                records: &mut window_out,
                side: &mut side,
            },
        )?;
        let wm = watermarks.on_event(ts);
        if wm > last_wm {
            last_wm = wm;
            windows.process_watermark(
                wm,
                &mut Output {
                    records: &mut window_out,
                    side: &mut side,
                },
            )?;
            // A window result is timestamped with its window's end - 1 ms, ahead of the watermark
            // that fired it, so the pattern sees it in event time like any other event.
            for (at, avg) in window_out.drain(..) {
                windows_cep.process_element(avg.sensor.clone(), avg, at, &mut avg_out);
            }
            windows_cep.advance_watermark(wm, &mut avg_out);
            readings_cep.advance_watermark(wm, &mut cep_out);
        }
        collect(&mut cep_out, &mut avg_out, &mut alarms);
    }

    alarms.sort_by(|a, b| (a.ts, &a.sensor).cmp(&(b.ts, &b.sensor)));
    for a in &alarms {
        println!(
            "ALARM {:<6} {} at {}: {}",
            a.kind,
            a.sensor,
            clock(a.ts),
            a.text
        );
    }
    println!();
    let frozen = side.take(&freezing);
    println!("Side output `freezing`: {} readings", frozen.len());
    for r in &frozen {
        println!("    {} at {}: {:.1} °C", r.sensor, clock(r.ts), r.temp);
    }
    println!(
        "Stopped at watermark {}: {} alarms.",
        clock(last_wm),
        alarms.len()
    );
    Ok(())
}

fn collect(
    cep_out: &mut Vec<CepOutput<String, Reading>>,
    avg_out: &mut Vec<CepOutput<String, WindowAvg>>,
    alarms: &mut Vec<Alarm>,
) {
    for o in cep_out.drain(..) {
        if o.kind != OutputKind::Match {
            continue;
        }
        let temps = |stage: &str| -> Vec<&Reading> {
            o.events
                .iter()
                .filter(|(name, _)| &**name == stage)
                .flat_map(|(_, evs)| evs.iter().map(|e| &**e))
                .collect()
        };
        let (kind, text) = if o.pattern == 0 {
            let chain: Vec<String> = temps("base")
                .into_iter()
                .chain(temps("rise"))
                .map(|r| format!("{:.1}", r.temp))
                .collect();
            ("rising", format!("{} °C", chain.join(" -> ")))
        } else {
            let last = temps("last")[0].ts;
            ("silent", format!("no reading since {}", clock(last)))
        };
        alarms.push(Alarm {
            ts: o.timestamp,
            kind,
            sensor: o.key,
            text,
        });
    }
    for o in avg_out.drain(..) {
        if o.kind != OutputKind::Match {
            continue;
        }
        let windows: Vec<&WindowAvg> = o
            .events
            .iter()
            .flat_map(|(_, ws)| ws.iter().map(|w| &**w))
            .collect();
        let avgs: Vec<String> = windows.iter().map(|w| format!("{:.2}", w.avg)).collect();
        let text = format!(
            "10 s averages {} °C ({} to {})",
            avgs.join(", "),
            clock(windows[0].start),
            clock(windows[windows.len() - 1].end)
        );
        alarms.push(Alarm {
            ts: o.timestamp,
            kind: "hot",
            sensor: o.key,
            text,
        });
    }
}
