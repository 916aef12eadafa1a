//! The aggregates of a window stage (`count`, `sum`, `avg`, `min`, `max`, `first`, `last`,
//! `count_distinct`) as the runtime's [`AggregateFunction`]: one accumulator per window, kept in
//! the window operator's state, merged when sessions merge.

use std::collections::BTreeSet;
use std::sync::Arc;

use cep_runtime::window::ProcessWindowFunction;
use cep_runtime::{AggregateFunction, GlobalWindow, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::{Number, Value};

/// What the window operator keeps of an event: its time, its key as written, and the values of
/// the fields the aggregates read (`None`: missing or `null`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct Element {
    pub(super) ts: Timestamp,
    pub(super) key: Value,
    pub(super) fields: Vec<Option<Value>>,
}

/// One aggregate: its name in the result, its function, the index of the field it reads
/// (`None`: every event, `count("*")`).
#[derive(Clone, Debug)]
pub(super) struct Aggregate {
    pub(super) name: String,
    pub(super) function: Function,
    pub(super) field: Option<usize>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Function {
    Count,
    Sum,
    Avg,
    Min,
    Max,
    First,
    Last,
    CountDistinct,
}

/// The running state of one aggregate.
#[derive(Clone, Debug, Serialize, Deserialize)]
enum Partial {
    Count(u64),
    /// The integer sum while every number is an integer and it does not overflow; the float
    /// sum always.
    Sum(Option<i64>, f64),
    Avg(f64, u64),
    Min(Option<Value>),
    Max(Option<Value>),
    First(Option<(Timestamp, Value)>),
    Last(Option<(Timestamp, Value)>),
    Distinct(BTreeSet<String>),
}

/// A window's accumulator: the key as written, the event-time range of its events, and one
/// partial per aggregate.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct Accumulator {
    pub(super) key: Value,
    pub(super) min_ts: Timestamp,
    pub(super) max_ts: Timestamp,
    partials: Vec<Partial>,
}

/// A window's result before it becomes an event.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct WindowResult {
    pub(super) key: Value,
    /// `[start, end)`: the time window, or for a count window the times of its first and last
    /// events (end = last + 1).
    pub(super) start: Timestamp,
    pub(super) end: Timestamp,
    pub(super) values: Vec<(String, Value)>,
}

/// The aggregates of a stage, as the runtime's [`AggregateFunction`].
#[derive(Clone, Debug)]
pub(super) struct Aggregates(pub(super) Arc<Vec<Aggregate>>);

fn number(v: &Value) -> Option<f64> {
    v.as_f64()
}

fn float(f: f64) -> Value {
    Number::from_f64(f).map_or(Value::Null, Value::Number)
}

impl Aggregates {
    pub(super) fn empty(&self) -> Accumulator {
        Accumulator {
            key: Value::Null,
            min_ts: Timestamp::MAX,
            max_ts: Timestamp::MIN,
            partials: self
                .0
                .iter()
                .map(|a| match a.function {
                    Function::Count => Partial::Count(0),
                    Function::Sum => Partial::Sum(Some(0), 0.0),
                    Function::Avg => Partial::Avg(0.0, 0),
                    Function::Min => Partial::Min(None),
                    Function::Max => Partial::Max(None),
                    Function::First => Partial::First(None),
                    Function::Last => Partial::Last(None),
                    Function::CountDistinct => Partial::Distinct(BTreeSet::new()),
                })
                .collect(),
        }
    }

    fn add_to(&self, e: &Element, acc: &mut Accumulator) {
        if acc.key.is_null() {
            acc.key = e.key.clone();
        }
        acc.min_ts = acc.min_ts.min(e.ts);
        acc.max_ts = acc.max_ts.max(e.ts);
        for (a, p) in self.0.iter().zip(&mut acc.partials) {
            let value = match a.field {
                None => {
                    if let Partial::Count(n) = p {
                        *n += 1;
                    }
                    continue;
                }
                Some(i) => match e.fields.get(i) {
                    Some(Some(v)) => v,
                    _ => continue,
                },
            };
            match p {
                Partial::Count(n) => *n += 1,
                Partial::Sum(int, f) => {
                    if let Some(x) = number(value) {
                        *f += x;
                        *int = match (*int, value.as_i64()) {
                            (Some(s), Some(i)) => s.checked_add(i),
                            _ => None,
                        };
                    }
                }
                Partial::Avg(sum, n) => {
                    if let Some(x) = number(value) {
                        *sum += x;
                        *n += 1;
                    }
                }
                Partial::Min(m) => {
                    if let Some(x) = number(value) {
                        if m.as_ref().and_then(number).is_none_or(|y| x < y) {
                            *m = Some(value.clone());
                        }
                    }
                }
                Partial::Max(m) => {
                    if let Some(x) = number(value) {
                        if m.as_ref().and_then(number).is_none_or(|y| x > y) {
                            *m = Some(value.clone());
                        }
                    }
                }
                // Ties in event time: the first to arrive stays first, the last to arrive is last.
                Partial::First(f) => {
                    if f.as_ref().is_none_or(|(t, _)| e.ts < *t) {
                        *f = Some((e.ts, value.clone()));
                    }
                }
                Partial::Last(l) => {
                    if l.as_ref().is_none_or(|(t, _)| e.ts >= *t) {
                        *l = Some((e.ts, value.clone()));
                    }
                }
                Partial::Distinct(set) => {
                    set.insert(value.to_string());
                }
            }
        }
    }

