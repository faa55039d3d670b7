//! The consumer-group coordinator end to end with librdkafka consumers (the `rdkafka` crate):
//! partition assignment across members, a member that dies without leaving, idle members taking
//! over, independent groups, committed offsets across a broker restart, cooperative-sticky
//! incremental rebalances and static membership.
//!
//! The broker runs on a tokio runtime owned by the test; the test body itself is synchronous and
//! drives `BaseConsumer`s by polling them in a loop (which also serves their rebalance callbacks).
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use common::{kafka, sb, RawClient, TestBroker};
use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition as AssignedTopic;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    ConsumerProtocolAssignment, ConsumerProtocolSubscription, GroupId, JoinGroupRequest,
    OffsetFetchRequest, SyncGroupRequest, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable};
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::message::Message;
use rdkafka::producer::FutureRecord;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use strom::broker::BrokerConfig;

// ---------------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------------

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Short group timeouts so that rebalances take well under a second.
fn fast_groups(c: &mut BrokerConfig) {
    c.group_min_session_timeout_ms = 500;
    c.group_initial_rebalance_delay_ms = 300;
}

fn start(
    rt: &tokio::runtime::Runtime,
    dir: &Path,
    tweak: impl FnOnce(&mut BrokerConfig),
) -> TestBroker {
    rt.block_on(TestBroker::start(dir, tweak))
}

fn create_topic(rt: &tokio::runtime::Runtime, bootstrap: &str, name: &str, partitions: i32) {
    rt.block_on(kafka::create_topic(bootstrap, name, partitions));
}

/// Produces `n` keyed records whose values are `{tag}-{i}`; returns value -> (partition, offset).
/// With `partition`, every record goes there.
fn produce(
    rt: &tokio::runtime::Runtime,
    bootstrap: &str,
    topic: &str,
    tag: &str,
    n: usize,
    partition: Option<i32>,
) -> BTreeMap<String, (i32, i64)> {
    rt.block_on(async {
        let p = kafka::future_producer(bootstrap, &[("message.timeout.ms", "30000")]);
        let mut pending = Vec::with_capacity(n);
        for i in 0..n {
            let value = format!("{tag}-{i}");
            let key = format!("k{}", i % 97);
            let mut rec = FutureRecord::to(topic).key(&key).payload(&value);
            if let Some(part) = partition {
                rec = rec.partition(part);
            }
            let fut = p.send_result(rec).map_err(|(e, _)| e).unwrap();
            pending.push((value, fut));
        }
        let mut out = BTreeMap::new();
        for (value, fut) in pending {
            let d = fut.await.unwrap().map_err(|(e, _)| e).unwrap();
            out.insert(value, (d.partition, d.offset));
        }
        out
    })
}

/// A rebalance event seen by a consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Event {
    Assign(BTreeSet<i32>),
    Revoke(BTreeSet<i32>),
    Error(String),
}

/// Records every rebalance callback; the default rebalance handling (eager or incremental
/// assign/unassign) still runs.
struct Recorder {
    events: Arc<Mutex<Vec<Event>>>,
}

impl ClientContext for Recorder {}

fn partitions_of(tpl: &TopicPartitionList) -> BTreeSet<i32> {
    tpl.elements().iter().map(|e| e.partition()).collect()
}

impl ConsumerContext for Recorder {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let e = match rebalance {
            Rebalance::Assign(tpl) => Event::Assign(partitions_of(tpl)),
            Rebalance::Revoke(tpl) => Event::Revoke(partitions_of(tpl)),
            Rebalance::Error(e) => Event::Error(e.to_string()),
        };
        self.events.lock().unwrap().push(e);
    }
}

/// A record as consumed: (partition, offset, value).
type Got = (i32, i64, String);

/// One librdkafka consumer in a group, with everything it has consumed.
struct Member {
    name: String,
    c: BaseConsumer<Recorder>,
    events: Arc<Mutex<Vec<Event>>>,
    got: Vec<Got>,
    /// Commit (synchronously) after processing each record.
    commit: bool,
    commit_errors: usize,
}

impl Member {
    fn new(bootstrap: &str, group: &str, topic: &str, name: &str, extra: &[(&str, &str)]) -> Self {
        let events = Arc::new(Mutex::new(Vec::new()));
        let mut cfg = ClientConfig::new();
        cfg.set("bootstrap.servers", bootstrap)
            .set("group.id", group)
            .set("client.id", name)
            .set("session.timeout.ms", "2000")
            .set("heartbeat.interval.ms", "200")
            .set("max.poll.interval.ms", "10000")
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("fetch.wait.max.ms", "50")
            .set("topic.metadata.refresh.interval.ms", "1000");
        for (k, v) in extra {
            cfg.set(*k, *v);
        }
        let c: BaseConsumer<Recorder> = cfg
            .create_with_context(Recorder {
                events: events.clone(),
            })
            .unwrap();
        c.subscribe(&[topic]).unwrap();
        Member {
            name: name.to_string(),
            c,
            events,
            got: Vec::new(),
            commit: false,
            commit_errors: 0,
        }
    }

