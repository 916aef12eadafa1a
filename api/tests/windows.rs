//! Pipelines with a window stage in `cep serve`: the sensor alarm of `examples/sensor_alarm.rs`
//! as one JSON pipeline (`examples/pipelines/sensor_alarm.json`), whose alarms must be the
//! example's, computed by running the example; and window stages through the REST API (errors
//! with their JSON path, the configuration file).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{assert_error, TestServer};
use serde_json::{json, Value};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
}

/// Runs `examples/sensor_alarm.rs` (the binary cargo builds next to this test, built here if
/// missing) with `args`.
fn sensor_alarm(args: &[&str]) -> String {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/windows-HASH -> target/<profile>/examples/sensor_alarm
    let profile = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    let bin = profile.join("examples").join("sensor_alarm");
    if !bin.exists() {
        let mut cargo = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cargo
            .args([
                "build",
                "-q",
                "-p",
                "cep-suite",
                "--example",
                "sensor_alarm",
            ])
            .current_dir(root());
        if profile.file_name().is_some_and(|p| p == "release") {
            cargo.arg("--release");
        }
        assert!(cargo.status().expect("cargo build").success());
    }
    let out = Command::new(&bin).args(args).output().expect("run example");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8")
}

/// The time of day of an epoch-ms timestamp, as the example prints it.
fn clock(ms: i64) -> String {
    let d = ms.rem_euclid(86_400_000);
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        d / 3_600_000,
        d / 60_000 % 60,
        d / 1000 % 60,
        d % 1000
    )
}

fn read(path: &str) -> Value {
    let p = root().join(path);
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn pattern_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    for dir in [
        "examples/patterns/sensor",
        "examples/patterns/sensor-windows",
    ] {
        for e in std::fs::read_dir(root().join(dir)).unwrap() {
            files.push(e.unwrap().path());
        }
    }
    files.sort();
    files
}

/// An output of the pipeline as the example prints its alarms (`ALARM kind sensor at time:
/// text`) or, for `sensor-freezing`, its side output (`    sensor at time: temp °C`).
fn as_example_line(o: &Value) -> String {
    let stage = |name: &str| -> Vec<&Value> {
        o["events"][name]
            .as_array()
            .map(|a| a.iter().collect())
            .unwrap_or_default()
    };
    let sensor = o["key"].as_str().unwrap();
    let at = clock(o["timestamp"].as_i64().unwrap());
    let (kind, text) = match o["pattern"].as_str().unwrap() {
        "sensor-rising" => {
            let temps: Vec<String> = stage("base")
                .into_iter()
                .chain(stage("rise"))
                .map(|r| format!("{:.1}", r["temp"].as_f64().unwrap()))
                .collect();
            ("rising", format!("{} °C", temps.join(" -> ")))
        }
        "sensor-hot" => {
            let windows = stage("hot");
            let avgs: Vec<String> = windows
                .iter()
                .map(|w| format!("{:.2}", w["avg_temp"].as_f64().unwrap()))
                .collect();
            let text = format!(
                "10 s averages {} °C ({} to {})",
                avgs.join(", "),
                clock(windows[0]["window_start"].as_i64().unwrap()),
                clock(windows[windows.len() - 1]["window_end"].as_i64().unwrap())
            );
            ("hot", text)
        }
        "sensor-silent" => {
            let last = stage("last")[0]["ts"].as_i64().unwrap();
            ("silent", format!("no reading since {}", clock(last)))
        }
        "sensor-freezing" => {
            let r = stage("reading")[0];
            return format!(
                "    {sensor} at {}: {:.1} °C",
                clock(r["ts"].as_i64().unwrap()),
                r["temp"].as_f64().unwrap()
            );
        }
        other => panic!("unexpected pattern {other}"),
    };
    format!("ALARM {kind:<6} {sensor} at {at}: {text}")
}

