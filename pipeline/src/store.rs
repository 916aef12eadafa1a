//! The service's durable store: one embedded RocksDB for the catalog (patterns, pipelines) and,
//! per pipeline, its write-ahead log, its checkpoint and its output log.
//!
//! Keys (pipeline and pattern names never hold `/`):
//!
//! | key | value |
//! |---|---|
//! | `pattern/<name>` | the pattern's JSON document |
//! | `pipeline/<name>` | the pipeline's record (spec, paused) |
//! | `wal/<pipeline>/<seq: u64 BE>` | one [`WalEntry`]: events accepted by one request, a watermark step, a pattern change |
//! | `ckpt/<pipeline>/m` | the checkpoint's [`CheckpointMeta`] |
//! | `ckpt/<pipeline>/k/<key>` | one key's engine state at the checkpoint |
//! | `out/<pipeline>/<seq: u64 BE>` | one output: wall-clock ms (u64 BE) then its JSON |
//!
//! Catalog changes are written synced. Everything a pipeline writes goes through one
//! [`Committer`] thread, in the order the pipeline handed it over: a request's log entry and the
//! outputs it produced are one atomic batch, and a request is answered only when its batch (and
//! so every batch before it) is written. With [`Durability::Fsync`] the thread syncs the log
//! once for all the batches it wrote together (group commit).
//!
//! A failed write leaves the engine ahead of the store: the store then refuses every later
//! batch ([`Store::failure`]), the service answers 503 and is not ready, and a restart restores
//! the last durable state.

use std::path::Path;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use anyhow::Context;
use rocksdb::{Direction, IteratorMode, Options, WriteBatch, WriteOptions, DB};
use serde::{Deserialize, Serialize};

const PATTERN: &str = "pattern/";
const PIPELINE: &str = "pipeline/";

/// When an accepted request is durable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// Written to the operating system before the answer: survives a crash of the process (the
    /// default), not a crash of the machine.
    #[default]
    Write,
    /// Synced to the disk before the answer (one sync for all the requests written together):
    /// survives a power loss.
    Fsync,
    /// Not logged: state lives in memory and is lost with the process (outputs are still
    /// logged). For benchmarks and throwaway pipelines.
    Off,
}

impl std::str::FromStr for Durability {
    type Err = String;
    fn from_str(s: &str) -> Result<Durability, String> {
        match s {
            "write" => Ok(Durability::Write),
            "fsync" => Ok(Durability::Fsync),
            "off" => Ok(Durability::Off),
            other => Err(format!(
                "unknown durability '{other}' (expected write, fsync or off)"
            )),
        }
    }
}

impl std::fmt::Display for Durability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Durability::Write => "write",
            Durability::Fsync => "fsync",
            Durability::Off => "off",
        })
    }
}

/// One entry of a pipeline's write-ahead log: what moved its engine, in order.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "entry", rename_all = "snake_case")]
pub enum WalEntry {
    /// The events one request had accepted, as JSON text, in the order they were handed to the
    /// engine; with the request's idempotency key and answer.
    Events {
        /// The client's `Idempotency-Key`, if it sent one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        /// What the request was answered (accepted, rejected).
        #[serde(default)]
        accepted: usize,
        /// Records refused.
        #[serde(default)]
        rejected: usize,
        /// The accepted events.
        events: Vec<Box<serde_json::value::RawValue>>,
    },
    /// The watermark moved to this time (a client's step, or idleness).
    Watermark {
        /// The new watermark.
        to: i64,
    },
    /// The patterns changed to these definitions.
    Patterns {
        /// Each pattern's `{"spec", "version"}`, in the pipeline's order.
        patterns: Vec<serde_json::Value>,
        /// How changed patterns took over (`drain` when absent).
        #[serde(default)]
        mode: cep_patterns::Replace,
    },
    /// The draining pattern versions that held nothing went.
    Retire,
}

