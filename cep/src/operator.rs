//! The keyed CEP operator: per key, events wait in a time-ordered queue until the watermark
//! passes them, then every pattern sees them in timestamp order (ties in arrival order), with
//! time advanced before each timestamp and to the watermark at the end (Flink's `CepOperator`).
//!
//! A key is only visited when something is due for it: its earliest buffered event, or the
//! earliest time one of its partial matches can time out. Those times sit in a min-queue
//! (`due.rs`), so a watermark costs nothing for keys with nothing due, whatever the number of
//! keys.

use std::hash::{BuildHasher, Hash};
use std::sync::Arc;

use hashbrown::HashTable;
use rustc_hash::{FxBuildHasher, FxHashSet};
use smallvec::SmallVec;

use crate::due::{DueQueue, Source};
use crate::few::Few;
use crate::nfa::{Events, Match, Nfa, NfaState, PartialMatch};
use crate::snapshot::{snapshot_state, EventTable, KeySnapshot, SnapshotError};
use crate::waiting::Waiting;

/// What an output is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum OutputKind {
    /// A complete match (main output).
    Match,
    /// A partial match whose window ended (side output).
    Timeout,
    /// An event at or behind the watermark (side output).
    Late,
}

/// One output of the operator.
#[derive(Debug)]
pub struct Output<K, E> {
    /// Match, timeout or late event.
    pub kind: OutputKind,
    /// Index of the pattern in the operator (`usize::MAX` for late events).
    pub pattern: usize,
    /// The key.
    pub key: K,
    /// For a match, the time of the event that completed it (for a trailing `not_followed_by`,
    /// the end of its window); for a timeout, the time it timed out; for a late event, its
    /// timestamp.
    pub timestamp: i64,
    /// The events by stage (empty for late events).
    pub events: Events<E>,
    /// The late event.
    pub event: Option<Arc<E>>,
}

/// Whether event time or processing time drives the operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum TimeMode {
    /// Events wait for the watermark and are handled in timestamp order.
    #[default]
    EventTime,
    /// Events are handled on arrival, stamped with the processing time.
    ProcessingTime,
}

struct KeySlot<K, E> {
    key: K,
    /// Events waiting for the watermark, by timestamp, ties in arrival order.
    queue: Waiting<E>,
    states: States<E>,
    due: i64,
    /// The time of its latest event (for the idle-key TTL and the key limit).
    last_seen: i64,
}

/// Bounds on the state an operator keeps. None by default, as in Flink: a pattern without
/// `within` can then hold partial matches for ever.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StateBounds {
    /// Partial matches per key and pattern: beyond it the oldest (by first event) are dropped.
    pub max_partial_matches: Option<usize>,
    /// Keys with state: a new key beyond it drops the least recently active tenth (by the
    /// time of their latest event), partial matches and waiting events with them.
    pub max_keys: Option<usize>,
    /// A key whose latest event is this far behind the watermark (ms) is dropped, with its
    /// partial matches (not reported as timeouts).
    pub key_ttl: Option<i64>,
    /// Events a key keeps in the shared buffer per pattern (what its partial matches hold):
    /// beyond it the oldest partial matches (by first event) are dropped until it is within.
    /// For looping stages, where one partial match can hold any number of events.
    pub max_buffered_events: Option<usize>,
}

/// What the bounds dropped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Dropped {
    /// Partial matches dropped by `max_partial_matches` and `max_buffered_events`.
    pub partial_matches: u64,
    /// Keys dropped by `max_keys`.
    pub evicted_keys: u64,
    /// Keys dropped by `key_ttl`.
    pub expired_keys: u64,
}

/// The storage of a dropped key, kept for the next new key so that keys that come and go
/// (most keys, when there are many) do not allocate.
struct SpareSlot<E> {
    queue: Waiting<E>,
    states: States<E>,
}

/// A key's state per pattern: inline for one pattern (the usual case, and most of a key's
/// memory when it holds one partial match), on the heap for more; no more room than one
/// pattern's state (the vector's variant fits beside the state's spare bits), leaving
/// `Option<KeySlot>` a niche.
type States<E> = Few<NfaState<E>>;

/// Keys to their slots: a hash table of slot numbers, hashed and compared by the key in the
/// slot, so that a key is stored once (a `HashMap<K, u32>` would hold a second copy: for the
/// JSON path's `String` keys, another allocation per key).
#[derive(Default)]
struct KeyIndex {
    table: HashTable<u32>,
}

