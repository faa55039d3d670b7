//! State stores: key-value stores, window stores and record buffers, each backed by a
//! compacted changelog topic.
//!
//! # Why in-memory + changelog
//!
//! A store is an ordered in-memory map (a `BTreeMap` of typed keys and values) that records
//! which keys changed since the last commit. At each commit the changed keys' latest values
//! (or tombstones) are written to the store's changelog topic, `<application.id>-<store>-changelog`
//! (compacted), before the input offsets are committed. A task that starts on another
//! instance, or after a crash, rebuilds the map by reading its changelog partition to the end.
//!
//! We chose this over an embedded on-disk engine (fjall, redb, RocksDB) because:
//! - the changelog is the durable copy either way (on-disk state must be rebuilt from it after
//!   any unclean stop unless checkpointed), so a second persistent copy buys restore speed
//!   only, at the price of every update paying serialization and a write path;
//! - typed in-memory maps make the per-record cost a map lookup, with bytes produced only once
//!   per key per commit interval (writes of a hot key are deduplicated like Kafka Streams'
//!   record cache), which is what lets the Streams API stay near a hand-written loop;
//! - in embedded mode the changelog already lives on local disk in the same process.
//!
//! The cost: state must fit in memory and restore time grows with the compacted changelog.
//! Windowed stores drop windows once they close, so they stay bounded by the active windows.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::Hash;
use std::ops::RangeBounds;

use bytes::Bytes;
use rustc_hash::{FxHashMap, FxHashSet};

use crate::error::SerdeError;
use crate::serde::Serde;
use crate::window::{Window, Windowed};

/// The kind of a store (for topology descriptions and changelog settings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    /// Key-value: tables and aggregates.
    KeyValue,
    /// Windowed aggregates and sessions.
    Window,
    /// Buffered records of windowed joins and sliding windows.
    Buffer,
}

/// One store's changelog writes since the last commit: `(key, value or tombstone)`.
pub(crate) type Changes = Vec<(Bytes, Option<Bytes>)>;

/// What the runtime needs from every store.
pub(crate) trait StateStore: Send {
    fn drain_changes(&mut self, out: &mut Changes);
    fn restore(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<(), SerdeError>;
}

/// A store behind its lock, type-erased for the runtime.
pub(crate) trait ErasedStore: Send + Sync {
    fn drain_changes(&self, out: &mut Changes);
    fn restore(&self, key: &[u8], value: Option<&[u8]>) -> Result<(), SerdeError>;
}

impl<S: StateStore> ErasedStore for parking_lot::Mutex<S> {
    fn drain_changes(&self, out: &mut Changes) {
        self.lock().drain_changes(out)
    }
    fn restore(&self, key: &[u8], value: Option<&[u8]>) -> Result<(), SerdeError> {
        self.lock().restore(key, value)
    }
}

fn encode<T: Serde>(v: &T) -> Bytes {
    let mut out = Vec::new();
    v.serialize(&mut out);
    Bytes::from(out)
}

/// A key-value store (tables and aggregates).
#[derive(Debug)]
pub struct KvStore<K, V> {
    map: BTreeMap<K, V>,
    dirty: FxHashSet<K>,
}

impl<K: Ord + Hash + Clone, V> Default for KvStore<K, V> {
    fn default() -> Self {
        KvStore {
            map: BTreeMap::new(),
            dirty: FxHashSet::default(),
        }
    }
}

impl<K: Ord + Hash + Clone, V> KvStore<K, V> {
    /// The value of `key`.
    pub fn get(&self, key: &K) -> Option<&V> {
        self.map.get(key)
    }
    /// Entries with keys in `range`, in key order.
    pub fn range<R: RangeBounds<K>>(&self, range: R) -> impl Iterator<Item = (&K, &V)> {
        self.map.range(range)
    }
    /// All entries in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.map.iter()
    }
    /// Number of keys.
    pub fn len(&self) -> usize {
        self.map.len()
    }
    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    fn touch(&mut self, key: &K) {
        if !self.dirty.contains(key) {
            self.dirty.insert(key.clone());
        }
    }
    pub(crate) fn put(&mut self, key: K, value: V) {
        self.touch(&key);
        self.map.insert(key, value);
    }
    pub(crate) fn delete(&mut self, key: &K) {
        if self.map.remove(key).is_some() {
            self.touch(key);
        }
    }
    /// The value of `key` to update in place (marked changed).
    pub(crate) fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        let v = self.map.get_mut(key)?;
        if !self.dirty.contains(key) {
            self.dirty.insert(key.clone());
        }
        Some(v)
    }
}

