//! The cluster's metadata as a deterministic state machine: [`Image`] is the state, [`Command`]
//! the entries of the Raft log, [`Image::apply`] the transition. Every node that applies the
//! same log reaches the same image, so all decisions that must agree across nodes (replica
//! placement, leader elections, ISR changes, producer-id blocks) are made here, at apply time,
//! from the image alone. Nothing here does IO or reads a clock.
//!
//! Leadership rules (Kafka's, KRaft flavour):
//! - a leader is chosen among the ISR, in replica order, skipping fenced brokers and brokers in
//!   controlled shutdown; unclean election (a live replica outside the ISR) only when the
//!   topic's `unclean.leader.election.enable` is `true`;
//! - every leader change bumps the leader epoch, every change of replicas, ISR or leader bumps
//!   the partition epoch;
//! - a fenced broker leaves the ISR of every partition unless it is the last member (the ISR
//!   never becomes empty, so the last replica known in sync stays electable);
//! - an ISR change from a leader (AlterPartition) is accepted only for its current leader epoch
//!   and partition epoch, and may only add replicas that are registered and not fenced.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// Kafka error codes the controller answers with.
pub mod code {
    /// The topic or partition does not exist.
    pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
    /// The sender is not the partition's leader.
    pub const NOT_LEADER_OR_FOLLOWER: i16 = 6;
    /// The topic exists.
    pub const TOPIC_ALREADY_EXISTS: i16 = 36;
    /// Bad partition count.
    pub const INVALID_PARTITIONS: i16 = 37;
    /// Replication factor larger than the live brokers, or below 1.
    pub const INVALID_REPLICATION_FACTOR: i16 = 38;
    /// A manual assignment is malformed.
    pub const INVALID_REPLICA_ASSIGNMENT: i16 = 39;
    /// The request is inconsistent.
    pub const INVALID_REQUEST: i16 = 42;
    /// The leader epoch in the request is old.
    pub const FENCED_LEADER_EPOCH: i16 = 74;
    /// The broker epoch is not the registered one.
    pub const STALE_BROKER_EPOCH: i16 = 77;
    /// The proposed ISR contains a replica that may not join it.
    pub const INELIGIBLE_REPLICA: i16 = 107;
    /// The partition epoch in the request is old.
    pub const INVALID_UPDATE_VERSION: i16 = 108;
    /// Unexpected server error.
    pub const INTERNAL: i16 = -1;
}

/// Most partitions a topic may have (every node applies a creation, so an absurd count must be
/// refused before it is placed).
pub const MAX_PARTITIONS: i32 = 10_000;

/// A refusal: a Kafka error code and a message for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    /// Kafka error code.
    pub code: i16,
    /// What is wrong.
    pub message: String,
}

fn refuse(code: i16, message: impl Into<String>) -> Refusal {
    Refusal {
        code,
        message: message.into(),
    }
}

/// A registered broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerInfo {
    /// Node id.
    pub id: i32,
    /// Advertised Kafka host.
    pub host: String,
    /// Advertised Kafka port.
    pub port: i32,
    /// Rack, if configured.
    pub rack: Option<String>,
    /// Registration epoch (the log index of the registration): heartbeats and ISR changes
    /// from an older incarnation are refused.
    pub epoch: u64,
    /// A fenced broker leads nothing and is out of every ISR it is not the last member of.
    pub fenced: bool,
    /// The broker is shutting down (controlled shutdown): it is not elected leader.
    pub shutting_down: bool,
}

/// One partition's replication state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionInfo {
    /// Replica node ids; the first is the preferred leader.
    pub replicas: Vec<i32>,
    /// In-sync replicas.
    pub isr: Vec<i32>,
    /// The leader, or -1.
    pub leader: i32,
    /// Bumped on every leader change.
    pub leader_epoch: i32,
    /// Bumped on every change of this partition.
    pub partition_epoch: i32,
}

/// A topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicInfo {
    /// Topic id, 32 hex digits.
    pub id: String,
    /// Partitions, by index.
    pub partitions: Vec<PartitionInfo>,
    /// Config overrides, by Kafka name.
    pub configs: BTreeMap<String, String>,
}

impl TopicInfo {
    fn unclean_allowed(&self) -> bool {
        self.configs
            .get("unclean.leader.election.enable")
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    }
}

