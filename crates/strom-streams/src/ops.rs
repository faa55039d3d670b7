//! The stateful operators: tables, aggregates, windows and joins.

use std::collections::BTreeSet;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::dsl::{new_stream, new_table, store_def, Data, KStream, KTable, Key, Value};
use crate::graph::{any_input, one, Builder, Cx, Fanout, Graph, Many, OutRecord};
use crate::serde::Serde;
use crate::store::{KvStore, RecordBuffer, StoreKind, WindowStore};
use crate::window::{
    Emit, JoinWindows, SessionWindows, SlidingWindows, TimeWindows, Window, Windowed, MAX_TS,
};

/// Folds one value into an accumulator: updates `Some(acc)` in place, or starts a new one.
pub(crate) type Fold<K, V, A> = Arc<dyn Fn(&K, V, Option<&mut A>) -> Option<A> + Send + Sync>;

pub(crate) fn fold_from<K: 'static, V: 'static, A: 'static>(
    init: impl Fn() -> A + Send + Sync + 'static,
    adder: impl Fn(&K, V, &mut A) + Send + Sync + 'static,
) -> Fold<K, V, A> {
    Arc::new(move |k, v, acc| match acc {
        Some(a) => {
            adder(k, v, a);
            None
        }
        None => {
            let mut a = init();
            adder(k, v, &mut a);
            Some(a)
        }
    })
}

pub(crate) fn fold_reduce<K: 'static, V: 'static>(
    f: impl Fn(&mut V, V) + Send + Sync + 'static,
) -> Fold<K, V, V> {
    Arc::new(move |_k, v, acc| match acc {
        Some(a) => {
            f(a, v);
            None
        }
        None => Some(v),
    })
}

fn kv<K: Key, V: Value>() -> Mutex<KvStore<K, V>> {
    Mutex::new(KvStore::default())
}

/// Puts every update into a key-value store and passes it on: the node a [`KTable`] reads.
pub(crate) fn materialize<K: Key, V: Value>(
    g: &Arc<Mutex<Graph>>,
    parent: usize,
    store: &str,
    kind: &str,
) -> KTable<K, V> {
    let name = store.to_string();
    let build: Builder = Arc::new(move |bcx, mut outs| {
        let st = bcx.store(&name, kv::<K, V>);
        let mut down = outs.fanout::<K, Option<V>>(0);
        one::<K, Option<V>>(move |cx: &mut Cx, k: K, v: Option<V>, ts| {
            {
                let mut s = st.lock();
                match &v {
                    Some(v) => s.put(k.clone(), v.clone()),
                    None => s.delete(&k),
                }
            }
            down.emit(cx, k, v, ts)
        })
    });
    let mut gl = g.lock();
    let node = gl.add(kind, &[(parent, 0, 0)], build);
    gl.nodes[node]
        .stores
        .push(store_def(store, StoreKind::KeyValue));
    drop(gl);
    new_table(g, node, Some(store.to_string()))
}

pub(crate) fn aggregate<K: Key, V: Data, A: Value>(
    s: &KStream<K, V>,
    store: &str,
    fold: Fold<K, V, A>,
) -> KTable<K, A> {
    let name = store.to_string();
    let build: Builder = Arc::new(move |bcx, mut outs| {
        let st = bcx.store(&name, kv::<K, A>);
        let mut down = outs.fanout::<K, Option<A>>(0);
        let fold = fold.clone();
        one::<K, V>(move |cx: &mut Cx, k: K, v: V, ts| {
            let out = {
                let mut s = st.lock();
                match s.get_mut(&k) {
                    Some(a) => {
                        fold(&k, v, Some(&mut *a));
                        (!down.is_empty()).then(|| a.clone())
                    }
                    None => match fold(&k, v, None) {
                        Some(a) => {
                            let out = (!down.is_empty()).then(|| a.clone());
                            s.put(k.clone(), a);
                            out
                        }
                        None => None,
                    },
                }
            };
            if let Some(a) = out {
                down.emit(cx, k, Some(a), ts)
            }
        })
    });
    let mut g = s.g.lock();
    let node = g.add("KSTREAM-AGGREGATE", &[(s.node, 0, 0)], build);
    g.nodes[node]
        .stores
        .push(store_def(store, StoreKind::KeyValue));
    drop(g);
    new_table(&s.g, node, Some(store.to_string()))
}

