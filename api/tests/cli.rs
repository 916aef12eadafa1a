//! `cep run` and `cep check` as a user runs them: real files, the real binary.

use std::path::{Path, PathBuf};
use std::process::Command;

fn cep() -> Command {
    Command::new(env!("CARGO_BIN_EXE_cep"))
}

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("cep-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

const LOGIN: &str = r#"{"name":"login-failures","within":"2s","after_match":"skip_past_last_event","stages":[{"name":"fail","where":"type == 'fail'","times":3,"consecutive":true}]}"#;

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn run_reports_bad_lines_and_keeps_going() {
    let dir = tmpdir("run");
    let pattern = write(&dir, "login.json", LOGIN);
    let input = write(
        &dir,
        "events.jsonl",
        concat!(
            "{\"user\":\"u1\",\"ts\":1000,\"type\":\"fail\"}\n",
            "{\"user\":\"u1\",\"ts\":1100,\"type\":\"fail\"\n",
            "{\"user\":\"u1\",\"ts\":1200,\"type\":\"fail\"}\n",
            "{\"ts\":1250,\"type\":\"fail\"}\n",
            "{\"user\":\"u1\",\"ts\":\"soon\",\"type\":\"fail\"}\n",
            "\n",
            "{\"user\":\"u1\",\"ts\":1300,\"type\":\"fail\"}\n",
            "{\"user\":\"u2\",\"ts\":9000,\"type\":\"ok\"}\n",
            "{\"user\":\"u1\",\"ts\":500,\"type\":\"fail\"}\n",
        ),
    );
    let out = dir.join("out.jsonl");
    let o = cep()
        .args(["run", "--pattern"])
        .arg(&pattern)
        .arg("--input")
        .arg(&input)
        .args(["--key-by", "user", "--time-field", "ts", "--output"])
        .arg(&out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(
        o.status.code(),
        Some(2),
        "skipped lines make the exit status 2: {stderr}"
    );
    assert!(stderr.contains("line 2: malformed JSON"), "{stderr}");
    assert!(
        stderr.contains("line 4: missing key field 'user'"),
        "{stderr}"
    );
    assert!(
        stderr.contains("line 5: time field 'ts' must be a number"),
        "{stderr}"
    );
    assert!(stderr.contains("3 line(s) skipped"), "{stderr}");
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let kinds: Vec<(&str, i64)> = lines
        .iter()
        .map(|l| {
            (
                l["kind"].as_str().unwrap(),
                l["timestamp"].as_i64().unwrap(),
            )
        })
        .collect();
    // 1000, 1200, 1300 are three consecutive failures of u1; the event at 500 arrives after the
    // watermark moved to 8999 and is late.
    assert_eq!(kinds, vec![("match", 1300), ("late", 500)]);
    let ts: Vec<i64> = lines[0]["events"]["fail"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["ts"].as_i64().unwrap())
        .collect();
    assert_eq!(ts, vec![1000, 1200, 1300]);
    assert_eq!(lines[1]["event"]["ts"], 500);
}

#[test]
fn run_reads_stdin_and_rfc3339_times() {
    use std::io::Write;
    let dir = tmpdir("stdin");
    let pattern = write(
        &dir,
        "p.json",
        r#"{"name":"ab","within":"1min","stages":[{"name":"a","where":"type == 'a'"},{"name":"b","where":"type == 'b'"}]}"#,
    );
    let mut child = cep()
        .args(["run", "--pattern"])
        .arg(&pattern)
        .args([
            "--input",
            "-",
            "--key-by",
            "k",
            "--time-field",
            "at",
            "--time-format",
            "rfc3339",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"{\"k\":1,\"at\":\"2026-01-01T00:00:00Z\",\"type\":\"a\"}\n{\"k\":1,\"at\":\"2026-01-01T00:00:30+00:00\",\"type\":\"b\"}\n{\"k\":2,\"at\":\"2026-01-01T00:00:40Z\",\"type\":\"a\"}\n")
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(0));
    let text = String::from_utf8(o.stdout).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert_eq!(lines[0]["kind"], "match");
    assert_eq!(lines[0]["key"], "1");
    assert_eq!(lines[0]["timestamp"], 1_767_225_630_000i64);
    // Key 2 never sees its b: at the end of the input it times out one minute after its a.
    assert_eq!(lines[1]["kind"], "timeout");
    assert_eq!(lines[1]["timestamp"], 1_767_225_700_000i64);
}

#[test]
fn check_validates_and_explains() {
    let dir = tmpdir("check");
    write(&dir, "good.json", LOGIN);
    write(
        &dir,
        "bad.json",
        r#"{"name":"bad","stages":[{"name":"a","where":"type = 'x'"},{"name":"b","times":"many"}]}"#,
    );
    let o = cep().arg("check").arg(&dir).output().unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("good.json: ok (login-failures)"),
        "{stdout}"
    );
    assert!(stdout.contains("bad.json: stages[1].times"), "{stdout}");
    let o = cep()
        .args(["check", "--explain"])
        .arg(dir.join("good.json"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("window: 2000 ms"), "{stdout}");
    assert!(stdout.contains("runs on: strict chain"), "{stdout}");
    assert!(stdout.contains("Start 'fail"), "{stdout}");
    assert!(stdout.contains("take ->"), "{stdout}");
    // Conditions as the pattern wrote them.
    assert!(stdout.contains("if type == 'fail'"), "{stdout}");
    assert!(stdout.contains("if not (type == 'fail')"), "{stdout}");
    let o = cep()
        .arg("check")
        .arg(dir.join("missing.json"))
        .output()
        .unwrap();
    assert_ne!(o.status.code(), Some(0));
}

/// `cep run --window ... --aggregate ...`: the window stage of a pipeline spec from flags. Every
/// 2 readings of a sensor, their average; `hot` matches an average above 30, `cold` a reading
/// below 0 (it matches the events themselves, not being a `--window-pattern`).
#[test]
fn run_takes_a_window_stage_from_flags() {
    let dir = tmpdir("window");
    let hot = write(
        &dir,
        "hot.json",
        r#"{"name":"hot","stages":[{"name":"w","where":"avg_temp > 30"}]}"#,
    );
    let cold = write(
        &dir,
        "cold.json",
        r#"{"name":"cold","stages":[{"name":"r","where":"temp < 0"}]}"#,
    );
    let input = write(
        &dir,
        "events.jsonl",
        concat!(
            "{\"sensor\":\"s1\",\"ts\":1000,\"temp\":31}\n",
            "{\"sensor\":\"s1\",\"ts\":4000,\"temp\":33}\n",
            "{\"sensor\":\"s2\",\"ts\":5000,\"temp\":-2}\n",
            "{\"sensor\":\"s1\",\"ts\":12000,\"temp\":20}\n",
            "{\"sensor\":\"s1\",\"ts\":3000,\"temp\":40}\n",
        ),
    );
    let out = dir.join("out.jsonl");
    let o = cep()
        .args(["run", "--pattern"])
        .arg(&hot)
        .arg("--pattern")
        .arg(&cold)
        .arg("--input")
        .arg(&input)
        .args(["--key-by", "sensor", "--time-field", "ts"])
        .args([
            "--window",
            "tumbling:10s",
            "--aggregate",
            "avg_temp=avg:temp",
        ])
        .args([
            "--aggregate",
            "n=count:*",
            "--window-pattern",
            "hot",
            "--output",
        ])
        .arg(&out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{stderr}");
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let summary: Vec<String> = lines
        .iter()
        .map(|o| {
            let kind = o["kind"].as_str().unwrap();
            let event = match kind {
                "late" => o["event"].clone(),
                _ => o["events"].as_object().unwrap().values().next().unwrap()[0].clone(),
            };
            format!(
                "{kind} {} {} {event}",
                o["pattern"].as_str().unwrap_or("-"),
                o["timestamp"]
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            // At watermark 11999 (after s1@12000), in time order.
            r#"match cold 5000 {"sensor":"s2","ts":5000,"temp":-2}"#,
            r#"match hot 9999 {"sensor":"s1","window_start":0,"window_end":10000,"avg_temp":32.0,"n":2}"#,
            // s1@3000 arrives after the watermark closed [0, 10000): late.
            r#"late - 3000 {"sensor":"s1","ts":3000,"temp":40}"#,
        ],
        "{stderr}"
    );

    // Bad flags are refused with what is wrong.
    let o = cep()
        .args(["run", "--pattern"])
        .arg(&hot)
        .arg("--input")
        .arg(&input)
        .args(["--key-by", "sensor", "--time-field", "ts"])
        .args(["--window", "sliding:10s", "--aggregate", "a=avg:temp"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("sliding:SIZE:SLIDE"), "{stderr}");
    let o = cep()
        .args(["run", "--pattern"])
        .arg(&hot)
        .arg("--input")
        .arg(&input)
        .args(["--key-by", "sensor", "--time-field", "ts"])
        .args(["--window", "count:5", "--window-pattern", "nope"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("--window-pattern nope"), "{stderr}");
}

/// `cep kafka` takes the same window flags; a window stage's state is checkpointed from memory,
/// so the rocksdb backend is refused with the reason, before connecting.
#[test]
fn kafka_refuses_a_window_stage_with_the_rocksdb_backend() {
    let dir = tmpdir("kafka-window");
    let hot = write(
        &dir,
        "hot.json",
        r#"{"name":"hot","stages":[{"name":"w","where":"avg_temp > 30"}]}"#,
    );
    let o = cep()
        .args(["kafka", "--bootstrap", "127.0.0.1:1", "--group", "g"])
        .args([
            "--input-topic",
            "in",
            "--topic",
            "out",
            "--key-by",
            "sensor",
        ])
        .arg("--pattern")
        .arg(&hot)
        .args([
            "--window",
            "tumbling:10s",
            "--aggregate",
            "avg_temp=avg:temp",
            "--state-backend",
            "rocksdb",
            "--data-dir",
        ])
        .arg(dir.join("data"))
        .output()
        .unwrap();
    assert!(!o.status.success());
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains(
            "state.backend: a Kafka pipeline with a window stage keeps its state in memory"
        ),
        "{stderr}"
    );
}

/// `cep run --workers N` gives the outputs of one worker (sorted: outputs of different keys
/// within a batch may come in another order), and reports bad lines by their number.
#[test]
fn run_with_workers_gives_the_outputs_of_one() {
    let dir = tmpdir("workers");
    let pattern = write(&dir, "login.json", LOGIN);
    let mut s = 11u64;
    let mut next = move || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (s >> 33) as i64
    };
    let mut text = String::new();
    for i in 0..9000 {
        if i == 5000 {
            text.push_str("{\"user\":\"u1\",\"ts\":\n");
        }
        let ts = 1_000 + 20 * i - next() % 300;
        let ty = if next() % 4 == 0 { "ok" } else { "fail" };
        text.push_str(&format!(
            "{{\"user\":\"u{}\",\"ts\":{ts},\"type\":\"{ty}\"}}\n",
            next() % 40
        ));
    }
    let input = write(&dir, "events.jsonl", &text);
    let run = |workers: &str| {
        let out = dir.join(format!("out-{workers}.jsonl"));
        let o = cep()
            .args(["run", "--pattern"])
            .arg(&pattern)
            .arg("--input")
            .arg(&input)
            .args(["--key-by", "user", "--time-field", "ts"])
            .args([
                "--out-of-orderness",
                "100ms",
                "--workers",
                workers,
                "--output",
            ])
            .arg(&out)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(stderr.contains("line 5001: malformed JSON"), "{stderr}");
        let mut lines: Vec<String> = std::fs::read_to_string(&out)
            .unwrap()
            .lines()
            .map(String::from)
            .collect();
        lines.sort();
        lines
    };
    let one = run("1");
    let count = |kind: &str| {
        one.iter()
            .filter(|l| l.contains(&format!("\"kind\":\"{kind}\"")))
            .count()
    };
    assert!(count("match") > 100 && count("late") > 10, "{}", one.len());
    assert!(run("4") == one, "4 workers");
}

/// `cep run` takes the state bounds as flags: what they drop is gone from the outputs, and a
/// bound of 0 is refused with the spec's reason.
#[test]
fn run_takes_state_bounds_from_flags() {
    let dir = tmpdir("bounds");
    let ab = write(
        &dir,
        "ab.json",
        r#"{"name":"ab","stages":[{"name":"a","where":"type == 'A'"},{"name":"b","where":"type == 'B'","contiguity":"followed_by_any"}]}"#,
    );
    let mut text = String::new();
    for i in 0..5 {
        text.push_str(&format!(
            "{{\"key\":\"k\",\"ts\":{},\"type\":\"A\"}}\n",
            1000 + i
        ));
    }
    text.push_str("{\"key\":\"k\",\"ts\":2000,\"type\":\"B\"}\n");
    let input = write(&dir, "events.jsonl", &text);
    let run = |flags: &[&str]| {
        let o = cep()
            .args(["run", "--pattern"])
            .arg(&ab)
            .arg("--input")
            .arg(&input)
            .args(["--key-by", "key", "--time-field", "ts"])
            .args(flags)
            .output()
            .unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).lines().count(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    assert_eq!(run(&[]).1, 5);
    // The two newest `A`s keep their partial matches.
    assert_eq!(run(&["--max-partial-matches", "2"]).1, 2);
    assert_eq!(run(&["--max-buffered-events", "3"]).1, 3);
    let (code, _, stderr) = run(&["--max-keys", "0"]);
    assert_ne!(code, Some(0));
    assert!(
        stderr.contains("state.max_keys: must be at least 1"),
        "{stderr}"
    );
}
