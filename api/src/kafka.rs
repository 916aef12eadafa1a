//! `cep kafka`: a Kafka-in, Kafka-out pipeline. JSON events are read by a consumer group from one or
//! more topics, evaluated by a [`JsonEngine`] in event time (per-partition watermarks with
//! idleness, combined by the minimum over the partitions that are not idle), and matches,
//! timeouts, late events and unreadable records are written to their topics, keyed by the CEP key.
//!
//! The pipeline runs in *epochs* (one per `--commit-interval`). At the end of an epoch:
//!
//! - `at-least-once`: every output is acknowledged (producer flush), the epoch's engine operations
//!   are made durable in the operation log (with `--data-dir`), then the consumed offsets are
//!   committed, tagged with the epoch.
//! - `exactly-once`: the outputs of the epoch were produced in one transaction; the operation log
//!   is made durable, then the consumed offsets are added to the transaction and it is committed.
//!
//! The engine's state (partial matches) cannot be serialized, so it is made durable as the log of
//! the operations that built it (events pushed, watermarks advanced) in RocksDB under `--data-dir`.
//! On restart the operations of the committed epochs are replayed into a fresh engine (their
//! outputs are discarded: they were delivered already) and consumption resumes at the committed
//! offsets. A key's operations leave the log once its state is provably empty. See
//! `docs/kafka.md`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use cep_patterns::{DurationMs, EngineConfig, JsonEngine, Output, OutputKind, WithinTypeSpec};
use cep_runtime::kafka::{
    output_id, parse_json_object, DeadLetter, KafkaSink, KafkaSource, SinkConfig, SourceConfig,
    SourceRecord,
};
use serde_json::{json, Value};

use crate::run::{load_pattern, pattern_files, TimeFormatArg};

/// Options of `cep kafka`.
#[derive(clap::Args, Debug)]
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
    pub time_format: TimeFormatArg,
    /// Bounded out-of-orderness per partition, e.g. `300ms`.
    #[arg(long, default_value = "0")]
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
    /// Directory of the durable engine state (RocksDB operation log). Without it, partial matches
    /// in flight are lost when the process stops.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Delivery guarantee. `exactly-once` needs `--data-dir`.
    #[arg(long, value_enum, default_value = "at-least-once")]
    pub guarantee: Guarantee,
    /// Transactional id for `exactly-once` (default `cep-<group>`); one running instance per id.
    #[arg(long)]
    pub transactional_id: Option<String>,
    /// How often outputs and offsets are committed, e.g. `1s`.
    #[arg(long, default_value = "1s")]
    pub commit_interval: String,
    /// Further librdkafka option for consumer and producer, `key=value` (repeatable).
    #[arg(long = "kafka-option", short = 'X')]
    pub kafka_options: Vec<String>,
}

/// `--guarantee`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Guarantee {
    /// Outputs are acknowledged before offsets are committed; after a crash, outputs since the
    /// last commit are produced again (with the same `cep-output-id` header).
    AtLeastOnce,
    /// Outputs and offsets are committed in one transaction; read with `isolation.level =
    /// read_committed`, each output appears once.
    ExactlyOnce,
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
    dead_letters: u64,
    outputs: u64,
    epochs: u64,
}

struct Pipeline {
    engine: JsonEngine,
    source: KafkaSource,
    sink: KafkaSink,
    topics: Topics,
    log: Option<OpLog>,
    guarantee: Guarantee,
    record_time: bool,
    commit_interval: Duration,
    epoch: u64,
    outs: Vec<Output>,
    counters: Counters,
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
        if args.guarantee == Guarantee::ExactlyOnce && args.data_dir.is_none() {
            bail!("--guarantee exactly-once needs --data-dir (the engine state must survive a restart)");
        }
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
        // The longest time a partial match can live; `None` if some pattern has no bound.
        let horizon = patterns
            .iter()
            .map(|p| {
                let s = p.spec();
                match (s.within, s.within_type) {
                    (Some(w), None | Some(WithinTypeSpec::FirstAndLast)) => Some(w.0),
                    _ => None,
                }
            })
            .try_fold(0i64, |acc, w| w.map(|w| acc.max(w)));
        let fingerprint = json!({
            "patterns": patterns.iter().map(|p| p.spec()).collect::<Vec<_>>(),
            "key_by": config.key_by,
            "time_field": config.time_field,
            "time_format": config.time_format,
            "input_topics": args.input_topics,
        })
        .to_string();
        let mut engine = JsonEngine::new(config, patterns).map_err(|e| anyhow::anyhow!("{e}"))?;