/// Time windows (tumbling, hopping) or Kafka's sliding windows.
#[derive(Debug, Clone, Copy)]
pub(crate) enum WindowSpec {
    Time(TimeWindows),
    Sliding(SlidingWindows),
}

fn late<K: Serde, V: Serde>(cx: &mut Cx, topic: &Option<Arc<str>>, k: &K, v: &V, ts: i64) {
    cx.metrics.late_dropped += 1;
    if let Some(t) = topic {
        cx.out.push(OutRecord {
            topic: t.clone(),
            key: k.to_bytes(),
            value: v.to_bytes(),
            timestamp: ts,
        });
    }
}

type WinStore<K, A> = Mutex<WindowStore<K, A>>;

pub(crate) fn window_aggregate<K: Key, V: Value, A: Value>(
    s: &KStream<K, V>,
    store: &str,
    spec: WindowSpec,
    emit: Emit,
    late_topic: Option<String>,
    fold: Fold<K, V, A>,
) -> KTable<Windowed<K>, A> {
    let name = store.to_string();
    let buffer_name = format!("{store}-buffer");
    let build: Builder = Arc::new(move |bcx, mut outs| {
        let st = bcx.store(&name, || WinStore::<K, A>::new(WindowStore::default()));
        let mut down = outs.fanout::<Windowed<K>, Option<A>>(0);
        let late_topic = late_topic
            .as_ref()
            .map(|t| bcx.topic(&crate::graph::TopicRef::User(t.clone())));
        let fold = fold.clone();
        let mut pending: Vec<(Windowed<K>, A, i64)> = Vec::new();
        match spec {
            WindowSpec::Time(w) => one::<K, V>(move |cx: &mut Cx, k: K, v: V, ts| {
                if !(0..=MAX_TS).contains(&ts) {
                    cx.metrics.skipped += 1;
                    return;
                }
                let mut any = false;
                {
                    let mut s = st.lock();
                    let close = s.advance(ts).saturating_sub(w.grace);
                    for win in w.windows_for(ts) {
                        if win.end <= close {
                            continue;
                        }
                        any = true;
                        let wk = Windowed {
                            key: k.clone(),
                            window: win,
                        };
                        let updated = match s.get_mut(&wk) {
                            Some(a) => {
                                fold(&k, v.clone(), Some(&mut *a));
                                (emit == Emit::OnUpdate && !down.is_empty()).then(|| a.clone())
                            }
                            None => match fold(&k, v.clone(), None) {
                                Some(a) => {
                                    let out = (emit == Emit::OnUpdate && !down.is_empty())
                                        .then(|| a.clone());
                                    s.put(wk.clone(), a);
                                    out
                                }
                                None => None,
                            },
                        };
                        if let Some(a) = updated {
                            pending.push((wk, a, ts));
                        }
                    }
                    if s.first_end().is_some_and(|e| e <= close) {
                        for (wk, a) in s.pop_ending_by(close) {
                            if emit == Emit::OnWindowClose {
                                let t = wk.window.end - 1;
                                pending.push((wk, a, t));
                            }
                        }
                    }
                }
                if !any {
                    late(cx, &late_topic, &k, &v, ts);
                }
                for (wk, a, t) in pending.drain(..) {
                    down.emit(cx, wk, Some(a), t);
                }
            }),
            WindowSpec::Sliding(w) => {
                let buf = bcx.store(&buffer_name, || Mutex::new(RecordBuffer::<K, V>::default()));
                one::<K, V>(move |cx: &mut Cx, k: K, v: V, ts| {
                    if !(0..=MAX_TS).contains(&ts) {
                        cx.metrics.skipped += 1;
                        return;
                    }
                    let close = st.lock().advance(ts).saturating_sub(w.grace);
                    let d = w.diff;
                    // Sliding windows include their end, so (as in Kafka) a window [s, e] stays
                    // open while e >= close and closes once e + grace < stream time. (Treating
                    // e == close as closed, as time windows do with their exclusive end, would
                    // drop the left window [t - d, t] of every in-order record when grace is 0.)
                    //
                    // Every window containing `ts` ends by ts + d: the record is late when that
                    // one has closed (Kafka: ts + 1 + d <= close).
                    if ts.saturating_add(d) < close {
                        late(cx, &late_topic, &k, &v, ts);
                        return;
                    }
                    let mut b = buf.lock();
                    b.insert(k.clone(), ts, v, false);
                    let recs: Vec<(i64, V)> = b
                        .range(
                            &k,
                            ts.saturating_sub(2 * d + 1),
                            ts.saturating_add(2 * d + 1),
                        )
                        .map(|(t, v)| (t, v.clone()))
                        .collect();
                    let times: BTreeSet<i64> = recs.iter().map(|r| r.0).collect();
                    let mut affected: BTreeSet<(i64, i64)> = BTreeSet::new();
                    let mut s = st.lock();
                    for &r in &times {
                        let left = (r - d, r);
                        if left.0 <= ts && ts <= left.1 {
                            affected.insert(left);
                        }
                        let right = (r + 1, r + 1 + d);
                        let has_later = times.range(r + 1..=r + 1 + d).next().is_some();
                        // The record's own right window does not contain it: it only needs
                        // creating, and re-emitting an existing one would repeat an unchanged
                        // value (Kafka's `rightWinAlreadyCreated`).
                        let own_new = r == ts
                            && s.get(&Windowed {
                                key: k.clone(),
                                window: Window {
                                    start: right.0,
                                    end: right.1,
                                },
                            })
                            .is_none();
                        if has_later && (own_new || (right.0 <= ts && ts <= right.1)) {
                            affected.insert(right);
                        }
                    }
                    for (start, end) in affected {
                        if end < close {
                            continue;
                        }
                        let mut acc: Option<A> = None;
                        // Results carry the largest timestamp in their window, as in Kafka.
                        let mut max_ts = i64::MIN;
                        for (t, rv) in &recs {
                            if *t >= start && *t <= end {
                                max_ts = max_ts.max(*t);
                                match acc.as_mut() {
                                    Some(a) => {
                                        fold(&k, rv.clone(), Some(a));
                                    }
                                    None => acc = fold(&k, rv.clone(), None),
                                }
                            }
                        }
                        if let Some(a) = acc {
                            let wk = Windowed {
                                key: k.clone(),
                                window: Window { start, end },
                            };
                            if emit == Emit::OnUpdate && !down.is_empty() {
                                pending.push((wk.clone(), a.clone(), max_ts));
                            }
                            s.put(wk, a);
                        }
                    }
                    if s.first_end().is_some_and(|e| e < close) {
                        for (wk, a) in s.pop_ending_by(close.saturating_sub(1)) {
                            if emit == Emit::OnWindowClose {
                                let t = wk.window.end;
                                pending.push((wk, a, t));
                            }
                        }
                    }
                    // Open windows end at or after close, so they start at or after close - d;
                    // a record at close - d - 1 may still need its right window created when
                    // a record arrives in [close - d, close]. Older records are not needed.
                    b.pop_older_than(close.saturating_sub(d).saturating_sub(1), |_, _, _| {});
                    drop(s);
                    drop(b);
                    for (wk, a, t) in pending.drain(..) {
                        down.emit(cx, wk, Some(a), t);
                    }
                })
            }
        }
    });
    let mut g = s.g.lock();
    let node = g.add("KSTREAM-WINDOWED-AGGREGATE", &[(s.node, 0, 0)], build);
    g.nodes[node]
        .stores
        .push(store_def(store, StoreKind::Window));
    if matches!(spec, WindowSpec::Sliding(_)) {
        g.nodes[node]
            .stores
            .push(store_def(&format!("{store}-buffer"), StoreKind::Buffer));
    }
    drop(g);
    new_table(&s.g, node, None)
}

