//! The DSL: [`StreamsBuilder`], [`KStream`], [`KTable`] and their grouped and windowed forms.

use std::hash::Hash;
use std::marker::PhantomData;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::error::Result;
use crate::graph::{
    any_input, one, Builder, Cx, Fanout, Graph, Input, Many, OutRecord, RawProcess, StoreDef,
    TopicRef,
};
use crate::ops;
use crate::serde::Serde;
use crate::store::StoreKind;
use crate::topology::Topology;
use crate::window::{Emit, JoinWindows, SessionWindows, SlidingWindows, TimeWindows, Windowed};

/// Values that flow through a topology.
pub trait Data: Clone + Send + 'static {}
impl<T: Clone + Send + 'static> Data for T {}

/// Keys of grouped, joined or stored records: ordered, hashable and encodable.
pub trait Key: Data + Ord + Hash + Serde {}
impl<T: Data + Ord + Hash + Serde> Key for T {}

/// Values kept in stores or written to topics.
pub trait Value: Data + Serde {}
impl<T: Data + Serde> Value for T {}

/// Builds a topology: sources, operators, sinks.
#[derive(Clone, Default)]
pub struct StreamsBuilder {
    g: Arc<Mutex<Graph>>,
}

impl StreamsBuilder {
    /// An empty topology.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records of `topic`, with the timestamps they were written with.
    pub fn stream<K: Data + Serde, V: Data + Serde>(&self, topic: &str) -> KStream<K, V> {
        self.source(TopicRef::User(topic.to_string()), None)
    }

    /// Records of `topic`, timestamped by `extractor(key, value, record timestamp)`.
    pub fn stream_with_timestamps<K: Data + Serde, V: Data + Serde>(
        &self,
        topic: &str,
        extractor: impl Fn(&K, &V, i64) -> i64 + Send + Sync + 'static,
    ) -> KStream<K, V> {
        self.source(TopicRef::User(topic.to_string()), Some(Arc::new(extractor)))
    }

    /// `topic` read as a table: the latest value per key (null values delete), materialized
    /// in a store named `<topic>-table`.
    pub fn table<K: Key, V: Value>(&self, topic: &str) -> KTable<K, V> {
        let s = self.source::<K, Option<V>>(TopicRef::User(topic.to_string()), None);
        ops::materialize(&s.g, s.node, &format!("{topic}-table"), "KTABLE-SOURCE")
    }

    /// The finished topology, or the first mistake found in it.
    pub fn build(&self) -> Result<Topology> {
        Topology::from_graph(&self.g.lock())
    }

    #[allow(clippy::type_complexity)]
    pub(crate) fn source<K: Data + Serde, V: Data + Serde>(
        &self,
        topic: TopicRef,
        extractor: Option<Arc<dyn Fn(&K, &V, i64) -> i64 + Send + Sync>>,
    ) -> KStream<K, V> {
        source_node(&self.g, topic, extractor)
    }
}

#[allow(clippy::type_complexity)]
pub(crate) fn source_node<K: Data + Serde, V: Data + Serde>(
    g: &Arc<Mutex<Graph>>,
    topic: TopicRef,
    extractor: Option<Arc<dyn Fn(&K, &V, i64) -> i64 + Send + Sync>>,
) -> KStream<K, V> {
    struct Source<K, V> {
        down: Fanout<K, V>,
        #[allow(clippy::type_complexity)]
        extractor: Option<Arc<dyn Fn(&K, &V, i64) -> i64 + Send + Sync>>,
        topic: String,
    }
    impl<K: Data + Serde, V: Data + Serde> RawProcess for Source<K, V> {
        fn process_raw(&mut self, cx: &mut Cx, key: Option<&[u8]>, value: Option<&[u8]>, ts: i64) {
            let decoded = K::from_bytes(key).and_then(|k| Ok((k, V::from_bytes(value)?)));
            match decoded {
                Ok((k, v)) => {
                    let ts = match &self.extractor {
                        Some(e) => e(&k, &v, ts),
                        None => ts,
                    };
                    self.down.emit(cx, k, v, ts)
                }
                Err(e) => {
                    cx.metrics.skipped += 1;
                    if cx.metrics.skipped.is_power_of_two() {
                        tracing::warn!(topic = %self.topic, error = %e, skipped = cx.metrics.skipped, "skipping a record that cannot be decoded");
                    }
                }
            }
        }
    }
    let t = topic.clone();
    let build: Builder = Arc::new(move |bcx, mut outs| {
        let raw: Box<dyn RawProcess> = Box::new(Source {
            down: outs.fanout::<K, V>(0),
            extractor: extractor.clone(),
            topic: t.resolve(&bcx.app),
        });
        Box::new(crate::graph::One(Some(Box::new(raw))))
    });
    let mut gl = g.lock();
    let node = gl.add("KSTREAM-SOURCE", &[], build);
    gl.nodes[node].source = Some(topic);
    drop(gl);
    KStream {
        g: g.clone(),
        node,
        key_changed: false,
        _p: PhantomData,
    }
}

