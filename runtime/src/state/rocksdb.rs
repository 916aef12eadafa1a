//! The RocksDB state backend: the same ordered byte map as [`MemoryBackend`](super::MemoryBackend),
//! on disk, so that keyed and window state can be larger than memory and outlive the process.
//! `append` (list state) is a concatenating merge operator, prefix scans are iterators.

use std::path::Path;

use rocksdb::{Direction, IteratorMode, MergeOperands, Options, WriteBatch, DB};

use super::{Snapshot, StateBackend};
use crate::error::{Error, Result};

/// Keyed state in a RocksDB database (one per operator instance: give each its own directory).
pub struct RocksDbBackend {
    db: DB,
}

impl std::fmt::Debug for RocksDbBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocksDbBackend")
            .field("path", &self.db.path())
            .finish()
    }
}

fn concat(_key: &[u8], existing: Option<&[u8]>, operands: &MergeOperands) -> Option<Vec<u8>> {
    let mut v = existing.map(<[u8]>::to_vec).unwrap_or_default();
    for op in operands {
        v.extend_from_slice(op);
    }
    Some(v)
}

fn state_error(what: &str, e: rocksdb::Error) -> Error {
    Error::State(format!("{what}: {e}"))
}

impl RocksDbBackend {
    /// Opens (or creates) the database at `path`; what it holds is kept.
    pub fn open(path: &Path) -> Result<Self> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.set_merge_operator_associative("cep-concat", concat);
        let db = DB::open(&opts, path)
            .map_err(|e| state_error(&format!("opening {}", path.display()), e))?;
        Ok(RocksDbBackend { db })
    }

    fn keys(&self, prefix: &[u8]) -> Result<Vec<Vec<u8>>> {
        let mut keys = Vec::new();
        self.scan_prefix(prefix, &mut |k, _| {
            keys.push(k.to_vec());
            true
        })?;
        Ok(keys)
    }
}

impl StateBackend for RocksDbBackend {
    fn get(&self, key: &[u8], out: &mut Vec<u8>) -> Result<bool> {
        out.clear();
        match self
            .db
            .get_pinned(key)
            .map_err(|e| state_error("reading", e))?
        {
            Some(v) => {
                out.extend_from_slice(&v);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        self.db
            .put(key, value)
            .map_err(|e| state_error("writing", e))
    }

    fn append(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        self.db
            .merge(key, value)
            .map_err(|e| state_error("appending", e))
    }

    fn delete(&mut self, key: &[u8]) -> Result<()> {
        self.db.delete(key).map_err(|e| state_error("deleting", e))
    }

    fn scan_prefix(
        &self,
        prefix: &[u8],
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<()> {
        for item in self
            .db
            .iterator(IteratorMode::From(prefix, Direction::Forward))
        {
            let (k, v) = item.map_err(|e| state_error("scanning", e))?;
            if !k.starts_with(prefix) || !visit(&k, &v) {
                break;
            }
        }
        Ok(())
    }

    fn delete_prefix(&mut self, prefix: &[u8]) -> Result<()> {
        let mut batch = WriteBatch::default();
        for k in self.keys(prefix)? {
            batch.delete(k);
        }
        self.db
            .write(batch)
            .map_err(|e| state_error("deleting a prefix", e))
    }

    fn len(&self) -> usize {
        self.db.iterator(IteratorMode::Start).count()
    }

    fn snapshot(&self) -> Result<Snapshot> {
        let mut entries = Vec::new();
        self.scan_prefix(&[], &mut |k, v| {
            entries.push((k.to_vec(), v.to_vec()));
            true
        })?;
        Ok(Snapshot { entries })
    }

    fn restore(&mut self, snapshot: Snapshot) -> Result<()> {
        let mut batch = WriteBatch::default();
        for k in self.keys(&[])? {
            batch.delete(k);
        }
        for (k, v) in snapshot.entries {
            batch.put(k, v);
        }
        self.db
            .write(batch)
            .map_err(|e| state_error("restoring", e))
    }
}

#[cfg(test)]
mod tests {
    use super::super::MemoryBackend;
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Put(u8, u8),
        Append(u8, u8),
        Delete(u8),
        DeletePrefix(u8),
        SnapshotRestore,
    }

    fn key(k: u8) -> Vec<u8> {
        // Keys share prefixes: [k / 16, k % 16].
        vec![k / 16, k % 16]
    }

    fn contents(b: &dyn StateBackend) -> Vec<(Vec<u8>, Vec<u8>)> {
        b.snapshot().unwrap().entries
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn behaves_like_the_memory_backend(ops in prop::collection::vec(prop_oneof![
            (0u8..40, any::<u8>()).prop_map(|(k, v)| Op::Put(k, v)),
            (0u8..40, any::<u8>()).prop_map(|(k, v)| Op::Append(k, v)),
            (0u8..40).prop_map(Op::Delete),
            (0u8..3).prop_map(Op::DeletePrefix),
            Just(Op::SnapshotRestore),
        ], 1..60)) {
            let dir = tempfile::tempdir().unwrap();
            let mut r = RocksDbBackend::open(dir.path()).unwrap();
            let mut m = MemoryBackend::new();
            for op in &ops {
                for b in [&mut r as &mut dyn StateBackend, &mut m] {
                    match op {
                        Op::Put(k, v) => b.put(&key(*k), &[*v]).unwrap(),
                        Op::Append(k, v) => b.append(&key(*k), &[*v]).unwrap(),
                        Op::Delete(k) => b.delete(&key(*k)).unwrap(),
                        Op::DeletePrefix(p) => b.delete_prefix(&[*p]).unwrap(),
                        Op::SnapshotRestore => {
                            let s = b.snapshot().unwrap();
                            b.restore(Snapshot::default()).unwrap();
                            prop_assert!(b.is_empty());
                            b.restore(s).unwrap();
                        }
                    }
                }
                prop_assert_eq!(contents(&r), contents(&m));
            }
            for p in 0u8..3 {
                let mut a = Vec::new();
                let mut b = Vec::new();
                r.scan_prefix(&[p], &mut |k, v| { a.push((k.to_vec(), v.to_vec())); true }).unwrap();
                m.scan_prefix(&[p], &mut |k, v| { b.push((k.to_vec(), v.to_vec())); true }).unwrap();
                prop_assert_eq!(a, b);
            }
            let mut buf = Vec::new();
            for k in 0u8..40 {
                let mut other = Vec::new();
                prop_assert_eq!(r.get(&key(k), &mut buf).unwrap(), m.get(&key(k), &mut other).unwrap());
                prop_assert_eq!(&buf, &other);
            }
            prop_assert_eq!(r.len(), m.len());
        }
    }

    #[test]
    fn state_outlives_the_process() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut b = RocksDbBackend::open(dir.path()).unwrap();
            b.put(b"a", b"1").unwrap();
            b.append(b"list", b"x").unwrap();
            b.append(b"list", b"y").unwrap();
        }
        let b = RocksDbBackend::open(dir.path()).unwrap();
        let mut buf = Vec::new();
        assert!(b.get(b"list", &mut buf).unwrap());
        assert_eq!(buf, b"xy");
        assert!(b.get(b"a", &mut buf).unwrap());
        assert_eq!(buf, b"1");
    }

    #[test]
    fn a_locked_database_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let _first = RocksDbBackend::open(dir.path()).unwrap();
        let err = RocksDbBackend::open(dir.path()).unwrap_err();
        assert!(err.to_string().contains("opening"), "{err}");
    }
}
