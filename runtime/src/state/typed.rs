//! Typed state handles over a byte-level backend, encoded with MessagePack (`rmp-serde`).
//!
//! MessagePack is compact, self-delimiting (so list state is a plain concatenation of values) and
//! self-describing, so that dynamically typed events such as `serde_json::Value` round-trip.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{encode_state_key, MemoryBackend, StateBackend};
use crate::error::{Error, Result};

/// Appends the MessagePack encoding of `value` to `out`.
pub fn encode_into<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Result<()> {
    rmp_serde::encode::write(out, value).map_err(|e| Error::codec("state value", e))
}

/// Decodes one MessagePack-encoded value; trailing bytes are an error.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    let mut rest = bytes;
    let v = T::deserialize(&mut rmp_serde::Deserializer::new(&mut rest))
        .map_err(|e| Error::codec("state value", e))?;
    if rest.is_empty() {
        Ok(v)
    } else {
        Err(Error::codec(
            "state value",
            format!("{} trailing bytes", rest.len()),
        ))
    }
}

/// Decodes a concatenation of MessagePack-encoded values (the list-state format).
fn decode_all<T: DeserializeOwned>(mut bytes: &[u8], out: &mut Vec<T>) -> Result<()> {
    while !bytes.is_empty() {
        let v = T::deserialize(&mut rmp_serde::Deserializer::new(&mut bytes))
            .map_err(|e| Error::codec("list state", e))?;
        out.push(v);
    }
    Ok(())
}

/// A state backend plus the current key and namespace. Operators set the key (and, for windows, the
/// namespace) before calling user code; typed handles read and write under them.
pub struct KeyedStateStore {
    backend: Box<dyn StateBackend>,
    key: Vec<u8>,
    namespace: Vec<u8>,
    key_buf: Vec<u8>,
    value_buf: Vec<u8>,
}

impl fmt::Debug for KeyedStateStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedStateStore")
            .field("entries", &self.backend.len())
            .field("key", &self.key)
            .field("namespace", &self.namespace)
            .finish()
    }
}

impl Default for KeyedStateStore {
    fn default() -> Self {
        Self::new(Box::new(MemoryBackend::new()))
    }
}

impl KeyedStateStore {
    /// A store over `backend`.
    pub fn new(backend: Box<dyn StateBackend>) -> Self {
        KeyedStateStore {
            backend,
            key: Vec::new(),
            namespace: Vec::new(),
            key_buf: Vec::new(),
            value_buf: Vec::new(),
        }
    }

    /// Sets the current key, encoding it with MessagePack.
    pub fn set_current_key<K: Serialize + ?Sized>(&mut self, key: &K) -> Result<()> {
        self.key.clear();
        encode_into(key, &mut self.key)
    }

    /// Sets the current key from its encoded bytes.
    pub fn set_current_key_bytes(&mut self, key: &[u8]) {
        self.key.clear();
        self.key.extend_from_slice(key);
    }

    /// The encoded current key.
    pub fn current_key_bytes(&self) -> &[u8] {
        &self.key
    }

    /// Sets the current namespace (for example a window); plain keyed state uses the empty one.
    pub fn set_namespace<N: Serialize + ?Sized>(&mut self, namespace: &N) -> Result<()> {
        self.namespace.clear();
        encode_into(namespace, &mut self.namespace)
    }

    /// Resets to the empty namespace.
    pub fn clear_namespace(&mut self) {
        self.namespace.clear();
    }

    /// The underlying backend.
    pub fn backend(&self) -> &dyn StateBackend {
        &*self.backend
    }

    /// The underlying backend, mutably (for snapshot/restore).
    pub fn backend_mut(&mut self) -> &mut dyn StateBackend {
        &mut *self.backend
    }

    /// Builds the full key of `state` (+ `user_key`) in `key_buf`.
    fn compose(&mut self, state: &str, user_key: &[u8]) {
        self.key_buf.clear();
        encode_state_key(&mut self.key_buf, state, &self.key, &self.namespace);
        self.key_buf.extend_from_slice(user_key);
    }

    fn read(&mut self, state: &str) -> Result<bool> {
        self.compose(state, &[]);
        self.backend.get(&self.key_buf, &mut self.value_buf)
    }

    /// Whether `state` has a value for the current key and namespace.
    pub(crate) fn contains(&mut self, state: &str) -> Result<bool> {
        self.read(state)
    }

    fn get_value<T: DeserializeOwned>(&mut self, state: &str) -> Result<Option<T>> {
        if self.read(state)? {
            decode(&self.value_buf).map(Some)
        } else {
            Ok(None)
        }
    }

