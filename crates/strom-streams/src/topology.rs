//! A finished topology and the tasks built from it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::sync::Arc;

use bytes::Bytes;

use crate::error::{Error, Result};
use crate::graph::{
    subtopologies, AnyBox, BuildCx, Cx, Graph, Inputs, NodeDef, OutRecord, Outs, RawProcess,
    StoreMap, Subtopology, TaskMetrics, TopicRef,
};

/// A processing topology: what [`StreamsBuilder::build`](crate::StreamsBuilder::build)
/// returns and what runs in a [`Streams`](crate::Streams) application or a
/// [`TopologyTestDriver`](crate::TopologyTestDriver).
#[derive(Clone)]
pub struct Topology {
    pub(crate) nodes: Vec<NodeDef>,
    pub(crate) subs: Vec<Subtopology>,
}

impl std::fmt::Debug for Topology {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl Topology {
    pub(crate) fn from_graph(g: &Graph) -> Result<Self> {
        if let Some(e) = g.errors.first() {
            return Err(Error::Topology(e.clone()));
        }
        if g.nodes.is_empty() {
            return Err(Error::Topology(
                "the topology has no source: add builder.stream(..) or builder.table(..)".into(),
            ));
        }
        let mut seen = BTreeSet::new();
        for n in &g.nodes {
            if let Some(TopicRef::User(t)) = &n.source {
                if !seen.insert(t.clone()) {
                    return Err(Error::Topology(format!(
                        "topic {t:?} is read by two sources; read it once and reuse the stream (clone it)"
                    )));
                }
            }
        }
        let mut stores = BTreeSet::new();
        for n in &g.nodes {
            for s in &n.stores {
                if !stores.insert(s.name.clone()) {
                    return Err(Error::Topology(format!(
                        "store name {:?} is used by two operators; give each materialize_as a distinct name",
                        s.name
                    )));
                }
            }
        }
        let subs = subtopologies(&g.nodes);
        for s in &subs {
            if s.sources.is_empty() {
                return Err(Error::Topology(format!(
                    "operator {} is not connected to any source",
                    g.nodes[s.nodes[0]].name
                )));
            }
        }
        Ok(Topology {
            nodes: g.nodes.clone(),
            subs,
        })
    }

    /// A description in the style of Kafka Streams' `Topology#describe()`.
    pub fn describe(&self) -> String {
        let mut out = String::from("Topologies:\n");
        for (i, s) in self.subs.iter().enumerate() {
            let _ = writeln!(out, "   Sub-topology: {i}");
            for &n in &s.nodes {
                let node = &self.nodes[n];
                let kind = if node.source.is_some() {
                    "Source"
                } else if node.sink.is_some() {
                    "Sink"
                } else {
                    "Processor"
                };
                let mut extra = String::new();
                if let Some(t) = &node.source {
                    extra = format!(" (topics: [{}])", show(t));
                }
                if let Some(t) = &node.sink {
                    extra = format!(" (topic: {})", show(t));
                }
                if !node.stores.is_empty() {
                    let names: Vec<&str> = node.stores.iter().map(|s| s.name.as_str()).collect();
                    extra = format!(" (stores: [{}])", names.join(", "));
                }
                let _ = writeln!(out, "    {kind}: {}{extra}", node.name);
                let children: Vec<&str> = node
                    .edges
                    .iter()
                    .map(|e| self.nodes[e.child].name.as_str())
                    .collect();
                let _ = writeln!(
                    out,
                    "      --> {}",
                    if children.is_empty() {
                        "none".to_string()
                    } else {
                        children.join(", ")
                    }
                );
                if !node.parents.is_empty() {
                    let parents: Vec<&str> = node
                        .parents
                        .iter()
                        .map(|&p| self.nodes[p].name.as_str())
                        .collect();
                    let _ = writeln!(out, "      <-- {}", parents.join(", "));
                }
            }
        }
        out
    }

    /// Every topic the topology reads or writes, resolved for `app`:
    /// `(sources, sinks)` per sub-topology.
    pub(crate) fn sub_topics(&self, app: &str) -> Vec<(Vec<String>, Vec<String>)> {
        self.subs
            .iter()
            .map(|s| {
                (
                    s.sources.iter().map(|t| t.resolve(app)).collect(),
                    s.sinks.iter().map(|t| t.resolve(app)).collect(),
                )
            })
            .collect()
    }

