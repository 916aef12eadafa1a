//! Run with: cargo run --example kafka_topic -- create|read|count --bootstrap HOST:PORT ... TOPIC...
//!
//! A small Kafka tool for the walkthrough (`scripts/demo-kafka.sh`), where no kcat is at hand:
//!
//! - `create [--partitions N] TOPIC...`: creates the topics that do not exist yet (default 4
//!   partitions) and prints each topic's partition count.
//! - `read [--by-time] TOPIC...`: prints the value of every record of the topics, from the
//!   beginning to their current end, one per line, read with `isolation.level=read_committed`
//!   (records of aborted or open transactions are not shown). `--by-time` orders them by their
//!   JSON field `timestamp` (the time of a `cep` output), then by text, instead of as read.
//! - `count TOPIC...`: prints `TOPIC N`, the number of committed records of each topic.
//!
//! `read` and `count` take `--wait-group GROUP --wait-topic TOPIC`: first wait (up to `--timeout`
//! seconds, default 120) until the consumer group GROUP has committed offsets at the end of
//! TOPIC. A `cep kafka` pipeline commits its input offsets only once the outputs of the records
//! before them are acknowledged, so after this wait its outputs for everything in TOPIC are in
//! the output topics.

mod common;

use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use cep_runtime::kafka::rdkafka;
use common::kafka;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

const USAGE: &str = "usage: kafka_topic create --bootstrap HOST:PORT [--partitions N] TOPIC...
       kafka_topic read  --bootstrap HOST:PORT [--by-time] [--wait-group G --wait-topic T] [--timeout SECS] TOPIC...
       kafka_topic count --bootstrap HOST:PORT [--wait-group G --wait-topic T] [--timeout SECS] TOPIC...";

struct Args {
    command: String,
    bootstrap: String,
    partitions: i32,
    by_time: bool,
    wait_group: Option<String>,
    wait_topic: Option<String>,
    timeout: Duration,
    topics: Vec<String>,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut it = std::env::args().skip(1);
    let command = match it.next().as_deref() {
        Some(c @ ("create" | "read" | "count")) => c.to_string(),
        Some("-h" | "--help") => {
            println!("{USAGE}");
            std::process::exit(0);
        }
        Some(other) => bail!("unknown command {other:?}\n{USAGE}"),
        None => bail!("a command is needed\n{USAGE}"),
    };
    let mut args = Args {
        command,
        bootstrap: std::env::var("KAFKA_BOOTSTRAP").unwrap_or_default(),
        partitions: 4,
        by_time: false,
        wait_group: None,
        wait_topic: None,
        timeout: Duration::from_secs(120),
        topics: Vec::new(),
    };
    while let Some(arg) = it.next() {
        let mut value = || it.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--bootstrap" => args.bootstrap = value()?,
            "--partitions" if args.command == "create" => {
                args.partitions = value()?.parse().context("--partitions")?
            }
            "--by-time" if args.command == "read" => args.by_time = true,
            "--wait-group" if args.command != "create" => args.wait_group = Some(value()?),
            "--wait-topic" if args.command != "create" => args.wait_topic = Some(value()?),
            "--timeout" if args.command != "create" => {
                let v = value()?;
                let secs: f64 = v
                    .strip_suffix('s')
                    .unwrap_or(&v)
                    .parse()
                    .context("--timeout (seconds)")?;
                if !(secs > 0.0 && secs.is_finite()) {
                    bail!("--timeout must be a positive number of seconds");
                }
                args.timeout = Duration::from_secs_f64(secs);
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            flag if flag.starts_with('-') => {
                bail!("{flag} is not an option of {}\n{USAGE}", args.command)
            }
            topic => args.topics.push(topic.to_string()),
        }
    }
    if args.bootstrap.is_empty() {
        bail!("--bootstrap HOST:PORT is needed (or KAFKA_BOOTSTRAP)");
    }
    if args.topics.is_empty() {
        bail!("no topic given\n{USAGE}");
    }
    if args.wait_group.is_some() != args.wait_topic.is_some() {
        bail!("--wait-group and --wait-topic go together");
    }
    Ok(args)
}

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    if args.command == "create" {
        let topics: Vec<(&str, i32)> = args
            .topics
            .iter()
            .map(|t| (t.as_str(), args.partitions))
            .collect();
        let counts = kafka::create_topics(&args.bootstrap, &topics)?;
        for (topic, n) in args.topics.iter().zip(counts) {
            println!("{topic}: {n} partition{}", if n == 1 { "" } else { "s" });
        }
        return Ok(());
    }
    let deadline = Instant::now() + args.timeout;
    if let (Some(group), Some(topic)) = (&args.wait_group, &args.wait_topic) {
        wait_for_group(&args.bootstrap, group, topic, deadline)?;
    }
    for topic in &args.topics {
        let mut records = read_to_end(&args.bootstrap, topic, deadline)?;
        if args.command == "count" {
            println!("{topic} {}", records.len());
            continue;
        }
        if args.by_time {
            records.sort_by_cached_key(|r| {
                let ts = serde_json::from_str::<serde_json::Value>(r)
                    .ok()
                    .and_then(|v| v["timestamp"].as_i64())
                    .unwrap_or(i64::MAX);
                (ts, r.clone())
            });
        }
        for r in records {
            println!("{r}");
        }
    }
    Ok(())
}

