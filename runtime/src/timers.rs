//! Event-time and processing-time timers, per key and namespace.
//!
//! Each domain keeps its timers in a [`TimerQueue`]: a binary min-heap of `(timestamp, key,
//! namespace)` for firing in order without scanning keys, and a per-key map of the live timers for
//! coalescing duplicates (as Flink's `HeapPriorityQueueSet` does). Re-registering an existing timer,
//! the common case (a window trigger registers its end for every element), is one hash lookup by
//! `&K` with no allocation. Deletion is lazy: the heap entry stays until it reaches the top, where it
//! is dropped because it is no longer live; the heap is rebuilt when stale entries dominate.
//! An event-time timer fires once the watermark has passed it (`timestamp <= watermark`, timely's
//! notificator rule); a processing-time timer once the [`Clock`] reaches it.

use std::cmp::Reverse;
use std::collections::hash_map::Entry;
use std::collections::BinaryHeap;
use std::fmt;
use std::hash::Hash;
use std::sync::Arc;

use rustc_hash::FxHashMap;
use serde::de::DeserializeOwned;
use serde::Serialize;
use smallvec::SmallVec;

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

/// The timers of one domain: a min-heap for order plus a per-key set of live timers for
/// deduplication and lazy deletion.
pub struct TimerQueue<K, N> {
    heap: BinaryHeap<Reverse<(Timestamp, K, N)>>,
    live: FxHashMap<K, SmallVec<[(Timestamp, N); 2]>>,
    len: usize,
}

impl<K, N> Default for TimerQueue<K, N>
where
    K: Hash + Eq + Ord + Clone,
    N: Eq + Ord + Clone,
{
    fn default() -> Self {
        TimerQueue {
            heap: BinaryHeap::new(),
            live: FxHashMap::default(),
            len: 0,
        }
    }
}

impl<K, N> TimerQueue<K, N>
where
    K: Hash + Eq + Ord + Clone,
    N: Eq + Ord + Clone,
{
    /// Adds a timer; returns false if it was already there.
    pub fn insert(&mut self, key: &K, namespace: &N, timestamp: Timestamp) -> bool {
        match self.live.get_mut(key) {
            Some(timers) => {
                if timers
                    .iter()
                    .any(|(t, n)| *t == timestamp && n == namespace)
                {
                    return false;
                }
                timers.push((timestamp, namespace.clone()));
            }
            None => {
                let mut timers = SmallVec::new();
                timers.push((timestamp, namespace.clone()));
                self.live.insert(key.clone(), timers);
            }
        }
        self.len += 1;
        self.heap
            .push(Reverse((timestamp, key.clone(), namespace.clone())));
        true
    }

    /// Removes a timer; returns false if it was not there.
    pub fn remove(&mut self, key: &K, namespace: &N, timestamp: Timestamp) -> bool {
        let Some(timers) = self.live.get_mut(key) else {
            return false;
        };
        let Some(i) = timers
            .iter()
            .position(|(t, n)| *t == timestamp && n == namespace)
        else {
            return false;
        };
        timers.swap_remove(i);
        if timers.is_empty() {
            self.live.remove(key);
        }
        self.len -= 1;
        self.clean_top();
        if self.heap.len() > 2 * self.len + 1024 {
            self.compact();
        }
        true
    }

    fn is_live(&self, timestamp: Timestamp, key: &K, namespace: &N) -> bool {
        self.live.get(key).is_some_and(|timers| {
            timers
                .iter()
                .any(|(t, n)| *t == timestamp && n == namespace)
        })
    }

    /// Drops stale entries from the top so that the top, if any, is a live timer.
    fn clean_top(&mut self) {
        // Without deletions every heap entry is live: skip the lookups.
        if self.heap.len() == self.len {
            return;
        }
        while let Some(Reverse((t, k, n))) = self.heap.peek() {
            if self.is_live(*t, k, n) {
                break;
            }
            self.heap.pop();
        }
    }

    /// Rebuilds the heap from the live timers.
    fn compact(&mut self) {
        let mut entries = Vec::with_capacity(self.len);
        for (k, timers) in &self.live {
            for (t, n) in timers {
                entries.push(Reverse((*t, k.clone(), n.clone())));
            }
        }
        self.heap = BinaryHeap::from(entries);
    }

    /// The earliest live timer's time.
    pub fn peek_time(&self) -> Option<Timestamp> {
        self.heap.peek().map(|Reverse((t, _, _))| *t)
    }

    /// Removes and returns the earliest timer if it is due at `time` (`timestamp <= time`).
    pub fn pop_due(&mut self, time: Timestamp) -> Option<Timer<K, N>> {
        match self.peek_time() {
            Some(t) if t <= time => {}
            _ => return None,
        }
        let Reverse((timestamp, key, namespace)) = self.heap.pop()?;
        // One lookup: take the key back out of the map entry when its last timer goes.
        let key = match self.live.entry(key) {
            Entry::Occupied(mut e) => {
                let timers = e.get_mut();
                if let Some(i) = timers
                    .iter()
                    .position(|(t, n)| *t == timestamp && *n == namespace)
                {
                    timers.swap_remove(i);
                    self.len -= 1;
                }
                if timers.is_empty() {
                    e.remove_entry().0
                } else {
                    e.key().clone()
                }
            }
            Entry::Vacant(e) => e.into_key(),
        };
        self.clean_top();
        Some(Timer {
            timestamp,
            key,
            namespace,
        })
    }

    /// The number of live timers.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no live timers.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The live timers of one key, in no particular order.
    pub fn of_key(&self, key: &K) -> &[(Timestamp, N)] {
        self.live.get(key).map_or(&[], |timers| timers.as_slice())
    }

    /// Removes every timer of one key; returns how many there were.
    pub fn remove_key(&mut self, key: &K) -> usize {
        let Some(timers) = self.live.remove(key) else {
            return 0;
        };
        self.len -= timers.len();
        self.clean_top();
        if self.heap.len() > 2 * self.len + 1024 {
            self.compact();
        }
        timers.len()
    }

    /// The live timers, sorted.
    pub fn to_sorted_vec(&self) -> Vec<(Timestamp, K, N)> {
        let mut v: Vec<_> = self
            .live
            .iter()
            .flat_map(|(k, timers)| timers.iter().map(move |(t, n)| (*t, k.clone(), n.clone())))
            .collect();
        v.sort();
        v
    }
}