/// An unbounded stream of key-value records.
pub struct KStream<K, V> {
    pub(crate) g: Arc<Mutex<Graph>>,
    pub(crate) node: usize,
    /// Whether an operator may have changed keys since the last (re)partitioning.
    pub(crate) key_changed: bool,
    _p: PhantomData<fn() -> (K, V)>,
}

impl<K, V> Clone for KStream<K, V> {
    fn clone(&self) -> Self {
        KStream {
            g: self.g.clone(),
            node: self.node,
            key_changed: self.key_changed,
            _p: PhantomData,
        }
    }
}

pub(crate) fn new_stream<K, V>(
    g: &Arc<Mutex<Graph>>,
    node: usize,
    key_changed: bool,
) -> KStream<K, V> {
    KStream {
        g: g.clone(),
        node,
        key_changed,
        _p: PhantomData,
    }
}

impl<K: Data, V: Data> KStream<K, V> {
    /// Adds a one-in, one-out operator.
    pub(crate) fn op<K2: Data, V2: Data>(
        &self,
        kind: &str,
        key_changed: bool,
        make: impl Fn(Fanout<K2, V2>) -> Input<K, V> + Send + Sync + 'static,
    ) -> KStream<K2, V2> {
        let build: Builder = Arc::new(move |_bcx, mut outs| {
            let input: Input<K, V> = make(outs.fanout(0));
            Box::new(crate::graph::One(Some(Box::new(input))))
        });
        let node = self.g.lock().add(kind, &[(self.node, 0, 0)], build);
        new_stream(&self.g, node, self.key_changed || key_changed)
    }

    /// A new key and value for every record.
    pub fn map<K2: Data, V2: Data>(
        &self,
        f: impl Fn(K, V) -> (K2, V2) + Send + Sync + 'static,
    ) -> KStream<K2, V2> {
        let f = Arc::new(f);
        self.op("KSTREAM-MAP", true, move |mut down| {
            let f = f.clone();
            Box::new(move |cx: &mut Cx, k, v, ts| {
                let (k2, v2) = f(k, v);
                down.emit(cx, k2, v2, ts)
            })
        })
    }

    /// A new value for every record; the key (and its partitioning) stays.
    pub fn map_values<V2: Data>(
        &self,
        f: impl Fn(V) -> V2 + Send + Sync + 'static,
    ) -> KStream<K, V2> {
        let f = Arc::new(f);
        self.op("KSTREAM-MAPVALUES", false, move |mut down| {
            let f = f.clone();
            Box::new(move |cx: &mut Cx, k, v, ts| down.emit(cx, k, f(v), ts))
        })
    }

    /// The records for which `pred` holds.
    pub fn filter(&self, pred: impl Fn(&K, &V) -> bool + Send + Sync + 'static) -> KStream<K, V> {
        let pred = Arc::new(pred);
        self.op("KSTREAM-FILTER", false, move |mut down| {
            let pred = pred.clone();
            Box::new(move |cx: &mut Cx, k, v, ts| {
                if pred(&k, &v) {
                    down.emit(cx, k, v, ts)
                }
            })
        })
    }

