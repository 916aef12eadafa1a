//! Values, field-slot schemas and decoded rows.
//!
//! Every field path that any condition of a pattern set reads is interned once into a [`Schema`],
//! which gives it a slot index. An event is decoded once into a [`Row`], one [`Val`] per slot, so that
//! evaluating a condition reads slots by index and never looks keys up in a JSON map.

use std::cmp::Ordering;
use std::fmt;
use std::sync::Arc;

use rustc_hash::FxHashMap;
use serde_json::Value;
use smallvec::{smallvec, SmallVec};

use super::lexer::lex;
use super::parser::parse_path;
use super::ConditionError;

/// A value of the condition language.
///
/// The derived `PartialEq` is structural (`Int(1) != Float(1.0)`); the language's own `==`, where
/// numbers of both kinds compare numerically, is [`Val::loose_eq`].
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Val {
    /// `null`, and the value of a missing field.
    #[default]
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A number that fits an `i64`.
    Int(i64),
    /// Any other number. Never NaN or infinite: the language turns such results into `Null`.
    Float(f64),
    /// A string.
    Str(Arc<str>),
    /// A JSON array or a list literal.
    List(Arc<[Val]>),
    /// A JSON object, kept as JSON: the language only tests objects for equality, `exists` and `len`.
    Object(Arc<serde_json::Map<String, Value>>),
}

impl Val {
    /// Converts a JSON value. Numbers that fit an `i64` become `Int`, other numbers `Float`.
    pub fn from_json(value: &Value) -> Val {
        match value {
            Value::Null => Val::Null,
            Value::Bool(b) => Val::Bool(*b),
            Value::Number(n) => match n.as_i64() {
                Some(i) => Val::Int(i),
                None => n.as_f64().map_or(Val::Null, Val::Float),
            },
            Value::String(s) => Val::Str(Arc::from(s.as_str())),
            Value::Array(items) => Val::List(items.iter().map(Val::from_json).collect()),
            Value::Object(map) => Val::Object(Arc::new(map.clone())),
        }
    }

    /// Converts back to JSON (a non-finite float, which the language never produces, becomes `null`).
    pub fn to_json(&self) -> Value {
        match self {
            Val::Null => Value::Null,
            Val::Bool(b) => Value::Bool(*b),
            Val::Int(i) => Value::from(*i),
            Val::Float(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
            Val::Str(s) => Value::String(s.to_string()),
            Val::List(items) => Value::Array(items.iter().map(Val::to_json).collect()),
            Val::Object(map) => Value::Object((**map).clone()),
        }
    }

    /// The name of this value's type, as used in the documentation.
    pub fn type_name(&self) -> &'static str {
        match self {
            Val::Null => "null",
            Val::Bool(_) => "bool",
            Val::Int(_) | Val::Float(_) => "number",
            Val::Str(_) => "string",
            Val::List(_) => "list",
            Val::Object(_) => "object",
        }
    }

    /// The language's `==`: numbers compare numerically (`1 == 1.0`), values of different types are
    /// never equal, `null == null`, and lists compare element by element with this same equality.
    pub fn loose_eq(&self, other: &Val) -> bool {
        match (self, other) {
            (Val::Null, Val::Null) => true,
            (Val::Bool(a), Val::Bool(b)) => a == b,
            (Val::Int(_) | Val::Float(_), Val::Int(_) | Val::Float(_)) => {
                num_cmp(self, other) == Some(Ordering::Equal)
            }
            (Val::Str(a), Val::Str(b)) => a == b,
            (Val::List(a), Val::List(b)) => {
                a.len() == b.len() && a.iter().zip(b.iter()).all(|(x, y)| x.loose_eq(y))
            }
            (Val::Object(a), Val::Object(b)) => a == b,
            _ => false,
        }
    }

    /// The language's ordering: numbers numerically, strings by their bytes (Unicode code points);
    /// `None` for every other pair, which makes `<`, `<=`, `>` and `>=` false.
    pub fn loose_cmp(&self, other: &Val) -> Option<Ordering> {
        match (self, other) {
            (Val::Str(a), Val::Str(b)) => Some(a.as_bytes().cmp(b.as_bytes())),
            _ => num_cmp(self, other),
        }
    }

    /// The value as a float, if it is a number.
    pub(crate) fn as_f64(&self) -> Option<f64> {
        match self {
            Val::Int(i) => Some(*i as f64),
            Val::Float(f) => Some(*f),
            _ => None,
        }
    }
}

