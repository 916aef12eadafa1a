//! The compiled automaton and the matcher: Flink's `NFA.process` / `NFA.advanceTime` over a
//! per-key [`NfaState`] (partial matches, completed matches waiting for their turn, and the
//! shared buffer).

use std::cell::{Cell, OnceCell};
use std::cmp::Ordering;
use std::sync::Arc;

use smallvec::{smallvec, SmallVec};

use crate::dewey::Dewey;
use crate::linear::{ChainState, LinState, Linear};
use crate::looping::{LoopState, Looped};
use crate::pattern::{AfterMatchSkip, Leaf};
use crate::pq::JavaPq;
use crate::shared_buffer::{page_groups, EvRef, EventId, NodeId, Path, SharedBuffer};

/// Index of a state of the automaton.
pub type StateId = u32;

/// The kind of an automaton state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Where every match starts.
    Start,
    /// An ordinary state.
    Normal,
    /// Reaching it completes a match.
    Final,
    /// Reaching it discards the partial match (a NOT stage matched).
    Stop,
    /// A trailing `not_followed_by`: the match completes when the window ends.
    Pending,
}

/// What a transition does with the event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Consume the event into the partial match.
    Take,
    /// Skip the event.
    Ignore,
    /// Move on without consuming (an epsilon transition).
    Proceed,
}

/// A transition condition: user conditions combined as the compiler needs.
#[derive(Clone, Debug)]
pub enum CondExpr {
    /// Always true.
    True,
    /// A user condition, by index.
    Leaf(u32),
    /// Negation.
    Not(Box<CondExpr>),
    /// Conjunction.
    And(Box<CondExpr>, Box<CondExpr>),
    /// Disjunction.
    Or(Box<CondExpr>, Box<CondExpr>),
}

/// A transition of the automaton.
#[derive(Clone, Debug)]
pub struct Transition {
    /// What it does.
    pub action: Action,
    /// Where it comes from.
    pub source: StateId,
    /// Where it goes.
    pub target: StateId,
    /// When it applies.
    pub cond: CondExpr,
}

/// A state of the automaton.
#[derive(Clone, Debug)]
pub struct State {
    /// Unique internal name (stage name, with `:n` for further states of the same stage).
    pub name: String,
    /// The stage (page) under which events taken here are reported.
    pub page: u16,
    /// Its kind.
    pub kind: Kind,
    /// Outgoing transitions, in order.
    pub transitions: Vec<Transition>,
}

/// A partial match: where it stands, the newest buffer node it holds, its version and times
/// (Flink's `ComputationState`).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct CState {
    pub state: StateId,
    pub prev: Option<NodeId>,
    pub version: Dewey,
    pub start_ts: i64,
    pub prev_ts: i64,
    pub start_event: Option<EventId>,
}

impl CState {
    fn start(state: StateId, version: Dewey) -> CState {
        CState {
            state,
            prev: None,
            version,
            start_ts: -1,
            prev_ts: -1,
            start_event: None,
        }
    }
}

/// Partial matches come out by the event that started them; start states last.
fn cmp_cs(a: &CState, b: &CState) -> Ordering {
    let ka = a.start_event.map_or((i64::MAX, u32::MAX), |e| (e.ts, e.id));
    let kb = b.start_event.map_or((i64::MAX, u32::MAX), |e| (e.ts, e.id));
    ka.cmp(&kb)
}

/// The compiled, immutable automaton of one pattern; shared by all keys.
pub struct Nfa<E> {
    name: String,
    pub(crate) states: Vec<State>,
    pub(crate) pages: Vec<Arc<str>>,
    pub(crate) leaves: Vec<Arc<Leaf<E>>>,
    /// The text of each leaf, where the pattern gave one ([`crate::Pattern::label`]).
    pub(crate) labels: Vec<Option<Arc<str>>>,
    pub(crate) window: i64,
    window_times: Vec<Option<i64>>,
    pub(crate) skip: AfterMatchSkip,
    pub(crate) skip_page: Option<u16>,
    start_states: Vec<StateId>,
    has_iterative: bool,
    /// Whether some state is a stop state (a NOT stage); without one, next states go straight
    /// to their queues.
    has_stop: bool,
    /// Per state, whether it has a proceed transition.
    proceeds: Vec<bool>,
    /// Per state, its take transition's index when the state has only that and an ignore back
    /// to itself on the take's negation: an event the take refuses only passes its partial
    /// matches by ([`Nfa::passes_by`]).
    take_or_wait: Vec<Option<usize>>,
    /// The chain of stages, when the pattern never branches: its keys then run the linear
    /// matcher (`crate::linear`).
    pub(crate) linear: Option<Linear>,
    /// The loop between two single stages, when the pattern is one: its keys then run the loop
    /// matcher (`crate::looping`).
    pub(crate) looped: Option<Looped>,
}

/// Events of a match or partial match, by stage, in order.
pub type Events<E> = Vec<(Arc<str>, Vec<Arc<E>>)>;

/// A timed-out partial match and the time it timed out.
pub type Timeout<E> = (Events<E>, i64);

/// A match and its time: the time of the event that completed it, or, for a match completed by
/// the end of the window of a trailing `not_followed_by`, the end of that window.
pub type Match<E> = (Events<E>, i64);

impl<E> std::fmt::Debug for Nfa<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nfa")
            .field("name", &self.name)
            .field("states", &self.states)
            .field("window", &self.window)
            .field("skip", &self.skip)
            .finish()
    }
}

/// The per-key state of one pattern.
pub struct NfaState<E> {
    pub(crate) repr: Repr<E>,
}

/// Which matcher a key's state is for: the general automaton, or the linear matcher of a
/// pattern that never branches (a key restored from a snapshot of the general automaton's
/// state stays on it).
pub(crate) enum Repr<E> {
    General(Box<GenState<E>>),
    Linear(LinState<E>),
    /// Boxed, so that a strict chain's state (the smaller and more common) sets the size.
    Chain(Box<ChainState<E>>),
    Loop(Box<LoopState<E>>),
}

impl<E> NfaState<E> {
    /// Whether no partial match is under way and nothing is buffered.
    pub fn is_idle(&self) -> bool {
        match &self.repr {
            Repr::General(g) => g.is_idle(),
            Repr::Linear(l) => l.is_idle(),
            Repr::Chain(c) => c.is_idle(),
            Repr::Loop(l) => l.is_idle(),
        }
    }

