//! Pipelines: a source, how to read key and time, a watermark strategy, the patterns evaluated,
//! and where outputs go. Each running pipeline owns one engine.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use tokio::sync::broadcast;

use crate::duration::Millis;
use crate::engine::{CompiledPattern, EngineConfig, JsonEngine, Output, PatternErrors, TimeFormat};

/// How a pipeline is configured: the body of POST/PUT /pipelines.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PipelineSpec {
    /// The pipeline's name (taken from the path on PUT).
    #[serde(default)]
    pub name: String,
    /// Where events come from.
    #[serde(default)]
    pub source: SourceSpec,
    /// The field path whose value partitions events into keys.
    #[serde(default = "default_key_by")]
    pub key_by: String,
    /// The field path holding the event time.
    #[serde(default = "default_time_field")]
    pub time_field: String,
    /// How the event time is written.
    #[serde(default)]
    pub time_format: TimeFormatSpec,
    /// The watermark strategy.
    #[serde(default)]
    pub watermark: WatermarkSpec,
    /// The patterns evaluated: `"*"` (all, the default) or a list of names.
    #[serde(default)]
    pub patterns: PatternSelection,
    /// Where matches, timeouts and late events go.
    #[serde(default = "default_sinks")]
    pub sinks: Vec<SinkSpec>,
}

fn default_key_by() -> String {
    "key".to_string()
}

fn default_time_field() -> String {
    "ts".to_string()
}

fn default_sinks() -> Vec<SinkSpec> {
    vec![SinkSpec::Recent]
}

impl PipelineSpec {
    /// The default pipeline: key_by "key", time field "ts", epoch_ms, all patterns.
    pub fn default_named(name: &str) -> PipelineSpec {
        PipelineSpec {
            name: name.to_string(),
            source: SourceSpec::Http,
            key_by: default_key_by(),
            time_field: default_time_field(),
            time_format: TimeFormatSpec::EpochMs,
            watermark: WatermarkSpec::default(),
            patterns: PatternSelection::All,
            sinks: default_sinks(),
        }
    }

    fn engine_config(&self) -> EngineConfig {
        EngineConfig {
            key_by: self.key_by.clone(),
            time_field: self.time_field.clone(),
            time_format: match self.time_format {
                TimeFormatSpec::EpochMs => TimeFormat::EpochMs,
                TimeFormatSpec::EpochS => TimeFormat::EpochS,
                TimeFormatSpec::Rfc3339 => TimeFormat::Rfc3339,
            },
            out_of_orderness_ms: self.watermark.out_of_orderness.0,
        }
    }
}

/// Where a pipeline's events come from.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum SourceSpec {
    /// Events are posted to POST /pipelines/{name}/events.
    #[default]
    Http,
}

/// Where a pipeline's outputs go.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum SinkSpec {
    /// The in-memory ring of recent outputs (GET .../matches) and its live stream (SSE).
    Recent,
}

/// How event times are written.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum TimeFormatSpec {
    /// Milliseconds since the epoch, a number.
    #[default]
    EpochMs,
    /// Seconds since the epoch, a number.
    EpochS,
    /// An RFC 3339 string.
    Rfc3339,
}

/// The watermark strategy: bounded out-of-orderness, plus idleness.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WatermarkSpec {
    /// How far behind the largest timestamp seen the watermark stays.
    #[serde(default)]
    pub out_of_orderness: Millis,
    /// After this long without events, the watermark follows wall-clock time (so windows close
    /// and timeouts fire without new events). None: it moves only with events.
    #[serde(default)]
    pub idleness: Option<Millis>,
}

/// The patterns a pipeline evaluates.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum PatternSelection {
    /// Every registered pattern, including those registered later.
    #[default]
    All,
    /// These patterns.
    Names(Vec<String>),
}

impl PatternSelection {
    /// Whether the pattern `name` is selected.
    pub fn includes(&self, name: &str) -> bool {
        match self {
            PatternSelection::All => true,
            PatternSelection::Names(names) => names.iter().any(|n| n == name),
        }
    }
}

impl Serialize for PatternSelection {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            PatternSelection::All => serializer.serialize_str("*"),
            PatternSelection::Names(names) => names.serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for PatternSelection {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<PatternSelection, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Text(String),
            Names(Vec<String>),
        }
        match Repr::deserialize(deserializer).map_err(|_| {
            serde::de::Error::custom("patterns must be \"*\" or a list of pattern names")
        })? {
            Repr::Text(t) if t == "*" => Ok(PatternSelection::All),
            Repr::Text(_) => Err(serde::de::Error::custom(
                "patterns must be \"*\" or a list of pattern names",
            )),
            Repr::Names(names) => Ok(PatternSelection::Names(names)),
        }
    }
}