    /// The records for which `pred` does not hold.
    pub fn filter_not(
        &self,
        pred: impl Fn(&K, &V) -> bool + Send + Sync + 'static,
    ) -> KStream<K, V> {
        self.filter(move |k, v| !pred(k, v))
    }

    /// Zero or more records for every record.
    pub fn flat_map<K2: Data, V2: Data, I: IntoIterator<Item = (K2, V2)>>(
        &self,
        f: impl Fn(K, V) -> I + Send + Sync + 'static,
    ) -> KStream<K2, V2> {
        let f = Arc::new(f);
        self.op("KSTREAM-FLATMAP", true, move |mut down| {
            let f = f.clone();
            Box::new(move |cx: &mut Cx, k, v, ts| {
                for (k2, v2) in f(k, v) {
                    down.emit(cx, k2, v2, ts)
                }
            })
        })
    }

    /// Zero or more values for every record, each with the record's key.
    pub fn flat_map_values<V2: Data, I: IntoIterator<Item = V2>>(
        &self,
        f: impl Fn(V) -> I + Send + Sync + 'static,
    ) -> KStream<K, V2> {
        let f = Arc::new(f);
        self.op("KSTREAM-FLATMAPVALUES", false, move |mut down| {
            let f = f.clone();
            Box::new(move |cx: &mut Cx, k: K, v, ts| {
                for v2 in f(v) {
                    down.emit(cx, k.clone(), v2, ts)
                }
            })
        })
    }

    /// A new key computed from each record.
    pub fn select_key<K2: Data>(
        &self,
        f: impl Fn(&K, &V) -> K2 + Send + Sync + 'static,
    ) -> KStream<K2, V> {
        let f = Arc::new(f);
        self.op("KSTREAM-KEY-SELECT", true, move |mut down| {
            let f = f.clone();
            Box::new(move |cx: &mut Cx, k, v, ts| {
                let k2 = f(&k, &v);
                down.emit(cx, k2, v, ts)
            })
        })
    }

    /// Calls `f` on every record and passes it on.
    pub fn peek(&self, f: impl Fn(&K, &V) + Send + Sync + 'static) -> KStream<K, V> {
        let f = Arc::new(f);
        self.op("KSTREAM-PEEK", false, move |mut down| {
            let f = f.clone();
            Box::new(move |cx: &mut Cx, k, v, ts| {
                f(&k, &v);
                down.emit(cx, k, v, ts)
            })
        })
    }

    /// Calls `f` on every record (a terminal operation).
    pub fn for_each(&self, f: impl Fn(&K, &V) + Send + Sync + 'static) {
        let f = Arc::new(f);
        self.op::<K, V>("KSTREAM-FOREACH", false, move |_down| {
            let f = f.clone();
            Box::new(move |_cx: &mut Cx, k, v, _ts| f(&k, &v))
        });
    }

    /// This stream's records and `other`'s, interleaved.
    pub fn merge(&self, other: &KStream<K, V>) -> KStream<K, V> {
        let build: Builder = Arc::new(|_bcx, mut outs| {
            let down = Arc::new(Mutex::new(outs.fanout::<K, V>(0)));
            Box::new(Many(move |_port| {
                let down = down.clone();
                any_input::<K, V>(move |cx: &mut Cx, k, v, ts| down.lock().emit(cx, k, v, ts))
            }))
        });
        let node = self.g.lock().add(
            "KSTREAM-MERGE",
            &[(self.node, 0, 0), (other.node, 0, 1)],
            build,
        );
        new_stream(&self.g, node, self.key_changed || other.key_changed)
    }

    /// Routes each record to the first branch whose predicate holds.
    pub fn split(&self) -> Split<K, V> {
        Split {
            stream: self.clone(),
            preds: Vec::new(),
        }
    }
}

impl<K: Data + Serde, V: Data + Serde> KStream<K, V> {
    /// Writes every record to `topic` (partitioned by key, as Kafka's default partitioner).
    pub fn to(&self, topic: &str) {
        self.sink(TopicRef::User(topic.to_string()));
    }