    /// Number of partial matches under way (start states excluded).
    pub fn partial_count(&self) -> usize {
        match &self.repr {
            Repr::General(g) => g.partial_count(),
            Repr::Linear(l) => l.partial_count(),
            Repr::Chain(c) => c.partial_count(),
            Repr::Loop(l) => l.partial_count(),
        }
    }

    /// Number of events held for the partial matches.
    pub fn buffered_events(&self) -> usize {
        match &self.repr {
            Repr::General(g) => g.buffered_events(),
            Repr::Linear(l) => l.buffered_events(),
            Repr::Chain(c) => c.buffered_events(),
            Repr::Loop(l) => l.buffered_events(),
        }
    }

    /// Whether the key runs on a matcher for patterns that never branch (`crate::linear`).
    pub fn is_linear(&self) -> bool {
        matches!(self.repr, Repr::Linear(_) | Repr::Chain(_))
    }
}

/// The per-key state of one pattern run by the general automaton (Flink's `NFAState` and
/// `SharedBuffer`).
pub(crate) struct GenState<E> {
    pub(crate) partial: JavaPq<CState>,
    pub(crate) completed: JavaPq<CState>,
    pub(crate) buffer: SharedBuffer<E>,
    /// The earliest time a partial match times out (`i64::MAX`: never), kept up to date by
    /// every change of `partial`.
    pub(crate) due: i64,
}

thread_local! {
    /// An empty vector with capacity, swapped with a state's queue of partial matches each step
    /// so that building the next queue allocates nothing. One per thread, not one per key: a
    /// key holds only its queue (capacities circulate between keys).
    static SCRATCH: std::cell::Cell<Vec<CState>> = const { std::cell::Cell::new(Vec::new()) };
}

fn take_scratch() -> Vec<CState> {
    SCRATCH.with(|s| s.take())
}

fn give_scratch(mut v: Vec<CState>) {
    v.clear();
    SCRATCH.with(|s| s.set(v));
}

impl<E> GenState<E> {
    /// Whether only the start states remain and nothing is buffered.
    pub fn is_idle(&self) -> bool {
        self.completed.is_empty()
            && self.buffer.is_empty()
            && self
                .partial
                .as_slice()
                .iter()
                .all(|c| c.start_event.is_none())
    }

    /// Number of partial matches under way (start states excluded).
    pub fn partial_count(&self) -> usize {
        self.partial
            .as_slice()
            .iter()
            .filter(|c| c.start_event.is_some())
            .count()
    }

    /// Number of events held in the shared buffer.
    pub fn buffered_events(&self) -> usize {
        self.buffer.event_count()
    }
}

/// What an iterative condition sees: the events already matched by the partial match being
/// extended (Flink's `getEventsForPattern`), computed lazily on first use.
pub struct Context<'a, E> {
    source: Source<'a, E>,
    pages: &'a [Arc<str>],
    ts: i64,
    /// The iterative conditions (leaves 0 to 63) already evaluated with this context, and
    /// their results: a stage's take and ignore transitions test the same condition, and the
    /// state reached by proceeding may test it again, with the same event and partial match.
    known: Cell<u64>,
    results: Cell<u64>,
}

/// Where a [`Context`] reads the partial match's events from. It lives on the stack for one
/// step of one partial match: the path stays inline (boxing it would allocate per step).
#[allow(clippy::large_enum_variant)]
enum Source<'a, E> {
    /// The general automaton's shared buffer, extracted on first use.
    Buffer {
        buffer: &'a SharedBuffer<E>,
        cs: &'a CState,
        /// The extracted path, oldest event first.
        matched: OnceCell<Path>,
    },
    /// A linear matcher's partial match: its events with their pages, in order.
    Held(&'a [(u16, &'a E)]),
    /// The loop matcher's partial match: one event of the first page, then events of the
    /// second.
    Run {
        events: &'a [Arc<E>],
        pages: [u16; 2],
    },
}

impl<'a, E> Context<'a, E> {
    /// The context of a linear matcher's partial match.
    pub(crate) fn held(held: &'a [(u16, &'a E)], pages: &'a [Arc<str>], ts: i64) -> Self {
        Context {
            source: Source::Held(held),
            pages,
            ts,
            known: Cell::new(0),
            results: Cell::new(0),
        }
    }

    /// The context of the loop matcher's partial match `events`: the first on page `first`, the
    /// rest on page `rest` (none: the start state's).
    pub(crate) fn run(
        events: &'a [Arc<E>],
        first: u16,
        rest: u16,
        pages: &'a [Arc<str>],
        ts: i64,
    ) -> Self {
        Context {
            source: Source::Run {
                events,
                pages: [first, rest],
            },
            pages,
            ts,
            known: Cell::new(0),
            results: Cell::new(0),
        }
    }

    fn matched<'m>(buffer: &SharedBuffer<E>, cs: &CState, matched: &'m OnceCell<Path>) -> &'m Path {
        matched.get_or_init(|| {
            let mut path = Path::new();
            if let Some(prev) = cs.prev {
                buffer.extract_first_in_order(prev, &cs.version, &mut path);
            }
            path
        })
    }

    /// The events matched so far by the stage named `stage`, in order.
    pub fn events(&self, stage: &str) -> impl Iterator<Item = &'a E> + '_ {
        let page = self.pages.iter().position(|p| &**p == stage);
        self.events_by_page(page.unwrap_or(usize::MAX))
    }

    /// The events matched so far by the stage with index `page` (see [`Nfa::page_of`]).
    pub fn events_by_page(&self, page: usize) -> impl Iterator<Item = &'a E> + '_ {
        match &self.source {
            Source::Buffer {
                buffer,
                cs,
                matched,
            } => {
                let path = Self::matched(buffer, cs, matched);
                let buffer = *buffer;
                either::Either::Left(
                    path.iter()
                        .filter(move |(p, _)| *p as usize == page)
                        .filter_map(move |(_, id)| buffer.event(*id).map(|e| &**e)),
                )
            }
            Source::Held(held) => either::Either::Right(either::Either::Left(
                held.iter()
                    .filter(move |(p, _)| *p as usize == page)
                    .map(|(_, e)| *e),
            )),
            Source::Run { events, pages } => {
                let first = usize::from(pages[0]) == page;
                let rest = usize::from(pages[1]) == page;
                let slice: &'a [Arc<E>] = match (first, rest) {
                    (true, true) => events,
                    (true, false) => events.get(..1).unwrap_or(&[]),
                    (false, true) => events.get(1..).unwrap_or(&[]),
                    (false, false) => &[],
                };
                either::Either::Right(either::Either::Right(slice.iter().map(|e| &**e)))
            }
        }
    }

    /// The timestamp of the event being evaluated.
    pub fn timestamp(&self) -> i64 {
        self.ts
    }

    /// The result of iterative condition `leaf` with this context: evaluated by `eval` the
    /// first time, remembered after (conditions are functions of the event and the partial
    /// match, which a context fixes).
    fn remember(&self, leaf: u32, eval: impl FnOnce() -> bool) -> bool {
        let Some(bit) = 1u64.checked_shl(leaf) else {
            return eval();
        };
        if self.known.get() & bit != 0 {
            return self.results.get() & bit != 0;
        }
        let r = eval();
        self.known.set(self.known.get() | bit);
        if r {
            self.results.set(self.results.get() | bit);
        }
        r
    }
}