/// The cluster's metadata.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Image {
    /// Index of the last applied log entry (0 before any).
    pub version: u64,
    /// The cluster id (set once by the first controller).
    pub cluster_id: String,
    /// Registered brokers.
    pub brokers: BTreeMap<i32, BrokerInfo>,
    /// Topics by name.
    pub topics: BTreeMap<String, TopicInfo>,
    /// The next unallocated producer id.
    pub next_producer_id: i64,
}

/// A topic to create.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewTopic {
    /// Name (validated by the broker that forwards the request).
    pub name: String,
    /// Topic id, generated by the proposer.
    pub id: String,
    /// Partition count (ignored when `assignment` is given).
    pub partitions: i32,
    /// Replication factor (ignored when `assignment` is given).
    pub replication_factor: i16,
    /// Manual assignment: replicas per partition.
    pub assignment: Option<Vec<Vec<i32>>>,
    /// Config overrides (validated by the forwarding broker).
    pub configs: BTreeMap<String, String>,
}

/// An entry of the metadata log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Sets the cluster id if none is set.
    InitCluster {
        /// The id.
        cluster_id: String,
    },
    /// A broker (re)starts: it is registered fenced, with a new epoch.
    Register {
        /// Node id.
        id: i32,
        /// Advertised host.
        host: String,
        /// Advertised port.
        port: i32,
        /// Rack.
        rack: Option<String>,
    },
    /// A registered broker caught up with the metadata and heartbeats: it may lead again.
    Unfence {
        /// Node id.
        id: i32,
        /// Its registration epoch.
        epoch: u64,
    },
    /// A broker stopped heartbeating.
    Fence {
        /// Node id.
        id: i32,
        /// Its registration epoch.
        epoch: u64,
    },
    /// A broker asks to shut down: move its leaderships away and take it out of the ISRs.
    ControlledShutdown {
        /// Node id.
        id: i32,
        /// Its registration epoch.
        epoch: u64,
    },
    /// Creates topics.
    CreateTopics {
        /// The topics.
        topics: Vec<NewTopic>,
    },
    /// Deletes topics.
    DeleteTopics {
        /// Names.
        names: Vec<String>,
    },
    /// Grows a topic.
    CreatePartitions {
        /// Topic.
        topic: String,
        /// New total count.
        total: i32,
        /// Manual assignment of the new partitions.
        assignment: Option<Vec<Vec<i32>>>,
    },
    /// Replaces a topic's config overrides.
    SetTopicConfigs {
        /// Topic.
        topic: String,
        /// All overrides.
        configs: BTreeMap<String, String>,
    },
    /// A leader's ISR change (Kafka's AlterPartition).
    AlterPartition {
        /// Topic.
        topic: String,
        /// Partition.
        partition: i32,
        /// The leader asking.
        leader: i32,
        /// Its broker epoch.
        broker_epoch: u64,
        /// The leader epoch it leads in.
        leader_epoch: i32,
        /// The partition epoch it knows.
        partition_epoch: i32,
        /// The proposed ISR.
        isr: Vec<i32>,
    },
    /// Gives leadership back to preferred replicas that are in sync.
    ElectPreferredLeaders,
    /// Reserves a block of producer ids.
    AllocateProducerIds {
        /// How many.
        count: i64,
    },
}

/// The result of applying a command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Outcome {
    /// Done (or nothing to do).
    #[default]
    Done,
    /// A registration: the broker's new epoch.
    Registered {
        /// The epoch.
        epoch: u64,
    },
    /// Per-topic results of a create or delete.
    Topics(Vec<(String, Option<Refusal>)>),
    /// An AlterPartition result: the partition as it now is, or why not.
    Partition(Result<PartitionInfo, Refusal>),
    /// A producer-id block starting here.
    ProducerIds {
        /// First id of the block.
        start: i64,
    },
    /// Refused.
    Refused(Refusal),
}

/// Brokers ordered so that consecutive entries alternate racks (Kafka's rack-alternated
/// list): assigning consecutive brokers then spreads each partition's replicas over racks.
fn rack_alternated(brokers: &[&BrokerInfo]) -> Vec<i32> {
    let mut by_rack: BTreeMap<Option<&str>, Vec<i32>> = BTreeMap::new();
    for b in brokers {
        by_rack.entry(b.rack.as_deref()).or_default().push(b.id);
    }
    if by_rack.len() <= 1 {
        return brokers.iter().map(|b| b.id).collect();
    }
    let mut out = Vec::with_capacity(brokers.len());
    let mut i = 0;
    while out.len() < brokers.len() {
        for ids in by_rack.values() {
            if let Some(id) = ids.get(i) {
                out.push(*id);
            }
        }
        i += 1;
    }
    out
}