#[tokio::test]
async fn the_sensor_alarm_as_one_json_pipeline_raises_the_examples_alarms() {
    // The example's alarms (and its side output), as it prints them.
    let printed = sensor_alarm(&[]);
    let mut want: Vec<String> = printed
        .lines()
        .filter(|l| l.starts_with("ALARM") || l.starts_with("    "))
        .map(str::to_string)
        .collect();
    want.sort();
    assert!(
        want.iter().any(|l| l.starts_with("ALARM hot")),
        "the example has a window alarm: {printed}"
    );

    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path()).await;
    for f in pattern_files() {
        let text = std::fs::read_to_string(&f).unwrap();
        s.register(&serde_json::from_str(&text).unwrap()).await;
    }
    let spec = read("examples/pipelines/sensor_alarm.json");
    let (status, body) = s.post("/api/v1/pipelines", &spec).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["window"]["size"], "10s", "{body}");

    // The example's readings, in its arrival order, posted in batches of 50.
    let events: Vec<Value> = sensor_alarm(&["--events"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for batch in events.chunks(50) {
        let report = s.events("sensors", &json!(batch)).await;
        assert_eq!(report["rejected"], 0, "{report}");
    }
    let outputs = s.outputs("sensors", "?kind=match&limit=1000").await;
    let mut got: Vec<String> = outputs.iter().map(as_example_line).collect();
    got.sort();
    assert_eq!(got, want);

    // The statistics count the events taken and both engines' patterns.
    let (status, body) = s.get("/api/v1/pipelines/sensors").await;
    assert_eq!(status, 200, "{body}");
    let stats = &body["status"]["stats"];
    assert_eq!(stats["events"], events.len(), "{stats}");
    let mut names: Vec<&str> = stats["patterns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["pattern"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "sensor-freezing",
            "sensor-hot",
            "sensor-rising",
            "sensor-silent"
        ]
    );
    s.stop().await;
}

#[tokio::test]
async fn window_stage_errors_name_their_field() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path()).await;
    let (status, body) = s
        .post(
            "/api/v1/pipelines",
            &json!({"name": "w", "window": {"type": "sliding", "size": "10s",
                    "aggregates": {"avg_temp": {"avg": "temperature["}}}}),
        )
        .await;
    let error = assert_error(status, &body, 422, "invalid_pipeline");
    let text = error.to_string();
    assert!(text.contains("window.slide"), "{text}");
    assert!(text.contains("window.aggregates.avg_temp.avg"), "{text}");

    // A window over a tumbling count of events: every 2 events of a key, their sum.
    let spec = json!({"name": "counts", "window": {"type": "count", "size": 2,
        "aggregates": {"total": {"sum": "v"}}}});
    let (status, body) = s.post("/api/v1/pipelines", &spec).await;
    assert_eq!(status, 201, "{body}");
    s.register(&json!({"name": "big", "stages": [{"name": "w", "where": "total > 10"}]}))
        .await;
    let events = json!([
        {"key": "a", "ts": 1, "v": 4},
        {"key": "a", "ts": 2, "v": 5},
        {"key": "a", "ts": 3, "v": 6},
        {"key": "a", "ts": 4, "v": 7},
        {"key": "a", "ts": 10, "v": 0}
    ]);
    s.events("counts", &events).await;
    let (status, _) = s
        .post(
            "/api/v1/pipelines/counts/watermark",
            &json!({"watermark": 100}),
        )
        .await;
    let outputs = s.outputs("counts", "?kind=match").await;
    let totals: Vec<&Value> = outputs
        .iter()
        .map(|o| &o["events"]["w"][0]["total"])
        .collect();
    assert_eq!(
        totals,
        [&json!(13)],
        "watermark answer {status}: {outputs:?}"
    );
    let w = &outputs[0]["events"]["w"][0];
    assert_eq!(
        (
            w["key"].clone(),
            w["window_start"].clone(),
            w["window_end"].clone()
        ),
        (json!("a"), json!(3), json!(5))
    );
    s.stop().await;
}

/// A processing-time pipeline through the REST API: events need no time field, and a batch is
/// matched as it is taken (the clock-driven timeouts are tested with a manual clock in
/// `pipeline/tests/processing_time.rs`).
#[tokio::test]
async fn a_processing_time_pipeline_takes_events_without_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path()).await;
    s.register(&common::single("x-seen", "x")).await;
    let spec = json!({"name": "now", "time": {"mode": "processing"}, "patterns": ["x-seen"]});
    let (status, body) = s.post("/api/v1/pipelines", &spec).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["time"]["mode"], "processing");
    let report = s
        .events(
            "now",
            &json!([{"key": "a", "type": "x"}, {"key": "b", "type": "y"}]),
        )
        .await;
    assert_eq!(report["accepted"], 2, "{report}");
    let outputs = s.outputs("now", "?kind=match").await;
    assert_eq!(outputs.len(), 1, "{outputs:?}");
    assert_eq!(outputs[0]["key"], "a");
    let (status, body) = s
        .post(
            "/api/v1/pipelines",
            &json!({"name": "bad", "time": {"mode": "processing"},
                    "watermark": {"idleness": "5s"}}),
        )
        .await;
    let error = assert_error(status, &body, 422, "invalid_pipeline");
    assert!(error.to_string().contains("watermark.idleness"), "{error}");
    s.stop().await;
}
