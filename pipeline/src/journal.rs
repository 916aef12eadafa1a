//! The durable side of an HTTP pipeline in the service: its write-ahead log and checkpoints.
//!
//! Everything that moves the engine is a [`WalEntry`] (a request's accepted events, a watermark
//! step, a pattern change), written with the outputs it produced in one batch before the request
//! is answered. A checkpoint writes the keys whose state changed since the last one, the engine's
//! clock and counters ([`CheckpointMeta`]), and drops the log before it. On start the pipeline
//! restores the checkpoint and replays the log after it with the same engine: the state is the
//! one before the crash, and the outputs the replay makes are already in the output log (they
//! were written with their entry), so they are only counted.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use cep_patterns::{CompiledPattern, PatternSpec, Replace};
use cep_runtime::Clock;
use rocksdb::WriteBatch;
use serde_json::{json, Value};

use crate::running::Outputs;
use crate::shards::Engine;
use crate::spec::PipelineSpec;
use crate::store::{seq_of, CheckpointMeta, Durability, Keys, Store, WalEntry};

/// How many idempotency keys a pipeline remembers.
const IDS: usize = 10_000;

/// Idempotency keys of recent requests and what they were answered.
#[derive(Default)]
pub(crate) struct Ids {
    answers: HashMap<String, (usize, usize)>,
    order: VecDeque<String>,
}

impl Ids {
    pub(crate) fn get(&self, id: &str) -> Option<(usize, usize)> {
        self.answers.get(id).copied()
    }

    pub(crate) fn insert(&mut self, id: String, accepted: usize, rejected: usize) {
        if self
            .answers
            .insert(id.clone(), (accepted, rejected))
            .is_none()
        {
            self.order.push_back(id);
            if self.order.len() > IDS {
                if let Some(old) = self.order.pop_front() {
                    self.answers.remove(&old);
                }
            }
        }
    }

    fn to_list(&self) -> Vec<(String, usize, usize)> {
        self.order
            .iter()
            .filter_map(|id| self.answers.get(id).map(|(a, r)| (id.clone(), *a, *r)))
            .collect()
    }
}

/// An HTTP pipeline's log and checkpoints.
pub(crate) struct Journal {
    pub(crate) store: Arc<Store>,
    keys: Keys,
    /// Whether what moves the engine is logged (not with durability off, nor in processing
    /// time, which cannot be replayed).
    logs: bool,
    /// Whether the state is checkpointed key by key (not with a window stage: its log is kept
    /// whole and replayed).
    checkpointable: bool,
    /// The next log entry's number.
    next_wal: u64,
    /// Entries since the last checkpoint.
    since: u64,
    last: Instant,
    fingerprint: Value,
    /// The active patterns as last set (their logged form).
    running: Vec<Value>,
    pub(crate) ids: Ids,
}

/// What the engine's state depends on besides the patterns.
fn fingerprint(spec: &PipelineSpec) -> Value {
    let mut f = json!({
        "key_by": spec.key_by,
        "time": spec.time,
        "out_of_orderness": spec.watermark.out_of_orderness,
    });
    if spec.workers > 1 {
        // Keys are spread over the workers by their number.
        f["workers"] = json!(spec.workers);
    }
    f
}

/// Compiles logged pattern versions: `{"spec", "version", "draining"}` (a bare spec: version 0,
/// active).
pub(crate) fn compile_all(logged: &[Value]) -> anyhow::Result<Vec<(Arc<CompiledPattern>, bool)>> {
    logged
        .iter()
        .map(|v| {
            let (spec, version, draining) = match v.get("spec") {
                Some(spec) => (
                    spec.clone(),
                    v.get("version").and_then(Value::as_u64).unwrap_or(0),
                    v.get("draining").and_then(Value::as_bool).unwrap_or(false),
                ),
                None => (v.clone(), 0, false),
            };
            let spec: PatternSpec =
                serde_json::from_value(spec).context("reading a logged pattern")?;
            let compiled = cep_patterns::compile(&spec).map_err(|e| anyhow::anyhow!("{e}"))?;
            Ok((Arc::new(compiled.with_version(version)), draining))
        })
        .collect()
}

