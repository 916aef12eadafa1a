//! Compiles a [`Pattern`] into an [`Nfa`], state by state as Flink's `NFACompiler` does, from the
//! last stage back to the first, so that the automaton (and with it every detail of matching,
//! down to the versions of the shared buffer) is the one Flink builds.

use std::collections::HashMap;
use std::sync::Arc;

use rustc_hash::FxHashSet;

use crate::nfa::{Action, CondExpr, Kind, Nfa, State, StateId, Transition};
use crate::pattern::{
    AfterMatchSkip, Cond, Contiguity, Leaf, Pattern, PatternError, PatternErrors, Stage, Times,
};

const ENDING_STATE_NAME: &str = "$endState$";

/// A position in a chain of stages (the top-level pattern or a group's inner pattern).
struct Cur<'p, E> {
    chain: &'p [Stage<E>],
    idx: usize,
}

impl<E> Clone for Cur<'_, E> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<E> Copy for Cur<'_, E> {}

impl<'p, E> Cur<'p, E> {
    fn stage(&self) -> &'p Stage<E> {
        &self.chain[self.idx]
    }
    fn has_prev(&self) -> bool {
        self.idx > 0
    }
    fn prev(&self) -> Cur<'p, E> {
        Cur {
            chain: self.chain,
            idx: self.idx - 1,
        }
    }
    fn key(&self) -> usize {
        self.stage() as *const Stage<E> as usize
    }
}

struct Compiler<'p, E> {
    states: Vec<State>,
    used_names: FxHashSet<String>,
    pages: Vec<Arc<str>>,
    stop_states: HashMap<String, StateId>,
    window_times: HashMap<StateId, i64>,
    window_time: Option<i64>,
    cur: Cur<'p, E>,
    following: Option<Cur<'p, E>>,
    cur_group: Option<Cur<'p, E>>,
    first_of_loop: HashMap<usize, bool>,
    original_state_map: HashMap<String, StateId>,
    leaves: Vec<Arc<Leaf<E>>>,
    leaf_index: HashMap<usize, u32>,
}

impl<E> Pattern<E> {
    /// Checks the pattern and compiles it into an automaton named `name`.
    pub fn compile(&self, name: &str) -> Result<Nfa<E>, PatternErrors> {
        let mut errors = self.errors.clone();
        collect_errors(&self.stages, &mut errors);
        let mut names = Vec::new();
        collect_names(&self.stages, &mut names);
        let mut seen = FxHashSet::default();
        for n in &names {
            if n == ENDING_STATE_NAME {
                errors.push(err(Some(n), "this name is reserved"));
            } else if !seen.insert(n.clone()) {
                errors.push(err(
                    Some(n),
                    "duplicate stage name: names must be unique, also across groups",
                ));
            }
        }
        if let AfterMatchSkip::SkipToFirst(s) | AfterMatchSkip::SkipToLast(s) = &self.skip {
            // Flink looks for the name among the top-level stages only.
            if !self.stages.iter().any(|st| &st.name == s) {
                errors.push(err(
                    None,
                    &format!("the after-match skip strategy names stage '{s}', which is not a stage of this pattern"),
                ));
            }
        }
        let last = self.stages.last().expect("a pattern always has a stage");
        if !errors.is_empty() {
            return Err(PatternErrors(errors));
        }
        let mut c = Compiler {
            states: Vec::new(),
            used_names: FxHashSet::default(),
            pages: Vec::new(),
            stop_states: HashMap::new(),
            window_times: HashMap::new(),
            window_time: None,
            cur: Cur {
                chain: &self.stages,
                idx: self.stages.len() - 1,
            },
            following: None,
            cur_group: None,
            first_of_loop: HashMap::new(),
            original_state_map: HashMap::new(),
            leaves: Vec::new(),
            leaf_index: HashMap::new(),
        };
        let end = c.create_state(ENDING_STATE_NAME, Kind::Final);
        c.window_time = last.window;
        let sink = c.create_middle_states(end);
        let start = c.convert_pattern(sink);
        c.states[start as usize].kind = Kind::Start;

        let window = c.window_time.unwrap_or(0);
        if let Some(w) = c.window_time {
            if c.window_times.values().any(|&t| t > w) {
                return Err(PatternErrors(vec![err(
                    None,
                    "the window between consecutive events (previous_and_current or max_gap) cannot be longer than the window of the whole pattern",
                )]));
            }
        }
        if last.quantifier.consuming == Contiguity::NotFollow {
            let has_own = c.states.iter().enumerate().any(|(i, s)| {
                s.name == last.name && c.window_times.get(&(i as StateId)).is_some_and(|&w| w > 0)
            });
            if !has_own && window == 0 {
                return Err(PatternErrors(vec![err(
                    Some(&last.name),
                    "not_followed_by cannot end a pattern without a window (within)",
                )]));
            }
        }
        let skip_page = match &self.skip {
            AfterMatchSkip::SkipToFirst(s) | AfterMatchSkip::SkipToLast(s) => c
                .pages
                .iter()
                .position(|p| &**p == s.as_str())
                .map(|i| i as u16),
            _ => None,
        };
        let mut window_times = vec![None; c.states.len()];
        for (s, w) in c.window_times {
            window_times[s as usize] = Some(w);
        }
        let mut texts = HashMap::new();
        collect_labels(self, &mut texts);
        let labels = c
            .leaves
            .iter()
            .map(|l| texts.get(&leaf_key(l)).cloned())
            .collect();
        let mut nfa = Nfa::new(
            name.to_string(),
            c.states,
            c.pages,
            c.leaves,
            window,
            window_times,
            self.skip.clone(),
            skip_page,
        );
        nfa.labels = labels;
        Ok(nfa)
    }
}

