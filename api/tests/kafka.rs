//! `cep kafka` end to end against a real Kafka-compatible broker (noida-db, started by
//! `scripts/kafka-broker.sh` on a free port; or the broker at `KAFKA_BOOTSTRAP` if set).
//!
//! Expectations are computed independently by running the same events through
//! `cep_patterns::JsonEngine` in the test, and a few are checked by hand.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cep_patterns::{compile, EngineConfig, JsonEngine, Output, OutputKind, PatternSpec};
use cep_runtime::kafka::rdkafka;
use cep_runtime::kafka::{output_id, OUTPUT_ID_HEADER};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::{json, Value};

const PATTERN: &str = r#"{"name":"login-failures","within":"2s","after_match":"skip_past_last_event","stages":[{"name":"fail","where":"type == 'fail'","times":3,"consecutive":true}]}"#;
const PARTITIONS: i32 = 4;
const OUT_OF_ORDERNESS_MS: i64 = 200;

/// A broker for one test: started by the script and stopped on drop, or an external one.
struct Broker {
    bootstrap: String,
    started: Option<(String, String)>,
}

impl Broker {
    fn start() -> Broker {
        if let Ok(b) = std::env::var("KAFKA_BOOTSTRAP") {
            return Broker {
                bootstrap: b,
                started: None,
            };
        }
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/kafka-broker.sh");
        let out = Command::new(&script)
            .arg("start")
            .stderr(Stdio::inherit())
            .output()
            .expect("run scripts/kafka-broker.sh");
        assert!(out.status.success(), "the test broker did not start");
        let text = String::from_utf8_lossy(&out.stdout);
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("{name}=")))
                .unwrap_or_else(|| panic!("no {name}= in {text}"))
                .to_string()
        };
        Broker {
            bootstrap: field("bootstrap"),
            started: Some((field("pid"), field("dir"))),
        }
    }

    fn create_topics(&self, topics: &[(&str, i32)]) {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .create()
            .expect("admin client");
        let new: Vec<NewTopic<'_>> = topics
            .iter()
            .map(|(t, n)| NewTopic::new(t, *n, TopicReplication::Fixed(1)))
            .collect();
        let results = futures::executor::block_on(admin.create_topics(&new, &AdminOptions::new()))
            .expect("create topics");
        for r in results {
            r.expect("topic created");
        }
    }

    fn producer(&self) -> ThreadedProducer<DefaultProducerContext> {
        ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .set("enable.idempotence", "true")
            .set("linger.ms", "1")
            .create()
            .expect("producer")
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some((pid, dir)) = &self.started {
            let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/kafka-broker.sh");
            let _ = Command::new(script).args(["stop", pid, dir]).status();
        }
    }
}

/// Sends one record (to a fixed partition if given) and waits until it is acknowledged.
fn send(
    p: &ThreadedProducer<DefaultProducerContext>,
    topic: &str,
    key: &str,
    value: &str,
    partition: Option<i32>,
) {
    let mut r = BaseRecord::to(topic).key(key).payload(value);
    if let Some(part) = partition {
        r = r.partition(part);
    }
    p.send(r).map_err(|(e, _)| e).expect("enqueue");
}

/// A received output: its topic, payload and id header.
#[derive(Debug, Clone)]
struct Received {
    partition: i32,
    offset: i64,
    payload: Value,
    id: Option<String>,
    raw: Vec<u8>,
}

/// Reads every committed record of `topics` until `done(records)` holds or `timeout` passes.
fn read_until(
    bootstrap: &str,
    topics: &[&str],
    timeout: Duration,
    done: impl FnMut(&BTreeMap<String, Vec<Received>>) -> bool,
) -> BTreeMap<String, Vec<Received>> {
    read_with(bootstrap, "read_committed", topics, timeout, done)
}

fn read_with(
    bootstrap: &str,
    isolation: &str,
    topics: &[&str],
    timeout: Duration,
    mut done: impl FnMut(&BTreeMap<String, Vec<Received>>) -> bool,
) -> BTreeMap<String, Vec<Received>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "test-reader")
        .set("enable.auto.commit", "false")
        .set("isolation.level", isolation)
        .create()
        .expect("reader");
    let mut tpl = TopicPartitionList::new();
    for t in topics {
        let md = consumer
            .fetch_metadata(Some(t), Duration::from_secs(10))
            .expect("metadata");
        for mt in md.topics() {
            for p in mt.partitions() {
                tpl.add_partition_offset(t, p.id(), Offset::Beginning)
                    .unwrap();
            }
        }
    }
    consumer.assign(&tpl).expect("assign");
    let mut got: BTreeMap<String, Vec<Received>> =
        topics.iter().map(|t| (t.to_string(), vec![])).collect();
    let start = Instant::now();
    while start.elapsed() < timeout && !done(&got) {
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            let m = m.expect("read");
            let raw = m.payload().unwrap_or_default().to_vec();
            if raw.as_slice() == br#"{"sentinel":true}"# {
                continue;
            }
            let id = m.headers().and_then(|h| {
                h.iter()
                    .find(|h| h.key == OUTPUT_ID_HEADER)
                    .and_then(|h| h.value.map(|v| String::from_utf8_lossy(v).into_owned()))
            });
            got.get_mut(m.topic()).unwrap().push(Received {
                partition: m.partition(),
                offset: m.offset(),
                payload: serde_json::from_slice(&raw).unwrap_or(Value::Null),
                id,
                raw,
            });
        }
    }
    got
}

fn pattern_dir(dir: &Path) -> PathBuf {
    let f = dir.join("login-failures.json");
    std::fs::write(&f, PATTERN).unwrap();
    f
}

struct Topics {
    input: String,
    matches: String,
    timeouts: String,
    late: String,
    dlq: String,
}

impl Topics {
    fn new(prefix: &str) -> Topics {
        Topics {
            input: format!("{prefix}-logins"),
            matches: format!("{prefix}-alerts"),
            timeouts: format!("{prefix}-timeouts"),
            late: format!("{prefix}-late"),
            dlq: format!("{prefix}-dlq"),
        }
    }

    fn create(&self, broker: &Broker) {
        broker.create_topics(&[
            (&self.input, PARTITIONS),
            (&self.matches, PARTITIONS),
            (&self.timeouts, 2),
            (&self.late, 1),
            (&self.dlq, 1),
        ]);
    }
}

fn start_pipeline(
    broker: &Broker,
    topics: &Topics,
    group: &str,
    pattern: &Path,
    extra: &[&str],
) -> Child {
    pipeline_command(broker, topics, group, pattern, extra)
        .env(
            "RUST_LOG",
            std::env::var("CEP_TEST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .spawn()
        .expect("start cep kafka")
}

/// Like [`start_pipeline`], with its info log written to `log`.
fn start_logged_pipeline(
    broker: &Broker,
    topics: &Topics,
    group: &str,
    pattern: &Path,
    extra: &[&str],
    log: &Path,
) -> Child {
    pipeline_command(broker, topics, group, pattern, extra)
        .env(
            "RUST_LOG",
            if std::env::var("CEP_TEST_KAFKA_DEBUG").is_ok() {
                "info,librdkafka=debug,rdkafka=debug"
            } else {
                "info"
            },
        )
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .expect("start cep kafka")
}

fn pipeline_command(
    broker: &Broker,
    topics: &Topics,
    group: &str,
    pattern: &Path,
    extra: &[&str],
) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cep"));
    c.args(["kafka", "--bootstrap", &broker.bootstrap, "--group", group])
        .args(["--input-topic", &topics.input])
        .arg("--pattern")
        .arg(pattern)
        .args(["--key-by", "user", "--time-field", "ts"])
        .args(["--out-of-orderness", &format!("{OUT_OF_ORDERNESS_MS}ms")])
        .args(["--matches-topic", &topics.matches])
        .args(["--timeouts-topic", &topics.timeouts])
        .args(["--late-topic", &topics.late])
        .args(["--dlq-topic", &topics.dlq])
        .args(["--commit-interval", "200ms"])
        .args(extra);
    // librdkafka's debug contexts (`eos,protocol`, ...) in the pipelines' logs.
    if let Ok(d) = std::env::var("CEP_TEST_KAFKA_DEBUG") {
        c.args(["-X", &format!("debug={d}")]);
    }
    c
}

fn stop(mut child: Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "cep kafka exited with {status}");
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    panic!("cep kafka did not stop on SIGTERM");
}