    /// Internal (repartition) topics, resolved.
    pub(crate) fn internal_topics(&self, app: &str) -> BTreeSet<String> {
        self.subs
            .iter()
            .flat_map(|s| s.sources.iter())
            .filter(|t| matches!(t, TopicRef::Internal(_)))
            .map(|t| t.resolve(app))
            .collect()
    }

    /// The task of sub-topology `sub` for `partition`.
    pub(crate) fn task(&self, sub: usize, app: &str, partition: i32) -> Result<Task> {
        let s = self
            .subs
            .get(sub)
            .ok_or_else(|| Error::Internal(format!("no sub-topology {sub}")))?;
        let mut bcx = BuildCx {
            app: Arc::from(app),
            stores: BTreeMap::new(),
        };
        let mut built: HashMap<usize, Box<dyn Inputs>> = HashMap::new();
        for &n in s.nodes.iter().rev() {
            let node = &self.nodes[n];
            let max_out = node.edges.iter().map(|e| e.out + 1).max().unwrap_or(0);
            let mut outs: Vec<Vec<AnyBox>> = (0..max_out).map(|_| Vec::new()).collect();
            for e in &node.edges {
                let child = built.get_mut(&e.child).ok_or_else(|| {
                    Error::Internal(format!("child {} built after its parent", e.child))
                })?;
                outs[e.out].push(child.take(e.port));
            }
            built.insert(n, (node.build)(&mut bcx, Outs(outs)));
        }
        let mut sources = Vec::new();
        for &n in &s.nodes {
            if let Some(t) = &self.nodes[n].source {
                let input = built
                    .get_mut(&n)
                    .ok_or_else(|| Error::Internal("source not built".into()))?
                    .take(0);
                let raw = input
                    .downcast::<Box<dyn RawProcess>>()
                    .map_err(|_| Error::Internal("source with a typed input".into()))?;
                sources.push((t.resolve(app), *raw));
            }
        }
        Ok(Task {
            partition,
            sources,
            stores: bcx.stores,
            cx: Cx::new(),
        })
    }
}

fn show(t: &TopicRef) -> String {
    match t {
        TopicRef::User(t) => t.clone(),
        TopicRef::Internal(s) => format!("<application.id>-{s}"),
    }
}

/// A topology instance for one partition of one sub-topology.
pub(crate) struct Task {
    pub(crate) partition: i32,
    sources: Vec<(String, Box<dyn RawProcess>)>,
    pub(crate) stores: StoreMap,
    cx: Cx,
}

impl Task {
    /// Processes one input record; false if the topic is not one of the task's sources.
    pub(crate) fn process(
        &mut self,
        topic: &str,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        ts: i64,
    ) -> bool {
        match self.source_index(topic) {
            Some(i) => {
                self.process_at(i, key, value, ts);
                true
            }
            None => false,
        }
    }

    /// Which of the task's sources reads `topic`.
    pub(crate) fn source_index(&self, topic: &str) -> Option<usize> {
        self.sources.iter().position(|(t, _)| t == topic)
    }

    /// Processes one input record of source `i` (from [`Task::source_index`]).
    pub(crate) fn process_at(
        &mut self,
        i: usize,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        ts: i64,
    ) {
        if let Some((_, src)) = self.sources.get_mut(i) {
            self.cx.metrics.processed += 1;
            src.process_raw(&mut self.cx, key, value, ts);
        }
    }

    /// Output produced since the last call.
    pub(crate) fn take_output(&mut self) -> Vec<OutRecord> {
        std::mem::take(&mut self.cx.out)
    }

    pub(crate) fn metrics(&self) -> TaskMetrics {
        self.cx.metrics
    }

    /// Every store's changes since the last call, as changelog records:
    /// `(store name, key, value or tombstone)`.
    pub(crate) fn drain_changes(&self) -> Vec<(String, Bytes, Option<Bytes>)> {
        let mut out = Vec::new();
        let mut buf = Vec::new();
        for (name, (_, s)) in &self.stores {
            s.drain_changes(&mut buf);
            out.extend(buf.drain(..).map(|(k, v)| (name.clone(), k, v)));
        }
        out
    }
}

/// The changelog topic of a store.
pub(crate) fn changelog_topic(app: &str, store: &str) -> String {
    format!("{app}-{store}-changelog")
}
