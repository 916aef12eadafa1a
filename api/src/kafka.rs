//! `cep kafka`: one Kafka-in, Kafka-out pipeline in the foreground. The flags make a
//! [`PipelineSpec`] (the same spec `POST /api/v1/pipelines` takes) that the pipeline layer runs;
//! see `docs/kafka.md`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::bail;
use cep_patterns::{DurationMs, TimeFormat};
use cep_pipeline::{
    Guarantee, KafkaSinkSpec, KafkaSourceSpec, Membership, PatternSelection, PipelineSpec,
    SinkSpec, SourceSpec, StateBackend, StateSpec, TimeMode, TimeSpec, WatermarkSpec,
    KAFKA_TIMESTAMP_FIELD,
};

use crate::bounds_args::BoundsArgs;
use crate::run::load_patterns;
use crate::window_args::WindowArgs;

/// Options of `cep kafka`.
#[derive(clap::Args, Debug, Clone)]
pub struct KafkaArgs {
    /// Kafka bootstrap servers, `host:port[,host:port]`.
    #[arg(long, env = "KAFKA_BOOTSTRAP")]
    pub bootstrap: String,
    /// Consumer group id (committed offsets and the changelog are per group).
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
    /// How the time field is written: epoch-ms, epoch-s or rfc3339.
    #[arg(long, default_value = "epoch-ms")]
    pub time_format: TimeFormat,
    /// Evaluate in processing time: each record at this process's clock when it is taken, in
    /// arrival order (no time field; `within` and timeouts in wall-clock time).
    #[arg(long, conflicts_with_all = ["time_field", "out_of_orderness", "idleness"])]
    pub processing_time: bool,
    /// Bounded out-of-orderness per partition, e.g. `300ms`.
    #[arg(long, default_value = "0")]
    pub out_of_orderness: DurationMs,
    /// A partition without records for this long (wall clock) is idle: it stops holding the
    /// watermark back, e.g. `5s`. Default: partitions are never idle.
    #[arg(long)]
    pub idleness: Option<DurationMs>,
    /// Records whose event time is more than this ahead of the wall clock go to the dead letters
    /// (one would move the watermark past every later event); `off` for no limit.
    #[arg(long, default_value = "1d")]
    pub max_future: String,
    /// Topic for every output kind without a topic of its own (each record says its `kind`).
    #[arg(long)]
    pub topic: Option<String>,
    /// Topic for matches.
    #[arg(long)]
    pub matches_topic: Option<String>,
    /// Topic for timed-out partial matches.
    #[arg(long)]
    pub timeouts_topic: Option<String>,
    /// Topic for late events.
    #[arg(long)]
    pub late_topic: Option<String>,
    /// Dead-letter topic for records that cannot be read, as
    /// `{"reason","topic","partition","offset","key","value"}` (default: logged and skipped).
    #[arg(long, alias = "dlq-topic")]
    pub dead_letter_topic: Option<String>,
    /// Topic the state is checkpointed to (default `<group>-cep-changelog`; created, compacted,
    /// with as many partitions as the input topic with the most, if missing).
    #[arg(long)]
    pub changelog_topic: Option<String>,
    /// Where keyed state lives while the pipeline runs: `memory`, or `rocksdb` (under
    /// `--data-dir`: keys beyond `--max-keys-in-memory` are kept in RocksDB and loaded when an
    /// event or a due timeout needs them). Either way it is checkpointed to the changelog topic.
    #[arg(long, value_enum, default_value = "memory")]
    pub state_backend: StateBackendArg,
    /// Directory of the RocksDB state backend.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// With `--state-backend rocksdb`: how many keys' state stay in memory.
    #[arg(long, default_value_t = 100_000)]
    pub max_keys_in_memory: usize,
    /// Delivery guarantee: at-least-once or exactly-once.
    #[arg(long, default_value = "at-least-once")]
    pub guarantee: Guarantee,
    /// Transactional id for `exactly-once` (default `cep-<group>`). Each running process of a
    /// group needs its own, the same across its restarts (a restart fences the old process and
    /// aborts its open transaction).
    #[arg(long)]
    pub transactional_id: Option<String>,
    /// This process's identity in the consumer group (static membership: a restarted process
    /// takes its partitions back at once). Default: the transactional id (`cep-<group>` when
    /// none is given). Each process of a group needs its own.
    #[arg(long)]
    pub instance_id: Option<String>,
    /// Join the group as a dynamic member (no instance id): a clean stop hands the partitions
    /// over at once; a restart waits for the group to rebalance. For processes that come and go.
    #[arg(long)]
    pub dynamic_membership: bool,
    /// How often outputs, state and offsets are committed, e.g. `1s`.
    #[arg(long, default_value = "1s")]
    pub commit_interval: DurationMs,
    /// Further librdkafka option for consumer and producer, `key=value` (repeatable).
    #[arg(long = "kafka-option", short = 'X')]
    pub kafka_options: Vec<String>,
    /// A window stage ahead of the patterns.
    #[command(flatten)]
    pub window: WindowArgs,
    /// Bounds on the state kept.
    #[command(flatten)]
    pub bounds: BoundsArgs,
}

