//! The JSON evaluation engine: JSON events in, keyed by a field, timed by a field, evaluated by
//! every pattern in event time with bounded out-of-orderness; JSON outputs out. This is what
//! `cep run` and each pipeline of the service run. It does no IO.

use std::borrow::Cow;
use std::sync::Arc;

use cep::{CepOperator, OutputKind as CepKind};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::compile::{build, CompiledPattern, JsonEvent};
use crate::condition::{lookup_in, Field, FieldRef, Row, Schema, Seg, TopFields};
use crate::scan::{scan_fields, FieldList};
use crate::spec::PatternErrors;

/// How the time field is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum TimeFormat {
    /// Milliseconds since the epoch (a number).
    #[default]
    EpochMs,
    /// Seconds since the epoch (a number, fractions allowed).
    EpochS,
    /// An RFC 3339 date-time string.
    Rfc3339,
}

impl std::str::FromStr for TimeFormat {
    type Err = String;
    /// `epoch_ms`, `epoch_s` or `rfc3339` (`-` may stand for `_`, as on the command line).
    fn from_str(text: &str) -> Result<TimeFormat, String> {
        match text.trim().replace('-', "_").as_str() {
            "epoch_ms" => Ok(TimeFormat::EpochMs),
            "epoch_s" => Ok(TimeFormat::EpochS),
            "rfc3339" => Ok(TimeFormat::Rfc3339),
            _ => Err(format!(
                "unknown time format '{text}' (epoch_ms, epoch_s or rfc3339)"
            )),
        }
    }
}

/// What the engine reads from each event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineConfig {
    /// Field path of the key (`user.id`).
    pub key_by: String,
    /// Field path of the event time.
    pub time_field: String,
    /// How the time is written.
    pub time_format: TimeFormat,
    /// Bounded out-of-orderness: the watermark trails the highest timestamp by this much (+1 ms).
    pub out_of_orderness_ms: i64,
}

/// Why a record was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordError {
    /// What is wrong with it.
    pub message: String,
}

impl std::fmt::Display for RecordError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for RecordError {}

/// What an output is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputKind {
    /// A match.
    Match,
    /// A timed-out partial match.
    Timeout,
    /// A late event.
    Late,
}

/// One output line: `{"kind","pattern","key","timestamp","events"}` or, for a late event,
/// `{"kind":"late","key","timestamp","event"}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Output {
    /// Match, timeout or late.
    pub kind: OutputKind,
    /// The pattern (absent for late events).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<Arc<str>>,
    /// The key.
    pub key: String,
    /// When it happened (for a timeout: when it timed out).
    pub timestamp: i64,
    /// The events by stage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<MatchEvents>,
    /// The late event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<Arc<JsonEvent>>,
    /// The version of the pattern that made it (absent when unversioned: `cep run`, and late
    /// events).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub version: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// How a pattern whose definition changed takes over from its previous version.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Replace {
    /// The partial matches of the old version run on to their match or timeout (their outputs
    /// carry the old version); new partial matches start on the new version. The old version
    /// goes once it holds nothing.
    #[default]
    Drain,
    /// The old version's partial matches are dropped.
    Restart,
}

impl std::str::FromStr for Replace {
    type Err = String;
    fn from_str(s: &str) -> Result<Replace, String> {
        match s {
            "drain" => Ok(Replace::Drain),
            "restart" => Ok(Replace::Restart),
            other => Err(format!(
                "unknown replacement mode '{other}' (expected drain or restart)"
            )),
        }
    }
}

/// The events of a match or timeout by stage, stages in pattern order: written as a JSON object
/// of arrays, `{"stage": [event, ...], ...}`. The events are shared with the engine (an output
/// does not copy them).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MatchEvents(cep::Events<JsonEvent>);

impl MatchEvents {
    /// `(stage, events)` in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[Arc<JsonEvent>])> + '_ {
        self.0.iter().map(|(s, evs)| (&**s, evs.as_slice()))
    }

    /// The events of one stage.
    pub fn get(&self, stage: &str) -> Option<&[Arc<JsonEvent>]> {
        self.iter().find(|(s, _)| *s == stage).map(|(_, evs)| evs)
    }

    /// The number of stages with events.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether no stage has events.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// As a JSON object of arrays.
    pub fn to_json(&self) -> Map<String, Value> {
        self.iter()
            .map(|(s, evs)| {
                let evs = evs.iter().map(|e| e.value()).collect();
                (s.to_string(), Value::Array(evs))
            })
            .collect()
    }
}

impl From<cep::Events<JsonEvent>> for MatchEvents {
    fn from(events: cep::Events<JsonEvent>) -> MatchEvents {
        MatchEvents(events)
    }
}

