//! Partition assignors of Kafka's classic consumer group protocol, and the bytes they travel in.
//!
//! In the classic protocol the broker does not assign partitions: it elects one member of the
//! group as leader, hands it every member's subscription, and relays the leader's decision.
//!
//! ```text
//!  member                         coordinator                         leader
//!    | JoinGroup(protocols: name -> encode_subscription(..))            |
//!    |------------------------------>|  JoinGroup response: members    |
//!    |                               |  + their metadata               |
//!    |                               |-------------------------------->|
//!    |                               |     decode_subscription(..) each |
//!    |                               |     Assignor::assign(..)         |
//!    |                               |     encode_assignment(..) each   |
//!    |                               |<--------------------------------|
//!    | SyncGroup response            |        SyncGroup(assignments)    |
//!    |<------------------------------|                                  |
//!  decode_assignment(..)
//! ```
//!
//! The assignors carry the same protocol names as Kafka's Java client ([`Assignor::name`]), so a
//! group mixing Strom and Java (or librdkafka) consumers agrees on one of them, and whichever
//! member leads produces an assignment every member can read:
//!
//! - [`RangeAssignor`] (`range`): per topic, contiguous ranges of partitions.
//! - [`RoundRobinAssignor`] (`roundrobin`): all partitions dealt in turn.
//! - [`CooperativeStickyAssignor`] (`cooperative-sticky`, KIP-429): balanced, keeps members on the
//!   partitions they already own, and never hands a partition to a new member in the same
//!   rebalance in which its previous owner must give it up.
//!
//! ```
//! use std::collections::BTreeMap;
//! use strom_client::assignor::{by_name, decode_subscription, encode_subscription};
//! use strom_client::TopicPartition;
//!
//! // What each member sends in JoinGroup, as the leader receives it.
//! let topics = vec!["orders".to_string()];
//! let a = decode_subscription("a", None, &encode_subscription(&topics, &[], -1, None)?)?;
//! let b = decode_subscription("b", None, &encode_subscription(&topics, &[], -1, None)?)?;
//!
//! let range = by_name("range").expect("a built-in assignor");
//! let partitions = BTreeMap::from([("orders".to_string(), 3)]);
//! let assignment = range.assign(&partitions, &[a, b]);
//! assert_eq!(assignment["a"], [TopicPartition::new("orders", 0), TopicPartition::new("orders", 1)]);
//! assert_eq!(assignment["b"], [TopicPartition::new("orders", 2)]);
//! # Ok::<(), strom_client::Error>(())
//! ```
//!
//! # Wire formats
//!
//! Both the JoinGroup metadata and the SyncGroup assignment are an `int16` version followed by
//! the message body, big-endian like the rest of the Kafka protocol (`ConsumerProtocol` in Kafka):
//!
//! ```text
//! subscription v3:  version:i16 | topics:[string] | user_data:nullable bytes
//!                   | owned:[topic:string partitions:[i32]] (v1+) | generation:i32 (v2+)
//!                   | rack:nullable string (v3)
//! assignment  v1:   version:i16 | assigned:[topic:string partitions:[i32]] | user_data:nullable bytes
//! ```
//!
//! Arrays are an `int32` count then the elements; strings an `int16` length then UTF-8; bytes an
//! `int32` length (-1 for null). Every version of the assignment has the same layout. A version
//! newer than this module knows is read as the newest it knows, as Kafka's own clients do: later
//! versions only append fields.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition as AssignedTopic;
use kafka_protocol::messages::consumer_protocol_subscription::TopicPartition as OwnedTopic;
use kafka_protocol::messages::{
    ConsumerProtocolAssignment, ConsumerProtocolSubscription, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use crate::error::{Error, Result};
use crate::types::TopicPartition;

/// The subscription version we send: the newest `kafka-protocol` knows, which carries owned
/// partitions (v1), the generation (v2) and the rack (v3).
const SUBSCRIPTION_VERSION: i16 = 3;
/// The assignment version we send. All versions share one layout; 1 is what every client since
/// Kafka 2.4 writes at least, and older readers accept any version.
const ASSIGNMENT_VERSION: i16 = 1;
/// The newest consumer-protocol version we can read; newer ones are read as this one.
const NEWEST_READABLE_VERSION: i16 = 3;

/// Eager (revoke everything before rejoining) or cooperative (KIP-429, incremental).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RebalanceProtocol {
    /// Every member gives up all its partitions before the group rebalances.
    Eager,
    /// Members keep their partitions across a rebalance and give up only those that move
    /// (KIP-429); a moved partition reaches its new owner in a follow-up rebalance.
    Cooperative,
}

/// One member's subscription as the group leader sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberSubscription {
    /// The member id the coordinator gave the member.
    pub member_id: String,
    /// The member's `group.instance.id` (static membership), if it has one.
    pub group_instance_id: Option<String>,
    /// Topics the member wants to consume.
    pub topics: Vec<String>,
    /// Partitions the member owned in the previous generation (sent by cooperative members).
    pub owned: Vec<TopicPartition>,
    /// The generation id the `owned` list belongs to, -1 if unknown.
    pub generation: i32,
    /// The member's `client.rack`, if set.
    pub rack: Option<String>,
}

/// A strategy the group leader uses to split partitions among members.
pub trait Assignor: Send + Sync + std::fmt::Debug {
    /// Protocol name sent in JoinGroup ("range", "roundrobin", "cooperative-sticky") — the same
    /// names as Kafka's Java client so mixed groups agree.
    fn name(&self) -> &'static str;

    /// Whether members using this assignor may keep their partitions while the group rebalances.
    fn protocol(&self) -> RebalanceProtocol;

    /// Splits the partitions among the members.
    ///
    /// `partitions` is the number of partitions per topic (only topics somebody subscribed to;
    /// topics missing from it are skipped). Returns member id -> its partitions, with every member
    /// present (possibly with nothing) and each list sorted.
    fn assign(
        &self,
        partitions: &BTreeMap<String, i32>,
        members: &[MemberSubscription],
    ) -> BTreeMap<String, Vec<TopicPartition>>;
}

/// Kafka's `range` assignor: for each topic, the members subscribed to it split its partitions
/// into contiguous ranges, the first ones getting one extra when the division is not even.
///
/// Members are ordered by `group.instance.id` (static members first), then by member id, so a
/// static member keeps its range across restarts. Kafka's rack-aware variant needs the replicas'
/// racks, which an assignor given only partition counts does not have; it is not applied.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RangeAssignor;

/// Kafka's `roundrobin` assignor: all partitions of all subscribed topics, sorted, are dealt to
/// the members in turn, skipping members not subscribed to the partition's topic.
///
/// Members are ordered as in [`RangeAssignor`]. With identical subscriptions the members' counts
/// differ by at most one.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RoundRobinAssignor;

