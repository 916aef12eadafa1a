//! A pipeline's window stage and [`PipelineEngine`], what HTTP pipelines and `cep run` drive.
//!
//! The stage is the runtime's [`WindowOperator`] between the events and the patterns, so that
//! window math (tumbling, sliding and session alignment, session merging, allowed lateness,
//! count triggers and evictors) is the runtime's, which is Flink's; its aggregates are in
//! `aggregate.rs`. Window results go to a second [`JsonEngine`], for the patterns the spec's
//! `window.patterns` names; the other patterns match the events in the first.
//!
//! The stage reads each event's key and time as the engine does, and owns the watermark
//! (bounded out-of-orderness, like the engine's own): when it advances, the windows it closes
//! are pushed into the results engine as events, stamped `window_end - 1`, and only then do the
//! engines' watermarks move. So a window result is never late to the patterns when its window
//! closes on time, exactly as downstream of a Flink window operator, whose results are emitted
//! before the watermark that fired them.
//!
//! In processing time (`time.mode`), events are stamped with the clock when they arrive and the
//! watermark follows the clock ([`PipelineEngine::on_clock`]).

mod aggregate;

use std::sync::Arc;

use cep_patterns::{
    CompiledPattern, EngineStats, FieldPath, JsonEngine, KeyView, Output, ParsedEvent,
    PartialMatchInfo, PatternError, PatternErrors, RecordError, Replace, StateBounds,
};
use cep_runtime::window::{
    AggregateContents, ListContents, WindowKeyState, WindowOperator, WindowSpec,
};
use cep_runtime::{
    Clock, CountTrigger, GlobalWindow, GlobalWindows, MemoryBackend, Operator, OutputTag,
    PurgingTrigger, SessionWindows, SideOutputs, SlidingWindows, SystemClock, TimeWindow,
    Timestamp, Trigger, TumblingWindows, WindowAssigner,
};
use serde_json::{Map, Value};

use self::aggregate::{
    Accumulator, Aggregate, Aggregates, Element, FoldElements, Function, WindowResult,
};
use crate::spec::{
    AggregateSpec, PatternSelection, PipelineSpec, TimeMode, WindowKind, WindowSize,
    WindowStageSpec,
};

/// The largest event time (in absolute value) a window stage takes: with windows of at most
/// [`MAX_WINDOW_SPAN_MS`](crate::spec::MAX_WINDOW_SPAN_MS), no window bound overflows.
const MAX_EVENT_TIME: u64 = 4_000_000_000_000_000;

/// The time-window assigners of a stage, as one assigner type.
#[derive(Clone, Copy, Debug)]
enum TimeAssigner {
    Tumbling(TumblingWindows),
    Sliding(SlidingWindows),
    Session(SessionWindows),
}

impl WindowAssigner for TimeAssigner {
    type W = TimeWindow;

    fn assign_windows(&self, timestamp: Timestamp, now: Timestamp, out: &mut Vec<TimeWindow>) {
        match self {
            TimeAssigner::Tumbling(a) => a.assign_windows(timestamp, now, out),
            TimeAssigner::Sliding(a) => a.assign_windows(timestamp, now, out),
            TimeAssigner::Session(a) => a.assign_windows(timestamp, now, out),
        }
    }

    fn is_event_time(&self) -> bool {
        match self {
            TimeAssigner::Tumbling(a) => a.is_event_time(),
            TimeAssigner::Sliding(a) => a.is_event_time(),
            TimeAssigner::Session(a) => a.is_event_time(),
        }
    }

    fn default_trigger<T: 'static>(&self) -> Arc<dyn Trigger<T, TimeWindow>> {
        match self {
            TimeAssigner::Tumbling(a) => a.default_trigger(),
            TimeAssigner::Sliding(a) => a.default_trigger(),
            TimeAssigner::Session(a) => a.default_trigger(),
        }
    }

    fn is_merging(&self) -> bool {
        matches!(self, TimeAssigner::Session(_))
    }

    fn merge_windows(
        &self,
        windows: &[TimeWindow],
        merge: &mut dyn FnMut(Vec<TimeWindow>, TimeWindow),
    ) {
        if let TimeAssigner::Session(a) = self {
            a.merge_windows(windows, merge);
        }
    }
}

type TimeFinish = fn(&String, &TimeWindow, Accumulator) -> (TimeWindow, Accumulator);
type CountFinish = fn(&String, &GlobalWindow, Accumulator) -> Accumulator;

fn with_window(_: &String, w: &TimeWindow, acc: Accumulator) -> (TimeWindow, Accumulator) {
    (*w, acc)
}

fn keep(_: &String, _: &GlobalWindow, acc: Accumulator) -> Accumulator {
    acc
}

