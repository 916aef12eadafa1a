//! Run with: cargo run --example generator -- --scenario login|sensor|order [--count N] [--seed S]
//!
//! Realistic demo traffic as JSON lines, the same for the same seed: normal activity with planted
//! incidents, in event time from 2026-01-01T09:00:00Z, arriving slightly out of order (less than
//! `--out-of-orderness`, default 500 ms, so `cep run --out-of-orderness 500ms` sees no late event).
//!
//! - `login`: `{"user","ts","type":"success"|"fail","ip"}`: users mostly log in fine; now and then
//!   a brute-force burst (3 to 5 failures within about a second from one address) or a slow
//!   distributed attempt (failures from 3 or 4 addresses within 45 s).
//! - `sensor`: `{"sensor","ts","temp"}`: 20 sensors every second, a random walk around 21 °C;
//!   some sensors heat up for a minute, go silent for 40 s, or dip below freezing.
//! - `order`: `{"order","ts","type":"created"|"paid","amount"}`: most orders are paid within
//!   1 to 14 min, some never, a few after 16 to 25 min.
//!
//! Output goes to stdout, or with `--url URL` is POSTed as NDJSON in batches of `--batch` events
//! (default 500) to a `cep serve` ingest endpoint such as
//! `http://127.0.0.1:8080/api/v1/pipelines/logins/events`, optionally at `--rate` events per
//! second and with `--token` as bearer token.
//!
//! With `--kafka BOOTSTRAP --topic TOPIC` the events are produced to a Kafka topic instead (created
//! with `--partitions` partitions, default 4, if it does not exist), keyed by the scenario's key
//! (user, sensor or order id) so that each key stays on one partition, with the event time as
//! record timestamp. `--end-marker` then writes one more event to every partition,
//! `{"<key>":"_end","ts":T,"type":"end-of-traffic"}` with `T` = the last event time +
//! `--out-of-orderness` + 5 s: a pipeline with that bound (per-partition watermarks, as `cep
//! kafka` has) then sees its watermark pass every generated event by 5 s, so the traffic is
//! evaluated to its end although the stream stays open. `--rate` paces Kafka output too.

mod common;

use std::io::{BufWriter, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use cep_runtime::kafka::rdkafka;
use common::{arrival_order, clock, kafka, SplitMix64, T0};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::ClientContext;
use serde_json::{json, Value};

struct Args {
    scenario: String,
    count: usize,
    seed: u64,
    out_of_orderness_ms: i64,
    url: Option<String>,
    batch: usize,
    rate: f64,
    token: Option<String>,
    kafka: Option<String>,
    topic: Option<String>,
    partitions: i32,
    end_marker: bool,
}

const USAGE: &str = "usage: generator --scenario login|sensor|order [--count N] [--seed S] \
     [--out-of-orderness MS] [--rate EVENTS_PER_S] \
     [--url URL [--batch N] [--token T] | --kafka BOOTSTRAP --topic T [--partitions N] [--end-marker]]";

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        scenario: String::new(),
        count: 1000,
        seed: 42,
        out_of_orderness_ms: 500,
        url: None,
        batch: 500,
        rate: 0.0,
        token: None,
        kafka: None,
        topic: None,
        partitions: 4,
        end_marker: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--scenario" => args.scenario = value()?,
            "--count" => args.count = value()?.parse().context("--count")?,
            "--seed" => args.seed = value()?.parse().context("--seed")?,
            "--out-of-orderness" => {
                let v = value()?;
                let ms = v.strip_suffix("ms").unwrap_or(&v);
                args.out_of_orderness_ms = ms.parse().context("--out-of-orderness (in ms)")?;
            }
            "--url" => args.url = Some(value()?),
            "--batch" => args.batch = value()?.parse::<usize>().context("--batch")?.max(1),
            "--rate" => args.rate = value()?.parse().context("--rate")?,
            "--token" => args.token = Some(value()?),
            "--kafka" => args.kafka = Some(value()?),
            "--topic" => args.topic = Some(value()?),
            "--partitions" => args.partitions = value()?.parse().context("--partitions")?,
            "--end-marker" => args.end_marker = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    if args.url.is_some() && args.kafka.is_some() {
        bail!("--url and --kafka exclude each other: send to the service or to Kafka");
    }
    if args.kafka.is_some() != args.topic.is_some() {
        bail!("--kafka BOOTSTRAP and --topic TOPIC go together");
    }
    if args.kafka.is_none() && args.end_marker {
        bail!("--end-marker needs --kafka (it writes one marker to each partition)");
    }
    if args.partitions < 1 {
        bail!("--partitions must be at least 1");
    }
    if args.out_of_orderness_ms < 0 {
        bail!("--out-of-orderness must not be negative");
    }
    if !(args.rate >= 0.0 && args.rate.is_finite()) {
        bail!("--rate must be a number of events per second (0: as fast as possible)");
    }
    Ok(args)
}