impl<K: Ord + Hash + Clone + Serde + Send, V: Serde + Send> StateStore for KvStore<K, V> {
    fn drain_changes(&mut self, out: &mut Changes) {
        for k in self.dirty.drain() {
            out.push((encode(&k), self.map.get(&k).map(encode)));
        }
    }
    fn restore(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<(), SerdeError> {
        let k = K::deserialize(key)?;
        match value {
            Some(v) => {
                self.map.insert(k, V::deserialize(v)?);
            }
            None => {
                self.map.remove(&k);
            }
        }
        Ok(())
    }
}

/// A window store: values per key and window (windowed aggregates, sessions).
#[derive(Debug)]
pub struct WindowStore<K, V> {
    /// Point lookups (the per-record path) go through a hash map...
    map: FxHashMap<Windowed<K>, V>,
    /// ...range queries through an ordered index (by key, then start).
    index: BTreeSet<Windowed<K>>,
    by_end: BTreeSet<(i64, Windowed<K>)>,
    dirty: FxHashSet<Windowed<K>>,
}

impl<K: Ord + Hash + Clone, V> Default for WindowStore<K, V> {
    fn default() -> Self {
        WindowStore {
            map: FxHashMap::default(),
            index: BTreeSet::new(),
            by_end: BTreeSet::new(),
            dirty: FxHashSet::default(),
        }
    }
}

fn key_range<K: Clone>(key: &K, from: i64, to: i64) -> (Windowed<K>, Windowed<K>) {
    (
        Windowed {
            key: key.clone(),
            window: Window {
                start: from,
                end: i64::MIN,
            },
        },
        Windowed {
            key: key.clone(),
            window: Window {
                start: to,
                end: i64::MAX,
            },
        },
    )
}

impl<K: Ord + Hash + Clone, V> WindowStore<K, V> {
    /// The value of one window.
    pub fn get(&self, key: &Windowed<K>) -> Option<&V> {
        self.map.get(key)
    }
    /// The windows of `key` starting in `[from, to]`, earliest first.
    pub fn fetch(&self, key: &K, from: i64, to: i64) -> impl Iterator<Item = (&Windowed<K>, &V)> {
        let (lo, hi) = key_range(key, from, to);
        self.index
            .range(lo..=hi)
            .filter_map(|w| self.map.get_key_value(w))
    }
    /// Every open window, by key then start.
    pub fn iter(&self) -> impl Iterator<Item = (&Windowed<K>, &V)> {
        self.index.iter().filter_map(|w| self.map.get_key_value(w))
    }
    /// Number of open windows.
    pub fn len(&self) -> usize {
        self.map.len()
    }
    /// Whether no window is open.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    fn touch(&mut self, key: &Windowed<K>) {
        if !self.dirty.contains(key) {
            self.dirty.insert(key.clone());
        }
    }
    /// The value of one window to update in place (marked changed).
    pub(crate) fn get_mut(&mut self, key: &Windowed<K>) -> Option<&mut V> {
        let v = self.map.get_mut(key)?;
        if !self.dirty.contains(key) {
            self.dirty.insert(key.clone());
        }
        Some(v)
    }
    pub(crate) fn put(&mut self, key: Windowed<K>, value: V) {
        self.touch(&key);
        if self.map.insert(key.clone(), value).is_none() {
            self.index.insert(key.clone());
            self.by_end.insert((key.window.end, key));
        }
    }
    pub(crate) fn remove(&mut self, key: &Windowed<K>) -> Option<V> {
        let v = self.map.remove(key)?;
        self.index.remove(key);
        self.by_end.remove(&(key.window.end, key.clone()));
        self.touch(key);
        Some(v)
    }
    /// The earliest end of an open window.
    pub(crate) fn first_end(&self) -> Option<i64> {
        self.by_end.first().map(|(e, _)| *e)
    }
    /// Removes and returns the windows ending at or before `end`, earliest end first.
    pub(crate) fn pop_ending_by(&mut self, end: i64) -> Vec<(Windowed<K>, V)> {
        let mut out = Vec::new();
        while let Some((e, _)) = self.by_end.first() {
            if *e > end {
                break;
            }
            let Some((_, w)) = self.by_end.pop_first() else {
                break;
            };
            if let Some(v) = self.map.remove(&w) {
                self.index.remove(&w);
                self.touch(&w);
                out.push((w, v));
            }
        }
        out
    }
    /// Keys of the windows of `key` (sessions) starting at or before `start_max`.
    pub(crate) fn windows_of(&self, key: &K, start_max: i64) -> Vec<Windowed<K>> {
        let (lo, hi) = key_range(key, i64::MIN, start_max);
        self.index.range(lo..=hi).cloned().collect()
    }
}

