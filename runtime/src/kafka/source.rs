//! The Kafka source: a consumer group over one or more topics, one watermark generator per assigned
//! partition, combined as the minimum over the partitions that are not idle.
//!
//! The source does not decide how records become events: the caller polls a [`SourceRecord`], reads
//! it (for JSON, with [`decode_json`] or its own reader), reports the event time with
//! [`KafkaSource::observe`], and marks the record processed with [`KafkaSource::mark_processed`]
//! once it has been handed to the operator (also when it went to a dead-letter topic: a poison
//! record must never stop a pipeline). [`KafkaSource::watermark`] returns the combined watermark
//! whenever it advances; call it after every poll.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::consumer::{
    BaseConsumer, Consumer, ConsumerContext, ConsumerGroupMetadata, RebalanceProtocol,
};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use serde_json::Value;

use super::config::SourceConfig;
use super::{Error, Result};
use crate::time::{
    BoundedOutOfOrderness, Clock, Timestamp, Watermark, WatermarkGenerator, WatermarkHolder,
    WithIdleness, MIN_WATERMARK,
};

/// One record read from Kafka, detached from the client's buffers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceRecord {
    /// Its topic.
    pub topic: String,
    /// Its partition.
    pub partition: i32,
    /// Its offset in the partition.
    pub offset: i64,
    /// Its key, if any.
    pub key: Option<Vec<u8>>,
    /// Its value, if any (a tombstone has none).
    pub payload: Option<Vec<u8>>,
    /// The record timestamp (create or log-append time), if the broker gave one.
    pub timestamp: Option<Timestamp>,
}

/// Where a record's event time comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TimeSource {
    /// A field of the JSON value (dotted path, e.g. `meta.ts`), epoch milliseconds.
    FieldMillis(String),
    /// The Kafka record timestamp.
    RecordTimestamp,
}

/// Parses a record's value as a JSON object; the error is the reason for the dead-letter topic.
pub fn parse_json_object(record: &SourceRecord) -> std::result::Result<Value, String> {
    let bytes = record
        .payload
        .as_deref()
        .ok_or_else(|| "record has no value".to_string())?;
    let v: Value = serde_json::from_slice(bytes).map_err(|e| format!("malformed JSON: {e}"))?;
    if v.is_object() {
        Ok(v)
    } else {
        Err("an event must be a JSON object".to_string())
    }
}

/// Reads a record as a JSON object and its event time; the error is the reason for the dead-letter
/// topic (malformed JSON, not an object, missing or mistyped time field, no record timestamp).
pub fn decode_json(
    record: &SourceRecord,
    time: &TimeSource,
) -> std::result::Result<(Value, Timestamp), String> {
    let v = parse_json_object(record)?;
    let ts = match time {
        TimeSource::RecordTimestamp => record
            .timestamp
            .ok_or_else(|| "record has no timestamp".to_string())?,
        TimeSource::FieldMillis(path) => {
            let mut cur = &v;
            for part in path.split('.') {
                cur = cur
                    .get(part)
                    .ok_or_else(|| format!("missing time field '{path}'"))?;
            }
            cur.as_i64().ok_or_else(|| {
                format!("time field '{path}' must be an integer (epoch milliseconds), found {cur}")
            })?
        }
    };
    Ok((v, ts))
}

struct PartitionClock {
    generator: Box<dyn WatermarkGenerator<()>>,
    max_timestamp: Timestamp,
}

/// Per-partition watermarks (bounded out-of-orderness, optional idleness) combined by a
/// [`WatermarkHolder`]: the minimum over the partitions that are not idle. The combined watermark
/// only moves forward, across reassignments too.
pub struct PartitionWatermarks {
    out_of_orderness: Timestamp,
    idleness: Option<Timestamp>,
    clock: Arc<dyn Clock>,
    partitions: Vec<(String, i32)>,
    index: HashMap<(String, i32), usize>,
    clocks: Vec<PartitionClock>,
    holder: WatermarkHolder,
    emitted: Timestamp,
    restored: HashMap<(String, i32), Timestamp>,
    /// Whether an event came since the last [`emit`](Self::emit).
    fresh: bool,
    /// When (wall clock) events last came, and the watermark right after them: while every
    /// partition is idle, the watermark follows the wall clock from there.
    active: Option<(Timestamp, Timestamp)>,
}