    pub(crate) fn sink(&self, topic: TopicRef) -> usize {
        let t = topic.clone();
        let build: Builder = Arc::new(move |bcx, _outs| {
            let topic = bcx.topic(&t);
            one::<K, V>(move |cx: &mut Cx, k: K, v: V, ts| {
                cx.out.push(OutRecord {
                    topic: topic.clone(),
                    key: k.to_bytes(),
                    value: v.to_bytes(),
                    timestamp: ts,
                })
            })
        });
        let mut g = self.g.lock();
        let node = g.add("KSTREAM-SINK", &[(self.node, 0, 0)], build);
        g.nodes[node].sink = Some(topic);
        node
    }

    /// Writes the records through an internal topic partitioned by their current key, so that
    /// everything downstream sees each key in one task.
    pub fn repartition(&self) -> KStream<K, V> {
        let name = self.g.lock().next_name("KSTREAM-REPARTITION");
        let topic = TopicRef::Internal(format!("{name}-repartition"));
        self.sink(topic.clone());
        source_node::<K, V>(&self.g, topic, None)
    }

    fn copartitioned(&self) -> KStream<K, V> {
        if self.key_changed {
            self.repartition()
        } else {
            self.clone()
        }
    }

    /// Groups by the current key (through a repartition topic if an operator changed keys).
    pub fn group_by_key(&self) -> KGroupedStream<K, V>
    where
        K: Key,
    {
        KGroupedStream {
            stream: self.copartitioned(),
            store: None,
        }
    }

    /// Groups by a new key, repartitioning through an internal topic.
    pub fn group_by<K2: Key>(
        &self,
        f: impl Fn(&K, &V) -> K2 + Send + Sync + 'static,
    ) -> KGroupedStream<K2, V> {
        KGroupedStream {
            stream: self.select_key(f).repartition(),
            store: None,
        }
    }

    /// Inner join with `other`: `joiner` for every pair of records with the same key whose
    /// timestamps are within `windows`.
    pub fn join<V2: Value, VR: Data>(
        &self,
        other: &KStream<K, V2>,
        joiner: impl Fn(&V, &V2) -> VR + Send + Sync + 'static,
        windows: JoinWindows,
    ) -> KStream<K, VR>
    where
        K: Key,
    {
        let j = move |a: Option<&V>, b: Option<&V2>| match (a, b) {
            (Some(a), Some(b)) => Some(joiner(a, b)),
            _ => None,
        };
        ops::stream_join(
            &self.copartitioned(),
            &other.copartitioned(),
            Arc::new(j),
            windows,
        )
    }

    /// Left join with `other`: like [`join`](Self::join), and every left record that found
    /// no partner by the time its window closed is emitted with `None`.
    pub fn left_join<V2: Value, VR: Data>(
        &self,
        other: &KStream<K, V2>,
        joiner: impl Fn(&V, Option<&V2>) -> VR + Send + Sync + 'static,
        windows: JoinWindows,
    ) -> KStream<K, VR>
    where
        K: Key,
    {
        let j = move |a: Option<&V>, b: Option<&V2>| a.map(|a| joiner(a, b));
        ops::stream_join(
            &self.copartitioned(),
            &other.copartitioned(),
            Arc::new(j),
            windows,
        )
    }

    /// Outer join with `other`: unpartnered records of both sides are emitted once their
    /// window closes.
    pub fn outer_join<V2: Value, VR: Data>(
        &self,
        other: &KStream<K, V2>,
        joiner: impl Fn(Option<&V>, Option<&V2>) -> VR + Send + Sync + 'static,
        windows: JoinWindows,
    ) -> KStream<K, VR>
    where
        K: Key,
    {
        let j = move |a: Option<&V>, b: Option<&V2>| Some(joiner(a, b));
        ops::stream_join(
            &self.copartitioned(),
            &other.copartitioned(),
            Arc::new(j),
            windows,
        )
    }

    /// Joins each record with the table's current value for its key; records without one are
    /// dropped.
    pub fn join_table<VT: Value, VR: Data>(
        &self,
        table: &KTable<K, VT>,
        joiner: impl Fn(&V, &VT) -> VR + Send + Sync + 'static,
    ) -> KStream<K, VR>
    where
        K: Key,
    {
        let j = move |a: &V, b: Option<&VT>| b.map(|b| joiner(a, b));
        ops::stream_table_join(&self.copartitioned(), table, Arc::new(j))
    }

