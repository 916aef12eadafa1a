//! Kafka connectors: a consumer-group source with per-partition watermarks and a producer sink,
//! transactional when asked (Vector's `sources/kafka.rs` and `sinks/kafka/` are the model).
//!
//! - [`config`]: serde configurations ([`SourceConfig`], [`SinkConfig`]) that `build` the running
//!   components.
//! - [`source`]: [`KafkaSource`] polls a consumer group over one or more topics, keeps one
//!   watermark generator per assigned partition (bounded out-of-orderness, optional idleness) and
//!   combines them with a [`WatermarkHolder`](crate::WatermarkHolder): the minimum over the
//!   partitions that are not idle. [`decode_json`] reads a JSON value and its event time (from a
//!   field or the record timestamp) and says why a record cannot be read.
//! - [`sink`]: [`KafkaSink`] produces records, tracks their acknowledgements and, when
//!   transactional, commits them together with the consumed offsets. [`DeadLetter`] is the
//!   envelope of a record that could not be read; [`output_id`] a deterministic id for dedupe.
//!
//! Offsets are committed only after every output produced from the records before them has been
//! acknowledged by the broker (or, transactionally, in the same transaction as those outputs).

pub mod config;
pub mod sink;
pub mod source;

pub use config::{SinkConfig, SourceConfig};
pub use sink::{output_id, DeadLetter, KafkaSink, OUTPUT_ID_HEADER};
pub use source::{
    decode_json, parse_json_object, AssignmentChange, KafkaSource, PartitionWatermarks,
    SourceRecord, TimeSource,
};

/// The client library, re-exported so that users (and tests) name the same types: offsets lists,
/// group metadata, admin and plain clients.
pub use rdkafka;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};

/// Errors of the Kafka connectors. Each says whether retrying (or restarting the pipeline from its
/// last committed offsets) can help: see [`Error::is_retryable`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is invalid (unknown librdkafka option, empty topic list, bad value).
    /// Retrying cannot help.
    #[error("invalid Kafka configuration: {0}")]
    Config(String),
    /// The client failed while `context`. Whether retrying helps depends on the error: broker and
    /// network errors are transient, authorization and fencing are not.
    #[error("kafka error while {context}: {source}")]
    Client {
        /// What the connector was doing.
        context: String,
        /// The client's error.
        #[source]
        source: KafkaError,
    },
    /// The broker did not acknowledge outputs (delivery failed or timed out). Retrying from the
    /// last committed offsets can help; nothing after them was committed.
    #[error("delivery to {topic} failed: {message}")]
    Delivery {
        /// The topic written to.
        topic: String,
        /// The client's message.
        message: String,
    },
    /// Another instance with the same transactional id took over (it was fenced), or the producer
    /// hit a fatal error. Retrying this process cannot help; the newer instance carries on.
    #[error("producer fenced or fatally failed: {0}")]
    Fenced(String),
}

impl Error {
    /// Whether retrying the operation (or restarting from the last committed offsets) can help.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Config(_) | Error::Fenced(_) => false,
            Error::Delivery { .. } => true,
            Error::Client { source, .. } => client_error_is_retryable(source),
        }
    }

    pub(crate) fn client(context: impl Into<String>, source: KafkaError) -> Self {
        if let KafkaError::Transaction(e) = &source {
            if e.is_fatal() || e.code() == RDKafkaErrorCode::Fenced {
                return Error::Fenced(e.to_string());
            }
        }
        if let KafkaError::ClientConfig(..) = source {
            return Error::Config(source.to_string());
        }
        Error::Client {
            context: context.into(),
            source,
        }
    }
}

fn client_error_is_retryable(e: &KafkaError) -> bool {
    use RDKafkaErrorCode as C;
    match e {
        KafkaError::ClientConfig(..) | KafkaError::Nul(_) | KafkaError::Subscription(_) => false,
        KafkaError::Transaction(t) => !t.is_fatal() && (t.is_retriable() || t.txn_requires_abort()),
        other => !matches!(
            other.rdkafka_error_code(),
            Some(
                C::TopicAuthorizationFailed
                    | C::GroupAuthorizationFailed
                    | C::ClusterAuthorizationFailed
                    | C::TransactionalIdAuthorizationFailed
                    | C::InvalidConfig
                    | C::Fatal
                    | C::Fenced
                    | C::ProducerFenced
                    | C::InvalidProducerEpoch
            )
        ),
    }
}

/// The connectors' result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryability() {
        assert!(!Error::Config("x".into()).is_retryable());
        assert!(!Error::Fenced("x".into()).is_retryable());
        assert!(Error::Delivery {
            topic: "t".into(),
            message: "timed out".into()
        }
        .is_retryable());
        let transient = Error::client(
            "polling",
            KafkaError::MessageConsumption(RDKafkaErrorCode::BrokerTransportFailure),
        );
        assert!(transient.is_retryable());
        assert!(transient.to_string().contains("polling"));
        let denied = Error::client(
            "committing",
            KafkaError::ConsumerCommit(RDKafkaErrorCode::GroupAuthorizationFailed),
        );
        assert!(!denied.is_retryable());
    }
}
