//! A pipeline's engine, on one thread or spread over worker threads by key ([`Engine`]).
//!
//! With `workers` > 1 the pipeline runs that many [`PipelineEngine`]s, each owning the keys
//! whose hash falls to it, as `cep bench --threads` spreads keys over its workers, on a pool of
//! as many threads kept for the engine's life (rayon). A batch of events is read by the workers
//! (key, time and the conditions' fields; a slice each), routed by key, then each worker takes
//! its keys' events. Batches smaller than `PARALLEL_FROM` stay on the calling thread. The
//! watermark stays the pipeline's: the highest
//! event time taken so far, less the out-of-orderness; before each event a worker moves its
//! watermark to where the pipeline's was before that event, and after the batch to where it is
//! after it. So each key sees what it would on one thread: the same events in the same order,
//! the same lateness decisions, and (since the engine's outputs do not depend on how the
//! watermark steps) the same matches and timeouts. Only the order of outputs of different keys
//! within a batch can differ (they are put in time order).
//!
//! Each worker keeps its own pattern versions: a replaced pattern's draining version goes from
//! a worker once none of that worker's keys holds anything of it, so checkpoints record the
//! versions per worker ([`Engine::worker_slots`]).

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use cep_patterns::{
    CompiledPattern, EngineStats, KeyView, Output, ParsedEvent, PartialMatchInfo, PatternErrors,
    RecordError, Replace,
};
use cep_runtime::Clock;
use rayon::prelude::*;

use crate::spec::PipelineSpec;
use crate::window::{bounded_watermark, PipelineEngine};

/// The most workers a pipeline takes.
pub const MAX_WORKERS: usize = 64;

/// The most elements a worker's batch buffers keep between batches.
const KEEP_CAPACITY: usize = 1 << 16;

/// Batches smaller than this are taken on the calling thread, worker by worker: starting
/// threads would cost more than it saves.
const PARALLEL_FROM: usize = 256;

/// A pipeline's engine: one [`PipelineEngine`], or several over worker threads by key.
pub enum Engine {
    /// One engine, on the calling thread.
    One(Box<PipelineEngine>),
    /// Keys spread over worker engines.
    Sharded(Sharded),
}

/// Worker engines, each with the keys whose hash falls to it.
pub struct Sharded {
    workers: Vec<PipelineEngine>,
    /// The threads the workers run on, kept for the engine's life (a request does not start
    /// threads).
    pool: rayon::ThreadPool,
    /// The pipeline's out-of-orderness (the workers' own watermarks are switched off).
    out_of_orderness: i64,
    /// The highest event time taken.
    max_ts: i64,
    /// The pipeline's watermark.
    watermark: i64,
    /// Per worker, its events of the batch and its outputs: kept between batches with their
    /// capacity, so that a batch moves its outputs once instead of through growing vectors.
    work: Vec<Vec<(ParsedEvent, i64)>>,
    outs: Vec<Vec<Output>>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("workers", &self.workers())
            .field("watermark", &self.watermark())
            .finish()
    }
}

/// The worker of `key` among `n`.
fn worker_of(key: &str, n: usize) -> usize {
    let mut h = rustc_hash::FxHasher::default();
    key.hash(&mut h);
    (h.finish() % n as u64) as usize
}

impl Engine {
    /// The engine of `spec` (with `spec.workers` workers) over `patterns`.
    pub fn new(
        spec: &PipelineSpec,
        patterns: Vec<Arc<CompiledPattern>>,
        clock: Arc<dyn Clock>,
    ) -> Result<Engine, PatternErrors> {
        if spec.workers <= 1 {
            return Ok(Engine::One(Box::new(PipelineEngine::with_clock(
                spec, patterns, clock,
            )?)));
        }
        // The pipeline moves the workers' watermarks.
        let workers = (0..spec.workers.min(MAX_WORKERS))
            .map(|_| PipelineEngine::driven(spec, patterns.clone(), clock.clone()))
            .collect::<Result<Vec<_>, PatternErrors>>()?;
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(workers.len())
            .thread_name(|i| format!("cep-worker-{i}"))
            .build()
            .map_err(|e| {
                PatternErrors(vec![cep_patterns::PatternError {
                    path: "workers".into(),
                    column: None,
                    message: format!("cannot start the worker threads: {e}"),
                }])
            })?;
        Ok(Engine::Sharded(Sharded {
            pool,
            workers,
            out_of_orderness: spec.watermark.out_of_orderness.0,
            max_ts: i64::MIN,
            watermark: i64::MIN,
            work: Vec::new(),
            outs: Vec::new(),
        }))
    }

