//! Triggers: when a window's contents are emitted (Flink's `Trigger`).

use std::sync::Arc;

use super::Window;
use crate::error::Result;
use crate::state::{KeyedStateStore, ValueState};
use crate::time::{Clock, Timestamp};
use crate::timers::TimeDomain;

/// What a trigger decides for a window.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TriggerResult {
    /// Do nothing.
    Continue,
    /// Emit the window's contents, keep them.
    Fire,
    /// Drop the window's contents without emitting.
    Purge,
    /// Emit the window's contents, then drop them.
    FireAndPurge,
}

impl TriggerResult {
    /// Whether the window is emitted.
    pub fn is_fire(self) -> bool {
        matches!(self, TriggerResult::Fire | TriggerResult::FireAndPurge)
    }

    /// Whether the window's contents are dropped.
    pub fn is_purge(self) -> bool {
        matches!(self, TriggerResult::Purge | TriggerResult::FireAndPurge)
    }
}

/// A timer registration requested by a trigger, applied by the operator for the current key and window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TimerOp {
    pub(crate) domain: TimeDomain,
    pub(crate) timestamp: Timestamp,
    pub(crate) register: bool,
}

/// What a trigger sees: time, timers of the current key and window, and state scoped to them.
pub struct TriggerContext<'a> {
    pub(crate) watermark: Timestamp,
    pub(crate) clock: &'a Arc<dyn Clock>,
    pub(crate) state: &'a mut KeyedStateStore,
    pub(crate) ops: &'a mut Vec<TimerOp>,
}

impl TriggerContext<'_> {
    /// The current watermark.
    pub fn current_watermark(&self) -> Timestamp {
        self.watermark
    }

    /// The current processing time.
    pub fn current_processing_time(&self) -> Timestamp {
        self.clock.now()
    }

    /// State of the current key, in the current window's namespace.
    pub fn state(&mut self) -> &mut KeyedStateStore {
        self.state
    }

    fn op(&mut self, domain: TimeDomain, timestamp: Timestamp, register: bool) {
        self.ops.push(TimerOp {
            domain,
            timestamp,
            register,
        });
    }

    /// Registers an event-time timer for the current key and window.
    pub fn register_event_time_timer(&mut self, timestamp: Timestamp) {
        self.op(TimeDomain::EventTime, timestamp, true);
    }

    /// Deletes an event-time timer of the current key and window.
    pub fn delete_event_time_timer(&mut self, timestamp: Timestamp) {
        self.op(TimeDomain::EventTime, timestamp, false);
    }

    /// Registers a processing-time timer for the current key and window.
    pub fn register_processing_time_timer(&mut self, timestamp: Timestamp) {
        self.op(TimeDomain::ProcessingTime, timestamp, true);
    }

    /// Deletes a processing-time timer of the current key and window.
    pub fn delete_processing_time_timer(&mut self, timestamp: Timestamp) {
        self.op(TimeDomain::ProcessingTime, timestamp, false);
    }
}

/// Decides when windows fire and purge. Triggers are shared between workers, so any per-window state
/// goes into `ctx.state()`, never into `self`.
pub trait Trigger<T, W: Window>: Send + Sync {
    /// Called for every element added to `window`.
    fn on_element(
        &self,
        element: &T,
        timestamp: Timestamp,
        window: &W,
        ctx: &mut TriggerContext<'_>,
    ) -> Result<TriggerResult>;

    /// Called when an event-time timer of `window` fires.
    fn on_event_time(
        &self,
        time: Timestamp,
        window: &W,
        ctx: &mut TriggerContext<'_>,
    ) -> Result<TriggerResult>;

    /// Called when a processing-time timer of `window` fires.
    fn on_processing_time(
        &self,
        time: Timestamp,
        window: &W,
        ctx: &mut TriggerContext<'_>,
    ) -> Result<TriggerResult>;

    /// Called when `merged` windows were merged into `window` (session windows). The state namespace
    /// is `window`; the merged windows' timers are cleared by the operator through [`Trigger::clear`].
    fn on_merge(&self, _window: &W, _merged: &[W], _ctx: &mut TriggerContext<'_>) -> Result<()> {
        Ok(())
    }

    /// Called when `window` is purged for good: delete its timers and state.
    fn clear(&self, _window: &W, _ctx: &mut TriggerContext<'_>) -> Result<()> {
        Ok(())
    }

    /// The names of the keyed states the trigger keeps, so that one key's state can be copied out
    /// of the operator and back (per-key snapshots).
    fn state_names(&self) -> Vec<String> {
        Vec::new()
    }
}

/// Fires once the watermark passes the window's end, and again for every late element within the
/// allowed lateness (Flink's default `EventTimeTrigger`).
#[derive(Clone, Copy, Debug, Default)]
pub struct EventTimeTrigger;