/// The timers of one operator instance, for all its keys.
pub struct TimerService<K, N = ()> {
    event: TimerQueue<K, N>,
    processing: TimerQueue<K, N>,
    watermark: Timestamp,
    clock: Arc<dyn Clock>,
}

impl<K, N> fmt::Debug for TimerService<K, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TimerService")
            .field("event_timers", &self.event.len)
            .field("processing_timers", &self.processing.len)
            .field("watermark", &self.watermark)
            .finish()
    }
}

impl<K: Hash + Eq + Ord + Clone, N: Eq + Ord + Clone> Default for TimerService<K, N> {
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

impl<K: Hash + Eq + Ord + Clone, N: Eq + Ord + Clone> TimerService<K, N> {
    /// An empty service reading processing time from `clock`.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        TimerService {
            event: TimerQueue::default(),
            processing: TimerQueue::default(),
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
        self.event.insert(key, namespace, timestamp);
    }

    /// Deletes an event-time timer, if present.
    pub fn delete_event_time_timer(&mut self, key: &K, namespace: &N, timestamp: Timestamp) {
        self.event.remove(key, namespace, timestamp);
    }

    /// Registers a processing-time timer; duplicates coalesce.
    pub fn register_processing_time_timer(&mut self, key: &K, namespace: &N, timestamp: Timestamp) {
        self.processing.insert(key, namespace, timestamp);
    }

    /// Deletes a processing-time timer, if present.
    pub fn delete_processing_time_timer(&mut self, key: &K, namespace: &N, timestamp: Timestamp) {
        self.processing.remove(key, namespace, timestamp);
    }

    /// The event-time timers of one key (for a per-key snapshot).
    pub fn event_timers_of(&self, key: &K) -> &[(Timestamp, N)] {
        self.event.of_key(key)
    }

    /// The processing-time timers of one key (for a per-key snapshot).
    pub fn processing_timers_of(&self, key: &K) -> &[(Timestamp, N)] {
        self.processing.of_key(key)
    }

