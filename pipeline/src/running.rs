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

use std::borrow::Cow;
use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use cep_patterns::{CompiledPattern, JsonEngine, Output, OutputKind, PatternErrors, Replace};
use cep_runtime::Clock;
use rocksdb::WriteBatch;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::broadcast;

use crate::journal::Journal;
use crate::kafka::KafkaHandle;
use crate::shards::Engine;
use crate::spec::{PipelineSpec, SourceSpec, TimeMode};
use crate::store::{now_ms, seq_of, Keys, Store};

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
        let mut out = Vec::with_capacity(256);
        self.write_json(&mut out);
        // Written from strings and events' JSON texts: UTF-8.
        String::from_utf8(out).unwrap_or_default()
    }

    /// Appends the record as JSON text: the same text as serde_json writes from its derived
    /// `Serialize` (the output's members, then `pipeline` and `seq`), without serde's
    /// buffering of flattened members.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        self.output.write_json_open(out);
        out.extend_from_slice(b",\"pipeline\":");
        cep_patterns::write_str(out, &self.pipeline);
        out.extend_from_slice(b",\"seq\":");
        out.extend_from_slice(itoa::Buffer::new().format(self.seq).as_bytes());
        out.push(b'}');
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

impl PipelineCounters {
    /// Events accepted, records rejected and late events since the pipeline was created
    /// (carried over restarts by its checkpoints).
    pub fn to_json(&self) -> Value {
        serde_json::json!({
            "events_in": self.events_in.load(Ordering::Relaxed),
            "rejected": self.rejected.load(Ordering::Relaxed),
            "late": self.late.load(Ordering::Relaxed),
        })
    }
}

/// The outputs of a pipeline: counted, numbered, written to the output log (in the service),
/// kept in a ring of the most recent and sent to live subscribers.
pub struct Outputs {
    name: Arc<str>,
    ring: Mutex<Ring>,
    live: broadcast::Sender<Arc<OutputRecord>>,
    /// Counters for /metrics.
    pub counters: PipelineCounters,
    log: Option<(Arc<Store>, Keys)>,
    retention: Retention,
    trimmed: Mutex<Option<Instant>>,
}

struct Ring {
    capacity: usize,
    next_seq: u64,
    items: VecDeque<Arc<OutputRecord>>,
}

/// How long the output log keeps outputs.
#[derive(Clone, Copy, Debug)]
pub struct Retention {
    /// At most this many per pipeline (the oldest go first).
    pub count: u64,
    /// None older than this (ms).
    pub age_ms: Option<u64>,
}

impl Default for Retention {
    fn default() -> Retention {
        Retention {
            count: 1_000_000,
            age_ms: Some(7 * 24 * 3600 * 1000),
        }
    }
}

impl Outputs {
    fn new(name: &str, env: &Environment) -> Outputs {
        let (live, _) = broadcast::channel(1024);
        Outputs {
            name: Arc::from(name),
            ring: Mutex::new(Ring {
                capacity: env.recent_outputs.max(1),
                next_seq: 1,
                items: VecDeque::new(),
            }),
            live,
            counters: PipelineCounters::default(),
            log: env.store.clone().map(|s| (s, Keys::new(name))),
            retention: env.retention,
            trimmed: Mutex::new(None),
        }
    }