/// A condition's identity: the address of its shared leaf.
fn leaf_key<E>(l: &Arc<Leaf<E>>) -> usize {
    Arc::as_ptr(l) as *const () as usize
}

/// The labels of a pattern and of its groups, by leaf.
fn collect_labels<E>(p: &Pattern<E>, out: &mut HashMap<usize, Arc<str>>) {
    for (leaf, text) in &p.labels {
        out.insert(leaf_key(leaf), text.clone());
    }
    for st in &p.stages {
        if let Some(g) = &st.group {
            collect_labels(g, out);
        }
    }
}

fn err(stage: Option<&String>, message: &str) -> PatternError {
    PatternError {
        stage: stage.cloned(),
        message: message.to_string(),
    }
}

fn collect_errors<E>(stages: &[Stage<E>], errors: &mut Vec<PatternError>) {
    for st in stages {
        if st.name.contains(':') {
            errors.push(err(Some(&st.name), "a stage name cannot contain ':'"));
        }
        if st.name.is_empty() {
            errors.push(err(None, "a stage name cannot be empty"));
        }
        if let Some(w) = st.window.or(st.window_prev) {
            if w < 0 {
                errors.push(err(Some(&st.name), "a window cannot be negative"));
            }
        }
        if let Some(g) = &st.group {
            errors.extend(g.errors.iter().cloned());
            collect_errors(&g.stages, errors);
        }
    }
}

fn collect_names<E>(stages: &[Stage<E>], out: &mut Vec<String>) {
    for st in stages {
        match &st.group {
            Some(g) => collect_names(&g.stages, out),
            None => out.push(st.name.clone()),
        }
    }
}

fn and(a: CondExpr, b: CondExpr) -> CondExpr {
    CondExpr::And(Box::new(a), Box::new(b))
}

fn not(a: CondExpr) -> CondExpr {
    CondExpr::Not(Box::new(a))
}