/// The stored form of a [`WalEntry`] as read back: serde reads raw JSON values only from the
/// input itself, never through an internally tagged enum's buffer.
#[derive(Deserialize)]
struct StoredEntry<'a> {
    entry: &'a str,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    accepted: usize,
    #[serde(default)]
    rejected: usize,
    #[serde(default)]
    events: Vec<Box<serde_json::value::RawValue>>,
    #[serde(default)]
    to: Option<i64>,
    #[serde(default)]
    patterns: Vec<serde_json::Value>,
    #[serde(default)]
    mode: cep_patterns::Replace,
}

impl WalEntry {
    /// Reads an entry as written.
    pub fn read(bytes: &[u8]) -> Result<WalEntry, String> {
        let e: StoredEntry<'_> = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        match (e.entry, e.to) {
            ("events", _) => Ok(WalEntry::Events {
                id: e.id,
                accepted: e.accepted,
                rejected: e.rejected,
                events: e.events,
            }),
            ("watermark", Some(to)) => Ok(WalEntry::Watermark { to }),
            ("patterns", _) => Ok(WalEntry::Patterns {
                patterns: e.patterns,
                mode: e.mode,
            }),
            ("retire", _) => Ok(WalEntry::Retire),
            (other, _) => Err(format!("unknown log entry '{other}'")),
        }
    }
}

/// What a checkpoint holds beside its keys.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CheckpointMeta {
    /// Log entries up to this one are in the checkpoint.
    pub wal_seq: u64,
    /// The next output's `seq`.
    pub next_out: u64,
    /// The highest event time seen.
    pub max_ts: i64,
    /// The watermark.
    pub watermark: i64,
    /// What the state belongs to: the parts of the spec the engine depends on.
    pub fingerprint: serde_json::Value,
    /// The pattern versions the state was built with: `{"spec", "version", "draining"}`.
    pub patterns: Vec<serde_json::Value>,
    /// With several workers, each worker's pattern versions (a draining version leaves each
    /// worker on its own), when they differ from `patterns`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_patterns: Option<Vec<Vec<serde_json::Value>>>,
    /// Counters of the pipeline.
    pub counters: serde_json::Value,
    /// Recent idempotency keys and their answers, oldest first.
    #[serde(default)]
    pub ids: Vec<(String, usize, usize)>,
}

type Done = Box<dyn FnOnce(Result<(), String>) + Send>;

struct Job {
    batch: WriteBatch,
    done: Done,
}

/// The thread that writes pipeline batches in order (see the module docs).
struct Committer {
    queue: Mutex<Option<mpsc::Sender<Job>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// The service's RocksDB database.
pub struct Store {
    db: Arc<DB>,
    durability: Durability,
    failure: Arc<Mutex<Option<String>>>,
    committer: Committer,
}

/// The largest number of batches written before one sync.
const GROUP: usize = 512;

impl Store {
    /// Opens (or creates) the database in `dir`.
    pub fn open(dir: &Path, durability: Durability) -> anyhow::Result<Store> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating the data directory {}", dir.display()))?;
        let mut options = Options::default();
        options.create_if_missing(true);
        options.set_keep_log_file_num(4);
        let db = Arc::new(
            DB::open(&options, dir)
                .with_context(|| format!("opening the RocksDB store in {}", dir.display()))?,
        );
        let failure = Arc::new(Mutex::new(None));
        let (tx, rx) = mpsc::channel::<Job>();
        let thread = {
            let db = db.clone();
            let failure = failure.clone();
            std::thread::Builder::new()
                .name("cep-committer".into())
                .spawn(move || commit_loop(&db, durability, &failure, rx))
                .context("starting the committer thread")?
        };
        Ok(Store {
            db,
            durability,
            failure,
            committer: Committer {
                queue: Mutex::new(Some(tx)),
                thread: Mutex::new(Some(thread)),
            },
        })
    }

    /// When accepted requests are durable.
    pub fn durability(&self) -> Durability {
        self.durability
    }

    /// Why the store refuses writes, after a failed one.
    pub fn failure(&self) -> Option<String> {
        lock(&self.failure).clone()
    }