#[allow(clippy::too_many_arguments, clippy::type_complexity)]
pub(crate) fn session_aggregate<K: Key, V: Value, A: Value>(
    s: &KStream<K, V>,
    store: &str,
    w: SessionWindows,
    emit: Emit,
    late_topic: Option<String>,
    fold: Fold<K, V, A>,
    merger: Arc<dyn Fn(&K, &mut A, A) + Send + Sync>,
) -> KTable<Windowed<K>, A> {
    let name = store.to_string();
    let build: Builder = Arc::new(move |bcx, mut outs| {
        let st = bcx.store(&name, || WinStore::<K, A>::new(WindowStore::default()));
        let mut down = outs.fanout::<Windowed<K>, Option<A>>(0);
        let late_topic = late_topic
            .as_ref()
            .map(|t| bcx.topic(&crate::graph::TopicRef::User(t.clone())));
        let (fold, merger) = (fold.clone(), merger.clone());
        let mut pending: Vec<(Windowed<K>, Option<A>, i64)> = Vec::new();
        one::<K, V>(move |cx: &mut Cx, k: K, v: V, ts| {
            if !(0..=MAX_TS).contains(&ts) {
                cx.metrics.skipped += 1;
                return;
            }
            let mut s = st.lock();
            // A session is closed once stream time passes its end + gap + grace.
            let close = s.advance(ts).saturating_sub(w.gap).saturating_sub(w.grace);
            let overlapping: Vec<Windowed<K>> = s
                .windows_of(&k, ts.saturating_add(w.gap))
                .into_iter()
                .filter(|x| x.window.end >= ts.saturating_sub(w.gap))
                .collect();
            let start = overlapping
                .iter()
                .map(|x| x.window.start)
                .fold(ts, i64::min);
            let end = overlapping.iter().map(|x| x.window.end).fold(ts, i64::max);
            if end < close {
                drop(s);
                late(cx, &late_topic, &k, &v, ts);
                return;
            }
            let mut acc: Option<A> = None;
            for old in overlapping {
                if let Some(a) = s.remove(&old) {
                    match acc.as_mut() {
                        Some(x) => merger(&k, x, a),
                        None => acc = Some(a),
                    }
                    // A tombstone for each merged-away session; not for one whose bounds the
                    // record leaves unchanged (it is overwritten by the update below, and a
                    // tombstone would briefly delete it for downstream tables).
                    if emit == Emit::OnUpdate && old.window != (Window { start, end }) {
                        pending.push((old, None, ts));
                    }
                }
            }
            match acc.as_mut() {
                Some(a) => {
                    fold(&k, v, Some(a));
                }
                None => acc = fold(&k, v, None),
            }
            if let Some(a) = acc {
                let wk = Windowed {
                    key: k,
                    window: Window { start, end },
                };
                if emit == Emit::OnUpdate {
                    pending.push((wk.clone(), Some(a.clone()), ts));
                }
                s.put(wk, a);
            }
            if s.first_end().is_some_and(|e| e < close) {
                for (wk, a) in s.pop_ending_by(close.saturating_sub(1)) {
                    if emit == Emit::OnWindowClose {
                        let t = wk.window.end;
                        pending.push((wk, Some(a), t));
                    }
                }
            }
            drop(s);
            for (wk, a, t) in pending.drain(..) {
                down.emit(cx, wk, a, t);
            }
        })
    });
    let mut g = s.g.lock();
    let node = g.add("KSTREAM-SESSION-AGGREGATE", &[(s.node, 0, 0)], build);
    g.nodes[node]
        .stores
        .push(store_def(store, StoreKind::Window));
    drop(g);
    new_table(&s.g, node, None)
}

