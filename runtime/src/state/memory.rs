//! The in-memory state backend.

use std::collections::BTreeSet;
use std::ops::Bound;
use std::sync::Arc;

use rustc_hash::FxHashMap;

use super::{Snapshot, StateBackend};
use crate::error::Result;

/// Keeps state in memory: a hash map for point reads and writes (the per-event path), plus an
/// ordered index of the keys for prefix scans and snapshots. Both share each key's allocation.
/// Overwriting an existing key touches only the hash map.
#[derive(Clone, Debug, Default)]
pub struct MemoryBackend {
    map: FxHashMap<Arc<[u8]>, Vec<u8>>,
    index: BTreeSet<Arc<[u8]>>,
}

impl MemoryBackend {
    /// An empty backend.
    pub fn new() -> Self {
        Self::default()
    }

    fn insert_new(&mut self, key: &[u8], value: Vec<u8>) {
        let k: Arc<[u8]> = Arc::from(key);
        self.index.insert(k.clone());
        self.map.insert(k, value);
    }

    fn keys_with_prefix<'a>(
        &'a self,
        prefix: &'a [u8],
    ) -> impl Iterator<Item = &'a Arc<[u8]>> + 'a {
        self.index
            .range::<[u8], _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(move |k| k.starts_with(prefix))
    }
}

impl StateBackend for MemoryBackend {
    fn get(&self, key: &[u8], out: &mut Vec<u8>) -> Result<bool> {
        out.clear();
        match self.map.get(key) {
            Some(v) => {
                out.extend_from_slice(v);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        // Reuse the existing allocation when overwriting, the common case for value state.
        match self.map.get_mut(key) {
            Some(v) => {
                v.clear();
                v.extend_from_slice(value);
            }
            None => self.insert_new(key, value.to_vec()),
        }
        Ok(())
    }

    fn append(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        match self.map.get_mut(key) {
            Some(v) => v.extend_from_slice(value),
            None => self.insert_new(key, value.to_vec()),
        }
        Ok(())
    }

    fn delete(&mut self, key: &[u8]) -> Result<()> {
        if self.map.remove(key).is_some() {
            self.index.remove(key);
        }
        Ok(())
    }

    fn scan_prefix(
        &self,
        prefix: &[u8],
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<()> {
        for k in self.keys_with_prefix(prefix) {
            if let Some(v) = self.map.get(k) {
                if !visit(k, v) {
                    break;
                }
            }
        }
        Ok(())
    }

    fn delete_prefix(&mut self, prefix: &[u8]) -> Result<()> {
        let keys: Vec<Arc<[u8]>> = self.keys_with_prefix(prefix).cloned().collect();
        for k in keys {
            self.map.remove(&k);
            self.index.remove(&k);
        }
        Ok(())
    }

    fn len(&self) -> usize {
        self.map.len()
    }

    fn snapshot(&self) -> Result<Snapshot> {
        Ok(Snapshot {
            entries: self
                .index
                .iter()
                .filter_map(|k| self.map.get(k).map(|v| (k.to_vec(), v.clone())))
                .collect(),
        })
    }

    fn restore(&mut self, snapshot: Snapshot) -> Result<()> {
        self.map.clear();
        self.index.clear();
        for (k, v) in snapshot.entries {
            self.insert_new(&k, v);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(b: &MemoryBackend, prefix: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut out = Vec::new();
        b.scan_prefix(prefix, &mut |k, v| {
            out.push((k.to_vec(), v.to_vec()));
            true
        })
        .unwrap();
        out
    }

    #[test]
    fn get_put_append_delete() {
        let mut b = MemoryBackend::new();
        let mut buf = vec![9];
        assert!(!b.get(b"a", &mut buf).unwrap());
        assert!(buf.is_empty());
        b.put(b"a", b"1").unwrap();
        b.append(b"a", b"2").unwrap();
        b.append(b"b", b"3").unwrap();
        assert!(b.get(b"a", &mut buf).unwrap());
        assert_eq!(buf, b"12");
        b.put(b"a", b"x").unwrap();
        assert!(b.get(b"a", &mut buf).unwrap());
        assert_eq!(buf, b"x");
        b.delete(b"a").unwrap();
        b.delete(b"zz").unwrap();
        assert!(!b.get(b"a", &mut buf).unwrap());
        assert_eq!(b.len(), 1);
    }

    #[test]
    fn prefix_scan_and_delete_touch_only_the_prefix() {
        let mut b = MemoryBackend::new();
        for k in [&b"a"[..], b"ab", b"abc", b"abd", b"ac", b"b"] {
            b.put(k, k).unwrap();
        }
        let keys: Vec<Vec<u8>> = scan(&b, b"ab").into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, vec![b"ab".to_vec(), b"abc".to_vec(), b"abd".to_vec()]);
        // Stopping early.
        let mut seen = 0;
        b.scan_prefix(b"a", &mut |_, _| {
            seen += 1;
            seen < 2
        })
        .unwrap();
        assert_eq!(seen, 2);
        b.delete_prefix(b"ab").unwrap();
        let keys: Vec<Vec<u8>> = scan(&b, b"").into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, vec![b"a".to_vec(), b"ac".to_vec(), b"b".to_vec()]);
        b.delete_prefix(b"b").unwrap();
        b.delete_prefix(b"zz").unwrap();
        assert_eq!(b.len(), 2);
    }

    #[test]
    fn snapshot_and_restore() {
        let mut b = MemoryBackend::new();
        b.put(b"k1", b"v1").unwrap();
        b.put(b"k2", b"v2").unwrap();
        let snap = b.snapshot().unwrap();
        b.delete(b"k1").unwrap();
        b.put(b"k3", b"v3").unwrap();
        let mut restored = MemoryBackend::new();
        restored
            .restore(super::super::Snapshot::from_bytes(&snap.to_bytes().unwrap()).unwrap())
            .unwrap();
        assert_eq!(
            scan(&restored, b""),
            vec![
                (b"k1".to_vec(), b"v1".to_vec()),
                (b"k2".to_vec(), b"v2".to_vec())
            ]
        );
    }
}