impl<K: Ord + Hash + Clone + Serde + Send, V: Serde + Send> StateStore for WindowStore<K, V> {
    fn drain_changes(&mut self, out: &mut Changes) {
        for k in self.dirty.drain() {
            out.push((encode(&k), self.map.get(&k).map(encode)));
        }
    }
    fn restore(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<(), SerdeError> {
        let k = Windowed::<K>::deserialize(key)?;
        match value {
            Some(v) => {
                let v = V::deserialize(v)?;
                if self.map.insert(k.clone(), v).is_none() {
                    self.index.insert(k.clone());
                    self.by_end.insert((k.window.end, k));
                }
            }
            None => {
                if self.map.remove(&k).is_some() {
                    self.index.remove(&k);
                    self.by_end.remove(&(k.window.end, k));
                }
            }
        }
        Ok(())
    }
}

/// A buffered record: its value and whether it has joined anything yet.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Buffered<V> {
    pub(crate) value: V,
    pub(crate) matched: bool,
}

/// Records kept for a while by key and timestamp (windowed joins, sliding windows).
#[derive(Debug)]
pub(crate) struct RecordBuffer<K, V> {
    map: BTreeMap<(K, i64, u64), Buffered<V>>,
    by_ts: BTreeSet<(i64, K, u64)>,
    dirty: FxHashSet<(K, i64, u64)>,
    seq: u64,
}

impl<K: Ord + Hash + Clone, V> Default for RecordBuffer<K, V> {
    fn default() -> Self {
        RecordBuffer {
            map: BTreeMap::new(),
            by_ts: BTreeSet::new(),
            dirty: FxHashSet::default(),
            seq: 0,
        }
    }
}

impl<K: Ord + Hash + Clone, V> RecordBuffer<K, V> {
    pub(crate) fn insert(&mut self, key: K, ts: i64, value: V, matched: bool) {
        self.seq += 1;
        let id = (key, ts, self.seq);
        self.by_ts.insert((ts, id.0.clone(), self.seq));
        self.dirty.insert(id.clone());
        self.map.insert(id, Buffered { value, matched });
    }
    /// Records of `key` with timestamps in `[from, to]`.
    pub(crate) fn range_mut(
        &mut self,
        key: &K,
        from: i64,
        to: i64,
    ) -> impl Iterator<Item = (i64, &mut Buffered<V>)> {
        let lo = (key.clone(), from, 0);
        let hi = (key.clone(), to, u64::MAX);
        let dirty = &mut self.dirty;
        self.map.range_mut(lo..=hi).map(move |(id, b)| {
            // A record whose matched flag may change is rewritten at the next commit.
            if !b.matched {
                dirty.insert(id.clone());
            }
            (id.1, b)
        })
    }
    pub(crate) fn range(&self, key: &K, from: i64, to: i64) -> impl Iterator<Item = (i64, &V)> {
        let lo = (key.clone(), from, 0);
        let hi = (key.clone(), to, u64::MAX);
        self.map.range(lo..=hi).map(|(id, b)| (id.1, &b.value))
    }
    /// Removes the records older than `ts`, oldest first.
    pub(crate) fn pop_older_than(&mut self, ts: i64) -> Vec<(K, i64, Buffered<V>)> {
        let mut out = Vec::new();
        while let Some((t, _, _)) = self.by_ts.first() {
            if *t >= ts {
                break;
            }
            let Some((t, k, s)) = self.by_ts.pop_first() else {
                break;
            };
            let id = (k, t, s);
            if let Some(b) = self.map.remove(&id) {
                self.dirty.insert(id.clone());
                out.push((id.0, t, b));
            }
        }
        out
    }
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }
}

