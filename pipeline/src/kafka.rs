//! `cep kafka`: a Kafka-in, Kafka-out pipeline. JSON events are read by a consumer group from one or
//! more topics, evaluated by a [`JsonEngine`] in event time (per-partition watermarks with
//! idleness, combined by the minimum over the partitions that are not idle), and matches,
//! timeouts, late events and unreadable records are written to their topics, keyed by the CEP key.
//!
//! State is partitioned like the input: a CEP key belongs to the input partition its events come
//! from (the input must be keyed by the CEP key), and the pipeline checkpoints it to a *changelog
//! topic* with as many partitions as the input: per input partition `p`, the snapshots of its
//! changed keys (a tombstone when a key's state is empty) and a *marker* with the offset the
//! state covers, all written to changelog partition `p`. Any process of the group can rebuild a
//! partition's state from the changelog, so state moves with its partition on a rebalance.
//!
//! The pipeline runs in *epochs* (one per `--commit-interval`). At the end of an epoch the changed
//! keys are snapshotted and the markers written, then:
//!
//! - `at-least-once`: every output and changelog record is acknowledged (producer flush), then the
//!   consumed offsets are committed;
//! - `exactly-once`: outputs, dead letters and changelog records of the epoch are in one
//!   transaction, to which the consumed offsets are added before it commits.
//!
//! On every (re)assignment the pipeline starts over from the last checkpoint: it aborts the open
//! transaction, drops the engine, reads the changelog partitions of its partitions up to their end
//! (read committed), restores the keys, and skips input records below each marker's offset. See
//! `docs/kafka.md`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use cep_patterns::{CompiledPattern, Output, ParsedEvent, Replace};
use cep_runtime::kafka::{
    output_id, parse_json_object, rdkafka, AssignmentChange, DeadLetter, KafkaSink, KafkaSource,
    SinkConfig, SourceConfig, SourceRecord,
};
use cep_runtime::{Clock, SystemClock};
use serde_json::{json, Value};

use crate::journal::{compile_all, logged};
use crate::running::{Environment, Outputs};
use crate::spec::{
    Guarantee, KafkaSinkSpec, KafkaSourceSpec, Membership, PipelineSpec, SourceSpec, StateBackend,
    TimeMode, KAFKA_TIMESTAMP_FIELD,
};
use crate::window::PipelineEngine;

/// The default transactional id of a pipeline's Kafka sink: one per consumer group.
pub fn default_transactional_id(group: &str) -> String {
    format!("cep-{group}")
}

/// This process's identity in its consumer group (static membership): the source's
/// `instance_id`, else a `group.instance.id` option, else the sink's transactional id (explicit
/// or default). Each process of a group needs its own; a restarted process that keeps its
/// identity takes its partitions back at once, without waiting for the group to notice that
/// its predecessor is gone.
pub fn instance_id(source: &KafkaSourceSpec, sink: Option<&KafkaSinkSpec>) -> String {
    source
        .instance_id
        .clone()
        .or_else(|| source.options.get("group.instance.id").cloned())
        .or_else(|| sink.and_then(|s| s.transactional_id.clone()))
        .unwrap_or_else(|| default_transactional_id(&source.group))
}

/// What the pipeline's thread reports of itself.
#[derive(Clone, Debug, Default)]
pub struct KafkaStatus {
    /// `starting`, `restoring`, `running`, `failed` (retried) or `stopped`.
    pub state: &'static str,
    /// The last error, if the pipeline failed.
    pub error: Option<String>,
    /// The combined watermark of the assigned partitions.
    pub watermark: Option<i64>,
    /// Per assigned partition.
    pub partitions: Vec<PartitionStatus>,
    /// The engine's statistics (keys, partial matches, per pattern).
    pub stats: Value,
    /// Counters since the pipeline (re)started.
    pub records: u64,
    /// Records sent to the dead-letter topic (or skipped).
    pub dead_letters: u64,
    /// Outputs written to Kafka.
    pub outputs: u64,
    /// Completed epochs (checkpoints).
    pub epochs: u64,
    /// Restores from the changelog (assignments).
    pub restores: u64,
    /// Incremental rebalances that added partitions (their state restored, the others kept
    /// running), and that took partitions away (committed, then handed over).
    pub partitions_added: u64,
    /// See `partitions_added`.
    pub partitions_revoked: u64,
    /// When the last epoch was committed (ms since the epoch).
    pub last_commit_ms: Option<i64>,
    /// This process's identity in the group.
    pub instance_id: String,
}

/// One assigned partition.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PartitionStatus {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// The next offset to process (None before the first record).
    pub position: Option<i64>,
    /// The offset committed with the last epoch.
    pub committed: Option<i64>,
    /// The partition's end (high watermark) as last seen.
    pub end: Option<i64>,
    /// Records behind the end.
    pub lag: Option<i64>,
    /// The highest event time read from it.
    pub max_timestamp: Option<i64>,
}

impl KafkaStatus {
    /// As JSON, for the pipeline's status.
    pub fn to_json(&self) -> Value {
        json!({
            "state": self.state,
            "error": self.error,
            "instance_id": self.instance_id,
            "watermark": self.watermark,
            "partitions": self.partitions,
            "records": self.records,
            "dead_letters": self.dead_letters,
            "outputs": self.outputs,
            "epochs": self.epochs,
            "restores": self.restores,
            "rebalances": {"added": self.partitions_added, "revoked": self.partitions_revoked},
            "last_commit_ms": self.last_commit_ms,
        })
    }
}

/// A partial-matches question to the pipeline's thread, and where the answer goes.
type KeyQuestion = (String, mpsc::SyncSender<Value>);

/// What a Kafka pipeline running inside `cep serve` shares with the service.
#[derive(Clone)]
pub struct Hooks {
    /// The pipeline's outputs (recent ring, live feed, counters).
    pub outputs: Arc<Outputs>,
    /// Whether outputs are kept in the ring (a `recent` sink).
    pub keep_recent: bool,
    /// What the thread reports.
    pub status: Arc<Mutex<KafkaStatus>>,
    /// The patterns to run (the latest handed over), and if the thread has yet to take them,
    /// how changed ones replace theirs.
    pub patterns: Arc<Mutex<PatternUpdate>>,
    /// Questions about keys.
    pub questions: Arc<Mutex<mpsc::Receiver<KeyQuestion>>>,
    /// The service's clock (processing time).
    pub clock: Arc<dyn Clock>,
}

/// The latest patterns handed to a pipeline's thread, and how changed ones replace theirs if it
/// has yet to take them.
pub type PatternUpdate = (Vec<Arc<CompiledPattern>>, Option<Replace>);

/// A Kafka pipeline running on its own thread inside `cep serve`. A failure is reported in its
/// status and the pipeline starts again (from its last checkpoint) after a pause.
pub struct KafkaHandle {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    hooks: Hooks,
    ask: mpsc::Sender<KeyQuestion>,
}

/// The default session timeout of a static group member, ms.
pub const STATIC_SESSION_TIMEOUT_MS: u64 = 10_000;

/// How long a failed pipeline waits before it starts again.
const RETRY_AFTER: Duration = Duration::from_secs(5);