/// Kafka-style placement of `count` partitions (numbered from `first`) with `rf` replicas over
/// `brokers` (with their racks, same order): partition p's leader is broker `(start + p) mod n`
/// and its followers the next brokers after a shift that grows every n partitions, so leaders
/// and followers spread evenly; a follower on a rack the partition already uses is skipped
/// while other racks remain.
pub fn place(
    brokers: &[i32],
    racks: &[Option<String>],
    first: i32,
    count: i32,
    rf: usize,
    start: usize,
) -> Vec<Vec<i32>> {
    let n = brokers.len();
    let distinct_racks: BTreeSet<&Option<String>> = racks.iter().collect();
    (first..first + count)
        .map(|p| {
            let p = p as usize;
            let lead = (start + p) % n;
            let shift = 1 + (p / n) % (n.max(2) - 1);
            let mut replicas = vec![brokers[lead]];
            let mut used: BTreeSet<&Option<String>> = BTreeSet::from([&racks[lead]]);
            for pass in 0..2 {
                for j in 0..n {
                    if replicas.len() >= rf {
                        break;
                    }
                    let idx = (lead + shift + j) % n;
                    let all_racks_used = used.len() == distinct_racks.len();
                    if replicas.contains(&brokers[idx])
                        || (pass == 0 && !all_racks_used && used.contains(&racks[idx]))
                    {
                        continue;
                    }
                    replicas.push(brokers[idx]);
                    used.insert(&racks[idx]);
                }
            }
            replicas
        })
        .collect()
}

impl Image {
    /// The active (unfenced, not shutting down) brokers.
    pub fn active_brokers(&self) -> impl Iterator<Item = &BrokerInfo> {
        self.brokers
            .values()
            .filter(|b| !b.fenced && !b.shutting_down)
    }

    fn electable(&self, id: i32) -> bool {
        self.brokers
            .get(&id)
            .is_some_and(|b| !b.fenced && !b.shutting_down)
    }

    /// One partition.
    pub fn partition(&self, topic: &str, partition: i32) -> Option<&PartitionInfo> {
        self.topics
            .get(topic)
            .and_then(|t| t.partitions.get(usize::try_from(partition).ok()?))
    }