/// Login traffic: (timestamp, event) in event-time order, at least `count` events.
fn login(count: usize, rng: &mut SplitMix64) -> Vec<(i64, Value)> {
    let users = 50;
    let home_ip = |u: u64| format!("10.0.{}.{}", u / 200, u % 200 + 10);
    let mut out = Vec::new();
    let mut t = T0;
    while out.len() < count {
        t += 50 + rng.below(400) as i64;
        let u = rng.below(users);
        let user = format!("u{u:03}");
        let roll = rng.below(1000);
        if roll < 8 {
            // A brute-force burst from one foreign address.
            let ip = format!("203.0.113.{}", rng.below(250) + 1);
            let n = 3 + rng.below(3);
            let mut at = t;
            for _ in 0..n {
                out.push((
                    at,
                    json!({"user": user, "ts": at, "type": "fail", "ip": ip}),
                ));
                at += 150 + rng.below(300) as i64;
            }
        } else if roll < 12 {
            // A slow distributed attempt: failures from several addresses within 45 s.
            let n = 3 + rng.below(2);
            let mut at = t;
            for k in 0..n {
                let ip = format!("198.51.100.{}", (rng.below(60) + 1) * 4 + k);
                out.push((
                    at,
                    json!({"user": user, "ts": at, "type": "fail", "ip": ip}),
                ));
                at += 5_000 + rng.below(9_000) as i64;
            }
        } else {
            // Normal use: mostly successes, a typo now and then.
            let kind = if rng.below(100) < 8 {
                "fail"
            } else {
                "success"
            };
            out.push((
                t,
                json!({"user": user, "ts": t, "type": kind, "ip": home_ip(u)}),
            ));
        }
    }
    out.sort_by_key(|(ts, _)| *ts);
    out
}

/// Sensor readings: 20 sensors, one reading per second each.
fn sensor(count: usize, rng: &mut SplitMix64) -> Vec<(i64, Value)> {
    let sensors = 20usize;
    let mut temp: Vec<f64> = (0..sensors).map(|_| 20.0 + rng.unit() * 2.0).collect();
    // Per sensor: an incident, and the second it started.
    let mut incident: Vec<Option<(u64, i64)>> = vec![None; sensors];
    let mut out = Vec::new();
    let mut second = 0i64;
    while out.len() < count {
        for (s, temp) in temp.iter_mut().enumerate() {
            let at = T0 + second * 1000 + s as i64 * 37;
            if incident[s].is_none() && rng.below(800) == 0 {
                incident[s] = Some((rng.below(4), second));
            }
            let mut silent = false;
            match incident[s] {
                // Heating up: +0.4 °C per reading for 10 readings, then a minute near 34 °C.
                Some((0, since)) if second - since < 10 => *temp += 0.4,
                Some((0, since)) if second - since < 70 => *temp = 34.0 + rng.unit() - 0.5,
                Some((0, _)) => {
                    *temp = 21.0;
                    incident[s] = None;
                }
                // Silent for 40 s.
                Some((1, since)) if second - since < 40 => silent = true,
                // Below freezing for 5 readings.
                Some((2, since)) if second - since < 5 => *temp = -1.0 - rng.unit() * 2.0,
                Some((2, _)) => {
                    *temp = 21.0;
                    incident[s] = None;
                }
                // A steady rise: +0.3 °C at 5 readings in a row.
                Some((3, since)) if second - since < 5 => *temp += 0.3,
                Some(_) => incident[s] = None,
                None => *temp += (rng.unit() - 0.5) * 0.3,
            }
            if !silent {
                let t = (*temp * 10.0).round() / 10.0;
                out.push((
                    at,
                    json!({"sensor": format!("s{s:02}"), "ts": at, "temp": t}),
                ));
            }
        }
        second += 1;
    }
    out
}

