//! The shared vocabulary of time: timestamps, watermarks, watermark strategies, the min-over-inputs
//! combiner and injectable clocks.
//!
//! A watermark `w` is a promise that no more events with a timestamp `<= w` will arrive; an event that
//! does arrive with such a timestamp is *late* (see [`is_late`]). Watermarks only move forward, and a
//! bounded input ends with [`MAX_WATERMARK`], which fires every pending timer and window.

use std::fmt;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// Event or processing time in milliseconds since the Unix epoch.
pub type Timestamp = i64;

/// The watermark of an input that has not produced one yet: everything is still possible.
pub const MIN_WATERMARK: Timestamp = i64::MIN;

/// The watermark at +infinity, emitted when a bounded input ends.
pub const MAX_WATERMARK: Timestamp = i64::MAX;

/// Whether an event with timestamp `ts` is late with respect to `watermark`.
#[inline]
pub fn is_late(ts: Timestamp, watermark: Timestamp) -> bool {
    ts <= watermark
}

/// The progress of one input: either an event-time watermark or a declaration that the input is idle
/// and must not hold back the combined watermark (Arroyo's `arroyo-types::Watermark`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Watermark {
    /// No more events with a timestamp `<=` this one will arrive on the input.
    EventTime(Timestamp),
    /// The input has no events for now; it is ignored until it produces a watermark again.
    Idle,
}

/// Combines the watermarks of several inputs (or partitions) into one: the minimum over the inputs that
/// are not idle. An input that has reported nothing yet holds the combined watermark at
/// [`MIN_WATERMARK`]. The combined event-time watermark never moves backwards, even when an idle input
/// becomes active again with an older watermark.
#[derive(Clone, Debug)]
pub struct WatermarkHolder {
    inputs: Vec<Option<Watermark>>,
    current: Option<Watermark>,
    last_event_time: Timestamp,
}

impl WatermarkHolder {
    /// A holder for `inputs` inputs, none of which has reported yet.
    pub fn new(inputs: usize) -> Self {
        WatermarkHolder {
            inputs: vec![None; inputs],
            current: None,
            last_event_time: MIN_WATERMARK,
        }
    }

    /// The number of inputs.
    pub fn len(&self) -> usize {
        self.inputs.len()
    }

    /// Whether the holder has no inputs.
    pub fn is_empty(&self) -> bool {
        self.inputs.is_empty()
    }

    /// The combined watermark, `None` until every input has reported.
    pub fn watermark(&self) -> Option<Watermark> {
        self.current
    }

    /// The combined event-time watermark ([`MIN_WATERMARK`] before there is one). Stays at its last
    /// value while all inputs are idle.
    pub fn event_time(&self) -> Timestamp {
        self.last_event_time
    }

    /// Records `watermark` for `input` and returns the combined watermark if it changed: an event-time
    /// watermark only when it advanced, `Idle` when every input became idle.
    ///
    /// # Panics
    /// If `input` is out of range.
    pub fn set(&mut self, input: usize, watermark: Watermark) -> Option<Watermark> {
        if let (Some(Watermark::EventTime(old)), Watermark::EventTime(new)) =
            (self.inputs[input], watermark)
        {
            if new < old {
                // A single input's watermark never regresses; ignore a stale one.
                return None;
            }
        }
        self.inputs[input] = Some(watermark);
        let mut min: Option<Timestamp> = None;
        for w in &self.inputs {
            match w {
                None => return None,
                Some(Watermark::Idle) => {}
                Some(Watermark::EventTime(t)) => min = Some(min.map_or(*t, |m| m.min(*t))),
            }
        }
        let combined = match min {
            None => Watermark::Idle,
            Some(t) => Watermark::EventTime(t.max(self.last_event_time)),
        };
        let changed = match (self.current, combined) {
            (Some(Watermark::EventTime(old)), Watermark::EventTime(new)) => new > old,
            (old, new) => old != Some(new),
        };
        self.current = Some(combined);
        if let Watermark::EventTime(t) = combined {
            self.last_event_time = t;
        }
        changed.then_some(combined)
    }
}

