//! [`TopologyTestDriver`]: run a topology synchronously, without a broker, in unit tests.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;

use crate::dsl::{Key, Value};
use crate::error::{Error, Result};
use crate::graph::{OutRecord, TaskMetrics};
use crate::serde::Serde;
use crate::store::{KvStore, WindowStore};
use crate::topology::{Task, Topology};
use crate::window::Windowed;

/// A record read from an output topic.
#[derive(Debug, Clone, PartialEq)]
pub struct TestRecord<K, V> {
    /// Key.
    pub key: K,
    /// Value (`None` for a tombstone).
    pub value: Option<V>,
    /// Timestamp (ms).
    pub timestamp: i64,
}

/// Pipes records with explicit timestamps through a topology, one at a time, and collects
/// what it writes: the Strom counterpart of Kafka Streams' `TopologyTestDriver`.
///
/// Every topic has one partition; records written to internal (repartition) topics, or to
/// topics the topology also reads, are processed before `pipe` returns.
///
/// ```
/// use strom_streams::{StreamsBuilder, TopologyTestDriver};
///
/// let builder = StreamsBuilder::new();
/// builder
///     .stream::<String, String>("in")
///     .map_values(|v| v.to_uppercase())
///     .to("out");
/// let mut driver = TopologyTestDriver::new(builder.build().unwrap()).unwrap();
/// driver.pipe("in", "k".to_string(), "hello".to_string(), 1_000);
/// let out = driver.read_output::<String, String>("out").unwrap();
/// assert_eq!(out[0].value.as_deref(), Some("HELLO"));
/// ```
pub struct TopologyTestDriver {
    tasks: Vec<Task>,
    by_topic: HashMap<String, usize>,
    outputs: BTreeMap<String, VecDeque<OutRecord>>,
    internal: std::collections::BTreeSet<String>,
}

/// The application id test drivers use for internal topic names.
pub const TEST_APPLICATION_ID: &str = "test-driver";

impl TopologyTestDriver {
    /// A driver running every sub-topology of `topology` as one task.
    pub fn new(topology: Topology) -> Result<Self> {
        let app = TEST_APPLICATION_ID;
        let mut tasks = Vec::new();
        let mut by_topic = HashMap::new();
        for (i, (sources, _)) in topology.sub_topics(app).into_iter().enumerate() {
            tasks.push(topology.task(i, app, 0)?);
            for t in sources {
                by_topic.insert(t, i);
            }
        }
        Ok(TopologyTestDriver {
            tasks,
            by_topic,
            outputs: BTreeMap::new(),
            internal: topology.internal_topics(app),
        })
    }

    /// Pipes one record into `topic` with timestamp `ts` (ms).
    pub fn pipe<K: Serde, V: Serde>(&mut self, topic: &str, key: K, value: V, ts: i64) {
        self.pipe_raw(topic, key.to_bytes(), value.to_bytes(), ts)
    }

    /// Pipes one record given as bytes.
    pub fn pipe_raw(&mut self, topic: &str, key: Option<Bytes>, value: Option<Bytes>, ts: i64) {
        let mut queue = VecDeque::from([OutRecord {
            topic: Arc::from(topic),
            key,
            value,
            timestamp: ts,
        }]);
        while let Some(r) = queue.pop_front() {
            let Some(&t) = self.by_topic.get(&*r.topic) else {
                // A topic the topology does not read.
                continue;
            };
            let task = &mut self.tasks[t];
            task.process(&r.topic, r.key.as_deref(), r.value.as_deref(), r.timestamp);
            for o in task.take_output() {
                if !self.internal.contains(&*o.topic) {
                    self.outputs
                        .entry(o.topic.to_string())
                        .or_default()
                        .push_back(o.clone());
                }
                if self.by_topic.contains_key(&*o.topic) {
                    queue.push_back(o);
                }
            }
        }
    }

    /// Takes every record written to `topic` so far, decoded.
    pub fn read_output<K: Serde, V: Serde>(
        &mut self,
        topic: &str,
    ) -> Result<Vec<TestRecord<K, V>>> {
        self.read_output_raw(topic)
            .into_iter()
            .map(|r| {
                Ok(TestRecord {
                    key: K::from_bytes(r.key.as_deref())?,
                    value: match r.value.as_deref() {
                        Some(v) => Some(V::deserialize(v)?),
                        None => None,
                    },
                    timestamp: r.timestamp,
                })
            })
            .collect()
    }

    /// Takes every record written to `topic` so far, as bytes.
    pub fn read_output_raw(&mut self, topic: &str) -> Vec<OutRecord> {
        self.outputs
            .remove(topic)
            .map(Vec::from)
            .unwrap_or_default()
    }

    /// The topics written so far (and not yet read).
    pub fn output_topics(&self) -> Vec<String> {
        self.outputs.keys().cloned().collect()
    }

    fn typed<S: Send + Sync + 'static>(&self, name: &str) -> Result<Arc<S>> {
        for t in &self.tasks {
            if let Some((typed, _)) = t.stores.get(name) {
                return typed.clone().downcast::<S>().map_err(|_| {
                    Error::Config(format!("store {name:?} holds other key or value types"))
                });
            }
        }
        Err(Error::Config(format!("no store named {name:?}")))
    }

    /// The entries of key-value store `name`, in key order.
    pub fn kv_store<K: Key, V: Value>(&self, name: &str) -> Result<Vec<(K, V)>> {
        let s = self.typed::<Mutex<KvStore<K, V>>>(name)?;
        let s = s.lock();
        Ok(s.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
    }

    /// The open windows of window store `name`, by key and start.
    pub fn window_store<K: Key, V: Value>(&self, name: &str) -> Result<Vec<(Windowed<K>, V)>> {
        let s = self.typed::<Mutex<WindowStore<K, V>>>(name)?;
        let s = s.lock();
        Ok(s.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
    }

    /// Counters summed over the tasks.
    pub fn metrics(&self) -> TaskMetrics {
        self.tasks.iter().fold(TaskMetrics::default(), |a, t| {
            let m = t.metrics();
            TaskMetrics {
                processed: a.processed + m.processed,
                late_dropped: a.late_dropped + m.late_dropped,
                skipped: a.skipped + m.skipped,
            }
        })
    }

    /// Every store's changelog records since the last call (what a commit would write).
    pub fn drain_changelogs(&mut self) -> Vec<(String, Bytes, Option<Bytes>)> {
        self.tasks.iter().flat_map(|t| t.drain_changes()).collect()
    }
}