type TimeOperator = WindowOperator<
    String,
    Element,
    TimeAssigner,
    AggregateContents<Aggregates, (TimeWindow, Accumulator), TimeFinish>,
>;
type CountOperator = WindowOperator<
    String,
    Element,
    GlobalWindows,
    AggregateContents<Aggregates, Accumulator, CountFinish>,
>;
type SlidingCountOperator = WindowOperator<
    String,
    Element,
    GlobalWindows,
    ListContents<Element, Accumulator, FoldElements>,
>;

/// The runtime operator a stage drives.
enum Windows {
    /// Tumbling, sliding and session windows: results carry their window.
    Time(Box<TimeOperator>),
    /// Count windows (a purging count trigger).
    Count(Box<CountOperator>),
    /// Sliding count windows (a count trigger every `slide`, an evictor keeping `size`).
    SlidingCount(Box<SlidingCountOperator>),
}

/// A pipeline's engine: its [`JsonEngine`], and with a window stage, the stage and a second
/// engine for the patterns that match window results. The HTTP pipelines of `cep serve` and
/// `cep run` drive this; without a window stage it is the `JsonEngine` alone.
pub struct PipelineEngine {
    /// The patterns over the events themselves (all of them without a window stage).
    events: JsonEngine,
    window: Option<Box<WindowStage>>,
    /// In processing time (`time.mode`), the clock that stamps events and moves the watermark.
    processing: Option<Arc<dyn Clock>>,
    /// In processing time, the latest time an event was stamped with.
    stamped: Timestamp,
}

impl std::fmt::Debug for PipelineEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PipelineEngine")
            .field("watermark", &self.watermark())
            .field("window", &self.window.is_some())
            .finish()
    }
}

/// The window stage: the runtime's window operator, and the engine of the patterns that match
/// its results.
struct WindowStage {
    /// Which of the pipeline's patterns match window results.
    selection: PatternSelection,
    results: JsonEngine,
    key_path: FieldPath,
    fields: Vec<FieldPath>,
    aggregates: Aggregates,
    windows: Windows,
    out_of_orderness: i64,
    max_ts: Timestamp,
    watermark: Timestamp,
    events_in: u64,
    late: OutputTag<Element>,
    records: Vec<(Timestamp, Accumulator)>,
    time_records: Vec<(Timestamp, (TimeWindow, Accumulator))>,
    side: SideOutputs,
}

fn runtime_error(e: cep_runtime::Error) -> RecordError {
    RecordError {
        message: format!("window stage: {e}"),
    }
}

fn spec_error(message: String) -> PatternErrors {
    PatternErrors(vec![PatternError {
        path: "window".into(),
        column: None,
        message,
    }])
}

impl PipelineEngine {
    /// The engine of `spec` over `patterns` (the pipeline's selection of them).
    pub fn new(
        spec: &PipelineSpec,
        patterns: Vec<Arc<CompiledPattern>>,
    ) -> Result<PipelineEngine, PatternErrors> {
        Self::with_clock(spec, patterns, Arc::new(SystemClock))
    }

    /// An engine whose watermark only [`advance_watermark`](Self::advance_watermark) moves,
    /// not the highest time it takes: a Kafka pipeline's comes from its partitions, a worker's
    /// from its pipeline. (An unbounded out-of-orderness switches the stage's and the engines'
    /// own off.)
    pub fn driven(
        spec: &PipelineSpec,
        patterns: Vec<Arc<CompiledPattern>>,
        clock: Arc<dyn Clock>,
    ) -> Result<PipelineEngine, PatternErrors> {
        let mut spec = spec.clone();
        spec.watermark.out_of_orderness = cep_patterns::DurationMs(i64::MAX);
        Self::with_clock(&spec, patterns, clock)
    }

    /// Like [`new`](Self::new), with the clock of processing time (`time.mode`).
    pub fn with_clock(
        spec: &PipelineSpec,
        patterns: Vec<Arc<CompiledPattern>>,
        clock: Arc<dyn Clock>,
    ) -> Result<PipelineEngine, PatternErrors> {
        let processing = (spec.time.mode == TimeMode::Processing).then(|| clock.clone());
        let Some(window) = &spec.window else {
            return Ok(PipelineEngine {
                events: spec.engine(patterns)?,
                window: None,
                processing,
                stamped: Timestamp::MIN,
            });
        };
        let (over_results, over_events) = split(&window.patterns, patterns);
        let events = spec.engine(over_events)?;
        let results = spec.engine(over_results)?;
        let stage = WindowStage::new(window, spec, results, clock).map_err(spec_error)?;
        Ok(PipelineEngine {
            events,
            window: Some(Box::new(stage)),
            processing,
            stamped: Timestamp::MIN,
        })
    }