/// Kafka's `cooperative-sticky` assignor (KIP-429): balanced, sticky and incremental.
///
/// - Balanced: members with the same subscriptions get counts that differ by at most one.
/// - Sticky: a member keeps the partitions it owned as far as balance allows. Ownership claims
///   made in a generation older than the newest one any member reports are ignored, and a
///   partition claimed by two members of the newest generation is kept by neither.
/// - Cooperative: a partition that has to leave another member that still owns it is left out
///   of this assignment; its owner revokes it, rejoins, and the follow-up rebalance hands it on.
///
/// The result is deterministic: ties are broken by member id and partition order.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CooperativeStickyAssignor;

/// Looks an assignor up by Kafka name (also accepting Java class names like
/// "org.apache.kafka.clients.consumer.RangeAssignor", "...RoundRobinAssignor",
/// "...CooperativeStickyAssignor").
pub fn by_name(name: &str) -> Option<Box<dyn Assignor>> {
    match name.trim() {
        "range" | "org.apache.kafka.clients.consumer.RangeAssignor" => {
            Some(Box::new(RangeAssignor))
        }
        "roundrobin" | "org.apache.kafka.clients.consumer.RoundRobinAssignor" => {
            Some(Box::new(RoundRobinAssignor))
        }
        "cooperative-sticky" | "org.apache.kafka.clients.consumer.CooperativeStickyAssignor" => {
            Some(Box::new(CooperativeStickyAssignor))
        }
        _ => None,
    }
}

impl Assignor for RangeAssignor {
    fn name(&self) -> &'static str {
        "range"
    }

    fn protocol(&self) -> RebalanceProtocol {
        RebalanceProtocol::Eager
    }

    fn assign(
        &self,
        partitions: &BTreeMap<String, i32>,
        members: &[MemberSubscription],
    ) -> BTreeMap<String, Vec<TopicPartition>> {
        let members = distinct(members);
        let mut out = empty_assignment(&members);
        let mut subscribers: BTreeMap<&str, Vec<&MemberSubscription>> = BTreeMap::new();
        for m in &members {
            let topics: BTreeSet<&str> = m.topics.iter().map(String::as_str).collect();
            for topic in topics {
                subscribers.entry(topic).or_default().push(m);
            }
        }
        for (topic, mut subs) in subscribers {
            let count = partition_count(partitions, topic);
            if count == 0 {
                continue;
            }
            subs.sort_by(|a, b| member_order(a, b));
            let n = subs.len() as i64;
            let (per_member, with_extra) = (i64::from(count) / n, i64::from(count) % n);
            for (i, m) in (0_i64..).zip(&subs) {
                let start = per_member * i + i.min(with_extra);
                let len = per_member + i64::from(i < with_extra);
                if let Some(list) = out.get_mut(&m.member_id) {
                    // start + len <= count, which is an i32.
                    list.extend((start..start + len).map(|p| TopicPartition::new(topic, p as i32)));
                }
            }
        }
        sorted(out)
    }
}

impl Assignor for RoundRobinAssignor {
    fn name(&self) -> &'static str {
        "roundrobin"
    }

    fn protocol(&self) -> RebalanceProtocol {
        RebalanceProtocol::Eager
    }

    fn assign(
        &self,
        partitions: &BTreeMap<String, i32>,
        members: &[MemberSubscription],
    ) -> BTreeMap<String, Vec<TopicPartition>> {
        let mut members = distinct(members);
        let mut out = empty_assignment(&members);
        members.sort_by(|a, b| member_order(a, b));
        let subs: Vec<BTreeSet<&str>> = members
            .iter()
            .map(|m| m.topics.iter().map(String::as_str).collect())
            .collect();
        let topics: BTreeSet<&str> = subs.iter().flatten().copied().collect();
        // The member the next partition is offered to first.
        let mut next = 0;
        for topic in topics {
            for p in 0..partition_count(partitions, topic) {
                let taker = (0..members.len())
                    .map(|k| (next + k) % members.len())
                    .find(|&i| subs[i].contains(topic));
                let Some(i) = taker else { break };
                if let Some(list) = out.get_mut(&members[i].member_id) {
                    list.push(TopicPartition::new(topic, p));
                }
                next = (i + 1) % members.len();
            }
        }
        sorted(out)
    }
}

/// A partition inside the sticky assignor: (topic index in name order, partition number), which
/// sorts like [`TopicPartition`] and compares without touching strings.
type Part = (usize, i32);