fn hash_key<K: Hash>(key: &K) -> u64 {
    FxBuildHasher.hash_one(key)
}

impl KeyIndex {
    fn get<K: Hash + Eq, E>(&self, key: &K, slots: &[Option<KeySlot<K, E>>]) -> Option<u32> {
        self.table
            .find(hash_key(key), |&s| {
                slots[s as usize]
                    .as_ref()
                    .is_some_and(|slot| slot.key == *key)
            })
            .copied()
    }

    /// Indexes slot `s`, which holds `key` (not indexed yet); `key_of` reads the key of an
    /// indexed slot when the table grows.
    fn insert<'k, K: Hash + 'k>(&mut self, key: &K, s: u32, key_of: impl Fn(u32) -> &'k K) {
        self.table
            .insert_unique(hash_key(key), s, |&x| hash_key(key_of(x)));
    }

    /// Unindexes slot `s`, which held `key`.
    fn remove<K: Hash>(&mut self, key: &K, s: u32) {
        if let Ok(entry) = self.table.find_entry(hash_key(key), |&x| x == s) {
            entry.remove();
        }
    }

    fn len(&self) -> usize {
        self.table.len()
    }
}

/// How many dropped keys' storage is kept for reuse.
const MAX_SPARE_SLOTS: usize = 64;

/// Statistics of an operator.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OperatorStats {
    /// Keys with state.
    pub keys: usize,
    /// Partial matches under way, over all keys and patterns.
    pub partial_matches: usize,
    /// Events waiting for the watermark.
    pub queued_events: usize,
    /// Events held by partial matches.
    pub buffered_events: usize,
}

/// Evaluates one or more patterns per key.
pub struct CepOperator<K, E> {
    nfas: Vec<Arc<Nfa<E>>>,
    /// Per pattern: draining (keeps its partial matches, starts none).
    draining: Vec<bool>,
    slots: Vec<Option<KeySlot<K, E>>>,
    index: KeyIndex,
    free: Vec<u32>,
    spare: Vec<SpareSlot<E>>,
    timers: DueQueue,
    watermark: i64,
    mode: TimeMode,
    matches: Vec<Match<E>>,
    timeouts: Vec<(Events<E>, i64)>,
    /// Keys whose state may have changed since [`CepOperator::take_changed`], when tracked.
    changed: Option<FxHashSet<K>>,
    bounds: StateBounds,
    dropped: Dropped,
}

impl<K: Hash + Eq + Clone, E> CepOperator<K, E> {
    /// An operator over the given compiled patterns, in event time.
    pub fn new(nfas: Vec<Arc<Nfa<E>>>) -> Self {
        Self::with_mode(nfas, TimeMode::EventTime)
    }

    /// An operator in the given time mode.
    pub fn with_mode(nfas: Vec<Arc<Nfa<E>>>, mode: TimeMode) -> Self {
        CepOperator {
            draining: vec![false; nfas.len()],
            nfas,
            slots: Vec::new(),
            index: KeyIndex::default(),
            free: Vec::new(),
            spare: Vec::new(),
            timers: DueQueue::default(),
            watermark: i64::MIN,
            mode,
            matches: Vec::new(),
            timeouts: Vec::new(),
            changed: None,
            bounds: StateBounds::default(),
            dropped: Dropped::default(),
        }
    }

    /// Bounds the state kept (see [`StateBounds`]).
    pub fn set_bounds(&mut self, bounds: StateBounds) {
        self.bounds = bounds;
    }

    /// What the bounds have dropped so far.
    pub fn dropped(&self) -> Dropped {
        self.dropped
    }