    /// Counts outputs and, when `keep` (a `recent` sink), numbers them.
    pub(crate) fn number(&self, outputs: Vec<Output>, keep: bool) -> Vec<Arc<OutputRecord>> {
        if outputs.is_empty() {
            return Vec::new();
        }
        let mut ring = lock(&self.ring);
        let mut counts = lock(&self.counters.patterns);
        let mut records = Vec::new();
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
            records.push(Arc::new(OutputRecord {
                output,
                pipeline: self.name.clone(),
                seq,
            }));
        }
        records
    }

    /// Adds numbered outputs to a batch of the output log.
    pub(crate) fn log_into(&self, batch: &mut WriteBatch, records: &[Arc<OutputRecord>]) {
        let Some((_, keys)) = &self.log else { return };
        let at = now_ms().to_be_bytes();
        for r in records {
            let mut value = Vec::with_capacity(256);
            value.extend_from_slice(&at);
            r.write_json(&mut value);
            batch.put(keys.out(r.seq), value);
        }
    }

    /// Makes numbered (and written) outputs visible: the ring and the live feed.
    pub(crate) fn show(&self, records: Vec<Arc<OutputRecord>>) {
        if records.is_empty() {
            return;
        }
        let mut ring = lock(&self.ring);
        for record in records {
            if ring.items.len() == ring.capacity {
                ring.items.pop_front();
            }
            ring.items.push_back(record.clone());
            // No subscribers is fine.
            let _ = self.live.send(record);
        }
    }

    /// Counts outputs; numbers them, writes them to the output log and shows them when `keep`
    /// (a `recent` sink). Returns why the log refused them, if it did (they are not shown).
    pub fn publish(&self, outputs: Vec<Output>, keep: bool) -> Result<(), String> {
        let records = self.number(outputs, keep);
        if records.is_empty() {
            return Ok(());
        }
        if let Some((store, _)) = &self.log {
            let mut batch = WriteBatch::default();
            self.log_into(&mut batch, &records);
            store.commit_wait(batch)?;
        }
        self.show(records);
        Ok(())
    }

    /// Counts a request's records.
    pub(crate) fn count_input(&self, accepted: usize, rejected: usize) {
        let c = &self.counters;
        c.events_in.fetch_add(accepted as u64, Ordering::Relaxed);
        c.rejected.fetch_add(rejected as u64, Ordering::Relaxed);
    }

    /// The next output's `seq`.
    pub(crate) fn next_seq(&self) -> u64 {
        lock(&self.ring).next_seq
    }

    /// Numbers from `seq` on at least (never reuses one the output log holds).
    pub(crate) fn ensure_next_seq(&self, seq: u64) {
        let mut ring = lock(&self.ring);
        ring.next_seq = ring.next_seq.max(seq);
    }

    /// The counters as a checkpoint keeps them.
    pub(crate) fn counters_json(&self) -> Value {
        let c = &self.counters;
        let patterns: BTreeMap<String, (u64, u64)> = lock(&c.patterns)
            .iter()
            .map(|(k, v)| (k.clone(), (v.matches, v.timeouts)))
            .collect();
        serde_json::json!({
            "events_in": c.events_in.load(Ordering::Relaxed),
            "rejected": c.rejected.load(Ordering::Relaxed),
            "late": c.late.load(Ordering::Relaxed),
            "patterns": patterns,
        })
    }

    /// Restores the counters and the output sequence of a checkpoint.
    pub(crate) fn restore_counters(&self, json: &Value, next_seq: u64) {
        let c = &self.counters;
        let get = |k: &str| json.get(k).and_then(Value::as_u64).unwrap_or(0);
        c.events_in.store(get("events_in"), Ordering::Relaxed);
        c.rejected.store(get("rejected"), Ordering::Relaxed);
        c.late.store(get("late"), Ordering::Relaxed);
        let patterns: BTreeMap<String, (u64, u64)> = json
            .get("patterns")
            .and_then(|p| serde_json::from_value(p.clone()).ok())
            .unwrap_or_default();
        *lock(&c.patterns) = patterns
            .into_iter()
            .map(|(k, (matches, timeouts))| (k, PatternCounts { matches, timeouts }))
            .collect();
        let mut ring = lock(&self.ring);
        ring.next_seq = next_seq.max(1);
    }

    /// Fills the ring with the most recent outputs of the output log.
    fn load_recent(&self) -> anyhow::Result<()> {
        let Some((store, keys)) = &self.log else {
            return Ok(());
        };
        let capacity = lock(&self.ring).capacity as u64;
        let last = store
            .last_under(&keys.out_prefix())?
            .as_deref()
            .and_then(seq_of)
            .unwrap_or(0);
        let from = last.saturating_sub(capacity) + 1;
        let records = self.read_log(from, usize::MAX, |_| true)?;
        let mut ring = lock(&self.ring);
        ring.items.clear();
        for r in records {
            ring.next_seq = ring.next_seq.max(r.seq + 1);
            ring.items.push_back(r);
        }
        Ok(())
    }

    /// Up to `limit` records of the output log from `from` on that pass `keep`, oldest first.
    fn read_log(
        &self,
        from: u64,
        limit: usize,
        mut keep: impl FnMut(&OutputRecord) -> bool,
    ) -> anyhow::Result<Vec<Arc<OutputRecord>>> {
        let Some((store, keys)) = &self.log else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        store.scan_with(&keys.out_prefix(), &keys.out(from), |k, v| {
            let (Some(seq), Some(json)) = (seq_of(k), v.get(8..)) else {
                return true;
            };
            let Some(record) = serde_json::from_slice(json)
                .ok()
                .and_then(StoredRecord::read)
            else {
                return true;
            };
            let record = OutputRecord {
                output: record.output,
                pipeline: self.name.clone(),
                seq: record.seq.max(seq),
            };
            if keep(&record) {
                out.push(Arc::new(record));
            }
            out.len() < limit
        })?;
        Ok(out)
    }

    /// The oldest `seq` the output log holds.
    fn first_logged(&self) -> Option<u64> {
        let (store, keys) = self.log.as_ref()?;
        let mut first = None;
        let _ = store.scan_with(&keys.out_prefix(), &keys.out_prefix(), |k, _| {
            first = seq_of(k);
            false
        });
        first
    }

    /// Drops what the retention no longer keeps from the output log (at most once per
    /// `every`).
    fn trim(&self, every: Duration) {
        let Some((store, keys)) = &self.log else {
            return;
        };
        {
            let mut last = lock(&self.trimmed);
            if last.is_some_and(|t| t.elapsed() < every) {
                return;
            }
            *last = Some(Instant::now());
        }
        let next = self.next_seq();
        let mut below = next.saturating_sub(self.retention.count);
        if let Some(age) = self.retention.age_ms {
            let oldest = now_ms().saturating_sub(age);
            let _ = store.scan_with(&keys.out_prefix(), &keys.out(below), |k, v| {
                let at = v
                    .get(..8)
                    .map_or(0, |b| u64::from_be_bytes(b.try_into().unwrap_or([0; 8])));
                match seq_of(k) {
                    Some(seq) if at < oldest => {
                        below = below.max(seq + 1);
                        true
                    }
                    _ => false,
                }
            });
        }
        if below > 0 {
            let mut batch = WriteBatch::default();
            batch.delete_range(keys.out(0), keys.out(below));
            store.commit(batch, |_| {});
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
    /// The request repeated an earlier one's `Idempotency-Key`: nothing was evaluated again, and
    /// the counts are the earlier answer's.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub duplicate: bool,
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
    /// The store could not make the events durable: nothing of the request counts.
    Store(String),
}

/// What the service gives every pipeline it starts.
#[derive(Clone)]
pub struct Environment {
    /// How many recent outputs a pipeline keeps in memory.
    pub recent_outputs: usize,
    /// Where pipelines keep local files (a Kafka pipeline's RocksDB state backend).
    pub data_dir: PathBuf,
    /// The service's store: write-ahead logs, checkpoints and output logs. None: memory only.
    pub store: Option<Arc<Store>>,
    /// How often an HTTP pipeline checkpoints (when its log has entries).
    pub checkpoint_every: Duration,
    /// How long the output log keeps outputs.
    pub retention: Retention,
    /// The clock of processing-time pipelines (the system clock; tests drive a manual one).
    pub clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Environment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Environment")
            .field("recent_outputs", &self.recent_outputs)
            .field("data_dir", &self.data_dir)
            .field("store", &self.store.as_ref().map(|s| s.durability()))
            .finish()
    }
}