        let mut source_config =
            SourceConfig::new(&args.bootstrap, &args.group, args.input_topics.clone());
        source_config.out_of_orderness_ms = out_of_orderness;
        source_config.idleness_ms = idleness;
        source_config.options = kafka_options.clone();
        let mut source = source_config.build()?;

        let mut sink_config = SinkConfig::new(&args.bootstrap);
        sink_config.options = kafka_options;
        if args.guarantee == Guarantee::ExactlyOnce {
            sink_config.transactional_id = Some(
                args.transactional_id
                    .clone()
                    .unwrap_or_else(|| format!("cep-{}", args.group)),
            );
        }
        // For a transactional sink this fences an older instance and aborts its open transaction
        // before the committed offsets are read below.
        let mut sink = sink_config.build()?;

        let mut epoch = 0;
        let log = match &args.data_dir {
            None => None,
            Some(dir) => {
                let mut log = OpLog::open(dir, &fingerprint, horizon)?;
                let committed = source
                    .committed(Duration::from_secs(30))
                    .context("reading the committed offsets")?;
                let committed_epoch = committed
                    .iter()
                    .filter_map(|(_, _, _, meta)| parse_epoch(meta))
                    .max()
                    .unwrap_or(0);
                let restored = log.restore(committed_epoch, &mut engine)?;
                tracing::info!(
                    "restored epoch {committed_epoch}: {} events, {} watermarks replayed; watermark {}",
                    restored.events,
                    restored.watermarks,
                    engine.watermark()
                );
                source
                    .watermarks()
                    .restore(restored.max_timestamps, engine.watermark());
                epoch = committed_epoch;
                Some(log)
            }
        };
        epoch += 1;
        if sink.is_transactional() {
            sink.begin()?;
        }
        Ok(Pipeline {
            engine,
            source,
            sink,
            topics: Topics {
                matches: args.matches_topic.clone(),
                timeouts: args.timeouts_topic.clone(),
                late: args.late_topic.clone(),
                dlq: args.dlq_topic.clone(),
            },
            log,
            guarantee: args.guarantee,
            record_time,
            commit_interval: Duration::from_millis(commit_interval.max(1) as u64),
            epoch,
            outs: Vec::new(),
            counters: Counters::default(),
        })
    }

    fn run(&mut self, stop: &AtomicBool) -> anyhow::Result<()> {
        let mut last_commit = Instant::now();
        let mut dirty = false;
        while !stop.load(Ordering::SeqCst) {
            match self.source.poll(Duration::from_millis(50)) {
                Ok(Some(record)) => {
                    self.handle(record)?;
                    dirty = true;
                }
                Ok(None) => {}
                Err(e) if e.is_retryable() => tracing::warn!("{e}; retrying"),
                Err(e) => return Err(e.into()),
            }
            if let Some(wm) = self.source.watermark() {
                if let Some(log) = &mut self.log {
                    log.watermark(self.epoch, wm);
                }
                self.engine.advance_watermark(wm, &mut self.outs);
                dirty = true;
            }
            self.send_outputs()?;
            if dirty && last_commit.elapsed() >= self.commit_interval {
                self.checkpoint()?;
                last_commit = Instant::now();
                dirty = false;
            }
            self.sink.poll();
        }
        tracing::info!("stopping: committing the last epoch");
        self.checkpoint()?;
        tracing::info!("stopped: {:?}", self.counters);
        Ok(())
    }

    fn handle(&mut self, record: SourceRecord) -> anyhow::Result<()> {
        self.counters.records += 1;
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
                if let Some(log) = &mut self.log {
                    log.event(self.epoch, &record, &key, ts, &value);
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

    /// Ends the epoch: outputs acknowledged (or in the transaction), the operation log durable,
    /// then the offsets committed with the epoch number.
    fn checkpoint(&mut self) -> anyhow::Result<()> {
        let meta = format!("cep-epoch={}", self.epoch);
        match self.guarantee {
            Guarantee::AtLeastOnce => {
                self.sink.flush(Duration::from_secs(60))?;
                if let Some(log) = &mut self.log {
                    log.commit_epoch(self.epoch)?;
                }
                self.source.commit(&meta)?;
            }
            Guarantee::ExactlyOnce => {
                if let Some(log) = &mut self.log {
                    log.commit_epoch(self.epoch)?;
                }
                let offsets = self.source.processed_offsets(&meta)?;
                let group = self
                    .source
                    .group_metadata()
                    .context("the consumer has no group metadata")?;
                self.sink.commit(&offsets, &group)?;
            }
        }
        if let Some(log) = &mut self.log {
            // The epoch is committed: keys whose state is empty leave the log.
            log.prune(&self.engine)?;
        }
        self.counters.epochs += 1;
        self.epoch += 1;
        if self.sink.is_transactional() {
            self.sink.begin()?;
        }
        Ok(())
    }
}

fn parse_epoch(meta: &str) -> Option<u64> {
    meta.strip_prefix("cep-epoch=")?.parse().ok()
}

/// What a restore replayed.
struct Restored {
    events: u64,
    watermarks: u64,
    max_timestamps: Vec<((String, i32), i64)>,
}

/// The engine's operations (events pushed, watermarks advanced) in RocksDB, in order, each tagged
/// with its epoch. Replaying the operations of the committed epochs into a fresh engine rebuilds
/// its state exactly: the engine is deterministic, and keys are independent, so a key's operations
/// may leave the log once its state is empty.
struct OpLog {
    db: rocksdb::DB,
    next_seq: u64,
    pending: rocksdb::WriteBatch,
    /// Per key: the sequence numbers of its events and its highest event time.
    keys: HashMap<String, (Vec<u64>, i64)>,
    /// Watermark operations: sequence number -> watermark.
    watermarks: BTreeMap<u64, i64>,
    /// The longest a partial match lives (`None`: some pattern is unbounded, nothing is pruned).
    horizon: Option<i64>,
}

const OP_PREFIX: &[u8] = b"op/";
const CONFIG_KEY: &[u8] = b"meta/config";

fn op_key(seq: u64) -> Vec<u8> {
    let mut k = OP_PREFIX.to_vec();
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

impl OpLog {
    fn open(dir: &Path, fingerprint: &str, horizon: Option<i64>) -> anyhow::Result<OpLog> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut opts = rocksdb::Options::default();
        opts.create_if_missing(true);
        let db = rocksdb::DB::open(&opts, dir.join("oplog"))
            .with_context(|| format!("opening the operation log in {}", dir.display()))?;
        match db.get(CONFIG_KEY)? {
            Some(old) if old != fingerprint.as_bytes() => bail!(
                "{} holds the state of a pipeline with other patterns, key, time field or topics; \
                 use a new --data-dir (and a new --group) for a changed pipeline",
                dir.display()
            ),
            Some(_) => {}
            None => db.put(CONFIG_KEY, fingerprint)?,
        }
        Ok(OpLog {
            db,
            next_seq: 0,
            pending: rocksdb::WriteBatch::default(),
            keys: HashMap::new(),
            watermarks: BTreeMap::new(),
            horizon,
        })
    }

    /// Replays the operations of epochs up to `committed` into `engine` (their outputs are
    /// discarded) and deletes those of later epochs, which were never committed.
    fn restore(&mut self, committed: u64, engine: &mut JsonEngine) -> anyhow::Result<Restored> {
        let mut restored = Restored {
            events: 0,
            watermarks: 0,
            max_timestamps: Vec::new(),
        };
        let mut max_ts: HashMap<(String, i32), i64> = HashMap::new();
        let mut discard = Vec::new();
        let mut drop_batch = rocksdb::WriteBatch::default();
        for item in self.db.prefix_iterator(OP_PREFIX) {
            let (k, v) = item?;
            if !k.starts_with(OP_PREFIX) {
                break;
            }
            let seq = u64::from_be_bytes(k[OP_PREFIX.len()..].try_into()?);
            self.next_seq = self.next_seq.max(seq + 1);
            let op: Value = serde_json::from_slice(&v)?;
            let epoch = op["e"].as_u64().unwrap_or(u64::MAX);
            if epoch > committed {
                drop_batch.delete(&k);
                continue;
            }
            if let Some(w) = op.get("w").and_then(Value::as_i64) {
                engine.advance_watermark(w, &mut discard);
                self.watermarks.insert(seq, w);
                restored.watermarks += 1;
            } else {
                let key = op["k"].as_str().unwrap_or_default().to_string();
                let ts = op["ts"].as_i64().unwrap_or_default();
                if let (Some(t), Some(p)) = (op["t"].as_str(), op["p"].as_i64()) {
                    let m = max_ts.entry((t.to_string(), p as i32)).or_insert(ts);
                    *m = (*m).max(ts);
                }
                let value = op.get("v").cloned().unwrap_or(Value::Null);
                let _ = engine.push(value, &mut discard);
                let entry = self.keys.entry(key).or_insert((Vec::new(), i64::MIN));
                entry.0.push(seq);
                entry.1 = entry.1.max(ts);
                restored.events += 1;
            }
            discard.clear();
        }
        self.db.write(drop_batch)?;
        restored.max_timestamps = max_ts.into_iter().collect();
        Ok(restored)
    }

    fn event(&mut self, epoch: u64, record: &SourceRecord, key: &str, ts: i64, value: &Value) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let op = json!({
            "e": epoch, "t": record.topic, "p": record.partition, "k": key, "ts": ts, "v": value
        });
        self.pending.put(op_key(seq), op.to_string());
        let entry = self
            .keys
            .entry(key.to_string())
            .or_insert((Vec::new(), i64::MIN));
        entry.0.push(seq);
        entry.1 = entry.1.max(ts);
    }

    fn watermark(&mut self, epoch: u64, wm: i64) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.pending
            .put(op_key(seq), json!({"e": epoch, "w": wm}).to_string());
        self.watermarks.insert(seq, wm);
    }

    /// Makes the epoch's operations durable (synced) before its offsets are committed.
    fn commit_epoch(&mut self, _epoch: u64) -> anyhow::Result<()> {
        let batch = std::mem::take(&mut self.pending);
        let mut opts = rocksdb::WriteOptions::default();
        opts.set_sync(true);
        self.db
            .write_opt(batch, &opts)
            .context("writing the operation log")?;
        Ok(())
    }

    /// Drops the operations of keys whose state is empty, and watermark operations older than every
    /// remaining event but the last. A key's state is empty when the watermark has passed its
    /// highest event time by the horizon (every partial match holding its events has timed out) and
    /// it has no partial match.
    fn prune(&mut self, engine: &JsonEngine) -> anyhow::Result<()> {
        let Some(horizon) = self.horizon else {
            return Ok(());
        };
        let wm = engine.watermark();
        let mut batch = rocksdb::WriteBatch::default();
        self.keys.retain(|key, (seqs, max_ts)| {
            let expired = max_ts.saturating_add(horizon) <= wm;
            if expired && engine.partial_matches(key).is_empty() {
                for s in seqs.iter() {
                    batch.delete(op_key(*s));
                }
                false
            } else {
                true
            }
        });
        let first_event = self
            .keys
            .values()
            .filter_map(|(seqs, _)| seqs.first().copied())
            .min()
            .unwrap_or(self.next_seq);
        let older: Vec<u64> = self
            .watermarks
            .range(..first_event)
            .map(|(s, _)| *s)
            .collect();
        if let Some((_, rest)) = older.split_last() {
            for s in rest {
                batch.delete(op_key(*s));
                self.watermarks.remove(s);
            }
        }
        self.db.write(batch).context("pruning the operation log")?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_round_trip_through_offset_metadata() {
        assert_eq!(parse_epoch("cep-epoch=17"), Some(17));
        assert_eq!(parse_epoch(""), None);
        assert_eq!(parse_epoch("other"), None);
    }
}