    /// Polls once with `wait`, then drains what is already buffered.
    fn pump(&mut self, wait: Duration) {
        let mut timeout = wait;
        for _ in 0..2000 {
            match self.c.poll(timeout) {
                None => return,
                Some(Err(e)) => {
                    eprintln!("[{}] consumer error: {e}", self.name);
                    return;
                }
                Some(Ok(m)) => {
                    let value =
                        String::from_utf8(m.payload().unwrap_or_default().to_vec()).unwrap();
                    self.got.push((m.partition(), m.offset(), value));
                    if self.commit && self.c.commit_message(&m, CommitMode::Sync).is_err() {
                        self.commit_errors += 1;
                    }
                }
            }
            timeout = Duration::ZERO;
        }
    }

    /// The partitions currently assigned.
    fn owned(&self) -> BTreeSet<i32> {
        partitions_of(&self.c.assignment().unwrap())
    }

    fn events(&self) -> Vec<Event> {
        self.events.lock().unwrap().clone()
    }
}

fn describe(members: &[Member]) -> String {
    members
        .iter()
        .map(|m| format!("{}={:?}", m.name, m.owned()))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Polls every member until `done` holds; panics with the assignments after `limit`.
fn pump_until(
    members: &mut [Member],
    limit: Duration,
    what: &str,
    mut done: impl FnMut(&[Member]) -> bool,
) -> Duration {
    let start = Instant::now();
    loop {
        for m in members.iter_mut() {
            m.pump(Duration::from_millis(20));
        }
        if done(members) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "{what}: not reached within {limit:?}; assignments: {}",
            describe(members)
        );
    }
}

/// Polls every member for `d`.
fn pump_for(members: &mut [Member], d: Duration) {
    let start = Instant::now();
    while start.elapsed() < d {
        for m in members.iter_mut() {
            m.pump(Duration::from_millis(20));
        }
    }
}

/// Whether the members' assignments are pairwise disjoint and together are exactly 0..n.
fn partitioned(members: &[Member], n: i32) -> bool {
    let mut all = BTreeSet::new();
    let mut total = 0;
    for m in members {
        let o = m.owned();
        total += o.len();
        all.extend(o);
    }
    total == n as usize && all == (0..n).collect()
}

/// (state, generation, member count, protocol) of a group on the broker.
fn group_state(b: &TestBroker, group: &str) -> Option<(String, i32, usize, Option<String>)> {
    b.broker.groups().read(|m| {
        m.group(group).map(|g| {
            (
                g.state.name().to_string(),
                g.generation,
                g.members.len(),
                g.protocol.clone(),
            )
        })
    })
}

fn stable_with(b: &TestBroker, group: &str, members: usize) -> bool {
    matches!(group_state(b, group), Some((s, _, n, _)) if s == "Stable" && n == members)
}

fn consumed_values<'a>(members: impl IntoIterator<Item = &'a Member>) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for m in members {
        for (_, _, v) in &m.got {
            *seen.entry(v.clone()).or_insert(0) += 1;
        }
    }
    seen
}

// ---------------------------------------------------------------------------------------------
// A raw-protocol member (for a member that dies without leaving)
// ---------------------------------------------------------------------------------------------

fn encode_assignment(topic: &str, partitions: Vec<i32>) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(0);
    ConsumerProtocolAssignment::default()
        .with_assigned_partitions(if partitions.is_empty() {
            Vec::new()
        } else {
            vec![AssignedTopic::default()
                .with_topic(TopicName(sb(topic)))
                .with_partitions(partitions)]
        })
        .encode(&mut b, 0)
        .unwrap();
    b.freeze()
}

fn decode_assignment(mut b: Bytes) -> BTreeSet<i32> {
    if b.len() < 2 {
        return BTreeSet::new();
    }
    let version = b.get_i16();
    let a = ConsumerProtocolAssignment::decode(&mut b, version).unwrap();
    a.assigned_partitions
        .into_iter()
        .flat_map(|t| t.partitions)
        .collect()
}

/// What the raw member saw before it went silent.
struct RawOutcome {
    member_id: String,
    generation: i32,
    leader: bool,
    /// Members in the generation it completed (only known if it was the leader).
    members: usize,
    assigned: BTreeSet<i32>,
    silent_since: Instant,
}