impl Environment {
    /// A memory-only environment (tests, tools).
    pub fn in_memory(recent_outputs: usize, data_dir: PathBuf) -> Environment {
        Environment {
            recent_outputs,
            data_dir,
            store: None,
            checkpoint_every: Duration::from_secs(10),
            retention: Retention::default(),
            clock: Arc::new(cep_runtime::SystemClock),
        }
    }
}

/// A checkpoint is also taken after this many log entries.
const CHECKPOINT_ENTRIES: u64 = 20_000;

struct Running {
    spec: PipelineSpec,
    paused: bool,
    patterns: Vec<Arc<CompiledPattern>>,
    driver: Driver,
}

enum Driver {
    /// Events come from `POST .../events`.
    Http {
        engine: Box<Engine>,
        /// When events last arrived and the watermark right after them (for idleness).
        last_events: Option<(Instant, i64)>,
        /// The log and checkpoints, in the service.
        journal: Option<Box<Journal>>,
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
    retire_every: Mutex<Instant>,
}

/// Why a pipeline could not start.
#[derive(Debug)]
pub enum StartError {
    /// The engine refused the spec or the patterns.
    Patterns(PatternErrors),
    /// Its stored state could not be read back.
    Store(anyhow::Error),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Patterns(e) => write!(f, "{e}"),
            StartError::Store(e) => write!(f, "{e:#}"),
        }
    }
}

