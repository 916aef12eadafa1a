//! The Kafka sink: a producer whose acknowledgements are tracked, so that offsets are committed only
//! after every output before them is acknowledged; with a transactional id it writes in
//! transactions that commit the consumed offsets too (exactly-once).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientContext, TopicPartitionList};
use serde::{Deserialize, Serialize};

use super::config::SinkConfig;
use super::source::SourceRecord;
use super::{Error, Result};

/// The header carrying an output's deterministic id ([`output_id`]), for downstream dedupe.
pub const OUTPUT_ID_HEADER: &str = "cep-output-id";

/// A deterministic id for an output: 128-bit FNV-1a of its bytes, as 32 hex digits. The same output
/// produced again (after a restart that re-reads input) gets the same id.
pub fn output_id(bytes: &[u8]) -> String {
    const PRIME: u128 = 0x0000000001000000000000000000013B;
    let mut h: u128 = 0x6c62272e07bb014262b821756295c58d;
    for b in bytes {
        h ^= *b as u128;
        h = h.wrapping_mul(PRIME);
    }
    format!("{h:032x}")
}

/// The envelope of a record that could not be read, written to the dead-letter topic.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Why it could not be read.
    pub reason: String,
    /// Where it was read from.
    pub topic: String,
    /// Its partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// Its key, as UTF-8 (lossy), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Its value, as UTF-8 (lossy; invalid bytes become U+FFFD), if any.
    pub value: Option<String>,
}

impl DeadLetter {
    /// The envelope of `record` with `reason`.
    pub fn new(record: &SourceRecord, reason: impl Into<String>) -> Self {
        DeadLetter {
            reason: reason.into(),
            topic: record.topic.clone(),
            partition: record.partition,
            offset: record.offset,
            key: record
                .key
                .as_deref()
                .map(|k| String::from_utf8_lossy(k).into_owned()),
            value: record
                .payload
                .as_deref()
                .map(|v| String::from_utf8_lossy(v).into_owned()),
        }
    }

    /// As JSON bytes.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a dead letter serializes")
    }
}

#[derive(Default)]
struct Deliveries {
    acked: u64,
    failed: Option<(String, String)>,
}

struct SinkContext {
    deliveries: Arc<Mutex<Deliveries>>,
}

impl ClientContext for SinkContext {}

impl ProducerContext for SinkContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        let mut d = self.deliveries.lock().unwrap_or_else(|p| p.into_inner());
        match result {
            Ok(_) => d.acked += 1,
            Err((e, m)) => {
                if d.failed.is_none() {
                    d.failed = Some((m.topic().to_string(), e.to_string()));
                }
            }
        }
    }
}

/// A producer with tracked acknowledgements; see the module docs.
pub struct KafkaSink {
    producer: BaseProducer<SinkContext>,
    deliveries: Arc<Mutex<Deliveries>>,
    config: SinkConfig,
    in_transaction: bool,
}

impl std::fmt::Debug for KafkaSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSink")
            .field("config", &self.config)
            .field("in_transaction", &self.in_transaction)
            .finish()
    }
}

const TXN_TIMEOUT: Duration = Duration::from_secs(30);

impl KafkaSink {
    pub(crate) fn new(config: SinkConfig) -> Result<Self> {
        let deliveries = Arc::new(Mutex::new(Deliveries::default()));
        let producer: BaseProducer<SinkContext> = config
            .client_config()
            .create_with_context(SinkContext {
                deliveries: deliveries.clone(),
            })
            .map_err(|e| Error::client("creating the producer", e))?;
        if config.transactional_id.is_some() {
            // Fences any older producer with the same id and aborts its open transaction.
            producer
                .init_transactions(TXN_TIMEOUT)
                .map_err(|e| Error::client("initialising transactions", e))?;
        }
        Ok(KafkaSink {
            producer,
            deliveries,
            config,
            in_transaction: false,
        })
    }

    /// Whether the sink writes in transactions.
    pub fn is_transactional(&self) -> bool {
        self.config.transactional_id.is_some()
    }

    /// Records acknowledged so far.
    pub fn acknowledged(&self) -> u64 {
        self.deliveries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .acked
    }

