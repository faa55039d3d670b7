//! Persistent queries shared by the engines of several servers.
//!
//! Every engine of a cluster reads the same catalog, so each could run every persistent query;
//! instead each query runs on exactly one of them. The engines join one consumer group,
//! `_strom_sql_hosts`, over a topic of [`HOST_SLOTS`] partitions that holds no records: the
//! group's partition assignment is the placement. A query belongs to the slot its id hashes to,
//! and runs on the engine that owns that slot. When an engine joins or leaves (or dies and its
//! session times out), the group rebalances: an engine stops the queries of slots taken from it
//! (they commit offsets and state as they stop) and the new owner starts them from there.
//!
//! Each engine also follows the catalog topic, so streams, tables and queries created through
//! any server are known to all of them, and a query terminated anywhere stops where it runs.

use std::collections::BTreeSet;
use std::sync::{Arc, Weak};
use std::time::Duration;

use strom_client::{Consumer, ConsumerConfig, RebalanceListener, TopicPartition};
use tokio::sync::watch;

use crate::catalog::CATALOG_TOPIC;
use crate::engine::Engine;
use crate::Result;

/// The (empty) topic whose partitions the engines share out.
pub const HOSTS_TOPIC: &str = "_strom_sql_hosts";

/// Partitions of [`HOSTS_TOPIC`]: the units in which queries move between engines.
pub const HOST_SLOTS: i32 = 16;

/// The consumer group of the engines.
pub const HOSTS_GROUP: &str = "_strom_sql_hosts";

/// The slot of query `id` (FNV-1a of the id: stable across versions and machines).
pub fn slot_of(id: &str) -> i32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in id.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    (h % HOST_SLOTS as u32) as i32
}

/// Stops an engine's queries as soon as their slots are taken away, before the group moves
/// them on.
struct Releaser {
    engine: Weak<Engine>,
}

impl RebalanceListener for Releaser {
    fn on_revoked(&mut self, partitions: &[TopicPartition]) {
        self.release(partitions);
    }

    fn on_lost(&mut self, partitions: &[TopicPartition]) {
        self.release(partitions);
    }
}

impl Releaser {
    fn release(&self, partitions: &[TopicPartition]) {
        if let Some(engine) = self.engine.upgrade() {
            let slots: BTreeSet<i32> = partitions.iter().map(|tp| tp.partition).collect();
            engine.release_slots(&slots);
        }
    }
}

/// Settings of the hosting loop.
#[derive(Debug, Clone)]
pub struct HostingConfig {
    /// How long the group waits for a silent engine before moving its queries.
    pub session_timeout: Duration,
    /// How often an engine looks at the catalog and its slots.
    pub tick: Duration,
    /// A name no other engine of the cluster has (`strom server` uses its node id): the ids
    /// of the queries this engine makes end with it (`q7_2`), so that two engines making a
    /// query at the same moment never pick the same id.
    pub name: Option<String>,
}

impl Default for HostingConfig {
    fn default() -> Self {
        HostingConfig {
            session_timeout: Duration::from_secs(10),
            tick: Duration::from_millis(200),
            name: None,
        }
    }
}

/// Joins the hosts group and follows the catalog from `catalog_from` until `stop` turns true
/// (or the engine goes away), starting and stopping queries as slots and the catalog change.
pub(crate) async fn run(
    engine: Weak<Engine>,
    bootstrap: String,
    config: HostingConfig,
    catalog_from: i64,
    mut stop: watch::Receiver<bool>,
) {
    let (mut hosts, mut catalog) = match consumers(&engine, &bootstrap, &config, catalog_from).await
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "strom sql: cannot join the query hosts group; this engine runs no persistent query");
            return;
        }
    };
    loop {
        let polled = tokio::select! {
            _ = stop.changed() => break,
            r = hosts.poll(config.tick) => r,
        };
        if let Err(e) = polled {
            tracing::warn!(error = %e, "strom sql: polling the hosts group failed");
            tokio::time::sleep(config.tick).await;
        }
        let Some(e) = engine.upgrade() else { break };
        match catalog.poll(Duration::ZERO).await {
            Ok(records) => {
                for r in records {
                    e.apply_catalog_record(r.key.as_deref(), r.value.as_deref());
                }
            }
            Err(err) => tracing::warn!(error = %err, "strom sql: reading the catalog failed"),
        }
        let owned: BTreeSet<i32> = hosts.assignment().iter().map(|tp| tp.partition).collect();
        e.reconcile(&owned).await;
    }
    // Leaving the group hands the slots on at once.
    let _ = hosts.close().await;
    let _ = catalog.close().await;
}

async fn consumers(
    engine: &Weak<Engine>,
    bootstrap: &str,
    config: &HostingConfig,
    catalog_from: i64,
) -> Result<(Consumer, Consumer)> {
    let mut hc = ConsumerConfig::new(bootstrap)
        .group_id(HOSTS_GROUP)
        .auto_commit(false);
    hc.session_timeout = config.session_timeout;
    hc.heartbeat_interval = (config.session_timeout / 5).max(Duration::from_millis(100));
    let mut hosts = Consumer::new(hc).await?;
    hosts.set_rebalance_listener(Releaser {
        engine: engine.clone(),
    });
    hosts.subscribe(&[HOSTS_TOPIC])?;
    let mut catalog = Consumer::new(ConsumerConfig::new(bootstrap)).await?;
    let tp = TopicPartition::new(CATALOG_TOPIC, 0);
    catalog.assign(std::slice::from_ref(&tp))?;
    catalog.seek(&tp, catalog_from)?;
    Ok((hosts, catalog))
}

/// The hosting loop of an engine: stopped (and waited for) by [`Hosting::stop`].
pub(crate) struct Hosting {
    stop: watch::Sender<bool>,
    task: parking_lot::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Hosting {
    pub(crate) fn start(
        engine: &Arc<Engine>,
        bootstrap: String,
        config: HostingConfig,
        catalog_from: i64,
    ) -> Hosting {
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(run(
            Arc::downgrade(engine),
            bootstrap,
            config,
            catalog_from,
            stop_rx,
        ));
        Hosting {
            stop,
            task: parking_lot::Mutex::new(Some(task)),
        }
    }

    pub(crate) async fn stop(&self) {
        let _ = self.stop.send(true);
        let task = self.task.lock().take();
        if let Some(t) = task {
            let _ = t.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_stable_and_spread() {
        assert_eq!(slot_of("q1"), slot_of("q1"));
        let used: BTreeSet<i32> = (1..200).map(|i| slot_of(&format!("q{i}"))).collect();
        assert_eq!(used.len(), HOST_SLOTS as usize, "200 ids use every slot");
        assert!((0..HOST_SLOTS).contains(&slot_of("")));
    }
}
