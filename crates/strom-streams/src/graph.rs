//! The processor graph: how a topology is described, split into sub-topologies and turned into
//! per-partition tasks.
//!
//! The DSL adds nodes to a [`Graph`]; every node knows its parents and how to build its
//! processor for one task given its children's inputs. A task is built children-first (node
//! ids grow along every edge), so each processor owns typed handles to the processors it feeds:
//! a record moves down the graph by plain calls, with no queue and no boxing between
//! operators.
//!
//! ```text
//!  source(bytes) ─▶ deserialize ─▶ map ─▶ filter ─▶ aggregate ─▶ sink(bytes)
//!                                                      │
//!                                                 state store ─▶ changelog (at commit)
//! ```
//!
//! A repartition splits the graph: its sink writes an internal topic that another
//! sub-topology reads. Nodes connected by edges form one sub-topology; its source topics must
//! be co-partitioned, and each of its partitions is one task.

use std::any::Any;
use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;

use crate::store::{ErasedStore, StoreKind};

/// A value whose type only the node that made it knows.
pub(crate) type AnyBox = Box<dyn Any + Send>;

/// One operator's behaviour for one task: it receives records of type `(K, V)`.
pub(crate) trait Process<K, V>: Send {
    fn process(&mut self, cx: &mut Cx, key: K, value: V, ts: i64);
}

impl<K, V, F: FnMut(&mut Cx, K, V, i64) + Send> Process<K, V> for F {
    fn process(&mut self, cx: &mut Cx, key: K, value: V, ts: i64) {
        self(cx, key, value, ts)
    }
}

/// A boxed processor input.
pub(crate) type Input<K, V> = Box<dyn Process<K, V>>;

/// A source's entry point: undecoded bytes from a topic.
pub(crate) trait RawProcess: Send {
    fn process_raw(&mut self, cx: &mut Cx, key: Option<&[u8]>, value: Option<&[u8]>, ts: i64);
}

/// The children of one output of a node.
pub(crate) struct Fanout<K, V> {
    outs: Vec<Input<K, V>>,
}

impl<K: Clone, V: Clone> Fanout<K, V> {
    pub(crate) fn is_empty(&self) -> bool {
        self.outs.is_empty()
    }

    pub(crate) fn emit(&mut self, cx: &mut Cx, key: K, value: V, ts: i64) {
        match self.outs.split_last_mut() {
            None => {}
            Some((last, rest)) => {
                for o in rest {
                    o.process(cx, key.clone(), value.clone(), ts);
                }
                last.process(cx, key, value, ts);
            }
        }
    }
}

/// A record bound for a topic, already encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutRecord {
    /// Full topic name.
    pub topic: Arc<str>,
    /// Key, `None` for null.
    pub key: Option<Bytes>,
    /// Value, `None` for a tombstone.
    pub value: Option<Bytes>,
    /// Timestamp (ms).
    pub timestamp: i64,
}

/// Counters of one task.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TaskMetrics {
    /// Input records processed.
    pub processed: u64,
    /// Records dropped because every window they belong to had closed (late beyond grace).
    pub late_dropped: u64,
    /// Records skipped because their key or value could not be decoded.
    pub skipped: u64,
}

/// What processors share inside one task while a record moves through it.
pub(crate) struct Cx {
    pub(crate) out: Vec<OutRecord>,
    pub(crate) metrics: TaskMetrics,
}

impl Cx {
    pub(crate) fn new() -> Self {
        Cx {
            out: Vec::new(),
            metrics: TaskMetrics::default(),
        }
    }
}

/// A topic named by the user, or an internal topic named after the application id.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum TopicRef {
    User(String),
    /// `<application.id>-<suffix>`.
    Internal(String),
}

impl TopicRef {
    pub(crate) fn resolve(&self, app: &str) -> String {
        match self {
            TopicRef::User(t) => t.clone(),
            TopicRef::Internal(s) => format!("{app}-{s}"),
        }
    }
}

/// The children's inputs handed to a node's builder, grouped by the node's output index.
pub(crate) struct Outs(pub(crate) Vec<Vec<AnyBox>>);

impl Outs {
    /// Takes the typed children of output `out`.
    pub(crate) fn fanout<K: 'static, V: 'static>(&mut self, out: usize) -> Fanout<K, V> {
        let boxes = self.0.get_mut(out).map(std::mem::take).unwrap_or_default();
        let outs = boxes
            .into_iter()
            .map(|b| match b.downcast::<Input<K, V>>() {
                Ok(i) => *i,
                // The DSL only links nodes of matching types; this cannot happen.
                Err(_) => panic!("strom-streams: mistyped graph edge (this is a bug)"),
            })
            .collect();
        Fanout { outs }
    }
}

/// A built node's inputs, one per input port, handed to its parents.
pub(crate) trait Inputs: Send {
    fn take(&mut self, port: usize) -> AnyBox;
}

/// A node with one input port.
pub(crate) struct One(pub(crate) Option<AnyBox>);

impl Inputs for One {
    fn take(&mut self, _port: usize) -> AnyBox {
        self.0.take().unwrap_or_else(|| {
            panic!("strom-streams: a one-input node was linked twice (this is a bug)")
        })
    }
}

/// A node with one typed input.
pub(crate) fn one<K: 'static, V: 'static>(p: impl Process<K, V> + 'static) -> Box<dyn Inputs> {
    let input: Input<K, V> = Box::new(p);
    Box::new(One(Some(Box::new(input))))
}

/// A node with several inputs made on demand (merges, joins).
pub(crate) struct Many<F: FnMut(usize) -> AnyBox + Send>(pub(crate) F);