/// Deterministic login events: users fail and succeed in runs, timestamps increase by 10..60 ms
/// (in order, so no event is late with any partitioning), plus hand-written sequences.
fn login_events(n: usize, seed: u64) -> Vec<Value> {
    let mut s = seed;
    let mut next = move || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (s >> 33) as u32
    };
    let mut ts = 1_000_000i64;
    let mut out = Vec::with_capacity(n + 6);
    for i in 0..n {
        ts += 10 + (next() % 50) as i64;
        let user = format!("u{}", next() % 12);
        let ty = if next() % 4 == 0 { "success" } else { "fail" };
        out.push(json!({"user": user, "type": ty, "ts": ts, "seq": i}));
        if i == n / 3 {
            // Hand-checked: alice fails three times within 2 s (one match); bob fails twice, then
            // succeeds (no match, one timeout of the 2-fail partial match... cut by the success).
            for (k, (u, t)) in [
                ("alice", "fail"),
                ("bob", "fail"),
                ("alice", "fail"),
                ("bob", "fail"),
                ("alice", "fail"),
                ("bob", "success"),
            ]
            .iter()
            .enumerate()
            {
                out.push(json!({"user": u, "type": t, "ts": ts + k as i64, "hand": true}));
            }
            ts += 10;
        }
    }
    out
}

/// What `JsonEngine` outputs for `events` followed by one end-of-test event per partition at
/// `end_ts` (which move every partition's watermark to `end_ts - out_of_orderness - 1`).
fn expected(events: &[Value], end_ts: i64) -> Vec<Output> {
    let spec = PatternSpec::from_json(PATTERN).unwrap();
    let mut engine = JsonEngine::new(
        EngineConfig {
            key_by: "user".into(),
            time_field: "ts".into(),
            time_format: Default::default(),
            out_of_orderness_ms: OUT_OF_ORDERNESS_MS,
        },
        vec![std::sync::Arc::new(compile(&spec).unwrap())],
    )
    .unwrap();
    let mut out = Vec::new();
    for e in events {
        engine.push(e.clone(), &mut out).unwrap();
    }
    for p in 0..PARTITIONS {
        engine.push(end_event(p, end_ts), &mut out).unwrap();
    }
    out
}

/// A broker (started, or `KAFKA_BOOTSTRAP`), topics named after `prefix` (created), a temporary
/// directory and the login-failure pattern file in it.
fn setup(prefix: &str) -> (Broker, Topics, tempfile::TempDir, PathBuf) {
    let broker = Broker::start();
    let topics = Topics::new(prefix);
    topics.create(&broker);
    let dir = tempfile::tempdir().unwrap();
    let pattern = pattern_dir(dir.path());
    (broker, topics, dir, pattern)
}

/// `n` login events (seed `seed`), the time of the end events (10 s after the last), and what
/// `JsonEngine` outputs for them.
fn stream(n: usize, seed: u64) -> (Vec<Value>, i64, Vec<Output>) {
    let events = login_events(n, seed);
    let end_ts = events.last().unwrap()["ts"].as_i64().unwrap() + 10_000;
    let want = expected(&events, end_ts);
    (events, end_ts, want)
}

