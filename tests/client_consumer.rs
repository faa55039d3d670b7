//! strom-client's consumer against a real broker: assign and subscribe, seeks, pause/resume,
//! commits, group rebalancing with three members, and interop with librdkafka both ways.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::TestBroker;
use strom::client::{
    Admin, Compression, Consumer, ConsumerConfig, ConsumerRecord, NewTopic, OffsetReset,
    OffsetSpec, Producer, ProducerConfig, ProducerRecord, RebalanceListener, TopicPartition,
};

async fn produce_n(bootstrap: &str, topic: &str, n: usize, c: Compression) {
    let p = Producer::new(ProducerConfig::new(bootstrap).compression(c))
        .await
        .unwrap();
    let mut futs = Vec::new();
    for i in 0..n {
        let r = ProducerRecord::new(topic, format!("v{i}"))
            .key(format!("k{i}"))
            .header("i", i.to_string());
        futs.push(p.send(r).await.unwrap());
    }
    for f in futs {
        f.await.unwrap();
    }
    p.close().await.unwrap();
}

async fn consume_until(c: &mut Consumer, n: usize, limit: Duration) -> Vec<ConsumerRecord> {
    let deadline = tokio::time::Instant::now() + limit;
    let mut out = Vec::new();
    while out.len() < n && tokio::time::Instant::now() < deadline {
        out.extend(c.poll(Duration::from_millis(200)).await.unwrap());
    }
    out
}

fn cfg(b: &TestBroker) -> ConsumerConfig {
    ConsumerConfig::new(&b.bootstrap()).offset_reset(OffsetReset::Earliest)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_with_every_codec() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path(), |_| {}).await;
    let admin = Admin::connect(&b.bootstrap()).await.unwrap();
    for c in [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ] {
        let topic = format!("rt-{}", c.name());
        admin
            .create_topics(&[NewTopic::new(&topic, 3)])
            .await
            .unwrap();
        produce_n(&b.bootstrap(), &topic, 3000, c).await;
        let mut consumer = Consumer::new(cfg(&b)).await.unwrap();
        consumer
            .assign(
                &(0..3)
                    .map(|p| TopicPartition::new(&topic, p))
                    .collect::<Vec<_>>(),
            )
            .unwrap();
        let got = consume_until(&mut consumer, 3000, Duration::from_secs(20)).await;
        assert_eq!(got.len(), 3000, "{c:?}");
        let mut per_part: HashMap<i32, i64> = HashMap::new();
        let mut values = BTreeSet::new();
        for r in &got {
            let next = per_part.entry(r.partition).or_insert(0);
            assert_eq!(r.offset, *next, "in order without gaps");
            *next += 1;
            let v = String::from_utf8(r.value.clone().unwrap().to_vec()).unwrap();
            let i: usize = v[1..].parse().unwrap();
            assert_eq!(r.key.as_deref(), Some(format!("k{i}").as_bytes()));
            assert_eq!(
                r.headers[0].value.as_deref(),
                Some(i.to_string().as_bytes())
            );
            // Same partition as Kafka's own clients would pick.
            assert_eq!(
                r.partition,
                strom::client::partitioner::partition_for_key(format!("k{i}").as_bytes(), 3)
            );
            values.insert(i);
        }
        assert_eq!(values.len(), 3000);
    }
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seek_pause_resume_and_timestamps() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path(), |_| {}).await;
    let admin = Admin::connect(&b.bootstrap()).await.unwrap();
    admin.create_topics(&[NewTopic::new("s", 1)]).await.unwrap();
    let p = Producer::new(ProducerConfig::new(&b.bootstrap()))
        .await
        .unwrap();
    for i in 0..100i64 {
        p.send(ProducerRecord::new("s", format!("{i}")).timestamp(1_000_000 + i * 10))
            .await
            .unwrap();
    }
    p.flush().await.unwrap();
    let tp = TopicPartition::new("s", 0);
    let mut c = Consumer::new(cfg(&b)).await.unwrap();
    c.assign(std::slice::from_ref(&tp)).unwrap();
    let first = consume_until(&mut c, 100, Duration::from_secs(10)).await;
    assert_eq!(first.len(), 100);
    c.seek(&tp, 40).unwrap();
    let r = c.recv().await.unwrap();
    assert_eq!(r.offset, 40);
    c.seek_to_timestamp(std::slice::from_ref(&tp), 1_000_000 + 555)
        .unwrap();
    assert_eq!(c.recv().await.unwrap().offset, 56);
    c.seek_to_end(std::slice::from_ref(&tp)).unwrap();
    // The end is looked up lazily (as in Kafka): wait until it is known before producing more.
    while c.position(&tp).is_none() {
        assert!(c.poll(Duration::from_millis(50)).await.unwrap().is_empty());
    }
    assert_eq!(c.position(&tp), Some(100));
    c.pause(std::slice::from_ref(&tp)).unwrap();
    p.send(ProducerRecord::new("s", "late"))
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(
        c.poll(Duration::from_millis(500)).await.unwrap().is_empty(),
        "paused"
    );
    c.resume(std::slice::from_ref(&tp)).unwrap();
    let r = c.recv().await.unwrap();
    assert_eq!((r.offset, r.value.as_deref()), (100, Some(&b"late"[..])));
    c.seek_to_beginning(std::slice::from_ref(&tp)).unwrap();
    assert_eq!(c.recv().await.unwrap().offset, 0);
    b.stop().await;
}

