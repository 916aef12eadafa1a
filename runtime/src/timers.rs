//! Event-time and processing-time timers, per key and namespace.
//!
//! Timers live in ordered sets of `(timestamp, key, namespace)`, so that firing takes the smallest
//! entries without scanning keys (cost `O(log n)` per timer, whatever the number of keys), a duplicate
//! registration coalesces with the existing timer (as in Flink) and deletion is exact. An event-time
//! timer fires once the watermark has passed it (`timestamp <= watermark`, timely's notificator rule);
//! a processing-time timer once the [`Clock`] reaches it.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::time::{Clock, SystemClock, Timestamp, MIN_WATERMARK};

/// Which notion of time a timer belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TimeDomain {
    /// Fired by watermarks.
    EventTime,
    /// Fired by the clock.
    ProcessingTime,
}

/// A timer that fired: when, for which key and namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timer<K, N> {
    /// The timer's time.
    pub timestamp: Timestamp,
    /// The key it was registered for.
    pub key: K,
    /// The namespace (the window, for window operators; `()` otherwise).
    pub namespace: N,
}

/// The timers of one operator instance, for all its keys.
pub struct TimerService<K, N = ()> {
    event: BTreeSet<(Timestamp, K, N)>,
    processing: BTreeSet<(Timestamp, K, N)>,
    watermark: Timestamp,
    clock: Arc<dyn Clock>,
}

impl<K, N> fmt::Debug for TimerService<K, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TimerService")
            .field("event_timers", &self.event.len())
            .field("processing_timers", &self.processing.len())
            .field("watermark", &self.watermark)
            .finish()
    }
}

impl<K: Ord + Clone, N: Ord + Clone> Default for TimerService<K, N> {
    fn default() -> Self {
        Self::new(Arc::new(SystemClock))
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct TimerSnapshot<K, N> {
    event: Vec<(Timestamp, K, N)>,
    processing: Vec<(Timestamp, K, N)>,
    watermark: Timestamp,
}

impl<K: Ord + Clone, N: Ord + Clone> TimerService<K, N> {
    /// An empty service reading processing time from `clock`.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        TimerService {
            event: BTreeSet::new(),
            processing: BTreeSet::new(),
            watermark: MIN_WATERMARK,
            clock,
        }
    }

    /// The current event-time watermark.
    pub fn current_watermark(&self) -> Timestamp {
        self.watermark
    }

    /// The current processing time.
    pub fn current_processing_time(&self) -> Timestamp {
        self.clock.now()
    }

    /// The clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Registers an event-time timer; registering the same (key, namespace, time) twice keeps one.
    pub fn register_event_time_timer(&mut self, key: &K, namespace: &N, timestamp: Timestamp) {
        self.event
            .insert((timestamp, key.clone(), namespace.clone()));
    }

    /// Deletes an event-time timer, if present.
    pub fn delete_event_time_timer(&mut self, key: &K, namespace: &N, timestamp: Timestamp) {
        self.event
            .remove(&(timestamp, key.clone(), namespace.clone()));
    }

    /// Registers a processing-time timer; duplicates coalesce.
    pub fn register_processing_time_timer(&mut self, key: &K, namespace: &N, timestamp: Timestamp) {
        self.processing
            .insert((timestamp, key.clone(), namespace.clone()));
    }

    /// Deletes a processing-time timer, if present.
    pub fn delete_processing_time_timer(&mut self, key: &K, namespace: &N, timestamp: Timestamp) {
        self.processing
            .remove(&(timestamp, key.clone(), namespace.clone()));
    }

    /// Moves the watermark forward (never backwards). Then call [`TimerService::pop_event_timer`]
    /// until it returns `None`.
    pub fn advance_watermark(&mut self, watermark: Timestamp) {
        self.watermark = self.watermark.max(watermark);
    }

    /// Removes and returns the earliest event-time timer that the watermark has passed. Timers
    /// registered while firing (by the callback) are seen by the next call, as in Flink.
    pub fn pop_event_timer(&mut self) -> Option<Timer<K, N>> {
        match self.event.first() {
            Some((ts, _, _)) if *ts <= self.watermark => {
                let (timestamp, key, namespace) = self.event.pop_first()?;
                Some(Timer {
                    timestamp,
                    key,
                    namespace,
                })
            }
            _ => None,
        }
    }

    /// Removes and returns the earliest processing-time timer due at `now`.
    pub fn pop_processing_timer(&mut self, now: Timestamp) -> Option<Timer<K, N>> {
        match self.processing.first() {
            Some((ts, _, _)) if *ts <= now => {
                let (timestamp, key, namespace) = self.processing.pop_first()?;
                Some(Timer {
                    timestamp,
                    key,
                    namespace,
                })
            }
            _ => None,
        }
    }

    /// The earliest pending processing-time timer.
    pub fn next_processing_time(&self) -> Option<Timestamp> {
        self.processing.first().map(|(ts, _, _)| *ts)
    }

    /// The earliest pending event-time timer.
    pub fn next_event_time(&self) -> Option<Timestamp> {
        self.event.first().map(|(ts, _, _)| *ts)
    }

    /// The number of pending event-time timers.
    pub fn num_event_timers(&self) -> usize {
        self.event.len()
    }

    /// The number of pending processing-time timers.
    pub fn num_processing_timers(&self) -> usize {
        self.processing.len()
    }
}