impl Serialize for MatchEvents {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (stage, evs) in &self.0 {
            m.serialize_entry(&**stage, evs)?;
        }
        m.end()
    }
}

impl<'de> Deserialize<'de> for MatchEvents {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = MatchEvents;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object of arrays of events")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut m: A,
            ) -> Result<MatchEvents, A::Error> {
                let mut out = Vec::new();
                while let Some((stage, evs)) = m.next_entry::<String, Vec<Arc<JsonEvent>>>()? {
                    out.push((Arc::from(stage), evs));
                }
                Ok(MatchEvents(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// A partial match held for a key, as shown by introspection.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PartialMatchInfo {
    /// The pattern.
    pub pattern: String,
    /// The automaton state it waits in.
    pub state: String,
    /// Timestamp of its first event.
    pub start_timestamp: i64,
    /// Its events so far, by stage.
    pub events: Map<String, Value>,
    /// The version of the pattern (absent when unversioned).
    #[serde(skip_serializing_if = "is_zero")]
    pub version: u64,
    /// Whether that version is draining (replaced: it runs its partial matches out and starts
    /// none).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub draining: bool,
}

/// What the engine holds for a key, as shown by introspection.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct KeyView {
    /// Its partial matches.
    pub partial_matches: Vec<PartialMatchInfo>,
    /// Its events waiting for the watermark (evaluated once the watermark passes them).
    pub waiting_events: Vec<WaitingEvent>,
}

/// An event waiting for the watermark.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct WaitingEvent {
    /// Its time.
    pub timestamp: i64,
    /// The event.
    pub event: Arc<JsonEvent>,
}

/// Per-pattern counters.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PatternStats {
    /// The pattern.
    pub pattern: String,
    /// Its version (absent when unversioned).
    #[serde(skip_serializing_if = "is_zero")]
    pub version: u64,
    /// Whether this version is draining.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub draining: bool,
    /// Matches emitted.
    pub matches: u64,
    /// Timeouts emitted.
    pub timeouts: u64,
}

/// Counts of what the engine holds and did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct EngineStats {
    /// Events accepted.
    pub events: u64,
    /// Late events.
    pub late: u64,
    /// Keys with state.
    pub keys: usize,
    /// Partial matches under way.
    pub partial_matches: usize,
    /// Events waiting for the watermark or held by partial matches.
    pub buffered_events: usize,
    /// Partial matches dropped by the pipeline's `max_partial_matches`.
    pub dropped_partial_matches: u64,
    /// Keys dropped by the pipeline's `max_keys`.
    pub evicted_keys: u64,
    /// Keys dropped by the pipeline's `key_ttl`.
    pub expired_keys: u64,
    /// Per pattern.
    pub patterns: Vec<PatternStats>,
}

/// A key or time field path (`user.id`, `tags[0]`) as the condition language's path steps.
fn parse_path(path: &str) -> Result<Vec<Seg>, String> {
    let mut segs = Vec::new();
    if path.trim().is_empty() {
        return Err("empty field path".into());
    }
    for part in path.split('.') {
        let (name, mut rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if name.is_empty() && segs.is_empty() {
            return Err(format!("invalid field path '{path}'"));
        }
        if !name.is_empty() {
            segs.push(Seg::Key(name.into()));
        }
        while !rest.is_empty() {
            let close = rest
                .find(']')
                .ok_or_else(|| format!("invalid field path '{path}': missing ']'"))?;
            let idx: usize = rest[1..close]
                .parse()
                .map_err(|_| format!("invalid field path '{path}': bad index"))?;
            segs.push(Seg::Index(idx));
            rest = &rest[close + 1..];
        }
    }
    Ok(segs)
}

/// A field path (`user.id`, `tags[0]`) as the engine reads keys and times: for stages ahead of
/// the engine (a pipeline's window stage) that read and write event fields the same way.
#[derive(Clone, Debug)]
pub struct FieldPath {
    segs: Vec<Seg>,
}

impl FieldPath {
    /// Parses `user.id`, `tags[0]`.
    pub fn parse(path: &str) -> Result<FieldPath, String> {
        Ok(FieldPath {
            segs: parse_path(path)?,
        })
    }

    /// The value at this path in `event`, if any.
    pub fn get<'v>(&self, event: &'v Value) -> Option<&'v Value> {
        match lookup_in(event, &self.segs)? {
            FieldRef::Json(v) => Some(v),
            // A `Value` gives only `Json`.
            FieldRef::Str(_) => None,
        }
    }

    /// Writes `value` at this path into `root`, creating the objects (and arrays, padded with
    /// `null`) on the way; what is in the way of a different kind is replaced.
    pub fn insert(&self, root: &mut Map<String, Value>, value: Value) {
        let Some((Seg::Key(first), rest)) = self.segs.split_first() else {
            return;
        };
        let mut cur = root.entry(first.to_string()).or_insert(Value::Null);
        for s in rest {
            cur = match s {
                Seg::Key(k) => {
                    if !cur.is_object() {
                        *cur = Value::Object(Map::new());
                    }
                    let Value::Object(m) = cur else { return };
                    m.entry(k.to_string()).or_insert(Value::Null)
                }
                Seg::Index(i) => {
                    if !cur.is_array() {
                        *cur = Value::Array(Vec::new());
                    }
                    let Value::Array(a) = cur else { return };
                    if a.len() <= *i {
                        a.resize(*i + 1, Value::Null);
                    }
                    &mut a[*i]
                }
            };
        }
        *cur = value;
    }
}

