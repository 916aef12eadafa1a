//! Keyed process functions (Flink's `KeyedProcessFunction`): user code called per event and per timer
//! with the current key, keyed state, timers, the watermark and side outputs.

use std::marker::PhantomData;
use std::sync::Arc;

use crate::error::Result;
use crate::operator::{Key, Operator, OperatorSnapshot, Output, OutputTag};
use crate::state::{KeyedStateStore, StateBackend};
use crate::time::{Clock, Timestamp, MAX_WATERMARK};
use crate::timers::{TimeDomain, TimerService};

/// User logic over a keyed stream.
pub trait KeyedProcessFunction<K, I, O>: Send {
    /// Called for every element; `ctx.timestamp()` is the element's timestamp.
    fn process_element(&mut self, value: I, ctx: &mut Context<'_, K, O>) -> Result<()>;

    /// Called when a timer registered for `ctx.key()` fires; `ctx.time_domain()` says which kind.
    fn on_timer(&mut self, _timestamp: Timestamp, _ctx: &mut Context<'_, K, O>) -> Result<()> {
        Ok(())
    }
}

/// What a process function sees: the current key and timestamp, keyed state, timers, and outputs.
pub struct Context<'a, K, O> {
    key: &'a K,
    timestamp: Timestamp,
    domain: Option<TimeDomain>,
    state: &'a mut KeyedStateStore,
    timers: &'a mut TimerService<K>,
    out: Output<'a, O>,
}

impl<K: Key, O> Context<'_, K, O> {
    /// The current key.
    pub fn key(&self) -> &K {
        self.key
    }

    /// The element's timestamp, or the timer's time inside `on_timer`.
    pub fn timestamp(&self) -> Timestamp {
        self.timestamp
    }

    /// `None` while processing an element; the firing timer's domain inside `on_timer`.
    pub fn time_domain(&self) -> Option<TimeDomain> {
        self.domain
    }

    /// Keyed state, scoped to the current key.
    pub fn state(&mut self) -> &mut KeyedStateStore {
        self.state
    }

    /// The current event-time watermark.
    pub fn current_watermark(&self) -> Timestamp {
        self.timers.current_watermark()
    }

    /// The current processing time.
    pub fn current_processing_time(&self) -> Timestamp {
        self.timers.current_processing_time()
    }

    /// Registers an event-time timer for the current key (duplicates coalesce).
    pub fn register_event_time_timer(&mut self, timestamp: Timestamp) {
        self.timers
            .register_event_time_timer(self.key, &(), timestamp);
    }

    /// Deletes an event-time timer of the current key.
    pub fn delete_event_time_timer(&mut self, timestamp: Timestamp) {
        self.timers
            .delete_event_time_timer(self.key, &(), timestamp);
    }

    /// Registers a processing-time timer for the current key (duplicates coalesce).
    pub fn register_processing_time_timer(&mut self, timestamp: Timestamp) {
        self.timers
            .register_processing_time_timer(self.key, &(), timestamp);
    }

    /// Deletes a processing-time timer of the current key.
    pub fn delete_processing_time_timer(&mut self, timestamp: Timestamp) {
        self.timers
            .delete_processing_time_timer(self.key, &(), timestamp);
    }

    /// Emits `value` on the main output with the current timestamp.
    pub fn collect(&mut self, value: O) {
        self.out.collect(self.timestamp, value);
    }

    /// Emits `value` on the main output with an explicit timestamp.
    pub fn collect_with_timestamp(&mut self, timestamp: Timestamp, value: O) {
        self.out.collect(timestamp, value);
    }

    /// Emits `value` on the side output `tag`.
    pub fn output<T: Send + 'static>(&mut self, tag: &OutputTag<T>, value: T) {
        self.out.side.emit(tag, value);
    }
}

/// Runs a [`KeyedProcessFunction`] over `(key, value)` elements.
pub struct KeyedProcessOperator<K, I, O, F> {
    function: F,
    state: KeyedStateStore,
    timers: TimerService<K>,
    _t: PhantomData<fn(I) -> O>,
}

