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

pub(crate) use value::{lookup_in, Field, FieldRef, Seg, TopFields};
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

/// Shows the source rather than the compiled tree (whose regexes print at great length).
impl fmt::Debug for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Condition")
            .field("source", &self.source)
            .field("iterative", &self.iterative)
            .finish_non_exhaustive()
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

    /// For an iterative condition that is a conjunction with conjuncts that read only the event
    /// (`type == 'B' && value > last(s.value)`): those conjuncts (the guard) and the rest. The
    /// condition is their conjunction (conditions are pure and never fail, so the order of the
    /// conjuncts does not change the answer): an event the guard refuses needs no partial match
    /// read.
    pub fn split_guard(&self) -> Option<(Condition, Condition)> {
        let Expr::And(xs) = &*self.expr else {
            return None;
        };
        if !self.iterative {
            return None;
        }
        let (guard, rest): (Vec<&Expr>, Vec<&Expr>) = xs.iter().partition(|x| !x.is_iterative());
        if guard.is_empty() {
            return None;
        }
        let part = |xs: Vec<&Expr>, iterative: bool| {
            let expr = match &xs[..] {
                [one] => (*one).clone(),
                _ => Expr::And(xs.into_iter().cloned().collect()),
            };
            Condition {
                expr: Arc::new(expr),
                source: self.source.clone(),
                iterative,
            }
        };
        Some((part(guard, false), part(rest, true)))
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{json, Value};

    fn stages() -> Vec<String> {
        vec!["a".into(), "b".into(), "my stage".into()]
    }

    fn value(src: &str, event: Value) -> Val {
        let mut schema = Schema::new();
        let c =
            Condition::parse(src, &stages(), &mut schema).unwrap_or_else(|e| panic!("{src}: {e}"));
        c.value(&schema.extract(&event), &NoStageEvents)
    }

    fn matches(src: &str, event: Value) -> bool {
        let mut schema = Schema::new();
        let c =
            Condition::parse(src, &stages(), &mut schema).unwrap_or_else(|e| panic!("{src}: {e}"));
        let row = schema.extract(&event);
        let b = c.eval(&row, &NoStageEvents);
        // `eval` and `value` must agree.
        assert_eq!(b, c.value(&row, &NoStageEvents) == Val::Bool(true), "{src}");
        b
    }

    fn err(src: &str) -> ConditionError {
        Condition::parse(src, &stages(), &mut Schema::new()).expect_err(src)
    }

    fn s(x: &str) -> Val {
        Val::Str(x.into())
    }

    #[test]
    fn condition_is_send_sync_clone() {
        fn check<T: Send + Sync + Clone + fmt::Debug>() {}
        check::<Condition>();
        check::<Schema>();
        check::<Row>();
        check::<Val>();
    }

    #[test]
    fn literals() {
        let e = json!({});
        assert_eq!(value("3", e.clone()), Val::Int(3));
        assert_eq!(value("-2.5", e.clone()), Val::Float(-2.5));
        assert_eq!(value("1e3", e.clone()), Val::Float(1000.0));
        assert_eq!(value("1.5E-1", e.clone()), Val::Float(0.15));
        assert_eq!(value(r#"'a\'b'"#, e.clone()), s("a'b"));
        assert_eq!(value(r#""a\"b\n\t\\""#, e.clone()), s("a\"b\n\t\\"));
        assert_eq!(value(r"'\u00e9\u{1F600}'", e.clone()), s("é😀"));
        assert_eq!(value(r"'\d\.'", e.clone()), s(r"\d\."));
        assert_eq!(value("true", e.clone()), Val::Bool(true));
        assert_eq!(value("false", e.clone()), Val::Bool(false));
        assert_eq!(value("null", e.clone()), Val::Null);
        assert_eq!(
            value("[1, 'x', [true], null]", e.clone()),
            Val::List(
                vec![
                    Val::Int(1),
                    s("x"),
                    Val::List(vec![Val::Bool(true)].into()),
                    Val::Null
                ]
                .into()
            )
        );
        assert_eq!(value("[]", e.clone()), Val::List(Vec::new().into()));
        // Integers beyond i64 are read as floats.
        assert_eq!(
            value("9223372036854775808", e),
            Val::Float(9223372036854775808.0)
        );
    }

    #[test]
    fn fields_nested_paths_and_indices() {
        let ev = json!({
            "type": "A", "user": {"id": 7, "name": null},
            "items": [{"price": 2.5}, {"price": 10}],
            "weird-name": 1, "h": {"content-type": "json", "in": 3}
        });
        assert_eq!(value("type", ev.clone()), s("A"));
        assert_eq!(value("user.id", ev.clone()), Val::Int(7));
        assert_eq!(value("items[0].price", ev.clone()), Val::Float(2.5));
        assert_eq!(value("items[1].price", ev.clone()), Val::Int(10));
        assert_eq!(value("items[2].price", ev.clone()), Val::Null);
        assert_eq!(value("field('weird-name')", ev.clone()), Val::Int(1));
        assert_eq!(value("h['content-type']", ev.clone()), s("json"));
        assert_eq!(value("h.in", ev.clone()), Val::Int(3));
        assert_eq!(value("len(items)", ev.clone()), Val::Int(2));
        assert_eq!(value("len(user)", ev.clone()), Val::Int(2));
        // Missing fields, and paths through the wrong kind of value, read as null.
        assert_eq!(value("nope", ev.clone()), Val::Null);
        assert_eq!(value("user.id.x", ev.clone()), Val::Null);
        assert_eq!(value("type[0]", ev.clone()), Val::Null);
        assert_eq!(value("items.price", ev.clone()), Val::Null);
        assert!(matches("nope == null", ev.clone()));
        assert!(matches("user.name == null", ev));
    }

    #[test]
    fn exists_distinguishes_missing_from_null() {
        let ev = json!({"a": null, "b": {"c": 0}});
        assert!(matches("exists(a)", ev.clone()));
        assert!(matches("exists(b.c)", ev.clone()));
        assert!(!matches("exists(b.d)", ev.clone()));
        assert!(!matches("exists(z)", ev.clone()));
        assert!(matches("!exists(z)", ev.clone()));
        assert!(matches("exists(field('a'))", ev));
    }

    #[test]
    fn comparisons_numbers_strings_and_mixed_types() {
        let ev = json!({"i": 3, "f": 3.0, "g": 2.5, "s": "b", "t": true, "n": null, "l": [1, 2]});
        for (src, want) in [
            ("i == 3", true),
            ("i == f", true),
            ("1 == 1.0", true),
            ("i != f", false),
            ("i > g", true),
            ("g < i", true),
            ("i >= f && i <= f", true),
            ("s == 'b'", true),
            ("s != 'b'", false),
            ("s > 'a' && s < 'c'", true),
            ("'B' < 'a'", true),
            ("'10' < '9'", true),
            ("t == true", true),
            ("t != false", true),
            ("l == [1, 2.0]", true),
            ("l == [2, 1]", false),
            // Different types are never equal, and never ordered.
            ("i == '3'", false),
            ("i != '3'", true),
            ("t == 1", false),
            ("i < '4'", false),
            ("i > '4'", false),
            ("t > false", false),
            ("n < 1", false),
            ("n > 1", false),
            ("n >= n", false),
            ("n == null", true),
            ("n != null", false),
            ("missing == null", true),
            ("missing < 1 || missing >= 1", false),
            // Exact comparison of large integers with floats.
            ("9007199254740993 > 9007199254740992.0", true),
            ("9007199254740993 == 9007199254740992.0", false),
            (
                "-9223372036854775807 - 1 < -9223372036854775808.0 + 0.5",
                false,
            ),
            ("9223372036854775807 < 9223372036854775808.0", true),
        ] {
            assert_eq!(matches(src, ev.clone()), want, "{src}");
        }
    }

    #[test]
    fn logic_and_non_booleans() {
        let ev = json!({"t": true, "f": false, "n": null, "i": 1, "s": "x"});
        for (src, want) in [
            ("t && t", true),
            ("t && f", false),
            ("f || t", true),
            ("f || f", false),
            ("t and not f", true),
            ("f or t", true),
            ("!f", true),
            ("!t", false),
            ("not not t", true),
            // A non-boolean counts as false in && and ||, and never matches on its own.
            ("i", false),
            ("s", false),
            ("n || t", true),
            ("i && t", false),
            ("i || s", false),
            ("!n", false),
            ("!i", false),
            ("!(n || f)", true),
            ("t || missing.x > 3", true),
        ] {
            assert_eq!(matches(src, ev.clone()), want, "{src}");
        }
        assert_eq!(value("!n", ev.clone()), Val::Null);
        assert_eq!(value("!s", ev.clone()), Val::Null);
        assert_eq!(value("i && t", ev.clone()), Val::Bool(false));
        assert_eq!(value("n || n", ev), Val::Bool(false));
    }

    #[test]
    fn precedence() {
        let e = json!({"a": 1, "b": 2, "c": 3});
        assert_eq!(value("1 + 2 * 3", e.clone()), Val::Int(7));
        assert_eq!(value("(1 + 2) * 3", e.clone()), Val::Int(9));
        assert_eq!(value("10 - 4 - 3", e.clone()), Val::Int(3));
        assert_eq!(value("12 / 3 / 2", e.clone()), Val::Int(2));
        assert_eq!(value("-a * b", e.clone()), Val::Int(-2));
        assert_eq!(value("- - a", e.clone()), Val::Int(1));
        assert_eq!(value("7 % 4 * 2", e.clone()), Val::Int(6));
        assert!(matches("a + b == c", e.clone()));
        assert!(matches("a < b && b < c || a > c", e.clone()));
        assert!(matches("a > c || a < b && b < c", e.clone()));
        assert!(!matches("(a > c || a < b) && b > c", e.clone()));
        // `!` binds tighter than comparison: `!a == b` is `(!a) == b`.
        assert_eq!(value("!true == false", e), Val::Bool(true));
    }

    #[test]
    fn arithmetic() {
        let e = json!({"i": 7, "f": 0.5, "s": "x", "big": 9223372036854775807i64});
        for (src, want) in [
            ("i + 1", Val::Int(8)),
            ("i - 10", Val::Int(-3)),
            ("i * 2", Val::Int(14)),
            ("i / 2", Val::Float(3.5)),
            ("i / 7", Val::Int(1)),
            ("i % 4", Val::Int(3)),
            ("-i % 4", Val::Int(-3)),
            ("i + f", Val::Float(7.5)),
            ("f * 4", Val::Float(2.0)),
            ("7.5 % 2", Val::Float(1.5)),
            ("-f", Val::Float(-0.5)),
            // Division by zero, and non-numbers, give null.
            ("i / 0", Val::Null),
            ("i % 0", Val::Null),
            ("f / 0.0", Val::Null),
            ("i + s", Val::Null),
            ("s * 2", Val::Null),
            ("-s", Val::Null),
            ("i + null", Val::Null),
            ("i + missing", Val::Null),
            ("true + 1", Val::Null),
            // Integer overflow promotes to float.
            ("big + 1", Val::Float(9223372036854775808.0)),
            ("big * 2", Val::Float(18446744073709551614.0)),
            ("-big - 2", Val::Float(-9223372036854775809.0)),
            ("(-big - 1) % -1", Val::Int(0)),
            ("(-big - 1) / -1", Val::Float(9223372036854775808.0)),
            ("-(-big - 1)", Val::Float(9223372036854775808.0)),
            // Results that would be infinite are null.
            ("1e308 * 10", Val::Null),
        ] {
            assert_eq!(value(src, e.clone()), want, "{src}");
        }
    }

    #[test]
    fn membership() {
        let e = json!({"type": "B", "tags": ["x", "y", 3], "n": 3.0, "s": "abc", "o": {"x": 1}});
        for (src, want) in [
            ("type in ['A', 'B']", true),
            ("type in ['A', 'C']", false),
            ("type not in ['A', 'C']", true),
            ("type not in ['A', 'B']", false),
            ("'x' in tags", true),
            ("'z' in tags", false),
            ("n in tags", true),
            ("3 in [1.0, 3.0]", true),
            ("null in [null]", true),
            ("missing in ['a']", false),
            ("[1] in [[1], 2]", true),
            ("type in [type, 'z']", true),
            // A right side that is not a list gives null: neither `in` nor `not in` matches.
            ("'a' in s", false),
            ("'a' not in s", false),
            ("'x' in o", false),
            ("'x' in missing", false),
            ("'x' not in missing", false),
        ] {
            assert_eq!(matches(src, e.clone()), want, "{src}");
        }
    }

    #[test]
    fn membership_in_long_string_lists() {
        let list = "['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j']";
        for (ev, want) in [
            (json!({"t": "e"}), Some(true)),
            (json!({"t": "z"}), Some(false)),
            (json!({"t": 1}), Some(false)),
            (json!({}), Some(false)),
        ] {
            assert_eq!(
                matches(&format!("t in {list}"), ev.clone()),
                want == Some(true)
            );
            assert_eq!(
                matches(&format!("t not in {list}"), ev.clone()),
                want == Some(false)
            );
        }
        assert!(matches(&format!("'j' in {list}"), json!({})));
        assert!(!matches(&format!("lower(t) in {list}"), json!({"t": "Q"})));
        assert!(matches(&format!("lower(t) in {list}"), json!({"t": "J"})));
    }

    #[test]
    fn regex_search() {
        let e = json!({"ip": "10.1.2.3", "ip2": "192.10.0.1", "n": 10, "msg": "Login FAILED"});
        for (src, want) in [
            (r"ip =~ '^10\.'", true),
            (r"ip2 =~ '^10\.'", false),
            (r"ip2 =~ '10\.'", true),
            (r"ip2 !~ '^10\.'", true),
            (r"ip !~ '^10\.'", false),
            ("msg =~ '(?i)failed'", true),
            ("msg =~ 'failed'", false),
            (r"ip =~ '\d+\.\d+'", true),
            ("ip =~ ''", true),
            // Non-strings give null: neither =~ nor !~ matches.
            ("n =~ '1'", false),
            ("n !~ '1'", false),
            ("missing =~ '.*'", false),
            ("missing !~ 'x'", false),
            (r"'10.0.0.1' =~ '^10\.'", true),
        ] {
            assert_eq!(matches(src, e.clone()), want, "{src}");
        }
    }

    #[test]
    fn functions() {
        let e = json!({"s": "Hello", "l": ["a", 1], "o": {"k": 1, "j": 2}, "n": -4, "f": -2.5, "u": "héllo"});
        for (src, want) in [
            ("contains(s, 'ell')", Val::Bool(true)),
            ("contains(s, 'xyz')", Val::Bool(false)),
            ("contains(l, 1.0)", Val::Bool(true)),
            ("contains(l, 'b')", Val::Bool(false)),
            ("contains(s, 1)", Val::Null),
            ("contains(n, 1)", Val::Null),
            ("starts_with(s, 'He')", Val::Bool(true)),
            ("starts_with(s, 'lo')", Val::Bool(false)),
            ("ends_with(s, 'lo')", Val::Bool(true)),
            ("ends_with(n, 'lo')", Val::Null),
            ("lower(s)", s("hello")),
            ("upper(s)", s("HELLO")),
            ("upper(u)", s("HÉLLO")),
            ("lower(n)", Val::Null),
            ("len(s)", Val::Int(5)),
            ("len(u)", Val::Int(5)),
            ("len(l)", Val::Int(2)),
            ("len(o)", Val::Int(2)),
            ("len(n)", Val::Null),
            ("len(missing)", Val::Null),
            ("abs(n)", Val::Int(4)),
            ("abs(f)", Val::Float(2.5)),
            ("abs(s)", Val::Null),
            (
                "abs(-9223372036854775807 - 1)",
                Val::Float(9223372036854775808.0),
            ),
            ("lower(s) == 'hello' && len(l) == 2", Val::Bool(true)),
        ] {
            assert_eq!(value(src, e.clone()), want, "{src}");
        }
    }

    /// Events matched so far, per stage.
    struct Matched(Vec<Vec<Row>>);

    impl StageEvents for Matched {
        fn for_each(&self, stage: usize, f: &mut dyn FnMut(&Row)) {
            self.0[..].for_each(stage, f)
        }
    }

    #[test]
    fn iterative_aggregates() {
        let st = stages();
        let mut schema = Schema::new();
        let parse = |src: &str, schema: &mut Schema| {
            Condition::parse(src, &st, schema).unwrap_or_else(|e| panic!("{src}: {e}"))
        };
        let conds: Vec<(&str, Condition)> = [
            "first(a.value)",
            "last(a.value)",
            "count(a)",
            "sum(a.value)",
            "avg(a.value)",
            "min(a.value)",
            "max(a.value)",
            "count(b)",
            "first(b.value)",
            "sum(b.value)",
            "avg(b.value)",
            "min(b.value)",
            "max(b.value)",
            "count('my stage')",
            "last('my stage'.x.y)",
        ]
        .into_iter()
        .map(|src| (src, parse(src, &mut schema)))
        .collect();
        let a: Vec<Row> = [
            json!({"value": 5}),
            json!({"value": "skip"}),
            json!({"value": 2.5}),
            json!({}),
            json!({"value": 9}),
        ]
        .iter()
        .map(|e| schema.extract(e))
        .collect();
        let third = vec![schema.extract(&json!({"x": {"y": "deep"}}))];
        let ctx = Matched(vec![a, Vec::new(), third]);
        let row = schema.extract(&json!({}));
        let got: Vec<(&str, Val)> = conds
            .iter()
            .map(|(src, c)| (*src, c.value(&row, &ctx)))
            .collect();
        let want = vec![
            ("first(a.value)", Val::Int(5)),
            ("last(a.value)", Val::Int(9)),
            ("count(a)", Val::Int(5)),
            ("sum(a.value)", Val::Float(16.5)),
            ("avg(a.value)", Val::Float(5.5)),
            ("min(a.value)", Val::Float(2.5)),
            ("max(a.value)", Val::Int(9)),
            // An empty stage: null, and count 0.
            ("count(b)", Val::Int(0)),
            ("first(b.value)", Val::Null),
            ("sum(b.value)", Val::Null),
            ("avg(b.value)", Val::Null),
            ("min(b.value)", Val::Null),
            ("max(b.value)", Val::Null),
            ("count('my stage')", Val::Int(1)),
            ("last('my stage'.x.y)", s("deep")),
        ];
        assert_eq!(got, want);
        for (_, c) in &conds {
            assert!(c.is_iterative());
        }
        // Integer sums stay integers; avg is a float.
        let ints = Matched(vec![vec![
            Row::from_vals(vec![Val::Int(2)]),
            Row::from_vals(vec![Val::Int(4)]),
        ]]);
        let mut schema = Schema::new();
        let sum = Condition::parse("sum(a.v)", &st, &mut schema).unwrap();
        assert_eq!(sum.value(&Row::empty(), &ints), Val::Int(6));
        let avg = Condition::parse("avg(a.v)", &st, &mut schema).unwrap();
        assert_eq!(avg.value(&Row::empty(), &ints), Val::Float(3.0));
        // Sums that overflow promote to float.
        let big = Matched(vec![vec![
            Row::from_vals(vec![Val::Int(i64::MAX)]),
            Row::from_vals(vec![Val::Int(1)]),
        ]]);
        assert_eq!(
            sum.value(&Row::empty(), &big),
            Val::Float(9223372036854775808.0)
        );
    }

    #[test]
    fn iterative_condition_against_current_event() {
        let st = stages();
        let mut schema = Schema::new();
        let c = Condition::parse("type == 'B' && value > last(a.value)", &st, &mut schema).unwrap();
        assert!(c.is_iterative());
        let a = vec![schema.extract(&json!({"type": "A", "value": 10}))];
        let ctx = Matched(vec![a, Vec::new(), Vec::new()]);
        assert!(c.eval(&schema.extract(&json!({"type": "B", "value": 11})), &ctx));
        assert!(!c.eval(&schema.extract(&json!({"type": "B", "value": 10})), &ctx));
        assert!(!c.eval(
            &schema.extract(&json!({"type": "B", "value": 11})),
            &NoStageEvents
        ));
        let plain = Condition::parse("type == 'B'", &st, &mut schema).unwrap();
        assert!(!plain.is_iterative());
    }

    #[test]
    fn schema_shares_slots_across_conditions() {
        let st = stages();
        let mut schema = Schema::new();
        Condition::parse("user.id == 1 && type == 'x'", &st, &mut schema).unwrap();
        Condition::parse("type == 'y' || last(a.user.id) > 0", &st, &mut schema).unwrap();
        assert_eq!(schema.len(), 2);
        assert_eq!(schema.slot_for("type").unwrap(), 1);
        assert_eq!(schema.slot_for("user .id").unwrap(), 0);
        assert_eq!(schema.slot_for("ts").unwrap(), 2);
        // A failed parse leaves the schema as it was.
        Condition::parse("brand_new == 1 && (", &st, &mut schema).unwrap_err();
        assert_eq!(schema.len(), 3);
        // Rows decoded before the schema grew read the new slots as missing.
        let old = Schema::new().extract(&json!({"ts": 5}));
        assert_eq!(old.get(2), &Val::Null);
    }

    #[test]
    fn constant_folding() {
        let st = stages();
        let mut schema = Schema::new();
        let p = |src: &str, schema: &mut Schema| Condition::parse(src, &st, schema).unwrap();
        assert!(p("1 < 2", &mut schema).is_always_true());
        assert!(p("'a' in ['a', 'b'] && true", &mut schema).is_always_true());
        assert!(p("x == 1 || true", &mut schema).is_always_true());
        assert!(p("1 > 2", &mut schema).is_never_true());
        assert!(p("x == 1 && 3", &mut schema).is_never_true());
        assert!(!p("x == 1 && true", &mut schema).is_always_true());
        assert!(Condition::always_true().is_always_true());
        assert!(Condition::always_true().eval(&Row::empty(), &NoStageEvents));
        let c = p("x =~ 'a'", &mut schema);
        assert_eq!(
            format!("{c:?}"),
            r#"Condition { source: "x =~ 'a'", iterative: false, .. }"#
        );
        assert_eq!(c.to_string(), "x =~ 'a'");
        assert_eq!(c.source(), "x =~ 'a'");
    }

    fn err_at(src: &str, column: usize, needle: &str) {
        let e = err(src);
        assert_eq!(e.column, column, "{src}: {e}");
        assert!(e.message.contains(needle), "{src}: {e}");
        assert!(e.to_string().starts_with(&format!("column {column}: ")));
    }

    #[test]
    fn errors_say_what_and_where() {
        err_at("", 1, "empty condition");
        err_at("   ", 1, "empty condition");
        err_at("type == ", 9, "expected a value, found end of input");
        err_at("type == 'a", 9, "unterminated string");
        err_at("type = 'a'", 6, "use '=='");
        err_at("a & b", 3, "'&&'");
        err_at("a | b", 3, "'||'");
        err_at("a == 1 b", 8, "unexpected 'b' after a complete expression");
        err_at("(a == 1", 8, "expected ')'");
        err_at("a == 1)", 7, "unexpected ')'");
        err_at("foo(1)", 1, "unknown function 'foo'");
        err_at(
            "x == lower(1, 2)",
            6,
            "lower() takes 1 argument but 2 were given",
        );
        err_at(
            "contains(x)",
            1,
            "contains() takes 2 arguments but 1 were given",
        );
        err_at(
            "last(zz.value) > 1",
            6,
            "unknown stage 'zz' in last() (known stages: a, b, my stage)",
        );
        err_at("count(a.x)", 8, "count() takes a stage name only");
        err_at("sum(a)", 6, "sum() needs a field");
        err_at("exists(1)", 8, "exists() takes a field path");
        err_at("ip =~ '(unclosed'", 7, "invalid regex");
        err_at("ip =~ x", 7, "must be a string literal");
        err_at("ip =~ ('a')", 7, "must be a string literal");
        err_at("a < b < c", 7, "cannot be chained");
        err_at("a == b != c", 8, "cannot be chained");
        err_at("é == 1", 1, "unexpected character 'é'");
        err_at("'é' == 1 #", 10, "unexpected character '#'");
        err_at("x == 3abc", 6, "invalid number");
        err_at("x == 1e", 6, "exponent");
        err_at("x == 1e999", 6, "out of range");
        err_at("items[-1]", 7, "array index");
        err_at("a.", 3, "expected a field name after '.'");
        err_at("[1, 2", 6, "expected ',' or ']'");
        err_at("field(x)", 7, "field() takes a string literal");
        err_at(r"'\u12'", 2, "invalid \\u escape");
        err_at(r"'\u{D800}'", 2, "not a character");
        // Columns count characters, not bytes.
        err_at("'ééé' == x y", 12, "unexpected 'y'");
    }

    #[test]
    fn unknown_stage_without_stages() {
        let e = Condition::parse("count(a) > 1", &[], &mut Schema::new()).unwrap_err();
        assert_eq!(e.column, 7);
        assert!(e.message.contains("the pattern has no stages"), "{e}");
    }

    #[test]
    fn regex_error_includes_regex_text() {
        let e = err("x =~ 'a{'");
        assert!(e.message.contains("invalid regex \"a{\""), "{e}");
        assert!(e.message.len() > "invalid regex \"a{\": ".len(), "{e}");
        // Regexes that compile too large are refused with the limit's error.
        let e = err(r"x =~ '\w{1000}\w{1000}\w{1000}'");
        assert_eq!(e.column, 6);
        assert!(e.message.contains("invalid regex"), "{e}");
    }

    #[test]
    fn limits() {
        let deep_parens = format!("{}1{}", "(".repeat(1000), ")".repeat(1000));
        err_at(&deep_parens, 65, "nested too deeply");
        let deep_not = format!("{}true", "!".repeat(10_000));
        assert!(err(&deep_not).message.contains("nested too deeply"));
        let deep_list = format!("{}{}", "[".repeat(500), "]".repeat(500));
        assert!(err(&deep_list).message.contains("nested too deeply"));
        let long_chain = format!("x{}", " + x".repeat(1000));
        assert!(err(&long_chain).message.contains("too deep"));
        let ok_chain = format!("x{}", " + x".repeat(200));
        Condition::parse(&ok_chain, &[], &mut Schema::new()).unwrap();
        // Long && / || chains are flat, so they have no such limit.
        let wide = format!("x == 0{}", " || x == 1".repeat(3000));
        Condition::parse(&wide, &[], &mut Schema::new()).unwrap();
        let too_long = "x".repeat(MAX_SOURCE_LEN + 1);
        err_at(&too_long, 1, "too long");
    }

    #[test]
    fn slot_for_paths() {
        let mut schema = Schema::new();
        assert_eq!(schema.slot_for("user.id").unwrap(), 0);
        assert_eq!(schema.slot_for("items[0].price").unwrap(), 1);
        assert_eq!(schema.slot_for("field('a b')['c-d'][2]").unwrap(), 2);
        assert_eq!(schema.slot_for("user.id").unwrap(), 0);
        assert_eq!(schema.path(0).as_deref(), Some("user.id"));
        assert_eq!(schema.path(1).as_deref(), Some("items[0].price"));
        assert_eq!(schema.path(2).as_deref(), Some(r#"field("a b")["c-d"][2]"#));
        assert_eq!(schema.path(3), None);
        let e = schema.slot_for("user.id == 1").unwrap_err();
        assert_eq!(e.column, 9);
        let e = schema.slot_for("").unwrap_err();
        assert!(e.message.contains("empty field path"));
        let e = schema.slot_for("1").unwrap_err();
        assert!(e.message.contains("expected a field name"));
        let row = schema.extract(
            &json!({"user": {"id": "u1"}, "items": [{"price": 3}], "a b": {"c-d": [0, 1, 2]}}),
        );
        assert_eq!(row.get(0), &s("u1"));
        assert_eq!(row.get(1), &Val::Int(3));
        assert_eq!(row.get(2), &Val::Int(2));
        assert_eq!(row.get(99), &Val::Null);
        assert!(row.is_present(2) && !row.is_present(99));
    }

    /// Tokens of the language, to build token soups from.
    const TOKENS: &[&str] = &[
        "type",
        "user",
        ".",
        "id",
        "items",
        "[",
        "]",
        "0",
        "1",
        "-2.5",
        "1e3",
        "'a'",
        "\"b\"",
        "'^10\\.'",
        "true",
        "false",
        "null",
        "(",
        ")",
        ",",
        "==",
        "!=",
        "<",
        "<=",
        ">",
        ">=",
        "&&",
        "||",
        "!",
        "and",
        "or",
        "not",
        "in",
        "=~",
        "!~",
        "+",
        "-",
        "*",
        "/",
        "%",
        "contains",
        "starts_with",
        "ends_with",
        "lower",
        "upper",
        "len",
        "abs",
        "exists",
        "field",
        "first",
        "last",
        "count",
        "sum",
        "avg",
        "min",
        "max",
        "a",
        "b",
        "zz",
        "'",
        "\"",
        "\\",
        " ",
        "9223372036854775807",
        "0.0",
        "[]",
    ];

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            "[a-c'\\\\.]{0,4}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 32, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map("type|user|id|items|price|a|b|value|x", inner, 0..5)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    const CONDITIONS: &[&str] = &[
        "type == 'a' && user.id > 3 || items[0].price <= -2.5",
        "type in ['a', 'b', 1] && not (user in items)",
        "user.id =~ '^1' || type !~ 'b'",
        "contains(items, type) && starts_with(type, 'a') || ends_with(user, 'x')",
        "lower(type) == upper(type) || len(items) % 2 == 1 && abs(user.id) * 2 / 3 - 1 + 0.5 >= 0",
        "exists(items[1].price) && !exists(x)",
        "value > last(a.value) && value < first(a.value) + sum(b.value) - avg(a.value)",
        "count(a) > count(b) || min(a.x) == max(b.x) || -value == value / 0 % value",
        "items[0] == items[1] && items != [1, 2] && user.id <= type",
    ];

    proptest! {
        #[test]
        fn parser_never_panics_on_arbitrary_strings(src in "\\PC{0,64}") {
            let _ = Condition::parse(&src, &stages(), &mut Schema::new());
            let _ = Schema::new().slot_for(&src);
        }

        #[test]
        fn parser_never_panics_on_token_soups(toks in prop::collection::vec(prop::sample::select(TOKENS), 0..24)) {
            let src = toks.join(" ");
            let tight = toks.concat();
            for src in [src, tight] {
                let mut schema = Schema::new();
                if let Ok(c) = Condition::parse(&src, &stages(), &mut schema) {
                    // Whatever parses also evaluates, on any row.
                    let row = schema.extract(&json!({"type": "a", "user": {"id": 3}, "items": [1, 2]}));
                    let _ = c.eval(&row, &NoStageEvents);
                    let ctx = Matched(vec![vec![row.clone()], vec![row.clone(), row.clone()], vec![]]);
                    let _ = c.eval(&row, &ctx);
                } else {
                    prop_assert_eq!(schema.len(), 0);
                }
            }
        }

        #[test]
        fn eval_never_panics_on_arbitrary_events(events in prop::collection::vec(arb_json(), 1..4)) {
            let mut schema = Schema::new();
            let conds: Vec<Condition> = CONDITIONS
                .iter()
                .map(|src| Condition::parse(src, &stages(), &mut schema).unwrap())
                .collect();
            let rows: Vec<Row> = events.iter().map(|e| schema.extract(e)).collect();
            let ctx = Matched(vec![rows.clone(), rows.clone(), Vec::new()]);
            for c in &conds {
                for row in &rows {
                    let b = c.eval(row, &ctx);
                    prop_assert_eq!(b, c.value(row, &ctx) == Val::Bool(true));
                }
            }
        }
    }
}