impl std::fmt::Debug for PartitionWatermarks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartitionWatermarks")
            .field("partitions", &self.partitions)
            .field("emitted", &self.emitted)
            .finish()
    }
}

impl PartitionWatermarks {
    /// No partitions yet.
    pub fn new(
        out_of_orderness: Timestamp,
        idleness: Option<Timestamp>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        PartitionWatermarks {
            out_of_orderness,
            idleness,
            clock,
            partitions: Vec::new(),
            index: HashMap::new(),
            clocks: Vec::new(),
            holder: WatermarkHolder::new(0),
            emitted: MIN_WATERMARK,
            restored: HashMap::new(),
            fresh: false,
            active: None,
        }
    }

    fn new_clock(&self) -> PartitionClock {
        let inner: Box<dyn WatermarkGenerator<()>> =
            Box::new(BoundedOutOfOrderness::new(self.out_of_orderness));
        let generator: Box<dyn WatermarkGenerator<()>> = match self.idleness {
            Some(t) => Box::new(WithIdleness::new(inner, t, self.clock.clone())),
            None => inner,
        };
        PartitionClock {
            generator,
            max_timestamp: MIN_WATERMARK,
        }
    }

    /// Starts over on `partitions`: every generator new (seeded with `seeds`, the highest event
    /// times of a checkpoint, see [`max_timestamps`](Self::max_timestamps)), and the combined
    /// watermark back at `emitted`, so that nothing at or below it is emitted again (what the restored
    /// state has seen). For a pipeline that rebuilds its state from a checkpoint after a
    /// rebalance.
    pub fn reset(
        &mut self,
        partitions: &[(String, i32)],
        seeds: Vec<((String, i32), Timestamp)>,
        emitted: Timestamp,
    ) {
        self.partitions.clear();
        self.clocks.clear();
        self.restored = seeds.into_iter().collect();
        self.emitted = emitted;
        self.fresh = false;
        self.active = None;
        self.assign(partitions);
    }

    /// Sets the assigned partitions; partitions kept keep their generators.
    pub fn assign(&mut self, partitions: &[(String, i32)]) {
        let mut old: HashMap<(String, i32), PartitionClock> = self
            .partitions
            .drain(..)
            .zip(self.clocks.drain(..))
            .collect();
        self.index.clear();
        for (i, p) in partitions.iter().enumerate() {
            let clock = old.remove(p).unwrap_or_else(|| {
                let mut c = self.new_clock();
                if let Some(ts) = self.restored.remove(p) {
                    c.max_timestamp = ts;
                    c.generator.on_event(&(), ts);
                }
                c
            });
            self.clocks.push(clock);
            self.partitions.push(p.clone());
            self.index.insert(p.clone(), i);
        }
        self.holder = WatermarkHolder::new(partitions.len());
    }

    /// Seeds an assigned partition's generator with the highest event time of a checkpoint (a
    /// partition added by an incremental rebalance, restored from its previous owner's state).
    pub fn seed(&mut self, partition: &(String, i32), max_timestamp: Timestamp) {
        if let Some(&i) = self.index.get(partition) {
            let c = &mut self.clocks[i];
            if max_timestamp > c.max_timestamp {
                c.max_timestamp = max_timestamp;
                c.generator.on_event(&(), max_timestamp);
            }
        }
    }

    /// The assigned partitions.
    pub fn partitions(&self) -> &[(String, i32)] {
        &self.partitions
    }

