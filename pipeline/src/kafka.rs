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
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use cep_patterns::{CompiledPattern, DurationMs, EngineConfig, JsonEngine, Output, OutputKind};
use cep_runtime::kafka::{
    output_id, parse_json_object, rdkafka, DeadLetter, KafkaSink, KafkaSource, SinkConfig,
    SourceConfig, SourceRecord,
};
use serde_json::json;

use crate::run::{load_pattern, pattern_files, TimeFormatArg};

/// Options of `cep kafka`; also the shape of a `[[kafka]]` table of `cep serve`'s configuration
/// file (same names, with `_` for `-`; `kafka_options` for `-X`).
#[derive(clap::Args, Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaArgs {
    /// Kafka bootstrap servers, `host:port[,host:port]`.
    #[arg(long, env = "KAFKA_BOOTSTRAP")]
    pub bootstrap: String,
    /// Consumer group id (committed offsets are kept per group).
    #[arg(long)]
    pub group: String,
    /// Topic to read events from (repeatable).
    #[arg(long = "input-topic", required = true)]
    pub input_topics: Vec<String>,
    /// A pattern file, or a directory of `*.json` pattern files (repeatable).
    #[arg(long = "pattern", required = true)]
    pub patterns: Vec<PathBuf>,
    /// Field path of the key, e.g. `user.id`.
    #[arg(long)]
    pub key_by: String,
    /// Field path of the event time; without it, the Kafka record timestamp is the event time (and
    /// is added to the event as `_kafka_timestamp`).
    #[arg(long)]
    pub time_field: Option<String>,
    /// How the time field is written.
    #[arg(long, value_enum, default_value = "epoch-ms")]
    #[serde(default)]
    pub time_format: TimeFormatArg,
    /// Bounded out-of-orderness per partition, e.g. `300ms`.
    #[arg(long, default_value = "0")]
    #[serde(default = "zero")]
    pub out_of_orderness: String,
    /// A partition without records for this long (processing time) stops holding back the
    /// watermark, e.g. `5s`. Default: partitions never become idle.
    #[arg(long)]
    pub idleness: Option<String>,
    /// Topic for matches.
    #[arg(long)]
    pub matches_topic: String,
    /// Topic for timed-out partial matches (default: not written).
    #[arg(long)]
    pub timeouts_topic: Option<String>,
    /// Topic for late events (default: not written).
    #[arg(long)]
    pub late_topic: Option<String>,
    /// Dead-letter topic for records that cannot be read, as
    /// `{"reason","topic","partition","offset","key","value"}` (default: logged and skipped).
    #[arg(long)]
    pub dlq_topic: Option<String>,
    /// Topic the state is checkpointed to (default `<group>-cep-changelog`; created, compacted,
    /// with as many partitions as the input topic with the most, if missing).
    #[arg(long)]
    pub changelog_topic: Option<String>,
    /// Where keyed state lives while the pipeline runs: `memory`, or `rocksdb` (under
    /// `--data-dir`: keys beyond `--max-keys-in-memory` are kept in RocksDB and loaded when an
    /// event or a due timeout needs them). Either way it is checkpointed to the changelog topic.
    #[arg(long, value_enum, default_value = "memory")]
    #[serde(default)]
    pub state_backend: StateBackendArg,
    /// Directory of the RocksDB state backend.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// With `--state-backend rocksdb`: how many keys' state stay in memory; the least recently
    /// used others are in RocksDB only.
    #[arg(long, default_value_t = 100_000)]
    #[serde(default = "max_keys_default")]
    pub max_keys_in_memory: usize,
    /// Delivery guarantee.
    #[arg(long, value_enum, default_value = "at-least-once")]
    #[serde(default)]
    pub guarantee: Guarantee,
    /// Transactional id for `exactly-once` (default `cep-<group>`). Each running process of a
    /// group needs its own, the same across its restarts (a restart fences the old process and
    /// aborts its open transaction).
    #[arg(long)]
    pub transactional_id: Option<String>,
    /// How often outputs and offsets are committed, e.g. `1s`.
    #[arg(long, default_value = "1s")]
    #[serde(default = "one_second")]
    pub commit_interval: String,
    /// Further librdkafka option for consumer and producer, `key=value` (repeatable).
    #[arg(long = "kafka-option", short = 'X')]
    #[serde(default)]
    pub kafka_options: Vec<String>,
}

