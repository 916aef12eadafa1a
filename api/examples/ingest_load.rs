//! HTTP ingest throughput of `cep serve`: a service on 127.0.0.1 (in this process, on its own
//! data directory) and several clients posting batched NDJSON of the login workload to one
//! pipeline, with fresh, rising timestamps.
//!
//! Run with: cargo run --release -p cep-api --example ingest_load -- [DURABILITY] [EVENTS] [BATCH] [CLIENTS] [PATTERNS] [WORKERS]
//!
//! DURABILITY is write (default), fsync or off; the defaults are 1,000,000 events in batches of
//! 1,000 from 4 clients, and 1 pattern (the login pattern; with more, copies of it under other
//! names), on 1 worker thread (the pipeline's `workers`). Prints events/s, requests/s and the
//! outputs made.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use cep_api::ServeConfig;
use serde_json::json;

fn arg<T: std::str::FromStr>(i: usize, default: T) -> T {
    std::env::args()
        .nth(i)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let durability: cep_pipeline::store::Durability = arg(1, Default::default());
    let events: usize = arg(2, 1_000_000);
    let batch: usize = arg(3, 1_000);
    let clients: usize = arg(4, 4);
    let patterns: usize = arg(5, 1);
    let workers: usize = arg(6, 1);
    let dir = tempfile::tempdir()?;
    let config = ServeConfig {
        listen: "127.0.0.1:0".parse()?,
        data_dir: dir.path().to_path_buf(),
        durability,
        default_pipeline: false,
        log: "warn".into(),
        ..ServeConfig::default()
    };
    let server = cep_api::start(config).await?;
    let base = format!("http://{}", server.addr());
    let client = reqwest::Client::new();
    for i in 0..patterns {
        let name = if i == 0 {
            "login".to_string()
        } else {
            format!("login-{i}")
        };
        let r = client
            .post(format!("{base}/api/v1/patterns"))
            .json(&json!({
                "name": name, "within": "2s", "after_match": "skip_past_last_event",
                "stages": [{"name": "fail", "where": "type == 'fail'", "times": 3, "consecutive": true}]
            }))
            .send()
            .await?;
        anyhow::ensure!(r.status() == 201, "registering: {}", r.text().await?);
    }
    // Out-of-orderness covers the batches in flight at once, so that no event is late.
    let r = client
        .post(format!("{base}/api/v1/pipelines"))
        .json(
            &json!({"name": "load", "watermark": {"out_of_orderness": "60s"},
                      "workers": workers}),
        )
        .send()
        .await?;
    anyhow::ensure!(
        r.status() == 201,
        "creating the pipeline: {}",
        r.text().await?
    );
    // The bodies, made before the clock starts: 1,000 users, 2/3 of logins failed.
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let bodies: Vec<String> = (0..events.div_ceil(batch))
        .map(|b| {
            let mut body = String::with_capacity(batch * 60);
            for i in b * batch..((b + 1) * batch).min(events) {
                let ty = if next() % 3 == 0 { "ok" } else { "fail" };
                body.push_str(&format!(
                    "{{\"key\":\"u{}\",\"ts\":{},\"type\":\"{ty}\"}}\n",
                    next() % 1000,
                    1_700_000_000_000i64 + i as i64
                ));
            }
            body
        })
        .collect();
    let bodies = Arc::new(bodies);
    let taken = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (bodies, taken, client, base) =
            (bodies.clone(), taken.clone(), client.clone(), base.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = taken.fetch_add(1, Ordering::Relaxed);
                let Some(body) = bodies.get(i) else {
                    return anyhow::Ok(());
                };
                let r = client
                    .post(format!("{base}/api/v1/pipelines/load/events"))
                    .header("content-type", "application/x-ndjson")
                    .body(body.clone())
                    .send()
                    .await?;
                anyhow::ensure!(r.status() == 202, "ingest: {}", r.text().await?);
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let view: serde_json::Value = client
        .get(format!("{base}/api/v1/pipelines/load"))
        .send()
        .await?
        .json()
        .await?;
    println!(
        "durability={durability} events={events} batch={batch} clients={clients} patterns={patterns}: \
         {:.0} events/s, {:.0} requests/s, {:.2} s; counters {}",
        events as f64 / elapsed,
        bodies.len() as f64 / elapsed,
        elapsed,
        view["status"]["counters"]
    );
    server.shutdown().await?;
    Ok(())
}
