//! The keyed CEP operator: per key, events wait in a time-ordered queue until the watermark
//! passes them, then every pattern sees them in timestamp order (ties in arrival order), with
//! time advanced before each timestamp and to the watermark at the end (Flink's `CepOperator`).
//!
//! A key is only visited when something is due for it: its earliest buffered event, or the
//! earliest time one of its partial matches can time out. Those times sit in a min-heap, so a
//! watermark costs nothing for keys with nothing due, whatever the number of keys.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::hash::Hash;
use std::sync::Arc;

use rustc_hash::FxHashMap;

use crate::nfa::{Events, Match, Nfa, NfaState, PartialMatch};

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
    queue: BTreeMap<i64, Vec<Arc<E>>>,
    states: Vec<NfaState<E>>,
    due: i64,
}

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
    slots: Vec<Option<KeySlot<K, E>>>,
    index: FxHashMap<K, u32>,
    free: Vec<u32>,
    timers: BinaryHeap<Reverse<(i64, u32)>>,
    watermark: i64,
    mode: TimeMode,
    matches: Vec<Match<E>>,
    timeouts: Vec<(Events<E>, i64)>,
}

impl<K: Hash + Eq + Clone, E> CepOperator<K, E> {
    /// An operator over the given compiled patterns, in event time.
    pub fn new(nfas: Vec<Arc<Nfa<E>>>) -> Self {
        Self::with_mode(nfas, TimeMode::EventTime)
    }

    /// An operator in the given time mode.
    pub fn with_mode(nfas: Vec<Arc<Nfa<E>>>, mode: TimeMode) -> Self {
        CepOperator {
            nfas,
            slots: Vec::new(),
            index: FxHashMap::default(),
            free: Vec::new(),
            timers: BinaryHeap::new(),
            watermark: i64::MIN,
            mode,
            matches: Vec::new(),
            timeouts: Vec::new(),
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

    fn slot_of(&mut self, key: &K) -> u32 {
        if let Some(&s) = self.index.get(key) {
            return s;
        }
        let slot = KeySlot {
            key: key.clone(),
            queue: BTreeMap::new(),
            states: self.nfas.iter().map(|n| n.initial_state()).collect(),
            due: i64::MAX,
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
        self.index.insert(key.clone(), s);
        s
    }

    fn schedule(&mut self, s: u32, due: i64) {
        let slot = self.slots[s as usize].as_mut().expect("live slot");
        if due < slot.due {
            slot.due = due;
            self.timers.push(Reverse((due, s)));
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
                let s = self.slot_of(&key);
                let slot = self.slots[s as usize].as_mut().expect("live slot");
                slot.queue.entry(ts).or_default().push(event);
                self.schedule(s, ts);
            }
            TimeMode::ProcessingTime => {
                let s = self.slot_of(&key);
                self.run_events(s, vec![(ts, vec![event])], out);
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
        while let Some(&Reverse((due, s))) = self.timers.peek() {
            if due > watermark {
                break;
            }
            self.timers.pop();
            let live = self.slots[s as usize]
                .as_ref()
                .is_some_and(|sl| sl.due == due);
            if !live {
                continue;
            }
            self.slots[s as usize].as_mut().expect("live").due = i64::MAX;
            let ready = {
                let slot = self.slots[s as usize].as_mut().expect("live");
                let later = match watermark.checked_add(1) {
                    Some(w) => slot.queue.split_off(&w),
                    None => BTreeMap::new(),
                };
                let ready = std::mem::replace(&mut slot.queue, later);
                ready.into_iter().collect::<Vec<_>>()
            };
            self.run_events(s, ready, out);
            self.finish_slot(s, watermark, out);
        }
    }

    fn run_events(&mut self, s: u32, ready: Vec<(i64, Vec<Arc<E>>)>, out: &mut Vec<Output<K, E>>) {
        for (ts, events) in ready {
            for (i, nfa) in self.nfas.iter().enumerate() {
                let slot = self.slots[s as usize].as_mut().expect("live");
                let st = &mut slot.states[i];
                if nfa.next_due(st) <= ts {
                    nfa.advance_time(st, ts, &mut self.matches, &mut self.timeouts);
                }
                for e in &events {
                    nfa.process(st, e, ts, &mut self.matches);
                }
                let key = &slot.key;
                flush(i, key, &mut self.matches, &mut self.timeouts, out);
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
            if let Some((&first, _)) = slot.queue.iter().next() {
                due = due.min(first);
                idle = false;
            }
        }
        if idle {
            let slot = self.slots[s as usize].take().expect("live");
            self.index.remove(&slot.key);
            self.free.push(s);
        } else if due != i64::MAX {
            self.schedule(s, due);
        }
    }

    /// Partial matches held for `key` now, per pattern index.
    pub fn partial_matches(&self, key: &K) -> Vec<(usize, PartialMatch<E>)> {
        let Some(&s) = self.index.get(key) else {
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
            st.queued_events += slot.queue.values().map(Vec::len).sum::<usize>();
            for s in &slot.states {
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
        }
        self.nfas = nfas;
    }

    /// Rewrites every event still waiting for the watermark.
    pub fn map_queued(&mut self, mut f: impl FnMut(&E) -> E) {
        for slot in self.slots.iter_mut().flatten() {
            for evs in slot.queue.values_mut() {
                for e in evs.iter_mut() {
                    *e = Arc::new(f(e));
                }
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