    /// Reports an event time read on a partition (ignored for a partition not assigned).
    pub fn on_event(&mut self, topic: &str, partition: i32, ts: Timestamp) {
        if let Some(&i) = self.index.get(&(topic.to_string(), partition)) {
            self.fresh = true;
            let c = &mut self.clocks[i];
            c.max_timestamp = c.max_timestamp.max(ts);
            if let Some(w) = c.generator.on_event(&(), ts) {
                self.holder.set(i, w);
            }
        }
    }

    /// Asks every partition for its periodic watermark and returns the combined event-time
    /// watermark if it advanced since the last one returned.
    ///
    /// With idleness, an idle partition does not hold the watermark back, and while every
    /// partition is idle the watermark follows the wall clock from where the last events left it
    /// (the meaning idleness has for every pipeline: windows close and timeouts fire on a quiet
    /// input).
    pub fn emit(&mut self) -> Option<Timestamp> {
        for i in 0..self.clocks.len() {
            if let Some(w) = self.clocks[i].generator.on_periodic_emit() {
                self.holder.set(i, w);
            }
        }
        let mut advanced = None;
        match self.holder.watermark() {
            Some(Watermark::EventTime(t)) if t > self.emitted => {
                self.emitted = t;
                advanced = Some(t);
            }
            Some(Watermark::Idle) if self.idleness.is_some() => {
                if let Some((at, watermark)) = self.active {
                    let idle_for = self.clock.now().saturating_sub(at).max(0);
                    let target = watermark.saturating_add(idle_for);
                    if watermark > MIN_WATERMARK && target > self.emitted {
                        self.emitted = target;
                        advanced = Some(target);
                    }
                }
            }
            _ => {}
        }
        if self.fresh {
            self.fresh = false;
            self.active = Some((self.clock.now(), self.emitted));
        }
        advanced
    }

    /// The highest event time seen per partition (what a checkpoint needs to rebuild generators).
    pub fn max_timestamps(&self) -> Vec<((String, i32), Timestamp)> {
        self.partitions
            .iter()
            .zip(&self.clocks)
            .filter(|(_, c)| c.max_timestamp > MIN_WATERMARK)
            .map(|(p, c)| (p.clone(), c.max_timestamp))
            .collect()
    }
}

/// A change of the assigned partitions, as [`KafkaSource::take_assignment`] reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AssignmentChange {
    /// Start over on these partitions, the whole assignment (the first assignment, an eager
    /// rebalance, partitions lost): each is read again from the group's committed offset.
    Whole(Vec<(String, i32)>),
    /// Incremental rebalancing (`cooperative-sticky`): these partitions were added, read from
    /// their committed offsets; the others go on where they are.
    Added(Vec<(String, i32)>),
    /// Incremental rebalancing, with [`KafkaSource::defer_revokes`]: these partitions are being
    /// taken away. They stay assigned until [`KafkaSource::finish_revoke`], so that the caller
    /// can commit what it did with them first.
    Revoking(Vec<(String, i32)>),
}

/// What the rebalance callback saw, for [`KafkaSource::poll`] to turn into changes.
#[derive(Debug)]
enum Rebalanced {
    Whole,
    Added(Vec<(String, i32)>),
    Revoking(Vec<(String, i32)>),
}

fn tpl_of(parts: &[(String, i32)]) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    for (topic, partition) in parts {
        tpl.add_partition(topic, *partition);
    }
    tpl
}

fn parts_of(tpl: &TopicPartitionList) -> Vec<(String, i32)> {
    let mut parts: Vec<(String, i32)> = tpl
        .elements()
        .iter()
        .map(|e| (e.topic().to_string(), e.partition()))
        .collect();
    parts.sort();
    parts
}

struct SourceContext {
    events: Arc<Mutex<Vec<Rebalanced>>>,
    defer_revokes: Arc<AtomicBool>,
}

impl SourceContext {
    fn push(&self, event: Rebalanced) {
        self.events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(event);
    }
}

impl ClientContext for SourceContext {}