    /// Takes one event (see [`JsonEngine::push`]). With a window stage: into its windows (or to
    /// the late output), into the engine of the patterns over events (if there are any), then
    /// the watermark moves and the windows it closes reach their patterns.
    ///
    /// In processing time the event's time is the clock's when it arrives (or 1 ms after the
    /// watermark, if the clock has not moved past it), and the watermark does not move:
    /// [`on_clock`](Self::on_clock) moves it, at the end of each batch and on every tick.
    pub fn push(&mut self, event: Value, out: &mut Vec<Output>) -> Result<(), RecordError> {
        if self.window.is_none() && self.processing.is_none() {
            return self.events.push(event, out);
        }
        if !event.is_object() {
            return Err(RecordError {
                message: "an event must be a JSON object".into(),
            });
        }
        if let Some(clock) = &self.processing {
            let key = self.events.key_of(&event)?;
            let ts = clock.now().max(self.watermark().saturating_add(1));
            self.stamped = self.stamped.max(ts);
            return self.push_keyed(key, ts, &event, out);
        }
        let (key, ts) = self.events.key_and_time(&event)?;
        self.push_keyed(key, ts, &event, out)?;
        if let Some(stage) = &mut self.window {
            stage.max_ts = stage.max_ts.max(ts);
            let watermark = bounded_watermark(stage.max_ts, stage.out_of_orderness);
            self.move_watermark(watermark, out)?;
        }
        Ok(())
    }

    /// Hands an event with its key and time (read by the caller: processing time, a Kafka
    /// source) to the window stage and the patterns over events; the watermark does not move.
    pub fn push_keyed(
        &mut self,
        key: String,
        ts: Timestamp,
        event: &Value,
        out: &mut Vec<Output>,
    ) -> Result<(), RecordError> {
        let Some(stage) = &mut self.window else {
            self.events.push_keyed(key, ts, event, out);
            return Ok(());
        };
        let late = stage.process(key.clone(), ts, event)?;
        if late {
            out.push(self.events.late_output(key, ts, event));
        } else if !self.events.patterns().is_empty() {
            self.events.push_keyed(key, ts, event, out);
        }
        // Count windows fire on arrival.
        stage.emit(out);
        Ok(())
    }

    /// In processing time, moves the watermark to the clock: the events taken so far are
    /// matched, and the timeouts and windows the clock has passed fire. Nothing in event time.
    pub fn on_clock(&mut self, out: &mut Vec<Output>) {
        if let Some(clock) = &self.processing {
            // Events stamped 1 ms ahead of a clock that had not moved are taken too.
            let now = clock.now().max(self.stamped);
            if now > self.watermark() {
                self.advance_watermark(now, out);
            }
        }
    }

    /// Like [`push`](Self::push), for an event given as JSON text (`cep run`).
    pub fn push_str(&mut self, text: &str, out: &mut Vec<Output>) -> Result<(), RecordError> {
        if self.window.is_none() && self.processing.is_none() {
            return self.events.push_str(text, out);
        }
        let event: Value = serde_json::from_str(text).map_err(|e| RecordError {
            message: format!("malformed JSON: {e}"),
        })?;
        self.push(event, out)
    }

    /// Moves the watermark (idleness, a client's watermark, `i64::MAX` at the end of the
    /// input): the windows it closes reach their patterns first (at the end, every time window
    /// closes; count windows that are not full are dropped, as in Flink).
    pub fn advance_watermark(&mut self, watermark: i64, out: &mut Vec<Output>) {
        if let Err(e) = self.move_watermark(watermark, out) {
            // The window state is in memory, which does not fail.
            tracing::error!("{e}");
        }
    }

    fn move_watermark(&mut self, watermark: i64, out: &mut Vec<Output>) -> Result<(), RecordError> {
        let Some(stage) = &mut self.window else {
            self.events.advance_watermark(watermark, out);
            return Ok(());
        };
        if watermark <= stage.watermark {
            return Ok(());
        }
        stage.watermark = watermark;
        if let Windows::Time(op) = &mut stage.windows {
            let mut output = cep_runtime::Output {
                records: &mut stage.time_records,
                side: &mut stage.side,
            };
            op.process_watermark(watermark, &mut output)
                .map_err(runtime_error)?;
        }
        stage.emit(out);
        // Both engines' outputs of this watermark, merged in time order (each keeps its own).
        let (mut over_events, mut over_results) = (Vec::new(), Vec::new());
        self.events.advance_watermark(watermark, &mut over_events);
        stage
            .results
            .advance_watermark(watermark, &mut over_results);
        let mut results = over_results.into_iter().peekable();
        for o in over_events.drain(..) {
            while let Some(r) = results.next_if(|r| r.timestamp < o.timestamp) {
                out.push(r);
            }
            out.push(o);
        }
        out.extend(results);
        Ok(())
    }