/// Evaluates patterns over JSON events.
pub struct JsonEngine {
    config: EngineConfig,
    key_path: Vec<Seg>,
    time_path: Vec<Seg>,
    schema: Schema,
    /// The top-level fields some path reads: what [`JsonEngine::push_str`] decodes.
    wanted: Vec<Box<str>>,
    patterns: Vec<Arc<CompiledPattern>>,
    /// The patterns' names, shared by their outputs.
    names: Vec<Arc<str>>,
    op: CepOperator<Key, JsonEvent>,
    max_ts: i64,
    scratch: Vec<cep::Output<Key, JsonEvent>>,
    stats: EngineStats,
    /// See [`set_max_future`](Self::set_max_future).
    max_future: Option<i64>,
}

impl std::fmt::Debug for JsonEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JsonEngine")
            .field("config", &self.config)
            .finish()
    }
}

/// A key as the engine holds it: up to 24 bytes inline (no allocation for the usual keys),
/// longer ones on the heap.
type Key = compact_str::CompactString;

/// An event read from JSON text by [`JsonEngine::parse_str`], not yet taken.
#[derive(Debug)]
pub struct ParsedEvent {
    key: Key,
    /// Its event time (ms).
    pub ts: i64,
    event: JsonEvent,
}

impl ParsedEvent {
    /// Its key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The event as a JSON value.
    pub fn value(&self) -> Value {
        self.event.value()
    }
}