impl ConsumerContext for SourceContext {
    /// librdkafka's rebalance callback (inside `poll`). Eager: the whole assignment changes.
    /// Cooperative: partitions are added, or revoked; a revoke is left pending when the owner
    /// defers revokes (it commits them, then calls `incremental_unassign` itself), unless the
    /// partitions are already lost (then their work since the last commit is redone by their new
    /// owner, and this source starts over).
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        let done = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS if cooperative => {
                self.push(Rebalanced::Added(parts_of(tpl)));
                consumer.incremental_assign(tpl)
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                self.push(Rebalanced::Whole);
                consumer.assign(tpl)
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS if cooperative => {
                if self.defer_revokes.load(Ordering::SeqCst) && !consumer.assignment_lost() {
                    self.push(Rebalanced::Revoking(parts_of(tpl)));
                    Ok(())
                } else {
                    self.push(Rebalanced::Whole);
                    consumer.incremental_unassign(tpl)
                }
            }
            other => {
                if other != RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS {
                    tracing::warn!("rebalance error: {other:?}");
                }
                self.push(Rebalanced::Whole);
                consumer.unassign()
            }
        };
        if let Err(e) = done {
            tracing::warn!("rebalance: {e}");
        }
    }
}

/// A consumer group over one or more topics with per-partition watermarks; see the module docs.
pub struct KafkaSource {
    consumer: BaseConsumer<SourceContext>,
    config: SourceConfig,
    watermarks: PartitionWatermarks,
    /// What the rebalance callback saw since the last poll.
    events: Arc<Mutex<Vec<Rebalanced>>>,
    defer_revokes: Arc<AtomicBool>,
    processed: BTreeMap<(String, i32), i64>,
    subscribed: bool,
    /// The assigned partitions, sorted.
    assigned: Vec<(String, i32)>,
    /// Changes of the assignment, until taken by [`KafkaSource::take_assignment`].
    changes: VecDeque<AssignmentChange>,
}

impl std::fmt::Debug for KafkaSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSource")
            .field("config", &self.config)
            .field("watermarks", &self.watermarks)
            .finish()
    }
}

impl Drop for KafkaSource {
    fn drop(&mut self) {
        // Closing the consumer revokes what it holds (a dynamic member): nothing is left to
        // commit, and nobody would finish a deferred revoke.
        self.defer_revokes.store(false, Ordering::SeqCst);
    }
}

impl KafkaSource {
    pub(crate) fn new(config: SourceConfig, clock: Arc<dyn Clock>) -> Result<Self> {
        // The first poll reports the (empty) assignment: the caller starts from a known state.
        let events = Arc::new(Mutex::new(vec![Rebalanced::Whole]));
        let defer_revokes = Arc::new(AtomicBool::new(false));
        let consumer: BaseConsumer<SourceContext> = config
            .client_config()
            .create_with_context(SourceContext {
                events: events.clone(),
                defer_revokes: defer_revokes.clone(),
            })
            .map_err(|e| Error::client("creating the consumer", e))?;
        let watermarks =
            PartitionWatermarks::new(config.out_of_orderness_ms, config.idleness_ms, clock);
        Ok(KafkaSource {
            consumer,
            config,
            watermarks,
            events,
            defer_revokes,
            processed: BTreeMap::new(),
            subscribed: false,
            assigned: Vec::new(),
            changes: VecDeque::new(),
        })
    }

    /// Joins the group (done by the first [`poll`](Self::poll)). Requests to the group
    /// coordinator wait behind a pending join, which can last until the session of a crashed
    /// member times out, so [`committed`](Self::committed) is best called before.
    pub fn subscribe(&mut self) -> Result<()> {
        if !self.subscribed {
            let topics: Vec<&str> = self.config.topics.iter().map(String::as_str).collect();
            self.consumer
                .subscribe(&topics)
                .map_err(|e| Error::client(format!("subscribing to {topics:?}"), e))?;
            self.subscribed = true;
        }
        Ok(())
    }

