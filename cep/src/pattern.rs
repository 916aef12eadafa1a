//! The pattern DSL: `begin`, `next`, `followed_by`, ..., conditions, quantifiers, windows and the
//! after-match skip strategy, with every check Flink CEP makes when a pattern is built.
//!
//! Builder methods never panic: a misuse is recorded and reported, together with every other
//! problem found, by [`Pattern::compile`](crate::Pattern::compile).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::nfa::Context;

/// How a stage relates to the event before it (Flink's `ConsumingStrategy`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Contiguity {
    /// `next`: the very next event.
    Strict,
    /// `followed_by`: relaxed; non-matching events in between are skipped.
    SkipTillNext,
    /// `followed_by_any`: non-deterministic relaxed; also matching events may be skipped.
    SkipTillAny,
    /// `not_followed_by`.
    NotFollow,
    /// `not_next`.
    NotNext,
}

/// How `within` measures time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum WithinType {
    /// From the first event of the match to the last (the default).
    #[default]
    FirstAndLast,
    /// Between each event and the one before it.
    PreviousAndCurrent,
}

/// What happens to other partial matches once a match is emitted.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum AfterMatchSkip {
    /// Every match is emitted.
    #[default]
    NoSkip,
    /// Drop partial matches that started with the same event as the match.
    SkipToNext,
    /// Drop partial matches that started before the match ended.
    SkipPastLastEvent,
    /// Drop partial matches that started before the first event of the named stage.
    SkipToFirst(String),
    /// Drop partial matches that started before the last event of the named stage.
    SkipToLast(String),
}

/// A problem with a pattern, found when it is built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PatternError {
    /// The stage it concerns, if any.
    pub stage: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for PatternError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.stage {
            Some(s) => write!(f, "stage '{s}': {}", self.message),
            None => write!(f, "{}", self.message),
        }
    }
}

/// Every problem found in a pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PatternErrors(pub Vec<PatternError>);

impl fmt::Display for PatternErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(|e| e.to_string()).collect();
        write!(f, "{}", parts.join("; "))
    }
}

impl std::error::Error for PatternErrors {}

type SimpleFn<E> = dyn Fn(&E) -> bool + Send + Sync;
type IterFn<E> = dyn for<'a> Fn(&E, &Context<'a, E>) -> bool + Send + Sync;

/// A user condition: a predicate over the event, or an iterative one that also sees the events
/// already matched by the partial match.
pub enum Leaf<E> {
    /// Depends on the event only; evaluated at most once per event.
    Simple(Box<SimpleFn<E>>),
    /// Also reads the partial match through a [`Context`]; evaluated at most once per event
    /// and partial match (a stage's take and ignore transitions test the same condition).
    Iterative(Box<IterFn<E>>),
    /// An iterative condition (the second) that holds only for events a simple one (the guard)
    /// accepts: the guard is evaluated at most once per event, the iterative part at most once
    /// per event and partial match, and only for events the guard accepts. The same answers
    /// as `Iterative(|e, ctx| guard(e) && f(e, ctx))`, without a call per partial match for the
    /// events the guard refuses.
    Guarded(Box<SimpleFn<E>>, Box<IterFn<E>>),
}

/// A stage condition: user conditions combined with `where` (and) and `or`.
pub enum Cond<E> {
    /// One user condition.
    Leaf(Arc<Leaf<E>>),
    /// Both.
    And(Box<Cond<E>>, Box<Cond<E>>),
    /// Either.
    Or(Box<Cond<E>>, Box<Cond<E>>),
}

impl<E> Clone for Cond<E> {
    fn clone(&self) -> Self {
        match self {
            Cond::Leaf(l) => Cond::Leaf(l.clone()),
            Cond::And(a, b) => Cond::And(a.clone(), b.clone()),
            Cond::Or(a, b) => Cond::Or(a.clone(), b.clone()),
        }
    }
}

/// Quantifier properties of a stage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Quantifier {
    pub consuming: Contiguity,
    pub inner: Contiguity,
    pub looping: bool,
    pub times: bool,
    pub optional: bool,
    pub greedy: bool,
}