/// A source of processing time. Injectable so that tests can drive processing-time timers and idleness.
pub trait Clock: Send + Sync + fmt::Debug {
    /// The current processing time in milliseconds.
    fn now(&self) -> Timestamp;
}

/// The wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as Timestamp)
            .unwrap_or(0)
    }
}

/// A clock that only moves when told to; clones share the same time.
#[derive(Clone, Debug, Default)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    /// A clock showing `now`.
    pub fn new(now: Timestamp) -> Self {
        ManualClock(Arc::new(AtomicI64::new(now)))
    }

    /// Sets the time.
    pub fn set(&self, now: Timestamp) {
        self.0.store(now, Ordering::SeqCst);
    }

    /// Moves the time forward by `millis`.
    pub fn advance(&self, millis: Timestamp) {
        self.0.fetch_add(millis, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        self.0.load(Ordering::SeqCst)
    }
}

/// Generates watermarks for one input from its events (Flink's `WatermarkGenerator`). The runtime
/// forwards a returned watermark only if it advances the input's watermark.
pub trait WatermarkGenerator<E>: Send {
    /// Called for every event with its extracted timestamp; punctuated generators emit here.
    fn on_event(&mut self, event: &E, timestamp: Timestamp) -> Option<Watermark>;
    /// Called periodically (after every batch of events); periodic generators emit here.
    fn on_periodic_emit(&mut self) -> Option<Watermark>;
}

/// Watermark = largest timestamp seen - `bound` - 1, as Flink's `BoundedOutOfOrdernessWatermarks`.
/// With `bound = 0` this is Flink's `AscendingTimestampsWatermarks` (monotonous timestamps).
#[derive(Clone, Debug)]
pub struct BoundedOutOfOrderness {
    bound: Timestamp,
    max_timestamp: Timestamp,
}

impl BoundedOutOfOrderness {
    /// A generator tolerating events up to `bound` milliseconds out of order.
    pub fn new(bound: Timestamp) -> Self {
        BoundedOutOfOrderness {
            bound,
            // As in Flink: the first periodic watermark is i64::MIN.
            max_timestamp: MIN_WATERMARK.saturating_add(bound).saturating_add(1),
        }
    }
}

impl<E> WatermarkGenerator<E> for BoundedOutOfOrderness {
    fn on_event(&mut self, _event: &E, timestamp: Timestamp) -> Option<Watermark> {
        self.max_timestamp = self.max_timestamp.max(timestamp);
        None
    }

    fn on_periodic_emit(&mut self) -> Option<Watermark> {
        Some(Watermark::EventTime(
            self.max_timestamp
                .saturating_sub(self.bound)
                .saturating_sub(1),
        ))
    }
}

/// Emits the watermark that a function of each event returns (Flink's punctuated watermarks).
pub struct Punctuated<F>(pub F);

impl<E, F> WatermarkGenerator<E> for Punctuated<F>
where
    F: FnMut(&E, Timestamp) -> Option<Timestamp> + Send,
{
    fn on_event(&mut self, event: &E, timestamp: Timestamp) -> Option<Watermark> {
        (self.0)(event, timestamp).map(Watermark::EventTime)
    }

    fn on_periodic_emit(&mut self) -> Option<Watermark> {
        None
    }
}

/// Wraps a generator: if the input has no events for `timeout` milliseconds of processing time, it
/// declares itself [`Watermark::Idle`] so that it stops holding back the combined watermark.
pub struct WithIdleness<E> {
    inner: Box<dyn WatermarkGenerator<E>>,
    clock: Arc<dyn Clock>,
    timeout: Timestamp,
    last_activity: Timestamp,
    idle: bool,
}

impl<E> WithIdleness<E> {
    /// Wraps `inner`, reading processing time from `clock`.
    pub fn new(
        inner: Box<dyn WatermarkGenerator<E>>,
        timeout: Timestamp,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let last_activity = clock.now();
        WithIdleness {
            inner,
            clock,
            timeout,
            last_activity,
            idle: false,
        }
    }
}

