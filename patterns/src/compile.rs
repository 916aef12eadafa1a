//! Compiles a [`PatternSpec`] onto the CEP engine: conditions are parsed against a shared
//! [`Schema`], stages become DSL calls in the order Flink's builder takes them, and every error
//! of the engine's own checks is reported at the JSON path of the stage it concerns.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use cep::{AfterMatchSkip, Context, Nfa, Pattern, WithinType};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::condition::{Condition, NoStageEvents, Row, Schema, StageEvents};
use crate::spec::{
    AfterMatchSpec, ContiguitySpec, PatternError, PatternErrors, PatternSpec, StageSpec, TimesSpec,
    WithinTypeSpec,
};

/// An event of the JSON path: its decoded field slots, and the event itself as JSON text.
///
/// Conditions read only the row; the text is what outputs, snapshots and introspection show.
/// Keeping it as text (checked once on the way in) means an event is never decoded into a
/// `serde_json::Value` tree on the hot path, and outputs share it instead of copying it.
#[derive(Debug, Clone)]
pub struct JsonEvent {
    /// One value per schema slot.
    pub row: Row,
    /// One JSON value, checked when the event came in (by serde_json, or by the engine's
    /// scanner, which accepts what serde_json accepts).
    text: Box<str>,
}

impl JsonEvent {
    /// An event from its row and its JSON text.
    pub fn new(row: Row, raw: Box<RawValue>) -> JsonEvent {
        JsonEvent {
            row,
            text: raw.into(),
        }
    }

    /// An event from its row and its text, which the caller has checked to be one JSON value
    /// without whitespace around it.
    pub(crate) fn checked(row: Row, text: &str) -> JsonEvent {
        JsonEvent {
            row,
            text: text.into(),
        }
    }

    /// The same event with another row (the schema grew, or it was read back from a snapshot).
    pub(crate) fn with_row(&self, row: Row) -> JsonEvent {
        JsonEvent {
            row,
            text: self.text.clone(),
        }
    }

    /// An event from a JSON value (written compactly), with its row.
    pub fn from_value(row: Row, value: &serde_json::Value) -> JsonEvent {
        let raw = serde_json::value::to_raw_value(value).expect("a Value always serializes");
        JsonEvent::new(row, raw)
    }

    /// The event as JSON text: as it came in when pushed as text (`push_str`: `cep run`,
    /// `cep bench`), or written compactly from the value it was pushed as (`push`: the HTTP and
    /// Kafka pipelines).
    pub fn json(&self) -> &str {
        &self.text
    }

    /// The event decoded into a JSON value. `Null` if the text is nested deeper than serde_json
    /// decodes (128 levels): the engine refuses such events, so only one made with
    /// [`JsonEvent::new`] or read back from an output can be.
    pub fn value(&self) -> serde_json::Value {
        serde_json::from_str(&self.text).unwrap_or(serde_json::Value::Null)
    }
}

/// Two events are equal when their JSON texts are.
impl PartialEq for JsonEvent {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

/// Serializes as the event's JSON. The text goes through serde_json's `RawValue`, which checks
/// it again: the outputs' own writer (`Output::write_json`) copies it instead, and this is for
/// the other serializers (snapshots, the service's views).
impl Serialize for JsonEvent {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let raw: &RawValue = serde_json::from_str(&self.text).map_err(serde::ser::Error::custom)?;
        raw.serialize(s)
    }
}

/// Reads any JSON value as an event's text (with an empty row: read back from an output, an
/// event is shown, not matched).
impl<'de> Deserialize<'de> for JsonEvent {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(JsonEvent::new(
            Row::empty(),
            Box::<RawValue>::deserialize(d)?,
        ))
    }
}

/// A validated pattern, compiled onto the engine.
pub struct CompiledPattern {
    spec: PatternSpec,
    nfa: Arc<Nfa<JsonEvent>>,
    /// The version the service gave it (0: unversioned, as in `cep run`).
    version: u64,
}

impl std::fmt::Debug for CompiledPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledPattern")
            .field("name", &self.spec.name)
            .finish()
    }
}

impl CompiledPattern {
    /// The pattern's name.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// The pattern as written.
    pub fn spec(&self) -> &PatternSpec {
        &self.spec
    }

    /// The automaton (for `cep check --explain`).
    pub fn nfa(&self) -> &Nfa<JsonEvent> {
        &self.nfa
    }

    /// The version the service gave it: 1 when registered, one more at each change (0:
    /// unversioned). Outputs and partial matches carry it.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The same pattern under another version.
    pub fn with_version(self, version: u64) -> CompiledPattern {
        CompiledPattern { version, ..self }
    }
}

/// Validates and compiles a pattern.
pub fn compile(spec: &PatternSpec) -> Result<CompiledPattern, PatternErrors> {
    let mut schema = Schema::new();
    let nfa = build(spec, &mut schema)?;
    Ok(CompiledPattern {
        spec: spec.clone(),
        nfa: Arc::new(nfa),
        version: 0,
    })
}