/// Joins `group` over the raw protocol (JoinGroup v5 twice for KIP-394, SyncGroup v3), then
/// drops the connection without LeaveGroup or heartbeats.
async fn raw_member_then_die(
    addr: std::net::SocketAddr,
    group: &str,
    topic: &str,
    partitions: i32,
) -> RawOutcome {
    let mut c = RawClient::connect(addr).await;
    let mut meta = BytesMut::new();
    meta.put_i16(0);
    ConsumerProtocolSubscription::default()
        .with_topics(vec![sb(topic)])
        .encode(&mut meta, 0)
        .unwrap();
    let meta = meta.freeze();
    let join = |member_id: &str| {
        JoinGroupRequest::default()
            .with_group_id(GroupId(sb(group)))
            .with_session_timeout_ms(1500)
            .with_rebalance_timeout_ms(1500)
            .with_member_id(sb(member_id))
            .with_protocol_type(sb("consumer"))
            .with_protocols(vec![JoinGroupRequestProtocol::default()
                .with_name(sb("range"))
                .with_metadata(meta.clone())])
    };
    let first = c.call(&join(""), 5).await;
    assert_eq!(first.error_code, 79, "first JoinGroup: MEMBER_ID_REQUIRED");
    let member_id = first.member_id.to_string();
    assert!(!member_id.is_empty());
    for _attempt in 0..5 {
        let joined = c.call(&join(&member_id), 5).await;
        assert_eq!(joined.error_code, 0, "JoinGroup with the given member id");
        assert_eq!(joined.member_id.as_str(), member_id);
        let leader = joined.leader.as_str() == member_id;
        let assignments = if leader {
            joined
                .members
                .iter()
                .map(|m| {
                    let mine = m.member_id.as_str() == member_id;
                    SyncGroupRequestAssignment::default()
                        .with_member_id(m.member_id.clone())
                        .with_assignment(encode_assignment(
                            topic,
                            if mine {
                                (0..partitions).collect()
                            } else {
                                Vec::new()
                            },
                        ))
                })
                .collect()
        } else {
            Vec::new()
        };
        let sync = c
            .call(
                &SyncGroupRequest::default()
                    .with_group_id(GroupId(sb(group)))
                    .with_generation_id(joined.generation_id)
                    .with_member_id(sb(&member_id))
                    .with_assignments(assignments),
                3,
            )
            .await;
        if sync.error_code == 27 {
            // REBALANCE_IN_PROGRESS: someone joined between our join and sync; rejoin.
            continue;
        }
        assert_eq!(sync.error_code, 0, "SyncGroup");
        let assigned = decode_assignment(sync.assignment);
        drop(c);
        return RawOutcome {
            member_id,
            generation: joined.generation_id,
            leader,
            members: joined.members.len(),
            assigned,
            silent_since: Instant::now(),
        };
    }
    panic!("raw member never completed a rebalance");
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[test]
fn three_consumers_split_six_partitions() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let b = start(&rt, dir.path(), fast_groups);
    let bs = b.bootstrap();
    create_topic(&rt, &bs, "split", 6);

    let mut ms: Vec<Member> = (0..3)
        .map(|i| Member::new(&bs, "g-split", "split", &format!("c{i}"), &[]))
        .collect();
    let took = pump_until(&mut ms, Duration::from_secs(30), "3 x 2 partitions", |ms| {
        partitioned(ms, 6)
            && ms.iter().all(|m| m.owned().len() == 2)
            && stable_with(&b, "g-split", 3)
    });
    eprintln!("three consumers settled in {took:?}: {}", describe(&ms));
    let (_, generation, _, protocol) = group_state(&b, "g-split").unwrap();
    let assignments: Vec<BTreeSet<i32>> = ms.iter().map(Member::owned).collect();

    const N: usize = 3000;
    let produced = produce(&rt, &bs, "split", "r", N, None);
    assert_eq!(produced.len(), N);
    pump_until(
        &mut ms,
        Duration::from_secs(30),
        "all records consumed",
        |ms| ms.iter().map(|m| m.got.len()).sum::<usize>() >= N,
    );
    // Nothing more arrives.
    pump_for(&mut ms, Duration::from_millis(500));

    let mut seen: BTreeMap<(i32, i64), String> = BTreeMap::new();
    for (m, owned) in ms.iter().zip(&assignments) {
        for (p, o, v) in &m.got {
            assert!(
                owned.contains(p),
                "{} got partition {p} it does not own",
                m.name
            );
            assert!(
                seen.insert((*p, *o), v.clone()).is_none(),
                "{p}/{o} consumed twice"
            );
        }
    }
    assert_eq!(seen.len(), N, "each record exactly once across the group");
    for (v, (p, o)) in &produced {
        assert_eq!(seen.get(&(*p, *o)), Some(v), "record {v} at {p}/{o}");
    }
    // No rebalance happened while consuming.
    assert_eq!(
        group_state(&b, "g-split").unwrap(),
        ("Stable".to_string(), generation, 3, protocol)
    );
    assert_eq!(
        ms.iter().map(Member::owned).collect::<Vec<_>>(),
        assignments
    );
    drop(ms);
    rt.block_on(b.stop());
}