impl<K: Key, I, O, F: KeyedProcessFunction<K, I, O>> KeyedProcessOperator<K, I, O, F> {
    /// An operator over `backend`, reading processing time from `clock`.
    pub fn new(function: F, backend: Box<dyn StateBackend>, clock: Arc<dyn Clock>) -> Self {
        KeyedProcessOperator {
            function,
            state: KeyedStateStore::new(backend),
            timers: TimerService::new(clock),
            _t: PhantomData,
        }
    }

    /// The keyed state (for snapshots and inspection).
    pub fn state(&mut self) -> &mut KeyedStateStore {
        &mut self.state
    }

    /// The timer service.
    pub fn timers(&self) -> &TimerService<K> {
        &self.timers
    }

    fn fire_processing_timers(&mut self, now: Timestamp, out: &mut Output<'_, O>) -> Result<()> {
        while let Some(t) = self.timers.pop_processing_timer(now) {
            self.state.set_current_key(&t.key)?;
            self.state.clear_namespace();
            let mut ctx = Context {
                key: &t.key,
                timestamp: t.timestamp,
                domain: Some(TimeDomain::ProcessingTime),
                state: &mut self.state,
                timers: &mut self.timers,
                out: out.reborrow(),
            };
            self.function.on_timer(t.timestamp, &mut ctx)?;
        }
        Ok(())
    }
}

