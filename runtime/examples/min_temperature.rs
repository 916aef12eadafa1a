//! Run with: cargo run -p cep-runtime --example min_temperature < readings.jsonl
//!
//! Reads sensor readings as JSON lines from stdin, e.g. `{"sensor":"s1","ts":1000,"temp":21.5}`,
//! and writes the minimum temperature per sensor over 15-second tumbling event-time windows as JSON
//! lines to stdout. Readings may be up to 5 seconds out of order; later ones are reported on stderr.

use cep_runtime::window::TimeWindow;
use cep_runtime::{Dataflow, JsonLinesSink, OutputTag, TumblingWindows, WatermarkStrategy};
use serde_json::{json, Value};

fn main() -> anyhow_free::Result {
    let late = OutputTag::<Value>::new("late");
    let mut side = Dataflow::new()
        .from_stdin()
        .assign_timestamps_and_watermarks(
            WatermarkStrategy::for_bounded_out_of_orderness(5_000)
                .with_timestamp_assigner(|v: &Value| v["ts"].as_i64().unwrap_or(0)),
        )
        .key_by(|v: &Value| v["sensor"].as_str().unwrap_or("").to_string())
        .window(TumblingWindows::event_time(15_000)?)
        .side_output_late_data(late.clone())
        .aggregate_with(MinTemp, |sensor: &String, w: &TimeWindow, min: Option<f64>| {
            json!({"sensor": sensor, "window_start": w.start, "window_end": w.end, "min_temp": min})
        })
        .sink(JsonLinesSink::stdout())?;
    for v in side.take(&late) {
        eprintln!("late: {v}");
    }
    Ok(())
}

struct MinTemp;

impl cep_runtime::AggregateFunction for MinTemp {
    type In = Value;
    type Acc = Option<f64>;
    type Out = Option<f64>;
    fn create_accumulator(&self) -> Option<f64> {
        None
    }
    fn add(&self, v: Value, acc: &mut Option<f64>) {
        if let Some(t) = v["temp"].as_f64() {
            *acc = Some(acc.map_or(t, |m| m.min(t)));
        }
    }
    fn get_result(&self, acc: &Option<f64>) -> Option<f64> {
        *acc
    }
    fn merge(&self, a: Option<f64>, b: Option<f64>) -> Option<f64> {
        match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// `anyhow` is not a dependency of this crate; the runtime's own error is enough here.
mod anyhow_free {
    pub type Result = std::result::Result<(), cep_runtime::Error>;
}