impl<E> WatermarkGenerator<E> for WithIdleness<E> {
    fn on_event(&mut self, event: &E, timestamp: Timestamp) -> Option<Watermark> {
        self.last_activity = self.clock.now();
        self.idle = false;
        self.inner.on_event(event, timestamp)
    }

    fn on_periodic_emit(&mut self) -> Option<Watermark> {
        if self.clock.now() - self.last_activity >= self.timeout {
            self.idle = true;
            return Some(Watermark::Idle);
        }
        self.inner.on_periodic_emit()
    }
}

/// Wraps a generator for live inputs whose event time tracks wall-clock time: after `timeout`
/// milliseconds without events, the watermark moves on with the clock, as
/// `last watermark + (now - last event - timeout)`, so windows close and timers fire although no
/// event arrives. Unlike [`WithIdleness`] this keeps a single input's watermark moving rather than
/// letting other inputs overtake it. (Not a Flink built-in; Flink users write such a generator.)
pub struct WithIdleAdvance<E> {
    inner: Box<dyn WatermarkGenerator<E>>,
    clock: Arc<dyn Clock>,
    timeout: Timestamp,
    last_activity: Timestamp,
    last: Timestamp,
}

impl<E> WithIdleAdvance<E> {
    /// Wraps `inner`, reading processing time from `clock`.
    pub fn new(
        inner: Box<dyn WatermarkGenerator<E>>,
        timeout: Timestamp,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let last_activity = clock.now();
        WithIdleAdvance {
            inner,
            clock,
            timeout,
            last_activity,
            last: MIN_WATERMARK,
        }
    }

    fn track(&mut self, w: Option<Watermark>) -> Option<Watermark> {
        if let Some(Watermark::EventTime(t)) = w {
            self.last = self.last.max(t);
        }
        w
    }
}

impl<E> WatermarkGenerator<E> for WithIdleAdvance<E> {
    fn on_event(&mut self, event: &E, timestamp: Timestamp) -> Option<Watermark> {
        self.last_activity = self.clock.now();
        let w = self.inner.on_event(event, timestamp);
        self.track(w)
    }

    fn on_periodic_emit(&mut self) -> Option<Watermark> {
        let w = self.inner.on_periodic_emit();
        let w = self.track(w);
        let idle_for = self.clock.now() - self.last_activity;
        if idle_for > self.timeout && self.last > MIN_WATERMARK {
            Some(Watermark::EventTime(
                self.last.saturating_add(idle_for - self.timeout),
            ))
        } else {
            w
        }
    }
}

type TimestampFn<E> = Arc<dyn Fn(&E) -> Timestamp + Send + Sync>;
type GeneratorFactory<E> = Arc<dyn Fn() -> Box<dyn WatermarkGenerator<E>> + Send + Sync>;

/// How an input's events get timestamps and watermarks (Flink's `WatermarkStrategy`): a timestamp
/// assigner, a watermark generator factory and optional idleness detection.
pub struct WatermarkStrategy<E> {
    timestamps: Option<TimestampFn<E>>,
    generator: GeneratorFactory<E>,
    idleness: Option<(Timestamp, Arc<dyn Clock>)>,
    idle_advance: Option<(Timestamp, Arc<dyn Clock>)>,
}

impl<E> Clone for WatermarkStrategy<E> {
    fn clone(&self) -> Self {
        WatermarkStrategy {
            timestamps: self.timestamps.clone(),
            generator: self.generator.clone(),
            idleness: self.idleness.clone(),
            idle_advance: self.idle_advance.clone(),
        }
    }
}