impl Quantifier {
    fn one(consuming: Contiguity) -> Self {
        Quantifier {
            consuming,
            inner: Contiguity::SkipTillNext,
            looping: false,
            times: false,
            optional: false,
            greedy: false,
        }
    }

    fn single(&self) -> bool {
        !self.looping && !self.times
    }

    fn describe(&self) -> &'static str {
        if self.looping {
            "looping"
        } else if self.times {
            "times"
        } else {
            "single"
        }
    }
}

/// `times(from, to)` with an optional maximum gap between consecutive events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Times {
    pub from: u32,
    pub to: u32,
    pub gap: Option<i64>,
}

/// One stage of a pattern.
pub(crate) struct Stage<E> {
    pub name: String,
    pub quantifier: Quantifier,
    pub cond: Option<Cond<E>>,
    pub until: Option<Cond<E>>,
    pub times: Option<Times>,
    pub window: Option<i64>,
    pub window_prev: Option<i64>,
    pub group: Option<Box<Pattern<E>>>,
}

/// A pattern: a sequence of stages, built with Flink's vocabulary.
///
/// ```
/// use cep::Pattern;
/// use std::time::Duration;
/// let p = Pattern::<&str>::begin("fail")
///     .where_(|e: &&str| *e == "fail")
///     .times(3)
///     .consecutive()
///     .within(Duration::from_secs(2));
/// assert!(p.compile("login-failures").is_ok());
/// ```
pub struct Pattern<E> {
    pub(crate) stages: Vec<Stage<E>>,
    pub(crate) skip: AfterMatchSkip,
    pub(crate) errors: Vec<PatternError>,
    /// Texts given to conditions by [`Pattern::label`], for [`crate::Nfa::condition_text`].
    pub(crate) labels: Vec<(Arc<Leaf<E>>, Arc<str>)>,
    /// The condition added last (by `where_`, `or`, `until` or their `_ctx` forms).
    last_leaf: Option<Arc<Leaf<E>>>,
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl<E> Pattern<E> {
    fn with_first(stage: Stage<E>, skip: AfterMatchSkip) -> Self {
        Pattern {
            stages: vec![stage],
            skip,
            errors: Vec::new(),
            labels: Vec::new(),
            last_leaf: None,
        }
    }

    fn stage(name: &str, consuming: Contiguity) -> Stage<E> {
        Stage {
            name: name.to_string(),
            quantifier: Quantifier::one(consuming),
            cond: None,
            until: None,
            times: None,
            window: None,
            window_prev: None,
            group: None,
        }
    }

    /// Starts a pattern with a stage named `name`.
    pub fn begin(name: &str) -> Self {
        Self::with_first(
            Self::stage(name, Contiguity::SkipTillNext),
            AfterMatchSkip::NoSkip,
        )
    }

    /// Starts a pattern with the given after-match skip strategy.
    pub fn begin_with_skip(name: &str, skip: AfterMatchSkip) -> Self {
        Self::with_first(Self::stage(name, Contiguity::SkipTillNext), skip)
    }

    /// Starts a pattern whose first stage is a whole pattern (a group).
    pub fn begin_group(group: Pattern<E>) -> Self {
        Self::begin_group_with_skip(group, AfterMatchSkip::NoSkip)
    }

    /// Starts a pattern with a group stage and the given skip strategy.
    pub fn begin_group_with_skip(group: Pattern<E>, skip: AfterMatchSkip) -> Self {
        let mut stage = Self::stage(&group_name(&group), Contiguity::SkipTillNext);
        stage.group = Some(Box::new(group));
        Self::with_first(stage, skip)
    }

    /// Sets the after-match skip strategy.
    pub fn skip(mut self, skip: AfterMatchSkip) -> Self {
        self.skip = skip;
        self
    }

    fn push(mut self, name: &str, consuming: Contiguity) -> Self {
        let after_optional = self.last().quantifier.optional;
        self.stages.push(Self::stage(name, consuming));
        if matches!(consuming, Contiguity::NotFollow | Contiguity::NotNext) && after_optional {
            self.error(
                "a NOT stage cannot follow an optional stage (Flink does not support an optional \
                 path to a NOT condition; use two patterns, one with and one without the optional \
                 stage)",
            );
        }
        self
    }

    fn push_group(self, group: Pattern<E>, consuming: Contiguity) -> Self {
        let name = group_name(&group);
        let mut p = self.push(&name, consuming);
        p.last_mut().group = Some(Box::new(group));
        p
    }

    /// A stage that must match the very next event.
    pub fn next(self, name: &str) -> Self {
        self.push(name, Contiguity::Strict)
    }

    /// A stage that may skip non-matching events.
    pub fn followed_by(self, name: &str) -> Self {
        self.push(name, Contiguity::SkipTillNext)
    }

    /// A stage that may skip any event, matching or not.
    pub fn followed_by_any(self, name: &str) -> Self {
        self.push(name, Contiguity::SkipTillAny)
    }

    /// The next event must not match this stage.
    pub fn not_next(self, name: &str) -> Self {
        self.push(name, Contiguity::NotNext)
    }

    /// No event may match this stage before the next stage matches (or, at the end of a
    /// pattern, before the window ends).
    pub fn not_followed_by(self, name: &str) -> Self {
        self.push(name, Contiguity::NotFollow)
    }

    /// A group stage with strict contiguity.
    pub fn next_group(self, group: Pattern<E>) -> Self {
        self.push_group(group, Contiguity::Strict)
    }

    /// A group stage with relaxed contiguity.
    pub fn followed_by_group(self, group: Pattern<E>) -> Self {
        self.push_group(group, Contiguity::SkipTillNext)
    }

    /// A group stage with non-deterministic relaxed contiguity.
    pub fn followed_by_any_group(self, group: Pattern<E>) -> Self {
        self.push_group(group, Contiguity::SkipTillAny)
    }

    fn last(&self) -> &Stage<E> {
        self.stages.last().expect("a pattern always has a stage")
    }

    fn last_mut(&mut self) -> &mut Stage<E> {
        self.stages
            .last_mut()
            .expect("a pattern always has a stage")
    }

    fn error(&mut self, message: &str) {
        let stage = Some(self.last().name.clone());
        self.errors.push(PatternError {
            stage,
            message: message.to_string(),
        });
    }

    fn add_cond(mut self, leaf: Leaf<E>, or: bool) -> Self {
        if self.last().group.is_some() {
            self.error("a group stage takes no condition of its own");
            return self;
        }
        let leaf = Arc::new(leaf);
        self.last_leaf = Some(leaf.clone());
        let new = Cond::Leaf(leaf);
        let st = self.last_mut();
        st.cond = Some(match st.cond.take() {
            None => new,
            Some(old) if or => Cond::Or(Box::new(old), Box::new(new)),
            Some(old) => Cond::And(Box::new(old), Box::new(new)),
        });
        self
    }

    /// Adds a condition on the event; several are ANDed.
    pub fn where_(self, f: impl Fn(&E) -> bool + Send + Sync + 'static) -> Self {
        self.add_cond(Leaf::Simple(Box::new(f)), false)
    }

    /// Adds an iterative condition, which also sees the events matched so far. Like every
    /// condition it should be a function of its arguments: it is called at most once per event
    /// and partial match, however many transitions test it (Flink calls it once per
    /// transition).
    pub fn where_ctx(
        self,
        f: impl for<'a> Fn(&E, &Context<'a, E>) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.add_cond(Leaf::Iterative(Box::new(f)), false)
    }

