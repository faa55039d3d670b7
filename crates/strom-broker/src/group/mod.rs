//! The group coordinator: consumer groups with dynamic membership, rebalancing and committed
//! offsets, stored in the compacted internal topic `__consumer_offsets`.
//!
//! - [`machine`]: the classic group protocol as a pure state machine (tested without sockets or
//!   clocks).
//! - [`store`]: `__consumer_offsets` records in Kafka's formats.
//! - this module: the runtime around the machine: parks JoinGroup/SyncGroup requests until the
//!   machine answers them, appends the machine's records to the log before answering, runs the
//!   timer that expires sessions, and reloads everything from the log at startup.

pub mod machine;
pub mod store;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;
use strom_log::record::decode_records;
use strom_log::{BatchBuilder, Compression, ReadLimit, Record};
use tokio::sync::oneshot;

use crate::broker::{AppendRefused, Partition};
use machine::{Answer, Coordinator, Effects, GroupConfig, Token};

/// Milliseconds on the wall clock.
pub fn now_ms() -> u64 {
    strom_log::now_ms().max(0) as u64
}

/// The coordinator runtime.
pub struct GroupCoordinator {
    machine: Mutex<Coordinator>,
    /// Requests waiting for the machine's answer, with their group.
    parked: Mutex<HashMap<Token, (String, oneshot::Sender<Answer>)>>,
    next_token: AtomicU64,
    /// `__consumer_offsets` partitions this broker writes to.
    partitions: parking_lot::RwLock<Store>,
}

/// The `__consumer_offsets` partitions led here, and the topic's partition count.
#[derive(Debug, Default)]
struct Store {
    count: i32,
    /// Each partition with the leader epoch its groups were loaded in (`None` on a single
    /// node): writes are refused once the partition moved on.
    parts: BTreeMap<i32, (Arc<Partition>, Option<i32>)>,
}

/// Replays one `__consumer_offsets` partition into the machine; returns the records read.
fn replay(machine: &mut Coordinator, now: u64, p: &Partition) -> crate::Result<usize> {
    let log = &p.log;
    let mut loaded = 0;
    let mut offset = log.log_start_offset();
    while offset < log.log_end_offset() {
        let bytes = log.read(offset, 1 << 20, ReadLimit::LogEnd)?.bytes()?;
        if bytes.is_empty() {
            break;
        }
        let mut pos = 0;
        while pos < bytes.len() {
            let (h, records) = decode_records(&bytes[pos..])?;
            for r in records {
                if let Some(rec) = store::decode(r.key.unwrap_or_default(), r.value) {
                    machine.load(now, rec);
                    loaded += 1;
                }
            }
            offset = h.next_offset();
            pos += h.total_size();
        }
    }
    Ok(loaded)
}

impl std::fmt::Debug for GroupCoordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCoordinator")
            .field("partitions", &self.partitions.read().parts.len())
            .finish()
    }
}

impl GroupCoordinator {
    /// Builds the coordinator over the partitions of `__consumer_offsets` (in partition order)
    /// and replays them.
    pub fn open(config: GroupConfig, partitions: Vec<Arc<Partition>>) -> crate::Result<Self> {
        let mut machine = Coordinator::new(config);
        let now = now_ms();
        let mut loaded = 0usize;
        for p in &partitions {
            loaded += replay(&mut machine, now, p)?;
        }
        if loaded > 0 {
            tracing::info!(
                records = loaded,
                groups = machine.groups().count(),
                "loaded consumer groups"
            );
        }
        let count = partitions.len() as i32;
        Ok(GroupCoordinator {
            machine: Mutex::new(machine),
            parked: Mutex::new(HashMap::new()),
            next_token: AtomicU64::new(1),
            partitions: parking_lot::RwLock::new(Store {
                count,
                parts: partitions
                    .into_iter()
                    .enumerate()
                    .map(|(i, p)| (i as i32, (p, None)))
                    .collect(),
            }),
        })
    }

    /// This broker became the leader of `__consumer_offsets` partition `p` (of `count`): its
    /// groups are loaded and coordinated here from now on.
    pub fn load_partition(&self, p: i32, count: i32, part: Arc<Partition>) -> crate::Result<()> {
        let mut m = self.machine.lock();
        let n = replay(&mut m, now_ms(), &part)?;
        let epoch = part.role_epoch().1;
        let mut store = self.partitions.write();
        store.count = count;
        store.parts.insert(p, (part, Some(epoch)));
        tracing::info!(
            partition = p,
            records = n,
            "coordinating the groups of {}-{p}",
            store::TOPIC
        );
        Ok(())
    }

