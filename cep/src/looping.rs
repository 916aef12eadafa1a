//! The matcher for one loop between two single stages: `a`, then one or more `b` (relaxed
//! between themselves and after `a`), then `c` (relaxed), under any after-match skip strategy,
//! with the pattern's window: the `oneormore` and `iterative` shapes of the benchmarks ("an
//! order, some items, then a payment"; "rising readings, then a drop").
//!
//! Like [`crate::linear`], it is picked at compile time ([`Looped::of`], from the automaton's
//! states, not from the DSL) and gives exactly what the general automaton gives: matches,
//! timeouts and their times, their order, the partial matches shown and the events held
//! (`tests/looping.rs` runs both on random patterns and streams; the conformance corpus runs it
//! against Flink's outputs).
//!
//! The shape branches (a partial match at the loop forks one that waits for `c` on every event
//! that `c` refuses), so the matcher keeps Flink's queue of partial matches ([`JavaPq`], whose
//! array order decides the order of one event's matches); what it drops is the shared buffer.
//! Every partial match of one `a` event holds a prefix of the same events: the `a`, then the
//! `b`s taken so far, which only the one partial match still at the loop extends. They live in
//! one [`Run`], and a partial match is its position, its run and the length of its prefix: no
//! Dewey versions, nodes or edges, and a condition's context is a slice of the run.

use std::cmp::Ordering;
use std::sync::Arc;

use crate::nfa::{
    same_cond, Action, CondExpr, Context, Eval, Events, Kind, Match, Nfa, PartialMatch, State,
    StateId, Timeout,
};
use crate::pattern::AfterMatchSkip;
use crate::pq::JavaPq;
use crate::shared_buffer::{next_arrival, Counters, EventId};

/// Where a partial match stands, by the automaton state it would be in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Pos {
    /// The start state (no events).
    Start = 0,
    /// After `a`, before its first `b` (`b:1` in Flink's automaton).
    First = 1,
    /// At the loop, having just taken a `b` (`b`): it proceeds to `c` on the next event.
    Loop = 2,
    /// Back in the loop after an event it did not take (`b:0`): waits for a `b`.
    Idle = 3,
    /// Waiting for `c` (`c`), with a prefix of its run's `b`s.
    Wait = 4,
}

impl Pos {
    pub(crate) fn from_u8(p: u8) -> Option<Pos> {
        Some(match p {
            0 => Pos::Start,
            1 => Pos::First,
            2 => Pos::Loop,
            3 => Pos::Idle,
            4 => Pos::Wait,
            _ => return None,
        })
    }
}

/// The shape, when the automaton has it: its states and the three stages' conditions.
#[derive(Debug, Clone)]
pub(crate) struct Looped {
    /// The automaton state of each [`Pos`], by its number.
    states: [StateId; 5],
    take_a: CondExpr,
    take_b: CondExpr,
    take_c: CondExpr,
    /// The pages of `a`, `b` and `c`.
    pages: [u16; 3],
}

