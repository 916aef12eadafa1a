//! Matchers for patterns that never branch: a chain of single-event stages, each joined to the
//! one before by strict (`next`, `times(n).consecutive()`) or relaxed (`followed_by`,
//! `times(n)`) contiguity, possibly with `not_followed_by` stages between them, with one
//! condition per stage (in strict chains it may read the partial match: `where_ctx`), a window
//! over the whole match, and any after-match skip strategy.
//!
//! Like regex-automata's one-pass DFA beside its PikeVM, they are picked at compile time
//! ([`Linear::of`]) and give exactly what the general automaton gives (matches, timeouts and
//! their times, their order, the partial matches shown and the events held), which
//! `tests/linear.rs` checks by running both on random patterns and streams. Under these shapes
//! an event moves a partial match one stage on (its condition holds), leaves it where it is
//! (relaxed contiguity) or ends it (strict): never two ways at once, so a partial match is its
//! stage and its events, with no shared buffer, Dewey versions or reference counts.
//!
//! - Strict chains ([`LinState`]): every event of a key extends or ends every partial match, so
//!   every live partial match holds the key's *latest* events. The key's partial matches are a
//!   bit set of lengths, and the events they hold the last `m` events of the key.
//! - Chains with a relaxed stage or a NOT stage ([`ChainState`]): each partial match keeps its
//!   own events (the `Arc`s are shared). A NOT stage is a guard on the stages it precedes (the
//!   general automaton's stop state): an event it matches ends a partial match waiting there,
//!   unless that event completes the match. An older partial match is never at an earlier stage than a younger one
//!   (both take the next event that fits their stage), so matches complete oldest first and
//!   none waits for an older partial match, as the general automaton's completed queue would
//!   make it.

use std::sync::Arc;

use smallvec::SmallVec;

use crate::few::Few;
use crate::nfa::{
    guard_cached, simple_cached, Action, CondExpr, Context, Events, Kind, Match, Nfa, PartialMatch,
    StateId, Timeout,
};
use crate::pattern::{AfterMatchSkip, Leaf};

/// The most stages a linear pattern may have (a strict chain's partial matches are bits 1 to 62
/// of a `u64`, whose bit 63 says whether the pattern stopped starting partial matches).
const MAX_STAGES: usize = 63;