#[derive(Default, Clone)]
struct Log(Arc<Mutex<Vec<String>>>);

impl RebalanceListener for Log {
    fn on_assigned(&mut self, p: &[TopicPartition]) {
        self.0.lock().unwrap().push(format!("assigned {}", p.len()));
    }
    fn on_revoked(&mut self, p: &[TopicPartition]) {
        self.0.lock().unwrap().push(format!("revoked {}", p.len()));
    }
}

/// Three members in one group share six partitions; every record is read once; commits let a
/// new member resume where the group stopped.
async fn group_of_three(assignor: &str) {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path(), |c| c.group_initial_rebalance_delay_ms = 0).await;
    let topic = format!("g-{assignor}");
    Admin::connect(&b.bootstrap())
        .await
        .unwrap()
        .create_topics(&[NewTopic::new(&topic, 6)])
        .await
        .unwrap();
    produce_n(&b.bootstrap(), &topic, 600, Compression::Lz4).await;
    let group = format!("group-{assignor}");
    let mk = || {
        let mut c = cfg(&b).group_id(&group);
        c.set("partition.assignment.strategy", assignor).unwrap();
        c.set("heartbeat.interval.ms", "100").unwrap();
        c.set("session.timeout.ms", "6000").unwrap();
        c.set("auto.commit.interval.ms", "100").unwrap();
        c
    };
    let mut members = Vec::new();
    let mut logs = Vec::new();
    for _ in 0..3 {
        let mut c = Consumer::new(mk()).await.unwrap();
        let log = Log::default();
        c.set_rebalance_listener(log.clone());
        c.subscribe(&[&topic]).unwrap();
        members.push(c);
        logs.push(log);
    }
    // Poll all three until each owns two partitions and everything was read.
    let mut seen: BTreeMap<(i32, i64), usize> = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        for c in members.iter_mut() {
            for r in c.poll(Duration::from_millis(50)).await.unwrap() {
                *seen.entry((r.partition, r.offset)).or_default() += 1;
            }
        }
        let owned: Vec<usize> = members.iter().map(|c| c.assignment().len()).collect();
        if seen.len() == 600 && owned == [2, 2, 2] {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "owned {owned:?}, seen {}",
            seen.len()
        );
    }
    let all: BTreeSet<TopicPartition> = members.iter().flat_map(|c| c.assignment()).collect();
    assert_eq!(all.len(), 6, "disjoint assignments covering the topic");
    for log in &logs {
        assert!(log
            .0
            .lock()
            .unwrap()
            .iter()
            .any(|e| e.starts_with("assigned")));
    }
    // One member leaves: the other two take over its partitions.
    let leaving = members.pop().unwrap();
    leaving.close().await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        for c in members.iter_mut() {
            c.poll(Duration::from_millis(50)).await.unwrap();
        }
        let owned: Vec<usize> = members.iter().map(|c| c.assignment().len()).collect();
        if owned == [3, 3] {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "owned after leave {owned:?}"
        );
    }
    for c in members.iter_mut() {
        c.commit().await.unwrap();
    }
    for c in members {
        c.close().await.unwrap();
    }
    // Offsets were committed: a new member of the group reads nothing old.
    let admin = Admin::connect(&b.bootstrap()).await.unwrap();
    let ends = admin
        .list_offsets(std::slice::from_ref(&topic), OffsetSpec::Latest)
        .await
        .unwrap();
    assert_eq!(ends.values().sum::<i64>(), 600);
    assert_eq!(
        admin.group_offsets(&group).await.unwrap(),
        ends,
        "everything read was committed"
    );
    produce_n(&b.bootstrap(), &topic, 6, Compression::None).await;
    let mut fresh = Consumer::new(mk()).await.unwrap();
    fresh.subscribe(&[&topic]).unwrap();
    let got = consume_until(&mut fresh, 6, Duration::from_secs(20)).await;
    assert_eq!(got.len(), 6, "only the new records");
    assert!(got
        .iter()
        .all(|r| r.offset >= ends[&TopicPartition::new(&topic, r.partition)]));
    assert!(fresh
        .poll(Duration::from_millis(300))
        .await
        .unwrap()
        .is_empty());
    fresh.commit().await.unwrap();
    let lag = admin.consumer_lag(&group).await.unwrap();
    assert_eq!(lag.len(), 6);
    assert!(lag.iter().all(|l| l.lag == Some(0)), "{lag:?}");
    fresh.close().await.unwrap();
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_rebalance_range() {
    group_of_three("range").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_rebalance_cooperative_sticky() {
    group_of_three("cooperative-sticky").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_rebalance_roundrobin() {
    group_of_three("roundrobin").await;
}

/// Pausing one partition holds its records back without losing them; resuming every partition
/// (paused or not) loses nothing either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_one_partition_then_resume_all_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path(), |_| {}).await;
    Admin::connect(&b.bootstrap())
        .await
        .unwrap()
        .create_topics(&[NewTopic::new("pr", 2)])
        .await
        .unwrap();
    let p = Producer::new(ProducerConfig::new(&b.bootstrap()))
        .await
        .unwrap();
    for part in 0..2 {
        for i in 0..300 {
            p.send(ProducerRecord::new("pr", format!("{part}-{i}")).partition(part))
                .await
                .unwrap();
        }
    }
    p.flush().await.unwrap();
    let (p0, p1) = (TopicPartition::new("pr", 0), TopicPartition::new("pr", 1));
    let mut c = Consumer::new(cfg(&b)).await.unwrap();
    c.assign(&[p0.clone(), p1.clone()]).unwrap();
    let mut seen: BTreeSet<(i32, i64)> = BTreeSet::new();
    // A few records, then pause partition 0.
    let first = c.recv().await.unwrap();
    seen.insert((first.partition, first.offset));
    c.pause(std::slice::from_ref(&p0)).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while seen.iter().filter(|(p, _)| *p == 1).count() < 300 {
        assert!(tokio::time::Instant::now() < deadline);
        for r in c.poll(Duration::from_millis(100)).await.unwrap() {
            assert_eq!(r.partition, 1, "a record of the paused partition");
            assert!(seen.insert((r.partition, r.offset)), "duplicate");
        }
    }
    c.resume(&c.assignment()).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while seen.len() < 600 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} of 600",
            seen.len()
        );
        for r in c.poll(Duration::from_millis(100)).await.unwrap() {
            assert!(
                seen.insert((r.partition, r.offset)),
                "duplicate {}-{}",
                r.partition,
                r.offset
            );
        }
    }
    b.stop().await;
}

