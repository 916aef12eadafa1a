//! The demos of `examples/`: each runs on fixed input, so its exact output is checked here against
//! `tests/expected/NAME.txt`. Their JSON patterns (`examples/patterns/`) are run through
//! `JsonEngine` over the same events (`--events`) and must find the same alerts; the generator
//! must be deterministic, keep its out-of-orderness bound, and post NDJSON batches over HTTP.
//! The Kafka walkthrough (`scripts/demo-kafka.sh`) runs for real against a broker, and its alerts
//! must be exactly those `JsonEngine` finds in the same events.
//!
//! The example binaries are the ones cargo builds next to this test
//! (`target/<profile>/examples/NAME`), and so is the `cep` binary of the walkthrough
//! (`target/<profile>/cep`, or `CEP_BIN`); if they are missing, the test builds them.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, Once};

use cep_patterns::{compile, EngineConfig, JsonEngine, OutputKind, PatternSpec, TimeFormat};
use serde_json::Value;

fn examples_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/examples-HASH -> target/<profile>/examples
    exe.parent()
        .and_then(Path::parent)
        .expect("target/<profile>")
        .join("examples")
}

static BUILD: Once = Once::new();

fn example(name: &str) -> PathBuf {
    let path = examples_dir().join(name);
    let names = [
        "login_failure",
        "sensor_alarm",
        "order_timeout",
        "generator",
        "kafka_topic",
    ];
    if names.iter().any(|n| !examples_dir().join(n).exists()) {
        BUILD.call_once(|| {
            let profile_dir = examples_dir();
            let release = profile_dir
                .parent()
                .and_then(Path::file_name)
                .is_some_and(|p| p == "release");
            let mut cargo = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
            cargo
                .args(["build", "-q", "-p", "cep-suite", "--examples"])
                .current_dir(env!("CARGO_MANIFEST_DIR"));
            if release {
                cargo.arg("--release");
            }
            let status = cargo.status().expect("run cargo build --examples");
            assert!(status.success(), "cargo build --examples failed");
        });
    }
    assert!(path.exists(), "example binary {} not found", path.display());
    path
}

