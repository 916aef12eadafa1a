//! Keyed operators on several worker threads.
//!
//! The calling thread routes each record to worker `hash(key) % n` over a bounded channel (so a slow
//! worker applies backpressure), in batches; watermarks and the end of input are broadcast to every
//! worker, in order with the records. Each worker owns one operator instance with its own state
//! backend and timers, so the records of one key are processed by one worker in arrival order.
//! Workers send their output back over an unbounded channel (so they never block on the router);
//! the router forwards records as they come and forwards the minimum of the workers' watermarks
//! ([`WatermarkHolder`]).

use std::hash::{Hash, Hasher};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rustc_hash::FxHasher;

use crate::dataflow::{Dataflow, OperatorFactory, Push, RunContext};
use crate::error::{Error, Result};
use crate::operator::{Output, SideOutputs};
use crate::time::{Timestamp, Watermark, WatermarkHolder, MAX_WATERMARK, MIN_WATERMARK};

enum ToWorker<K, I> {
    Record(Timestamp, K, I),
    Watermark(Watermark),
    /// Processing time moved on: fire due processing-time timers.
    Tick,
    End,
}

enum FromWorker<O> {
    Batch(usize, Vec<WorkerOut<O>>),
    Done(SideOutputs),
    Failed(Error),
}

enum WorkerOut<O> {
    Record(Timestamp, O),
    Watermark(Watermark),
}

/// How long a partly filled batch may wait before it is sent anyway (bounds latency on slow,
/// unbounded sources such as stdin).
const MAX_BATCH_DELAY: Duration = Duration::from_millis(20);

/// The worker a key goes to.
pub fn partition_for<K: Hash + ?Sized>(key: &K, partitions: usize) -> usize {
    let mut h = FxHasher::default();
    key.hash(&mut h);
    (h.finish() % partitions as u64) as usize
}

/// Routes records to worker threads by key; see the module docs.
pub(crate) struct ParallelNode<K, I, O> {
    key: Arc<dyn Fn(&I) -> K + Send + Sync>,
    senders: Vec<SyncSender<Vec<ToWorker<K, I>>>>,
    buffers: Vec<Vec<ToWorker<K, I>>>,
    results: Receiver<FromWorker<O>>,
    handles: Vec<JoinHandle<()>>,
    holder: WatermarkHolder,
    down: Box<dyn Push<O>>,
    batch_size: usize,
    calls: usize,
    last_flush: Instant,
    done: usize,
}

impl<K, I, O> ParallelNode<K, I, O>
where
    K: Hash + Send + 'static,
    I: Send + 'static,
    O: Send + 'static,
{
    pub(crate) fn new(
        env: &Dataflow,
        key: Arc<dyn Fn(&I) -> K + Send + Sync>,
        factory: OperatorFactory<K, I, O>,
        down: Box<dyn Push<O>>,
    ) -> Self {
        let n = env.parallelism;
        let (result_tx, results) = mpsc::channel();
        let mut senders = Vec::with_capacity(n);
        let mut handles = Vec::with_capacity(n);
        for worker in 0..n {
            let (tx, rx) = mpsc::sync_channel(4);
            senders.push(tx);
            let env = env.clone();
            let factory = factory.clone();
            let result_tx = result_tx.clone();
            handles.push(std::thread::spawn(move || {
                if let Err(e) = run_worker(worker, &env, &factory, rx, &result_tx) {
                    result_tx.send(FromWorker::Failed(e)).ok();
                }
            }));
        }
        ParallelNode {
            key,
            senders,
            buffers: (0..n).map(|_| Vec::new()).collect(),
            results,
            handles,
            holder: WatermarkHolder::new(n),
            down,
            batch_size: env.batch_size,
            calls: 0,
            last_flush: Instant::now(),
            done: 0,
        }
    }

    fn send(&mut self, worker: usize) -> Result<()> {
        if self.buffers[worker].is_empty() {
            return Ok(());
        }
        let batch = std::mem::replace(
            &mut self.buffers[worker],
            Vec::with_capacity(self.batch_size),
        );
        if self.senders[worker].send(batch).is_err() {
            // The worker is gone; its reason (if any) is waiting in the results channel.
            while let Ok(m) = self.results.try_recv() {
                if let FromWorker::Failed(e) = m {
                    return Err(e);
                }
            }
            return Err(Error::Worker {
                worker,
                message: "worker hung up".into(),
            });
        }
        Ok(())
    }

    fn flush_all(&mut self) -> Result<()> {
        for w in 0..self.buffers.len() {
            self.send(w)?;
        }
        self.last_flush = Instant::now();
        Ok(())
    }

    fn handle(&mut self, m: FromWorker<O>, cx: &mut RunContext) -> Result<()> {
        match m {
            FromWorker::Batch(worker, outs) => {
                for o in outs {
                    match o {
                        WorkerOut::Record(ts, v) => self.down.push(ts, v, cx)?,
                        WorkerOut::Watermark(w) => {
                            if let Some(c) = self.holder.set(worker, w) {
                                self.down.watermark(c, cx)?;
                            }
                        }
                    }
                }
            }
            FromWorker::Done(side) => {
                cx.side_outputs.merge(side);
                self.done += 1;
            }
            FromWorker::Failed(e) => return Err(e),
        }
        Ok(())
    }

    fn drain_results(&mut self, cx: &mut RunContext) -> Result<()> {
        while let Ok(m) = self.results.try_recv() {
            self.handle(m, cx)?;
        }
        Ok(())
    }

    fn maybe_flush(&mut self, cx: &mut RunContext) -> Result<()> {
        self.calls += 1;
        if self.calls >= 64 {
            self.calls = 0;
            if self.last_flush.elapsed() < MAX_BATCH_DELAY {
                return Ok(());
            }
            self.flush_all()?;
            self.drain_results(cx)?;
        }
        Ok(())
    }
}