fn partitions(consumer: &BaseConsumer, topic: &str) -> anyhow::Result<TopicPartitionList> {
    let mut tpl = TopicPartitionList::new();
    let metadata = consumer
        .fetch_metadata(Some(topic), kafka::TIMEOUT)
        .with_context(|| format!("reading the metadata of {topic}"))?;
    for t in metadata.topics().iter().filter(|t| t.name() == topic) {
        for p in t.partitions() {
            tpl.add_partition(topic, p.id());
        }
    }
    if tpl.count() == 0 {
        bail!("topic {topic} does not exist (or has no partitions)");
    }
    Ok(tpl)
}

/// Waits until `group` has committed, on every partition of `topic`, the partition's end offset.
fn wait_for_group(
    bootstrap: &str,
    group: &str,
    topic: &str,
    deadline: Instant,
) -> anyhow::Result<()> {
    // A client with the group's id that never subscribes reads the group's offsets without
    // joining it.
    let consumer: BaseConsumer = kafka::client_config(bootstrap)?
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .context("creating a Kafka client")?;
    let tpl = partitions(&consumer, topic)?;
    loop {
        let committed = consumer
            .committed_offsets(tpl.clone(), kafka::TIMEOUT)
            .with_context(|| format!("reading the committed offsets of group {group}"))?;
        // Every partition of the topic counts, also one without a committed offset (a broker may
        // leave it out of its answer). Only the end offsets are compared: some brokers report a
        // wrong start offset (noida-db answers the end for both).
        let mut behind = Vec::new();
        for e in tpl.elements() {
            let (_, end) = consumer
                .fetch_watermarks(topic, e.partition(), kafka::TIMEOUT)
                .with_context(|| format!("reading the end of {topic}/{}", e.partition()))?;
            let at = match committed
                .find_partition(topic, e.partition())
                .map(|c| c.offset())
            {
                Some(Offset::Offset(o)) => o,
                _ => 0,
            };
            if at < end {
                behind.push(format!("{}: {at}/{end}", e.partition()));
            }
        }
        if behind.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "timed out: group {group} has not committed the end of {topic} (partition: \
                 committed offset/end offset: {}); is its pipeline running? see its log",
                behind.join(", ")
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The values of every committed record of `topic`, from the beginning to its current end.
fn read_to_end(bootstrap: &str, topic: &str, deadline: Instant) -> anyhow::Result<Vec<String>> {
    let consumer: BaseConsumer = kafka::client_config(bootstrap)?
        .set("group.id", "cep-demo-reader")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("auto.offset.reset", "earliest")
        // The end of each partition is reported, so that reading stops there.
        .set("enable.partition.eof", "true")
        .create()
        .context("creating a Kafka consumer")?;
    let mut tpl = partitions(&consumer, topic)?;
    let mut open: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
    // Offset 0 rather than `Beginning`: a partition whose start was deleted is then read from its
    // start by `auto.offset.reset`, and no broker is asked for its start offset (noida-db answers
    // it wrongly).
    tpl.set_all_offsets(Offset::Offset(0))
        .context("setting the start offsets")?;
    consumer.assign(&tpl).context("assigning the partitions")?;
    let mut records = Vec::new();
    while !open.is_empty() {
        if Instant::now() >= deadline {
            bail!(
                "timed out reading {topic}: partitions {open:?} did not reach their end ({} records read)",
                records.len()
            );
        }
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Ok(m)) => records.push(
                m.payload()
                    .map_or("null".into(), |v| String::from_utf8_lossy(v).into_owned()),
            ),
            Some(Err(KafkaError::PartitionEOF(p))) => open.retain(|&q| q != p),
            Some(Err(e)) => bail!("reading {topic}: {e}"),
        }
    }
    Ok(records)
}