impl<'p, E> Compiler<'p, E> {
    fn leaf_id(&mut self, l: &Arc<Leaf<E>>) -> u32 {
        let key = leaf_key(l);
        if let Some(&i) = self.leaf_index.get(&key) {
            return i;
        }
        let i = self.leaves.len() as u32;
        self.leaves.push(l.clone());
        self.leaf_index.insert(key, i);
        i
    }

    fn expr(&mut self, c: &Cond<E>) -> CondExpr {
        match c {
            Cond::Leaf(l) => CondExpr::Leaf(self.leaf_id(l)),
            Cond::And(a, b) => {
                let (a, b) = (self.expr(a), self.expr(b));
                and(a, b)
            }
            Cond::Or(a, b) => {
                let (a, b) = (self.expr(a), self.expr(b));
                CondExpr::Or(Box::new(a), Box::new(b))
            }
        }
    }

    fn stage_cond(&mut self, st: &Stage<E>) -> CondExpr {
        match &st.cond {
            Some(c) => self.expr(c),
            None => CondExpr::True,
        }
    }

    fn until_of(&mut self, st: &Stage<E>) -> Option<CondExpr> {
        st.until.as_ref().map(|u| self.expr(u))
    }

    fn page(&mut self, name: &str) -> u16 {
        let original = name.split(':').next().unwrap_or(name);
        match self.pages.iter().position(|p| &**p == original) {
            Some(i) => i as u16,
            None => {
                self.pages.push(Arc::from(original));
                (self.pages.len() - 1) as u16
            }
        }
    }

    fn create_state(&mut self, base: &str, kind: Kind) -> StateId {
        let mut candidate = base.to_string();
        let mut counter = 0;
        while self.used_names.contains(&candidate) {
            candidate = format!("{base}:{counter}");
            counter += 1;
        }
        self.used_names.insert(candidate.clone());
        let page = self.page(&candidate);
        self.states.push(State {
            name: candidate,
            page,
            kind,
            transitions: Vec::new(),
        });
        (self.states.len() - 1) as StateId
    }

    fn create_state_take(&mut self, kind: Kind, is_take: bool) -> StateId {
        let st = self.cur.stage();
        let id = self.create_state(&st.name, kind);
        if is_take {
            match st.times {
                None => {
                    if let Some(w) = st.window_prev {
                        self.window_times.insert(id, w);
                    }
                }
                Some(Times { gap: Some(g), .. }) if self.states[id as usize].name.contains(':') => {
                    self.window_times.insert(id, g);
                }
                Some(_) => {}
            }
        }
        id
    }

    fn add(&mut self, source: StateId, action: Action, target: StateId, cond: CondExpr) {
        self.states[source as usize].transitions.push(Transition {
            action,
            source,
            target,
            cond,
        });
    }

    fn is_final(&self, s: StateId) -> bool {
        self.states[s as usize].kind == Kind::Final
    }

    fn create_middle_states(&mut self, sink: StateId) -> StateId {
        let mut last_sink = sink;
        while self.cur.has_prev() {
            let st = self.cur.stage();
            match st.quantifier.consuming {
                Contiguity::NotFollow => {
                    if (st.window_prev.is_some() || self.window_time.unwrap_or(0) > 0)
                        && self.is_final(last_sink)
                    {
                        let not_follow = self.create_state_take(Kind::Pending, true);
                        let not_cond = self.take_condition(self.cur);
                        let stop = self.create_stop_state(not_cond.clone(), &st.name);
                        self.add(not_follow, Action::Proceed, stop, not_cond.clone());
                        self.add(not_follow, Action::Ignore, not_follow, not(not_cond));
                        last_sink = not_follow;
                    }
                }
                Contiguity::NotNext => {
                    let not_next = self.create_state_take(Kind::Normal, true);
                    let not_cond = self.take_condition(self.cur);
                    let stop = self.create_stop_state(not_cond.clone(), &st.name);
                    if self.is_final(last_sink) {
                        self.add(not_next, Action::Ignore, last_sink, not(not_cond.clone()));
                    } else {
                        self.add(not_next, Action::Proceed, last_sink, not(not_cond.clone()));
                    }
                    self.add(not_next, Action::Proceed, stop, not_cond);
                    last_sink = not_next;
                }
                _ => last_sink = self.convert_pattern(last_sink),
            }
            self.following = Some(self.cur);
            self.cur = self.cur.prev();
            if let Some(w) = self.cur.stage().window {
                if w < self.window_time.unwrap_or(i64::MAX) {
                    self.window_time = Some(w);
                }
            }
        }
        last_sink
    }