    /// How many workers.
    pub fn workers(&self) -> usize {
        match self {
            Engine::One(_) => 1,
            Engine::Sharded(s) => s.workers.len(),
        }
    }

    /// Takes events given as JSON text, in order (see [`PipelineEngine::push_str`]); one result
    /// per event.
    pub fn push_batch(
        &mut self,
        texts: &[&str],
        out: &mut Vec<Output>,
    ) -> Vec<Result<(), RecordError>> {
        match self {
            Engine::One(e) => texts.iter().map(|t| e.push_str(t, out)).collect(),
            Engine::Sharded(s) => s.push_batch(texts, out),
        }
    }

    /// Takes one event given as JSON text.
    pub fn push_str(&mut self, text: &str, out: &mut Vec<Output>) -> Result<(), RecordError> {
        match self {
            Engine::One(e) => e.push_str(text, out),
            Engine::Sharded(s) => s.push_batch(&[text], out).pop().unwrap_or(Ok(())),
        }
    }

    /// Moves the watermark (see [`PipelineEngine::advance_watermark`]).
    pub fn advance_watermark(&mut self, watermark: i64, out: &mut Vec<Output>) {
        match self {
            Engine::One(e) => e.advance_watermark(watermark, out),
            Engine::Sharded(s) => {
                if watermark > s.watermark {
                    s.watermark = watermark;
                    s.fan_out(out);
                }
            }
        }
    }

    /// In processing time, moves the watermark to the clock (one worker only: processing time
    /// is not spread over workers).
    pub fn on_clock(&mut self, out: &mut Vec<Output>) {
        if let Engine::One(e) = self {
            e.on_clock(out);
        }
    }

    /// The pipeline's watermark.
    pub fn watermark(&self) -> i64 {
        match self {
            Engine::One(e) => e.watermark(),
            Engine::Sharded(s) => s.watermark,
        }
    }

    /// The highest event time taken (a checkpoint keeps it).
    pub fn max_timestamp(&self) -> i64 {
        match self {
            Engine::One(e) => e.max_timestamp(),
            Engine::Sharded(s) => s.max_ts,
        }
    }

    /// Restores the event-time clock of a checkpoint after its keys.
    pub fn restore_time(&mut self, max_timestamp: i64, watermark: i64, out: &mut Vec<Output>) {
        match self {
            Engine::One(e) => e.restore_time(max_timestamp, watermark, out),
            Engine::Sharded(s) => {
                s.max_ts = s.max_ts.max(max_timestamp);
                for w in &mut s.workers {
                    w.restore_time(i64::MIN, watermark, out);
                }
                s.watermark = s.watermark.max(watermark);
            }
        }
    }

    fn each(&mut self, mut f: impl FnMut(&mut PipelineEngine)) {
        match self {
            Engine::One(e) => f(e),
            Engine::Sharded(s) => s.workers.iter_mut().for_each(f),
        }
    }

    /// A worker, for what they all share (their settings).
    fn first(&self) -> &PipelineEngine {
        match self {
            Engine::One(e) => e,
            Engine::Sharded(s) => &s.workers[0],
        }
    }

    fn owner(&self, key: &str) -> &PipelineEngine {
        match self {
            Engine::One(e) => e,
            Engine::Sharded(s) => &s.workers[worker_of(key, s.workers.len())],
        }
    }

    fn owner_mut(&mut self, key: &str) -> &mut PipelineEngine {
        match self {
            Engine::One(e) => e,
            Engine::Sharded(s) => {
                let n = s.workers.len();
                &mut s.workers[worker_of(key, n)]
            }
        }
    }

    /// Replaces the patterns (see [`PipelineEngine::set_patterns_mode`]) in every worker.
    pub fn set_patterns_mode(
        &mut self,
        patterns: Vec<Arc<CompiledPattern>>,
        mode: Replace,
    ) -> Result<(), PatternErrors> {
        match self {
            Engine::One(e) => e.set_patterns_mode(patterns, mode),
            Engine::Sharded(s) => {
                // The workers have the same patterns: if one refuses them, the first does,
                // before any has changed.
                for w in &mut s.workers {
                    w.set_patterns_mode(patterns.clone(), mode)?;
                }
                Ok(())
            }
        }
    }

