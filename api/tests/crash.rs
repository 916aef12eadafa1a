//! A crash loses nothing: `cep serve` is killed with SIGKILL at random moments while several
//! clients post events, and started again on the same data directory each time. Every batch is
//! retried with its `Idempotency-Key` until it is answered 202; at the end the outputs, read
//! back with `after` cursors, are numbered 1..n without a gap or a repeat and equal those of
//! `cep run` over the same events.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, RwLock};
use std::time::Duration;

use serde_json::{json, Value};

/// Events per batch, batches, clients.
const BATCH: usize = 50;
const BATCHES: usize = 400;
const CLIENTS: usize = 4;
/// How far a client may run ahead of the oldest batch not yet answered: with 10 ms between
/// events, 8 batches are 4 s of event time, well inside the 20 s of out-of-orderness, so no
/// event is late whatever order the clients' requests land in.
const AHEAD: usize = 8;

struct Service {
    child: Child,
    base: String,
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(data: &Path) -> Service {
    let mut child = Command::new(env!("CARGO_BIN_EXE_cep"))
        .args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json"])
        .arg("--data-dir")
        .arg(data)
        // Checkpoints often, so that kills land before, during and after them.
        .args(["--checkpoint-interval", "300ms"])
        .env_remove("CEP_AUTH_TOKEN")
        .env_remove("CEP_CONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cep serve starts");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut seen = Vec::new();
    loop {
        let line = match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(line) => line,
            Err(e) => {
                let _ = child.kill();
                let status = child.wait();
                panic!("the service did not listen ({e}, {status:?}): {seen:#?}");
            }
        };
        seen.push(line.clone());
        let Ok(entry) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        if entry["fields"]["message"] == "listening" {
            let addr = entry["fields"]["addr"].as_str().unwrap().to_string();
            return Service {
                child,
                base: format!("http://{addr}"),
            };
        }
    }
}

/// A small deterministic generator (the seed is printed, so a failure can be replayed).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

fn patterns() -> Vec<Value> {
    vec![
        json!({
            "name": "three-fails",
            "within": "2s",
            "after_match": "skip_past_last_event",
            "stages": [{"name": "fail", "where": "type == 'fail'", "times": 3, "consecutive": true}]
        }),
        json!({
            "name": "fail-then-ok",
            "within": "300ms",
            "stages": [
                {"name": "f", "where": "type == 'fail'"},
                {"name": "o", "where": "type == 'ok'", "contiguity": "followed_by"}
            ]
        }),
    ]
}