    /// Drops the least recently active tenth of the keys (at least one) when there are
    /// `max_keys` of them.
    fn make_room(&mut self) {
        let Some(max) = self.bounds.max_keys else {
            return;
        };
        if self.index.len() < max.max(1) {
            return;
        }
        let mut by_age: Vec<(i64, u32)> = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(s, slot)| slot.as_ref().map(|sl| (sl.last_seen, s as u32)))
            .collect();
        let n = (by_age.len() / 10).max(1);
        by_age.select_nth_unstable(n - 1);
        for &(_, s) in &by_age[..n] {
            if let Some(slot) = self.slots[s as usize].take() {
                self.index.remove(&slot.key, s);
                if let Some(c) = &mut self.changed {
                    c.insert(slot.key);
                }
                self.free.push(s);
                self.dropped.evicted_keys += 1;
            }
        }
    }

    /// The patterns.
    pub fn patterns(&self) -> &[Arc<Nfa<E>>] {
        &self.nfas
    }

    /// The current watermark.
    pub fn watermark(&self) -> i64 {
        self.watermark
    }

    /// The slot of `key`, made if it has none. The key comes back unless a new slot took it
    /// (so that an event of a new key costs no copy of it).
    fn slot_of(&mut self, key: K) -> (u32, Option<K>) {
        if let Some(s) = self.index.get(&key, &self.slots) {
            return (s, Some(key));
        }
        self.make_room();
        let slot = match self.spare.pop() {
            Some(mut spare) => {
                for (i, (nfa, st)) in self.nfas.iter().zip(spare.states.iter_mut()).enumerate() {
                    nfa.reset_state(st);
                    if self.draining[i] {
                        nfa.stop_starting(st);
                    }
                }
                KeySlot {
                    key,
                    queue: spare.queue,
                    states: spare.states,
                    due: i64::MAX,
                    last_seen: i64::MIN,
                }
            }
            None => KeySlot {
                key,
                queue: Waiting::default(),
                states: self
                    .nfas
                    .iter()
                    .zip(&self.draining)
                    .map(|(n, &draining)| {
                        let mut st = n.initial_state();
                        if draining {
                            n.stop_starting(&mut st);
                        }
                        st
                    })
                    .collect(),
                due: i64::MAX,
                last_seen: i64::MIN,
            },
        };
        let s = match self.free.pop() {
            Some(s) => {
                self.slots[s as usize] = Some(slot);
                s
            }
            None => {
                self.slots.push(Some(slot));
                (self.slots.len() - 1) as u32
            }
        };
        let slots = &self.slots;
        let key = &slots[s as usize].as_ref().expect("live slot").key;
        self.index.insert(key, s, |x| {
            &slots[x as usize].as_ref().expect("indexed").key
        });
        (s, None)
    }

    /// Queues `event` in `key`'s slot (made if it has none) and notes the key as changed (when
    /// tracked); returns the slot.
    fn enqueue(&mut self, key: K, event: Arc<E>, ts: i64) -> u32 {
        let (s, key) = self.slot_of(key);
        let slot = self.slots[s as usize].as_mut().expect("live slot");
        slot.last_seen = slot.last_seen.max(ts);
        slot.queue.push(ts, event);
        if let Some(c) = &mut self.changed {
            c.insert(key.unwrap_or_else(|| slot.key.clone()));
        }
        s
    }

    fn schedule(&mut self, s: u32, due: i64, source: Source) {
        let slot = self.slots[s as usize].as_mut().expect("live slot");
        if due < slot.due {
            slot.due = due;
            self.timers.push((due, s), source);
        }
    }

    /// Handles one event of `key` at time `ts`. In event time, an event at or behind the
    /// watermark is late and goes to `out` as such.
    pub fn process_element(&mut self, key: K, event: E, ts: i64, out: &mut Vec<Output<K, E>>) {
        self.process_shared(key, Arc::new(event), ts, out);
    }

    /// Like [`CepOperator::process_element`], for an event already shared.
    pub fn process_shared(&mut self, key: K, event: Arc<E>, ts: i64, out: &mut Vec<Output<K, E>>) {
        match self.mode {
            TimeMode::EventTime => {
                if ts <= self.watermark {
                    out.push(Output {
                        kind: super::OutputKind::Late,
                        pattern: usize::MAX,
                        key,
                        timestamp: ts,
                        events: Vec::new(),
                        event: Some(event),
                    });
                    return;
                }
                let s = self.enqueue(key, event, ts);
                self.schedule(s, ts, Source::Event);
            }
            TimeMode::ProcessingTime => {
                let s = self.enqueue(key, event, ts);
                self.run_ready(s, i64::MAX, out);
                self.finish_slot(s, ts, out);
            }
        }
    }

    /// Moves event time (or, in processing time, the clock) to `watermark`: handles every
    /// queued event up to it and times out what has expired.
    pub fn advance_watermark(&mut self, watermark: i64, out: &mut Vec<Output<K, E>>) {
        if watermark <= self.watermark {
            return;
        }
        self.watermark = watermark;
        while let Some((due, s)) = self.timers.pop_until(watermark) {
            let live = self.slots[s as usize]
                .as_ref()
                .is_some_and(|sl| sl.due == due);
            if !live {
                continue;
            }
            let slot = self.slots[s as usize].as_mut().expect("live");
            slot.due = i64::MAX;
            if let Some(c) = &mut self.changed {
                c.insert(slot.key.clone());
            }
            self.run_ready(s, watermark, out);
            self.finish_slot(s, watermark, out);
        }
    }

    /// Handles the queued events of slot `s` up to `until`, timestamp by timestamp.
    fn run_ready(&mut self, s: u32, until: i64, out: &mut Vec<Output<K, E>>) {
        let slot = self.slots[s as usize].as_mut().expect("live");
        let mut group: SmallVec<[Arc<E>; 4]> = SmallVec::new();
        while let Some(ts) = slot.queue.front_ts().filter(|&ts| ts <= until) {
            group.clear();
            while let Some(e) = slot.queue.pop_at(ts) {
                group.push(e);
            }
            for (p, nfa) in self.nfas.iter().enumerate() {
                let st = &mut slot.states[p];
                if nfa.next_due(st) <= ts {
                    nfa.advance_time(st, ts, &mut self.matches, &mut self.timeouts);
                }
                for e in &group {
                    nfa.process(st, e, ts, &mut self.matches);
                }
                if let Some(max) = self.bounds.max_partial_matches {
                    self.dropped.partial_matches += nfa.trim(st, max) as u64;
                }
                if let Some(max) = self.bounds.max_buffered_events {
                    self.dropped.partial_matches += nfa.trim_buffer(st, max) as u64;
                }
                flush(p, &slot.key, &mut self.matches, &mut self.timeouts, out);
            }
        }
    }

    fn finish_slot(&mut self, s: u32, now: i64, out: &mut Vec<Output<K, E>>) {
        let mut due = i64::MAX;
        let mut idle = true;
        {
            let slot = self.slots[s as usize].as_mut().expect("live");
            for (i, nfa) in self.nfas.iter().enumerate() {
                let st = &mut slot.states[i];
                if nfa.next_due(st) <= now {
                    nfa.advance_time(st, now, &mut self.matches, &mut self.timeouts);
                    flush(i, &slot.key, &mut self.matches, &mut self.timeouts, out);
                }
                due = due.min(nfa.next_due(st));
                idle &= st.is_idle();
            }
            if let Some(first) = slot.queue.front_ts() {
                due = due.min(first);
                idle = false;
            }
        }
        if let (Some(ttl), false) = (self.bounds.key_ttl, idle) {
            let slot = self.slots[s as usize].as_ref().expect("live");
            let expiry = slot.last_seen.saturating_add(ttl.max(0));
            if now >= expiry && slot.queue.is_empty() {
                // Idle for longer than the TTL: its partial matches go without a timeout.
                let slot = self.slots[s as usize].take().expect("live");
                self.index.remove(&slot.key, s);
                if let Some(c) = &mut self.changed {
                    c.insert(slot.key);
                }
                self.free.push(s);
                self.dropped.expired_keys += 1;
                return;
            }
            due = due.min(expiry);
        }
        if idle {
            let slot = self.slots[s as usize].take().expect("live");
            self.index.remove(&slot.key, s);
            self.free.push(s);
            if self.spare.len() < MAX_SPARE_SLOTS {
                self.spare.push(SpareSlot {
                    queue: slot.queue,
                    states: slot.states,
                });
            }
        } else if due != i64::MAX {
            self.schedule(s, due, Source::Timeout);
        }
    }

    /// The events of `key` waiting for the watermark, with their timestamps, in the order they
    /// will be handled.
    pub fn waiting_events(&self, key: &K) -> Vec<(i64, Arc<E>)> {
        let Some(s) = self.index.get(key, &self.slots) else {
            return Vec::new();
        };
        let slot = self.slots[s as usize].as_ref().expect("live");
        slot.queue.iter().cloned().collect()
    }

    /// Partial matches held for `key` now, per pattern index.
    pub fn partial_matches(&self, key: &K) -> Vec<(usize, PartialMatch<E>)> {
        let Some(s) = self.index.get(key, &self.slots) else {
            return Vec::new();
        };
        let slot = self.slots[s as usize].as_ref().expect("live");
        let mut out = Vec::new();
        for (i, nfa) in self.nfas.iter().enumerate() {
            for pm in nfa.partial_matches(&slot.states[i]) {
                out.push((i, pm));
            }
        }
        out
    }

    /// Counts of what the operator holds.
    pub fn stats(&self) -> OperatorStats {
        let mut st = OperatorStats {
            keys: self.index.len(),
            ..Default::default()
        };
        for slot in self.slots.iter().flatten() {
            st.queued_events += slot.queue.len();
            for s in slot.states.iter() {
                st.partial_matches += s.partial_count();
                st.buffered_events += s.buffered_events();
            }
        }
        st
    }

    /// Replaces the patterns: `keep[i]` is the index of the old pattern whose per-key state the
    /// new pattern `i` takes over, or `None` to start it from nothing. State of old patterns
    /// not kept is dropped; queued events stay queued.
    pub fn set_patterns(&mut self, nfas: Vec<Arc<Nfa<E>>>, keep: &[Option<usize>]) {
        let draining = vec![false; nfas.len()];
        self.set_patterns_draining(nfas, keep, &draining);
    }

    /// [`set_patterns`](Self::set_patterns) where `draining[i]` marks the patterns that keep
    /// the partial matches they have (to their match or timeout) and start none: a replaced
    /// version draining beside its successor.
    pub fn set_patterns_draining(
        &mut self,
        nfas: Vec<Arc<Nfa<E>>>,
        keep: &[Option<usize>],
        draining: &[bool],
    ) {
        let draining: Vec<bool> = (0..nfas.len())
            .map(|i| draining.get(i).copied().unwrap_or(false))
            .collect();
        self.spare.clear();
        for slot in self.slots.iter_mut().flatten() {
            let mut old: Vec<Option<NfaState<E>>> = std::mem::take(&mut slot.states)
                .into_iter()
                .map(Some)
                .collect();
            slot.states = nfas
                .iter()
                .enumerate()
                .map(|(i, n)| {
                    keep.get(i)
                        .copied()
                        .flatten()
                        .and_then(|o| old.get_mut(o).and_then(Option::take))
                        .unwrap_or_else(|| n.initial_state())
                })
                .collect();
            for (i, st) in slot.states.iter_mut().enumerate() {
                if draining[i] {
                    nfas[i].stop_starting(st);
                }
            }
        }
        self.nfas = nfas;
        self.draining = draining;
        // Every key's state now belongs to the new patterns: a checkpoint must write it again.
        if let Some(c) = &mut self.changed {
            c.extend(self.slots.iter().flatten().map(|slot| slot.key.clone()));
        }
    }

    /// Which patterns are draining.
    pub fn draining(&self) -> &[bool] {
        &self.draining
    }

    /// Whether some key holds something (a partial match, a completed match waiting, buffered
    /// events) for pattern `p`: a draining pattern that holds nothing can go.
    pub fn holds(&self, p: usize) -> bool {
        self.slots
            .iter()
            .flatten()
            .any(|slot| slot.states.get(p).is_some_and(|st| !st.is_idle()))
    }

    /// Starts (or stops) recording which keys' state may change, for
    /// [`take_changed`](Self::take_changed): a checkpoint then snapshots only those keys.
    pub fn track_changes(&mut self, on: bool) {
        self.changed = on.then(FxHashSet::default);
    }

    /// The keys whose state may have changed since the last call (events queued or handled,
    /// matches, timeouts, state dropped), when [`track_changes`](Self::track_changes) is on.
    pub fn take_changed(&mut self) -> Vec<K> {
        self.changed
            .as_mut()
            .map(|c| c.drain().collect())
            .unwrap_or_default()
    }

    /// A snapshot of `key`'s state, each event written by `write`; `None` when the key has no
    /// state (nothing queued, no partial match).
    pub fn snapshot_key<T>(
        &self,
        key: &K,
        mut write: impl FnMut(&E) -> T,
    ) -> Option<KeySnapshot<T>> {
        let s = self.index.get(key, &self.slots)?;
        let slot = self.slots[s as usize].as_ref().expect("live");
        let mut table = EventTable::new(&mut write);
        let queue = slot
            .queue
            .iter()
            .map(|(ts, e)| (*ts, table.add(e)))
            .collect();
        let states = slot
            .states
            .iter()
            .map(|st| snapshot_state(st, &mut table))
            .collect();
        let mut snapshot = table.finish(queue, states);
        snapshot.last_seen = (slot.last_seen != i64::MIN).then_some(slot.last_seen);
        Some(snapshot)
    }

    /// Replaces `key`'s state by `snapshot` (taken from an operator with the same patterns),
    /// each event read by `read`. What is due at or before the current watermark is handled
    /// at the next advance of the watermark.
    pub fn restore_key<T>(
        &mut self,
        key: K,
        snapshot: KeySnapshot<T>,
        read: impl FnMut(&T) -> E,
    ) -> Result<(), SnapshotError> {
        if snapshot.pattern_count() != self.nfas.len() {
            return Err(SnapshotError(format!(
                "{} patterns in the snapshot, {} in the operator",
                snapshot.pattern_count(),
                self.nfas.len()
            )));
        }
        let snapshot_last_seen = snapshot.last_seen;
        let events: Vec<Arc<E>> = snapshot.events.iter().map(read).map(Arc::new).collect();
        let queue: Waiting<E> = snapshot
            .queue()?
            .iter()
            .map(|&(ts, i)| (ts, events[i as usize].clone()))
            .collect();
        let states = self
            .nfas
            .iter()
            .enumerate()
            .map(|(p, nfa)| snapshot.restore_state(p, nfa, &events))
            .collect::<Result<States<_>, _>>()?;
        self.remove_key(&key);
        let (s, _) = self.slot_of(key.clone());
        let slot = self.slots[s as usize].as_mut().expect("live slot");
        slot.queue = queue;
        slot.states = states;
        slot.last_seen = snapshot_last_seen.unwrap_or(self.watermark);
        let mut due = slot.queue.front_ts().unwrap_or(i64::MAX);
        for (nfa, st) in self.nfas.iter().zip(slot.states.iter()) {
            due = due.min(nfa.next_due(st));
        }
        if let Some(c) = &mut self.changed {
            c.insert(key);
        }
        if due != i64::MAX {
            self.schedule(s, due, Source::Timeout);
        }
        Ok(())
    }

    /// Number of keys with state.
    pub fn key_count(&self) -> usize {
        self.index.len()
    }

    /// When `key` next has something to do (its earliest queued event or timeout; `i64::MAX`:
    /// nothing), or `None` if it has no state. A key taken out with
    /// [`snapshot_key`](Self::snapshot_key) and [`remove_key`](Self::remove_key) must be
    /// restored before the watermark reaches this time.
    pub fn due_of(&self, key: &K) -> Option<i64> {
        let s = self.index.get(key, &self.slots)?;
        self.slots[s as usize].as_ref().map(|slot| slot.due)
    }

    /// Drops `key`'s state (a partition moved to another process, say); true if it had any.
    pub fn remove_key(&mut self, key: &K) -> bool {
        let Some(s) = self.index.get(key, &self.slots) else {
            return false;
        };
        self.index.remove(key, s);
        self.slots[s as usize] = None;
        self.free.push(s);
        true
    }

    /// Rewrites every event still waiting for the watermark.
    pub fn map_queued(&mut self, mut f: impl FnMut(&E) -> E) {
        for slot in self.slots.iter_mut().flatten() {
            for (_, e) in slot.queue.iter_mut() {
                *e = Arc::new(f(e));
            }
        }
    }
}