    /// Adds an iterative condition `f` that holds only for events `guard` accepts: the same
    /// as `where_ctx(|e, ctx| guard(e) && f(e, ctx))`, but `guard` is evaluated once per event
    /// (like [`where_`](Self::where_)) and `f` only for the events it accepts, instead of both
    /// once per partial match. For conditions like "a B whose value is above the A's".
    pub fn where_ctx_guarded(
        self,
        guard: impl Fn(&E) -> bool + Send + Sync + 'static,
        f: impl for<'a> Fn(&E, &Context<'a, E>) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.add_cond(Leaf::Guarded(Box::new(guard), Box::new(f)), false)
    }

    /// ORs a condition with the stage's conditions so far.
    pub fn or(self, f: impl Fn(&E) -> bool + Send + Sync + 'static) -> Self {
        self.add_cond(Leaf::Simple(Box::new(f)), true)
    }

    /// ORs an iterative condition with the stage's conditions so far.
    pub fn or_ctx(
        self,
        f: impl for<'a> Fn(&E, &Context<'a, E>) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.add_cond(Leaf::Iterative(Box::new(f)), true)
    }

    fn set_until(mut self, leaf: Leaf<E>) -> Self {
        if !self.last().quantifier.looping {
            self.error("the until condition is only applicable to looping stages (one_or_more, times_or_more)");
            return self;
        }
        if self.last().until.is_some() {
            self.error("only one until condition can be applied");
            return self;
        }
        let leaf = Arc::new(leaf);
        self.last_leaf = Some(leaf.clone());
        self.last_mut().until = Some(Cond::Leaf(leaf));
        self
    }

    /// Names the condition added last (by `where_`, `or`, `until` or their `_ctx` forms) with
    /// the text it was written as, so that the automaton can show it
    /// ([`crate::Nfa::condition_text`]). Does nothing before any condition.
    pub fn label(mut self, text: &str) -> Self {
        if let Some(leaf) = self.last_leaf.clone() {
            self.labels.push((leaf, Arc::from(text)));
        }
        self
    }

    /// Stops a looping stage at the first event that satisfies `f`.
    pub fn until(self, f: impl Fn(&E) -> bool + Send + Sync + 'static) -> Self {
        self.set_until(Leaf::Simple(Box::new(f)))
    }

    /// Iterative form of [`Pattern::until`].
    pub fn until_ctx(
        self,
        f: impl for<'a> Fn(&E, &Context<'a, E>) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.set_until(Leaf::Iterative(Box::new(f)))
    }

    fn check_quantifiable(&mut self) -> bool {
        let q = self.last().quantifier;
        if matches!(q.consuming, Contiguity::NotFollow | Contiguity::NotNext) {
            self.error("a quantifier is not applicable to a NOT stage");
            return false;
        }
        if !q.single() {
            let msg = format!(
                "a quantifier was already applied to this stage (it is {})",
                q.describe()
            );
            self.error(&msg);
            return false;
        }
        true
    }

    /// Exactly `n` events.
    pub fn times(self, n: u32) -> Self {
        self.times_range(n, n)
    }

    /// Between `from` and `to` events (`from` may be 0: the stage is then optional).
    pub fn times_range(mut self, from: u32, to: u32) -> Self {
        if !self.check_quantifiable() {
            return self;
        }
        if to == 0 {
            self.error("times: give a positive number greater than 0");
            return self;
        }
        if to < from {
            let msg =
                format!("times: 'to' ({to}) must be greater than or equal to 'from' ({from})");
            self.error(&msg);
            return self;
        }
        let st = self.last_mut();
        st.quantifier.times = true;
        let mut from = from;
        if from == 0 {
            st.quantifier.optional = true;
            from = 1;
        }
        st.times = Some(Times {
            from,
            to,
            gap: None,
        });
        self
    }

    /// One or more events (a looping stage).
    pub fn one_or_more(self) -> Self {
        self.times_or_more(1)
    }

    /// `n` or more events (a looping stage).
    pub fn times_or_more(mut self, n: u32) -> Self {
        if !self.check_quantifiable() {
            return self;
        }
        if n == 0 {
            self.error("times_or_more: give a positive number greater than 0");
            return self;
        }
        let st = self.last_mut();
        st.quantifier.looping = true;
        st.times = Some(Times {
            from: n,
            to: n,
            gap: None,
        });
        self
    }

    /// The maximum time between consecutive events of a `times` stage's required events (Flink's
    /// `times(n, Duration)`, `times_or_more(n, Duration)`, `one_or_more(Duration)`). As in Flink,
    /// it bounds only the steps up to the n-th event: the open loop after it is not bounded, so
    /// on `one_or_more` it has no effect (pinned against Flink 2.3 in `cep/tests/dsl_shapes.rs`).
    pub fn max_gap(mut self, gap: Duration) -> Self {
        match self.last_mut().times.as_mut() {
            Some(t) => t.gap = Some(millis(gap)),
            None => {
                self.error("max_gap applies to times, one_or_more and times_or_more stages only")
            }
        }
        self
    }

    /// The stage may be skipped.
    pub fn optional(mut self) -> Self {
        let q = self.last().quantifier;
        if matches!(q.consuming, Contiguity::NotFollow | Contiguity::NotNext) {
            self.error("a NOT stage cannot be optional");
        } else if q.optional {
            self.error("optional was already applied to this stage");
        } else {
            self.last_mut().quantifier.optional = true;
        }
        self
    }

    /// A looping or times stage takes as many events as it can.
    pub fn greedy(mut self) -> Self {
        let q = self.last().quantifier;
        if matches!(q.consuming, Contiguity::NotFollow | Contiguity::NotNext) {
            self.error("greedy is not applicable to a NOT stage");
        } else if self.last().group.is_some() {
            self.error("greedy is not applicable to a group stage");
        } else if q.single() {
            self.error("greedy is not applicable to a single (non-looping, non-times) stage");
        } else if q.inner == Contiguity::SkipTillAny {
            self.error("greedy is not applicable together with allow_combinations");
        } else {
            self.last_mut().quantifier.greedy = true;
        }
        self
    }

    /// The events of a looping or times stage must be consecutive.
    pub fn consecutive(mut self) -> Self {
        let q = self.last().quantifier;
        if q.single() {
            self.error("consecutive is not applicable to a single (non-looping, non-times) stage");
        } else if q.inner == Contiguity::SkipTillAny {
            self.error("apply either allow_combinations or consecutive, not both");
        } else if q.inner == Contiguity::Strict {
            self.error("consecutive was already applied to this stage");
        } else {
            self.last_mut().quantifier.inner = Contiguity::Strict;
        }
        self
    }

    /// The events of a looping or times stage may be any combination of matching events.
    pub fn allow_combinations(mut self) -> Self {
        let q = self.last().quantifier;
        if q.single() {
            self.error(
                "allow_combinations is not applicable to a single (non-looping, non-times) stage",
            );
        } else if q.inner == Contiguity::Strict {
            self.error("apply either allow_combinations or consecutive, not both");
        } else if q.inner == Contiguity::SkipTillAny {
            self.error("allow_combinations was already applied to this stage");
        } else if q.greedy {
            self.error("greedy is not applicable together with allow_combinations");
        } else {
            self.last_mut().quantifier.inner = Contiguity::SkipTillAny;
        }
        self
    }

    /// A match must complete within `window` of its first event.
    pub fn within(self, window: Duration) -> Self {
        self.within_type(window, WithinType::FirstAndLast)
    }

    /// A window of the given type; `PreviousAndCurrent` bounds the time between the event of
    /// this stage and the event before it.
    pub fn within_type(mut self, window: Duration, kind: WithinType) -> Self {
        let ms = millis(window);
        let st = self.last_mut();
        match kind {
            WithinType::FirstAndLast => st.window = Some(ms),
            WithinType::PreviousAndCurrent => st.window_prev = Some(ms),
        }
        self
    }

    /// The names of the stages, in order (groups by their name).
    pub fn stage_names(&self) -> Vec<&str> {
        self.stages.iter().map(|s| s.name.as_str()).collect()
    }
}

fn group_name<E>(group: &Pattern<E>) -> String {
    // A group is named after its inner stages, as Flink names a GroupPattern after its first.
    let names: Vec<&str> = group.stages.iter().map(|s| s.name.as_str()).collect();
    format!("({})", names.join(","))
}

impl<E> Pattern<E> {
    /// Renames the last stage (used for group stages, which are otherwise named after their
    /// inner stages).
    pub fn named(mut self, name: &str) -> Self {
        self.last_mut().name = name.to_string();
        self
    }
}