/// Adapts the engine's view of a partial match to the condition language's.
struct Matched<'c, 'a> {
    ctx: &'c Context<'a, JsonEvent>,
    names: &'c [String],
}

impl StageEvents for Matched<'_, '_> {
    fn for_each(&self, stage: usize, f: &mut dyn FnMut(&Row)) {
        if let Some(name) = self.names.get(stage) {
            for e in self.ctx.events(name) {
                f(&e.row);
            }
        }
    }
}

struct Builder<'s> {
    schema: &'s mut Schema,
    names: Arc<Vec<String>>,
    errors: Vec<PatternError>,
    paths: HashMap<String, String>,
}

fn leaf_names(stages: &[StageSpec], out: &mut Vec<String>) {
    for s in stages {
        match &s.group {
            Some(g) => leaf_names(g, out),
            None => out.push(s.name.clone()),
        }
    }
}

/// Builds the automaton of `spec`, with field slots interned into `schema`.
pub(crate) fn build(
    spec: &PatternSpec,
    schema: &mut Schema,
) -> Result<Nfa<JsonEvent>, PatternErrors> {
    let mut b = Builder {
        schema,
        names: Arc::new(Vec::new()),
        errors: Vec::new(),
        paths: HashMap::new(),
    };
    if spec.name.trim().is_empty() {
        b.err("name", None, "the pattern needs a non-empty name");
    }
    if spec.stages.is_empty() {
        b.err("stages", None, "a pattern needs at least one stage");
        return Err(PatternErrors(b.errors));
    }
    let mut names = Vec::new();
    leaf_names(&spec.stages, &mut names);
    b.names = Arc::new(names);
    let pattern = b.chain(&spec.stages, "stages");
    let Some(mut pattern) = pattern else {
        return Err(PatternErrors(b.errors));
    };
    if let Some(w) = spec.within {
        let kind = match spec.within_type.unwrap_or_default() {
            WithinTypeSpec::FirstAndLast => WithinType::FirstAndLast,
            WithinTypeSpec::PreviousAndCurrent => WithinType::PreviousAndCurrent,
        };
        pattern = pattern.within_type(Duration::from_millis(w.0 as u64), kind);
    } else if spec.within_type.is_some() {
        b.err("within_type", None, "within_type needs within");
    }
    pattern = pattern.skip(match spec.after_match.clone().unwrap_or_default() {
        AfterMatchSpec::NoSkip => AfterMatchSkip::NoSkip,
        AfterMatchSpec::SkipToNext => AfterMatchSkip::SkipToNext,
        AfterMatchSpec::SkipPastLastEvent => AfterMatchSkip::SkipPastLastEvent,
        AfterMatchSpec::SkipToFirst(s) => AfterMatchSkip::SkipToFirst(s),
        AfterMatchSpec::SkipToLast(s) => AfterMatchSkip::SkipToLast(s),
    });
    if !b.errors.is_empty() {
        return Err(PatternErrors(b.errors));
    }
    pattern.compile(&spec.name).map_err(|errs| {
        PatternErrors(
            errs.0
                .into_iter()
                .map(|e| {
                    let path = match &e.stage {
                        Some(s) => b.paths.get(s).cloned().unwrap_or_default(),
                        None if e.message.contains("skip strategy") => "after_match".to_string(),
                        None => String::new(),
                    };
                    PatternError {
                        path,
                        column: None,
                        message: e.message,
                    }
                })
                .collect(),
        )
    })
}