/// Per-event cache of the results of simple conditions (0: not evaluated, 1: false, 2: true).
pub(crate) struct Eval<'e, E> {
    event: &'e E,
    cache: SmallVec<[u8; 16]>,
}

impl<'e, E> Eval<'e, E> {
    /// Nothing evaluated yet for `event`, under a pattern of `n` leaves.
    #[inline]
    pub(crate) fn new(event: &'e E, n: usize) -> Self {
        Eval {
            event,
            cache: if n <= 16 {
                SmallVec::from_buf_and_len([0; 16], n)
            } else {
                smallvec![0; n]
            },
        }
    }
}

/// A transition taken: action, source, target, and the final state reached from the target by
/// proceeding (for a take).
type Edge = (Action, StateId, StateId, Option<StateId>);

/// The decision for one computation state and one event, computed before anything changes.
struct Decision {
    edges: SmallVec<[Edge; 4]>,
    total_take: i32,
    total_ignore: i32,
}

impl Decision {
    /// Whether the event only passes a partial match in `state` by: one ignore back to it.
    fn waits(&self, state: StateId) -> bool {
        matches!(self.edges[..], [(Action::Ignore, _, target, _)] if target == state)
    }
}

/// The next computation states of one computation state; rarely more than a few.
type NextStates = SmallVec<[CState; 4]>;

