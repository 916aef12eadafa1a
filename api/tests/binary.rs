//! The `cep serve` binary: configuration from a TOML file and `CEP_*` variables, the effective
//! configuration logged with the token redacted, SIGTERM/SIGINT answered by a clean exit 0, and
//! the catalog back after the restart.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{json, Value};

struct Service {
    child: Child,
    base: String,
    logs: Vec<Value>,
}

impl Drop for Service {
    /// A failing test must not leave its service running.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `cep serve --config <config>` with the given environment and waits for its "listening"
/// log line.
fn start(config: &Path, env: &[(&str, &str)]) -> Service {
    start_with(config, env, true)
}

/// `start`; with `keep_reading` false, stderr is closed once the service listens.
fn start_with(config: &Path, env: &[(&str, &str)], keep_reading: bool) -> Service {
    let mut command = Command::new(env!("CARGO_BIN_EXE_cep"));
    command
        .arg("serve")
        .arg("--config")
        .arg(config)
        .env_remove("CEP_AUTH_TOKEN")
        .env_remove("CEP_LISTEN")
        .env_remove("CEP_DATA_DIR")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in env {
        command.env(k, v);
    }
    let mut child = command.spawn().expect("cep serve starts");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        // Reads to the end even when nobody listens any more, so that the service never
        // writes to a closed pipe.
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let listening = line.contains("\"listening\"");
            let _ = tx.send(line);
            if listening && !keep_reading {
                break;
            }
        }
    });
    let mut logs = Vec::new();
    loop {
        // A bound so that a service that never listens fails the test instead of hanging it.
        let line = match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(line) => line,
            Err(e) => {
                let _ = child.kill();
                let status = child.wait();
                panic!("the service did not log that it listens ({e}); it ended with {status:?}");
            }
        };
        let entry: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| Value::String(format!("log line is not JSON ({e}): {line}")));
        let addr = entry["fields"]["addr"].as_str().map(str::to_string);
        let listening = entry["fields"]["message"] == "listening";
        logs.push(entry);
        if let (true, Some(addr)) = (listening, addr) {
            return Service {
                child,
                base: format!("http://{addr}"),
                logs,
            };
        }
    }
}

/// Sends a signal and returns the exit code.
fn stop(mut service: Service, signal: &str) -> Option<i32> {
    let status = Command::new("kill")
        .args([signal, &service.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    service.child.wait().unwrap().code()
}

#[tokio::test]
async fn configuration_signals_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("cep.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = {:?}\nauth_token = \"token-from-file\"\n\
             body_limit = 2048\nlog_format = \"json\"\n\n[limits]\nmax_pattern_stages = 3\n",
            data.to_str().unwrap()
        ),
    )
    .unwrap();
    let client = reqwest::Client::new();

    // The environment overrides the file.
    let service = start(&config, &[("CEP_AUTH_TOKEN", "token-from-env")]);
    let effective = service
        .logs
        .iter()
        .find(|l| l["fields"]["message"] == "effective configuration")
        .expect("the effective configuration is logged");
    let text = effective.to_string();
    assert!(text.contains("<redacted>"), "{text}");
    assert!(
        !text.contains("token-from"),
        "the token leaked into the logs: {text}"
    );
    assert!(text.contains("2048"), "{text}");

    let url = |path: &str| format!("{}{}", service.base, path);
    let health = client.get(url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let refused = client
        .get(url("/api/v1/patterns"))
        .bearer_auth("token-from-file")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let pattern = json!({"name": "p", "stages": [{"name": "a", "where": "type == 'a'"}]});
    let created = client
        .post(url("/api/v1/patterns"))
        .bearer_auth("token-from-env")
        .json(&pattern)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    // The limits of the file apply.
    let too_big = client
        .post(url("/api/v1/pipelines/default/events"))
        .bearer_auth("token-from-env")
        .json(&json!({"key": "k", "ts": 1, "pad": "x".repeat(4000)}))
        .send()
        .await
        .unwrap();
    assert_eq!(too_big.status(), 413);
    let stages: Vec<Value> = (0..4)
        .map(|i| json!({"name": format!("s{i}"), "where": "type == 'a'"}))
        .collect();
    let long = client
        .post(url("/api/v1/patterns"))
        .bearer_auth("token-from-env")
        .json(&json!({"name": "long", "stages": stages}))
        .send()
        .await
        .unwrap();
    assert_eq!(long.status(), 400);
    assert_eq!(stop(service, "-TERM"), Some(0), "SIGTERM ends with exit 0");

    // Restarted on the same data directory, with the file's token this time.
    let service = start(&config, &[]);
    let url = |path: &str| format!("{}{}", service.base, path);
    let read = client
        .get(url("/api/v1/patterns/p"))
        .bearer_auth("token-from-file")
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200);
    let mut shown = pattern.clone();
    shown["version"] = json!(1);
    assert_eq!(read.json::<Value>().await.unwrap(), shown);
    assert_eq!(stop(service, "-INT"), Some(0), "SIGINT ends with exit 0");
}

#[tokio::test]
async fn a_closed_stderr_does_not_stop_the_service() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("cep.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = {:?}\nlog_format = \"json\"\n",
            dir.path().join("data").to_str().unwrap()
        ),
    )
    .unwrap();
    let service = start_with(&config, &[], false);
    let client = reqwest::Client::new();
    // Each request logs a line to the closed stderr.
    for _ in 0..3 {
        let response = client
            .get(format!("{}/api/v1/pipelines", service.base))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    assert_eq!(stop(service, "-TERM"), Some(0));
}