    /// Drops the draining versions that hold nothing (per worker); true if one went.
    pub fn retire_drained(&mut self) -> bool {
        let mut any = false;
        self.each(|e| any |= e.retire_drained());
        any
    }

    /// Whether some pattern version is draining in some worker.
    pub fn is_draining(&self) -> bool {
        match self {
            Engine::One(e) => e.is_draining(),
            Engine::Sharded(s) => s.workers.iter().any(PipelineEngine::is_draining),
        }
    }

    /// The pattern versions (of the first worker; see [`worker_slots`](Self::worker_slots)).
    pub fn slots(&self) -> Vec<(Arc<CompiledPattern>, bool)> {
        self.first().slots()
    }

    /// The pattern versions of each worker.
    pub fn worker_slots(&self) -> Vec<Vec<(Arc<CompiledPattern>, bool)>> {
        match self {
            Engine::One(e) => vec![e.slots()],
            Engine::Sharded(s) => s.workers.iter().map(PipelineEngine::slots).collect(),
        }
    }

    /// Sets the pattern versions of a fresh engine before its keys are restored: `slots` for
    /// every worker, or one list per worker.
    pub fn restore_slots(
        &mut self,
        mut slots: Vec<Vec<(Arc<CompiledPattern>, bool)>>,
    ) -> Result<(), PatternErrors> {
        let n = self.workers();
        if slots.len() != n {
            let first = slots.into_iter().next().unwrap_or_default();
            slots = vec![first; n];
        }
        match self {
            Engine::One(e) => e.restore_slots(slots.pop().unwrap_or_default()),
            Engine::Sharded(s) => {
                for (w, slots) in s.workers.iter_mut().zip(slots) {
                    w.restore_slots(slots)?;
                }
                Ok(())
            }
        }
    }

    /// The event-time guard, on every worker.
    pub fn set_max_future(&mut self, limit: Option<i64>) {
        self.each(|e| e.set_max_future(limit));
    }

    /// The event-time guard.
    pub fn max_future(&self) -> Option<i64> {
        self.first().max_future()
    }

    /// Whether replaying the same inputs gives the same state and outputs.
    pub fn is_replayable(&self) -> bool {
        self.first().is_replayable()
    }

    /// Starts recording which keys change.
    pub fn track_changes(&mut self, on: bool) {
        self.each(|e| e.track_changes(on));
    }

    /// The keys whose state may have changed since the last call, in every worker.
    pub fn take_changed(&mut self) -> Vec<String> {
        let mut all = Vec::new();
        self.each(|e| all.extend(e.take_changed()));
        all
    }

    /// The state of `key` (in its worker).
    pub fn snapshot_key(&self, key: &str) -> Result<Option<Vec<u8>>, RecordError> {
        self.owner(key).snapshot_key(key)
    }

    /// Replaces `key`'s state (in its worker).
    pub fn restore_key(&mut self, key: &str, snapshot: &[u8]) -> Result<(), RecordError> {
        self.owner_mut(key).restore_key(key, snapshot)
    }

    /// What `key` holds.
    pub fn key_view(&self, key: &str) -> KeyView {
        self.owner(key).key_view(key)
    }

    /// The partial matches held for `key`.
    pub fn partial_matches(&self, key: &str) -> Vec<PartialMatchInfo> {
        self.owner(key).partial_matches(key)
    }

    /// The statistics of every worker together.
    pub fn stats(&self) -> EngineStats {
        match self {
            Engine::One(e) => e.stats(),
            Engine::Sharded(s) => {
                let mut all = s.workers[0].stats();
                for w in &s.workers[1..] {
                    let st = w.stats();
                    all.events += st.events;
                    all.late += st.late;
                    all.keys += st.keys;
                    all.partial_matches += st.partial_matches;
                    all.buffered_events += st.buffered_events;
                    all.dropped_partial_matches += st.dropped_partial_matches;
                    all.evicted_keys += st.evicted_keys;
                    all.expired_keys += st.expired_keys;
                    for p in st.patterns {
                        match all
                            .patterns
                            .iter_mut()
                            .find(|a| a.pattern == p.pattern && a.version == p.version)
                        {
                            Some(a) => {
                                a.matches += p.matches;
                                a.timeouts += p.timeouts;
                                a.draining &= p.draining;
                            }
                            None => all.patterns.push(p),
                        }
                    }
                }
                all
            }
        }
    }
}