    fn convert_pattern(&mut self, sink: StateId) -> StateId {
        let st = self.cur.stage();
        let times = st.times.unwrap_or(Times {
            from: 1,
            to: 1,
            gap: None,
        });
        let last = if st.quantifier.looping {
            self.set_first_of_loop(false);
            let s = self.copy_without_transitive_nots(sink);
            let looping = self.create_looping(s);
            self.set_first_of_loop(true);
            self.create_times_state(looping, sink, times)
        } else if st.quantifier.times {
            self.create_times_state(sink, sink, times)
        } else {
            let take = self.take_condition(self.cur);
            let ignore = self.ignore_condition(self.cur);
            let optional = st.quantifier.optional;
            self.create_singleton_state(sink, Some(sink), take, ignore, optional)
        };
        self.add_stop_states(last);
        last
    }

    fn create_stop_state(&mut self, not_cond: CondExpr, name: &str) -> StateId {
        if let Some(&s) = self.stop_states.get(name) {
            return s;
        }
        let s = self.create_state(name, Kind::Stop);
        self.add(s, Action::Take, s, not_cond);
        self.stop_states.insert(name.to_string(), s);
        s
    }

    fn current_not_condition(&mut self) -> Vec<(CondExpr, String)> {
        let mut nots = Vec::new();
        let mut p = self.cur;
        while p.has_prev()
            && (p.prev().stage().quantifier.optional
                || p.prev().stage().quantifier.consuming == Contiguity::NotFollow)
        {
            p = p.prev();
            if p.stage().quantifier.consuming == Contiguity::NotFollow {
                let c = self.take_condition(p);
                nots.push((c, p.stage().name.clone()));
            }
        }
        nots
    }

    fn copy_without_transitive_nots(&mut self, sink: StateId) -> StateId {
        let nots = self.current_not_condition();
        if nots.is_empty() || !self.cur.stage().quantifier.optional {
            return sink;
        }
        let (name, kind) = {
            let s = &self.states[sink as usize];
            (s.name.clone(), s.kind)
        };
        let copy = self.create_state(&name, kind);
        let transitions = self.states[sink as usize].transitions.clone();
        for t in transitions {
            if t.action == Action::Proceed {
                let mut target = t.target;
                let mut remove = false;
                if self.states[target as usize].kind == Kind::Stop {
                    for (_, n) in &nots {
                        if &self.states[target as usize].name == n {
                            remove = true;
                        }
                    }
                } else {
                    target = self.copy_without_transitive_nots(t.target);
                }
                if !remove {
                    self.add(copy, t.action, target, t.cond);
                }
            } else {
                let target = if t.target == t.source { copy } else { t.target };
                self.add(copy, t.action, target, t.cond);
            }
        }
        copy
    }

    fn copy(&mut self, state: StateId) -> StateId {
        let (name, kind) = {
            let s = &self.states[state as usize];
            (s.name.split(':').next().unwrap_or("").to_string(), s.kind)
        };
        let copy = self.create_state(&name, kind);
        let transitions = self.states[state as usize].transitions.clone();
        for t in transitions {
            let target = if t.target == t.source { copy } else { t.target };
            self.add(copy, t.action, target, t.cond);
        }
        copy
    }

    fn add_stop_states(&mut self, state: StateId) {
        for (c, n) in self.current_not_condition() {
            let stop = self.create_stop_state(c.clone(), &n);
            self.add(state, Action::Proceed, stop, c);
        }
    }