impl From<PatternErrors> for StartError {
    fn from(e: PatternErrors) -> StartError {
        StartError::Patterns(e)
    }
}

/// Waits for a batch handed to the committer.
type Ticket = std::sync::mpsc::Receiver<Result<(), String>>;

impl Pipeline {
    /// Starts a pipeline with the given patterns (a Kafka pipeline connects on its own thread:
    /// this returns at once, and its status tells how it goes). An HTTP pipeline in the service
    /// restores its checkpoint and replays its log first.
    pub fn start(
        record: PipelineRecord,
        patterns: Vec<Arc<CompiledPattern>>,
        env: &Environment,
    ) -> Result<Pipeline, StartError> {
        let name = record.spec.name.clone();
        let outputs = Arc::new(Outputs::new(&name, env));
        outputs.load_recent().map_err(StartError::Store)?;
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
            retire_every: Mutex::new(Instant::now()),
        })
    }

    fn driver(
        spec: &PipelineSpec,
        patterns: &[Arc<CompiledPattern>],
        paused: bool,
        env: &Environment,
        outputs: &Arc<Outputs>,
    ) -> Result<Driver, StartError> {
        Ok(match spec.source {
            SourceSpec::Kafka(_) => {
                // Checked here, so that a pipeline the engine refuses is refused at once.
                JsonEngine::new(spec.engine_config(), patterns.to_vec())?;
                Driver::Kafka((!paused).then(|| {
                    KafkaHandle::start(spec.clone(), patterns.to_vec(), env, outputs.clone())
                }))
            }
            SourceSpec::Http | SourceSpec::File { .. } => {
                // Checked first: a spec the engine refuses is refused before the store is read.
                let fresh = Engine::new(spec, patterns.to_vec(), env.clock.clone())?;
                let (engine, journal) = match &env.store {
                    Some(store) => {
                        let (engine, journal) =
                            Journal::restore(store, spec, patterns, outputs, env.clock.clone())
                                .map_err(StartError::Store)?;
                        (engine, Some(Box::new(journal)))
                    }
                    None => (fresh, None),
                };
                let watermark = engine.watermark();
                Driver::Http {
                    engine: Box::new(engine),
                    // A restored pipeline is idle from now on, as far as it knows.
                    last_events: (watermark > i64::MIN).then(|| (Instant::now(), watermark)),
                    journal,
                }
            }
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
    /// dropped, and its log and checkpoint with them; a Kafka pipeline stops and starts again
    /// from its checkpoint); outputs, live subscribers and counters stay.
    pub fn reconfigure(
        &self,
        spec: PipelineSpec,
        patterns: Vec<Arc<CompiledPattern>>,
    ) -> Result<(), StartError> {
        let mut running = lock(&self.running);
        running.driver.stop_kafka();
        let mut journal = match &mut running.driver {
            Driver::Http { journal, .. } => journal.take(),
            Driver::Kafka(_) => None,
        };
        let driver = match (&spec.source, journal.as_mut()) {
            (SourceSpec::Http | SourceSpec::File { .. }, Some(j)) => {
                let mut engine = Engine::new(&spec, patterns.clone(), self.env.clock.clone())?;
                engine.track_changes(engine.is_replayable());
                j.respec(&spec, &engine);
                let mut batch = WriteBatch::default();
                j.reset(&mut batch, &mut engine, &patterns, &self.outputs);
                j.store
                    .commit_wait(batch)
                    .map_err(|e| StartError::Store(anyhow::anyhow!(e)))?;
                Driver::Http {
                    engine: Box::new(engine),
                    last_events: None,
                    journal,
                }
            }
            _ => {
                let mut driver =
                    Self::driver(&spec, &patterns, running.paused, &self.env, &self.outputs)?;
                if let Driver::Http {
                    engine,
                    journal: Some(j),
                    ..
                } = &mut driver
                {
                    // A new engine: whatever an earlier life of this pipeline left goes.
                    let mut fresh = Engine::new(&spec, patterns.clone(), self.env.clock.clone())?;
                    fresh.track_changes(fresh.is_replayable());
                    **engine = fresh;
                    let mut batch = WriteBatch::default();
                    j.reset(&mut batch, engine, &patterns, &self.outputs);
                    j.store
                        .commit_wait(batch)
                        .map_err(|e| StartError::Store(anyhow::anyhow!(e)))?;
                }
                driver
            }
        };
        running.driver = driver;
        running.spec = spec;
        running.patterns = patterns;
        Ok(())
    }

    /// Switches the evaluated patterns. A changed pattern's partial matches drain (run on to
    /// their match or timeout beside the new version) or restart (are dropped), as `mode`
    /// says; a removed pattern's go. An HTTP pipeline logs the change, in order with its events.
    /// A Kafka pipeline hands the change to its thread, which checkpoints every version it runs
    /// (with the RocksDB backend, changed patterns restart).
    pub fn set_patterns(
        &self,
        patterns: Vec<Arc<CompiledPattern>>,
        mode: Replace,
    ) -> Result<(), StartError> {
        let mut running = lock(&self.running);
        let config = running.spec.engine_config();
        match &mut running.driver {
            Driver::Http {
                engine,
                journal: Some(journal),
                ..
            } => {
                let mut batch = WriteBatch::default();
                journal
                    .set_patterns(&mut batch, engine, patterns.clone(), mode)
                    .map_err(StartError::Store)?;
                journal
                    .store
                    .commit_wait(batch)
                    .map_err(|e| StartError::Store(anyhow::anyhow!(e)))?;
            }
            Driver::Http { engine, .. } => engine.set_patterns_mode(patterns.clone(), mode)?,
            Driver::Kafka(handle) => {
                JsonEngine::new(config, patterns.clone())?;
                if let Some(h) = handle {
                    h.set_patterns(patterns.clone(), mode);
                }
            }
        }
        running.patterns = patterns;
        Ok(())
    }

    /// Feeds records to the engine: each record's index and either its JSON text or why it
    /// could not be read. In the service the accepted events and their outputs are written to
    /// the store before this returns (and the outputs shown only then). A request repeating an
    /// earlier `id` (idempotency key) is answered as that one was, and evaluates nothing.
    pub fn ingest(
        &self,
        records: Vec<(usize, Result<&str, String>)>,
        id: Option<&str>,
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
            journal,
        } = &mut running.driver
        else {
            return Err(IngestError::NotHttp);
        };
        if let Some(j) = journal.as_deref() {
            if let Some(e) = j.store.failure() {
                return Err(IngestError::Store(e));
            }
            if let Some((accepted, rejected)) = id.and_then(|id| j.ids.get(id)) {
                // The first one may still be on its way to the disk: wait for it.
                let (tx, rx) = std::sync::mpsc::sync_channel(1);
                j.store.commit(WriteBatch::default(), move |r| {
                    let _ = tx.send(r);
                });
                drop(running);
                wait(rx)?;
                report.accepted = accepted;
                report.rejected = rejected;
                report.duplicate = true;
                return Ok(report);
            }
        }
        // Each record as one line (the log, the outputs and the live feed are line based): a
        // record written over several lines is compacted first.
        let mut lines: Vec<(usize, Cow<'_, str>)> = Vec::new();
        for (index, record) in records {
            let line = match record {
                Ok(text) if text.contains(['\n', '\r']) => serde_json::from_str::<Value>(text)
                    .map(|v| Cow::Owned(v.to_string()))
                    .map_err(|e| format!("malformed JSON: {e}")),
                Ok(text) => Ok(Cow::Borrowed(text)),
                Err(reason) => Err(reason),
            };
            match line {
                Ok(line) => lines.push((index, line)),
                Err(reason) => {
                    report.rejected += 1;
                    report.errors.push(RecordRejection { index, reason });
                }
            }
        }
        let texts: Vec<&str> = lines.iter().map(|(_, line)| line.as_ref()).collect();
        let results = engine.push_batch(&texts, &mut outputs);
        let mut accepted: Vec<&str> = Vec::with_capacity(texts.len());
        for (((index, _), text), result) in lines.iter().zip(&texts).zip(results) {
            match result {
                Ok(()) => {
                    report.accepted += 1;
                    accepted.push(text);
                }
                Err(e) => {
                    report.rejected += 1;
                    report.errors.push(RecordRejection {
                        index: *index,
                        reason: e.to_string(),
                    });
                }
            }
        }
        // The records refused before and by the engine, in their order.
        report.errors.sort_by_key(|r| r.index);
        // In processing time, the batch is matched now.
        engine.on_clock(&mut outputs);
        if report.accepted > 0 {
            *last_events = Some((Instant::now(), engine.watermark()));
        }
        self.outputs.count_input(report.accepted, report.rejected);
        // Numbered under the engine's lock, so the sequence follows the engine's order.
        let records = self.outputs.number(outputs, keep);
        let Some(j) = journal.as_deref_mut() else {
            self.outputs.show(records);
            return Ok(report);
        };
        let mut batch = WriteBatch::default();
        if report.accepted > 0 {
            j.log_events(&mut batch, id, report.accepted, report.rejected, &accepted);
            if let Some(id) = id {
                j.ids
                    .insert(id.to_string(), report.accepted, report.rejected);
            }
        }
        self.outputs.log_into(&mut batch, &records);
        let ticket = self.hand_over(&j.store, batch, records);
        drop(running);
        wait(ticket)?;
        Ok(report)
    }

    /// Hands a batch to the committer; its outputs are shown once it is written.
    fn hand_over(
        &self,
        store: &Store,
        batch: WriteBatch,
        records: Vec<Arc<OutputRecord>>,
    ) -> Ticket {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let outputs = self.outputs.clone();
        store.commit(batch, move |r| {
            if r.is_ok() {
                outputs.show(records);
            }
            let _ = tx.send(r);
        });
        rx
    }

    /// Moves the engine's watermark (logged, outputs written and shown) under the lock.
    fn step_watermark(
        &self,
        running: &mut Running,
        target: Option<i64>,
    ) -> Option<Result<Option<Ticket>, String>> {
        let keep = running.spec.has_recent_sink();
        let Driver::Http {
            engine, journal, ..
        } = &mut running.driver
        else {
            return None;
        };
        if target.is_some_and(|t| t <= engine.watermark()) {
            return Some(Ok(None));
        }
        if let Some(e) = journal.as_deref().and_then(|j| j.store.failure()) {
            return Some(Err(e));
        }
        let mut outputs = Vec::new();
        match target {
            Some(t) => engine.advance_watermark(t, &mut outputs),
            // Processing time: to the clock.
            None => engine.on_clock(&mut outputs),
        }
        let records = self.outputs.number(outputs, keep);
        let Some(j) = journal.as_deref_mut() else {
            self.outputs.show(records);
            return Some(Ok(None));
        };
        if target.is_none() && records.is_empty() {
            return Some(Ok(None));
        }
        let mut batch = WriteBatch::default();
        if let Some(t) = target {
            j.log_watermark(&mut batch, t);
        }
        self.outputs.log_into(&mut batch, &records);
        Some(Ok(Some(self.hand_over(&j.store, batch, records))))
    }

    /// Advances the watermark to `watermark` if it is ahead; returns the watermark after. Only
    /// HTTP pipelines take a watermark from a client (a Kafka pipeline's comes from its
    /// partitions): `None` for the others.
    pub fn advance_watermark(&self, watermark: i64) -> Option<Result<i64, IngestError>> {
        let mut running = lock(&self.running);
        let step = self.step_watermark(&mut running, Some(watermark))?;
        let now = match &running.driver {
            Driver::Http { engine, .. } => engine.watermark(),
            Driver::Kafka(_) => i64::MIN,
        };
        drop(running);
        Some(match step {
            Ok(Some(ticket)) => wait(ticket).map(|_| now),
            Ok(None) => Ok(now),
            Err(e) => Err(IngestError::Store(e)),
        })
    }

    /// What the service does every tick: idleness of an HTTP pipeline (its one input is idle
    /// after `idleness` without events, and then the watermark follows the wall clock from where
    /// the last events left it), checkpoints when due, output retention.
    pub fn tick(&self, now: Instant) {
        self.outputs.trim(self.env.checkpoint_every);
        let mut running = lock(&self.running);
        let mut ticket = None;
        if running.spec.time.mode == TimeMode::Processing {
            // Processing time follows the clock: timeouts and windows it has passed fire.
            if !running.paused {
                if let Some(Ok(t)) = self.step_watermark(&mut running, None) {
                    ticket = t;
                }
            }
        } else if let (Some(idleness), false) = (running.spec.watermark.idleness, running.paused) {
            if let Driver::Http {
                last_events: Some((at, watermark)),
                ..
            } = running.driver
            {
                let idle = now.saturating_duration_since(at);
                if watermark > i64::MIN && idle.as_millis() >= idleness.0 as u128 {
                    let target =
                        watermark.saturating_add(idle.as_millis().min(i64::MAX as u128) as i64);
                    if let Some(Ok(t)) = self.step_watermark(&mut running, Some(target)) {
                        ticket = t;
                    }
                }
            }
        }
        if let Driver::Http {
            engine, journal, ..
        } = &mut running.driver
        {
            // Draining pattern versions that hold nothing go (looked at about once a second:
            // it visits every key).
            if engine.is_draining()
                && self
                    .retire_every
                    .lock()
                    .map(|mut t| {
                        let due = t.elapsed() >= Duration::from_secs(1);
                        if due {
                            *t = Instant::now();
                        }
                        due
                    })
                    .unwrap_or(false)
            {
                match journal.as_deref_mut() {
                    Some(j) => {
                        let mut batch = WriteBatch::default();
                        if j.retire_drained(&mut batch, engine) {
                            j.store.commit(batch, |_| {});
                        }
                    }
                    None => {
                        engine.retire_drained();
                    }
                }
            }
        }
        if let Driver::Http {
            engine,
            journal: Some(j),
            ..
        } = &mut running.driver
        {
            if j.due(self.env.checkpoint_every, CHECKPOINT_ENTRIES) {
                let mut batch = WriteBatch::default();
                j.checkpoint(&mut batch, engine, &self.outputs);
                let name = self.name.clone();
                j.store.commit(batch, move |r| {
                    if let Err(e) = r {
                        tracing::error!(pipeline = %name, error = %e, "checkpoint failed");
                    }
                });
            }
        }
        drop(running);
        if let Some(t) = ticket {
            let _ = wait(t);
        }
    }

    /// Writes a checkpoint of an HTTP pipeline now (at shutdown: the next start replays
    /// nothing) and waits for it.
    pub fn checkpoint(&self) -> Result<(), String> {
        let mut running = lock(&self.running);
        if let Driver::Http {
            engine,
            journal: Some(j),
            ..
        } = &mut running.driver
        {
            if j.logs_events() {
                let mut batch = WriteBatch::default();
                j.checkpoint(&mut batch, engine, &self.outputs);
                return j.store.commit_wait(batch);
            }
        }
        Ok(())
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
    /// that `seq` (a cursor: poll again with the last `seq` while `more` is true), read from
    /// the output log when the ring no longer holds them; without, the most recent `limit`.
    pub fn recent(&self, filter: &OutputFilter, limit: usize) -> RecentPage {
        let ring = lock(&self.outputs.ring);
        let ring_first = ring.items.front().map(|r| r.seq);
        let logged_first = self.outputs.first_logged();
        let first_seq = match (logged_first, ring_first) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if let Some(after) = filter.after {
            let in_ring =
                ring_first.is_some_and(|f| f <= after.saturating_add(1)) || ring_first.is_none();
            if !in_ring && self.outputs.log.is_some() {
                drop(ring);
                let read = self
                    .outputs
                    .read_log(after.saturating_add(1), limit.saturating_add(1), |r| {
                        r.matches(filter)
                    })
                    .unwrap_or_default();
                let more = read.len() > limit;
                let outputs = read.iter().take(limit).map(|r| r.to_json()).collect();
                return RecentPage {
                    outputs,
                    more,
                    first_seq,
                    missed: first_seq.is_some_and(|f| f > after.saturating_add(1)),
                };
            }
        }
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
        // Outputs after the cursor that are gone: the reader fell behind the retention.
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

    /// The outputs after `seq`, oldest first (at most `limit`): from the ring, or from the
    /// output log when the ring no longer holds them.
    pub fn records_after(&self, seq: u64, limit: usize) -> Vec<Arc<OutputRecord>> {
        let ring = lock(&self.outputs.ring);
        let in_ring = ring
            .items
            .front()
            .is_none_or(|f| f.seq <= seq.saturating_add(1));
        if in_ring || self.outputs.log.is_none() {
            return ring
                .items
                .iter()
                .filter(|r| r.seq > seq)
                .take(limit)
                .cloned()
                .collect();
        }
        drop(ring);
        self.outputs
            .read_log(seq.saturating_add(1), limit, |_| true)
            .unwrap_or_default()
    }

    /// A live feed of outputs.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<OutputRecord>> {
        self.outputs.live.subscribe()
    }
}

fn wait(ticket: Ticket) -> Result<(), IngestError> {
    ticket
        .recv()
        .unwrap_or_else(|_| Err("the store's committer stopped".into()))
        .map_err(IngestError::Store)
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        self.stop();
    }
}

pub use cep_patterns::json_type;

#[cfg(test)]
mod tests {
    use super::*;
    use cep_patterns::condition::Row;
    use cep_patterns::{JsonEvent, MatchEvents};

    /// `write_json` writes what the derived `Serialize` (with the output flattened) writes.
    #[test]
    fn record_text_is_serdes() {
        let ev = |v: Value| Arc::new(JsonEvent::from_value(Row::empty(), &v));
        let events: Vec<(Arc<str>, Vec<Arc<JsonEvent>>)> = vec![
            (
                Arc::from("first"),
                vec![ev(serde_json::json!({"u": "a\"b"}))],
            ),
            (
                Arc::from("then\n"),
                vec![ev(serde_json::json!(1)), ev(Value::Null)],
            ),
        ];
        let outputs = [
            Output {
                kind: OutputKind::Match,
                pattern: Some(Arc::from("login")),
                key: "u\\1".into(),
                timestamp: 1_700_000_000_000,
                events: Some(MatchEvents::from(events)),
                event: None,
                version: 3,
            },
            Output {
                kind: OutputKind::Late,
                pattern: None,
                key: "é".into(),
                timestamp: -1,
                events: None,
                event: Some(ev(serde_json::json!({"ts": 1}))),
                version: 0,
            },
        ];
        for output in outputs {
            let r = OutputRecord {
                output,
                pipeline: Arc::from("p\u{1}"),
                seq: u64::MAX,
            };
            assert_eq!(r.to_json_string(), serde_json::to_string(&r).unwrap());
        }
    }
}