    /// The configuration.
    pub fn config(&self) -> &SourceConfig {
        &self.config
    }

    /// The underlying consumer (for group metadata, committed offsets, seeks).
    pub fn consumer(&self) -> &BaseConsumer<impl ConsumerContext> {
        &self.consumer
    }

    /// The per-partition watermarks.
    pub fn watermarks(&mut self) -> &mut PartitionWatermarks {
        &mut self.watermarks
    }

    /// Waits up to `timeout` for the next record. `Ok(None)` when there is none yet. Errors the
    /// client reports for one fetch are returned; the source stays usable.
    pub fn poll(&mut self, timeout: Duration) -> Result<Option<SourceRecord>> {
        self.subscribe()?;
        let polled = match self.consumer.poll(timeout) {
            None => Ok(None),
            Some(Err(KafkaError::PartitionEOF(_))) => Ok(None),
            Some(Err(e)) => Err(Error::client("polling", e)),
            Some(Ok(m)) => Ok(Some(SourceRecord {
                topic: m.topic().to_string(),
                partition: m.partition(),
                offset: m.offset(),
                key: m.key().map(<[u8]>::to_vec),
                payload: m.payload().map(<[u8]>::to_vec),
                timestamp: m.timestamp().to_millis(),
            })),
        };
        // Rebalance callbacks run inside `poll`: pick up a new assignment before the record.
        self.refresh_assignment()?;
        polled
    }

    fn refresh_assignment(&mut self) -> Result<()> {
        let mut events =
            std::mem::take(&mut *self.events.lock().unwrap_or_else(|p| p.into_inner()));
        // An eager rebalance revokes everything, then assigns: both read the assignment as it
        // is now, once is enough.
        events.dedup_by(|a, b| matches!((a, b), (Rebalanced::Whole, Rebalanced::Whole)));
        for event in events {
            match event {
                Rebalanced::Whole => {
                    let tpl = self
                        .consumer
                        .assignment()
                        .map_err(|e| Error::client("reading the assignment", e))?;
                    let parts = parts_of(&tpl);
                    tracing::info!("assigned partitions: {parts:?}");
                    self.set_assigned(parts.clone());
                    self.changes.push_back(AssignmentChange::Whole(parts));
                }
                Rebalanced::Added(added) if self.assigned.is_empty() => {
                    tracing::info!("assigned partitions: {added:?}");
                    self.set_assigned(added.clone());
                    self.changes.push_back(AssignmentChange::Whole(added));
                }
                Rebalanced::Added(added) => {
                    let mut parts = self.assigned.clone();
                    parts.extend(added.iter().cloned());
                    parts.sort();
                    parts.dedup();
                    tracing::info!("partitions added: {added:?}, assigned: {parts:?}");
                    self.set_assigned(parts);
                    self.changes.push_back(AssignmentChange::Added(added));
                }
                Rebalanced::Revoking(parts) => {
                    tracing::info!("partitions being revoked: {parts:?}");
                    self.changes.push_back(AssignmentChange::Revoking(parts));
                }
            }
        }
        Ok(())
    }

    fn set_assigned(&mut self, parts: Vec<(String, i32)>) {
        self.processed.retain(|p, _| parts.contains(p));
        self.watermarks.assign(&parts);
        self.assigned = parts;
    }

    /// The next change of the assigned partitions (a rebalance; the first assignment too), if
    /// any. After [`AssignmentChange::Whole`], each partition is read again from the group's
    /// committed offset.
    pub fn take_assignment(&mut self) -> Option<AssignmentChange> {
        self.changes.pop_front()
    }

    /// With incremental rebalancing, leave revoked partitions assigned until
    /// [`finish_revoke`](Self::finish_revoke) (see [`AssignmentChange::Revoking`]).
    pub fn defer_revokes(&self, defer: bool) {
        self.defer_revokes.store(defer, Ordering::SeqCst);
    }