#[test]
fn dead_member_partitions_move_after_session_timeout() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    // A longer initial delay so the raw member and both rdkafka consumers land in one generation.
    let b = start(&rt, dir.path(), |c| {
        fast_groups(c);
        c.group_initial_rebalance_delay_ms = 1000;
    });
    // The leader is the first member id in order; ids start with the client id, and the raw
    // member's client id is "strom-test". So "c*" consumers make it a follower, "z*" the leader.
    dead_member_scenario(&rt, &b, "g-dead-follower", "dead-f", "c");
    dead_member_scenario(&rt, &b, "g-dead-leader", "dead-l", "z");
    rt.block_on(b.stop());
}

fn dead_member_scenario(
    rt: &tokio::runtime::Runtime,
    b: &TestBroker,
    group: &'static str,
    topic: &'static str,
    client_prefix: &str,
) {
    let bs = b.bootstrap();
    const P: i32 = 6;
    create_topic(rt, &bs, topic, P);

    let mut ms: Vec<Member> = (0..2)
        .map(|i| {
            let mut m = Member::new(&bs, group, topic, &format!("{client_prefix}{i}"), &[]);
            m.commit = true;
            m
        })
        .collect();
    let raw = rt.spawn(raw_member_then_die(b.addr, group, topic, P));
    pump_until(
        &mut ms,
        Duration::from_secs(30),
        "raw member synced",
        |_| raw.is_finished(),
    );
    let raw = rt.block_on(raw).unwrap();
    eprintln!(
        "[{group}] raw member {} joined generation {} as {} ({} members listed), assigned {:?}",
        raw.member_id,
        raw.generation,
        if raw.leader { "leader" } else { "follower" },
        raw.members,
        raw.assigned
    );
    assert!(!raw.assigned.is_empty(), "the raw member owns partitions");
    if !raw.leader {
        // The rdkafka leader gave the rest to the two consumers.
        pump_until(&mut ms, Duration::from_secs(5), "rdkafka assigned", |ms| {
            ms.iter().all(|m| !m.owned().is_empty())
        });
    }
    let before: Vec<BTreeSet<i32>> = ms.iter().map(Member::owned).collect();
    let state = group_state(b, group).unwrap();
    eprintln!(
        "[{group}] before the death: raw={:?} rdkafka={before:?}, group {state:?}, one generation \
         for all three: {}",
        raw.assigned,
        state.1 == raw.generation && state.2 == 3
    );
    for o in &before {
        assert!(o.is_disjoint(&raw.assigned) || state.1 != raw.generation);
    }

    const N: usize = 2000;
    let mut produced = produce(rt, &bs, topic, "a", N, None);
    let produced_on_raw = produced
        .values()
        .filter(|(p, _)| raw.assigned.contains(p))
        .count();
    assert!(
        produced_on_raw > 0,
        "records landed on the dead member's partitions"
    );

    let takeover = pump_until(
        &mut ms,
        Duration::from_secs(30),
        "rdkafka consumers own every partition",
        |ms| partitioned(ms, P) && stable_with(b, group, 2),
    );
    let since_death = raw.silent_since.elapsed();
    eprintln!(
        "[{group}] takeover: all {P} partitions owned by the live consumers {since_death:?} after \
         the raw member went silent ({takeover:?} after production ended): {}",
        describe(&ms)
    );
    assert!(
        since_death >= Duration::from_millis(1400),
        "partitions moved before the session timeout ({since_death:?})"
    );
    let (still_there, leader) = b.broker.groups().read(|m| {
        let g = m.group(group).unwrap();
        (g.members.contains_key(&raw.member_id), g.leader.clone())
    });
    assert!(!still_there, "the dead member was expired");
    assert_ne!(
        leader.as_deref(),
        Some(raw.member_id.as_str()),
        "a live leader"
    );

    produced.extend(produce(rt, &bs, topic, "b", 500, None));
    pump_until(
        &mut ms,
        Duration::from_secs(30),
        "every record consumed",
        |ms| {
            let seen = consumed_values(ms.iter());
            produced.keys().all(|v| seen.contains_key(v))
        },
    );
    let seen = consumed_values(ms.iter());
    let dups = seen.values().filter(|&&n| n > 1).count();
    eprintln!(
        "[{group}] consumed {} distinct of {} produced, {dups} read more than once, commit errors \
         {:?}",
        seen.len(),
        produced.len(),
        ms.iter().map(|m| m.commit_errors).collect::<Vec<_>>()
    );
    assert!(seen.keys().all(|v| produced.contains_key(v)));
}