impl<T, W: Window> Trigger<T, W> for EventTimeTrigger {
    fn on_element(
        &self,
        _: &T,
        _: Timestamp,
        window: &W,
        ctx: &mut TriggerContext<'_>,
    ) -> Result<TriggerResult> {
        if window.max_timestamp() <= ctx.current_watermark() {
            // Already past the end: a late element within the allowed lateness fires at once.
            Ok(TriggerResult::Fire)
        } else {
            ctx.register_event_time_timer(window.max_timestamp());
            Ok(TriggerResult::Continue)
        }
    }

    fn on_event_time(
        &self,
        time: Timestamp,
        window: &W,
        _: &mut TriggerContext<'_>,
    ) -> Result<TriggerResult> {
        Ok(if time == window.max_timestamp() {
            TriggerResult::Fire
        } else {
            TriggerResult::Continue
        })
    }

    fn on_processing_time(
        &self,
        _: Timestamp,
        _: &W,
        _: &mut TriggerContext<'_>,
    ) -> Result<TriggerResult> {
        Ok(TriggerResult::Continue)
    }

    fn on_merge(&self, window: &W, _merged: &[W], ctx: &mut TriggerContext<'_>) -> Result<()> {
        if window.max_timestamp() > ctx.current_watermark() {
            ctx.register_event_time_timer(window.max_timestamp());
        }
        Ok(())
    }

    fn clear(&self, window: &W, ctx: &mut TriggerContext<'_>) -> Result<()> {
        ctx.delete_event_time_timer(window.max_timestamp());
        Ok(())
    }
}

/// Fires when processing time passes the window's end (Flink's `ProcessingTimeTrigger`).
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcessingTimeTrigger;

impl<T, W: Window> Trigger<T, W> for ProcessingTimeTrigger {
    fn on_element(
        &self,
        _: &T,
        _: Timestamp,
        window: &W,
        ctx: &mut TriggerContext<'_>,
    ) -> Result<TriggerResult> {
        ctx.register_processing_time_timer(window.max_timestamp());
        Ok(TriggerResult::Continue)
    }

    fn on_event_time(
        &self,
        _: Timestamp,
        _: &W,
        _: &mut TriggerContext<'_>,
    ) -> Result<TriggerResult> {
        Ok(TriggerResult::Continue)
    }

    fn on_processing_time(
        &self,
        _: Timestamp,
        _: &W,
        _: &mut TriggerContext<'_>,
    ) -> Result<TriggerResult> {
        Ok(TriggerResult::Fire)
    }

    fn on_merge(&self, window: &W, _merged: &[W], ctx: &mut TriggerContext<'_>) -> Result<()> {
        ctx.register_processing_time_timer(window.max_timestamp());
        Ok(())
    }

    fn clear(&self, window: &W, ctx: &mut TriggerContext<'_>) -> Result<()> {
        ctx.delete_processing_time_timer(window.max_timestamp());
        Ok(())
    }
}

/// Fires every `count` elements of a window (Flink's `CountTrigger`).
#[derive(Clone, Debug)]
pub struct CountTrigger {
    count: u64,
    state: ValueState<u64>,
}

impl CountTrigger {
    /// Fires once `count` elements have arrived (since the last firing).
    pub fn of(count: u64) -> Self {
        CountTrigger {
            count,
            state: ValueState::new("count-trigger"),
        }
    }
}

impl<T, W: Window> Trigger<T, W> for CountTrigger {
    fn on_element(
        &self,
        _: &T,
        _: Timestamp,
        _: &W,
        ctx: &mut TriggerContext<'_>,
    ) -> Result<TriggerResult> {
        let n = self.state.get(ctx.state())?.unwrap_or(0) + 1;
        if n >= self.count {
            self.state.clear(ctx.state())?;
            Ok(TriggerResult::Fire)
        } else {
            self.state.update(ctx.state(), &n)?;
            Ok(TriggerResult::Continue)
        }
    }

    fn on_event_time(
        &self,
        _: Timestamp,
        _: &W,
        _: &mut TriggerContext<'_>,
    ) -> Result<TriggerResult> {
        Ok(TriggerResult::Continue)
    }

    fn on_processing_time(
        &self,
        _: Timestamp,
        _: &W,
        _: &mut TriggerContext<'_>,
    ) -> Result<TriggerResult> {
        Ok(TriggerResult::Continue)
    }

    fn on_merge(&self, window: &W, merged: &[W], ctx: &mut TriggerContext<'_>) -> Result<()> {
        // Sum the merged windows' counts into the result window, as Flink's mergePartitionedState.
        let mut total = 0;
        for m in merged {
            ctx.state().set_namespace(m)?;
            total += self.state.get(ctx.state())?.unwrap_or(0);
            self.state.clear(ctx.state())?;
        }
        ctx.state().set_namespace(window)?;
        total += self.state.get(ctx.state())?.unwrap_or(0);
        self.state.update(ctx.state(), &total)
    }