    /// Hands a batch to the committer; `done` is called on its thread once the batch is written
    /// (or failed), after every batch handed over before it.
    pub fn commit(
        &self,
        batch: WriteBatch,
        done: impl FnOnce(Result<(), String>) + Send + 'static,
    ) {
        let job = Job {
            batch,
            done: Box::new(done),
        };
        let queue = lock(&self.committer.queue);
        match queue.as_ref() {
            Some(tx) => {
                if let Err(mpsc::SendError(job)) = tx.send(job) {
                    (job.done)(Err("the store is closed".into()));
                }
            }
            None => (job.done)(Err("the store is closed".into())),
        }
    }

    /// Commits a batch and waits for it.
    pub fn commit_wait(&self, batch: WriteBatch) -> Result<(), String> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.commit(batch, move |r| {
            let _ = tx.send(r);
        });
        rx.recv()
            .unwrap_or_else(|_| Err("the committer stopped".into()))
    }

    /// Stops the committer after the batches handed over so far.
    pub fn close(&self) {
        lock(&self.committer.queue).take();
        if let Some(t) = lock(&self.committer.thread).take() {
            let _ = t.join();
        }
    }

    fn put_synced(&self, key: String, value: &[u8]) -> anyhow::Result<()> {
        let mut write = WriteOptions::default();
        write.set_sync(true);
        self.db
            .put_opt(key.as_bytes(), value, &write)
            .with_context(|| format!("writing {key}"))
    }

    fn delete_synced(&self, key: String) -> anyhow::Result<()> {
        let mut write = WriteOptions::default();
        write.set_sync(true);
        self.db
            .delete_opt(key.as_bytes(), &write)
            .with_context(|| format!("deleting {key}"))
    }

    /// Every (key after the prefix, value) under `prefix`, in key order.
    pub fn scan(&self, prefix: &[u8]) -> anyhow::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut out = Vec::new();
        self.scan_with(prefix, prefix, |k, v| {
            out.push((k.to_vec(), v.to_vec()));
            true
        })?;
        Ok(out)
    }

    /// Calls `f` with (key after `prefix`, value) for the keys under `prefix` from `from` on,
    /// while it returns true.
    pub fn scan_with(
        &self,
        prefix: &[u8],
        from: &[u8],
        mut f: impl FnMut(&[u8], &[u8]) -> bool,
    ) -> anyhow::Result<()> {
        let iter = self
            .db
            .iterator(IteratorMode::From(from, Direction::Forward));
        for item in iter {
            let (key, value) =
                item.with_context(|| format!("scanning {}", String::from_utf8_lossy(prefix)))?;
            let Some(rest) = key.strip_prefix(prefix) else {
                break;
            };
            if !f(rest, &value) {
                break;
            }
        }
        Ok(())
    }

    /// The last key under `prefix` (after the prefix), if any.
    pub fn last_under(&self, prefix: &[u8]) -> anyhow::Result<Option<Vec<u8>>> {
        let mut end = prefix.to_vec();
        // Names never hold 0xff: the prefix with its last byte incremented bounds it.
        if let Some(last) = end.last_mut() {
            *last += 1;
        }
        let mut iter = self
            .db
            .iterator(IteratorMode::From(&end, Direction::Reverse));
        match iter.next() {
            Some(item) => {
                let (key, _) = item.context("reading the store")?;
                Ok(key.strip_prefix(prefix).map(|k| k.to_vec()))
            }
            None => Ok(None),
        }
    }

    /// One value.
    pub fn get(&self, key: &[u8]) -> anyhow::Result<Option<Vec<u8>>> {
        self.db.get(key).context("reading the store")
    }

    fn scan_names(&self, prefix: &str) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
        Ok(self
            .scan(prefix.as_bytes())?
            .into_iter()
            .map(|(k, v)| (String::from_utf8_lossy(&k).into_owned(), v))
            .collect())
    }

    /// Stores a pattern's JSON document.
    pub fn put_pattern(&self, name: &str, json: &str) -> anyhow::Result<()> {
        self.put_synced(format!("{PATTERN}{name}"), json.as_bytes())
    }

    /// Removes a pattern.
    pub fn delete_pattern(&self, name: &str) -> anyhow::Result<()> {
        self.delete_synced(format!("{PATTERN}{name}"))
    }

    /// Every stored pattern: (name, JSON document).
    pub fn patterns(&self) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
        self.scan_names(PATTERN)
    }

    /// Stores a pipeline's record.
    pub fn put_pipeline(&self, name: &str, json: &[u8]) -> anyhow::Result<()> {
        self.put_synced(format!("{PIPELINE}{name}"), json)
    }

    /// Removes a pipeline with its log, checkpoint and outputs.
    pub fn delete_pipeline(&self, name: &str) -> anyhow::Result<()> {
        let mut batch = WriteBatch::default();
        for prefix in [
            Keys::new(name).wal_prefix(),
            Keys::new(name).ckpt_prefix(),
            Keys::new(name).out_prefix(),
        ] {
            let mut end = prefix.clone();
            if let Some(last) = end.last_mut() {
                *last += 1;
            }
            batch.delete_range(prefix, end);
        }
        batch.delete(format!("outputs/{name}"));
        batch.delete(format!("{PIPELINE}{name}"));
        self.commit_wait(batch)
            .map_err(|e| anyhow::anyhow!("deleting pipeline {name}: {e}"))
    }

    /// Every stored pipeline: (name, record).
    pub fn pipelines(&self) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
        self.scan_names(PIPELINE)
    }

    /// Flushes the memtables to disk.
    pub fn flush(&self) -> anyhow::Result<()> {
        self.db.flush().context("flushing the store")
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.close();
    }
}