/// A joiner over optional sides; `None` means "emit nothing".
pub(crate) type Joiner<A, B, R> = Arc<dyn Fn(Option<&A>, Option<&B>) -> Option<R> + Send + Sync>;

struct StreamJoin<K, V1, V2, VR> {
    left: Arc<Mutex<RecordBuffer<K, V1>>>,
    right: Arc<Mutex<RecordBuffer<K, V2>>>,
    w: JoinWindows,
    joiner: Joiner<V1, V2, VR>,
    down: Fanout<K, VR>,
    out: Vec<(K, VR, i64)>,
}

impl<K: Key, V1: Value, V2: Value, VR: Data> StreamJoin<K, V1, V2, VR> {
    /// Handles one record of either side: `Ok` a left record, `Err` a right one. Both
    /// buffers are locked once for the whole step.
    fn on_record(&mut self, cx: &mut Cx, k: K, v: Result<V1, V2>, ts: i64) {
        let mut left = self.left.lock();
        let mut right = self.right.lock();
        // The join's stream time lives in the left buffer (and its changelog).
        let observed = left.advance(ts);
        let w = self.w;
        // How far the other side's records may lie before / after this one.
        let (before, after) = match &v {
            Ok(_) => (w.before, w.after),
            Err(_) => (w.after, w.before),
        };
        if ts.saturating_add(after).saturating_add(w.grace) < observed {
            cx.metrics.late_dropped += 1;
            return;
        }
        let (lo, hi) = (ts.saturating_sub(before), ts.saturating_add(after));
        let joiner = &self.joiner;
        let out = &mut self.out;
        let mut matched = false;
        match v {
            Ok(v) => {
                for (rt, rb) in right.range_mut(&k, lo, hi) {
                    matched = true;
                    rb.matched = true;
                    if let Some(r) = joiner(Some(&v), Some(&rb.value)) {
                        out.push((k.clone(), r, ts.max(rt)));
                    }
                }
                left.insert(k, ts, v, matched);
            }
            Err(v) => {
                for (lt, lb) in left.range_mut(&k, lo, hi) {
                    matched = true;
                    lb.matched = true;
                    if let Some(r) = joiner(Some(&lb.value), Some(&v)) {
                        out.push((k.clone(), r, ts.max(lt)));
                    }
                }
                right.insert(k, ts, v, matched);
            }
        }
        // Records that nothing can join any more: drop them, emitting the unpartnered ones
        // for left/outer joins.
        let horizon = observed
            .saturating_sub(w.before)
            .saturating_sub(w.after)
            .saturating_sub(w.grace);
        left.pop_older_than(horizon, |k, t, b| {
            if !b.matched {
                if let Some(r) = joiner(Some(&b.value), None) {
                    out.push((k, r, t));
                }
            }
        });
        right.pop_older_than(horizon, |k, t, b| {
            if !b.matched {
                if let Some(r) = joiner(None, Some(&b.value)) {
                    out.push((k, r, t));
                }
            }
        });
        drop(left);
        drop(right);
        for (k, r, t) in self.out.drain(..) {
            self.down.emit(cx, k, r, t);
        }
    }
}