impl<F: FnMut(usize) -> AnyBox + Send> Inputs for Many<F> {
    fn take(&mut self, port: usize) -> AnyBox {
        (self.0)(port)
    }
}

/// Boxes a typed input as an [`AnyBox`].
pub(crate) fn any_input<K: 'static, V: 'static>(p: impl Process<K, V> + 'static) -> AnyBox {
    let input: Input<K, V> = Box::new(p);
    Box::new(input)
}

/// A task's stores by name: typed (for operators and queries) and erased (for the runtime).
pub(crate) type StoreMap = BTreeMap<String, (Arc<dyn Any + Send + Sync>, Arc<dyn ErasedStore>)>;

/// Per-task context while building processors.
pub(crate) struct BuildCx {
    pub(crate) app: Arc<str>,
    pub(crate) stores: StoreMap,
}

impl BuildCx {
    /// The task's store `name`, made by `make` on first use.
    pub(crate) fn store<S: ErasedStore + 'static>(
        &mut self,
        name: &str,
        make: impl FnOnce() -> S,
    ) -> Arc<S> {
        if let Some((typed, _)) = self.stores.get(name) {
            if let Ok(s) = typed.clone().downcast::<S>() {
                return s;
            }
            panic!("strom-streams: store {name:?} used with two types (this is a bug)");
        }
        let s = Arc::new(make());
        self.stores.insert(
            name.to_string(),
            (s.clone(), s.clone() as Arc<dyn ErasedStore>),
        );
        s
    }

    pub(crate) fn topic(&self, t: &TopicRef) -> Arc<str> {
        Arc::from(t.resolve(&self.app))
    }
}

pub(crate) type Builder = Arc<dyn Fn(&mut BuildCx, Outs) -> Box<dyn Inputs> + Send + Sync>;

/// An edge from a node's output `out` to input `port` of `child`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Edge {
    pub(crate) child: usize,
    pub(crate) port: usize,
    pub(crate) out: usize,
}

/// A store a node uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoreDef {
    pub(crate) name: String,
    pub(crate) kind: StoreKind,
}

#[derive(Clone)]
pub(crate) struct NodeDef {
    pub(crate) name: String,
    pub(crate) parents: Vec<usize>,
    pub(crate) edges: Vec<Edge>,
    pub(crate) source: Option<TopicRef>,
    pub(crate) sink: Option<TopicRef>,
    pub(crate) stores: Vec<StoreDef>,
    pub(crate) build: Builder,
}

/// The graph the DSL builds.
#[derive(Default)]
pub(crate) struct Graph {
    pub(crate) nodes: Vec<NodeDef>,
    pub(crate) errors: Vec<String>,
}

impl Graph {
    pub(crate) fn next_name(&self, kind: &str) -> String {
        format!("{kind}-{:010}", self.nodes.len())
    }

    /// Adds a node; `parents` are `(parent, parent output, this node's input port)`.
    pub(crate) fn add(
        &mut self,
        kind: &str,
        parents: &[(usize, usize, usize)],
        build: Builder,
    ) -> usize {
        let id = self.nodes.len();
        let name = self.next_name(kind);
        for &(p, out, port) in parents {
            self.nodes[p].edges.push(Edge {
                child: id,
                port,
                out,
            });
        }
        self.nodes.push(NodeDef {
            name,
            parents: parents.iter().map(|p| p.0).collect(),
            edges: Vec::new(),
            source: None,
            sink: None,
            stores: Vec::new(),
            build,
        });
        id
    }

    pub(crate) fn error(&mut self, e: impl Into<String>) {
        self.errors.push(e.into());
    }
}

/// One connected part of a topology: its own source topics, tasks and stores.
#[derive(Debug, Clone)]
pub(crate) struct Subtopology {
    pub(crate) nodes: Vec<usize>,
    pub(crate) sources: Vec<TopicRef>,
    pub(crate) sinks: Vec<TopicRef>,
    pub(crate) stores: Vec<StoreDef>,
}

/// Splits the graph into connected parts (union-find over edges).
pub(crate) fn subtopologies(nodes: &[NodeDef]) -> Vec<Subtopology> {
    let mut parent: Vec<usize> = (0..nodes.len()).collect();
    fn find(p: &mut [usize], x: usize) -> usize {
        let mut r = x;
        while p[r] != r {
            r = p[r];
        }
        let mut y = x;
        while p[y] != r {
            let next = p[y];
            p[y] = r;
            y = next;
        }
        r
    }
    for (i, n) in nodes.iter().enumerate() {
        for &q in &n.parents {
            let (a, b) = (find(&mut parent, i), find(&mut parent, q));
            parent[a] = b;
        }
    }
    let mut groups: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for i in 0..nodes.len() {
        let r = find(&mut parent, i);
        groups.entry(r).or_default().push(i);
    }
    let mut subs: Vec<Subtopology> = groups
        .into_values()
        .map(|ids| {
            let mut stores: Vec<StoreDef> = Vec::new();
            for &i in &ids {
                for s in &nodes[i].stores {
                    if !stores.iter().any(|x| x.name == s.name) {
                        stores.push(s.clone());
                    }
                }
            }
            Subtopology {
                sources: ids
                    .iter()
                    .filter_map(|&i| nodes[i].source.clone())
                    .collect(),
                sinks: ids.iter().filter_map(|&i| nodes[i].sink.clone()).collect(),
                stores,
                nodes: ids,
            }
        })
        .collect();
    subs.sort_by_key(|s| s.nodes[0]);
    subs
}