impl Looped {
    /// The loop of `states`, if the automaton is one: the start state takes `a` or waits;
    /// `b:1` takes `b` (to the loop) or waits; the loop proceeds to `c`, takes `b` (staying) or
    /// goes to `b:0`; `b:0` takes `b` (to the loop) or waits; `c` takes `c` (to the final state)
    /// or waits. Every wait is on the negation of the state's take; no window per stage.
    pub(crate) fn of(states: &[State], window_times: &[Option<i64>]) -> Option<Looped> {
        if states.len() != 6 || window_times.iter().any(|w| w.is_some_and(|w| w > 0)) {
            return None;
        }
        // `[take, wait]` with the take's condition; the wait loops on `s`.
        let take_wait = |s: StateId, t: &[crate::nfa::Transition]| -> Option<(StateId, CondExpr)> {
            let [take, wait] = t else { return None };
            let negates = matches!(&wait.cond, CondExpr::Not(c) if same_cond(c, &take.cond));
            (take.action == Action::Take
                && wait.action == Action::Ignore
                && wait.target == s
                && negates)
                .then(|| (take.target, take.cond.clone()))
        };
        let state = |s: StateId| states.get(s as usize);
        let start = states.iter().position(|s| s.kind == Kind::Start)? as StateId;
        let (first, take_a) = take_wait(start, &state(start)?.transitions)?;
        let (looping, take_b) = take_wait(first, &state(first)?.transitions)?;
        let [proceed, take, leave] = &state(looping)?.transitions[..] else {
            return None;
        };
        let last = proceed.target;
        let idle = leave.target;
        let loop_ok = proceed.action == Action::Proceed
            && matches!(proceed.cond, CondExpr::True)
            && take.action == Action::Take
            && take.target == looping
            && same_cond(&take.cond, &take_b)
            && leave.action == Action::Ignore
            && matches!(&leave.cond, CondExpr::Not(c) if same_cond(c, &take_b));
        if !loop_ok {
            return None;
        }
        let (back, idle_take) = take_wait(idle, &state(idle)?.transitions)?;
        let (fin, take_c) = take_wait(last, &state(last)?.transitions)?;
        let ids = [start, first, looping, idle, last, fin];
        let distinct = (0..6).all(|i| (i + 1..6).all(|j| ids[i] != ids[j]));
        let kinds = [first, looping, idle, last]
            .iter()
            .all(|&s| states[s as usize].kind == Kind::Normal);
        let page_b = states[looping as usize].page;
        let pages = [
            states[start as usize].page,
            page_b,
            states[last as usize].page,
        ];
        let ok = distinct
            && kinds
            && back == looping
            && same_cond(&idle_take, &take_b)
            && states[fin as usize].kind == Kind::Final
            && states[fin as usize].transitions.is_empty()
            && states[first as usize].page == page_b
            && states[idle as usize].page == page_b
            && pages[0] != page_b
            && pages[2] != page_b
            && pages[0] != pages[2];
        ok.then_some(Looped {
            states: [start, first, looping, idle, last],
            take_a,
            take_b,
            take_c,
            pages,
        })
    }

    /// The automaton state of a position.
    pub(crate) fn state_of(&self, pos: Pos) -> StateId {
        self.states[pos as usize]
    }
}

/// The events of one `a` and the `b`s its partial match at the loop took, shared by every
/// partial match the `a` started (each holds a prefix).
struct Run<E> {
    /// The `a`, then the `b`s.
    events: Vec<Arc<E>>,
    /// Their ids, which a skip strategy compares (empty under no skip, which needs none).
    ids: Vec<EventId>,
    /// Partial matches (and matches not yet emitted) that hold this run.
    refs: u32,
}

/// A partial match: Flink's computation state without a buffer node or version.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Entry {
    /// Its first event's timestamp and arrival id (`i64::MAX`, `u32::MAX` for the start state:
    /// it comes out last, as in the general automaton).
    pub(crate) ts: i64,
    pub(crate) id: u32,
    pub(crate) pos: Pos,
    /// Its run (unused by the start state).
    pub(crate) run: u32,
    /// How many `b`s of the run it holds.
    pub(crate) len: u32,
}

impl Entry {
    const START: Entry = Entry {
        ts: i64::MAX,
        id: u32::MAX,
        pos: Pos::Start,
        run: 0,
        len: 0,
    };
}

/// By first event, as the general automaton orders its computation states.
fn cmp(a: &Entry, b: &Entry) -> Ordering {
    (a.ts, a.id).cmp(&(b.ts, b.id))
}

/// A completed match: the partial match that `c` took (its prefix of the run), and the `c`.
pub(crate) struct Done<E> {
    pub(crate) entry: Entry,
    pub(crate) last: Arc<E>,
    pub(crate) last_id: EventId,
}

fn cmp_done<E>(a: &Done<E>, b: &Done<E>) -> Ordering {
    cmp(&a.entry, &b.entry)
}