impl<E: 'static> WatermarkStrategy<E> {
    /// Timestamps never decrease: watermark = largest timestamp - 1.
    pub fn for_monotonous_timestamps() -> Self {
        Self::for_bounded_out_of_orderness(0)
    }

    /// Events arrive at most `bound` milliseconds out of order: watermark = largest timestamp - bound - 1.
    pub fn for_bounded_out_of_orderness(bound: Timestamp) -> Self {
        Self::for_generator(move || Box::new(BoundedOutOfOrderness::new(bound)))
    }

    /// Watermarks are a function of each event (and its timestamp); `None` emits nothing.
    pub fn for_punctuated<F>(f: F) -> Self
    where
        F: Fn(&E, Timestamp) -> Option<Timestamp> + Clone + Send + Sync + 'static,
    {
        Self::for_generator(move || Box::new(Punctuated(f.clone())))
    }

    /// Watermarks come from a custom generator, one created per input.
    pub fn for_generator<G>(factory: G) -> Self
    where
        G: Fn() -> Box<dyn WatermarkGenerator<E>> + Send + Sync + 'static,
    {
        WatermarkStrategy {
            timestamps: None,
            generator: Arc::new(factory),
            idleness: None,
            idle_advance: None,
        }
    }

    /// Takes event timestamps from `f` (otherwise the records keep the timestamps they carry).
    pub fn with_timestamp_assigner<F>(mut self, f: F) -> Self
    where
        F: Fn(&E) -> Timestamp + Send + Sync + 'static,
    {
        self.timestamps = Some(Arc::new(f));
        self
    }

    /// Marks the input idle after `timeout` milliseconds of wall-clock time without events.
    pub fn with_idleness(self, timeout: Timestamp) -> Self {
        self.with_idleness_clock(timeout, Arc::new(SystemClock))
    }

    /// Marks the input idle after `timeout` milliseconds without events, as measured by `clock`.
    pub fn with_idleness_clock(mut self, timeout: Timestamp, clock: Arc<dyn Clock>) -> Self {
        self.idleness = Some((timeout, clock));
        self
    }

    /// After `timeout` ms of `clock` time without events, advance the watermark with the clock
    /// ([`WithIdleAdvance`]), for live single-input jobs whose windows must close without new events.
    pub fn with_idle_advance(mut self, timeout: Timestamp, clock: Arc<dyn Clock>) -> Self {
        self.idle_advance = Some((timeout, clock));
        self
    }

    /// The timestamp of `event`, or `existing` without a timestamp assigner.
    #[inline]
    pub fn extract_timestamp(&self, event: &E, existing: Timestamp) -> Timestamp {
        match &self.timestamps {
            Some(f) => f(event),
            None => existing,
        }
    }

    /// A new generator for one input.
    pub fn create_generator(&self) -> Box<dyn WatermarkGenerator<E>> {
        let mut inner = (self.generator)();
        if let Some((timeout, clock)) = &self.idle_advance {
            inner = Box::new(WithIdleAdvance::new(inner, *timeout, clock.clone()));
        }
        match &self.idleness {
            Some((timeout, clock)) => Box::new(WithIdleness::new(inner, *timeout, clock.clone())),
            None => inner,
        }
    }
}

/// Tracks what an input has emitted so that only advancing watermarks (and changes between idle and
/// active) are forwarded, as Flink's `WatermarkOutput` does.
#[derive(Clone, Debug)]
pub struct WatermarkEmitter {
    current: Timestamp,
    idle: bool,
}

impl Default for WatermarkEmitter {
    fn default() -> Self {
        WatermarkEmitter {
            current: MIN_WATERMARK,
            idle: false,
        }
    }
}

impl WatermarkEmitter {
    /// The last event-time watermark forwarded.
    pub fn current(&self) -> Timestamp {
        self.current
    }

    /// Whether the input is currently idle.
    pub fn is_idle(&self) -> bool {
        self.idle
    }

    /// Returns what to forward downstream for a generated watermark, if anything.
    pub fn emit(&mut self, watermark: Watermark) -> Option<Watermark> {
        match watermark {
            Watermark::Idle if self.idle => None,
            Watermark::Idle => {
                self.idle = true;
                Some(Watermark::Idle)
            }
            Watermark::EventTime(t) if t > self.current || (self.idle && t >= self.current) => {
                self.current = self.current.max(t);
                self.idle = false;
                Some(Watermark::EventTime(self.current))
            }
            Watermark::EventTime(_) => None,
        }
    }