#[test]
fn eight_consumers_on_six_partitions() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let b = start(&rt, dir.path(), fast_groups);
    let bs = b.bootstrap();
    create_topic(&rt, &bs, "eight", 6);

    let mut ms: Vec<Member> = (0..8)
        .map(|i| Member::new(&bs, "g-eight", "eight", &format!("c{i}"), &[]))
        .collect();
    let took = pump_until(
        &mut ms,
        Duration::from_secs(30),
        "6 active + 2 idle",
        |ms| {
            partitioned(ms, 6)
                && ms.iter().filter(|m| m.owned().is_empty()).count() == 2
                && stable_with(&b, "g-eight", 8)
        },
    );
    eprintln!("eight consumers settled in {took:?}: {}", describe(&ms));
    let idle: Vec<String> = ms
        .iter()
        .filter(|m| m.owned().is_empty())
        .map(|m| m.name.clone())
        .collect();
    let gen_before = group_state(&b, "g-eight").unwrap().1;

    // Close an active member: librdkafka sends LeaveGroup.
    let victim = ms.iter().position(|m| !m.owned().is_empty()).unwrap();
    let gone = ms.remove(victim);
    let gone_owned = gone.owned();
    let t0 = Instant::now();
    drop(gone);
    let closed = t0.elapsed();
    let took = pump_until(
        &mut ms,
        Duration::from_secs(30),
        "an idle one takes over",
        |ms| {
            partitioned(ms, 6)
                && ms.iter().filter(|m| m.owned().is_empty()).count() == 1
                && stable_with(&b, "g-eight", 7)
        },
    );
    eprintln!(
        "closed a member owning {gone_owned:?} (close took {closed:?}); all 6 owned again after \
         {:?}: {}",
        t0.elapsed(),
        describe(&ms)
    );
    let _ = took;
    let took_over: Vec<&Member> = ms
        .iter()
        .filter(|m| idle.contains(&m.name) && !m.owned().is_empty())
        .collect();
    assert_eq!(
        took_over.len(),
        1,
        "exactly one formerly idle member is active now"
    );
    assert!(group_state(&b, "g-eight").unwrap().1 > gen_before);

    // All six partitions are consumed again.
    let produced = produce(&rt, &bs, "eight", "r", 600, None);
    pump_until(
        &mut ms,
        Duration::from_secs(30),
        "every record consumed",
        |ms| {
            let seen = consumed_values(ms.iter());
            produced.keys().all(|v| seen.contains_key(v))
        },
    );
    drop(ms);
    rt.block_on(b.stop());
}

#[test]
fn two_groups_each_get_everything() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let b = start(&rt, dir.path(), fast_groups);
    let bs = b.bootstrap();
    create_topic(&rt, &bs, "shared", 4);

    let mut a: Vec<Member> = (0..2)
        .map(|i| Member::new(&bs, "g-a", "shared", &format!("a{i}"), &[]))
        .collect();
    let mut bm: Vec<Member> = vec![Member::new(&bs, "g-b", "shared", "b0", &[])];
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        pump_for(&mut a, Duration::from_millis(1));
        pump_for(&mut bm, Duration::from_millis(1));
        if partitioned(&a, 4)
            && a.iter().all(|m| !m.owned().is_empty())
            && partitioned(&bm, 4)
            && stable_with(&b, "g-a", 2)
            && stable_with(&b, "g-b", 1)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "groups did not settle: a: {} b: {}",
            describe(&a),
            describe(&bm)
        );
    }

    const N: usize = 2000;
    let produced = produce(&rt, &bs, "shared", "r", N, None);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        pump_for(&mut a, Duration::from_millis(1));
        pump_for(&mut bm, Duration::from_millis(1));
        let ga: usize = a.iter().map(|m| m.got.len()).sum();
        let gb: usize = bm.iter().map(|m| m.got.len()).sum();
        if ga >= N && gb >= N {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "group a got {ga}, group b got {gb} of {N}"
        );
    }
    pump_for(&mut a, Duration::from_millis(300));
    pump_for(&mut bm, Duration::from_millis(300));
    for (name, group) in [("g-a", &a), ("g-b", &bm)] {
        let seen = consumed_values(group.iter());
        assert_eq!(seen.len(), N, "{name}: every record");
        assert!(seen.values().all(|&n| n == 1), "{name}: each record once");
        assert!(seen.keys().all(|v| produced.contains_key(v)));
    }
    drop(a);
    drop(bm);
    rt.block_on(b.stop());
}