impl Assignor for CooperativeStickyAssignor {
    fn name(&self) -> &'static str {
        "cooperative-sticky"
    }

    fn protocol(&self) -> RebalanceProtocol {
        RebalanceProtocol::Cooperative
    }

    fn assign(
        &self,
        partitions: &BTreeMap<String, i32>,
        members: &[MemberSubscription],
    ) -> BTreeMap<String, Vec<TopicPartition>> {
        let mut members = distinct(members);
        members.sort_by(|a, b| a.member_id.cmp(&b.member_id));
        let n = members.len();
        let topics: Vec<(&str, i32)> = partitions
            .iter()
            .filter(|(_, &count)| count > 0)
            .map(|(t, &count)| (t.as_str(), count))
            .collect();
        let topic_index: BTreeMap<&str, usize> = topics
            .iter()
            .enumerate()
            .map(|(i, (t, _))| (*t, i))
            .collect();
        let part_of = |tp: &TopicPartition| -> Option<Part> {
            let &t = topic_index.get(tp.topic.as_str())?;
            (0..topics[t].1)
                .contains(&tp.partition)
                .then_some((t, tp.partition))
        };
        let mut subscribed = vec![vec![false; topics.len()]; n];
        for (i, m) in members.iter().enumerate() {
            for t in m.topics.iter().filter_map(|t| topic_index.get(t.as_str())) {
                subscribed[i][*t] = true;
            }
        }
        let topics_of: Vec<Vec<usize>> = subscribed
            .iter()
            .map(|s| (0..topics.len()).filter(|&t| s[t]).collect())
            .collect();
        let subscribers: Vec<Vec<usize>> = (0..topics.len())
            .map(|t| (0..n).filter(|&i| subscribed[i][t]).collect())
            .collect();

        // 1. Who owns what, for stickiness: only claims of the newest generation count, a member
        //    only keeps partitions of topics it still subscribes to, and a partition claimed twice
        //    is kept by neither claimant.
        let newest = members.iter().map(|m| m.generation).max().unwrap_or(-1);
        let mut claimants: BTreeMap<Part, Vec<usize>> = BTreeMap::new();
        for (i, m) in members.iter().enumerate() {
            if m.generation < newest {
                continue;
            }
            let owned: BTreeSet<Part> = m
                .owned
                .iter()
                .filter_map(part_of)
                .filter(|&(t, _)| subscribed[i][t])
                .collect();
            for p in owned {
                claimants.entry(p).or_default().push(i);
            }
        }
        let mut kept: Vec<BTreeSet<Part>> = vec![BTreeSet::new(); n];
        for (p, who) in &claimants {
            if let [owner] = who[..] {
                kept[owner].insert(*p);
            }
        }
        // What each member holds, split into partitions it owned before and fresh ones: moving a
        // fresh one costs nobody a revocation.
        let mut held = kept.clone();
        let mut fresh: Vec<BTreeSet<Part>> = vec![BTreeSet::new(); n];

        // 2. Everything else goes to the least loaded subscriber, topics with the fewest
        //    subscribers first so that the most constrained partitions are placed early.
        let mut fill_order: Vec<usize> = (0..topics.len())
            .filter(|&t| !subscribers[t].is_empty())
            .collect();
        fill_order.sort_by_key(|&t| (subscribers[t].len(), t));
        for t in fill_order {
            for p in 0..topics[t].1 {
                if claimants.get(&(t, p)).is_some_and(|who| who.len() == 1) {
                    continue;
                }
                let taker = subscribers[t]
                    .iter()
                    .copied()
                    .min_by_key(|&i| (held[i].len() + fresh[i].len(), i));
                if let Some(i) = taker {
                    fresh[i].insert((t, p));
                }
            }
        }

        // 3. Balance: move one partition at a time from a member to a member with at least two
        //    fewer that can take it. Each move lowers the sum of squared counts, so this ends; at
        //    the end members with the same subscriptions differ by at most one.
        loop {
            let load: Vec<usize> = (0..n).map(|i| held[i].len() + fresh[i].len()).collect();
            let mut by_load: Vec<usize> = (0..n).collect();
            by_load.sort_by_key(|&i| (load[i], i));
            let mut chosen = None;
            'search: for &from in by_load.iter().rev() {
                for &to in &by_load {
                    if load[from] < load[to] + 2 {
                        break;
                    }
                    let candidate = movable(&fresh[from], &topics_of[to])
                        .or_else(|| movable(&held[from], &topics_of[to]));
                    if let Some(p) = candidate {
                        chosen = Some((from, to, p));
                        break 'search;
                    }
                }
            }
            let Some((from, to, p)) = chosen else { break };
            if !fresh[from].remove(&p) {
                held[from].remove(&p);
            }
            // Owners are unique, so `p` was nobody else's: it is fresh for `to`.
            fresh[to].insert(p);
        }

        // 4. The cooperative rule: a partition still owned by someone else is withheld from its
        //    new member until the owner has revoked it. Every claim counts here, stale or not,
        //    since a stale claimant may still be consuming.
        let mut all_claims: BTreeMap<Part, BTreeSet<usize>> = BTreeMap::new();
        for (i, m) in members.iter().enumerate() {
            for p in m.owned.iter().filter_map(part_of) {
                all_claims.entry(p).or_default().insert(i);
            }
        }
        members
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let free = |p: &&Part| {
                    all_claims
                        .get(*p)
                        .is_none_or(|who| who.iter().all(|&j| j == i))
                };
                let mine: BTreeSet<Part> = held[i]
                    .iter()
                    .chain(fresh[i].iter().filter(free))
                    .copied()
                    .collect();
                let list = mine
                    .into_iter()
                    .map(|(t, p)| TopicPartition::new(topics[t].0, p))
                    .collect();
                (m.member_id.clone(), list)
            })
            .collect()
    }
}

/// Picks which of `from`'s partitions to move to a member subscribed to the topics `to_topics`:
/// the highest partition number (Kafka keeps the lowest ones), then the last topic.
fn movable(from: &BTreeSet<Part>, to_topics: &[usize]) -> Option<Part> {
    to_topics
        .iter()
        .filter_map(|&t| from.range((t, i32::MIN)..=(t, i32::MAX)).next_back())
        .max_by_key(|&&(t, p)| (p, t))
        .copied()
}

/// The members with duplicates (same member id) dropped, keeping the first.
fn distinct(members: &[MemberSubscription]) -> Vec<&MemberSubscription> {
    let mut seen = BTreeSet::new();
    members
        .iter()
        .filter(|m| seen.insert(m.member_id.as_str()))
        .collect()
}

fn empty_assignment(members: &[&MemberSubscription]) -> BTreeMap<String, Vec<TopicPartition>> {
    members
        .iter()
        .map(|m| (m.member_id.clone(), Vec::new()))
        .collect()
}

fn sorted(mut out: BTreeMap<String, Vec<TopicPartition>>) -> BTreeMap<String, Vec<TopicPartition>> {
    for list in out.values_mut() {
        list.sort();
        list.dedup();
    }
    out
}

/// A topic's partition count, 0 when unknown or not positive.
fn partition_count(partitions: &BTreeMap<String, i32>, topic: &str) -> i32 {
    partitions.get(topic).copied().unwrap_or(0).max(0)
}

/// Kafka's member order for range and round-robin: members with a `group.instance.id` first,
/// ordered by it, then the others by member id. Strings compare as Java's `String.compareTo`
/// (UTF-16 code units), so Strom and Java leaders order members alike.
fn member_order(a: &MemberSubscription, b: &MemberSubscription) -> Ordering {
    match (&a.group_instance_id, &b.group_instance_id) {
        (Some(x), Some(y)) => java_cmp(x, y),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => java_cmp(&a.member_id, &b.member_id),
    }
}

fn java_cmp(a: &str, b: &str) -> Ordering {
    a.encode_utf16().cmp(b.encode_utf16())
}

/// Encodes a member's JoinGroup protocol metadata (ConsumerProtocolSubscription: i16 version
/// prefix then the struct).
///
/// Written as version 3 (owned partitions, generation and rack), topics and owned partitions
/// sorted and deduplicated, no user data. An empty `rack` is sent as none, as Kafka treats an
/// empty rack.
pub fn encode_subscription(
    topics: &[String],
    owned: &[TopicPartition],
    generation: i32,
    rack: Option<&str>,
) -> Result<Bytes> {
    let topics: BTreeSet<&String> = topics.iter().collect();
    let message = ConsumerProtocolSubscription::default()
        .with_topics(topics.into_iter().map(|t| str_bytes(t)).collect())
        .with_user_data(None)
        .with_owned_partitions(
            group_by_topic(owned)
                .into_iter()
                .map(|(topic, partitions)| {
                    OwnedTopic::default()
                        .with_topic(TopicName(str_bytes(topic)))
                        .with_partitions(partitions)
                })
                .collect(),
        )
        .with_generation_id(generation)
        .with_rack_id(rack.filter(|r| !r.is_empty()).map(str_bytes));
    encode_prefixed(&message, SUBSCRIPTION_VERSION, "consumer subscription")
}

/// Walks a consumer-protocol body (non-flexible versions) checking that every length and count
/// fits in the bytes that remain, before kafka-protocol decodes it: its decoder sizes vectors
/// from wire counts, so a short blob claiming billions of topics would otherwise exhaust memory.
/// Bytes come from other group members, so they are untrusted.
struct Walk<'a> {
    b: &'a [u8],
}