/// Pattern versions as logged.
pub(crate) fn logged(slots: &[(Arc<CompiledPattern>, bool)]) -> Vec<Value> {
    slots
        .iter()
        .map(|(p, draining)| {
            let mut v = json!({"spec": p.spec(), "version": p.version()});
            if *draining {
                v["draining"] = Value::Bool(true);
            }
            v
        })
        .collect()
}

/// The active patterns, as given.
fn active(patterns: &[Arc<CompiledPattern>]) -> Vec<Value> {
    logged(
        &patterns
            .iter()
            .map(|p| (p.clone(), false))
            .collect::<Vec<_>>(),
    )
}

impl Journal {
    /// Restores a pipeline's engine from its checkpoint and log (a fresh engine when it has
    /// none, or when they belong to another key, time or watermark setting), then brings it to
    /// `patterns`. Counters and the output sequence of `outputs` continue from the store.
    pub(crate) fn restore(
        store: &Arc<Store>,
        spec: &PipelineSpec,
        patterns: &[Arc<CompiledPattern>],
        outputs: &Outputs,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<(Engine, Journal)> {
        let started = Instant::now();
        let keys = Keys::new(&spec.name);
        let fingerprint = fingerprint(spec);
        let meta: Option<CheckpointMeta> = match store.get(&keys.meta())? {
            Some(bytes) => {
                Some(serde_json::from_slice(&bytes).context("reading the checkpoint's metadata")?)
            }
            None => None,
        };
        let keep = spec.has_recent_sink();
        let last_out = store
            .last_under(&keys.out_prefix())?
            .as_deref()
            .and_then(seq_of)
            .unwrap_or(0);
        let last_wal = store
            .last_under(&keys.wal_prefix())?
            .as_deref()
            .and_then(seq_of)
            .unwrap_or(0);
        let engine_of = |patterns: Vec<Arc<CompiledPattern>>| {
            Engine::new(spec, patterns, clock.clone()).map_err(|e| anyhow::anyhow!("{e}"))
        };
        let fresh = engine_of(patterns.to_vec())?;
        // Processing time reads the clock: it cannot be replayed, so it is not logged.
        let logs = store.durability() != Durability::Off && fresh.is_replayable();
        let checkpointable = fresh.is_replayable();
        let mut journal = Journal {
            store: store.clone(),
            keys: keys.clone(),
            logs,
            checkpointable,
            next_wal: last_wal + 1,
            since: 0,
            last: Instant::now(),
            fingerprint: fingerprint.clone(),
            running: active(patterns),
            ids: Ids::default(),
        };
        let mut scratch = Vec::new();
        let mut restored_keys = 0usize;
        let mut replayed = 0u64;
        let (mut engine, from) = match meta {
            Some(meta) if logs && meta.fingerprint == fingerprint => {
                let slots = compile_all(&meta.patterns)?;
                journal.running = logged(
                    &slots
                        .iter()
                        .filter(|(_, draining)| !draining)
                        .cloned()
                        .collect::<Vec<_>>(),
                )
                .into_iter()
                .map(|mut v| {
                    if let Some(m) = v.as_object_mut() {
                        m.remove("draining");
                    }
                    v
                })
                .collect();
                let engine = if checkpointable {
                    let mut engine = engine_of(Vec::new())?;
                    let per_worker = match &meta.worker_patterns {
                        Some(lists) => lists
                            .iter()
                            .map(|l| compile_all(l))
                            .collect::<anyhow::Result<Vec<_>>>()?,
                        None => vec![slots],
                    };
                    engine
                        .restore_slots(per_worker)
                        .map_err(|e| anyhow::anyhow!("{e}"))?;
                    let mut failed = None;
                    store.scan_with(&keys.state_prefix(), &keys.state_prefix(), |k, v| {
                        let key = String::from_utf8_lossy(k);
                        match engine.restore_key(&key, v) {
                            Ok(()) => {
                                restored_keys += 1;
                                true
                            }
                            Err(e) => {
                                failed = Some(e.to_string());
                                false
                            }
                        }
                    })?;
                    if let Some(e) = failed {
                        anyhow::bail!("restoring the checkpoint: {e}");
                    }
                    engine.restore_time(meta.max_ts, meta.watermark, &mut scratch);
                    engine
                } else {
                    // Written when the pipeline started from nothing: its patterns then.
                    engine_of(slots.into_iter().map(|(p, _)| p).collect())?
                };
                outputs.restore_counters(&meta.counters, meta.next_out);
                for (id, a, r) in meta.ids {
                    journal.ids.insert(id, a, r);
                }
                journal.next_wal = journal.next_wal.max(meta.wal_seq + 1);
                (engine, meta.wal_seq + 1)
            }
            stale => {
                if stale.is_some() && logs {
                    tracing::warn!(
                        pipeline = %spec.name,
                        "the checkpoint belongs to another key, time or watermark setting: starting over"
                    );
                }
                // Without a log (durability off, processing time), what an earlier run left is
                // dropped.
                // A pipeline that never logged anything starts over too: its checkpoint then
                // says which patterns its log starts with.
                let from = if stale.is_some() || !logs || last_wal == 0 {
                    u64::MAX
                } else {
                    1
                };
                // A replay from the first entry numbers every output again; starting over
                // numbers after the last one written.
                let next = if from == 1 { 1 } else { last_out + 1 };
                outputs.restore_counters(&Value::Null, next);
                (fresh, from)
            }
        };
        if checkpointable {
            engine.track_changes(true);
        }
        if from != u64::MAX {
            let limit = engine.max_future();
            engine.set_max_future(None);
            let mut failed = None;
            store.scan_with(
                &keys.wal_prefix(),
                &keys.wal(from),
                |_, v| match WalEntry::read(v) {
                    Ok(entry) => {
                        if let Err(e) = journal.replay(&mut engine, entry, outputs, keep) {
                            failed = Some(e);
                            return false;
                        }
                        replayed += 1;
                        true
                    }
                    Err(e) => {
                        failed = Some(anyhow::anyhow!("unreadable log entry: {e}"));
                        false
                    }
                },
            )?;
            if let Some(e) = failed {
                return Err(e.context("replaying the log"));
            }
            engine.set_max_future(limit);
        } else {
            // Start over: the old state and log go, in one batch with a fresh checkpoint.
            let mut batch = WriteBatch::default();
            journal.reset(&mut batch, &mut engine, patterns, outputs);
            store
                .commit_wait(batch)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        if from != u64::MAX && outputs.next_seq() != last_out + 1 {
            // The replay made other outputs than the run before the crash: numbering goes on
            // after the last one written, so that no number is used twice.
            tracing::warn!(
                pipeline = %spec.name,
                replayed_next = outputs.next_seq(),
                logged_next = last_out + 1,
                "the replay's outputs differ in number from the logged ones"
            );
        }
        outputs.ensure_next_seq(last_out + 1);
        if journal.running != active(patterns) && from != u64::MAX {
            // The catalog changed after the last logged change (a crash in between): the
            // change is made now, as it would have been.
            let mut batch = WriteBatch::default();
            journal.set_patterns(&mut batch, &mut engine, patterns.to_vec(), Replace::Drain)?;
            store
                .commit_wait(batch)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        tracing::info!(
            pipeline = %spec.name,
            keys = restored_keys,
            replayed,
            elapsed = ?started.elapsed(),
            "restored"
        );
        Ok((engine, journal))
    }

    fn replay(
        &mut self,
        engine: &mut Engine,
        entry: WalEntry,
        outputs: &Outputs,
        keep: bool,
    ) -> anyhow::Result<()> {
        let mut out = Vec::new();
        match entry {
            WalEntry::Events {
                id,
                accepted,
                rejected,
                events,
            } => {
                // Accepted once, so accepted again: the engine is the same.
                let texts: Vec<&str> = events.iter().map(|e| e.get()).collect();
                let _ = engine.push_batch(&texts, &mut out);
                outputs.count_input(accepted, rejected);
                if let Some(id) = id {
                    self.ids.insert(id, accepted, rejected);
                }
            }
            WalEntry::Watermark { to } => {
                if to > engine.watermark() {
                    engine.advance_watermark(to, &mut out);
                }
            }
            WalEntry::Patterns { patterns, mode } => {
                self.running = patterns.clone();
                let patterns = compile_all(&patterns)?
                    .into_iter()
                    .map(|(p, _)| p)
                    .collect();
                engine
                    .set_patterns_mode(patterns, mode)
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
            }
            WalEntry::Retire => {
                engine.retire_drained();
            }
        }
        // Already in the output log: counted and numbered, not written again.
        outputs.number(out, keep);
        self.since += 1;
        Ok(())
    }

    /// Whether accepted events are logged.
    pub(crate) fn logs_events(&self) -> bool {
        self.logs
    }

    fn append(&mut self, batch: &mut WriteBatch, entry: &[u8]) {
        batch.put(self.keys.wal(self.next_wal), entry);
        self.next_wal += 1;
        self.since += 1;
    }

    /// Logs the events a request had accepted (their JSON texts).
    pub(crate) fn log_events(
        &mut self,
        batch: &mut WriteBatch,
        id: Option<&str>,
        accepted: usize,
        rejected: usize,
        events: &[&str],
    ) {
        if !self.logs_events() {
            return;
        }
        let mut bytes = Vec::with_capacity(80 + events.iter().map(|e| e.len() + 1).sum::<usize>());
        bytes.extend_from_slice(b"{\"entry\":\"events\",");
        if let Some(id) = id {
            bytes.extend_from_slice(b"\"id\":");
            // A string always serialises.
            let _ = serde_json::to_writer(&mut bytes, id);
            bytes.push(b',');
        }
        bytes.extend_from_slice(
            format!("\"accepted\":{accepted},\"rejected\":{rejected},\"events\":[").as_bytes(),
        );
        for (i, e) in events.iter().enumerate() {
            if i > 0 {
                bytes.push(b',');
            }
            bytes.extend_from_slice(e.as_bytes());
        }
        bytes.extend_from_slice(b"]}");
        self.append(batch, &bytes);
    }

    /// Logs a watermark step.
    pub(crate) fn log_watermark(&mut self, batch: &mut WriteBatch, to: i64) {
        if !self.logs_events() {
            return;
        }
        let bytes = serde_json::to_vec(&WalEntry::Watermark { to }).unwrap_or_default();
        self.append(batch, &bytes);
    }

    /// Switches the engine's patterns and logs it.
    pub(crate) fn set_patterns(
        &mut self,
        batch: &mut WriteBatch,
        engine: &mut Engine,
        patterns: Vec<Arc<CompiledPattern>>,
        mode: Replace,
    ) -> anyhow::Result<()> {
        let logged = active(&patterns);
        engine
            .set_patterns_mode(patterns, mode)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        self.running = logged.clone();
        if self.logs_events() {
            let entry = WalEntry::Patterns {
                patterns: logged,
                mode,
            };
            self.append(batch, &serde_json::to_vec(&entry)?);
        }
        Ok(())
    }

    /// Drops the draining pattern versions that hold nothing, and logs it.
    pub(crate) fn retire_drained(&mut self, batch: &mut WriteBatch, engine: &mut Engine) -> bool {
        if !engine.retire_drained() {
            return false;
        }
        if self.logs_events() {
            self.append(
                batch,
                &serde_json::to_vec(&WalEntry::Retire).unwrap_or_default(),
            );
        }
        true
    }

    /// Whether a checkpoint is due.
    pub(crate) fn due(&self, every: std::time::Duration, entries: u64) -> bool {
        self.logs
            && self.checkpointable
            && self.since > 0
            && (self.last.elapsed() >= every || self.since >= entries)
    }

    /// Writes a checkpoint into `batch`: the keys changed since the last one, the clock, the
    /// counters; and drops the log it covers. Nothing without a log (processing time, no
    /// durability).
    pub(crate) fn checkpoint(
        &mut self,
        batch: &mut WriteBatch,
        engine: &mut Engine,
        outputs: &Outputs,
    ) {
        if !self.checkpointable {
            return;
        }
        let changed = engine.take_changed();
        if !self.logs {
            return;
        }
        let mut snapshots = Vec::with_capacity(changed.len());
        for key in changed {
            match engine.snapshot_key(&key) {
                Ok(snapshot) => snapshots.push((key, snapshot)),
                Err(e) => {
                    // The changed keys are taken: without them no later checkpoint would be
                    // whole. The log is kept whole from now on, as without checkpoints.
                    tracing::error!(error = %e.message, "checkpoints stop; the log is kept whole");
                    self.checkpointable = false;
                    return;
                }
            }
        }
        for (key, snapshot) in snapshots {
            match snapshot {
                Some(snapshot) => batch.put(self.keys.state(&key), snapshot),
                None => batch.delete(self.keys.state(&key)),
            }
        }
        let mut meta = self.meta(
            engine.max_timestamp(),
            engine.watermark(),
            &engine.slots(),
            outputs,
        );
        // Workers retire drained versions each on its own: theirs are kept when they differ.
        let per_worker: Vec<Vec<Value>> = match engine.workers() {
            1 => Vec::new(),
            _ => engine.worker_slots().iter().map(|s| logged(s)).collect(),
        };
        if per_worker.iter().any(|l| *l != meta.patterns) {
            meta.worker_patterns = Some(per_worker);
        }
        self.write_meta(batch, meta);
    }

    fn meta(
        &self,
        max_ts: i64,
        watermark: i64,
        slots: &[(Arc<CompiledPattern>, bool)],
        outputs: &Outputs,
    ) -> CheckpointMeta {
        CheckpointMeta {
            wal_seq: self.next_wal - 1,
            next_out: outputs.next_seq(),
            max_ts,
            watermark,
            fingerprint: self.fingerprint.clone(),
            patterns: logged(slots),
            worker_patterns: None,
            counters: outputs.counters_json(),
            ids: self.ids.to_list(),
        }
    }

    fn write_meta(&mut self, batch: &mut WriteBatch, meta: CheckpointMeta) {
        batch.put(
            self.keys.meta(),
            serde_json::to_vec(&meta).unwrap_or_default(),
        );
        batch.delete_range(self.keys.wal(0), self.keys.wal(meta.wal_seq + 1));
        self.since = 0;
        self.last = Instant::now();
    }

    /// Drops the state and the log: the engine (fresh, with `patterns`) starts from nothing.
    pub(crate) fn reset(
        &mut self,
        batch: &mut WriteBatch,
        engine: &mut Engine,
        patterns: &[Arc<CompiledPattern>],
        outputs: &Outputs,
    ) {
        let prefix = self.keys.state_prefix();
        let mut end = prefix.clone();
        if let Some(last) = end.last_mut() {
            *last += 1;
        }
        batch.delete_range(prefix, end);
        engine.take_changed();
        self.ids = Ids::default();
        self.running = active(patterns);
        let slots: Vec<(Arc<CompiledPattern>, bool)> =
            patterns.iter().map(|p| (p.clone(), false)).collect();
        let meta = self.meta(i64::MIN, engine.watermark(), &slots, outputs);
        self.write_meta(batch, meta);
    }

    /// Takes a new spec (with its fresh engine): a fresh state from now on.
    pub(crate) fn respec(&mut self, spec: &PipelineSpec, engine: &Engine) {
        self.fingerprint = fingerprint(spec);
        self.logs = self.store.durability() != Durability::Off && engine.is_replayable();
        self.checkpointable = engine.is_replayable();
    }
}
