//! The compiled form of a condition and its evaluation.
//!
//! Evaluation borrows field values and constants from the row and the tree (`Cow::Borrowed`) and only
//! builds values for computed results, so a typical `field == 'literal'` test allocates nothing.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::sync::Arc;

use regex_automata::meta::Regex;
use rustc_hash::FxHashSet;

use super::value::{num_cmp, Row, Val};
use super::StageEvents;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ArithOp {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Func {
    Contains,
    StartsWith,
    EndsWith,
    Lower,
    Upper,
    Len,
    Abs,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AggOp {
    First,
    Last,
    Count,
    Sum,
    Avg,
    Min,
    Max,
}

/// A compiled condition: field reads are slot indices, stages are stage ids, regexes are compiled.
#[derive(Clone, Debug)]
pub(crate) enum Expr {
    Const(Val),
    Field(usize),
    Exists(usize),
    List(Box<[Expr]>),
    Not(Box<Expr>),
    Neg(Box<Expr>),
    And(Box<[Expr]>),
    Or(Box<[Expr]>),
    Cmp(CmpOp, Box<Expr>, Box<Expr>),
    Arith(ArithOp, Box<Expr>, Box<Expr>),
    In {
        negated: bool,
        needle: Box<Expr>,
        haystack: Box<Expr>,
    },
    /// `in` / `not in` against a constant list of many strings, looked up by hash.
    InStrs {
        negated: bool,
        needle: Box<Expr>,
        set: Arc<FxHashSet<Arc<str>>>,
    },
    Regex {
        negated: bool,
        subject: Box<Expr>,
        regex: Regex,
    },
    Call(Func, Box<[Expr]>),
    /// An aggregate over the events matched to `stage`; `slot` is unused by `count`.
    Agg {
        op: AggOp,
        stage: usize,
        slot: usize,
    },
}

impl Expr {
    /// Whether this node's value depends only on its children (no row, no matched events) and all
    /// its children are constants, so that it can be evaluated once at parse time.
    pub(crate) fn is_foldable(&self) -> bool {
        let c = |e: &Expr| matches!(e, Expr::Const(_));
        match self {
            Expr::Const(_) | Expr::Field(_) | Expr::Exists(_) | Expr::Agg { .. } => false,
            Expr::Not(x) | Expr::Neg(x) => c(x),
            Expr::Regex { subject, .. }
            | Expr::InStrs {
                needle: subject, ..
            } => c(subject),
            Expr::Cmp(_, a, b) | Expr::Arith(_, a, b) => c(a) && c(b),
            Expr::In {
                needle, haystack, ..
            } => c(needle) && c(haystack),
            Expr::List(xs) | Expr::And(xs) | Expr::Or(xs) | Expr::Call(_, xs) => xs.iter().all(c),
        }
    }

    pub(crate) fn is_iterative(&self) -> bool {
        match self {
            Expr::Agg { .. } => true,
            Expr::Const(_) | Expr::Field(_) | Expr::Exists(_) => false,
            Expr::Not(x) | Expr::Neg(x) => x.is_iterative(),
            Expr::Regex { subject, .. }
            | Expr::InStrs {
                needle: subject, ..
            } => subject.is_iterative(),
            Expr::Cmp(_, a, b) | Expr::Arith(_, a, b) => a.is_iterative() || b.is_iterative(),
            Expr::In {
                needle, haystack, ..
            } => needle.is_iterative() || haystack.is_iterative(),
            Expr::List(xs) | Expr::And(xs) | Expr::Or(xs) | Expr::Call(_, xs) => {
                xs.iter().any(Expr::is_iterative)
            }
        }
    }
}

fn bool_or_null(b: Option<bool>) -> Val {
    b.map_or(Val::Null, Val::Bool)
}

/// Whether `e` evaluates to `true`. Avoids building values for the boolean operators.
pub(crate) fn test(e: &Expr, row: &Row, ctx: &dyn StageEvents) -> bool {
    match e {
        Expr::Const(v) => matches!(v, Val::Bool(true)),
        Expr::And(xs) => xs.iter().all(|x| test(x, row, ctx)),
        Expr::Or(xs) => xs.iter().any(|x| test(x, row, ctx)),
        Expr::Not(x) => matches!(*eval(x, row, ctx), Val::Bool(false)),
        Expr::Cmp(op, a, b) => match (&**a, &**b) {
            // The usual shape (`type == 'fail'`, `value > 10`): what `eval` would borrow,
            // read directly.
            (Expr::Field(slot), Expr::Const(v)) => compare(*op, row.get(*slot), v),
            (Expr::Const(v), Expr::Field(slot)) => compare(*op, v, row.get(*slot)),
            _ => compare(*op, &eval(a, row, ctx), &eval(b, row, ctx)),
        },
        Expr::Exists(slot) => row.is_present(*slot),
        Expr::In {
            negated,
            needle,
            haystack,
        } => membership(&eval(needle, row, ctx), &eval(haystack, row, ctx)) == Some(!negated),
        Expr::InStrs {
            negated,
            needle,
            set,
        } => in_strs(&eval(needle, row, ctx), set) != *negated,
        Expr::Regex {
            negated,
            subject,
            regex,
        } => regex_match(regex, &eval(subject, row, ctx)) == Some(!negated),
        _ => matches!(*eval(e, row, ctx), Val::Bool(true)),
    }
}

/// Evaluates `e`. Never fails: type mismatches give `Null` (or `false` for comparisons).
pub(crate) fn eval<'a>(e: &'a Expr, row: &'a Row, ctx: &dyn StageEvents) -> Cow<'a, Val> {
    let v = match e {
        Expr::Const(v) => return Cow::Borrowed(v),
        Expr::Field(slot) => return Cow::Borrowed(row.get(*slot)),
        Expr::Exists(slot) => Val::Bool(row.is_present(*slot)),
        Expr::List(xs) => Val::List(xs.iter().map(|x| eval(x, row, ctx).into_owned()).collect()),
        Expr::And(_) | Expr::Or(_) | Expr::Cmp(..) => Val::Bool(test(e, row, ctx)),
        Expr::Not(x) => match *eval(x, row, ctx) {
            Val::Bool(b) => Val::Bool(!b),
            _ => Val::Null,
        },
        Expr::Neg(x) => negate(&eval(x, row, ctx)),
        Expr::Arith(op, a, b) => arith(*op, &eval(a, row, ctx), &eval(b, row, ctx)),
        Expr::In {
            negated,
            needle,
            haystack,
        } => bool_or_null(
            membership(&eval(needle, row, ctx), &eval(haystack, row, ctx)).map(|b| b != *negated),
        ),
        Expr::InStrs {
            negated,
            needle,
            set,
        } => Val::Bool(in_strs(&eval(needle, row, ctx), set) != *negated),
        Expr::Regex {
            negated,
            subject,
            regex,
        } => bool_or_null(regex_match(regex, &eval(subject, row, ctx)).map(|b| b != *negated)),
        Expr::Call(f, args) => call(*f, args, row, ctx),
        Expr::Agg { op, stage, slot } => aggregate(*op, *stage, *slot, ctx),
    };
    Cow::Owned(v)
}

pub(crate) fn compare(op: CmpOp, a: &Val, b: &Val) -> bool {
    match op {
        CmpOp::Eq => a.loose_eq(b),
        CmpOp::Ne => !a.loose_eq(b),
        CmpOp::Lt => a.loose_cmp(b) == Some(Ordering::Less),
        CmpOp::Le => matches!(a.loose_cmp(b), Some(Ordering::Less | Ordering::Equal)),
        CmpOp::Gt => a.loose_cmp(b) == Some(Ordering::Greater),
        CmpOp::Ge => matches!(a.loose_cmp(b), Some(Ordering::Greater | Ordering::Equal)),
    }
}

/// `needle in haystack`: `None` (null) unless the haystack is a list.
fn membership(needle: &Val, haystack: &Val) -> Option<bool> {
    match haystack {
        Val::List(items) => Some(items.iter().any(|x| x.loose_eq(needle))),
        _ => None,
    }
}

fn in_strs(needle: &Val, set: &FxHashSet<Arc<str>>) -> bool {
    matches!(needle, Val::Str(s) if set.contains(s))
}

/// Unanchored search; `None` (null) unless the subject is a string.
fn regex_match(regex: &Regex, subject: &Val) -> Option<bool> {
    match subject {
        Val::Str(s) => Some(regex.is_match(s.as_bytes())),
        _ => None,
    }
}

/// A float result, or `Null` if it is NaN or infinite.
fn float(f: f64) -> Val {
    if f.is_finite() {
        Val::Float(f)
    } else {
        Val::Null
    }
}

fn negate(v: &Val) -> Val {
    match v {
        Val::Int(i) => i
            .checked_neg()
            .map_or_else(|| float(-(*i as f64)), Val::Int),
        Val::Float(f) => float(-f),
        _ => Val::Null,
    }
}

/// Arithmetic on numbers. Integer overflow promotes to float; division or remainder by zero, and
/// any non-number operand, give `Null`. `/` is exact division: an integer if it divides evenly.
pub(crate) fn arith(op: ArithOp, a: &Val, b: &Val) -> Val {
    if let (Val::Int(x), Val::Int(y)) = (a, b) {
        let (x, y) = (*x, *y);
        let exact = match op {
            ArithOp::Add => x.checked_add(y),
            ArithOp::Sub => x.checked_sub(y),
            ArithOp::Mul => x.checked_mul(y),
            ArithOp::Div if y == 0 => return Val::Null,
            ArithOp::Div => match x.checked_rem(y) {
                Some(0) => x.checked_div(y),
                _ => return float(x as f64 / y as f64),
            },
            ArithOp::Rem if y == 0 => return Val::Null,
            // i64::MIN % -1 overflows in Rust, but the remainder is 0.
            ArithOp::Rem => Some(x.checked_rem(y).unwrap_or(0)),
        };
        if let Some(v) = exact {
            return Val::Int(v);
        }
    }
    let (Some(x), Some(y)) = (a.as_f64(), b.as_f64()) else {
        return Val::Null;
    };
    match op {
        ArithOp::Add => float(x + y),
        ArithOp::Sub => float(x - y),
        ArithOp::Mul => float(x * y),
        ArithOp::Div | ArithOp::Rem if y == 0.0 => Val::Null,
        ArithOp::Div => float(x / y),
        ArithOp::Rem => float(x % y),
    }
}

fn call(f: Func, args: &[Expr], row: &Row, ctx: &dyn StageEvents) -> Val {
    let arg = |i: usize| {
        args.get(i)
            .map_or(Cow::Owned(Val::Null), |e| eval(e, row, ctx))
    };
    match f {
        Func::Contains => match (&*arg(0), &*arg(1)) {
            (Val::Str(s), Val::Str(p)) => Val::Bool(s.contains(&**p)),
            (Val::List(items), x) => Val::Bool(items.iter().any(|i| i.loose_eq(x))),
            _ => Val::Null,
        },
        Func::StartsWith => match (&*arg(0), &*arg(1)) {
            (Val::Str(s), Val::Str(p)) => Val::Bool(s.starts_with(&**p)),
            _ => Val::Null,
        },
        Func::EndsWith => match (&*arg(0), &*arg(1)) {
            (Val::Str(s), Val::Str(p)) => Val::Bool(s.ends_with(&**p)),
            _ => Val::Null,
        },
        Func::Lower => match &*arg(0) {
            Val::Str(s) => Val::Str(Arc::from(s.to_lowercase())),
            _ => Val::Null,
        },
        Func::Upper => match &*arg(0) {
            Val::Str(s) => Val::Str(Arc::from(s.to_uppercase())),
            _ => Val::Null,
        },
        Func::Len => match &*arg(0) {
            Val::Str(s) => len_val(s.chars().count()),
            Val::List(items) => len_val(items.len()),
            Val::Object(map) => len_val(map.len()),
            _ => Val::Null,
        },
        Func::Abs => match &*arg(0) {
            Val::Int(i) => i
                .checked_abs()
                .map_or_else(|| float((*i as f64).abs()), Val::Int),
            Val::Float(f) => Val::Float(f.abs()),
            _ => Val::Null,
        },
    }
}

fn len_val(n: usize) -> Val {
    i64::try_from(n).map_or(Val::Null, Val::Int)
}

/// A running sum that stays an integer until it overflows or meets a float.
enum Sum {
    Int(i64),
    Float(f64),
}

impl Sum {
    fn add(&mut self, v: &Val) {
        *self = match (&*self, v) {
            (Sum::Int(s), Val::Int(i)) => match s.checked_add(*i) {
                Some(t) => Sum::Int(t),
                None => Sum::Float(*s as f64 + *i as f64),
            },
            (Sum::Int(s), Val::Float(f)) => Sum::Float(*s as f64 + f),
            (Sum::Float(s), Val::Int(i)) => Sum::Float(s + *i as f64),
            (Sum::Float(s), Val::Float(f)) => Sum::Float(s + f),
            _ => return,
        }
    }

    fn value(&self) -> Val {
        match self {
            Sum::Int(i) => Val::Int(*i),
            Sum::Float(f) => float(*f),
        }
    }
}

fn aggregate(op: AggOp, stage: usize, slot: usize, ctx: &dyn StageEvents) -> Val {
    match op {
        AggOp::Count => {
            let mut n = 0usize;
            ctx.for_each(stage, &mut |_| n += 1);
            len_val(n)
        }
        AggOp::First => {
            let mut first = None;
            ctx.for_each(stage, &mut |row| {
                if first.is_none() {
                    first = Some(row.get(slot).clone());
                }
            });
            first.unwrap_or(Val::Null)
        }
        AggOp::Last => {
            let mut last = Val::Null;
            ctx.for_each(stage, &mut |row| last = row.get(slot).clone());
            last
        }
        AggOp::Sum | AggOp::Avg => {
            let mut sum = Sum::Int(0);
            let mut n = 0u64;
            ctx.for_each(stage, &mut |row| {
                let v = row.get(slot);
                if matches!(v, Val::Int(_) | Val::Float(_)) {
                    sum.add(v);
                    n += 1;
                }
            });
            match (n, op) {
                (0, _) => Val::Null,
                (_, AggOp::Sum) => sum.value(),
                _ => match sum {
                    Sum::Int(s) => float(s as f64 / n as f64),
                    Sum::Float(s) => float(s / n as f64),
                },
            }
        }
        AggOp::Min | AggOp::Max => {
            let want = if op == AggOp::Min {
                Ordering::Less
            } else {
                Ordering::Greater
            };
            let mut best: Option<Val> = None;
            ctx.for_each(stage, &mut |row| {
                let v = row.get(slot);
                if !matches!(v, Val::Int(_) | Val::Float(_)) {
                    return;
                }
                let better = best.as_ref().is_none_or(|b| num_cmp(v, b) == Some(want));
                if better {
                    best = Some(v.clone());
                }
            });
            best.unwrap_or(Val::Null)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_table() {
        use ArithOp::*;
        let (i, f, n) = (Val::Int, Val::Float, Val::Null);
        for (op, a, b, want) in [
            (Add, i(1), i(2), i(3)),
            (Add, i(1), f(0.5), f(1.5)),
            (Sub, f(0.5), i(1), f(-0.5)),
            (Mul, i(i64::MAX), i(2), f(i64::MAX as f64 * 2.0)),
            (Div, i(9), i(3), i(3)),
            (Div, i(1), i(4), f(0.25)),
            (Div, i(i64::MIN), i(-1), f(9_223_372_036_854_775_808.0)),
            (Div, i(1), i(0), n.clone()),
            (Div, f(1.0), f(-0.0), n.clone()),
            (Rem, i(-7), i(4), i(-3)),
            (Rem, i(i64::MIN), i(-1), i(0)),
            (Rem, f(1.0), i(0), n.clone()),
            (Add, Val::Str("a".into()), Val::Str("b".into()), n.clone()),
            (Add, Val::Bool(true), i(1), n.clone()),
            (Mul, f(1e200), f(1e200), n.clone()),
        ] {
            assert_eq!(arith(op, &a, &b), want, "{op:?} {a:?} {b:?}");
        }
        assert_eq!(
            negate(&Val::Int(i64::MIN)),
            Val::Float(9_223_372_036_854_775_808.0)
        );
        assert_eq!(negate(&Val::Null), Val::Null);
    }

    #[test]
    fn comparisons_table() {
        use CmpOp::*;
        let (i, f) = (Val::Int, Val::Float);
        assert!(compare(Eq, &i(2), &f(2.0)));
        assert!(compare(Ne, &i(2), &Val::Str("2".into())));
        assert!(compare(Le, &i(2), &f(2.0)) && compare(Ge, &i(2), &f(2.0)));
        assert!(!compare(Lt, &i(2), &f(2.0)) && !compare(Gt, &i(2), &f(2.0)));
        assert!(!compare(Lt, &Val::Null, &i(1)) && !compare(Ge, &Val::Null, &i(1)));
        assert!(compare(Eq, &Val::Null, &Val::Null) && !compare(Ne, &Val::Null, &Val::Null));
    }

    #[test]
    fn sums_promote_on_overflow() {
        let mut s = Sum::Int(i64::MAX);
        s.add(&Val::Int(1));
        assert_eq!(s.value(), Val::Float(9_223_372_036_854_775_808.0));
        let mut s = Sum::Int(1);
        s.add(&Val::Str("x".into()));
        s.add(&Val::Float(0.5));
        assert_eq!(s.value(), Val::Float(1.5));
    }

    #[test]
    fn folding_and_iterativity_flags() {
        let c = |v| Box::new(Expr::Const(v));
        assert!(Expr::Cmp(CmpOp::Eq, c(Val::Int(1)), c(Val::Int(1))).is_foldable());
        assert!(!Expr::Cmp(CmpOp::Eq, Box::new(Expr::Field(0)), c(Val::Int(1))).is_foldable());
        let agg = Expr::Agg {
            op: AggOp::Count,
            stage: 0,
            slot: 0,
        };
        assert!(!agg.is_foldable() && agg.is_iterative());
        assert!(Expr::Not(Box::new(agg)).is_iterative());
        assert!(!Expr::Field(0).is_iterative());
    }
}
