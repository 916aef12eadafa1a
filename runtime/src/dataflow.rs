//! A small synchronous dataflow API: source -> timestamps and watermarks -> `key_by` -> keyed
//! operators (process functions, windows) -> sinks.
//!
//! A [`Stream`] is a recipe: nothing runs until a terminal call ([`Stream::collect`],
//! [`Stream::sink`]). Running builds a push-based chain of nodes, from the sink back to the source,
//! and the source then pushes records, watermarks and finally the end of input through it. Keyed
//! operators run on one thread, or on [`Dataflow::with_parallelism`] worker threads with keys
//! hash-partitioned over them (see [`crate::parallel`]).
//!
//! ```
//! use cep_runtime::{Dataflow, TumblingWindows, WatermarkStrategy};
//!
//! // Minimum temperature per sensor over 10 ms tumbling event-time windows.
//! let readings = vec![("a", 1, 20), ("b", 2, 15), ("a", 5, 18), ("a", 12, 25)];
//! let out = Dataflow::new()
//!     .with_parallelism(1)
//!     .from_iter(readings)
//!     .assign_timestamps_and_watermarks(
//!         WatermarkStrategy::for_monotonous_timestamps().with_timestamp_assigner(|r: &(&str, i64, i32)| r.1),
//!     )
//!     .map(|(s, t, v)| (s.to_string(), t, v))
//!     .key_by(|r: &(String, i64, i32)| r.0.clone())
//!     .window(TumblingWindows::event_time(10).unwrap())
//!     .reduce(|a, b| if b.2 < a.2 { b } else { a })
//!     .collect()
//!     .unwrap();
//! assert_eq!(
//!     out.records,
//!     vec![("a".to_string(), 5, 18), ("b".to_string(), 2, 15), ("a".to_string(), 12, 25)]
//! );
//! ```

use std::hash::Hash;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::Result;
use crate::operator::{Key, Operator, Output, OutputTag, SideOutputs};
use crate::parallel::ParallelNode;
use crate::process::{KeyedProcessFunction, KeyedProcessOperator};
use crate::state::{AggregateFunction, MemoryBackend, StateBackend};
use crate::time::{
    Clock, SystemClock, Timestamp, Watermark, WatermarkEmitter, WatermarkHolder, WatermarkStrategy,
    MAX_WATERMARK, MIN_WATERMARK,
};
use crate::window::{
    AggregateContents, CountTrigger, GlobalWindows, ListContents, ProcessWindowFunction,
    PurgingTrigger, ReduceContents, Trigger, WindowAssigner, WindowContents, WindowOperator,
    WindowSpec,
};

/// Where a running chain sends side outputs.
#[derive(Debug, Default)]
pub struct RunContext {
    /// Side outputs collected so far.
    pub side_outputs: SideOutputs,
}

/// One node of a running chain: receives records, watermarks and the end of input.
pub trait Push<T>: Send {
    /// A record with its timestamp ([`MIN_WATERMARK`] if it has none yet).
    fn push(&mut self, timestamp: Timestamp, value: T, cx: &mut RunContext) -> Result<()>;
    /// A watermark (only advancing ones, and idleness changes).
    fn watermark(&mut self, watermark: Watermark, cx: &mut RunContext) -> Result<()>;
    /// Processing time moved on without input (an idle live source): emit periodic watermarks,
    /// fire due processing-time timers, flush batches, and pass the tick on.
    fn tick(&mut self, cx: &mut RunContext) -> Result<()>;
    /// The end of input; comes after the final watermark.
    fn finish(&mut self, cx: &mut RunContext) -> Result<()>;
}

/// Consumes a stream's records (Flink's `SinkFunction`).
pub trait Sink<T>: Send {
    /// Writes one record.
    fn write(&mut self, timestamp: Timestamp, value: T) -> Result<()>;
    /// Called at the end of input.
    fn finish(&mut self) -> Result<()> {
        Ok(())
    }
}

struct SinkNode<S>(S);