    /// Joins each record with the table's current value for its key, or `None`.
    pub fn left_join_table<VT: Value, VR: Data>(
        &self,
        table: &KTable<K, VT>,
        joiner: impl Fn(&V, Option<&VT>) -> VR + Send + Sync + 'static,
    ) -> KStream<K, VR>
    where
        K: Key,
    {
        let j = move |a: &V, b: Option<&VT>| Some(joiner(a, b));
        ops::stream_table_join(&self.copartitioned(), table, Arc::new(j))
    }
}

/// Branches being declared on a stream; see [`KStream::split`].
pub struct Split<K, V> {
    stream: KStream<K, V>,
    #[allow(clippy::type_complexity)]
    preds: Vec<Arc<dyn Fn(&K, &V) -> bool + Send + Sync>>,
}

impl<K: Data, V: Data> Split<K, V> {
    /// A branch for the records matching `pred` (and no earlier branch).
    pub fn branch(mut self, pred: impl Fn(&K, &V) -> bool + Send + Sync + 'static) -> Self {
        self.preds.push(Arc::new(pred));
        self
    }

    /// The branches in order, then one for records no branch took.
    pub fn default_branch(self) -> Vec<KStream<K, V>> {
        self.finish(true)
    }

    /// The branches in order; records no branch took are dropped.
    pub fn no_default_branch(self) -> Vec<KStream<K, V>> {
        self.finish(false)
    }

    fn finish(self, default: bool) -> Vec<KStream<K, V>> {
        let preds = Arc::new(self.preds);
        let n = preds.len() + usize::from(default);
        let p = preds.clone();
        let build: Builder = Arc::new(move |_bcx, mut outs| {
            let mut downs: Vec<Fanout<K, V>> = (0..n).map(|i| outs.fanout(i)).collect();
            let preds = p.clone();
            one::<K, V>(move |cx: &mut Cx, k: K, v: V, ts| {
                let i = preds
                    .iter()
                    .position(|p| p(&k, &v))
                    .or(default.then_some(preds.len()));
                if let Some(d) = i.and_then(|i| downs.get_mut(i)) {
                    d.emit(cx, k, v, ts)
                }
            })
        });
        let s = &self.stream;
        let split = s.g.lock().add("KSTREAM-BRANCH", &[(s.node, 0, 0)], build);
        (0..n)
            .map(|i| {
                let build: Builder = Arc::new(|_bcx, mut outs| {
                    let mut down = outs.fanout::<K, V>(0);
                    one::<K, V>(move |cx: &mut Cx, k, v, ts| down.emit(cx, k, v, ts))
                });
                let node =
                    s.g.lock()
                        .add("KSTREAM-BRANCHCHILD", &[(split, i, 0)], build);
                new_stream(&s.g, node, s.key_changed)
            })
            .collect()
    }
}

/// A stream grouped by key, ready to aggregate.
pub struct KGroupedStream<K, V> {
    pub(crate) stream: KStream<K, V>,
    pub(crate) store: Option<String>,
}

impl<K: Key, V: Data> KGroupedStream<K, V> {
    /// Names the store of the next aggregation (for interactive queries; default: generated).
    pub fn materialize_as(mut self, store: &str) -> Self {
        self.store = Some(store.to_string());
        self
    }

    fn store_name(&self, kind: &str) -> String {
        self.store
            .clone()
            .unwrap_or_else(|| format!("{}-STATE-STORE", self.stream.g.lock().next_name(kind)))
    }

    /// Folds every key's records into an accumulator that starts as `init()`.
    pub fn aggregate<A: Value>(
        &self,
        init: impl Fn() -> A + Send + Sync + 'static,
        adder: impl Fn(&K, V, &mut A) + Send + Sync + 'static,
    ) -> KTable<K, A> {
        let store = self.store_name("KSTREAM-AGGREGATE");
        ops::aggregate(&self.stream, &store, ops::fold_from(init, adder))
    }