fn flush<K: Clone, E>(
    pattern: usize,
    key: &K,
    matches: &mut Vec<Match<E>>,
    timeouts: &mut Vec<(Events<E>, i64)>,
    out: &mut Vec<Output<K, E>>,
) {
    // Most steps output nothing: skip making two empty drains.
    if matches.is_empty() && timeouts.is_empty() {
        return;
    }
    for (events, at) in matches.drain(..) {
        out.push(Output {
            kind: OutputKind::Match,
            pattern,
            key: key.clone(),
            timestamp: at,
            events,
            event: None,
        });
    }
    for (events, at) in timeouts.drain(..) {
        out.push(Output {
            kind: OutputKind::Timeout,
            pattern,
            key: key.clone(),
            timestamp: at,
            events,
            event: None,
        });
    }
}

#[cfg(test)]
mod layout {
    /// A held key costs its slot, its event and its index and due-time entries; the slot is
    /// most of what the operator adds (BENCHMARKS.md, "Memory per partial match"). Guards the
    /// layout: one pattern's state inline, the first waiting event inline, and a niche left for
    /// the `Option` of a free slot.
    #[test]
    fn a_key_slot_stays_small() {
        use super::*;
        type Slot = Option<KeySlot<u64, [u8; 48]>>;
        assert_eq!(std::mem::size_of::<NfaState<[u8; 48]>>(), 32);
        assert_eq!(std::mem::size_of::<States<[u8; 48]>>(), 32);
        assert_eq!(std::mem::size_of::<Slot>(), 80);
    }
}