/// `--state-backend`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StateBackendArg {
    /// All keyed state in memory.
    #[default]
    Memory,
    /// Keyed state in RocksDB under `--data-dir`, the most recently used keys cached in memory.
    Rocksdb,
}

fn max_keys_default() -> usize {
    100_000
}

/// `--guarantee`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Guarantee {
    /// Outputs are acknowledged before offsets are committed; after a crash, outputs since the
    /// last commit are produced again (with the same `cep-output-id` header).
    #[default]
    AtLeastOnce,
    /// Outputs and offsets are committed in one transaction; read with `isolation.level =
    /// read_committed`, each output appears once.
    ExactlyOnce,
}

fn zero() -> String {
    "0".into()
}

fn one_second() -> String {
    "1s".into()
}

/// Kafka pipelines running beside `cep serve`, each on its own thread.
pub struct Background {
    stop: Arc<AtomicBool>,
    threads: Vec<(String, std::thread::JoinHandle<anyhow::Result<()>>)>,
}

impl Background {
    /// Builds every pipeline (so that a bad one stops the service from starting) and starts them.
    pub fn start(configs: &[serde_json::Value]) -> anyhow::Result<Background> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for (i, c) in configs.iter().enumerate() {
            let args: KafkaArgs = serde_json::from_value(c.clone())
                .with_context(|| format!("kafka pipeline {} of the configuration", i + 1))?;
            let name = format!("kafka pipeline {} (group {})", i + 1, args.group);
            let mut pipeline = Pipeline::new(&args).with_context(|| name.clone())?;
            let flag = stop.clone();
            let thread = std::thread::Builder::new()
                .name(format!("kafka-{}", i + 1))
                .spawn(move || pipeline.run(&flag))?;
            tracing::info!("{name} started");
            threads.push((name, thread));
        }
        Ok(Background { stop, threads })
    }

    /// Commits each pipeline's last epoch and stops it.
    pub fn stop(self) -> anyhow::Result<()> {
        self.stop.store(true, Ordering::SeqCst);
        let mut failed = None;
        for (name, t) in self.threads {
            match t.join() {
                Ok(Ok(())) => tracing::info!("{name} stopped"),
                Ok(Err(e)) => {
                    tracing::error!("{name} failed: {e:#}");
                    failed = Some(e.context(name));
                }
                Err(_) => failed = Some(anyhow::anyhow!("{name} panicked")),
            }
        }
        failed.map_or(Ok(()), Err)
    }
}

/// The field that carries the record timestamp when there is no `--time-field`.
const RECORD_TIME_FIELD: &str = "_kafka_timestamp";

/// Runs `cep kafka` until SIGINT/SIGTERM; returns the process exit code.
pub fn kafka(args: KafkaArgs) -> anyhow::Result<i32> {
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .try_init();
    let stop = Arc::new(AtomicBool::new(false));
    watch_signals(stop.clone());
    let mut pipeline = Pipeline::new(&args)?;
    pipeline.run(&stop)?;
    Ok(0)
}

fn watch_signals(stop: Arc<AtomicBool>) {
    std::thread::spawn(move || {
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                tracing::error!("cannot watch signals: {e}");
                return;
            }
        };
        rt.block_on(async {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(t) => t,
                    Err(_) => return,
                };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        });
        stop.store(true, Ordering::SeqCst);
    });
}