impl<K: Ord + Hash + Clone + Serde + Send, V: Serde + Send> StateStore for RecordBuffer<K, V> {
    fn drain_changes(&mut self, out: &mut Changes) {
        for id in self.dirty.drain() {
            let key = encode(&Windowed {
                key: id.0.clone(),
                window: Window {
                    start: id.1,
                    end: id.2 as i64,
                },
            });
            let value = self.map.get(&id).map(|b| {
                let mut v = vec![u8::from(b.matched)];
                b.value.serialize(&mut v);
                Bytes::from(v)
            });
            out.push((key, value));
        }
    }
    fn restore(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<(), SerdeError> {
        let w = Windowed::<K>::deserialize(key)?;
        let id = (w.key, w.window.start, w.window.end as u64);
        self.seq = self.seq.max(id.2);
        match value {
            Some(v) => {
                let (flag, rest) = v
                    .split_first()
                    .ok_or_else(|| SerdeError::new("buffered record", "empty"))?;
                let b = Buffered {
                    value: V::deserialize(rest)?,
                    matched: *flag != 0,
                };
                self.by_ts.insert((id.1, id.0.clone(), id.2));
                self.map.insert(id, b);
            }
            None => {
                if self.map.remove(&id).is_some() {
                    self.by_ts.remove(&(id.1, id.0, id.2));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kv_changelog_round_trip() {
        let mut s = KvStore::<String, i64>::default();
        s.put("a".into(), 1);
        s.put("b".into(), 0);
        *s.get_mut(&"b".to_string()).unwrap() += 5;
        s.put("c".into(), 3);
        s.delete(&"c".to_string());
        let mut ch = Vec::new();
        s.drain_changes(&mut ch);
        assert_eq!(ch.len(), 3);
        let mut r = KvStore::<String, i64>::default();
        for (k, v) in &ch {
            r.restore(k, v.as_deref()).unwrap();
        }
        assert_eq!(r.iter().collect::<Vec<_>>(), s.iter().collect::<Vec<_>>());
        let mut again = Vec::new();
        s.drain_changes(&mut again);
        assert!(again.is_empty(), "changes are drained once");
    }

    #[test]
    fn window_store_closes_in_end_order() {
        let mut s = WindowStore::<String, i64>::default();
        let w = |k: &str, a, b| Windowed {
            key: k.to_string(),
            window: Window { start: a, end: b },
        };
        s.put(w("x", 10, 20), 1);
        s.put(w("x", 0, 10), 2);
        s.put(w("y", 0, 10), 3);
        assert_eq!(s.fetch(&"x".to_string(), 0, 100).count(), 2);
        let closed = s.pop_ending_by(10);
        assert_eq!(closed.len(), 2);
        assert_eq!(s.first_end(), Some(20));
        let mut ch = Vec::new();
        s.drain_changes(&mut ch);
        let mut r = WindowStore::<String, i64>::default();
        for (k, v) in &ch {
            r.restore(k, v.as_deref()).unwrap();
        }
        assert_eq!(r.len(), 1);
        assert_eq!(r.get(&w("x", 10, 20)), Some(&1));
    }

    #[test]
    fn buffer_restores_matched_flags() {
        let mut b = RecordBuffer::<String, i64>::default();
        b.insert("k".into(), 5, 50, false);
        b.insert("k".into(), 7, 70, false);
        for (_, r) in b.range_mut(&"k".to_string(), 6, 8) {
            r.matched = true;
        }
        let mut ch = Vec::new();
        b.drain_changes(&mut ch);
        let mut r = RecordBuffer::<String, i64>::default();
        for (k, v) in &ch {
            r.restore(k, v.as_deref()).unwrap();
        }
        assert_eq!(r.len(), 2);
        let old = r.pop_older_than(6);
        assert_eq!(old.len(), 1);
        assert!(!old[0].2.matched);
        let rest = r.pop_older_than(100);
        assert!(rest[0].2.matched);
    }
}
