//! Process functions, watermark combination, idleness, parallelism and timers at scale, end to end.

use std::collections::BTreeMap;
use std::sync::Arc;

use cep_runtime::window::TimeWindow;
use cep_runtime::{
    Context, Dataflow, KeyedProcessFunction, KeyedProcessOperator, ManualClock, MemoryBackend,
    Operator, Output, OutputTag, Result, SessionWindows, SideOutputs, Timestamp, TumblingWindows,
    ValueState, WatermarkStrategy, MIN_WATERMARK,
};

/// Emits (timestamp, watermark at arrival) for every event.
#[derive(Clone)]
struct SeeWatermark;

impl KeyedProcessFunction<u8, (char, i64), (char, i64, i64)> for SeeWatermark {
    fn process_element(
        &mut self,
        e: (char, i64),
        ctx: &mut Context<'_, u8, (char, i64, i64)>,
    ) -> Result<()> {
        let wm = ctx.current_watermark();
        ctx.collect((e.0, e.1, wm));
        Ok(())
    }
}

fn partitioned_run(idleness: bool) -> Vec<(char, i64, i64)> {
    let clock = ManualClock::new(0);
    let b_clock = clock.clone();
    let a: Vec<Option<(char, i64)>> = (1..=5).map(|i| Some(('a', i * 1_000))).collect();
    // Partition b has one event, then nothing for a while; every poll of b takes 50 ms.
    let b = vec![Some(('b', 500)), None, None, None]
        .into_iter()
        .inspect(move |_| b_clock.advance(50));
    let mut strategy = WatermarkStrategy::for_monotonous_timestamps()
        .with_timestamp_assigner(|e: &(char, i64)| e.1);
    if idleness {
        strategy = strategy.with_idleness_clock(100, Arc::new(clock.clone()));
    }
    let a: Box<dyn Iterator<Item = Option<(char, i64)>> + Send> = Box::new(a.into_iter());
    let b: Box<dyn Iterator<Item = Option<(char, i64)>> + Send> = Box::new(b);
    Dataflow::new()
        .with_parallelism(1)
        .with_clock(Arc::new(clock))
        .from_partitions(vec![a, b], strategy)
        .key_by(|_: &(char, i64)| 0u8)
        .process(SeeWatermark)
        .collect()
        .unwrap()
        .records
}

#[test]
fn source_watermark_is_the_min_over_partitions_and_idle_partitions_are_ignored() {
    // Polls alternate a, b. Without idleness, b's watermark (499) holds everything back.
    assert_eq!(
        partitioned_run(false),
        vec![
            ('a', 1_000, MIN_WATERMARK), // b has not reported yet
            ('b', 500, MIN_WATERMARK),
            ('a', 2_000, 499),
            ('a', 3_000, 499),
            ('a', 4_000, 499),
            ('a', 5_000, 499),
        ]
    );
    // With 100 ms idleness, b goes idle on its third poll (100 ms without events) and the watermark
    // follows a alone.
    assert_eq!(
        partitioned_run(true),
        vec![
            ('a', 1_000, MIN_WATERMARK),
            ('b', 500, MIN_WATERMARK),
            ('a', 2_000, 499),
            ('a', 3_000, 499),
            ('a', 4_000, 2_999),
            ('a', 5_000, 3_999),
        ]
    );
}

/// Flags events behind the watermark as late (side output), counts the others per key and emits the
/// count from an event-time timer at the end of each 10-second period.
#[derive(Clone)]
struct PeriodCount {
    count: ValueState<u64>,
    late: OutputTag<(u32, Timestamp)>,
}

impl KeyedProcessFunction<u32, (u32, Timestamp), (u32, Timestamp, u64)> for PeriodCount {
    fn process_element(
        &mut self,
        e: (u32, Timestamp),
        ctx: &mut Context<'_, u32, (u32, Timestamp, u64)>,
    ) -> Result<()> {
        if e.1 <= ctx.current_watermark() {
            ctx.output(&self.late, e);
            return Ok(());
        }
        let n = self.count.get(ctx.state())?.unwrap_or(0);
        self.count.update(ctx.state(), &(n + 1))?;
        ctx.register_event_time_timer(e.1 - e.1.rem_euclid(10_000) + 9_999);
        Ok(())
    }