impl<E> Nfa<E> {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        name: String,
        states: Vec<State>,
        pages: Vec<Arc<str>>,
        leaves: Vec<Arc<Leaf<E>>>,
        window: i64,
        window_times: Vec<Option<i64>>,
        skip: AfterMatchSkip,
        skip_page: Option<u16>,
    ) -> Nfa<E> {
        let start_states = states
            .iter()
            .enumerate()
            .filter(|(_, s)| s.kind == Kind::Start)
            .map(|(i, _)| i as StateId)
            .collect();
        let has_iterative = leaves
            .iter()
            .any(|l| matches!(**l, Leaf::Iterative(_) | Leaf::Guarded(..)));
        let has_stop = states.iter().any(|s| s.kind == Kind::Stop);
        let proceeds = states
            .iter()
            .map(|s| s.transitions.iter().any(|t| t.action == Action::Proceed))
            .collect();
        let take_or_wait = states.iter().enumerate().map(take_or_wait).collect();
        let linear = Linear::of(&states, &leaves, &window_times, &skip, skip_page);
        let looped = match linear {
            None => Looped::of(&states, &window_times),
            Some(_) => None,
        };
        Nfa {
            name,
            states,
            pages,
            leaves,
            labels: Vec::new(),
            window,
            window_times,
            skip,
            skip_page,
            start_states,
            has_iterative,
            has_stop,
            proceeds,
            take_or_wait,
            linear,
            looped,
        }
    }

    /// The pattern's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A transition condition as text, with each user condition as its label says
    /// ([`crate::Pattern::label`]; `condition N` without one), combined with `and`, `or`, `not`.
    pub fn condition_text(&self, cond: &CondExpr) -> String {
        fn go<E>(nfa: &Nfa<E>, c: &CondExpr, top: bool, out: &mut String) {
            match c {
                CondExpr::True => out.push_str("true"),
                CondExpr::Leaf(i) => match nfa.labels.get(*i as usize).and_then(Option::as_ref) {
                    Some(text) if top => out.push_str(text),
                    Some(text) => {
                        out.push('(');
                        out.push_str(text);
                        out.push(')');
                    }
                    None => out.push_str(&format!("condition {i}")),
                },
                CondExpr::Not(a) => {
                    out.push_str("not ");
                    go(nfa, a, false, out);
                }
                CondExpr::And(a, b) | CondExpr::Or(a, b) => {
                    let op = if matches!(c, CondExpr::And(..)) {
                        " and "
                    } else {
                        " or "
                    };
                    if !top {
                        out.push('(');
                    }
                    go(nfa, a, false, out);
                    out.push_str(op);
                    go(nfa, b, false, out);
                    if !top {
                        out.push(')');
                    }
                }
            }
        }
        let mut out = String::new();
        go(self, cond, true, &mut out);
        out
    }

    /// The states, for `--explain`.
    pub fn states(&self) -> &[State] {
        &self.states
    }

    /// The names under which events are reported, by page index.
    pub fn pages(&self) -> &[Arc<str>] {
        &self.pages
    }

    /// The page index of a stage name.
    pub fn page_of(&self, stage: &str) -> Option<usize> {
        self.pages.iter().position(|p| &**p == stage)
    }

    /// The window of the whole pattern in milliseconds (0: none).
    pub fn window(&self) -> i64 {
        self.window
    }

    /// Whether some condition reads the partial match.
    pub fn has_iterative(&self) -> bool {
        self.has_iterative
    }

    /// A fresh per-key state.
    /// The state of a key that has seen nothing.
    pub fn initial_state(&self) -> NfaState<E> {
        let repr = match &self.linear {
            Some(lin) if lin.all_strict() => Repr::Linear(LinState::new()),
            Some(_) => Repr::Chain(Box::new(ChainState::new())),
            None if self.looped.is_some() => Repr::Loop(Box::new(LoopState::new())),
            None => Repr::General(Box::new(self.initial_gen())),
        };
        NfaState { repr }
    }

    /// Whether keys run on a matcher for patterns that never branch (`crate::linear`): the
    /// pattern is a chain of single-event stages joined by strict or relaxed contiguity, with
    /// simple conditions.
    pub fn is_linear(&self) -> bool {
        self.linear.is_some()
    }

    /// Which matcher runs the pattern's keys: `"strict chain"` (a chain of strict stages:
    /// `LinState`), `"chain"` (a chain with relaxed or NOT stages: `ChainState`), or
    /// `"loop"` (one loop between two single stages: `LoopState`), or `"automaton"` (the
    /// general automaton, Flink's NFA with its shared buffer).
    pub fn matcher(&self) -> &'static str {
        match &self.linear {
            Some(lin) if lin.all_strict() => "strict chain",
            Some(_) => "chain",
            None if self.looped.is_some() => "loop",
            None => "automaton",
        }
    }

    /// The same pattern with every key on the general automaton, whatever its shape (tests
    /// compare the two matchers with it).
    pub fn general(mut self) -> Self {
        self.linear = None;
        self.looped = None;
        self
    }

    /// Resets `st` to what [`Nfa::initial_state`] returns, keeping its allocations.
    pub(crate) fn reset_state(&self, st: &mut NfaState<E>) {
        let strict = self.linear.as_ref().map(Linear::all_strict);
        match &mut st.repr {
            Repr::Linear(l) if strict == Some(true) => l.reset(),
            Repr::Chain(c) if strict == Some(false) => c.reset(),
            Repr::Loop(l) if strict.is_none() && self.looped.is_some() => l.reset(),
            Repr::General(g) if strict.is_none() && self.looped.is_none() => self.reset_gen(g),
            _ => *st = self.initial_state(),
        }
    }

    /// Stops `st` from starting partial matches: its start states go, the partial matches under
    /// way stay (they run to their match or timeout). A pattern replaced in `drain` mode.
    pub fn stop_starting(&self, st: &mut NfaState<E>) {
        match &mut st.repr {
            Repr::General(g) => self.stop_starting_gen(g),
            Repr::Linear(l) => l.stop_starting(),
            Repr::Chain(c) => c.stop_starting(),
            Repr::Loop(l) => l.stop_starting(),
        }
    }

    /// Keeps at most `max` partial matches in `st`: the oldest (by their first event) beyond it
    /// are dropped with their hold on the events. Returns how many went.
    pub fn trim(&self, st: &mut NfaState<E>, max: usize) -> usize {
        match &mut st.repr {
            Repr::General(g) => self.trim_gen(g, max),
            Repr::Linear(l) => self.lin_trim(l, max),
            Repr::Chain(c) => self.chain_trim(c, max),
            Repr::Loop(l) => self.loop_trim(l, max),
        }
    }

    /// Drops the oldest partial matches (by first event), one at a time, until the events the
    /// key keeps for this pattern are at most `max` (or no partial match is left: completed
    /// matches waiting to be emitted keep theirs). Returns how many it dropped.
    pub fn trim_buffer(&self, st: &mut NfaState<E>, max: usize) -> usize {
        match &mut st.repr {
            Repr::Linear(l) => return self.lin_trim_buffer(l, max),
            Repr::Chain(c) => return self.chain_trim_buffer(c, max),
            Repr::General(_) | Repr::Loop(_) => {}
        }
        // The queue-based matchers: trimming to one partial match fewer drops the oldest start
        // event's partial matches (all of them: they compare equal).
        let mut dropped = 0;
        while st.buffered_events() > max {
            let count = st.partial_count();
            if count == 0 {
                break;
            }
            dropped += self.trim(st, count - 1);
        }
        dropped
    }

    /// The earliest time at which a partial match of `st` times out (`i64::MAX`: never).
    #[inline]
    pub fn next_due(&self, st: &NfaState<E>) -> i64 {
        match &st.repr {
            Repr::General(g) => g.due,
            Repr::Linear(l) => self.lin_due(l),
            Repr::Chain(c) => self.chain_due(c),
            Repr::Loop(l) => self.loop_due(l),
        }
    }

    /// Times out partial matches for which `ts` is too late; returns matches completed by a
    /// trailing `not_followed_by` whose window ended, and the timed-out partial matches.
    pub fn advance_time(
        &self,
        st: &mut NfaState<E>,
        ts: i64,
        matches: &mut Vec<Match<E>>,
        timeouts: &mut Vec<Timeout<E>>,
    ) {
        match &mut st.repr {
            Repr::General(g) => self.advance_time_gen(g, ts, matches, timeouts),
            Repr::Linear(l) => self.lin_advance_time(l, ts, timeouts),
            Repr::Chain(c) => self.chain_advance_time(c, ts, timeouts),
            Repr::Loop(l) => self.loop_advance_time(l, ts, matches, timeouts),
        }
    }

    /// Feeds one event (with its timestamp) to the partial matches of `st`.
    pub fn process(
        &self,
        st: &mut NfaState<E>,
        event: &Arc<E>,
        ts: i64,
        matches: &mut Vec<Match<E>>,
    ) {
        match &mut st.repr {
            Repr::General(g) => self.process_gen(g, event, ts, matches),
            Repr::Linear(l) => self.lin_process(l, event, ts, matches),
            Repr::Chain(c) => self.chain_process(c, event, ts, matches),
            Repr::Loop(l) => self.loop_process(l, event, ts, matches),
        }
    }

    /// The partial matches of `st`: state name, start time, events so far.
    pub fn partial_matches(&self, st: &NfaState<E>) -> Vec<PartialMatch<E>> {
        match &st.repr {
            Repr::General(g) => self.partial_matches_gen(g),
            Repr::Linear(l) => self.lin_partial_matches(l),
            Repr::Chain(c) => self.chain_partial_matches(c),
            Repr::Loop(l) => self.loop_partial_matches(l),
        }
    }

    fn initial_gen(&self) -> GenState<E> {
        let mut partial = JavaPq::new();
        for &s in &self.start_states {
            partial.add(CState::start(s, Dewey::new(1)), cmp_cs);
        }
        GenState {
            partial,
            completed: JavaPq::new(),
            buffer: SharedBuffer::default(),
            due: i64::MAX,
        }
    }

    /// Resets `st` to what [`Nfa::initial_state`] returns, keeping its allocations.
    fn reset_gen(&self, st: &mut GenState<E>) {
        let mut es = st.partial.take_vec();
        es.clear();
        let mut partial = JavaPq::from_vec(es);
        for &s in &self.start_states {
            partial.add(CState::start(s, Dewey::new(1)), cmp_cs);
        }
        st.partial = partial;
        let mut es = st.completed.take_vec();
        es.clear();
        st.completed = JavaPq::from_vec(es);
        st.buffer.clear();
        st.due = i64::MAX;
    }

    /// Stops `st` from starting partial matches: its start states go, the partial matches under
    /// way stay (they run to their match or timeout). A pattern replaced in `drain` mode.
    fn stop_starting_gen(&self, st: &mut GenState<E>) {
        st.partial.remove_if(|cs| self.is_start(cs), cmp_cs);
    }

    /// Keeps at most `max` partial matches in `st`: the oldest (by their first event) beyond it
    /// are dropped with their hold on the shared buffer. Returns how many went.
    fn trim_gen(&self, st: &mut GenState<E>, max: usize) -> usize {
        let count = st.partial_count();
        if count <= max {
            return 0;
        }
        let mut starts: Vec<(i64, EventId)> = st
            .partial
            .as_slice()
            .iter()
            .filter_map(|c| c.start_event.map(|e| (c.start_ts, e)))
            .collect();
        starts.sort_unstable();
        let cut = starts[count - max - 1];
        let mut dropped = Vec::new();
        st.partial.remove_if(
            |c| {
                let old = c.start_event.is_some_and(|e| (c.start_ts, e) <= cut);
                if old {
                    dropped.push((c.prev, c.version.clone()));
                }
                old
            },
            cmp_cs,
        );
        for (prev, version) in &dropped {
            if let Some(p) = prev {
                st.buffer.release_node(*p, version);
            }
        }
        st.due = self.compute_due(&st.partial);
        dropped.len()
    }

    fn is_start(&self, cs: &CState) -> bool {
        self.states[cs.state as usize].kind == Kind::Start
    }

    fn kind(&self, s: StateId) -> Kind {
        self.states[s as usize].kind
    }

    /// [`Nfa::eval`], answering the common cases inline: no condition, and a simple condition
    /// (or its negation) already evaluated for this event. Only simple conditions are cached
    /// (and guards, whose refusal, 1, is the leaf's answer too: their 3 goes on to `eval`).
    #[inline(always)]
    pub(crate) fn eval_cached(
        &self,
        c: &CondExpr,
        ev: &mut Eval<'_, E>,
        ctx: &Context<'_, E>,
    ) -> bool {
        match c {
            CondExpr::True => return true,
            CondExpr::Leaf(i) => match ev.cache.get(*i as usize) {
                Some(1) => return false,
                Some(2) => return true,
                _ => {}
            },
            CondExpr::Not(a) => {
                if let CondExpr::Leaf(i) = **a {
                    match ev.cache.get(i as usize) {
                        Some(1) => return true,
                        Some(2) => return false,
                        _ => {}
                    }
                }
            }
            _ => {}
        }
        self.eval(c, ev, ctx)
    }

    fn eval(&self, c: &CondExpr, ev: &mut Eval<'_, E>, ctx: &Context<'_, E>) -> bool {
        match c {
            CondExpr::True => true,
            CondExpr::Leaf(i) => match &*self.leaves[*i as usize] {
                Leaf::Simple(f) => simple_cached(f, ev.event, &mut ev.cache[*i as usize]),
                Leaf::Iterative(f) => ctx.remember(*i, || f(ev.event, ctx)),
                Leaf::Guarded(g, f) => {
                    guard_cached(g, ev.event, &mut ev.cache[*i as usize])
                        && ctx.remember(*i, || f(ev.event, ctx))
                }
            },
            CondExpr::Not(a) => !self.eval(a, ev, ctx),
            CondExpr::And(a, b) => self.eval(a, ev, ctx) && self.eval(b, ev, ctx),
            CondExpr::Or(a, b) => self.eval(a, ev, ctx) || self.eval(b, ev, ctx),
        }
    }

    /// When the pattern's window of a partial match started at `start` ends (`i64::MAX`:
    /// no window). The timeouts of every matcher start here.
    pub(crate) fn window_end(&self, start: i64) -> i64 {
        if self.window > 0 {
            start.saturating_add(self.window)
        } else {
            i64::MAX
        }
    }

    /// When a partial match times out (`i64::MAX`: never).
    fn due_of(&self, cs: &CState) -> i64 {
        let mut due = self.window_end(cs.start_ts);
        if let Some(w) = self.window_times[cs.state as usize] {
            if w > 0 {
                due = due.min(cs.prev_ts.saturating_add(w));
            }
        }
        due
    }

    pub(crate) fn compute_due(&self, partial: &JavaPq<CState>) -> i64 {
        let mut due = i64::MAX;
        for cs in partial.as_slice() {
            if !self.is_start(cs) {
                due = due.min(self.due_of(cs));
            }
        }
        due
    }

    fn materialize(&self, buffer: &SharedBuffer<E>, path: &Path) -> Events<E> {
        page_groups(path)
            .map(|(page, ids)| {
                let evs = ids
                    .iter()
                    .filter_map(|id| buffer.event(id.1).cloned())
                    .collect();
                (self.pages[page as usize].clone(), evs)
            })
            .collect()
    }

    fn extract_current(&self, buffer: &SharedBuffer<E>, cs: &CState) -> Events<E> {
        match cs.prev {
            None => Vec::new(),
            Some(prev) => match buffer.extract(prev, &cs.version, true).first() {
                Some(path) => self.materialize(buffer, path),
                None => Vec::new(),
            },
        }
    }

    /// Times out partial matches for which `ts` is too late; returns matches completed by a
    /// trailing `not_followed_by` whose window ended, and the timed-out partial matches.
    fn advance_time_gen(
        &self,
        st: &mut GenState<E>,
        ts: i64,
        matches: &mut Vec<Match<E>>,
        timeouts: &mut Vec<Timeout<E>>,
    ) {
        let mut new_partial = JavaPq::from_vec(take_scratch());
        let mut potential = JavaPq::new();
        let mut old = st.partial.take_vec();
        for cs in old.drain(..) {
            let prev_window = self.window_times[cs.state as usize];
            let start = self.is_start(&cs);
            let timeout_prev = !start && prev_window.is_some_and(|w| w > 0 && ts - cs.prev_ts >= w);
            let timeout_first = !start && self.window > 0 && ts - cs.start_ts >= self.window;
            if timeout_prev || timeout_first {
                if self.kind(cs.state) == Kind::Pending {
                    potential.add(cs, cmp_cs);
                    continue;
                }
                let events = self.extract_current(&st.buffer, &cs);
                let at = if timeout_prev {
                    cs.prev_ts + prev_window.unwrap_or(0)
                } else {
                    cs.start_ts + self.window
                };
                timeouts.push((events, at));
                if let Some(p) = cs.prev {
                    st.buffer.release_node(p, &cs.version);
                }
            } else {
                new_partial.add(cs, cmp_cs);
            }
        }
        give_scratch(old);
        self.process_matches(st, &mut potential, &mut new_partial, matches);
        st.due = self.compute_due(&new_partial);
        st.partial = new_partial;
        st.buffer.advance_time(ts);
    }

    /// Feeds one event (with its timestamp) to the partial matches of `st`.
    fn process_gen(
        &self,
        st: &mut GenState<E>,
        event: &Arc<E>,
        ts: i64,
        matches: &mut Vec<Match<E>>,
    ) {
        let mut ev = Eval::new(&**event, self.leaves.len());
        let mut event_id: Option<EvRef> = None;
        let mut new_partial = JavaPq::from_vec(take_scratch());
        let mut potential = JavaPq::new();
        let mut old = st.partial.take_vec();
        let mut next = NextStates::new();
        for cs in old.drain(..) {
            if !self.has_stop {
                // No branch can be discarded: each next state goes to its queue as it comes,
                // in the same order as through `next`.
                let mut emit = |ncs: CState| {
                    if self.kind(ncs.state) == Kind::Final {
                        potential.add(ncs, cmp_cs);
                    } else {
                        new_partial.add(ncs, cmp_cs);
                    }
                };
                self.compute_next_states(st, cs, event, ts, &mut ev, &mut event_id, &mut emit);
                continue;
            }
            next.clear();
            self.compute_next_states(st, cs, event, ts, &mut ev, &mut event_id, &mut |ncs| {
                next.push(ncs)
            });
            // Reaching a stop state discards the partial match's other branches (Flink releases
            // the stop states first, then the others, in order; so do we).
            let discard = next.iter().any(|n| self.kind(n.state) == Kind::Stop);
            if discard {
                let mut retained: SmallVec<[usize; 4]> = SmallVec::new();
                for (i, ncs) in next.iter().enumerate() {
                    match self.kind(ncs.state) {
                        Kind::Final => {}
                        Kind::Stop => {
                            if let Some(p) = ncs.prev {
                                st.buffer.release_node(p, &ncs.version);
                            }
                        }
                        _ => retained.push(i),
                    }
                }
                for i in retained {
                    if let Some(p) = next[i].prev {
                        st.buffer.release_node(p, &next[i].version);
                    }
                }
                for ncs in next.drain(..) {
                    if self.kind(ncs.state) == Kind::Final {
                        potential.add(ncs, cmp_cs);
                    }
                }
            } else {
                for ncs in next.drain(..) {
                    if self.kind(ncs.state) == Kind::Final {
                        potential.add(ncs, cmp_cs);
                    } else {
                        new_partial.add(ncs, cmp_cs);
                    }
                }
            }
        }
        give_scratch(old);
        self.process_matches(st, &mut potential, &mut new_partial, matches);
        st.due = self.compute_due(&new_partial);
        st.partial = new_partial;
        if let Some(id) = event_id {
            st.buffer.release_event(id);
        }
    }

    fn process_matches(
        &self,
        st: &mut GenState<E>,
        potential: &mut JavaPq<CState>,
        partial: &mut JavaPq<CState>,
        result: &mut Vec<Match<E>>,
    ) {
        for cs in potential.take_vec() {
            st.completed.add(cs, cmp_cs);
        }
        let skipping = self.skip != AfterMatchSkip::NoSkip;
        while let Some(earliest) = st.completed.peek() {
            if skipping {
                if let Some(ep) = partial.peek() {
                    if cmp_cs(earliest, ep) == Ordering::Greater {
                        break;
                    }
                }
            }
            let earliest = st.completed.poll(cmp_cs).expect("peeked");
            let Some(prev) = earliest.prev else { continue };
            let paths = st.buffer.extract(prev, &earliest.version, !skipping);
            if skipping {
                if let Some(pruning) = self.pruning_id(&paths) {
                    self.prune(partial, pruning, &mut st.buffer);
                    self.prune(&mut st.completed, pruning, &mut st.buffer);
                }
            }
            if let Some(first) = paths.first() {
                let at = if self.kind(earliest.state) == Kind::Pending {
                    self.due_of(&earliest)
                } else {
                    earliest.prev_ts
                };
                result.push((self.materialize(&st.buffer, first), at));
            }
            st.buffer.release_node(prev, &earliest.version);
        }
    }

    fn pruning_id(&self, paths: &[Path]) -> Option<EventId> {
        let mut id: Option<EventId> = None;
        match &self.skip {
            AfterMatchSkip::NoSkip => return None,
            AfterMatchSkip::SkipToNext => {
                for path in paths {
                    for (_, evs) in page_groups(path) {
                        let first = evs[0].1.id;
                        id = Some(id.map_or(first, |x| x.min(first)));
                    }
                }
            }
            AfterMatchSkip::SkipPastLastEvent => {
                for path in paths {
                    for (_, evs) in page_groups(path) {
                        let last = evs[evs.len() - 1].1.id;
                        id = Some(id.map_or(last, |x| x.max(last)));
                    }
                }
            }
            AfterMatchSkip::SkipToFirst(_) | AfterMatchSkip::SkipToLast(_) => {
                let page = self.skip_page?;
                let first = matches!(self.skip, AfterMatchSkip::SkipToFirst(_));
                for path in paths {
                    if let Some((_, evs)) = page_groups(path).find(|(p, _)| *p == page) {
                        if !evs.is_empty() {
                            let e = if first {
                                evs[0].1.id
                            } else {
                                evs[evs.len() - 1].1.id
                            };
                            id = Some(id.map_or(e, |x| x.max(e)));
                        }
                    }
                }
            }
        }
        id
    }

    /// Whether the skip strategy drops a partial match that started with event `start`, after
    /// a match whose pruning event is `pruning` (the skip-to strategies keep the one that
    /// started with it). Events compare in arrival order, whatever stands for them.
    pub(crate) fn skip_prunes<T: Ord>(&self, start: T, pruning: T) -> bool {
        match self.skip {
            AfterMatchSkip::SkipToFirst(_) | AfterMatchSkip::SkipToLast(_) => start < pruning,
            _ => start <= pruning,
        }
    }

    fn prune(&self, q: &mut JavaPq<CState>, pruning: EventId, buffer: &mut SharedBuffer<E>) {
        let pruned = |cs: &CState| {
            cs.start_event
                .is_some_and(|start| self.skip_prunes(start, pruning))
        };
        let mut any = false;
        for cs in q.as_slice() {
            if pruned(cs) {
                any = true;
                if let Some(p) = cs.prev {
                    buffer.release_node(p, &cs.version);
                }
            }
        }
        // Flink removes the elements equal to a pruned one; equal elements have the same start
        // event, so that is exactly the elements the predicate selects.
        if any {
            q.remove_if(pruned, cmp_cs);
        }
    }

    /// The context of the conditions that partial match `cs` evaluates.
    fn context<'a>(&'a self, st: &'a GenState<E>, cs: &'a CState, ts: i64) -> Context<'a, E> {
        Context {
            source: Source::Buffer {
                buffer: &st.buffer,
                cs,
                matched: OnceCell::new(),
            },
            pages: &self.pages,
            ts,
            known: Cell::new(0),
            results: Cell::new(0),
        }
    }

    /// Whether the event only passes partial match `cs` by, known without deciding: its state
    /// takes or waits ([`Nfa::take_or_wait`]) and the take refuses the event. `decide` would
    /// find the same (the take skipped, the ignore's negation true) with the same single
    /// evaluation of the take's condition.
    #[inline]
    fn passes_by(&self, cs: &CState, ev: &mut Eval<'_, E>, ctx: &Context<'_, E>) -> bool {
        match self.take_or_wait[cs.state as usize] {
            Some(t) => {
                let take = &self.states[cs.state as usize].transitions[t];
                !self.eval_cached(&take.cond, ev, ctx)
            }
            None => false,
        }
    }

    fn decide(&self, cs: &CState, ev: &mut Eval<'_, E>, ctx: &Context<'_, E>) -> Decision {
        let mut d = Decision {
            edges: SmallVec::new(),
            total_take: 0,
            total_ignore: 0,
        };
        // States reached by proceeding wait on a stack; the first one is not pushed.
        let mut stack: SmallVec<[StateId; 8]> = SmallVec::new();
        let mut s = cs.state;
        loop {
            for t in &self.states[s as usize].transitions {
                if !self.eval_cached(&t.cond, ev, ctx) {
                    continue;
                }
                match t.action {
                    Action::Proceed => stack.push(t.target),
                    Action::Ignore | Action::Take => {
                        let self_ignore = t.action == Action::Ignore && t.target == cs.state;
                        if !self_ignore {
                            if t.action == Action::Ignore {
                                d.total_ignore += 1;
                            } else {
                                d.total_take += 1;
                            }
                        }
                        let fin = if t.action == Action::Take {
                            self.final_after_proceed(t.target, ev, ctx)
                        } else {
                            None
                        };
                        d.edges.push((t.action, t.source, t.target, fin));
                    }
                }
            }
            match stack.pop() {
                Some(next) => s = next,
                None => break,
            }
        }
        d
    }

    fn final_after_proceed(
        &self,
        state: StateId,
        ev: &mut Eval<'_, E>,
        ctx: &Context<'_, E>,
    ) -> Option<StateId> {
        if !self.proceeds[state as usize] {
            return None;
        }
        let mut stack: SmallVec<[StateId; 8]> = smallvec![state];
        while let Some(s) = stack.pop() {
            for t in &self.states[s as usize].transitions {
                if t.action == Action::Proceed && self.eval_cached(&t.cond, ev, ctx) {
                    if self.kind(t.target) == Kind::Final {
                        return Some(t.target);
                    }
                    stack.push(t.target);
                }
            }
        }
        None
    }

    #[allow(clippy::too_many_arguments)]
    fn compute_next_states(
        &self,
        st: &mut GenState<E>,
        owned: CState,
        event: &Arc<E>,
        ts: i64,
        ev: &mut Eval<'_, E>,
        event_id: &mut Option<EvRef>,
        result: &mut impl FnMut(CState),
    ) {
        let cs = &owned;
        let is_start = self.is_start(cs);
        let d = {
            let ctx = self.context(st, cs, ts);
            if !is_start && self.passes_by(cs, ev, &ctx) {
                // Debug builds (every test, the conformance corpus) decide too, and check.
                debug_assert!(
                    self.decide(cs, ev, &ctx).waits(cs.state),
                    "an event the take refuses does more than pass the partial match by"
                );
                None
            } else {
                Some(self.decide(cs, ev, &ctx))
            }
        };
        let d = match d {
            Some(d) if is_start || !d.waits(cs.state) => d,
            _ => {
                // The event passes the partial match by, and nothing else: Flink makes the
                // same partial match again (same node, same version: `increase(0)`), locking
                // its node and the edges compatible with the version once more, then releases
                // the old one's locks, which are the same node and edges. Every node and edge
                // the buffer keeps has a count of at least 1 (a count reaches 0 only in a
                // release, which removes it at once; `put` makes an edge that `add_state` locks
                // at once; restored snapshots are checked), so the release only undoes the
                // lock: skip both (most partial matches of a looping pattern wait like this on
                // most events). Debug builds (every test) do what Flink does and check that it
                // changed nothing.
                #[cfg(debug_assertions)]
                if let Some(p) = cs.prev {
                    let before = st.buffer.lock_counts();
                    st.buffer.lock_node(p, &cs.version);
                    st.buffer.release_node(p, &cs.version);
                    assert_eq!(
                        st.buffer.lock_counts(),
                        before,
                        "a partial match that waits changed the shared buffer"
                    );
                }
                // The same partial match goes on: moved, not copied (a long version is a heap
                // block).
                result(owned);
                return;
            }
        };
        let mut take_to_visit = (d.total_take - 1).max(0);
        let mut ignore_to_visit = d.total_ignore;
        let take_to_skip = (d.total_take - 1).max(0);
        for (action, source, target, fin) in d.edges {
            match action {
                Action::Ignore => {
                    if !is_start {
                        let version = if target == cs.state {
                            cs.version
                                .increase(increasing_self_state(d.total_ignore, d.total_take))
                        } else {
                            let v = cs
                                .version
                                .increase(take_to_skip + ignore_to_visit)
                                .add_stage();
                            ignore_to_visit -= 1;
                            v
                        };
                        add_state(
                            &mut st.buffer,
                            result,
                            target,
                            cs.prev,
                            version,
                            cs.start_ts,
                            cs.prev_ts,
                            cs.start_event,
                        );
                    }
                }
                Action::Take => {
                    let current_version = cs.version.increase(take_to_visit);
                    let next_version = current_version.add_stage();
                    take_to_visit -= 1;
                    let id = *event_id
                        .get_or_insert_with(|| st.buffer.register_event(event.clone(), ts));
                    let page = self.states[source as usize].page;
                    let new_entry = st.buffer.put(page, id, cs.prev, &current_version);
                    let (start_ts, start_event) = if is_start {
                        (ts, Some(id.id))
                    } else {
                        (cs.start_ts, cs.start_event)
                    };
                    add_state(
                        &mut st.buffer,
                        result,
                        target,
                        Some(new_entry),
                        next_version.clone(),
                        start_ts,
                        ts,
                        start_event,
                    );
                    if let Some(f) = fin {
                        add_state(
                            &mut st.buffer,
                            result,
                            f,
                            Some(new_entry),
                            next_version,
                            start_ts,
                            ts,
                            start_event,
                        );
                    }
                }
                Action::Proceed => {}
            }
        }
        if is_start {
            let total = increasing_self_state(d.total_ignore, d.total_take);
            result(CState::start(cs.state, cs.version.increase(total)));
        }
        if let Some(p) = cs.prev {
            st.buffer.release_node(p, &cs.version);
        }
    }

    /// The partial matches of `st`: state name, start time, events so far.
    fn partial_matches_gen(&self, st: &GenState<E>) -> Vec<PartialMatch<E>> {
        st.partial
            .as_slice()
            .iter()
            .filter(|c| c.start_event.is_some())
            .map(|c| PartialMatch {
                stage: self.states[c.state as usize].name.clone(),
                start_ts: c.start_ts,
                events: self.extract_current(&st.buffer, c),
            })
            .collect()
    }
}