fn commit_loop(
    db: &DB,
    durability: Durability,
    failure: &Mutex<Option<String>>,
    rx: mpsc::Receiver<Job>,
) {
    let mut group = Vec::with_capacity(GROUP);
    while let Ok(first) = rx.recv() {
        group.push(first);
        while group.len() < GROUP {
            match rx.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        let mut result = lock(failure).clone().map_or(Ok(()), Err);
        let mut written = 0;
        if result.is_ok() {
            for job in &mut group {
                let batch = std::mem::take(&mut job.batch);
                if let Err(e) = db.write(batch) {
                    result = Err(format!("writing to the store failed: {e}"));
                    break;
                }
                written += 1;
            }
        }
        if result.is_ok() && durability == Durability::Fsync {
            if let Err(e) = db.flush_wal(true) {
                result = Err(format!("syncing the store failed: {e}"));
                written = 0;
            }
        }
        if let Err(e) = &result {
            tracing::error!(error = %e, "the store refuses writes from now on");
            lock(failure).get_or_insert_with(|| e.clone());
        }
        for (i, job) in group.drain(..).enumerate() {
            let r = if i < written && durability != Durability::Fsync {
                Ok(())
            } else {
                result.clone()
            };
            (job.done)(r);
        }
    }
}

/// The keys of one pipeline's log, checkpoint and outputs.
#[derive(Clone, Debug)]
pub struct Keys {
    name: String,
}

impl Keys {
    /// The keys of pipeline `name`.
    pub fn new(name: &str) -> Keys {
        Keys {
            name: name.to_string(),
        }
    }

    /// `wal/<name>/`.
    pub fn wal_prefix(&self) -> Vec<u8> {
        format!("wal/{}/", self.name).into_bytes()
    }

    /// `wal/<name>/<seq>`.
    pub fn wal(&self, seq: u64) -> Vec<u8> {
        let mut k = self.wal_prefix();
        k.extend_from_slice(&seq.to_be_bytes());
        k
    }

    /// `ckpt/<name>/`.
    pub fn ckpt_prefix(&self) -> Vec<u8> {
        format!("ckpt/{}/", self.name).into_bytes()
    }

    /// `ckpt/<name>/m`.
    pub fn meta(&self) -> Vec<u8> {
        let mut k = self.ckpt_prefix();
        k.push(b'm');
        k
    }

    /// `ckpt/<name>/k/`.
    pub fn state_prefix(&self) -> Vec<u8> {
        let mut k = self.ckpt_prefix();
        k.extend_from_slice(b"k/");
        k
    }

    /// `ckpt/<name>/k/<key>`.
    pub fn state(&self, key: &str) -> Vec<u8> {
        let mut k = self.state_prefix();
        k.extend_from_slice(key.as_bytes());
        k
    }

    /// `out/<name>/`.
    pub fn out_prefix(&self) -> Vec<u8> {
        format!("out/{}/", self.name).into_bytes()
    }

    /// `out/<name>/<seq>`.
    pub fn out(&self, seq: u64) -> Vec<u8> {
        let mut k = self.out_prefix();
        k.extend_from_slice(&seq.to_be_bytes());
        k
    }
}

/// A big-endian `u64` key suffix.
pub fn seq_of(suffix: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(suffix.try_into().ok()?))
}