impl<T, S: Sink<T>> Push<T> for SinkNode<S> {
    fn push(&mut self, timestamp: Timestamp, value: T, _: &mut RunContext) -> Result<()> {
        self.0.write(timestamp, value)
    }
    fn watermark(&mut self, _: Watermark, _: &mut RunContext) -> Result<()> {
        Ok(())
    }
    fn tick(&mut self, _: &mut RunContext) -> Result<()> {
        Ok(())
    }
    fn finish(&mut self, _: &mut RunContext) -> Result<()> {
        self.0.finish()
    }
}

/// Collects records with their timestamps into a shared vector; keep a clone to read them after
/// the job ran.
#[derive(Debug)]
pub struct VecSink<T>(Arc<Mutex<Vec<(Timestamp, T)>>>);

impl<T> Clone for VecSink<T> {
    fn clone(&self) -> Self {
        VecSink(self.0.clone())
    }
}

impl<T> Default for VecSink<T> {
    fn default() -> Self {
        VecSink(Arc::new(Mutex::new(Vec::new())))
    }
}

impl<T> VecSink<T> {
    /// An empty sink.
    pub fn new() -> Self {
        Self::default()
    }

    /// Removes and returns what was collected so far.
    pub fn take(&self) -> Vec<(Timestamp, T)> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl<T: Send> Sink<T> for VecSink<T> {
    fn write(&mut self, timestamp: Timestamp, value: T) -> Result<()> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((timestamp, value));
        Ok(())
    }
}

/// Calls a closure per record.
pub struct FnSink<F>(pub F);

impl<T, F: FnMut(Timestamp, T) -> Result<()> + Send> Sink<T> for FnSink<F> {
    fn write(&mut self, timestamp: Timestamp, value: T) -> Result<()> {
        (self.0)(timestamp, value)
    }
}

/// What a finished job produced: main-output records (with timestamps) and side outputs.
#[derive(Debug)]
pub struct Collected<T> {
    /// Main-output records in arrival order.
    pub records: Vec<T>,
    /// The timestamps of `records`, index for index.
    pub timestamps: Vec<Timestamp>,
    /// Side outputs by tag.
    pub side_outputs: SideOutputs,
}

impl<T> Collected<T> {
    /// Removes and returns a side output.
    pub fn side_output<U: Send + 'static>(&mut self, tag: &OutputTag<U>) -> Vec<U> {
        self.side_outputs.take(tag)
    }
}

type BackendFactory = Arc<dyn Fn() -> Box<dyn StateBackend> + Send + Sync>;

/// The job environment: parallelism, clock, state backend and watermark cadence. Sources are created
/// from it.
#[derive(Clone)]
pub struct Dataflow {
    pub(crate) parallelism: usize,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) backend: BackendFactory,
    pub(crate) watermark_interval: usize,
    pub(crate) batch_size: usize,
}

impl Default for Dataflow {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Dataflow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dataflow")
            .field("parallelism", &self.parallelism)
            .field("clock", &self.clock)
            .field("watermark_interval", &self.watermark_interval)
            .finish()
    }
}

impl Dataflow {
    /// Parallelism = available cores, the system clock, in-memory state, a periodic watermark after
    /// every event.
    pub fn new() -> Self {
        Dataflow {
            parallelism: std::thread::available_parallelism().map_or(1, |n| n.get()),
            clock: Arc::new(SystemClock),
            backend: Arc::new(|| Box::new(MemoryBackend::new())),
            watermark_interval: 1,
            batch_size: 1024,
        }
    }

    /// Runs keyed operators on `n` worker threads (1 = on the calling thread).
    pub fn with_parallelism(mut self, n: usize) -> Self {
        self.parallelism = n.max(1);
        self
    }

    /// Reads processing time from `clock` (inject a [`crate::ManualClock`] in tests).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Creates each keyed operator's (each worker's) state backend with `factory`.
    pub fn with_state_backend(
        mut self,
        factory: impl Fn() -> Box<dyn StateBackend> + Send + Sync + 'static,
    ) -> Self {
        self.backend = Arc::new(factory);
        self
    }

    /// Asks watermark generators for a periodic watermark every `n` events (Flink asks every 200 ms
    /// of processing time; counting events keeps runs reproducible). Larger values cost less.
    pub fn with_watermark_interval(mut self, n: usize) -> Self {
        self.watermark_interval = n.max(1);
        self
    }