/// Orders: created every few seconds; paid later, or not.
fn order(count: usize, rng: &mut SplitMix64) -> Vec<(i64, Value)> {
    let mut out = Vec::new();
    let mut t = T0;
    let mut n = 0u64;
    // Payments come later, so create enough orders that the first `count` events in time order
    // are all there, then cut.
    while out.len() < count * 2 {
        n += 1;
        t += 1000 + rng.below(8000) as i64;
        let id = format!("o-{n:06}");
        let amount = (rng.below(20_000) + 500) as f64 / 100.0;
        out.push((
            t,
            json!({"order": id, "ts": t, "type": "created", "amount": amount}),
        ));
        let roll = rng.below(100);
        let delay = if roll < 80 {
            Some(60_000 + rng.below(13 * 60_000) as i64)
        } else if roll < 95 {
            None
        } else {
            Some(16 * 60_000 + rng.below(9 * 60_000) as i64)
        };
        if let Some(d) = delay {
            out.push((
                t + d,
                json!({"order": id, "ts": t + d, "type": "paid", "amount": amount}),
            ));
        }
    }
    out.sort_by_key(|(ts, _)| *ts);
    out
}

/// POSTs one NDJSON batch over a plain HTTP/1.1 connection; returns the response body.
fn post(url: &str, token: Option<&str>, body: &[u8]) -> anyhow::Result<String> {
    let rest = url
        .strip_prefix("http://")
        .context("--url must start with http:// (no TLS in this small client)")?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let mut stream = TcpStream::connect(host).with_context(|| format!("connecting to {host}"))?;
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/x-ndjson\r\n\
         Content-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if let Some(t) = token {
        head.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response.split(' ').nth(1).unwrap_or("");
    let body = response
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    if !status.starts_with('2') {
        bail!("POST {url} answered {status}: {body}");
    }
    Ok(body)
}

/// Counts the records the broker did not take, keeping the first error.
#[derive(Default)]
struct Deliveries {
    failed: std::sync::Mutex<(u64, Option<String>)>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            let mut failed = self.failed.lock().unwrap_or_else(|p| p.into_inner());
            failed.0 += 1;
            failed.1.get_or_insert_with(|| e.to_string());
        }
    }
}

/// Queues one record, waiting while the producer's local queue is full.
fn produce(
    producer: &BaseProducer<Deliveries>,
    mut record: BaseRecord<'_, str, str>,
) -> anyhow::Result<()> {
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                record = r;
                producer.poll(Duration::from_millis(50));
            }
            Err((e, r)) => bail!("producing to {}: {e}", r.topic),
        }
    }
}