impl Walk<'_> {
    fn take(&mut self, n: usize) -> Option<()> {
        self.b = self.b.get(n..)?;
        Some(())
    }
    fn i16(&mut self) -> Option<i16> {
        let v = i16::from_be_bytes([*self.b.first()?, *self.b.get(1)?]);
        self.take(2).map(|()| v)
    }
    fn i32(&mut self) -> Option<i32> {
        let x = self.b.get(..4)?;
        let v = i32::from_be_bytes([x[0], x[1], x[2], x[3]]);
        self.take(4).map(|()| v)
    }
    fn string(&mut self, nullable: bool) -> Option<()> {
        match self.i16()? {
            -1 if nullable => Some(()),
            n if n >= 0 => self.take(n as usize),
            _ => None,
        }
    }
    fn bytes(&mut self) -> Option<()> {
        match self.i32()? {
            -1 => Some(()),
            n if n >= 0 => self.take(n as usize),
            _ => None,
        }
    }
    /// An array count, refused when even `min_size`-byte elements could not fit.
    fn count(&mut self, min_size: usize) -> Option<usize> {
        let n = usize::try_from(self.i32()?).ok()?;
        (n.checked_mul(min_size)? <= self.b.len()).then_some(n)
    }
    fn topic_partitions(&mut self) -> Option<()> {
        for _ in 0..self.count(6)? {
            self.string(false)?;
            let n = self.count(4)?;
            self.take(n * 4)?;
        }
        Some(())
    }
}

fn subscription_fits(body: &[u8], version: i16) -> bool {
    let mut w = Walk { b: body };
    let ok = (|| {
        for _ in 0..w.count(2)? {
            w.string(false)?;
        }
        w.bytes()?;
        if version >= 1 {
            w.topic_partitions()?;
        }
        if version >= 2 {
            w.i32()?;
        }
        if version >= 3 {
            w.string(true)?;
        }
        Some(())
    })();
    ok.is_some()
}

fn assignment_fits(body: &[u8]) -> bool {
    let mut w = Walk { b: body };
    (|| {
        w.topic_partitions()?;
        w.bytes()
    })()
    .is_some()
}

/// Decodes a member's JoinGroup metadata (any version 0..=3, newer read as 3).
///
/// The generation is the v2+ field when it is set; otherwise, if the user data is exactly four
/// bytes, it is read from there, where Java's cooperative-sticky assignor put it before v2;
/// otherwise -1. An empty rack is no rack. Malformed bytes are an [`Error::Protocol`].
pub fn decode_subscription(
    member_id: &str,
    group_instance_id: Option<&str>,
    metadata: &[u8],
) -> Result<MemberSubscription> {
    let what = format!("subscription of group member {member_id}");
    let (version, mut body) = split_version(metadata, &what)?;
    if !subscription_fits(body, version) {
        return Err(Error::Protocol(format!(
            "{what} (version {version}) is malformed: a length or count runs past its end"
        )));
    }
    let message = ConsumerProtocolSubscription::decode(&mut body, version)
        .map_err(|e| Error::Protocol(format!("{what} (version {version}) is malformed: {e}")))?;
    let generation = if version >= 2 && message.generation_id >= 0 {
        message.generation_id
    } else {
        match message.user_data.as_deref() {
            Some(&[a, b, c, d]) => i32::from_be_bytes([a, b, c, d]),
            _ => -1,
        }
    };
    Ok(MemberSubscription {
        member_id: member_id.to_string(),
        group_instance_id: group_instance_id.map(str::to_string),
        topics: message.topics.iter().map(|t| t.to_string()).collect(),
        owned: message
            .owned_partitions
            .iter()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .map(|&p| TopicPartition::new(t.topic.0.as_str(), p))
            })
            .collect(),
        generation,
        rack: message
            .rack_id
            .filter(|r| !r.is_empty())
            .map(|r| r.to_string()),
    })
}

/// SyncGroup assignment bytes (ConsumerProtocolAssignment, i16 version prefix then the struct),
/// written as version 1 with the partitions grouped by topic, sorted, and no user data.
pub fn encode_assignment(partitions: &[TopicPartition]) -> Result<Bytes> {
    let message = ConsumerProtocolAssignment::default().with_assigned_partitions(
        group_by_topic(partitions)
            .into_iter()
            .map(|(topic, partitions)| {
                AssignedTopic::default()
                    .with_topic(TopicName(str_bytes(topic)))
                    .with_partitions(partitions)
            })
            .collect(),
    );
    encode_prefixed(&message, ASSIGNMENT_VERSION, "consumer assignment")
}

/// Decodes SyncGroup assignment bytes (any version, newer than 3 read as 3), in the order sent.
///
/// Empty bytes are an empty assignment, as Kafka sends to members with nothing. Malformed bytes
/// are an [`Error::Protocol`].
pub fn decode_assignment(bytes: &[u8]) -> Result<Vec<TopicPartition>> {
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    let what = "consumer group assignment";
    let (version, mut body) = split_version(bytes, what)?;
    if !assignment_fits(body) {
        return Err(Error::Protocol(format!(
            "{what} (version {version}) is malformed: a length or count runs past its end"
        )));
    }
    let message = ConsumerProtocolAssignment::decode(&mut body, version)
        .map_err(|e| Error::Protocol(format!("{what} (version {version}) is malformed: {e}")))?;
    Ok(message
        .assigned_partitions
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(|&p| TopicPartition::new(t.topic.0.as_str(), p))
        })
        .collect())
}

fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

/// Sorted partition numbers per topic, duplicates dropped.
fn group_by_topic(partitions: &[TopicPartition]) -> BTreeMap<&str, Vec<i32>> {
    let set: BTreeSet<&TopicPartition> = partitions.iter().collect();
    let mut grouped: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for tp in set {
        grouped
            .entry(tp.topic.as_str())
            .or_default()
            .push(tp.partition);
    }
    grouped
}

fn encode_prefixed<M: Encodable>(message: &M, version: i16, what: &str) -> Result<Bytes> {
    // Encoding only fails on values the wire cannot carry, such as a string over 32767 bytes.
    let cannot = |e: anyhow::Error| Error::Usage(format!("cannot encode the {what}: {e}"));
    let size = message.compute_size(version).map_err(cannot)?;
    let mut buf = BytesMut::with_capacity(2 + size);
    buf.put_i16(version);
    message.encode(&mut buf, version).map_err(cannot)?;
    Ok(buf.freeze())
}

