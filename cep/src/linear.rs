//! The matcher for patterns that never branch: a chain of single-event stages joined by strict
//! contiguity (`begin`, `next`, `times(n).consecutive()`), simple conditions, a window over the
//! whole match, any after-match skip strategy.
//!
//! Like regex-automata's one-pass DFA beside its PikeVM, it is picked at compile time
//! ([`Linear::of`]) and gives exactly what the general automaton gives (matches, timeouts and
//! their times, their order, the partial matches shown and the events held), which
//! `tests/linear.rs` checks by running both on random patterns and streams. What makes it
//! simple: under strict contiguity every event of a key either extends a partial match or ends
//! it, so every live partial match holds the key's *latest* events. A partial match is then just
//! its length, the key's partial matches a set of lengths (a bit set), and the events they hold
//! the last `m` events of the key, `m` the longest length: no shared buffer, no versions, no
//! reference counts.

use std::sync::Arc;

use smallvec::SmallVec;

use crate::nfa::{Action, CondExpr, Events, Kind, Match, Nfa, PartialMatch, StateId, Timeout};
use crate::pattern::{AfterMatchSkip, Leaf};

/// The most stages a linear pattern may have (partial matches are bits of a `u64`).
const MAX_STAGES: usize = 63;

/// A pattern's chain of stages, when it has that shape.
#[derive(Debug, Clone)]
pub(crate) struct Linear {
    /// The automaton's states along the chain: `states[0]` is the start state, `states[k]` the
    /// state a partial match holding `k` events waits in, `states[n]` the final state.
    pub(crate) states: Vec<StateId>,
    /// Per stage, the user condition that takes an event (`None`: any event).
    conds: Vec<Option<u32>>,
    /// Per stage, its page (the stage name events taken there are reported under).
    pages: Vec<u16>,
    /// Under `SkipToFirst` / `SkipToLast`: after a match, partial matches longer than this are
    /// dropped (they started before the stage's first / last event of the match).
    skip_keep: Option<usize>,
}

impl Linear {
    /// The chain of `states`, if the automaton is one: a single start state whose only
    /// transitions are one take (a simple condition or none) and ignores looping on itself,
    /// then states with exactly one take each, up to the final state; no window per stage.
    pub(crate) fn of<E>(
        states: &[crate::nfa::State],
        leaves: &[Arc<Leaf<E>>],
        window_times: &[Option<i64>],
        skip: &AfterMatchSkip,
        skip_page: Option<u16>,
    ) -> Option<Linear> {
        if leaves.iter().any(|l| matches!(**l, Leaf::Iterative(_)))
            || window_times.iter().any(Option::is_some)
        {
            return None;
        }
        let mut starts = states
            .iter()
            .enumerate()
            .filter(|(_, s)| s.kind == Kind::Start);
        let (start, _) = starts.next()?;
        if starts.next().is_some() {
            return None;
        }
        let mut chain = vec![start as StateId];
        let mut conds = Vec::new();
        let mut pages = Vec::new();
        let mut s = start;
        loop {
            let state = &states[s];
            if state.kind == Kind::Final {
                if !state.transitions.is_empty() {
                    return None;
                }
                break;
            }
            if !matches!(state.kind, Kind::Start | Kind::Normal) || chain.len() > MAX_STAGES {
                return None;
            }
            let mut take = None;
            for t in &state.transitions {
                match t.action {
                    // Ignoring an event on the start state changes nothing.
                    Action::Ignore if state.kind == Kind::Start && t.target as usize == s => {}
                    Action::Take if take.is_none() => take = Some(t),
                    _ => return None,
                }
            }
            let t = take?;
            let cond = match t.cond {
                CondExpr::True => None,
                CondExpr::Leaf(i) => Some(i),
                _ => return None,
            };
            let next = t.target as usize;
            if chain.contains(&(next as StateId)) {
                return None;
            }
            conds.push(cond);
            pages.push(state.page);
            chain.push(next as StateId);
            s = next;
        }
        if chain.len() != states.len() {
            return None;
        }
        let n = conds.len();
        let skip_keep = match skip {
            AfterMatchSkip::SkipToFirst(_) | AfterMatchSkip::SkipToLast(_) => {
                let page = skip_page?;
                let at = if matches!(skip, AfterMatchSkip::SkipToFirst(_)) {
                    pages.iter().position(|&p| p == page)
                } else {
                    pages.iter().rposition(|&p| p == page)
                };
                // A partial match of length m started at the match's event n - m; it goes when
                // that is before the stage's event `at`.
                Some(at.map_or(n, |at| n - at))
            }
            _ => None,
        };
        Some(Linear {
            states: chain,
            conds,
            pages,
            skip_keep,
        })
    }