fn run(name: &str, args: &[&str]) -> String {
    let out = Command::new(example(name))
        .args(args)
        .output()
        .expect("run example");
    assert!(
        out.status.success(),
        "{name} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

fn expected(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/expected/{name}.txt"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn assert_same_output(name: &str) {
    let got = run(name, &[]);
    let want = expected(name);
    if got != want {
        let first = got
            .lines()
            .zip(want.lines())
            .position(|(g, w)| g != w)
            .unwrap_or(got.lines().count().min(want.lines().count()));
        panic!(
            "{name}: output differs from tests/expected/{name}.txt from line {}:\n--- got\n{got}\n--- expected\n{want}",
            first + 1
        );
    }
}

#[test]
fn login_failure_prints_the_expected_alerts() {
    assert_same_output("login_failure");
}

#[test]
fn sensor_alarm_prints_the_expected_alarms() {
    assert_same_output("sensor_alarm");
}

#[test]
fn order_timeout_prints_the_expected_outputs() {
    assert_same_output("order_timeout");
}

/// The alerts (not the lines that describe the arrival order) are the same whatever the arrival
/// order within the bound: event time, not arrival, decides.
#[test]
fn login_alerts_do_not_depend_on_the_arrival_order() {
    let alerts = |out: &str| -> Vec<String> {
        out.lines()
            .filter(|l| l.starts_with("ALERT") || l.starts_with("    "))
            .map(str::to_string)
            .collect()
    };
    let reference = alerts(&run("login_failure", &[]));
    assert_eq!(reference.len(), 7 * 4, "7 alerts of 3 events each");
    for seed in 1..=6 {
        let out = run("login_failure", &["--seed", &seed.to_string()]);
        assert_eq!(alerts(&out), reference, "seed {seed}");
        assert!(
            out.contains("7 alerts, 1 late event."),
            "seed {seed}: {out}"
        );
    }
}

fn pattern_files(dir: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/patterns")
        .join(dir);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    files
}

fn engine(dir: &str, key_by: &str, out_of_orderness_ms: i64) -> JsonEngine {
    let patterns = pattern_files(dir)
        .iter()
        .map(|f| {
            let text = std::fs::read_to_string(f).expect("pattern file");
            let spec =
                PatternSpec::from_json(&text).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            Arc::new(compile(&spec).unwrap_or_else(|e| panic!("{}: {e}", f.display())))
        })
        .collect();
    let config = EngineConfig {
        key_by: key_by.into(),
        time_field: "ts".into(),
        time_format: TimeFormat::EpochMs,
        out_of_orderness_ms,
    };
    JsonEngine::new(config, patterns).expect("engine")
}

/// 09:00:00 UTC on the demos' day, and a time of that day as `HH:MM:SS.mmm`.
const T0: i64 = 1_767_258_000_000;

fn clock(ms: i64) -> String {
    let d = (ms - T0) + 9 * 3_600_000;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        d / 3_600_000,
        d / 60_000 % 60,
        d / 1000 % 60,
        d % 1000
    )
}

/// Runs `events` (JSON lines) through `engine`; `end` also closes the input (watermark +inf).
/// Returns outputs as `kind pattern key time [event times]`.
fn evaluate(mut engine: JsonEngine, events: &str, end: bool) -> Vec<String> {
    let mut outs = Vec::new();
    for line in events.lines() {
        let v: Value = serde_json::from_str(line).expect("JSON line");
        engine.push(v, &mut outs).expect("event accepted");
    }
    if end {
        engine.advance_watermark(i64::MAX, &mut outs);
    }
    let mut lines: Vec<String> = outs
        .iter()
        .map(|o| {
            let kind = match o.kind {
                OutputKind::Match => "match",
                OutputKind::Timeout => "timeout",
                OutputKind::Late => "late",
            };
            let times: Vec<String> = o
                .events
                .iter()
                .flat_map(|m| m.iter())
                .flat_map(|(_, evs)| evs)
                .map(|e| clock(e.value()["ts"].as_i64().expect("ts")))
                .collect();
            format!(
                "{kind} {} {} {} [{}]",
                o.pattern.as_deref().unwrap_or("-"),
                o.key,
                clock(o.timestamp),
                times.join(" ")
            )
        })
        .collect();
    lines.sort();
    lines
}

#[test]
fn every_demo_pattern_compiles() {
    let n: usize = ["login", "sensor", "order"]
        .iter()
        .map(|d| engine(d, "key", 0).patterns().len())
        .sum();
    assert_eq!(n, 7);
}

#[test]
fn json_login_patterns_find_the_alerts_of_the_dsl() {
    let events = run("login_failure", &["--events"]);
    let got: Vec<String> = evaluate(engine("login", "user", 1000), &events, true)
        .into_iter()
        .filter(|l| !l.starts_with("timeout"))
        .collect();
    let want = [
        "late - bob 09:00:11.500 []",
        "match login-fails-3-ips erin 09:01:25.000 [09:00:40.000 09:00:55.000 09:01:25.000]",
        "match login-fails-3-ips frank 09:01:01.200 [09:01:00.000 09:01:00.700 09:01:01.200]",
        "match login-fails-relaxed bob 09:00:10.900 [09:00:10.000 09:00:10.400 09:00:10.900]",
        "match login-fails-relaxed carol 09:00:21.500 [09:00:20.000 09:00:20.900 09:00:21.500]",
        "match login-fails-relaxed frank 09:01:01.200 [09:01:00.000 09:01:00.700 09:01:01.200]",
        "match login-fails-strict bob 09:00:10.900 [09:00:10.000 09:00:10.400 09:00:10.900]",
        "match login-fails-strict frank 09:01:01.200 [09:01:00.000 09:01:00.700 09:01:01.200]",
    ];
    assert_eq!(got, want);
}

#[test]
fn json_sensor_patterns_find_the_alarms_of_the_dsl() {
    let events = run("sensor_alarm", &["--events"]);
    // As a live stream (the input is not closed), exactly the demo's alarms (a), (c) and (d).
    // (Timeouts, e.g. a rising run cut short by the silence of s3, are no alarms.)
    let got: Vec<String> = evaluate(engine("sensor", "sensor", 1000), &events, false)
        .into_iter()
        .filter(|l| !l.starts_with("timeout"))
        .collect();
    let want = [
        "match sensor-freezing s4 09:01:01.500 [09:01:01.500]",
        "match sensor-freezing s4 09:01:03.500 [09:01:03.500]",
        "match sensor-rising s1 09:00:46.000 [09:00:40.000 09:00:42.000 09:00:44.000 09:00:46.000]",
        "match sensor-silent s3 09:01:19.000 [09:00:49.000]",
    ];
    assert_eq!(got, want);
    // Closing the input ends every window: each sensor's last reading then counts as silent.
    let closed = evaluate(engine("sensor", "sensor", 1000), &events, true);
    let silent: Vec<&String> = closed.iter().filter(|l| l.contains("silent")).collect();
    assert_eq!(
        silent,
        [
            "match sensor-silent s1 09:02:28.000 [09:01:58.000]",
            "match sensor-silent s2 09:02:28.500 [09:01:58.500]",
            "match sensor-silent s3 09:01:19.000 [09:00:49.000]",
            "match sensor-silent s3 09:02:29.000 [09:01:59.000]",
            "match sensor-silent s4 09:02:29.500 [09:01:59.500]",
        ]
    );
}

#[test]
fn json_order_pattern_finds_the_outputs_of_the_dsl() {
    let events = run("order_timeout", &["--events"]);
    let got = evaluate(engine("order", "order", 5000), &events, false);
    let want = [
        "match order-paid o-1 09:05:30.000 [09:00:00.000 09:05:30.000]",
        "match order-paid o-2 09:14:00.000 [09:02:00.000 09:14:00.000]",
        "match order-paid o-6 09:31:00.000 [09:25:00.000 09:31:00.000]",
        "match order-paid o-8 09:37:00.000 [09:36:00.000 09:37:00.000]",
        "timeout order-paid o-3 09:23:00.000 [09:08:00.000]",
        "timeout order-paid o-4 09:27:00.000 [09:12:00.000]",
        "timeout order-paid o-5 09:35:00.000 [09:20:00.000]",
        "timeout order-paid o-7 09:43:00.000 [09:28:00.000]",
    ];
    assert_eq!(got, want);
}

/// Same seed, same traffic; the requested count; never `bound` ms or more behind a later event;
/// and the demo patterns find incidents in it, with no late event at that bound.
#[test]
fn generator_is_deterministic_bounded_and_has_incidents() {
    for (scenario, dir, key, count) in [
        ("login", "login", "user", 5000),
        ("sensor", "sensor", "sensor", 20000),
        ("order", "order", "order", 3000),
    ] {
        let args = [
            "--scenario",
            scenario,
            "--count",
            &count.to_string(),
            "--seed",
            "3",
        ];
        let out = run("generator", &args);
        assert_eq!(out, run("generator", &args), "{scenario}: deterministic");
        assert_eq!(out.lines().count(), count, "{scenario}");
        let mut max = i64::MIN;
        for line in out.lines() {
            let ts = serde_json::from_str::<Value>(line).expect("JSON")["ts"]
                .as_i64()
                .expect("ts");
            assert!(
                ts > max.saturating_sub(500),
                "{scenario}: {line} is 500 ms or more out of order"
            );
            max = max.max(ts);
        }
        let outputs = evaluate(engine(dir, key, 500), &out, false);
        assert!(!outputs.iter().any(|o| o.starts_with("late")), "{scenario}");
        let mut per_pattern: BTreeMap<String, usize> = BTreeMap::new();
        for o in &outputs {
            let mut w = o.split(' ');
            let kind = w.next().unwrap_or("");
            let pattern = w.next().unwrap_or("");
            *per_pattern.entry(format!("{kind} {pattern}")).or_default() += 1;
        }
        let needed: &[&str] = match scenario {
            "login" => &[
                "match login-fails-strict",
                "match login-fails-relaxed",
                "match login-fails-3-ips",
            ],
            "sensor" => &[
                "match sensor-rising",
                "match sensor-silent",
                "match sensor-freezing",
            ],
            _ => &["match order-paid", "timeout order-paid"],
        };
        for n in needed {
            assert!(
                per_pattern.contains_key(*n),
                "{scenario}: no {n} in {per_pattern:?}"
            );
        }
    }
}

/// `--url` POSTs NDJSON batches; a fake service on 127.0.0.1 records them.
#[test]
fn generator_posts_ndjson_batches() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("address");
    let requests = Arc::new(Mutex::new(Vec::<(String, String, usize)>::new()));
    let seen = requests.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { break };
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut request_line = String::new();
            reader.read_line(&mut request_line).expect("request line");
            let (mut length, mut content_type) = (0usize, String::new());
            loop {
                let mut h = String::new();
                reader.read_line(&mut h).expect("header");
                let h = h.trim_end();
                if h.is_empty() {
                    break;
                }
                let (name, value) = h.split_once(": ").unwrap_or((h, ""));
                match name.to_ascii_lowercase().as_str() {
                    "content-length" => length = value.parse().expect("length"),
                    "content-type" => content_type = value.to_string(),
                    _ => {}
                }
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).expect("body");
            let body = String::from_utf8(body).expect("UTF-8 body");
            let n = body
                .lines()
                .filter(|l| serde_json::from_str::<Value>(l).is_ok())
                .count();
            seen.lock()
                .expect("lock")
                .push((request_line.trim_end().to_string(), content_type, n));
            let answer = format!(r#"{{"accepted":{n},"rejected":0,"errors":[]}}"#);
            let _ = write!(
                stream,
                "HTTP/1.1 202 Accepted\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
                answer.len()
            );
        }
    });
    let url = format!("http://{addr}/api/v1/pipelines/logins/events");
    let out = Command::new(example("generator"))
        .args([
            "--scenario",
            "login",
            "--count",
            "1200",
            "--batch",
            "500",
            "--url",
            &url,
        ])
        .output()
        .expect("run generator");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("sent 1200 events"), "{stderr}");
    assert!(stderr.contains("1200 accepted, 0 rejected"), "{stderr}");
    let requests = requests.lock().expect("lock").clone();
    let post = "POST /api/v1/pipelines/logins/events HTTP/1.1".to_string();
    let ndjson = "application/x-ndjson".to_string();
    assert_eq!(
        requests,
        [
            (post.clone(), ndjson.clone(), 500),
            (post.clone(), ndjson.clone(), 500),
            (post, ndjson, 200)
        ]
    );
}

