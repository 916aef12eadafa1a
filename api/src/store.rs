//! Durable state in an embedded RocksDB: patterns, pipelines and each pipeline's recent outputs.
//!
//! Keys are `pattern/<name>`, `pipeline/<name>` and `outputs/<pipeline>`; values are JSON.
//! Catalog writes (patterns, pipelines) are synced before the request is answered.

use std::path::Path;

use anyhow::Context;
use rocksdb::{Direction, IteratorMode, Options, WriteOptions, DB};

const PATTERN: &str = "pattern/";
const PIPELINE: &str = "pipeline/";
const OUTPUTS: &str = "outputs/";

/// The service's RocksDB database.
pub struct Store {
    db: DB,
}

impl Store {
    /// Opens (or creates) the database in `dir`.
    pub fn open(dir: &Path) -> anyhow::Result<Store> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating the data directory {}", dir.display()))?;
        let mut options = Options::default();
        options.create_if_missing(true);
        options.set_keep_log_file_num(4);
        let db = DB::open(&options, dir)
            .with_context(|| format!("opening the RocksDB store in {}", dir.display()))?;
        Ok(Store { db })
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

    fn scan(&self, prefix: &str) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
        let mut out = Vec::new();
        let iter = self
            .db
            .iterator(IteratorMode::From(prefix.as_bytes(), Direction::Forward));
        for item in iter {
            let (key, value) = item.with_context(|| format!("scanning {prefix}"))?;
            let Some(name) = key.strip_prefix(prefix.as_bytes()) else {
                break;
            };
            out.push((String::from_utf8_lossy(name).into_owned(), value.into_vec()));
        }
        Ok(out)
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
        self.scan(PATTERN)
    }

    /// Stores a pipeline's record.
    pub fn put_pipeline(&self, name: &str, json: &[u8]) -> anyhow::Result<()> {
        self.put_synced(format!("{PIPELINE}{name}"), json)
    }

    /// Removes a pipeline and its recent outputs.
    pub fn delete_pipeline(&self, name: &str) -> anyhow::Result<()> {
        self.delete_synced(format!("{OUTPUTS}{name}"))?;
        self.delete_synced(format!("{PIPELINE}{name}"))
    }

    /// Every stored pipeline: (name, record).
    pub fn pipelines(&self) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
        self.scan(PIPELINE)
    }

    /// Stores a pipeline's recent outputs (written at shutdown).
    pub fn put_outputs(&self, pipeline: &str, json: &[u8]) -> anyhow::Result<()> {
        self.put_synced(format!("{OUTPUTS}{pipeline}"), json)
    }

    /// A pipeline's recent outputs as stored at the last shutdown.
    pub fn outputs(&self, pipeline: &str) -> anyhow::Result<Option<Vec<u8>>> {
        self.db
            .get(format!("{OUTPUTS}{pipeline}").as_bytes())
            .context("reading recent outputs")
    }

    /// Flushes the memtables to disk.
    pub fn flush(&self) -> anyhow::Result<()> {
        self.db.flush().context("flushing the store")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_prefix_scan() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            store.put_pattern("a", "{\"name\":\"a\"}").unwrap();
            store.put_pattern("b", "{\"name\":\"b\"}").unwrap();
            store.put_pipeline("p", b"{}").unwrap();
            store.delete_pattern("a").unwrap();
            store.flush().unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        let patterns = store.patterns().unwrap();
        assert_eq!(patterns.len(), 1);
        assert_eq!(patterns[0].0, "b");
        assert_eq!(store.pipelines().unwrap().len(), 1);
        assert_eq!(store.outputs("p").unwrap(), None);
    }
}