    /// Applies one command at log index `index`.
    pub fn apply(&mut self, index: u64, cmd: &Command) -> Outcome {
        self.version = index;
        match cmd {
            Command::InitCluster { cluster_id } => {
                if self.cluster_id.is_empty() {
                    self.cluster_id = cluster_id.clone();
                }
                Outcome::Done
            }
            Command::Register {
                id,
                host,
                port,
                rack,
            } => {
                self.brokers.insert(
                    *id,
                    BrokerInfo {
                        id: *id,
                        host: host.clone(),
                        port: *port,
                        rack: rack.clone(),
                        epoch: index,
                        fenced: true,
                        shutting_down: false,
                    },
                );
                // A restarted broker lost whatever it led: move leadership to in-sync peers.
                self.reelect_away_from(*id);
                Outcome::Registered { epoch: index }
            }
            Command::Unfence { id, epoch } => {
                match self.brokers.get_mut(id) {
                    Some(b) if b.epoch == *epoch => {
                        b.fenced = false;
                        b.shutting_down = false;
                    }
                    _ => return Outcome::Refused(refuse(code::STALE_BROKER_EPOCH, "stale epoch")),
                }
                self.elect_leaderless();
                Outcome::Done
            }
            Command::Fence { id, epoch } | Command::ControlledShutdown { id, epoch } => {
                let shutdown = matches!(cmd, Command::ControlledShutdown { .. });
                match self.brokers.get_mut(id) {
                    Some(b) if b.epoch == *epoch => {
                        b.fenced |= !shutdown;
                        b.shutting_down |= shutdown;
                    }
                    _ => return Outcome::Refused(refuse(code::STALE_BROKER_EPOCH, "stale epoch")),
                }
                self.reelect_away_from(*id);
                Outcome::Done
            }
            Command::CreateTopics { topics } => {
                let mut results = Vec::with_capacity(topics.len());
                for t in topics {
                    let r = self.create_topic(t).err();
                    results.push((t.name.clone(), r));
                }
                Outcome::Topics(results)
            }
            Command::DeleteTopics { names } => Outcome::Topics(
                names
                    .iter()
                    .map(|n| {
                        let r = match self.topics.remove(n) {
                            Some(_) => None,
                            None => Some(refuse(
                                code::UNKNOWN_TOPIC_OR_PARTITION,
                                format!("unknown topic {n}"),
                            )),
                        };
                        (n.clone(), r)
                    })
                    .collect(),
            ),
            Command::CreatePartitions {
                topic,
                total,
                assignment,
            } => match self.create_partitions(topic, *total, assignment.as_deref()) {
                Ok(()) => Outcome::Done,
                Err(r) => Outcome::Refused(r),
            },
            Command::SetTopicConfigs { topic, configs } => match self.topics.get_mut(topic) {
                Some(t) => {
                    t.configs = configs.clone();
                    self.elect_leaderless();
                    Outcome::Done
                }
                None => Outcome::Refused(refuse(
                    code::UNKNOWN_TOPIC_OR_PARTITION,
                    format!("unknown topic {topic}"),
                )),
            },
            Command::AlterPartition {
                topic,
                partition,
                leader,
                broker_epoch,
                leader_epoch,
                partition_epoch,
                isr,
            } => Outcome::Partition(self.alter_partition(
                topic,
                *partition,
                *leader,
                *broker_epoch,
                *leader_epoch,
                *partition_epoch,
                isr,
            )),
            Command::ElectPreferredLeaders => {
                let electable: BTreeSet<i32> = self.active_brokers().map(|b| b.id).collect();
                for t in self.topics.values_mut() {
                    for p in &mut t.partitions {
                        let Some(&preferred) = p.replicas.first() else {
                            continue;
                        };
                        if p.leader != preferred
                            && electable.contains(&preferred)
                            && p.isr.contains(&preferred)
                        {
                            p.leader = preferred;
                            p.leader_epoch += 1;
                            p.partition_epoch += 1;
                        }
                    }
                }
                Outcome::Done
            }
            Command::AllocateProducerIds { count } => {
                let start = self.next_producer_id;
                match start.checked_add((*count).clamp(1, 1 << 20)) {
                    Some(next) => {
                        self.next_producer_id = next;
                        Outcome::ProducerIds { start }
                    }
                    None => {
                        Outcome::Refused(refuse(code::INVALID_REQUEST, "producer ids exhausted"))
                    }
                }
            }
        }
    }

    /// Whether some partition's preferred replica is in sync and electable but not leading.
    pub fn preferred_election_needed(&self) -> bool {
        self.topics.values().flat_map(|t| &t.partitions).any(|p| {
            p.replicas
                .first()
                .is_some_and(|&pr| p.leader != pr && self.electable(pr) && p.isr.contains(&pr))
        })
    }

    fn create_topic(&mut self, t: &NewTopic) -> Result<(), Refusal> {
        if self.topics.contains_key(&t.name) {
            return Err(refuse(
                code::TOPIC_ALREADY_EXISTS,
                format!("topic {} already exists", t.name),
            ));
        }
        let assignment = match &t.assignment {
            Some(a) => {
                self.check_assignment(a, None)?;
                a.clone()
            }
            None => {
                if !(1..=MAX_PARTITIONS).contains(&t.partitions) {
                    return Err(refuse(
                        code::INVALID_PARTITIONS,
                        format!(
                            "partition count must be between 1 and {MAX_PARTITIONS}, got {}",
                            t.partitions
                        ),
                    ));
                }
                let start = t.id.bytes().map(usize::from).sum::<usize>();
                self.auto_assign(0, t.partitions, t.replication_factor, start)?
            }
        };
        let partitions = assignment
            .into_iter()
            .map(|replicas| self.new_partition(replicas))
            .collect();
        self.topics.insert(
            t.name.clone(),
            TopicInfo {
                id: t.id.clone(),
                partitions,
                configs: t.configs.clone(),
            },
        );
        Ok(())
    }

    /// A new partition on `replicas`: all in sync, led by the first electable one.
    fn new_partition(&self, replicas: Vec<i32>) -> PartitionInfo {
        PartitionInfo {
            leader: replicas
                .iter()
                .copied()
                .find(|r| self.electable(*r))
                .unwrap_or(-1),
            isr: replicas.clone(),
            replicas,
            leader_epoch: 0,
            partition_epoch: 0,
        }
    }