    /// Gives up partitions reported as [`AssignmentChange::Revoking`] (their work committed):
    /// the rebalance goes on.
    pub fn finish_revoke(&mut self, parts: &[(String, i32)]) -> Result<()> {
        self.consumer
            .incremental_unassign(&tpl_of(parts))
            .map_err(|e| Error::client("giving up revoked partitions", e))?;
        let kept: Vec<(String, i32)> = self
            .assigned
            .iter()
            .filter(|p| !parts.contains(p))
            .cloned()
            .collect();
        tracing::info!("partitions revoked: {parts:?}, assigned: {kept:?}");
        self.set_assigned(kept);
        Ok(())
    }

    /// Reads `parts` (assigned and being fetched) again from the group's committed offsets, as
    /// a new assignment would (where none is committed, from `auto_offset_reset`); what was
    /// processed of them since is forgotten. For a caller that starts over without a rebalance.
    pub fn rewind(&mut self, parts: &[(String, i32)]) -> Result<()> {
        if parts.is_empty() {
            return Ok(());
        }
        let committed = self
            .consumer
            .committed_offsets(tpl_of(parts), Duration::from_secs(30))
            .map_err(|e| Error::client("reading the committed offsets", e))?;
        let mut seek = TopicPartitionList::new();
        for e in committed.elements() {
            let offset = match e.offset() {
                Offset::Offset(o) => Offset::Offset(o),
                _ if self.config.auto_offset_reset == "latest" => Offset::End,
                _ => Offset::Beginning,
            };
            seek.add_partition_offset(e.topic(), e.partition(), offset)
                .map_err(|e| Error::client("building the offset list", e))?;
        }
        let done = self
            .consumer
            .seek_partitions(seek, Duration::from_secs(30))
            .map_err(|e| Error::client("seeking to the committed offsets", e))?;
        for e in done.elements() {
            if let Err(err) = e.error() {
                return Err(Error::client(
                    format!(
                        "seeking {}/{} to its committed offset",
                        e.topic(),
                        e.partition()
                    ),
                    err,
                ));
            }
        }
        self.processed.retain(|p, _| !parts.contains(p));
        Ok(())
    }

    /// The assigned partitions, sorted.
    pub fn assigned(&self) -> &[(String, i32)] {
        &self.assigned
    }

    /// Forgets the processed offsets (the pipeline starts over from committed offsets).
    pub fn reset_processed(&mut self) {
        self.processed.clear();
    }

    /// The offset after the last processed record of a partition, if any was processed.
    pub fn processed_offset(&self, topic: &str, partition: i32) -> Option<i64> {
        self.processed.get(&(topic.to_string(), partition)).copied()
    }

    /// Reports the event time of a record read from `record`'s partition.
    pub fn observe(&mut self, record: &SourceRecord, ts: Timestamp) {
        self.watermarks
            .on_event(&record.topic, record.partition, ts);
    }

    /// Marks `record` as handed on: its offset will be part of the next commit.
    pub fn mark_processed(&mut self, record: &SourceRecord) {
        self.processed
            .insert((record.topic.clone(), record.partition), record.offset + 1);
    }

    /// The combined watermark if it advanced (asks each partition for its periodic watermark).
    pub fn watermark(&mut self) -> Option<Timestamp> {
        self.watermarks.emit()
    }