/// Splits off the `int16` version header; versions newer than we know are read as the newest.
fn split_version<'a>(bytes: &'a [u8], what: &str) -> Result<(i16, &'a [u8])> {
    let Some((&[hi, lo], body)) = bytes.split_first_chunk::<2>() else {
        return Err(Error::Protocol(format!(
            "{what} is {} byte(s), too short for its version header",
            bytes.len()
        )));
    };
    let version = i16::from_be_bytes([hi, lo]);
    if version < 0 {
        return Err(Error::Protocol(format!(
            "{what} has negative version {version}"
        )));
    }
    Ok((version.min(NEWEST_READABLE_VERSION), body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::protocol::Message;
    use proptest::prelude::*;

    fn tp(topic: &str, partition: i32) -> TopicPartition {
        TopicPartition::new(topic, partition)
    }

    fn tps(topic: &str, partitions: &[i32]) -> Vec<TopicPartition> {
        partitions.iter().map(|&p| tp(topic, p)).collect()
    }

    fn member(id: &str, topics: &[&str]) -> MemberSubscription {
        MemberSubscription {
            member_id: id.to_string(),
            group_instance_id: None,
            topics: topics.iter().map(|t| t.to_string()).collect(),
            owned: Vec::new(),
            generation: -1,
            rack: None,
        }
    }

    fn owning(
        mut m: MemberSubscription,
        generation: i32,
        owned: Vec<TopicPartition>,
    ) -> MemberSubscription {
        m.generation = generation;
        m.owned = owned;
        m
    }

    fn counts(pairs: &[(&str, i32)]) -> BTreeMap<String, i32> {
        pairs.iter().map(|(t, n)| (t.to_string(), *n)).collect()
    }

    fn concat(parts: &[Vec<TopicPartition>]) -> Vec<TopicPartition> {
        parts.concat()
    }

    #[test]
    fn by_name_knows_kafka_names_and_java_class_names() {
        for (name, class) in [
            ("range", "org.apache.kafka.clients.consumer.RangeAssignor"),
            (
                "roundrobin",
                "org.apache.kafka.clients.consumer.RoundRobinAssignor",
            ),
            (
                "cooperative-sticky",
                "org.apache.kafka.clients.consumer.CooperativeStickyAssignor",
            ),
        ] {
            assert_eq!(by_name(name).map(|a| a.name()), Some(name));
            assert_eq!(by_name(class).map(|a| a.name()), Some(name));
        }
        assert!(by_name("sticky").is_none());
        assert!(by_name("Range").is_none());
        assert_eq!(
            by_name("cooperative-sticky").map(|a| a.protocol()),
            Some(RebalanceProtocol::Cooperative)
        );
        assert_eq!(
            by_name("range").map(|a| a.protocol()),
            Some(RebalanceProtocol::Eager)
        );
        assert_eq!(
            by_name("roundrobin").map(|a| a.protocol()),
            Some(RebalanceProtocol::Eager)
        );
    }

    #[test]
    fn range_two_members_three_and_seven_partitions() {
        let members = [member("c1", &["t0", "t1"]), member("c0", &["t1", "t0"])];
        let got = RangeAssignor.assign(&counts(&[("t0", 3), ("t1", 7)]), &members);
        assert_eq!(got.len(), 2);
        assert_eq!(
            got["c0"],
            concat(&[tps("t0", &[0, 1]), tps("t1", &[0, 1, 2, 3])])
        );
        assert_eq!(got["c1"], concat(&[tps("t0", &[2]), tps("t1", &[4, 5, 6])]));
    }

    #[test]
    fn range_uneven_subscriptions() {
        let members = [
            member("a", &["t1"]),
            member("b", &["t1", "t2"]),
            member("c", &["t2"]),
            member("d", &["elsewhere"]),
        ];
        let got = RangeAssignor.assign(&counts(&[("t1", 3), ("t2", 5)]), &members);
        assert_eq!(got["a"], tps("t1", &[0, 1]));
        assert_eq!(got["b"], concat(&[tps("t1", &[2]), tps("t2", &[0, 1, 2])]));
        assert_eq!(got["c"], tps("t2", &[3, 4]));
        assert_eq!(got["d"], []);
    }

    #[test]
    fn range_orders_static_members_by_instance_id_first() {
        let mut z = member("z", &["t"]);
        z.group_instance_id = Some("i-1".into());
        let mut y = member("y", &["t"]);
        y.group_instance_id = Some("i-2".into());
        let a = member("a", &["t"]);
        let got = RangeAssignor.assign(&counts(&[("t", 5)]), &[a, y, z]);
        assert_eq!(got["z"], tps("t", &[0, 1]));
        assert_eq!(got["y"], tps("t", &[2, 3]));
        assert_eq!(got["a"], tps("t", &[4]));
    }

    #[test]
    fn roundrobin_identical_subscriptions() {
        let members = [member("c0", &["t0", "t1"]), member("c1", &["t0", "t1"])];
        let got = RoundRobinAssignor.assign(&counts(&[("t0", 3), ("t1", 3)]), &members);
        assert_eq!(got["c0"], concat(&[tps("t0", &[0, 2]), tps("t1", &[1])]));
        assert_eq!(got["c1"], concat(&[tps("t0", &[1]), tps("t1", &[0, 2])]));
    }

    #[test]
    fn roundrobin_skips_members_not_subscribed() {
        let members = [
            member("c2", &["t0", "t1", "t2"]),
            member("c0", &["t0"]),
            member("c1", &["t0", "t1"]),
        ];
        let got = RoundRobinAssignor.assign(&counts(&[("t0", 1), ("t1", 2), ("t2", 3)]), &members);
        assert_eq!(got["c0"], tps("t0", &[0]));
        assert_eq!(got["c1"], tps("t1", &[0]));
        assert_eq!(got["c2"], concat(&[tps("t1", &[1]), tps("t2", &[0, 1, 2])]));
    }

    #[test]
    fn topics_without_metadata_are_skipped_and_every_member_is_present() {
        let members = [
            member("a", &["known", "unknown"]),
            member("b", &["unknown"]),
        ];
        let partitions = counts(&[("known", 2)]);
        for assignor in [
            &RangeAssignor as &dyn Assignor,
            &RoundRobinAssignor,
            &CooperativeStickyAssignor,
        ] {
            let got = assignor.assign(&partitions, &members);
            assert_eq!(got["a"], tps("known", &[0, 1]), "{}", assignor.name());
            assert_eq!(got["b"], [], "{}", assignor.name());
        }
    }

    #[test]
    fn sticky_fresh_group_is_balanced() {
        let members = [
            member("a", &["t"]),
            member("b", &["t"]),
            member("c", &["t"]),
        ];
        let got = CooperativeStickyAssignor.assign(&counts(&[("t", 7)]), &members);
        let sizes: Vec<usize> = got.values().map(Vec::len).collect();
        assert_eq!(sizes, [3, 2, 2]);
        let all: BTreeSet<&TopicPartition> = got.values().flatten().collect();
        assert_eq!(all.len(), 7);
    }

    #[test]
    fn sticky_third_member_joins() {
        let a_owned = tps("t", &[0, 1, 2]);
        let b_owned = tps("t", &[3, 4, 5]);
        let partitions = counts(&[("t", 6)]);
        let round1 = [
            owning(member("a", &["t"]), 4, a_owned.clone()),
            owning(member("b", &["t"]), 4, b_owned.clone()),
            member("c", &["t"]),
        ];
        let got = CooperativeStickyAssignor.assign(&partitions, &round1);
        // The old members keep all but one partition each; the moved ones are withheld from the
        // newcomer until their owners have revoked them.
        assert_eq!(got["a"], tps("t", &[0, 1]));
        assert_eq!(got["b"], tps("t", &[3, 4]));
        assert_eq!(got["c"], []);

        // The follow-up rebalance after a and b revoked: c gets the released partitions and
        // nobody else moves.
        let round2 = [
            owning(member("a", &["t"]), 5, got["a"].clone()),
            owning(member("b", &["t"]), 5, got["b"].clone()),
            owning(member("c", &["t"]), 5, Vec::new()),
        ];
        let got2 = CooperativeStickyAssignor.assign(&partitions, &round2);
        assert_eq!(got2["a"], tps("t", &[0, 1]));
        assert_eq!(got2["b"], tps("t", &[3, 4]));
        assert_eq!(got2["c"], tps("t", &[2, 5]));
    }

    #[test]
    fn sticky_keeps_ownership_when_a_topic_grows() {
        let partitions = counts(&[("t", 6)]);
        let members = [
            owning(member("a", &["t"]), 2, tps("t", &[0, 2])),
            owning(member("b", &["t"]), 2, tps("t", &[1, 3])),
        ];
        let got = CooperativeStickyAssignor.assign(&partitions, &members);
        assert_eq!(got["a"], tps("t", &[0, 2, 4]));
        assert_eq!(got["b"], tps("t", &[1, 3, 5]));
    }

    #[test]
    fn sticky_generation_conflicts() {
        let partitions = counts(&[("t", 6)]);
        let members = [
            // a and c are in the newest generation; b's claims are from an older one.
            owning(member("a", &["t"]), 3, tps("t", &[0, 1])),
            owning(member("b", &["t"]), 2, tps("t", &[0, 2, 3])),
            owning(member("c", &["t"]), 3, tps("t", &[1, 4])),
        ];
        let got = CooperativeStickyAssignor.assign(&partitions, &members);
        // t-0: a (generation 3) beats b (generation 2) and keeps it.
        assert!(got["a"].contains(&tp("t", 0)));
        // t-1: claimed by a and c in the same generation, so neither keeps it, and whoever gets
        // it must wait for the other claimant to revoke it.
        assert!(got.values().flatten().all(|p| p != &tp("t", 1)));
        // c's uncontested claim stands.
        assert!(got["c"].contains(&tp("t", 4)));
        // b's stale claims gave it no stickiness, and nobody else may take them while b may
        // still be consuming them.
        for p in [2, 3] {
            let holders: Vec<&String> = got
                .iter()
                .filter(|(_, v)| v.contains(&tp("t", p)))
                .map(|(k, _)| k)
                .collect();
            assert!(
                holders.is_empty() || holders == ["b"],
                "t-{p} went to {holders:?}"
            );
        }
        assert_eq!(got["a"], tps("t", &[0]));
        assert_eq!(got["b"], tps("t", &[3]));
        assert_eq!(got["c"], tps("t", &[4, 5]));
    }

    #[test]
    fn sticky_moves_fresh_partitions_before_owned_ones() {
        // x is filled before y (both have two subscribers), so a gets x-4 and then most of y,
        // and has to hand one x partition to b: the fresh x-4 rather than an owned one.
        let partitions = counts(&[("x", 6), ("y", 8)]);
        let members = [
            owning(member("a", &["x", "y"]), 1, tps("x", &[0, 1])),
            owning(member("b", &["x"]), 1, tps("x", &[2, 3])),
            owning(member("c", &["y"]), 1, tps("y", &[0, 1, 2, 3])),
        ];
        let got = CooperativeStickyAssignor.assign(&partitions, &members);
        assert_eq!(got["a"], concat(&[tps("x", &[0, 1]), tps("y", &[4, 5, 7])]));
        assert_eq!(got["b"], tps("x", &[2, 3, 4, 5]));
        assert_eq!(got["c"], tps("y", &[0, 1, 2, 3, 6]));
    }

    #[test]
    fn sticky_places_the_most_constrained_topics_first() {
        // Balancing moves one partition between two members sharing a topic, so it cannot repair
        // an excess that would have to travel c -> d -> a. Placing t1 (fewer subscribers) before
        // t0 avoids creating one: d is full of t1 before t0 is dealt.
        let partitions = counts(&[("t0", 3), ("t1", 4)]);
        let members = [
            member("a", &["t0"]),
            member("b", &["t0"]),
            member("c", &["t1"]),
            member("d", &["t0", "t1"]),
        ];
        let got = CooperativeStickyAssignor.assign(&partitions, &members);
        assert_eq!(got["a"], tps("t0", &[0, 2]));
        assert_eq!(got["b"], tps("t0", &[1]));
        assert_eq!(got["c"], tps("t1", &[0, 2]));
        assert_eq!(got["d"], tps("t1", &[1, 3]));
    }

    #[test]
    fn sticky_drops_claims_on_unsubscribed_topics() {
        let partitions = counts(&[("t", 2), ("u", 2)]);
        let members = [
            owning(
                member("a", &["t"]),
                1,
                concat(&[tps("t", &[0, 1]), tps("u", &[0])]),
            ),
            owning(member("b", &["u"]), 1, Vec::new()),
        ];
        let got = CooperativeStickyAssignor.assign(&partitions, &members);
        assert_eq!(got["a"], tps("t", &[0, 1]));
        // u-0 is still a's until it revokes it; u-1 is free.
        assert_eq!(got["b"], tps("u", &[1]));
    }

    /// Topics with partition counts, and members with subscriptions (as indices into the topics).
    fn group() -> impl Strategy<Value = (Vec<i32>, Vec<Vec<usize>>)> {
        prop::collection::vec(0..9_i32, 1..4).prop_flat_map(|topics| {
            let n = topics.len();
            let subscription = prop::collection::btree_set(0..n, 1..=n)
                .prop_map(|s| s.into_iter().collect::<Vec<_>>());
            (Just(topics), prop::collection::vec(subscription, 1..7))
        })
    }

    fn build(
        topics: &[i32],
        subs: &[Vec<usize>],
    ) -> (BTreeMap<String, i32>, Vec<MemberSubscription>) {
        let partitions = topics
            .iter()
            .enumerate()
            .map(|(i, &n)| (format!("t{i}"), n))
            .collect();
        let members = subs
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let names: Vec<String> = s.iter().map(|t| format!("t{t}")).collect();
                let names: Vec<&str> = names.iter().map(String::as_str).collect();
                member(&format!("m{i}"), &names)
            })
            .collect();
        (partitions, members)
    }

    /// Each partition at most once, only to subscribers, only existing partitions, lists sorted.
    fn check_valid(
        partitions: &BTreeMap<String, i32>,
        members: &[MemberSubscription],
        got: &BTreeMap<String, Vec<TopicPartition>>,
    ) -> std::result::Result<(), TestCaseError> {
        prop_assert_eq!(got.len(), members.len());
        let mut seen = BTreeSet::new();
        for m in members {
            let list = &got[&m.member_id];
            prop_assert!(list.windows(2).all(|w| w[0] < w[1]), "unsorted {:?}", list);
            for p in list {
                prop_assert!(seen.insert(p.clone()), "{} assigned twice", p);
                prop_assert!(
                    m.topics.contains(&p.topic),
                    "{} given to non-subscriber {}",
                    p,
                    m.member_id
                );
                prop_assert!(p.partition >= 0 && p.partition < partitions[&p.topic]);
            }
        }
        Ok(())
    }

    /// Everything subscribed is assigned, and members with equal subscriptions differ by <= 1.
    fn check_complete_and_balanced(
        partitions: &BTreeMap<String, i32>,
        members: &[MemberSubscription],
        got: &BTreeMap<String, Vec<TopicPartition>>,
    ) -> std::result::Result<(), TestCaseError> {
        let subscribed: BTreeSet<&String> = members.iter().flat_map(|m| &m.topics).collect();
        let expected: i32 = subscribed.iter().map(|t| partitions[*t]).sum();
        let total: usize = got.values().map(Vec::len).sum();
        prop_assert_eq!(total, expected as usize);
        for a in members {
            for b in members {
                let (mut sa, mut sb) = (a.topics.clone(), b.topics.clone());
                sa.sort();
                sb.sort();
                if sa == sb {
                    let (na, nb) = (got[&a.member_id].len(), got[&b.member_id].len());
                    prop_assert!(
                        na.abs_diff(nb) <= 1,
                        "{} has {}, {} has {}",
                        a.member_id,
                        na,
                        b.member_id,
                        nb
                    );
                }
            }
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn sticky_fresh_assignment_is_valid_complete_and_balanced((topics, subs) in group()) {
            let (partitions, members) = build(&topics, &subs);
            let got = CooperativeStickyAssignor.assign(&partitions, &members);
            check_valid(&partitions, &members, &got)?;
            check_complete_and_balanced(&partitions, &members, &got)?;
            // Deterministic, whatever order the members arrive in.
            let mut reversed = members.clone();
            reversed.reverse();
            prop_assert_eq!(CooperativeStickyAssignor.assign(&partitions, &reversed), got);
        }

        #[test]
        fn sticky_never_gives_a_partition_someone_else_still_owns(
            (topics, subs) in group(),
            claims in prop::collection::vec((0..7_usize, 0..3_usize, 0..9_i32, 0..3_i32), 0..30),
        ) {
            let (partitions, mut members) = build(&topics, &subs);
            for (m, t, p, generation) in claims {
                if let Some(member) = members.get_mut(m % subs.len()) {
                    member.owned.push(tp(&format!("t{}", t % topics.len()), p));
                    member.generation = generation;
                }
            }
            let got = CooperativeStickyAssignor.assign(&partitions, &members);
            check_valid(&partitions, &members, &got)?;
            for m in &members {
                for p in &got[&m.member_id] {
                    if m.owned.contains(p) {
                        continue;
                    }
                    let owner = members.iter().find(|o| o.member_id != m.member_id && o.owned.contains(p));
                    prop_assert!(owner.is_none(), "{} moved to {} while {:?} owns it", p, m.member_id, owner);
                }
            }
        }

        #[test]
        fn sticky_converges_in_two_rounds(
            partition_count in 0..20_i32,
            n in 1..6_usize,
            owners in prop::collection::vec(0..8_usize, 20),
        ) {
            let partitions = counts(&[("t", partition_count)]);
            // A previous assignment from some other leader: disjoint, possibly unbalanced, some
            // owners gone (indices past n) and a newcomer or two.
            let mut members: Vec<MemberSubscription> = (0..n).map(|i| owning(member(&format!("m{i}"), &["t"]), 7, Vec::new())).collect();
            for (p, &o) in (0..partition_count).zip(&owners) {
                if let Some(m) = members.get_mut(o) {
                    m.owned.push(tp("t", p));
                }
            }
            let round1 = CooperativeStickyAssignor.assign(&partitions, &members);
            check_valid(&partitions, &members, &round1)?;
            // Nobody loses a partition it owned beyond what balance requires.
            let quota = (partition_count as usize).div_ceil(n);
            for m in &members {
                let kept = round1[&m.member_id].iter().filter(|p| m.owned.contains(p)).count();
                prop_assert!(kept >= m.owned.len().min(partition_count as usize / n), "{} kept {}", m.member_id, kept);
                prop_assert!(round1[&m.member_id].len() <= quota);
            }
            for m in &mut members {
                m.owned = round1[&m.member_id].clone();
                m.generation = 8;
            }
            let round2 = CooperativeStickyAssignor.assign(&partitions, &members);
            check_valid(&partitions, &members, &round2)?;
            check_complete_and_balanced(&partitions, &members, &round2)?;
            for m in &members {
                prop_assert!(m.owned.iter().all(|p| round2[&m.member_id].contains(p)), "{} lost a partition in round 2", m.member_id);
            }
        }

        #[test]
        fn range_and_roundrobin_are_valid_and_complete((topics, subs) in group()) {
            let (partitions, members) = build(&topics, &subs);
            for assignor in [&RangeAssignor as &dyn Assignor, &RoundRobinAssignor] {
                let got = assignor.assign(&partitions, &members);
                check_valid(&partitions, &members, &got)?;
                let subscribed: BTreeSet<&String> = members.iter().flat_map(|m| &m.topics).collect();
                let expected: i32 = subscribed.iter().map(|t| partitions[*t]).sum();
                prop_assert_eq!(got.values().map(Vec::len).sum::<usize>(), expected as usize);
            }
        }

        #[test]
        fn subscription_round_trips(
            topics in prop::collection::btree_set("[a-z0-9._-]{1,12}", 0..5),
            owned in prop::collection::btree_set(("[a-z]{1,3}", 0..100_i32), 0..10),
            generation in -1..1000_i32,
            rack in proptest::option::of("[a-z0-9-]{1,8}"),
        ) {
            let topics: Vec<String> = topics.into_iter().collect();
            let owned: Vec<TopicPartition> = owned.into_iter().map(|(t, p)| tp(&t, p)).collect();
            let bytes = encode_subscription(&topics, &owned, generation, rack.as_deref())?;
            let got = decode_subscription("m-1", Some("static-1"), &bytes)?;
            prop_assert_eq!(got, MemberSubscription {
                member_id: "m-1".into(),
                group_instance_id: Some("static-1".into()),
                topics,
                owned,
                generation,
                rack,
            });
        }

        #[test]
        fn assignment_round_trips(parts in prop::collection::btree_set(("[a-z]{1,3}", 0..100_i32), 0..20)) {
            let parts: Vec<TopicPartition> = parts.into_iter().map(|(t, p)| tp(&t, p)).collect();
            prop_assert_eq!(decode_assignment(&encode_assignment(&parts)?)?, parts);
        }
    }

    #[test]
    fn subscription_is_written_as_the_newest_version_kafka_protocol_knows() {
        assert_eq!(
            SUBSCRIPTION_VERSION,
            ConsumerProtocolSubscription::VERSIONS.max
        );
        assert_eq!(
            NEWEST_READABLE_VERSION,
            ConsumerProtocolSubscription::VERSIONS.max
        );
        assert_eq!(
            NEWEST_READABLE_VERSION,
            ConsumerProtocolAssignment::VERSIONS.max
        );
        let bytes = encode_subscription(&["t".into()], &[], 5, Some("r1")).unwrap();
        assert_eq!(&bytes[..2], &[0, 3]);
    }

    #[test]
    fn subscription_encoding_sorts_and_drops_empty_rack() {
        let topics = vec!["b".to_string(), "a".to_string(), "b".to_string()];
        let owned = [tp("y", 2), tp("x", 1), tp("y", 0)];
        let bytes = encode_subscription(&topics, &owned, 9, Some("")).unwrap();
        // The rack is the last field: a null string.
        assert_eq!(&bytes[bytes.len() - 2..], &[0xff, 0xff]);
        let got = decode_subscription("m", None, &bytes).unwrap();
        assert_eq!(got.topics, ["a", "b"]);
        assert_eq!(got.owned, [tp("x", 1), tp("y", 0), tp("y", 2)]);
        assert_eq!(got.generation, 9);
        assert_eq!(got.rack, None);
        assert_eq!(got.group_instance_id, None);
    }

    /// The exact bytes a Java consumer reads: version 1, one topic with two partitions, null
    /// user data.
    #[test]
    fn assignment_wire_bytes() {
        let bytes = encode_assignment(&[tp("t", 2), tp("t", 0)]).unwrap();
        let expected: &[u8] = &[
            0, 1, // version
            0, 0, 0, 1, // one topic
            0, 1, b't', // "t"
            0, 0, 0, 2, // two partitions
            0, 0, 0, 0, // 0
            0, 0, 0, 2, // 2
            0xff, 0xff, 0xff, 0xff, // null user data
        ];
        assert_eq!(&bytes[..], expected);
    }

    fn prefixed<M: Encodable>(message: &M, version: i16) -> Vec<u8> {
        let mut buf = version.to_be_bytes().to_vec();
        message.encode(&mut buf, version).unwrap();
        buf
    }

    #[test]
    fn decodes_a_v0_subscription_written_by_kafka_protocol() {
        let message = ConsumerProtocolSubscription::default().with_topics(vec![
            StrBytes::from_static_str("orders"),
            StrBytes::from_static_str("audit"),
        ]);
        let got = decode_subscription("m-7", Some("i-7"), &prefixed(&message, 0)).unwrap();
        assert_eq!(
            got,
            MemberSubscription {
                member_id: "m-7".into(),
                group_instance_id: Some("i-7".into()),
                topics: vec!["orders".into(), "audit".into()],
                owned: Vec::new(),
                generation: -1,
                rack: None,
            }
        );
    }

    #[test]
    fn decodes_the_generation_from_old_cooperative_sticky_user_data() {
        let message = ConsumerProtocolSubscription::default()
            .with_topics(vec![StrBytes::from_static_str("t")])
            .with_user_data(Some(Bytes::from_static(&[0, 0, 0, 42])))
            .with_owned_partitions(vec![OwnedTopic::default()
                .with_topic(TopicName(StrBytes::from_static_str("t")))
                .with_partitions(vec![3, 1])]);
        let got = decode_subscription("m", None, &prefixed(&message, 1)).unwrap();
        assert_eq!(got.generation, 42);
        assert_eq!(got.owned, [tp("t", 3), tp("t", 1)]);
        // From v2 on the field wins over user data.
        let got = decode_subscription(
            "m",
            None,
            &prefixed(&message.clone().with_generation_id(7), 2),
        )
        .unwrap();
        assert_eq!(got.generation, 7);
        // Other user data (for instance librdkafka's sticky format) is not a generation.
        let other = message.with_user_data(Some(Bytes::from_static(&[0, 0, 0, 0, 0, 0, 0, 9])));
        assert_eq!(
            decode_subscription("m", None, &prefixed(&other, 1))
                .unwrap()
                .generation,
            -1
        );
    }

    #[test]
    fn newer_versions_are_read_as_the_newest_known() {
        let message = ConsumerProtocolSubscription::default()
            .with_topics(vec![StrBytes::from_static_str("t")])
            .with_generation_id(4)
            .with_rack_id(Some(StrBytes::from_static_str("az-1")));
        let mut bytes = prefixed(&message, 3);
        bytes[1] = 9; // version 9, with a field we do not know appended
        bytes.extend_from_slice(&[1, 2, 3]);
        let got = decode_subscription("m", None, &bytes).unwrap();
        assert_eq!(got.topics, ["t"]);
        assert_eq!(got.generation, 4);
        assert_eq!(got.rack.as_deref(), Some("az-1"));

        let mut assignment = encode_assignment(&[tp("t", 1)]).unwrap().to_vec();
        assignment[1] = 5;
        assert_eq!(decode_assignment(&assignment).unwrap(), [tp("t", 1)]);
    }

    #[test]
    fn empty_assignment_bytes_are_an_empty_assignment() {
        assert_eq!(decode_assignment(&[]).unwrap(), []);
        assert_eq!(
            decode_assignment(&encode_assignment(&[]).unwrap()).unwrap(),
            []
        );
        // Version 0, as older clients write it.
        let v0 = prefixed(
            &ConsumerProtocolAssignment::default().with_assigned_partitions(vec![
                AssignedTopic::default()
                    .with_topic(TopicName(StrBytes::from_static_str("t")))
                    .with_partitions(vec![0]),
            ]),
            0,
        );
        assert_eq!(decode_assignment(&v0).unwrap(), [tp("t", 0)]);
    }

    #[test]
    fn malformed_bytes_are_protocol_errors() {
        let good_sub = encode_subscription(&["topic".into()], &[tp("topic", 1)], 3, None).unwrap();
        let good_assignment = encode_assignment(&[tp("topic", 1)]).unwrap();
        let bad_subs: [&[u8]; 4] = [
            &[],
            &[0],
            &[0xff, 0xff, 0, 0, 0, 0],
            &good_sub[..good_sub.len() - 3],
        ];
        for bytes in bad_subs {
            let err = decode_subscription("m", None, bytes).unwrap_err();
            assert!(matches!(err, Error::Protocol(_)), "{bytes:?}: {err:?}");
        }
        let bad_assignments: [&[u8]; 3] = [
            &[0],
            &[0x80, 0],
            &good_assignment[..good_assignment.len() - 5],
        ];
        for bytes in bad_assignments {
            let err = decode_assignment(bytes).unwrap_err();
            assert!(matches!(err, Error::Protocol(_)), "{bytes:?}: {err:?}");
        }
    }

    #[test]
    fn huge_counts_in_short_blobs_are_refused_without_allocating() {
        // version 0, then a topic count of 2^31 - 1 in six bytes.
        let blob = [0u8, 0, 0x7f, 0xff, 0xff, 0xff];
        assert!(decode_subscription("m", None, &blob).is_err());
        assert!(decode_assignment(&blob).is_err());
        let blob = [0u8, 1, 0, 0, 0, 1, 0, 1, b't', 0x7f, 0xff, 0xff, 0xff];
        assert!(decode_assignment(&blob).is_err());
    }
}