    fn merge_into(&self, mut a: Accumulator, b: Accumulator) -> Accumulator {
        if a.key.is_null() {
            a.key = b.key;
        }
        a.min_ts = a.min_ts.min(b.min_ts);
        a.max_ts = a.max_ts.max(b.max_ts);
        for (p, q) in a.partials.iter_mut().zip(b.partials) {
            match (p, q) {
                (Partial::Count(n), Partial::Count(m)) => *n += m,
                (Partial::Sum(i, f), Partial::Sum(j, g)) => {
                    *f += g;
                    *i = match (*i, j) {
                        (Some(i), Some(j)) => i.checked_add(j),
                        _ => None,
                    };
                }
                (Partial::Avg(s, n), Partial::Avg(t, m)) => {
                    *s += t;
                    *n += m;
                }
                (Partial::Min(m), Partial::Min(Some(o)))
                    if m.as_ref()
                        .and_then(number)
                        .is_none_or(|y| number(&o).is_some_and(|x| x < y)) =>
                {
                    *m = Some(o)
                }
                (Partial::Max(m), Partial::Max(Some(o)))
                    if m.as_ref()
                        .and_then(number)
                        .is_none_or(|y| number(&o).is_some_and(|x| x > y)) =>
                {
                    *m = Some(o)
                }
                (Partial::First(f), Partial::First(Some(o)))
                    if f.as_ref().is_none_or(|(t, _)| o.0 < *t) =>
                {
                    *f = Some(o)
                }
                (Partial::Last(l), Partial::Last(Some(o)))
                    if l.as_ref().is_none_or(|(t, _)| o.0 >= *t) =>
                {
                    *l = Some(o)
                }
                (Partial::Distinct(s), Partial::Distinct(o)) => s.extend(o),
                // The other side has nothing that wins (both accumulators come from the same
                // aggregates, so their kinds always agree).
                _ => {}
            }
        }
        a
    }

    pub(super) fn finish(
        &self,
        acc: &Accumulator,
        start: Timestamp,
        end: Timestamp,
    ) -> WindowResult {
        let values = self
            .0
            .iter()
            .zip(&acc.partials)
            .map(|(a, p)| {
                let v = match p {
                    Partial::Count(n) => Value::from(*n),
                    Partial::Sum(Some(i), _) => Value::from(*i),
                    Partial::Sum(None, f) => float(*f),
                    Partial::Avg(_, 0) => Value::Null,
                    Partial::Avg(s, n) => float(*s / *n as f64),
                    Partial::Min(m) | Partial::Max(m) => m.clone().unwrap_or(Value::Null),
                    Partial::First(f) | Partial::Last(f) => {
                        f.as_ref().map_or(Value::Null, |(_, v)| v.clone())
                    }
                    Partial::Distinct(s) => Value::from(s.len()),
                };
                (a.name.clone(), v)
            })
            .collect();
        WindowResult {
            key: acc.key.clone(),
            start,
            end,
            values,
        }
    }
}

impl AggregateFunction for Aggregates {
    type In = Element;
    type Acc = Accumulator;
    type Out = Accumulator;
    fn create_accumulator(&self) -> Accumulator {
        self.empty()
    }
    fn add(&self, value: Element, acc: &mut Accumulator) {
        self.add_to(&value, acc);
    }
    fn get_result(&self, acc: &Accumulator) -> Accumulator {
        acc.clone()
    }
    fn merge(&self, a: Accumulator, b: Accumulator) -> Accumulator {
        self.merge_into(a, b)
    }
}

/// The window contents of a sliding count window (every element, the last `size` kept): folded
/// into one accumulator when the window fires.
pub(super) struct FoldElements(pub(super) Aggregates);

impl ProcessWindowFunction<String, Element, GlobalWindow, Accumulator> for FoldElements {
    fn process(
        &self,
        _key: &String,
        _window: &GlobalWindow,
        elements: Vec<Element>,
        out: &mut Vec<Accumulator>,
    ) {
        let mut acc = self.0.empty();
        for e in &elements {
            self.0.add_to(e, &mut acc);
        }
        out.push(acc);
    }
}