/// A partial match as shown to users.
pub struct PartialMatch<E> {
    /// The automaton state it waits in (a stage name, `$endState$`, or `name:n`).
    pub stage: String,
    /// Timestamp of its first event.
    pub start_ts: i64,
    /// Its events so far.
    pub events: Events<E>,
}

/// A simple condition's answer for `event`, evaluated at most once per event: `slot` holds it
/// (0 not evaluated, 1 false, 2 true).
pub(crate) fn simple_cached<E, F: Fn(&E) -> bool + ?Sized>(
    f: &F,
    event: &E,
    slot: &mut u8,
) -> bool {
    if *slot == 0 {
        *slot = if f(event) { 2 } else { 1 };
    }
    *slot == 2
}

/// The guard of a [`Leaf::Guarded`] for `event`, evaluated at most once per event: `slot` holds
/// it (0 not evaluated, 1 false: the leaf is false, 3 true: the leaf is its iterative part's
/// answer). Not 2, which [`Nfa::eval_cached`] reads as "the leaf is true".
pub(crate) fn guard_cached<E, F: Fn(&E) -> bool + ?Sized>(f: &F, event: &E, slot: &mut u8) -> bool {
    if *slot == 0 {
        *slot = if f(event) { 3 } else { 1 };
    }
    *slot == 3
}