/// What the store keeps for a pipeline.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PipelineRecord {
    /// The configuration.
    pub spec: PipelineSpec,
    /// Whether intake is paused.
    #[serde(default)]
    pub paused: bool,
}

/// One output as kept in the ring and sent on the stream.
#[derive(Debug)]
pub struct OutputRecord {
    /// Position in the pipeline's output sequence (starts at 1).
    pub seq: u64,
    /// "match", "timeout" or "late".
    pub kind: String,
    /// The pattern, for matches and timeouts.
    pub pattern: Option<String>,
    /// The key.
    pub key: String,
    /// The JSON sent to clients (the engine's output plus `seq`).
    pub json: Value,
}

impl OutputRecord {
    fn from_json(json: Value) -> Option<OutputRecord> {
        let seq = json.get("seq")?.as_u64()?;
        let kind = json.get("kind")?.as_str()?.to_string();
        let pattern = json
            .get("pattern")
            .and_then(Value::as_str)
            .map(str::to_string);
        let key = match json.get("key") {
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
            None => String::new(),
        };
        Some(OutputRecord {
            seq,
            kind,
            pattern,
            key,
            json,
        })
    }

    /// Whether the record passes the filters (None: any).
    pub fn matches(&self, filter: &OutputFilter) -> bool {
        filter.kind.as_deref().is_none_or(|k| k == self.kind)
            && filter
                .pattern
                .as_deref()
                .is_none_or(|p| self.pattern.as_deref() == Some(p))
            && filter.key.as_deref().is_none_or(|k| k == self.key)
            && filter.after.is_none_or(|a| self.seq > a)
    }
}

/// Filters of GET .../matches and .../matches/stream.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputFilter {
    /// Only this pattern's outputs.
    pub pattern: Option<String>,
    /// Only this key's outputs.
    pub key: Option<String>,
    /// Only this kind: match, timeout or late.
    pub kind: Option<String>,
    /// At most this many (the most recent).
    pub limit: Option<usize>,
    /// Only outputs with a larger `seq`.
    pub after: Option<u64>,
}

/// Counters of one pattern in one pipeline.
#[derive(Clone, Copy, Debug, Default)]
pub struct PatternCounts {
    /// Matches emitted.
    pub matches: u64,
    /// Timed-out partial matches emitted.
    pub timeouts: u64,
}

/// Counters of one pipeline since the process started.
#[derive(Debug, Default)]
pub struct PipelineCounters {
    /// Events accepted.
    pub events_in: AtomicU64,
    /// Records rejected.
    pub rejected: AtomicU64,
    /// Late events.
    pub late: AtomicU64,
    /// Per pattern.
    pub patterns: Mutex<BTreeMap<String, PatternCounts>>,
}

/// The outcome of one ingest request.
#[derive(Debug, Default, Serialize)]
pub struct IngestReport {
    /// Records handed to the engine.
    pub accepted: usize,
    /// Records refused.
    pub rejected: usize,
    /// Why each refused record was refused.
    pub errors: Vec<RecordRejection>,
}

/// One refused record.
#[derive(Debug, Serialize)]
pub struct RecordRejection {
    /// Its position in the body: array index or NDJSON line (both from 0).
    pub index: usize,
    /// Why.
    pub reason: String,
}

/// Ingest failed as a whole.
#[derive(Debug)]
pub enum IngestError {
    /// The pipeline is paused.
    Paused,
}

struct Running {
    spec: PipelineSpec,
    engine: JsonEngine,
    paused: bool,
    /// When events last arrived and the watermark right after them (for idleness).
    last_events: Option<(Instant, i64)>,
}

struct Ring {
    capacity: usize,
    next_seq: u64,
    items: VecDeque<Arc<OutputRecord>>,
}