impl JsonEngine {
    /// An engine for these patterns.
    pub fn new(
        config: EngineConfig,
        patterns: Vec<Arc<CompiledPattern>>,
    ) -> Result<JsonEngine, PatternErrors> {
        let key_path =
            parse_path(&config.key_by).map_err(|m| PatternErrors::one("key_by", None, m))?;
        let time_path = parse_path(&config.time_field)
            .map_err(|m| PatternErrors::one("time_field", None, m))?;
        let mut schema = Schema::new();
        let mut nfas = Vec::new();
        for p in &patterns {
            nfas.push(Arc::new(build(p.spec(), &mut schema)?));
        }
        let stats = EngineStats {
            patterns: patterns
                .iter()
                .map(|p| PatternStats {
                    pattern: p.name().to_string(),
                    version: p.version(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        let wanted = wanted_fields(&schema, &key_path, &time_path);
        let names = patterns.iter().map(|p| Arc::from(p.name())).collect();
        Ok(JsonEngine {
            config,
            key_path,
            time_path,
            schema,
            wanted,
            patterns,
            names,
            op: CepOperator::new(nfas),
            max_ts: i64::MIN,
            scratch: Vec::new(),
            stats,
            max_future: None,
        })
    }

    /// Refuses events whose time is more than `limit` ms ahead of the wall clock (None: any
    /// time). One event from the far future would move the watermark there and make every later
    /// event late; live pipelines set a limit, replays of synthetic time do not.
    pub fn set_max_future(&mut self, limit: Option<i64>) {
        self.max_future = limit;
    }

    /// The configuration.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// The patterns evaluated.
    pub fn patterns(&self) -> &[Arc<CompiledPattern>] {
        &self.patterns
    }

    /// Reads key and time of an event.
    pub fn key_and_time(&self, event: &Value) -> Result<(String, i64), RecordError> {
        self.key_and_time_in(event)
    }

    /// Reads the key of an event (processing time: the time is the clock's, not the event's).
    pub fn key_of(&self, event: &Value) -> Result<String, RecordError> {
        self.key_in(event)
    }

    fn key_in<F: TopFields + ?Sized>(&self, event: &F) -> Result<String, RecordError> {
        Ok(match lookup_in(event, &self.key_path) {
            None => {
                return Err(RecordError {
                    message: format!("missing key field '{}'", self.config.key_by),
                })
            }
            Some(FieldRef::Str(s)) => s.to_string(),
            Some(FieldRef::Json(Value::String(s))) => s.clone(),
            Some(FieldRef::Json(v @ (Value::Number(_) | Value::Bool(_)))) => v.to_string(),
            Some(FieldRef::Json(v)) => {
                return Err(RecordError {
                    message: format!(
                        "key field '{}' must be a string or a number, found {}",
                        self.config.key_by,
                        json_type(v)
                    ),
                })
            }
        })
    }

    fn key_and_time_in<F: TopFields + ?Sized>(
        &self,
        event: &F,
    ) -> Result<(String, i64), RecordError> {
        let key = self.key_in(event)?;
        Ok((key, self.time_in(event)?))
    }

    /// The key of an event read by [`scan_fields`] when it is a top-level string (read after
    /// the row, which may read it too): copied from the text, or moved out of the fields when
    /// it had to be decoded; `None` otherwise.
    fn take_key(&self, fields: &mut FieldList<'_>) -> Option<Key> {
        let [Seg::Key(name)] = &self.key_path[..] else {
            return None;
        };
        match fields.iter_mut().rev().find(|(n, _)| **n == **name)? {
            (_, Field::Str(s)) => Some(Key::from(*s)),
            (_, Field::Json(Value::String(s))) => Some(Key::from(std::mem::take(s))),
            _ => None,
        }
    }

    fn time_in<F: TopFields + ?Sized>(&self, event: &F) -> Result<i64, RecordError> {
        let field = &self.config.time_field;
        let raw = lookup_in(event, &self.time_path).ok_or_else(|| RecordError {
            message: format!("missing time field '{field}'"),
        })?;
        let ts = match self.config.time_format {
            TimeFormat::EpochMs | TimeFormat::EpochS => {
                let scale = if self.config.time_format == TimeFormat::EpochS {
                    1000.0
                } else {
                    1.0
                };
                match raw {
                    FieldRef::Json(Value::Number(n)) => match n.as_i64() {
                        Some(i) if scale == 1.0 => i,
                        _ => {
                            let f = n.as_f64().unwrap_or(f64::NAN) * scale;
                            if !f.is_finite() || f.abs() > 9.0e15 {
                                return Err(RecordError {
                                    message: format!("time field '{field}' is out of range: {n}"),
                                });
                            }
                            f.floor() as i64
                        }
                    },
                    v => {
                        return Err(RecordError {
                            message: format!(
                                "time field '{field}' must be a number ({}), found {}",
                                if scale == 1.0 {
                                    "epoch milliseconds"
                                } else {
                                    "epoch seconds"
                                },
                                field_type(v)
                            ),
                        })
                    }
                }
            }
            TimeFormat::Rfc3339 => match raw.as_str() {
                Some(s) => chrono::DateTime::parse_from_rfc3339(s)
                    .map(|d| d.timestamp_millis())
                    .map_err(|e| RecordError {
                        message: format!(
                            "time field '{field}' is not an RFC 3339 date-time ('{s}'): {e}"
                        ),
                    })?,
                None => {
                    return Err(RecordError {
                        message: format!(
                            "time field '{field}' must be an RFC 3339 string, found {}",
                            field_type(raw)
                        ),
                    })
                }
            },
        };
        if let Some(limit) = self.max_future {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64);
            if ts > now.saturating_add(limit) {
                return Err(RecordError {
                    message: format!(
                        "time field '{field}' is {ts}, more than {} ahead of the wall clock \
                         ({now}): refused, as it would move the watermark past every later event \
                         (the pipeline's watermark.max_future)",
                        crate::spec::DurationMs(limit)
                    ),
                });
            }
        }
        Ok(ts)
    }

    /// Ingests one event; the watermark then advances to the highest timestamp seen minus the
    /// out-of-orderness minus 1 ms, and outputs are appended to `out`.
    pub fn push(&mut self, event: Value, out: &mut Vec<Output>) -> Result<(), RecordError> {
        let (key, ts) = self.key_and_time(&event)?;
        let row = self.schema.extract(&event);
        self.accept(Key::from(key), ts, JsonEvent::from_value(row, &event), out);
        Ok(())
    }

    /// Like [`push`](Self::push), for an event given as JSON text: only the fields the key, the
    /// time and the conditions read are decoded; the rest is checked and kept as text, and that
    /// text is what outputs show. Malformed JSON and values that are not objects are rejected
    /// with the same messages as when decoding the text into a `Value` first.
    pub fn push_str(&mut self, text: &str, out: &mut Vec<Output>) -> Result<(), RecordError> {
        let parsed = self.parse_str(text)?;
        self.push_parsed(parsed, out);
        Ok(())
    }

    /// The first half of [`push_str`](Self::push_str): reads an event's key and time from its
    /// text (and the fields the conditions read), for a caller that routes or checks it by them
    /// before [`push_parsed`](Self::push_parsed) takes it.
    pub fn parse_str(&self, text: &str) -> Result<ParsedEvent, RecordError> {
        // One pass of `scan_fields` checks the text and finds the wanted members in it; what
        // it leaves (malformed text, escaped member names, deep nesting, values a `Value` does
        // not hold) goes to serde_json, whose answers it gives.
        let mut fields = FieldList::new();
        let object = match scan_fields(&self.wanted, text, &mut fields) {
            Some(object) => object,
            None => self.decode_slowly(text, &mut fields)?,
        };
        let row = self.schema.extract_from(&fields[..]);
        let key = match self.take_key(&mut fields) {
            Some(key) => key,
            None => Key::from(self.key_in(&fields[..])?),
        };
        let ts = self.time_in(&fields[..])?;
        Ok(ParsedEvent {
            key,
            ts,
            event: JsonEvent::checked(row, object),
        })
    }

    /// What [`parse_str`](Self::parse_str) does with a text the scanner leaves: serde_json
    /// checks it, decodes the wanted members, or says why it refuses it. Returns the value's
    /// text without the whitespace around it (as serde_json's `RawValue`).
    #[cold]
    fn decode_slowly<'t>(
        &self,
        text: &'t str,
        fields: &mut FieldList<'t>,
    ) -> Result<&'t str, RecordError> {
        let Ok(raw) = serde_json::from_str::<&RawValue>(text) else {
            return Err(Self::reject(text));
        };
        // serde_json skips values without a nesting limit, while decoding a `Value` stops
        // at 128 levels (the scanner gives up far below). A line with that many brackets
        // (in strings too: a cheap, cautious count) is decoded in full once, so that it is
        // refused exactly when `push` would refuse it, and every event kept can be decoded
        // again (`JsonEvent::value`).
        if text.bytes().filter(|&b| b == b'[' || b == b'{').count() > 128 {
            if let Err(e) = serde_json::from_str::<Value>(text) {
                return Err(RecordError {
                    message: format!("malformed JSON: {e}"),
                });
            }
        }
        fields.clear();
        if !decode_fields(&self.wanted, raw.get(), fields) {
            return Err(Self::reject(text));
        }
        Ok(raw.get())
    }

    /// The second half of [`push_str`](Self::push_str): takes an event read by
    /// [`parse_str`](Self::parse_str) (of this engine: its row follows this engine's patterns).
    pub fn push_parsed(&mut self, parsed: ParsedEvent, out: &mut Vec<Output>) {
        self.accept(parsed.key, parsed.ts, parsed.event, out);
    }

    /// Why `text` was refused by [`decode_fields`].
    #[cold]
    fn reject(text: &str) -> RecordError {
        let message = match serde_json::from_str::<Value>(text) {
            Err(e) => format!("malformed JSON: {e}"),
            Ok(_) => "an event must be a JSON object".to_string(),
        };
        RecordError { message }
    }

    fn accept(&mut self, key: Key, ts: i64, event: JsonEvent, out: &mut Vec<Output>) {
        self.stats.events += 1;
        self.op.process_element(key, event, ts, &mut self.scratch);
        self.max_ts = self.max_ts.max(ts);
        let wm = self
            .max_ts
            .saturating_sub(self.config.out_of_orderness_ms)
            .saturating_sub(1);
        self.op.advance_watermark(wm, &mut self.scratch);
        self.drain(out);
    }

    /// Ingests an event whose key and time a stage ahead of the engine has already read (a
    /// pipeline's window stage, which then moves the watermark with
    /// [`advance_watermark`](Self::advance_watermark)): the watermark does not move. An event
    /// at or behind the watermark is late.
    pub fn push_keyed(&mut self, key: String, ts: i64, event: &Value, out: &mut Vec<Output>) {
        let row = self.schema.extract(event);
        self.stats.events += 1;
        self.op.process_element(
            Key::from(key),
            JsonEvent::from_value(row, event),
            ts,
            &mut self.scratch,
        );
        self.drain(out);
    }

    /// A late-event output for an event a stage ahead of the engine found late (a window
    /// stage's events later than the allowed lateness): written and counted like the engine's own.
    pub fn late_output(&mut self, key: String, ts: i64, event: &Value) -> Output {
        self.stats.late += 1;
        Output {
            kind: OutputKind::Late,
            pattern: None,
            key,
            timestamp: ts,
            events: None,
            event: Some(Arc::new(JsonEvent::from_value(
                self.schema.extract(event),
                event,
            ))),
            version: 0,
        }
    }

    /// Moves the watermark (for idleness, or `i64::MAX` at the end of the input).
    pub fn advance_watermark(&mut self, watermark: i64, out: &mut Vec<Output>) {
        self.op.advance_watermark(watermark, &mut self.scratch);
        self.drain(out);
    }

    /// The current watermark.
    pub fn watermark(&self) -> i64 {
        self.op.watermark()
    }

    /// The highest event time seen (`i64::MIN` before the first event): with the
    /// out-of-orderness, what the watermark follows. A checkpoint keeps it beside the watermark.
    pub fn max_timestamp(&self) -> i64 {
        self.max_ts
    }

    /// Bounds the state the engine keeps (none by default): see [`cep::StateBounds`].
    pub fn set_bounds(&mut self, bounds: cep::StateBounds) {
        self.op.set_bounds(bounds);
    }

    /// The limit set by [`set_max_future`](Self::set_max_future).
    pub fn max_future(&self) -> Option<i64> {
        self.max_future
    }

    /// Restores the event-time clock of a checkpoint: the highest time seen and the watermark,
    /// after the keys' state has been restored with [`restore_key`](Self::restore_key). What is
    /// due at the watermark goes to `out` (nothing, when the keys come from the same checkpoint).
    pub fn restore_time(&mut self, max_timestamp: i64, watermark: i64, out: &mut Vec<Output>) {
        self.max_ts = self.max_ts.max(max_timestamp);
        self.advance_watermark(watermark, out);
    }

    fn drain(&mut self, out: &mut Vec<Output>) {
        if self.scratch.is_empty() {
            return;
        }
        for o in self.scratch.drain(..) {
            let pattern = self.names.get(o.pattern).cloned();
            match o.kind {
                CepKind::Match => self.stats.patterns[o.pattern].matches += 1,
                CepKind::Timeout => self.stats.patterns[o.pattern].timeouts += 1,
                CepKind::Late => self.stats.late += 1,
            }
            let kind = match o.kind {
                CepKind::Match => OutputKind::Match,
                CepKind::Timeout => OutputKind::Timeout,
                CepKind::Late => OutputKind::Late,
            };
            let events = (kind != OutputKind::Late).then_some(MatchEvents(o.events));
            out.push(Output {
                kind,
                pattern,
                key: o.key.into_string(),
                timestamp: o.timestamp,
                events,
                event: o.event,
                version: if kind == OutputKind::Late {
                    0
                } else {
                    self.patterns.get(o.pattern).map_or(0, |p| p.version())
                },
            });
        }
    }

    /// Replaces the patterns. Patterns whose definition is unchanged keep their partial
    /// matches; new, changed and removed ones start from nothing (their partial matches are
    /// dropped). Events waiting for the watermark are kept.
    pub fn set_patterns(
        &mut self,
        patterns: Vec<Arc<CompiledPattern>>,
    ) -> Result<(), PatternErrors> {
        self.set_patterns_mode(patterns, Replace::Restart)
    }

    /// Replaces the patterns. A pattern whose definition and version are unchanged keeps its
    /// partial matches; a new one starts from nothing; a removed one goes with its partial
    /// matches. A changed one (same name) starts from nothing, and with [`Replace::Drain`] its
    /// previous version stays beside it, draining: its partial matches run on to their match or
    /// timeout, it starts none, and it goes once it holds nothing
    /// ([`retire_drained`](Self::retire_drained)). Events waiting for the watermark are kept.
    pub fn set_patterns_mode(
        &mut self,
        patterns: Vec<Arc<CompiledPattern>>,
        mode: Replace,
    ) -> Result<(), PatternErrors> {
        let draining = self.op.draining().to_vec();
        let same = |o: &CompiledPattern, p: &CompiledPattern| {
            o.spec() == p.spec() && o.version() == p.version()
        };
        let mut slots = Vec::new();
        let mut taken = vec![false; self.patterns.len()];
        for p in &patterns {
            let old = (0..self.patterns.len())
                .find(|&i| !draining[i] && !taken[i] && same(&self.patterns[i], p));
            if let Some(i) = old {
                taken[i] = true;
            }
            slots.push((p.clone(), old, false));
        }
        if mode == Replace::Drain {
            for (i, o) in self.patterns.iter().enumerate() {
                let replaced = patterns.iter().any(|p| p.name() == o.name());
                if !taken[i] && replaced && (draining[i] || self.op.holds(i)) {
                    slots.push((o.clone(), Some(i), true));
                }
            }
        }
        self.set_slots(slots)
    }

    /// Drops the draining versions that hold nothing any more; true if one went.
    pub fn retire_drained(&mut self) -> bool {
        let draining = self.op.draining().to_vec();
        let gone: Vec<bool> = (0..self.patterns.len())
            .map(|i| draining[i] && !self.op.holds(i))
            .collect();
        if !gone.iter().any(|g| *g) {
            return false;
        }
        let slots = self
            .patterns
            .iter()
            .enumerate()
            .filter(|(i, _)| !gone[*i])
            .map(|(i, p)| (p.clone(), Some(i), draining[i]))
            .collect();
        // The slots exist already: nothing to compile, nothing can fail.
        self.set_slots(slots).is_ok()
    }

    /// Whether some pattern version is draining.
    pub fn is_draining(&self) -> bool {
        self.op.draining().iter().any(|d| *d)
    }

    /// Every pattern version the engine runs, with whether it is draining (the active ones
    /// first, in the order they were given).
    pub fn slots(&self) -> Vec<(Arc<CompiledPattern>, bool)> {
        self.patterns
            .iter()
            .cloned()
            .zip(self.op.draining().iter().copied())
            .collect()
    }

    /// Sets the pattern versions of a fresh engine (restoring a checkpoint that had some
    /// draining), before its keys are restored.
    pub fn restore_slots(
        &mut self,
        slots: Vec<(Arc<CompiledPattern>, bool)>,
    ) -> Result<(), PatternErrors> {
        self.set_slots(slots.into_iter().map(|(p, d)| (p, None, d)).collect())
    }

    /// The engine's pattern versions become `slots`: (pattern, the old slot whose state it takes
    /// over, draining).
    fn set_slots(
        &mut self,
        slots: Vec<(Arc<CompiledPattern>, Option<usize>, bool)>,
    ) -> Result<(), PatternErrors> {
        let mut schema = self.schema.clone();
        let mut nfas = Vec::new();
        for (p, old, _) in &slots {
            match old {
                Some(i) => nfas.push(self.op.patterns()[*i].clone()),
                None => nfas.push(Arc::new(build(p.spec(), &mut schema)?)),
            }
        }
        let keep: Vec<Option<usize>> = slots.iter().map(|s| s.1).collect();
        let draining: Vec<bool> = slots.iter().map(|s| s.2).collect();
        let grown = schema.len() != self.schema.len();
        self.schema = schema;
        self.wanted = wanted_fields(&self.schema, &self.key_path, &self.time_path);
        self.op.set_patterns_draining(nfas, &keep, &draining);
        if grown {
            let (schema, wanted) = (&self.schema, &self.wanted);
            self.op
                .map_queued(|e| e.with_row(row_of(schema, wanted, e.json())));
        }
        let old_stats = std::mem::take(&mut self.stats.patterns);
        self.stats.patterns = slots
            .iter()
            .map(|(p, k, d)| match k {
                Some(i) => PatternStats {
                    draining: *d,
                    ..old_stats[*i].clone()
                },
                None => PatternStats {
                    pattern: p.name().to_string(),
                    version: p.version(),
                    draining: *d,
                    ..Default::default()
                },
            })
            .collect();
        self.names = slots.iter().map(|(p, _, _)| Arc::from(p.name())).collect();
        self.patterns = slots.into_iter().map(|(p, _, _)| p).collect();
        Ok(())
    }

    /// Starts (or stops) recording which keys' state may change; see
    /// [`take_changed`](Self::take_changed).
    pub fn track_changes(&mut self, on: bool) {
        self.op.track_changes(on);
    }

    /// The keys whose state may have changed since the last call (when tracked): what a
    /// checkpoint snapshots with [`snapshot_key`](Self::snapshot_key).
    pub fn take_changed(&mut self) -> Vec<String> {
        self.op
            .take_changed()
            .into_iter()
            .map(Key::into_string)
            .collect()
    }

    /// The state of `key` (events waiting for the watermark, partial matches and their events)
    /// as JSON, or `None` if the key has no state. An engine with the same patterns restores it
    /// with [`restore_key`](Self::restore_key).
    pub fn snapshot_key(&self, key: &str) -> Option<Vec<u8>> {
        let snap = self
            .op
            .snapshot_key(&Key::from(key), |e| e.with_row(Row::empty()))?;
        serde_json::to_vec(&snap).ok()
    }

    /// Replaces `key`'s state by a snapshot of [`snapshot_key`](Self::snapshot_key). What is
    /// due at or before the current watermark is handled at the next advance.
    pub fn restore_key(&mut self, key: &str, snapshot: &[u8]) -> Result<(), RecordError> {
        let snap: cep::KeySnapshot<JsonEvent> =
            serde_json::from_slice(snapshot).map_err(|e| RecordError {
                message: format!("unreadable state of key '{key}': {e}"),
            })?;
        let (schema, wanted) = (&self.schema, &self.wanted);
        self.op
            .restore_key(Key::from(key), snap, |e| {
                e.with_row(row_of(schema, wanted, e.json()))
            })
            .map_err(|e| RecordError {
                message: format!("state of key '{key}': {e}"),
            })
    }

    /// Number of keys with state.
    pub fn key_count(&self) -> usize {
        self.op.key_count()
    }

    /// When `key` next has something to do (`i64::MAX`: nothing until an event), or `None` if
    /// it has no state; see `cep::CepOperator::due_of`.
    pub fn due_of(&self, key: &str) -> Option<i64> {
        self.op.due_of(&Key::from(key))
    }

    /// Drops `key`'s state; true if it had any.
    pub fn remove_key(&mut self, key: &str) -> bool {
        self.op.remove_key(&Key::from(key))
    }

    /// The partial matches held for `key` now.
    pub fn partial_matches(&self, key: &str) -> Vec<PartialMatchInfo> {
        self.op
            .partial_matches(&Key::from(key))
            .into_iter()
            .map(|(i, pm)| PartialMatchInfo {
                version: self.patterns[i].version(),
                draining: self.op.draining()[i],
                pattern: self.patterns[i].name().to_string(),
                state: pm.stage,
                start_timestamp: pm.start_ts,
                events: MatchEvents(pm.events).to_json(),
            })
            .collect()
    }

    /// What the engine holds for `key` now: its partial matches and its events waiting for the
    /// watermark.
    pub fn key_view(&self, key: &str) -> KeyView {
        let waiting_events = self
            .op
            .waiting_events(&Key::from(key))
            .into_iter()
            .map(|(timestamp, event)| WaitingEvent { timestamp, event })
            .collect();
        KeyView {
            partial_matches: self.partial_matches(key),
            waiting_events,
        }
    }

    /// Counts of what the engine holds and did.
    pub fn stats(&self) -> EngineStats {
        let s = self.op.stats();
        let dropped = self.op.dropped();
        EngineStats {
            keys: s.keys,
            partial_matches: s.partial_matches,
            buffered_events: s.queued_events + s.buffered_events,
            dropped_partial_matches: dropped.partial_matches,
            evicted_keys: dropped.evicted_keys,
            expired_keys: dropped.expired_keys,
            ..self.stats.clone()
        }
    }
}

/// The top-level fields that the key, the time and the schema's paths start with.
fn wanted_fields(schema: &Schema, key: &[Seg], time: &[Seg]) -> Vec<Box<str>> {
    let mut wanted: Vec<Box<str>> = Vec::new();
    let firsts = [key, time].into_iter().filter_map(|p| match p.first() {
        Some(Seg::Key(k)) => Some(&**k),
        _ => None,
    });
    for name in firsts.chain(schema.top_fields()) {
        if !wanted.iter().any(|w| &**w == name) {
            wanted.push(name.into());
        }
    }
    wanted
}

/// Decodes the fields of an event object that some path reads (`wanted`) into `fields`, in
/// input order (filled in place: the list is large to move); false if the text is not a
/// well-formed JSON object.
pub(crate) fn decode_fields<'t>(
    wanted: &[Box<str>],
    text: &'t str,
    fields: &mut FieldList<'t>,
) -> bool {
    use serde::de::DeserializeSeed;
    let mut de = serde_json::Deserializer::from_str(text);
    let seed = Fields {
        wanted,
        out: fields,
    };
    seed.deserialize(&mut de).is_ok() && de.end().is_ok()
}