    fn auto_assign(
        &self,
        first: i32,
        count: i32,
        rf: i16,
        start: usize,
    ) -> Result<Vec<Vec<i32>>, Refusal> {
        let live: Vec<&BrokerInfo> = self.active_brokers().collect();
        if rf < 1 || rf as usize > live.len() {
            return Err(refuse(
                code::INVALID_REPLICATION_FACTOR,
                format!(
                    "replication factor {rf} is invalid with {} live broker(s)",
                    live.len()
                ),
            ));
        }
        let order = rack_alternated(&live);
        let racks: Vec<Option<String>> = order
            .iter()
            .map(|id| self.brokers.get(id).and_then(|b| b.rack.clone()))
            .collect();
        Ok(place(&order, &racks, first, count, rf as usize, start))
    }

    fn check_assignment(&self, a: &[Vec<i32>], rf: Option<usize>) -> Result<(), Refusal> {
        if a.len() > MAX_PARTITIONS as usize {
            return Err(refuse(
                code::INVALID_PARTITIONS,
                format!("a topic may have at most {MAX_PARTITIONS} partitions"),
            ));
        }
        if a.is_empty() {
            return Err(refuse(
                code::INVALID_REPLICA_ASSIGNMENT,
                "the assignment has no partitions",
            ));
        }
        let rf = rf.unwrap_or(a[0].len());
        for replicas in a {
            let distinct: BTreeSet<i32> = replicas.iter().copied().collect();
            if replicas.is_empty() || distinct.len() != replicas.len() || replicas.len() != rf {
                return Err(refuse(
                    code::INVALID_REPLICA_ASSIGNMENT,
                    format!("replica list {replicas:?} is empty, repeats a broker or has a different length"),
                ));
            }
            if let Some(r) = replicas.iter().find(|r| !self.brokers.contains_key(r)) {
                return Err(refuse(
                    code::INVALID_REPLICA_ASSIGNMENT,
                    format!("broker {r} is not registered"),
                ));
            }
        }
        Ok(())
    }

    fn create_partitions(
        &mut self,
        topic: &str,
        total: i32,
        assignment: Option<&[Vec<i32>]>,
    ) -> Result<(), Refusal> {
        let Some(t) = self.topics.get(topic) else {
            return Err(refuse(
                code::UNKNOWN_TOPIC_OR_PARTITION,
                format!("unknown topic {topic}"),
            ));
        };
        let current = t.partitions.len() as i32;
        if total > MAX_PARTITIONS {
            return Err(refuse(
                code::INVALID_PARTITIONS,
                format!("a topic may have at most {MAX_PARTITIONS} partitions, asked for {total}"),
            ));
        }
        if total <= current {
            return Err(refuse(
                code::INVALID_PARTITIONS,
                format!(
                    "topic {topic} has {current} partitions; the new count {total} must be larger"
                ),
            ));
        }
        let rf = t.partitions.first().map_or(1, |p| p.replicas.len());
        let new = match assignment {
            Some(a) => {
                if a.len() as i32 != total - current {
                    return Err(refuse(
                        code::INVALID_REPLICA_ASSIGNMENT,
                        format!(
                            "{} assignments for {} new partitions",
                            a.len(),
                            total - current
                        ),
                    ));
                }
                self.check_assignment(a, Some(rf))?;
                a.to_vec()
            }
            None => {
                let start = t.id.bytes().map(usize::from).sum::<usize>();
                self.auto_assign(current, total - current, rf as i16, start)?
            }
        };
        let parts: Vec<PartitionInfo> = new
            .into_iter()
            .map(|replicas| self.new_partition(replicas))
            .collect();
        if let Some(t) = self.topics.get_mut(topic) {
            t.partitions.extend(parts);
        }
        Ok(())
    }