    /// Number of stages.
    fn len(&self) -> usize {
        self.conds.len()
    }
}

/// The per-key state of a linear pattern.
#[derive(Debug)]
pub(crate) struct LinState<E> {
    /// The events the partial matches hold, oldest first, with their times: the longest partial
    /// match holds them all, every other one a suffix.
    events: SmallVec<[(i64, Arc<E>); 2]>,
    /// Bit `k`: a partial match holds the last `k` events (and waits in stage `k`).
    alive: u64,
    /// Whether events start partial matches (false once the pattern drains).
    starting: bool,
}

impl<E> LinState<E> {
    pub(crate) fn new() -> Self {
        LinState {
            events: SmallVec::new(),
            alive: 0,
            starting: true,
        }
    }

    pub(crate) fn reset(&mut self) {
        self.events.clear();
        self.alive = 0;
        self.starting = true;
    }

    pub(crate) fn is_idle(&self) -> bool {
        self.alive == 0
    }

    pub(crate) fn partial_count(&self) -> usize {
        self.alive.count_ones() as usize
    }

    pub(crate) fn buffered_events(&self) -> usize {
        self.events.len()
    }

    pub(crate) fn stop_starting(&mut self) {
        self.starting = false;
    }

    /// The length of the longest partial match.
    fn longest(&self) -> usize {
        (63 - self.alive.leading_zeros() as i32).max(0) as usize
    }

    /// Drops the events no partial match holds.
    fn drop_unheld(&mut self) {
        let keep = self.longest();
        if self.events.len() > keep {
            let extra = self.events.len() - keep;
            self.events.drain(..extra);
        }
    }

    /// The parts a snapshot writes: events with their times, the partial matches' lengths as
    /// bits, whether it starts partial matches.
    pub(crate) fn parts(&self) -> (&[(i64, Arc<E>)], u64, bool) {
        (&self.events, self.alive, self.starting)
    }

    /// A state from [`parts`](Self::parts), checked against the pattern.
    pub(crate) fn from_parts(
        lin: &Linear,
        events: Vec<(i64, Arc<E>)>,
        alive: u64,
        starting: bool,
    ) -> Result<Self, String> {
        if alive & 1 != 0 || (alive >> lin.len()) != 0 {
            return Err(format!(
                "partial matches {alive:#b} do not fit a pattern of {} stages",
                lin.len()
            ));
        }
        let st = LinState {
            events: events.into(),
            alive,
            starting,
        };
        if st.events.len() != st.longest() {
            return Err(format!(
                "{} events for partial matches of up to {}",
                st.events.len(),
                st.longest()
            ));
        }
        Ok(st)
    }
}

impl<E> Nfa<E> {
    fn lin(&self) -> &Linear {
        self.linear
            .as_ref()
            .expect("a linear state belongs to a linear pattern")
    }

    /// The last `k` events of `st` (plus `last`), grouped by stage as the general automaton's
    /// extraction groups them.
    fn lin_events(&self, st: &LinState<E>, k: usize, last: Option<&Arc<E>>) -> Events<E> {
        let lin = self.lin();
        let held = &st.events[st.events.len() - k..];
        let mut out: Events<E> = Vec::new();
        let mut prev_page = u16::MAX;
        for (stage, e) in held.iter().map(|(_, e)| e).chain(last).enumerate() {
            let page = lin.pages[stage];
            if page != prev_page {
                let name = &self.pages[page as usize];
                match out.iter().position(|(n, _)| Arc::ptr_eq(n, name)) {
                    Some(i) if i + 1 == out.len() => {}
                    // A stage name seen before, not just now: its events stay together.
                    Some(i) => {
                        out[i].1.push(e.clone());
                        continue;
                    }
                    None => out.push((name.clone(), Vec::with_capacity(k + 1))),
                }
                prev_page = page;
            }
            out.last_mut().expect("a group").1.push(e.clone());
        }
        out
    }