    fn add_stop_state_to_looping(&mut self, state: StateId) {
        if let Some(f) = self.following {
            if f.stage().quantifier.consuming == Contiguity::NotFollow {
                let c = self.take_condition(f);
                let stop = self.create_stop_state(c.clone(), &f.stage().name);
                self.add(state, Action::Proceed, stop, c);
            }
        }
    }

    fn create_times_state(&mut self, sink: StateId, proceed: StateId, times: Times) -> StateId {
        let mut last = sink;
        self.set_first_of_loop(false);
        let st = self.cur.stage();
        let until = self.until_of(st);
        let inner = self.inner_ignore_condition(self.cur);
        let inner_ignore = extend_with_until(inner, until.clone(), false);
        let take0 = self.take_condition(self.cur);
        let take = extend_with_until(Some(take0), until.clone(), true).unwrap_or(CondExpr::True);
        if st.quantifier.greedy && times.from != times.to {
            if until.is_some() {
                let copy = self.copy(sink);
                let name = self.states[sink as usize].name.clone();
                self.original_state_map.insert(name, copy);
            }
            self.update_with_greedy_condition(sink, take.clone());
        }
        for _ in times.from..times.to {
            last = self.create_singleton_state(
                last,
                Some(proceed),
                take.clone(),
                inner_ignore.clone(),
                true,
            );
            self.add_stop_state_to_looping(last);
        }
        for _ in 0..times.from.saturating_sub(1) {
            last =
                self.create_singleton_state(last, None, take.clone(), inner_ignore.clone(), false);
            self.add_stop_state_to_looping(last);
        }
        self.set_first_of_loop(true);
        let ignore = self.ignore_condition(self.cur);
        let optional = self.cur.stage().quantifier.optional;
        self.create_singleton_state(last, Some(proceed), take, ignore, optional)
    }

    fn set_first_of_loop(&mut self, v: bool) {
        if self.cur.stage().group.is_some() {
            self.first_of_loop.insert(self.cur.key(), v);
        }
    }

    fn is_current_group_first_of_loop(&self) -> bool {
        match self.cur_group {
            Some(g) => *self.first_of_loop.get(&g.key()).unwrap_or(&true),
            None => true,
        }
    }

    fn head_of_group(&self, p: Cur<'p, E>) -> bool {
        self.cur_group.is_some() && !p.has_prev()
    }

    fn is_head_of_optional_group_pattern(&self, p: Cur<'p, E>) -> bool {
        if !self.head_of_group(p) {
            return false;
        }
        self.is_current_group_first_of_loop()
            && self
                .cur_group
                .is_some_and(|g| g.stage().quantifier.optional)
    }

    fn create_singleton_state(
        &mut self,
        sink: StateId,
        proceed: Option<StateId>,
        take: CondExpr,
        ignore: Option<CondExpr>,
        optional: bool,
    ) -> StateId {
        if self.cur.stage().group.is_some() {
            return self.create_group_pattern_state(self.cur, sink, proceed, optional);
        }
        let single = self.create_state_take(Kind::Normal, true);
        let s = self.copy_without_transitive_nots(sink);
        self.add(single, Action::Take, s, take.clone());
        let proceed_cond = self.true_function();
        if optional {
            if let Some(proceed) = proceed {
                if self.cur.stage().quantifier.greedy {
                    let st = self.cur.stage();
                    let until = self.until_of(st);
                    if let Some(u) = &until {
                        let name = self.states[proceed as usize].name.clone();
                        if let Some(&orig) = self.original_state_map.get(&name) {
                            self.add(
                                single,
                                Action::Proceed,
                                orig,
                                and(proceed_cond.clone(), u.clone()),
                            );
                        }
                    }
                    let c = match until {
                        Some(u) => and(proceed_cond, not(u)),
                        None => proceed_cond,
                    };
                    self.add(single, Action::Proceed, proceed, c);
                } else {
                    self.add(single, Action::Proceed, proceed, proceed_cond);
                }
            }
        }
        if let Some(ig) = ignore {
            let ignore_state = if optional || self.is_head_of_optional_group_pattern(self.cur) {
                let st = self.create_state_take(Kind::Normal, false);
                self.add(st, Action::Take, s, take);
                self.add(st, Action::Ignore, st, ig.clone());
                self.add_stop_states(st);
                st
            } else {
                single
            };
            self.add(single, Action::Ignore, ignore_state, ig);
        }
        single
    }