impl<K, I, O, F> Operator<(K, I), O> for KeyedProcessOperator<K, I, O, F>
where
    K: Key,
    I: Send,
    O: Send,
    F: KeyedProcessFunction<K, I, O>,
{
    fn process_element(
        &mut self,
        timestamp: Timestamp,
        (key, value): (K, I),
        out: &mut Output<'_, O>,
    ) -> Result<()> {
        self.state.set_current_key(&key)?;
        self.state.clear_namespace();
        let mut ctx = Context {
            key: &key,
            timestamp,
            domain: None,
            state: &mut self.state,
            timers: &mut self.timers,
            out: out.reborrow(),
        };
        self.function.process_element(value, &mut ctx)
    }

    fn process_watermark(&mut self, watermark: Timestamp, out: &mut Output<'_, O>) -> Result<()> {
        self.timers.advance_watermark(watermark);
        while let Some(t) = self.timers.pop_event_timer() {
            self.state.set_current_key(&t.key)?;
            self.state.clear_namespace();
            let mut ctx = Context {
                key: &t.key,
                timestamp: t.timestamp,
                domain: Some(TimeDomain::EventTime),
                state: &mut self.state,
                timers: &mut self.timers,
                out: out.reborrow(),
            };
            self.function.on_timer(t.timestamp, &mut ctx)?;
        }
        Ok(())
    }

    fn process_processing_time(&mut self, now: Timestamp, out: &mut Output<'_, O>) -> Result<()> {
        self.fire_processing_timers(now, out)
    }

    fn next_processing_time(&self) -> Option<Timestamp> {
        self.timers.next_processing_time()
    }

    fn end_of_input(&mut self, out: &mut Output<'_, O>) -> Result<()> {
        // A bounded job ends as if processing time had reached +infinity too (Flink's batch rule).
        self.fire_processing_timers(MAX_WATERMARK, out)
    }

    fn snapshot(&self) -> Result<Option<OperatorSnapshot>> {
        Ok(Some(OperatorSnapshot {
            state: self.state.backend().snapshot()?,
            timers: self.timers.snapshot()?,
        }))
    }

    fn restore(&mut self, snapshot: OperatorSnapshot) -> Result<()> {
        self.state.backend_mut().restore(snapshot.state)?;
        self.timers.restore(&snapshot.timers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::SideOutputs;
    use crate::state::{MemoryBackend, ValueState};
    use crate::time::ManualClock;

    /// Counts events per key and emits (key, count) one second after the last event of the key,
    /// Flink's classic "count with timeout" example; events behind the watermark go to a side output.
    #[derive(Clone)]
    struct CountWithTimeout {
        state: ValueState<(u64, Timestamp)>,
        late: OutputTag<(String, Timestamp)>,
    }

    impl KeyedProcessFunction<String, Timestamp, (String, u64)> for CountWithTimeout {
        fn process_element(
            &mut self,
            ts: Timestamp,
            ctx: &mut Context<'_, String, (String, u64)>,
        ) -> Result<()> {
            if ts <= ctx.current_watermark() {
                let k = ctx.key().clone();
                ctx.output(&self.late, (k, ts));
                return Ok(());
            }
            let (count, _) = self.state.get(ctx.state())?.unwrap_or((0, 0));
            self.state.update(ctx.state(), &(count + 1, ts))?;
            ctx.register_event_time_timer(ts + 1000);
            Ok(())
        }

        fn on_timer(
            &mut self,
            timestamp: Timestamp,
            ctx: &mut Context<'_, String, (String, u64)>,
        ) -> Result<()> {
            assert_eq!(ctx.time_domain(), Some(TimeDomain::EventTime));
            if let Some((count, last)) = self.state.get(ctx.state())? {
                if timestamp == last + 1000 {
                    let k = ctx.key().clone();
                    ctx.collect((k, count));
                    self.state.clear(ctx.state())?;
                }
            }
            Ok(())
        }
    }

    #[test]
    fn count_with_timeout_fires_on_watermark() {
        let late = OutputTag::new("late");
        let mut op = KeyedProcessOperator::new(
            CountWithTimeout {
                state: ValueState::new("count"),
                late: late.clone(),
            },
            Box::new(MemoryBackend::new()),
            Arc::new(ManualClock::new(0)),
        );
        let mut records = Vec::new();
        let mut side = SideOutputs::new();
        let mut out = Output {
            records: &mut records,
            side: &mut side,
        };
        let a = || "a".to_string();
        let b = || "b".to_string();
        op.process_element(100, (a(), 100), &mut out).unwrap();
        op.process_element(500, (b(), 500), &mut out).unwrap();
        op.process_element(900, (a(), 900), &mut out).unwrap();
        // a's first timer (1100) fires but is stale; b's (1500) fires with count 1.
        op.process_watermark(1500, &mut out).unwrap();
        assert_eq!(out.records, &vec![(1500, (b(), 1))]);
        op.process_element(1200, (a(), 1200), &mut out).unwrap(); // late: 1200 <= 1500
        op.process_watermark(i64::MAX, &mut out).unwrap();
        assert_eq!(out.records, &vec![(1500, (b(), 1)), (1900, (a(), 2))]);
        assert_eq!(side.get(&late), &[(a(), 1200)]);
    }

    #[derive(Clone)]
    struct Heartbeat;
    impl KeyedProcessFunction<u32, (), u32> for Heartbeat {
        fn process_element(&mut self, _: (), ctx: &mut Context<'_, u32, u32>) -> Result<()> {
            let at = ctx.current_processing_time() + 10;
            ctx.register_processing_time_timer(at);
            ctx.register_processing_time_timer(at);
            Ok(())
        }
        fn on_timer(&mut self, ts: Timestamp, ctx: &mut Context<'_, u32, u32>) -> Result<()> {
            assert_eq!(ctx.time_domain(), Some(TimeDomain::ProcessingTime));
            let k = *ctx.key();
            ctx.collect_with_timestamp(ts, k);
            Ok(())
        }
    }

    #[test]
    fn processing_time_timers_fire_from_the_injected_clock() {
        let clock = ManualClock::new(1000);
        let mut op = KeyedProcessOperator::new(
            Heartbeat,
            Box::new(MemoryBackend::new()),
            Arc::new(clock.clone()),
        );
        let mut records = Vec::new();
        let mut side = SideOutputs::new();
        let mut out = Output {
            records: &mut records,
            side: &mut side,
        };
        op.process_element(0, (7, ()), &mut out).unwrap();
        clock.advance(5);
        op.process_element(0, (8, ()), &mut out).unwrap();
        assert_eq!(op.next_processing_time(), Some(1010));
        op.process_processing_time(clock.now(), &mut out).unwrap();
        assert!(out.records.is_empty());
        clock.set(1012);
        op.process_processing_time(clock.now(), &mut out).unwrap();
        assert_eq!(out.records, &vec![(1010, 7)]);
        op.end_of_input(&mut out).unwrap();
        assert_eq!(out.records, &vec![(1010, 7), (1015, 8)]);
    }
}