pub(crate) fn stream_join<K: Key, V1: Value, V2: Value, VR: Data>(
    left: &KStream<K, V1>,
    right: &KStream<K, V2>,
    joiner: Joiner<V1, V2, VR>,
    w: JoinWindows,
) -> KStream<K, VR> {
    let g = &left.g;
    let id = g.lock().nodes.len();
    let lname = format!("KSTREAM-JOIN-{id:010}-this-store");
    let rname = format!("KSTREAM-JOIN-{id:010}-other-store");
    let (ln, rn) = (lname.clone(), rname.clone());
    let build: Builder = Arc::new(move |bcx, mut outs| {
        let state = Arc::new(Mutex::new(StreamJoin {
            left: bcx.store(&ln, || Mutex::new(RecordBuffer::<K, V1>::default())),
            right: bcx.store(&rn, || Mutex::new(RecordBuffer::<K, V2>::default())),
            w,
            joiner: joiner.clone(),
            down: outs.fanout::<K, VR>(0),
            out: Vec::new(),
        }));
        Box::new(Many(move |port| {
            let state = state.clone();
            if port == 0 {
                any_input::<K, V1>(move |cx: &mut Cx, k, v, ts| {
                    state.lock().on_record(cx, k, Ok(v), ts)
                })
            } else {
                any_input::<K, V2>(move |cx: &mut Cx, k, v, ts| {
                    state.lock().on_record(cx, k, Err(v), ts)
                })
            }
        }))
    });
    let mut gl = g.lock();
    let node = gl.add(
        "KSTREAM-JOIN",
        &[(left.node, 0, 0), (right.node, 0, 1)],
        build,
    );
    gl.nodes[node]
        .stores
        .push(store_def(&lname, StoreKind::Buffer));
    gl.nodes[node]
        .stores
        .push(store_def(&rname, StoreKind::Buffer));
    drop(gl);
    new_stream(g, node, false)
}

