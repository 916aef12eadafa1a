//! Serde configurations of the Kafka source and sink; `build` creates the running component.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::sink::KafkaSink;
use super::source::KafkaSource;
use super::{Error, Result};
use crate::time::{Clock, SystemClock, Timestamp};

/// A consumer group over one or more topics, with per-partition watermarks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// `host:port[,host:port...]`.
    pub bootstrap_servers: String,
    /// The consumer group id; committed offsets are kept per group.
    pub group_id: String,
    /// The topics to subscribe to.
    pub topics: Vec<String>,
    /// Bounded out-of-orderness per partition, in ms: a partition's watermark is its highest
    /// timestamp minus this minus 1.
    #[serde(default)]
    pub out_of_orderness_ms: Timestamp,
    /// A partition without records for this long (processing time, ms) is idle and no longer holds
    /// back the combined watermark. `None`: partitions never become idle (Flink's default).
    #[serde(default)]
    pub idleness_ms: Option<Timestamp>,
    /// Where to start when the group has no committed offset: `earliest` (default) or `latest`.
    #[serde(default = "earliest")]
    pub auto_offset_reset: String,
    /// Further librdkafka consumer options (`security.protocol`, `sasl.*`, ...).
    #[serde(default)]
    pub options: BTreeMap<String, String>,
}

fn earliest() -> String {
    "earliest".into()
}

impl SourceConfig {
    /// A configuration with defaults for everything but the essentials.
    pub fn new(bootstrap_servers: &str, group_id: &str, topics: Vec<String>) -> Self {
        SourceConfig {
            bootstrap_servers: bootstrap_servers.into(),
            group_id: group_id.into(),
            topics,
            out_of_orderness_ms: 0,
            idleness_ms: None,
            auto_offset_reset: earliest(),
            options: BTreeMap::new(),
        }
    }

    /// Checks the configuration without connecting.
    pub fn validate(&self) -> Result<()> {
        let mut problems = Vec::new();
        if self.bootstrap_servers.trim().is_empty() {
            problems.push("bootstrap_servers is empty".to_string());
        }
        if self.group_id.trim().is_empty() {
            problems.push("group_id is empty".to_string());
        }
        if self.topics.is_empty() || self.topics.iter().any(|t| t.trim().is_empty()) {
            problems.push("topics must be a non-empty list of topic names".to_string());
        }
        if self.out_of_orderness_ms < 0 {
            problems.push("out_of_orderness_ms must not be negative".to_string());
        }
        if self.idleness_ms.is_some_and(|i| i <= 0) {
            problems.push("idleness_ms must be positive".to_string());
        }
        if !matches!(self.auto_offset_reset.as_str(), "earliest" | "latest") {
            problems.push(format!(
                "auto_offset_reset must be 'earliest' or 'latest', not '{}'",
                self.auto_offset_reset
            ));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Error::Config(problems.join("; ")))
        }
    }

    /// Connects (the first poll joins the group), with the system clock for idleness.
    pub fn build(&self) -> Result<KafkaSource> {
        self.build_with_clock(Arc::new(SystemClock))
    }

    /// Connects (the first poll joins the group), measuring idleness with `clock`.
    pub fn build_with_clock(&self, clock: Arc<dyn Clock>) -> Result<KafkaSource> {
        self.validate()?;
        KafkaSource::new(self.clone(), clock)
    }

    pub(crate) fn client_config(&self) -> rdkafka::ClientConfig {
        let mut c = rdkafka::ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap_servers)
            .set("group.id", &self.group_id)
            // Offsets are committed explicitly, only after the outputs are acknowledged.
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", &self.auto_offset_reset)
            // Never read outputs of aborted transactions (when the input is itself transactional).
            .set("isolation.level", "read_committed")
            .set("enable.partition.eof", "false");
        for (k, v) in &self.options {
            c.set(k, v);
        }
        c
    }
}

/// A producer for outputs, late events and dead letters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    /// `host:port[,host:port...]`.
    pub bootstrap_servers: String,
    /// With a transactional id the sink writes in transactions that also commit the consumed
    /// offsets (exactly-once); without, it is idempotent and at-least-once.
    #[serde(default)]
    pub transactional_id: Option<String>,
    /// How long a record may wait for its acknowledgement (ms) before delivery fails.
    #[serde(default = "delivery_timeout")]
    pub delivery_timeout_ms: u64,
    /// Further librdkafka producer options.
    #[serde(default)]
    pub options: BTreeMap<String, String>,
}

fn delivery_timeout() -> u64 {
    30_000
}

impl SinkConfig {
    /// A non-transactional configuration.
    pub fn new(bootstrap_servers: &str) -> Self {
        SinkConfig {
            bootstrap_servers: bootstrap_servers.into(),
            transactional_id: None,
            delivery_timeout_ms: delivery_timeout(),
            options: BTreeMap::new(),
        }
    }

    /// Connects (and, when transactional, initialises transactions, fencing older instances).
    pub fn build(&self) -> Result<KafkaSink> {
        if self.bootstrap_servers.trim().is_empty() {
            return Err(Error::Config("bootstrap_servers is empty".into()));
        }
        if self
            .transactional_id
            .as_deref()
            .is_some_and(|t| t.trim().is_empty())
        {
            return Err(Error::Config("transactional_id is empty".into()));
        }
        KafkaSink::new(self.clone())
    }

    pub(crate) fn client_config(&self) -> rdkafka::ClientConfig {
        let mut c = rdkafka::ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap_servers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .set("message.timeout.ms", self.delivery_timeout_ms.to_string());
        if let Some(id) = &self.transactional_id {
            // A transaction left open by a process that died is aborted by the broker after this
            // long; until then it holds back read-committed readers of its partitions. 10 s, as
            // Kafka Streams chooses for exactly-once (librdkafka's default is 60 s).
            c.set("transactional.id", id)
                .set("transaction.timeout.ms", TRANSACTION_TIMEOUT_MS.to_string())
                .set(
                    "message.timeout.ms",
                    self.delivery_timeout_ms
                        .min(TRANSACTION_TIMEOUT_MS)
                        .to_string(),
                );
        }
        for (k, v) in &self.options {
            c.set(k, v);
        }
        c
    }
}

/// `transaction.timeout.ms` of transactional sinks, unless set in the options.
const TRANSACTION_TIMEOUT_MS: u64 = 10_000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_collects_every_problem() {
        let mut c = SourceConfig::new("", "", vec![]);
        c.idleness_ms = Some(0);
        c.auto_offset_reset = "never".into();
        let e = c.validate().unwrap_err();
        assert!(!e.is_retryable());
        let msg = e.to_string();
        for part in [
            "bootstrap",
            "group_id",
            "topics",
            "idleness",
            "auto_offset_reset",
        ] {
            assert!(msg.contains(part), "{msg} lacks {part}");
        }
    }

    #[test]
    fn source_config_from_json() {
        let c: SourceConfig = serde_json::from_str(
            r#"{"bootstrap_servers":"127.0.0.1:9092","group_id":"g","topics":["a","b"],
                "idleness_ms":5000,"options":{"client.id":"cep"}}"#,
        )
        .unwrap();
        assert_eq!(c.topics, ["a", "b"]);
        assert_eq!(c.auto_offset_reset, "earliest");
        c.validate().unwrap();
        assert!(serde_json::from_str::<SourceConfig>(
            r#"{"bootstrap_servers":"x","group_id":"g","topics":["a"],"typo":1}"#
        )
        .is_err());
    }
}