    /// How many records go to a worker per channel message.
    pub fn with_batch_size(mut self, n: usize) -> Self {
        self.batch_size = n.max(1);
        self
    }

    /// A bounded source over `items`; it ends with a watermark at +infinity.
    pub fn from_iter<T, I>(&self, items: I) -> Stream<T>
    where
        T: Send + 'static,
        I: IntoIterator<Item = T>,
        I::IntoIter: Send + 'static,
    {
        self.from_fallible_iter(items.into_iter().map(Ok))
    }

    /// A bounded source over fallible items; the first error stops the job.
    pub fn from_fallible_iter<T, I>(&self, items: I) -> Stream<T>
    where
        T: Send + 'static,
        I: Iterator<Item = Result<T>> + Send + 'static,
    {
        Stream {
            env: self.clone(),
            run: Box::new(move |mut down, cx| {
                for item in items {
                    down.push(MIN_WATERMARK, item?, cx)?;
                }
                down.watermark(Watermark::EventTime(MAX_WATERMARK), cx)?;
                down.finish(cx)
            }),
        }
    }

    /// An unbounded source fed through a channel, for live use: the job runs (on the calling thread)
    /// until every sender is dropped, then ends like a bounded source. When no event arrives for
    /// `tick`, the pipeline is ticked: periodic watermarks are generated (so idleness is detected),
    /// due processing-time timers fire, and partly filled batches are flushed.
    pub fn from_receiver<T: Send + 'static>(
        &self,
        receiver: Receiver<T>,
        tick: Duration,
    ) -> Stream<T> {
        Stream {
            env: self.clone(),
            run: Box::new(move |mut down, cx| {
                loop {
                    match receiver.recv_timeout(tick) {
                        Ok(item) => down.push(MIN_WATERMARK, item, cx)?,
                        Err(RecvTimeoutError::Timeout) => down.tick(cx)?,
                        Err(RecvTimeoutError::Disconnected) => break,
                    }
                }
                down.watermark(Watermark::EventTime(MAX_WATERMARK), cx)?;
                down.finish(cx)
            }),
        }
    }

    /// A source of several partitions, each with its own watermark generator from `strategy`; the
    /// source's watermark is the minimum over the partitions that are not idle ([`WatermarkHolder`]).
    /// Partitions are polled round-robin; a poll yielding `None` means "no data right now", which is
    /// what lets idleness detection kick in. An exhausted partition stops holding the watermark back.
    pub fn from_partitions<T, I>(
        &self,
        partitions: Vec<I>,
        strategy: WatermarkStrategy<T>,
    ) -> Stream<T>
    where
        T: Send + 'static,
        I: Iterator<Item = Option<T>> + Send + 'static,
    {
        let interval = self.watermark_interval;
        Stream {
            env: self.clone(),
            run: Box::new(move |mut down, cx| {
                let n = partitions.len();
                let mut parts: Vec<_> = partitions
                    .into_iter()
                    .map(|p| {
                        (
                            Some(p),
                            strategy.create_generator(),
                            WatermarkEmitter::default(),
                            0usize,
                        )
                    })
                    .collect();
                let mut holder = WatermarkHolder::new(n);
                let mut live = n;
                while live > 0 {
                    for (i, (iter, generator, emitter, polls)) in parts.iter_mut().enumerate() {
                        let Some(it) = iter else { continue };
                        let mut emitted: Vec<Watermark> = Vec::new();
                        match it.next() {
                            None => {
                                *iter = None;
                                live -= 1;
                                emitted.push(Watermark::EventTime(MAX_WATERMARK));
                            }
                            Some(None) => {}
                            Some(Some(event)) => {
                                let ts = strategy.extract_timestamp(&event, MIN_WATERMARK);
                                if let Some(w) = emitter.mark_active() {
                                    if let Some(combined) = holder.set(i, w) {
                                        down.watermark(combined, cx)?;
                                    }
                                }
                                let punctuated = generator.on_event(&event, ts);
                                down.push(ts, event, cx)?;
                                emitted.extend(punctuated.and_then(|w| emitter.emit(w)));
                            }
                        }
                        *polls += 1;
                        if *polls >= interval && iter.is_some() {
                            *polls = 0;
                            emitted
                                .extend(generator.on_periodic_emit().and_then(|w| emitter.emit(w)));
                        }
                        for w in emitted {
                            if let Some(combined) = holder.set(i, w) {
                                down.watermark(combined, cx)?;
                            }
                        }
                    }
                }
                if n == 0 {
                    down.watermark(Watermark::EventTime(MAX_WATERMARK), cx)?;
                }
                down.finish(cx)
            }),
        }
    }
}