/// The index of state `s`'s take transition when its transitions are that take and an ignore
/// back to itself on the take's negation (in either order), and nothing else.
fn take_or_wait((s, state): (usize, &State)) -> Option<usize> {
    let [a, b] = &state.transitions[..] else {
        return None;
    };
    let (t, take, ignore) = match (a.action, b.action) {
        (Action::Take, Action::Ignore) => (0, a, b),
        (Action::Ignore, Action::Take) => (1, b, a),
        _ => return None,
    };
    let negates = matches!(&ignore.cond, CondExpr::Not(c) if same_cond(c, &take.cond));
    (ignore.target as usize == s && negates).then_some(t)
}

/// Whether two conditions are the same expression.
pub(crate) fn same_cond(a: &CondExpr, b: &CondExpr) -> bool {
    match (a, b) {
        (CondExpr::True, CondExpr::True) => true,
        (CondExpr::Leaf(x), CondExpr::Leaf(y)) => x == y,
        (CondExpr::Not(x), CondExpr::Not(y)) => same_cond(x, y),
        (CondExpr::And(a1, a2), CondExpr::And(b1, b2))
        | (CondExpr::Or(a1, a2), CondExpr::Or(b1, b2)) => same_cond(a1, b1) && same_cond(a2, b2),
        _ => false,
    }
}

fn increasing_self_state(ignore: i32, take: i32) -> i32 {
    if take == 0 && ignore == 0 {
        0
    } else {
        ignore + take.max(1)
    }
}

#[allow(clippy::too_many_arguments)]
fn add_state<E>(
    buffer: &mut SharedBuffer<E>,
    out: &mut impl FnMut(CState),
    state: StateId,
    prev: Option<NodeId>,
    version: Dewey,
    start_ts: i64,
    prev_ts: i64,
    start_event: Option<EventId>,
) {
    if let Some(p) = prev {
        buffer.lock_node(p, &version);
    }
    out(CState {
        state,
        prev,
        version,
        start_ts,
        prev_ts,
        start_event,
    });
}
