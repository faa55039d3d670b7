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
//!
//! Window stores and join buffers also log their operator's stream time (under the empty
//! key, which no window or record key can be), so a restored task keeps closed windows
//! closed instead of reopening them for records that were already late.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
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

/// Which keys changed since the last commit, and which the changelog holds a value for.
///
/// A key created and removed between two commits (a window that opened and closed, a join
/// record that expired) never reaches the changelog: its tombstone is only written when a
/// value for it was written before.
#[derive(Debug)]
struct Tracker<K> {
    dirty: FxHashSet<K>,
    logged: FxHashSet<K>,
}

impl<K> Default for Tracker<K> {
    fn default() -> Self {
        Tracker {
            dirty: FxHashSet::default(),
            logged: FxHashSet::default(),
        }
    }
}

impl<K: Hash + Eq + Clone> Tracker<K> {
    fn touch(&mut self, key: &K) {
        if !self.dirty.contains(key) {
            self.dirty.insert(key.clone());
        }
    }

    /// The changelog records for the changed keys, `value(key)` being the current value.
    fn drain(
        &mut self,
        out: &mut Changes,
        key_bytes: impl Fn(&K) -> Bytes,
        value: impl Fn(&K) -> Option<Bytes>,
    ) {
        for k in self.dirty.drain() {
            match value(&k) {
                Some(v) => {
                    out.push((key_bytes(&k), Some(v)));
                    self.logged.insert(k);
                }
                None => {
                    if self.logged.remove(&k) {
                        out.push((key_bytes(&k), None));
                    }
                }
            }
        }
    }