fn duration(flag: &str, text: &str) -> anyhow::Result<i64> {
    DurationMs::parse(text)
        .map(|d| d.0)
        .map_err(|e| anyhow::anyhow!("{flag}: {e}"))
}

fn options(list: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    list.iter()
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => Ok((k.trim().to_string(), v.trim().to_string())),
            None => bail!("--kafka-option must be key=value, not '{kv}'"),
        })
        .collect()
}

/// Where each kind of output goes.
struct Topics {
    matches: String,
    timeouts: Option<String>,
    late: Option<String>,
    dlq: Option<String>,
}

#[derive(Default, Debug)]
struct Counters {
    records: u64,
    skipped: u64,
    dead_letters: u64,
    outputs: u64,
    epochs: u64,
    restores: u64,
    /// Keys moved from memory to RocksDB, and back.
    evicted: u64,
    loaded: u64,
}

/// An input partition.
type Part = (String, i32);

struct Pipeline {
    patterns: Vec<Arc<CompiledPattern>>,
    config: EngineConfig,
    engine: JsonEngine,
    source: KafkaSource,
    sink: KafkaSink,
    topics: Topics,
    changelog: Changelog,
    guarantee: Guarantee,
    record_time: bool,
    commit_interval: Duration,
    epoch: u64,
    outs: Vec<Output>,
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
}

impl Pipeline {
    fn new(args: &KafkaArgs) -> anyhow::Result<Pipeline> {
        let mut patterns = Vec::new();
        for f in pattern_files(&args.patterns)? {
            let p = load_pattern(&f).map_err(|e| anyhow::anyhow!("{}: {e}", f.display()))?;
            patterns.push(Arc::new(p));
        }
        if patterns.is_empty() {
            bail!("no pattern files found");
        }
        let spill = match (args.state_backend, &args.data_dir) {
            (StateBackendArg::Memory, _) => None,
            (StateBackendArg::Rocksdb, None) => bail!("--state-backend rocksdb needs --data-dir"),
            (StateBackendArg::Rocksdb, Some(dir)) => {
                Some(Spill::open(dir, args.max_keys_in_memory.max(1))?)
            }
        };
        let out_of_orderness = duration("--out-of-orderness", &args.out_of_orderness)?;
        let idleness = args
            .idleness
            .as_deref()
            .map(|t| duration("--idleness", t))
            .transpose()?;
        let commit_interval = duration("--commit-interval", &args.commit_interval)?;
        let kafka_options = options(&args.kafka_options)?;
        let record_time = args.time_field.is_none();
        let config = EngineConfig {
            key_by: args.key_by.clone(),
            time_field: args
                .time_field
                .clone()
                .unwrap_or_else(|| RECORD_TIME_FIELD.to_string()),
            time_format: if record_time {
                cep_patterns::TimeFormat::EpochMs
            } else {
                args.time_format.into()
            },
            // The engine's own watermark (highest timestamp seen, globally) is switched off by an
            // unbounded out-of-orderness: the pipeline drives the watermark from its per-partition
            // watermarks with `advance_watermark`.
            out_of_orderness_ms: i64::MAX,
        };
        // What the checkpointed state belongs to: a changed pipeline cannot take it over.
        let fingerprint = output_id(
            json!({
                "patterns": patterns.iter().map(|p| p.spec()).collect::<Vec<_>>(),
                "key_by": config.key_by,
                "time_field": config.time_field,
                "time_format": config.time_format,
            })
            .to_string()
            .as_bytes(),
        );
        let engine = new_engine(&config, &patterns)?;

        let mut source_config =
            SourceConfig::new(&args.bootstrap, &args.group, args.input_topics.clone());
        source_config.out_of_orderness_ms = out_of_orderness;
        source_config.idleness_ms = idleness;
        source_config.options = kafka_options.clone();
        let source = source_config.build()?;

        let changelog = Changelog {
            topic: args
                .changelog_topic
                .clone()
                .unwrap_or_else(|| format!("{}-cep-changelog", args.group)),
            bootstrap: args.bootstrap.clone(),
            options: kafka_options.clone(),
            fingerprint,
        };
        changelog.ensure_topic(&args.input_topics)?;

        let mut sink_config = SinkConfig::new(&args.bootstrap);
        sink_config.options = kafka_options;
        if args.guarantee == Guarantee::ExactlyOnce {
            sink_config.transactional_id = Some(
                args.transactional_id
                    .clone()
                    .unwrap_or_else(|| format!("cep-{}", args.group)),
            );
        }
        // For a transactional sink this fences an older instance and aborts its open transaction.
        let sink = sink_config.build()?;
        Ok(Pipeline {
            patterns,
            config,
            engine,
            source,
            sink,
            topics: Topics {
                matches: args.matches_topic.clone(),
                timeouts: args.timeouts_topic.clone(),
                late: args.late_topic.clone(),
                dlq: args.dlq_topic.clone(),
            },
            changelog,
            guarantee: args.guarantee,
            record_time,
            commit_interval: Duration::from_millis(commit_interval.max(1) as u64),
            epoch: 1,
            outs: Vec::new(),
            counters: Counters::default(),
            assigned: BTreeSet::new(),
            homes: HashMap::new(),
            start: HashMap::new(),
            touched: BTreeSet::new(),
            moved: Vec::new(),
            spill,
            used: HashMap::new(),
        })
    }