/// The bit of [`LinState::bits`] set once events no longer start partial matches.
const STOPPED: u64 = 1 << 63;

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
    /// Per stage, whether an event that does not fit ends the partial match waiting there
    /// (strict contiguity) rather than passing it by (relaxed).
    strict: Vec<bool>,
    /// Per stage, the conditions of the `not_followed_by` stages before it: an event that
    /// matches one ends the partial match waiting there, unless the event completes the match.
    guards: Vec<SmallVec<[u32; 1]>>,
    /// Every stage after the first is strict and unguarded: keys run [`LinState`], else
    /// [`ChainState`].
    all_strict: bool,
    /// Under `SkipToFirst` / `SkipToLast`: the stage of the match (its first / last with the
    /// named stage's page) whose event later partial matches must not have started before;
    /// `None` without such a skip or when the pattern lacks the stage.
    skip_at: Option<usize>,
    /// The same for a strict chain: after a match, partial matches longer than this go.
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
        if window_times.iter().any(Option::is_some) {
            return None;
        }
        let simple = |i: u32| matches!(*leaves[i as usize], Leaf::Simple(_));
        let mut starts = states
            .iter()
            .enumerate()
            .filter(|(_, s)| s.kind == Kind::Start);
        let (start, _) = starts.next()?;
        if starts.next().is_some() {
            return None;
        }
        let mut chain = vec![start as StateId];
        let mut guards = Vec::new();
        let mut stops: SmallVec<[StateId; 2]> = SmallVec::new();
        let mut strict_of = Vec::new();
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
            let mut ignore = None;
            let mut guard: SmallVec<[u32; 1]> = SmallVec::new();
            for t in &state.transitions {
                match t.action {
                    Action::Ignore if t.target as usize == s && ignore.is_none() => {
                        ignore = Some(t)
                    }
                    Action::Take if take.is_none() => take = Some(t),
                    // A `not_followed_by` before this stage: an event it matches leads to a
                    // stop state, which ends the partial match.
                    Action::Proceed => {
                        let CondExpr::Leaf(g) = t.cond else {
                            return None;
                        };
                        let stop = &states[t.target as usize];
                        let [st] = &stop.transitions[..] else {
                            return None;
                        };
                        let stops_on_g =
                            matches!(st.cond, CondExpr::Leaf(x) if x == g) && simple(g);
                        if stop.kind != Kind::Stop
                            || st.action != Action::Take
                            || st.target != t.target
                            || !stops_on_g
                        {
                            return None;
                        }
                        guard.push(g);
                        if !stops.contains(&t.target) {
                            stops.push(t.target);
                        }
                    }
                    _ => return None,
                }
            }
            guards.push(guard);
            let t = take?;
            let cond = match t.cond {
                CondExpr::True => None,
                CondExpr::Leaf(i) => Some(i),
                _ => return None,
            };
            // Ignoring an event on the start state changes nothing; elsewhere an event may be
            // ignored exactly when it is not taken (relaxed contiguity), or never (strict).
            let strict = match ignore {
                None => true,
                Some(_) if state.kind == Kind::Start => true,
                Some(i) => match (&i.cond, cond) {
                    (CondExpr::Not(c), Some(l)) if matches!(**c, CondExpr::Leaf(x) if x == l) => {
                        false
                    }
                    (CondExpr::Not(c), None) if matches!(**c, CondExpr::True) => false,
                    _ => return None,
                },
            };
            strict_of.push(strict);
            let next = t.target as usize;
            if chain.contains(&(next as StateId)) {
                return None;
            }
            conds.push(cond);
            pages.push(state.page);
            chain.push(next as StateId);
            s = next;
        }
        if chain.len() + stops.len() != states.len() {
            return None;
        }
        // A condition that reads the partial match can leave an older partial match behind a
        // younger one at a relaxed stage; the general automaton then holds the younger one's
        // match back until the older one ends, which only it does. Strict chains cannot lag.
        let all_strict = strict_of.iter().all(|&s| s) && guards.iter().all(|g| g.is_empty());
        if !all_strict && conds.iter().flatten().any(|&i| !simple(i)) {
            return None;
        }
        let n = conds.len();
        // Under `SkipToFirst` / `SkipToLast`, the stage of the match whose event later partial
        // matches must not have started before.
        let skip_at = match skip {
            AfterMatchSkip::SkipToFirst(_) => {
                let page = skip_page?;
                pages.iter().position(|&p| p == page)
            }
            AfterMatchSkip::SkipToLast(_) => {
                let page = skip_page?;
                pages.iter().rposition(|&p| p == page)
            }
            _ => None,
        };
        // In a strict chain a partial match of length m started at the match's event n - m; it
        // goes when that is before the stage's event `at`.
        let skip_keep = skip_at.map(|at| n - at);
        Some(Linear {
            states: chain,
            conds,
            pages,
            strict: strict_of,
            guards,
            all_strict,
            skip_keep,
            skip_at,
        })
    }

    /// Number of stages.
    fn len(&self) -> usize {
        self.conds.len()
    }

    /// Whether every stage after the first is strict: keys then run [`LinState`], else
    /// [`ChainState`].
    pub(crate) fn all_strict(&self) -> bool {
        self.all_strict
    }
}

/// A strict chain's held events, oldest first, with their times: none, one inline (a key that
/// waits with one event, the usual case with many keys, allocates nothing), or a vector (kept
/// once allocated); the key's state stays 32 bytes with the enums around it.
type Held<E> = Few<(i64, Arc<E>)>;

/// The per-key state of a linear pattern.
#[derive(Debug)]
pub(crate) struct LinState<E> {
    /// The events the partial matches hold, oldest first, with their times: the longest partial
    /// match holds them all, every other one a suffix.
    events: Held<E>,
    /// Bit `k` (1 to 62): a partial match holds the last `k` events (and waits in stage `k`);
    /// bit 63 ([`STOPPED`]): events no longer start partial matches (the pattern drains). One
    /// word for both keeps the state at 32 bytes.
    bits: u64,
}

impl<E> LinState<E> {
    pub(crate) fn new() -> Self {
        LinState {
            events: Held::default(),
            bits: 0,
        }
    }

    pub(crate) fn reset(&mut self) {
        self.events.clear();
        self.bits = 0;
    }

    /// The partial matches' lengths as bits.
    fn alive(&self) -> u64 {
        self.bits & !STOPPED
    }

    fn set_alive(&mut self, alive: u64) {
        debug_assert_eq!(alive & STOPPED, 0);
        self.bits = (self.bits & STOPPED) | alive;
    }

    /// Ends the partial match of length `k`.
    fn end(&mut self, k: usize) {
        self.bits &= !(1 << k);
    }

    /// Whether events start partial matches.
    fn starting(&self) -> bool {
        self.bits & STOPPED == 0
    }