    fn on_timer(
        &mut self,
        ts: Timestamp,
        ctx: &mut Context<'_, u32, (u32, Timestamp, u64)>,
    ) -> Result<()> {
        let n = self.count.get(ctx.state())?.unwrap_or(0);
        self.count.clear(ctx.state())?;
        let k = *ctx.key();
        ctx.collect((k, ts, n));
        Ok(())
    }
}

/// A deterministic pseudo-random stream: 64 keys, timestamps jittered up to 3 s out of order.
fn generated(n: u64) -> Vec<(u32, Timestamp)> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..n)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let key = (x % 64) as u32;
            let jitter = ((x >> 8) % 3_000) as i64;
            (key, (i as i64) * 10 - jitter)
        })
        .collect()
}

fn by_key<T: Clone, K: Ord>(records: &[T], key: impl Fn(&T) -> K) -> BTreeMap<K, Vec<T>> {
    let mut m: BTreeMap<K, Vec<T>> = BTreeMap::new();
    for r in records {
        m.entry(key(r)).or_default().push(r.clone());
    }
    m
}

type Run = (
    Vec<(u32, Timestamp, u64)>,
    Vec<(u32, Timestamp)>,
    Vec<(u32, i64, u64)>,
    Vec<(u32, i64, i64, usize)>,
);

fn run_all(parallelism: usize, events: &[(u32, Timestamp)]) -> Run {
    run_on(parallelism, events, None)
}

/// Like `run_all`, with every keyed operator's state in its own RocksDB under `rocksdb` if given.
fn run_on(
    parallelism: usize,
    events: &[(u32, Timestamp)],
    rocksdb: Option<&std::path::Path>,
) -> Run {
    let mut env = Dataflow::new()
        .with_parallelism(parallelism)
        .with_batch_size(64);
    if let Some(dir) = rocksdb {
        let dir = dir.to_path_buf();
        let next = std::sync::atomic::AtomicUsize::new(0);
        env = env.with_state_backend(move || {
            let n = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Box::new(cep_runtime::RocksDbBackend::open(&dir.join(format!("op-{n}"))).unwrap())
        });
    }
    let strategy = || {
        WatermarkStrategy::for_bounded_out_of_orderness(1_000)
            .with_timestamp_assigner(|e: &(u32, Timestamp)| e.1)
    };
    let late = OutputTag::new("late");
    let mut process = env
        .from_iter(events.to_vec())
        .assign_timestamps_and_watermarks(strategy())
        .key_by(|e: &(u32, Timestamp)| e.0)
        .process(PeriodCount {
            count: ValueState::new("count"),
            late: late.clone(),
        })
        .collect()
        .unwrap();
    let tumbling = env
        .from_iter(events.to_vec())
        .assign_timestamps_and_watermarks(strategy())
        .key_by(|e: &(u32, Timestamp)| e.0)
        .window(TumblingWindows::event_time(5_000).unwrap())
        .allowed_lateness(500)
        .aggregate_with(Count, |k: &u32, w: &TimeWindow, n| (*k, w.start, n))
        .collect()
        .unwrap();
    let sessions = env
        .from_iter(events.to_vec())
        .assign_timestamps_and_watermarks(strategy())
        .key_by(|e: &(u32, Timestamp)| e.0)
        .window(SessionWindows::event_time(700).unwrap())
        .process(
            |k: &u32,
             w: &TimeWindow,
             els: Vec<(u32, Timestamp)>,
             out: &mut Vec<(u32, i64, i64, usize)>| {
                out.push((*k, w.start, w.end, els.len()))
            },
        )
        .collect()
        .unwrap();
    let late = process.side_output(&late);
    (process.records, late, tumbling.records, sessions.records)
}

struct Count;
impl cep_runtime::AggregateFunction for Count {
    type In = (u32, Timestamp);
    type Acc = u64;
    type Out = u64;
    fn create_accumulator(&self) -> u64 {
        0
    }
    fn add(&self, _: (u32, Timestamp), acc: &mut u64) {
        *acc += 1;
    }
    fn get_result(&self, acc: &u64) -> u64 {
        *acc
    }
    fn merge(&self, a: u64, b: u64) -> u64 {
        a + b
    }
}