/// What a snapshot of a key on the loop matcher holds ([`LoopState::parts`]).
pub(crate) struct LoopParts<'a, E> {
    /// The partial matches in queue order, with their runs renumbered.
    pub(crate) entries: Vec<Entry>,
    /// The completed matches in queue order: the partial match `c` took, the `c` and its id.
    pub(crate) completed: Vec<(Entry, &'a Arc<E>, EventId)>,
    /// The events of each run and their ids, by its new number.
    pub(crate) runs: Vec<(&'a [Arc<E>], &'a [EventId])>,
    /// Per timestamp, the next arrival id.
    pub(crate) counters: &'a [(i64, u32)],
}

/// A key's state on the loop matcher.
pub(crate) struct LoopState<E> {
    partial: JavaPq<Entry>,
    /// Matches waiting for older partial matches to end (under a skip strategy; Flink's
    /// completed queue; empty between steps under no skip).
    completed: JavaPq<Done<E>>,
    runs: Vec<Run<E>>,
    /// Runs no partial match holds, for reuse.
    free: Vec<u32>,
    /// Per timestamp, the next arrival id (the shared buffer's counters: an event gets an id
    /// when some partial match takes it).
    counters: Counters,
    due: i64,
}

impl<E> LoopState<E> {
    pub(crate) fn new() -> Self {
        let mut partial = JavaPq::new();
        partial.add(Entry::START, cmp);
        LoopState {
            partial,
            completed: JavaPq::new(),
            runs: Vec::new(),
            free: Vec::new(),
            counters: Counters::new(),
            due: i64::MAX,
        }
    }

    pub(crate) fn reset(&mut self) {
        let mut es = self.partial.take_vec();
        es.clear();
        self.partial = JavaPq::from_vec(es);
        self.partial.add(Entry::START, cmp);
        self.completed = JavaPq::new();
        self.runs.clear();
        self.free.clear();
        self.counters.clear();
        self.due = i64::MAX;
    }

    pub(crate) fn is_idle(&self) -> bool {
        self.completed.is_empty() && self.partial.as_slice().iter().all(|e| e.pos == Pos::Start)
    }

    pub(crate) fn partial_count(&self) -> usize {
        self.partial
            .as_slice()
            .iter()
            .filter(|e| e.pos != Pos::Start)
            .count()
    }

    /// The distinct events the partial matches and completed matches hold (one event taken by
    /// two runs counts once, as in the shared buffer; a run's events past the longest prefix
    /// still held, as when bounds dropped the partial match at the loop, do not count).
    pub(crate) fn buffered_events(&self) -> usize {
        let mut longest: Vec<Option<u32>> = vec![None; self.runs.len()];
        let held = self
            .partial
            .as_slice()
            .iter()
            .filter(|e| e.pos != Pos::Start);
        for e in held.chain(self.completed.as_slice().iter().map(|d| &d.entry)) {
            let l = &mut longest[e.run as usize];
            *l = Some(l.map_or(e.len, |l| l.max(e.len)));
        }
        let mut ptrs: Vec<*const E> = self
            .runs
            .iter()
            .zip(&longest)
            .filter_map(|(r, l)| l.map(|l| &r.events[..=l as usize]))
            .flat_map(|events| events.iter().map(Arc::as_ptr))
            .chain(
                self.completed
                    .as_slice()
                    .iter()
                    .map(|d| Arc::as_ptr(&d.last)),
            )
            .collect();
        ptrs.sort_unstable();
        ptrs.dedup();
        ptrs.len()
    }

    pub(crate) fn stop_starting(&mut self) {
        self.partial.remove_if(|e| e.pos == Pos::Start, cmp);
    }

    /// The next arrival id of an event at `ts` (the shared buffer's `register_event`).
    fn register(&mut self, ts: i64) -> u32 {
        next_arrival(&mut self.counters, ts)
    }

    /// The completed match of partial match `e`, which `event` (at `ts`, its id `id` if some
    /// partial match took it already in this step) ends.
    fn complete(&mut self, e: Entry, id: &mut Option<u32>, event: &Arc<E>, ts: i64) -> Done<E> {
        let id = *id.get_or_insert_with(|| self.register(ts));
        Done {
            entry: e,
            last: event.clone(),
            last_id: EventId { ts, id },
        }
    }