    fn clear(&self, _: &W, ctx: &mut TriggerContext<'_>) -> Result<()> {
        self.state.clear(ctx.state())
    }

    fn state_names(&self) -> Vec<String> {
        vec![self.state.name().to_owned()]
    }
}

/// Turns every `Fire` of the inner trigger into `FireAndPurge` (Flink's `PurgingTrigger`).
pub struct PurgingTrigger<T, W> {
    inner: Arc<dyn Trigger<T, W>>,
}

impl<T, W> Clone for PurgingTrigger<T, W> {
    fn clone(&self) -> Self {
        PurgingTrigger {
            inner: self.inner.clone(),
        }
    }
}

impl<T: 'static, W: Window> PurgingTrigger<T, W> {
    /// Wraps `inner`.
    pub fn of(inner: impl Trigger<T, W> + 'static) -> Self {
        PurgingTrigger {
            inner: Arc::new(inner),
        }
    }

    fn purge(r: TriggerResult) -> TriggerResult {
        if r.is_fire() {
            TriggerResult::FireAndPurge
        } else {
            r
        }
    }
}

impl<T: 'static, W: Window> Trigger<T, W> for PurgingTrigger<T, W> {
    fn on_element(
        &self,
        e: &T,
        ts: Timestamp,
        window: &W,
        ctx: &mut TriggerContext<'_>,
    ) -> Result<TriggerResult> {
        self.inner.on_element(e, ts, window, ctx).map(Self::purge)
    }

    fn on_event_time(
        &self,
        time: Timestamp,
        window: &W,
        ctx: &mut TriggerContext<'_>,
    ) -> Result<TriggerResult> {
        self.inner.on_event_time(time, window, ctx).map(Self::purge)
    }

    fn on_processing_time(
        &self,
        time: Timestamp,
        window: &W,
        ctx: &mut TriggerContext<'_>,
    ) -> Result<TriggerResult> {
        self.inner
            .on_processing_time(time, window, ctx)
            .map(Self::purge)
    }

    fn on_merge(&self, window: &W, merged: &[W], ctx: &mut TriggerContext<'_>) -> Result<()> {
        self.inner.on_merge(window, merged, ctx)
    }

    fn clear(&self, window: &W, ctx: &mut TriggerContext<'_>) -> Result<()> {
        self.inner.clear(window, ctx)
    }

    fn state_names(&self) -> Vec<String> {
        self.inner.state_names()
    }
}

#[cfg(test)]
mod tests {
    use super::super::TimeWindow;
    use super::*;
    use crate::time::ManualClock;

    #[test]
    fn event_time_trigger_registers_end_and_fires_late_elements() {
        let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(0));
        let mut store = KeyedStateStore::default();
        let mut ops = Vec::new();
        let w = TimeWindow::new(0, 10);
        let mut ctx = TriggerContext {
            watermark: 5,
            clock: &clock,
            state: &mut store,
            ops: &mut ops,
        };
        let t = EventTimeTrigger;
        assert_eq!(
            Trigger::<(), _>::on_element(&t, &(), 3, &w, &mut ctx).unwrap(),
            TriggerResult::Continue
        );
        ctx.watermark = 9;
        assert_eq!(
            Trigger::<(), _>::on_element(&t, &(), 3, &w, &mut ctx).unwrap(),
            TriggerResult::Fire
        );
        assert_eq!(
            Trigger::<(), _>::on_event_time(&t, 9, &w, &mut ctx).unwrap(),
            TriggerResult::Fire
        );
        assert_eq!(
            ops,
            vec![TimerOp {
                domain: TimeDomain::EventTime,
                timestamp: 9,
                register: true
            }]
        );
    }

    #[test]
    fn purging_count_trigger_fires_and_purges_every_n() {
        let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(0));
        let mut store = KeyedStateStore::default();
        store.set_current_key("k").unwrap();
        let mut ops = Vec::new();
        let mut ctx = TriggerContext {
            watermark: 0,
            clock: &clock,
            state: &mut store,
            ops: &mut ops,
        };
        let t = PurgingTrigger::<u8, super::super::GlobalWindow>::of(CountTrigger::of(3));
        let results: Vec<_> = (0..7)
            .map(|i| {
                t.on_element(&i, 0, &super::super::GlobalWindow, &mut ctx)
                    .unwrap()
            })
            .collect();
        use TriggerResult::*;
        assert_eq!(
            results,
            vec![
                Continue,
                Continue,
                FireAndPurge,
                Continue,
                Continue,
                FireAndPurge,
                Continue
            ]
        );
    }
}
