//! `cep bench`: throughput of the engine on a generated workload. Event `i` of the stream takes its
//! key (one of `--keys`), its type and a value from `splitmix64(i)`, and its timestamp is `i` ms;
//! the workload's pattern runs over it per key.
//!
//! The stream is a pure function of the event index, so other engines (Flink, through
//! `../shared/flink-reference`'s `Bench`) can be fed the identical stream, and the match and
//! timeout counts printed show that both did the same work.
//!
//! Two paths: typed events with the Rust DSL through `CepOperator`, or (`--json`) each event
//! written as a JSON line, parsed and pushed through `JsonEngine` and the outputs serialized, as
//! `cep run` does. With `--threads T`, keys are hash-partitioned over `T` workers, each with its
//! own operator. The input is partitioned before the clock starts, as a partitioned source (Kafka
//! partitions, Flink's keyBy) hands each worker its keys' events: the indices of each worker's
//! events, in order (4 bytes an event, part of the peak RSS), made by the workers together; each
//! worker then generates only its own events, so the events of a key keep their order.

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use cep::{AfterMatchSkip, CepOperator, Nfa, OutputKind, Pattern};
use cep_patterns::{compile, EngineConfig, JsonEngine, PatternSpec, TimeFormat};

/// Options of `cep bench`.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// The workload's pattern: login_fail (3 consecutive failures within 2 s), seq_fby (A, B, C
    /// within 10 s), oneormore (A, one or more B, C within 6 s), timeout (A then B within 3 s),
    /// not_fby (A, no B, then C within 6 s) or iterative (A, B events valued above A's, then a C
    /// below their average, within 10 s). `hold` measures memory: each of `--keys` keys gets one
    /// failure (login_fail with a 1 h window), so every key holds one partial match, and the
    /// resident memory they add is reported per partial match (`--events` is not used).
    #[arg(long)]
    pub workload: String,
    /// Number of events.
    #[arg(long, default_value_t = 1_000_000)]
    pub events: u64,
    /// Number of keys.
    #[arg(long, default_value_t = 1_000)]
    pub keys: u64,
    /// Run JSON lines through the JSON pattern path (as `cep run` does) instead of typed events
    /// through the Rust DSL.
    #[arg(long)]
    pub json: bool,
    /// Worker threads (keys are hash-partitioned over them).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Directory of the conformance patterns (the JSON twins of the workloads other than
    /// login_fail).
    #[arg(
        long,
        env = "CEP_CONFORMANCE_PATTERNS",
        default_value = "../shared/conformance/patterns"
    )]
    pub patterns_dir: PathBuf,
}

/// The JSON twin of the login workload's pattern.
const LOGIN_FAIL_JSON: &str = r#"{
  "name": "login_fail",
  "within": "2s",
  "after_match": "skip_past_last_event",
  "stages": [
    { "name": "fail", "where": "type == 'fail'", "times": 3, "consecutive": true }
  ]
}"#;

const WORKLOADS: [&str; 6] = [
    "login_fail",
    "seq_fby",
    "oneormore",
    "timeout",
    "not_fby",
    "iterative",
];

/// The memory workload's pattern: login_fail held for an hour.
const HOLD_JSON: &str = r#"{
  "name": "hold",
  "within": "1h",
  "after_match": "skip_past_last_event",
  "stages": [
    { "name": "fail", "where": "type == 'fail'", "times": 3, "consecutive": true }
  ]
}"#;

/// The resident set size of this process now (`VmRSS`), in bytes.
fn rss_bytes() -> u64 {
    status_bytes("VmRSS:")
}

/// What the memory workload measured.
struct Held {
    partial_matches: usize,
    keys: usize,
    /// Resident memory added by the keys' state.
    bytes: u64,
    /// The events' text kept by the partial matches (JSON), in bytes.
    text: u64,
}