/// A running pipeline.
pub struct Pipeline {
    name: String,
    running: Mutex<Running>,
    ring: Mutex<Ring>,
    live: broadcast::Sender<Arc<OutputRecord>>,
    /// Counters for /metrics.
    pub counters: PipelineCounters,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves consistent-enough state for the next request.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Pipeline {
    /// Starts a pipeline with the given patterns.
    pub fn start(
        record: PipelineRecord,
        patterns: Vec<Arc<CompiledPattern>>,
        capacity: usize,
    ) -> Result<Pipeline, PatternErrors> {
        let engine = JsonEngine::new(record.spec.engine_config(), patterns)?;
        let (live, _) = broadcast::channel(1024);
        Ok(Pipeline {
            name: record.spec.name.clone(),
            running: Mutex::new(Running {
                spec: record.spec,
                engine,
                paused: record.paused,
                last_events: None,
            }),
            ring: Mutex::new(Ring {
                capacity,
                next_seq: 1,
                items: VecDeque::new(),
            }),
            live,
            counters: PipelineCounters::default(),
        })
    }

    /// The pipeline's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The stored form: configuration and paused flag.
    pub fn record(&self) -> PipelineRecord {
        let running = lock(&self.running);
        PipelineRecord {
            spec: running.spec.clone(),
            paused: running.paused,
        }
    }

    /// The configuration.
    pub fn spec(&self) -> PipelineSpec {
        lock(&self.running).spec.clone()
    }

    /// Whether intake is paused.
    pub fn is_paused(&self) -> bool {
        lock(&self.running).paused
    }

    /// Pauses or resumes intake.
    pub fn set_paused(&self, paused: bool) {
        lock(&self.running).paused = paused;
    }

    /// Replaces the configuration: a new engine, so partial matches are dropped; recent outputs,
    /// live subscribers and counters stay.
    pub fn reconfigure(
        &self,
        spec: PipelineSpec,
        patterns: Vec<Arc<CompiledPattern>>,
    ) -> Result<(), PatternErrors> {
        let engine = JsonEngine::new(spec.engine_config(), patterns)?;
        let mut running = lock(&self.running);
        running.spec = spec;
        running.engine = engine;
        running.last_events = None;
        Ok(())
    }

    /// Switches the evaluated patterns; partial matches of replaced or removed patterns are
    /// dropped by the engine.
    pub fn set_patterns(&self, patterns: Vec<Arc<CompiledPattern>>) -> Result<(), PatternErrors> {
        lock(&self.running).engine.set_patterns(patterns)
    }

    /// Feeds records to the engine. `records` holds each record's index and either the event or
    /// why it could not be read.
    pub fn ingest(
        &self,
        records: Vec<(usize, Result<Value, String>)>,
    ) -> Result<IngestReport, IngestError> {
        let mut report = IngestReport::default();
        let mut outputs = Vec::new();
        let mut running = lock(&self.running);
        if running.paused {
            return Err(IngestError::Paused);
        }
        for (index, record) in records {
            let result = match record {
                Ok(event @ Value::Object(_)) => running
                    .engine
                    .push(event, &mut outputs)
                    .map_err(|e| e.to_string()),
                Ok(other) => Err(format!(
                    "an event must be a JSON object, not {}",
                    json_type(&other)
                )),
                Err(reason) => Err(reason),
            };
            match result {
                Ok(()) => report.accepted += 1,
                Err(reason) => {
                    report.rejected += 1;
                    report.errors.push(RecordRejection { index, reason });
                }
            }
        }
        if report.accepted > 0 {
            running.last_events = Some((Instant::now(), running.engine.watermark()));
        }
        self.counters
            .events_in
            .fetch_add(report.accepted as u64, Ordering::Relaxed);
        self.counters
            .rejected
            .fetch_add(report.rejected as u64, Ordering::Relaxed);
        // Published under the engine lock, so the sequence follows the engine's order.
        self.publish(outputs);
        drop(running);
        Ok(report)
    }

    /// Advances the watermark to `watermark` if it is ahead; returns the watermark after.
    pub fn advance_watermark(&self, watermark: i64) -> i64 {
        let mut outputs = Vec::new();
        let mut running = lock(&self.running);
        if watermark > running.engine.watermark() {
            running.engine.advance_watermark(watermark, &mut outputs);
        }
        self.publish(outputs);
        running.engine.watermark()
    }

    /// Idleness: after `idleness` without events, the watermark follows wall-clock time from
    /// where the last events left it.
    pub fn tick(&self, now: Instant) {
        let mut outputs = Vec::new();
        let mut running = lock(&self.running);
        let Some(idleness) = running.spec.watermark.idleness else {
            return;
        };
        let Some((at, watermark)) = running.last_events else {
            return;
        };
        if running.paused || watermark == i64::MIN {
            return;
        }
        let idle = now.saturating_duration_since(at);
        if idle.as_millis() < idleness.0 as u128 {
            return;
        }
        let target = watermark.saturating_add(idle.as_millis().min(i64::MAX as u128) as i64);
        if target > running.engine.watermark() {
            running.engine.advance_watermark(target, &mut outputs);
        }
        self.publish(outputs);
    }

    /// The current watermark (`i64::MIN` before the first event).
    pub fn watermark(&self) -> i64 {
        lock(&self.running).engine.watermark()
    }

    /// The partial matches held for `key`, as JSON.
    pub fn partial_matches(&self, key: &str) -> Value {
        let running = lock(&self.running);
        serde_json::to_value(running.engine.partial_matches(key)).unwrap_or(Value::Null)
    }

    /// The engine's statistics, as JSON.
    pub fn stats(&self) -> Value {
        let running = lock(&self.running);
        serde_json::to_value(running.engine.stats()).unwrap_or(Value::Null)
    }

    fn publish(&self, outputs: Vec<Output>) {
        if outputs.is_empty() {
            return;
        }
        let mut ring = lock(&self.ring);
        let mut counts = lock(&self.counters.patterns);
        for output in outputs {
            let mut json = match serde_json::to_value(&output) {
                Ok(Value::Object(map)) => map,
                Ok(_) | Err(_) => continue,
            };
            let seq = ring.next_seq;
            ring.next_seq += 1;
            json.insert("pipeline".to_string(), Value::from(self.name.as_str()));
            json.insert("seq".to_string(), Value::from(seq));
            let Some(record) = OutputRecord::from_json(Value::Object(json)) else {
                continue;
            };
            match (record.kind.as_str(), &record.pattern) {
                ("match", Some(p)) => counts.entry(p.clone()).or_default().matches += 1,
                ("timeout", Some(p)) => counts.entry(p.clone()).or_default().timeouts += 1,
                ("late", _) => {
                    self.counters.late.fetch_add(1, Ordering::Relaxed);
                }
                _ => {}
            }
            let record = Arc::new(record);
            if ring.items.len() == ring.capacity {
                ring.items.pop_front();
            }
            ring.items.push_back(record.clone());
            // No subscribers is fine.
            let _ = self.live.send(record);
        }
    }

    /// The most recent outputs passing `filter`, oldest first.
    pub fn recent(&self, filter: &OutputFilter, limit: usize) -> Vec<Value> {
        let ring = lock(&self.ring);
        let mut out: Vec<Value> = ring
            .items
            .iter()
            .rev()
            .filter(|r| r.matches(filter))
            .take(limit)
            .map(|r| r.json.clone())
            .collect();
        out.reverse();
        out
    }

    /// A live feed of outputs.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<OutputRecord>> {
        self.live.subscribe()
    }

