//! Streaming runtime with Apache Flink's model of time.
//!
//! # Tour
//!
//! - [`time`]: the shared vocabulary. [`Timestamp`] is `i64` milliseconds; [`Watermark`] is
//!   `EventTime(t)` or `Idle`; [`WatermarkStrategy`] builds per-input watermark generators
//!   (monotonous, bounded out-of-orderness, punctuated, with idleness); [`WatermarkHolder`] combines
//!   inputs by taking the minimum over the non-idle ones. Clocks are injectable ([`ManualClock`]).
//! - [`state`]: keyed state. [`StateBackend`] is a byte-level ordered map (get/put/append/delete,
//!   prefix scans, snapshot/restore); [`MemoryBackend`] is the in-memory one, [`RocksDbBackend`]
//!   the on-disk one (`append` is a merge operator), chosen per job with
//!   `Dataflow::with_state_backend`. Typed handles ([`ValueState`], [`ListState`], [`MapState`], [`ReducingState`],
//!   [`AggregatingState`]) encode with serde/MessagePack under the current key of a [`KeyedStateStore`].
//! - [`timers`]: [`TimerService`], event-time and processing-time timers per key and namespace,
//!   each domain in a binary min-heap (with a per-key map of the live timers, which coalesces
//!   duplicates), fired in timestamp order without scanning keys.
//! - [`process`]: [`KeyedProcessFunction`], called per element and per timer with a [`Context`]
//!   (key, state, timers, watermark, side outputs).
//! - [`window`]: Flink's windows: tumbling, sliding, session and global assigners, triggers, reduce /
//!   aggregate / process contents, allowed lateness and a late-data side output.
//! - [`operator`]: the [`Operator`] trait those operators implement, [`OutputTag`] and
//!   [`SideOutputs`].
//! - [`dataflow`]: the job API, `source -> assign_timestamps_and_watermarks -> key_by -> process /
//!   window -> sink`, run synchronously by pushing; [`parallel`] runs keyed operators on worker
//!   threads. [`io`] reads and writes JSON lines.
//!
//! # Example
//!
//! Count events per key, emitting each count one second (event time) after the key's last event:
//!
//! ```
//! use cep_runtime::{Context, Dataflow, KeyedProcessFunction, Result, ValueState, WatermarkStrategy};
//!
//! #[derive(Clone)]
//! struct CountWithTimeout(ValueState<(u64, i64)>);
//!
//! impl KeyedProcessFunction<String, (String, i64), (String, u64)> for CountWithTimeout {
//!     fn process_element(&mut self, e: (String, i64), ctx: &mut Context<'_, String, (String, u64)>) -> Result<()> {
//!         let (n, _) = self.0.get(ctx.state())?.unwrap_or((0, 0));
//!         self.0.update(ctx.state(), &(n + 1, e.1))?;
//!         ctx.register_event_time_timer(e.1 + 1000);
//!         Ok(())
//!     }
//!     fn on_timer(&mut self, ts: i64, ctx: &mut Context<'_, String, (String, u64)>) -> Result<()> {
//!         match self.0.get(ctx.state())? {
//!             Some((n, last)) if ts == last + 1000 => {
//!                 let key = ctx.key().clone();
//!                 ctx.collect((key, n));
//!             }
//!             _ => {}
//!         }
//!         Ok(())
//!     }
//! }
//!
//! let events = vec![("a".to_string(), 0), ("b".to_string(), 100), ("a".to_string(), 500)];
//! let out = Dataflow::new()
//!     .with_parallelism(1)
//!     .from_iter(events)
//!     .assign_timestamps_and_watermarks(
//!         WatermarkStrategy::for_monotonous_timestamps().with_timestamp_assigner(|e: &(String, i64)| e.1),
//!     )
//!     .key_by(|e: &(String, i64)| e.0.clone())
//!     .process(CountWithTimeout(ValueState::new("count")))
//!     .collect()?;
//! assert_eq!(out.records, vec![("b".to_string(), 1), ("a".to_string(), 2)]);
//! # Ok::<(), cep_runtime::Error>(())
//! ```
#![warn(missing_docs)]

pub mod dataflow;
pub mod error;
pub mod io;
pub mod kafka;
pub mod operator;
pub mod parallel;
pub mod process;
pub mod state;
pub mod time;
pub mod timers;
pub mod window;

pub use dataflow::{Collected, Dataflow, KeyedStream, Sink, Stream, VecSink, WindowedStream};
pub use error::{Error, Result};
pub use io::JsonLinesSink;
pub use operator::{Key, Operator, OperatorSnapshot, Output, OutputTag, SideOutputs};
pub use process::{Context, KeyedProcessFunction, KeyedProcessOperator};
pub use state::{
    AggregateFunction, AggregatingState, KeyedStateStore, ListState, MapState, MemoryBackend,
    ReducingState, RocksDbBackend, Snapshot, StateBackend, ValueState,
};
pub use time::{
    is_late, Clock, ManualClock, SystemClock, Timestamp, Watermark, WatermarkGenerator,
    WatermarkHolder, WatermarkStrategy, MAX_WATERMARK, MIN_WATERMARK,
};
pub use timers::{TimeDomain, Timer, TimerService};
pub use window::{
    CountTrigger, EventTimeTrigger, GlobalWindow, GlobalWindows, ProcessingTimeTrigger,
    PurgingTrigger, SessionWindows, SlidingWindows, TimeWindow, Trigger, TriggerContext,
    TriggerResult, TumblingWindows, Window, WindowAssigner,
};
