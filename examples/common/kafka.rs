//! Kafka helpers of the demos (the generator and `kafka_topic`): client configuration, topic
//! creation and partition counts, with the rdkafka that `cep_runtime::kafka` re-exports, the
//! same client library and version as `cep kafka`.

use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use cep_runtime::kafka::rdkafka;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientConfig;

/// How long a request to the broker may take before the demo gives up.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// A client configuration for `bootstrap`, with an error if it is obviously not an address.
pub fn client_config(bootstrap: &str) -> anyhow::Result<ClientConfig> {
    if bootstrap.trim().is_empty() || bootstrap.split(',').any(|b| !b.contains(':')) {
        bail!("the bootstrap servers must be host:port[,host:port...], not {bootstrap:?}");
    }
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap)
        // Fail within the timeout instead of retrying forever when no broker answers.
        .set("socket.timeout.ms", "10000");
    Ok(c)
}

struct Unpark(std::thread::Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// Runs a future to completion on this thread. rdkafka's admin futures are completed by the
/// client's own background thread, so no executor is needed.
pub fn block_on<F: Future>(future: F) -> F::Output {
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        if let Poll::Ready(v) = future.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park();
    }
}

fn check_topic_name(topic: &str) -> anyhow::Result<()> {
    let valid = !topic.is_empty()
        && topic.len() <= 249
        && topic != "."
        && topic != ".."
        && topic
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !valid {
        bail!("{topic:?} is not a valid topic name (1 to 249 of a-z A-Z 0-9 . _ -)");
    }
    Ok(())
}

/// Creates each `(topic, partitions)` that does not exist yet (a topic that exists is left as it
/// is) and returns every topic's partition count, as the broker reports it.
pub fn create_topics(bootstrap: &str, topics: &[(&str, i32)]) -> anyhow::Result<Vec<i32>> {
    for (topic, partitions) in topics {
        check_topic_name(topic)?;
        if *partitions < 1 {
            bail!("{topic}: the partition count must be at least 1, not {partitions}");
        }
    }
    let admin: AdminClient<DefaultClientContext> = client_config(bootstrap)?
        .create()
        .context("creating the Kafka admin client")?;
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|(t, n)| NewTopic::new(t, *n, TopicReplication::Fixed(1)))
        .collect();
    let options = AdminOptions::new()
        .request_timeout(Some(TIMEOUT))
        .operation_timeout(Some(TIMEOUT));
    let results = block_on(admin.create_topics(&new, &options))
        .with_context(|| format!("creating topics at {bootstrap} (is a broker running there?)"))?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => bail!("creating topic {topic} at {bootstrap}: {code}"),
        }
    }
    topics
        .iter()
        .map(|(t, _)| partition_count(bootstrap, t))
        .collect()
}

/// The number of partitions of `topic`; an error if it does not exist. A topic just created may
/// take a moment to appear in the metadata, so this asks again for a while.
pub fn partition_count(bootstrap: &str, topic: &str) -> anyhow::Result<i32> {
    check_topic_name(topic)?;
    let consumer: BaseConsumer = client_config(bootstrap)?
        .create()
        .context("creating a Kafka client")?;
    let started = Instant::now();
    loop {
        let metadata = consumer
            .fetch_metadata(Some(topic), TIMEOUT)
            .with_context(|| format!("reading the metadata of {topic} at {bootstrap}"))?;
        let found = metadata.topics().iter().find(|t| t.name() == topic);
        let partitions = found.map_or(0, |t| t.partitions().len());
        if partitions > 0 {
            return Ok(partitions as i32);
        }
        if started.elapsed() > Duration::from_secs(10) {
            let why = found
                .and_then(|t| t.error())
                .map(|e| format!("{:?}", RDKafkaErrorCode::from(e)))
                .unwrap_or_else(|| "no partitions".into());
            bail!("topic {topic} is not available at {bootstrap}: {why}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