/// `hold`, typed: key `i` gets one failure at time `i`; the watermark passes every event, so
/// each key holds one partial match (nothing times out within the hour).
fn hold_typed(keys: u64) -> Held {
    let nfa = Pattern::begin_with_skip("fail", AfterMatchSkip::SkipPastLastEvent)
        .where_(is("fail"))
        .times(3)
        .consecutive()
        .within(secs(3600))
        .compile("hold")
        .expect("a valid pattern");
    let mut op: CepOperator<u64, Ev> = CepOperator::new(vec![Arc::new(nfa)]);
    let mut out = Vec::new();
    let before = rss_bytes();
    for i in 0..keys {
        let e = Ev {
            id: i,
            key: i,
            ts: i as i64,
            kind: "fail",
            value: (i % 100) as f64,
        };
        op.process_element(i, e, i as i64, &mut out);
        op.advance_watermark(i as i64 - 1, &mut out);
    }
    op.advance_watermark(keys as i64, &mut out);
    let bytes = rss_bytes().saturating_sub(before);
    let stats = op.stats();
    assert!(out.is_empty(), "nothing matches or times out");
    Held {
        partial_matches: stats.partial_matches,
        keys: stats.keys,
        bytes,
        text: 0,
    }
}

/// `hold`, JSON: the same through `JsonEngine`, one line per key as `cep run` reads it.
fn hold_json(keys: u64) -> Held {
    let spec = PatternSpec::from_json(HOLD_JSON).expect("a valid pattern");
    let mut engine = json_engine(&spec);
    let mut outs = Vec::new();
    let mut line = String::new();
    let mut text = 0u64;
    let before = rss_bytes();
    for i in 0..keys {
        let e = Ev {
            id: i,
            key: i,
            ts: i as i64,
            kind: "fail",
            value: (i % 100) as f64,
        };
        write_line(&mut line, &e);
        text += line.len() as u64;
        engine.push_str(&line, &mut outs).expect("a valid line");
    }
    engine.advance_watermark(keys as i64, &mut outs);
    let bytes = rss_bytes().saturating_sub(before);
    let stats = engine.stats();
    assert!(outs.is_empty(), "nothing matches or times out");
    Held {
        partial_matches: stats.partial_matches,
        keys: stats.keys,
        bytes,
        text,
    }
}

/// `splitmix64`, the generator of the workload.
pub fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

const TYPES: [&str; 4] = ["A", "B", "C", "D"];

/// One generated event. The key is kept as its number: the key of event `i` is `"k{key}"`.
#[derive(Clone, Debug)]
pub struct Ev {
    /// The event index.
    pub id: u64,
    /// The key's number.
    pub key: u64,
    /// Timestamp in milliseconds (= `id`).
    pub ts: i64,
    /// `A`..`D`, or `fail`/`success` in the login workload.
    pub kind: &'static str,
    /// A value in `[0, 100)`.
    pub value: f64,
}

/// Event `i` of the workload with `keys` keys.
pub fn event(i: u64, keys: u64, login: bool) -> Ev {
    let x = splitmix64(i);
    let t = (x >> 20) & 0xFF;
    let kind = if login {
        if t < 204 {
            "fail"
        } else {
            "success"
        }
    } else {
        TYPES[(t & 3) as usize]
    };
    Ev {
        id: i,
        key: x % keys,
        ts: i as i64,
        kind,
        value: ((x >> 32) % 10000) as f64 / 100.0,
    }
}