    /// The number of records per key.
    pub fn count(&self) -> KTable<K, i64> {
        self.aggregate(|| 0i64, |_, _, n| *n += 1)
    }

    /// Combines every key's values with `f(accumulated, next)`; the first value starts it.
    pub fn reduce(&self, f: impl Fn(&mut V, V) + Send + Sync + 'static) -> KTable<K, V>
    where
        V: Value,
    {
        let store = self.store_name("KSTREAM-REDUCE");
        ops::aggregate(&self.stream, &store, ops::fold_reduce(f))
    }

    /// Windows of fixed size (tumbling or hopping).
    pub fn windowed_by(&self, windows: TimeWindows) -> WindowedKStream<K, V> {
        self.windowed(ops::WindowSpec::Time(windows))
    }

    /// Kafka's sliding windows.
    pub fn windowed_by_sliding(&self, windows: SlidingWindows) -> WindowedKStream<K, V> {
        self.windowed(ops::WindowSpec::Sliding(windows))
    }

    fn windowed(&self, spec: ops::WindowSpec) -> WindowedKStream<K, V> {
        WindowedKStream {
            grouped: KGroupedStream {
                stream: self.stream.clone(),
                store: self.store.clone(),
            },
            spec,
            emit: Emit::OnUpdate,
            late_topic: None,
        }
    }

    /// Session windows.
    pub fn windowed_by_session(&self, windows: SessionWindows) -> SessionWindowedKStream<K, V> {
        SessionWindowedKStream {
            grouped: KGroupedStream {
                stream: self.stream.clone(),
                store: self.store.clone(),
            },
            windows,
            emit: Emit::OnUpdate,
            late_topic: None,
        }
    }
}

/// A grouped stream with time or sliding windows.
pub struct WindowedKStream<K, V> {
    grouped: KGroupedStream<K, V>,
    spec: ops::WindowSpec,
    emit: Emit,
    late_topic: Option<String>,
}

impl<K: Key, V: Data + Serde> WindowedKStream<K, V> {
    /// When results are emitted (default: every update).
    pub fn emit(mut self, emit: Emit) -> Self {
        self.emit = emit;
        self
    }
    /// Writes records that arrive after their windows closed to `topic` instead of only
    /// counting them.
    pub fn late_records_to(mut self, topic: &str) -> Self {
        self.late_topic = Some(topic.to_string());
        self
    }
    /// Names the window store (for interactive queries).
    pub fn materialize_as(mut self, store: &str) -> Self {
        self.grouped.store = Some(store.to_string());
        self
    }

    /// Folds each key's records in each window, starting from `init()`.
    pub fn aggregate<A: Value>(
        &self,
        init: impl Fn() -> A + Send + Sync + 'static,
        adder: impl Fn(&K, V, &mut A) + Send + Sync + 'static,
    ) -> KTable<Windowed<K>, A> {
        let store = self.grouped.store_name("KSTREAM-WINDOWED-AGGREGATE");
        ops::window_aggregate(
            &self.grouped.stream,
            &store,
            self.spec,
            self.emit,
            self.late_topic.clone(),
            ops::fold_from(init, adder),
        )
    }

    /// Records per key and window.
    pub fn count(&self) -> KTable<Windowed<K>, i64> {
        self.aggregate(|| 0i64, |_, _, n| *n += 1)
    }

    /// Combines the values of each key and window with `f`.
    pub fn reduce(&self, f: impl Fn(&mut V, V) + Send + Sync + 'static) -> KTable<Windowed<K>, V>
    where
        V: Value,
    {
        let store = self.grouped.store_name("KSTREAM-WINDOWED-REDUCE");
        ops::window_aggregate(
            &self.grouped.stream,
            &store,
            self.spec,
            self.emit,
            self.late_topic.clone(),
            ops::fold_reduce(f),
        )
    }
}

/// A grouped stream with session windows.
pub struct SessionWindowedKStream<K, V> {
    grouped: KGroupedStream<K, V>,
    windows: SessionWindows,
    emit: Emit,
    late_topic: Option<String>,
}

impl<K: Key, V: Data + Serde> SessionWindowedKStream<K, V> {
    /// When results are emitted (default: every update, with `None` for merged-away
    /// sessions).
    pub fn emit(mut self, emit: Emit) -> Self {
        self.emit = emit;
        self
    }
    /// Writes records that arrive after their session closed to `topic`.
    pub fn late_records_to(mut self, topic: &str) -> Self {
        self.late_topic = Some(topic.to_string());
        self
    }
    /// Names the session store.
    pub fn materialize_as(mut self, store: &str) -> Self {
        self.grouped.store = Some(store.to_string());
        self
    }