#[test]
fn committed_offsets_survive_broker_restart() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let b = start(&rt, dir.path(), fast_groups);
    let bs = b.bootstrap();
    create_topic(&rt, &bs, "durable", 3);
    const PER: i64 = 100;
    let commit_to: [i64; 3] = [40, 55, 70];
    for p in 0..3 {
        produce(&rt, &bs, "durable", &format!("p{p}"), PER as usize, Some(p));
    }

    // Consume, committing each record below `commit_to` after processing it.
    let m = Member::new(&bs, "g-durable", "durable", "first", &[]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut committed_upto = [0i64; 3];
    while committed_upto != commit_to {
        assert!(
            Instant::now() < deadline,
            "committed only {committed_upto:?}; owns {:?}",
            m.owned()
        );
        match m.c.poll(Duration::from_millis(50)) {
            None => {}
            Some(Err(e)) => eprintln!("consumer error: {e}"),
            Some(Ok(msg)) => {
                let p = msg.partition() as usize;
                if msg.offset() < commit_to[p] {
                    m.c.commit_message(&msg, CommitMode::Sync).unwrap();
                    committed_upto[p] = msg.offset() + 1;
                }
            }
        }
    }
    let mut tpl = TopicPartitionList::new();
    for p in 0..3 {
        tpl.add_partition("durable", p);
    }
    let before =
        m.c.committed_offsets(tpl.clone(), Duration::from_secs(10))
            .unwrap();
    for p in 0..3 {
        assert_eq!(
            before.find_partition("durable", p).unwrap().offset(),
            Offset::Offset(commit_to[p as usize])
        );
    }
    drop(m);

    rt.block_on(b.stop());
    let b = start(&rt, dir.path(), fast_groups);
    let bs = b.bootstrap();

    // OffsetFetch over the raw protocol.
    let fetched = rt.block_on(async {
        let mut c = RawClient::connect(b.addr).await;
        c.call(
            &OffsetFetchRequest::default()
                .with_group_id(GroupId(sb("g-durable")))
                .with_topics(Some(vec![OffsetFetchRequestTopic::default()
                    .with_name(TopicName(sb("durable")))
                    .with_partition_indexes(vec![0, 1, 2])])),
            5,
        )
        .await
    });
    assert_eq!(fetched.error_code, 0);
    let got: BTreeMap<i32, (i64, i16)> = fetched.topics[0]
        .partitions
        .iter()
        .map(|p| (p.partition_index, (p.committed_offset, p.error_code)))
        .collect();
    assert_eq!(
        got,
        (0..3)
            .map(|p| (p, (commit_to[p as usize], 0)))
            .collect::<BTreeMap<_, _>>(),
        "OffsetFetch after the restart"
    );

    // A new consumer in the group resumes exactly at the committed offsets.
    let mut ms = vec![Member::new(&bs, "g-durable", "durable", "second", &[])];
    let after = ms[0]
        .c
        .committed_offsets(tpl, Duration::from_secs(10))
        .unwrap();
    for p in 0..3 {
        assert_eq!(
            after.find_partition("durable", p).unwrap().offset(),
            Offset::Offset(commit_to[p as usize]),
            "rdkafka committed_offsets for partition {p}"
        );
    }
    let remaining: usize = commit_to.iter().map(|c| (PER - c) as usize).sum();
    pump_until(
        &mut ms,
        Duration::from_secs(30),
        "the uncommitted rest",
        |ms| ms[0].got.len() >= remaining,
    );
    pump_for(&mut ms, Duration::from_millis(300));
    let mut per: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
    for (p, o, v) in &ms[0].got {
        assert_eq!(v, &format!("p{p}-{o}"));
        per.entry(*p).or_default().push(*o);
    }
    for p in 0..3 {
        let want: Vec<i64> = (commit_to[p as usize]..PER).collect();
        assert_eq!(
            per.get(&p),
            Some(&want),
            "partition {p} resumed at its committed offset"
        );
    }
    drop(ms);
    rt.block_on(b.stop());
}