/// `--state-backend`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum StateBackendArg {
    /// All keyed state in memory.
    #[default]
    Memory,
    /// Keyed state in RocksDB under `--data-dir`, the most recently used keys cached in memory.
    Rocksdb,
}

impl KafkaArgs {
    /// The pipeline spec the flags describe.
    pub fn spec(&self) -> anyhow::Result<PipelineSpec> {
        let mut options = BTreeMap::new();
        for kv in &self.kafka_options {
            match kv.split_once('=') {
                Some((k, v)) => options.insert(k.trim().to_string(), v.trim().to_string()),
                None => bail!("--kafka-option must be key=value, not '{kv}'"),
            };
        }
        if self.state_backend == StateBackendArg::Rocksdb && self.data_dir.is_none() {
            bail!("--state-backend rocksdb needs --data-dir");
        }
        let spec = PipelineSpec {
            name: "kafka".into(),
            source: SourceSpec::Kafka(KafkaSourceSpec {
                bootstrap: self.bootstrap.clone(),
                topics: self.input_topics.clone(),
                group: self.group.clone(),
                instance_id: self.instance_id.clone(),
                membership: if self.dynamic_membership {
                    Membership::Dynamic
                } else {
                    Membership::Static
                },
                changelog_topic: self.changelog_topic.clone(),
                commit_interval: self.commit_interval,
                options,
            }),
            key_by: self.key_by.clone(),
            time: match &self.time_field {
                _ if self.processing_time => TimeSpec {
                    mode: TimeMode::Processing,
                    ..TimeSpec::default()
                },
                Some(field) => TimeSpec {
                    field: field.clone(),
                    format: self.time_format,
                    mode: TimeMode::Event,
                },
                None => TimeSpec {
                    field: KAFKA_TIMESTAMP_FIELD.into(),
                    format: TimeFormat::EpochMs,
                    mode: TimeMode::Event,
                },
            },
            watermark: WatermarkSpec {
                out_of_orderness: self.out_of_orderness,
                idleness: self.idleness,
                max_future: (self.max_future != "off")
                    .then(|| DurationMs::parse(&self.max_future))
                    .transpose()
                    .map_err(|e| anyhow::anyhow!("--max-future: {e}"))?,
            },
            window: self.window.spec()?,
            patterns: PatternSelection::All,
            state: {
                let mut state = StateSpec {
                    backend: match self.state_backend {
                        StateBackendArg::Memory => StateBackend::Memory,
                        StateBackendArg::Rocksdb => StateBackend::Rocksdb,
                    },
                    max_keys_in_memory: Some(self.max_keys_in_memory),
                    dir: self.data_dir.clone(),
                    ..StateSpec::default()
                };
                self.bounds.apply(&mut state);
                state
            },
            workers: 1,
            sinks: vec![SinkSpec::Kafka(KafkaSinkSpec {
                bootstrap: None,
                topic: self.topic.clone(),
                matches_topic: self.matches_topic.clone(),
                timeouts_topic: self.timeouts_topic.clone(),
                late_topic: self.late_topic.clone(),
                dead_letter_topic: self.dead_letter_topic.clone(),
                guarantee: self.guarantee,
                transactional_id: self.transactional_id.clone(),
            })],
        };
        if let Err(errors) = spec.validate() {
            let lines: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
            bail!("{}", lines.join("; "));
        }
        Ok(spec)
    }
}

/// Runs `cep kafka` until SIGINT/SIGTERM; returns the process exit code.
pub fn kafka(args: KafkaArgs) -> anyhow::Result<i32> {
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .try_init();
    let spec = args.spec()?;
    let patterns: Vec<Arc<_>> = load_patterns(&args.patterns)?;
    let stop = Arc::new(AtomicBool::new(false));
    watch_signals(stop.clone());
    let dir = args.data_dir.clone().unwrap_or_else(|| PathBuf::from("."));
    cep_pipeline::kafka::run_until(&spec, patterns, &dir, &stop)?;
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