    /// The current watermark.
    pub fn watermark(&self) -> i64 {
        match &self.window {
            Some(stage) => stage.watermark,
            None => self.events.watermark(),
        }
    }

    /// Replaces the patterns (see [`JsonEngine::set_patterns`]); with a window stage, each goes
    /// to the engine of its input.
    pub fn set_patterns(
        &mut self,
        patterns: Vec<Arc<CompiledPattern>>,
    ) -> Result<(), PatternErrors> {
        self.set_patterns_mode(patterns, Replace::Restart)
    }

    /// Replaces the patterns, changed ones draining or restarting (see
    /// [`JsonEngine::set_patterns_mode`]); with a window stage, each goes to the engine of its
    /// input.
    pub fn set_patterns_mode(
        &mut self,
        patterns: Vec<Arc<CompiledPattern>>,
        mode: Replace,
    ) -> Result<(), PatternErrors> {
        match &mut self.window {
            None => self.events.set_patterns_mode(patterns, mode),
            Some(stage) => {
                let (over_results, over_events) = split(&stage.selection, patterns);
                // Both are checked before either changes.
                JsonEngine::new(self.events.config().clone(), over_events.clone())?;
                JsonEngine::new(self.events.config().clone(), over_results.clone())?;
                self.events.set_patterns_mode(over_events, mode)?;
                stage.results.set_patterns_mode(over_results, mode)
            }
        }
    }

    /// Drops the draining pattern versions that hold nothing; true if one went.
    pub fn retire_drained(&mut self) -> bool {
        let a = self.events.retire_drained();
        let b = self
            .window
            .as_mut()
            .is_some_and(|stage| stage.results.retire_drained());
        a || b
    }

    /// Every pattern version the engines run, with whether it is draining (see
    /// [`JsonEngine::slots`]): those over events, then those over window results.
    pub fn slots(&self) -> Vec<(Arc<CompiledPattern>, bool)> {
        let mut slots = self.events.slots();
        if let Some(stage) = &self.window {
            slots.extend(stage.results.slots());
        }
        slots
    }

    /// Sets the pattern versions of a fresh engine (see [`JsonEngine::restore_slots`]), each to
    /// the engine of its input, before its keys are restored.
    pub fn restore_slots(
        &mut self,
        slots: Vec<(Arc<CompiledPattern>, bool)>,
    ) -> Result<(), PatternErrors> {
        match &mut self.window {
            None => self.events.restore_slots(slots),
            Some(stage) => {
                let (over_results, over_events): (Vec<_>, Vec<_>) = slots
                    .into_iter()
                    .partition(|(p, _)| stage.selection.includes(p.name()));
                self.events.restore_slots(over_events)?;
                stage.results.restore_slots(over_results)
            }
        }
    }

    /// Whether some pattern version is draining.
    pub fn is_draining(&self) -> bool {
        self.events.is_draining()
            || self
                .window
                .as_ref()
                .is_some_and(|stage| stage.results.is_draining())
    }

    /// The event-time guard (see [`JsonEngine::set_max_future`]), on every engine.
    pub fn set_max_future(&mut self, limit: Option<i64>) {
        self.events.set_max_future(limit);
        if let Some(stage) = &mut self.window {
            stage.results.set_max_future(limit);
        }
    }

    /// The event-time guard.
    pub fn max_future(&self) -> Option<i64> {
        self.events.max_future()
    }

    /// Whether replaying the same inputs gives the same state and outputs: not in processing
    /// time, which reads the clock.
    pub fn is_replayable(&self) -> bool {
        self.processing.is_none()
    }

    /// What `key` holds: its partial matches (over events and over window results) and its
    /// events waiting for the watermark (in the engine of the patterns over events).
    pub fn key_view(&self, key: &str) -> KeyView {
        let mut view = self.events.key_view(key);
        if let Some(stage) = &self.window {
            view.partial_matches
                .extend(stage.results.partial_matches(key));
        }
        view
    }

    /// The partial matches held for `key`, over events and over window results.
    pub fn partial_matches(&self, key: &str) -> Vec<PartialMatchInfo> {
        let mut all = self.events.partial_matches(key);
        if let Some(stage) = &self.window {
            all.extend(stage.results.partial_matches(key));
        }
        all
    }

