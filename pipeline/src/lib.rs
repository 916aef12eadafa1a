//! The pipeline layer, between the patterns and the service: a [`PipelineSpec`] (source, key,
//! time, watermark, patterns, state, sinks) and what runs it.
//!
//! - [`spec`]: the typed spec, the same for the REST API, the configuration file, `cep kafka` and
//!   `cep run`, with validation that names the field of each problem.
//! - [`running`]: a pipeline inside `cep serve`: HTTP ingest drives its engine directly, a Kafka
//!   source runs [`kafka::KafkaPipeline`] on a thread; outputs go to the recent buffer / SSE
//!   and the Kafka sink.
//! - [`store`]: the service's RocksDB: catalog, and per pipeline a write-ahead log, checkpoints
//!   and an output log, written in order by one committer thread (group commit).
//! - [`kafka`]: the Kafka-in, Kafka-out pipeline with checkpoints to a changelog topic.
//! - [`window`]: a window stage ahead of the patterns (the runtime's window operator).
//! - [`file`]: a file source read once (`cep run`).

pub mod file;
mod journal;
pub mod kafka;
pub mod running;
pub mod shards;
pub mod spec;
pub mod store;
pub mod window;

pub use spec::{
    parse, Guarantee, Host, KafkaSinkSpec, KafkaSourceSpec, Membership, PatternSelection,
    PipelineSpec, SinkSpec, SourceSpec, SpecError, StateBackend, StateSpec, TimeSpec,
    WatermarkSpec, KAFKA_TIMESTAMP_FIELD,
};
pub use spec::{AggregateSpec, TimeMode, WindowKind, WindowSize, WindowStageSpec};

/// The clocks a [`running::Environment`] takes (processing time reads it).
pub use cep_runtime::{Clock, ManualClock, SystemClock};

/// The pattern files named by `paths`: files as given, directories by their `*.json` files (in
/// name order).
pub fn pattern_files(paths: &[std::path::PathBuf]) -> anyhow::Result<Vec<std::path::PathBuf>> {
    use anyhow::Context as _;
    let mut files = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut in_dir: Vec<std::path::PathBuf> = std::fs::read_dir(p)
                .with_context(|| format!("reading directory {}", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.extension().is_some_and(|x| x == "json"))
                .collect();
            in_dir.sort();
            files.extend(in_dir);
        } else if p.exists() {
            files.push(p.clone());
        } else {
            anyhow::bail!("no such pattern file or directory: {}", p.display());
        }
    }
    Ok(files)
}