    /// The offsets to commit: per partition, the offset after the last processed record, each
    /// carrying `metadata`.
    pub fn processed_offsets(&self, metadata: &str) -> Result<TopicPartitionList> {
        let mut tpl = TopicPartitionList::new();
        for ((topic, partition), offset) in &self.processed {
            tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset))
                .map_err(|e| Error::client("building the offset list", e))?;
            if let Some(mut elem) = tpl.find_partition(topic, *partition) {
                elem.set_metadata(metadata);
            }
        }
        Ok(tpl)
    }

    /// The processed offsets as `(topic, partition, next offset)`.
    pub fn processed(&self) -> impl Iterator<Item = (&str, i32, i64)> + '_ {
        self.processed
            .iter()
            .map(|((t, p), o)| (t.as_str(), *p, *o))
    }

    /// Commits the processed offsets synchronously (non-transactional pipelines; call only after
    /// every output produced before has been acknowledged).
    pub fn commit(&self, metadata: &str) -> Result<()> {
        if self.processed.is_empty() {
            return Ok(());
        }
        let tpl = self.processed_offsets(metadata)?;
        self.consumer
            .commit(&tpl, rdkafka::consumer::CommitMode::Sync)
            .map_err(|e| Error::client("committing offsets", e))
    }

    /// The group's committed offsets for the topics, as `(topic, partition, offset, metadata)`;
    /// partitions without a committed offset are left out.
    pub fn committed(&self, timeout: Duration) -> Result<Vec<(String, i32, i64, String)>> {
        let mut tpl = TopicPartitionList::new();
        for t in &self.config.topics {
            let md = self
                .consumer
                .fetch_metadata(Some(t), timeout)
                .map_err(|e| Error::client(format!("reading metadata of {t}"), e))?;
            for topic in md.topics() {
                for p in topic.partitions() {
                    tpl.add_partition(topic.name(), p.id());
                }
            }
        }
        let got = self
            .consumer
            .committed_offsets(tpl, timeout)
            .map_err(|e| Error::client("reading committed offsets", e))?;
        Ok(got
            .elements()
            .iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(o) => Some((
                    e.topic().to_string(),
                    e.partition(),
                    o,
                    e.metadata().to_string(),
                )),
                _ => None,
            })
            .collect())
    }

    /// The group metadata for a transactional sink's `send_offsets_to_transaction`.
    pub fn group_metadata(&self) -> Option<ConsumerGroupMetadata> {
        self.consumer.group_metadata()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::ManualClock;

    fn parts(n: i32) -> Vec<(String, i32)> {
        (0..n).map(|p| ("t".to_string(), p)).collect()
    }

    #[test]
    fn combined_watermark_is_the_minimum_over_partitions() {
        let clock = ManualClock::new(0);
        let mut w = PartitionWatermarks::new(100, None, Arc::new(clock));
        w.assign(&parts(2));
        w.on_event("t", 0, 1000);
        assert_eq!(w.emit(), None, "partition 1 has no events yet");
        w.on_event("t", 1, 500);
        assert_eq!(w.emit(), Some(399));
        w.on_event("t", 1, 2000);
        assert_eq!(w.emit(), Some(899));
        assert_eq!(w.emit(), None, "no advance, nothing emitted");
    }

    #[test]
    fn when_every_partition_is_idle_the_watermark_follows_the_wall_clock() {
        let clock = Arc::new(ManualClock::new(10_000));
        let mut w = PartitionWatermarks::new(0, Some(1000), clock.clone());
        w.assign(&[("t".into(), 0), ("t".into(), 1)]);
        w.on_event("t", 0, 5_000);
        w.on_event("t", 1, 6_000);
        assert_eq!(w.emit(), Some(4_999));
        clock.advance(500);
        assert_eq!(w.emit(), None, "not idle yet");
        // Both partitions idle since 10,000: the watermark moves with the clock from 4,999.
        clock.advance(1_000);
        assert_eq!(w.emit(), Some(4_999 + 1_500));
        clock.advance(2_000);
        assert_eq!(w.emit(), Some(4_999 + 3_500));
        // Events again: the event-time watermark takes over, and never goes back.
        w.on_event("t", 0, 7_000);
        assert_eq!(w.emit(), None, "partition 1 is still idle; 6,999 is behind");
        w.on_event("t", 0, 9_000);
        assert_eq!(w.emit(), Some(8_999));
        // Without idleness nothing moves on a quiet input.
        let mut quiet = PartitionWatermarks::new(0, None, clock.clone());
        quiet.assign(&[("t".into(), 0)]);
        quiet.on_event("t", 0, 5_000);
        assert_eq!(quiet.emit(), Some(4_999));
        clock.advance(60_000);
        assert_eq!(quiet.emit(), None);
    }

    #[test]
    fn idle_partitions_do_not_hold_back_and_the_watermark_never_regresses() {
        let clock = ManualClock::new(0);
        let mut w = PartitionWatermarks::new(0, Some(1000), Arc::new(clock.clone()));
        w.assign(&parts(2));
        w.on_event("t", 0, 5000);
        w.on_event("t", 1, 100);
        assert_eq!(w.emit(), Some(99));
        clock.advance(600);
        w.on_event("t", 0, 6000);
        clock.advance(600);
        // Partition 1 has been quiet for 1200 ms: idle; partition 0 (600 ms) is not.
        assert_eq!(w.emit(), Some(5999));
        // Partition 1 comes back behind: the combined watermark stays.
        w.on_event("t", 1, 200);
        assert_eq!(w.emit(), None);
        w.on_event("t", 1, 7000);
        w.on_event("t", 0, 8000);
        assert_eq!(w.emit(), Some(6999));
        assert_eq!(
            w.max_timestamps(),
            vec![(("t".to_string(), 0), 8000), (("t".to_string(), 1), 7000)]
        );
    }

    #[test]
    fn reassignment_keeps_generators_of_kept_partitions() {
        let mut w = PartitionWatermarks::new(0, None, Arc::new(ManualClock::new(0)));
        w.assign(&parts(2));
        w.on_event("t", 0, 10);
        w.on_event("t", 1, 20);
        assert_eq!(w.emit(), Some(9));
        w.assign(&parts(1));
        w.on_event("t", 0, 15);
        assert_eq!(w.emit(), Some(14));
        w.assign(&parts(3));
        w.on_event("t", 1, 5);
        w.on_event("t", 2, 50);
        assert_eq!(w.emit(), None, "partition 1 restarts behind: no regression");
    }

    #[test]
    fn reset_starts_over_from_a_checkpoint() {
        let mut w = PartitionWatermarks::new(0, None, Arc::new(ManualClock::new(0)));
        w.assign(&parts(2));
        w.on_event("t", 0, 500);
        w.on_event("t", 1, 900);
        assert_eq!(w.emit(), Some(499));
        // Back to a checkpoint: partition 0 had seen 300, partition 1 nothing; 250 was emitted.
        w.reset(&parts(2), vec![(("t".to_string(), 0), 300)], 250);
        assert_eq!(w.emit(), None, "partition 1 has no events yet");
        w.on_event("t", 1, 280);
        assert_eq!(w.emit(), Some(279));
        assert_eq!(w.max_timestamps()[0], (("t".to_string(), 0), 300));
    }

    fn rec(payload: &str) -> SourceRecord {
        SourceRecord {
            topic: "in".into(),
            partition: 2,
            offset: 7,
            key: None,
            payload: Some(payload.as_bytes().to_vec()),
            timestamp: Some(42),
        }
    }

    #[test]
    fn decoding_says_why_a_record_is_unreadable() {
        let field = TimeSource::FieldMillis("m.ts".into());
        assert_eq!(decode_json(&rec(r#"{"m":{"ts":5}}"#), &field).unwrap().1, 5);
        assert_eq!(
            decode_json(&rec(r#"{"x":1}"#), &TimeSource::RecordTimestamp)
                .unwrap()
                .1,
            42
        );
        let err = |p: &str| decode_json(&rec(p), &field).unwrap_err();
        assert!(err("{not json").starts_with("malformed JSON"));
        assert_eq!(err("[1]"), "an event must be a JSON object");
        assert_eq!(err(r#"{"m":{}}"#), "missing time field 'm.ts'");
        assert!(err(r#"{"m":{"ts":"x"}}"#).contains("must be an integer"));
        let mut none = rec("");
        none.payload = None;
        assert_eq!(
            decode_json(&none, &field).unwrap_err(),
            "record has no value"
        );
    }
}