/// A lazily built stream of `T` records.
pub struct Stream<T> {
    pub(crate) env: Dataflow,
    #[allow(clippy::type_complexity)]
    pub(crate) run: Box<dyn FnOnce(Box<dyn Push<T>>, &mut RunContext) -> Result<()> + Send>,
}

impl<T: Send + 'static> Stream<T> {
    fn then<U: Send + 'static>(
        self,
        wrap: impl FnOnce(Box<dyn Push<U>>, &Dataflow) -> Box<dyn Push<T>> + Send + 'static,
    ) -> Stream<U> {
        let env = self.env.clone();
        let env2 = self.env;
        let run = self.run;
        Stream {
            env,
            run: Box::new(move |down, cx| run(wrap(down, &env2), cx)),
        }
    }

    /// Applies `f` to every record.
    pub fn map<U: Send + 'static>(self, f: impl FnMut(T) -> U + Send + 'static) -> Stream<U> {
        self.then(move |down, _| Box::new(MapNode { f, down }))
    }

    /// Keeps the records for which `f` is true.
    pub fn filter(self, f: impl FnMut(&T) -> bool + Send + 'static) -> Stream<T> {
        self.then(move |down, _| Box::new(FilterNode { f, down }))
    }

    /// Assigns timestamps and generates watermarks with `strategy` (Flink's
    /// `assignTimestampsAndWatermarks`). Upstream watermarks are dropped, except the final one.
    pub fn assign_timestamps_and_watermarks(self, strategy: WatermarkStrategy<T>) -> Stream<T> {
        self.then(move |down, env| {
            Box::new(TimestampsNode {
                generator: strategy.create_generator(),
                strategy,
                emitter: WatermarkEmitter::default(),
                interval: env.watermark_interval,
                count: 0,
                down,
            })
        })
    }

    /// Partitions the stream by `key`.
    pub fn key_by<K: Key>(
        self,
        key: impl Fn(&T) -> K + Send + Sync + 'static,
    ) -> KeyedStream<K, T> {
        KeyedStream {
            stream: self,
            key: Arc::new(key),
        }
    }

    /// Runs the job, writing records to `sink`; returns the side outputs.
    pub fn sink(self, sink: impl Sink<T> + 'static) -> Result<SideOutputs> {
        let mut cx = RunContext::default();
        (self.run)(Box::new(SinkNode(sink)), &mut cx)?;
        Ok(cx.side_outputs)
    }

    /// Runs the job and collects every record.
    pub fn collect(self) -> Result<Collected<T>> {
        let sink = VecSink::new();
        let side_outputs = self.sink(sink.clone())?;
        let (timestamps, records) = sink.take().into_iter().unzip();
        Ok(Collected {
            records,
            timestamps,
            side_outputs,
        })
    }
}

struct MapNode<F, U> {
    f: F,
    down: Box<dyn Push<U>>,
}

impl<T, U, F: FnMut(T) -> U + Send> Push<T> for MapNode<F, U> {
    fn push(&mut self, ts: Timestamp, value: T, cx: &mut RunContext) -> Result<()> {
        self.down.push(ts, (self.f)(value), cx)
    }
    fn watermark(&mut self, w: Watermark, cx: &mut RunContext) -> Result<()> {
        self.down.watermark(w, cx)
    }
    fn tick(&mut self, cx: &mut RunContext) -> Result<()> {
        self.down.tick(cx)
    }
    fn finish(&mut self, cx: &mut RunContext) -> Result<()> {
        self.down.finish(cx)
    }
}