impl Sharded {
    fn push_batch(
        &mut self,
        texts: &[&str],
        out: &mut Vec<Output>,
    ) -> Vec<Result<(), RecordError>> {
        let n = self.workers.len();
        let mut results = Vec::with_capacity(texts.len());
        // Per worker: its events, each with the pipeline's watermark before it.
        let mut work = std::mem::take(&mut self.work);
        work.resize_with(n, Vec::new);
        let read_one = |w: &PipelineEngine, text: &str| {
            w.parse_str(text)
                .and_then(|p| w.check_time(p.ts).map(|()| p))
        };
        // Reading is spread over the workers too (each reads a slice of the batch; the workers'
        // patterns, and so what they read, are the same).
        let read: Vec<Result<ParsedEvent, RecordError>> = if texts.len() >= PARALLEL_FROM {
            let per = texts.len().div_ceil(n);
            let workers = &mut self.workers;
            let chunks: Vec<Vec<_>> = self.pool.install(|| {
                workers
                    .par_iter_mut()
                    .zip(texts.par_chunks(per))
                    .map(|(w, chunk)| chunk.iter().map(|t| read_one(&*w, t)).collect())
                    .collect()
            });
            chunks.into_iter().flatten().collect()
        } else {
            texts
                .iter()
                .map(|t| read_one(&self.workers[0], t))
                .collect()
        };
        for read in read {
            match read {
                Ok(parsed) => {
                    let before = self.watermark;
                    self.max_ts = self.max_ts.max(parsed.ts);
                    let wm = bounded_watermark(self.max_ts, self.out_of_orderness);
                    self.watermark = self.watermark.max(wm);
                    work[worker_of(parsed.key(), n)].push((parsed, before));
                    results.push(Ok(()));
                }
                Err(e) => results.push(Err(e)),
            }
        }
        self.work = work;
        self.fan_out(out);
        results
    }

    /// Hands each worker its events (`self.work`) and then the pipeline's watermark, on the
    /// pool when there is enough to do; their outputs go to `out` in time order.
    fn fan_out(&mut self, out: &mut Vec<Output>) {
        let watermark = self.watermark;
        let n = self.workers.len();
        let mut work = std::mem::take(&mut self.work);
        work.resize_with(n, Vec::new);
        let total: usize = work.iter().map(Vec::len).sum();
        let mut outs = std::mem::take(&mut self.outs);
        outs.resize_with(n, Vec::new);
        let run = |w: &mut PipelineEngine,
                   items: &mut Vec<(ParsedEvent, i64)>,
                   outs: &mut Vec<Output>| {
            for (parsed, before) in items.drain(..) {
                if before > w.watermark() {
                    w.advance_watermark(before, outs);
                }
                // Key and time were read and checked: a worker takes what was read.
                if let Err(e) = w.push_parsed(parsed, outs) {
                    tracing::error!("a worker refused an event it was given: {}", e.message);
                }
            }
            if watermark > w.watermark() {
                w.advance_watermark(watermark, outs);
            }
        };
        if total >= PARALLEL_FROM {
            let workers = &mut self.workers;
            self.pool.install(|| {
                workers
                    .par_iter_mut()
                    .zip(work.par_iter_mut())
                    .zip(outs.par_iter_mut())
                    .for_each(|((w, items), o)| run(w, items, o));
            });
        } else {
            for ((w, items), o) in self.workers.iter_mut().zip(&mut work).zip(&mut outs) {
                run(w, items, o);
            }
        }
        let start = out.len();
        out.reserve(outs.iter().map(Vec::len).sum());
        for o in &mut outs {
            out.append(o);
        }
        out[start..].sort_by_key(|o| o.timestamp);
        // What a huge batch (the end of the input) grew is not kept.
        for o in &mut outs {
            o.shrink_to(KEEP_CAPACITY);
        }
        for w in &mut work {
            w.shrink_to(KEEP_CAPACITY);
        }
        self.work = work;
        self.outs = outs;
    }
}