    fn put_value<T: Serialize + ?Sized>(&mut self, state: &str, value: &T) -> Result<()> {
        self.compose(state, &[]);
        self.value_buf.clear();
        encode_into(value, &mut self.value_buf)?;
        self.backend.put(&self.key_buf, &self.value_buf)
    }

    fn append_value<T: Serialize + ?Sized>(&mut self, state: &str, value: &T) -> Result<()> {
        self.compose(state, &[]);
        self.value_buf.clear();
        encode_into(value, &mut self.value_buf)?;
        self.backend.append(&self.key_buf, &self.value_buf)
    }

    fn delete_value(&mut self, state: &str) -> Result<()> {
        self.compose(state, &[]);
        self.backend.delete(&self.key_buf)
    }

    /// Moves the raw bytes of `state` from namespace `from` to the current namespace, appending them
    /// (list state) and deleting the source. Used when session windows merge.
    pub(crate) fn move_appending(&mut self, state: &str, from: &[u8]) -> Result<()> {
        let mut src = Vec::new();
        encode_state_key(&mut src, state, &self.key, from);
        let mut bytes = Vec::new();
        if self.backend.get(&src, &mut bytes)? {
            self.backend.delete(&src)?;
            self.compose(state, &[]);
            self.backend.append(&self.key_buf, &bytes)?;
        }
        Ok(())
    }

    /// Reads a value of `state` in namespace `ns` (encoded) and deletes it.
    pub(crate) fn take_value_in<T: DeserializeOwned>(
        &mut self,
        state: &str,
        ns: &[u8],
    ) -> Result<Option<T>> {
        let mut k = Vec::new();
        encode_state_key(&mut k, state, &self.key, ns);
        if self.backend.get(&k, &mut self.value_buf)? {
            self.backend.delete(&k)?;
            decode(&self.value_buf).map(Some)
        } else {
            Ok(None)
        }
    }
}

/// Declares a named piece of keyed state once; the handles below are cheap to clone and share the name.
macro_rules! state_name {
    ($t:ident) => {
        impl<T> Clone for $t<T> {
            fn clone(&self) -> Self {
                $t {
                    name: self.name.clone(),
                    _t: PhantomData,
                }
            }
        }

        impl<T> fmt::Debug for $t<T> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_tuple(stringify!($t)).field(&self.name).finish()
            }
        }

        impl<T> $t<T> {
            /// A handle for the state called `name`.
            pub fn new(name: &str) -> Self {
                $t {
                    name: Arc::from(name),
                    _t: PhantomData,
                }
            }

            /// The state's name.
            pub fn name(&self) -> &str {
                &self.name
            }
        }
    };
}

/// One value per key (and namespace).
pub struct ValueState<T> {
    name: Arc<str>,
    _t: PhantomData<fn() -> T>,
}
state_name!(ValueState);

impl<T: Serialize + DeserializeOwned> ValueState<T> {
    /// The current key's value.
    pub fn get(&self, store: &mut KeyedStateStore) -> Result<Option<T>> {
        store.get_value(&self.name)
    }

    /// Replaces the current key's value.
    pub fn update(&self, store: &mut KeyedStateStore, value: &T) -> Result<()> {
        store.put_value(&self.name, value)
    }

    /// Removes the current key's value.
    pub fn clear(&self, store: &mut KeyedStateStore) -> Result<()> {
        store.delete_value(&self.name)
    }
}

/// A list per key; `add` is an append (a merge in RocksDB), not a read-modify-write.
pub struct ListState<T> {
    name: Arc<str>,
    _t: PhantomData<fn() -> T>,
}
state_name!(ListState);

impl<T: Serialize + DeserializeOwned> ListState<T> {
    /// Appends `value`.
    pub fn add(&self, store: &mut KeyedStateStore, value: &T) -> Result<()> {
        store.append_value(&self.name, value)
    }

    /// The current key's list (empty if none).
    pub fn get(&self, store: &mut KeyedStateStore) -> Result<Vec<T>> {
        let mut out = Vec::new();
        if store.read(&self.name)? {
            decode_all(&store.value_buf, &mut out)?;
        }
        Ok(out)
    }

    /// Replaces the list.
    pub fn update(&self, store: &mut KeyedStateStore, values: &[T]) -> Result<()> {
        if values.is_empty() {
            return self.clear(store);
        }
        store.compose(&self.name, &[]);
        store.value_buf.clear();
        for v in values {
            encode_into(v, &mut store.value_buf)?;
        }
        store.backend.put(&store.key_buf, &store.value_buf)
    }

    /// Removes the list.
    pub fn clear(&self, store: &mut KeyedStateStore) -> Result<()> {
        store.delete_value(&self.name)
    }
}