impl KafkaHandle {
    /// Starts the pipeline's thread.
    pub fn start(
        spec: PipelineSpec,
        patterns: Vec<Arc<CompiledPattern>>,
        env: &Environment,
        outputs: Arc<Outputs>,
    ) -> KafkaHandle {
        let (ask, questions) = mpsc::channel();
        let hooks = Hooks {
            outputs,
            keep_recent: spec.has_recent_sink(),
            status: Arc::new(Mutex::new(KafkaStatus {
                state: "starting",
                ..KafkaStatus::default()
            })),
            patterns: Arc::new(Mutex::new((patterns.clone(), None))),
            questions: Arc::new(Mutex::new(questions)),
            clock: env.clock.clone(),
        };
        let stop = Arc::new(AtomicBool::new(false));
        let data_dir = env.data_dir.join("kafka").join(&spec.name);
        let thread = {
            let (stop, hooks) = (stop.clone(), hooks.clone());
            std::thread::Builder::new()
                .name(format!("kafka-{}", spec.name))
                .spawn(move || supervise(spec, data_dir, hooks, &stop))
                .ok()
        };
        if thread.is_none() {
            lock(&hooks.status).state = "failed";
            lock(&hooks.status).error = Some("cannot start a thread".into());
        }
        KafkaHandle {
            stop,
            thread,
            hooks,
            ask,
        }
    }

    /// What the pipeline reports of itself.
    pub fn status(&self) -> MutexGuard<'_, KafkaStatus> {
        lock(&self.hooks.status)
    }

    /// Hands new patterns to the pipeline; changed ones drain or restart as `mode` says.
    pub fn set_patterns(&self, patterns: Vec<Arc<CompiledPattern>>, mode: Replace) {
        *lock(&self.hooks.patterns) = (patterns, Some(mode));
    }

    /// Asks the pipeline for the partial matches of `key`; the answer comes on the receiver.
    pub fn ask_partial_matches(&self, key: &str) -> mpsc::Receiver<Value> {
        let (tx, rx) = mpsc::sync_channel(1);
        let _ = self.ask.send((key.to_string(), tx));
        rx
    }

    /// Commits the last epoch and stops the thread.
    pub fn stop(mut self) {
        self.finish();
    }

    /// Asks the thread to stop and waits for it, up to [`STOP_WAIT`]: a pipeline still
    /// connecting (an unreachable broker, a long restore) stops once that call returns, without
    /// holding up the service meanwhile.
    fn finish(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let Some(t) = self.thread.take() else { return };
        // A pipeline that never connected has nothing to commit: no need to wait for it.
        let connected = matches!(lock(&self.hooks.status).state, "running" | "restoring");
        let until = Instant::now() + if connected { STOP_WAIT } else { Duration::ZERO };
        while !t.is_finished() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(20));
        }
        if t.is_finished() {
            let _ = t.join();
        } else {
            tracing::warn!(
                "kafka pipeline {:?} is still connecting or restoring; it stops when that call returns",
                t.thread().name().unwrap_or_default()
            );
        }
    }
}

/// How long stopping a Kafka pipeline waits for its thread (its last commit).
const STOP_WAIT: Duration = Duration::from_secs(15);