/// The worker (of `threads`) that owns key number `key`.
fn partition(key: u64, threads: usize) -> usize {
    if threads <= 1 {
        return 0;
    }
    // A multiplicative hash, so that the partition does not follow `x % keys` patterns.
    (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as usize % threads
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn is(t: &'static str) -> impl Fn(&Ev) -> bool + Send + Sync + 'static {
    move |e: &Ev| e.kind == t
}

fn last_value(ctx: &cep::Context<'_, Ev>, stage: &str) -> f64 {
    ctx.events(stage).last().map_or(f64::NAN, |e| e.value)
}

fn avg_value(ctx: &cep::Context<'_, Ev>, stage: &str) -> f64 {
    let (mut sum, mut n) = (0.0, 0u32);
    for e in ctx.events(stage) {
        sum += e.value;
        n += 1;
    }
    if n == 0 {
        f64::NAN
    } else {
        sum / f64::from(n)
    }
}

/// The DSL twin of a workload's pattern (`../shared/flink-reference/src/Patterns.java`).
pub fn typed_pattern(workload: &str) -> anyhow::Result<Nfa<Ev>> {
    let p = match workload {
        "login_fail" => Pattern::begin_with_skip("fail", AfterMatchSkip::SkipPastLastEvent)
            .where_(is("fail"))
            .times(3)
            .consecutive()
            .within(secs(2)),
        "seq_fby" => Pattern::begin("a")
            .where_(is("A"))
            .followed_by("b")
            .where_(is("B"))
            .followed_by("c")
            .where_(is("C"))
            .within(secs(10)),
        "oneormore" => Pattern::begin("a")
            .where_(is("A"))
            .followed_by("b")
            .where_(is("B"))
            .one_or_more()
            .followed_by("c")
            .where_(is("C"))
            .within(secs(6)),
        "timeout" => Pattern::begin("create")
            .where_(is("A"))
            .followed_by("pay")
            .where_(is("B"))
            .within(secs(3)),
        "not_fby" => Pattern::begin("a")
            .where_(is("A"))
            .not_followed_by("b")
            .where_(is("B"))
            .followed_by("c")
            .where_(is("C"))
            .within(secs(6)),
        "iterative" => Pattern::begin("s")
            .where_(is("A"))
            .followed_by("r")
            .where_ctx(|e: &Ev, ctx| e.kind == "B" && e.value > last_value(ctx, "s"))
            .one_or_more()
            .followed_by("e")
            .where_ctx(|e: &Ev, ctx| e.kind == "C" && e.value < avg_value(ctx, "r"))
            .within(secs(10)),
        other => bail!(
            "unknown workload '{other}' (one of {})",
            WORKLOADS.join(", ")
        ),
    };
    p.compile(workload)
        .map_err(|e| anyhow::anyhow!("{workload}: {e}"))
}

/// The JSON twin of a workload's pattern.
fn json_pattern(workload: &str, dir: &std::path::Path) -> anyhow::Result<PatternSpec> {
    let text = if workload == "login_fail" {
        LOGIN_FAIL_JSON.to_string()
    } else {
        let file = dir.join(format!("{workload}.json"));
        std::fs::read_to_string(&file).with_context(|| {
            format!(
                "reading {} (set --patterns-dir to the conformance patterns)",
                file.display()
            )
        })?
    };
    PatternSpec::from_json(&text).map_err(|e| anyhow::anyhow!("{workload}: {e}"))
}

/// Output counts of one worker.
#[derive(Clone, Copy, Debug, Default)]
struct Counts {
    matches: u64,
    timeouts: u64,
}

/// The event indices of each worker, in order (see the module docs); `None` for one worker.
/// Made in parallel: each thread partitions a slice of the stream, and each worker's list is the
/// slices' lists in order.
fn partition_input(args: &BenchArgs) -> anyhow::Result<Option<Vec<Vec<u32>>>> {
    let threads = args.threads;
    if threads <= 1 {
        return Ok(None);
    }
    if args.events > u64::from(u32::MAX) {
        bail!("--events beyond {} need --threads 1", u32::MAX);
    }
    let chunk = args.events.div_ceil(threads as u64);
    let parts: Vec<Vec<Vec<u32>>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads as u64)
            .map(|c| {
                s.spawn(move || {
                    let mut lists: Vec<Vec<u32>> = (0..threads).map(|_| Vec::new()).collect();
                    let end = ((c + 1) * chunk).min(args.events);
                    for i in c * chunk..end {
                        let key = event(i, args.keys, false).key;
                        lists[partition(key, threads)].push(i as u32);
                    }
                    lists
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("partitioning"))
            .collect()
    });
    let mut workers: Vec<Vec<u32>> = (0..threads).map(|_| Vec::new()).collect();
    for lists in parts {
        for (w, list) in lists.into_iter().enumerate() {
            workers[w].extend(list);
        }
    }
    Ok(Some(workers))
}

/// The indices of the events worker `worker` takes: all of them for one worker.
fn indices<'a>(
    args: &BenchArgs,
    input: Option<&'a [Vec<u32>]>,
    worker: usize,
) -> Box<dyn Iterator<Item = u64> + 'a> {
    match input {
        Some(lists) => Box::new(lists[worker].iter().map(|&i| u64::from(i))),
        None => Box::new(0..args.events),
    }
}

fn run_typed(
    nfa: Arc<Nfa<Ev>>,
    args: &BenchArgs,
    login: bool,
    input: Option<&[Vec<u32>]>,
    worker: usize,
) -> Counts {
    let mut op: CepOperator<u64, Ev> = CepOperator::new(vec![nfa]);
    let mut out = Vec::new();
    let mut c = Counts::default();
    let mut count = |out: &mut Vec<cep::Output<u64, Ev>>| {
        for o in out.drain(..) {
            match o.kind {
                OutputKind::Match => c.matches += 1,
                OutputKind::Timeout => c.timeouts += 1,
                OutputKind::Late => {}
            }
        }
    };
    for i in indices(args, input, worker) {
        let e = event(i, args.keys, login);
        let (key, ts) = (e.key, e.ts);
        op.process_element(key, e, ts, &mut out);
        // The watermark of bounded out-of-orderness 0.
        op.advance_watermark(ts - 1, &mut out);
        count(&mut out);
    }
    op.advance_watermark(i64::MAX, &mut out);
    count(&mut out);
    c
}

/// Writes event `e` as the JSON line `cep run` would read:
/// `{"id":1,"key":"k7","ts":1,"type":"fail","value":12.5}`. Numbers are written with `itoa` and
/// `ryu` (the shortest form that reads back exactly, `.0` on whole numbers, as serde_json writes
/// them) rather than `format!`, so that the harness costs little next to the engine.
fn write_line(line: &mut String, e: &Ev) {
    let mut int = itoa::Buffer::new();
    line.clear();
    line.push_str(r#"{"id":"#);
    line.push_str(int.format(e.id));
    line.push_str(r#","key":"k"#);
    line.push_str(int.format(e.key));
    line.push_str(r#"","ts":"#);
    line.push_str(int.format(e.ts));
    line.push_str(r#","type":""#);
    line.push_str(e.kind);
    line.push_str(r#"","value":"#);
    write_value(line, e.value);
    line.push('}');
}

/// Writes `v` as `ryu` does. The generator's values are hundredths (`12.34`), written here
/// from their integer digits: `ryu`'s general algorithm was 2.4% of the JSON oneormore run.
fn write_value(line: &mut String, v: f64) {
    let k = (v * 100.0).round();
    if v.is_sign_positive() && (0.0..1e6).contains(&k) && k / 100.0 == v {
        let k = k as u64;
        let mut int = itoa::Buffer::new();
        line.push_str(int.format(k / 100));
        line.push('.');
        let frac = k % 100;
        line.push(char::from(b'0' + (frac / 10) as u8));
        if !frac.is_multiple_of(10) {
            line.push(char::from(b'0' + (frac % 10) as u8));
        }
    } else {
        line.push_str(ryu::Buffer::new().format_finite(v));
    }
}

/// The JSON engine of the bench's lines (key `key`, time `ts` in ms, no out-of-orderness) over
/// `spec`, checked before the bench starts.
fn json_engine(spec: &PatternSpec) -> JsonEngine {
    let pattern = Arc::new(compile(spec).expect("checked before the bench starts"));
    let config = EngineConfig {
        key_by: "key".into(),
        time_field: "ts".into(),
        time_format: TimeFormat::EpochMs,
        out_of_orderness_ms: 0,
    };
    JsonEngine::new(config, vec![pattern]).expect("checked before the bench starts")
}

fn run_json(
    spec: &PatternSpec,
    args: &BenchArgs,
    login: bool,
    input: Option<&[Vec<u32>]>,
    worker: usize,
) -> Counts {
    let mut engine = json_engine(spec);
    let mut outs = Vec::new();
    let mut line = String::new();
    // Outputs are serialized as `cep run` does; the bytes go nowhere.
    let mut sink: Vec<u8> = Vec::new();
    let mut c = Counts::default();
    let mut emit = |outs: &mut Vec<cep_patterns::Output>, sink: &mut Vec<u8>| {
        for o in outs.drain(..) {
            match o.kind {
                cep_patterns::OutputKind::Match => c.matches += 1,
                cep_patterns::OutputKind::Timeout => c.timeouts += 1,
                cep_patterns::OutputKind::Late => {}
            }
            sink.clear();
            o.write_json(sink);
            sink.push(b'\n');
        }
    };
    for i in indices(args, input, worker) {
        let e = event(i, args.keys, login);
        write_line(&mut line, &e);
        if let Err(err) = engine.push_str(&line, &mut outs) {
            panic!("event {i} rejected: {err}");
        }
        emit(&mut outs, &mut sink);
    }
    engine.advance_watermark(i64::MAX, &mut outs);
    emit(&mut outs, &mut sink);
    c
}

/// The peak resident set size of this process (`VmHWM`), in bytes.
fn peak_rss_bytes() -> u64 {
    status_bytes("VmHWM:")
}

/// A size in kB of `/proc/self/status` (the line starting with `field`), in bytes; 0 if absent.
fn status_bytes(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// CPU time (user + system) used by this process so far, in seconds, from `/proc/self/stat`
/// (clock ticks of 10 ms). On a machine shared with other work it says more than wall time.
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return f64::NAN;
    };
    // The command name (field 2) may hold spaces; the fields after its ')' are space-separated,
    // utime and stime being fields 14 and 15 of the whole line.
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
        return f64::NAN;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        f.get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    (ticks(11) + ticks(12)) / 100.0
}

/// Runs `cep bench`; returns the process exit code.
pub fn bench(args: BenchArgs) -> anyhow::Result<i32> {
    if args.workload == "hold" {
        if args.keys == 0 {
            bail!("--keys must be at least 1");
        }
        let start = Instant::now();
        let held = if args.json {
            hold_json(args.keys)
        } else {
            hold_typed(args.keys)
        };
        let per = |n: u64| n as f64 / held.partial_matches.max(1) as f64;
        writeln!(
            std::io::stdout().lock(),
            "workload=hold keys={} json={} partial_matches={} keys_with_state={} seconds={:.3} \
             state_bytes={} bytes_per_partial_match={:.0} event_text_bytes_per_partial_match={:.0} \
             peak_rss_bytes={}",
            args.keys,
            args.json,
            held.partial_matches,
            held.keys,
            start.elapsed().as_secs_f64(),
            held.bytes,
            per(held.bytes),
            per(held.text),
            peak_rss_bytes()
        )?;
        return Ok(0);
    }
    if !WORKLOADS.contains(&args.workload.as_str()) {
        bail!(
            "unknown workload '{}' (one of {})",
            args.workload,
            WORKLOADS.join(", ")
        );
    }
    if args.keys == 0 || args.threads == 0 {
        bail!("--keys and --threads must be at least 1");
    }
    let login = args.workload == "login_fail";
    let threads = args.threads;
    let input = partition_input(&args)?;
    let input = input.as_deref();
    let start;
    let cpu_start;
    let counts: Vec<Counts> = if args.json {
        let spec = json_pattern(&args.workload, &args.patterns_dir)?;
        compile(&spec).map_err(|e| anyhow::anyhow!("{}: {e}", args.workload))?;
        cpu_start = cpu_seconds();
        start = Instant::now();
        if threads == 1 {
            vec![run_json(&spec, &args, login, input, 0)]
        } else {
            std::thread::scope(|s| {
                let handles: Vec<_> = (0..threads)
                    .map(|w| {
                        let (spec, args) = (&spec, &args);
                        s.spawn(move || run_json(spec, args, login, input, w))
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().expect("worker"))
                    .collect()
            })
        }
    } else {
        let nfa = Arc::new(typed_pattern(&args.workload)?);
        cpu_start = cpu_seconds();
        start = Instant::now();
        if threads == 1 {
            vec![run_typed(nfa, &args, login, input, 0)]
        } else {
            std::thread::scope(|s| {
                let handles: Vec<_> = (0..threads)
                    .map(|w| {
                        let (nfa, args) = (nfa.clone(), &args);
                        s.spawn(move || run_typed(nfa, args, login, input, w))
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().expect("worker"))
                    .collect()
            })
        }
    };
    let seconds = start.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu_start;
    let matches: u64 = counts.iter().map(|c| c.matches).sum();
    let timeouts: u64 = counts.iter().map(|c| c.timeouts).sum();
    let mut stdout = std::io::stdout().lock();
    writeln!(
        stdout,
        "workload={} events={} keys={} threads={} json={} matches={} timeouts={} seconds={:.3} \
         events_per_sec={:.0} peak_rss_bytes={} cpu_seconds={:.2}",
        args.workload,
        args.events,
        args.keys,
        threads,
        args.json,
        matches,
        timeouts,
        seconds,
        args.events as f64 / seconds,
        peak_rss_bytes(),
        cpu
    )?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generator_matches_the_reference_formulas() {
        // splitmix64(0) is the well-known first output of the generator seeded with 0.
        assert_eq!(splitmix64(0), 0xE220_A839_7B1D_CDAF);
        let e = event(0, 1000, true);
        let x = splitmix64(0);
        assert_eq!(e.key, x % 1000);
        assert_eq!(e.ts, 0);
        assert_eq!(e.value, ((x >> 32) % 10000) as f64 / 100.0);
    }

    #[test]
    fn json_lines_read_back_as_the_events() {
        let mut line = String::new();
        for i in [0, 1, 7, 12_345, 9_999_999] {
            let e = event(i, 1000, i % 2 == 0);
            write_line(&mut line, &e);
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            assert_eq!(v["id"], e.id);
            assert_eq!(v["key"], format!("k{}", e.key));
            assert_eq!(v["ts"], e.ts);
            assert_eq!(v["type"], e.kind);
            assert_eq!(v["value"].as_f64(), Some(e.value));
            // The value as serde_json writes it back.
            assert_eq!(v.to_string(), line);
        }
    }

    #[test]
    fn values_are_written_as_ryu_writes_them() {
        let mut line = String::new();
        let others = [0.001, 123.456, 1e7 + 0.5, 0.1 + 0.2, 5e-324, -0.0, -1.5];
        for v in (0..1_000_000).map(|k| k as f64 / 100.0).chain(others) {
            line.clear();
            write_value(&mut line, v);
            assert_eq!(line, ryu::Buffer::new().format_finite(v), "{v}");
        }
    }

    #[test]
    fn the_memory_workload_holds_one_partial_match_per_key() {
        for held in [hold_typed(2_000), hold_json(2_000)] {
            assert_eq!(held.partial_matches, 2_000);
            assert_eq!(held.keys, 2_000);
        }
        assert!(hold_json(10).text > 10 * 40);
    }

    #[test]
    fn every_workload_has_both_twins() {
        for w in WORKLOADS {
            typed_pattern(w).unwrap();
        }
        compile(&PatternSpec::from_json(LOGIN_FAIL_JSON).unwrap()).unwrap();
    }

    /// Which matcher runs each workload's keys, typed and JSON: the benchmarks measure these.
    #[test]
    fn each_workload_runs_on_its_matcher() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/conformance/patterns");
        for (w, matcher) in [
            ("login_fail", "strict chain"),
            ("seq_fby", "chain"),
            ("oneormore", "loop"),
            ("timeout", "chain"),
            ("not_fby", "chain"),
            ("iterative", "loop"),
        ] {
            assert_eq!(typed_pattern(w).unwrap().matcher(), matcher, "{w}, typed");
            if w == "login_fail" || dir.exists() {
                let json = compile(&json_pattern(w, &dir).unwrap()).unwrap();
                assert_eq!(json.nfa().matcher(), matcher, "{w}, JSON");
            }
        }
    }
}