struct FilterNode<F, T> {
    f: F,
    down: Box<dyn Push<T>>,
}

impl<T, F: FnMut(&T) -> bool + Send> Push<T> for FilterNode<F, T> {
    fn push(&mut self, ts: Timestamp, value: T, cx: &mut RunContext) -> Result<()> {
        if (self.f)(&value) {
            self.down.push(ts, value, cx)?;
        }
        Ok(())
    }
    fn watermark(&mut self, w: Watermark, cx: &mut RunContext) -> Result<()> {
        self.down.watermark(w, cx)
    }
    fn tick(&mut self, cx: &mut RunContext) -> Result<()> {
        self.down.tick(cx)
    }
    fn finish(&mut self, cx: &mut RunContext) -> Result<()> {
        self.down.finish(cx)
    }
}

struct TimestampsNode<T> {
    strategy: WatermarkStrategy<T>,
    generator: Box<dyn crate::time::WatermarkGenerator<T>>,
    emitter: WatermarkEmitter,
    interval: usize,
    count: usize,
    down: Box<dyn Push<T>>,
}

impl<T: Send + 'static> TimestampsNode<T> {
    fn forward(&mut self, w: Option<Watermark>, cx: &mut RunContext) -> Result<()> {
        if let Some(w) = w.and_then(|w| self.emitter.emit(w)) {
            self.down.watermark(w, cx)?;
        }
        Ok(())
    }
}

impl<T: Send + 'static> Push<T> for TimestampsNode<T> {
    fn push(&mut self, ts: Timestamp, value: T, cx: &mut RunContext) -> Result<()> {
        let ts = self.strategy.extract_timestamp(&value, ts);
        if let Some(w) = self.emitter.mark_active() {
            self.down.watermark(w, cx)?;
        }
        // As Flink's TimestampsAndWatermarksOperator: the generator sees the event, the record goes
        // downstream, then a punctuated watermark (if any) follows it.
        let punctuated = self.generator.on_event(&value, ts);
        self.down.push(ts, value, cx)?;
        self.forward(punctuated, cx)?;
        self.count += 1;
        if self.count >= self.interval {
            self.count = 0;
            let w = self.generator.on_periodic_emit();
            self.forward(w, cx)?;
        }
        Ok(())
    }

    fn watermark(&mut self, w: Watermark, cx: &mut RunContext) -> Result<()> {
        if w == Watermark::EventTime(MAX_WATERMARK) {
            let periodic = self.generator.on_periodic_emit();
            self.forward(periodic, cx)?;
            self.forward(Some(w), cx)?;
        }
        Ok(())
    }

    fn tick(&mut self, cx: &mut RunContext) -> Result<()> {
        // Periodic emission without events is what lets idleness be detected.
        let w = self.generator.on_periodic_emit();
        self.forward(w, cx)?;
        self.down.tick(cx)
    }

    fn finish(&mut self, cx: &mut RunContext) -> Result<()> {
        self.down.finish(cx)
    }
}

/// Runs a keyed operator on the calling thread.
pub(crate) struct KeyedNode<K, I, O> {
    pub(crate) key: Arc<dyn Fn(&I) -> K + Send + Sync>,
    pub(crate) op: Box<dyn Operator<(K, I), O>>,
    pub(crate) buf: Vec<(Timestamp, O)>,
    pub(crate) down: Box<dyn Push<O>>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) watermark: Timestamp,
    pub(crate) idle: bool,
}

impl<K, I, O: Send> KeyedNode<K, I, O> {
    fn drain(&mut self, cx: &mut RunContext) -> Result<()> {
        for (ts, o) in self.buf.drain(..) {
            self.down.push(ts, o, cx)?;
        }
        Ok(())
    }

    fn fire_due(&mut self, cx: &mut RunContext) -> Result<()> {
        if let Some(next) = self.op.next_processing_time() {
            let now = self.clock.now();
            if next <= now {
                let mut out = Output {
                    records: &mut self.buf,
                    side: &mut cx.side_outputs,
                };
                self.op.process_processing_time(now, &mut out)?;
                self.drain(cx)?;
            }
        }
        Ok(())
    }
}

