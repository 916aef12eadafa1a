//! Run with: cargo run --release -p cep-runtime --example throughput [EVENTS] [KEYS]
//!
//! Measures events per second through a keyed tumbling-window reduce and a keyed process function,
//! single-threaded and on all cores. Prints numbers; asserts nothing about time.

use std::time::Instant;

use cep_runtime::{
    Context, Dataflow, KeyedProcessFunction, Result, TumblingWindows, ValueState, WatermarkStrategy,
};

#[derive(Clone)]
struct CountPerKey(ValueState<u64>);

impl KeyedProcessFunction<u64, (u64, i64, f64), u64> for CountPerKey {
    fn process_element(
        &mut self,
        _: (u64, i64, f64),
        ctx: &mut Context<'_, u64, u64>,
    ) -> Result<()> {
        let n = self.0.get(ctx.state())?.unwrap_or(0) + 1;
        self.0.update(ctx.state(), &n)?;
        ctx.register_event_time_timer(i64::MAX - 1);
        Ok(())
    }
    fn on_timer(&mut self, _: i64, ctx: &mut Context<'_, u64, u64>) -> Result<()> {
        let n = self.0.get(ctx.state())?.unwrap_or(0);
        ctx.collect(n);
        Ok(())
    }
}

fn events(n: u64, keys: u64) -> impl Iterator<Item = (u64, i64, f64)> + Send + 'static {
    (0..n).map(move |i| ((i * 2_654_435_761) % keys, i as i64, (i % 100) as f64))
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: u64 = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(2_000_000);
    let keys: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    for parallelism in [1, cores] {
        let env = Dataflow::new()
            .with_parallelism(parallelism)
            .with_watermark_interval(1_000);
        let strategy = || {
            WatermarkStrategy::for_bounded_out_of_orderness(100)
                .with_timestamp_assigner(|e: &(u64, i64, f64)| e.1)
        };

        let start = Instant::now();
        let out = env
            .from_iter(events(n, keys))
            .assign_timestamps_and_watermarks(strategy())
            .key_by(|e: &(u64, i64, f64)| e.0)
            .window(TumblingWindows::event_time(100_000).unwrap())
            .reduce(|a, b| if b.2 < a.2 { b } else { a })
            .collect()
            .unwrap();
        let secs = start.elapsed().as_secs_f64();
        println!(
            "window reduce  p={parallelism}: {n} events, {} results, {:.2} M events/s",
            out.records.len(),
            n as f64 / secs / 1e6
        );

        let start = Instant::now();
        let out = env
            .from_iter(events(n, keys))
            .assign_timestamps_and_watermarks(strategy())
            .key_by(|e: &(u64, i64, f64)| e.0)
            .process(CountPerKey(ValueState::new("n")))
            .collect()
            .unwrap();
        let secs = start.elapsed().as_secs_f64();
        println!(
            "process count  p={parallelism}: {n} events, {} results, {:.2} M events/s",
            out.records.len(),
            n as f64 / secs / 1e6
        );
    }
}