    /// When the oldest partial match of `st` times out (`i64::MAX`: never).
    pub(crate) fn lin_due(&self, st: &LinState<E>) -> i64 {
        match st.events.first() {
            Some(&(start, _)) if self.window > 0 && st.alive != 0 => {
                start.saturating_add(self.window)
            }
            _ => i64::MAX,
        }
    }

    /// Times out the partial matches whose window ended at `ts`, oldest first.
    pub(crate) fn lin_advance_time(
        &self,
        st: &mut LinState<E>,
        ts: i64,
        timeouts: &mut Vec<Timeout<E>>,
    ) {
        if self.window <= 0 {
            return;
        }
        while st.alive != 0 {
            let k = st.longest();
            let start = st.events[st.events.len() - k].0;
            if ts - start < self.window {
                break;
            }
            timeouts.push((self.lin_events(st, k, None), start + self.window));
            st.alive &= !(1 << k);
        }
        st.drop_unheld();
    }

    /// Feeds one event to the partial matches of `st`.
    pub(crate) fn lin_process(
        &self,
        st: &mut LinState<E>,
        event: &Arc<E>,
        ts: i64,
        matches: &mut Vec<Match<E>>,
    ) {
        let lin = self.lin();
        let n = lin.len();
        // Per condition: 0 not evaluated, 1 false, 2 true.
        let mut cache: SmallVec<[u8; 8]> = SmallVec::from_elem(0, self.leaves.len());
        let mut holds = |stage: usize| match lin.conds[stage] {
            None => true,
            Some(i) => {
                let slot = &mut cache[i as usize];
                if *slot == 0 {
                    let Leaf::Simple(f) = &*self.leaves[i as usize] else {
                        unreachable!("linear patterns have simple conditions only")
                    };
                    *slot = if f(event) { 2 } else { 1 };
                }
                *slot == 2
            }
        };
        let mut next = 0u64;
        let mut matched = false;
        let mut bits = st.alive;
        while bits != 0 {
            let k = 63 - bits.leading_zeros() as usize;
            bits &= !(1 << k);
            if holds(k) {
                if k + 1 == n {
                    matched = true;
                } else {
                    next |= 1 << (k + 1);
                }
            }
        }
        if st.starting && holds(0) {
            if n == 1 {
                matched = true;
            } else {
                next |= 1 << 1;
            }
        }
        if matched {
            matches.push((self.lin_events(st, n - 1, Some(event)), ts));
            next &= match (&self.skip, lin.skip_keep) {
                (AfterMatchSkip::NoSkip | AfterMatchSkip::SkipToNext, _) => u64::MAX,
                (AfterMatchSkip::SkipPastLastEvent, _) => 0,
                (_, Some(keep)) if keep < 63 => (1u64 << (keep + 1)) - 1,
                (_, Some(_)) => u64::MAX,
                (_, None) => u64::MAX,
            };
        }
        st.alive = next;
        if next != 0 {
            st.events.push((ts, event.clone()));
        }
        st.drop_unheld();
    }

    /// Keeps at most `max` partial matches: the oldest beyond it go. Returns how many went.
    pub(crate) fn lin_trim(&self, st: &mut LinState<E>, max: usize) -> usize {
        let mut dropped = 0;
        while st.partial_count() > max {
            st.alive &= !(1 << st.longest());
            dropped += 1;
        }
        st.drop_unheld();
        dropped
    }

    /// Drops the oldest partial matches until at most `max` events are held.
    pub(crate) fn lin_trim_buffer(&self, st: &mut LinState<E>, max: usize) -> usize {
        let mut dropped = 0;
        while st.events.len() > max && st.alive != 0 {
            st.alive &= !(1 << st.longest());
            st.drop_unheld();
            dropped += 1;
        }
        dropped
    }

    /// The partial matches of `st`, oldest first.
    pub(crate) fn lin_partial_matches(&self, st: &LinState<E>) -> Vec<PartialMatch<E>> {
        let lin = self.lin();
        let mut out = Vec::new();
        let mut bits = st.alive;
        while bits != 0 {
            let k = 63 - bits.leading_zeros() as usize;
            bits &= !(1 << k);
            out.push(PartialMatch {
                stage: self.states[lin.states[k] as usize].name.clone(),
                start_ts: st.events[st.events.len() - k].0,
                events: self.lin_events(st, k, None),
            });
        }
        out
    }
}