    fn create_group_pattern_state(
        &mut self,
        group: Cur<'p, E>,
        sink: StateId,
        proceed: Option<StateId>,
        optional: bool,
    ) -> StateId {
        let proceed_cond = self.true_function();
        let (old_cur, old_following, old_group) = (self.cur, self.following, self.cur_group);
        let inner = &group.stage().group.as_ref().expect("group stage").stages;
        self.cur_group = Some(group);
        self.cur = Cur {
            chain: inner,
            idx: inner.len() - 1,
        };
        let mut last = self.create_middle_states(sink);
        last = self.convert_pattern(last);
        if optional {
            if let Some(p) = proceed {
                self.add(last, Action::Proceed, p, proceed_cond);
            }
        }
        self.cur = old_cur;
        self.following = old_following;
        self.cur_group = old_group;
        last
    }

    fn create_looping_group_pattern_state(&mut self, group: Cur<'p, E>, sink: StateId) -> StateId {
        let proceed_cond = self.true_function();
        let (old_cur, old_following, old_group) = (self.cur, self.following, self.cur_group);
        let dummy = self.create_state_take(Kind::Normal, true);
        let inner = &group.stage().group.as_ref().expect("group stage").stages;
        self.cur_group = Some(group);
        self.cur = Cur {
            chain: inner,
            idx: inner.len() - 1,
        };
        let mut last = self.create_middle_states(dummy);
        last = self.convert_pattern(last);
        self.add(last, Action::Proceed, sink, proceed_cond.clone());
        self.add(dummy, Action::Proceed, last, proceed_cond);
        self.cur = old_cur;
        self.following = old_following;
        self.cur_group = old_group;
        last
    }

    fn create_looping(&mut self, sink: StateId) -> StateId {
        if self.cur.stage().group.is_some() {
            return self.create_looping_group_pattern_state(self.cur, sink);
        }
        let st = self.cur.stage();
        let until = self.until_of(st);
        let inner = self.inner_ignore_condition(self.cur);
        let ignore = extend_with_until(inner, until.clone(), false);
        let take0 = self.take_condition(self.cur);
        let take =
            extend_with_until(Some(take0.clone()), until.clone(), true).unwrap_or(CondExpr::True);
        let proceed_cond = self.true_function();
        let looping = self.create_state_take(Kind::Normal, true);
        if st.quantifier.greedy {
            if let Some(u) = &until {
                let copy = self.copy(sink);
                self.add(
                    looping,
                    Action::Proceed,
                    copy,
                    and(proceed_cond.clone(), u.clone()),
                );
                let name = self.states[sink as usize].name.clone();
                self.original_state_map.insert(name, copy);
            }
            let c = match &until {
                Some(u) => and(proceed_cond, not(u.clone())),
                None => proceed_cond,
            };
            self.add(looping, Action::Proceed, sink, c);
            self.update_with_greedy_condition(sink, take0);
        } else {
            self.add(looping, Action::Proceed, sink, proceed_cond);
        }
        self.add(looping, Action::Take, looping, take.clone());
        self.add_stop_state_to_looping(looping);
        if let Some(ig) = ignore {
            let ig_state = self.create_state_take(Kind::Normal, false);
            self.add(ig_state, Action::Take, looping, take);
            self.add(ig_state, Action::Ignore, ig_state, ig.clone());
            self.add(looping, Action::Ignore, ig_state, ig);
            self.add_stop_state_to_looping(ig_state);
        }
        looping
    }