impl Builder<'_> {
    fn err(&mut self, path: &str, column: Option<usize>, message: &str) {
        self.errors.push(PatternError {
            path: path.to_string(),
            column,
            message: message.to_string(),
        });
    }

    fn condition(&mut self, src: &str, path: &str) -> Option<Arc<Condition>> {
        match Condition::parse(src, &self.names, self.schema) {
            Ok(c) => Some(Arc::new(c)),
            Err(e) => {
                self.err(path, Some(e.column), &e.message);
                None
            }
        }
    }

    /// Builds the stages of one chain (the pattern, or a group's inner pattern).
    fn chain(&mut self, stages: &[StageSpec], prefix: &str) -> Option<Pattern<JsonEvent>> {
        let mut pattern: Option<Pattern<JsonEvent>> = None;
        for (i, st) in stages.iter().enumerate() {
            let path = format!("{prefix}[{i}]");
            self.paths.insert(st.name.clone(), path.clone());
            if st.name.trim().is_empty() {
                self.err(
                    &format!("{path}.name"),
                    None,
                    "a stage needs a non-empty name",
                );
            }
            let group = match &st.group {
                Some(g) if g.is_empty() => {
                    self.err(
                        &format!("{path}.group"),
                        None,
                        "a group needs at least one stage",
                    );
                    None
                }
                Some(g) => self.chain(g, &format!("{path}.group")),
                None => None,
            };
            if st.group.is_some() && (st.where_.is_some() || st.until.is_some()) {
                self.err(
                    &path,
                    None,
                    "a group stage takes no where or until; put conditions on its inner stages",
                );
            }
            let contiguity = st.contiguity.unwrap_or(ContiguitySpec::FollowedBy);
            let mut p = match pattern.take() {
                None => {
                    if st.contiguity.is_some() {
                        self.err(&format!("{path}.contiguity"), None, "the first stage has no previous stage to be contiguous to; remove contiguity");
                    }
                    match group {
                        Some(g) => Pattern::begin_group(g).named(&st.name),
                        None if st.group.is_some() => Pattern::begin(&st.name),
                        None => Pattern::begin(&st.name),
                    }
                }
                Some(prev) => match (group, contiguity) {
                    (Some(g), ContiguitySpec::Next) => prev.next_group(g).named(&st.name),
                    (Some(g), ContiguitySpec::FollowedBy) => {
                        prev.followed_by_group(g).named(&st.name)
                    }
                    (Some(g), ContiguitySpec::FollowedByAny) => {
                        prev.followed_by_any_group(g).named(&st.name)
                    }
                    (Some(_), _) => {
                        self.err(
                            &format!("{path}.contiguity"),
                            None,
                            "a group cannot be a NOT stage",
                        );
                        prev.followed_by(&st.name)
                    }
                    (None, ContiguitySpec::Next) => prev.next(&st.name),
                    (None, ContiguitySpec::FollowedBy) => prev.followed_by(&st.name),
                    (None, ContiguitySpec::FollowedByAny) => prev.followed_by_any(&st.name),
                    (None, ContiguitySpec::NotNext) => prev.not_next(&st.name),
                    (None, ContiguitySpec::NotFollowedBy) => prev.not_followed_by(&st.name),
                },
            };
            if let Some(src) = &st.where_ {
                if let Some(c) = self.condition(src, &format!("{path}.where")) {
                    p = self.add_where(p, c).label(src);
                }
            }
            let quantifiers = [
                st.times.is_some(),
                st.one_or_more == Some(true),
                st.times_or_more.is_some(),
            ];
            if quantifiers.iter().filter(|q| **q).count() > 1 {
                self.err(
                    &path,
                    None,
                    "use only one of times, one_or_more and times_or_more",
                );
            }
            match st.times {
                Some(TimesSpec::Exactly(n)) => p = p.times(n),
                Some(TimesSpec::Range(a, b)) => p = p.times_range(a, b),
                None => {}
            }
            if st.one_or_more == Some(true) {
                p = p.one_or_more();
            }
            if let Some(n) = st.times_or_more {
                p = p.times_or_more(n);
            }
            if let Some(g) = st.max_gap {
                p = p.max_gap(Duration::from_millis(g.0 as u64));
            }
            if st.optional == Some(true) {
                p = p.optional();
            }
            if st.greedy == Some(true) {
                p = p.greedy();
            }
            if st.consecutive == Some(true) {
                p = p.consecutive();
            }
            if st.allow_combinations == Some(true) {
                p = p.allow_combinations();
            }
            if let Some(src) = &st.until {
                if let Some(c) = self.condition(src, &format!("{path}.until")) {
                    p = if c.is_iterative() {
                        p.until_ctx(self.over_partial_match(c))
                    } else {
                        p.until(move |e| c.eval(&e.row, &NoStageEvents))
                    }
                    .label(src);
                }
            }
            pattern = Some(p);
        }
        pattern
    }

    fn add_where(&self, p: Pattern<JsonEvent>, c: Arc<Condition>) -> Pattern<JsonEvent> {
        if let Some((guard, rest)) = c.split_guard() {
            // `type == 'B' && value > last(a.value)`: the event-only part once per event, the
            // rest per partial match, for the events it accepts. One leaf: one label.
            return p.where_ctx_guarded(
                move |e| guard.eval(&e.row, &NoStageEvents),
                self.over_partial_match(Arc::new(rest)),
            );
        }
        if c.is_iterative() {
            p.where_ctx(self.over_partial_match(c))
        } else {
            p.where_(move |e| c.eval(&e.row, &NoStageEvents))
        }
    }

    /// Iterative condition `c` as the engine calls it: over the event's row and the events of
    /// the partial match.
    fn over_partial_match(
        &self,
        c: Arc<Condition>,
    ) -> impl for<'a> Fn(&JsonEvent, &Context<'a, JsonEvent>) -> bool + Send + Sync + 'static {
        let names = self.names.clone();
        move |e: &JsonEvent, ctx: &Context<'_, JsonEvent>| {
            c.eval(&e.row, &Matched { ctx, names: &names })
        }
    }
}