    fn run(&mut self, stop: &AtomicBool) -> anyhow::Result<()> {
        let mut last_commit = Instant::now();
        let mut dirty = false;
        while !stop.load(Ordering::SeqCst) {
            let polled = self.source.poll(Duration::from_millis(50));
            if let Some(parts) = self.source.take_assignment() {
                self.restore(parts)?;
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
                Err(e) => return Err(e.into()),
            }
            if let Some(wm) = self.source.watermark() {
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
        }
        tracing::info!("stopping: committing the last epoch");
        self.checkpoint(true)?;
        tracing::info!("stopped: {:?}", self.counters);
        Ok(())
    }

    /// Starts over on `parts` from the last checkpoint: what was not committed is dropped (the
    /// open transaction aborted) and read again, the state of each partition is read back from
    /// the changelog.
    fn restore(&mut self, parts: Vec<Part>) -> anyhow::Result<()> {
        let begun = Instant::now();
        if self.sink.is_transactional() {
            self.sink.abort()?;
        }
        self.outs.clear();
        self.engine = new_engine(&self.config, &self.patterns)?;
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

        let restored = self.changelog.read(&parts)?;
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
                self.engine
                    .restore_key(&key, &snapshot)
                    .map_err(|e| anyhow::anyhow!("changelog {}: {e}", self.changelog.topic))?;
                if let Some(spill) = &mut self.spill {
                    spill.put(&key, Some(&snapshot))?;
                    if self.engine.key_count() > spill.max_keys {
                        spill.evict(&mut self.engine, &key)?;
                    } else {
                        self.used.insert(key.clone(), self.epoch);
                    }
                }
                self.homes.insert(key, part.clone());
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
        tracing::info!(
            "assigned {parts:?}: restored {keys} keys in {:?} (offsets {:?})",
            begun.elapsed(),
            self.start
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
        self.touched.insert(part.clone());
        let read = parse_json_object(&record)
            .map(|mut v| {
                if self.record_time {
                    if let (Some(obj), Some(ts)) = (v.as_object_mut(), record.timestamp) {
                        obj.insert(RECORD_TIME_FIELD.into(), ts.into());
                    }
                }
                v
            })
            .and_then(|v| {
                self.engine
                    .key_and_time(&v)
                    .map(|(key, ts)| (v, key, ts))
                    .map_err(|e| e.message)
            });
        match read {
            Ok((value, key, ts)) => {
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
                if let Err(e) = self.engine.push(value, &mut self.outs) {
                    // Not reached: key and time were read above.
                    self.dead_letter(&record, &e.message)?;
                }
            }
            Err(reason) => self.dead_letter(&record, &reason)?,
        }
        self.source.mark_processed(&record);
        Ok(())
    }

    fn dead_letter(&mut self, record: &SourceRecord, reason: &str) -> anyhow::Result<()> {
        self.counters.dead_letters += 1;
        let letter = DeadLetter::new(record, reason);
        match &self.topics.dlq {
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
            let topic = match o.kind {
                OutputKind::Match => Some(&self.topics.matches),
                OutputKind::Timeout => self.topics.timeouts.as_ref(),
                OutputKind::Late => self.topics.late.as_ref(),
            };
            let Some(topic) = topic else { continue };
            let bytes = serde_json::to_vec(&o)?;
            let id = output_id(&bytes);
            self.sink
                .send(topic, Some(o.key.as_bytes()), &bytes, Some(&id))?;
            self.counters.outputs += 1;
        }
        Ok(())
    }

    /// Ends the epoch: the changed keys' snapshots and the markers to the changelog, then outputs
    /// and changelog acknowledged and offsets committed (at-least-once), or all of it committed
    /// in one transaction with the offsets (exactly-once).
    fn checkpoint(&mut self, last: bool) -> anyhow::Result<()> {
        let topic = self.changelog.topic.clone();
        for key in self.engine.take_changed() {
            let Some(part) = self.homes.get(&key).cloned() else {
                continue;
            };
            let snapshot = self.engine.snapshot_key(&key);
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
        let max_ts: HashMap<Part, i64> = self
            .source
            .watermarks()
            .max_timestamps()
            .into_iter()
            .collect();
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
        match self.guarantee {
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
        if self.sink.is_transactional() && !last {
            self.sink.begin()?;
        }
        Ok(())
    }
}

fn new_engine(
    config: &EngineConfig,
    patterns: &[Arc<CompiledPattern>],
) -> anyhow::Result<JsonEngine> {
    let mut engine =
        JsonEngine::new(config.clone(), patterns.to_vec()).map_err(|e| anyhow::anyhow!("{e}"))?;
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
fn fold_changelog(
    records: impl IntoIterator<Item = ChangelogRecord>,
    fingerprint: &str,
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
                if marker.fingerprint != fingerprint {
                    bail!(
                        "the changelog holds the state of a pipeline with other patterns, key or \
                         time field; a changed pipeline needs a new --group (or --changelog-topic)"
                    );
                }
                let part = done.entry(topic.clone()).or_default();
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
    fn evict(&mut self, engine: &mut JsonEngine, key: &str) -> anyhow::Result<bool> {
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

    /// Brings `key` back into memory if it was evicted; true if it was.
    fn load(&mut self, engine: &mut JsonEngine, key: &str) -> anyhow::Result<bool> {
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

    /// Brings back every evicted key with something due at or before `watermark`.
    fn load_due(&mut self, engine: &mut JsonEngine, watermark: i64) -> anyhow::Result<Vec<String>> {
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
            folded.insert(p, fold_changelog(list, &self.fingerprint)?);
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
        Some(
            serde_json::to_vec(&Marker {
                epoch: 1,
                offset,
                max_ts: Some(10),
                watermark: 5,
                fingerprint: "fp".into(),
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
        let folded = fold_changelog(recs, "fp").unwrap();
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

        let err = fold_changelog(vec![(marker_key("a"), marker(1))], "other").unwrap_err();
        assert!(err.to_string().contains("a changed pipeline"), "{err}");
    }

    #[test]
    fn keys_with_separators_round_trip() {
        let k = state_key("t", "user\0with nul");
        let folded = fold_changelog(
            vec![(k, Some(b"x".to_vec())), (marker_key("t"), marker(3))],
            "fp",
        )
        .unwrap();
        assert!(folded["t"].keys.contains_key("user\0with nul"));
    }
}