    /// This broker no longer leads `__consumer_offsets` partition `p`: its groups are dropped
    /// (their new coordinator reloads them from the log), and waiting requests are released so
    /// their clients look the coordinator up again.
    pub fn unload_partition(&self, p: i32, count: i32) {
        let mut m = self.machine.lock();
        m.unload(|g| store::partition_for(g, count) == p);
        self.partitions.write().parts.remove(&p);
        drop(m);
        // Requests of the moved groups waiting here are answered "not available": their
        // clients look the coordinator up again.
        self.parked
            .lock()
            .retain(|_, (g, _)| store::partition_for(g, count) != p);
        tracing::info!(
            partition = p,
            "no longer coordinating the groups of {}-{p}",
            store::TOPIC
        );
    }

    /// Whether `__consumer_offsets` is attached.
    pub fn has_store(&self) -> bool {
        self.partitions.read().count > 0
    }

    /// Attaches a freshly created `__consumer_offsets`.
    pub fn attach_store(&self, partitions: Vec<Arc<Partition>>) {
        let mut p = self.partitions.write();
        if p.count == 0 {
            p.count = partitions.len() as i32;
            p.parts = partitions
                .into_iter()
                .enumerate()
                .map(|(i, p)| (i as i32, (p, None)))
                .collect();
        }
    }

    /// Runs `f` on the machine and performs its effects. `persisted` is false if records the
    /// machine asked for could not be written (the caller must not report success for them).
    pub fn call<T>(&self, f: impl FnOnce(&mut Coordinator) -> (T, Effects)) -> T {
        self.call_checked(f).0
    }

    /// Like [`GroupCoordinator::call`], also saying whether the records were written.
    pub fn call_checked<T>(&self, f: impl FnOnce(&mut Coordinator) -> (T, Effects)) -> (T, bool) {
        let mut m = self.machine.lock();
        let (out, fx) = f(&mut m);
        // Records are appended while the machine is locked, so the log order is the machine's.
        let persisted = self.persist(&fx);
        drop(m);
        self.deliver(fx);
        (out, persisted)
    }

    /// Answers every parked request with "coordinator not available" (at shutdown), so
    /// connections waiting in JoinGroup/SyncGroup can finish.
    pub fn release_parked(&self) {
        self.parked.lock().clear();
    }

    /// Runs a request that may be parked: `f` gets a token, and the answer arrives when the
    /// machine produces it.
    pub async fn parked(
        &self,
        group: &str,
        f: impl FnOnce(&mut Coordinator, Token) -> Effects,
    ) -> Option<Answer> {
        let token = self.next_token.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.parked.lock().insert(token, (group.to_string(), tx));
        self.call(|m| ((), f(m, token)));
        rx.await.ok()
    }

    /// Reads the machine.
    pub fn read<T>(&self, f: impl FnOnce(&Coordinator) -> T) -> T {
        f(&self.machine.lock())
    }

    /// Expires sessions and rebalances; called periodically.
    pub fn tick(&self) {
        let now = now_ms();
        self.call(|m| ((), m.tick(now)));
    }

    fn persist(&self, fx: &Effects) -> bool {
        let partitions = self.partitions.read();
        if fx.store.is_empty() {
            return true;
        }
        if partitions.count == 0 {
            tracing::error!("{} is missing: group state not persisted", store::TOPIC);
            return false;
        }
        let mut ok = true;
        let n = partitions.count;
        let mut by_partition: BTreeMap<i32, Vec<Record>> = BTreeMap::new();
        let now = now_ms() as i64;
        for r in &fx.store {
            let group = match r {
                machine::StoreRecord::Offset { group, .. }
                | machine::StoreRecord::Group { group, .. } => group,
            };
            let (k, v) = store::encode(r);
            by_partition
                .entry(store::partition_for(group, n))
                .or_default()
                .push(Record::new(Some(Bytes::from(k)), v.map(Bytes::from), now));
        }
        for (p, records) in by_partition {
            let Some((part, epoch)) = partitions.parts.get(&p) else {
                ok = false;
                tracing::warn!(
                    partition = p,
                    "not the leader of {}-{p}: group state not persisted",
                    store::TOPIC
                );
                continue;
            };
            let mut b = BatchBuilder::new(Compression::None);
            for r in records {
                b.push(r);
            }
            let result = b
                .build()
                .map_err(AppendRefused::Log)
                .and_then(|mut bytes| part.append_as_leader(&mut bytes, *epoch));
            match result {
                Ok(_) => {}
                Err(AppendRefused::NotInRole) => {
                    ok = false;
                    tracing::info!(
                        partition = p,
                        "{}-{p} moved: group state not persisted here",
                        store::TOPIC
                    );
                }
                Err(AppendRefused::Log(e)) => {
                    ok = false;
                    tracing::error!(partition = p, "writing to {} failed: {e}", store::TOPIC);
                }
            }
        }
        ok
    }

    fn deliver(&self, fx: Effects) {
        if fx.answers.is_empty() {
            return;
        }
        let mut parked = self.parked.lock();
        for (token, answer) in fx.answers {
            if let Some((_, tx)) = parked.remove(&token) {
                let _ = tx.send(answer);
            }
        }
    }
}