impl fmt::Display for Val {
    /// Formats the value as JSON.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_json())
    }
}

/// Compares two numbers exactly, also an `i64` with an `f64` (no rounding of large integers).
pub(crate) fn num_cmp(a: &Val, b: &Val) -> Option<Ordering> {
    match (a, b) {
        (Val::Int(x), Val::Int(y)) => Some(x.cmp(y)),
        (Val::Float(x), Val::Float(y)) => x.partial_cmp(y),
        (Val::Int(x), Val::Float(y)) => int_float_cmp(*x, *y),
        (Val::Float(x), Val::Int(y)) => int_float_cmp(*y, *x).map(Ordering::reverse),
        _ => None,
    }
}

fn int_float_cmp(i: i64, f: f64) -> Option<Ordering> {
    // 2^63 is exactly representable; every f64 in [-2^63, 2^63) truncates to an i64 exactly.
    const TWO_63: f64 = 9_223_372_036_854_775_808.0;
    if f.is_nan() {
        return None;
    }
    if f >= TWO_63 {
        return Some(Ordering::Less);
    }
    if f < -TWO_63 {
        return Some(Ordering::Greater);
    }
    let whole = f.trunc();
    match i.cmp(&(whole as i64)) {
        Ordering::Equal => 0.0f64.partial_cmp(&(f - whole)),
        other => Some(other),
    }
}

/// One step of a field path: an object key or an array index.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Seg {
    Key(Box<str>),
    Index(usize),
}

/// Interns field paths (`user.id`, `items[0].price`) into slot indices.
///
/// Build one schema for a whole pattern set, parse every condition (and resolve every key or
/// timestamp field) against it, then decode each event once with [`Schema::extract`].
#[derive(Clone, Debug, Default)]
pub struct Schema {
    paths: Vec<Box<[Seg]>>,
    index: FxHashMap<Box<[Seg]>, usize>,
}

impl Schema {
    /// An empty schema.
    pub fn new() -> Self {
        Self::default()
    }

    /// The number of slots.
    pub fn len(&self) -> usize {
        self.paths.len()
    }

    /// Whether the schema has no slot.
    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }

    /// Parses a field path such as `user.id`, `items[0].price`, `headers['content-type']` or
    /// `field('weird-name').x` and returns its slot, interning it if it is new.
    pub fn slot_for(&mut self, path: &str) -> Result<usize, ConditionError> {
        let segs = lex(path)
            .and_then(|toks| parse_path(path, &toks))
            .map_err(|e| e.into_error(path))?;
        Ok(self.intern(segs))
    }

    pub(crate) fn intern(&mut self, segs: Vec<Seg>) -> usize {
        let segs = segs.into_boxed_slice();
        if let Some(&slot) = self.index.get(&segs) {
            return slot;
        }
        let slot = self.paths.len();
        self.paths.push(segs.clone());
        self.index.insert(segs, slot);
        slot
    }

    /// Forgets the slots from `len` on (undoes the interning of a condition that failed to parse).
    pub(crate) fn truncate(&mut self, len: usize) {
        for segs in self.paths.drain(len.min(self.paths.len())..) {
            self.index.remove(&segs);
        }
    }

    /// The path of a slot in the language's syntax, e.g. `items[0].price`.
    pub fn path(&self, slot: usize) -> Option<String> {
        let segs = self.paths.get(slot)?;
        let mut out = String::new();
        for (i, seg) in segs.iter().enumerate() {
            match seg {
                Seg::Key(k) if is_ident(k) => {
                    if i > 0 {
                        out.push('.');
                    }
                    out.push_str(k);
                }
                Seg::Key(k) => {
                    let quoted = Value::String(k.to_string()).to_string();
                    if i == 0 {
                        out.push_str(&format!("field({quoted})"));
                    } else {
                        out.push_str(&format!("[{quoted}]"));
                    }
                }
                Seg::Index(n) => out.push_str(&format!("[{n}]")),
            }
        }
        Some(out)
    }

    /// The names of the top-level fields the paths start with (with repeats).
    pub(crate) fn top_fields(&self) -> impl Iterator<Item = &str> + '_ {
        self.paths.iter().filter_map(|p| match p.first() {
            Some(Seg::Key(k)) => Some(&**k),
            _ => None,
        })
    }

    /// Decodes every slot of an event. A missing field (or a path through a non-object or a
    /// too-short array) reads as `Null` and is marked absent for `exists`.
    pub fn extract(&self, event: &Value) -> Row {
        self.extract_from(event)
    }

    /// [`Schema::extract`] over an event's top-level fields however they are held.
    pub(crate) fn extract_from<F: TopFields + ?Sized>(&self, event: &F) -> Row {
        let mut vals = SmallVec::with_capacity(self.paths.len());
        let mut present: SmallVec<[u64; 1]> = smallvec![0; self.paths.len().div_ceil(64)];
        for (slot, segs) in self.paths.iter().enumerate() {
            match lookup_in(event, segs) {
                Some(v) => {
                    present[slot / 64] |= 1 << (slot % 64);
                    vals.push(match v {
                        FieldRef::Str(s) => Val::Str(shared_str(s)),
                        FieldRef::Json(Value::String(s)) => Val::Str(shared_str(s)),
                        FieldRef::Json(v) => Val::from_json(v),
                    });
                }
                None => vals.push(Val::Null),
            }
        }
        Row { vals, present }
    }
}