impl<K: Send, I: Send, O: Send> Push<I> for KeyedNode<K, I, O> {
    fn push(&mut self, ts: Timestamp, value: I, cx: &mut RunContext) -> Result<()> {
        let k = (self.key)(&value);
        let mut out = Output {
            records: &mut self.buf,
            side: &mut cx.side_outputs,
        };
        self.op.process_element(ts, (k, value), &mut out)?;
        self.drain(cx)?;
        self.fire_due(cx)
    }

    fn watermark(&mut self, w: Watermark, cx: &mut RunContext) -> Result<()> {
        match w {
            Watermark::EventTime(t) if t <= self.watermark => {
                // Not an advance; pass it on only if it ends an idle period downstream.
                if self.idle {
                    self.idle = false;
                    self.down.watermark(w, cx)?;
                }
                return Ok(());
            }
            Watermark::EventTime(t) => {
                self.idle = false;
                self.watermark = t;
                let mut out = Output {
                    records: &mut self.buf,
                    side: &mut cx.side_outputs,
                };
                self.op.process_watermark(t, &mut out)?;
                self.drain(cx)?;
            }
            Watermark::Idle => self.idle = true,
        }
        self.down.watermark(w, cx)?;
        self.fire_due(cx)
    }

    fn tick(&mut self, cx: &mut RunContext) -> Result<()> {
        self.fire_due(cx)?;
        self.down.tick(cx)
    }

    fn finish(&mut self, cx: &mut RunContext) -> Result<()> {
        self.watermark(Watermark::EventTime(MAX_WATERMARK), cx)?;
        let mut out = Output {
            records: &mut self.buf,
            side: &mut cx.side_outputs,
        };
        self.op.end_of_input(&mut out)?;
        self.drain(cx)?;
        self.down.finish(cx)
    }
}

/// Creates one operator instance (one per worker).
pub type OperatorFactory<K, I, O> =
    Arc<dyn Fn(&Dataflow) -> Box<dyn Operator<(K, I), O>> + Send + Sync>;

/// A stream partitioned by key (Flink's `KeyedStream`).
pub struct KeyedStream<K, T> {
    stream: Stream<T>,
    key: Arc<dyn Fn(&T) -> K + Send + Sync>,
}

impl<K: Key + Hash, T: Send + 'static> KeyedStream<K, T> {
    /// Applies a keyed operator; one instance per worker, created by `factory`.
    pub fn operator<O: Send + 'static>(self, factory: OperatorFactory<K, T, O>) -> Stream<O> {
        let key = self.key;
        self.stream.then(move |down, env| {
            if env.parallelism <= 1 {
                Box::new(KeyedNode {
                    key,
                    op: factory(env),
                    buf: Vec::new(),
                    down,
                    clock: env.clock.clone(),
                    watermark: MIN_WATERMARK,
                    idle: false,
                })
            } else {
                Box::new(ParallelNode::new(env, key, factory, down))
            }
        })
    }

    /// Runs a [`KeyedProcessFunction`] (cloned once per worker).
    pub fn process<O, P>(self, function: P) -> Stream<O>
    where
        O: Send + 'static,
        P: KeyedProcessFunction<K, T, O> + Clone + 'static,
    {
        // Workers clone the prototype when they start; the mutex makes sharing it need only `Send`.
        let prototype = Mutex::new(function);
        self.operator(Arc::new(move |env: &Dataflow| {
            let function = prototype.lock().unwrap_or_else(|e| e.into_inner()).clone();
            Box::new(KeyedProcessOperator::new(
                function,
                (env.backend)(),
                env.clock.clone(),
            ))
        }))
    }

    /// Groups each key's records into windows from `assigner`.
    pub fn window<A: WindowAssigner>(self, assigner: A) -> WindowedStream<K, T, A> {
        WindowedStream {
            keyed: self,
            spec: WindowSpec::new(assigner),
            keep_last: None,
        }
    }

    /// Tumbling count windows: fires and purges every `size` records of a key (Flink's
    /// `countWindow(size)`).
    pub fn count_window(self, size: u64) -> WindowedStream<K, T, GlobalWindows> {
        self.window(GlobalWindows)
            .trigger(PurgingTrigger::of(CountTrigger::of(size)))
    }

    /// Sliding count windows: every `slide` records of a key, fires with its last `size` records
    /// (Flink's `countWindow(size, slide)`: a count evictor and a count trigger).
    pub fn count_window_sliding(
        self,
        size: u64,
        slide: u64,
    ) -> WindowedStream<K, T, GlobalWindows> {
        let mut w = self.window(GlobalWindows).trigger(CountTrigger::of(slide));
        w.keep_last = Some(size as usize);
        w
    }
}