fn end_event(partition: i32, ts: i64) -> Value {
    json!({"user": format!("end-{partition}"), "type": "end", "ts": ts})
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

fn of_kind(outs: &[Output], kind: OutputKind) -> Vec<String> {
    sorted(
        outs.iter()
            .filter(|o| o.kind == kind)
            .map(|o| serde_json::to_string(o).unwrap())
            .collect(),
    )
}

/// Equal as multisets (both sorted); on failure, shows what is missing and what is extra.
fn assert_same(got: Vec<String>, want: &[String], what: &str) {
    if got == want {
        return;
    }
    let mut missing = want.to_vec();
    let mut extra = Vec::new();
    for g in got {
        match missing.iter().position(|m| *m == g) {
            Some(i) => {
                missing.remove(i);
            }
            None => extra.push(g),
        }
    }
    panic!("{what}: missing {missing:#?}\nextra {extra:#?}");
}

/// The payloads as text; an output written without its pattern version (the service labels
/// outputs with the version of their pattern, the expected ones are unversioned).
fn payloads(r: &[Received]) -> Vec<String> {
    sorted(
        r.iter()
            .map(|r| match serde_json::from_slice::<Output>(&r.raw) {
                Ok(mut o) if o.version != 0 => {
                    o.version = 0;
                    serde_json::to_string(&o).unwrap()
                }
                _ => String::from_utf8(r.raw.clone()).unwrap(),
            })
            .collect(),
    )
}

const POISON: &[(&str, &str)] = &[
    ("{\"user\":\"u1\",\"type\":\"fail\",", "malformed JSON"),
    (
        "{\"user\":\"u1\",\"type\":\"fail\"}",
        "missing time field 'ts'",
    ),
    ("{\"type\":\"fail\",\"ts\":5}", "missing key field 'user'"),
    (
        "{\"user\":\"u2\",\"type\":\"fail\",\"ts\":\"soon\"}",
        "time field 'ts' must be a number",
    ),
    ("[1,2,3]", "an event must be a JSON object"),
    (
        "{\"user\":{\"id\":1},\"type\":\"fail\",\"ts\":7}",
        "key field 'user' must be a string or a number",
    ),
];

#[test]
fn login_failures_end_to_end_with_dead_letters_and_late_events() {
    let (broker, topics, _dir, pattern) = setup("e2e");

    let (events, end_ts, want) = stream(1500, 7);
    let want_matches = of_kind(&want, OutputKind::Match);
    let want_timeouts = of_kind(&want, OutputKind::Timeout);
    assert!(of_kind(&want, OutputKind::Late).is_empty());
    assert!(
        want_matches.len() > 50,
        "the workload has matches: {}",
        want_matches.len()
    );

    // Hand checks of the expectation itself.
    let alice: Vec<&String> = want_matches
        .iter()
        .filter(|m| m.contains("\"key\":\"alice\""))
        .collect();
    assert_eq!(alice.len(), 1, "{alice:?}");
    let a: Value = serde_json::from_str(alice[0]).unwrap();
    assert_eq!(a["events"]["fail"].as_array().unwrap().len(), 3);
    assert_eq!(a["pattern"], "login-failures");
    assert!(!want_matches.iter().any(|m| m.contains("\"key\":\"bob\"")));

    // The pipeline runs while events (with poison records among them) are produced.
    let child = start_pipeline(
        &broker,
        &topics,
        "e2e-group",
        &pattern,
        &["--idleness", "30s"],
    );
    let producer = broker.producer();
    for (i, e) in events.iter().enumerate() {
        let user = e["user"].as_str().unwrap();
        send(&producer, &topics.input, user, &e.to_string(), None);
        if i % 250 == 100 {
            let (p, _) = POISON[(i / 250) % POISON.len()];
            send(
                &producer,
                &topics.input,
                "poison",
                p,
                Some((i / 250) as i32 % PARTITIONS),
            );
        }
    }
    for (i, (p, _)) in POISON.iter().enumerate() {
        send(
            &producer,
            &topics.input,
            "poison",
            p,
            Some(i as i32 % PARTITIONS),
        );
    }
    for p in 0..PARTITIONS {
        send(
            &producer,
            &topics.input,
            "end",
            &end_event(p, end_ts).to_string(),
            Some(p),
        );
    }
    producer.flush(Duration::from_secs(30)).unwrap();

    let poison_sent = 1500usize.div_ceil(250) + POISON.len();
    let got = read_until(
        &broker.bootstrap,
        &[&topics.matches, &topics.timeouts, &topics.dlq],
        Duration::from_secs(90),
        |g| {
            g[&topics.matches].len() >= want_matches.len()
                && g[&topics.timeouts].len() >= want_timeouts.len()
                && g[&topics.dlq].len() >= poison_sent
        },
    );
    assert_eq!(payloads(&got[&topics.matches]), want_matches, "matches");
    assert_eq!(payloads(&got[&topics.timeouts]), want_timeouts, "timeouts");

    // Each output carries its deterministic id; outputs are keyed by the CEP key.
    for r in got[&topics.matches].iter().chain(&got[&topics.timeouts]) {
        assert_eq!(r.id.as_deref(), Some(output_id(&r.raw).as_str()));
    }

    // Dead letters: every poison record with its reason, where it came from and its value.
    let dlq = &got[&topics.dlq];
    assert_eq!(dlq.len(), poison_sent);
    for d in dlq {
        let value = d.payload["value"].as_str().unwrap();
        let (_, reason) = POISON
            .iter()
            .find(|(p, _)| *p == value)
            .expect("a poison record");
        let got_reason = d.payload["reason"].as_str().unwrap();
        assert!(got_reason.starts_with(reason), "{got_reason} vs {reason}");
        assert_eq!(d.payload["topic"], topics.input.as_str());
        assert!(d.payload["offset"].as_i64().unwrap() >= 0);
        assert!((0..PARTITIONS as i64).contains(&d.payload["partition"].as_i64().unwrap()));
    }

    // Every partition's watermark is now end_ts - 201: an old event is late, and goes to the late
    // topic while the pipeline keeps going.
    let late = json!({"user": "carol", "type": "fail", "ts": 1_000_000});
    send(
        &producer,
        &topics.input,
        "carol",
        &late.to_string(),
        Some(1),
    );
    producer.flush(Duration::from_secs(30)).unwrap();
    let got = read_until(
        &broker.bootstrap,
        &[&topics.late],
        Duration::from_secs(30),
        |g| !g[&topics.late].is_empty(),
    );
    let l = &got[&topics.late];
    assert_eq!(l.len(), 1);
    assert_eq!(
        l[0].payload,
        json!({"kind": "late", "key": "carol", "timestamp": 1_000_000, "event": late})
    );
    stop(child);
}

/// A small deterministic generator for the crash points.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

/// The seed of the random crash points (printed, so that a failure can be replayed) and its
/// generator.
fn crash_points() -> (u64, Lcg) {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    eprintln!("crash points seed: {seed}");
    (seed, Lcg(seed))
}

/// The flags of an exactly-once `cep kafka` process whose identity is `id` (its transactional
/// id, and so its group instance id), with partitions idle after 60 s.
fn exactly_once_args(id: &str) -> Vec<String> {
    [
        "--guarantee",
        "exactly-once",
        "--transactional-id",
        id,
        "--idleness",
        "60s",
    ]
    .map(String::from)
    .to_vec()
}

/// Produces `events` to the input topic in small batches (with pauses, so that pipelines see a
/// stream), a poison record now and then, and one end event per partition.
fn produce_slowly(
    broker: &Broker,
    topics: &Topics,
    events: Vec<Value>,
    end_ts: i64,
    pause: Duration,
) -> std::thread::JoinHandle<()> {
    let bootstrap = broker.bootstrap.clone();
    let input = topics.input.clone();
    std::thread::spawn(move || {
        let b = Broker {
            bootstrap,
            started: None,
        };
        let producer = b.producer();
        for (i, e) in events.iter().enumerate() {
            send(
                &producer,
                &input,
                e["user"].as_str().unwrap(),
                &e.to_string(),
                None,
            );
            if i % 40 == 0 {
                producer.flush(Duration::from_secs(30)).unwrap();
                std::thread::sleep(pause);
            }
            if i % 700 == 350 {
                send(&producer, &input, "poison", "{oops", Some((i % 4) as i32));
            }
        }
        for p in 0..PARTITIONS {
            send(
                &producer,
                &input,
                "end",
                &end_event(p, end_ts).to_string(),
                Some(p),
            );
        }
        producer.flush(Duration::from_secs(30)).unwrap();
    })
}

/// Waits until `group` has committed offsets at the end of every partition of `topic`.
fn wait_committed(broker: &Broker, group: &str, topic: &str, timeout: Duration) {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &broker.bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .expect("offsets reader");
    let t = Duration::from_secs(10);
    let start = Instant::now();
    loop {
        let mut tpl = TopicPartitionList::new();
        let mut ends = BTreeMap::new();
        for p in 0..PARTITIONS {
            tpl.add_partition(topic, p);
            ends.insert(p, c.fetch_watermarks(topic, p, t).expect("watermarks").1);
        }
        let committed = c.committed_offsets(tpl, t).expect("committed offsets");
        let behind: Vec<(i32, i64, i64)> = committed
            .elements()
            .iter()
            .filter_map(|e| {
                let at = match e.offset() {
                    Offset::Offset(o) => o,
                    _ => -1,
                };
                (at < ends[&e.partition()]).then(|| (e.partition(), at, ends[&e.partition()]))
            })
            .collect();
        if behind.is_empty() {
            return;
        }
        assert!(
            start.elapsed() < timeout,
            "{group} did not commit the end of {topic} within {timeout:?}: (partition, committed, end) {behind:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Commits one transaction with a sentinel record (`{"sentinel":true}`, skipped by the readers) in
/// every partition of `topics`. With noida-db 0.2.3, the test broker, the last transaction written
/// to a partition sometimes stays invisible to read-committed readers until another transaction
/// is committed to that partition (see docs/kafka.md); the sentinel is that transaction. Records
/// of aborted transactions stay invisible, so exactly-once is still what is checked.
fn seal(broker: &Broker, topics: &[&str]) {
    use rdkafka::producer::{BaseProducer, Producer as _};
    let p: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &broker.bootstrap)
        .set("transactional.id", "test-sentinel")
        .create()
        .expect("sentinel producer");
    let t = Duration::from_secs(30);
    p.init_transactions(t).expect("init transactions");
    p.begin_transaction().expect("begin");
    for topic in topics {
        let md = p.client().fetch_metadata(Some(topic), t).expect("metadata");
        for mt in md.topics() {
            for part in mt.partitions() {
                p.send(
                    BaseRecord::<str, str>::to(topic)
                        .payload(r#"{"sentinel":true}"#)
                        .partition(part.id()),
                )
                .map_err(|(e, _)| e)
                .expect("send sentinel");
            }
        }
    }
    p.flush(t).expect("flush");
    p.commit_transaction(t).expect("commit sentinel");
}

/// Waits until a read-committed reader has at least the expected outputs, lets duplicates
/// arrive, stops `child`, and asserts that matches, timeouts and dead letters are exactly the
/// expected ones, each once.
fn assert_exactly_once(
    broker: &Broker,
    topics: &Topics,
    group: &str,
    child: Child,
    want: &[Output],
    dead_letters: usize,
    what: &str,
) {
    let want_matches = of_kind(want, OutputKind::Match);
    let want_timeouts = of_kind(want, OutputKind::Timeout);
    // Every input record processed: with exactly-once, its outputs are committed with its offset.
    wait_committed(broker, group, &topics.input, Duration::from_secs(120));
    // Let anything extra (a duplicate) arrive before comparing.
    std::thread::sleep(Duration::from_secs(2));
    stop(child);
    seal(broker, &[&topics.matches, &topics.timeouts, &topics.dlq]);
    let got = read_until(
        &broker.bootstrap,
        &[&topics.matches, &topics.timeouts, &topics.dlq],
        Duration::from_secs(20),
        |g| {
            g[&topics.matches].len() >= want_matches.len()
                && g[&topics.timeouts].len() >= want_timeouts.len()
                && g[&topics.dlq].len() >= dead_letters
        },
    );
    for (topic, want) in [
        (&topics.matches, &want_matches),
        (&topics.timeouts, &want_timeouts),
    ] {
        if payloads(&got[topic]) == *want {
            continue;
        }
        // Are the missing outputs in the topic, but not visible to read-committed readers?
        let all = read_with(
            &broker.bootstrap,
            "read_uncommitted",
            &[topic],
            Duration::from_secs(10),
            |_| false,
        );
        let committed = payloads(&got[topic]);
        let missing: Vec<&String> = want.iter().filter(|w| !committed.contains(w)).collect();
        for r in &all[topic] {
            let text = String::from_utf8_lossy(&r.raw).into_owned();
            if missing.contains(&&text) {
                eprintln!(
                    "missing, in the topic at {}/{}@{}",
                    topic, r.partition, r.offset
                );
            }
        }
        let mut last: BTreeMap<i32, i64> = BTreeMap::new();
        for r in &got[topic] {
            let l = last.entry(r.partition).or_insert(-1);
            *l = (*l).max(r.offset);
        }
        eprintln!("last offset read committed per partition: {last:?}");
        let all = payloads(&all[topic]);
        eprintln!(
            "diagnosis of {topic}: {} records read uncommitted, {} committed; of {} missing, {} are in the topic uncommitted",
            all.len(),
            committed.len(),
            missing.len(),
            missing.iter().filter(|m| all.contains(m)).count()
        );
    }
    assert_same(
        payloads(&got[&topics.matches]),
        &want_matches,
        &format!("matches ({what})"),
    );
    assert_same(
        payloads(&got[&topics.timeouts]),
        &want_timeouts,
        &format!("timeouts ({what})"),
    );
    assert_eq!(
        got[&topics.dlq].len(),
        dead_letters,
        "dead letters, once each ({what})"
    );
}

/// The goal of the exactly-once mode: SIGKILL `cep kafka` at random points while events flow,
/// restart it, and compare what a `read_committed` reader sees with the outputs of a crash-free
/// run: the same outputs, each exactly once.
#[test]
fn exactly_once_across_restarts() {
    let (broker, topics, _dir, pattern) = setup("eos");

    let (events, end_ts, want) = stream(4000, 11);

    let (seed, mut rng) = crash_points();
    let sigkill = std::env::var("CEP_KAFKA_CRASH_TEST").map_or(true, |v| v != "0");
    eprintln!(
        "stopping instances with {}",
        if sigkill { "SIGKILL" } else { "SIGTERM" }
    );

    let producing = produce_slowly(&broker, &topics, events, end_ts, Duration::from_millis(60));
    let eos = [
        "--guarantee",
        "exactly-once",
        "--idleness",
        "60s",
        // Static membership by default (the transactional id is the instance id): a restarted
        // instance takes over from the killed one at once.
        "--transactional-id",
        "eos-instance",
    ];
    let mut kills = 0;
    while !producing.is_finished() || kills < 3 {
        let mut child = start_pipeline(&broker, &topics, "eos-group", &pattern, &eos);
        std::thread::sleep(Duration::from_millis(300 + rng.below(1700)));
        if sigkill {
            child.kill().unwrap();
            child.wait().unwrap();
        } else {
            stop(child);
        }
        kills += 1;
    }
    producing.join().unwrap();
    eprintln!("killed {kills} times");
    let child = start_pipeline(&broker, &topics, "eos-group", &pattern, &eos);
    assert_exactly_once(
        &broker,
        &topics,
        "eos-group",
        child,
        &want,
        6,
        &format!("seed {seed}"),
    );
}

/// A pattern over the 1 s windows of the window test: two busy windows in a row.
const BUSY: &str = r#"{"name":"busy","within":"3s","stages":[{"name":"w","where":"n >= 3","times":2,"consecutive":true}]}"#;

/// What a pipeline with the window test's window stage (tumbling 1 s, `busy` over its results,
/// the login pattern over the events) outputs for `events` and the end events, computed by
/// [`cep_pipeline::window::PipelineEngine`] in the test, as `cep run` would.
fn expected_windowed(events: &[Value], end_ts: i64) -> Vec<Output> {
    let compiled =
        |text: &str| std::sync::Arc::new(compile(&PatternSpec::from_json(text).unwrap()).unwrap());
    let spec = cep_pipeline::parse(json!({
        "name": "windows",
        "key_by": "user",
        "time": {"field": "ts"},
        "watermark": {"out_of_orderness": format!("{OUT_OF_ORDERNESS_MS}ms"), "max_future": "off"},
        "window": {"type": "tumbling", "size": "1s", "patterns": ["busy"],
                   "aggregates": {"n": {"count": "*"}, "seqs": {"sum": "seq"},
                                  "last_type": {"last": "type"}}},
    }))
    .unwrap();
    let mut engine =
        cep_pipeline::window::PipelineEngine::new(&spec, vec![compiled(PATTERN), compiled(BUSY)])
            .unwrap();
    let mut out = Vec::new();
    for e in events {
        engine.push(e.clone(), &mut out).unwrap();
    }
    for p in 0..PARTITIONS {
        engine.push(end_event(p, end_ts), &mut out).unwrap();
    }
    out
}

/// A window stage in a Kafka pipeline: its windows are checkpointed to the changelog with the
/// partial matches, key by key. SIGKILLed at random while events flow and restarted, the
/// pipeline's outputs (matches over events and over window results, timeouts of both) are
/// exactly those of one uninterrupted run, each once.
#[test]
fn windows_in_a_kafka_pipeline_exactly_once_across_restarts() {
    let (broker, topics, dir, pattern) = setup("kwin");
    let busy = dir.path().join("busy.json");
    std::fs::write(&busy, BUSY).unwrap();
    let events = login_events(2500, 23);
    let end_ts = events.last().unwrap()["ts"].as_i64().unwrap() + 10_000;
    let want = expected_windowed(&events, end_ts);
    let busy_matches = want
        .iter()
        .filter(|o| o.kind == OutputKind::Match && o.pattern.as_deref() == Some("busy"))
        .count();
    let busy_timeouts = want
        .iter()
        .filter(|o| o.kind == OutputKind::Timeout && o.pattern.as_deref() == Some("busy"))
        .count();
    assert!(busy_matches > 10, "busy matches: {busy_matches}");
    assert!(busy_timeouts > 0, "busy timeouts: {busy_timeouts}");

    let (seed, mut rng) = crash_points();
    let mut args = exactly_once_args("kwin-instance");
    args.extend(
        [
            "--pattern",
            busy.to_str().unwrap(),
            "--window",
            "tumbling:1s",
            "--aggregate",
            "n=count:*",
            "--aggregate",
            "seqs=sum:seq",
            "--aggregate",
            "last_type=last:type",
            "--window-pattern",
            "busy",
        ]
        .map(String::from),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut child = start_pipeline(&broker, &topics, "kwin-group", &pattern, &args);
    let producing = produce_slowly(&broker, &topics, events, end_ts, Duration::from_millis(60));
    let mut kills = 0;
    while !producing.is_finished() || kills < 3 {
        std::thread::sleep(Duration::from_millis(400 + rng.below(1600)));
        child.kill().unwrap();
        child.wait().unwrap();
        kills += 1;
        child = start_pipeline(&broker, &topics, "kwin-group", &pattern, &args);
    }
    producing.join().unwrap();
    eprintln!("killed {kills} times");
    assert_exactly_once(
        &broker,
        &topics,
        "kwin-group",
        child,
        &want,
        4,
        &format!("seed {seed}"),
    );
}

/// Scale-out: a second process joins the group mid-stream (the partitions are split between the
/// two, each partition's state restored from the changelog by its new owner) and later leaves
/// (its partitions, with their state, go back to the first). The outputs are exactly those of one
/// uninterrupted run.
#[test]
fn a_second_process_joins_and_leaves() {
    let (broker, topics, dir, pattern) = setup("scale");

    let (events, end_ts, want) = stream(4000, 23);
    let args = |id: &str| {
        let mut args = exactly_once_args(&format!("scale-{id}"));
        if id == "b" {
            // B leaves for good: as a dynamic member it hands its partitions back at once (a
            // static member keeps them until its session times out).
            args.push("--dynamic-membership".into());
        }
        args
    };
    let a_args = args("a");
    let a_args: Vec<&str> = a_args.iter().map(String::as_str).collect();
    let b_args = args("b");
    let b_args: Vec<&str> = b_args.iter().map(String::as_str).collect();

    let a = start_pipeline(&broker, &topics, "scale-group", &pattern, &a_args);
    std::thread::sleep(Duration::from_secs(2));
    // About 12 s of stream: B joins after about a sixth and leaves about 3 s after it got its
    // partitions.
    let producing = produce_slowly(&broker, &topics, events, end_ts, Duration::from_millis(120));
    std::thread::sleep(Duration::from_secs(2));
    let b_log = std::env::var("CEP_TEST_B_LOG")
        .map(PathBuf::from)
        .unwrap_or_else(|_| dir.path().join("b.log"));
    let b = start_logged_pipeline(&broker, &topics, "scale-group", &pattern, &b_args, &b_log);
    // B takes partitions over (and reads their state from the changelog).
    wait_for_log(&b_log, "assigned [(", 1, Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        !producing.is_finished(),
        "the stream ended before B left; slow it down"
    );
    stop(b);
    producing.join().unwrap();
    assert_exactly_once(
        &broker,
        &topics,
        "scale-group",
        a,
        &want,
        6,
        "join and leave",
    );
}

/// Lines of a pipeline's log that say it started over on a whole assignment (aborted its epoch,
/// rebuilt its engine from the changelog).
fn whole_restores(log: &Path) -> Vec<String> {
    log_lines(log, "assigned [(")
        .into_iter()
        .filter(|l| l.contains("restored"))
        .collect()
}

fn log_lines(log: &Path, what: &str) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(what))
        .map(str::to_string)
        .collect()
}

fn wait_for_log(log: &Path, what: &str, n: usize, within: Duration) {
    let start = Instant::now();
    while log_lines(log, what).len() < n {
        assert!(
            start.elapsed() < within,
            "no '{what}' (x{n}) in {} within {within:?}:\n{}",
            log.display(),
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A third process joins a group of two while events flow (each with its own identity, static
/// membership, nothing but the bootstrap servers as Kafka configuration): the group rebalances,
/// each process restores the partitions it holds from the changelog, and the outputs are those
/// of one uninterrupted run, each once.
#[test]
fn a_third_process_joins_a_group_of_two() {
    let (broker, topics, dir, pattern) = setup("join3");
    let (events, end_ts, want) = stream(4000, 31);
    let start = |id: &str| {
        let a = exactly_once_args(&format!("join3-{id}"));
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        // CEP_TEST_LOG_DIR keeps the logs after the test.
        let log = std::env::var("CEP_TEST_LOG_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|_| dir.path().to_path_buf())
            .join(format!("{id}.log"));
        let child = start_logged_pipeline(&broker, &topics, "join3-group", &pattern, &a, &log);
        (child, log)
    };
    let (a, a_log) = start("a");
    wait_for_log(&a_log, "assigned [(", 1, Duration::from_secs(30));
    let (b, b_log) = start("b");
    // B joins: the group rebalances, B restores its partitions.
    wait_for_log(&b_log, "assigned [(", 1, Duration::from_secs(30));

    let producing = produce_slowly(&broker, &topics, events, end_ts, Duration::from_millis(120));
    std::thread::sleep(Duration::from_secs(3));
    let (c, c_log) = start("c");
    wait_for_log(&c_log, "assigned [(", 1, Duration::from_secs(30));
    assert!(
        !producing.is_finished(),
        "the stream ended before C joined; slow it down"
    );
    producing.join().unwrap();
    assert_exactly_once(
        &broker,
        &topics,
        "join3-group",
        a,
        &want,
        6,
        "a third process joins",
    );
    stop(b);
    stop(c);
    // After C's join the four partitions are split among the three processes.
    let held = |log: &Path| -> usize {
        let last = whole_restores(log).pop().unwrap_or_default();
        let assigned = last
            .split(": restored")
            .next()
            .unwrap_or_default()
            .to_string();
        assigned.matches("(\"join3-logins\", ").count()
    };
    let split = [held(&a_log), held(&b_log), held(&c_log)];
    assert_eq!(split.iter().sum::<usize>(), 4, "{split:?}");
    assert!(split.iter().all(|&n| n >= 1), "{split:?}");
}

/// The crash test with several processes: two processes of one group, each with its own
/// identity and nothing but the bootstrap servers as Kafka configuration, are killed with
/// SIGKILL at random moments and restarted at once; the outputs are exactly those of one
/// uninterrupted run.
#[test]
fn exactly_once_with_two_processes_killed_at_random() {
    let (broker, topics, _dir, pattern) = setup("eos2");
    let (events, end_ts, want) = stream(4000, 13);
    let (seed, mut rng) = crash_points();
    let start = |id: usize| {
        let a = exactly_once_args(&format!("eos2-{id}"));
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        start_pipeline(&broker, &topics, "eos2-group", &pattern, &a)
    };
    let mut children = vec![start(0), start(1)];
    std::thread::sleep(Duration::from_secs(2));
    let producing = produce_slowly(&broker, &topics, events, end_ts, Duration::from_millis(60));
    let mut kills = 0;
    while !producing.is_finished() || kills < 4 {
        std::thread::sleep(Duration::from_millis(300 + rng.below(1700)));
        let victim = rng.below(2) as usize;
        children[victim].kill().unwrap();
        children[victim].wait().unwrap();
        children[victim] = start(victim);
        kills += 1;
    }
    producing.join().unwrap();
    eprintln!("killed {kills} times");
    let last = children.pop().unwrap();
    assert_exactly_once(
        &broker,
        &topics,
        "eos2-group",
        children.pop().unwrap(),
        &want,
        6,
        &format!("two processes, seed {seed}"),
    );
    stop(last);
}

/// `cep serve` registers the pattern files and creates the `[[pipeline]]` pipelines of its
/// configuration file (the same spec as the REST API takes), and commits their last epoch when it
/// stops.
#[test]
fn serve_runs_kafka_pipelines_from_its_configuration() {
    let (broker, topics, dir, pattern) = setup("serve");
    let config = dir.path().join("cep.toml");
    std::fs::write(
        &config,
        format!(
            r#"listen = "127.0.0.1:0"
data_dir = {data:?}
default_pipeline = false
log = "warn"
pattern_files = [{pattern:?}]

[[pipeline]]
name = "logins"
key_by = "user"
time = {{ field = "ts" }}
watermark = {{ out_of_orderness = "{OUT_OF_ORDERNESS_MS}ms" }}
source = {{ type = "kafka", bootstrap = {bootstrap:?}, group = "serve-group", topics = [{input:?}], commit_interval = "200ms" }}
sinks = [{{ type = "kafka", matches_topic = {matches:?}, timeouts_topic = {timeouts:?}, dead_letter_topic = {dlq:?}, guarantee = "exactly_once", transactional_id = "serve-1" }}]
"#,
            data = dir.path().join("data").to_str().unwrap(),
            bootstrap = broker.bootstrap,
            input = topics.input,
            pattern = pattern.to_str().unwrap(),
            matches = topics.matches,
            timeouts = topics.timeouts,
            dlq = topics.dlq,
        ),
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_cep"))
        .args(["serve", "--config"])
        .arg(&config)
        .env(
            "RUST_LOG",
            std::env::var("CEP_TEST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .spawn()
        .expect("start cep serve");
    let (events, end_ts, want) = stream(1000, 5);
    let producing = produce_slowly(&broker, &topics, events, end_ts, Duration::from_millis(10));
    producing.join().unwrap();
    assert_exactly_once(
        &broker,
        &topics,
        "serve-group",
        child,
        &want,
        1,
        "cep serve",
    );
}

/// A free port on 127.0.0.1 (free when asked; the service binds it right after).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `cep serve` process, killed if a failing test leaves it running.
struct Served(Option<Child>);

impl Served {
    fn child(mut self) -> Child {
        self.0.take().unwrap()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Starts `cep serve` on `port` with `data` as its data directory and waits until it answers.
fn start_serve(port: u16, data: &Path) -> Served {
    let child = Command::new(env!("CARGO_BIN_EXE_cep"))
        .args(["serve", "--default-pipeline", "false", "--log"])
        .arg(std::env::var("CEP_TEST_LOG").unwrap_or_else(|_| "warn".into()))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(data)
        .env_remove("CEP_AUTH_TOKEN")
        .env_remove("CEP_CONFIG")
        .spawn()
        .expect("start cep serve");
    let child = Served(Some(child));
    let start = Instant::now();
    while http("GET", port, "/healthz", None).0 != 200 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "cep serve did not answer"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    child
}

/// One request to the service on `port`: the status and the body (JSON, or the text as a
/// string; status 0 when the service does not answer).
fn http(method: &str, port: u16, path: &str, body: Option<&Value>) -> (u16, Value) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = reqwest::Client::new();
        let url = format!("http://127.0.0.1:{port}{path}");
        let mut req = client.request(method.parse().unwrap(), url);
        if let Some(b) = body {
            req = req.json(b);
        }
        match req.timeout(Duration::from_secs(30)).send().await {
            Ok(r) => {
                let status = r.status().as_u16();
                let text = r.text().await.unwrap_or_default();
                let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
                (status, value)
            }
            Err(_) => (0, Value::Null),
        }
    })
}

/// Produces `events` to the input topic and waits for their acknowledgement.
fn produce(broker: &Broker, topics: &Topics, events: &[Value]) {
    let producer = broker.producer();
    for e in events {
        send(
            &producer,
            &topics.input,
            e["user"].as_str().unwrap(),
            &e.to_string(),
            None,
        );
    }
    producer.flush(Duration::from_secs(30)).unwrap();
}

/// The issue's goal for the pipeline layer: a Kafka-in, Kafka-out pipeline created with one
/// request to `cep serve` computes exactly what `cep run` computes over the same events, is
/// listed with its partitions and counted in /metrics, keeps its outputs in the recent buffer,
/// and survives a restart of the service (spec stored, state restored from the changelog).
#[test]
fn a_kafka_pipeline_created_through_the_api() {
    let (broker, topics, dir, pattern) = setup("rest");
    let (events, end_ts, want) = stream(1000, 7);

    // What `cep run` computes for the same events (the end events included).
    let input = dir.path().join("events.jsonl");
    let mut lines: Vec<String> = events.iter().map(Value::to_string).collect();
    lines.extend((0..PARTITIONS).map(|p| end_event(p, end_ts).to_string()));
    std::fs::write(&input, lines.join("\n")).unwrap();
    let run = Command::new(env!("CARGO_BIN_EXE_cep"))
        .args(["run", "--key-by", "user", "--time-field", "ts"])
        .args(["--out-of-orderness", &format!("{OUT_OF_ORDERNESS_MS}ms")])
        .arg("--pattern")
        .arg(&pattern)
        .arg("--input")
        .arg(&input)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let by_run: Vec<Output> = String::from_utf8(run.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // `cep run` goes on to the end of event time (the pipeline only as far as the end events):
    // the same matches, and every timeout of the pipeline.
    assert_eq!(
        of_kind(&by_run, OutputKind::Match),
        of_kind(&want, OutputKind::Match),
        "cep run and the engine agree"
    );
    let run_timeouts = of_kind(&by_run, OutputKind::Timeout);
    for t in of_kind(&want, OutputKind::Timeout) {
        assert!(run_timeouts.contains(&t), "cep run lacks {t}");
    }

    let port = free_port();
    let data = dir.path().join("data");
    let service = start_serve(port, &data);
    let (status, body) = http(
        "POST",
        port,
        "/api/v1/patterns",
        Some(&serde_json::from_str(PATTERN).unwrap()),
    );
    assert_eq!(status, 201, "{body}");
    let spec = json!({
        "name": "logins",
        "source": {"type": "kafka", "bootstrap": broker.bootstrap, "topics": [topics.input],
                   "group": "rest-group", "commit_interval": "200ms"},
        "key_by": "user",
        "time": {"field": "ts"},
        "watermark": {"out_of_orderness": format!("{OUT_OF_ORDERNESS_MS}ms")},
        "sinks": [
            {"type": "kafka", "matches_topic": topics.matches, "timeouts_topic": topics.timeouts,
             "dead_letter_topic": topics.dlq, "guarantee": "exactly_once", "transactional_id": "rest-1"},
            {"type": "recent"}
        ]
    });
    // A bad spec is refused with the path of its field.
    let mut bad = spec.clone();
    bad["sinks"][0]["guarantee"] = json!("twice");
    let (status, body) = http("POST", port, "/api/v1/pipelines", Some(&bad));
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"]["details"][0]["path"]
            .as_str()
            .is_some_and(|p| p.starts_with("sinks[0]")),
        "{body}"
    );
    let (status, body) = http("POST", port, "/api/v1/pipelines", Some(&spec));
    assert_eq!(status, 201, "{body}");

    // The first half, then the service restarts.
    let half = events.len() / 2;
    produce(&broker, &topics, &events[..half]);
    let start = Instant::now();
    loop {
        let (_, view) = http("GET", port, "/api/v1/pipelines/logins", None);
        let kafka = &view["status"]["kafka"];
        if kafka["records"].as_u64().unwrap_or(0) >= half as u64
            && kafka["epochs"].as_u64() > Some(0)
        {
            assert_eq!(kafka["state"], "running", "{view}");
            assert_eq!(kafka["instance_id"], "rest-1", "{view}");
            assert_eq!(
                kafka["partitions"].as_array().unwrap().len(),
                PARTITIONS as usize,
                "{view}"
            );
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the pipeline did not read the first half: {view}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let (_, list) = http("GET", port, "/api/v1/pipelines", None);
    assert!(
        list["pipelines"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "logins"),
        "{list}"
    );
    // The lag is known once the partitions' ends were read (every 2 s at most).
    let start = Instant::now();
    let metrics = loop {
        let (_, metrics) = http("GET", port, "/metrics", None);
        let metrics = metrics.as_str().unwrap_or_default().to_string();
        if metrics.contains("cep_kafka_partition_lag{") || start.elapsed() > Duration::from_secs(30)
        {
            break metrics;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        metrics.contains("cep_kafka_partition_lag{pipeline=\"logins\""),
        "{metrics}"
    );
    assert!(
        metrics.contains("cep_kafka_partition_committed_offset{pipeline=\"logins\""),
        "{metrics}"
    );
    assert!(metrics.contains("pipeline=\"logins\""), "{metrics}");
    // A Kafka pipeline takes no HTTP events.
    let (status, _) = http(
        "POST",
        port,
        "/api/v1/pipelines/logins/events",
        Some(&json!([events[0]])),
    );
    assert_eq!(status, 409);
    stop(service.child());

    let service = start_serve(port, &data);
    let (status, view) = http("GET", port, "/api/v1/pipelines/logins", None);
    assert_eq!(status, 200, "the pipeline was stored: {view}");
    produce(&broker, &topics, &events[half..]);
    let end: Vec<Value> = (0..PARTITIONS).map(|p| end_event(p, end_ts)).collect();
    let producer = broker.producer();
    for (p, e) in end.iter().enumerate() {
        send(
            &producer,
            &topics.input,
            "end",
            &e.to_string(),
            Some(p as i32),
        );
    }
    producer.flush(Duration::from_secs(30)).unwrap();
    wait_committed(
        &broker,
        "rest-group",
        &topics.input,
        Duration::from_secs(120),
    );

    // The recent buffer holds the committed matches, each once, across the restart.
    let (_, recent) = http(
        "GET",
        port,
        "/api/v1/pipelines/logins/matches?kind=match&limit=10000",
        None,
    );
    let mut got: Vec<String> = recent["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            let mut o = o.clone();
            let o = o.as_object_mut().unwrap();
            o.remove("seq");
            o.remove("pipeline");
            o.remove("version");
            serde_json::to_string(
                &serde_json::from_value::<Output>(Value::Object(o.clone())).unwrap(),
            )
            .unwrap()
        })
        .collect();
    got.sort();
    assert_same(got, &of_kind(&want, OutputKind::Match), "recent matches");
    assert_exactly_once(
        &broker,
        &topics,
        "rest-group",
        service.child(),
        &want,
        0,
        "REST pipeline",
    );
}

/// The RocksDB state backend with room for two keys in memory: most keys live in RocksDB between
/// their events and due timeouts, and are loaded back when needed; a restart in the middle
/// rebuilds the store from the changelog. The outputs are exactly those of one in-memory run.
#[test]
fn rocksdb_state_backend_with_two_keys_in_memory() {
    let (broker, topics, dir, pattern) = setup("spill");
    let data = dir.path().join("state");
    let args = [
        "--guarantee",
        "exactly-once",
        "--transactional-id",
        "spill-1",
        "--state-backend",
        "rocksdb",
        "--data-dir",
        data.to_str().unwrap(),
        "--max-keys-in-memory",
        "2",
        "-X",
        "group.instance.id=spill-1",
    ];
    let (events, end_ts, want) = stream(2000, 31);
    let first_log = dir.path().join("first.log");
    let first = start_logged_pipeline(&broker, &topics, "spill-group", &pattern, &args, &first_log);
    let producing = produce_slowly(&broker, &topics, events, end_ts, Duration::from_millis(60));
    std::thread::sleep(Duration::from_secs(2));
    stop(first);
    let second_log = dir.path().join("second.log");
    let second = start_logged_pipeline(
        &broker,
        &topics,
        "spill-group",
        &pattern,
        &args,
        &second_log,
    );
    producing.join().unwrap();
    assert_exactly_once(
        &broker,
        &topics,
        "spill-group",
        second,
        &want,
        3,
        "rocksdb backend",
    );
    // Keys did move between memory and RocksDB, in both runs.
    for log in [&first_log, &second_log] {
        let text = std::fs::read_to_string(log).unwrap();
        let counter = |name: &str| -> u64 {
            let line = text
                .lines()
                .find(|l| l.contains("stopped: Counters"))
                .unwrap_or("");
            line.split(&format!("{name}: "))
                .nth(1)
                .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("no {name} counter in {}:\n{text}", log.display()))
        };
        assert!(
            counter("evicted") > 0,
            "nothing evicted in {}",
            log.display()
        );
        assert!(counter("loaded") > 0, "nothing loaded in {}", log.display());
    }
    assert!(data.join("keyed-state").exists());
}

/// The environment of a pipeline run in the test as `cep serve` runs it (its data under `dir`),
/// on a manual clock starting at `start`.
fn manual_clock_env(
    dir: &Path,
    start: i64,
) -> (
    std::sync::Arc<cep_pipeline::ManualClock>,
    cep_pipeline::running::Environment,
) {
    let clock = std::sync::Arc::new(cep_pipeline::ManualClock::new(start));
    let env = cep_pipeline::running::Environment {
        clock: clock.clone() as std::sync::Arc<dyn cep_pipeline::Clock>,
        ..cep_pipeline::running::Environment::in_memory(1000, dir.join("data"))
    };
    (clock, env)
}

/// A Kafka pipeline in processing time (`"time": {"mode": "processing"}`), as `cep serve` runs
/// it, on a manual clock: records are taken in arrival order at the clock's time (their own
/// `ts` is not read), `within` counts wall-clock time, and matches and timeouts fire when the
/// clock passes them. The broker is real; the clock, not sleeps, moves time.
#[test]
fn a_kafka_pipeline_in_processing_time() {
    use cep_pipeline::running::{OutputFilter, Pipeline, PipelineRecord};
    use std::sync::Arc;

    const T: i64 = 1_767_258_000_000;
    let (broker, topics, dir, _) = setup("ptime");
    let (clock, env) = manual_clock_env(dir.path(), T);
    let compiled =
        |v: Value| Arc::new(compile(&PatternSpec::from_json(&v.to_string()).unwrap()).unwrap());
    let patterns = vec![
        compiled(serde_json::from_str(PATTERN).unwrap()),
        compiled(json!({"name": "paid", "within": "5s", "stages": [
            {"name": "created", "where": "type == 'created'"},
            {"name": "paid", "where": "type == 'paid'", "contiguity": "followed_by"}]})),
    ];
    let spec = cep_pipeline::parse(json!({
        "name": "ptime",
        "source": {"type": "kafka", "bootstrap": broker.bootstrap, "topics": [topics.input],
                   "group": "ptime-group", "commit_interval": "200ms"},
        "key_by": "user",
        "time": {"mode": "processing"},
        "sinks": [{"type": "kafka", "matches_topic": topics.matches,
                   "timeouts_topic": topics.timeouts}, {"type": "recent"}]
    }))
    .unwrap();
    let pipeline = Pipeline::start(
        PipelineRecord {
            spec,
            paused: false,
        },
        patterns,
        &env,
    )
    .unwrap();
    let records = || {
        pipeline.kafka_status().unwrap()["records"]
            .as_u64()
            .unwrap_or(0)
    };
    let wait_for = |what: &str, done: &dyn Fn() -> bool| {
        let until = Instant::now() + Duration::from_secs(60);
        while !done() {
            assert!(
                Instant::now() < until,
                "{what}: {:?}",
                pipeline.kafka_status()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    // `kind pattern key ms-after-T`, in the order of the output log.
    let outputs = || -> Vec<String> {
        pipeline
            .recent(&OutputFilter::default(), 100)
            .outputs
            .iter()
            .map(|o| {
                format!(
                    "{} {} {} +{}",
                    o["kind"].as_str().unwrap(),
                    o["pattern"].as_str().unwrap(),
                    o["key"].as_str().unwrap(),
                    o["timestamp"].as_i64().unwrap() - T
                )
            })
            .collect()
    };
    // The event times are nonsense on purpose: processing time does not read them.
    let ev = |user: &str, ty: &str| json!({"user": user, "type": ty, "ts": 5});

    // At T: three failures of `a`, an order `b` created, a failure of `c`.
    produce(
        &broker,
        &topics,
        &[
            ev("a", "fail"),
            ev("a", "fail"),
            ev("a", "fail"),
            ev("b", "created"),
            ev("c", "fail"),
        ],
    );
    wait_for("5 records taken", &|| records() >= 5);
    // Records taken in the same millisecond as the watermark are stamped 1 ms after it: `a`'s
    // third failure waits for the clock to move that millisecond.
    assert!(
        !outputs().iter().any(|o| o.starts_with("match")),
        "{:?}",
        outputs()
    );
    clock.advance(1);
    wait_for("a's match", &|| !outputs().is_empty());
    assert_eq!(outputs(), ["match login-failures a +1"]);

    // 3 s later `c` fails twice more: 2 s after its first failure has passed, no match; that
    // first run timed out 2 s after it started (at T or T + 1).
    clock.advance(2_999);
    produce(&broker, &topics, &[ev("c", "fail"), ev("c", "fail")]);
    wait_for("7 records and c's first timeout", &|| {
        records() >= 7 && outputs().len() >= 2
    });
    let first = outputs();
    assert_eq!(first.len(), 2, "{first:?}");
    assert!(
        first[1] == "timeout login-failures c +2000"
            || first[1] == "timeout login-failures c +2001",
        "{first:?}"
    );
    // `b` was not paid within 5 s of wall-clock time, and `c`'s runs from its second and third
    // failures (at +3000 or +3001) last 2 s: all time out when the clock passes +5001.
    clock.advance(2_002);
    wait_for("b's and c's timeouts", &|| outputs().len() >= 5);
    let all = outputs();
    assert_eq!(all.len(), 5, "{all:?}");
    let mut last = all[2..].to_vec();
    last.sort();
    assert!(
        last[0].starts_with("timeout login-failures c +500")
            && last[1].starts_with("timeout login-failures c +500"),
        "{all:?}"
    );
    assert!(last[2].starts_with("timeout paid b +500"), "{all:?}");
    pipeline.stop();
}

/// State bounds in a Kafka pipeline: a key idle for longer than `state.key_ttl` is dropped
/// without a timeout, counted, and deleted from the changelog, so that a restart does not bring
/// it back; a key within its TTL keeps its partial match across the restart.
#[test]
fn key_ttl_in_a_kafka_pipeline_survives_a_restart() {
    use cep_pipeline::running::{Environment, OutputFilter, Pipeline, PipelineRecord};
    use std::sync::Arc;

    const T: i64 = 1_767_258_000_000;
    let (broker, topics, dir, _) = setup("ttl");
    let env = Environment::in_memory(1000, dir.path().join("data"));
    let paid = Arc::new(
        compile(
            &PatternSpec::from_json(
                &json!({"name": "paid", "stages": [
                    {"name": "created", "where": "type == 'created'"},
                    {"name": "paid", "where": "type == 'paid'", "contiguity": "followed_by"}]})
                .to_string(),
            )
            .unwrap(),
        )
        .unwrap(),
    );
    let spec = cep_pipeline::parse(json!({
        "name": "ttl",
        "source": {"type": "kafka", "bootstrap": broker.bootstrap, "topics": [topics.input],
                   "group": "ttl-group", "commit_interval": "200ms"},
        "key_by": "user",
        "state": {"key_ttl": "5s"},
        "sinks": [{"type": "kafka", "matches_topic": topics.matches}, {"type": "recent"}]
    }))
    .unwrap();
    let start = || {
        Pipeline::start(
            PipelineRecord {
                spec: spec.clone(),
                paused: false,
            },
            vec![paid.clone()],
            &env,
        )
        .unwrap()
    };
    let ev = |user: &str, ty: &str, ts: i64| json!({"user": user, "type": ty, "ts": ts});
    // Events of 64 other users at `ts`: every partition has a record, so the watermark moves.
    let fillers =
        |ts: i64| -> Vec<Value> { (0..64).map(|i| ev(&format!("f{i}"), "noise", ts)).collect() };
    let status = |p: &Pipeline| p.kafka_status().unwrap();
    let wait_for = |p: &Pipeline, what: &str, done: &dyn Fn(&Value) -> bool| {
        let until = Instant::now() + Duration::from_secs(60);
        while !done(&status(p)) {
            assert!(Instant::now() < until, "{what}: {}", status(p));
            std::thread::sleep(Duration::from_millis(50));
        }
    };

    let all_committed = |s: &Value| {
        s["partitions"].as_array().is_some_and(|parts| {
            parts.len() == 4
                && parts
                    .iter()
                    .all(|p| p["end"].as_i64().is_some() && p["committed"] == p["end"])
        })
    };
    let first = start();
    let mut events = vec![ev("o1", "created", T)];
    events.extend(fillers(T + 1_000));
    events.push(ev("o2", "created", T + 10_000));
    events.extend(fillers(T + 10_000));
    produce(&broker, &topics, &events);
    // o1's latest event is 10 s behind the watermark: dropped, without a timeout.
    wait_for(&first, "o1 expired", &|s| {
        s["records"].as_u64() >= Some(130) && first.stats()["expired_keys"].as_u64() == Some(1)
    });
    // The expiry came with the watermark of the last records: committed with them.
    wait_for(&first, "every record committed", &all_committed);
    first.stop();
    drop(first);

    // The restarted pipeline restores o2's partial match, not o1's.
    let second = start();
    let mut events = vec![ev("o1", "paid", T + 10_100), ev("o2", "paid", T + 10_100)];
    events.extend(fillers(T + 20_000));
    produce(&broker, &topics, &events);
    let outputs = || -> Vec<String> {
        second
            .recent(&OutputFilter::default(), 100)
            .outputs
            .iter()
            .map(|o| {
                format!(
                    "{} {} {}",
                    o["kind"].as_str().unwrap(),
                    o["pattern"].as_str().unwrap(),
                    o["key"].as_str().unwrap()
                )
            })
            .collect()
    };
    wait_for(&second, "the second run's records", &|s| {
        s["records"].as_u64() >= Some(66)
    });
    let until = Instant::now() + Duration::from_secs(30);
    while outputs().is_empty() {
        assert!(Instant::now() < until, "no output: {}", status(&second));
        std::thread::sleep(Duration::from_millis(50));
    }
    // Every record of the second run committed, with its outputs: nothing more comes.
    wait_for(&second, "every record committed", &|s| {
        s["records"].as_u64() >= Some(66) && all_committed(s)
    });
    assert_eq!(outputs(), ["match paid o2"]);
    second.stop();
}

/// Replacing a pattern of a Kafka pipeline in the service: with `drain`, the old version's
/// partial match runs on to its match, labelled with its version, beside the new version, and
/// across a restart of the pipeline (the changelog holds both versions' state, the markers the
/// versions); it goes once it holds nothing. With `restart`, the partial matches of the replaced
/// version are dropped. Processing time, with a manual clock.
#[test]
fn pattern_replacement_in_a_kafka_pipeline_drains_across_a_restart() {
    use cep_patterns::Replace;
    use cep_pipeline::running::{OutputFilter, Pipeline, PipelineRecord};
    use std::sync::Arc;

    const T: i64 = 1_767_258_000_000;
    let (broker, topics, dir, _) = setup("drain");
    let (clock, env) = manual_clock_env(dir.path(), T);
    let fails = |times: u32, within: &str, version: u64| {
        let spec = json!({"name": "fails", "within": within, "stages": [
            {"name": "f", "where": "type == 'fail'", "times": times, "consecutive": true}]});
        Arc::new(
            compile(&PatternSpec::from_json(&spec.to_string()).unwrap())
                .unwrap()
                .with_version(version),
        )
    };
    let spec = cep_pipeline::parse(json!({
        "name": "drain",
        "source": {"type": "kafka", "bootstrap": broker.bootstrap, "topics": [topics.input],
                   "group": "drain-group", "commit_interval": "200ms"},
        "key_by": "user",
        "time": {"mode": "processing"},
        "sinks": [{"type": "kafka", "matches_topic": topics.matches}, {"type": "recent"}]
    }))
    .unwrap();
    let start = |patterns| {
        Pipeline::start(
            PipelineRecord {
                spec: spec.clone(),
                paused: false,
            },
            patterns,
            &env,
        )
        .unwrap()
    };
    // The status, with the engine's statistics (reported with each epoch, and every 2 s).
    let status = |p: &Pipeline| {
        let mut s = p.kafka_status().unwrap();
        s["stats"] = p.stats();
        s
    };
    let wait_for = |p: &Pipeline, what: &str, done: &dyn Fn(&Value) -> bool| {
        let until = Instant::now() + Duration::from_secs(60);
        while !done(&status(p)) {
            assert!(Instant::now() < until, "{what}: {}", status(p));
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    // `pattern vVERSION key [n of each event]`, in the order of the output log.
    let outputs = |p: &Pipeline| -> Vec<String> {
        p.recent(&OutputFilter::default(), 100)
            .outputs
            .iter()
            .map(|o| {
                let ns: Vec<String> = o["events"]["f"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|e| e["n"].to_string())
                    .collect();
                format!(
                    "{} v{} {} [{}]",
                    o["pattern"].as_str().unwrap(),
                    o["version"],
                    o["key"].as_str().unwrap(),
                    ns.join(",")
                )
            })
            .collect()
    };
    let wait_outputs = |p: &Pipeline, n: usize| {
        let until = Instant::now() + Duration::from_secs(30);
        while outputs(p).len() < n {
            assert!(Instant::now() < until, "{n} outputs: {}", status(p));
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let versions = |s: &Value| -> Vec<String> {
        s["stats"]["patterns"]
            .as_array()
            .map(|ps| {
                ps.iter()
                    .map(|p| {
                        let draining = p["draining"].as_bool().unwrap_or(false);
                        format!("v{} draining={draining}", p["version"])
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let ev = |user: &str, n: u32| json!({"user": user, "type": "fail", "n": n, "ts": 1});

    // Version 1 (three failures): `a` fails twice and holds two partial matches (from each).
    let first = start(vec![fails(3, "10s", 1)]);
    produce(&broker, &topics, &[ev("a", 1), ev("a", 2)]);
    wait_for(&first, "2 records", &|s| s["records"].as_u64() >= Some(2));
    clock.advance(1);
    wait_for(&first, "a's partial matches", &|s| {
        s["stats"]["partial_matches"].as_u64() == Some(2)
    });
    // Version 2 (two failures) drains version 1.
    first
        .set_patterns(vec![fails(2, "10s", 2)], Replace::Drain)
        .unwrap();
    wait_for(&first, "both versions", &|s| {
        versions(s) == ["v2 draining=false", "v1 draining=true"]
    });
    first.stop();
    drop(first);

    // Restarted: both versions come back from the changelog, with a's partial matches.
    let second = start(vec![fails(2, "10s", 2)]);
    wait_for(&second, "restored", &|s| {
        s["state"] == "running"
            && versions(s) == ["v2 draining=false", "v1 draining=true"]
            && s["stats"]["partial_matches"].as_u64() == Some(2)
    });
    produce(&broker, &topics, &[ev("a", 3)]);
    wait_for(&second, "1 record", &|s| s["records"].as_u64() >= Some(1));
    clock.advance(1);
    // Version 1's partial match from the first failure completes; version 2 starts from the
    // third failure only.
    wait_outputs(&second, 1);
    produce(&broker, &topics, &[ev("a", 4)]);
    wait_for(&second, "2 records", &|s| s["records"].as_u64() >= Some(2));
    clock.advance(1);
    wait_for(&second, "version 1 retired", &|s| {
        versions(s) == ["v2 draining=false"]
    });
    wait_outputs(&second, 3);
    // The fourth failure completes version 2's match and version 1's from the second failure,
    // its last partial match: version 1 holds nothing and goes.
    assert_eq!(
        outputs(&second),
        [
            "fails v1 a [1,2,3]",
            "fails v2 a [3,4]",
            "fails v1 a [2,3,4]"
        ]
    );

    // `b` holds a partial match of version 2 (as does `a`, from its last failure); version 3
    // restarts them: b's first failure is gone.
    produce(&broker, &topics, &[ev("b", 1)]);
    wait_for(&second, "3 records", &|s| s["records"].as_u64() >= Some(3));
    clock.advance(1);
    wait_for(&second, "b's partial match", &|s| {
        s["stats"]["partial_matches"].as_u64() == Some(2)
    });
    second
        .set_patterns(vec![fails(2, "20s", 3)], Replace::Restart)
        .unwrap();
    wait_for(&second, "version 3 alone", &|s| {
        versions(s) == ["v3 draining=false"] && s["stats"]["partial_matches"].as_u64() == Some(0)
    });
    produce(&broker, &topics, &[ev("b", 2), ev("b", 3)]);
    wait_for(&second, "5 records", &|s| s["records"].as_u64() >= Some(5));
    clock.advance(1);
    wait_outputs(&second, 4);
    assert_eq!(
        outputs(&second),
        [
            "fails v1 a [1,2,3]",
            "fails v2 a [3,4]",
            "fails v1 a [2,3,4]",
            "fails v3 b [2,3]"
        ]
    );
    second.stop();
}