    /// Folds each session's records; `merger(key, into, other)` combines two sessions that a
    /// record bridges.
    pub fn aggregate<A: Value>(
        &self,
        init: impl Fn() -> A + Send + Sync + 'static,
        adder: impl Fn(&K, V, &mut A) + Send + Sync + 'static,
        merger: impl Fn(&K, &mut A, A) + Send + Sync + 'static,
    ) -> KTable<Windowed<K>, A> {
        let store = self.grouped.store_name("KSTREAM-SESSION-AGGREGATE");
        ops::session_aggregate(
            &self.grouped.stream,
            &store,
            self.windows,
            self.emit,
            self.late_topic.clone(),
            ops::fold_from(init, adder),
            Arc::new(merger),
        )
    }

    /// Records per key and session.
    pub fn count(&self) -> KTable<Windowed<K>, i64> {
        self.aggregate(|| 0i64, |_, _, n| *n += 1, |_, a, b| *a += b)
    }

    /// Combines the values of each session with `f`.
    pub fn reduce(&self, f: impl Fn(&mut V, V) + Send + Sync + 'static) -> KTable<Windowed<K>, V>
    where
        V: Value,
    {
        let f = Arc::new(f);
        let g = f.clone();
        let store = self.grouped.store_name("KSTREAM-SESSION-REDUCE");
        ops::session_aggregate(
            &self.grouped.stream,
            &store,
            self.windows,
            self.emit,
            self.late_topic.clone(),
            ops::fold_reduce(move |a: &mut V, v| f(a, v)),
            Arc::new(move |_k: &K, a: &mut V, b: V| g(a, b)),
        )
    }
}

/// A changelog stream seen as the latest value per key.
pub struct KTable<K, V> {
    pub(crate) g: Arc<Mutex<Graph>>,
    pub(crate) node: usize,
    /// The key-value store holding it, when materialized as one.
    pub(crate) store: Option<String>,
    _p: PhantomData<fn() -> (K, V)>,
}

impl<K, V> Clone for KTable<K, V> {
    fn clone(&self) -> Self {
        KTable {
            g: self.g.clone(),
            node: self.node,
            store: self.store.clone(),
            _p: PhantomData,
        }
    }
}

pub(crate) fn new_table<K, V>(
    g: &Arc<Mutex<Graph>>,
    node: usize,
    store: Option<String>,
) -> KTable<K, V> {
    KTable {
        g: g.clone(),
        node,
        store,
        _p: PhantomData,
    }
}

impl<K: Data, V: Data> KTable<K, V> {
    /// The store that holds this table, for interactive queries.
    pub fn store_name(&self) -> Option<&str> {
        self.store.as_deref()
    }

    /// Every update as a stream record (deletions are left out).
    pub fn to_stream(&self) -> KStream<K, V> {
        let build: Builder = Arc::new(|_bcx, mut outs| {
            let mut down = outs.fanout::<K, V>(0);
            one::<K, Option<V>>(move |cx: &mut Cx, k, v: Option<V>, ts| {
                if let Some(v) = v {
                    down.emit(cx, k, v, ts)
                }
            })
        });
        let node = self
            .g
            .lock()
            .add("KTABLE-TOSTREAM", &[(self.node, 0, 0)], build);
        new_stream(&self.g, node, false)
    }