/// The `cep` binary that `cargo test --workspace --all-targets` builds next to the examples
/// (`CEP_BIN` if set); built if missing.
fn cep_binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("CEP_BIN") {
        return PathBuf::from(bin);
    }
    let profile_dir = examples_dir()
        .parent()
        .expect("target/<profile>")
        .to_path_buf();
    let bin = profile_dir.join("cep");
    if !bin.exists() {
        let mut cargo = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cargo
            .args(["build", "-q", "-p", "cep-api", "--bin", "cep"])
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        if profile_dir.file_name().is_some_and(|p| p == "release") {
            cargo.arg("--release");
        }
        assert!(
            cargo.status().expect("run cargo build").success(),
            "cargo build -p cep-api --bin cep failed"
        );
    }
    assert!(bin.exists(), "{} not found", bin.display());
    bin
}

/// The service walkthrough for real: `scripts/demo-service.sh login` starts `cep serve`,
/// registers the login demo's JSON patterns, creates its pipeline through the REST API, posts the
/// demo's events and reads the outputs back: exactly the Rust demo's alerts and late event.
#[test]
fn service_walkthrough_reads_back_the_demo_alerts() {
    let out = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/demo-service.sh"))
        .arg("login")
        .env("CEP_BIN", cep_binary())
        .env(
            "CEP_EXAMPLES",
            example("login_failure").parent().expect("dir"),
        )
        .env_remove("CEP_URL")
        .output()
        .expect("run scripts/demo-service.sh");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "demo-service.sh failed\n--- stdout\n{stdout}\n--- stderr\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // `ALERT fails-strict  user=bob ...` lines of the Rust demo, as (pattern, key).
    let expected = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/expected/login_failure.txt"),
    )
    .unwrap();
    let mut want: Vec<String> = expected
        .lines()
        .filter_map(|l| {
            let mut words = l.strip_prefix("ALERT ")?.split_whitespace();
            let pattern = words.next()?;
            let user = words.next()?.strip_prefix("user=")?;
            Some(format!("login-{pattern} {user}"))
        })
        .collect();
    want.sort();
    assert_eq!(want.len(), 7, "{expected}");
    // Every output the script printed, with or without jq: `{"kind":"match","pattern":..,"key":..`.
    let mut got = Vec::new();
    let mut late = 0;
    let mut rest = stdout.as_str();
    while let Some(at) = rest.find("{\"kind\":\"") {
        rest = &rest[at..];
        let end = rest.find('}').unwrap_or(rest.len());
        let head = &rest[..end];
        let field = |name: &str| {
            let tag = format!("\"{name}\":\"");
            head.find(&tag).map(|i| {
                let v = &head[i + tag.len()..];
                v[..v.find('"').unwrap_or(v.len())].to_string()
            })
        };
        match field("kind").as_deref() {
            Some("match") => got.push(format!(
                "{} {}",
                field("pattern").unwrap_or_default(),
                field("key").unwrap_or_default()
            )),
            Some("late") => late += 1,
            _ => {}
        }
        rest = &rest[1..];
    }
    got.sort();
    assert_eq!(got, want, "alerts of the service walkthrough\n{stdout}");
    assert_eq!(late, 1, "bob's late failure\n{stdout}");
}