#[test]
fn cooperative_sticky_moves_only_what_must_move() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let b = start(&rt, dir.path(), fast_groups);
    let bs = b.bootstrap();
    create_topic(&rt, &bs, "sticky", 6);
    let extra = [("partition.assignment.strategy", "cooperative-sticky")];

    let mut ms: Vec<Member> = (0..2)
        .map(|i| Member::new(&bs, "g-sticky", "sticky", &format!("c{i}"), &extra))
        .collect();
    pump_until(&mut ms, Duration::from_secs(30), "3 + 3", |ms| {
        partitioned(ms, 6)
            && ms.iter().all(|m| m.owned().len() == 3)
            && stable_with(&b, "g-sticky", 2)
    });
    let (_, gen_before, _, protocol) = group_state(&b, "g-sticky").unwrap();
    assert_eq!(protocol.as_deref(), Some("cooperative-sticky"));
    let before: Vec<BTreeSet<i32>> = ms.iter().map(Member::owned).collect();
    let events_before: Vec<usize> = ms.iter().map(|m| m.events().len()).collect();
    eprintln!("two members: {}", describe(&ms));

    ms.push(Member::new(&bs, "g-sticky", "sticky", "c2", &extra));
    let mut history: Vec<Vec<BTreeSet<i32>>> = Vec::new();
    let took = pump_until(&mut ms, Duration::from_secs(30), "2 + 2 + 2", |ms| {
        history.push(ms[..2].iter().map(Member::owned).collect());
        partitioned(ms, 6)
            && ms.iter().all(|m| m.owned().len() == 2)
            && stable_with(&b, "g-sticky", 3)
    });
    let (_, gen_after, _, _) = group_state(&b, "g-sticky").unwrap();
    eprintln!(
        "three members after {took:?}: {} (generation {gen_before} -> {gen_after})",
        describe(&ms)
    );
    for (i, m) in ms[..2].iter().enumerate() {
        let now = m.owned();
        assert!(
            now.is_subset(&before[i]),
            "{} kept {now:?} of {:?}: gained a partition",
            m.name,
            before[i]
        );
        let moved: BTreeSet<i32> = before[i].difference(&now).copied().collect();
        assert_eq!(moved.len(), 1, "{} gave up exactly one partition", m.name);
        // Kept partitions were never revoked, not even briefly.
        let new_events = &m.events()[events_before[i]..];
        eprintln!("{} rebalance events: {new_events:?}", m.name);
        for e in new_events {
            match e {
                Event::Revoke(r) => assert!(
                    r.is_subset(&moved),
                    "{} had {r:?} revoked but only {moved:?} moved",
                    m.name
                ),
                Event::Assign(a) => assert!(a.is_empty(), "{} was assigned {a:?}", m.name),
                Event::Error(e) => panic!("{}: rebalance error {e}", m.name),
            }
        }
        for h in &history {
            assert!(
                now.is_subset(&h[i]),
                "{} lost a kept partition: {h:?}",
                m.name
            );
        }
    }
    assert_eq!(ms[2].owned().len(), 2);
    drop(ms);
    rt.block_on(b.stop());
}

#[test]
fn static_member_restart_keeps_assignment() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let b = start(&rt, dir.path(), fast_groups);
    let bs = b.bootstrap();
    create_topic(&rt, &bs, "static", 6);
    fn cfg(instance: &str) -> [(&str, &str); 2] {
        [
            ("group.instance.id", instance),
            ("session.timeout.ms", "6000"),
        ]
    }
    let mut ms = vec![
        Member::new(&bs, "g-static", "static", "s-a", &cfg("s-a")),
        Member::new(&bs, "g-static", "static", "s-b", &cfg("s-b")),
    ];
    pump_until(&mut ms, Duration::from_secs(30), "3 + 3", |ms| {
        partitioned(ms, 6)
            && ms.iter().all(|m| m.owned().len() == 3)
            && stable_with(&b, "g-static", 2)
    });
    let (_, generation, _, _) = group_state(&b, "g-static").unwrap();
    let leader_instance = b.broker.groups().read(|m| {
        let g = m.group("g-static").unwrap();
        let leader = g.leader.clone().unwrap();
        g.members[&leader].instance_id.clone().unwrap()
    });
    eprintln!(
        "settled: {} generation {generation}, leader {leader_instance}",
        describe(&ms)
    );

    // Restart the follower, then the leader.
    let order: Vec<usize> = if leader_instance == "s-a" {
        vec![1, 0]
    } else {
        vec![0, 1]
    };
    for restart in order {
        let other = 1 - restart;
        let name = ms[restart].name.clone();
        let owned = ms[restart].owned();
        let other_owned = ms[other].owned();
        let other_events = ms[other].events().len();
        let t0 = Instant::now();
        // Close it (librdkafka does not send LeaveGroup for a static member) and start a new
        // consumer with the same group.instance.id.
        drop(ms.remove(restart));
        ms.insert(
            restart,
            Member::new(&bs, "g-static", "static", &name, &cfg(&name)),
        );
        let restarted_in = t0.elapsed();
        let check = |ms: &[Member]| {
            assert_eq!(
                ms[other].owned(),
                other_owned,
                "{} was rebalanced",
                ms[other].name
            );
            assert_eq!(
                ms[other].events().len(),
                other_events,
                "{} saw rebalance events: {:?}",
                ms[other].name,
                ms[other].events()
            );
            let g = group_state(&b, "g-static").unwrap();
            assert_eq!(g.1, generation, "the generation changed: {g:?}");
        };
        let took = pump_until(
            &mut ms,
            Duration::from_secs(20),
            "same partitions back",
            |ms| {
                check(ms);
                ms[restart].owned() == owned
            },
        );
        eprintln!(
            "{name} restarted in {restarted_in:?}, had {owned:?} back after {took:?} (leader: {})",
            name == leader_instance
        );
        // Stays settled (nothing expires later either).
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(2500) {
            for m in ms.iter_mut() {
                m.pump(Duration::from_millis(20));
            }
            check(&ms);
            assert_eq!(ms[restart].owned(), owned);
        }
        assert!(stable_with(&b, "g-static", 2));
    }
    drop(ms);
    rt.block_on(b.stop());
}