impl Drop for KafkaHandle {
    fn drop(&mut self) {
        self.finish();
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Runs the pipeline until `stop`, starting it again after each failure.
fn supervise(spec: PipelineSpec, data_dir: PathBuf, hooks: Hooks, stop: &AtomicBool) {
    while !stop.load(Ordering::SeqCst) {
        // A (re)start runs the latest patterns.
        let patterns = {
            let mut latest = lock(&hooks.patterns);
            latest.1 = None;
            latest.0.clone()
        };
        let result = KafkaPipeline::new(&spec, patterns.clone(), &data_dir, Some(hooks.clone()))
            .and_then(|mut p| p.run(stop));
        match result {
            Ok(()) => break,
            Err(e) => {
                tracing::error!(pipeline = %spec.name, "kafka pipeline failed: {e:#}; starting again in {RETRY_AFTER:?}");
                let mut status = lock(&hooks.status);
                status.state = "failed";
                status.error = Some(format!("{e:#}"));
                drop(status);
                let until = Instant::now() + RETRY_AFTER;
                while Instant::now() < until && !stop.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
    }
    lock(&hooks.status).state = "stopped";
}

/// Runs a Kafka pipeline in the foreground until `stop` (`cep kafka`). `data_dir` holds the
/// RocksDB state backend when the spec asks for one.
pub fn run_until(
    spec: &PipelineSpec,
    patterns: Vec<Arc<CompiledPattern>>,
    data_dir: &Path,
    stop: &AtomicBool,
) -> anyhow::Result<()> {
    KafkaPipeline::new(spec, patterns, data_dir, None)?.run(stop)
}

#[derive(Default, Debug)]
struct Counters {
    records: u64,
    skipped: u64,
    dead_letters: u64,
    outputs: u64,
    epochs: u64,
    restores: u64,
    /// Incremental rebalances: partitions added, partitions revoked.
    added: u64,
    revoked: u64,
    /// Keys moved from memory to RocksDB, and back.
    evicted: u64,
    loaded: u64,
}

/// An input partition.
type Part = (String, i32);

/// A record read, before the engine takes it.
enum Taken {
    /// Read as text (key, time and the conditions' fields decoded).
    Text(ParsedEvent),
    /// Decoded whole.
    Value(Value),
}

/// A Kafka-in, Kafka-out pipeline (see the module's documentation).
pub struct KafkaPipeline {
    name: String,
    /// In processing time (`time.mode`), the clock that stamps records and moves the watermark.
    processing: Option<Arc<dyn Clock>>,
    patterns: Vec<Arc<CompiledPattern>>,
    spec: PipelineSpec,
    engine: PipelineEngine,
    source: KafkaSource,
    sink: KafkaSink,
    /// Where each kind of output goes, and the guarantee.
    outputs_to: KafkaSinkSpec,
    changelog: Changelog,
    record_time: bool,
    commit_interval: Duration,
    epoch: u64,
    outs: Vec<Output>,
    /// Outputs of the open epoch for the recent ring: published when the epoch commits.
    recent: Vec<Output>,
    counters: Counters,
    /// The assigned partitions.
    assigned: BTreeSet<Part>,
    /// The input partition each key with state belongs to.
    homes: HashMap<String, Part>,
    /// Per partition, the offset the restored state covers: records below it are in the state.
    start: HashMap<Part, i64>,
    /// Partitions that need a marker at the end of the epoch (records read, keys changed).
    touched: BTreeSet<Part>,
    /// Keys that moved to another partition: their state in the old one is deleted.
    moved: Vec<(Part, String)>,
    /// The RocksDB state backend, if chosen.
    spill: Option<Spill>,
    /// Per key in memory, the last epoch it was used in (for eviction).
    used: HashMap<String, u64>,
    /// What is shared with the service, inside `cep serve`.
    hooks: Option<Hooks>,
    instance_id: String,
    /// Per partition, the offsets committed with the last epoch.
    committed: HashMap<Part, i64>,
    /// Per partition, its end offset when last asked (for the lag), and when that was.
    ends: HashMap<Part, i64>,
    ends_read: Option<Instant>,
}

/// How often a pipeline in the service asks the brokers for its partitions' end offsets.
const ENDS_EVERY: Duration = Duration::from_secs(2);

/// What the checkpointed state belongs to: a changed pipeline cannot take it over.
fn fingerprint(patterns: &[Arc<CompiledPattern>], spec: &PipelineSpec) -> String {
    let config = spec.engine_config();
    let mut what = json!({
        "patterns": patterns.iter().map(|p| p.spec()).collect::<Vec<_>>(),
        "key_by": config.key_by,
        "time_field": config.time_field,
        "time_format": config.time_format,
    });
    if let Some(window) = &spec.window {
        // Window state is kept as the stage's windows and aggregates lay it out.
        what["window"] = serde_json::to_value(window).unwrap_or(Value::Null);
    }
    output_id(what.to_string().as_bytes())
}

impl KafkaPipeline {
    /// Connects a pipeline: the source (consumer group, static membership), the changelog topic
    /// (created if missing) and the sink (transactional for exactly-once, which fences an older
    /// process with the same transactional id).
    pub fn new(
        spec: &PipelineSpec,
        patterns: Vec<Arc<CompiledPattern>>,
        data_dir: &Path,
        hooks: Option<Hooks>,
    ) -> anyhow::Result<KafkaPipeline> {
        let SourceSpec::Kafka(source_spec) = &spec.source else {
            bail!("pipeline {} has no kafka source", spec.name);
        };
        if patterns.is_empty() {
            bail!("pipeline {} has no patterns", spec.name);
        }
        let sink_spec = spec.kafka_sink().cloned().unwrap_or_default();
        let spill = match spec.state.backend {
            StateBackend::Memory => None,
            StateBackend::Rocksdb => {
                let dir = spec
                    .state
                    .dir
                    .clone()
                    .unwrap_or_else(|| data_dir.to_path_buf());
                Some(Spill::open(
                    &dir,
                    spec.state.max_keys_in_memory.unwrap_or(100_000).max(1),
                )?)
            }
        };
        let record_time = spec.time.field == KAFKA_TIMESTAMP_FIELD;
        let processing = (spec.time.mode == TimeMode::Processing).then(|| match &hooks {
            Some(h) => h.clock.clone(),
            None => Arc::new(SystemClock) as Arc<dyn Clock>,
        });
        let engine = new_engine(spec, &patterns, processing.clone())?;

        let instance_id = match source_spec.membership {
            Membership::Static => instance_id(source_spec, spec.kafka_sink()),
            Membership::Dynamic => String::new(),
        };
        let mut source_options = source_spec.options.clone();
        match source_spec.membership {
            Membership::Static => {
                source_options.insert("group.instance.id".into(), instance_id.clone());
                // A static member that leaves for good keeps its partitions until its session
                // times out: shorter than librdkafka's 45 s, so that a scale-in moves them on
                // soon.
                source_options
                    .entry("session.timeout.ms".into())
                    .or_insert_with(|| STATIC_SESSION_TIMEOUT_MS.to_string());
            }
            Membership::Dynamic => {
                source_options.remove("group.instance.id");
            }
        }
        let mut source_config = SourceConfig::new(
            &source_spec.bootstrap,
            &source_spec.group,
            source_spec.topics.clone(),
        );
        source_config.out_of_orderness_ms = spec.watermark.out_of_orderness.0;
        source_config.idleness_ms = spec.watermark.idleness.map(|d| d.0);
        source_config.options = source_options;
        let source = source_config.build()?;
        // With a cooperative assignor (`partition.assignment.strategy=cooperative-sticky`, set
        // by the user) partitions are revoked only after their epoch is committed (`revoke`).
        source.defer_revokes(true);

        let changelog = Changelog {
            topic: source_spec
                .changelog_topic
                .clone()
                .unwrap_or_else(|| format!("{}-cep-changelog", source_spec.group)),
            bootstrap: source_spec.bootstrap.clone(),
            options: source_spec.options.clone(),
            fingerprint: fingerprint(&patterns, spec),
            on_change: if hooks.is_some() {
                OnChange::StartOver
            } else {
                OnChange::Refuse
            },
        };
        changelog.ensure_topic(&source_spec.topics)?;

        let bootstrap = sink_spec
            .bootstrap
            .clone()
            .unwrap_or_else(|| source_spec.bootstrap.clone());
        let mut sink_config = SinkConfig::new(&bootstrap);
        sink_config.options = source_spec.options.clone();
        sink_config.options.remove("group.instance.id");
        if sink_spec.guarantee == Guarantee::ExactlyOnce {
            sink_config.transactional_id = Some(
                sink_spec
                    .transactional_id
                    .clone()
                    .unwrap_or_else(|| default_transactional_id(&source_spec.group)),
            );
        }
        // For a transactional sink this fences an older instance and aborts its open transaction.
        let sink = sink_config.build()?;
        if let Some(h) = &hooks {
            let mut status = lock(&h.status);
            status.state = "running";
            status.error = None;
            status.instance_id = instance_id.clone();
        }
        Ok(KafkaPipeline {
            name: spec.name.clone(),
            processing,
            patterns,
            spec: spec.clone(),
            engine,
            source,
            sink,
            outputs_to: sink_spec,
            changelog,
            record_time,
            commit_interval: Duration::from_millis(source_spec.commit_interval.0.max(1) as u64),
            epoch: 1,
            outs: Vec::new(),
            recent: Vec::new(),
            counters: Counters::default(),
            assigned: BTreeSet::new(),
            homes: HashMap::new(),
            start: HashMap::new(),
            touched: BTreeSet::new(),
            moved: Vec::new(),
            spill,
            used: HashMap::new(),
            hooks,
            instance_id,
            committed: HashMap::new(),
            ends: HashMap::new(),
            ends_read: None,
        })
    }

    /// Runs until `stop`, then commits the last epoch.
    pub fn run(&mut self, stop: &AtomicBool) -> anyhow::Result<()> {
        tracing::info!(
            pipeline = %self.name,
            instance_id = %self.instance_id,
            "kafka pipeline started"
        );
        let mut last_commit = Instant::now();
        let mut last_report = Instant::now();
        let mut dirty = false;
        while !stop.load(Ordering::SeqCst) {
            let polled = self.source.poll(Duration::from_millis(50));
            let mut revoking = Vec::new();
            while let Some(change) = self.source.take_assignment() {
                match change {
                    AssignmentChange::Whole(parts) => {
                        self.restore(parts)?;
                        last_commit = Instant::now();
                        dirty = false;
                    }
                    AssignmentChange::Added(parts) => self.restore_added(parts)?,
                    AssignmentChange::Revoking(parts) => revoking.extend(parts),
                }
            }
            self.serve_hooks()?;
            let polled = match polled {
                // A record polled with the revoke belongs to a partition still assigned.
                Ok(Some(record)) if !revoking.is_empty() => {
                    self.handle(record)?;
                    Ok(None)
                }
                other => other,
            };
            if !revoking.is_empty() {
                self.revoke(&revoking)?;
                last_commit = Instant::now();
                dirty = false;
            }
            match polled {
                Ok(Some(record)) => {
                    self.handle(record)?;
                    dirty = true;
                }
                Ok(None) => {}
                Err(e) if e.is_retryable() => tracing::warn!("{e}; retrying"),
                Err(e) if e.to_string().to_lowercase().contains("fenced") => {
                    bail!(
                        "{e}: another process of group uses the instance id '{}'; give each \
                         process of a group its own --instance-id (or transactional id)",
                        self.instance_id
                    )
                }
                Err(e) => return Err(e.into()),
            }
            let watermark = match &self.processing {
                // Processing time: the clock, not the partitions, moves the watermark.
                Some(clock) => Some(clock.now()).filter(|&now| now > self.engine.watermark()),
                None => self.source.watermark(),
            };
            if let Some(wm) = watermark {
                if let Some(spill) = &mut self.spill {
                    for key in spill.load_due(&mut self.engine, wm)? {
                        self.used.insert(key, self.epoch);
                        self.counters.loaded += 1;
                    }
                }
                self.engine.advance_watermark(wm, &mut self.outs);
                dirty = true;
            }
            self.send_outputs()?;
            if dirty && last_commit.elapsed() >= self.commit_interval {
                self.checkpoint(false)?;
                last_commit = Instant::now();
                dirty = false;
            }
            self.sink.poll();
            // The status stays current on a quiet input too (lag, watermark).
            if self.hooks.is_some() && last_report.elapsed() >= ENDS_EVERY {
                self.report();
                last_report = Instant::now();
            }
        }
        tracing::info!("stopping: committing the last epoch");
        self.checkpoint(true)?;
        tracing::info!("stopped: {:?}", self.counters);
        Ok(())
    }

    /// Inside `cep serve`: takes new patterns and answers questions about keys.
    fn serve_hooks(&mut self) -> anyhow::Result<()> {
        let Some(hooks) = &self.hooks else {
            return Ok(());
        };
        let update = {
            let mut latest = lock(&hooks.patterns);
            latest.1.take().map(|mode| (latest.0.clone(), mode))
        };
        let questions: Vec<KeyQuestion> = lock(&hooks.questions).try_iter().collect();
        if let Some((patterns, mut mode)) = update {
            if let Some(spill) = &mut self.spill {
                // Every key's state is rewritten for the new patterns: all of it in memory.
                for key in spill.load_all(&mut self.engine)? {
                    self.used.insert(key, self.epoch);
                }
                // Whether a draining version still holds something is known of the keys in
                // memory only: with the RocksDB backend, changed patterns restart.
                mode = Replace::Restart;
            }
            self.engine
                .set_patterns_mode(patterns.clone(), mode)
                .map_err(|e| anyhow::anyhow!("the new patterns: {e}"))?;
            self.changelog.fingerprint = fingerprint(&patterns, &self.spec);
            self.patterns = patterns;
            // Every partition's next marker carries the new fingerprint.
            self.touched.extend(self.assigned.iter().cloned());
            tracing::info!(pipeline = %self.name, "patterns replaced");
        }
        for (key, reply) in questions {
            if let Some(spill) = &mut self.spill {
                if spill.load(&mut self.engine, &key)? {
                    self.used.insert(key.clone(), self.epoch);
                }
            }
            let answer = serde_json::to_value(self.engine.key_view(&key))?;
            let _ = reply.try_send(answer);
        }
        Ok(())
    }

    /// The highest event time read per assigned partition.
    fn max_timestamps(&mut self) -> HashMap<Part, i64> {
        self.source
            .watermarks()
            .max_timestamps()
            .into_iter()
            .collect()
    }

    /// Publishes the status (after a restore or an epoch).
    fn report(&mut self) {
        let Some(hooks) = self.hooks.clone() else {
            return;
        };
        if self.ends_read.is_none_or(|at| at.elapsed() >= ENDS_EVERY) {
            use rdkafka::consumer::Consumer;
            let mut all = true;
            for part in &self.assigned {
                match self.source.consumer().fetch_watermarks(
                    &part.0,
                    part.1,
                    Duration::from_secs(1),
                ) {
                    Ok((_, high)) => {
                        self.ends.insert(part.clone(), high);
                    }
                    Err(e) => {
                        all = false;
                        tracing::debug!("end offset of {part:?}: {e}");
                    }
                }
            }
            // Asked again at the next report when some did not answer.
            if all {
                self.ends_read = Some(Instant::now());
            }
        }
        let max_ts = self.max_timestamps();
        let partitions = self
            .assigned
            .iter()
            .map(|part| {
                let position = self.source.processed_offset(&part.0, part.1);
                let end = self.ends.get(part).copied().filter(|&h| h >= 0);
                let done = position.or_else(|| self.committed.get(part).copied());
                PartitionStatus {
                    topic: part.0.clone(),
                    partition: part.1,
                    position,
                    committed: self.committed.get(part).copied(),
                    end,
                    lag: end.zip(done).map(|(e, d)| (e - d).max(0)),
                    max_timestamp: max_ts.get(part).copied(),
                }
            })
            .collect();
        let watermark = Some(self.engine.watermark()).filter(|&w| w != i64::MIN);
        let stats = serde_json::to_value(self.engine.stats()).unwrap_or(Value::Null);
        let mut status = lock(&hooks.status);
        status.state = "running";
        status.watermark = watermark;
        status.partitions = partitions;
        status.stats = stats;
        status.records = self.counters.records;
        status.dead_letters = self.counters.dead_letters;
        status.outputs = self.counters.outputs;
        status.epochs = self.counters.epochs;
        status.restores = self.counters.restores;
        status.partitions_added = self.counters.added;
        status.partitions_revoked = self.counters.revoked;
    }

    /// Starts over on `parts` from the last checkpoint: what was not committed is dropped (the
    /// open transaction aborted) and read again, the state of each partition is read back from
    /// the changelog.
    fn restore(&mut self, parts: Vec<Part>) -> anyhow::Result<()> {
        let begun = Instant::now();
        if let Some(h) = &self.hooks {
            lock(&h.status).state = "restoring";
        }
        if self.sink.is_transactional() {
            self.sink.abort()?;
        }
        self.outs.clear();
        self.recent.clear();
        self.engine = new_engine(&self.spec, &self.patterns, self.processing.clone())?;
        self.homes.clear();
        self.start.clear();
        self.touched.clear();
        self.moved.clear();
        self.used.clear();
        if let Some(spill) = &mut self.spill {
            // The changelog is the truth; the local store is rebuilt from it.
            spill.clear()?;
        }
        self.source.reset_processed();
        self.assigned = parts.iter().cloned().collect();

        let mut restored = self.changelog.read(&parts)?;
        // The pattern versions of the first partition's checkpoint (with a version draining,
        // more than the active ones); a partition checkpointed with others starts over.
        let layout = restored
            .iter()
            .find_map(|(_, s)| s.marker.as_ref())
            .and_then(|m| m.slots.clone());
        if let Some(slots) = &layout {
            compile_all(slots)
                .and_then(|s| {
                    self.engine
                        .restore_slots(s)
                        .map_err(|e| anyhow::anyhow!("{e}"))
                })
                .context("restoring the pattern versions of the checkpoint")?;
        }
        self.drop_other_layouts(&mut restored, layout.as_ref());
        let mut seeds = Vec::new();
        let mut watermark: Option<i64> = None;
        let mut keys = 0;
        for (part, state) in restored {
            if let Some(m) = &state.marker {
                self.start.insert(part.clone(), m.offset);
                if let Some(ts) = m.max_ts {
                    seeds.push((part.clone(), ts));
                }
                watermark = Some(watermark.map_or(m.watermark, |w: i64| w.min(m.watermark)));
            }
            for (key, snapshot) in state.keys {
                self.restore_key(key, &snapshot, &part)?;
                keys += 1;
            }
        }
        // The lowest watermark the restored partitions had seen: events at or below it were
        // late then, and are late now.
        let watermark = match watermark {
            Some(w) if self.start.len() == parts.len() => w,
            _ => i64::MIN,
        };
        self.engine.advance_watermark(watermark, &mut self.outs);
        self.engine.take_changed();
        self.source.watermarks().reset(&parts, seeds, watermark);
        if self.sink.is_transactional() {
            self.sink.begin()?;
        }
        self.counters.restores += 1;
        self.report();
        tracing::info!(
            "assigned {parts:?}: restored {keys} keys in {:?} (offsets {:?})",
            begun.elapsed(),
            self.start
        );
        Ok(())
    }

    /// The pattern versions for a marker: all of them while one drains, else none (the active
    /// ones are the fingerprint's).
    fn slots(&self) -> Option<Vec<Value>> {
        self.engine
            .is_draining()
            .then(|| logged(&self.engine.slots()))
    }

    /// Drops the keys of partitions checkpointed with other pattern versions than `layout`
    /// (their snapshots have a part per version): they start over, as after a restart-mode
    /// replacement. Only partitions checkpointed by processes that drained differently differ.
    fn drop_other_layouts(&self, restored: &mut [(Part, PartState)], layout: Option<&Vec<Value>>) {
        for (part, state) in restored.iter_mut() {
            let Some(marker) = &state.marker else {
                continue;
            };
            if marker.slots.as_ref() != layout && !state.keys.is_empty() {
                tracing::warn!(
                    "{part:?} was checkpointed with other pattern versions draining; its {} keys \
                     start over",
                    state.keys.len()
                );
                state.keys.clear();
            }
        }
    }

    /// Puts a key's state read from the changelog into the engine (and the RocksDB backend,
    /// which keeps the most recently used keys in memory), at home in `part`.
    fn restore_key(&mut self, key: String, snapshot: &[u8], part: &Part) -> anyhow::Result<()> {
        if let Some(spill) = &mut self.spill {
            // An evicted copy (from before an incremental rebalance) gives way to this one.
            spill.load(&mut self.engine, &key)?;
        }
        self.engine
            .restore_key(&key, snapshot)
            .map_err(|e| anyhow::anyhow!("changelog {}: {e}", self.changelog.topic))?;
        if let Some(spill) = &mut self.spill {
            spill.put(&key, Some(snapshot))?;
            if self.engine.key_count() > spill.max_keys {
                spill.evict(&mut self.engine, &key)?;
            } else {
                self.used.insert(key.clone(), self.epoch);
            }
        }
        self.homes.insert(key, part.clone());
        Ok(())
    }

    /// Incremental rebalancing: partitions added to those this process goes on with. Their
    /// keys' state is read from the changelog into the running engine (nothing else is rebuilt,
    /// nothing aborted) and each is read from its committed offset. The engine's watermark stays
    /// where it is: an added partition's records at or below it are late.
    fn restore_added(&mut self, parts: Vec<Part>) -> anyhow::Result<()> {
        let begun = Instant::now();
        let mut restored = self.changelog.read(&parts)?;
        self.drop_other_layouts(&mut restored, self.slots().as_ref());
        // The engine's watermark cannot go back. If it is past where an added partition's
        // previous owner had got (its last marker), records of that partition the previous owner
        // would have matched would be late here: then start over on every partition, from the
        // lowest watermark, as a whole assignment does (the partitions kept are read again from
        // their committed offsets). A process joining a group only gives partitions up: this is
        // for a process that takes over from one that left.
        let watermark = self.engine.watermark();
        let behind = watermark > i64::MIN
            && restored.iter().any(|(_, state)| {
                state
                    .marker
                    .as_ref()
                    .is_none_or(|m| m.watermark < watermark)
            });
        if behind {
            let all = self.source.assigned().to_vec();
            let kept: Vec<Part> = all.iter().filter(|p| !parts.contains(p)).cloned().collect();
            tracing::info!(
                "added {parts:?}: behind this process's watermark {watermark}; starting over on \
                 all partitions"
            );
            self.source.rewind(&kept)?;
            return self.restore(all);
        }
        let mut keys = 0;
        for (part, state) in restored {
            self.start.remove(&part);
            if let Some(m) = &state.marker {
                self.start.insert(part.clone(), m.offset);
                if let Some(ts) = m.max_ts {
                    self.source.watermarks().seed(&part, ts);
                }
            }
            for (key, snapshot) in state.keys {
                self.restore_key(key, &snapshot, &part)?;
                keys += 1;
            }
            self.assigned.insert(part);
        }
        // A restored key the engine counts as changed is written to the changelog again at the
        // next checkpoint, with its partition's marker: the same state, so no harm.
        self.counters.added += 1;
        self.report();
        tracing::info!(
            "added {parts:?}: restored {keys} keys in {:?}; kept the others running",
            begun.elapsed()
        );
        Ok(())
    }

    /// Incremental rebalancing: partitions taken away. Everything done so far (with them and with
    /// the others) is committed as one epoch, their keys leave the engine, and only then are they
    /// given up, so that their next owner starts exactly where this process stopped. The other
    /// partitions go on without a restore.
    fn revoke(&mut self, parts: &[Part]) -> anyhow::Result<()> {
        let begun = Instant::now();
        self.send_outputs()?;
        self.checkpoint(false)?;
        let gone: Vec<String> = self
            .homes
            .iter()
            .filter(|(_, home)| parts.contains(home))
            .map(|(key, _)| key.clone())
            .collect();
        for key in &gone {
            self.engine.remove_key(key);
            self.homes.remove(key);
            self.used.remove(key);
            if let Some(spill) = &mut self.spill {
                spill.forget(key)?;
            }
        }
        self.engine.take_changed();
        for part in parts {
            self.assigned.remove(part);
            self.start.remove(part);
            self.touched.remove(part);
            self.committed.remove(part);
            self.ends.remove(part);
        }
        self.moved.retain(|(part, _)| !parts.contains(part));
        self.source.finish_revoke(parts)?;
        self.counters.revoked += 1;
        self.report();
        tracing::info!(
            "revoked {parts:?}: committed, {} keys handed over in {:?}; kept {:?} running",
            gone.len(),
            begun.elapsed(),
            self.assigned.iter().collect::<Vec<_>>()
        );
        Ok(())
    }

    fn handle(&mut self, record: SourceRecord) -> anyhow::Result<()> {
        let part = (record.topic.clone(), record.partition);
        if !self.assigned.contains(&part) {
            return Ok(());
        }
        if self.start.get(&part).is_some_and(|&s| record.offset < s) {
            // Already in the restored state (at-least-once: the checkpoint got further than the
            // committed offsets).
            self.counters.skipped += 1;
            return Ok(());
        }
        self.counters.records += 1;
        if !self.touched.contains(&part) {
            self.touched.insert(part.clone());
        }
        // Without a window stage, in event time, a record is read as text: only the fields the
        // key, the time and the conditions need are decoded, and the text is what outputs show.
        let text = (self.engine.takes_text() && !self.record_time)
            .then(|| {
                record
                    .payload
                    .as_deref()
                    .and_then(|b| std::str::from_utf8(b).ok())
            })
            .flatten();
        let read = match text {
            Some(text) => self
                .engine
                .parse_str(text)
                .map(|p| {
                    let (key, ts) = (p.key().to_string(), p.ts);
                    (Taken::Text(p), key, ts)
                })
                .map_err(|e| e.message),
            None => self.read_value(&record),
        };
        match read {
            Ok((taken, key, ts)) => {
                self.source.observe(&record, ts);
                match self.homes.get(&key) {
                    Some(home) if *home == part => {}
                    Some(home) => {
                        tracing::warn!(
                            "key '{key}' moved from {home:?} to {part:?}: the input should be \
                             partitioned by the key"
                        );
                        self.moved.push((home.clone(), key.clone()));
                        self.homes.insert(key.clone(), part.clone());
                    }
                    None => {
                        self.homes.insert(key.clone(), part.clone());
                    }
                }
                if let Some(spill) = &mut self.spill {
                    if spill.load(&mut self.engine, &key)? {
                        self.counters.loaded += 1;
                    }
                    self.used.insert(key.clone(), self.epoch);
                }
                let pushed = match taken {
                    Taken::Text(parsed) => self.engine.push_parsed(parsed, &mut self.outs),
                    Taken::Value(value) => match &self.processing {
                        Some(_) => self.engine.push_keyed(key, ts, &value, &mut self.outs),
                        None => self.engine.push(value, &mut self.outs),
                    },
                };
                match pushed {
                    Ok(()) => {
                        if let Some(h) = &self.hooks {
                            h.outputs.counters.events_in.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    // Key and time were read above, so this is an event the engine refuses
                    // for another reason: it goes to the dead letters like an unreadable one.
                    Err(e) => self.dead_letter(&record, &e.message)?,
                }
            }
            Err(reason) => self.dead_letter(&record, &reason)?,
        }
        self.source.mark_processed(&record);
        Ok(())
    }

    /// Reads a record as a JSON value (with the record's timestamp added, if the pipeline's
    /// time is the record's), and its key and time (the clock's, in processing time).
    fn read_value(&self, record: &SourceRecord) -> Result<(Taken, String, i64), String> {
        parse_json_object(record)
            .map(|mut v| {
                if self.record_time {
                    if let (Some(obj), Some(ts)) = (v.as_object_mut(), record.timestamp) {
                        obj.insert(KAFKA_TIMESTAMP_FIELD.into(), ts.into());
                    }
                }
                v
            })
            .and_then(|v| match &self.processing {
                // Processing time: the record's time is the clock's when it is taken (1 ms after
                // the watermark if the clock has not moved past it).
                Some(clock) => {
                    let key = self.engine.key_of(&v).map_err(|e| e.message)?;
                    let ts = clock.now().max(self.engine.watermark().saturating_add(1));
                    Ok((v, key, ts))
                }
                None => self
                    .engine
                    .key_and_time(&v)
                    .map(|(key, ts)| (v, key, ts))
                    .map_err(|e| e.message),
            })
            .map(|(v, key, ts)| (Taken::Value(v), key, ts))
    }

    fn dead_letter(&mut self, record: &SourceRecord, reason: &str) -> anyhow::Result<()> {
        self.counters.dead_letters += 1;
        if let Some(h) = &self.hooks {
            h.outputs.counters.rejected.fetch_add(1, Ordering::Relaxed);
        }
        let letter = DeadLetter::new(record, reason);
        match &self.outputs_to.dead_letter_topic {
            Some(topic) => {
                let bytes = letter.to_json();
                let id = output_id(&bytes);
                self.sink
                    .send(topic, record.key.as_deref(), &bytes, Some(&id))?;
            }
            None => tracing::warn!(
                "skipped {}/{}@{}: {reason}",
                record.topic,
                record.partition,
                record.offset
            ),
        }
        Ok(())
    }

    fn send_outputs(&mut self) -> anyhow::Result<()> {
        for o in std::mem::take(&mut self.outs) {
            if let Some(topic) = self.outputs_to.topic_of(o.kind) {
                let mut bytes = Vec::with_capacity(256);
                o.write_json(&mut bytes);
                let id = output_id(&bytes);
                self.sink
                    .send(topic, Some(o.key.as_bytes()), &bytes, Some(&id))?;
                self.counters.outputs += 1;
            }
            if self.hooks.is_some() {
                self.recent.push(o);
            }
        }
        Ok(())
    }

    /// Ends the epoch: the changed keys' snapshots and the markers to the changelog, then outputs
    /// and changelog acknowledged and offsets committed (at-least-once), or all of it committed
    /// in one transaction with the offsets (exactly-once).
    fn checkpoint(&mut self, last: bool) -> anyhow::Result<()> {
        let topic = self.changelog.topic.clone();
        if self.engine.is_draining() && self.engine.retire_drained() {
            // A drained version went: every key's state changed shape, every marker says so.
            tracing::info!(pipeline = %self.name, "a drained pattern version retired");
            self.touched.extend(self.assigned.iter().cloned());
        }
        let slots = self.slots();
        for key in self.engine.take_changed() {
            let Some(part) = self.homes.get(&key).cloned() else {
                continue;
            };
            let snapshot = self
                .engine
                .snapshot_key(&key)
                .map_err(|e| anyhow::anyhow!("{}", e.message))?;
            if snapshot.is_none() {
                self.homes.remove(&key);
                self.used.remove(&key);
            }
            if let Some(spill) = &mut self.spill {
                spill.put(&key, snapshot.as_deref())?;
            }
            let record_key = state_key(&part.0, &key);
            self.sink.send_to(
                &topic,
                Some(part.1),
                Some(&record_key),
                snapshot.as_deref(),
                None,
            )?;
            self.touched.insert(part);
        }
        for (part, key) in std::mem::take(&mut self.moved) {
            let record_key = state_key(&part.0, &key);
            self.sink
                .send_to(&topic, Some(part.1), Some(&record_key), None, None)?;
            self.touched.insert(part);
        }
        let max_ts = self.max_timestamps();
        for part in std::mem::take(&mut self.touched) {
            let offset = self
                .source
                .processed_offset(&part.0, part.1)
                .or_else(|| self.start.get(&part).copied());
            let Some(offset) = offset else { continue };
            let marker = Marker {
                epoch: self.epoch,
                offset,
                max_ts: max_ts.get(&part).copied(),
                watermark: self.engine.watermark(),
                fingerprint: self.changelog.fingerprint.clone(),
                slots: slots.clone(),
            };
            let bytes = serde_json::to_vec(&marker)?;
            self.sink.send_to(
                &topic,
                Some(part.1),
                Some(&marker_key(&part.0)),
                Some(&bytes),
                None,
            )?;
        }
        let meta = format!("cep-epoch={}", self.epoch);
        match self.outputs_to.guarantee {
            Guarantee::AtLeastOnce => {
                self.sink.flush(Duration::from_secs(60))?;
                self.source.commit(&meta)?;
            }
            Guarantee::ExactlyOnce => {
                let offsets = self.source.processed_offsets(&meta)?;
                let group = self
                    .source
                    .group_metadata()
                    .context("the consumer has no group metadata")?;
                self.sink.commit(&offsets, &group)?;
            }
        }
        for (topic, partition, offset) in self.source.processed() {
            self.committed
                .insert((topic.to_string(), partition), offset);
        }
        if let Some(h) = &self.hooks {
            // Committed: now the outputs of the epoch are visible in the service.
            if let Err(e) = h
                .outputs
                .publish(std::mem::take(&mut self.recent), h.keep_recent)
            {
                tracing::error!(error = %e, "the output log refused this epoch's outputs");
            }
            lock(&h.status).last_commit_ms = Some(now_ms());
        }
        if let Some(spill) = &mut self.spill {
            // Every key's latest state is in the store now: the least recently used ones beyond
            // the limit leave memory.
            let over = self.engine.key_count().saturating_sub(spill.max_keys);
            if over > 0 {
                let mut lru: Vec<(u64, String)> =
                    self.used.iter().map(|(k, e)| (*e, k.clone())).collect();
                lru.sort_unstable();
                for (_, key) in lru.into_iter().take(over) {
                    if spill.evict(&mut self.engine, &key)? {
                        self.counters.evicted += 1;
                    }
                    self.used.remove(&key);
                }
            }
        }
        self.counters.epochs += 1;
        self.epoch += 1;
        self.report();
        if self.sink.is_transactional() && !last {
            self.sink.begin()?;
        }
        Ok(())
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn new_engine(
    spec: &PipelineSpec,
    patterns: &[Arc<CompiledPattern>],
    processing: Option<Arc<dyn Clock>>,
) -> anyhow::Result<PipelineEngine> {
    let clock = processing.unwrap_or_else(|| Arc::new(SystemClock));
    // The engine's watermark is the pipeline's, from its per-partition watermarks.
    let mut engine = PipelineEngine::driven(spec, patterns.to_vec(), clock)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    // Keys and partial matches the bounds drop count as changed: the checkpoint deletes them
    // from the changelog too.
    engine.track_changes(true);
    Ok(engine)
}

/// Changelog record key of a key's state: `k`, NUL, input topic, NUL, key.
fn state_key(topic: &str, key: &str) -> Vec<u8> {
    [b"k\0", topic.as_bytes(), b"\0", key.as_bytes()].concat()
}

/// Changelog record key of a partition's marker: `m`, NUL, input topic.
fn marker_key(topic: &str) -> Vec<u8> {
    [b"m\0", topic.as_bytes()].concat()
}

/// The end of a partition's checkpoint: the state written before it (for this input topic) covers
/// the records below `offset`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct Marker {
    epoch: u64,
    offset: i64,
    max_ts: Option<i64>,
    watermark: i64,
    fingerprint: String,
    /// While a replaced pattern's previous version drains, every version the engine runs (as
    /// the HTTP journal logs them): the keys' snapshots have a part for each. The fingerprint is
    /// that of the active versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    slots: Option<Vec<Value>>,
}

/// A changelog record: key and value (`None`: a tombstone).
type ChangelogRecord = (Vec<u8>, Option<Vec<u8>>);

/// A key's new state (`None`: deleted), not yet covered by a marker.
type KeyChange = (String, Option<Vec<u8>>);

/// One input partition's state as read back from the changelog.
#[derive(Debug, Default)]
struct PartState {
    marker: Option<Marker>,
    keys: BTreeMap<String, Vec<u8>>,
}

/// Folds one changelog partition's records (in order) into the state of each input topic's
/// partition: a key's latest snapshot (none after a tombstone), as of the last marker. Records
/// after the last marker belong to an epoch that did not finish and are ignored.
/// What a restore does with state checkpointed by a pipeline with other patterns, key or time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum OnChange {
    /// Refuse it (`cep kafka`: a changed pipeline needs a new group or changelog topic).
    Refuse,
    /// Drop the keys' state and keep the offsets (`cep serve`: the pipeline was changed through
    /// the API; its partial matches start over, no input is read twice).
    StartOver,
}

fn fold_changelog(
    records: impl IntoIterator<Item = ChangelogRecord>,
    fingerprint: &str,
    on_change: OnChange,
) -> anyhow::Result<HashMap<String, PartState>> {
    let mut done: HashMap<String, PartState> = HashMap::new();
    let mut pending: HashMap<String, Vec<KeyChange>> = HashMap::new();
    for (key, value) in records {
        let mut fields = key.splitn(3, |b| *b == 0);
        let kind = fields.next().unwrap_or_default();
        let topic = String::from_utf8_lossy(fields.next().unwrap_or_default()).into_owned();
        match kind {
            b"k" => {
                let k = String::from_utf8_lossy(fields.next().unwrap_or_default()).into_owned();
                pending.entry(topic).or_default().push((k, value));
            }
            b"m" => {
                let Some(v) = value else { continue };
                let marker: Marker =
                    serde_json::from_slice(&v).context("unreadable checkpoint marker")?;
                let part = done.entry(topic.clone()).or_default();
                if marker.fingerprint != fingerprint {
                    if on_change == OnChange::Refuse {
                        bail!(
                            "the changelog holds the state of a pipeline with other patterns, key \
                             or time field; a changed pipeline needs a new --group (or \
                             --changelog-topic)"
                        );
                    }
                    // The state so far belongs to other patterns: dropped, offsets kept.
                    pending.remove(&topic);
                    part.keys.clear();
                    part.marker = Some(marker);
                    continue;
                }
                for (k, v) in pending.remove(&topic).unwrap_or_default() {
                    match v {
                        Some(v) => part.keys.insert(k, v),
                        None => part.keys.remove(&k),
                    };
                }
                part.marker = Some(marker);
            }
            _ => {}
        }
    }
    Ok(done)
}

/// The RocksDB state backend: the state of keys not in memory, as the snapshots the changelog
/// holds, and when each is next due. Keys in memory have their latest checkpointed snapshot here
/// too, so evicting a key at the end of an epoch writes nothing.
struct Spill {
    db: rocksdb::DB,
    max_keys: usize,
    /// Keys whose state is only in the store, with their next due time.
    evicted: HashMap<String, i64>,
    /// `(due, key)` of the evicted keys with something due.
    by_due: BTreeSet<(i64, String)>,
}

impl Spill {
    fn open(dir: &std::path::Path, max_keys: usize) -> anyhow::Result<Spill> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut opts = rocksdb::Options::default();
        opts.create_if_missing(true);
        let db = rocksdb::DB::open(&opts, dir.join("keyed-state"))
            .with_context(|| format!("opening the state backend in {}", dir.display()))?;
        Ok(Spill {
            db,
            max_keys,
            evicted: HashMap::new(),
            by_due: BTreeSet::new(),
        })
    }

    /// Forgets everything (a restore rebuilds the store from the changelog).
    fn clear(&mut self) -> anyhow::Result<()> {
        let mut batch = rocksdb::WriteBatch::default();
        for item in self.db.iterator(rocksdb::IteratorMode::Start) {
            batch.delete(item?.0);
        }
        self.db.write(batch).context("clearing the state backend")?;
        self.evicted.clear();
        self.by_due.clear();
        Ok(())
    }

    fn put(&mut self, key: &str, snapshot: Option<&[u8]>) -> anyhow::Result<()> {
        match snapshot {
            Some(s) => self.db.put(key, s),
            None => self.db.delete(key),
        }
        .context("writing the state backend")
    }

    /// Moves `key` out of memory (its state is in the store); false if it had no state.
    fn evict(&mut self, engine: &mut PipelineEngine, key: &str) -> anyhow::Result<bool> {
        let Some(due) = engine.due_of(key) else {
            return Ok(false);
        };
        engine.remove_key(key);
        self.evicted.insert(key.to_string(), due);
        if due != i64::MAX {
            self.by_due.insert((due, key.to_string()));
        }
        Ok(true)
    }

    /// Forgets `key` (its partition went to another process).
    fn forget(&mut self, key: &str) -> anyhow::Result<()> {
        if let Some(due) = self.evicted.remove(key) {
            self.by_due.remove(&(due, key.to_string()));
        }
        self.put(key, None)
    }

    /// Brings `key` back into memory if it was evicted; true if it was.
    fn load(&mut self, engine: &mut PipelineEngine, key: &str) -> anyhow::Result<bool> {
        let Some(due) = self.evicted.remove(key) else {
            return Ok(false);
        };
        self.by_due.remove(&(due, key.to_string()));
        let bytes = self
            .db
            .get(key)?
            .with_context(|| format!("the state of key '{key}' is missing from the backend"))?;
        engine
            .restore_key(key, &bytes)
            .map_err(|e| anyhow::anyhow!("state backend: {e}"))?;
        Ok(true)
    }

    /// Brings back every evicted key.
    fn load_all(&mut self, engine: &mut PipelineEngine) -> anyhow::Result<Vec<String>> {
        let keys: Vec<String> = self.evicted.keys().cloned().collect();
        for key in &keys {
            self.load(engine, key)?;
        }
        Ok(keys)
    }

    /// Brings back every evicted key with something due at or before `watermark`.
    fn load_due(
        &mut self,
        engine: &mut PipelineEngine,
        watermark: i64,
    ) -> anyhow::Result<Vec<String>> {
        let mut loaded = Vec::new();
        while let Some((due, key)) = self.by_due.first().cloned() {
            if due > watermark {
                break;
            }
            self.load(engine, &key)?;
            loaded.push(key);
        }
        Ok(loaded)
    }
}

/// The changelog topic: where partitions' state is checkpointed and read back from.
struct Changelog {
    topic: String,
    bootstrap: String,
    options: BTreeMap<String, String>,
    fingerprint: String,
    on_change: OnChange,
}

/// How long reading the changelog back may take.
const RESTORE_TIMEOUT: Duration = Duration::from_secs(120);

impl Changelog {
    fn client_config(&self) -> rdkafka::ClientConfig {
        let mut c = rdkafka::ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap);
        for (k, v) in &self.options {
            // Group membership and transactions are the pipeline's, not the reader's.
            if !k.starts_with("group.") && !k.starts_with("transactional.") {
                c.set(k, v);
            }
        }
        c
    }

    /// Creates the topic (compacted, as many partitions as the widest input topic) if missing;
    /// fails if it has fewer partitions than an input topic.
    fn ensure_topic(&self, inputs: &[String]) -> anyhow::Result<()> {
        use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
        use rdkafka::client::DefaultClientContext;
        use rdkafka::consumer::{BaseConsumer, Consumer};
        let timeout = Duration::from_secs(30);
        let consumer: BaseConsumer = self.client_config().create()?;
        let partitions = |topic: &str| -> anyhow::Result<usize> {
            let md = consumer
                .fetch_metadata(Some(topic), timeout)
                .with_context(|| format!("reading the metadata of {topic}"))?;
            Ok(md
                .topics()
                .iter()
                .find(|t| t.name() == topic && t.error().is_none())
                .map_or(0, |t| t.partitions().len()))
        };
        let mut need = 0;
        for t in inputs {
            let n = partitions(t)?;
            if n == 0 {
                bail!("input topic {t} does not exist");
            }
            need = need.max(n);
        }
        let have = partitions(&self.topic)?;
        if have == 0 {
            let admin: AdminClient<DefaultClientContext> = self.client_config().create()?;
            let topic = NewTopic::new(&self.topic, need as i32, TopicReplication::Fixed(1))
                .set("cleanup.policy", "compact");
            let results = futures::executor::block_on(admin.create_topics(
                [&topic],
                &AdminOptions::new().operation_timeout(Some(timeout)),
            ))
            .context("creating the changelog topic")?;
            for r in results {
                match r {
                    Ok(_) => {
                        tracing::info!("created changelog topic {} ({need} partitions)", self.topic)
                    }
                    Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {}
                    Err((t, e)) => bail!("creating the changelog topic {t}: {e}"),
                }
            }
        } else if have < need {
            bail!(
                "the changelog topic {} has {have} partitions; the input needs {need}",
                self.topic
            );
        }
        Ok(())
    }

    /// Reads the changelog partitions of `parts` to their end (read committed) and folds them.
    fn read(&self, parts: &[Part]) -> anyhow::Result<Vec<(Part, PartState)>> {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        use rdkafka::error::KafkaError;
        use rdkafka::message::Message;
        use rdkafka::{Offset, TopicPartitionList};
        let numbers: BTreeSet<i32> = parts.iter().map(|p| p.1).collect();
        if numbers.is_empty() {
            return Ok(Vec::new());
        }
        let consumer: BaseConsumer<ReaderContext> = self
            .client_config()
            .set("group.id", "cep-changelog-reader")
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true")
            .set("isolation.level", "read_committed")
            .set("auto.offset.reset", "earliest")
            .create_with_context(ReaderContext)?;
        let mut records: BTreeMap<i32, Vec<ChangelogRecord>> = BTreeMap::new();
        let mut tpl = TopicPartitionList::new();
        let mut open = BTreeSet::new();
        for &p in &numbers {
            let (low, high) = consumer
                .fetch_watermarks(&self.topic, p, Duration::from_secs(30))
                .with_context(|| format!("reading the offsets of {}/{p}", self.topic))?;
            records.insert(p, Vec::new());
            if high > 0 {
                // Some brokers (noida-db) answer the end offset for the start offset: then read
                // from 0 (a broker that deleted it resets to its earliest).
                let from = if low < high { low } else { 0 };
                tpl.add_partition_offset(&self.topic, p, Offset::Offset(from))?;
                open.insert(p);
            }
        }
        consumer.assign(&tpl)?;
        let begun = Instant::now();
        while !open.is_empty() {
            if begun.elapsed() > RESTORE_TIMEOUT {
                bail!(
                    "reading the changelog {} took longer than {RESTORE_TIMEOUT:?} (partitions {open:?} \
                     not at their end; an open transaction of a stopped process holds them back until \
                     it times out)",
                    self.topic
                );
            }
            match consumer.poll(Duration::from_millis(200)) {
                None => {}
                Some(Err(KafkaError::PartitionEOF(p))) => {
                    open.remove(&p);
                }
                Some(Err(e)) => tracing::warn!("reading the changelog: {e}"),
                Some(Ok(m)) => {
                    if let Some(list) = records.get_mut(&m.partition()) {
                        list.push((
                            m.key().unwrap_or_default().to_vec(),
                            m.payload().map(<[u8]>::to_vec),
                        ));
                    }
                }
            }
        }
        let mut out = Vec::new();
        let mut folded = HashMap::new();
        for (p, list) in records {
            folded.insert(p, fold_changelog(list, &self.fingerprint, self.on_change)?);
        }
        for part in parts {
            let state = folded
                .get_mut(&part.1)
                .and_then(|m| m.remove(&part.0))
                .unwrap_or_default();
            out.push((part.clone(), state));
        }
        Ok(out)
    }
}

/// The changelog reader's context: reaching the end of a partition is what it waits for, not an
/// error to log.
struct ReaderContext;

impl rdkafka::ClientContext for ReaderContext {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        let eof = matches!(error, rdkafka::error::KafkaError::PartitionEOF(_))
            || error.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::PartitionEOF);
        if !eof {
            tracing::warn!("changelog reader: {error}: {reason}");
        }
    }
}

impl rdkafka::consumer::ConsumerContext for ReaderContext {}

#[cfg(test)]
mod tests {
    use super::*;

    fn marker(offset: i64) -> Option<Vec<u8>> {
        marker_with(offset, "fp")
    }

    fn marker_with(offset: i64, fingerprint: &str) -> Option<Vec<u8>> {
        Some(
            serde_json::to_vec(&Marker {
                epoch: 1,
                offset,
                max_ts: Some(10),
                watermark: 5,
                fingerprint: fingerprint.into(),
                slots: None,
            })
            .unwrap(),
        )
    }

    #[test]
    fn changelog_folds_to_the_last_marker_per_topic() {
        let recs = vec![
            (state_key("a", "u1"), Some(b"s1".to_vec())),
            (state_key("a", "u2"), Some(b"s2".to_vec())),
            (state_key("b", "u9"), Some(b"b9".to_vec())),
            (marker_key("a"), marker(10)),
            (state_key("a", "u1"), None),
            (state_key("a", "u2"), Some(b"s2'".to_vec())),
            (marker_key("a"), marker(20)),
            // An epoch that did not finish: ignored.
            (state_key("a", "u2"), Some(b"lost".to_vec())),
            (state_key("a", "u3"), Some(b"lost".to_vec())),
        ];
        let folded = fold_changelog(recs.clone(), "fp", OnChange::Refuse).unwrap();
        let a = &folded["a"];
        assert_eq!(a.marker.as_ref().unwrap().offset, 20);
        assert_eq!(
            a.keys
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_slice()))
                .collect::<Vec<_>>(),
            vec![("u2", b"s2'".as_slice())]
        );
        assert!(!folded.contains_key("b"), "topic b never finished an epoch");

        let err = fold_changelog(
            vec![(marker_key("a"), marker(1))],
            "other",
            OnChange::Refuse,
        )
        .unwrap_err();
        assert!(err.to_string().contains("a changed pipeline"), "{err}");

        // Inside the service a changed pipeline starts its partial matches over from the last
        // offsets: the state under other fingerprints is dropped, later state kept.
        let folded = fold_changelog(recs.clone(), "new", OnChange::StartOver).unwrap();
        assert_eq!(folded["a"].marker.as_ref().unwrap().offset, 20);
        assert!(folded["a"].keys.is_empty());
        let mut changed: Vec<_> = recs[..recs.len() - 2].to_vec();
        changed.push((state_key("a", "u9"), Some(b"s9".to_vec())));
        changed.push((marker_key("a"), marker_with(30, "new")));
        let folded = fold_changelog(changed, "new", OnChange::StartOver).unwrap();
        assert_eq!(folded["a"].marker.as_ref().unwrap().offset, 30);
        assert_eq!(folded["a"].keys.keys().collect::<Vec<_>>(), ["u9"]);
    }

    #[test]
    fn keys_with_separators_round_trip() {
        let k = state_key("t", "user\0with nul");
        let folded = fold_changelog(
            vec![(k, Some(b"x".to_vec())), (marker_key("t"), marker(3))],
            "fp",
            OnChange::Refuse,
        )
        .unwrap();
        assert!(folded["t"].keys.contains_key("user\0with nul"));
    }
}
