//! Failover of a three-node cluster of real `strom server` processes (every node a Raft
//! controller and a broker), driven through [`common::cluster::TestCluster`]:
//!
//! - `acked_records_survive_leader_kills`: an idempotent `strom-client` producer (acks=all,
//!   min.insync.replicas=2, RF 3) writes numbered records to three partitions without pause
//!   while the leader of partition 0 is killed with SIGKILL, a new leader comes from the ISR, the
//!   killed node restarts, catches up and rejoins the ISR, and leadership returns to the preferred
//!   replicas; twice. Every acknowledged record is then read back exactly once at the offset its
//!   acknowledgement reported, each partition's numbers increase with the offset (no duplicates,
//!   no reordering), and no delivery failed (a new leader without the producer's sequence state
//!   shows up here as OUT_OF_ORDER_SEQUENCE_NUMBER or UNKNOWN_PRODUCER_ID).
//! - `librdkafka_clients_ride_through_failover`: librdkafka's idempotent producer and a
//!   group-managed consumer with auto-commit keep working across the SIGKILL of the partition's
//!   leader: all 2,000 deliveries succeed at distinct offsets and the consumer receives every
//!   value, each at the offset the producer was told.
//! - `group_offsets_survive_coordinator_kill`: offsets committed synchronously by a consumer
//!   group survive the SIGKILL of the group's coordinator (the leader of its
//!   `__consumer_offsets` partition, RF 3): within 15 s another node serves them to a new member
//!   and to the admin client, and the new member resumes exactly there.
#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns unwrap too

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::cluster::{TestCluster, NODE_IDS};
use common::kafka::future_producer;
use kafka_protocol::ResponseError;
use rdkafka::consumer::{Consumer as _, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::FutureRecord;
use strom::client::{
    Consumer, ConsumerConfig, OffsetSpec, Producer, ProducerConfig, ProducerRecord, TopicPartition,
};

/// How long a new leader may take after a kill (the controller fences a broker after 1.5 s of
/// silence; the server promises about 2 s, the rest is slack for a loaded test machine).
const ELECTION_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a restarted node may take to catch up and rejoin the ISR.
const REJOIN_TIMEOUT: Duration = Duration::from_secs(20);

/// A partition's records summarised for messages: how many, first and last offset.
fn offsets_of(records: &[(i64, u64)]) -> String {
    match (records.first(), records.last()) {
        (Some(a), Some(b)) => format!("{} records at offsets {}..={}", records.len(), a.0, b.0),
        _ => "no records".into(),
    }
}

/// At most `n` items of `v` for an assertion message, with how many were left out.
fn first<T: std::fmt::Debug>(v: &[T], n: usize) -> String {
    if v.len() <= n {
        format!("{v:?}")
    } else {
        format!("{:?} and {} more", &v[..n], v.len() - n)
    }
}

// ---- 1. acked records survive leader kills ------------------------------------------------------

/// What became of one `send`.
#[derive(Debug, Clone)]
struct Outcome {
    /// The record's number (its value); it was sent to partition `seq % 3`.
    seq: u64,
    partition: i32,
    /// `(partition, offset)` the acknowledgement reported, or the error.
    result: Result<(i32, i64), String>,
}

const ACKED_TOPIC: &str = "failover-acked";
const ACKED_PARTITIONS: i32 = 3;

/// Sends numbered records round-robin to the partitions, 5 every 5 ms, until `stop`; each
/// record's outcome lands in `outcomes` when its delivery future resolves. Returns how many
/// records were handed to the producer.
async fn send_until_stopped(
    producer: Arc<Producer>,
    stop: Arc<AtomicBool>,
    next_seq: Arc<AtomicU64>,
    outcomes: Arc<Mutex<Vec<Outcome>>>,
) -> u64 {
    let mut deliveries = Vec::new();
    let mut seq = 0u64;
    while !stop.load(Ordering::Acquire) {
        for _ in 0..5 {
            let partition = (seq % ACKED_PARTITIONS as u64) as i32;
            let record = ProducerRecord::new(ACKED_TOPIC, seq.to_string())
                .key(format!("p{partition}"))
                .partition(partition);
            match producer.send(record).await {
                Ok(delivery) => {
                    let outcomes = outcomes.clone();
                    deliveries.push(tokio::spawn(async move {
                        let result = delivery
                            .await
                            .map(|m| (m.partition, m.offset))
                            .map_err(|e| e.to_string());
                        outcomes.lock().unwrap().push(Outcome {
                            seq,
                            partition,
                            result,
                        });
                    }));
                }
                Err(e) => outcomes.lock().unwrap().push(Outcome {
                    seq,
                    partition,
                    result: Err(format!("send refused: {e}")),
                }),
            }
            seq += 1;
            next_seq.store(seq, Ordering::Release);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    producer.flush().await.unwrap();
    for d in deliveries {
        d.await.unwrap();
    }
    seq
}

/// Waits until a record numbered `from` or later was acknowledged in `partition`: the partition
/// takes writes again.
async fn wait_acked_from(outcomes: &Mutex<Vec<Outcome>>, partition: i32, from: u64, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        {
            let o = outcomes.lock().unwrap();
            if o.iter()
                .any(|o| o.partition == partition && o.seq >= from && o.result.is_ok())
            {
                return;
            }
            if Instant::now() >= deadline {
                let failed: Vec<&Outcome> = o.iter().filter(|o| o.result.is_err()).collect();
                panic!(
                    "{what}: no record numbered {from} or later acknowledged in \
                     {ACKED_TOPIC}-{partition} within 30 s ({} outcomes so far; failures: {})",
                    o.len(),
                    first(&failed, 5)
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until every partition of `topic` is led by its preferred (first) replica.
async fn wait_preferred_leaders(cluster: &TestCluster, topic: &str, partitions: i32) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let mut off = Vec::new();
        for p in 0..partitions {
            match cluster.describe(topic, p).await {
                Ok(info) if info.replicas.first() == Some(&info.leader) => {}
                Ok(info) => off.push(format!("{info:?}")),
                Err(e) => off.push(e),
            }
        }
        if off.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{topic}: leadership did not return to the preferred replicas within 15 s; \
             partitions not led by their first replica: {off:?}\n{}",
            cluster.all_logs_report()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Reads every partition of `ACKED_TOPIC` from the start up to its high watermark; returns
/// `(offset, record number)` per partition in offset order, and the malformed records.
async fn read_back(cluster: &TestCluster) -> (BTreeMap<i32, Vec<(i64, u64)>>, Vec<String>) {
    let admin = cluster.admin().await.unwrap();
    let ends = admin
        .list_offsets(&[ACKED_TOPIC.to_string()], OffsetSpec::Latest)
        .await
        .unwrap();
    let mut config = ConsumerConfig::new(&cluster.bootstrap());
    config.set("auto.offset.reset", "earliest").unwrap();
    let mut consumer = Consumer::new(config).await.unwrap();
    let parts: Vec<TopicPartition> = (0..ACKED_PARTITIONS)
        .map(|p| TopicPartition::new(ACKED_TOPIC, p))
        .collect();
    consumer.assign(&parts).unwrap();
    let mut by_partition: BTreeMap<i32, Vec<(i64, u64)>> =
        (0..ACKED_PARTITIONS).map(|p| (p, Vec::new())).collect();
    let mut malformed = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let done = |by: &BTreeMap<i32, Vec<(i64, u64)>>| {
        ends.iter().all(|(tp, end)| {
            by[&tp.partition]
                .last()
                .is_some_and(|(offset, _)| offset + 1 >= *end)
                || *end == 0
        })
    };
    while !done(&by_partition) {
        assert!(
            Instant::now() < deadline,
            "reading {ACKED_TOPIC} back: not at the high watermarks {ends:?} after 30 s; read {:?}",
            by_partition
                .iter()
                .map(|(p, r)| format!("partition {p}: {}", offsets_of(r)))
                .collect::<Vec<_>>()
        );
        for r in consumer.poll(Duration::from_millis(500)).await.unwrap() {
            let value = r.value.as_deref().map(String::from_utf8_lossy);
            let seq = value.as_deref().and_then(|v| v.parse::<u64>().ok());
            let key_ok = r.key.as_deref() == Some(format!("p{}", r.partition).as_bytes());
            match seq {
                Some(seq) if key_ok && seq % ACKED_PARTITIONS as u64 == r.partition as u64 => {
                    by_partition
                        .get_mut(&r.partition)
                        .unwrap()
                        .push((r.offset, seq));
                }
                _ => malformed.push(format!(
                    "partition {} offset {}: key {:?} value {value:?}",
                    r.partition, r.offset, r.key
                )),
            }
        }
    }
    (by_partition, malformed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acked_records_survive_leader_kills() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = TestCluster::start(dir.path()).await;
    cluster
        .create_topic(
            ACKED_TOPIC,
            ACKED_PARTITIONS,
            &[("min.insync.replicas", "2")],
        )
        .await;

    let mut config = ProducerConfig::new(&cluster.bootstrap());
    for (k, v) in [
        ("enable.idempotence", "true"),
        ("acks", "all"),
        ("retries", "2147483647"),
        ("delivery.timeout.ms", "30000"),
        ("request.timeout.ms", "5000"),
        ("max.block.ms", "30000"),
        ("linger.ms", "5"),
    ] {
        config.set(k, v).unwrap();
    }
    let producer = Arc::new(Producer::new(config).await.unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    let next_seq = Arc::new(AtomicU64::new(0));
    let outcomes = Arc::new(Mutex::new(Vec::new()));
    let sender = tokio::spawn(send_until_stopped(
        producer.clone(),
        stop.clone(),
        next_seq.clone(),
        outcomes.clone(),
    ));
    wait_acked_from(&outcomes, 0, 0, "before any kill").await;

    let mut killed = Vec::new();
    for round in 1..=2 {
        let before = cluster.describe(ACKED_TOPIC, 0).await.unwrap();
        let victim = before.leader;
        assert!(
            victim >= 0,
            "round {round}: partition 0 has no leader: {before:?}"
        );
        cluster.kill9(victim);
        killed.push(victim);
        let killed_at = Instant::now();

        let leader = cluster
            .wait_for_new_leader(ACKED_TOPIC, 0, victim, ELECTION_TIMEOUT)
            .await;
        let elected_after = killed_at.elapsed();
        // Shown with the output of a failed run: how long each election took.
        eprintln!("round {round}: killed node {victim}; node {leader} led after {elected_after:?}");
        assert!(
            before.isr.contains(&leader),
            "round {round}: node {leader} became leader of {ACKED_TOPIC}-0 after node {victim} \
             was killed, but the ISR before the kill was {:?} (an unclean election)",
            before.isr
        );
        // The dead node leaves the ISR of partition 0, which then takes acks=all writes from
        // the two survivors (min.insync.replicas=2).
        let shrunk = cluster
            .wait_for_isr(ACKED_TOPIC, 0, 2, ELECTION_TIMEOUT)
            .await;
        assert!(
            !shrunk.isr.contains(&victim),
            "round {round}: killed node {victim} is still in the ISR: {shrunk:?}"
        );
        let mark = next_seq.load(Ordering::Acquire);
        tokio::time::sleep(Duration::from_secs(1)).await;
        wait_acked_from(
            &outcomes,
            0,
            mark,
            &format!(
                "round {round}: after node {victim} was killed and node {leader} elected \
                 (in {elected_after:?})"
            ),
        )
        .await;

        cluster.restart(victim).await;
        for p in 0..ACKED_PARTITIONS {
            let info = cluster
                .wait_for_isr(ACKED_TOPIC, p, 3, REJOIN_TIMEOUT)
                .await;
            assert!(
                info.isr.contains(&victim),
                "round {round}: restarted node {victim} not in the ISR of partition {p}: {info:?}"
            );
        }
        // Preferred-leader election gives leadership back, so round 2 kills a leader that
        // holds it by right, not one that a rebalance is about to replace.
        wait_preferred_leaders(&cluster, ACKED_TOPIC, ACKED_PARTITIONS).await;
    }

    stop.store(true, Ordering::Release);
    let sent = sender.await.unwrap();
    let outcomes = std::mem::take(&mut *outcomes.lock().unwrap());
    assert_eq!(
        outcomes.len() as u64,
        sent,
        "every send must have an outcome"
    );
    let acked: Vec<&Outcome> = outcomes.iter().filter(|o| o.result.is_ok()).collect();
    let failed: Vec<&Outcome> = outcomes.iter().filter(|o| o.result.is_err()).collect();

    let (log, malformed) = read_back(&cluster).await;
    assert!(
        malformed.is_empty(),
        "records the producer never wrote (wrong key, value or partition): {}",
        first(&malformed, 10)
    );

    // Each partition: record numbers strictly increase with the offset (the idempotent
    // producer neither duplicates nor reorders), and no number appears twice anywhere.
    let mut found: HashMap<u64, (i32, i64)> = HashMap::new();
    let mut duplicates = Vec::new();
    for (&p, records) in &log {
        for w in records.windows(2) {
            assert!(
                w[0].1 < w[1].1,
                "{ACKED_TOPIC}-{p}: record {} at offset {} follows record {} at offset {} \
                 (duplicate or reordered; nodes killed in order {killed:?})",
                w[1].1,
                w[1].0,
                w[0].1,
                w[0].0
            );
        }
        for &(offset, seq) in records {
            if let Some(prev) = found.insert(seq, (p, offset)) {
                duplicates.push((seq, prev, (p, offset)));
            }
        }
    }
    assert!(
        duplicates.is_empty(),
        "records written more than once (number, first (partition, offset), again): {}",
        first(&duplicates, 10)
    );
    let beyond: Vec<u64> = found.keys().copied().filter(|&s| s >= sent).collect();
    assert!(
        beyond.is_empty(),
        "records numbered at or past the {sent} sent: {}",
        first(&beyond, 10)
    );

    // Every acknowledged record is there, at the partition and offset its acknowledgement named.
    let mut lost = Vec::new();
    let mut moved = Vec::new();
    for o in &acked {
        let Ok(reported) = o.result else { continue };
        match found.get(&o.seq) {
            None => lost.push((o.seq, reported)),
            Some(&at) if at != reported => moved.push((o.seq, reported, at)),
            Some(_) => {}
        }
    }
    assert!(
        lost.is_empty(),
        "{} acknowledged records lost (number, acknowledged (partition, offset)): {}; \
         nodes killed in order {killed:?}; read back: {:?}",
        lost.len(),
        first(&lost, 10),
        log.iter()
            .map(|(p, r)| format!("partition {p}: {}", offsets_of(r)))
            .collect::<Vec<_>>()
    );
    assert!(
        moved.is_empty(),
        "acknowledged records found elsewhere than acknowledged (number, acknowledged \
         (partition, offset), found at): {}",
        first(&moved, 10)
    );

    // With delivery.timeout.ms=30 s and elections in seconds, nothing should fail at all.
    assert!(
        failed.is_empty(),
        "{} of {sent} deliveries failed across the failovers (nodes killed in order \
         {killed:?}): {}",
        failed.len(),
        first(&failed, 10)
    );
    assert!(
        acked.len() >= 1000,
        "only {} records acknowledged: the test did not exercise much",
        acked.len()
    );
}

// ---- 2. librdkafka rides through failover -------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn librdkafka_clients_ride_through_failover() {
    const TOPIC: &str = "failover-rdkafka";
    const N: usize = 2000;
    const KILL_AT: usize = 700;

    let dir = tempfile::tempdir().unwrap();
    let mut cluster = TestCluster::start(dir.path()).await;
    cluster
        .create_topic(TOPIC, 1, &[("min.insync.replicas", "2")])
        .await;
    let bootstrap = cluster.bootstrap();

    // The consumer: group-managed, auto-commit, records every (offset, value) it receives.
    let consumer: StreamConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("group.id", "failover-rdkafka-group")
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "200")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .set("fetch.wait.max.ms", "100")
        .create()
        .unwrap();
    consumer.subscribe(&[TOPIC]).unwrap();
    let received = Arc::new(AtomicUsize::new(0));
    let consumer_task = {
        let received = received.clone();
        tokio::spawn(async move {
            let mut seen: BTreeMap<u64, BTreeSet<i64>> = BTreeMap::new();
            let mut errors: Vec<String> = Vec::new();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(50);
            while seen.len() < N {
                match tokio::time::timeout_at(deadline, consumer.recv()).await {
                    Err(_) => break,
                    Ok(Ok(m)) => {
                        let value = m
                            .payload()
                            .and_then(|v| std::str::from_utf8(v).ok())
                            .and_then(|v| v.parse::<u64>().ok());
                        match value {
                            Some(v) => {
                                seen.entry(v).or_default().insert(m.offset());
                                received.store(seen.len(), Ordering::Release);
                            }
                            None => errors.push(format!(
                                "offset {}: unexpected payload {:?}",
                                m.offset(),
                                m.payload()
                            )),
                        }
                    }
                    // Transport errors while a broker is down are reported here; librdkafka
                    // recovers by itself. Kept for the failure message.
                    Ok(Err(e)) => errors.push(e.to_string()),
                }
            }
            (seen, errors)
        })
    };

    let producer = future_producer(
        &bootstrap,
        &[
            ("enable.idempotence", "true"),
            ("message.timeout.ms", "30000"),
        ],
    );
    let mut deliveries = Vec::with_capacity(N);
    let mut victim = -1;
    for i in 0..N {
        if i == KILL_AT {
            // Mid-stream: the consumer is reading too.
            let deadline = Instant::now() + Duration::from_secs(20);
            while received.load(Ordering::Acquire) == 0 {
                assert!(
                    Instant::now() < deadline,
                    "the consumer received nothing of the first {KILL_AT} records in 20 s"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            victim = cluster.leader_of(TOPIC, 0).await;
            cluster.kill9(victim);
        }
        let payload = i.to_string();
        let key = format!("k{}", i % 10);
        let delivery = producer
            .send_result(FutureRecord::to(TOPIC).key(&key).payload(&payload))
            .map_err(|(e, _)| e)
            .unwrap_or_else(|e| panic!("record {i}: librdkafka refused to queue it: {e}"));
        deliveries.push(delivery);
        tokio::time::sleep(Duration::from_millis(1)).await;
    }

    // Every delivery succeeds, each at its own offset.
    let mut offset_of = Vec::with_capacity(N);
    let mut failures = Vec::new();
    for (i, d) in deliveries.into_iter().enumerate() {
        match d.await {
            Ok(Ok(delivery)) => offset_of.push(delivery.offset),
            Ok(Err((e, _))) => {
                failures.push(format!("record {i}: {e}"));
                offset_of.push(-1);
            }
            Err(_) => {
                failures.push(format!("record {i}: delivery future cancelled"));
                offset_of.push(-1);
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {N} deliveries failed after node {victim} (the leader) was killed: {}",
        failures.len(),
        first(&failures, 10)
    );
    let distinct: BTreeSet<i64> = offset_of.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        N,
        "records delivered at the same offset (the idempotent producer wrote duplicates?)"
    );
    let leader = cluster.leader_of(TOPIC, 0).await;
    assert_ne!(
        leader, victim,
        "the killed node {victim} is still the leader"
    );

    // The consumer gets every value, each at the offset the producer was told (a value seen
    // twice at one offset is a redelivery after a rebalance, which auto-commit allows; at two
    // offsets it is a duplicate in the log).
    let (seen, errors) = consumer_task.await.unwrap();
    let missing: Vec<usize> = (0..N)
        .filter(|v| !seen.contains_key(&(*v as u64)))
        .collect();
    assert!(
        missing.is_empty(),
        "the consumer did not receive {} of {N} values within 50 s, e.g. {} (node {victim} \
         killed at record {KILL_AT}; consumer errors: {})",
        missing.len(),
        first(&missing, 10),
        first(&errors, 10)
    );
    let mismatched: Vec<String> = seen
        .iter()
        .filter(|(v, offsets)| {
            offset_of
                .get(**v as usize)
                .is_none_or(|o| offsets.len() != 1 || !offsets.contains(o))
        })
        .map(|(v, offsets)| {
            format!(
                "value {v}: consumed at {offsets:?}, delivered at {:?}",
                offset_of.get(*v as usize)
            )
        })
        .collect();
    assert!(
        mismatched.is_empty(),
        "consumed offsets disagree with delivered ones: {}",
        first(&mismatched, 10)
    );
}

// ---- 3. group offsets survive a coordinator kill ------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_offsets_survive_coordinator_kill() {
    const TOPIC: &str = "failover-offsets";
    const GROUP: &str = "failover-offsets-group";
    /// Records per partition before the commit (different, so offsets cannot be confused).
    const COUNTS: [i64; 3] = [10, 20, 30];
    const EXTRA: i64 = 5;

    let dir = tempfile::tempdir().unwrap();
    let mut cluster = TestCluster::start(dir.path()).await;
    cluster
        .create_topic(TOPIC, 3, &[("min.insync.replicas", "2")])
        .await;
    let bootstrap = cluster.bootstrap();
    let parts: Vec<TopicPartition> = (0..3).map(|p| TopicPartition::new(TOPIC, p)).collect();

    let producer = Producer::new(ProducerConfig::new(&bootstrap))
        .await
        .unwrap();
    let produce = |counts: [i64; 3], tag: &'static str| {
        let producer = &producer;
        async move {
            let mut acks = Vec::new();
            for (p, n) in counts.iter().enumerate() {
                for i in 0..*n {
                    let r =
                        ProducerRecord::new(TOPIC, format!("{tag}-{p}-{i}")).partition(p as i32);
                    acks.push(producer.send(r).await.unwrap());
                }
            }
            for a in acks {
                a.await.unwrap();
            }
        }
    };
    produce(COUNTS, "before").await;

    // A member reads everything and commits its positions synchronously.
    let member_config = || {
        let mut c = ConsumerConfig::new(&bootstrap);
        for (k, v) in [
            ("group.id", GROUP),
            ("enable.auto.commit", "false"),
            ("auto.offset.reset", "earliest"),
            ("session.timeout.ms", "6000"),
            ("heartbeat.interval.ms", "500"),
        ] {
            c.set(k, v).unwrap();
        }
        c
    };
    let mut first_member = Consumer::new(member_config()).await.unwrap();
    first_member.subscribe(&[TOPIC]).unwrap();
    let total: i64 = COUNTS.iter().sum();
    let mut read = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    while read < total {
        assert!(
            Instant::now() < deadline,
            "the first member read {read} of {total} records in 20 s"
        );
        read += first_member
            .poll(Duration::from_millis(500))
            .await
            .unwrap()
            .len() as i64;
    }
    let expected: HashMap<TopicPartition, i64> = parts
        .iter()
        .map(|tp| (tp.clone(), COUNTS[tp.partition as usize]))
        .collect();
    // Committed offsets are replicated with acks=all: let every __consumer_offsets partition
    // have its full ISR first, so the commit reaches all three nodes.
    for p in 0..3 {
        cluster
            .wait_for_isr("__consumer_offsets", p, 3, Duration::from_secs(15))
            .await;
    }
    first_member.commit().await.unwrap();
    assert_eq!(
        first_member.committed(&parts).await.unwrap(),
        expected,
        "committed offsets as the coordinator reports them before the kill"
    );
    first_member.close().await.unwrap();
    produce([EXTRA; 3], "after").await;

    let coordinator = cluster.coordinator_of(GROUP).await;
    cluster.kill9(coordinator);
    let killed_at = Instant::now();

    // A new member of the group sees the commits, once another node took over the group.
    let mut second_member = Consumer::new(member_config()).await.unwrap();
    let deadline = killed_at + Duration::from_secs(15);
    let mut last_error = String::from("none");
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, second_member.committed(&parts)).await {
            Ok(Ok(got)) => {
                assert_eq!(
                    got,
                    expected,
                    "committed offsets served {:?} after coordinator node {coordinator} was \
                     killed",
                    killed_at.elapsed()
                );
                break;
            }
            Ok(Err(e))
                if e.is_retriable()
                    || matches!(
                        e.code(),
                        Some(
                            ResponseError::CoordinatorNotAvailable
                                | ResponseError::NotCoordinator
                                | ResponseError::CoordinatorLoadInProgress
                        )
                    ) =>
            {
                last_error = e.to_string();
            }
            Ok(Err(e)) => panic!(
                "fetching committed offsets after coordinator node {coordinator} was killed: \
                 {e}\n{}",
                cluster.all_logs_report()
            ),
            Err(_) => {}
        }
        assert!(
            Instant::now() < deadline,
            "no node served group {GROUP}'s offsets within 15 s of killing coordinator node \
             {coordinator} (last error: {last_error})\n{}",
            cluster.all_logs_report()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let new_coordinator = cluster.coordinator_of(GROUP).await;
    assert!(
        new_coordinator != coordinator && NODE_IDS.contains(&new_coordinator),
        "group {GROUP} is coordinated by node {new_coordinator}; node {coordinator} was killed"
    );
    let via_admin = cluster
        .admin()
        .await
        .unwrap()
        .group_offsets(GROUP)
        .await
        .unwrap();
    assert_eq!(
        via_admin.into_iter().collect::<HashMap<_, _>>(),
        expected,
        "group offsets as the admin client lists them from node {new_coordinator}"
    );

    // And it resumes exactly where the first member committed: only the extra records.
    second_member.subscribe(&[TOPIC]).unwrap();
    let mut got: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while got.values().map(Vec::len).sum::<usize>() < 3 * EXTRA as usize {
        assert!(
            Instant::now() < deadline,
            "the second member received only {got:?} (partition: offsets) in 20 s"
        );
        for r in second_member
            .poll(Duration::from_millis(500))
            .await
            .unwrap()
        {
            got.entry(r.partition).or_default().push(r.offset);
        }
    }
    for (p, n) in COUNTS.iter().enumerate() {
        let want: Vec<i64> = (*n..n + EXTRA).collect();
        assert_eq!(
            got.get(&(p as i32)),
            Some(&want),
            "partition {p}: the second member must resume at the committed offset {n}"
        );
    }
    second_member.close().await.unwrap();
}