    /// The statistics of both engines together; `events` counts the events taken.
    pub fn stats(&self) -> EngineStats {
        let mut stats = self.events.stats();
        if let Some(stage) = &self.window {
            let r = stage.results.stats();
            stats.events = stage.events_in;
            stats.late += r.late;
            stats.keys = stats.keys.max(r.keys);
            stats.partial_matches += r.partial_matches;
            stats.buffered_events += r.buffered_events;
            stats.patterns.extend(r.patterns);
        }
        stats
    }
}

/// Keyed state, key by key: what a Kafka pipeline's changelog keeps. Without a window stage a
/// key's snapshot is the [`JsonEngine`]'s own; with one it is [`WINDOWED_SNAPSHOT`] followed by
/// three length-prefixed parts: the key's state in the engine over events, in the engine over
/// window results, and its windows (the runtime operator's entries and timers, MessagePack).
impl PipelineEngine {
    /// The key of an event (see [`JsonEngine::key_of`]).
    pub fn key_of(&self, event: &Value) -> Result<String, RecordError> {
        self.events.key_of(event)
    }

    /// The key and event time of an event (see [`JsonEngine::key_and_time`]).
    pub fn key_and_time(&self, event: &Value) -> Result<(String, i64), RecordError> {
        self.events.key_and_time(event)
    }

    /// Refuses an event time the window stage cannot take (see `MAX_EVENT_TIME`).
    pub fn check_time(&self, ts: Timestamp) -> Result<(), RecordError> {
        match &self.window {
            Some(_) => check_window_time(ts),
            None => Ok(()),
        }
    }

    /// Whether [`push_parsed`](Self::push_parsed) takes events as text, without decoding them
    /// whole: without a window stage, in event time.
    pub fn takes_text(&self) -> bool {
        self.window.is_none() && self.processing.is_none()
    }

    /// Reads an event's key and time from its text (see [`JsonEngine::parse_str`]).
    pub fn parse_str(&self, text: &str) -> Result<ParsedEvent, RecordError> {
        self.events.parse_str(text)
    }

    /// Takes an event read by [`parse_str`](Self::parse_str), as [`push`](Self::push) would
    /// (decoded whole when the engine does not [`take text`](Self::takes_text)).
    pub fn push_parsed(
        &mut self,
        parsed: ParsedEvent,
        out: &mut Vec<Output>,
    ) -> Result<(), RecordError> {
        if self.takes_text() {
            self.events.push_parsed(parsed, out);
            Ok(())
        } else {
            self.push(parsed.value(), out)
        }
    }

    /// Bounds the state of the pattern engines (see [`JsonEngine::set_bounds`]); window state
    /// is bounded by its windows.
    pub fn set_bounds(&mut self, bounds: StateBounds) {
        self.events.set_bounds(bounds);
        if let Some(stage) = &mut self.window {
            stage.results.set_bounds(bounds);
        }
    }

    /// Starts recording which keys change (see [`take_changed`](Self::take_changed)).
    pub fn track_changes(&mut self, on: bool) {
        self.events.track_changes(on);
        if let Some(stage) = &mut self.window {
            stage.results.track_changes(on);
            stage.windows.keyed_mut().track(on);
        }
    }

    /// The keys whose state may have changed since the last call, in any of the engines or the
    /// windows.
    pub fn take_changed(&mut self) -> Vec<String> {
        let mut changed = self.events.take_changed();
        if let Some(stage) = &mut self.window {
            changed.extend(stage.results.take_changed());
            changed.extend(stage.windows.keyed_mut().changed());
            changed.sort_unstable();
            changed.dedup();
        }
        changed
    }

    /// The state of `key`, or `None` if it holds nothing; restored by
    /// [`restore_key`](Self::restore_key) of an engine of the same spec.
    pub fn snapshot_key(&self, key: &str) -> Result<Option<Vec<u8>>, RecordError> {
        let Some(stage) = &self.window else {
            return Ok(self.events.snapshot_key(key));
        };
        let windows = stage.windows.keyed().snapshot(key)?;
        let events = self.events.snapshot_key(key);
        let results = stage.results.snapshot_key(key);
        if events.is_none() && results.is_none() && windows.is_none() {
            return Ok(None);
        }
        let mut bytes = WINDOWED_SNAPSHOT.to_vec();
        for part in [&events, &results, &windows] {
            let part = part.as_deref().unwrap_or_default();
            bytes.extend_from_slice(&(part.len() as u32).to_be_bytes());
            bytes.extend_from_slice(part);
        }
        Ok(Some(bytes))
    }