    pub(crate) fn map_values_unmaterialized<V2: Data>(
        &self,
        f: impl Fn(V) -> Option<V2> + Send + Sync + 'static,
    ) -> KTable<K, V2> {
        let f = Arc::new(f);
        let build: Builder = Arc::new(move |_bcx, mut outs| {
            let mut down = outs.fanout::<K, Option<V2>>(0);
            let f = f.clone();
            one::<K, Option<V>>(move |cx: &mut Cx, k, v: Option<V>, ts| {
                down.emit(cx, k, v.and_then(|v| f(v)), ts)
            })
        });
        let node = self
            .g
            .lock()
            .add("KTABLE-MAPVALUES", &[(self.node, 0, 0)], build);
        new_table(&self.g, node, None)
    }
}

impl<K: Key, V: Value> KTable<K, V> {
    /// A table with every value replaced by `f(value)`.
    pub fn map_values<V2: Value>(
        &self,
        f: impl Fn(V) -> V2 + Send + Sync + 'static,
    ) -> KTable<K, V2> {
        let t = self.map_values_unmaterialized(move |v| Some(f(v)));
        let name = format!("{}-STATE-STORE", t.g.lock().nodes[t.node].name);
        ops::materialize(&t.g, t.node, &name, "KTABLE-MATERIALIZE")
    }

    /// The rows for which `pred` holds (others read as deleted).
    pub fn filter(&self, pred: impl Fn(&K, &V) -> bool + Send + Sync + 'static) -> KTable<K, V> {
        let pred = Arc::new(pred);
        let build: Builder = Arc::new(move |_bcx, mut outs| {
            let mut down = outs.fanout::<K, Option<V>>(0);
            let pred = pred.clone();
            one::<K, Option<V>>(move |cx: &mut Cx, k, v: Option<V>, ts| {
                let v = v.filter(|v| pred(&k, v));
                down.emit(cx, k, v, ts)
            })
        });
        let node = self
            .g
            .lock()
            .add("KTABLE-FILTER", &[(self.node, 0, 0)], build);
        let name = format!("{}-STATE-STORE", self.g.lock().nodes[node].name);
        ops::materialize(&self.g, node, &name, "KTABLE-MATERIALIZE")
    }

    /// Writes every update to `topic`; deletions as tombstones.
    pub fn to(&self, topic: &str) {
        let s: KStream<K, Option<V>> = new_stream(&self.g, self.node, false);
        s.sink(TopicRef::User(topic.to_string()));
    }

    /// Inner join: a row wherever both tables have the key.
    pub fn join<V2: Value, VR: Value>(
        &self,
        other: &KTable<K, V2>,
        joiner: impl Fn(&V, &V2) -> VR + Send + Sync + 'static,
    ) -> KTable<K, VR> {
        let j = move |a: Option<&V>, b: Option<&V2>| match (a, b) {
            (Some(a), Some(b)) => Some(joiner(a, b)),
            _ => None,
        };
        ops::table_join(self, other, Arc::new(j))
    }

    /// Left join: a row wherever this table has the key.
    pub fn left_join<V2: Value, VR: Value>(
        &self,
        other: &KTable<K, V2>,
        joiner: impl Fn(&V, Option<&V2>) -> VR + Send + Sync + 'static,
    ) -> KTable<K, VR> {
        let j = move |a: Option<&V>, b: Option<&V2>| a.map(|a| joiner(a, b));
        ops::table_join(self, other, Arc::new(j))
    }

    /// Outer join: a row wherever either table has the key.
    pub fn outer_join<V2: Value, VR: Value>(
        &self,
        other: &KTable<K, V2>,
        joiner: impl Fn(Option<&V>, Option<&V2>) -> VR + Send + Sync + 'static,
    ) -> KTable<K, VR> {
        let j = move |a: Option<&V>, b: Option<&V2>| {
            if a.is_none() && b.is_none() {
                None
            } else {
                Some(joiner(a, b))
            }
        };
        ops::table_join(self, other, Arc::new(j))
    }
}

impl<K: Key, V: Value> KTable<Windowed<K>, V> {
    /// Every update of every window as a stream record (merged-away sessions left out).
    pub fn to_windowed_stream(&self) -> KStream<Windowed<K>, V> {
        self.to_stream()
    }
}

pub(crate) fn store_def(name: &str, kind: StoreKind) -> StoreDef {
    StoreDef {
        name: name.to_string(),
        kind,
    }
}
