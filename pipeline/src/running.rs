//! A pipeline running inside `cep serve`: its spec, its engine and its outputs.
//!
//! An HTTP source drives the engine directly: `POST .../events` calls [`Pipeline::ingest`] under
//! the engine's lock. A Kafka source runs a [`KafkaPipeline`](crate::kafka::KafkaPipeline) on a
//! thread of its own (consumer group, changelog checkpoints, Kafka sink); the service talks to it
//! through a [`KafkaHandle`](crate::kafka::KafkaHandle): new patterns, per-key questions, its
//! status, stop. Either way the outputs of a pipeline with a `recent` sink go to its [`Outputs`]:
//! a ring of recent outputs (`GET .../matches`) and a live feed (SSE).
//!
//! Lock order: a pipeline's `running`, then its outputs' ring, then the counters.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use cep_patterns::{CompiledPattern, JsonEngine, Output, OutputKind, PatternErrors};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::broadcast;

use crate::kafka::KafkaHandle;
use crate::spec::{PipelineSpec, SourceSpec};

/// A page of outputs (`GET .../matches`).
#[derive(Debug, Serialize)]
pub struct RecentPage {
    /// The outputs, oldest first.
    pub outputs: Vec<Value>,
    /// Whether more outputs pass the filter: after the last one (with `after`), or before the
    /// first (without).
    pub more: bool,
    /// The oldest `seq` the ring still holds.
    pub first_seq: Option<u64>,
    /// With `after`: whether outputs after the cursor have already left the ring (the reader fell
    /// more than the ring's capacity behind).
    pub missed: bool,
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

/// One output as kept in the ring and sent on the stream: the engine's output, typed, with the
/// pipeline's name and its position in the pipeline's output sequence. Written as the engine's
/// output object plus `"pipeline"` and `"seq"`.
#[derive(Debug, Serialize)]
pub struct OutputRecord {
    /// The output.
    #[serde(flatten)]
    pub output: Output,
    /// The pipeline.
    pub pipeline: Arc<str>,
    /// Position in the pipeline's output sequence (starts at 1).
    pub seq: u64,
}

/// An output record read back from the store.
struct StoredRecord {
    output: Output,
    seq: u64,
}

impl StoredRecord {
    /// Reads `{..output, "pipeline", "seq"}`. The events are kept as JSON text, which serde_json
    /// reads from text only: the output is read from its text.
    fn read(json: Value) -> Option<StoredRecord> {
        let Value::Object(mut map) = json else {
            return None;
        };
        let seq = map.remove("seq")?.as_u64()?;
        map.remove("pipeline");
        let output = serde_json::from_str(&Value::Object(map).to_string()).ok()?;
        Some(StoredRecord { output, seq })
    }
}

impl OutputRecord {
    /// The record as JSON.
    pub fn to_json(&self) -> Value {
        // An output is plain data (strings, numbers, JSON events): it always serialises.
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// The record as JSON text.
    pub fn to_json_string(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// `match`, `timeout` or `late`.
    pub fn kind_name(&self) -> &'static str {
        kind_name(self.output.kind)
    }

    /// Whether the record passes the filters (None: any).
    pub fn matches(&self, filter: &OutputFilter) -> bool {
        filter
            .kind
            .as_deref()
            .is_none_or(|k| k == kind_name(self.output.kind))
            && filter
                .pattern
                .as_deref()
                .is_none_or(|p| self.output.pattern.as_deref() == Some(p))
            && filter.key.as_deref().is_none_or(|k| k == self.output.key)
            && filter.after.is_none_or(|a| self.seq > a)
    }
}

fn kind_name(kind: OutputKind) -> &'static str {
    match kind {
        OutputKind::Match => "match",
        OutputKind::Timeout => "timeout",
        OutputKind::Late => "late",
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
    /// At most this many: the most recent, or the first after `after`.
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
    /// Records rejected (HTTP) or sent to the dead letters (Kafka).
    pub rejected: AtomicU64,
    /// Late events.
    pub late: AtomicU64,
    /// Per pattern.
    pub patterns: Mutex<BTreeMap<String, PatternCounts>>,
}

/// The outputs of a pipeline: counted, numbered, kept in a ring and sent to live subscribers.
pub struct Outputs {
    name: Arc<str>,
    ring: Mutex<Ring>,
    live: broadcast::Sender<Arc<OutputRecord>>,
    /// Counters for /metrics.
    pub counters: PipelineCounters,
}

struct Ring {
    capacity: usize,
    next_seq: u64,
    items: VecDeque<Arc<OutputRecord>>,
}

impl Outputs {
    fn new(name: &str, capacity: usize) -> Outputs {
        let (live, _) = broadcast::channel(1024);
        Outputs {
            name: Arc::from(name),
            ring: Mutex::new(Ring {
                capacity: capacity.max(1),
                next_seq: 1,
                items: VecDeque::new(),
            }),
            live,
            counters: PipelineCounters::default(),
        }
    }