#[test]
fn parallel_run_gives_the_same_per_key_results_as_single_threaded() {
    let events = generated(20_000);
    let (p1, late1, t1, s1) = run_all(1, &events);
    let (p4, late4, t4, s4) = run_all(4, &events);
    // The test data has late events, several windows per key and several sessions per key.
    assert!(!late1.is_empty());
    assert!(p1.len() > 64 && t1.len() > 64 && s1.len() > 64);
    // All events are accounted for: counted by the process function or late.
    assert_eq!(
        p1.iter().map(|r| r.2).sum::<u64>() + late1.len() as u64,
        20_000
    );
    assert_eq!(by_key(&p1, |r| r.0), by_key(&p4, |r| r.0));
    assert_eq!(by_key(&late1, |r| r.0), by_key(&late4, |r| r.0));
    assert_eq!(by_key(&t1, |r| r.0), by_key(&t4, |r| r.0));
    assert_eq!(by_key(&s1, |r| r.0), by_key(&s4, |r| r.0));
    // Single-threaded output is in timer order: non-decreasing timestamps.
    assert!(p1.windows(2).all(|w| w[0].1 <= w[1].1));
}

#[test]
fn rocksdb_state_gives_the_same_results_as_memory() {
    let events = generated(5_000);
    let dir = tempfile::tempdir().unwrap();
    let (p1, late1, t1, s1) = run_all(1, &events);
    let (pr, later, tr, sr) = run_on(2, &events, Some(dir.path()));
    assert!(!t1.is_empty() && !s1.is_empty());
    assert_eq!(by_key(&p1, |r| r.0), by_key(&pr, |r| r.0));
    assert_eq!(by_key(&late1, |r| r.0), by_key(&later, |r| r.0));
    assert_eq!(by_key(&t1, |r| r.0), by_key(&tr, |r| r.0));
    assert_eq!(by_key(&s1, |r| r.0), by_key(&sr, |r| r.0));
    // The state did go to RocksDB: one database per keyed operator and worker.
    assert!(std::fs::read_dir(dir.path()).unwrap().count() >= 2);
}

/// Registers one event-time timer per key (plus a duplicate that coalesces) and emits the key when
/// it fires.
#[derive(Clone)]
struct TimerPerKey;

impl KeyedProcessFunction<u64, Timestamp, u64> for TimerPerKey {
    fn process_element(&mut self, ts: Timestamp, ctx: &mut Context<'_, u64, u64>) -> Result<()> {
        ctx.register_event_time_timer(ts);
        ctx.register_event_time_timer(ts);
        Ok(())
    }
    fn on_timer(&mut self, ts: Timestamp, ctx: &mut Context<'_, u64, u64>) -> Result<()> {
        assert_eq!(ctx.timestamp(), ts);
        let k = *ctx.key();
        ctx.collect(k);
        Ok(())
    }
}

#[test]
fn timers_on_a_million_keys_fire_in_timestamp_order() {
    const N: u64 = 1_000_000;
    let mut op = KeyedProcessOperator::new(
        TimerPerKey,
        Box::new(MemoryBackend::new()),
        Arc::new(ManualClock::new(0)),
    );
    let mut records = Vec::new();
    let mut side = SideOutputs::new();
    let mut out = Output {
        records: &mut records,
        side: &mut side,
    };
    // Timestamps are a permutation of the keys, so registration order differs from firing order.
    for k in 0..N {
        let ts = ((k * 7_919) % N) as Timestamp;
        op.process_element(ts, (k, ts), &mut out).unwrap();
    }
    assert_eq!(op.timers().num_event_timers(), N as usize);
    op.process_watermark((N / 2) as Timestamp - 1, &mut out)
        .unwrap();
    assert_eq!(out.records.len() as u64, N / 2);
    op.process_watermark(i64::MAX, &mut out).unwrap();
    assert_eq!(out.records.len() as u64, N);
    for (i, (ts, k)) in out.records.iter().enumerate() {
        assert_eq!(*ts, i as Timestamp);
        assert_eq!((k * 7_919) % N, i as u64);
    }
    assert_eq!(op.timers().num_event_timers(), 0);
}