    /// Whether a command would certainly be refused, judged on this image without changing
    /// it: the active controller answers such proposals without writing them to the log.
    pub fn precheck(&self, cmd: &Command) -> Option<Refusal> {
        match cmd {
            Command::AlterPartition {
                topic,
                partition,
                leader,
                broker_epoch,
                leader_epoch,
                partition_epoch,
                isr,
            } => self
                .check_alter(
                    topic,
                    *partition,
                    *leader,
                    *broker_epoch,
                    *leader_epoch,
                    *partition_epoch,
                    isr,
                )
                .err()
                // Only a fenced replica is refused early: epochs are judged at apply time, as
                // this image may lag the log (a newly active controller).
                .filter(|r| r.code == code::INELIGIBLE_REPLICA),
            _ => None,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn check_alter(
        &self,
        topic: &str,
        partition: i32,
        leader: i32,
        broker_epoch: u64,
        leader_epoch: i32,
        partition_epoch: i32,
        isr: &[i32],
    ) -> Result<(), Refusal> {
        if self.brokers.get(&leader).map(|b| b.epoch) != Some(broker_epoch) {
            return Err(refuse(code::STALE_BROKER_EPOCH, "stale broker epoch"));
        }
        let Some(p) = self.partition(topic, partition) else {
            return Err(refuse(
                code::UNKNOWN_TOPIC_OR_PARTITION,
                format!("unknown partition {topic}-{partition}"),
            ));
        };
        if p.leader != leader {
            return Err(refuse(code::NOT_LEADER_OR_FOLLOWER, "not the leader"));
        }
        if leader_epoch != p.leader_epoch {
            return Err(refuse(code::FENCED_LEADER_EPOCH, "old leader epoch"));
        }
        if partition_epoch != p.partition_epoch {
            return Err(refuse(code::INVALID_UPDATE_VERSION, "old partition epoch"));
        }
        if !isr.contains(&leader) || isr.iter().any(|r| !p.replicas.contains(r)) {
            return Err(refuse(
                code::INVALID_REQUEST,
                "the ISR must contain the leader and only replicas",
            ));
        }
        if let Some(r) = isr
            .iter()
            .find(|r| !p.isr.contains(r) && !self.electable(**r))
        {
            return Err(refuse(
                code::INELIGIBLE_REPLICA,
                format!("replica {r} is fenced or shutting down"),
            ));
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn alter_partition(
        &mut self,
        topic: &str,
        partition: i32,
        leader: i32,
        broker_epoch: u64,
        leader_epoch: i32,
        partition_epoch: i32,
        isr: &[i32],
    ) -> Result<PartitionInfo, Refusal> {
        self.check_alter(
            topic,
            partition,
            leader,
            broker_epoch,
            leader_epoch,
            partition_epoch,
            isr,
        )?;
        let Some(p) = self
            .topics
            .get_mut(topic)
            .and_then(|t| t.partitions.get_mut(usize::try_from(partition).ok()?))
        else {
            return Err(refuse(code::INTERNAL, "partition vanished"));
        };
        let mut new: Vec<i32> = p
            .replicas
            .iter()
            .copied()
            .filter(|r| isr.contains(r))
            .collect();
        new.dedup();
        if new != p.isr {
            p.isr = new;
            p.partition_epoch += 1;
        }
        Ok(p.clone())
    }

    /// After `id` was fenced, restarted or began shutting down: it leads nothing and leaves
    /// every ISR it is not the last member of.
    fn reelect_away_from(&mut self, id: i32) {
        let active: Vec<i32> = self.active_brokers().map(|b| b.id).collect();
        for t in self.topics.values_mut() {
            let unclean = t.unclean_allowed();
            for p in &mut t.partitions {
                if !p.replicas.contains(&id) {
                    continue;
                }
                let mut changed = false;
                if p.isr.contains(&id) && p.isr.len() > 1 {
                    p.isr.retain(|r| *r != id);
                    changed = true;
                }
                if p.leader == id {
                    p.leader = elect(p, &active, unclean);
                    p.leader_epoch += 1;
                    changed = true;
                }
                if changed {
                    p.partition_epoch += 1;
                }
            }
        }
    }

    /// Elects leaders for leaderless partitions (after a broker returned or a config changed).
    fn elect_leaderless(&mut self) {
        let active: Vec<i32> = self.active_brokers().map(|b| b.id).collect();
        for t in self.topics.values_mut() {
            let unclean = t.unclean_allowed();
            for p in &mut t.partitions {
                if p.leader >= 0 {
                    continue;
                }
                let leader = elect(p, &active, unclean);
                if leader >= 0 {
                    p.leader = leader;
                    p.leader_epoch += 1;
                    p.partition_epoch += 1;
                }
            }
        }
    }
}

/// A leader for `p` among `active` brokers: the first in-sync replica, or with `unclean` the
/// first live replica (whose log becomes the truth: the ISR shrinks to it). -1 if none.
fn elect(p: &mut PartitionInfo, active: &[i32], unclean: bool) -> i32 {
    if let Some(r) = p
        .replicas
        .iter()
        .copied()
        .find(|r| p.isr.contains(r) && active.contains(r))
    {
        return r;
    }
    if unclean {
        if let Some(r) = p.replicas.iter().copied().find(|r| active.contains(r)) {
            p.isr = vec![r];
            return r;
        }
    }
    -1
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn cluster(n: i32) -> Image {
        let mut img = Image::default();
        let mut i = 1;
        for id in 1..=n {
            let out = img.apply(
                i,
                &Command::Register {
                    id,
                    host: "h".into(),
                    port: 9000 + id,
                    rack: None,
                },
            );
            assert_eq!(out, Outcome::Registered { epoch: i });
            i += 1;
            img.apply(i, &Command::Unfence { id, epoch: i - 1 });
            i += 1;
        }
        img
    }

    fn create(img: &mut Image, name: &str, partitions: i32, rf: i16) -> Outcome {
        let v = img.version + 1;
        img.apply(
            v,
            &Command::CreateTopics {
                topics: vec![NewTopic {
                    name: name.into(),
                    id: format!("{:032x}", v),
                    partitions,
                    replication_factor: rf,
                    assignment: None,
                    configs: BTreeMap::new(),
                }],
            },
        )
    }

    #[test]
    fn placement_spreads_leaders_and_replicas() {
        let mut img = cluster(3);
        assert_eq!(
            create(&mut img, "t", 6, 3),
            Outcome::Topics(vec![("t".into(), None)])
        );
        let t = &img.topics["t"];
        let mut leaders = BTreeMap::new();
        for p in &t.partitions {
            assert_eq!(p.replicas.len(), 3);
            assert_eq!(p.replicas.iter().collect::<BTreeSet<_>>().len(), 3);
            assert_eq!(p.leader, p.replicas[0]);
            *leaders.entry(p.leader).or_insert(0) += 1;
        }
        assert_eq!(leaders.values().copied().collect::<Vec<_>>(), vec![2, 2, 2]);
        match create(&mut img, "big", 1, 4) {
            Outcome::Topics(r) => assert_eq!(r[0].1.as_ref().unwrap().code, 38),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn rack_aware_placement_uses_every_rack() {
        let brokers = [
            BrokerInfo {
                id: 1,
                host: String::new(),
                port: 0,
                rack: Some("a".into()),
                epoch: 0,
                fenced: false,
                shutting_down: false,
            },
            BrokerInfo {
                id: 2,
                host: String::new(),
                port: 0,
                rack: Some("a".into()),
                epoch: 0,
                fenced: false,
                shutting_down: false,
            },
            BrokerInfo {
                id: 3,
                host: String::new(),
                port: 0,
                rack: Some("b".into()),
                epoch: 0,
                fenced: false,
                shutting_down: false,
            },
            BrokerInfo {
                id: 4,
                host: String::new(),
                port: 0,
                rack: Some("b".into()),
                epoch: 0,
                fenced: false,
                shutting_down: false,
            },
        ];
        let refs: Vec<&BrokerInfo> = brokers.iter().collect();
        let order = rack_alternated(&refs);
        assert_eq!(order, vec![1, 3, 2, 4]);
        let rack = |id: i32| brokers.iter().find(|b| b.id == id).unwrap().rack.clone();
        let racks: Vec<Option<String>> = order.iter().map(|id| rack(*id)).collect();
        for replicas in place(&order, &racks, 0, 8, 2, 0) {
            assert_ne!(rack(replicas[0]), rack(replicas[1]), "{replicas:?}");
        }
    }

    #[test]
    fn fencing_moves_leadership_within_the_isr_and_bumps_epochs() {
        let mut img = cluster(3);
        create(&mut img, "t", 1, 3);
        let before = img.partition("t", 0).unwrap().clone();
        let leader = before.leader;
        let epoch = img.brokers[&leader].epoch;
        img.apply(img.version + 1, &Command::Fence { id: leader, epoch });
        let after = img.partition("t", 0).unwrap().clone();
        assert_ne!(after.leader, leader);
        assert!(after.leader >= 0);
        assert_eq!(after.leader_epoch, before.leader_epoch + 1);
        assert!(!after.isr.contains(&leader));
        // The old leader comes back: registered fenced, then unfenced; preferred election
        // needs it back in the ISR first.
        let v = img.version + 1;
        img.apply(
            v,
            &Command::Register {
                id: leader,
                host: "h".into(),
                port: 1,
                rack: None,
            },
        );
        img.apply(
            v + 1,
            &Command::Unfence {
                id: leader,
                epoch: v,
            },
        );
        assert!(!img.preferred_election_needed());
        let p = img.partition("t", 0).unwrap().clone();
        let out = img.apply(
            v + 2,
            &Command::AlterPartition {
                topic: "t".into(),
                partition: 0,
                leader: p.leader,
                broker_epoch: img.brokers[&p.leader].epoch,
                leader_epoch: p.leader_epoch,
                partition_epoch: p.partition_epoch,
                isr: vec![1, 2, 3],
            },
        );
        assert!(matches!(out, Outcome::Partition(Ok(_))), "{out:?}");
        assert!(img.preferred_election_needed());
        img.apply(v + 3, &Command::ElectPreferredLeaders);
        let p = img.partition("t", 0).unwrap();
        assert_eq!(p.leader, leader);
        assert_eq!(p.leader_epoch, before.leader_epoch + 2);
    }

    #[test]
    fn last_isr_member_stays_and_is_reelected_when_it_returns() {
        let mut img = cluster(2);
        create(&mut img, "t", 1, 2);
        for id in [1, 2] {
            let epoch = img.brokers[&id].epoch;
            img.apply(img.version + 1, &Command::Fence { id, epoch });
        }
        let p = img.partition("t", 0).unwrap().clone();
        assert_eq!(p.leader, -1);
        assert_eq!(p.isr.len(), 1, "the ISR never becomes empty");
        let last = p.isr[0];
        let other = 3 - last;
        // The out-of-sync replica returning does not become leader (clean election only).
        let v = img.version + 1;
        img.apply(
            v,
            &Command::Register {
                id: other,
                host: "h".into(),
                port: 1,
                rack: None,
            },
        );
        img.apply(
            v + 1,
            &Command::Unfence {
                id: other,
                epoch: v,
            },
        );
        assert_eq!(img.partition("t", 0).unwrap().leader, -1);
        // ... unless the topic allows unclean election.
        img.apply(
            v + 2,
            &Command::SetTopicConfigs {
                topic: "t".into(),
                configs: BTreeMap::from([(
                    "unclean.leader.election.enable".to_string(),
                    "true".to_string(),
                )]),
            },
        );
        let p = img.partition("t", 0).unwrap();
        assert_eq!(p.leader, other);
        assert_eq!(p.isr, vec![other]);
    }

    #[test]
    fn alter_partition_checks_epochs_and_eligibility() {
        let mut img = cluster(3);
        create(&mut img, "t", 1, 3);
        let p = img.partition("t", 0).unwrap().clone();
        let be = img.brokers[&p.leader].epoch;
        let alter = |img: &mut Image, le: i32, pe: i32, isr: Vec<i32>| {
            let v = img.version + 1;
            img.apply(
                v,
                &Command::AlterPartition {
                    topic: "t".into(),
                    partition: 0,
                    leader: p.leader,
                    broker_epoch: be,
                    leader_epoch: le,
                    partition_epoch: pe,
                    isr,
                },
            )
        };
        let shrink = vec![p.leader];
        let Outcome::Partition(Ok(q)) = alter(&mut img, p.leader_epoch, p.partition_epoch, shrink)
        else {
            panic!()
        };
        assert_eq!(q.isr, vec![p.leader]);
        let Outcome::Partition(Err(r)) =
            alter(&mut img, p.leader_epoch, p.partition_epoch, p.isr.clone())
        else {
            panic!()
        };
        assert_eq!(r.code, code::INVALID_UPDATE_VERSION);
        let Outcome::Partition(Err(r)) = alter(
            &mut img,
            p.leader_epoch - 1,
            q.partition_epoch,
            p.isr.clone(),
        ) else {
            panic!()
        };
        assert_eq!(r.code, code::FENCED_LEADER_EPOCH);
        // A fenced follower may not be added back.
        let f = p.replicas.iter().copied().find(|r| *r != p.leader).unwrap();
        let fe = img.brokers[&f].epoch;
        img.apply(img.version + 1, &Command::Fence { id: f, epoch: fe });
        let Outcome::Partition(Err(r)) = alter(
            &mut img,
            p.leader_epoch,
            q.partition_epoch,
            vec![p.leader, f],
        ) else {
            panic!()
        };
        assert_eq!(r.code, code::INELIGIBLE_REPLICA);
    }

    #[test]
    fn producer_id_blocks_do_not_overlap() {
        let mut img = Image::default();
        let a = img.apply(1, &Command::AllocateProducerIds { count: 1000 });
        let b = img.apply(2, &Command::AllocateProducerIds { count: 1000 });
        assert_eq!(a, Outcome::ProducerIds { start: 0 });
        assert_eq!(b, Outcome::ProducerIds { start: 1000 });
    }
}