    fn new_run(&mut self, a: Arc<E>, id: Option<EventId>) -> u32 {
        match self.free.pop() {
            Some(r) => {
                let run = &mut self.runs[r as usize];
                run.events.push(a);
                run.ids.extend(id);
                run.refs = 1;
                r
            }
            None => {
                self.runs.push(Run {
                    events: vec![a],
                    ids: id.into_iter().collect(),
                    refs: 1,
                });
                (self.runs.len() - 1) as u32
            }
        }
    }

    fn release(&mut self, r: u32) {
        let run = &mut self.runs[r as usize];
        run.refs -= 1;
        if run.refs == 0 {
            run.events.clear();
            run.ids.clear();
            self.free.push(r);
        }
    }

    /// The partial matches and completed matches in queue order, and each run's events (runs
    /// numbered in order of first use, so that equal states give equal parts).
    pub(crate) fn parts(&self) -> LoopParts<'_, E> {
        let mut number = vec![u32::MAX; self.runs.len()];
        let mut runs = Vec::new();
        let mut renumber = |e: &Entry| {
            let mut e = *e;
            if e.pos == Pos::Start {
                e.run = 0;
                return e;
            }
            let n = &mut number[e.run as usize];
            if *n == u32::MAX {
                *n = runs.len() as u32;
                let run = &self.runs[e.run as usize];
                runs.push((&run.events[..], &run.ids[..]));
            }
            e.run = *n;
            e
        };
        let entries = self.partial.as_slice().iter().map(&mut renumber).collect();
        let completed = self
            .completed
            .as_slice()
            .iter()
            .map(|d| (renumber(&d.entry), &d.last, d.last_id))
            .collect();
        LoopParts {
            entries,
            completed,
            runs,
            counters: &self.counters,
        }
    }

    /// A state from its parts (a snapshot), checked: every run held, every prefix within its
    /// run, one partial match at most extending each run, completed matches from the loop or
    /// from waiting for `c`, the events' ids where the pattern's skip strategy needs them
    /// (`with_ids`).
    pub(crate) fn from_parts(
        entries: Vec<Entry>,
        completed: Vec<(Entry, Arc<E>, EventId)>,
        runs: Vec<(Vec<Arc<E>>, Vec<EventId>)>,
        counters: Vec<(i64, u32)>,
        window: i64,
        with_ids: bool,
    ) -> Result<Self, String> {
        let mut runs: Vec<Run<E>> = runs
            .into_iter()
            .map(|(events, ids)| Run {
                events,
                ids,
                refs: 0,
            })
            .collect();
        let ids_wanted = |r: &Run<E>| if with_ids { r.events.len() } else { 0 };
        if runs.iter().any(|r| r.ids.len() != ids_wanted(r)) {
            return Err("a run whose events and ids differ in number".into());
        }
        let mut extended = vec![false; runs.len()];
        let done = completed.iter().map(|d| (&d.0, true));
        for (e, is_done) in entries.iter().map(|e| (e, false)).chain(done) {
            if e.pos == Pos::Start {
                if is_done {
                    return Err("a completed match of the start state".into());
                }
                continue;
            }
            let run = runs
                .get_mut(e.run as usize)
                .ok_or_else(|| format!("partial match of run {} that does not exist", e.run))?;
            let full = run.events.len().checked_sub(1).ok_or("an empty run")?;
            let whole = !is_done && matches!(e.pos, Pos::First | Pos::Loop | Pos::Idle);
            let fits = if whole {
                e.len as usize == full
            } else {
                e.len as usize <= full
            };
            let shape = match e.pos {
                Pos::First => e.len == 0 && !is_done,
                Pos::Loop | Pos::Wait => e.len > 0,
                _ => !is_done,
            };
            if !fits || !shape {
                return Err(format!(
                    "partial match with {} of the {full} events of its run",
                    e.len
                ));
            }
            if whole {
                if extended[e.run as usize] {
                    return Err(format!("two partial matches extend run {}", e.run));
                }
                extended[e.run as usize] = true;
            }
            run.refs += 1;
        }
        let mut free = Vec::new();
        for (i, r) in runs.iter_mut().enumerate() {
            if r.refs == 0 {
                r.events.clear();
                r.ids.clear();
                free.push(i as u32);
            }
        }
        let partial = JavaPq::from_vec(entries);
        let completed = JavaPq::from_vec(
            completed
                .into_iter()
                .map(|(entry, last, last_id)| Done {
                    entry,
                    last,
                    last_id,
                })
                .collect(),
        );
        let due = due_of(&partial, window);
        Ok(LoopState {
            partial,
            completed,
            runs,
            free,
            counters: Counters::from_vec(counters),
            due,
        })
    }
}