    pub(crate) fn is_idle(&self) -> bool {
        self.alive() == 0
    }

    pub(crate) fn partial_count(&self) -> usize {
        self.alive().count_ones() as usize
    }

    pub(crate) fn buffered_events(&self) -> usize {
        self.events.len()
    }

    pub(crate) fn stop_starting(&mut self) {
        self.bits |= STOPPED;
    }

    /// The lengths of the partial matches, longest (oldest) first.
    fn lengths(&self) -> impl Iterator<Item = usize> {
        let mut bits = self.alive();
        std::iter::from_fn(move || {
            (bits != 0).then(|| {
                let k = 63 - bits.leading_zeros() as usize;
                bits &= !(1 << k);
                k
            })
        })
    }

    /// The length of the longest partial match.
    fn longest(&self) -> usize {
        (63 - self.alive().leading_zeros() as i32).max(0) as usize
    }

    /// Drops the events no partial match holds.
    fn drop_unheld(&mut self) {
        let keep = self.longest();
        if self.events.len() > keep {
            let extra = self.events.len() - keep;
            self.events.drop_first(extra);
        }
    }

    /// The parts a snapshot writes: events with their times, the partial matches' lengths as
    /// bits, whether it starts partial matches.
    pub(crate) fn parts(&self) -> (&[(i64, Arc<E>)], u64, bool) {
        (&self.events, self.alive(), self.starting())
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
            events: events.into_iter().collect(),
            bits: alive | if starting { 0 } else { STOPPED },
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

    /// The last `k` events of `st` (plus `last`), grouped by stage.
    fn lin_events(&self, st: &LinState<E>, k: usize, last: Option<&Arc<E>>) -> Events<E> {
        let held = &st.events[st.events.len() - k..];
        self.grouped(held.iter().map(|(_, e)| e).chain(last), k + 1)
    }

    /// The events of a partial match (stage `i`'s event `i`-th), grouped by stage as the
    /// general automaton's extraction groups them.
    fn grouped<'a>(&self, events: impl Iterator<Item = &'a Arc<E>>, len: usize) -> Events<E>
    where
        E: 'a,
    {
        let lin = self.lin();
        let mut out: Events<E> = Vec::new();
        let mut prev_page = u16::MAX;
        for (stage, e) in events.enumerate() {
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
                    None => out.push((name.clone(), Vec::with_capacity(len))),
                }
                prev_page = page;
            }
            out.last_mut().expect("a group").1.push(e.clone());
        }
        out
    }

    /// Whether stage `stage`'s condition holds for `event`, for a partial match holding
    /// `held` (one event per stage passed): a simple condition is evaluated once per event
    /// (`cache`: 0 not yet, 1 false, 2 true), one that reads the partial match sees `held`.
    fn lin_holds<'e>(
        &self,
        stage: usize,
        event: &E,
        ts: i64,
        cache: &mut [u8],
        held: impl Iterator<Item = &'e E>,
    ) -> bool
    where
        E: 'e,
    {
        let lin = self.lin();
        let Some(i) = lin.conds[stage] else {
            return true;
        };
        let f = match &*self.leaves[i as usize] {
            Leaf::Simple(f) => return simple_cached(f, event, &mut cache[i as usize]),
            Leaf::Iterative(f) => f,
            Leaf::Guarded(g, f) => {
                if !guard_cached(g, event, &mut cache[i as usize]) {
                    return false;
                }
                f
            }
        };
        let held: SmallVec<[(u16, &E); 8]> =
            held.enumerate().map(|(k, e)| (lin.pages[k], e)).collect();
        f(event, &Context::held(&held, &self.pages, ts))
    }

    /// When the oldest partial match of `st` times out (`i64::MAX`: never).
    pub(crate) fn lin_due(&self, st: &LinState<E>) -> i64 {
        match st.events.first() {
            Some(&(start, _)) if st.alive() != 0 => self.window_end(start),
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
        while st.alive() != 0 {
            let k = st.longest();
            let start = st.events[st.events.len() - k].0;
            if ts - start < self.window {
                break;
            }
            timeouts.push((self.lin_events(st, k, None), start + self.window));
            st.end(k);
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
        let held = st.events.len();
        let mut holds = |stage: usize| {
            let last = st.events[held - stage..].iter().map(|(_, e)| &**e);
            self.lin_holds(stage, event, ts, &mut cache, last)
        };
        let mut next = 0u64;
        let mut matched = false;
        for k in st.lengths() {
            if holds(k) {
                if k + 1 == n {
                    matched = true;
                } else {
                    next |= 1 << (k + 1);
                }
            }
        }
        if st.starting() && holds(0) {
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
        st.set_alive(next);
        if next != 0 {
            st.events.push((ts, event.clone()));
        }
        st.drop_unheld();
    }

    /// Keeps at most `max` partial matches: the oldest beyond it go. Returns how many went.
    pub(crate) fn lin_trim(&self, st: &mut LinState<E>, max: usize) -> usize {
        let mut dropped = 0;
        while st.partial_count() > max {
            st.end(st.longest());
            dropped += 1;
        }
        st.drop_unheld();
        dropped
    }

    /// Drops the oldest partial matches until at most `max` events are held.
    pub(crate) fn lin_trim_buffer(&self, st: &mut LinState<E>, max: usize) -> usize {
        let mut dropped = 0;
        while st.events.len() > max && st.alive() != 0 {
            st.end(st.longest());
            st.drop_unheld();
            dropped += 1;
        }
        dropped
    }

    /// The partial matches of `st`, oldest first.
    pub(crate) fn lin_partial_matches(&self, st: &LinState<E>) -> Vec<PartialMatch<E>> {
        let lin = self.lin();
        st.lengths()
            .map(|k| PartialMatch {
                stage: self.states[lin.states[k] as usize].name.clone(),
                start_ts: st.events[st.events.len() - k].0,
                events: self.lin_events(st, k, None),
            })
            .collect()
    }
}

/// A partial match of a chain with a relaxed stage: its events (arrival number, time, event),
/// one per stage passed; it waits in stage `events.len()`.
#[derive(Debug)]
pub(crate) struct Partial<E> {
    pub(crate) events: SmallVec<[(u64, i64, Arc<E>); 2]>,
}

impl<E> Partial<E> {
    /// Its events, in order.
    fn events(&self) -> impl Iterator<Item = &Arc<E>> {
        self.events.iter().map(|e| &e.2)
    }

    fn start(&self) -> (u64, i64) {
        let (seq, ts, _) = &self.events[0];
        (*seq, *ts)
    }
}

/// The per-key state of a chain with a relaxed stage.
#[derive(Debug)]
pub(crate) struct ChainState<E> {
    /// Oldest first (by first event).
    pub(crate) partials: Vec<Partial<E>>,
    /// Events seen so far: the next event's arrival number (orders events as the general
    /// automaton's event ids do).
    pub(crate) seq: u64,
    /// Whether events start partial matches (false once the pattern drains).
    pub(crate) starting: bool,
}

impl<E> ChainState<E> {
    pub(crate) fn new() -> Self {
        ChainState {
            partials: Vec::new(),
            seq: 0,
            starting: true,
        }
    }

    pub(crate) fn reset(&mut self) {
        self.partials.clear();
        self.seq = 0;
        self.starting = true;
    }

    pub(crate) fn is_idle(&self) -> bool {
        self.partials.is_empty()
    }

    pub(crate) fn partial_count(&self) -> usize {
        self.partials.len()
    }

    /// Distinct events held (partial matches share events they both took).
    pub(crate) fn buffered_events(&self) -> usize {
        let mut seqs: SmallVec<[u64; 16]> = self
            .partials
            .iter()
            .flat_map(|p| p.events.iter().map(|e| e.0))
            .collect();
        seqs.sort_unstable();
        seqs.dedup();
        seqs.len()
    }

    pub(crate) fn stop_starting(&mut self) {
        self.starting = false;
    }

    /// A state from its parts (a snapshot), checked against the pattern.
    pub(crate) fn from_parts(
        lin: &Linear,
        partials: Vec<Partial<E>>,
        seq: u64,
        starting: bool,
    ) -> Result<Self, String> {
        for p in &partials {
            if p.events.is_empty() || p.events.len() >= lin.len() {
                return Err(format!(
                    "a partial match of {} events in a pattern of {} stages",
                    p.events.len(),
                    lin.len()
                ));
            }
        }
        Ok(ChainState {
            partials,
            seq,
            starting,
        })
    }
}

impl<E> Nfa<E> {
    /// When the oldest partial match of `st` times out (`i64::MAX`: never).
    pub(crate) fn chain_due(&self, st: &ChainState<E>) -> i64 {
        st.partials
            .first()
            .map_or(i64::MAX, |p| self.window_end(p.start().1))
    }

    /// Times out the partial matches whose window ended at `ts`, oldest first.
    pub(crate) fn chain_advance_time(
        &self,
        st: &mut ChainState<E>,
        ts: i64,
        timeouts: &mut Vec<Timeout<E>>,
    ) {
        if self.window <= 0 {
            return;
        }
        st.partials.retain(|p| {
            let start = p.start().1;
            if ts - start < self.window {
                return true;
            }
            let events = self.grouped(p.events(), p.events.len());
            timeouts.push((events, start + self.window));
            false
        });
    }

    /// Feeds one event to the partial matches of `st`.
    pub(crate) fn chain_process(
        &self,
        st: &mut ChainState<E>,
        event: &Arc<E>,
        ts: i64,
        matches: &mut Vec<Match<E>>,
    ) {
        let lin = self.lin();
        let n = lin.len();
        let seq = st.seq;
        st.seq += 1;
        let mut cache: SmallVec<[u8; 8]> = SmallVec::from_elem(0, self.leaves.len());
        let mut done: SmallVec<[Partial<E>; 1]> = SmallVec::new();
        let mut kept = 0;
        for i in 0..st.partials.len() {
            let p = &st.partials[i];
            let k = p.events.len();
            let take = self.lin_holds(k, event, ts, &mut cache, p.events().map(|e| &**e));
            // A guard that fires discards every way on but one that completes the match.
            let stopped = lin.guards[k]
                .iter()
                .any(|&g| match &*self.leaves[g as usize] {
                    Leaf::Simple(f) => simple_cached(f, event, &mut cache[g as usize]),
                    Leaf::Iterative(_) | Leaf::Guarded(..) => {
                        unreachable!("guards are simple conditions (Linear::of)")
                    }
                });
            let keep = if take && (k + 1 == n || !stopped) {
                st.partials[i].events.push((seq, ts, event.clone()));
                if k + 1 == n {
                    done.push(std::mem::replace(
                        &mut st.partials[i],
                        Partial {
                            events: SmallVec::new(),
                        },
                    ));
                    false
                } else {
                    true
                }
            } else {
                !lin.strict[k] && !stopped
            };
            if keep {
                st.partials.swap(kept, i);
                kept += 1;
            }
        }
        st.partials.truncate(kept);
        if st.starting && self.lin_holds(0, event, ts, &mut cache, std::iter::empty()) {
            let mut events = SmallVec::new();
            events.push((seq, ts, event.clone()));
            let p = Partial { events };
            if n == 1 {
                done.push(p);
            } else {
                st.partials.push(p);
            }
        }
        // Oldest first; an emitted match may prune the partial matches and the matches after it
        // (events compare by arrival number).
        let mut pruned_to: Option<u64> = None;
        for m in done {
            let start = m.start().0;
            if pruned_to.is_some_and(|id| self.skip_prunes(start, id)) {
                continue;
            }
            matches.push((self.grouped(m.events(), n), ts));
            let pruning = match &self.skip {
                AfterMatchSkip::NoSkip => None,
                AfterMatchSkip::SkipToNext => Some(start),
                AfterMatchSkip::SkipPastLastEvent => Some(seq),
                AfterMatchSkip::SkipToFirst(_) | AfterMatchSkip::SkipToLast(_) => {
                    lin.skip_at.map(|at| m.events[at].0)
                }
            };
            if let Some(id) = pruning {
                st.partials.retain(|p| !self.skip_prunes(p.start().0, id));
                pruned_to = Some(pruned_to.map_or(id, |p| p.max(id)));
            }
        }
    }

    /// Keeps at most `max` partial matches: the oldest beyond it go. Returns how many went.
    pub(crate) fn chain_trim(&self, st: &mut ChainState<E>, max: usize) -> usize {
        let extra = st.partials.len().saturating_sub(max);
        st.partials.drain(..extra);
        extra
    }

    /// Drops the oldest partial matches until at most `max` events are held.
    pub(crate) fn chain_trim_buffer(&self, st: &mut ChainState<E>, max: usize) -> usize {
        let mut dropped = 0;
        while !st.partials.is_empty() && st.buffered_events() > max {
            st.partials.remove(0);
            dropped += 1;
        }
        dropped
    }

    /// The partial matches of `st`, oldest first.
    pub(crate) fn chain_partial_matches(&self, st: &ChainState<E>) -> Vec<PartialMatch<E>> {
        let lin = self.lin();
        st.partials
            .iter()
            .map(|p| PartialMatch {
                stage: self.states[lin.states[p.events.len()] as usize]
                    .name
                    .clone(),
                start_ts: p.start().1,
                events: self.grouped(p.events(), p.events.len()),
            })
            .collect()
    }
}