    /// Deletes every timer of one key, in both domains; returns how many there were.
    pub fn remove_key(&mut self, key: &K) -> usize {
        self.event.remove_key(key) + self.processing.remove_key(key)
    }

    /// Moves the watermark forward (never backwards). Then call [`TimerService::pop_event_timer`]
    /// until it returns `None`.
    pub fn advance_watermark(&mut self, watermark: Timestamp) {
        self.watermark = self.watermark.max(watermark);
    }

    /// Removes and returns the earliest event-time timer that the watermark has passed, ties broken
    /// by key then namespace. Timers registered while firing (by the callback) are seen by the next
    /// call, as in Flink.
    pub fn pop_event_timer(&mut self) -> Option<Timer<K, N>> {
        self.event.pop_due(self.watermark)
    }

    /// Removes and returns the earliest processing-time timer due at `now`.
    pub fn pop_processing_timer(&mut self, now: Timestamp) -> Option<Timer<K, N>> {
        self.processing.pop_due(now)
    }

    /// The earliest pending processing-time timer.
    pub fn next_processing_time(&self) -> Option<Timestamp> {
        self.processing.peek_time()
    }

    /// The earliest pending event-time timer.
    pub fn next_event_time(&self) -> Option<Timestamp> {
        self.event.peek_time()
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
    K: Hash + Eq + Ord + Clone + Serialize + DeserializeOwned,
    N: Eq + Ord + Clone + Serialize + DeserializeOwned,
{
    /// Serializes the pending timers and the watermark.
    pub fn snapshot(&self) -> Result<Vec<u8>> {
        let snap = TimerSnapshot {
            event: self.event.to_sorted_vec(),
            processing: self.processing.to_sorted_vec(),
            watermark: self.watermark,
        };
        rmp_serde::to_vec(&snap).map_err(|e| Error::codec("timer snapshot", e))
    }

    /// Replaces the pending timers and watermark with a snapshot's.
    pub fn restore(&mut self, bytes: &[u8]) -> Result<()> {
        let snap: TimerSnapshot<K, N> =
            rmp_serde::from_slice(bytes).map_err(|e| Error::codec("timer snapshot", e))?;
        self.event = TimerQueue::default();
        self.processing = TimerQueue::default();
        for (t, k, n) in &snap.event {
            self.event.insert(k, n, *t);
        }
        for (t, k, n) in &snap.processing {
            self.processing.insert(k, n, *t);
        }
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
    fn lazy_deletion_fires_each_registration_once() {
        let mut q = TimerQueue::<u32, ()>::default();
        assert!(q.insert(&1, &(), 10));
        assert!(!q.insert(&1, &(), 10));
        assert!(q.insert(&2, &(), 5));
        assert!(q.remove(&1, &(), 10));
        assert!(!q.remove(&1, &(), 10));
        // Deleted, then registered again: the stale heap entry must not make it fire twice.
        assert!(q.insert(&1, &(), 10));
        assert_eq!(q.len(), 2);
        let fired: Vec<_> = std::iter::from_fn(|| q.pop_due(100))
            .map(|t| (t.timestamp, t.key))
            .collect();
        assert_eq!(fired, vec![(5, 2), (10, 1)]);
        assert!(q.is_empty());
        assert_eq!(q.peek_time(), None);
        // Many deletions trigger a compaction; the survivors still fire in order.
        for k in 0..5_000u32 {
            q.insert(&k, &(), i64::from(k % 100));
        }
        for k in 0..5_000u32 {
            if k % 10 != 0 {
                q.remove(&k, &(), i64::from(k % 100));
            }
        }
        assert!(q.heap.len() <= 2 * q.len() + 1024);
        let fired: Vec<_> = std::iter::from_fn(|| q.pop_due(i64::MAX))
            .map(|t| (t.timestamp, t.key))
            .collect();
        let mut expected: Vec<_> = (0..5_000u32)
            .filter(|k| k % 10 == 0)
            .map(|k| (i64::from(k % 100), k))
            .collect();
        expected.sort();
        assert_eq!(fired, expected);
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
    fn many_keys_fire_in_timestamp_order() {
        // Timestamps are a permutation of the keys so that insertion order differs from firing order.
        // (tests/dataflow.rs runs a million keys through a process operator.)
        const N: u64 = 200_000;
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