/// A map per key; each entry is its own backend entry, so reading one entry does not read the map.
pub struct MapState<K, V> {
    name: Arc<str>,
    _t: PhantomData<fn() -> (K, V)>,
}

impl<K, V> Clone for MapState<K, V> {
    fn clone(&self) -> Self {
        MapState {
            name: self.name.clone(),
            _t: PhantomData,
        }
    }
}

impl<K, V> fmt::Debug for MapState<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("MapState").field(&self.name).finish()
    }
}

impl<K: Serialize + DeserializeOwned, V: Serialize + DeserializeOwned> MapState<K, V> {
    /// A handle for the map state called `name`.
    pub fn new(name: &str) -> Self {
        MapState {
            name: Arc::from(name),
            _t: PhantomData,
        }
    }

    fn user_key(&self, store: &mut KeyedStateStore, key: &K) -> Result<()> {
        let mut uk = std::mem::take(&mut store.value_buf);
        uk.clear();
        encode_into(key, &mut uk)?;
        store.compose(&self.name, &uk);
        store.value_buf = uk;
        Ok(())
    }

    /// The value under `key`.
    pub fn get(&self, store: &mut KeyedStateStore, key: &K) -> Result<Option<V>> {
        self.user_key(store, key)?;
        if store.backend.get(&store.key_buf, &mut store.value_buf)? {
            decode(&store.value_buf).map(Some)
        } else {
            Ok(None)
        }
    }

    /// Stores `value` under `key`.
    pub fn put(&self, store: &mut KeyedStateStore, key: &K, value: &V) -> Result<()> {
        self.user_key(store, key)?;
        store.value_buf.clear();
        encode_into(value, &mut store.value_buf)?;
        store.backend.put(&store.key_buf, &store.value_buf)
    }

    /// Removes `key`.
    pub fn remove(&self, store: &mut KeyedStateStore, key: &K) -> Result<()> {
        self.user_key(store, key)?;
        store.backend.delete(&store.key_buf)
    }

    /// Whether `key` is present.
    pub fn contains(&self, store: &mut KeyedStateStore, key: &K) -> Result<bool> {
        self.user_key(store, key)?;
        store.backend.get(&store.key_buf, &mut store.value_buf)
    }

    /// All entries of the current key's map, in the byte order of the encoded map keys.
    pub fn entries(&self, store: &mut KeyedStateStore) -> Result<Vec<(K, V)>> {
        store.compose(&self.name, &[]);
        let prefix_len = store.key_buf.len();
        let mut out = Vec::new();
        let mut err = None;
        store
            .backend
            .scan_prefix(
                &store.key_buf,
                &mut |k, v| match (decode(&k[prefix_len..]), decode(v)) {
                    (Ok(k), Ok(v)) => {
                        out.push((k, v));
                        true
                    }
                    (Err(e), _) | (_, Err(e)) => {
                        err = Some(e);
                        false
                    }
                },
            )?;
        match err {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }

    /// Whether the current key's map is empty.
    pub fn is_empty(&self, store: &mut KeyedStateStore) -> Result<bool> {
        store.compose(&self.name, &[]);
        let mut empty = true;
        store.backend.scan_prefix(&store.key_buf, &mut |_, _| {
            empty = false;
            false
        })?;
        Ok(empty)
    }

    /// Removes the current key's whole map.
    pub fn clear(&self, store: &mut KeyedStateStore) -> Result<()> {
        store.compose(&self.name, &[]);
        store.backend.delete_prefix(&store.key_buf)
    }
}

/// A value per key that folds every added value in with a reduce function.
pub struct ReducingState<T> {
    name: Arc<str>,
    reduce: Arc<dyn Fn(T, T) -> T + Send + Sync>,
}

impl<T> Clone for ReducingState<T> {
    fn clone(&self) -> Self {
        ReducingState {
            name: self.name.clone(),
            reduce: self.reduce.clone(),
        }
    }
}

impl<T> fmt::Debug for ReducingState<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ReducingState").field(&self.name).finish()
    }
}

impl<T: Serialize + DeserializeOwned> ReducingState<T> {
    /// A handle for the reducing state called `name`.
    pub fn new(name: &str, reduce: impl Fn(T, T) -> T + Send + Sync + 'static) -> Self {
        ReducingState {
            name: Arc::from(name),
            reduce: Arc::new(reduce),
        }
    }

    /// Folds `value` into the current key's value.
    pub fn add(&self, store: &mut KeyedStateStore, value: T) -> Result<()> {
        let next = match store.get_value::<T>(&self.name)? {
            Some(acc) => (self.reduce)(acc, value),
            None => value,
        };
        store.put_value(&self.name, &next)
    }