impl<K, I, O> Push<I> for ParallelNode<K, I, O>
where
    K: Hash + Send + 'static,
    I: Send + 'static,
    O: Send + 'static,
{
    fn push(&mut self, ts: Timestamp, value: I, cx: &mut RunContext) -> Result<()> {
        let k = (self.key)(&value);
        let w = partition_for(&k, self.buffers.len());
        self.buffers[w].push(ToWorker::Record(ts, k, value));
        if self.buffers[w].len() >= self.batch_size {
            self.send(w)?;
            self.drain_results(cx)?;
        }
        self.maybe_flush(cx)
    }

    fn watermark(&mut self, wm: Watermark, cx: &mut RunContext) -> Result<()> {
        for w in 0..self.buffers.len() {
            let buf = &mut self.buffers[w];
            // Consecutive watermarks collapse into the last one.
            if let (Some(ToWorker::Watermark(Watermark::EventTime(_))), Watermark::EventTime(_)) =
                (buf.last(), wm)
            {
                buf.pop();
            }
            buf.push(ToWorker::Watermark(wm));
            if buf.len() >= self.batch_size {
                self.send(w)?;
            }
        }
        self.drain_results(cx)?;
        self.maybe_flush(cx)
    }

    fn tick(&mut self, cx: &mut RunContext) -> Result<()> {
        for buf in &mut self.buffers {
            buf.push(ToWorker::Tick);
        }
        self.flush_all()?;
        self.drain_results(cx)?;
        self.down.tick(cx)
    }

    fn finish(&mut self, cx: &mut RunContext) -> Result<()> {
        for buf in &mut self.buffers {
            buf.push(ToWorker::End);
        }
        self.flush_all()?;
        self.senders.clear();
        let workers = self.handles.len();
        while self.done < workers {
            match self.results.recv() {
                Ok(m) => self.handle(m, cx)?,
                Err(_) => break,
            }
        }
        for (worker, h) in self.handles.drain(..).enumerate() {
            if h.join().is_err() {
                return Err(Error::Worker {
                    worker,
                    message: "worker panicked".into(),
                });
            }
        }
        if self.done < workers {
            return Err(Error::Worker {
                worker: self.done,
                message: "worker stopped before the end of input".into(),
            });
        }
        self.down.finish(cx)
    }
}

fn run_worker<K, I, O>(
    worker: usize,
    env: &Dataflow,
    factory: &OperatorFactory<K, I, O>,
    rx: Receiver<Vec<ToWorker<K, I>>>,
    tx: &Sender<FromWorker<O>>,
) -> Result<()> {
    let mut op = factory(env);
    let mut side = SideOutputs::new();
    let mut records = Vec::new();
    let mut watermark = MIN_WATERMARK;
    for batch in rx {
        let mut outs = Vec::new();
        let mut end = false;
        for msg in batch {
            let mut out = Output {
                records: &mut records,
                side: &mut side,
            };
            match msg {
                ToWorker::Record(ts, k, v) => op.process_element(ts, (k, v), &mut out)?,
                ToWorker::Watermark(Watermark::EventTime(t)) => {
                    if t > watermark {
                        watermark = t;
                        op.process_watermark(t, &mut out)?;
                    }
                    outs.extend(records.drain(..).map(|(ts, v)| WorkerOut::Record(ts, v)));
                    outs.push(WorkerOut::Watermark(Watermark::EventTime(t)));
                }
                ToWorker::Watermark(Watermark::Idle) => {
                    outs.push(WorkerOut::Watermark(Watermark::Idle))
                }
                // Due processing-time timers fire after every batch, below.
                ToWorker::Tick => {}
                ToWorker::End => {
                    if watermark < MAX_WATERMARK {
                        watermark = MAX_WATERMARK;
                        op.process_watermark(MAX_WATERMARK, &mut out)?;
                    }
                    op.end_of_input(&mut out)?;
                    outs.extend(records.drain(..).map(|(ts, v)| WorkerOut::Record(ts, v)));
                    outs.push(WorkerOut::Watermark(Watermark::EventTime(MAX_WATERMARK)));
                    end = true;
                }
            }
            outs.extend(records.drain(..).map(|(ts, v)| WorkerOut::Record(ts, v)));
        }
        if !end {
            if let Some(next) = op.next_processing_time() {
                let now = env.clock.now();
                if next <= now {
                    let mut out = Output {
                        records: &mut records,
                        side: &mut side,
                    };
                    op.process_processing_time(now, &mut out)?;
                    outs.extend(records.drain(..).map(|(ts, v)| WorkerOut::Record(ts, v)));
                }
            }
        }
        if !outs.is_empty() && tx.send(FromWorker::Batch(worker, outs)).is_err() {
            return Ok(());
        }
        if end {
            tx.send(FromWorker::Done(std::mem::take(&mut side))).ok();
            return Ok(());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitioning_is_stable_and_spreads_keys() {
        let mut counts = [0usize; 4];
        for k in 0..10_000u64 {
            let p = partition_for(&k, 4);
            assert_eq!(p, partition_for(&k, 4));
            counts[p] += 1;
        }
        for c in counts {
            assert!(c > 1_500, "{counts:?}");
        }
    }
}