/// Strings up to this length are looked up in the thread's [`shared_str`] cache.
const SHARED_STR_MAX: usize = 32;

/// Entries of the thread's string cache (direct-mapped by hash).
const SHARED_STR_SLOTS: usize = 256;

thread_local! {
    static SHARED_STRS: std::cell::RefCell<Vec<Option<Arc<str>>>> =
        std::cell::RefCell::new(vec![None; SHARED_STR_SLOTS]);
}

/// `Arc::from(s)`, shared with the last event of this thread that had the same short string.
/// The string fields conditions read are mostly categories (`"fail"`, `"temperature"`), and
/// every held event would otherwise keep its own allocation of each; a new string replaces the
/// cached one of the same hash, so the cache stays 256 strings per thread whatever the input.
fn shared_str(s: &str) -> Arc<str> {
    use std::hash::BuildHasher;
    if s.len() > SHARED_STR_MAX {
        return Arc::from(s);
    }
    let at = rustc_hash::FxBuildHasher.hash_one(s) as usize % SHARED_STR_SLOTS;
    SHARED_STRS.with(|cache| {
        let mut cache = cache.borrow_mut();
        match &cache[at] {
            Some(hit) if **hit == *s => hit.clone(),
            _ => {
                let fresh: Arc<str> = Arc::from(s);
                cache[at] = Some(fresh.clone());
                fresh
            }
        }
    })
}

fn is_ident(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !super::lexer::is_keyword(s)
}

/// A top-level field read from an event's text: a string without escapes as it stands in the
/// text (no allocation until someone keeps it), or any value decoded.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Field<'t> {
    Str(&'t str),
    Json(Value),
}

impl Field<'_> {
    /// The field as a JSON value.
    #[cfg(test)]
    pub(crate) fn to_value(&self) -> Value {
        match self {
            Field::Str(s) => Value::String(s.to_string()),
            Field::Json(v) => v.clone(),
        }
    }
}

/// A value found in an event: a string slice of its text, or a JSON value.
#[derive(Clone, Copy, Debug)]
pub(crate) enum FieldRef<'v> {
    Str(&'v str),
    Json(&'v Value),
}

impl<'v> FieldRef<'v> {
    /// The value at `segs` under this one.
    pub(crate) fn lookup(self, segs: &[Seg]) -> Option<FieldRef<'v>> {
        match self {
            _ if segs.is_empty() => Some(self),
            FieldRef::Json(v) => lookup(v, segs).map(FieldRef::Json),
            // A string has no members.
            FieldRef::Str(_) => None,
        }
    }

    /// The string, if it is one.
    pub(crate) fn as_str(self) -> Option<&'v str> {
        match self {
            FieldRef::Str(s) => Some(s),
            FieldRef::Json(Value::String(s)) => Some(s),
            FieldRef::Json(_) => None,
        }
    }
}

/// The top-level fields of an event: a JSON object, or just the fields some path reads.
pub(crate) trait TopFields {
    /// The value of the top-level field `name`.
    fn top(&self, name: &str) -> Option<FieldRef<'_>>;
}

impl TopFields for Value {
    fn top(&self, name: &str) -> Option<FieldRef<'_>> {
        field(self.as_object()?, name).map(FieldRef::Json)
    }
}

