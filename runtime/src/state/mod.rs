//! Keyed state: a byte-level [`StateBackend`] trait, the in-memory backend and typed handles.
//!
//! Layering, bottom up:
//! - [`StateBackend`]: an ordered map from byte keys to byte values with get/put/append/delete,
//!   iteration by key prefix, and snapshot/restore. It knows nothing about types, so a RocksDB backend
//!   can implement it directly (`append` maps to a merge operator, prefix scans to an iterator).
//! - The key layout ([`encode_state_key`]): `state name | key | namespace | user key`, each of the
//!   first three length-prefixed, so that all entries of one (state, key, namespace) share a prefix.
//!   The namespace is empty for plain keyed state and the encoded window for window state.
//! - [`KeyedStateStore`]: a backend plus the *current* key and namespace, set by the operator before
//!   it calls user code, as in Flink.
//! - Typed handles ([`ValueState`], [`ListState`], [`MapState`], [`ReducingState`],
//!   [`AggregatingState`]): named descriptors that encode values with MessagePack (serde).

mod memory;
mod rocksdb;
mod typed;

pub use self::rocksdb::RocksDbBackend;
pub use memory::MemoryBackend;
pub use typed::{
    decode, encode_into, AggregateFunction, AggregatingState, KeyedStateStore, ListState, MapState,
    ReducingState, ValueState,
};

use crate::error::{Error, Result};

/// A consistent copy of a backend's contents: key-value pairs in key order.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Snapshot {
    /// The entries, sorted by key.
    pub entries: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Snapshot {
    /// Serializes the snapshot into one blob.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        rmp_serde::to_vec(self).map_err(|e| Error::codec("state snapshot", e))
    }

    /// Reads a snapshot written by [`Snapshot::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        rmp_serde::from_slice(bytes).map_err(|e| Error::codec("state snapshot", e))
    }
}

/// Byte-level keyed state storage, ordered by key.
///
/// Keys are built by [`encode_state_key`]; values are opaque bytes. Implementations must keep keys in
/// lexicographic byte order so that [`StateBackend::scan_prefix`] visits one (state, key, namespace)
/// contiguously.
pub trait StateBackend: Send {
    /// Copies the value stored under `key` into `out` (clearing it first) and returns whether there was
    /// one. Writing into a caller's buffer avoids an allocation per read.
    fn get(&self, key: &[u8], out: &mut Vec<u8>) -> Result<bool>;

    /// Stores `value` under `key`, replacing any previous value.
    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<()>;

    /// Appends `value` to the bytes stored under `key` (creating it), for list state. A RocksDB
    /// backend implements this with a concatenating merge operator.
    fn append(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        let mut buf = Vec::new();
        self.get(key, &mut buf)?;
        buf.extend_from_slice(value);
        self.put(key, &buf)
    }

    /// Removes `key`; removing a missing key is not an error.
    fn delete(&mut self, key: &[u8]) -> Result<()>;

    /// Visits every entry whose key starts with `prefix`, in key order, until `visit` returns false.
    fn scan_prefix(&self, prefix: &[u8], visit: &mut dyn FnMut(&[u8], &[u8]) -> bool)
        -> Result<()>;

    /// Removes every entry whose key starts with `prefix`.
    fn delete_prefix(&mut self, prefix: &[u8]) -> Result<()> {
        let mut keys = Vec::new();
        self.scan_prefix(prefix, &mut |k, _| {
            keys.push(k.to_vec());
            true
        })?;
        for k in keys {
            self.delete(&k)?;
        }
        Ok(())
    }

    /// The number of entries (for tests and metrics; may be an estimate).
    fn len(&self) -> usize;

    /// Whether the backend holds no entries.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A consistent copy of every entry.
    fn snapshot(&self) -> Result<Snapshot>;

    /// Replaces the contents with `snapshot`.
    fn restore(&mut self, snapshot: Snapshot) -> Result<()>;
}

/// Appends the prefix `state name | key | namespace` to `out`. Each part is length-prefixed (name by
/// a big-endian u16, key and namespace by big-endian u32) so that no prefix of one triple is a
/// prefix of another. A user key (map state) follows without a length.
///
/// # Panics
/// If the state name is longer than 65535 bytes.
pub fn encode_state_key(out: &mut Vec<u8>, state: &str, key: &[u8], namespace: &[u8]) {
    let name_len = u16::try_from(state.len()).expect("state name longer than 65535 bytes");
    out.extend_from_slice(&name_len.to_be_bytes());
    out.extend_from_slice(state.as_bytes());
    out.extend_from_slice(&(key.len() as u32).to_be_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(&(namespace.len() as u32).to_be_bytes());
    out.extend_from_slice(namespace);
}

/// Appends the prefix shared by every entry of one state, for all keys and namespaces.
pub fn encode_state_prefix(out: &mut Vec<u8>, state: &str) {
    let name_len = u16::try_from(state.len()).expect("state name longer than 65535 bytes");
    out.extend_from_slice(&name_len.to_be_bytes());
    out.extend_from_slice(state.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_layout_is_length_prefixed() {
        let mut k = Vec::new();
        encode_state_key(&mut k, "ab", &[7], &[]);
        assert_eq!(k, vec![0, 2, b'a', b'b', 0, 0, 0, 1, 7, 0, 0, 0, 0]);
        let mut p = Vec::new();
        encode_state_prefix(&mut p, "ab");
        assert!(k.starts_with(&p));
        // Key [7] is not a prefix of key [7, 8] once lengths are included.
        let mut k2 = Vec::new();
        encode_state_key(&mut k2, "ab", &[7, 8], &[]);
        assert!(!k2.starts_with(&k));
    }

    #[test]
    fn snapshot_round_trips_through_bytes() {
        let s = Snapshot {
            entries: vec![(vec![1, 2], vec![3]), (vec![4], vec![])],
        };
        assert_eq!(Snapshot::from_bytes(&s.to_bytes().unwrap()).unwrap(), s);
        assert!(Snapshot::from_bytes(&[0xff, 0xff, 0xff]).is_err());
    }
}
