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
use strom_log::{AppendOptions, BatchBuilder, Compression, ReadLimit, Record};
use tokio::sync::oneshot;

use crate::broker::Partition;
use machine::{Answer, Coordinator, Effects, GroupConfig, Token};

/// Milliseconds on the wall clock.
pub fn now_ms() -> u64 {
    strom_log::now_ms().max(0) as u64
}

/// The coordinator runtime.
pub struct GroupCoordinator {
    machine: Mutex<Coordinator>,
    parked: Mutex<HashMap<Token, oneshot::Sender<Answer>>>,
    next_token: AtomicU64,
    /// `__consumer_offsets`, in partition order; empty until the topic exists.
    partitions: parking_lot::RwLock<Vec<Arc<Partition>>>,
}

impl std::fmt::Debug for GroupCoordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCoordinator")
            .field("partitions", &self.partitions.read().len())
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
            let log = &p.log;
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
        }
        if loaded > 0 {
            tracing::info!(
                records = loaded,
                groups = machine.groups().count(),
                "loaded consumer groups"
            );
        }
        Ok(GroupCoordinator {
            machine: Mutex::new(machine),
            parked: Mutex::new(HashMap::new()),
            next_token: AtomicU64::new(1),
            partitions: parking_lot::RwLock::new(partitions),
        })
    }

    /// Whether `__consumer_offsets` is attached.
    pub fn has_store(&self) -> bool {
        !self.partitions.read().is_empty()
    }

    /// Attaches a freshly created `__consumer_offsets`.
    pub fn attach_store(&self, partitions: Vec<Arc<Partition>>) {
        let mut p = self.partitions.write();
        if p.is_empty() {
            *p = partitions;
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
        f: impl FnOnce(&mut Coordinator, Token) -> Effects,
    ) -> Option<Answer> {
        let token = self.next_token.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.parked.lock().insert(token, tx);
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
        if partitions.is_empty() {
            tracing::error!("{} is missing: group state not persisted", store::TOPIC);
            return false;
        }
        let mut ok = true;
        let n = partitions.len() as i32;
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
            let part = &partitions[p as usize];
            let mut b = BatchBuilder::new(Compression::None);
            for r in records {
                b.push(r);
            }
            let result = b.build().and_then(|mut bytes| {
                part.log
                    .append(&mut bytes, AppendOptions::leader(part.leader_epoch))
            });
            match result {
                Ok(_) => part.update_high_watermark(),
                Err(e) => {
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
            if let Some(tx) = parked.remove(&token) {
                let _ = tx.send(answer);
            }
        }
    }
}