    /// The current key's reduced value.
    pub fn get(&self, store: &mut KeyedStateStore) -> Result<Option<T>> {
        store.get_value(&self.name)
    }

    /// Removes the current key's value.
    pub fn clear(&self, store: &mut KeyedStateStore) -> Result<()> {
        store.delete_value(&self.name)
    }
}

/// An incremental aggregation, as Flink's `AggregateFunction`: an accumulator is created, values are
/// added to it, accumulators can be merged (session windows), and a result is read from it.
pub trait AggregateFunction: Send + Sync {
    /// The input type.
    type In;
    /// The accumulator, kept in state.
    type Acc: Serialize + DeserializeOwned;
    /// The result type.
    type Out;
    /// A new, empty accumulator.
    fn create_accumulator(&self) -> Self::Acc;
    /// Adds `value` to `acc`.
    fn add(&self, value: Self::In, acc: &mut Self::Acc);
    /// The result for `acc`.
    fn get_result(&self, acc: &Self::Acc) -> Self::Out;
    /// Merges two accumulators.
    fn merge(&self, a: Self::Acc, b: Self::Acc) -> Self::Acc;
}

/// A value per key that aggregates every added value with an [`AggregateFunction`].
pub struct AggregatingState<A> {
    name: Arc<str>,
    function: Arc<A>,
}

impl<A> Clone for AggregatingState<A> {
    fn clone(&self) -> Self {
        AggregatingState {
            name: self.name.clone(),
            function: self.function.clone(),
        }
    }
}

impl<A> fmt::Debug for AggregatingState<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("AggregatingState").field(&self.name).finish()
    }
}

impl<A: AggregateFunction> AggregatingState<A> {
    /// A handle for the aggregating state called `name`.
    pub fn new(name: &str, function: A) -> Self {
        AggregatingState {
            name: Arc::from(name),
            function: Arc::new(function),
        }
    }

    /// The aggregate function.
    pub fn function(&self) -> &A {
        &self.function
    }

    /// Adds `value` to the current key's accumulator.
    pub fn add(&self, store: &mut KeyedStateStore, value: A::In) -> Result<()> {
        let mut acc = match store.get_value::<A::Acc>(&self.name)? {
            Some(acc) => acc,
            None => self.function.create_accumulator(),
        };
        self.function.add(value, &mut acc);
        store.put_value(&self.name, &acc)
    }

    /// The current key's result, if anything was added.
    pub fn get(&self, store: &mut KeyedStateStore) -> Result<Option<A::Out>> {
        Ok(store
            .get_value::<A::Acc>(&self.name)?
            .map(|acc| self.function.get_result(&acc)))
    }

    /// The current key's accumulator.
    pub fn accumulator(&self, store: &mut KeyedStateStore) -> Result<Option<A::Acc>> {
        store.get_value(&self.name)
    }

    /// Replaces the current key's accumulator.
    pub fn set_accumulator(&self, store: &mut KeyedStateStore, acc: &A::Acc) -> Result<()> {
        store.put_value(&self.name, acc)
    }