/// Produces `events` to `topic`, keyed by `key_field`, each with its event time as timestamp;
/// then, with `end_marker`, one end-of-traffic event per partition. Waits for every
/// acknowledgement.
fn to_kafka(args: &Args, bootstrap: &str, topic: &str, events: &[Value]) -> anyhow::Result<()> {
    let key_field = match args.scenario.as_str() {
        "login" => "user",
        "sensor" => "sensor",
        _ => "order",
    };
    let partitions = kafka::create_topics(bootstrap, &[(topic, args.partitions)])?[0];
    let producer: BaseProducer<Deliveries> = kafka::client_config(bootstrap)?
        // Idempotence keeps each partition in the order sent (the out-of-orderness bound holds
        // per partition), also across retries.
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "30000")
        .create_with_context(Deliveries::default())
        .context("creating the Kafka producer")?;
    let started = Instant::now();
    let mut last_ts = i64::MIN;
    for (i, e) in events.iter().enumerate() {
        let key = e[key_field].as_str().unwrap_or_default();
        let ts = e["ts"].as_i64().unwrap_or_default();
        last_ts = last_ts.max(ts);
        let payload = e.to_string();
        produce(
            &producer,
            BaseRecord::to(topic)
                .key(key)
                .payload(payload.as_str())
                .timestamp(ts),
        )?;
        producer.poll(Duration::ZERO);
        if args.rate > 0.0 {
            let due = Duration::from_secs_f64((i + 1) as f64 / args.rate);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(wait);
            }
        }
    }
    let mut marker_note = String::new();
    if args.end_marker && !events.is_empty() {
        let end = last_ts + args.out_of_orderness_ms + 5_000;
        let marker = json!({key_field: "_end", "ts": end, "type": "end-of-traffic"}).to_string();
        for p in 0..partitions {
            produce(
                &producer,
                BaseRecord::to(topic)
                    .key("_end")
                    .payload(marker.as_str())
                    .partition(p)
                    .timestamp(end),
            )?;
        }
        marker_note = format!(
            ", then an end-of-traffic marker at {} on each partition",
            clock(end)
        );
    }
    producer
        .flush(kafka::TIMEOUT)
        .with_context(|| format!("waiting for {bootstrap} to acknowledge the events"))?;
    let failed = producer
        .context()
        .failed
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    if let (n, Some(first)) = failed {
        bail!("{n} events were not delivered to {topic}: {first}");
    }
    eprintln!(
        "produced {} {} events to {topic} ({partitions} partitions, keyed by {key_field}) at {bootstrap}{marker_note}",
        events.len(),
        args.scenario
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let mut rng = SplitMix64::new(args.seed);
    let events = match args.scenario.as_str() {
        "login" => login(args.count, &mut rng),
        "sensor" => sensor(args.count, &mut rng),
        "order" => order(args.count, &mut rng),
        other => bail!("--scenario must be login, sensor or order, not {other:?}"),
    };
    let events = arrival_order(
        events.into_iter().take(args.count).collect(),
        args.out_of_orderness_ms,
        &mut rng,
    );

    if let (Some(bootstrap), Some(topic)) = (&args.kafka, &args.topic) {
        return to_kafka(&args, bootstrap, topic, &events);
    }
    match &args.url {
        None => {
            let mut out = BufWriter::new(std::io::stdout().lock());
            let written = events
                .iter()
                .try_for_each(|e| writeln!(out, "{e}"))
                .and_then(|()| out.flush());
            match written {
                // The reader stopped early (`| head`): that is not an error.
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
                other => other?,
            }
        }
        Some(url) => {
            let started = Instant::now();
            let (mut sent, mut accepted, mut rejected) = (0usize, 0u64, 0u64);
            for batch in events.chunks(args.batch) {
                let mut body = Vec::new();
                for e in batch {
                    serde_json::to_writer(&mut body, e)?;
                    body.push(b'\n');
                }
                let answer = post(url, args.token.as_deref(), &body)?;
                let answer: Value = serde_json::from_str(answer.trim()).unwrap_or(Value::Null);
                accepted += answer["accepted"].as_u64().unwrap_or(0);
                rejected += answer["rejected"].as_u64().unwrap_or(0);
                sent += batch.len();
                if args.rate > 0.0 {
                    let due = Duration::from_secs_f64(sent as f64 / args.rate);
                    if let Some(wait) = due.checked_sub(started.elapsed()) {
                        std::thread::sleep(wait);
                    }
                }
            }
            eprintln!("sent {sent} events to {url}: {accepted} accepted, {rejected} rejected");
        }
    }
    Ok(())
}