/// The earliest end of window of the partial matches in `partial`.
fn due_of(partial: &JavaPq<Entry>, window: i64) -> i64 {
    if window <= 0 {
        return i64::MAX;
    }
    partial
        .as_slice()
        .iter()
        .filter(|e| e.pos != Pos::Start)
        .map(|e| e.ts.saturating_add(window))
        .min()
        .unwrap_or(i64::MAX)
}

thread_local! {
    /// The queue a step builds, swapped with a key's (as the general automaton's `SCRATCH`).
    static SCRATCH: std::cell::Cell<Vec<Entry>> = const { std::cell::Cell::new(Vec::new()) };
}

impl<E> Nfa<E> {
    fn looped(&self) -> &Looped {
        self.looped.as_ref().expect("a key on the loop matcher")
    }

    /// The events of a partial match holding `len` `b`s of `run`, by stage.
    fn loop_events(&self, run: &[Arc<E>], len: u32) -> Events<E> {
        let l = self.looped();
        let mut out: Events<E> = Vec::with_capacity(3);
        out.push((
            self.pages[l.pages[0] as usize].clone(),
            vec![run[0].clone()],
        ));
        if len > 0 {
            out.push((
                self.pages[l.pages[1] as usize].clone(),
                run[1..=len as usize].to_vec(),
            ));
        }
        out
    }

    pub(crate) fn loop_due(&self, st: &LoopState<E>) -> i64 {
        st.due
    }

    pub(crate) fn loop_advance_time(
        &self,
        st: &mut LoopState<E>,
        ts: i64,
        matches: &mut Vec<Match<E>>,
        timeouts: &mut Vec<Timeout<E>>,
    ) {
        let window = self.window;
        let old = st.partial.take_vec();
        let mut next = JavaPq::from_vec(SCRATCH.with(|s| s.take()));
        for &e in &old {
            if e.pos != Pos::Start && window > 0 && ts - e.ts >= window {
                let run = &st.runs[e.run as usize].events;
                timeouts.push((self.loop_events(run, e.len), e.ts + window));
                st.release(e.run);
            } else {
                next.add(e, cmp);
            }
        }
        give_scratch(old);
        st.due = due_of(&next, window);
        st.partial = next;
        if !st.completed.is_empty() {
            // Matches that waited for partial matches which have now timed out.
            self.loop_matches(st, Vec::new(), matches);
        }
        st.counters.retain(|c| c.0 >= ts);
    }

    /// Flink's `processMatchesAccordingToSkipStrategy`: the step's matches (`potential`, in its
    /// queue's array order) join the completed ones, which come out least first; under a skip
    /// strategy only while no older partial match is under way, and each prunes the partial
    /// matches and completed matches that started before its pruning event.
    fn loop_matches(
        &self,
        st: &mut LoopState<E>,
        potential: Vec<Done<E>>,
        matches: &mut Vec<Match<E>>,
    ) {
        for d in potential {
            st.completed.add(d, cmp_done);
        }
        let skipping = self.skip != AfterMatchSkip::NoSkip;
        let pc = &self.pages[self.looped().pages[2] as usize];
        while let Some(earliest) = st.completed.peek() {
            if skipping {
                if let Some(ep) = st.partial.peek() {
                    if cmp(&earliest.entry, ep) == Ordering::Greater {
                        break;
                    }
                }
            }
            let d = st.completed.poll(cmp_done).expect("peeked");
            let e = d.entry;
            if skipping {
                let ids = &st.runs[e.run as usize].ids[..=e.len as usize];
                if let Some(pruning) = self.loop_pruning_id(ids, d.last_id) {
                    self.loop_prune(st, pruning);
                }
            }
            let run = &st.runs[e.run as usize].events;
            let mut events = self.loop_events(run, e.len);
            events.push((pc.clone(), vec![d.last]));
            matches.push((events, d.last_id.ts));
            st.release(e.run);
        }
    }