    fn check_failed(&self) -> Result<()> {
        let d = self.deliveries.lock().unwrap_or_else(|p| p.into_inner());
        match &d.failed {
            Some((topic, message)) => Err(Error::Delivery {
                topic: topic.clone(),
                message: message.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Queues a record for `topic` (keyed by `key`, with an optional [`OUTPUT_ID_HEADER`]). Waits
    /// while the local queue is full. Fails if an earlier record failed delivery.
    pub fn send(
        &mut self,
        topic: &str,
        key: Option<&[u8]>,
        payload: &[u8],
        id: Option<&str>,
    ) -> Result<()> {
        self.send_to(topic, None, key, Some(payload), id)
    }

    /// Like [`send`](Self::send), to a given partition (or the key's), and without a value for a
    /// tombstone (`payload: None`: deletes the key from a compacted topic).
    pub fn send_to(
        &mut self,
        topic: &str,
        partition: Option<i32>,
        key: Option<&[u8]>,
        payload: Option<&[u8]>,
        id: Option<&str>,
    ) -> Result<()> {
        self.check_failed()?;
        let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic);
        if let Some(p) = payload {
            record = record.payload(p);
        }
        if let Some(p) = partition {
            record = record.partition(p);
        }
        if let Some(k) = key {
            record = record.key(k);
        }
        if let Some(id) = id {
            record = record.headers(OwnedHeaders::new().insert(Header {
                key: OUTPUT_ID_HEADER,
                value: Some(id),
            }));
        }
        loop {
            match self.producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    self.producer.poll(Duration::from_millis(50));
                }
                Err((e, _)) => return Err(Error::client(format!("producing to {topic}"), e)),
            }
        }
        self.producer.poll(Duration::ZERO);
        Ok(())
    }

    /// Serves delivery reports without blocking.
    pub fn poll(&self) {
        self.producer.poll(Duration::ZERO);
    }

    /// Waits until every queued record is acknowledged (or `timeout`); fails if any delivery
    /// failed. Only after this may offsets be committed (non-transactional pipelines).
    pub fn flush(&mut self, timeout: Duration) -> Result<()> {
        self.producer.flush(timeout).map_err(|e| match e {
            KafkaError::Flush(code) => Error::Delivery {
                topic: "(any)".into(),
                message: format!("not acknowledged within {timeout:?}: {code}"),
            },
            e => Error::client("flushing", e),
        })?;
        self.check_failed()
    }

    /// Begins a transaction (transactional sinks; a no-op when one is open).
    pub fn begin(&mut self) -> Result<()> {
        if !self.in_transaction {
            self.producer
                .begin_transaction()
                .map_err(|e| Error::client("beginning a transaction", e))?;
            self.in_transaction = true;
        }
        Ok(())
    }

    /// Commits the open transaction together with the consumer's `offsets` (exactly-once). On
    /// error the transaction is aborted where possible; the caller restarts from the last committed
    /// offsets.
    pub fn commit(
        &mut self,
        offsets: &TopicPartitionList,
        group: &ConsumerGroupMetadata,
    ) -> Result<()> {
        self.begin()?;
        // A polling producer must serve its delivery reports for the commit to complete.
        let result = self
            .flush(TXN_TIMEOUT)
            .and_then(|()| self.send_offsets_and_commit(offsets, group));
        self.in_transaction = false;
        if let Err(e) = &result {
            if !matches!(e, Error::Fenced(_)) {
                let _ = self.producer.abort_transaction(TXN_TIMEOUT);
            }
        }
        result?;
        self.check_failed()
    }

    fn send_offsets_and_commit(
        &self,
        offsets: &TopicPartitionList,
        group: &ConsumerGroupMetadata,
    ) -> Result<()> {
        if offsets.count() > 0 {
            self.producer
                .send_offsets_to_transaction(offsets, group, TXN_TIMEOUT)
                .map_err(|e| Error::client("adding offsets to the transaction", e))?;
        }
        self.producer
            .commit_transaction(TXN_TIMEOUT)
            .map_err(|e| Error::client("committing the transaction", e))
    }

    /// Aborts the open transaction, if any. Its records are never seen by read-committed
    /// consumers, so their delivery failures are forgotten.
    pub fn abort(&mut self) -> Result<()> {
        if self.in_transaction {
            self.in_transaction = false;
            // A polling producer must serve its delivery reports for the abort to complete.
            let _ = self.producer.flush(TXN_TIMEOUT);
            self.producer
                .abort_transaction(TXN_TIMEOUT)
                .map_err(|e| Error::client("aborting the transaction", e))?;
            self.deliveries
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .failed = None;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_ids_are_deterministic_and_distinct() {
        let a = output_id(br#"{"kind":"match","key":"u1"}"#);
        assert_eq!(a, output_id(br#"{"kind":"match","key":"u1"}"#));
        assert_ne!(a, output_id(br#"{"kind":"match","key":"u2"}"#));
        assert_eq!(a.len(), 32);
        // FNV-1a 128 of the empty input is its offset basis.
        assert_eq!(output_id(b""), "6c62272e07bb014262b821756295c58d");
    }

    #[test]
    fn dead_letter_envelope() {
        let r = SourceRecord {
            topic: "logins".into(),
            partition: 3,
            offset: 17,
            key: Some(b"u1".to_vec()),
            payload: Some(b"{oops".to_vec()),
            timestamp: None,
        };
        let d = DeadLetter::new(&r, "malformed JSON");
        let v: serde_json::Value = serde_json::from_slice(&d.to_json()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"reason":"malformed JSON","topic":"logins","partition":3,
                               "offset":17,"key":"u1","value":"{oops"})
        );
    }
}