#[allow(clippy::type_complexity)]
pub(crate) fn stream_table_join<K: Key, V: Data, VT: Value, VR: Data>(
    s: &KStream<K, V>,
    table: &KTable<K, VT>,
    joiner: Arc<dyn Fn(&V, Option<&VT>) -> Option<VR> + Send + Sync>,
) -> KStream<K, VR> {
    let Some(store) = table.store.clone() else {
        s.g.lock()
            .error("a stream-table join needs a table kept in a key-value store (windowed tables cannot be joined)");
        return new_stream(&s.g, s.node, false);
    };
    let build: Builder = Arc::new(move |bcx, mut outs| {
        let st = bcx.store(&store, kv::<K, VT>);
        let down = Arc::new(Mutex::new(outs.fanout::<K, VR>(0)));
        let joiner = joiner.clone();
        Box::new(Many(move |port| {
            if port == 0 {
                let (st, down, joiner) = (st.clone(), down.clone(), joiner.clone());
                any_input::<K, V>(move |cx: &mut Cx, k, v, ts| {
                    let r = {
                        let s = st.lock();
                        joiner(&v, s.get(&k))
                    };
                    if let Some(r) = r {
                        down.lock().emit(cx, k, r, ts)
                    }
                })
            } else {
                // Table updates only change the store (already done upstream); the edge ties
                // the table to this task.
                any_input::<K, Option<VT>>(|_cx: &mut Cx, _k, _v, _ts| {})
            }
        }))
    });
    let node = s.g.lock().add(
        "KSTREAM-TABLE-JOIN",
        &[(s.node, 0, 0), (table.node, 0, 1)],
        build,
    );
    new_stream(&s.g, node, false)
}

pub(crate) fn table_join<K: Key, V1: Value, V2: Value, VR: Value>(
    left: &KTable<K, V1>,
    right: &KTable<K, V2>,
    joiner: Joiner<V1, V2, VR>,
) -> KTable<K, VR> {
    let g = &left.g;
    let (Some(ls), Some(rs)) = (left.store.clone(), right.store.clone()) else {
        g.lock()
            .error("a table-table join needs both tables kept in key-value stores (windowed tables cannot be joined)");
        return new_table(g, left.node, None);
    };
    // The store the result is materialized in (named after the join node, added next). The
    // join reads it to tell deletions of result rows from updates that leave a key absent on
    // both sides of the result: only the former are forwarded as tombstones (as in Kafka,
    // where e.g. an inner join ignores updates while the other side has no row).
    let res = format!("{}-STATE-STORE", g.lock().next_name("KTABLE-JOIN"));
    let res_name = res.clone();
    let build: Builder = Arc::new(move |bcx, mut outs| {
        let l = bcx.store(&ls, kv::<K, V1>);
        let r = bcx.store(&rs, kv::<K, V2>);
        let res = bcx.store(&res_name, kv::<K, VR>);
        let down = Arc::new(Mutex::new(outs.fanout::<K, Option<VR>>(0)));
        let joiner = joiner.clone();
        Box::new(Many(move |port| {
            let (l, r, res, down, joiner) = (
                l.clone(),
                r.clone(),
                res.clone(),
                down.clone(),
                joiner.clone(),
            );
            if port == 0 {
                any_input::<K, Option<V1>>(move |cx: &mut Cx, k, v: Option<V1>, ts| {
                    let out = joiner(v.as_ref(), r.lock().get(&k));
                    if out.is_some() || res.lock().get(&k).is_some() {
                        down.lock().emit(cx, k, out, ts)
                    }
                })
            } else {
                any_input::<K, Option<V2>>(move |cx: &mut Cx, k, v: Option<V2>, ts| {
                    let out = joiner(l.lock().get(&k), v.as_ref());
                    if out.is_some() || res.lock().get(&k).is_some() {
                        down.lock().emit(cx, k, out, ts)
                    }
                })
            }
        }))
    });
    let node = g.lock().add(
        "KTABLE-JOIN",
        &[(left.node, 0, 0), (right.node, 0, 1)],
        build,
    );
    debug_assert_eq!(res, format!("{}-STATE-STORE", g.lock().nodes[node].name));
    materialize(g, node, &res, "KTABLE-JOIN-MATERIALIZE")
}
