//! The condition language of the JSON pattern format.
//!
//! A condition filters the events a stage accepts, for example `type == 'fail' && ip =~ '^10\.'`
//! or, as an iterative condition that looks at the events already matched,
//! `type == 'B' && value > last(a.value)`. The full language is described in `docs/conditions.md`.
//!
//! Conditions are parsed once, when the pattern is built: field paths become slots of a shared
//! [`Schema`], stage names become stage ids and regexes are compiled. Each event is decoded once
//! into a [`Row`] (one [`Val`] per slot), and [`Condition::eval`] then reads slots by index.
//! Evaluation never fails: type mismatches give `null`, and a condition matches only if it
//! evaluates to `true`.
//!
//! ```
//! use cep_patterns::condition::{Condition, NoStageEvents, Schema};
//!
//! let stages = vec!["a".to_string(), "b".to_string()];
//! let mut schema = Schema::new();
//! let cond = Condition::parse("type == 'fail' && ip =~ '^10\\.'", &stages, &mut schema).unwrap();
//! let row = schema.extract(&serde_json::json!({"type": "fail", "ip": "10.0.0.7"}));
//! assert!(cond.eval(&row, &NoStageEvents));
//! ```

mod eval;
mod lexer;
mod parser;
mod value;

use std::fmt;
use std::sync::Arc;

pub use value::{Row, Schema, Val};

use eval::Expr;

/// The longest condition source accepted, in bytes.
pub const MAX_SOURCE_LEN: usize = 64 * 1024;
/// How deeply parentheses, lists, calls and unary operators may nest in a condition.
pub const MAX_NESTING: usize = parser::MAX_NESTING;
/// The largest compiled size of one regex, in bytes.
pub const REGEX_SIZE_LIMIT: usize = parser::REGEX_SIZE_LIMIT;

/// A condition that failed to parse: what is wrong, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("column {column}: {message}")]
pub struct ConditionError {
    /// The 1-based column, counted in characters, of the source where the problem is.
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

/// The events already matched to each stage of the current partial match, in match order.
pub trait StageEvents {
    /// Calls `f` on each event matched to `stage` (a stage id: its index in the pattern's stages).
    fn for_each(&self, stage: usize, f: &mut dyn FnMut(&Row));
}

/// A context with no matched events (for non-iterative evaluation): every stage is empty.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoStageEvents;

impl StageEvents for NoStageEvents {
    fn for_each(&self, _stage: usize, _f: &mut dyn FnMut(&Row)) {}
}

/// Stage `i` holds the rows of `self[i]`; stages beyond the slice are empty.
impl StageEvents for [Vec<Row>] {
    fn for_each(&self, stage: usize, f: &mut dyn FnMut(&Row)) {
        for row in self.get(stage).into_iter().flatten() {
            f(row);
        }
    }
}

/// A parsed and resolved condition. Cheap to clone (the tree is shared).
#[derive(Clone)]
pub struct Condition {
    expr: Arc<Expr>,
    source: Arc<str>,
    iterative: bool,
}

impl fmt::Debug for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Condition")
            .field("source", &self.source)
            .field("iterative", &self.iterative)
            .field("expr", &self.expr)
            .finish()
    }
}

impl Condition {
    /// Parses a condition. `stages` are the stage names of the pattern (a stage id is its index);
    /// `schema` receives the slots of the fields the condition reads. On error the schema is left
    /// as it was.
    pub fn parse(
        src: &str,
        stages: &[String],
        schema: &mut Schema,
    ) -> Result<Condition, ConditionError> {
        if src.len() > MAX_SOURCE_LEN {
            return Err(ConditionError {
                column: 1,
                message: format!(
                    "condition is too long ({} bytes; the limit is {MAX_SOURCE_LEN})",
                    src.len()
                ),
            });
        }
        let before = schema.len();
        let result = lexer::lex(src).and_then(|toks| parser::parse(src, &toks, stages, schema));
        match result {
            Ok(expr) => Ok(Condition {
                iterative: expr.is_iterative(),
                expr: Arc::new(expr),
                source: src.into(),
            }),
            Err(e) => {
                schema.truncate(before);
                Err(e.into_error(src))
            }
        }
    }

    /// Whether the condition is true for an event, given the events already matched.
    /// Anything other than the value `true` (including `null`) does not match.
    #[inline]
    pub fn eval(&self, row: &Row, ctx: &dyn StageEvents) -> bool {
        eval::test(&self.expr, row, ctx)
    }

    /// The value of the condition's expression, for callers that want more than a yes or no.
    pub fn value(&self, row: &Row, ctx: &dyn StageEvents) -> Val {
        eval::eval(&self.expr, row, ctx).into_owned()
    }

    /// Whether the condition uses `first`, `last`, `count`, `sum`, `avg`, `min` or `max`, and so
    /// depends on the events already matched.
    pub fn is_iterative(&self) -> bool {
        self.iterative
    }

    /// Whether the condition folded to the constant `true` (for example `always_true()` or `1 < 2`).
    pub fn is_always_true(&self) -> bool {
        matches!(*self.expr, Expr::Const(Val::Bool(true)))
    }

    /// Whether the condition folded to a constant that is not `true`, so it never matches.
    pub fn is_never_true(&self) -> bool {
        matches!(&*self.expr, Expr::Const(v) if *v != Val::Bool(true))
    }

    /// A condition that accepts every event.
    pub fn always_true() -> Condition {
        Condition {
            expr: Arc::new(Expr::Const(Val::Bool(true))),
            source: "true".into(),
            iterative: false,
        }
    }

    /// The source text the condition was parsed from.
    pub fn source(&self) -> &str {
        &self.source
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}