/// One poll returns records of several topics; `stream()` yields records as an async Stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_topics_in_one_poll_and_as_a_stream() {
    use futures_util::StreamExt;
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path(), |_| {}).await;
    let admin = Admin::connect(&b.bootstrap()).await.unwrap();
    admin
        .create_topics(&[NewTopic::new("ta", 1), NewTopic::new("tb", 1)])
        .await
        .unwrap();
    produce_n(&b.bootstrap(), "ta", 50, Compression::None).await;
    produce_n(&b.bootstrap(), "tb", 50, Compression::Snappy).await;
    let mut c = Consumer::new(cfg(&b)).await.unwrap();
    c.assign(&[TopicPartition::new("ta", 0), TopicPartition::new("tb", 0)])
        .unwrap();
    // Wait until both topics' data has been prefetched, then one poll returns both.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while c.high_watermark(&TopicPartition::new("ta", 0)).is_none()
        || c.high_watermark(&TopicPartition::new("tb", 0)).is_none()
    {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let batch = c.poll(Duration::from_secs(5)).await.unwrap();
    let topics: BTreeSet<&str> = batch.iter().map(|r| r.topic.as_str()).collect();
    assert_eq!(
        topics,
        BTreeSet::from(["ta", "tb"]),
        "one poll, both topics"
    );
    let mut rest = 100 - batch.len();
    let stream = c.stream();
    tokio::pin!(stream);
    while rest > 0 {
        let r = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert!(r.topic == "ta" || r.topic == "tb");
        rest -= 1;
    }
    b.stop().await;
}