/// What an output is, without its place in the sequence.
fn canonical(output: &Value) -> String {
    let mut o = output.clone();
    let map = o.as_object_mut().unwrap();
    map.remove("seq");
    map.remove("pipeline");
    // The service labels outputs with their pattern's version; `cep run` does not.
    map.remove("version");
    o.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_while_clients_post_loses_and_repeats_nothing() {
    let seed = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("CRASH_SEED={seed}");
    let mut rng = Lcg(seed);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");

    // The events: 40 users, a failed or successful login every 10 ms, unique times.
    let events: Vec<Value> = (0..BATCH * BATCHES)
        .map(|i| {
            let ty = if rng.next().is_multiple_of(3) { "ok" } else { "fail" };
            json!({"user": format!("u{}", rng.next() % 40), "ts": 1_000_000 + 10 * i as i64, "type": ty, "n": i})
        })
        .collect();

    // What `cep run` makes of them.
    let pattern_dir = dir.path().join("patterns");
    std::fs::create_dir(&pattern_dir).unwrap();
    for p in patterns() {
        let file = pattern_dir.join(format!("{}.json", p["name"].as_str().unwrap()));
        std::fs::write(file, p.to_string()).unwrap();
    }
    let input = dir.path().join("events.jsonl");
    let mut f = std::fs::File::create(&input).unwrap();
    for e in &events {
        writeln!(f, "{e}").unwrap();
    }
    drop(f);
    let run = Command::new(env!("CARGO_BIN_EXE_cep"))
        .args(["run", "--key-by", "user", "--time-field", "ts"])
        .args(["--out-of-orderness", "20s"])
        .arg("--pattern")
        .arg(&pattern_dir)
        .arg("--input")
        .arg(&input)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let mut expected: Vec<String> = String::from_utf8(run.stdout)
        .unwrap()
        .lines()
        .map(|l| canonical(&serde_json::from_str(l).unwrap()))
        .collect();
    expected.sort();
    assert!(expected.len() > 100, "the events make outputs");

    // The service, its patterns and pipeline.
    let service = start(&data);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    for p in patterns() {
        let r = client
            .post(format!("{}/api/v1/patterns", service.base))
            .json(&p)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    let r = client
        .post(format!("{}/api/v1/pipelines", service.base))
        .json(&json!({
            "name": "logins", "key_by": "user", "time": {"field": "ts"},
            "watermark": {"out_of_orderness": "20s", "max_future": "off"}
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let base = Arc::new(RwLock::new(service.base.clone()));
    let service = Arc::new(std::sync::Mutex::new(service));

    // The clients: each takes the next batch, posts it until it is answered 202.
    let next = Arc::new(AtomicUsize::new(0));
    let answered: Arc<std::sync::Mutex<Vec<bool>>> =
        Arc::new(std::sync::Mutex::new(vec![false; BATCHES]));
    let bodies: Arc<Vec<String>> = Arc::new(
        events
            .chunks(BATCH)
            .map(|c| c.iter().map(|e| format!("{e}\n")).collect())
            .collect(),
    );
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let (next, answered, bodies, base, client) = (
            next.clone(),
            answered.clone(),
            bodies.clone(),
            base.clone(),
            client.clone(),
        );
        clients.push(tokio::spawn(async move {
            let mut retries = 0usize;
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= BATCHES {
                    return retries;
                }
                // Not too far ahead of the oldest batch still unanswered.
                loop {
                    let oldest = answered
                        .lock()
                        .unwrap()
                        .iter()
                        .position(|a| !a)
                        .unwrap_or(BATCHES);
                    if i < oldest + AHEAD {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                loop {
                    let url = format!("{}/api/v1/pipelines/logins/events", base.read().unwrap());
                    let sent = client
                        .post(url)
                        .header("content-type", "application/x-ndjson")
                        .header("idempotency-key", format!("batch-{i}"))
                        .body(bodies[i].clone())
                        .send()
                        .await;
                    match sent {
                        Ok(r) if r.status() == 202 => {
                            let report: Value = r.json().await.unwrap();
                            assert_eq!(report["accepted"], BATCH, "{report}");
                            break;
                        }
                        Ok(r) if r.status().is_server_error() => {}
                        Ok(r) => panic!("batch {i}: {} {}", r.status(), r.text().await.unwrap()),
                        Err(_) => {}
                    }
                    retries += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                answered.lock().unwrap()[i] = true;
                // Paced like live traffic, so that the kills land while events flow.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }));
    }

    // The killer: SIGKILL at random moments, restart on the same data directory.
    let mut kills = 0;
    while kills < 4 && answered.lock().unwrap().iter().any(|a| !a) {
        tokio::time::sleep(Duration::from_millis(150 + rng.next() % 400)).await;
        let mut s = service.lock().unwrap();
        s.child.kill().unwrap();
        s.child.wait().unwrap();
        *s = start(&data);
        *base.write().unwrap() = s.base.clone();
        kills += 1;
    }
    let mut retries = 0;
    for c in clients {
        retries += c.await.unwrap();
    }
    eprintln!("{kills} kills, {retries} retried requests");
    assert!(kills >= 2, "the service was killed while clients posted");

    // The end of the input: every partial match is due.
    let base_url = base.read().unwrap().clone();
    let r = client
        .post(format!("{base_url}/api/v1/pipelines/logins/watermark"))
        .json(&json!({"watermark": "end"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // One more crash after the end: nothing changes.
    {
        let mut s = service.lock().unwrap();
        s.child.kill().unwrap();
        s.child.wait().unwrap();
        *s = start(&data);
        *base.write().unwrap() = s.base.clone();
    }
    let base_url = base.read().unwrap().clone();
    let mut got = Vec::new();
    let mut seqs = Vec::new();
    let mut after = 0u64;
    loop {
        let page: Value = client
            .get(format!(
                "{base_url}/api/v1/pipelines/logins/matches?after={after}&limit=1000"
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(page["missed"], false);
        for o in page["outputs"].as_array().unwrap() {
            seqs.push(o["seq"].as_u64().unwrap());
            got.push(canonical(o));
        }
        if page["more"] != true {
            break;
        }
        after = *seqs.last().unwrap();
    }
    assert_eq!(
        seqs,
        (1..=seqs.len() as u64).collect::<Vec<_>>(),
        "outputs numbered 1..n, none missing, none twice"
    );
    got.sort();
    if got != expected {
        let count = |v: &[String]| {
            let mut m: BTreeMap<String, i64> = BTreeMap::new();
            for s in v {
                *m.entry(s.clone()).or_default() += 1;
            }
            m
        };
        let (g, e) = (count(&got), count(&expected));
        let extra: Vec<_> = g
            .iter()
            .filter(|(k, n)| e.get(*k) != Some(n))
            .take(3)
            .collect();
        let missing: Vec<_> = e
            .iter()
            .filter(|(k, n)| g.get(*k) != Some(n))
            .take(3)
            .collect();
        panic!(
            "outputs differ from cep run: {} vs {} (seed {seed}); extra {extra:?}; missing {missing:?}",
            got.len(),
            expected.len()
        );
    }
    let view: Value = client
        .get(format!("{base_url}/api/v1/pipelines/logins"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        view["status"]["counters"]["events_in"],
        BATCH * BATCHES,
        "each event evaluated once: {view}"
    );
    assert_eq!(view["status"]["counters"]["late"], 0);
}