    /// Called when an event arrives: an idle input becomes active again. Returns the watermark to
    /// re-announce, if the input was idle.
    pub fn mark_active(&mut self) -> Option<Watermark> {
        if self.idle {
            self.idle = false;
            Some(Watermark::EventTime(self.current))
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drive(strategy: &WatermarkStrategy<i64>, events: &[i64]) -> Vec<Watermark> {
        let mut generator = strategy.create_generator();
        let mut out = WatermarkEmitter::default();
        let mut emitted = Vec::new();
        for e in events {
            let ts = strategy.extract_timestamp(e, MIN_WATERMARK);
            if let Some(w) = generator.on_event(e, ts).and_then(|w| out.emit(w)) {
                emitted.push(w);
            }
            if let Some(w) = generator.on_periodic_emit().and_then(|w| out.emit(w)) {
                emitted.push(w);
            }
        }
        emitted
    }

    #[test]
    fn monotonous_watermark_is_max_minus_one() {
        let s =
            WatermarkStrategy::for_monotonous_timestamps().with_timestamp_assigner(|e: &i64| *e);
        assert_eq!(
            drive(&s, &[10, 20, 20, 30]),
            vec![
                Watermark::EventTime(9),
                Watermark::EventTime(19),
                Watermark::EventTime(29)
            ]
        );
    }

    #[test]
    fn bounded_out_of_orderness_is_max_minus_bound_minus_one_and_never_regresses() {
        let s = WatermarkStrategy::for_bounded_out_of_orderness(5)
            .with_timestamp_assigner(|e: &i64| *e);
        // The first periodic watermark is i64::MIN, as in Flink, and is not an advance.
        let mut g = s.create_generator();
        assert_eq!(g.on_periodic_emit(), Some(Watermark::EventTime(i64::MIN)));
        assert_eq!(
            drive(&s, &[10, 8, 20, 12, 26]),
            vec![
                Watermark::EventTime(4),
                Watermark::EventTime(14),
                Watermark::EventTime(20)
            ]
        );
    }

    #[test]
    fn punctuated_emits_what_the_function_returns() {
        let s = WatermarkStrategy::for_punctuated(|e: &i64, ts| (e % 10 == 0).then_some(ts))
            .with_timestamp_assigner(|e: &i64| *e);
        assert_eq!(
            drive(&s, &[3, 10, 7, 20, 5]),
            vec![Watermark::EventTime(10), Watermark::EventTime(20)]
        );
    }

    #[test]
    fn idleness_follows_the_injected_clock() {
        let clock = ManualClock::new(1_000);
        let s = WatermarkStrategy::for_monotonous_timestamps()
            .with_timestamp_assigner(|e: &i64| *e)
            .with_idleness_clock(100, Arc::new(clock.clone()));
        let mut g = s.create_generator();
        assert_eq!(g.on_event(&50, 50), None);
        assert_eq!(g.on_periodic_emit(), Some(Watermark::EventTime(49)));
        clock.advance(99);
        assert_eq!(g.on_periodic_emit(), Some(Watermark::EventTime(49)));
        clock.advance(1);
        assert_eq!(g.on_periodic_emit(), Some(Watermark::Idle));
        assert_eq!(g.on_event(&60, 60), None);
        assert_eq!(g.on_periodic_emit(), Some(Watermark::EventTime(59)));
    }

    #[test]
    fn idle_advance_moves_the_watermark_with_the_clock() {
        let clock = ManualClock::new(0);
        let s = WatermarkStrategy::for_bounded_out_of_orderness(10)
            .with_timestamp_assigner(|e: &i64| *e)
            .with_idle_advance(100, Arc::new(clock.clone()));
        let mut g = s.create_generator();
        // Nothing seen yet: nothing to advance from.
        clock.set(500);
        assert_eq!(g.on_periodic_emit(), Some(Watermark::EventTime(i64::MIN)));
        assert_eq!(g.on_event(&1_000, 1_000), None);
        assert_eq!(g.on_periodic_emit(), Some(Watermark::EventTime(989)));
        clock.set(600);
        assert_eq!(g.on_periodic_emit(), Some(Watermark::EventTime(989)));
        clock.set(650);
        assert_eq!(g.on_periodic_emit(), Some(Watermark::EventTime(1_039)));
        // An event stops the advance; the regular watermark (989) is behind what was emitted,
        // which the emitter will not forward.
        assert_eq!(g.on_event(&1_010, 1_010), None);
        assert_eq!(g.on_periodic_emit(), Some(Watermark::EventTime(999)));
    }

    #[test]
    fn holder_takes_min_over_non_idle_inputs() {
        let mut h = WatermarkHolder::new(3);
        assert_eq!(h.set(0, Watermark::EventTime(10)), None);
        assert_eq!(h.set(1, Watermark::EventTime(5)), None);
        // Every input has reported: min is 5.
        assert_eq!(
            h.set(2, Watermark::EventTime(7)),
            Some(Watermark::EventTime(5))
        );
        assert_eq!(
            h.set(1, Watermark::EventTime(20)),
            Some(Watermark::EventTime(7))
        );
        // Input 2 goes idle: it no longer holds the others back.
        assert_eq!(h.set(2, Watermark::Idle), Some(Watermark::EventTime(10)));
        // A stale watermark on one input is ignored.
        assert_eq!(h.set(0, Watermark::EventTime(3)), None);
        assert_eq!(h.set(0, Watermark::Idle), Some(Watermark::EventTime(20)));
        assert_eq!(h.set(1, Watermark::Idle), Some(Watermark::Idle));
        assert_eq!(h.event_time(), 20);
        // Input 2 comes back with an older watermark: the combined one does not move backwards.
        assert_eq!(
            h.set(2, Watermark::EventTime(8)),
            Some(Watermark::EventTime(20))
        );
        assert_eq!(
            h.set(2, Watermark::EventTime(25)),
            Some(Watermark::EventTime(25))
        );
        assert_eq!(h.event_time(), 25);
    }

    proptest::proptest! {
        /// Whatever the inputs report, the combined event-time watermark never decreases, and once
        /// every input has reported it is the larger of its previous value and the minimum over
        /// the non-idle inputs' latest (non-regressing) watermarks.
        #[test]
        fn holder_is_a_monotonic_min_over_active_inputs(
            updates in proptest::collection::vec((0usize..4, proptest::option::of(-50i64..50)), 0..60)
        ) {
            let mut h = WatermarkHolder::new(4);
            let mut latest: [Option<Watermark>; 4] = [None; 4];
            let mut last = MIN_WATERMARK;
            for (input, w) in updates {
                let w = w.map_or(Watermark::Idle, Watermark::EventTime);
                let out = h.set(input, w);
                // Model: an input's watermark does not regress.
                latest[input] = match (latest[input], w) {
                    (Some(Watermark::EventTime(old)), Watermark::EventTime(new)) if new < old => latest[input],
                    _ => Some(w),
                };
                if let Some(Watermark::EventTime(t)) = out {
                    proptest::prop_assert!(t >= last);
                }
                if latest.iter().all(Option::is_some) {
                    let min = latest.iter().filter_map(|w| match w {
                        Some(Watermark::EventTime(t)) => Some(*t),
                        _ => None,
                    }).min();
                    match min {
                        Some(m) => proptest::prop_assert_eq!(h.event_time(), m.max(last)),
                        None => proptest::prop_assert_eq!(h.watermark(), Some(Watermark::Idle)),
                    }
                } else {
                    proptest::prop_assert_eq!(out, None);
                }
                last = h.event_time();
            }
        }
    }

    #[test]
    fn late_means_at_or_before_the_watermark() {
        assert!(is_late(10, 10));
        assert!(!is_late(11, 10));
        assert!(is_late(i64::MAX, MAX_WATERMARK));
    }
}