    /// The event after which a match of the run's `ids` (the `a`, then the `b`s) and `last`
    /// (the `c`) prunes, by the skip strategy (`None`: no skip, or a stage it does not have).
    fn loop_pruning_id(&self, ids: &[EventId], last: EventId) -> Option<EventId> {
        let pages = self.looped().pages;
        // Per stage, its first and last event: `a`, the `b`s (always at least one), `c`.
        let group = |page: u16| -> Option<(EventId, EventId)> {
            if page == pages[0] {
                Some((ids[0], ids[0]))
            } else if page == pages[1] {
                Some((ids[1], ids[ids.len() - 1]))
            } else if page == pages[2] {
                Some((last, last))
            } else {
                None
            }
        };
        let (a, b, c) = (group(pages[0])?, group(pages[1])?, group(pages[2])?);
        match &self.skip {
            AfterMatchSkip::NoSkip => None,
            // The least of the stages' first events, the greatest of their last.
            AfterMatchSkip::SkipToNext => Some(a.0.min(b.0).min(c.0)),
            AfterMatchSkip::SkipPastLastEvent => Some(a.1.max(b.1).max(c.1)),
            AfterMatchSkip::SkipToFirst(_) => group(self.skip_page?).map(|g| g.0),
            AfterMatchSkip::SkipToLast(_) => group(self.skip_page?).map(|g| g.1),
        }
    }

    /// Drops the partial matches and completed matches that started before `pruning` (or at
    /// it, by the strategy), with their hold on their runs.
    fn loop_prune(&self, st: &mut LoopState<E>, pruning: EventId) {
        let pruned = |e: &Entry| {
            e.pos != Pos::Start && self.skip_prunes(EventId { ts: e.ts, id: e.id }, pruning)
        };
        let mut gone: Vec<u32> = Vec::new();
        for e in st.partial.as_slice() {
            if pruned(e) {
                gone.push(e.run);
            }
        }
        if !gone.is_empty() {
            st.partial.remove_if(pruned, cmp);
        }
        let before = gone.len();
        for d in st.completed.as_slice() {
            if pruned(&d.entry) {
                gone.push(d.entry.run);
            }
        }
        if gone.len() > before {
            st.completed.remove_if(|d| pruned(&d.entry), cmp_done);
        }
        for r in gone {
            st.release(r);
        }
        st.due = due_of(&st.partial, self.window);
    }