    /// Counts outputs; numbers them and keeps them when `keep` (a `recent` sink).
    pub fn publish(&self, outputs: Vec<Output>, keep: bool) {
        if outputs.is_empty() {
            return;
        }
        let mut ring = lock(&self.ring);
        let mut counts = lock(&self.counters.patterns);
        for output in outputs {
            match (output.kind, &output.pattern) {
                (OutputKind::Match, Some(p)) => {
                    counts.entry(p.to_string()).or_default().matches += 1
                }
                (OutputKind::Timeout, Some(p)) => {
                    counts.entry(p.to_string()).or_default().timeouts += 1
                }
                (OutputKind::Late, _) => {
                    self.counters.late.fetch_add(1, Ordering::Relaxed);
                }
                _ => {}
            }
            if !keep {
                continue;
            }
            let seq = ring.next_seq;
            ring.next_seq += 1;
            let record = Arc::new(OutputRecord {
                output,
                pipeline: self.name.clone(),
                seq,
            });
            if ring.items.len() == ring.capacity {
                ring.items.pop_front();
            }
            ring.items.push_back(record.clone());
            // No subscribers is fine.
            let _ = self.live.send(record);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves consistent-enough state for the next request.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
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
    /// The pipeline's events come from Kafka, not HTTP.
    NotHttp,
}

/// What the service gives every pipeline it starts.
#[derive(Clone, Debug)]
pub struct Environment {
    /// How many recent outputs a pipeline keeps.
    pub recent_outputs: usize,
    /// Where pipelines keep local files (a Kafka pipeline's RocksDB state backend).
    pub data_dir: PathBuf,
}

struct Running {
    spec: PipelineSpec,
    paused: bool,
    patterns: Vec<Arc<CompiledPattern>>,
    driver: Driver,
}

enum Driver {
    /// Events come from `POST .../events`.
    Http {
        engine: Box<JsonEngine>,
        /// When events last arrived and the watermark right after them (for idleness).
        last_events: Option<(Instant, i64)>,
    },
    /// Events come from Kafka; `None` while paused.
    Kafka(Option<KafkaHandle>),
}

impl Driver {
    /// Stops a Kafka pipeline's thread (its last epoch committed); nothing for HTTP.
    fn stop_kafka(&mut self) {
        if let Driver::Kafka(handle) = self {
            if let Some(h) = handle.take() {
                h.stop();
            }
        }
    }
}

/// A running pipeline.
pub struct Pipeline {
    name: String,
    env: Environment,
    running: Mutex<Running>,
    outputs: Arc<Outputs>,
}

impl Pipeline {
    /// Starts a pipeline with the given patterns (a Kafka pipeline connects on its own thread:
    /// this returns at once, and its status tells how it goes).
    pub fn start(
        record: PipelineRecord,
        patterns: Vec<Arc<CompiledPattern>>,
        env: &Environment,
    ) -> Result<Pipeline, PatternErrors> {
        let name = record.spec.name.clone();
        let outputs = Arc::new(Outputs::new(&name, env.recent_outputs));
        let driver = Self::driver(&record.spec, &patterns, record.paused, env, &outputs)?;
        Ok(Pipeline {
            name,
            env: env.clone(),
            running: Mutex::new(Running {
                spec: record.spec,
                paused: record.paused,
                patterns,
                driver,
            }),
            outputs,
        })
    }

    fn driver(
        spec: &PipelineSpec,
        patterns: &[Arc<CompiledPattern>],
        paused: bool,
        env: &Environment,
        outputs: &Arc<Outputs>,
    ) -> Result<Driver, PatternErrors> {
        Ok(match spec.source {
            SourceSpec::Kafka(_) => {
                // Checked here, so that a pipeline the engine refuses is refused at once.
                JsonEngine::new(spec.engine_config(), patterns.to_vec())?;
                Driver::Kafka((!paused).then(|| {
                    KafkaHandle::start(spec.clone(), patterns.to_vec(), env, outputs.clone())
                }))
            }
            SourceSpec::Http | SourceSpec::File { .. } => Driver::Http {
                engine: Box::new(spec.engine(patterns.to_vec())?),
                last_events: None,
            },
        })
    }

    /// The pipeline's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The outputs: counters, recent ring, live feed.
    pub fn outputs(&self) -> &Outputs {
        &self.outputs
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

    /// Pauses or resumes intake. A Kafka pipeline commits its last epoch and leaves its group
    /// when paused, and restores from its checkpoint when resumed.
    pub fn set_paused(&self, paused: bool) {
        let mut running = lock(&self.running);
        running.paused = paused;
        let Running {
            spec,
            patterns,
            driver,
            ..
        } = &mut *running;
        if paused {
            driver.stop_kafka();
        } else if let Driver::Kafka(handle @ None) = driver {
            *handle = Some(KafkaHandle::start(
                spec.clone(),
                patterns.clone(),
                &self.env,
                self.outputs.clone(),
            ));
        }
    }

    /// Replaces the configuration: a new engine (an HTTP pipeline's partial matches are
    /// dropped; a Kafka pipeline stops and starts again from its checkpoint); recent outputs,
    /// live subscribers and counters stay.
    pub fn reconfigure(
        &self,
        spec: PipelineSpec,
        patterns: Vec<Arc<CompiledPattern>>,
    ) -> Result<(), PatternErrors> {
        let mut running = lock(&self.running);
        running.driver.stop_kafka();
        let driver = Self::driver(&spec, &patterns, running.paused, &self.env, &self.outputs)?;
        running.driver = driver;
        running.spec = spec;
        running.patterns = patterns;
        Ok(())
    }

    /// Switches the evaluated patterns; partial matches of replaced or removed patterns are
    /// dropped by the engine.
    pub fn set_patterns(&self, patterns: Vec<Arc<CompiledPattern>>) -> Result<(), PatternErrors> {
        let mut running = lock(&self.running);
        let config = running.spec.engine_config();
        match &mut running.driver {
            Driver::Http { engine, .. } => engine.set_patterns(patterns.clone())?,
            Driver::Kafka(handle) => {
                JsonEngine::new(config, patterns.clone())?;
                if let Some(h) = handle {
                    h.set_patterns(patterns.clone());
                }
            }
        }
        running.patterns = patterns;
        Ok(())
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
        let keep = running.spec.has_recent_sink();
        let Driver::Http {
            engine,
            last_events,
        } = &mut running.driver
        else {
            return Err(IngestError::NotHttp);
        };
        for (index, record) in records {
            let result = match record {
                Ok(event @ Value::Object(_)) => {
                    engine.push(event, &mut outputs).map_err(|e| e.to_string())
                }
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
            *last_events = Some((Instant::now(), engine.watermark()));
        }
        let counters = &self.outputs.counters;
        counters
            .events_in
            .fetch_add(report.accepted as u64, Ordering::Relaxed);
        counters
            .rejected
            .fetch_add(report.rejected as u64, Ordering::Relaxed);
        // Published under the engine lock, so the sequence follows the engine's order.
        self.outputs.publish(outputs, keep);
        drop(running);
        Ok(report)
    }

    /// Advances the watermark to `watermark` if it is ahead; returns the watermark after. Only
    /// HTTP pipelines take a watermark from a client (a Kafka pipeline's comes from its
    /// partitions): `None` for the others.
    pub fn advance_watermark(&self, watermark: i64) -> Option<i64> {
        let mut outputs = Vec::new();
        let mut running = lock(&self.running);
        let keep = running.spec.has_recent_sink();
        let Driver::Http { engine, .. } = &mut running.driver else {
            return None;
        };
        if watermark > engine.watermark() {
            engine.advance_watermark(watermark, &mut outputs);
        }
        let now = engine.watermark();
        self.outputs.publish(outputs, keep);
        Some(now)
    }

    /// Idleness of an HTTP pipeline: its one input is idle after `idleness` without events, and
    /// then the watermark follows the wall clock from where the last events left it.
    pub fn tick(&self, now: Instant) {
        let mut outputs = Vec::new();
        let mut running = lock(&self.running);
        let Some(idleness) = running.spec.watermark.idleness else {
            return;
        };
        if running.paused {
            return;
        }
        let keep = running.spec.has_recent_sink();
        let Driver::Http {
            engine,
            last_events,
        } = &mut running.driver
        else {
            return;
        };
        let Some((at, watermark)) = *last_events else {
            return;
        };
        if watermark == i64::MIN {
            return;
        }
        let idle = now.saturating_duration_since(at);
        if idle.as_millis() < idleness.0 as u128 {
            return;
        }
        let target = watermark.saturating_add(idle.as_millis().min(i64::MAX as u128) as i64);
        if target > engine.watermark() {
            engine.advance_watermark(target, &mut outputs);
        }
        self.outputs.publish(outputs, keep);
    }

    /// The current watermark (`i64::MIN` before the first event).
    pub fn watermark(&self) -> i64 {
        let running = lock(&self.running);
        match &running.driver {
            Driver::Http { engine, .. } => engine.watermark(),
            Driver::Kafka(Some(h)) => h.status().watermark.unwrap_or(i64::MIN),
            Driver::Kafka(None) => i64::MIN,
        }
    }

    /// What the pipeline holds for `key` (its partial matches and its events waiting for the
    /// watermark, `cep_patterns::KeyView`), as JSON. A Kafka pipeline is asked on its thread
    /// (None when it does not answer within `timeout`: paused, restoring or stopped).
    pub fn key_view(&self, key: &str, timeout: Duration) -> Option<Value> {
        let ask = {
            let running = lock(&self.running);
            match &running.driver {
                Driver::Http { engine, .. } => {
                    return Some(serde_json::to_value(engine.key_view(key)).unwrap_or(Value::Null))
                }
                Driver::Kafka(Some(h)) => h.ask_partial_matches(key),
                Driver::Kafka(None) => return None,
            }
        };
        ask.recv_timeout(timeout).ok()
    }

    /// The engine's statistics, as JSON.
    pub fn stats(&self) -> Value {
        let running = lock(&self.running);
        match &running.driver {
            Driver::Http { engine, .. } => {
                serde_json::to_value(engine.stats()).unwrap_or(Value::Null)
            }
            Driver::Kafka(Some(h)) => h.status().stats.clone(),
            Driver::Kafka(None) => Value::Null,
        }
    }

    /// What a Kafka pipeline reports of itself: state, partitions (offsets, lag, watermarks),
    /// counters. None for other pipelines.
    pub fn kafka_status(&self) -> Option<Value> {
        let running = lock(&self.running);
        match &running.driver {
            Driver::Http { .. } => None,
            Driver::Kafka(Some(h)) => Some(h.status().to_json()),
            Driver::Kafka(None) => Some(serde_json::json!({"state": "paused"})),
        }
    }

    /// Stops a Kafka pipeline's thread, committing its last epoch (nothing for others).
    pub fn stop(&self) {
        lock(&self.running).driver.stop_kafka();
    }

    /// Outputs passing `filter`, oldest first: with `filter.after`, the first `limit` after
    /// that `seq` (a cursor: poll again with the last `seq` while `more` is true); without, the
    /// most recent `limit`.
    pub fn recent(&self, filter: &OutputFilter, limit: usize) -> RecentPage {
        let ring = lock(&self.outputs.ring);
        let first_seq = ring.items.front().map(|r| r.seq);
        let mut matching: Box<dyn Iterator<Item = &Arc<OutputRecord>>> = if filter.after.is_some() {
            Box::new(ring.items.iter().filter(|r| r.matches(filter)))
        } else {
            Box::new(ring.items.iter().rev().filter(|r| r.matches(filter)))
        };
        let mut outputs: Vec<Value> = matching.by_ref().take(limit).map(|r| r.to_json()).collect();
        let more = matching.next().is_some();
        if filter.after.is_none() {
            outputs.reverse();
        }
        // Outputs after the cursor that the ring no longer holds: the reader fell behind.
        let missed = match (filter.after, first_seq) {
            (Some(after), Some(first)) => first > after.saturating_add(1),
            _ => false,
        };
        RecentPage {
            outputs,
            more,
            first_seq,
            missed,
        }
    }

    /// The outputs the ring holds after `seq`, oldest first.
    pub fn records_after(&self, seq: u64) -> Vec<Arc<OutputRecord>> {
        let ring = lock(&self.outputs.ring);
        ring.items.iter().filter(|r| r.seq > seq).cloned().collect()
    }

    /// A live feed of outputs.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<OutputRecord>> {
        self.outputs.live.subscribe()
    }

    /// The recent outputs as stored at shutdown.
    pub fn recent_json(&self) -> Value {
        let ring = lock(&self.outputs.ring);
        Value::Array(ring.items.iter().map(|r| r.to_json()).collect())
    }

    /// Restores recent outputs stored at the last shutdown.
    pub fn restore_recent(&self, stored: Value) {
        let Value::Array(items) = stored else {
            return;
        };
        let mut ring = lock(&self.outputs.ring);
        for json in items {
            let Some(record) = StoredRecord::read(json) else {
                continue;
            };
            ring.next_seq = ring.next_seq.max(record.seq + 1);
            if ring.items.len() == ring.capacity {
                ring.items.pop_front();
            }
            ring.items.push_back(Arc::new(OutputRecord {
                output: record.output,
                pipeline: self.outputs.name.clone(),
                seq: record.seq,
            }));
        }
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        self.stop();
    }
}

pub use cep_patterns::json_type;