/// The Kafka walkthrough for real: `scripts/demo-kafka.sh` starts a broker (noida-db through
/// `scripts/kafka-broker.sh`, or uses `KAFKA_BOOTSTRAP`), runs the `cep kafka` pipelines of the
/// login and sensor demos over generator traffic and reads their outputs back. Every alert it
/// read (`--out`) must be exactly one that `JsonEngine` finds with the same patterns in the same
/// events followed by the end-of-traffic marker, none missing; the numbers of timeouts must agree,
/// and there must be no late event and no dead letter.
#[test]
fn kafka_walkthrough_reads_back_the_expected_alerts() {
    let out_dir = std::env::temp_dir().join(format!("cep-demo-kafka-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out_dir);
    let (login_events, sensor_events, seed) = (2000, 20000, 7);
    let out = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/demo-kafka.sh"))
        .args(["--login-events", &login_events.to_string()])
        .args(["--sensor-events", &sensor_events.to_string()])
        .args(["--seed", &seed.to_string()])
        .arg("--out")
        .arg(&out_dir)
        .env("CEP_BIN", cep_binary())
        .env(
            "CEP_EXAMPLES",
            example("kafka_topic").parent().expect("dir"),
        )
        .output()
        .expect("run scripts/demo-kafka.sh");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "demo-kafka.sh failed\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    // `TOPIC-RUN N` lines of the script: the number of records of a topic.
    let topic_count = |prefix: &str| -> usize {
        stdout
            .lines()
            .find_map(|l| {
                let (topic, n) = l.split_once(' ')?;
                topic.strip_prefix(prefix)?;
                n.parse().ok()
            })
            .unwrap_or_else(|| panic!("no count of {prefix}RUN in\n{stdout}"))
    };

    for (demo, key, count) in [
        ("login", "user", login_events),
        ("sensor", "sensor", sensor_events),
    ] {
        // What the pipeline must find: the same events through JsonEngine with the pipeline's
        // bound, then the generator's end-of-traffic marker (the same on every partition).
        let events = run(
            "generator",
            &[
                "--scenario",
                demo,
                "--count",
                &count.to_string(),
                "--seed",
                &seed.to_string(),
            ],
        );
        let mut engine = engine(demo, key, 500);
        let mut outputs = Vec::new();
        let mut last = i64::MIN;
        for line in events.lines() {
            let event: Value = serde_json::from_str(line).expect("JSON line");
            last = last.max(event["ts"].as_i64().expect("ts"));
            engine.push(event, &mut outputs).expect("event accepted");
        }
        let marker =
            serde_json::json!({key: "_end", "ts": last + 500 + 5000, "type": "end-of-traffic"});
        engine.push(marker, &mut outputs).expect("marker accepted");
        let of_kind = |kind: OutputKind| outputs.iter().filter(move |o| o.kind == kind);
        let mut want: Vec<String> = of_kind(OutputKind::Match)
            .map(|o| serde_json::to_string(o).expect("output as JSON"))
            .collect();
        want.sort();
        assert!(want.len() > 10, "{demo}: too few alerts to show anything");

        let file = out_dir.join(format!("{demo}-alerts.jsonl"));
        let text = std::fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("{}: {e}\n{stdout}", file.display()));
        let mut got: Vec<String> = text.lines().map(str::to_string).collect();
        got.sort();
        let missing: Vec<&String> = want.iter().filter(|w| !got.contains(w)).collect();
        let extra: Vec<&String> = got.iter().filter(|g| !want.contains(g)).collect();
        assert!(
            got == want,
            "{demo}: {} alerts read back, {} expected\nmissing: {missing:#?}\nunexpected: {extra:#?}",
            got.len(),
            want.len()
        );
        assert!(
            stdout.contains(&format!(
                "== {demo}: {} alerts in {demo}-alerts-",
                want.len()
            )),
            "{stdout}"
        );
        assert_eq!(
            topic_count(&format!("{demo}-timeouts-")),
            of_kind(OutputKind::Timeout).count(),
            "{demo}: timeouts"
        );
        assert_eq!(of_kind(OutputKind::Late).count(), 0, "{demo}: late events");
        assert_eq!(
            topic_count(&format!("{demo}-late-")),
            0,
            "{demo}: late events"
        );
        assert_eq!(
            topic_count(&format!("{demo}-dlq-")),
            0,
            "{demo}: dead letters"
        );
    }
    let _ = std::fs::remove_dir_all(&out_dir);
}