/// A keyed stream grouped into windows (Flink's `WindowedStream`); finish it with a window function.
pub struct WindowedStream<K, T, A: WindowAssigner> {
    keyed: KeyedStream<K, T>,
    spec: WindowSpec<T, A>,
    keep_last: Option<usize>,
}

impl<K, T, A> WindowedStream<K, T, A>
where
    K: Key + Hash,
    T: Send + 'static,
    A: WindowAssigner,
{
    /// Replaces the assigner's default trigger.
    pub fn trigger(mut self, trigger: impl Trigger<T, A::W> + 'static) -> Self {
        self.spec.trigger = Arc::new(trigger);
        self
    }

    /// Keeps windows `lateness` ms past their end; late records within it update and re-fire them.
    pub fn allowed_lateness(mut self, lateness: Timestamp) -> Self {
        self.spec.allowed_lateness = lateness.max(0);
        self
    }

    /// Sends records later than the allowed lateness to `tag` instead of dropping them.
    pub fn side_output_late_data(mut self, tag: OutputTag<T>) -> Self {
        self.spec.late_tag = Some(tag);
        self
    }

    /// Keeps only the last `n` records of a window when it fires (Flink's `CountEvictor`).
    pub fn evict_keep_last(mut self, n: usize) -> Self {
        self.keep_last = Some(n);
        self
    }
}