/// The wall clock in ms.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_prefix_scan() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path(), Durability::Write).unwrap();
            store.put_pattern("a", "{\"name\":\"a\"}").unwrap();
            store.put_pattern("b", "{\"name\":\"b\"}").unwrap();
            store.put_pipeline("p", b"{}").unwrap();
            store.delete_pattern("a").unwrap();
            store.flush().unwrap();
        }
        let store = Store::open(dir.path(), Durability::Write).unwrap();
        let patterns = store.patterns().unwrap();
        assert_eq!(patterns.len(), 1);
        assert_eq!(patterns[0].0, "b");
        assert_eq!(store.pipelines().unwrap().len(), 1);
    }

    #[test]
    fn log_entries_read_back_as_written() {
        let events =
            vec![serde_json::value::RawValue::from_string(r#"{"a": [1, 2]}"#.into()).unwrap()];
        let entries = [
            WalEntry::Events {
                id: Some("b-1".into()),
                accepted: 1,
                rejected: 2,
                events,
            },
            WalEntry::Watermark { to: -5 },
            WalEntry::Patterns {
                patterns: vec![serde_json::json!({"name": "p"})],
                mode: cep_patterns::Replace::Restart,
            },
            WalEntry::Retire,
        ];
        for entry in entries {
            let bytes = serde_json::to_vec(&entry).unwrap();
            let back = WalEntry::read(&bytes).unwrap();
            assert_eq!(serde_json::to_vec(&back).unwrap(), bytes);
        }
        assert!(WalEntry::read(br#"{"entry":"other"}"#).is_err());
        assert!(WalEntry::read(b"{").is_err());
    }

    #[test]
    fn batches_are_written_in_order_and_pipelines_deleted_whole() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), Durability::Fsync).unwrap();
        let keys = Keys::new("p");
        let other = Keys::new("p2");
        let (tx, rx) = mpsc::channel();
        for seq in 1..=100u64 {
            let mut batch = WriteBatch::default();
            batch.put(keys.wal(seq), seq.to_string());
            batch.put(other.wal(seq), seq.to_string());
            let tx = tx.clone();
            store.commit(batch, move |r| tx.send((seq, r)).unwrap());
        }
        let done: Vec<_> = rx.iter().take(100).collect();
        assert!(done.iter().all(|(_, r)| r.is_ok()));
        assert_eq!(
            done.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
            (1..=100).collect::<Vec<_>>()
        );
        let wal = store.scan(&keys.wal_prefix()).unwrap();
        assert_eq!(wal.len(), 100);
        assert_eq!(seq_of(&wal[99].0), Some(100));
        assert_eq!(
            store
                .last_under(&keys.wal_prefix())
                .unwrap()
                .as_deref()
                .and_then(seq_of),
            Some(100)
        );
        store.put_pipeline("p", b"{}").unwrap();
        store.delete_pipeline("p").unwrap();
        assert!(store.scan(&keys.wal_prefix()).unwrap().is_empty());
        assert_eq!(store.scan(&other.wal_prefix()).unwrap().len(), 100);
        assert!(store.pipelines().unwrap().is_empty());
    }
}