/// Fields in input order; a repeated name reads as its last value (as in a decoded object).
impl<N: AsRef<str>> TopFields for [(N, Field<'_>)] {
    fn top(&self, name: &str) -> Option<FieldRef<'_>> {
        self.iter()
            .rev()
            .find(|(n, _)| n.as_ref() == name)
            .map(|(_, v)| match v {
                Field::Str(s) => FieldRef::Str(s),
                Field::Json(v) => FieldRef::Json(v),
            })
    }
}

/// Looks a path up in an event whose top-level fields `event` gives.
pub(crate) fn lookup_in<'v, F: TopFields + ?Sized>(
    event: &'v F,
    segs: &[Seg],
) -> Option<FieldRef<'v>> {
    match segs.split_first() {
        Some((Seg::Key(k), rest)) => event.top(k)?.lookup(rest),
        _ => None,
    }
}

fn lookup<'v>(mut value: &'v Value, segs: &[Seg]) -> Option<&'v Value> {
    for seg in segs {
        value = match (seg, value) {
            (Seg::Key(k), Value::Object(map)) => field(map, k)?,
            (Seg::Index(i), Value::Array(items)) => items.get(*i)?,
            _ => return None,
        };
    }
    Some(value)
}

/// `map.get(name)`: for the small objects events usually are, comparing the keys in turn is
/// cheaper than hashing the name (keys are unique, so both find the same entry).
#[inline]
fn field<'v>(map: &'v serde_json::Map<String, Value>, name: &str) -> Option<&'v Value> {
    if map.len() <= 8 {
        map.iter().find(|(k, _)| k.as_str() == name).map(|(_, v)| v)
    } else {
        map.get(name)
    }
}

static NULL: Val = Val::Null;

/// An event decoded against a [`Schema`]: one value per slot, plus which fields were present.
/// Rows of up to two slots (most patterns read one or two fields besides the key and the
/// time) allocate nothing; a held event's row is most of its size beside its text.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Row {
    vals: SmallVec<[Val; ROW_INLINE]>,
    present: SmallVec<[u64; 1]>,
}

/// Slots a [`Row`] holds without allocating.
const ROW_INLINE: usize = 2;

impl Row {
    /// A row with no slots: every field reads as missing.
    pub fn empty() -> Row {
        Row::default()
    }

    /// A row from values in slot order; every slot is present (use [`Schema::extract`] for events).
    pub fn from_vals(vals: Vec<Val>) -> Row {
        let n = vals.len();
        let mut present: SmallVec<[u64; 1]> = smallvec![0; n.div_ceil(64)];
        for slot in 0..n {
            present[slot / 64] |= 1 << (slot % 64);
        }
        Row {
            vals: SmallVec::from_vec(vals),
            present,
        }
    }

    /// The value of a slot; `Null` for a missing field and for a slot the row does not have (a row
    /// decoded before the schema grew).
    #[inline]
    pub fn get(&self, slot: usize) -> &Val {
        self.vals.get(slot).unwrap_or(&NULL)
    }

    /// Whether the field of a slot was present in the event (even with a `null` value).
    #[inline]
    pub fn is_present(&self, slot: usize) -> bool {
        self.present
            .get(slot / 64)
            .is_some_and(|w| w & (1 << (slot % 64)) != 0)
    }

    /// The number of slots.
    pub fn len(&self) -> usize {
        self.vals.len()
    }