    pub(crate) fn loop_process(
        &self,
        st: &mut LoopState<E>,
        event: &Arc<E>,
        ts: i64,
        matches: &mut Vec<Match<E>>,
    ) {
        let l = self.looped();
        let pages = &self.pages;
        let (pa, pb) = (l.pages[0], l.pages[1]);
        let mut ev = Eval::new(&**event, self.leaves.len());
        let mut id: Option<u32> = None;
        let with_ids = self.skip != AfterMatchSkip::NoSkip;
        let old = st.partial.take_vec();
        let mut next = JavaPq::from_vec(SCRATCH.with(|s| s.take()));
        let mut potential: JavaPq<Done<E>> = JavaPq::new();
        for &e in &old {
            match e.pos {
                Pos::Start => {
                    let ctx = Context::run(&[], pa, pb, pages, ts);
                    if self.eval_cached(&l.take_a, &mut ev, &ctx) {
                        let id = *id.get_or_insert_with(|| st.register(ts));
                        let run = st.new_run(event.clone(), with_ids.then_some(EventId { ts, id }));
                        next.add(
                            Entry {
                                ts,
                                id,
                                pos: Pos::First,
                                run,
                                len: 0,
                            },
                            cmp,
                        );
                    }
                    next.add(e, cmp);
                }
                Pos::First | Pos::Idle | Pos::Loop => {
                    let run = &st.runs[e.run as usize].events;
                    debug_assert_eq!(run.len(), e.len as usize + 1, "the loop holds its run");
                    let ctx = Context::run(run, pa, pb, pages, ts);
                    let takes = self.eval_cached(&l.take_b, &mut ev, &ctx);
                    let ends = e.pos == Pos::Loop && self.eval_cached(&l.take_c, &mut ev, &ctx);
                    if takes {
                        let id = *id.get_or_insert_with(|| st.register(ts));
                        let run = &mut st.runs[e.run as usize];
                        run.events.push(event.clone());
                        if with_ids {
                            run.ids.push(EventId { ts, id });
                        }
                        let pos = Pos::Loop;
                        next.add(
                            Entry {
                                pos,
                                len: e.len + 1,
                                ..e
                            },
                            cmp,
                        );
                    } else if e.pos == Pos::Loop {
                        next.add(
                            Entry {
                                pos: Pos::Idle,
                                ..e
                            },
                            cmp,
                        );
                    } else {
                        next.add(e, cmp);
                    }
                    if e.pos == Pos::Loop {
                        // Proceeding to `c`: it takes the event (a match) or waits for one.
                        st.runs[e.run as usize].refs += 1;
                        if ends {
                            potential.add(st.complete(e, &mut id, event, ts), cmp_done);
                        } else {
                            next.add(
                                Entry {
                                    pos: Pos::Wait,
                                    ..e
                                },
                                cmp,
                            );
                        }
                    }
                }
                Pos::Wait => {
                    let run = &st.runs[e.run as usize].events[..=e.len as usize];
                    let ctx = Context::run(run, pa, pb, pages, ts);
                    if self.eval_cached(&l.take_c, &mut ev, &ctx) {
                        potential.add(st.complete(e, &mut id, event, ts), cmp_done);
                    } else {
                        next.add(e, cmp);
                    }
                }
            }
        }
        give_scratch(old);
        st.due = due_of(&next, self.window);
        st.partial = next;
        if !potential.is_empty() || !st.completed.is_empty() {
            self.loop_matches(st, potential.take_vec(), matches);
        }
    }

    pub(crate) fn loop_trim(&self, st: &mut LoopState<E>, max: usize) -> usize {
        let count = st.partial_count();
        if count <= max {
            return 0;
        }
        let mut starts: Vec<(i64, u32)> = st
            .partial
            .as_slice()
            .iter()
            .filter(|e| e.pos != Pos::Start)
            .map(|e| (e.ts, e.id))
            .collect();
        starts.sort_unstable();
        let cut = starts[count - max - 1];
        let mut dropped = Vec::new();
        st.partial.remove_if(
            |e| {
                let old = e.pos != Pos::Start && (e.ts, e.id) <= cut;
                if old {
                    dropped.push(e.run);
                }
                old
            },
            cmp,
        );
        for &r in &dropped {
            st.release(r);
        }
        st.due = due_of(&st.partial, self.window);
        dropped.len()
    }

    pub(crate) fn loop_partial_matches(&self, st: &LoopState<E>) -> Vec<PartialMatch<E>> {
        let l = self.looped();
        st.partial
            .as_slice()
            .iter()
            .filter(|e| e.pos != Pos::Start)
            .map(|e| PartialMatch {
                stage: self.states[l.state_of(e.pos) as usize].name.clone(),
                start_ts: e.ts,
                events: self.loop_events(&st.runs[e.run as usize].events, e.len),
            })
            .collect()
    }
}

fn give_scratch(mut v: Vec<Entry>) {
    v.clear();
    SCRATCH.with(|s| s.set(v));
}