    /// Removes the current key's accumulator.
    pub fn clear(&self, store: &mut KeyedStateStore) -> Result<()> {
        store.delete_value(&self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Avg;
    impl AggregateFunction for Avg {
        type In = i64;
        type Acc = (i64, i64);
        type Out = f64;
        fn create_accumulator(&self) -> (i64, i64) {
            (0, 0)
        }
        fn add(&self, v: i64, acc: &mut (i64, i64)) {
            acc.0 += v;
            acc.1 += 1;
        }
        fn get_result(&self, acc: &(i64, i64)) -> f64 {
            acc.0 as f64 / acc.1 as f64
        }
        fn merge(&self, a: (i64, i64), b: (i64, i64)) -> (i64, i64) {
            (a.0 + b.0, a.1 + b.1)
        }
    }

    #[test]
    fn value_state_is_per_key_and_namespace() {
        let mut s = KeyedStateStore::default();
        let v = ValueState::<String>::new("v");
        s.set_current_key("a").unwrap();
        assert_eq!(v.get(&mut s).unwrap(), None);
        v.update(&mut s, &"x".to_string()).unwrap();
        s.set_current_key("b").unwrap();
        assert_eq!(v.get(&mut s).unwrap(), None);
        v.update(&mut s, &"y".to_string()).unwrap();
        s.set_namespace(&(0i64, 10i64)).unwrap();
        assert_eq!(v.get(&mut s).unwrap(), None);
        s.clear_namespace();
        assert_eq!(v.get(&mut s).unwrap().as_deref(), Some("y"));
        s.set_current_key("a").unwrap();
        assert_eq!(v.get(&mut s).unwrap().as_deref(), Some("x"));
        v.clear(&mut s).unwrap();
        assert_eq!(v.get(&mut s).unwrap(), None);
        assert_eq!(s.backend().len(), 1);
    }

    #[test]
    fn list_state_appends_and_replaces() {
        let mut s = KeyedStateStore::default();
        let l = ListState::<(String, i64)>::new("l");
        s.set_current_key(&7u32).unwrap();
        assert!(l.get(&mut s).unwrap().is_empty());
        l.add(&mut s, &("a".into(), 1)).unwrap();
        l.add(&mut s, &("bb".into(), -2)).unwrap();
        assert_eq!(
            l.get(&mut s).unwrap(),
            vec![("a".to_string(), 1), ("bb".to_string(), -2)]
        );
        l.update(&mut s, &[("c".into(), 3)]).unwrap();
        assert_eq!(l.get(&mut s).unwrap(), vec![("c".to_string(), 3)]);
        l.clear(&mut s).unwrap();
        assert!(l.get(&mut s).unwrap().is_empty());
    }

    #[test]
    fn map_state_entries_are_separate() {
        let mut s = KeyedStateStore::default();
        let m = MapState::<String, u64>::new("m");
        s.set_current_key("k1").unwrap();
        assert!(m.is_empty(&mut s).unwrap());
        m.put(&mut s, &"x".into(), &1).unwrap();
        m.put(&mut s, &"y".into(), &2).unwrap();
        m.put(&mut s, &"x".into(), &3).unwrap();
        s.set_current_key("k2").unwrap();
        m.put(&mut s, &"z".into(), &9).unwrap();
        s.set_current_key("k1").unwrap();
        assert_eq!(m.get(&mut s, &"x".into()).unwrap(), Some(3));
        assert!(m.contains(&mut s, &"y".into()).unwrap());
        assert!(!m.contains(&mut s, &"z".into()).unwrap());
        assert_eq!(
            m.entries(&mut s).unwrap(),
            vec![("x".to_string(), 3), ("y".to_string(), 2)]
        );
        m.remove(&mut s, &"x".into()).unwrap();
        assert_eq!(m.entries(&mut s).unwrap(), vec![("y".to_string(), 2)]);
        m.clear(&mut s).unwrap();
        assert!(m.is_empty(&mut s).unwrap());
        s.set_current_key("k2").unwrap();
        assert_eq!(m.entries(&mut s).unwrap(), vec![("z".to_string(), 9)]);
    }

    #[test]
    fn reducing_and_aggregating_state() {
        let mut s = KeyedStateStore::default();
        let r = ReducingState::new("min", |a: i64, b: i64| a.min(b));
        let a = AggregatingState::new("avg", Avg);
        s.set_current_key(&1u8).unwrap();
        for v in [5, 3, 8] {
            r.add(&mut s, v).unwrap();
            a.add(&mut s, v).unwrap();
        }
        assert_eq!(r.get(&mut s).unwrap(), Some(3));
        assert_eq!(a.get(&mut s).unwrap(), Some(16.0 / 3.0));
        assert_eq!(a.accumulator(&mut s).unwrap(), Some((16, 3)));
        r.clear(&mut s).unwrap();
        a.clear(&mut s).unwrap();
        assert_eq!(r.get(&mut s).unwrap(), None);
        assert_eq!(a.get(&mut s).unwrap(), None);
    }

    #[test]
    fn state_survives_snapshot_and_restore() {
        let mut s = KeyedStateStore::default();
        let v = ValueState::<u64>::new("count");
        s.set_current_key("a").unwrap();
        v.update(&mut s, &41).unwrap();
        let blob = s.backend().snapshot().unwrap().to_bytes().unwrap();
        let mut restored = KeyedStateStore::default();
        restored
            .backend_mut()
            .restore(super::super::Snapshot::from_bytes(&blob).unwrap())
            .unwrap();
        restored.set_current_key("a").unwrap();
        assert_eq!(v.get(&mut restored).unwrap(), Some(41));
    }

    proptest::proptest! {
        #[test]
        fn list_state_round_trips(items in proptest::collection::vec((".*", proptest::num::i64::ANY), 0..20)) {
            let mut s = KeyedStateStore::default();
            let l = ListState::<(String, i64)>::new("l");
            s.set_current_key("k").unwrap();
            for it in &items {
                l.add(&mut s, it).unwrap();
            }
            proptest::prop_assert_eq!(l.get(&mut s).unwrap(), items);
        }
    }
}