    /// Replaces `key`'s state with a [`snapshot_key`](Self::snapshot_key)'s.
    pub fn restore_key(&mut self, key: &str, snapshot: &[u8]) -> Result<(), RecordError> {
        let Some(stage) = &mut self.window else {
            return self.events.restore_key(key, snapshot);
        };
        let unreadable = |what: &str| RecordError {
            message: format!("unreadable state of key '{key}': {what}"),
        };
        let mut rest = snapshot
            .strip_prefix(WINDOWED_SNAPSHOT)
            .ok_or_else(|| unreadable("not the state of a pipeline with a window stage"))?;
        let mut parts = [&[][..]; 3];
        for part in &mut parts {
            let (len, tail) = rest
                .split_first_chunk::<4>()
                .ok_or_else(|| unreadable("cut short"))?;
            let len = u32::from_be_bytes(*len) as usize;
            if tail.len() < len {
                return Err(unreadable("cut short"));
            }
            (*part, rest) = tail.split_at(len);
        }
        let [events, results, windows] = parts;
        self.events.remove_key(key);
        if !events.is_empty() {
            self.events.restore_key(key, events)?;
        }
        stage.results.remove_key(key);
        if !results.is_empty() {
            stage.results.restore_key(key, results)?;
        }
        stage
            .windows
            .keyed_mut()
            .restore(key, windows)
            .map_err(|e| unreadable(&e))
    }

    /// Drops `key`'s state everywhere; true if it had any.
    pub fn remove_key(&mut self, key: &str) -> bool {
        let mut had = self.events.remove_key(key);
        if let Some(stage) = &mut self.window {
            had |= stage.results.remove_key(key);
            had |= stage.windows.keyed_mut().remove(key);
        }
        had
    }

    /// The number of keys with state in the engine over events (with a window stage, the
    /// larger of the two engines').
    pub fn key_count(&self) -> usize {
        let n = self.events.key_count();
        match &self.window {
            Some(stage) => n.max(stage.results.key_count()),
            None => n,
        }
    }

    /// The highest event time taken (what the watermark follows): a checkpoint keeps it.
    pub fn max_timestamp(&self) -> i64 {
        match &self.window {
            Some(stage) => stage.max_ts,
            None => self.events.max_timestamp(),
        }
    }

    /// Restores the event-time clock of a checkpoint after its keys (see
    /// [`JsonEngine::restore_time`]): nothing fires that had not fired before the checkpoint.
    pub fn restore_time(&mut self, max_timestamp: i64, watermark: i64, out: &mut Vec<Output>) {
        match &mut self.window {
            None => self.events.restore_time(max_timestamp, watermark, out),
            Some(stage) => {
                stage.max_ts = stage.max_ts.max(max_timestamp);
                self.advance_watermark(watermark, out);
            }
        }
    }

    /// When `key` next has something to do (see [`JsonEngine::due_of`]); with a window stage
    /// `None` (its keys are never moved out of memory).
    pub fn due_of(&self, key: &str) -> Option<i64> {
        match &self.window {
            Some(_) => None,
            None => self.events.due_of(key),
        }
    }
}

/// The first bytes of a key's snapshot with a window stage (JSON snapshots start with `{`).
const WINDOWED_SNAPSHOT: &[u8] = b"cep-w1";

/// What keyed state (`snapshot_key`, `restore_key`, `remove_key`, change tracking) needs of
/// the stage's window operator, whatever its window type.
trait KeyedWindows {
    fn track(&mut self, on: bool);
    fn changed(&mut self) -> Vec<String>;
    /// The key's windows as MessagePack, or `None` if it has none.
    fn snapshot(&self, key: &str) -> Result<Option<Vec<u8>>, RecordError>;
    /// Replaces the key's windows with a [`snapshot`](Self::snapshot)'s (empty: none).
    fn restore(&mut self, key: &str, bytes: &[u8]) -> Result<(), String>;
    /// Drops the key's windows; true if it had any.
    fn remove(&mut self, key: &str) -> bool;
}

impl<A, C> KeyedWindows for WindowOperator<String, Element, A, C>
where
    A: cep_runtime::WindowAssigner,
    C: cep_runtime::window::WindowContents<String, Element, A::W>,
{
    fn track(&mut self, on: bool) {
        self.track_changes(on);
    }

    fn changed(&mut self) -> Vec<String> {
        self.take_changed()
    }

    fn snapshot(&self, key: &str) -> Result<Option<Vec<u8>>, RecordError> {
        match self.snapshot_key(&key.to_string()).map_err(runtime_error)? {
            Some(s) => rmp_serde::to_vec(&s).map(Some).map_err(|e| RecordError {
                message: format!("window state: {e}"),
            }),
            None => Ok(None),
        }
    }

    fn restore(&mut self, key: &str, bytes: &[u8]) -> Result<(), String> {
        let key = key.to_string();
        if bytes.is_empty() {
            return self.remove_key(&key).map(drop).map_err(|e| e.to_string());
        }
        let state: WindowKeyState<A::W> =
            rmp_serde::from_slice(bytes).map_err(|e| e.to_string())?;
        self.restore_key(&key, state).map_err(|e| e.to_string())
    }

    fn remove(&mut self, key: &str) -> bool {
        self.remove_key(&key.to_string()).unwrap_or_else(|e| {
            // The window state is in memory, which does not fail.
            tracing::error!("window stage: {e}");
            false
        })
    }
}