/// A live source: the job runs on its own thread, fed through a channel. Processing-time windows
/// close on ticks while no events arrive, before the input ends.
#[test]
fn live_channel_source_fires_processing_time_windows_on_ticks() {
    // Single-threaded, so that "the job has mapped the marker" implies "the window operator has
    // assigned every earlier event" (at processing time 0).
    {
        let parallelism = 1;
        let clock = ManualClock::new(0);
        let (tx, rx) = std::sync::mpsc::channel::<(String, i64)>();
        let sink = cep_runtime::VecSink::new();
        let seen_by_job = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let job = {
            let env = Dataflow::new()
                .with_parallelism(parallelism)
                .with_clock(Arc::new(clock.clone()));
            let sink = sink.clone();
            let seen_by_job = seen_by_job.clone();
            std::thread::spawn(move || {
                env.from_receiver(rx, std::time::Duration::from_millis(2))
                    .map(move |e| {
                        seen_by_job.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        e
                    })
                    .filter(|e: &(String, i64)| e.0 != "marker")
                    .key_by(|e: &(String, i64)| e.0.clone())
                    .window(TumblingWindows::processing_time(100).unwrap())
                    .reduce(|a, b| (a.0, a.1 + b.1))
                    .sink(sink)
            })
        };
        tx.send(("a".into(), 1)).unwrap();
        tx.send(("a".into(), 2)).unwrap();
        tx.send(("b".into(), 5)).unwrap();
        tx.send(("marker".into(), 0)).unwrap();
        // The events must be assigned to windows at processing time 0 before the clock moves.
        while seen_by_job.load(std::sync::atomic::Ordering::SeqCst) < 4 {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        clock.set(150);
        // Wait (boundedly) for the ticks to close the window [0, 100); the sender is still open, so
        // only a tick can have fired it.
        let mut seen = Vec::new();
        for _ in 0..5_000 {
            seen.extend(sink.take());
            if seen.len() == 2 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        seen.sort_by(|x, y| x.1.cmp(&y.1));
        assert_eq!(
            seen,
            vec![(99, ("a".to_string(), 3)), (99, ("b".to_string(), 5))],
            "parallelism {parallelism}"
        );
        tx.send(("a".into(), 7)).unwrap();
        drop(tx);
        let side = job.join().unwrap().unwrap();
        assert!(side.is_empty());
        // The last window fires at the end of input.
        assert_eq!(sink.take(), vec![(199, ("a".to_string(), 7))]);
    }
}

/// Fails on the event with value 13, panics on the event with value 666.
#[derive(Clone)]
struct Fussy;

impl KeyedProcessFunction<u64, u64, u64> for Fussy {
    fn process_element(&mut self, v: u64, ctx: &mut Context<'_, u64, u64>) -> Result<()> {
        match v {
            13 => Err(cep_runtime::Error::User(format!(
                "unlucky event for key {}",
                ctx.key()
            ))),
            666 => panic!("a user function panicked"),
            _ => {
                ctx.collect(v);
                Ok(())
            }
        }
    }
}

#[test]
fn user_errors_and_worker_panics_end_the_job_with_an_error() {
    for parallelism in [1, 3] {
        let env = Dataflow::new()
            .with_parallelism(parallelism)
            .with_batch_size(8);
        let err = env
            .from_iter(0..10_000u64)
            .key_by(|v: &u64| v % 7)
            .process(Fussy)
            .collect()
            .unwrap_err();
        assert!(
            matches!(&err, cep_runtime::Error::User(m) if m == "unlucky event for key 6"),
            "parallelism {parallelism}: {err}"
        );
        assert!(!err.is_retryable());
    }
    // A panicking worker is reported, not propagated into the caller (which would hang or abort).
    let err = Dataflow::new()
        .with_parallelism(3)
        .with_batch_size(8)
        .from_iter((0..10_000u64).filter(|v| *v != 13))
        .key_by(|v: &u64| v % 7)
        .process(Fussy)
        .collect()
        .unwrap_err();
    assert!(matches!(err, cep_runtime::Error::Worker { .. }), "{err}");
    assert!(err.is_retryable());
}