impl<K, N> TimerService<K, N>
where
    K: Ord + Clone + Serialize + DeserializeOwned,
    N: Ord + Clone + Serialize + DeserializeOwned,
{
    /// Serializes the pending timers and the watermark.
    pub fn snapshot(&self) -> Result<Vec<u8>> {
        let snap = TimerSnapshot {
            event: self.event.iter().cloned().collect(),
            processing: self.processing.iter().cloned().collect(),
            watermark: self.watermark,
        };
        rmp_serde::to_vec(&snap).map_err(|e| Error::codec("timer snapshot", e))
    }

    /// Replaces the pending timers and watermark with a snapshot's.
    pub fn restore(&mut self, bytes: &[u8]) -> Result<()> {
        let snap: TimerSnapshot<K, N> =
            rmp_serde::from_slice(bytes).map_err(|e| Error::codec("timer snapshot", e))?;
        self.event = snap.event.into_iter().collect();
        self.processing = snap.processing.into_iter().collect();
        self.watermark = snap.watermark;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::ManualClock;

    fn fire(t: &mut TimerService<u64>, wm: Timestamp) -> Vec<(Timestamp, u64)> {
        t.advance_watermark(wm);
        std::iter::from_fn(|| t.pop_event_timer())
            .map(|t| (t.timestamp, t.key))
            .collect()
    }

    #[test]
    fn event_timers_fire_in_order_once_passed_and_coalesce() {
        let mut t = TimerService::<u64>::default();
        t.register_event_time_timer(&2, &(), 20);
        t.register_event_time_timer(&1, &(), 10);
        t.register_event_time_timer(&1, &(), 10);
        t.register_event_time_timer(&3, &(), 10);
        t.register_event_time_timer(&1, &(), 30);
        assert_eq!(t.num_event_timers(), 4);
        assert_eq!(fire(&mut t, 9), vec![]);
        assert_eq!(fire(&mut t, 10), vec![(10, 1), (10, 3)]);
        t.delete_event_time_timer(&1, &(), 30);
        t.delete_event_time_timer(&9, &(), 30);
        // The watermark never moves backwards.
        assert_eq!(fire(&mut t, 5), vec![]);
        assert_eq!(t.current_watermark(), 10);
        assert_eq!(fire(&mut t, i64::MAX), vec![(20, 2)]);
    }

    #[test]
    fn processing_timers_follow_the_clock() {
        let clock = ManualClock::new(100);
        let mut t = TimerService::<&'static str, u8>::new(Arc::new(clock.clone()));
        t.register_processing_time_timer(&"b", &0, 150);
        t.register_processing_time_timer(&"a", &1, 120);
        t.register_processing_time_timer(&"a", &1, 120);
        t.register_processing_time_timer(&"a", &2, 120);
        t.delete_processing_time_timer(&"a", &2, 120);
        assert_eq!(t.next_processing_time(), Some(120));
        assert!(t
            .pop_processing_timer(t.current_processing_time())
            .is_none());
        clock.advance(50);
        let now = t.current_processing_time();
        let fired: Vec<_> = std::iter::from_fn(|| t.pop_processing_timer(now)).collect();
        assert_eq!(
            fired,
            vec![
                Timer {
                    timestamp: 120,
                    key: "a",
                    namespace: 1
                },
                Timer {
                    timestamp: 150,
                    key: "b",
                    namespace: 0
                }
            ]
        );
        assert_eq!(t.num_processing_timers(), 0);
    }

    #[test]
    fn timers_survive_snapshot() {
        let mut t = TimerService::<String>::default();
        t.register_event_time_timer(&"k".to_string(), &(), 5);
        t.register_processing_time_timer(&"p".to_string(), &(), 7);
        t.advance_watermark(3);
        let mut r = TimerService::<String>::default();
        r.restore(&t.snapshot().unwrap()).unwrap();
        assert_eq!(r.current_watermark(), 3);
        assert_eq!(r.next_event_time(), Some(5));
        assert_eq!(r.next_processing_time(), Some(7));
    }

    #[test]
    fn a_million_keys_fire_in_timestamp_order() {
        // Timestamps are a permutation of the keys so that insertion order differs from firing order.
        const N: u64 = 1_000_000;
        let mut t = TimerService::<u64>::default();
        for k in 0..N {
            let ts = ((k * 7_919) % N) as Timestamp;
            t.register_event_time_timer(&k, &(), ts);
            // A duplicate for every 10th key coalesces.
            if k % 10 == 0 {
                t.register_event_time_timer(&k, &(), ts);
            }
        }
        assert_eq!(t.num_event_timers(), N as usize);
        // Half the timers fire at the first watermark, in timestamp order, the rest at the second.
        t.advance_watermark((N / 2 - 1) as Timestamp);
        let mut count = 0u64;
        let mut last = i64::MIN;
        while let Some(timer) = t.pop_event_timer() {
            assert!(timer.timestamp > last);
            assert_eq!((timer.key * 7_919) % N, timer.timestamp as u64);
            last = timer.timestamp;
            count += 1;
        }
        assert_eq!(count, N / 2);
        assert_eq!(t.next_event_time(), Some((N / 2) as Timestamp));
        t.advance_watermark(i64::MAX);
        let rest = std::iter::from_fn(|| t.pop_event_timer()).count() as u64;
        assert_eq!(rest, N / 2);
    }
}