impl Windows {
    fn keyed(&self) -> &dyn KeyedWindows {
        match self {
            Windows::Time(op) => &**op,
            Windows::Count(op) => &**op,
            Windows::SlidingCount(op) => &**op,
        }
    }

    fn keyed_mut(&mut self) -> &mut dyn KeyedWindows {
        match self {
            Windows::Time(op) => &mut **op,
            Windows::Count(op) => &mut **op,
            Windows::SlidingCount(op) => &mut **op,
        }
    }
}

/// The watermark of bounded out-of-orderness (Flink's `BoundedOutOfOrdernessWatermarks`): the
/// highest time taken, less the bound, less 1 ms.
pub(crate) fn bounded_watermark(max_ts: Timestamp, out_of_orderness: i64) -> Timestamp {
    max_ts.saturating_sub(out_of_orderness).saturating_sub(1)
}

fn check_window_time(ts: Timestamp) -> Result<(), RecordError> {
    if ts.unsigned_abs() > MAX_EVENT_TIME {
        return Err(RecordError {
            message: format!(
                "time {ts} is out of the range a window stage takes (±{MAX_EVENT_TIME} ms, about \
                 127,000 years around 1970)"
            ),
        });
    }
    Ok(())
}

/// Splits `patterns` into those `selection` names (over window results) and the others (over
/// events).
fn split(
    selection: &PatternSelection,
    patterns: Vec<Arc<CompiledPattern>>,
) -> (Vec<Arc<CompiledPattern>>, Vec<Arc<CompiledPattern>>) {
    patterns
        .into_iter()
        .partition(|p| selection.includes(p.name()))
}

impl WindowStage {
    fn new(
        window: &WindowStageSpec,
        spec: &PipelineSpec,
        results: JsonEngine,
        clock: Arc<dyn Clock>,
    ) -> Result<WindowStage, String> {
        let key_path = FieldPath::parse(&spec.key_by)?;
        let mut field_names: Vec<&str> = Vec::new();
        let mut aggregates = Vec::new();
        for (name, a) in &window.aggregates {
            let function = match a {
                AggregateSpec::Count(_) => Function::Count,
                AggregateSpec::Sum(_) => Function::Sum,
                AggregateSpec::Avg(_) => Function::Avg,
                AggregateSpec::Min(_) => Function::Min,
                AggregateSpec::Max(_) => Function::Max,
                AggregateSpec::First(_) => Function::First,
                AggregateSpec::Last(_) => Function::Last,
                AggregateSpec::CountDistinct(_) => Function::CountDistinct,
            };
            let field = if function == Function::Count && a.field() == "*" {
                None
            } else {
                Some(match field_names.iter().position(|f| *f == a.field()) {
                    Some(i) => i,
                    None => {
                        field_names.push(a.field());
                        field_names.len() - 1
                    }
                })
            };
            aggregates.push(Aggregate {
                name: name.clone(),
                function,
                field,
            });
        }
        let fields = field_names
            .iter()
            .map(|f| FieldPath::parse(f))
            .collect::<Result<_, _>>()?;
        let aggregates = Aggregates(Arc::new(aggregates));
        let late = OutputTag::new("late");
        let size = window.size.map_or(0, WindowSize::as_ms);
        let e = |e: cep_runtime::Error| e.to_string();
        let time = |assigner: TimeAssigner| -> Windows {
            let mut ws = WindowSpec::new(assigner);
            ws.allowed_lateness = window.allowed_lateness.0;
            ws.late_tag = Some(late.clone());
            let contents = AggregateContents::new(aggregates.clone(), with_window as TimeFinish);
            Windows::Time(Box::new(WindowOperator::new(
                ws,
                Arc::new(contents),
                Box::new(MemoryBackend::new()),
                clock.clone(),
            )))
        };
        let offset = window.offset.map_or(0, |o| o.0);
        let windows = match window.kind {
            WindowKind::Tumbling => time(TimeAssigner::Tumbling(
                TumblingWindows::event_time(size)
                    .and_then(|t| t.with_offset(offset))
                    .map_err(e)?,
            )),
            WindowKind::Sliding => time(TimeAssigner::Sliding(
                SlidingWindows::event_time(size, window.slide.map_or(0, WindowSize::as_ms))
                    .and_then(|t| t.with_offset(offset))
                    .map_err(e)?,
            )),
            WindowKind::Session => time(TimeAssigner::Session(
                SessionWindows::event_time(window.gap.map_or(0, |g| g.0)).map_err(e)?,
            )),
            WindowKind::Count => {
                let count = |s: Option<WindowSize>| match s {
                    Some(WindowSize::Count(n)) if n > 0 => Ok(n),
                    _ => Err("a count window's size and slide are whole numbers of events"),
                };
                let size = count(window.size)?;
                let slide = window.slide.map(|s| count(Some(s))).transpose()?;
                match slide {
                    None => {
                        let mut ws = WindowSpec::new(GlobalWindows);
                        ws.trigger = Arc::new(PurgingTrigger::of(CountTrigger::of(size)));
                        let contents =
                            AggregateContents::new(aggregates.clone(), keep as CountFinish);
                        Windows::Count(Box::new(WindowOperator::new(
                            ws,
                            Arc::new(contents),
                            Box::new(MemoryBackend::new()),
                            clock.clone(),
                        )))
                    }
                    Some(slide) => {
                        // Flink's countWindow(size, slide): a count trigger every `slide`
                        // elements, an evictor that keeps the last `size`.
                        let mut ws = WindowSpec::new(GlobalWindows);
                        ws.trigger = Arc::new(CountTrigger::of(slide));
                        let keep_last = usize::try_from(size).unwrap_or(usize::MAX);
                        let contents =
                            ListContents::new(FoldElements(aggregates.clone()), Some(keep_last));
                        Windows::SlidingCount(Box::new(WindowOperator::new(
                            ws,
                            Arc::new(contents),
                            Box::new(MemoryBackend::new()),
                            clock.clone(),
                        )))
                    }
                }
            }
        };
        Ok(WindowStage {
            selection: window.patterns.clone(),
            results,
            key_path,
            fields,
            aggregates,
            windows,
            out_of_orderness: spec.watermark.out_of_orderness.0,
            max_ts: Timestamp::MIN,
            watermark: Timestamp::MIN,
            events_in: 0,
            late,
            records: Vec::new(),
            time_records: Vec::new(),
            side: SideOutputs::new(),
        })
    }