    /// Whether the row has no slot.
    pub fn is_empty(&self) -> bool {
        self.vals.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn short_strings_of_rows_are_shared() {
        let mut schema = Schema::new();
        let t = schema.slot_for("type").unwrap();
        let n = schema.slot_for("note").unwrap();
        let long = "x".repeat(SHARED_STR_MAX + 1);
        let a = schema.extract(&json!({"type": "fail", "note": long}));
        let b = schema.extract(&json!({"type": "fail", "note": long}));
        let c = schema.extract(&json!({"type": "failed"}));
        let (Val::Str(x), Val::Str(y), Val::Str(z)) = (a.get(t), b.get(t), c.get(t)) else {
            panic!("strings expected");
        };
        assert!(Arc::ptr_eq(x, y), "the same short string is one allocation");
        assert_eq!((&**x, &**z), ("fail", "failed"));
        let (Val::Str(x), Val::Str(y)) = (a.get(n), b.get(n)) else {
            panic!("strings expected");
        };
        assert!(!Arc::ptr_eq(x, y), "long strings are not cached");
        assert_eq!(**x, *long);
        assert_eq!(a, b);
    }

    #[test]
    fn int_float_comparison_is_exact() {
        use Ordering::*;
        assert_eq!(int_float_cmp(1, 1.0), Some(Equal));
        assert_eq!(int_float_cmp(1, 1.5), Some(Less));
        assert_eq!(int_float_cmp(2, 1.5), Some(Greater));
        assert_eq!(int_float_cmp(-1, -1.5), Some(Greater));
        assert_eq!(int_float_cmp(-2, -1.5), Some(Less));
        assert_eq!(int_float_cmp(0, -0.0), Some(Equal));
        assert_eq!(
            int_float_cmp(i64::MAX, 9_223_372_036_854_775_808.0),
            Some(Less)
        );
        assert_eq!(
            int_float_cmp(i64::MIN, -9_223_372_036_854_775_808.0),
            Some(Equal)
        );
        assert_eq!(int_float_cmp(i64::MIN, -1e19), Some(Greater));
        assert_eq!(
            int_float_cmp(9_007_199_254_740_993, 9_007_199_254_740_992.0),
            Some(Greater)
        );
        assert_eq!(int_float_cmp(0, f64::NAN), None);
        assert_eq!(int_float_cmp(0, f64::INFINITY), Some(Less));
        assert_eq!(int_float_cmp(0, f64::NEG_INFINITY), Some(Greater));
        assert_eq!(num_cmp(&Val::Float(2.0), &Val::Int(1)), Some(Greater));
        assert_eq!(num_cmp(&Val::Str("1".into()), &Val::Int(1)), None);
    }

    #[test]
    fn equality_and_ordering() {
        let s = |x: &str| Val::Str(x.into());
        assert!(Val::Int(1).loose_eq(&Val::Float(1.0)));
        assert!(!Val::Int(1).loose_eq(&s("1")));
        assert!(Val::Null.loose_eq(&Val::Null));
        assert!(!Val::Null.loose_eq(&Val::Bool(false)));
        assert!(Val::from_json(&json!([1, [2]])).loose_eq(&Val::from_json(&json!([1.0, [2.0]]))));
        assert!(Val::from_json(&json!({"a": 1})).loose_eq(&Val::from_json(&json!({"a": 1}))));
        assert_eq!(s("a").loose_cmp(&s("b")), Some(Ordering::Less));
        assert_eq!(Val::Bool(false).loose_cmp(&Val::Bool(true)), None);
        assert_eq!(Val::Null.loose_cmp(&Val::Null), None);
    }

    #[test]
    fn json_conversion() {
        assert_eq!(Val::from_json(&json!(3)), Val::Int(3));
        assert_eq!(Val::from_json(&json!(3.0)), Val::Float(3.0));
        assert_eq!(
            Val::from_json(&json!(u64::MAX)),
            Val::Float(u64::MAX as f64)
        );
        assert_eq!(Val::from_json(&json!("x")).type_name(), "string");
        assert_eq!(Val::Float(f64::NAN).to_json(), Value::Null);
        assert_eq!(
            Val::from_json(&json!({"b": 1, "a": [true, null]})).to_string(),
            r#"{"b":1,"a":[true,null]}"#
        );
    }

    #[test]
    fn rows_mark_presence() {
        let mut schema = Schema::new();
        for p in ["a", "b", "c.d", "e[1]"] {
            schema.slot_for(p).unwrap();
        }
        for i in 0..70 {
            schema.slot_for(&format!("f{i}")).unwrap();
        }
        let row = schema.extract(&json!({"a": null, "c": {"d": 2}, "e": [0, 1], "f69": 1}));
        assert_eq!(row.len(), 74);
        assert!(row.is_present(0) && !row.is_present(1) && row.is_present(2) && row.is_present(3));
        assert!(row.is_present(73) && !row.is_present(72) && !row.is_present(74));
        assert_eq!(row.get(3), &Val::Int(1));
        let row = Row::from_vals(vec![Val::Null; 65]);
        assert!(row.is_present(64) && !row.is_present(65));
        assert!(Row::empty().is_empty() && !Row::empty().is_present(0));
        // Extracting from a non-object reads every field as missing.
        let row = schema.extract(&json!([1, 2]));
        assert!((0..schema.len()).all(|s| !row.is_present(s) && *row.get(s) == Val::Null));
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            (-1e300f64..1e300).prop_map(Value::from),
            ".{0,8}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 32, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::vec((".{0,4}", inner), 0..4)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn json_round_trip(v in arb_json()) {
            let val = Val::from_json(&v);
            prop_assert_eq!(val.to_json(), v);
            prop_assert!(val.loose_eq(&val));
        }
    }
}