/// KIP-345 over the raw protocol: a static leader that restarts (JoinGroup with an empty member
/// id and its `group.instance.id`) while the group is Stable gets a new member id and the current
/// generation without a rebalance. Before JoinGroup v9 (`SkipAssignment`), Kafka answers with the
/// *previous* leader id, so the restarted member does not believe it is the leader and does not
/// run an assignor over an empty member list. (librdkafka's cooperative-sticky assignor crashes
/// with SIGSEGV when told it leads with zero members.)
#[test]
fn static_leader_restart_is_not_told_to_lead() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let b = start(&rt, dir.path(), fast_groups);
    create_topic(&rt, &b.bootstrap(), "static-raw", 2);
    let mut meta = BytesMut::new();
    meta.put_i16(0);
    ConsumerProtocolSubscription::default()
        .with_topics(vec![sb("static-raw")])
        .encode(&mut meta, 0)
        .unwrap();
    let join = JoinGroupRequest::default()
        .with_group_id(GroupId(sb("g-static-raw")))
        .with_session_timeout_ms(6000)
        .with_rebalance_timeout_ms(6000)
        .with_member_id(sb(""))
        .with_group_instance_id(Some(sb("instance-1")))
        .with_protocol_type(sb("consumer"))
        .with_protocols(vec![JoinGroupRequestProtocol::default()
            .with_name(sb("range"))
            .with_metadata(meta.freeze())]);
    let (first, second, synced) = rt.block_on(async {
        // The only member: it leads generation 1 and assigns itself both partitions.
        let mut c = RawClient::connect(b.addr).await;
        let first = c.call(&join, 5).await;
        assert_eq!(first.error_code, 0, "static join");
        assert_eq!(first.leader, first.member_id);
        let sync = c
            .call(
                &SyncGroupRequest::default()
                    .with_group_id(GroupId(sb("g-static-raw")))
                    .with_generation_id(first.generation_id)
                    .with_member_id(first.member_id.clone())
                    .with_group_instance_id(Some(sb("instance-1")))
                    .with_assignments(vec![SyncGroupRequestAssignment::default()
                        .with_member_id(first.member_id.clone())
                        .with_assignment(encode_assignment("static-raw", vec![0, 1]))]),
                3,
            )
            .await;
        assert_eq!(sync.error_code, 0);
        drop(c);
        // The restart: a new connection, no member id, same instance id, same metadata.
        let mut c = RawClient::connect(b.addr).await;
        let second = c.call(&join, 5).await;
        let synced = c
            .call(
                &SyncGroupRequest::default()
                    .with_group_id(GroupId(sb("g-static-raw")))
                    .with_generation_id(second.generation_id)
                    .with_member_id(second.member_id.clone())
                    .with_group_instance_id(Some(sb("instance-1"))),
                3,
            )
            .await;
        (first, second, synced)
    });
    eprintln!(
        "first join: member {} leader {} generation {}; restart: error {} member {} leader {} \
         generation {} members listed {}",
        first.member_id,
        first.leader,
        first.generation_id,
        second.error_code,
        second.member_id,
        second.leader,
        second.generation_id,
        second.members.len()
    );
    assert_eq!(second.error_code, 0);
    assert_ne!(second.member_id, first.member_id, "a fresh member id");
    assert_eq!(second.generation_id, first.generation_id, "no rebalance");
    assert_eq!(synced.error_code, 0);
    assert_eq!(decode_assignment(synced.assignment), BTreeSet::from([0, 1]));
    assert!(second.members.is_empty());
    assert_eq!(
        second.leader, first.member_id,
        "Kafka (JoinGroup < v9) answers a restarted static leader with the previous leader id, \
         not the member's own new id (which, with an empty member list, makes it run an \
         assignor over zero members)"
    );
    rt.block_on(b.stop());
}