/// The row of an event kept as text (every field absent if the text is not a JSON object).
fn row_of(schema: &Schema, wanted: &[Box<str>], text: &str) -> Row {
    let mut fields = FieldList::new();
    if !decode_fields(wanted, text, &mut fields) {
        fields.clear();
    }
    schema.extract_from(&fields[..])
}

/// Decodes the members of a JSON object whose names are wanted into `out`; checks and skips
/// the others.
struct Fields<'w, 'o, 'de> {
    wanted: &'w [Box<str>],
    out: &'o mut FieldList<'de>,
}

impl<'de> serde::de::DeserializeSeed<'de> for Fields<'_, '_, 'de> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Fields<'_, '_, 'de> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> Result<(), A::Error> {
        while let Some(name) = m.next_key::<Name<'de>>()? {
            if self.wanted.iter().any(|w| **w == *name.0) {
                let v: Value = m.next_value()?;
                self.out.push((name.0, Field::Json(v)));
            } else {
                m.next_value::<serde::de::IgnoredAny>()?;
            }
        }
        Ok(())
    }
}

/// A member name, borrowed from the input when it has no escapes.
struct Name<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Name<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Name<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a member name")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Name<'de>, E> {
                Ok(Name(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Name<'de>, E> {
                Ok(Name(Cow::Owned(v.to_string())))
            }
        }
        d.deserialize_str(V)
    }
}

/// What a field's value is, for messages (as [`json_type`]).
fn field_type(f: FieldRef<'_>) -> &'static str {
    match f {
        FieldRef::Str(_) => "a string",
        FieldRef::Json(v) => json_type(v),
    }
}

/// What a JSON value is, for messages: "null", "a boolean", "a number", "a string", "an array",
/// "an object".
pub fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