    /// Puts an event into its windows; true if it is later than the allowed lateness for all
    /// of them.
    fn process(&mut self, key: String, ts: Timestamp, event: &Value) -> Result<bool, RecordError> {
        check_window_time(ts)?;
        self.events_in += 1;
        let element = Element {
            ts,
            key: self.key_path.get(event).cloned().unwrap_or(Value::Null),
            fields: self
                .fields
                .iter()
                .map(|f| f.get(event).filter(|v| !v.is_null()).cloned())
                .collect(),
        };
        let mut output = cep_runtime::Output {
            records: &mut self.records,
            side: &mut self.side,
        };
        match &mut self.windows {
            Windows::Time(op) => {
                let mut output = cep_runtime::Output {
                    records: &mut self.time_records,
                    side: output.side,
                };
                op.process_element(ts, (key, element), &mut output)
            }
            Windows::Count(op) => op.process_element(ts, (key, element), &mut output),
            Windows::SlidingCount(op) => op.process_element(ts, (key, element), &mut output),
        }
        .map_err(runtime_error)?;
        Ok(!self.side.take(&self.late).is_empty())
    }

    /// Pushes the window results waiting into the results engine, each at its window's end - 1
    /// (the engine's watermark does not move).
    fn emit(&mut self, out: &mut Vec<Output>) {
        let mut results = Vec::new();
        for (at, (w, acc)) in self.time_records.drain(..) {
            // The runtime emits a time window's result at its max timestamp, `end - 1`.
            debug_assert_eq!(at, w.end - 1);
            results.push(self.aggregates.finish(&acc, w.start, w.end));
        }
        for (_, acc) in self.records.drain(..) {
            // A count window (a global window) never ends; its result is timed by its events.
            let end = acc.max_ts.saturating_add(1);
            results.push(self.aggregates.finish(&acc, acc.min_ts, end));
        }
        for r in results {
            let key = match &r.key {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let ts = r.end - 1;
            let event = self.event_of(r);
            self.results.push_keyed(key, ts, &event, out);
        }
    }

    /// A window result as the event the patterns see.
    fn event_of(&self, r: WindowResult) -> Value {
        let mut map = Map::new();
        self.key_path.insert(&mut map, r.key);
        map.insert("window_start".into(), Value::from(r.start));
        map.insert("window_end".into(), Value::from(r.end));
        for (name, v) in r.values {
            map.insert(name, v);
        }
        Value::Object(map)
    }
}