impl<K, T, A> WindowedStream<K, T, A>
where
    K: Key + Hash,
    T: Clone + Serialize + DeserializeOwned + Send + 'static,
    A: WindowAssigner,
{
    fn apply<C>(self, contents: C) -> Stream<C::Out>
    where
        C: WindowContents<K, T, A::W> + 'static,
        C::Out: Send + 'static,
    {
        let spec = self.spec;
        let contents = Arc::new(contents);
        self.keyed.operator(Arc::new(move |env: &Dataflow| {
            Box::new(WindowOperator::new(
                spec.clone(),
                contents.clone(),
                (env.backend)(),
                env.clock.clone(),
            ))
        }))
    }

    /// Reduces each window incrementally; emits the reduced record with the window's max timestamp.
    pub fn reduce(self, f: impl Fn(T, T) -> T + Send + Sync + 'static) -> Stream<T> {
        self.reduce_with(f, |_: &K, _: &A::W, v: T| v)
    }

    /// Reduces each window incrementally, then maps the result with the key and window (Flink's
    /// `reduce(ReduceFunction, ProcessWindowFunction)`).
    pub fn reduce_with<O: Send + 'static>(
        self,
        f: impl Fn(T, T) -> T + Send + Sync + 'static,
        finish: impl Fn(&K, &A::W, T) -> O + Send + Sync + 'static,
    ) -> Stream<O> {
        match self.keep_last {
            None => self.apply(ReduceContents::new(f, finish)),
            Some(n) => self.apply(ListContents::new(
                move |k: &K, w: &A::W, els: Vec<T>, out: &mut Vec<O>| {
                    if let Some(v) = els.into_iter().reduce(&f) {
                        out.push(finish(k, w, v));
                    }
                },
                Some(n),
            )),
        }
    }

    /// Aggregates each window incrementally with `function`.
    pub fn aggregate<G>(self, function: G) -> Stream<G::Out>
    where
        G: AggregateFunction<In = T> + 'static,
        G::Out: Send + 'static,
    {
        self.aggregate_with(function, |_: &K, _: &A::W, o| o)
    }

    /// Aggregates each window incrementally, then maps the result with the key and window.
    pub fn aggregate_with<G, O>(
        self,
        function: G,
        finish: impl Fn(&K, &A::W, G::Out) -> O + Send + Sync + 'static,
    ) -> Stream<O>
    where
        G: AggregateFunction<In = T> + 'static,
        O: Send + 'static,
    {
        match self.keep_last {
            None => self.apply(AggregateContents::new(function, finish)),
            Some(n) => self.apply(ListContents::new(
                move |k: &K, w: &A::W, els: Vec<T>, out: &mut Vec<O>| {
                    let mut acc = function.create_accumulator();
                    for e in els {
                        function.add(e, &mut acc);
                    }
                    out.push(finish(k, w, function.get_result(&acc)));
                },
                Some(n),
            )),
        }
    }

    /// Hands all of a window's records to `function` when it fires.
    pub fn process<O: Send + 'static>(
        self,
        function: impl ProcessWindowFunction<K, T, A::W, O> + 'static,
    ) -> Stream<O> {
        let keep_last = self.keep_last;
        self.apply(ListContents::new(function, keep_last))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::Context;
    use crate::time::ManualClock;

    #[derive(Clone, Debug, PartialEq)]
    enum Seen {
        Record(Timestamp, u32),
        Wm(Watermark),
        Tick,
        Finish,
    }

    struct Recorder(Arc<Mutex<Vec<Seen>>>);

    impl Push<u32> for Recorder {
        fn push(&mut self, ts: Timestamp, v: u32, _: &mut RunContext) -> Result<()> {
            self.0.lock().unwrap().push(Seen::Record(ts, v));
            Ok(())
        }
        fn watermark(&mut self, w: Watermark, _: &mut RunContext) -> Result<()> {
            self.0.lock().unwrap().push(Seen::Wm(w));
            Ok(())
        }
        fn tick(&mut self, _: &mut RunContext) -> Result<()> {
            self.0.lock().unwrap().push(Seen::Tick);
            Ok(())
        }
        fn finish(&mut self, _: &mut RunContext) -> Result<()> {
            self.0.lock().unwrap().push(Seen::Finish);
            Ok(())
        }
    }

    #[derive(Clone)]
    struct EchoOnTimer;

    impl KeyedProcessFunction<u32, u32, u32> for EchoOnTimer {
        fn process_element(&mut self, v: u32, ctx: &mut Context<'_, u32, u32>) -> Result<()> {
            ctx.register_event_time_timer(i64::from(v));
            Ok(())
        }
        fn on_timer(&mut self, ts: Timestamp, ctx: &mut Context<'_, u32, u32>) -> Result<()> {
            ctx.collect(ts as u32);
            Ok(())
        }
    }

    #[test]
    fn keyed_node_forwards_advances_idleness_and_reactivation() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(0));
        let mut node = KeyedNode {
            key: Arc::new(|v: &u32| *v % 2),
            op: Box::new(KeyedProcessOperator::new(
                EchoOnTimer,
                Box::new(MemoryBackend::new()),
                clock.clone(),
            )),
            buf: Vec::new(),
            down: Box::new(Recorder(seen.clone())) as Box<dyn Push<u32>>,
            clock,
            watermark: MIN_WATERMARK,
            idle: false,
        };
        let mut cx = RunContext::default();
        let et = Watermark::EventTime;
        node.push(1, 4, &mut cx).unwrap();
        node.push(2, 9, &mut cx).unwrap();
        for w in [et(5), Watermark::Idle, et(5), et(3), et(7), et(7)] {
            node.watermark(w, &mut cx).unwrap();
        }
        node.tick(&mut cx).unwrap();
        node.finish(&mut cx).unwrap();
        use Seen::*;
        assert_eq!(
            *seen.lock().unwrap(),
            vec![
                // The timer at 4 fires before the watermark that fired it is forwarded.
                Record(4, 4),
                Wm(et(5)),
                Wm(crate::time::Watermark::Idle),
                // Back from idle at the same time: forwarded once, not processed again.
                Wm(et(5)),
                Wm(et(7)),
                Tick,
                // The end of input is a watermark at +infinity, which fires the timer at 9.
                Record(9, 9),
                Wm(et(i64::MAX)),
                Finish,
            ]
        );
    }
}