    fn consuming_cond(&mut self, strategy: Contiguity, p: Cur<'p, E>) -> Option<CondExpr> {
        match strategy {
            Contiguity::Strict => None,
            Contiguity::SkipTillNext => {
                let c = self.stage_cond(p.stage());
                Some(not(c))
            }
            Contiguity::SkipTillAny => Some(CondExpr::True),
            Contiguity::NotFollow | Contiguity::NotNext => None,
        }
    }

    fn group_until(&mut self) -> Option<CondExpr> {
        let g = self.cur_group?;
        self.until_of(g.stage())
    }

    fn inner_ignore_condition(&mut self, p: Cur<'p, E>) -> Option<CondExpr> {
        let mut strategy = p.stage().quantifier.inner;
        if self.head_of_group(p) {
            strategy = self.cur_group.expect("in a group").stage().quantifier.inner;
        }
        let c = self.consuming_cond(strategy, p);
        match self.group_until() {
            Some(u) => extend_with_until(c, Some(u), false),
            None => c,
        }
    }

    fn ignore_condition(&mut self, p: Cur<'p, E>) -> Option<CondExpr> {
        let mut strategy = p.stage().quantifier.consuming;
        if self.head_of_group(p) {
            let g = self.cur_group.expect("in a group").stage();
            strategy = if self.is_current_group_first_of_loop() {
                g.quantifier.consuming
            } else {
                g.quantifier.inner
            };
        }
        let c = self.consuming_cond(strategy, p);
        match self.group_until() {
            Some(u) => extend_with_until(c, Some(u), false),
            None => c,
        }
    }

    fn take_condition(&mut self, p: Cur<'p, E>) -> CondExpr {
        let c = self.stage_cond(p.stage());
        match self.group_until() {
            Some(u) => extend_with_until(Some(c), Some(u), true).unwrap_or(CondExpr::True),
            None => c,
        }
    }

    fn true_function(&mut self) -> CondExpr {
        match self.group_until() {
            Some(u) => {
                extend_with_until(Some(CondExpr::True), Some(u), true).unwrap_or(CondExpr::True)
            }
            None => CondExpr::True,
        }
    }

    fn update_with_greedy_condition(&mut self, state: StateId, take: CondExpr) {
        for t in &mut self.states[state as usize].transitions {
            let c = std::mem::replace(&mut t.cond, CondExpr::True);
            t.cond = and(c, not(take.clone()));
        }
    }
}

fn extend_with_until(
    cond: Option<CondExpr>,
    until: Option<CondExpr>,
    is_take: bool,
) -> Option<CondExpr> {
    match (cond, until) {
        (Some(c), Some(u)) => Some(and(not(u), c)),
        (None, Some(u)) if is_take => Some(not(u)),
        (c, _) => c,
    }
}

#[cfg(test)]
mod tests {
    use crate::nfa::Action;
    use crate::Pattern;

    #[test]
    fn conditions_keep_their_labels() {
        let nfa = Pattern::<i32>::begin("a")
            .where_(|e| *e > 0)
            .label("x > 0")
            .followed_by("b")
            .where_(|e| *e < 0)
            .one_or_more()
            .until(|e| *e == -9)
            .label("x == -9")
            .compile("p")
            .unwrap();
        let takes: Vec<String> = nfa
            .states()
            .iter()
            .flat_map(|s| &s.transitions)
            .filter(|t| t.action == Action::Take)
            .map(|t| nfa.condition_text(&t.cond))
            .collect();
        assert!(takes.contains(&"x > 0".to_string()), "{takes:?}");
        // The unlabelled condition is shown by its index, the labelled until by its text.
        assert!(
            takes
                .iter()
                .any(|t| t.contains("condition") && t.contains("not (x == -9)")),
            "{takes:?}"
        );
    }
}