    /// The recent outputs as stored at shutdown.
    pub fn recent_json(&self) -> Value {
        let ring = lock(&self.ring);
        Value::Array(ring.items.iter().map(|r| r.json.clone()).collect())
    }

    /// Restores recent outputs stored at the last shutdown.
    pub fn restore_recent(&self, stored: Value) {
        let Value::Array(items) = stored else {
            return;
        };
        let mut ring = lock(&self.ring);
        for json in items {
            if let Some(record) = OutputRecord::from_json(json) {
                ring.next_seq = ring.next_seq.max(record.seq + 1);
                if ring.items.len() == ring.capacity {
                    ring.items.pop_front();
                }
                ring.items.push_back(Arc::new(record));
            }
        }
    }
}

/// "an object", "a string", ... for messages.
pub fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_defaults_and_selection() {
        let spec: PipelineSpec = serde_json::from_str("{\"name\": \"p\"}").unwrap();
        assert_eq!(spec, PipelineSpec::default_named("p"));
        let spec: PipelineSpec = serde_json::from_str(
            "{\"patterns\": [\"a\"], \"watermark\": {\"out_of_orderness\": \"2s\"}}",
        )
        .unwrap();
        assert!(spec.patterns.includes("a"));
        assert!(!spec.patterns.includes("b"));
        assert_eq!(spec.watermark.out_of_orderness, Millis(2000));
        assert!(serde_json::from_str::<PipelineSpec>("{\"patterns\": \"all\"}").is_err());
        assert!(
            serde_json::from_str::<PipelineSpec>("{\"sinks\": [{\"type\": \"kafka\"}]}").is_err()
        );
        let text = serde_json::to_string(&PipelineSpec::default_named("d")).unwrap();
        assert!(text.contains("\"patterns\":\"*\""));
    }
}