    fn restored(&mut self, key: K, present: bool) {
        if present {
            self.logged.insert(key);
        } else {
            self.logged.remove(&key);
        }
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
    changes: Tracker<K>,
}

impl<K: Ord + Hash + Clone, V> Default for KvStore<K, V> {
    fn default() -> Self {
        KvStore {
            map: BTreeMap::new(),
            changes: Tracker::default(),
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
        self.changes.touch(key)
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
        self.changes.touch(key);
        Some(v)
    }
}

impl<K: Ord + Hash + Clone + Serde + Send, V: Serde + Send> StateStore for KvStore<K, V> {
    fn drain_changes(&mut self, out: &mut Changes) {
        let map = &self.map;
        self.changes.drain(out, encode, |k| map.get(k).map(encode));
    }
    fn restore(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<(), SerdeError> {
        let k = K::deserialize(key)?;
        match value {
            Some(v) => {
                self.map.insert(k.clone(), V::deserialize(v)?);
                self.changes.restored(k, true);
            }
            None => {
                self.map.remove(&k);
                self.changes.restored(k, false);
            }
        }
        Ok(())
    }
}

/// An operator's stream time (the largest timestamp it has seen), kept in its store so that
/// it survives a restore: windows closed before a crash stay closed after it.
///
/// It travels in the store's changelog under the empty key, which no window or buffered
/// record can have (their keys end in 16 bytes of timestamps).
#[derive(Debug)]
pub(crate) struct StreamTime {
    now: i64,
    logged: i64,
}

impl Default for StreamTime {
    fn default() -> Self {
        StreamTime {
            now: i64::MIN,
            logged: i64::MIN,
        }
    }
}

impl StreamTime {
    pub(crate) fn advance(&mut self, ts: i64) -> i64 {
        self.now = self.now.max(ts);
        self.now
    }
    fn drain(&mut self, out: &mut Changes) {
        if self.now != self.logged {
            self.logged = self.now;
            out.push((
                Bytes::new(),
                Some(Bytes::copy_from_slice(&self.now.to_be_bytes())),
            ));
        }
    }
    /// Takes a changelog record if it is the stream time's (true), else leaves it.
    fn restore(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<bool, SerdeError> {
        if !key.is_empty() {
            return Ok(false);
        }
        if let Some(v) = value {
            let t = i64::deserialize(v)?;
            self.now = self.now.max(t);
            self.logged = self.now;
        }
        Ok(true)
    }
}

/// A window's value with its changelog bookkeeping.
#[derive(Debug)]
struct WinCell<V> {
    value: V,
    /// Changed since the last commit (listed in `dirty`).
    dirty: bool,
    /// The changelog holds a value for it.
    logged: bool,
}

/// A window store: values per key and window (windowed aggregates, sessions).
///
/// The per-record path is one hash lookup: a window's value and its "changed" flag live
/// together. Range queries use an ordered index, closing uses an index by end, and the
/// earliest end is cached.
#[derive(Debug)]
pub struct WindowStore<K, V> {
    map: FxHashMap<Windowed<K>, WinCell<V>>,
    /// Windows by key, then start.
    index: BTreeSet<Windowed<K>>,
    by_end: BTreeSet<(i64, Windowed<K>)>,
    /// The smallest end in `by_end`.
    first_end: Option<i64>,
    /// Windows changed since the last commit (each listed once).
    dirty: Vec<Windowed<K>>,
    /// Logged windows removed since the last commit (tombstones due).
    gone: Vec<Windowed<K>>,
    time: StreamTime,
}

impl<K: Ord + Hash + Clone, V> Default for WindowStore<K, V> {
    fn default() -> Self {
        WindowStore {
            map: FxHashMap::default(),
            index: BTreeSet::new(),
            by_end: BTreeSet::new(),
            first_end: None,
            dirty: Vec::new(),
            gone: Vec::new(),
            time: StreamTime::default(),
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
    /// Moves the operator's stream time to `ts` if later, returning it.
    pub(crate) fn advance(&mut self, ts: i64) -> i64 {
        self.time.advance(ts)
    }
    /// The value of one window.
    pub fn get(&self, key: &Windowed<K>) -> Option<&V> {
        self.map.get(key).map(|c| &c.value)
    }
    /// The windows of `key` starting in `[from, to]`, earliest first.
    pub fn fetch(&self, key: &K, from: i64, to: i64) -> impl Iterator<Item = (&Windowed<K>, &V)> {
        let (lo, hi) = key_range(key, from, to);
        self.index
            .range(lo..=hi)
            .filter_map(|w| self.map.get_key_value(w).map(|(k, c)| (k, &c.value)))
    }
    /// Every open window, by key then start.
    pub fn iter(&self) -> impl Iterator<Item = (&Windowed<K>, &V)> {
        self.index
            .iter()
            .filter_map(|w| self.map.get_key_value(w).map(|(k, c)| (k, &c.value)))
    }
    /// Number of open windows.
    pub fn len(&self) -> usize {
        self.map.len()
    }
    /// Whether no window is open.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The value of one window to update in place (marked changed).
    pub(crate) fn get_mut(&mut self, key: &Windowed<K>) -> Option<&mut V> {
        let c = self.map.get_mut(key)?;
        if !c.dirty {
            c.dirty = true;
            self.dirty.push(key.clone());
        }
        Some(&mut c.value)
    }
    fn insert_new(&mut self, key: Windowed<K>, value: V, dirty: bool, logged: bool) {
        let end = key.window.end;
        self.first_end = Some(self.first_end.map_or(end, |e| e.min(end)));
        self.index.insert(key.clone());
        self.by_end.insert((end, key.clone()));
        if dirty {
            self.dirty.push(key.clone());
        }
        self.map.insert(
            key,
            WinCell {
                value,
                dirty,
                logged,
            },
        );
    }
    pub(crate) fn put(&mut self, key: Windowed<K>, value: V) {
        match self.map.get_mut(&key) {
            Some(c) => {
                c.value = value;
                if !c.dirty {
                    c.dirty = true;
                    self.dirty.push(key);
                }
            }
            None => self.insert_new(key, value, true, false),
        }
    }
    fn forget(&mut self, key: &Windowed<K>, cell: &WinCell<V>) {
        self.index.remove(key);
        if cell.logged {
            self.gone.push(key.clone());
        }
    }
    pub(crate) fn remove(&mut self, key: &Windowed<K>) -> Option<V> {
        let c = self.map.remove(key)?;
        self.by_end.remove(&(key.window.end, key.clone()));
        self.first_end = self.by_end.first().map(|(e, _)| *e);
        self.forget(key, &c);
        Some(c.value)
    }
    /// The earliest end of an open window.
    pub(crate) fn first_end(&self) -> Option<i64> {
        self.first_end
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
            if let Some(c) = self.map.remove(&w) {
                self.forget(&w, &c);
                out.push((w, c.value));
            }
        }
        self.first_end = self.by_end.first().map(|(e, _)| *e);
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
        self.time.drain(out);
        for k in self.gone.drain(..) {
            // Gone, unless a window with the same bounds was opened again since.
            if !self.map.contains_key(&k) {
                out.push((encode(&k), None));
            }
        }
        for k in self.dirty.drain(..) {
            if let Some(c) = self.map.get_mut(&k) {
                if c.dirty {
                    c.dirty = false;
                    c.logged = true;
                    out.push((encode(&k), Some(encode(&c.value))));
                }
            }
        }
    }
    fn restore(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<(), SerdeError> {
        if self.time.restore(key, value)? {
            return Ok(());
        }
        let k = Windowed::<K>::deserialize(key)?;
        match value {
            Some(v) => {
                let v = V::deserialize(v)?;
                match self.map.get_mut(&k) {
                    Some(c) => c.value = v,
                    None => self.insert_new(k, v, false, true),
                }
            }
            None => {
                if let Some(c) = self.map.remove(&k) {
                    self.by_end.remove(&(k.window.end, k.clone()));
                    self.first_end = self.by_end.first().map(|(e, _)| *e);
                    self.index.remove(&k);
                    drop(c);
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

/// One record in a [`RecordBuffer`], with its changelog bookkeeping.
#[derive(Debug)]
pub(crate) struct Slot<V> {
    ts: i64,
    seq: u64,
    pub(crate) value: V,
    pub(crate) matched: bool,
    /// The changelog holds this record (a tombstone is due when it goes).
    logged: bool,
    /// Waiting in `pending` to be written.
    queued: bool,
}

/// Records kept for a while by key and timestamp (windowed joins, sliding windows).
///
/// Each key's records sit in a deque sorted by timestamp (records mostly arrive in order, so
/// inserts are appends), and one deque of all records sorted by timestamp drives expiry.
/// Changelog bookkeeping is per record: new and changed records are queued for the next
/// commit; a record that expires before it was ever written costs the changelog nothing.
#[derive(Debug)]
pub(crate) struct RecordBuffer<K, V> {
    by_key: FxHashMap<K, VecDeque<Slot<V>>>,
    expiry: VecDeque<(i64, u64, K)>,
    pending: Vec<(K, i64, u64)>,
    /// More records were queued than `pending` lists: the next drain visits the live ones.
    overflow: bool,
    gone: Vec<(K, i64, u64)>,
    seq: u64,
    len: usize,
    time: StreamTime,
}

impl<K: Ord + Hash + Clone, V> Default for RecordBuffer<K, V> {
    fn default() -> Self {
        RecordBuffer {
            by_key: FxHashMap::default(),
            expiry: VecDeque::new(),
            pending: Vec::new(),
            overflow: false,
            gone: Vec::new(),
            seq: 0,
            len: 0,
            time: StreamTime::default(),
        }
    }
}

fn span<V>(dq: &VecDeque<Slot<V>>, from: i64, to: i64) -> std::ops::Range<usize> {
    let lo = dq.partition_point(|s| s.ts < from);
    let hi = dq.partition_point(|s| s.ts <= to);
    lo..hi.max(lo)
}

impl<K: Ord + Hash + Clone, V> RecordBuffer<K, V> {
    /// Moves the owning operator's stream time to `ts` if later, returning it.
    pub(crate) fn advance(&mut self, ts: i64) -> i64 {
        self.time.advance(ts)
    }

    fn put(&mut self, key: K, ts: i64, seq: u64, value: V, matched: bool, logged: bool) {
        let queued = !logged;
        if queued {
            // Listing more records than are live is wasted work: the drain then visits the
            // live records instead (short-lived join records mostly expire before a commit).
            if self.pending.len() <= self.len {
                self.pending.push((key.clone(), ts, seq));
            } else {
                self.overflow = true;
            }
        }
        // Records mostly come in order: appending is the common case.
        if self.expiry.back().is_none_or(|e| (e.0, e.1) <= (ts, seq)) {
            self.expiry.push_back((ts, seq, key.clone()));
        } else {
            let at = self.expiry.partition_point(|e| (e.0, e.1) <= (ts, seq));
            self.expiry.insert(at, (ts, seq, key.clone()));
        }
        let dq = self.by_key.entry(key).or_default();
        let at = match dq.back() {
            Some(b) if (b.ts, b.seq) > (ts, seq) => {
                dq.partition_point(|s| (s.ts, s.seq) <= (ts, seq))
            }
            _ => dq.len(),
        };
        dq.insert(
            at,
            Slot {
                ts,
                seq,
                value,
                matched,
                logged,
                queued,
            },
        );
        self.len += 1;
    }

    pub(crate) fn insert(&mut self, key: K, ts: i64, value: V, matched: bool) {
        self.seq += 1;
        self.put(key, ts, self.seq, value, matched, false);
    }

    /// Records of `key` with timestamps in `[from, to]`, to mark as matched.
    pub(crate) fn range_mut<'a>(
        &'a mut self,
        key: &'a K,
        from: i64,
        to: i64,
    ) -> impl Iterator<Item = (i64, &'a mut Slot<V>)> + 'a {
        let pending = &mut self.pending;
        let slots = match self.by_key.get_mut(key) {
            Some(dq) => {
                let r = span(dq, from, to);
                dq.range_mut(r)
            }
            None => Default::default(),
        };
        slots.map(move |s| {
            // A record whose matched flag may change is rewritten at the next commit.
            if !s.matched && s.logged && !s.queued {
                s.queued = true;
                pending.push((key.clone(), s.ts, s.seq));
            }
            // (A matched flag set on a record not yet written is written with it.)
            (s.ts, s)
        })
    }

    /// Records of `key` with timestamps in `[from, to]`.
    pub(crate) fn range(&self, key: &K, from: i64, to: i64) -> impl Iterator<Item = (i64, &V)> {
        let slots = match self.by_key.get(key) {
            Some(dq) => dq.range(span(dq, from, to)),
            None => Default::default(),
        };
        slots.map(|s| (s.ts, &s.value))
    }

    fn take(&mut self, key: &K, ts: i64, seq: u64) -> Option<Slot<V>> {
        let dq = self.by_key.get_mut(key)?;
        let at = dq.partition_point(|s| (s.ts, s.seq) < (ts, seq));
        if dq.get(at).is_none_or(|s| s.seq != seq) {
            return None;
        }
        let slot = dq.remove(at)?;
        self.len -= 1;
        // Empty deques stay (a key's next record reuses its allocation) until they far
        // outnumber the live records.
        if dq.is_empty() && self.by_key.len() > 4 * self.len + 65_536 {
            self.by_key.retain(|_, d| !d.is_empty());
        }
        Some(slot)
    }

    /// Removes the records older than `ts`, oldest first, handing each to `f`.
    pub(crate) fn pop_older_than(&mut self, ts: i64, mut f: impl FnMut(K, i64, Buffered<V>)) {
        while self.expiry.front().is_some_and(|e| e.0 < ts) {
            let Some((t, seq, k)) = self.expiry.pop_front() else {
                break;
            };
            if let Some(slot) = self.take(&k, t, seq) {
                if slot.logged {
                    self.gone.push((k.clone(), t, seq));
                }
                f(
                    k,
                    t,
                    Buffered {
                        value: slot.value,
                        matched: slot.matched,
                    },
                );
            }
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

fn buffer_key<K: Serde + Clone>(k: &K, ts: i64, seq: u64) -> Bytes {
    encode(&Windowed {
        key: k.clone(),
        window: Window {
            start: ts,
            end: seq as i64,
        },
    })
}

impl<K: Ord + Hash + Clone + Serde + Send, V: Serde + Send> StateStore for RecordBuffer<K, V> {
    fn drain_changes(&mut self, out: &mut Changes) {
        self.time.drain(out);
        for (k, ts, seq) in std::mem::take(&mut self.gone) {
            out.push((buffer_key(&k, ts, seq), None));
        }
        let mut write = |k: &K, slot: &mut Slot<V>| {
            let mut v = vec![u8::from(slot.matched)];
            slot.value.serialize(&mut v);
            slot.logged = true;
            slot.queued = false;
            out.push((buffer_key(k, slot.ts, slot.seq), Some(Bytes::from(v))));
        };
        let pending = std::mem::take(&mut self.pending);
        if std::mem::take(&mut self.overflow) || pending.len() > self.len {
            // Most queued records are gone already: visiting the live ones is cheaper.
            for (k, dq) in self.by_key.iter_mut() {
                for slot in dq.iter_mut().filter(|s| s.queued) {
                    write(k, slot);
                }
            }
            return;
        }
        for (k, ts, seq) in pending {
            let Some(dq) = self.by_key.get_mut(&k) else {
                continue;
            };
            let at = dq.partition_point(|s| (s.ts, s.seq) < (ts, seq));
            if let Some(slot) = dq.get_mut(at).filter(|s| s.seq == seq && s.queued) {
                write(&k, slot);
            }
        }
    }
    fn restore(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<(), SerdeError> {
        if self.time.restore(key, value)? {
            return Ok(());
        }
        let w = Windowed::<K>::deserialize(key)?;
        let (k, ts, seq) = (w.key, w.window.start, w.window.end as u64);
        self.seq = self.seq.max(seq);
        // A record written again (its matched flag changed) replaces the earlier copy; the
        // earlier copy's expiry entry stays behind and finds nothing when it comes up.
        self.take(&k, ts, seq);
        if let Some(v) = value {
            let (flag, rest) = v
                .split_first()
                .ok_or_else(|| SerdeError::new("buffered record", "empty"))?;
            self.put(k, ts, seq, V::deserialize(rest)?, *flag != 0, true);
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
        // "c" came and went between two commits: the changelog never hears of it.
        assert_eq!(ch.len(), 2);
        let mut r = KvStore::<String, i64>::default();
        for (k, v) in &ch {
            r.restore(k, v.as_deref()).unwrap();
        }
        assert_eq!(r.iter().collect::<Vec<_>>(), s.iter().collect::<Vec<_>>());
        let mut again = Vec::new();
        s.drain_changes(&mut again);
        assert!(again.is_empty(), "changes are drained once");
        // A logged key's deletion is a tombstone; it also reaches a restored store's tracker.
        s.delete(&"a".to_string());
        s.drain_changes(&mut again);
        assert_eq!(again, vec![(Bytes::from_static(b"a"), None)]);
        r.delete(&"b".to_string());
        let mut from_restored = Vec::new();
        r.drain_changes(&mut from_restored);
        assert_eq!(from_restored, vec![(Bytes::from_static(b"b"), None)]);
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
    fn stream_time_survives_a_restore() {
        let mut s = WindowStore::<String, i64>::default();
        assert_eq!(s.advance(50), 50);
        assert_eq!(s.advance(20), 50);
        let mut ch = Vec::new();
        s.drain_changes(&mut ch);
        assert_eq!(
            ch,
            vec![(
                Bytes::new(),
                Some(Bytes::copy_from_slice(&50i64.to_be_bytes()))
            )]
        );
        let mut r = WindowStore::<String, i64>::default();
        for (k, v) in &ch {
            r.restore(k, v.as_deref()).unwrap();
        }
        assert_eq!(
            r.advance(10),
            50,
            "windows closed before the restore stay closed"
        );
        let mut again = Vec::new();
        r.drain_changes(&mut again);
        assert!(again.is_empty(), "restoring is not a change");
        let mut b = RecordBuffer::<String, i64>::default();
        b.advance(7);
        let mut ch = Vec::new();
        b.drain_changes(&mut ch);
        let mut rb = RecordBuffer::<String, i64>::default();
        for (k, v) in &ch {
            rb.restore(k, v.as_deref()).unwrap();
        }
        assert_eq!(rb.advance(0), 7);
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
        let mut old = Vec::new();
        r.pop_older_than(6, |k, t, b| old.push((k, t, b)));
        assert_eq!(old.len(), 1);
        assert!(!old[0].2.matched);
        let mut rest = Vec::new();
        r.pop_older_than(100, |k, t, b| rest.push((k, t, b)));
        assert!(rest[0].2.matched);
    }
}
